//! The compiled form of a CRUSH map: dense arrays the mapper walks without lookups.
//!
//! Device classes are compiled the way Ceph's "shadow trees" work: each bucket is seen
//! through each class its rules take, holding only the children with weight in that class,
//! with the class's subtree weights. Items keep their real ids as hash inputs in every view,
//! so a class view places exactly as a hand-built tree of the same OSDs would, and no
//! shadow ids need to be stored.
//!
//! Only what the rules can reach is built: the class slots their `take` steps name, the
//! direct-children views every bucket needs for `indep` descents, and the flat views of
//! "all descendants of type T" only for the buckets a step can choose from and the items
//! a step can take a leaf under. Flat views leave out buckets with no OSD that is in: the
//! ranked choices would reject them anyway, and since each straw depends only on its own
//! item, leaving one out changes no other item's rank, so the result is the same and an
//! all-out cluster maps at once instead of rejecting every candidate. (The `indep` descent
//! views keep them: there a rejection and a retry are what keep the other positions where
//! they were.) The build is refused, not attempted, when it would exceed
//! `COMPILED_ENTRIES_MAX`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub(crate) use super::SHARDS_MAX;
use super::map::CrushMap;
use super::rule::{ChooseMode, Step};
use crate::MapError;
use crate::hash::item_key;
use crate::ids::{BucketId, ItemId, OsdId, RuleId};

/// Class slot 0 sees every OSD; slot `i > 0` sees only the `i`-th class in name order.
pub(crate) const CLASS_ANY: usize = 0;

/// Upper bound on the entries of all views together: far above any real cluster (a
/// million OSDs with a few classes and rules is a few million), and a refusal instead of
/// gigabytes for a crafted map.
pub const COMPILED_ENTRIES_MAX: usize = 1 << 25;

/// One bucket's children as seen through one device class.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    /// `item_key` of each child, contiguous for the straw2 scan.
    pub keys: Vec<u32>,
    /// Subtree weight of each child in this class; all non-zero.
    pub weights: Vec<u64>,
    /// The same weights as `f32`, for the vectorised prefilter of weighted scans (which
    /// only ever skips items the exact integer comparison would also reject).
    pub weights_f32: Vec<f32>,
    /// Each child: an OSD id (`>= 0`) or `-1 - dense bucket index`.
    pub children: Vec<i32>,
    /// All weights equal: straw2 reduces to "largest draw wins".
    pub uniform: bool,
}

impl View {
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledBucket {
    pub type_id: u16,
    /// Direct children, per class slot (for `indep` descents); empty for unused slots.
    pub views: Vec<View>,
    /// Descendants of a lower type, per class slot: `(type_id, view)` pairs, built only for
    /// what the rules need (ranked `firstn` choices, hole filling, leaf choices).
    pub flat: Vec<Vec<(u16, View)>>,
}

impl CompiledBucket {
    /// The descendants of `type_id` seen through class `slot`, if any.
    pub fn flat_view(&self, slot: usize, type_id: u16) -> Option<&View> {
        self.flat[slot]
            .iter()
            .find(|(t, _)| *t == type_id)
            .map(|(_, v)| v)
            .filter(|v| !v.keys.is_empty())
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum CompiledStep {
    Take { bucket: u32, class: usize },
    Choose { mode: ChooseMode, count: i32, type_id: u16, leaf: bool },
    Emit,
    SetChooseTries(u32),
    SetChooseleafTries(u32),
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledCrush {
    pub buckets: Vec<CompiledBucket>,
    pub rules: BTreeMap<RuleId, Vec<CompiledStep>>,
    /// The failure domain each rule promises (see `CrushMap::rule_failure_domain`).
    pub rule_domains: BTreeMap<RuleId, u16>,
    pub choose_total_tries: u32,
    /// Dense index of each bucket's parent (`NO_PARENT` for roots), and of each OSD's
    /// (indexed by OSD id), for finding failure domains.
    bucket_parents: Vec<u32>,
    osd_parents: Vec<u32>,
}

const NO_PARENT: u32 = u32::MAX;

/// A failure domain: an OSD (level 0) or a bucket, as one comparable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Domain {
    Osd(u32),
    Bucket(u32),
}

/// What compiling needs to know about the map, shared by the steps of the build.
struct Build<'a> {
    map: &'a CrushMap,
    index: HashMap<BucketId, u32>,
    class_names: Vec<&'a str>,
    /// Per class slot a rule takes: the CRUSH weight of each bucket's subtree (what straw2
    /// uses), by dense index. Slots no rule takes are not computed.
    weight: BTreeMap<usize, Vec<u64>>,
    /// The same, counting only OSDs that are in: a subtree weighing nothing here is left
    /// out of views.
    live_weight: BTreeMap<usize, Vec<u64>>,
    is_in: &'a dyn Fn(OsdId) -> bool,
}

impl CompiledCrush {
    /// Compiles a map that has passed `CrushMap::validate`; `is_in` says which OSDs may
    /// receive data (in, with a reweight above zero).
    pub fn new(map: &CrushMap, is_in: &dyn Fn(OsdId) -> bool) -> Result<CompiledCrush, MapError> {
        let too_big = || MapError::Limit {
            what: "compiled placement entries",
            limit: COMPILED_ENTRIES_MAX as u64,
        };
        let build = Build::new(map, is_in).ok_or_else(too_big)?;
        let slots = 1 + build.class_names.len();
        let needs = build.needs();
        let mut entries = 0usize;
        let mut buckets = Vec::with_capacity(map.buckets.len());
        for (dense, bucket) in map.buckets.values().enumerate() {
            let dense = dense as u32;
            let views: Vec<View> = (0..slots)
                .map(|slot| {
                    if build.weight.contains_key(&slot) {
                        build.view(&bucket.children, slot, false)
                    } else {
                        View::default()
                    }
                })
                .collect();
            let mut flat: Vec<Vec<(u16, View)>> = vec![Vec::new(); slots];
            for &(_, slot, type_id) in needs.range((dense, 0, 0)..=(dense, usize::MAX, u16::MAX)) {
                let items = build.descendants(bucket.id, type_id);
                flat[slot].push((type_id, build.view(&items, slot, true)));
            }
            entries += views.iter().map(View::len).sum::<usize>();
            entries += flat.iter().flatten().map(|(_, v)| v.len()).sum::<usize>();
            if entries > COMPILED_ENTRIES_MAX {
                return Err(too_big());
            }
            buckets.push(CompiledBucket { type_id: bucket.type_id, views, flat });
        }
        Ok(CompiledCrush {
            buckets,
            rules: build.rules(),
            rule_domains: map
                .rules
                .iter()
                .map(|(&id, r)| (id, map.rule_failure_domain(r)))
                .collect(),
            choose_total_tries: map.tunables.choose_total_tries,
            bucket_parents: build.bucket_parents(),
            osd_parents: build.osd_parents(),
        })
    }

