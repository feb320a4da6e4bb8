//! The in-process [`FailureLimiter`]: for each kind of key a pair of count-min sketches
//! ([`pingora_limits::estimator::Estimator`]), one per window. Memory is fixed at construction
//! and does not depend on how many distinct ids or addresses attackers send. Windows count from
//! the limiter's creation. Reservations for keys in one stripe are serialized, so a burst gets at
//! most the threshold through (see the parent module).
//!
//! # Accuracy
//!
//! A count-min sketch never under-counts, but may over-count when many keys share its counters:
//! with `d` rows of `w` counters and `N` failures in a window spread over distinct keys, an
//! unrelated key reads as locked with probability about `P[Poisson(N / w) >= threshold] ^ d`.
//! The default client sketch ([`SketchSize::CLIENTS`], 4 × 2^18 counters, 16 MiB for the two
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
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_limits::estimator::Estimator;

use super::{
    round_up_secs, FailureLimiter, LockoutConfig, Refusal, Reservation as Held, Reserved, Who,
};
use crate::client_addr::counting_key;

/// One failure counted in a [`LocalLimiter`].
#[derive(Debug)]
pub(crate) struct Reservation {
    window: u64,
    client: Option<u64>,
    ip: Option<u64>,
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
    /// Default for clients: 4 × 2^18 counters (16 MiB for both windows).
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

/// The counts of one window, tagged with the window's number.
struct Slot {
    window: AtomicU64,
    counts: Estimator,
}

/// Failure counts for one kind of key, in two alternating windows, with its threshold.
struct Counter {
    slots: [Slot; 2],
    max: isize,
}

impl Counter {
    /// `None` when the threshold is 0 (limit disabled: nothing is counted).
    fn new(max: u32, size: SketchSize) -> Option<Counter> {
        if max == 0 {
            return None;
        }
        let slot = |window| Slot {
            window: AtomicU64::new(window),
            counts: Estimator::new(size.hashes.max(1), size.slots.max(1)),
        };
        Some(Counter {
            // Window 0 starts now; the other slot stands for a window that never was.
            slots: [slot(0), slot(u64::MAX)],
            max: isize::try_from(max).unwrap_or(isize::MAX),
        })
    }

    /// The slot `window` is counted in (it may still hold an older window).
    fn slot(&self, window: u64) -> &Slot {
        &self.slots[(window % 2) as usize]
    }

    /// The count of `key` in `window` (0 if that window's slot holds another).
    fn count(&self, key: u64, window: u64) -> isize {
        let slot = self.slot(window);
        if slot.window.load(Ordering::Acquire) == window {
            slot.counts.get(key)
        } else {
            0
        }
    }

    fn locked(&self, key: u64, window: u64) -> bool {
        self.count(key, window) >= self.max
            || (window > 0 && self.count(key, window - 1) >= self.max)
    }

    fn add(&self, key: u64, window: u64, n: isize) {
        let slot = self.slot(window);
        if slot.window.load(Ordering::Acquire) == window {
            slot.counts.incr(key, n);
        }
    }

