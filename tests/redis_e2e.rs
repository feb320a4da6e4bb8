//! End-to-end: gateway processes (the real binary) sharing their lockout counters through a real
//! `redis-server` that the tests start on a loopback port: failures at two replicas add up to one
//! lockout; Redis killed mid-test gives the configured fallback without a hang; Redis back gives
//! shared counting again.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use tokengate::clients::secret::hash_sha256;

const ENV_ID: &str = "5a0b3c2d-1111-2222-3333-444455556666";
const SECRET: &str = "s3cr:t+/é%41";
/// What a request may take at most while Redis is down: the store timeout the tests configure
/// (250 ms) and a loaded machine's slack. A hang would take [`WAIT`].
const PROMPT: Duration = Duration::from_secs(3);

/// One replica: the binary, its proxy and admin addresses.
struct Replica {
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    _process: KillOnDrop,
}

/// `[lockout]` for the tests: 4 failures per client, the address limit out of the way.
fn lockout(store: &str, extra: &str) -> String {
    format!(
        "[lockout]\nmax_failures_per_client = 4\nmax_failures_per_ip = 1000\nstore = \"{store}\"\n\
         store_timeout = \"250ms\"\nstore_cooldown = \"500ms\"\n{extra}\n"
    )
}

fn clients() -> String {
    ["web", "other", "third"]
        .iter()
        .map(|id| {
            format!(
                "[[clients]]\nenv_id = \"{ENV_ID}\"\nclient_id = \"{id}\"\nsecret = \"{}\"\n\
                 auth_methods = [\"client_secret_post\"]\n",
                hash_sha256(SECRET.as_bytes())
            )
        })
        .collect()
}

/// Starts a replica validating the token route, counting per `lockout`.
fn replica(
    dir: &TempDir,
    name: &str,
    up: SocketAddr,
    lockout: &str,
    env: &[(&str, &str)],
) -> Replica {
    let clients_file = dir.join("clients.toml");
    std::fs::write(&clients_file, clients()).unwrap();
    let (port, admin) = (free_port(), free_addr());
    let toml = format!(
        "{}[clients]\nfile = \"{}\"\n[admin]\nlisten = \"{admin}\"\n{lockout}\n\
         [server]\nlisten = [\"127.0.0.1:{port}\"]\n",
        config(up, &token_route("validate")),
        clients_file.display()
    );
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(&conf, toml).unwrap();
    let log = dir.join(format!("{name}.log"));
    let process = spawn_gateway(&conf, port, Some(&log), env);
    Replica {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        admin,
        log,
        _process: process,
    }
}

impl Replica {
    /// A client_credentials request for `client_id` with `secret`; the answer's status and how
    /// long it took.
    fn token(&self, client_id: &str, secret: &str) -> (Message, Duration) {
        let body = form(client_id, secret);
        let started = Instant::now();
        let mut s = connect_when_listening(self.addr);
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(&token_post(&format!("/{ENV_ID}/as/token"), &[FORM], &body))
            .unwrap();
        let resp = read_message(&mut BufReader::new(s), false)
            .unwrap()
            .expect("an answer");
        (resp, started.elapsed())
    }

    fn status(&self, client_id: &str, secret: &str) -> u16 {
        self.token(client_id, secret).0.status()
    }

