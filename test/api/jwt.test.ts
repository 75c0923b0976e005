import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openKeyRing } from '../../src/api/api-keys.js';
import { ConfigError, loadConfig } from '../../src/lib/config.js';
import { silentLogger } from '../../src/lib/logger.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

const ISSUER = 'https://idp.test';
const AUDIENCE = 'orchestrator';
const SECRET = 'jwt-test-shared-secret-0123456789abcdef';
const API_KEY = 'jwt-test-admin-key-0123456789';

type Signer = { kid: string; privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey']; publicJwk: JWK };

async function signer(kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

/** A signed token; `claims` override the defaults (`exp: undefined` leaves exp out). */
function token(with_: Signer, claims: JWTPayload = {}, header: { kid?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 300, sub: 'alice', scope: 'client', ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: header.kid ?? with_.kid })
    .sign(with_.privateKey);
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const bearer = (value: string) => ({ authorization: `Bearer ${value}` });

describe('identity tokens (JWT bearer tokens)', () => {
  let jwks: TestServer;
  let published: JWK[];
  let first: Signer;
  /** AUTH_JWKS_URL and no API_KEYS: tokens are the only way in. */
  let h: Harness;
  /** AUTH_JWT_SECRET beside an API key, with other claims for scope and owner. */
  let hs: Harness;

  beforeAll(async () => {
    first = await signer('first');
    published = [first.publicJwk];
    jwks = await startServer((_request, res) => json(res, 200, { keys: published }));
    [h, hs] = await Promise.all([
      createHarness({
        worker: false,
        env: { AUTH_JWKS_URL: `${jwks.origin}/jwks.json`, AUTH_JWT_ISSUER: ISSUER, AUTH_JWT_AUDIENCE: AUDIENCE, AUTH_JWKS_COOLDOWN_MS: '0' },
      }),
      createHarness({
        worker: false,
        env: {
          API_KEYS: API_KEY,
          AUTH_JWT_SECRET: SECRET,
          AUTH_JWT_ISSUER: ISSUER,
          AUTH_JWT_AUDIENCE: AUDIENCE,
          AUTH_JWT_SCOPE_CLAIM: 'roles',
          AUTH_JWT_OWNER_CLAIM: 'email',
        },
      }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([h?.close(), hs?.close()]);
    await jwks?.close();
  });

  it('with only AUTH_JWKS_URL authentication is on: no credential is 401, and the document requires the bearer scheme', async () => {
    const none = await h.request('GET', '/tasks');
    expect(none.status).toBe(401);
    expect(none.body.error).toEqual({ code: 'unauthorized', message: 'an API key or identity token is required: Authorization: Bearer <key>' });
    const document = await h.request('GET', '/openapi.json', undefined, bearer(await token(first, { scope: 'read' })));
    expect(document.status).toBe(200);
    expect(document.body.paths['/tasks'].get.security).toEqual([{ bearerAuth: ['admin', 'client', 'read'] }]);
    expect(document.body.components.securitySchemes.bearerAuth.description).toMatch(/identity token: a JWT/);
  });

  it('takes scope and owner from the claims: a client token owns its tasks as jwt:<sub> and sees only those', async () => {
    const alice = await token(first, { sub: 'alice', scope: 'openid client' });
    const bob = await token(first, { sub: 'bob', scope: ['client'] });
    const submitted = await h.request('POST', '/assign-task', { task_type: 'echo', params: { from: 'alice' } }, bearer(alice));
    expect(submitted.status).toBe(202);
    const id = submitted.body.task_id as string;
    const stored = await h.db.prisma.task.findFirstOrThrow({ where: { id } });
    expect(stored.ownerKey).toBe('jwt:alice');

    expect((await h.request('GET', `/result/${id}`, undefined, bearer(alice))).status).toBe(200);
    expect((await h.request('GET', `/result/${id}`, undefined, bearer(bob))).status).toBe(404);
    const bobsList = await h.request('GET', '/tasks', undefined, bearer(bob));
    expect(bobsList.body.items.map((task: { task_id: string }) => task.task_id)).not.toContain(id);
    const alicesList = await h.request('GET', '/tasks', undefined, bearer(alice));
    expect(alicesList.body.items.map((task: { task_id: string }) => task.task_id)).toContain(id);
    // An admin token sees every task; a read token may not submit.
    expect((await h.request('GET', `/result/${id}`, undefined, bearer(await token(first, { sub: 'ops', scope: 'admin' })))).status).toBe(200);
    const reader = await h.request('POST', '/assign-task', { task_type: 'echo', params: {} }, bearer(await token(first, { scope: 'read' })));
    expect(reader.status).toBe(403);
    expect(reader.body.error.code).toBe('forbidden');
  });

  it('refuses, with 401 and the reason, tokens that are expired, not yet valid, wrongly signed, of an unknown kid, unsigned, or for another issuer or audience', async () => {
    const now = Math.floor(Date.now() / 1000);
    const impostor = await signer('first');
    const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: ISSUER, aud: AUDIENCE, sub: 'mallory', scope: 'admin', exp: now + 300 })}.`;
    const hs256 = await new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: 'mallory', scope: 'admin', exp: now + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: 'first' })
      .sign(new TextEncoder().encode(SECRET));
    const cases: [string, string, RegExp][] = [
      ['expired', await token(first, { exp: now - 60 }), /^the token has expired$/],
      ['not yet valid', await token(first, { nbf: now + 600 }), /not valid yet/],
      ['signed with another key under the same kid', await token(impostor), /signature does not verify/],
      ['of an unknown kid', await token(impostor, {}, { kid: 'nobody' }), /no key of the JWKS matches/],
      ['alg none', unsigned, /algorithm \(alg\) is not accepted/],
      ['HS256 where only the JWKS is configured', hs256, /algorithm \(alg\) is not accepted/],
      ['from another issuer', await token(first, { iss: 'https://evil.test' }), /AUTH_JWT_ISSUER/],
      ['for another audience', await token(first, { aud: 'billing' }), /not meant for this service/],
      ['without a scope of this API', await token(first, { scope: 'openid profile' }), /names none of the scopes/],
      ['with two scopes', await token(first, { scope: 'read client' }), /more than one of the scopes/],
      ['without an owner', await token(first, { sub: undefined }), /sub claim \(its owner\)/],
    ];
    for (const [what, presented, reason] of cases) {
      const response = await h.request('GET', '/tasks', undefined, bearer(presented));
      expect(response.status, what).toBe(401);
      expect(response.body.error.code, what).toBe('unauthorized');
      expect(response.body.error.message, what).toMatch(reason);
      expect(response.headers.get('www-authenticate'), what).toBe('Bearer realm="orchestrator", error="invalid_token"');
    }
    // Not a JWT at all: judged as a key.
    const key = await h.request('GET', '/tasks', undefined, bearer('not-a-key-and-not-a-token'));
    expect(key.body.error.message).toBe('the API key is not valid');
  });

  it('refuses a token without exp, and one that lives longer than AUTH_JWT_MAX_AGE_S (24 h by default), from iat or else from now', async () => {
    // iat is pinned to this `now`: token() reads the clock again, and a second may have ticked since.
    const now = Math.floor(Date.now() / 1000);
    const day = 86_400;
    const cases: [string, string, RegExp][] = [
      ['without exp', await token(first, { exp: undefined }), /^the token has no expiry \(exp\)/],
      ['without exp nor iat', await token(first, { exp: undefined, iat: undefined }), /^the token has no expiry \(exp\)/],
      [
        'a day and a minute from iat',
        await token(first, { iat: now, exp: now + day + 60 }),
        /lives 86460 s \(exp - iat\), longer than AUTH_JWT_MAX_AGE_S \(86400 s\)/,
      ],
      ['issued a year ago, valid a minute more', await token(first, { iat: now - 365 * day, exp: now + 60 }), /\(exp - iat\), longer than AUTH_JWT_MAX_AGE_S/],
      ['without iat, a week from now', await token(first, { iat: undefined, exp: now + 7 * day }), /\(exp - now\), longer than AUTH_JWT_MAX_AGE_S/],
    ];
    for (const [what, presented, reason] of cases) {
      const response = await h.request('GET', '/tasks', undefined, bearer(presented));
      expect(response.status, what).toBe(401);
      expect(response.body.error.message, what).toMatch(reason);
    }
    // Exactly the longest life, and a short one without iat, are accepted.
    expect((await h.request('GET', '/tasks', undefined, bearer(await token(first, { iat: now, exp: now + day })))).status).toBe(200);
    expect((await h.request('GET', '/tasks', undefined, bearer(await token(first, { iat: undefined, exp: now + 600 })))).status).toBe(200);
    expect(loadConfig({ AUTH_JWT_MAX_AGE_S: '3600' }).AUTH_JWT_MAX_AGE_S).toBe(3600);
    expect(loadConfig({}).AUTH_JWT_MAX_AGE_S).toBe(86_400);
  });

  it('follows a key rotation: once the JWKS publishes a new key, its tokens work and the retired key’s do not', async () => {
    const old = await token(first, { sub: 'rotating' });
    expect((await h.request('GET', '/tasks', undefined, bearer(old))).status).toBe(200);
    const second = await signer('second');
    const fresh = await token(second, { sub: 'rotating' });
    const fetchesBefore = jwks.requests.length;
    published = [second.publicJwk];
    const answer = await h.request('GET', '/tasks', undefined, bearer(fresh));
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(jwks.requests.length).toBeGreaterThan(fetchesBefore);
    const retired = await h.request('GET', '/tasks', undefined, bearer(old));
    expect(retired.status).toBe(401);
    expect(retired.body.error.message).toMatch(/no key of the JWKS matches/);
    // Fetched keys are cached: known kids need no fetch.
    const fetches = jwks.requests.length;
    for (let i = 0; i < 3; i += 1) expect((await h.request('GET', '/tasks', undefined, bearer(fresh))).status).toBe(200);
    expect(jwks.requests.length).toBe(fetches);
  });

  it('accepts HS256 tokens signed with AUTH_JWT_SECRET, with scope and owner from configured claims, beside API keys', async () => {
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: JWTPayload, secret = SECRET) =>
      new SignJWT({ iss: ISSUER, aud: AUDIENCE, exp: now + 300, ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));
    const carol = await sign({ email: 'carol@example.com', roles: ['client', 'user'] });
    const submitted = await hs.request('POST', '/assign-task', { task_type: 'echo', params: {} }, bearer(carol));
    expect(submitted.status).toBe(202);
    expect((await hs.db.prisma.task.findFirstOrThrow({ where: { id: submitted.body.task_id } })).ownerKey).toBe('jwt:carol@example.com');
    // The API key still works, and sees the token's task.
    expect((await hs.request('GET', `/result/${submitted.body.task_id}`, undefined, bearer(API_KEY))).status).toBe(200);
    const wrong = await hs.request('GET', '/tasks', undefined, bearer(await sign({ email: 'carol@example.com', roles: 'client' }, `${SECRET}-other`)));
    expect(wrong.status).toBe(401);
    expect(wrong.body.error.message).toMatch(/signature does not verify/);
    const expired = await hs.request('GET', '/tasks', undefined, bearer(await sign({ email: 'carol@example.com', roles: 'client', exp: now - 1 })));
    expect(expired.status).toBe(401);
    // An RS256 token where only the secret is configured.
    const rs = await hs.request('GET', '/tasks', undefined, bearer(await token(first, { email: 'x', roles: 'admin' })));
    expect(rs.status).toBe(401);
    expect(rs.body.error.message).toMatch(/algorithm \(alg\) is not accepted/);
  });

  it('answers 401 saying so when the JWKS cannot be fetched, without counting it as a wrong key', async () => {
    const broken = await startServer((_request, res) => json(res, 500, { error: 'down' }));
    const unfetchable = await createHarness({
      worker: false,
      env: { AUTH_JWKS_URL: `${broken.origin}/jwks.json`, AUTH_JWT_ISSUER: ISSUER, AUTH_JWT_AUDIENCE: AUDIENCE, AUTH_FAILURES_PER_MINUTE: '1' },
    });
    try {
      for (let i = 0; i < 2; i += 1) {
        const response = await unfetchable.request('GET', '/tasks', undefined, bearer(await token(first)));
        expect(response.status).toBe(401);
        expect(response.body.error.message).toBe('the token could not be verified: the keys of AUTH_JWKS_URL could not be fetched');
      }
      expect(broken.received('/jwks.json').length).toBeGreaterThanOrEqual(1);
    } finally {
      await unfetchable.close();
      await broken.close();
    }
  });

  it('counts refused tokens as wrong keys toward AUTH_FAILURES_PER_MINUTE', async () => {
    const limited = await createHarness({
      worker: false,
      env: { AUTH_JWT_SECRET: SECRET, AUTH_JWT_ISSUER: ISSUER, AUTH_JWT_AUDIENCE: AUDIENCE, AUTH_FAILURES_PER_MINUTE: '2' },
    });
    try {
      const bad = await token(first, { sub: randomUUID() });
      const statuses: number[] = [];
      for (let i = 0; i < 3; i += 1) statuses.push((await limited.request('GET', '/tasks', undefined, bearer(bad))).status);
      expect(statuses).toEqual([401, 401, 429]);
    } finally {
      await limited.close();
    }
  });

  it('production runs with identity tokens and no API_KEYS; issuer and audience are required; not with AUTH_DISABLED', async () => {
    const base = { NODE_ENV: 'production', AUTH_JWKS_URL: 'https://idp.test/jwks.json' };
    const ring = await openKeyRing(loadConfig({ ...base, AUTH_JWT_ISSUER: ISSUER, AUTH_JWT_AUDIENCE: AUDIENCE }), silentLogger());
    expect(ring.required).toBe(true);
    expect(ring.size).toBe(0);
    expect(() => loadConfig(base)).toThrow(/AUTH_JWT_ISSUER: required when AUTH_JWKS_URL or AUTH_JWT_SECRET is set\n {2}AUTH_JWT_AUDIENCE: required/);
    expect(() => loadConfig({ ...base, AUTH_JWT_ISSUER: ISSUER, AUTH_JWT_AUDIENCE: AUDIENCE, AUTH_DISABLED: 'true' })).toThrow(ConfigError);
    // A short secret is refused without being shown.
    expect(() => loadConfig({ AUTH_JWT_SECRET: 'short-secret', AUTH_JWT_ISSUER: ISSUER, AUTH_JWT_AUDIENCE: AUDIENCE })).toThrow(
      /AUTH_JWT_SECRET: use at least 32 characters \(256 bits for HS256\) \(got 12 characters; secret values are not shown\)/,
    );
  });
});
