//! Read-through cache for client records fetched from a slow source (e.g. an HTTP client
//! registry), modelled on pingora-memory-cache's `read_through.rs`.
//!
//! - **Fresh hits** are answered from a [`DashMap`] without touching the source. A "does not
//!   exist" answer is cached too (for the shorter [`CacheConfig::negative_ttl`]).
//! - **Lookup coalescing (single-flight)**: when a key is missing or expired, exactly one caller
//!   fetches it; every other caller for the same key awaits that fetch's result. Different keys
//!   fetch concurrently. The flight is a shared [`tokio::sync::OnceCell`]: if the caller running
//!   the fetch is cancelled (its future dropped, e.g. by a timeout or a client disconnect), one
//!   of the waiting callers takes over and fetches with its own source, so nobody hangs.
//! - **Serve stale**: when the source fails, a found value whose age is within
//!   `ttl + max_stale` is served (counted in [`CacheStats::stale_served`]); otherwise the answer
//!   is [`Lookup::Unavailable`]. A failure is never cached.
//! - **Bounded**: the map never holds more than [`CacheConfig::capacity`] entries, however many
//!   distinct (e.g. unknown, attacker-chosen) keys are looked up. Every insertion is recorded in
//!   one of two FIFO queues (negative / found); as all entries of a class share one lifetime,
//!   each queue is also ordered by expiry, so expired entries are dropped from its front in
//!   amortized O(1) and, when the cache is still full, the oldest negative entry is evicted
//!   first (an unknown-key flood cannot push out real records while negative entries remain),
//!   then the oldest found entry. No full scans on the insert path.
//!
//! Time is [`tokio::time::Instant`], so tests drive expiry with `tokio::time::pause()`.
//!
//! The source is not bounded in time by this cache: give the [`Fetch`] implementation (or the
//! caller of [`ReadThrough::get`]) a timeout; a timed-out caller is handled like any cancelled
//! one.

use std::collections::VecDeque;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// A source of values, e.g. an HTTP client registry. `Ok(None)` = the key does not exist.
#[async_trait::async_trait]
pub trait Fetch<K, V>: Send + Sync {
    /// Looks `key` up at the source: `Ok(Some(_))` found, `Ok(None)` does not exist, `Err(_)`
    /// the source could not answer (the cache then serves stale data or reports unavailable).
    async fn fetch(&self, key: &K) -> Result<Option<V>, FetchError>;
}

/// Why a [`Fetch`] could not answer (network error, bad status, unparsable body, ...).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// Lifetimes and size bound of a [`ReadThrough`] cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Fresh lifetime of a found value: within it, lookups never reach the source.
    pub ttl: Duration,
    /// Lifetime of a "does not exist" answer (keep it short).
    pub negative_ttl: Duration,
    /// After `ttl`, a found value may still be served this long while the source fails.
    pub max_stale: Duration,
    /// Maximum number of entries (found + negative); a hard bound. `0` disables storage
    /// (every lookup goes to the source, still coalesced).
    pub capacity: usize,
}

/// The answer of [`ReadThrough::get`].
#[derive(Debug)]
pub enum Lookup<V> {
    /// The key exists (fresh, just fetched, or stale-but-allowed while the source fails).
    Found(Arc<V>),
    /// The source says the key does not exist.
    Unknown,
    /// The source failed and there is nothing (fresh, or stale within `max_stale`) to serve.
    Unavailable,
}

/// Counters of a [`ReadThrough`] cache since it was created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered by a fresh found entry.
    pub hits: u64,
    /// Lookups answered by a fresh negative ("does not exist") entry.
    pub negative_hits: u64,
    /// Lookups that found nothing fresh and went to (or joined) a fetch.
    pub misses: u64,
    /// Lookups answered with a stale value because the source failed.
    pub stale_served: u64,
    /// Calls made to the source.
    pub fetches: u64,
    /// Source calls that returned an error.
    pub fetch_failures: u64,
    /// Live (unexpired) entries removed to respect `capacity`. Removal of expired entries is
    /// housekeeping and not counted.
    pub evictions: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    negative_hits: AtomicU64,
    misses: AtomicU64,
    stale_served: AtomicU64,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    evictions: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One cached answer. `value: None` is a negative entry.
