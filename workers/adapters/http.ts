import { z } from 'zod';
import { hostPolicyFor } from '../../src/lib/host-policy.js';
import { headerProblem, outboundRequest, parseRetryAfter } from '../../src/lib/outbound-http.js';
import { defineTool, NonRetryableError, RetryableError } from '../../src/tools/tool.js';

function decode(body: Buffer, contentType: string | undefined): unknown {
  const text = body.toString('utf8');
  if (contentType && /[/+]json\b/i.test(contentType)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** An http or https URL, in the registered JSON Schema (RE2 syntax: no flags, so the case is spelled out). */
export const HTTP_URL = '^[Hh][Tt][Tt][Pp][Ss]?://';
/** A header value without line breaks or control characters, as headerProblem checks it (src/lib/outbound-http.ts). */
const HEADER_VALUE = '^[\\t\\x20-\\x7e\\x80-\\xff]*$';

/**
 * What the http and notify tools read of their worker's environment, the variables the service's
 * own outbound calls (registered services, callbacks) read too: the same allowlist for all.
 */
export const outboundSettings = z.object({
  /** The hosts a request (and each redirect) may reach, comma-separated (src/lib/host-policy.ts). */
  HTTP_TOOL_ALLOWED_HOSTS: z
    .string()
    .default('')
    .transform((list) =>
      list
        .split(',')
        .map((entry) => entry.trim())
        .filter((entry) => entry.length > 0),
    ),
  /** Whether an allowlisted hostname may resolve to a private address. */
  HTTP_TOOL_PRIVATE_NAMES: z.enum(['allow', 'refuse']).default('allow'),
});

export default defineTool({
  name: 'http',
  description:
    'Calls an HTTP endpoint on an allowlisted host (HTTP_TOOL_ALLOWED_HOSTS). Network errors, 5xx and 429 are retried (honouring Retry-After); other 4xx fail at once.',
  input: z.object({
    method: z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']).default('GET'),
    // The API checks params with the registered JSON Schema, not with these zod types: the `pattern`s
    // (HTTP_URL, HEADER_VALUE) say in it what the protocol and header checks say here, so such
    // mistakes are a 400 at submit rather than a failed step.
    url: z.url({ protocol: /^https?$/ }).meta({ pattern: HTTP_URL }),
    /**
     * Host, Content-Length, Transfer-Encoding, Connection and the like are set by the client and
     * refused here (a JSON Schema cannot say it whatever the case: such a name fails the step at once).
     */
    headers: z
      .record(z.string(), z.string().meta({ pattern: HEADER_VALUE }))
      .superRefine((headers, ctx) => {
        for (const [name, value] of Object.entries(headers)) {
          const problem = headerProblem(name, value);
          if (problem) ctx.addIssue({ code: 'custom', message: problem, path: [name] });
        }
      })
      .default({}),
    /** A string is sent as is; anything else as JSON. */
    body: z.unknown().optional(),
    timeout_ms: z.int().min(1).max(300_000).optional(),
    max_redirects: z.int().min(0).max(10).default(5),
  }),
  output: z.object({
    status: z.int(),
    headers: z.record(z.string(), z.string()),
    body: z.unknown(),
    url: z.string(),
  }),
  retry: { attempts: 5, backoff: { type: 'exponential', delay_ms: 500 } },
  timeout_ms: 30_000,
  concurrency: 50,
  settings: outboundSettings,
  async run(input, { signal, settings }) {
    const headers = { ...input.headers };
    let body: string | undefined;
    if (input.body !== undefined) {
      if (typeof input.body === 'string') body = input.body;
      else {
        body = JSON.stringify(input.body);
        if (!Object.keys(headers).some((key) => key.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
      }
    }
    const response = await outboundRequest(hostPolicyFor(settings.HTTP_TOOL_ALLOWED_HOSTS, settings.HTTP_TOOL_PRIVATE_NAMES), {
      method: input.method,
      url: input.url,
      headers,
      body,
      timeoutMs: input.timeout_ms ?? 30_000,
      signal,
      maxRedirects: input.max_redirects,
    });
    const result = { status: response.status, headers: response.headers, body: decode(response.body, response.headers['content-type']), url: response.url };
    if (response.status === 429 || response.status >= 500) {
      throw new RetryableError(`HTTP ${response.status} from ${new URL(response.url).host}`, parseRetryAfter(response.headers['retry-after']), {
        status: response.status,
      });
    }
    if (response.status >= 400) {
      throw new NonRetryableError(`HTTP ${response.status} from ${new URL(response.url).host}`, { status: response.status, body: result.body });
    }
    return result;
  },
});
