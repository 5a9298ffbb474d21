//! The stripe planner: where an erasure-coded object's bytes live among its shards, and
//! what a read, a write or a truncate has to read, encode and write. Sans I/O: plans in,
//! bytes in, bytes out.
//!
//! An object is cut into stripes of k chunks (`chunk` bytes each, Ceph's stripe_unit);
//! chunk i of every stripe goes to data shard i, one after the other, and parity shard j
//! holds parity chunk j of every stripe. Every shard of an object of `size` logical bytes
//! is `shard_len(size)` bytes long: the last stripe is padded with zeros, so it encodes
//! like any other and an object grows without touching parity (zeros encode to zeros).
//!
//! A read that every shard holding its bytes can serve reads just those bytes (a 4 KiB
//! read touches one shard). With one of them missing, it reads the whole stripes from
//! any k shards and decodes. A write rewrites the stripes it touches: the bytes of those
//! stripes it does not cover are read first (read-modify-write), and the stripes are
//! encoded in one call.

use std::ops::Range;

use crate::EcError;
use crate::codec::{Codec, SHARD_ALIGN};

/// Ceph's default stripe unit for erasure-coded pools.
pub const DEFAULT_CHUNK: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    codec: Codec,
    chunk: u64,
}

/// What a read asks of each shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    /// Shard index and the range of it to read, one entry per shard read.
    pub reads: Vec<(usize, Range<u64>)>,
    /// Whether the shards read are decoded (a shard holding wanted bytes is missing).
    pub decode: bool,
    /// The logical bytes the read returns (clipped to the object's size).
    pub range: Range<u64>,
}

/// What a write (or truncate) rewrites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WritePlan {
    /// The stripes rewritten, written to every shard at `stripes.start * chunk`.
    pub stripes: Range<u64>,
    /// Logical bytes to read first: the old contents of those stripes the write does not
    /// cover (at most two ranges, before and after it).
    pub read: Vec<Range<u64>>,
    /// The object's size after the write, and each shard's length then.
    pub new_size: u64,
    pub shard_len: u64,
}

impl Layout {
    pub fn new(k: usize, m: usize, chunk: u64) -> Result<Layout, EcError> {
        let codec = Codec::new(k, m)?;
        if chunk == 0 || !chunk.is_multiple_of(SHARD_ALIGN as u64) || chunk > 1 << 20 {
            return Err(EcError::Profile(format!(
                "stripe unit {chunk}: a multiple of {SHARD_ALIGN} bytes up to 1 MiB"
            )));
        }
        Ok(Layout { codec, chunk })
    }

    pub fn k(&self) -> usize {
        self.codec.k()
    }

    pub fn m(&self) -> usize {
        self.codec.m()
    }

    pub fn shards(&self) -> usize {
        self.k() + self.m()
    }

    pub fn chunk(&self) -> u64 {
        self.chunk
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Logical bytes per stripe.
    pub fn width(&self) -> u64 {
        self.k() as u64 * self.chunk
    }

    /// How long every shard of an object of `size` bytes is.
    pub fn shard_len(&self, size: u64) -> u64 {
        size.div_ceil(self.width()) * self.chunk
    }

    /// The stripes a logical range touches.
    fn stripes(&self, range: &Range<u64>) -> Range<u64> {
        if range.is_empty() {
            return range.start / self.width()..range.start / self.width();
        }
        range.start / self.width()..range.end.div_ceil(self.width())
    }

    /// Where a logical offset lives: (data shard, offset in that shard).
    fn locate(&self, offset: u64) -> (usize, u64) {
        let (stripe, within) = (offset / self.width(), offset % self.width());
        ((within / self.chunk) as usize, stripe * self.chunk + within % self.chunk)
    }

    /// The pieces of a logical range, each within one chunk: (logical range, shard,
    /// offset in the shard).
    fn pieces(&self, range: Range<u64>) -> impl Iterator<Item = (Range<u64>, usize, u64)> + '_ {
        let mut at = range.start;
        std::iter::from_fn(move || {
            if at >= range.end {
                return None;
            }
            let end = ((at / self.chunk + 1) * self.chunk).min(range.end);
            let (shard, shard_offset) = self.locate(at);
            let piece = (at..end, shard, shard_offset);
            at = end;
            Some(piece)
        })
    }

