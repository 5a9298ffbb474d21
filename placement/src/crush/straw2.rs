//! straw2 choices over a bucket view: the single winner (`straw2`) and the ranking of the
//! best few (`rank`).
//!
//! Every item draws a straw whose length is exponential with rate equal to its weight
//! (`-log2(u) / weight` for a uniform hash draw `u`); the shortest wins. An item's straw does
//! not depend on any other item, which is what makes straw2 move only the data it must when
//! one weight changes. Lengths are compared exactly by cross-multiplying in 128 bits; equal
//! lengths go to the larger draw, and draws of distinct items never tie (the hash is a
//! bijection of the item key), so the order is total and the same on every machine.
//!
//! When all weights of a view are equal the shortest straw is simply the largest draw, so
//! the logarithm is skipped and the scan runs eight items at a time with AVX2 where the CPU
//! has it. The vector code is integer arithmetic only and is held to the scalar code by a
//! property test.

use super::compiled::View;
use crate::hash::{draw, draw_seed, neg_log2_q24};

/// The winner of one straw2 draw for input `x`, attempt `r`: an index into the view.
#[inline]
pub(crate) fn straw2(view: &View, x: u32, r: u32) -> usize {
    debug_assert!(!view.keys.is_empty());
    let seed = draw_seed(x, r);
    if view.uniform { argmax_draw(seed, &view.keys) } else { weighted_choice(seed, view) }
}

#[inline]
fn argmax_draw(seed: u32, keys: &[u32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if keys.len() >= simd::MIN_KEYS && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { simd::argmax_draw_avx2(seed, keys) };
    }
    argmax_draw_scalar(seed, keys, 1, 0, draw(seed, keys[0]))
}

/// Continues an argmax scan from index `start`, given the best so far.
#[inline]
fn argmax_draw_scalar(
    seed: u32,
    keys: &[u32],
    start: usize,
    mut best: usize,
    mut best_draw: u32,
) -> usize {
    for (i, &key) in keys.iter().enumerate().skip(start) {
        let d = draw(seed, key);
        if d > best_draw {
            best = i;
            best_draw = d;
        }
    }
    best
}

#[inline]
fn weighted_choice(seed: u32, view: &View) -> usize {
    let mut best = Best(None);
    scan_weighted(seed, view, &mut best);
    best.0.expect("a view has items").index as usize
}

/// Where a weighted scan sends the items that might enter it: the single best, or a
/// ranking.
trait Sink {
    /// The candidate an item must rank before to be worth offering; `None`: every item is.
    fn bar(&self) -> Option<Candidate>;
    fn offer(&mut self, candidate: Candidate);
}

struct Best(Option<Candidate>);

impl Sink for Best {
    fn bar(&self) -> Option<Candidate> {
        self.0
    }

    fn offer(&mut self, candidate: Candidate) {
        if self.0.is_none_or(|best| candidate.before(&best, false)) {
            self.0 = Some(candidate);
        }
    }
}

/// Offers every item of a weighted view that its length floor does not rule out.
fn scan_weighted(seed: u32, view: &View, sink: &mut impl Sink) {
    #[cfg(target_arch = "x86_64")]
    if view.keys.len() >= simd::MIN_KEYS && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { simd::scan_weighted_avx2(seed, view, sink) };
        return;
    }
    scan_weighted_scalar(seed, view, 0, sink);
}

fn scan_weighted_scalar(seed: u32, view: &View, start: usize, sink: &mut impl Sink) {
    for i in start..view.keys.len() {
        offer_weighted(view, i, draw(seed, view.keys[i]), sink);
    }
}

#[inline(always)]
fn offer_weighted(view: &View, index: usize, d: u32, sink: &mut impl Sink) {
    if sink.bar().is_some_and(|bar| bar.beats_floor(d, view.weights[index])) {
        return;
    }
    sink.offer(Candidate::weighted_from_draw(view, index, d));
}

