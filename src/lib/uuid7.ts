import { randomBytes } from 'node:crypto';

/**
 * UUIDv7 (RFC 9562): 48 bits of Unix time in milliseconds, then version, variant and 74 random
 * bits. Task ids are UUIDv7 so that an id tells when its task was created: a lookup by id can
 * name the task's partition (its creation day), and a missing id older than the retention
 * period is known to have expired rather than never existed.
 */
export function uuidv7(at: Date = new Date()): string {
  const ms = at.getTime();
  if (!Number.isInteger(ms) || ms < 0 || ms >= 2 ** 48) throw new RangeError(`no UUIDv7 for ${at.toISOString()}`);
  const bytes = randomBytes(16);
  bytes.writeUIntBE(ms, 0, 6);
  bytes[6] = 0x70 | (bytes[6]! & 0x0f);
  bytes[8] = 0x80 | (bytes[8]! & 0x3f);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/** The time a UUIDv7 was made for; undefined for any other id (a task from before ids were UUIDv7). */
export function uuidv7Time(id: string): Date | undefined {
  if (!V7.test(id)) return undefined;
  return new Date(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16));
}
