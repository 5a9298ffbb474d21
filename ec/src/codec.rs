//! The Reed-Solomon code: k data shards in, m parity shards out; any k of the k + m
//! shards give back the others. reed-solomon-simd does the arithmetic (Leopard-RS's
//! O(n log n) code over GF(2^16), SIMD chosen at run time).
//!
//! The code works on each position of the shards alike, so encoding shards that are
//! runs of whole chunks gives the same parity as encoding each chunk's stripe apart
//! (tested below): a 4 MiB write is one call, not one per stripe.

use std::cell::RefCell;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::EcError;

/// Shard lengths are multiples of this: the codec's block (64 bytes, 32 symbols of 16
/// bits in two halves). Chunk sizes must be multiples of it, which keeps the codec's
/// positions aligned with stripes.
pub const SHARD_ALIGN: usize = 64;

thread_local! {
    // An encoder and a decoder per thread, reset for each use: making one allocates its
    // working space (megabytes for large shards: fresh pages each time), which cost more
    // than the encoding itself below 1 MiB shards (bench/RESULTS.md).
    static ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
}

/// Data and parity shards one code may have (Ceph allows more; past this, a PG spans more
/// failure domains than clusters have).
pub const SHARDS_MAX: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    k: usize,
    m: usize,
}

impl Codec {
    pub fn new(k: usize, m: usize) -> Result<Codec, EcError> {
        if k == 0 || m == 0 || k + m > SHARDS_MAX {
            return Err(EcError::Profile(format!(
                "k={k} m={m}: k and m must be at least 1 and k + m at most {SHARDS_MAX}"
            )));
        }
        Ok(Codec { k, m })
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn m(&self) -> usize {
        self.m
    }

    fn check_len(&self, len: usize) -> Result<(), EcError> {
        if len == 0 || !len.is_multiple_of(SHARD_ALIGN) {
            return Err(EcError::ShardSize { len, align: SHARD_ALIGN });
        }
        Ok(())
    }

    /// The m parity shards of k data shards of one length (a non-zero multiple of
    /// `SHARD_ALIGN`).
    pub fn encode(&self, data: &[&[u8]]) -> Result<Vec<Vec<u8>>, EcError> {
        if data.len() != self.k {
            return Err(EcError::ShardCount { got: data.len(), want: self.k });
        }
        let len = data[0].len();
        self.check_len(len)?;
        if let Some(other) = data.iter().find(|d| d.len() != len) {
            return Err(EcError::Mismatch { len, other: other.len() });
        }
        ENCODER.with_borrow_mut(|cached| {
            let encoder = match cached {
                Some(encoder) => {
                    encoder.reset(self.k, self.m, len).map_err(codec_error)?;
                    encoder
                }
                None => cached
                    .insert(ReedSolomonEncoder::new(self.k, self.m, len).map_err(codec_error)?),
            };
            for shard in data {
                encoder.add_original_shard(shard).map_err(codec_error)?;
            }
            let result = encoder.encode().map_err(codec_error)?;
            Ok(result.recovery_iter().map(<[u8]>::to_vec).collect())
        })
    }

    /// Fills in every missing shard (`None`) of `shards` (k data then m parity, all
    /// present ones of one length) from any k present ones.
    pub fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), EcError> {
        if shards.len() != self.k + self.m {
            return Err(EcError::ShardCount { got: shards.len(), want: self.k + self.m });
        }
        let present = shards.iter().filter(|s| s.is_some()).count();
        if present == shards.len() {
            return Ok(());
        }
        if present < self.k {
            return Err(EcError::TooFewShards { have: present, need: self.k });
        }
        let len = shards.iter().flatten().next().map_or(0, Vec::len);
        self.check_len(len)?;
        if let Some(other) = shards.iter().flatten().find(|s| s.len() != len) {
            return Err(EcError::Mismatch { len, other: other.len() });
        }
        let data_missing = shards[..self.k].iter().any(Option::is_none);
        if data_missing {
            let restored = DECODER.with_borrow_mut(|cached| {
                let decoder = match cached {
                    Some(decoder) => {
                        decoder.reset(self.k, self.m, len).map_err(codec_error)?;
                        decoder
                    }
                    None => cached
                        .insert(ReedSolomonDecoder::new(self.k, self.m, len).map_err(codec_error)?),
                };
                for (i, shard) in shards.iter().enumerate() {
                    match shard {
                        Some(s) if i < self.k => decoder.add_original_shard(i, s),
                        Some(s) => decoder.add_recovery_shard(i - self.k, s),
                        None => Ok(()),
                    }
                    .map_err(codec_error)?;
                }
                let result = decoder.decode().map_err(codec_error)?;
                let restored: Vec<(usize, Vec<u8>)> =
                    result.restored_original_iter().map(|(i, s)| (i, s.to_vec())).collect();
                Ok::<_, EcError>(restored)
            })?;
            for (i, shard) in restored {
                shards[i] = Some(shard);
            }
        }
        // The data is whole now; missing parity is encoded again.
        if shards[self.k..].iter().any(Option::is_none) {
            let data: Vec<&[u8]> =
                shards[..self.k].iter().map(|s| s.as_deref().expect("restored")).collect();
            let parity = self.encode(&data)?;
            for (slot, p) in shards[self.k..].iter_mut().zip(parity) {
                if slot.is_none() {
                    *slot = Some(p);
                }
            }
        }
        Ok(())
    }
}

/// What a parity check of one run of shards found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// The parity shards are what the data shards encode to.
    Consistent,
    /// Every shard but this one agrees: it is the bad one.
    Bad(usize),
    /// The shards disagree and no single shard explains it (with m = 1 any one could).
    Undecided,
}

