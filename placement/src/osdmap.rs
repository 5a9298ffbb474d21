//! The OSD map: one epoch of the cluster's placement state (CRUSH, OSD states, pools, PG
//! overrides, flags) and the object → PG → OSDs pipeline every client and daemon runs.
//!
//! An `OsdMap` is always valid: it is made from `MapContents` by `OsdMap::new`, which checks
//! every invariant and compiles CRUSH, and changed only by applying an incremental
//! (`crate::incremental`), which yields a new map. The pipeline for a PG is Ceph's:
//! CRUSH gives the raw set; `pg_upmap_items` exceptions replace members; OSDs that are down
//! leave the set (replicated) or leave a hole (erasure), never a replacement, so a short
//! restart moves no data; the first OSD left is the primary; `pg_temp` may override the
//! acting set while data is being moved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::MapError;
use crate::crush::SHARDS_MAX;
use crate::crush::compiled::CompiledCrush;
use crate::crush::map::CrushMap;
use crate::crush::mapper::{ITEM_NONE, do_rule};
use crate::crush::rule::{RuleKind, Step};
use crate::hash::{self, HASH_VERSION};
use crate::ids::{Epoch, OSD_ID_LIMIT, OsdId, PgId, PoolId, Reweight, RuleId};
use crate::pool::{ErasureProfile, Pool, PoolKind};

/// Upper bound on the pools of a map.
pub const POOLS_MAX: usize = 1 << 16;
/// Upper bound on the erasure-code profiles of a map.
pub const PROFILES_MAX: usize = 1 << 10;
/// Upper bound on the `pg_temp` plus `pg_upmap_items` entries of a map.
pub const OVERRIDES_MAX: usize = 1 << 22;

/// Cluster-wide switches an operator sets during maintenance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapFlag {
    /// Down OSDs are not marked out: no rebalancing during planned maintenance.
    Noout,
    /// Booting OSDs are not marked in.
    Noin,
    /// OSDs are not marked up.
    Noup,
    /// OSDs are not marked down.
    Nodown,
    /// Client reads and writes are paused.
    Pause,
    Noscrub,
    Nodeepscrub,
    Nobackfill,
    Norecover,
    Norebalance,
}

impl MapFlag {
    pub const ALL: [MapFlag; 10] = [
        MapFlag::Noout,
        MapFlag::Noin,
        MapFlag::Noup,
        MapFlag::Nodown,
        MapFlag::Pause,
        MapFlag::Noscrub,
        MapFlag::Nodeepscrub,
        MapFlag::Nobackfill,
        MapFlag::Norecover,
        MapFlag::Norebalance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MapFlag::Noout => "noout",
            MapFlag::Noin => "noin",
            MapFlag::Noup => "noup",
            MapFlag::Nodown => "nodown",
            MapFlag::Pause => "pause",
            MapFlag::Noscrub => "noscrub",
            MapFlag::Nodeepscrub => "nodeepscrub",
            MapFlag::Nobackfill => "nobackfill",
            MapFlag::Norecover => "norecover",
            MapFlag::Norebalance => "norebalance",
        }
    }
}

impl std::str::FromStr for MapFlag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        MapFlag::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let known: Vec<&str> = MapFlag::ALL.iter().map(|f| f.name()).collect();
            format!("unknown flag '{s}' (known: {})", known.join(", "))
        })
    }
}

/// An OSD's state in the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsdState {
    /// Running and reachable. A down OSD keeps its place in CRUSH (its PGs are degraded).
    pub up: bool,
    /// Part of data placement. An out OSD gets nothing; its data moves elsewhere.
    #[serde(rename = "in")]
    pub is_in: bool,
    /// Fraction of its CRUSH share the OSD keeps while in.
    pub reweight: Reweight,
    /// Where the OSD serves (`ip:port`), from its last boot.
    pub addr: Option<String>,
}

/// Upper bound on the text of an OSD address.
pub const ADDR_BYTES_MAX: usize = 64;

impl OsdState {
    /// A new OSD as `osd create` leaves it: down and out until it boots.
    pub fn new_down_out() -> OsdState {
        OsdState { up: false, is_in: false, reweight: Reweight::ONE, addr: None }
    }

