//! What the gateway reports about a finished request: the Prometheus series and the access log
//! line, both from one [`Finished`] summary, and the request ID that ties log lines together.
//!
//! Never credentials: a line names the route, the environment, who (hashed by default) and what was
//! decided; a metric label is one of a bounded set (see [`crate::metrics`]).

use std::net::IpAddr;
use std::time::Duration;

use pingora::{Error, ErrorSource, ErrorType};

use crate::config::ClientIdLogging;
use crate::metrics::{self, Metrics};
use crate::protocol::{AuthMethod, ErrorCode, MethodSeen};

/// What the gateway did with a request (the `action` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Proxied untouched.
    Passthrough,
    /// A client-authenticated request forwarded with its authentication as sent.
    Forwarded,
    /// A client-authenticated request forwarded with its authentication converted.
    Converted,
    /// Answered by the gateway itself.
    Rejected,
    /// A discovery document rewritten.
    Rewritten,
    /// A secret client's request sent with a `client_secret_jwt` assertion instead.
    UpgradedClientSecretJwt,
    /// A secret client's request sent with a `private_key_jwt` assertion instead.
    UpgradedPrivateKeyJwt,
    /// The gateway's JWKS served.
    Jwks,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Passthrough => "passthrough",
            Action::Forwarded => "forwarded",
            Action::Converted => "converted",
            Action::Rejected => "rejected",
            Action::Rewritten => "rewritten",
            Action::UpgradedClientSecretJwt => "upgraded_client_secret_jwt",
            Action::UpgradedPrivateKeyJwt => "upgraded_private_key_jwt",
            Action::Jwks => "jwks",
        }
    }
}

/// One finished request, as the metrics and the access log see it.
pub struct Finished<'a> {
    pub request_id: &'a str,
    /// The client's address (behind trusted proxies, the one they name).
    pub client_ip: Option<IpAddr>,
    /// The route's name, or [`metrics::NO_ROUTE`].
    pub route: &'a str,
    pub env_id: Option<&'a str>,
    /// The client_id the request carried, once parsed.
    pub client_id: Option<&'a [u8]>,
    /// `None` where the request was not read as a client-authenticated one.
    pub method_seen: Option<MethodSeen>,
    /// The client authentication the upstream was sent (`None`: not forwarded, or not a
    /// client-authenticated route).
    pub upstream_method: Option<AuthMethod>,
    pub action: Action,
    /// The status the client got (0: none, the client went away).
    pub status: u16,
    /// The RFC 6749 error of an answer the gateway gave itself.
    pub local_error: Option<ErrorCode>,
    pub upstream_status: Option<u16>,
    /// Why the gateway's own upstream exchange failed (token routes), in a few fixed words.
    pub upstream_failure: Option<&'static str>,
    pub upstream_elapsed: Option<Duration>,
    pub total: Duration,
    pub error: Option<&'a Error>,
}

/// Counts the request and writes its access log line.
pub fn finish(m: &Metrics, f: &Finished<'_>, env_ids: &[String], how: ClientIdLogging) {
    let method_seen = f.method_seen.map_or("-", MethodSeen::as_str);
    // requests_total last: once a scrape sees a request there, its other series are counted.
    if let Some(code) = f.local_error {
        m.rejections
            .with_label_values(&[f.route, code.as_str()])
            .inc();
    }
    m.request_duration
        .with_label_values(&[f.route])
        .observe(f.total.as_secs_f64());
    m.requests
        .with_label_values(&[
            f.route,
            metrics::env_label(f.env_id, env_ids),
            method_seen,
            f.action.as_str(),
            metrics::status_class(f.status),
        ])
        .inc();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    tracing::info!(
        target: "tokengate::access",
        request_id = %f.request_id,
        client = %f.client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
        route = %f.route,
        env_id = f.env_id.unwrap_or("-"),
        client_id = %logged_client_id(f.client_id, how),
        method_seen,
        upstream_method = f.upstream_method.map_or("-", AuthMethod::as_str),
        action = f.action.as_str(),
        status = f.status,
        upstream_status = f.upstream_status.unwrap_or(0),
        upstream_ms = f.upstream_elapsed.map_or(0.0, ms),
        total_ms = ms(f.total),
        error = f
            .upstream_failure
            .or(f.error.map(|e| e.etype().as_str()))
            .unwrap_or("-"),
        "request"
    );
}

/// Counts the time from sending a request upstream to its response header.
pub fn upstream_answered(m: &Metrics, upstream: &str, elapsed: Duration) {
    m.upstream_duration
        .with_label_values(&[upstream])
        .observe(elapsed.as_secs_f64());
}

/// Counts a failed upstream exchange of Pingora's proxy path (downstream failures are not
/// counted).
pub fn upstream_failed(m: &Metrics, upstream: &str, e: &Error) {
    if let Some(kind) = upstream_error_kind(e) {
        upstream_error(m, upstream, kind);
    }
}

