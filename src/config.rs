//! Configuration: the TOML file operators write, validated once and lowered into [`Settings`], the
//! typed model the gateway runs on. The file format is the public API; `Settings` is not.
//!
//! Every error names the key that is wrong and says what is wrong with it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::protocol::{BasicEncoding, Conversion, DiscoveryRewrite, Endpoint};
use crate::routing::PathMatcher;

/// The largest body cap allowed: Pingora's request retry buffer, which holds the token body while
/// the gateway decides, is 64 KiB.
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

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The file format.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    token: FileToken,
    default_upstream: String,
    upstreams: BTreeMap<String, FileUpstream>,
    #[serde(default)]
    routes: Vec<FileRoute>,
    clients: Option<FileClients>,
    lockout: Option<FileLockout>,
    admin: Option<FileAdmin>,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    metrics: FileMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    /// Environment IDs that get their own `env` label value; every other is `other`.
    #[serde(default)]
    env_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    #[serde(default)]
    format: LogFormat,
    #[serde(default)]
    client_id: ClientIdLogging,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `key=value` text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How the client_id appears in access log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdLogging {
    /// A short SHA-256 digest: correlates lines without writing the identifier.
    #[default]
    Hash,
    /// As sent.
    Plain,
    /// Not at all.
    Omit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    listen: String,
    bearer_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClients {
    file: Option<String>,
    registry_url: Option<String>,
    #[serde(default = "secs::<2>", deserialize_with = "duration")]
    reload_interval: Duration,
    #[serde(default = "secs::<2>", deserialize_with = "duration")]
    registry_timeout: Duration,
    #[serde(default = "secs::<60>", deserialize_with = "duration")]
    cache_ttl: Duration,
    #[serde(default = "secs::<10>", deserialize_with = "duration")]
    cache_negative_ttl: Duration,
    #[serde(default = "secs::<600>", deserialize_with = "duration")]
    cache_max_stale: Duration,
    #[serde(default = "default_capacity")]
    cache_capacity: usize,
    #[serde(default = "secs::<300>", deserialize_with = "duration")]
    verified_ttl: Duration,
    #[serde(default = "default_capacity")]
    verified_capacity: usize,
    #[serde(default)]
    allow_plaintext: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLockout {
    #[serde(default = "secs::<60>", deserialize_with = "duration")]
    window: Duration,
    #[serde(default = "default_per_client")]
    max_failures_per_client: u32,
    #[serde(default = "default_per_ip")]
    max_failures_per_ip: u32,
}

impl Default for FileLockout {
    fn default() -> Self {
        FileLockout {
            window: secs::<60>(),
            max_failures_per_client: default_per_client(),
            max_failures_per_ip: default_per_ip(),
        }
    }
}

fn default_capacity() -> usize {
    100_000
}
fn default_per_client() -> u32 {
    10
}
fn default_per_ip() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    #[serde(default = "default_listen")]
    listen: Vec<String>,
    #[serde(default = "default_threads")]
    threads: usize,
    #[serde(default = "secs::<60>", deserialize_with = "duration")]
    keepalive_timeout: Duration,
    #[serde(default = "secs::<5>", deserialize_with = "duration")]
    grace_period: Duration,
    #[serde(default = "secs::<5>", deserialize_with = "duration")]
    shutdown_timeout: Duration,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default)]
    tls_listen: Vec<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

