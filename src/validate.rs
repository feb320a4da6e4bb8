//! Validation in place: checks a token request's client authentication against the client
//! records, so that only valid requests reach the authorization server.
//!
//! Order: lockout → record → method policy → secret (argon2 at most once per distinct client and
//! secret within `verified_ttl`, on a blocking thread) → grant type (the one the endpoint's call
//! belongs to; none for introspection and revocation). Every failed authentication
//! is counted for the client_id and the source address, known client or not.

use std::net::IpAddr;
use std::sync::Arc;

use crate::clients::policy::{self, authentication_failed};
use crate::clients::secret::VerifiedCache;
use crate::clients::store::{ClientKey, ClientRecord, ClientStore, Lookup};
use crate::lockout::FailureLimiter;
use crate::protocol::{
    AuthMethod, Endpoint, Extracted, GrantCheck, MethodSeen, OAuthError, Reading,
};

/// What validation established about a request's client authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The reading of the Basic credentials that the record confirmed (the raw one for a
    /// client that skipped RFC 6749's form-encoding).
    pub reading: Reading,
    /// The method the upstream demands for this client, if its record names one.
    pub upstream_method: Option<AuthMethod>,
}

pub struct Validator {
    store: ClientStore,
    verified: VerifiedCache,
    limiter: Box<dyn FailureLimiter>,
    /// Bounds concurrent argon2 verifications (each takes ~19 MiB and a core for tens of ms), so
    /// that a burst of wrong secrets cannot exhaust memory before the lockout counts them.
    argon2_slots: tokio::sync::Semaphore,
}

impl Validator {
    pub fn new(
        store: ClientStore,
        verified: VerifiedCache,
        limiter: Box<dyn FailureLimiter>,
    ) -> Validator {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Validator {
            store,
            verified,
            limiter,
            argon2_slots: tokio::sync::Semaphore::new(cores),
        }
    }

    /// The client records validation reads.
    pub fn store(&self) -> &ClientStore {
        &self.store
    }

    /// Checks the request's client authentication against its client's record. Basic
    /// credentials that verify only in their raw reading (a client that skipped RFC 6749's
    /// form-encoding) are accepted, and [`Verified::reading`] says so.
    pub async fn validate(
        &self,
        env_id: &str,
        endpoint: Endpoint,
        x: &Extracted,
        ip: Option<IpAddr>,
    ) -> Result<Verified, OAuthError> {
        let tried_basic = x.tried_basic();
        let method = match x.method_seen() {
            MethodSeen::NoneFound => {
                return Err(OAuthError::invalid_client(
                    "client authentication is required",
                    false,
                ))
            }
            seen => seen.method().ok_or(OAuthError::invalid_client(
                "this authentication method is not accepted by the gateway",
                false,
            ))?,
        };
        let client_id = x.client_id().unwrap_or_default();
        if let Some(retry_after) = self.limiter.check(client_id, ip) {
            return Err(OAuthError::locked_out(retry_after));
        }
        let fail = |e: OAuthError| {
            self.limiter.record_failure(client_id, ip);
            e
        };
        let record = match self.store.lookup(&ClientKey::new(env_id, client_id)).await {
            Lookup::Found(r) => r,
            Lookup::Unknown => return Err(fail(authentication_failed(tried_basic))),
            Lookup::Unavailable => return Err(OAuthError::registry_unavailable()),
        };
        policy::check_method(&record, method, tried_basic).map_err(fail)?;
        let mut read_raw = false;
        if method != AuthMethod::None {
            let secret = x.secret().unwrap_or_default();
            let mut ok = self.verify(env_id, &record, secret).await;
            if ok {
                read_raw = x.raw_only();
            } else if let Some(raw) = x.raw_alternative() {
                ok = self.verify(env_id, &record, raw).await;
                read_raw = ok;
                if !ok {
                    // One request, two wrong guesses: both count.
                    self.limiter.record_failure(client_id, ip);
                }
            }
            if !ok {
                return Err(fail(authentication_failed(tried_basic)));
            }
        }
        if let GrantCheck::Required(grant) = endpoint.grant_check(x.grant_type()) {
            policy::check_grant(&record, grant)?;
        }
        Ok(Verified {
            reading: if read_raw {
                Reading::Raw
            } else {
                Reading::Standard
            },
            upstream_method: record.upstream_method,
        })
    }

    async fn verify(&self, env_id: &str, record: &Arc<ClientRecord>, presented: &[u8]) -> bool {
        let Some(spec) = &record.secret else {
            return false;
        };
        // A salted SHA-256 or a plain compare costs less than the digest that would remember it.
        if !spec.is_expensive() {
            return spec.verify(presented);
        }
        let key = self
            .verified
            .key(env_id, record.client_id.as_bytes(), spec, presented);
        if self.verified.contains(&key) {
            return true;
        }
        let Ok(_slot) = self.argon2_slots.acquire().await else {
            return false;
        };
        let (owned_spec, owned) = (spec.clone(), presented.to_vec());
        let ok = tokio::task::spawn_blocking(move || owned_spec.verify(&owned))
            .await
            .unwrap_or(false);
        if ok {
            self.verified.insert(key);
        }
        ok
    }
}
