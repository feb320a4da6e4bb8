//! The client's address behind proxies. Pure.
//!
//! Behind a load balancer every connection comes from the balancer. For a connection from a
//! trusted proxy (`server.trusted_proxies`), the client is the rightmost address of
//! `X-Forwarded-For` (or, without it, of RFC 7239 `Forwarded`'s `for=`) that is not itself a
//! trusted proxy: each proxy appends the address it received the request from, so the entries to
//! the right of the first untrusted one were written by proxies the operator trusts, and the ones
//! to its left by whoever sent the request (which may be anyone). From any other connection these
//! headers are ignored. The result is what per-address lockout counting and the access log use.
//!
//! A load balancer that speaks the PROXY protocol instead names the client ahead of the
//! connection's bytes ([`proxy_header`]); the connection then counts as the client's own.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The client's address: `peer`, or for a connection from a trusted proxy the address its
/// forwarding headers name (see the module docs). `x_forwarded_for` and `forwarded` hold every
/// value of those headers, in order. A header that does not parse whole is ignored.
pub fn client_address(
    peer: Option<IpAddr>,
    trusted: &[IpNet],
    x_forwarded_for: &[&[u8]],
    forwarded: &[&[u8]],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops = if !x_forwarded_for.is_empty() {
        parse_list(x_forwarded_for, parse_xff_entry)
    } else if !forwarded.is_empty() {
        parse_list(forwarded, parse_forwarded_element)
    } else {
        None
    };
    let Some(hops) = hops else {
        return Some(peer);
    };
    let client = hops
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or_else(|| hops.first())
        .copied()
        .unwrap_or(peer);
    Some(canonical(client))
}

/// The `X-Forwarded-For` value the upstream receives for a request from `peer` (the address the
/// connection came from): from a trusted proxy, the value it sent (every field, in order) with
/// `peer` appended, as each proxy appends the address it received the request from; from anyone
/// else, `peer` alone, so that a forged value never reaches the server. A value from a trusted
/// proxy that is not an address list is replaced too.
pub fn forwarded_for(peer: IpAddr, trusted: &[IpNet], received: &[&[u8]]) -> String {
    let peer = canonical(peer);
    let from_trusted = trusted.iter().any(|net| net.contains(&peer));
    if from_trusted && !received.is_empty() && parse_list(received, parse_xff_entry).is_some() {
        let mut out = String::new();
        for value in received {
            // Parsed above: ASCII addresses, commas and spaces only.
            out.push_str(std::str::from_utf8(value).unwrap_or_default().trim());
            out.push_str(", ");
        }
        out.push_str(&peer.to_string());
        out
    } else {
        peer.to_string()
    }
}

/// The longest PROXY protocol header accepted (a v2 header may carry TLVs; load balancers'
/// are well below this).
pub const MAX_PROXY_HEADER: usize = 1024;

/// What the first bytes of a connection say, read as a PROXY protocol header (v1 text or v2
/// binary, HAProxy's specification), as load balancers send it ahead of the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// More bytes are needed.
    Incomplete,
    /// A header of `len` bytes. `source` is the client's address; `None` when the header names
    /// none (v2 `LOCAL`, the balancer's own health check; v1 `UNKNOWN`; a Unix socket): the
    /// connection's own peer stands.
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a PROXY header over TCP, or longer than [`MAX_PROXY_HEADER`].
    Invalid,
}

