//! End-to-end: discovery metadata rewrite (OpenID Connect Discovery and RFC 8414) through the
//! real gateway, in front of a recording upstream that serves a PingOne-like document.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufReader;
use std::sync::Arc;

use common::*;

const ENV_ID: &str = "5a0b3c2d-1111-2222-3333-444455556666";

fn metadata() -> String {
    format!(
        r#"{{"issuer":"https://auth.pingone.com/{ENV_ID}/as",
 "authorization_endpoint":"https://auth.pingone.com/{ENV_ID}/as/authorize",
 "token_endpoint":"https://auth.pingone.com/{ENV_ID}/as/token",
 "introspection_endpoint":"https://auth.pingone.com/{ENV_ID}/as/introspect",
 "revocation_endpoint":"https://auth.pingone.com/{ENV_ID}/as/revoke",
 "pushed_authorization_request_endpoint":"https://auth.pingone.com/{ENV_ID}/as/par",
 "device_authorization_endpoint":"https://auth.pingone.com/{ENV_ID}/as/device_authorization",
 "jwks_uri":"https://auth.pingone.com/{ENV_ID}/as/jwks",
 "token_endpoint_auth_methods_supported":["client_secret_basic"],
 "claims_supported":["sub","name"],
 "x_odd":1.50}}"#
    )
}

const OIDC: &str = "/.well-known/openid-configuration";

/// An upstream that serves the metadata (in two chunks) on GET, and the given answers elsewhere.
fn idp() -> Upstream {
    Upstream::start(Behaviour {
        respond: Some(Arc::new(|m: &Message| {
            let t = m.target();
            if t.ends_with("/missing/as/.well-known/openid-configuration") {
                return response(
                    404,
                    &[("Content-Type", "application/json")],
                    r#"{"error":"not found"}"#,
                );
            }
            if t.starts_with("/gzip/") {
                return response(
                    200,
                    &[
                        ("Content-Type", "application/json"),
                        ("Content-Encoding", "gzip"),
                    ],
                    "\u{1f}\u{8b}not-really-gzip",
                );
            }
            if t.starts_with("/length/") {
                return response(200, &[("Content-Type", "application/json")], &metadata());
            }
            if t.starts_with("/html/") {
                return response(200, &[("Content-Type", "text/html")], "<html>{}</html>");
            }
            let doc = metadata();
            let (a, b) = doc.split_at(doc.len() / 2);
            let mut out = "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\n\
                           Cache-Control: max-age=300\r\nETag: \"v1\"\r\n\
                           Transfer-Encoding: chunked\r\n\r\n"
                .to_string();
            if m.start.starts_with("HEAD ") {
                return out.into_bytes();
            }
            for part in [a, b] {
                out.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
            }
            out.push_str("0\r\n\r\n");
            out.into_bytes()
        })),
        ..Default::default()
    })
}

fn gateway(up: &Upstream, keys: &str) -> Gateway {
    let routes = format!(
        "[[routes]]\nname = \"oidc\"\npath = \"/{{env_id}}/as/.well-known/openid-configuration\"\n\
         mode = \"discovery\"\n{keys}\n\
         [[routes]]\nname = \"rfc8414\"\npath = \"/.well-known/oauth-authorization-server/{{env_id}}/as\"\n\
         mode = \"discovery\"\n{keys}\n"
    );
    Gateway::start(&config(up.addr, &routes))
}

fn get(gw: &Gateway, target: &str, extra: &str) -> Message {
    gw.send(format!("GET {target} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n").as_bytes())
}

