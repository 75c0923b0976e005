import type { components, StoredWorkflow } from '@orchestrator/client';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { lazy, Suspense, useEffect, useMemo, useRef, useState } from 'react';
import { Link, useSearchParams } from 'react-router';
import { call, useApi, useCan } from '../components/api.tsx';
import { DagGraph, type GraphStep } from '../components/dag-graph.tsx';
import { formatTime } from '../components/format.ts';
import { ErrorBox, Loading } from '../components/states.tsx';
import type { JsonEditorHandle } from './json-editor.tsx';
import { locate, syntaxErrors } from './json-paths.ts';

const JsonEditor = lazy(() => import('./json-editor.tsx'));

type Problem = components['schemas']['Problem'];

/** How long typing must pause before the definition is checked on the server. */
const CHECK_DELAY_MS = 400;

const NEW_DEFINITION = `{
  "name": "my_workflow",
  "description": "What it does",
  "parameters": [{ "name": "who", "type": "string", "required": true }],
  "steps": [
    { "id": "hello", "tool": "echo", "input": { "text": "Hello, {{params.who}}" } }
  ]
}
`;

/** A stored version as it could be posted again: without what the server adds. */
function editable(workflow: StoredWorkflow): string {
  const { version: _version, created_at: _created, archived_at: _archived, ...definition } = workflow;
  return `${JSON.stringify(definition, null, 2)}\n`;
}

/** What a step runs, for its node: a tool, a sub-workflow, a sleep, a wait, a terminate. */
function stepLabel(step: Record<string, unknown>): string {
  if (typeof step.tool === 'string') return step.for_each !== undefined ? `${step.tool} (for each)` : step.tool;
  if (typeof step.workflow === 'string') return `workflow ${step.workflow}`;
  if (step.service_call && typeof step.service_call === 'object') return `service ${String((step.service_call as { service?: unknown }).service ?? '')}`;
  if (step.sleep !== undefined) return 'sleep';
  if (step.wait !== undefined) return 'wait';
  if (step.terminate !== undefined) return 'terminate';
  return '';
}

/** The graph's steps of a definition that may be half-typed: only what looks like steps. */
function graphSteps(definition: unknown): GraphStep[] {
  const steps = (definition as { steps?: unknown } | undefined)?.steps;
  if (!Array.isArray(steps)) return [];
  return steps
    .filter((step): step is Record<string, unknown> => typeof step === 'object' && step !== null && typeof step.id === 'string')
    .map((step) => ({
      id: step.id as string,
      label: stepLabel(step),
      depends_on: Array.isArray(step.depends_on) ? step.depends_on.filter((dep): dep is string => typeof dep === 'string') : [],
    }));
}

/**
 * Workflow definitions: the list with their versions, a definition's DAG, and an editor that
 * runs the server's checks (POST /workflows/check) as you type and marks each problem at its
 * path; an admin key stores it (POST /workflows).
 */
