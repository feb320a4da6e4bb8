//! End-to-end: the real gateway on a loopback port in front of a recording upstream. Each test is
//! one rule; assertions are on what the upstream received and what the client got.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use common::*;

fn gateway(up: &Upstream, mode: &str, extra: &str) -> Gateway {
    Gateway::start(&config(up.addr, &format!("{}{extra}", token_route(mode))))
}

// ---- conversion ----------------------------------------------------------------------------

#[test]
fn post_to_basic_sends_rfc6749_basic_and_keeps_other_parameters_byte_for_byte() {
    let up = Upstream::start(Behaviour {
        basic_only: true,
        ..Default::default()
    });
    let gw = gateway(&up, "to_basic", "");
    // client_secret is ": + % & = / space é %41"; the client_id has a colon.
    let body = "grant_type=authorization_code&code=a%2Bb%7E&client_id=my%3Aapp\
                &redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback\
                &client_secret=%3A+%2B+%25+%26+%3D+%2F+%C3%A9+%2541&resource=r1&resource=r2";
    let resp = gw.send(&token_post(ENV, &[FORM], body));
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.body_str(), TOKEN_JSON);

    let got = up.only();
    assert_eq!(got.start, format!("POST {ENV} HTTP/1.1"));
    assert_eq!(
        got.header("authorization").unwrap(),
        basic("my%3Aapp:%3A+%2B+%25+%26+%3D+%2F+%C3%A9+%2541")
    );
    let expected = "grant_type=authorization_code&code=a%2Bb%7E\
                    &redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback&resource=r1&resource=r2";
    assert_eq!(got.body_str(), expected);
    assert_eq!(
        got.header("content-length").unwrap(),
        expected.len().to_string()
    );
    assert_eq!(
        got.header("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(got.header("host").unwrap(), up.addr.to_string());
}

#[test]
fn basic_to_post_appends_form_encoded_credentials_and_removes_the_header() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_post", "");
    let auth = basic("my%3Aapp:s%3Ae+cr%C3%A9t%2541");
    let resp = gw.send(&token_post(
        ENV,
        &[FORM, ("Authorization", &auth)],
        "grant_type=client_credentials&scope=openid+profile",
    ));
    assert_eq!(resp.status(), 200);
    let got = up.only();
    assert_eq!(got.header("authorization"), None);
    let expected = "grant_type=client_credentials&scope=openid+profile\
                    &client_id=my%3Aapp&client_secret=s%3Ae+cr%C3%A9t%2541";
    assert_eq!(got.body_str(), expected);
    assert_eq!(
        got.header("content-length").unwrap(),
        expected.len().to_string()
    );
}

#[test]
fn raw_encoding_upstream_gets_base64_of_the_plain_credentials() {
    let up = Upstream::start(Behaviour::default());
    let toml = config(up.addr, &token_route("to_basic")).replace(
        "[upstreams.up]\n",
        "[upstreams.up]\nbasic_encoding = \"raw\"\n",
    );
    let gw = Gateway::start(&toml);
    let resp = gw.send(&token_post(
        ENV,
        &[FORM],
        "client_id=app&client_secret=p%2Bss%3Aw%25rd",
    ));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.only().header("authorization").unwrap(),
        basic("app:p+ss:w%rd")
    );
}

#[test]
fn public_client_and_requests_without_credentials_are_forwarded_unchanged() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let body = "grant_type=authorization_code&client_id=spa&code=xyz&code_verifier=v";
    assert_eq!(gw.send(&token_post(ENV, &[FORM], body)).status(), 200);
    let got = up.only();
    assert_eq!(got.body_str(), body);
    assert_eq!(got.header("authorization"), None);
}

#[test]
fn empty_secret_is_converted_to_basic_with_an_empty_password() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let resp = gw.send(&token_post(
        ENV,
        &[FORM],
        "grant_type=x&client_id=app&client_secret=",
    ));
    assert_eq!(resp.status(), 200);
    let got = up.only();
    assert_eq!(got.header("authorization").unwrap(), basic("app:"));
    assert_eq!(got.body_str(), "grant_type=x");
}