    /// Plans reading `len` bytes at `offset` of an object of `size` bytes from the shards
    /// `available` says can be read (k + m flags).
    pub fn plan_read(
        &self,
        size: u64,
        offset: u64,
        len: u64,
        available: &[bool],
    ) -> Result<ReadPlan, EcError> {
        if available.len() != self.shards() {
            return Err(EcError::ShardCount { got: available.len(), want: self.shards() });
        }
        let range = offset.min(size)..offset.saturating_add(len).min(size);
        let mut wanted: Vec<Option<Range<u64>>> = vec![None; self.k()];
        for (logical, shard, at) in self.pieces(range.clone()) {
            let end = at + (logical.end - logical.start);
            let r = wanted[shard].get_or_insert(at..end);
            r.start = r.start.min(at);
            r.end = r.end.max(end);
        }
        let direct = wanted.iter().enumerate().all(|(i, w)| w.is_none() || available[i]);
        if direct {
            let reads =
                wanted.into_iter().enumerate().filter_map(|(i, w)| w.map(|w| (i, w))).collect();
            return Ok(ReadPlan { reads, decode: false, range });
        }
        let chosen: Vec<usize> =
            (0..self.shards()).filter(|&i| available[i]).take(self.k()).collect();
        if chosen.len() < self.k() {
            return Err(EcError::TooFewShards { have: chosen.len(), need: self.k() });
        }
        let stripes = self.stripes(&range);
        let shard_range = stripes.start * self.chunk..stripes.end * self.chunk;
        let reads = chosen.into_iter().map(|i| (i, shard_range.clone())).collect();
        Ok(ReadPlan { reads, decode: true, range })
    }

    /// The logical bytes of a read, from what each shard returned for the plan's reads
    /// (`got[i]` for shard i; shards not read are `None`).
    pub fn assemble(&self, plan: &ReadPlan, got: Vec<Option<Vec<u8>>>) -> Result<Vec<u8>, EcError> {
        if got.len() != self.shards() {
            return Err(EcError::ShardCount { got: got.len(), want: self.shards() });
        }
        let mut got = got;
        for (shard, range) in &plan.reads {
            let len = got[*shard].as_ref().map_or(0, Vec::len) as u64;
            if len != range.end - range.start {
                return Err(EcError::Mismatch {
                    len: (range.end - range.start) as usize,
                    other: len as usize,
                });
            }
        }
        // Where each shard's buffer begins in shard space. A decode reads the same whole
        // stripes from every shard it reads, and rebuilds the others over that range.
        let mut starts = vec![0u64; self.shards()];
        if plan.decode {
            let start = plan.reads.first().map_or(0, |(_, r)| r.start);
            starts.fill(start);
            let mut shards: Vec<Option<Vec<u8>>> = vec![None; self.shards()];
            for (shard, _) in &plan.reads {
                shards[*shard] = got[*shard].take();
            }
            if shards.iter().flatten().next().is_some_and(|s| !s.is_empty()) {
                self.codec.reconstruct(&mut shards)?;
            }
            got = shards;
        } else {
            for (shard, range) in &plan.reads {
                starts[*shard] = range.start;
            }
        }
        let mut out = Vec::with_capacity((plan.range.end - plan.range.start) as usize);
        for (logical, shard, at) in self.pieces(plan.range.clone()) {
            let from = (at - starts[shard]) as usize;
            let data = got[shard].as_ref().expect("read or reconstructed");
            out.extend_from_slice(&data[from..from + (logical.end - logical.start) as usize]);
        }
        Ok(out)
    }

    /// Plans writing `len` bytes at `offset` into an object of `old_size` bytes.
    pub fn plan_write(&self, old_size: u64, offset: u64, len: u64) -> Result<WritePlan, EcError> {
        let end = offset.checked_add(len).ok_or(EcError::Range)?;
        let new_size = old_size.max(end);
        let write = offset..end;
        let stripes = self.stripes(&write);
        Ok(WritePlan {
            read: self.uncovered(&stripes, &write, old_size),
            stripes,
            new_size,
            shard_len: self.shard_len(new_size),
        })
    }

