//! End-to-end: every client-authenticated endpoint (token, RFC 7662 introspection, RFC 7009
//! revocation, RFC 9126 PAR, RFC 8628 device authorization) gets the same conversion, checks and
//! validation. Each test runs every case of ../shared/interop.md against all five endpoints, with
//! the real gateway in front of a recording upstream.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufReader, Write};
use std::sync::Arc;

use common::*;
use tokengate::clients::secret::hash_sha256;

const ENV_ID: &str = "5a0b3c2d-1111-2222-3333-444455556666";

/// Each endpoint: the path under the envID, its configuration name, and a body of its own
/// parameters (no credentials), with escapes and repeated parameters that must pass untouched.
const ENDPOINTS: [(&str, &str, &str); 5] = [
    (
        "token",
        "token",
        "grant_type=authorization_code&code=a%2Bb%7E\
         &redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback&resource=r1&resource=r2",
    ),
    (
        "introspect",
        "introspection",
        "token=at%2B123%2F%3D&token_type_hint=access_token",
    ),
    (
        "revoke",
        "revocation",
        "token=rt-%C3%A9&token_type_hint=refresh_token",
    ),
    (
        "par",
        "par",
        "response_type=code&redirect_uri=https%3A%2F%2Fapp%2Fcb&scope=openid+profile\
         &code_challenge=E9Mel&code_challenge_method=S256&resource=r1&resource=r2&state=s%26t",
    ),
    (
        "device_authorization",
        "device_authorization",
        "scope=openid+offline_access",
    ),
];

fn path(suffix: &str) -> String {
    format!("/{ENV_ID}/as/{suffix}")
}

/// One route per endpoint, all in `mode`, plus `extra` route keys.
fn routes(mode: &str, extra: &str) -> String {
    ENDPOINTS
        .iter()
        .map(|(suffix, endpoint, _)| {
            format!(
                "[[routes]]\nname = \"{endpoint}\"\npath = \"/{{env_id}}/as/{suffix}\"\n\
                 mode = \"{mode}\"\nendpoint = \"{endpoint}\"\n{extra}\n"
            )
        })
        .collect()
}

fn gateway(up: &Upstream, mode: &str) -> Gateway {
    Gateway::start(&config(up.addr, &routes(mode, "")))
}

/// `params` with `creds` inserted after its first parameter, so that order is tested too.
fn with_credentials(params: &str, creds: &str) -> String {
    match params.split_once('&') {
        Some((first, rest)) => format!("{first}&{creds}&{rest}"),
        None => format!("{params}&{creds}"),
    }
}

/// What the upstream gets once credentials sent in the body (after `params`' first parameter)
/// moved to Basic: `params`, but for PAR, whose client_id is an authorization request parameter
/// too (RFC 9126 §2.1) and stays.
fn after_to_basic(suffix: &str, params: &str, client_id: &str) -> String {
    match suffix {
        "par" => with_credentials(params, &format!("client_id={client_id}")),
        _ => params.to_string(),
    }
}

// The secret is ": + % & = / space é %41"; the client_id has a colon.
const ID_FORM: &str = "my%3Aapp";
const SECRET_FORM: &str = "%3A+%2B+%25+%26+%3D+%2F+%C3%A9+%2541";

#[test]
fn post_becomes_rfc6749_basic_on_every_endpoint() {
    let up = Upstream::start(Behaviour {
        basic_only: true,
        ..Default::default()
    });
    let gw = gateway(&up, "to_basic");
    for (i, (suffix, _, params)) in ENDPOINTS.iter().enumerate() {
        let body = with_credentials(
            params,
            &format!("client_id={ID_FORM}&client_secret={SECRET_FORM}"),
        );
        let resp = gw.send(&token_post(&path(suffix), &[FORM], &body));
        assert_eq!(resp.status(), 200, "{suffix}: {resp:?}");
        let got = &up.wait_for(i + 1)[i];
        assert_eq!(got.start, format!("POST {} HTTP/1.1", path(suffix)));
        assert_eq!(
            got.header("authorization").unwrap(),
            basic(&format!("{ID_FORM}:{SECRET_FORM}")),
            "{suffix}"
        );
        let expected = after_to_basic(suffix, params, ID_FORM);
        assert_eq!(got.body_str(), expected, "{suffix}");
        assert_eq!(
            got.header("content-length").unwrap(),
            expected.len().to_string()
        );
    }
}

