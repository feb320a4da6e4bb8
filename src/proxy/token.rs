//! The token route kind: every client-authenticated endpoint (token, introspection, revocation,
//! PAR, device authorization). The request is checked, read whole and decided in `request_filter`;
//! what was decided is sent upstream through the [`Exchange`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::header;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::assertion::Audience;
use crate::config::{TokenMode, UpstreamSettings};
use crate::exchange::client::{self, Answer, ExchangeError};
use crate::exchange::response::Framing;
use crate::exchange::{self, Assertion, BuildError, Exchange, Signer};
use crate::metrics::Metrics;
use crate::observe;
use crate::observe::Action;
use crate::protocol::{self, token, AuthMethod, BodyLimit, MethodSeen, OAuthError};
use crate::runtime::Runtime;
use crate::upstream::Upstream;

/// What a token route decided.
pub enum TokenState {
    /// Going upstream, as decided.
    Forwarding {
        client_id: Option<Vec<u8>>,
        exchange: Exchange,
    },
    /// Answered by the gateway (the client_id, once the request was read that far).
    Rejected { client_id: Option<Vec<u8>> },
}

impl TokenState {
    /// The client_id the request carried, for the access log.
    pub fn client_id(&self) -> Option<&[u8]> {
        match self {
            TokenState::Forwarding { client_id, .. } | TokenState::Rejected { client_id } => {
                client_id.as_deref()
            }
        }
    }

    pub fn action(&self) -> (Option<MethodSeen>, Action) {
        match self {
            TokenState::Forwarding { exchange, .. } => {
                let f = &exchange.forward;
                let action = match exchange.assertion().map(Assertion::method) {
                    Some(AuthMethod::PrivateKeyJwt) => Action::UpgradedPrivateKeyJwt,
                    Some(_) => Action::UpgradedClientSecretJwt,
                    None if f.converted() => Action::Converted,
                    None => Action::Forwarded,
                };
                (Some(f.method_seen), action)
            }
            TokenState::Rejected { .. } => (None, Action::Rejected),
        }
    }

    /// The method the upstream was sent, for the access log.
    pub fn upstream_method(&self) -> Option<AuthMethod> {
        match self {
            TokenState::Forwarding { exchange, .. } => exchange.upstream_method(),
            TokenState::Rejected { .. } => None,
        }
    }
}

/// An answer relayed to the client.
pub struct Relayed {
    pub status: u16,
    /// From sending the request to having the answer's head and body.
    pub elapsed: Duration,
}

/// Why no upstream answer was relayed: the answer the client gets instead (502/504; 500 when a
/// client assertion could not be signed), and the cause for the access log.
pub struct NotRelayed {
    pub answer: OAuthError,
    pub cause: &'static str,
}

/// Sends a decided request upstream with the gateway's own client and writes its answer to the
/// client.
pub async fn forward(
    session: &mut Session,
    exchange: &Exchange,
    up: &Upstream,
    metrics: &Metrics,
) -> pingora::Result<Result<Relayed, NotRelayed>> {
    let started = Instant::now();
    let host = up.settings.host_header.as_str();
    let req = session.req_header_mut();
    let build = || match exchange.request(req, host) {
        Ok(request) => Ok(request),
        Err(BuildError::Head(_)) => Err(OAuthError::request_unbuildable()),
        Err(BuildError::Sign(e)) => {
            metrics.signing_failures.inc();
            tracing::warn!(error = %e, "a client assertion could not be signed");
            Err(OAuthError::assertion_failed())
        }
    };
    let result = client::round_trip(up, build).await;
    let name = up.settings.name.as_str();
    match result {
        Ok(answer) => {
            let elapsed = started.elapsed();
            observe::upstream_answered(metrics, name, elapsed);
            let status = answer.head.status;
            relay(session, answer).await?;
            Ok(Ok(Relayed { status, elapsed }))
        }
        Err(e) => {
            if !matches!(e, ExchangeError::Build(_)) {
                observe::upstream_error(metrics, name, e.kind());
                tracing::debug!(upstream = name, error = ?e, "upstream exchange failed");
            }
            Ok(Err(NotRelayed {
                answer: e.answer(),
                cause: e.cause(),
            }))
        }
    }
}

/// Writes an upstream's answer to the client, framed by its length.
async fn relay(session: &mut Session, answer: Answer) -> pingora::Result<()> {
    let Answer {
        head,
        raw_head,
        body,
        ..
    } = answer;
    let mut resp = ResponseHeader::build(head.status, Some(head.fields.len() + 1))?;
    if let Ok(reason) = std::str::from_utf8(&raw_head[head.reason.clone()]) {
        if !reason.is_empty() {
            let _ = resp.set_reason_phrase(Some(reason));
        }
    }
    // Names and values are slices of the answer's own bytes: nothing is copied.
    for (name, value) in &head.fields {
        let value = HeaderValue::from_maybe_shared(raw_head.slice(value.clone()))
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "upstream field value"))?;
        resp.append_header(raw_head.slice(name.clone()), value)?;
    }
    let has_body = head.framing != Framing::Empty;
    if has_body {
        resp.insert_header(header::CONTENT_LENGTH, HeaderValue::from(body.len()))?;
    }
    session
        .write_response_header(Box::new(resp), !has_body)
        .await?;
    if has_body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Checks, reads and decides a request on a token route: the state to keep, and the error to
