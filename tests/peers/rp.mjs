// tests/peers/rp.mjs — a headless relying party for the integration tests: npm
// openid-client (certified) driving authorization code + PKCE against Latchkey.
//
//   node rp.mjs '<json config>'         (or the config in LATCHKEY_RP_CONFIG)
//
// Config (JSON): issuer, client_id, client_secret, redirect_uri, optional scope
// (default "openid email profile offline_access").
//
// The conversation is one JSON object per line:
//   stdout  {"step": "authorize", "authorization_url": "..."}   built with PKCE S256,
//                                                               state and nonce
//   stdin   {"callback_url": "..."}     the redirect the signed-in browser was sent to
//   stdout  {"step": "done", ...}       code exchange (ID token checked, signature
//                                       included, against the JWKS), userinfo, refresh
//   or      {"step": "error", ...}      and exit status 1
//
// Test only: plain-http loopback issuers are allowed (allowInsecureRequests).

import { createInterface } from 'node:readline';

import * as client from 'openid-client';

function say(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function decodeSegment(jwt, index) {
  return JSON.parse(Buffer.from(jwt.split('.')[index], 'base64url').toString('utf8'));
}

async function readLine() {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim()) {
      lines.close();
      return line;
    }
  }
  throw new Error('stdin closed before the callback URL arrived');
}

async function main() {
  const raw = process.argv[2] ?? process.env.LATCHKEY_RP_CONFIG;
  if (!raw) throw new Error('no configuration: pass a JSON argument or set LATCHKEY_RP_CONFIG');
  const config = JSON.parse(raw);
  for (const key of ['issuer', 'client_id', 'client_secret', 'redirect_uri']) {
    if (!config[key]) throw new Error(`configuration lacks ${key}`);
  }

  const server = await client.discovery(
    new URL(config.issuer),
    config.client_id,
    { redirect_uris: [config.redirect_uri], response_types: ['code'] },
    client.ClientSecretBasic(config.client_secret),
    { execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks] },
  );

  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authorizationUrl = client.buildAuthorizationUrl(server, {
    redirect_uri: config.redirect_uri,
    scope: config.scope ?? 'openid email profile offline_access',
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  say({ step: 'authorize', authorization_url: authorizationUrl.href, state, nonce });

  const { callback_url: callbackUrl } = JSON.parse(await readLine());
  const tokens = await client.authorizationCodeGrant(server, new URL(callbackUrl), {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(server, tokens.access_token, claims.sub);

  const refreshed = await client.refreshTokenGrant(server, tokens.refresh_token);
  const refreshedClaims = refreshed.id_token ? refreshed.claims() : null;

  say({
    step: 'done',
    sub: claims.sub,
    id_token_header: decodeSegment(tokens.id_token, 0),
    id_token_claims: claims,
    userinfo_sub: userinfo.sub,
    userinfo,
    scope: tokens.scope,
    refreshed: true,
    refresh_rotated:
      typeof refreshed.refresh_token === 'string' && refreshed.refresh_token !== tokens.refresh_token,
    access_token_changed: refreshed.access_token !== tokens.access_token,
    refreshed_id_token_claims: refreshedClaims,
  });
}

main().then(
  () => process.exit(0),
  (error) => {
    say({
      step: 'error',
      name: error?.name,
      code: error?.code,
      message: error?.message,
      error: error?.error,
      error_description: error?.error_description,
      cause: error?.cause === undefined ? undefined : String(error.cause?.message ?? error.cause),
    });
    process.exit(1);
  },
);
