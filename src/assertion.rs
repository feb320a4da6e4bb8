//! Client assertions (RFC 7523 §2.2, §3; OpenID Connect Core §9): how the gateway authenticates a
//! legacy secret client to a server that requires `client_secret_jwt` or `private_key_jwt`.
//!
//! - `client_secret_jwt`: an HS256 JWT keyed with the secret the client presented.
//! - `private_key_jwt`: a JWT signed with one of the gateway's own keys (ES256, RS256 or EdDSA),
//!   whose public half the server knows from the gateway's JWKS ([`SigningKeys::jwks`]).
//!
//! Claims: `iss` = `sub` = the client_id, `aud` the server's (configured per route), `jti` random,
//! `iat` now, `exp` now + the route's lifetime. Every assertion is new: one is made for every
//! attempt to send a request. Signing is `jsonwebtoken`'s (with `ring`); the public keys are read
//! from the key files with `ring`. Threat model: whoever holds a gateway key can authenticate as
//! every client the server lets that key speak for.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::Serialize;

use crate::config::{KeyStatus, SigningKeySettings};

/// Why no assertion could be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the client_id is not text")]
    ClientIdNotText,
    #[error("no signing key is active")]
    NoKey,
    #[error("signing key {0:?} is not one the gateway signs with")]
    UnknownKey(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

/// What to put in an assertion besides who it speaks for.
#[derive(Debug, Clone)]
pub struct Audience {
    pub aud: String,
    pub lifetime: Duration,
}

fn claims<'a>(client_id: &'a [u8], audience: &'a Audience) -> Result<Claims<'a>, SignError> {
    let client_id = std::str::from_utf8(client_id).map_err(|_| SignError::ClientIdNotText)?;
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut jti = [0u8; 16];
    getrandom::getrandom(&mut jti).map_err(|e| SignError::Sign(e.to_string()))?;
    Ok(Claims {
        iss: client_id,
        sub: client_id,
        aud: &audience.aud,
        jti: URL_SAFE_NO_PAD.encode(jti),
        iat,
        exp: iat + audience.lifetime.as_secs().max(1),
    })
}

/// A `client_secret_jwt` assertion: HS256, keyed with the client's secret.
pub fn client_secret_jwt(
    client_id: &[u8],
    secret: &[u8],
    audience: &Audience,
) -> Result<String, SignError> {
    let claims = claims(client_id, audience)?;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| SignError::Sign(e.to_string()))
}

/// One of the gateway's signing keys.
pub struct SigningKey {
    pub kid: String,
    pub status: KeyStatus,
    algorithm: Algorithm,
    encoding: EncodingKey,
    /// The public key as a JWK (RFC 7517), `kid`, `use` and `alg` included.
    jwk: serde_json::Value,
}

/// Never prints key material.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("status", &self.status)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A `private_key_jwt` assertion signed with this key.
    pub fn sign(&self, client_id: &[u8], audience: &Audience) -> Result<String, SignError> {
        let claims = claims(client_id, audience)?;
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| SignError::Sign(e.to_string()))
    }

    /// Reads a PEM private key: ES256 (P-256, PKCS#8), EdDSA (Ed25519, PKCS#8) or RS256 (PKCS#1
    /// or PKCS#8, 2048 bits or more). Errors name the file, never key material; a file readable by
    /// others than its owner is refused.
    fn load(s: &SigningKeySettings) -> Result<SigningKey, String> {
        let path = &s.file;
        let named = |m: &str| format!("signing key {:?} ({}): {m}", s.kid, path.display());
        let meta = std::fs::metadata(path).map_err(|e| named(&format!("cannot read it: {e}")))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(named(
                "readable by others than its owner: make it 0600 (or 0400)",
            ));
        }
        let pem = std::fs::read(path).map_err(|e| named(&format!("cannot read it: {e}")))?;
        let der = match rustls_pemfile::private_key(&mut pem.as_slice()) {
            Ok(Some(der)) => der,
            _ => return Err(named("no PEM private key found")),
        };
        let der_bytes = der.secret_der();
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let (algorithm, encoding, mut jwk) = if let Ok(k) = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der_bytes,
            &SystemRandom::new(),
        ) {
            let point = k.public_key().as_ref();
            let (x, y) = point[1..].split_at(32);
            let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)});
            (Algorithm::ES256, EncodingKey::from_ec_der(der_bytes), jwk)
        } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der_bytes) {
            let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())});
            (Algorithm::EdDSA, EncodingKey::from_ed_der(der_bytes), jwk)
        } else if let Ok(k) =
            RsaKeyPair::from_pkcs8(der_bytes).or_else(|_| RsaKeyPair::from_der(der_bytes))
        {
            let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
            let jwk = serde_json::json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)});
            let encoding = EncodingKey::from_rsa_pem(&pem).map_err(|_| {
                named("an RSA key jsonwebtoken cannot use (write it as PKCS#1 or PKCS#8 PEM)")
            })?;
            (Algorithm::RS256, encoding, jwk)
        } else {
            return Err(named(
                "not an ES256 (P-256), EdDSA (Ed25519) or RS256 (2048+ bit RSA) private key; \
                 EC and Ed25519 keys must be PKCS#8 (`openssl genpkey`)",
            ));
        };
        let alg = match algorithm {
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
            _ => "RS256",
        };
        jwk["kid"] = s.kid.clone().into();
        jwk["use"] = "sig".into();
        jwk["alg"] = alg.into();
        Ok(SigningKey {
            kid: s.kid.clone(),
            status: s.status,
            algorithm,
            encoding,
            jwk,
        })
    }
}

