//! End-to-end: TLS. A CA and a server certificate are made by the test (rcgen); real curl talks
//! HTTPS to the gateway, and one gateway talks HTTPS to another, verifying its certificate.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// Its files are removed when it is dropped: keep it past the gateways that use them.
struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A CA, and a certificate for 127.0.0.1 and localhost signed by it.
    fn new(name: &str) -> Pki {
        let dir = TempDir::new(&format!("tls-{name}"));
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: with equal subject and issuer, OpenSSL takes the leaf for self-signed.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tokengate test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tokengate test server");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

/// A gateway with an HTTPS listener on `tls` in front of `upstream`.
fn tls_gateway(pki: &Pki, upstream: SocketAddr, tls: SocketAddr) -> Gateway {
    tls_gateway_with(pki, upstream, tls, "")
}

/// Like [`tls_gateway`], with more `[server]` keys.
fn tls_gateway_with(pki: &Pki, upstream: SocketAddr, tls: SocketAddr, extra: &str) -> Gateway {
    let gw = Gateway::start_with(
        &config(upstream, &token_route("to_basic")),
        &format!(
            "tls_listen = [\"{tls}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}\n",
            pki.path("cert.pem"),
            pki.path("key.pem")
        ),
    );
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(tls).is_err() {
        assert!(Instant::now() < deadline, "TLS listener never opened");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    gw
}

#[test]
fn curl_talks_https_to_the_gateway() {
    let pki = Pki::new("curl");
    let up = Upstream::start(Behaviour::default());
    let tls = free_addr();
    let _gw = tls_gateway(&pki, up.addr, tls);
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--cacert",
            &pki.path("ca.pem"),
        ])
        .arg(format!("https://127.0.0.1:{}{ENV}", tls.port()))
        .args([
            "-d",
            "grant_type=client_credentials",
            "-d",
            "client_id=app",
            "-d",
            "client_secret=s",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), TOKEN_JSON, "{out:?}");
    let got = up.only();
    assert_eq!(got.header("authorization").unwrap(), basic("app:s"));
}

#[test]
fn https_upstream_is_verified_against_its_ca_file_and_refused_without_it() {
    let pki = Pki::new("upstream");
    let up = Upstream::start(Behaviour::default());
    let tls = free_addr();
    let _front = tls_gateway(&pki, up.addr, tls);
    let via = |upstream_extra: &str| {
        let toml = config(tls, "").replace("http://", "https://").replace(
            "[upstreams.up]\n",
            &format!("[upstreams.up]\n{upstream_extra}"),
        );
        let gw = Gateway::start(&toml);
        gw.send(&token_post(ENV, &[FORM], "client_id=app&client_secret=s"))
    };
    // The test CA is not a system root: verification (on by default) refuses the upstream.
    assert_oauth_error(&via(""), 502, "server_error");
    assert!(up.received().is_empty());
    // Trusting the test CA for this upstream: through both gateways to the recording upstream.
    let ok = via(&format!("ca_file = \"{}\"\n", pki.path("ca.pem")));
    assert_eq!(ok.status(), 200, "{ok:?}");
    assert_eq!(up.wait_for(1).len(), 1);
    // Verification turned off explicitly also passes (and is logged loudly).
    assert_eq!(via("tls_verify = false\n").status(), 200);
}

#[test]
fn tls_settings_are_checked_at_start() {
    let pki = Pki::new("check");
    let up = "127.0.0.1:9";
    let base = format!("default_upstream = \"u\"\n[upstreams.u]\nurl = \"http://{up}\"\n");
    let err = |server: &str| {
        tokengate::config::Settings::parse(&format!("{base}[server]\n{server}"))
            .unwrap_err()
            .to_string()
    };
    let e = err("tls_listen = [\"127.0.0.1:8443\"]\n");
    assert!(e.starts_with("server.tls_listen"), "{e}");
    let e = err(&format!(
        "tls_listen = [\"127.0.0.1:8443\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.path("key.pem"),
        pki.path("key.pem")
    ));
    assert!(
        e.starts_with("server.tls_cert") && e.contains("no certificate"),
        "{e}"
    );
    let e = err(&format!(
        "tls_listen = [\"127.0.0.1:8443\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.path("cert.pem"),
        pki.path("cert.pem")
    ));
    assert!(e.starts_with("server.tls_key"), "{e}");
    let e = tokengate::config::Settings::parse(&format!(
        "default_upstream = \"u\"\n[upstreams.u]\nurl = \"http://{up}\"\nca_file = \"x\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("upstreams.u.ca_file"), "{e}");
}

/// A TLS handshake never finished (no ClientHello, or half of one) is cut at the header timeout,
/// not after Pingora's 60 s handshake timeout; a prompt client is still served over HTTPS.
#[test]
fn a_stalled_tls_handshake_is_cut_at_the_header_timeout() {
    use std::io::{Read, Write};
    let pki = Pki::new("stall");
    let up = Upstream::start(Behaviour::default());
    let tls = free_addr();
    let _gw = tls_gateway_with(&pki, up.addr, tls, "header_timeout = \"1s\"");
    let mut silent = std::net::TcpStream::connect(tls).unwrap();
    let mut half = std::net::TcpStream::connect(tls).unwrap();
    // The first bytes of a TLS record header (handshake, TLS 1.0 record version), then nothing.
    half.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let started = Instant::now();
    for s in [&mut silent, &mut half] {
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            Ok(_) => {} // an alert, then the close
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let out = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "--cacert",
            &pki.path("ca.pem"),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-d",
            "client_id=a&client_secret=b",
        ])
        .arg(format!(
            "https://127.0.0.1:{}/5a0b3c2d-1111-2222-3333-444455556666/as/token",
            tls.port()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

/// Empty lines before a request line are part of the head over TLS too: `\r\n\r\n` and then a head
/// trickled a byte at a time (a TLS record each) is cut at the header timeout.
#[test]
fn empty_lines_do_not_switch_the_head_deadline_off_over_tls_either() {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::Arc;
    use std::time::Duration;
    let pki = Pki::new("lines");
    let up = Upstream::start(Behaviour::default());
    let tls = free_addr();
    let _gw = tls_gateway_with(&pki, up.addr, tls, "header_timeout = \"2s\"");
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(pki.path("ca.pem")).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = std::net::TcpStream::connect(tls).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(b"\r\n\r\n").unwrap();
    s.flush().unwrap();
    let started = Instant::now();
    let head = b"POST /5a0b3c2d-1111-2222-3333-444455556666/as/token HTTP/1.1\r\nX-Slow: aaaa";
    let took = 'trickle: {
        for &b in head.iter().cycle() {
            assert!(started.elapsed() < WAIT, "still open after {WAIT:?}");
            if s.write_all(&[b]).and_then(|()| s.flush()).is_err() {
                break 'trickle started.elapsed();
            }
            match s.read(&mut [0u8; 256]) {
                Ok(0) => break 'trickle started.elapsed(),
                Ok(_) => panic!("an answer to a head that was never complete"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break 'trickle started.elapsed(),
            }
        }
        unreachable!()
    };
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "{took:?}"
    );
}
