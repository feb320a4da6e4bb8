//! End-to-end: the gateway attacked as an attacker would (issue "abuse resistance, part 1"). Each
//! test plays one attack against the real gateway in front of a recording upstream, and checks
//! both what the attacker got and that legitimate clients were not hurt.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokengate::clients::secret::{hash_argon2id, hash_sha256};

const ENV_ID: &str = "5a0b3c2d-1111-2222-3333-444455556666";
const WEB_SECRET: &str = "web-s3cr:t+/é%41";
const ARGON_SECRET: &str = "argon:&=secret";

fn record(client_id: &str, secret: Option<&str>, methods: &str, extra: &str) -> String {
    let secret = secret
        .map(|s| format!("secret = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "[[clients]]\nenv_id = \"{ENV_ID}\"\nclient_id = \"{client_id}\"\n{secret}\
         auth_methods = {methods}\n{extra}\n"
    )
}

/// Mostly argon2id records (so the dummy secret is argon2id): a sha256 post client, argon2id
/// post clients (one disabled, one Basic-only), a public client.
fn clients() -> String {
    let argon = hash_argon2id(ARGON_SECRET.as_bytes());
    [
        record(
            "web",
            Some(&hash_sha256(WEB_SECRET.as_bytes())),
            "[\"client_secret_post\"]",
            "",
        ),
        record("argon", Some(&argon), "[\"client_secret_post\"]", ""),
        record("argon-2", Some(&argon), "[\"client_secret_post\"]", ""),
        record("fleet", Some(&argon), "[\"client_secret_post\"]", ""),
        record(
            "argon-off",
            Some(&argon),
            "[\"client_secret_post\"]",
            "enabled = false",
        ),
        record("argon-basic", Some(&argon), "[\"client_secret_basic\"]", ""),
        record("spa", None, "[\"none\"]", ""),
    ]
    .concat()
}

fn write_clients(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("clients.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A validating gateway on the token route, with an admin listener for metrics.
struct Setup {
    gw: Gateway,
    up: Upstream,
    admin: SocketAddr,
    _dir: TempDir,
}

/// `clients_extra` goes into `[clients]`, `extra` after the last section.
fn setup(name: &str, clients_extra: &str, extra: &str) -> Setup {
    setup_with(name, clients_extra, extra, "")
}

/// [`setup`] with more `[server]` keys.
fn setup_with(name: &str, clients_extra: &str, extra: &str, server_extra: &str) -> Setup {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new(name);
    let clients = write_clients(&dir, &clients());
    let admin = free_addr();
    let toml = format!(
        "[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"validate\"\n\
         [[routes]]\nname = \"authorize\"\npath = \"/{{env_id}}/as/authorize\"\nmode = \"passthrough\"\n\
         [clients]\nfile = \"{}\"\n{clients_extra}\n[admin]\nlisten = \"{admin}\"\n{extra}",
        clients.display()
    );
    let gw = Gateway::start_with(&config(up.addr, &toml), server_extra);
    Setup {
        gw,
        up,
        admin,
        _dir: dir,
    }
}

fn token_at(env: &str) -> String {
    format!("/{env}/as/token")
}

fn post(gw: &Gateway, body: &str) -> Message {
    gw.send(&token_post(ENV, &[FORM], body))
}

fn verifications(admin: SocketAddr, kind: &str) -> f64 {
    metric(
        admin,
        &format!("tokengate_secret_verifications_total{{kind=\"{kind}\"}}"),
    )
}

/// Runs `n` requests at once, each on its own connection; returns the statuses.
fn in_parallel(gw: &Gateway, n: usize, raw: impl Fn(usize) -> Vec<u8>) -> Vec<u16> {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (mut s, raw, barrier) = (gw.connect(), raw(i), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                s.write_all(&raw).unwrap();
                read_message(&mut BufReader::new(s), false)
                    .unwrap()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

// ---- lockout as a weapon --------------------------------------------------------------------

/// Guessing a client's secret — in another environment or in its own — neither locks its owner
/// out in its environment nor stops a secret it already used from working.
#[test]
fn an_attack_on_a_client_id_does_not_lock_its_owner_out() {
    let lockout = "[lockout]\nmax_failures_per_client = 10\nmax_failures_per_ip = 1000\n";
    let s = setup("abuse-victim", "", lockout);
    let victim = || post(&s.gw, &form("web", WEB_SECRET));
    assert_eq!(victim().status(), 200, "the owner signs in once");

    // Ten wrong secrets for `web` in an environment that does not exist...
    for _ in 0..10 {
        let r = s.gw.send(&token_post(
            &token_at("bogus"),
            &[FORM],
            &form("web", "guess"),
        ));
        assert_eq!(r.status(), 401);
    }
    assert_eq!(victim().status(), 200);
    // ... and then in its own environment, until it is locked.
    let mut locked = 0;
    for _ in 0..20 {
        match post(&s.gw, &form("web", "guess")).status() {
            401 => {}
            429 => locked += 1,
            other => panic!("{other}"),
        }
        assert_eq!(
            victim().status(),
            200,
            "the remembered secret passes throughout"
        );
    }
    assert_eq!(locked, 10);
    // A secret that never verified gets no verification while the client is locked.
    let fresh = post(&s.gw, &form("web", "another-guess"));
    assert_oauth_error(&fresh, 429, "slow_down");
    assert_eq!(s.up.received().len(), 22);
}

/// A public client has no secret to guess: wrong secrets sent under its client_id lock nobody
/// out but the address that sent them.
#[test]
fn guesses_under_a_public_clients_id_do_not_lock_it_out() {
    let lockout = "[lockout]\nmax_failures_per_client = 3\nmax_failures_per_ip = 5\n";
    let s = setup("abuse-public", "", lockout);
    let public = token_post(
        ENV,
        &[FORM],
        "grant_type=authorization_code&client_id=spa&code=c&code_verifier=v",
    );
    let statuses: Vec<u16> = (0..5)
        .map(|_| {
            s.gw.send_from(PROXY, &token_post(ENV, &[FORM], &form("spa", "x")))
                .status()
        })
        .collect();
    assert_eq!(
        statuses,
        [401, 401, 401, 429, 429],
        "the client_id is locked for guesses"
    );
    assert_eq!(s.gw.send_from(DIRECT, &public).status(), 200);
    assert_eq!(s.gw.send_from(PROXY, &public).status(), 200);
    // Two more failures from the guessing address lock it, for public requests too.
    for id in ["g1", "g2"] {
        let r =
            s.gw.send_from(PROXY, &token_post(ENV, &[FORM], &form(id, "x")));
        assert_eq!(r.status(), 401);
    }
    assert_oauth_error(&s.gw.send_from(PROXY, &public), 429, "slow_down");
    assert_eq!(s.gw.send_from(DIRECT, &public).status(), 200);
}

#[test]
fn a_burst_of_wrong_secrets_gets_at_most_the_threshold_verified() {
    let lockout = "[lockout]\nmax_failures_per_client = 10\nmax_failures_per_ip = 1000\n";
    let s = setup("abuse-burst", "", lockout);
    let before = verifications(s.admin, "argon2id");
    let statuses = in_parallel(&s.gw, 40, |i| {
        token_post(ENV, &[FORM], &form("argon", &format!("guess-{i}")))
    });
    assert_eq!(
        count(&statuses, 401) + count(&statuses, 429),
        40,
        "{statuses:?}"
    );
    assert!(count(&statuses, 401) <= 10, "{statuses:?}");
    assert_eq!(
        verifications(s.admin, "argon2id") - before,
        count(&statuses, 401) as f64
    );
    assert!(s.up.received().is_empty());
}

#[test]
fn a_fleet_starting_with_the_right_secret_all_gets_through() {
    let lockout = "[lockout]\nmax_failures_per_client = 10\nmax_failures_per_ip = 1000\n";
    let s = setup("abuse-fleet", "", lockout);
    let before = verifications(s.admin, "argon2id");
    let statuses = in_parallel(&s.gw, 20, |_| {
        token_post(ENV, &[FORM], &form("fleet", ARGON_SECRET))
    });
    assert_eq!(count(&statuses, 200), 20, "{statuses:?}");
    // Identical verifications in flight ran once.
    assert_eq!(verifications(s.admin, "argon2id") - before, 1.0);
}

#[test]
fn a_full_verification_queue_answers_503_with_retry_after() {
    let lockout = "[lockout]\nmax_failures_per_client = 1000\nmax_failures_per_ip = 1000\n";
    let s = setup("abuse-queue", "max_pending_verifications = 1", lockout);
    let statuses = in_parallel(&s.gw, 12, |i| {
        token_post(ENV, &[FORM], &form("argon", &format!("guess-{i}")))
    });
    assert!(count(&statuses, 503) > 0, "{statuses:?}");
    assert_eq!(count(&statuses, 401) + count(&statuses, 503), 12);
    let busy = metric(s.admin, "tokengate_verifications_refused_total");
    assert_eq!(busy, count(&statuses, 503) as f64);
    let r = post(&s.gw, &form("nobody-else", "x"));
    assert_eq!(r.status(), 401, "the queue drains");
}

// ---- the existence oracle -------------------------------------------------------------------

/// Unknown client, disabled client, wrong secret, method not allowed, a secret for a public
/// client: one answer, and one argon2id verification each (the records are argon2id, so the
/// secret of a client without a usable one is checked against an argon2id dummy).
#[test]
fn every_failed_authentication_gets_the_same_answer_after_the_same_work() {
    let lockout = "[lockout]\nmax_failures_per_client = 1000\nmax_failures_per_ip = 1000\n";
    let s = setup("abuse-oracle", "", lockout);
    let basic = |id: &str, secret: &str| {
        let enc = |v: &str| tokengate::protocol::form::encode(v.as_bytes());
        let auth = basic(&format!("{}:{}", enc(id), enc(secret)));
        token_post(
            ENV,
            &[FORM, ("Authorization", &auth)],
            "grant_type=client_credentials",
        )
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "wrong secret",
            token_post(ENV, &[FORM], &form("argon", "nope")),
        ),
        (
            "unknown client",
            token_post(ENV, &[FORM], &form("ghost", "nope")),
        ),
        (
            "disabled client",
            token_post(ENV, &[FORM], &form("argon-off", ARGON_SECRET)),
        ),
        (
            "method not allowed",
            token_post(ENV, &[FORM], &form("argon-basic", ARGON_SECRET)),
        ),
        (
            "secret for a public client",
            token_post(ENV, &[FORM], &form("spa", "x")),
        ),
    ];
    let mut answers = Vec::new();
    for (what, raw) in &cases {
        let before = verifications(s.admin, "argon2id");
        let r = s.gw.send(raw);
        assert_oauth_error(&r, 401, "invalid_client");
        assert_eq!(
            verifications(s.admin, "argon2id") - before,
            1.0,
            "{what}: one argon2id verification"
        );
        let names: Vec<String> = r
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        answers.push((what, r.body.clone(), names));
    }
    for (what, body, names) in &answers[1..] {
        assert_eq!(body, &answers[0].1, "{what}");
        assert_eq!(names, &answers[0].2, "{what}");
    }
    // With Basic, the same again (plus WWW-Authenticate for every one of them).
    let wrong = s.gw.send(&basic("argon-basic", "nope"));
    let unknown = s.gw.send(&basic("ghost", "nope"));
    let not_allowed = s.gw.send(&basic("argon", ARGON_SECRET));
    for r in [&wrong, &unknown, &not_allowed] {
        assert_oauth_error(r, 401, "invalid_client");
        assert_eq!(r.body, wrong.body);
        assert!(r.header("www-authenticate").is_some());
    }
    // A confidential client without its secret and an unknown public client: no secret, so no
    // verification either way, and the same answer.
    let before = verifications(s.admin, "argon2id");
    let no_secret = post(&s.gw, "grant_type=client_credentials&client_id=argon");
    let unknown_public = post(&s.gw, "grant_type=client_credentials&client_id=ghost");
    assert_eq!(no_secret.body, unknown_public.body);
    assert_eq!(no_secret.body, answers[0].1);
    assert_eq!(verifications(s.admin, "argon2id"), before);
    assert!(s.up.received().is_empty());
}

// ---- no way around a route ------------------------------------------------------------------

#[test]
fn other_spellings_of_the_token_path_are_refused_not_forwarded() {
    let s = setup("abuse-paths", "", "");
    for path in [
        format!("/{ENV_ID}/as/TOKEN?client_id=web&client_secret=x"),
        format!("/{ENV_ID}/as/TOKEN"),
        format!("/{ENV_ID}/As/Token"),
        format!("/{ENV_ID}/as/token;jsessionid=1"),
        format!("/{ENV_ID}/as%2Ftoken"),
        format!("/{ENV_ID}/as%5ctoken"),
        format!("/{ENV_ID}\\as\\token"),
    ] {
        let r =
            s.gw.send(&token_post(&path, &[FORM], &form("web", WEB_SECRET)));
        assert_oauth_error(&r, 400, "invalid_request");
        assert!(r.body_str().contains("path"), "{path}: {}", r.body_str());
    }
    // The real path still works, and other paths pass.
    assert_eq!(post(&s.gw, &form("web", WEB_SECRET)).status(), 200);
    let other =
        s.gw.send(format!("GET /{ENV_ID}/as/userinfo HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
    assert_eq!(other.status(), 200);
    assert_eq!(s.up.received().len(), 2);
}

#[test]
fn secrets_in_a_query_string_are_refused_towards_the_token_server_but_client_id_is_not() {
    let s = setup("abuse-query", "", "");
    let get = |target: &str| {
        s.gw.send(format!("GET {target} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
    };
    for q in [
        "client_id=web&client_secret=x",
        "client%5Fsecret=x",
        "client_assertion=j",
    ] {
        let r = get(&format!("/{ENV_ID}/as/authorize?{q}"));
        assert_oauth_error(&r, 400, "invalid_request");
        let r = get(&format!("/elsewhere?{q}"));
        assert_oauth_error(&r, 400, "invalid_request");
    }
    assert!(s.up.received().is_empty());
    let r = get(&format!(
        "/{ENV_ID}/as/authorize?client_id=web&response_type=code"
    ));
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.up.only().target(),
        format!("/{ENV_ID}/as/authorize?client_id=web&response_type=code")
    );
}

#[test]
fn strict_paths_can_be_turned_off_for_servers_that_match_exactly() {
    let up = Upstream::start(Behaviour::default());
    let gw = Gateway::start_with(
        &config(up.addr, &token_route("to_basic")),
        "strict_paths = false",
    );
    let r = gw.send(&token_post(&format!("/{ENV_ID}/as/TOKEN"), &[FORM], "a=1"));
    assert_eq!(r.status(), 200);
    assert_eq!(up.only().target(), format!("/{ENV_ID}/as/TOKEN"));
}

// ---- registry bounds ------------------------------------------------------------------------

/// A registry that answers `web` (sha256), a record with an `env:` secret for `envy`, 404 for
/// anyone else, after `delay`, counting how many requests it holds at once.
fn registry(delay: Duration, peak: Arc<AtomicUsize>) -> Upstream {
    let web = format!(
        r#"{{"client_id":"web","secret":"{}","auth_methods":["client_secret_post"]}}"#,
        hash_sha256(WEB_SECRET.as_bytes())
    );
    let envy = r#"{"client_id":"envy","secret":"env:HOME","auth_methods":["client_secret_post"]}"#;
    let now = Arc::new(AtomicUsize::new(0));
    Upstream::start(Behaviour {
        respond: Some(Arc::new(move |req: &Message| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(delay);
            now.fetch_sub(1, Ordering::SeqCst);
            if req.start.contains("/clients/web ") {
                response(200, &[("Content-Type", "application/json")], &web)
            } else if req.start.contains("/clients/envy ") {
                response(200, &[("Content-Type", "application/json")], envy)
            } else {
                response(404, &[], "")
            }
        })),
        ..Default::default()
    })
}

fn registry_gateway(up: &Upstream, reg: SocketAddr, extra: &str) -> Gateway {
    let toml = format!(
        "[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"validate\"\n\
         [clients]\nregistry_url = \"http://{reg}/registry\"\nallow_insecure_registry = true\n\
         registry_timeout = \"5s\"\n{extra}"
    );
    Gateway::start(&config(up.addr, &toml))
}

#[test]
fn implausible_client_ids_are_refused_before_any_registry_call() {
    let up = Upstream::start(Behaviour::default());
    let reg = registry(Duration::ZERO, Arc::default());
    let gw = registry_gateway(&up, reg.addr, "");
    for id in [
        "x".repeat(3000),
        "a\u{1}b".to_string(),
        "tab\there".to_string(),
    ] {
        let r = post(&gw, &form(&id, "x"));
        assert_oauth_error(&r, 401, "invalid_client");
    }
    assert!(reg.received().is_empty());
    // 256 bytes is still a client_id worth asking about.
    assert_eq!(post(&gw, &form(&"y".repeat(256), "x")).status(), 401);
    assert_eq!(reg.received().len(), 1);
}

#[test]
fn a_flood_of_distinct_unknown_ids_holds_at_most_registry_max_inflight_lookups() {
    let up = Upstream::start(Behaviour::default());
    let peak = Arc::new(AtomicUsize::new(0));
    let reg = registry(Duration::from_millis(300), peak.clone());
    let gw = registry_gateway(
        &up,
        reg.addr,
        "registry_max_inflight = 8\n[lockout]\nmax_failures_per_client = 0\nmax_failures_per_ip = 0\n",
    );
    let statuses = in_parallel(&gw, 100, |i| {
        token_post(ENV, &[FORM], &form(&format!("flood-{i}"), "x"))
    });
    assert!(
        peak.load(Ordering::SeqCst) <= 8,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(
        count(&statuses, 401) + count(&statuses, 503),
        100,
        "{statuses:?}"
    );
    assert!(
        count(&statuses, 503) > 0,
        "the rest waited briefly, then 503: {statuses:?}"
    );
    assert!(up.received().is_empty());
}

#[test]
fn a_registry_outage_locks_nobody_out() {
    let up = Upstream::start(Behaviour::default());
    let dead = free_addr(); // nothing listens there
    let toml = format!(
        "[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"validate\"\n\
         [clients]\nregistry_url = \"http://{dead}/registry\"\nallow_insecure_registry = true\n\
         registry_timeout = \"1s\"\n[lockout]\nmax_failures_per_client = 3\nmax_failures_per_ip = 3\n"
    );
    let gw = Gateway::start(&config(up.addr, &toml));
    for _ in 0..6 {
        assert_oauth_error(
            &post(&gw, &form("web", WEB_SECRET)),
            503,
            "temporarily_unavailable",
        );
    }
    // Had those counted as failures, this would be 429.
    assert_oauth_error(
        &post(&gw, &form("web", WEB_SECRET)),
        503,
        "temporarily_unavailable",
    );
}

#[test]
fn a_registry_record_cannot_make_the_gateway_read_its_own_environment() {
    let up = Upstream::start(Behaviour::default());
    let reg = registry(Duration::ZERO, Arc::default());
    let gw = registry_gateway(&up, reg.addr, "");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let r = post(&gw, &form("envy", &home));
    assert_oauth_error(&r, 503, "temporarily_unavailable");
    assert!(up.received().is_empty());
    assert!(
        logs().contains("registry answer refused") || logs().contains("read-through fetch failed")
    );
}

// ---- the client address behind proxies --------------------------------------------------------

const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const DIRECT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

fn via(xff: &str, body: &str) -> Vec<u8> {
    token_post(ENV, &[FORM, ("X-Forwarded-For", xff)], body)
}

/// Behind a trusted proxy (127.0.0.2) each client is counted under the address the proxy names;
/// a client that connects directly (127.0.0.1) cannot choose its address with the header.
#[test]
fn behind_a_trusted_proxy_addresses_come_from_its_forwarding_header() {
    let lockout = "[lockout]\nmax_failures_per_client = 1000\nmax_failures_per_ip = 3\n";
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("abuse-proxy");
    let clients = write_clients(&dir, &clients());
    let toml = format!(
        "{}[clients]\nfile = \"{}\"\n{lockout}",
        token_route("validate"),
        clients.display()
    );
    let gw = Gateway::start_with(
        &config(up.addr, &toml),
        "trusted_proxies = [\"127.0.0.2/32\"]",
    );
    // Three failures from 203.0.113.7 (through the proxy; the first entry is forged).
    for i in 0..3 {
        let r = gw.send_from(
            PROXY,
            &via("6.6.6.6, 203.0.113.7", &form(&format!("g{i}"), "x")),
        );
        assert_eq!(r.status(), 401);
    }
    let locked = gw.send_from(PROXY, &via("203.0.113.7", &form("web", WEB_SECRET)));
    assert_oauth_error(&locked, 429, "slow_down");
    // Another client behind the same proxy is not affected.
    let other = gw.send_from(PROXY, &via("203.0.113.8", &form("web", WEB_SECRET)));
    assert_eq!(other.status(), 200);
    // A direct client claiming that address is counted as itself.
    let direct = gw.send_from(DIRECT, &via("203.0.113.7", &form("web", WEB_SECRET)));
    assert_eq!(direct.status(), 200);
    // The access log names the client, not the proxy (the direct request's line is the last).
    let access: Vec<String> = logs_once_they_hold("client=127.0.0.1")
        .lines()
        .filter(|l| l.contains("tokengate::access"))
        .map(str::to_string)
        .collect();
    assert!(
        access.iter().any(|l| l.contains("client=203.0.113.8")),
        "{access:?}"
    );
    assert!(
        access.iter().any(|l| l.contains("client=127.0.0.1")),
        "{access:?}"
    );
    assert!(
        !access.iter().any(|l| l.contains("client=6.6.6.6")),
        "{access:?}"
    );
}

/// The upstream learns the client's address from `X-Forwarded-For`: from a trusted proxy, its
/// chain from the client rightwards (what the client wrote left of it is dropped) with the proxy
/// appended; from anyone else only the peer's own address, whatever it claimed; on the
/// token route (the gateway's own client) and on an untouched route (Pingora's proxy path) alike.
#[test]
fn the_upstream_gets_x_forwarded_for_that_no_client_can_forge() {
    let up = Upstream::start(Behaviour::default());
    let gw = Gateway::start_with(
        &config(up.addr, &token_route("to_basic")),
        "trusted_proxies = [\"127.0.0.2/32\"]",
    );
    let body = "grant_type=client_credentials&client_id=a&client_secret=b";
    let elsewhere = |xff: &str| {
        format!("GET /other HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: {xff}\r\n\r\n").into_bytes()
    };
    let cases: [(IpAddr, Vec<u8>, &str); 5] = [
        (DIRECT, via("6.6.6.6", body), "127.0.0.1"),
        (DIRECT, token_post(ENV, &[FORM], body), "127.0.0.1"),
        (
            PROXY,
            via("6.6.6.6, 203.0.113.7", body),
            "203.0.113.7, 127.0.0.2",
        ),
        (DIRECT, elsewhere("6.6.6.6"), "127.0.0.1"),
        (PROXY, elsewhere("203.0.113.7"), "203.0.113.7, 127.0.0.2"),
    ];
    for (i, (from, raw, _)) in cases.iter().enumerate() {
        assert_eq!(gw.send_from(*from, raw).status(), 200, "case {i}");
    }
    let seen = up.wait_for(cases.len());
    for (i, (_, _, want)) in cases.iter().enumerate() {
        assert_eq!(
            seen[i].all("x-forwarded-for"),
            [want.to_string()],
            "case {i}"
        );
    }
    drop(gw);

    // Turned off: forwarded as the client sent it (the operator's own proxy sets it).
    let up = Upstream::start(Behaviour::default());
    let gw = Gateway::start_with(
        &config(up.addr, &token_route("to_basic")),
        "forward_client_address = false",
    );
    assert_eq!(gw.send_from(DIRECT, &via("6.6.6.6", body)).status(), 200);
    assert_eq!(gw.send_from(DIRECT, &elsewhere("6.6.6.6")).status(), 200);
    let seen = up.wait_for(2);
    assert!(
        seen.iter().all(|m| m.all("x-forwarded-for") == ["6.6.6.6"]),
        "{seen:?}"
    );
}

#[test]
fn without_trusted_proxies_forwarding_headers_change_nothing() {
    let lockout = "[lockout]\nmax_failures_per_client = 1000\nmax_failures_per_ip = 3\n";
    let s = setup("abuse-noproxy", "", lockout);
    for i in 0..3 {
        let r = s.gw.send_from(
            PROXY,
            &via(&format!("198.51.100.{i}"), &form(&format!("g{i}"), "x")),
        );
        assert_eq!(r.status(), 401);
    }
    let r =
        s.gw.send_from(PROXY, &via("198.51.100.99", &form("web", WEB_SECRET)));
    assert_oauth_error(&r, 429, "slow_down");
    let direct =
        s.gw.send_from(DIRECT, &token_post(ENV, &[FORM], &form("web", WEB_SECRET)));
    assert_eq!(direct.status(), 200);
}

/// A PROXY protocol v1 line: the load balancer (127.0.0.2) names `client` as the source.
fn proxy_v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 51000 8080\r\n").into_bytes()
}

/// A PROXY protocol v2 header: `command` 1 (PROXY) or 0 (LOCAL), `family` 0x11 (TCP over IPv4),
/// 0x21 (TCP over IPv6) or 0x00, then the addresses block.
fn proxy_v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend([0x20 | command, family]);
    out.extend((addresses.len() as u16).to_be_bytes());
    out.extend(addresses);
    out
}

fn v2_tcp4(client: [u8; 4]) -> Vec<u8> {
    let block = [&client[..], &[127, 0, 0, 1], &[0xC8, 0x00, 0x1F, 0x90]].concat();
    proxy_v2(1, 0x11, &block)
}

fn v2_tcp6(client: std::net::Ipv6Addr) -> Vec<u8> {
    let server = std::net::Ipv6Addr::LOCALHOST;
    let block = [
        &client.octets()[..],
        &server.octets(),
        &[0xC8, 0x00, 0x1F, 0x90],
    ]
    .concat();
    proxy_v2(1, 0x21, &block)
}

/// Sends `parts` one write each on a connection from `from`; the answer, or `None` when the
/// gateway closed the connection without one.
fn send_parts(gw: &Gateway, from: IpAddr, parts: &[&[u8]]) -> Option<Message> {
    let mut s = gw.connect_from(from);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A balancer whose header arrives in pieces: the gateway waits for the rest.
            std::thread::sleep(Duration::from_millis(30));
        }
        if s.write_all(part).is_err() {
            return None;
        }
    }
    read_message(&mut BufReader::new(s), false).ok().flatten()
}

/// With `server.proxy_protocol`, the trusted balancer (127.0.0.2) names each client in a PROXY
/// header, v1 or v2, whole or in pieces; that client is the connection's peer from then on
/// (per-address lockout, `X-Forwarded-For`, the access log); a v2 LOCAL header (the balancer's
/// health check) leaves the balancer as the peer. A connection from anyone else, or without a
/// header, is closed unanswered; the admin listener takes none.
#[test]
fn behind_a_proxy_protocol_balancer_clients_are_the_addresses_it_names() {
    let lockout = "[lockout]\nmax_failures_per_client = 1000\nmax_failures_per_ip = 3\n";
    let Setup {
        gw,
        up,
        admin,
        _dir,
    } = setup_with(
        "abuse-proxy-protocol",
        "",
        lockout,
        "trusted_proxies = [\"127.0.0.2/32\"]\nproxy_protocol = true",
    );
    let good = token_post(ENV, &[FORM], &form("web", WEB_SECRET));

    let answers = [
        send_parts(&gw, PROXY, &[&v2_tcp4([203, 0, 113, 8]), &good]),
        send_parts(
            &gw,
            PROXY,
            &[
                &v2_tcp6("2001:db8::5".parse().unwrap())[..9],
                &v2_tcp6("2001:db8::5".parse().unwrap())[9..],
                &good,
            ],
        ),
        send_parts(
            &gw,
            PROXY,
            &[&[proxy_v2(0, 0x00, &[]), good.clone()].concat()],
        ),
    ];
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.as_ref().map(Message::status), Some(200), "case {i}");
    }
    let seen = up.wait_for(3);
    let xff: Vec<Vec<String>> = seen.iter().map(|m| m.all("x-forwarded-for")).collect();
    assert_eq!(xff, [["203.0.113.8"], ["2001:db8::5"], ["127.0.0.2"]]);

    // Per-address lockout counts the named client, not the balancer.
    for i in 0..3 {
        let guess = token_post(ENV, &[FORM], &form(&format!("g{i}"), "x"));
        let r = send_parts(&gw, PROXY, &[&proxy_v1("203.0.113.7"), &guess]).unwrap();
        assert_eq!(r.status(), 401);
    }
    // (A remembered secret passes a locked address: the next guess shows the lock.)
    let guess = token_post(ENV, &[FORM], &form("g9", "x"));
    let locked = send_parts(
        &gw,
        PROXY,
        &[&[proxy_v1("203.0.113.7"), guess.clone()].concat()],
    );
    assert_oauth_error(&locked.unwrap(), 429, "slow_down");
    let other = send_parts(&gw, PROXY, &[&[proxy_v1("203.0.113.9"), guess].concat()]);
    assert_eq!(other.unwrap().status(), 401);

    // Not from the balancer, or no header: closed without an answer, nothing forwarded.
    let refused = "tokengate_connections_refused_total{reason=\"proxy_protocol\"}";
    // Counted as each is refused (polled: `before` may or may not hold the harness's own
    // readiness connection from 127.0.0.1, refused the same way).
    let counted = |n: f64| {
        let deadline = std::time::Instant::now() + WAIT;
        while metric(admin, refused) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} refusals never counted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    counted(1.0);
    let before = metric(admin, refused);
    let forged = [proxy_v1("203.0.113.9"), good.clone()].concat();
    assert!(send_parts(&gw, DIRECT, &[&forged]).is_none());
    counted(before + 1.0);
    assert!(send_parts(&gw, PROXY, &[&good]).is_none());
    counted(before + 2.0);
    assert_eq!(up.received().len(), 3);
    logs_once_they_hold("client=203.0.113.9");
}
