//! Configuration: the TOML file operators write, validated once and lowered into [`Settings`], the
//! typed model the gateway runs on. The file format is the public API; `Settings` is not.
//!
//! Every error names the key that is wrong and says what is wrong with it.

mod file;
mod lower;
mod routes;
mod settings;

pub use settings::*;

use std::path::Path;

/// The largest body cap allowed: a token request is read whole before it is decided and sent, and
/// token-endpoint bodies are a few hundred bytes; 64 KiB leaves room for large PAR requests.
pub const MAX_BODY_CAP: usize = 64 * 1024;

/// A configuration that could not be used, with the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// A TOML error of `text` without the text of the offending line (it may hold a token or a
/// secret): its position, the key it is on (the table and what stands left of `=`), and the
/// message, e.g. `line 7, column 16, [admin] bearer_token: invalid basic string`.
pub fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return message.to_string();
    };
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.len() - line_start + 1;
    let this_line = text[line_start..].lines().next().unwrap_or_default();
    let is_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"'))
    };
    let key = this_line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| is_key(k));
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']') && is_key(l.trim_matches(['[', ']'])));
    let at = match (table, key) {
        (Some(t), Some(k)) => format!(", {t} {k}"),
        (None, Some(k)) => format!(", {k}"),
        (Some(t), None) => format!(", {t}"),
        (None, None) => String::new(),
    };
    format!("line {line}, column {column}{at}: {message}")
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Settings {
    /// Reads and validates a configuration file. Relative paths in it (client file,
    /// certificates) are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Settings::parse_in(&text, path.parent())
    }

    /// Parses and validates configuration text; relative paths are relative to the working
    /// directory.
    pub fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse_in(text, None)
    }

    fn parse_in(text: &str, base: Option<&Path>) -> Result<Settings, ConfigError> {
        let file: file::FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(toml_error(&e, text)))?;
        lower::lower(file, &lower::Base(base))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::protocol::{AuthMethod, BasicEncoding, Conversion, DiscoveryRewrite, Endpoint};

    const MINIMAL: &str = r#"
        default_upstream = "idp"
        [upstreams.idp]
        url = "http://127.0.0.1:9000"
    "#;

    fn err(text: &str) -> String {
        Settings::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let s = Settings::parse(MINIMAL).unwrap();
        assert_eq!(s.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(s.token.max_body_bytes, 16 * 1024);
        assert_eq!(s.token.body_timeout, Duration::from_secs(5));
        let up = &s.upstreams[0];
        assert_eq!(
            (up.tls, up.host.as_str(), up.port),
            (false, "127.0.0.1", 9000)
        );
        assert_eq!(up.host_header, "127.0.0.1:9000");
        assert_eq!(up.basic_encoding, BasicEncoding::Rfc6749);
        assert!(s.routes.is_empty());
    }

    #[test]
    fn shipped_configs_are_valid() {
        for f in [
            "conf/tokengate.toml",
            "conf/demo.toml",
            "conf/validate-demo.toml",
            "conf/upstream-auth-demo.toml",
            "conf/per-client-demo.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            Settings::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn https_upstream_defaults_to_443_and_host_header_without_port() {
        let s = Settings::parse(
            r#"default_upstream = "p"
               [upstreams.p]
               url = "https://auth.pingone.eu"
               basic_encoding = "raw""#,
        )
        .unwrap();
        let up = &s.upstreams[0];
        assert_eq!((up.tls, up.port), (true, 443));
        assert_eq!(up.host_header, "auth.pingone.eu");
        assert_eq!(up.basic_encoding, BasicEncoding::Raw);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = err(&format!("{MINIMAL}\n[token]\nmax_body = 1\n"));
        assert!(e.contains("unknown field `max_body`"), "{e}");
        let e = err(&format!("{MINIMAL}\nlisten = 1\n"));
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[token]\nmax_body_bytes = 0", "token.max_body_bytes"),
            ("[token]\nmax_body_bytes = 70000", "token.max_body_bytes"),
            ("[server]\nlisten = [\"localhost\"]", "server.listen"),
            ("[server]\nthreads = 0", "server.threads"),
            ("[[routes]]\nmode = \"to_basic\"", "routes[0]"),
            (
                "[[routes]]\npath = \"as/token\"\nmode = \"to_basic\"",
                "routes[0].path",
            ),
            (
                "[[routes]]\npath = \"/x\"\nmode = \"to_post\"\nupstream = \"nope\"",
                "routes[0].upstream",
            ),
        ];
        for (extra, key) in cases {
            let e = err(&format!("{MINIMAL}\n{extra}\n"));
            assert!(e.starts_with(key), "{extra}: {e}");
        }
    }

    #[test]
    fn bad_mode_and_duration_are_reported_with_their_key() {
        let e = err(&format!(
            "{MINIMAL}\n[[routes]]\npath = \"/x\"\nmode = \"to_jwt\"\n"
        ));
        assert!(e.contains("to_jwt") && e.contains("mode"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[token]\nbody_timeout = \"5 parsecs\"\n"
        ));
        assert!(
            e.contains("body_timeout") && e.contains("invalid duration"),
            "{e}"
        );
    }

    #[test]
    fn upstream_addresses_replace_resolution_and_are_checked() {
        let with = |list: &str| format!("{MINIMAL}addresses = {list}\n");
        let s = Settings::parse(&with("[\"127.0.0.2:9000\", \"[::1]:9001\"]")).unwrap();
        let up = &s.upstreams[s.default_upstream];
        assert_eq!(up.addresses.len(), 2);
        assert_eq!(up.host, "127.0.0.1");
        for (list, what) in [
            ("[]", "at least one address"),
            ("[\"10.0.0.5\"]", "is not an IP:port address"),
            ("[\"idp.example:443\"]", "is not an IP:port address"),
        ] {
            let e = err(&with(list));
            assert!(
                e.contains("upstreams.idp.addresses") && e.contains(what),
                "{e}"
            );
        }
    }

    #[test]
    fn upstream_urls_are_checked() {
        for (url, what) in [
            ("ftp://x", "scheme"),
            ("http://x/realms/a", "requests keep their own path"),
            ("http://u:p@x", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let e = err(&format!(
                "default_upstream = \"a\"\n[upstreams.a]\nurl = \"{url}\"\n"
            ));
            assert!(
                e.starts_with("upstreams.a.url") && e.contains(what),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn validation_needs_exactly_one_client_source() {
        let route = "[[routes]]\npath = \"/{e}/as/token\"\nmode = \"validate\"\n";
        let e = err(&format!("{MINIMAL}\n{route}"));
        assert!(
            e.starts_with("routes[0].mode") && e.contains("[clients]"),
            "{e}"
        );
        let e = err(&format!(
            "{MINIMAL}\n{route}[clients]\nfile = \"c.toml\"\nregistry_url = \"http://r\"\n"
        ));
        assert!(e.starts_with("clients:"), "{e}");
        let e = err(&format!("{MINIMAL}\n[lockout]\nwindow = \"1s\"\n"));
        assert!(e.starts_with("lockout"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[routes]]\npath = \"/x\"\nmode = \"passthrough\"\nvalidate = true\n"
        ));
        assert!(e.starts_with("routes[0].validate"), "{e}");
    }

    /// A validating configuration with `lockout` as its `[lockout]` section.
    fn with_lockout(lockout: &str) -> String {
        format!(
            "{MINIMAL}\n[[routes]]\npath = \"/{{e}}/as/token\"\nmode = \"validate\"\n\
             [clients]\nfile = \"c.toml\"\n[lockout]\n{lockout}\n"
        )
    }

    #[test]
    fn a_lockout_store_gets_its_defaults_and_never_shows_its_password() {
        let s = Settings::parse(&with_lockout("store = \"redis://10.0.0.5:6380/2\"")).unwrap();
        let store = s.clients.unwrap().lockout.store.unwrap();
        assert_eq!(store.display, "redis://10.0.0.5:6380/2");
        assert_eq!(store.timeout, Duration::from_millis(50));
        assert_eq!(store.cooldown, Duration::from_secs(5));
        assert_eq!(store.key_prefix, "tokengate");
        assert_eq!(store.on_error, StoreFallback::Local);
        assert!(store.password.is_none() && store.ca_pem.is_none());

        std::env::set_var(
            "TOKENGATE_TEST_REDIS_URL",
            "rediss://u:pw-8c1e@redis.internal",
        );
        std::env::set_var("TOKENGATE_TEST_REDIS_PW", "pw-77aa");
        let s = Settings::parse(&with_lockout(
            "store = \"env:TOKENGATE_TEST_REDIS_URL\"\nstore_password = \"env:TOKENGATE_TEST_REDIS_PW\"\n\
             store_timeout = \"20ms\"\nstore_cooldown = \"1s\"\non_store_error = \"closed\"\n\
             store_key_prefix = \"gw-prod\"",
        ))
        .unwrap();
        let store = s.clients.as_ref().unwrap().lockout.store.clone().unwrap();
        assert_eq!(store.display, "rediss://redis.internal/0");
        assert_eq!(store.password.as_ref().unwrap().as_str(), "pw-77aa");
        assert_eq!(store.on_error, StoreFallback::Closed);
        assert_eq!(
            (store.timeout, store.cooldown, store.key_prefix.as_str()),
            (Duration::from_millis(20), Duration::from_secs(1), "gw-prod")
        );
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("pw-8c1e") && !debug.contains("pw-77aa"),
            "{debug}"
        );
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies() {
        let e = err(&format!("{MINIMAL}\n[server]\nproxy_protocol = true\n"));
        assert!(
            e.starts_with("server.proxy_protocol: needs server.trusted_proxies"),
            "{e}"
        );
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[server]\nproxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]\n"
        ))
        .unwrap();
        assert!(s.server.proxy_protocol);
        assert!(!Settings::parse(MINIMAL).unwrap().server.proxy_protocol);
    }

    #[test]
    fn a_lockout_store_is_checked_key_by_key() {
        let cases = [
            ("store = \"http://redis:6379\"", "lockout.store: the scheme"),
            ("store = \"not a url\"", "lockout.store: is not a URL"),
            (
                "store = \"redis://redis:6379/x\"",
                "lockout.store: the path",
            ),
            (
                "store = \"redis://:hunter2@redis:6379\"",
                "lockout.store: holds a password",
            ),
            (
                "store = \"env:TOKENGATE_TEST_UNSET_VAR\"",
                "lockout.store: environment variable TOKENGATE_TEST_UNSET_VAR is not set",
            ),
            (
                "store = \"redis://r\"\nstore_password = \"hunter2\"",
                "lockout.store_password: must be \"env:NAME\"",
            ),
            (
                "store_timeout = \"1s\"",
                "lockout.store_timeout: only applies with lockout.store",
            ),
            (
                "on_store_error = \"local\"",
                "lockout.on_store_error: only applies",
            ),
            (
                "store = \"redis://r\"\nstore_ca_file = \"ca.pem\"",
                "lockout.store_ca_file: applies",
            ),
            (
                "store = \"redis://r\"\nstore_timeout = \"0s\"",
                "lockout.store_timeout: must be greater",
            ),
            (
                "store = \"redis://r\"\nstore_timeout = \"6s\"",
                "lockout.store_timeout: must be at most",
            ),
            (
                "store = \"redis://r\"\nstore_key_prefix = \"{x}\"",
                "lockout.store_key_prefix",
            ),
            (
                "store = \"redis://r\"\non_store_error = \"open\"",
                "lockout",
            ),
        ];
        for (lockout, expected) in cases {
            let e = err(&with_lockout(lockout));
            assert!(e.contains(expected), "{lockout}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn endpoint_routes_and_their_keys() {
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[[routes]]\npath = \"/{{e}}/as/introspect\"\nmode = \"to_post\"\nendpoint = \"introspection\"\n\
             [[routes]]\npath = \"/{{e}}/as/device_authorization\"\nmode = \"to_basic\"\nendpoint = \"device_authorization\"\n"
        ))
        .unwrap();
        let endpoints: Vec<_> = s
            .routes
            .iter()
            .map(|r| match &r.mode {
                RouteMode::Token(t) => t.endpoint,
                m => panic!("{m:?}"),
            })
            .collect();
        assert_eq!(
            endpoints,
            [Endpoint::Introspection, Endpoint::DeviceAuthorization]
        );
        for (extra, key, says) in [
            (
                "mode = \"to_basic\"\nendpoint = \"introspect\"",
                "routes[0].endpoint",
                "introspection",
            ),
            (
                "mode = \"passthrough\"\nendpoint = \"par\"",
                "routes[0].endpoint",
                "only applies",
            ),
            (
                "mode = \"passthrough\"\nvalidate = true",
                "routes[0].validate",
                "only applies",
            ),
            (
                "mode = \"discovery\"\nvalidate = true",
                "routes[0].validate",
                "only applies",
            ),
            (
                "mode = \"to_basic\"\nauth_methods = [\"none\"]",
                "routes[0].auth_methods",
                "discovery",
            ),
            (
                "mode = \"to_post\"\npublic_base_url = \"https://gw\"",
                "routes[0].public_base_url",
                "discovery",
            ),
            (
                "mode = \"discovery\"\npublic_base_url = \"gw.example.com\"",
                "routes[0].public_base_url",
                "https://",
            ),
            (
                "mode = \"discovery\"\npublic_base_url = \"https://gw/?a=1\"",
                "routes[0].public_base_url",
                "without query",
            ),
            (
                "mode = \"discovery\"\npublic_base_url = \"https:///x\"",
                "routes[0].public_base_url",
                "scheme://host",
            ),
            (
                "mode = \"discovery\"\nauth_methods = [\"client_secret_jwt\", \"basic\"]",
                "routes[0].auth_methods",
                "\"basic\"",
            ),
            (
                "mode = \"discovery\"\nauth_methods = [\"Client_Secret_Post\"]",
                "routes[0].auth_methods",
                "unknown method",
            ),
            (
                "mode = \"discovery\"\nauth_methods = []",
                "routes[0].auth_methods",
                "at least one",
            ),
        ] {
            let e = err(&format!("{MINIMAL}\n[[routes]]\npath = \"/x\"\n{extra}\n"));
            assert!(e.starts_with(key) && e.contains(says), "{extra}: {e}");
        }
    }

    #[test]
    fn per_client_and_jwks_routes_and_signing_keys() {
        let clients = "[clients]\nfile = \"/dev/null\"\n";
        let s = Settings::parse(&format!(
            "{MINIMAL}\n{clients}\n\
             [[routes]]\npath = \"/{{env_id}}/as/token\"\nmode = \"per_client\"\nfallback = \"to_basic\"\n\
             assertion_audience = \"https://auth.pingone.com/{{env_id}}/as\"\nassertion_lifetime = \"30s\"\n\
             [[routes]]\npath = \"/{{env_id}}/as/revoke\"\nmode = \"per_client\"\nendpoint = \"revocation\"\n\
             [[routes]]\npath = \"/.well-known/tokengate-jwks.json\"\nmode = \"jwks\"\n\
             [[signing_keys]]\nkid = \"2026-11\"\nfile = \"/keys/a.pem\"\n\
             [[signing_keys]]\nkid = \"2027-01\"\nfile = \"b.pem\"\nstatus = \"next\"\n"
        ))
        .unwrap();
        let RouteMode::Token(t) = &s.routes[0].mode else {
            panic!("{:?}", s.routes[0].mode)
        };
        assert!(t.per_client && !t.validate);
        assert_eq!(t.conversion, Some(Conversion::ToBasic));
        assert_eq!(
            t.assertion_audience.as_deref(),
            Some("https://auth.pingone.com/{env_id}/as")
        );
        assert_eq!(t.assertion_lifetime, Duration::from_secs(30));
        let RouteMode::Token(t) = &s.routes[1].mode else {
            panic!()
        };
        // No fallback: a client without a record is forwarded as sent.
        assert_eq!((t.conversion, t.endpoint), (None, Endpoint::Revocation));
        assert_eq!(t.assertion_lifetime, Duration::from_secs(60));
        assert!(matches!(s.routes[2].mode, RouteMode::Jwks));
        assert_eq!(
            s.signing_keys,
            [
                SigningKeySettings {
                    kid: "2026-11".into(),
                    file: "/keys/a.pem".into(),
                    status: KeyStatus::Active
                },
                SigningKeySettings {
                    kid: "2027-01".into(),
                    file: "b.pem".into(),
                    status: KeyStatus::Next
                }
            ]
        );
        let route = "[[routes]]\npath = \"/t\"\n";
        let cases = [
            (format!("{route}mode = \"per_client\""), "routes[0].mode"),
            (
                format!("{clients}{route}mode = \"per_client\"\nvalidate = true"),
                "routes[0].validate",
            ),
            (
                format!("{clients}{route}mode = \"to_basic\"\nfallback = \"to_post\""),
                "routes[0].fallback",
            ),
            (
                format!("{clients}{route}mode = \"per_client\"\nfallback = \"to_jwt\""),
                "fallback: unknown variant `to_jwt`",
            ),
            (
                format!("{route}mode = \"to_basic\"\nassertion_lifetime = \"2h\""),
                "routes[0].assertion_lifetime",
            ),
            (
                format!("{route}mode = \"to_basic\"\nassertion_audience = \"a b\""),
                "routes[0].assertion_audience",
            ),
            (
                format!("{route}mode = \"jwks\"\nassertion_audience = \"x\""),
                "routes[0].assertion_audience",
            ),
            (
                "[[signing_keys]]\nkid = \"a/b\"\nfile = \"k\"".to_string(),
                "signing_keys[0].kid",
            ),
            (
                "[[signing_keys]]\nkid = \"a\"\nfile = \"k\"\n[[signing_keys]]\nkid = \"a\"\nfile = \"l\""
                    .to_string(),
                "signing_keys[1].kid",
            ),
        ];
        for (extra, key) in cases {
            let e = err(&format!("{MINIMAL}\n{extra}\n"));
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = err(&format!(
            "{MINIMAL}\n[[signing_keys]]\nkid = \"a\"\nfile = \"k\"\nstatus = \"on\"\n"
        ));
        assert!(e.contains("status"), "{e}");
    }

    #[test]
    fn discovery_routes_lower_their_rewrite() {
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[[routes]]\npath = \"/{{e}}/as/.well-known/openid-configuration\"\nmode = \"discovery\"\n\
             public_base_url = \"https://gw.example.com/idp/\"\nauth_methods = [\"CLIENT_SECRET_POST\", \"client_secret_basic\", \"client_secret_post\"]\n\
             [[routes]]\npath = \"/.well-known/oauth-authorization-server/{{e}}/as\"\nmode = \"discovery\"\n"
        ))
        .unwrap();
        assert_eq!(
            s.routes[0].mode,
            RouteMode::Discovery(Arc::new(DiscoveryRewrite {
                public_base_url: Some("https://gw.example.com/idp".into()),
                auth_methods: Some(vec![
                    AuthMethod::ClientSecretPost,
                    AuthMethod::ClientSecretBasic
                ]),
            }))
        );
        assert_eq!(
            s.routes[1].mode,
            RouteMode::Discovery(Arc::new(DiscoveryRewrite::default()))
        );
    }

    #[test]
    fn validate_combines_with_a_conversion_and_a_registry_keeps_its_path() {
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[[routes]]\npath = \"/{{e}}/as/token\"\nmode = \"to_basic\"\nvalidate = true\n\
             [clients]\nregistry_url = \"https://reg.example:8443/v1/\"\nregistry_timeout = \"750ms\"\n"
        ))
        .unwrap();
        assert_eq!(
            s.routes[0].mode,
            RouteMode::Token(TokenMode {
                conversion: Some(Conversion::ToBasic),
                validate: true,
                endpoint: Endpoint::Token,
                ..TokenMode::default()
            })
        );
        let c = s.clients.unwrap();
        let ClientSource::Registry {
            upstream,
            base_path,
        } = c.source
        else {
            panic!("registry expected")
        };
        assert_eq!(
            (upstream.tls, upstream.port, base_path.as_str()),
            (true, 8443, "/v1")
        );
        assert_eq!(upstream.read_timeout, Duration::from_millis(750));
    }

    #[test]
    fn zero_durations_are_rejected_by_key() {
        let e = err(
            "default_upstream = \"a\"\n[upstreams.a]\nurl = \"http://x\"\nread_timeout = \"0s\"\n",
        );
        assert_eq!(e, "upstreams.a.read_timeout: must be greater than zero");
        let e = err(&format!(
            "{MINIMAL}\n[clients]\nfile = \"c\"\ncache_ttl = \"0s\"\n"
        ));
        assert_eq!(e, "clients.cache_ttl: must be greater than zero");
    }

    #[test]
    fn admin_listener_is_checked_and_its_token_never_printed() {
        let e = err(&format!(
            "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:8080\"\n"
        ));
        assert!(e.starts_with("admin.listen: must differ"), "{e}");
        let e = err(&format!("{MINIMAL}\n[admin]\nlisten = \"x\"\n"));
        assert!(e.starts_with("admin.listen"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:9901\"\nbearer_token = \"short\"\n"
        ));
        assert!(e.starts_with("admin.bearer_token"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:9901\"\nbearer_token = \"env:TOKENGATE_TEST_UNSET_VAR\"\n"
        ));
        assert!(e.contains("TOKENGATE_TEST_UNSET_VAR is not set"), "{e}");
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:9901\"\nbearer_token = \"Very-Secret-Admin-Token\"\n"
        ))
        .unwrap();
        assert!(!format!("{s:?}").contains("Very-Secret"));
    }

    #[test]
    fn unknown_default_upstream_is_rejected() {
        let e = err("default_upstream = \"b\"\n[upstreams.a]\nurl = \"http://x\"\n");
        assert!(
            e.starts_with("default_upstream") && e.contains("known: a"),
            "{e}"
        );
    }

    #[test]
    fn an_http_registry_must_be_allowed_explicitly() {
        let e = err(&format!(
            "{MINIMAL}\n[clients]\nregistry_url = \"http://reg.internal/v1\"\n"
        ));
        assert!(
            e.starts_with("clients.registry_url") && e.contains("allow_insecure_registry"),
            "{e}"
        );
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[clients]\nregistry_url = \"http://reg.internal/v1\"\nallow_insecure_registry = true\n"
        ))
        .unwrap();
        assert!(s.clients.is_some());
        let e = err(&format!(
            "{MINIMAL}\n[clients]\nregistry_url = \"https://reg/v1\"\nallow_insecure_registry = true\n"
        ));
        assert!(e.starts_with("clients.allow_insecure_registry"), "{e}");
    }

    #[test]
    fn abuse_limits_have_defaults_and_are_checked() {
        let s = Settings::parse(&format!("{MINIMAL}\n[clients]\nfile = \"c.toml\"\n")).unwrap();
        let c = s.clients.unwrap();
        assert_eq!(
            (c.max_pending_verifications, c.registry_max_inflight),
            (64, 64)
        );
        assert!(s.server.strict_paths && s.server.forwarding.trusted.is_empty());
        let e = err(&format!(
            "{MINIMAL}\n[clients]\nfile = \"c\"\nmax_pending_verifications = 0\n"
        ));
        assert_eq!(
            e,
            "clients.max_pending_verifications: must be greater than zero"
        );
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[server]\nstrict_paths = false\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.2\", \"::1\"]\n"
        ))
        .unwrap();
        assert!(!s.server.strict_paths);
        assert_eq!(s.server.forwarding.trusted.len(), 3);
        assert!(s.server.forwarding.trusted[1]
            .contains(&"127.0.0.2".parse::<std::net::IpAddr>().unwrap()));
        let e = err(&format!(
            "{MINIMAL}\n[server]\ntrusted_proxies = [\"lb.internal\"]\n"
        ));
        assert!(
            e.starts_with("server.trusted_proxies") && e.contains("lb.internal"),
            "{e}"
        );
    }

    #[test]
    fn forwarding_and_head_size_settings_have_defaults_and_bounds() {
        use crate::client_addr::ForwardedHeader;
        let s = Settings::parse(MINIMAL).unwrap().server;
        assert_eq!(s.max_header_bytes, 64 * 1024);
        let f = &s.forwarding;
        assert_eq!(
            (f.header, f.write, f.keep),
            (ForwardedHeader::XForwardedFor, true, false)
        );
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[server]\nforwarded_header = \"forwarded\"\nkeep_forwarding_headers = true\n\
             forward_client_address = false\nmax_header_bytes = 1024\n"
        ))
        .unwrap()
        .server;
        let f = &s.forwarding;
        assert_eq!(
            (f.header, f.write, f.keep),
            (ForwardedHeader::Forwarded, false, true)
        );
        assert_eq!(s.max_header_bytes, 1024);
        for bad in ["1023", "1048576"] {
            let e = err(&format!("{MINIMAL}\n[server]\nmax_header_bytes = {bad}\n"));
            assert_eq!(
                e,
                "server.max_header_bytes: must be between 1024 and 1048575"
            );
        }
        let e = err(&format!(
            "{MINIMAL}\n[server]\nforwarded_header = \"x-real-ip\"\n"
        ));
        assert!(
            e.contains("x-forwarded-for") && e.contains("forwarded"),
            "{e}"
        );
    }

    #[test]
    fn a_parse_error_names_the_position_never_the_line() {
        let e = err(&format!(
            "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:9901\"\nbearer_token = \"Very-Secret-Admin-Token\n"
        ));
        assert!(!e.contains("Very-Secret"), "{e}");
        assert!(
            e.starts_with("line 8, column ") && e.contains("[admin] bearer_token:"),
            "{e}"
        );
        let e = err("default_upstream = \"a\"\n[upstreams.a]\nurl = 5 + \"tok-en-secret\"\n");
        assert!(
            !e.contains("tok-en-secret") && e.starts_with("line 3"),
            "{e}"
        );
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let e = err(&format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9901\"\n"));
        assert!(
            e.starts_with("admin.listen") && e.contains("bearer_token"),
            "{e}"
        );
        let s = Settings::parse(&format!(
            "{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9901\"\nbearer_token = \"0123456789abcdef-token\"\n"
        ));
        assert!(s.is_ok());
        assert!(Settings::parse(&format!("{MINIMAL}\n[admin]\nlisten = \"[::1]:9901\"\n")).is_ok());
    }
}
