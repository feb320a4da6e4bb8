//! The client store: the one seam between the parts that need client records (validation, the
//! admin view, metrics, reload) and where the records come from (a file, or an HTTP registry
//! behind a read-through cache). Callers ask it; they never look at which source it is.

use std::sync::{Arc, OnceLock};

use super::cache::{CacheConfig, CacheStats, ReadThrough};
use super::file::FileStore;
use super::registry::Registry;
use super::secret::Profile;
use crate::config::{ClientSource, ClientsSettings};
use crate::upstream::Upstream;

pub use super::cache::Lookup;
pub use super::record::{ClientKey, ClientRecord};

/// Where client records come from.
pub struct ClientStore {
    source: Source,
}

enum Source {
    File(FileStore),
    Registry(Box<CachedRegistry>),
}

/// An HTTP registry behind a read-through cache.
struct CachedRegistry {
    cache: ReadThrough<ClientKey, ClientRecord>,
    registry: Registry,
    /// The kind and cost of the first secret the registry answered with.
    seen_profile: OnceLock<Profile>,
}

/// What a store holds and has done, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Records in force (file) or cached, unknown clients included (registry).
    pub records: usize,
    /// Versions of the client file put in force (1 after start); 0 for a registry.
    pub file_generation: u64,
    /// The registry cache's counters; `None` for a file.
    pub cache: Option<CacheStats>,
}

impl ClientStore {
    /// Opens the configured source: reads and validates a client file (blocking), or sets up the
    /// registry and its cache (resolving its host, blocking).
    pub fn open(c: &ClientsSettings) -> Result<ClientStore, String> {
        let source = match &c.source {
            ClientSource::File(path) => {
                let store = FileStore::open(path)?;
                tracing::info!(path = %path.display(), clients = store.len(), "client file loaded");
                Source::File(store)
            }
            ClientSource::Registry {
                upstream,
                base_path,
            } => {
                if !upstream.tls {
                    tracing::warn!(host = %upstream.host,
                        "THE CLIENT REGISTRY IS PLAIN HTTP (clients.allow_insecure_registry): \
                         client records and secret hashes cross the network in clear");
                }
                Source::Registry(Box::new(CachedRegistry {
                    cache: ReadThrough::new(CacheConfig {
                        ttl: c.cache_ttl,
                        negative_ttl: c.cache_negative_ttl,
                        max_stale: c.cache_max_stale,
                        capacity: c.cache_capacity,
                    }),
                    registry: Registry::new(
                        Arc::new(Upstream::new(upstream.clone())),
                        base_path,
                        c.registry_timeout,
                        c.registry_max_inflight,
                    ),
                    seen_profile: OnceLock::new(),
                }))
            }
        };
        Ok(ClientStore { source })
    }

    /// A store over an open client file.
    pub fn file(store: FileStore) -> ClientStore {
        ClientStore {
            source: Source::File(store),
        }
    }

    /// The record of `key`: found, unknown, or unavailable (the registry failed and nothing
    /// cached can stand in).
    pub async fn lookup(&self, key: &ClientKey) -> Lookup<ClientRecord> {
        match &self.source {
            Source::File(f) => match f.get(key) {
                Some(r) => Lookup::Found(r),
                None => Lookup::Unknown,
            },
            Source::Registry(r) => {
                let found = r.cache.get(key, &r.registry).await;
                if let Lookup::Found(record) = &found {
                    if let Some(spec) = &record.secret {
                        r.seen_profile.get_or_init(|| spec.profile());
                    }
                }
                found
            }
        }
    }

    /// The kind and cost of secret the records use (most of a file's; the first a registry
    /// answered with; argon2id with `hash-secret`'s parameters before any is known).
    pub fn typical_profile(&self) -> Profile {
        let known = match &self.source {
            Source::File(f) => f.typical_profile(),
            Source::Registry(r) => r.seen_profile.get().copied(),
        };
        known.unwrap_or(Profile::OWASP_ARGON2ID)
    }

    /// The record of `key` if the store holds it now, without asking a registry.
    pub fn peek(&self, key: &ClientKey) -> Option<Arc<ClientRecord>> {
        match &self.source {
            Source::File(f) => f.get(key),
            Source::Registry(r) => r.cache.peek(key),
        }
    }

    pub fn stats(&self) -> StoreStats {
        match &self.source {
            Source::File(f) => StoreStats {
                records: f.len(),
                file_generation: f.generation(),
                cache: None,
            },
            Source::Registry(r) => StoreStats {
                records: r.cache.len(),
                file_generation: 0,
                cache: Some(r.cache.stats()),
            },
        }
    }

    /// Re-reads a client file that changed on disk (or always, with `force`). `Ok(true)` when
    /// new records are in force; `Err` when the file was refused and the previous records stay.
    /// A registry has nothing to re-read: `Ok(false)`.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        match &self.source {
            Source::File(f) => f.reload(force),
            Source::Registry(_) => Ok(false),
        }
    }

    /// Calls `f` with every record of a client file (nothing for a registry).
    pub fn for_each_file_record(&self, mut f: impl FnMut(&ClientRecord)) {
        if let Source::File(file) = &self.source {
            file.for_each(&mut f);
        }
    }

    /// The registry's upstream, to keep resolved (`None` for a file).
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        match &self.source {
            Source::File(_) => None,
            Source::Registry(r) => Some(r.registry.upstream()),
        }
    }
}