struct Entry<V> {
    value: Option<Arc<V>>,
    stored_at: Instant,
    /// Unique per insertion; ties the entry to its record in the eviction queues.
    stamp: u64,
}

/// An insertion, in the order it happened.
struct Record<K> {
    key: K,
    stamp: u64,
    stored_at: Instant,
}

/// Eviction bookkeeping; every map mutation happens while this is locked.
struct Queues<K> {
    /// Insertions of negative entries, oldest first (hence also soonest-expiring first).
    negative: VecDeque<Record<K>>,
    /// Insertions of found entries, oldest first.
    found: VecDeque<Record<K>>,
    next_stamp: u64,
}

/// Result of a flight, shared by every caller that waited on it.
enum Outcome<V> {
    Found(Arc<V>),
    Unknown,
    Stale(Arc<V>),
    Unavailable,
}

impl<V> Clone for Outcome<V> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Found(v) => Outcome::Found(Arc::clone(v)),
            Outcome::Unknown => Outcome::Unknown,
            Outcome::Stale(v) => Outcome::Stale(Arc::clone(v)),
            Outcome::Unavailable => Outcome::Unavailable,
        }
    }
}

type Flight<V> = Arc<OnceCell<Outcome<V>>>;

/// At most this many expired records are dropped per insertion beyond those needed to make room
/// (keeps the work per insertion bounded; the backlog is amortized over later insertions).
const PURGE_PER_INSERT: usize = 64;

/// A bounded read-through cache with lookup coalescing and serve-stale. See the module docs.
pub struct ReadThrough<K, V> {
    config: CacheConfig,
    map: DashMap<K, Entry<V>>,
    inflight: DashMap<K, Flight<V>>,
    queues: Mutex<Queues<K>>,
    /// Bumped by `invalidate_all`; results of fetches started before are not stored.
    epoch: AtomicU64,
    stats: Counters,
}

impl<K: Eq + Hash, V> fmt::Debug for ReadThrough<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadThrough")
            .field("config", &self.config)
            .field("len", &self.map.len())
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

/// Removes a flight from the in-flight map when the fetch that runs it ends — normally, by
/// error, or by cancellation — unless a newer flight has replaced it.
struct FlightDone<'a, K: Eq + Hash, V> {
    inflight: &'a DashMap<K, Flight<V>>,
    key: &'a K,
    cell: &'a Flight<V>,
}

impl<K: Eq + Hash, V> Drop for FlightDone<'_, K, V> {
    fn drop(&mut self) {
        self.inflight
            .remove_if(self.key, |_, cell| Arc::ptr_eq(cell, self.cell));
    }
}

