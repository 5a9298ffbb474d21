//! The CRUSH map as data: bucket types, the bucket hierarchy, device weights and classes,
//! rules and tunables, with the checks that make a map valid and the edits an operator makes.
//!
//! This is the form that is stored and sent; the mapper works on a compiled form
//! (`compiled.rs`) derived from it. Every edit goes through `validate`, so an edited map is
//! either valid or the edit is refused and the map unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::rule::{self, CHOOSE_TRIES_MAX, ChooseMode, Rule, RuleKind, Step};
use crate::MapError;
use crate::hash::object_hash;
use crate::ids::{BUCKET_ID_MIN, BucketId, ItemId, OSD_ID_LIMIT, OsdId, RuleId, Weight};

/// Ceph's default bucket types, leaf first. Index 0 is always `osd`.
pub const DEFAULT_TYPES: [&str; 12] = [
    "osd",
    "host",
    "chassis",
    "rack",
    "row",
    "pdu",
    "pod",
    "room",
    "datacenter",
    "zone",
    "region",
    "root",
];
pub const TYPES_MAX: usize = 32;
pub const BUCKETS_MAX: usize = 1 << 20;
pub const BUCKET_CHILDREN_MAX: usize = 1 << 16;
pub const RULES_MAX: usize = 1024;
pub const CLASSES_MAX: usize = 64;
pub const NAME_BYTES_MAX: usize = 128;
/// Descents tried for each position before CRUSH gives it up (Ceph's `choose_total_tries`).
pub const CHOOSE_TOTAL_TRIES_DEFAULT: u32 = 50;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub id: BucketId,
    pub name: String,
    pub type_id: u16,
    /// Buckets and OSDs directly below, in a fixed order (the order is part of placement
    /// only through tie-breaking, which the hash makes impossible; it is kept for display).
    pub children: Vec<ItemId>,
}

/// An OSD's place in CRUSH: its capacity weight and its device class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub weight: Weight,
    pub class: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunables {
    pub choose_total_tries: u32,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables { choose_total_tries: CHOOSE_TOTAL_TRIES_DEFAULT }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrushMap {
    /// Bucket type names, leaf first; a type's index is its level.
    pub types: Vec<String>,
    pub buckets: BTreeMap<BucketId, Bucket>,
    /// Exactly the OSDs placed in the hierarchy.
    pub devices: BTreeMap<OsdId, Device>,
    pub rules: BTreeMap<RuleId, Rule>,
    pub tunables: Tunables,
}

impl Default for CrushMap {
    fn default() -> Self {
        CrushMap {
            types: DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
            buckets: BTreeMap::new(),
            devices: BTreeMap::new(),
            rules: BTreeMap::new(),
            tunables: Tunables::default(),
        }
    }
}

/// Checks a bucket, type, class or rule name: 1 to `NAME_BYTES_MAX` bytes of letters,
/// digits, `_`, `-` and `.`, so names survive rule text, shells and URLs unquoted.
pub fn check_name(what: &str, name: &str) -> Result<(), MapError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || name.len() > NAME_BYTES_MAX || !name.chars().all(ok_char) {
        return Err(MapError::invalid(
            format!("{what} name '{name}'"),
            format!("use 1 to {NAME_BYTES_MAX} letters, digits, '_', '-' or '.'"),
        ));
    }
    Ok(())
}

/// The id a bucket named `name` gets in a map built from a description unless one is
/// given: derived from the name, so that maps built from descriptions in any order agree
/// and an edit renumbers nothing, and probed downwards past ids `taken`. A live map's new
/// buckets are numbered instead (`CrushMap::next_bucket_id`): it keeps its ids.
/// Terminates: the id space (2^30) is far larger than `BUCKETS_MAX`.
pub fn derive_bucket_id(name: &str, taken: impl Fn(BucketId) -> bool) -> BucketId {
    const _: () = assert!(BUCKETS_MAX < (1 << 30) - 1);
    let span = -i64::from(BUCKET_ID_MIN) - 1;
    let mut id = -1 - i64::from(object_hash("crush-bucket", name.as_bytes())) % span;
    while taken(BucketId(id as i32)) {
        id = if id - 1 < i64::from(BUCKET_ID_MIN) { -1 } else { id - 1 };
    }
    BucketId(id as i32)
}

impl CrushMap {
    /// A map with the given bucket types (leaf first; the first must be `osd`).
    pub fn with_types(types: Vec<String>) -> CrushMap {
        CrushMap { types, ..CrushMap::default() }
    }

