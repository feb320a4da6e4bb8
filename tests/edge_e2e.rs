//! End-to-end: the gateway's own HTTP edge attacked from outside (issue "the HTTP edge held to
//! nginx's and Envoy's standard"), against the release-shaped binary: request heads that try to
//! escape their deadline or size, forwarding fields a client tries to forge or strip, absolute-form
//! targets, CORS preflights carrying secrets. 127.0.0.2 plays the client, 127.0.0.1 the trusted
//! proxy where it matters.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use tokengate::clients::secret::hash_sha256;

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ENV_ID: &str = "5a0b3c2d-1111-2222-3333-444455556666";

/// The gateway binary on a free port, with `toml` and these `[server]` keys (JSON logs to a file).
struct Binary {
    addr: SocketAddr,
    log: PathBuf,
    _child: KillOnDrop,
    _dir: TempDir,
}

impl Binary {
    fn start(toml: &str, server_extra: &str) -> Binary {
        Binary::start_in(TempDir::new("edge"), toml, server_extra)
    }

    fn start_in(dir: TempDir, toml: &str, server_extra: &str) -> Binary {
        let port = free_port();
        let conf = dir.join("tokengate.toml");
        std::fs::write(
            &conf,
            format!(
                "{toml}\n[log]\nformat = \"json\"\n[server]\nlisten = [\"127.0.0.1:{port}\"]\n\
                 grace_period = \"0s\"\nshutdown_timeout = \"1s\"\n{server_extra}\n"
            ),
        )
        .unwrap();
        let log = dir.join("stderr.log");
        let child = spawn_gateway(&conf, port, Some(&log), &[]);
        Binary {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _child: child,
            _dir: dir,
        }
    }

    fn connect_from(&self, local: IpAddr) -> TcpStream {
        connect_from(local, self.addr)
    }

