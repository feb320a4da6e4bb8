//! End-to-end: the gateway's own upstream client on token routes. What it sends (one request, head
//! and body, hop-by-hop fields gone), how it reads answers (lengths, chunks, interim answers,
//! closes), and the rule that a request is never sent twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

fn gateway(up: &Upstream) -> Gateway {
    Gateway::start(&config(up.addr, &token_route("to_basic")))
}

fn token(gw: &Gateway) -> Message {
    gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"))
}

/// An upstream answering every request with `raw`.
fn answering(raw: &'static str) -> Upstream {
    Upstream::start(Behaviour {
        response: raw.as_bytes().to_vec(),
        ..Default::default()
    })
}

#[test]
fn requests_on_a_kept_alive_upstream_connection_share_it() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up);
    for _ in 0..5 {
        assert_eq!(token(&gw).status(), 200);
    }
    assert_eq!(up.wait_for(5).len(), 5);
    assert_eq!(
        up.connections(),
        1,
        "one upstream connection for five requests"
    );
}

#[test]
fn hop_by_hop_fields_stay_behind_and_the_rest_arrive_as_sent() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up);
    let resp = gw.send(&token_post(
        ENV,
        &[
            FORM,
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "one"),
            ("TE", "trailers"),
            ("Keep-Alive", "timeout=5"),
            ("X-Request-Id", "req-7"),
            ("Accept", "application/json"),
        ],
        "client_id=a&client_secret=b",
    ));
    assert_eq!(resp.status(), 200);
    let got = up.only();
    for gone in [
        "connection",
        "x-hop",
        "te",
        "keep-alive",
        "transfer-encoding",
        "expect",
    ] {
        assert_eq!(got.header(gone), None, "{gone}");
    }
    assert_eq!(got.header("X-Request-Id").as_deref(), Some("req-7"));
    assert_eq!(got.header("accept").as_deref(), Some("application/json"));
    assert!(
        got.headers.iter().any(|(n, _)| n == "X-Request-Id"),
        "case kept: {got:?}"
    );
    assert_eq!(got.header("host").unwrap(), up.addr.to_string());
    assert_eq!(got.header("authorization").unwrap(), basic("a:b"));
    assert_eq!(got.header("content-length").as_deref(), Some("0"));
    assert_eq!(got.target(), ENV);
}

#[test]
fn a_chunked_answer_is_relayed_whole_with_its_length() {
    let up = answering(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n6\r\n{\"acce\r\n\
         e\r\nss_token\":\"x\"}\r\n0\r\n\r\n",
    );
    let gw = gateway(&up);
    let resp = token(&gw);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body_str(), "{\"access_token\":\"x\"}");
    assert_eq!(resp.header("content-length").as_deref(), Some("20"));
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.all("set-cookie"), ["a=1", "b=2"]);
}

#[test]
fn interim_answers_are_skipped_and_statuses_and_reasons_relayed() {
    let up = answering(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
         Content-Length: 27\r\n\r\n{\"error\":\"invalid_grant\"}  ",
    );
    let gw = gateway(&up);
    let resp = token(&gw);
    assert_eq!(resp.start, "HTTP/1.1 400 Bad Request");
    assert_eq!(resp.json()["error"], "invalid_grant");
}

/// An upstream that answers each connection's first request with `raw` and closes it; it counts
/// the connections.
fn one_answer_per_connection(raw: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(conn.try_clone().unwrap());
            if read_message(&mut r, false).is_ok() {
                let _ = conn.write_all(raw);
            }
        }
    });
    (addr, conns)
}

#[test]
fn an_answer_without_length_ends_with_the_connection_which_is_not_reused() {
    let (addr, conns) = one_answer_per_connection(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}",
    );
    let gw = Gateway::start(&config(addr, &token_route("to_basic")));
    for _ in 0..2 {
        let resp = token(&gw);
        assert_eq!(
            (resp.status(), resp.body_str().as_str()),
            (200, "{\"a\":1}")
        );
    }
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

#[test]
fn a_connection_that_sent_more_than_its_answer_is_not_reused() {
    let up = answering("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}GARBAGE");
    let gw = gateway(&up);
    for _ in 0..2 {
        assert_eq!(token(&gw).body_str(), "{}");
    }
    assert_eq!(up.connections(), 2);
}

