#!/usr/bin/env node
// Interop authorization server for tokengate's integration tests: node `oidc-provider` 9.x laid out like
// PingOne (everything under /<ENV>/as), with a scripted login+consent (account `alice`, no HTML) and two
// optional behaviours that oidc-provider lacks on its own:
//   --enforce-method  PingOne-style: a confidential client must use exactly its registered method
//                     (client_secret_basic vs client_secret_post) on token/introspect/revoke/par/device_authorization
//   --basic raw       an old server: Basic credentials are compared WITHOUT form-decoding
//
// Usage: node as.mjs --env ENVID --clients CLIENTS.json [--enforce-method] [--basic raw|rfc6749] [--issuer URL]
// Prints exactly one line `READY <port>` on stdout once listening on 127.0.0.1:<ephemeral port>; everything
// else goes to stderr. Exits when stdin closes, on SIGTERM and on SIGINT.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as querystring from 'node:querystring';

// oidc-provider prints NOTICEs with console.info (stdout); stdout is reserved for the READY line.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

const usage = 'usage: node as.mjs --env ENVID --clients CLIENTS.json [--enforce-method] [--basic raw|rfc6749] [--issuer URL]';

function parseArgs(argv) {
  const opts = { env: undefined, clients: undefined, enforceMethod: false, basic: 'rfc6749', issuer: undefined };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      i += 1;
      return argv[i];
    };
    switch (a) {
      case '--env': opts.env = value(); break;
      case '--clients': opts.clients = value(); break;
      case '--enforce-method': opts.enforceMethod = true; break;
      case '--basic': opts.basic = value(); break;
      case '--issuer': opts.issuer = value(); break;
      case '-h': case '--help': process.stderr.write(`${usage}\n`); process.exit(0); break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!opts.env || !opts.clients) throw new Error('--env and --clients are required');
  if (!/^[A-Za-z0-9._~-]+$/.test(opts.env)) throw new Error('--env must be a single path segment');
  if (!['raw', 'rfc6749'].includes(opts.basic)) throw new Error('--basic must be raw or rfc6749');
  return opts;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`as.mjs: ${e.message}\n${usage}\n`);
  process.exit(2);
}

// Never outlive the test: stdin closing (parent gone / test dropped the pipe) or a signal ends the process.
const bye = (why) => {
  process.stderr.write(`as.mjs: exiting (${why})\n`);
  process.exit(0);
};
// Only a pipe, socket or terminal is watched: with stdin at /dev/null or a regular file, 'end' would fire at once.
const stdinStat = fs.fstatSync(0);
if (stdinStat.isFIFO() || stdinStat.isSocket() || process.stdin.isTTY) {
  process.stdin.on('end', () => bye('stdin closed'));
  process.stdin.on('close', () => bye('stdin closed'));
  process.stdin.on('error', () => bye('stdin error'));
  process.stdin.resume();
} else {
  process.stderr.write('as.mjs: stdin is not a pipe; it is not watched (stop the server with SIGTERM)\n');
}
process.on('SIGTERM', () => bye('SIGTERM'));
process.on('SIGINT', () => bye('SIGINT'));
process.on('SIGHUP', () => bye('SIGHUP'));

const { default: Provider, errors: oidcErrors } = await import('oidc-provider');

const rawClients = JSON.parse(fs.readFileSync(opts.clients, 'utf8'));
if (!Array.isArray(rawClients)) {
  process.stderr.write('as.mjs: CLIENTS.json must be an array of client metadata objects\n');
  process.exit(2);
}
const clients = rawClients.map((c) => ({ ...c }));
const clientsById = new Map(clients.map((c) => [c.client_id, c]));
const authMethodOf = (c) => c.token_endpoint_auth_method || 'client_secret_basic';

const PREFIX = `/${opts.env}/as`;
const AUTH_POSTS = new Set(['/token', '/introspect', '/revoke', '/par', '/device_authorization']);
const BODY_LIMIT = 56 * 1024; // same as oidc-provider's own parser

// An RS256 signing key generated per run (oidc-provider would otherwise use an insecure dev key).
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };

