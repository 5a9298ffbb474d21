//! The CRUSH mapper: runs a compiled rule for one input and returns OSDs.
//!
//! `firstn` (replicated pools) ranks: the N items of the wanted type with the shortest
//! straw2 straws under the bucket, best first, skipping any whose leaf is rejected. This is
//! rendezvous hashing over the failure domains, and it moves the least data possible: adding
//! an item changes a PG only by putting the new item in place of the one it outranks, and
//! removing or outing one changes only the PGs that held it. It also scans each level once
//! per PG rather than once per copy. Ceph's `crush_choose_firstn` instead redraws per copy
//! and resolves collisions by retrying, which moves a few percent more data and costs N scans.
//!
//! `indep` (erasure-coded pools) follows Ceph's `crush_choose_indep` with the modern
//! tunables: each shard position draws on its own and collisions are retried position by
//! position, so an OSD failure changes only its own position in almost every PG (a position
//! that collided with the failed one can shift). Where Ceph gives up on a position when a
//! bucket holds an OSD above the wanted type, this mapper retries instead, and positions
//! still empty when the retries run out take the best-ranked unused items, so a rule that
//! can be satisfied never leaves a hole.
//!
//! Every loop is bounded by the retry budgets, never by luck, and nothing here allocates:
//! the working sets are fixed arrays of `SHARDS_MAX`.

use super::compiled::{CLASS_ANY, CompiledCrush, CompiledStep, SHARDS_MAX, View};
use super::rule::ChooseMode;
use super::straw2::{RANKING_MAX, Ranked, straw2};
use crate::hash::{draw_seed, item_key, reject_draw};

/// No OSD at this position: a hole in an `indep` result.
pub(crate) const ITEM_NONE: i32 = i32::MAX;
/// Not decided yet (internal to `choose_indep`).
const ITEM_UNDEF: i32 = i32::MAX - 1;
/// A reweight of 1.0: the OSD keeps everything CRUSH gives it.
const REWEIGHT_FULL: u32 = 0x10000;
/// Candidates ranked beyond the copies wanted, for rejected ones to fall back on.
const RANKING_SPARE: usize = 1;
/// The attempts `r` of choose step `i` start at `i * STEP_R_STRIDE`; every `r` a step uses
/// (positions, retries, leaf retries, nested leaves) stays below the stride.
const STEP_R_STRIDE: u32 = 1 << 20;
const _: () = assert!(
    (super::rule::RULE_STEPS_MAX as u64) * (STEP_R_STRIDE as u64) < u32::MAX as u64
        && 3 * (SHARDS_MAX as u64) * (super::rule::CHOOSE_TRIES_MAX as u64) < STEP_R_STRIDE as u64
);

/// Runs `steps` for input `x`, producing up to `result_max` OSDs into `result`; returns how
/// many. `reweights[osd]` is the OSD's reweight in 16.16 (0 = out; missing = out).
/// `indep` groups leave `ITEM_NONE` holes; `firstn` groups are compact and may be short.
pub(crate) fn do_rule(
    crush: &CompiledCrush,
    steps: &[CompiledStep],
    x: u32,
    result_max: usize,
    reweights: &[u32],
    result: &mut [i32; SHARDS_MAX],
) -> usize {
    assert!(result_max <= SHARDS_MAX, "result_max {result_max} above {SHARDS_MAX}");
    let mut mapper = Mapper { crush, reweights, x, class: CLASS_ANY, step_r: 0 };
    let mut working = [0i32; SHARDS_MAX];
    let mut output = [0i32; SHARDS_MAX];
    let mut leaves = [0i32; SHARDS_MAX];
    let mut working_len = 0;
    let mut result_len = 0;
    let mut choose_tries = crush.choose_total_tries;
    let mut leaf_tries = 1;
    // Each choose step draws from its own range of attempts, so two groups of one rule (say
    // an SSD copy and HDD copies over the same hosts) do not pick the same hosts first.
    let mut choose_index = 0;
    // How the last choose step picked: emitting an OSD twice leaves a hole (indep) or is
    // skipped (firstn), so no PG ever holds one OSD twice.
    let mut last_mode = ChooseMode::Firstn;

    for step in steps {
        match *step {
            CompiledStep::Take { bucket, class } => {
                working[0] = -1 - bucket as i32;
                working_len = 1;
                mapper.class = class;
            }
            CompiledStep::SetChooseTries(n) => choose_tries = n,
            CompiledStep::SetChooseleafTries(n) => leaf_tries = n,
            CompiledStep::Choose { mode, count, type_id, leaf } => {
                mapper.step_r = choose_index * STEP_R_STRIDE;
                last_mode = mode;
                let numrep =
                    if count > 0 { count as i64 } else { result_max as i64 + i64::from(count) };
                let step = Step { mode, numrep, type_id, leaf, tries: (choose_tries, leaf_tries) };
                let output_len = mapper.choose(
                    &step,
                    &working[..working_len],
                    result_max,
                    &mut output,
                    &mut leaves,
                );
                if leaf {
                    output[..output_len].copy_from_slice(&leaves[..output_len]);
                }
                std::mem::swap(&mut working, &mut output);
                working_len = output_len;
                choose_index += 1;
            }
            CompiledStep::Emit => {
                result_len =
                    emit(&working[..working_len], last_mode, result, result_len, result_max);
                working_len = 0;
            }
        }
    }
    debug_assert!(result[..result_len].iter().all(|&i| i >= 0));
    result_len
}