/// An upstream that reads a request and closes without answering: had the gateway sent it again,
/// an authorization code would have been spent twice.
#[test]
fn a_request_is_never_sent_twice() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut r = BufReader::new(conn);
            let mut line = String::new();
            if r.read_line(&mut line).is_ok() && line.starts_with("POST") {
                count.fetch_add(1, Ordering::SeqCst);
            }
            // Drain the head, then go away without a word.
            let mut rest = [0u8; 4096];
            let _ = r
                .get_mut()
                .set_read_timeout(Some(std::time::Duration::from_millis(100)));
            let _ = r.read(&mut rest);
        }
    });
    let gw = Gateway::start(&config(addr, &token_route("to_basic")));
    let resp = token(&gw);
    assert_oauth_error(&resp, 502, "server_error");
    // Give a (wrong) second attempt every chance to arrive.
    let again = token(&gw);
    assert_oauth_error(&again, 502, "server_error");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "one attempt per client request"
    );
}

#[test]
fn an_invalid_answer_is_502() {
    let up = answering("SSH-2.0-OpenSSH_9.0\r\n\r\n");
    let gw = gateway(&up);
    assert_oauth_error(&token(&gw), 502, "server_error");
}

#[test]
fn http_1_0_clients_get_the_answer_with_its_length() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up);
    let body = "client_id=a&client_secret=b";
    let raw = format!(
        "POST {ENV} HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = gw.connect();
    s.write_all(raw.as_bytes()).unwrap();
    let resp = read_message(&mut BufReader::new(s), false)
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body_str(), TOKEN_JSON);
}

/// An upstream with several addresses (`addresses`, in place of resolving the URL's host): the
/// token route (the gateway's own client) and an untouched route (Pingora's proxy path) use each
/// in turn; an address where nothing listens costs no request, the next address is tried.
#[test]
fn several_addresses_are_used_in_turn_and_a_dead_one_costs_no_request() {
    let a = Upstream::start(Behaviour::default());
    let b = Upstream::start(Behaviour::default());
    let toml = |addrs: &[std::net::SocketAddr]| {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "default_upstream = \"up\"\n[upstreams.up]\nurl = \"http://idp.invalid:9\"\n\
             addresses = [{}]\nconnect_timeout = \"1s\"\ntotal_connection_timeout = \"1s\"\n{}",
            list.join(", "),
            token_route("to_basic")
        )
    };
    let other = b"GET /other HTTP/1.1\r\nHost: gw\r\n\r\n";
    let gw = Gateway::start_with(&toml(&[a.addr, b.addr]), "");
    for _ in 0..4 {
        assert_eq!(token(&gw).status(), 200);
    }
    for _ in 0..4 {
        assert_eq!(gw.send(other).status(), 200);
    }
    let (to_a, to_b) = (a.wait_for(4), b.wait_for(4));
    assert_eq!((to_a.len(), to_b.len()), (4, 4));
    for got in [&to_a, &to_b] {
        assert_eq!(got.iter().filter(|m| m.target() == "/other").count(), 2);
        assert!(got
            .iter()
            .all(|m| m.header("host").as_deref() == Some("idp.invalid:9")));
    }
    drop(gw);

    // Nothing listens at `dead`: every request still reaches `a`, and `dead` is left out.
    let dead = free_addr();
    let admin = free_addr();
    let gw = Gateway::start_with(
        &format!("{}\n[admin]\nlisten = \"{admin}\"\n", toml(&[dead, a.addr])),
        "",
    );
    for _ in 0..6 {
        assert_eq!(token(&gw).status(), 200);
        assert_eq!(gw.send(other).status(), 200);
    }
    assert_eq!(a.wait_for(4 + 12).len(), 16);
    let mut s = connect_when_listening(admin);
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let metrics = read_message(&mut BufReader::new(s), false)
        .unwrap()
        .unwrap()
        .body_str();
    // (An address stays out for 10 s: far longer than this test takes.)
    for series in [
        "tokengate_upstream_addresses{state=\"in\",upstream=\"up\"} 1",
        "tokengate_upstream_addresses{state=\"out\",upstream=\"up\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == series), "{series}\n{metrics}");
    }
}

// ------------------------------------------------------------------------------------------
// Hostile and broken upstreams: a raw socket of the test's own that writes exactly the bytes
// each test wants, when it wants.

