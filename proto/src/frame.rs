//! Framing: one message and an optional bulk payload per frame, with hard size bounds.
//!
//! Layout: version (u8), three zero bytes, header length (u32 LE), bulk length (u32 LE),
//! then the header (a postcard-encoded message) and the bulk bytes. Bulk payloads (maps,
//! object data) travel as raw bytes beside the header, never through serde. Both lengths
//! are checked against their limits before a byte of the body is read, so a peer cannot
//! make a reader allocate more than the limits allow.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The frame layout version; a reader refuses others.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the header.
pub const PREFIX_BYTES: usize = 12;
/// Upper bound on an encoded message.
pub const HEADER_BYTES_MAX: usize = 1 << 20;
/// Upper bound on a bulk payload: a full cluster map fits, with room for framing.
pub const BULK_BYTES_MAX: usize = placement::encoding::MAP_BYTES_MAX + (1 << 20);

// Both lengths travel as u32.
const _: () = assert!(HEADER_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(BULK_BYTES_MAX <= u32::MAX as usize);

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame version {0}, this build speaks {FRAME_VERSION}")]
    Version(u8),
    #[error("{what} of {len} bytes is above the limit of {limit}")]
    TooLarge { what: &'static str, len: usize, limit: usize },
    #[error("the stream ended {0}")]
    Truncated(&'static str),
    #[error("message does not decode: {0}")]
    Malformed(String),
}

/// The limits a reader enforces; tighter ones suit control-only endpoints.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_bytes_max: usize,
    pub bulk_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_bytes_max: HEADER_BYTES_MAX, bulk_bytes_max: BULK_BYTES_MAX }
    }
}

/// Encodes a frame into one buffer.
pub fn encode(header: &impl Serialize, bulk: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = encode_head(header, bulk.len())?;
    out.extend_from_slice(bulk);
    Ok(out)
}

/// A frame's prefix and message, for a bulk payload of `bulk_len` bytes that follows.
fn encode_head(header: &impl Serialize, bulk_len: usize) -> Result<Vec<u8>, FrameError> {
    let encoded = postcard::to_stdvec(header).map_err(|e| FrameError::Malformed(e.to_string()))?;
    check("message", encoded.len(), HEADER_BYTES_MAX)?;
    check("bulk payload", bulk_len, BULK_BYTES_MAX)?;
    let mut out = Vec::with_capacity(PREFIX_BYTES + encoded.len());
    out.extend_from_slice(&[FRAME_VERSION, 0, 0, 0]);
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&(bulk_len as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    Ok(out)
}

/// Writes a frame: the message, then the bulk payload as it is (no copy into one buffer:
/// payloads are up to 64 MiB).
pub async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    header: &impl Serialize,
    bulk: &[u8],
) -> Result<(), FrameError> {
    writer.write_all(&encode_head(header, bulk.len())?).await?;
    if !bulk.is_empty() {
        writer.write_all(bulk).await?;
    }
    Ok(())
}

/// The declared sizes of a frame, read and checked before its body.
#[derive(Clone, Copy, Debug)]
pub struct Prefix {
    pub header_len: usize,
    pub bulk_len: usize,
}

/// Reads a frame's prefix; `None` at a clean end of stream.
pub async fn read_prefix<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: Limits,
) -> Result<Option<Prefix>, FrameError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    while filled < PREFIX_BYTES {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated("inside a frame prefix"))
            };
        }
        filled += n;
    }
    if prefix[0] != FRAME_VERSION {
        return Err(FrameError::Version(prefix[0]));
    }
    let header_len = u32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes")) as usize;
    let bulk_len = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize;
    check("message", header_len, limits.header_bytes_max)?;
    check("bulk payload", bulk_len, limits.bulk_bytes_max)?;
    Ok(Some(Prefix { header_len, bulk_len }))
}

/// Reads the body of a frame whose prefix was read.
pub async fn read_body<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    prefix: Prefix,
) -> Result<(T, Bytes), FrameError> {
    // Memory follows the bytes that actually arrive, not the lengths the prefix claims, so
    // a peer that announces a large frame and sends nothing holds 64 KiB, not the frame.
    let header = read_up_to(reader, prefix.header_len, "inside a message").await?;
    let bulk = read_up_to(reader, prefix.bulk_len, "inside a bulk payload").await?;
    let (message, rest) = postcard::take_from_bytes::<T>(&header)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!("{} bytes after the message", rest.len())));
    }
    Ok((message, bulk.freeze()))
}

