//! The client's address behind proxies. Pure.
//!
//! Behind a load balancer every connection comes from the balancer. For a connection from a
//! trusted proxy (`server.trusted_proxies`), the client is the rightmost address of
//! `X-Forwarded-For` (or, without it, of RFC 7239 `Forwarded`'s `for=`) that is not itself a
//! trusted proxy: each proxy appends the address it received the request from, so the entries to
//! the right of the first untrusted one were written by proxies the operator trusts, and the ones
//! to its left by whoever sent the request (which may be anyone). From any other connection these
//! headers are ignored. The result is what per-address lockout counting and the access log use.

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
}