    pub fn type_id(&self, name: &str) -> Result<u16, MapError> {
        self.types.iter().position(|t| t == name).map(|i| i as u16).ok_or_else(|| {
            MapError::NoSuchType { name: name.to_owned(), known: self.types.join(", ") }
        })
    }

    pub fn type_name(&self, type_id: u16) -> &str {
        self.types.get(usize::from(type_id)).map_or("?", String::as_str)
    }

    pub fn bucket_by_name(&self, name: &str) -> Option<&Bucket> {
        self.buckets.values().find(|b| b.name == name)
    }

    pub fn rule_by_name(&self, name: &str) -> Option<&Rule> {
        self.rules.values().find(|r| r.name == name)
    }

    /// `osd.N` or the bucket's name.
    pub fn item_name(&self, item: ItemId) -> String {
        match (item.osd(), item.bucket()) {
            (Some(osd), _) => osd.to_string(),
            (_, Some(bucket)) => {
                self.buckets.get(&bucket).map_or_else(|| bucket.to_string(), |b| b.name.clone())
            }
            _ => unreachable!("an item is an OSD or a bucket"),
        }
    }

    /// Resolves `osd.N` or a bucket name.
    pub fn item_by_name(&self, name: &str) -> Result<ItemId, MapError> {
        if let Ok(osd) = name.parse::<OsdId>()
            && name.starts_with("osd.")
        {
            return if self.devices.contains_key(&osd) {
                Ok(osd.into())
            } else {
                Err(MapError::NoSuchOsd(osd))
            };
        }
        self.bucket_by_name(name)
            .map(|b| b.id.into())
            .ok_or_else(|| MapError::NoSuchBucket(name.to_owned()))
    }

    /// The type level of an item (0 for OSDs).
    pub fn item_type(&self, item: ItemId) -> u16 {
        item.bucket().and_then(|b| self.buckets.get(&b)).map_or(0, |b| b.type_id)
    }

    /// Every item's parent bucket.
    pub fn parents(&self) -> HashMap<ItemId, BucketId> {
        let mut parents = HashMap::new();
        for bucket in self.buckets.values() {
            for &child in &bucket.children {
                parents.insert(child, bucket.id);
            }
        }
        parents
    }

    pub fn parent_of(&self, item: ItemId) -> Option<BucketId> {
        self.buckets.values().find(|b| b.children.contains(&item)).map(|b| b.id)
    }

    /// Buckets that are nobody's child, in id order.
    pub fn roots(&self) -> Vec<BucketId> {
        let parents = self.parents();
        self.buckets.keys().filter(|b| !parents.contains_key(&(**b).into())).copied().collect()
    }

    /// The device classes in use, sorted.
    pub fn classes(&self) -> BTreeSet<&str> {
        self.devices.values().filter_map(|d| d.class.as_deref()).collect()
    }

    /// Total weight of the OSDs under `item` (of `class`, when given).
    pub fn subtree_weight(&self, item: ItemId, class: Option<&str>) -> u64 {
        let mut total = 0;
        self.for_each_osd_under(item, &mut |_, device| {
            if class.is_none() || device.class.as_deref() == class {
                total += u64::from(device.weight.0);
            }
        });
        total
    }

    /// Calls `f` for every OSD under `item` (or `item` itself when it is an OSD).
    pub fn for_each_osd_under(&self, item: ItemId, f: &mut dyn FnMut(OsdId, &Device)) {
        // The hierarchy is a tree of bounded depth (types strictly decrease downwards), so
        // this terminates; the explicit stack keeps deep maps off the call stack.
        let mut stack = vec![item];
        while let Some(item) = stack.pop() {
            if let Some(osd) = item.osd() {
                if let Some(device) = self.devices.get(&osd) {
                    f(osd, device);
                }
            } else if let Some(bucket) = item.bucket().and_then(|b| self.buckets.get(&b)) {
                stack.extend(bucket.children.iter().rev());
            }
        }
    }

    /// The id a bucket added to this map gets unless one is given: the first free one
    /// counting down from -1, as Ceph numbers them (`osd tree` shows -1, -2, ...). A map
    /// keeps its buckets' ids, so numbering them in order moves nothing later; every
    /// monitor applies the same changes in the same order and numbers alike. Terminates:
    /// at most `BUCKETS_MAX` ids are taken, far fewer than the id space holds.
    pub fn next_bucket_id(&self) -> BucketId {
        const _: () = assert!(BUCKETS_MAX < (1 << 30) - 1);
        let mut id = -1;
        while self.buckets.contains_key(&BucketId(id)) {
            id -= 1;
        }
        BucketId(id)
    }

