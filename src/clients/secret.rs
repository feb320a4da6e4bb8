//! Client secrets: parsing stored secret specs, verifying presented secrets, hashing new ones,
//! and remembering recent successful verifications.
//!
//! Implements:
//! - RFC 6749 §2.3.1 (client password authentication): the authorization server verifies the
//!   `client_secret` a confidential client presents. The secret arrives as raw bytes after
//!   form-decoding, so verification is byte-exact (no trimming, no normalization).
//! - OWASP Password Storage Cheat Sheet: stored secrets are argon2id with m=19456 KiB, t=2, p=1
//!   and a random salt; a salted SHA-256 form exists for speed-sensitive deployments with
//!   high-entropy (machine-generated) secrets; plaintext is opt-in only.
//! - Constant-time comparison of secret material (`subtle::ConstantTimeEq`) so timing does not
//!   reveal how much of a guess matched.
//! - [`VerifiedCache`]: successful verifications are remembered for a while (argon2 runs at most
//!   once per client and secret; a remembered secret passes a lockout); only keyed HMAC digests
//!   are stored, never secrets.
//! - [`Profile::dummy`]: a spec of a given kind and cost that nothing matches, so that an unknown
//!   client's secret costs the same verification as a known client's.
//!
//! Spec strings accepted by [`parse_secret`]:
//! - `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>` (PHC string format; only argon2id, v=19)
//! - `sha256:<salt, base64 std padded>:<digest, base64 std padded>`, digest = SHA-256(salt ‖ secret)
//! - `plain:<value>` (only when plaintext is allowed)
//! - `env:<VAR>` (value read from the environment at load time)

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::protocol::{SecretBytes, SecretString};

/// OWASP Password Storage Cheat Sheet: argon2id memory cost, 19 MiB (in KiB).
const OWASP_M_COST_KIB: u32 = 19_456;
/// OWASP Password Storage Cheat Sheet: argon2id iterations.
const OWASP_T_COST: u32 = 2;
/// OWASP Password Storage Cheat Sheet: argon2id parallelism.
const OWASP_P_COST: u32 = 1;
/// Salt length for newly generated hashes (16 bytes, as recommended for argon2 / RFC 9106 §3.1).
const GENERATED_SALT_LEN: usize = 16;
/// Minimum salt length accepted for `sha256:` specs.
pub const MIN_SHA256_SALT_LEN: usize = 16;
/// Length of a SHA-256 digest.
const SHA256_LEN: usize = 32;

/// Domain-separation tag for [`SecretSpec::fingerprint`].
const FINGERPRINT_TAG: &[u8] = b"tokengate/secret-spec-fingerprint/v1";
/// Domain-separation tag for [`VerifiedCache::key`].
const CACHE_KEY_TAG: &[u8] = b"tokengate/verified-cache-key/v1";

/// Why a secret spec string was refused. Messages never contain the secret itself (nor any part
/// of the spec string that could be a secret pasted in the wrong place).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The spec matches none of the known forms.
    #[error(
        "unrecognized secret format: expected an argon2id PHC string (\"$argon2id$...\"), \
         \"sha256:<salt>:<digest>\", \"plain:<value>\" or \"env:<VAR>\""
    )]
    UnknownFormat,
    /// The spec looks like a PHC string but is not a valid one.
    #[error("malformed argon2id PHC string: {0}")]
    MalformedArgon2(&'static str),
    /// A PHC string for an algorithm other than argon2id (e.g. argon2i, argon2d).
    #[error("unsupported password hash algorithm {algorithm:?}: only argon2id is accepted")]
    UnsupportedAlgorithm {
        /// The PHC algorithm identifier (never secret material).
        algorithm: String,
    },
    /// A `sha256:` spec without the `<salt>:<digest>` pair.
    #[error("malformed sha256 secret: expected \"sha256:<salt base64>:<digest base64>\"")]
    MalformedSha256,
    /// A base64 field failed to decode.
    #[error("invalid base64 in sha256 secret {field} (expected standard, padded base64)")]
    BadBase64 {
        /// Which field: `"salt"` or `"digest"`.
        field: &'static str,
    },
    /// The `sha256:` salt is shorter than [`MIN_SHA256_SALT_LEN`].
    #[error("sha256 secret salt is {len} bytes; at least {min} are required")]
    SaltTooShort {
        /// Decoded salt length.
        len: usize,
        /// Required minimum.
        min: usize,
    },
    /// The `sha256:` digest is not exactly 32 bytes.
    #[error("sha256 secret digest is {len} bytes; exactly 32 are required")]
    DigestLength {
        /// Decoded digest length.
        len: usize,
    },
    /// `plain:` was used while plaintext secrets are not allowed.
    #[error("plaintext client secrets are not allowed (enable allow_plaintext, use env:<VAR>, or store a hash)")]
    PlaintextNotAllowed,
    /// `env:` without a variable name.
    #[error("env: secret names no environment variable")]
    EnvVarNameMissing,
    /// The named environment variable is not set (or is not valid Unicode).
    #[error("environment variable {var} (client secret) is not set")]
    EnvVarUnset {
        /// The variable's name (never its value).
        var: String,
    },
    /// The named environment variable is set but empty.
    #[error("environment variable {var} (client secret) is empty")]
    EnvVarEmpty {
        /// The variable's name (never its value).
        var: String,
    },
}

