//! The validated internal model the gateway runs on. Not the public API: the file format is.
//!
//! Every default is written here once (the `Default` impls and the `new` constructors); the
//! lowering fills what the file leaves out from them. The model holds plain values: the parts of
//! the gateway that use a section turn it into their own types.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::client_addr::{ForwardedHeader, ForwardingPolicy};

use crate::protocol::{BasicEncoding, Conversion, DiscoveryRewrite, Endpoint, SecretString};
use crate::routing::PathMatcher;

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
    /// The gateway's signing keys for `private_key_jwt` upstreams.
    pub signing_keys: Vec<SigningKeySettings>,
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
// One per configuration: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// How often a client file is checked for changes.
    pub reload_interval: Duration,
    /// Bound of every registry call.
    pub registry_timeout: Duration,
    /// Registry records: fresh lifetime of a found record.
    pub cache_ttl: Duration,
    /// Registry records: lifetime of an "unknown client" answer.
    pub cache_negative_ttl: Duration,
    /// Registry records: how long past `cache_ttl` a record is served while the registry fails.
    pub cache_max_stale: Duration,
    /// Registry records: entries held at most (found and unknown).
    pub cache_capacity: usize,
    /// How long a successful expensive (argon2id) verification is remembered.
    pub verified_ttl: Duration,
    pub verified_capacity: usize,
    /// Whether a client file's records may hold `plain:` secrets (registry records never may).
    pub allow_plaintext: bool,
    /// Expensive (argon2id) verifications waiting or running at most; past it, 503.
    pub max_pending_verifications: usize,
    /// Registry fetches running at once at most.
    pub registry_max_inflight: usize,
    pub lockout: LockoutSettings,
}

impl ClientsSettings {
    /// Records from `source`, everything else at its default.
    pub fn new(source: ClientSource) -> ClientsSettings {
        ClientsSettings {
            source,
            reload_interval: Duration::from_secs(2),
            registry_timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(60),
            cache_negative_ttl: Duration::from_secs(10),
            cache_max_stale: Duration::from_secs(600),
            cache_capacity: 100_000,
            verified_ttl: Duration::from_secs(300),
            verified_capacity: 100_000,
            allow_plaintext: false,
            max_pending_verifications: 64,
            registry_max_inflight: 64,
            lockout: LockoutSettings::default(),
        }
    }
}

/// Brute-force lockout thresholds (`[lockout]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutSettings {
    pub window: Duration,
    /// `0` disables the per-client limit.
    pub max_failures_per_client: u32,
    /// `0` disables the per-address limit.
    pub max_failures_per_ip: u32,
    /// Where replicas share their counters; `None`: each process counts on its own.
    pub store: Option<LockoutStore>,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        LockoutSettings {
            window: Duration::from_secs(60),
            max_failures_per_client: 10,
            max_failures_per_ip: 100,
            store: None,
        }
    }
}

/// A Redis store shared by replicas for their lockout counters (`[lockout] store`).
#[derive(Clone, PartialEq, Eq)]
pub struct LockoutStore {
    /// `redis://` or `rediss://` URL, as written or read from the environment (it may hold a
    /// password: never logged; see [`LockoutStore::display`]).
    pub url: SecretString,
    /// The URL without user and password, for logs.
    pub display: String,
    /// From `store_password = "env:NAME"`; replaces the URL's.
    pub password: Option<SecretString>,
    /// PEM roots for `rediss://` (`store_ca_file`) instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Every key is `{key_prefix}:…`.
    pub key_prefix: String,
    /// Bounds connecting and each call.
    pub timeout: Duration,
    /// How long the store is left alone after repeated failures.
    pub cooldown: Duration,
    pub on_error: StoreFallback,
}

/// What validation does while the lockout store cannot answer (`on_store_error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFallback {
    /// Count in the process's own counters.
    #[default]
    Local,
    /// Answer 503 to requests that need a verification.
    Closed,
}

impl LockoutStore {
    pub const DEFAULT_KEY_PREFIX: &'static str = "tokengate";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);
}

