//! Connections of the gateway's own upstream client (token routes): TCP or TLS (rustls), kept
//! alive in a small pool per upstream.
//!
//! A pooled connection is handed out only if it is still open and quiet: a peek that sees the
//! server's close (or anything at all: nothing is owed on an idle connection) discards it, so a
//! request is never written to a connection the server has already given up.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::tls::{
    CertificateDer, ClientConfig, ClientTlsStream, DigitallySignedStruct, HandshakeSignatureValid,
    RootCertStore, RusTlsError, ServerCertVerified, ServerCertVerifier, ServerName,
    SignatureScheme, TlsConnector, UnixTime,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::UpstreamSettings;

/// One connection to an upstream.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the connection is still open and has nothing waiting (an idle connection owes
    /// nothing: data, or the end of the stream, means it is done).
    fn is_quiet(&self) -> bool {
        let mut byte = [0u8; 1];
        // SAFETY: recv(2) on this connection's open descriptor into a local one-byte buffer;
        // MSG_PEEK leaves whatever is there in place, MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                self.tcp().as_raw_fd(),
                byte.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, data),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why no connection could be made.
#[derive(Debug)]
pub enum ConnectError {
    Refused(io::Error),
    Timeout,
    Tls(io::Error),
    TlsTimeout,
}

/// An idle connection, with where it goes and since when it waits.
struct Idle {
    conn: Conn,
    addr: SocketAddr,
    since: Instant,
}

/// Idle connections to one upstream, most recently used first out.
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

impl Pool {
    pub fn new(max_idle: usize) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pooled connection to `addr` that is still open and quiet and has been idle less than
    /// `max_idle_time`; the others found on the way are closed.
    pub fn take(&self, addr: SocketAddr, max_idle_time: Duration) -> Option<Conn> {
        loop {
            let idle = self.lock().pop()?;
            if idle.addr == addr && idle.since.elapsed() < max_idle_time && idle.conn.is_quiet() {
                return Some(idle.conn);
            }
        }
    }

    /// Keeps a connection for the next request (closes it when the pool is full).
    pub fn put(&self, conn: Conn, addr: SocketAddr) {
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                addr,
                since: Instant::now(),
            });
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the gateway's client connects to one upstream.
pub struct Connector {
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    total_timeout: Duration,
}

impl Connector {
    /// Builds the TLS client of an https upstream: its `ca_file` or the system's roots, host name
    /// verification unless `tls_verify = false`, ALPN http/1.1.
    pub fn new(s: &UpstreamSettings) -> Connector {
        let tls = s.tls.then(|| {
            pingora::tls::install_default_crypto_provider();
            let mut roots = RootCertStore::empty();
            match &s.ca {
                Some(ders) => {
                    for der in ders.iter() {
                        let _ = roots.add(CertificateDer::from(der.clone()));
                    }
                }
                None => match pingora::tls::load_native_certs() {
                    Ok(certs) => {
                        roots.add_parsable_certificates(certs);
                    }
                    Err(e) => tracing::warn!(upstream = %s.name, error = %e,
                        "cannot load the system's CA certificates"),
                },
            }
            let mut config = ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            if !s.tls_verify {
                config
                    .dangerous()
                    .set_certificate_verifier(Arc::new(NoVerification));
            }
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(s.host.clone()).unwrap_or_else(|_| unreachable_name());
            (TlsConnector::from(Arc::new(config)), name)
        });
        Connector {
            tls,
            connect_timeout: s.connect_timeout,
            total_timeout: s.total_connection_timeout,
        }
    }

    /// A new connection to `addr`: TCP within `connect_timeout`, then TLS within
    /// `total_connection_timeout` of the start.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Conn, ConnectError> {
        let started = Instant::now();
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let _ = tcp.set_nodelay(true);
        let Some((tls, name)) = &self.tls else {
            return Ok(Conn::Plain(tcp));
        };
        let left = self.total_timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, tls.connect(name.clone(), tcp)).await {
            Ok(Ok(s)) => Ok(Conn::Tls(Box::new(s))),
            Ok(Err(e)) => Err(ConnectError::Tls(e)),
            Err(_) => Err(ConnectError::TlsTimeout),
        }
    }
}

/// A name that cannot match any certificate (for a host that is no valid server name).
fn unreachable_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
}

/// `tls_verify = false`: any certificate is accepted (logged loudly at start); signatures are
/// still checked, so the session is at least with the holder of the key it was shown.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, RusTlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RusTlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RusTlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}