/// A client secret as stored. `Debug` prints only the kind, never secret material.
#[derive(Clone)]
pub enum SecretSpec {
    /// `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>` (PHC string, validated at parse time).
    Argon2id(String),
    /// `sha256:<salt>:<digest>` where digest = SHA-256(salt ‖ secret); salt ≥ 16 bytes.
    Sha256 {
        /// Random salt prepended to the secret before hashing.
        salt: Vec<u8>,
        /// SHA-256(salt ‖ secret).
        digest: [u8; 32],
    },
    /// Plaintext, from `plain:<value>` (only with allow_plaintext) or `env:<VAR>` (zeroized when
    /// dropped).
    Plain(SecretBytes),
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secret material (not even hashes: they enable offline guessing).
        let name = match self {
            SecretSpec::Argon2id(_) => "SecretSpec::Argon2id",
            SecretSpec::Sha256 { .. } => "SecretSpec::Sha256",
            SecretSpec::Plain(_) => "SecretSpec::Plain",
        };
        f.write_str(name)
    }
}

/// Largest argon2 memory cost accepted, in KiB (256 MiB).
pub const MAX_ARGON2_M_COST: u32 = 262_144;
/// Largest argon2 time cost accepted.
pub const MAX_ARGON2_T_COST: u32 = 16;
/// Largest argon2 parallelism accepted.
pub const MAX_ARGON2_P_COST: u32 = 16;

/// Parses a secret spec string.
///
/// `allow_plaintext` gates `plain:<value>`; `env:<VAR>` is always allowed since the operator
/// keeps the secret out of the file. `env` looks up environment variables (injected so tests
/// need not touch the process environment).
pub fn parse_secret(
    spec: &str,
    allow_plaintext: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretSpec, SecretError> {
    if spec.starts_with('$') {
        return parse_argon2id(spec);
    }
    let Some((scheme, rest)) = spec.split_once(':') else {
        return Err(SecretError::UnknownFormat);
    };
    match scheme {
        "sha256" => parse_sha256(rest),
        "plain" => {
            if allow_plaintext {
                Ok(SecretSpec::Plain(rest.as_bytes().into()))
            } else {
                Err(SecretError::PlaintextNotAllowed)
            }
        }
        "env" => {
            if rest.is_empty() {
                return Err(SecretError::EnvVarNameMissing);
            }
            match env(rest) {
                None => Err(SecretError::EnvVarUnset {
                    var: rest.to_owned(),
                }),
                Some(value) if value.is_empty() => Err(SecretError::EnvVarEmpty {
                    var: rest.to_owned(),
                }),
                Some(value) => Ok(SecretSpec::Plain(
                    SecretString::from(value).as_bytes().into(),
                )),
            }
        }
        _ => Err(SecretError::UnknownFormat),
    }
}

/// Validates a PHC string fully at load time so `verify` cannot hit a format error later.
fn parse_argon2id(spec: &str) -> Result<SecretSpec, SecretError> {
    let hash =
        PasswordHash::new(spec).map_err(|_| SecretError::MalformedArgon2("not a PHC string"))?;
    match Algorithm::try_from(hash.algorithm) {
        Ok(Algorithm::Argon2id) => {}
        // argon2i / argon2d (and anything else) are refused: only argon2id is accepted.
        _ => {
            return Err(SecretError::UnsupportedAlgorithm {
                algorithm: hash.algorithm.as_str().to_owned(),
            })
        }
    }
    // Only version 19 (0x13), the current Argon2 version (RFC 9106).
    if hash.version != Some(u32::from(Version::V0x13)) {
        return Err(SecretError::MalformedArgon2("version must be v=19"));
    }
    if hash.salt.is_none() {
        return Err(SecretError::MalformedArgon2("missing salt"));
    }
    if hash.hash.is_none() {
        return Err(SecretError::MalformedArgon2("missing hash"));
    }
    let params =
        Params::try_from(&hash).map_err(|_| SecretError::MalformedArgon2("invalid parameters"))?;
    // Every verification pays this cost: refuse records that would let one request take a
    // quarter GiB of memory or many seconds of CPU.
    if params.m_cost() > MAX_ARGON2_M_COST
        || params.t_cost() > MAX_ARGON2_T_COST
        || params.p_cost() > MAX_ARGON2_P_COST
    {
        return Err(SecretError::MalformedArgon2(
            "cost parameters too high (at most m=262144, t=16, p=16)",
        ));
    }
    Ok(SecretSpec::Argon2id(spec.to_owned()))
}

fn parse_sha256(rest: &str) -> Result<SecretSpec, SecretError> {
    let (salt_b64, digest_b64) = rest.split_once(':').ok_or(SecretError::MalformedSha256)?;
    let salt = STANDARD
        .decode(salt_b64)
        .map_err(|_| SecretError::BadBase64 { field: "salt" })?;
    let digest = STANDARD
        .decode(digest_b64)
        .map_err(|_| SecretError::BadBase64 { field: "digest" })?;
    if salt.len() < MIN_SHA256_SALT_LEN {
        return Err(SecretError::SaltTooShort {
            len: salt.len(),
            min: MIN_SHA256_SALT_LEN,
        });
    }
    let digest: [u8; SHA256_LEN] = digest
        .as_slice()
        .try_into()
        .map_err(|_| SecretError::DigestLength { len: digest.len() })?;
    Ok(SecretSpec::Sha256 { salt, digest })
}

/// Whether `presented` hashes to the argon2id PHC string `phc` (constant-time compare).
fn argon2id_matches(phc: &str, presented: &[u8], scratch: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&hash), hash.salt, hash.hash)
    else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if scratch.len() < blocks {
        scratch.resize(blocks, Block::default());
    }
    let mut out = SecretBytes::from(vec![0u8; expected.len()]);
    let out_buf: &mut [u8] = out.as_mut_slice();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(presented, salt, out_buf, &mut scratch[..blocks])
        .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()))
}

