//! Routing: which configured route a request path belongs to. Pure.
//!
//! A route matches either a segment pattern such as `/{env_id}/as/token` (PingOne's layout; a
//! `{name}` matches exactly one non-empty segment) or a plain path prefix. Routes are tried in
//! configuration order; the first match wins; no match means the default upstream, untouched.

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatcher {
    Pattern(Vec<Segment>),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment (the environment ID in PingOne's layout).
    Param,
}

impl PathMatcher {
    /// Parses a pattern such as `/{env_id}/as/token`.
    pub fn pattern(p: &str) -> Result<PathMatcher, String> {
        let rest = p
            .strip_prefix('/')
            .ok_or_else(|| format!("{p:?} must start with '/'"))?;
        if p.contains(['?', '#']) || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{p:?} must be a plain path (no query, fragment or spaces)"
            ));
        }
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            if seg.is_empty() {
                return Err(format!("{p:?} has an empty segment"));
            }
            if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
                segments.push(Segment::Param);
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "{p:?}: a parameter must be a whole segment, like /{{env_id}}/as/token"
                ));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(PathMatcher::Pattern(segments))
    }

    /// A prefix such as `/oauth2/`.
    pub fn prefix(p: &str) -> Result<PathMatcher, String> {
        if !p.starts_with('/') {
            return Err(format!("{p:?} must start with '/'"));
        }
        if p.contains(['?', '#', '{', '}'])
            || p.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("{p:?} must be a plain path prefix"));
        }
        Ok(PathMatcher::Prefix(p.to_string()))
    }

    /// Whether `path` (without query) matches; for patterns, the first `{param}` value
    /// (the environment ID) is returned as well.
    pub fn matches<'a>(&self, path: &'a str) -> Option<Option<&'a str>> {
        match self {
            PathMatcher::Prefix(p) => path.starts_with(p.as_str()).then_some(None),
            PathMatcher::Pattern(segments) => {
                let mut env = None;
                let mut parts = path.strip_prefix('/')?.split('/');
                for seg in segments {
                    let part = parts.next()?;
                    match seg {
                        Segment::Literal(l) if l == part => {}
                        Segment::Param if !part.is_empty() => {
                            env.get_or_insert(part);
                        }
                        _ => return None,
                    }
                }
                parts.next().is_none().then_some(env)
            }
        }
    }
}

/// A matched route: its index in the configuration and the environment ID, if the pattern had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched<'a> {
    pub route: usize,
    pub env_id: Option<&'a str>,
}

/// Finds the first route whose matcher accepts `path`.
pub fn route<'a, 'm>(
    matchers: impl IntoIterator<Item = &'m PathMatcher>,
    path: &'a str,
) -> Option<Matched<'a>> {
    matchers
        .into_iter()
        .enumerate()
        .find_map(|(route, m)| m.matches(path).map(|env_id| Matched { route, env_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> PathMatcher {
        PathMatcher::pattern("/{env_id}/as/token").unwrap()
    }

    #[test]
    fn pingone_layout_matches_and_captures_the_environment() {
        let env = "5a0b3c2d-1111-2222-3333-444455556666";
        assert_eq!(
            token().matches(&format!("/{env}/as/token")),
            Some(Some(env))
        );
    }

    #[test]
    fn pattern_needs_every_segment_exactly() {
        for p in [
            "/as/token",
            "//as/token",
            "/e/as/token/",
            "/e/as/token/x",
            "/e/as/tokens",
            "/e/AS/token",
            "e/as/token",
            "",
        ] {
            assert_eq!(token().matches(p), None, "{p}");
        }
    }

    #[test]
    fn prefix_matches_by_prefix() {
        let m = PathMatcher::prefix("/oauth2/").unwrap();
        assert_eq!(m.matches("/oauth2/token"), Some(None));
        assert_eq!(m.matches("/oauth2"), None);
    }

    #[test]
    fn first_matching_route_wins() {
        let ms = [
            PathMatcher::prefix("/x/").unwrap(),
            token(),
            PathMatcher::prefix("/").unwrap(),
        ];
        assert_eq!(route(&ms, "/e/as/token").map(|m| m.route), Some(1));
        assert_eq!(route(&ms, "/x/as/token").map(|m| m.route), Some(0));
        assert_eq!(route(&ms, "/other").map(|m| m.route), Some(2));
        assert_eq!(route(&ms[..2], "/other"), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in ["as/token", "/a//b", "/a/{x", "/a/b{x}", "/a?b", "/a b"] {
            assert!(PathMatcher::pattern(p).is_err(), "{p}");
        }
        assert!(PathMatcher::prefix("x").is_err());
    }
}