    /// The reweight CRUSH sees: zero when out.
    pub fn effective_reweight(&self) -> Reweight {
        if self.is_in { self.reweight } else { Reweight::ZERO }
    }
}

/// Everything a map epoch holds, as stored and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapContents {
    /// The cluster's id: maps of different clusters never mix.
    pub fsid: [u8; 16],
    pub epoch: Epoch,
    /// Version of the placement hash functions (`crate::hash`).
    pub hash_version: u32,
    pub crush: CrushMap,
    pub osds: BTreeMap<OsdId, OsdState>,
    pub pools: BTreeMap<PoolId, Pool>,
    /// The highest pool id ever allocated; ids are not reused.
    pub pool_max: u32,
    pub erasure_profiles: BTreeMap<String, ErasureProfile>,
    /// Acting-set overrides while a PG's data moves; `None` is a hole (erasure pools).
    pub pg_temp: BTreeMap<PgId, Vec<Option<OsdId>>>,
    /// Per-PG exceptions to CRUSH: each pair replaces `from` by `to` (the balancer's tool).
    pub pg_upmap_items: BTreeMap<PgId, Vec<(OsdId, OsdId)>>,
    pub flags: BTreeSet<MapFlag>,
    /// Client instances whose ops OSDs refuse (fencing), each until a wall-clock time (ms
    /// since the Unix epoch): `IP:PORT/NONCE` for one instance, `IP` for every client at
    /// that address (`Blocklisted`).
    pub blocklist: BTreeMap<String, i64>,
}

/// Entries the blocklist may hold.
pub const BLOCKLIST_MAX: usize = 1 << 16;

/// A blocklist entry: one client instance (`IP:PORT/NONCE`), or every client at an address
/// (`IP`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocklisted {
    Instance(std::net::SocketAddr, u64),
    Host(std::net::IpAddr),
}

impl std::str::FromStr for Blocklisted {
    type Err = String;

    fn from_str(s: &str) -> Result<Blocklisted, String> {
        let bad = || format!("'{s}' is neither IP:PORT/NONCE (a client instance) nor an IP");
        if s.len() > ADDR_BYTES_MAX {
            return Err(bad());
        }
        match s.split_once('/') {
            Some((addr, nonce)) => Ok(Blocklisted::Instance(
                addr.parse().map_err(|_| bad())?,
                nonce.parse().map_err(|_| bad())?,
            )),
            None => s.parse().map(Blocklisted::Host).map_err(|_| bad()),
        }
    }
}

impl MapContents {
    /// An empty map at epoch 0 with the default bucket types.
    pub fn empty(fsid: [u8; 16]) -> MapContents {
        MapContents {
            fsid,
            epoch: Epoch(0),
            hash_version: HASH_VERSION,
            crush: CrushMap::default(),
            osds: BTreeMap::new(),
            pools: BTreeMap::new(),
            pool_max: 0,
            erasure_profiles: BTreeMap::new(),
            pg_temp: BTreeMap::new(),
            pg_upmap_items: BTreeMap::new(),
            flags: BTreeSet::new(),
            blocklist: BTreeMap::new(),
        }
    }

