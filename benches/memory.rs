//! Memory at scale: loads N client records from a file (default 1,000,000) and M records into the
//! registry's read-through cache (default 100,000), and reports the resident memory each record
//! costs, beyond and including its own strings (ids and secret spec), and the time of a whole
//! validate decision at that size next to one with 100 records.
//!
//!     cargo bench --bench memory                       # RECORDS=1000000 CACHED=100000
//!     RECORDS=100000 CACHED=10000 cargo bench --bench memory
//!
//! RSS is read from /proc/self/status (VmRSS) before and after each load, with the allocator's
//! free memory handed back first (glibc `malloc_trim`), in one process: the figures are what the
//! records hold, not the parser's transient peak.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokengate::clients::cache::{CacheConfig, Fetch, FetchError, ReadThrough};
use tokengate::clients::file::FileStore;
use tokengate::clients::record::{parse_registry_record, ClientKey, ClientRecord};
use tokengate::clients::secret::hash_sha256;
use tokengate::clients::store::ClientStore;
use tokengate::clients::verifier::{Verifier, VerifierConfig};
use tokengate::lockout::{LocalLimiter, LockoutConfig};
use tokengate::protocol::{extract, Endpoint};
use tokengate::validate::Validator;

const ENV: &str = "5a0b3c2d-1111-2222-3333-444455556666";
const SECRET: &str = "Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3d";