    /// Sends `raw` on a new connection from `local` and reads one answer.
    fn send_from(&self, local: IpAddr, raw: &[u8]) -> Message {
        let mut s = self.connect_from(local);
        s.write_all(raw).unwrap();
        read_message(&mut BufReader::new(s), false)
            .unwrap()
            .expect("an answer")
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn connect_from(local: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(local, 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Writes `prefix`, then a head a byte at a time, each followed by a 100 ms wait for the gateway
/// to close the connection (the stream's reads time out after 100 ms): how long until it did
/// (panics past `limit`).
fn trickle_until_closed(s: &mut (impl Read + Write), prefix: &[u8], limit: Duration) -> Duration {
    let started = Instant::now();
    s.write_all(prefix).unwrap();
    s.flush().unwrap();
    for &b in TRICKLE.iter().cycle() {
        assert!(started.elapsed() < limit, "still open after {limit:?}");
        if s.write_all(&[b]).and_then(|()| s.flush()).is_err() {
            return started.elapsed();
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => panic!("an answer to a head that was never complete"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return started.elapsed(),
        }
    }
    unreachable!()
}

/// A connection from `local` whose reads give up after 100 ms.
fn probing(gw: &Binary, local: IpAddr) -> TcpStream {
    let s = gw.connect_from(local);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// What [`trickle_until_closed`] measures: the header timeout (2 s), give or take a probe.
fn cut_at_the_header_timeout(took: Duration) {
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "{took:?}"
    );
}

const TRICKLE: &[u8] =
    b"POST /5a0b3c2d-1111-2222-3333-444455556666/as/token HTTP/1.1\r\nX-Slow: aaaaaaaa";

#[test]
fn empty_lines_before_a_head_do_not_switch_its_deadline_off() {
    let up = Upstream::start(Behaviour::default());
    let gw = Binary::start(
        &config(up.addr, &token_route("to_basic")),
        "header_timeout = \"2s\"",
    );
    // The connection's first head.
    let mut s = probing(&gw, CLIENT);
    cut_at_the_header_timeout(trickle_until_closed(&mut s, b"\r\n\r\n", WAIT));

    // After an answer on a kept-alive connection: the next head is due from its first byte,
    // empty lines included.
    let mut s = gw.connect_from(CLIENT);
    s.write_all(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"))
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_message(&mut r, false).unwrap().unwrap().status(), 200);
    std::thread::sleep(Duration::from_millis(2500));
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    cut_at_the_header_timeout(trickle_until_closed(&mut s, b"\r\n", WAIT));
    // Nine empty lines are too many: 400, closed.
    let resp = gw.send_from(CLIENT, &b"\r\n".repeat(9));
    assert_eq!(resp.status(), 400);
    assert_eq!(
        up.received().len(),
        1,
        "only the one real request went upstream"
    );
}

#[test]
fn a_few_empty_lines_before_a_request_are_ignored() {
    let up = Upstream::start(Behaviour::default());
    let gw = Binary::start(&config(up.addr, &token_route("to_basic")), "");
    let mut raw = b"\r\n\n".to_vec();
    raw.extend(token_post(ENV, &[FORM], "client_id=a&client_secret=b"));
    assert_eq!(gw.send_from(CLIENT, &raw).status(), 200);
    assert_eq!(up.only().header("authorization"), Some(basic("a:b")));
}

#[test]
fn a_head_over_max_header_bytes_is_answered_431_and_its_connection_closed() {
    let up = Upstream::start(Behaviour::default());
    let admin = free_addr();
    let gw = Binary::start(
        &format!(
            "{}\n[admin]\nlisten = \"{admin}\"\n",
            config(up.addr, &token_route("to_basic"))
        ),
        "max_header_bytes = 4096",
    );
    let big = "a".repeat(5000);
    // A token route: an RFC 6749 error, whole.
    let mut s = gw.connect_from(CLIENT);
    s.write_all(&token_post(
        ENV,
        &[FORM, ("X-Big", &big)],
        "client_id=a&client_secret=b",
    ))
    .unwrap();
    let mut r = BufReader::new(s);
    let resp = read_message(&mut r, false).unwrap().unwrap();
    assert_oauth_error(&resp, 431, "invalid_request");
    assert_eq!(resp.header("connection").as_deref(), Some("close"));
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after the answer");
    // Anywhere else: text. A head trickled past the limit in pieces too.
    let mut s = gw.connect_from(CLIENT);
    s.write_all(b"GET /login HTTP/1.1\r\nHost: a\r\n").unwrap();
    for _ in 0..5 {
        let _ = s.write_all(format!("Cookie: {}\r\n", "c".repeat(1000)).as_bytes());
    }
    let resp = read_message(&mut BufReader::new(s), false)
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 431);
    assert_eq!(resp.header("content-type").as_deref(), Some("text/plain"));
    // Just under the limit passes.
    let fits = "a".repeat(3500);
    let resp = gw.send_from(
        CLIENT,
        &token_post(
            ENV,
            &[FORM, ("X-Big", &fits)],
            "client_id=a&client_secret=b",
        ),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.received().len(),
        1,
        "only the head that fits went upstream"
    );
    assert_eq!(
        metric(
            admin,
            "tokengate_request_heads_refused_total{reason=\"too_large\"}"
        ),
        2.0
    );
    assert!(
        !gw.logs().contains("\"level\":\"ERROR\""),
        "a refused head is no error of the gateway's:\n{}",
        gw.logs()
    );
}

#[test]
fn a_connection_field_cannot_remove_what_the_gateway_sets() {
    let up = Upstream::start(Behaviour::default());
    let gw = Binary::start(&token_and_passthrough(&up), "");
    let body = "client_id=a&client_secret=b";
    for protected in [
        "keep-alive, X-Forwarded-For",
        "X-Forwarded-Proto",
        "Forwarded",
        "X-Real-IP",
        "Host",
        "Authorization",
        "Content-Length",
    ] {
        let resp = gw.send_from(
            CLIENT,
            &token_post(ENV, &[FORM, ("Connection", protected)], body),
        );
        assert_oauth_error(&resp, 400, "invalid_request");
    }
    assert!(up.received().is_empty(), "none of them went upstream");
    // Another nominated field is removed, before the gateway sets its own.
    let resp = gw.send_from(
        CLIENT,
        &token_post(
            ENV,
            &[
                FORM,
                ("Connection", "X-Hop"),
                ("X-Hop", "1"),
                ("X-Forwarded-For", "6.6.6.6"),
            ],
            body,
        ),
    );
    assert_eq!(resp.status(), 200);
    let got = up.only();
    assert_eq!(got.header("x-hop"), None);
    assert_eq!(got.header("x-forwarded-for").as_deref(), Some("127.0.0.2"));
    // Pingora's proxy path (passthrough routes) refuses such nominations too.
    let resp = gw.send_from(
        CLIENT,
        b"GET /login HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For\r\n\r\n",
    );
    assert!(resp.status() >= 400, "{resp:?}");
    let resp = gw.send_from(
        CLIENT,
        b"GET /login HTTP/1.1\r\nHost: a\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    );
    assert_eq!(resp.status(), 200);
    let got = up.wait_for(2)[1].clone();
    assert_eq!(got.header("x-hop"), None);
    assert_eq!(got.header("x-forwarded-for").as_deref(), Some("127.0.0.2"));
}

/// A `to_basic` token route, and every other path passed through (Pingora's proxy path).
fn token_and_passthrough(up: &Upstream) -> String {
    format!(
        "{}[[routes]]\nname = \"rest\"\npath_prefix = \"/\"\nmode = \"passthrough\"\n",
        config(up.addr, &token_route("to_basic"))
    )
}

/// A validating token route (client `app`, secret `right`), at most 5 failures per address.
fn validating(up: &Upstream, dir: &TempDir, admin: SocketAddr) -> String {
    std::fs::write(
        dir.join("clients.toml"),
        format!(
            "[[clients]]\nenv_id = \"{ENV_ID}\"\nclient_id = \"app\"\nsecret = \"{}\"\n\
             auth_methods = [\"client_secret_post\"]\n",
            hash_sha256(b"right")
        ),
    )
    .unwrap();
    format!(
        "{}[clients]\nfile = \"clients.toml\"\nreload_interval = \"1h\"\n[lockout]\n\
         max_failures_per_ip = 5\nmax_failures_per_client = 0\n[admin]\nlisten = \"{admin}\"\n",
        config(up.addr, &token_route("validate"))
    )
}

#[test]
fn one_junk_entry_does_not_discard_the_forwarding_chain() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("edge-junk");
    let admin = free_addr();
    let toml = validating(&up, &dir, admin);
    let gw = Binary::start_in(dir, &toml, "trusted_proxies = [\"127.0.0.1\"]");
    // The client sent `X-Forwarded-For: x`; the proxy appended the client's address.
    let wrong = form("app", "wrong");
    for _ in 0..5 {
        let resp = gw.send_from(
            PROXY,
            &token_post(ENV, &[FORM, ("X-Forwarded-For", "x, 203.0.113.7")], &wrong),
        );
        assert_oauth_error(&resp, 401, "invalid_client");
    }
    // The failures were the client's, not the proxy's: another client behind it is served.
    let right = form("app", "right");
    let resp = gw.send_from(PROXY, &token_post(ENV, &[FORM], &right));
    assert_eq!(resp.status(), 200, "{resp:?}");
    // And the client's own address is locked.
    let resp = gw.send_from(
        PROXY,
        &token_post(ENV, &[FORM, ("X-Forwarded-For", "203.0.113.7")], &wrong),
    );
    assert_eq!(resp.status(), 429, "{resp:?}");
    // The upstream gets the chain from the client rightwards, plus the proxy.
    let resp = gw.send_from(
        PROXY,
        &token_post(ENV, &[FORM, ("X-Forwarded-For", "x, 198.51.100.4")], &right),
    );
    assert_eq!(resp.status(), 200);
    let got = up.wait_for(2);
    assert_eq!(
        got[1].header("x-forwarded-for").as_deref(),
        Some("198.51.100.4, 127.0.0.1")
    );
}

#[test]
fn forwarding_fields_from_untrusted_peers_are_removed_and_from_trusted_proxies_kept() {
    let up = Upstream::start(Behaviour::default());
    let toml = token_and_passthrough(&up);
    let gw = Binary::start(&toml, "trusted_proxies = [\"127.0.0.1\"]");
    let fields: &[(&str, &str)] = &[
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "http"),
    ];
    let mut on_token = vec![FORM];
    on_token.extend_from_slice(fields);
    let body = "client_id=a&client_secret=b";
    let mut passthrough = b"GET /login HTTP/1.1\r\nHost: a\r\n".to_vec();
    for (n, v) in fields {
        passthrough.extend(format!("{n}: {v}\r\n").bytes());
    }
    passthrough.extend(b"\r\n");
    for from in [CLIENT, PROXY] {
        assert_eq!(
            gw.send_from(from, &token_post(ENV, &on_token, body))
                .status(),
            200
        );
        assert_eq!(gw.send_from(from, &passthrough).status(), 200);
    }
    let got = up.wait_for(4);
    for (i, req) in got.iter().enumerate() {
        let from_proxy = i >= 2;
        for (name, value) in &fields[1..] {
            let expected = from_proxy.then(|| value.to_string());
            assert_eq!(req.header(name), expected, "{name} in request {i}: {req:?}");
        }
        // X-Forwarded-For is what the proxies write: a Forwarded is the client's, from anyone.
        assert_eq!(req.header("forwarded"), None, "request {i}");
    }
    // With `keep_forwarding_headers`, they pass as sent.
    let up = Upstream::start(Behaviour::default());
    let gw = Binary::start(
        &config(up.addr, &token_route("to_basic")),
        "keep_forwarding_headers = true",
    );
    assert_eq!(
        gw.send_from(CLIENT, &token_post(ENV, &on_token, body))
            .status(),
        200
    );
    let got = up.only();
    for (name, value) in fields {
        assert_eq!(got.header(name).as_deref(), Some(*value), "{name}");
    }
}

#[test]
fn behind_proxies_that_write_forwarded_only_forwarded_is_read() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("edge-fwd");
    let admin = free_addr();
    let toml = validating(&up, &dir, admin);
    let gw = Binary::start_in(
        dir,
        &toml,
        "trusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"forwarded\"",
    );
    // The client's own X-Forwarded-For is not believed: its guesses count against the address
    // the proxy wrote in Forwarded.
    let wrong = form("app", "wrong");
    for i in 0..5 {
        let forged = format!("10.9.9.{i}");
        let resp = gw.send_from(
            PROXY,
            &token_post(
                ENV,
                &[
                    FORM,
                    ("X-Forwarded-For", &forged),
                    ("Forwarded", "for=203.0.113.7;proto=https"),
                ],
                &wrong,
            ),
        );
        assert_oauth_error(&resp, 401, "invalid_client");
    }
    let right = form("app", "right");
    let locked = gw.send_from(
        PROXY,
        &token_post(ENV, &[FORM, ("Forwarded", "for=203.0.113.7")], &right),
    );
    assert_eq!(locked.status(), 429);
    let resp = gw.send_from(
        PROXY,
        &token_post(
            ENV,
            &[
                FORM,
                ("X-Forwarded-For", "6.6.6.6"),
                ("Forwarded", "for=\"[2001:db8::7]:443\";proto=https"),
            ],
            &right,
        ),
    );
    assert_eq!(resp.status(), 200);
    let got = up.only();
    assert_eq!(
        got.header("forwarded").as_deref(),
        Some("for=\"[2001:db8::7]:443\";proto=https, for=127.0.0.1")
    );
    assert_eq!(
        got.header("x-forwarded-for").as_deref(),
        Some("2001:db8::7, 127.0.0.1")
    );
}

#[test]
fn absolute_form_targets_go_upstream_in_origin_form_with_the_upstreams_host() {
    let up = Upstream::start(Behaviour::default());
    let toml = token_and_passthrough(&up);
    let gw = Binary::start(&toml, "");
    let body = "client_id=a&client_secret=b";
    let raw = format!(
        "POST http://evil.example{ENV}?x=1 HTTP/1.1\r\nHost: evil.example\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(gw.send_from(CLIENT, raw.as_bytes()).status(), 200);
    let got = up.only();
    assert_eq!(got.target(), format!("{ENV}?x=1"));
    assert_eq!(got.header("host"), Some(up.addr.to_string()));
    assert_eq!(got.header("authorization"), Some(basic("a:b")));
    // Pingora's proxy path (passthrough) aligns an absolute target's authority with Host.
    let resp = gw.send_from(
        CLIENT,
        b"GET http://evil.example/login HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    );
    assert_eq!(resp.status(), 200);
    let got = up.wait_for(2)[1].clone();
    let host = got.header("host").unwrap();
    assert_eq!(host, up.addr.to_string());
    let target = got.target();
    assert!(
        target == "/login" || target == format!("http://{host}/login"),
        "{target}"
    );
}

#[test]
fn a_preflight_on_a_token_route_is_checked_for_secrets_in_its_query() {
    let up = Upstream::start(Behaviour::default());
    let gw = Binary::start(&config(up.addr, &token_route("to_basic")), "");
    let preflight = |query: &str| {
        format!(
            "OPTIONS {ENV}{query} HTTP/1.1\r\nHost: gw\r\nOrigin: https://app.example\r\n\
             Access-Control-Request-Method: POST\r\n\r\n"
        )
    };
    let resp = gw.send_from(CLIENT, preflight("?client_secret=s3cret").as_bytes());
    assert_oauth_error(&resp, 400, "invalid_request");
    assert!(up.received().is_empty());
    assert_eq!(
        gw.send_from(CLIENT, preflight("?x=1").as_bytes()).status(),
        200
    );
    assert!(up.only().start.starts_with("OPTIONS "));
}

#[test]
fn a_trusted_proxy_on_an_ipv6_listener_is_trusted_under_its_mapped_address() {
    let up = Upstream::start(Behaviour::default());
    let port = free_port();
    let dir = TempDir::new("edge-v6");
    let conf = dir.join("tokengate.toml");
    std::fs::write(
        &conf,
        format!(
            "{}\n[server]\nlisten = [\"[::]:{port}\"]\ntrusted_proxies = [\"127.0.0.1\"]\n\
             max_connections_per_ip = 1\nproxy_protocol = true\n",
            config(up.addr, &token_route("to_basic"))
        ),
    )
    .unwrap();
    let _child = spawn_gateway(&conf, port, None, &[]);
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    // Two connections from the proxy (::ffff:127.0.0.1 on this listener), each with a PROXY
    // header naming its client: both admitted, each header believed.
    let mut conns: Vec<TcpStream> = (0..2)
        .map(|i| {
            let mut s = connect_from(PROXY, to);
            write!(s, "PROXY TCP4 198.51.100.{i} 127.0.0.1 4000{i} {port}\r\n").unwrap();
            s
        })
        .collect();
    for s in &mut conns {
        s.write_all(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"))
            .unwrap();
        let resp = read_message(&mut BufReader::new(s.try_clone().unwrap()), false)
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let mut seen: Vec<String> = up
        .wait_for(2)
        .iter()
        .map(|r| r.header("x-forwarded-for").unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, ["198.51.100.0", "198.51.100.1"]);
}
