//! Local error answers: RFC 6749 §5.2 JSON bodies with the headers that go with them.
//!
//! Descriptions are `&'static str`: no request data (and so no secret) can ever be formatted into
//! an error body.

use serde::Serialize;

/// The RFC 6749 §5.2 error codes this gateway answers with (plus §4.1.2.1's `server_error` and
/// `temporarily_unavailable`, which token endpoints use in practice for upstream failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    UnauthorizedClient,
    /// RFC 8628 §3.5's code for "slow down", used for the brute-force lockout (429).
    SlowDown,
    ServerError,
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An error the gateway answers itself, without asking the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub code: ErrorCode,
    pub description: &'static str,
    /// RFC 6749 §5.2: a 401 `invalid_client` after a Basic attempt carries `WWW-Authenticate`.
    pub www_authenticate: bool,
    /// RFC 9110 §15.5.6: a 405 lists the allowed methods.
    pub allow: Option<&'static str>,
    /// The connection must be closed after the answer (e.g. an unread body remains).
    pub close: bool,
    /// RFC 9110 §10.2.3 `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorCode,
    error_description: &'a str,
}

impl OAuthError {
    pub const fn new(status: u16, code: ErrorCode, description: &'static str) -> Self {
        OAuthError {
            status,
            code,
            description,
            www_authenticate: false,
            allow: None,
            close: false,
            retry_after: None,
        }
    }

    /// 400 `invalid_request`.
    pub const fn invalid_request(description: &'static str) -> Self {
        Self::new(400, ErrorCode::InvalidRequest, description)
    }

    /// 401 `invalid_client`; `basic_tried` adds `WWW-Authenticate: Basic`.
    pub const fn invalid_client(description: &'static str, basic_tried: bool) -> Self {
        let mut e = Self::new(401, ErrorCode::InvalidClient, description);
        e.www_authenticate = basic_tried;
        e
    }

    pub const fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The JSON body, e.g. `{"error":"invalid_request","error_description":"..."}`.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Body {
            error: self.code,
            error_description: self.description,
        })
        .unwrap_or_else(|_| br#"{"error":"server_error"}"#.to_vec())
    }

    /// Every header of the answer except `Content-Length`, in order.
    pub fn headers(&self, realm: &str) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Content-Type", "application/json".to_string()),
            ("Cache-Control", "no-store".to_string()),
            ("Pragma", "no-cache".to_string()),
        ];
        if self.www_authenticate {
            h.push((
                "WWW-Authenticate",
                format!("Basic realm=\"{}\"", realm.replace(['"', '\\'], "")),
            ));
        }
        if let Some(allow) = self.allow {
            h.push(("Allow", allow.to_string()));
        }
        if let Some(secs) = self.retry_after {
            h.push(("Retry-After", secs.to_string()));
        }
        if self.close {
            h.push(("Connection", "close".to_string()));
        }
        h
    }
}

/// Answers for requests the upstream could not complete (issued by the gateway, RFC 6749 §5.2
/// shape so that OAuth clients can parse them).
impl OAuthError {
    /// 502: connection refused, reset, TLS failure, no address.
    pub const fn upstream_unreachable() -> Self {
        Self::new(
            502,
            ErrorCode::ServerError,
            "the authorization server could not be reached",
        )
    }

    /// 500: the gateway could not make a client assertion for the upstream (no key that signs, a
    /// record it may not sign for).
    pub const fn assertion_failed() -> Self {
        Self::new(
            500,
            ErrorCode::ServerError,
            "the gateway could not authenticate the client to the authorization server",
        )
    }

    /// 500: the gateway could not build the request for the upstream.
    pub const fn request_unbuildable() -> Self {
        Self::new(
            500,
            ErrorCode::ServerError,
            "the gateway could not build the request",
        )
    }

    /// 504: connect, read or write timeout towards the upstream.
    pub const fn upstream_timeout() -> Self {
        Self::new(
            504,
            ErrorCode::TemporarilyUnavailable,
            "the authorization server did not answer in time",
        )
    }

    /// 429: too many failed authentications for this client or address. The same answer whether or
    /// not the client exists.
    pub fn locked_out(retry_after: std::time::Duration) -> Self {
        let mut e = Self::new(
            429,
            ErrorCode::SlowDown,
            "too many failed client authentications; retry later",
        );
        e.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    /// 503: the client registry cannot be asked and nothing cached can be used.
    pub const fn registry_unavailable() -> Self {
        Self::new(
            503,
            ErrorCode::TemporarilyUnavailable,
            "client authentication is temporarily unavailable",
        )
    }

    /// 503: too many secret verifications are waiting; the client should retry shortly.
    pub fn verification_busy() -> Self {
        let mut e = Self::new(
            503,
            ErrorCode::TemporarilyUnavailable,
            "client authentication is temporarily unavailable",
        );
        e.retry_after = Some(1);
        e
    }

    /// 408: the client did not send its whole body in time.
    pub const fn body_timeout() -> Self {
        Self::new(
            408,
            ErrorCode::InvalidRequest,
            "the request body was not received in time",
        )
        .closing()
    }

    /// 400: the client's body ended before it was complete, or its framing was invalid.
    pub const fn body_incomplete() -> Self {
        Self::invalid_request("the request body ended before it was complete").closing()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn body_is_rfc6749_json() {
        let e = OAuthError::invalid_request("the request is bad");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["error_description"], "the request is bad");
        assert_eq!(v.as_object().unwrap().len(), 2);
    }

    #[test]
    fn headers_always_forbid_caching() {
        let h = OAuthError::invalid_request("x").headers("r");
        assert!(h.contains(&("Cache-Control", "no-store".into())));
        assert!(h.contains(&("Pragma", "no-cache".into())));
        assert!(h.contains(&("Content-Type", "application/json".into())));
        assert!(!h.iter().any(|(n, _)| *n == "WWW-Authenticate"));
    }

    #[test]
    fn lockout_is_429_slow_down_with_retry_after_in_whole_seconds() {
        let e = OAuthError::locked_out(std::time::Duration::from_millis(1500));
        assert_eq!((e.status, e.code.as_str()), (429, "slow_down"));
        assert!(e.headers("r").contains(&("Retry-After", "2".into())));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"], "slow_down");
    }

    #[test]
    fn invalid_client_after_basic_challenges_basic() {
        let e = OAuthError::invalid_client("bad", true);
        assert_eq!(e.status, 401);
        assert!(e
            .headers("tok\"en")
            .contains(&("WWW-Authenticate", "Basic realm=\"token\"".into())));
        assert!(!OAuthError::invalid_client("bad", false)
            .headers("r")
            .iter()
            .any(|(n, _)| *n == "WWW-Authenticate"));
    }
}
