//! Criterion micro-benchmarks of the protocol core's per-request work: parse and convert a typical
//! token body. Run: `cargo bench --bench core`.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tokengate::protocol::token::{check_head, Head};
use tokengate::protocol::{decide, BasicEncoding, BodyLimit, Conversion};

/// The PingOne sample's body as curl --data-urlencode sends it.
const PINGONE_POST: &[u8] = b"grant_type=authorization_code&code=c0de-%7B%7BpostAuthCode%7D%7D\
&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback\
&client_id=5a0b3c2d-1111-2222-3333-444455556666\
&client_secret=Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3dE5fG6hJ8";

const CLIENT_CREDENTIALS: &[u8] = b"grant_type=client_credentials&scope=openid+profile";

fn head() -> Head<'static> {
    Head {
        method: b"POST",
        content_type: Some(b"application/x-www-form-urlencoded; charset=UTF-8"),
        query: None,
        content_length: Some(PINGONE_POST.len() as u64),
    }
}

fn bench(c: &mut Criterion) {
    let limit = BodyLimit { max_bytes: 16384 };
    let mut g = c.benchmark_group("token_request");
    g.throughput(Throughput::Elements(1));

    g.bench_function("post_to_basic (pingone sample)", |b| {
        b.iter(|| {
            check_head(black_box(&head()), limit).unwrap();
            decide(
                &[],
                black_box(PINGONE_POST),
                Conversion::ToBasic,
                BasicEncoding::Rfc6749,
            )
            .unwrap()
        })
    });

    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(
            "5a0b3c2d-1111-2222-3333-444455556666:Zx9.yQ~4rT-a8kLmN2pQ7sVwXyZ0bC3dE5fG6hJ8"
        )
    );
    g.bench_function("basic_to_post (client_credentials)", |b| {
        b.iter(|| {
            check_head(black_box(&head()), limit).unwrap();
            decide(
                &[black_box(basic.as_bytes())],
                black_box(CLIENT_CREDENTIALS),
                Conversion::ToPost,
                BasicEncoding::Rfc6749,
            )
            .unwrap()
        })
    });

    g.bench_function("basic_kept (to_basic route, client already Basic)", |b| {
        b.iter(|| {
            decide(
                &[black_box(basic.as_bytes())],
                black_box(CLIENT_CREDENTIALS),
                Conversion::ToBasic,
                BasicEncoding::Rfc6749,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
