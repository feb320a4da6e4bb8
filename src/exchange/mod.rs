//! The token route's exchange with the upstream: the one seam between a decision of the protocol
//! core and the bytes that reach the authorization server.
//!
//! Token routes do not ride on Pingora's generic proxy path: the body is read whole in
//! `request_filter` ([`read_body`]), the decided request is built as one buffer, head and body
//! ([`Exchange::request`]), and [`client::round_trip`] sends it on a kept-alive connection of the
//! gateway's own, reads the answer ([`response`]) and hands it back to be written to the client.
//! Measured cost and why: `benches/README.md`.

pub mod client;
pub mod response;

use std::time::Duration;

use http::header;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::ErrorType;

use std::sync::Arc;

use crate::assertion::{self, Audience, SignError, SigningKeys};
use crate::protocol::{AuthMethod, Forward, HeaderChange, OAuthError, SecretBytes};
use crate::routing;

/// What is sent upstream for one token request: the decision and the body the client sent (both
/// zeroized when dropped, redacted in `Debug`), and the client assertion to sign, if the upstream
/// takes one.
#[derive(Debug)]
pub struct Exchange {
    pub forward: Forward,
    received: SecretBytes,
    assertion: Option<Assertion>,
}

/// A client assertion (RFC 7523) to make for each attempt to send the request.
#[derive(Debug)]
pub struct Assertion {
    pub client_id: Vec<u8>,
    pub signer: Signer,
    pub audience: Audience,
}

/// What signs a client assertion.
pub enum Signer {
    /// `client_secret_jwt`: the secret the client presented.
    Secret(SecretBytes),
    /// `private_key_jwt`: a gateway key (the one named, or the active one).
    Key(Arc<SigningKeys>, Option<Box<str>>),
}

/// Never prints the secret.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Secret(_) => f.write_str("Signer::Secret(<redacted>)"),
            Signer::Key(_, kid) => write!(f, "Signer::Key({kid:?})"),
        }
    }
}

impl Assertion {
    /// The method the upstream takes.
    pub fn method(&self) -> AuthMethod {
        match self.signer {
            Signer::Secret(_) => AuthMethod::ClientSecretJwt,
            Signer::Key(..) => AuthMethod::PrivateKeyJwt,
        }
    }

    /// A new assertion.
    fn sign(&self) -> Result<String, SignError> {
        match &self.signer {
            Signer::Secret(secret) => {
                assertion::client_secret_jwt(&self.client_id, secret, &self.audience)
            }
            Signer::Key(keys, kid) => keys
                .signer(kid.as_deref())?
                .sign(&self.client_id, &self.audience),
        }
    }
}

/// Why the request could not be built.
#[derive(Debug)]
pub enum BuildError {
    Head(Box<pingora::Error>),
    Sign(SignError),
}

impl Exchange {
    pub fn new(forward: Forward, received: SecretBytes) -> Exchange {
        Exchange {
            forward,
            received,
            assertion: None,
        }
    }

    /// An exchange whose body gets a fresh `client_assertion` each time it is built.
    pub fn with_assertion(forward: Forward, received: SecretBytes, assertion: Assertion) -> Self {
        Exchange {
            forward,
            received,
            assertion: Some(assertion),
        }
    }

    /// The assertion made for this request, if any.
    pub fn assertion(&self) -> Option<&Assertion> {
        self.assertion.as_ref()
    }

    /// The method the upstream receives: the assertion's, the conversion's, or the client's.
    pub fn upstream_method(&self) -> Option<AuthMethod> {
        if let Some(a) = &self.assertion {
            return Some(a.method());
        }
        let f = &self.forward;
        match (&f.authorization, &f.body) {
            (HeaderChange::Set(_), _) => Some(AuthMethod::ClientSecretBasic),
            (HeaderChange::Remove, Some(_)) => Some(AuthMethod::ClientSecretPost),
            _ => f.method_seen.method(),
        }
    }

    /// The body the upstream receives: the decided one, or the client's as sent.
    pub fn body(&self) -> &[u8] {
        self.forward.body.as_deref().unwrap_or(&self.received)
    }

