//! The running configuration: settings, upstreams and the validator, built together and swapped
//! whole when the configuration is reloaded. A request works on the snapshot it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clients::secret::VerifiedCache;
use crate::clients::store::ClientStore;
use crate::config::{ClientsSettings, Settings};
use crate::lockout::{LocalLimiter, LockoutConfig};
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
    pub fn build(settings: Settings, generation: u64) -> Result<Runtime, String> {
        let upstreams: Arc<[Arc<Upstream>]> = settings
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u.clone())))
            .collect();
        let mut resolved: Vec<Arc<Upstream>> = upstreams.to_vec();
        let validator = match &settings.clients {
            Some(c) => {
                let v = build_validator(c)?;
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

/// The validator of `c`'s client records.
fn build_validator(c: &ClientsSettings) -> Result<Validator, String> {
    let l = c.lockout;
    Ok(Validator::new(
        ClientStore::open(c)?,
        VerifiedCache::new(c.verified_ttl, c.verified_capacity),
        Box::new(LocalLimiter::new(LockoutConfig {
            window: l.window,
            max_failures_per_client: l.max_failures_per_client,
            max_failures_per_ip: l.max_failures_per_ip,
        })),
    ))
}
