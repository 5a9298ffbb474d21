//! Server-side copies (pure): what a request's copy ops read, and the plain writes they
//! become once the primary has read their sources. `CopyFrom` becomes a `WriteFull` of
//! the source's data, its xattrs set (and the object's others removed), and its omap put
//! in place of the object's; `CopyRange` becomes a `Write`. The request then runs as any
//! write does (snapshots, replication, erasure coding), and its answer is folded back to
//! one result per op the client sent.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use proto::error::{ErrorCode, RemoteError};
use proto::osd::{
    COPIES_PER_REQUEST_MAX, COPY_RANGE_BYTES_MAX, OSD_BULK_BYTES_MAX, ObjectName, ObjectOp,
    OpResult, RESERVED_XATTR_PREFIX,
};

/// What a copy op reads of its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Data, xattrs and omap.
    Whole,
    /// `len` bytes from `offset`.
    Range { offset: u64, len: u64 },
}

/// A copy op's source as its primary answered: `xattrs` and `omap` only for `Whole`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub data: Bytes,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub omap: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A request with its copy ops turned into writes.
#[derive(Debug)]
pub struct Rewritten {
    pub ops: Vec<ObjectOp>,
    pub bulk: Bytes,
    /// How many ops each op of the request became, in order.
    pub spans: Vec<usize>,
}

fn invalid(detail: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::Invalid, detail)
}

/// The sources a request's copy ops read, in op order, or why it is refused: too many
/// copies, a range too long, a source that is the object itself (a snapshot of it is
/// reached with `Rollback`).
pub fn sources(
    object: &ObjectName,
    ops: &[ObjectOp],
) -> Result<Vec<(ObjectName, Option<u64>, Want)>, RemoteError> {
    let mut out = Vec::new();
    for op in ops {
        let want = match op {
            ObjectOp::CopyFrom { .. } => Want::Whole,
            ObjectOp::CopyRange { len, .. } if *len > COPY_RANGE_BYTES_MAX => {
                return Err(invalid(format!(
                    "a copy range is at most {COPY_RANGE_BYTES_MAX} bytes, not {len}"
                )));
            }
            ObjectOp::CopyRange { offset, len, to, .. } => {
                if offset.checked_add(*len).is_none() || to.checked_add(*len).is_none() {
                    return Err(invalid("a copy range past the end of the address space"));
                }
                Want::Range { offset: *offset, len: *len }
            }
            _ => continue,
        };
        let Some((source, snap)) = op.copy_source() else { continue };
        if source == object {
            return Err(invalid(format!(
                "{object} cannot be copied onto itself (a rollback makes it what it was)"
            )));
        }
        if snap.is_some_and(|s| s == 0 || s == objectstore::SNAP_HEAD) {
            return Err(invalid("snapshot ids are 1 and up"));
        }
        out.push((source.clone(), snap, want));
    }
    if out.len() > COPIES_PER_REQUEST_MAX {
        return Err(invalid(format!(
            "a request carries at most {COPIES_PER_REQUEST_MAX} copy ops, not {}",
            out.len()
        )));
    }
    Ok(out)
}

/// `ops` (write data `bulk`, in op order) with each copy op replaced by the writes of its
/// source (`sources`, in op order). `xattrs` names the object's xattrs before the request
/// (none: it does not exist), which a whole copy removes unless the source has them.
pub fn rewrite(
    ops: &[ObjectOp],
    bulk: &Bytes,
    sources: Vec<Source>,
    xattrs: BTreeSet<String>,
) -> Result<Rewritten, RemoteError> {
    let mut sources = sources.into_iter();
    let mut xattrs = xattrs;
    let mut out = Rewritten { ops: Vec::new(), bulk: Bytes::new(), spans: Vec::new() };
    let mut data = BytesMut::new();
    let mut at = 0usize;
    for op in ops {
        let before = out.ops.len();
        let copied = match op {
            ObjectOp::CopyFrom { .. } | ObjectOp::CopyRange { .. } => {
                sources.next().ok_or_else(|| {
                    RemoteError::new(ErrorCode::Internal, "a copy op without its source")
                })?
            }
            _ => {
                match op {
                    ObjectOp::SetXattr { name, .. } => {
                        xattrs.insert(name.clone());
                    }
                    ObjectOp::RemoveXattr { name } => {
                        xattrs.remove(name);
                    }
                    ObjectOp::Remove => xattrs.clear(),
                    _ => {}
                }
                let len = op.data_len() as usize;
                let end = at.checked_add(len).filter(|&e| e <= bulk.len()).ok_or_else(|| {
                    invalid(format!("ops take more data than the request's {}", bulk.len()))
                })?;
                data.extend_from_slice(&bulk[at..end]);
                at = end;
                out.ops.push(op.clone());
                out.spans.push(1);
                continue;
            }
        };
        let len = copied.data.len() as u64;
        data.extend_from_slice(&copied.data);
        if let ObjectOp::CopyRange { to, .. } = op {
            out.ops.push(ObjectOp::Write { offset: *to, len });
        } else {
            out.ops.push(ObjectOp::WriteFull { len });
            for gone in xattrs.iter().filter(|n| !copied.xattrs.contains_key(*n)) {
                out.ops.push(ObjectOp::RemoveXattr { name: gone.clone() });
            }
            for (name, value) in &copied.xattrs {
                out.ops.push(ObjectOp::SetXattr { name: name.clone(), value: value.clone() });
            }
            out.ops.push(ObjectOp::OmapClear);
            if !copied.omap.is_empty() {
                out.ops.push(ObjectOp::OmapSet { entries: copied.omap });
            }
            xattrs = copied.xattrs.into_keys().collect();
        }
        out.spans.push(out.ops.len() - before);
    }
    if at != bulk.len() {
        return Err(invalid(format!(
            "ops take {at} bytes of data; the request carries {}",
            bulk.len()
        )));
    }
    if data.len() > OSD_BULK_BYTES_MAX {
        return Err(RemoteError::new(
            ErrorCode::TooLarge,
            format!(
                "the copies come to {} bytes; a request writes at most {OSD_BULK_BYTES_MAX}",
                data.len()
            ),
        ));
    }
    out.bulk = data.freeze();
    Ok(out)
}