impl Default for FileServer {
    fn default() -> Self {
        FileServer {
            listen: default_listen(),
            threads: default_threads(),
            keepalive_timeout: secs::<60>(),
            grace_period: secs::<5>(),
            shutdown_timeout: secs::<5>(),
            realm: default_realm(),
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(default = "secs::<5>", deserialize_with = "duration")]
    body_timeout: Duration,
}

impl Default for FileToken {
    fn default() -> Self {
        FileToken {
            max_body_bytes: default_max_body(),
            body_timeout: secs::<5>(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    url: String,
    host: Option<String>,
    #[serde(default)]
    basic_encoding: FileEncoding,
    #[serde(default = "secs::<2>", deserialize_with = "duration")]
    connect_timeout: Duration,
    #[serde(default = "secs::<5>", deserialize_with = "duration")]
    total_connection_timeout: Duration,
    #[serde(default = "secs::<15>", deserialize_with = "duration")]
    read_timeout: Duration,
    #[serde(default = "secs::<15>", deserialize_with = "duration")]
    write_timeout: Duration,
    #[serde(default = "secs::<60>", deserialize_with = "duration")]
    idle_timeout: Duration,
    #[serde(default = "secs::<30>", deserialize_with = "duration")]
    resolve_interval: Duration,
    /// PEM file of the CAs trusted for this upstream (default: the system's roots).
    ca_file: Option<String>,
    #[serde(default = "yes")]
    tls_verify: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileEncoding {
    #[default]
    Rfc6749,
    Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    name: Option<String>,
    path: Option<String>,
    path_prefix: Option<String>,
    mode: FileMode,
    #[serde(default)]
    validate: bool,
    upstream: Option<String>,
    /// Token modes: which client-authenticated endpoint the route fronts.
    endpoint: Option<String>,
    /// Discovery mode: the gateway's public base URL for the endpoint URLs.
    public_base_url: Option<String>,
    /// Discovery mode: the client authentication methods to advertise.
    auth_methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileMode {
    Passthrough,
    ToBasic,
    ToPost,
    Validate,
    Discovery,
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8080".to_string()]
}
fn default_threads() -> usize {
    1
}
fn default_realm() -> String {
    "tokengate".to_string()
}
fn default_max_body() -> usize {
    16 * 1024
}
fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

/// Durations are written as `"5s"`, `"250ms"`, `"1m 30s"` (humantime).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"5s\" or \"250ms\""
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// The internal model.

/// Everything the gateway needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub token: TokenSettings,
    pub upstreams: Vec<UpstreamSettings>,
    pub default_upstream: usize,
    pub routes: Vec<RouteSettings>,
    /// Client records for validating routes; required when a route validates.
    pub clients: Option<ClientsSettings>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/clients/...`), if configured.
    pub admin: Option<AdminSettings>,
    pub log_format: LogFormat,
    pub log_client_id: ClientIdLogging,
    /// Environment IDs with their own metrics label value (envIDs come from requests: only listed
    /// ones become label values, so the label space stays bounded).
    pub metrics_env_ids: Vec<String>,
}

#[derive(Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// When set, every admin path but `/healthz` requires `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
}

/// Never prints the token.
impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where client records come from.
#[derive(Debug, Clone)]
pub enum ClientSource {
    /// A TOML or JSON file (a relative path is relative to the configuration file).
    File(PathBuf),
    /// An HTTP registry: `GET {base_path}/{envID}/clients/{client_id}` on `upstream`.
    Registry {
        upstream: UpstreamSettings,
        base_path: String,
    },
}

#[derive(Debug, Clone)]
pub struct ClientsSettings {
    pub source: ClientSource,
    pub reload_interval: Duration,
    pub registry_timeout: Duration,
    pub cache: crate::clients::cache::CacheConfig,
    pub verified_ttl: Duration,
    pub verified_capacity: usize,
    pub allow_plaintext: bool,
    pub lockout: crate::lockout::LockoutConfig,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub keepalive_timeout: Duration,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub realm: String,
    /// HTTPS listeners: addresses, certificate chain and key (PEM files).
    pub tls: Option<TlsListen>,
}

#[derive(Debug, Clone)]
pub struct TlsListen {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct TokenSettings {
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub tls: bool,
    /// Host name or IP literal to connect to (also the TLS SNI).
    pub host: String,
    pub port: u16,
    /// The `Host` header sent upstream.
    pub host_header: String,
    pub basic_encoding: BasicEncoding,
    pub connect_timeout: Duration,
    pub total_connection_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub resolve_interval: Duration,
    /// DER certificates of the CAs trusted for this upstream; `None`: the system's roots.
    pub ca: Option<std::sync::Arc<Vec<Vec<u8>>>>,
    /// Certificate and host name verification (on unless explicitly turned off).
    pub tls_verify: bool,
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMode {
    /// Proxied untouched, streamed.
    Passthrough,
    /// Client-authenticated endpoint handling (token, introspection, revocation, PAR, device).
    Token(TokenMode),
    /// Requests proxied untouched; a successful metadata answer is rewritten.
    Discovery(Arc<DiscoveryRewrite>),
}

/// What a token route does: check the request, optionally validate it against the client
/// records, and convert (`None`: to the client record's `upstream_method`, or left as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenMode {
    pub conversion: Option<Conversion>,
    pub validate: bool,
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub name: String,
    pub matcher: PathMatcher,
    pub mode: RouteMode,
    pub upstream: usize,
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
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        lower(file, &Base(base))
    }
}

/// Resolves relative paths of a configuration file.
struct Base<'a>(Option<&'a Path>);

impl Base<'_> {
    fn path(&self, p: &str) -> PathBuf {
        match self.0 {
            Some(dir) if Path::new(p).is_relative() => dir.join(p),
            _ => PathBuf::from(p),
        }
    }
}

/// Reads the certificates of a PEM file (DER, each checked to parse as X.509).
fn load_certs(key: &str, path: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            invalid(
                key,
                format!("{}: not PEM certificates: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("{}: no certificate found", path.display()),
        ));
    }
    for der in &certs {
        x509_parser::parse_x509_certificate(der).map_err(|_| {
            invalid(
                key,
                format!("{}: a certificate does not parse", path.display()),
            )
        })?;
    }
    Ok(certs)
}

fn lower(file: FileConfig, base: &Base<'_>) -> Result<Settings, ConfigError> {
    let server = lower_server(file.server, base)?;
    let token = lower_token(file.token)?;

    if file.upstreams.is_empty() {
        return Err(invalid("upstreams", "at least one upstream is required"));
    }
    let mut upstreams = Vec::with_capacity(file.upstreams.len());
    for (name, up) in file.upstreams {
        upstreams.push(lower_upstream(name, up, base)?);
    }
    let find_upstream = |key: String, name: &str| {
        upstreams
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| {
                let known: Vec<_> = upstreams.iter().map(|u| u.name.as_str()).collect();
                invalid(
                    key,
                    format!("no upstream named {name:?} (known: {})", known.join(", ")),
                )
            })
    };
    let default_upstream = find_upstream("default_upstream".into(), &file.default_upstream)?;

