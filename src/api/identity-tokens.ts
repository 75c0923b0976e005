import { createRemoteJWKSet, errors, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from 'jose';
import { API_KEY_SCOPES, type ApiKeyScope, type Config } from '../lib/config.js';

/** Who a verified token speaks for: its owner (as a key id, `jwt:<owner>`) and its scope. */
export interface TokenIdentity {
  id: string;
  scope: ApiKeyScope;
}

export interface IdentityTokenOptions {
  /** Where the signing keys are published; tokens signed with them use an asymmetric algorithm. */
  jwksUrl?: string;
  /** The HS256 shared secret. */
  secret?: string;
  issuer: string;
  audience: string;
  /** @defaultValue 'scope' */
  scopeClaim: string;
  /** @defaultValue 'sub' */
  ownerClaim: string;
  /** Least time between two JWKS fetches for an unknown `kid`. @defaultValue 30000 */
  cooldownMs: number;
  /** How long a fetched JWKS is used. @defaultValue 600000 */
  maxAgeMs: number;
  /** Longest life of a token (`exp - iat`, or `exp` - now without `iat`), in seconds. @defaultValue 86400 */
  maxTokenLifeS: number;
}

/** A token the API does not accept; the message says why, and is what the client hears. */
export class TokenRefusedError extends Error {
  override name = 'TokenRefusedError';
  /** The token was not judged: its keys could not be fetched (not the client's mistake). */
  keysUnavailable = false;
}

/** Three base64url parts: a JWS in compact form (an unsecured one has an empty third part). */
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export function looksLikeJwt(presented: string): boolean {
  return JWT_SHAPE.test(presented);
}

const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
const OWNER_MAX_CHARS = 200;

/** What a client is told about a token jose refused. */
function refusal(error: unknown): string {
  if (error instanceof errors.JWTExpired) return 'the token has expired';
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === 'exp' && error.reason === 'missing') return 'the token has no expiry (exp): identity tokens must expire';
    if (error.claim === 'nbf') return 'the token is not valid yet (nbf)';
    if (error.claim === 'iss') return 'the token was not issued by AUTH_JWT_ISSUER (iss)';
    if (error.claim === 'aud') return 'the token is not meant for this service (aud)';
    return `the token's ${error.claim} claim is not valid`;
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) return "the token's signature does not verify";
  if (error instanceof errors.JWKSNoMatchingKey) return "no key of the JWKS matches the token's kid";
  if (error instanceof errors.JOSEAlgNotAllowed) return "the token's algorithm (alg) is not accepted";
  if (error instanceof errors.JWTInvalid || error instanceof errors.JWSInvalid) return 'the token is malformed';
  if (error instanceof errors.JWKSMultipleMatchingKeys) return "more than one key of the JWKS matches the token's kid";
  if (error instanceof TokenRefusedError) return error.message;
  return 'the token is not valid';
}

/**
 * Verifies JWT bearer tokens (identity tokens) with jose: a signature by a key of the JWKS at
 * AUTH_JWKS_URL (fetched when first needed, cached, fetched again for an unknown `kid`: keys
 * rotate without a restart) or by AUTH_JWT_SECRET (HS256); the issuer and audience; `exp`
 * (required, at most AUTH_JWT_MAX_AGE_S after `iat`) and `nbf`. The scope and owner come from
 * configurable claims.
 */
export class IdentityTokens {
  private readonly getKey: JWTVerifyGetKey;
  private readonly algorithms: string[];

