//! tokengate: an OAuth 2.0 token-endpoint gateway on Pingora.
//!
//! - [`protocol`]: the pure core (form parsing, RFC 6749 §2.3.1 Basic, decisions, error bodies).
pub mod protocol;
