#!/usr/bin/env python3
"""Soak driver for benches/soak.sh (Python 3 standard library only).

    soak_driver.py prepare --dir DIR --bin TOKENGATE --gw-port P --admin-port P --up-port P
        writes DIR/gateway.toml, the client file DIR/clients.toml (sha256 and argon2id records made
        with `tokengate hash-secret`), DIR/clients.base.toml and DIR/clients.extra.toml (what the
        rewrites toggle) and DIR/secrets.json (the legitimate clients' secrets, for `run`).
    soak_driver.py run --dir DIR --pid PID --duration S ...
        drives the traffic against the running gateway, sends it SIGHUP every 10 s, rewrites the
        client file every 30 s, samples the gateway's RSS, file descriptors and CPU from /proc,
        scrapes /metrics, prints a summary, writes it as JSON and exits non-zero when a legitimate
        request failed, RSS or file descriptors grew more than 10 %, or the gateway died.

Traffic (every connection is from a loopback address; every count of connections is bounded):
  legit        127.0.0.1  LEGIT_THREADS threads at a steady rate, each client with its own
                          client_id and right secret, client_secret_post and client_secret_basic
                          alternately, token and introspection endpoints: every answer must be 200
  wrong_secret 127.0.0.2  wrong secrets for the legitimate clients' ids (post and Basic)
  unknown_id   127.0.0.2  client_ids that exist nowhere
  malformed    127.0.0.2  bad percent-escapes (body and Basic), bad base64, two methods at once...
  stalled_body 127.0.0.2  a Content-Length larger than what is sent, then silence
  slow_head    127.0.0.3  a request head trickled a byte a second
  silent       127.0.0.3  connections that send nothing
  idle_keepalive 127.0.0.3 one pass-through request, then an idle kept-alive connection
"""

import argparse
import base64
import json
import os
import random
import re
import secrets
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict

ENV_ID = "5a0b3c2d-aaaa-bbbb-cccc-50a650a650a6"
LEGIT_IP = "127.0.0.1"
ATTACKER_IP = "127.0.0.2"
SLOW_IP = "127.0.0.3"

# The gateway's settings that shape the run (written into gateway.toml by `prepare`).
HEADER_TIMEOUT = 5
KEEPALIVE_TIMEOUT = 15
BODY_TIMEOUT = 5
LOCKOUT_WINDOW = 30
MAX_FAILURES_PER_CLIENT = 10
MAX_FAILURES_PER_IP = 100
MAX_CONNECTIONS = 512
MAX_CONNECTIONS_PER_IP = 64


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------

def hash_secret(binary, secret, algorithm):
    out = subprocess.run(
        [binary, "hash-secret", "--algorithm", algorithm],
        input=secret.encode(), capture_output=True, check=True,
    ).stdout.decode().strip()
    if not out.startswith('secret = "'):
        raise SystemExit(f"unexpected hash-secret output: {out!r}")
    return out


def record(client_id, secret_line, upstream_method):
    return (
        "[[clients]]\n"
        f'env_id = "{ENV_ID}"\n'
        f'client_id = "{client_id}"\n'
        f"{secret_line}\n"
        'auth_methods = ["client_secret_post", "client_secret_basic"]\n'
        f'upstream_method = "{upstream_method}"\n'
        'grant_types = ["client_credentials"]\n'
    )


