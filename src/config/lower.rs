//! Lowering: the file format checked key by key and turned into [`Settings`]. Reads the files and
//! environment variables the configuration names (certificates, `env:` tokens).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::file::*;
use super::routes::{find_upstream, lower_route, RouteTargets};
use super::settings::*;
use super::{invalid, ConfigError, MAX_BODY_CAP};
use crate::client_addr::ForwardingPolicy;
use crate::protocol::{BasicEncoding, SecretString};

/// Resolves relative paths of a configuration file.
pub(super) struct Base<'a>(pub(super) Option<&'a Path>);

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
    certs_in(key, path, &read_file(key, path)?)
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// The certificates of `pem`, read from `path` (DER, each checked to parse as X.509).
fn certs_in(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<Vec<u8>>, ConfigError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
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

pub(super) fn lower(file: FileConfig, base: &Base<'_>) -> Result<Settings, ConfigError> {
    let server = lower_server(file.server, base)?;
    let token = lower_token(file.token)?;

    if file.upstreams.is_empty() {
        return Err(invalid("upstreams", "at least one upstream is required"));
    }
    let mut upstreams = Vec::with_capacity(file.upstreams.len());
    for (name, up) in file.upstreams {
        upstreams.push(lower_upstream(name, up, base)?);
    }
    let default_upstream = find_upstream(&upstreams, "default_upstream", &file.default_upstream)?;

    let mut routes = Vec::with_capacity(file.routes.len());
    let targets = RouteTargets {
        upstreams: &upstreams,
        default_upstream,
        has_clients: file.clients.is_some(),
    };
    for (i, r) in file.routes.into_iter().enumerate() {
        routes.push(lower_route(i, r, &targets)?);
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
        log_format: file.log.format.unwrap_or_default(),
        log_client_id: file.log.client_id.unwrap_or_default(),
        metrics_env_ids: file.metrics.env_ids,
        signing_keys: lower_signing_keys(file.signing_keys, base)?,
    })
}

