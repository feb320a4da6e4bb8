//! The configuration file's format: what operators write, as serde reads it. Checked and turned
//! into [`super::Settings`] by [`super::lower`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::settings::{ClientIdLogging, LogFormat};

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
    #[serde(default)]
    pub(super) format: LogFormat,
    #[serde(default)]
    pub(super) client_id: ClientIdLogging,
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
    #[serde(default = "secs::<2>", deserialize_with = "duration")]
    pub(super) reload_interval: Duration,
    #[serde(default = "secs::<2>", deserialize_with = "duration")]
    pub(super) registry_timeout: Duration,
    #[serde(default = "secs::<60>", deserialize_with = "duration")]
    pub(super) cache_ttl: Duration,
    #[serde(default = "secs::<10>", deserialize_with = "duration")]
    pub(super) cache_negative_ttl: Duration,
    #[serde(default = "secs::<600>", deserialize_with = "duration")]
    pub(super) cache_max_stale: Duration,
    #[serde(default = "default_capacity")]
    pub(super) cache_capacity: usize,
    #[serde(default = "secs::<300>", deserialize_with = "duration")]
    pub(super) verified_ttl: Duration,
    #[serde(default = "default_capacity")]
    pub(super) verified_capacity: usize,
    #[serde(default)]
    pub(super) allow_plaintext: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLockout {
    #[serde(default = "secs::<60>", deserialize_with = "duration")]
    pub(super) window: Duration,
    #[serde(default = "default_per_client")]
    pub(super) max_failures_per_client: u32,
    #[serde(default = "default_per_ip")]
    pub(super) max_failures_per_ip: u32,
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

pub(super) fn default_capacity() -> usize {
    100_000
}
pub(super) fn default_per_client() -> u32 {
    10
}
pub(super) fn default_per_ip() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    #[serde(default = "default_listen")]
    pub(super) listen: Vec<String>,
    #[serde(default = "default_threads")]
    pub(super) threads: usize,
    #[serde(default = "secs::<60>", deserialize_with = "duration")]
    pub(super) keepalive_timeout: Duration,
    #[serde(default = "secs::<5>", deserialize_with = "duration")]
    pub(super) grace_period: Duration,
    #[serde(default = "secs::<5>", deserialize_with = "duration")]
    pub(super) shutdown_timeout: Duration,
    #[serde(default = "default_realm")]
    pub(super) realm: String,
    #[serde(default)]
    pub(super) tls_listen: Vec<String>,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
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
pub(super) struct FileToken {
    #[serde(default = "default_max_body")]
    pub(super) max_body_bytes: usize,
    #[serde(default = "secs::<5>", deserialize_with = "duration")]
    pub(super) body_timeout: Duration,
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
pub(super) struct FileUpstream {
    pub(super) url: String,
    pub(super) host: Option<String>,
    #[serde(default)]
    pub(super) basic_encoding: FileEncoding,
    #[serde(default = "secs::<2>", deserialize_with = "duration")]
    pub(super) connect_timeout: Duration,
    #[serde(default = "secs::<5>", deserialize_with = "duration")]
    pub(super) total_connection_timeout: Duration,
    #[serde(default = "secs::<15>", deserialize_with = "duration")]
    pub(super) read_timeout: Duration,
    #[serde(default = "secs::<15>", deserialize_with = "duration")]
    pub(super) write_timeout: Duration,
    #[serde(default = "secs::<60>", deserialize_with = "duration")]
    pub(super) idle_timeout: Duration,
    #[serde(default = "secs::<30>", deserialize_with = "duration")]
    pub(super) resolve_interval: Duration,
    /// PEM file of the CAs trusted for this upstream (default: the system's roots).
    pub(super) ca_file: Option<String>,
    #[serde(default = "yes")]
    pub(super) tls_verify: bool,
}

pub(super) fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileEncoding {
    #[default]
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
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileMode {
    Passthrough,
    ToBasic,
    ToPost,
    Validate,
    Discovery,
}

pub(super) fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8080".to_string()]
}
pub(super) fn default_threads() -> usize {
    1
}
pub(super) fn default_realm() -> String {
    "tokengate".to_string()
}
pub(super) fn default_max_body() -> usize {
    16 * 1024
}
pub(super) fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

/// Durations are written as `"5s"`, `"250ms"`, `"1m 30s"` (humantime).
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"5s\" or \"250ms\""
        ))
    })
}