#[test]
fn basic_becomes_post_on_every_endpoint() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_post");
    let auth = basic(&format!("{ID_FORM}:{SECRET_FORM}"));
    for (i, (suffix, _, params)) in ENDPOINTS.iter().enumerate() {
        let resp = gw.send(&token_post(
            &path(suffix),
            &[FORM, ("Authorization", &auth)],
            params,
        ));
        assert_eq!(resp.status(), 200, "{suffix}: {resp:?}");
        let got = &up.wait_for(i + 1)[i];
        assert_eq!(got.header("authorization"), None, "{suffix}");
        assert_eq!(
            got.body_str(),
            format!("{params}&client_id={ID_FORM}&client_secret={SECRET_FORM}"),
            "{suffix}"
        );
    }
}

#[test]
fn raw_upstream_gets_the_plain_credentials_on_every_endpoint() {
    let up = Upstream::start(Behaviour::default());
    let toml = config(up.addr, &routes("to_basic", "")).replace(
        "[upstreams.up]\n",
        "[upstreams.up]\nbasic_encoding = \"raw\"\n",
    );
    let gw = Gateway::start(&toml);
    for (i, (suffix, _, params)) in ENDPOINTS.iter().enumerate() {
        let body = with_credentials(
            params,
            &format!("client_id=app&client_secret={SECRET_FORM}"),
        );
        let resp = gw.send(&token_post(&path(suffix), &[FORM], &body));
        assert_eq!(resp.status(), 200, "{suffix}: {resp:?}");
        let got = &up.wait_for(i + 1)[i];
        assert_eq!(
            got.header("authorization").unwrap(),
            basic("app:: + % & = / é %41"),
            "{suffix}"
        );
    }
}

#[test]
fn public_clients_missing_and_empty_secrets_on_every_endpoint() {
    let up = Upstream::start(Behaviour::default());
    for (mode, empty_secret_forwarded) in [
        ("to_basic", None),
        ("to_post", Some("client_id=app&client_secret=")),
    ] {
        let gw = gateway(&up, mode);
        for (suffix, _, params) in ENDPOINTS {
            let before = up.received().len();
            // Public client (`none`): client_id only, forwarded as sent.
            let public = with_credentials(params, "client_id=spa");
            assert_eq!(
                gw.send(&token_post(&path(suffix), &[FORM], &public))
                    .status(),
                200
            );
            let got = up.wait_for(before + 1)[before].clone();
            assert_eq!(
                (got.body_str(), got.header("authorization")),
                (public, None)
            );
            // An empty secret is a secret: Basic with an empty password, or an empty field.
            let resp = match mode {
                "to_basic" => gw.send(&token_post(
                    &path(suffix),
                    &[FORM],
                    &with_credentials(params, "client_id=app&client_secret="),
                )),
                _ => gw.send(&token_post(
                    &path(suffix),
                    &[FORM, ("Authorization", &basic("app:"))],
                    params,
                )),
            };
            assert_eq!(resp.status(), 200, "{mode} {suffix}: {resp:?}");
            let got = up.wait_for(before + 2)[before + 1].clone();
            match empty_secret_forwarded {
                None => {
                    assert_eq!(got.header("authorization").unwrap(), basic("app:"));
                    assert_eq!(got.body_str(), after_to_basic(suffix, params, "app"));
                }
                Some(creds) => assert_eq!(got.body_str(), format!("{params}&{creds}")),
            }
        }
    }
}

/// Request target, headers, body; expected status and error code.
type Case<'a> = (String, Vec<(&'a str, &'a str)>, String, u16, &'a str);

