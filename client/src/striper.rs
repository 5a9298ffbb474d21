//! Large logical objects over many objects (like Ceph's libradosstriper): byte `o` of
//! logical object `NAME` lives in object `NAME.{o / object_size:016x}` at `o % object_size`.
//! The logical size and the layout are xattrs of the first piece object, so any client
//! finds them. Pieces never written read as zeros.
//!
//! Each piece is written atomically on its own; a write spanning pieces is not atomic as
//! a whole (as with Ceph's striper). The size only grows by a guarded op ("set if larger"),
//! so concurrent writers never shrink it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt, TryStreamExt};
use proto::error::{ErrorCode, RemoteError};
use proto::osd::{CmpOp, ObjectName, ObjectOp, OpResult};

use crate::mon_client::ClientError;
use crate::objects::Objects;

/// Bytes per piece object unless told otherwise (RBD's and RGW's default).
pub const OBJECT_SIZE_DEFAULT: u64 = 4 << 20;
/// Piece ops in flight for one call.
const PIECES_IN_FLIGHT: usize = 8;
const SIZE_XATTR: &str = "striper.size";
const LAYOUT_XATTR: &str = "striper.object_size";

/// The piece objects a byte range touches: (piece index, offset in it, length).
pub fn pieces(offset: u64, len: u64, object_size: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let index = at / object_size;
        let within = at % object_size;
        let take = (object_size - within).min(end - at);
        out.push((index, within, take));
        at += take;
    }
    out
}

/// A size as 20 decimal digits, so that comparing the bytes compares the numbers.
fn encode_size(size: u64) -> Vec<u8> {
    format!("{size:020}").into_bytes()
}

fn decode_size(name: &str, bytes: &[u8]) -> Result<u64, ClientError> {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        ClientError::Refused(RemoteError::new(
            ErrorCode::Corrupt,
            format!("striped object {name}: {SIZE_XATTR} is not a number"),
        ))
    })
}

pub struct Striper {
    objects: Arc<Objects>,
    pool: String,
    object_size: u64,
}

impl Striper {
    /// Striped objects in `pool` with pieces of `object_size` bytes (for new objects; an
    /// existing one keeps the layout it was written with).
    pub fn new(objects: Arc<Objects>, pool: &str, object_size: u64) -> Striper {
        Striper { objects, pool: pool.to_owned(), object_size: object_size.max(1) }
    }

    fn piece(name: &str, index: u64) -> ObjectName {
        ObjectName { namespace: String::new(), name: format!("{name}.{index:016x}").into_bytes() }
    }

