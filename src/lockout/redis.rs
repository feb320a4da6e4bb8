//! Failure counters in Redis, shared by every replica that names the same store.
//!
//! Each counted key (a client, an address) is a Redis hash: one field per window (its number,
//! from Redis's own clock, so replicas with skewed clocks agree), holding that window's failures,
//! expiring when the window after the last counted one ends. One Lua script ([`SCRIPT`]) checks
//! both keys and counts a failure in both in one atomic round trip; releasing a reservation is
//! the same script. Every key carries the same hash tag (`{prefix}`), so a Redis Cluster accepts
//! a script touching two keys (they live in one slot; lockout traffic is small: only requests that
//! need a verification reach Redis).
//!
//! Key names hold no client_id and no address: `{prefix}:c:` plus a hash of (envID, client_id),
//! `{prefix}:a:` plus a hash of the address as counted (IPv6 per /64). The hash is not keyed:
//! someone who can read the store can test guesses of an id, not list the ids.
//!
//! Each call is bounded by the store timeout (the caller's); a connection that failed or timed
//! out is dropped and made again on the next call.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Script};
use sha2::{Digest, Sha256};

use super::{LockoutConfig, Who};
use crate::client_addr::counting_key;

/// Checks (`check`), counts (`reserve`) or takes back (`release`) failures.
///
/// `KEYS`: the counted keys. `ARGV[1]`: the operation; `ARGV[2]`: the window's length in
/// milliseconds (for `release`: the reservation's window); `ARGV[3..]`: each key's threshold.
/// Returns `{locked, milliseconds left in the window, window}` (`release`: 0).
pub const SCRIPT: &str = r#"
local op = ARGV[1]
if op == 'release' then
  for i = 1, #KEYS do
    local n = tonumber(redis.call('HGET', KEYS[i], ARGV[2]) or '0')
    if n > 0 then redis.call('HINCRBY', KEYS[i], ARGV[2], -1) end
  end
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local len = tonumber(ARGV[2])
local cur = math.floor(now / len)
local left = len - now % len
local this = string.format('%d', cur)
local prev = string.format('%d', cur - 1)
for i = 1, #KEYS do
  local max = tonumber(ARGV[2 + i])
  local c = tonumber(redis.call('HGET', KEYS[i], this) or '0')
  local p = tonumber(redis.call('HGET', KEYS[i], prev) or '0')
  if c >= max or p >= max then return {1, left, cur} end
end
if op == 'reserve' then
  local old = string.format('%d', cur - 2)
  for i = 1, #KEYS do
    redis.call('HINCRBY', KEYS[i], this, 1)
    redis.call('HDEL', KEYS[i], old)
    redis.call('PEXPIRE', KEYS[i], left + len)
  end
end
return {0, left, cur}
"#;

/// Where the store is and how to reach it.
#[derive(Clone)]
pub struct Target {
    /// `redis://host:port/db` or `rediss://…` (may hold a user and password).
    pub url: String,
    /// Replaces the URL's password, if set.
    pub password: Option<String>,
    /// PEM roots for `rediss://` instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Names every key (`{prefix}:…`); replicas that share counters share it.
    pub key_prefix: String,
}

/// A failure counted in Redis.
#[derive(Debug)]
pub(crate) struct Reservation {
    keys: Vec<String>,
    window: i64,
}

/// Why a call gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within the timeout.
    Timeout,
    /// Connection refused or lost, authentication refused, a script error.
    Failed,
}

/// What Redis said of a check or reservation.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Not locked (for a reservation: counted).
    Open(Option<Reservation>),
    /// Locked: retry after this long.
    Locked(Duration),
}