    /// The request the upstream receives, head and body in one buffer: the client's request line
    /// and fields as sent (names in their case), with the decided `Authorization`, the upstream's
    /// `Host`, the body's `Content-Length`, and without `Expect`, `Transfer-Encoding` or any
    /// hop-by-hop field (RFC 9110 §7.6.1). `req` is the client's head, changed in place.
    pub fn request(&self, req: &mut RequestHeader, host: &str) -> Result<SecretBytes, BuildError> {
        match &self.forward.authorization {
            HeaderChange::Keep => {}
            HeaderChange::Remove => {
                req.remove_header(&header::AUTHORIZATION);
            }
            HeaderChange::Set(v) => req.insert_header(header::AUTHORIZATION, v.as_str())?,
        }
        // RFC 7523 §2.2: a new assertion for every attempt.
        let signed = match &self.assertion {
            Some(a) => Some(a.sign().map_err(BuildError::Sign)?),
            None => None,
        };
        strip_hop_by_hop(req);
        req.insert_header(header::HOST, host)?;
        let body = self.body();
        let tail = signed.map(|jwt| format!("&client_assertion={jwt}"));
        let tail = tail.as_deref().unwrap_or_default().as_bytes();
        req.insert_header(
            header::CONTENT_LENGTH,
            (body.len() + tail.len()).to_string(),
        )?;
        let mut out = Vec::with_capacity(256 + body.len() + 32 * req.headers.len());
        out.extend_from_slice(req.method.as_str().as_bytes());
        out.push(b' ');
        // The target as the client sent it, in origin form (RFC 9112 §3.2.1: the authority of an
        // absolute-form target is the upstream's, in `Host`).
        out.extend_from_slice(&routing::origin_form(req.raw_path()));
        out.extend_from_slice(b" HTTP/1.1\r\n");
        req.header_to_h1_wire(&mut out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out.extend_from_slice(tail);
        Ok(out.into())
    }
}

/// Removes the client's hop-by-hop fields (RFC 9110 §7.6.1): those its `Connection` names, then
/// [`HOP_BY_HOP`]. Runs before the gateway sets its own fields.
pub fn strip_hop_by_hop(req: &mut RequestHeader) {
    let named: Vec<String> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    for name in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        req.remove_header(name);
    }
}

impl From<Box<pingora::Error>> for BuildError {
    fn from(e: Box<pingora::Error>) -> Self {
        BuildError::Head(e)
    }
}

/// Fields that concern one connection only (RFC 9110 §7.6.1), or that the gateway's framing
/// replaces.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "transfer-encoding",
];

/// Reads the whole request body, bounded in size and time. Must run in `request_filter`.
pub async fn read_body(
    session: &mut ServerSession,
    max_bytes: usize,
    timeout: Duration,
) -> Result<SecretBytes, OAuthError> {
    // The body is consumed here: token routes send it themselves ([`client`]), never through
    // Pingora's proxy path, so no retry buffer is kept.
    let read_all = async {
        let mut buf = Vec::new();
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|e| match e.etype() {
                ErrorType::ReadTimedout => OAuthError::body_timeout(),
                _ => OAuthError::body_incomplete(),
            })?
        {
            if buf.len() + chunk.len() > max_bytes {
                return Err(crate::protocol::token::too_large().closing());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(SecretBytes::from(buf))
    };
    match pingora::time::fast_timeout::fast_timeout(timeout, read_all).await {
        Ok(result) => result,
        Err(_) => Err(OAuthError::body_timeout()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decide, BasicEncoding, Conversion};

    #[test]
    fn debug_never_shows_the_body_or_the_header() {
        let body = b"grant_type=x&client_id=app&client_secret=Hunter2-Secret";
        let forward = decide(&[], body, Conversion::ToBasic, BasicEncoding::Rfc6749);
        let Ok(forward) = forward else {
            panic!("decided")
        };
        let x = Exchange::new(forward, body.as_slice().into());
        let shown = format!("{x:?}");
        assert!(
            !shown.contains("Hunter2") && !shown.contains("Basic"),
            "{shown}"
        );
    }
}
