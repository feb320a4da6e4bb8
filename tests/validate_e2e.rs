//! End-to-end: validation in place. The real gateway checks credentials against client records
//! (a file, or an HTTP registry played by a recording test server) before anything reaches the
//! recording upstream.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokengate::clients::secret::{hash_argon2id, hash_sha256};

const ENV_ID: &str = "5a0b3c2d-1111-2222-3333-444455556666";
const WEB_SECRET: &str = "web-s3cr:t+/é%41";
const BASIC_SECRET: &str = "b4sic:&=secret";

fn record(client_id: &str, secret: Option<&str>, methods: &str, extra: &str) -> String {
    let secret = secret
        .map(|s| format!("secret = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "[[clients]]\nenv_id = \"{ENV_ID}\"\nclient_id = \"{client_id}\"\n{secret}\
         auth_methods = {methods}\n{extra}\n"
    )
}

/// The standard client file: a post client, an argon2id Basic-only client, a public client, a
/// disabled client.
fn standard_clients() -> String {
    [
        record(
            "web",
            Some(&hash_sha256(WEB_SECRET.as_bytes())),
            "[\"client_secret_post\", \"client_secret_basic\"]",
            "upstream_method = \"client_secret_basic\"\n\
             grant_types = [\"authorization_code\", \"client_credentials\"]",
        ),
        record(
            "basic-only",
            Some(&hash_argon2id(BASIC_SECRET.as_bytes())),
            "[\"CLIENT_SECRET_BASIC\"]",
            "upstream_method = \"CLIENT_SECRET_POST\"",
        ),
        record("spa", None, "[\"none\"]", ""),
        record(
            "off",
            Some(&hash_sha256(b"off-secret")),
            "[\"client_secret_post\"]",
            "enabled = false",
        ),
    ]
    .concat()
}

fn write_clients(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("clients.toml");
    // Write then rename, as operators' tools do, so a reload never reads a half-written file.
    let tmp = dir.join("clients.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

fn file_gateway(up: &Upstream, clients: &Path, lockout: &str) -> Gateway {
    let extra = format!(
        "[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"validate\"\n\
         [clients]\nfile = \"{}\"\nreload_interval = \"50ms\"\n{lockout}",
        clients.display()
    );
    Gateway::start(&config(up.addr, &extra))
}

fn post(gw: &Gateway, body: &str) -> Message {
    gw.send(&token_post(ENV, &[FORM], body))
}

fn post_basic(gw: &Gateway, user: &str, secret: &str, body: &str) -> Message {
    let enc = |s: &str| tokengate::protocol::form::encode(s.as_bytes());
    let auth = basic(&format!("{}:{}", enc(user), enc(secret)));
    gw.send(&token_post(ENV, &[FORM, ("Authorization", &auth)], body))
}

// ---- outcomes -------------------------------------------------------------------------------

#[test]
fn valid_post_client_is_forwarded_as_the_basic_its_upstream_demands() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-post");
    let gw = file_gateway(&up, &write_clients(&dir, &standard_clients()), "");
    let resp = post(&gw, &form("web", WEB_SECRET));
    assert_eq!(resp.status(), 200, "{resp:?}");
    let got = up.only();
    assert_eq!(
        got.header("authorization").unwrap(),
        basic(&format!(
            "web:{}",
            tokengate::protocol::form::encode(WEB_SECRET.as_bytes())
        ))
    );
    assert_eq!(got.body_str(), "grant_type=client_credentials");
}

/// Clients that skip RFC 6749's form-encoding (Python requests' `auth=`, some Spring versions)
/// send `id:secret` raw. Where that reads differently once decoded, the record decides: the raw
/// reading is accepted when it is the client's secret, and forwarded as the client meant it.
#[test]
fn raw_basic_credentials_are_accepted_when_the_record_confirms_them() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-raw-basic");
    let clients = [
        standard_clients(),
        record(
            "legacy",
            Some(&hash_sha256(b"b: +%&=/ %41x")),
            "[\"client_secret_basic\"]",
            "upstream_method = \"client_secret_post\"",
        ),
    ]
    .concat();
    let gw = file_gateway(&up, &write_clients(&dir, &clients), "");
    let send = |plain: &str| {
        gw.send(&token_post(
            ENV,
            &[FORM, ("Authorization", &basic(plain))],
            "grant_type=client_credentials",
        ))
    };
    // `+` and `%41` would decode to a space and `A`: the raw reading is the right one. Past the
    // lockout threshold (10) too: a verified raw reading is no failure.
    let enc = |s: &str| tokengate::protocol::form::encode(s.as_bytes());
    for i in 0..12 {
        let resp = send(&format!("web:{WEB_SECRET}"));
        assert_eq!(resp.status(), 200, "{resp:?}");
        assert_eq!(
            up.wait_for(i + 1)[i].header("authorization").unwrap(),
            basic(&format!("web:{}", enc(WEB_SECRET)))
        );
    }
    // `%&` does not decode at all: the raw reading is the only one.
    let resp = send("legacy:b: +%&=/ %41x");
    assert_eq!(resp.status(), 200, "{resp:?}");
    let got = up.wait_for(13)[12].clone();
    assert_eq!(got.header("authorization"), None);
    assert_eq!(
        got.body_str(),
        format!(
            "grant_type=client_credentials&client_id=legacy&client_secret={}",
            enc("b: +%&=/ %41x")
        )
    );
    // Neither reading right: the one answer for every failed authentication.
    for plain in ["web:web-s3cr:t+/é%42", "legacy:b: +%&=/ %41y"] {
        let resp = send(plain);
        assert_oauth_error(&resp, 401, "invalid_client");
        assert!(resp.body_str().contains("client authentication failed"));
    }
    assert_eq!(up.received().len(), 13);
}

#[test]
fn valid_basic_client_with_an_argon2id_secret_is_forwarded_as_post() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-argon");
    let gw = file_gateway(&up, &write_clients(&dir, &standard_clients()), "");
    for _ in 0..3 {
        let resp = post_basic(
            &gw,
            "basic-only",
            BASIC_SECRET,
            "grant_type=client_credentials",
        );
        assert_eq!(resp.status(), 200, "{resp:?}");
    }
    let got = up.wait_for(3);
    assert_eq!(got[0].header("authorization"), None);
    assert_eq!(
        got[0].body_str(),
        "grant_type=client_credentials&client_id=basic-only&client_secret=b4sic%3A%26%3Dsecret"
    );
}