    /// Checks every invariant across CRUSH, OSDs, pools and overrides.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.hash_version != HASH_VERSION {
            return Err(MapError::invalid(
                "map",
                format!("hash version {} is not {HASH_VERSION}", self.hash_version),
            ));
        }
        self.crush.validate()?;
        for (&osd, state) in &self.osds {
            if osd.0 >= OSD_ID_LIMIT {
                return Err(MapError::invalid(osd.to_string(), "id is above the OSD id limit"));
            }
            if !state.reweight.is_valid() {
                return Err(MapError::invalid(osd.to_string(), "reweight is above 1.0"));
            }
            if let Some(addr) = &state.addr
                && (addr.len() > ADDR_BYTES_MAX || addr.parse::<std::net::SocketAddr>().is_err())
            {
                return Err(MapError::invalid(
                    osd.to_string(),
                    format!("'{addr}' is not an ip:port"),
                ));
            }
        }
        if let Some(osd) = self.crush.devices.keys().find(|o| !self.osds.contains_key(o)) {
            return Err(MapError::invalid(osd.to_string(), "is in CRUSH but not in the OSD map"));
        }
        if self.pools.len() > POOLS_MAX {
            return Err(MapError::Limit { what: "pools", limit: POOLS_MAX as u64 });
        }
        if self.erasure_profiles.len() > PROFILES_MAX {
            return Err(MapError::Limit {
                what: "erasure-code profiles",
                limit: PROFILES_MAX as u64,
            });
        }
        if self.pg_temp.len() + self.pg_upmap_items.len() > OVERRIDES_MAX {
            let limit = OVERRIDES_MAX as u64;
            return Err(MapError::Limit { what: "pg_temp and pg_upmap_items entries", limit });
        }
        for (name, profile) in &self.erasure_profiles {
            profile.validate(name)?;
        }
        self.validate_pools()?;
        self.validate_overrides()
    }

    fn validate_pools(&self) -> Result<(), MapError> {
        let mut names = BTreeSet::new();
        for (&id, pool) in &self.pools {
            pool.validate()?;
            let bad = |reason: String| MapError::BadPool { pool: pool.name.clone(), reason };
            if id != pool.id || id.0 > self.pool_max {
                return Err(bad(format!("id {} is stored as {id} or above pool_max", pool.id)));
            }
            if !names.insert(pool.name.as_str()) {
                return Err(MapError::AlreadyExists { what: "pool", name: pool.name.clone() });
            }
            let rule = self
                .crush
                .rules
                .get(&pool.rule)
                .ok_or_else(|| bad(format!("its rule {} does not exist", pool.rule)))?;
            let want = if pool.is_erasure() { RuleKind::Erasure } else { RuleKind::Replicated };
            if rule.kind != want {
                return Err(bad(format!(
                    "rule '{}' is {}, the pool is {}",
                    rule.name,
                    rule.kind.name(),
                    want.name()
                )));
            }
            if let PoolKind::Erasure { profile, k, m, .. } = &pool.kind {
                let p = self
                    .erasure_profiles
                    .get(profile)
                    .ok_or_else(|| MapError::NoSuchProfile(profile.clone()))?;
                if (p.k, p.m) != (*k, *m) {
                    return Err(bad(format!(
                        "k={k} m={m} differ from its profile '{profile}' (k={} m={})",
                        p.k, p.m
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_overrides(&self) -> Result<(), MapError> {
        let pg_pool = |pg: &PgId| -> Result<&Pool, MapError> {
            let pool = self.pools.get(&pg.pool).ok_or(MapError::NoSuchPool(pg.pool.to_string()))?;
            if pg.seed >= pool.pg_num {
                return Err(MapError::NoSuchPg { pg: *pg, pg_num: pool.pg_num });
            }
            Ok(pool)
        };
        let known = |osd: &OsdId| {
            if self.osds.contains_key(osd) { Ok(()) } else { Err(MapError::NoSuchOsd(*osd)) }
        };
        for (pg, osds) in &self.pg_temp {
            let pool = pg_pool(pg)?;
            let what = || format!("pg_temp of {pg}");
            if osds.is_empty() || osds.len() > pool.size() {
                return Err(MapError::invalid(what(), format!("needs 1 to {} OSDs", pool.size())));
            }
            if !pool.is_erasure() && osds.iter().any(Option::is_none) {
                return Err(MapError::invalid(what(), "holes are for erasure-coded pools"));
            }
            let present: Vec<OsdId> = osds.iter().flatten().copied().collect();
            present.iter().try_for_each(known)?;
            if present.iter().collect::<BTreeSet<_>>().len() != present.len() {
                return Err(MapError::invalid(what(), "names an OSD twice"));
            }
        }
        for (pg, pairs) in &self.pg_upmap_items {
            let pool = pg_pool(pg)?;
            let what = || format!("pg_upmap_items of {pg}");
            if pairs.is_empty() || pairs.len() > pool.size() {
                return Err(MapError::invalid(what(), format!("needs 1 to {} pairs", pool.size())));
            }
            for (from, to) in pairs {
                known(from)?;
                known(to)?;
                if from == to {
                    return Err(MapError::invalid(what(), format!("maps {from} to itself")));
                }
            }
        }
        if self.blocklist.len() > BLOCKLIST_MAX {
            return Err(MapError::Limit { what: "blocklist entries", limit: BLOCKLIST_MAX as u64 });
        }
        for entry in self.blocklist.keys() {
            entry.parse::<Blocklisted>().map_err(|e| MapError::invalid("blocklist", e))?;
        }
        Ok(())
    }

    /// `blocklisted` for an instance as locks record it (`IP:PORT/NONCE`); one that does
    /// not parse is not on the blocklist.
    pub fn blocklists_instance(&self, instance: &str, now_ms: i64) -> bool {
        if self.blocklist.is_empty() {
            return false;
        }
        match instance.parse::<Blocklisted>() {
            Ok(Blocklisted::Instance(addr, nonce)) => self.blocklisted(addr, nonce, now_ms),
            _ => false,
        }
    }

    /// Whether the blocklist refuses the client instance `addr`/`nonce` at `now_ms`: an
    /// entry for it, or for its IP, that has not expired.
    pub fn blocklisted(&self, addr: std::net::SocketAddr, nonce: u64, now_ms: i64) -> bool {
        let live = |key: &str| self.blocklist.get(key).is_some_and(|&until| until > now_ms);
        !self.blocklist.is_empty()
            && (live(&format!("{addr}/{nonce}")) || live(&addr.ip().to_string()))
    }
}

/// The OSDs of a PG by position: at most `SHARDS_MAX`, with holes for erasure-coded pools.
/// Fixed-size and `Copy`, so mapping a PG never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OsdSet {
    len: u8,
    slots: [u32; SHARDS_MAX],
}

const HOLE: u32 = u32::MAX;

impl OsdSet {
    pub const fn new() -> OsdSet {
        OsdSet { len: 0, slots: [HOLE; SHARDS_MAX] }
    }

    pub fn from_slice(osds: &[Option<OsdId>]) -> OsdSet {
        let mut set = OsdSet::new();
        for &osd in osds {
            set.push(osd);
        }
        set
    }

    /// Appends a position. Panics past `SHARDS_MAX`: callers bound sets by pool size.
    pub fn push(&mut self, osd: Option<OsdId>) {
        assert!((self.len as usize) < SHARDS_MAX, "OsdSet is full");
        self.slots[self.len as usize] = osd.map_or(HOLE, |o| o.0);
        self.len += 1;
    }

    /// Positions, holes included.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, position: usize) -> Option<OsdId> {
        self.iter().nth(position).flatten()
    }

    pub fn set(&mut self, position: usize, osd: Option<OsdId>) {
        assert!(position < self.len(), "position {position} beyond {}", self.len);
        self.slots[position] = osd.map_or(HOLE, |o| o.0);
    }

    /// Each position: an OSD or a hole.
    pub fn iter(&self) -> impl Iterator<Item = Option<OsdId>> + '_ {
        self.slots[..self.len()].iter().map(|&s| (s != HOLE).then_some(OsdId(s)))
    }

    /// The OSDs present, in position order.
    pub fn osds(&self) -> impl Iterator<Item = OsdId> + '_ {
        self.iter().flatten()
    }

    /// How many positions hold an OSD.
    pub fn count(&self) -> usize {
        self.slots[..self.len()].iter().filter(|&&s| s != HOLE).count()
    }

    pub fn contains(&self, osd: OsdId) -> bool {
        self.slots[..self.len()].contains(&osd.0)
    }

    pub fn position(&self, osd: OsdId) -> Option<usize> {
        self.slots[..self.len()].iter().position(|&s| s == osd.0)
    }

    /// The first OSD present: the primary.
    pub fn primary(&self) -> Option<OsdId> {
        self.osds().next()
    }
}

impl Default for OsdSet {
    fn default() -> Self {
        OsdSet::new()
    }
}

impl fmt::Debug for OsdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for OsdSet {
    /// `[0,3,NONE]`: OSD numbers, `NONE` for holes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, osd) in self.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            match osd {
                Some(osd) => write!(f, "{}", osd.0)?,
                None => write!(f, "NONE")?,
            }
        }
        write!(f, "]")
    }
}

