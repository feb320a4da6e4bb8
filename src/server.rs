//! Building and running the Pingora server from [`Settings`].

use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignalWatch};
use pingora::services::background::background_service;

use crate::admin::Admin;
use crate::clients::cache::ReadThrough;
use crate::clients::file::{FileStore, FileWatcher};
use crate::clients::registry::Registry;
use crate::clients::secret::VerifiedCache;
use crate::config::{ClientSource, ClientsSettings, Settings};
use crate::lockout::LocalLimiter;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::upstream::{Resolver, Upstream};
use crate::validate::{CachedRegistry, ClientStore, Validator};

type Services = Vec<Box<dyn pingora::services::ServiceWithDependents>>;

/// The validator, the background services it needs (the file watcher), and the registry's
/// upstream (to keep resolved).
fn build_validator(
    c: &ClientsSettings,
) -> Result<(Validator, Services, Option<Arc<Upstream>>), String> {
    let mut services: Services = Vec::new();
    let mut registry_upstream = None;
    let store = match &c.source {
        ClientSource::File(path) => {
            let store = Arc::new(FileStore::open(path)?);
            tracing::info!(path = %path.display(), clients = store.len(), "client file loaded");
            services.push(Box::new(background_service(
                "client file watcher",
                FileWatcher {
                    store: store.clone(),
                    interval: c.reload_interval,
                },
            )));
            ClientStore::File(store)
        }
        ClientSource::Registry {
            upstream,
            base_path,
        } => {
            let up = Arc::new(Upstream::new(upstream.clone()));
            registry_upstream = Some(up.clone());
            ClientStore::Registry(Box::new(CachedRegistry {
                cache: ReadThrough::new(c.cache),
                registry: Registry::new(up, base_path, c.registry_timeout, c.allow_plaintext),
            }))
        }
    };
    let validator = Validator::new(
        store,
        VerifiedCache::new(c.verified_ttl, c.verified_capacity),
        Box::new(LocalLimiter::new(c.lockout)),
    );
    Ok((validator, services, registry_upstream))
}

/// Builds the server: the proxy service on every listen address, the upstream resolver and, when
/// routes validate, the client store. Fails when the client records cannot be loaded.
pub fn build(settings: Settings) -> Result<Server, String> {
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

    let upstreams: Arc<[Arc<Upstream>]> = settings
        .upstreams
        .iter()
        .map(|u| Arc::new(Upstream::new(u.clone())))
        .collect();
    let mut resolved: Vec<Arc<Upstream>> = upstreams.to_vec();
    let (validator, client_services) = match &settings.clients {
        Some(c) => {
            let (v, services, registry) = build_validator(c)?;
            resolved.extend(registry);
            (Some(Arc::new(v)), services)
        }
        None => (None, Vec::new()),
    };
    let metrics = Arc::new(
        Metrics::new(
            validator.clone(),
            &settings
                .upstreams
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| format!("cannot register metrics: {e}"))?,
    );
    if let Some(admin_settings) = &settings.admin {
        let addr = admin_settings.listen;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the admin listener is not on loopback: keep it off public networks");
        }
        let mut admin = pingora::services::listening::Service::new(
            "tokengate admin".to_string(),
            Admin {
                metrics: metrics.clone(),
                upstreams: resolved.clone(),
                validator: validator.clone(),
                bearer_token: admin_settings.bearer_token.clone(),
            },
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    let listen = settings.server.listen.clone();
    let tls = settings.server.tls.clone();
    let gateway = Gateway::new(Arc::new(settings), upstreams, validator, metrics);
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "tokengate");
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
    server.add_service(background_service(
        "upstream resolver",
        Resolver {
            upstreams: resolved,
        },
    ));
    server.add_services(client_services);
    Ok(server)
}

/// Runs until SIGTERM/SIGINT (or the given signal), then shuts down gracefully.
pub fn run(
    settings: Settings,
    shutdown: Option<Box<dyn ShutdownSignalWatch>>,
) -> Result<(), String> {
    let server = build(settings)?;
    let args = match shutdown {
        Some(shutdown_signal) => RunArgs { shutdown_signal },
        None => RunArgs::default(),
    };
    server.run(args);
    Ok(())
}