/// A choose step as `do_rule` runs it: how many to pick under each parent (`numrep`,
/// the rule's count resolved against the result size), of which type, whether down to a
/// leaf, and the tries (choose, chooseleaf).
struct Step {
    mode: ChooseMode,
    numrep: i64,
    type_id: u16,
    leaf: bool,
    tries: (u32, u32),
}

/// Appends the chosen `working` items to `result` (of `result_len` so far), up to
/// `result_max`; returns the new length. An OSD emitted twice leaves a hole (indep) or is
/// skipped (firstn), so no PG ever holds one OSD twice.
#[inline]
fn emit(
    working: &[i32],
    last_mode: ChooseMode,
    result: &mut [i32; SHARDS_MAX],
    mut result_len: usize,
    result_max: usize,
) -> usize {
    for &item in working {
        let repeated = item != ITEM_NONE && result[..result_len].contains(&item);
        let item = match (repeated, last_mode) {
            (false, _) => item,
            (true, ChooseMode::Indep) => ITEM_NONE,
            (true, ChooseMode::Firstn) => continue,
        };
        if result_len < result_max {
            result[result_len] = item;
            result_len += 1;
        }
    }
    result_len
}

struct Mapper<'a> {
    crush: &'a CompiledCrush,
    reweights: &'a [u32],
    x: u32,
    class: usize,
    /// The first attempt number of the current choose step.
    step_r: u32,
}