const server = http.createServer();
server.listen(0, '127.0.0.1');
await new Promise((resolve, reject) => {
  server.once('listening', resolve);
  server.once('error', reject);
});
const { port } = server.address();
const issuer = opts.issuer || `http://127.0.0.1:${port}${PREFIX}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'api:read', 'api:write'],
  claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, name: 'Alice', email: 'alice@example.com' };
      },
    };
  },
  routes: {
    authorization: '/authorize',
    token: '/token',
    introspection: '/introspect',
    revocation: '/revoke',
    pushed_authorization_request: '/par',
    device_authorization: '/device_authorization',
    code_verification: '/device',
    jwks: '/jwks',
    userinfo: '/userinfo',
    end_session: '/signoff',
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // a client may introspect its own tokens (client_credentials ones included)
      allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
    },
    revocation: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) => {
        if (token.clientId !== client.clientId) {
          throw new oidcErrors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
    deviceFlow: { enabled: true },
    rpInitiatedLogout: { enabled: false },
    // RFC 8707: any absolute URI is accepted as a resource (an opaque token whose introspection `aud` is that URI)
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => undefined,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => ({
        scope: 'api:read api:write',
        audience: resourceIndicator,
        accessTokenFormat: 'opaque',
      }),
    },
  },
  ttl: {
    AccessToken: 3600, AuthorizationCode: 600, ClientCredentials: 600, DeviceCode: 600, Grant: 3600,
    IdToken: 3600, Interaction: 600, RefreshToken: 86400, Session: 3600,
  },
  pkce: { required: () => false }, // PingOne's sample sends no code_verifier; a sent one is still verified
  // refresh tokens for every user-bound grant of a client allowed the refresh_token grant
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  interactions: {
    url: async (ctx, interaction) => `${PREFIX}/interaction/${interaction.uid}`,
  },
});

// oidc-provider validates static clients lazily (first lookup answers 400 invalid_client_metadata); check them
// all now so that a bad CLIENTS.json fails before READY. The error never carries the secret.
for (const c of clients) {
  try {
    if (!await provider.Client.find(String(c.client_id))) throw new Error('not found after registration');
  } catch (err) {
    process.stderr.write(`as.mjs: client ${JSON.stringify(c.client_id)} rejected by oidc-provider: `
      + `${err?.error || err?.name || 'Error'}: ${err?.error_description || err?.message}\n`);
    process.exit(2);
  }
}

provider.on('server_error', (ctx, err) => process.stderr.write(`as.mjs: server_error ${err?.stack || err}\n`));

const providerCallback = provider.callback();

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function invalidClient(res, description, withBasicChallenge) {
  // same shape as oidc-provider's own challenge on a failed Basic authentication
  const headers = withBasicChallenge
    ? { 'www-authenticate': `Basic realm="${issuer}", error="invalid_client", error_description="${description.replace(/["\\]/g, '')}"` }
    : {};
  sendJson(res, 401, { error: 'invalid_client', error_description: description }, headers);
}

// Hand a request to oidc-provider as if it were mounted at PREFIX (what express' app.use(PREFIX, ...) does):
// req.url loses the prefix, req.originalUrl keeps it, and oidc-provider derives its mount path from the two.
function toProvider(req, res, subpathAndQuery) {
  req.originalUrl = `${PREFIX}${subpathAndQuery}`;
  req.url = subpathAndQuery;
  return providerCallback(req, res);
}

function readRawBody(req) {
  return new Promise((resolve, reject) => {
    const declared = req.headers['content-length'] !== undefined ? Number(req.headers['content-length']) : undefined;
    if (declared !== undefined && declared > BODY_LIMIT) {
      reject(new Error('request entity too large'));
      req.resume();
      return;
    }
    const chunks = [];
    let received = 0;
    let failed = false;
    req.on('data', (chunk) => {
      if (failed) return;
      received += chunk.length;
      if (received > BODY_LIMIT) {
        failed = true;
        reject(new Error('request entity too large'));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (failed) return;
      if (declared !== undefined && received !== declared) {
        reject(new Error('request size did not match content length'));
        return;
      }
      resolve(Buffer.concat(chunks, received));
    });
    req.on('aborted', () => { failed = true; reject(new Error('request aborted')); });
    req.on('error', (e) => { failed = true; reject(e); });
  });
}

const formEncode = (s) => encodeURIComponent(s).replace(/%20/g, '+');

function parseBasic(headerValue) {
  const parts = String(headerValue).split(' ');
  if (parts.length !== 2 || parts[0].toLowerCase() !== 'basic') return undefined;
  const decoded = Buffer.from(parts[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i === -1) return undefined;
  return { id: decoded.slice(0, i), secret: decoded.slice(i + 1) };
}

function formDecode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, '%20'));
  } catch {
    return undefined;
  }
}

