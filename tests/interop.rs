//! The interop suite: a real authorization server (node `oidc-provider`, laid out like PingOne,
//! tests/interop/as.mjs), real client stacks (curl with PingOne's sample, Python `requests`, node
//! `openid-client`), and the real gateway between them, on loopback ports.
//!
//! Each case is one upstream behaviour × gateway mode × client stack × client type, run through
//! every client-authenticated endpoint. The outcome table is rendered from what happened and must
//! equal README.md's "Interoperability" table (`TOKENGATE_BLESS=1 cargo test --test interop`
//! rewrites it).
//!
//! The suite installs what it runs itself: when the pinned node packages (package-lock.json) or
//! Python `requests` are missing, the first test that needs them runs tests/interop/install.sh,
//! once per process and under a file lock shared with other test processes. It needs node 20+,
//! npm and python3 with pip on the machine, and fails saying so when one is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use common::*;
use tokengate::clients::secret::hash_sha256;

const ENV_ID: &str = "5a0b3c2d-1111-2222-3333-444455556666";
const REDIRECT: &str = "http://localhost:3000/callback";
/// Every secret holds `: + % & = / space` and a literal `%41` (oidc-provider refuses non-ASCII
/// secrets; `é` is covered against the recording upstream in tests/endpoints_e2e.rs).
const BASIC_SECRET: &str = "b: +%&=/ %41x";
const POST_SECRET: &str = "p: +%&=/ %41y";
const COLON_SECRET: &str = "c: +%&=/ %41z";
/// HS256 keys: long enough for any server's minimum.
const HS_SECRET: &str = "h: +%&=/ %41 a client_secret_jwt secret of 40+ bytes";
const PK_SECRET: &str = "k: +%&=/ %41 known to the gateway only";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

// ---- the suite's packages ------------------------------------------------------------------

/// What to install when a tool is missing (Debian/Ubuntu package names).
const TOOLS_HINT: &str = "the interop suite needs node 20+, npm and python3 with pip \
                          (Debian/Ubuntu: apt-get install -y nodejs npm python3 python3-pip)";

/// Makes sure the suite's pinned packages are installed, running tests/interop/install.sh when
/// they are not; panics with what to install when a tool is missing or the install fails. Runs
/// once per test process; parallel processes (cargo nextest) serialize on a file lock.
fn ensure_installed() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = INSTALLED.get_or_init(install_if_missing) {
        panic!("{e}");
    }
}

fn install_if_missing() -> Result<(), String> {
    check_tools()?;
    if installed() {
        return Ok(());
    }
    let _lock = lock_install()?;
    // Another process may have installed while this one waited for the lock.
    if installed() {
        return Ok(());
    }
    eprintln!("interop: installing the suite's packages (tests/interop/install.sh)");
    let out = Command::new("bash")
        .arg(interop_dir().join("install.sh"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash tests/interop/install.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tests/interop/install.sh failed ({}); {TOOLS_HINT}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if !installed() {
        return Err(
            "tests/interop/install.sh succeeded, yet the packages are still missing".to_string(),
        );
    }
    Ok(())
}

/// node (20 or later), npm and python3 answer `--version`.
fn check_tools() -> Result<(), String> {
    let version = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let missing: Vec<&str> = ["node", "npm", "python3"]
        .into_iter()
        .filter(|t| version(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!("{} not found: {TOOLS_HINT}", missing.join(", ")));
    }
    let node = version("node").unwrap_or_default();
    let major: u32 = node
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!("node is {node}: {TOOLS_HINT}"));
    }
    Ok(())
}