#[test]
fn wrong_secret_unknown_client_and_disabled_client_get_the_same_401() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-same401");
    let gw = file_gateway(&up, &write_clients(&dir, &standard_clients()), "");
    let wrong = post(&gw, &form("web", "not-the-secret"));
    let unknown = post(&gw, &form("nobody", "whatever"));
    let disabled = post(&gw, &form("off", "off-secret"));
    for r in [&wrong, &unknown, &disabled] {
        assert_oauth_error(r, 401, "invalid_client");
        assert_eq!(r.header("www-authenticate"), None);
    }
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, disabled.body);

    let basic_wrong = post_basic(&gw, "basic-only", "nope", "grant_type=client_credentials");
    assert_oauth_error(&basic_wrong, 401, "invalid_client");
    assert_eq!(
        basic_wrong.header("www-authenticate").as_deref(),
        Some("Basic realm=\"tokengate\"")
    );
    assert!(up.received().is_empty());
}

/// A method the client may not use fails exactly like a wrong secret: the answer does not tell
/// that the client exists, nor which methods it has.
#[test]
fn method_not_allowed_for_the_client_is_the_same_401_as_a_wrong_secret() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-method");
    let gw = file_gateway(&up, &write_clients(&dir, &standard_clients()), "");
    let resp = post(&gw, &form("basic-only", BASIC_SECRET));
    assert_oauth_error(&resp, 401, "invalid_client");
    let wrong = post(&gw, &form("web", "not-the-secret"));
    assert_eq!(resp.body, wrong.body);
    assert_eq!(
        resp.json()["error_description"],
        "client authentication failed"
    );
    assert!(up.received().is_empty());
}

#[test]
fn grant_type_not_allowed_is_400_unauthorized_client() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-grant");
    let gw = file_gateway(&up, &write_clients(&dir, &standard_clients()), "");
    let body = form("web", WEB_SECRET).replace("client_credentials", "password");
    assert_oauth_error(&post(&gw, &body), 400, "unauthorized_client");
    assert!(up.received().is_empty());
}

#[test]
fn public_client_passes_unchanged_and_a_secretless_confidential_client_does_not() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-public");
    let gw = file_gateway(&up, &write_clients(&dir, &standard_clients()), "");
    let body = "grant_type=authorization_code&client_id=spa&code=c&code_verifier=v";
    assert_eq!(post(&gw, body).status(), 200);
    assert_eq!(up.only().body_str(), body);
    let resp = post(&gw, "grant_type=client_credentials&client_id=web");
    assert_oauth_error(&resp, 401, "invalid_client");
    let resp = post(&gw, "grant_type=client_credentials");
    assert_oauth_error(&resp, 401, "invalid_client");
    assert_eq!(up.received().len(), 1);
}

