import { useState } from 'react';
import { Link } from 'react-router';

/**
 * A link to a task, in a list: its id's random end. A UUIDv7 begins with its time, the same for
 * every task of a millisecond (its first 13 characters) and alike for a minute's: its last 12 hex
 * digits (48 random bits) tell tasks apart. The whole id is its accessible name and its tooltip;
 * the task's page shows it whole, with a copy button.
 */
export function TaskIdLink({ id }: { id: string }) {
  return (
    <Link to={`/tasks/${id}`} className="mono" aria-label={`Task ${id}`} title={id}>
      …{id.slice(-12)}
    </Link>
  );
}

/** Copies `text` to the clipboard; says so for a moment, or that the browser refused. */
export function CopyButton({ text, what }: { text: string; what: string }) {
  const [state, setState] = useState<'idle' | 'copied' | 'refused'>('idle');
  const copy = async () => {
    try {
      // Absent outside a secure context (plain http to another host): the text stays selectable.
      if (!navigator.clipboard) throw new Error('no clipboard');
      await navigator.clipboard.writeText(text);
      setState('copied');
    } catch {
      setState('refused');
    }
    setTimeout(() => setState('idle'), 2000);
  };
  return (
    <>
      <button type="button" className="link copy" onClick={() => void copy()}>
        Copy<span className="visually-hidden"> {what}</span>
      </button>
      <span className="copy-state" role="status">
        {state === 'copied' ? 'Copied' : state === 'refused' ? 'The browser did not let it be copied: select it instead' : ''}
      </span>
    </>
  );
}
