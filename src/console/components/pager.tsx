import type { Dispatch, SetStateAction } from 'react';

/**
 * Previous and Next over a list the API pages with cursors. `cursors` holds the cursor of every
 * page up to this one (the first is undefined): Previous drops the last, Next adds `next`.
 */
export function Pager({
  cursors,
  setCursors,
  next,
}: {
  cursors: (string | undefined)[];
  setCursors: Dispatch<SetStateAction<(string | undefined)[]>>;
  next: string | null | undefined;
}) {
  return (
    <nav className="pager" aria-label="Pages">
      <button type="button" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
        Previous
      </button>
      <span>Page {cursors.length}</span>
      <button type="button" disabled={!next} onClick={() => next && setCursors([...cursors, next])}>
        Next
      </button>
    </nav>
  );
}
