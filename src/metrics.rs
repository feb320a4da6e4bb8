//! Prometheus metrics: what the gateway saw and decided. All names start with `tokengate_`; units
//! are in the names (seconds); labels are bounded sets (route names from the configuration, method
//! and action enums, status classes, RFC 6749 error codes) — never a secret, never a raw client_id
//! or envID (both come from the request and would let any client grow the label space).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::runtime::Shared;

/// Latency buckets in seconds: sub-millisecond gateway work up to upstream timeouts.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    /// `tokengate_requests_total{route, env, method, action, status_class}`
    pub requests: IntCounterVec,
    /// `tokengate_local_rejections_total{route, error}`
    pub rejections: IntCounterVec,
    /// `tokengate_request_duration_seconds{route}`
    pub request_duration: HistogramVec,
    /// `tokengate_upstream_response_duration_seconds{upstream}`
    pub upstream_duration: HistogramVec,
    /// `tokengate_upstream_errors_total{upstream, kind}`
    pub upstream_errors: IntCounterVec,
    /// `tokengate_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `tokengate_config_generation`
    pub config_generation: IntGauge,
    /// `tokengate_connections_refused_total{reason}`
    pub connections_refused: IntCounterVec,
    /// `tokengate_header_timeouts_total`
    pub header_timeouts: IntCounter,
    /// `tokengate_request_heads_refused_total{reason}`
    pub heads_refused: IntCounterVec,
    /// `tokengate_connections_open`
    pub connections_open: IntGauge,
    /// `tokengate_signing_failures_total`
    pub signing_failures: IntCounter,
}

/// The `kind` label values of `tokengate_upstream_errors_total`.
pub const UPSTREAM_ERROR_KINDS: [&str; 5] = ["connect", "timeout", "tls", "reset", "other"];

/// Where a request went: the configured route's name, or `default` for no route.
pub const NO_ROUTE: &str = "default";

impl Metrics {
    /// Registers every metric; `validator` (when routes validate) adds client-store metrics.
    /// Per-upstream series start at zero for every upstream, so rates work from the start.
    pub fn new(shared: Shared) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("tokengate_requests_total", "Requests handled, by route, client authentication method seen, action taken and status class."),
            &["route", "env", "method", "action", "status_class"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "tokengate_local_rejections_total",
                "Requests answered by the gateway itself, by route and RFC 6749 error code.",
            ),
            &["route", "error"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "tokengate_request_duration_seconds",
                "Total time from request to answer, by route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "tokengate_upstream_response_duration_seconds",
                "Time from sending the request upstream to its response header, by upstream.",
            )
            .buckets(BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("tokengate_upstream_errors_total", "Failed upstream exchanges, by upstream and kind (connect, timeout, tls, reset, other)."),
            &["upstream", "kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "tokengate_config_reloads_total",
                "Configuration reloads (SIGHUP), by result (ok, failed).",
            ),
            &["result"],
        )?;
        let config_generation = IntGauge::new(
            "tokengate_config_generation",
            "The running configuration's generation: 1 at start, +1 per successful reload.",
        )?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_generation.clone()))?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "tokengate_connections_refused_total",
                "Connections closed at once, by reason (max_connections, max_connections_per_ip).",
            ),
            &["reason"],
        )?;
        let header_timeouts = IntCounter::new(
            "tokengate_header_timeouts_total",
            "Connections closed because a request head was not complete within server.header_timeout.",
        )?;
        let heads_refused = IntCounterVec::new(
            Opts::new(
                "tokengate_request_heads_refused_total",
                "Request heads answered by the gateway before they were complete, and their connections \
                 closed, by reason (too_large: over server.max_header_bytes, 431; empty_lines: too many \
                 empty lines before the request line, 400).",
            ),
            &["reason"],
        )?;
        let connections_open = IntGauge::new(
            "tokengate_connections_open",
            "Client connections open now (proxy and admin listeners).",
        )?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(header_timeouts.clone()))?;
        registry.register(Box::new(heads_refused.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        for reason in ["too_large", "empty_lines"] {
            heads_refused.with_label_values(&[reason]);
        }
        let signing_failures = IntCounter::new(
            "tokengate_signing_failures_total",
            "Client assertions the gateway could not make (answered 500 server_error).",
        )?;
        registry.register(Box::new(signing_failures.clone()))?;
        for reason in [
            "max_connections",
            "max_connections_per_ip",
            "proxy_protocol",
        ] {
            connections_refused.with_label_values(&[reason]);
        }
        registry.register(Box::new(ClientMetrics::new(shared.clone())?))?;
        registry.register(Box::new(UpstreamMetrics::new(shared.clone())?))?;
        for result in ["ok", "failed"] {
            config_reloads.with_label_values(&[result]);
        }
        let rt = shared.load();
        config_generation.set(rt.generation as i64);
        let metrics = Metrics {
            registry,
            requests,
            rejections,
            request_duration,
            upstream_duration,
            upstream_errors,
            config_reloads,
            config_generation,
            connections_refused,
            header_timeouts,
            heads_refused,
            connections_open,
            signing_failures,
        };
        metrics.init_upstreams(&rt.settings);
        Ok(metrics)
    }

    /// Starts the per-upstream series of `settings` at zero, so that rates work from the start.
    pub fn init_upstreams(&self, settings: &crate::config::Settings) {
        for name in settings.upstreams.iter().map(|u| u.name.as_str()) {
            self.upstream_duration.with_label_values(&[name]);
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors.with_label_values(&[name, kind]);
            }
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }
}

