import { z } from 'zod';
import { spansOf, splitPath } from '../../../engine/templates.js';
import {
  IDENTIFIER,
  PARAMETER_ENUM_MAX,
  PARAMETER_TYPES,
  type ParameterType,
  serviceCallSchema,
  type WorkflowParameter,
} from '../../../engine/workflow-definition.js';
import { ConflictError, jsonPath, type Problem, ValidationError, zodProblems } from '../../../lib/errors.js';
import { unstorableProblems } from '../../../lib/problems.js';
import type { StoredWorkflow } from '../../../persistence/workflow-store.js';
import { DISPLAY_NAME_MAX, type WorkflowService } from '../../../workflows/workflow-service.js';

/**
 * Seed 001's workflow format (`{name, description, parameters, actions, tags}`), translated into
 * the product's own definition before the workflow service checks and stores it: nothing here
 * runs anything. docs/compat/seed-001.md lists each rule and what was chosen where the seed
 * is vague.
 */

/** The action types seed 001 documents that mean something here. */
export const ACTION_TYPES = ['service_call', 'notification', 'tool'] as const;
export type ActionType = (typeof ACTION_TYPES)[number];

/** The notify tool's channels: a seed's `channels` may name these only (a Slack or Teams hook is a webhook). */
export const NOTIFICATION_CHANNELS = ['log', 'webhook'] as const;

/** Seed 001 writes types as Python does, too: each name and what it is here. */
const TYPE_NAMES: Record<string, ParameterType> = {
  ...Object.fromEntries(PARAMETER_TYPES.map((type) => [type, type])),
  str: 'string',
  int: 'integer',
  float: 'number',
  bool: 'boolean',
  dict: 'object',
  list: 'array',
};

const enumValue = z.union([z.string().max(200), z.number(), z.boolean()]);

export const seed001ParameterSchema = z
  .object({
    name: z.string().min(1).max(64),
    type: z
      .string()
      .max(20)
      .default('string')
      .meta({ description: `One of ${Object.keys(TYPE_NAMES).join(', ')}.` }),
    description: z.string().max(2000).optional(),
    required: z.boolean().default(false),
    default: z.unknown().optional(),
    default_value: z.unknown().optional().meta({ description: "Seed 001's name for `default`; either may be given." }),
    allowed_values: z
      .array(enumValue)
      .min(1)
      .max(PARAMETER_ENUM_MAX)
      .optional()
      .meta({ description: "The values it may take: stored as the parameter's `enum`." }),
  })
  .strict()
  .meta({ description: 'A parameter as seed 001 writes it.' });

export const seed001ActionSchema = z
  .object({
    action_id: z.string().min(1).max(64).meta({ description: 'Becomes the step id: letters, digits, _ and -, starting with a letter.' }),
    action_type: z.enum(ACTION_TYPES, { error: `the known action types are ${ACTION_TYPES.join(', ')}` }),
    name: z.string().max(200).optional(),
    description: z.string().max(2000).optional(),
    config: z.record(z.string(), z.unknown()).default({}).meta({
      description:
        'service_call: `{service, endpoint, method, parameters}`; notification: `{message, channels?, level?, url?, data?}`; tool: `{tool, input?}`. Strings may hold `{{PARAMETER}}` and `{{ACTION_ID.response.PATH}}`.',
    }),
    depends_on: z.array(z.string().max(64)).max(500).default([]).meta({ description: 'Action ids this one runs after.' }),
  })
  .strict()
  .meta({ description: 'An action of a seed 001 workflow: one step (a notification: one per channel).' });

const seed001Fields = {
  name: z.string().min(1).max(DISPLAY_NAME_MAX).meta({
    description:
      'Its id when it is one (letters, digits, _ and -); otherwise the display name, and the id is its slug (`Simple Notification` → `simple-notification`).',
  }),
  description: z.string().max(5000).optional(),
  parameters: z.array(seed001ParameterSchema).max(200).default([]),
  actions: z.array(seed001ActionSchema).min(1).max(500),
  tags: z.array(z.string().min(1).max(64)).max(50).optional(),
};

export const seed001WorkflowSchema = z
  .object(seed001Fields)
  .strict()
  .meta({ description: "A workflow in seed 001's format: translated into a WorkflowDefinition (the stored form), its actions kept as posted." });
export type Seed001Workflow = z.output<typeof seed001WorkflowSchema>;

