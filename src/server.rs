//! Building and running the Pingora server from [`Settings`].

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignalWatch, UnixShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::background::{Reloader, Resolver};
use crate::config::Settings;
use crate::conn::{raise_open_file_limit, Connections, Guarded, TlsDeadline};
use crate::drain::{Drain, DrainingWatch};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::runtime::{Runtime, Shared};

/// Builds the server: the proxy service on every listen address, the admin listener if
/// configured, and the background services (upstream resolver, reloader). `config_path` is the
/// file SIGHUP reloads; without it SIGHUP reloads only the client file. Fails when the client
/// records cannot be loaded. `drain` is what SIGTERM sets (see [`crate::drain`]).
pub fn build(
    settings: Settings,
    config_path: Option<PathBuf>,
    drain: Arc<Drain>,
) -> Result<(Server, Shared), String> {
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
    ignore_sighup_until_the_reloader_listens();

    // Listeners are bound once: they come from the configuration the process starts with.
    let listen = settings.server.listen.clone();
    let tls = settings.server.tls.clone();
    let admin = settings.admin.clone();
    let shared: Shared = Arc::new(ArcSwap::from_pointee(Runtime::build(settings, 1, None)?));
    let metrics = Arc::new(
        Metrics::new(shared.clone()).map_err(|e| format!("cannot register metrics: {e}"))?,
    );

    let conns = Arc::new(Connections::default());
    raise_open_file_limit(shared.load().settings.server.max_connections);
    let gateway = Gateway::new(shared.clone(), metrics.clone(), drain.clone());
    let proxy_app = pingora::proxy::http_proxy(&server.configuration, gateway);
    let guarded = Guarded::new(proxy_app, shared.clone(), conns.clone(), metrics.clone())
        .with_proxy_protocol();
    let mut proxy = Service::new("tokengate".to_string(), guarded);
    // Set before the TLS listeners are added: each takes the hook it finds.
    proxy
        .endpoints()
        .set_pre_tls_callback(Arc::new(TlsDeadline {
            shared: shared.clone(),
            conns: conns.clone(),
        }));
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(tls) = &tls {
        let (cert, key) = (
            tls.cert.display().to_string(),
            tls.key.display().to_string(),
        );
        for addr in &tls.listen {
            proxy
                .add_tls(&addr.to_string(), &cert, &key)
                .map_err(|e| format!("TLS listener {addr}: {e}"))?;
        }
    }
    server.add_service(proxy);

    if let Some(admin_settings) = admin {
        let addr = admin_settings.listen;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the admin listener is not on loopback: keep it off public networks");
        }
        let admin_app = Admin {
            metrics: metrics.clone(),
            shared: shared.clone(),
            bearer_token: admin_settings.bearer_token,
            drain,
        };
        // Caps of its own: a flood on the proxy's listeners does not lock monitoring out.
        let admin_conns = Arc::new(Connections::default());
        let guarded = Guarded::new(admin_app, shared.clone(), admin_conns, metrics.clone());
        let mut admin = Service::new("tokengate admin".to_string(), guarded);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    server.add_service(background_service(
        "upstream resolver",
        Resolver {
            shared: shared.clone(),
        },
    ));
    server.add_service(background_service(
        "reloader",
        Reloader {
            shared: shared.clone(),
            config_path,
            metrics,
        },
    ));
    Ok((server, shared))
}

/// SIGHUP's default action ends the process. The reloader handles it once its service runs; until
/// then (start-up), a SIGHUP is ignored rather than fatal.
fn ignore_sighup_until_the_reloader_listens() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code; the reloader's
    // tokio handler replaces it later.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Runs until SIGTERM/SIGINT (or the given signal), then shuts down gracefully: SIGTERM drains
/// for `server.drain_delay` first.
pub fn run(
    settings: Settings,
    config_path: Option<PathBuf>,
    shutdown: Option<Box<dyn ShutdownSignalWatch + Send + Sync>>,
) -> Result<(), String> {
    let drain = Arc::new(Drain::default());
    let (server, shared) = build(settings, config_path, drain.clone())?;
    let inner = shutdown.unwrap_or_else(|| Box::new(UnixShutdownSignalWatch));
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingWatch {
            inner,
            drain,
            shared,
        }),
    });
    Ok(())
}