    /// Checks every invariant of a CRUSH map.
    pub fn validate(&self) -> Result<(), MapError> {
        self.validate_types()?;
        self.validate_buckets()?;
        self.validate_tree()?;
        self.validate_rules()?;
        let tries = self.tunables.choose_total_tries;
        if tries == 0 || tries > CHOOSE_TRIES_MAX {
            return Err(MapError::invalid(
                "tunable choose_total_tries",
                format!("{tries} is not in 1..={CHOOSE_TRIES_MAX}"),
            ));
        }
        Ok(())
    }

    pub(crate) fn validate_types(&self) -> Result<(), MapError> {
        if self.types.first().map(String::as_str) != Some("osd") {
            return Err(MapError::invalid("bucket types", "the first (leaf) type must be 'osd'"));
        }
        if self.types.len() > TYPES_MAX {
            return Err(MapError::Limit { what: "bucket types", limit: TYPES_MAX as u64 });
        }
        let mut seen = BTreeSet::new();
        for name in &self.types {
            check_name("type", name)?;
            if !seen.insert(name) {
                return Err(MapError::AlreadyExists { what: "bucket type", name: name.clone() });
            }
        }
        Ok(())
    }

    fn validate_buckets(&self) -> Result<(), MapError> {
        if self.buckets.len() > BUCKETS_MAX {
            return Err(MapError::Limit { what: "buckets", limit: BUCKETS_MAX as u64 });
        }
        let mut names = BTreeSet::new();
        for (&id, bucket) in &self.buckets {
            check_name("bucket", &bucket.name)?;
            if bucket.name.starts_with("osd.") {
                return Err(MapError::invalid(
                    format!("bucket name '{}'", bucket.name),
                    "names starting with 'osd.' are OSD names",
                ));
            }
            if id != bucket.id || !id.is_valid() {
                return Err(MapError::invalid(
                    format!("bucket '{}'", bucket.name),
                    format!("id {} is not a negative id at or above {BUCKET_ID_MIN}", bucket.id),
                ));
            }
            if !names.insert(bucket.name.as_str()) {
                return Err(MapError::AlreadyExists { what: "bucket", name: bucket.name.clone() });
            }
            if bucket.type_id == 0 || usize::from(bucket.type_id) >= self.types.len() {
                return Err(MapError::invalid(
                    format!("bucket '{}'", bucket.name),
                    format!("type id {} is not a bucket type", bucket.type_id),
                ));
            }
            if bucket.children.len() > BUCKET_CHILDREN_MAX {
                return Err(MapError::Limit {
                    what: "items in one bucket",
                    limit: BUCKET_CHILDREN_MAX as u64,
                });
            }
        }
        let mut classes = BTreeSet::new();
        for (osd, device) in &self.devices {
            if osd.0 >= OSD_ID_LIMIT {
                return Err(MapError::invalid(osd.to_string(), "id is above the OSD id limit"));
            }
            if let Some(class) = &device.class {
                check_name("device class", class)?;
                classes.insert(class);
            }
        }
        if classes.len() > CLASSES_MAX {
            return Err(MapError::Limit { what: "device classes", limit: CLASSES_MAX as u64 });
        }
        Ok(())
    }

    /// One parent per item, every child known, no cycles, types decreasing downwards, every
    /// device placed.
    fn validate_tree(&self) -> Result<(), MapError> {
        let mut parent: HashMap<ItemId, BucketId> = HashMap::new();
        for bucket in self.buckets.values() {
            for &child in &bucket.children {
                let known = match child.osd() {
                    Some(osd) => self.devices.contains_key(&osd),
                    None => child.bucket().is_some_and(|b| self.buckets.contains_key(&b)),
                };
                if !known {
                    return Err(MapError::invalid(
                        format!("bucket '{}'", bucket.name),
                        format!("it contains item {} which does not exist", child.0),
                    ));
                }
                if let Some(first) = parent.insert(child, bucket.id) {
                    return Err(MapError::TwoParents {
                        item: self.item_name(child),
                        first: self.item_name(first.into()),
                        second: bucket.name.clone(),
                    });
                }
            }
        }
        self.check_acyclic(&parent)?;
        for bucket in self.buckets.values() {
            for &child in &bucket.children {
                let child_type = self.item_type(child);
                if child_type >= bucket.type_id {
                    return Err(MapError::TypeOrder {
                        parent: bucket.name.clone(),
                        parent_type: self.type_name(bucket.type_id).to_owned(),
                        child: self.item_name(child),
                        child_type: self.type_name(child_type).to_owned(),
                    });
                }
            }
        }
        if let Some(osd) = self.devices.keys().find(|osd| !parent.contains_key(&(**osd).into())) {
            return Err(MapError::invalid(osd.to_string(), "has a CRUSH weight but no bucket"));
        }
        Ok(())
    }

