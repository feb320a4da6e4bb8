//! tokengate: an OAuth 2.0 token-endpoint gateway on Pingora. ARCHITECTURE.md tells the life of a
//! request through these modules.
//!
//! - [`protocol`]: the pure core (form parsing, RFC 6749 §2.3.1 Basic, authentication methods,
//!   decisions, discovery rewrite, error bodies).
//! - [`routing`]: which route a path belongs to (pure).
//! - [`client_addr`]: the client's address behind trusted proxies (pure).
//! - [`config`]: the TOML file ([`config`]'s `file`), validated and lowered into the model,
//!   [`config::Settings`].
//! - [`clients`]: client records, their sources behind one [`clients::store::ClientStore`], secrets,
//!   per-client policy.
//! - [`validate`]: validation in place (lockout, record, policy, secret, grant type).
//! - [`assertion`]: client assertions (RFC 7523) and the gateway's signing keys, JWKS.
//! - [`lockout`]: brute-force counters behind the [`lockout::FailureLimiter`] seam.
//! - [`upstream`]: upstream peers, timeouts and name resolution.
//! - [`runtime`]: the running configuration, swapped whole on reload.
//! - [`exchange`]: the seam between a decision and the request the upstream receives.
//! - [`proxy`]: the Pingora `ProxyHttp` glue: a dispatcher and one unit per route kind.
//! - [`observe`]: metrics and the access log line of a finished request.
//! - [`metrics`], [`admin`]: the Prometheus registry; the admin listener.
//! - [`background`]: the reloader and the upstream resolver.
//! - [`conn`]: connection caps and request-head deadlines around the listeners' apps.
//! - [`drain`]: draining on SIGTERM (`/readyz` 503, connections closed after their answer).
//! - [`server`], [`logging`], [`cli`]: server assembly, log output, the command line.

pub mod admin;
pub mod assertion;
pub mod background;
pub mod cli;
pub mod client_addr;
pub mod clients;
pub mod config;
pub mod conn;
pub mod drain;
pub mod exchange;
pub mod lockout;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod protocol;
pub mod proxy;
pub mod request_stream;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod upstream;
pub mod validate;