/// The xattr names a whole copy replaces: the object's own, not its reserved ones
/// (locks, snapshots), which stay.
pub fn user_xattrs<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    names.into_iter().filter(|n| !n.starts_with(RESERVED_XATTR_PREFIX)).cloned().collect()
}

/// The results of a rewritten request, one per op the client sent: an op that became
/// several answers `Done`. A resend answered from the log carries none, and stays so.
pub fn fold_results(results: Vec<OpResult>, spans: &[usize]) -> Vec<OpResult> {
    if results.len() != spans.iter().sum::<usize>() {
        return results;
    }
    let mut results = results.into_iter();
    spans
        .iter()
        .map(|&n| {
            let mut taken: Vec<OpResult> = results.by_ref().take(n).collect();
            if n == 1 { taken.pop().expect("one result") } else { OpResult::Done }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ObjectName {
        ObjectName { namespace: String::new(), name: n.as_bytes().to_vec() }
    }

    #[test]
    fn copies_become_writes_with_their_data_in_op_order_and_fold_back() {
        let ops = [
            ObjectOp::SetXattr { name: "mine".into(), value: b"1".to_vec() },
            ObjectOp::CopyFrom { source: name("src"), snap: Some(4) },
            ObjectOp::Write { offset: 0, len: 2 },
            ObjectOp::CopyRange { source: name("other"), snap: None, offset: 5, len: 9, to: 100 },
        ];
        let wanted = sources(&name("dst"), &ops).unwrap();
        assert_eq!(
            wanted,
            [
                (name("src"), Some(4), Want::Whole),
                (name("other"), None, Want::Range { offset: 5, len: 9 }),
            ]
        );
        let whole = Source {
            data: Bytes::from_static(b"whole"),
            xattrs: BTreeMap::from([("theirs".to_owned(), b"x".to_vec())]),
            omap: vec![(b"k".to_vec(), b"v".to_vec())],
        };
        let range = Source { data: Bytes::from_static(b"abc"), ..Source::default() };
        let before = user_xattrs(&["old".to_owned(), "\0lock.owner".to_owned()]);
        let out = rewrite(&ops, &Bytes::from_static(b"hi"), vec![whole, range], before).unwrap();
        assert_eq!(
            out.ops,
            [
                ObjectOp::SetXattr { name: "mine".into(), value: b"1".to_vec() },
                ObjectOp::WriteFull { len: 5 },
                ObjectOp::RemoveXattr { name: "mine".into() },
                ObjectOp::RemoveXattr { name: "old".into() },
                ObjectOp::SetXattr { name: "theirs".into(), value: b"x".to_vec() },
                ObjectOp::OmapClear,
                ObjectOp::OmapSet { entries: vec![(b"k".to_vec(), b"v".to_vec())] },
                ObjectOp::Write { offset: 0, len: 2 },
                ObjectOp::Write { offset: 100, len: 3 },
            ],
            "the locks stay; the range is as long as the source had"
        );
        assert_eq!(&out.bulk[..], b"wholehiabc");
        assert_eq!(out.spans, [1, 6, 1, 1]);
        let results = vec![OpResult::Done; 9];
        assert_eq!(fold_results(results, &out.spans), vec![OpResult::Done; 4]);
        assert_eq!(fold_results(Vec::new(), &out.spans), [], "a resend's answer");
    }

    #[test]
    fn bad_copies_are_refused_before_anything_is_read() {
        let onto_itself = [ObjectOp::CopyFrom { source: name("a"), snap: None }];
        let e = sources(&name("a"), &onto_itself).unwrap_err();
        assert!(e.message.contains("onto itself"), "{e:?}");
        let long = ObjectOp::CopyRange {
            source: name("b"),
            snap: None,
            offset: 0,
            len: COPY_RANGE_BYTES_MAX + 1,
            to: 0,
        };
        assert_eq!(sources(&name("a"), &[long]).unwrap_err().code, ErrorCode::Invalid);
        let past =
            ObjectOp::CopyRange { source: name("b"), snap: None, offset: u64::MAX, len: 2, to: 0 };
        assert_eq!(sources(&name("a"), &[past]).unwrap_err().code, ErrorCode::Invalid);
        let snap0 = ObjectOp::CopyFrom { source: name("b"), snap: Some(0) };
        assert_eq!(sources(&name("a"), &[snap0]).unwrap_err().code, ErrorCode::Invalid);
        let many = vec![ObjectOp::CopyFrom { source: name("b"), snap: None }; 5];
        assert_eq!(sources(&name("a"), &many).unwrap_err().code, ErrorCode::Invalid);
        let short = rewrite(&[ObjectOp::WriteFull { len: 4 }], &Bytes::new(), vec![], [].into());
        assert_eq!(short.unwrap_err().code, ErrorCode::Invalid);
    }
}
