#!/usr/bin/env node
// Interop client for tokengate's integration tests: openid-client 6.x, by default in its own default client
// authentication style (ClientSecretPost when a secret is given, None otherwise).
//
// Usage: node client.mjs '<json>'
//   json = {"metadata_url": URL, "client_id": "...", "client_secret": "..." (absent for a public client),
//           "auth": "default"|"basic"|"post"|"none", "redirect_uri": "...", "scope": "..." (optional, for
//           client_credentials), "steps": ["client_credentials", {"step": "client_credentials", "scope": "api:read",
//           "resource": "https://api.example/" (string or array, client_credentials only)}, ...]}
// Prints exactly one JSON object on stdout: {"steps":[{"step":name,"ok":bool,"detail":"..."}...]}.
// Exit 0 whatever the steps' outcome; exit 2 on a usage error, 1 on an internal bug.

import * as client from 'openid-client';

const REQUEST_TIMEOUT_S = 20;
const RUN_TIMEOUT_MS = 150_000;
const KNOWN_STEPS = new Set([
  'client_credentials', 'introspect', 'revoke', 'authorization_code', 'refresh', 'par',
  'device_authorization', 'authorize_only',
]);

function usage(msg) {
  process.stderr.write(`client.mjs: ${msg}\nusage: node client.mjs '<json>'\n`);
  process.exit(2);
}

let input;
try {
  input = JSON.parse(process.argv[2] ?? '');
} catch {
  usage('first argument must be a JSON object');
}
if (!input || typeof input !== 'object') usage('first argument must be a JSON object');
for (const k of ['metadata_url', 'client_id']) {
  if (typeof input[k] !== 'string' || !input[k]) usage(`"${k}" is required`);
}
if (!Array.isArray(input.steps)) usage('"steps" must be an array');
const auth = input.auth ?? 'default';
if (!['default', 'basic', 'post', 'none'].includes(auth)) usage(`unknown auth ${auth}`);
const steps = input.steps.map((s) => (typeof s === 'string' ? { step: s } : { ...s, step: s?.step ?? s?.name }));
for (const s of steps) {
  if (!KNOWN_STEPS.has(s.step)) usage(`unknown step ${JSON.stringify(s.step)}`);
}
const redirectUri = input.redirect_uri ?? 'http://localhost:3000/callback';

const results = [];
let printed = false;
function finish(code = 0) {
  if (!printed) {
    printed = true;
    process.stdout.write(`${JSON.stringify({ steps: results })}\n`);
  }
  process.exit(code);
}

let current;
setTimeout(() => {
  if (current) results.push({ step: current, ok: false, detail: 'timeout (whole run)' });
  finish(0);
}, RUN_TIMEOUT_MS).unref();

// a short, secret-free description of a failure
function describe(err) {
  if (err instanceof client.ResponseBodyError) return `${err.error} (status ${err.status})`;
  if (err instanceof client.WWWAuthenticateChallengeError) {
    // a 401 with WWW-Authenticate (a failed Basic authentication): report the challenge's error like a body error
    const error = err.cause?.find?.((c) => c?.parameters?.error)?.parameters?.error || err.bodyError || 'www_authenticate';
    return `${error} (status ${err.status})`;
  }
  if (err instanceof client.AuthorizationResponseError) return `${err.error} (authorization response)`;
  if (err?.cause instanceof Response) return `${err.code || err.name} (status ${err.cause.status})`;
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') return 'timeout';
  const code = err?.code || err?.cause?.code || err?.name || 'Error';
  const msg = String(err?.message ?? err).slice(0, 120);
  return `${code}: ${msg}`;
}

// ---- configuration ----------------------------------------------------------------------------------------
async function loadConfig() {
  const res = await fetch(input.metadata_url, {
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_S * 1000),
  });
  if (!res.ok) throw new Error(`metadata: HTTP ${res.status}`);
  const metadata = await res.json();
  let clientAuth;
  switch (auth) {
    case 'basic': clientAuth = client.ClientSecretBasic(input.client_secret); break;
    case 'post': clientAuth = client.ClientSecretPost(input.client_secret); break;
    case 'none': clientAuth = client.None(); break;
    default: clientAuth = undefined; // openid-client's default: ClientSecretPost with a secret, None without
  }
  const clientMetadata = typeof input.client_secret === 'string' ? { client_secret: input.client_secret } : {};
  const config = new client.Configuration(metadata, input.client_id, clientMetadata, clientAuth);
  client.allowInsecureRequests(config);
  config.timeout = REQUEST_TIMEOUT_S;
  return config;
}

