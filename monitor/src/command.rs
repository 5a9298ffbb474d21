//! Administrative commands as map changes: names resolved against the map at the moment
//! the command commits, defaults filled in (min_size, pg_num, the default rules), checked
//! by the placement library when the changes apply.

use std::collections::BTreeMap;

use placement::autoscale::ideal_pg_num;
use placement::crush::map::CrushMap;
use placement::pool::{ErasureProfile, STRIPE_UNIT_BYTES_DEFAULT, default_min_size};
use placement::{
    BucketId, ItemId, MapChange, OsdId, OsdMap, PoolKind, PoolSetting, Reweight, RuleId, RuleKind,
    SimpleRule, Weight,
};
use proto::message::{NewRule, PoolField, PoolSpec};
use proto::{Command, ErrorCode, RemoteError};

use crate::settings::Settings;

/// The rules pools get when they name none.
pub const DEFAULT_REPLICATED_RULE: &str = "replicated_rule";
pub const DEFAULT_ERASURE_RULE: &str = "erasure_rule";
const DEFAULT_ROOT: &str = "default";
const DEFAULT_FAILURE_DOMAIN: &str = "host";

fn invalid(message: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::Invalid, message)
}

fn not_found(message: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::NotFound, message)
}

fn pool_id(map: &OsdMap, name: &str) -> Result<placement::PoolId, RemoteError> {
    map.pool_by_name(name).map(|p| p.id).ok_or_else(|| not_found(format!("no pool '{name}'")))
}

fn rule_id(crush: &CrushMap, name: &str) -> Result<RuleId, RemoteError> {
    crush.rule_by_name(name).map(|r| r.id).ok_or_else(|| not_found(format!("no rule '{name}'")))
}

fn bucket_id(crush: &CrushMap, name: &str) -> Result<BucketId, RemoteError> {
    crush.bucket_by_name(name).map(|b| b.id).ok_or_else(|| not_found(format!("no bucket '{name}'")))
}

fn osd(map: &OsdMap, id: u32) -> Result<OsdId, RemoteError> {
    let osd = OsdId(id);
    map.osd(osd).map(|_| osd).ok_or_else(|| not_found(format!("no {osd}")))
}

/// The lowest rule id free after `taken` more are added (what `add_rule` will hand out).
fn next_rule_id(crush: &CrushMap) -> RuleId {
    (0..).map(RuleId).find(|id| !crush.rules.contains_key(id)).expect("rule ids")
}

