//! Secret verification for validation in place: successes remembered, identical verifications in
//! flight run once, expensive ones on blocking threads behind a bounded queue, dummy secrets for
//! clients without a usable one, and counts by kind.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::Block;
use dashmap::DashMap;
use tokio::sync::{OnceCell, Semaphore};

use super::secret::{Profile, SecretSpec, VerifiedCache};
use crate::protocol::SecretBytes;

/// What one verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    NoMatch,
    /// Not run: the queue of expensive verifications is full.
    Busy,
}

/// How many verifications ran, by kind, and how many were refused for a full queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifierStats {
    pub argon2id: u64,
    pub sha256: u64,
    pub plain: u64,
    pub refused: u64,
}

#[derive(Default)]
struct Counts {
    argon2id: AtomicU64,
    sha256: AtomicU64,
    plain: AtomicU64,
    refused: AtomicU64,
}

/// The settings a verifier is built with (a reload keeps the verifier, with its memory and
/// counts, when they do not change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierConfig {
    /// How long a success is remembered (from its last use).
    pub remember_for: Duration,
    /// How many successes are remembered at most.
    pub capacity: usize,
    /// How many expensive verifications may wait or run at once.
    pub max_pending: usize,
}

pub struct Verifier {
    config: VerifierConfig,
    remembered: VerifiedCache,
    /// Expensive verifications running at once: one per core.
    slots: Semaphore,
    /// Expensive verifications waiting for or holding a slot.
    pending: AtomicUsize,
    /// argon2id's working memory, one buffer per slot, reused (see [`SecretSpec::verify_with`]).
    scratch: Mutex<Vec<Vec<Block>>>,
    dummies: Mutex<HashMap<Profile, Arc<SecretSpec>>>,
    counts: Counts,
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Verifier {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Verifier {
            config,
            remembered: VerifiedCache::new(config.remember_for, config.capacity),
            slots: Semaphore::new(cores),
            pending: AtomicUsize::new(0),
            scratch: Mutex::new(Vec::new()),
            dummies: Mutex::new(HashMap::new()),
            counts: Counts::default(),
        }
    }

    pub fn config(&self) -> VerifierConfig {
        self.config
    }

    /// The key under which a verification of `presented` against `spec` for this client is
    /// remembered and coalesced (a keyed digest: no secret is stored).
    pub fn key(&self, env_id: &str, client_id: &[u8], spec: &SecretSpec, presented: &[u8]) -> Key {
        Key(self.remembered.key(env_id, client_id, spec, presented))
    }

    /// Whether this verification succeeded recently (a hit keeps it remembered longer).
    pub fn remembered(&self, key: &Key) -> bool {
        self.remembered.contains(&key.0)
    }

    pub fn remember(&self, key: &Key) {
        self.remembered.insert(key.0);
    }

    /// Verifies `presented` against `spec`: inline for the cheap kinds; on a blocking thread for
    /// argon2id, one per core, with at most `max_pending` waiting or running (past that: `Busy`).
    pub async fn run(&self, spec: &SecretSpec, presented: &[u8]) -> Verdict {
        let profile = spec.profile();
        if !profile.is_expensive() {
            self.count(profile);
            return verdict(spec.verify(presented));
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.config.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Busy;
        }
        let _pending = Pending(&self.pending);
        let Ok(_slot) = self.slots.acquire().await else {
            return Verdict::Busy;
        };
        self.count(profile);
        let (spec, presented) = (spec.clone(), SecretBytes::from(presented));
        let mut scratch = self.lock_scratch().pop().unwrap_or_default();
        let done = tokio::task::spawn_blocking(move || {
            let matched = spec.verify_with(&presented, &mut scratch);
            (matched, scratch)
        })
        .await;
        match done {
            Ok((matched, scratch)) => {
                self.lock_scratch().push(scratch);
                verdict(matched)
            }
            Err(_) => Verdict::NoMatch,
        }
    }

    /// A spec of this kind and cost that nothing matches (made once per profile; argon2id takes
    /// one hash on a blocking thread).
    pub async fn dummy(&self, profile: Profile) -> Arc<SecretSpec> {
        if let Some(d) = self.lock_dummies().get(&profile) {
            return d.clone();
        }
        let made = if profile.is_expensive() {
            tokio::task::spawn_blocking(move || profile.dummy())
                .await
                .unwrap_or_else(|_| Profile::Sha256.dummy())
        } else {
            profile.dummy()
        };
        self.lock_dummies()
            .entry(profile)
            .or_insert_with(|| Arc::new(made))
            .clone()
    }

