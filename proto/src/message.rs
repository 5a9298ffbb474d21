//! The messages daemons and clients exchange.
//!
//! Every request is one frame on its own stream, answered by one frame (or, for a
//! subscription, a frame per new map epoch). The enums only ever grow at the end: a peer
//! that does not know a variant answers `Unsupported` instead of misreading it, and the
//! protocol version is fixed per connection by ALPN (`cairn/1`). Bulk data (maps, the
//! messages of Raft) travels in the frame's bulk payload.

use std::collections::BTreeMap;

use placement::{Epoch, ErasureProfile, MapFlag, PgId, RuleKind, Version};
use serde::{Deserialize, Serialize};

use crate::entity::EntityName;
use crate::error::RemoteError;
use crate::osd::{ObjectName, ObjectOp, OpResult, OsdStat, PeerRequest, PeerResponse, PgStat};
pub use crate::reqid::{RequestId, new_request_id};

/// The protocol version spoken on `cairn/1` connections.
pub const PROTOCOL_VERSION: u16 = 1;

/// What a request on the wire offers whoever sends or serves it: a name for errors and
/// logs. Each service has its own request type, so a monitor is never asked object ops
/// and an OSD never monitor commands: both are unrepresentable.
pub trait WireRequest:
    Serialize + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    /// A short name for logs and errors.
    fn name(&self) -> &'static str;
}

/// What the monitors are asked: by clients and operators, by OSDs, and by each other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MonRequest {
    /// Liveness and clocks: answered with `Pong`.
    Ping { sent_ms: i64 },
    /// The cluster's state and health, as `ceph -s` shows it.
    Status,
    /// The maps since epoch `have`: incrementals when the monitor still has them all, else
    /// the full map. Answered with `Maps` and a `MapBundle` in the bulk payload.
    GetMaps { have: Option<Epoch> },
    /// `GetMaps`, then one `Maps` frame per new epoch until the stream is closed.
    Subscribe { have: Option<Epoch> },
    /// An administrative change, committed through the monitors' Raft log. With an `id`
    /// (see `RequestId`) a resent command is applied at most once.
    Command { id: Option<RequestId>, command: Command },
    /// An OSD starting: it is up, at `addr`.
    OsdBoot { osd: u32, addr: String },
    /// An OSD alive, with the map epoch it has.
    OsdBeacon { osd: u32, epoch: Epoch },
    /// An OSD reporting a peer it cannot reach.
    OsdFailure { target: u32, failed_for_ms: u64 },
    /// Monitor to monitor: a Raft RPC whose request is the bulk payload.
    Raft(RaftRpc),
    /// Monitor to monitor: a command a follower passes to the leader for `origin`.
    Forward { origin: EntityName, id: Option<RequestId>, command: Command },
    /// Monitor to monitor: an OSD message a follower passes to the leader. (Not a boxed
    /// `MonRequest`: a type that contains itself lets one small frame nest deep enough
    /// to overflow the decoder's stack.)
    ForwardOsd { origin: EntityName, message: OsdMessage },
    /// What a new monitor starts from (admins only): answered with `Genesis`.
    GetGenesis,
    /// OSD to monitors: its PGs' states (those it is primary of) and its usage.
    PgStats { osd: u32, epoch: Epoch, pgs: Vec<PgStat>, usage: OsdStat },
    /// The latest PG and OSD statistics the monitors have. Answered with `PgStats`.
    GetPgStats,
    /// A PG primary asking for acting sets other than CRUSH's (`pg_temp`), so complete
    /// copies serve while the up set backfills; an empty list asks to end the override.
    /// Positions matter for erasure-coded pools, whose holes are `None`.
    PgTemp { osd: u32, pgs: Vec<(PgId, Vec<Option<u32>>)> },
    /// An OSD asking what an identity that sent it a request may do (answered `Caps`).
    GetCaps { entity: EntityName },
}

