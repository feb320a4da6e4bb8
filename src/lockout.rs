//! Brute-force protection: failed client authentications are counted per `client_id` and per
//! source address; once either is over its threshold the gateway answers `429 Too Many Requests`
//! with `Retry-After` without asking the upstream.
//!
//! [`FailureLimiter`] is the seam (a shared backend such as Redis can implement it later);
//! [`LocalLimiter`] is the in-process implementation on [`pingora_limits::rate::Rate`], a pair
//! of count-min sketches (current and previous window). Memory is fixed at construction and does
//! not depend on how many distinct ids or addresses attackers send.
//!
//! # Windows
//!
//! `Rate` keeps the counts of the current and the previous window. Windows are not aligned to
//! the wall clock: a new window starts at the first use of the limiter after the previous one
//! has lasted `window` (and if a whole window passes without any use, both counts are cleared).
//! A key is locked while the failures counted in the current window, or in the previous one,
//! reach its threshold; a lockout therefore does not vanish at a window boundary and lasts until
//! the end of the window after the one in which the threshold was reached (if no further
//! failures are recorded; callers do not record failures for requests rejected as locked).
//! The `Retry-After` given is the time left in the *current* window, so a client that was
//! locked in the current window and retries then may be told to wait once more.
//!
//! # Accuracy
//!
//! A count-min sketch never under-counts, but may over-count when many keys share its counters:
//! with `d` rows of `w` counters and `N` failures in a window spread over distinct keys, an
//! unrelated key reads as locked with probability about `P[Poisson(N / w) >= threshold] ^ d`.
//! The default client-id sketch ([`SketchSize::CLIENTS`], 4 × 2^18 counters, 16 MiB for the two
//! windows) keeps that below 1e-9 for a flood of one million distinct ids per window at a
//! threshold of 10 (about 1 % at a threshold of 5). The address sketch ([`SketchSize::IPS`],
//! 4 × 2^16 counters, 4 MiB) is smaller because every distinct source address costs an attacker
//! a completed connection and IPv6 addresses are counted per /64: it stays below 1e-8 for
//! 250 000 distinct addresses per window at a threshold of 10. Use
//! [`LocalLimiter::with_sketch`] to size them differently.
//!
//! # Addresses
//!
//! IPv4 addresses (and IPv4-mapped IPv6 addresses) are counted individually; other IPv6
//! addresses are counted per /64 prefix, the usual allocation to a single subscriber, so an
//! attacker cannot dodge the limit by rotating through their own prefix.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use pingora_limits::rate::{Rate, RateComponents};

/// Counts authentication failures and says when a client or address is locked out.
pub trait FailureLimiter: Send + Sync {
    /// `Some(retry_after)` when either the client_id or the IP is over its threshold.
    fn check(&self, client_id: &[u8], ip: Option<IpAddr>) -> Option<Duration>;
    /// Records one failed authentication for both keys.
    fn record_failure(&self, client_id: &[u8], ip: Option<IpAddr>);
}

/// Thresholds of a [`LocalLimiter`].
#[derive(Debug, Clone, Copy)]
pub struct LockoutConfig {
    /// Length of a counting window. [`LocalLimiter`] clamps it to 1 s ..= 7 days (shorter
    /// windows can make `pingora_limits::rate::Rate` panic under concurrent use in its first
    /// second).
    pub window: Duration,
    /// Failures per window after which a client_id is locked; `0` disables the per-client limit.
    pub max_failures_per_client: u32,
    /// Failures per window after which a source address is locked; `0` disables the per-address
    /// limit.
    pub max_failures_per_ip: u32,
}

/// Dimensions of one count-min sketch: `hashes` rows of `slots` counters (8 bytes each, two
/// sketches per counted key kind — current and previous window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SketchSize {
    /// Rows (independent hash functions). More rows: fewer false positives, slower updates.
    pub hashes: usize,
    /// Counters per row. More counters: fewer collisions.
    pub slots: usize,
}

impl SketchSize {
    /// Default for client ids: 4 × 2^18 counters (16 MiB for both windows).
    pub const CLIENTS: SketchSize = SketchSize {
        hashes: 4,
        slots: 1 << 18,
    };
    /// Default for source addresses: 4 × 2^16 counters (4 MiB for both windows).
    pub const IPS: SketchSize = SketchSize {
        hashes: 4,
        slots: 1 << 16,
    };
}

