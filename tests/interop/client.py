#!/usr/bin/env python3
"""Interop client for tokengate's integration tests, in the style of PingOne's Python sample (`requests`).

Usage: python3 client.py '<json>'
  json = {"metadata_url": URL, "client_id": "...", "client_secret": "..." (absent for a public client),
          "auth": "default"|"post"|"basic"|"basic_raw"|"none", "redirect_uri": "...", "scope": "..." (optional,
          for client_credentials), "steps": ["client_credentials", {"step": "client_credentials", "scope": "x",
          "resource": "https://api.example/" (string or array, client_credentials only)}, ...]}

auth:
  default, post  client_id + client_secret as form fields in `data=` (client_secret_post, PingOne's sample)
  basic          Authorization: Basic built per RFC 6749 section 2.3.1 (quote_plus of id and secret, then base64)
  basic_raw      requests' own auth=(id, secret): base64 of the raw "id:secret"
  none           client_id only (public client)

Prints exactly one JSON object on stdout: {"steps":[{"step":name,"ok":bool,"detail":"..."}...]}.
Exit 0 whatever the steps' outcome; exit 2 on a usage error, 1 on an internal bug.
"""

import base64
import hashlib
import json
import secrets
import sys
import threading
import os
import urllib.parse

import requests

REQUEST_TIMEOUT = 20
RUN_TIMEOUT = 150
KNOWN_STEPS = {
    "client_credentials", "introspect", "revoke", "authorization_code", "refresh", "par",
    "device_authorization", "authorize_only",
}
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def usage(msg):
    sys.stderr.write(f"client.py: {msg}\nusage: python3 client.py '<json>'\n")
    sys.exit(2)


class StepFailed(Exception):
    pass


def describe_response(resp):
    """Short, secret-free description of an error response: OAuth error code and status."""
    err = ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            err = str(body.get("error", ""))
    except ValueError:
        pass
    return f"{err} (status {resp.status_code})" if err else f"HTTP {resp.status_code}"


def describe_exc(exc):
    if isinstance(exc, StepFailed):
        return str(exc)
    if isinstance(exc, requests.Timeout):
        return "timeout"
    return f"{type(exc).__name__}: {str(exc)[:120]}"