/// What an OSD is asked: by clients (object ops, listings, scrubs), by the OSDs it
/// shares PGs with, and pings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OsdRequest {
    /// Liveness and clocks: answered with `Pong`.
    Ping { sent_ms: i64 },
    /// Client to a PG's primary: ops on one object, applied atomically. Write data is in
    /// the bulk payload. `instance` names the client process (`reqid::instance`): with
    /// its address, what a lock records and the blocklist fences. Answered with
    /// `ObjectOps`.
    ObjectOps {
        pg: PgId,
        epoch: Epoch,
        reqid: RequestId,
        object: ObjectName,
        ops: Vec<ObjectOp>,
        instance: u64,
        snap: crate::osd::SnapArgs,
    },
    /// Client to a PG's primary: a page of its objects after `after`. Answered with
    /// `Objects`.
    ListObjects { pg: PgId, epoch: Epoch, after: Option<ObjectName>, max: u32 },
    /// OSD to OSD about a PG, from the sender's interval starting at `interval`.
    Peer { pg: PgId, epoch: Epoch, interval: Epoch, request: PeerRequest },
    /// Admin to a PG's primary: scrub it now (`deep`: read every byte), repairing what
    /// it finds. Answered with `Ack` once the scrub is queued.
    PgScrub { pg: PgId, epoch: Epoch, deep: bool },
}

/// What an OSD tells the monitors, as a follower passes it on to the leader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OsdMessage {
    Boot { osd: u32, addr: String },
    Beacon { osd: u32, epoch: Epoch },
    Failure { target: u32, failed_for_ms: u64 },
    PgStats { osd: u32, epoch: Epoch, pgs: Vec<PgStat>, usage: OsdStat },
    PgTemp { osd: u32, pgs: Vec<(PgId, Vec<Option<u32>>)> },
}

impl OsdMessage {
    /// The OSD message a request carries, if it is one.
    pub fn from_request(request: &MonRequest) -> Option<OsdMessage> {
        match request {
            MonRequest::OsdBoot { osd, addr } => {
                Some(OsdMessage::Boot { osd: *osd, addr: addr.clone() })
            }
            MonRequest::OsdBeacon { osd, epoch } => {
                Some(OsdMessage::Beacon { osd: *osd, epoch: *epoch })
            }
            MonRequest::OsdFailure { target, failed_for_ms } => {
                Some(OsdMessage::Failure { target: *target, failed_for_ms: *failed_for_ms })
            }
            MonRequest::PgStats { osd, epoch, pgs, usage } => Some(OsdMessage::PgStats {
                osd: *osd,
                epoch: *epoch,
                pgs: pgs.clone(),
                usage: usage.clone(),
            }),
            MonRequest::PgTemp { osd, pgs } => {
                Some(OsdMessage::PgTemp { osd: *osd, pgs: pgs.clone() })
            }
            _ => None,
        }
    }
}

impl WireRequest for MonRequest {
    fn name(&self) -> &'static str {
        match self {
            MonRequest::Ping { .. } => "ping",
            MonRequest::Status => "status",
            MonRequest::GetMaps { .. } => "get maps",
            MonRequest::Subscribe { .. } => "subscribe",
            MonRequest::Command { .. } => "command",
            MonRequest::OsdBoot { .. } => "osd boot",
            MonRequest::OsdBeacon { .. } => "osd beacon",
            MonRequest::OsdFailure { .. } => "osd failure report",
            MonRequest::Raft(_) => "raft",
            MonRequest::Forward { .. } => "forwarded command",
            MonRequest::ForwardOsd { .. } => "forwarded osd message",
            MonRequest::GetGenesis => "get genesis",
            MonRequest::PgStats { .. } => "pg stats",
            MonRequest::GetPgStats => "get pg stats",
            MonRequest::PgTemp { .. } => "pg temp",
            MonRequest::GetCaps { .. } => "get caps",
        }
    }
}

