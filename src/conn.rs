//! Connections: how many the gateway holds, and how long a client may take to send a request head.
//!
//! Pingora reads a request head with a timeout *per read* (60 s), so a client sending a byte now
//! and then holds a connection (and its buffer) forever, and it caps nothing. [`Guarded`] wraps a
//! listener's app and, for every connection:
//! - admits it only under `server.max_connections` and `server.max_connections_per_ip` (addresses
//!   counted as the lockout counts them: IPv4 each, IPv6 per /64; `server.trusted_proxies` exempt,
//!   they carry many clients); a connection beyond is closed at once and counted;
//! - wraps its stream in [`HeadDeadline`]: each request head must be complete within
//!   `server.header_timeout` of its first byte (of the accept, for a connection's first request),
//!   however slowly the bytes come, or the connection is closed. Between requests, an idle
//!   keep-alive connection is closed by Pingora's keep-alive timeout (`server.keepalive_timeout`).
//!
//! With `server.proxy_protocol`, a plain listener's connection must come from a trusted proxy and
//! start with a PROXY protocol header ([`crate::client_addr::proxy_header`]), read within the
//! same `header_timeout`; the client it names is the connection's peer from then on (caps,
//! lockout, access log, `X-Forwarded-For`). Anything else is closed at once and counted.
//!
//! On TLS listeners the handshake comes before the app sees the connection: [`TlsDeadline`], a
//! pre-handshake hook, shuts the socket down when the handshake and the first head are not done
//! within `header_timeout` of the accept.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::client_addr::{counting_key, proxy_header, ProxyHeader};
use crate::metrics::Metrics;
use crate::runtime::Shared;

/// What a read of an overdue request head fails with (and what the logging setup recognizes).
pub const HEAD_TIMEOUT: &str = "request head not complete within header_timeout";

/// The limits one connection is held to (from the running configuration).
#[derive(Debug, Clone)]
struct Limits {
    header_timeout: Duration,
    max_connections: usize,
    max_per_ip: usize,
    exempt: Vec<IpNet>,
    proxy_protocol: bool,
}

impl Limits {
    /// Whether `ip` is a trusted proxy's (exempt from the per-address cap; may send PROXY
    /// headers).
    fn trusts(&self, ip: &IpAddr) -> bool {
        self.exempt.iter().any(|n| n.contains(ip))
    }

    fn of(shared: &Shared) -> Limits {
        let s = &shared.load().settings.server;
        Limits {
            header_timeout: s.header_timeout,
            max_connections: s.max_connections,
            max_per_ip: s.max_connections_per_ip,
            exempt: s.trusted_proxies.clone(),
            proxy_protocol: s.proxy_protocol,
        }
    }
}

/// Open connections, in all and per address.
#[derive(Default)]
pub struct Connections {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// TLS connections between their accept and their first request: when they were accepted, and
    /// the watchdog that shuts them down at the deadline (by socket cookie).
    handshaking: Mutex<HashMap<u64, (Instant, tokio::task::AbortHandle)>>,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
    /// A PROXY protocol listener's connection from an untrusted peer, or without a valid header.
    ProxyProtocol,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
            Refusal::ProxyProtocol => "proxy_protocol",
        }
    }
}

/// A connection's place; given back when dropped.
pub struct Slot<'a> {
    conns: &'a Connections,
    ip: Option<IpAddr>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.conns.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.conns.lock_per_ip();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