/// The map changes that carry out `command`, logged at `at_ms` (the leader's clock).
pub fn plan(
    map: &OsdMap,
    settings: &Settings,
    command: &Command,
    at_ms: i64,
) -> Result<Vec<MapChange>, RemoteError> {
    let crush = map.crush();
    let changes = match command {
        Command::PoolCreate { name, spec, pg_num, rule, new_rule } => {
            pool_create(map, settings, name, spec, *pg_num, rule.as_deref(), new_rule.as_ref())?
        }
        Command::PoolDelete { name } => vec![MapChange::PoolRemove { pool: pool_id(map, name)? }],
        Command::PoolSet { name, field } => {
            let setting = match field {
                PoolField::Size(n) => PoolSetting::Size(*n),
                PoolField::MinSize(n) => PoolSetting::MinSize(*n),
                PoolField::PgNum(n) => PoolSetting::PgNum(*n),
                PoolField::PgpNum(n) => PoolSetting::PgpNum(*n),
                PoolField::Rule(rule) => PoolSetting::Rule(rule_id(crush, rule)?),
            };
            vec![MapChange::PoolSet { pool: pool_id(map, name)?, setting }]
        }
        Command::RuleCreate { name, kind, root, failure_domain, class } => {
            let root = bucket_id(crush, root)?;
            let failure_domain = crush.type_id(failure_domain)?;
            let steps =
                SimpleRule { kind: *kind, root, failure_domain, class: class.as_deref() }.steps();
            vec![MapChange::RuleCreate { name: name.clone(), kind: *kind, steps }]
        }
        Command::RuleRemove { name } => vec![MapChange::RuleRemove { rule: rule_id(crush, name)? }],
        Command::ProfileSet { name, profile } => profile_set(map, name, profile)?,
        Command::ProfileRemove { name } => vec![MapChange::ProfileRemove { name: name.clone() }],
        Command::CrushAddBucket { name, type_name, parent } => {
            let parent = parent.as_deref().map(|p| bucket_id(crush, p)).transpose()?;
            vec![MapChange::CrushAddBucket {
                name: name.clone(),
                type_name: type_name.clone(),
                id: None,
                parent,
            }]
        }
        Command::CrushMove { name, parent } => crush_move(crush, name, parent)?,
        Command::CrushRemove { name } => match crush.item_by_name(name)? {
            ItemId(id) if id < 0 => vec![MapChange::CrushRemoveBucket { bucket: BucketId(id) }],
            item => vec![MapChange::CrushRemoveDevice { osd: item.osd().expect("an OSD") }],
        },
        Command::CrushSetOsd { osd: id, weight, location, class } => {
            let osd = osd(map, *id)?;
            let weight = Weight::from_f64(*weight).map_err(invalid)?;
            crush_set_osd(crush, osd, weight, location, class.clone())?
        }
        Command::OsdCreate { id } => {
            vec![MapChange::OsdCreate {
                osd: id.map(OsdId).unwrap_or_else(|| map.next_free_osd_id()),
            }]
        }
        Command::OsdRemove { osd: id } => vec![MapChange::OsdRemove { osd: osd(map, *id)? }],
        Command::OsdIn { osds } => each(map, osds, |osd| MapChange::OsdIn { osd })?,
        Command::OsdOut { osds } => each(map, osds, |osd| MapChange::OsdOut { osd })?,
        Command::OsdDown { osds } => each(map, osds, |osd| MapChange::OsdDown { osd })?,
        Command::OsdReweight { osd: id, reweight } => {
            let reweight = Reweight::from_f64(*reweight).map_err(invalid)?;
            vec![MapChange::OsdReweight { osd: osd(map, *id)?, reweight }]
        }
        Command::OsdSetClass { osd: id, class } => {
            vec![MapChange::CrushSetClass { osd: osd(map, *id)?, class: class.clone() }]
        }
        Command::SetFlag { flag } => vec![MapChange::SetFlag { flag: *flag }],
        Command::ClearFlag { flag } => vec![MapChange::ClearFlag { flag: *flag }],
        Command::BlocklistAdd { entry, expire_secs } => {
            let secs = expire_secs.unwrap_or(proto::message::BLOCKLIST_EXPIRE_DEFAULT_SECS);
            let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            vec![MapChange::BlocklistAdd {
                entry: entry.clone(),
                until_ms: at_ms.saturating_add(ms),
            }]
        }
        Command::BlocklistRemove { entry } => {
            vec![MapChange::BlocklistRemove { entry: entry.clone() }]
        }
        Command::PoolSnapCreate { pool, name } => {
            vec![MapChange::PoolSnapCreate { pool: pool_id(map, pool)?, name: name.clone(), at_ms }]
        }
        Command::PoolSnapRemove { pool, name } => {
            vec![MapChange::PoolSnapRemove { pool: pool_id(map, pool)?, name: name.clone() }]
        }
        Command::SelfManagedSnapCreate { pool } => {
            vec![MapChange::SelfManagedSnapCreate { pool: pool_id(map, pool)? }]
        }
        Command::SelfManagedSnapRemove { pool, snap } => {
            vec![MapChange::SelfManagedSnapRemove { pool: pool_id(map, pool)?, snap: *snap }]
        }
        Command::ConfigSet { .. }
        | Command::AuthAdd { .. }
        | Command::AuthRemove { .. }
        | Command::AuthList
        | Command::MonAdd { .. }
        | Command::MonRemove { .. } => return Err(invalid("not a map change")),
    };
    Ok(changes)
}

/// A profile is set once: setting it again alike changes nothing, otherwise is refused.
fn profile_set(
    map: &OsdMap,
    name: &str,
    profile: &ErasureProfile,
) -> Result<Vec<MapChange>, RemoteError> {
    match map.contents().erasure_profiles.get(name) {
        Some(existing) if existing == profile => Ok(Vec::new()),
        Some(existing) => Err(RemoteError::new(
            ErrorCode::AlreadyExists,
            format!(
                "erasure-code profile '{name}' exists with k={} m={}; its pools keep it, so \
                 remove it (no pool may use it) and set it again",
                existing.k, existing.m
            ),
        )),
        None => Ok(vec![MapChange::ProfileSet { name: name.to_owned(), profile: profile.clone() }]),
    }
}

