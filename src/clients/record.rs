//! Client records: what tokengate knows about a client, and the file and registry formats they
//! are read from.
//!
//! Method names are RFC 7591 §2's (`client_secret_basic`, `client_secret_post`, `none`); PingOne
//! writes them in capitals (`CLIENT_SECRET_BASIC`): both are accepted.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::secret::{parse_secret, SecretSpec};
use crate::protocol::{AuthMethod, MethodSet};

/// A method a client record may name: one the gateway can check ([`AuthMethod::CHECKED`]), in
/// RFC 7591's spelling or PingOne's capitals.
pub fn record_method(name: &str) -> Option<AuthMethod> {
    AuthMethod::parse(name).filter(|m| AuthMethod::CHECKED.contains(m))
}

/// What tokengate knows about one client. `Debug` shows no secret material. Compact: a client
/// file may hold millions (strings shared between records — environment IDs, grant-type lists —
/// are held once).
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub env_id: Arc<str>,
    pub client_id: Box<str>,
    /// `None` for public clients (only `none` allowed).
    pub secret: Option<SecretSpec>,
    pub auth_methods: MethodSet,
    /// The method the upstream demands for this client: requests are converted to it.
    pub upstream_method: Option<AuthMethod>,
    /// Allowed grant types; `None` allows any.
    pub grant_types: Option<Arc<[Box<str>]>>,
    pub enabled: bool,
    /// For `upstream_method = "private_key_jwt"`: the gateway key that signs (`None`: the active
    /// one).
    pub signing_key: Option<Box<str>>,
}

/// Strings that many records share (environment IDs, grant-type lists), held once.
#[derive(Default)]
pub struct Interner {
    envs: HashMap<Box<str>, Arc<str>>,
    grants: HashMap<Vec<String>, Arc<[Box<str>]>>,
}

impl Interner {
    fn env(&mut self, env_id: &str) -> Arc<str> {
        if let Some(e) = self.envs.get(env_id) {
            return e.clone();
        }
        let e: Arc<str> = Arc::from(env_id);
        self.envs.insert(env_id.into(), e.clone());
        e
    }

    fn grants(&mut self, list: Vec<String>) -> Arc<[Box<str>]> {
        if let Some(g) = self.grants.get(&list) {
            return g.clone();
        }
        let g: Arc<[Box<str>]> = list.iter().map(|t| Box::from(t.as_str())).collect();
        self.grants.insert(list, g.clone());
        g
    }
}

/// The key of a record: environment ID and client_id (as bytes: ids need not be UTF-8 on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    env_id: String,
    client_id: Vec<u8>,
}

impl ClientKey {
    pub fn new(env_id: &str, client_id: &[u8]) -> ClientKey {
        ClientKey {
            env_id: env_id.to_string(),
            client_id: client_id.to_vec(),
        }
    }

    pub fn env_id(&self) -> &str {
        &self.env_id
    }

    pub fn client_id(&self) -> &[u8] {
        &self.client_id
    }
}

impl ClientRecord {
    /// The key the record is found by.
    pub fn key(&self) -> ClientKey {
        ClientKey::new(&self.env_id, self.client_id.as_bytes())
    }
}

/// A record as written in a client file or returned by a registry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    #[serde(default)]
    pub env_id: Option<String>,
    pub client_id: String,
    #[serde(default)]
    pub secret: Option<String>,
    pub auth_methods: Vec<String>,
    #[serde(default)]
    pub upstream_method: Option<String>,
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub signing_key: Option<String>,
}

fn yes() -> bool {
    true
}