/// `floor(log2(e) * 2^24)`.
const LOG2_E_Q24: u64 = 24_204_406;
/// Slack for the table logarithm's error (below 2^-22, i.e. 4 units of Q24).
const LENGTH_FLOOR_SLACK: u64 = 8;

/// A lower bound of `neg_log2_q24(u)` without the logarithm: `-log2(y) >= (1 - y) log2(e)`
/// for `y = (u + 1) / 2^32`, less the slack of the table logarithm. Lets the weighted scans
/// skip, exactly, the items whose straw cannot be the shortest.
#[inline(always)]
fn length_floor(u: u32) -> u64 {
    ((u64::from(!u) * LOG2_E_Q24) >> 32).saturating_sub(LENGTH_FLOOR_SLACK)
}

/// One item's straw in a ranking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub index: u32,
    draw: u32,
    /// `-log2(draw)` in Q24; unused (0) in uniform views.
    length: u64,
    weight: u64,
}

impl Candidate {
    fn uniform(index: usize, draw: u32) -> Candidate {
        Candidate { index: index as u32, draw, length: 0, weight: 0 }
    }

    fn weighted(view: &View, seed: u32, index: usize) -> Candidate {
        Candidate::weighted_from_draw(view, index, draw(seed, view.keys[index]))
    }

    #[inline(always)]
    fn weighted_from_draw(view: &View, index: usize, d: u32) -> Candidate {
        Candidate {
            index: index as u32,
            draw: d,
            length: neg_log2_q24(d),
            weight: view.weights[index],
        }
    }

    /// Whether `self` ranks strictly before any item of `weight` that drew `d`, judged by
    /// that item's length floor alone (so without computing its logarithm).
    #[inline(always)]
    fn beats_floor(&self, d: u32, weight: u64) -> bool {
        u128::from(length_floor(d)) * u128::from(self.weight)
            > u128::from(self.length) * u128::from(weight)
    }

    /// `self` has the shorter straw: smaller `length / weight`, then the larger draw.
    #[inline(always)]
    fn before(&self, other: &Candidate, uniform: bool) -> bool {
        if uniform {
            return self.draw > other.draw;
        }
        let this = u128::from(self.length) * u128::from(other.weight);
        let that = u128::from(other.length) * u128::from(self.weight);
        this < that || (this == that && self.draw > other.draw)
    }
}

/// The most candidates a ranking holds; `Ranking::next_after` continues past them.
pub(crate) const RANKING_MAX: usize = 16;

/// The best few items of a view for one seed, best first.
pub(crate) struct Ranking {
    items: [Candidate; RANKING_MAX],
    len: usize,
    capacity: usize,
    uniform: bool,
}

impl Ranking {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, rank: usize) -> Candidate {
        assert!(rank < self.len);
        self.items[rank]
    }

    /// Keeps `candidate` if it is among the best `capacity` offered so far.
    #[inline(always)]
    fn offer(&mut self, candidate: Candidate) {
        if self.len == self.capacity && !candidate.before(&self.items[self.len - 1], self.uniform) {
            return;
        }
        // Start at the first free slot, or overwrite the last when full.
        let mut at = self.len.min(self.capacity - 1);
        while at > 0 && candidate.before(&self.items[at - 1], self.uniform) {
            self.items[at] = self.items[at - 1];
            at -= 1;
        }
        self.items[at] = candidate;
        self.len = (self.len + 1).min(self.capacity);
    }

    fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// The draw a uniform candidate must beat to enter a full ranking.
    fn threshold(&self) -> Option<u32> {
        (self.len == self.capacity).then(|| self.items[self.len - 1].draw)
    }
}