/// The `env` label value: the envID when the operator listed it, `other` when not, `-` without one.
pub fn env_label<'a>(env_id: Option<&'a str>, listed: &[String]) -> &'a str {
    match env_id {
        None => "-",
        Some(e) if listed.iter().any(|l| l == e) => e,
        Some(_) => "other",
    }
}

/// `2xx` … `5xx`, or `none` when no answer was sent (the client went away).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// Client-store figures, read at scrape time from the running validator (none without one).
struct ClientMetrics {
    shared: Shared,
    descs: Vec<Desc>,
}

const CACHE_COUNTERS: [(&str, &str); 7] = [
    (
        "tokengate_client_cache_hits_total",
        "Registry cache lookups answered by a fresh record.",
    ),
    (
        "tokengate_client_cache_negative_hits_total",
        "Registry cache lookups answered by a cached unknown client.",
    ),
    (
        "tokengate_client_cache_misses_total",
        "Registry cache lookups that needed the registry.",
    ),
    (
        "tokengate_client_cache_stale_served_total",
        "Stale records served while the registry failed.",
    ),
    (
        "tokengate_client_cache_evictions_total",
        "Live entries evicted to stay within the cache capacity.",
    ),
    (
        "tokengate_registry_fetches_total",
        "Calls to the client registry.",
    ),
    (
        "tokengate_registry_failures_total",
        "Calls to the client registry that failed.",
    ),
];

impl ClientMetrics {
    fn new(shared: Shared) -> Result<ClientMetrics, prometheus::Error> {
        let plain = CACHE_COUNTERS
            .iter()
            .chain(GAUGES.iter())
            .chain([&VERIFICATIONS_REFUSED, &STORE_SKIPPED, &STORE_BREAKER])
            .map(|&(name, help)| (name, help, vec![]));
        let labelled = [
            (VERIFICATIONS.0, VERIFICATIONS.1, vec!["kind".to_string()]),
            (STORE_ERRORS.0, STORE_ERRORS.1, vec!["kind".to_string()]),
            (
                STORE_FALLBACKS.0,
                STORE_FALLBACKS.1,
                vec!["action".to_string()],
            ),
        ];
        let descs = plain
            .chain(labelled)
            .map(|(name, help, labels)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels,
                    Default::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientMetrics { shared, descs })
    }
}

/// `tokengate_secret_verifications_total{kind}`.
const VERIFICATIONS: (&str, &str) = (
    "tokengate_secret_verifications_total",
    "Secrets verified, by kind of stored secret (argon2id, sha256, plain); checks of secrets that \
     cannot match (unknown or disabled clients) included.",
);

const VERIFICATIONS_REFUSED: (&str, &str) = (
    "tokengate_verifications_refused_total",
    "Requests answered 503 because too many argon2id verifications were waiting.",
);

/// `tokengate_lockout_store_errors_total{kind}` (`kind`: `error`, `timeout`).
const STORE_ERRORS: (&str, &str) = (
    "tokengate_lockout_store_errors_total",
    "Calls to the shared lockout store (Redis) that failed (kind=error) or took longer than \
     lockout.store_timeout (kind=timeout).",
);

/// `tokengate_lockout_store_fallbacks_total{action}` (`action`: `local`, `refused`).
const STORE_FALLBACKS: (&str, &str) = (
    "tokengate_lockout_store_fallbacks_total",
    "Lockout decisions taken without the shared store: by the process's own counters \
     (action=local) or by refusing with 503 (action=refused), per lockout.on_store_error.",
);

const STORE_SKIPPED: (&str, &str) = (
    "tokengate_lockout_store_skipped_total",
    "Calls to the shared lockout store not made because its circuit breaker was open.",
);