/// Told to the connection threads of a [`RawUpstream`] when the test is over.
#[derive(Default)]
struct Stop {
    stopped: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Stop {
    /// Waits until the test is over (at most [`WAIT`]): a connection thread that must hold its
    /// socket open without reading.
    fn wait(&self) {
        let stopped = self.stopped.lock().unwrap();
        drop(self.cv.wait_timeout_while(stopped, WAIT, |s| !*s).unwrap());
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

type Serve = dyn Fn(usize, std::net::TcpStream, &Stop) + Send + Sync;

/// An upstream on 127.0.0.1 that hands each connection, with its number (0, 1, …), to `serve`
/// on a thread of its own. Every socket has read and write timeouts of [`WAIT`], so that each
/// thread ends; dropping it stops the accept loop and joins every thread.
struct RawUpstream {
    addr: std::net::SocketAddr,
    conns: Arc<AtomicUsize>,
    stop: Arc<Stop>,
    accept: Option<std::thread::JoinHandle<Vec<std::thread::JoinHandle<()>>>>,
}

impl RawUpstream {
    fn start(serve: impl Fn(usize, std::net::TcpStream, &Stop) + Send + Sync + 'static) -> Self {
        RawUpstream::on(TcpListener::bind("127.0.0.1:0").unwrap(), serve)
    }

    /// Like [`RawUpstream::start`], with small segments (1000 bytes) and a small receive buffer:
    /// the kernel then holds about 160 KB of what the gateway writes before its write waits (on
    /// loopback, with 64 KiB segments, it takes megabytes at once).
    fn narrow(serve: impl Fn(usize, std::net::TcpStream, &Stop) + Send + Sync + 'static) -> Self {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_tcp_mss(1000).unwrap();
        s.set_recv_buffer_size(16 * 1024).unwrap();
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        s.listen(16).unwrap();
        RawUpstream::on(s.into(), serve)
    }

    fn on(
        listener: TcpListener,
        serve: impl Fn(usize, std::net::TcpStream, &Stop) + Send + Sync + 'static,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(Stop::default());
        let serve: Arc<Serve> = Arc::new(serve);
        let (count, stop2) = (conns.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut threads = Vec::new();
            for conn in listener.incoming() {
                if *stop2.stopped.lock().unwrap() {
                    break;
                }
                let Ok(conn) = conn else { continue };
                conn.set_read_timeout(Some(WAIT)).unwrap();
                conn.set_write_timeout(Some(WAIT)).unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (serve, stop) = (serve.clone(), stop2.clone());
                threads.push(std::thread::spawn(move || serve(n, conn, &stop)));
            }
            threads
        });
        RawUpstream {
            addr,
            conns,
            stop,
            accept: Some(accept),
        }
    }

    fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.stop();
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            for t in accept.join().unwrap() {
                let _ = t.join();
            }
        }
    }
}

/// Reads one request head off `conn` (the body of a token request is small and follows in the
/// same reads; it is read too, when it has a Content-Length).
fn read_request(conn: &std::net::TcpStream) -> Option<Message> {
    read_message(&mut BufReader::new(conn), false)
        .ok()
        .flatten()
}

/// The access log line of the request with this `X-Request-Id` (waits for it).
fn access_line(request_id: &str) -> String {
    let needle = format!("request_id={request_id} ");
    logs_once_they_hold(&needle)
        .lines()
        .find(|l| l.contains("tokengate::access") && l.contains(&needle))
        .unwrap_or_else(|| panic!("no access line for {request_id}"))
        .to_string()
}

/// Asserts that the access line of `request_id` names `cause` as its error.
fn assert_logged_cause(request_id: &str, cause: &str) {
    let line = access_line(request_id);
    assert!(line.contains(&format!("error=\"{cause}\"")), "{line}");
}

/// A token request with an `X-Request-Id`, more fields, and the usual small form.
fn token_request(id: &str, more: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![FORM, ("X-Request-Id", id)];
    fields.extend_from_slice(more);
    token_post(ENV, &fields, "client_id=a&client_secret=b")
}

/// A header larger than the socket buffers between the gateway and a [`RawUpstream::narrow`]
/// upstream, so that the gateway is still writing the request when the upstream answers. (When the gateway gets a
/// downstream head limit, the test's configuration must raise it above this.)
fn big_header() -> String {
    "a".repeat(512 * 1024)
}

/// What the upstream answers to a head it will not read (node answers 431 beyond 16 KiB).
const TOO_LARGE: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n\
    Content-Length: 13\r\nConnection: close\r\n\r\nhead too big\n";