#[test]
fn metadata_advertises_the_gateways_methods_and_urls_and_keeps_the_rest() {
    let up = idp();
    let gw = gateway(&up, "public_base_url = \"https://gw.example.com\"");
    let resp = get(
        &gw,
        &format!("/{ENV_ID}/as{OIDC}"),
        "Accept-Encoding: gzip, br\r\n",
    );
    assert_eq!(resp.status(), 200, "{resp:?}");
    // Asked uncompressed, so that it can be rewritten.
    assert_eq!(up.only().header("accept-encoding"), None);
    let m = resp.json();
    let base = format!("https://gw.example.com/{ENV_ID}/as");
    for (key, suffix) in [
        ("token_endpoint", "token"),
        ("introspection_endpoint", "introspect"),
        ("revocation_endpoint", "revoke"),
        ("pushed_authorization_request_endpoint", "par"),
        ("device_authorization_endpoint", "device_authorization"),
    ] {
        assert_eq!(m[key], format!("{base}/{suffix}"), "{key}");
    }
    // The issuer, the browser's endpoint and the keys stay the authorization server's.
    assert_eq!(m["issuer"], format!("https://auth.pingone.com/{ENV_ID}/as"));
    assert_eq!(
        m["authorization_endpoint"],
        format!("https://auth.pingone.com/{ENV_ID}/as/authorize")
    );
    assert_eq!(
        m["jwks_uri"],
        format!("https://auth.pingone.com/{ENV_ID}/as/jwks")
    );
    let both = serde_json::json!(["client_secret_basic", "client_secret_post"]);
    assert_eq!(m["token_endpoint_auth_methods_supported"], both);
    assert_eq!(m["introspection_endpoint_auth_methods_supported"], both);
    assert_eq!(m["revocation_endpoint_auth_methods_supported"], both);
    assert_eq!(m["claims_supported"], serde_json::json!(["sub", "name"]));
    assert!(resp.body_str().contains(r#""x_odd":1.50"#));
    // The new length goes out chunked; the validator is weakened; caching stays.
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.header("etag").as_deref(), Some("W/\"v1\""));
    assert_eq!(resp.header("cache-control").as_deref(), Some("max-age=300"));
}

#[test]
fn rfc8414_path_insertion_and_configured_methods() {
    let up = idp();
    let gw = gateway(&up, "auth_methods = [\"CLIENT_SECRET_POST\"]");
    let resp = get(
        &gw,
        &format!("/.well-known/oauth-authorization-server/{ENV_ID}/as"),
        "",
    );
    assert_eq!(resp.status(), 200);
    let m = resp.json();
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_post"])
    );
    // No public_base_url: the URLs stay.
    assert_eq!(
        m["token_endpoint"],
        format!("https://auth.pingone.com/{ENV_ID}/as/token")
    );
}

#[test]
fn errors_head_compressed_and_non_json_answers_pass_unchanged() {
    let up = idp();
    let gw = gateway(&up, "public_base_url = \"https://gw.example.com\"");
    let resp = get(&gw, &format!("/missing/as{OIDC}"), "");
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.body_str(), r#"{"error":"not found"}"#);
    assert_eq!(resp.header("content-length").as_deref(), Some("21"));

    for target in [format!("/gzip/as{OIDC}"), format!("/html/as{OIDC}")] {
        let resp = get(&gw, &target, "");
        assert_eq!(resp.status(), 200);
        let expected = if target.starts_with("/gzip/") {
            "\u{1f}\u{8b}not-really-gzip"
        } else {
            "<html>{}</html>"
        };
        assert_eq!(resp.body_str(), expected, "{target}");
        assert!(resp.header("content-length").is_some(), "{target}");
    }

    // An HTTP/1.0 client cannot take the chunked body a rewrite needs: it gets the original.
    let resp = gw.send(format!("GET /length/as{OIDC} HTTP/1.0\r\nHost: gw\r\n\r\n").as_bytes());
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(
        resp.header("content-length"),
        Some(metadata().len().to_string())
    );
    assert_eq!(
        resp.json(),
        serde_json::from_str::<serde_json::Value>(&metadata()).unwrap()
    );

    let mut s = gw.connect();
    std::io::Write::write_all(
        &mut s,
        format!("HEAD /{ENV_ID}/as{OIDC} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let resp = read_message(&mut BufReader::new(s), true).unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("etag").as_deref(), Some("\"v1\""));
}