    /// The value of a metric series of this replica (see [`metric`]).
    fn metric(&self, series: &str) -> f64 {
        metric(self.admin, series)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn keys(redis: &RedisServer) -> Vec<String> {
    let all = redis.command(&["KEYS", "*"]);
    all.lines().map(str::to_string).collect()
}

/// Sends wrong secrets for new client_ids to `replica` until one of them is counted in Redis
/// (the replica's breaker closed again): a readiness poll, bounded by [`WAIT`].
fn until_counted_in_redis(replica: &Replica, redis: &RedisServer, tag: &str) {
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        let before = keys(redis).len();
        let (resp, took) = replica.token(&format!("probe-{tag}-{n}"), "wrong");
        assert_eq!(resp.status(), 401);
        assert!(took < PROMPT, "{took:?}");
        if keys(redis).len() > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tag} never counted in Redis again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn failures_at_two_replicas_add_up_to_one_lockout() {
    const PASSWORD: &str = "redis-pw-4f9e1c";
    let redis = RedisServer::start(Some(PASSWORD));
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("redis-shared");
    let store = lockout(
        &redis.url(),
        "store_password = \"env:TG_TEST_REDIS_PASSWORD\"\nstore_key_prefix = \"tg-e2e\"",
    );
    let env = [("TG_TEST_REDIS_PASSWORD", PASSWORD)];
    let a = replica(&dir, "a", up.addr, &store, &env);
    let b = replica(&dir, "b", up.addr, &store, &env);

    // Two failures at A, two at B: the client's fourth failure, in all.
    for r in [&a, &a, &b, &b] {
        assert_eq!(r.status("web", "guess"), 401);
    }
    for r in [&a, &b] {
        let (resp, _) = r.token("web", "guess");
        assert_oauth_error(&resp, 429, "slow_down");
        assert!(resp.header("retry-after").is_some());
    }
    // Even the right secret gets no verification while the client is locked (it never verified
    // at either replica), and no other client is affected.
    assert_eq!(b.status("web", SECRET), 429);
    assert_eq!(a.status("other", SECRET), 200);
    assert_eq!(b.status("other", SECRET), 200);
    assert_eq!(
        up.received().len(),
        2,
        "only the two good requests went upstream"
    );

    // What Redis holds: tagged keys without the client_id or the address in their names.
    let keys = keys(&redis);
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(
            k.starts_with("{tg-e2e}:c:") || k.starts_with("{tg-e2e}:a:"),
            "{k}"
        );
        assert!(!k.contains("web") && !k.contains("127.0.0.1"), "{k}");
        let ttl: i64 = redis
            .command(&["PTTL", k])
            .trim_start_matches(':')
            .parse()
            .unwrap();
        assert!(
            ttl > 0 && ttl <= 120_000,
            "{k} expires within two windows: {ttl}"
        );
    }
    for r in [&a, &b] {
        assert_eq!(
            r.metric("tokengate_lockout_store_errors_total{kind=\"error\"}"),
            0.0
        );
        assert_eq!(
            r.metric("tokengate_lockout_store_fallbacks_total{action=\"local\"}"),
            0.0
        );
        let log = r.log();
        assert!(log.contains("lockout counters shared in Redis"), "{log}");
        assert!(!log.contains(PASSWORD), "{log}");
    }
}

#[test]
fn a_redis_outage_falls_back_to_local_counters_and_redis_back_shares_them_again() {
    let redis = RedisServer::start(None);
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("redis-outage");
    let store = lockout(&redis.url(), "on_store_error = \"local\"");
    let a = replica(&dir, "a", up.addr, &store, &[]);
    let b = replica(&dir, "b", up.addr, &store, &[]);
    assert_eq!(a.status("web", SECRET), 200);
    assert_eq!(b.status("web", SECRET), 200);

    let port = redis.stop();
    // A counts on its own: four failures lock `other` at A, promptly, none of them hanging;
    // the remembered secret of `web` still passes. B has counted nothing.
    for _ in 0..4 {
        let (resp, took) = a.token("other", "guess");
        assert_eq!(resp.status(), 401);
        assert!(took < PROMPT, "{took:?}");
    }
    let (resp, took) = a.token("other", "guess");
    assert_oauth_error(&resp, 429, "slow_down");
    assert!(took < PROMPT, "{took:?}");
    assert_eq!(a.status("web", SECRET), 200);
    assert_eq!(b.status("other", "guess"), 401);
    assert!(a.metric("tokengate_lockout_store_fallbacks_total{action=\"local\"}") >= 5.0);
    let failed = a.metric("tokengate_lockout_store_errors_total{kind=\"error\"}")
        + a.metric("tokengate_lockout_store_errors_total{kind=\"timeout\"}");
    assert!(failed >= 1.0, "{failed}");
    // The breaker spares the dead store most calls.
    assert!(a.metric("tokengate_lockout_store_skipped_total") >= 1.0);

    // Redis back (empty): both replicas count there again, and their failures add up.
    let redis = RedisServer::start_on(port, None);
    until_counted_in_redis(&a, &redis, "a");
    until_counted_in_redis(&b, &redis, "b");
    for r in [&a, &a, &b, &b] {
        assert_eq!(r.status("third", "guess"), 401);
    }
    assert_eq!(a.status("third", "guess"), 429);
    assert_eq!(b.status("third", "guess"), 429);
    assert_eq!(a.metric("tokengate_lockout_store_breaker_open"), 0.0);
    assert!(
        a.log().contains("lockout store answers again"),
        "{}",
        a.log()
    );
}

#[test]
fn closed_mode_refuses_verifications_while_redis_is_down_but_remembered_secrets_pass() {
    let redis = RedisServer::start(None);
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("redis-closed");
    let a = replica(
        &dir,
        "a",
        up.addr,
        &lockout(&redis.url(), "on_store_error = \"closed\""),
        &[],
    );
    assert_eq!(a.status("web", SECRET), 200);
    redis.stop();

    assert_eq!(a.status("web", SECRET), 200, "remembered: no store call");
    for (client_id, secret) in [("other", SECRET), ("web", "guess"), ("unknown", "guess")] {
        let (resp, took) = a.token(client_id, secret);
        assert_oauth_error(&resp, 503, "temporarily_unavailable");
        assert!(resp.header("retry-after").is_some());
        assert!(took < PROMPT, "{took:?}");
    }
    assert_eq!(
        a.metric("tokengate_lockout_store_fallbacks_total{action=\"refused\"}"),
        3.0
    );
    assert_eq!(up.received().len(), 2);
}

#[test]
fn a_store_that_is_down_at_start_does_not_stop_the_gateway() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("redis-absent");
    let nobody = format!("redis://127.0.0.1:{}/0", free_port());
    let a = replica(&dir, "a", up.addr, &lockout(&nobody, ""), &[]);
    let (resp, took) = a.token("web", SECRET);
    assert_eq!(resp.status(), 200);
    assert!(took < PROMPT, "{took:?}");
    assert!(a.metric("tokengate_lockout_store_fallbacks_total{action=\"local\"}") >= 1.0);
}
