//! Brute-force protection: failed client authentications are counted per client (envID and
//! `client_id`) and per source address; once either is over its threshold the gateway answers
//! `429 Too Many Requests` with `Retry-After` instead of verifying the secret.
//!
//! [`FailureLimiter`] is the seam. Two implementations:
//! - [`LocalLimiter`] ([`local`]): in-process, fixed memory; each replica counts on its own.
//! - [`SharedLimiter`] ([`shared`]): counters in Redis ([`redis`]) shared by every replica, with
//!   a timeout on each call, a circuit breaker ([`breaker`]) and a configured fallback (the
//!   in-process counters, or refusing validation) while Redis cannot answer.
//!
//! # Reserving before verifying
//!
//! A failure is *reserved* before a secret is verified ([`FailureLimiter::reserve`]) and
//! *released* when it verified ([`FailureLimiter::release`]). However many guesses arrive at
//! once, at most the threshold of them are let through to verification; the rest are locked out
//! without costing a verification. Secrets that verified recently are remembered by the
//! validator and never reach the limiter, so they cost no counting (and no Redis call).
//!
//! # Windows
//!
//! Windows follow each other (window `n` covers `[n × window, (n + 1) × window)`, of the local
//! limiter's age or of Redis's clock). A key is locked while the failures counted in the current
//! window, or in the previous one, reach its threshold; a lockout therefore does not vanish at a
//! window boundary and lasts until the end of the window after the one in which the threshold
//! was reached (if no further failures are recorded; requests refused as locked record none).
//! The `Retry-After` given is the time left in the *current* window.

pub mod breaker;
pub mod local;
pub mod redis;
pub mod shared;

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

pub use local::{LocalLimiter, SketchSize};
pub use shared::{OnStoreError, SharedLimiter, StoreConfig};

/// Whose failure it is: the client (within its environment) and the source address.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub env_id: &'a str,
    pub client_id: &'a [u8],
    pub ip: Option<IpAddr>,
}

/// One failure, counted until it is released.
#[derive(Debug)]
#[must_use = "a reservation counts as a failure unless it is released"]
pub struct Reservation(pub(crate) Reserved);

/// Where a reservation was counted.
#[derive(Debug)]
pub(crate) enum Reserved {
    Local(local::Reservation),
    Shared(redis::Reservation),
    /// No key was counted (both limits disabled).
    Nothing,
}

/// Why a limiter lets no verification through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client or the address is over its threshold: retry after this long (whole seconds,
    /// at least 1 s).
    Locked(Duration),
    /// The shared store cannot answer and the configuration says to refuse meanwhile
    /// (`on_store_error = "closed"`).
    Unavailable,
}

/// Counts authentication failures and says when a client or address is locked out.
#[async_trait]
pub trait FailureLimiter: Send + Sync {
    /// `Err` when the *address* is over its threshold (or the limiter cannot tell and is
    /// configured to refuse). For requests that present no secret (public clients): there is
    /// nothing of the client to guess, so its own count does not stop it — else anyone could lock
    /// a public client out by sending wrong secrets under its client_id.
    async fn check_address(&self, who: &Who<'_>) -> Result<(), Refusal>;
    /// Counts one failure for both keys, unless either is locked (then nothing is counted). The
    /// failure stays counted unless the reservation is released.
    async fn reserve(&self, who: &Who<'_>) -> Result<Reservation, Refusal>;
    /// Takes back a reserved failure: the verification it was reserved for succeeded.
    async fn release(&self, reservation: Reservation);
    /// What the limiter's store did (zero for in-process limiters).
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// Counts of a shared store's calls, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Whether a shared store is configured at all.
    pub shared: bool,
    /// Calls that failed (connection, protocol or script error).
    pub errors: u64,
    /// Calls that took longer than the store timeout.
    pub timeouts: u64,
    /// Calls not made because the circuit breaker was open.
    pub skipped: u64,
    /// Decisions taken by the in-process counters because the store could not answer.
    pub fell_back: u64,
    /// Requests refused (503) because the store could not answer (`on_store_error = "closed"`).
    pub refused: u64,
    /// Whether the breaker is open now (calls skipped).
    pub breaker_open: bool,
}

/// Thresholds of a limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutConfig {
    /// Length of a counting window; clamped to 1 s ..= 7 days.
    pub window: Duration,
    /// Failures per window after which a client is locked; `0` disables the per-client limit.
    pub max_failures_per_client: u32,
    /// Failures per window after which a source address is locked; `0` disables the per-address
    /// limit.
    pub max_failures_per_ip: u32,
}

const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

impl LockoutConfig {
    /// The configuration with its window clamped to 1 s ..= 7 days.
    pub fn clamped(self) -> LockoutConfig {
        LockoutConfig {
            window: self.window.clamp(MIN_WINDOW, MAX_WINDOW),
            ..self
        }
    }
}

/// Whole seconds, rounded up, at least 1 s (what `Retry-After` can express).
pub(crate) fn round_up_secs(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}
