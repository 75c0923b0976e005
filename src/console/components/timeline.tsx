import type { HistoryEvent } from '@orchestrator/client';
import { formatDuration, formatTime } from './format.ts';

/** One bar of the timeline: an attempt of a step, or a wait (sleep, signal, approval, a limit's turn). */
export interface Span {
  stepId: string;
  kind: 'attempt' | 'wait';
  /** An attempt's end status (`completed`, `failed`, `cancelled`), `running` while open; a wait's reason. */
  label: string;
  start: number;
  end: number;
  open: boolean;
  detail: string;
}

/**
 * The task's history as bars: every attempt from its `attempt_started` to its `attempt_ended`,
 * every wait from `step_waiting` to the step's next change. An attempt or wait without its end
 * yet runs to `now`.
 */
export function spansOf(events: readonly HistoryEvent[], now: number): Span[] {
  const spans: Span[] = [];
  const openAttempts = new Map<string, { start: number; attempt: number | undefined; stepId: string }>();
  const openWaits = new Map<string, { start: number; reason: string }>();
  const closeWait = (stepId: string, at: number) => {
    const wait = openWaits.get(stepId);
    if (!wait) return;
    openWaits.delete(stepId);
    spans.push({ stepId, kind: 'wait', label: wait.reason, start: wait.start, end: at, open: false, detail: `waited (${wait.reason}) ${formatDuration(at - wait.start)}` });
  };
  for (const event of events) {
    if (!event.step_id) continue;
    const at = Date.parse(event.at);
    // A for_each item's attempts are the step's too, on the step's row.
    const key = `${event.step_id}#${event.item ?? ''}#${event.attempt ?? ''}`;
    if (event.type === 'attempt_started') {
      closeWait(event.step_id, at);
      openAttempts.set(key, { start: at, attempt: event.attempt, stepId: event.step_id });
    } else if (event.type === 'attempt_ended') {
      const started = openAttempts.get(key);
      openAttempts.delete(key);
      const status = String(event.data?.status ?? 'ended');
      const start = started?.start ?? at - Number(event.data?.duration_ms ?? 0);
      const item = event.item === undefined ? '' : ` item ${event.item}`;
      spans.push({ stepId: event.step_id, kind: 'attempt', label: status, start, end: at, open: false, detail: `attempt ${event.attempt ?? '?'}${item}: ${status}, ${formatDuration(at - start)}` });
    } else if (event.type === 'step_waiting') {
      openWaits.set(event.step_id, { start: at, reason: String(event.data?.reason ?? 'waiting') });
    } else if (event.type.startsWith('step_') || event.type === 'signal_received' || event.type === 'approval_decided') {
      closeWait(event.step_id, at);
    }
  }
  for (const [key, attempt] of openAttempts) {
    spans.push({ stepId: attempt.stepId, kind: 'attempt', label: 'running', start: attempt.start, end: now, open: true, detail: `attempt ${key.split('#')[2] || '?'}: running since ${formatTime(new Date(attempt.start).toISOString())}` });
  }
  for (const [stepId, wait] of openWaits) {
    spans.push({ stepId, kind: 'wait', label: wait.reason, start: wait.start, end: now, open: true, detail: `waiting (${wait.reason}) since ${formatTime(new Date(wait.start).toISOString())}` });
  }
  return spans;
}

/** A Gantt chart of the spans, one row per step in the steps' order; the bars' titles say what each was. */
export function Timeline({ spans, stepIds }: { spans: readonly Span[]; stepIds: readonly string[] }) {
  if (spans.length === 0) return <p className="hint">No attempts recorded yet.</p>;
  const from = Math.min(...spans.map((span) => span.start));
  const to = Math.max(...spans.map((span) => span.end), from + 1);
  const scale = (time: number) => `${(((time - from) / (to - from)) * 100).toFixed(3)}%`;
  const rows = stepIds.filter((id) => spans.some((span) => span.stepId === id));
  return (
    <figure className="timeline">
      <figcaption className="hint">
        {formatTime(new Date(from).toISOString())} to {formatTime(new Date(to).toISOString())} ({formatDuration(to - from)}). Solid: attempts; striped: waits.
      </figcaption>
      <ul>
        {rows.map((stepId) => (
          <li key={stepId} className="timeline-row">
            <span className="timeline-label">{stepId}</span>
            <span className="timeline-track">
              {spans
                .filter((span) => span.stepId === stepId)
                .map((span, index) => (
                  <span
                    // biome-ignore lint/suspicious/noArrayIndexKey: spans of a row have no identity of their own; their order is stable
                    key={index}
                    className={`bar ${span.kind} status-${span.kind === 'attempt' ? span.label : 'waiting'}${span.open ? ' open' : ''}`}
                    style={{ left: scale(span.start), width: `max(2px, ${scale(from + span.end - span.start)})` }}
                    title={span.detail}
                  >
                    <span className="visually-hidden">{span.detail}</span>
                  </span>
                ))}
            </span>
          </li>
        ))}
      </ul>
    </figure>
  );
}
