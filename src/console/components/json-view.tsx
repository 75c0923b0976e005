/** Values longer than this (as pretty JSON) start collapsed: a step's output can be megabytes. */
const COLLAPSE_CHARS = 1_500;

/** A JSON value, pretty-printed; a large one collapsed behind its size, opened on demand. */
export function JsonView({ value, label }: { value: unknown; label: string }) {
  if (value === undefined) return <p className="hint">No {label.toLowerCase()}.</p>;
  const text = JSON.stringify(value, null, 2) ?? String(value);
  const pre = (
    <pre className="json" aria-label={label}>
      {text}
    </pre>
  );
  if (text.length <= COLLAPSE_CHARS) return pre;
  return (
    <details className="json-large">
      <summary>
        {label}: {formatSize(text.length)}, collapsed
      </summary>
      {pre}
    </details>
  );
}

function formatSize(chars: number): string {
  return chars < 1024 * 1024 ? `${(chars / 1024).toFixed(1)} kB` : `${(chars / 1024 / 1024).toFixed(1)} MB`;
}
