//! Per-request state, grouped by concern: which configuration and route the request runs on, its
//! route kind's own state, its timing and its outcome.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Error;

use super::discovery::DiscoveryState;
use super::token::TokenState;
use crate::client_addr::Forwarding;
use crate::metrics;
use crate::observe::{self, Action, Finished};
use crate::protocol::{ErrorCode, MethodSeen, OAuthError};
use crate::runtime::Runtime;
use crate::upstream::Upstream;

pub struct Ctx {
    /// The configuration this request runs on, from start to end (reloads swap it for the next
    /// requests only).
    pub rt: Arc<Runtime>,
    /// The client's `X-Request-Id` (when well-formed) or one made here.
    pub request_id: String,
    /// The client's address (behind trusted proxies, the one they name).
    pub client_ip: Option<IpAddr>,
    /// Who sent the request: the connection's peer, and what trusted proxies say of the client.
    pub forwarding: Forwarding,
    /// Where Pingora's proxy path connects (untouched and discovery routes).
    pub upstream_addr: Option<std::net::SocketAddr>,
    /// Whether a failed upstream connection was tried again already.
    pub connect_retried: bool,
    /// The route the path matched; `None`: the default upstream, untouched.
    pub route: Option<Routed>,
    /// What the route's kind keeps between phases.
    pub state: RouteState,
    pub timing: Timing,
    pub outcome: Outcome,
}

/// The route a request matched.
pub struct Routed {
    /// Index into the configuration's routes.
    pub index: usize,
    /// The `{env_id}` segment of the path, if the route's pattern has one.
    pub env_id: Option<String>,
}

/// Each route kind's own state.
pub enum RouteState {
    /// Proxied untouched (no route, a passthrough route, or a CORS preflight on a token route).
    Passthrough,
    /// Refused before routing (a disguised path, secrets in a query string).
    Refused,
    /// The gateway's JWKS, answered by the gateway.
    Jwks,
    Token(TokenState),
    Discovery(DiscoveryState),
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub started: Instant,
    /// When the request was sent upstream.
    pub upstream_started: Option<Instant>,
    /// From sending upstream to the upstream's response header.
    pub upstream_elapsed: Option<Duration>,
}

/// What came of the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// An answer the gateway gave itself: its status and RFC 6749 error code.
    pub local: Option<(u16, ErrorCode)>,
    pub upstream_status: Option<u16>,
    /// Why the gateway's own exchange with the upstream failed (token routes): the access log's
    /// `error`.
    pub upstream_failure: Option<&'static str>,
}

impl Ctx {
    pub fn new(rt: Arc<Runtime>) -> Ctx {
        Ctx {
            rt,
            request_id: String::new(),
            client_ip: None,
            forwarding: Forwarding::default(),
            upstream_addr: None,
            connect_retried: false,
            route: None,
            state: RouteState::Passthrough,
            timing: Timing {
                started: Instant::now(),
                upstream_started: None,
                upstream_elapsed: None,
            },
            outcome: Outcome::default(),
        }
    }

    /// Sets and removes the forwarding fields of the request going upstream (see
    /// [`crate::client_addr`]). The client's hop-by-hop fields must be gone already: a field the gateway
    /// sets is never removed after it.
    pub fn forward_fields(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        let edits = self.forwarding.edits(&self.rt.settings.server.forwarding);
        for name in edits.remove {
            req.remove_header(*name);
        }
        if let Some(v) = edits.x_forwarded_for {
            req.insert_header("X-Forwarded-For", v)?;
        }
        if let Some(v) = edits.forwarded {
            req.insert_header("Forwarded", v)?;
        }
        Ok(())
    }

    /// Takes what every request needs from its head: its ID, its client's address, and the
    /// keep-alive the connection gets.
    pub fn begin(&mut self, session: &mut Session) {
        let server = &self.rt.settings.server;
        let req = session.req_header();
        self.request_id = observe::request_id(req.headers.get("x-request-id"));
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let policy = &server.forwarding;
        self.forwarding = if policy.trusted.is_empty() {
            Forwarding::read(peer, policy, &[])
        } else {
            let values: Vec<&[u8]> = req
                .headers
                .get_all(policy.header.name())
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            Forwarding::read(peer, policy, &values)
        };
        self.client_ip = self.forwarding.client;
        let keepalive = server.keepalive_timeout.as_secs().max(1);
        session.as_downstream_mut().set_keepalive(Some(keepalive));
    }

    /// The index of the upstream the request goes to: its route's, or the default.
    pub fn upstream_index(&self) -> usize {
        let s = &self.rt.settings;
        self.route
            .as_ref()
            .map_or(s.default_upstream, |r| s.routes[r.index].upstream)
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.rt.upstreams[self.upstream_index()]
    }

    /// The route's name for metrics and logs.
    pub fn route_name(&self) -> &str {
        self.route.as_ref().map_or(metrics::NO_ROUTE, |r| {
            &self.rt.settings.routes[r.index].name
        })
    }

    pub fn env_id(&self) -> Option<&str> {
        self.route.as_ref()?.env_id.as_deref()
    }

    /// Records an answer the gateway gives itself.
    pub fn answered_locally(&mut self, e: &OAuthError) {
        self.outcome.local = Some((e.status, e.code));
    }

    /// What the request was, as metrics and the access log name it.
    fn action(&self) -> (Option<MethodSeen>, Action) {
        match &self.state {
            RouteState::Token(t) => t.action(),
            RouteState::Refused => (None, Action::Rejected),
            RouteState::Jwks => (None, Action::Jwks),
            RouteState::Discovery(d) if d.rewritten() => (None, Action::Rewritten),
            RouteState::Discovery(_) | RouteState::Passthrough => (None, Action::Passthrough),
        }
    }

    /// The finished request, for [`crate::observe::finish`]. `sent`: the status of the answer
    /// Pingora wrote, if any (a local answer's status takes precedence).
    pub fn finished<'a>(&'a self, sent: Option<u16>, error: Option<&'a Error>) -> Finished<'a> {
        let (method_seen, action) = self.action();
        let (client_id, upstream_method) = match &self.state {
            RouteState::Token(t) => (t.client_id(), t.upstream_method()),
            _ => (None, None),
        };
        Finished {
            request_id: &self.request_id,
            client_ip: self.client_ip,
            route: self.route_name(),
            env_id: self.env_id(),
            client_id,
            method_seen,
            upstream_method,
            action,
            status: self
                .outcome
                .local
                .map(|(status, _)| status)
                .or(sent)
                .unwrap_or(0),
            local_error: self.outcome.local.map(|(_, code)| code),
            upstream_status: self.outcome.upstream_status,
            upstream_failure: self.outcome.upstream_failure,
            upstream_elapsed: self.timing.upstream_elapsed,
            total: self.timing.started.elapsed(),
            error,
        }
    }
}
