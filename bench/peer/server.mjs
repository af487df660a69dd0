// The reference OpenID provider that tessera-bench drives side by side with Tessera:
// panva's oidc-provider (OpenID Certified), configured as close to Tessera's defaults as it
// allows and otherwise left at its own defaults.
//
//   - one confidential client (client_secret_basic) with authorization_code, refresh_token
//     and client_credentials;
//   - the same signing algorithms as Tessera: ID tokens ID_TOKEN_ALG (RS256 unless the
//     harness says ES256), JWT access tokens ES256;
//   - JWT access tokens (RFC 9068) through the resource indicators feature for
//     client_credentials and for refreshes; the code exchange returns an opaque access token
//     because oidc-provider only serves userinfo for opaque tokens without a resource;
//   - refresh token rotation on every use;
//   - its default in-memory adapter: nothing is persisted (Tessera writes every rotation to
//     its database), which favours the peer;
//   - no password store: the interaction below signs in the account named in `login_hint`
//     at once. The harness only uses it to obtain refresh-token chains and access tokens;
//     password sign-in is measured on Tessera alone.
//
// Environment: PORT (required), CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, ID_TOKEN_ALG. Listens on
// 127.0.0.1 only and prints `ready <issuer>` once it accepts connections.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number.parseInt(process.env.PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0) {
  console.error('PORT must be set to the port to listen on');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.CLIENT_ID ?? 'bench-client';
const clientSecret = process.env.CLIENT_SECRET ?? 'bench-secret-0123456789abcdef0123456789abcdef';
const redirectUri = process.env.REDIRECT_URI ?? 'http://127.0.0.1:9/callback';
const API = 'urn:tessera-bench:api';
const idTokenAlg = process.env.ID_TOKEN_ALG ?? 'RS256';
if (!['RS256', 'ES256'].includes(idTokenAlg)) {
  console.error('ID_TOKEN_ALG must be RS256 or ES256');
  process.exit(2);
}

function privateJwk(type, options, kid, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const configuration = {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: idTokenAlg,
      scope: 'openid profile email offline_access api',
    },
  ],
  jwks: {
    keys: [
      privateJwk('rsa', { modulusLength: 2048 }, 'bench-rs256', 'RS256'),
      privateJwk('ec', { namedCurve: 'P-256' }, 'bench-es256', 'ES256'),
    ],
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'api'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name'],
  },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email: `${sub}@bench.example`, email_verified: true, name: 'Bench Customer', given_name: 'Bench', family_name: 'Customer' };
      },
    };
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // client_credentials gets the API by default; a refresh keeps the resource granted at
      // sign-in (so its access token is a JWT); the code exchange stays opaque (userinfo).
      async defaultResource(ctx, _client, oneOf) {
        if (oneOf) return oneOf;
        return ctx.oidc.params?.grant_type === 'client_credentials' ? API : undefined;
      },
      async useGrantedResource(ctx) {
        return ctx.oidc.params?.grant_type === 'refresh_token';
      },
      async getResourceServerInfo() {
        return { scope: 'api', audience: API, accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'ES256' } } };
      },
    },
  },
  rotateRefreshToken: true,
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  ttl: {
    AccessToken: 600,
    ClientCredentials: 600,
    AuthorizationCode: 60,
    IdToken: 600,
    RefreshToken: 30 * 24 * 3600,
    Interaction: 3600,
    Session: 3 * 24 * 3600,
    Grant: 30 * 24 * 3600,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
};

const provider = new Provider(issuer, configuration);
const callback = provider.callback();

// The interaction: sign in `login_hint` (or a fixed account) and grant what was asked.
async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const { params } = details;
    const accountId = typeof params.login_hint === 'string' && params.login_hint ? params.login_hint : 'bench-customer';
    const grant = new provider.Grant({ accountId, clientId: params.client_id });
    grant.addOIDCScope(String(params.scope ?? 'openid'));
    if (typeof params.resource === 'string' && params.resource) grant.addResourceScope(params.resource, 'api');
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
  } catch (err) {
    res.statusCode = 500;
    res.setHeader('content-type', 'text/plain');
    res.end(`interaction failed: ${err?.message ?? err}`);
  }
}

const server = createServer((req, res) => {
  if (req.url?.startsWith('/interaction/')) {
    interaction(req, res);
  } else {
    callback(req, res);
  }
});
server.keepAliveTimeout = 65_000;
server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