impl Serialize for OsdSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for OsdSet {
    /// Reads what `serialize` writes; more than `SHARDS_MAX` positions is an error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Positions;
        impl<'de> serde::de::Visitor<'de> for Positions {
            type Value = OsdSet;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {SHARDS_MAX} OSD ids or nulls")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OsdSet, A::Error> {
                let mut set = OsdSet::new();
                while let Some(osd) = seq.next_element::<Option<OsdId>>()? {
                    if set.len() == SHARDS_MAX {
                        return Err(serde::de::Error::invalid_length(SHARDS_MAX + 1, &self));
                    }
                    if osd.is_some_and(|o| o.0 >= OSD_ID_LIMIT) {
                        return Err(serde::de::Error::custom("OSD id above the limit"));
                    }
                    set.push(osd);
                }
                Ok(set)
            }
        }
        deserializer.deserialize_seq(Positions)
    }
}

/// Where a PG lives under one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgMapping {
    /// What CRUSH (with upmap exceptions) says, minus OSDs that are down.
    pub up: OsdSet,
    pub up_primary: Option<OsdId>,
    /// Who serves the PG now: `up`, or `pg_temp` while data moves.
    pub acting: OsdSet,
    pub acting_primary: Option<OsdId>,
}

/// A validated map epoch with its compiled placement state.
#[derive(Clone)]
pub struct OsdMap {
    contents: MapContents,
    /// Shared between epochs that leave CRUSH and the in/out states alone.
    crush: Arc<CompiledCrush>,
    /// Effective reweight per OSD id (16.16; 0 for out or absent), as the mapper reads it.
    reweights: Vec<u32>,
}