impl WireRequest for OsdRequest {
    fn name(&self) -> &'static str {
        match self {
            OsdRequest::Ping { .. } => "ping",
            OsdRequest::ObjectOps { .. } => "object ops",
            OsdRequest::ListObjects { .. } => "list objects",
            OsdRequest::Peer { .. } => "peer",
            OsdRequest::PgScrub { .. } => "pg scrub",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Error(RemoteError),
    Pong {
        sent_ms: i64,
        now_ms: i64,
        from: EntityName,
        /// To a monitor: set when the answering monitor follows a leader and its monitor
        /// list (as of this log index) does not include the asker, i.e. it was removed.
        removed_at: Option<u64>,
        /// The map epoch the answering daemon has, and that map's hash
        /// (`placement::encoding::map_hash`).
        epoch: Epoch,
        map_hash: u32,
    },
    Status(Box<StatusReport>),
    /// Maps up to `epoch`; the bulk payload is a `MapBundle`.
    Maps {
        epoch: Epoch,
    },
    Done(CommandOutput),
    Ack,
    /// A Raft reply, in the bulk payload.
    Raft,
    /// The genesis file, in the bulk payload, and the cluster CA's key so a new monitor can
    /// issue identities too (only to admins).
    Genesis {
        ca_key_pem: Option<String>,
    },
    /// Results in op order; read data in the bulk payload. `version` is the object's
    /// version after the request (the new one for a write).
    ObjectOps {
        version: Version,
        results: Vec<OpResult>,
    },
    Objects {
        objects: Vec<(ObjectName, u64)>,
        more: bool,
    },
    Peer(PeerResponse),
    PgStats(Box<ClusterPgStats>),
    /// The answer to an OSD's beacon: the settings OSDs apply while running.
    OsdConfig(crate::osd::OsdConfig),
    /// An identity's capabilities; `None` if the cluster does not know it (or revoked it).
    Caps(Option<crate::caps::Caps>),
}

impl Response {
    pub fn name(&self) -> &'static str {
        match self {
            Response::Error(_) => "error",
            Response::Pong { .. } => "pong",
            Response::Status(_) => "status",
            Response::Maps { .. } => "maps",
            Response::Done(_) => "done",
            Response::Ack => "ack",
            Response::Raft => "raft",
            Response::Genesis { .. } => "genesis",
            Response::ObjectOps { .. } => "object ops",
            Response::Objects { .. } => "objects",
            Response::Peer(_) => "peer",
            Response::PgStats(_) => "pg stats",
            Response::OsdConfig(_) => "osd config",
            Response::Caps(_) => "caps",
        }
    }
}

/// Maps in a bulk payload: a full map and/or the incrementals after it, each in its own
/// checksummed encoding (`placement::encoding`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapBundle {
    pub full: Option<Vec<u8>>,
    pub incrementals: Vec<Vec<u8>>,
}

/// Where a replicated or erasure-coded pool keeps its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolSpec {
    Replicated {
        size: u8,
        min_size: Option<u8>,
    },
    Erasure {
        k: u8,
        m: u8,
        min_size: Option<u8>,
    },
    /// From a named erasure-code profile, with its failure domain and class.
    ErasureProfile {
        profile: String,
        min_size: Option<u8>,
    },
}

/// A rule made for one pool (as Ceph makes one from an erasure-code profile's
/// crush-failure-domain and crush-device-class): copies or shards on distinct
/// `failure_domain`s under the default root, on OSDs of `class` if given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRule {
    pub failure_domain: String,
    pub class: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolField {
    Size(u8),
    MinSize(u8),
    PgNum(u32),
    PgpNum(u32),
    Rule(String),
}

