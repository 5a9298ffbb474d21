//! Object I/O straight to the OSDs: the client computes each object's PG and primary from
//! its map and sends the ops there, retrying on a newer map when the PG moved, its primary
//! changed or was unreachable, until the op's deadline. A write keeps its request id across
//! retries, so the OSDs apply it once.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use placement::{OsdMap, PgId, PoolId, Version};
use proto::error::{ErrorCode, RemoteError, TransportError};
use proto::message::{Command, CommandOutput, OsdRequest, Response, new_request_id};
use proto::osd::{
    LIST_PAGE_MAX, LockInfo, ObjectName, ObjectOp, OpResult, SnapArgs, SnapContext, SnapList,
};
use tokio::sync::Semaphore;

use crate::mon_client::{ClientError, MonClient};
use crate::osd_conn::OsdConnections;

/// How long one op may take, retries included, unless told otherwise.
pub const OP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Ops in flight from one client at once; more wait for a slot.
pub const IN_FLIGHT_MAX: usize = 256;
/// How long one attempt waits for its OSD.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(35);
/// Bytes one request of `read_full` asks for (OSDs answer at most 64 MiB per request).
const READ_PIECE_BYTES: u64 = 16 << 20;
/// Times `read_full` starts over when the object changes under it.
const READ_FULL_ATTEMPTS: usize = 8;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The answer to a compound op.
#[derive(Debug, Clone)]
pub struct OpAnswer {
    pub version: Version,
    pub results: Vec<OpResult>,
    pub data: Bytes,
}

pub struct Objects {
    mon: Arc<MonClient>,
    conns: OsdConnections,
    map: RwLock<Arc<OsdMap>>,
    in_flight: Semaphore,
    pub op_timeout: Duration,
}

impl Objects {
    /// Object access through `mon`'s cluster, starting from its current map.
    pub async fn new(mon: Arc<MonClient>) -> Result<Objects, ClientError> {
        let map = Arc::new(mon.map().await?);
        let endpoint = crate::osd_conn::osd_endpoint(mon.config(), mon.endpoint())
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let conns = OsdConnections::new(endpoint);
        Ok(Objects {
            mon,
            conns,
            map: RwLock::new(map),
            in_flight: Semaphore::new(IN_FLIGHT_MAX),
            op_timeout: OP_TIMEOUT_DEFAULT,
        })
    }

    pub fn map(&self) -> Arc<OsdMap> {
        self.map.read().expect("map lock").clone()
    }

    async fn refresh_map(&self) {
        if let Ok(map) = self.mon.map().await {
            let mut held = self.map.write().expect("map lock");
            if map.epoch() > held.epoch() {
                *held = Arc::new(map);
            }
        }
    }

    pub fn pool_id(&self, pool: &str) -> Result<PoolId, ClientError> {
        self.map().pool_by_name(pool).map(|p| p.id).ok_or_else(|| {
            ClientError::Refused(RemoteError::new(
                ErrorCode::NotFound,
                format!("pool '{pool}' does not exist"),
            ))
        })
    }