fn lower_clients(
    c: FileClients,
    l: FileLockout,
    base: &Base<'_>,
) -> Result<ClientsSettings, ConfigError> {
    let source = match (&c.file, &c.registry_url) {
        (Some(f), None) if !f.is_empty() => ClientSource::File(base.path(f)),
        (None, Some(url)) => {
            let (upstream, base_path) = lower_url("clients.registry_url", "registry", url, true)?;
            ClientSource::Registry {
                upstream,
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
    let d = ClientsSettings::new(source);
    let dl = LockoutSettings::default();
    let mut settings = ClientsSettings {
        reload_interval: c.reload_interval.unwrap_or(d.reload_interval),
        registry_timeout: c.registry_timeout.unwrap_or(d.registry_timeout),
        cache_ttl: c.cache_ttl.unwrap_or(d.cache_ttl),
        cache_negative_ttl: c.cache_negative_ttl.unwrap_or(d.cache_negative_ttl),
        cache_max_stale: c.cache_max_stale.unwrap_or(d.cache_max_stale),
        cache_capacity: c.cache_capacity.unwrap_or(d.cache_capacity),
        verified_ttl: c.verified_ttl.unwrap_or(d.verified_ttl),
        verified_capacity: c.verified_capacity.unwrap_or(d.verified_capacity),
        allow_plaintext: c.allow_plaintext.unwrap_or(d.allow_plaintext),
        max_pending_verifications: c
            .max_pending_verifications
            .unwrap_or(d.max_pending_verifications),
        registry_max_inflight: c.registry_max_inflight.unwrap_or(d.registry_max_inflight),
        lockout: LockoutSettings {
            window: l.window.unwrap_or(dl.window),
            max_failures_per_client: l
                .max_failures_per_client
                .unwrap_or(dl.max_failures_per_client),
            max_failures_per_ip: l.max_failures_per_ip.unwrap_or(dl.max_failures_per_ip),
            store: lower_lockout_store(&l, base)?,
        },
        ..d
    };
    all_positive(
        "clients",
        &[
            ("reload_interval", settings.reload_interval),
            ("registry_timeout", settings.registry_timeout),
            ("cache_ttl", settings.cache_ttl),
            ("cache_negative_ttl", settings.cache_negative_ttl),
            ("verified_ttl", settings.verified_ttl),
        ],
    )?;
    for (field, n) in [
        ("cache_capacity", settings.cache_capacity),
        ("verified_capacity", settings.verified_capacity),
        (
            "max_pending_verifications",
            settings.max_pending_verifications,
        ),
        ("registry_max_inflight", settings.registry_max_inflight),
    ] {
        if n == 0 {
            return Err(invalid(
                format!("clients.{field}"),
                "must be greater than zero",
            ));
        }
    }
    if settings.lockout.window.is_zero() {
        return Err(invalid("lockout.window", "must be greater than zero"));
    }
    if let ClientSource::Registry { upstream: u, .. } = &settings.source {
        if !u.tls {
            if c.allow_insecure_registry != Some(true) {
                return Err(invalid(
                    "clients.registry_url",
                    "an http:// registry sends client records (secret hashes) in clear: use \
                     https://, or set clients.allow_insecure_registry = true",
                ));
            }
        } else if c.allow_insecure_registry.is_some() {
            return Err(invalid(
                "clients.allow_insecure_registry",
                "only applies to an http:// registry_url",
            ));
        }
    }
    // Registry calls get the registry timeout for every phase.
    if let ClientSource::Registry { upstream: u, .. } = &mut settings.source {
        let t = settings.registry_timeout;
        u.connect_timeout = t;
        u.total_connection_timeout = t;
        u.read_timeout = t;
        u.write_timeout = t;
    }
    Ok(settings)
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
                Some(var) => env_var("admin.bearer_token", var)?,
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
    if bearer_token.is_none() && !listen.ip().is_loopback() {
        return Err(invalid(
            "admin.listen",
            format!(
                "{listen} is not a loopback address: an admin listener reachable from the network \
                 needs admin.bearer_token (/healthz and /readyz stay open for probes)"
            ),
        ));
    }
    Ok(AdminSettings {
        listen,
        bearer_token,
    })
}

/// Durations that must be greater than zero, named `{section}.{field}` when one is not.
/// `[lockout] store` and its `store_*` companions: a `redis://` or `rediss://` URL (or `env:NAME`
/// holding one), a password only from the environment.
fn lower_lockout_store(
    l: &FileLockout,
    base: &Base<'_>,
) -> Result<Option<LockoutStore>, ConfigError> {
    let Some(store) = &l.store else {
        let companion = [
            ("store_password", l.store_password.is_some()),
            ("store_ca_file", l.store_ca_file.is_some()),
            ("store_key_prefix", l.store_key_prefix.is_some()),
            ("store_timeout", l.store_timeout.is_some()),
            ("store_cooldown", l.store_cooldown.is_some()),
            ("on_store_error", l.on_store_error.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        return match companion {
            Some((key, _)) => Err(invalid(
                format!("lockout.{key}"),
                "only applies with lockout.store",
            )),
            None => Ok(None),
        };
    };
    let (url, written) = match store.strip_prefix("env:") {
        Some(var) => (env_var("lockout.store", var)?, false),
        None => (store.clone(), true),
    };
    let url = SecretString::from(url);
    let parsed = url::Url::parse(url.as_str()).map_err(|_| {
        invalid(
            "lockout.store",
            "is not a URL (redis://host:port/db or rediss://host:port/db)",
        )
    })?;
    let tls = match parsed.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(invalid(
                "lockout.store",
                format!("the scheme must be redis or rediss, not {other:?}"),
            ))
        }
    };
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("lockout.store", "names no host (redis://host:port/db)"))?;
    let db = parsed.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(invalid(
            "lockout.store",
            "the path must be a database number (redis://host:port/0)",
        ));
    }
    if written && parsed.password().is_some() {
        return Err(invalid(
            "lockout.store",
            "holds a password: keep it out of the file with store_password = \"env:NAME\" (or \
             store = \"env:NAME\")",
        ));
    }
    let password = match &l.store_password {
        None => None,
        Some(p) => match p.strip_prefix("env:") {
            Some(var) => Some(SecretString::from(env_var("lockout.store_password", var)?)),
            None => {
                return Err(invalid(
                    "lockout.store_password",
                    "must be \"env:NAME\" (the password stays out of the file)",
                ))
            }
        },
    };
    let ca_pem = match &l.store_ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(invalid(
                "lockout.store_ca_file",
                "applies to a rediss:// store only",
            ))
        }
        Some(f) => {
            let (key, path) = ("lockout.store_ca_file", base.path(f));
            let pem = read_file(key, &path)?;
            certs_in(key, &path, &pem)?;
            Some(pem)
        }
    };
    let key_prefix = l
        .store_key_prefix
        .clone()
        .unwrap_or_else(|| LockoutStore::DEFAULT_KEY_PREFIX.to_string());
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || key_prefix
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "lockout.store_key_prefix",
            "must be 1 to 64 characters, without braces or spaces",
        ));
    }
    let timeout = l.store_timeout.unwrap_or(LockoutStore::DEFAULT_TIMEOUT);
    let cooldown = l.store_cooldown.unwrap_or(LockoutStore::DEFAULT_COOLDOWN);
    all_positive(
        "lockout",
        &[("store_timeout", timeout), ("store_cooldown", cooldown)],
    )?;
    if timeout > Duration::from_secs(5) {
        return Err(invalid(
            "lockout.store_timeout",
            "must be at most 5s (every validation that needs a verification waits for it)",
        ));
    }
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(Some(LockoutStore {
        display: format!(
            "{}://{host}{port}/{}",
            parsed.scheme(),
            if db.is_empty() { "0" } else { db }
        ),
        url,
        password,
        ca_pem,
        key_prefix,
        timeout,
        cooldown,
        on_error: l.on_store_error.unwrap_or_default(),
    }))
}

