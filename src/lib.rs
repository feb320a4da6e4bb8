//! tokengate: an OAuth 2.0 token-endpoint gateway on Pingora.
//!
//! - [`protocol`]: the pure core (form parsing, RFC 6749 §2.3.1 Basic, decisions, error bodies).
//! - [`routing`]: which route a path belongs to (pure).
//! - [`config`]: the TOML file, validated and lowered into [`config::Settings`].
//! - [`upstream`]: upstream peers, timeouts and name resolution.
//! - [`exchange`]: the seam between a decision and the request the upstream receives.
//! - [`proxy`]: the Pingora `ProxyHttp` glue.
//! - [`server`]: building and running the Pingora server.
//! - [`cli`]: the command line.

pub mod admin;
pub mod background;
pub mod cli;
pub mod clients;
pub mod config;
pub mod exchange;
pub mod lockout;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod upstream;
pub mod validate;
