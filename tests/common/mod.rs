//! Test harness: a recording upstream, the real gateway on an ephemeral loopback port, and a raw
//! HTTP/1.1 client that sends exactly the bytes a test asks for.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokengate::config::Settings;

/// How long a test waits for something that should happen at once (a listener opening, an
/// answer, a reload): generous, so that only a hang or a bug reaches it on a loaded 2-core
/// machine; a passing test never waits for it.
pub const WAIT: Duration = Duration::from_secs(10);

/// Connects to a listener that may still be coming up (an admin listener starts beside the
/// proxy): connecting is a readiness poll, bounded by [`WAIT`].
pub fn connect_when_listening(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("connect {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

// ------------------------------------------------------------------------------------------
// HTTP messages.

/// A parsed HTTP/1.1 message (request or response) with its exact bytes.
#[derive(Clone, Default)]
pub struct Message {
    /// Request line or status line.
    pub start: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.start)?;
        for (n, v) in &self.headers {
            writeln!(f, "{n}: {}", String::from_utf8_lossy(v))?;
        }
        write!(f, "\n{}", self.body_str())
    }
}

impl Message {
    /// All values of a header (case-insensitive name).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The one value of a header, or `None`; panics if repeated.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(all.len() <= 1, "header {name} repeated: {all:?}");
        all.into_iter().next()
    }

    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body_str()))
    }
}

/// Reads one message head and body from `r`. `None` on a clean EOF before any byte.
pub fn read_message(
    r: &mut impl BufRead,
    is_response_to_head: bool,
) -> std::io::Result<Option<Message>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut msg = Message {
        start: start.trim_end().to_string(),
        ..Default::default()
    };
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in head",
            ));
        }
        let line = line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec();
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .expect("header without colon");
        let name = String::from_utf8_lossy(&line[..colon]).into_owned();
        let value = line[colon + 1..].trim_ascii().to_vec();
        msg.headers.push((name, value));
    }
    if is_response_to_head || msg.status() == 100 && msg.start.starts_with("HTTP/") {
        return Ok(Some(msg));
    }
    let chunked = msg
        .all("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            msg.body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else if let Some(cl) = msg.header("content-length") {
        let mut body = vec![0; cl.parse().expect("content-length")];
        r.read_exact(&mut body)?;
        msg.body = body;
    } else if msg.start.starts_with("HTTP/")
        && msg.status() >= 200
        && msg.status() != 204
        && msg.status() != 304
    {
        r.read_to_end(&mut msg.body)?;
    }
    Ok(Some(msg))
}

// ------------------------------------------------------------------------------------------
// Temporary directories.

/// A new, empty directory under the system's temporary directory (its name holds the process id,
/// a counter and `name`), removed with everything in it when dropped. Keep it alive for as long
/// as anything reads from it, a running gateway included: declare it before the gateway.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tokengate-{name}-{}-{n}", std::process::id()));
        // Left behind by a killed process that had the same id.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------------------------------
// The recording upstream.

/// Computes a full response from a request.
pub type Responder = Arc<dyn Fn(&Message) -> Vec<u8> + Send + Sync>;

/// How the test upstream answers.
#[derive(Clone)]
pub struct Behaviour {
    /// Answer 401 unless the request carries `Authorization: Basic` (a Basic-only server).
    pub basic_only: bool,
    /// Wait this long before answering.
    pub delay: Duration,
    /// The full response to send (default: 200 with a token JSON body).
    pub response: Vec<u8>,
    /// Close a kept-alive connection after this much idle time (node's default is 5 s).
    pub idle_close: Duration,
    /// Computes the response from the request (instead of `response`).
    pub respond: Option<Responder>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            basic_only: false,
            delay: Duration::ZERO,
            response: response(200, &[("Content-Type", "application/json")], TOKEN_JSON),
            idle_close: Duration::from_secs(30),
            respond: None,
        }
    }
}

pub const TOKEN_JSON: &str = r#"{"access_token":"at-123","token_type":"Bearer","expires_in":3600}"#;

