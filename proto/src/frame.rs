//! Framing: one message and an optional bulk payload per frame, with hard size bounds.
//!
//! Layout: version (u8), three zero bytes, header length (u32 LE), bulk length (u32 LE),
//! then the header (a postcard-encoded message) and the bulk bytes. Bulk payloads (maps,
//! object data) travel as raw bytes beside the header, never through serde. Both lengths
//! are checked against their limits before a byte of the body is read, so a peer cannot
//! make a reader allocate more than the limits allow.
//!
//! This is the layout and its checks, without I/O: `net::frame` reads and writes frames on
//! streams with them, and `decode` takes a frame from bytes in memory.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

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
pub fn encode_head(header: &impl Serialize, bulk_len: usize) -> Result<Vec<u8>, FrameError> {
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

/// The declared sizes of a frame, read and checked before its body.
#[derive(Clone, Copy, Debug)]
pub struct Prefix {
    pub header_len: usize,
    pub bulk_len: usize,
}

impl Prefix {
    /// A frame's prefix, its version and both lengths checked against `limits`.
    pub fn parse(prefix: &[u8; PREFIX_BYTES], limits: Limits) -> Result<Prefix, FrameError> {
        if prefix[0] != FRAME_VERSION {
            return Err(FrameError::Version(prefix[0]));
        }
        let header_len = u32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes")) as usize;
        let bulk_len = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize;
        check("message", header_len, limits.header_bytes_max)?;
        check("bulk payload", bulk_len, limits.bulk_bytes_max)?;
        Ok(Prefix { header_len, bulk_len })
    }
}

/// A frame's message from its header bytes, which it must fill exactly.
pub fn decode_message<T: DeserializeOwned>(header: &[u8]) -> Result<T, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes::<T>(header).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!("{} bytes after the message", rest.len())));
    }
    Ok(message)
}

/// One decoded frame (its message and bulk payload) and the bytes after it.
pub type Decoded<'a, T> = ((T, Bytes), &'a [u8]);

/// The first frame of `bytes` and the bytes after it; `None` for no bytes at all. The
/// same checks as a stream's reader, in the same order.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    limits: Limits,
) -> Result<Option<Decoded<'_, T>>, FrameError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let Some((prefix, body)) = bytes.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(FrameError::Truncated("inside a frame prefix"));
    };
    let prefix = Prefix::parse(prefix, limits)?;
    let Some((header, body)) = body.split_at_checked(prefix.header_len) else {
        return Err(FrameError::Truncated("inside a message"));
    };
    let Some((bulk, rest)) = body.split_at_checked(prefix.bulk_len) else {
        return Err(FrameError::Truncated("inside a bulk payload"));
    };
    let message = decode_message(header)?;
    Ok(Some(((message, Bytes::copy_from_slice(bulk)), rest)))
}

fn check(what: &'static str, len: usize, limit: usize) -> Result<(), FrameError> {
    if len > limit { Err(FrameError::TooLarge { what, len, limit }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MonRequest, OsdRequest, Response};
    use proptest::prelude::*;

    /// Reads one frame of `bytes` as a `T`, as every endpoint reads what a peer sent.
    fn read_one<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<(T, Bytes)>, FrameError> {
        let limits = Limits { header_bytes_max: 4096, bulk_bytes_max: 4096 };
        decode::<T>(bytes, limits).map(|frame| frame.map(|(frame, _rest)| frame))
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
            let _ = read_one::<MonRequest>(&bytes);
            let _ = read_one::<OsdRequest>(&bytes);
            let _ = read_one::<Response>(&bytes);
            let _ = read_one::<MonRequest>(&framed(&bytes, bulk_len));
            let _ = read_one::<OsdRequest>(&framed(&bytes, bulk_len));
            let _ = read_one::<Response>(&framed(&bytes, bulk_len));
        }

        /// Valid frames with bytes flipped or cut off: a message or a named error.
        #[test]
        fn mangled_frames_never_panic_the_frame_decoders(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let request = OsdRequest::Ping { sent_ms: 7 };
            let good = encode(&request, b"bulk bytes").unwrap();
            let mut bytes = good.clone();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= byte;
            }
            let _ = read_one::<OsdRequest>(&bytes);
            let _ = read_one::<MonRequest>(&bytes);
            // A good frame cut short is never taken for a message.
            let len = cut.index(good.len());
            match read_one::<OsdRequest>(&good[..len]) {
                Ok(None) => prop_assert_eq!(len, 0),
                Ok(Some(_)) => prop_assert!(false, "{len} of {} bytes decoded", good.len()),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut bytes = encode(&("hello", 42u32), b"bulk").unwrap();
        bytes.extend(encode(&("again", 7u32), b"").unwrap());
        let ((message, bulk), rest) =
            decode::<(String, u32)>(&bytes, Limits::default()).unwrap().unwrap();
        assert_eq!((message, &bulk[..]), (("hello".to_owned(), 42), &b"bulk"[..]));
        let ((message, bulk), rest) =
            decode::<(String, u32)>(rest, Limits::default()).unwrap().unwrap();
        assert_eq!((message, bulk.len()), (("again".to_owned(), 7), 0));
        assert!(decode::<(String, u32)>(rest, Limits::default()).unwrap().is_none());
    }

    #[test]
    fn bad_frames_are_named_errors() {
        let good = encode(&u64::MAX, b"").unwrap();
        let read = |bytes: &[u8], limits| decode::<u64>(bytes, limits).map(|f| f.map(|f| f.0));
        let mut version = good.clone();
        version[0] = 9;
        assert!(matches!(read(&version, Limits::default()), Err(FrameError::Version(9))));
        let tight = Limits { header_bytes_max: 0, bulk_bytes_max: 0 };
        assert!(matches!(read(&good, tight), Err(FrameError::TooLarge { what: "message", .. })));
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read(&huge, Limits::default()),
            Err(FrameError::TooLarge { what: "bulk payload", .. })
        ));
        assert!(matches!(read(&good[..5], Limits::default()), Err(FrameError::Truncated(_))));
        assert!(matches!(
            read(&good[..PREFIX_BYTES + 2], Limits::default()),
            Err(FrameError::Truncated(_))
        ));
        let garbage = encode(&vec![0xffu8; 10], b"").unwrap();
        assert!(matches!(read(&garbage, Limits::default()), Err(FrameError::Malformed(_))));
    }
}