    /// Walks up from every bucket; a walk that meets itself is a cycle. Linear overall:
    /// each bucket is finished once.
    fn check_acyclic(&self, parent: &HashMap<ItemId, BucketId>) -> Result<(), MapError> {
        let mut finished: HashSet<BucketId> = HashSet::new();
        for &start in self.buckets.keys() {
            let mut path: Vec<BucketId> = Vec::new();
            let mut on_path: HashMap<BucketId, usize> = HashMap::new();
            let mut at = Some(start);
            while let Some(bucket) = at {
                if finished.contains(&bucket) {
                    break;
                }
                if let Some(&pos) = on_path.get(&bucket) {
                    let mut names: Vec<String> =
                        path[pos..].iter().rev().map(|&b| self.item_name(b.into())).collect();
                    names.push(self.item_name(bucket.into()));
                    return Err(MapError::Cycle(names.join(" > ")));
                }
                on_path.insert(bucket, path.len());
                path.push(bucket);
                at = parent.get(&bucket.into()).copied();
            }
            finished.extend(path);
        }
        Ok(())
    }

    fn validate_rules(&self) -> Result<(), MapError> {
        if self.rules.len() > RULES_MAX {
            return Err(MapError::Limit { what: "rules", limit: RULES_MAX as u64 });
        }
        let classes = self.classes();
        let mut names = BTreeSet::new();
        for (&id, rule) in &self.rules {
            check_name("rule", &rule.name)?;
            let bad = |reason: String| MapError::BadRule { rule: rule.name.clone(), reason };
            if id != rule.id {
                return Err(bad(format!("stored under id {id} but has id {}", rule.id)));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(MapError::AlreadyExists { what: "rule", name: rule.name.clone() });
            }
            rule::check_shape(rule).map_err(bad)?;
            for step in &rule.steps {
                match step {
                    Step::Take { bucket, class } => {
                        if !self.buckets.contains_key(bucket) {
                            return Err(bad(format!(
                                "takes bucket {bucket}, which does not exist"
                            )));
                        }
                        if let Some(class) = class
                            && !classes.contains(class.as_str())
                        {
                            return Err(bad(format!(
                                "takes device class '{class}', which no OSD has"
                            )));
                        }
                    }
                    Step::Choose { type_id, .. } if usize::from(*type_id) >= self.types.len() => {
                        return Err(bad(format!("chooses type id {type_id}, which is unknown")));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Parses one rule step: `take NAME [class CLASS]`,
    /// `choose|chooseleaf firstn|indep N type TYPE`, `emit`, `set_choose_tries N`,
    /// `set_chooseleaf_tries N`.
    pub fn parse_step(&self, text: &str) -> Result<Step, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let number = |s: &str| s.parse::<i64>().map_err(|_| format!("'{s}' is not a number"));
        let step = match words.as_slice() {
            ["take", name] | ["take", name, "class", _] => {
                let bucket = self.bucket_by_name(name).ok_or(format!("no bucket '{name}'"))?;
                let class = words.get(3).map(|c| c.to_string());
                if let Some(class) = &class
                    && !self.classes().contains(class.as_str())
                {
                    return Err(format!("no OSD has device class '{class}'"));
                }
                Step::Take { bucket: bucket.id, class }
            }
            [op @ ("choose" | "chooseleaf"), mode, count, "type", type_name] => {
                let mode = match *mode {
                    "firstn" => ChooseMode::Firstn,
                    "indep" => ChooseMode::Indep,
                    other => return Err(format!("'{other}' is not firstn or indep")),
                };
                let count = number(count)?;
                let count = i32::try_from(count).map_err(|_| format!("count {count} too large"))?;
                let type_id = self.type_id(type_name).map_err(|e| e.to_string())?;
                Step::Choose { mode, count, type_id, leaf: *op == "chooseleaf" }
            }
            ["emit"] => Step::Emit,
            [op @ ("set_choose_tries" | "set_chooseleaf_tries"), n] => {
                let n = u32::try_from(number(n)?).map_err(|_| format!("'{n}' is out of range"))?;
                if *op == "set_choose_tries" {
                    Step::SetChooseTries(n)
                } else {
                    Step::SetChooseleafTries(n)
                }
            }
            _ => {
                return Err(format!(
                    "'{text}' is not a step (take NAME [class C] | choose|chooseleaf \
                     firstn|indep N type T | emit | set_choose_tries N | set_chooseleaf_tries N)"
                ));
            }
        };
        Ok(step)
    }

    /// The text form of a step, as `parse_step` reads it.
    pub fn step_text(&self, step: &Step) -> String {
        match step {
            Step::Take { bucket, class: None } => {
                format!("take {}", self.item_name((*bucket).into()))
            }
            Step::Take { bucket, class: Some(class) } => {
                format!("take {} class {class}", self.item_name((*bucket).into()))
            }
            Step::Choose { mode, count, type_id, leaf } => format!(
                "{} {} {count} type {}",
                if *leaf { "chooseleaf" } else { "choose" },
                mode.name(),
                self.type_name(*type_id)
            ),
            Step::Emit => "emit".into(),
            Step::SetChooseTries(n) => format!("set_choose_tries {n}"),
            Step::SetChooseleafTries(n) => format!("set_chooseleaf_tries {n}"),
        }
    }

    /// The failure domain a rule guarantees: the lowest type among its choose steps (0 when
    /// it only separates OSDs).
    pub fn rule_failure_domain(&self, rule: &Rule) -> u16 {
        rule.steps
            .iter()
            .filter_map(|s| match s {
                Step::Choose { type_id, .. } => Some(*type_id),
                _ => None,
            })
            .min()
            .unwrap_or(0)
    }
}

/// Edits, each validated as a whole: on error the map is unchanged.
impl CrushMap {
    fn edit(
        &mut self,
        f: impl FnOnce(&mut CrushMap) -> Result<(), MapError>,
    ) -> Result<(), MapError> {
        let mut next = self.clone();
        f(&mut next)?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Adds an empty bucket, under `parent` when given.
    pub fn add_bucket(
        &mut self,
        name: &str,
        type_name: &str,
        id: Option<BucketId>,
        parent: Option<BucketId>,
    ) -> Result<BucketId, MapError> {
        if self.bucket_by_name(name).is_some() {
            return Err(MapError::AlreadyExists { what: "bucket", name: name.to_owned() });
        }
        let type_id = self.type_id(type_name)?;
        let id = id.unwrap_or_else(|| self.next_bucket_id());
        if self.buckets.contains_key(&id) {
            return Err(MapError::AlreadyExists { what: "bucket id", name: id.to_string() });
        }
        self.edit(|map| {
            let bucket = Bucket { id, name: name.to_owned(), type_id, children: Vec::new() };
            map.buckets.insert(id, bucket);
            if let Some(parent) = parent {
                map.attach(id.into(), parent)?;
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// Moves a bucket under `parent` (or to the top level with `None`).
    pub fn move_bucket(
        &mut self,
        bucket: BucketId,
        parent: Option<BucketId>,
    ) -> Result<(), MapError> {
        if !self.buckets.contains_key(&bucket) {
            return Err(MapError::NoSuchBucket(bucket.to_string()));
        }
        self.edit(|map| {
            map.detach(bucket.into());
            match parent {
                Some(parent) => map.attach(bucket.into(), parent),
                None => Ok(()),
            }
        })
    }

    /// Removes an empty bucket that no rule takes.
    pub fn remove_bucket(&mut self, bucket: BucketId) -> Result<(), MapError> {
        let name = self.item_name(bucket.into());
        let b = self.buckets.get(&bucket).ok_or_else(|| MapError::NoSuchBucket(name.clone()))?;
        if !b.children.is_empty() {
            return Err(MapError::BucketNotEmpty(name));
        }
        let taken_by = self.rules.values().find(|r| {
            r.steps.iter().any(|s| matches!(s, Step::Take { bucket: t, .. } if *t == bucket))
        });
        if let Some(rule) = taken_by {
            return Err(MapError::BadRule {
                rule: rule.name.clone(),
                reason: format!("takes bucket '{name}', so it cannot be removed"),
            });
        }
        self.edit(|map| {
            map.detach(bucket.into());
            map.buckets.remove(&bucket);
            Ok(())
        })
    }

    /// Places an OSD under `parent` with `weight` (creating or moving it), keeping its class
    /// unless one is given.
    pub fn set_device(
        &mut self,
        osd: OsdId,
        weight: Weight,
        class: Option<String>,
        parent: BucketId,
    ) -> Result<(), MapError> {
        self.edit(|map| {
            map.detach(osd.into());
            let class = class.or_else(|| map.devices.get(&osd).and_then(|d| d.class.clone()));
            map.devices.insert(osd, Device { weight, class });
            map.attach(osd.into(), parent)
        })
    }

    /// Takes an OSD out of the hierarchy: it gets no data from CRUSH any more.
    pub fn remove_device(&mut self, osd: OsdId) -> Result<(), MapError> {
        if !self.devices.contains_key(&osd) {
            return Err(MapError::NoSuchOsd(osd));
        }
        self.edit(|map| {
            map.detach(osd.into());
            map.devices.remove(&osd);
            Ok(())
        })
    }

    pub fn set_device_weight(&mut self, osd: OsdId, weight: Weight) -> Result<(), MapError> {
        self.edit(|map| {
            map.devices.get_mut(&osd).ok_or(MapError::NoSuchOsd(osd))?.weight = weight;
            Ok(())
        })
    }

    /// Sets or clears an OSD's device class. Refused when a rule takes a class that would
    /// then have no OSD.
    pub fn set_device_class(&mut self, osd: OsdId, class: Option<String>) -> Result<(), MapError> {
        self.edit(|map| {
            map.devices.get_mut(&osd).ok_or(MapError::NoSuchOsd(osd))?.class = class;
            Ok(())
        })
    }

    /// Adds a rule under the lowest free id.
    pub fn add_rule(
        &mut self,
        name: &str,
        kind: RuleKind,
        steps: Vec<Step>,
    ) -> Result<RuleId, MapError> {
        if self.rule_by_name(name).is_some() {
            return Err(MapError::AlreadyExists { what: "rule", name: name.to_owned() });
        }
        let id = (0..).map(RuleId).find(|id| !self.rules.contains_key(id)).expect("rule ids");
        self.edit(|map| {
            map.rules.insert(id, Rule { id, name: name.to_owned(), kind, steps });
            Ok(())
        })?;
        Ok(id)
    }

    /// Removes a rule. Whether a pool still uses it is the OSD map's check.
    pub fn remove_rule(&mut self, id: RuleId) -> Result<(), MapError> {
        self.rules.remove(&id).map(drop).ok_or_else(|| MapError::NoSuchRule(id.to_string()))
    }

    fn detach(&mut self, item: ItemId) {
        for bucket in self.buckets.values_mut() {
            bucket.children.retain(|&c| c != item);
        }
    }

    fn attach(&mut self, item: ItemId, parent: BucketId) -> Result<(), MapError> {
        let name = self.item_name(parent.into());
        let bucket = self.buckets.get_mut(&parent).ok_or(MapError::NoSuchBucket(name))?;
        bucket.children.push(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_added_without_an_id_are_numbered_from_minus_one_as_ceph_does() {
        let mut crush = CrushMap::with_types(DEFAULT_TYPES.iter().map(|t| t.to_string()).collect());
        let root = crush.add_bucket("default", "root", None, None).unwrap();
        let a = crush.add_bucket("a", "host", None, Some(root)).unwrap();
        let pinned = crush.add_bucket("pinned", "host", Some(BucketId(-3)), Some(root)).unwrap();
        let b = crush.add_bucket("b", "host", None, Some(root)).unwrap();
        assert_eq!([root, a, pinned, b], [-1, -2, -3, -4].map(BucketId));
        // A removed bucket's id is the first free one again; ids in use never move.
        crush.remove_bucket(a).unwrap();
        assert_eq!(crush.add_bucket("c", "host", None, Some(root)).unwrap(), BucketId(-2));
        assert_eq!(crush.bucket_by_name("b").unwrap().id, BucketId(-4));
        let taken = crush.add_bucket("d", "host", Some(BucketId(-4)), None).unwrap_err();
        assert!(taken.to_string().contains("-4"), "{taken}");
    }
}