/// A full HTTP/1.1 response with a Content-Length.
pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request it receives, exactly.
pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<(Mutex<Vec<Message>>, Condvar)>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Upstream {
    pub fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (rec, stop2, conns2) = (received.clone(), stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    conns2.lock().unwrap().push(c);
                }
                let (rec, b) = (rec.clone(), behaviour.clone());
                std::thread::spawn(move || serve(conn, rec, b));
            }
        });
        Upstream {
            addr,
            received,
            stop,
            accept: Some(accept),
            conns,
        }
    }

    /// How many connections the upstream has accepted.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Message> {
        self.received.0.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived and returns them.
    pub fn wait_for(&self, n: usize) -> Vec<Message> {
        let (lock, cv) = &*self.received;
        let (got, timeout) = cv
            .wait_timeout_while(lock.lock().unwrap(), WAIT, |v| v.len() < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "upstream got {} of {n} requests",
            got.len()
        );
        got.clone()
    }

    /// The one request received (waits for it).
    pub fn only(&self) -> Message {
        let all = self.wait_for(1);
        assert_eq!(all.len(), 1, "expected exactly one upstream request");
        all[0].clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // Down means down: kept-alive connections close too.
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn serve(conn: TcpStream, rec: Arc<(Mutex<Vec<Message>>, Condvar)>, b: Behaviour) {
    let _ = conn.set_read_timeout(Some(b.idle_close));
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    while let Ok(Some(req)) = read_message(&mut r, false) {
        let basic = req
            .header("authorization")
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("basic "));
        let computed = b.respond.as_ref().map(|f| f(&req));
        {
            let (lock, cv) = &*rec;
            lock.lock().unwrap().push(req);
            cv.notify_all();
        }
        std::thread::sleep(b.delay);
        let out = if let Some(out) = computed {
            out
        } else if b.basic_only && !basic {
            response(
                401,
                &[("WWW-Authenticate", "Basic realm=\"upstream\"")],
                r#"{"error":"invalid_client","error_description":"Basic only"}"#,
            )
        } else {
            b.response.clone()
        };
        if w.write_all(&out).is_err() {
            break;
        }
    }
    // The accept loop keeps a clone of this stream: close it explicitly so the peer sees it.
    let _ = w.shutdown(Shutdown::Both);
}

// ------------------------------------------------------------------------------------------
// The gateway.

struct TestShutdown(Arc<tokio::sync::Notify>);

#[async_trait]
impl ShutdownSignalWatch for TestShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// Everything every in-process gateway of this test binary logged, at trace level.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the logs of this test binary (once), with the gateway's own logging setup.
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tokengate::logging::install(
            tracing_subscriber::EnvFilter::new("trace"),
            tokengate::config::LogFormat::Text,
            || LogSink,
            false,
        );
    });
}

/// Everything the in-process gateways of this test binary logged so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// The captured logs once `expected` appears in them (a line is written after its answer went
/// out: a readiness poll, bounded by [`WAIT`]); panics with the logs when it does not.
pub fn logs_once_they_hold(expected: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = logs();
        if text.contains(expected) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "logs never held {expected:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fails when any captured log line carries client credentials: a client_secret parameter, an
/// Authorization value, or Basic credentials.
pub fn assert_logs_hold_no_credentials() {
    let logs =
        String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    for line in logs.lines() {
        let lower = line.to_ascii_lowercase();
        let basic_creds = lower
            .match_indices("basic ")
            .any(|(i, _)| !lower[i + 6..].starts_with("realm") && lower[i + 6..].len() > 3);
        assert!(
            !lower.contains("client_secret=") && !lower.contains("authorization:") && !basic_creds,
            "a log line carries credentials: {line}"
        );
    }
}

/// The real gateway (Pingora server) running on an ephemeral 127.0.0.1 port.
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: Arc<tokio::sync::Notify>,
    thread: Option<JoinHandle<()>>,
}

/// A port for a server a test starts, below Linux's ephemeral range (32768+): no `bind(0)` and no
/// outgoing connection of a parallel test can take it between this check and the server's bind.
/// Each test binary (they run one at a time) walks the range from its own offset.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let offset = std::process::id() % 6000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20000 + ((offset + n) % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// [`free_port`] on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A configuration with one upstream (`up`, at `upstream`) and the given extra TOML.
///
/// The read timeout leaves a recording upstream 5 s to answer (it answers at once; the slack is
/// for a loaded machine), below [`WAIT`] so a hang shows as the gateway's 504. The connect
/// timeouts stay at 1 s because a test may wait for them (a TLS handshake with a plain-HTTP
/// upstream); what they bound takes milliseconds: a loopback connect, which the kernel completes
/// without the peer being scheduled, or a TLS handshake with a gateway on the same machine.
pub fn config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "default_upstream = \"up\"\n\
         [upstreams.up]\nurl = \"http://{upstream}\"\nread_timeout = \"5s\"\n\
         connect_timeout = \"1s\"\ntotal_connection_timeout = \"1s\"\n{extra}\n"
    )
}