    /// The failure domain of level `level` holding `osd`: the OSD itself for level 0, else
    /// its first ancestor at that level or above. `None` for an OSD not in the hierarchy.
    pub fn domain_of(&self, osd: OsdId, level: u16) -> Option<Domain> {
        if level == 0 {
            return Some(Domain::Osd(osd.0));
        }
        let mut at = *self.osd_parents.get(osd.0 as usize)?;
        while at != NO_PARENT {
            if self.buckets[at as usize].type_id >= level {
                return Some(Domain::Bucket(at));
            }
            at = self.bucket_parents[at as usize];
        }
        None
    }
}

/// The flat views the rules need: `(dense bucket, class slot, type)`, by bucket.
type Needs = BTreeSet<(u32, usize, u16)>;

impl<'a> Build<'a> {
    /// `None` when the per-slot weight tables alone would exceed the entry budget.
    fn new(map: &'a CrushMap, is_in: &'a dyn Fn(OsdId) -> bool) -> Option<Build<'a>> {
        let index: HashMap<BucketId, u32> =
            map.buckets.keys().enumerate().map(|(i, &id)| (id, i as u32)).collect();
        let class_names: Vec<&str> = map.classes().into_iter().collect();
        let mut build = Build {
            map,
            index,
            class_names,
            weight: BTreeMap::new(),
            live_weight: BTreeMap::new(),
            is_in,
        };
        let used: BTreeSet<usize> = map
            .rules
            .values()
            .flat_map(|r| &r.steps)
            .filter_map(|s| match s {
                Step::Take { class, .. } => Some(build.slot_of(class.as_deref())),
                _ => None,
            })
            .collect();
        if used.len().saturating_mul(map.buckets.len()) > COMPILED_ENTRIES_MAX {
            return None;
        }
        // Children before parents: types strictly decrease downwards, so ascending type
        // order is a valid post-order.
        let mut order: Vec<&super::map::Bucket> = map.buckets.values().collect();
        order.sort_by_key(|b| (b.type_id, b.id));
        for slot in used {
            build.weight.insert(slot, vec![0; map.buckets.len()]);
            build.live_weight.insert(slot, vec![0; map.buckets.len()]);
            for bucket in &order {
                let weight: u64 =
                    bucket.children.iter().map(|&c| build.item_weight(c, slot, false)).sum();
                let live: u64 =
                    bucket.children.iter().map(|&c| build.item_weight(c, slot, true)).sum();
                let dense = build.index[&bucket.id] as usize;
                build.weight.get_mut(&slot).expect("inserted")[dense] = weight;
                build.live_weight.get_mut(&slot).expect("inserted")[dense] = live;
            }
        }
        Some(build)
    }

    fn slot_of(&self, class: Option<&str>) -> usize {
        match class {
            None => CLASS_ANY,
            Some(c) => 1 + self.class_names.iter().position(|&n| n == c).expect("validated class"),
        }
    }