/** The body of PUT /workflows/{workflow_id}: any of the fields, each replacing the stored one. */
export const seed001UpdateSchema = z
  .object({
    name: seed001Fields.name.optional().meta({ description: 'A new display name: metadata, no new version (the id stays).' }),
    description: seed001Fields.description,
    parameters: z.array(seed001ParameterSchema).max(200).optional(),
    actions: seed001Fields.actions.optional(),
    tags: seed001Fields.tags,
  })
  .strict()
  .meta({ description: 'What PUT changes: description, tags, parameters or actions make a new version; a name alone does not.' });

const notificationConfig = z
  .object({
    message: z.string().min(1).max(10_000),
    channels: z
      .array(z.enum(NOTIFICATION_CHANNELS, { error: `the known channels are ${NOTIFICATION_CHANNELS.join(', ')}` }))
      .min(1)
      .max(NOTIFICATION_CHANNELS.length)
      .default(['log']),
    level: z.enum(['info', 'warn', 'error']).optional(),
    url: z.string().max(2048).optional().meta({ description: 'The webhook channel posts here.' }),
    data: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

const toolConfig = z.object({ tool: z.string().min(1).max(129), input: z.record(z.string(), z.unknown()).default({}) }).strict();

const CONFIGS: Record<ActionType, z.ZodType> = { service_call: serviceCallSchema, notification: notificationConfig, tool: toolConfig };

/** Methods whose seed `parameters` are the JSON body (but for the endpoint's path parameters). */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

/** The form a seed 001 workflow was posted in, kept beside the stored definition. */
export interface PostedForm {
  format: 'seed-001';
  parameters: unknown[];
  actions: unknown[];
}

export interface Translation {
  /** The product's own definition: the workflow service checks it as it checks any. */
  definition: Record<string, unknown>;
  displayName: string | null;
  postedForm: PostedForm;
  /** For each step, the action it came from and its kind: where a problem of the step lies in the posted form. */
  origins: { action: number; type: ActionType }[];
}

/**
 * A workflow's id from seed 001's name: the name when it is an id already, else its slug
 * (lower case, runs of anything but letters and digits made one `-`, accents dropped, `w-`
 * before a leading digit, at most 64 characters), the name kept as its display name.
 */
export function idOf(name: string): { id: string; displayName: string | null } | undefined {
  if (IDENTIFIER.test(name)) return { id: name, displayName: null };
  let slug = '';
  let gap = false;
  // NFKD splits accented letters into letter and mark: the mark is dropped, the letter kept.
  for (const char of name.normalize('NFKD').toLowerCase()) {
    const code = char.charCodeAt(0);
    const alphanumeric = (code >= 0x61 && code <= 0x7a) || (code >= 0x30 && code <= 0x39);
    if (alphanumeric) {
      if (gap && slug) slug += '-';
      slug += char;
      gap = false;
    } else if (!/\p{M}/u.test(char)) {
      gap = true;
    }
  }
  if (!slug) return undefined;
  if (!/^[a-z]/.test(slug)) slug = `w-${slug}`;
  slug = slug.slice(0, 64);
  while (slug.endsWith('-')) slug = slug.slice(0, -1);
  return { id: slug, displayName: name };
}

/**
 * Names the seed 001 routes take below /workflows/: a workflow of that name could not be read
 * or listed there (GET /workflows/search is the search), so none may have one.
 */
export const RESERVED_WORKFLOW_NAMES: ReadonlySet<string> = new Set(['executions', 'from-template', 'health', 'search', 'statistics', 'templates']);

/** A 400 `invalid_workflow` at `path` for a reserved name. */
export function refuseReservedName(name: unknown, path = 'name'): void {
  if (typeof name === 'string' && RESERVED_WORKFLOW_NAMES.has(name)) {
    throw new ValidationError(
      'the workflow definition is invalid',
      [
        {
          path,
          message: `${name} is taken by GET /workflows/${name === 'executions' ? 'executions/{execution_id}' : name} (seed 001's routes): choose another name`,
        },
      ],
      'invalid_workflow',
    );
  }
}

/** What a template's first name may stand for. */
interface Scope {
  parameters: ReadonlySet<string>;
  actions: ReadonlySet<string>;
}

/** Names that begin the product's own templates: a parameter or action of that name would make them ambiguous. */
const NATIVE_ROOTS = new Set(['params', 'steps', 'item', 'index']);

/**
 * One template's expression in the product's terms: `{{message}}` → `params.message` for a
 * declared parameter, `{{fetch_doc.response.content}}` → `steps.fetch_doc.output.content` for
 * an action (`.response` is the 2xx body a service call answered, the output of any other
 * step). Expressions that are not paths are left to the checks.
 */
function rewriteExpression(expression: string, scope: Scope): { value: string } | { problem: string } {
  // `{{= …}}` is an expression of its own, not a path: left to the checks.
  if (expression.startsWith('=')) return { value: expression };
  const split = splitPath(expression);
  const head = split?.segments[0];
  if (!split || head === undefined) return { value: expression };
  const parameter = scope.parameters.has(head);
  const action = scope.actions.has(head);
  if (NATIVE_ROOTS.has(head)) {
    if (parameter || action) {
      return { problem: `{{${expression}}} is ambiguous: ${head} is a ${parameter ? 'parameter' : 'action'} and also how templates here begin; rename it` };
    }
    return { value: expression };
  }
  if (parameter && action) return { problem: `{{${expression}}} is ambiguous: a parameter and an action are both named ${head}; rename one` };
  if (parameter) return { value: `params.${expression}` };
  if (action) {
    if (split.segments[1] !== 'response')
      return { problem: `{{${expression}}}: an action's result is read as {{${head}.response}} or {{${head}.response.FIELD}}` };
    return { value: `steps.${head}.output${expression.slice(head.length + '.response'.length)}` };
  }
  return { problem: `{{${expression}}} names no declared parameter and no action` };
}

/** Every string in `value` with its templates rewritten (rewriteExpression); problems at their JSON path under `at`. */
function rewriteTemplates(value: unknown, at: PropertyKey[], scope: Scope, problems: Problem[]): unknown {
  if (typeof value === 'string') {
    const spans = spansOf(value);
    if (spans.length === 0) return value;
    let out = '';
    let from = 0;
    // A string repeating one wrong template is one problem, not thousands.
    const told = new Set<string>();
    for (const span of spans) {
      const rewritten = rewriteExpression(span.expression, scope);
      if ('problem' in rewritten && !told.has(rewritten.problem)) {
        told.add(rewritten.problem);
        problems.push({ path: jsonPath(at), message: rewritten.problem });
      }
      out += `${value.slice(from, span.start)}{{${'value' in rewritten ? rewritten.value : span.expression}}}`;
      from = span.end;
    }
    return out + value.slice(from);
  }
  if (Array.isArray(value)) return value.map((item, index) => rewriteTemplates(item, [...at, index], scope, problems));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, rewriteTemplates(item, [...at, key], scope, problems)]));
  }
  return value;
}