export default function WorkflowsPage() {
  const { client } = useApi();
  const [search, setSearch] = useSearchParams();
  const name = search.get('name');
  const creating = search.has('new');
  const canStore = useCan('admin');
  const list = useQuery({ queryKey: ['workflows'], queryFn: ({ signal }) => call(client.api.GET('/workflows', { signal })) });

  return (
    <>
      <div className="title-row">
        <h1>Workflows</h1>
        <div className="actions">
          <button type="button" onClick={() => setSearch({ new: '' })}>
            {canStore ? 'New definition' : 'Check a definition'}
          </button>
        </div>
      </div>
      {list.isPending ? (
        <Loading label="Loading workflows" />
      ) : list.error ? (
        <ErrorBox error={list.error} title="The workflows could not be loaded" />
      ) : list.data.workflows.length === 0 ? (
        <p className="empty">No workflows yet.</p>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="visually-hidden">Active workflows, current versions</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Version</th>
                <th scope="col">Steps</th>
                <th scope="col">Description</th>
                <th scope="col">Stored</th>
              </tr>
            </thead>
            <tbody>
              {list.data.workflows.map((workflow) => (
                <tr key={workflow.name} aria-selected={workflow.name === name}>
                  <td>
                    <Link to={`?name=${encodeURIComponent(workflow.name)}`} aria-current={workflow.name === name ? 'page' : undefined}>
                      {workflow.name}
                    </Link>
                  </td>
                  <td>v{workflow.version}</td>
                  <td>{workflow.steps}</td>
                  <td className="prose">{workflow.description ?? ''}</td>
                  <td>{formatTime(workflow.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {name ? <WorkflowDetail key={name} name={name} /> : creating ? <DefinitionEditor key="new" initial={NEW_DEFINITION} title="New definition" /> : null}
    </>
  );
}

function WorkflowDetail({ name }: { name: string }) {
  const { client } = useApi();
  const [search, setSearch] = useSearchParams();
  const version = search.get('version') ? Number(search.get('version')) : undefined;
  const versions = useQuery({
    queryKey: ['workflows', name, 'versions'],
    queryFn: ({ signal }) => call(client.api.GET('/workflows/{name}/versions', { params: { path: { name } }, signal })),
  });
  const definition = useQuery({
    queryKey: ['workflows', name, 'definition', version ?? 'current'],
    queryFn: ({ signal }) =>
      call(client.api.GET('/workflows/{name}', { params: { path: { name }, query: version ? { version } : {} }, signal })),
  });

  return (
    <section aria-labelledby="workflow-title">
      <h2 id="workflow-title">{name}</h2>
      {versions.data && (
        <label className="inline-field">
          Version{' '}
          <select
            value={version ?? ''}
            onChange={(event) => setSearch(event.target.value ? { name, version: event.target.value } : { name })}
          >
            <option value="">current</option>
            {versions.data.versions.map((entry) => (
              <option key={entry.version} value={entry.version}>
                v{entry.version} · {formatTime(entry.created_at)}
                {entry.archived_at ? ' · archived' : ''}
              </option>
            ))}
          </select>
        </label>
      )}
      {versions.error && <ErrorBox error={versions.error} title="The versions could not be loaded" />}
      {definition.isPending ? (
        <Loading label="Loading the definition" />
      ) : definition.error ? (
        <ErrorBox error={definition.error} title="The definition could not be loaded" />
      ) : (
        <DefinitionEditor key={`${name}@${definition.data.version}`} initial={editable(definition.data)} title={`Edit ${name} (from v${definition.data.version})`} />
      )}
    </section>
  );
}

interface ShownProblem extends Problem {
  from: number;
  to: number;
  line: number | undefined;
}

type Check = { state: 'idle' | 'checking' } | { state: 'done'; problems: ShownProblem[] } | { state: 'failed'; error: unknown };

/** The editor, the problems of what it holds (checked on the server as you type), its DAG, and Save for admin keys. */
function DefinitionEditor({ initial, title }: { initial: string; title: string }) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  const canStore = useCan('admin');
  const [text, setText] = useState(initial);
  const [check, setCheck] = useState<Check>({ state: 'idle' });
  const editor = useRef<JsonEditorHandle>(null);

  const parsed = useMemo(() => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return undefined;
    }
  }, [text]);

  useEffect(() => {
    const syntax = syntaxErrors(text);
    if (syntax.length > 0) {
      setCheck({ state: 'done', problems: syntax.map((error) => ({ path: '(JSON)', ...error })) });
      return;
    }
    const controller = new AbortController();
    setCheck({ state: 'checking' });
    const timer = setTimeout(() => {
      call(client.api.POST('/workflows/check', { body: parsed as Record<string, never>, signal: controller.signal }))
        .then((answer) =>
          setCheck({
            state: 'done',
            problems: answer.problems.map((problem) => {
              const where = locate(text, problem.path);
              return { ...problem, from: where?.from ?? 0, to: where?.to ?? 0, line: where?.line };
            }),
          }),
        )
        .catch((error: unknown) => {
          if (!controller.signal.aborted) setCheck({ state: 'failed', error });
        });
    }, CHECK_DELAY_MS);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [text, parsed, client]);

  const save = useMutation({
    mutationFn: () => call(client.api.POST('/workflows', { body: parsed as never })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: ['workflows'] }),
  });

  const problems = check.state === 'done' ? check.problems : [];
  const valid = check.state === 'done' && problems.length === 0;
  const steps = useMemo(() => graphSteps(parsed), [parsed]);

  return (
    <div className="editor-layout">
      <section className="panel" aria-labelledby="editor-title">
        <h3 id="editor-title">{title}</h3>
        <Suspense fallback={<Loading label="Loading the editor" />}>
          <JsonEditor ref={editor} value={text} onChange={setText} problems={problems} label="Workflow definition (JSON)" />
        </Suspense>
        <p className="check-status" role="status" aria-live="polite">
          {check.state === 'checking'
            ? 'Checking…'
            : check.state === 'failed'
              ? 'The check could not be run.'
              : check.state === 'done'
                ? valid
                  ? 'No problems: it can be stored.'
                  : `${problems.length} problem${problems.length === 1 ? '' : 's'}`
                : ''}
        </p>
        {check.state === 'failed' && <ErrorBox error={check.error} title="The check could not be run" />}
        {problems.length > 0 && (
          <ul className="problems" aria-label="Problems">
            {problems.map((problem, index) => (
              // biome-ignore lint/suspicious/noArrayIndexKey: two problems may share a path and a message
              <li key={index} data-path={problem.path}>
                <button type="button" className="link" onClick={() => editor.current?.reveal(problem.from, problem.to)}>
                  <code>{problem.path}</code>
                  {problem.line !== undefined && <> (line {problem.line})</>}
                </button>{' '}
                {problem.message}
              </li>
            ))}
          </ul>
        )}
        {canStore && (
          <div className="actions">
            <button type="button" disabled={!valid || save.isPending} onClick={() => save.mutate()}>
              {save.isPending ? 'Saving…' : 'Save'}
            </button>
          </div>
        )}
        {save.data && (
          <p role="status" className="saved">
            Stored{' '}
            <Link to={`/workflows?name=${encodeURIComponent(save.data.name)}`}>
              {save.data.name} v{save.data.version}
            </Link>
            .
          </p>
        )}
        {save.error && <ErrorBox error={save.error} title="Not stored" />}
      </section>
      <section className="panel" aria-labelledby="preview-title">
        <h3 id="preview-title">Graph</h3>
        {steps.length > 0 ? <DagGraph steps={steps} label="Steps of the definition in the editor" /> : <p className="hint">No steps to draw.</p>}
      </section>
    </div>
  );
}
