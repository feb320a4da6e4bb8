//! The configuration file's format: what operators write, as serde reads it. The public API.
//!
//! Only the shape lives here: a key left out is `None` (or empty), and [`super::lower`] takes its
//! default from the model ([`super::settings`]), the one place where defaults are written.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::settings::{ClientIdLogging, KeyStatus, LogFormat, StoreFallback};
use crate::client_addr::ForwardedHeader;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: FileServer,
    #[serde(default)]
    pub(super) token: FileToken,
    pub(super) default_upstream: String,
    pub(super) upstreams: BTreeMap<String, FileUpstream>,
    #[serde(default)]
    pub(super) routes: Vec<FileRoute>,
    pub(super) clients: Option<FileClients>,
    pub(super) lockout: Option<FileLockout>,
    pub(super) admin: Option<FileAdmin>,
    #[serde(default)]
    pub(super) log: FileLog,
    #[serde(default)]
    pub(super) metrics: FileMetrics,
    #[serde(default)]
    pub(super) signing_keys: Vec<FileSigningKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSigningKey {
    pub(super) kid: String,
    pub(super) file: String,
    pub(super) status: Option<KeyStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMetrics {
    /// Environment IDs that get their own `env` label value; every other is `other`.
    #[serde(default)]
    pub(super) env_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLog {
    pub(super) format: Option<LogFormat>,
    pub(super) client_id: Option<ClientIdLogging>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdmin {
    pub(super) listen: String,
    pub(super) bearer_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileClients {
    pub(super) file: Option<String>,
    pub(super) registry_url: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) reload_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) registry_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) cache_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) cache_negative_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) cache_max_stale: Option<Duration>,
    pub(super) cache_capacity: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) verified_ttl: Option<Duration>,
    pub(super) verified_capacity: Option<usize>,
    pub(super) allow_plaintext: Option<bool>,
    pub(super) max_pending_verifications: Option<usize>,
    pub(super) registry_max_inflight: Option<usize>,
    pub(super) allow_insecure_registry: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLockout {
    #[serde(default, deserialize_with = "duration")]
    pub(super) window: Option<Duration>,
    pub(super) max_failures_per_client: Option<u32>,
    pub(super) max_failures_per_ip: Option<u32>,
    pub(super) store: Option<String>,
    pub(super) store_password: Option<String>,
    pub(super) store_ca_file: Option<String>,
    pub(super) store_key_prefix: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) store_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) store_cooldown: Option<Duration>,
    pub(super) on_store_error: Option<StoreFallback>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) listen: Option<Vec<String>>,
    pub(super) threads: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) keepalive_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) grace_period: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) shutdown_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) drain_delay: Option<Duration>,
    pub(super) realm: Option<String>,
    #[serde(default)]
    pub(super) tls_listen: Vec<String>,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
    pub(super) strict_paths: Option<bool>,
    pub(super) forward_client_address: Option<bool>,
    pub(super) forwarded_header: Option<ForwardedHeader>,
    pub(super) keep_forwarding_headers: Option<bool>,
    pub(super) proxy_protocol: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) header_timeout: Option<Duration>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_ip: Option<usize>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileToken {
    pub(super) max_body_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) body_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstream {
    pub(super) url: String,
    pub(super) addresses: Option<Vec<String>>,
    pub(super) host: Option<String>,
    pub(super) basic_encoding: Option<FileEncoding>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) total_connection_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) write_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) resolve_interval: Option<Duration>,
    /// PEM file of the CAs trusted for this upstream (default: the system's roots).
    pub(super) ca_file: Option<String>,
    pub(super) tls_verify: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileEncoding {
    Rfc6749,
    Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    pub(super) name: Option<String>,
    pub(super) path: Option<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) mode: FileMode,
    #[serde(default)]
    pub(super) validate: bool,
    pub(super) upstream: Option<String>,
    /// Token modes: which client-authenticated endpoint the route fronts.
    pub(super) endpoint: Option<String>,
    /// Discovery mode: the gateway's public base URL for the endpoint URLs.
    pub(super) public_base_url: Option<String>,
    /// Discovery mode: the client authentication methods to advertise.
    pub(super) auth_methods: Option<Vec<String>>,
    /// `per_client` mode: what a client without a record gets.
    pub(super) fallback: Option<FileFallback>,
    /// Token modes: the `aud` of client assertions (`{env_id}` is replaced).
    pub(super) assertion_audience: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) assertion_lifetime: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileFallback {
    AsSent,
    ToBasic,
    ToPost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileMode {
    Passthrough,
    ToBasic,
    ToPost,
    Validate,
    PerClient,
    Discovery,
    Jwks,
}

/// Durations are written as `"5s"`, `"250ms"`, `"1m 30s"` (humantime).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"5s\" or \"250ms\""
        ))
    })
}
