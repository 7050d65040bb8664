//! `--rate`: a token bucket of one token refilled every `1/rate` seconds, shared by all
//! clients (Go's `rate.NewLimiter(rate, 1)`).

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `None` for an unlimited rate (`0`).
    pub fn new(per_sec: f64) -> Option<RateLimiter> {
        (per_sec > 0.0).then(|| RateLimiter {
            interval: Duration::from_secs_f64(1.0 / per_sec),
            next: Mutex::new(None),
        })
    }

    /// Waits for this caller's slot: slots are `interval` apart; a slot not taken in time is
    /// not saved up (burst of one).
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = match *next {
                Some(t) if t > now => t,
                _ => now,
            };
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_unlimited() {
        assert!(RateLimiter::new(0.0).is_none());
        assert_eq!(
            RateLimiter::new(4.0).unwrap().interval,
            Duration::from_millis(250)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_by_the_interval() {
        let l = RateLimiter::new(10.0).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            l.wait().await;
        }
        // First slot at once, then every 100 ms (virtual time).
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
