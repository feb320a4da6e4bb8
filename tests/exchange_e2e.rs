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