// ---- the authorize leg: manual redirects, a name-keyed cookie jar ------------------------------------------
async function authorizeLeg(config, { pkce }) {
  const state = client.randomState();
  const params = {
    redirect_uri: redirectUri,
    scope: 'openid offline_access',
    prompt: 'consent',
    response_type: 'code',
    state,
  };
  let codeVerifier;
  if (pkce) {
    codeVerifier = client.randomPKCECodeVerifier();
    params.code_challenge = await client.calculatePKCECodeChallenge(codeVerifier);
    params.code_challenge_method = 'S256';
  }
  let url = client.buildAuthorizationUrl(config, params).href;
  const jar = new Map();
  for (let hop = 0; hop < 12; hop += 1) {
    const headers = {};
    if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(url, { redirect: 'manual', headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_S * 1000) });
    for (const sc of res.headers.getSetCookie()) {
      const [pair, ...attrs] = sc.split(';');
      const eq = pair.indexOf('=');
      if (eq === -1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => {
        const [k, v] = a.split('=');
        const key = k.trim().toLowerCase();
        return (key === 'max-age' && Number(v) <= 0) || (key === 'expires' && Date.parse(v) < Date.now());
      });
      if (expired || value === '') jar.delete(name); else jar.set(name, value);
    }
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) {
      let error = '';
      try {
        const text = await res.text();
        error = /"error"\s*:\s*"([^"]+)"/.exec(text)?.[1] ?? '';
      } catch { /* ignore */ }
      throw new Error(`authorize: HTTP ${res.status} without redirect${error ? ` (${error})` : ''}`);
    }
    await res.arrayBuffer().catch(() => {});
    const next = new URL(location, url).href;
    if (next.startsWith(redirectUri)) {
      const cb = new URL(next);
      if (cb.searchParams.get('error')) {
        throw Object.assign(new Error('authorization error'), { code: cb.searchParams.get('error') });
      }
      return { callbackUrl: cb, codeVerifier, state };
    }
    url = next;
  }
  throw new Error('authorize: too many redirects');
}

// ---- steps ------------------------------------------------------------------------------------------------
const state = { accessToken: undefined, refreshToken: undefined };

async function runStep(config, s) {
  switch (s.step) {
    case 'client_credentials': {
      const scope = s.scope ?? input.scope;
      const params = new URLSearchParams();
      if (scope) params.append('scope', scope);
      for (const r of [s.resource ?? []].flat()) params.append('resource', r); // RFC 8707, may repeat
      const tokens = await client.clientCredentialsGrant(config, params);
      if (!tokens.access_token) return [false, 'no access_token'];
      state.accessToken = tokens.access_token;
      return [true, `access_token, expires_in=${tokens.expires_in ?? 'n/a'}`];
    }
    case 'introspect': {
      if (!state.accessToken) return [false, 'no access token from an earlier step'];
      const r = await client.tokenIntrospection(config, state.accessToken);
      return [r.active === true, `active=${r.active}${r.aud ? `, aud=${[r.aud].flat().join(' ')}` : ''}`];
    }
    case 'revoke': {
      if (!state.accessToken) return [false, 'no access token from an earlier step'];
      await client.tokenRevocation(config, state.accessToken);
      try {
        const r = await client.tokenIntrospection(config, state.accessToken);
        return [r.active === false, `revoked, active=${r.active}`];
      } catch (err) {
        return [true, `revoked, introspect failed: ${describe(err)}`];
      }
    }
    case 'authorization_code': {
      const { callbackUrl, codeVerifier, state: expectedState } = await authorizeLeg(config, { pkce: true });
      const tokens = await client.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: codeVerifier,
        expectedState,
      });
      if (!tokens.access_token) return [false, 'no access_token'];
      state.accessToken = tokens.access_token;
      if (tokens.refresh_token) state.refreshToken = tokens.refresh_token;
      return [true, `access_token${tokens.refresh_token ? ', refresh_token' : ''}${tokens.id_token ? ', id_token' : ''}`];
    }
    case 'refresh': {
      if (!state.refreshToken) return [false, 'no refresh token from an earlier step'];
      const tokens = await client.refreshTokenGrant(config, state.refreshToken);
      if (!tokens.access_token) return [false, 'no access_token'];
      state.accessToken = tokens.access_token;
      if (tokens.refresh_token) state.refreshToken = tokens.refresh_token;
      return [true, `access_token${tokens.refresh_token ? ', refresh_token' : ''}`];
    }
    case 'par': {
      const url = await client.buildAuthorizationUrlWithPAR(config, {
        redirect_uri: redirectUri,
        scope: 'openid',
        response_type: 'code',
        state: client.randomState(),
      });
      const ok = url.searchParams.has('request_uri');
      return [ok, ok ? 'request_uri' : 'no request_uri in the authorization URL'];
    }
    case 'device_authorization': {
      const da = await client.initiateDeviceAuthorization(config, { scope: 'openid' });
      if (!da.device_code) return [false, 'no device_code'];
      try {
        await client.genericGrantRequest(config, 'urn:ietf:params:oauth:grant-type:device_code', {
          device_code: da.device_code,
        });
        return [false, 'token poll unexpectedly succeeded'];
      } catch (err) {
        if (err instanceof client.ResponseBodyError && err.error === 'authorization_pending') {
          return [true, 'authorization_pending'];
        }
        return [false, `poll: ${describe(err)}`];
      }
    }
    case 'authorize_only': {
      const { callbackUrl } = await authorizeLeg(config, { pkce: false });
      const code = callbackUrl.searchParams.get('code');
      return code ? [true, code] : [false, 'no code in the redirect'];
    }
    default:
      throw new Error(`unknown step ${s.step}`);
  }
}

try {
  let config;
  try {
    config = await loadConfig();
  } catch (err) {
    for (const s of steps) results.push({ step: s.step, ok: false, detail: `configuration: ${describe(err)}` });
    finish(0);
  }
  for (const s of steps) {
    current = s.step;
    try {
      const [ok, detail] = await runStep(config, s);
      results.push({ step: s.step, ok, detail });
    } catch (err) {
      if (err instanceof client.WWWAuthenticateChallengeError) {
        try {
          err.bodyError = (await err.response.clone().json())?.error;
        } catch { /* no JSON body */ }
      }
      results.push({ step: s.step, ok: false, detail: describe(err) });
    }
    current = undefined;
  }
  finish(0);
} catch (err) {
  process.stderr.write(`client.mjs: internal error: ${err?.stack || err}\n`);
  finish(1);
}