/// Routes for the PingOne token path in a given mode.
pub fn token_route(mode: &str) -> String {
    format!("[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"{mode}\"\n")
}

impl Gateway {
    /// Starts the gateway with `toml` (its `[server]` listen address is set here).
    pub fn start(toml: &str) -> Gateway {
        Gateway::start_with(toml, "")
    }

    /// Like [`Gateway::start`], with more `[server]` keys.
    pub fn start_with(toml: &str, server_extra: &str) -> Gateway {
        Gateway::start_on(|_| toml.to_string(), server_extra)
    }

    /// Like [`Gateway::start_with`], for a configuration that names the gateway's own port
    /// (`make` gets the port the gateway will listen on).
    pub fn start_on(make: impl Fn(u16) -> String, server_extra: &str) -> Gateway {
        capture_logs();
        for _ in 0..5 {
            let port = free_port();
            let toml = make(port);
            let text =
                format!("{toml}\n[server]\nlisten = [\"127.0.0.1:{port}\"]\n{server_extra}\n");
            let settings = Settings::parse(&text).expect("test config");
            let shutdown = Arc::new(tokio::sync::Notify::new());
            let signal = TestShutdown(shutdown.clone());
            let thread = std::thread::spawn(move || {
                tokengate::server::run(settings, None, Some(Box::new(signal)))
                    .expect("gateway runs");
            });
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline && !thread.is_finished() {
                if TcpStream::connect(addr).is_ok() {
                    return Gateway {
                        addr,
                        shutdown,
                        thread: Some(thread),
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            shutdown.notify_one();
            let _ = thread.join();
        }
        panic!("gateway did not start");
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// A connection from a given loopback address (127.0.0.0/8), to play another client.
    pub fn connect_from(&self, local: std::net::IpAddr) -> TcpStream {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(local, 0).into()).unwrap();
        socket.connect(&self.addr.into()).unwrap();
        let s: TcpStream = socket.into();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// Sends raw bytes on a new connection from `local` and reads one response.
    pub fn send_from(&self, local: std::net::IpAddr, raw: &[u8]) -> Message {
        let mut s = self.connect_from(local);
        s.write_all(raw).unwrap();
        read_message(&mut BufReader::new(s), false)
            .unwrap()
            .expect("no response")
    }

    /// Sends raw bytes on a new connection and reads one response.
    pub fn send(&self, raw: &[u8]) -> Message {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_message(&mut BufReader::new(s), false)
            .unwrap()
            .expect("no response")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !std::thread::panicking() {
            assert_logs_hold_no_credentials();
        }
    }
}

/// The value of a metric series (name with labels, exactly as exposed), 0 when absent.
pub fn metric(admin: SocketAddr, series: &str) -> f64 {
    let mut s = connect_when_listening(admin);
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let resp = read_message(&mut BufReader::new(s), false)
        .unwrap()
        .unwrap();
    resp.body_str()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A client_credentials body with `client_secret_post` credentials (form-encoded).
pub fn form(client_id: &str, secret: &str) -> String {
    let enc = |s: &str| tokengate::protocol::form::encode(s.as_bytes());
    format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        enc(client_id),
        enc(secret)
    )
}

/// A token POST with the given extra headers and body.
pub fn token_post(path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("POST {path} HTTP/1.1\r\nHost: gw.test\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

pub const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
pub const ENV: &str = "/5a0b3c2d-1111-2222-3333-444455556666/as/token";

/// base64 of `plain`, as a Basic header value.
pub fn basic(plain: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(plain)
    )
}

/// Asserts a local RFC 6749 §5.2 error answer and returns its `error` code.
pub fn assert_oauth_error(resp: &Message, status: u16, code: &str) {
    assert_eq!(resp.status(), status, "{resp:?}");
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(resp.header("pragma").as_deref(), Some("no-cache"));
    let v = resp.json();
    assert_eq!(v["error"], code, "{v}");
    assert!(v["error_description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
}

/// Half-closes a stream for writing.
pub fn half_close(s: &TcpStream) {
    s.shutdown(Shutdown::Write).unwrap();
}

/// Requests sent one after another on one kept-alive connection, from a thread, until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    done: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<JoinHandle<Vec<u16>>>,
}

impl Traffic {
    /// Sends `request` to `addr` over and over.
    pub fn start(addr: SocketAddr, request: Vec<u8>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, done2) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut statuses = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                w.write_all(&request).unwrap();
                statuses.push(read_message(&mut r, false).unwrap().unwrap().status());
                done2.fetch_add(1, Ordering::SeqCst);
            }
            statuses
        });
        Traffic {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more requests have been answered.
    pub fn wait_for_more(&self, n: usize) {
        let target = self.done.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + WAIT;
        while self.done.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "traffic stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops and returns every status received.
    pub fn stop(mut self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

// ------------------------------------------------------------------------------------------
// Child processes: the gateway binary, redis-server.

/// The gateway binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tokengate");

/// Starts the binary on `conf` and waits until it accepts connections on `port`.
pub fn spawn_gateway(
    conf: &Path,
    port: u16,
    log: Option<&Path>,
    env: &[(&str, &str)],
) -> KillOnDrop {
    let stderr = match log {
        Some(p) => std::process::Stdio::from(std::fs::File::create(p).unwrap()),
        None => std::process::Stdio::null(),
    };
    let mut child = KillOnDrop(
        std::process::Command::new(BIN)
            .args(["run", "--config", conf.to_str().unwrap()])
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        assert!(child.0.try_wait().unwrap().is_none(), "gateway exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Stops the child process when the test ends, also when it fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real `redis-server` on a loopback port, without persistence, stopped by PID when dropped.
pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    _child: KillOnDrop,
}

impl RedisServer {
    /// Starts one on a free port (`password`: `requirepass`).
    pub fn start(password: Option<&str>) -> RedisServer {
        RedisServer::start_on(free_port(), password)
    }

    /// Starts one on `port` (again, after [`RedisServer::stop`]) and waits until it answers PING.
    pub fn start_on(port: u16, password: Option<&str>) -> RedisServer {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = KillOnDrop(cmd.spawn().expect(
            "redis-server (Debian package redis-server; .ci/run installs it) must be on PATH",
        ));
        let redis = RedisServer {
            port,
            password: password.map(str::to_string),
            _child: child,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(reply) = redis.try_command(&["PING"]) {
                assert_eq!(reply, "+PONG", "redis-server on {port}");
                return redis;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data is gone: it keeps none on disk).
    pub fn stop(self) -> u16 {
        self.port
    }

    /// Runs one command; returns the reply's text (`+OK`, `:3`, an array's elements one per
    /// line).
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).expect("redis answers")
    }

    fn try_command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(WAIT)).ok()?;
        let mut raw = Vec::new();
        let mut push = |args: &[&str]| {
            raw.extend(format!("*{}\r\n", args.len()).bytes());
            for a in args {
                raw.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
            }
        };
        if let Some(p) = &self.password {
            push(&["AUTH", p]);
        }
        push(args);
        s.write_all(&raw).ok()?;
        let mut r = BufReader::new(s);
        if self.password.is_some() {
            read_resp(&mut r)?;
        }
        read_resp(&mut r)
    }
}

/// One RESP reply as text: simple strings, errors and integers as sent (`+OK`, `-ERR …`, `:3`),
/// bulk strings as their content, arrays as their elements, one per line.
fn read_resp(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let line = line.trim_end().to_string();
    match line.as_bytes().first()? {
        b'$' => {
            let n: i64 = line[1..].parse().ok()?;
            if n < 0 {
                return Some(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            std::io::Read::read_exact(r, &mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
        }
        b'*' => {
            let n: i64 = line[1..].parse().ok()?;
            let items: Option<Vec<String>> = (0..n.max(0)).map(|_| read_resp(r)).collect();
            Some(items?.join("\n"))
        }
        _ => Some(line),
    }
}