/// The value of environment variable `var`, which `key` names with `env:`.
fn env_var(key: &str, var: &str) -> Result<String, ConfigError> {
    std::env::var(var).map_err(|_| invalid(key, format!("environment variable {var} is not set")))
}

fn all_positive(section: &str, fields: &[(&str, Duration)]) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, d)| d.is_zero()) {
        Some((field, _)) => Err(invalid(
            format!("{section}.{field}"),
            "must be greater than zero",
        )),
        None => Ok(()),
    }
}

/// The gateway's signing keys: unique, plain key ids. The files are read (and their permissions
/// checked) when the runtime is built.
fn lower_signing_keys(
    keys: Vec<FileSigningKey>,
    base: &Base<'_>,
) -> Result<Vec<SigningKeySettings>, ConfigError> {
    let mut out: Vec<SigningKeySettings> = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        let key = format!("signing_keys[{i}]");
        if k.kid.is_empty()
            || !k
                .kid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(invalid(
                format!("{key}.kid"),
                "must be letters, digits, '-', '_', '.' or ':'",
            ));
        }
        if out.iter().any(|o| o.kid == k.kid) {
            return Err(invalid(format!("{key}.kid"), "is used twice"));
        }
        out.push(SigningKeySettings {
            kid: k.kid,
            file: base.path(&k.file),
            status: k.status.unwrap_or_default(),
        });
    }
    Ok(out)
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
    let d = ServerSettings::default();
    let listen = match &s.listen {
        Some(l) if l.is_empty() => {
            return Err(invalid("server.listen", "at least one address is required"))
        }
        Some(l) => socket_addrs("server.listen", l)?,
        None => d.listen,
    };
    let threads = s.threads.unwrap_or(d.threads);
    if !(1..=256).contains(&threads) {
        return Err(invalid("server.threads", "must be between 1 and 256"));
    }
    let realm = s.realm.unwrap_or(d.realm);
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
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
    let header_timeout = s.header_timeout.unwrap_or(d.header_timeout);
    all_positive(
        "server",
        &[
            ("header_timeout", header_timeout),
            (
                "keepalive_timeout",
                s.keepalive_timeout.unwrap_or(d.keepalive_timeout),
            ),
        ],
    )?;
    let max_header_bytes = s.max_header_bytes.unwrap_or(d.max_header_bytes);
    // Pingora itself reads heads up to 1 MiB; a request line and a few fields need 1 KiB.
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&max_header_bytes) {
        return Err(invalid(
            "server.max_header_bytes",
            format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
        ));
    }
    let max_connections = s.max_connections.unwrap_or(d.max_connections);
    let max_connections_per_ip = s.max_connections_per_ip.unwrap_or(d.max_connections_per_ip);
    for (field, n) in [
        ("max_connections", max_connections),
        ("max_connections_per_ip", max_connections_per_ip),
    ] {
        if n == 0 {
            return Err(invalid(
                format!("server.{field}"),
                "must be greater than zero",
            ));
        }
    }
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        "server.trusted_proxies",
                        format!("{p:?} is not an address or CIDR block (e.g. \"10.0.0.0/8\")"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let proxy_protocol = s.proxy_protocol.unwrap_or(d.proxy_protocol);
    if proxy_protocol && trusted_proxies.is_empty() {
        return Err(invalid(
            "server.proxy_protocol",
            "needs server.trusted_proxies (the load balancers' addresses): a PROXY header is \
             believed only from them",
        ));
    }
    Ok(ServerSettings {
        tls,
        proxy_protocol,
        listen,
        threads,
        strict_paths: s.strict_paths.unwrap_or(d.strict_paths),
        forwarding: ForwardingPolicy {
            trusted: trusted_proxies,
            header: s.forwarded_header.unwrap_or(d.forwarding.header),
            write: s.forward_client_address.unwrap_or(d.forwarding.write),
            keep: s.keep_forwarding_headers.unwrap_or(d.forwarding.keep),
        },
        header_timeout,
        max_header_bytes,
        max_connections,
        max_connections_per_ip,
        keepalive_timeout: s.keepalive_timeout.unwrap_or(d.keepalive_timeout),
        grace_period: s.grace_period.unwrap_or(d.grace_period),
        shutdown_timeout: s.shutdown_timeout.unwrap_or(d.shutdown_timeout),
        drain_delay: s.drain_delay.unwrap_or(d.drain_delay),
        realm,
    })
}

