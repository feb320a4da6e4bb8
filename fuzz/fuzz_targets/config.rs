//! `config::Settings::parse` on any text: it returns the settings or a `ConfigError`, never panics,
//! and settings that parse hold the invariants the rest of the gateway relies on.
//!
//! `parse` reads the files the text names (certificates, CA bundles). The target never writes
//! anything, and it skips inputs naming any file but the fixtures (`@fixtures/<name>` in the input
//! stands for `fuzz/fixtures/<name>`), so that no input opens `/dev/zero`, a FIFO, or stdin.
//!
//! Invariants when it parses:
//! - At least one upstream, names unique; `default_upstream` and every route's upstream are in
//!   range, and `default_upstream` is the upstream the text names.
//! - Every bound the lowering checks holds: body cap in 1..=64 KiB, threads in 1..=256, durations
//!   positive, at least one listen address, TLS listeners and the admin listener apart from the
//!   plain ones, a realm that fits in a header, an admin token of 16+ characters without spaces,
//!   never shown by `Debug`; validating routes have client records; discovery rewrites have a
//!   base URL without a trailing `/` and a non-empty list of distinct methods.
//! - Parsing is deterministic (text that parses gives the same settings again).
//! When it does not: the error is `Parse` or `Invalid` (never `Read`: no configuration file is
//! read), with a non-empty message and key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::config::{ClientSource, ConfigError, RouteMode, Settings, MAX_BODY_CAP};
use tokengate::routing::{PathMatcher, Segment};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/");
const FIXTURE_FILES: [&str; 5] = [
    "cert.pem",
    "key.pem",
    "garbage.pem",
    "bad-cert.pem",
    "empty.pem",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.replace("@fixtures/", FIXTURES);
    let table = toml::from_str::<toml::Table>(&text).ok();
    if table.as_ref().is_some_and(|t| !reads_only_fixtures(t)) {
        return;
    }
    let first = Settings::parse(&text);
    if let Ok(a) = &first {
        // Settings that parse, parse again the same (errors, most inputs, are not parsed twice:
        // that would halve the speed).
        match Settings::parse(&text) {
            Ok(b) => assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "parse is not deterministic"
            ),
            Err(e) => panic!("parse is not deterministic: Ok, then {e:?}"),
        }
    }
    match first {
        Ok(s) => check_settings(&s, table.as_ref().expect("settings parse from TOML")),
        Err(ConfigError::Read { .. }) => panic!("parse read a configuration file: {first:?}"),
        Err(ConfigError::Parse(m)) => assert!(!m.is_empty()),
        Err(ConfigError::Invalid { key, message }) => {
            assert!(
                !key.is_empty() && !message.is_empty(),
                "{key:?}: {message:?}"
            )
        }
    }
});

/// Whether every file the configuration may read is one of the fixtures.
fn reads_only_fixtures(t: &toml::Table) -> bool {
    let fixture = |v: &toml::Value| match v.as_str() {
        Some(path) => path
            .strip_prefix(FIXTURES)
            .is_some_and(|name| FIXTURE_FILES.contains(&name)),
        None => true, // Not a string: refused before anything is read.
    };
    let server = t.get("server").and_then(toml::Value::as_table);
    let server_ok = ["tls_cert", "tls_key"]
        .iter()
        .all(|k| server.and_then(|s| s.get(*k)).is_none_or(fixture));
    let upstreams_ok = match t.get("upstreams").and_then(toml::Value::as_table) {
        Some(ups) => ups.values().all(|u| {
            u.as_table()
                .and_then(|u| u.get("ca_file"))
                .is_none_or(fixture)
        }),
        None => true,
    };
    server_ok && upstreams_ok
}

