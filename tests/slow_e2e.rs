//! End-to-end: slow and idle clients (issue "abuse resistance, part 2"). Pingora alone reads a
//! request head with a timeout per read, so a client trickling bytes held a connection forever;
//! these tests hold the gateway to `server.header_timeout`, `server.keepalive_timeout` and its
//! connection caps while a well-behaved client keeps being served.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const HEAD: &[u8] = b"POST /5a0b3c2d-1111-2222-3333-444455556666/as/token HTTP/1.1\r\nHost: gw\r\n\
Content-Type: application/x-www-form-urlencoded\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";

fn gateway(up: &Upstream, server_extra: &str) -> Gateway {
    Gateway::start_with(&config(up.addr, &token_route("to_basic")), server_extra)
}

/// Whether the peer has closed the connection (a non-blocking probe).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// A well-behaved client on 127.0.0.1 sending token requests until stopped: every status.
struct Legit {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u16>>,
}

impl Legit {
    fn start(gw: &Gateway) -> Legit {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = gw.addr;
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                s.write_all(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"))
                    .unwrap();
                let r = read_message(&mut std::io::BufReader::new(s), false)
                    .unwrap()
                    .unwrap();
                statuses.push(r.status());
                std::thread::sleep(Duration::from_millis(50));
            }
            statuses
        });
        Legit { stop, thread }
    }

    fn stop(self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// 500 connections from 127.0.0.3 trickle a request head a byte at a time: each is closed within
/// `header_timeout` + 1 s of its start, while a client on 127.0.0.1 keeps getting 200s.
#[test]
fn trickled_heads_are_cut_at_the_header_timeout_while_others_are_served() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(
        &up,
        "header_timeout = \"2s\"\nmax_connections_per_ip = 1000",
    );
    let legit = Legit::start(&gw);
    let mut conns: Vec<(TcpStream, Instant, Option<Instant>)> = (0..500)
        .map(|_| {
            let s = gw.connect_from(ATTACKER);
            s.set_nonblocking(true).unwrap();
            (s, Instant::now(), None)
        })
        .collect();
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    while conns.iter().any(|c| c.2.is_none()) && Instant::now() < give_up {
        for (s, _, done) in conns.iter_mut().filter(|c| c.2.is_none()) {
            let _ = s.write(&HEAD[sent % HEAD.len()..][..1]);
            if closed(s) {
                *done = Some(Instant::now());
            }
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let statuses = legit.stop();
    let slowest = conns
        .iter()
        .map(|(_, start, done)| done.map(|d| d - *start))
        .max()
        .unwrap();
    let slowest = slowest.expect("a trickling connection was never closed");
    assert!(
        slowest <= Duration::from_secs(3),
        "slowest closed after {slowest:?}"
    );
    assert!(statuses.len() >= 5, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(up.received().len() >= statuses.len());
    // Attackers do not decide how many error lines the gateway writes (the metric counts them).
    let cut = logs()
        .lines()
        .filter(|l| l.contains(tokengate::conn::HEAD_TIMEOUT))
        .count();
    assert_eq!(cut, 0, "a log line per cut connection");
}

#[test]
fn connections_that_send_nothing_are_closed_at_the_header_timeout() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "header_timeout = \"1s\"");
    let mut conns: Vec<TcpStream> = (0..50).map(|_| gw.connect_from(ATTACKER)).collect();
    let started = Instant::now();
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 16];
        // The server closes: EOF (or a reset), not our read timeout.
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) => assert_ne!(e.kind(), ErrorKind::WouldBlock, "still open: {e}"),
            Ok(n) => panic!("unexpected {n} bytes"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A kept-alive connection: idle, it is closed after the keep-alive timeout; its next head is
/// held to the header timeout from its first byte.
#[test]
fn kept_alive_connections_close_when_idle_and_their_next_head_is_timed_too() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "header_timeout = \"1s\"\nkeepalive_timeout = \"2s\"");
    let one = token_post(ENV, &[FORM], "client_id=a&client_secret=b");
    // Idle after a request: closed after about the keep-alive timeout.
    let mut s = gw.connect();
    s.write_all(&one).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_message(&mut r, false).unwrap().unwrap().status(), 200);
    let idle = Instant::now();
    let mut b = [0u8; 16];
    assert!(matches!(r.read(&mut b), Ok(0) | Err(_)));
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // A second head trickled after a served request: closed about a second after its first byte,
    // long before the keep-alive timeout would.
    let mut s = gw.connect();
    s.write_all(&one).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_message(&mut r, false).unwrap().unwrap().status(), 200);
    s.write_all(b"P").unwrap();
    let first_byte = Instant::now();
    s.set_nonblocking(true).unwrap();
    let mut open = true;
    while open && first_byte.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(200));
        let _ = s.write(b"O");
        open = !closed(&mut s);
    }
    assert!(!open);
    assert!(
        first_byte.elapsed() < Duration::from_secs(3),
        "{:?}",
        first_byte.elapsed()
    );
}

#[test]
fn connections_beyond_the_caps_are_closed_at_once_and_counted() {
    let up = Upstream::start(Behaviour::default());
    let admin = free_addr();
    let gw = Gateway::start_with(
        &config(
            up.addr,
            &format!("{}[admin]\nlisten = \"{admin}\"\n", token_route("to_basic")),
        ),
        "max_connections_per_ip = 5\nmax_connections = 8",
    );
    // A connection that was served (so admitted), kept open.
    let served = |from: IpAddr| -> TcpStream {
        let mut s = gw.connect_from(from);
        s.write_all(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"))
            .unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        assert_eq!(read_message(&mut r, false).unwrap().unwrap().status(), 200);
        s
    };
    let held: Vec<TcpStream> = (0..5).map(|_| served(ATTACKER)).collect();
    let probe = |from: IpAddr| -> bool {
        let mut s = gw.connect_from(from);
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    };
    assert!(
        probe(ATTACKER),
        "the sixth connection from one address is closed at once"
    );
    let ok = gw.send_from(
        CLIENT,
        &token_post(ENV, &[FORM], "client_id=a&client_secret=b"),
    );
    assert_eq!(ok.status(), 200, "another address is served");
    // Fill the gateway: 5 + 3 = 8.
    let more: Vec<TcpStream> = (0..3)
        .map(|i| served(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i))))
        .collect();
    assert!(probe(CLIENT), "beyond max_connections, closed at once");
    let metrics = {
        let mut s = connect_when_listening(admin);
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        read_message(&mut std::io::BufReader::new(s), false)
            .unwrap()
            .unwrap()
            .body_str()
    };
    assert!(
        metrics
            .contains("tokengate_connections_refused_total{reason=\"max_connections_per_ip\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokengate_connections_refused_total{reason=\"max_connections\"} 1"),
        "{metrics}"
    );
    drop(held);
    drop(more);
}