const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Failure counts for one kind of key, with its threshold.
struct Counter {
    rate: Rate,
    max: isize,
}

impl Counter {
    /// `None` when the threshold is 0 (limit disabled: nothing is counted).
    fn new(window: Duration, max: u32, size: SketchSize) -> Option<Counter> {
        if max == 0 {
            return None;
        }
        Some(Counter {
            rate: Rate::new_with_estimator_config(window, size.hashes.max(1), size.slots.max(1)),
            max: isize::try_from(max).unwrap_or(isize::MAX),
        })
    }

    fn record<T: Hash>(&self, key: &T) {
        self.rate.observe(key, 1);
    }

    /// Time left in the current window if `key` is locked.
    fn check<T: Hash>(&self, key: &T) -> Option<Duration> {
        // `rate_with` reports the window as of its last rotation; observing nothing first makes
        // `Rate` rotate if a window has ended, so the counts and the fraction below are current.
        self.rate.observe(key, 0);
        let (previous, current, left) = self.rate.rate_with(key, |c: RateComponents| {
            let left = 1.0 - c.current_interval_fraction;
            (
                c.prev_samples,
                c.curr_samples,
                c.interval.mul_f64(left.clamp(0.0, 1.0)),
            )
        });
        (current >= self.max || previous >= self.max).then(|| round_up_secs(left))
    }
}

