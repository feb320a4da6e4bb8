//! The running configuration: settings, upstreams and the validator, built together and swapped
//! whole when the configuration is reloaded. A request works on the snapshot it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::assertion::SigningKeys;
use crate::clients::record::ClientRecord;
use crate::clients::store::ClientStore;
use crate::clients::verifier::{Verifier, VerifierConfig};
use crate::config::{
    ClientsSettings, LockoutSettings, RouteMode, Settings, StoreFallback, TokenMode,
};
use crate::lockout::redis::Target;
use crate::lockout::{
    FailureLimiter, LocalLimiter, LockoutConfig, OnStoreError, SharedLimiter, StoreConfig,
};
use crate::protocol::AuthMethod;
use crate::upstream::Upstream;
use crate::validate::Validator;

/// Everything a configuration needs at run time.
pub struct Runtime {
    pub settings: Arc<Settings>,
    /// In the order of `settings.upstreams`.
    pub upstreams: Arc<[Arc<Upstream>]>,
    pub validator: Option<Arc<Validator>>,
    /// The gateway's signing keys (`private_key_jwt` upstreams, the JWKS).
    pub signing_keys: Arc<SigningKeys>,
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
        let signing_keys = Arc::new(SigningKeys::load(&settings.signing_keys)?);
        if let Some(v) = &validator {
            let mut records = Vec::new();
            v.store().for_each_file_record(|r| {
                if r.upstream_method == Some(AuthMethod::PrivateKeyJwt) {
                    records.push(r.clone());
                }
            });
            check_signing_records(&settings, &records, &signing_keys)?;
        }
        Ok(Runtime {
            settings: Arc::new(settings),
            upstreams,
            validator,
            signing_keys,
            resolved,
            generation,
        })
    }

    /// The client records of validating routes, if any.
    pub fn client_store(&self) -> Option<&ClientStore> {
        self.validator.as_deref().map(Validator::store)
    }
}

/// A client file's `private_key_jwt` records must be usable: no route that only reads records
/// (`per_client`) may meet one (the gateway signs only for a client it verified), and the key
/// each names (or an active one) must exist. (A registry's records are checked when they are
/// used: a key they name that does not sign is a 500, counted in
/// `tokengate_signing_failures_total`.)
pub fn check_signing_records<'r>(
    settings: &Settings,
    records: impl IntoIterator<Item = &'r ClientRecord>,
    keys: &SigningKeys,
) -> Result<(), String> {
    let unverified = settings.routes.iter().find(|r| {
        matches!(
            &r.mode,
            RouteMode::Token(TokenMode {
                per_client: true,
                ..
            })
        )
    });
    for r in records {
        if r.upstream_method != Some(AuthMethod::PrivateKeyJwt) {
            continue;
        }
        let who = format!("client {:?} of environment {:?}", r.client_id, r.env_id);
        if let Some(route) = unverified {
            return Err(format!(
                "route {:?} does not verify secrets (per_client), and {who} has upstream_method = \
                 \"private_key_jwt\": the gateway signs only for clients it verified (use mode = \
                 \"validate\", or a client file of its own for validating routes)",
                route.name
            ));
        }
        keys.signer(r.signing_key.as_deref())
            .map_err(|e| format!("{who} has upstream_method = \"private_key_jwt\": {e}"))?;
    }
    Ok(())
}

/// The lockout counters of `l`: in-process, or in the shared store it names.
fn build_limiter(l: &LockoutSettings) -> Result<Arc<dyn FailureLimiter>, String> {
    let config = LockoutConfig {
        window: l.window,
        max_failures_per_client: l.max_failures_per_client,
        max_failures_per_ip: l.max_failures_per_ip,
    };
    let Some(store) = &l.store else {
        return Ok(Arc::new(LocalLimiter::new(config)));
    };
    let shared = StoreConfig {
        target: Target {
            url: store.url.as_str().to_string(),
            password: store.password.as_ref().map(|p| p.as_str().to_string()),
            ca_pem: store.ca_pem.clone(),
            key_prefix: store.key_prefix.clone(),
        },
        timeout: store.timeout,
        cooldown: store.cooldown,
        on_error: match store.on_error {
            StoreFallback::Local => OnStoreError::Local,
            StoreFallback::Closed => OnStoreError::Closed,
        },
    };
    let limiter = SharedLimiter::new(config, &shared)
        .map_err(|e| format!("lockout.store ({}): {e}", store.display))?;
    tracing::info!(store = %store.display, "lockout counters shared in Redis");
    Ok(Arc::new(limiter))
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
    let limiter = match before {
        Some((old, v)) if old.lockout == c.lockout => v.limiter().clone(),
        _ => build_limiter(&c.lockout)?,
    };
    Ok(Validator::new(ClientStore::open(c)?, verifier, limiter))
}
