import { FINISHED_STATUSES, type HistoryEvent, OrchestratorError, type TaskView } from '@orchestrator/client';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useEffect, useMemo, useState } from 'react';
import { Link, useParams } from 'react-router';
import { call, useApi, useCan } from '../components/api.tsx';
import { DagGraph, type GraphStep } from '../components/dag-graph.tsx';
import { formatDuration, formatTime } from '../components/format.ts';
import { JsonView } from '../components/json-view.tsx';
import { ErrorBox, Loading } from '../components/states.tsx';
import { StatusBadge } from '../components/status-badge.tsx';
import { CopyButton } from '../components/task-id.tsx';
import { spansOf, Timeline } from '../components/timeline.tsx';

type Step = TaskView['steps'][number];
/** The most history events read for the timeline (5 pages of 500). */
const HISTORY_PAGES = 5;

function stepLabel(step: Step): string {
  if (step.kind === 'tool') return step.tool ?? 'tool';
  return step.kind;
}

/**
 * Follows the task over its event stream (GET /tasks/:id/events, read with fetch so the bearer
 * key goes along): each step or task event patches the cached task at once, and the full task
 * (outputs, errors, attempts) is fetched again shortly after, at most every 500 ms.
 */
function useLiveTask(taskId: string, run: number | undefined, finished: boolean) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  useEffect(() => {
    if (finished) return;
    const abort = new AbortController();
    let refetch: ReturnType<typeof setTimeout> | undefined;
    const refresh = () => {
      refetch ??= setTimeout(() => {
        refetch = undefined;
        void queryClient.invalidateQueries({ queryKey: ['task', taskId] });
      }, 500);
    };
    (async () => {
      for await (const event of client.follow(taskId, { signal: abort.signal })) {
        if (event.type === 'snapshot') {
          queryClient.setQueryData(['task', taskId, 'view'], event.task);
          continue;
        }
        queryClient.setQueryData<TaskView>(['task', taskId, 'view'], (task) => {
          if (!task) return task;
          if (event.type === 'task' && event.status) return { ...task, status: event.status as TaskView['status'] };
          const steps = task.steps.map((step) => {
            if (step.id !== event.step_id) return step;
            if (event.type === 'progress') return { ...step, progress: { percent: event.percent ?? 0, ...(event.message ? { message: event.message } : {}) } };
            return { ...step, status: (event.status ?? step.status) as Step['status'], ...(event.reason ? { reason: event.reason } : {}) };
          });
          return { ...task, steps };
        });
        refresh();
      }
      // The stream ended with the task: one last full read.
      void queryClient.invalidateQueries({ queryKey: ['task', taskId] });
    })().catch((error: unknown) => {
      if (abort.signal.aborted) return;
      // A broken stream: the periodic refresh below keeps the page current.
      console.warn('event stream ended', error);
    });
    return () => {
      abort.abort();
      clearTimeout(refetch);
    };
  }, [client, queryClient, taskId, run, finished]);
}

export default function TaskDetailPage() {
  const { taskId = '' } = useParams();
  const { client } = useApi();
  const task = useQuery({
    queryKey: ['task', taskId, 'view'],
    queryFn: ({ signal }) => call(client.api.GET('/result/{task_id}', { params: { path: { task_id: taskId }, query: { include: 'params' } }, signal })),
    // The stream carries the changes; this catches up if it breaks. A cancelled task's running step
    // is recorded as cancelled once its worker has stopped it, after the task's own end: until then
    // the page asks every second.
    refetchInterval: (query) => {
      const data = query.state.data;
      if (!data || !FINISHED_STATUSES.has(data.status)) return 5_000;
      return data.steps.some((step) => step.status === 'running' || step.status === 'queued') ? 1_000 : false;
    },
  });
  const finished = task.data ? FINISHED_STATUSES.has(task.data.status) : true;
  useLiveTask(taskId, task.data?.run, !task.data || finished);

  if (task.isPending) return <Loading label="Loading the task" />;
  if (task.error) {
    const missing = task.error instanceof OrchestratorError && task.error.status === 404;
    return (
      <>
        <h1>Task {taskId}</h1>
        <ErrorBox error={task.error} title={missing ? 'No such task' : 'The task could not be loaded'} />
        <p>
          <Link to="/tasks">All tasks</Link>
        </p>
      </>
    );
  }
  return <TaskDetail task={task.data} />;
}