pub struct RedisCounters {
    client: Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    connecting: tokio::sync::Mutex<()>,
    script: Script,
    tag: String,
    config: LockoutConfig,
    timeout: Duration,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL and password.
        f.debug_struct("RedisCounters")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Counters at `target` (no connection is made until the first call). `timeout` bounds
    /// connecting and each answer.
    pub fn new(
        target: &Target,
        config: LockoutConfig,
        timeout: Duration,
    ) -> Result<RedisCounters, String> {
        let mut info = target
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("not a Redis URL: {}", e.category()))?;
        if let Some(p) = &target.password {
            info.redis.password = Some(p.clone());
        }
        let client = match &target.ca_pem {
            Some(pem) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(info),
        }
        .map_err(|e| format!("cannot use the Redis store: {}", e.category()))?;
        Ok(RedisCounters {
            client,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            script: Script::new(SCRIPT),
            tag: format!("{{{}}}", target.key_prefix),
            config: config.clamped(),
            timeout,
        })
    }

    /// The keys `who` is counted under, each with its threshold (disabled limits left out).
    pub fn keys(&self, who: &Who<'_>) -> Vec<(String, u32)> {
        key_names(&self.tag, &self.config, who)
    }

    /// Whether `who`'s address is locked (no call without an address limit and an address).
    pub(crate) async fn check_address(&self, who: &Who<'_>) -> Result<Answer, StoreError> {
        let key = address_key(&self.tag, &self.config, who);
        self.decide("check", key.into_iter().collect()).await
    }

    /// Counts a failure unless `who` is locked.
    pub(crate) async fn reserve(&self, who: &Who<'_>) -> Result<Answer, StoreError> {
        self.decide("reserve", self.keys(who)).await
    }

    /// Takes back a counted failure.
    pub(crate) async fn release(&self, r: Reservation) -> Result<(), StoreError> {
        if r.keys.is_empty() {
            return Ok(());
        }
        let mut inv = self.script.prepare_invoke();
        for k in &r.keys {
            inv.key(k);
        }
        inv.arg("release").arg(r.window);
        self.call::<i64>(inv).await.map(drop)
    }

    async fn decide(&self, op: &str, keys: Vec<(String, u32)>) -> Result<Answer, StoreError> {
        if keys.is_empty() {
            return Ok(Answer::Open(None));
        }
        let mut inv = self.script.prepare_invoke();
        for (k, _) in &keys {
            inv.key(k);
        }
        inv.arg(op).arg(self.config.window.as_millis() as u64);
        for (_, max) in &keys {
            inv.arg(*max);
        }
        let answer: Vec<i64> = self.call(inv).await?;
        let [locked, left_ms, window] = answer[..] else {
            return Err(StoreError::Failed);
        };
        if locked != 0 {
            let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
            return Ok(Answer::Locked(super::round_up_secs(left)));
        }
        let reservation = (op == "reserve").then(|| Reservation {
            keys: keys.into_iter().map(|(k, _)| k).collect(),
            window,
        });
        Ok(Answer::Open(reservation))
    }

    /// Runs the script within the timeout (connecting first if needed). A connection that failed
    /// or timed out is dropped.
    async fn call<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let run = async {
            let mut conn = self.connection().await?;
            inv.invoke_async::<T>(&mut conn).await
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::debug!(kind = e.category(), "lockout store call failed");
                if !matches!(e.kind(), redis::ErrorKind::ResponseError) {
                    self.conn.store(None);
                }
                Err(StoreError::Failed)
            }
            Err(_) => {
                self.conn.store(None);
                Err(StoreError::Timeout)
            }
        }
    }

    /// The shared connection, made once for every caller waiting for it.
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.conn.load_full() {
            return Ok(MultiplexedConnection::clone(&c));
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok(MultiplexedConnection::clone(&c));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.conn.store(Some(Arc::new(c.clone())));
        Ok(c)
    }
}

/// The keys `who` is counted under in the store tagged `tag`, with their thresholds.
fn key_names(tag: &str, config: &LockoutConfig, who: &Who<'_>) -> Vec<(String, u32)> {
    client_key(tag, config, who)
        .into_iter()
        .chain(address_key(tag, config, who))
        .collect()
}

/// The key of `who`'s client, unless the per-client limit is off.
fn client_key(tag: &str, config: &LockoutConfig, who: &Who<'_>) -> Option<(String, u32)> {
    let max = config.max_failures_per_client;
    (max > 0).then(|| {
        let mut h = Sha256::new();
        h.update(b"client\0");
        h.update((who.env_id.len() as u64).to_be_bytes());
        h.update(who.env_id.as_bytes());
        h.update(who.client_id);
        (format!("{tag}:c:{}", hex16(&h.finalize())), max)
    })
}