    let mut routes = Vec::with_capacity(file.routes.len());
    for (i, r) in file.routes.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        let matcher = match (r.path, r.path_prefix) {
            (Some(p), None) => {
                PathMatcher::pattern(&p).map_err(|m| invalid(format!("{key}.path"), m))?
            }
            (None, Some(p)) => {
                PathMatcher::prefix(&p).map_err(|m| invalid(format!("{key}.path_prefix"), m))?
            }
            _ => {
                return Err(invalid(
                    key,
                    "set exactly one of `path` (e.g. \"/{env_id}/as/token\") or `path_prefix`",
                ))
            }
        };
        let upstream = match &r.upstream {
            Some(name) => find_upstream(format!("{key}.upstream"), name)?,
            None => default_upstream,
        };
        let validate = r.validate;
        let token_route = matches!(
            r.mode,
            FileMode::ToBasic | FileMode::ToPost | FileMode::Validate
        );
        if validate && !token_route {
            return Err(invalid(
                format!("{key}.validate"),
                "only applies with mode \"to_basic\" or \"to_post\" (mode = \"validate\" validates anyway)",
            ));
        }
        if r.endpoint.is_some() && !token_route {
            return Err(invalid(
                format!("{key}.endpoint"),
                "only applies with mode \"to_basic\", \"to_post\" or \"validate\"",
            ));
        }
        let discovery = matches!(r.mode, FileMode::Discovery);
        for (set, name) in [
            (r.public_base_url.is_some(), "public_base_url"),
            (r.auth_methods.is_some(), "auth_methods"),
        ] {
            if set && !discovery {
                return Err(invalid(
                    format!("{key}.{name}"),
                    "only applies with mode = \"discovery\"",
                ));
            }
        }
        let endpoint = match &r.endpoint {
            None => Endpoint::Token,
            Some(e) => Endpoint::parse(e).ok_or_else(|| {
                let known: Vec<_> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
                invalid(
                    format!("{key}.endpoint"),
                    format!("unknown endpoint {e:?} (one of: {})", known.join(", ")),
                )
            })?,
        };
        let token = |conversion, validate| {
            RouteMode::Token(TokenMode {
                conversion,
                validate,
                endpoint,
            })
        };
        let mode = match r.mode {
            FileMode::Passthrough => RouteMode::Passthrough,
            FileMode::ToBasic => token(Some(Conversion::ToBasic), validate),
            FileMode::ToPost => token(Some(Conversion::ToPost), validate),
            FileMode::Validate => token(None, true),
            FileMode::Discovery => RouteMode::Discovery(Arc::new(DiscoveryRewrite {
                public_base_url: r
                    .public_base_url
                    .as_deref()
                    .map(|u| lower_public_base_url(&format!("{key}.public_base_url"), u))
                    .transpose()?,
                auth_methods: r
                    .auth_methods
                    .as_deref()
                    .map(|m| lower_advertised_methods(&format!("{key}.auth_methods"), m))
                    .transpose()?,
            })),
        };
        if matches!(mode, RouteMode::Token(TokenMode { validate: true, .. }))
            && file.clients.is_none()
        {
            return Err(invalid(
                format!("{key}.mode"),
                "validating needs client records: add a [clients] section",
            ));
        }
        routes.push(RouteSettings {
            name: r.name.unwrap_or_else(|| format!("route{i}")),
            matcher,
            mode,
            upstream,
        });
    }
    if file.lockout.is_some() && file.clients.is_none() {
        return Err(invalid("lockout", "only applies with a [clients] section"));
    }
    let clients = match file.clients {
        Some(c) => Some(lower_clients(c, file.lockout.unwrap_or_default(), base)?),
        None => None,
    };
    let admin = match file.admin {
        Some(a) => Some(lower_admin(a)?),
        None => None,
    };
    if admin
        .as_ref()
        .is_some_and(|a| server.listen.contains(&a.listen))
    {
        return Err(invalid("admin.listen", "must differ from server.listen"));
    }
    Ok(Settings {
        server,
        token,
        upstreams,
        default_upstream,
        routes,
        clients,
        admin,
        log_format: file.log.format,
        log_client_id: file.log.client_id,
        metrics_env_ids: file.metrics.env_ids,
    })
}

