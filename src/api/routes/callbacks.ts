import { submitter } from '../access.js';
import * as ex from '../openapi-examples.js';
import { notFound } from '../replies.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';

/** What a client needs to trust the callbacks of its own tasks. */
export const CALLBACK_ROUTES: Route[] = [
  route({
    method: 'get',
    path: '/callback-secret',
    operationId: 'callbackSecret',
    access: 'submit',
    summary: "The secret that signs this key's completion callbacks",
    description:
      'Each API key has its own callback secret, derived from CALLBACK_SECRET and the key id: a callback signed with it names this owner and its URL, and another key cannot sign one. Verify `sha256=HMAC-SHA256(secret, "<timestamp>.<raw body>")` against X-Orchestrator-Signature, refuse old timestamps, and check `owner` and `callback_url` in the body.',
    tags: ['tasks'],
    responses: {
      200: { description: "The key's callback secret and how callbacks are signed.", body: r.callbackSecretSchema, examples: ex.callbackSecretExamples },
      404: notFound('CALLBACK_SECRET is not set on this server (`callbacks_disabled`).'),
    },
    handler: async ({ req }, { tasks }) => ({ status: 200, body: tasks.callbackSecret(submitter(req)) }),
  }),
];