/// SHA-256(salt ‖ secret), the `sha256:` digest.
fn salted_sha256(salt: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret);
    h.finalize().into()
}

impl SecretSpec {
    /// Verifies a presented secret (raw bytes as the client sent them, after form-decoding).
    ///
    /// Sha256 and Plain compare in constant time (`subtle`); Plain compares SHA-256 digests of
    /// both sides so the stored length does not leak. Argon2id uses argon2's `verify_password`
    /// with the parameters recorded in the PHC string (expensive: see [`Self::is_expensive`]).
    pub fn verify(&self, presented: &[u8]) -> bool {
        self.verify_with(presented, &mut Vec::new())
    }

    /// [`Self::verify`] with argon2id's working memory (m_cost KiB) taken from `scratch`, grown
    /// as needed and kept by the caller: verifications then allocate nothing, and the process
    /// keeps one buffer per concurrent verification instead of whatever the allocator holds on
    /// to after each (glibc keeps freed 19 MiB blocks in its per-thread pools).
    pub fn verify_with(&self, presented: &[u8], scratch: &mut Vec<Block>) -> bool {
        match self {
            // Unreachable failures for specs built by `parse_secret`: fail closed regardless.
            SecretSpec::Argon2id(phc) => argon2id_matches(phc, presented, scratch),
            SecretSpec::Sha256 { salt, digest } => {
                salted_sha256(salt, presented).ct_eq(digest).into()
            }
            SecretSpec::Plain(stored) => {
                let a: [u8; 32] = Sha256::digest(stored).into();
                let b: [u8; 32] = Sha256::digest(presented).into();
                a.ct_eq(&b).into()
            }
        }
    }

    /// True for Argon2id: callers run it on a blocking thread and cache results
    /// ([`VerifiedCache`]).
    pub fn is_expensive(&self) -> bool {
        matches!(self, SecretSpec::Argon2id(_))
    }

    /// A stable fingerprint of the stored spec: SHA-256 over a domain-separated, length-prefixed
    /// canonical encoding. Used to invalidate cached verifications when a record's secret
    /// changes. Plaintext is only ever hashed, never copied, into it.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_TAG);
        h.update(self.kind().as_bytes());
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        match self {
            SecretSpec::Argon2id(phc) => field(phc.as_bytes()),
            SecretSpec::Sha256 { salt, digest } => {
                field(salt);
                field(digest);
            }
            SecretSpec::Plain(secret) => field(secret),
        }
        h.finalize().into()
    }

    /// The kind and cost of verifying against this spec.
    pub fn profile(&self) -> Profile {
        match self {
            SecretSpec::Argon2id(phc) => PasswordHash::new(phc)
                .ok()
                .and_then(|h| Params::try_from(&h).ok())
                .map_or(Profile::OWASP_ARGON2ID, |p| Profile::Argon2id {
                    m_cost: p.m_cost(),
                    t_cost: p.t_cost(),
                    p_cost: p.p_cost(),
                }),
            SecretSpec::Sha256 { .. } => Profile::Sha256,
            SecretSpec::Plain(_) => Profile::Plain,
        }
    }

    /// `"argon2id"`, `"sha256"` or `"plain"`.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSpec::Argon2id(_) => "argon2id",
            SecretSpec::Sha256 { .. } => "sha256",
            SecretSpec::Plain(_) => "plain",
        }
    }
}