#[test]
fn mixed_case_header_names_are_understood() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_post", "");
    let auth = basic("app:s");
    let resp = gw.send(&token_post(
        ENV,
        &[
            ("CONTENT-TYPE", "application/x-www-form-urlencoded"),
            ("AUTHORIZATION", &auth),
        ],
        "grant_type=x",
    ));
    assert_eq!(resp.status(), 200);
    let got = up.only();
    assert_eq!(got.header("authorization"), None);
    assert_eq!(got.body_str(), "grant_type=x&client_id=app&client_secret=s");
}

#[test]
fn cors_preflight_on_a_token_route_goes_to_the_authorization_server() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let resp = gw.send(
        format!(
            "OPTIONS {ENV} HTTP/1.1\r\nHost: gw\r\nOrigin: https://spa.example\r\n\
             Access-Control-Request-Method: POST\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(resp.status(), 200);
    let got = up.only();
    assert_eq!(got.start, format!("OPTIONS {ENV} HTTP/1.1"));
    assert_eq!(got.header("origin").as_deref(), Some("https://spa.example"));
}

#[test]
fn chunked_body_is_read_whole_and_forwarded_with_content_length() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let raw = format!(
        "POST {ENV} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\n\
         10\r\ngrant_type=clien\r\n\
         19\r\nt_credentials&client_id=a\r\n\
         11\r\npp&client_secret=\r\n\
         3\r\ns3c\r\n0\r\n\r\n"
    );
    let resp = gw.send(raw.as_bytes());
    assert_eq!(resp.status(), 200, "{resp:?}");
    let got = up.only();
    assert_eq!(got.body_str(), "grant_type=client_credentials");
    assert_eq!(got.header("content-length").as_deref(), Some("29"));
    assert_eq!(got.header("transfer-encoding"), None);
    assert_eq!(got.header("authorization").unwrap(), basic("app:s3c"));
}

#[test]
fn client_trickling_its_headers_is_dropped_by_the_read_timeout() {
    // A request head must be complete within server.header_timeout (10 s by default; see
    // tests/slow_e2e.rs for the bound itself). This socket gives up only after far more: a read
    // that returns before it does returns because the gateway answered or closed, however slowly
    // a loaded machine runs the timers.
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let mut s = gw.connect();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "POST {ENV} HTTP/1.1\r\nHost: gw\r\nContent-Ty").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = match std::io::Read::read(&mut s, &mut buf) {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!("still open after {:?}", started.elapsed())
        }
        // Reset by the gateway: dropped as well.
        Err(_) => 0,
    };
    assert!(n == 0 || buf.starts_with(b"HTTP/1.1 4"), "{:?}", &buf[..n]);
    assert!(up.received().is_empty());
}

#[test]
fn malformed_chunked_framing_is_400_and_never_forwarded() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let raw = format!(
        "POST {ENV} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\nzz\r\nclient_id=a\r\n0\r\n\r\n"
    );
    let resp = gw.send(raw.as_bytes());
    assert_oauth_error(&resp, 400, "invalid_request");
    assert!(up.received().is_empty());
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    // A gateway that does not answer `100 Continue` waits for the body: with this body timeout
    // it would say nothing for 30 s, and then 408. So the first message read, before any body
    // byte is written, being the 100 proves it came without the body.
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "[token]\nbody_timeout = \"30s\"\n");
    let body = "grant_type=client_credentials&client_id=app&client_secret=s";
    let mut s = gw.connect();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST {ENV} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let interim = read_message(&mut r, false)
        .expect("the 100 before any body byte")
        .unwrap();
    assert_eq!(interim.status(), 100, "{interim:?}");
    s.write_all(body.as_bytes()).unwrap();
    let resp = read_message(&mut r, false).unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let got = up.only();
    assert_eq!(got.header("expect"), None);
    assert_eq!(got.body_str(), "grant_type=client_credentials");
}

#[test]
fn keepalive_connection_carries_several_converted_requests() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let s = gw.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..3 {
        let body = format!("grant_type=client_credentials&client_id=app{i}&client_secret=s{i}");
        w.write_all(&token_post(ENV, &[FORM], &body)).unwrap();
        let resp = read_message(&mut r, false).unwrap().unwrap();
        assert_eq!(resp.status(), 200);
    }
    let got = up.wait_for(3);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m.header("authorization").unwrap(),
            basic(&format!("app{i}:s{i}"))
        );
        assert_eq!(m.body_str(), "grant_type=client_credentials");
    }
}