impl fmt::Debug for OsdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OsdMap").field("contents", &self.contents).finish_non_exhaustive()
    }
}

impl PartialEq for OsdMap {
    fn eq(&self, other: &Self) -> bool {
        self.contents == other.contents
    }
}

impl Serialize for OsdMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.contents.serialize(serializer)
    }
}

impl OsdMap {
    /// Validates `contents` and compiles its placement state.
    pub fn new(contents: MapContents) -> Result<OsdMap, MapError> {
        OsdMap::following(contents, None)
    }

    /// Like `new`, reusing `previous`'s compiled CRUSH when neither CRUSH nor the set of
    /// OSDs that are in changed (an OSD going up or down, a flag, a pool change).
    pub(crate) fn following(
        contents: MapContents,
        previous: Option<&OsdMap>,
    ) -> Result<OsdMap, MapError> {
        contents.validate()?;
        let len = contents.osds.keys().next_back().map_or(0, |o| o.0 as usize + 1);
        let mut reweights = vec![0u32; len];
        for (osd, state) in &contents.osds {
            reweights[osd.0 as usize] = state.effective_reweight().0;
        }
        let in_set = |weights: &[u32]| weights.iter().map(|&w| w > 0).collect::<Vec<bool>>();
        let crush = match previous {
            Some(p)
                if p.contents.crush == contents.crush
                    && in_set(&p.reweights) == in_set(&reweights) =>
            {
                Arc::clone(&p.crush)
            }
            _ => {
                let is_in = |osd: OsdId| reweights.get(osd.0 as usize).is_some_and(|&w| w > 0);
                Arc::new(CompiledCrush::new(&contents.crush, &is_in)?)
            }
        };
        Ok(OsdMap { contents, crush, reweights })
    }

    pub fn contents(&self) -> &MapContents {
        &self.contents
    }

    pub fn into_contents(self) -> MapContents {
        self.contents
    }

    pub fn epoch(&self) -> Epoch {
        self.contents.epoch
    }

    pub fn crush(&self) -> &CrushMap {
        &self.contents.crush
    }

    pub fn osd(&self, osd: OsdId) -> Option<&OsdState> {
        self.contents.osds.get(&osd)
    }

    pub fn pool(&self, pool: PoolId) -> Option<&Pool> {
        self.contents.pools.get(&pool)
    }