impl Mapper<'_> {
    /// One choose step over the working set: up to `result_max` items into `output` (and,
    /// for a leaf step, the leaves under them into `leaves`); returns how many.
    #[inline]
    fn choose(
        &self,
        step: &Step,
        working: &[i32],
        result_max: usize,
        output: &mut [i32; SHARDS_MAX],
        leaves: &mut [i32; SHARDS_MAX],
    ) -> usize {
        let (choose_tries, leaf_tries) = step.tries;
        let mut output_len = 0;
        for &parent in working {
            if step.numrep <= 0 || output_len >= result_max {
                continue;
            }
            let numrep = step.numrep as usize;
            let n = numrep.min(result_max - output_len);
            let leaf_out = if step.leaf { Some(&mut leaves[output_len..]) } else { None };
            match step.mode {
                ChooseMode::Firstn if parent < 0 => {
                    output_len += self.choose_firstn(
                        parent,
                        n,
                        step.type_id,
                        &mut output[output_len..],
                        choose_tries,
                        leaf_tries,
                        leaf_out,
                    );
                }
                ChooseMode::Firstn => {}
                ChooseMode::Indep => {
                    if parent < 0 {
                        self.choose_indep(
                            parent,
                            n,
                            numrep,
                            step.type_id,
                            &mut output[output_len..],
                            0,
                            choose_tries,
                            leaf_tries,
                            leaf_out,
                            self.step_r,
                        );
                    } else {
                        // A hole from an earlier step keeps its positions as holes, so the
                        // positions after it do not shift.
                        output[output_len..output_len + n].fill(ITEM_NONE);
                        leaves[output_len..output_len + n].fill(ITEM_NONE);
                    }
                    output_len += n;
                }
            }
        }
        output_len
    }

    /// The type level of a compiled item (OSDs are 0).
    fn item_type(&self, item: i32) -> u16 {
        if item >= 0 { 0 } else { self.crush.buckets[(-1 - item) as usize].type_id }
    }

    /// straw2 in `bucket` (a compiled bucket reference) for attempt `r`; `None` when the
    /// bucket has no weight in the current class.
    fn choose_in(&self, bucket: i32, r: u32) -> Option<i32> {
        let view = &self.crush.buckets[(-1 - bucket) as usize].views[self.class];
        if view.children.is_empty() {
            return None;
        }
        Some(view.children[straw2(view, self.x, r)])
    }

    /// Walks down from `bucket` with attempt `r` until an item of `target_type`. `None` when
    /// the walk hits an empty bucket or an OSD above the target type.
    fn descend(&self, mut bucket: i32, target_type: u16, r: u32) -> Option<i32> {
        loop {
            let item = self.choose_in(bucket, r)?;
            if self.item_type(item) == target_type {
                return Some(item);
            }
            if item >= 0 {
                return None;
            }
            bucket = item;
        }
    }

    /// An OSD whose reweight rejects input `x`.
    fn is_out(&self, osd: i32) -> bool {
        let reweight = self.reweights.get(osd as usize).copied().unwrap_or(0);
        if reweight >= REWEIGHT_FULL {
            false
        } else if reweight == 0 {
            true
        } else {
            reject_draw(self.x, item_key(osd)) >= reweight
        }
    }

    /// The descendants of `bucket` of `type_id` in the current class.
    fn flat_view(&self, bucket: i32, type_id: u16) -> Option<&View> {
        self.crush.buckets[(-1 - bucket) as usize].flat_view(self.class, type_id)
    }

    /// An OSD under `bucket`, by straw2 over all its OSDs, redrawn up to `tries` times while
    /// the reweight rejects it. The draw does not depend on the bucket's position in the
    /// set, so a bucket that moves up or down the ranking keeps its OSD.
    fn choose_leaf(&self, bucket: i32, tries: u32) -> Option<i32> {
        let view = self.flat_view(bucket, 0)?;
        (0..tries)
            .map(|t| view.children[straw2(view, self.x, self.step_r + t)])
            .find(|&osd| !self.is_out(osd))
    }

    /// Whether a ranked `item` can be taken. With `leaf`, an OSD under it must be found
    /// that its reweight keeps; an OSD item must be kept by its own reweight. Returns the
    /// leaf (or the item itself when not descending).
    fn accept(&self, item: i32, leaf: bool, leaf_tries: u32) -> Option<i32> {
        if leaf && item < 0 {
            self.choose_leaf(item, leaf_tries)
        } else if item >= 0 && self.is_out(item) {
            None
        } else {
            Some(item)
        }
    }

    /// Writes to `out` the `want` best-ranked items of `target_type` under `bucket` that
    /// `accept` takes (with `leaf_out`, their leaves alongside); returns how many. Gives up
    /// after `tries` rejections or when the items run out.
    #[allow(clippy::too_many_arguments)]
    fn choose_firstn(
        &self,
        bucket: i32,
        want: usize,
        target_type: u16,
        out: &mut [i32],
        tries: u32,
        leaf_tries: u32,
        mut leaf_out: Option<&mut [i32]>,
    ) -> usize {
        let Some(view) = self.flat_view(bucket, target_type) else { return 0 };
        let seed = draw_seed(self.x, self.step_r);
        let mut ranked = Ranked::new(view, seed, (want + RANKING_SPARE).min(RANKING_MAX));
        let mut chosen = 0;
        let mut rejected = 0;
        while chosen < want && rejected < tries {
            let Some(index) = ranked.next() else { break };
            let item = view.children[index];
            match self.accept(item, leaf_out.is_some(), leaf_tries) {
                Some(leaf) => {
                    if let Some(leaves) = leaf_out.as_deref_mut() {
                        leaves[chosen] = leaf;
                    }
                    out[chosen] = item;
                    chosen += 1;
                }
                None => rejected += 1,
            }
        }
        chosen
    }

    /// Fills the positions of `out[range]` that retries left undecided with the best-ranked
    /// items not used in the range, so a satisfiable rule never leaves a hole. Bounded by
    /// `tries` rejections.
    #[allow(clippy::too_many_arguments)]
    fn fill_holes(
        &self,
        bucket: i32,
        target_type: u16,
        out: &mut [i32],
        range: std::ops::Range<usize>,
        seed_r: u32,
        tries: u32,
        leaf_tries: u32,
        mut leaf_out: Option<&mut [i32]>,
    ) {
        let Some(view) = self.flat_view(bucket, target_type) else {
            return;
        };
        let holes = out[range.clone()].iter().filter(|&&i| i == ITEM_UNDEF).count();
        let mut ranked =
            Ranked::new(view, draw_seed(self.x, seed_r), (holes + range.len()).min(RANKING_MAX));
        let mut rejected = 0;
        for position in range.clone() {
            if out[position] != ITEM_UNDEF {
                continue;
            }
            while rejected < tries {
                let Some(index) = ranked.next() else { return };
                let item = view.children[index];
                if out[range.clone()].contains(&item) {
                    continue;
                }
                match self.accept(item, leaf_out.is_some(), leaf_tries) {
                    Some(leaf) => {
                        if let Some(leaves) = leaf_out.as_deref_mut() {
                            leaves[position] = leaf;
                        }
                        out[position] = item;
                        break;
                    }
                    None => rejected += 1,
                }
            }
        }
    }

    /// Fills positions `outpos..outpos + left` of `out` with distinct items of `target_type`
    /// under `bucket`, each position retried on its own; unfilled positions become
    /// `ITEM_NONE`. With `leaf_out`, also one OSD under each at the same position.
    #[allow(clippy::too_many_arguments)]
    fn choose_indep(
        &self,
        bucket: i32,
        left: usize,
        numrep: usize,
        target_type: u16,
        out: &mut [i32],
        outpos: usize,
        tries: u32,
        leaf_tries: u32,
        mut leaf_out: Option<&mut [i32]>,
        parent_r: u32,
    ) {
        let endpos = outpos + left;
        let mut left = left;
        out[outpos..endpos].fill(ITEM_UNDEF);
        if let Some(leaves) = leaf_out.as_deref_mut() {
            leaves[outpos..endpos].fill(ITEM_UNDEF);
        }
        if self.flat_view(bucket, target_type).is_none() {
            // Nothing of that type under the bucket has an OSD that is in: retrying could
            // only fail, so every position is a hole at once.
            left = 0;
        }
        let mut ftotal = 0;
        while left > 0 && ftotal < tries {
            for rep in outpos..endpos {
                if out[rep] != ITEM_UNDEF {
                    continue;
                }
                let r = rep as u32 + parent_r + numrep as u32 * ftotal;
                let Some(item) = self.descend(bucket, target_type, r) else {
                    continue;
                };
                if out[outpos..endpos].contains(&item) {
                    continue;
                }
                if target_type == 0 && self.is_out(item) {
                    continue;
                }
                if let Some(leaves) = leaf_out.as_deref_mut() {
                    if item < 0 {
                        self.choose_indep(item, 1, numrep, 0, leaves, rep, leaf_tries, 0, None, r);
                        if leaves[rep] == ITEM_NONE {
                            continue;
                        }
                    } else {
                        leaves[rep] = item;
                    }
                }
                out[rep] = item;
                left -= 1;
            }
            ftotal += 1;
        }
        if left > 0 {
            let seed_r = parent_r + numrep as u32 * tries;
            self.fill_holes(
                bucket,
                target_type,
                out,
                outpos..endpos,
                seed_r,
                tries,
                leaf_tries,
                leaf_out.as_deref_mut(),
            );
        }
        for slot in &mut out[outpos..endpos] {
            if *slot == ITEM_UNDEF {
                *slot = ITEM_NONE;
            }
        }
        if let Some(leaves) = leaf_out {
            // A position without an item has no leaf, whatever an attempt left there.
            for (leaf, item) in leaves[outpos..endpos].iter_mut().zip(&out[outpos..endpos]) {
                if *leaf == ITEM_UNDEF || *item == ITEM_NONE {
                    *leaf = ITEM_NONE;
                }
            }
        }
    }
}
