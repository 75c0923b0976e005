import type { components } from './openapi.js';

type Schemas = components['schemas'];

/**
 * A workflow definition as `POST /workflows` takes it, with read-only arrays so that
 * `defineWorkflow` can keep the literal parameter names and types it was written with.
 */
export type WorkflowDefinition = Omit<Schemas['WorkflowDefinition'], 'parameters' | 'steps'> & {
  parameters?: readonly Schemas['WorkflowParameter'][];
  steps: readonly (Omit<Schemas['WorkflowStep'], 'depends_on'> & { depends_on?: readonly string[] })[];
};

/** The TypeScript type of each parameter type a definition may declare. */
interface ParameterTypes {
  string: string;
  number: number;
  integer: number;
  boolean: boolean;
  object: Record<string, unknown>;
  array: unknown[];
}

type Parameter<D> = D extends { parameters: readonly (infer P extends Schemas['WorkflowParameter'])[] } ? P : never;

/**
 * The `params` a workflow defined with `defineWorkflow` takes: its required parameters as
 * required keys, the others optional. For a definition whose parameters are not literal,
 * any object.
 */
export type WorkflowParams<D extends WorkflowDefinition> = string extends Parameter<D>['name']
  ? Record<string, unknown>
  : { [P in Parameter<D> as P extends { required: true } ? P['name'] : never]: ParameterTypes[P['type']] } & {
      [P in Parameter<D> as P extends { required: true } ? never : P['name']]?: ParameterTypes[P['type']];
    };

/**
 * Declares a workflow in code. Returns the definition unchanged (push it with
 * `client.workflows.push`), typed precisely enough that `client.submit(workflow, params)` checks
 * `params` against the declared parameters. The server checks everything else when it is pushed
 * (tools, dependencies, cycles, templates), and answers every problem with its JSON path.
 *
 * ```ts
 * const greet = defineWorkflow({
 *   name: 'greet',
 *   parameters: [{ name: 'who', type: 'string', required: true }],
 *   steps: [{ id: 'hello', tool: 'echo', input: { text: 'Hello, {{params.who}}' } }],
 * });
 * await client.workflows.push(greet);
 * await client.submit(greet, { who: 'Ada' });
 * ```
 */
export function defineWorkflow<const D extends WorkflowDefinition>(definition: D): D {
  return definition;
}