    /// Plans truncating an object of `old_size` bytes to `new_size`. Growing only sets
    /// the size (the padding is zeros already); shrinking into a stripe rewrites that
    /// stripe with zeros past the new end.
    pub fn plan_truncate(&self, old_size: u64, new_size: u64) -> WritePlan {
        let shard_len = self.shard_len(new_size);
        if new_size >= old_size || new_size.is_multiple_of(self.width()) {
            let at = new_size / self.width();
            return WritePlan { stripes: at..at, read: Vec::new(), new_size, shard_len };
        }
        let stripe = new_size / self.width();
        let start = stripe * self.width();
        let read = std::iter::once(start..new_size).collect();
        WritePlan { stripes: stripe..stripe + 1, read, new_size, shard_len }
    }

    /// The bytes of `stripes` below `old_size` that `write` does not cover.
    fn uncovered(
        &self,
        stripes: &Range<u64>,
        write: &Range<u64>,
        old_size: u64,
    ) -> Vec<Range<u64>> {
        let all = stripes.start * self.width()..stripes.end * self.width();
        [all.start..write.start.min(old_size), write.end..all.end.min(old_size)]
            .into_iter()
            .filter(|r| r.start < r.end)
            .collect()
    }

    /// The k data shards followed by their m parity shards.
    fn with_parity(&self, mut shards: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, EcError> {
        let refs: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
        let parity = self.codec.encode(&refs)?;
        shards.extend(parity);
        Ok(shards)
    }

    /// Every shard's bytes (k data then m parity) for a run of whole stripes of logical
    /// bytes, each `stripes` item one stripe wide: each chunk is copied once, straight to
    /// its shard.
    pub fn encode_stripes<'a>(
        &self,
        stripes: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<Vec<Vec<u8>>, EcError> {
        let width = self.width() as usize;
        let chunk = self.chunk as usize;
        let per_shard = stripes.len() * chunk;
        if per_shard == 0 {
            return Err(EcError::Mismatch { len: width, other: 0 });
        }
        let mut shards: Vec<Vec<u8>> =
            (0..self.k()).map(|_| Vec::with_capacity(per_shard)).collect();
        for stripe in stripes {
            if stripe.len() != width {
                return Err(EcError::Mismatch { len: width, other: stripe.len() });
            }
            for (shard, piece) in shards.iter_mut().zip(stripe.chunks_exact(chunk)) {
                shard.extend_from_slice(piece);
            }
        }
        self.with_parity(shards)
    }

    /// The new contents of every shard (k data then m parity) over the plan's stripes,
    /// each to be written at `plan.stripes.start * chunk`: the old bytes the plan read
    /// (`old`, one buffer per `plan.read` range), overlaid with `data` at `offset`.
    pub fn encode_write(
        &self,
        plan: &WritePlan,
        offset: u64,
        data: &[u8],
        old: &[Vec<u8>],
    ) -> Result<Vec<Vec<u8>>, EcError> {
        if old.len() != plan.read.len() {
            return Err(EcError::ShardCount { got: old.len(), want: plan.read.len() });
        }
        let stripes = plan.stripes.end - plan.stripes.start;
        if stripes == 0 {
            return Ok(vec![Vec::new(); self.shards()]);
        }
        // Straight into the data shards (no logical buffer first): zeros, then the old
        // bytes read, then the new data, each piece copied once to where it lives.
        let base = plan.stripes.start * self.width();
        let shard_base = plan.stripes.start * self.chunk;
        let len = (stripes * self.chunk) as usize;
        let mut shards: Vec<Vec<u8>> = (0..self.k()).map(|_| vec![0u8; len]).collect();
        let mut place = |range: Range<u64>, bytes: &[u8]| {
            for (logical, shard, at) in self.pieces(range.clone()) {
                let from = (logical.start - range.start) as usize;
                let to = (at - shard_base) as usize;
                let n = (logical.end - logical.start) as usize;
                shards[shard][to..to + n].copy_from_slice(&bytes[from..from + n]);
            }
        };
        for (range, bytes) in plan.read.iter().zip(old) {
            let want = (range.end - range.start) as usize;
            if bytes.len() != want || range.start < base {
                return Err(EcError::Mismatch { len: want, other: bytes.len() });
            }
            place(range.clone(), bytes);
        }
        if !data.is_empty() {
            let end = offset.checked_add(data.len() as u64).ok_or(EcError::Range)?;
            if offset < base || end > base + stripes * self.width() {
                return Err(EcError::Range);
            }
            place(offset..end, data);
        }
        self.with_parity(shards)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An object's shards held in memory, written through the planner.
    struct Object {
        layout: Layout,
        size: u64,
        shards: Vec<Vec<u8>>,
    }

    impl Object {
        fn new(layout: Layout) -> Object {
            Object { layout, size: 0, shards: vec![Vec::new(); layout.shards()] }
        }

        fn read_logical(&self, range: &Range<u64>) -> Vec<u8> {
            let plan = self
                .layout
                .plan_read(
                    self.size,
                    range.start,
                    range.end - range.start,
                    &vec![true; self.layout.shards()],
                )
                .unwrap();
            self.fetch(&plan, &[])
        }

        fn fetch(&self, plan: &ReadPlan, lost: &[usize]) -> Vec<u8> {
            let got = (0..self.layout.shards())
                .map(|i| {
                    let (_, r) = plan.reads.iter().find(|(s, _)| *s == i)?;
                    assert!(!lost.contains(&i), "plan reads lost shard {i}");
                    Some(self.shards[i][r.start as usize..r.end as usize].to_vec())
                })
                .collect();
            self.layout.assemble(plan, got).unwrap()
        }

        fn apply(&mut self, plan: &WritePlan, offset: u64, data: &[u8]) {
            let old: Vec<Vec<u8>> = plan.read.iter().map(|r| self.read_logical(r)).collect();
            let new = self.layout.encode_write(plan, offset, data, &old).unwrap();
            let at = (plan.stripes.start * self.layout.chunk()) as usize;
            for (shard, bytes) in self.shards.iter_mut().zip(new) {
                shard.resize(plan.shard_len as usize, 0);
                if !bytes.is_empty() {
                    shard[at..at + bytes.len()].copy_from_slice(&bytes);
                }
            }
            self.size = plan.new_size;
        }

        fn write(&mut self, offset: u64, data: &[u8]) {
            let plan = self.layout.plan_write(self.size, offset, data.len() as u64).unwrap();
            self.apply(&plan, offset, data);
        }

        fn truncate(&mut self, size: u64) {
            let plan = self.layout.plan_truncate(self.size, size);
            self.apply(&plan, size, &[]);
        }
    }

    #[test]
    fn a_small_read_touches_only_the_shard_that_holds_it() {
        let layout = Layout::new(4, 2, 4096).unwrap();
        let all = [true; 6];
        let plan = layout.plan_read(1 << 20, 5 * 4096 + 100, 3996, &all).unwrap();
        // Logical chunk 5 is stripe 1, data shard 1: just the bytes wanted.
        assert_eq!(plan.reads, vec![(1, 4196..8192)]);
        // Four bytes more reach into the next chunk, on the next shard.
        let plan = layout.plan_read(1 << 20, 5 * 4096 + 100, 4000, &all).unwrap();
        assert_eq!(plan.reads, vec![(1, 4196..8192), (2, 4096..4100)]);
        assert!(!plan.decode);
        // With shard 1 lost, the stripe is read from k others and decoded.
        let lost = [true, false, true, true, true, true];
        let plan = layout.plan_read(1 << 20, 5 * 4096 + 100, 3996, &lost).unwrap();
        assert!(plan.decode);
        assert_eq!(
            plan.reads,
            vec![(0, 4096..8192), (2, 4096..8192), (3, 4096..8192), (4, 4096..8192)]
        );
        // A read past the end is clipped; one of nothing reads nothing.
        let plan = layout.plan_read(100, 50, 1000, &all).unwrap();
        assert_eq!((plan.range, plan.reads), (50..100, vec![(0, 50..100)]));
        assert!(layout.plan_read(100, 200, 10, &all).unwrap().reads.is_empty());
        // More than m lost: a clear error.
        let gone = [false, false, false, true, true, true];
        assert!(matches!(
            layout.plan_read(1 << 20, 0, 10, &gone),
            Err(EcError::TooFewShards { have: 3, need: 4 })
        ));
    }

    #[test]
    fn a_partial_write_reads_the_rest_of_its_stripes() {
        let layout = Layout::new(2, 1, 4096).unwrap();
        // 10 KiB object: stripes of 8 KiB, so 2 stripes.
        let plan = layout.plan_write(10 << 10, 6 << 10, 4 << 10).unwrap();
        assert_eq!(plan.stripes, 0..2);
        // Nothing after it: the object ends where the write does.
        assert_eq!(plan.read, std::iter::once(0..6 << 10).collect::<Vec<_>>());
        assert_eq!((plan.new_size, plan.shard_len), (10 << 10, 8192));
        // Inside one stripe: its bytes before and after.
        let plan = layout.plan_write(10 << 10, 2 << 10, 2 << 10).unwrap();
        assert_eq!((plan.stripes, plan.read), (0..1, vec![0..2 << 10, 4 << 10..8 << 10]));
        // A whole-stripe write reads nothing; an append past the end reads the old tail.
        assert!(layout.plan_write(16 << 10, 8 << 10, 8 << 10).unwrap().read.is_empty());
        let append = layout.plan_write(10 << 10, 10 << 10, 100).unwrap();
        assert_eq!(append.read, vec![8 << 10..10 << 10]);
        assert_eq!(append.new_size, (10 << 10) + 100);
        assert!(matches!(layout.plan_write(0, u64::MAX, 2), Err(EcError::Range)));
        // Shrinking into a stripe rewrites it; to a stripe boundary or growing does not.
        let shrink = layout.plan_truncate(20 << 10, 9 << 10);
        assert_eq!(shrink.read, std::iter::once(8 << 10..9 << 10).collect::<Vec<_>>());
        assert!(layout.plan_truncate(20 << 10, 8 << 10).stripes.is_empty());
        assert!(layout.plan_truncate(1, 1 << 20).stripes.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..40_000, prop::collection::vec(any::<u8>(), 0..20_000)).prop_map(|(o, d)| Op::Write(o, d)),
            1 => (0u64..50_000).prop_map(Op::Truncate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any sequence of writes and truncates reads back as a plain byte vector would,
        /// from all shards or with any m of them lost, and parity always matches the data.
        #[test]
        fn shards_read_back_like_a_byte_vector(
            (k, m) in prop_oneof![Just((2usize, 1usize)), Just((4, 2)), Just((3, 1))],
            chunk in prop_oneof![Just(64u64), Just(4096)],
            ops in prop::collection::vec(op(), 1..8),
            reads in prop::collection::vec((0u64..60_000, 0u64..30_000, any::<u64>()), 4),
        ) {
            let layout = Layout::new(k, m, chunk).unwrap();
            let mut object = Object::new(layout);
            let mut model: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(offset, data) => {
                        object.write(offset, &data);
                        let end = offset as usize + data.len();
                        if model.len() < end { model.resize(end, 0); }
                        model[offset as usize..end].copy_from_slice(&data);
                    }
                    Op::Truncate(size) => {
                        object.truncate(size);
                        model.resize(size as usize, 0);
                    }
                }
                prop_assert_eq!(object.size, model.len() as u64);
                for shard in &object.shards {
                    prop_assert_eq!(shard.len() as u64, layout.shard_len(object.size));
                }
                if object.shards[0].is_empty() { continue; }
                let data: Vec<&[u8]> = object.shards[..k].iter().map(Vec::as_slice).collect();
                let parity = layout.codec().encode(&data).unwrap();
                prop_assert!(parity[..] == object.shards[k..], "parity matches the data");
            }
            for (offset, len, lost_seed) in reads {
                let lost: Vec<usize> = (0..m).map(|i| ((lost_seed >> (8 * i)) as usize) % (k + m)).collect();
                let available: Vec<bool> = (0..k + m).map(|i| !lost.contains(&i)).collect();
                let plan = layout.plan_read(object.size, offset, len, &available).unwrap();
                let got = object.fetch(&plan, &lost);
                let start = (offset as usize).min(model.len());
                let end = (offset.saturating_add(len) as usize).min(model.len());
                prop_assert!(got[..] == model[start..end], "read {offset}+{len} lost {lost:?}");
            }
        }
    }
}