/// Connections after the first answer a normal token request normally.
fn answer_normally(conn: &std::net::TcpStream) {
    while let Some(_req) = read_request(conn) {
        let out = response(200, &[("Content-Type", "application/json")], TOKEN_JSON);
        if (&*conn).write_all(&out).is_err() {
            return;
        }
    }
}

/// Reads the first 16 KiB of a request, as a server does before it decides the head is too large.
fn read_a_part(conn: &mut std::net::TcpStream, seen: &std::sync::Mutex<Vec<u8>>) {
    let mut part = vec![0; 16 * 1024];
    conn.read_exact(&mut part).unwrap();
    seen.lock().unwrap().extend_from_slice(&part);
}

/// An upstream whose first connection reads a part of the request, answers [`TOO_LARGE`] and
/// then does `after` (later connections answer normally); what that connection read is kept.
fn answering_early(
    after: impl Fn(std::net::TcpStream, &Stop) + Send + Sync + 'static,
) -> (RawUpstream, Arc<std::sync::Mutex<Vec<u8>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = seen.clone();
    let up = RawUpstream::narrow(move |n, mut conn, stop| {
        if n > 0 {
            return answer_normally(&conn);
        }
        read_a_part(&mut conn, &got);
        conn.write_all(TOO_LARGE).unwrap();
        after(conn, stop);
    });
    (up, seen)
}

/// Sends a request too large for [`answering_early`]'s upstream: the client gets the upstream's
/// 431, logged as such; the upstream got the request's start once, and the next request goes on
/// a new connection.
fn assert_the_early_answer_is_relayed(
    gw: &Gateway,
    up: &RawUpstream,
    seen: &std::sync::Mutex<Vec<u8>>,
    id: &str,
) {
    let big = big_header();
    let resp = gw.send(&token_request(id, &[("X-Big", &big)]));
    assert_eq!(resp.status(), 431, "{resp:?}");
    assert_eq!(resp.body_str(), "head too big\n");
    let line = access_line(id);
    assert!(
        line.contains("status=431 upstream_status=431") && line.contains("error=\"-\""),
        "{line}"
    );
    assert!(seen
        .lock()
        .unwrap()
        .starts_with(format!("POST {ENV} HTTP/1.1\r\n").as_bytes()));
    // That connection is done with: the next request gets a new one.
    assert_eq!(token(gw).status(), 200);
    assert_eq!(up.connections(), 2);
}

/// RFC 9112 §9.6: an answer that arrives while the request is still being written is the answer.
/// The upstream reads a part of a large request, answers 431, half-closes and stops reading: the
/// gateway's write could only wait for its timeout.
#[test]
fn an_early_answer_from_an_upstream_that_half_closes_is_relayed() {
    let (up, seen) = answering_early(|conn, stop| {
        half_close(&conn);
        // Open, unread, until the test is over.
        stop.wait();
    });
    let toml = config(up.addr, &token_route("to_basic")).replace(
        "read_timeout = \"5s\"",
        "read_timeout = \"5s\"\nwrite_timeout = \"5s\"",
    );
    let gw = Gateway::start_with(&toml, "max_header_bytes = 1048575");
    assert_the_early_answer_is_relayed(&gw, &up, &seen, "early-half");
}

/// The upstream answers and closes with the rest of the request unread: the kernel sends a reset,
/// the gateway's write fails, and the answer is in its receive buffer (RFC 9112 §9.6: read it).
#[test]
fn an_early_answer_before_a_reset_is_read_from_the_receive_buffer() {
    // Dropped with unread bytes: RST.
    let (up, seen) = answering_early(|conn, _| drop(conn));
    let gw = gateway_at(up.addr);
    assert_the_early_answer_is_relayed(&gw, &up, &seen, "early-reset");
}

/// A reset that destroyed no answer (none was sent) leaves nothing to relay: 502, once.
#[test]
fn a_reset_while_writing_without_an_answer_is_502() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = seen.clone();
    let up = RawUpstream::narrow(move |_, mut conn, _| read_a_part(&mut conn, &got));
    let gw = gateway_at(up.addr);
    let big = big_header();
    let resp = gw.send(&token_request("reset-no-answer", &[("X-Big", &big)]));
    assert_oauth_error(&resp, 502, "server_error");
    assert_logged_cause("reset-no-answer", "reset while writing request");
    assert_eq!(up.connections(), 1, "never sent twice");
}

