//! The client's address behind proxies, and the forwarding fields the upstream receives. Pure.
//!
//! Behind a load balancer every connection comes from the balancer. For a connection from a
//! trusted proxy (`server.trusted_proxies`), the forwarding field those proxies write
//! (`server.forwarded_header`: `X-Forwarded-For`, or RFC 7239 `Forwarded`'s `for=`; only that
//! one is read) is walked right to left: each proxy appends the address it received the request
//! from, so the entries written by trusted proxies are at the right. The first address that is
//! not a trusted proxy's is the client; an entry that is not an address ends the walk, and the
//! client is then the last trusted hop (nothing left of it is believed). From any other connection
//! the field is not read: the peer is the client. The result is what per-address lockout counting
//! and the access log use.
//!
//! What the upstream receives ([`Forwarding::edits`]): the gateway's own `X-Forwarded-For` (and,
//! when the proxies write `Forwarded`, its own `Forwarded`): the believed entries, from the
//! client rightwards, plus the peer; `Forwarded`, `X-Real-IP`, `X-Forwarded-Host` and
//! `X-Forwarded-Proto` from a peer that is not a trusted proxy are removed, and so is `Forwarded`
//! from anyone when the proxies write `X-Forwarded-For` (a proxy does not write it, so the client
//! did).
//!
//! A load balancer that speaks the PROXY protocol instead names the client ahead of the
//! connection's bytes ([`proxy_header`]); the connection then counts as the client's own.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;

/// The field trusted proxies name the client in (`server.forwarded_header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ForwardedHeader {
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl ForwardedHeader {
    /// The field's name, as the request map holds it.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// How the gateway treats forwarding fields (from `[server]`).
#[derive(Debug, Clone, Default)]
pub struct ForwardingPolicy {
    /// `server.trusted_proxies`.
    pub trusted: Vec<IpNet>,
    /// `server.forwarded_header`.
    pub header: ForwardedHeader,
    /// `server.forward_client_address`: the gateway writes the forwarding field(s) itself.
    pub write: bool,
    /// `server.keep_forwarding_headers`: the fields the gateway would remove pass as sent.
    pub keep: bool,
}

impl ForwardingPolicy {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// One believed hop of a forwarding chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    ip: IpAddr,
    /// The `Forwarded` element as written (its other parameters, such as `proto=`, kept).
    element: Option<String>,
}

/// Who sent a request: the connection's peer and, behind trusted proxies, the client their
/// forwarding field names (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The address the connection comes from.
    pub peer: Option<IpAddr>,
    peer_trusted: bool,
    /// The hops believed, from the client rightwards (the peer not among them).
    chain: Vec<Hop>,
}

/// Fields removed from the request that goes upstream: from a peer that is not a trusted proxy,
/// and (`X-Forwarded-For` read) `Forwarded` from trusted ones.
const UNTRUSTED_FIELDS: [&str; 4] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// What the gateway does to a request's forwarding fields on its way upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldEdits {
    /// Removed first.
    pub remove: &'static [&'static str],
    /// Then set (replacing any value).
    pub x_forwarded_for: Option<String>,
    pub forwarded: Option<String>,
}