    pub fn pool_by_name(&self, name: &str) -> Option<&Pool> {
        self.contents.pools.values().find(|p| p.name == name)
    }

    /// The OSDs a rule can place on (under its `take` steps, in their classes) that are in,
    /// with their effective weight (CRUSH weight times reweight, 16.16), in id order.
    pub fn rule_osds(&self, rule: RuleId) -> Vec<(OsdId, u64)> {
        let mut osds = BTreeMap::new();
        let Some(rule) = self.contents.crush.rules.get(&rule) else {
            return Vec::new();
        };
        for step in &rule.steps {
            if let Step::Take { bucket, class } = step {
                self.contents.crush.for_each_osd_under((*bucket).into(), &mut |osd, device| {
                    if class.is_none() || device.class == *class {
                        let reweight = self.reweights.get(osd.0 as usize).copied().unwrap_or(0);
                        let weight = (u64::from(device.weight.0) * u64::from(reweight)) >> 16;
                        if weight > 0 {
                            osds.insert(osd, weight);
                        }
                    }
                });
            }
        }
        osds.into_iter().collect()
    }

    /// The lowest OSD id not in use (what `osd create` hands out).
    pub fn next_free_osd_id(&self) -> OsdId {
        (0..).map(OsdId).find(|id| !self.contents.osds.contains_key(id)).expect("free OSD id")
    }

    pub fn is_up(&self, osd: OsdId) -> bool {
        self.contents.osds.get(&osd).is_some_and(|s| s.up)
    }

    /// In, with a reweight above zero.
    pub fn is_in(&self, osd: OsdId) -> bool {
        self.reweights.get(osd.0 as usize).is_some_and(|&w| w > 0)
    }

    /// The PG an object of `pool` belongs to.
    pub fn object_pg(&self, pool: PoolId, namespace: &str, name: &[u8]) -> Result<PgId, MapError> {
        let p = self.pool(pool).ok_or_else(|| MapError::NoSuchPool(pool.to_string()))?;
        let h = hash::object_hash(namespace, name);
        let seed = hash::stable_mod(h, p.pg_num, hash::stable_mask(p.pg_num));
        Ok(PgId { pool, seed })
    }

    /// Every PG of a pool.
    pub fn pgs(&self, pool: &Pool) -> impl Iterator<Item = PgId> + use<> {
        let id = pool.id;
        (0..pool.pg_num).map(move |seed| PgId { pool: id, seed })
    }

    fn pool_of(&self, pg: PgId) -> Result<&Pool, MapError> {
        let pool = self.pool(pg.pool).ok_or_else(|| MapError::NoSuchPool(pg.pool.to_string()))?;
        if pg.seed >= pool.pg_num {
            return Err(MapError::NoSuchPg { pg, pg_num: pool.pg_num });
        }
        Ok(pool)
    }

    /// The OSDs CRUSH picks for a PG, before exceptions and down OSDs are considered.
    pub fn pg_raw(&self, pg: PgId) -> Result<OsdSet, MapError> {
        let pool = self.pool_of(pg)?;
        let placement = hash::stable_mod(pg.seed, pool.pgp_num, hash::stable_mask(pool.pgp_num));
        let x = hash::pg_placement_seed(pool.id.0, placement);
        Ok(self.run_rule(pool.rule, x, pool.size()))
    }

    /// Runs a rule for input `x` asking for `size` OSDs (`crushtool --test`'s view).
    pub fn rule_mapping(&self, rule: RuleId, x: u32, size: usize) -> Result<OsdSet, MapError> {
        if !self.crush.rules.contains_key(&rule) {
            return Err(MapError::NoSuchRule(rule.to_string()));
        }
        if size == 0 || size > SHARDS_MAX {
            return Err(MapError::invalid(
                "replica count",
                format!("{size} is not in 1..={SHARDS_MAX}"),
            ));
        }
        Ok(self.run_rule(rule, x, size))
    }