/// The kind and cost of a secret verification: what a dummy verification must match so that an
/// unknown client costs the same as a known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    Argon2id {
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
    },
    Sha256,
    Plain,
}

impl Profile {
    /// What `hash-secret` produces by default (OWASP's parameters).
    pub const OWASP_ARGON2ID: Profile = Profile::Argon2id {
        m_cost: OWASP_M_COST_KIB,
        t_cost: OWASP_T_COST,
        p_cost: OWASP_P_COST,
    };

    /// `"argon2id"`, `"sha256"` or `"plain"`.
    pub fn kind(self) -> &'static str {
        match self {
            Profile::Argon2id { .. } => "argon2id",
            Profile::Sha256 => "sha256",
            Profile::Plain => "plain",
        }
    }

    /// Whether verifying costs tens of milliseconds (argon2id): run on a blocking thread.
    pub fn is_expensive(self) -> bool {
        matches!(self, Profile::Argon2id { .. })
    }

    /// A spec of this kind and cost for a random secret nobody knows: verifying anything against
    /// it fails, at the cost of a real verification. Blocking for argon2id (one hash).
    pub fn dummy(self) -> SecretSpec {
        self.spec_for(&random_bytes::<32>())
    }

    /// A spec of this kind and cost holding `secret` (random salt). Blocking for argon2id.
    pub fn spec_for(self, secret: &[u8]) -> SecretSpec {
        match self {
            Profile::Argon2id {
                m_cost,
                t_cost,
                p_cost,
            } => {
                let params = Params::new(m_cost, t_cost, p_cost, None)
                    .or_else(|_| owasp_params())
                    .ok();
                match params.map(|p| try_hash_argon2id(secret, p)) {
                    Some(Ok(phc)) => SecretSpec::Argon2id(phc),
                    // Unreachable with parameters read from a valid spec; still a real hash.
                    _ => SecretSpec::Argon2id(hash_argon2id(secret)),
                }
            }
            Profile::Sha256 => {
                let salt = random_bytes::<GENERATED_SALT_LEN>();
                SecretSpec::Sha256 {
                    digest: salted_sha256(&salt, secret),
                    salt: salt.to_vec(),
                }
            }
            Profile::Plain => SecretSpec::Plain(secret.into()),
        }
    }
}

/// Fills `N` bytes from the OS CSPRNG.
///
/// # Panics
/// If the operating system's random source fails: there is no safe fallback for salts or keys.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    #[allow(clippy::expect_used)] // not input-derived: OS RNG failure is unrecoverable
    getrandom::getrandom(&mut buf).expect("OS random number generator failed");
    buf
}

/// Hashes `secret` as an argon2id PHC string with the given cost parameters and a random
/// 16-byte salt. Fails only for secrets argon2 cannot take (longer than 2^32-1 bytes).
fn try_hash_argon2id(
    secret: &[u8],
    params: Params,
) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&random_bytes::<GENERATED_SALT_LEN>())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    Ok(argon2.hash_password(secret, &salt)?.to_string())
}

/// OWASP Password Storage Cheat Sheet: argon2id m=19456 KiB, t=2, p=1.
fn owasp_params() -> Result<Params, argon2::Error> {
    Params::new(OWASP_M_COST_KIB, OWASP_T_COST, OWASP_P_COST, None)
}

/// Hashes a secret as an argon2id PHC string with OWASP's recommended parameters
/// (OWASP Password Storage Cheat Sheet: m=19456 KiB, t=2, p=1) and a random 16-byte salt.
///
/// # Panics
/// If the OS random source fails, or the secret exceeds argon2's 2^32-1 byte input limit.
pub fn hash_argon2id(secret: &[u8]) -> String {
    #[allow(clippy::expect_used)] // constants, valid by construction
    let params = owasp_params().expect("OWASP argon2id parameters are valid");
    match try_hash_argon2id(secret, params) {
        Ok(phc) => phc,
        Err(e) => panic!("argon2id hashing failed: {e}"),
    }
}

/// Hashes a secret as `sha256:<salt>:<digest>` (digest = SHA-256(salt ‖ secret)) with a random
/// 16-byte salt. Only for high-entropy secrets in speed-sensitive deployments: unlike argon2id it
/// offers no resistance to offline guessing of weak secrets.
///
/// # Panics
/// If the OS random source fails.
pub fn hash_sha256(secret: &[u8]) -> String {
    let salt = random_bytes::<GENERATED_SALT_LEN>();
    let digest = salted_sha256(&salt, secret);
    format!(
        "sha256:{}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(digest)
    )
}

