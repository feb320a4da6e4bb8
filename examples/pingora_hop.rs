//! A plain Pingora 0.9 hop, the baseline that tokengate is measured against (benches/load.sh):
//! a `ProxyHttp` that forwards every request unchanged to one upstream, with no routing, no body
//! logic, no metrics and no logging. One worker thread, peer timeouts set (as tokengate sets them),
//! the upstream address parsed once at start. Binds 127.0.0.1 only.
//!
//! cargo run --release --example pingora_hop -- LISTEN_PORT UPSTREAM_ADDR [--threads N] [--no-work-stealing]
//!
//! e.g. `pingora_hop 18090 127.0.0.1:19000`. SIGTERM/SIGINT stop it (grace period 0).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Hop {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Hop {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pingora_hop LISTEN_PORT UPSTREAM_ADDR [--threads N] [--no-work-stealing]";
    let port: u16 = args.first().and_then(|a| a.parse().ok()).expect(usage);
    let upstream: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let threads: usize = args
        .iter()
        .position(|a| a == "--threads")
        .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).expect(usage))
        .unwrap_or(1);
    let work_stealing = !args.iter().any(|a| a == "--no-work-stealing");

    let mut peer = HttpPeer::new(upstream, false, String::new());
    let o = &mut peer.options;
    o.connection_timeout = Some(Duration::from_secs(2));
    o.total_connection_timeout = Some(Duration::from_secs(5));
    o.read_timeout = Some(Duration::from_secs(15));
    o.write_timeout = Some(Duration::from_secs(15));
    o.idle_timeout = Some(Duration::from_secs(60));

    let conf = ServerConf {
        threads,
        work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Hop { peer });
    proxy.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(proxy);
    eprintln!("pingora_hop listening on 127.0.0.1:{port}, forwarding to {upstream}");
    server.run_forever();
}