// ---- request rules -------------------------------------------------------------------------

#[test]
fn non_post_is_405_with_allow_and_never_forwarded() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let resp = gw.send(format!("GET {ENV}?client_id=x HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
    assert_oauth_error(&resp, 405, "invalid_request");
    assert_eq!(resp.header("allow").as_deref(), Some("POST"));
    assert!(up.received().is_empty());
}

#[test]
fn content_type_must_be_form_urlencoded() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let resp = gw.send(&token_post(
        ENV,
        &[("Content-Type", "application/json")],
        "{}",
    ));
    assert_oauth_error(&resp, 400, "invalid_request");
    let resp = gw.send(&token_post(
        ENV,
        &[(
            "content-type",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        )],
        "client_id=a&client_secret=b",
    ));
    assert_eq!(resp.status(), 200);
    assert_eq!(up.only().header("authorization").unwrap(), basic("a:b"));
}

#[test]
fn body_over_the_cap_is_413_declared_or_chunked() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "[token]\nmax_body_bytes = 64\n");
    let big = format!("client_id=a&client_secret=b&pad={}", "x".repeat(64));
    assert_oauth_error(
        &gw.send(&token_post(ENV, &[FORM], &big)),
        413,
        "invalid_request",
    );

    let chunked = format!(
        "POST {ENV} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    assert_oauth_error(&gw.send(chunked.as_bytes()), 413, "invalid_request");
    assert!(up.received().is_empty());
}

#[test]
fn stalled_body_gets_408_after_the_body_timeout_and_never_reaches_upstream() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "[token]\nbody_timeout = \"300ms\"\n");
    let mut s = gw.connect();
    let started = Instant::now();
    write!(
        s,
        "POST {ENV} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 100\r\n\r\nclient_id=app&client_secret=s"
    )
    .unwrap();
    let resp = read_message(&mut BufReader::new(s), false)
        .unwrap()
        .unwrap();
    assert_oauth_error(&resp, 408, "invalid_request");
    let waited = started.elapsed();
    // Not early: the gateway's timer starts after `started`, taken before the first byte was
    // sent, so no scheduling delay can shorten `waited`. The configured 300 ms, not the 5 s
    // default: that leaves 4.7 s of slack for a loaded machine.
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(up.received().is_empty());
}

#[test]
fn body_ending_early_gets_400_and_never_reaches_upstream() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let mut s = gw.connect();
    write!(
        s,
        "POST {ENV} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 100\r\n\r\nclient_id=app&client_secret=s"
    )
    .unwrap();
    half_close(&s);
    let resp = read_message(&mut BufReader::new(s), false)
        .unwrap()
        .unwrap();
    assert_oauth_error(&resp, 400, "invalid_request");
    assert!(up.received().is_empty());
}

/// Each body, POSTed as a form to the token route, is answered by the gateway and never forwarded.
fn assert_rejected_locally(mode: &str, bodies: &[&str], status: u16, code: &str) {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, mode, "");
    for body in bodies {
        let resp = gw.send(&token_post(ENV, &[FORM], body));
        assert_oauth_error(&resp, status, code);
    }
    assert!(up.received().is_empty());
}

#[test]
fn malformed_percent_escape_is_400() {
    assert_rejected_locally(
        "to_basic",
        &[
            "client_id=app&client_secret=%zz",
            "code=%4&client_id=a&client_secret=b",
        ],
        400,
        "invalid_request",
    );
}

#[test]
fn client_id_or_client_secret_twice_is_400() {
    assert_rejected_locally(
        "to_basic",
        &[
            "client_id=app&client_id=app&client_secret=s",
            "client_id=app&client_secret=s&client_secret=t",
            "client_id=app&client%5Fid=other&client_secret=s",
        ],
        400,
        "invalid_request",
    );
}

#[test]
fn credentials_in_the_query_string_are_400_and_never_forwarded() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let path = format!("{ENV}?client_id=app&client_secret=Qu3ry-S3cret");
    let resp = gw.send(&token_post(&path, &[FORM], "grant_type=client_credentials"));
    assert_oauth_error(&resp, 400, "invalid_request");
    assert!(!resp.body_str().contains("Qu3ry-S3cret"));
    assert!(up.received().is_empty());
}

