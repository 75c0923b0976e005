import { z } from 'zod';
import { concurrencySchema, rateLimitSchema } from './key-limits.js';

/**
 * A workflow definition is data: steps, the dependencies between them, and templates that carry
 * parameters and step outputs into inputs. This is the body of POST /workflows; what a schema
 * cannot say (cycles, references, each kind's rules) is checked by src/engine/check.ts.
 *
 * A step is one of four kinds, by the field it carries: `tool` (runs a tool adapter),
 * `workflow` (runs a stored workflow as a child task and awaits it), `sleep` (waits, holding
 * no worker) or `wait` (waits for a signal or a person's approval, holding no worker). Any step
 * may have a `when` condition; a tool step may map over a list (`for_each`). Each kind's and
 * modifier's rules and meaning are its module's (src/engine/kinds/, src/engine/modifiers/);
 * their fields are declared here, the HTTP contract's one place.
 */

/** How often a step is tried and how long it waits between tries: a step's, a tool's default, or a task's override. */
export const retryPolicySchema = z
  .object({
    attempts: z.int().min(1).max(100).meta({ description: 'Tries in all, the first included.' }),
    backoff: z
      .object({
        type: z.enum(['fixed', 'exponential']),
        delay_ms: z.int().min(0).max(86_400_000),
        max_delay_ms: z
          .int()
          .min(0)
          .max(86_400_000)
          .optional()
          .meta({ description: 'The longest delay between two tries, however many failed (a Retry-After asking for longer still wins).' }),
      })
      .strict()
      .default({ type: 'exponential', delay_ms: 1000 }),
    max_elapsed_ms: z
      .int()
      .min(1)
      .max(31 * 86_400_000)
      .optional()
      .meta({
        description:
          "No try starts once this long has passed since the step's first one (nor is one waited for that would start later): the step fails with its last error.",
      }),
  })
  .strict();

export const IDENTIFIER = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const identifier = (what: string) => z.string().regex(IDENTIFIER, `${what} must start with a letter and hold only letters, digits, _ and - (at most 64)`);

export const PARAMETER_TYPES = ['string', 'number', 'integer', 'boolean', 'object', 'array'] as const;
export type ParameterType = (typeof PARAMETER_TYPES)[number];

/** Most values a parameter's `enum` may list. */
export const PARAMETER_ENUM_MAX = 100;

export const parameterSchema = z
  .object({
    name: identifier('a parameter name'),
    type: z.enum(PARAMETER_TYPES),
    required: z.boolean().default(false),
    default: z.unknown().optional(),
    enum: z
      .array(z.union([z.string().max(200), z.number(), z.boolean()]))
      .min(1)
      .max(PARAMETER_ENUM_MAX)
      .optional()
      .meta({ description: 'The only values the parameter may take (each of its type); a run with another is refused with 400.' }),
    description: z.string().max(2000).optional(),
  })
  .strict()
  .superRefine((parameter, ctx) => {
    if (!parameter.enum) return;
    const type = parameterType(parameter.type);
    parameter.enum.forEach((value, index) => {
      if (!type.safeParse(value).success) ctx.addIssue({ code: 'custom', path: ['enum', index], message: `not of type ${parameter.type}` });
    });
    if (parameter.default !== undefined && !parameter.enum.includes(parameter.default as never)) {
      ctx.addIssue({ code: 'custom', path: ['default'], message: 'the default is not one of enum' });
    }
  });

/** Longest durable sleep: a year. */
export const SLEEP_MAX_MS = 366 * 86_400_000;

export const sleepSchema = z
  .union([z.object({ ms: z.union([z.int().min(0).max(SLEEP_MAX_MS), z.string().max(1000)]) }).strict(), z.object({ until: z.string().max(1000) }).strict()])
  .meta({
    description:
      '`{"ms": N}` (milliseconds, or a template that gives them) or `{"until": "<ISO 8601 time or a template that gives one>"}`. The step waits holding no worker, and survives restarts.',
  });

/** A JSON Schema given in a definition (a signal's payload, an approval's form): checked when stored (src/engine/kinds/wait.ts). */
const jsonSchemaObject = z.record(z.string(), z.unknown());

