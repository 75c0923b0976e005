import { paramsFilter, type TaskQuery, type TaskSummary } from '@orchestrator/client';
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import { useNavigate, useSearchParams } from 'react-router';
import { call, useApi, useCan } from '../components/api.tsx';
import { formatDuration, formatTime } from '../components/format.ts';
import { ErrorBox, Loading } from '../components/states.tsx';
import { StatusBadge } from '../components/status-badge.tsx';
import { TaskIdLink } from '../components/task-id.tsx';
import { Pager } from '../components/pager.tsx';

const STATUSES = ['queued', 'running', 'waiting', 'completed', 'failed', 'cancelled'] as const;
const PAGE_SIZE = 50;
/** The list refreshes itself this often: new tasks and status changes appear without a reload. */
const REFRESH_MS = 2_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Requests a bulk action keeps in flight at once: a page of 50 goes in a few rounds, not 50 at once. */
const BULK_PARALLEL = 5;

/** `datetime-local` (the browser's local time, no zone) to the API's ISO time; '' to nothing. */
function isoOf(local: string | null): string | undefined {
  if (!local) return undefined;
  const time = new Date(local);
  return Number.isNaN(time.getTime()) ? undefined : time.toISOString();
}

/**
 * Every task, newest first, a page at a time (the API's cursor): filters by status, type,
 * creation time and a param's value, kept in the URL so a filtered list can be shared and the
 * back button works. Child tasks (a sub-workflow step's) are listed under their parent, opened
 * with its Children button; "Include child tasks" lists them among the others.
 */
export default function TasksPage() {
  const { client } = useApi();
  const navigate = useNavigate();
  const [search, setSearch] = useSearchParams();
  // The cursors of the pages before this one: Previous goes back through them.
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors.at(-1);
  const query: TaskQuery = { limit: PAGE_SIZE };
  const status = search.get('status');
  if (status) query.status = status as TaskQuery['status'];
  const type = search.get('type');
  if (type) query.task_type = type;
  const after = isoOf(search.get('after'));
  if (after) query.created_after = after;
  const before = isoOf(search.get('before'));
  if (before) query.created_before = before;
  const withChildren = search.get('children') === 'all';
  if (!withChildren) query.top_level = 'true';
  const param = paramsFilter(search.get('param'));
  if (param.filter) query.params = param.filter;
  if (cursor) query.cursor = cursor;

  const tasks = useQuery({
    queryKey: ['tasks', query],
    queryFn: ({ signal }) => call(client.api.GET('/tasks', { params: { query }, signal })),
    refetchInterval: REFRESH_MS,
    placeholderData: keepPreviousData,
  });

  const applyFilters = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const next = new URLSearchParams();
    for (const name of ['status', 'type', 'after', 'before', 'param', 'children']) {
      const value = String(form.get(name) ?? '').trim();
      if (value) next.set(name, value);
    }
    setCursors([undefined]);
    setSearch(next);
  };
  const [idError, setIdError] = useState<string>();
  const openById = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const id = String(new FormData(event.currentTarget).get('id') ?? '').trim();
    if (!UUID.test(id)) return setIdError('A task id is a UUID, as POST /assign-task answered it.');
    setIdError(undefined);
    navigate(`/tasks/${id}`);
  };

  return (
    <>
      <h1>Tasks</h1>
      <div className="toolbar">
        <form className="filters" onSubmit={applyFilters} aria-label="Filter tasks" key={search.toString()}>
          <label>
            Status
            <select name="status" defaultValue={status ?? ''}>
              <option value="">any</option>
              {STATUSES.map((value) => (
                <option key={value}>{value}</option>
              ))}
            </select>
          </label>
          <label>
            Type
            <input name="type" defaultValue={type ?? ''} placeholder="tool or workflow" />
          </label>
          <label>
            Created after
            <input name="after" type="datetime-local" step="1" defaultValue={search.get('after') ?? ''} />
          </label>
          <label>
            Created before
            <input name="before" type="datetime-local" step="1" defaultValue={search.get('before') ?? ''} />
          </label>
          <label>
            Param
            <input
              name="param"
              defaultValue={search.get('param') ?? ''}
              placeholder="customer_id=c-9"
              aria-invalid={param.problem ? true : undefined}
              aria-describedby={param.problem ? 'param-error' : 'param-help'}
            />
          </label>
          <label className="inline">
            <input type="checkbox" name="children" value="all" defaultChecked={withChildren} />
            Include child tasks
          </label>
          <button type="submit">Filter</button>
          {param.problem ? (
            <p id="param-error" className="field-error" role="alert">
              {param.problem}
            </p>
          ) : (
            <p id="param-help" className="hint">
              A param's value searches the last 7 days of tasks unless Created after says otherwise (31 days at most).
            </p>
          )}
        </form>
        <form className="filters" onSubmit={openById} aria-label="Open a task by id">
          <label>
            Task id
            <input name="id" placeholder="0192…" aria-invalid={idError ? true : undefined} aria-describedby={idError ? 'id-error' : undefined} />
          </label>
          <button type="submit">Open</button>
          {idError && (
            <p id="id-error" className="field-error" role="alert">
              {idError}
            </p>
          )}
        </form>
      </div>
      {tasks.isPending ? (
        <Loading label="Loading tasks" />
      ) : tasks.error && !tasks.data ? (
        <ErrorBox error={tasks.error} title="The tasks could not be loaded" />
      ) : (
        <>
          {tasks.error && <ErrorBox error={tasks.error} title="Refreshing failed; showing the last answer" />}
          <TaskTable items={tasks.data?.items ?? []} nested={!withChildren} key={`${search.toString()}|${cursor ?? ''}`} />
          <Pager cursors={cursors} setCursors={setCursors} next={tasks.data?.next_cursor} />
        </>
      )}
    </>
  );
}

