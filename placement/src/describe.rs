//! The readable cluster description operators write (TOML or JSON), and the map built from it.
//!
//! OSDs say where they are the way Ceph's `crush location` does, by naming their ancestors:
//!
//! ```toml
//! [[osd]]
//! id = 0
//! weight = 1.0          # capacity share, by convention TiB
//! class = "ssd"
//! location = { root = "default", rack = "r1", host = "h1" }
//!
//! [[rule]]
//! name = "fast"
//! type = "replicated"   # or "erasure"
//! failure_domain = "host"
//! class = "ssd"
//!
//! [[pool]]
//! name = "rbd"
//! size = 3
//! rule = "fast"         # pg_num omitted: chosen from the cluster size
//! ```
//!
//! Buckets named in locations are created on first mention; `[[bucket]]` entries declare
//! buckets explicitly (empty ones, fixed ids, or a parent for a partial location). Bucket ids
//! default to a value derived from the name, so editing the file and building again gives
//! the same ids and `cairn map diff` shows only the real change. Every error names the entry
//! it comes from.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::MapError;
use crate::autoscale::{TARGET_PGS_PER_OSD_DEFAULT, ideal_pg_num};
use crate::crush::map::{
    BUCKETS_MAX, Bucket, CrushMap, DEFAULT_TYPES, Device, check_name, derive_bucket_id,
};
use crate::crush::rule::{Rule, RuleKind, SimpleRule, Step};
use crate::hash::HASH_VERSION;
use crate::ids::{BucketId, Epoch, ItemId, OSD_ID_LIMIT, OsdId, PoolId, Reweight, RuleId, Weight};
use crate::osdmap::{MapContents, OsdMap, OsdState};
use crate::pool::{ErasureProfile, Pool, PoolKind, STRIPE_UNIT_BYTES_DEFAULT, default_min_size};

/// Upper bound on the size of a description file.
pub const DESCRIPTION_BYTES_MAX: usize = 64 << 20;

/// Rule names used when a pool names none.
pub const DEFAULT_REPLICATED_RULE: &str = "replicated_rule";
pub const DEFAULT_ERASURE_RULE: &str = "erasure_rule";
const DEFAULT_ROOT: &str = "default";
const DEFAULT_FAILURE_DOMAIN: &str = "host";
const DEFAULT_REPLICAS: u8 = 3;