/// A gateway in front of `addr` that lets heads up to Pingora's own 1 MiB through (its default
/// `server.max_header_bytes`, 64 KiB, would answer [`big_header`] itself).
fn gateway_at(addr: std::net::SocketAddr) -> Gateway {
    Gateway::start_with(
        &config(addr, &token_route("to_basic")),
        "max_header_bytes = 1048575",
    )
}

/// An upstream whose answers depend on the request's `X-Answer` field: `204` is answered with a
/// 204 and, 50 ms later, a whole second answer on the same connection (a non-conforming server, or
/// a body it should not have sent); anything else with a token. Each request is recorded with the
/// number of its connection; `strays` counts the second answers sent.
struct StrayAfter204 {
    up: RawUpstream,
    requests: Arc<std::sync::Mutex<Vec<(usize, String)>>>,
    strays: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

const STRAY: &str = "{\"stray\":\"bytes\"}";

impl StrayAfter204 {
    fn start() -> StrayAfter204 {
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let strays = Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new()));
        let (seen, sent) = (requests.clone(), strays.clone());
        let up = RawUpstream::start(move |n, conn, _| {
            while let Some(req) = read_request(&conn) {
                let answer = req.header("x-answer").unwrap_or_default();
                seen.lock().unwrap().push((n, answer.clone()));
                let mut w = &conn;
                if answer == "204" {
                    w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    let stray = response(200, &[("Content-Type", "application/json")], STRAY);
                    let _ = w.write_all(&stray);
                    *sent.0.lock().unwrap() += 1;
                    sent.1.notify_all();
                } else {
                    let out = response(200, &[("Content-Type", "application/json")], TOKEN_JSON);
                    if w.write_all(&out).is_err() {
                        return;
                    }
                }
            }
        });
        StrayAfter204 {
            up,
            requests,
            strays,
        }
    }

    /// Waits until `n` stray answers have been sent.
    fn wait_for_strays(&self, n: usize) {
        let (lock, cv) = &*self.strays;
        let (sent, _) = cv
            .wait_timeout_while(lock.lock().unwrap(), WAIT, |s| *s < n)
            .unwrap();
        assert!(*sent >= n, "the upstream sent {} stray answers", *sent);
    }
}

/// RFC 9112 §6.3: a 204 has no body, whatever follows it. Bytes the upstream sends after it on
/// that connection cannot be told from the next answer, so the connection is never reused: the
/// next client (here from another address) gets its own upstream's answer, whether it comes at
/// once or after the stray bytes arrived.
#[test]
fn a_stray_answer_after_a_204_never_reaches_another_client() {
    let up = StrayAfter204::start();
    let gw = gateway_at(up.up.addr);
    let other = std::net::IpAddr::from([127, 0, 0, 2]);
    for round in 1..=2 {
        let first = gw.send(&token_request(
            &format!("r{round}-204"),
            &[("X-Answer", "204")],
        ));
        assert_eq!(first.status(), 204);
        if round == 2 {
            // This time the stray bytes are there when the next request comes.
            up.wait_for_strays(2);
        }
        let next = gw.send_from(other, &token_request(&format!("r{round}-other"), &[]));
        assert_eq!(
            (next.status(), next.body_str().as_str()),
            (200, TOKEN_JSON),
            "round {round}"
        );
    }
    let requests = up.requests.lock().unwrap().clone();
    let mut answered_204 = std::collections::HashSet::new();
    for (n, answer) in &requests {
        assert!(
            !answered_204.contains(n),
            "a request went on a connection that had answered 204: {requests:?}"
        );
        if answer == "204" {
            answered_204.insert(*n);
        }
    }
}

/// RFC 9110 §15.2.2: the gateway never asks for an upgrade, so a 101 to a token POST is no
/// answer the client can use: 502, with the cause in the access log.
#[test]
fn a_101_answer_to_a_token_request_is_502() {
    let up = RawUpstream::start(|_, conn, stop| {
        if read_request(&conn).is_some() {
            let mut w = &conn;
            let _ = w.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            );
            stop.wait();
        }
    });
    let gw = gateway_at(up.addr);
    let resp = gw.send(&token_request("upgrade-101", &[]));
    assert_oauth_error(&resp, 502, "server_error");
    assert_logged_cause("upgrade-101", "upgrade answer (101)");
}

/// Writes `bytes` one at a time, `gap` apart, until done or the peer has gone.
fn trickle(conn: &std::net::TcpStream, bytes: &[u8], gap: std::time::Duration) {
    let mut w = conn;
    for b in bytes {
        if w.write_all(&[*b]).is_err() {
            return;
        }
        std::thread::sleep(gap);
    }
}

