// tests/peers/idp.mjs — an upstream "corporate SSO" OpenID Provider for the integration
// tests: npm oidc-provider (certified) on a loopback port, with a headless auto-login.
//
//   node idp.mjs '<json config>'        (or the config in LATCHKEY_IDP_CONFIG)
//
// Config (JSON):
//   port          0 (default) for an ephemeral port, or a fixed one (restart on the same port)
//   state_file    optional path: signing and cookie keys are kept there, so a restarted
//                 provider signs with the same keys (created when the file is missing)
//   clients       [{ client_id, client_secret, redirect_uris, ...other client metadata }]
//   users         [{ sub, email, email_verified, name }]
//   default_user  optional sub used when the request carries no login_hint
//
// The first stdout line is {"issuer": "http://127.0.0.1:N", "port": N}; nothing else is
// written to stdout. Diagnostics go to stderr. The process exits when stdin closes, so a
// test that dies does not leave a provider running.
//
// Headless sign-in: the interaction route signs in the user named by `login_hint` (a sub
// or an email) or the default user, and grants the requested scopes and claims, with no
// HTML form; a client that follows redirects (with a cookie jar) ends at the redirect_uri
// with a code. A login_hint naming someone other than the signed-in user signs that user
// in instead of reusing the session. An unknown user ends the flow with
// error=access_denied.
//
// Test only: plain http, in-memory storage, nothing persisted except the keys.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { interactionPolicy } from 'oidc-provider';

const HOST = '127.0.0.1';

function log(message, fields = {}) {
  process.stderr.write(`${JSON.stringify({ peer: 'idp', message, ...fields })}\n`);
}

function fail(message) {
  log('fatal', { error: message });
  process.exit(2);
}

function readConfig() {
  const raw = process.argv[2] ?? process.env.LATCHKEY_IDP_CONFIG;
  if (!raw) fail('no configuration: pass a JSON argument or set LATCHKEY_IDP_CONFIG');
  let config;
  try {
    config = JSON.parse(raw);
  } catch (error) {
    fail(`configuration is not JSON: ${error.message}`);
  }
  const port = config.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${config.port}`);
  const clients = config.clients ?? [];
  const users = config.users ?? [];
  if (!Array.isArray(clients) || clients.length === 0) fail('at least one client is needed');
  if (!Array.isArray(users) || users.length === 0) fail('at least one user is needed');
  for (const client of clients) {
    if (!client.client_id || !client.client_secret || !Array.isArray(client.redirect_uris)) {
      fail('each client needs client_id, client_secret and redirect_uris');
    }
  }
  for (const user of users) {
    if (!user.sub || !user.email) fail('each user needs sub and email');
  }
  if (config.default_user && !users.some((u) => u.sub === config.default_user)) {
    fail(`default_user ${config.default_user} is not one of the users`);
  }
  return { ...config, port, clients, users };
}

// Signing keys (RS256, the default, and ES256) and cookie keys, kept in the state file when
// one is given so that a restart does not change what the relying party has cached.
function loadOrCreateKeys(stateFile) {
  if (stateFile && existsSync(stateFile)) {
    return JSON.parse(readFileSync(stateFile, 'utf8'));
  }
  const jwk = (type, options, alg) => ({
    ...generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
    kid: `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}`,
    alg,
    use: 'sig',
  });
  const state = {
    jwks: {
      keys: [
        jwk('rsa', { modulusLength: 2048 }, 'RS256'),
        jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
      ],
    },
    cookie_keys: [randomBytes(32).toString('base64url')],
  };
  if (stateFile) writeFileSync(stateFile, JSON.stringify(state), { mode: 0o600 });
  return state;
}

function findUser(users, hint) {
  if (!hint) return undefined;
  const wanted = String(hint).toLowerCase();
  return users.find((u) => u.sub === hint || u.email.toLowerCase() === wanted);
}

const config = readConfig();
const keys = loadOrCreateKeys(config.state_file);

// Sign-in is also needed when login_hint names someone other than the session's user, so
// one cookie jar can sign in several test users in turn.
const policy = interactionPolicy.base();
policy.get('login').checks.add(
  new interactionPolicy.Check(
    'login_hint_other_user',
    'login_hint names another user than the signed-in one',
    (ctx) => {
      const { accountId } = ctx.oidc.session;
      const hint = ctx.oidc.params.login_hint;
      if (!accountId || !hint) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      return findUser(config.users, hint)?.sub === accountId
        ? interactionPolicy.Check.NO_NEED_TO_PROMPT
        : interactionPolicy.Check.REQUEST_PROMPT;
    },
  ),
);

const server = createServer();
server.on('error', (error) => fail(`cannot listen on ${HOST}:${config.port}: ${error.message}`));
await new Promise((resolve) => server.listen(config.port, HOST, resolve));
const { port } = server.address();
const issuer = `http://${HOST}:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  jwks: keys.jwks,
  // Own cookie names: cookies are not kept apart by port, and Latchkey runs on 127.0.0.1 too.
  cookies: {
    keys: keys.cookie_keys,
    names: {
      session: 'upstream_session',
      interaction: 'upstream_interaction',
      resume: 'upstream_interaction_resume',
    },
  },
  responseTypes: ['code'],
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'offline_access'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // oidc-provider puts user claims only in userinfo for response_type=code unless told
  // otherwise; a corporate IdP usually sends them in the ID token, which Latchkey reads.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
  },
  interactions: {
    policy,
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(_ctx, sub) {
    const user = config.users.find((u) => u.sub === sub);
    if (!user) return undefined;
    return {
      accountId: user.sub,
      async claims() {
        return {
          sub: user.sub,
          email: user.email,
          email_verified: user.email_verified ?? true,
          name: user.name ?? user.email,
        };
      },
    };
  },
  async renderError(ctx, out) {
    ctx.type = 'application/json';
    ctx.body = JSON.stringify(out);
  },
});

provider.on('server_error', (_ctx, error) => log('server_error', { error: String(error) }));

// The headless interaction: login, then consent, each answered by a redirect.
async function interaction(req, res) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (error) {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'invalid_interaction', error_description: error.message }));
    return;
  }
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    const user = findUser(config.users, params.login_hint ?? config.default_user);
    if (user) {
      if (session?.accountId && session.accountId !== user.sub) {
        // Someone else is signed in: end that session here, or the provider would ask
        // the browser to confirm a sign-out with an HTML form.
        await (await provider.Session.findByUid(session.uid))?.destroy();
        details.session = undefined;
        await details.save(details.exp - Math.floor(Date.now() / 1000));
      }
      log('login', { sub: user.sub, client_id: params.client_id });
      result = { login: { accountId: user.sub } };
    } else {
      log('login refused', { login_hint: params.login_hint ?? null });
      result = { error: 'access_denied', error_description: 'unknown user' };
    }
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'interaction_required', error_description: `unhandled prompt ${prompt.name}` };
  }
  await provider.interactionFinished(req, res, result, {
    mergeWithLastSubmission: prompt.name !== 'login',
  });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => {
      log('interaction failed', { error: String(error) });
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'server_error' }));
    });
    return;
  }
  callback(req, res);
});

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
log('listening', { issuer });

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