/** Seed 001's parameters as the product declares them; problems at `parameters[i]`. */
export function translateParameters(parameters: readonly z.output<typeof seed001ParameterSchema>[], problems: Problem[]): WorkflowParameter[] {
  return parameters.map((parameter, index) => {
    const type = Object.hasOwn(TYPE_NAMES, parameter.type) ? TYPE_NAMES[parameter.type] : undefined;
    if (!type) problems.push({ path: `parameters[${index}].type`, message: `unknown type ${parameter.type}; known: ${Object.keys(TYPE_NAMES).join(', ')}` });
    const given = [parameter.default, parameter.default_value].filter((value) => value !== undefined);
    if (given.length === 2 && JSON.stringify(given[0]) !== JSON.stringify(given[1])) {
      problems.push({ path: `parameters[${index}].default_value`, message: 'default and default_value differ: give one' });
    }
    const fallback = given[0];
    return {
      name: parameter.name,
      type: type ?? 'string',
      // A default makes a parameter optional in effect: the seed may call it required all the same.
      required: parameter.required && fallback === undefined,
      ...(fallback !== undefined ? { default: fallback } : {}),
      ...(parameter.allowed_values ? { enum: parameter.allowed_values } : {}),
      ...(parameter.description !== undefined ? { description: parameter.description } : {}),
    };
  });
}

/** The names in `{...}` of an endpoint such as `/items/{id}`: its path parameters. */
function pathNames(endpoint: string): Set<string> {
  const names = new Set<string>();
  for (let open = endpoint.indexOf('{'); open >= 0; open = endpoint.indexOf('{', open + 1)) {
    const close = endpoint.indexOf('}', open);
    if (close < 0) break;
    names.add(endpoint.slice(open + 1, close));
    open = close;
  }
  return names;
}

/**
 * A service call's parameters as the product's service_call takes them: for POST, PUT and
 * PATCH the seed's parameters are the JSON body, but for the endpoint's path parameters;
 * parameters that already hold `body` (the product's own form) and those of other methods are
 * left as they are (each goes where the operation declares it).
 */