impl Connections {
    fn lock_per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for a connection from `peer`, or says why there is none.
    fn admit(&self, peer: Option<IpAddr>, limits: &Limits) -> Result<Slot<'_>, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::MaxConnections);
        }
        let counted = peer.filter(|ip| !limits.trusts(ip));
        let mut slot = Slot {
            conns: self,
            ip: None,
        };
        if let Some(ip) = counted.map(counting_key) {
            let mut per_ip = self.lock_per_ip();
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= limits.max_per_ip {
                return Err(Refusal::MaxConnectionsPerIp);
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        Ok(slot)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn lock_handshaking(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, tokio::task::AbortHandle)>> {
        self.handshaking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// When a TLS connection was accepted (its handshake watchdog is stopped: the head deadline
    /// takes over); `None` for a plain connection.
    fn handshaken(&self, stream: &Stream) -> Option<Instant> {
        let cookie = stream.get_socket_digest()?.socket_cookie().ok()?;
        let (accepted, watchdog) = self.lock_handshaking().remove(&cookie)?;
        watchdog.abort();
        Some(accepted)
    }
}

/// A listener's app, with connection caps and request-head deadlines.
pub struct Guarded<A> {
    inner: Arc<A>,
    shared: Shared,
    conns: Arc<Connections>,
    metrics: Arc<Metrics>,
    /// Whether `server.proxy_protocol` applies to this app's plain listeners.
    proxy_protocol: bool,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, shared: Shared, conns: Arc<Connections>, metrics: Arc<Metrics>) -> Self {
        Guarded {
            inner: Arc::new(inner),
            shared,
            conns,
            metrics,
            proxy_protocol: false,
        }
    }

    /// Lets `server.proxy_protocol` apply to this app's plain listeners (the proxy's, not the
    /// admin listener's: probes do not send the header).
    pub fn with_proxy_protocol(mut self) -> Self {
        self.proxy_protocol = true;
        self
    }

    fn refuse(&self, why: Refusal) -> Option<Stream> {
        self.metrics
            .connections_refused
            .with_label_values(&[why.as_str()])
            .inc();
        None
    }
}

/// Reads the PROXY protocol header a plain connection starts with, by `deadline`: the stream with
/// the bytes read past the header put back and, when the header names the client, the client as
/// its peer address; `None` for anything else (a TLS stream, no valid header in time).
async fn read_proxy_header(stream: Stream, deadline: Instant) -> Option<(Stream, Option<IpAddr>)> {
    let mut l4: Box<L4Stream> = stream.into_any().downcast().ok()?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        let n = tokio::time::timeout_at(deadline, l4.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        match proxy_header(&buf) {
            ProxyHeader::Incomplete => {}
            ProxyHeader::Invalid => return None,
            ProxyHeader::Complete { len, source } => {
                l4.rewind(&buf[len..]);
                if let Some(source) = source {
                    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
                    let _ = digest.peer_addr.set(Some(source.into()));
                    if let Some(local) =
                        l4.get_socket_digest().and_then(|d| d.local_addr().cloned())
                    {
                        let _ = digest.local_addr.set(Some(local));
                    }
                    l4.set_socket_digest(digest);
                }
                return Some((l4, source.map(|s| s.ip())));
            }
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = self.conns.handshaken(&stream).unwrap_or_else(Instant::now);
        let limits = Limits::of(&self.shared);
        let mut peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        if self.proxy_protocol && limits.proxy_protocol && stream.get_ssl().is_none() {
            let from_proxy = peer.is_some_and(|ip| limits.trusts(&ip));
            if !from_proxy {
                return self.refuse(Refusal::ProxyProtocol);
            }
            let deadline = accepted + limits.header_timeout;
            let Some((read, client)) = read_proxy_header(stream, deadline).await else {
                return self.refuse(Refusal::ProxyProtocol);
            };
            stream = read;
            peer = client.or(peer);
        }
        let _slot = match self.conns.admit(peer, &limits) {
            Ok(slot) => slot,
            Err(why) => return self.refuse(why),
        };
        let guarded = HeadDeadline::new(
            stream,
            accepted + limits.header_timeout,
            limits.header_timeout,
            self.metrics.clone(),
        );
        self.metrics.connections_open.inc();
        let reused = self.inner.process_new(Box::new(guarded), shutdown).await;
        self.metrics.connections_open.dec();
        reused
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Where a connection's reads stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head, due by `deadline`; `newlines` counts the line ends just seen
    /// (two in a row, `\r` aside, end the head).
    Head { deadline: Instant, newlines: u8 },
    /// The head is in: a body may follow; once a final response went out, the next byte read
    /// starts the next head.
    Rest { responded: bool },
}

/// Where a connection's request heads start and end, from the bytes it reads and writes.
#[derive(Debug, Clone, Copy)]
struct Tracker {
    phase: Phase,
    header_timeout: Duration,
}

impl Tracker {
    /// The head being read is due by this time (`None` between heads).
    fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Head { deadline, .. } => Some(deadline),
            Phase::Rest { .. } => None,
        }
    }

    /// Follows the bytes read: where a head ends, and where the next one starts.
    fn saw_read(&mut self, bytes: &[u8], now: Instant) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == (Phase::Rest { responded: true }) {
            self.phase = Phase::Head {
                deadline: now + self.header_timeout,
                newlines: 0,
            };
        }
        if let Phase::Head { newlines, .. } = &mut self.phase {
            for &b in bytes {
                match b {
                    b'\n' => {
                        *newlines += 1;
                        if *newlines == 2 {
                            self.phase = Phase::Rest { responded: false };
                            return;
                        }
                    }
                    b'\r' => {}
                    _ => *newlines = 0,
                }
            }
        }
    }

    /// Notes a final (not 1xx) response going out: the next bytes read start a new head.
    fn saw_write(&mut self, data: &[u8]) {
        if self.phase == (Phase::Rest { responded: false }) && is_final_response_start(data) {
            self.phase = Phase::Rest { responded: true };
        }
    }
}

