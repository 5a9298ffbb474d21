//! The stable functions of placement: object name hash, stable modulo, PG placement seed,
//! straw2 draws and the fixed-point logarithm they use.
//!
//! Everything here is part of the cluster's data format: every daemon and client must compute
//! the same values on every platform, forever, or data becomes unreachable. So it is integer
//! arithmetic only (no floating point, whose `ln` differs between libm builds), wrapping
//! operations spelled out, and golden values pinned by tests. Changing any constant moves
//! data; a new scheme would need a new `HASH_VERSION` carried in the map.
//!
//! The mixers are well-studied bijections: `mix32` is Wellons' "lowbias32", `mix64` is the
//! splitmix64 finaliser. Because both are bijective, two different items never draw the same
//! value from the same seed, so straw2 has no ties to break.

use xxhash_rust::xxh3::Xxh3;

/// The version of the functions in this file. Stored in every map.
pub const HASH_VERSION: u32 = 1;

/// Separates a namespace from an object name in the name hash (ASCII unit separator).
const NAMESPACE_SEPARATOR: u8 = 0x1f;

/// Salts that keep the different uses of `mix64` apart.
const PG_SEED_SALT: u64 = 0x5047_5345_4544_0001; // "PGSEED" v1
const REJECT_SALT: u64 = 0x5245_4a45_4354_0001; // "REJECT" v1
const ITEM_KEY_SALT: u32 = 0x9e37_79b9;

/// 32-bit bijective mixer ("lowbias32").
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// 64-bit bijective mixer (the splitmix64 finaliser).
#[inline(always)]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of an object's name within a namespace (the empty namespace is the default).
pub fn object_hash(namespace: &str, name: &[u8]) -> u32 {
    let mut hasher = Xxh3::new();
    if !namespace.is_empty() {
        hasher.update(namespace.as_bytes());
        hasher.update(&[NAMESPACE_SEPARATOR]);
    }
    hasher.update(name);
    let h = hasher.digest();
    (h ^ (h >> 32)) as u32
}

/// Bit mask covering `n` rounded up to a power of two (the `pg_num_mask` of Ceph).
pub fn stable_mask(n: u32) -> u32 {
    assert!(n > 0 && n <= 1 << 31, "stable_mask of {n}");
    n.next_power_of_two() - 1
}

/// Maps `x` into `0..n` so that growing `n` by one splits exactly one bucket: the values that
/// move all go to the new bucket `n`, and all come from bucket `n - 2^k`. This is what lets a
/// pool's `pg_num` grow by splitting PGs instead of reshuffling every object.
#[inline]
pub fn stable_mod(x: u32, n: u32, mask: u32) -> u32 {
    debug_assert!(n > 0 && mask >= n - 1 && mask >> 1 < n);
    if x & mask < n { x & mask } else { x & (mask >> 1) }
}

/// The CRUSH input of a PG: mixes the pool in so that PG `1.0` and PG `2.0` land apart.
#[inline]
pub fn pg_placement_seed(pool: u32, placement_seed: u32) -> u32 {
    (mix64((u64::from(pool) << 32 | u64::from(placement_seed)) ^ PG_SEED_SALT) >> 32) as u32
}

/// Per-item key, computed once per map: a bijection of the item id.
#[inline]
pub const fn item_key(id: i32) -> u32 {
    mix32((id as u32) ^ ITEM_KEY_SALT)
}

/// The seed shared by every item of one straw2 draw for input `x`, attempt `r`.
#[inline(always)]
pub fn draw_seed(x: u32, r: u32) -> u32 {
    (mix64(u64::from(x) << 32 | u64::from(r)) >> 32) as u32
}

/// An item's straw: uniform in `u32`, independent across items, inputs and attempts.
#[inline(always)]
pub fn draw(seed: u32, key: u32) -> u32 {
    mix32(seed ^ key)
}

/// A 16-bit uniform value deciding whether OSD `key` keeps input `x` under a reweight.
#[inline]
pub fn reject_draw(x: u32, key: u32) -> u32 {
    let seed = (mix64(u64::from(x) << 32 ^ REJECT_SALT) >> 32) as u32;
    mix32(seed ^ key) & 0xffff
}

/// Fractional bits of the fixed-point logarithms below.
pub const LOG_FRACTION_BITS: u32 = 24;

/// `-log2(u+1 / 2^32)` in Q24: the straw2 "length" of draw `u`, in `[0, 32 << 24]`.
///
/// Dividing it by an item's weight gives an exponentially distributed value with rate equal
/// to the weight; the smallest wins, so each item wins in proportion to its weight, and an
/// item's result does not depend on the other items' weights (minimal data movement).
#[inline(always)]
pub fn neg_log2_q24(u: u32) -> u64 {
    (32 << LOG_FRACTION_BITS) - log2_q24(u64::from(u) + 1)
}