/// The node packages were installed from the current package-lock.json (install.sh's stamp holds
/// its sha256), and Python `requests` imports.
fn installed() -> bool {
    use sha2::{Digest, Sha256};
    let dir = interop_dir();
    let Ok(lock) = std::fs::read(dir.join("package-lock.json")) else {
        return false;
    };
    let want: String = Sha256::digest(&lock)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stamp =
        std::fs::read_to_string(dir.join("node_modules/.installed-from")).unwrap_or_default();
    stamp.trim() == want
        && Command::new("python3")
            .args(["-c", "import requests"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Takes an exclusive `flock` on tests/interop/.install.lock; it is held until the returned file
/// is dropped (closed), and released by the kernel if the process dies.
fn lock_install() -> Result<std::fs::File, String> {
    let path = interop_dir().join(".install.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    loop {
        // SAFETY: flock on a file descriptor this function owns and keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
}

/// A client registered at the authorization server (and, for validating routes, in the gateway's
/// client file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    BasicOnly,
    PostOnly,
    Public,
    /// Registered at the server with `client_secret_jwt` (the server holds the secret).
    SecretJwt,
    /// Registered at the server with `private_key_jwt` and the gateway's public keys; the secret
    /// the client sends is known to the gateway only.
    KeyJwt,
}

#[derive(Clone, Copy, Debug)]
struct Client {
    id: &'static str,
    secret: Option<&'static str>,
    kind: Kind,
}

const BASIC_CLIENT: Client = Client {
    id: "tg-basic",
    secret: Some(BASIC_SECRET),
    kind: Kind::BasicOnly,
};
const COLON_CLIENT: Client = Client {
    id: "tg:colon",
    secret: Some(COLON_SECRET),
    kind: Kind::BasicOnly,
};
const POST_CLIENT: Client = Client {
    id: "tg-post",
    secret: Some(POST_SECRET),
    kind: Kind::PostOnly,
};
const PUBLIC_CLIENT: Client = Client {
    id: "tg-public",
    secret: None,
    kind: Kind::Public,
};
const HS_CLIENT: Client = Client {
    id: "tg-hs",
    secret: Some(HS_SECRET),
    kind: Kind::SecretJwt,
};
const PK_CLIENT: Client = Client {
    id: "tg-pk",
    secret: Some(PK_SECRET),
    kind: Kind::KeyJwt,
};
const CLIENTS: [Client; 6] = [
    BASIC_CLIENT,
    COLON_CLIENT,
    POST_CLIENT,
    PUBLIC_CLIENT,
    HS_CLIENT,
    PK_CLIENT,
];

const GRANTS: [&str; 4] = [
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
];

impl Client {
    fn registered_method(&self) -> &'static str {
        match self.kind {
            Kind::BasicOnly => "client_secret_basic",
            Kind::PostOnly => "client_secret_post",
            Kind::Public => "none",
            Kind::SecretJwt => "client_secret_jwt",
            Kind::KeyJwt => "private_key_jwt",
        }
    }

    fn label(&self) -> String {
        match self.kind {
            Kind::BasicOnly if self.id.contains(':') => "Basic-only, id with `:`".into(),
            Kind::BasicOnly => "Basic-only".into(),
            Kind::PostOnly => "post-only".into(),
            Kind::Public => "public".into(),
            Kind::SecretJwt => "`client_secret_jwt` at the server".into(),
            Kind::KeyJwt => "`private_key_jwt` at the server".into(),
        }
    }

    /// The steps that apply: a public client has no client_credentials, and may not introspect.
    fn steps(&self) -> Vec<&'static str> {
        match self.kind {
            Kind::Public => vec![
                "authorization_code",
                "refresh",
                "introspect",
                "revoke",
                "par",
                "device_authorization",
            ],
            _ => vec![
                "client_credentials",
                "introspect",
                "revoke",
                "authorization_code",
                "refresh",
                "par",
                "device_authorization",
            ],
        }
    }
}

/// oidc-provider's client metadata; `jwks` is the gateway's public JWKS (`tokengate jwks`), for
/// the `private_key_jwt` client.
fn as_clients_json(jwks: &serde_json::Value) -> String {
    let list: Vec<serde_json::Value> = CLIENTS
        .iter()
        .map(|c| {
            let grants: Vec<&str> = GRANTS
                .iter()
                .copied()
                .filter(|g| c.kind != Kind::Public || *g != "client_credentials")
                .collect();
            let mut v = serde_json::json!({
                "client_id": c.id,
                "token_endpoint_auth_method": c.registered_method(),
                "grant_types": grants,
                "response_types": ["code"],
                "redirect_uris": [REDIRECT],
            });
            match c.kind {
                Kind::KeyJwt => v["jwks"] = jwks.clone(),
                _ => {
                    if let Some(s) = c.secret {
                        v["client_secret"] = s.into();
                    }
                }
            }
            v
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap()
}

/// The gateway's client file for validating routes: the same clients, secrets hashed, the
/// gateway accepting both methods and converting (or upgrading) to what the server demands.
fn gateway_clients_toml() -> String {
    CLIENTS
        .iter()
        .map(|c| {
            let (methods, upstream, secret) = match c.secret {
                Some(s) => (
                    "[\"client_secret_basic\", \"client_secret_post\"]",
                    format!("upstream_method = \"{}\"\n", c.registered_method()),
                    format!("secret = \"{}\"\n", hash_sha256(s.as_bytes())),
                ),
                None => ("[\"none\"]", String::new(), String::new()),
            };
            format!(
                "[[clients]]\nenv_id = \"{ENV_ID}\"\nclient_id = \"{}\"\nauth_methods = {methods}\n\
                 {upstream}{secret}grant_types = {:?}\n",
                c.id, GRANTS
            )
        })
        .collect()
}

/// The gateway's records for `per_client` routes: each confidential client's upstream method,
/// without a single secret (a `private_key_jwt` client needs a validating route).
fn gateway_records_toml() -> String {
    CLIENTS
        .iter()
        .filter(|c| c.secret.is_some() && c.kind != Kind::KeyJwt)
        .map(|c| {
            format!(
                "[[clients]]\nenv_id = \"{ENV_ID}\"\nclient_id = \"{}\"\n\
                 auth_methods = [\"client_secret_basic\", \"client_secret_post\"]\n\
                 upstream_method = \"{}\"\n",
                c.id,
                c.registered_method()
            )
        })
        .collect()
}

/// A new signing key of the gateway (ES256, mode 0600) in `dir`, and its public JWKS (what
/// `tokengate jwks` prints).
fn signing_key(dir: &Path, tag: &str) -> (PathBuf, serde_json::Value) {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join(format!("signing-key-{tag}.pem"));
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    std::fs::write(&file, pem).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys = tokengate::assertion::SigningKeys::load(&[tokengate::config::SigningKeySettings {
        kid: "interop".into(),
        file: file.clone(),
        status: tokengate::config::KeyStatus::Active,
    }])
    .unwrap();
    (file, keys.jwks())
}

// ---- processes -----------------------------------------------------------------------------

/// The node authorization server; stopped (by PID) when dropped. Closing its stdin stops it too,
/// so it cannot outlive a test process that dies.
struct AuthServer {
    child: Child,
    port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    /// PingOne's behaviour: exactly the registered method.
    Strict,
    /// Basic and POST alike (oidc-provider's own behaviour, Keycloak's).
    Lenient,
    /// Basic compared without form-decoding (older and hand-made servers).
    Raw,
}

impl Upstream {
    fn label(self) -> &'static str {
        match self {
            Upstream::Strict => "oidc-provider, registered method enforced (as PingOne)",
            Upstream::Lenient => "oidc-provider, Basic and POST alike",
            Upstream::Raw => "oidc-provider behind a raw-Basic check",
        }
    }
}

impl AuthServer {
    fn start(kind: Upstream, clients_file: &Path) -> AuthServer {
        ensure_installed();
        let mut cmd = Command::new("node");
        cmd.arg(interop_dir().join("as.mjs"))
            .args(["--env", ENV_ID, "--clients"])
            .arg(clients_file);
        match kind {
            Upstream::Strict => {
                cmd.arg("--enforce-method");
            }
            Upstream::Lenient => {}
            Upstream::Raw => {
                cmd.args(["--enforce-method", "--basic", "raw"]);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(port) = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the authorization server did not start: {line:?}");
        };
        AuthServer { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a program with a bound on its time; returns its stdout.
fn run_bounded(mut cmd: Command, what: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    });
    let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {CLIENT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = reader.join().unwrap();
    assert!(status.success(), "{what} failed: {status}\n{stderr}");
    stdout
}

// ---- client stacks ------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    /// node openid-client 6.
    OpenidClient,
    /// Python requests, PingOne's Python sample.
    Requests,
    /// curl, PingOne's curl sample.
    Curl,
}

impl Stack {
    fn label(self, auth: &str) -> String {
        let style = match auth {
            "default" => "default: client_secret_post".to_string(),
            "none" => "none".to_string(),
            other => format!("client_secret_{other}"),
        };
        match self {
            Stack::OpenidClient => format!("node openid-client ({style})"),
            Stack::Requests if auth == "basic_raw" => {
                "Python requests (`auth=(id, secret)`: raw Basic)".to_string()
            }
            Stack::Requests => format!("Python requests ({style})"),
            Stack::Curl if auth == "basic" => "curl (`-u`, RFC 6749-encoded)".to_string(),
            Stack::Curl => "curl (PingOne's sample: client_secret_post)".to_string(),
        }
    }
}

/// One step's outcome, as the client programs report it.
#[derive(Debug, Clone, serde::Deserialize)]
struct StepResult {
    step: String,
    ok: bool,
    detail: String,
}

fn run_client(
    stack: Stack,
    metadata_url: &str,
    client: Client,
    auth: &str,
    steps: &[&str],
) -> Vec<StepResult> {
    let input = serde_json::json!({
        "metadata_url": metadata_url,
        "client_id": client.id,
        "client_secret": client.secret,
        "auth": auth,
        "redirect_uri": REDIRECT,
        "steps": steps,
    });
    let mut cmd = match stack {
        Stack::OpenidClient => {
            let mut c = Command::new("node");
            c.arg(interop_dir().join("client.mjs"));
            c
        }
        Stack::Requests => {
            let mut c = Command::new("python3");
            c.arg(interop_dir().join("client.py"));
            c
        }
        Stack::Curl => return run_curl(metadata_url, client, auth),
    };
    cmd.arg(input.to_string());
    let out = run_bounded(cmd, &format!("{stack:?} client"));
    #[derive(serde::Deserialize)]
    struct Out {
        steps: Vec<StepResult>,
    }
    let parsed: Out = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{stack:?} client printed {out:?}: {e}"));
    parsed.steps
}

/// A form POST with curl, as PingOne's curl sample sends it: each field `--data-urlencode`d, the
/// credentials in the body (`client_secret_post`) or, with `basic`, in `-u` form-encoded first
/// (RFC 6749 §2.3.1). Returns the status and the JSON body.
fn curl_form(
    url: &str,
    fields: &[(&str, &str)],
    client: Client,
    basic: bool,
) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--location", "--globoff", url])
        .args([
            "--header",
            "Content-Type: application/x-www-form-urlencoded",
        ]);
    for (name, value) in fields {
        cmd.args(["--data-urlencode", &format!("{name}={value}")]);
    }
    let secret = client.secret.unwrap();
    if basic {
        let enc = |s: &str| tokengate::protocol::form::encode(s.as_bytes());
        cmd.args(["-u", &format!("{}:{}", enc(client.id), enc(secret))]);
    } else {
        cmd.args(["--data-urlencode", &format!("client_id={}", client.id)])
            .args(["--data-urlencode", &format!("client_secret={secret}")]);
    }
    let out = run_bounded(cmd, "curl");
    let (body, status) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (
        status.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// curl through client_credentials, introspection, revocation, and PingOne's sample code
/// exchange (the code comes from openid-client's scripted authorization leg).
fn run_curl(metadata_url: &str, client: Client, auth: &str) -> Vec<StepResult> {
    let base = metadata_url.trim_end_matches("/.well-known/openid-configuration");
    let basic = auth == "basic";
    let result = |step: &str, (status, body): (u16, serde_json::Value), ok: bool| StepResult {
        step: step.into(),
        ok,
        detail: body["error"]
            .as_str()
            .map_or(format!("status {status}"), |e| {
                format!("{e} (status {status})")
            }),
    };
    let post = |endpoint: &str, fields: &[(&str, &str)]| {
        curl_form(&format!("{base}/{endpoint}"), fields, client, basic)
    };
    let mut out = Vec::new();
    let cc = post("token", &[("grant_type", "client_credentials")]);
    let token = cc.1["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ok = cc.0 == 200 && !token.is_empty();
    out.push(result("client_credentials", cc, ok));
    let intro = post("introspect", &[("token", &token)]);
    let ok = intro.0 == 200 && intro.1["active"] == true;
    out.push(result("introspect", intro, ok));
    let rev = post("revoke", &[("token", &token)]);
    let after = post("introspect", &[("token", &token)]);
    let ok = rev.0 == 200 && after.1["active"] == false;
    out.push(result("revoke", rev, ok));
    // PingOne's sample: the code exchange, client_secret_post, no code_verifier.
    let code = run_client(
        Stack::OpenidClient,
        metadata_url,
        client,
        auth,
        &["authorize_only"],
    );
    let exchanged = match code.first() {
        Some(r) if r.ok => post(
            "token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &r.detail),
                ("redirect_uri", REDIRECT),
            ],
        ),
        _ => (0, serde_json::Value::Null),
    };
    let ok = exchanged.0 == 200 && exchanged.1["access_token"].is_string();
    out.push(result("authorization_code", exchanged, ok));
    out
}

// ---- the matrix ---------------------------------------------------------------------------

/// One row of the table: a setup and the outcome of each endpoint step.
#[derive(Debug, Clone)]
struct Row {
    upstream: Upstream,
    gateway: String,
    client_stack: String,
    client: String,
    results: Vec<StepResult>,
    fails: bool,
}

/// The columns, in order: step names as the client programs call them.
const COLUMNS: [(&str, &str); 7] = [
    ("client_credentials", "client_credentials"),
    ("authorization_code", "authorization_code"),
    ("refresh", "refresh"),
    ("introspect", "introspection"),
    ("revoke", "revocation"),
    ("par", "PAR"),
    ("device_authorization", "device authorization"),
];

fn cell(results: &[StepResult], step: &str) -> String {
    let matching: Vec<&StepResult> = results.iter().filter(|r| r.step == step).collect();
    match matching.as_slice() {
        [] => "–".into(),
        all if all.iter().all(|r| r.ok) => "✓".into(),
        all => {
            let failed = all.iter().find(|r| !r.ok).unwrap();
            match failed.detail.split_whitespace().next() {
                // Nothing to work on: an earlier step failed.
                Some("no") | None => "✗ (skipped)".into(),
                Some(code) => format!("✗ {code}"),
            }
        }
    }
}

fn render(rows: &[Row]) -> String {
    let mut out = String::from("| upstream | gateway | client stack | client |");
    for (_, title) in COLUMNS {
        out.push_str(&format!(" {title} |"));
    }
    out.push_str("\n|---|---|---|---|");
    out.push_str(&"---|".repeat(COLUMNS.len()));
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |",
            r.upstream.label(),
            r.gateway,
            r.client_stack,
            r.client
        ));
        for (step, _) in COLUMNS {
            out.push_str(&format!(" {} |", cell(&r.results, step)));
        }
        out.push('\n');
    }
    out
}

/// The files a gateway of the suite reads.
struct GatewayFiles {
    /// Validating routes' client file (secrets hashed).
    clients: PathBuf,
    /// `per_client` routes' records (no secrets).
    records: PathBuf,
    /// The signing key for `private_key_jwt`.
    key: PathBuf,
}

impl GatewayFiles {
    /// Writes the files into `dir` (`tag` tells apart the sets of parallel tests); returns them
    /// and the gateway's public JWKS.
    fn write(dir: &Path, tag: &str) -> (GatewayFiles, serde_json::Value) {
        let (key, jwks) = signing_key(dir, tag);
        let files = GatewayFiles {
            clients: dir.join(format!("gateway-clients-{tag}.toml")),
            records: dir.join(format!("gateway-records-{tag}.toml")),
            key,
        };
        std::fs::write(&files.clients, gateway_clients_toml()).unwrap();
        std::fs::write(&files.records, gateway_records_toml()).unwrap();
        (files, jwks)
    }
}

/// A gateway in front of `server`, every endpoint in `mode`, discovery rewritten to point at it.
fn gateway_for(server: &AuthServer, mode: &str, raw: bool, files: &GatewayFiles) -> Gateway {
    Gateway::start_on(|port| gateway_toml(server, mode, raw, files, port), "")
}

fn gateway_toml(
    server: &AuthServer,
    mode: &str,
    raw: bool,
    files: &GatewayFiles,
    port: u16,
) -> String {
    let validate = mode == "validate";
    // The assertions' audience: oidc-provider takes its issuer.
    let audience = format!("http://{}/{{env_id}}/as", server.addr());
    let mut routes = String::new();
    for (suffix, endpoint) in [
        ("token", "token"),
        ("introspect", "introspection"),
        ("revoke", "revocation"),
        ("par", "par"),
        ("device_authorization", "device_authorization"),
    ] {
        routes.push_str(&format!(
            "[[routes]]\nname = \"{endpoint}\"\npath = \"/{{env_id}}/as/{suffix}\"\nmode = \"{mode}\"\n\
             endpoint = \"{endpoint}\"\nassertion_audience = \"{audience}\"\n"
        ));
    }
    routes.push_str(&format!(
        "[[routes]]\nname = \"discovery\"\npath = \"/{{env_id}}/as/.well-known/openid-configuration\"\n\
         mode = \"discovery\"\npublic_base_url = \"http://127.0.0.1:{port}\"\n"
    ));
    if validate {
        routes.push_str(&format!(
            "[clients]\nfile = \"{}\"\n[lockout]\nmax_failures_per_client = 0\nmax_failures_per_ip = 0\n\
             [[signing_keys]]\nkid = \"interop\"\nfile = \"{}\"\n",
            files.clients.display(),
            files.key.display()
        ));
    }
    if mode == "per_client" {
        routes.push_str(&format!(
            "[clients]\nfile = \"{}\"\n",
            files.records.display()
        ));
    }
    let mut toml = format!(
        "default_upstream = \"idp\"\n[upstreams.idp]\nurl = \"http://{}\"\nread_timeout = \"10s\"\n{}\n{routes}",
        server.addr(),
        if raw { "basic_encoding = \"raw\"" } else { "" },
    );
    toml.push_str("[token]\nmax_body_bytes = 65536\n");
    toml
}

/// How a client of `kind` talks to a gateway in `mode` in front of a server that demands the
/// registered method: the opposite of what the server wants, so that only the gateway makes it
/// work.
fn auth_style(kind: Kind, mode: &str) -> &'static str {
    match (kind, mode) {
        (Kind::Public, _) => "none",
        (Kind::BasicOnly, "to_basic") => "default",
        (Kind::PostOnly, "to_post") => "basic",
        (Kind::BasicOnly, _) => "post",
        (Kind::PostOnly, _) => "basic",
        // Whatever the client sends, only the gateway's upgrade makes it work.
        (Kind::SecretJwt | Kind::KeyJwt, _) => "post",
    }
}

/// One gateway setup and the clients sent through it.
struct Setup {
    mode: &'static str,
    /// `basic_encoding = "raw"` for the upstream.
    raw: bool,
    /// What the row's gateway column adds, if anything.
    note: &'static str,
    /// Client, stack and auth style of each row.
    cases: Vec<(Client, Stack, &'static str)>,
    /// The row shows a failure on purpose (a control or a known limit): client authentication
    /// must fail at the server or the gateway.
    fails: bool,
}

/// Every stack for each client, each in the auth style given by `style`.
fn every_stack(
    clients: &[Client],
    style: impl Fn(Client) -> &'static str,
) -> Vec<(Client, Stack, &'static str)> {
    let mut cases = Vec::new();
    for &client in clients {
        for stack in [Stack::OpenidClient, Stack::Requests, Stack::Curl] {
            if stack != Stack::Curl || client.secret.is_some() {
                cases.push((client, stack, style(client)));
            }
        }
    }
    cases
}

fn setups(kind: Upstream) -> Vec<Setup> {
    let setup = |mode, raw, note, cases, fails| Setup {
        mode,
        raw,
        note,
        cases,
        fails,
    };
    let registered = " (converts to the registered method)";
    match kind {
        Upstream::Strict => vec![
            setup(
                "to_basic",
                false,
                "",
                every_stack(&[BASIC_CLIENT, COLON_CLIENT, PUBLIC_CLIENT], |c| {
                    auth_style(c.kind, "to_basic")
                }),
                false,
            ),
            setup(
                "to_post",
                false,
                "",
                every_stack(&[POST_CLIENT], |c| auth_style(c.kind, "to_post")),
                false,
            ),
            setup(
                "validate",
                false,
                registered,
                every_stack(&[BASIC_CLIENT, POST_CLIENT, PUBLIC_CLIENT], |c| {
                    auth_style(c.kind, "validate")
                }),
                false,
            ),
            // Raw Basic from the client: the client's record tells which reading is meant.
            setup(
                "validate",
                false,
                registered,
                vec![
                    (BASIC_CLIENT, Stack::Requests, "basic_raw"),
                    (POST_CLIENT, Stack::Requests, "basic_raw"),
                ],
                false,
            ),
            // Without records, raw Basic cannot be told from RFC 6749 Basic (known limit).
            setup(
                "to_basic",
                false,
                " (no records: limit)",
                vec![(BASIC_CLIENT, Stack::Requests, "basic_raw")],
                true,
            ),
            // Secret clients upgraded to RFC 7523 assertions: the server takes only those.
            setup(
                "validate",
                false,
                " (upgrades to the registered JWT method)",
                every_stack(&[HS_CLIENT, PK_CLIENT], |_| "post"),
                false,
            ),
            setup(
                "validate",
                false,
                " (upgrades to the registered JWT method)",
                every_stack(&[HS_CLIENT, PK_CLIENT], |_| "basic"),
                false,
            ),
            // The control: the same clients, the same requests, straight to the server.
            setup(
                "direct",
                false,
                " (control)",
                vec![
                    (HS_CLIENT, Stack::Requests, "post"),
                    (HS_CLIENT, Stack::Requests, "basic"),
                    (PK_CLIENT, Stack::Requests, "post"),
                    (PK_CLIENT, Stack::Requests, "basic"),
                ],
                true,
            ),
            // A mixed environment through records without a single secret: each client gets
            // the method its server registered.
            setup(
                "per_client",
                false,
                " (records without secrets)",
                every_stack(&[BASIC_CLIENT, POST_CLIENT, HS_CLIENT], |c| match c.kind {
                    Kind::BasicOnly => "post",
                    Kind::PostOnly => "basic",
                    _ => "basic",
                }),
                false,
            ),
        ],
        Upstream::Lenient => vec![
            // A server that takes both: clients keep their library's default.
            setup(
                "to_basic",
                false,
                "",
                every_stack(&[BASIC_CLIENT, POST_CLIENT], |_| "default"),
                false,
            ),
            setup(
                "to_post",
                false,
                "",
                every_stack(&[BASIC_CLIENT, POST_CLIENT], |_| "basic"),
                false,
            ),
        ],
        Upstream::Raw => vec![
            setup(
                "to_basic",
                true,
                ", `basic_encoding = \"raw\"`",
                every_stack(&[BASIC_CLIENT], |_| "default"),
                false,
            ),
            // The control: the standard encoding is what this server cannot read.
            setup(
                "to_basic",
                false,
                ", `basic_encoding = \"rfc6749\"` (control)",
                every_stack(&[BASIC_CLIENT], |_| "default"),
                true,
            ),
        ],
    }
}

fn run_upstream(kind: Upstream, dir: &Path) -> Vec<Row> {
    let (files, jwks) = GatewayFiles::write(dir, &format!("{kind:?}"));
    let as_clients = dir.join(format!("as-clients-{kind:?}.json"));
    std::fs::write(&as_clients, as_clients_json(&jwks)).unwrap();
    let server = AuthServer::start(kind, &as_clients);

    let mut rows = Vec::new();
    for setup in setups(kind) {
        // `direct`: the clients talk to the server itself (a control row).
        let gw =
            (setup.mode != "direct").then(|| gateway_for(&server, setup.mode, setup.raw, &files));
        let base = gw.as_ref().map_or(server.addr(), |gw| gw.addr.to_string());
        let metadata_url = format!("http://{base}/{ENV_ID}/as/.well-known/openid-configuration");
        for (client, stack, auth) in setup.cases {
            let results = run_client(stack, &metadata_url, client, auth, &client.steps());
            rows.push(Row {
                upstream: kind,
                gateway: match setup.mode {
                    "direct" => format!("none{}", setup.note),
                    mode => format!("`{mode}`{}", setup.note),
                },
                client_stack: stack.label(auth),
                client: client.label(),
                results,
                fails: setup.fails,
            });
        }
    }
    rows
}

#[test]
fn interop_matrix_matches_the_readme() {
    ensure_installed();
    let dir = TempDir::new("interop");
    let handles: Vec<_> = [Upstream::Strict, Upstream::Lenient, Upstream::Raw]
        .into_iter()
        .map(|k| {
            let dir = dir.to_path_buf();
            std::thread::spawn(move || run_upstream(k, &dir))
        })
        .collect();
    let rows: Vec<Row> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("an upstream's cases panicked"))
        .collect();
    drop(dir);

    // Every case works, but for the rows that show a failure on purpose.
    for r in &rows {
        for s in &r.results {
            if r.fails && s.step == "client_credentials" {
                assert!(
                    !s.ok && s.detail.starts_with("invalid_client"),
                    "expected to fail: {r:?}"
                );
            } else if !r.fails {
                assert!(
                    s.ok,
                    "{} / {} / {} / {}: {} failed: {}",
                    r.upstream.label(),
                    r.gateway,
                    r.client_stack,
                    r.client,
                    s.step,
                    s.detail
                );
            }
        }
    }

    let table = render(&rows);
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (begin, end) = ("<!-- interop:begin -->\n", "<!-- interop:end -->");
    let start = readme
        .find(begin)
        .expect("README.md has the interop markers")
        + begin.len();
    let stop = readme.find(end).expect("README.md has the interop markers");
    if readme[start..stop] != table {
        if std::env::var_os("TOKENGATE_BLESS").is_some() {
            std::fs::write(
                &readme_path,
                format!("{}{table}{}", &readme[..start], &readme[stop..]),
            )
            .unwrap();
        } else {
            panic!("README.md's interop table differs from the suite's outcome; run TOKENGATE_BLESS=1 cargo test --test interop to rewrite it:\n{table}");
        }
    }
}

/// Sends raw bytes to `addr` on a new connection and reads one response.
fn send_to(addr: &str, raw: &[u8]) -> Message {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    read_message(&mut BufReader::new(s), false)
        .unwrap()
        .expect("a response")
}

fn status_and_error(m: &Message) -> (u16, String) {
    let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or_default();
    (
        m.status(),
        body["error"].as_str().unwrap_or("-").to_string(),
    )
}

/// Through which gateway, headers, body; the answer expected from both.
type Case<'a> = (&'a Gateway, Vec<(&'a str, &'a str)>, String, (u16, &'a str));

/// The answers the gateway gives itself agree with what the real server answers to the same
/// request, on every endpoint: RFC 6749 §2.3 (two methods), §3.1 (a repeated parameter), and a
/// wrong secret on a validating route.
#[test]
fn local_answers_agree_with_the_servers_own() {
    ensure_installed();
    let dir = TempDir::new("interop-local");
    let (files, jwks) = GatewayFiles::write(&dir, "local");
    let as_clients = dir.join("as.json");
    std::fs::write(&as_clients, as_clients_json(&jwks)).unwrap();
    let server = AuthServer::start(Upstream::Strict, &as_clients);
    let converting = gateway_for(&server, "to_basic", false, &files);
    let validating = gateway_for(&server, "validate", false, &files);

    let enc = |s: &str| tokengate::protocol::form::encode(s.as_bytes());
    let creds = format!(
        "client_id={}&client_secret={}",
        enc("tg-post"),
        enc(POST_SECRET)
    );
    let auth = basic(&format!("{}:{}", enc("tg-post"), enc(POST_SECRET)));
    let wrong = basic("tg-post:wrong");
    for (suffix, params) in [
        ("token", "grant_type=client_credentials"),
        ("introspect", "token=abc"),
        ("revoke", "token=abc"),
        (
            "par",
            "response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback",
        ),
        ("device_authorization", "scope=openid"),
    ] {
        let path = format!("/{ENV_ID}/as/{suffix}");
        let cases: [Case; 4] = [
            // Basic and a body secret together.
            (
                &converting,
                vec![FORM, ("Authorization", &auth)],
                format!("{params}&{creds}"),
                (400, "invalid_request"),
            ),
            // client_id twice.
            (
                &converting,
                vec![FORM],
                format!("{params}&client_id=tg-post&{creds}"),
                (400, "invalid_request"),
            ),
            // A wrong secret, answered by the gateway itself on a validating route.
            (
                &validating,
                vec![FORM],
                format!("{params}&client_id=tg-post&client_secret=wrong"),
                (401, "invalid_client"),
            ),
            (
                &validating,
                vec![FORM, ("Authorization", &wrong)],
                params.to_string(),
                (401, "invalid_client"),
            ),
        ];
        for (gw, headers, body, (status, error)) in cases {
            let raw = token_post(&path, &headers, &body);
            let direct = status_and_error(&send_to(&server.addr(), &raw));
            let through = status_and_error(&send_to(&gw.addr.to_string(), &raw));
            assert_eq!(
                direct,
                (status, error.to_string()),
                "server: {suffix} {headers:?} {body}"
            );
            assert_eq!(through, direct, "gateway: {suffix} {headers:?} {body}");
        }
    }
}
