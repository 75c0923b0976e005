import type { Request, RequestHandler } from 'express';
import type { ApiKeyScope } from '../lib/config.js';
import { clientOf } from './client-slots.js';
import { errorBody } from './http.js';

/**
 * Who may do what, by the scope of the API key. Each route names one of these; with
 * authentication off every request may do everything.
 */
export const ACCESS = {
  /** Submit tasks: POST /assign-task, POST /workflows/:name/execute. */
  submit: ['admin', 'client'],
  /** Read tasks and their events; a client key only its own. */
  tasks: ['admin', 'client', 'read'],
  /** Cancel and retry tasks; a client key only its own. */
  manageTasks: ['admin', 'client'],
  /** What a client needs to build requests: tools, workflow definitions, the API description, the index. */
  catalog: ['admin', 'client', 'read'],
  /** Views over every task: stats, dead letters, Bull Board (read-only unless admin). */
  monitor: ['admin', 'read'],
  /** Changes to the deployment: workflow definitions, dead-letter replays, Bull Board actions. */
  admin: ['admin'],
  /** A worker process of a user's own (src/fleet): registers its tools, reports its steps. */
  work: ['admin', 'worker'],
} as const satisfies Record<string, readonly ApiKeyScope[]>;

export type Access = keyof typeof ACCESS;

/** Answers 403 `forbidden` when the request's key lacks the scope for `access`. */
export function requireAccess(access: Access): RequestHandler {
  const allowed: readonly ApiKeyScope[] = ACCESS[access];
  return (req, res, next) => {
    if (req.apiKeyScope === undefined || allowed.includes(req.apiKeyScope)) return next();
    res.status(403).json(
      errorBody('forbidden', `a ${req.apiKeyScope} key may not do this; it needs one of the scopes ${allowed.join(', ')}`, {
        scope: req.apiKeyScope,
        required: allowed,
      }),
    );
  };
}

/** The owner recorded on a task this request submits: its key's id, or '' without authentication. */
export function submitter(req: Request): string {
  return req.apiKeyId ?? '';
}

/** The only owner whose tasks this request may see or change: a client key's own id; undefined for every task. */
export function ownerScope(req: Request): string | undefined {
  return req.apiKeyScope === 'client' ? req.apiKeyId : undefined;
}

/**
 * What this request may read of tasks: a client key only its own; approval links only an admin
 * key (or anyone, without authentication), who may hand them to their approvers. A link decides
 * for its approver, so the submitter (or a read key) holding one would void the four-eyes rule.
 */
export function viewer(req: Request): { owner?: string; links: boolean } {
  const owner = ownerScope(req);
  return { ...(owner !== undefined ? { owner } : {}), links: holdsLinks(req) };
}

/**
 * Whether this request's key may hold approval links: an admin key, or anyone without
 * authentication. A task it submits keeps the answer (callback_links), because its task.waiting
 * callback goes to the URL the submitter chose.
 */
export function holdsLinks(req: Request): boolean {
  return req.apiKeyScope === undefined || req.apiKeyScope === 'admin';
}

/** Who submits a task, as TaskService.submit takes it: owner, scope, client, links, and whether admission put it behind other clients' work. */
export function submission(req: Request): { owner: string; scope?: ApiKeyScope; client: string; callbackLinks: boolean; behindOthers?: true } {
  return {
    owner: submitter(req),
    ...(req.apiKeyScope !== undefined ? { scope: req.apiKeyScope } : {}),
    client: clientOf(req),
    callbackLinks: holdsLinks(req),
    ...(req.behindOthers ? { behindOthers: true as const } : {}),
  };
}

/** Who asks, for the services' gate (a retry, a replay, a signal): the key, its scope, its client, and the owner it is confined to. */
export function asker(req: Request): { owner?: string; keyId?: string; scope?: ApiKeyScope; client: string } {
  const owner = ownerScope(req);
  return {
    ...(owner !== undefined ? { owner } : {}),
    ...(req.apiKeyId !== undefined ? { keyId: req.apiKeyId } : {}),
    ...(req.apiKeyScope !== undefined ? { scope: req.apiKeyScope } : {}),
    client: clientOf(req),
  };
}
