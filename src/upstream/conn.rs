//! Connections of the gateway's own upstream client (token routes): TCP or TLS (rustls), kept
//! alive in a small pool per upstream.
//!
//! A pooled connection is handed out only if it is still open and quiet: a peek that sees the
//! server's close (or anything at all: nothing is owed on an idle connection) discards it, so a
//! request is never written to a connection the server has already given up. Under TLS, what
//! rustls holds counts too (plaintext it decrypted, a close_notify).

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
    fn is_quiet(&mut self) -> bool {
        if let Conn::Tls(s) = self {
            // rustls may hold what the socket no longer shows: plaintext it decrypted from
            // records read with the last answer (a stray answer after it), or the server's
            // close_notify. Records it read but has not processed are processed here, so that
            // they show too; a record only partly read shows as the rest of it in the socket.
            let (_, tls) = s.get_mut();
            match tls.process_new_packets() {
                Ok(io) if io.plaintext_bytes_to_read() == 0 && !io.peer_has_closed() => {}
                _ => return false,
            }
        }
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
            let mut idle = self.lock().pop()?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;
    use tokio::io::AsyncReadExt;

    /// What the TLS server of a test sends once the handshake is done.
    enum Send {
        /// One record.
        Record(&'static [u8]),
        /// One record and a close_notify, in one write; the TCP connection stays open.
        RecordAndCloseNotify(&'static [u8]),
    }

    /// A TLS server on 127.0.0.1 (rustls, a self-signed certificate) for one connection: it
    /// sends what it is told, then holds the connection until `done` is dropped.
    fn tls_server(send: Send) -> (SocketAddr, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, wait) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            match send {
                Send::Record(data) => tls.write_all(data).unwrap(),
                Send::RecordAndCloseNotify(data) => {
                    tls.conn.writer().write_all(data).unwrap();
                    tls.conn.send_close_notify();
                }
            }
            tls.flush().unwrap();
            // Open until the test is over.
            let _ = wait.recv_timeout(Duration::from_secs(10));
        });
        (addr, done, server)
    }

    async fn connect(addr: SocketAddr) -> Conn {
        let mut s = UpstreamSettings::new(
            "tls",
            true,
            "localhost".to_string(),
            addr.port(),
            "localhost".to_string(),
        );
        s.tls_verify = false;
        Connector::new(&s).connect(addr).await.unwrap()
    }

    /// Whether a TLS connection is quiet once it has read `HELLO` of what the server sent
    /// (rustls decrypts the whole record those bytes came in).
    async fn quiet_after_hello(send: Send) -> bool {
        let (addr, done, server) = tls_server(send);
        let mut conn = connect(addr).await;
        let mut got = [0; 5];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"HELLO");
        let quiet = conn.is_quiet();
        drop(done);
        server.join().unwrap();
        quiet
    }

    #[tokio::test]
    async fn a_tls_connection_with_plaintext_left_in_rustls_is_not_quiet() {
        // The answer and a stray answer after it, in one record: the socket is empty once the
        // record is read, the stray bytes wait in rustls.
        assert!(!quiet_after_hello(Send::Record(b"HELLOSTRAY")).await);
    }

    #[tokio::test]
    async fn a_tls_connection_whose_server_sent_close_notify_is_not_quiet() {
        assert!(!quiet_after_hello(Send::RecordAndCloseNotify(b"HELLO")).await);
    }

    #[tokio::test]
    async fn a_tls_connection_that_owes_nothing_is_quiet() {
        assert!(quiet_after_hello(Send::Record(b"HELLO")).await);
    }
}