/// Administrative changes. Names are resolved by the monitors when the change commits, so
/// two commands that race are decided in log order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A pool; `pg_num` defaults to what the autoscaler picks, `rule` to the default rule,
    /// unless `new_rule` asks for a rule of the pool's own, named after it.
    PoolCreate {
        name: String,
        spec: PoolSpec,
        pg_num: Option<u32>,
        rule: Option<String>,
        new_rule: Option<NewRule>,
    },
    PoolDelete {
        name: String,
    },
    PoolSet {
        name: String,
        field: PoolField,
    },
    /// "copies on distinct `failure_domain`s under `root`, of `class`".
    RuleCreate {
        name: String,
        kind: RuleKind,
        root: String,
        failure_domain: String,
        class: Option<String>,
    },
    RuleRemove {
        name: String,
    },
    /// A named erasure-code profile (`ceph osd erasure-code-profile set`): setting one
    /// that exists with other values is refused, since its pools keep theirs.
    ProfileSet {
        name: String,
        profile: ErasureProfile,
    },
    /// Remove a profile no pool uses.
    ProfileRemove {
        name: String,
    },
    CrushAddBucket {
        name: String,
        type_name: String,
        parent: Option<String>,
    },
    CrushMove {
        name: String,
        parent: String,
    },
    CrushRemove {
        name: String,
    },
    /// Places (or moves) an OSD, like `ceph osd crush set`: `location` maps bucket types to
    /// names from the top, missing buckets are created.
    CrushSetOsd {
        osd: u32,
        weight: f64,
        location: BTreeMap<String, String>,
        class: Option<String>,
    },
    /// A new OSD id (the lowest free one unless given); it is down and out until it boots.
    OsdCreate {
        id: Option<u32>,
    },
    OsdRemove {
        osd: u32,
    },
    OsdIn {
        osds: Vec<u32>,
    },
    OsdOut {
        osds: Vec<u32>,
    },
    OsdDown {
        osds: Vec<u32>,
    },
    OsdReweight {
        osd: u32,
        reweight: f64,
    },
    OsdSetClass {
        osd: u32,
        class: Option<String>,
    },
    SetFlag {
        flag: MapFlag,
    },
    ClearFlag {
        flag: MapFlag,
    },
    /// A cluster setting (`cairn config set mon.down_out_interval 600`).
    ConfigSet {
        key: String,
        value: String,
    },
    /// A new identity with capabilities; answered with its key and certificate.
    AuthAdd {
        entity: EntityName,
        mon_caps: String,
        osd_caps: String,
    },
    /// Revokes an identity: its certificate is refused from then on.
    AuthRemove {
        entity: EntityName,
    },
    AuthList,
    /// A monitor joins the quorum as Raft node `id` (its daemon must already run at `addr`;
    /// a new monitor sends this itself when it starts).
    MonAdd {
        name: String,
        addr: String,
        id: u64,
    },
    MonRemove {
        name: String,
    },
    /// Fences a client instance (`IP:PORT/NONCE`, as a lock's holder shows it) or every
    /// client at an IP: OSDs refuse its ops once they have the epoch this commits, for
    /// `expire_secs` (`BLOCKLIST_EXPIRE_DEFAULT_SECS` if none) on the monitors' clock.
    BlocklistAdd {
        entry: String,
        expire_secs: Option<u64>,
    },
    BlocklistRemove {
        entry: String,
    },
    /// Takes a snapshot of a whole pool (`cairn pool mksnap`); answered with its id.
    PoolSnapCreate {
        pool: String,
        name: String,
    },
    PoolSnapRemove {
        pool: String,
        name: String,
    },
    /// Hands out a snapshot id for a client's own snapshots of objects in the pool
    /// (answered with it). Allowed to clients that may write the pool.
    SelfManagedSnapCreate {
        pool: String,
    },
    /// Removes a self-managed snapshot: OSDs trim its clones.
    SelfManagedSnapRemove {
        pool: String,
        snap: u64,
    },
}

/// How long a blocklist entry lasts unless told (Ceph's default too).
pub const BLOCKLIST_EXPIRE_DEFAULT_SECS: u64 = 3600;

impl Command {
    /// Whether the command only reads (it still goes through the leader).
    pub fn is_read_only(&self) -> bool {
        matches!(self, Command::AuthList)
    }

