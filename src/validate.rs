//! Validation in place: checks a request's client authentication against the client records, so
//! that only valid requests reach the authorization server.
//!
//! The rules (README "Security model" says what they promise):
//! - **One answer for every failed authentication**: unknown client, disabled client, wrong
//!   secret, a method the client may not use, no secret where one is needed, a secret where none
//!   is expected — all get the same 401, after the same work: a secret that cannot match is still
//!   verified, against the client's own stored secret or a dummy of the kind and cost the records
//!   use ([`ClientStore::typical_profile`]).
//! - **A lockout that stops guessing, not clients**: failures are counted per (envID, client_id)
//!   and per source address ([`FailureLimiter`]). A secret that verified recently passes even
//!   while its client_id is locked out (someone else's guesses cannot lock a working client out);
//!   any other secret of a locked client or address gets 429 without being verified. A public
//!   client (no secret) is refused only while its request's address is locked.
//! - **A burst buys no extra guesses**: a failure is reserved before a verification and released
//!   when it succeeds, so at most the threshold of guesses sent at once are verified; identical
//!   verifications in flight run once (a fleet starting with one secret is one verification).
//! - **Bounded work**: client_ids longer than [`MAX_CLIENT_ID_BYTES`] or with control characters
//!   are refused before any lookup; argon2id runs behind a bounded queue (past it, 503).
//! - A registry that cannot answer gives 503 and counts no failure (an outage locks nobody out).
//!
//! Then the grant type (the one the endpoint's call belongs to; none for introspection and
//! revocation) is checked: `unauthorized_client` is not an authentication failure.

use std::net::IpAddr;
use std::sync::Arc;

use crate::clients::policy::{self, authentication_failed};
use crate::clients::secret::SecretSpec;
use crate::clients::store::{ClientKey, ClientRecord, ClientStore, Lookup};
use crate::clients::verifier::{Flights, Key, Verdict, Verifier};
use crate::lockout::{FailureLimiter, Refusal, Who};
use crate::protocol::{
    AuthMethod, Endpoint, Extracted, GrantCheck, MethodSeen, OAuthError, Reading,
};

/// The longest client_id looked up; longer ones are refused as failures before any lookup.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// What validation established about a request's client authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The reading of the Basic credentials that the record confirmed (the raw one for a
    /// client that skipped RFC 6749's form-encoding).
    pub reading: Reading,
    /// The method the upstream demands for this client, if its record names one.
    pub upstream_method: Option<AuthMethod>,
    /// The gateway key its record names for `private_key_jwt`, if any.
    pub signing_key: Option<Box<str>>,
}

/// What came of one guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Match,
    NoMatch,
    Refused(Refusal),
    Busy,
}

pub struct Validator {
    store: ClientStore,
    verifier: Arc<Verifier>,
    limiter: Arc<dyn FailureLimiter>,
    flights: Flights<Attempt>,
}

impl Validator {
    /// `verifier` and `limiter` may outlive this validator: a reload that keeps their settings
    /// keeps them, with what they remember and count.
    pub fn new(
        store: ClientStore,
        verifier: Arc<Verifier>,
        limiter: Arc<dyn FailureLimiter>,
    ) -> Validator {
        // The first unknown client must not be the one that pays for making the dummy.
        verifier.prepare_dummy(store.typical_profile());
        Validator {
            store,
            verifier,
            limiter,
            flights: Flights::default(),
        }
    }