#[test]
fn ambiguous_and_malformed_credentials_are_refused_locally_on_every_endpoint() {
    let up = Upstream::start(Behaviour::default());
    let (a, b) = (basic("app:s"), basic("other:t"));
    let lower = basic("app:s").replacen("Basic", "basic", 1);
    let no_colon = basic("app-without-colon");
    for mode in ["to_basic", "to_post"] {
        let gw = gateway(&up, mode);
        for (suffix, _, params) in ENDPOINTS {
            let p = path(suffix);
            #[rustfmt::skip]
            let cases: Vec<Case> = vec![
                // §2.3: Basic and a body secret together; two Authorization headers.
                (p.clone(), vec![FORM, ("Authorization", &a)], with_credentials(params, "client_secret=s"), 400, "invalid_request"),
                (p.clone(), vec![FORM, ("Authorization", &lower)], with_credentials(params, "client_id=app&client_secret=s"), 400, "invalid_request"),
                (p.clone(), vec![FORM, ("Authorization", &a), ("Authorization", &b)], params.to_string(), 400, "invalid_request"),
                // §3.1: a credential parameter twice.
                (p.clone(), vec![FORM], with_credentials(params, "client_id=app&client_id=app&client_secret=s"), 400, "invalid_request"),
                (p.clone(), vec![FORM], with_credentials(params, "client_id=app&client%5Fid=x&client_secret=s"), 400, "invalid_request"),
                // Body client_id other than the Basic user.
                (p.clone(), vec![FORM, ("Authorization", &a)], with_credentials(params, "client_id=other"), 400, "invalid_request"),
                // Credentials in the query string.
                (format!("{p}?client_id=app&client_secret=Qu3ry"), vec![FORM], params.to_string(), 400, "invalid_request"),
                // Malformed Basic; malformed escapes; an empty client_id.
                (p.clone(), vec![FORM, ("Authorization", "Basic ***")], params.to_string(), 401, "invalid_client"),
                (p.clone(), vec![FORM, ("Authorization", &no_colon)], params.to_string(), 401, "invalid_client"),
                (p.clone(), vec![FORM], with_credentials(params, "client_id=app&client_secret=%zz"), 400, "invalid_request"),
                (p.clone(), vec![FORM], format!("{params}&x=%4"), 400, "invalid_request"),
                (p.clone(), vec![FORM], with_credentials(params, "client_id=&client_secret=s"), 400, "invalid_request"),
                // Not a form.
                (p.clone(), vec![("Content-Type", "application/json")], "{}".into(), 400, "invalid_request"),
            ];
            for (target, headers, body, status, code) in cases {
                let resp = gw.send(&token_post(&target, &headers, &body));
                assert_oauth_error(&resp, status, code);
                if status == 401 {
                    assert_eq!(
                        resp.header("www-authenticate").as_deref(),
                        Some("Basic realm=\"tokengate\""),
                        "{mode} {suffix}"
                    );
                }
            }
            // Not a POST.
            let resp = gw.send(format!("GET {p} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
            assert_oauth_error(&resp, 405, "invalid_request");
            assert_eq!(resp.header("allow").as_deref(), Some("POST"));
        }
    }
    assert!(up.received().is_empty(), "{:?}", up.received());
}

#[test]
fn oversized_and_truncated_bodies_on_every_endpoint() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic");
    for (suffix, _, params) in ENDPOINTS {
        let big = format!("{params}&request={}", "x".repeat(20_000));
        let resp = gw.send(&token_post(&path(suffix), &[FORM], &big));
        assert_oauth_error(&resp, 413, "invalid_request");

        let mut s = gw.connect();
        write!(
            s,
            "POST {} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 500\r\n\r\n{params}&client_id=app&client_secret=s",
            path(suffix)
        )
        .unwrap();
        half_close(&s);
        let resp = read_message(&mut BufReader::new(s), false)
            .unwrap()
            .unwrap();
        assert_oauth_error(&resp, 400, "invalid_request");
    }
    assert!(up.received().is_empty());
}

/// Each endpoint's own answers reach the client unchanged: revocation's 200 for an unknown
/// token, introspection's `active: false`, PAR's 201, errors of the upstream's own.
#[test]
fn each_endpoints_own_answers_are_relayed_unchanged() {
    let answers: Arc<Vec<(String, Vec<u8>)>> = Arc::new(vec![
        (
            path("token"),
            response(
                400,
                &[
                    ("Content-Type", "application/json"),
                    ("Cache-Control", "no-store"),
                ],
                r#"{"error":"invalid_grant"}"#,
            ),
        ),
        (
            path("introspect"),
            response(
                200,
                &[("Content-Type", "application/json")],
                r#"{"active":false}"#,
            ),
        ),
        (path("revoke"), response(200, &[], "")),
        (
            path("par"),
            response(
                201,
                &[("Content-Type", "application/json")],
                r#"{"request_uri":"urn:ietf:params:oauth:request_uri:x","expires_in":60}"#,
            ),
        ),
        (
            path("device_authorization"),
            response(
                401,
                &[
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", "Basic realm=\"idp\""),
                ],
                r#"{"error":"invalid_client","error_description":"upstream says no"}"#,
            ),
        ),
    ]);
    let table = answers.clone();
    let up = Upstream::start(Behaviour {
        respond: Some(Arc::new(move |m: &Message| {
            let target = m.target().to_string();
            table
                .iter()
                .find(|(p, _)| *p == target)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| response(500, &[], "unexpected"))
        })),
        ..Default::default()
    });
    let gw = gateway(&up, "to_basic");
    for (suffix, _, params) in ENDPOINTS {
        let body = with_credentials(params, "client_id=app&client_secret=s");
        let resp = gw.send(&token_post(&path(suffix), &[FORM], &body));
        let (_, raw) = answers.iter().find(|(p, _)| *p == path(suffix)).unwrap();
        let expected = read_message(&mut BufReader::new(&raw[..]), false)
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), expected.status(), "{suffix}");
        assert_eq!(resp.body, expected.body, "{suffix}");
        for h in ["content-type", "www-authenticate", "cache-control"] {
            assert_eq!(resp.header(h), expected.header(h), "{suffix} {h}");
        }
    }
}

