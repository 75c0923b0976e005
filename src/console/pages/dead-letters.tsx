import type { components } from '@orchestrator/client';
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { Link } from 'react-router';
import { call, useApi, useCan } from '../components/api.tsx';
import { formatTime } from '../components/format.ts';
import { JsonView } from '../components/json-view.tsx';
import { ErrorBox, Loading } from '../components/states.tsx';
import { Pager } from '../components/pager.tsx';

const PAGE_SIZE = 50;

/** Steps that exhausted their retries (GET /dead-letters), newest first; an admin key replays one (its task resumes). */
export default function DeadLettersPage() {
  const { client } = useApi();
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors.at(-1);
  const letters = useQuery({
    queryKey: ['dead-letters', cursor ?? ''],
    queryFn: ({ signal }) => call(client.api.GET('/dead-letters', { params: { query: { limit: PAGE_SIZE, ...(cursor ? { cursor } : {}) } }, signal })),
    placeholderData: keepPreviousData,
  });

  return (
    <>
      <h1>Dead letters</h1>
      <p className="hint">Steps that failed after their last retry, with their input and error. Replaying one resumes its task from its unfinished steps.</p>
      {letters.isPending ? (
        <Loading label="Loading dead letters" />
      ) : letters.error ? (
        <ErrorBox error={letters.error} title="The dead letters could not be loaded" />
      ) : letters.data.items.length === 0 ? (
        <p className="empty">No dead letters.</p>
      ) : (
        <>
          <ul className="cards" aria-label="Dead letters">
            {letters.data.items.map((letter) => (
              <DeadLetter key={letter.id} letter={letter} />
            ))}
          </ul>
          <Pager cursors={cursors} setCursors={setCursors} next={letters.data.next_cursor} />
        </>
      )}
    </>
  );
}

type Letter = components['schemas']['DeadLetter'];

function DeadLetter({ letter }: { letter: Letter }) {
  const { client } = useApi();
  const queryClient = useQueryClient();
  const canReplay = useCan('admin');
  const replay = useMutation({
    mutationFn: () => call(client.api.POST('/dead-letters/{id}/replay', { params: { path: { id: letter.id } } })),
    onSettled: () => queryClient.invalidateQueries({ queryKey: ['dead-letters'] }),
  });
  const headingId = `letter-${letter.id}`;
  return (
    <li className="card" aria-labelledby={headingId} data-dead-letter={letter.id}>
      <div className="title-row">
        <h2 id={headingId}>
          {letter.step_id} <span className="hint">({letter.tool})</span>
        </h2>
        {canReplay && !letter.replayed_at && (
          <div className="actions">
            <button type="button" disabled={replay.isPending || replay.isSuccess} onClick={() => replay.mutate()}>
              {replay.isPending ? 'Replaying…' : `Replay ${letter.step_id}`}
            </button>
          </div>
        )}
      </div>
      <dl className="facts">
        <dt>Task</dt>
        <dd>
          <Link to={`/tasks/${letter.task_id}`} className="mono">
            {letter.task_id}
          </Link>{' '}
          (run {letter.run})
        </dd>
        <dt>Error</dt>
        <dd>
          <code>{letter.error.name}</code>: {letter.error.message}
        </dd>
        <dt>Attempts</dt>
        <dd>{letter.attempts}</dd>
        <dt>Failed</dt>
        <dd>{formatTime(letter.created_at)}</dd>
        <dt>Replayed</dt>
        <dd>{letter.replayed_at ? formatTime(letter.replayed_at) : 'no'}</dd>
      </dl>
      <details>
        <summary>Input</summary>
        <JsonView value={letter.input} label="Input" />
      </details>
      {replay.data && (
        <p role="status">
          Replayed: task <Link to={`/tasks/${replay.data.task_id}`}>{replay.data.task_id}</Link> resumed as run {replay.data.run}.
        </p>
      )}
      {replay.error && <ErrorBox error={replay.error} title="Not replayed" />}
    </li>
  );
}