impl Codec {
    /// Checks k + m shards of one length (data then parity) against each other. On a
    /// mismatch, each shard in turn is set aside and the others decoded: the shard whose
    /// absence makes the rest agree is the bad one, if exactly one does (it takes m >= 2:
    /// with m = 1, the other k shards always agree with themselves).
    pub fn check(&self, shards: &[&[u8]]) -> Result<Parity, EcError> {
        let (k, n) = (self.k, self.k + self.m);
        if shards.len() != n {
            return Err(EcError::ShardCount { got: shards.len(), want: n });
        }
        if self.encode(&shards[..k])?.iter().zip(&shards[k..]).all(|(p, s)| p[..] == s[..]) {
            return Ok(Parity::Consistent);
        }
        let mut explains = Vec::new();
        for aside in 0..n {
            // Decode everything from the first k others, then compare the rest.
            let mut used = 0;
            let mut partial: Vec<Option<Vec<u8>>> = shards
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let take = i != aside && used < k;
                    used += usize::from(take);
                    take.then(|| s.to_vec())
                })
                .collect();
            self.reconstruct(&mut partial)?;
            let agree =
                (0..n).filter(|&i| i != aside).all(|i| partial[i].as_deref() == Some(shards[i]));
            if agree {
                explains.push(aside);
            }
        }
        Ok(match explains[..] {
            [bad] => Parity::Bad(bad),
            _ => Parity::Undecided,
        })
    }
}

fn codec_error(e: reed_solomon_simd::Error) -> EcError {
    EcError::Codec(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(k: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| {
                (0..len).map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed ^ i as u8)).collect()
            })
            .collect()
    }

    #[test]
    fn any_k_shards_give_back_the_rest() {
        for (k, m) in [(2, 1), (4, 2), (3, 3), (8, 3)] {
            let codec = Codec::new(k, m).unwrap();
            let data = shards(k, 4096, 7);
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let parity = codec.encode(&refs).unwrap();
            assert_eq!(parity.len(), m);
            let all: Vec<Vec<u8>> = data.iter().cloned().chain(parity).collect();
            // Every way of losing m shards.
            for lost in 0u32..(1 << (k + m)) {
                if lost.count_ones() as usize != m {
                    continue;
                }
                let mut partial: Vec<Option<Vec<u8>>> = all
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (lost & (1 << i) == 0).then(|| s.clone()))
                    .collect();
                codec.reconstruct(&mut partial).unwrap();
                let back: Vec<Vec<u8>> = partial.into_iter().map(Option::unwrap).collect();
                assert!(back == all, "k={k} m={m} lost {lost:b}");
            }
        }
    }

    #[test]
    fn encoding_a_run_of_stripes_at_once_equals_encoding_each() {
        let codec = Codec::new(4, 2).unwrap();
        let chunk = 4096;
        let stripes = 5;
        let data = shards(4, chunk * stripes, 3);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let whole = codec.encode(&refs).unwrap();
        for s in 0..stripes {
            let part: Vec<&[u8]> = data.iter().map(|d| &d[s * chunk..(s + 1) * chunk]).collect();
            let parity = codec.encode(&part).unwrap();
            for (p, w) in parity.iter().zip(&whole) {
                assert!(p[..] == w[s * chunk..(s + 1) * chunk], "stripe {s}");
            }
        }
        // Down to the codec's block: a 64-byte chunk.
        let part: Vec<&[u8]> = data.iter().map(|d| &d[64..128]).collect();
        let parity = codec.encode(&part).unwrap();
        assert!(parity[1][..] == whole[1][64..128]);
    }

    fn view(all: &[Vec<u8>]) -> Vec<&[u8]> {
        all.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn a_parity_check_finds_the_one_bad_shard_when_m_allows() {
        for (k, m) in [(2, 2), (4, 2), (3, 3)] {
            let codec = Codec::new(k, m).unwrap();
            let data = shards(k, 256, 5);
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let all: Vec<Vec<u8>> =
                data.iter().cloned().chain(codec.encode(&refs).unwrap()).collect();
            assert_eq!(codec.check(&view(&all)).unwrap(), Parity::Consistent);
            for bad in 0..k + m {
                let mut wrong = all.clone();
                wrong[bad][100] ^= 0x5a;
                assert_eq!(codec.check(&view(&wrong)).unwrap(), Parity::Bad(bad), "k={k} m={m}");
            }
        }
        // With m = 1 a mismatch is found but any shard could be the bad one.
        let codec = Codec::new(2, 1).unwrap();
        let data = shards(2, 128, 9);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut all: Vec<Vec<u8>> =
            data.iter().cloned().chain(codec.encode(&refs).unwrap()).collect();
        assert_eq!(codec.check(&view(&all)).unwrap(), Parity::Consistent);
        all[1][3] ^= 1;
        assert_eq!(codec.check(&view(&all)).unwrap(), Parity::Undecided);
        assert!(matches!(
            codec.check(&view(&all)[..2]),
            Err(EcError::ShardCount { got: 2, want: 3 })
        ));
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Codec::new(0, 2).is_err());
        assert!(Codec::new(4, 0).is_err());
        assert!(Codec::new(30, 3).is_err());
        let codec = Codec::new(2, 1).unwrap();
        let a = vec![0u8; 64];
        let b = vec![0u8; 128];
        assert!(matches!(codec.encode(&[&a]), Err(EcError::ShardCount { got: 1, want: 2 })));
        assert!(matches!(codec.encode(&[&a, &b]), Err(EcError::Mismatch { .. })));
        assert!(matches!(codec.encode(&[&a[..10], &a[..10]]), Err(EcError::ShardSize { .. })));
        let mut two_lost = vec![Some(a.clone()), None, None];
        assert!(matches!(
            codec.reconstruct(&mut two_lost),
            Err(EcError::TooFewShards { have: 1, need: 2 })
        ));
    }
}
