//! Routing: which configured route a request path belongs to. Pure.
//!
//! A route matches either a segment pattern such as `/{env_id}/as/token` (PingOne's layout; a
//! `{name}` matches exactly one non-empty segment) or a plain path prefix. Routes are tried in
//! configuration order; the first match wins; no match means the default upstream, untouched.

use std::borrow::Cow;

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
        self.matches_as(path, str::eq)
    }

    /// Whether `path` matches with letters compared regardless of case.
    fn matches_folded(&self, path: &str) -> bool {
        self.matches_as(path, str::eq_ignore_ascii_case).is_some()
    }

    fn matches_as<'a>(
        &self,
        path: &'a str,
        same: impl Fn(&str, &str) -> bool,
    ) -> Option<Option<&'a str>> {
        match self {
            PathMatcher::Prefix(p) => {
                let head = path.get(..p.len())?;
                same(head, p).then_some(None)
            }
            PathMatcher::Pattern(segments) => {
                let mut env = None;
                let mut parts = path.strip_prefix('/')?.split('/');
                for seg in segments {
                    let part = parts.next()?;
                    match seg {
                        Segment::Literal(l) if same(l, part) => {}
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

/// A request-target in origin form (RFC 9112 §3.2.1: path and query): an absolute-form target
/// (`http://host/path?q`, §3.2.2) loses its scheme and authority, which the upstream takes from
/// `Host` instead (an empty path is `/`); any other form is returned as it is.
pub fn origin_form(target: &[u8]) -> Cow<'_, [u8]> {
    let Some(sep) = target.windows(3).position(|w| w == b"://") else {
        return Cow::Borrowed(target);
    };
    // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
    let scheme = &target[..sep];
    let is_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !is_scheme {
        return Cow::Borrowed(target);
    }
    let rest = &target[sep + 3..];
    match rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')) {
        Some(i) if rest[i] == b'/' => Cow::Borrowed(&rest[i..]),
        Some(i) => Cow::Owned([b"/".as_slice(), &rest[i..]].concat()),
        None => Cow::Borrowed(b"/"),
    }
}

/// The path of a request-target (origin or absolute form), without its query.
pub fn target_path(target: &[u8]) -> Cow<'_, [u8]> {
    match origin_form(target) {
        Cow::Borrowed(t) => Cow::Borrowed(t.split(|&b| b == b'?').next().unwrap_or_default()),
        Cow::Owned(t) => {
            let end = t.iter().position(|&b| b == b'?').unwrap_or(t.len());
            Cow::Owned(t[..end].to_vec())
        }
    }
}

/// The path routes are matched against: percent-escapes of unreserved characters decoded, dot
/// segments resolved, empty segments and a trailing `/` dropped (RFC 3986 §6.2.2). Servers
/// normalize paths in such ways, so `/env/as//token/` or `/env/as/%74oken` reach their token
/// endpoint: matching the normalized path keeps such spellings from slipping past a route's
/// checks. The request itself is forwarded as sent.
///
/// Normalizing is repeated until nothing changes: a `%` that starts no escape followed by an
/// escape of a hex digit spells a new escape (`/%7%34oken` → `/%74oken` → `/token`), and a server
/// that decodes twice reads it so. Each pass that changes the path shortens it, so this ends.
pub fn normalize(path: &str) -> Cow<'_, str> {
    let mut current = match normalize_once(path) {
        Cow::Borrowed(p) => return Cow::Borrowed(p),
        Cow::Owned(p) => p,
    };
    loop {
        match normalize_once(&current) {
            Cow::Owned(next) if next != current => current = next,
            _ => return Cow::Owned(current),
        }
    }
}

fn normalize_once(path: &str) -> Cow<'_, str> {
    let plain = !path.contains(['%', '.'])
        && !path.contains("//")
        && (path.len() <= 1 || !path.ends_with('/'));
    if plain || !path.starts_with('/') {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Whether `path` reaches one of `protected` only when read the way lenient servers read paths:
/// letters in any case (ASP.NET Core, IdentityServer), `;` parameters stripped from segments
/// (Servlet containers), `%2F` and `%5C` decoded and `\` taken as `/` (IIS, some frameworks). Such
/// a path would reach that endpoint at the server past the route's checks, so the gateway refuses
/// it. A path that matches a protected route as it is never gets here.
pub fn reaches_disguised<'m>(
    protected: impl IntoIterator<Item = &'m PathMatcher>,
    path: &str,
) -> bool {
    let lenient = lenient_reading(path);
    protected.into_iter().any(|m| m.matches_folded(&lenient))
}