/// Reads a PROXY protocol header at the start of `buf` (see [`ProxyHeader`]).
pub fn proxy_header(buf: &[u8]) -> ProxyHeader {
    use ppp::{v1, v2, PartialResult};
    const V1_PREFIX: &[u8] = b"PROXY ";
    const V1_MAX: usize = 107;
    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    let starts_like = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    let (len, source) = if buf.is_empty() {
        return ProxyHeader::Incomplete;
    } else if starts_like(V1_PREFIX) {
        // A v1 line ends at its first CR, which a LF must follow; it is judged once that is in.
        let line = match buf.iter().position(|&b| b == b'\r') {
            Some(cr) if cr + 2 > V1_MAX => return ProxyHeader::Invalid,
            Some(cr) if cr + 1 == buf.len() => return ProxyHeader::Incomplete,
            Some(cr) if buf[cr + 1] == b'\n' => &buf[..cr + 2],
            Some(_) => return ProxyHeader::Invalid,
            None if buf.len() < V1_MAX => return ProxyHeader::Incomplete,
            None => return ProxyHeader::Invalid,
        };
        let Ok(h) = v1::Header::try_from(line) else {
            return ProxyHeader::Invalid;
        };
        let source = match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        };
        (h.header.len(), source)
    } else if starts_like(V2_SIGNATURE) {
        let h = match v2::Header::try_from(buf) {
            Ok(h) => h,
            Err(e) if e.is_incomplete() && buf.len() < MAX_PROXY_HEADER => {
                return ProxyHeader::Incomplete
            }
            Err(_) => return ProxyHeader::Invalid,
        };
        if h.command == v2::Command::Local {
            (h.len(), None)
        } else if h.protocol != v2::Protocol::Stream {
            return ProxyHeader::Invalid;
        } else {
            let source = match h.addresses {
                v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
            };
            (h.len(), source)
        }
    } else {
        return ProxyHeader::Invalid;
    };
    if len > MAX_PROXY_HEADER || len > buf.len() {
        return ProxyHeader::Invalid;
    }
    ProxyHeader::Complete {
        len,
        source: source.map(|s| SocketAddr::new(canonical(s.ip()), s.port())),
    }
}

