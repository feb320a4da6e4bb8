//! A client file's records: read and validated one record at a time, and held compactly (one
//! table of shared records keyed by their own ids; no copy of the ids as keys).
//!
//! A client file may hold millions of records. Reading one the naive way — the whole TOML document
//! as a tree, then every record — leaves the records scattered over pages of freed parser memory
//! that can never be given back (measured: 4 KiB of RSS per record). So a TOML file is read
//! `[[clients]]` table by table, and a JSON file as a stream, each record validated as it comes;
//! any syntax error falls back to reading the whole document, for the exact error position.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::record::{ClientKey, ClientRecord, EnvLookup, Interner, RawRecord};
use super::secret::{Profile, SecretError};

/// All records of a client file.
#[derive(Default)]
pub struct ClientSet {
    records: HashTable<Arc<ClientRecord>>,
    hasher: RandomState,
    /// The kind and cost of secret most records use (ties: the costliest): what an unknown
    /// client's secret is checked against, so that it costs what a known client's does.
    pub typical_profile: Option<Profile>,
}

impl std::fmt::Debug for ClientSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSet")
            .field("records", &self.records.len())
            .field("typical_profile", &self.typical_profile)
            .finish()
    }
}

impl ClientSet {
    fn hash(&self, env_id: &str, client_id: &[u8]) -> u64 {
        self.hasher.hash_one((env_id, client_id))
    }

    /// The record of `key`.
    pub fn get(&self, key: &ClientKey) -> Option<Arc<ClientRecord>> {
        let (env_id, client_id) = (key.env_id(), key.client_id());
        self.records
            .find(self.hash(env_id, client_id), |r| {
                &*r.env_id == env_id && r.client_id.as_bytes() == client_id
            })
            .cloned()
    }