    /// Makes the dummy of `profile` now (blocking), so that the first unknown client does not pay
    /// for it.
    pub fn prepare_dummy(&self, profile: Profile) {
        if !self.lock_dummies().contains_key(&profile) {
            let made = Arc::new(profile.dummy());
            self.lock_dummies().entry(profile).or_insert(made);
        }
    }

    pub fn stats(&self) -> VerifierStats {
        let c = &self.counts;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VerifierStats {
            argon2id: load(&c.argon2id),
            sha256: load(&c.sha256),
            plain: load(&c.plain),
            refused: load(&c.refused),
        }
    }

    fn count(&self, profile: Profile) {
        let c = match profile {
            Profile::Argon2id { .. } => &self.counts.argon2id,
            Profile::Sha256 => &self.counts.sha256,
            Profile::Plain => &self.counts.plain,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn lock_scratch(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_dummies(&self) -> std::sync::MutexGuard<'_, HashMap<Profile, Arc<SecretSpec>>> {
        self.dummies.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn verdict(matched: bool) -> Verdict {
    if matched {
        Verdict::Match
    } else {
        Verdict::NoMatch
    }
}

/// Counts a verification as pending until dropped.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A verification's identity: client, stored secret and presented secret, as a keyed digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

/// Identical work in flight, done once: every caller with the same key while one runs gets its
/// result. If the caller running it goes away, a waiting one takes over.
pub struct Flights<T> {
    map: DashMap<Key, Arc<OnceCell<T>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            map: DashMap::new(),
        }
    }
}

impl<T: Clone> Flights<T> {
    pub async fn run<F, Fut>(&self, key: Key, work: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        // The shard guard is a temporary of this statement: released before any await.
        let cell = Arc::clone(&self.map.entry(key).or_default());
        cell.get_or_init(|| async {
            // Removed when the work ends or is dropped, before the result is published: later
            // callers start afresh instead of reading an old result.
            let _done = Landed {
                map: &self.map,
                key,
                cell: &cell,
            };
            work().await
        })
        .await
        .clone()
    }
}

struct Landed<'a, T> {
    map: &'a DashMap<Key, Arc<OnceCell<T>>>,
    key: Key,
    cell: &'a Arc<OnceCell<T>>,
}

impl<T> Drop for Landed<'_, T> {
    fn drop(&mut self) {
        self.map
            .remove_if(&self.key, |_, c| Arc::ptr_eq(c, self.cell));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clients::secret::{hash_sha256, parse_secret};

    fn verifier(max_pending: usize) -> Verifier {
        Verifier::new(VerifierConfig {
            remember_for: Duration::from_secs(60),
            capacity: 100,
            max_pending,
        })
    }

    fn cheap_argon2id(secret: &[u8]) -> SecretSpec {
        Profile::Argon2id {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        }
        .spec_for(secret)
    }

    #[tokio::test]
    async fn verifications_are_counted_by_kind_dummies_included() {
        let v = verifier(8);
        let sha = parse_secret(&hash_sha256(b"s"), false, &|_| None).unwrap();
        assert_eq!(v.run(&sha, b"s").await, Verdict::Match);
        assert_eq!(v.run(&sha, b"x").await, Verdict::NoMatch);
        let dummy = v.dummy(Profile::Sha256).await;
        assert_eq!(v.run(&dummy, b"s").await, Verdict::NoMatch);
        let argon = cheap_argon2id(b"a");
        assert_eq!(v.run(&argon, b"a").await, Verdict::Match);
        let s = v.stats();
        assert_eq!((s.sha256, s.argon2id, s.plain, s.refused), (3, 1, 0, 0));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_expensive_verifications_only() {
        let v = verifier(0);
        assert_eq!(v.run(&cheap_argon2id(b"a"), b"a").await, Verdict::Busy);
        let sha = parse_secret(&hash_sha256(b"s"), false, &|_| None).unwrap();
        assert_eq!(v.run(&sha, b"s").await, Verdict::Match);
        assert_eq!(v.stats().refused, 1);
    }

    #[tokio::test]
    async fn a_dummy_has_the_kind_and_cost_of_its_profile_and_matches_nothing() {
        let v = verifier(8);
        let p = Profile::Argon2id {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let d = v.dummy(p).await;
        assert_eq!(d.profile(), p);
        assert!(Arc::ptr_eq(&d, &v.dummy(p).await), "made once");
        assert_eq!(v.run(&d, b"").await, Verdict::NoMatch);
    }

    #[tokio::test]
    async fn identical_work_in_flight_runs_once() {
        let flights: Arc<Flights<u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let key = Key([7; 32]);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (f, runs, gate) = (flights.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                f.run(key, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    42
                })
                .await
            }));
        }
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Done: the next caller runs afresh.
        assert_eq!(flights.run(key, || async { 7 }).await, 7);
    }
}