/// Moves a bucket, or an OSD with its weight, under `parent`.
fn crush_move(crush: &CrushMap, name: &str, parent: &str) -> Result<Vec<MapChange>, RemoteError> {
    let parent = bucket_id(crush, parent)?;
    let item = crush.item_by_name(name)?;
    if let Some(bucket) = item.bucket() {
        return Ok(vec![MapChange::CrushMoveBucket { bucket, parent: Some(parent) }]);
    }
    let osd = item.osd().expect("an OSD");
    let weight = crush.devices[&osd].weight;
    Ok(vec![MapChange::CrushSetDevice { osd, weight, class: None, parent }])
}

fn each(
    map: &OsdMap,
    osds: &[u32],
    change: impl Fn(OsdId) -> MapChange,
) -> Result<Vec<MapChange>, RemoteError> {
    if osds.is_empty() {
        return Err(invalid("name at least one OSD"));
    }
    osds.iter().map(|&id| osd(map, id).map(&change)).collect()
}

fn pool_create(
    map: &OsdMap,
    settings: &Settings,
    name: &str,
    spec: &PoolSpec,
    pg_num: Option<u32>,
    rule: Option<&str>,
    new_rule: Option<&NewRule>,
) -> Result<Vec<MapChange>, RemoteError> {
    let mut changes = Vec::new();
    let (kind, rule_kind, from_profile) = pool_kind(map, spec, rule.is_some(), &mut changes)?;
    let new_rule = new_rule.or(from_profile.as_ref());
    let rule = pool_rule(map.crush(), name, rule, new_rule, rule_kind, &mut changes)?;
    let size = match &kind {
        PoolKind::Replicated { size, .. } => usize::from(*size),
        PoolKind::Erasure { k, m, .. } => usize::from(*k) + usize::from(*m),
    };
    let pg_num = pg_num.unwrap_or_else(|| {
        // Share the OSDs evenly with the pools already there.
        let share = 1.0 / (map.contents().pools.len() + 1) as f64;
        ideal_pg_num(map.rule_osds(rule).len(), size, settings.target_pgs_per_osd, share)
    });
    changes.push(MapChange::PoolCreate { name: name.to_owned(), kind, rule, pg_num });
    Ok(changes)
}

/// A new pool's kind and rule kind, with the profile change an `erasure --k --m` pool
/// needs first. A named profile with a failure domain or class gives its pools a rule of
/// their own unless one is named (`rule_named`): that rule is returned too.
fn pool_kind(
    map: &OsdMap,
    spec: &PoolSpec,
    rule_named: bool,
    changes: &mut Vec<MapChange>,
) -> Result<(PoolKind, RuleKind, Option<NewRule>), RemoteError> {
    Ok(match spec {
        PoolSpec::Replicated { size, min_size } => {
            let min_size = min_size.unwrap_or_else(|| default_min_size(*size, None));
            (PoolKind::Replicated { size: *size, min_size }, RuleKind::Replicated, None)
        }
        PoolSpec::Erasure { k, m, min_size } => {
            let profile = format!("k{k}m{m}");
            if !map.contents().erasure_profiles.contains_key(&profile) {
                let value = ErasureProfile::new(*k, *m, STRIPE_UNIT_BYTES_DEFAULT);
                changes.push(MapChange::ProfileSet { name: profile.clone(), profile: value });
            }
            let min_size =
                min_size.unwrap_or_else(|| default_min_size(k.saturating_add(*m), Some(*k)));
            (PoolKind::Erasure { profile, k: *k, m: *m, min_size }, RuleKind::Erasure, None)
        }
        PoolSpec::ErasureProfile { profile: name, min_size } => {
            let profile = map
                .contents()
                .erasure_profiles
                .get(name)
                .ok_or_else(|| not_found(format!("no erasure-code profile '{name}'")))?;
            let (k, m) = (profile.k, profile.m);
            let min_size =
                min_size.unwrap_or_else(|| default_min_size(k.saturating_add(m), Some(k)));
            let own_rule =
                !rule_named && (profile.failure_domain.is_some() || profile.class.is_some());
            let from_profile = own_rule.then(|| NewRule {
                failure_domain: profile.failure_domain.clone().unwrap_or_else(|| "host".into()),
                class: profile.class.clone(),
            });
            let kind = PoolKind::Erasure { profile: name.clone(), k, m, min_size };
            (kind, RuleKind::Erasure, from_profile)
        }
    })
}

