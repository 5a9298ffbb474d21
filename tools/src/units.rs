//! Byte counts as people write and read them: `4K`, `64M` on the command line, `3.5 GiB`
//! in reports (binary units, as Ceph prints them).

/// `12 KiB`, `3.5 GiB`: binary units, as Ceph prints them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `4096`, `4K`, `4M`: binary units, up to the object size limit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let size = parse_bytes(text)?;
    if size == 0 || size > objectstore::OBJECT_BYTES_MAX {
        return Err(format!(
            "the size must be 1 byte to {} MiB",
            objectstore::OBJECT_BYTES_MAX >> 20
        ));
    }
    Ok(size)
}

/// A byte count: `4096`, `4K`, `64M`, `2G`, `1T` (binary units).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let n: u64 =
        digits.parse().map_err(|_| format!("'{text}' is not a size like 4096, 4K, 4M, 2G"))?;
    let shift = match unit {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        "T" | "t" | "TiB" => 40,
        _ => return Err(format!("'{text}': the unit must be K, M, G or T")),
    };
    n.checked_shl(shift).filter(|s| s >> shift == n).ok_or_else(|| "size too large".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_ceph() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn sizes_parse_like_rados_bench() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4G").unwrap_err().contains("128 MiB"));
        assert!(parse_size("4X").unwrap_err().contains("unit"));
        assert!(parse_size("129M").unwrap_err().contains("128 MiB"));
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn capacities_take_bigger_units() {
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("3TiB"), Ok(3 << 40));
        assert!(parse_bytes("G").unwrap_err().contains("not a size"));
        assert!(parse_bytes("99999999T").unwrap_err().contains("too large"));
    }
}
