//! Client registry: the client records tokengate validates credentials against, where they come
//! from (a file, an HTTP registry), and how they are cached.

pub mod cache;
pub mod file;
pub mod policy;
pub mod record;
pub mod registry;
pub mod secret;
pub mod set;
pub mod store;
pub mod verifier;
