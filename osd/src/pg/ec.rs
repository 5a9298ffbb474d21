//! An erasure-coded PG's writes (pure): the `RepOp`s of a compound op say what happens to
//! the logical object; here they become what each shard applies. Sans I/O, in two steps
//! over one simulation, so the two can never disagree:
//!
//! 1. `reads`: the old logical bytes the ops need, i.e. the parts of the stripes they
//!    change in part (read-modify-write), bounded by what the object held;
//! 2. `translate`: given those bytes, each shard's ops and data. Metadata ops (create,
//!    remove, xattrs, omap, the version) go to every shard alike, in op order, so every
//!    shard holds the object's xattrs and omap whole (Ceph's EC pools have no omap; here
//!    they are as capable as replicated ones). Data changes are gathered per stripe and
//!    written at the end: the shard's new length, then each run of changed stripes,
//!    encoded in one call, then the logical size (`EC_SIZE_XATTR`).

use std::collections::BTreeMap;
use std::ops::Range;

use ec::{EcError, Layout};
use proto::osd::RepOp;

/// The xattr every shard keeps the object's logical size in (8 bytes, little-endian). A
/// NUL cannot start a name clients use, so it never meets theirs.
pub const EC_SIZE_XATTR: &str = "\0ec.size";

/// The logical object: whether it exists and its size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Logical {
    pub exists: bool,
    pub size: u64,
}

/// What one shard applies: its ops, with `data` holding their bytes in op order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardWrite {
    pub ops: Vec<RepOp>,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcWrite {
    pub after: Logical,
    /// One per shard, k data then m parity.
    pub shards: Vec<ShardWrite>,
}

/// The ops run against the logical object, with changed stripes held whole.
struct Sim<'a> {
    layout: &'a Layout,
    before: Logical,
    now: Logical,
    /// The least size the object had since the ops began: old bytes at or past it are
    /// gone (a shrink, then a growth, reads as zeros).
    floor: u64,
    stripes: BTreeMap<u64, Vec<u8>>,
    meta: Vec<RepOp>,
    removed: bool,
    /// Whether the stripes' bytes are kept; without, only which old bytes the ops need
    /// is worked out (`reads`), and each stripe is an empty placeholder.
    bytes: bool,
}

impl<'a> Sim<'a> {
    fn width(&self) -> u64 {
        self.layout.width()
    }

    /// The stripe's current bytes, loading its old ones unless `whole` (about to be
    /// overwritten entirely).
    fn stripe(
        &mut self,
        index: u64,
        whole: bool,
        load: &mut dyn FnMut(Range<u64>) -> Result<Vec<u8>, EcError>,
    ) -> Result<&mut Vec<u8>, EcError> {
        if !self.stripes.contains_key(&index) {
            let width = self.width();
            let mut bytes = if self.bytes { vec![0u8; width as usize] } else { Vec::new() };
            let start = index * width;
            let old_end = (start + width).min(self.before.size).min(self.floor);
            if !whole && start < old_end {
                let old = load(start..old_end)?;
                if old.len() as u64 != old_end - start {
                    return Err(EcError::Mismatch {
                        len: (old_end - start) as usize,
                        other: old.len(),
                    });
                }
                if self.bytes {
                    bytes[..old.len()].copy_from_slice(&old);
                }
            }
            self.stripes.insert(index, bytes);
        }
        Ok(self.stripes.get_mut(&index).expect("inserted"))
    }

    /// Calls `f` on each stripe the logical range touches with the part of it inside.
    fn each_stripe(
        &mut self,
        range: Range<u64>,
        load: &mut dyn FnMut(Range<u64>) -> Result<Vec<u8>, EcError>,
        mut f: impl FnMut(&mut [u8], Range<u64>),
    ) -> Result<(), EcError> {
        let width = self.width();
        let mut at = range.start;
        while at < range.end {
            let index = at / width;
            let start = index * width;
            let end = (start + width).min(range.end);
            let whole = at == start && end == start + width;
            let keep = self.bytes;
            let stripe = self.stripe(index, whole, load)?;
            if keep {
                f(&mut stripe[(at - start) as usize..(end - start) as usize], at..end);
            }
            at = end;
        }
        Ok(())
    }