def prepare(a):
    os.makedirs(a.dir, exist_ok=True)
    clients = []
    records = []
    # Secrets with the characters clients and servers get wrong in Basic (RFC 6749 §2.3.1) for
    # every other client; half sha256, half argon2id; half converted to Basic, half to post.
    for i in range(a.clients):
        secret = secrets.token_urlsafe(24)
        if i % 2 == 1:
            secret = "s:+ %&=/é-" + secret
        algorithm = "argon2id" if i % 2 == 0 else "sha256"
        if i % 4 in (2, 3):
            algorithm = "sha256" if algorithm == "argon2id" else "argon2id"
        upstream = "client_secret_basic" if i % 2 == 0 else "client_secret_post"
        client_id = f"soak-client-{i}"
        records.append(record(client_id, hash_secret(a.bin, secret, algorithm), upstream))
        clients.append({"client_id": client_id, "secret": secret, "algorithm": algorithm})
    extra = record("soak-extra", hash_secret(a.bin, secrets.token_urlsafe(24), "sha256"),
                   "client_secret_basic")
    header = "# tokengate soak run: client file (rewritten every 30 s by soak_driver.py)\n\n"
    base = header + "\n".join(records)
    with open(os.path.join(a.dir, "clients.base.toml"), "w", encoding="utf-8") as f:
        f.write(base)
    with open(os.path.join(a.dir, "clients.extra.toml"), "w", encoding="utf-8") as f:
        f.write(extra)
    with open(os.path.join(a.dir, "clients.toml"), "w", encoding="utf-8") as f:
        f.write(base)
    with open(os.path.join(a.dir, "secrets.json"), "w", encoding="utf-8") as f:
        json.dump({"env_id": ENV_ID, "clients": clients}, f, indent=1)
    config = f"""# tokengate soak run (benches/soak.sh): settings chosen so that every limit is exercised
# within minutes.
default_upstream = "up"

[server]
listen = ["127.0.0.1:{a.gw_port}"]
threads = 2
header_timeout = "{HEADER_TIMEOUT}s"
keepalive_timeout = "{KEEPALIVE_TIMEOUT}s"
max_connections = {MAX_CONNECTIONS}
max_connections_per_ip = {MAX_CONNECTIONS_PER_IP}
grace_period = "1s"
shutdown_timeout = "1s"

[token]
body_timeout = "{BODY_TIMEOUT}s"

[upstreams.up]
url = "http://127.0.0.1:{a.up_port}"

[[routes]]
name = "token"
path = "/{{env_id}}/as/token"
mode = "validate"

[[routes]]
name = "introspect"
path = "/{{env_id}}/as/introspect"
mode = "validate"
endpoint = "introspection"

[clients]
file = "clients.toml"
reload_interval = "1s"

[lockout]
window = "{LOCKOUT_WINDOW}s"
max_failures_per_client = {MAX_FAILURES_PER_CLIENT}
max_failures_per_ip = {MAX_FAILURES_PER_IP}

[admin]
listen = "127.0.0.1:{a.admin_port}"
"""
    with open(os.path.join(a.dir, "gateway.toml"), "w", encoding="utf-8") as f:
        f.write(config)


# --------------------------------------------------------------------------------------------
# HTTP over plain sockets (the attackers need bytes no client library sends)
# --------------------------------------------------------------------------------------------

class Closed(Exception):
    """The gateway closed the connection before a whole answer."""