/// Validation on every endpoint: the same client checks everywhere; the grant type checked is
/// the one the endpoint's call belongs to.
#[test]
fn validation_checks_the_grant_each_endpoint_belongs_to() {
    let up = Upstream::start(Behaviour::default());
    let dir = TempDir::new("endpoints");
    let clients = dir.join("clients.toml");
    let record = |id: &str, secret: &str, grants: &str| {
        format!(
            "[[clients]]\nenv_id = \"{ENV_ID}\"\nclient_id = \"{id}\"\nsecret = \"{}\"\n\
             auth_methods = [\"client_secret_post\", \"client_secret_basic\"]\n\
             upstream_method = \"client_secret_basic\"\ngrant_types = {grants}\n",
            hash_sha256(secret.as_bytes())
        )
    };
    std::fs::write(
        &clients,
        [
            record("m2m", "m2m: +%&=/ %41", "[\"client_credentials\"]"),
            record(
                "web",
                "web-secret",
                "[\"authorization_code\", \"refresh_token\", \
                 \"urn:ietf:params:oauth:grant-type:device_code\"]",
            ),
        ]
        .concat(),
    )
    .unwrap();
    let extra = format!(
        "{}[clients]\nfile = \"{}\"\n[lockout]\nmax_failures_per_client = 0\nmax_failures_per_ip = 0\n",
        routes("validate", ""),
        clients.display()
    );
    let gw = Gateway::start(&config(up.addr, &extra));

    let m2m = "client_id=m2m&client_secret=m2m%3A+%2B%25%26%3D%2F+%2541";
    let web = "client_id=web&client_secret=web-secret";
    let token_cc = "grant_type=client_credentials";
    #[rustfmt::skip]
    let cases: [(&str, &str, &str, u16); 12] = [
        ("token", token_cc, m2m, 200),
        ("token", "grant_type=authorization_code&code=c", m2m, 400),
        ("token", "grant_type=authorization_code&code=c", web, 200),
        ("token", token_cc, web, 400),
        // Introspection and revocation involve no grant type: any authenticated client.
        ("introspect", "token=t", m2m, 200),
        ("revoke", "token=t", m2m, 200),
        ("introspect", "token=t", web, 200),
        // PAR belongs to the authorization code flow, device authorization to the device flow;
        // a grant_type parameter sent along does not change that.
        ("par", "response_type=code&grant_type=client_credentials", m2m, 400),
        ("par", "response_type=code", web, 200),
        ("device_authorization", "scope=openid", m2m, 400),
        ("device_authorization", "scope=openid", web, 200),
        ("revoke", "token=t", "client_id=web&client_secret=wrong", 401),
    ];
    let mut forwarded = 0;
    for (suffix, params, creds, status) in cases {
        let resp = gw.send(&token_post(
            &path(suffix),
            &[FORM],
            &format!("{params}&{creds}"),
        ));
        match status {
            200 => {
                assert_eq!(resp.status(), 200, "{suffix} {params} {creds}: {resp:?}");
                forwarded += 1;
                let got = &up.wait_for(forwarded)[forwarded - 1];
                assert_eq!(got.target(), path(suffix));
                assert!(got.header("authorization").unwrap().starts_with("Basic "));
                let id = creds[10..].split('&').next().unwrap();
                assert_eq!(got.body_str(), after_to_basic(suffix, params, id));
            }
            400 => assert_oauth_error(&resp, 400, "unauthorized_client"),
            _ => assert_oauth_error(&resp, 401, "invalid_client"),
        }
    }
    assert_eq!(up.received().len(), forwarded);
}

