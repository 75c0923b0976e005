// The default export, not named imports: tests observe calls to timingSafeEqual through it.
import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { type ApiKeyEntry, type ApiKeyScope, apiKeyEntry, type Config, ConfigError } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';

/** A key as the API holds it: the secret itself only as a digest. */
export interface ApiKey {
  /**
   * Non-secret id: the key's name, or `key:` and 16 hex digits of its SHA-256. Recorded as the
   * owner of the tasks it submits, written to logs, and what per-key rate limits count by.
   */
  id: string;
  scope: ApiKeyScope;
  digest: Buffer;
}

/** The one line a production process without keys stops with. */
export const CLOSED_BY_DEFAULT =
  'NODE_ENV=production needs API keys: set API_KEYS (or API_KEYS_FILE), or set AUTH_DISABLED=true to run without authentication on purpose';

const sha256 = (value: string) => crypto.createHash('sha256').update(value).digest();

function toKey(entry: ApiKeyEntry): ApiKey {
  const digest = sha256(entry.key);
  return { id: entry.name ?? `key:${digest.toString('hex').slice(0, 16)}`, scope: entry.scope, digest };
}

/**
 * The key (or identity token) an Authorization header carries: `Bearer <key>`, or, when `basic`
 * is allowed, the password of basic auth (the user name is ignored).
 */
export function credentialOf(header: string | undefined, basic: boolean): string | undefined {
  if (!header) return undefined;
  const [scheme, value] = header.split(/\s+/, 2) as [string, string | undefined];
  if (!value) return undefined;
  if (/^bearer$/i.test(scheme)) return value;
  if (basic && /^basic$/i.test(scheme)) {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(colon + 1) : undefined;
  }
  return undefined;
}

/** Refuses a key listed twice: which of its scopes applies would depend on the order. */
function distinct(keys: readonly ApiKey[], where: string): readonly ApiKey[] {
  const seen = new Set<string>();
  for (const key of keys) {
    const hex = key.digest.toString('hex');
    if (seen.has(hex)) throw new ConfigError(`${where}: the same key is listed twice (id ${key.id})`);
    seen.add(hex);
  }
  return keys;
}

/**
 * A keys file: one entry per line in the syntax of API_KEYS (`KEY`, `SCOPE:KEY`,
 * `SCOPE@NAME:KEY`); blank lines and lines starting with `#` are skipped. A bad line throws a
 * ConfigError naming its number, never its content.
 */
