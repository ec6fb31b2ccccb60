// A real OpenID Provider for the single sign-on tests: the npm package
// `oidc-provider` (a certified implementation) with its development login
// form (any login, any password), one confidential client, and accounts
// whose claims the test chooses.
//
// For the refusal tests, `GET /__test/tamper?mode=M` makes the token endpoint
// answer, from then on, with an ID token altered the way M says; the client
// must refuse each: `forged` (signed with another key under the same key id),
// `expired`, `audience` (issued to another client), `issuer` (from another
// issuer), `nonce` (another login's nonce); `none` stops it.
//
// Environment: OIDC_PORT, OIDC_REDIRECT_URI, OIDC_CLIENT_ID,
// OIDC_CLIENT_SECRET, OIDC_ACCOUNTS (JSON: login → extra claims).
// Prints `oidc-provider listening on ISSUER` when ready.

import { exportJWK, generateKeyPair, decodeJwt, decodeProtectedHeader, SignJWT } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || '{}');

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await exportJWK(privateKey)), kid: 'test-key', use: 'sig', alg: 'RS256' };
const { privateKey: otherKey } = await generateKeyPair('RS256');

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: [process.env.OIDC_REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['a test provider’s cookie key'] },
  scopes: ['openid', 'profile', 'email', 'roles'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    roles: ['roles'],
  },
  // The scopes' claims in the ID token itself (the relying party reads them there).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, preferred_username: id, ...(accounts[id] || {}) }),
  }),
  // A first-party client: no consent screen after the login form.
  async loadExistingGrant(ctx) {
    const { session, client, params } = ctx.oidc;
    if (!session.accountId) return undefined;
    const existing = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (existing) return ctx.oidc.provider.Grant.find(existing);
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope(params.scope);
    await grant.save();
    return grant;
  },
});

let tamper = 'none';

async function altered(idToken) {
  const claims = decodeJwt(idToken);
  const header = decodeProtectedHeader(idToken);
  const now = Math.floor(Date.now() / 1000);
  let key = privateKey;
  switch (tamper) {
    case 'forged': key = otherKey; break;
    case 'expired': claims.iat = now - 7200; claims.exp = now - 3600; break;
    case 'audience': claims.aud = 'another-client'; break;
    case 'issuer': claims.iss = 'http://127.0.0.1:1'; break;
    case 'nonce': claims.nonce = 'the nonce of another login'; break;
    default: return idToken;
  }
  return new SignJWT(claims).setProtectedHeader({ alg: header.alg, kid: header.kid, typ: header.typ }).sign(key);
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/tamper') {
    tamper = String(ctx.query.mode || 'none');
    ctx.body = { tamper };
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.body && typeof ctx.body.id_token === 'string' && tamper !== 'none') {
    ctx.body = { ...ctx.body, id_token: await altered(ctx.body.id_token) };
  }
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