/// answer with when it is refused.
pub async fn receive(
    session: &mut Session,
    rt: &Runtime,
    mode: &TokenMode,
    upstream: usize,
    env_id: Option<&str>,
    client_ip: Option<IpAddr>,
) -> (TokenState, Option<OAuthError>) {
    let mut client_id = None;
    let to = Target {
        upstream,
        env_id,
        client_ip,
    };
    match decide(session, rt, mode, &to, &mut client_id).await {
        Ok(exchange) => (
            TokenState::Forwarding {
                client_id,
                exchange,
            },
            None,
        ),
        Err(e) => (TokenState::Rejected { client_id }, Some(e)),
    }
}

/// Where a token request goes, and who sent it.
struct Target<'a> {
    upstream: usize,
    env_id: Option<&'a str>,
    client_ip: Option<IpAddr>,
}

async fn decide(
    session: &mut Session,
    rt: &Runtime,
    mode: &TokenMode,
    to: &Target<'_>,
    seen_client_id: &mut Option<Vec<u8>>,
) -> Result<Exchange, OAuthError> {
    let endpoint = mode.endpoint;
    let limits = rt.settings.token;
    let req = session.req_header();
    let head = token::Head {
        method: req.method.as_str().as_bytes(),
        content_type: req.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        query: req.uri.query().map(str::as_bytes),
        content_length: req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok()),
    };
    let limit = BodyLimit {
        max_bytes: limits.max_body_bytes,
    };
    // The body is still unread: whatever is refused here closes the connection.
    token::check_head(&head, limit).map_err(OAuthError::closing)?;
    token::check_connection(
        req.headers
            .get_all(header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    )?;

    let expects_continue = req
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(|_| OAuthError::body_incomplete())?;
    }

    let body = exchange::read_body(
        session.as_downstream_mut(),
        limits.max_body_bytes,
        limits.body_timeout,
    )
    .await?;

    let authorization: Vec<&[u8]> = session
        .req_header()
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let mut extracted = protocol::extract(&authorization, &body)?;
    *seen_client_id = extracted.client_id().map(<[u8]>::to_vec);
    // What the upstream takes from this client: what its record says, where the route reads
    // records (verifying the secret first, or not: `per_client`), else the route's conversion.
    let env_id = to.env_id.unwrap_or_default();
    let (demanded, signing_key, verified) = match &rt.validator {
        Some(v) if mode.validate => {
            let verified = v
                .validate(env_id, endpoint, &extracted, to.client_ip)
                .await?;
            extracted = extracted.with_reading(verified.reading);
            (verified.upstream_method, verified.signing_key, true)
        }
        Some(v) if mode.per_client => {
            let id = extracted.client_id().unwrap_or_default();
            match v.record(env_id, id).await? {
                Some(r) => (r.upstream_method, r.signing_key.clone(), false),
                None => (None, None, false),
            }
        }
        _ => (None, None, false),
    };
    // Only a secret is upgraded: a client that sends its own assertion (or none) goes as sent.
    let secret = extracted.secret().filter(|s| !s.is_empty());
    let signer = match (demanded, secret) {
        (_, None) => None,
        (Some(AuthMethod::ClientSecretJwt), Some(secret)) => Some(Signer::Secret(secret.into())),
        (Some(AuthMethod::PrivateKeyJwt), _) if verified => {
            Some(Signer::Key(rt.signing_keys.clone(), signing_key))
        }
        (Some(AuthMethod::PrivateKeyJwt), _) => {
            // A registry record on a route that does not verify: the gateway signs only for a
            // client it verified (a client file's are refused at start).
            tracing::warn!(
                env_id,
                "private_key_jwt record on a route that does not verify secrets"
            );
            return Err(OAuthError::assertion_failed());
        }
        _ => None,
    };
    if let Some(signer) = signer {
        let client_id = extracted.client_id().unwrap_or_default().to_vec();
        let up = &rt.upstreams[to.upstream].settings;
        let audience = Audience {
            aud: audience(mode, env_id, up, session.req_header().uri.path()),
            lifetime: mode.assertion_lifetime,
        };
        let forward = extracted.to_assertion(&body)?;
        let assertion = Assertion {
            client_id,
            signer,
            audience,
        };
        return Ok(Exchange::with_assertion(forward, body, assertion));
    }
    let conversion = demanded
        .and_then(AuthMethod::conversion)
        .or(mode.conversion);
    let forward = extracted.convert(
        conversion,
        rt.upstreams[to.upstream].settings.basic_encoding,
        endpoint,
        &authorization,
        &body,
    )?;
    Ok(Exchange::new(forward, body))
}

/// The `aud` of a client assertion: the route's template with `{env_id}` replaced, or the URL of
/// the requested endpoint at the upstream.
fn audience(mode: &TokenMode, env_id: &str, up: &UpstreamSettings, path: &str) -> String {
    match &mode.assertion_audience {
        Some(template) => template.replace("{env_id}", env_id),
        None => {
            let scheme = if up.tls { "https" } else { "http" };
            format!("{scheme}://{}{path}", up.host_header)
        }
    }
}