#[test]
fn post_and_basic_together_is_invalid_request() {
    let up = Upstream::start(Behaviour::default());
    for mode in ["to_basic", "to_post"] {
        let gw = gateway(&up, mode, "");
        let auth = basic("app:s");
        let resp = gw.send(&token_post(
            ENV,
            &[FORM, ("Authorization", &auth)],
            "grant_type=client_credentials&client_id=app&client_secret=s",
        ));
        assert_oauth_error(&resp, 400, "invalid_request");
    }
    assert!(up.received().is_empty());
}

#[test]
fn two_authorization_headers_and_mismatched_body_client_id_are_400() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_post", "");
    let (a, b) = (basic("app:s"), basic("other:t"));
    let resp = gw.send(&token_post(
        ENV,
        &[FORM, ("Authorization", &a), ("Authorization", &b)],
        "",
    ));
    assert_oauth_error(&resp, 400, "invalid_request");
    let resp = gw.send(&token_post(
        ENV,
        &[FORM, ("Authorization", &a)],
        "client_id=other",
    ));
    assert_oauth_error(&resp, 400, "invalid_request");
    assert!(up.received().is_empty());
}

#[test]
fn malformed_basic_is_401_invalid_client_with_a_basic_challenge() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_post", "");
    let no_colon = basic("app-without-colon");
    for auth in ["Basic ***not-base64***", no_colon.as_str()] {
        let resp = gw.send(&token_post(
            ENV,
            &[FORM, ("Authorization", auth)],
            "grant_type=x",
        ));
        assert_oauth_error(&resp, 401, "invalid_client");
        assert_eq!(
            resp.header("www-authenticate").as_deref(),
            Some("Basic realm=\"tokengate\"")
        );
    }
    // The scheme is case-insensitive (RFC 7235): lower-case `basic` is Basic, and converts.
    let lower = basic("app:s").replacen("Basic", "basic", 1);
    let resp = gw.send(&token_post(
        ENV,
        &[FORM, ("Authorization", &lower)],
        "grant_type=x",
    ));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.only().body_str(),
        "grant_type=x&client_id=app&client_secret=s"
    );
}

#[test]
fn error_bodies_never_contain_the_secret() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let secret = "Sup3r-S3cret-Value";
    for body in [
        format!("client_id=a&client_secret={secret}&client_secret={secret}"),
        format!("client_id=a&client_secret={secret}%zz"),
        format!("client_secret={secret}"),
    ] {
        let resp = gw.send(&token_post(ENV, &[FORM], &body));
        assert_eq!(resp.status(), 400);
        assert!(!resp.body_str().contains(secret));
        assert!(!resp
            .headers
            .iter()
            .any(|(_, v)| String::from_utf8_lossy(v).contains(secret)));
    }
}

// ---- upstream ------------------------------------------------------------------------------

#[test]
fn upstream_answer_is_relayed_unchanged() {
    let answer = response(
        400,
        &[
            ("Content-Type", "application/json"),
            ("X-Upstream", "yes"),
            ("Cache-Control", "no-store"),
        ],
        r#"{"error":"invalid_grant","error_description":"code expired"}"#,
    );
    let up = Upstream::start(Behaviour {
        response: answer,
        ..Default::default()
    });
    let gw = gateway(&up, "to_basic", "");
    let resp = gw.send(&token_post(
        ENV,
        &[FORM],
        "client_id=a&client_secret=b&code=c",
    ));
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.header("x-upstream").as_deref(), Some("yes"));
    assert_eq!(
        resp.body_str(),
        r#"{"error":"invalid_grant","error_description":"code expired"}"#
    );
}

#[test]
fn upstream_closing_idle_connections_does_not_fail_the_next_token_request() {
    let idle_close = Duration::from_millis(200);
    let up = Upstream::start(Behaviour {
        idle_close,
        ..Default::default()
    });
    let gw = gateway(&up, "to_basic", "");
    for i in 0..3 {
        let resp = gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"));
        assert_eq!(resp.status(), 200, "request {i}: {resp:?}");
        // Let the upstream close the pooled connection before the next request.
        std::thread::sleep(idle_close * 2);
    }
    assert_eq!(up.wait_for(3).len(), 3);
}

