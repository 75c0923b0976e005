import type { operations } from '@orchestrator/client';
import { useQuery } from '@tanstack/react-query';
import { useSearchParams } from 'react-router';
import { call, useApi } from '../components/api.tsx';
import { formatDuration } from '../components/format.ts';
import { ErrorBox, Loading } from '../components/states.tsx';

type Stats = operations['stats']['responses'][200]['content']['application/json'];

const WINDOWS = ['1h', '6h', '24h', '7d'] as const;
const REFRESH_MS = 10_000;

interface Line {
  name: string;
  /** A CSS colour: the status colours of styles.css. */
  color: string;
  values: readonly (number | null)[];
}

const WIDTH = 600;
const HEIGHT = 160;
const PAD = { left: 8, right: 8, top: 8, bottom: 8 };

/**
 * A line chart in plain SVG (no chart library: a few polylines cost nothing in the bundle). Gaps
 * (null) break a line. Its numbers are also in the table under it, for screen readers and copying.
 */
function LineChart({ title, lines, times, format }: { title: string; lines: readonly Line[]; times: readonly string[]; format: (value: number) => string }) {
  const max = Math.max(1, ...lines.flatMap((line) => line.values.filter((value): value is number => value !== null)));
  const x = (index: number) => PAD.left + (index * (WIDTH - PAD.left - PAD.right)) / Math.max(1, times.length - 1);
  const y = (value: number) => HEIGHT - PAD.bottom - (value / max) * (HEIGHT - PAD.top - PAD.bottom);
  const segments = (values: readonly (number | null)[]) => {
    const runs: string[] = [];
    let run: string[] = [];
    values.forEach((value, index) => {
      if (value === null) {
        if (run.length) runs.push(run.join(' '));
        run = [];
      } else run.push(`${x(index).toFixed(1)},${y(value).toFixed(1)}`);
    });
    if (run.length) runs.push(run.join(' '));
    return runs;
  };
  const time = (iso: string | undefined) => (iso ? new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }) : '');
  return (
    <figure className="chart">
      <figcaption>
        <strong>{title}</strong>{' '}
        {lines.map((line) => (
          <span key={line.name} className="legend">
            <span className="swatch" style={{ background: line.color }} aria-hidden="true" /> {line.name}
          </span>
        ))}
      </figcaption>
      <div className="chart-frame">
        <span className="chart-max">{format(max)}</span>
        <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} preserveAspectRatio="none" role="img" aria-label={`${title}, ${times.length} points; the numbers are in the table below`}>
          <line x1={PAD.left} x2={WIDTH - PAD.right} y1={HEIGHT - PAD.bottom} y2={HEIGHT - PAD.bottom} className="axis" />
          {lines.map((line) =>
            segments(line.values).map((points) =>
              points.includes(' ') ? (
                <polyline key={`${line.name}${points}`} points={points} fill="none" stroke={line.color} strokeWidth="2" vectorEffect="non-scaling-stroke" />
              ) : (
                <circle key={`${line.name}${points}`} cx={points.split(',')[0]} cy={points.split(',')[1]} r="2.5" fill={line.color} />
              ),
            ),
          )}
        </svg>
        <span className="chart-times">
          <span>{time(times[0])}</span>
          <span>{time(times.at(-1))}</span>
        </span>
      </div>
      <details>
        <summary>Numbers</summary>
        <div className="table-wrap">
          <table>
            <caption className="visually-hidden">{title}</caption>
            <thead>
              <tr>
                <th scope="col">From</th>
                {lines.map((line) => (
                  <th scope="col" key={line.name}>
                    {line.name}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {times.map((at, index) => (
                <tr key={at}>
                  <td>{time(at)}</td>
                  {lines.map((line) => (
                    <td key={line.name}>{line.values[index] === null ? '—' : format(line.values[index]!)}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}

const QUEUE_STATES = ['wait', 'prioritized', 'active', 'delayed', 'waiting-children', 'failed', 'completed'] as const;

/** Throughput and latency over a window (GET /stats), queue depths (GET /stats/queues), and the other tools' links. */
export default function OverviewPage() {
  const { client } = useApi();
  const [search, setSearch] = useSearchParams();
  const window = (WINDOWS as readonly string[]).includes(search.get('window') ?? '') ? (search.get('window') as (typeof WINDOWS)[number]) : '1h';
  const stats = useQuery({
    queryKey: ['stats', window],
    queryFn: ({ signal }) => call(client.api.GET('/stats', { params: { query: { window } }, signal })),
    refetchInterval: REFRESH_MS,
  });
  const queues = useQuery({
    queryKey: ['stats', 'queues'],
    queryFn: ({ signal }) => call(client.api.GET('/stats/queues', { signal })),
    refetchInterval: REFRESH_MS,
  });

  return (
    <>
      <div className="title-row">
        <h1>Overview</h1>
        <nav aria-label="Other views" className="actions">
          <a href="/admin/queues">Bull Board</a>
          <a href="/docs">API docs</a>
          <a href="/metrics">Metrics</a>
        </nav>
      </div>
      <label className="inline-field">
        Window{' '}
        <select value={window} onChange={(event) => setSearch({ window: event.target.value })}>
          {WINDOWS.map((value) => (
            <option key={value}>{value}</option>
          ))}
        </select>
      </label>
      {stats.isPending ? (
        <Loading label="Loading statistics" />
      ) : stats.error && !stats.data ? (
        <ErrorBox error={stats.error} title="The statistics could not be loaded" />
      ) : (
        <StatsView stats={stats.data} />
      )}
      <h2>Queue depths</h2>
      {queues.isPending ? (
        <Loading label="Loading queue depths" />
      ) : queues.error && !queues.data ? (
        <ErrorBox error={queues.error} title="The queue depths could not be loaded" />
      ) : (
        <div className="table-wrap">
          <table className="numbers" aria-label="Queue depths">
            <thead>
              <tr>
                <th scope="col">Queue</th>
                {QUEUE_STATES.map((state) => (
                  <th scope="col" key={state}>
                    {state}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {queues.data.queues.map((queue) => (
                <tr key={queue.name} data-queue={queue.name}>
                  <th scope="row">{queue.name}</th>
                  {QUEUE_STATES.map((state) => (
                    <td key={state}>{queue.counts[state]}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

function StatsView({ stats }: { stats: Stats }) {
  const points = stats.series.points;
  const times = points.map((point) => point.at);
  const perBucket = `per ${formatDuration(stats.series.bucket_ms)}`;
  return (
    <>
      <dl className="facts totals">
        <dt>Tasks</dt>
        <dd>{stats.tasks.total}</dd>
        {Object.entries(stats.tasks.by_status).map(([status, count]) => (
          <div key={status} className="contents">
            <dt>{status}</dt>
            <dd>{count}</dd>
          </div>
        ))}
      </dl>
      <div className="charts">
        <LineChart
          title={`Throughput, tasks ${perBucket}`}
          times={times}
          format={(value) => String(Math.round(value))}
          lines={[
            { name: 'created', color: 'var(--status-running)', values: points.map((point) => point.created) },
            { name: 'completed', color: 'var(--status-completed)', values: points.map((point) => point.completed) },
            { name: 'failed', color: 'var(--status-failed)', values: points.map((point) => point.failed) },
          ]}
        />
        <LineChart
          title="Latency of finished tasks"
          times={times}
          format={formatDuration}
          lines={[
            { name: 'p50', color: 'var(--status-completed)', values: points.map((point) => point.duration_ms.p50) },
            { name: 'p90', color: 'var(--status-waiting)', values: points.map((point) => point.duration_ms.p90) },
            { name: 'p99', color: 'var(--status-failed)', values: points.map((point) => point.duration_ms.p99) },
          ]}
        />
      </div>
      <h2>By task type</h2>
      {stats.tasks.by_type.length === 0 ? (
        <p className="empty">No tasks in this window.</p>
      ) : (
        <div className="table-wrap">
          <table className="numbers" aria-label="Tasks by type">
            <thead>
              <tr>
                <th scope="col">Type</th>
                <th scope="col">Tasks</th>
                <th scope="col">p50</th>
                <th scope="col">p90</th>
                <th scope="col">p99</th>
                <th scope="col">max</th>
              </tr>
            </thead>
            <tbody>
              {stats.tasks.by_type.map((entry) => (
                <tr key={entry.task_type}>
                  <th scope="row">{entry.task_type}</th>
                  <td>{entry.total}</td>
                  <td>{formatDuration(entry.duration_ms.p50)}</td>
                  <td>{formatDuration(entry.duration_ms.p90)}</td>
                  <td>{formatDuration(entry.duration_ms.p99)}</td>
                  <td>{formatDuration(entry.duration_ms.max)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
