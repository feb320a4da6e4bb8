//! End-to-end: per-client upstream authentication. Records decide each client's upstream method
//! without the gateway holding secrets (`mode = "per_client"`), and secret clients are upgraded to
//! `client_secret_jwt` or `private_key_jwt` (RFC 7523) on every endpoint. The recording upstream
//! checks what an authorization server would: the assertion's signature (with the client's secret,
//! or with the key the gateway publishes at its JWKS route) and its claims.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use tokengate::clients::secret::hash_sha256;

const ENV_ID: &str = "5a0b3c2d-1111-2222-3333-444455556666";
/// A secret with every character RFC 6749 §2.3.1's form-encoding changes, and a non-ASCII one.
const SECRET: &str = "s3c:r+t%&=/é ~";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn path(endpoint: &str) -> String {
    format!("/{ENV_ID}/as/{endpoint}")
}

/// `application/x-www-form-urlencoded` of pairs.
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// RFC 6749 §2.3.1: form-encode, join, base64.
fn basic_6749(id: &str, secret: &str) -> String {
    let enc = |s: &str| form(&[("x", s)])[2..].to_string();
    basic(&format!("{}:{}", enc(id), enc(secret)))
}

/// The form parameters a message's body carries, in order.
fn params(m: &Message) -> Vec<(String, String)> {
    form_urlencoded::parse(&m.body).into_owned().collect()
}

fn param(m: &Message, name: &str) -> Option<String> {
    let all: Vec<String> = params(m)
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect();
    assert!(all.len() <= 1, "{name} repeated: {m:?}");
    all.into_iter().next()
}

/// Asserts that nothing the upstream received holds the secret, in any spelling a client or a
/// converter could have given it.
fn assert_no_secret(m: &Message, secret: &str) {
    let raw = format!("{m:?}");
    let spellings = [
        secret.to_string(),
        form(&[("x", secret)])[2..].to_string(),
        basic_6749("x", secret)[6..].to_string(),
    ];
    for s in spellings {
        assert!(
            !raw.contains(&s),
            "the upstream received the secret ({s}): {m:?}"
        );
    }
    assert!(param(m, "client_secret").is_none(), "{m:?}");
    assert!(m.header("authorization").is_none(), "{m:?}");
}

/// Checks an assertion as a server would: signature, `iss` = `sub` = client_id, `aud`, a fresh
/// `iat`, `exp` = `iat` + 60 s, a `jti`. Returns the claims.
fn verify(
    jwt: &str,
    key: &DecodingKey,
    alg: Algorithm,
    client_id: &str,
    aud: &str,
) -> serde_json::Value {
    let mut v = Validation::new(alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[client_id]);
    v.sub = Some(client_id.to_string());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims = decode::<serde_json::Value>(jwt, key, &v)
        .unwrap_or_else(|e| panic!("assertion refused ({e}): {jwt}"))
        .claims;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now) <= 10, "{claims}");
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 60, "{claims}");
    assert!(
        claims["jti"].as_str().is_some_and(|j| j.len() >= 16),
        "{claims}"
    );
    claims
}

fn record(client_id: &str, secret: Option<&str>, methods: &str, extra: &str) -> String {
    let secret = secret
        .map(|s| format!("secret = \"{}\"\n", hash_sha256(s.as_bytes())))
        .unwrap_or_default();
    format!(
        "[[clients]]\nenv_id = \"{ENV_ID}\"\nclient_id = \"{client_id}\"\n{secret}\
         auth_methods = {methods}\n{extra}\n"
    )
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

/// A new ES256 key, readable by its owner only.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let p = write_file(dir, name, &pem);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn per_client_route(name: &str, endpoint: &str, extra: &str) -> String {
    let kind = match endpoint {
        "token" => "token",
        "introspect" => "introspection",
        "revoke" => "revocation",
        "par" => "par",
        _ => "device_authorization",
    };
    format!(
        "[[routes]]\nname = \"{name}\"\npath = \"/{{env_id}}/as/{endpoint}\"\nmode = \"per_client\"\n\
         endpoint = \"{kind}\"\n{extra}\n"
    )
}

const POST_ONLY: &str = "post-only";
const BASIC_ONLY: &str = "basic-only";
const HS: &str = "hs-client";