/// The key of `who`'s address, unless the per-address limit is off or there is no address.
fn address_key(tag: &str, config: &LockoutConfig, who: &Who<'_>) -> Option<(String, u32)> {
    let max = config.max_failures_per_ip;
    let ip = who.ip.filter(|_| max > 0)?;
    let mut h = Sha256::new();
    h.update(b"address\0");
    h.update(counting_key(ip).to_string().as_bytes());
    Some((format!("{tag}:a:{}", hex16(&h.finalize())), max))
}

/// The first 16 bytes of a digest in hex (128 bits: no collisions between real keys).
fn hex16(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const CONFIG: LockoutConfig = LockoutConfig {
        window: Duration::from_secs(60),
        max_failures_per_client: 10,
        max_failures_per_ip: 100,
    };

    fn who(env_id: &'static str, client_id: &'static [u8], ip: Option<IpAddr>) -> Who<'static> {
        Who {
            env_id,
            client_id,
            ip,
        }
    }

    const IP: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));

    #[test]
    fn keys_share_one_hash_tag_and_hold_neither_id_nor_address() {
        let keys = key_names("{tokengate}", &CONFIG, &who("env-1", b"web-app", IP));
        assert_eq!(keys.len(), 2);
        let (client, max) = &keys[0];
        assert_eq!(*max, 10);
        assert!(client.starts_with("{tokengate}:c:"), "{client}");
        assert_eq!(client.len(), "{tokengate}:c:".len() + 32);
        let (address, max) = &keys[1];
        assert_eq!(*max, 100);
        assert!(address.starts_with("{tokengate}:a:"), "{address}");
        for k in [client, address] {
            assert!(!k.contains("web-app") && !k.contains("env-1") && !k.contains("192.0.2"));
        }
    }

    #[test]
    fn clients_are_told_apart_by_environment_and_id_without_ambiguity() {
        let k = |env, id| key_names("{t}", &CONFIG, &who(env, id, None))[0].0.clone();
        assert_eq!(k("env", b"app"), k("env", b"app"));
        assert_ne!(k("env", b"app"), k("env2", b"app"));
        assert_ne!(k("env", b"app"), k("env", b"app2"));
        // Moving bytes between the halves is another client.
        assert_ne!(k("enva", b"pp"), k("env", b"app"));
    }

    #[test]
    fn addresses_are_counted_as_the_local_limiter_counts_them() {
        let k = |ip: IpAddr| {
            key_names("{t}", &CONFIG, &who("e", b"a", Some(ip)))[1]
                .0
                .clone()
        };
        let v6 = |last| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        assert_eq!(k(v6(1)), k(v6(2)), "one /64");
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_ne!(k(v6(1)), k(other));
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(k(IpAddr::V4(v4)), k(IpAddr::V6(v4.to_ipv6_mapped())));
    }

    #[test]
    fn disabled_limits_and_missing_addresses_count_no_key() {
        let only_ip = LockoutConfig {
            max_failures_per_client: 0,
            ..CONFIG
        };
        let keys = key_names("{t}", &only_ip, &who("e", b"a", IP));
        assert_eq!(keys.len(), 1);
        assert!(keys[0].0.starts_with("{t}:a:"));
        assert!(key_names("{t}", &only_ip, &who("e", b"a", None)).is_empty());
        let keys = key_names("{t}", &CONFIG, &who("e", b"a", None));
        assert_eq!(keys.len(), 1);
        assert!(keys[0].0.starts_with("{t}:c:"));
    }

    #[test]
    fn a_url_that_is_not_redis_is_refused_without_echoing_it() {
        let target = Target {
            url: "http://user:hunter2@example".into(),
            password: None,
            ca_pem: None,
            key_prefix: "t".into(),
        };
        let e = RedisCounters::new(&target, CONFIG, Duration::from_millis(50)).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
