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

use crate::client_addr::{canonical, counting_key, proxy_header, ProxyHeader};
use crate::config::RouteMode;
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, OAuthError};
use crate::request_stream::{Event, HeadRefusal, Position, RequestStream};
use crate::routing;
use crate::runtime::Shared;

/// What a read of an overdue request head fails with (and what the logging setup recognizes).
pub const HEAD_TIMEOUT: &str = "request head not complete within header_timeout";
/// What a read fails with once a refused head was answered (the logging setup recognizes it too).
pub const HEAD_REFUSED: &str = "request head refused";

/// The limits one connection is held to (from the running configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    header_timeout: Duration,
    max_header_bytes: usize,
    max_connections: usize,
    max_per_ip: usize,
    exempt: Vec<IpNet>,
    proxy_protocol: bool,
}

impl Limits {
    /// Whether `ip` is a trusted proxy's (exempt from the per-address cap; may send PROXY
    /// headers).
    fn trusts(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        self.exempt.iter().any(|n| n.contains(&ip))
    }

    fn of(shared: &Shared) -> Limits {
        let s = &shared.load().settings.server;
        Limits {
            header_timeout: s.header_timeout,
            max_header_bytes: s.max_header_bytes,
            max_connections: s.max_connections,
            max_per_ip: s.max_connections_per_ip,
            exempt: s.forwarding.trusted.clone(),
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
            &limits,
            self.metrics.clone(),
            self.shared.clone(),
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

/// Where a connection's request heads start and end ([`RequestStream`]), and when the one being
/// read is due.
#[derive(Debug)]
struct Tracker {
    requests: RequestStream,
    /// When the head being read (or, on a new connection, the first one) is due; `None` between
    /// heads and inside bodies.
    deadline: Option<Instant>,
    header_timeout: Duration,
}

impl Tracker {
    fn new(deadline: Instant, header_timeout: Duration, max_head: usize) -> Tracker {
        Tracker {
            requests: RequestStream::new(max_head),
            deadline: Some(deadline),
            header_timeout,
        }
    }

    /// Follows the bytes read: a head that ends stops its deadline, one that starts (at its first
    /// byte, empty lines included) starts one. Returns how many of `bytes` may pass, and the
    /// refusal of the head that the rest belongs to, if it is refused.
    fn saw_read(&mut self, bytes: &[u8], now: Instant) -> (usize, Option<HeadRefusal>) {
        let mut at = 0;
        while at < bytes.len() {
            let (n, event) = self.requests.step(&bytes[at..]);
            at += n;
            match event {
                Some(Event::HeadEnd) => self.deadline = None,
                Some(Event::Refused(why)) => return (at, Some(why)),
                None => {}
            }
        }
        let reading_head = matches!(self.requests.position(), Position::Head | Position::Lost);
        if reading_head && self.deadline.is_none() {
            self.deadline = Some(now + self.header_timeout);
        }
        (at, None)
    }

    /// Notes a response going out: after a `101` the connection carries no more requests.
    fn saw_write(&mut self, data: &[u8]) {
        if data.starts_with(b"HTTP/1.1 101") {
            self.requests.upgraded();
            self.deadline = None;
        }
    }
}

/// A connection's stream that follows its request heads (see the module docs): it fails reads once
/// a head is overdue, and answers a head that is too large itself.
pub struct HeadDeadline {
    inner: Stream,
    tracker: Tracker,
    timer: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
    shared: Shared,
    /// The answer to a refused head, and how much of it went out: once it is all written, reads
    /// fail and the connection closes.
    refusing: Option<(Vec<u8>, usize)>,
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
        limits: &Limits,
        metrics: Arc<Metrics>,
        shared: Shared,
    ) -> Self {
        HeadDeadline {
            inner,
            tracker: Tracker::new(deadline, limits.header_timeout, limits.max_header_bytes),
            timer: None,
            metrics,
            shared,
            refusing: None,
        }
    }

    fn overdue(&mut self) -> io::Error {
        self.metrics.header_timeouts.inc();
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{HEAD_TIMEOUT} ({:?})", self.tracker.header_timeout),
        )
    }

    /// Starts answering a refused head (counted; the answer is written by the next reads).
    fn refuse(&mut self, why: &HeadRefusal) {
        self.metrics
            .heads_refused
            .with_label_values(&[why.as_str()])
            .inc();
        let rt = self.shared.load();
        let token_route = match why {
            HeadRefusal::TooLarge {
                target: Some(target),
            } => is_token_route(&rt.settings, target),
            _ => false,
        };
        let answer = refusal_answer(why, token_route, &rt.settings.server.realm);
        self.refusing = Some((answer, 0));
    }

    /// Writes the refusal's answer; `Ready(Err)` once it is out (or cannot be written).
    fn poll_refusing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.refusing {
            if *written == answer.len() {
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(n)) if n > 0 => *written += n,
                Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        if Pin::new(&mut self.inner).poll_flush(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            HEAD_REFUSED,
        )))
    }
}

/// Whether `target` (a request-target) reaches a token route.
fn is_token_route(settings: &crate::config::Settings, target: &[u8]) -> bool {
    let path = routing::target_path(target);
    let Ok(path) = std::str::from_utf8(&path) else {
        return false;
    };
    let path = routing::normalize(path);
    routing::route(settings.routes.iter().map(|r| &r.matcher), &path)
        .is_some_and(|m| matches!(settings.routes[m.route].mode, RouteMode::Token(_)))
}