const STORE_BREAKER: (&str, &str) = (
    "tokengate_lockout_store_breaker_open",
    "1 while calls to the shared lockout store are skipped after repeated failures.",
);

const GAUGES: [(&str, &str); 2] = [
    (
        "tokengate_client_records",
        "Client records in force (file) or cached (registry).",
    ),
    (
        "tokengate_client_file_generation",
        "Versions of the client file put in force since the configuration was loaded (1 after a start or reload; 0 with a registry).",
    ),
];

impl Collector for ClientMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let rt = self.shared.load();
        let Some(validator) = &rt.validator else {
            return out;
        };
        let v = validator.verifier().stats();
        counter(&mut out, VERIFICATIONS_REFUSED, v.refused);
        let stats = validator.store().stats();
        if let Some(s) = stats.cache {
            let values = [
                s.hits,
                s.negative_hits,
                s.misses,
                s.stale_served,
                s.evictions,
                s.fetches,
                s.fetch_failures,
            ];
            for (c, v) in CACHE_COUNTERS.into_iter().zip(values) {
                counter(&mut out, c, v);
            }
        }
        let kinds = [
            ("argon2id", v.argon2id),
            ("sha256", v.sha256),
            ("plain", v.plain),
        ];
        labelled(&mut out, VERIFICATIONS, "kind", &kinds);
        let store = validator.limiter().stats();
        if store.shared {
            counter(&mut out, STORE_SKIPPED, store.skipped);
            let errors = [("error", store.errors), ("timeout", store.timeouts)];
            labelled(&mut out, STORE_ERRORS, "kind", &errors);
            let fallbacks = [("local", store.fell_back), ("refused", store.refused)];
            labelled(&mut out, STORE_FALLBACKS, "action", &fallbacks);
            gauge(&mut out, STORE_BREAKER, i64::from(store.breaker_open));
        }
        let gauges = [stats.records as i64, stats.file_generation as i64];
        for (g, v) in GAUGES.into_iter().zip(gauges) {
            gauge(&mut out, g, v);
        }
        out
    }
}

/// A counter read at scrape time.
fn counter(out: &mut Vec<MetricFamily>, (name, help): (&str, &str), v: u64) {
    if let Ok(c) = IntCounter::new(name, help) {
        c.inc_by(v);
        out.extend(c.collect());
    }
}

/// A counter with one label, one series per `(value, count)`, read at scrape time.
fn labelled(
    out: &mut Vec<MetricFamily>,
    (name, help): (&str, &str),
    label: &str,
    series: &[(&str, u64)],
) {
    if let Ok(c) = IntCounterVec::new(Opts::new(name, help), &[label]) {
        for (value, n) in series {
            c.with_label_values(&[*value]).inc_by(*n);
        }
        out.extend(c.collect());
    }
}

/// A gauge read at scrape time.
fn gauge(out: &mut Vec<MetricFamily>, (name, help): (&str, &str), v: i64) {
    if let Ok(g) = IntGauge::new(name, help) {
        g.set(v);
        out.extend(g.collect());
    }
}

/// `tokengate_upstream_addresses{upstream, state}`: each upstream's addresses in use (`in`) and
/// left out after repeated connection failures (`out`), read at scrape time.
struct UpstreamMetrics {
    shared: Shared,
    desc: Desc,
}

const UPSTREAM_ADDRESSES: (&str, &str) = (
    "tokengate_upstream_addresses",
    "Addresses of each upstream: in use (state=in) or left out after repeated connection \
     failures (state=out).",
);

impl UpstreamMetrics {
    fn new(shared: Shared) -> Result<UpstreamMetrics, prometheus::Error> {
        let desc = Desc::new(
            UPSTREAM_ADDRESSES.0.to_string(),
            UPSTREAM_ADDRESSES.1.to_string(),
            vec!["upstream".to_string(), "state".to_string()],
            Default::default(),
        )?;
        Ok(UpstreamMetrics { shared, desc })
    }
}

impl Collector for UpstreamMetrics {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let opts = Opts::new(UPSTREAM_ADDRESSES.0, UPSTREAM_ADDRESSES.1);
        let Ok(g) = IntGaugeVec::new(opts, &["upstream", "state"]) else {
            return Vec::new();
        };
        for up in &self.shared.load().resolved {
            let (ok, out) = up.address_states();
            let name = up.settings.name.as_str();
            g.with_label_values(&[name, "in"]).set(ok as i64);
            g.with_label_values(&[name, "out"]).set(out as i64);
        }
        g.collect()
    }
}
