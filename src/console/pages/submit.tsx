import { OrchestratorError, type StoredWorkflow, type Tool } from '@orchestrator/client';
import { useMutation, useQuery } from '@tanstack/react-query';
import { type FormEvent, useMemo, useState } from 'react';
import { useNavigate, useSearchParams } from 'react-router';
import { call, useApi, useCan } from '../components/api.tsx';
import { type FieldValue, initialValue, type JsonSchema, paramsOf, SchemaFields } from '../components/schema-form.tsx';
import { ErrorBox, Loading } from '../components/states.tsx';

/** A workflow's parameters as the JSON Schema of an object, so tools and workflows share one form. */
function workflowSchema(workflow: StoredWorkflow): JsonSchema {
  return {
    type: 'object',
    properties: Object.fromEntries(
      workflow.parameters.map((parameter) => [
        parameter.name,
        {
          type: parameter.type,
          ...(parameter.description ? { description: parameter.description } : {}),
          ...(parameter.default !== undefined ? { default: parameter.default } : {}),
        },
      ]),
    ),
    required: workflow.parameters.filter((parameter) => parameter.required).map((parameter) => parameter.name),
  };
}

/** `params.batch_ids[2]` -> `batch_ids`: the field an API problem belongs to; '' for the request as a whole. */
function fieldOf(path: string): string {
  const match = /^params\.([^.[]+)/.exec(path);
  return match?.[1] ?? '';
}

/**
 * Submits a task: pick a tool or a workflow, fill the form made from its input schema (a
 * workflow's parameters), send it to POST /assign-task. The API validates; its problems are
 * shown at their fields, and the task opens when it is accepted.
 */
export default function SubmitPage() {
  const { client } = useApi();
  const canSubmit = useCan('submit');
  const [search, setSearch] = useSearchParams();
  const chosen = search.get('type') ?? '';
  const catalog = useQuery({
    queryKey: ['catalog'],
    queryFn: async ({ signal }) => {
      const [tools, workflows] = await Promise.all([call(client.api.GET('/tools', { signal })), call(client.api.GET('/workflows', { signal }))]);
      return { tools: tools.tools as Tool[], workflows: workflows.workflows };
    },
  });
  const isWorkflow = catalog.data?.workflows.some((workflow) => workflow.name === chosen) ?? false;
  const workflow = useQuery({
    queryKey: ['workflow', chosen],
    queryFn: ({ signal }) => call(client.api.GET('/workflows/{name}', { params: { path: { name: chosen }, query: {} }, signal })),
    enabled: isWorkflow,
  });
  const schema = useMemo<JsonSchema | undefined>(() => {
    if (isWorkflow) return workflow.data ? workflowSchema(workflow.data) : undefined;
    const tool = catalog.data?.tools.find((candidate) => candidate.name === chosen);
    return tool ? (tool.input_schema as JsonSchema) : undefined;
  }, [isWorkflow, workflow.data, catalog.data, chosen]);

  if (!canSubmit) return <ErrorBox error="This key may not submit tasks (its scope has no submit)." title="Read only" />;
  return (
    <>
      <h1>Submit a task</h1>
      {catalog.isPending ? (
        <Loading label="Loading tools and workflows" />
      ) : catalog.error ? (
        <ErrorBox error={catalog.error} title="The tools and workflows could not be loaded" />
      ) : (
        <div className="field">
          <label htmlFor="task-type">Tool or workflow</label>
          <select id="task-type" value={chosen} onChange={(event) => setSearch(event.target.value ? { type: event.target.value } : {})}>
            <option value="">Choose…</option>
            <optgroup label="Workflows">
              {catalog.data.workflows.map((item) => (
                <option key={item.name} value={item.name}>
                  {item.name}
                </option>
              ))}
            </optgroup>
            <optgroup label="Tools">
              {catalog.data.tools.map((tool) => (
                <option key={tool.name} value={tool.name}>
                  {tool.name}
                </option>
              ))}
            </optgroup>
          </select>
        </div>
      )}
      {chosen && isWorkflow && workflow.isPending && <Loading label="Loading the workflow" />}
      {workflow.error && <ErrorBox error={workflow.error} title="The workflow could not be loaded" />}
      {schema && <SubmitForm key={chosen} taskType={chosen} schema={schema} description={isWorkflow ? workflow.data?.description : catalog.data?.tools.find((tool) => tool.name === chosen)?.description} />}
    </>
  );
}

function SubmitForm({ taskType, schema, description }: { taskType: string; schema: JsonSchema; description: string | undefined }) {
  const { client } = useApi();
  const navigate = useNavigate();
  const [values, setValues] = useState<Record<string, FieldValue>>(() =>
    Object.fromEntries(Object.entries(schema.properties ?? {}).map(([name, property]) => [name, initialValue(property)])),
  );
  const [localErrors, setLocalErrors] = useState<Record<string, string>>({});
  const submit = useMutation({
    mutationFn: (params: Record<string, unknown>) => call(client.api.POST('/assign-task', { body: { task_type: taskType, params } })),
    onSuccess: (answer) => navigate(`/tasks/${answer.task_id}`),
  });
  // The API's problems, each at the field its path names; the others above the form.
  const apiProblems = submit.error instanceof OrchestratorError ? submit.error.problems : [];
  const errors: Record<string, string> = { ...localErrors };
  const general: string[] = [];
  for (const problem of apiProblems) {
    const field = fieldOf(problem.path);
    if (field && schema.properties?.[field]) errors[field] = errors[field] ? `${errors[field]}; ${problem.message}` : `${problem.path}: ${problem.message}`;
    else general.push(`${problem.path || 'params'}: ${problem.message}`);
  }
  const onSubmit = (event: FormEvent) => {
    event.preventDefault();
    const { params, problems } = paramsOf(schema, values);
    setLocalErrors(problems);
    if (Object.keys(problems).length === 0) submit.mutate(params);
  };
  return (
    <form className="submit-form" onSubmit={onSubmit} noValidate aria-label={`Parameters of ${taskType}`}>
      {description && <p className="hint">{description}</p>}
      <SchemaFields schema={schema} values={values} errors={errors} onChange={(name, value) => setValues((current) => ({ ...current, [name]: value }))} />
      {submit.error && (
        <div className="error-box" role="alert">
          <strong>The API refused the task</strong>
          <p>{submit.error.message}</p>
          {general.length > 0 && (
            <ul>
              {general.map((line) => (
                <li key={line}>{line}</li>
              ))}
            </ul>
          )}
        </div>
      )}
      <button type="submit" disabled={submit.isPending}>
        {submit.isPending ? 'Submitting…' : `Submit ${taskType}`}
      </button>
    </form>
  );
}
