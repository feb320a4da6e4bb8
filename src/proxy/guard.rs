//! Requests refused whatever route they take: a path that reaches a protected endpoint (token or
//! discovery route) only in a disguise, and client secrets in the query string of a request to a
//! server that hosts a token endpoint. Either would otherwise reach that server past the checks.

use pingora::http::RequestHeader;

use crate::config::{RouteMode, Settings};
use crate::protocol::{query_carries_secrets, OAuthError};
use crate::routing;

/// The answer for a request that must not go anywhere, if it is one. `path` is the normalized
/// path; `route` the route it matched, `upstream` where it would go.
pub fn refuse(
    settings: &Settings,
    req: &RequestHeader,
    path: &str,
    route: Option<usize>,
    upstream: usize,
) -> Option<OAuthError> {
    let mode = route.map(|r| &settings.routes[r].mode);
    let query = req.uri.query().map(str::as_bytes);
    if matches!(mode, Some(RouteMode::Token(_))) {
        // The token route's own checks apply (query credentials included), but a CORS
        // preflight passes to the server before them: its query is checked here.
        let preflight = req.method == http::Method::OPTIONS;
        return (preflight && query.is_some_and(query_carries_secrets)).then(query_secrets);
    }
    let protected = settings
        .routes
        .iter()
        .filter(|r| !matches!(r.mode, RouteMode::Passthrough | RouteMode::Jwks))
        .map(|r| &r.matcher);
    // A request that matched a route as it is spelled is not a disguise (the JWKS, public keys,
    // needs no protection).
    let on_protected = matches!(mode, Some(RouteMode::Discovery(_) | RouteMode::Jwks));
    if settings.server.strict_paths && !on_protected && routing::reaches_disguised(protected, path)
    {
        return Some(
            OAuthError::invalid_request(
                "the request path names a protected endpoint in a non-canonical spelling",
            )
            .closing(),
        );
    }
    let hosts_token_endpoint = settings
        .routes
        .iter()
        .any(|r| r.upstream == upstream && matches!(r.mode, RouteMode::Token(_)));
    if hosts_token_endpoint && query.is_some_and(query_carries_secrets) {
        return Some(query_secrets());
    }
    None
}

/// RFC 6749 §2.3.1: credentials never in the query string.
fn query_secrets() -> OAuthError {
    OAuthError::invalid_request("client credentials must not be sent in the query string").closing()
}