/// Reads exactly `len` bytes, growing the buffer as they come.
async fn read_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
    place: &'static str,
) -> Result<BytesMut, FrameError> {
    const STEP: usize = 64 << 10;
    let mut buffer = BytesMut::with_capacity(len.min(STEP));
    while buffer.len() < len {
        if buffer.capacity() == buffer.len() {
            // Once the first step has arrived the sender is sending: room for the rest at
            // once (one copy of the first step, instead of one per doubling).
            buffer.reserve(len - buffer.len());
        }
        let wanted = len - buffer.len();
        let n = reader.read_buf(&mut (&mut buffer).limit(wanted)).await?;
        if n == 0 {
            return Err(FrameError::Truncated(place));
        }
    }
    Ok(buffer)
}

/// Reads one whole frame; `None` at a clean end of stream.
pub async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    limits: Limits,
) -> Result<Option<(T, Bytes)>, FrameError> {
    match read_prefix(reader, limits).await? {
        Some(prefix) => read_body(reader, prefix).await.map(Some),
        None => Ok(None),
    }
}

fn check(what: &'static str, len: usize, limit: usize) -> Result<(), FrameError> {
    if len > limit { Err(FrameError::TooLarge { what, len, limit }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Request, Response};
    use proptest::prelude::*;

    /// Reads one frame of `bytes` as a `T`, the way every endpoint reads what a peer sent.
    fn read_sync<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<(T, Bytes)>, FrameError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let limits = Limits { header_bytes_max: 4096, bulk_bytes_max: 4096 };
        runtime.block_on(async {
            let mut reader = bytes;
            read::<_, T>(&mut reader, limits).await
        })
    }

    /// A prefix that passes the checks, so that the body decoder sees the bytes.
    fn framed(body: &[u8], bulk_len: usize) -> Vec<u8> {
        let header_len = body.len().saturating_sub(bulk_len);
        let mut out = vec![FRAME_VERSION, 0, 0, 0];
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
        out.extend_from_slice(&(bulk_len.min(body.len()) as u32).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    proptest! {
        /// Whatever a peer sends, the decoders answer with a message or a named error:
        /// no panic, no allocation past the limits.
        #[test]
        fn arbitrary_bytes_never_panic_the_frame_decoders(
            bytes in prop::collection::vec(any::<u8>(), 0..1024),
            bulk_len in 0usize..64,
        ) {
            let _ = read_sync::<Request>(&bytes);
            let _ = read_sync::<Response>(&bytes);
            let _ = read_sync::<Request>(&framed(&bytes, bulk_len));
            let _ = read_sync::<Response>(&framed(&bytes, bulk_len));
        }

        /// Valid frames with bytes flipped or cut off: a message or a named error.
        #[test]
        fn mangled_frames_never_panic_the_frame_decoders(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let request = Request::Ping { sent_ms: 7 };
            let good = encode(&request, b"bulk bytes").unwrap();
            let mut bytes = good.clone();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= byte;
            }
            let _ = read_sync::<Request>(&bytes);
            // A good frame cut short is never taken for a message.
            let len = cut.index(good.len());
            match read_sync::<Request>(&good[..len]) {
                Ok(None) => prop_assert_eq!(len, 0),
                Ok(Some(_)) => prop_assert!(false, "{len} of {} bytes decoded", good.len()),
                Err(_) => {}
            }
        }
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let bytes = encode(&("hello", 42u32), b"bulk").unwrap();
        let mut reader = &bytes[..];
        let (message, bulk): ((String, u32), Bytes) =
            read(&mut reader, Limits::default()).await.unwrap().unwrap();
        assert_eq!(message, ("hello".to_owned(), 42));
        assert_eq!(&bulk[..], b"bulk");
        assert!(read::<_, (String, u32)>(&mut reader, Limits::default()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_frames_are_named_errors() {
        let good = encode(&u64::MAX, b"").unwrap();
        let read_one = |bytes: Vec<u8>, limits: Limits| async move {
            let mut reader = &bytes[..];
            read::<_, u64>(&mut reader, limits).await
        };
        let mut version = good.clone();
        version[0] = 9;
        assert!(matches!(read_one(version, Limits::default()).await, Err(FrameError::Version(9))));
        let tight = Limits { header_bytes_max: 0, bulk_bytes_max: 0 };
        assert!(matches!(
            read_one(good.clone(), tight).await,
            Err(FrameError::TooLarge { what: "message", .. })
        ));
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_one(huge, Limits::default()).await,
            Err(FrameError::TooLarge { what: "bulk payload", .. })
        ));
        assert!(matches!(
            read_one(good[..5].to_vec(), Limits::default()).await,
            Err(FrameError::Truncated(_))
        ));
        assert!(matches!(
            read_one(good[..PREFIX_BYTES + 2].to_vec(), Limits::default()).await,
            Err(FrameError::Truncated(_))
        ));
        let garbage = encode(&vec![0xffu8; 10], b"").unwrap();
        assert!(matches!(
            read_one(garbage, Limits::default()).await,
            Err(FrameError::Malformed(_))
        ));
    }
}