  constructor(private readonly options: IdentityTokenOptions) {
    const jwks = options.jwksUrl
      ? createRemoteJWKSet(new URL(options.jwksUrl), { cooldownDuration: options.cooldownMs, cacheMaxAge: options.maxAgeMs })
      : undefined;
    const secret = options.secret ? new TextEncoder().encode(options.secret) : undefined;
    this.algorithms = [...(jwks ? ASYMMETRIC : []), ...(secret ? ['HS256'] : [])];
    // Only an HS256 token is checked with the secret: the algorithm cannot make a public key a secret.
    this.getKey = async (header, token) => {
      if (header.alg === 'HS256' && secret) return secret;
      if (!jwks) throw new TokenRefusedError("the token's algorithm (alg) is not accepted");
      try {
        return await jwks(header, token);
      } catch (error) {
        if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) throw error;
        // Not a judgement of the token: the JWKS did not arrive (unreachable, not 200, not a JWKS, too slow).
        const refused = new TokenRefusedError('the token could not be verified: the keys of AUTH_JWKS_URL could not be fetched', { cause: error });
        refused.keysUnavailable = true;
        throw refused;
      }
    };
  }

  static fromConfig(config: Config): IdentityTokens | undefined {
    if (!config.AUTH_JWKS_URL && !config.AUTH_JWT_SECRET) return undefined;
    return new IdentityTokens({
      ...(config.AUTH_JWKS_URL ? { jwksUrl: config.AUTH_JWKS_URL } : {}),
      ...(config.AUTH_JWT_SECRET ? { secret: config.AUTH_JWT_SECRET } : {}),
      // loadConfig requires both when tokens are configured.
      issuer: config.AUTH_JWT_ISSUER!,
      audience: config.AUTH_JWT_AUDIENCE!,
      scopeClaim: config.AUTH_JWT_SCOPE_CLAIM,
      ownerClaim: config.AUTH_JWT_OWNER_CLAIM,
      cooldownMs: config.AUTH_JWKS_COOLDOWN_MS,
      maxAgeMs: config.AUTH_JWKS_MAX_AGE_MS,
      maxTokenLifeS: config.AUTH_JWT_MAX_AGE_S,
    });
  }

  /** The identity of a valid token; throws TokenRefusedError saying why a token is not accepted. */
  async verify(token: string): Promise<TokenIdentity> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.getKey, {
        issuer: this.options.issuer,
        audience: this.options.audience,
        algorithms: this.algorithms,
        // A token without exp would never expire: a leaked one would be a key no one can revoke.
        requiredClaims: ['exp'],
      }));
    } catch (error) {
      if (error instanceof TokenRefusedError) throw error;
      throw new TokenRefusedError(refusal(error), { cause: error });
    }
    this.checkLifetime(payload);
    return { id: `jwt:${this.owner(payload)}`, scope: this.scope(payload) };
  }

  /** jose checked that exp is a number in the future, and iat a number when present. */
  private checkLifetime(payload: JWTPayload): void {
    const from = payload.iat ?? Math.floor(Date.now() / 1000);
    const lifetime = payload.exp! - from;
    if (lifetime > this.options.maxTokenLifeS) {
      throw new TokenRefusedError(
        `the token lives ${lifetime} s (exp - ${payload.iat === undefined ? 'now' : 'iat'}), longer than AUTH_JWT_MAX_AGE_S (${this.options.maxTokenLifeS} s)`,
      );
    }
  }

  private scope(payload: JWTPayload): ApiKeyScope {
    const claim = this.options.scopeClaim;
    const value = payload[claim];
    const entries = typeof value === 'string' ? value.split(/\s+/) : Array.isArray(value) ? value : [];
    const scopes = API_KEY_SCOPES.filter((scope) => entries.includes(scope));
    if (scopes.length === 1) return scopes[0]!;
    throw new TokenRefusedError(
      scopes.length === 0
        ? `the token's ${claim} claim names none of the scopes ${API_KEY_SCOPES.join(', ')}`
        : `the token's ${claim} claim names more than one of the scopes ${API_KEY_SCOPES.join(', ')}`,
    );
  }

  private owner(payload: JWTPayload): string {
    const claim = this.options.ownerClaim;
    const value = payload[claim];
    const owner = typeof value === 'number' ? String(value) : value;
    if (typeof owner !== 'string' || owner.length === 0 || owner.length > OWNER_MAX_CHARS) {
      throw new TokenRefusedError(`the token's ${claim} claim (its owner) must be a string of 1 to ${OWNER_MAX_CHARS} characters`);
    }
    return owner;
  }
}
