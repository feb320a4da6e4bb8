//! The [`FailureLimiter`] of several replicas: counters in Redis ([`RedisCounters`]), and what to
//! do while Redis cannot answer ([`OnStoreError`]). Each call is bounded by the store timeout;
//! after [`BREAKER_THRESHOLD`] failed calls in a row the store is not asked for the breaker's
//! cooldown, so an outage costs one timeout per cooldown rather than one per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::breaker::Breaker;
use super::local::LocalLimiter;
use super::redis::{Answer, RedisCounters, StoreError, Target};
use super::{FailureLimiter, LockoutConfig, Refusal, Reservation, Reserved, StoreStats, Who};

/// Failed calls in a row after which the store is left alone for the cooldown.
pub const BREAKER_THRESHOLD: u32 = 3;

/// What validation does while the shared store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Count in this replica's own counters (each replica then gives attackers its own budget).
    #[default]
    Local,
    /// Refuse every request that needs a verification with 503 (remembered secrets still pass).
    Closed,
}

/// A shared store and how to use it.
#[derive(Clone)]
pub struct StoreConfig {
    pub target: Target,
    /// Bounds connecting and each call.
    pub timeout: Duration,
    /// How long the store is left alone after [`BREAKER_THRESHOLD`] failures in a row.
    pub cooldown: Duration,
    pub on_error: OnStoreError,
}

pub struct SharedLimiter {
    store: RedisCounters,
    local: LocalLimiter,
    breaker: Breaker,
    on_error: OnStoreError,
    errors: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
    fell_back: AtomicU64,
    refused: AtomicU64,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("store", &self.store)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// A limiter counting in `store`, with in-process counters of the same thresholds for
    /// [`OnStoreError::Local`]. Connects on first use: a store down at start is an outage like
    /// any other.
    pub fn new(config: LockoutConfig, store: &StoreConfig) -> Result<SharedLimiter, String> {
        Ok(SharedLimiter {
            store: RedisCounters::new(&store.target, config, store.timeout)?,
            local: LocalLimiter::new(config),
            breaker: Breaker::new(BREAKER_THRESHOLD, store.cooldown),
            on_error: store.on_error,
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The store's answer, or `None` when it gave none (or was not asked: breaker open).
    async fn ask<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        if !self.breaker.allows(Instant::now()) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match call.await {
            Ok(v) => {
                if self.breaker.succeeded() {
                    tracing::info!("lockout store answers again: counters are shared again");
                }
                Some(v)
            }
            Err(e) => {
                let counter = match e {
                    StoreError::Timeout => &self.timeouts,
                    StoreError::Failed => &self.errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if self.breaker.failed(Instant::now()) {
                    tracing::warn!(
                        error = ?e,
                        on_store_error = ?self.on_error,
                        "lockout store failed {} times in a row: not asked for {:?}",
                        self.breaker.threshold(),
                        self.breaker.cooldown(),
                    );
                }
                None
            }
        }
    }

    /// The decision without the store: the local counters', or a refusal.
    fn fallback<T>(&self, local: impl FnOnce() -> Result<T, Refusal>) -> Result<T, Refusal> {
        match self.on_error {
            OnStoreError::Local => {
                self.fell_back.fetch_add(1, Ordering::Relaxed);
                local()
            }
            OnStoreError::Closed => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::Unavailable)
            }
        }
    }
}

#[async_trait]
impl FailureLimiter for SharedLimiter {
    async fn check_address(&self, who: &Who<'_>) -> Result<(), Refusal> {
        match self.ask(self.store.check_address(who)).await {
            Some(Answer::Open(_)) => Ok(()),
            Some(Answer::Locked(retry)) => Err(Refusal::Locked(retry)),
            None => self.fallback(|| self.local.check_address_now(who).map_err(Refusal::Locked)),
        }
    }

    async fn reserve(&self, who: &Who<'_>) -> Result<Reservation, Refusal> {
        match self.ask(self.store.reserve(who)).await {
            Some(Answer::Open(Some(r))) => Ok(Reservation(Reserved::Shared(r))),
            Some(Answer::Open(None)) => Ok(Reservation(Reserved::Nothing)),
            Some(Answer::Locked(retry)) => Err(Refusal::Locked(retry)),
            None => self.fallback(|| {
                let r = self.local.reserve_now(who).map_err(Refusal::Locked)?;
                Ok(Reservation(Reserved::Local(r)))
            }),
        }
    }

    async fn release(&self, reservation: Reservation) {
        match reservation.0 {
            Reserved::Local(r) => self.local.release_now(r),
            // A release that fails leaves one failure counted until the window ends.
            Reserved::Shared(r) => drop(self.ask(self.store.release(r)).await),
            Reserved::Nothing => {}
        }
    }

    fn stats(&self) -> StoreStats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStats {
            shared: true,
            errors: n(&self.errors),
            timeouts: n(&self.timeouts),
            skipped: n(&self.skipped),
            fell_back: n(&self.fell_back),
            refused: n(&self.refused),
            breaker_open: !self.breaker.allows(Instant::now()),
        }
    }
}
