//! Waits: retry waits, exponential, capped, with random jitter so that peers that failed together
//! (nodes restarted together, hosts throttled together) do not retry in lockstep. The one
//! helper for every retry loop (ChainNotify subscriptions, SLB calls).

use std::time::Duration;

/// Doubling waits from `base` up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            next: base,
        }
    }

    /// The wait before this retry (without jitter); the one after doubles, up to `max`.
    pub fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// Back to `base`, after a success.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

/// Sleeps until `deadline`, or forever without one: a `select!` branch for a timer that may
/// not be set.
pub async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// `wait` plus up to a quarter more, at random (the OS-seeded thread generator).
pub fn jitter(wait: Duration) -> Duration {
    wait + wait.mul_f64(0.25 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
        let waits: Vec<u64> = (0..4).map(|_| b.step().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 2000]);
        b.reset();
        assert_eq!(b.step(), Duration::from_millis(500));
    }

    #[test]
    fn jitter_is_random_and_bounded() {
        let wait = Duration::from_secs(1);
        let seen: std::collections::BTreeSet<u128> =
            (0..50).map(|_| jitter(wait).as_micros()).collect();
        assert!(seen.len() > 40, "retries together would stay together");
        assert!(seen.iter().all(|&us| (1_000_000..=1_250_000).contains(&us)));
    }
}