impl Forwarding {
    /// Reads who sent a request from `peer` whose forwarding field (the one `policy` names) has
    /// `values` (every line, in order).
    pub fn read(peer: Option<IpAddr>, policy: &ForwardingPolicy, values: &[&[u8]]) -> Forwarding {
        let Some(peer) = peer.map(canonical) else {
            return Forwarding::default();
        };
        let untrusted = Forwarding {
            client: Some(peer),
            peer: Some(peer),
            peer_trusted: false,
            chain: Vec::new(),
        };
        if !policy.trusts(peer) {
            return untrusted;
        }
        let entry = match policy.header {
            ForwardedHeader::XForwardedFor => parse_xff_entry,
            ForwardedHeader::Forwarded => parse_forwarded_element,
        };
        let keeps_element = policy.header == ForwardedHeader::Forwarded;
        let entries = values
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|e| {
                let e = std::str::from_utf8(e).ok()?.trim();
                Some(Hop {
                    ip: canonical(entry(e)?),
                    element: keeps_element.then(|| e.to_string()),
                })
            });
        // Right to left: trusted hops are believed, the first other address is the client, and
        // an entry that is no address ends the walk at the last trusted hop.
        let mut chain: Vec<Hop> = Vec::new();
        for hop in entries.rev() {
            let Some(hop) = hop else { break };
            let trusted = policy.trusts(hop.ip);
            chain.push(hop);
            if !trusted {
                break;
            }
        }
        chain.reverse();
        Forwarding {
            client: Some(chain.first().map_or(peer, |h| h.ip)),
            peer_trusted: true,
            chain,
            ..untrusted
        }
    }

    /// The forwarding fields the upstream receives (see the module docs).
    pub fn edits(&self, policy: &ForwardingPolicy) -> FieldEdits {
        let remove: &'static [&'static str] = match (policy.keep, self.peer_trusted) {
            (true, _) => &[],
            (false, false) => &UNTRUSTED_FIELDS,
            (false, true) if policy.header == ForwardedHeader::XForwardedFor => {
                &UNTRUSTED_FIELDS[..1]
            }
            (false, true) => &[],
        };
        let Some(peer) = self.peer.filter(|_| policy.write) else {
            return FieldEdits {
                remove,
                ..FieldEdits::default()
            };
        };
        let mut xff = String::new();
        for hop in &self.chain {
            xff.push_str(&hop.ip.to_string());
            xff.push_str(", ");
        }
        xff.push_str(&peer.to_string());
        let forwarded = (policy.header == ForwardedHeader::Forwarded).then(|| {
            let mut out = String::new();
            for hop in &self.chain {
                match &hop.element {
                    Some(e) => out.push_str(e),
                    None => out.push_str(&for_element(hop.ip)),
                }
                out.push_str(", ");
            }
            out.push_str(&for_element(peer));
            out
        });
        FieldEdits {
            remove,
            x_forwarded_for: Some(xff),
            forwarded,
        }
    }
}