    /// Whether a resend with the same `RequestId` is answered from the first attempt.
    /// Identities are not (their key exists only in the first answer), nor are monitor
    /// membership changes (Raft's own membership log decides them).
    pub fn resends_safely(&self) -> bool {
        !matches!(
            self,
            Command::AuthAdd { .. } | Command::MonAdd { .. } | Command::MonRemove { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    /// The change committed as this map epoch (or changed nothing in the map).
    Epoch(Epoch),
    OsdCreated {
        osd: u32,
        epoch: Epoch,
    },
    /// A new identity's certificate and key, shown once.
    Identity {
        entity: EntityName,
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    },
    Identities(Vec<IdentityInfo>),
    /// A change outside the map (config, auth, monitors).
    Done,
    /// A snapshot id handed out, in the map as of `epoch`.
    Snap {
        id: u64,
        epoch: Epoch,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub entity: EntityName,
    pub caps: crate::caps::Caps,
    pub fingerprint: String,
}

/// A health check's severity, and the cluster's (its worst check's). Named as Ceph names
/// them in JSON (`HEALTH_OK`), so scripts written for `ceph status -f json` read ours; on
/// the wire (postcard) an enum travels as its index, so the names cost nothing there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    #[serde(rename = "HEALTH_OK")]
    Ok,
    #[serde(rename = "HEALTH_WARN")]
    Warn,
    #[serde(rename = "HEALTH_ERR")]
    Err,
}

impl Severity {
    pub fn health_name(self) -> &'static str {
        match self {
            Severity::Ok => "HEALTH_OK",
            Severity::Warn => "HEALTH_WARN",
            Severity::Err => "HEALTH_ERR",
        }
    }
}

/// One named health check (MON_DOWN, OSD_DOWN, CLOCK_SKEW, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub code: String,
    pub severity: Severity,
    pub summary: String,
    pub detail: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonStatus {
    pub name: String,
    /// Its Raft node id.
    pub id: u64,
    pub addr: String,
    pub in_quorum: bool,
    pub leader: bool,
    /// Milliseconds since the answering monitor last heard from it.
    pub last_seen_ms: Option<u64>,
    /// Its clock minus the answering monitor's, in milliseconds.
    pub clock_offset_ms: Option<i64>,
    /// The map epoch it had when it last answered, and that map's hash.
    pub epoch: Option<Epoch>,
    pub map_hash: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsdCounts {
    pub total: u32,
    pub up: u32,
    pub r#in: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub fsid: String,
    pub health: Severity,
    pub checks: Vec<HealthCheck>,
    /// The monitor that answered.
    pub answered_by: String,
    pub leader: Option<String>,
    pub term: u64,
    pub monitors: Vec<MonStatus>,
    pub epoch: Epoch,
    pub osds: OsdCounts,
    pub pools: u32,
    pub pgs: u64,
    pub flags: Vec<String>,
    /// What the PGs' primaries last reported, summed.
    pub pg_summary: PgSummary,
}

/// PG states and object counts over the whole cluster, with recovery progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgSummary {
    pub pgs: u64,
    /// How many PGs are in each state, by its words joined with `+` ("active+clean").
    pub states: BTreeMap<String, u64>,
    /// Logical objects and bytes (one copy of each).
    pub objects: u64,
    pub bytes: u64,
    /// Object copies the pools' sizes call for, and of those the ones that are missing
    /// (degraded), in the wrong place (misplaced), or nowhere to be found (unfound).
    pub copies: u64,
    pub degraded: u64,
    pub misplaced: u64,
    pub unfound: u64,
    /// Recovery and backfill over the last few reports, cluster-wide.
    pub recovery_objects_per_s: u64,
    pub recovery_bytes_per_s: u64,
}

/// What the monitors know of PGs and OSD usage: each PG as its primary last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPgStats {
    pub epoch: Epoch,
    /// Every PG of the map: as last reported, or `unknown` (never reported), or `stale`
    /// (its reporter went down or silent) followed by the last words reported.
    pub pgs: Vec<PgStat>,
    pub osds: Vec<OsdStat>,
    pub summary: PgSummary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_severity_reads_in_json_as_ceph_writes_it() {
        for (severity, name) in [
            (Severity::Ok, "HEALTH_OK"),
            (Severity::Warn, "HEALTH_WARN"),
            (Severity::Err, "HEALTH_ERR"),
        ] {
            assert_eq!(serde_json::to_value(severity).unwrap(), name);
            assert_eq!(severity.health_name(), name);
            assert_eq!(serde_json::from_value::<Severity>(name.into()).unwrap(), severity);
        }
        assert!(serde_json::from_value::<Severity>("Ok".into()).is_err());
    }
}