class Client:
    def __init__(self, cfg):
        self.cfg = cfg
        self.client_id = cfg["client_id"]
        self.client_secret = cfg.get("client_secret")
        self.auth = cfg.get("auth", "default")
        self.redirect_uri = cfg.get("redirect_uri", "http://localhost:3000/callback")
        self.http = requests.Session()
        self.access_token = None
        self.refresh_token = None
        self.last_aud = None
        resp = self.http.get(cfg["metadata_url"], headers={"Accept": "application/json"}, timeout=REQUEST_TIMEOUT)
        if resp.status_code != 200:
            raise StepFailed(f"metadata: HTTP {resp.status_code}")
        self.meta = resp.json()

    def endpoint(self, name):
        url = self.meta.get(name)
        if not url:
            raise StepFailed(f"metadata has no {name}")
        return url

    def post(self, endpoint_name, params):
        """POST a form to an endpoint with this client's authentication style."""
        data = list(params.items()) if isinstance(params, dict) else list(params)
        data = [(k, v) for k, v in data if not (k == "client_id" and self.auth in ("default", "post", "none"))]
        kwargs = {}
        if self.auth in ("default", "post"):
            data.append(("client_id", self.client_id))
            if self.client_secret is not None:
                data.append(("client_secret", self.client_secret))
        elif self.auth == "none":
            data.append(("client_id", self.client_id))
        elif self.auth == "basic":
            user = urllib.parse.quote_plus(self.client_id)
            pw = urllib.parse.quote_plus(self.client_secret or "")
            token = base64.b64encode(f"{user}:{pw}".encode("utf-8")).decode("ascii")
            kwargs["headers"] = {"Authorization": f"Basic {token}"}
        elif self.auth == "basic_raw":
            kwargs["auth"] = (self.client_id, self.client_secret or "")
        return self.http.post(self.endpoint(endpoint_name), data=data, timeout=REQUEST_TIMEOUT, **kwargs)

    def token(self, params):
        resp = self.post("token_endpoint", params)
        if resp.status_code != 200:
            raise StepFailed(describe_response(resp))
        body = resp.json()
        if not body.get("access_token"):
            raise StepFailed("no access_token")
        self.access_token = body["access_token"]
        if body.get("refresh_token"):
            self.refresh_token = body["refresh_token"]
        return body

    def introspect(self):
        resp = self.post("introspection_endpoint", {"token": self.access_token})
        if resp.status_code != 200:
            raise StepFailed(describe_response(resp))
        body = resp.json()
        self.last_aud = body.get("aud")
        return body.get("active")

    def authorize_leg(self, pkce):
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid offline_access",
            "prompt": "consent",
            "state": state,
        }
        verifier = None
        if pkce:
            verifier = secrets.token_urlsafe(48)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
            params["code_challenge"] = challenge.decode("ascii")
            params["code_challenge_method"] = "S256"
        browser = requests.Session()  # own cookie jar, like a user agent
        url = self.endpoint("authorization_endpoint") + "?" + urllib.parse.urlencode(params)
        for _ in range(12):
            resp = browser.get(url, allow_redirects=False, timeout=REQUEST_TIMEOUT)
            location = resp.headers.get("Location")
            if not (300 <= resp.status_code < 400) or not location:
                raise StepFailed(f"authorize: {describe_response(resp)} without redirect")
            nxt = urllib.parse.urljoin(url, location)
            if nxt.startswith(self.redirect_uri):
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(nxt).query)
                if "error" in query:
                    raise StepFailed(f"{query['error'][0]} (authorization response)")
                if query.get("state", [None])[0] != state:
                    raise StepFailed("state mismatch")
                code = query.get("code", [None])[0]
                if not code:
                    raise StepFailed("no code in the redirect")
                return code, verifier
            url = nxt
        raise StepFailed("authorize: too many redirects")

    def run(self, step):
        name = step["step"]
        if name == "client_credentials":
            params = [("grant_type", "client_credentials")]
            scope = step.get("scope", self.cfg.get("scope"))
            if scope:
                params.append(("scope", scope))
            resource = step.get("resource", [])
            for r in [resource] if isinstance(resource, str) else resource:  # RFC 8707, may repeat
                params.append(("resource", r))
            body = self.token(params)
            return True, f"access_token, expires_in={body.get('expires_in', 'n/a')}"
        if name == "introspect":
            if not self.access_token:
                return False, "no access token from an earlier step"
            active = self.introspect()
            aud = self.last_aud
            aud = f", aud={' '.join(aud) if isinstance(aud, list) else aud}" if aud else ""
            return active is True, f"active={json.dumps(active)}{aud}"
        if name == "revoke":
            if not self.access_token:
                return False, "no access token from an earlier step"
            resp = self.post("revocation_endpoint", {"token": self.access_token, "token_type_hint": "access_token"})
            if resp.status_code != 200:
                raise StepFailed(describe_response(resp))
            try:
                active = self.introspect()
            except Exception as exc:  # noqa: BLE001
                return True, f"revoked, introspect failed: {describe_exc(exc)}"
            return active is False, f"revoked, active={json.dumps(active)}"
        if name == "authorization_code":
            code, verifier = self.authorize_leg(pkce=True)
            params = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
            if verifier:
                params["code_verifier"] = verifier
            body = self.token(params)
            extras = "".join(f", {k}" for k in ("refresh_token", "id_token") if body.get(k))
            return True, f"access_token{extras}"
        if name == "refresh":
            if not self.refresh_token:
                return False, "no refresh token from an earlier step"
            body = self.token({"grant_type": "refresh_token", "refresh_token": self.refresh_token})
            return True, "access_token" + (", refresh_token" if body.get("refresh_token") else "")
        if name == "par":
            # client_id is an authorization request parameter too: oidc-provider requires it in the PAR body
            # even when the client authenticates with a Basic header
            resp = self.post("pushed_authorization_request_endpoint", {
                "client_id": self.client_id,
                "response_type": "code",
                "redirect_uri": self.redirect_uri,
                "scope": "openid",
                "state": secrets.token_urlsafe(16),
            })
            if resp.status_code != 201:
                raise StepFailed(describe_response(resp))
            ok = bool(resp.json().get("request_uri"))
            return ok, "request_uri" if ok else "no request_uri"
        if name == "device_authorization":
            resp = self.post("device_authorization_endpoint", {"scope": "openid"})
            if resp.status_code != 200:
                raise StepFailed(describe_response(resp))
            device_code = resp.json().get("device_code")
            if not device_code:
                return False, "no device_code"
            poll = self.post("token_endpoint", {"grant_type": DEVICE_GRANT, "device_code": device_code})
            if poll.status_code == 200:
                return False, "token poll unexpectedly succeeded"
            try:
                err = poll.json().get("error")
            except ValueError:
                err = None
            if err == "authorization_pending":
                return True, "authorization_pending"
            return False, f"poll: {describe_response(poll)}"
        if name == "authorize_only":
            code, _ = self.authorize_leg(pkce=False)
            return True, code
        raise StepFailed(f"unknown step {name}")


def main():
    try:
        cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        usage("first argument must be a JSON object")
    for key in ("metadata_url", "client_id"):
        if not isinstance(cfg.get(key), str) or not cfg[key]:
            usage(f'"{key}" is required')
    if not isinstance(cfg.get("steps"), list):
        usage('"steps" must be an array')
    if cfg.get("auth", "default") not in ("default", "post", "basic", "basic_raw", "none"):
        usage(f"unknown auth {cfg.get('auth')}")
    steps = []
    for s in cfg["steps"]:
        step = {"step": s} if isinstance(s, str) else dict(s, step=s.get("step", s.get("name")))
        if step["step"] not in KNOWN_STEPS:
            usage(f"unknown step {json.dumps(step['step'])}")
        steps.append(step)

    results = []
    current = {"step": None}
    lock = threading.Lock()
    printed = {"done": False}

    def finish(code):
        with lock:
            if not printed["done"]:
                printed["done"] = True
                sys.stdout.write(json.dumps({"steps": results}) + "\n")
                sys.stdout.flush()
        os._exit(code)

    def watchdog():
        if current["step"]:
            results.append({"step": current["step"], "ok": False, "detail": "timeout (whole run)"})
        finish(0)

    timer = threading.Timer(RUN_TIMEOUT, watchdog)
    timer.daemon = True
    timer.start()

    try:
        try:
            client = Client(cfg)
        except Exception as exc:  # noqa: BLE001
            for s in steps:
                results.append({"step": s["step"], "ok": False, "detail": f"configuration: {describe_exc(exc)}"})
            finish(0)
        for s in steps:
            current["step"] = s["step"]
            try:
                ok, detail = client.run(s)
            except Exception as exc:  # noqa: BLE001
                ok, detail = False, describe_exc(exc)
            results.append({"step": s["step"], "ok": bool(ok), "detail": detail})
            current["step"] = None
        finish(0)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001
        sys.stderr.write(f"client.py: internal error: {exc!r}\n")
        finish(1)


if __name__ == "__main__":
    main()