/// Ranks the best `capacity` items of `view` for `seed`, best first.
pub(crate) fn rank(view: &View, seed: u32, capacity: usize) -> Ranking {
    assert!((1..=RANKING_MAX).contains(&capacity));
    let mut ranking = Ranking {
        items: [Candidate::default(); RANKING_MAX],
        len: 0,
        capacity,
        uniform: view.uniform,
    };
    if view.uniform {
        #[cfg(target_arch = "x86_64")]
        if view.keys.len() >= simd::MIN_KEYS && std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { simd::rank_uniform_avx2(seed, &view.keys, &mut ranking) };
            return ranking;
        }
        rank_uniform_scalar(seed, &view.keys, 0, &mut ranking);
    } else {
        scan_weighted(seed, view, &mut ranking);
    }
    ranking
}

impl Sink for Ranking {
    fn bar(&self) -> Option<Candidate> {
        self.is_full().then(|| self.items[self.len - 1])
    }

    fn offer(&mut self, candidate: Candidate) {
        Ranking::offer(self, candidate);
    }
}

fn rank_uniform_scalar(seed: u32, keys: &[u32], start: usize, ranking: &mut Ranking) {
    for (i, &key) in keys.iter().enumerate().skip(start) {
        ranking.offer(Candidate::uniform(i, draw(seed, key)));
    }
}

/// The best candidate ranked after `last`, for when a ranking runs out; `None` past the end.
pub(crate) fn next_after(view: &View, seed: u32, last: &Candidate) -> Option<Candidate> {
    let mut best: Option<Candidate> = None;
    for i in 0..view.keys.len() {
        let candidate = if view.uniform {
            Candidate::uniform(i, draw(seed, view.keys[i]))
        } else {
            Candidate::weighted(view, seed, i)
        };
        let after_last = last.before(&candidate, view.uniform);
        if after_last && best.is_none_or(|b| candidate.before(&b, view.uniform)) {
            best = Some(candidate);
        }
    }
    best
}

/// The items of a view in straw2 order for one seed, best first: the ranking's head, then
/// one scan per further item (callers bound how far they go).
pub(crate) struct Ranked<'a> {
    view: &'a View,
    seed: u32,
    ranking: Ranking,
    at: usize,
    last: Option<Candidate>,
}

impl<'a> Ranked<'a> {
    pub fn new(view: &'a View, seed: u32, capacity: usize) -> Ranked<'a> {
        Ranked { view, seed, ranking: rank(view, seed, capacity), at: 0, last: None }
    }
}

impl Iterator for Ranked<'_> {
    /// An index into the view.
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let candidate = if self.at < self.ranking.len() {
            self.ranking.get(self.at)
        } else {
            next_after(self.view, self.seed, self.last.as_ref()?)?
        };
        self.at += 1;
        self.last = Some(candidate);
        Some(candidate.index as usize)
    }
}

