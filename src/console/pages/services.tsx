import type { components } from '@orchestrator/client';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { call, useApi, useCan } from '../components/api.tsx';
import { formatTime } from '../components/format.ts';
import { ErrorBox, Loading } from '../components/states.tsx';

type Service = components['schemas']['Service'];

/** How often health and circuits are read again: both change without anyone acting here. */
const REFRESH_MS = 5_000;

/** Circuit states in the status colours: closed is good, open is failing, half-open is trying. */
const CIRCUIT_CLASS = { closed: 'status-completed', open: 'status-failed', half_open: 'status-waiting' } as const;

/** The registered services (GET /services): health, circuit state and its latest transitions; an admin key refreshes a document. */
export default function ServicesPage() {
  const { client } = useApi();
  const services = useQuery({
    queryKey: ['services'],
    queryFn: ({ signal }) => call(client.api.GET('/services', { signal })),
    refetchInterval: REFRESH_MS,
  });
  return (
    <>
      <h1>Services</h1>
      {services.isPending ? (
        <Loading label="Loading services" />
      ) : services.error && !services.data ? (
        <ErrorBox error={services.error} title="The services could not be loaded" />
      ) : services.data.services.length === 0 ? (
        <p className="empty">No services registered.</p>
      ) : (
        <ul className="cards" aria-label="Services">
          {services.data.services.map((service) => (
            <ServiceCard key={service.name} service={service} />
          ))}
        </ul>
      )}
    </>
  );
}

function ServiceCard({ service }: { service: Service }) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  const canRefresh = useCan('admin');
  const refresh = useMutation({
    mutationFn: () => call(client.api.POST('/services/{name}/refresh', { params: { path: { name: service.name } } })),
    onSettled: () => queryClient.invalidateQueries({ queryKey: ['services'] }),
  });
  const circuit = service.circuit_state;
  const health = service.health;
  const headingId = `service-${service.name}`;
  return (
    <li className="card" aria-labelledby={headingId} data-service={service.name}>
      <div className="title-row">
        <h2 id={headingId}>{service.name}</h2>
        {canRefresh && service.openapi_url && (
          <div className="actions">
            <button type="button" disabled={refresh.isPending} onClick={() => refresh.mutate()} aria-label={`Refresh document of ${service.name}`}>
              {refresh.isPending ? 'Refreshing…' : 'Refresh document'}
            </button>
          </div>
        )}
      </div>
      <dl className="facts">
        <dt>Base URL</dt>
        <dd className="mono">{service.base_url}</dd>
        <dt>Health</dt>
        <dd data-health={health?.status ?? 'unknown'}>
          {health ? (
            <>
              <span className={`badge ${health.status === 'up' ? 'status-completed' : 'status-failed'}`}>{health.status}</span> checked{' '}
              {formatTime(health.checked_at)}
              {health.http_status !== undefined && <> · HTTP {health.http_status}</>}
              {health.error && <> · {health.error}</>}
            </>
          ) : (
            <span className="hint">{service.health_path ? 'not checked yet' : 'no health_path'}</span>
          )}
        </dd>
        <dt>Circuit</dt>
        <dd data-circuit={circuit?.state ?? 'unknown'}>
          {circuit ? (
            <>
              <span className={`badge ${CIRCUIT_CLASS[circuit.state]}`}>{circuit.state.replace('_', '-')}</span>
              {circuit.since && <> since {formatTime(circuit.since)}</>}
              {circuit.open_until && <> · open until {formatTime(circuit.open_until)}</>} · {circuit.window.failures} of {circuit.window.calls} calls failed
              in the window · {circuit.failures_in_a_row} failures in a row
            </>
          ) : (
            <span className="hint">unknown (Redis does not answer)</span>
          )}
        </dd>
        <dt>Operations</dt>
        <dd>
          {service.operations.length} (document v{service.document_version})
        </dd>
      </dl>
      {circuit && circuit.transitions.length > 0 && (
        <details>
          <summary>Circuit transitions</summary>
          <ul className="plain">
            {circuit.transitions.map((transition) => (
              <li key={`${transition.at}-${transition.to}`}>
                {formatTime(transition.at)}: {transition.from} → {transition.to}
              </li>
            ))}
          </ul>
        </details>
      )}
      {refresh.data && (
        <p role="status">
          {refresh.data.changed
            ? `Document v${refresh.data.version}: ${refresh.data.operations.added.length} added, ${refresh.data.operations.removed.length} removed, ${refresh.data.operations.changed.length} changed.`
            : 'The document has not changed.'}
          {refresh.data.affected_workflows.length > 0 && ` Workflows affected: ${refresh.data.affected_workflows.map((workflow) => workflow.name).join(', ')}.`}
        </p>
      )}
      {refresh.error && <ErrorBox error={refresh.error} title="Not refreshed" />}
    </li>
  );
}