/// A connection's stream that fails reads once a request head is overdue (see the module docs).
pub struct HeadDeadline {
    inner: Stream,
    tracker: Tracker,
    timer: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl HeadDeadline {
    pub fn new(
        inner: Stream,
        deadline: Instant,
        header_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        HeadDeadline {
            inner,
            tracker: Tracker {
                phase: Phase::Head {
                    deadline,
                    newlines: 0,
                },
                header_timeout,
            },
            timer: None,
            metrics,
        }
    }

    fn overdue(&mut self) -> io::Error {
        self.metrics.header_timeouts.inc();
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{HEAD_TIMEOUT} ({:?})", self.tracker.header_timeout),
        )
    }
}

/// `HTTP/1.x NNN` with a status that is not 1xx (`100 Continue` is not the answer).
fn is_final_response_start(data: &[u8]) -> bool {
    data.len() > 9 && data.starts_with(b"HTTP/1.") && data[9] != b'1'
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.tracker.deadline().is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(this.overdue()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.tracker.saw_read(read, Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some(deadline) = this.tracker.deadline() else {
                    return Poll::Pending;
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(this.overdue())),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            this.tracker.saw_write(&data[..n]);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(first)) = (&polled, bufs.iter().find(|b| !b.is_empty())) {
            if *n > 0 {
                this.tracker.saw_write(first);
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The pre-handshake hook of TLS listeners: a connection whose handshake (and first request head)
/// is not done within `header_timeout` of its accept is shut down.
pub struct TlsDeadline {
    pub shared: Shared,
    pub conns: Arc<Connections>,
}

#[async_trait]
impl pingora::listeners::PreTlsProcess for TlsDeadline {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let Some(cookie) = stream
            .get_socket_digest()
            .and_then(|d| d.socket_cookie().ok())
        else {
            return Ok(());
        };
        // SAFETY: dup() of a valid, open descriptor; the new descriptor is owned here and
        // closed when the watchdog ends (aborted when the connection reaches its app).
        let dup = unsafe { libc::dup(stream.as_raw_fd()) };
        if dup < 0 {
            return Ok(());
        }
        // SAFETY: `dup` is a fresh descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(dup) };
        let accepted = Instant::now();
        let deadline = accepted + Limits::of(&self.shared).header_timeout;
        let conns = self.conns.clone();
        let watchdog = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            // The socket itself (not a descriptor number that may have been reused) is shut
            // down: the handshake, or the read of the first head, fails at once.
            // SAFETY: shutdown(2) on a descriptor this task owns.
            unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
            conns.lock_handshaking().remove(&cookie);
        });
        self.conns
            .lock_handshaking()
            .insert(cookie, (accepted, watchdog.abort_handle()));
        Ok(())
    }
}

/// Raises the process's soft open-file limit to what `max_connections` needs (two descriptors a
/// connection, one towards the upstream, and some room), within the hard limit; says so in the
/// log, and warns when the hard limit is too low.
pub fn raise_open_file_limit(max_connections: usize) {
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(1024);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur >= needed {
        return;
    }
    let before = lim.rlim_cur;
    let target = needed.min(lim.rlim_max);
    if target > before {
        lim.rlim_cur = target;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            tracing::info!(
                from = before,
                to = target,
                "raised the open-file limit for server.max_connections"
            );
        }
    }
    if target < needed {
        tracing::warn!(
            hard_limit = lim.rlim_max,
            needed,
            "the open-file limit is below what server.max_connections needs: raise it (e.g. LimitNOFILE=)"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize, exempt: &[&str]) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(1),
            max_connections: max,
            max_per_ip: per_ip,
            exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
            proxy_protocol: false,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn connections_are_capped_in_all_and_per_address() {
        let c = Connections::default();
        let l = limits(3, 2, &[]);
        let a = c.admit(ip("192.0.2.1"), &l).unwrap();
        let _b = c.admit(ip("192.0.2.1"), &l).unwrap();
        assert_eq!(
            c.admit(ip("192.0.2.1"), &l).err(),
            Some(Refusal::MaxConnectionsPerIp)
        );
        let _d = c.admit(ip("192.0.2.2"), &l).unwrap();
        assert_eq!(
            c.admit(ip("192.0.2.3"), &l).err(),
            Some(Refusal::MaxConnections)
        );
        assert_eq!(c.open(), 3);
        drop(a);
        assert_eq!(c.open(), 2);
        assert!(
            c.admit(ip("192.0.2.1"), &l).is_ok(),
            "a place given back is free"
        );
    }

    #[test]
    fn trusted_proxies_are_exempt_from_the_per_address_cap_and_ipv6_counts_per_64() {
        let c = Connections::default();
        let l = limits(100, 1, &["10.0.0.0/8"]);
        let _p: Vec<_> = (0..5)
            .map(|_| c.admit(ip("10.0.0.1"), &l).unwrap())
            .collect();
        let _v6 = c.admit(ip("2001:db8::1"), &l).unwrap();
        assert!(c.admit(ip("2001:db8::ffff"), &l).is_err());
        assert!(c.admit(ip("2001:db8:0:1::1"), &l).is_ok());
    }

    #[test]
    fn only_a_final_response_ends_a_request() {
        assert!(is_final_response_start(b"HTTP/1.1 200 OK\r\n"));
        assert!(is_final_response_start(b"HTTP/1.0 401 X"));
        assert!(!is_final_response_start(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(!is_final_response_start(b"{\"access_token\""));
        assert!(!is_final_response_start(b"HTTP/1.1"));
    }

    fn head(deadline: Instant) -> Tracker {
        Tracker {
            phase: Phase::Head {
                deadline,
                newlines: 0,
            },
            header_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_head_ends_at_its_empty_line_however_the_bytes_are_cut() {
        let t0 = Instant::now();
        for cut in [1usize, 2, 3, 7, 100] {
            let mut t = head(t0);
            let req = b"POST /t HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
            for piece in req.chunks(cut) {
                t.saw_read(piece, t0);
            }
            assert_eq!(t.deadline(), None, "cut {cut}");
        }
        let mut lf_only = head(t0);
        lf_only.saw_read(b"GET / HTTP/1.1\nHost: a\n\n", t0);
        assert_eq!(lf_only.deadline(), None);
        let mut partial = head(t0);
        partial.saw_read(b"GET / HTTP/1.1\r\nHost: a\r\n", t0);
        assert_eq!(partial.deadline(), Some(t0));
    }

    #[test]
    fn the_next_head_is_due_from_its_first_byte_after_a_final_response() {
        let t0 = Instant::now();
        let mut t = head(t0);
        t.saw_read(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", t0);
        t.saw_write(b"HTTP/1.1 100 Continue\r\n\r\n");
        t.saw_read(b"a=1", t0);
        assert_eq!(t.deadline(), None, "a body after 100 Continue is no head");
        t.saw_write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(
            t.deadline(),
            None,
            "idle between requests: the keep-alive timeout's business"
        );
        let later = t0 + Duration::from_secs(30);
        t.saw_read(b"G", later);
        assert_eq!(t.deadline(), Some(later + Duration::from_secs(10)));
        t.saw_read(b"ET / HTTP/1.1\r\n\r\n", later);
        assert_eq!(t.deadline(), None);
    }
}
