//! Building and running the Pingora server from [`Settings`].

use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignalWatch};
use pingora::services::background::background_service;

use crate::config::Settings;
use crate::proxy::Gateway;
use crate::upstream::{Resolver, Upstream};

/// Builds the server: the proxy service on every listen address, and the upstream resolver.
pub fn build(settings: Settings) -> Server {
    let s = &settings.server;
    let conf = ServerConf {
        threads: s.threads,
        // Pingora takes whole seconds; round a sub-second setting up rather than to "none".
        grace_period_seconds: Some(s.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs_f64().ceil() as u64),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let upstreams: Arc<[Upstream]> = settings
        .upstreams
        .iter()
        .cloned()
        .map(Upstream::new)
        .collect();
    let listen = settings.server.listen.clone();
    let gateway = Gateway::new(Arc::new(settings), upstreams.clone());
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "tokengate");
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);
    server.add_service(background_service(
        "upstream resolver",
        Resolver { upstreams },
    ));
    server
}

/// Runs until SIGTERM/SIGINT (or the given signal), then shuts down gracefully.
pub fn run(settings: Settings, shutdown: Option<Box<dyn ShutdownSignalWatch>>) {
    let server = build(settings);
    let args = match shutdown {
        Some(shutdown_signal) => RunArgs { shutdown_signal },
        None => RunArgs::default(),
    };
    server.run(args);
}
