import { keepPreviousData, useQuery } from '@tanstack/react-query';
import { useState } from 'react';
import { useSearchParams } from 'react-router';
import { call, useApi } from '../components/api.tsx';
import { formatTime } from '../components/format.ts';
import { ErrorBox, Loading } from '../components/states.tsx';
import { Pager } from '../components/pager.tsx';
import { TaskIdLink } from '../components/task-id.tsx';

/** What a task can wait on that someone may want to act on or explain, with its label. */
const REASONS = {
  signal: 'a signal',
  approval: 'an approval',
  concurrency: 'its turn (concurrency limit per key)',
  rate_limit: 'its turn (rate limit per key)',
  circuit_open: "its service's open circuit",
} as const;
type Reason = keyof typeof REASONS;
const ALL = Object.keys(REASONS) as Reason[];
const PAGE_SIZE = 50;
const REFRESH_MS = 3_000;

/**
 * The unfinished tasks with a step waiting on someone (a signal, an approval), on a limit per key
 * or on an open circuit, in one list (GET /tasks?status=waiting&waiting_reason=…), each linking
 * to its detail, where it is signalled or approved.
 */
export default function WaitingPage() {
  const { client } = useApi();
  const [search, setSearch] = useSearchParams();
  const only = search.get('reason');
  const reasons = only && only in REASONS ? [only as Reason] : ALL;
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors.at(-1);
  const tasks = useQuery({
    queryKey: ['tasks', 'waiting', reasons.join(','), cursor ?? ''],
    queryFn: ({ signal }) =>
      call(
        client.api.GET('/tasks', {
          params: { query: { status: 'waiting', waiting_reason: reasons.join(','), limit: PAGE_SIZE, ...(cursor ? { cursor } : {}) } },
          signal,
        }),
      ),
    refetchInterval: REFRESH_MS,
    placeholderData: keepPreviousData,
  });

  return (
    <>
      <h1>Waiting</h1>
      <div className="toolbar">
        <label className="inline-field">
          Waiting on{' '}
          <select
            value={only ?? ''}
            onChange={(event) => {
              setCursors([undefined]);
              setSearch(event.target.value ? { reason: event.target.value } : {});
            }}
          >
            <option value="">anything below</option>
            {ALL.map((reason) => (
              <option key={reason} value={reason}>
                {REASONS[reason]}
              </option>
            ))}
          </select>
        </label>
      </div>
      {tasks.isPending ? (
        <Loading label="Loading waiting tasks" />
      ) : tasks.error && !tasks.data ? (
        <ErrorBox error={tasks.error} title="The waiting tasks could not be loaded" />
      ) : (
        <>
          {tasks.error && <ErrorBox error={tasks.error} title="Refreshing failed; showing the last answer" />}
          {tasks.data.items.length === 0 ? (
            <p className="empty">Nothing is waiting.</p>
          ) : (
            <div className="table-wrap">
              <table>
                <caption className="visually-hidden">Waiting tasks, newest first</caption>
                <thead>
                  <tr>
                    <th scope="col">Task</th>
                    <th scope="col">Type</th>
                    <th scope="col">Waiting steps</th>
                    <th scope="col">Created</th>
                  </tr>
                </thead>
                <tbody>
                  {tasks.data.items.map((task) => (
                    <tr key={task.task_id} data-task={task.task_id}>
                      <td>
                        <TaskIdLink id={task.task_id} />
                      </td>
                      <td>{task.task_type}</td>
                      <td>
                        <ul className="plain">
                          {(task.waiting_for ?? []).map((wait) => (
                            <li key={wait.step_id} data-reason={wait.reason}>
                              <code>{wait.step_id}</code> waits for {REASONS[wait.reason as Reason] ?? wait.reason}
                              {wait.timeout_at && <> (until {formatTime(wait.timeout_at)})</>}
                            </li>
                          ))}
                        </ul>
                      </td>
                      <td>{formatTime(task.created_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          <Pager cursors={cursors} setCursors={setCursors} next={tasks.data.next_cursor} />
        </>
      )}
    </>
  );
}