/// Interpolation table entries: `log2(1 + i/1024)` for `i` in `0..=1024`, in Q32.
const LOG2_TABLE_BITS: u32 = 10;
const LOG2_TABLE_LEN: usize = (1 << LOG2_TABLE_BITS) + 1;
static LOG2_TABLE: [u64; LOG2_TABLE_LEN] = build_log2_table();

/// `log2(v)` in Q24 for `v` in `[1, 2^32]`, by table lookup and linear interpolation.
/// Absolute error below 2^-22, monotonic non-decreasing in `v`.
#[inline(always)]
pub fn log2_q24(v: u64) -> u64 {
    debug_assert!((1..=1 << 32).contains(&v));
    let integer = 63 - u64::from(v.leading_zeros());
    // The bits after the leading one, as a 64-bit fraction.
    let fraction = (v << (63 - integer)) << 1;
    let index = (fraction >> (64 - LOG2_TABLE_BITS)) as usize;
    let rest = (fraction >> (32 - LOG2_TABLE_BITS)) & 0xffff_ffff;
    let low = LOG2_TABLE[index];
    let high = LOG2_TABLE[index + 1];
    let interpolated = low + (((high - low) * rest) >> 32);
    (integer << LOG_FRACTION_BITS) + (interpolated >> (32 - LOG_FRACTION_BITS))
}

/// Builds the table with integer arithmetic only (bit-by-bit logarithm by repeated squaring),
/// so it is identical everywhere and needs no committed blob.
const fn build_log2_table() -> [u64; LOG2_TABLE_LEN] {
    const Q: u32 = 62;
    let mut table = [0u64; LOG2_TABLE_LEN];
    let mut i = 0;
    while i < LOG2_TABLE_LEN - 1 {
        // y = 1 + i/1024 in Q62.
        let mut y: u128 = ((1u128 << LOG2_TABLE_BITS) + i as u128) << (Q - LOG2_TABLE_BITS);
        let mut result: u64 = 0;
        let mut bit = 0;
        while bit < 32 {
            y = (y * y) >> Q;
            if y >= 2u128 << Q {
                y >>= 1;
                result |= 1 << (31 - bit);
            }
            bit += 1;
        }
        table[i] = result;
        i += 1;
    }
    table[LOG2_TABLE_LEN - 1] = 1 << 32;
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_values_never_change() {
        // These pin the data format: if one changes, every cluster's data moves.
        assert_eq!(mix32(0), 0);
        assert_eq!(object_hash("", b"rbd_header.1234"), 0x13a4_b31f);
        assert_eq!(object_hash("ns", b"obj"), 0x39c7_3fb5);
        assert_eq!(pg_placement_seed(1, 0), 0xefc4_dd77);
        assert_eq!(draw(draw_seed(7, 0), item_key(-1)), 0xf316_abf0);
        assert_eq!(reject_draw(7, item_key(3)), 0x06f9);
        assert_eq!(neg_log2_q24(0), 32 << 24);
        assert_eq!(neg_log2_q24(u32::MAX), 0);
    }

    #[test]
    fn namespace_changes_the_hash() {
        assert_ne!(object_hash("", b"a"), object_hash("x", b"a"));
        assert_ne!(object_hash("a", b"b"), object_hash("", b"a\x1fb").wrapping_add(1));
    }

    #[test]
    fn log2_matches_float_closely_and_is_monotonic() {
        let mut previous = 0;
        for v in (1u64..=1 << 32).step_by(65_521).chain([1, 2, 3, 1 << 31, 1 << 32]) {
            let got = log2_q24(v) as f64 / f64::from(1u32 << 24);
            let want = (v as f64).log2();
            assert!((got - want).abs() < 1e-6, "log2({v}) = {got}, want {want}");
        }
        for v in 1u64..200_000 {
            let now = log2_q24(v);
            assert!(now >= previous, "log2 not monotonic at {v}");
            previous = now;
        }
    }

    #[test]
    fn stable_mod_splits_one_bucket_at_a_time() {
        for n in 1u32..300 {
            let mask = stable_mask(n);
            let grown_mask = stable_mask(n + 1);
            for x in 0u32..2048 {
                let before = stable_mod(x, n, mask);
                let after = stable_mod(x, n + 1, grown_mask);
                assert!(before < n && after <= n);
                if before != after {
                    assert_eq!(after, n, "x={x} n={n}: moved to {after}, not the new bucket");
                }
            }
        }
    }
}
