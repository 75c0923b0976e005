import type { components } from '@orchestrator/client';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { Link } from 'react-router';
import { call, useApi, useCan } from '../components/api.tsx';
import { formatTime } from '../components/format.ts';
import { ErrorBox, Loading } from '../components/states.tsx';

type FleetWorker = components['schemas']['Worker'];

/** Heartbeats come every 5 s: reading more often shows nothing new. */
const REFRESH_MS = 5_000;

/**
 * The workers of users' own tools (GET /workers): who is connected, with which tools, what they
 * run now and when each was last heard from; an admin key forgets one that stopped.
 */
export default function WorkersPage() {
  const { client } = useApi();
  const workers = useQuery({
    queryKey: ['workers'],
    queryFn: ({ signal }) => call(client.api.GET('/workers', { signal })),
    refetchInterval: REFRESH_MS,
  });
  return (
    <>
      <h1>Workers</h1>
      <p className="hint">
        Processes running your own tools with <code>@orchestrator/worker</code>. The built-in tools run in the orchestrator's own workers, which are not
        listed here.
      </p>
      {workers.isPending ? (
        <Loading label="Loading workers" />
      ) : workers.error && !workers.data ? (
        <ErrorBox error={workers.error} title="The workers could not be loaded" />
      ) : workers.data.workers.length === 0 ? (
        <p className="empty">No worker has registered.</p>
      ) : (
        <ul className="cards" aria-label="Workers">
          {workers.data.workers.map((worker) => (
            <WorkerCard key={worker.worker_id} worker={worker} />
          ))}
        </ul>
      )}
    </>
  );
}

function WorkerCard({ worker }: { worker: FleetWorker }) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  const canForget = useCan('admin');
  const forget = useMutation({
    mutationFn: () => call(client.api.DELETE('/workers/{worker_id}', { params: { path: { worker_id: worker.worker_id } } })),
    onSettled: () => queryClient.invalidateQueries({ queryKey: ['workers'] }),
  });
  const headingId = `worker-${worker.worker_id}`;
  return (
    <li className="card" aria-labelledby={headingId} data-worker={worker.worker_id} data-live={worker.live}>
      <div className="title-row">
        <h2 id={headingId} className="mono">
          {worker.worker_id}
        </h2>
        <span className={`badge ${worker.live ? 'status-completed' : 'status-failed'}`}>{worker.live ? 'live' : 'gone'}</span>
        {canForget && !worker.live && (
          <div className="actions">
            <button type="button" disabled={forget.isPending} onClick={() => forget.mutate()} aria-label={`Forget ${worker.worker_id}`}>
              {forget.isPending ? 'Forgetting…' : 'Forget'}
            </button>
          </div>
        )}
      </div>
      <dl className="facts">
        <dt>Host</dt>
        <dd className="mono">
          {worker.host} (pid {worker.pid})
        </dd>
        {worker.owner && (
          <>
            <dt>Key</dt>
            <dd>{worker.owner}</dd>
          </>
        )}
        <dt>Version</dt>
        <dd>{worker.version}</dd>
        <dt>Tools</dt>
        <dd data-tools>{worker.tools.join(', ')}</dd>
        <dt>Running</dt>
        <dd data-running={worker.running_count}>
          {worker.running_count} of {worker.concurrency}
        </dd>
        <dt>Last heartbeat</dt>
        <dd>{formatTime(worker.last_heartbeat_at)}</dd>
        <dt>Started</dt>
        <dd>{formatTime(worker.started_at)}</dd>
      </dl>
      {worker.running.length > 0 && (
        <details>
          <summary>Steps running now</summary>
          <ul className="plain">
            {worker.running.map((step) => (
              <li key={`${step.task_id}-${step.step_id}-${step.item ?? ''}`}>
                <Link to={`/tasks/${step.task_id}`} className="mono">
                  {step.task_id}
                </Link>{' '}
                · {step.step_id}
                {step.item !== undefined && <> #{step.item}</>} ({step.tool}) since {formatTime(step.since)}
              </li>
            ))}
          </ul>
        </details>
      )}
      {forget.error && <ErrorBox error={forget.error} title="Not forgotten" />}
    </li>
  );
}
