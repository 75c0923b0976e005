import { z } from 'zod';

/**
 * A workflow definition is data: steps that call tools, the dependencies between them, and
 * templates that carry parameters and step outputs into inputs. This is the body of
 * POST /workflows; src/workflows/check.ts checks what a schema cannot (cycles, references).
 */

/** How often a step is tried and how long it waits between tries: a step's, a tool's default, or a task's override. */
export const retryPolicySchema = z
  .object({
    attempts: z.int().min(1).max(100).meta({ description: 'Tries in all, the first included.' }),
    backoff: z
      .object({
        type: z.enum(['fixed', 'exponential']),
        delay_ms: z.int().min(0).max(86_400_000),
      })
      .strict()
      .default({ type: 'exponential', delay_ms: 1000 }),
  })
  .strict();

export const IDENTIFIER = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const identifier = (what: string) => z.string().regex(IDENTIFIER, `${what} must start with a letter and hold only letters, digits, _ and - (at most 64)`);

export const PARAMETER_TYPES = ['string', 'number', 'integer', 'boolean', 'object', 'array'] as const;
export type ParameterType = (typeof PARAMETER_TYPES)[number];

export const parameterSchema = z
  .object({
    name: identifier('a parameter name'),
    type: z.enum(PARAMETER_TYPES),
    required: z.boolean().default(false),
    default: z.unknown().optional(),
    description: z.string().max(2000).optional(),
  })
  .strict();

export const stepSchema = z
  .object({
    id: identifier('a step id'),
    tool: z.string().min(1).max(64),
    input: z
      .record(z.string(), z.unknown())
      .default({})
      .meta({ description: 'The tool input; strings may hold {{params.NAME}} and {{steps.ID.output.PATH}}.' }),
    depends_on: z.array(z.string()).max(500).default([]),
    retry: retryPolicySchema.optional(),
    timeout_ms: z.int().min(1).max(86_400_000).optional(),
    on_failure: z.enum(['fail', 'continue']).default('fail').meta({
      description: 'fail: the task fails once this step has exhausted its retries. continue: dependents run and see the failure.',
    }),
  })
  .strict();

export const workflowDefinitionSchema = z
  .object({
    name: identifier('a workflow name'),
    description: z.string().max(5000).optional(),
    parameters: z.array(parameterSchema).max(200).default([]),
    steps: z.array(stepSchema).min(1).max(500),
    output: z.unknown().optional().meta({ description: "The task's result; templates allowed. Without it: every completed step's output by step id." }),
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
          const type = parameterType(parameter.type);
          if (parameter.default !== undefined) return [parameter.name, type.default(parameter.default as never)];
          return [parameter.name, parameter.required ? type : type.optional()];
        }),
      ),
    )
    .strict();
}
