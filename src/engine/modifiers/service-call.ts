import type { Problem } from '../../lib/errors.js';
import type { Catalog, ServiceOperationRef } from '../catalog.js';
import type { ServiceCall, WorkflowDefinition, WorkflowStep } from '../workflow-definition.js';
import type { ExpandContext, StepModifier } from './modifier.js';

/**
 * A `service_call` step (`{service, endpoint, method, parameters}`, the seed's shape) is the tool
 * step of the operation it names: `tool` `<service>.<operationId>`, found by method and path
 * among the service's tools, and `input` `{path, query, headers, body}`, each parameter put where
 * the operation says it goes (the JSON body under `parameters.body`). The definition is stored
 * that way; what cannot be resolved is a problem at `steps[i].service_call`.
 */
export const serviceCall: StepModifier = {
  expand: expandServiceCalls,
};

function expandServiceCalls(definition: WorkflowDefinition, { catalog, kindsOf }: ExpandContext): { definition: WorkflowDefinition; problems: Problem[] } {
  if (!definition.steps.some((step) => step.service_call !== undefined)) return { definition, problems: [] };
  const problems: Problem[] = [];
  const steps = definition.steps.map((step, index): WorkflowStep => {
    if (!step.service_call) return step;
    const where = `steps[${index}].service_call`;
    const others = kindsOf(step);
    if (others.length > 0)
      problems.push({ path: `steps[${index}]`, message: `service_call makes the step a tool step: it cannot also have ${others.join(', ')}` });
    if (Object.keys(step.input).length > 0)
      problems.push({ path: `steps[${index}].input`, message: 'a service_call step gives its input in service_call.parameters' });
    const found = findOperation(catalog, step.service_call);
    if (typeof found === 'string') {
      problems.push({ path: where, message: found });
      return step;
    }
    const { input, unknown } = inputOf(found.operation, step.service_call.parameters);
    for (const name of unknown) problems.push({ path: `${where}.parameters.${name}`, message: `the operation ${found.tool} has no parameter ${name}` });
    const { service_call: _call, ...rest } = step;
    return { ...rest, tool: found.tool, input };
  });
  return { definition: { ...definition, steps }, problems };
}

function findOperation(catalog: Catalog, call: ServiceCall): { tool: string; operation: ServiceOperationRef } | string {
  const method = call.method.toUpperCase();
  const prefix = `${call.service}.`;
  const tools = catalog.toolNames().filter((name) => name.startsWith(prefix));
  if (tools.length === 0) return `no registered service ${call.service} has operations`;
  for (const name of tools) {
    const operation = catalog.tool(name)?.operation;
    if (operation && operation.method === method && operation.path === call.endpoint) return { tool: name, operation };
  }
  const known = tools.flatMap((name) => {
    const operation = catalog.tool(name)?.operation;
    return operation ? [`${operation.method} ${operation.path}`] : [];
  });
  return `${call.service} has no operation ${method} ${call.endpoint} (it has ${known.join(', ')})`;
}

function inputOf(operation: ServiceOperationRef, parameters: Record<string, unknown>): { input: Record<string, unknown>; unknown: string[] } {
  const groups: Record<'path' | 'query' | 'headers', Record<string, unknown>> = { path: {}, query: {}, headers: {} };
  const unknown: string[] = [];
  let body: unknown;
  for (const [name, value] of Object.entries(parameters)) {
    const parameter = operation.parameters.find((candidate) => candidate.name === name);
    if (parameter) groups[parameter.in === 'header' ? 'headers' : parameter.in][name] = value;
    else if (name === 'body') body = value;
    else unknown.push(name);
  }
  const input: Record<string, unknown> = {};
  for (const [group, values] of Object.entries(groups)) if (Object.keys(values).length > 0) input[group] = values;
  if (body !== undefined) input.body = body;
  return { input, unknown };
}