/** An unfinished task with a step waiting for a signal or a person's approval: `waiting`, as the lists and filters say, not `running`. */
function waitsForSomeone(task: TaskView): boolean {
  return !FINISHED_STATUSES.has(task.status) && task.steps.some((step) => step.status === 'waiting' && step.waiting_for !== undefined);
}

function TaskDetail({ task }: { task: TaskView }) {
  const [selected, setSelected] = useState<string | undefined>();
  const graphSteps = useMemo<GraphStep[]>(
    () => task.steps.map((step) => ({ id: step.id, label: stepLabel(step), depends_on: step.depends_on })),
    // The layout depends on the steps' ids and dependencies only: statuses change without a relayout.
    // biome-ignore lint/correctness/useExhaustiveDependencies: keyed on the structure on purpose
    [task.steps.map((step) => `${step.id}<${step.depends_on.join(',')}`).join(';')],
  );
  const statuses = Object.fromEntries(task.steps.map((step) => [step.id, step.status]));
  const notes = Object.fromEntries(task.steps.filter((step) => step.items).map((step) => [step.id, itemsNote(step)]));
  const step = task.steps.find((candidate) => candidate.id === selected);
  return (
    <>
      <div className="title-row">
        <h1>
          {task.task_type} <StatusBadge status={waitsForSomeone(task) ? 'waiting' : task.status} />
        </h1>
        <TaskActions task={task} />
      </div>
      <dl className="facts">
        <dt>Task</dt>
        <dd>
          <span className="mono">{task.task_id}</span>
          <CopyButton text={task.task_id} what="the task id" />
        </dd>
        {task.workflow && (
          <>
            <dt>Workflow</dt>
            <dd>
              {task.workflow.name} v{task.workflow.version}
            </dd>
          </>
        )}
        <dt>Progress</dt>
        <dd>
          {task.progress.completed}/{task.progress.total} steps{task.run && task.run > 1 ? ` · run ${task.run}` : ''}
        </dd>
        <dt>Created</dt>
        <dd>{formatTime(task.created_at)}</dd>
        <dt>Finished</dt>
        <dd>{formatTime(task.finished_at)}</dd>
        {task.parent && (
          <>
            <dt>Parent</dt>
            <dd>
              <Link to={`/tasks/${task.parent.task_id}`}>{task.parent.task_id}</Link> (step {task.parent.step_id})
            </dd>
          </>
        )}
      </dl>
      {task.params && Object.keys(task.params).length > 0 && (
        <details className="params" open>
          <summary>Params</summary>
          <JsonView value={task.params} label="Params" />
        </details>
      )}
      {task.error_message && (
        <p className="error-box" role="status">
          {task.error_message}
        </p>
      )}
      {/* A person's decision is what the task waits for: asked here, at the top, not only in the step's panel. */}
      {task.steps.map(
        (waiting) =>
          waiting.waiting_for?.approval && <SignalForm key={waiting.id} task={task} signal={waiting.waiting_for.signal} approval stepId={waiting.id} />,
      )}
      <h2>Graph</h2>
      <DagGraph steps={graphSteps} statuses={statuses} notes={notes} selected={selected} onSelect={setSelected} label={`Steps of task ${task.task_id}`} />
      <StepTable task={task} selected={selected} onSelect={setSelected} />
      {step && <StepPanel task={task} step={step} />}
      <h2>Timeline</h2>
      <TaskHistory task={task} />
      {task.status === 'completed' && (
        <>
          <h2>Result</h2>
          <JsonView value={task.result} label="Result" />
        </>
      )}
      {task.callback && (
        <>
          <h2>Callback deliveries</h2>
          <p>
            To <code>{task.callback.url}</code>: {task.callback.delivered ? 'delivered' : 'not delivered'}
          </p>
          {task.callback.deliveries.length > 0 && (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">Attempt</th>
                    <th scope="col">Event</th>
                    <th scope="col">Status</th>
                    <th scope="col">Error</th>
                    <th scope="col">At</th>
                  </tr>
                </thead>
                <tbody>
                  {task.callback.deliveries.map((delivery) => (
                    <tr key={`${delivery.run}-${delivery.attempt}-${delivery.event}`}>
                      <td>{delivery.attempt}</td>
                      <td>{delivery.event}</td>
                      <td>{delivery.status_code ?? 'unreachable'}</td>
                      <td>{delivery.error ?? ''}</td>
                      <td>{formatTime(delivery.at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </>
  );
}

/** The steps as a table too: what a keyboard or a small screen uses instead of the graph. */
function StepTable({ task, selected, onSelect }: { task: TaskView; selected: string | undefined; onSelect: (id: string) => void }) {
  return (
    <div className="table-wrap">
      <table className="steps">
        <caption className="visually-hidden">Steps</caption>
        <thead>
          <tr>
            <th scope="col">Step</th>
            <th scope="col">Runs</th>
            <th scope="col">Status</th>
            <th scope="col">Attempts</th>
            <th scope="col">Duration</th>
            <th scope="col">Progress</th>
          </tr>
        </thead>
        <tbody>
          {task.steps.map((step) => (
            <tr key={step.id} aria-selected={step.id === selected}>
              <td>
                <button type="button" className="link" onClick={() => onSelect(step.id)} aria-pressed={step.id === selected}>
                  {step.id}
                </button>
              </td>
              <td>
                {step.child_task_id ? <Link to={`/tasks/${step.child_task_id}`}>{stepLabel(step)} (child task)</Link> : stepLabel(step)}
              </td>
              <td>
                <StatusBadge status={step.status} />
                {step.reason && <span className="hint"> {step.reason}</span>}
              </td>
              <td>{step.attempts}</td>
              <td>{formatDuration(step.duration_ms)}</td>
              <td>
                {step.items ? (
                  <>
                    {itemsNote(step)}
                    {step.items.failed ? `, ${step.items.failed} failed` : ''}
                  </>
                ) : step.progress ? (
                  <>
                    <progress max={100} value={step.progress.percent} aria-label={`${step.id} progress`} /> {step.progress.message}
                  </>
                ) : (
                  ''
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function StepPanel({ task, step }: { task: TaskView; step: Step }) {
  return (
    <section className="panel" aria-labelledby="step-title">
      <h2 id="step-title">
        Step {step.id} <StatusBadge status={step.status} />
      </h2>
      <dl className="facts">
        <dt>Runs</dt>
        <dd>{stepLabel(step)}</dd>
        <dt>Started</dt>
        <dd>{formatTime(step.started_at)}</dd>
        <dt>Finished</dt>
        <dd>{formatTime(step.finished_at)}</dd>
        {step.wake_at && (
          <>
            <dt>{step.kind === 'sleep' ? 'Wakes' : 'Times out'}</dt>
            <dd>{formatTime(step.wake_at)}</dd>
          </>
        )}
      </dl>
      {step.waiting_for &&
        (step.waiting_for.approval ? (
          <p className="hint">Waiting for an approval: decide it at the top of the page.</p>
        ) : (
          <SignalForm task={task} signal={step.waiting_for.signal} approval={false} />
        ))}
      <h3>Input</h3>
      <JsonView value={step.input} label="Input" />
      <h3>Output</h3>
      <JsonView value={step.output} label="Output" />
      {step.error && (
        <>
          <h3>Error</h3>
          <JsonView value={step.error} label="Error" />
        </>
      )}
      {step.last_attempts && step.last_attempts.length > 0 && (
        <>
          <h3>Last attempts</h3>
          <ul>
            {step.last_attempts.map((attempt) => (
              <li key={attempt.attempt}>
                Attempt {attempt.attempt}: {attempt.status}, {formatDuration(attempt.duration_ms)}
                {attempt.error && <> — {attempt.error.message}</>}
                {attempt.will_retry && ' (retried)'}
              </li>
            ))}
          </ul>
        </>
      )}
      {step.kind === 'tool' && <StepLogs task={task} step={step} />}
    </section>
  );
}

/**
 * What the step's tool logged through ctx.logger, attempt by attempt (GET …/steps/:step/logs),
 * read again every 2 s while the task runs: lines are kept when an attempt ends.
 */
function StepLogs({ task, step }: { task: TaskView; step: Step }) {
  const { client } = useApi();
  const logs = useQuery({
    queryKey: ['task', task.task_id, 'logs', step.id],
    queryFn: ({ signal }) =>
      call(client.api.GET('/tasks/{task_id}/steps/{step_id}/logs', { params: { path: { task_id: task.task_id, step_id: step.id } }, signal })),
    refetchInterval: FINISHED_STATUSES.has(task.status) ? false : 2_000,
  });
  return (
    <section aria-labelledby="step-logs-title">
      <h3 id="step-logs-title">Logs</h3>
      {logs.isPending ? (
        <Loading label="Loading the step's logs" />
      ) : logs.error ? (
        <ErrorBox error={logs.error} title="The logs could not be loaded" />
      ) : logs.data.attempts.length === 0 ? (
        <p className="empty">No lines logged (ctx.logger) by an attempt that ended.</p>
      ) : (
        logs.data.attempts.map((attempt) => (
          <figure className="step-log" key={`${attempt.run}-${attempt.item ?? ''}-${attempt.attempt}`} data-attempt={attempt.attempt}>
            <figcaption>
              Attempt {attempt.attempt}
              {attempt.item !== undefined && <>, item {attempt.item}</>}
              {attempt.run > 1 && <>, run {attempt.run}</>} · ended {formatTime(attempt.at)}
              {attempt.dropped > 0 && <> · {attempt.dropped} more lines not kept</>}
            </figcaption>
            <ol className="log-lines">
              {attempt.lines.map((line, index) => (
                // Lines have no id of their own; their order within an attempt never changes.
                // biome-ignore lint/suspicious/noArrayIndexKey: see above
                <li key={index} data-level={line.level}>
                  <time dateTime={line.at}>{new Date(line.at).toLocaleTimeString()}</time> <span className="log-level">{line.level}</span> {line.message}
                  {line.fields !== undefined && <code> {JSON.stringify(line.fields)}</code>}
                </li>
              ))}
            </ol>
          </figure>
        ))
      )}
    </section>
  );
}

function TaskHistory({ task }: { task: TaskView }) {
  const { client } = useApi();
  const [open, setOpen] = useState(false);
  const history = useQuery({
    queryKey: ['task', task.task_id, 'history'],
    queryFn: async ({ signal }) => {
      const events: HistoryEvent[] = [];
      let after: string | undefined;
      for (let page = 0; page < HISTORY_PAGES; page += 1) {
        const answer = await call(
          client.api.GET('/tasks/{task_id}/history', { params: { path: { task_id: task.task_id }, query: { limit: 500, ...(after ? { after } : {}) } }, signal }),
        );
        events.push(...answer.events);
        if (!answer.next_cursor) break;
        after = answer.next_cursor;
      }
      return events;
    },
    refetchInterval: FINISHED_STATUSES.has(task.status) ? false : 2_000,
  });
  if (history.isPending) return <Loading label="Loading the history" />;
  if (history.error) return <ErrorBox error={history.error} title="The history could not be loaded" />;
  const spans = spansOf(history.data, Date.now());
  return (
    <>
      <Timeline spans={spans} stepIds={task.steps.map((step) => step.id)} />
      <details onToggle={(event) => setOpen(event.currentTarget.open)}>
        <summary>History: {history.data.length} events</summary>
        {/* Drawn only when opened: a big task has thousands of events. */}
        {open && (
        <ol className="history">
          {history.data.map((event) => (
            <li key={event.seq}>
              <time dateTime={event.at}>{formatTime(event.at)}</time> {event.type}
              {event.step_id && <> · {event.step_id}</>}
              {event.item !== undefined && <> #{event.item}</>}
              {event.data && Object.keys(event.data).length > 0 && <code> {JSON.stringify(event.data)}</code>}
            </li>
          ))}
        </ol>
        )}
      </details>
    </>
  );
}

/** Cancel and retry, for keys that may manage tasks; a read key sees none. */
function TaskActions({ task }: { task: TaskView }) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  const canManage = useCan('manageTasks');
  const done = () => queryClient.invalidateQueries({ queryKey: ['task', task.task_id] });
  const cancel = useMutation({ mutationFn: () => call(client.api.POST('/tasks/{task_id}/cancel', { params: { path: { task_id: task.task_id } } })), onSettled: done });
  const retry = useMutation({ mutationFn: () => call(client.api.POST('/tasks/{task_id}/retry', { params: { path: { task_id: task.task_id } } })), onSettled: done });
  if (!canManage) return null;
  const finished = FINISHED_STATUSES.has(task.status);
  return (
    <div className="actions">
      {!finished && (
        <button type="button" className="danger" disabled={cancel.isPending} onClick={() => window.confirm('Cancel this task?') && cancel.mutate()}>
          Cancel task
        </button>
      )}
      {(task.status === 'failed' || task.status === 'cancelled') && (
        <button type="button" disabled={retry.isPending} onClick={() => retry.mutate()}>
          Retry task
        </button>
      )}
      {cancel.error && <ErrorBox error={cancel.error} title="Cancel failed" />}
      {retry.error && <ErrorBox error={retry.error} title="Retry failed" />}
    </div>
  );
}

/** A wait step's signal: approve or reject an approval (`stepId` names its step), or send a JSON payload. */
function SignalForm({ task, signal, approval, stepId }: { task: TaskView; signal: string; approval: boolean; stepId?: string }) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  const canManage = useCan('manageTasks');
  const [payloadText, setPayloadText] = useState('{}');
  const [parseError, setParseError] = useState<string>();
  const send = useMutation({
    mutationFn: (payload: unknown) =>
      call(client.api.POST('/tasks/{task_id}/signals/{name}', { params: { path: { task_id: task.task_id, name: signal } }, body: payload as never })),
    onSettled: () => queryClient.invalidateQueries({ queryKey: ['task', task.task_id] }),
  });
  if (!canManage) return <p className="hint">Waiting for the signal {signal}.</p>;
  const sendJson = (event: FormEvent) => {
    event.preventDefault();
    try {
      const payload: unknown = JSON.parse(payloadText);
      setParseError(undefined);
      send.mutate(payload);
    } catch (error) {
      setParseError((error as Error).message);
    }
  };
  return (
    <div className="panel signal">
      <h3>Waiting for {approval ? 'an approval' : `the signal ${signal}`}</h3>
      {stepId && (
        <p className="hint">
          Step <span className="mono">{stepId}</span>
        </p>
      )}
      {approval ? (
        <div className="actions">
          <button type="button" disabled={send.isPending} onClick={() => send.mutate({ decision: 'approved' })}>
            Approve
          </button>
          <button type="button" className="danger" disabled={send.isPending} onClick={() => send.mutate({ decision: 'rejected' })}>
            Reject
          </button>
        </div>
      ) : (
        <form onSubmit={sendJson}>
          <label htmlFor="signal-payload">Payload (JSON)</label>
          <textarea
            id="signal-payload"
            rows={4}
            value={payloadText}
            onChange={(event) => setPayloadText(event.target.value)}
            aria-invalid={parseError ? true : undefined}
            aria-describedby={parseError ? 'signal-payload-error' : undefined}
          />
          {parseError && (
            <p id="signal-payload-error" className="field-error">
              {parseError}
            </p>
          )}
          <button type="submit" disabled={send.isPending}>
            Send signal
          </button>
        </form>
      )}
      {send.error && <ErrorBox error={send.error} title="The signal was refused" />}
    </div>
  );
}

/** A map's items done out of total; a repeat's iterations so far (its items are its iterations). */
function itemsNote(step: TaskView['steps'][number]): string {
  if (step.iterations !== undefined) return `${step.iterations} ${step.iterations === 1 ? 'iteration' : 'iterations'}`;
  return `${step.items!.done}/${step.items!.total} items`;
}
