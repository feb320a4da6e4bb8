//! Lowering of `[[routes]]`: each route's path, upstream and mode, checked key by key.

use std::sync::Arc;
use std::time::Duration;

use super::file::{FileFallback, FileMode, FileRoute};
use super::settings::{RouteMode, RouteSettings, TokenMode, UpstreamSettings};
use super::{invalid, ConfigError};
use crate::protocol::{AuthMethod, Conversion, DiscoveryRewrite, Endpoint};
use crate::routing::PathMatcher;

/// The upstream named `name` (`key` names the key that names it).
pub(super) fn find_upstream(
    upstreams: &[UpstreamSettings],
    key: &str,
    name: &str,
) -> Result<usize, ConfigError> {
    upstreams
        .iter()
        .position(|u| u.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = upstreams.iter().map(|u| u.name.as_str()).collect();
            invalid(
                key,
                format!("no upstream named {name:?} (known: {})", known.join(", ")),
            )
        })
}

/// What a route may refer to.
pub(super) struct RouteTargets<'a> {
    pub(super) upstreams: &'a [UpstreamSettings],
    pub(super) default_upstream: usize,
    /// The configuration has a `[clients]` section (validating routes need one).
    pub(super) has_clients: bool,
}

pub(super) fn lower_route(
    i: usize,
    r: FileRoute,
    to: &RouteTargets<'_>,
) -> Result<RouteSettings, ConfigError> {
    let key = &format!("routes[{i}]");
    let matcher = match (r.path, r.path_prefix) {
        (Some(p), None) => {
            PathMatcher::pattern(&p).map_err(|m| invalid(format!("{key}.path"), m))?
        }
        (None, Some(p)) => {
            PathMatcher::prefix(&p).map_err(|m| invalid(format!("{key}.path_prefix"), m))?
        }
        _ => {
            return Err(invalid(
                key,
                "set exactly one of `path` (e.g. \"/{env_id}/as/token\") or `path_prefix`",
            ))
        }
    };
    let upstream = match &r.upstream {
        Some(name) => find_upstream(to.upstreams, &format!("{key}.upstream"), name)?,
        None => to.default_upstream,
    };
    let token_route = matches!(
        r.mode,
        FileMode::ToBasic | FileMode::ToPost | FileMode::Validate | FileMode::PerClient
    );
    if r.validate && !token_route {
        return Err(invalid(
            format!("{key}.validate"),
            "only applies with mode \"to_basic\" or \"to_post\" (mode = \"validate\" validates anyway)",
        ));
    }
    if r.validate && r.mode == FileMode::PerClient {
        return Err(invalid(
            format!("{key}.validate"),
            "does not apply to mode \"per_client\" (records decide without checking secrets; \
             mode = \"validate\" checks them)",
        ));
    }
    for (set, name) in [
        (r.endpoint.is_some(), "endpoint"),
        (r.assertion_audience.is_some(), "assertion_audience"),
        (r.assertion_lifetime.is_some(), "assertion_lifetime"),
    ] {
        if set && !token_route {
            return Err(invalid(
                format!("{key}.{name}"),
                "only applies with mode \"to_basic\", \"to_post\", \"validate\" or \"per_client\"",
            ));
        }
    }
    if r.fallback.is_some() && r.mode != FileMode::PerClient {
        return Err(invalid(
            format!("{key}.fallback"),
            "only applies with mode = \"per_client\"",
        ));
    }
    for (set, name) in [
        (r.public_base_url.is_some(), "public_base_url"),
        (r.auth_methods.is_some(), "auth_methods"),
    ] {
        if set && r.mode != FileMode::Discovery {
            return Err(invalid(
                format!("{key}.{name}"),
                "only applies with mode = \"discovery\"",
            ));
        }
    }
    let endpoint = match &r.endpoint {
        None => Endpoint::Token,
        Some(e) => Endpoint::parse(e).ok_or_else(|| {
            let known: Vec<_> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
            invalid(
                format!("{key}.endpoint"),
                format!("unknown endpoint {e:?} (one of: {})", known.join(", ")),
            )
        })?,
    };
    let assertion_audience = match &r.assertion_audience {
        Some(a) if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            return Err(invalid(
                format!("{key}.assertion_audience"),
                "must be a URL (or an identifier) without spaces; {env_id} is replaced",
            ))
        }
        a => a.as_deref().map(Arc::from),
    };
    let defaults = TokenMode::default();
    let assertion_lifetime = r.assertion_lifetime.unwrap_or(defaults.assertion_lifetime);
    if assertion_lifetime < Duration::from_secs(1) || assertion_lifetime > Duration::from_secs(3600)
    {
        return Err(invalid(
            format!("{key}.assertion_lifetime"),
            "must be between 1s and 1h",
        ));
    }
    let token = |conversion, validate, per_client| {
        RouteMode::Token(TokenMode {
            conversion,
            validate,
            per_client,
            endpoint,
            assertion_audience: assertion_audience.clone(),
            assertion_lifetime,
        })
    };
    let mode = match r.mode {
        FileMode::Passthrough => RouteMode::Passthrough,
        FileMode::ToBasic => token(Some(Conversion::ToBasic), r.validate, false),
        FileMode::ToPost => token(Some(Conversion::ToPost), r.validate, false),
        FileMode::Validate => token(None, true, false),
        FileMode::PerClient => {
            let fallback = match r.fallback {
                None | Some(FileFallback::AsSent) => None,
                Some(FileFallback::ToBasic) => Some(Conversion::ToBasic),
                Some(FileFallback::ToPost) => Some(Conversion::ToPost),
            };
            token(fallback, false, true)
        }
        FileMode::Jwks => RouteMode::Jwks,
        FileMode::Discovery => RouteMode::Discovery(Arc::new(DiscoveryRewrite {
            public_base_url: r
                .public_base_url
                .as_deref()
                .map(|u| lower_public_base_url(&format!("{key}.public_base_url"), u))
                .transpose()?,
            auth_methods: r
                .auth_methods
                .as_deref()
                .map(|m| lower_advertised_methods(&format!("{key}.auth_methods"), m))
                .transpose()?,
        })),
    };
    let needs_records = matches!(
        mode,
        RouteMode::Token(
            TokenMode { validate: true, .. }
                | TokenMode {
                    per_client: true,
                    ..
                }
        )
    );
    if needs_records && !to.has_clients {
        return Err(invalid(
            format!("{key}.mode"),
            "validating (or per_client) needs client records: add a [clients] section",
        ));
    }
    Ok(RouteSettings {
        name: r.name.unwrap_or_else(|| format!("route{i}")),
        matcher,
        mode,
        upstream,
    })
}

/// A discovery route's public base URL: `http(s)://host[:port][/path]`, kept without a trailing
/// `/`.
fn lower_public_base_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(key, format!("{url:?} must start with https:// or http://")))?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    if host_end == 0
        || url.contains(['?', '#', '@'])
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            key,
            format!("{url:?} must be scheme://host[:port][/path], without query, fragment or user"),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A discovery route's advertised methods: RFC 8414 names, PingOne's capitals accepted; written
/// out in RFC form, each once.
fn lower_advertised_methods(key: &str, methods: &[String]) -> Result<Vec<AuthMethod>, ConfigError> {
    if methods.is_empty() {
        return Err(invalid(key, "list at least one method"));
    }
    let mut out: Vec<AuthMethod> = Vec::with_capacity(methods.len());
    for m in methods {
        let method = AuthMethod::parse(m).ok_or_else(|| {
            invalid(
                key,
                format!(
                    "unknown method {m:?} (one of: {})",
                    AuthMethod::names(&AuthMethod::ALL)
                ),
            )
        })?;
        if !out.contains(&method) {
            out.push(method);
        }
    }
    Ok(out)
}
