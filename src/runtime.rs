//! The running configuration: settings, upstreams and the validator, built together and swapped
//! whole when the configuration is reloaded. A request works on the snapshot it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clients::store::ClientStore;
use crate::clients::verifier::{Verifier, VerifierConfig};
use crate::config::{ClientsSettings, Settings};
use crate::lockout::{FailureLimiter, LocalLimiter, LockoutConfig};
use crate::upstream::Upstream;
use crate::validate::Validator;

/// Everything a configuration needs at run time.
pub struct Runtime {
    pub settings: Arc<Settings>,
    /// In the order of `settings.upstreams`.
    pub upstreams: Arc<[Arc<Upstream>]>,
    pub validator: Option<Arc<Validator>>,
    /// Every upstream to keep resolved and to require for `/readyz` (the registry's included).
    pub resolved: Vec<Arc<Upstream>>,
    /// 1 for the configuration the process started with, +1 per successful reload.
    pub generation: u64,
}

/// The current runtime, shared by the proxy, the admin listener and the background services.
pub type Shared = Arc<ArcSwap<Runtime>>;

impl Runtime {
    /// Builds the runtime of `settings`. Blocking: resolves host names and reads the client file.
    /// A reload passes the running runtime as `previous`: what validation remembers (successful
    /// verifications) and counts (failures) carries over where its settings did not change.
    pub fn build(
        settings: Settings,
        generation: u64,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, String> {
        let upstreams: Arc<[Arc<Upstream>]> = settings
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u.clone())))
            .collect();
        let mut resolved: Vec<Arc<Upstream>> = upstreams.to_vec();
        let validator = match &settings.clients {
            Some(c) => {
                let v = build_validator(c, previous)?;
                resolved.extend(v.store().upstream().cloned());
                Some(Arc::new(v))
            }
            None => None,
        };
        Ok(Runtime {
            settings: Arc::new(settings),
            upstreams,
            validator,
            resolved,
            generation,
        })
    }

    /// The client records of validating routes, if any.
    pub fn client_store(&self) -> Option<&ClientStore> {
        self.validator.as_deref().map(Validator::store)
    }
}

/// The validator of `c`'s client records, keeping `previous`'s verifier and limiter where their
/// settings are unchanged.
fn build_validator(c: &ClientsSettings, previous: Option<&Runtime>) -> Result<Validator, String> {
    let before = previous.and_then(|p| Some((p.settings.clients.as_ref()?, p.validator.as_ref()?)));
    let config = VerifierConfig {
        remember_for: c.verified_ttl,
        capacity: c.verified_capacity,
        max_pending: c.max_pending_verifications,
    };
    let verifier = match before {
        Some((_, v)) if v.verifier().config() == config => v.verifier().clone(),
        _ => Arc::new(Verifier::new(config)),
    };
    let limiter: Arc<dyn FailureLimiter> = match before {
        Some((old, v)) if old.lockout == c.lockout => v.limiter().clone(),
        _ => {
            let l = c.lockout;
            Arc::new(LocalLimiter::new(LockoutConfig {
                window: l.window,
                max_failures_per_client: l.max_failures_per_client,
                max_failures_per_ip: l.max_failures_per_ip,
            }))
        }
    };
    Ok(Validator::new(ClientStore::open(c)?, verifier, limiter))
}
