//! The binary encoding of maps and incrementals, for disk and wire.
//!
//! Layout: 8-byte magic, format version (u16 LE), payload length (u32 LE), crc32c of the
//! payload (u32 LE), then the payload in postcard. The version says how to read the payload;
//! when the contents change, the version goes up and the decoder keeps reading the old one.
//! Decoding trusts nothing: sizes are bounded before anything is allocated, the checksum is
//! verified before the payload is parsed, and a decoded map is validated like any other.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::MapError;
use crate::error::DecodeError;
use crate::incremental::{CHANGES_MAX, Incremental};
use crate::osdmap::{MapContents, OsdMap};

const MAP_MAGIC: &[u8; 8] = b"CAIRNMAP";
const INCREMENTAL_MAGIC: &[u8; 8] = b"CAIRNINC";
const HEADER_BYTES: usize = 8 + 2 + 4 + 4;

/// Current format versions. Version 1 is the first.
pub const MAP_FORMAT_VERSION: u16 = 1;
pub const INCREMENTAL_FORMAT_VERSION: u16 = 1;

/// Upper bound on an encoded map (a map of a million OSDs is well below it).
pub const MAP_BYTES_MAX: usize = 256 << 20;
/// Upper bound on an encoded incremental.
pub const INCREMENTAL_BYTES_MAX: usize = 64 << 20;

/// True when `bytes` start like an encoded map.
pub fn looks_like_map(bytes: &[u8]) -> bool {
    bytes.starts_with(MAP_MAGIC)
}

/// Encodes a map; refused when it would be too large to decode again.
pub fn encode_map(map: &OsdMap) -> Result<Vec<u8>, MapError> {
    let bytes = seal(MAP_MAGIC, MAP_FORMAT_VERSION, map.contents());
    if bytes.len() > MAP_BYTES_MAX {
        return Err(MapError::Limit { what: "encoded map bytes", limit: MAP_BYTES_MAX as u64 });
    }
    Ok(bytes)
}

/// A fingerprint of a map's contents: the crc32c of its encoding. Two daemons at one epoch
/// with different hashes disagree about the map, which must never happen (`cairn recon`
/// and health compare them).
pub fn map_hash(map: &OsdMap) -> u32 {
    let bytes = seal(MAP_MAGIC, MAP_FORMAT_VERSION, map.contents());
    crc32c::crc32c(&bytes)
}

pub fn decode_map(bytes: &[u8]) -> Result<OsdMap, DecodeError> {
    const WHAT: &str = "map";
    let (_version, payload) = open(MAP_MAGIC, WHAT, MAP_FORMAT_VERSION, MAP_BYTES_MAX, bytes)?;
    let contents: MapContents = parse(WHAT, payload)?;
    OsdMap::new(contents).map_err(|source| DecodeError::Invalid { what: WHAT, source })
}

/// Encodes an incremental; refused when it would be too large to decode again.
pub fn encode_incremental(inc: &Incremental) -> Result<Vec<u8>, MapError> {
    let bytes = seal(INCREMENTAL_MAGIC, INCREMENTAL_FORMAT_VERSION, inc);
    if bytes.len() > INCREMENTAL_BYTES_MAX || inc.changes.len() > CHANGES_MAX {
        let limit = INCREMENTAL_BYTES_MAX as u64;
        return Err(MapError::Limit { what: "encoded incremental bytes", limit });
    }
    Ok(bytes)
}

pub fn decode_incremental(bytes: &[u8]) -> Result<Incremental, DecodeError> {
    const WHAT: &str = "incremental";
    let (_version, payload) =
        open(INCREMENTAL_MAGIC, WHAT, INCREMENTAL_FORMAT_VERSION, INCREMENTAL_BYTES_MAX, bytes)?;
    let inc: Incremental = parse(WHAT, payload)?;
    if inc.changes.len() > CHANGES_MAX {
        return Err(DecodeError::TooLarge {
            what: "incremental changes",
            len: inc.changes.len(),
            limit: CHANGES_MAX,
        });
    }
    Ok(inc)
}

fn seal(magic: &[u8; 8], version: u16, value: &impl Serialize) -> Vec<u8> {
    let payload = postcard::to_stdvec(value).expect("map types always serialise");
    let len = u32::try_from(payload.len()).expect("payload below 4 GiB");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Checks the envelope and returns the format version and the payload.
fn open<'a>(
    magic: &[u8; 8],
    what: &'static str,
    supported: u16,
    limit: usize,
    bytes: &'a [u8],
) -> Result<(u16, &'a [u8]), DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { what, len: bytes.len(), limit });
    }
    if bytes.len() < HEADER_BYTES {
        if !bytes.is_empty() && !magic.starts_with(&bytes[..bytes.len().min(8)]) {
            return Err(DecodeError::BadMagic { expected: what });
        }
        return Err(DecodeError::Truncated { what, len: bytes.len(), need: HEADER_BYTES });
    }
    if &bytes[..8] != magic {
        return Err(DecodeError::BadMagic { expected: what });
    }
    let field = |at: usize, n: usize| &bytes[at..at + n];
    let version = u16::from_le_bytes(field(8, 2).try_into().expect("2 bytes"));
    let len = u32::from_le_bytes(field(10, 4).try_into().expect("4 bytes")) as usize;
    let stored = u32::from_le_bytes(field(14, 4).try_into().expect("4 bytes"));
    if version == 0 || version > supported {
        return Err(DecodeError::UnsupportedVersion { what, version, supported });
    }
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() < len {
        return Err(DecodeError::Truncated { what, len: bytes.len(), need: HEADER_BYTES + len });
    }
    if payload.len() > len {
        let reason = format!("{} bytes after the payload", payload.len() - len);
        return Err(DecodeError::Payload { what, reason });
    }
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(DecodeError::Checksum { what, stored, computed });
    }
    Ok((version, payload))
}

fn parse<T: DeserializeOwned>(what: &'static str, payload: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes::<T>(payload)
        .map_err(|e| DecodeError::Payload { what, reason: e.to_string() })?;
    if !rest.is_empty() {
        return Err(DecodeError::Payload {
            what,
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}