/// The rule a new pool `name` uses: the one named, a new one named after the pool (for a
/// failure domain or class), or the default rule of its kind, made on first use as Ceph
/// makes its EC rules.
fn pool_rule(
    crush: &CrushMap,
    name: &str,
    rule: Option<&str>,
    new_rule: Option<&NewRule>,
    rule_kind: RuleKind,
    changes: &mut Vec<MapChange>,
) -> Result<RuleId, RemoteError> {
    let default_rule = match rule_kind {
        RuleKind::Replicated => DEFAULT_REPLICATED_RULE,
        RuleKind::Erasure => DEFAULT_ERASURE_RULE,
    };
    match (rule, new_rule, crush.rule_by_name(rule.unwrap_or(default_rule))) {
        (Some(_), Some(_), _) => {
            Err(invalid("name a rule, or a failure domain and class for a new one, not both"))
        }
        (None, Some(new), _) => {
            if crush.rule_by_name(name).is_some() {
                return Err(RemoteError::new(
                    ErrorCode::AlreadyExists,
                    format!("a rule named '{name}' exists: pass --rule {name} to use it"),
                ));
            }
            let root = bucket_id(crush, DEFAULT_ROOT)?;
            let failure_domain = crush.type_id(&new.failure_domain)?;
            let class = new.class.as_deref();
            let steps = SimpleRule { kind: rule_kind, root, failure_domain, class }.steps();
            changes.push(MapChange::RuleCreate { name: name.to_owned(), kind: rule_kind, steps });
            Ok(next_rule_id(crush))
        }
        (_, _, Some(existing)) => Ok(existing.id),
        (Some(named), None, None) => Err(not_found(format!("no rule '{named}'"))),
        (None, None, None) => {
            let root = bucket_id(crush, DEFAULT_ROOT)?;
            let failure_domain = crush.type_id(DEFAULT_FAILURE_DOMAIN)?;
            let steps = SimpleRule { kind: rule_kind, root, failure_domain, class: None }.steps();
            let name = default_rule.into();
            changes.push(MapChange::RuleCreate { name, kind: rule_kind, steps });
            Ok(next_rule_id(crush))
        }
    }
}

/// Places `osd` under the buckets `location` names (type → name), creating the missing ones
/// top down; each created bucket's id is worked out here so later changes can name it.
fn crush_set_osd(
    crush: &CrushMap,
    osd: OsdId,
    weight: Weight,
    location: &BTreeMap<String, String>,
    class: Option<String>,
) -> Result<Vec<MapChange>, RemoteError> {
    if location.is_empty() {
        return Err(invalid("give a location, e.g. root=default host=node1"));
    }
    let mut levels = Vec::new();
    for (type_name, name) in location {
        let type_id = crush.type_id(type_name)?;
        if type_id == 0 {
            return Err(invalid("'osd' is the leaf type, not a location"));
        }
        levels.push((type_id, type_name.clone(), name.clone()));
    }
    levels.sort_by_key(|l| std::cmp::Reverse(l.0));
    let mut scratch = crush.clone();
    let mut changes = Vec::new();
    let mut parent: Option<BucketId> = None;
    for (type_id, type_name, name) in &levels {
        let id = match scratch.bucket_by_name(name) {
            Some(existing) if existing.type_id != *type_id => {
                let actual = scratch.type_name(existing.type_id).to_owned();
                return Err(invalid(format!("'{name}' is a {actual}, not a {type_name}")));
            }
            Some(existing) => existing.id,
            None => {
                let id = scratch.add_bucket(name, type_name, None, parent)?;
                changes.push(MapChange::CrushAddBucket {
                    name: name.clone(),
                    type_name: type_name.clone(),
                    id: Some(id),
                    parent,
                });
                id
            }
        };
        parent = Some(id);
    }
    let parent = parent.expect("location is not empty");
    changes.push(MapChange::CrushSetDevice { osd, weight, class, parent });
    Ok(changes)
}