    /// Makes `window`'s slot current (clearing what an older window left in it).
    fn rotate_to(&self, window: u64) {
        let slot = self.slot(window);
        if slot.window.load(Ordering::Acquire) != window {
            slot.counts.reset();
            slot.window.store(window, Ordering::Release);
        }
    }
}

/// Reservations for keys in one stripe are serialized (see the module docs).
const STRIPES: usize = 64;

/// In-process [`FailureLimiter`] with fixed memory. See the module docs for window semantics and
/// accuracy.
pub struct LocalLimiter {
    config: LockoutConfig,
    started: Instant,
    clients: Option<Counter>,
    ips: Option<Counter>,
    /// Keys are hashed once, with a per-process random key, then counted by that hash.
    hasher: RandomState,
    /// The window the slots were last rotated to.
    current: AtomicU64,
    rotation: Mutex<()>,
    stripes: Box<[Mutex<()>]>,
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The mutexes guard no data: a panic while one was held left nothing half-done.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalLimiter {
    /// A limiter with the default sketch sizes ([`SketchSize::CLIENTS`], [`SketchSize::IPS`]).
    /// All memory is allocated here.
    pub fn new(config: LockoutConfig) -> Self {
        Self::with_sketch(config, SketchSize::CLIENTS, SketchSize::IPS)
    }

    /// A limiter with explicit sketch sizes for clients and addresses.
    pub fn with_sketch(config: LockoutConfig, clients: SketchSize, ips: SketchSize) -> Self {
        let config = config.clamped();
        LocalLimiter {
            clients: Counter::new(config.max_failures_per_client, clients),
            ips: Counter::new(config.max_failures_per_ip, ips),
            config,
            started: Instant::now(),
            hasher: RandomState::new(),
            current: AtomicU64::new(0),
            rotation: Mutex::new(()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The configuration in effect (window after clamping).
    pub fn config(&self) -> LockoutConfig {
        self.config
    }

    /// The current window's number and the time left in it; the slots are rotated to it.
    fn window(&self) -> (u64, Duration) {
        let age = self.started.elapsed();
        let len = self.config.window.as_nanos().max(1);
        let window = u64::try_from(age.as_nanos() / len).unwrap_or(u64::MAX);
        let left =
            Duration::from_nanos(u64::try_from(len - age.as_nanos() % len).unwrap_or(u64::MAX));
        if self.current.load(Ordering::Acquire) != window {
            let _g = lock(&self.rotation);
            if self.current.load(Ordering::Acquire) != window {
                for c in [&self.clients, &self.ips].into_iter().flatten() {
                    c.rotate_to(window);
                }
                self.current.store(window, Ordering::Release);
            }
        }
        (window, left)
    }

    fn keys(&self, who: &Who<'_>) -> (Option<u64>, Option<u64>) {
        let client = self
            .clients
            .as_ref()
            .map(|_| self.hasher.hash_one((who.env_id, who.client_id)));
        let ip = match (&self.ips, who.ip) {
            (Some(_), Some(ip)) => Some(self.hasher.hash_one(counting_key(ip))),
            _ => None,
        };
        (client, ip)
    }

    fn locked(&self, client: Option<u64>, ip: Option<u64>, window: u64) -> bool {
        let over = |c: &Option<Counter>, k: Option<u64>| match (c, k) {
            (Some(c), Some(k)) => c.locked(k, window),
            _ => false,
        };
        over(&self.clients, client) || over(&self.ips, ip)
    }

    fn add(&self, client: Option<u64>, ip: Option<u64>, window: u64, n: isize) {
        if let (Some(c), Some(k)) = (&self.clients, client) {
            c.add(k, window, n);
        }
        if let (Some(c), Some(k)) = (&self.ips, ip) {
            c.add(k, window, n);
        }
    }

    /// Counts one failure without asking whether the keys are locked (tests and benches).
    pub fn record_failure(&self, who: &Who<'_>) {
        let (client, ip) = self.keys(who);
        let (window, _) = self.window();
        self.add(client, ip, window, 1);
    }
}

impl LocalLimiter {
    /// `Err(retry_after)` when the client or the address is locked.
    pub fn check_now(&self, who: &Who<'_>) -> Result<(), Duration> {
        let (client, ip) = self.keys(who);
        self.check_keys(client, ip)
    }

    /// `Err(retry_after)` when the address is locked.
    pub fn check_address_now(&self, who: &Who<'_>) -> Result<(), Duration> {
        let (_, ip) = self.keys(who);
        self.check_keys(None, ip)
    }

    fn check_keys(&self, client: Option<u64>, ip: Option<u64>) -> Result<(), Duration> {
        let (window, left) = self.window();
        match self.locked(client, ip, window) {
            true => Err(round_up_secs(left)),
            false => Ok(()),
        }
    }

    /// Counts one failure unless the client or the address is locked (`Err(retry_after)`).
    pub(crate) fn reserve_now(&self, who: &Who<'_>) -> Result<Reservation, Duration> {
        let (client, ip) = self.keys(who);
        // Both keys' stripes, in a fixed order (no deadlock between two reservations).
        let stripe = |k: u64| (k % STRIPES as u64) as usize;
        let mut held: Vec<usize> = [client, ip].into_iter().flatten().map(stripe).collect();
        held.sort_unstable();
        held.dedup();
        let _guards: Vec<_> = held.iter().map(|&i| lock(&self.stripes[i])).collect();
        let (window, left) = self.window();
        if self.locked(client, ip, window) {
            return Err(round_up_secs(left));
        }
        self.add(client, ip, window, 1);
        Ok(Reservation { window, client, ip })
    }

    pub(crate) fn release_now(&self, r: Reservation) {
        // A reservation from a window that has since been cleared has nothing left to undo.
        self.add(r.client, r.ip, r.window, -1);
    }
}

#[async_trait]
impl FailureLimiter for LocalLimiter {
    async fn check_address(&self, who: &Who<'_>) -> Result<(), Refusal> {
        self.check_address_now(who).map_err(Refusal::Locked)
    }

    async fn reserve(&self, who: &Who<'_>) -> Result<Held, Refusal> {
        let r = self.reserve_now(who).map_err(Refusal::Locked)?;
        Ok(Held(Reserved::Local(r)))
    }

    async fn release(&self, reservation: Held) {
        // A reservation made elsewhere (a shared store) is not this limiter's to undo.
        if let Reserved::Local(r) = reservation.0 {
            self.release_now(r);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn limiter(max_client: u32, max_ip: u32) -> LocalLimiter {
        LocalLimiter::new(LockoutConfig {
            window: Duration::from_secs(60),
            max_failures_per_client: max_client,
            max_failures_per_ip: max_ip,
        })
    }

    fn check(l: &LocalLimiter, who: &Who<'_>) -> Option<Duration> {
        l.check_now(who).err()
    }

    fn who(client_id: &[u8], ip: Option<IpAddr>) -> Who<'_> {
        Who {
            env_id: "env",
            client_id,
            ip,
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn under_threshold_is_not_locked() {
        let l = limiter(3, 5);
        for _ in 0..2 {
            l.record_failure(&who(b"app", ip(1)));
        }
        assert_eq!(check(&l, &who(b"app", ip(1))), None);
    }

    #[test]
    fn at_threshold_is_locked_with_retry_after_within_the_window() {
        let l = limiter(3, 100);
        for _ in 0..3 {
            l.record_failure(&who(b"app", ip(1)));
        }
        let retry = check(&l, &who(b"app", ip(1))).expect("locked at the threshold");
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(60),
            "{retry:?}"
        );
        assert_eq!(retry.subsec_nanos(), 0);
        // Unknown ids are counted like any other; other ids are unaffected.
        assert_eq!(check(&l, &who(b"other", ip(1))), None);
    }

    #[test]
    fn ip_lock_applies_to_other_client_ids_from_that_ip() {
        let l = limiter(100, 3);
        for i in 0..3 {
            l.record_failure(&who(format!("id-{i}").as_bytes(), ip(7)));
        }
        assert!(check(&l, &who(b"fresh-id", ip(7))).is_some());
        assert_eq!(check(&l, &who(b"fresh-id", ip(8))), None);
        assert_eq!(check(&l, &who(b"fresh-id", None)), None);
    }

    #[test]
    fn client_lock_applies_from_other_ips() {
        let l = limiter(3, 100);
        for i in 0..3 {
            l.record_failure(&who(b"victim", ip(i)));
        }
        assert!(check(&l, &who(b"victim", ip(200))).is_some());
        assert!(check(&l, &who(b"victim", None)).is_some());
        assert_eq!(check(&l, &who(b"bystander", ip(200))), None);
    }

    #[test]
    fn ipv6_addresses_are_counted_per_64_prefix() {
        let l = limiter(0, 3);
        for i in 1..=3u16 {
            let addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i);
            l.record_failure(&who(b"app", Some(IpAddr::V6(addr))));
        }
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xffff, 0, 0, 9));
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(check(&l, &who(b"app", Some(same_64))).is_some());
        assert_eq!(check(&l, &who(b"app", Some(other_64))), None);

        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        for _ in 0..3 {
            l.record_failure(&who(b"app", Some(mapped)));
        }
        assert!(check(&l, &who(b"app", ip(1))).is_some());
    }

    #[test]
    fn zero_threshold_disables_that_key() {
        let off = limiter(0, 0);
        for _ in 0..1000 {
            off.record_failure(&who(b"app", ip(1)));
        }
        assert_eq!(check(&off, &who(b"app", ip(1))), None);

        let ip_only = limiter(0, 3);
        for _ in 0..3 {
            ip_only.record_failure(&who(b"app", ip(1)));
        }
        assert_eq!(check(&ip_only, &who(b"app", ip(2))), None);
        assert!(check(&ip_only, &who(b"app", ip(1))).is_some());

        let client_only = limiter(3, 0);
        for i in 0..3 {
            client_only.record_failure(&who(format!("id-{i}").as_bytes(), ip(1)));
        }
        assert_eq!(check(&client_only, &who(b"id-9", ip(1))), None);
    }

    #[test]
    fn window_is_clamped_to_at_least_one_second() {
        let l = LocalLimiter::new(LockoutConfig {
            window: Duration::ZERO,
            max_failures_per_client: 1,
            max_failures_per_ip: 1,
        });
        assert_eq!(l.config().window, Duration::from_secs(1));
        l.record_failure(&who(b"app", ip(1)));
        assert_eq!(check(&l, &who(b"app", ip(1))), Some(Duration::from_secs(1)));
    }

    #[test]
    fn lock_survives_the_window_boundary_and_lifts_after_the_next_window() {
        // 1 s is the shortest window (see `LockoutConfig::window`), so this sleeps ~2.5 s.
        let l = LocalLimiter::new(LockoutConfig {
            window: Duration::from_secs(1),
            max_failures_per_client: 2,
            max_failures_per_ip: 2,
        });
        l.record_failure(&who(b"app", ip(1)));
        l.record_failure(&who(b"app", ip(1)));
        assert!(check(&l, &who(b"app", ip(1))).is_some());

        // Next window: still locked because of the previous window's count.
        std::thread::sleep(Duration::from_millis(1_200));
        assert!(check(&l, &who(b"app", ip(1))).is_some());

        // The window after that saw no failures: unlocked.
        std::thread::sleep(Duration::from_millis(1_300));
        assert_eq!(check(&l, &who(b"app", ip(1))), None);
    }

    #[test]
    fn a_million_distinct_failed_ids_neither_grow_memory_nor_lock_others() {
        // Memory is the fixed sketches allocated in `new`; this checks the flood is absorbed
        // without panics and without (rare, see module docs) false lockouts.
        let l = limiter(10, 10);
        for i in 0..1_000_000u32 {
            l.record_failure(&who(&i.to_le_bytes(), None));
        }
        for i in 0..100u32 {
            let id = format!("legitimate-{i}");
            assert_eq!(
                check(&l, &who(id.as_bytes(), ip(1))),
                None,
                "{id} falsely locked"
            );
        }
        for _ in 0..10 {
            l.record_failure(&who(b"target", None));
        }
        assert!(check(&l, &who(b"target", None)).is_some());
    }

    #[test]
    fn at_most_the_threshold_of_concurrent_reservations_get_through() {
        let l = std::sync::Arc::new(limiter(10, 1000));
        let granted: Vec<bool> = (0..40)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || l.reserve_now(&who(b"victim", ip(1))).is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(granted.iter().filter(|g| **g).count(), 10);
        assert!(l.reserve_now(&who(b"victim", ip(1))).is_err());
    }

    #[test]
    fn a_released_reservation_is_no_failure() {
        let l = limiter(2, 1000);
        for _ in 0..100 {
            let r = l.reserve_now(&who(b"app", ip(1))).unwrap();
            l.release_now(r);
        }
        assert_eq!(check(&l, &who(b"app", ip(1))), None);
        let _kept = l.reserve_now(&who(b"app", ip(1))).unwrap();
        let _kept = l.reserve_now(&who(b"app", ip(1))).unwrap();
        let retry = l.reserve_now(&who(b"app", ip(1))).unwrap_err();
        assert!(retry >= Duration::from_secs(1) && retry <= Duration::from_secs(60));
    }

    #[test]
    fn clients_are_counted_per_environment() {
        let l = limiter(3, 1000);
        for _ in 0..3 {
            l.record_failure(&Who {
                env_id: "bogus",
                client_id: b"web-app",
                ip: ip(1),
            });
        }
        let real = Who {
            env_id: "env",
            client_id: b"web-app",
            ip: ip(2),
        };
        assert_eq!(check(&l, &real), None);
        // The pair is hashed as a tuple: moving bytes between its halves is another client.
        let shifted = Who {
            env_id: "bogusweb-ap",
            client_id: b"p",
            ip: ip(2),
        };
        assert_eq!(check(&l, &shifted), None);
    }
}