/// The answer to a refused head, whole, closing the connection: a head too large is `431` (RFC
/// 6585 §5), as an RFC 6749 §5.2 error on a token route; too many empty lines, `400`.
fn refusal_answer(why: &HeadRefusal, token_route: bool, realm: &str) -> Vec<u8> {
    let (status, reason, text) = match why {
        HeadRefusal::TooLarge { .. } => (
            431,
            "Request Header Fields Too Large",
            "the request head is too large",
        ),
        HeadRefusal::EmptyLines => (
            400,
            "Bad Request",
            "too many empty lines before the request line",
        ),
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    let body = if token_route {
        let e = OAuthError::new(status, ErrorCode::InvalidRequest, text);
        for (name, value) in e.headers(realm) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        e.body()
    } else {
        out.extend_from_slice(b"Content-Type: text/plain\r\n");
        format!("{text}\n").into_bytes()
    };
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.refusing.is_some() {
            return this.poll_refusing(cx);
        }
        if this.tracker.deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(this.overdue()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if read.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let (pass, refused) = this.tracker.saw_read(read, Instant::now());
                let Some(why) = refused else {
                    return Poll::Ready(Ok(()));
                };
                // The refused head's bytes never reach the server.
                buf.set_filled(before + pass);
                this.refuse(&why);
                if pass > 0 {
                    return Poll::Ready(Ok(()));
                }
                this.poll_refusing(cx)
            }
            Poll::Pending => {
                let Some(deadline) = this.tracker.deadline else {
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
            max_header_bytes: 1024,
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
    fn trust_and_caps_read_ipv4_mapped_peers_as_ipv4() {
        let c = Connections::default();
        let l = limits(100, 1, &["127.0.0.1/32"]);
        assert!(l.trusts(&"::ffff:127.0.0.1".parse().unwrap()));
        let _a = c.admit(ip("::ffff:127.0.0.1"), &l).unwrap();
        assert!(
            c.admit(ip("::ffff:127.0.0.1"), &l).is_ok(),
            "a trusted proxy on a [::] listener is exempt"
        );
        let _b = c.admit(ip("::ffff:192.0.2.1"), &l).unwrap();
        assert!(
            c.admit(ip("192.0.2.1"), &l).is_err(),
            "one address, two spellings"
        );
    }

    fn tracker(at: Instant) -> Tracker {
        Tracker::new(at, Duration::from_secs(10), 1024)
    }

    #[test]
    fn empty_lines_begin_a_head_and_never_end_it() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        assert_eq!(t.saw_read(b"\r\n\r\n", t0), (4, None));
        assert_eq!(
            t.deadline,
            Some(t0),
            "the first head is due from the accept"
        );
        t.saw_read(b"POST /t HTTP/1.1\r\n", t0);
        assert_eq!(t.deadline, Some(t0));
        t.saw_read(b"Content-Length: 1\r\n\r\na", t0);
        assert_eq!(t.deadline, None, "head and body in");
        // After an answer on a kept-alive connection: empty lines start the next head's clock.
        let later = t0 + Duration::from_secs(30);
        t.saw_read(b"\r\n", later);
        assert_eq!(t.deadline, Some(later + Duration::from_secs(10)));
        t.saw_read(b"\r\nGET / HTTP/1.1\r\n", later + Duration::from_secs(5));
        assert_eq!(t.deadline, Some(later + Duration::from_secs(10)));
        t.saw_read(b"\r\n", later);
        assert_eq!(t.deadline, None);
    }

    #[test]
    fn the_next_head_is_due_from_its_first_byte_and_a_body_has_none() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        t.saw_read(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n", t0);
        assert_eq!(t.deadline, None);
        t.saw_read(b"a=1&b=2", t0 + Duration::from_secs(60));
        assert_eq!(t.deadline, None, "a body is no head");
        t.saw_read(b"&c=", t0);
        let later = t0 + Duration::from_secs(90);
        t.saw_read(b"G", later);
        assert_eq!(t.deadline, Some(later + Duration::from_secs(10)));
        // A head pipelined behind a body in one read.
        let mut t = tracker(t0);
        t.saw_read(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /", later);
        assert_eq!(t.deadline, Some(later + Duration::from_secs(10)));
    }

    #[test]
    fn an_upgraded_connection_has_no_heads() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        t.saw_read(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", t0);
        t.saw_write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        t.saw_read(b"\x81\x05hello GET / HTTP/1.1\r\n", t0);
        assert_eq!(t.deadline, None);
    }

    #[test]
    fn a_head_over_the_limit_passes_none_of_its_bytes() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        let first = b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let mut read = first.to_vec();
        read.extend_from_slice(b"POST /env/as/token HTTP/1.1\r\nX: ");
        read.extend_from_slice(&[b'a'; 2000]);
        let (pass, why) = t.saw_read(&read, t0);
        assert_eq!(pass, first.len(), "the request before it passes");
        assert_eq!(
            why,
            Some(HeadRefusal::TooLarge {
                target: Some(b"/env/as/token".to_vec())
            })
        );
    }

    #[test]
    fn a_refused_head_is_answered_431_as_json_on_token_routes_and_in_text_elsewhere() {
        let too_large = HeadRefusal::TooLarge { target: None };
        let json = String::from_utf8(refusal_answer(&too_large, true, "tg")).unwrap();
        assert!(json.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(json.contains("\r\nContent-Type: application/json\r\n"));
        assert!(json.contains("\r\nCache-Control: no-store\r\n"));
        assert!(json.contains("\r\nConnection: close\r\n"));
        let (head, body) = json.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "invalid_request");
        let text = String::from_utf8(refusal_answer(&too_large, false, "tg")).unwrap();
        assert!(text.contains("Content-Type: text/plain") && text.ends_with("too large\n"));
        let lines = String::from_utf8(refusal_answer(&HeadRefusal::EmptyLines, false, "")).unwrap();
        assert!(lines.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }
}