type BulkAction = 'cancel' | 'retry';

/** What a bulk action did: how many it was asked for, how many the API did, and why the others were refused. */
interface BulkOutcome {
  action: BulkAction;
  asked: number;
  done: number;
  refused: string[];
}

/**
 * The filtered page's tasks, each with a checkbox for a key that may manage tasks: the selected
 * ones are cancelled or retried together, one request per task (POST /tasks/:id/cancel or
 * /retry, BULK_PARALLEL at a time); the API refuses what does not apply (a finished task's cancel).
 */
function TaskTable({ items, nested }: { items: TaskSummary[]; nested: boolean }) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  const canManage = useCan('manageTasks');
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const bulk = useMutation({
    mutationFn: async (action: BulkAction): Promise<BulkOutcome> => {
      const ids = items.map((task) => task.task_id).filter((id) => selected.has(id));
      const outcome: BulkOutcome = { action, asked: ids.length, done: 0, refused: [] };
      for (let start = 0; start < ids.length; start += BULK_PARALLEL) {
        await Promise.all(
          ids.slice(start, start + BULK_PARALLEL).map(async (id) => {
            try {
              const path = action === 'cancel' ? '/tasks/{task_id}/cancel' : '/tasks/{task_id}/retry';
              await call(client.api.POST(path, { params: { path: { task_id: id } } }));
              outcome.done += 1;
            } catch (error) {
              outcome.refused.push(`…${id.slice(-12)}: ${error instanceof Error ? error.message : String(error)}`);
            }
          }),
        );
      }
      return outcome;
    },
    onSettled: () => {
      setSelected(new Set());
      return queryClient.invalidateQueries({ queryKey: ['tasks'] });
    },
  });
  const toggle = (id: string) =>
    setSelected((before) => {
      const next = new Set(before);
      if (!next.delete(id)) next.add(id);
      return next;
    });
  const allSelected = items.length > 0 && items.every((task) => selected.has(task.task_id));
  return (
    <>
      {canManage && (
        <div className="actions bulk" role="group" aria-label="Selected tasks">
          <button type="button" className="danger" disabled={selected.size === 0 || bulk.isPending} onClick={() => bulk.mutate('cancel')}>
            Cancel selected ({selected.size})
          </button>
          <button type="button" disabled={selected.size === 0 || bulk.isPending} onClick={() => bulk.mutate('retry')}>
            Retry selected ({selected.size})
          </button>
          {bulk.data && (
            <p role="status">
              {bulk.data.action === 'cancel' ? 'Cancelled' : 'Retried'} {bulk.data.done} of {bulk.data.asked}
              {bulk.data.refused.length > 0 && `; refused: ${bulk.data.refused.join('; ')}`}
            </p>
          )}
        </div>
      )}
      {/* The bar stays when the list empties (the tasks just cancelled left this filter): it says what was done. */}
      {items.length === 0 ? (
        <p className="empty">No tasks match.</p>
      ) : (
        <TaskRows
          items={items}
          nested={nested}
          selected={canManage ? selected : undefined}
          toggle={toggle}
          allSelected={allSelected}
          setSelected={setSelected}
        />
      )}
    </>
  );
}