export function parseKeysFile(text: string, file: string): ApiKeyEntry[] {
  const entries: ApiKeyEntry[] = [];
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const parsed = apiKeyEntry.safeParse(line);
    if (parsed.success) entries.push(parsed.data);
    else problems.push(`line ${index + 1}: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  });
  if (problems.length > 0) throw new ConfigError(`API_KEYS_FILE ${file}: ${problems.join('; ')}`);
  return entries;
}

/** The keys the API accepts: those of API_KEYS, plus those of API_KEYS_FILE as last read. */
export class KeyRing {
  private keys: readonly ApiKey[];
  /** Each request's match, by request, while the request lives. */
  private matched = new WeakMap<object, { presented: string; key: ApiKey | undefined }>();
  private stopWatching: () => void = () => undefined;

  /**
   * @param required Authentication is on: every request but the open ones needs a key (with
   * API_KEYS_FILE, even while the file holds none). Off only when no keys are configured.
   */
  constructor(
    private readonly fixed: readonly ApiKey[],
    fromFile: readonly ApiKey[] = [],
    readonly required = true,
  ) {
    this.keys = distinct([...fixed, ...fromFile], 'API_KEYS and API_KEYS_FILE');
  }

  get size(): number {
    return this.keys.length;
  }

  /**
   * The key matching `presented`, if any, remembered for `request` when given. Digests are
   * compared with timingSafeEqual against every key, none skipped once one matched, so the time
   * taken says nothing about how close a guess was or which key matched.
   */
  match(presented: string, request?: object): ApiKey | undefined {
    // The front door (its per-client checks) and the authentication both match the same request's
    // key: the second asks the first's answer, and a key is hashed once per request (the hash was
    // 3.7 % of the API's CPU at 32 clients, twice per request).
    const known = request && this.matched.get(request);
    if (known && known.presented === presented) return known.key;
    const key = this.compare(presented);
    if (request) this.matched.set(request, { presented, key });
    return key;
  }

  private compare(presented: string): ApiKey | undefined {
    const digest = sha256(presented);
    let found: ApiKey | undefined;
    for (const key of this.keys) {
      if (crypto.timingSafeEqual(key.digest, digest) && !found) found = key;
    }
    return found;
  }

  /** Replaces the keys that came from the file; throws (and keeps the old ones) if they clash with API_KEYS. */
  replaceFileKeys(entries: readonly ApiKeyEntry[]): void {
    this.keys = distinct([...this.fixed, ...entries.map(toKey)], 'API_KEYS and API_KEYS_FILE');
    this.matched = new WeakMap();
  }

  /**
   * Looks at `file` every `intervalMs` and applies a changed file once it has stayed the same
   * for one more look, so a file caught half-written is not applied. A file that is missing or
   * does not parse leaves the keys as they were: a broken deploy never opens the API nor locks
   * everyone out.
   */
  watch(file: string, loaded: string, intervalMs: number, logger: Logger): void {
    let applied = loaded;
    let previous: string | undefined = loaded;
    let unreadable = false;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const look = async () => {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (error) {
        if (!unreadable)
          logger.error('API_KEYS_FILE cannot be read: keeping the keys read before', {
            file,
            error: (error as NodeJS.ErrnoException).code ?? (error as Error).message,
          });
        unreadable = true;
        previous = undefined;
        return;
      }
      unreadable = false;
      const stable = text === previous;
      previous = text;
      if (!stable || text === applied) return;
      applied = text;
      try {
        const entries = parseKeysFile(text, file);
        this.replaceFileKeys(entries);
        logger.info('API keys reloaded', { file, keys: this.keys.length, from_file: entries.length });
      } catch (error) {
        logger.error('API_KEYS_FILE not applied: keeping the keys read before', { error: (error as Error).message });
      }
    };
    const schedule = () => {
      if (stopped) return;
      timer = setTimeout(() => {
        look()
          .catch((error: Error) => logger.error('API_KEYS_FILE check failed', { error: error.message }))
          .finally(schedule);
      }, intervalMs);
      // Never the reason a process stays alive.
      timer.unref();
    };
    schedule();
    this.stopWatching = () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  close(): void {
    this.stopWatching();
  }
}

/**
 * The API's keys; `required` is false when authentication is off. Production refuses to run
 * open (a ConfigError with CLOSED_BY_DEFAULT) unless AUTH_DISABLED=true; elsewhere running open
 * is allowed with one warning. The entry points call this before anything else starts, so a
 * process that may not run stops before it touches Redis or PostgreSQL.
 */
export async function openKeyRing(config: Config, logger: Logger): Promise<KeyRing> {
  const fixed = config.API_KEYS.map(toKey);
  const file = config.API_KEYS_FILE;
  if (!file) {
    // Identity tokens alone turn authentication on: a request needs a key (none) or a token.
    if (fixed.length > 0 || config.AUTH_JWKS_URL || config.AUTH_JWT_SECRET) return new KeyRing(fixed);
    if (config.NODE_ENV === 'production' && !config.AUTH_DISABLED) throw new ConfigError(CLOSED_BY_DEFAULT);
    logger.warn(
      config.AUTH_DISABLED
        ? 'authentication is disabled (AUTH_DISABLED=true): anyone who reaches the API can use all of it'
        : 'authentication is off (no API_KEYS or API_KEYS_FILE): anyone who reaches the API can use all of it; NODE_ENV=production refuses to start like this',
    );
    return new KeyRing([], [], false);
  }
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new ConfigError(`API_KEYS_FILE ${file} cannot be read (${error.code ?? error.message})`);
  });
  const ring = new KeyRing(fixed, parseKeysFile(text, file).map(toKey));
  // With a file, authentication is on even while the file is empty: nobody gets in until keys are added.
  if (ring.size === 0) logger.warn('API_KEYS_FILE holds no keys yet: every request that needs a key is refused until one is added', { file });
  ring.watch(file, text, config.API_KEYS_FILE_POLL_MS, logger);
  return ring;
}
