//! Client records: what tokengate knows about a client, and the file and registry formats they
//! are read from.
//!
//! Method names are RFC 7591 §2's (`client_secret_basic`, `client_secret_post`, `none`); PingOne
//! writes them in capitals (`CLIENT_SECRET_BASIC`): both are accepted.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::secret::{parse_secret, Profile, SecretSpec};
use crate::protocol::AuthMethod;

/// A method a client record may name: one the gateway can check ([`AuthMethod::CHECKED`]), in
/// RFC 7591's spelling or PingOne's capitals.
pub fn record_method(name: &str) -> Option<AuthMethod> {
    AuthMethod::parse(name).filter(|m| AuthMethod::CHECKED.contains(m))
}

/// What tokengate knows about one client. `Debug` shows no secret material.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub env_id: String,
    pub client_id: String,
    /// `None` for public clients (only `none` allowed).
    pub secret: Option<SecretSpec>,
    pub auth_methods: Vec<AuthMethod>,
    /// The method the upstream demands for this client: requests are converted to it.
    pub upstream_method: Option<AuthMethod>,
    /// Allowed grant types; `None` allows any.
    pub grant_types: Option<Vec<String>>,
    pub enabled: bool,
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
}

fn yes() -> bool {
    true
}

/// A client file: TOML or JSON, `{ allow_plaintext, clients: [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    allow_plaintext: bool,
    #[serde(default)]
    clients: Vec<RawRecord>,
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
    ) -> Result<ClientRecord, String> {
        let env_id = match self.env_id.as_deref().or(env_id) {
            Some(e) if !e.is_empty() => e.to_string(),
            Some(_) => return Err("env_id: must not be empty".into()),
            None => return Err("env_id: missing".into()),
        };
        if self.client_id.is_empty() {
            return Err("client_id: must not be empty".into());
        }
        let mut auth_methods = Vec::with_capacity(self.auth_methods.len());
        for m in &self.auth_methods {
            let method = record_method(m).ok_or_else(|| {
                format!(
                    "auth_methods: unknown method {m:?} (use {})",
                    AuthMethod::names(&AuthMethod::CHECKED)
                )
            })?;
            if !auth_methods.contains(&method) {
                auth_methods.push(method);
            }
        }
        if auth_methods.is_empty() {
            return Err("auth_methods: at least one method is required".into());
        }
        let upstream_method = match &self.upstream_method {
            None => None,
            Some(m) => Some(record_method(m).ok_or_else(|| {
                format!(
                    "upstream_method: unknown method {m:?} (use {})",
                    AuthMethod::names(&AuthMethod::CHECKED)
                )
            })?),
        };
        let needs_secret = auth_methods.iter().any(|m| *m != AuthMethod::None);
        let secret = match (&self.secret, needs_secret) {
            (Some(spec), true) => {
                Some(parse_secret(spec, allow_plaintext, env).map_err(|e| format!("secret: {e}"))?)
            }
            (None, true) => {
                return Err("secret: required for client_secret_basic/client_secret_post".into())
            }
            (Some(_), false) => {
                return Err(
                    "secret: a public client (auth_methods = [\"none\"]) has no secret".into(),
                )
            }
            (None, false) => None,
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
            client_id: self.client_id,
            secret,
            auth_methods,
            upstream_method,
            grant_types: self.grant_types,
            enabled: self.enabled,
        })
    }
}

/// All records of a client file, by key.
#[derive(Debug, Default)]
pub struct ClientSet {
    pub records: HashMap<ClientKey, Arc<ClientRecord>>,
    /// The kind and cost of secret most records use (ties: the costliest): what an unknown
    /// client's secret is checked against, so that it costs what a known client's does.
    pub typical_profile: Option<Profile>,
}

impl ClientSet {
    fn typical(&self) -> Option<Profile> {
        let mut counts: HashMap<Profile, usize> = HashMap::new();
        for spec in self.records.values().filter_map(|r| r.secret.as_ref()) {
            *counts.entry(spec.profile()).or_default() += 1;
        }
        let cost = |p: &Profile| match p {
            Profile::Argon2id { m_cost, t_cost, .. } => u64::from(*m_cost) * u64::from(*t_cost),
            Profile::Sha256 => 1,
            Profile::Plain => 0,
        };
        counts
            .into_iter()
            .max_by_key(|(p, n)| (*n, cost(p)))
            .map(|(p, _)| p)
    }
}

/// The format of a client file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Toml,
    Json,
}

impl FileFormat {
    pub fn of(path: &std::path::Path) -> FileFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => FileFormat::Json,
            _ => FileFormat::Toml,
        }
    }
}

