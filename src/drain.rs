//! Draining on SIGTERM, so that a load balancer learns of a stop from `/readyz` rather than from
//! refused connections: for `server.drain_delay` after the signal, `/readyz` answers 503 and every
//! answer carries `Connection: close` while the listeners keep accepting; then Pingora's grace
//! period and shutdown proceed as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};

use crate::runtime::Shared;

/// Whether the gateway is draining: set once, on SIGTERM.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
}

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Wraps the shutdown signal: a graceful stop (SIGTERM) first drains for the running
/// configuration's `server.drain_delay`; other stops pass at once.
pub struct DrainingWatch {
    pub inner: Box<dyn ShutdownSignalWatch + Send + Sync>,
    pub drain: Arc<Drain>,
    pub shared: Shared,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingWatch {
    async fn recv(&self) -> ShutdownSignal {
        let signal = self.inner.recv().await;
        let delay = self.shared.load().settings.server.drain_delay;
        if matches!(signal, ShutdownSignal::GracefulTerminate) && !delay.is_zero() {
            self.drain.start();
            tracing::info!(
                drain_delay = ?delay,
                "stopping: /readyz answers 503 and connections close after their answer; \
                 listeners stay open for the drain delay"
            );
            tokio::time::sleep(delay).await;
        }
        signal
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A signal that has come already: SIGTERM (`true`) or a fast stop.
    struct Came(bool);

    #[async_trait]
    impl ShutdownSignalWatch for Came {
        async fn recv(&self) -> ShutdownSignal {
            if self.0 {
                ShutdownSignal::GracefulTerminate
            } else {
                ShutdownSignal::FastShutdown
            }
        }
    }

    /// A watch over a signal that has come (SIGTERM: `terminate`), with `drain_delay` configured.
    fn watching(terminate: bool, drain_delay: Duration) -> (DrainingWatch, Arc<Drain>) {
        let mut settings = crate::config::Settings::parse(
            "default_upstream = \"idp\"\n[upstreams.idp]\nurl = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        settings.server.drain_delay = drain_delay;
        let rt = crate::runtime::Runtime::build(settings, 1, None).unwrap();
        let drain = Arc::new(Drain::default());
        let watch = DrainingWatch {
            inner: Box::new(Came(terminate)),
            drain: drain.clone(),
            shared: Arc::new(arc_swap::ArcSwap::from_pointee(rt)),
        };
        (watch, drain)
    }

    #[tokio::test(start_paused = true)]
    async fn sigterm_drains_for_the_delay_and_a_fast_stop_does_not() {
        let (watch, drain) = watching(true, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let recv = watch.recv();
        tokio::pin!(recv);
        // Draining starts at once, and the signal is held for the delay.
        assert!(futures_poll_once(&mut recv).await.is_none());
        assert!(drain.is_draining());
        assert!(matches!(recv.await, ShutdownSignal::GracefulTerminate));
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        let (watch, fast) = watching(false, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        assert!(matches!(watch.recv().await, ShutdownSignal::FastShutdown));
        assert!(!fast.is_draining());
        assert_eq!(started.elapsed(), Duration::ZERO);

        let (watch, none) = watching(true, Duration::ZERO);
        assert!(matches!(
            watch.recv().await,
            ShutdownSignal::GracefulTerminate
        ));
        assert!(!none.is_draining());
    }

    /// Polls a future once: its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