/// `path` as lenient servers read it (but for the letters' case, which the matching folds).
fn lenient_reading(path: &str) -> Cow<'_, str> {
    if path.contains(['\\', ';', '%']) {
        Cow::Owned(normalize(&lenient_segments(path)).into_owned())
    } else {
        // Nothing else to read leniently (the common case: no allocation).
        normalize(path)
    }
}

/// `;` parameters stripped, `%2F` and `%5C` decoded, `\` taken as `/`.
fn lenient_segments(path: &str) -> String {
    let mut lenient = String::with_capacity(path.len());
    for (i, seg) in path.split(['/', '\\']).enumerate() {
        if i > 0 {
            lenient.push('/');
        }
        let seg = seg.split(';').next().unwrap_or_default();
        lenient.push_str(&replace_folded(
            &replace_folded(seg, "%2f", "/"),
            "%5c",
            "/",
        ));
    }
    lenient
}

/// `s` with every occurrence of the ASCII `needle`, in any case, replaced by `with`.
fn replace_folded<'a>(s: &'a str, needle: &str, with: &str) -> Cow<'a, str> {
    let find = |rest: &str| {
        rest.char_indices().map(|(i, _)| i).find(|&i| {
            rest.get(i..i + needle.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(needle))
        })
    };
    let Some(first) = find(s) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut next = Some(first);
    while let Some(i) = next {
        out.push_str(&rest[..i]);
        out.push_str(with);
        rest = &rest[i + needle.len()..];
        next = find(rest);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decodes `%XX` where it stands for an unreserved character (ALPHA, DIGIT, `-._~`); every other
/// escape stays as it is (a `%2F` is not a segment separator).
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(c) = hex.filter(|c| c.is_ascii_alphanumeric() || b"-._~".contains(c)) {
                out.push(c as char);
                i += 3;
                continue;
            }
        }
        // Paths are ASCII on the wire; anything else is copied through by char.
        let ch = path[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_targets_become_origin_form_others_stay_as_they_are() {
        let o = |t: &str| String::from_utf8(origin_form(t.as_bytes()).into_owned()).unwrap();
        assert_eq!(o("http://evil.example/env-1/as/token"), "/env-1/as/token");
        assert_eq!(o("HTTPS://a:8443/x?y=1"), "/x?y=1");
        assert_eq!(o("http://a?y=1"), "/?y=1");
        assert_eq!(o("http://a"), "/");
        assert_eq!(
            o("/env/as/token?x=http://b/c"),
            "/env/as/token?x=http://b/c"
        );
        assert_eq!(o("*"), "*");
        assert_eq!(o("1http://a/b"), "1http://a/b", "not a scheme");
        assert_eq!(&*target_path(b"http://a/p?q=1"), b"/p");
        assert_eq!(&*target_path(b"/p?q=1"), b"/p");
        assert_eq!(&*target_path(b"http://a?q"), b"/");
    }
    use proptest::prelude::*;

    #[test]
    fn escapes_spelled_by_decoding_are_decoded_too() {
        // Found by the routing fuzz target (fuzz/corpus/routing/finding-normalize-not-idempotent).
        assert_eq!(normalize("/%3%33"), "/3");
        assert_eq!(normalize("/e/as/%7%34oken"), "/e/as/token");
        // `%25` is not unreserved: it stays, so a double-encoded path is left alone.
        assert_eq!(normalize("/e/as/%25%37%34oken"), "/e/as/%2574oken");
    }

    #[test]
    fn spellings_of_the_token_path_normalize_to_it() {
        let env = "5a0b3c2d-1111-2222-3333-444455556666";
        let want = format!("/{env}/as/token");
        for p in [
            format!("/{env}/as/token"),
            format!("/{env}/as/token/"),
            format!("/{env}//as///token"),
            format!("/{env}/as/./token"),
            format!("/{env}/x/../as/token"),
            format!("/{env}/as/%74oken"),
            format!("/{env}/as/%2e/token"),
            format!("/{env}/as/x/%2E%2E/token"),
            format!("/%35{}/as/token", &env[1..]),
        ] {
            assert_eq!(normalize(&p), want, "{p}");
            let m = token()
                .matches(&normalize(&p))
                .map(|e| e.map(str::to_string));
            assert_eq!(m, Some(Some(env.to_string())), "{p}");
        }
    }

    #[test]
    fn normalizing_keeps_what_it_must() {
        // A plain path is not copied.
        assert!(matches!(normalize("/e/as/token"), Cow::Borrowed(_)));
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(normalize("//"), "/");
        // Escapes of reserved or non-ASCII bytes stay escaped: %2F is not a separator.
        assert_eq!(normalize("/e/as%2Ftoken"), "/e/as%2Ftoken");
        assert_eq!(normalize("/e/%C3%A9/x/"), "/e/%C3%A9/x");
        // Broken escapes are left alone.
        assert_eq!(normalize("/e/%zz/%4/"), "/e/%zz/%4");
        assert_eq!(normalize("/e/%"), "/e/%");
        assert_eq!(normalize("*"), "*");
    }

    proptest! {
        /// A normalized path has no empty, `.` or `..` segment and no trailing `/`; it decodes
        /// once (as servers do), so `%2541` stays `%2541`.
        #[test]
        fn normalized_paths_are_plain(p in "/[a-z%./0-9A-F]{0,30}") {
            let n = normalize(&p).into_owned();
            prop_assert!(n.starts_with('/'));
            if n != "/" {
                for seg in n[1..].split('/') {
                    prop_assert!(!matches!(seg, "" | "." | ".."), "{} -> {}", p, n);
                }
            }
        }

        #[test]
        fn normalize_takes_any_string(p in "\\PC{0,40}") {
            let _ = normalize(&p);
        }

        #[test]
        fn normalize_is_idempotent(p in "/[a-z%./0-9A-F]{0,30}") {
            let once = normalize(&p).into_owned();
            prop_assert_eq!(normalize(&once).into_owned(), once);
        }
    }

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

    #[test]
    fn disguised_spellings_of_a_protected_path_are_recognized() {
        let token = [PathMatcher::pattern("/{env_id}/as/token").unwrap()];
        for p in [
            "/env-1/as/TOKEN",
            "/env-1/AS/Token",
            "/env-1/as/token;jsessionid=1",
            "/env-1/as;x=1/token",
            "/env-1/as%2Ftoken",
            "/env-1/as%2ftoken",
            "/env-1/as%5Ctoken",
            "/env-1\\as\\token",
            "/env-1/as/%54OKEN",
            "/env-1/as/x/..%2Ftoken",
        ] {
            assert!(reaches_disguised(&token, p), "{p}");
        }
        for p in [
            "/env-1/as/authorize",
            "/env-1/as/tokens",
            "/env-1/as/token/x",
            "/as/token",
        ] {
            assert!(!reaches_disguised(&token, p), "{p}");
        }
        let prefix = [PathMatcher::prefix("/oauth2/").unwrap()];
        assert!(reaches_disguised(&prefix, "/OAuth2/token"));
        assert!(!reaches_disguised(&prefix, "/oauth/token"));
    }

    #[test]
    fn folded_replacement_replaces_every_case() {
        assert_eq!(replace_folded("a%2Fb%2fc", "%2f", "/"), "a/b/c");
        assert_eq!(replace_folded("é%2F", "%2f", "/"), "é/");
        assert_eq!(replace_folded("plain", "%2f", "/"), "plain");
    }

    proptest! {
        #[test]
        fn disguise_check_takes_any_string(p in "\\PC{0,40}") {
            let token = [PathMatcher::pattern("/{env_id}/as/token").unwrap()];
            let _ = reaches_disguised(&token, &p);
        }

        #[test]
        fn the_shortcut_for_plain_paths_reads_them_as_the_lenient_rules_do(
            p in "[a-zA-Z0-9/._~-]{0,40}"
        ) {
            let slow = lenient_segments(&p);
            prop_assert_eq!(lenient_reading(&p), normalize(&slow));
        }
    }
}
