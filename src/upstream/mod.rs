//! Upstream authorization servers: where requests go, with which timeouts, and how their host
//! names are kept resolved.
//!
//! A host name is resolved at start (a failure is logged, not fatal: the gateway answers 502 until
//! the name resolves) and then again every `resolve_interval` by a background service, so that a
//! cloud IdP's changing addresses are followed without resolving on the request path. Every
//! address a name resolves to (or the configured `addresses`) is used, in turn; an address whose
//! connections keep failing is taken out for a while (passive health), and a request whose
//! connection fails tries the next address once.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};

use crate::config::UpstreamSettings;
use conn::{Connector, Pool};

pub mod conn;

/// Idle connections kept per upstream by the gateway's own client.
const MAX_IDLE: usize = 128;
/// Connect failures in a row that take an address out.
const EJECT_AFTER: u32 = 3;
/// How long an address stays out before it is tried again.
const EJECT_FOR: Duration = Duration::from_secs(10);

/// One address of an upstream: its ready-to-use peer (for Pingora's proxy path) and its health.
pub struct Target {
    pub addr: SocketAddr,
    peer: Arc<HttpPeer>,
    /// Connect failures in a row.
    failures: AtomicU32,
    /// Taken out until then (milliseconds since the upstream's `epoch`); 0: in.
    out_until_ms: AtomicU64,
}

impl Target {
    /// A peer to this address for one request (Pingora's proxy path).
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new((*self.peer).clone())
    }
}

/// One upstream: its addresses, and the pool and connector of the gateway's own client (token
/// routes).
pub struct Upstream {
    pub settings: UpstreamSettings,
    targets: ArcSwap<Vec<Arc<Target>>>,
    next: AtomicUsize,
    epoch: Instant,
    /// The upstream's own trusted CAs, parsed once.
    ca: Option<Arc<[WrappedX509]>>,
    pub pool: Pool,
    pub connector: Connector,
}