impl<K, V> ReadThrough<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Creates an empty cache.
    pub fn new(config: CacheConfig) -> Self {
        ReadThrough {
            config,
            map: DashMap::new(),
            inflight: DashMap::new(),
            queues: Mutex::new(Queues {
                negative: VecDeque::new(),
                found: VecDeque::new(),
                next_stamp: 0,
            }),
            epoch: AtomicU64::new(0),
            stats: Counters::default(),
        }
    }

    /// Looks `key` up, reading through to `source` when needed.
    ///
    /// Fresh hit → [`Lookup::Found`] without fetching; fresh negative → [`Lookup::Unknown`].
    /// Otherwise the key is fetched once however many callers wait for it (concurrent callers
    /// for the same key share one fetch; different keys fetch concurrently). On success the
    /// answer is stored and returned; on failure a stale value whose age is within
    /// `ttl + max_stale` is served, else [`Lookup::Unavailable`] (failures are never cached).
    pub async fn get(&self, key: &K, source: &dyn Fetch<K, V>) -> Lookup<V> {
        let now = Instant::now();
        match self.fresh(key, now) {
            Some(Outcome::Found(v)) => {
                bump(&self.stats.hits);
                return Lookup::Found(v);
            }
            Some(_) => {
                bump(&self.stats.negative_hits);
                return Lookup::Unknown;
            }
            None => bump(&self.stats.misses),
        }

        // Join the key's flight, or start one. The shard guard is a temporary of this
        // statement: it is released before any await.
        let cell: Flight<V> = Arc::clone(&self.inflight.entry(key.clone()).or_default());
        let outcome = cell
            .get_or_init(|| self.fly(key, source, &cell))
            .await
            .clone();
        match outcome {
            Outcome::Found(v) => Lookup::Found(v),
            Outcome::Unknown => Lookup::Unknown,
            Outcome::Stale(v) => {
                bump(&self.stats.stale_served);
                Lookup::Found(v)
            }
            Outcome::Unavailable => Lookup::Unavailable,
        }
    }

    /// Runs one flight: the fetch whose result every caller waiting on `cell` receives. If this
    /// future is dropped midway, `cell` stays uninitialized and the next waiter runs `fly` again.
    async fn fly(&self, key: &K, source: &dyn Fetch<K, V>, cell: &Flight<V>) -> Outcome<V> {
        // Dropped when this future completes or is dropped, i.e. before the cell is set, so a
        // caller arriving later starts a fresh flight instead of reading a finished one (which
        // would reuse a failure).
        let _done = FlightDone {
            inflight: &self.inflight,
            key,
            cell,
        };
        // A flight that ended between our cache check and joining may have stored the answer.
        if let Some(outcome) = self.fresh(key, Instant::now()) {
            return outcome;
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        bump(&self.stats.fetches);
        match source.fetch(key).await {
            Ok(Some(value)) => {
                let value = Arc::new(value);
                self.store(key, Some(Arc::clone(&value)), epoch);
                Outcome::Found(value)
            }
            Ok(None) => {
                self.store(key, None, epoch);
                Outcome::Unknown
            }
            Err(error) => {
                bump(&self.stats.fetch_failures);
                tracing::debug!(%error, "read-through fetch failed");
                match self.servable_stale(key, Instant::now()) {
                    Some(value) => Outcome::Stale(value),
                    None => Outcome::Unavailable,
                }
            }
        }
    }

    /// The fresh answer for `key`, if any. Found → `Outcome::Found`, negative → `Outcome::Unknown`.
    fn fresh(&self, key: &K, now: Instant) -> Option<Outcome<V>> {
        let entry = self.map.get(key)?;
        let age = now.saturating_duration_since(entry.stored_at);
        match &entry.value {
            Some(v) if age < self.config.ttl => Some(Outcome::Found(Arc::clone(v))),
            None if age < self.config.negative_ttl => Some(Outcome::Unknown),
            _ => None,
        }
    }

    /// A found value still within `ttl + max_stale`.
    fn servable_stale(&self, key: &K, now: Instant) -> Option<Arc<V>> {
        let entry = self.map.get(key)?;
        let age = now.saturating_duration_since(entry.stored_at);
        match &entry.value {
            Some(v) if age < self.found_lifetime() => Some(Arc::clone(v)),
            _ => None,
        }
    }

    /// How long a found entry is kept (fresh, then stale-servable).
    fn found_lifetime(&self) -> Duration {
        self.config.ttl.saturating_add(self.config.max_stale)
    }

    fn lock_queues(&self) -> MutexGuard<'_, Queues<K>> {
        // The queues hold no invariant a panicking holder could break half-way that matters
        // more than availability: stale records are skipped, so recover from poisoning.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores an answer (`None` = does not exist), making room first if the cache is full.
    fn store(&self, key: &K, value: Option<Arc<V>>, epoch: u64) {
        if self.config.capacity == 0 {
            return;
        }
        let mut queues = self.lock_queues();
        if self.epoch.load(Ordering::Acquire) != epoch {
            // `invalidate_all` ran while this fetch was in flight: its answer may predate it.
            return;
        }
        let now = Instant::now();
        // Housekeeping with bounded work, then make room if this is a new key.
        self.purge_expired(&mut queues, now, PURGE_PER_INSERT);
        if !self.map.contains_key(key) {
            while self.map.len() >= self.config.capacity {
                if !self.evict_one(&mut queues, now) {
                    break;
                }
            }
        }
        let stamp = queues.next_stamp;
        queues.next_stamp = queues.next_stamp.wrapping_add(1);
        let record = Record {
            key: key.clone(),
            stamp,
            stored_at: now,
        };
        if value.is_some() {
            queues.found.push_back(record);
        } else {
            queues.negative.push_back(record);
        }
        self.map.insert(
            key.clone(),
            Entry {
                value,
                stored_at: now,
                stamp,
            },
        );
        // Refreshing a key leaves its old record behind (skipped when popped). Compact when such
        // records pile up; the queues then shrink to at most `capacity`, so this is amortized
        // O(1) per insertion.
        let slack = self.config.capacity.saturating_mul(2).saturating_add(64);
        if queues.negative.len() + queues.found.len() > slack {
            let live = |r: &Record<K>| self.map.get(&r.key).is_some_and(|e| e.stamp == r.stamp);
            queues.negative.retain(live);
            queues.found.retain(live);
        }
    }

    /// Removes the entry `record` was made for, if it is still the current one for its key.
    fn remove_record(&self, record: &Record<K>) -> bool {
        self.map
            .remove_if(&record.key, |_, e| e.stamp == record.stamp)
            .is_some()
    }

    /// Drops up to `budget` expired records (and their entries) from the queue fronts.
    fn purge_expired(&self, queues: &mut Queues<K>, now: Instant, budget: usize) {
        let negative_ttl = self.config.negative_ttl;
        let found_lifetime = self.found_lifetime();
        let mut budget = budget;
        for (queue, lifetime) in [
            (&mut queues.negative, negative_ttl),
            (&mut queues.found, found_lifetime),
        ] {
            while budget > 0 {
                match queue.front() {
                    Some(r) if now.saturating_duration_since(r.stored_at) >= lifetime => {}
                    _ => break,
                }
                budget -= 1;
                if let Some(record) = queue.pop_front() {
                    self.remove_record(&record);
                }
            }
        }
    }

    /// Removes one entry to make room: an expired one if any, else the oldest negative, else the
    /// oldest found. Returns false when there is nothing left to remove.
    fn evict_one(&self, queues: &mut Queues<K>, now: Instant) -> bool {
        let negative_ttl = self.config.negative_ttl;
        let found_lifetime = self.found_lifetime();
        let expired = |q: &VecDeque<Record<K>>, lifetime: Duration| {
            q.front()
                .is_some_and(|r| now.saturating_duration_since(r.stored_at) >= lifetime)
        };
        loop {
            let (record, live) = if expired(&queues.negative, negative_ttl) {
                (queues.negative.pop_front(), false)
            } else if expired(&queues.found, found_lifetime) {
                (queues.found.pop_front(), false)
            } else if !queues.negative.is_empty() {
                (queues.negative.pop_front(), true)
            } else {
                (queues.found.pop_front(), true)
            };
            let Some(record) = record else {
                return false;
            };
            if self.remove_record(&record) {
                if live {
                    bump(&self.stats.evictions);
                }
                return true;
            }
            // A record superseded by a refresh of its key: nothing to remove, keep going.
        }
    }

    /// The cached value for `key`, fresh or stale, without fetching or touching the stats.
    /// Negative entries read as `None`.
    pub fn peek(&self, key: &K) -> Option<Arc<V>> {
        self.map.get(key).and_then(|e| e.value.clone())
    }

    /// Number of cached entries (found + negative, including expired ones not yet removed).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: load(&s.hits),
            negative_hits: load(&s.negative_hits),
            misses: load(&s.misses),
            stale_served: load(&s.stale_served),
            fetches: load(&s.fetches),
            fetch_failures: load(&s.fetch_failures),
            evictions: load(&s.evictions),
        }
    }

    /// Drops every entry. Fetches already in flight still answer their waiters but do not
    /// store their results (they may predate the invalidation).
    pub fn invalidate_all(&self) {
        let mut queues = self.lock_queues();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.map.clear();
        queues.negative.clear();
        queues.found.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU8;

    const FOUND: u8 = 0;
    const MISSING: u8 = 1;
    const FAIL: u8 = 2;

    /// Counts calls; answers according to `mode`, after `delay` (use with paused time).
    struct Source {
        calls: AtomicU64,
        mode: AtomicU8,
        delay: Duration,
    }

    impl Source {
        fn new(mode: u8) -> Self {
            Self::delayed(mode, Duration::ZERO)
        }
        fn delayed(mode: u8, delay: Duration) -> Self {
            Source {
                calls: AtomicU64::new(0),
                mode: AtomicU8::new(mode),
                delay,
            }
        }
        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }
        fn set(&self, mode: u8) {
            self.mode.store(mode, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl Fetch<String, String> for Source {
        async fn fetch(&self, key: &String) -> Result<Option<String>, FetchError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            match self.mode.load(Ordering::SeqCst) {
                FOUND => Ok(Some(format!("record:{key}"))),
                MISSING => Ok(None),
                _ => Err(FetchError("registry down".into())),
            }
        }
    }

    fn config() -> CacheConfig {
        CacheConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_stale: Duration::from_secs(300),
            capacity: 1000,
        }
    }

    fn key(s: &str) -> String {
        s.to_string()
    }

    fn found(lookup: Lookup<String>) -> String {
        match lookup {
            Lookup::Found(v) => (*v).clone(),
            other => panic!("expected Found, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_hit_is_served_without_fetching() {
        let cache = ReadThrough::new(config());
        let source = Source::new(FOUND);
        assert_eq!(found(cache.get(&key("a"), &source).await), "record:a");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(found(cache.get(&key("a"), &source).await), "record:a");
        assert_eq!(source.calls(), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.fetches), (1, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn negative_answer_is_cached_within_negative_ttl_then_refetched() {
        let cache = ReadThrough::new(config());
        let source = Source::new(MISSING);
        assert!(matches!(
            cache.get(&key("x"), &source).await,
            Lookup::Unknown
        ));
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert!(matches!(
            cache.get(&key("x"), &source).await,
            Lookup::Unknown
        ));
        assert_eq!(source.calls(), 1);
        assert_eq!(cache.stats().negative_hits, 1);
        assert_eq!(cache.peek(&key("x")), None);

        tokio::time::advance(Duration::from_millis(200)).await;
        source.set(FOUND);
        assert_eq!(found(cache.get(&key("x"), &source).await), "record:x");
        assert_eq!(source.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expiry_refetches() {
        let cache = ReadThrough::new(config());
        let source = Source::new(FOUND);
        found(cache.get(&key("a"), &source).await);
        tokio::time::advance(Duration::from_secs(60)).await;
        found(cache.get(&key("a"), &source).await);
        assert_eq!(source.calls(), 2);
        // The refetched value is fresh again for a full ttl.
        tokio::time::advance(Duration::from_secs(30)).await;
        found(cache.get(&key("a"), &source).await);
        assert_eq!(source.calls(), 2);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_concurrent_gets_of_one_key_share_one_fetch() {
        let cache = Arc::new(ReadThrough::new(config()));
        // With paused time the clock only moves once every task is idle, i.e. once all 50
        // callers are waiting on the one fetch.
        let source = Arc::new(Source::delayed(FOUND, Duration::from_millis(100)));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, source) = (Arc::clone(&cache), Arc::clone(&source));
                tokio::spawn(async move { cache.get(&key("a"), &*source).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(found(task.await.unwrap()), "record:a");
        }
        assert_eq!(source.calls(), 1);
        let stats = cache.stats();
        assert_eq!((stats.fetches, stats.misses, stats.hits), (1, 50, 0));
        assert!(cache.inflight.is_empty());
    }

    /// Answers only once both keys are being fetched at the same time.
    struct Rendezvous {
        barrier: tokio::sync::Barrier,
    }

    #[async_trait::async_trait]
    impl Fetch<String, String> for Rendezvous {
        async fn fetch(&self, key: &String) -> Result<Option<String>, FetchError> {
            self.barrier.wait().await;
            Ok(Some(key.clone()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_fetch_concurrently() {
        let cache = ReadThrough::new(config());
        let source = Rendezvous {
            barrier: tokio::sync::Barrier::new(2),
        };
        let (ka, kb) = (key("a"), key("b"));
        let both = async { tokio::join!(cache.get(&ka, &source), cache.get(&kb, &source)) };
        // Serialized fetches would never pass the barrier; paused time fires the timeout then.
        let (a, b) = tokio::time::timeout(Duration::from_secs(5), both)
            .await
            .expect("fetches of different keys must not wait on each other");
        assert_eq!((found(a), found(b)), ("a".to_string(), "b".to_string()));
        assert_eq!(cache.stats().fetches, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_value_served_while_source_fails_within_max_stale_then_unavailable() {
        let cache = ReadThrough::new(config());
        let source = Source::new(FOUND);
        found(cache.get(&key("a"), &source).await);
        source.set(FAIL);

        // Past ttl, within ttl + max_stale.
        tokio::time::advance(Duration::from_secs(60 + 299)).await;
        assert_eq!(found(cache.get(&key("a"), &source).await), "record:a");
        assert_eq!(cache.stats().stale_served, 1);

        // Beyond ttl + max_stale.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            cache.get(&key("a"), &source).await,
            Lookup::Unavailable
        ));
        let stats = cache.stats();
        assert_eq!((stats.stale_served, stats.fetch_failures), (1, 2));
        // Nothing stale for a key never fetched successfully.
        assert!(matches!(
            cache.get(&key("b"), &source).await,
            Lookup::Unavailable
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_is_not_cached() {
        let cache = ReadThrough::new(config());
        let source = Source::new(FAIL);
        assert!(matches!(
            cache.get(&key("a"), &source).await,
            Lookup::Unavailable
        ));
        assert!(matches!(
            cache.get(&key("a"), &source).await,
            Lookup::Unavailable
        ));
        assert_eq!(source.calls(), 2);
        assert!(cache.is_empty());
        source.set(FOUND);
        assert_eq!(found(cache.get(&key("a"), &source).await), "record:a");
        assert_eq!(source.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn flood_of_unknown_keys_stays_within_capacity() {
        let cache = ReadThrough::new(CacheConfig {
            capacity: 1000,
            ..config()
        });
        let source = Source::new(FOUND);
        found(cache.get(&key("real-client"), &source).await);
        source.set(MISSING);
        for i in 0..100_000 {
            let lookup = cache.get(&format!("unknown-{i}"), &source).await;
            assert!(matches!(lookup, Lookup::Unknown));
            assert!(cache.len() <= 1000, "len {} after {i}", cache.len());
        }
        assert_eq!(cache.len(), 1000);
        // 1 found + 100_000 negatives through 1000 slots, all still live.
        assert_eq!(cache.stats().evictions, 100_001 - 1000);
        // Negative entries are evicted first: the real record survived the flood.
        assert!(cache.peek(&key("real-client")).is_some());
        // The bookkeeping queues stay bounded too.
        let queued = {
            let q = cache.lock_queues();
            q.negative.len() + q.found.len()
        };
        assert!(queued <= 2 * 1000 + 64, "{queued} queue records");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_removed_before_live_ones_are_evicted() {
        let cache = ReadThrough::new(CacheConfig {
            capacity: 10,
            ..config()
        });
        let source = Source::new(MISSING);
        for i in 0..10 {
            cache.get(&format!("old-{i}"), &source).await;
        }
        tokio::time::advance(Duration::from_secs(6)).await; // past negative_ttl
        for i in 0..10 {
            cache.get(&format!("new-{i}"), &source).await;
        }
        assert_eq!(cache.len(), 10);
        assert_eq!(cache.stats().evictions, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_leader_does_not_hang_followers() {
        let cache = Arc::new(ReadThrough::new(config()));
        let source = Arc::new(Source::delayed(FOUND, Duration::from_millis(100)));
        let spawn_get = || {
            let (cache, source) = (Arc::clone(&cache), Arc::clone(&source));
            tokio::spawn(async move { cache.get(&key("a"), &*source).await })
        };
        let leader = spawn_get();
        while source.calls() == 0 {
            tokio::task::yield_now().await;
        }
        let follower = spawn_get();
        // Wait until the follower has joined the leader's flight (map + leader + follower).
        let flight = cache
            .inflight
            .get(&key("a"))
            .map(|c| Arc::clone(&c))
            .unwrap();
        while Arc::strong_count(&flight) < 4 {
            tokio::task::yield_now().await;
        }
        drop(flight);
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());

        let lookup = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("follower must not hang after the leader is cancelled")
            .unwrap();
        assert_eq!(found(lookup), "record:a");
        assert_eq!(source.calls(), 2); // the follower took over the fetch
        assert!(cache.inflight.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_leader_without_followers_leaves_no_flight_behind() {
        let cache = ReadThrough::new(config());
        let source = Source::delayed(FOUND, Duration::from_millis(100));
        let a = key("a");
        let get = cache.get(&a, &source);
        assert!(tokio::time::timeout(Duration::from_millis(10), get)
            .await
            .is_err());
        assert!(cache.inflight.is_empty());
        found(cache.get(&key("a"), &source).await);
    }

    #[tokio::test(start_paused = true)]
    async fn peek_reads_stale_values_without_fetching_or_counting() {
        let cache = ReadThrough::new(config());
        let source = Source::new(FOUND);
        assert_eq!(cache.peek(&key("a")), None);
        found(cache.get(&key("a"), &source).await);
        let before = cache.stats();
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(
            cache.peek(&key("a")).as_deref(),
            Some(&"record:a".to_string())
        );
        assert_eq!(cache.stats(), before);
        assert_eq!(source.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_all_empties_the_cache_and_ignores_older_in_flight_results() {
        let cache = Arc::new(ReadThrough::new(config()));
        let source = Arc::new(Source::delayed(FOUND, Duration::from_millis(100)));
        found(cache.get(&key("a"), &*source).await);
        cache.invalidate_all();
        assert!(cache.is_empty());

        let task = {
            let (cache, source) = (Arc::clone(&cache), Arc::clone(&source));
            tokio::spawn(async move { cache.get(&key("b"), &*source).await })
        };
        while source.calls() < 2 {
            tokio::task::yield_now().await;
        }
        cache.invalidate_all();
        found(task.await.unwrap()); // the waiter still gets its answer...
        assert!(cache.peek(&key("b")).is_none()); // ...but it was not stored
    }

    #[tokio::test(start_paused = true)]
    async fn zero_capacity_stores_nothing() {
        let cache = ReadThrough::new(CacheConfig {
            capacity: 0,
            ..config()
        });
        let source = Source::new(FOUND);
        found(cache.get(&key("a"), &source).await);
        found(cache.get(&key("a"), &source).await);
        assert!(cache.is_empty());
        assert_eq!(source.calls(), 2);
    }
}
