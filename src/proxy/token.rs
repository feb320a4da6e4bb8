//! The token route kind: every client-authenticated endpoint (token, introspection, revocation,
//! PAR, device authorization). The request is checked, read whole and decided in `request_filter`;
//! what was decided is sent upstream through the [`Exchange`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::config::TokenMode;
use crate::exchange::client::{self, Answer};
use crate::exchange::response::Framing;
use crate::exchange::{self, Exchange};
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
                let action = if f.converted() {
                    Action::Converted
                } else {
                    Action::Forwarded
                };
                (Some(f.method_seen), action)
            }
            TokenState::Rejected { .. } => (None, Action::Rejected),
        }
    }
}

/// An answer relayed to the client.
pub struct Relayed {
    pub status: u16,
    /// From sending the request to having the answer's head and body.
    pub elapsed: Duration,
}

/// Sends a decided request upstream with the gateway's own client and writes its answer to the
/// client. `Err` carries the 502/504 the client is to get.
pub async fn forward(
    session: &mut Session,
    exchange: &Exchange,
    up: &Upstream,
    metrics: &Metrics,
) -> pingora::Result<Result<Relayed, OAuthError>> {
    let request = exchange.request(session.req_header_mut(), &up.settings.host_header)?;
    let started = Instant::now();
    let result = client::round_trip(up, &request).await;
    drop(request);
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
            observe::upstream_error(metrics, name, e.kind());
            tracing::debug!(upstream = name, error = ?e, "upstream exchange failed");
            Ok(Err(e.answer()))
        }
    }
}

/// Writes an upstream's answer to the client, framed by its length.
async fn relay(session: &mut Session, answer: Answer) -> pingora::Result<()> {
    let Answer { head, body } = answer;
    let mut resp = ResponseHeader::build(head.status, Some(head.fields.len() + 1))?;
    if !head.reason.is_empty() {
        let _ = resp.set_reason_phrase(Some(&head.reason));
    }
    for (name, value) in head.fields {
        resp.append_header(name, value.as_slice())?;
    }
    let has_body = head.framing != Framing::Empty;
    if has_body {
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    }
    session
        .write_response_header(Box::new(resp), !has_body)
        .await?;
    if has_body {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// Checks, reads and decides a request on a token route: the state to keep, and the error to
/// answer with when it is refused.
pub async fn receive(
    session: &mut Session,
    rt: &Runtime,
    mode: TokenMode,
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
    TokenMode {
        conversion,
        validate,
        endpoint,
    }: TokenMode,
    to: &Target<'_>,
    seen_client_id: &mut Option<Vec<u8>>,
) -> Result<Exchange, OAuthError> {
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
    let conversion = match (&rt.validator, validate) {
        (Some(v), true) => {
            let env_id = to.env_id.unwrap_or_default();
            let verified = v
                .validate(env_id, endpoint, &extracted, to.client_ip)
                .await?;
            extracted = extracted.with_reading(verified.reading);
            verified
                .upstream_method
                .and_then(AuthMethod::conversion)
                .or(conversion)
        }
        _ => conversion,
    };
    let forward = extracted.convert(
        conversion,
        rt.upstreams[to.upstream].settings.basic_encoding,
        endpoint,
        &authorization,
        &body,
    )?;
    Ok(Exchange::new(forward, body))
}