    /// Adds a record; `false` (and no change) when one with its ids is there already.
    fn insert(&mut self, record: ClientRecord) -> bool {
        let hash = self.hash(&record.env_id, record.client_id.as_bytes());
        let same =
            |r: &Arc<ClientRecord>| r.env_id == record.env_id && r.client_id == record.client_id;
        if self.records.find(hash, same).is_some() {
            return false;
        }
        let hasher = &self.hasher;
        self.records.insert_unique(hash, Arc::new(record), |r| {
            hasher.hash_one((&*r.env_id, r.client_id.as_bytes()))
        });
        true
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ClientRecord>> {
        self.records.iter()
    }

    fn typical(&self) -> Option<Profile> {
        let mut counts: HashMap<Profile, usize> = HashMap::new();
        for spec in self.records.iter().filter_map(|r| r.secret.as_ref()) {
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

/// A client file read whole: TOML or JSON, `{ allow_plaintext, clients: [...] }` (the fallback
/// that gives syntax errors their position).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    allow_plaintext: bool,
    #[serde(default)]
    clients: Vec<RawRecord>,
}

/// Records being added to a set, counted, with what decides at the end.
struct Building<'a> {
    set: ClientSet,
    interner: Interner,
    env: EnvLookup<'a>,
    count: usize,
    /// The first record with a `plain:` secret (allowed only with `allow_plaintext`, which a
    /// JSON file may give after its records).
    first_plain: Option<usize>,
}

impl<'a> Building<'a> {
    fn new(env: EnvLookup<'a>) -> Self {
        Building {
            set: ClientSet::default(),
            interner: Interner::default(),
            env,
            count: 0,
            first_plain: None,
        }
    }

    fn add(&mut self, raw: RawRecord) -> Result<(), String> {
        let i = self.count;
        self.count += 1;
        if self.first_plain.is_none()
            && raw
                .secret
                .as_deref()
                .is_some_and(|s| s.starts_with("plain:"))
        {
            self.first_plain = Some(i);
        }
        let record = raw
            .lower(None, true, self.env, &mut self.interner)
            .map_err(|e| format!("clients[{i}].{e}"))?;
        if !self.set.insert(record) {
            return Err(format!("clients[{i}]: duplicate env_id and client_id"));
        }
        Ok(())
    }

    fn finish(mut self, allow_plaintext: bool) -> Result<ClientSet, String> {
        if let (false, Some(i)) = (allow_plaintext, self.first_plain) {
            return Err(format!(
                "clients[{i}].secret: {}",
                SecretError::PlaintextNotAllowed
            ));
        }
        self.set.typical_profile = self.set.typical();
        Ok(self.set)
    }
}

/// Parses and validates a whole client file. Errors name the entry and key (and, for a syntax
/// error, the position), never a secret.
pub fn parse_client_file(
    text: &str,
    format: FileFormat,
    env: EnvLookup<'_>,
) -> Result<ClientSet, String> {
    let streamed = match format {
        FileFormat::Toml => parse_toml_tables(text, env),
        FileFormat::Json => parse_json_stream(text, env),
    };
    match streamed {
        Ok(set) => Ok(set),
        Err(Fallback::Invalid(e)) => Err(e),
        Err(Fallback::Syntax) => parse_whole(text, format, env),
    }
}

/// Why a one-record-at-a-time read stopped.
enum Fallback {
    /// The document is valid, a record is not: this is the error.
    Invalid(String),
    /// The document did not parse this way: read it whole for the exact error.
    Syntax,
}

fn parse_whole(text: &str, format: FileFormat, env: EnvLookup<'_>) -> Result<ClientSet, String> {
    let raw: RawFile = match format {
        FileFormat::Toml => {
            toml::from_str(text).map_err(|e| crate::config::toml_error(&e, text))?
        }
        FileFormat::Json => serde_json::from_str(text).map_err(|e| e.to_string())?,
    };
    let mut b = Building::new(env);
    for r in raw.clients {
        b.add(r)?;
    }
    b.finish(raw.allow_plaintext)
}

/// Whether a line is a `[[clients]]` header (TOML allows spaces inside the brackets, and a
/// comment after).
fn is_clients_header(line: &str) -> bool {
    let line = line.split('#').next().unwrap_or_default();
    let squeezed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    squeezed == "[[clients]]"
}

/// A TOML file read `[[clients]]` table by table.
fn parse_toml_tables(text: &str, env: EnvLookup<'_>) -> Result<ClientSet, Fallback> {
    let mut starts = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if is_clients_header(line) {
            starts.push(at);
        }
        at += line.len();
    }
    let head_end = starts.first().copied().unwrap_or(text.len());
    let head: RawFile = toml::from_str(&text[..head_end]).map_err(|_| Fallback::Syntax)?;
    let mut b = Building::new(env);
    for r in head.clients {
        b.add(r).map_err(Fallback::Invalid)?;
    }
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        let table: RawFile = toml::from_str(&text[start..end]).map_err(|_| Fallback::Syntax)?;
        if table.allow_plaintext || table.clients.len() != 1 {
            return Err(Fallback::Syntax);
        }
        for r in table.clients {
            b.add(r).map_err(Fallback::Invalid)?;
        }
    }
    b.finish(head.allow_plaintext).map_err(Fallback::Invalid)
}

/// A JSON file read as a stream: each record validated as soon as it is parsed.
fn parse_json_stream(text: &str, env: EnvLookup<'_>) -> Result<ClientSet, Fallback> {
    let mut b = Building::new(env);
    let mut de = serde_json::Deserializer::from_str(text);
    let outcome = FileSeed { b: &mut b }
        .deserialize(&mut de)
        .and_then(|allow| {
            de.end()?;
            Ok(allow)
        });
    match outcome {
        Ok(allow_plaintext) => b.finish(allow_plaintext).map_err(Fallback::Invalid),
        // A record refused by validation is reported as such; anything else is syntax.
        Err(e) if e.is_data() && e.to_string().starts_with("clients[") => {
            let message = e.to_string();
            let end = message.rfind(" at line ").unwrap_or(message.len());
            Err(Fallback::Invalid(message[..end].to_string()))
        }
        Err(_) => Err(Fallback::Syntax),
    }
}