/// Looks up an environment variable (injected so that tests need not touch the environment).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl RawRecord {
    /// Validates a raw record. `env_id` comes from the file entry or, for a registry, the URL.
    pub fn lower(
        self,
        env_id: Option<&str>,
        allow_plaintext: bool,
        env: EnvLookup<'_>,
        interner: &mut Interner,
    ) -> Result<ClientRecord, String> {
        let env_id = match self.env_id.as_deref().or(env_id) {
            Some(e) if !e.is_empty() => interner.env(e),
            Some(_) => return Err("env_id: must not be empty".into()),
            None => return Err("env_id: missing".into()),
        };
        if self.client_id.is_empty() {
            return Err("client_id: must not be empty".into());
        }
        let mut auth_methods = MethodSet::default();
        for m in &self.auth_methods {
            let method = record_method(m).ok_or_else(|| {
                format!(
                    "auth_methods: unknown method {m:?} (use {})",
                    AuthMethod::names(&AuthMethod::CHECKED)
                )
            })?;
            auth_methods.insert(method);
        }
        if auth_methods.is_empty() {
            return Err("auth_methods: at least one method is required".into());
        }
        let upstream_method = match &self.upstream_method {
            None => None,
            Some(m) => Some(
                AuthMethod::parse(m)
                    .filter(|m| AuthMethod::UPSTREAM.contains(m))
                    .ok_or_else(|| {
                        format!(
                            "upstream_method: unknown method {m:?} (use {})",
                            AuthMethod::names(&AuthMethod::UPSTREAM)
                        )
                    })?,
            ),
        };
        let needs_secret = auth_methods.iter().any(|m| m != AuthMethod::None);
        // A record without a secret serves routes that only read records (`per_client`); a
        // validating route fails such a client closed.
        let secret = match (&self.secret, needs_secret) {
            (Some(spec), true) => {
                Some(parse_secret(spec, allow_plaintext, env).map_err(|e| format!("secret: {e}"))?)
            }
            (None, true) => None,
            (Some(_), false) => {
                return Err(
                    "secret: a public client (auth_methods = [\"none\"]) has no secret".into(),
                )
            }
            (None, false) => None,
        };
        if upstream_method == Some(AuthMethod::PrivateKeyJwt) && secret.is_none() {
            return Err(
                "upstream_method: private_key_jwt needs the client's secret: the gateway \
                        signs for a client only once it verified it"
                    .into(),
            );
        }
        let signing_key = match self.signing_key {
            Some(_) if upstream_method != Some(AuthMethod::PrivateKeyJwt) => {
                return Err(
                    "signing_key: only applies with upstream_method = \"private_key_jwt\"".into(),
                )
            }
            Some(k) if k.is_empty() => return Err("signing_key: must not be empty".into()),
            k => k.map(String::into_boxed_str),
        };
        if let Some(g) = &self.grant_types {
            if g.is_empty() || g.iter().any(|t| t.is_empty()) {
                return Err(
                    "grant_types: list grant types, or leave the key out to allow any".into(),
                );
            }
        }
        Ok(ClientRecord {
            env_id,
            client_id: self.client_id.into_boxed_str(),
            secret,
            auth_methods,
            upstream_method,
            grant_types: self.grant_types.map(|g| interner.grants(g)),
            enabled: self.enabled,
            signing_key,
        })
    }
}

/// Parses one record returned by an HTTP registry for `env_id`. A registry record holds a hashed
/// secret (argon2id or sha256): `env:` would hand the gateway's own environment to whoever writes
/// records, and `plain:` has no place on the wire.
pub fn parse_registry_record(
    body: &[u8],
    env_id: &str,
    client_id: &[u8],
) -> Result<ClientRecord, String> {
    let raw: RawRecord = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if raw
        .secret
        .as_deref()
        .is_some_and(|s| s.starts_with("env:") || s.starts_with("plain:"))
    {
        return Err(
            "secret: a registry record holds a hashed secret (argon2id or sha256), not env: or plain:"
                .into(),
        );
    }
    let no_env = |_: &str| None;
    let record = raw.lower(Some(env_id), false, &no_env, &mut Interner::default())?;
    if &*record.env_id != env_id || record.client_id.as_bytes() != client_id {
        return Err("the registry answered with another client".into());
    }
    Ok(record)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SHA: &str =
        "sha256:AAAAAAAAAAAAAAAAAAAAAA==:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn method_names_accept_rfc7591_and_pingone_capitals() {
        assert_eq!(
            record_method("client_secret_basic"),
            Some(AuthMethod::ClientSecretBasic)
        );
        assert_eq!(
            record_method("CLIENT_SECRET_POST"),
            Some(AuthMethod::ClientSecretPost)
        );
        assert_eq!(record_method("NONE"), Some(AuthMethod::None));
        assert_eq!(record_method("Client_Secret_Basic"), None);
        assert_eq!(record_method("private_key_jwt"), None);
    }

    #[test]
    fn registry_record_takes_env_from_the_url_and_must_match() {
        let body = format!(
            r#"{{"client_id":"app","secret":"{SHA}","auth_methods":["client_secret_basic"]}}"#
        );
        let r = parse_registry_record(body.as_bytes(), "e", b"app").unwrap();
        assert_eq!(&*r.env_id, "e");
        let e = parse_registry_record(body.as_bytes(), "e", b"other").unwrap_err();
        assert!(e.contains("another client"));
    }

    #[test]
    fn a_registry_record_may_not_read_the_environment_or_carry_a_plain_secret() {
        std::env::set_var("TOKENGATE_TEST_REGISTRY_SECRET", "from-the-gateway-env");
        for secret in ["env:TOKENGATE_TEST_REGISTRY_SECRET", "env:HOME", "plain:x"] {
            let body = format!(
                r#"{{"client_id":"app","secret":"{secret}","auth_methods":["client_secret_post"]}}"#
            );
            let e = parse_registry_record(body.as_bytes(), "e", b"app").unwrap_err();
            assert!(e.starts_with("secret:") && !e.contains("from-the"), "{e}");
        }
    }
}