impl Upstream {
    /// Builds the upstream and resolves its host once (blocking; call at start-up only), unless
    /// its addresses are configured.
    pub fn new(settings: UpstreamSettings) -> Upstream {
        if settings.tls && !settings.tls_verify {
            tracing::warn!(upstream = %settings.name,
                "TLS CERTIFICATE VERIFICATION IS OFF for this upstream (tls_verify = false): \
                 anyone on the path can impersonate it");
        }
        // The configuration checked that every certificate parses as X.509.
        let ca = settings.ca.as_ref().map(|ders| {
            ders.iter()
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect::<Vec<_>>()
                .into()
        });
        let up = Upstream {
            pool: Pool::new(MAX_IDLE),
            connector: Connector::new(&settings),
            settings,
            targets: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            ca,
        };
        if !up.settings.addresses.is_empty() {
            up.set_addresses(up.settings.addresses.clone());
            return up;
        }
        match (up.settings.host.as_str(), up.settings.port).to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    tracing::warn!(upstream = %up.settings.name, host = %up.settings.host,
                        "upstream host resolved to no address; answering 502 until it resolves");
                }
                up.set_addresses(addrs);
            }
            Err(e) => tracing::warn!(upstream = %up.settings.name, host = %up.settings.host,
                error = %e, "cannot resolve upstream host; answering 502 until it resolves"),
        }
        up
    }

    /// Whether the host is a name to re-resolve (not an IP literal, no configured addresses).
    pub fn is_named(&self) -> bool {
        self.settings.addresses.is_empty() && self.settings.host.parse::<IpAddr>().is_err()
    }

    /// The address for the next connection: the addresses in turn, skipping those taken out
    /// (all of them out: in turn anyway). `None` while the host has never resolved.
    pub fn pick(&self) -> Option<Arc<Target>> {
        let targets = self.targets.load();
        let n = targets.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now_ms();
        (0..n)
            .map(|i| &targets[(start + i) % n])
            .find(|t| t.out_until_ms.load(Ordering::Relaxed) <= now)
            .or(targets.get(start))
            .cloned()
    }

    /// The address to try after a failed connection to `failed`: the next one in, else `failed`
    /// itself (a single address is tried again).
    pub fn pick_after(&self, failed: SocketAddr) -> Option<Arc<Target>> {
        let targets = self.targets.load();
        let now = self.now_ms();
        targets
            .iter()
            .find(|t| t.addr != failed && t.out_until_ms.load(Ordering::Relaxed) <= now)
            .or_else(|| targets.iter().find(|t| t.addr == failed))
            .cloned()
    }

    /// A peer for one request (see [`Upstream::pick`]).
    pub fn peer(&self) -> Option<Box<HttpPeer>> {
        self.pick().map(|t| t.peer())
    }

    /// An address of the upstream (`None` while the host has never resolved).
    pub fn address(&self) -> Option<SocketAddr> {
        self.targets.load().first().map(|t| t.addr)
    }

    /// Every address in use.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.targets.load().iter().map(|t| t.addr).collect()
    }

    /// How many addresses are in use and how many of them are taken out now.
    pub fn address_states(&self) -> (usize, usize) {
        let targets = self.targets.load();
        let now = self.now_ms();
        let out = targets
            .iter()
            .filter(|t| t.out_until_ms.load(Ordering::Relaxed) > now)
            .count();
        (targets.len() - out, out)
    }

    /// A connection to `addr` was made: its failures are forgotten.
    pub fn connected(&self, addr: SocketAddr) {
        if let Some(t) = self.targets.load().iter().find(|t| t.addr == addr) {
            t.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connection to `addr` failed; after [`EJECT_AFTER`] in a row it is taken out for
    /// [`EJECT_FOR`] (if another address remains in).
    pub fn connect_failed(&self, addr: SocketAddr) {
        let targets = self.targets.load();
        let Some(t) = targets.iter().find(|t| t.addr == addr) else {
            return;
        };
        if t.failures.fetch_add(1, Ordering::Relaxed) + 1 < EJECT_AFTER || targets.len() < 2 {
            return;
        }
        t.failures.store(0, Ordering::Relaxed);
        let until = self.now_ms() + EJECT_FOR.as_millis() as u64;
        t.out_until_ms.store(until, Ordering::Relaxed);
        tracing::warn!(upstream = %self.settings.name, %addr, out_for = ?EJECT_FOR,
            "upstream address taken out after repeated connection failures");
    }

    fn now_ms(&self) -> u64 {
        // At least 1: 0 means "in".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn target(&self, addr: SocketAddr) -> Arc<Target> {
        let s = &self.settings;
        let mut peer = HttpPeer::new(addr, s.tls, s.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(s.connect_timeout);
        o.total_connection_timeout = Some(s.total_connection_timeout);
        o.read_timeout = Some(s.read_timeout);
        o.write_timeout = Some(s.write_timeout);
        o.idle_timeout = Some(s.idle_timeout);
        o.verify_cert = s.tls_verify;
        o.verify_hostname = s.tls_verify;
        o.ca = self.ca.clone();
        Arc::new(Target {
            addr,
            peer: Arc::new(peer),
            failures: AtomicU32::new(0),
            out_until_ms: AtomicU64::new(0),
        })
    }

    /// Uses `addrs` from now on (duplicates dropped); addresses kept keep their health.
    fn set_addresses(&self, addrs: Vec<SocketAddr>) {
        let old = self.targets.load();
        let mut targets: Vec<Arc<Target>> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if targets.iter().any(|t| t.addr == addr) {
                continue;
            }
            let kept = old.iter().find(|t| t.addr == addr).cloned();
            targets.push(kept.unwrap_or_else(|| self.target(addr)));
        }
        self.targets.store(Arc::new(targets));
    }

    /// Re-resolves the host name; keeps the previous addresses when resolution fails or finds
    /// none.
    pub async fn refresh(&self) {
        let s = &self.settings;
        match tokio::net::lookup_host((s.host.as_str(), s.port)).await {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.dedup();
                if !addrs.is_empty() && addrs != self.addresses() {
                    tracing::info!(upstream = %s.name, addresses = ?addrs, "upstream addresses set");
                    self.set_addresses(addrs);
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %s.name, host = %s.host, error = %e,
                    "cannot re-resolve upstream host; keeping the previous addresses")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn upstream(addrs: &[&str]) -> Upstream {
        let mut s = UpstreamSettings::new("idp", false, "idp.test".into(), 9, "idp.test".into());
        s.addresses = addrs.iter().map(|a| a.parse().unwrap()).collect();
        Upstream::new(s)
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_used_in_turn() {
        let up = upstream(&["127.0.0.2:9000", "127.0.0.3:9000", "127.0.0.2:9000"]);
        assert_eq!(up.addresses(), [a("127.0.0.2:9000"), a("127.0.0.3:9000")]);
        assert!(!up.is_named());
        let picked: Vec<SocketAddr> = (0..4).map(|_| up.pick().unwrap().addr).collect();
        assert_eq!(
            picked,
            [
                a("127.0.0.2:9000"),
                a("127.0.0.3:9000"),
                a("127.0.0.2:9000"),
                a("127.0.0.3:9000")
            ]
        );
        assert_eq!(
            up.pick_after(a("127.0.0.2:9000")).unwrap().addr,
            a("127.0.0.3:9000")
        );
    }

    #[test]
    fn an_address_that_keeps_failing_is_taken_out_and_a_single_one_never_is() {
        let up = upstream(&["127.0.0.2:9000", "127.0.0.3:9000"]);
        let bad = a("127.0.0.2:9000");
        up.connect_failed(bad);
        up.connect_failed(bad);
        up.connected(bad); // a success in between: the count starts again
        up.connect_failed(bad);
        up.connect_failed(bad);
        assert!((0..4).any(|_| up.pick().unwrap().addr == bad));
        up.connect_failed(bad);
        assert!((0..6).all(|_| up.pick().unwrap().addr != bad));
        assert_eq!(up.address_states(), (1, 1));
        assert_eq!(
            up.pick_after(a("127.0.0.3:9000")).unwrap().addr,
            a("127.0.0.3:9000")
        );

        let single = upstream(&["127.0.0.2:9000"]);
        for _ in 0..10 {
            single.connect_failed(bad);
        }
        assert_eq!(single.pick().unwrap().addr, bad);
        assert_eq!(single.pick_after(bad).unwrap().addr, bad);
    }

    #[test]
    fn all_addresses_out_still_leaves_one_to_try() {
        let up = upstream(&["127.0.0.2:9000", "127.0.0.3:9000"]);
        for addr in up.addresses() {
            for _ in 0..EJECT_AFTER {
                up.connect_failed(addr);
            }
        }
        assert!(up.pick().is_some());
        assert!(up.peer().is_some());
    }
}