/// A discovery route's public base URL: `http(s)://host[:port][/path]`, kept without a trailing
/// `/`.
fn lower_public_base_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(key, format!("{url:?} must start with https:// or http://")))?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    if host_end == 0
        || url.contains(['?', '#', '@'])
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            key,
            format!("{url:?} must be scheme://host[:port][/path], without query, fragment or user"),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A discovery route's advertised methods: RFC 8414 names, PingOne's capitals accepted; written
/// out in RFC form.
fn lower_advertised_methods(key: &str, methods: &[String]) -> Result<Vec<String>, ConfigError> {
    const KNOWN: [&str; 7] = [
        "client_secret_basic",
        "client_secret_post",
        "client_secret_jwt",
        "private_key_jwt",
        "tls_client_auth",
        "self_signed_tls_client_auth",
        "none",
    ];
    if methods.is_empty() {
        return Err(invalid(key, "list at least one method"));
    }
    let mut out: Vec<String> = Vec::with_capacity(methods.len());
    for m in methods {
        let lower = m.to_ascii_lowercase();
        if !KNOWN.contains(&lower.as_str()) || (m != &lower && m != &m.to_ascii_uppercase()) {
            return Err(invalid(
                key,
                format!("unknown method {m:?} (one of: {})", KNOWN.join(", ")),
            ));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

fn lower_clients(
    c: FileClients,
    l: FileLockout,
    base: &Base<'_>,
) -> Result<ClientsSettings, ConfigError> {
    let source = match (c.file, c.registry_url) {
        (Some(f), None) if !f.is_empty() => ClientSource::File(base.path(&f)),
        (None, Some(url)) => {
            let (upstream, base_path) = lower_url("clients.registry_url", "registry", &url, true)?;
            ClientSource::Registry {
                upstream: with_timeouts(upstream, c.registry_timeout),
                base_path,
            }
        }
        _ => {
            return Err(invalid(
                "clients",
                "set exactly one of `file` (a client file) or `registry_url` (an HTTP registry)",
            ))
        }
    };
    all_positive(
        "clients",
        &[
            ("reload_interval", c.reload_interval),
            ("registry_timeout", c.registry_timeout),
            ("cache_ttl", c.cache_ttl),
            ("cache_negative_ttl", c.cache_negative_ttl),
            ("verified_ttl", c.verified_ttl),
        ],
    )?;
    for (field, n) in [
        ("cache_capacity", c.cache_capacity),
        ("verified_capacity", c.verified_capacity),
    ] {
        if n == 0 {
            return Err(invalid(
                format!("clients.{field}"),
                "must be greater than zero",
            ));
        }
    }
    if l.window.is_zero() {
        return Err(invalid("lockout.window", "must be greater than zero"));
    }
    Ok(ClientsSettings {
        source,
        reload_interval: c.reload_interval,
        registry_timeout: c.registry_timeout,
        cache: crate::clients::cache::CacheConfig {
            ttl: c.cache_ttl,
            negative_ttl: c.cache_negative_ttl,
            max_stale: c.cache_max_stale,
            capacity: c.cache_capacity,
        },
        verified_ttl: c.verified_ttl,
        verified_capacity: c.verified_capacity,
        allow_plaintext: c.allow_plaintext,
        lockout: crate::lockout::LockoutConfig {
            window: l.window,
            max_failures_per_client: l.max_failures_per_client,
            max_failures_per_ip: l.max_failures_per_ip,
        },
    })
}

fn lower_admin(a: FileAdmin) -> Result<AdminSettings, ConfigError> {
    let listen = a.listen.parse::<SocketAddr>().map_err(|_| {
        invalid(
            "admin.listen",
            format!(
                "{:?} is not an IP:port address (e.g. \"127.0.0.1:9901\")",
                a.listen
            ),
        )
    })?;
    // `env:NAME` keeps the token out of the file.
    let bearer_token = match a.bearer_token {
        None => None,
        Some(t) => {
            let token = match t.strip_prefix("env:") {
                Some(var) => std::env::var(var).map_err(|_| {
                    invalid(
                        "admin.bearer_token",
                        format!("environment variable {var} is not set"),
                    )
                })?,
                None => t,
            };
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "admin.bearer_token",
                    "must be at least 16 characters, without spaces",
                ));
            }
            Some(token)
        }
    };
    Ok(AdminSettings {
        listen,
        bearer_token,
    })
}