/// Remembers successful verifications, so that argon2 runs at most once per (client, secret)
/// within `ttl`, and so that a client's known-good secret still passes while its client_id is
/// locked out by someone else's guesses. Every hit starts the `ttl` afresh.
///
/// Keys are HMAC-SHA256 under a process-random 32-byte key of the length-prefixed env_id,
/// client_id, spec fingerprint and presented secret: only these digests and insertion times are
/// stored, never secrets, and a changed stored secret (new fingerprint) misses. Capacity is a
/// hard bound: when full, expired entries are dropped first, then arbitrary ones.
pub struct VerifiedCache {
    mac: Hmac<Sha256>,
    entries: DashMap<[u8; 32], Instant>,
    ttl: Duration,
    capacity: usize,
    /// Serializes admission so concurrent inserts cannot overshoot `capacity`; lookups never
    /// take it.
    admit: Mutex<()>,
}

impl fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The HMAC key stays out of Debug output.
        f.debug_struct("VerifiedCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl VerifiedCache {
    /// A cache remembering verifications for `ttl`, holding at most `capacity` entries
    /// (`capacity == 0` disables caching). The HMAC key is drawn from the OS CSPRNG.
    ///
    /// # Panics
    /// If the OS random source fails.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let key = random_bytes::<32>();
        #[allow(clippy::expect_used)] // HMAC accepts keys of any length
        let mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length");
        VerifiedCache {
            mac,
            entries: DashMap::new(),
            ttl,
            capacity,
            admit: Mutex::new(()),
        }
    }

    /// The cache key for a presented secret: HMAC-SHA256 over the length-prefixed env_id,
    /// client_id, spec fingerprint and presented secret.
    pub fn key(
        &self,
        env_id: &str,
        client_id: &[u8],
        spec: &SecretSpec,
        presented: &[u8],
    ) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(CACHE_KEY_TAG);
        for field in [
            env_id.as_bytes(),
            client_id,
            &spec.fingerprint()[..],
            presented,
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `key` was verified within `ttl`; a hit starts its `ttl` afresh (a client that keeps
    /// using its secret stays remembered). An expired entry is removed.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        // Update under the shard guard, then drop it before removing (DashMap deadlocks otherwise).
        let fresh = match self.entries.get_mut(key) {
            Some(mut at) if at.elapsed() < self.ttl => {
                *at = Instant::now();
                true
            }
            Some(_) => false,
            None => return false,
        };
        if !fresh {
            self.entries
                .remove_if(key, |_, at| at.elapsed() >= self.ttl);
        }
        fresh
    }

    /// Records a successful verification for `key` (refreshing its time if present).
    pub fn insert(&self, key: [u8; 32]) {
        if self.capacity == 0 {
            return;
        }
        let _admit = self.admit.lock().unwrap_or_else(PoisonError::into_inner);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.make_room();
        }
        self.entries.insert(key, Instant::now());
    }

    /// Frees at least one slot: drops expired entries, then arbitrary ones. Evicts a small batch
    /// (1/16 of capacity) when forced, so the O(n) sweep is amortized over many inserts.
    fn make_room(&self) {
        let ttl = self.ttl;
        self.entries.retain(|_, at| at.elapsed() < ttl);
        let len = self.entries.len();
        if len < self.capacity {
            return;
        }
        let target = self.capacity - 1 - (self.capacity - 1) / 16;
        let excess = len - target;
        // Collect first, remove after: removing while iterating would deadlock on shard locks.
        let victims: Vec<[u8; 32]> = self.entries.iter().take(excess).map(|e| *e.key()).collect();
        for k in victims {
            self.entries.remove(&k);
        }
    }

    /// Number of entries held (expired ones not yet swept included); never exceeds capacity.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// Low-cost argon2id hash for fast verification tests (production uses OWASP params).
    fn cheap_argon2id(secret: &[u8]) -> String {
        let params = Params::new(64, 1, 1, None).unwrap();
        try_hash_argon2id(secret, params).unwrap()
    }

    fn cheap_phc(algorithm: Algorithm, secret: &[u8]) -> String {
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let params = Params::new(64, 1, 1, None).unwrap();
        Argon2::new(algorithm, Version::V0x13, params)
            .hash_password(secret, &salt)
            .unwrap()
            .to_string()
    }

    const SPECIAL_SECRETS: &[&str] = &[
        ":",
        "+",
        "%",
        "&",
        "=",
        "/",
        " ",
        "é",
        "%41",
        "",
        "a:b+c%d&e=f/g h é %41",
    ];

    #[test]
    fn argon2id_hash_uses_owasp_params_random_salt_and_round_trips() {
        let a = hash_argon2id(b"s3cret");
        let b = hash_argon2id(b"s3cret");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "random salt must make hashes differ");
        let spec = parse_secret(&a, false, &no_env).unwrap();
        assert_eq!(spec.kind(), "argon2id");
        assert!(spec.is_expensive());
        assert!(spec.verify(b"s3cret"));
        assert!(!spec.verify(b"s3cres"));
    }

    #[test]
    fn argon2id_parsed_phc_verifies_only_the_right_secret() {
        let phc = cheap_argon2id(b"correct horse");
        let spec = parse_secret(&phc, false, &no_env).unwrap();
        assert!(spec.verify(b"correct horse"));
        assert!(!spec.verify(b"correct horsf"));
        assert!(!spec.verify(b""));
        assert_ne!(cheap_argon2id(b"x"), cheap_argon2id(b"x"));
    }

    #[test]
    fn argon2id_malformed_phc_is_refused() {
        for bad in [
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0",
            "$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$q=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(
                matches!(
                    parse_secret(bad, true, &no_env),
                    Err(SecretError::MalformedArgon2(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn argon2id_with_excessive_cost_is_refused() {
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            parse_secret(huge, false, &|_| None).unwrap_err(),
            SecretError::MalformedArgon2("cost parameters too high (at most m=262144, t=16, p=16)")
        );
    }

    #[test]
    fn argon2i_and_argon2d_are_refused() {
        for (alg, name) in [
            (Algorithm::Argon2i, "argon2i"),
            (Algorithm::Argon2d, "argon2d"),
        ] {
            let phc = cheap_phc(alg, b"pw");
            assert_eq!(
                parse_secret(&phc, true, &no_env).unwrap_err(),
                SecretError::UnsupportedAlgorithm {
                    algorithm: name.to_owned()
                }
            );
        }
        assert!(parse_secret(&cheap_phc(Algorithm::Argon2id, b"pw"), false, &no_env).is_ok());
    }

    #[test]
    fn sha256_round_trips() {
        let spec_str = hash_sha256(b"machine-secret");
        assert!(spec_str.starts_with("sha256:"));
        let spec = parse_secret(&spec_str, false, &no_env).unwrap();
        assert_eq!(spec.kind(), "sha256");
        assert!(!spec.is_expensive());
        assert!(spec.verify(b"machine-secret"));
        assert!(!spec.verify(b"machine-secreT"));
        assert_ne!(hash_sha256(b"x"), hash_sha256(b"x"));
    }

    #[test]
    fn sha256_tampered_digest_fails() {
        let spec_str = hash_sha256(b"machine-secret");
        let (prefix, digest_b64) = spec_str.rsplit_once(':').unwrap();
        let mut digest = STANDARD.decode(digest_b64).unwrap();
        digest[0] ^= 1;
        let tampered = format!("{prefix}:{}", STANDARD.encode(digest));
        let spec = parse_secret(&tampered, false, &no_env).unwrap();
        assert!(!spec.verify(b"machine-secret"));
    }

    #[test]
    fn sha256_bad_salt_digest_or_base64_are_errors() {
        let salt16 = STANDARD.encode([1u8; 16]);
        let salt15 = STANDARD.encode([1u8; 15]);
        let d32 = STANDARD.encode([2u8; 32]);
        let d31 = STANDARD.encode([2u8; 31]);
        let d33 = STANDARD.encode([2u8; 33]);
        let parse = |s: String| parse_secret(&s, false, &no_env).map(|_| ());
        assert_eq!(
            parse(format!("sha256:{salt15}:{d32}")),
            Err(SecretError::SaltTooShort { len: 15, min: 16 })
        );
        assert_eq!(
            parse(format!("sha256:{salt16}:{d31}")),
            Err(SecretError::DigestLength { len: 31 })
        );
        assert_eq!(
            parse(format!("sha256:{salt16}:{d33}")),
            Err(SecretError::DigestLength { len: 33 })
        );
        assert_eq!(
            parse(format!("sha256:not*base64:{d32}")),
            Err(SecretError::BadBase64 { field: "salt" })
        );
        assert_eq!(
            parse(format!("sha256:{salt16}:{}", d32.trim_end_matches('='))),
            Err(SecretError::BadBase64 { field: "digest" })
        );
        assert_eq!(
            parse(format!("sha256:{salt16}")),
            Err(SecretError::MalformedSha256)
        );
        assert!(parse(format!("sha256:{salt16}:{d32}")).is_ok());
    }

    #[test]
    fn unknown_formats_are_refused() {
        for bad in ["", "hunter2", "bcrypt:x", "SHA256:a:b", "Plain:x"] {
            assert_eq!(
                parse_secret(bad, true, &no_env).unwrap_err(),
                SecretError::UnknownFormat,
                "{bad}"
            );
        }
    }

    #[test]
    fn plain_refused_unless_allow_plaintext() {
        assert_eq!(
            parse_secret("plain:hunter2", false, &no_env).unwrap_err(),
            SecretError::PlaintextNotAllowed
        );
        let spec = parse_secret("plain:hunter2", true, &no_env).unwrap();
        assert_eq!(spec.kind(), "plain");
        assert!(!spec.is_expensive());
        assert!(spec.verify(b"hunter2"));
        assert!(!spec.verify(b"hunter"));
        assert!(!spec.verify(b"hunter22"));
    }

    #[test]
    fn env_reads_through_injected_lookup_even_without_allow_plaintext() {
        let env = |name: &str| (name == "CLIENT_SECRET").then(|| "from-env".to_owned());
        let spec = parse_secret("env:CLIENT_SECRET", false, &env).unwrap();
        assert_eq!(spec.kind(), "plain");
        assert!(spec.verify(b"from-env"));
        assert!(!spec.verify(b"CLIENT_SECRET"));
    }

    #[test]
    fn env_unset_or_empty_is_an_error_naming_the_variable() {
        let env = |name: &str| match name {
            "EMPTY" => Some(String::new()),
            "SET" => Some("value-xyzzy".to_owned()),
            _ => None,
        };
        let unset = parse_secret("env:MISSING", false, &env).unwrap_err();
        assert_eq!(
            unset,
            SecretError::EnvVarUnset {
                var: "MISSING".to_owned()
            }
        );
        assert!(unset.to_string().contains("MISSING"));
        let empty = parse_secret("env:EMPTY", false, &env).unwrap_err();
        assert_eq!(
            empty,
            SecretError::EnvVarEmpty {
                var: "EMPTY".to_owned()
            }
        );
        assert!(empty.to_string().contains("EMPTY"));
        assert_eq!(
            parse_secret("env:", false, &env).unwrap_err(),
            SecretError::EnvVarNameMissing
        );
        let set = parse_secret("env:SET", false, &env).unwrap();
        assert!(!format!("{set:?}").contains("xyzzy"));
    }

    #[test]
    fn special_characters_and_empty_secrets_work_for_every_kind() {
        for secret in SPECIAL_SECRETS {
            let bytes = secret.as_bytes();
            let other = format!("{secret}x");
            let mut specs = vec![
                parse_secret(&cheap_argon2id(bytes), false, &no_env).unwrap(),
                parse_secret(&hash_sha256(bytes), false, &no_env).unwrap(),
                parse_secret(&format!("plain:{secret}"), true, &no_env).unwrap(),
            ];
            if !secret.is_empty() {
                let env = |_: &str| Some((*secret).to_owned());
                specs.push(parse_secret("env:V", false, &env).unwrap());
            }
            for spec in &specs {
                assert!(spec.verify(bytes), "{} {secret:?}", spec.kind());
                assert!(!spec.verify(other.as_bytes()), "{} {secret:?}", spec.kind());
            }
        }
        // No decoding happens here: "%41" is not "A".
        let spec = parse_secret("plain:%41", true, &no_env).unwrap();
        assert!(!spec.verify(b"A"));
    }

    #[test]
    fn debug_of_spec_and_error_never_contains_the_secret() {
        const SECRET: &str = "ZZ-RECOGNIZABLE-SECRET-42";
        let env = |_: &str| Some(SECRET.to_owned());
        let specs = [
            parse_secret(&cheap_argon2id(SECRET.as_bytes()), false, &no_env).unwrap(),
            parse_secret(&hash_sha256(SECRET.as_bytes()), false, &no_env).unwrap(),
            parse_secret(&format!("plain:{SECRET}"), true, &no_env).unwrap(),
            parse_secret("env:V", false, &env).unwrap(),
        ];
        for spec in &specs {
            let dbg = format!("{spec:?}");
            assert!(!dbg.contains(SECRET), "{dbg}");
            assert!(dbg.starts_with("SecretSpec::"), "{dbg}");
        }
        // Salt/digest must not appear either.
        let sha = hash_sha256(SECRET.as_bytes());
        let dbg = format!("{:?}", parse_secret(&sha, false, &no_env).unwrap());
        assert_eq!(dbg, "SecretSpec::Sha256");

        let errors = [
            parse_secret(SECRET, true, &no_env).unwrap_err(),
            parse_secret(&format!("plain:{SECRET}"), false, &no_env).unwrap_err(),
            parse_secret(&format!("sha256:{SECRET}"), false, &no_env).unwrap_err(),
            parse_secret(&format!("sha256:{SECRET}:{SECRET}"), false, &no_env).unwrap_err(),
            parse_secret(&format!("${SECRET}"), false, &no_env).unwrap_err(),
            parse_secret(&format!("$argon2id$v=19${SECRET}"), false, &no_env).unwrap_err(),
            parse_secret(&format!("{SECRET}:{SECRET}"), false, &no_env).unwrap_err(),
        ];
        for err in &errors {
            let dbg = format!("{err:?}");
            let msg = err.to_string();
            assert!(!dbg.contains(SECRET), "{dbg}");
            assert!(!msg.contains(SECRET), "{msg}");
        }
    }

    #[test]
    fn fingerprint_is_stable_and_tracks_the_stored_secret() {
        let a = parse_secret("plain:one", true, &no_env).unwrap();
        let a2 = parse_secret("plain:one", true, &no_env).unwrap();
        let b = parse_secret("plain:two", true, &no_env).unwrap();
        assert_eq!(a.fingerprint(), a2.fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        // Plain fingerprint is a hash, not the secret.
        assert_ne!(&a.fingerprint()[..3], b"one");
        let s = hash_sha256(b"one");
        assert_eq!(
            parse_secret(&s, false, &no_env).unwrap().fingerprint(),
            parse_secret(&s, false, &no_env).unwrap().fingerprint()
        );
        assert_ne!(
            parse_secret(&s, false, &no_env).unwrap().fingerprint(),
            a.fingerprint()
        );
    }

    #[test]
    fn verified_cache_insert_then_contains() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 16);
        let spec = parse_secret("plain:pw", true, &no_env).unwrap();
        let key = cache.key("env-1", b"client", &spec, b"pw");
        assert!(cache.is_empty());
        assert!(!cache.contains(&key));
        cache.insert(key);
        assert!(cache.contains(&key));
        assert_eq!(cache.len(), 1);
        assert_eq!(key, cache.key("env-1", b"client", &spec, b"pw"));
    }

    #[test]
    fn verified_cache_entries_expire_after_ttl() {
        let cache = VerifiedCache::new(Duration::from_millis(50), 16);
        let spec = parse_secret("plain:pw", true, &no_env).unwrap();
        let key = cache.key("env-1", b"client", &spec, b"pw");
        cache.insert(key);
        assert!(cache.contains(&key));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!cache.contains(&key));
        assert!(cache.is_empty(), "expired entry is swept on lookup");
    }

    #[test]
    fn verified_cache_key_differs_by_secret_spec_client_and_env() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 16);
        let spec = parse_secret("plain:pw", true, &no_env).unwrap();
        let rotated = parse_secret("plain:pw2", true, &no_env).unwrap();
        let base = cache.key("env", b"client", &spec, b"pw");
        assert_ne!(base, cache.key("env", b"client", &spec, b"pw2"));
        assert_ne!(base, cache.key("env", b"client", &rotated, b"pw"));
        assert_ne!(base, cache.key("env", b"client2", &spec, b"pw"));
        assert_ne!(base, cache.key("env2", b"client", &spec, b"pw"));
        // Length prefixes: moving a byte across a field boundary changes the key.
        assert_ne!(
            cache.key("ab", b"c", &spec, b"pw"),
            cache.key("a", b"bc", &spec, b"pw")
        );
        // Keys are per-process-random: another cache disagrees.
        let other = VerifiedCache::new(Duration::from_secs(60), 16);
        assert_ne!(base, other.key("env", b"client", &spec, b"pw"));
        cache.insert(base);
        assert!(!cache.contains(&cache.key("env", b"client", &rotated, b"pw")));
    }

    #[test]
    fn verified_cache_never_exceeds_capacity() {
        let spec = parse_secret("plain:pw", true, &no_env).unwrap();
        for capacity in [1usize, 2, 17, 100] {
            let cache = VerifiedCache::new(Duration::from_secs(60), capacity);
            for i in 0..(capacity * 10 + 5) {
                let key = cache.key("env", &i.to_be_bytes(), &spec, b"pw");
                cache.insert(key);
                assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
                assert!(cache.contains(&key), "latest insert is kept");
            }
        }
        let disabled = VerifiedCache::new(Duration::from_secs(60), 0);
        disabled.insert([0u8; 32]);
        assert!(disabled.is_empty());
    }

    #[test]
    fn verified_cache_capacity_holds_under_concurrent_inserts() {
        let cache = std::sync::Arc::new(VerifiedCache::new(Duration::from_secs(60), 32));
        let handles: Vec<_> = (0..8u8)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..500u16 {
                        let mut key = [t; 32];
                        key[..2].copy_from_slice(&i.to_be_bytes());
                        cache.insert(key);
                        // No len() check here: DashMap::len sums shards one by one, so a
                        // reader racing an evict-then-insert can over-count transiently.
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(cache.len() <= 32);
    }

    proptest! {
        #[test]
        fn proptest_sha256_round_trip_accepts_secret_rejects_others(
            secret in proptest::collection::vec(any::<u8>(), 0..64),
            other in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assume!(secret != other);
            let spec = parse_secret(&hash_sha256(&secret), false, &no_env).unwrap();
            prop_assert!(spec.verify(&secret));
            prop_assert!(!spec.verify(&other));
        }
    }
}
