//! Keeping a map up to date from what the monitors send: a full map, incrementals, or both.

use placement::OsdMap;
use placement::encoding::{decode_incremental, decode_map};
use proto::message::MapBundle;

pub fn decode_bundle(bulk: &[u8]) -> Result<MapBundle, String> {
    postcard::from_bytes(bulk).map_err(|e| format!("map bundle does not decode: {e}"))
}

/// The map after applying `bundle` to `current`. A full map or incrementals older than
/// the map held are skipped (a monitor that lags can send them); an incremental that does
/// not follow on is an error (the caller asks for a full map).
/// Every map newer than `current` that a bundle makes, oldest first: each incremental's
/// result in turn (a full map counts as one, when newer).
pub fn apply_bundle_each(
    current: Option<&OsdMap>,
    bundle: &MapBundle,
) -> Result<Vec<OsdMap>, String> {
    let mut out: Vec<OsdMap> = Vec::new();
    if let Some(bytes) = &bundle.full {
        let full = decode_map(bytes).map_err(|e| e.to_string())?;
        if current.is_none_or(|c| full.epoch() > c.epoch()) {
            out.push(full);
        }
    }
    for bytes in &bundle.incrementals {
        let inc = decode_incremental(bytes).map_err(|e| e.to_string())?;
        let base = out.last().or(current).ok_or("incrementals without a map to apply them to")?;
        if inc.base < base.epoch() {
            continue;
        }
        let next = base.apply(&inc).map_err(|e| e.to_string())?;
        out.push(next);
    }
    Ok(out)
}

pub fn apply_bundle(current: Option<OsdMap>, bundle: &MapBundle) -> Result<OsdMap, String> {
    let mut map = match &bundle.full {
        Some(bytes) => {
            let full = decode_map(bytes).map_err(|e| e.to_string())?;
            match current {
                Some(current) if current.epoch() > full.epoch() => Some(current),
                _ => Some(full),
            }
        }
        None => current,
    };
    for bytes in &bundle.incrementals {
        let inc = decode_incremental(bytes).map_err(|e| e.to_string())?;
        let base = map.as_ref().ok_or("incrementals without a map to apply them to")?;
        if inc.base < base.epoch() {
            continue;
        }
        map = Some(base.apply(&inc).map_err(|e| e.to_string())?);
    }
    map.ok_or_else(|| "the monitors sent no map".into())
}