/// Records without a single secret: a post-only client, a Basic-only client, a client the
/// server authenticates with `client_secret_jwt`.
fn secretless_clients() -> String {
    [
        record(
            POST_ONLY,
            None,
            "[\"client_secret_basic\", \"client_secret_post\"]",
            "upstream_method = \"CLIENT_SECRET_POST\"",
        ),
        record(
            BASIC_ONLY,
            None,
            "[\"client_secret_basic\", \"client_secret_post\"]",
            "upstream_method = \"client_secret_basic\"",
        ),
        record(
            HS,
            None,
            "[\"client_secret_basic\", \"client_secret_post\"]",
            "upstream_method = \"client_secret_jwt\"",
        ),
    ]
    .concat()
}

#[test]
fn per_client_routes_convert_each_client_to_its_servers_method_without_any_secret() {
    let dir = TempDir::new("per-client");
    let clients = write_file(&dir, "clients.toml", &secretless_clients());
    let up = Upstream::start(Behaviour::default());
    let extra = format!(
        "{}[clients]\nfile = \"{}\"\n",
        per_client_route(
            "token",
            "token",
            "fallback = \"as_sent\"\nassertion_audience = \"https://auth.pingone.com/{env_id}/as\""
        ),
        clients.display()
    );
    let gw = Gateway::start(&config(up.addr, &extra));
    let token = path("token");

    // A post-only client that sends Basic: its server gets the secret in the body.
    let r = gw.send(&token_post(
        &token,
        &[FORM, ("Authorization", &basic_6749(POST_ONLY, SECRET))],
        "grant_type=client_credentials",
    ));
    assert_eq!(r.status(), 200, "{r:?}");
    let got = up.wait_for(1).pop().unwrap();
    assert!(got.header("authorization").is_none(), "{got:?}");
    assert_eq!(param(&got, "client_id").as_deref(), Some(POST_ONLY));
    assert_eq!(param(&got, "client_secret").as_deref(), Some(SECRET));

    // A Basic-only client that posts: its server gets RFC 6749 Basic.
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", BASIC_ONLY),
        ("client_secret", SECRET),
    ]);
    assert_eq!(gw.send(&token_post(&token, &[FORM], &body)).status(), 200);
    let got = up.wait_for(2).pop().unwrap();
    assert_eq!(
        got.header("authorization"),
        Some(basic_6749(BASIC_ONLY, SECRET))
    );
    assert_eq!(got.body_str(), "grant_type=client_credentials");

    // A client_secret_jwt client, Basic and post alike: an HS256 assertion keyed with the secret
    // it presented, the secret itself never forwarded.
    let mut jtis = HashSet::new();
    for (i, auth) in [true, false].into_iter().enumerate() {
        let req = if auth {
            token_post(
                &token,
                &[FORM, ("Authorization", &basic_6749(HS, SECRET))],
                "grant_type=client_credentials&scope=a",
            )
        } else {
            let body = form(&[
                ("grant_type", "client_credentials"),
                ("scope", "a"),
                ("client_id", HS),
                ("client_secret", SECRET),
            ]);
            token_post(&token, &[FORM], &body)
        };
        assert_eq!(gw.send(&req).status(), 200);
        let got = up.wait_for(3 + i).pop().unwrap();
        assert_no_secret(&got, SECRET);
        assert_eq!(param(&got, "client_id").as_deref(), Some(HS));
        assert_eq!(
            param(&got, "grant_type").as_deref(),
            Some("client_credentials")
        );
        assert_eq!(param(&got, "scope").as_deref(), Some("a"));
        assert_eq!(
            param(&got, "client_assertion_type").as_deref(),
            Some(JWT_BEARER)
        );
        let jwt = param(&got, "client_assertion").unwrap();
        assert_eq!(decode_header(&jwt).unwrap().alg, Algorithm::HS256);
        let aud = format!("https://auth.pingone.com/{ENV_ID}/as");
        let claims = verify(
            &jwt,
            &DecodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
            HS,
            &aud,
        );
        assert!(
            jtis.insert(claims["jti"].to_string()),
            "jti reused: {claims}"
        );
        assert_eq!(
            got.header("content-length"),
            Some(got.body.len().to_string())
        );
    }

    // A client that sends its own assertion is forwarded as sent: only a secret is upgraded.
    let own = "grant_type=client_credentials&client_id=hs-client&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c";
    assert_eq!(gw.send(&token_post(&token, &[FORM], own)).status(), 200);
    let got = up.wait_for(5).pop().unwrap();
    assert_eq!(got.body_str(), own);

    // A client without a record gets the route's fallback: here, forwarded as sent.
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "stranger"),
        ("client_secret", SECRET),
    ]);
    assert_eq!(gw.send(&token_post(&token, &[FORM], &body)).status(), 200);
    let got = up.wait_for(6).pop().unwrap();
    assert_eq!(got.body_str(), body);
    assert!(got.header("authorization").is_none());

    // The access log names the upstream method; the action says what was done. (A line is
    // written once its answer is sent: wait for them.)
    for (action, method) in [
        ("converted", "client_secret_post"),
        ("converted", "client_secret_basic"),
        ("upgraded_client_secret_jwt", "client_secret_jwt"),
        ("forwarded", "client_secret_post"),
    ] {
        let wanted = |l: &str| {
            l.contains("tokengate::access")
                && l.contains(&format!("upstream_method=\"{method}\""))
                && l.contains(&format!("action=\"{action}\""))
        };
        let deadline = Instant::now() + WAIT;
        while !logs().lines().any(wanted) {
            assert!(Instant::now() < deadline, "{action} {method}: {}", logs());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Every client-authenticated endpoint upgrades alike; PAR and the others keep `client_id` in the
/// body, and without a configured audience the assertion's `aud` is the endpoint's URL at the
/// upstream. A route with `fallback = "to_basic"` converts clients without a record.
#[test]
fn every_endpoint_upgrades_and_keeps_the_client_id() {
    let dir = TempDir::new("endpoints");
    let clients = write_file(&dir, "clients.toml", &secretless_clients());
    let up = Upstream::start(Behaviour::default());
    let endpoints = [
        "token",
        "introspect",
        "revoke",
        "par",
        "device_authorization",
    ];
    let routes: String = endpoints
        .iter()
        .map(|e| per_client_route(e, e, "fallback = \"to_basic\""))
        .collect();
    let extra = format!("{routes}[clients]\nfile = \"{}\"\n", clients.display());
    let gw = Gateway::start(&config(up.addr, &extra));
    let bodies = [
        "grant_type=client_credentials",
        "token=at-1&token_type_hint=access_token",
        "token=rt-1",
        "response_type=code&redirect_uri=https%3A%2F%2Fapp%2Fcb&scope=openid",
        "scope=openid",
    ];
    let mut n = 0;
    for (endpoint, body) in endpoints.iter().zip(bodies) {
        let p = path(endpoint);
        let r = gw.send(&token_post(
            &p,
            &[FORM, ("Authorization", &basic_6749(HS, SECRET))],
            body,
        ));
        assert_eq!(r.status(), 200, "{endpoint}: {r:?}");
        n += 1;
        let got = up.wait_for(n).pop().unwrap();
        assert_eq!(got.target(), p);
        assert_no_secret(&got, SECRET);
        assert!(got.body_str().starts_with(body), "{endpoint}: {got:?}");
        assert_eq!(param(&got, "client_id").as_deref(), Some(HS), "{endpoint}");
        assert_eq!(
            param(&got, "client_assertion_type").as_deref(),
            Some(JWT_BEARER)
        );
        let aud = format!("http://{}{p}", up.addr);
        verify(
            &param(&got, "client_assertion").unwrap(),
            &DecodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
            HS,
            &aud,
        );

        // No record: the route's fallback (to_basic).
        let post = form(&[("client_id", "stranger"), ("client_secret", SECRET)]);
        let r = gw.send(&token_post(&p, &[FORM], &format!("{body}&{post}")));
        assert_eq!(r.status(), 200, "{endpoint}: {r:?}");
        n += 1;
        let got = up.wait_for(n).pop().unwrap();
        assert_eq!(
            got.header("authorization"),
            Some(basic_6749("stranger", SECRET)),
            "{endpoint}"
        );
        // PAR keeps client_id in the body (RFC 9126 §2.1); the others need not.
        assert_eq!(
            param(&got, "client_id").is_some(),
            *endpoint == "par",
            "{endpoint}: {got:?}"
        );
    }
}

/// `private_key_jwt` on a validating route: the secret is verified first, then the request goes
/// out with an assertion signed by the gateway's key, which the gateway's JWKS route publishes
/// (with the next key, before it signs). A wrong secret never reaches the server.
#[test]
fn private_key_jwt_signs_for_verified_clients_with_the_published_key() {
    let dir = TempDir::new("pkjwt");
    let active = key_file(&dir, "active.pem");
    let next = key_file(&dir, "next.pem");
    let clients = write_file(
        &dir,
        "clients.toml",
        &[
            record(
                "pk",
                Some(SECRET),
                "[\"client_secret_post\", \"client_secret_basic\"]",
                "upstream_method = \"private_key_jwt\"",
            ),
            record(
                "pk-named",
                Some(SECRET),
                "[\"client_secret_basic\"]",
                "upstream_method = \"PRIVATE_KEY_JWT\"\nsigning_key = \"2026-11\"",
            ),
        ]
        .concat(),
    );
    let up = Upstream::start(Behaviour::default());
    let extra = format!(
        "[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"validate\"\n\
         assertion_audience = \"https://idp.example/{{env_id}}/as/token\"\n\
         [[routes]]\nname = \"par\"\npath = \"/{{env_id}}/as/par\"\nmode = \"validate\"\nendpoint = \"par\"\n\
         assertion_audience = \"https://idp.example/{{env_id}}/as\"\n\
         [[routes]]\nname = \"jwks\"\npath = \"/gateway/jwks.json\"\nmode = \"jwks\"\n\
         [clients]\nfile = \"{}\"\n\
         [[signing_keys]]\nkid = \"2026-11\"\nfile = \"{}\"\n\
         [[signing_keys]]\nkid = \"2027-01\"\nfile = \"{}\"\nstatus = \"next\"\n",
        clients.display(),
        active.display(),
        next.display()
    );
    let gw = Gateway::start(&config(up.addr, &extra));

    let jwks_resp = gw.send(b"GET /gateway/jwks.json HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(jwks_resp.status(), 200, "{jwks_resp:?}");
    assert_eq!(
        jwks_resp.header("content-type").as_deref(),
        Some("application/json")
    );
    let jwks: JwkSet = serde_json::from_slice(&jwks_resp.body).unwrap();
    let kids: Vec<_> = jwks
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect();
    assert_eq!(kids, ["2026-11", "2027-01"]);
    assert!(
        !jwks_resp.body_str().contains("\"d\""),
        "private key published: {}",
        jwks_resp.body_str()
    );
    // The JWKS is read, never written.
    let r = gw.send(&token_post("/gateway/jwks.json", &[FORM], "a=b"));
    assert_eq!(r.status(), 405);

    let key = DecodingKey::from_jwk(jwks.find("2026-11").unwrap()).unwrap();
    let cases = [
        ("pk", "token", false, "https://idp.example/{env}/as/token"),
        ("pk", "par", true, "https://idp.example/{env}/as"),
        (
            "pk-named",
            "token",
            true,
            "https://idp.example/{env}/as/token",
        ),
    ];
    for (i, (client, endpoint, use_basic, aud)) in cases.into_iter().enumerate() {
        let req = if use_basic {
            token_post(
                &path(endpoint),
                &[FORM, ("Authorization", &basic_6749(client, SECRET))],
                "grant_type=client_credentials",
            )
        } else {
            let body = form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", SECRET),
            ]);
            token_post(&path(endpoint), &[FORM], &body)
        };
        let r = gw.send(&req);
        assert_eq!(r.status(), 200, "{client} {endpoint}: {r:?}");
        let got = up.wait_for(i + 1).pop().unwrap();
        assert_no_secret(&got, SECRET);
        assert_eq!(param(&got, "client_id").as_deref(), Some(client));
        let jwt = param(&got, "client_assertion").unwrap();
        let header = decode_header(&jwt).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (Algorithm::ES256, Some("2026-11"))
        );
        verify(
            &jwt,
            &key,
            Algorithm::ES256,
            client,
            &aud.replace("{env}", ENV_ID),
        );
    }

    // A wrong secret: the gateway's 401, nothing signed, nothing sent.
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "pk"),
        ("client_secret", "wrong"),
    ]);
    let r = gw.send(&token_post(&path("token"), &[FORM], &body));
    assert_oauth_error(&r, 401, "invalid_client");
    assert_eq!(up.received().len(), cases.len());
    let deadline = Instant::now() + WAIT;
    while !logs().contains("action=\"upgraded_private_key_jwt\"") {
        assert!(Instant::now() < deadline, "{}", logs());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A record that comes to name a key the gateway does not sign with (a client file reloaded
/// without a gateway reload): a local 500 `server_error`, counted, nothing sent upstream.
#[test]
fn a_client_whose_key_does_not_sign_gets_a_500_and_nothing_is_sent() {
    let dir = TempDir::new("sign-fail");
    let active = key_file(&dir, "active.pem");
    let retired = key_file(&dir, "retired.pem");
    let pk = |kid: &str| {
        record(
            "pk",
            Some(SECRET),
            "[\"client_secret_post\"]",
            &format!("upstream_method = \"private_key_jwt\"\nsigning_key = \"{kid}\""),
        )
    };
    let clients = write_file(&dir, "clients.toml", &pk("a"));
    let up = Upstream::start(Behaviour::default());
    let admin = free_addr();
    let extra = format!(
        "[[routes]]\nname = \"token\"\npath = \"/{{env_id}}/as/token\"\nmode = \"validate\"\n\
         [clients]\nfile = \"{}\"\nreload_interval = \"50ms\"\n\
         [[signing_keys]]\nkid = \"a\"\nfile = \"{}\"\n\
         [[signing_keys]]\nkid = \"old\"\nfile = \"{}\"\nstatus = \"retired\"\n\
         [admin]\nlisten = \"{admin}\"\n",
        clients.display(),
        active.display(),
        retired.display()
    );
    let gw = Gateway::start(&config(up.addr, &extra));
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "pk"),
        ("client_secret", SECRET),
    ]);
    let send = || gw.send(&token_post(&path("token"), &[FORM], &body));
    assert_eq!(send().status(), 200);
    write_file(&dir, "clients.toml", &pk("old"));
    // The client file is polled: wait until the new record is in force.
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let r = send();
        if r.status() != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_oauth_error(&r, 500, "server_error");
    let sent = up.received().len();
    assert_oauth_error(&send(), 500, "server_error");
    assert_eq!(
        up.received().len(),
        sent,
        "a request went upstream without an assertion"
    );
    let metrics = String::from_utf8(
        std::process::Command::new("curl")
            .args(["-s", &format!("http://{admin}/metrics")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tokengate_signing_failures_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(failures.parse::<f64>().unwrap() >= 2.0, "{failures}");
}

/// The gateway refuses to start (and a reload is refused the same way) when a route that does not
/// verify secrets meets a `private_key_jwt` record, or a record names a key it does not have.
#[test]
fn unusable_private_key_jwt_records_stop_the_gateway_at_start() {
    let dir = TempDir::new("pk-config");
    let key = key_file(&dir, "k.pem");
    let pk = |extra: &str| {
        record(
            "pk",
            Some(SECRET),
            "[\"client_secret_post\"]",
            &format!("upstream_method = \"private_key_jwt\"\n{extra}"),
        )
    };
    let build = |mode: &str, records: String| {
        let clients = write_file(&dir, "clients.toml", &records);
        let text = format!(
            "default_upstream = \"up\"\n[upstreams.up]\nurl = \"http://127.0.0.1:9\"\n\
             [[routes]]\nname = \"r\"\npath = \"/{{env_id}}/as/token\"\nmode = \"{mode}\"\n\
             [clients]\nfile = \"{}\"\n[[signing_keys]]\nkid = \"k\"\nfile = \"{}\"\n",
            clients.display(),
            key.display()
        );
        let settings = tokengate::config::Settings::parse(&text).unwrap();
        tokengate::runtime::Runtime::build(settings, 1, None).map(|_| ())
    };
    assert!(build("validate", pk("")).is_ok());
    let e = build("per_client", pk("")).unwrap_err();
    assert!(e.contains("per_client") && e.contains("\"pk\""), "{e}");
    let e = build("validate", pk("signing_key = \"other\"")).unwrap_err();
    assert!(e.contains("\"other\""), "{e}");
    // Records without private_key_jwt are what per_client routes are for.
    assert!(build("per_client", secretless_clients()).is_ok());
}
