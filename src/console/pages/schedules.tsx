import type { Schedule } from '@orchestrator/client';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { call, useApi, useCan } from '../components/api.tsx';
import { formatDuration, formatTime } from '../components/format.ts';
import { ErrorBox, Loading } from '../components/states.tsx';

/**
 * The schedules (GET /schedules) with their next ticks and owners (names are unique per owner); a
 * key that may manage tasks pauses and resumes them (PATCH paused, naming the owner).
 */
export default function SchedulesPage() {
  const { client } = useApi();
  const schedules = useQuery({ queryKey: ['schedules'], queryFn: ({ signal }) => call(client.api.GET('/schedules', { signal })) });
  return (
    <>
      <h1>Schedules</h1>
      {schedules.isPending ? (
        <Loading label="Loading schedules" />
      ) : schedules.error ? (
        <ErrorBox error={schedules.error} title="The schedules could not be loaded" />
      ) : schedules.data.schedules.length === 0 ? (
        <p className="empty">No schedules.</p>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="visually-hidden">Schedules</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">When</th>
                <th scope="col">Task</th>
                <th scope="col">State</th>
                <th scope="col">Next ticks</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {schedules.data.schedules.map((schedule) => (
                <ScheduleRow key={`${schedule.owner ?? ''}/${schedule.name}`} schedule={schedule} />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

function ScheduleRow({ schedule }: { schedule: Schedule }) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  const canChange = useCan('manageTasks');
  const toggle = useMutation({
    mutationFn: () =>
      call(
        client.api.PATCH('/schedules/{name}', {
          params: { path: { name: schedule.name }, ...(schedule.owner !== null ? { query: { owner: schedule.owner } } : {}) },
          body: { paused: !schedule.paused },
        }),
      ),
    onSettled: () => queryClient.invalidateQueries({ queryKey: ['schedules'] }),
  });
  return (
    <tr data-schedule={schedule.name}>
      <th scope="row">
        {schedule.name} {schedule.owner !== null && <span className="hint">{schedule.owner}</span>}
      </th>
      <td>
        {schedule.cron ? <code>{schedule.cron}</code> : `every ${formatDuration(schedule.every_ms)}`} <span className="hint">{schedule.timezone}</span>
      </td>
      <td>
        <code>{schedule.task_type}</code> <span className="hint">overlap {schedule.overlap}</span>
      </td>
      <td>
        <span className={`badge ${schedule.paused ? 'status-cancelled' : 'status-completed'}`}>{schedule.paused ? 'paused' : 'active'}</span>
      </td>
      <td>
        {schedule.next_fire_times.length === 0 ? (
          <span className="hint">none</span>
        ) : (
          <ul className="plain">
            {schedule.next_fire_times.slice(0, 3).map((at) => (
              <li key={at}>
                <time dateTime={at}>{formatTime(at)}</time>
              </li>
            ))}
          </ul>
        )}
      </td>
      <td>
        {canChange && (
          <button type="button" disabled={toggle.isPending} onClick={() => toggle.mutate()} aria-label={`${schedule.paused ? 'Resume' : 'Pause'} ${schedule.name}`}>
            {schedule.paused ? 'Resume' : 'Pause'}
          </button>
        )}
        {toggle.error && <ErrorBox error={toggle.error} title="Not changed" />}
      </td>
    </tr>
  );
}