/// Bounds of `server.max_header_bytes`.
const MIN_HEADER_BYTES: usize = 1024;
const MAX_HEADER_BYTES: usize = 1024 * 1024 - 1;

fn lower_token(t: FileToken) -> Result<TokenSettings, ConfigError> {
    let d = TokenSettings::default();
    let t = TokenSettings {
        max_body_bytes: t.max_body_bytes.unwrap_or(d.max_body_bytes),
        body_timeout: t.body_timeout.unwrap_or(d.body_timeout),
    };
    if t.max_body_bytes == 0 || t.max_body_bytes > MAX_BODY_CAP {
        return Err(invalid(
            "token.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_CAP}"),
        ));
    }
    if t.body_timeout.is_zero() {
        return Err(invalid("token.body_timeout", "must be greater than zero"));
    }
    Ok(t)
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
    let settings = UpstreamSettings::new(name, tls, host, port, host_header);
    Ok((settings, url.path().trim_end_matches('/').to_string()))
}

fn lower_upstream(
    name: String,
    u: FileUpstream,
    base: &Base<'_>,
) -> Result<UpstreamSettings, ConfigError> {
    let key = format!("upstreams.{name}");
    let (d, _) = lower_url(&format!("{key}.url"), &name, &u.url, false)?;
    if !d.tls && (u.ca_file.is_some() || u.tls_verify == Some(false)) {
        return Err(invalid(
            format!("{key}.ca_file"),
            "ca_file and tls_verify apply to https upstreams only",
        ));
    }
    let ca = match &u.ca_file {
        Some(f) => Some(Arc::new(load_certs(
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
        None => d.host_header.clone(),
    };
    let addresses = match &u.addresses {
        None => Vec::new(),
        Some(list) if list.is_empty() => {
            return Err(invalid(
                format!("{key}.addresses"),
                "must list at least one address (or be left out to resolve the URL's host)",
            ))
        }
        Some(list) => socket_addrs(&format!("{key}.addresses"), list)?,
    };
    let settings = UpstreamSettings {
        addresses,
        host_header,
        basic_encoding: match u.basic_encoding {
            None => d.basic_encoding,
            Some(FileEncoding::Rfc6749) => BasicEncoding::Rfc6749,
            Some(FileEncoding::Raw) => BasicEncoding::Raw,
        },
        connect_timeout: u.connect_timeout.unwrap_or(d.connect_timeout),
        total_connection_timeout: u
            .total_connection_timeout
            .unwrap_or(d.total_connection_timeout),
        read_timeout: u.read_timeout.unwrap_or(d.read_timeout),
        write_timeout: u.write_timeout.unwrap_or(d.write_timeout),
        idle_timeout: u.idle_timeout.unwrap_or(d.idle_timeout),
        resolve_interval: u.resolve_interval.unwrap_or(d.resolve_interval),
        ca,
        tls_verify: u.tls_verify.unwrap_or(d.tls_verify),
        ..d
    };
    all_positive(
        &key,
        &[
            ("connect_timeout", settings.connect_timeout),
            (
                "total_connection_timeout",
                settings.total_connection_timeout,
            ),
            ("read_timeout", settings.read_timeout),
            ("write_timeout", settings.write_timeout),
            ("idle_timeout", settings.idle_timeout),
            ("resolve_interval", settings.resolve_interval),
        ],
    )?;
    Ok(settings)
}