/// Durations that must be greater than zero, named `{section}.{field}` when one is not.
fn all_positive(section: &str, fields: &[(&str, Duration)]) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, d)| d.is_zero()) {
        Some((field, _)) => Err(invalid(
            format!("{section}.{field}"),
            "must be greater than zero",
        )),
        None => Ok(()),
    }
}

/// Registry calls get the registry timeout for every phase.
fn with_timeouts(mut u: UpstreamSettings, t: Duration) -> UpstreamSettings {
    u.connect_timeout = t;
    u.total_connection_timeout = t;
    u.read_timeout = t;
    u.write_timeout = t;
    u
}

/// A list of `IP:port` addresses.
fn socket_addrs(key: &str, list: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    list.iter()
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    key,
                    format!("{a:?} is not an IP:port address (e.g. \"127.0.0.1:8080\")"),
                )
            })
        })
        .collect()
}

fn lower_server(s: FileServer, base: &Base<'_>) -> Result<ServerSettings, ConfigError> {
    if s.listen.is_empty() {
        return Err(invalid("server.listen", "at least one address is required"));
    }
    let listen = socket_addrs("server.listen", &s.listen)?;
    if !(1..=256).contains(&s.threads) {
        return Err(invalid("server.threads", "must be between 1 and 256"));
    }
    if s.realm.contains(['"', '\\']) || s.realm.chars().any(char::is_control) {
        return Err(invalid(
            "server.realm",
            "must not contain quotes, backslashes or control characters",
        ));
    }
    let tls = match (s.tls_listen.is_empty(), s.tls_cert, s.tls_key) {
        (true, None, None) => None,
        (false, Some(cert), Some(key)) => {
            let listen_tls = socket_addrs("server.tls_listen", &s.tls_listen)?;
            if listen_tls.iter().any(|a| listen.contains(a)) {
                return Err(invalid(
                    "server.tls_listen",
                    "must differ from server.listen",
                ));
            }
            let cert = base.path(&cert);
            load_certs("server.tls_cert", &cert)?;
            let key = base.path(&key);
            let pem = std::fs::read(&key).map_err(|e| {
                invalid(
                    "server.tls_key",
                    format!("cannot read {}: {e}", key.display()),
                )
            })?;
            match rustls_pemfile::private_key(&mut pem.as_slice()) {
                Ok(Some(_)) => {}
                _ => {
                    return Err(invalid(
                        "server.tls_key",
                        format!("{}: no PEM private key found", key.display()),
                    ))
                }
            }
            Some(TlsListen {
                listen: listen_tls,
                cert,
                key,
            })
        }
        _ => {
            return Err(invalid(
                "server.tls_listen",
                "tls_listen, tls_cert and tls_key go together",
            ))
        }
    };
    Ok(ServerSettings {
        tls,
        listen,
        threads: s.threads,
        keepalive_timeout: s.keepalive_timeout,
        grace_period: s.grace_period,
        shutdown_timeout: s.shutdown_timeout,
        realm: s.realm,
    })
}

