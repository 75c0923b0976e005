import { OrchestratorError } from '@orchestrator/client';

export function Loading({ label = 'Loading' }: { label?: string }) {
  return (
    <p className="loading" role="status" aria-live="polite">
      {label}…
    </p>
  );
}

/** An error as the API described it: its message, code and request id (to find its log lines). */
export function ErrorBox({ error, title = 'Something went wrong' }: { error: unknown; title?: string }) {
  const api = error instanceof OrchestratorError ? error : undefined;
  return (
    <div className="error-box" role="alert">
      <strong>{title}</strong>
      <p>{error instanceof Error ? error.message : String(error)}</p>
      {api && (
        <p className="hint">
          {api.status} <code>{api.code}</code>
          {api.requestId && <> · request {api.requestId}</>}
        </p>
      )}
    </div>
  );
}