def connect(gw, source, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.bind((source, 0))
        s.connect(gw)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        s.close()
        raise
    return s


class Conn:
    """One client connection, with what was read past the last answer."""

    def __init__(self, gw, source, timeout=10.0):
        self.sock = connect(gw, source, timeout)
        self.buf = b""
        self.requests = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed()
        self.buf += chunk

    def exchange(self, raw):
        """Sends one request, returns (status, headers dict, body)."""
        self.sock.sendall(raw)
        self.requests += 1
        return self.read_answer()

    def read_answer(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
        else:
            body = b""
        return status, headers, body


def request(path, body=b"", headers=(), method="POST", content_length=None):
    lines = [f"{method} {path} HTTP/1.1", "Host: soak.test"]
    if method == "POST":
        lines.append("Content-Type: application/x-www-form-urlencoded")
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def form(pairs):
    return urllib.parse.urlencode(pairs).encode()


def basic(client_id, secret):
    """RFC 6749 §2.3.1: form-urlencode each half, then base64."""
    pair = urllib.parse.quote_plus(client_id, safe="") + ":" + urllib.parse.quote_plus(secret, safe="")
    return "Authorization: Basic " + base64.b64encode(pair.encode()).decode()


def client_request(endpoint, client_id, secret, use_basic):
    path = f"/{ENV_ID}/as/{endpoint}"
    params = [("grant_type", "client_credentials")] if endpoint == "token" else [("token", "at-" + secrets.token_hex(8))]
    if use_basic:
        return request(path, form(params), [basic(client_id, secret)])
    return request(path, form(params + [("client_id", client_id), ("client_secret", secret)]))


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

class Stats:
    """Outcomes by category (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes = defaultdict(Counter)   # category -> outcome -> count
        self.details = defaultdict(Counter)    # category:variant -> outcome -> count
        self.lifetimes = defaultdict(list)     # category -> seconds a connection lived
        self.legit_failures = []               # first failures, in detail
        self.legit_ms = []                     # legitimate requests' times, in ms
        self.legit_ok_clients = set()

    def add(self, category, outcome, variant=None):
        with self.lock:
            self.outcomes[category][str(outcome)] += 1
            if variant:
                self.details[f"{category}:{variant}"][str(outcome)] += 1

    def lifetime(self, category, seconds):
        with self.lock:
            if len(self.lifetimes[category]) < 200000:
                self.lifetimes[category].append(seconds)

    def legit_failure(self, t, client, how, outcome, detail):
        with self.lock:
            if len(self.legit_failures) < 50:
                self.legit_failures.append({"t": round(t, 3), "client": client, "how": how,
                                            "outcome": str(outcome), "detail": detail})


class Run:
    def __init__(self, a):
        self.a = a
        self.gw = ("127.0.0.1", a.gw_port)
        self.stop = threading.Event()
        self.attack = threading.Event()     # attackers start once every legit secret verified
        self.stats = Stats()
        with open(os.path.join(a.dir, "secrets.json"), encoding="utf-8") as f:
            self.clients = json.load(f)["clients"]
        self.t0 = time.monotonic()

    def now(self):
        return time.monotonic() - self.t0

    def paced(self, rate, body):
        """Calls body() `rate` times a second until stopped (no catch-up bursts beyond 1 s)."""
        interval = 1.0 / rate
        nxt = time.monotonic()
        while not self.stop.is_set():
            body()
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            elif delay < -1.0:
                nxt = time.monotonic()

    # ---- legitimate clients --------------------------------------------------------------

    def legit_thread(self, index):
        conn = None
        n = [index]  # request counter: picks client, method and endpoint in turn

        def one():
            nonlocal conn
            k = n[0]
            n[0] += 1
            c = self.clients[k % len(self.clients)]
            use_basic = (k // len(self.clients)) % 2 == 1
            endpoint = "introspect" if k % 5 == 4 else "token"
            how = f"{endpoint}/{'basic' if use_basic else 'post'}"
            raw = client_request(endpoint, c["client_id"], c["secret"], use_basic)
            t = self.now()
            started = time.monotonic()
            try:
                if conn is None or conn.requests >= self.a.reconnect_every:
                    if conn is not None:
                        conn.close()
                    conn = Conn(self.gw, LEGIT_IP)
                status, headers, _ = conn.exchange(raw)
                if headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                outcome, detail = status, ""
            except Closed:
                outcome, detail = "closed_before_answer", f"on request {conn.requests} of its connection"
                conn.close()
                conn = None
            except OSError as e:
                outcome, detail = f"error:{type(e).__name__}", str(e)
                if conn is not None:
                    conn.close()
                conn = None
            self.stats.add("legit", outcome, how)
            with self.stats.lock:
                self.stats.legit_ms.append(1000.0 * (time.monotonic() - started))
            if outcome == 200:
                if c["client_id"] not in self.stats.legit_ok_clients:
                    with self.stats.lock:
                        self.stats.legit_ok_clients.add(c["client_id"])
            else:
                self.stats.legit_failure(t, c["client_id"], how, outcome, detail)

        self.paced(self.a.legit_rate, one)
        if conn is not None:
            conn.close()

    # ---- attackers on 127.0.0.2 -------------------------------------------------------------

    def keepalive_attacker(self, category, rate, make):
        """Sends make() -> (variant, raw) at `rate`, over a kept-alive connection when allowed."""
        self.attack.wait()
        conn = None

        def one():
            nonlocal conn
            variant, raw = make()
            try:
                if conn is None:
                    conn = Conn(self.gw, ATTACKER_IP)
                status, headers, _ = conn.exchange(raw)
                outcome = status
                if headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Closed:
                outcome = "closed"
                conn.close()
                conn = None
            except OSError as e:
                outcome = f"error:{type(e).__name__}"
                if conn is not None:
                    conn.close()
                conn = None
            self.stats.add(category, outcome, variant)

        if not self.stop.is_set():
            self.paced(rate, one)
        if conn is not None:
            conn.close()

    def wrong_secret(self):
        c = random.choice(self.clients)
        use_basic = random.random() < 0.5
        guess = secrets.token_urlsafe(random.randint(8, 32))
        return ("basic" if use_basic else "post"), client_request("token", c["client_id"], guess, use_basic)

    def unknown_id(self):
        use_basic = random.random() < 0.5
        cid = "unknown-" + secrets.token_hex(6)
        return ("basic" if use_basic else "post"), client_request("token", cid, secrets.token_urlsafe(16), use_basic)

    MALFORMED = [
        # name, body, extra headers
        ("body_bad_escape_secret", b"grant_type=client_credentials&client_id=soak-client-0&client_secret=%zz", []),
        ("body_truncated_escape_id", b"grant_type=client_credentials&client_id=soak%2&client_secret=x", []),
        ("body_bad_utf8_secret", b"grant_type=client_credentials&client_id=soak-client-1&client_secret=%ff%fe", []),
        ("body_duplicate_secret", b"grant_type=client_credentials&client_id=soak-client-1&client_secret=a&client_secret=b", []),
        ("basic_bad_escape", b"grant_type=client_credentials",
         ["Authorization: Basic " + base64.b64encode(b"soak-client-2:%zz%").decode()]),
        ("basic_bad_escape_id", b"grant_type=client_credentials",
         ["Authorization: Basic " + base64.b64encode(b"soak%G1:secret").decode()]),
        ("basic_bad_base64", b"grant_type=client_credentials", ["Authorization: Basic !!!not*base64!!!"]),
        ("basic_no_colon", b"grant_type=client_credentials",
         ["Authorization: Basic " + base64.b64encode(b"soak-client-3").decode()]),
        ("basic_and_post", b"grant_type=client_credentials&client_id=soak-client-0&client_secret=x",
         ["Authorization: Basic " + base64.b64encode(b"soak-client-0:x").decode()]),
        ("no_credentials", b"grant_type=client_credentials", []),
    ]

    def malformed(self):
        name, body, headers = random.choice(self.MALFORMED)
        return name, request(f"/{ENV_ID}/as/token", body, headers)

    def stalled_body(self):
        """Content-Length 400, 40 bytes sent, then silence: how the gateway ends it, and when."""
        self.attack.wait()
        body = b"grant_type=client_credentials&client_id="
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                conn = Conn(self.gw, ATTACKER_IP, timeout=3 * BODY_TIMEOUT + 10)
            except OSError as e:
                self.stats.add("stalled_body", f"connect_error:{type(e).__name__}")
                self.stop.wait(1)
                continue
            try:
                conn.sock.sendall(request(f"/{ENV_ID}/as/token", body, content_length=400))
                status, _, _ = conn.read_answer()
                outcome = status
            except Closed:
                outcome = "closed"
            except socket.timeout:
                outcome = "no_answer_in_time"
            except OSError as e:
                outcome = f"error:{type(e).__name__}"
            conn.close()
            self.stats.add("stalled_body", outcome)
            self.stats.lifetime("stalled_body", time.monotonic() - start)
            self.stop.wait(0.5)

    # ---- connection holders on 127.0.0.3 -------------------------------------------------------

    def held(self, category, trickle):
        """One connection at a time: a head trickled a byte a second (or nothing) until closed."""
        self.attack.wait()
        head = request(f"/{ENV_ID}/as/token", b"", ["X-Soak: " + "a" * 200], content_length=0)
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                s = connect(self.gw, SLOW_IP)
            except OSError as e:
                self.stats.add(category, f"connect_error:{type(e).__name__}")
                self.stop.wait(1)
                continue
            outcome = None
            sent = 0
            while outcome is None:
                if self.stop.is_set():
                    outcome = "open_at_end"
                    break
                try:
                    readable, _, _ = select.select([s], [], [], 1.0)
                    if readable:
                        data = s.recv(4096)
                        if not data:
                            outcome = "closed"
                        else:
                            outcome = "answered_" + data.split(b" ", 2)[1].decode("latin-1", "replace")
                        break
                    if trickle and sent < len(head):
                        s.send(head[sent:sent + 1])
                        sent += 1
                except OSError:
                    outcome = "reset"
            life = time.monotonic() - start
            s.close()
            if outcome in ("closed", "reset"):
                if life < 1.0:
                    outcome += "_at_once"
                elif HEADER_TIMEOUT - 0.5 <= life <= HEADER_TIMEOUT + 1.5:
                    outcome += "_at_header_timeout"
                else:
                    outcome += "_late"
            self.stats.add(category, outcome)
            if outcome != "open_at_end":
                self.stats.lifetime(category, life)
            self.stop.wait(1.0)  # no reconnect flood

    def idle_keepalive(self):
        """One pass-through request, then silence: the kept-alive connection should close at
        keepalive_timeout."""
        self.attack.wait()
        while not self.stop.is_set():
            try:
                conn = Conn(self.gw, SLOW_IP, timeout=1.0)
                status, _, _ = conn.exchange(request("/soak/passthrough", method="GET"))
            except (OSError, Closed, ValueError) as e:
                # Closed or reset before any answer: refused (max_connections_per_ip) at once.
                self.stats.add("idle_keepalive", f"no_answer:{type(e).__name__}")
                self.stop.wait(1)
                continue
            answered = time.monotonic()
            outcome = None
            while outcome is None and not self.stop.is_set():
                try:
                    conn._fill()
                    outcome = "data_after_answer"
                except socket.timeout:
                    continue
                except (Closed, OSError):
                    outcome = "closed"
            life = time.monotonic() - answered
            conn.close()
            if outcome is None:
                self.stats.add("idle_keepalive", "open_at_end")
                break
            if outcome == "closed":
                ok = KEEPALIVE_TIMEOUT - 1 <= life <= KEEPALIVE_TIMEOUT + 2
                outcome = "closed_at_keepalive_timeout" if ok else f"closed_after_{life:.0f}s"
            self.stats.add("idle_keepalive", f"{status}_then_{outcome}")
            self.stats.lifetime("idle_keepalive", life)
            self.stop.wait(1.0)


# --------------------------------------------------------------------------------------------
# The gateway from outside: /proc and /metrics
# --------------------------------------------------------------------------------------------

def proc_sample(pid):
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)
    threads = int(fields[17])
    return {"rss_kb": rss_kb, "fds": fds, "cpu_ticks": ticks, "threads": threads}


METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC.match(line)
        if m:
            samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def by(samples, name, *labels):
    out = Counter()
    for n, lab, v in samples:
        if n == name:
            out[" ".join(lab.get(k, "") for k in labels) if labels else ""] += v
    return {k: int(v) for k, v in sorted(out.items())}


def metrics_summary(samples):
    one = lambda name: by(samples, name).get("", 0)  # noqa: E731
    return {
        "requests_total": one("tokengate_requests_total"),
        "requests_by_action_status": by(samples, "tokengate_requests_total", "action", "status_class"),
        "requests_by_route_action_status": by(samples, "tokengate_requests_total", "route", "action", "status_class"),
        "local_rejections_by_error": by(samples, "tokengate_local_rejections_total", "error"),
        "lockout_rejections": by(samples, "tokengate_local_rejections_total", "error").get("slow_down", 0),
        "header_timeouts": one("tokengate_header_timeouts_total"),
        "connections_refused": by(samples, "tokengate_connections_refused_total", "reason"),
        "connections_open": one("tokengate_connections_open"),
        "config_reloads": by(samples, "tokengate_config_reloads_total", "result"),
        "config_generation": one("tokengate_config_generation"),
        "client_file_generation": one("tokengate_client_file_generation"),
        "client_records": one("tokengate_client_records"),
        "secret_verifications": by(samples, "tokengate_secret_verifications_total", "kind"),
        "verifications_refused": one("tokengate_verifications_refused_total"),
        "upstream_errors": by(samples, "tokengate_upstream_errors_total", "kind"),
    }


def median_of(series, key, lo, hi):
    vals = [s[key] for s in series if lo <= s["t"] <= hi]
    return statistics.median(vals) if vals else None


def pct(a, b):
    return None if not a else round(100.0 * (b - a) / a, 2)


def log_summary(path):
    """Counts the gateway's log lines by level, and its non-access WARN/ERROR messages."""
    levels = Counter()
    messages = Counter()
    level_re = re.compile(r"\b(TRACE|DEBUG|INFO|WARN|ERROR)\b")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = level_re.search(line)
                level = m.group(1) if m else "other"
                levels[level] += 1
                if level in ("WARN", "ERROR", "other") and "tokengate::access" not in line:
                    text = line[m.end():] if m else line
                    text = re.sub(r"\d+", "N", text.strip())[:160]
                    messages[f"{level} {text}"] += 1
    except OSError:
        return {}
    return {"lines_by_level": dict(levels), "warn_error_messages": dict(messages.most_common(20))}


def lifetimes_summary(values):
    if not values:
        return None
    v = sorted(values)
    return {"n": len(v), "min": round(v[0], 2), "median": round(statistics.median(v), 2),
            "max": round(v[-1], 2)}


def run(a):
    r = Run(a)
    pid = a.pid
    clk = os.sysconf("SC_CLK_TCK")
    series = []
    base = proc_sample(pid)
    base_metrics = scrape(a.admin_port)
    t_start = r.now()
    print(f"soak: {a.duration}s against pid {pid}; warm-up sample at {a.warmup}s", flush=True)

    # The legitimate clients verify their secrets once before anyone attacks them (a client that
    # never verified waits out a lock on its id: README "Security model").
    for i, c in enumerate(r.clients):
        for use_basic in (False, True):
            conn = Conn(r.gw, LEGIT_IP)
            try:
                status, _, body = conn.exchange(client_request("token", c["client_id"], c["secret"], use_basic))
            finally:
                conn.close()
            r.stats.add("legit", status, "prime/" + ("basic" if use_basic else "post"))
            if status != 200:
                r.stats.legit_failure(r.now(), c["client_id"], "prime", status, body.decode("latin-1")[:200])

    threads = []

    def spawn(fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        threads.append(t)

    for i in range(a.legit_threads):
        spawn(r.legit_thread, i)
    spawn(r.keepalive_attacker, "wrong_secret", a.wrong_rate, r.wrong_secret)
    spawn(r.keepalive_attacker, "unknown_id", a.unknown_rate, r.unknown_id)
    spawn(r.keepalive_attacker, "malformed", a.malformed_rate, r.malformed)
    for _ in range(a.stalled):
        spawn(r.stalled_body)
    for _ in range(a.slow):
        spawn(r.held, "slow_head", True)
    for _ in range(a.silent):
        spawn(r.held, "silent", False)
    for _ in range(a.idle):
        spawn(r.idle_keepalive)
    r.attack.set()

    clients_base = open(os.path.join(a.dir, "clients.base.toml"), encoding="utf-8").read()
    clients_extra = open(os.path.join(a.dir, "clients.extra.toml"), encoding="utf-8").read()
    hups = 0
    rewrites = 0
    with_extra = False
    warm = None
    died = None
    next_tick = r.now()
    elapsed = 0.0
    sec = 0
    while sec < a.duration:
        sec += 1
        next_tick += 1.0
        r.stop.wait(max(0.0, next_tick - r.now()))
        elapsed = r.now() - t_start
        try:
            s = proc_sample(pid)
        except (OSError, StopIteration):
            died = round(elapsed, 1)
            print(f"soak: the gateway (pid {pid}) is gone at {died}s", flush=True)
            break
        s["t"] = round(elapsed, 1)
        series.append(s)
        if sec % 10 == 0 and sec < a.duration:  # (none whose reload the end would not see)
            os.kill(pid, signal.SIGHUP)
            hups += 1
        if sec % 30 == 15:
            with_extra = not with_extra
            path = os.path.join(a.dir, "clients.toml")
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(clients_base + ("\n" + clients_extra if with_extra else ""))
            os.replace(tmp, path)
            rewrites += 1
        if warm is None and elapsed >= a.warmup:
            warm = {"sample": s, "metrics": scrape(a.admin_port)}
        if sec % 30 == 0:
            legit = r.stats.outcomes["legit"]
            bad = sum(v for k, v in legit.items() if k != "200")
            print(f"  t={sec:4d}s rss={s['rss_kb']} kB fds={s['fds']} legit ok={legit.get('200', 0)} "
                  f"failed={bad} reloads sent={hups} file rewrites={rewrites}", flush=True)

    end = series[-1] if series else base
    end_metrics = scrape(a.admin_port) if died is None else base_metrics
    t_end = r.now() - t_start
    r.stop.set()
    for t in threads:
        t.join(timeout=HEADER_TIMEOUT + BODY_TIMEOUT + 5)
    drained = None
    if died is None:
        # Connections the attackers held close within header_timeout (the body timeout for stalled
        # bodies): then the fds should be back near where they were before the traffic.
        time.sleep(HEADER_TIMEOUT + 2)
        try:
            drained = proc_sample(pid)
            drained["connections_open"] = metrics_summary(scrape(a.admin_port))["connections_open"]
        except OSError:
            pass

    # Figures: medians of the 1-s samples over 10 s (from the warm-up point; the last 10 s of the
    # run), lest one instant decide a 10 % threshold: fds follow the attackers' connection churn,
    # and RSS jumps by 19 MiB for each argon2id verification in flight (a burst of them whenever a
    # lockout window lets guesses through again). RSS is checked once more after the traffic stops.
    w_t = warm["sample"]["t"] if warm else None
    fig = {}
    for key in ("rss_kb", "fds"):
        w = median_of(series, key, w_t, w_t + 10) if warm else None
        e = median_of(series, key, t_end - 10, t_end)
        fig[key] = {"baseline": base[key], "warmup": w, "end": e, "change_pct": pct(w, e),
                    "min": min(s[key] for s in series) if series else None,
                    "max": max(s[key] for s in series) if series else None,
                    "warmup_instant": warm["sample"][key] if warm else None,
                    "end_instant": end[key],
                    "drained": drained[key] if drained else None}
    m_end = metrics_summary(end_metrics)
    m_base = metrics_summary(base_metrics)
    m_warm = metrics_summary(warm["metrics"]) if warm else None
    answered = m_end["requests_total"] - m_base["requests_total"]
    cpu_s = (end["cpu_ticks"] - base["cpu_ticks"]) / clk
    cpu = {"seconds": round(cpu_s, 2), "requests_answered": answered,
           "us_per_request": round(1e6 * cpu_s / answered, 1) if answered else None,
           "average_cores": round(cpu_s / t_end, 3) if t_end else None}
    if warm and m_warm:
        steady_req = m_end["requests_total"] - m_warm["requests_total"]
        steady_cpu = (end["cpu_ticks"] - warm["sample"]["cpu_ticks"]) / clk
        cpu["after_warmup_us_per_request"] = round(1e6 * steady_cpu / steady_req, 1) if steady_req else None

    legit = dict(r.stats.outcomes["legit"])
    legit_total = sum(legit.values())
    legit_failed = legit_total - legit.get("200", 0)
    ms = sorted(r.stats.legit_ms)
    latency = {"p50": round(ms[len(ms) // 2], 2), "p99": round(ms[int(len(ms) * 0.99)], 2),
               "p999": round(ms[int(len(ms) * 0.999)], 2), "max": round(ms[-1], 2)} if ms else None
    attackers = {k: dict(v) for k, v in r.stats.outcomes.items() if k != "legit"}
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model()},
        "command": a.command,
        # glibc malloc tunables the gateway inherited (they change its RSS: see README "Soak").
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))},
        "duration_s": round(t_end, 1),
        "warmup_s": a.warmup,
        "gateway_died_at_s": died,
        "settings": {"header_timeout_s": HEADER_TIMEOUT, "keepalive_timeout_s": KEEPALIVE_TIMEOUT,
                     "body_timeout_s": BODY_TIMEOUT, "lockout_window_s": LOCKOUT_WINDOW,
                     "max_failures_per_client": MAX_FAILURES_PER_CLIENT,
                     "max_failures_per_ip": MAX_FAILURES_PER_IP,
                     "max_connections": MAX_CONNECTIONS,
                     "max_connections_per_ip": MAX_CONNECTIONS_PER_IP,
                     "legit_clients": len(r.clients),
                     "legit_threads": a.legit_threads, "legit_rate_per_thread": a.legit_rate,
                     "wrong_rate": a.wrong_rate, "unknown_rate": a.unknown_rate,
                     "malformed_rate": a.malformed_rate, "stalled": a.stalled, "slow": a.slow,
                     "silent": a.silent, "idle": a.idle},
        "legit": {"requests": legit_total, "failed": legit_failed, "outcomes": legit,
                  "latency_ms": latency,
                  "by_kind": {k.split(":", 1)[1]: dict(v) for k, v in r.stats.details.items()
                              if k.startswith("legit:")},
                  "first_failures": r.stats.legit_failures},
        "attackers": attackers,
        "attacker_details": {k: dict(v) for k, v in r.stats.details.items() if not k.startswith("legit:")},
        "connection_lifetimes_s": {k: lifetimes_summary(v) for k, v in r.stats.lifetimes.items()},
        "sighups_sent": hups,
        "client_file_rewrites": rewrites,
        "rss_kb": fig["rss_kb"],
        "fds": fig["fds"],
        "threads": {"baseline": base["threads"], "end": end["threads"]},
        "drained": drained,
        "cpu": cpu,
        "metrics_end": m_end,
        "metrics_warmup": m_warm,
        "gateway_log": log_summary(a.log) if a.log else None,
        "series": [{k: s[k] for k in ("t", "rss_kb", "fds", "threads")} for s in series],
    }
    problems = []
    if died is not None:
        problems.append(f"the gateway died at {died}s")
    if legit_failed:
        problems.append(f"{legit_failed} legitimate requests failed")
    for key in ("rss_kb", "fds"):
        ch = fig[key]["change_pct"]
        if ch is None or ch > 10.0:
            problems.append(f"{key} grew {ch} % from warm-up to end (limit 10 %)")
    rss_drained = fig["rss_kb"]["drained"]
    drained_ch = pct(fig["rss_kb"]["warmup"], rss_drained) if rss_drained else None
    if drained_ch is not None and drained_ch > 10.0 and (fig["rss_kb"]["change_pct"] or 0) <= 10.0:
        problems.append(f"rss_kb after the traffic stopped is {drained_ch} % above warm-up (limit 10 %)")
    if m_end["config_reloads"].get("failed", 0):
        problems.append(f"{m_end['config_reloads']['failed']} configuration reloads failed")
    summary["problems"] = problems
    summary["passed"] = not problems

    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print_summary(summary, a.json)
    return 0 if not problems else 1


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def print_summary(s, path):
    p = print
    p("")
    p(f"== tokengate soak: {s['duration_s']} s, {s['date']}, {s['machine']['nproc']} × {s['machine']['cpu']}"
      + (f", gateway with {s['malloc_env']}" if s["malloc_env"] else ""))
    lg = s["legit"]
    p(f"legitimate requests: {lg['requests']}, failed: {lg['failed']}  outcomes: {lg['outcomes']}")
    p(f"   latency ms: {lg['latency_ms']}")
    for f in lg["first_failures"][:10]:
        p(f"   failure at {f['t']}s {f['client']} {f['how']}: {f['outcome']} {f['detail']}")
    p("attackers (outcome: count):")
    for k, v in sorted(s["attackers"].items()):
        p(f"   {k:15s} {dict(sorted(v.items(), key=lambda kv: -kv[1]))}")
    for k, v in sorted(s["connection_lifetimes_s"].items()):
        if v:
            p(f"   {k:15s} connection lifetime s: {v}")
    for key, unit in (("rss_kb", "kB"), ("fds", "")):
        f = s[key]
        p(f"{key:6s} (medians of 10 s) baseline {f['baseline']} warm-up {f['warmup']} end {f['end']} {unit} "
          f"change {f['change_pct']} % (min {f['min']}, max {f['max']}, after drain {f['drained']})")
    c = s["cpu"]
    p(f"cpu: {c['seconds']} s for {c['requests_answered']} requests = {c['us_per_request']} µs/request "
      f"(after warm-up {c.get('after_warmup_us_per_request')} µs), {c['average_cores']} cores on average")
    m = s["metrics_end"]
    p(f"gateway metrics at end: requests {m['requests_total']} by action/status {m['requests_by_action_status']}")
    p(f"   local rejections {m['local_rejections_by_error']} (lockout: {m['lockout_rejections']})")
    p(f"   header timeouts {m['header_timeouts']}, connections refused {m['connections_refused']}, "
      f"open {m['connections_open']}")
    p(f"   config reloads {m['config_reloads']} (SIGHUPs sent {s['sighups_sent']}), generation "
      f"{m['config_generation']}; client file generation {m['client_file_generation']} "
      f"(rewrites {s['client_file_rewrites']}), records {m['client_records']}")
    p(f"   secret verifications {m['secret_verifications']}, refused {m['verifications_refused']}, "
      f"upstream errors {m['upstream_errors']}")
    if s.get("gateway_log"):
        p(f"gateway log lines by level: {s['gateway_log'].get('lines_by_level')}")
        for msg, n in s["gateway_log"].get("warn_error_messages", {}).items():
            p(f"   {n:6d}  {msg}")
    p("result: " + ("PASS" if s["passed"] else "FAIL: " + "; ".join(s["problems"])))
    p(f"summary written to {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--dir", required=True)
    p.add_argument("--bin", required=True)
    p.add_argument("--clients", type=int, default=8)
    for name in ("gw-port", "admin-port", "up-port"):
        p.add_argument("--" + name, type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--dir", required=True)
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--gw-port", type=int, required=True)
    r.add_argument("--admin-port", type=int, required=True)
    r.add_argument("--duration", type=int, default=600)
    r.add_argument("--warmup", type=int, default=60)
    r.add_argument("--json", required=True)
    r.add_argument("--log", default="")
    r.add_argument("--command", default="")
    r.add_argument("--legit-threads", type=int, default=4)
    r.add_argument("--legit-rate", type=float, default=25.0, help="requests/s per legit thread")
    r.add_argument("--reconnect-every", type=int, default=100)
    r.add_argument("--wrong-rate", type=float, default=20.0)
    r.add_argument("--unknown-rate", type=float, default=10.0)
    r.add_argument("--malformed-rate", type=float, default=10.0)
    r.add_argument("--stalled", type=int, default=6)
    r.add_argument("--slow", type=int, default=40)
    r.add_argument("--silent", type=int, default=30)
    r.add_argument("--idle", type=int, default=3)
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a)
        return 0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