    /// An item's weight in a class slot; with `live`, zero unless an OSD under it is in.
    fn item_weight(&self, item: ItemId, slot: usize, live: bool) -> u64 {
        match (item.osd(), item.bucket()) {
            (Some(osd), _) => {
                let device = &self.map.devices[&osd];
                let in_class = slot == CLASS_ANY || self.slot_of(device.class.as_deref()) == slot;
                if in_class && (!live || (self.is_in)(osd)) {
                    u64::from(device.weight.0)
                } else {
                    0
                }
            }
            (_, Some(bucket)) => {
                let table = if live { &self.live_weight } else { &self.weight };
                table[&slot][self.index[&bucket] as usize]
            }
            _ => 0,
        }
    }

    /// The view of `items` through `slot`, at full CRUSH weight. With `skip_out`, buckets
    /// with no OSD that is in are left out; OSDs always stay (the mapper rejects an out
    /// OSD by its reweight, which is what keeps other choices where they were).
    fn view(&self, items: &[ItemId], slot: usize, skip_out: bool) -> View {
        let mut view = View::default();
        for &item in items {
            let weight = self.item_weight(item, slot, false);
            let dead =
                skip_out && item.bucket().is_some() && self.item_weight(item, slot, true) == 0;
            if weight == 0 || dead {
                continue;
            }
            view.keys.push(item_key(item.0));
            view.weights.push(weight);
            view.weights_f32.push(weight as f32);
            view.children.push(match item.bucket() {
                Some(b) => -1 - self.index[&b] as i32,
                None => item.0,
            });
        }
        view.uniform = view.weights.windows(2).all(|w| w[0] == w[1]);
        view
    }

    /// The items of type `type_id` under `bucket`, in depth-first order.
    fn descendants(&self, bucket: BucketId, type_id: u16) -> Vec<ItemId> {
        let mut found = Vec::new();
        let mut stack: Vec<ItemId> =
            self.map.buckets[&bucket].children.iter().rev().copied().collect();
        while let Some(item) = stack.pop() {
            let t = self.map.item_type(item);
            if t == type_id {
                found.push(item);
            } else if t > type_id
                && let Some(b) = item.bucket()
            {
                stack.extend(self.map.buckets[&b].children.iter().rev());
            }
        }
        found
    }

    /// Walks every rule's steps and collects the flat views its choices can ask for: the
    /// choosing bucket's items of the chosen type, and for leaf steps each such item's OSDs.
    fn needs(&self) -> Needs {
        let mut needs = Needs::new();
        // Rules mostly share their shapes; each (bucket, type) is walked once.
        let mut walked: HashMap<(BucketId, u16), Vec<ItemId>> = HashMap::new();
        for rule in self.map.rules.values() {
            let mut working: Vec<BucketId> = Vec::new();
            let mut slot = CLASS_ANY;
            for step in &rule.steps {
                match step {
                    Step::Take { bucket, class } => {
                        working = vec![*bucket];
                        slot = self.slot_of(class.as_deref());
                    }
                    Step::Choose { type_id, leaf, .. } => {
                        let mut next = Vec::new();
                        for &w in &working {
                            needs.insert((self.index[&w], slot, *type_id));
                            let items = walked
                                .entry((w, *type_id))
                                .or_insert_with(|| self.descendants(w, *type_id));
                            for b in items.iter().filter_map(|i| i.bucket()) {
                                if *leaf {
                                    needs.insert((self.index[&b], slot, 0));
                                } else {
                                    next.push(b);
                                }
                            }
                        }
                        working = next;
                    }
                    Step::Emit => working.clear(),
                    Step::SetChooseTries(_) | Step::SetChooseleafTries(_) => {}
                }
            }
        }
        needs
    }

    fn rules(&self) -> BTreeMap<RuleId, Vec<CompiledStep>> {
        let compile = |step: &Step| match step {
            Step::Take { bucket, class } => CompiledStep::Take {
                bucket: self.index[bucket],
                class: self.slot_of(class.as_deref()),
            },
            Step::Choose { mode, count, type_id, leaf } => {
                CompiledStep::Choose { mode: *mode, count: *count, type_id: *type_id, leaf: *leaf }
            }
            Step::Emit => CompiledStep::Emit,
            Step::SetChooseTries(n) => CompiledStep::SetChooseTries(*n),
            Step::SetChooseleafTries(n) => CompiledStep::SetChooseleafTries(*n),
        };
        self.map
            .rules
            .iter()
            .map(|(&id, rule)| (id, rule.steps.iter().map(compile).collect()))
            .collect()
    }

    fn bucket_parents(&self) -> Vec<u32> {
        let mut parents = vec![NO_PARENT; self.map.buckets.len()];
        for bucket in self.map.buckets.values() {
            for child in bucket.children.iter().filter_map(|c| c.bucket()) {
                parents[self.index[&child] as usize] = self.index[&bucket.id];
            }
        }
        parents
    }

    fn osd_parents(&self) -> Vec<u32> {
        let len = self.map.devices.keys().next_back().map_or(0, |o| o.0 as usize + 1);
        let mut parents = vec![NO_PARENT; len];
        for bucket in self.map.buckets.values() {
            for osd in bucket.children.iter().filter_map(|c| c.osd()) {
                parents[osd.0 as usize] = self.index[&bucket.id];
            }
        }
        parents
    }
}
