//! The Pingora glue: one `ProxyHttp` implementation that routes each request and hands token
//! requests to the protocol core. Read top to bottom, it is the life of a request.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use crate::config::{ClientIdLogging, RouteMode, TokenMode};
use crate::exchange::{self, Exchange};
use crate::metrics::{self, Metrics};
use crate::protocol::discovery::{self, BodyRewriter};
use crate::protocol::{self, token, AuthMethod, BodyLimit, OAuthError};
use crate::routing;
use crate::runtime::{Runtime, Shared};
use crate::upstream::Upstream;

/// The gateway: configuration and upstreams, shared by every request.
pub struct Gateway {
    shared: Shared,
    metrics: Arc<Metrics>,
}

/// Per-request state.
pub struct Ctx {
    /// The configuration this request runs on, from start to end (reloads swap it for the next
    /// requests only).
    rt: Arc<Runtime>,
    started: Instant,
    route: Option<usize>,
    env_id: Option<String>,
    upstream: usize,
    exchange: Option<Exchange>,
    /// The status of an answer the gateway gave itself.
    local_status: Option<u16>,
    /// Its RFC 6749 error code.
    local_error: Option<protocol::ErrorCode>,
    /// When the request was sent upstream.
    upstream_started: Option<Instant>,
    /// The gateway refused the request itself (it never went upstream).
    rejected: bool,
    /// The client_id the request carried, once parsed (for the access log only).
    client_id: Option<Vec<u8>>,
    upstream_status: Option<u16>,
    upstream_elapsed: Option<std::time::Duration>,
    /// The client's `X-Request-Id` (when well-formed) or one made here.
    request_id: String,
    /// On a discovery route: the rewrite to apply, until the answer shows whether it applies.
    discovery: Option<Arc<protocol::DiscoveryRewrite>>,
    /// The metadata answer being rewritten.
    rewriter: Option<BodyRewriter>,
    /// The metadata answer was rewritten (for metrics and the access log).
    rewritten: bool,
}

impl Gateway {
    pub fn new(shared: Shared, metrics: Arc<Metrics>) -> Gateway {
        Gateway { shared, metrics }
    }

    /// Checks, reads and decides a request on a token route. `Ok` carries what to forward.
    async fn token_request(
        &self,
        rt: &Runtime,
        session: &mut Session,
        TokenMode {
            conversion,
            validate,
            endpoint,
        }: TokenMode,
        upstream: &Upstream,
        env_id: Option<&str>,
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
                let ip = session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip());
                let verified = v
                    .validate(env_id.unwrap_or_default(), endpoint, &extracted, ip)
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
            upstream.settings.basic_encoding,
            endpoint,
            &authorization,
            &body,
        )?;
        Ok(Exchange::new(forward, body))
    }

    /// Writes a local RFC 6749 §5.2 answer.
    async fn answer(
        &self,
        session: &mut Session,
        e: &OAuthError,
        realm: &str,
    ) -> pingora::Result<()> {
        if e.close {
            session.as_downstream_mut().set_keepalive(None);
        }
        let body = Bytes::from(e.body());
        let headers = e.headers(realm);
        let mut resp = ResponseHeader::build(e.status, Some(headers.len() + 1))?;
        for (name, value) in headers {
            resp.insert_header(name, value)?;
        }
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(())
    }
}

