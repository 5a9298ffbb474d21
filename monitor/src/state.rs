//! The replicated state of the monitors and the one function that changes it.
//!
//! `ClusterState` is what every monitor holds identically: the OSD map (with the recent
//! incrementals, for subscribers that are a few epochs behind), the registry of identities
//! and their capabilities, the cluster settings. `apply` is its only mutator and is
//! deterministic: it reads nothing but the state and the log entry (times come from the
//! leader's clock, inside the entry), so every monitor that applies the same log holds the
//! same state. Commands are decided against the state at the moment they commit: two racing
//! `pool create x` both reach the log, the first creates the pool and the second finds it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use net::identity::Fingerprint;
use placement::encoding;
use placement::{Epoch, Incremental, MapChange, MapContents, MapFlag, OsdId, OsdMap, PgId};
use proto::message::{CommandOutput, IdentityInfo, MapBundle, RequestId};
use proto::{Access, Caps, Command, EntityKind, EntityName, ErrorCode, RemoteError};
use serde::{Deserialize, Serialize};

use crate::command;
use crate::error::{AdmitError, StateError};
use crate::settings::Settings;

/// Incrementals kept for subscribers that are behind; further behind gets the full map.
pub const HISTORY_MAX: usize = 500;
/// Upper bound on registered identities.
pub const IDENTITIES_MAX: usize = 1 << 20;

/// An identity the cluster knows: the certificate it must present, and what it may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub caps: Caps,
    pub fingerprint: Fingerprint,
}

/// What the monitors decided about OSDs themselves (failure detection, boots).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OsdEvent {
    /// The OSD booted at `addr`: up, and in again if the monitors had taken it out.
    Boot { osd: OsdId, addr: String },
    /// No beacon within the grace, or enough peers reported it unreachable.
    MarkDown { osds: Vec<OsdId> },
    /// Down for longer than `down_out_interval`.
    MarkOut { osds: Vec<OsdId> },
    /// A PG primary asked for acting-set overrides (an empty list ends one).
    PgTemp { from: OsdId, pgs: Vec<(PgId, Vec<Option<OsdId>>)> },
}

/// One entry of the monitors' Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LogEntry {
    /// An administrative command from `origin`, checked against its capabilities when it
    /// commits. `issued` carries the certificate made for an `AuthAdd` (never the key).
    Command {
        origin: EntityName,
        /// The client's id for this command: a resend is answered with the first result.
        id: Option<RequestId>,
        command: Command,
        issued: Option<Issued>,
        at_ms: i64,
    },
    Osd {
        origin: EntityName,
        event: OsdEvent,
        at_ms: i64,
    },
}

/// A certificate the leader issued for a new identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub entity: EntityName,
    pub fingerprint: Fingerprint,
}

/// The state as a snapshot stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub map: MapContents,
    pub history: Vec<Incremental>,
    pub registry: BTreeMap<EntityName, Identity>,
    pub settings: Settings,
    pub auto_in: BTreeSet<OsdId>,
    pub ca_pem: String,
    pub last_at_ms: i64,
    pub answered: Vec<Answered>,
}

/// The result of a command that carried a request id, kept to answer resends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answered {
    pub origin: EntityName,
    pub id: RequestId,
    pub result: Result<CommandOutput, RemoteError>,
}

/// Results kept for resends: a client resends within its timeout, long before this many
/// other commands commit.
const ANSWERED_MAX: usize = 4096;

#[derive(Clone, Debug)]
pub struct ClusterState {
    map: OsdMap,
    history: VecDeque<Incremental>,
    registry: BTreeMap<EntityName, Identity>,
    settings: Settings,
    /// OSDs to mark in when they boot: new ones, and ones the monitors marked out.
    auto_in: BTreeSet<OsdId>,
    ca_pem: String,
    /// The leader's clock at the last applied entry.
    last_at_ms: i64,
    /// Recent results by (origin, request id), oldest first in `answered_order`.
    answered: HashMap<(EntityName, RequestId), Result<CommandOutput, RemoteError>>,
    answered_order: VecDeque<(EntityName, RequestId)>,
}