function callParameters(method: string, endpoint: string, parameters: Record<string, unknown>): Record<string, unknown> {
  if (!BODY_METHODS.has(method.toUpperCase()) || Object.hasOwn(parameters, 'body')) return parameters;
  const inPath = pathNames(endpoint);
  const arranged: Record<string, unknown> = {};
  const body: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(parameters)) (inPath.has(name) ? arranged : body)[name] = value;
  return Object.keys(body).length > 0 ? { ...arranged, body } : arranged;
}

/**
 * Translates a workflow posted in seed 001's format: its actions become steps (a notification
 * one per channel), its templates the product's, its parameters the product's. Every problem
 * is reported at once, at its path in the posted form (400 `invalid_workflow`); what the
 * workflow service's own checks find later is mapped back by `postedPath`.
 */
export function translateSeed001(workflow: Seed001Workflow, id?: string): Translation {
  const problems: Problem[] = [];
  const named = id === undefined ? idOf(workflow.name) : { id, displayName: workflow.name === id ? null : workflow.name };
  if (!named) problems.push({ path: 'name', message: 'the name has no letter or digit to make an id from' });
  const parameters = translateParameters(workflow.parameters, problems);
  const scope: Scope = {
    parameters: new Set(workflow.parameters.map((parameter) => parameter.name)),
    actions: new Set(workflow.actions.map((action) => action.action_id)),
  };

  // The steps of each action: a notification has one per channel, the first with the action's id.
  const stepIds = new Map<string, string[]>();
  workflow.actions.forEach((action, index) => {
    if (stepIds.has(action.action_id)) problems.push({ path: `actions[${index}].action_id`, message: `duplicate action id ${action.action_id}` });
    const channels = action.action_type === 'notification' && Array.isArray(action.config.channels) ? action.config.channels : [undefined];
    stepIds.set(
      action.action_id,
      channels.map((channel, position) => (position === 0 ? action.action_id : `${action.action_id}_${String(channel)}`)),
    );
  });
  const taken = new Set(workflow.actions.map((action) => action.action_id));
  for (const [index, action] of workflow.actions.entries()) {
    for (const extra of stepIds.get(action.action_id)!.slice(1)) {
      if (taken.has(extra)) problems.push({ path: `actions[${index}].config.channels`, message: `its step ${extra} would have the id of another action` });
      taken.add(extra);
    }
  }

  const steps: Record<string, unknown>[] = [];
  const origins: Translation['origins'] = [];
  workflow.actions.forEach((action, index) => {
    const at = ['actions', index];
    const dependsOn = action.depends_on.flatMap((dependency, position) => {
      const ids = stepIds.get(dependency);
      if (!ids) problems.push({ path: jsonPath([...at, 'depends_on', position]), message: `no action ${dependency}` });
      return ids ?? [];
    });
    const parsed = CONFIGS[action.action_type].safeParse(action.config);
    if (!parsed.success) {
      problems.push(...zodProblems(parsed.error, [...at, 'config']));
      return;
    }
    const config = rewriteTemplates(parsed.data, [...at, 'config'], scope, problems) as Record<string, unknown>;
    const common = { depends_on: dependsOn };
    if (action.action_type === 'service_call') {
      const call = config as z.output<typeof serviceCallSchema>;
      steps.push({ id: action.action_id, ...common, service_call: { ...call, parameters: callParameters(call.method, call.endpoint, call.parameters) } });
      origins.push({ action: index, type: action.action_type });
    } else if (action.action_type === 'tool') {
      steps.push({ id: action.action_id, ...common, tool: config.tool, input: config.input });
      origins.push({ action: index, type: action.action_type });
    } else {
      const { channels, ...notice } = config as z.output<typeof notificationConfig>;
      if (channels.includes('webhook') && notice.url === undefined)
        problems.push({ path: jsonPath([...at, 'config', 'url']), message: 'the webhook channel needs a url' });
      if (new Set(channels).size < channels.length) problems.push({ path: jsonPath([...at, 'config', 'channels']), message: 'a channel is named twice' });
      const ids = stepIds.get(action.action_id)!;
      channels.forEach((channel, position) => {
        const { url, ...rest } = notice;
        steps.push({ id: ids[position], ...common, tool: 'notify', input: { channel, ...rest, ...(channel === 'webhook' ? { url } : {}) } });
        origins.push({ action: index, type: action.action_type });
      });
    }
  });
  if (problems.length > 0) throw new ValidationError('the workflow definition is invalid', problems, 'invalid_workflow');
  return {
    definition: {
      name: named!.id,
      ...(workflow.description !== undefined ? { description: workflow.description } : {}),
      parameters,
      steps,
    },
    displayName: named!.displayName,
    postedForm: { format: 'seed-001', parameters: workflow.parameters, actions: workflow.actions },
    origins,
  };
}