/// An RFC 7239 element naming `ip` (§6: an IPv6 address in brackets, quoted).
fn for_element(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
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
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
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

    fn policy(trusted: &[&str], header: ForwardedHeader) -> ForwardingPolicy {
        ForwardingPolicy {
            trusted: nets(trusted),
            header,
            write: true,
            keep: false,
        }
    }

    /// The client and the X-Forwarded-For the upstream gets, for `values` from `peer`.
    fn read(peer: &str, p: &ForwardingPolicy, values: &[&str]) -> (IpAddr, String) {
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        let f = Forwarding::read(Some(ip(peer)), p, &values);
        (f.client.unwrap(), f.edits(p).x_forwarded_for.unwrap())
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_fields_say() {
        let p = policy(&[], XFF);
        assert_eq!(
            read("127.0.0.1", &p, &["203.0.113.7"]),
            (ip("127.0.0.1"), "127.0.0.1".into())
        );
        let lb = policy(&["10.0.0.0/8"], XFF);
        assert_eq!(
            read("192.0.2.1", &lb, &["203.0.113.7"]),
            (ip("192.0.2.1"), "192.0.2.1".into()),
            "not from a trusted proxy: what it claims is dropped"
        );
        assert_eq!(
            read("::ffff:192.0.2.44", &lb, &[]),
            (ip("192.0.2.44"), "192.0.2.44".into())
        );
        assert_eq!(Forwarding::read(None, &lb, &[b"203.0.113.7"]).client, None);
    }

    #[test]
    fn from_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client() {
        let lb = policy(&["10.0.0.0/8", "127.0.0.2/32"], XFF);
        // The client forged the first entry; the proxies appended what they saw.
        assert_eq!(
            read("10.1.1.1", &lb, &["1.1.1.1, 203.0.113.7, 10.2.2.2"]),
            (ip("203.0.113.7"), "203.0.113.7, 10.2.2.2, 10.1.1.1".into())
        );
        // Several field lines are one list.
        assert_eq!(
            read("10.1.1.1", &lb, &["1.1.1.1", "203.0.113.9"]).0,
            ip("203.0.113.9")
        );
        // Every hop trusted: the farthest one.
        assert_eq!(
            read("10.1.1.1", &lb, &["10.9.9.9, 10.8.8.8"]),
            (ip("10.9.9.9"), "10.9.9.9, 10.8.8.8, 10.1.1.1".into())
        );
        // No field: the proxy itself.
        assert_eq!(
            read("10.1.1.1", &lb, &[]),
            (ip("10.1.1.1"), "10.1.1.1".into())
        );
        // Ports, brackets and mapped addresses; the upstream gets plain addresses.
        assert_eq!(
            read("10.1.1.1", &lb, &["[2001:db8::1]:443, 198.51.100.2:5000"]),
            (ip("198.51.100.2"), "198.51.100.2, 10.1.1.1".into())
        );
        assert_eq!(
            read("::ffff:10.1.1.1", &lb, &["::ffff:198.51.100.3"]),
            (ip("198.51.100.3"), "198.51.100.3, 10.1.1.1".into())
        );
    }

    #[test]
    fn an_entry_that_is_no_address_ends_the_walk_at_the_last_trusted_hop() {
        let lb = policy(&["127.0.0.1/32", "10.0.0.0/8"], XFF);
        // The client's junk is left of what the proxy appended: the client is still found.
        assert_eq!(
            read("127.0.0.1", &lb, &["x, 203.0.113.7"]),
            (ip("203.0.113.7"), "203.0.113.7, 127.0.0.1".into())
        );
        // Junk right of a trusted hop: that hop is the client, nothing left of it believed.
        assert_eq!(
            read("127.0.0.1", &lb, &["198.51.100.1, unknown, 10.0.0.9"]),
            (ip("10.0.0.9"), "10.0.0.9, 127.0.0.1".into())
        );
        for junk in ["garbage", "", "unknown", "203.0.113.7\r\nX: y", "_hidden"] {
            assert_eq!(
                read("127.0.0.1", &lb, &[junk]),
                (ip("127.0.0.1"), "127.0.0.1".into()),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn only_the_field_the_proxies_write_is_read() {
        let fwd = policy(&["127.0.0.2/32"], ForwardedHeader::Forwarded);
        let f = Forwarding::read(
            Some(ip("127.0.0.2")),
            &fwd,
            &[b"for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\""],
        );
        assert_eq!(f.client, Some(ip("2001:db8:cafe::17")));
        let e = f.edits(&fwd);
        assert_eq!(
            e.forwarded.as_deref(),
            Some("For=\"[2001:db8:cafe::17]:4711\", for=127.0.0.2")
        );
        assert_eq!(
            e.x_forwarded_for.as_deref(),
            Some("2001:db8:cafe::17, 127.0.0.2")
        );
        // X-Forwarded-For read: a Forwarded the proxy passed on is the client's, and removed.
        let xff = policy(&["127.0.0.2/32"], XFF);
        let f = Forwarding::read(Some(ip("127.0.0.2")), &xff, &[b"198.51.100.1"]);
        assert_eq!(f.edits(&xff).remove, ["forwarded"]);
    }

    #[test]
    fn forwarding_fields_of_untrusted_peers_are_removed_unless_kept() {
        let mut p = policy(&["10.0.0.0/8"], XFF);
        let from = |peer: &str, p: &ForwardingPolicy| {
            Forwarding::read(Some(ip(peer)), p, &[b"198.51.100.1"]).edits(p)
        };
        assert_eq!(from("192.0.2.1", &p).remove, UNTRUSTED_FIELDS);
        p.header = ForwardedHeader::Forwarded;
        assert_eq!(from("10.0.0.1", &p).remove, [] as [&str; 0]);
        assert_eq!(
            from("192.0.2.1", &p).forwarded.as_deref(),
            Some("for=192.0.2.1")
        );
        p.keep = true;
        assert_eq!(from("192.0.2.1", &p).remove, [] as [&str; 0]);
        p.write = false;
        let e = from("192.0.2.1", &p);
        assert_eq!((e.x_forwarded_for, e.forwarded), (None, None));
        assert_eq!(for_element(ip("2001:db8::1")), "for=\"[2001:db8::1]\"");
    }

    proptest! {
        #[test]
        fn the_upstream_gets_an_address_list_ending_with_the_peer_and_holding_the_client(
            values in proptest::collection::vec("\\PC{0,30}", 0..3),
            trusted in any::<bool>(),
        ) {
            let peer = ip("10.0.0.5");
            let p = policy(if trusted { &["10.0.0.0/8"] } else { &[] }, XFF);
            let received: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            let f = Forwarding::read(Some(peer), &p, &received);
            let out = f.edits(&p).x_forwarded_for.unwrap();
            let hops: Vec<IpAddr> = out.split(", ").map(|h| h.parse().unwrap()).collect();
            prop_assert_eq!(hops.last().copied(), Some(peer));
            prop_assert!(hops.contains(&f.client.unwrap()));
        }

        #[test]
        fn any_field_gives_the_peer_or_an_address_from_the_field(
            v in proptest::collection::vec(any::<u8>(), 0..64),
            forwarded in any::<bool>(),
        ) {
            let header = if forwarded { ForwardedHeader::Forwarded } else { XFF };
            let p = policy(&["127.0.0.0/8"], header);
            let f = Forwarding::read(Some(ip("127.0.0.1")), &p, &[&v]);
            prop_assert!(f.client.is_some());
            prop_assert!(f.edits(&p).forwarded.is_some() == forwarded);
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