fn rss_bytes() -> u64 {
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client_id(i: usize) -> String {
    format!("client-{i:07}")
}

/// A client file of `n` records sharing one sha256 secret line (the hash is what a record holds),
/// TOML or (with `FORMAT=json`) JSON.
fn client_file(n: usize, dir: &std::path::Path) -> std::path::PathBuf {
    let secret = hash_sha256(SECRET.as_bytes());
    let json = std::env::var("FORMAT").is_ok_and(|f| f == "json");
    let mut text = String::with_capacity(n * 260);
    if json {
        text.push_str("{\"clients\":[\n");
    }
    for i in 0..n {
        if json {
            text.push_str(&format!(
                "{}{{\"env_id\":\"{ENV}\",\"client_id\":\"{}\",\"secret\":\"{secret}\",\
                 \"auth_methods\":[\"client_secret_post\",\"client_secret_basic\"],\
                 \"upstream_method\":\"client_secret_basic\",\
                 \"grant_types\":[\"authorization_code\",\"refresh_token\"]}}\n",
                if i == 0 { "" } else { "," },
                client_id(i)
            ));
        } else {
            text.push_str(&format!(
                "[[clients]]\nenv_id = \"{ENV}\"\nclient_id = \"{}\"\nsecret = \"{secret}\"\n\
                 auth_methods = [\"client_secret_post\", \"client_secret_basic\"]\n\
                 upstream_method = \"client_secret_basic\"\n\
                 grant_types = [\"authorization_code\", \"refresh_token\"]\n",
                client_id(i)
            ));
        }
    }
    if json {
        text.push_str("]}\n");
    }
    let path = dir.join(format!(
        "clients-{n}.{}",
        if json { "json" } else { "toml" }
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Bytes of a record's own strings: its ids and its secret spec (salt and digest).
fn own_bytes(id: &str) -> usize {
    ENV.len() + id.len() + 16 + 32
}

fn validator(store: ClientStore) -> Validator {
    Validator::new(
        store,
        Arc::new(Verifier::new(VerifierConfig {
            remember_for: Duration::from_secs(300),
            capacity: 100_000,
            max_pending: 64,
        })),
        Arc::new(LocalLimiter::new(LockoutConfig {
            window: Duration::from_secs(60),
            max_failures_per_client: 10,
            max_failures_per_ip: 100,
        })),
    )
}

/// Mean time of a whole validate decision for known clients spread over the store.
fn decision_time(v: &Validator, n: usize, rt: &tokio::runtime::Runtime) -> Duration {
    let ip = Some("127.0.0.1".parse().unwrap());
    let bodies: Vec<String> = (0..1000)
        .map(|k| {
            format!(
                "grant_type=authorization_code&code=c&client_id={}&client_secret={SECRET}",
                client_id((k * 7919) % n)
            )
        })
        .collect();
    // Warm: every secret verified once (then remembered).
    for b in &bodies {
        let x = extract(&[], b.as_bytes()).unwrap();
        rt.block_on(v.validate(ENV, Endpoint::Token, &x, ip))
            .unwrap();
    }
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        for b in &bodies {
            let x = extract(&[], b.as_bytes()).unwrap();
            rt.block_on(v.validate(ENV, Endpoint::Token, &x, ip))
                .unwrap();
        }
    }
    started.elapsed() / (rounds * bodies.len()) as u32
}

struct Served(String);

#[async_trait]
impl Fetch<ClientKey, ClientRecord> for Served {
    async fn fetch(&self, key: &ClientKey) -> Result<Option<ClientRecord>, FetchError> {
        let body = self
            .0
            .replace("CLIENT", std::str::from_utf8(key.client_id()).unwrap());
        parse_registry_record(body.as_bytes(), key.env_id(), key.client_id())
            .map(Some)
            .map_err(FetchError)
    }
}

fn main() {
    let records = env_usize("RECORDS", 1_000_000);
    let cached = env_usize("CACHED", 100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tokengate-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = client_file(100, &dir);
    let large = client_file(records, &dir);

    let small_v = validator(ClientStore::file(FileStore::open(&small).unwrap()));
    let small_time = decision_time(&small_v, 100, &rt);

    let before = rss_bytes();
    if std::env::var("STAGES").is_ok() {
        let text = std::fs::read_to_string(&large).unwrap();
        eprintln!("text read: +{} MB", (rss_bytes() - before) >> 20);
        let set = tokengate::clients::set::parse_client_file(
            &text,
            tokengate::clients::set::FileFormat::of(&large),
            &|_| None,
        )
        .unwrap();
        eprintln!("parsed: +{} MB", (rss_bytes() - before) >> 20);
        drop(text);
        eprintln!("text dropped: +{} MB", (rss_bytes() - before) >> 20);
        drop(set);
        eprintln!("set dropped: +{} MB", (rss_bytes() - before) >> 20);
    }
    let store = FileStore::open(&large).unwrap();
    let after = rss_bytes();
    let _ = std::fs::remove_dir_all(&dir);
    let per = (after - before) as f64 / records as f64;
    let own = own_bytes(&client_id(0)) as f64;
    let large_v = validator(ClientStore::file(store));
    let large_time = decision_time(&large_v, records, &rt);

    // The registry's cache, filled with `cached` records.
    let cache = ReadThrough::<ClientKey, ClientRecord>::new(CacheConfig {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(10),
        max_stale: Duration::from_secs(600),
        capacity: cached,
    });
    let source = Served(format!(
        r#"{{"client_id":"CLIENT","secret":"{}","auth_methods":["client_secret_post","client_secret_basic"],"upstream_method":"client_secret_basic","grant_types":["authorization_code","refresh_token"]}}"#,
        hash_sha256(SECRET.as_bytes())
    ));
    let before_cache = rss_bytes();
    for i in 0..cached {
        rt.block_on(cache.get(&ClientKey::new(ENV, client_id(i).as_bytes()), &source));
    }
    let after_cache = rss_bytes();
    let per_cached = (after_cache - before_cache) as f64 / cached as f64;

    println!("file: {records} records, {per:.0} bytes of RSS each ({:.0} beyond the record's own {own:.0} bytes of strings)", per - own);
    println!("registry cache: {cached} records, {per_cached:.0} bytes of RSS each ({:.0} beyond its own strings)", per_cached - own);
    println!(
        "validate decision (remembered sha256 secret): {:?} at {records} records, {:?} at 100 ({:.2}x)",
        large_time,
        small_time,
        large_time.as_secs_f64() / small_time.as_secs_f64()
    );
    drop(large_v);
    drop(cache);
}