#[test]
fn refused_upstream_is_502_json() {
    let port = free_addr();
    let gw = Gateway::start(&config(port, &token_route("to_basic")));
    let resp = gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"));
    assert_oauth_error(&resp, 502, "server_error");
    // The default route too.
    let resp = gw.send(b"GET /anything HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_oauth_error(&resp, 502, "server_error");
}

#[test]
fn https_upstream_speaks_tls_and_a_failed_handshake_is_502() {
    // The recording upstream speaks plain HTTP: a TLS upstream pointed at it must fail the
    // handshake (proving TLS is used) and answer 502, never forward in clear text.
    let up = Upstream::start(Behaviour::default());
    let toml = config(up.addr, &token_route("to_basic")).replace("http://", "https://");
    let gw = Gateway::start(&toml);
    let resp = gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"));
    assert_oauth_error(&resp, 502, "server_error");
    let seen = up.received();
    assert!(
        seen.iter().all(|m| !m.start.starts_with("POST")),
        "{seen:?}"
    );
}

#[test]
fn unresolvable_upstream_host_is_502_and_the_gateway_still_starts() {
    let toml = config("127.0.0.1:1".parse().unwrap(), &token_route("to_basic"))
        .replace("127.0.0.1:1", "no-such-host.invalid:8443");
    let gw = Gateway::start(&toml);
    let resp = gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"));
    assert_oauth_error(&resp, 502, "server_error");
}

#[test]
fn slow_upstream_is_504_json() {
    // The upstream holds its answer until the test has the gateway's: the 504 provably came
    // first, whatever the machine's load (the hold ends at the latest when `release` is dropped).
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    let up = Upstream::start(Behaviour {
        respond: Some(std::sync::Arc::new(move |_: &Message| {
            let _ = held.lock().map(|h| h.recv_timeout(Duration::from_secs(60)));
            response(200, &[("Content-Type", "application/json")], TOKEN_JSON)
        })),
        ..Default::default()
    });
    let toml = config(up.addr, &token_route("to_basic"))
        .replace("read_timeout = \"5s\"", "read_timeout = \"1s\"");
    assert!(toml.contains("read_timeout = \"1s\""), "{toml}");
    let gw = Gateway::start(&toml);
    let resp = gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"));
    assert_oauth_error(&resp, 504, "temporarily_unavailable");
    drop(release);
    // It was forwarded: the 504 is the upstream's silence, not a refusal.
    let got = up.wait_for(1);
    assert_eq!(got[0].header("authorization").unwrap(), basic("a:b"));
}

// ---- routing -------------------------------------------------------------------------------

#[test]
fn requests_matching_no_route_are_proxied_untouched() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic", "");
    let auth = basic("app:s");
    let body = "client_id=app&client_secret=s&x=%zz";
    let resp = gw.send(&token_post(
        "/other/as/introspect?a=1",
        &[FORM, ("Authorization", &auth)],
        body,
    ));
    assert_eq!(resp.status(), 200);
    let got = up.only();
    assert_eq!(got.target(), "/other/as/introspect?a=1");
    assert_eq!(got.header("authorization").unwrap(), auth);
    assert_eq!(got.body_str(), body);
}

#[test]
fn passthrough_route_forwards_untouched_to_its_upstream() {
    let main = Upstream::start(Behaviour::default());
    let other = Upstream::start(Behaviour::default());
    let toml = format!(
        "{}[upstreams.other]\nurl = \"http://{}\"\n\
         [[routes]]\npath_prefix = \"/legacy/\"\nmode = \"passthrough\"\nupstream = \"other\"\n",
        config(main.addr, ""),
        other.addr
    );
    let gw = Gateway::start(&toml);
    let body = "client_id=app&client_secret=s";
    assert_eq!(
        gw.send(&token_post("/legacy/token", &[FORM], body))
            .status(),
        200
    );
    let got = other.only();
    assert_eq!(got.body_str(), body);
    assert_eq!(got.header("authorization"), None);
    assert!(main.received().is_empty());
}