// --basic raw: compare the Basic credentials byte for byte, then re-encode them per RFC 6749 for oidc-provider.
// Returns false when a response has been sent.
function applyRawBasic(req, res) {
  const header = req.headers.authorization;
  if (header === undefined) return true;
  const creds = parseBasic(header);
  if (!creds) return true; // malformed: oidc-provider answers 400 invalid_request itself
  const client = clientsById.get(creds.id);
  if (!client || typeof client.client_secret !== 'string' || client.client_secret !== creds.secret) {
    invalidClient(res, 'invalid client credentials (raw Basic comparison)', true);
    return false;
  }
  req.headers.authorization = `Basic ${Buffer.from(`${formEncode(creds.id)}:${formEncode(creds.secret)}`).toString('base64')}`;
  return true;
}

// --enforce-method: exactly the registered method, as PingOne does. Returns false when a response has been sent.
function enforceMethod(req, res, body) {
  const header = req.headers.authorization;
  const secretInBody = body.client_secret !== undefined || body.client_assertion !== undefined;
  if (header !== undefined && secretInBody) return true; // both: oidc-provider's 400 invalid_request
  if (Array.isArray(body.client_id)) return true; // client_id twice: oidc-provider's 400 invalid_request
  if (header !== undefined) {
    const creds = parseBasic(header);
    if (!creds) return true;
    const id = formDecode(creds.id);
    const client = id !== undefined ? clientsById.get(id) : undefined;
    if (client && authMethodOf(client) !== 'client_secret_basic') {
      invalidClient(res, `client authentication method client_secret_basic is not allowed for this client (registered: ${authMethodOf(client)})`, true);
      return false;
    }
    return true;
  }
  if (typeof body.client_id === 'string') {
    const client = clientsById.get(body.client_id);
    if (client && authMethodOf(client) === 'client_secret_basic') {
      invalidClient(res, 'client authentication method client_secret_post is not allowed for this client (registered: client_secret_basic)', false);
      return false;
    }
    if (client && authMethodOf(client) === 'client_secret_post' && body.client_secret === undefined) {
      invalidClient(res, 'client_secret is required for this client (registered: client_secret_post)', false);
      return false;
    }
  }
  return true;
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: 'alice' } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    if (missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const id = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
    return;
  }
  await provider.interactionFinished(req, res, {
    error: 'access_denied',
    error_description: `unsupported prompt ${prompt.name}`,
  }, { mergeWithLastSubmission: false });
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const path = url.pathname;
  const query = url.search;

  // RFC 8414 path-insertion discovery: same document as openid-configuration
  if (path === `/.well-known/oauth-authorization-server${PREFIX}`) {
    return toProvider(req, res, `/.well-known/openid-configuration${query}`);
  }
  if (path !== PREFIX && !path.startsWith(`${PREFIX}/`)) {
    return sendJson(res, 404, { error: 'not_found', error_description: 'no such endpoint' });
  }
  const sub = path.slice(PREFIX.length) || '/';

  if (sub.startsWith('/interaction/') && req.method === 'GET') {
    return interaction(req, res);
  }
  if (req.method === 'POST' && AUTH_POSTS.has(sub)) {
    if (opts.basic === 'raw' && !applyRawBasic(req, res)) return undefined;
    const ctype = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (opts.enforceMethod && ctype === 'application/x-www-form-urlencoded') {
      let raw;
      try {
        raw = await readRawBody(req);
      } catch (e) {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'failed to parse the request body' });
      }
      const charset = /charset=([^;]+)/i.exec(String(req.headers['content-type']))?.[1]?.trim().replace(/"/g, '');
      let text;
      try {
        text = new TextDecoder(charset || 'utf-8').decode(raw);
      } catch {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'failed to parse the request body' });
      }
      if (!enforceMethod(req, res, querystring.parse(text))) return undefined;
      // oidc-provider reads req.body when the stream has already been consumed (req.readable === false)
      req.body = text;
    }
  }
  return toProvider(req, res, `${sub}${query}`);
}

server.on('request', (req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`as.mjs: handler error: ${err?.name || 'Error'}: ${err?.message || err}\n`);
    if (!res.headersSent) {
      const status = err?.statusCode && err.statusCode < 500 ? err.statusCode : 500;
      sendJson(res, status, { error: err?.error || 'server_error', error_description: err?.error_description || 'internal error' });
    } else {
      res.destroy();
    }
  });
});

process.stderr.write(`as.mjs: issuer ${issuer}, listening on 127.0.0.1:${port}, env ${opts.env}, `
  + `${clients.length} clients, enforce-method=${opts.enforceMethod}, basic=${opts.basic}\n`);
process.stdout.write(`READY ${port}\n`);