    fn run_rule(&self, rule: RuleId, x: u32, size: usize) -> OsdSet {
        let steps = &self.crush.rules[&rule];
        let mut out = [0i32; SHARDS_MAX];
        let n = do_rule(&self.crush, steps, x, size, &self.reweights, &mut out);
        let mut set = OsdSet::new();
        for &item in &out[..n] {
            set.push((item != ITEM_NONE).then_some(OsdId(item as u32)));
        }
        set
    }

    /// Where a PG's data belongs: CRUSH with the upmap exceptions applied. Down OSDs stay
    /// in this set (their data is not moved); this is what data movement is measured on.
    pub fn pg_placement(&self, pg: PgId) -> Result<OsdSet, MapError> {
        let raw = self.pg_raw(pg)?;
        Ok(match self.contents.pg_upmap_items.get(&pg) {
            Some(pairs) => self.upmapped(self.pool_of(pg)?.rule, raw, pairs),
            None => raw,
        })
    }

    /// The up and acting sets of a PG.
    pub fn pg_mapping(&self, pg: PgId) -> Result<PgMapping, MapError> {
        let pool = self.pool_of(pg)?;
        let placement = self.pg_placement(pg)?;
        let up = self.without_down(pool, placement.iter());
        let acting = match self.contents.pg_temp.get(&pg) {
            Some(temp) => {
                let acting = self.without_down(pool, temp.iter().copied());
                if acting.count() > 0 { acting } else { up }
            }
            None => up,
        };
        Ok(PgMapping { up, up_primary: up.primary(), acting, acting_primary: acting.primary() })
    }

    /// A PG's set with its upmap exceptions: each pair replaces `from` by `to` where `from`
    /// is in the set, `to` is not, and `to` is in. Exceptions that would break the rule's
    /// promise of one copy per failure domain are dropped as a whole (the CRUSH set stands):
    /// an exception made for one map can be wrong for the next, after CRUSH moved the
    /// other copies.
    pub(crate) fn upmapped(&self, rule: RuleId, raw: OsdSet, pairs: &[(OsdId, OsdId)]) -> OsdSet {
        let mut set = raw;
        for &(from, to) in pairs {
            if let Some(position) = set.position(from)
                && !set.contains(to)
                && self.is_in(to)
            {
                set.set(position, Some(to));
            }
        }
        if set == raw {
            return raw;
        }
        let level = self.crush.rule_domains.get(&rule).copied().unwrap_or(0);
        let mut seen = [None; SHARDS_MAX];
        for (i, osd) in set.osds().enumerate() {
            let domain = self.crush.domain_of(osd, level);
            if domain.is_none() || seen[..i].contains(&domain) {
                return raw;
            }
            seen[i] = domain;
        }
        set
    }