    /// The client records validation reads.
    pub fn store(&self) -> &ClientStore {
        &self.store
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    pub fn limiter(&self) -> &Arc<dyn FailureLimiter> {
        &self.limiter
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
        let who = Who {
            env_id,
            client_id,
            ip,
        };
        let failed = authentication_failed(tried_basic);
        if !plausible_client_id(client_id) {
            self.fail_unverified(&who).await?;
            return Err(failed);
        }
        let record = match self.store.lookup(&ClientKey::new(env_id, client_id)).await {
            Lookup::Found(r) => Some(r),
            Lookup::Unknown => None,
            Lookup::Unavailable => return Err(OAuthError::registry_unavailable()),
        };
        let usable = record.as_ref().filter(|r| policy::accepts(r, method));

        let verified = if method == AuthMethod::None {
            // A public client: no secret to guess, so nothing to verify, either way.
            let Some(r) = usable else {
                self.fail_unverified(&who).await?;
                return Err(failed);
            };
            // No secret, nothing to guess: only an address that has been guessing is refused
            // (the client's own count would let anyone lock a public client out).
            self.limiter.check_address(&who).await.map_err(refused)?;
            (r, Reading::Standard)
        } else {
            let readings = readings(x);
            match usable.and_then(|r| Some((r, r.secret.as_ref()?))) {
                Some((r, spec)) => match self.verify(&who, r, spec, &readings).await? {
                    Some(reading) => (r, reading),
                    None => return Err(failed),
                },
                None => {
                    // Nothing can match: the same work as a wrong secret, then the same answer.
                    let spec = match record.as_ref().and_then(|r| r.secret.clone()) {
                        Some(own) => Arc::new(own),
                        None => self.verifier.dummy(self.store.typical_profile()).await,
                    };
                    for (presented, _) in &readings {
                        self.attempt_doomed(&who, &spec, presented).await?;
                    }
                    return Err(failed);
                }
            }
        };
        let (record, reading) = verified;
        if let GrantCheck::Required(grant) = endpoint.grant_check(x.grant_type()) {
            policy::check_grant(record, grant)?;
        }
        Ok(Verified {
            reading,
            upstream_method: record.upstream_method,
            signing_key: record.signing_key.clone(),
        })
    }

    /// The record of a client, without checking anything of the request (routes that only read
    /// records, `per_client`). A client_id not worth a lookup has none; a registry that cannot
    /// answer is a 503.
    pub async fn record(
        &self,
        env_id: &str,
        client_id: &[u8],
    ) -> Result<Option<Arc<ClientRecord>>, OAuthError> {
        if !plausible_client_id(client_id) {
            return Ok(None);
        }
        match self.store.lookup(&ClientKey::new(env_id, client_id)).await {
            Lookup::Found(r) => Ok(Some(r)),
            Lookup::Unknown => Ok(None),
            Lookup::Unavailable => Err(OAuthError::registry_unavailable()),
        }
    }

    /// Verifies the presented readings against the client's secret: `Some(reading)` for the one
    /// that matched. A remembered success passes whatever the lockout says.
    async fn verify(
        &self,
        who: &Who<'_>,
        record: &ClientRecord,
        spec: &SecretSpec,
        readings: &[(&[u8], Reading)],
    ) -> Result<Option<Reading>, OAuthError> {
        let keyed: Vec<(Key, &[u8], Reading)> = readings
            .iter()
            .map(|&(presented, reading)| {
                let key =
                    self.verifier
                        .key(&record.env_id, record.client_id.as_bytes(), spec, presented);
                (key, presented, reading)
            })
            .collect();
        if let Some((_, _, reading)) = keyed.iter().find(|(k, ..)| self.verifier.remembered(k)) {
            return Ok(Some(*reading));
        }
        for (key, presented, reading) in keyed {
            match self.attempt(who, key, spec, presented).await {
                Attempt::Match => return Ok(Some(reading)),
                Attempt::NoMatch => {}
                Attempt::Refused(r) => return Err(refused(r)),
                Attempt::Busy => return Err(OAuthError::verification_busy()),
            }
        }
        Ok(None)
    }

    /// One guess: a failure reserved (unless locked), the secret verified, the failure released
    /// if it matched. Identical guesses in flight share one attempt.
    async fn attempt(
        &self,
        who: &Who<'_>,
        key: Key,
        spec: &SecretSpec,
        presented: &[u8],
    ) -> Attempt {
        self.flights
            .run(key, || async {
                let reservation = match self.limiter.reserve(who).await {
                    Ok(r) => r,
                    Err(r) => return Attempt::Refused(r),
                };
                match self.verifier.run(spec, presented).await {
                    Verdict::Match => {
                        self.limiter.release(reservation).await;
                        self.verifier.remember(&key);
                        Attempt::Match
                    }
                    Verdict::NoMatch => Attempt::NoMatch,
                    Verdict::Busy => {
                        self.limiter.release(reservation).await;
                        Attempt::Busy
                    }
                }
            })
            .await
    }

    /// A guess that fails whatever it holds, at the cost of a real one (never shared with, nor
    /// remembered for, a guess that could succeed).
    async fn attempt_doomed(
        &self,
        who: &Who<'_>,
        spec: &SecretSpec,
        presented: &[u8],
    ) -> Result<(), OAuthError> {
        let reservation = self.limiter.reserve(who).await.map_err(refused)?;
        if self.verifier.run(spec, presented).await == Verdict::Busy {
            self.limiter.release(reservation).await;
            return Err(OAuthError::verification_busy());
        }
        Ok(())
    }

    /// Counts a failure that needs no verification (`Err`: locked out).
    async fn fail_unverified(&self, who: &Who<'_>) -> Result<(), OAuthError> {
        let _failure = self.limiter.reserve(who).await.map_err(refused)?;
        Ok(())
    }
}

/// The answer to a request the limiter lets no verification through for: 429 while locked
/// out, 503 while a shared store cannot answer (`on_store_error = "closed"`).
fn refused(r: Refusal) -> OAuthError {
    match r {
        Refusal::Locked(retry) => OAuthError::locked_out(retry),
        Refusal::Unavailable => OAuthError::verification_busy(),
    }
}

/// The secrets a request presents, each with the reading it belongs to: the standard one, and
/// the raw one where it differs (or only the raw one, when form-decoding failed).
fn readings(x: &Extracted) -> Vec<(&[u8], Reading)> {
    let secret = x.secret().unwrap_or_default();
    if x.raw_only() {
        return vec![(secret, Reading::Raw)];
    }
    let mut out = vec![(secret, Reading::Standard)];
    if let Some(raw) = x.raw_alternative() {
        out.push((raw, Reading::Raw));
    }
    out
}

/// A client_id worth looking up: not empty, at most [`MAX_CLIENT_ID_BYTES`], no control
/// characters.
fn plausible_client_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID_BYTES && !id.iter().any(|b| b.is_ascii_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_client_ids_are_long_empty_or_hold_control_characters() {
        assert!(plausible_client_id(b"web-app"));
        assert!(plausible_client_id(&[b'a'; MAX_CLIENT_ID_BYTES]));
        assert!(plausible_client_id("é".as_bytes()));
        assert!(!plausible_client_id(&[b'a'; MAX_CLIENT_ID_BYTES + 1]));
        assert!(!plausible_client_id(b""));
        assert!(!plausible_client_id(b"a\r\nb"));
        assert!(!plausible_client_id(b"a\x7fb"));
    }
}