fn lower_token(t: FileToken) -> Result<TokenSettings, ConfigError> {
    if t.max_body_bytes == 0 || t.max_body_bytes > MAX_BODY_CAP {
        return Err(invalid(
            "token.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_CAP}"),
        ));
    }
    if t.body_timeout.is_zero() {
        return Err(invalid("token.body_timeout", "must be greater than zero"));
    }
    Ok(TokenSettings {
        max_body_bytes: t.max_body_bytes,
        body_timeout: t.body_timeout,
    })
}

/// Parses an upstream URL into settings with default timeouts, and the URL's path (only allowed
/// with `allow_path`).
fn lower_url(
    key: &str,
    name: &str,
    raw: &str,
    allow_path: bool,
) -> Result<(UpstreamSettings, String), ConfigError> {
    let url =
        url::Url::parse(raw).map_err(|e| invalid(key, format!("{raw:?} is not a URL: {e}")))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return Err(invalid(
                key,
                format!("scheme {other:?} is not supported; use http or https"),
            ))
        }
    };
    if (!allow_path && url.path() != "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            key,
            "must be scheme://host[:port] only; requests keep their own path",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(key, "must not contain credentials"));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => return Err(invalid(key, "has no host")),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let host_header = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or(&host)),
        None => url.host_str().unwrap_or(&host).to_string(),
    };
    let settings = UpstreamSettings {
        name: name.to_string(),
        tls,
        host,
        port,
        host_header,
        basic_encoding: BasicEncoding::Rfc6749,
        connect_timeout: secs::<2>(),
        total_connection_timeout: secs::<5>(),
        read_timeout: secs::<15>(),
        write_timeout: secs::<15>(),
        idle_timeout: secs::<60>(),
        resolve_interval: secs::<30>(),
        ca: None,
        tls_verify: true,
    };
    Ok((settings, url.path().trim_end_matches('/').to_string()))
}

fn lower_upstream(
    name: String,
    u: FileUpstream,
    base: &Base<'_>,
) -> Result<UpstreamSettings, ConfigError> {
    let key = format!("upstreams.{name}");
    let (url_settings, _) = lower_url(&format!("{key}.url"), &name, &u.url, false)?;
    if !url_settings.tls && (u.ca_file.is_some() || !u.tls_verify) {
        return Err(invalid(
            format!("{key}.ca_file"),
            "ca_file and tls_verify apply to https upstreams only",
        ));
    }
    let ca = match &u.ca_file {
        Some(f) => Some(std::sync::Arc::new(load_certs(
            &format!("{key}.ca_file"),
            &base.path(f),
        )?)),
        None => None,
    };
    let host_header = match u.host {
        Some(h) if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            return Err(invalid(
                format!("{key}.host"),
                "must be a non-empty host name",
            ))
        }
        Some(h) => h,
        None => url_settings.host_header.clone(),
    };
    all_positive(
        &key,
        &[
            ("connect_timeout", u.connect_timeout),
            ("total_connection_timeout", u.total_connection_timeout),
            ("read_timeout", u.read_timeout),
            ("write_timeout", u.write_timeout),
            ("idle_timeout", u.idle_timeout),
            ("resolve_interval", u.resolve_interval),
        ],
    )?;
    Ok(UpstreamSettings {
        host_header,
        basic_encoding: match u.basic_encoding {
            FileEncoding::Rfc6749 => BasicEncoding::Rfc6749,
            FileEncoding::Raw => BasicEncoding::Raw,
        },
        connect_timeout: u.connect_timeout,
        total_connection_timeout: u.total_connection_timeout,
        read_timeout: u.read_timeout,
        write_timeout: u.write_timeout,
        idle_timeout: u.idle_timeout,
        resolve_interval: u.resolve_interval,
        ca,
        tls_verify: u.tls_verify,
        ..url_settings
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
                    "client_secret_post".into(),
                    "client_secret_basic".into()
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
}