/// The key an address is counted under (lockout, connection caps): IPv4 as is, IPv4-mapped IPv6
/// as IPv4, other IPv6 by its /64 prefix (the usual allocation to one subscriber, so an attacker
/// cannot dodge a limit by rotating through their own prefix).
pub fn counting_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so `::ffff:10.0.0.1` is `10.0.0.1` everywhere.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Every comma-separated entry of every value, parsed; `None` if any entry does not parse.
fn parse_list(values: &[&[u8]], entry: fn(&str) -> Option<IpAddr>) -> Option<Vec<IpAddr>> {
    let mut out = Vec::new();
    for v in values {
        let v = std::str::from_utf8(v).ok()?;
        for e in v.split(',') {
            out.push(entry(e.trim())?);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `192.0.2.1`, `2001:db8::1`, and the same with a port (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_xff_entry(e: &str) -> Option<IpAddr> {
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            e.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
}

/// The `for=` of one RFC 7239 element (`for=192.0.2.60;proto=http`, `for="[2001:db8::1]:4711"`).
fn parse_forwarded_element(e: &str) -> Option<IpAddr> {
    let value = e.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    parse_xff_entry(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn the_upstream_gets_the_chain_from_trusted_proxies_and_only_the_peer_from_others() {
        let lb = nets(&["10.0.0.0/8"]);
        let got = |peer: &str, received: &[&str]| {
            let received: Vec<&[u8]> = received.iter().map(|v| v.as_bytes()).collect();
            forwarded_for(ip(peer), &lb, &received)
        };
        // From the load balancer: its chain, and the balancer itself appended.
        assert_eq!(got("10.0.0.5", &["198.51.100.7"]), "198.51.100.7, 10.0.0.5");
        assert_eq!(
            got("10.0.0.5", &["203.0.113.9, 198.51.100.7", "192.0.2.1"]),
            "203.0.113.9, 198.51.100.7, 192.0.2.1, 10.0.0.5"
        );
        assert_eq!(got("10.0.0.5", &[]), "10.0.0.5");
        // A value that is not an address list is not passed on.
        assert_eq!(got("10.0.0.5", &["198.51.100.7\r\nX: y"]), "10.0.0.5");
        assert_eq!(got("10.0.0.5", &["unknown"]), "10.0.0.5");
        // From anyone else: what they claim is dropped.
        assert_eq!(got("192.0.2.44", &["10.1.1.1"]), "192.0.2.44");
        assert_eq!(got("::ffff:192.0.2.44", &[]), "192.0.2.44");
        assert_eq!(got("2001:db8::1", &[]), "2001:db8::1");
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() {
        let got = client_address(Some(ip("127.0.0.1")), &[], &[b"203.0.113.7"], &[]);
        assert_eq!(got, Some(ip("127.0.0.1")));
        let lb = nets(&["10.0.0.0/8"]);
        let got = client_address(Some(ip("192.0.2.1")), &lb, &[b"203.0.113.7"], &[]);
        assert_eq!(got, Some(ip("192.0.2.1")), "not from a trusted proxy");
        assert_eq!(client_address(None, &lb, &[b"203.0.113.7"], &[]), None);
    }

    #[test]
    fn from_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client() {
        let lb = nets(&["10.0.0.0/8", "127.0.0.2/32"]);
        let peer = Some(ip("10.1.1.1"));
        // The client forged the first entry; the proxy appended what it saw.
        let xff: &[&[u8]] = &[b"1.1.1.1, 203.0.113.7, 10.2.2.2"];
        assert_eq!(client_address(peer, &lb, xff, &[]), Some(ip("203.0.113.7")));
        // Several header lines are one list.
        let xff: &[&[u8]] = &[b"1.1.1.1", b"203.0.113.9"];
        assert_eq!(client_address(peer, &lb, xff, &[]), Some(ip("203.0.113.9")));
        // Every hop trusted: the farthest one.
        let xff: &[&[u8]] = &[b"10.9.9.9, 10.8.8.8"];
        assert_eq!(client_address(peer, &lb, xff, &[]), Some(ip("10.9.9.9")));
        // No header: the proxy itself.
        assert_eq!(client_address(peer, &lb, &[], &[]), peer);
        // Ports, brackets and mapped addresses.
        let xff: &[&[u8]] = &[b"[2001:db8::1]:443, 198.51.100.2:5000"];
        assert_eq!(
            client_address(peer, &lb, xff, &[]),
            Some(ip("198.51.100.2"))
        );
        let xff: &[&[u8]] = &[b"::ffff:198.51.100.3"];
        assert_eq!(
            client_address(peer, &lb, xff, &[]),
            Some(ip("198.51.100.3"))
        );
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let lb = nets(&["127.0.0.2/32"]);
        let peer = Some(ip("127.0.0.2"));
        let fwd: &[&[u8]] =
            &[b"for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\""];
        assert_eq!(
            client_address(peer, &lb, &[], fwd),
            Some(ip("2001:db8:cafe::17"))
        );
        // X-Forwarded-For wins when both are present.
        let xff: &[&[u8]] = &[b"198.51.100.1"];
        assert_eq!(
            client_address(peer, &lb, xff, fwd),
            Some(ip("198.51.100.1"))
        );
    }

    #[test]
    fn a_header_that_does_not_parse_is_ignored() {
        let lb = nets(&["127.0.0.2/32"]);
        let peer = Some(ip("127.0.0.2"));
        for bad in [&b"203.0.113.7, garbage"[..], b"", b"unknown", b"\xff"] {
            assert_eq!(client_address(peer, &lb, &[bad], &[]), peer, "{bad:?}");
        }
        assert_eq!(client_address(peer, &lb, &[], &[b"for=_hidden"]), peer);
    }

    proptest! {
        #[test]
        fn the_forwarded_value_is_an_address_list_ending_with_the_peer(
            values in proptest::collection::vec("\\PC{0,30}", 0..3),
            trusted in any::<bool>(),
        ) {
            let peer = ip("10.0.0.5");
            let lb = if trusted { nets(&["10.0.0.0/8"]) } else { Vec::new() };
            let received: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            let out = forwarded_for(peer, &lb, &received);
            let hops = parse_list(&[out.as_bytes()], parse_xff_entry);
            prop_assert_eq!(hops.and_then(|h| h.last().copied()), Some(peer));
        }

        #[test]
        fn any_header_gives_the_peer_or_an_address_from_the_header(
            v in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let lb = nets(&["127.0.0.0/8"]);
            let got = client_address(Some(ip("127.0.0.1")), &lb, &[&v], &[&v]);
            prop_assert!(got.is_some());
        }
    }

    /// A v2 header: PROXY (or LOCAL) over TCP with the given addresses block and TLVs.
    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend(((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        out.extend(addresses);
        out.extend(tlvs);
        out
    }

    fn complete(len: usize, source: &str) -> ProxyHeader {
        ProxyHeader::Complete {
            len,
            source: Some(source.parse().unwrap()),
        }
    }

    #[test]
    fn a_v1_header_names_the_client_and_its_length() {
        let line = "PROXY TCP4 203.0.113.7 10.0.0.5 51000 8080\r\n";
        let with_request = format!("{line}GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            proxy_header(with_request.as_bytes()),
            complete(line.len(), "203.0.113.7:51000")
        );
        let line6 = "PROXY TCP6 2001:db8::1 2001:db8::2 40000 443\r\n";
        assert_eq!(
            proxy_header(line6.as_bytes()),
            complete(line6.len(), "[2001:db8::1]:40000")
        );
        assert_eq!(
            proxy_header(b"PROXY UNKNOWN\r\nGET"),
            ProxyHeader::Complete {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn a_v2_header_names_the_client_local_names_none() {
        let mut v4 = vec![198, 51, 100, 9, 10, 0, 0, 5];
        v4.extend(443u16.to_be_bytes());
        v4.extend(8080u16.to_be_bytes());
        // An AWS-style TLV (type 0xEA, 5 bytes) after the addresses.
        let tlv = [0xEA, 0, 5, 1, 2, 3, 4, 5];
        let h = v2(1, 0x11, &v4, &tlv);
        let mut with_request = h.clone();
        with_request.extend(b"POST /x HTTP/1.1\r\n");
        assert_eq!(
            proxy_header(&with_request),
            complete(h.len(), "198.51.100.9:443")
        );

        let mut v6 = Vec::new();
        v6.extend("2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend("2001:db8::8".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend([0, 1, 0, 2]);
        let h = v2(1, 0x21, &v6, &[]);
        assert_eq!(proxy_header(&h), complete(h.len(), "[2001:db8::7]:1"));

        let local = v2(0, 0x00, &[], &[]);
        assert_eq!(
            proxy_header(&local),
            ProxyHeader::Complete {
                len: 16,
                source: None
            }
        );
        // An IPv4-mapped IPv6 source is the IPv4 client.
        let mut mapped = Vec::new();
        mapped.extend("::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().octets());
        mapped.extend("::ffff:192.0.2.2".parse::<Ipv6Addr>().unwrap().octets());
        mapped.extend([0, 9, 0, 10]);
        let h = v2(1, 0x21, &mapped, &[]);
        assert_eq!(proxy_header(&h), complete(h.len(), "192.0.2.1:9"));
    }

    #[test]
    fn a_header_cut_anywhere_asks_for_more_and_anything_else_is_invalid() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.5 51000 8080\r\n";
        let mut v4 = vec![198, 51, 100, 9, 10, 0, 0, 5];
        v4.extend([1, 187, 31, 144]);
        let bin = v2(1, 0x11, &v4, &[]);
        for whole in [&line[..], &bin[..]] {
            for cut in 1..whole.len() {
                assert_eq!(
                    proxy_header(&whole[..cut]),
                    ProxyHeader::Incomplete,
                    "{:?}",
                    &whole[..cut]
                );
            }
        }
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /e/as/token HTTP/1.1\r\n",
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.5 51000\r\n",
        ] {
            assert_eq!(proxy_header(bad), ProxyHeader::Invalid, "{bad:?}");
        }
        // The line ends at its first CR (fuzzing found answers that more bytes changed when
        // the end was looked for elsewhere): without one it is incomplete, however many LFs.
        assert_eq!(
            proxy_header(b"PROXY UNKNOWN U5KTCP\n\n"),
            ProxyHeader::Incomplete
        );
        assert_eq!(
            proxy_header(b"PROXY UNKNOWN U5KTCP\n\n\r\n"),
            ProxyHeader::Complete {
                len: 24,
                source: None
            }
        );
        assert_eq!(
            proxy_header(b"PROXY UNKNOWN x\ry\r\n"),
            ProxyHeader::Invalid
        );
        // UDP over a TCP connection is nonsense.
        let udp = v2(1, 0x12, &v4, &[]);
        assert_eq!(proxy_header(&udp), ProxyHeader::Invalid);
        // A v1 line never ends: invalid once past the longest v1 header.
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(proxy_header(&endless), ProxyHeader::Invalid);
    }

    proptest! {
        #[test]
        fn any_bytes_get_an_answer_and_a_complete_header_fits_in_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            if let ProxyHeader::Complete { len, .. } = proxy_header(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }
    }
}