#[derive(Debug, Error)]
pub enum DescribeError {
    #[error("the description is {len} bytes; the limit is {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("{format} syntax: {message}")]
    Syntax { format: &'static str, message: String },
    #[error("{at}: {reason}")]
    Entry { at: String, reason: String },
    #[error("{at}: {source}")]
    Map {
        at: String,
        #[source]
        source: MapError,
    },
}

fn entry(at: impl Into<String>, reason: impl Into<String>) -> DescribeError {
    DescribeError::Entry { at: at.into(), reason: reason.into() }
}

fn in_map(at: impl Into<String>) -> impl FnOnce(MapError) -> DescribeError {
    let at = at.into();
    move |source| DescribeError::Map { at, source }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    /// The cluster id as a UUID; all zeros when omitted (an offline map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsid: Option<String>,
    /// Bucket types, leaf first, starting with "osd". Default: Ceph's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// PG copies per OSD to aim for when choosing pg_num.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pgs_per_osd: Option<u32>,
    #[serde(default, rename = "bucket", skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<BucketDesc>,
    #[serde(default, rename = "osd", skip_serializing_if = "Vec::is_empty")]
    pub osds: Vec<OsdDesc>,
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleDesc>,
    #[serde(default, rename = "profile", skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<ProfileDesc>,
    #[serde(default, rename = "pool", skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolDesc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketDesc {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsdDesc {
    pub id: u32,
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Ancestors by type: `{ root = "default", host = "h1" }`. Empty: not placed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub location: BTreeMap<String, String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub up: bool,
    #[serde(default = "yes", rename = "in", skip_serializing_if = "is_true")]
    pub is_in: bool,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub reweight: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDesc {
    pub name: String,
    #[serde(rename = "type", default = "replicated")]
    pub kind: RuleKind,
    /// Simple form: copies on distinct `failure_domain`s under `root`, of `class`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Full form: rule steps as text ("take default class ssd", "chooseleaf firstn 0 type
    /// host", "emit").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDesc {
    pub name: String,
    pub k: u8,
    pub m: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_unit_bytes: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDesc {
    pub name: String,
    #[serde(rename = "type", default = "replicated")]
    pub kind: RuleKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_num: Option<u32>,
    /// Expected share of the cluster's data, relative to the other pools (for pg_num).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_size_ratio: Option<f64>,
}

impl PoolDesc {
    /// A replicated pool of `size` copies with every other setting at its default.
    pub fn replicated(name: &str, size: u8) -> PoolDesc {
        PoolDesc { size: Some(size), ..PoolDesc::named(name, RuleKind::Replicated) }
    }

    /// An erasure-coded pool of `k` data and `m` coding shards, other settings default.
    pub fn erasure(name: &str, k: u8, m: u8) -> PoolDesc {
        PoolDesc { k: Some(k), m: Some(m), ..PoolDesc::named(name, RuleKind::Erasure) }
    }

    fn named(name: &str, kind: RuleKind) -> PoolDesc {
        PoolDesc {
            name: name.to_owned(),
            kind,
            id: None,
            size: None,
            min_size: None,
            k: None,
            m: None,
            profile: None,
            rule: None,
            pg_num: None,
            target_size_ratio: None,
        }
    }

    /// The same pool with a fixed pg_num.
    pub fn with_pg_num(self, pg_num: u32) -> PoolDesc {
        PoolDesc { pg_num: Some(pg_num), ..self }
    }
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_one(x: &f64) -> bool {
    *x == 1.0
}
fn replicated() -> RuleKind {
    RuleKind::Replicated
}

impl Format {
    /// JSON for `.json` files, TOML otherwise.
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

impl Description {
    pub fn parse(text: &str, format: Format) -> Result<Description, DescribeError> {
        if text.len() > DESCRIPTION_BYTES_MAX {
            return Err(DescribeError::TooLarge { len: text.len(), limit: DESCRIPTION_BYTES_MAX });
        }
        match format {
            Format::Toml => toml::from_str(text)
                .map_err(|e| DescribeError::Syntax { format: "TOML", message: e.to_string() }),
            Format::Json => serde_json::from_str(text)
                .map_err(|e| DescribeError::Syntax { format: "JSON", message: e.to_string() }),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("descriptions serialise")
    }

    /// Builds the map (epoch 1) this description describes.
    pub fn build(&self) -> Result<OsdMap, DescribeError> {
        let fsid = match &self.fsid {
            Some(text) => {
                parse_uuid(text).ok_or_else(|| entry("fsid", format!("'{text}' is not a UUID")))?
            }
            None => [0; 16],
        };
        let mut contents = MapContents::empty(fsid);
        contents.epoch = Epoch(1);
        contents.hash_version = HASH_VERSION;
        contents.crush = build_crush(self)?;
        contents.osds = build_osd_states(self)?;
        check_weights(&contents.crush, self)?;
        add_rules(&mut contents.crush, self)?;
        contents.erasure_profiles = build_profiles(self)?;
        let pools = build_pools(self, &mut contents)?;
        contents.pool_max = pools.keys().map(|p| p.0).max().unwrap_or(0);
        contents.pools = pools;
        OsdMap::new(contents).map_err(in_map("map"))
    }
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A bucket as the builder collects it, before the CRUSH map exists.
struct Pending {
    id: BucketId,
    type_id: u16,
    parent: Option<(String, String)>, // (parent name, where the link was stated)
    children: Vec<ItemId>,
    declared_at: String,
}

fn build_crush(desc: &Description) -> Result<CrushMap, DescribeError> {
    let types =
        desc.types.clone().unwrap_or_else(|| DEFAULT_TYPES.iter().map(|t| t.to_string()).collect());
    let mut crush = CrushMap::with_types(types);
    // Checked first: everything below looks names up in this list.
    crush.validate_types().map_err(in_map("types"))?;
    let mut tree = Tree::default();
    tree.declare(&crush, desc)?;
    tree.place_osds(&crush, desc)?;
    tree.link_parents()?;
    for name in &tree.order {
        let b = &tree.buckets[name];
        let bucket = Bucket {
            id: b.id,
            name: name.clone(),
            type_id: b.type_id,
            children: b.children.clone(),
        };
        crush.buckets.insert(b.id, bucket);
    }
    crush.devices = tree.devices;
    crush.validate().map_err(in_map("CRUSH hierarchy"))?;
    Ok(crush)
}

/// The hierarchy as the builder collects it from the buckets and the OSDs' locations.
#[derive(Default)]
struct Tree {
    buckets: BTreeMap<String, Pending>,
    /// Bucket names in the order they were declared or first named.
    order: Vec<String>,
    /// Every id taken, explicit or derived.
    ids: BTreeMap<BucketId, String>,
    devices: BTreeMap<OsdId, Device>,
}

/// The bucket type named `name`, which must not be the leaf type.
fn bucket_type(crush: &CrushMap, at: &str, name: &str) -> Result<u16, DescribeError> {
    crush.type_id(name).map_err(in_map(at.to_owned())).and_then(|t| {
        if t == 0 { Err(entry(at, "'osd' is the leaf type, not a bucket type")) } else { Ok(t) }
    })
}

impl Tree {
    /// The `[[bucket]]` entries: explicit ids first, so that derived ids steer around all
    /// of them whatever the order.
    fn declare(&mut self, crush: &CrushMap, desc: &Description) -> Result<(), DescribeError> {
        for (i, b) in desc.buckets.iter().enumerate() {
            let Some(id) = b.id else { continue };
            let at = format!("bucket '{}' ([[bucket]] #{})", b.name, i + 1);
            if !BucketId(id).is_valid() {
                return Err(entry(at, format!("id {id} is not a negative bucket id")));
            }
            if let Some(other) = self.ids.insert(BucketId(id), b.name.clone()) {
                return Err(entry(at, format!("id {id} is already used by bucket '{other}'")));
            }
        }
        for (i, b) in desc.buckets.iter().enumerate() {
            let at = format!("bucket '{}' ([[bucket]] #{})", b.name, i + 1);
            if let Some(first) = self.buckets.get(&b.name) {
                return Err(entry(
                    at,
                    format!("the name is already used by {}", first.declared_at),
                ));
            }
            let type_id = bucket_type(crush, &at, &b.type_name)?;
            let id = match b.id {
                Some(id) => BucketId(id),
                None => self.derive(&b.name),
            };
            let parent = b.parent.clone().map(|p| (p, at.clone()));
            let pending = Pending { id, type_id, parent, children: vec![], declared_at: at };
            self.buckets.insert(b.name.clone(), pending);
            self.order.push(b.name.clone());
        }
        Ok(())
    }

    fn derive(&mut self, name: &str) -> BucketId {
        let id = derived_id(&self.ids, name);
        self.ids.insert(id, name.to_owned());
        id
    }

    /// The `[[osd]]` entries: each OSD under the buckets of its location, which are made
    /// where none is declared.
    fn place_osds(&mut self, crush: &CrushMap, desc: &Description) -> Result<(), DescribeError> {
        let mut seen_osds: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, osd) in desc.osds.iter().enumerate() {
            let at = format!("osd.{} ([[osd]] #{})", osd.id, i + 1);
            if let Some(first) = seen_osds.insert(osd.id, i + 1) {
                return Err(entry(at, format!("the id is already used by [[osd]] #{first}")));
            }
            let id: OsdId = osd.id.to_string().parse().map_err(|e: String| entry(&at, e))?;
            let weight = Weight::from_f64(osd.weight).map_err(|e| entry(&at, e))?;
            if osd.location.is_empty() {
                continue;
            }
            // Ancestors from the top down.
            let mut path = Vec::new();
            for (type_name, name) in &osd.location {
                let level = bucket_type(crush, &format!("{at}: location"), type_name)?;
                path.push((level, type_name, name));
            }
            path.sort_by_key(|p| std::cmp::Reverse(p.0));
            for &(level, type_name, name) in &path {
                self.located(crush, &at, level, type_name, name)?;
            }
            for pair in path.windows(2) {
                let (parent, child) = (pair[0].2, pair[1].2);
                link(&mut self.buckets, child, parent, &at)?;
            }
            let leaf = path.last().expect("location is not empty").2;
            self.buckets.get_mut(leaf).expect("created above").children.push(id.into());
            self.devices.insert(id, Device { weight, class: osd.class.clone() });
        }
        Ok(())
    }

    /// A bucket an OSD's location names at `level`: it must be of that type if declared,
    /// and is made if not.
    fn located(
        &mut self,
        crush: &CrushMap,
        at: &str,
        level: u16,
        type_name: &str,
        name: &str,
    ) -> Result<(), DescribeError> {
        match self.buckets.get(name) {
            Some(existing) if existing.type_id != level => Err(entry(
                at,
                format!(
                    "location says {type_name} = '{name}', but '{name}' is a {} ({})",
                    crush.type_name(existing.type_id),
                    existing.declared_at
                ),
            )),
            Some(_) => Ok(()),
            None => {
                let id = self.derive(name);
                let pending = Pending {
                    id,
                    type_id: level,
                    parent: None,
                    children: vec![],
                    declared_at: format!("{at} location"),
                };
                self.buckets.insert(name.to_owned(), pending);
                self.order.push(name.to_owned());
                Ok(())
            }
        }
    }

    /// Explicit parent links, checked for unknown parents and cycles before anything else.
    fn link_parents(&mut self) -> Result<(), DescribeError> {
        for b in self.buckets.values() {
            if let Some((parent, at)) = &b.parent
                && !self.buckets.contains_key(parent)
            {
                return Err(entry(at, format!("parent '{parent}' is not a bucket")));
            }
        }
        check_cycles(&self.buckets)?;
        for name in &self.order {
            let Some((parent, _)) = self.buckets[name].parent.clone() else { continue };
            let child_id = self.buckets[name].id;
            self.buckets.get_mut(&parent).expect("checked above").children.push(child_id.into());
        }
        Ok(())
    }
}

/// Records `child`'s parent, refusing a second, different one.
fn link(
    buckets: &mut BTreeMap<String, Pending>,
    child: &str,
    parent: &str,
    at: &str,
) -> Result<(), DescribeError> {
    let pending = buckets.get_mut(child).expect("child exists");
    match &pending.parent {
        Some((existing, first_at)) if existing != parent => Err(entry(
            at,
            format!("puts '{child}' under '{parent}', but {first_at} put it under '{existing}'"),
        )),
        Some(_) => Ok(()),
        None => {
            pending.parent = Some((parent.to_owned(), at.to_owned()));
            Ok(())
        }
    }
}

fn check_cycles(buckets: &BTreeMap<String, Pending>) -> Result<(), DescribeError> {
    let mut finished: BTreeSet<&str> = BTreeSet::new();
    for start in buckets.keys() {
        let mut path: Vec<&str> = Vec::new();
        let mut on_path: BTreeMap<&str, usize> = BTreeMap::new();
        let mut at = Some(start.as_str());
        while let Some(name) = at {
            if finished.contains(name) {
                break;
            }
            if let Some(&pos) = on_path.get(name) {
                let mut cycle: Vec<&str> = path[pos..].to_vec();
                cycle.push(name);
                let stated = buckets[name].parent.as_ref().map_or("", |(_, at)| at.as_str());
                return Err(entry(
                    stated,
                    format!("cycle in the hierarchy: {}", cycle.join(" > parent ")),
                ));
            }
            on_path.insert(name, path.len());
            path.push(name);
            at = buckets[name].parent.as_ref().map(|(p, _)| p.as_str());
        }
        finished.extend(path);
    }
    Ok(())
}

/// The CRUSH map under construction is still empty: probe against the ids taken so far.
fn derived_id(taken: &BTreeMap<BucketId, String>, name: &str) -> BucketId {
    derive_bucket_id(name, |id| taken.contains_key(&id))
}

fn build_osd_states(desc: &Description) -> Result<BTreeMap<OsdId, OsdState>, DescribeError> {
    let mut osds = BTreeMap::new();
    for (i, osd) in desc.osds.iter().enumerate() {
        let at = format!("osd.{} ([[osd]] #{})", osd.id, i + 1);
        let reweight =
            Reweight::from_f64(osd.reweight).map_err(|e| entry(&at, format!("reweight: {e}")))?;
        osds.insert(OsdId(osd.id), OsdState { up: osd.up, is_in: osd.is_in, reweight, addr: None });
    }
    Ok(osds)
}

fn check_weights(crush: &CrushMap, desc: &Description) -> Result<(), DescribeError> {
    let total: u64 = crush.devices.values().map(|d| u64::from(d.weight.0)).sum();
    if !desc.osds.is_empty() && total == 0 {
        return Err(entry(
            "osds",
            "zero total weight: every placed OSD has weight 0, nothing can be placed",
        ));
    }
    Ok(())
}

/// The bucket a simple rule takes when it names none: "default", or the only root.
fn default_root(crush: &CrushMap, at: &str) -> Result<BucketId, DescribeError> {
    if let Some(b) = crush.bucket_by_name(DEFAULT_ROOT) {
        return Ok(b.id);
    }
    match crush.roots().as_slice() {
        [only] => Ok(*only),
        [] => Err(entry(at, "there are no buckets to place data in")),
        many => Err(entry(
            at,
            format!("there is no bucket 'default' and {} roots; name the root", many.len()),
        )),
    }
}

fn add_rules(crush: &mut CrushMap, desc: &Description) -> Result<(), DescribeError> {
    for rule in &desc.rules {
        let at = format!("rule '{}'", rule.name);
        let steps = match &rule.steps {
            Some(texts) => {
                if rule.root.is_some() || rule.failure_domain.is_some() || rule.class.is_some() {
                    return Err(entry(
                        at,
                        "give either steps or root/failure_domain/class, not both",
                    ));
                }
                let mut steps = Vec::new();
                for (i, text) in texts.iter().enumerate() {
                    let step = crush
                        .parse_step(text)
                        .map_err(|e| entry(format!("{at}, step {}", i + 1), e))?;
                    steps.push(step);
                }
                steps
            }
            None => simple_rule_steps(crush, &at, rule)?,
        };
        insert_rule(crush, &at, &rule.name, rule.kind, steps)?;
    }
    // The default rules, when a pool relies on them and the description does not define them.
    for pool in &desc.pools {
        let name = match (pool.kind, &pool.rule) {
            (_, Some(_)) => continue,
            (RuleKind::Replicated, None) => DEFAULT_REPLICATED_RULE,
            (RuleKind::Erasure, None) => DEFAULT_ERASURE_RULE,
        };
        if crush.rule_by_name(name).is_none() {
            let spec = RuleDesc {
                name: name.to_owned(),
                kind: pool.kind,
                root: None,
                failure_domain: None,
                class: None,
                steps: None,
            };
            let at = format!("pool '{}': default rule '{name}'", pool.name);
            let steps = simple_rule_steps(crush, &at, &spec)?;
            insert_rule(crush, &at, name, pool.kind, steps)?;
        }
    }
    Ok(())
}

/// Adds a rule under the lowest free id, checking its name and shape now; the references in
/// it are checked with the whole map (one validation instead of one per rule).
fn insert_rule(
    crush: &mut CrushMap,
    at: &str,
    name: &str,
    kind: RuleKind,
    steps: Vec<Step>,
) -> Result<(), DescribeError> {
    check_name("rule", name).map_err(in_map(at))?;
    if crush.rule_by_name(name).is_some() {
        let exists = MapError::AlreadyExists { what: "rule", name: name.to_owned() };
        return Err(in_map(at)(exists));
    }
    let id = (0..).map(RuleId).find(|id| !crush.rules.contains_key(id)).expect("free rule id");
    let rule = Rule { id, name: name.to_owned(), kind, steps };
    crate::crush::rule::check_shape(&rule).map_err(|reason| entry(at, reason))?;
    crush.rules.insert(id, rule);
    Ok(())
}

fn simple_rule_steps(
    crush: &CrushMap,
    at: &str,
    rule: &RuleDesc,
) -> Result<Vec<Step>, DescribeError> {
    let root = match &rule.root {
        Some(name) => crush
            .bucket_by_name(name)
            .map(|b| b.id)
            .ok_or_else(|| entry(at, format!("root '{name}' is not a bucket")))?,
        None => default_root(crush, at)?,
    };
    let domain = rule.failure_domain.as_deref().unwrap_or(DEFAULT_FAILURE_DOMAIN);
    let failure_domain = crush.type_id(domain).map_err(in_map(at.to_owned()))?;
    if let Some(class) = &rule.class
        && !crush.classes().contains(class.as_str())
    {
        return Err(entry(at, format!("no OSD has device class '{class}'")));
    }
    Ok(SimpleRule { kind: rule.kind, root, failure_domain, class: rule.class.as_deref() }.steps())
}

fn build_profiles(desc: &Description) -> Result<BTreeMap<String, ErasureProfile>, DescribeError> {
    let mut profiles = BTreeMap::new();
    for p in &desc.profiles {
        let at = format!("profile '{}'", p.name);
        let unit = p.stripe_unit_bytes.unwrap_or(STRIPE_UNIT_BYTES_DEFAULT);
        let profile = ErasureProfile::new(p.k, p.m, unit);
        profile.validate(&p.name).map_err(in_map(&at))?;
        if profiles.insert(p.name.clone(), profile).is_some() {
            return Err(entry(at, "defined twice"));
        }
    }
    Ok(profiles)
}

fn build_pools(
    desc: &Description,
    contents: &mut MapContents,
) -> Result<BTreeMap<PoolId, Pool>, DescribeError> {
    let target = desc.target_pgs_per_osd.unwrap_or(TARGET_PGS_PER_OSD_DEFAULT);
    if target == 0 || target > 10_000 {
        return Err(entry("target_pgs_per_osd", format!("{target} is not in 1..=10000")));
    }
    let ratios = size_ratios(desc)?;
    let ratio_sum: f64 = ratios.iter().sum();
    // Pools' rules must exist before pg_num can be sized from them, so compile a map of
    // the hierarchy first.
    let probe = OsdMap::new(contents.clone()).map_err(in_map("map"))?;

    let explicit: BTreeSet<u32> = desc.pools.iter().filter_map(|p| p.id).collect();
    let mut next_id = 1u32;
    let mut pools = BTreeMap::new();
    for (i, p) in desc.pools.iter().enumerate() {
        let at = format!("pool '{}'", p.name);
        let id = match p.id {
            Some(0) => return Err(entry(at, "pool ids start at 1")),
            Some(id) => id,
            None => {
                while explicit.contains(&next_id) || pools.contains_key(&PoolId(next_id)) {
                    next_id += 1;
                }
                next_id
            }
        };
        if pools.contains_key(&PoolId(id)) {
            return Err(entry(at, format!("pool id {id} is used twice")));
        }
        let kind = pool_kind(p, &at, contents)?;
        let rule_id = pool_rule(p, &at, contents)?;
        let size = match &kind {
            PoolKind::Replicated { size, .. } => usize::from(*size),
            PoolKind::Erasure { k, m, .. } => usize::from(*k) + usize::from(*m),
        };
        // Check the pool's shape before sizing it from the shape.
        let shape = Pool {
            id: PoolId(id),
            name: p.name.clone(),
            kind: kind.clone(),
            rule: rule_id,
            pg_num: 1,
            pgp_num: 1,
            snaps: Default::default(),
        };
        shape.validate().map_err(in_map(&at))?;
        let pg_num = match p.pg_num {
            Some(n) => n,
            None => {
                let share = if ratio_sum > 0.0 {
                    ratios[i] / ratio_sum
                } else {
                    1.0 / desc.pools.len() as f64
                };
                ideal_pg_num(probe.rule_osds(rule_id).len(), size, target, share)
            }
        };
        let pool = Pool {
            id: PoolId(id),
            name: p.name.clone(),
            kind,
            rule: rule_id,
            pg_num,
            pgp_num: pg_num,
            snaps: Default::default(),
        };
        pool.validate().map_err(in_map(&at))?;
        if pools.values().any(|other: &Pool| other.name == pool.name) {
            return Err(entry(at, "defined twice"));
        }
        pools.insert(pool.id, pool);
    }
    Ok(pools)
}

/// Each pool's `target_size_ratio` (1 when unset), each a number >= 0.
fn size_ratios(desc: &Description) -> Result<Vec<f64>, DescribeError> {
    let ratios: Vec<f64> = desc.pools.iter().map(|p| p.target_size_ratio.unwrap_or(1.0)).collect();
    if let Some((i, r)) = ratios.iter().enumerate().find(|(_, r)| !r.is_finite() || **r < 0.0) {
        return Err(entry(
            format!("pool '{}'", desc.pools[i].name),
            format!("target_size_ratio {r} is not >= 0"),
        ));
    }
    Ok(ratios)
}

/// The pool's rule (the default of its kind when unset): it exists, is of the pool's
/// kind, and reaches OSDs with weight.
fn pool_rule(p: &PoolDesc, at: &str, contents: &MapContents) -> Result<RuleId, DescribeError> {
    let rule_name = p.rule.clone().unwrap_or_else(|| match p.kind {
        RuleKind::Replicated => DEFAULT_REPLICATED_RULE.to_owned(),
        RuleKind::Erasure => DEFAULT_ERASURE_RULE.to_owned(),
    });
    let rule = contents
        .crush
        .rule_by_name(&rule_name)
        .ok_or_else(|| entry(at, format!("rule '{rule_name}' does not exist")))?;
    if rule.kind != p.kind {
        return Err(entry(
            at,
            format!("rule '{rule_name}' is {}, the pool is {}", rule.kind.name(), p.kind.name()),
        ));
    }
    check_rule_weight(&contents.crush, at, &rule_name, &rule.steps)?;
    Ok(rule.id)
}

fn pool_kind(
    p: &PoolDesc,
    at: &str,
    contents: &mut MapContents,
) -> Result<PoolKind, DescribeError> {
    match p.kind {
        RuleKind::Replicated => {
            if p.k.is_some() || p.m.is_some() || p.profile.is_some() {
                return Err(entry(at, "k, m and profile are for erasure pools"));
            }
            let size = p.size.unwrap_or(DEFAULT_REPLICAS);
            let min_size = p.min_size.unwrap_or_else(|| default_min_size(size, None));
            Ok(PoolKind::Replicated { size, min_size })
        }
        RuleKind::Erasure => {
            if p.size.is_some() {
                return Err(entry(at, "an erasure pool's size is k+m; give k and m"));
            }
            let (name, k, m) = match (&p.profile, p.k, p.m) {
                (Some(name), None, None) => {
                    let profile = contents
                        .erasure_profiles
                        .get(name)
                        .ok_or_else(|| entry(at, format!("profile '{name}' does not exist")))?;
                    (name.clone(), profile.k, profile.m)
                }
                (None, Some(k), Some(m)) => {
                    let name = format!("k{k}m{m}");
                    let profile = ErasureProfile::new(k, m, STRIPE_UNIT_BYTES_DEFAULT);
                    profile.validate(&name).map_err(in_map(at))?;
                    let existing = contents.erasure_profiles.entry(name.clone()).or_insert(profile);
                    if (existing.k, existing.m) != (k, m) {
                        return Err(entry(at, format!("profile '{name}' exists with other k, m")));
                    }
                    (name, k, m)
                }
                _ => return Err(entry(at, "give either k and m, or a profile")),
            };
            let min_size =
                p.min_size.unwrap_or_else(|| default_min_size(k.saturating_add(m), Some(k)));
            Ok(PoolKind::Erasure { profile: name, k, m, min_size })
        }
    }
}

/// A pool whose rule can reach no weight would map every PG to nothing.
fn check_rule_weight(
    crush: &CrushMap,
    at: &str,
    rule: &str,
    steps: &[Step],
) -> Result<(), DescribeError> {
    for step in steps {
        if let Step::Take { bucket, class } = step
            && crush.subtree_weight((*bucket).into(), class.as_deref()) == 0
        {
            let class = class.as_ref().map_or(String::new(), |c| format!(" (class {c})"));
            return Err(entry(
                at,
                format!(
                    "rule '{rule}' takes '{}'{class}, which has zero total weight",
                    crush.item_name((*bucket).into())
                ),
            ));
        }
    }
    Ok(())
}

/// A regular layout: `levels` from the top, e.g. `[("root", 1), ("rack", 4), ("host", 8)]`
/// and `osds_per_leaf` OSDs under each lowest bucket, all of `weight` and `class`. Refused
/// when it would exceed the map's bucket or OSD limits.
pub fn synthesize(
    levels: &[(String, u32)],
    osds_per_leaf: u32,
    weight: f64,
    class: Option<&str>,
) -> Result<Description, DescribeError> {
    let too_many = |what: &str, limit: u64| {
        entry("layout", format!("it makes more {what} than the limit of {limit}"))
    };
    if osds_per_leaf == 0 {
        return Err(entry("layout", "each lowest bucket needs at least one OSD"));
    }
    let mut buckets: u64 = 0;
    let mut width: u64 = 1;
    for (_, fanout) in levels {
        width = width.saturating_mul(u64::from(*fanout));
        buckets = buckets.saturating_add(width);
        if buckets > BUCKETS_MAX as u64 {
            return Err(too_many("buckets", BUCKETS_MAX as u64));
        }
    }
    if width.saturating_mul(u64::from(osds_per_leaf)) > u64::from(OSD_ID_LIMIT) {
        return Err(too_many("OSDs", u64::from(OSD_ID_LIMIT)));
    }
    let mut desc = Description::default();
    let mut paths: Vec<Vec<(String, String)>> = vec![vec![]];
    for (type_name, fanout) in levels {
        let mut next = Vec::new();
        for path in &paths {
            for _ in 0..*fanout {
                let name = if *fanout == 1 && type_name == "root" {
                    DEFAULT_ROOT.to_owned()
                } else {
                    format!("{type_name}{}", next.len())
                };
                let mut p = path.clone();
                p.push((type_name.clone(), name));
                next.push(p);
            }
        }
        paths = next;
    }
    let mut id = 0;
    for path in &paths {
        for _ in 0..osds_per_leaf {
            desc.osds.push(OsdDesc {
                id,
                weight,
                class: class.map(str::to_owned),
                location: path.iter().cloned().collect(),
                up: true,
                is_in: true,
                reweight: 1.0,
            });
            id += 1;
        }
    }
    Ok(desc)
}
