import { randomUUID } from 'node:crypto';

/**
 * UUIDv7 (RFC 9562): 48 bits of Unix time in milliseconds, then version, variant and 74 random
 * bits. Task ids are UUIDv7 so that an id tells when its task was created: a lookup by id can
 * name the task's partition (its creation day), and a missing id older than the retention
 * period is known to have expired rather than never existed.
 */
export function uuidv7(at: Date = new Date()): string {
  const ms = at.getTime();
  if (!Number.isInteger(ms) || ms < 0 || ms >= 2 ** 48) throw new RangeError(`no UUIDv7 for ${at.toISOString()}`);
  // A v4 UUID's randomness with the time in front: randomUUID draws from a cached pool of
  // entropy, where randomBytes(16) asked the system for each id (1.5 % of the API's busy time
  // in the closed loop at 32 clients). It keeps the variant bits; 12 + 62 random bits are left, as v7 has.
  const time = ms.toString(16).padStart(12, '0');
  const random = randomUUID();
  return `${time.slice(0, 8)}-${time.slice(8)}-7${random.slice(15)}`;
}

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/** The time a UUIDv7 was made for; undefined for any other id (a task from before ids were UUIDv7). */
export function uuidv7Time(id: string): Date | undefined {
  if (!V7.test(id)) return undefined;
  return new Date(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16));
}

/** What a prefix of an id's canonical text (8-4-4-4-12 hex digits) may be: a few digits up to the whole id. */
export const UUID_PREFIX =
  /^(?:[0-9a-f]{1,8}|[0-9a-f]{8}-[0-9a-f]{0,4}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{0,4}|[0-9a-f]{8}(?:-[0-9a-f]{4}){2}-[0-9a-f]{0,4}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{0,12})$/i;

/**
 * The ids that start with `prefix` (UUID_PREFIX), as a range: the first and the last. For the
 * UUIDv7 ids it covers, also the range of creation times, since an id starts with its task's
 * time: with it a search by prefix reads only the partitions (days) and the index range of that
 * time. Absent when the prefix already says the ids are not UUIDv7 (a version digit other than
 * 7: tasks from before ids were UUIDv7, whose creation time their id does not hold).
 */
export function uuidPrefixRange(prefix: string): { first: string; last: string; created?: { from: Date; to: Date } } {
  const hex = prefix.replaceAll('-', '').toLowerCase();
  const canonical = (digits: string) => `${digits.slice(0, 8)}-${digits.slice(8, 12)}-${digits.slice(12, 16)}-${digits.slice(16, 20)}-${digits.slice(20)}`;
  const range = { first: canonical(hex.padEnd(32, '0')), last: canonical(hex.padEnd(32, 'f')) };
  if (hex.length > 12 && hex[12] !== '7') return range;
  const time = (digits: string) => new Date(Number.parseInt(digits.slice(0, 12), 16));
  return { ...range, created: { from: time(hex.padEnd(12, '0')), to: time(hex.padEnd(12, 'f')) } };
}
