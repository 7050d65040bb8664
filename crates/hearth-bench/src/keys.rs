//! Keys and values the workloads write, made as etcd's benchmark makes them: a key is the
//! index in the key space as a Go `binary.PutVarint` (zig-zag, base-128) padded with zero bytes
//! to `--key-size`; a value is random bytes.
//!
//! Randomness comes from one per-run seed. Values are drawn once from `fastrand` (the
//! generator the tests use too). Per-request choices (a random key, read or write) are a hash
//! of the seed and the request index ([`mix64`], SplitMix64's output function) rather than draws
//! from a generator: requests are numbered and served by many tasks at once, and a hash needs no
//! shared, locked generator state.

use anyhow::{bail, Result};

/// SplitMix64's output function: a well-mixed 64-bit hash of `x`.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A fresh per-run seed.
pub fn seed() -> u64 {
    fastrand::u64(..)
}

/// A uniformly distributed float in `[0, 1)` derived from `(seed, i)`.
pub fn unit_f64(seed: u64, i: u64) -> f64 {
    (mix64(seed ^ mix64(i)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Go's `binary.PutVarint`: zig-zag, then base-128 little-endian groups.
pub fn varint(v: i64) -> Vec<u8> {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::with_capacity(10);
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
    out
}

/// `n` random bytes drawn from `seed`: the value written by the workloads.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    fastrand::Rng::with_seed(seed).fill(&mut out);
    out
}

/// The keys of a workload: `space` keys of `size` bytes each, picked in order or at random.
#[derive(Clone, Debug)]
pub struct KeySpace {
    size: usize,
    space: u64,
    sequential: bool,
    seed: u64,
}

impl KeySpace {
    pub fn new(size: usize, space: u64, sequential: bool, seed: u64) -> Result<KeySpace> {
        if space == 0 {
            bail!("expected positive --key-space-size, got 0");
        }
        let needed = varint((space - 1) as i64).len();
        if size < needed {
            bail!(
                "--key-size {size} is too small for --key-space-size {space}: keys need {needed} bytes"
            );
        }
        Ok(KeySpace {
            size,
            space,
            sequential,
            seed,
        })
    }

    /// The key with index `idx` (taken modulo the key space).
    pub fn key_at(&self, idx: u64) -> Vec<u8> {
        let mut k = varint((idx % self.space) as i64);
        k.resize(self.size, 0);
        k
    }

    /// The key of request `i`: index `i` in order with `--sequential-keys`, else random.
    pub fn key_for(&self, i: u64) -> Vec<u8> {
        if self.sequential {
            self.key_at(i)
        } else {
            self.key_at(mix64(self.seed ^ mix64(i)) % self.space)
        }
    }
}

/// A put's sequence number carried in its value (big-endian, padded to `len` >= 8), so that a
/// watch event can be traced back to the put that caused it.
pub fn encode_seq(seq: u64, len: usize) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.resize(len.max(8), b'.');
    v
}

pub fn decode_seq(value: &[u8]) -> Option<u64> {
    value
        .get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_matches_go() {
        // Values from Go's binary.PutVarint.
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x02]);
        assert_eq!(varint(-1), [0x01]);
        assert_eq!(varint(63), [0x7e]);
        assert_eq!(varint(64), [0x80, 0x01]);
        assert_eq!(varint(300), [0xd8, 0x04]);
    }

    #[test]
    fn keys_are_padded_and_bounded() {
        let ks = KeySpace::new(8, 100, true, 1).unwrap();
        assert_eq!(ks.key_for(0), vec![0; 8]);
        assert_eq!(ks.key_for(101), [0x02, 0, 0, 0, 0, 0, 0, 0]);
        let ks = KeySpace::new(4, 10, false, 42).unwrap();
        let distinct: std::collections::BTreeSet<Vec<u8>> =
            (0..1000).map(|i| ks.key_for(i)).collect();
        assert_eq!(distinct.len(), 10);
        assert!(distinct.iter().all(|k| k.len() == 4));
    }

    #[test]
    fn key_space_is_validated() {
        assert!(KeySpace::new(8, 0, false, 0).is_err());
        assert!(KeySpace::new(1, 64, false, 0).is_ok());
        assert!(KeySpace::new(1, 65, false, 0).is_err());
    }

    #[test]
    fn seq_round_trips() {
        let v = encode_seq(1234, 32);
        assert_eq!(v.len(), 32);
        assert_eq!(decode_seq(&v), Some(1234));
        assert_eq!(encode_seq(7, 0).len(), 8);
        assert_eq!(decode_seq(b"short"), None);
    }

    #[test]
    fn randomness_is_deterministic_per_seed() {
        assert_eq!(random_bytes(5, 13), random_bytes(5, 13));
        assert_eq!(random_bytes(5, 13).len(), 13);
        assert_ne!(random_bytes(5, 16), random_bytes(6, 16));
        let u = unit_f64(9, 3);
        assert!((0.0..1.0).contains(&u));
    }
}