/// The whole answer, every head and the body, must arrive within the upstream's `read_timeout`
/// of the request's end: a byte every 250 ms (each read well within 2 s) is cut at 2 s, in the
/// head and in the body alike, with a 504.
#[test]
fn an_answer_trickled_byte_by_byte_is_cut_at_the_read_timeout() {
    let body = "x".repeat(80);
    let up = RawUpstream::start(move |_, conn, _| {
        let Some(req) = read_request(&conn) else {
            return;
        };
        let gap = std::time::Duration::from_millis(250);
        let answer = response(200, &[("Content-Type", "application/json")], &body);
        if req.header("x-answer").as_deref() == Some("slow-body") {
            let head = answer.len() - body.len();
            (&conn).write_all(&answer[..head]).unwrap();
            trickle(&conn, &answer[head..], gap);
        } else {
            trickle(&conn, &answer, gap);
        }
    });
    let toml = config(up.addr, &token_route("to_basic"))
        .replace("read_timeout = \"5s\"", "read_timeout = \"2s\"");
    let gw = Gateway::start(&toml);
    for (id, answer, cause) in [
        ("slow-head", "slow-head", "timeout on answer head"),
        ("slow-body", "slow-body", "timeout on answer body"),
    ] {
        let started = std::time::Instant::now();
        let resp = gw.send(&token_request(id, &[("X-Answer", answer)]));
        let took = started.elapsed();
        assert_oauth_error(&resp, 504, "temporarily_unavailable");
        assert!(
            took < std::time::Duration::from_secs(4),
            "{id}: answered after {took:?}"
        );
        assert_logged_cause(id, cause);
    }
}

/// Chunk extensions and trailers are bounded (8 KiB together per answer): an upstream that
/// sends megabytes of either is cut off with a 502, long before it has written them.
#[test]
fn megabytes_of_chunk_extensions_or_trailers_are_not_read() {
    let wrote_all = Arc::new(AtomicUsize::new(0));
    let count = wrote_all.clone();
    let up = RawUpstream::start(move |_, conn, _| {
        let Some(req) = read_request(&conn) else {
            return;
        };
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        if req.header("x-answer").as_deref() == Some("extensions") {
            out.extend_from_slice(b"2");
            while out.len() < 8 << 20 {
                out.extend_from_slice(b";a=b");
            }
            out.extend_from_slice(b"\r\n{}\r\n0\r\n\r\n");
        } else {
            out.extend_from_slice(b"2\r\n{}\r\n0\r\n");
            while out.len() < 8 << 20 {
                out.extend_from_slice(b"X-Trailer: 0123456789abcdef0123456789abcdef\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        if (&conn).write_all(&out).is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let gw = gateway_at(up.addr);
    for id in ["extensions", "trailers"] {
        let resp = gw.send(&token_request(id, &[("X-Answer", id)]));
        assert_oauth_error(&resp, 502, "server_error");
        assert_logged_cause(id, "chunk extensions or trailers too large");
    }
    drop(gw);
    drop(up);
    assert_eq!(wrote_all.load(Ordering::SeqCst), 0, "8 MB were read");
}

/// RFC 9112 §6.3 3.: chunked framing wins over a Content-Length beside it, and the connection
/// closes after such an answer (it may be an attempt at response splitting).
#[test]
fn an_answer_with_transfer_encoding_and_content_length_closes_its_connection() {
    let up = answering(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n\
         4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
    );
    let gw = gateway(&up);
    for _ in 0..2 {
        let resp = token(&gw);
        assert_eq!(
            (resp.status(), resp.body_str().as_str()),
            (200, "{\"a\":1}")
        );
        assert_eq!(resp.header("content-length").as_deref(), Some("7"));
    }
    assert_eq!(up.connections(), 2);
}

/// The gateway relays bodies it can frame itself: a transfer coding other than one `chunked`
/// (here `gzip`, beside a length it would otherwise have been framed by) is a 502.
#[test]
fn a_transfer_encoding_the_gateway_cannot_relay_is_502() {
    let up = answering("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}");
    let gw = gateway(&up);
    let resp = gw.send(&token_request("gzip-coding", &[]));
    assert_oauth_error(&resp, 502, "server_error");
    assert_logged_cause("gzip-coding", "bad transfer-encoding");
}
