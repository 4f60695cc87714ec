// tests/peers/bench-op.mjs — npm oidc-provider as the yardstick of deploy/bench.sh's token
// endpoint benchmark: one confidential client that may use client_credentials, nothing else.
//
//   node bench-op.mjs '{"client_id": "...", "client_secret": "..."}'
//
// Listens on an ephemeral 127.0.0.1 port and writes {"issuer": "http://127.0.0.1:N",
// "port": N} as its first and only stdout line; diagnostics go to stderr. It exits on
// SIGTERM, or by itself once the process that started it is gone. Storage is oidc-provider's default in-memory adapter, and
// access tokens are its default opaque ones, as Latchkey's are.

import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';

function fail(message) {
  process.stderr.write(`${JSON.stringify({ peer: 'bench-op', message: 'fatal', error: message })}\n`);
  process.exit(2);
}

let config;
try {
  config = JSON.parse(process.argv[2] ?? '');
} catch (error) {
  fail(`configuration is not JSON: ${error.message}`);
}
if (!config.client_id || !config.client_secret) fail('client_id and client_secret are needed');

const server = createServer();
server.on('error', (error) => fail(`cannot listen on ${HOST}: ${error.message}`));
await new Promise((resolve) => server.listen(0, HOST, resolve));
const { port } = server.address();
const issuer = `http://${HOST}:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.client_id,
      client_secret: config.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'email',
    },
  ],
  scopes: ['openid', 'email'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
  },
});
provider.on('server_error', (_ctx, error) => {
  process.stderr.write(`${JSON.stringify({ peer: 'bench-op', message: 'server_error', error: String(error) })}\n`);
});

server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 500);
process.on('SIGTERM', () => process.exit(0));