// `steps[3].input.message` -> 3, `input`, `.message`; anchored, no nested repetition.
const STEP_PATH = /^steps\[(\d+)\](?:\.([a-z_]+))?(.*)$/s;
const PARAMETER_ENUM_PATH = /^(parameters\[\d+\])\.enum(.*)$/s;

/** Where a problem the workflow service found in a translated definition lies in the posted form. */
export function postedPath(path: string, translation: Pick<Translation, 'origins'>): string {
  const parameter = PARAMETER_ENUM_PATH.exec(path);
  if (parameter) return `${parameter[1]}.allowed_values${parameter[2]}`;
  const match = STEP_PATH.exec(path);
  const origin = match ? translation.origins[Number(match[1])] : undefined;
  if (!match || !origin) return path;
  const action = `actions[${origin.action}]`;
  const field = match[2];
  const rest = match[3] ?? '';
  switch (field) {
    case 'id':
      return `${action}.action_id${rest}`;
    case 'depends_on':
      return `${action}.depends_on`;
    case 'service_call':
      return `${action}.config${rest}`;
    case 'tool':
      return origin.type === 'tool' ? `${action}.config.tool${rest}` : `${action}.action_type`;
    case 'input':
      if (origin.type === 'tool') return `${action}.config.input${rest}`;
      if (origin.type === 'service_call') return `${action}.config.parameters${rest}`;
      return rest.startsWith('.channel') ? `${action}.config.channels` : `${action}.config${rest}`;
    default:
      return field === undefined ? `${action}${rest}` : `${action}.${field}${rest}`;
  }
}

/** A native parameter as seed 001 writes it: what a PUT of actions alone keeps of a workflow posted natively. */
export function seed001Parameter(parameter: WorkflowParameter): z.input<typeof seed001ParameterSchema> {
  return {
    name: parameter.name,
    type: parameter.type,
    required: parameter.required,
    ...(parameter.default !== undefined ? { default_value: parameter.default } : {}),
    ...(parameter.enum ? { allowed_values: parameter.enum } : {}),
    ...(parameter.description !== undefined ? { description: parameter.description } : {}),
  };
}

/**
 * Parses, translates and stores a workflow posted in seed 001's format: a 400 `invalid_workflow`
 * names each problem at its path in the posted form. `id`: the workflow it is a new version of
 * (PUT); `displayName` overrides the one its name gives.
 */
export async function storeSeed001(
  workflows: WorkflowService,
  posted: unknown,
  options: { createdBy: string; id?: string; displayName?: string | null },
): Promise<StoredWorkflow> {
  const parsed = seed001WorkflowSchema.safeParse(posted);
  if (!parsed.success) throw new ValidationError('the workflow definition is invalid', zodProblems(parsed.error), 'invalid_workflow');
  refuseUnstorable(posted);
  const translation = translateSeed001(parsed.data, options.id);
  refuseReservedName(translation.definition.name);
  const displayName = options.displayName !== undefined ? options.displayName : translation.displayName;
  if (displayName !== null) await ensureDisplayNameFree(workflows, displayName, translation.definition.name as string);
  try {
    return await workflows.define(translation.definition, {
      displayName,
      tags: parsed.data.tags ?? [],
      createdBy: options.createdBy,
      postedForm: translation.postedForm,
    });
  } catch (error) {
    if (!(error instanceof ValidationError) || error.code !== 'invalid_workflow') throw error;
    const problems = (error.details as Problem[]).map((problem) => ({ ...problem, path: postedPath(problem.path, translation) }));
    throw new ValidationError(error.message, problems, 'invalid_workflow');
  }
}

/**
 * What is kept beside a definition (a display name, tags, the form as posted) is stored as it
 * came: text PostgreSQL cannot store (NUL, a lone surrogate) is a 400 at its path first.
 */
export function refuseUnstorable(value: unknown, prefix: PropertyKey[] = []): void {
  const problems = unstorableProblems(value, prefix);
  if (problems.length > 0) throw new ValidationError('the workflow definition is invalid', problems, 'invalid_workflow');
}

/** A display name finds one workflow: another's (active) is refused with 409 `workflow_name_taken`. */
export async function ensureDisplayNameFree(workflows: WorkflowService, displayName: string, id: string): Promise<void> {
  const holder = await workflows.resolve(displayName);
  if (holder !== undefined && holder !== id) {
    throw new ConflictError('workflow_name_taken', `the workflow ${holder} already answers to the name ${JSON.stringify(displayName)}`, {
      workflow_id: holder,
    });
  }
}
