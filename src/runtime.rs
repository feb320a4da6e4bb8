//! The running configuration: settings, upstreams and the validator, built together and swapped
//! whole when the configuration is reloaded. A request works on the snapshot it started with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::clients::secret::VerifiedCache;
use crate::clients::store::ClientStore;
use crate::config::{ClientsSettings, Settings};
use crate::lockout::{LocalLimiter, LockoutConfig};
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use crate::validate::Validator;

/// Everything a configuration needs at run time.
pub struct Runtime {
    pub settings: Arc<Settings>,
    /// In the order of `settings.upstreams`.
    pub upstreams: Arc<[Arc<Upstream>]>,
    pub validator: Option<Arc<Validator>>,
    /// Every upstream to keep resolved and to require for `/readyz` (the registry's included).
    pub resolved: Vec<Arc<Upstream>>,
    /// 1 for the configuration the process started with, +1 per successful reload.
    pub generation: u64,
}

/// The current runtime, shared by the proxy, the admin listener and the background services.
pub type Shared = Arc<ArcSwap<Runtime>>;

impl Runtime {
    /// Builds the runtime of `settings`. Blocking: resolves host names and reads the client file.
    pub fn build(settings: Settings, generation: u64) -> Result<Runtime, String> {
        let upstreams: Arc<[Arc<Upstream>]> = settings
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u.clone())))
            .collect();
        let mut resolved: Vec<Arc<Upstream>> = upstreams.to_vec();
        let validator = match &settings.clients {
            Some(c) => {
                let v = build_validator(c)?;
                resolved.extend(v.store().upstream().cloned());
                Some(Arc::new(v))
            }
            None => None,
        };
        Ok(Runtime {
            settings: Arc::new(settings),
            upstreams,
            validator,
            resolved,
            generation,
        })
    }

    /// The client records of validating routes, if any.
    pub fn client_store(&self) -> Option<&ClientStore> {
        self.validator.as_deref().map(Validator::store)
    }
}

/// The validator of `c`'s client records.
fn build_validator(c: &ClientsSettings) -> Result<Validator, String> {
    let l = c.lockout;
    Ok(Validator::new(
        ClientStore::open(c)?,
        VerifiedCache::new(c.verified_ttl, c.verified_capacity),
        Box::new(LocalLimiter::new(LockoutConfig {
            window: l.window,
            max_failures_per_client: l.max_failures_per_client,
            max_failures_per_ip: l.max_failures_per_ip,
        })),
    ))
}

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
        let Some(store) = rt.client_store() else {
            return;
        };
        match store.reload(force) {
            Ok(true) => tracing::info!(
                clients = store.stats().records,
                generation = store.stats().file_generation,
                "client file reloaded"
            ),
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
        let built = tokio::task::spawn_blocking(move || {
            let settings = Settings::load(&path).map_err(|e| e.to_string())?;
            Runtime::build(settings, generation)
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