    fn truncate(
        &mut self,
        size: u64,
        load: &mut dyn FnMut(Range<u64>) -> Result<Vec<u8>, EcError>,
    ) -> Result<(), EcError> {
        if size < self.now.size {
            self.floor = self.floor.min(size);
            let width = self.width();
            self.stripes.retain(|&index, _| index * width < size);
            if !size.is_multiple_of(width) {
                let within = (size % width) as usize;
                let keep = self.bytes;
                let stripe = self.stripe(size / width, false, load)?;
                if keep {
                    stripe[within..].fill(0);
                }
            }
        }
        self.now.size = size;
        Ok(())
    }

    fn run(
        &mut self,
        ops: &[RepOp],
        data: &[u8],
        load: &mut dyn FnMut(Range<u64>) -> Result<Vec<u8>, EcError>,
    ) -> Result<(), EcError> {
        let mut at = 0usize;
        let mut take = |len: u64| -> Result<&[u8], EcError> {
            let end = at.checked_add(len as usize).filter(|&e| e <= data.len());
            let end = end.ok_or(EcError::Range)?;
            let bytes = &data[at..end];
            at = end;
            Ok(bytes)
        };
        for op in ops {
            if matches!(op, RepOp::Write { .. } | RepOp::WriteFull { .. }) && !self.now.exists {
                // The shards' object exists before the metadata ops after this one.
                self.meta.push(RepOp::Create);
            }
            match op {
                RepOp::Write { offset, len } => {
                    let bytes = take(*len)?;
                    let end = offset.checked_add(*len).ok_or(EcError::Range)?;
                    self.each_stripe(*offset..end, load, |dst, range| {
                        let from = (range.start - offset) as usize;
                        dst.copy_from_slice(&bytes[from..from + dst.len()]);
                    })?;
                    self.now = Logical { exists: true, size: self.now.size.max(end) };
                }
                RepOp::WriteFull { len } => {
                    let bytes = take(*len)?;
                    self.truncate(0, load)?;
                    self.each_stripe(0..*len, load, |dst, range| {
                        let from = range.start as usize;
                        dst.copy_from_slice(&bytes[from..from + dst.len()]);
                    })?;
                    self.now = Logical { exists: true, size: *len };
                }
                RepOp::Truncate { size } => self.truncate(*size, load)?,
                RepOp::Zero { offset, len } => {
                    let end = offset.saturating_add(*len).min(self.now.size);
                    if *offset < end {
                        self.each_stripe(*offset..end, load, |dst, _| dst.fill(0))?;
                    }
                }
                RepOp::Remove => {
                    self.now = Logical::default();
                    self.floor = 0;
                    self.stripes.clear();
                    self.removed = true;
                    self.meta.push(RepOp::Remove);
                }
                RepOp::Create | RepOp::OmapSet { .. } => {
                    self.now.exists = true;
                    self.meta.push(op.clone());
                }
                other => self.meta.push(other.clone()),
            }
        }
        if at != data.len() {
            return Err(EcError::Range);
        }
        Ok(())
    }
}

fn simulate<'a>(
    layout: &'a Layout,
    before: Logical,
    ops: &[RepOp],
    data: &[u8],
    bytes: bool,
    load: &mut dyn FnMut(Range<u64>) -> Result<Vec<u8>, EcError>,
) -> Result<Sim<'a>, EcError> {
    let floor = if before.exists { before.size } else { 0 };
    let before = Logical { size: floor, ..before };
    let mut sim = Sim {
        layout,
        before,
        now: before,
        floor,
        stripes: BTreeMap::new(),
        meta: Vec::new(),
        removed: false,
        bytes,
    };
    sim.run(ops, data, load)?;
    Ok(sim)
}

/// The old logical bytes `translate` will need, in the order it needs them.
pub fn reads(
    layout: &Layout,
    before: Logical,
    ops: &[RepOp],
    data: &[u8],
) -> Result<Vec<Range<u64>>, EcError> {
    let mut wanted = Vec::new();
    simulate(layout, before, ops, data, false, &mut |range| {
        let len = (range.end - range.start) as usize;
        wanted.push(range);
        Ok(vec![0; len])
    })?;
    Ok(wanted)
}