function TaskRows({
  items,
  nested,
  selected,
  toggle,
  allSelected,
  setSelected,
}: {
  items: TaskSummary[];
  /** Top-level tasks: each workflow task may open its children under it. */
  nested: boolean;
  /** Undefined: no checkboxes (a key that may not manage tasks). */
  selected: Set<string> | undefined;
  toggle: (id: string) => void;
  allSelected: boolean;
  setSelected: (ids: Set<string>) => void;
}) {
  return (
    <div className="table-wrap">
      <table className="tasks">
        <caption className="visually-hidden">Tasks, newest first</caption>
        <thead>
          <tr>
            {selected && (
              <th scope="col">
                <input
                  type="checkbox"
                  aria-label="Select every task of this page"
                  checked={allSelected}
                  onChange={() => setSelected(allSelected ? new Set() : new Set(items.map((task) => task.task_id)))}
                />
              </th>
            )}
            <th scope="col">Task</th>
            <th scope="col">Type</th>
            <th scope="col">Status</th>
            <th scope="col">Steps</th>
            <th scope="col">Created</th>
            <th scope="col">Duration</th>
          </tr>
        </thead>
        <tbody>
          {items.map((task) => (
            <TaskRow key={task.task_id} task={task} nested={nested} selected={selected} toggle={toggle} depth={0} />
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Children opened under a task at most this deep (a sub-workflow nests at most SUBWORKFLOW_MAX_DEPTH). */
const MAX_NESTING = 5;

/** One task's row; a workflow task's Children button lists its child tasks in rows under it (GET /tasks?parent=). */
function TaskRow({
  task,
  nested,
  selected,
  toggle,
  depth,
}: {
  task: TaskSummary;
  nested: boolean;
  selected: Set<string> | undefined;
  toggle: (id: string) => void;
  depth: number;
}) {
  const { client } = useApi();
  const [open, setOpen] = useState(false);
  const children = useQuery({
    queryKey: ['tasks', { parent: task.task_id }],
    queryFn: ({ signal }) => call(client.api.GET('/tasks', { params: { query: { parent: task.task_id, limit: 200 } }, signal })),
    enabled: open,
    refetchInterval: REFRESH_MS,
  });
  const canOpen = nested && task.workflow !== undefined && depth < MAX_NESTING;
  const columns = selected ? 7 : 6;
  return (
    <>
      <tr data-task={task.task_id} data-depth={depth} className={depth > 0 ? 'child' : undefined}>
        {selected && (
          <td>
            <input type="checkbox" aria-label={`Select task ${task.task_id}`} checked={selected.has(task.task_id)} onChange={() => toggle(task.task_id)} />
          </td>
        )}
        <td style={depth > 0 ? { paddingLeft: `${depth * 1.5}rem` } : undefined}>
          {canOpen && (
            <button
              type="button"
              className="link disclosure"
              aria-expanded={open}
              aria-label={`${open ? 'Hide' : 'Show'} the child tasks of ${task.task_id}`}
              onClick={() => setOpen(!open)}
            >
              {open ? '▾' : '▸'}
            </button>
          )}
          {depth > 0 && <span className="visually-hidden">child of {task.parent_task_id}: </span>}
          <TaskIdLink id={task.task_id} />
        </td>
        <td>{task.task_type}</td>
        <td>
          <StatusBadge status={task.waiting_for?.length ? 'waiting' : task.status} />
        </td>
        <td>{task.steps_total}</td>
        <td>{formatTime(task.created_at)}</td>
        <td>{task.started_at ? formatDuration(Date.parse(task.finished_at ?? new Date().toISOString()) - Date.parse(task.started_at)) : '—'}</td>
      </tr>
      {open &&
        (children.isPending ? (
          <tr className="child">
            <td colSpan={columns}>Loading the child tasks…</td>
          </tr>
        ) : children.error ? (
          <tr className="child">
            <td colSpan={columns}>The child tasks could not be loaded: {children.error.message}</td>
          </tr>
        ) : children.data.items.length === 0 ? (
          <tr className="child">
            <td colSpan={columns} style={{ paddingLeft: `${(depth + 1) * 1.5}rem` }}>
              No child tasks.
            </td>
          </tr>
        ) : (
          children.data.items.map((child) => <TaskRow key={child.task_id} task={child} nested={nested} selected={selected} toggle={toggle} depth={depth + 1} />)
        ))}
    </>
  );
}