    /// The logical size and the piece size, `None` if the object does not exist.
    pub async fn stat(&self, name: &str) -> Result<Option<(u64, u64)>, ClientError> {
        let ops = vec![
            ObjectOp::GetXattr { name: SIZE_XATTR.into() },
            ObjectOp::GetXattr { name: LAYOUT_XATTR.into() },
        ];
        match self.objects.op(&self.pool, &Self::piece(name, 0), ops, Bytes::new()).await {
            Ok(answer) => match &answer.results[..] {
                // No size yet: created, and its first write has not finished.
                [OpResult::Xattr(size), OpResult::Xattr(Some(layout))] => {
                    let size = size.as_deref().map(|s| decode_size(name, s)).transpose()?;
                    Ok(Some((size.unwrap_or(0), decode_size(name, layout)?.max(1))))
                }
                _ => Err(ClientError::Refused(RemoteError::new(
                    ErrorCode::Corrupt,
                    format!("{name} is not a striped object (its first piece has no layout)"),
                ))),
            },
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `data` at `offset`, creating the object if needed.
    pub async fn write(&self, name: &str, offset: u64, data: Bytes) -> Result<(), ClientError> {
        let object_size = match self.stat(name).await? {
            Some((_, object_size)) => object_size,
            None => self.object_size,
        };
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            ClientError::Refused(RemoteError::new(ErrorCode::Invalid, "offset + length overflows"))
        })?;
        // The first piece carries the layout before any data lands.
        let layout = vec![
            ObjectOp::Create { exclusive: false },
            ObjectOp::SetXattr { name: LAYOUT_XATTR.into(), value: encode_size(object_size) },
        ];
        self.objects.op(&self.pool, &Self::piece(name, 0), layout, Bytes::new()).await?;
        stream::iter(pieces(offset, data.len() as u64, object_size))
            .map(|(index, within, take)| {
                let at = (index * object_size + within - offset) as usize;
                let chunk = data.slice(at..at + take as usize);
                let op = vec![ObjectOp::Write { offset: within, len: take }];
                let piece = Self::piece(name, index);
                async move { self.objects.op(&self.pool, &piece, op, chunk).await }
            })
            .buffer_unordered(PIECES_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        // Grow the size, never shrink it: only if the stored one is smaller.
        let grow = vec![
            ObjectOp::CmpXattr { name: SIZE_XATTR.into(), op: CmpOp::Lt, value: encode_size(end) },
            ObjectOp::SetXattr { name: SIZE_XATTR.into(), value: encode_size(end) },
        ];
        match self.objects.op(&self.pool, &Self::piece(name, 0), grow, Bytes::new()).await {
            Err(e) if e.code() == Some(ErrorCode::Canceled) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Up to `len` bytes from `offset` (fewer at the end); pieces never written are zeros.
    pub async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Bytes, ClientError> {
        let (size, object_size) = self.stat(name).await?.ok_or_else(|| {
            ClientError::Refused(RemoteError::new(
                ErrorCode::NotFound,
                format!("striped object {name} does not exist"),
            ))
        })?;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let parts: Vec<(u64, Bytes)> = stream::iter(pieces(offset, end - offset, object_size))
            .map(|(index, within, take)| {
                let piece = Self::piece(name, index);
                async move {
                    match self.objects.read(&self.pool, &piece, within, take).await {
                        Ok(data) => Ok((take, data)),
                        Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok((take, Bytes::new())),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(PIECES_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (take, data) in parts {
            // A piece shorter than its share (written sparsely) reads as zeros past its end.
            out.extend_from_slice(&data);
            out.resize(out.len() + (take as usize - data.len()), 0);
        }
        Ok(out.freeze())
    }

    /// Removes every piece; the first last, so a removal cut short can be run again.
    pub async fn remove(&self, name: &str) -> Result<(), ClientError> {
        let Some((size, object_size)) = self.stat(name).await? else {
            return Ok(());
        };
        let count = size.div_ceil(object_size).max(1);
        stream::iter(1..count)
            .map(|index| {
                let piece = Self::piece(name, index);
                async move {
                    match self.objects.remove(&self.pool, &piece).await {
                        Err(e) if e.code() != Some(ErrorCode::NotFound) => Err(e),
                        _ => Ok(()),
                    }
                }
            })
            .buffer_unordered(PIECES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        self.objects.remove(&self.pool, &Self::piece(name, 0)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_at_piece_boundaries() {
        assert_eq!(pieces(0, 10, 4), vec![(0, 0, 4), (1, 0, 4), (2, 0, 2)]);
        assert_eq!(pieces(3, 2, 4), vec![(0, 3, 1), (1, 0, 1)]);
        assert_eq!(pieces(8, 4, 4), vec![(2, 0, 4)]);
        assert!(pieces(5, 0, 4).is_empty());
        assert!(pieces(u64::MAX - 1, 10, 4).iter().all(|&(_, w, t)| w + t <= 4));
    }

    #[test]
    fn sizes_compare_as_their_encodings() {
        for (a, b) in [(9u64, 10u64), (0, 1), (4 << 20, 5 << 20), (1, u64::MAX)] {
            assert!(encode_size(a) < encode_size(b), "{a} {b}");
        }
        assert_eq!(decode_size("x", &encode_size(12345)).unwrap(), 12345);
        assert!(decode_size("x", b"twelve").is_err());
    }
}