struct FileSeed<'b, 'a> {
    b: &'b mut Building<'a>,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_, '_> {
    /// `allow_plaintext`.
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a client file object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<bool, M::Error> {
        let mut allow_plaintext = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "allow_plaintext" => allow_plaintext = map.next_value()?,
                "clients" => map.next_value_seed(RecordsSeed { b: &mut *self.b })?,
                other => {
                    return Err(serde::de::Error::unknown_field(
                        other,
                        &["allow_plaintext", "clients"],
                    ))
                }
            }
        }
        Ok(allow_plaintext)
    }
}

struct RecordsSeed<'b, 'a> {
    b: &'b mut Building<'a>,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of client records")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while let Some(raw) = seq.next_element::<RawRecord>()? {
            self.b.add(raw).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clients::secret::SecretSpec;
    use crate::protocol::AuthMethod;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const SHA: &str =
        "sha256:AAAAAAAAAAAAAAAAAAAAAA==:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn file(entries: &str) -> Result<ClientSet, String> {
        parse_client_file(entries, FileFormat::Toml, &no_env)
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
        let app = &*set.get(&ClientKey::new("e", b"app")).unwrap();
        assert_eq!(
            app.auth_methods.iter().collect::<Vec<_>>(),
            vec![AuthMethod::ClientSecretBasic]
        );
        assert_eq!(app.upstream_method, Some(AuthMethod::ClientSecretPost));
        assert!(app.enabled && app.secret.is_some());
        let spa = &*set.get(&ClientKey::new("e", b"spa")).unwrap();
        assert!(spa.secret.is_none());