/// Other spellings of an endpoint's path (that servers normalize to it) get the endpoint's
/// handling; the path is forwarded as the client sent it.
#[test]
fn other_spellings_of_an_endpoint_path_are_not_a_way_around_it() {
    let up = Upstream::start(Behaviour::default());
    let gw = gateway(&up, "to_basic");
    let spellings = [
        format!("/{ENV_ID}/as/introspect/"),
        format!("/{ENV_ID}//as/introspect"),
        format!("/{ENV_ID}/as/./introspect"),
        format!("/{ENV_ID}/x/../as/introspect"),
        format!("/{ENV_ID}/as/%69ntrospect"),
    ];
    for (i, p) in spellings.iter().enumerate() {
        // Refused like on the plain path...
        let resp = gw.send(&token_post(
            p,
            &[FORM, ("Authorization", &basic("app:s"))],
            "token=t&client_secret=s",
        ));
        assert_oauth_error(&resp, 400, "invalid_request");
        // ...and converted like on it.
        let resp = gw.send(&token_post(
            p,
            &[FORM],
            "token=t&client_id=app&client_secret=s",
        ));
        assert_eq!(resp.status(), 200, "{p}");
        let got = &up.wait_for(i + 1)[i];
        assert_eq!(got.target(), p);
        assert_eq!(got.header("authorization").unwrap(), basic("app:s"));
        assert_eq!(got.body_str(), "token=t");
    }
}

/// What real clients send besides the credentials — `Expect: 100-continue`, a chunked body, a
/// charset on the content type, mixed-case header names — works on every endpoint; a body that
/// stalls gets 408 on every endpoint.
#[test]
fn client_quirks_and_stalled_bodies_on_every_endpoint() {
    let up = Upstream::start(Behaviour::default());
    let with_body_timeout = |t: &str| {
        config(up.addr, &routes("to_basic", "")) + &format!("[token]\nbody_timeout = \"{t}\"\n")
    };
    // The body follows the 100 only after the test has read it: a long body timeout, so that a
    // loaded machine cannot turn a late body into a 408.
    let gw = Gateway::start(&with_body_timeout("30s"));
    for (i, (suffix, _, params)) in ENDPOINTS.iter().enumerate() {
        let body = with_credentials(params, "client_id=app&client_secret=s");
        let (a, b) = body.split_at(body.len() / 2);
        let mut s = gw.connect();
        write!(
            s,
            "POST {} HTTP/1.1\r\nhost: gw\r\ncontent-TYPE: Application/x-www-form-urlencoded; charset=UTF-8\r\n\
             EXPECT: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
            path(suffix)
        )
        .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let interim = read_message(&mut r, false).unwrap().unwrap();
        assert_eq!(interim.status(), 100, "{suffix}");
        write!(
            s,
            "{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .unwrap();
        let resp = read_message(&mut r, false).unwrap().unwrap();
        assert_eq!(resp.status(), 200, "{suffix}: {resp:?}");
        let got = &up.wait_for(i + 1)[i];
        assert_eq!(got.header("authorization").unwrap(), basic("app:s"));
        assert_eq!(got.body_str(), after_to_basic(suffix, params, "app"));
        assert_eq!(got.header("transfer-encoding"), None);
    }
    let gw = Gateway::start(&with_body_timeout("300ms"));
    for (suffix, _, params) in ENDPOINTS {
        let mut s = gw.connect();
        write!(
            s,
            "POST {} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 500\r\n\r\n{params}",
            path(suffix)
        )
        .unwrap();
        let resp = read_message(&mut BufReader::new(s), false)
            .unwrap()
            .unwrap();
        assert_oauth_error(&resp, 408, "invalid_request");
    }
    assert_eq!(up.received().len(), ENDPOINTS.len());
}
