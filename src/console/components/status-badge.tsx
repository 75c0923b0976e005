/** A task's or step's status as a coloured label; the colours are the graph's (styles.css `--status-*`). */
export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge status-${status}`}>{status}</span>;
}
