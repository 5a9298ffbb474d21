//! Clients' capabilities, checked on every object request: the OSD asks the monitors what
//! an identity may do and keeps the answer for `CAPS_TTL`, so a change of caps or a
//! revocation takes effect within that time (Ceph's OSDs learn caps from the ticket the
//! client presents; here the certificate names the identity and the monitors hold caps).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use net::MonClient;
use proto::error::{ErrorCode, RemoteError};
use proto::{Access, Caps, EntityKind, EntityName};

/// How long an answer from the monitors is used.
pub const CAPS_TTL: Duration = Duration::from_secs(10);
/// Identities remembered at most (a full cache is emptied: the next requests ask again).
const ENTRIES_MAX: usize = 4096;

#[derive(Default)]
pub struct CapsCache {
    mon: OnceLock<Arc<MonClient>>,
    entries: Mutex<HashMap<EntityName, (Option<Caps>, Instant)>>,
}

impl CapsCache {
    /// The monitors to ask (set once the OSD has its session).
    pub fn connect(&self, mon: Arc<MonClient>) {
        let _ = self.mon.set(mon);
    }

    /// Whether `entity` may have `access` to `pool`. Daemons may: OSDs and monitors act
    /// for the cluster, and their roles come from the entity kind.
    pub async fn check(
        &self,
        entity: &EntityName,
        pool: &str,
        access: Access,
    ) -> Result<(), RemoteError> {
        if entity.kind() != EntityKind::Client {
            return Ok(());
        }
        let caps = self.caps(entity).await?;
        match caps {
            Some(caps) if caps.allows_pool(pool, access) => Ok(()),
            Some(_) => Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "{entity} may not {} pool '{pool}' (its osd caps do not allow it)",
                    if access >= Access::ReadWrite { "write to" } else { "read from" }
                ),
            )),
            None => Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!("{entity} is unknown to this cluster (or was revoked)"),
            )),
        }
    }

    /// Whether `entity` may run admin operations on PGs (scrub): what changing the
    /// cluster through the monitors takes, `mon "allow rw"`. Daemons may.
    pub async fn check_admin(&self, entity: &EntityName, what: &str) -> Result<(), RemoteError> {
        if entity.kind() != EntityKind::Client {
            return Ok(());
        }
        match self.caps(entity).await? {
            Some(caps) if caps.allows_mon(Access::ReadWrite) => Ok(()),
            _ => Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!("{entity} may not {what} (needs mon caps 'allow rw')"),
            )),
        }
    }

    async fn caps(&self, entity: &EntityName) -> Result<Option<Caps>, RemoteError> {
        if let Some((caps, at)) = self.entries.lock().expect("caps lock").get(entity)
            && at.elapsed() < CAPS_TTL
        {
            return Ok(caps.clone());
        }
        let mon = self.mon.get().ok_or_else(|| {
            RemoteError::new(ErrorCode::Unavailable, "the OSD is starting: no monitor session yet")
        })?;
        let caps = mon.caps(entity).await.map_err(|e| {
            RemoteError::new(
                ErrorCode::Unavailable,
                format!("cannot check the caps of {entity} with the monitors: {e}"),
            )
        })?;
        let mut entries = self.entries.lock().expect("caps lock");
        if entries.len() >= ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(entity.clone(), (caps.clone(), Instant::now()));
        Ok(caps)
    }
}