impl ClusterState {
    pub fn from_snapshot(snapshot: Snapshot) -> Result<ClusterState, StateError> {
        let map = OsdMap::new(snapshot.map)?;
        Ok(ClusterState {
            map,
            history: snapshot.history.into(),
            registry: snapshot.registry,
            settings: snapshot.settings,
            auto_in: snapshot.auto_in,
            ca_pem: snapshot.ca_pem,
            last_at_ms: snapshot.last_at_ms,
            answered: snapshot
                .answered
                .iter()
                .map(|a| ((a.origin.clone(), a.id), a.result.clone()))
                .collect(),
            answered_order: snapshot.answered.into_iter().map(|a| (a.origin, a.id)).collect(),
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            map: self.map.contents().clone(),
            history: self.history.iter().cloned().collect(),
            registry: self.registry.clone(),
            settings: self.settings.clone(),
            auto_in: self.auto_in.clone(),
            ca_pem: self.ca_pem.clone(),
            last_at_ms: self.last_at_ms,
            answered: self
                .answered_order
                .iter()
                .map(|key| Answered {
                    origin: key.0.clone(),
                    id: key.1,
                    result: self.answered[key].clone(),
                })
                .collect(),
        }
    }

    pub fn map(&self) -> &OsdMap {
        &self.map
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn registry(&self) -> &BTreeMap<EntityName, Identity> {
        &self.registry
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn fsid(&self) -> [u8; 16] {
        self.map.contents().fsid
    }

    /// Whether `entity` presenting a certificate with `fingerprint` may connect: it must
    /// be registered with that very certificate (so a revoked or re-issued one is refused).
    pub fn admit(
        &self,
        entity: &EntityName,
        fingerprint: Option<&Fingerprint>,
    ) -> Result<(), AdmitError> {
        let identity = self
            .registry
            .get(entity)
            .ok_or_else(|| AdmitError::Unknown { entity: entity.clone() })?;
        match fingerprint {
            Some(f) if *f != identity.fingerprint => {
                Err(AdmitError::Replaced { entity: entity.clone(), fingerprint: f.to_string() })
            }
            _ => Ok(()),
        }
    }

    /// The maps a subscriber at epoch `have` needs: the incrementals since, when all are
    /// still kept, else the full map.
    pub fn maps_since(&self, have: Option<Epoch>) -> Result<MapBundle, RemoteError> {
        let current = self.map.epoch();
        let internal =
            |e: placement::MapError| RemoteError::new(ErrorCode::Internal, e.to_string());
        match have {
            // A subscriber ahead of this monitor (which lags the leader) needs nothing yet.
            Some(have) if have >= current => return Ok(MapBundle::default()),
            Some(have)
                if have < current && self.history.front().is_some_and(|i| i.base <= have) =>
            {
                let incrementals = self
                    .history
                    .iter()
                    .filter(|i| i.base >= have)
                    .map(|i| encoding::encode_incremental(i).map_err(internal))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(MapBundle { full: None, incrementals });
            }
            _ => {}
        }
        Ok(MapBundle {
            full: Some(encoding::encode_map(&self.map).map_err(internal)?),
            incrementals: vec![],
        })
    }

    /// Applies one log entry. Errors leave the state as it was (and are the command's answer).
    pub fn apply(&mut self, entry: &LogEntry) -> Result<CommandOutput, RemoteError> {
        match entry {
            LogEntry::Command { origin, id, command, issued, at_ms } => {
                self.last_at_ms = (*at_ms).max(self.last_at_ms);
                let Some(id) = id else {
                    self.authorize(origin, command)?;
                    return self.apply_command(command, issued.as_ref());
                };
                let key = (origin.clone(), *id);
                if let Some(first) = self.answered.get(&key) {
                    return first.clone();
                }
                let result = self
                    .authorize(origin, command)
                    .and_then(|()| self.apply_command(command, issued.as_ref()));
                if self.answered_order.len() >= ANSWERED_MAX
                    && let Some(oldest) = self.answered_order.pop_front()
                {
                    self.answered.remove(&oldest);
                }
                self.answered.insert(key.clone(), result.clone());
                self.answered_order.push_back(key);
                result
            }
            LogEntry::Osd { origin, event, at_ms } => {
                self.last_at_ms = (*at_ms).max(self.last_at_ms);
                if origin.kind() != EntityKind::Mon {
                    return Err(RemoteError::new(
                        ErrorCode::PermissionDenied,
                        format!("{origin} is not a monitor"),
                    ));
                }
                self.apply_osd_event(event)
            }
        }
    }

    /// The registry as `auth ls` shows it.
    pub fn identities(&self) -> CommandOutput {
        CommandOutput::Identities(
            self.registry
                .iter()
                .map(|(entity, id)| IdentityInfo {
                    entity: entity.clone(),
                    caps: id.caps.clone(),
                    fingerprint: id.fingerprint.to_string(),
                })
                .collect(),
        )
    }

    /// Whether `origin` may run `command`.
    pub fn authorize(&self, origin: &EntityName, command: &Command) -> Result<(), RemoteError> {
        if origin.kind() == EntityKind::Mon {
            return Ok(());
        }
        let needed = match command {
            Command::AuthAdd { .. } | Command::AuthRemove { .. } | Command::AuthList => Access::All,
            Command::MonAdd { .. } | Command::MonRemove { .. } => Access::All,
            _ => Access::ReadWrite,
        };
        let caps = self.registry.get(origin).map(|id| &id.caps);
        // A client that may write a pool may snapshot its own objects there (as Ceph's
        // `profile rbd` lets it), with only read access to the monitors.
        if let Command::SelfManagedSnapCreate { pool } | Command::SelfManagedSnapRemove { pool, .. } =
            command
            && caps.is_some_and(|c| {
                c.allows_mon(Access::Read) && c.allows_pool(pool, Access::ReadWrite)
            })
        {
            return Ok(());
        }
        let allowed = caps.is_some_and(|c| c.allows_mon(needed));
        if allowed {
            Ok(())
        } else {
            let needed = match needed {
                Access::All => "mon 'allow *'",
                _ => "mon 'allow rw'",
            };
            Err(RemoteError::new(ErrorCode::PermissionDenied, format!("{origin} lacks {needed}")))
        }
    }

    fn apply_command(
        &mut self,
        command: &Command,
        issued: Option<&Issued>,
    ) -> Result<CommandOutput, RemoteError> {
        match command {
            Command::ConfigSet { key, value } => {
                self.settings.set(key, value)?;
                Ok(CommandOutput::Done)
            }
            Command::AuthAdd { entity, mon_caps, osd_caps } => {
                let caps = Caps::parse(mon_caps, osd_caps)
                    .map_err(|e| RemoteError::new(ErrorCode::Invalid, e))?;
                let issued = issued.filter(|i| &i.entity == entity).ok_or_else(|| {
                    RemoteError::new(
                        ErrorCode::Internal,
                        format!("no certificate was issued for {entity}"),
                    )
                })?;
                if self.registry.contains_key(entity) {
                    return Err(RemoteError::new(
                        ErrorCode::AlreadyExists,
                        format!("identity {entity} already exists"),
                    ));
                }
                if self.registry.len() >= IDENTITIES_MAX {
                    return Err(RemoteError::new(ErrorCode::TooLarge, "too many identities"));
                }
                self.registry
                    .insert(entity.clone(), Identity { caps, fingerprint: issued.fingerprint });
                // The key is added to the answer by the monitor that holds it.
                Ok(CommandOutput::Done)
            }
            Command::AuthRemove { entity } => {
                self.registry.remove(entity).ok_or_else(|| {
                    RemoteError::new(ErrorCode::NotFound, format!("no identity {entity}"))
                })?;
                Ok(CommandOutput::Done)
            }
            Command::AuthList => Ok(self.identities()),
            Command::MonAdd { .. } | Command::MonRemove { .. } => Err(RemoteError::new(
                ErrorCode::Unsupported,
                "monitor membership changes are made by the leader, not the log",
            )),
            Command::OsdCreate { id } => {
                let osd = id.map(OsdId).unwrap_or_else(|| self.map.next_free_osd_id());
                let epoch = self.commit(vec![MapChange::OsdCreate { osd }])?;
                self.auto_in.insert(osd);
                Ok(CommandOutput::OsdCreated { osd: osd.0, epoch })
            }
            Command::OsdIn { osds } | Command::OsdOut { osds } => {
                let changes = command::plan(&self.map, &self.settings, command, self.last_at_ms)?;
                let epoch = self.commit(changes)?;
                // An operator's in or out stands: the monitors no longer bring these in.
                for osd in osds {
                    self.auto_in.remove(&OsdId(*osd));
                }
                Ok(CommandOutput::Epoch(epoch))
            }
            Command::OsdRemove { osd } => {
                let epoch = self.commit(command::plan(
                    &self.map,
                    &self.settings,
                    command,
                    self.last_at_ms,
                )?)?;
                self.auto_in.remove(&OsdId(*osd));
                Ok(CommandOutput::Epoch(epoch))
            }
            Command::PoolSnapCreate { pool, .. } | Command::SelfManagedSnapCreate { pool } => {
                let changes = command::plan(&self.map, &self.settings, command, self.last_at_ms)?;
                let epoch = self.commit(changes)?;
                let id = self.map.pool_by_name(pool).map_or(0, |p| p.snaps.seq);
                Ok(CommandOutput::Snap { id, epoch })
            }
            _ => {
                let changes = command::plan(&self.map, &self.settings, command, self.last_at_ms)?;
                if changes.is_empty() {
                    // Already so (a profile set again as it is): no new epoch.
                    return Ok(CommandOutput::Epoch(self.map.epoch()));
                }
                Ok(CommandOutput::Epoch(self.commit(changes)?))
            }
        }
    }

    fn apply_osd_event(&mut self, event: &OsdEvent) -> Result<CommandOutput, RemoteError> {
        let flags = &self.map.contents().flags;
        let state = |osd: &OsdId| self.map.osd(*osd);
        let mut changes = Vec::new();
        let mut marked_out = Vec::new();
        match event {
            OsdEvent::Boot { osd, addr } => {
                state(osd)
                    .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("no {osd}")))?;
                if flags.contains(&MapFlag::Noup) {
                    return Err(RemoteError::new(ErrorCode::Unavailable, "the noup flag is set"));
                }
                addr.parse::<std::net::SocketAddr>().map_err(|_| {
                    RemoteError::new(ErrorCode::Invalid, format!("'{addr}' is not an ip:port"))
                })?;
                let noin = flags.contains(&MapFlag::Noin);
                if state(osd).is_some_and(|s| s.up) {
                    // A new instance of an OSD the map still has up (it restarted before
                    // anyone noticed): down first, in an epoch of its own, as Ceph does, so
                    // every PG it serves starts a new interval; the PG state it held in
                    // memory is gone.
                    self.commit(vec![MapChange::OsdDown { osd: *osd }])?;
                }
                changes.push(MapChange::OsdBoot { osd: *osd, addr: addr.clone() });
                if self.auto_in.contains(osd) && !noin {
                    changes.push(MapChange::OsdIn { osd: *osd });
                }
            }
            OsdEvent::MarkDown { osds } => {
                if flags.contains(&MapFlag::Nodown) {
                    return Ok(CommandOutput::Epoch(self.map.epoch()));
                }
                // Decided on an earlier view: only OSDs still up go down.
                for osd in osds.iter().filter(|o| state(o).is_some_and(|s| s.up)) {
                    changes.push(MapChange::OsdDown { osd: *osd });
                }
            }
            OsdEvent::MarkOut { osds } => {
                if flags.contains(&MapFlag::Noout) {
                    return Ok(CommandOutput::Epoch(self.map.epoch()));
                }
                for osd in osds.iter().filter(|o| state(o).is_some_and(|s| !s.up && s.is_in)) {
                    changes.push(MapChange::OsdOut { osd: *osd });
                    marked_out.push(*osd);
                }
            }
            OsdEvent::PgTemp { from, pgs } => {
                changes.extend(
                    pgs.iter().filter_map(|(pg, osds)| pg_temp(&self.map, *from, *pg, osds)),
                );
            }
        }
        if changes.is_empty() {
            return Ok(CommandOutput::Epoch(self.map.epoch()));
        }
        let epoch = self.commit(changes)?;
        self.auto_in.extend(marked_out);
        if let OsdEvent::Boot { osd, .. } = event {
            self.auto_in.remove(osd);
        }
        Ok(CommandOutput::Epoch(epoch))
    }

    /// Applies map changes as the next epoch and remembers the incremental.
    fn commit(&mut self, changes: Vec<MapChange>) -> Result<Epoch, RemoteError> {
        let inc = Incremental::new(&self.map, changes);
        self.map = self.map.apply(&inc)?;
        self.history.push_back(inc);
        while self.history.len() > HISTORY_MAX {
            self.history.pop_front();
        }
        Ok(self.map.epoch())
    }
}

/// The change a primary's pg_temp request makes, if it still makes sense on this map: the
/// PG exists, the asker is its up or acting primary (a request from an older map is
/// dropped), and the OSDs named are up, distinct, and no more than the pool's size (for
/// an erasure-coded pool, one per shard position, holes allowed). Asking for the up set
/// ends the override.
fn pg_temp(map: &OsdMap, from: OsdId, pg: PgId, osds: &[Option<OsdId>]) -> Option<MapChange> {
    let pool = map.pool(pg.pool)?;
    let mapping = map.pg_mapping(pg).ok()?;
    if mapping.up_primary != Some(from) && mapping.acting_primary != Some(from) {
        return None;
    }
    let current = map.contents().pg_temp.get(&pg);
    let up: Vec<Option<OsdId>> = if pool.is_erasure() {
        mapping.up.iter().collect()
    } else {
        mapping.up.osds().map(Some).collect()
    };
    if osds.iter().all(Option::is_none) || osds == up.as_slice() {
        return current.is_some().then(|| MapChange::PgTemp { pg, osds: Vec::new() });
    }
    let named: Vec<OsdId> = osds.iter().flatten().copied().collect();
    let distinct = named.iter().collect::<BTreeSet<_>>().len() == named.len();
    let shape = if pool.is_erasure() {
        osds.len() == pool.size()
    } else {
        osds.len() <= pool.size() && named.len() == osds.len()
    };
    if !distinct || !shape || !named.iter().all(|&o| map.is_up(o)) {
        return None;
    }
    (current.map(Vec::as_slice) != Some(osds))
        .then(|| MapChange::PgTemp { pg, osds: osds.to_vec() })
}

/// What bootstrap decides: the first state every initial monitor starts from.
pub struct Genesis {
    pub fsid: [u8; 16],
    pub ca_pem: String,
    pub identities: Vec<(EntityName, Identity)>,
}

impl Genesis {
    /// The state at epoch 1: a `default` root and the `replicated_rule` Ceph starts with.
    pub fn state(&self) -> ClusterState {
        let mut contents = MapContents::empty(self.fsid);
        contents.epoch = Epoch(1);
        let root = contents
            .crush
            .add_bucket("default", "root", None, None)
            .expect("an empty map takes a root");
        let host = contents.crush.type_id("host").expect("default types have host");
        let steps = placement::SimpleRule {
            kind: placement::RuleKind::Replicated,
            root,
            failure_domain: host,
            class: None,
        }
        .steps();
        contents
            .crush
            .add_rule("replicated_rule", placement::RuleKind::Replicated, steps)
            .expect("a valid rule");
        ClusterState {
            map: OsdMap::new(contents).expect("the genesis map is valid"),
            history: VecDeque::new(),
            registry: self.identities.iter().cloned().collect(),
            settings: Settings::default(),
            auto_in: BTreeSet::new(),
            ca_pem: self.ca_pem.clone(),
            last_at_ms: 0,
            answered: HashMap::new(),
            answered_order: VecDeque::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::message::PoolSpec;

    use super::*;

    fn admin() -> EntityName {
        EntityName::client("admin").unwrap()
    }

    /// `command` from the admin, as the log holds it.
    fn command(command: Command) -> LogEntry {
        LogEntry::Command { origin: admin(), id: None, command, issued: None, at_ms: 1_000 }
    }

    fn genesis() -> ClusterState {
        let readonly = EntityName::client("viewer").unwrap();
        Genesis {
            fsid: [7; 16],
            ca_pem: "not a real CA".into(),
            identities: vec![
                (admin(), Identity { caps: Caps::all(), fingerprint: Fingerprint([1; 32]) }),
                (
                    readonly,
                    Identity {
                        caps: Caps::parse("allow r", "").unwrap(),
                        fingerprint: Fingerprint([2; 32]),
                    },
                ),
                (
                    EntityName::client("volumes").unwrap(),
                    Identity {
                        caps: Caps::parse("allow r", "allow rw pool=rbd").unwrap(),
                        fingerprint: Fingerprint([3; 32]),
                    },
                ),
            ],
        }
        .state()
    }

    fn create(name: &str, id: Option<RequestId>, origin: EntityName) -> LogEntry {
        LogEntry::Command {
            origin,
            id,
            command: Command::PoolCreate {
                name: name.into(),
                spec: PoolSpec::Replicated { size: 3, min_size: None },
                pg_num: Some(8),
                rule: None,
                new_rule: None,
            },
            issued: None,
            at_ms: 1_000,
        }
    }

    fn pool_count(state: &ClusterState) -> usize {
        state.map().contents().pools.len()
    }

    #[test]
    fn a_resent_command_is_applied_once_and_answered_like_the_first() {
        let mut state = genesis();
        let first = state.apply(&create("rbd", Some(42), admin()));
        assert!(first.is_ok(), "{first:?}");
        let epoch = state.map().epoch();
        assert_eq!(state.apply(&create("rbd", Some(42), admin())), first);
        assert_eq!(state.map().epoch(), epoch, "a resend made a new epoch");
        assert_eq!(pool_count(&state), 1);
        // The same id from another identity is another command.
        let other = EntityName::client("other").unwrap();
        let refused = state.apply(&create("rbd", Some(42), other)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::PermissionDenied);
        // A new attempt (new id) at an existing name is refused.
        let again = state.apply(&create("rbd", Some(43), admin())).unwrap_err();
        assert_eq!(again.code, ErrorCode::AlreadyExists);
    }

    #[test]
    fn resends_are_answered_after_a_snapshot_and_the_table_is_bounded() {
        let mut state = genesis();
        let first = state.apply(&create("kept", Some(1), admin()));
        let mut restored = ClusterState::from_snapshot(state.snapshot()).unwrap();
        assert_eq!(restored.apply(&create("kept", Some(1), admin())), first);
        assert_eq!(pool_count(&restored), 1);
        for id in 2..(ANSWERED_MAX as u64 + 10) {
            let _ = restored.apply(&create("kept", Some(id), admin()));
        }
        assert_eq!(restored.snapshot().answered.len(), ANSWERED_MAX);
        // The oldest answer was dropped: the very first id now counts as a new command.
        let late = restored.apply(&create("kept", Some(1), admin())).unwrap_err();
        assert_eq!(late.code, ErrorCode::AlreadyExists);
    }

    #[test]
    fn snapshot_ids_are_handed_out_once_to_whoever_may_write_the_pool() {
        let mut state = genesis();
        state.apply(&create("rbd", None, admin())).unwrap();
        state.apply(&create("images", None, admin())).unwrap();
        let volumes = EntityName::client("volumes").unwrap();
        let run = |state: &mut ClusterState, origin: &EntityName, command: Command| {
            let entry = LogEntry::Command {
                origin: origin.clone(),
                id: None,
                command,
                issued: None,
                at_ms: 5_000,
            };
            state.apply(&entry)
        };
        let take = |pool: &str| Command::SelfManagedSnapCreate { pool: pool.into() };
        for want in [1, 2] {
            match run(&mut state, &volumes, take("rbd")).unwrap() {
                CommandOutput::Snap { id, epoch } => {
                    assert_eq!(id, want);
                    assert_eq!(epoch, state.map().epoch());
                }
                other => panic!("answered {other:?}"),
            }
        }
        let elsewhere = run(&mut state, &volumes, take("images")).unwrap_err();
        assert_eq!(elsewhere.code, ErrorCode::PermissionDenied);
        let viewer = EntityName::client("viewer").unwrap();
        assert_eq!(
            run(&mut state, &viewer, take("rbd")).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        let remove = |snap| Command::SelfManagedSnapRemove { pool: "rbd".into(), snap };
        run(&mut state, &volumes, remove(1)).unwrap();
        let twice = run(&mut state, &volumes, remove(1)).unwrap_err();
        assert!(twice.message.contains("does not exist"), "{}", twice.message);
        let snaps = &state.map().pool_by_name("rbd").unwrap().snaps;
        assert_eq!((snaps.seq, snaps.exists(1), snaps.exists(2)), (2, false, true));
        // Pool snapshots are the admin's, and not on a pool with self-managed ones.
        let mksnap = |pool: &str| Command::PoolSnapCreate { pool: pool.into(), name: "s1".into() };
        let mixed = run(&mut state, &admin(), mksnap("rbd")).unwrap_err();
        assert!(mixed.message.contains("self-managed"), "{}", mixed.message);
        assert_eq!(
            run(&mut state, &volumes, mksnap("images")).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        let taken = run(&mut state, &admin(), mksnap("images")).unwrap();
        assert!(matches!(taken, CommandOutput::Snap { id: 1, .. }), "{taken:?}");
        let snap = &state.map().pool_by_name("images").unwrap().snaps.named[&1];
        assert_eq!((snap.name.as_str(), snap.created_ms), ("s1", 5_000));
    }

    #[test]
    fn changes_need_write_capability_and_errors_change_nothing() {
        let mut state = genesis();
        let before = state.snapshot();
        let viewer = EntityName::client("viewer").unwrap();
        let refused = state.apply(&create("rbd", None, viewer)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::PermissionDenied);
        assert!(refused.message.contains("allow rw"), "{}", refused.message);
        // Only the clock moved on.
        let mut expected = before.clone();
        expected.last_at_ms = 1_000;
        assert_eq!(state.snapshot(), expected);
        // An invalid setting is refused as a whole.
        let bad = LogEntry::Command {
            origin: admin(),
            id: None,
            command: Command::ConfigSet { key: "no.such_setting".into(), value: "1".into() },
            issued: None,
            at_ms: 2_000,
        };
        assert_eq!(state.apply(&bad).unwrap_err().code, ErrorCode::Invalid);
        expected.last_at_ms = 2_000;
        assert_eq!(state.snapshot(), expected);
    }

    #[test]
    fn a_restarted_osd_that_is_still_up_goes_down_for_an_epoch_first() {
        let mut state = genesis();
        let create = LogEntry::Command {
            origin: admin(),
            id: None,
            command: Command::OsdCreate { id: Some(0) },
            issued: None,
            at_ms: 1_000,
        };
        state.apply(&create).unwrap();
        let osd = |event| LogEntry::Osd { origin: EntityName::mon("a").unwrap(), event, at_ms: 2 };
        let boot = || OsdEvent::Boot { osd: OsdId(0), addr: "127.0.0.1:6800".into() };
        state.apply(&osd(boot())).unwrap();
        let up_at = state.map().epoch();
        assert!(state.map().is_up(OsdId(0)));
        // The same OSD boots again while the map has it up: one epoch down, then up.
        state.apply(&osd(boot())).unwrap();
        assert_eq!(state.map().epoch(), Epoch(up_at.0 + 2));
        assert!(state.map().is_up(OsdId(0)));
        let down_epoch = &state.history[state.history.len() - 2];
        assert_eq!(down_epoch.changes, vec![MapChange::OsdDown { osd: OsdId(0) }]);
    }

    #[test]
    fn a_pool_can_have_a_rule_of_its_own_by_failure_domain_and_class() {
        use proto::message::NewRule;
        let mut state = genesis();
        let create = |name: &str, rule: Option<&str>, failure_domain: &str| Command::PoolCreate {
            name: name.into(),
            spec: PoolSpec::Erasure { k: 4, m: 2, min_size: None },
            pg_num: Some(8),
            rule: rule.map(str::to_owned),
            new_rule: Some(NewRule { failure_domain: failure_domain.into(), class: None }),
        };
        state.apply(&command(create("ec", None, "osd"))).unwrap();
        let map = state.map();
        let rule = map.crush().rule_by_name("ec").expect("a rule named after the pool");
        assert_eq!(map.pool_by_name("ec").unwrap().rule, rule.id);
        let osd_type = map.crush().type_id("osd").unwrap();
        assert!(
            rule.steps.iter().any(
                |s| matches!(s, placement::Step::Choose { type_id, .. } if *type_id == osd_type)
            ),
            "{:?}",
            rule.steps
        );
        // Bad input changes nothing and says why.
        let epoch = state.map().epoch();
        for (bad, why) in [
            (create("ec2", Some("ec"), "osd"), "not both"),
            (create("ec", None, "osd"), "exists"),
            (create("ec3", None, "galaxy"), "galaxy"),
        ] {
            let e = state.apply(&command(bad)).unwrap_err();
            assert!(e.message.contains(why), "{e:?}");
        }
        assert_eq!(state.map().epoch(), epoch);
    }

    #[test]
    fn named_erasure_code_profiles_make_pools_with_their_failure_domain() {
        let mut state = genesis();
        let mut profile = placement::ErasureProfile::new(4, 2, 8192);
        profile.failure_domain = Some("osd".into());
        let set = |profile: &placement::ErasureProfile| Command::ProfileSet {
            name: "wide".into(),
            profile: profile.clone(),
        };
        state.apply(&command(set(&profile))).unwrap();
        let epoch = state.map().epoch();
        state.apply(&command(set(&profile))).unwrap();
        assert_eq!(state.map().epoch(), epoch, "setting the same profile again changes nothing");
        let other = placement::ErasureProfile::new(2, 1, 8192);
        let e = state.apply(&command(set(&other))).unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists, "{e:?}");
        let create = |profile: &str| Command::PoolCreate {
            name: "archive".into(),
            spec: PoolSpec::ErasureProfile { profile: profile.into(), min_size: None },
            pg_num: Some(8),
            rule: None,
            new_rule: None,
        };
        let e = state.apply(&command(create("nope"))).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
        state.apply(&command(create("wide"))).unwrap();
        let map = state.map();
        let pool = map.pool_by_name("archive").unwrap();
        assert!(
            matches!(&pool.kind, placement::PoolKind::Erasure { profile, k: 4, m: 2, min_size: 5 } if profile == "wide")
        );
        let rule = map.crush().rule_by_name("archive").expect("the profile's rule");
        assert_eq!(pool.rule, rule.id);
        let osd_type = map.crush().type_id("osd").unwrap();
        assert!(
            rule.steps.iter().any(
                |s| matches!(s, placement::Step::Choose { type_id, .. } if *type_id == osd_type)
            )
        );
        let e = state.apply(&command(Command::ProfileRemove { name: "wide".into() })).unwrap_err();
        assert!(e.message.contains("archive"), "a profile in use stays: {e:?}");
    }

    #[test]
    fn pg_temp_requests_apply_only_from_the_primary_and_with_up_osds() {
        let mut state = genesis();
        let osd = |event| LogEntry::Osd { origin: EntityName::mon("a").unwrap(), event, at_ms: 2 };
        for id in 0..5 {
            state.apply(&command(Command::OsdCreate { id: Some(id) })).unwrap();
            let location = BTreeMap::from([
                ("root".to_string(), "default".to_string()),
                ("host".to_string(), format!("h{id}")),
            ]);
            let place = Command::CrushSetOsd { osd: id, weight: 1.0, location, class: None };
            state.apply(&command(place)).unwrap();
            let addr = format!("127.0.0.1:{}", 6800 + id);
            state.apply(&osd(OsdEvent::Boot { osd: OsdId(id), addr })).unwrap();
            state.apply(&command(Command::OsdIn { osds: vec![id] })).unwrap();
        }
        state.apply(&create("rbd", None, admin())).unwrap();
        let pool = state.map().pool_by_name("rbd").unwrap().id;
        let pg = PgId { pool, seed: 0 };
        let up: Vec<OsdId> = state.map().pg_mapping(pg).unwrap().up.osds().collect();
        let primary = up[0];
        let other: OsdId = (0..5).map(OsdId).find(|o| !up.contains(o)).unwrap();
        let temp = vec![up[1], up[2], other];
        let ask = |from: OsdId, osds: Vec<OsdId>| {
            let osds = osds.into_iter().map(Some).collect();
            osd(OsdEvent::PgTemp { from, pgs: vec![(pg, osds)] })
        };

        // Not the primary: nothing changes.
        let epoch = state.map().epoch();
        state.apply(&ask(up[1], temp.clone())).unwrap();
        assert_eq!(state.map().epoch(), epoch);
        // An OSD named twice, or one that is down: nothing changes either.
        state.apply(&ask(primary, vec![up[1], up[1]])).unwrap();
        assert_eq!(state.map().epoch(), epoch);
        // The primary's request sets the acting set, and the asker is no longer primary
        // but may still end it (as the up primary).
        state.apply(&ask(primary, temp.clone())).unwrap();
        let mapping = state.map().pg_mapping(pg).unwrap();
        assert_eq!(mapping.acting.osds().collect::<Vec<_>>(), temp);
        assert_eq!(mapping.up.osds().collect::<Vec<_>>(), up);
        // The same request again is not a new epoch.
        let epoch = state.map().epoch();
        state.apply(&ask(temp[0], temp.clone())).unwrap();
        assert_eq!(state.map().epoch(), epoch);
        // Asking for the up set ends the override.
        state.apply(&ask(temp[0], up.clone())).unwrap();
        assert!(state.map().contents().pg_temp.is_empty());
        assert_eq!(state.map().epoch(), Epoch(epoch.0 + 1));
        // A down OSD cannot be asked for.
        state.apply(&osd(OsdEvent::MarkDown { osds: vec![other] })).unwrap();
        let epoch = state.map().epoch();
        state.apply(&ask(primary, temp)).unwrap();
        assert_eq!(state.map().epoch(), epoch);
    }

    #[test]
    fn applying_the_same_entries_gives_the_same_state() {
        let entries: Vec<LogEntry> = (0..20)
            .map(|i| create(&format!("p{}", i % 7), Some(i), admin()))
            .chain([LogEntry::Osd {
                origin: EntityName::mon("a").unwrap(),
                event: OsdEvent::MarkDown { osds: vec![] },
                at_ms: 5_000,
            }])
            .collect();
        let run = || {
            let mut state = genesis();
            let results: Vec<_> = entries.iter().map(|e| state.apply(e)).collect();
            (results, state.snapshot())
        };
        assert_eq!(run(), run());
        let (results, snapshot) = run();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 8, "{results:?}");
        assert_eq!(snapshot.map.pools.len(), 7);
    }
}
