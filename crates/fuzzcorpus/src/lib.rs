//! The bounded runs of Hearth's fuzz targets (`fuzz/`, see `docs/fuzzing.md`) as ordinary tests.
//!
//! Each library crate with a fuzz entry (`fuzz_<name>(&[u8])`) runs it from its unit tests on a
//! corpus built here: the valid encodings the test supplies, then mutations of them (bit flips,
//! truncations, insertions, splices of two inputs, length fields set to extremes), a fixed number of
//! them from a fixed seed, so a failure replays exactly. `HEARTH_FUZZ_SEED` and
//! `HEARTH_FUZZ_ITERATIONS` change the seed and the number of mutations for a longer run.
//!
//! The tradeoff against coverage-guided fuzzing (`cargo fuzz`): no feedback, so deep states are
//! reached only from the valid seeds; in exchange it runs on stable Rust, in `cargo test`, in a
//! fraction of a second. Only a dev-dependency; nothing here reaches a binary.

#![forbid(unsafe_code)]

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Integers a length or count field is set to: the extremes and their neighbours.
const EXTREMES: [u64; 10] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    i64::MAX as u64,
    u64::MAX,
];

/// A seeded generator of mutated inputs.
pub struct Mutator {
    rng: fastrand::Rng,
}

impl Mutator {
    /// A mutator whose choices are fixed by `seed`.
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The generator, for tests that build structured inputs of their own.
    pub fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }

    /// A copy of `input` with one to four mutations; `other` is what a splice takes its tail from.
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..self.rng.usize(1..=4) {
            self.mutate_once(&mut v, other);
        }
        v
    }

    fn mutate_once(&mut self, v: &mut Vec<u8>, other: &[u8]) {
        let rng = &mut self.rng;
        let at = |rng: &mut fastrand::Rng, v: &Vec<u8>| rng.usize(..=v.len());
        match rng.u8(..10) {
            // Flip one bit.
            0 | 1 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                v[i] ^= 1 << rng.u8(..8);
            }
            // Set one byte.
            2 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                v[i] = match rng.u8(..4) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.u8(..),
                };
            }
            // Cut the tail (a torn write, a short read).
            3 => {
                let n = at(rng, v);
                v.truncate(n);
            }
            // Remove a range.
            4 if !v.is_empty() => {
                let a = rng.usize(..v.len());
                let b = rng.usize(a..=v.len().min(a + 16));
                v.drain(a..b);
            }
            // Insert random bytes.
            5 => {
                let i = at(rng, v);
                let n = rng.usize(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                v.splice(i..i, bytes);
            }
            // Splice: a prefix of this input, the tail of another.
            6 => {
                let i = at(rng, v);
                let j = rng.usize(..=other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            // Duplicate a range in place (a repeated record or field).
            7 if !v.is_empty() => {
                let a = rng.usize(..v.len());
                let b = rng.usize(a..=v.len().min(a + 32));
                let copy = v[a..b].to_vec();
                v.splice(b..b, copy);
            }
            // A 1, 2, 4 or 8 byte integer (a length, count, offset or index) set to an extreme,
            // little or big endian.
            8 if !v.is_empty() => {
                let width = [1usize, 2, 4, 8][rng.usize(..4)];
                let value = EXTREMES[rng.usize(..EXTREMES.len())];
                let bytes = if rng.bool() {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let bytes = if bytes[0] == 0 && width < 8 {
                    &bytes[8 - width..]
                } else {
                    &bytes[..width]
                };
                let i = rng.usize(..v.len());
                let n = width.min(v.len() - i);
                v[i..i + n].copy_from_slice(&bytes[..n]);
            }
            // A protobuf varint set to an extreme (the longest encodings, an unterminated one).
            _ if !v.is_empty() => {
                let i = rng.usize(..v.len());
                let varint: &[u8] = match rng.u8(..3) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                    1 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    _ => &[
                        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                    ],
                };
                v.splice(i..(i + 1).min(v.len()), varint.iter().copied());
            }
            _ => v.push(rng.u8(..)),
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// Calls `entry` on every seed, then on `iterations` mutations of them (of one another), from a
/// fixed `seed`. A panic is re-raised after printing the iteration and the input in hex, so the
/// input can be fed to the `cargo fuzz` target directly.
pub fn run(seed: u64, seeds: &[Vec<u8>], iterations: usize, entry: impl FnMut(&[u8])) {
    let seed = env_u64("HEARTH_FUZZ_SEED").unwrap_or(seed);
    let iterations = env_u64("HEARTH_FUZZ_ITERATIONS").map_or(iterations, |n| n as usize);
    run_exact(seed, seeds, iterations, entry)
}

/// [`run`] without the environment's overrides.
pub fn run_exact(seed: u64, seeds: &[Vec<u8>], iterations: usize, mut entry: impl FnMut(&[u8])) {
    assert!(!seeds.is_empty(), "a corpus needs at least one seed");
    let mut m = Mutator::new(seed);
    let mut call = |i: usize, input: &[u8]| {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| entry(input))) {
            eprintln!(
                "fuzz input {i} (seed {seed}) failed: {} bytes: {}",
                input.len(),
                hex(input)
            );
            resume_unwind(p);
        }
    };
    for (i, s) in seeds.iter().enumerate() {
        call(i, s);
    }
    let mut last = seeds[0].clone();
    for i in 0..iterations {
        let base = &seeds[m.rng.usize(..seeds.len())];
        let other = &seeds[m.rng.usize(..seeds.len())];
        // Sometimes mutate the previous mutation again, to get further from the valid inputs.
        let input = if m.rng.u8(..4) == 0 {
            m.mutate(&last, other)
        } else {
            m.mutate(base, other)
        };
        call(seeds.len() + i, &input);
        last = input;
    }
}

/// Lower-case hex, for printing a failing input.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_varied() {
        let seeds = vec![b"hello, world".to_vec(), vec![0; 40]];
        let collect = |seed| {
            let mut out = Vec::new();
            run_exact(seed, &seeds, 200, |d| out.push(d.to_vec()));
            out
        };
        let a = collect(7);
        assert_eq!(a, collect(7), "a seed replays");
        assert_ne!(a, collect(8));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 150, "{} distinct inputs", distinct.len());
        assert!(a.iter().any(|d| d.len() < 12) && a.iter().any(|d| d.len() > 40));
    }

    #[test]
    fn a_failing_input_is_reported_and_reraised() {
        let r = catch_unwind(|| run_exact(1, &[b"x".to_vec()], 10, |d| assert_ne!(d, b"x")));
        assert!(r.is_err());
    }
}