/// The request's ID: the client's `X-Request-Id` when it is short and plain, else a new one.
fn request_id(given: Option<&http::HeaderValue>) -> String {
    if let Some(v) = given.and_then(|v| v.to_str().ok()) {
        if !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return v.to_string();
        }
    }
    let mut raw = [0u8; 8];
    if getrandom::getrandom(&mut raw).is_err() {
        return "-".to_string();
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client_id as the access log shows it.
fn logged_client_id(id: Option<&[u8]>, how: ClientIdLogging) -> String {
    use sha2::{Digest, Sha256};
    match (id, how) {
        (None, _) | (_, ClientIdLogging::Omit) => "-".to_string(),
        (Some(id), ClientIdLogging::Plain) => String::from_utf8_lossy(id).into_owned(),
        (Some(id), ClientIdLogging::Hash) => {
            let d = Sha256::digest(id);
            let hex: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        }
    }
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

/// Maps a failed proxy attempt to the answer the client gets (`None`: the client is gone).
fn failure_answer(e: &Error) -> Option<OAuthError> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, ConnectTimedout | TLSHandshakeTimedout) => Some(OAuthError::upstream_timeout()),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => {
            Some(OAuthError::upstream_timeout())
        }
        (ErrorSource::Upstream, _) => Some(OAuthError::upstream_unreachable()),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
        (ErrorSource::Downstream, ReadTimedout) => Some(OAuthError::body_timeout()),
        (ErrorSource::Downstream, _) => Some(OAuthError::body_incomplete()),
        _ => Some(OAuthError::new(
            500,
            protocol::ErrorCode::ServerError,
            "the gateway failed to handle the request",
        )),
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let rt = self.shared.load_full();
        Ctx {
            upstream: rt.settings.default_upstream,
            rt,
            started: Instant::now(),
            route: None,
            env_id: None,
            exchange: None,
            local_status: None,
            local_error: None,
            upstream_started: None,
            rejected: false,
            client_id: None,
            upstream_status: None,
            upstream_elapsed: None,
            request_id: String::new(),
            discovery: None,
            rewriter: None,
            rewritten: false,
        }
    }

    /// Routes the request; token routes are checked, read and decided here.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.request_id = request_id(session.req_header().headers.get("x-request-id"));
        let rt = ctx.rt.clone();
        let keepalive = rt.settings.server.keepalive_timeout.as_secs().max(1);
        session.as_downstream_mut().set_keepalive(Some(keepalive));

        let path = routing::normalize(session.req_header().uri.path());
        let Some(m) = routing::route(rt.settings.routes.iter().map(|r| &r.matcher), &path) else {
            return Ok(false);
        };
        let route = &rt.settings.routes[m.route];
        ctx.route = Some(m.route);
        ctx.env_id = m.env_id.map(str::to_string);
        ctx.upstream = route.upstream;
        let mode = match &route.mode {
            RouteMode::Token(mode) => *mode,
            RouteMode::Discovery(rules) => {
                ctx.discovery = Some(rules.clone());
                return Ok(false);
            }
            RouteMode::Passthrough => return Ok(false),
        };
        // A CORS preflight is not a token request: the authorization server answers it (browser
        // apps using PKCE send one before their POST).
        if session.req_header().method == http::Method::OPTIONS {
            return Ok(false);
        }
        match self
            .token_request(
                &rt,
                session,
                mode,
                &rt.upstreams[route.upstream],
                ctx.env_id.as_deref(),
                &mut ctx.client_id,
            )
            .await
        {
            Ok(exchange) => {
                ctx.exchange = Some(exchange);
                Ok(false)
            }
            Err(e) => {
                ctx.local_status = Some(e.status);
                ctx.local_error = Some(e.code);
                ctx.rejected = true;
                self.answer(session, &e, &rt.settings.server.realm).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let upstream = &ctx.rt.upstreams[ctx.upstream];
        upstream.peer().ok_or_else(|| {
            Error::explain(ErrorType::ConnectNoRoute, "upstream host not resolved").into_up()
        })
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let upstream = &ctx.rt.upstreams[ctx.upstream];
        upstream_request.insert_header(header::HOST, upstream.settings.host_header.as_str())?;
        ctx.upstream_started = Some(Instant::now());
        if let Some(exchange) = &ctx.exchange {
            exchange.apply_head(upstream_request)?;
        }
        if ctx.discovery.is_some() {
            // A metadata document is rewritten as plain JSON: ask for it uncompressed.
            upstream_request.remove_header(&header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        if let Some(rules) = ctx.discovery.take() {
            let h = &upstream_response.headers;
            // An HTTP/1.0 client cannot take the chunked body a rewrite needs.
            let chunked_ok = session.req_header().version != http::Version::HTTP_10;
            if chunked_ok
                && discovery::is_rewritable(
                    session.req_header().method.as_str().as_bytes(),
                    upstream_response.status.as_u16(),
                    h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
                    h.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()),
                )
            {
                // The new length is known only at the end: the body goes out chunked. A strong
                // validator no longer names these bytes; a weak one still names the meaning.
                upstream_response.remove_header(&header::CONTENT_LENGTH);
                upstream_response.insert_header(header::TRANSFER_ENCODING, "chunked")?;
                if let Some(etag) = upstream_response.headers.get(header::ETAG) {
                    if !etag.as_bytes().starts_with(b"W/") {
                        let weak = format!("W/{}", String::from_utf8_lossy(etag.as_bytes()));
                        upstream_response.insert_header(header::ETAG, weak)?;
                    }
                }
                ctx.rewriter = Some(BodyRewriter::new(rules));
            }
        }
        if let Some(started) = ctx.upstream_started {
            ctx.upstream_elapsed = Some(started.elapsed());
            self.metrics
                .upstream_duration
                .with_label_values(&[ctx.rt.upstreams[ctx.upstream].settings.name.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(exchange) = &mut ctx.exchange {
            exchange.replace_body(body);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        if let Some(rewriter) = &mut ctx.rewriter {
            let chunk = body.take().unwrap_or_default();
            let (out, outcome) = rewriter.push(&chunk, end_of_stream);
            ctx.rewritten = outcome == Some(discovery::Outcome::Rewritten);
            if outcome == Some(discovery::Outcome::Unchanged) {
                tracing::warn!(
                    request_id = %ctx.request_id,
                    "discovery answer not rewritten: not a JSON object, or over the size limit"
                );
            }
            *body = (!out.is_empty()).then(|| Bytes::from(out));
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if let Some(kind) = upstream_error_kind(e) {
            self.metrics
                .upstream_errors
                .with_label_values(&[ctx.rt.upstreams[ctx.upstream].settings.name.as_str(), kind])
                .inc();
        }
        let answer = failure_answer(e);
        let status = answer.as_ref().map_or(0, |a| a.status);
        if let Some(a) = answer {
            if session.response_written().is_none() {
                ctx.local_status = Some(a.status);
                ctx.local_error = Some(a.code);
                let realm = ctx.rt.settings.server.realm.clone();
                if let Err(err) = self.answer(session, &a, &realm).await {
                    tracing::debug!(error = %err, "could not send the error answer");
                }
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Pingora's own error lines name the request with this: method and path, never the query
    /// string (which may carry credentials on the untouched routes).
    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = ctx
            .local_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let (method_seen, action) = match &ctx.exchange {
            Some(x) if x.forward.converted() => (x.forward.method_seen.as_str(), "converted"),
            Some(x) => (x.forward.method_seen.as_str(), "forwarded"),
            None if ctx.rejected => ("-", "rejected"),
            None if ctx.rewritten => ("-", "rewritten"),
            None => ("-", "passthrough"),
        };
        let route = ctx.route.map_or(metrics::NO_ROUTE, |r| {
            ctx.rt.settings.routes[r].name.as_str()
        });
        // requests_total last: once a scrape sees a request there, its other series are counted.
        let m = &self.metrics;
        if let Some(code) = ctx.local_error {
            m.rejections
                .with_label_values(&[route, code.as_str()])
                .inc();
        }
        m.request_duration
            .with_label_values(&[route])
            .observe(ctx.started.elapsed().as_secs_f64());
        m.requests
            .with_label_values(&[
                route,
                metrics::env_label(ctx.env_id.as_deref(), &ctx.rt.settings.metrics_env_ids),
                method_seen,
                action,
                metrics::status_class(status),
            ])
            .inc();
        // Never credentials: the route, the environment, who (hashed by default) and what was
        // decided.
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "tokengate::access",
            request_id = %ctx.request_id,
            route = %route,
            env_id = ctx.env_id.as_deref().unwrap_or("-"),
            client_id = %logged_client_id(ctx.client_id.as_deref(), ctx.rt.settings.log_client_id),
            method_seen,
            action,
            status,
            upstream_status = ctx.upstream_status.unwrap_or(0),
            upstream_ms = ctx.upstream_elapsed.map_or(0.0, ms),
            total_ms = ms(ctx.started.elapsed()),
            error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
            "request"
        );
    }
}
