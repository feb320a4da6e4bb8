//! End-to-end: the admin listener. A known sequence of requests through the real gateway, then
//! `/metrics` scraped and parsed with a real Prometheus text-format parser, with exact values.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::time::Instant;

use common::*;

fn get(addr: std::net::SocketAddr, path: &str) -> Message {
    get_with(addr, path, "")
}

fn get_with(addr: std::net::SocketAddr, path: &str, headers: &str) -> Message {
    // The admin listener may still be coming up beside the proxy: connecting is a readiness poll.
    let deadline = Instant::now() + WAIT;
    let mut s = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("connect {addr} for {path}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_message(&mut BufReader::new(s), false)
        .unwrap()
        .unwrap()
}

/// Waits until the admin listener accepts connections (it starts beside the proxy).
fn wait_listening(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "admin listener never opened");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Parsed samples: "name{k=v,...}" (labels sorted) → value.
fn scrape(admin: std::net::SocketAddr) -> HashMap<String, f64> {
    wait_listening(admin);
    let resp = get(admin, "/metrics");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let lines = resp
        .body_str()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    let parsed = prometheus_parse::Scrape::parse(lines.into_iter()).expect("valid exposition");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => {
                out.insert(
                    format!("{}_count{{{}}}", s.metric, labels.join(",")),
                    h.iter().map(|b| b.count).fold(0.0, f64::max),
                );
                continue;
            }
            _ => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    out
}

fn total_requests(m: &HashMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("tokengate_requests_total{"))
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes until `n` requests are counted (they are counted once their answer is sent).
fn scrape_after(admin: std::net::SocketAddr, n: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = scrape(admin);
        if total_requests(&m) >= n {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "only {} requests counted",
            total_requests(&m)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn metrics_count_exactly_what_the_gateway_saw_and_decided() {
    let up = Upstream::start(Behaviour::default());
    let admin = free_addr();
    let gw = Gateway::start(&config(
        up.addr,
        &format!(
            "{}[admin]\nlisten = \"{admin}\"\n[metrics]\nenv_ids = [\"{}\"]\n",
            token_route("to_basic"),
            ENV.split('/').nth(1).unwrap()
        ),
    ));
    for _ in 0..2 {
        assert_eq!(
            gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"))
                .status(),
            200
        );
    }
    assert_eq!(
        gw.send(&token_post(ENV, &[FORM], "client_id=a%zz"))
            .status(),
        400
    );
    assert_eq!(
        gw.send(format!("GET {ENV} HTTP/1.1\r\nHost: g\r\n\r\n").as_bytes())
            .status(),
        405
    );
    assert_eq!(
        gw.send(b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: g\r\n\r\n")
            .status(),
        200
    );

    let m = scrape_after(admin, 5.0);
    let expect = [
        ("tokengate_requests_total{action=converted,env=5a0b3c2d-1111-2222-3333-444455556666,method=client_secret_post,route=token,status_class=2xx}", 2.0),
        ("tokengate_requests_total{action=rejected,env=5a0b3c2d-1111-2222-3333-444455556666,method=-,route=token,status_class=4xx}", 2.0),
        ("tokengate_requests_total{action=passthrough,env=-,method=-,route=default,status_class=2xx}", 1.0),
        ("tokengate_local_rejections_total{error=invalid_request,route=token}", 2.0),
        ("tokengate_request_duration_seconds_count{route=token}", 4.0),
        ("tokengate_request_duration_seconds_count{route=default}", 1.0),
        ("tokengate_upstream_response_duration_seconds_count{upstream=up}", 3.0),
    ];
    for (k, v) in expect {
        assert_eq!(m.get(k), Some(&v), "{k} in {m:#?}");
    }
    assert_eq!(total_requests(&m), 5.0);
    // No secret, no client_id in any label or value.
    let text = get(admin, "/metrics").body_str();
    assert!(!text.contains("client_id=") && !text.contains("\"a\""));
}

/// A discovery answer is counted `rewritten` when it was, `passthrough` when it passed unchanged
/// (an operator's signal that the server's answer changed shape).
#[test]
fn discovery_answers_are_counted_rewritten_or_not() {
    let up = Upstream::start(Behaviour {
        respond: Some(std::sync::Arc::new(|m: &Message| {
            if m.target().starts_with("/html/") {
                response(200, &[("Content-Type", "text/html")], "<html></html>")
            } else {
                response(
                    200,
                    &[("Content-Type", "application/json")],
                    r#"{"token_endpoint":"https://idp/e/as/token"}"#,
                )
            }
        })),
        ..Default::default()
    });
    let admin = free_addr();
    let gw = Gateway::start(&config(
        up.addr,
        &format!(
            "[[routes]]\nname = \"discovery\"\npath = \"/{{env_id}}/as/.well-known/openid-configuration\"\n\
             mode = \"discovery\"\n[admin]\nlisten = \"{admin}\"\n"
        ),
    ));
    for target in ["/e/as", "/e/as", "/html/as"] {
        let req =
            format!("GET {target}/.well-known/openid-configuration HTTP/1.1\r\nHost: g\r\n\r\n");
        assert_eq!(gw.send(req.as_bytes()).status(), 200);
    }
    let m = scrape_after(admin, 3.0);
    assert_eq!(
        m.get("tokengate_requests_total{action=rewritten,env=other,method=-,route=discovery,status_class=2xx}"),
        Some(&2.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get("tokengate_requests_total{action=passthrough,env=other,method=-,route=discovery,status_class=2xx}"),
        Some(&1.0)
    );
}

#[test]
fn upstream_failures_are_counted_by_kind() {
    let refused = free_addr();
    let admin = free_addr();
    let gw = Gateway::start(&config(
        refused,
        &format!("{}[admin]\nlisten = \"{admin}\"\n", token_route("to_basic")),
    ));
    assert_eq!(
        gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"))
            .status(),
        502
    );
    let m = scrape_after(admin, 1.0);
    assert_eq!(
        m.get("tokengate_upstream_errors_total{kind=connect,upstream=up}"),
        Some(&1.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get("tokengate_local_rejections_total{error=server_error,route=token}"),
        Some(&1.0)
    );
    assert_eq!(
        m.get("tokengate_requests_total{action=converted,env=other,method=client_secret_post,route=token,status_class=5xx}"),
        Some(&1.0)
    );
}

#[test]
fn healthz_readyz_and_unknown_paths() {
    let up = Upstream::start(Behaviour::default());
    let admin = free_addr();
    let gw = Gateway::start(&config(
        up.addr,
        &format!("[admin]\nlisten = \"{admin}\"\n"),
    ));
    assert_eq!(get(admin, "/healthz").status(), 200);
    assert_eq!(get(admin, "/readyz").status(), 200);
    assert_eq!(get(admin, "/nope").status(), 404);
    drop(gw);

    // An upstream whose name does not resolve: alive, not ready.
    let admin = free_addr();
    let toml = config(
        "127.0.0.1:1".parse().unwrap(),
        &format!("[admin]\nlisten = \"{admin}\"\n"),
    )
    .replace("127.0.0.1:1", "no-such-host.invalid:80");
    let _gw = Gateway::start(&toml);
    wait_listening(admin);
    assert_eq!(get(admin, "/healthz").status(), 200);
    let ready = get(admin, "/readyz");
    assert_eq!(ready.status(), 503);
    assert!(ready.body_str().contains("up"));
}

#[test]
fn admin_token_guards_everything_but_the_probes_and_the_client_view_shows_no_secret() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("admin");
    let hash = tokengate::clients::secret::hash_sha256(b"s");
    let env = ENV.split('/').nth(1).unwrap();
    std::fs::write(
        dir.join("clients.toml"),
        format!(
            "[[clients]]\nenv_id = \"{env}\"\nclient_id = \"web:app\"\nsecret = \"{hash}\"\n\
             auth_methods = [\"CLIENT_SECRET_POST\"]\nupstream_method = \"client_secret_basic\"\n"
        ),
    )
    .unwrap();
    let admin = free_addr();
    let token = "0123456789abcdef-admin-token";
    let gw = Gateway::start(&config(
        up.addr,
        &format!(
            "{}[clients]\nfile = \"{}\"\n[admin]\nlisten = \"{admin}\"\nbearer_token = \"{token}\"\n",
            token_route("validate"),
            dir.join("clients.toml").display()
        ),
    ));
    wait_listening(admin);
    let auth = format!("Authorization: Bearer {token}\r\n");
    // Load balancers and Kubernetes probe without a token.
    assert_eq!(get(admin, "/healthz").status(), 200);
    assert_eq!(get(admin, "/readyz").status(), 200);
    for path in ["/metrics", &format!("/clients/{env}/web%3Aapp")] {
        let denied = get(admin, path);
        assert_eq!(denied.status(), 401, "{path}");
        assert!(denied
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
        let wrong = get_with(
            admin,
            path,
            "Authorization: Bearer 0123456789abcdef-wrong\r\n",
        );
        assert_eq!(wrong.status(), 401, "{path}");
        assert_eq!(get_with(admin, path, &auth).status(), 200, "{path}");
    }
    let view = get_with(admin, &format!("/clients/{env}/web%3Aapp"), &auth);
    let v = view.json();
    assert_eq!(v["client_id"], "web:app");
    assert_eq!(v["auth_methods"], serde_json::json!(["client_secret_post"]));
    assert_eq!(v["upstream_method"], "client_secret_basic");
    assert_eq!(v["secret_kind"], "sha256");
    let salt = hash.split(':').nth(1).unwrap();
    assert!(!view.body_str().contains(salt) && !view.body_str().contains("sha256:"));
    assert_eq!(
        get_with(admin, &format!("/clients/{env}/nobody"), &auth).status(),
        404
    );
    let m = get_with(admin, "/metrics", &auth).body_str();
    assert!(m.contains("tokengate_client_records 1"), "{m}");
    assert!(m.contains("tokengate_client_file_generation 1"));
    drop(gw);
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("conf/grafana/tokengate-dashboard.json"),
        )
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("tokengate_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name)
                    .to_string();
                names.insert(base);
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");

    // A gateway with every kind of metric: a validating route on a registry, and traffic.
    let up = Upstream::start(Behaviour::default());
    let admin = free_addr();
    let registry = free_addr();
    let gw = Gateway::start(&config(
        up.addr,
        &format!(
            "{}[clients]\nregistry_url = \"http://{registry}/r\"\nallow_insecure_registry = true\n[admin]\nlisten = \"{admin}\"\n",
            token_route("validate")
        ),
    ));
    gw.send(&token_post(ENV, &[FORM], "client_id=a&client_secret=b"));
    gw.send(b"GET /x HTTP/1.1\r\nHost: g\r\n\r\n");
    scrape_after(admin, 2.0);
    let text = get(admin, "/metrics").body_str();
    for name in &names {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which is not exported"
        );
    }
}

/// A request head that does not parse is logged by what went wrong, never by its content: the
/// admin's bearer token and a client's Basic credentials stay out of every log line (Pingora's
/// own HTTP server would log the raw head at error level).
#[test]
fn malformed_requests_leave_no_credentials_in_the_logs() {
    use std::io::{BufReader, Read};
    let up = Upstream::start(Behaviour::default());
    let admin = free_addr();
    let token = "Very-Secret-Admin-Token-4711";
    let gw = Gateway::start(&config(
        up.addr,
        &format!(
            "{}[admin]\nlisten = \"{admin}\"\nbearer_token = \"{token}\"\n",
            token_route("to_basic")
        ),
    ));
    wait_listening(admin);
    let basic = basic("web:Hunter2-Client-Secret");
    let malformed = |addr: std::net::SocketAddr, auth: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: {auth}\r\nBroken header line\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = BufReader::new(s).read_to_end(&mut out);
    };
    malformed(admin, &format!("Bearer {token}"));
    malformed(gw.addr, &basic);
    // A well-formed request afterwards: the listeners still answer, and the logs are flushed up to
    // here.
    assert_eq!(get_with(admin, "/healthz", "").status(), 200);
    let logs = logs();
    assert!(
        logs.contains("admin: unreadable request"),
        "the admin logged the failure"
    );
    for secret in [
        token,
        "Hunter2-Client-Secret",
        basic.trim_start_matches("Basic "),
    ] {
        assert!(!logs.contains(secret), "a log line holds {secret}");
    }
}
