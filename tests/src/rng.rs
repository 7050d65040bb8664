//! The tests' one random generator: `fastrand`'s [`Rng`] (wyrand), always seeded from a [`Seed`]
//! that is printed when the test starts and again if it fails, so `HEARTH_SEED=<seed>` replays
//! the run's choices (not its timing).
//!
//! `fastrand` rather than a generator of our own: it is small, well kept, already in the tree
//! (under `tempfile`) and its output for a seed is fixed by the version in `Cargo.lock`, which is
//! all a replay needs. Code that needs several independent streams (one per client task) forks
//! them from the seeded generator in a fixed order, so they replay too.

pub use fastrand::Rng;

/// A run's seed: from `HEARTH_SEED` if set, else fresh. Printed at once, and again (with how to
/// replay it) if the test panics while the `Seed` is alive: keep it for the whole test.
pub struct Seed {
    test: String,
    value: u64,
}

impl Seed {
    pub fn from_env(test: &str) -> Seed {
        let value = match std::env::var("HEARTH_SEED") {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("HEARTH_SEED={s:?} is not a u64")),
            Err(_) => fastrand::u64(..),
        };
        println!("{test}: seed {value} (replay with HEARTH_SEED={value})");
        Seed {
            test: test.to_string(),
            value,
        }
    }

    pub fn value(&self) -> u64 {
        self.value
    }

    /// A generator seeded with this seed.
    pub fn rng(&self) -> Rng {
        Rng::with_seed(self.value)
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {}: replay with HEARTH_SEED={}",
                self.test, self.value, self.value
            );
        }
    }
}

/// What the randomized tests ask of a generator beyond `fastrand`'s own methods.
pub trait RngExt {
    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool;
    /// One of `items` (not empty), uniformly.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T;
}

impl RngExt for Rng {
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.usize(..items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_choices() {
        let draw = |seed: u64| -> Vec<u64> {
            let mut r = Rng::with_seed(seed);
            (0..5).map(|_| r.u64(..1000)).collect()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        let mut r = Rng::with_seed(7);
        assert!((0..1000).all(|_| (-2..=3).contains(&r.i64(-2..=3))));
        assert!((0..1000).all(|_| ["a", "b"].contains(r.pick(&["a", "b"]))));
        assert!(!(0..1000).any(|_| r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
    }
}