    /// Drops OSDs that are down: replicated pools close ranks, erasure pools keep a hole at
    /// the shard's position.
    fn without_down(&self, pool: &Pool, osds: impl Iterator<Item = Option<OsdId>>) -> OsdSet {
        let mut set = OsdSet::new();
        for osd in osds {
            let live = osd.filter(|&o| self.is_up(o));
            if live.is_some() || pool.is_erasure() {
                set.push(live);
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incremental::{Incremental, MapChange, PoolSetting};

    #[test]
    fn osd_sets_round_trip_and_refuse_too_many_positions() {
        let set = OsdSet::from_slice(&[Some(OsdId(3)), None, Some(OsdId(7))]);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "[3,null,7]");
        assert_eq!(serde_json::from_str::<OsdSet>(&json).unwrap(), set);
        assert_eq!(
            postcard::from_bytes::<OsdSet>(&postcard::to_stdvec(&set).unwrap()).unwrap(),
            set
        );
        let too_many = format!("[{}]", vec!["1"; SHARDS_MAX + 1].join(","));
        assert!(serde_json::from_str::<OsdSet>(&too_many).is_err());
        assert!(serde_json::from_str::<OsdSet>("[99999999]").is_err());
        assert_eq!(set.to_string(), "[3,NONE,7]");
        assert_eq!((set.len(), set.count(), set.primary()), (3, 2, Some(OsdId(3))));
    }

    #[test]
    fn the_blocklist_refuses_an_instance_or_a_host_until_its_entry_expires() {
        let levels = [("root".to_owned(), 1), ("host".to_owned(), 1)];
        let map = crate::describe::synthesize(&levels, 1, 1.0, None).unwrap().build().unwrap();
        let add = |entry: &str, until_ms| MapChange::BlocklistAdd { entry: entry.into(), until_ms };
        let changes = vec![add("10.0.0.1:5000/7", 2_000), add("10.0.0.2", 3_000)];
        let fenced = map.apply(&Incremental::new(&map, changes)).unwrap();
        let c = fenced.contents();
        let one: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert!(c.blocklisted(one, 7, 1_999));
        assert!(!c.blocklisted(one, 7, 2_000), "expired at its time");
        assert!(!c.blocklisted(one, 8, 1_000), "another instance at the same address");
        assert!(c.blocklisted("10.0.0.2:6000".parse().unwrap(), 1, 2_999), "the whole host");
        assert!(!map.contents().blocklisted(one, 7, 0));
        assert!(c.blocklists_instance("10.0.0.1:5000/7", 1_999));
        assert!(!c.blocklists_instance("10.0.0.1:5000/8", 1_999));
        // Bad entries and removing what is not there are refused.
        for bad in ["10.0.0.1:5000", "host/1", "10.0.0.1:5000/x", ""] {
            let e = fenced.apply(&Incremental::new(&fenced, vec![add(bad, 1)])).unwrap_err();
            assert!(e.to_string().contains("neither IP:PORT/NONCE"), "{bad}: {e}");
        }
        let gone = MapChange::BlocklistRemove { entry: "10.0.0.2".into() };
        let lifted = fenced.apply(&Incremental::new(&fenced, vec![gone.clone()])).unwrap();
        assert!(!lifted.contents().blocklisted("10.0.0.2:6000".parse().unwrap(), 1, 0));
        let e = lifted.apply(&Incremental::new(&lifted, vec![gone])).unwrap_err();
        assert!(e.to_string().contains("is not on it"), "{e}");
    }

    #[test]
    fn epochs_that_leave_crush_alone_share_its_compiled_form() {
        let levels = [("root".to_owned(), 1), ("host".to_owned(), 3)];
        let map = crate::describe::synthesize(&levels, 2, 1.0, None).unwrap().build().unwrap();
        let down =
            map.apply(&Incremental::new(&map, vec![MapChange::OsdDown { osd: OsdId(1) }])).unwrap();
        assert!(Arc::ptr_eq(&map.crush, &down.crush));
        let out = down
            .apply(&Incremental::new(&down, vec![MapChange::OsdOut { osd: OsdId(1) }]))
            .unwrap();
        assert!(!Arc::ptr_eq(&down.crush, &out.crush));
        let weight = MapChange::CrushSetWeight { osd: OsdId(2), weight: crate::Weight::ONE };
        let same_weight = out.apply(&Incremental::new(&out, vec![weight])).unwrap();
        assert!(Arc::ptr_eq(&out.crush, &same_weight.crush));
    }

    #[test]
    fn shrinking_a_pool_trims_its_acting_overrides() {
        let levels = [("root".to_owned(), 1), ("host".to_owned(), 4)];
        let mut desc = crate::describe::synthesize(&levels, 1, 1.0, None).unwrap();
        desc.pools.push(crate::describe::PoolDesc::replicated("p", 3).with_pg_num(8));
        let map = desc.build().unwrap();
        let pg = PgId { pool: PoolId(1), seed: 2 };
        let temp = vec![Some(OsdId(2)), Some(OsdId(0)), Some(OsdId(1))];
        let changes = vec![
            MapChange::PgTemp { pg, osds: temp },
            MapChange::PoolSet { pool: PoolId(1), setting: PoolSetting::Size(2) },
        ];
        let next = map.apply(&Incremental::new(&map, changes)).unwrap();
        assert_eq!(next.contents().pg_temp[&pg], vec![Some(OsdId(2)), Some(OsdId(0))]);
        let mapping = next.pg_mapping(pg).unwrap();
        assert_eq!(mapping.acting_primary, Some(OsdId(2)));
        assert_eq!(mapping.acting.len(), 2);
    }
}
