//! Log output: text or JSON lines, with Pingora's crates capped at `info`.
//!
//! Pingora prints whole request headers (Authorization included) at debug level; the cap applies
//! whatever filter the operator sets, so that no secret reaches a log line. Pingora also logs an
//! error line for every connection whose request head the gateway cuts at `server.header_timeout`:
//! those are dropped (they are counted in `tokengate_header_timeouts_total`), so that clients do
//! not decide how many error lines the gateway writes.

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Whether an event may be written: never Pingora's debug and trace events.
fn pingora_capped(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.target().starts_with("pingora") && *meta.level() > tracing::Level::INFO)
}

/// Drops Pingora's error lines about request heads cut at the header timeout.
struct QuietHeadTimeouts;

/// Whether an event's message holds a string.
struct MessageHas {
    needle: &'static str,
    found: bool,
}

impl Visit for MessageHas {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && value.contains(self.needle) {
            self.found = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}").contains(self.needle) {
            self.found = true;
        }
    }
}

impl<S> Filter<S> for QuietHeadTimeouts {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // Only ever narrows: the operator's filter decides the level (see `install`).
        Some(LevelFilter::TRACE)
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        // Pingora logs through `log`: the bridged event's own target is `log`, so the message
        // (the gateway's own marker) is what tells.
        if event.metadata().level() != &tracing::Level::ERROR {
            return true;
        }
        [crate::conn::HEAD_TIMEOUT, crate::conn::HEAD_REFUSED]
            .iter()
            .all(|needle| {
                let mut v = MessageHas {
                    needle,
                    found: false,
                };
                event.record(&mut v);
                !v.found
            })
    }
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
    // The combined filter's level hint is the operator's filter's only when every part has one:
    // without it the `log` bridge stays at trace, and every one of Pingora's debug records is
    // built and then dropped on each request.
    let capped = filter_fn(pingora_capped).with_max_level_hint(LevelFilter::TRACE);
    tracing_subscriber::registry()
        .with(layer.with_filter(filter.and(capped).and(QuietHeadTimeouts)))
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_bridge_stops_at_the_operators_level() {
        // The only subscriber this test binary installs. Pingora logs through `log`: with the
        // bridge at `warn`, its debug records are not even built.
        assert!(install(
            EnvFilter::new("warn"),
            LogFormat::Text,
            std::io::sink,
            false
        ));
        assert_eq!(log::max_level(), log::LevelFilter::Warn);
        assert!(!log::log_enabled!(target: "pingora_proxy", log::Level::Debug));
    }
}
