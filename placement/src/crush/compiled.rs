//! The compiled form of a CRUSH map: dense arrays the mapper walks without lookups.
//!
//! Device classes are compiled the way Ceph's "shadow trees" work: each bucket gets one view
//! per class holding only the children with weight in that class, with the class's subtree
//! weights. Items keep their real ids as hash inputs in every view, so a class view places
//! exactly as a hand-built tree of the same OSDs would, and no shadow ids need to be stored.

use std::collections::{BTreeMap, HashMap};

pub(crate) use super::SHARDS_MAX;
use super::map::CrushMap;
use super::rule::{ChooseMode, Step};
use crate::hash::item_key;
use crate::ids::{BucketId, ItemId, RuleId};

/// Class slot 0 sees every OSD; slot `i > 0` sees only class `class_slots[i]`.
pub(crate) const CLASS_ANY: usize = 0;

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

#[derive(Clone, Debug)]
pub(crate) struct CompiledBucket {
    pub type_id: u16,
    /// Direct children, per class slot (for `indep` descents).
    pub views: Vec<View>,
    /// All descendants of each lower type, per class slot: `flat[slot]` holds
    /// `(type_id, view)` pairs (for ranked `firstn` choices and leaf choices).
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

impl CompiledCrush {
    /// Compiles a map that has passed `CrushMap::validate`.
    pub fn new(map: &CrushMap) -> CompiledCrush {
        let index: HashMap<BucketId, u32> =
            map.buckets.keys().enumerate().map(|(i, &id)| (id, i as u32)).collect();
        let class_names: Vec<&str> = map.classes().into_iter().collect();
        let slots = 1 + class_names.len();
        let class_slot = |class: Option<&str>| match class {
            None => CLASS_ANY,
            Some(c) => 1 + class_names.iter().position(|&n| n == c).expect("validated class"),
        };

        // Subtree weight per (bucket, class slot), children before parents: types strictly
        // decrease downwards, so ascending type order is a valid post-order.
        let mut order: Vec<&super::map::Bucket> = map.buckets.values().collect();
        order.sort_by_key(|b| (b.type_id, b.id));
        let mut subtree: Vec<Vec<u64>> = vec![vec![0; slots]; map.buckets.len()];
        let child_ref = |child: ItemId| match child.bucket() {
            Some(b) => -1 - index[&b] as i32,
            None => child.0,
        };
        for bucket in &order {
            let mut sums = vec![0u64; slots];
            for &child in &bucket.children {
                match child.osd() {
                    Some(osd) => {
                        let device = &map.devices[&osd];
                        let weight = u64::from(device.weight.0);
                        sums[CLASS_ANY] += weight;
                        if let Some(class) = device.class.as_deref() {
                            sums[class_slot(Some(class))] += weight;
                        }
                    }
                    None => {
                        let child_sums = &subtree[index[&child.bucket().unwrap()] as usize];
                        for (sum, child_sum) in sums.iter_mut().zip(child_sums) {
                            *sum += child_sum;
                        }
                    }
                }
            }
            subtree[index[&bucket.id] as usize] = sums;
        }

        // The weight of an item in a class slot.
        let weight_of = |child: ItemId, slot: usize| -> u64 {
            match child.osd() {
                Some(osd) => {
                    let device = &map.devices[&osd];
                    let in_class = slot == CLASS_ANY || class_slot(device.class.as_deref()) == slot;
                    if in_class { u64::from(device.weight.0) } else { 0 }
                }
                None => subtree[index[&child.bucket().expect("a bucket")] as usize][slot],
            }
        };
        let view_of = |items: &[ItemId], slot: usize| {
            let mut view = View::default();
            for &item in items {
                let weight = weight_of(item, slot);
                if weight > 0 {
                    view.keys.push(item_key(item.0));
                    view.weights.push(weight);
                    view.weights_f32.push(weight as f32);
                    view.children.push(child_ref(item));
                }
            }
            view.uniform = view.weights.windows(2).all(|w| w[0] == w[1]);
            view
        };

        let buckets = map
            .buckets
            .values()
            .map(|bucket| {
                let views = (0..slots).map(|slot| view_of(&bucket.children, slot)).collect();
                // Descendants by type, in depth-first order.
                let mut by_type: BTreeMap<u16, Vec<ItemId>> = BTreeMap::new();
                let mut stack: Vec<ItemId> = bucket.children.iter().rev().copied().collect();
                while let Some(item) = stack.pop() {
                    by_type.entry(map.item_type(item)).or_default().push(item);
                    if let Some(b) = item.bucket() {
                        stack.extend(map.buckets[&b].children.iter().rev());
                    }
                }
                let flat = (0..slots)
                    .map(|slot| {
                        by_type.iter().map(|(&t, items)| (t, view_of(items, slot))).collect()
                    })
                    .collect();
                CompiledBucket { type_id: bucket.type_id, views, flat }
            })
            .collect();

        let rules = map
            .rules
            .iter()
            .map(|(&id, rule)| {
                let steps = rule
                    .steps
                    .iter()
                    .map(|step| match step {
                        Step::Take { bucket, class } => CompiledStep::Take {
                            bucket: index[bucket],
                            class: class_slot(class.as_deref()),
                        },
                        Step::Choose { mode, count, type_id, leaf } => CompiledStep::Choose {
                            mode: *mode,
                            count: *count,
                            type_id: *type_id,
                            leaf: *leaf,
                        },
                        Step::Emit => CompiledStep::Emit,
                        Step::SetChooseTries(n) => CompiledStep::SetChooseTries(*n),
                        Step::SetChooseleafTries(n) => CompiledStep::SetChooseleafTries(*n),
                    })
                    .collect();
                (id, steps)
            })
            .collect();

        let mut bucket_parents = vec![NO_PARENT; map.buckets.len()];
        let devices_len = map.devices.keys().next_back().map_or(0, |o| o.0 as usize + 1);
        let mut osd_parents = vec![NO_PARENT; devices_len];
        for bucket in map.buckets.values() {
            let parent = index[&bucket.id];
            for &child in &bucket.children {
                match (child.osd(), child.bucket()) {
                    (Some(osd), _) => osd_parents[osd.0 as usize] = parent,
                    (_, Some(b)) => bucket_parents[index[&b] as usize] = parent,
                    _ => {}
                }
            }
        }
        let rule_domains =
            map.rules.iter().map(|(&id, rule)| (id, map.rule_failure_domain(rule))).collect();
        CompiledCrush {
            buckets,
            rules,
            rule_domains,
            choose_total_tries: map.tunables.choose_total_tries,
            bucket_parents,
            osd_parents,
        }
    }

    /// The failure domain of level `level` holding `osd`: the OSD itself for level 0, else
    /// its first ancestor at that level or above. `None` for an OSD not in the hierarchy.
    pub fn domain_of(&self, osd: crate::ids::OsdId, level: u16) -> Option<Domain> {
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