    /// Sends `make(map, pg)` to the PG's primary until it answers or the deadline passes.
    async fn send(
        &self,
        pool: PoolId,
        pg_of: impl Fn(&OsdMap) -> Result<PgId, ClientError>,
        make: impl Fn(&OsdMap, PgId) -> OsdRequest,
        bulk: &Bytes,
    ) -> Result<(Response, Bytes), ClientError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| ClientError::Setup("client closed".into()))?;
        let deadline = Instant::now() + self.op_timeout;
        let mut backoff = BACKOFF_MIN;
        let mut last_error: String;
        loop {
            let map = self.map();
            if map.pool(pool).is_none() {
                self.refresh_map().await;
                if self.map().pool(pool).is_none() {
                    return Err(ClientError::Refused(RemoteError::new(
                        ErrorCode::NotFound,
                        format!("pool {pool} does not exist"),
                    )));
                }
                continue;
            }
            let pg = pg_of(&map)?;
            let primary = map.pg_mapping(pg).ok().and_then(|m| m.acting_primary);
            let target =
                primary.and_then(|p| map.osd(p).and_then(|s| s.addr.clone()).map(|a| (p.0, a)));
            match target {
                None => last_error = format!("pg {pg} has no primary up at epoch {}", map.epoch()),
                Some((osd, addr)) => {
                    let request = make(&map, pg);
                    let left =
                        deadline.saturating_duration_since(Instant::now()).min(ATTEMPT_TIMEOUT);
                    match self
                        .conns
                        .call(osd, &addr, &request, bulk, left.max(Duration::from_millis(1)))
                        .await
                    {
                        Ok(answer) => return Ok(answer),
                        Err(TransportError::Remote { error, .. })
                            if !error.code.is_retryable()
                                && error.code != ErrorCode::StaleEpoch =>
                        {
                            return Err(ClientError::Refused(error));
                        }
                        Err(e) => last_error = format!("osd.{osd} (pg {pg}): {e}"),
                    }
                }
            }
            if Instant::now() + backoff >= deadline {
                return Err(ClientError::Refused(RemoteError::new(
                    ErrorCode::Timeout,
                    format!(
                        "no answer within {} ms; last: {last_error}",
                        self.op_timeout.as_millis()
                    ),
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            self.refresh_map().await;
        }
    }

    /// Runs ops on one object atomically. Write data goes in `data`, in op order.
    pub async fn op(
        &self,
        pool: &str,
        object: &ObjectName,
        ops: Vec<ObjectOp>,
        data: Bytes,
    ) -> Result<OpAnswer, ClientError> {
        self.op_with(pool, object, ops, data, &SnapArgs::default()).await
    }

    /// `op` with snapshot arguments: the snapshot context of writes (self-managed
    /// snapshots), or the snapshot reads are of.
    pub async fn op_with(
        &self,
        pool: &str,
        object: &ObjectName,
        ops: Vec<ObjectOp>,
        data: Bytes,
        snap: &SnapArgs,
    ) -> Result<OpAnswer, ClientError> {
        let pool = self.pool_id(pool)?;
        let reqid = new_request_id();
        let pg_of = |map: &OsdMap| {
            map.object_pg(pool, &object.namespace, &object.name).map_err(|e| {
                ClientError::Refused(RemoteError::new(ErrorCode::NotFound, e.to_string()))
            })
        };
        let make = |map: &OsdMap, pg| OsdRequest::ObjectOps {
            pg,
            epoch: map.epoch(),
            reqid,
            object: object.clone(),
            ops: ops.clone(),
            instance: proto::reqid::instance(),
            snap: snap.clone(),
        };
        match self.send(pool, pg_of, make, &data).await? {
            (Response::ObjectOps { version, results }, data) => {
                Ok(OpAnswer { version, results, data })
            }
            (other, _) => Err(ClientError::Unexpected { request: "object ops", got: other.name() }),
        }
    }

    pub async fn write_full(
        &self,
        pool: &str,
        object: &ObjectName,
        data: Bytes,
    ) -> Result<Version, ClientError> {
        let ops = vec![ObjectOp::WriteFull { len: data.len() as u64 }];
        Ok(self.op(pool, object, ops, data).await?.version)
    }

    pub async fn read(
        &self,
        pool: &str,
        object: &ObjectName,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, ClientError> {
        Ok(self.op(pool, object, vec![ObjectOp::Read { offset, len }], Bytes::new()).await?.data)
    }

    /// A whole object, however large: read in pieces that each assert the version the
    /// first saw, so a change between pieces restarts the read instead of tearing it.
    pub async fn read_full(&self, pool: &str, object: &ObjectName) -> Result<Bytes, ClientError> {
        self.read_full_at(pool, object, None).await
    }

    /// `read_full` of the object as it was at snapshot `snap` (`None`: as it is).
    pub async fn read_full_at(
        &self,
        pool: &str,
        object: &ObjectName,
        snap: Option<u64>,
    ) -> Result<Bytes, ClientError> {
        let at = SnapArgs { context: None, read: snap };
        'whole: for _ in 0..READ_FULL_ATTEMPTS {
            let first = vec![ObjectOp::Stat, ObjectOp::Read { offset: 0, len: READ_PIECE_BYTES }];
            let answer = self.op_with(pool, object, first, Bytes::new(), &at).await?;
            let Some(OpResult::Stat { size, version, .. }) = answer.results.first().cloned() else {
                return Err(ClientError::Unexpected { request: "read", got: "another result" });
            };
            let mut data = answer.data.to_vec();
            while (data.len() as u64) < size {
                let ops = vec![
                    ObjectOp::AssertVersion { version },
                    ObjectOp::Read { offset: data.len() as u64, len: READ_PIECE_BYTES },
                ];
                match self.op_with(pool, object, ops, Bytes::new(), &at).await {
                    Ok(piece) if !piece.data.is_empty() => data.extend_from_slice(&piece.data),
                    Ok(_) => continue 'whole,
                    Err(e) if e.code() == Some(ErrorCode::Canceled) => continue 'whole,
                    Err(e) => return Err(e),
                }
            }
            return Ok(Bytes::from(data));
        }
        Err(ClientError::Refused(RemoteError::new(
            ErrorCode::Busy,
            format!("{object} changed during {READ_FULL_ATTEMPTS} attempts to read it whole"),
        )))
    }

    /// Size, version and modification time.
    pub async fn stat(
        &self,
        pool: &str,
        object: &ObjectName,
    ) -> Result<(u64, Version, i64), ClientError> {
        let plain = SnapArgs::default();
        self.one_op(pool, object, ObjectOp::Stat, &plain, "stat", |result| match result {
            OpResult::Stat { size, version, mtime_ms } => Some((size, version, mtime_ms)),
            _ => None,
        })
        .await
    }

    /// The ranges of `offset..offset + len` of an object, or of its clone that serves
    /// snapshot `snap`, that hold data, as `(offset, len)` in order (64 KiB granularity;
    /// the rest reads as zeros). An erasure-coded object lists its whole range.
    pub async fn extents(
        &self,
        pool: &str,
        object: &ObjectName,
        snap: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64)>, ClientError> {
        let at = SnapArgs { context: None, read: snap };
        let op = ObjectOp::Extents { offset, len };
        self.one_op(pool, object, op, &at, "extents", |result| match result {
            OpResult::Extents(extents) => Some(extents),
            _ => None,
        })
        .await
    }

    /// Runs one op with no write data and takes its result apart with `pick` (`None`: not
    /// the result `request` gives).
    async fn one_op<T>(
        &self,
        pool: &str,
        object: &ObjectName,
        op: ObjectOp,
        snap: &SnapArgs,
        request: &'static str,
        pick: impl FnOnce(OpResult) -> Option<T>,
    ) -> Result<T, ClientError> {
        let answer = self.op_with(pool, object, vec![op], Bytes::new(), snap).await?;
        let result = answer.results.into_iter().next().and_then(pick);
        result.ok_or(ClientError::Unexpected { request, got: "another result" })
    }

    /// Makes `object` a copy of `source` in the same pool (of what it was at snapshot
    /// `snap`, if given): data, xattrs and omap, copied by the OSDs without passing
    /// through this client. `object`'s locks stay.
    pub async fn copy(
        &self,
        pool: &str,
        object: &ObjectName,
        source: &ObjectName,
        snap: Option<u64>,
    ) -> Result<Version, ClientError> {
        let ops = vec![ObjectOp::CopyFrom { source: source.clone(), snap }];
        Ok(self.op(pool, object, ops, Bytes::new()).await?.version)
    }

    pub async fn remove(&self, pool: &str, object: &ObjectName) -> Result<(), ClientError> {
        self.op(pool, object, vec![ObjectOp::Remove], Bytes::new()).await.map(|_| ())
    }

    /// Lock `name` of an object: its kind, tag and live holders (`None`: no holder). Lock
    /// changes are ops (`ObjectOp::Lock`, `Unlock`, `BreakLock`) sent with `op`, alone or
    /// with the writes they go with.
    pub async fn lock_info(
        &self,
        pool: &str,
        object: &ObjectName,
        name: &str,
    ) -> Result<Option<LockInfo>, ClientError> {
        let op = ObjectOp::GetLockInfo { name: name.to_owned() };
        self.one_op(pool, object, op, &SnapArgs::default(), "lock info", |result| match result {
            OpResult::Lock(info) => Some(info),
            _ => None,
        })
        .await
    }

    /// Breaks `locker`'s hold of lock `name` with `cookie` after fencing it, as Ceph's
    /// block clients do: the holder's instance is blocklisted first, and the break is sent
    /// at the epoch that lists it, so the primary refuses the old holder's writes before
    /// the lock is free. A holder cut off from the cluster, not dead, can then never write
    /// after its lock was taken. Returns the entry blocklisted.
    pub async fn break_lock_fencing(
        &self,
        pool: &str,
        object: &ObjectName,
        name: &str,
        locker: &str,
        cookie: &str,
    ) -> Result<String, ClientError> {
        let refused = |code, why: String| ClientError::Refused(RemoteError::new(code, why));
        let info = self.lock_info(pool, object, name).await?;
        let holder = info
            .iter()
            .flat_map(|i| &i.holders)
            .find(|h| h.client == locker && h.cookie == cookie)
            .ok_or_else(|| {
                let why = format!("lock {name} has no holder {locker} with cookie '{cookie}'");
                refused(ErrorCode::NotFound, why)
            })?;
        let entry = holder.addr.clone();
        let command = Command::BlocklistAdd { entry: entry.clone(), expire_secs: None };
        let epoch = match self.mon.command(command).await? {
            CommandOutput::Epoch(epoch) => epoch,
            _ => {
                return Err(ClientError::Unexpected {
                    request: "blocklist add",
                    got: "another output",
                });
            }
        };
        self.wait_for_epoch(epoch, &format!("which fences {entry}")).await?;
        let op = ObjectOp::BreakLock {
            name: name.to_owned(),
            locker: locker.to_owned(),
            cookie: cookie.to_owned(),
        };
        self.op(pool, object, vec![op], Bytes::new()).await?;
        Ok(entry)
    }

    /// Waits until this client has the map of `epoch` (`what` it brings, for the error).
    async fn wait_for_epoch(&self, epoch: placement::Epoch, what: &str) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.op_timeout;
        while self.map().epoch() < epoch {
            if Instant::now() >= deadline {
                return Err(ClientError::Refused(RemoteError::new(
                    ErrorCode::Timeout,
                    format!("the map of epoch {epoch}, {what}, did not come"),
                )));
            }
            self.refresh_map().await;
            if self.map().epoch() < epoch {
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
        Ok(())
    }

    /// Runs a snapshot command on the monitors; the id it hands out and its epoch.
    async fn snap_command(&self, command: Command) -> Result<(u64, placement::Epoch), ClientError> {
        match self.mon.command(command).await? {
            CommandOutput::Snap { id, epoch } => Ok((id, epoch)),
            CommandOutput::Epoch(epoch) => Ok((0, epoch)),
            _ => Err(ClientError::Unexpected { request: "snapshot", got: "another output" }),
        }
    }

    /// A new self-managed snapshot id of `pool`, for the snapshot contexts of writes
    /// (`SnapArgs::context`): writes that carry it keep what they change as clones.
    pub async fn snap_create(&self, pool: &str) -> Result<u64, ClientError> {
        let command = Command::SelfManagedSnapCreate { pool: pool.to_owned() };
        Ok(self.snap_command(command).await?.0)
    }

    pub async fn snap_remove(&self, pool: &str, snap: u64) -> Result<(), ClientError> {
        let command = Command::SelfManagedSnapRemove { pool: pool.to_owned(), snap };
        self.snap_command(command).await.map(|_| ())
    }

    /// Takes pool snapshot `name` of a whole pool; returns once this client has the map
    /// with it, so its own writes from then on keep what they change.
    pub async fn pool_snap_create(&self, pool: &str, name: &str) -> Result<u64, ClientError> {
        let command = Command::PoolSnapCreate { pool: pool.to_owned(), name: name.to_owned() };
        let (id, epoch) = self.snap_command(command).await?;
        self.wait_for_epoch(epoch, &format!("with snapshot {name} of {pool}")).await?;
        Ok(id)
    }

    pub async fn pool_snap_remove(&self, pool: &str, name: &str) -> Result<(), ClientError> {
        let command = Command::PoolSnapRemove { pool: pool.to_owned(), name: name.to_owned() };
        let (_, epoch) = self.snap_command(command).await?;
        self.wait_for_epoch(epoch, &format!("without snapshot {name} of {pool}")).await
    }

    /// An object's clones, each with the snapshots it serves and what it shares with the
    /// next newer one.
    pub async fn list_snaps(
        &self,
        pool: &str,
        object: &ObjectName,
    ) -> Result<SnapList, ClientError> {
        let plain = SnapArgs::default();
        self.one_op(
            pool,
            object,
            ObjectOp::ListSnaps,
            &plain,
            "list snaps",
            |result| match result {
                OpResult::Snaps(list) => Some(list),
                _ => None,
            },
        )
        .await
    }

    /// Makes an object what it was at snapshot `snap`; `context` as for any write (a pool
    /// with pool snapshots uses its own).
    pub async fn rollback(
        &self,
        pool: &str,
        object: &ObjectName,
        snap: u64,
        context: Option<SnapContext>,
    ) -> Result<(), ClientError> {
        let args = SnapArgs { context, read: None };
        let ops = vec![ObjectOp::Rollback { snap }];
        self.op_with(pool, object, ops, Bytes::new(), &args).await.map(|_| ())
    }

    /// The names of an object's locks that have a holder.
    pub async fn list_locks(
        &self,
        pool: &str,
        object: &ObjectName,
    ) -> Result<Vec<String>, ClientError> {
        let plain = SnapArgs::default();
        self.one_op(
            pool,
            object,
            ObjectOp::ListLocks,
            &plain,
            "list locks",
            |result| match result {
                OpResult::Locks(names) => Some(names),
                _ => None,
            },
        )
        .await
    }

    /// Asks a PG's primary to scrub it now (`deep`: reading every byte), repairing what
    /// it finds. Returns once the scrub is queued; the PG's stats show when it ends.
    pub async fn scrub(&self, pg: PgId, deep: bool) -> Result<(), ClientError> {
        if self.map().pool(pg.pool).is_none_or(|p| pg.seed >= p.pg_num) {
            return Err(ClientError::Refused(RemoteError::new(
                ErrorCode::NotFound,
                format!("pg {pg} does not exist"),
            )));
        }
        let make = |map: &OsdMap, pg| OsdRequest::PgScrub { pg, epoch: map.epoch(), deep };
        match self.send(pg.pool, |_| Ok(pg), make, &Bytes::new()).await? {
            (Response::Ack, _) => Ok(()),
            (other, _) => Err(ClientError::Unexpected { request: "pg scrub", got: other.name() }),
        }
    }

    /// Every object of a pool with its size, PG by PG (each PG's page resumes after the
    /// last name seen, so the listing is stable while objects change).
    pub async fn list(&self, pool: &str) -> Result<Vec<(ObjectName, u64)>, ClientError> {
        let pool_id = self.pool_id(pool)?;
        let pg_num = self.map().pool(pool_id).map(|p| p.pg_num).unwrap_or(0);
        let mut out = Vec::new();
        for seed in 0..pg_num {
            let pg = PgId { pool: pool_id, seed };
            let mut after: Option<ObjectName> = None;
            loop {
                let make = |map: &OsdMap, pg| OsdRequest::ListObjects {
                    pg,
                    epoch: map.epoch(),
                    after: after.clone(),
                    max: LIST_PAGE_MAX,
                };
                match self.send(pool_id, |_| Ok(pg), make, &Bytes::new()).await? {
                    (Response::Objects { objects, more }, _) => {
                        after = objects.last().map(|(o, _)| o.clone());
                        out.extend(objects);
                        if !more {
                            break;
                        }
                    }
                    (other, _) => {
                        return Err(ClientError::Unexpected {
                            request: "list objects",
                            got: other.name(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
