import { z } from 'zod';
import { hostPolicyFor } from '../../src/lib/host-policy.js';
import { outboundRequest, parseRetryAfter } from '../../src/lib/outbound-http.js';
import { defineTool, NonRetryableError, RetryableError } from '../../src/tools/tool.js';
import { HTTP_URL, outboundSettings } from './http.js';

export default defineTool({
  name: 'notify',
  description: 'Tells someone: writes a log line (channel "log") or POSTs JSON to a webhook on an allowlisted host (channel "webhook").',
  input: z
    .object({
      channel: z.enum(['log', 'webhook']).default('log'),
      message: z.string().min(1).max(10_000),
      level: z.enum(['info', 'warn', 'error']).default('info'),
      url: z
        .url({ protocol: /^https?$/ })
        .meta({ pattern: HTTP_URL })
        .optional(),
      data: z.record(z.string(), z.unknown()).optional(),
    })
    .refine((input) => input.channel !== 'webhook' || input.url !== undefined, {
      message: 'a webhook needs a url',
      path: ['url'],
    })
    // The refinement above, in the registered JSON Schema the API checks params with (a 400 at submit, not a failed step).
    // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then, not a promise
    .meta({ if: { properties: { channel: { const: 'webhook' } }, required: ['channel'] }, then: { required: ['url'] } }),
  output: z.object({ delivered: z.boolean(), channel: z.enum(['log', 'webhook']), status: z.int().optional() }),
  retry: { attempts: 3, backoff: { type: 'exponential', delay_ms: 1000 } },
  timeout_ms: 15_000,
  // A webhook's host must be on HTTP_TOOL_ALLOWED_HOSTS, as the http tool's.
  settings: outboundSettings,
  async run(input, { logger, signal, settings, taskId, stepId }) {
    if (input.channel === 'log') {
      logger.log(input.level, input.message, { notification: input.data ?? {} });
      return { delivered: true, channel: 'log' as const };
    }
    const response = await outboundRequest(hostPolicyFor(settings.HTTP_TOOL_ALLOWED_HOSTS, settings.HTTP_TOOL_PRIVATE_NAMES), {
      method: 'POST',
      url: input.url!,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ message: input.message, data: input.data ?? {}, task_id: taskId, step_id: stepId }),
      timeoutMs: 10_000,
      signal,
    });
    if (response.status === 429 || response.status >= 500) {
      throw new RetryableError(`webhook answered ${response.status}`, parseRetryAfter(response.headers['retry-after']));
    }
    if (response.status >= 400) throw new NonRetryableError(`webhook answered ${response.status}`);
    return { delivered: true, channel: 'webhook' as const, status: response.status };
  },
});