/// Each shard's ops and data for `ops`, given the old bytes `reads` asked for (`old`, in
/// its order).
pub fn translate(
    layout: &Layout,
    before: Logical,
    ops: &[RepOp],
    data: &[u8],
    old: Vec<Vec<u8>>,
) -> Result<EcWrite, EcError> {
    let mut old = old.into_iter();
    let sim = simulate(layout, before, ops, data, true, &mut |_| old.next().ok_or(EcError::Range))?;
    if old.next().is_some() {
        return Err(EcError::Range);
    }
    let mut shards: Vec<ShardWrite> = (0..layout.shards())
        .map(|_| ShardWrite { ops: sim.meta.clone(), ..Default::default() })
        .collect();
    if !sim.now.exists {
        return Ok(EcWrite { after: sim.now, shards });
    }
    // Old bytes past the floor are gone even if the object grew back over them: the
    // shards are cut to the floor's stripes first (the stripe holding the floor is among
    // the changed ones, zeroed past it), then grown with zeros.
    let cut = sim.floor < sim.before.size && !sim.removed;
    let resized = sim.now.size != sim.before.size || sim.removed || cut;
    let changed = !sim.stripes.is_empty() || resized || !sim.before.exists;
    if !changed {
        return Ok(EcWrite { after: sim.now, shards });
    }
    for shard in &mut shards {
        // After a remove the shard object is gone: writes and truncates need it back.
        shard.ops.push(RepOp::Create);
        if cut {
            shard.ops.push(RepOp::Truncate { size: layout.shard_len(sim.floor) });
        }
        if resized {
            shard.ops.push(RepOp::Truncate { size: layout.shard_len(sim.now.size) });
        }
    }
    // Runs of consecutive changed stripes, each encoded in one call.
    let mut runs: Vec<(u64, Vec<&[u8]>)> = Vec::new();
    for (&index, bytes) in &sim.stripes {
        match runs.last_mut() {
            Some((first, run)) if *first + run.len() as u64 == index => run.push(bytes),
            _ => runs.push((index, vec![bytes.as_slice()])),
        }
    }
    for (first, run) in runs {
        let encoded = layout.encode_stripes(run.into_iter())?;
        for (shard, bytes) in shards.iter_mut().zip(encoded) {
            let offset = first * layout.chunk();
            shard.ops.push(RepOp::Write { offset, len: bytes.len() as u64 });
            if shard.data.is_empty() {
                shard.data = bytes;
            } else {
                shard.data.extend_from_slice(&bytes);
            }
        }
    }
    for shard in &mut shards {
        let value = sim.now.size.to_le_bytes().to_vec();
        shard.ops.push(RepOp::SetXattr { name: EC_SIZE_XATTR.to_owned(), value });
    }
    Ok(EcWrite { after: sim.now, shards })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use proptest::prelude::*;

    use super::*;

    /// One shard object in memory, applying RepOps as the store does.
    #[derive(Clone, Debug, Default)]
    struct ShardObject {
        exists: bool,
        bytes: Vec<u8>,
        xattrs: Map<String, Vec<u8>>,
    }

    impl ShardObject {
        fn apply(&mut self, write: &ShardWrite) {
            let mut at = 0usize;
            for op in &write.ops {
                match op {
                    RepOp::Create => self.exists = true,
                    RepOp::Remove => *self = ShardObject::default(),
                    RepOp::Truncate { size } => self.bytes.resize(*size as usize, 0),
                    RepOp::Write { offset, len } => {
                        let (o, l) = (*offset as usize, *len as usize);
                        if self.bytes.len() < o + l {
                            self.bytes.resize(o + l, 0);
                        }
                        self.bytes[o..o + l].copy_from_slice(&write.data[at..at + l]);
                        at += l;
                        self.exists = true;
                    }
                    RepOp::SetXattr { name, value } => {
                        self.xattrs.insert(name.clone(), value.clone());
                    }
                    RepOp::RemoveXattr { name } => {
                        self.xattrs.remove(name);
                    }
                    other => panic!("a shard was sent {other:?}"),
                }
            }
            assert_eq!(at, write.data.len());
        }

        fn logical_size(&self) -> u64 {
            let v = &self.xattrs[EC_SIZE_XATTR];
            u64::from_le_bytes(v.as_slice().try_into().unwrap())
        }
    }

    /// The object as a replicated copy would hold it.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Model {
        exists: bool,
        bytes: Vec<u8>,
        xattrs: Map<String, Vec<u8>>,
    }

    impl Model {
        fn apply(&mut self, ops: &[RepOp], data: &[u8]) {
            let mut at = 0usize;
            for op in ops {
                match op {
                    RepOp::Create => self.exists = true,
                    RepOp::Write { offset, len } => {
                        let (o, l) = (*offset as usize, *len as usize);
                        if self.bytes.len() < o + l {
                            self.bytes.resize(o + l, 0);
                        }
                        self.bytes[o..o + l].copy_from_slice(&data[at..at + l]);
                        at += l;
                        self.exists = true;
                    }
                    RepOp::WriteFull { len } => {
                        self.bytes = data[at..at + *len as usize].to_vec();
                        at += *len as usize;
                        self.exists = true;
                    }
                    RepOp::Truncate { size } => self.bytes.resize(*size as usize, 0),
                    RepOp::Zero { offset, len } => {
                        let end = (offset + len).min(self.bytes.len() as u64) as usize;
                        if (*offset as usize) < end {
                            self.bytes[*offset as usize..end].fill(0);
                        }
                    }
                    RepOp::Remove => *self = Model::default(),
                    RepOp::SetXattr { name, value } => {
                        self.xattrs.insert(name.clone(), value.clone());
                    }
                    RepOp::RemoveXattr { name } => {
                        self.xattrs.remove(name);
                    }
                    other => panic!("not generated: {other:?}"),
                }
            }
        }
    }

    fn logical(layout: &Layout, shards: &[ShardObject], lost: &[usize]) -> Option<Vec<u8>> {
        let alive: Vec<&ShardObject> =
            (0..shards.len()).filter(|i| !lost.contains(i)).map(|i| &shards[i]).collect();
        if !alive[0].exists {
            assert!(alive.iter().all(|s| !s.exists), "shards disagree on existence");
            return None;
        }
        let size = alive[0].logical_size();
        for s in shards {
            assert_eq!(s.bytes.len() as u64, layout.shard_len(size), "shard length");
        }
        let available: Vec<bool> = (0..shards.len()).map(|i| !lost.contains(&i)).collect();
        let plan = layout.plan_read(size, 0, size, &available).unwrap();
        let got = (0..shards.len())
            .map(|i| {
                let (_, r) = plan.reads.iter().find(|(s, _)| *s == i)?;
                Some(shards[i].bytes[r.start as usize..r.end as usize].to_vec())
            })
            .collect();
        Some(layout.assemble(&plan, got).unwrap())
    }

    /// Runs a compound op through `reads` and `translate` against shards in memory.
    fn write(layout: &Layout, shards: &mut [ShardObject], ops: &[RepOp], data: &[u8]) {
        let before = match logical(layout, shards, &[]) {
            Some(bytes) => Logical { exists: true, size: bytes.len() as u64 },
            None => Logical::default(),
        };
        let current = logical(layout, shards, &[]).unwrap_or_default();
        let ranges = reads(layout, before, ops, data).unwrap();
        let old =
            ranges.iter().map(|r| current[r.start as usize..r.end as usize].to_vec()).collect();
        let out = translate(layout, before, ops, data, old).unwrap();
        for (shard, w) in shards.iter_mut().zip(&out.shards) {
            shard.apply(w);
        }
    }

    #[test]
    fn a_write_that_creates_the_object_creates_it_before_the_metadata_ops_after_it() {
        let layout = Layout::new(2, 1, 4096).unwrap();
        let ops = [
            RepOp::WriteFull { len: 3 },
            RepOp::SetXattr { name: "kind".into(), value: b"v".to_vec() },
            RepOp::OmapClear,
        ];
        let out = translate(&layout, Logical::default(), &ops, b"abc", vec![]).unwrap();
        for shard in &out.shards {
            assert_eq!(shard.ops[..3], [RepOp::Create, ops[1].clone(), RepOp::OmapClear]);
        }
    }

    #[test]
    fn a_small_overwrite_reads_only_the_rest_of_its_stripe() {
        let layout = Layout::new(2, 1, 4096).unwrap();
        let before = Logical { exists: true, size: 100_000 };
        let ops = [RepOp::Write { offset: 8192 + 10, len: 20 }];
        let data = [7u8; 20];
        assert_eq!(reads(&layout, before, &ops, &data).unwrap(), vec![8192..16384u64]);
        let out = translate(&layout, before, &ops, &data, vec![vec![1; 8192]]).unwrap();
        assert_eq!(out.after, Logical { exists: true, size: 100_000 });
        // Each shard rewrites its chunk of stripe 1 and states the size; no truncate.
        assert_eq!(
            out.shards[2].ops,
            [
                RepOp::Create,
                RepOp::Write { offset: 4096, len: 4096 },
                RepOp::SetXattr {
                    name: EC_SIZE_XATTR.into(),
                    value: 100_000u64.to_le_bytes().to_vec()
                },
            ]
        );
        // A whole-stripe write and a write to a new object read nothing.
        let whole = [RepOp::Write { offset: 8192, len: 8192 }];
        assert!(reads(&layout, before, &whole, &[0; 8192]).unwrap().is_empty());
        assert!(reads(&layout, Logical::default(), &ops, &data).unwrap().is_empty());
        // Bad input: ops wanting more data than came.
        assert_eq!(reads(&layout, before, &ops, &data[..5]), Err(EcError::Range));
    }

    #[test]
    fn a_shrink_then_a_growth_reads_zeros_where_the_old_bytes_were() {
        let layout = Layout::new(2, 1, 64).unwrap();
        let mut shards = vec![ShardObject::default(); 3];
        write(&layout, &mut shards, &[RepOp::WriteFull { len: 300 }], &[9u8; 300]);
        let ops = [
            RepOp::Truncate { size: 10 },
            RepOp::Truncate { size: 300 },
            RepOp::Write { offset: 200, len: 1 },
        ];
        write(&layout, &mut shards, &ops, &[5]);
        let mut want = vec![0u8; 300];
        want[..10].fill(9);
        want[200] = 5;
        assert_eq!(logical(&layout, &shards, &[1]).unwrap(), want);
    }

    fn rep_op() -> impl Strategy<Value = (RepOp, Vec<u8>)> {
        prop_oneof![
            4 => (0u64..3000, 0usize..1500).prop_map(|(offset, len)| {
                (RepOp::Write { offset, len: len as u64 }, (0..len).map(|i| (i * 7 + offset as usize) as u8 | 1).collect())
            }),
            1 => (0usize..2000).prop_map(|len| (RepOp::WriteFull { len: len as u64 }, vec![3u8; len])),
            2 => (0u64..3500).prop_map(|size| (RepOp::Truncate { size }, vec![])),
            1 => (0u64..3000, 0u64..1000).prop_map(|(offset, len)| (RepOp::Zero { offset, len }, vec![])),
            1 => Just((RepOp::Remove, vec![])),
            1 => Just((RepOp::Create, vec![])),
            1 => (0u8..3).prop_map(|n| (RepOp::SetXattr { name: format!("x{n}"), value: vec![n] }, vec![])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Compound ops through the translation read back as a replicated copy holds them,
        /// with all shards or any m lost.
        #[test]
        fn shards_hold_what_a_replicated_copy_would(
            (k, m) in prop_oneof![Just((2usize, 1usize)), Just((4, 2))],
            chunk in prop_oneof![Just(64u64), Just(512)],
            compound in prop::collection::vec(prop::collection::vec(rep_op(), 1..4), 1..6),
            lost_seed in any::<u64>(),
        ) {
            let layout = Layout::new(k, m, chunk).unwrap();
            let mut shards = vec![ShardObject::default(); k + m];
            let mut model = Model::default();
            for ops in compound {
                // Ops on a missing object other than these would be refused by ops.rs.
                let (ops, data): (Vec<RepOp>, Vec<Vec<u8>>) = ops.into_iter().unzip();
                let mut exists = model.exists;
                let valid = ops.iter().all(|op| {
                    let ok = exists || matches!(op, RepOp::Write { .. } | RepOp::WriteFull { .. } | RepOp::Create);
                    exists = !matches!(op, RepOp::Remove) && ok;
                    ok
                });
                if !valid { continue; }
                let data = data.concat();
                write(&layout, &mut shards, &ops, &data);
                model.apply(&ops, &data);
                let lost: Vec<usize> = (0..m).map(|i| ((lost_seed >> (8 * i)) as usize) % (k + m)).collect();
                let got = logical(&layout, &shards, &lost);
                prop_assert_eq!(got.is_some(), model.exists);
                if let Some(bytes) = got {
                    prop_assert!(bytes == model.bytes, "after {:?}", ops);
                    let user: Map<String, Vec<u8>> = shards[0].xattrs.iter().filter(|(n, _)| !n.starts_with('\0')).map(|(n, v)| (n.clone(), v.clone())).collect();
                    prop_assert_eq!(&user, &model.xattrs);
                }
            }
        }
    }
}