impl fmt::Debug for LockoutStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockoutStore")
            .field("url", &self.display)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("cooldown", &self.cooldown)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub keepalive_timeout: Duration,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long `/readyz` answers 503 (and answers close their connection) while
    /// the listeners keep accepting, before the grace period; zero stops at once.
    pub drain_delay: Duration,
    pub realm: String,
    /// HTTPS listeners: addresses, certificate chain and key (PEM files).
    pub tls: Option<TlsListen>,
    /// Refuse paths that reach a token or discovery route only in another spelling (case,
    /// `;` parameters, an encoded `/` or a `\\`) instead of forwarding them.
    pub strict_paths: bool,
    /// Which proxies name the client (`trusted_proxies`, `forwarded_header`), and what the
    /// upstream receives of forwarding fields (`forward_client_address`, `keep_forwarding_headers`):
    /// see [`crate::client_addr`].
    pub forwarding: ForwardingPolicy,
    /// Connections to the plain (`listen`) listeners start with a PROXY protocol header (v1 or
    /// v2) naming the client; only trusted proxies may send them.
    pub proxy_protocol: bool,
    /// A request head (and a TLS handshake) must be complete within this, however slowly it
    /// comes.
    pub header_timeout: Duration,
    /// The most bytes a request head may have (request line, fields, empty lines before them);
    /// a larger one is answered 431 and its connection closed.
    pub max_header_bytes: usize,
    /// Connections held at most; more are closed at once.
    pub max_connections: usize,
    /// Connections from one address (IPv6: one /64) at most; trusted proxies are exempt.
    pub max_connections_per_ip: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            threads: 1,
            keepalive_timeout: Duration::from_secs(60),
            grace_period: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            drain_delay: Duration::from_secs(5),
            realm: "tokengate".to_string(),
            tls: None,
            strict_paths: true,
            forwarding: ForwardingPolicy {
                trusted: Vec::new(),
                header: ForwardedHeader::XForwardedFor,
                write: true,
                keep: false,
            },
            proxy_protocol: false,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 256,
        }
    }
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

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            max_body_bytes: 16 * 1024,
            body_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub tls: bool,
    /// Host name or IP literal to connect to (also the TLS SNI).
    pub host: String,
    pub port: u16,
    /// The addresses to connect to, in place of resolving `host` (still the TLS name).
    pub addresses: Vec<SocketAddr>,
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
    pub ca: Option<Arc<Vec<Vec<u8>>>>,
    /// Certificate and host name verification (on unless explicitly turned off).
    pub tls_verify: bool,
}

impl UpstreamSettings {
    /// An upstream at `host:port`, everything else at its default.
    pub fn new(name: &str, tls: bool, host: String, port: u16, host_header: String) -> Self {
        UpstreamSettings {
            name: name.to_string(),
            tls,
            host,
            port,
            addresses: Vec::new(),
            host_header,
            basic_encoding: BasicEncoding::Rfc6749,
            connect_timeout: Duration::from_secs(2),
            total_connection_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            resolve_interval: Duration::from_secs(30),
            ca: None,
            tls_verify: true,
        }
    }
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
    /// Answered by the gateway: the public keys of its signing keys, as a JWKS.
    Jwks,
}

/// What a token route does: check the request, optionally validate it against the client
/// records (or only read them, `per_client`), and convert: to the client record's
/// `upstream_method` where it names one, else to `conversion` (`None`: left as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMode {
    pub conversion: Option<Conversion>,
    pub validate: bool,
    /// The client records decide each client's upstream method, without its secret being checked.
    pub per_client: bool,
    pub endpoint: Endpoint,
    /// The `aud` of the client assertions this route makes (`{env_id}` replaced); `None`: the URL
    /// of the requested endpoint at the upstream.
    pub assertion_audience: Option<Arc<str>>,
    pub assertion_lifetime: Duration,
}

impl Default for TokenMode {
    fn default() -> Self {
        TokenMode {
            conversion: None,
            validate: false,
            per_client: false,
            endpoint: Endpoint::Token,
            assertion_audience: None,
            assertion_lifetime: Duration::from_secs(60),
        }
    }
}

/// Where a signing key is in its rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Published in the JWKS, not signing yet (so servers that cache the JWKS learn it first).
    Next,
    /// Signs (and is published).
    #[default]
    Active,
    /// Published, no longer signing (until servers have let go of assertions made with it).
    Retired,
}

/// One of the gateway's signing keys (`[[signing_keys]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeySettings {
    pub kid: String,
    /// A PEM private key file, readable only by its owner.
    pub file: PathBuf,
    pub status: KeyStatus,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub name: String,
    pub matcher: PathMatcher,
    pub mode: RouteMode,
    pub upstream: usize,
}
