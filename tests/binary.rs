//! The real `tokengate` binary: its command line, and the PingOne sample request sent by real curl
//! through the running gateway to a Basic-only upstream.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn tokengate(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run tokengate")
}

#[test]
fn version_and_help() {
    let out = tokengate(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tokengate {}", env!("CARGO_PKG_VERSION"))
    );
    let help = String::from_utf8_lossy(&tokengate(&["--help"]).stdout).into_owned();
    assert!(
        help.contains("run") && help.contains("check-config"),
        "{help}"
    );
}

#[test]
fn check_config_accepts_the_shipped_default() {
    let out = tokengate(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("conf/tokengate.toml: ok"));
    assert!(tokengate(&["check-config", "conf/demo.toml"])
        .status
        .success());
}

#[test]
fn check_config_rejects_a_bad_file_naming_the_key() {
    let dir = TempDir::new("bad-config");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "default_upstream = \"a\"\n[upstreams.a]\nurl = \"http://127.0.0.1:1\"\n\
         [token]\nmax_body_bytes = 1000000\n",
    )
    .unwrap();
    let out = tokengate(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token.max_body_bytes: must be between 1 and 65536"),
        "{err}"
    );

    let out = tokengate(&["check-config", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    let out = tokengate(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn hash_secret_prints_a_record_line_that_verifies() {
    use std::io::Write;
    for (args, prefix) in [
        (
            &["hash-secret"][..],
            "secret = \"$argon2id$v=19$m=19456,t=2,p=1$",
        ),
        (
            &["hash-secret", "--algorithm", "sha256"][..],
            "secret = \"sha256:",
        ),
    ] {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all("s3cr:t é+%41\n".as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(line.starts_with(prefix), "{line}");
        let value = line
            .trim()
            .trim_start_matches("secret = \"")
            .trim_end_matches('"');
        let spec = tokengate::clients::secret::parse_secret(value, false, &|_| None).unwrap();
        assert!(spec.verify("s3cr:t é+%41".as_bytes()));
        assert!(!spec.verify("s3cr:t é+%41\n".as_bytes()));
    }
    let out = Command::new(BIN)
        .arg("hash-secret")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_validates_the_client_file_it_names() {
    let out = tokengate(&["check-config", "conf/validate-demo.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 client(s)"));

    let dir = TempDir::new("bad-clients");
    std::fs::write(
        dir.join("clients.toml"),
        "[[clients]]\nenv_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"client_secret_jwt\"]\n",
    )
    .unwrap();
    let conf = dir.join("gw.toml");
    std::fs::write(
        &conf,
        "default_upstream = \"a\"\n[upstreams.a]\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\npath = \"/{env_id}/as/token\"\nmode = \"validate\"\n\
         [clients]\nfile = \"clients.toml\"\n",
    )
    .unwrap();
    let out = tokengate(&["check-config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("clients[0].auth_methods"), "{err}");
    // The gateway refuses to start on it too.
    let out = tokengate(&["run", "--config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// The signing-key commands and checks, on the shipped upgrade demo: a new key (0600, never
/// overwritten), its JWKS, check-config reading the key and the records that name it, and the
/// configuration errors the operator can make.
#[test]
fn signing_keys_from_the_command_line_to_check_config() {
    let dir = TempDir::new("keys");
    for f in ["upstream-auth-demo.toml", "upstream-auth-clients.toml"] {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("conf")
                .join(f),
            dir.join(f),
        )
        .unwrap();
    }
    let conf = dir.join("upstream-auth-demo.toml");
    let conf = conf.to_str().unwrap();
    let key = dir.join("demo-signing-key.pem");

    // Without the key file: refused, naming it.
    let out = tokengate(&["check-config", conf]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo-signing-key.pem") && err.contains("\"demo-1\""),
        "{err}"
    );

    let out = tokengate(&["new-signing-key", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // Never overwritten.
    let out = tokengate(&[
        "new-signing-key",
        "--algorithm",
        "eddsa",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);

    let out = tokengate(&["check-config", conf]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 client(s)"));
    let out = tokengate(&["jwks", "--config", conf]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let k = &jwks["keys"][0];
    assert_eq!(
        (k["kid"].as_str(), k["kty"].as_str(), k["alg"].as_str()),
        (Some("demo-1"), Some("EC"), Some("ES256"))
    );
    assert!(k.get("d").is_none(), "{jwks}");

    // A key others can read is refused, without a byte of it in the message.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    for args in [vec!["check-config", conf], vec!["jwks", "--config", conf]] {
        let out = tokengate(&args);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("readable by others"), "{err}");
        assert!(
            !pem.lines().skip(1).take(1).any(|l| err.contains(l)),
            "{err}"
        );
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A record naming a key the gateway does not have; a per_client route beside a
    // private_key_jwt record (the gateway signs only for clients it verified).
    let demo = std::fs::read_to_string(conf).unwrap();
    let clients = dir.join("upstream-auth-clients.toml");
    let records = std::fs::read_to_string(&clients).unwrap();
    std::fs::write(
        &clients,
        records.replace("signing_key = \"demo-1\"", "signing_key = \"gone\""),
    )
    .unwrap();
    let out = tokengate(&["check-config", conf]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("legacy-batch") && err.contains("\"gone\""),
        "{err}"
    );
    std::fs::write(&clients, &records).unwrap();
    std::fs::write(
        conf,
        format!("{demo}\n[[routes]]\nname = \"intro\"\npath = \"/{{env_id}}/as/introspect\"\nmode = \"per_client\"\n"),
    )
    .unwrap();
    // (The gateway builds its runtime with the same check: tests/upstream_auth_e2e.rs.)
    let out = tokengate(&["check-config", conf]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("per_client") && err.contains("legacy-batch"),
        "{err}"
    );
}

#[test]
fn sighup_reloads_the_client_file() {
    use tokengate::clients::secret::hash_sha256;
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("hup");
    let client = |id: &str| {
        format!(
            "[[clients]]\nenv_id = \"{}\"\nclient_id = \"{id}\"\nsecret = \"{}\"\n\
             auth_methods = [\"client_secret_post\"]\n",
            ENV.split('/').nth(1).unwrap(),
            hash_sha256(b"s")
        )
    };
    std::fs::write(dir.join("clients.toml"), client("first")).unwrap();
    let port = free_port();
    let conf = dir.join("gw.toml");
    // The file is polled only hourly: only SIGHUP can make the change visible in this test.
    std::fs::write(
        &conf,
        format!(
            "{}[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"0s\"\n\
             [clients]\nfile = \"clients.toml\"\nreload_interval = \"1h\"\n",
            config(up.addr, &token_route("validate"))
        ),
    )
    .unwrap();
    let mut child = spawn_gateway(&conf, port, None, &[]);
    let ask = |id: &str| {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut w = s.try_clone().unwrap();
        std::io::Write::write_all(
            &mut w,
            &token_post(
                ENV,
                &[FORM],
                &format!("grant_type=x&client_id={id}&client_secret=s"),
            ),
        )
        .unwrap();
        read_message(&mut std::io::BufReader::new(s), false)
            .unwrap()
            .unwrap()
            .status()
    };
    assert_eq!(ask("first"), 200);
    assert_eq!(ask("second"), 401);
    std::fs::write(dir.join("clients.toml"), client("second")).unwrap();
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + WAIT;
    while ask("second") != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the client file"
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "SIGHUP killed the gateway"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ask("first"), 401);
}

/// The PingOne documentation's curl sample, aimed at `base`.
fn pingone_curl(base: &str, client_id: &str, secret: &str) -> std::process::Output {
    Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--location",
            "--globoff",
        ])
        .arg(format!("{base}{ENV}"))
        .args([
            "--header",
            "Content-Type: application/x-www-form-urlencoded",
        ])
        .args(["--data-urlencode", "grant_type=authorization_code"])
        .args(["--data-urlencode", "code=c0de-{{postAuthCode}}"])
        .args([
            "--data-urlencode",
            "redirect_uri=http://localhost:3000/callback",
        ])
        .args(["--data-urlencode", &format!("client_id={client_id}")])
        .args(["--data-urlencode", &format!("client_secret={secret}")])
        .output()
        .expect("curl is installed (.ci/run installs it)")
}

#[test]
fn pingone_sample_curl_reaches_a_basic_only_upstream_as_rfc6749_basic() {
    let client_id = "web:app";
    let secret = "S3cr:t+/=&%41 é-Zq9";
    // What curl sends when it talks to the upstream directly (the upstream refuses it: POST auth).
    let up = Upstream::start(Behaviour {
        basic_only: true,
        ..Default::default()
    });
    let direct = pingone_curl(&format!("http://{}", up.addr), client_id, secret);
    assert!(String::from_utf8_lossy(&direct.stdout).contains("Basic only"));
    let sent_by_curl = up.only().body_str();

    // The same request through the real binary.
    let port = free_port();
    let dir = TempDir::new("pingone");
    let conf = dir.join("tokengate.toml");
    std::fs::write(
        &conf,
        format!(
            "{}[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"0s\"\nshutdown_timeout = \"1s\"\n\
             drain_delay = \"0s\"\n",
            config(up.addr, &token_route("to_basic"))
        ),
    )
    .unwrap();
    let log_path = dir.join("stderr.log");
    let mut child = spawn_gateway(
        &conf,
        port,
        Some(&log_path),
        &[("TOKENGATE_LOG", "trace,pingora_proxy::proxy_h1=trace")],
    );
    let child = &mut child.0;

    let out = pingone_curl(&format!("http://127.0.0.1:{port}"), client_id, secret);
    assert_eq!(String::from_utf8_lossy(&out.stdout), TOKEN_JSON);

    let via_gateway = up.wait_for(2)[1].clone();
    let expected_body: Vec<&str> = sent_by_curl
        .split('&')
        .filter(|p| !p.starts_with("client_id=") && !p.starts_with("client_secret="))
        .collect();
    assert_eq!(via_gateway.body_str(), expected_body.join("&"));
    assert_eq!(
        via_gateway.header("authorization").unwrap(),
        basic("web%3Aapp:S3cr%3At%2B%2F%3D%26%2541+%C3%A9-Zq9")
    );

    // A rejected request too, so that error paths are logged as well.
    let rejected = pingone_curl(&format!("http://127.0.0.1:{port}"), "", secret);
    assert!(String::from_utf8_lossy(&rejected.stdout).contains("invalid_request"));

    // SIGTERM: the gateway stops gracefully and promptly.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // 10 s for a stop configured to take at most 1 s (no drain, grace_period 0 s,
    // shutdown_timeout 1 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");

    let mut log = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    // One plain-text line per request (no colour codes when stderr is not a terminal).
    assert!(!log.contains('\x1b'), "colour codes in a log file:\n{log}");
    assert!(
        log.contains("route=token") && log.contains("action=\"converted\" status=200"),
        "no access log line:\n{log}"
    );
    for needle in ["S3cr", "%2541", "Zq9", "d2Vi"] {
        assert!(
            !log.contains(needle),
            "log contains secret material {needle:?}:\n{log}"
        );
    }
}

#[test]
fn sigterm_drains_readyz_503_and_connections_closed_after_their_answer_then_stops() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("drain");
    let port = free_port();
    let admin = free_addr();
    let conf = dir.join("gw.toml");
    std::fs::write(
        &conf,
        format!(
            "{}[server]\nlisten = [\"127.0.0.1:{port}\"]\ndrain_delay = \"2s\"\n\
             grace_period = \"0s\"\nshutdown_timeout = \"1s\"\n[admin]\nlisten = \"{admin}\"\n",
            config(up.addr, &token_route("to_basic"))
        ),
    )
    .unwrap();
    let mut child = spawn_gateway(&conf, port, None, &[]);
    let readyz = || {
        let s = connect_when_listening(admin);
        std::io::Write::write_all(
            &mut &s,
            b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let m = read_message(&mut std::io::BufReader::new(s), false)
            .unwrap()
            .unwrap();
        (m.status(), m.body_str())
    };
    let request = token_post(ENV, &[FORM], "grant_type=x&client_id=a&client_secret=b");
    // One kept-alive connection, used before and during the drain.
    let kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.set_read_timeout(Some(WAIT)).unwrap();
    let mut kept_reader = std::io::BufReader::new(kept.try_clone().unwrap());
    let ask = |conn: &TcpStream, reader: &mut std::io::BufReader<TcpStream>| {
        std::io::Write::write_all(&mut &*conn, &request).unwrap();
        read_message(reader, false).unwrap().unwrap()
    };
    let before = ask(&kept, &mut kept_reader);
    assert_eq!(before.status(), 200);
    assert_eq!(before.header("connection").as_deref(), Some("keep-alive"));
    assert_eq!(readyz().0, 200);

    let pid = child.0.id().to_string();
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // The load balancer's probe sees the stop at once...
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = readyz();
        if status == 503 {
            assert_eq!(body, "not ready: stopping\n");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never said 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...while requests are still served, each answer closing its connection: on the kept-alive
    // one, and on a new one (the listener still accepts).
    let during = ask(&kept, &mut kept_reader);
    assert_eq!(during.status(), 200);
    assert_eq!(during.header("connection").as_deref(), Some("close"));
    assert!(read_message(&mut kept_reader, false).unwrap().is_none());
    let fresh = TcpStream::connect(("127.0.0.1", port)).unwrap();
    fresh.set_read_timeout(Some(WAIT)).unwrap();
    let mut fresh_reader = std::io::BufReader::new(fresh.try_clone().unwrap());
    let answer = ask(&fresh, &mut fresh_reader);
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the checks above took longer than the drain delay: the test proves nothing"
    );
    // Then the gateway stops: not before the drain delay, within drain + grace + shutdown.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not stop after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() >= Duration::from_secs(2));
}

#[test]
fn json_access_log_has_one_line_per_request_with_a_hashed_client_id() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("jsonlog");
    let port = free_port();
    let conf = dir.join("gw.toml");
    std::fs::write(
        &conf,
        format!(
            "{}[server]\nlisten = [\"127.0.0.1:{port}\"]\n[log]\nformat = \"json\"\n",
            config(up.addr, &token_route("to_basic"))
        ),
    )
    .unwrap();
    let log_path = dir.join("stderr.log");
    let child = spawn_gateway(&conf, port, Some(&log_path), &[]);
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut &s,
        &token_post(
            ENV,
            &[FORM, ("X-Request-Id", "req-4711")],
            "grant_type=x&client_id=Visible-Client&client_secret=Log-S3cret",
        ),
    )
    .unwrap();
    let resp = read_message(&mut std::io::BufReader::new(&s), false)
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(s);

    let deadline = Instant::now() + WAIT;
    let line = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if let Some(l) = log.lines().find(|l| l.contains("req-4711")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no access line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["target"], "tokengate::access");
    assert_eq!(v["request_id"], "req-4711");
    assert_eq!(v["route"], "token");
    assert_eq!(v["method_seen"], "client_secret_post");
    assert_eq!(v["action"], "converted");
    assert_eq!(
        (v["status"].as_u64(), v["upstream_status"].as_u64()),
        (Some(200), Some(200))
    );
    assert!(v["client_id"].as_str().unwrap().starts_with("sha256:"));
    assert!(v["total_ms"].as_f64().unwrap() >= v["upstream_ms"].as_f64().unwrap());
    drop(child);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains("Visible-Client") && !log.contains("Log-S3cret"),
        "{log}"
    );
}

#[test]
fn sighup_reloads_the_configuration_under_traffic_and_keeps_it_when_the_new_one_is_bad() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("reload");
    let port = free_port();
    let admin = free_addr();
    let conf = dir.join("gw.toml");
    let write_conf = |mode: &str| {
        std::fs::write(
            &conf,
            format!(
                "{}[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"0s\"\n\
                 [admin]\nlisten = \"{admin}\"\n",
                config(up.addr, &token_route(mode))
            ),
        )
        .unwrap()
    };
    write_conf("to_basic");
    let child = spawn_gateway(&conf, port, None, &[]);
    let pid = child.0.id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success())
    };

    let traffic = Traffic::start(
        format!("127.0.0.1:{port}").parse().unwrap(),
        token_post(ENV, &[FORM], "grant_type=x&client_id=a&client_secret=b"),
    );
    // Traffic is flowing before each change and after it.
    let wait_for_more = |n: usize| traffic.wait_for_more(n);
    wait_for_more(5);
    // Switch the route to a pass-through: the upstream starts receiving the body credentials.
    write_conf("passthrough");
    hup();
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = up.received();
        if seen
            .last()
            .is_some_and(|m| m.body_str().contains("client_secret=b"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the reload never took effect");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_more(5);
    // A bad configuration is refused; the running one stays.
    std::fs::write(&conf, "this is = not [ a configuration").unwrap();
    hup();
    let metrics = |name: &str| -> Option<String> {
        let s = connect_when_listening(admin);
        std::io::Write::write_all(
            &mut &s,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let body = read_message(&mut std::io::BufReader::new(s), false)
            .unwrap()
            .unwrap()
            .body_str();
        body.lines()
            .find(|l| l.starts_with(name))
            .map(str::to_string)
    };
    let deadline = Instant::now() + WAIT;
    while metrics("tokengate_config_reloads_total{result=\"failed\"}").as_deref()
        != Some("tokengate_config_reloads_total{result=\"failed\"} 1")
    {
        assert!(
            Instant::now() < deadline,
            "the bad configuration was not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metrics("tokengate_config_reloads_total{result=\"ok\"}").as_deref(),
        Some("tokengate_config_reloads_total{result=\"ok\"} 1")
    );
    assert_eq!(
        metrics("tokengate_config_generation").as_deref(),
        Some("tokengate_config_generation 2")
    );
    wait_for_more(5);
    let statuses = traffic.stop();
    assert!(
        statuses.len() >= 15,
        "too little traffic: {}",
        statuses.len()
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(child.0.id() > 0);
}

/// A reload that leaves the lockout as it was keeps what validation counted and remembered: a
/// SIGHUP neither frees a locked client for more guesses nor makes its owner verify again.
#[test]
fn sighup_keeps_lockout_counters_and_remembered_secrets_while_their_settings_stay() {
    use tokengate::clients::secret::hash_sha256;
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("reload-lockout");
    let port = free_port();
    let admin = free_addr();
    let clients = dir.join("clients.toml");
    std::fs::write(
        &clients,
        format!(
            "[[clients]]\nenv_id = \"5a0b3c2d-1111-2222-3333-444455556666\"\nclient_id = \"web\"\n\
             secret = \"{}\"\nauth_methods = [\"client_secret_post\"]\n",
            hash_sha256(b"right")
        ),
    )
    .unwrap();
    let conf = dir.join("gw.toml");
    let write_conf = |max: u32, name: &str| {
        std::fs::write(
            &conf,
            format!(
                "{}[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"0s\"\n\
                 [clients]\nfile = \"{}\"\n[lockout]\nmax_failures_per_client = {max}\n\
                 [admin]\nlisten = \"{admin}\"\n[[routes]]\nname = \"{name}\"\npath = \"/x\"\n\
                 mode = \"passthrough\"\n",
                config(up.addr, &token_route("validate")),
                clients.display()
            ),
        )
        .unwrap()
    };
    write_conf(3, "a");
    let child = spawn_gateway(&conf, port, None, &[]);
    let pid = child.0.id().to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let send = |secret: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let body = format!("grant_type=client_credentials&client_id=web&client_secret={secret}");
        std::io::Write::write_all(&mut s, &token_post(ENV, &[FORM], &body)).unwrap();
        read_message(&mut std::io::BufReader::new(s), false)
            .unwrap()
            .unwrap()
            .status()
    };
    let generation = || -> String {
        let s = connect_when_listening(admin);
        std::io::Write::write_all(
            &mut &s,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let body = read_message(&mut std::io::BufReader::new(s), false)
            .unwrap()
            .unwrap()
            .body_str();
        body.lines()
            .find(|l| l.starts_with("tokengate_config_generation "))
            .unwrap_or_default()
            .to_string()
    };
    let reload = |want: &str| {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + WAIT;
        while generation() != format!("tokengate_config_generation {want}") {
            assert!(Instant::now() < deadline, "the reload never took effect");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    assert_eq!(send("right"), 200);
    for _ in 0..3 {
        assert_eq!(send("guess"), 401);
    }
    assert_eq!(send("guess"), 429);
    // Another route name, the same lockout: counters and memory stay.
    write_conf(3, "b");
    reload("2");
    assert_eq!(send("guess"), 429, "a reload must not free a locked client");
    assert_eq!(send("right"), 200, "the remembered secret still passes");
    // A new lockout setting starts afresh.
    write_conf(4, "b");
    reload("3");
    assert_eq!(send("guess"), 401);
}
