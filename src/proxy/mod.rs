//! The Pingora glue: one `ProxyHttp` implementation that routes each request and hands each phase
//! to its route kind's unit (`token`, `discovery`; anything else passes untouched). Read top
//! to bottom, it is the life of a request; what is reported at its end is [`crate::observe`]'s.

mod answer;
mod ctx;
mod discovery;
mod guard;
mod token;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::config::RouteMode;
use crate::drain::Drain;
use crate::exchange;
use crate::metrics::Metrics;
use crate::observe;
use crate::routing;
use crate::runtime::Shared;
pub use ctx::Ctx;
use ctx::{RouteState, Routed};
use discovery::DiscoveryState;
use token::TokenState;

/// The gateway: configuration and upstreams, shared by every request.
pub struct Gateway {
    shared: Shared,
    metrics: Arc<Metrics>,
    drain: Arc<Drain>,
}

impl Gateway {
    pub fn new(shared: Shared, metrics: Arc<Metrics>, drain: Arc<Drain>) -> Gateway {
        Gateway {
            shared,
            metrics,
            drain,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.shared.load_full())
    }

    /// Routes the request; token routes are checked, read and decided here.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let rt = ctx.rt.clone();
        ctx.begin(session);
        if self.drain.is_draining() {
            // Stopping: this answer closes its connection (`Connection: close`), so clients
            // open their next one elsewhere.
            session.set_keepalive(None);
        }
        let path = routing::normalize(session.req_header().uri.path());
        if let Some(m) = routing::route(rt.settings.routes.iter().map(|r| &r.matcher), &path) {
            ctx.route = Some(Routed {
                index: m.route,
                env_id: m.env_id.map(str::to_string),
            });
        }
        let (route, upstream) = (ctx.route.as_ref().map(|r| r.index), ctx.upstream_index());
        if let Some(e) = guard::refuse(&rt.settings, session.req_header(), &path, route, upstream) {
            ctx.state = RouteState::Refused;
            return answer::local(session, ctx, &e).await;
        }
        let mode = match route.map(|r| &rt.settings.routes[r].mode) {
            None | Some(RouteMode::Passthrough) => return Ok(false),
            Some(RouteMode::Discovery(rules)) => {
                ctx.state = RouteState::Discovery(DiscoveryState::new(rules.clone()));
                return Ok(false);
            }
            Some(RouteMode::Jwks) => {
                ctx.state = RouteState::Jwks;
                return answer::jwks(session, ctx).await;
            }
            Some(RouteMode::Token(mode)) => mode,
        };
        // A CORS preflight is not a token request: the authorization server answers it (browser
        // apps using PKCE send one before their POST).
        if session.req_header().method == http::Method::OPTIONS {
            return Ok(false);
        }
        let (state, rejection) =
            token::receive(session, &rt, mode, upstream, ctx.env_id(), ctx.client_ip).await;
        ctx.state = RouteState::Token(state);
        if let Some(e) = rejection {
            return answer::local(session, ctx, &e).await;
        }
        let RouteState::Token(TokenState::Forwarding { exchange, .. }) = &ctx.state else {
            return Ok(false);
        };
        // The client's hop-by-hop fields go first, so that none of them removes what the
        // gateway sets (RFC 9110 §7.6.1; the nominations were checked with the head).
        let req = session.req_header_mut();
        exchange::strip_hop_by_hop(req);
        ctx.forward_fields(req)?;
        ctx.timing.upstream_started = Some(Instant::now());
        let sent = token::forward(session, exchange, ctx.upstream(), &self.metrics).await?;
        match sent {
            Ok(relayed) => {
                ctx.outcome.upstream_status = Some(relayed.status);
                ctx.timing.upstream_elapsed = Some(relayed.elapsed);
                Ok(true)
            }
            Err(failed) => {
                ctx.outcome.upstream_failure = Some(failed.cause);
                answer::local(session, ctx, &failed.answer).await
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let target = ctx.upstream().pick().ok_or_else(|| {
            Error::explain(ErrorType::ConnectNoRoute, "upstream host not resolved").into_up()
        })?;
        ctx.upstream_addr = Some(target.addr);
        Ok(target.peer())
    }

    /// A failed connection counts against its address, and is tried once more (on the next
    /// address, if the upstream has several): nothing of the request was sent yet.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // The address `upstream_peer` just chose.
        if let Some(addr) = ctx.upstream_addr {
            ctx.upstream().connect_failed(addr);
        }
        if !ctx.connect_retried {
            ctx.connect_retried = true;
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let host = ctx.upstream().settings.host_header.as_str();
        upstream_request.insert_header(header::HOST, host)?;
        // Pingora removed the client's hop-by-hop fields before this filter.
        ctx.forward_fields(upstream_request)?;
        ctx.timing.upstream_started = Some(Instant::now());
        if let RouteState::Discovery(d) = &ctx.state {
            d.upstream_request(upstream_request);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.outcome.upstream_status = Some(upstream_response.status.as_u16());
        if let Some(addr) = ctx.upstream_addr {
            ctx.upstream().connected(addr);
        }
        if let RouteState::Discovery(d) = &mut ctx.state {
            d.upstream_response(session.req_header(), upstream_response)?;
        }
        if let Some(started) = ctx.timing.upstream_started {
            let elapsed = started.elapsed();
            ctx.timing.upstream_elapsed = Some(elapsed);
            let upstream = ctx.upstream().settings.name.as_str();
            observe::upstream_answered(&self.metrics, upstream, elapsed);
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
        if let RouteState::Discovery(d) = &mut ctx.state {
            d.response_body(body, end_of_stream, &ctx.request_id);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        observe::upstream_failed(&self.metrics, &ctx.upstream().settings.name, e);
        let answer = answer::for_failure(e);
        let status = answer.as_ref().map_or(0, |a| a.status);
        if let Some(a) = answer {
            if session.response_written().is_none() {
                if let Err(err) = answer::local(session, ctx, &a).await {
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
        let sent = session.response_written().map(|r| r.status.as_u16());
        let settings = &ctx.rt.settings;
        let (env_ids, how) = (&settings.metrics_env_ids, settings.log_client_id);
        observe::finish(&self.metrics, &ctx.finished(sent, e), env_ids, how);
    }
}
