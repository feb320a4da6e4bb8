//! Upstream authorization servers: where requests go, with which timeouts, and how their host
//! names are kept resolved.
//!
//! A host name is resolved at start (a failure is logged, not fatal: the gateway answers 502 until
//! the name resolves) and then again every `resolve_interval` by a background service, so that a
//! cloud IdP's changing addresses are followed without resolving on the request path.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};

use crate::config::UpstreamSettings;
use conn::{Connector, Pool};

pub mod conn;

/// Idle connections kept per upstream by the gateway's own client.
const MAX_IDLE: usize = 128;

/// One upstream, with its current ready-to-use peer (for Pingora's proxy path) and the pool and
/// connector of the gateway's own client (token routes).
pub struct Upstream {
    pub settings: UpstreamSettings,
    peer: ArcSwapOption<HttpPeer>,
    /// The upstream's own trusted CAs, parsed once.
    ca: Option<Arc<[WrappedX509]>>,
    pub pool: Pool,
    pub connector: Connector,
}

impl Upstream {
    /// Builds the upstream and resolves its host once (blocking; call at start-up only).
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
            peer: ArcSwapOption::empty(),
            ca,
        };
        match (up.settings.host.as_str(), up.settings.port).to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(addr) => up.set_address(addr),
                None => tracing::warn!(upstream = %up.settings.name, host = %up.settings.host,
                    "upstream host resolved to no address; answering 502 until it resolves"),
            },
            Err(e) => tracing::warn!(upstream = %up.settings.name, host = %up.settings.host,
                error = %e, "cannot resolve upstream host; answering 502 until it resolves"),
        }
        up
    }

    /// Whether the host is a name (to re-resolve) rather than an IP literal.
    pub fn is_named(&self) -> bool {
        self.settings.host.parse::<IpAddr>().is_err()
    }

    /// A peer for one request, or `None` while the host has never resolved.
    pub fn peer(&self) -> Option<Box<HttpPeer>> {
        self.peer.load().as_deref().map(|p| Box::new(p.clone()))
    }

    /// The address the next connections go to.
    pub fn address(&self) -> Option<SocketAddr> {
        self.peer.load().as_deref().and_then(|p| match p._address {
            pingora::protocols::l4::socket::SocketAddr::Inet(a) => Some(a),
            _ => None,
        })
    }

    fn set_address(&self, addr: SocketAddr) {
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
        self.peer.store(Some(Arc::new(peer)));
    }

    /// Re-resolves the host name; keeps the previous address when resolution fails.
    pub async fn refresh(&self) {
        let s = &self.settings;
        match tokio::net::lookup_host((s.host.as_str(), s.port)).await {
            Ok(mut addrs) => {
                if let Some(addr) = addrs.next() {
                    if self.address() != Some(addr) {
                        tracing::info!(upstream = %s.name, %addr, "upstream address set");
                        self.set_address(addr);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %s.name, host = %s.host, error = %e,
                    "cannot re-resolve upstream host; keeping the previous address")
            }
        }
    }
}