/// The uniform scans eight items at a time.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Candidate, Ranking, argmax_draw_scalar};

    /// Below this many items the scalar scans are as fast.
    pub(super) const MIN_KEYS: usize = 16;
    const LANES: usize = 8;

    /// Per-lane running maximum of the draws and the index that drew it.
    #[derive(Clone, Copy)]
    struct Best {
        draw: __m256i,
        index: __m256i,
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn argmax_draw_avx2(seed: u32, keys: &[u32]) -> usize {
        debug_assert!(keys.len() >= LANES);
        let chunks = keys.len() / LANES;
        let seed_v = _mm256_set1_epi32(seed as i32);
        let step = _mm256_set1_epi32(LANES as i32);
        // Lane i starts as "item i drew 0": a real draw of 0 keeps that index, which is right.
        let first = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut a = Best { draw: _mm256_setzero_si256(), index: first };
        // Two independent accumulators hide the multiply latency; `b` covers odd chunks.
        let mut b = a;
        let mut index = first;
        let mut pairs = keys.chunks_exact(2 * LANES);
        for pair in &mut pairs {
            // SAFETY: `pair` is exactly 16 u32s; the loads are unaligned.
            let (k0, k1) = unsafe {
                (
                    _mm256_loadu_si256(pair.as_ptr().cast()),
                    _mm256_loadu_si256(pair.as_ptr().add(LANES).cast()),
                )
            };
            a = update(a, draws(seed_v, k0), index);
            index = _mm256_add_epi32(index, step);
            b = update(b, draws(seed_v, k1), index);
            index = _mm256_add_epi32(index, step);
        }
        if pairs.remainder().len() >= LANES {
            // SAFETY: at least 8 u32s remain.
            let k = unsafe { _mm256_loadu_si256(pairs.remainder().as_ptr().cast()) };
            a = update(a, draws(seed_v, k), index);
        }
        // Merge b into a lane by lane: the larger draw, or on a tie the lower index.
        let b_greater = greater_u32(b.draw, a.draw);
        let tie_lower = _mm256_and_si256(
            _mm256_cmpeq_epi32(b.draw, a.draw),
            _mm256_cmpgt_epi32(a.index, b.index),
        );
        let take_b = _mm256_or_si256(b_greater, tie_lower);
        let best = _mm256_blendv_epi8(a.draw, b.draw, take_b);
        let best_index = _mm256_blendv_epi8(a.index, b.index, take_b);
        let mut draws = [0u32; LANES];
        let mut indexes = [0u32; LANES];
        // SAFETY: both arrays hold exactly one 256-bit vector.
        unsafe {
            _mm256_storeu_si256(draws.as_mut_ptr().cast(), best);
            _mm256_storeu_si256(indexes.as_mut_ptr().cast(), best_index);
        }
        // The largest draw across lanes; on a tie the lowest index, as the scalar scan keeps.
        let mut winner = 0;
        for lane in 1..LANES {
            let better = draws[lane] > draws[winner]
                || (draws[lane] == draws[winner] && indexes[lane] < indexes[winner]);
            if better {
                winner = lane;
            }
        }
        argmax_draw_scalar(seed, keys, chunks * LANES, indexes[winner] as usize, draws[winner])
    }

    /// Fills `ranking` from `keys`.
    ///
    /// A full scan would offer each item that beats the ranking's current last entry, and
    /// early on that is often, with a hard-to-predict branch each time. So the scan first
    /// offers only draws above a floor that about `capacity + 6` of the `n` draws
    /// exceed. If the ranking fills, every item below the floor ranks below all of it, so
    /// the result is exact; if it does not (rarely), the scan runs again without the floor.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rank_uniform_avx2(seed: u32, keys: &[u32], ranking: &mut Ranking) {
        let expected_above = (ranking.capacity + 6) as u64;
        let n = keys.len() as u64;
        if 2 * expected_above < n {
            let floor = (u64::from(u32::MAX) - (expected_above << 32) / n) as u32;
            scan_above(seed, keys, 0, floor, ranking);
            if ranking.is_full() {
                return;
            }
            ranking.clear();
        }
        // Without a floor: the first items fill the ranking whatever they drew (a draw of 0
        // included), then its last entry is the bar.
        let start = ranking.capacity.min(keys.len());
        super::rank_uniform_scalar(seed, &keys[..start], 0, ranking);
        scan_above(seed, keys, start, 0, ranking);
    }

    /// Offers every item from `start` on whose draw is above `floor` and would enter the
    /// ranking. Works on groups of four blocks with one branch per group: hits are rare, so
    /// the branch is almost always predicted.
    #[target_feature(enable = "avx2")]
    fn scan_above(seed: u32, keys: &[u32], start: usize, floor: u32, ranking: &mut Ranking) {
        const BLOCKS: usize = 4;
        let seed_v = _mm256_set1_epi32(seed as i32);
        let bar_of = |ranking: &Ranking| ranking.threshold().map_or(floor, |t| t.max(floor));
        let mut bar = bar_of(ranking);
        let mut bar_v = _mm256_set1_epi32(bar as i32);
        let mut groups = keys[start..].chunks_exact(BLOCKS * LANES);
        let mut base = start;
        for group in &mut groups {
            let mut d = [_mm256_setzero_si256(); BLOCKS];
            let mut masks = [0u32; BLOCKS];
            for i in 0..BLOCKS {
                // SAFETY: `group` is exactly 32 u32s; block i is in bounds.
                let k = unsafe { _mm256_loadu_si256(group.as_ptr().add(i * LANES).cast()) };
                d[i] = draws(seed_v, k);
                masks[i] = _mm256_movemask_ps(_mm256_castsi256_ps(greater_u32(d[i], bar_v))) as u32;
            }
            if masks.iter().any(|&m| m != 0) {
                for i in 0..BLOCKS {
                    if masks[i] == 0 {
                        continue;
                    }
                    let mut lanes = [0u32; LANES];
                    // SAFETY: the array holds exactly one 256-bit vector.
                    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), d[i]) };
                    let mut mask = masks[i];
                    while mask != 0 {
                        let lane = mask.trailing_zeros() as usize;
                        if lanes[lane] > bar {
                            ranking.offer(Candidate::uniform(base + i * LANES + lane, lanes[lane]));
                            bar = bar_of(ranking);
                        }
                        mask &= mask - 1;
                    }
                }
                bar_v = _mm256_set1_epi32(bar as i32);
            }
            base += BLOCKS * LANES;
        }
        for (i, &key) in groups.remainder().iter().enumerate() {
            let d = crate::hash::draw(seed, key);
            if d > bar {
                ranking.offer(Candidate::uniform(base + i, d));
                bar = bar_of(ranking);
            }
        }
    }

    /// `2 * floor(log2(e) * 2^24) / 2^32`, shrunk by the prefilter's margin.
    const FLOOR_SCALE: f32 =
        (2.0 * super::LOG2_E_Q24 as f64 / 4_294_967_296.0 * (1.0 - MARGIN)) as f32;
    /// Covers the integer floor's slack (9) with room to spare.
    const FLOOR_SLACK: f32 = 16.0;
    /// Relative margin of the prefilter: f32 arithmetic here errs by under 1e-6.
    const MARGIN: f64 = 1e-5;

    /// The weighted scan, eight items at a time. A float prefilter decides which items
    /// the exact integer test must look at: an item is skipped only when
    /// `floor_f > weight * len_bar * (1 + margin) / weight_bar`, where `floor_f` is below the
    /// integer length floor; that implies the integer test would reject it too, so the
    /// result is the scalar scan's, bit for bit, whatever the float rounding.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_weighted_avx2(
        seed: u32,
        view: &super::View,
        sink: &mut impl super::Sink,
    ) {
        let seed_v = _mm256_set1_epi32(seed as i32);
        let all_ones = _mm256_set1_epi32(-1);
        let scale = _mm256_set1_ps(FLOOR_SCALE);
        let slack = _mm256_set1_ps(FLOOR_SLACK);
        let mut t = threshold(sink.bar());
        let mut base = 0;
        for (keys, weights) in
            view.keys.chunks_exact(LANES).zip(view.weights_f32.chunks_exact(LANES))
        {
            // SAFETY: both chunks are exactly 8 lanes of 32 bits; the loads are unaligned.
            let (k, w) = unsafe {
                (_mm256_loadu_si256(keys.as_ptr().cast()), _mm256_loadu_ps(weights.as_ptr()))
            };
            let d = draws(seed_v, k);
            // (!d >> 1) fits a signed lane; the halving is part of the under-estimate.
            let halved = _mm256_srli_epi32::<1>(_mm256_xor_si256(d, all_ones));
            let floor = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(halved), scale), slack);
            let maybe = _mm256_cmp_ps::<_CMP_LE_OQ>(floor, _mm256_mul_ps(w, t));
            let mut mask = _mm256_movemask_ps(maybe) as u32;
            if mask != 0 {
                let mut lanes = [0u32; LANES];
                // SAFETY: the array holds exactly one 256-bit vector.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), d) };
                while mask != 0 {
                    let lane = mask.trailing_zeros() as usize;
                    super::offer_weighted(view, base + lane, lanes[lane], sink);
                    mask &= mask - 1;
                }
                t = threshold(sink.bar());
            }
            base += LANES;
        }
        super::scan_weighted_scalar(seed, view, base, sink);
    }

    /// `len_bar * (1 + margin) / weight_bar` in every lane; infinity (offer everything)
    /// without a bar.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn threshold(bar: Option<Candidate>) -> __m256 {
        let t = bar.map_or(f32::INFINITY, |bar| {
            (bar.length as f64 * (1.0 + MARGIN) / bar.weight as f64) as f32
        });
        _mm256_set1_ps(t)
    }

    /// mix32(seed ^ key), lane-wise (see `crate::hash::mix32`).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn draws(seed: __m256i, keys: __m256i) -> __m256i {
        let mut h = _mm256_xor_si256(keys, seed);
        h = _mm256_xor_si256(h, _mm256_srli_epi32::<16>(h));
        h = _mm256_mullo_epi32(h, _mm256_set1_epi32(0x7feb_352d_u32 as i32));
        h = _mm256_xor_si256(h, _mm256_srli_epi32::<15>(h));
        h = _mm256_mullo_epi32(h, _mm256_set1_epi32(0x846c_a68b_u32 as i32));
        _mm256_xor_si256(h, _mm256_srli_epi32::<16>(h))
    }

    /// Lane-wise unsigned `x > y`: x is the max and differs from y.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn greater_u32(x: __m256i, y: __m256i) -> __m256i {
        let max = _mm256_max_epu32(x, y);
        _mm256_andnot_si256(_mm256_cmpeq_epi32(x, y), _mm256_cmpeq_epi32(max, x))
    }

    /// Keeps, per lane, the earlier best unless the new draw is strictly larger.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn update(best: Best, draw: __m256i, index: __m256i) -> Best {
        let greater = greater_u32(draw, best.draw);
        Best {
            draw: _mm256_max_epu32(draw, best.draw),
            index: _mm256_blendv_epi8(best.index, index, greater),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::item_key;

    fn view(weights: &[u64]) -> View {
        View {
            keys: (0..weights.len() as i32).map(item_key).collect(),
            weights: weights.to_vec(),
            weights_f32: weights.iter().map(|&w| w as f32).collect(),
            children: (0..weights.len() as i32).collect(),
            uniform: weights.windows(2).all(|w| w[0] == w[1]),
        }
    }

    /// Every item, best first, by sorting: the oracle for `rank` and `next_after`.
    fn full_order(view: &View, seed: u32) -> Vec<u32> {
        let mut all: Vec<Candidate> = (0..view.keys.len())
            .map(|i| {
                if view.uniform {
                    Candidate::uniform(i, draw(seed, view.keys[i]))
                } else {
                    Candidate::weighted(view, seed, i)
                }
            })
            .collect();
        all.sort_by(|a, b| {
            if a.before(b, view.uniform) {
                std::cmp::Ordering::Less
            } else if b.before(a, view.uniform) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        all.iter().map(|c| c.index).collect()
    }

    use proptest::strategy::Strategy;

    #[test]
    fn length_floor_is_below_the_length() {
        let check = |u: u32| assert!(length_floor(u) <= neg_log2_q24(u), "u={u:#x}");
        (0..=u32::MAX).step_by(4099).for_each(check);
        (0..70_000).chain(u32::MAX - 70_000..=u32::MAX).for_each(check);
        // And close to it where winners are: within 1% for the top 1% of draws.
        let u = u32::MAX - (u32::MAX / 100);
        assert!(length_floor(u) as f64 >= 0.99 * neg_log2_q24(u) as f64);
    }

    #[test]
    fn uniform_shortcut_agrees_with_the_weighted_path() {
        let v = view(&[0x10000; 37]);
        for x in 0..20_000 {
            let seed = draw_seed(x, x % 7);
            assert_eq!(argmax_draw(seed, &v.keys), weighted_choice(seed, &v), "x={x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn simd_scan_agrees_with_scalar(
            ids in proptest::collection::vec(proptest::num::i32::ANY, 1..300),
            seed: u32,
        ) {
            let keys: Vec<u32> = ids.iter().map(|&id| item_key(id)).collect();
            let scalar = argmax_draw_scalar(seed, &keys, 1, 0, draw(seed, keys[0]));
            proptest::prop_assert_eq!(argmax_draw(seed, &keys), scalar);
        }

        #[test]
        fn ranking_is_the_head_of_the_full_order(
            weights in proptest::collection::vec(1u64..5 << 16, 1..200),
            uniform: bool,
            seed: u32,
            capacity in 1usize..=RANKING_MAX,
        ) {
            let weights = if uniform { vec![1 << 16; weights.len()] } else { weights };
            let v = view(&weights);
            let order = full_order(&v, seed);
            let ranking = rank(&v, seed, capacity);
            let ranked: Vec<u32> = (0..ranking.len()).map(|r| ranking.get(r).index).collect();
            proptest::prop_assert_eq!(&ranked[..], &order[..capacity.min(order.len())]);
            // Continuing past the ranking walks the rest of the order.
            let mut last = ranking.get(ranking.len() - 1);
            for &want in order.iter().skip(ranking.len()).take(5) {
                let next = next_after(&v, seed, &last).expect("more items");
                proptest::prop_assert_eq!(next.index, want);
                last = next;
            }
            if order.len() == ranking.len() {
                proptest::prop_assert!(next_after(&v, seed, &last).is_none());
            }
            proptest::prop_assert_eq!(order[0] as usize, straw2_index(&v, seed));
        }
    }

    /// The weighted choice without the floor, to hold the pruned scan to.
    fn weighted_choice_unpruned(seed: u32, view: &View) -> usize {
        let mut best = Candidate::weighted(view, seed, 0);
        for i in 1..view.keys.len() {
            let candidate = Candidate::weighted(view, seed, i);
            if candidate.before(&best, false) {
                best = candidate;
            }
        }
        best.index as usize
    }

    proptest::proptest! {
        #[test]
        fn pruned_weighted_choice_is_exact(
            weights in proptest::prop_oneof![
                proptest::collection::vec(1u64..1 << 40, 1..300),
                // Close weights, where the floor rules out the fewest items.
                proptest::collection::vec((8u64..=12).prop_map(|w| w << 16), 1..300),
                proptest::collection::vec(1u64..=3, 1..300),
            ],
            seed: u32,
        ) {
            let v = view(&weights);
            proptest::prop_assert_eq!(weighted_choice(seed, &v), weighted_choice_unpruned(seed, &v));
        }
    }

    fn straw2_index(v: &View, seed: u32) -> usize {
        if v.uniform { argmax_draw(seed, &v.keys) } else { weighted_choice(seed, v) }
    }

    #[test]
    fn straw2_wins_in_proportion_to_weight() {
        let weights = [1u64 << 16, 2 << 16, 3 << 16, 4 << 16];
        let v = view(&weights);
        let mut wins = [0u32; 4];
        let trials = 400_000;
        for x in 0..trials {
            wins[straw2(&v, x, 0)] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let expected = f64::from(trials) * (w as f64) / (10u64 << 16) as f64;
            let got = f64::from(wins[i]);
            assert!((got - expected).abs() / expected < 0.01, "item {i}: {got} vs {expected}");
        }
    }

    #[test]
    fn changing_one_weight_moves_only_to_or_from_that_item() {
        let before = view(&[1 << 16; 10]);
        let mut grown = [1u64 << 16; 10];
        grown[3] = 2 << 16;
        let after = view(&grown);
        for x in 0..50_000 {
            let (a, b) = (straw2(&before, x, 0), straw2(&after, x, 0));
            if a != b {
                assert_eq!(b, 3, "x={x}: moved from {a} to {b}, not to the grown item");
            }
        }
    }
}
