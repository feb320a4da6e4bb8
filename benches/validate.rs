//! Criterion benchmarks of validation in place: a client-record cache hit, and a whole validate
//! decision (extract → lockout check → record → policy → secret → grant → convert) for a known
//! client. Run: `cargo bench --bench validate`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tokengate::clients::cache::{CacheConfig, Fetch, FetchError, Lookup, ReadThrough};
use tokengate::clients::file::FileStore;
use tokengate::clients::record::{ClientKey, ClientRecord};
use tokengate::clients::secret::{hash_argon2id, hash_sha256};
use tokengate::clients::store::ClientStore;
use tokengate::clients::verifier::{Verifier, VerifierConfig};
use tokengate::lockout::{LocalLimiter, LockoutConfig};
use tokengate::protocol::{extract, BasicEncoding, Conversion, Endpoint};
use tokengate::validate::Validator;

const ENV: &str = "5a0b3c2d-1111-2222-3333-444455556666";

struct Never;

#[async_trait]
impl Fetch<ClientKey, ClientRecord> for Never {
    async fn fetch(&self, _: &ClientKey) -> Result<Option<ClientRecord>, FetchError> {
        Err(FetchError("not called on a hit".into()))
    }
}

struct One(ClientRecord);

#[async_trait]
impl Fetch<ClientKey, ClientRecord> for One {
    async fn fetch(&self, _: &ClientKey) -> Result<Option<ClientRecord>, FetchError> {
        Ok(Some(self.0.clone()))
    }
}

fn validator(store: FileStore) -> Validator {
    Validator::new(
        ClientStore::file(store),
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

/// A directory removed with its files when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let dir = TempDir(std::env::temp_dir().join(format!("tokengate-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("clients.toml");
    let mut text = String::new();
    for (id, secret) in [
        ("web-sha", hash_sha256(b"Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3d")),
        (
            "web-argon",
            hash_argon2id(b"Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3d"),
        ),
    ] {
        text.push_str(&format!(
            "[[clients]]\nenv_id = \"{ENV}\"\nclient_id = \"{id}\"\nsecret = \"{secret}\"\n\
             auth_methods = [\"client_secret_post\"]\nupstream_method = \"client_secret_basic\"\n\
             grant_types = [\"authorization_code\"]\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    let v = validator(FileStore::open(&path).unwrap());

    let mut g = c.benchmark_group("validate");

    // Cache hit in the registry's read-through cache.
    let cache = ReadThrough::<ClientKey, ClientRecord>::new(CacheConfig {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(10),
        max_stale: Duration::from_secs(600),
        capacity: 100_000,
    });
    let key = ClientKey::new(ENV, b"web-sha");
    let record = match rt.block_on(v.store().lookup(&key)) {
        Lookup::Found(r) => (*r).clone(),
        _ => panic!("record"),
    };
    rt.block_on(cache.get(&key, &One(record)));
    g.bench_function("registry cache hit", |b| {
        b.iter(|| rt.block_on(cache.get(black_box(&key), &Never)))
    });

    for id in ["web-sha", "web-argon"] {
        let body = format!(
            "grant_type=authorization_code&code=c0de&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcb\
             &client_id={id}&client_secret=Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3d"
        );
        let ip = Some("127.0.0.1".parse().unwrap());
        // Warm: the first argon2 verification is remembered.
        let x = extract(&[], body.as_bytes()).unwrap();
        rt.block_on(v.validate(ENV, Endpoint::Token, &x, ip))
            .unwrap();
        g.bench_function(
            format!("full decision, known client ({id}, verified before)"),
            |b| {
                b.iter(|| {
                    let x = extract(&[], black_box(body.as_bytes())).unwrap();
                    let verified = rt
                        .block_on(v.validate(ENV, Endpoint::Token, &x, ip))
                        .unwrap();
                    assert!(verified.upstream_method.is_some());
                    x.with_reading(verified.reading)
                        .convert(
                            Some(Conversion::ToBasic),
                            BasicEncoding::Rfc6749,
                            Endpoint::Token,
                            &[],
                            body.as_bytes(),
                        )
                        .unwrap()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
