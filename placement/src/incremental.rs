//! Incremental maps: the changes that turn epoch N into epoch N+1.
//!
//! Monitors commit incrementals, not whole maps, and subscribers apply them in order. An
//! incremental names its base epoch and is refused on any other map; its changes apply in
//! order and all-or-nothing: if one is refused, or the result is not a valid map, the
//! incremental is refused and the map is untouched. Applying is deterministic, so every
//! party that applies the same incrementals holds the same map (pool ids, for one, are
//! allocated from the map itself).

use serde::{Deserialize, Serialize};

use crate::MapError;
use crate::crush::rule::{RuleKind, Step};
use crate::ids::{BucketId, Epoch, OsdId, PgId, PoolId, Reweight, RuleId, Weight};
use crate::osdmap::{MapContents, MapFlag, OsdMap, OsdState};
use crate::pool::{ErasureProfile, Pool, PoolKind};

/// Upper bound on the changes one incremental carries.
pub const CHANGES_MAX: usize = 1 << 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremental {
    pub fsid: [u8; 16],
    /// The epoch this applies to; the result is `base + 1`.
    pub base: Epoch,
    pub changes: Vec<MapChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapChange {
    /// A new OSD, down and out until it boots.
    OsdCreate {
        osd: OsdId,
    },
    /// Removes a down OSD everywhere: CRUSH, overrides, the OSD table.
    OsdRemove {
        osd: OsdId,
    },
    OsdUp {
        osd: OsdId,
    },
    OsdDown {
        osd: OsdId,
    },
    /// An OSD booted: it is up, serving at `addr`.
    OsdBoot {
        osd: OsdId,
        addr: String,
    },
    OsdIn {
        osd: OsdId,
    },
    OsdOut {
        osd: OsdId,
    },
    OsdReweight {
        osd: OsdId,
        reweight: Reweight,
    },
    CrushAddBucket {
        name: String,
        type_name: String,
        id: Option<BucketId>,
        parent: Option<BucketId>,
    },
    CrushMoveBucket {
        bucket: BucketId,
        parent: Option<BucketId>,
    },
    CrushRemoveBucket {
        bucket: BucketId,
    },
    /// Places (or moves) an OSD under `parent` with a CRUSH weight.
    CrushSetDevice {
        osd: OsdId,
        weight: Weight,
        class: Option<String>,
        parent: BucketId,
    },
    CrushRemoveDevice {
        osd: OsdId,
    },
    CrushSetWeight {
        osd: OsdId,
        weight: Weight,
    },
    CrushSetClass {
        osd: OsdId,
        class: Option<String>,
    },
    RuleCreate {
        name: String,
        kind: RuleKind,
        steps: Vec<Step>,
    },
    RuleRemove {
        rule: RuleId,
    },
    ProfileSet {
        name: String,
        profile: ErasureProfile,
    },
    ProfileRemove {
        name: String,
    },
    /// A new pool; its id is the next after the highest ever allocated.
    PoolCreate {
        name: String,
        kind: PoolKind,
        rule: RuleId,
        pg_num: u32,
    },
    PoolRemove {
        pool: PoolId,
    },
    PoolSet {
        pool: PoolId,
        setting: PoolSetting,
    },
    /// Sets a PG's acting-set override; an empty list clears it.
    PgTemp {
        pg: PgId,
        osds: Vec<Option<OsdId>>,
    },
    /// Sets a PG's CRUSH exceptions; an empty list clears them.
    PgUpmapItems {
        pg: PgId,
        pairs: Vec<(OsdId, OsdId)>,
    },
    SetFlag {
        flag: MapFlag,
    },
    ClearFlag {
        flag: MapFlag,
    },
    /// Refuses a client instance's ops (or every client's at an IP) until `until_ms`.
    BlocklistAdd {
        entry: String,
        until_ms: i64,
    },
    BlocklistRemove {
        entry: String,
    },
    /// Takes pool snapshot `name`: the pool's next snapshot id.
    PoolSnapCreate {
        pool: PoolId,
        name: String,
        at_ms: i64,
    },
    PoolSnapRemove {
        pool: PoolId,
        name: String,
    },
    /// Hands out the pool's next snapshot id to a client (self-managed snapshots).
    SelfManagedSnapCreate {
        pool: PoolId,
    },
    SelfManagedSnapRemove {
        pool: PoolId,
        snap: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolSetting {
    Name(String),
    /// Replicated pools only; `min_size` follows down if it would exceed the new size.
    Size(u8),
    MinSize(u8),
    /// Grows by splitting; PG merging is not supported.
    PgNum(u32),
    PgpNum(u32),
    Rule(RuleId),
}

impl Incremental {
    pub fn new(map: &OsdMap, changes: Vec<MapChange>) -> Incremental {
        Incremental { fsid: map.contents().fsid, base: map.epoch(), changes }
    }
}

impl OsdMap {
    /// Applies an incremental, giving the map of the next epoch.
    pub fn apply(&self, inc: &Incremental) -> Result<OsdMap, MapError> {
        if inc.base != self.epoch() {
            return Err(MapError::WrongBase { have: self.epoch(), delta_base: inc.base });
        }
        let epoch =
            inc.base.checked_next().ok_or(MapError::Limit { what: "epochs", limit: u64::MAX })?;
        if inc.fsid != self.contents().fsid {
            return Err(MapError::invalid("incremental", "it is for another cluster (fsid)"));
        }
        if inc.changes.len() > CHANGES_MAX {
            return Err(MapError::Limit {
                what: "changes in one incremental",
                limit: CHANGES_MAX as u64,
            });
        }
        let mut next = self.contents().clone();
        for (index, change) in inc.changes.iter().enumerate() {
            apply_change(&mut next, change).map_err(|e| match e {
                MapError::Invalid { what, reason } => {
                    MapError::Invalid { what: format!("change {} ({what})", index + 1), reason }
                }
                other => other,
            })?;
        }
        next.epoch = epoch;
        OsdMap::following(next, Some(self))
    }
}

fn osd_state(map: &mut MapContents, osd: OsdId) -> Result<&mut OsdState, MapError> {
    map.osds.get_mut(&osd).ok_or(MapError::NoSuchOsd(osd))
}

fn apply_change(map: &mut MapContents, change: &MapChange) -> Result<(), MapError> {
    match change {
        MapChange::OsdCreate { osd } => create_osd(map, *osd)?,
        MapChange::OsdRemove { osd } => remove_osd(map, *osd)?,
        MapChange::OsdUp { osd } => osd_state(map, *osd)?.up = true,
        MapChange::OsdDown { osd } => osd_state(map, *osd)?.up = false,
        MapChange::OsdBoot { osd, addr } => {
            let state = osd_state(map, *osd)?;
            state.up = true;
            state.addr = Some(addr.clone());
        }
        MapChange::OsdIn { osd } => osd_state(map, *osd)?.is_in = true,
        MapChange::OsdOut { osd } => osd_state(map, *osd)?.is_in = false,
        MapChange::OsdReweight { osd, reweight } => {
            if !reweight.is_valid() {
                return Err(MapError::invalid(osd.to_string(), "reweight is above 1.0"));
            }
            osd_state(map, *osd)?.reweight = *reweight;
        }
        MapChange::CrushAddBucket { name, type_name, id, parent } => {
            map.crush.add_bucket(name, type_name, *id, *parent)?;
        }
        MapChange::CrushMoveBucket { bucket, parent } => map.crush.move_bucket(*bucket, *parent)?,
        MapChange::CrushRemoveBucket { bucket } => map.crush.remove_bucket(*bucket)?,
        MapChange::CrushSetDevice { osd, weight, class, parent } => {
            if !map.osds.contains_key(osd) {
                return Err(MapError::NoSuchOsd(*osd));
            }
            map.crush.set_device(*osd, *weight, class.clone(), *parent)?;
        }
        MapChange::CrushRemoveDevice { osd } => map.crush.remove_device(*osd)?,
        MapChange::CrushSetWeight { osd, weight } => map.crush.set_device_weight(*osd, *weight)?,
        MapChange::CrushSetClass { osd, class } => {
            map.crush.set_device_class(*osd, class.clone())?
        }
        MapChange::RuleCreate { name, kind, steps } => {
            map.crush.add_rule(name, *kind, steps.clone())?;
        }
        MapChange::RuleRemove { rule } => remove_rule(map, *rule)?,
        MapChange::ProfileSet { name, profile } => {
            profile.validate(name)?;
            map.erasure_profiles.insert(name.clone(), profile.clone());
        }
        MapChange::ProfileRemove { name } => remove_profile(map, name)?,
        MapChange::PoolCreate { name, kind, rule, pg_num } => {
            create_pool(map, name, kind, *rule, *pg_num)?
        }
        MapChange::PoolRemove { pool } => {
            map.pools.remove(pool).ok_or(MapError::NoSuchPool(pool.to_string()))?;
            map.pg_temp.retain(|pg, _| pg.pool != *pool);
            map.pg_upmap_items.retain(|pg, _| pg.pool != *pool);
        }
        MapChange::PoolSet { pool, setting } => set_pool(map, *pool, setting)?,
        MapChange::PgTemp { pg, osds } => {
            if osds.is_empty() {
                map.pg_temp.remove(pg);
            } else {
                map.pg_temp.insert(*pg, osds.clone());
            }
        }
        MapChange::PgUpmapItems { pg, pairs } => {
            if pairs.is_empty() {
                map.pg_upmap_items.remove(pg);
            } else {
                map.pg_upmap_items.insert(*pg, pairs.clone());
            }
        }
        MapChange::SetFlag { flag } => {
            map.flags.insert(*flag);
        }
        MapChange::ClearFlag { flag } => {
            map.flags.remove(flag);
        }
        MapChange::BlocklistAdd { entry, until_ms } => {
            entry
                .parse::<crate::osdmap::Blocklisted>()
                .map_err(|e| MapError::invalid("blocklist", e))?;
            map.blocklist.insert(entry.clone(), *until_ms);
        }
        MapChange::BlocklistRemove { entry } => {
            if map.blocklist.remove(entry).is_none() {
                return Err(MapError::invalid("blocklist", format!("'{entry}' is not on it")));
            }
        }
        MapChange::PoolSnapCreate { pool, name, at_ms } => {
            let p = snapshot_pool(map, *pool)?;
            p.snaps.create_named(&p.name, name, *at_ms)?;
        }
        MapChange::PoolSnapRemove { pool, name } => {
            let p = snapshot_pool(map, *pool)?;
            p.snaps.remove_named(&p.name, name)?;
        }
        MapChange::SelfManagedSnapCreate { pool } => {
            let p = snapshot_pool(map, *pool)?;
            p.snaps.create_self_managed(&p.name)?;
        }
        MapChange::SelfManagedSnapRemove { pool, snap } => {
            let p = snapshot_pool(map, *pool)?;
            p.snaps.remove_self_managed(&p.name, *snap)?;
        }
    }
    Ok(())
}

/// A pool whose snapshots change: not an erasure-coded one (its OSDs do not keep clones
/// yet).
fn snapshot_pool(map: &mut MapContents, pool: PoolId) -> Result<&mut crate::pool::Pool, MapError> {
    let p = map.pools.get_mut(&pool).ok_or(MapError::NoSuchPool(pool.to_string()))?;
    if p.is_erasure() {
        return Err(MapError::BadPool {
            pool: p.name.clone(),
            reason: "snapshots of erasure-coded pools are not supported yet".into(),
        });
    }
    Ok(p)
}

fn create_osd(map: &mut MapContents, osd: OsdId) -> Result<(), MapError> {
    if map.osds.contains_key(&osd) {
        return Err(MapError::AlreadyExists { what: "OSD", name: osd.to_string() });
    }
    if osd.0 >= crate::ids::OSD_ID_LIMIT {
        return Err(MapError::invalid(osd.to_string(), "id is above the OSD id limit"));
    }
    map.osds.insert(osd, OsdState::new_down_out());
    Ok(())
}

/// Removes a rule no pool uses.
fn remove_rule(map: &mut MapContents, rule: RuleId) -> Result<(), MapError> {
    if let Some(pool) = map.pools.values().find(|p| p.rule == rule) {
        let rule = map.crush.rules.get(&rule).map_or(rule.to_string(), |r| r.name.clone());
        return Err(MapError::RuleInUse { rule, pool: pool.name.clone() });
    }
    map.crush.remove_rule(rule)
}

/// Removes an erasure-code profile no pool uses.
fn remove_profile(map: &mut MapContents, name: &str) -> Result<(), MapError> {
    let used_by = map
        .pools
        .values()
        .find(|p| matches!(&p.kind, PoolKind::Erasure { profile, .. } if profile == name));
    if let Some(pool) = used_by {
        return Err(MapError::BadPool {
            pool: pool.name.clone(),
            reason: format!("uses erasure-code profile '{name}'"),
        });
    }
    map.erasure_profiles.remove(name).ok_or(MapError::NoSuchProfile(name.to_owned()))?;
    Ok(())
}

/// Adds a pool under the next pool id.
fn create_pool(
    map: &mut MapContents,
    name: &str,
    kind: &PoolKind,
    rule: RuleId,
    pg_num: u32,
) -> Result<(), MapError> {
    if map.pools.values().any(|p| p.name == name) {
        return Err(MapError::AlreadyExists { what: "pool", name: name.to_owned() });
    }
    let id = map
        .pool_max
        .checked_add(1)
        .ok_or(MapError::Limit { what: "pool ids", limit: u64::from(u32::MAX) })?;
    let pool = Pool {
        id: PoolId(id),
        name: name.to_owned(),
        kind: kind.clone(),
        rule,
        pg_num,
        pgp_num: pg_num,
        snaps: Default::default(),
    };
    pool.validate()?;
    map.pool_max = id;
    map.pools.insert(pool.id, pool);
    Ok(())
}

/// Removes a down OSD and every reference to it.
fn remove_osd(map: &mut MapContents, osd: OsdId) -> Result<(), MapError> {
    let state = map.osds.get(&osd).ok_or(MapError::NoSuchOsd(osd))?;
    if state.up {
        return Err(MapError::OsdIsUp(osd));
    }
    if map.crush.devices.contains_key(&osd) {
        map.crush.remove_device(osd)?;
    }
    map.osds.remove(&osd);
    map.pg_temp.retain(|_, osds| !osds.contains(&Some(osd)));
    for pairs in map.pg_upmap_items.values_mut() {
        pairs.retain(|&(from, to)| from != osd && to != osd);
    }
    map.pg_upmap_items.retain(|_, pairs| !pairs.is_empty());
    Ok(())
}

fn set_pool(map: &mut MapContents, id: PoolId, setting: &PoolSetting) -> Result<(), MapError> {
    let taken =
        |map: &MapContents, name: &str| map.pools.values().any(|p| p.name == name && p.id != id);
    if let PoolSetting::Name(name) = setting
        && taken(map, name)
    {
        return Err(MapError::AlreadyExists { what: "pool", name: name.clone() });
    }
    let pool = map.pools.get_mut(&id).ok_or(MapError::NoSuchPool(id.to_string()))?;
    let bad = |reason: &str| MapError::BadPool { pool: pool.name.clone(), reason: reason.into() };
    match setting {
        PoolSetting::Name(name) => pool.name = name.clone(),
        PoolSetting::Size(new_size) => match &mut pool.kind {
            PoolKind::Replicated { size, min_size } => {
                *size = *new_size;
                *min_size = (*min_size).min(*new_size);
            }
            PoolKind::Erasure { .. } => {
                return Err(bad("the size of an erasure-coded pool is k+m and cannot change"));
            }
        },
        PoolSetting::MinSize(new_min) => match &mut pool.kind {
            PoolKind::Replicated { min_size, .. } | PoolKind::Erasure { min_size, .. } => {
                *min_size = *new_min;
            }
        },
        PoolSetting::PgNum(pg_num) => {
            if *pg_num < pool.pg_num {
                return Err(bad("pg_num can only grow (PG merging is not supported)"));
            }
            pool.pg_num = *pg_num;
        }
        PoolSetting::PgpNum(pgp_num) => pool.pgp_num = *pgp_num,
        PoolSetting::Rule(rule) => pool.rule = *rule,
    }
    pool.validate()?;
    // A smaller pool keeps the first OSDs of each acting-set override (the primary first).
    let size = pool.size();
    for (_, osds) in
        map.pg_temp.range_mut(PgId { pool: id, seed: 0 }..=PgId { pool: id, seed: u32::MAX })
    {
        osds.truncate(size);
    }
    Ok(())
}