/// The kinds of key [`new_key_pem`] makes (RS256 keys come from `openssl genpkey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKey {
    Es256,
    EdDsa,
}

/// A new private key as a PKCS#8 PEM document, for `tokengate new-signing-key`.
pub fn new_key_pem(kind: NewKey) -> Result<String, String> {
    let rng = SystemRandom::new();
    let doc = match kind {
        NewKey::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
        NewKey::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
    }
    .map_err(|_| "the system's random number generator failed".to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// The gateway's signing keys.
#[derive(Debug, Default)]
pub struct SigningKeys {
    keys: Vec<SigningKey>,
}

impl SigningKeys {
    /// Reads every configured key (blocking).
    pub fn load(settings: &[SigningKeySettings]) -> Result<SigningKeys, String> {
        let keys = settings
            .iter()
            .map(SigningKey::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SigningKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that signs for a client: the one its record names, or the first active one in the
    /// configuration. Keys that are only published (`next`) or no longer sign (`retired`) are
    /// not used.
    pub fn signer(&self, kid: Option<&str>) -> Result<&SigningKey, SignError> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid == kid && k.status == KeyStatus::Active)
                .ok_or_else(|| SignError::UnknownKey(kid.to_string())),
            None => self
                .keys
                .iter()
                .find(|k| k.status == KeyStatus::Active)
                .ok_or(SignError::NoKey),
        }
    }

    /// The public keys as a JWKS (RFC 7517 §5): every key, whatever its status (a `next` key is
    /// published before it signs, a `retired` one stays published after).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<&serde_json::Value> = self.keys.iter().map(|k| &k.jwk).collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::{Path, PathBuf};

    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    use super::*;

    fn audience() -> Audience {
        Audience {
            aud: "https://auth.pingone.com/env-1/as".into(),
            lifetime: Duration::from_secs(60),
        }
    }

    fn validation(alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.set_audience(&["https://auth.pingone.com/env-1/as"]);
        v.set_issuer(&["app:1"]);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        v
    }

    fn claims_of(jwt: &str, key: &DecodingKey, alg: Algorithm) -> serde_json::Value {
        decode::<serde_json::Value>(jwt, key, &validation(alg))
            .unwrap()
            .claims
    }

    #[test]
    fn client_secret_jwt_is_hs256_with_rfc_7523_claims_and_a_new_jti_each_time() {
        let secret = b"s3cr:t+/%&=\xc3\xa9";
        let a = client_secret_jwt(b"app:1", secret, &audience()).unwrap();
        let b = client_secret_jwt(b"app:1", secret, &audience()).unwrap();
        let key = DecodingKey::from_secret(secret);
        let (ca, cb) = (
            claims_of(&a, &key, Algorithm::HS256),
            claims_of(&b, &key, Algorithm::HS256),
        );
        assert_eq!(ca["sub"], "app:1");
        assert_eq!(
            ca["exp"].as_u64().unwrap() - ca["iat"].as_u64().unwrap(),
            60
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(ca["iat"].as_u64().unwrap().abs_diff(now.as_secs()) <= 5);
        assert_ne!(ca["jti"], cb["jti"]);
        assert!(ca["jti"].as_str().unwrap().len() >= 22);
        // Keyed with the secret, and with nothing else.
        assert!(decode::<serde_json::Value>(
            &a,
            &DecodingKey::from_secret(b"other"),
            &validation(Algorithm::HS256)
        )
        .is_err());
        assert!(!a.contains("s3cr"));
    }

    #[test]
    fn a_client_id_that_is_not_text_is_refused() {
        assert!(matches!(
            client_secret_jwt(b"\xff", b"s", &audience()),
            Err(SignError::ClientIdNotText)
        ));
    }

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir()
                .join(format!("tokengate-assertion-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        /// Writes a key file readable by its owner only.
        fn key(&self, name: &str, pem: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, pem).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn settings(kid: &str, file: &Path, status: KeyStatus) -> SigningKeySettings {
        SigningKeySettings {
            kid: kid.into(),
            file: file.to_path_buf(),
            status,
        }
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    /// Every kind of key: it loads, signs, and its JWKS entry verifies what it signed.
    #[test]
    fn es256_eddsa_and_rs256_keys_sign_and_their_jwks_verifies() {
        let dir = Dir::new("kinds");
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cases = [
            ("ec", ec.serialize_pem(), Algorithm::ES256),
            ("ed", ed.serialize_pem(), Algorithm::EdDSA),
            ("rsa8", fixture("rsa-2048-test-key.pem"), Algorithm::RS256),
            (
                "rsa1",
                fixture("rsa-2048-pkcs1-test-key.pem"),
                Algorithm::RS256,
            ),
        ];
        let settings: Vec<_> = cases
            .iter()
            .map(|(kid, pem, _)| settings(kid, &dir.key(kid, pem), KeyStatus::Active))
            .collect();
        let keys = SigningKeys::load(&settings).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(keys.jwks()).unwrap();
        assert_eq!(jwks.keys.len(), 4);
        for (kid, pem, alg) in &cases {
            let jwt = keys
                .signer(Some(kid))
                .unwrap()
                .sign(b"app:1", &audience())
                .unwrap();
            let header = decode_header(&jwt).unwrap();
            assert_eq!((header.alg, header.kid.as_deref()), (*alg, Some(*kid)));
            let jwk = jwks.find(kid).unwrap();
            let claims = claims_of(&jwt, &DecodingKey::from_jwk(jwk).unwrap(), *alg);
            assert_eq!(claims["iss"], "app:1");
            // The JWKS holds public halves only.
            let published = serde_json::to_string(jwk).unwrap();
            for private in ["\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"qi\""] {
                assert!(!published.contains(private), "{kid}: {published}");
            }
            assert!(!format!("{keys:?}").contains(pem.lines().nth(1).unwrap()));
        }
    }

    #[test]
    fn new_keys_load_and_are_new_each_time() {
        let dir = Dir::new("new");
        for (kind, alg) in [(NewKey::Es256, "ES256"), (NewKey::EdDsa, "EdDSA")] {
            let (a, b) = (new_key_pem(kind).unwrap(), new_key_pem(kind).unwrap());
            assert_ne!(a, b);
            let keys =
                SigningKeys::load(&[settings("k", &dir.key("k.pem", &a), KeyStatus::Active)])
                    .unwrap();
            assert_eq!(keys.jwks()["keys"][0]["alg"], alg);
        }
    }

    #[test]
    fn the_default_signer_is_the_first_active_key_and_published_only_keys_never_sign() {
        let dir = Dir::new("status");
        let pem = |_| {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .unwrap()
                .serialize_pem()
        };
        let keys = SigningKeys::load(&[
            settings("old", &dir.key("old", &pem(0)), KeyStatus::Retired),
            settings("new", &dir.key("new", &pem(1)), KeyStatus::Next),
            settings("now", &dir.key("now", &pem(2)), KeyStatus::Active),
            settings("also", &dir.key("also", &pem(3)), KeyStatus::Active),
        ])
        .unwrap();
        assert_eq!(keys.signer(None).unwrap().kid, "now");
        assert_eq!(keys.signer(Some("also")).unwrap().kid, "also");
        for kid in ["old", "new", "nope"] {
            assert!(matches!(keys.signer(Some(kid)), Err(SignError::UnknownKey(k)) if k == kid));
        }
        // Every key is published, whatever its status.
        let kids: Vec<_> = keys.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kids, ["old", "new", "now", "also"]);
        let none = SigningKeys::load(&[settings("n", &dir.key("n", &pem(4)), KeyStatus::Next)]);
        assert!(matches!(none.unwrap().signer(None), Err(SignError::NoKey)));
    }

    #[test]
    fn bad_key_files_are_refused_naming_the_file_never_the_key() {
        let dir = Dir::new("bad");
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let open = dir.key("open.pem", &pem);
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .unwrap()
            .serialize_pem();
        let cases = [
            (open.clone(), "readable by others"),
            (dir.0.join("missing.pem"), "cannot read it"),
            (dir.key("junk.pem", "not a key\n"), "no PEM private key"),
            (dir.key("p384.pem", &p384), "not an ES256"),
            (
                dir.key("cert.pem", &fixture("README.md")),
                "no PEM private key",
            ),
        ];
        for (file, expected) in cases {
            let e = SigningKeys::load(&[settings("k1", &file, KeyStatus::Active)]).unwrap_err();
            assert!(e.contains(expected), "{e}");
            assert!(
                e.contains(&file.display().to_string()) && e.contains("\"k1\""),
                "{e}"
            );
            for line in pem
                .lines()
                .chain(p384.lines())
                .filter(|l| !l.starts_with("-----"))
            {
                assert!(!e.contains(line), "{e}");
            }
        }
    }
}
