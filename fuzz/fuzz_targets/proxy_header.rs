//! `client_addr::proxy_header`: the PROXY protocol header a load balancer sends ahead of a
//! connection's bytes, read from whatever bytes arrived so far.
//!
//! Input: the bytes a connection starts with.
//!
//! Invariants (the reader in `conn.rs` calls it on a growing buffer and acts on the first answer
//! that is not `Incomplete`, so every answer must hold whatever bytes come next):
//! - `Complete { len, .. }`: `len` is within the input and at least the shortest header (15
//!   bytes of `PROXY UNKNOWN\r\n`); the header alone, and the header followed by anything, give
//!   the same answer; every shorter prefix of the header is `Incomplete`; the source, when
//!   there is one, is never an IPv4-mapped IPv6 address.
//! - `Invalid` is final: more bytes never make it anything else.
//! - `Incomplete` only below `MAX_PROXY_HEADER` bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::client_addr::{proxy_header, ProxyHeader, MAX_PROXY_HEADER};

fuzz_target!(|data: &[u8]| {
    let answer = proxy_header(data);
    match answer {
        ProxyHeader::Complete { len, source } => {
            assert!((15..=data.len()).contains(&len), "{len} of {}", data.len());
            let header = &data[..len];
            assert_eq!(proxy_header(header), answer);
            let mut longer = header.to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(proxy_header(&longer), answer);
            for cut in 1..len {
                assert_eq!(
                    proxy_header(&header[..cut]),
                    ProxyHeader::Incomplete,
                    "cut {cut}"
                );
            }
            if let Some(std::net::SocketAddr::V6(v6)) = source {
                assert!(v6.ip().to_ipv4_mapped().is_none(), "{v6}");
            }
        }
        ProxyHeader::Invalid => {
            for more in [&b"\r\n"[..], b"\n", b"PROXY UNKNOWN\r\n", &[0u8; 64]] {
                let mut longer = data.to_vec();
                longer.extend_from_slice(more);
                assert_eq!(proxy_header(&longer), ProxyHeader::Invalid, "{more:?}");
            }
        }
        ProxyHeader::Incomplete => assert!(data.len() < MAX_PROXY_HEADER),
    }
});