/// Whole seconds, rounded up, at least 1 s (what `Retry-After` can express).
fn round_up_secs(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// The key an address is counted under: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 by
/// its /64 prefix.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// In-process [`FailureLimiter`] with fixed memory: one [`Rate`] for client ids, one for source
/// addresses. See the module docs for window semantics and accuracy.
pub struct LocalLimiter {
    config: LockoutConfig,
    clients: Option<Counter>,
    ips: Option<Counter>,
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LocalLimiter {
    /// A limiter with the default sketch sizes ([`SketchSize::CLIENTS`], [`SketchSize::IPS`]).
    /// All memory is allocated here.
    pub fn new(config: LockoutConfig) -> Self {
        Self::with_sketch(config, SketchSize::CLIENTS, SketchSize::IPS)
    }

    /// A limiter with explicit sketch sizes for client ids and addresses.
    pub fn with_sketch(config: LockoutConfig, clients: SketchSize, ips: SketchSize) -> Self {
        let window = config.window.clamp(MIN_WINDOW, MAX_WINDOW);
        let config = LockoutConfig { window, ..config };
        LocalLimiter {
            clients: Counter::new(window, config.max_failures_per_client, clients),
            ips: Counter::new(window, config.max_failures_per_ip, ips),
            config,
        }
    }

    /// The configuration in effect (window after clamping).
    pub fn config(&self) -> LockoutConfig {
        self.config
    }
}

impl FailureLimiter for LocalLimiter {
    fn check(&self, client_id: &[u8], ip: Option<IpAddr>) -> Option<Duration> {
        let by_client = self.clients.as_ref().and_then(|c| c.check(&client_id));
        let by_ip = match (&self.ips, ip) {
            (Some(counter), Some(ip)) => counter.check(&address_key(ip)),
            _ => None,
        };
        by_client.max(by_ip)
    }

    fn record_failure(&self, client_id: &[u8], ip: Option<IpAddr>) {
        if let Some(counter) = &self.clients {
            counter.record(&client_id);
        }
        if let (Some(counter), Some(ip)) = (&self.ips, ip) {
            counter.record(&address_key(ip));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limiter(max_client: u32, max_ip: u32) -> LocalLimiter {
        LocalLimiter::new(LockoutConfig {
            window: Duration::from_secs(60),
            max_failures_per_client: max_client,
            max_failures_per_ip: max_ip,
        })
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn under_threshold_is_not_locked() {
        let l = limiter(3, 5);
        for _ in 0..2 {
            l.record_failure(b"app", ip(1));
        }
        assert_eq!(l.check(b"app", ip(1)), None);
    }

    #[test]
    fn at_threshold_is_locked_with_retry_after_within_the_window() {
        let l = limiter(3, 100);
        for _ in 0..3 {
            l.record_failure(b"app", ip(1));
        }
        let retry = l.check(b"app", ip(1)).expect("locked at the threshold");
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(60),
            "{retry:?}"
        );
        assert_eq!(retry.subsec_nanos(), 0);
        // Unknown ids are counted like any other; other ids are unaffected.
        assert_eq!(l.check(b"other", ip(1)), None);
    }

    #[test]
    fn ip_lock_applies_to_other_client_ids_from_that_ip() {
        let l = limiter(100, 3);
        for i in 0..3 {
            l.record_failure(format!("id-{i}").as_bytes(), ip(7));
        }
        assert!(l.check(b"fresh-id", ip(7)).is_some());
        assert_eq!(l.check(b"fresh-id", ip(8)), None);
        assert_eq!(l.check(b"fresh-id", None), None);
    }

    #[test]
    fn client_lock_applies_from_other_ips() {
        let l = limiter(3, 100);
        for i in 0..3 {
            l.record_failure(b"victim", ip(i));
        }
        assert!(l.check(b"victim", ip(200)).is_some());
        assert!(l.check(b"victim", None).is_some());
        assert_eq!(l.check(b"bystander", ip(200)), None);
    }

    #[test]
    fn ipv6_addresses_are_counted_per_64_prefix() {
        let l = limiter(0, 3);
        for i in 1..=3u16 {
            let addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i);
            l.record_failure(b"app", Some(IpAddr::V6(addr)));
        }
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xffff, 0, 0, 9));
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(l.check(b"app", Some(same_64)).is_some());
        assert_eq!(l.check(b"app", Some(other_64)), None);

        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        for _ in 0..3 {
            l.record_failure(b"app", Some(mapped));
        }
        assert!(l.check(b"app", ip(1)).is_some());
    }

    #[test]
    fn zero_threshold_disables_that_key() {
        let off = limiter(0, 0);
        for _ in 0..1000 {
            off.record_failure(b"app", ip(1));
        }
        assert_eq!(off.check(b"app", ip(1)), None);

        let ip_only = limiter(0, 3);
        for _ in 0..3 {
            ip_only.record_failure(b"app", ip(1));
        }
        assert_eq!(ip_only.check(b"app", ip(2)), None);
        assert!(ip_only.check(b"app", ip(1)).is_some());

        let client_only = limiter(3, 0);
        for i in 0..3 {
            client_only.record_failure(format!("id-{i}").as_bytes(), ip(1));
        }
        assert_eq!(client_only.check(b"id-9", ip(1)), None);
    }

    #[test]
    fn window_is_clamped_to_at_least_one_second() {
        let l = LocalLimiter::new(LockoutConfig {
            window: Duration::ZERO,
            max_failures_per_client: 1,
            max_failures_per_ip: 1,
        });
        assert_eq!(l.config().window, Duration::from_secs(1));
        l.record_failure(b"app", ip(1));
        assert_eq!(l.check(b"app", ip(1)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn lock_survives_the_window_boundary_and_lifts_after_the_next_window() {
        // 1 s is the shortest window (see `LockoutConfig::window`), so this sleeps ~2.5 s.
        let l = LocalLimiter::new(LockoutConfig {
            window: Duration::from_secs(1),
            max_failures_per_client: 2,
            max_failures_per_ip: 2,
        });
        l.record_failure(b"app", ip(1));
        l.record_failure(b"app", ip(1));
        assert!(l.check(b"app", ip(1)).is_some());

        // Next window: still locked because of the previous window's count.
        std::thread::sleep(Duration::from_millis(1_200));
        assert!(l.check(b"app", ip(1)).is_some());

        // The window after that saw no failures: unlocked.
        std::thread::sleep(Duration::from_millis(1_300));
        assert_eq!(l.check(b"app", ip(1)), None);
    }

    #[test]
    fn a_million_distinct_failed_ids_neither_grow_memory_nor_lock_others() {
        // Memory is the fixed sketches allocated in `new`; this checks the flood is absorbed
        // without panics and without (rare, see module docs) false lockouts.
        let l = limiter(10, 10);
        for i in 0..1_000_000u32 {
            l.record_failure(&i.to_le_bytes(), None);
        }
        for i in 0..100u32 {
            let id = format!("legitimate-{i}");
            assert_eq!(l.check(id.as_bytes(), ip(1)), None, "{id} falsely locked");
        }
        for _ in 0..10 {
            l.record_failure(b"target", None);
        }
        assert!(l.check(b"target", None).is_some());
    }
}