fn check_settings(s: &Settings, t: &toml::Table) {
    let n = s.upstreams.len();
    assert!(n >= 1, "no upstream");
    assert!(s.default_upstream < n, "default_upstream out of range");
    assert_eq!(
        Some(s.upstreams[s.default_upstream].name.as_str()),
        t.get("default_upstream").and_then(toml::Value::as_str)
    );
    for (i, u) in s.upstreams.iter().enumerate() {
        assert!(
            s.upstreams[..i].iter().all(|v| v.name != u.name),
            "upstream {:?} twice",
            u.name
        );
        assert!(!u.host.is_empty() && !u.host_header.is_empty());
        assert!(!u
            .host_header
            .chars()
            .any(|c| c.is_whitespace() || c.is_control()));
        for d in [
            u.connect_timeout,
            u.total_connection_timeout,
            u.read_timeout,
            u.write_timeout,
            u.idle_timeout,
            u.resolve_interval,
        ] {
            assert!(!d.is_zero(), "upstream {:?}: a zero timeout", u.name);
        }
        assert!(
            u.tls || (u.ca.is_none() && u.tls_verify),
            "TLS settings on http"
        );
        if let Some(ca) = &u.ca {
            assert!(!ca.is_empty());
        }
    }

    assert!((1..=MAX_BODY_CAP).contains(&s.token.max_body_bytes));
    assert!(!s.token.body_timeout.is_zero());
    assert!(!s.server.listen.is_empty());
    assert!((1..=256).contains(&s.server.threads));
    assert!(!s
        .server
        .realm
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control()));
    if let Some(tls) = &s.server.tls {
        assert!(!tls.listen.is_empty());
        assert!(tls.listen.iter().all(|a| !s.server.listen.contains(a)));
    }

    let routes_in_text = t
        .get("routes")
        .and_then(toml::Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(s.routes.len(), routes_in_text);
    for (i, r) in s.routes.iter().enumerate() {
        assert!(r.upstream < n, "routes[{i}].upstream out of range");
        match &r.matcher {
            PathMatcher::Pattern(segments) => {
                assert!(!segments.is_empty());
                for seg in segments {
                    if let Segment::Literal(l) = seg {
                        assert!(!l.is_empty() && !l.contains(['/', '{', '}', '?', '#']));
                    }
                }
            }
            PathMatcher::Prefix(p) => assert!(p.starts_with('/')),
        }
        match &r.mode {
            RouteMode::Passthrough | RouteMode::Jwks => {}
            RouteMode::Token(t) => assert!(!t.validate || s.clients.is_some()),
            RouteMode::Discovery(d) => {
                if let Some(base) = &d.public_base_url {
                    assert!(base.starts_with("https://") || base.starts_with("http://"));
                    assert!(!base.ends_with('/') && !base.contains(['?', '#', '@']));
                }
                if let Some(methods) = &d.auth_methods {
                    assert!(!methods.is_empty());
                    for (j, m) in methods.iter().enumerate() {
                        assert!(!methods[..j].contains(m), "{m:?} advertised twice");
                    }
                }
            }
        }
    }

    if let Some(c) = &s.clients {
        for d in [
            c.reload_interval,
            c.registry_timeout,
            c.cache_ttl,
            c.cache_negative_ttl,
            c.verified_ttl,
            c.lockout.window,
        ] {
            assert!(!d.is_zero(), "a zero clients duration");
        }
        for k in [
            c.cache_capacity,
            c.verified_capacity,
            c.max_pending_verifications,
            c.registry_max_inflight,
        ] {
            assert!(k > 0);
        }
        match &c.source {
            ClientSource::File(p) => assert!(!p.as_os_str().is_empty()),
            ClientSource::Registry { upstream, .. } => {
                assert!(!upstream.host.is_empty() && !upstream.read_timeout.is_zero())
            }
        }
    }

    if let Some(a) = &s.admin {
        assert!(!s.server.listen.contains(&a.listen));
        if let Some(token) = &a.bearer_token {
            assert!(token.len() >= 16);
            assert!(!token.chars().any(|c| c.is_whitespace() || c.is_control()));
        }
        assert_eq!(
            format!("{a:?}"),
            format!(
                "AdminSettings {{ listen: {:?}, bearer_token: {:?} }}",
                a.listen,
                a.bearer_token.as_ref().map(|_| "<redacted>")
            ),
            "Debug of the admin settings shows more than it should"
        );
    }
}