#[test]
fn validate_combines_with_the_routes_conversion_for_clients_without_an_upstream_method() {
    let up = Upstream::start(Behaviour::default());
    let clients = record(
        "plain-post",
        Some(&hash_sha256(b"pp")),
        "[\"client_secret_post\"]",
        "",
    );
    let dir = TempDir::new("validate-combine");
    let path = write_clients(&dir, &clients);
    let extra = format!(
        "[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"to_basic\"\n\
         validate = true\n[clients]\nfile = \"{}\"\n",
        path.display()
    );
    let gw = Gateway::start(&config(up.addr, &extra));
    assert_oauth_error(
        &post(&gw, &form("plain-post", "wrong")),
        401,
        "invalid_client",
    );
    assert_eq!(post(&gw, &form("plain-post", "pp")).status(), 200);
    let got = up.only();
    assert_eq!(got.header("authorization").unwrap(), basic("plain-post:pp"));
    assert_eq!(got.body_str(), "grant_type=client_credentials");
}

// ---- brute force ----------------------------------------------------------------------------

#[test]
fn repeated_failures_lock_the_client_out_with_429_even_for_the_right_secret() {
    let up = Upstream::start(Behaviour::default());
    let lockout =
        "[lockout]\nwindow = \"60s\"\nmax_failures_per_client = 3\nmax_failures_per_ip = 1000\n";
    let dir = TempDir::new("validate-lock");
    let gw = file_gateway(&up, &write_clients(&dir, &standard_clients()), lockout);
    for _ in 0..3 {
        assert_eq!(post(&gw, &form("web", "guess")).status(), 401);
        assert_eq!(post(&gw, &form("ghost", "guess")).status(), 401);
    }
    let locked = post(&gw, &form("web", WEB_SECRET));
    assert_oauth_error(&locked, 429, "slow_down");
    let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // An unknown client is locked out the same way: the answer does not tell who exists.
    let ghost = post(&gw, &form("ghost", "guess"));
    assert_oauth_error(&ghost, 429, "slow_down");
    assert_eq!(ghost.body, locked.body);
    // Other clients are not affected.
    assert_eq!(
        post_basic(&gw, "basic-only", BASIC_SECRET, "grant_type=x").status(),
        200
    );
    assert_eq!(up.received().len(), 1);
}

#[test]
fn repeated_failures_from_one_address_lock_that_address_out() {
    let up = Upstream::start(Behaviour::default());
    let lockout = "[lockout]\nmax_failures_per_client = 1000\nmax_failures_per_ip = 5\n";
    let dir = TempDir::new("validate-lockip");
    let gw = file_gateway(&up, &write_clients(&dir, &standard_clients()), lockout);
    for i in 0..5 {
        assert_eq!(post(&gw, &form(&format!("id{i}"), "x")).status(), 401);
    }
    assert_oauth_error(&post(&gw, &form("web", WEB_SECRET)), 429, "slow_down");
    assert!(up.received().is_empty());
}

// ---- file reload ----------------------------------------------------------------------------

