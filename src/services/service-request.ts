import { z } from 'zod';
import { IDENTIFIER } from '../engine/workflow-definition.js';
import { headerProblem } from '../lib/outbound-http.js';
import { SECRET_REF } from '../lib/secrets.js';

/** The bodies of POST /services and PATCH /services/:name. */

const url = z.url({ protocol: /^https?$/ }).max(2000);

export const serviceHeadersSchema = z
  .record(z.string(), z.string().max(4000))
  .superRefine((value, ctx) => {
    if (Object.keys(value).length > 50) ctx.addIssue({ code: 'custom', message: 'at most 50 headers' });
    for (const [name, text] of Object.entries(value)) {
      const problem = headerProblem(name, text);
      if (problem) ctx.addIssue({ code: 'custom', message: problem, path: [name] });
    }
  })
  .meta({ description: 'Headers sent with every call. Not for secrets: they are stored and shown; put credentials in `auth`.' });

export const serviceAuthSchema = z
  .object({
    type: z
      .enum(['bearer', 'basic', 'header'])
      .meta({ description: 'bearer: `Authorization: Bearer <secret>`; basic: the secret is `user:password`; header: the secret in `header_name`.' }),
    secret_ref: z.string().regex(SECRET_REF, 'a secret_ref starts with a letter and holds letters, digits, _ . and - (at most 128)').meta({
      description:
        'The name of the secret: SERVICE_SECRET_<REF> in the environment (upper-cased, other characters as _), or the key in SERVICE_SECRETS_FILE. Its value is never stored nor shown.',
    }),
    header_name: z
      .string()
      .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$/, 'a header name')
      .optional()
      .meta({ description: 'type header: the header that carries the secret (default X-API-Key).' }),
  })
  .strict();

export const circuitSchema = z
  .object({
    failure_threshold: z.int().min(1).max(10_000).optional().meta({ description: 'Failures in a row that open the circuit (default 5).' }),
    failure_ratio: z
      .number()
      .min(0)
      .max(1)
      .optional()
      .meta({ description: 'A failure ratio within window_ms that opens it once min_calls were made; 0: off (default 0.5).' }),
    window_ms: z.int().min(1_000).max(86_400_000).optional().meta({ description: 'Default 60000.' }),
    min_calls: z.int().min(1).max(100_000).optional().meta({ description: 'Default 10.' }),
    open_ms: z.int().min(100).max(86_400_000).optional().meta({ description: 'How long it stays open before probes go through (default 30000).' }),
    half_open_probes: z
      .int()
      .min(1)
      .max(100)
      .optional()
      .meta({ description: 'Probe calls let through while half-open; all succeeding closes it (default 1).' }),
    keys_to_open: z.int().min(1).max(1_000).optional().meta({
      description:
        "Each API key has a circuit of its own, with these settings, that holds back its own calls; the service's shared circuit, which holds back every key's, opens only once calls of at least this many distinct keys failed within window_ms, or when the health check fails (default 3; 1: any one key).",
    }),
  })
  .strict()
  .meta({ description: 'Circuit breaker settings; every service has one, with these defaults.' });

export const serviceRateLimitSchema = z
  .object({ per_minute: z.int().min(1).max(1_000_000).optional(), per_second: z.int().min(1).max(100_000).optional() })
  .strict()
  .refine((value) => (value.per_minute === undefined) !== (value.per_second === undefined), { message: 'give exactly one of per_minute and per_second' })
  .meta({ description: 'Most calls started per minute (or second), across every worker; the rest wait (reason rate_limit).' });

const fields = {
  base_url: url.meta({ description: "The URL operations' paths are appended to; its host must be on HTTP_TOOL_ALLOWED_HOSTS." }),
  openapi_url: url.meta({ description: 'Where its OpenAPI 3.x document (JSON) is fetched, at registration and on POST /services/{name}/refresh.' }),
  headers: serviceHeadersSchema,
  auth: serviceAuthSchema,
  health_path: z
    .string()
    .regex(/^\/[^\s]{0,1999}$/, 'a path starting with /')
    .meta({ description: 'Checked in the background with GET; shown in GET /services, /ready and the metrics.' }),
  timeout_ms: z.int().min(1).max(300_000).meta({ description: 'Each call is aborted after this long (default 30000).' }),
  circuit: circuitSchema,
  concurrency: z.int().min(1).max(100_000).meta({ description: 'Most calls at once, across every worker; the rest wait (reason concurrency).' }),
  rate_limit: serviceRateLimitSchema,
};

export const serviceBodySchema = z
  .object({
    name: z.string().regex(IDENTIFIER, 'a service name must start with a letter and hold only letters, digits, _ and - (at most 64)'),
    base_url: fields.base_url,
    openapi_url: fields.openapi_url.optional(),
    headers: fields.headers.default({}),
    auth: fields.auth.optional(),
    health_path: fields.health_path.optional(),
    timeout_ms: fields.timeout_ms.default(30_000),
    circuit: fields.circuit.optional(),
    concurrency: fields.concurrency.optional(),
    rate_limit: fields.rate_limit.optional(),
  })
  .strict();

/** What PATCH changes: given fields replace the stored ones; `null` removes an optional one. */
export const servicePatchSchema = z
  .object({
    base_url: fields.base_url.optional(),
    openapi_url: fields.openapi_url.nullable().optional(),
    headers: fields.headers.optional(),
    auth: fields.auth.nullable().optional(),
    health_path: fields.health_path.nullable().optional(),
    timeout_ms: fields.timeout_ms.optional(),
    circuit: fields.circuit.nullable().optional(),
    concurrency: fields.concurrency.nullable().optional(),
    rate_limit: fields.rate_limit.nullable().optional(),
  })
  .strict();

export type ServiceBody = z.output<typeof serviceBodySchema>;
export type ServicePatch = z.output<typeof servicePatchSchema>;
