//! The protocol core: pure, I/O-free OAuth 2.0 client-authentication logic.
//!
//! Nothing here knows about sockets, Pingora or configuration files: functions take bytes and
//! return decisions, so every rule is a unit test.

pub mod basic;
pub mod discovery;
pub mod endpoint;
pub mod error;
pub mod form;
pub mod method;
pub mod secret;
pub mod token;

pub use basic::{BasicEncoding, Credentials};
pub use discovery::DiscoveryRewrite;
pub use endpoint::{Endpoint, GrantCheck};
pub use error::{ErrorCode, OAuthError};
pub use method::{AuthMethod, Conversion, MethodSeen, MethodSet};
pub use secret::{SecretBytes, SecretString};
pub use token::{
    check_connection, check_head, decide, extract, query_carries_secrets, BodyLimit, Extracted,
    Forward, Head, HeaderChange, Reading, JWT_BEARER,
};
