import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';

/**
 * Approval links: a person without an API key decides a wait step's approval through a URL
 * that carries what it is for (task, step, run, approver, expiry) and an HMAC-SHA256 of it. The
 * link is made again from the step's record whenever it is shown (nothing is stored), and it is
 * single-use because the step is: once a decision is recorded the step no longer waits, and any
 * later use of a link of it changes nothing. A link of an earlier run (the task was retried)
 * names that run and is refused the same way.
 */

/** What a link stands for. `approver`: the position in the step's approvers, -1 when it has none (anyone with the link). */
export interface ApprovalGrant {
  taskId: string;
  stepId: string;
  run: number;
  approver: number;
  /** Seconds since the epoch. */
  expiresAt: number;
}

const SALT = 'orchestrator/approvals/v1';
/** What development signs with when no secret is configured: links work on a developer's machine, and anyone can forge them. */
const DEVELOPMENT_SECRET = 'orchestrator-development-approval-links-are-forgeable';

export interface ApprovalConfig {
  APPROVAL_SECRET?: string | undefined;
  CALLBACK_SECRET?: string | undefined;
  NODE_ENV: string;
}

/** The key links are signed with; undefined in production without APPROVAL_SECRET or CALLBACK_SECRET (no links then). */
export function approvalKey(config: ApprovalConfig): Buffer | undefined {
  const root = config.APPROVAL_SECRET ?? config.CALLBACK_SECRET ?? (config.NODE_ENV === 'production' ? undefined : DEVELOPMENT_SECRET);
  return root === undefined ? undefined : Buffer.from(hkdfSync('sha256', root, SALT, 'links', 32));
}

function mac(key: Buffer, payload: string): string {
  return createHmac('sha256', key).update(payload).digest('base64url');
}

/** The token of a link: the grant, then its signature. */
export function signGrant(key: Buffer, grant: ApprovalGrant): string {
  const payload = Buffer.from(JSON.stringify([grant.taskId, grant.stepId, grant.run, grant.approver, grant.expiresAt])).toString('base64url');
  return `${payload}.${mac(key, payload)}`;
}

/** Why a link is refused before its step is even looked at. */
export type GrantProblem = 'malformed' | 'tampered' | 'expired';

/** The grant a token carries, or why it cannot be used. The signature is compared in constant time. */
export function openGrant(key: Buffer, token: string, now = Date.now()): ApprovalGrant | GrantProblem {
  if (token.length > 1000) return 'malformed';
  const [payload, signature, extra] = token.split('.');
  if (!payload || !signature || extra !== undefined) return 'malformed';
  const expected = Buffer.from(mac(key, payload));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'tampered';
  let fields: unknown;
  try {
    fields = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return 'malformed';
  }
  if (!Array.isArray(fields) || fields.length !== 5) return 'malformed';
  const [taskId, stepId, run, approver, expiresAt] = fields as [unknown, unknown, unknown, unknown, unknown];
  if (typeof taskId !== 'string' || typeof stepId !== 'string' || !Number.isInteger(run) || !Number.isInteger(approver) || !Number.isInteger(expiresAt))
    return 'malformed';
  if ((expiresAt as number) * 1000 <= now) return 'expired';
  return { taskId, stepId, run: run as number, approver: approver as number, expiresAt: expiresAt as number };
}

/**
 * The links of an approval step waiting since `startedAt`: one per approver (or one for anyone),
 * valid until its timeout (`wakeAt`) or for `ttlDays`.
 */
export function approvalLinks(
  key: Buffer,
  baseUrl: string,
  step: { taskId: string; stepId: string; run: number; approvers: readonly string[]; startedAt: Date; wakeAt: Date | null },
  ttlDays: number,
): { approver: string | null; url: string; expires_at: string }[] {
  const expiresAt = Math.floor((step.wakeAt?.getTime() ?? step.startedAt.getTime() + ttlDays * 86_400_000) / 1000);
  const who = step.approvers.length > 0 ? step.approvers.map((name, index) => [name, index] as const) : [[null, -1] as const];
  return who.map(([approver, index]) => ({
    approver,
    url: `${baseUrl.replace(/\/+$/, '')}/approvals/${signGrant(key, { taskId: step.taskId, stepId: step.stepId, run: step.run, approver: index, expiresAt })}`,
    expires_at: new Date(expiresAt * 1000).toISOString(),
  }));
}