/// Parses and validates a whole client file. Errors name the entry and key.
pub fn parse_client_file(
    text: &str,
    format: FileFormat,
    env: EnvLookup<'_>,
) -> Result<ClientSet, String> {
    let raw: RawFile = match format {
        FileFormat::Toml => {
            toml::from_str(text).map_err(|e| crate::config::toml_error(&e, text))?
        }
        FileFormat::Json => serde_json::from_str(text).map_err(|e| e.to_string())?,
    };
    let mut set = ClientSet::default();
    for (i, r) in raw.clients.into_iter().enumerate() {
        let record = r
            .lower(None, raw.allow_plaintext, env)
            .map_err(|e| format!("clients[{i}].{e}"))?;
        if set.records.insert(record.key(), Arc::new(record)).is_some() {
            return Err(format!("clients[{i}]: duplicate env_id and client_id"));
        }
    }
    set.typical_profile = set.typical();
    Ok(set)
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
    let record = raw.lower(Some(env_id), false, &no_env)?;
    if record.env_id != env_id || record.client_id.as_bytes() != client_id {
        return Err("the registry answered with another client".into());
    }
    Ok(record)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const SHA: &str =
        "sha256:AAAAAAAAAAAAAAAAAAAAAA==:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn file(entries: &str) -> Result<ClientSet, String> {
        parse_client_file(entries, FileFormat::Toml, &no_env)
    }

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
    fn a_file_of_records_parses_in_toml_and_json() {
        let toml_text = format!(
            "[[clients]]\nenv_id = \"e\"\nclient_id = \"app\"\nsecret = \"{SHA}\"\n\
             auth_methods = [\"CLIENT_SECRET_BASIC\"]\nupstream_method = \"client_secret_post\"\n\
             grant_types = [\"client_credentials\"]\n\
             [[clients]]\nenv_id = \"e\"\nclient_id = \"spa\"\nauth_methods = [\"none\"]\n"
        );
        let set = file(&toml_text).unwrap();
        let app = &set.records[&ClientKey::new("e", b"app")];
        assert_eq!(app.auth_methods, vec![AuthMethod::ClientSecretBasic]);
        assert_eq!(app.upstream_method, Some(AuthMethod::ClientSecretPost));
        assert!(app.enabled && app.secret.is_some());
        let spa = &set.records[&ClientKey::new("e", b"spa")];
        assert!(spa.secret.is_none());

        let json = format!(
            r#"{{"clients":[{{"env_id":"e","client_id":"app","secret":"{SHA}","auth_methods":["client_secret_post"],"enabled":false}}]}}"#
        );
        let set = parse_client_file(&json, FileFormat::Json, &no_env).unwrap();
        assert!(!set.records[&ClientKey::new("e", b"app")].enabled);
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry_and_key() {
        let cases = [
            ("client_id = \"a\"\nauth_methods = [\"none\"]", "clients[0].env_id"),
            ("env_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"jwt\"]", "clients[0].auth_methods"),
            ("env_id = \"e\"\nclient_id = \"a\"\nauth_methods = []", "clients[0].auth_methods"),
            ("env_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"client_secret_post\"]", "clients[0].secret"),
            ("env_id = \"e\"\nclient_id = \"\"\nauth_methods = [\"none\"]", "clients[0].client_id"),
            (
                "env_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"none\"]\ngrant_types = []",
                "clients[0].grant_types",
            ),
            (
                "env_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"client_secret_post\"]\nsecret = \"plain:x\"",
                "clients[0].secret",
            ),
        ];
        for (entry, key) in cases {
            let e = file(&format!("[[clients]]\n{entry}\n")).unwrap_err();
            assert!(e.starts_with(key), "{entry}: {e}");
        }
        let e = file("[[clients]]\nenv_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"none\"]\nsecrett = \"x\"\n")
            .unwrap_err();
        assert!(e.contains("unknown field `secrett`"), "{e}");
    }

    #[test]
    fn duplicate_clients_are_refused() {
        let one = "[[clients]]\nenv_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"none\"]\n";
        let e = file(&format!("{one}{one}")).unwrap_err();
        assert!(e.contains("clients[1]") && e.contains("duplicate"), "{e}");
    }

    #[test]
    fn plaintext_only_when_allowed_and_never_in_debug() {
        let text = "allow_plaintext = true\n[[clients]]\nenv_id = \"e\"\nclient_id = \"a\"\n\
                    auth_methods = [\"client_secret_post\"]\nsecret = \"plain:Hunter2-Secret\"\n";
        let set = file(text).unwrap();
        let shown = format!("{:?}", set.records.values().next().unwrap());
        assert!(!shown.contains("Hunter2"), "{shown}");
    }

    #[test]
    fn registry_record_takes_env_from_the_url_and_must_match() {
        let body = format!(
            r#"{{"client_id":"app","secret":"{SHA}","auth_methods":["client_secret_basic"]}}"#
        );
        let r = parse_registry_record(body.as_bytes(), "e", b"app").unwrap();
        assert_eq!(r.env_id, "e");
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

    #[test]
    fn the_typical_profile_is_the_most_common_kind_of_secret() {
        let argon = crate::clients::secret::Profile::Argon2id {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        }
        .spec_for(b"x");
        let argon = match argon {
            SecretSpec::Argon2id(phc) => phc,
            _ => unreachable!(),
        };
        let entry = |id: &str, secret: &str| {
            format!(
                "[[clients]]\nenv_id = \"e\"\nclient_id = \"{id}\"\nsecret = '{secret}'\n\
                 auth_methods = [\"client_secret_post\"]\n"
            )
        };
        let text = [entry("a", &argon), entry("b", &argon), entry("c", SHA)].concat();
        let set = file(&text).unwrap();
        assert!(matches!(
            set.typical_profile,
            Some(Profile::Argon2id { m_cost: 64, .. })
        ));
        let set = file(&entry("c", SHA)).unwrap();
        assert_eq!(set.typical_profile, Some(Profile::Sha256));
        assert_eq!(file("").unwrap().typical_profile, None);
    }
}