#[test]
fn client_file_reload_under_traffic_fails_no_request() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-reload");
    let path = write_clients(&dir, &standard_clients());
    let gw = Arc::new(file_gateway(&up, &path, ""));

    let traffic = Traffic::start(gw.addr, token_post(ENV, &[FORM], &form("web", WEB_SECRET)));
    // Traffic keeps flowing around every reload.
    let wait_for_more = |n: usize| traffic.wait_for_more(n);
    for round in 0..5 {
        wait_for_more(2);
        let new_id = format!("new{round}");
        let extra = record(
            &new_id,
            Some(&hash_sha256(b"n")),
            "[\"client_secret_post\"]",
            "",
        );
        write_clients(&dir, &format!("{}{extra}", standard_clients()));
        let deadline = Instant::now() + WAIT;
        while post(&gw, &form(&new_id, "n")).status() != 200 {
            assert!(Instant::now() < deadline, "{new_id} never accepted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    wait_for_more(2);
    let statuses = traffic.stop();
    assert!(
        statuses.len() > 10,
        "too little traffic: {}",
        statuses.len()
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[test]
fn a_bad_client_file_is_refused_and_the_previous_records_stay() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("validate-badfile");
    let path = write_clients(&dir, &standard_clients());
    let gw = file_gateway(&up, &path, "");
    write_clients(&dir, "[[clients]]\nthis is not toml");
    // Several reload intervals pass; the records in force stay. (A sleep lasts at least this
    // long, so a loaded machine can only make it see fewer reloads, never fail it.)
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(post(&gw, &form("web", WEB_SECRET)).status(), 200);
    // A good file after the bad one is taken.
    write_clients(
        &dir,
        &record(
            "later",
            Some(&hash_sha256(b"l")),
            "[\"client_secret_post\"]",
            "",
        ),
    );
    let deadline = Instant::now() + WAIT;
    while post(&gw, &form("later", "l")).status() != 200 {
        assert!(Instant::now() < deadline, "good file never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(post(&gw, &form("web", WEB_SECRET)).status(), 401);
}

// ---- HTTP registry --------------------------------------------------------------------------

/// A registry answering for `web` (sha256 secret) and 404 for anyone else.
fn registry(delay: Duration) -> Upstream {
    let web = format!(
        r#"{{"client_id":"web","secret":"{}","auth_methods":["client_secret_post"],"upstream_method":"client_secret_basic"}}"#,
        hash_sha256(WEB_SECRET.as_bytes())
    );
    let want = format!("GET /registry/{ENV_ID}/clients/web HTTP/1.1");
    Upstream::start(Behaviour {
        delay,
        respond: Some(Arc::new(move |req: &Message| {
            if req.start == want {
                response(200, &[("Content-Type", "application/json")], &web)
            } else {
                response(404, &[], "")
            }
        })),
        ..Default::default()
    })
}

/// A validating gateway on the registry at `reg`; its timeout leaves the slowest test registry
/// (300 ms) seconds of slack on a loaded machine.
fn registry_gateway(up: &Upstream, reg: std::net::SocketAddr, cache: &str) -> Gateway {
    let extra = format!(
        "[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"validate\"\n\
         [clients]\nregistry_url = \"http://{reg}/registry\"\nallow_insecure_registry = true\nregistry_timeout = \"5s\"\n{cache}"
    );
    Gateway::start(&config(up.addr, &extra))
}

#[test]
fn registry_lookups_are_single_flight() {
    let up = Upstream::start(Behaviour::default());
    let reg = registry(Duration::from_millis(300));
    let gw = Arc::new(registry_gateway(&up, reg.addr, ""));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let gw = gw.clone();
            std::thread::spawn(move || post(&gw, &form("web", WEB_SECRET)).status())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(reg.received().len(), 1, "registry hits");
    assert_eq!(up.wait_for(20).len(), 20);
}

#[test]
fn unknown_clients_are_cached_negatively() {
    let up = Upstream::start(Behaviour::default());
    let reg = registry(Duration::ZERO);
    let gw = registry_gateway(&up, reg.addr, "cache_negative_ttl = \"60s\"\n");
    for _ in 0..3 {
        assert_oauth_error(&post(&gw, &form("ghost", "x")), 401, "invalid_client");
    }
    assert_eq!(reg.received().len(), 1);
}

#[test]
fn a_flood_of_unknown_ids_keeps_the_cache_within_its_bound() {
    let up = Upstream::start(Behaviour::default());
    let reg = registry(Duration::ZERO);
    let gw = registry_gateway(
        &up,
        reg.addr,
        "cache_capacity = 50\ncache_negative_ttl = \"1h\"\n\
         [lockout]\nmax_failures_per_client = 0\nmax_failures_per_ip = 0\n",
    );
    let conn = gw.connect();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut ask = |id: &str| {
        w.write_all(&token_post(ENV, &[FORM], &form(id, "x")))
            .unwrap();
        read_message(&mut r, false).unwrap().unwrap().status()
    };
    for i in 0..500 {
        assert_eq!(ask(&format!("flood{i}")), 401);
    }
    assert_eq!(reg.received().len(), 500);
    // The newest answers are still cached; the oldest were evicted to stay within 50 entries,
    // so asking again goes back to the registry.
    assert_eq!(ask("flood499"), 401);
    assert_eq!(reg.received().len(), 500);
    assert_eq!(ask("flood0"), 401);
    assert_eq!(reg.received().len(), 501);
    assert!(up.received().is_empty());
}

#[test]
fn registry_down_serves_stale_records_within_the_bound() {
    let up = Upstream::start(Behaviour::default());
    let reg = registry(Duration::ZERO);
    let gw = registry_gateway(
        &up,
        reg.addr,
        "cache_ttl = \"100ms\"\ncache_max_stale = \"1h\"\n",
    );
    assert_eq!(post(&gw, &form("web", WEB_SECRET)).status(), 200);
    drop(reg);
    // Let the cached record go stale (a sleep lasts at least this long: it cannot be too short).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(post(&gw, &form("web", WEB_SECRET)).status(), 200);
    // Nothing cached for this one: the registry being down is 503, not 401.
    assert_oauth_error(
        &post(&gw, &form("other", "x")),
        503,
        "temporarily_unavailable",
    );
}
