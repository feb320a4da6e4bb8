//! Log output: text or JSON lines, with Pingora's crates capped at `info`.
//!
//! Pingora prints whole request headers (Authorization included) at debug level; the cap applies
//! whatever filter the operator sets, so that no secret reaches a log line.

use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Whether an event may be written: never Pingora's debug and trace events.
fn pingora_capped(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.target().starts_with("pingora") && *meta.level() > tracing::Level::INFO)
}

/// Installs the process-wide subscriber: `filter` (a tracing filter, e.g. `info`), `format`, and
/// `writer`. Returns false if a subscriber was already installed.
pub fn install<W>(filter: EnvFilter, format: LogFormat, writer: W, ansi: bool) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = match format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter.and(filter_fn(pingora_capped))))
        .try_init()
        .is_ok()
}
