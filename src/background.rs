//! Background services: the reloader (SIGHUP and client-file changes) and the resolver that keeps
//! upstream host names resolved. Both work on the running configuration ([`Shared`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::runtime::{Runtime, Shared};
use crate::upstream::Upstream;

/// What a reload cannot change (Pingora binds listeners and sizes its runtime at start).
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    }
    if old.server.threads != new.server.threads {
        changed.push("server.threads");
    }
    let tls = |s: &Settings| {
        s.server
            .tls
            .as_ref()
            .map(|t| (t.listen.clone(), t.cert.clone(), t.key.clone()))
    };
    if tls(old) != tls(new) {
        changed.push("server.tls_*");
    }
    let admin = |s: &Settings| s.admin.as_ref().map(|a| (a.listen, a.bearer_token.clone()));
    if admin(old) != admin(new) {
        changed.push("admin");
    }
    if old.log_format != new.log_format {
        changed.push("log.format");
    }
    if (old.server.grace_period, old.server.shutdown_timeout)
        != (new.server.grace_period, new.server.shutdown_timeout)
    {
        changed.push("server.grace_period/shutdown_timeout");
    }
    changed
}

/// Background service: SIGHUP reloads the configuration file (validated and built whole first; a
/// bad one is logged and counted, and the running configuration stays). Without a configuration
/// file, SIGHUP reloads the client file. A changed client file is also picked up by polling.
pub struct Reloader {
    pub shared: Shared,
    pub config_path: Option<PathBuf>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    fn reload_client_file(&self, force: bool) {
        let rt = self.shared.load();
        let Some(validator) = &rt.validator else {
            return;
        };
        let store = validator.store();
        match store.reload(force) {
            Ok(true) => {
                // New records may use another kind of secret: have its dummy ready.
                validator.verifier().prepare_dummy(store.typical_profile());
                tracing::info!(
                    clients = store.stats().records,
                    generation = store.stats().file_generation,
                    "client file reloaded"
                )
            }
            Ok(false) => {}
            Err(e) => tracing::error!(
                error = %e,
                "client file refused; the previous client records stay in force"
            ),
        }
    }

    async fn reload_config(&self, path: PathBuf) {
        let current = self.shared.load_full();
        let generation = current.generation + 1;
        let previous = current.clone();
        let built = tokio::task::spawn_blocking(move || {
            let settings = Settings::load(&path).map_err(|e| e.to_string())?;
            Runtime::build(settings, generation, Some(&previous))
        })
        .await
        .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
        match built {
            Ok(rt) => {
                let kept = restart_only_changes(&current.settings, &rt.settings);
                if !kept.is_empty() {
                    tracing::warn!(settings = ?kept, "these settings change only on restart; the running values stay");
                }
                self.metrics.init_upstreams(&rt.settings);
                self.shared.store(Arc::new(rt));
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                self.metrics.config_generation.set(generation as i64);
                tracing::info!(generation, "configuration reloaded");
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failed"])
                    .inc();
                tracing::error!(error = %e, "configuration refused; the running configuration stays");
            }
        }
    }

    fn poll_interval(&self) -> Duration {
        self.shared
            .load()
            .settings
            .clients
            .as_ref()
            .map_or(Duration::from_secs(3600), |c| c.reload_interval)
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval()) => self.reload_client_file(false),
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    match &self.config_path {
                        Some(path) => {
                            tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
                            self.reload_config(path.clone()).await;
                        }
                        None => {
                            tracing::info!("SIGHUP: reloading the client file");
                            self.reload_client_file(true);
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Background service that keeps the named upstreams of the running configuration resolved.
pub struct Resolver {
    pub shared: Shared,
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let rt = self.shared.load_full();
            let named: Vec<&Arc<Upstream>> = rt.resolved.iter().filter(|u| u.is_named()).collect();
            let interval = named
                .iter()
                .map(|u| u.settings.resolve_interval)
                .min()
                .unwrap_or(std::time::Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep(interval) => {
                    for u in &named {
                        u.refresh().await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