        let json = format!(
            r#"{{"clients":[{{"env_id":"e","client_id":"app","secret":"{SHA}","auth_methods":["client_secret_post"],"enabled":false}}]}}"#
        );
        let set = parse_client_file(&json, FileFormat::Json, &no_env).unwrap();
        assert!(!set.get(&ClientKey::new("e", b"app")).unwrap().enabled);
    }

    #[test]
    fn records_for_conversion_only_need_no_secret_and_may_name_jwt_methods() {
        let toml_text = format!(
            "[[clients]]\nenv_id = \"e\"\nclient_id = \"post-only\"\n\
             auth_methods = [\"client_secret_post\"]\nupstream_method = \"CLIENT_SECRET_POST\"\n\
             [[clients]]\nenv_id = \"e\"\nclient_id = \"hs\"\nauth_methods = [\"client_secret_basic\"]\n\
             upstream_method = \"CLIENT_SECRET_JWT\"\n\
             [[clients]]\nenv_id = \"e\"\nclient_id = \"pk\"\nsecret = \"{SHA}\"\n\
             auth_methods = [\"client_secret_post\"]\nupstream_method = \"private_key_jwt\"\n\
             signing_key = \"2026-11\"\n"
        );
        let set = file(&toml_text).unwrap();
        let get = |id: &str| set.get(&ClientKey::new("e", id.as_bytes())).unwrap();
        let post = get("post-only");
        assert!(post.secret.is_none());
        assert_eq!(post.upstream_method, Some(AuthMethod::ClientSecretPost));
        assert_eq!(get("hs").upstream_method, Some(AuthMethod::ClientSecretJwt));
        let pk = get("pk");
        assert_eq!(pk.upstream_method, Some(AuthMethod::PrivateKeyJwt));
        assert_eq!(pk.signing_key.as_deref(), Some("2026-11"));
        // Methods the gateway cannot speak to a server are refused.
        let e = file(
            "[[clients]]\nenv_id = \"e\"\nclient_id = \"m\"\nauth_methods = [\"client_secret_post\"]\n\
             upstream_method = \"tls_client_auth\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("upstream_method") && e.contains("private_key_jwt"),
            "{e}"
        );
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry_and_key() {
        let cases = [
            ("client_id = \"a\"\nauth_methods = [\"none\"]", "clients[0].env_id"),
            ("env_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"jwt\"]", "clients[0].auth_methods"),
            ("env_id = \"e\"\nclient_id = \"a\"\nauth_methods = []", "clients[0].auth_methods"),
            (
                "env_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"client_secret_post\"]\n\
                 upstream_method = \"private_key_jwt\"",
                "clients[0].upstream_method",
            ),
            (
                "env_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"none\"]\nsigning_key = \"k\"",
                "clients[0].signing_key",
            ),
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
        let shown = format!("{:?}", set.iter().next().unwrap());
        assert!(!shown.contains("Hunter2"), "{shown}");
    }

    #[test]
    fn the_typical_profile_is_the_most_common_kind_of_secret() {
        let argon = Profile::Argon2id {
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

    #[test]
    fn records_read_table_by_table_equal_the_whole_document_read() {
        let text = format!(
            "allow_plaintext = true\n# a comment\n[[ clients ]]  # spaced\nenv_id = \"e\"\nclient_id = \"a\"\n\
             secret = \"{SHA}\"\nauth_methods = [\"client_secret_post\"]\ngrant_types = [\"x\", \"y\"]\n\
             [[clients]]\nenv_id = \"e\"\nclient_id = \"b\"\nsecret = \"plain:p\"\n\
             auth_methods = [\"client_secret_basic\"]\ngrant_types = [\"x\", \"y\"]\n"
        );
        let tables = parse_toml_tables(&text, &no_env).ok().unwrap();
        let whole = parse_whole(&text, FileFormat::Toml, &no_env).unwrap();
        assert_eq!((tables.len(), whole.len()), (2, 2));
        let (a, b) = (
            tables.get(&ClientKey::new("e", b"a")).unwrap(),
            tables.get(&ClientKey::new("e", b"b")).unwrap(),
        );
        // Shared strings are held once.
        assert!(Arc::ptr_eq(&a.env_id, &b.env_id));
        assert!(Arc::ptr_eq(
            a.grant_types.as_ref().unwrap(),
            b.grant_types.as_ref().unwrap()
        ));
        // A syntax error anywhere is reported as the whole document's parser sees it.
        let broken = format!("{text}[[clients]]\nenv_id = \"e\nclient_id = \"c\"\n");
        let e = file(&broken).unwrap_err();
        assert!(e.starts_with("line 16, column"), "{e}");
    }

    #[test]
    fn a_json_file_is_read_as_a_stream_with_allow_plaintext_anywhere() {
        let json = r#"{"clients":[{"env_id":"e","client_id":"a","secret":"plain:p","auth_methods":["client_secret_post"]}],"allow_plaintext":true}"#;
        let set = parse_client_file(json, FileFormat::Json, &no_env).unwrap();
        assert_eq!(set.len(), 1);
        let refused = json.replace("true", "false");
        let e = parse_client_file(&refused, FileFormat::Json, &no_env).unwrap_err();
        assert!(e.starts_with("clients[0].secret:"), "{e}");
        let bad = json.replace(r#""client_id":"a","#, r#""client_id":"","#);
        let e = parse_client_file(&bad, FileFormat::Json, &no_env).unwrap_err();
        assert!(
            e.starts_with("clients[0].client_id:") && !e.contains(" at line "),
            "{e}"
        );
        let e = parse_client_file(r#"{"clients":[{"env_id":1}]"#, FileFormat::Json, &no_env)
            .unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = parse_client_file(r#"{"clientz":[]}"#, FileFormat::Json, &no_env).unwrap_err();
        assert!(e.contains("unknown field `clientz`"), "{e}");
    }
}
