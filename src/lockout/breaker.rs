//! A circuit breaker for calls to a shared store: after [`Breaker::threshold`] failures in a row
//! the calls are skipped for a cooldown, so that an outage costs one timeout per cooldown instead
//! of one per request. When the cooldown ends calls are tried again; the first failure then
//! opens the breaker at once, the first success closes it. Pure: the caller passes the time.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Failures since the last success.
    failures: u32,
    /// Calls are skipped until then.
    open_until: Option<Instant>,
}

impl Breaker {
    /// Opens after `threshold` (at least 1) failures in a row, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::default(),
        }
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain numbers: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may be made at `now` (`false`: skip it, the breaker is open).
    pub fn allows(&self, now: Instant) -> bool {
        self.state().open_until.is_none_or(|until| now >= until)
    }

    /// A call succeeded: the breaker closes. Returns `true` when it had been open.
    pub fn succeeded(&self) -> bool {
        let mut s = self.state();
        let was_open = s.open_until.is_some();
        s.failures = 0;
        s.open_until = None;
        was_open
    }

    /// A call failed at `now`. Returns `true` when this failure opened the breaker.
    pub fn failed(&self, now: Instant) -> bool {
        let mut s = self.state();
        s.failures = s.failures.saturating_add(1);
        if s.failures >= self.threshold {
            s.open_until = Some(now + self.cooldown);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    #[test]
    fn opens_after_the_threshold_of_failures_in_a_row() {
        let b = Breaker::new(3, COOLDOWN);
        let t0 = Instant::now();
        assert!(!b.failed(t0));
        assert!(!b.failed(t0));
        assert!(b.allows(t0));
        assert!(b.failed(t0));
        assert!(!b.allows(t0));
        assert!(!b.allows(t0 + COOLDOWN - Duration::from_millis(1)));
        assert!(b.allows(t0 + COOLDOWN));
    }

    #[test]
    fn a_success_in_between_starts_the_count_again() {
        let b = Breaker::new(3, COOLDOWN);
        let t0 = Instant::now();
        b.failed(t0);
        b.failed(t0);
        assert!(!b.succeeded(), "it had not opened");
        assert!(!b.failed(t0));
        assert!(!b.failed(t0));
        assert!(b.allows(t0));
    }

    #[test]
    fn after_the_cooldown_one_failure_reopens_and_one_success_closes() {
        let b = Breaker::new(3, COOLDOWN);
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failed(t0);
        }
        let t1 = t0 + COOLDOWN;
        assert!(b.allows(t1));
        assert!(b.failed(t1), "the probe failed: open again at once");
        assert!(!b.allows(t1 + Duration::from_secs(1)));
        let t2 = t1 + COOLDOWN;
        assert!(b.allows(t2));
        assert!(b.succeeded(), "it had been open");
        assert!(!b.succeeded());
        assert!(!b.failed(t2), "closed: one failure is not enough");
        assert!(b.allows(t2));
    }

    #[test]
    fn a_zero_threshold_means_one() {
        let b = Breaker::new(0, COOLDOWN);
        assert_eq!(b.threshold(), 1);
        let t0 = Instant::now();
        assert!(b.failed(t0));
        assert!(!b.allows(t0));
    }
}