export const waitSchema = z
  .object({
    signal: identifier('a signal name')
      .optional()
      .meta({ description: 'The name POST /tasks/{task_id}/signals/{name} sends; an approval step answers to its step id unless it names one.' }),
    schema: jsonSchemaObject.optional().meta({ description: "JSON Schema of the signal's payload: a payload that does not fit gets 400." }),
    approval: z
      .object({
        approvers: z
          .array(z.string().min(1).max(200))
          .min(1)
          .max(20)
          .optional()
          .meta({ description: 'Who may decide: each gets a link of their own, and the decision records who used it. Without it: one link.' }),
        form: jsonSchemaObject
          .optional()
          .meta({ description: 'JSON Schema (an object of string, number, integer, boolean and enum fields) of what the approver fills in.' }),
        show: z
          .array(z.string().min(1).max(64))
          .max(50)
          .optional()
          .meta({ description: "The step's input fields the approval page shows; without it, all of them." }),
      })
      .strict()
      .optional()
      .meta({ description: 'A person decides through a signed, single-use link (no API key needed): approved or rejected, with a comment and the form.' }),
    timeout_ms: z.int().min(1).max(SLEEP_MAX_MS).optional().meta({ description: 'How long it waits at most; then `on_timeout` applies.' }),
    on_timeout: z.enum(['fail', 'continue']).default('fail').meta({
      description: 'fail: the step fails (`WaitTimedOut`). continue: it completes with `{"timed_out": true}` (an approval: decision `timed_out`).',
    }),
  })
  .strict();

export type WaitSpec = z.output<typeof waitSchema>;

/**
 * A seed-style call of a registered service's operation, turned into the tool step
 * `<service>.<operationId>` when the definition is stored (src/engine/modifiers/service-call.ts).
 */
export const serviceCallSchema = z
  .object({
    service: identifier('a service name'),
    endpoint: z.string().min(1).max(2000).meta({ description: "The path as the service's OpenAPI document writes it: `/items/{id}`." }),
    method: z
      .string()
      .regex(/^(get|put|post|delete|options|head|patch|trace)$/i, 'an HTTP method')
      .default('GET'),
    parameters: z.record(z.string(), z.unknown()).default({}).meta({
      description: "The operation's path, query and header parameters by name, and its JSON body under `body`; templates allowed.",
    }),
  })
  .strict()
  .meta({
    description: "A call of a registered service's operation: stored as the tool step `<service>.<operationId>` with the input `{path, query, headers, body}`.",
  });

export type ServiceCall = z.output<typeof serviceCallSchema>;

/** What undoes a tool step when its task fails (docs/tools-and-workers.md "Compensation (sagas)"): src/engine/modifiers/compensate.ts. */
export const compensateSchema = z
  .object({
    tool: z.string().min(1).max(129).meta({ description: "The tool that undoes the step (a registered service's operation: `<service>.<operationId>`)." }),
    input: z.record(z.string(), z.unknown()).default({}).meta({
      description:
        "The tool's input; strings may hold {{input.PATH}} and {{output.PATH}} (the step's own input and output), {{params.NAME}} and {{steps.ID.output.PATH}} of the step's ancestors.",
    }),
    retry: retryPolicySchema.optional(),
    timeout_ms: z.int().min(1).max(86_400_000).optional(),
  })
  .strict()
  .meta({
    description:
      'Run when the task fails under on_failure fail after this step completed: compensations run in reverse dependency order, each with its own retries, recorded as steps `<id>.compensate` with `compensation_of`.',
  });

/** A terminate step's field (src/engine/kinds/terminate.ts). */
export const terminateSchema = z
  .object({
    status: z.enum(['completed', 'failed']),
    reason: z.string().min(1).max(2000).optional().meta({ description: "Why; a failed run's error message. Templates allowed." }),
    output: z.unknown().optional().meta({ description: "The task's output (templates and computed values allowed); absent: the workflow's `output`." }),
  })
  .strict()
  .meta({
    description:
      "A terminate step: the run ends at once with this status. Running steps are cancelled, pending ones skipped (reason `terminated`); the task's output is `output`, or the workflow's.",
  });

/** Most iterations a repeat step may run (src/engine/modifiers/repeat.ts). */
export const REPEAT_MAX_ITERATIONS = 10_000;

/** A repeat step's field (src/engine/modifiers/repeat.ts). */
export const repeatSchema = z
  .object({
    until: z.string().min(1).max(100_000).meta({
      description:
        "A CEL condition over `output` (this iteration's), `iteration` (0-based), `params` and the ancestors' `steps`: true ends the repeat with this iteration's output.",
    }),
    max_iterations: z.int().min(1).max(REPEAT_MAX_ITERATIONS).meta({ description: 'Past this many iterations the step fails with RepeatLimitReached.' }),
    delay_ms: z
      .int()
      .min(0)
      .max(SLEEP_MAX_MS)
      .default(0)
      .meta({ description: 'A durable wait between iterations: the next one is a delayed job, and no worker is held meanwhile.' }),
  })
  .strict()
  .meta({
    description:
      "Tool and sub-workflow steps: run again until `until` holds, each iteration a job (a child task) of its own; its input sees {{iteration}} and {{previous.output…}} (null on the first). The output is the last iteration's.",
  });