/// Counts a failed upstream exchange of the given kind (one of
/// [`metrics::UPSTREAM_ERROR_KINDS`]).
pub fn upstream_error(m: &Metrics, upstream: &str, kind: &str) {
    m.upstream_errors.with_label_values(&[upstream, kind]).inc();
}

/// The kind of an upstream failure, for metrics; `None` for a downstream failure.
fn upstream_error_kind(e: &Error) -> Option<&'static str> {
    use ErrorType::*;
    if e.esource() != &ErrorSource::Upstream
        && !matches!(e.etype(), ConnectTimedout | ConnectRefused | ConnectNoRoute)
    {
        return None;
    }
    Some(match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => "timeout",
        ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError => "connect",
        TLSHandshakeFailure | TLSWantX509Lookup | InvalidCert | HandshakeError => "tls",
        ConnectionClosed | ReadError | WriteError => "reset",
        _ => "other",
    })
}

/// The request's ID: the client's `X-Request-Id` when it is short and plain, else a new one.
pub fn request_id(given: Option<&http::HeaderValue>) -> String {
    if let Some(v) = given.and_then(|v| v.to_str().ok()) {
        if !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return v.to_string();
        }
    }
    new_request_id()
}

/// A new request ID: 16 hex digits, unique within the process and unpredictable across processes,
/// without a system call (SplitMix64, a bijection, of a counter offset by a random seed).
fn new_request_id() -> String {
    use std::fmt::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut raw = [0u8; 8];
        // Without the OS's randomness, IDs are still unique within the process.
        let _ = getrandom::getrandom(&mut raw);
        u64::from_le_bytes(raw)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut id = String::with_capacity(16);
    let _ = write!(id, "{z:016x}");
    id
}

/// The client_id as the access log shows it.
fn logged_client_id(id: Option<&[u8]>, how: ClientIdLogging) -> String {
    use sha2::{Digest, Sha256};
    match (id, how) {
        (None, _) | (_, ClientIdLogging::Omit) => "-".to_string(),
        // Control characters escaped: a client_id must not start a log line of its own.
        (Some(id), ClientIdLogging::Plain) => String::from_utf8_lossy(id)
            .chars()
            .flat_map(|c| {
                let escaped = c.is_control().then(|| c.escape_default());
                escaped
                    .into_iter()
                    .flatten()
                    .chain((!c.is_control()).then_some(c))
            })
            .collect(),
        (Some(id), ClientIdLogging::Hash) => {
            let d = Sha256::digest(id);
            let hex: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_request_id_is_kept_and_anything_else_replaced() {
        let keep = http::HeaderValue::from_static("req-1.a_b:c");
        assert_eq!(request_id(Some(&keep)), "req-1.a_b:c");
        for bad in ["has space", "quote\"", ""] {
            let v = http::HeaderValue::from_str(bad).unwrap();
            let id = request_id(Some(&v));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 16, "{id}");
        }
        let long = http::HeaderValue::from_str(&"a".repeat(65)).unwrap();
        assert_eq!(request_id(Some(&long)).len(), 16);
        assert_ne!(request_id(None), request_id(None));
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|i| i.len() == 16 && i.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn client_ids_are_hashed_plain_or_omitted_as_configured() {
        let h = logged_client_id(Some(b"web-app"), ClientIdLogging::Hash);
        assert!(h.starts_with("sha256:") && h.len() == 19, "{h}");
        assert!(!h.contains("web-app"));
        assert_eq!(
            logged_client_id(Some(b"web-app"), ClientIdLogging::Plain),
            "web-app"
        );
        assert_eq!(
            logged_client_id(Some(b"web-app"), ClientIdLogging::Omit),
            "-"
        );
        assert_eq!(logged_client_id(None, ClientIdLogging::Plain), "-");
    }

    #[test]
    fn upstream_failures_are_labelled_by_kind_and_downstream_ones_not_at_all() {
        let up = |t| Error::new(t).into_up();
        assert_eq!(
            upstream_error_kind(&up(ErrorType::ConnectRefused)),
            Some("connect")
        );
        assert_eq!(
            upstream_error_kind(&up(ErrorType::ReadTimedout)),
            Some("timeout")
        );
        assert_eq!(
            upstream_error_kind(&up(ErrorType::TLSHandshakeFailure)),
            Some("tls")
        );
        assert_eq!(
            upstream_error_kind(&up(ErrorType::ConnectionClosed)),
            Some("reset")
        );
        assert_eq!(
            upstream_error_kind(&up(ErrorType::InternalError)),
            Some("other")
        );
        // Connect failures count whatever their source says.
        assert_eq!(
            upstream_error_kind(&Error::new(ErrorType::ConnectTimedout)),
            Some("timeout")
        );
        let down = Error::new(ErrorType::ReadError).into_down();
        assert_eq!(upstream_error_kind(&down), None);
    }
}
