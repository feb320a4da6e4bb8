//! `routing`: `normalize`, `PathMatcher::pattern` / `prefix`, `route` and `reaches_disguised`.
//!
//! Input: UTF-8 text; the first line is a request path, every further line a route: a pattern
//! (`/{env_id}/as/token`), or a prefix when it starts with `~`.
//!
//! Invariants:
//! - `normalize` is idempotent; a normalized path starts with `/`, has no empty, `.` or `..`
//!   segment (so no `//`, `/./`, `/../`) and no trailing `/` (but `/` itself); a path not starting
//!   with `/` is left alone.
//! - A pattern that parses is its segments, each literal non-empty and brace-free; it matches the
//!   path spelled from it, capturing the first parameter; a refused pattern breaks a written rule.
//! - `route` picks the first matcher that matches, and its env_id is one segment of the path.
//! - `reaches_disguised` sees through the disguises it names: a path that matches a route once
//!   normalized still reaches it in capitals, with `;` parameters, with `\` or `%2F` for `/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::routing::{normalize, reaches_disguised, route, PathMatcher, Segment};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or_default();
    let matchers: Vec<PathMatcher> = lines
        .take(8)
        .filter_map(|spec| match spec.strip_prefix('~') {
            Some(prefix) => check_prefix(prefix),
            None => check_pattern(spec),
        })
        .collect();

    let n = normalize(path);
    check_normalized(path, &n);
    for p in [path, &*n] {
        check_route(&matchers, p);
    }
    let _ = reaches_disguised(&matchers, path);

    // Disguises of a path that reaches a route once normalized.
    if let Some(m) = route(&matchers, &n) {
        if !n.contains([';', '\\', '%']) {
            let protected = &matchers[m.route..=m.route];
            for disguised in disguises(&n) {
                assert!(
                    reaches_disguised(protected, &disguised),
                    "{disguised:?} (a disguise of {n:?}) was not seen to reach {:?}",
                    protected[0]
                );
            }
        }
    }
});

fn check_normalized(path: &str, n: &str) {
    if !path.starts_with('/') {
        assert_eq!(n, path, "a path without a leading / was changed");
        return;
    }
    assert!(n.starts_with('/'), "normalize({path:?}) = {n:?}");
    if n != "/" {
        assert!(!n.ends_with('/'), "normalize({path:?}) = {n:?} ends with /");
        for seg in n[1..].split('/') {
            assert!(
                !matches!(seg, "" | "." | ".."),
                "normalize({path:?}) = {n:?} has a {seg:?} segment"
            );
        }
    }
    let again = normalize(n);
    assert_eq!(again, n, "normalize is not idempotent on {path:?}");
}

fn check_pattern(spec: &str) -> Option<PathMatcher> {
    let Ok(m) = PathMatcher::pattern(spec) else {
        let rest = spec.strip_prefix('/');
        let broken = rest.is_none()
            || spec.contains(['?', '#'])
            || spec.chars().any(|c| c.is_whitespace() || c.is_control())
            || rest.is_some_and(|r| {
                r.split('/').any(|seg| {
                    seg.is_empty()
                        || (seg.contains(['{', '}'])
                            && !(seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2))
                })
            });
        assert!(broken, "pattern {spec:?} refused but breaks no rule");
        return None;
    };
    let PathMatcher::Pattern(segments) = &m else {
        panic!("pattern {spec:?} parsed as {m:?}")
    };
    let written: Vec<&str> = spec[1..].split('/').collect();
    assert_eq!(segments.len(), written.len());
    let mut sample = String::new();
    let mut first_param = None;
    for (i, (seg, w)) in segments.iter().zip(&written).enumerate() {
        sample.push('/');
        match seg {
            Segment::Literal(l) => {
                assert_eq!(l, w);
                assert!(!l.is_empty() && !l.contains(['{', '}', '/']));
                sample.push_str(l);
            }
            Segment::Param => {
                assert!(w.starts_with('{') && w.ends_with('}') && w.len() > 2);
                let v = format!("v{i}");
                first_param.get_or_insert_with(|| v.clone());
                sample.push_str(&v);
            }
        }
    }
    assert_eq!(
        m.matches(&sample),
        Some(first_param.as_deref()),
        "{spec:?} does not match {sample:?}"
    );
    Some(m)
}

fn check_prefix(spec: &str) -> Option<PathMatcher> {
    let Ok(m) = PathMatcher::prefix(spec) else {
        assert!(
            !spec.starts_with('/')
                || spec.contains(['?', '#', '{', '}'])
                || spec.chars().any(|c| c.is_whitespace() || c.is_control()),
            "prefix {spec:?} refused but breaks no rule"
        );
        return None;
    };
    assert_eq!(m.matches(&format!("{spec}x")), Some(None));
    assert_eq!(m.matches(spec), Some(None));
    Some(m)
}

fn check_route(matchers: &[PathMatcher], path: &str) {
    let first = matchers.iter().position(|m| m.matches(path).is_some());
    let got = route(matchers, path);
    assert_eq!(got.map(|m| m.route), first, "route({path:?})");
    if let Some(env) = got.and_then(|m| m.env_id) {
        assert!(!env.is_empty() && !env.contains('/'));
        assert!(
            path.split('/').any(|seg| seg == env),
            "env_id {env:?} is no segment of {path:?}"
        );
    }
}

/// Spellings that lenient servers read as `n`.
fn disguises(n: &str) -> Vec<String> {
    let tail = |sep: &str| format!("/{}", n[1..].replace('/', sep));
    vec![
        n.to_ascii_uppercase(),
        n.split('/')
            .map(|seg| {
                if seg.is_empty() {
                    seg.to_string()
                } else {
                    format!("{seg};jsessionid=1")
                }
            })
            .collect::<Vec<_>>()
            .join("/"),
        tail("\\"),
        tail("%2F"),
        tail("%5c"),
    ]
}