export const stepSchema = z
  .object({
    id: identifier('a step id'),
    tool: z
      .string()
      .min(1)
      .max(129)
      .optional()
      .meta({ description: "A tool step: the tool it runs (a registered service's operation: `<service>.<operationId>`)." }),
    workflow: identifier('a workflow name').optional().meta({ description: 'A sub-workflow step: the stored workflow it runs as a child task.' }),
    version: z.int().min(1).optional().meta({ description: 'With `workflow`: the version to run; without it, the current one when the task starts.' }),
    sleep: sleepSchema.optional(),
    wait: waitSchema.optional().meta({ description: 'A wait step: it waits for a signal (`signal`) or an approval (`approval`), holding no worker.' }),
    terminate: terminateSchema.optional(),
    service_call: serviceCallSchema.optional(),
    input: z.record(z.string(), z.unknown()).default({}).meta({
      description:
        "The tool's input (a sub-workflow: its parameters); strings may hold {{params.NAME}}, {{steps.ID.output.PATH}}, in a for_each step {{item}} and {{index}}, in a repeat step {{iteration}} and {{previous.output.PATH}}.",
    }),
    depends_on: z.array(z.string()).max(500).default([]),
    // CONDITION_MAX_CHARS (condition.ts, which reads these types): longer ones are refused by the check with their path.
    when: z.string().min(1).max(100_000).optional().meta({
      description:
        'A CEL expression over `params` and `steps.<ancestor>.output` / `.status`; false skips the step (reason `condition`). A skipped step counts as done for its dependents.',
    }),
    for_each: z
      .union([z.string().min(1).max(1000), z.array(z.unknown()).max(100_000)])
      .optional()
      .meta({
        description: 'Tool steps: a template that gives a list (or a literal list); the tool runs once per item, and the output is the list of their outputs.',
      }),
    max_parallel: z.int().min(1).max(10_000).optional().meta({ description: 'With `for_each`: most items running at once, across all workers.' }),
    repeat: repeatSchema.optional(),
    retry: retryPolicySchema.optional(),
    timeout_ms: z.int().min(1).max(86_400_000).optional(),
    on_failure: z.enum(['fail', 'continue']).default('fail').meta({
      description: 'fail: the task fails once this step has failed for good. continue: dependents run and see the failure.',
    }),
    concurrency: concurrencySchema.optional().meta({ description: 'Tool steps: at most `limit` runs of this step (items, in a map) at once per key.' }),
    rate_limit: rateLimitSchema
      .optional()
      .meta({ description: 'Tool steps: at most so many starts of this step (items, in a map) per minute or second per key.' }),
    compensate: compensateSchema.optional(),
  })
  .strict();

export const workflowDefinitionSchema = z
  .object({
    name: identifier('a workflow name'),
    description: z.string().max(5000).optional(),
    parameters: z.array(parameterSchema).max(200).default([]),
    steps: z.array(stepSchema).min(1).max(500),
    output: z.unknown().optional().meta({ description: "The task's result; templates allowed. Without it: every completed step's output by step id." }),
    on_exit: z.array(stepSchema).min(1).max(20).optional().meta({
      description:
        "An exit handler: tool or sub-workflow steps that run once the run has ended (after any compensations), whatever its outcome. They may depend on each other, not on the main steps; they see every main step's output (null for one that did not run), `{{task.status}}` and `{{task.error}}`. They never change the task's status, output or error (the task shows `running` until they are done); their own failures are on their steps and in the history. A cancel runs them too; a second cancel stops them.",
    }),
    concurrency: concurrencySchema
      .optional()
      .meta({ description: 'At most `limit` runs of this workflow at once per key; the others wait before their first step.' }),
    rate_limit: rateLimitSchema.optional().meta({ description: 'At most so many runs of this workflow started per minute or second per key.' }),
  })
  .strict();

export type WorkflowDefinition = z.output<typeof workflowDefinitionSchema>;
export type WorkflowStep = z.output<typeof stepSchema>;
export type WorkflowParameter = z.output<typeof parameterSchema>;

/** The zod type of one declared parameter. */
export function parameterType(type: ParameterType): z.ZodType {
  switch (type) {
    case 'string':
      return z.string();
    case 'number':
      return z.number();
    case 'integer':
      return z.int();
    case 'boolean':
      return z.boolean();
    case 'object':
      return z.record(z.string(), z.unknown());
    case 'array':
      return z.array(z.unknown());
  }
}

/** Validates the params of a run: declared names only, required ones present, defaults filled in. */
export function paramsSchema(parameters: readonly WorkflowParameter[]) {
  return z
    .object(
      Object.fromEntries(
        parameters.map((parameter) => {
          const allowed = parameter.enum;
          const type = allowed
            ? parameterType(parameter.type).refine(
                (value) => allowed.includes(value as never),
                `must be one of ${allowed.map((value) => JSON.stringify(value)).join(', ')}`,
              )
            : parameterType(parameter.type);
          if (parameter.default !== undefined) return [parameter.name, type.default(parameter.default as never)];
          return [parameter.name, parameter.required ? type : type.optional()];
        }),
      ),
    )
    .strict();
}
