import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { openSse } from '../helpers/sse.js';

/**
 * Separation of duties on approvals (issue 28, finding 2): a signed link decides for its
 * approver, so only those who hand links out see them (admin keys, and the task.waiting callback
 * of a task an admin key submitted: a client key chooses its own callback_url); the submitter's key, another client's and a read key see that the step waits and for whom,
 * never a link, wherever a task shows (GET /result, GET /tasks, the event stream, history). The
 * submitter's key cannot decide its own approval by signal; an admin key can, recorded as
 * `key:<id>`; each approver's link decides for that approver.
 */

const ALICE = 'duties-alice-key-0123456789abcdef';
const BOB = 'duties-bob-key-0123456789abcdef';
const OPS = 'duties-ops-key-0123456789abcdef';
const AUDIT = 'duties-audit-key-0123456789abcdef';
const as = (key: string) => ({ authorization: `Bearer ${key}` });
type StepView = { id: string; status: string; output?: Record<string, unknown>; waiting_for?: any };
const review = (task: { steps: StepView[] }) => task.steps.find((step) => step.id === 'review')!;

describe('approvals: separation of duties', () => {
  let h: Harness;
  let receiver: TestServer;

  beforeAll(async () => {
    receiver = await startServer((_request, res) => res.writeHead(204).end());
    h = await createHarness({
      env: {
        API_KEYS: `client@alice:${ALICE},client@bob:${BOB},admin@ops:${OPS},read@audit:${AUDIT}`,
        APPROVAL_SECRET: 'duties-approval-secret-0123456789',
        CALLBACK_SECRET: 'duties-callback-secret-0123456789',
        HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${receiver.port}`,
      },
    });
    const defined = await h.request(
      'POST',
      '/workflows',
      {
        name: 'four_eyes',
        parameters: [{ name: 'amount', type: 'number', required: true }],
        steps: [
          // A step first: the review's waiting is then an event of the stream, not part of the task's start.
          { id: 'prepare', tool: 'echo', input: { amount: '{{params.amount}}' } },
          {
            id: 'review',
            depends_on: ['prepare'],
            wait: { approval: { approvers: ['finance-manager', 'controller'] } },
            input: { amount: '{{steps.prepare.output.amount}}' },
          },
          { id: 'pay', tool: 'echo', depends_on: ['review'], input: { approved: '{{steps.review.output.approved}}', by: '{{steps.review.output.by}}' } },
        ],
      },
      as(OPS),
    );
    expect(defined.status).toBe(201);
  });
  afterAll(async () => {
    await h?.close();
    await receiver?.close();
  });

  /** Alice's task waiting for its approval. */
  async function waitingTask(): Promise<string> {
    const executed = await h.request('POST', '/workflows/four_eyes/execute', { parameters: { amount: 1200 } }, as(ALICE));
    expect(executed.status).toBe(202);
    const id = executed.body.task_id as string;
    await poll(async () => review((await h.request('GET', `/tasks/${id}`, undefined, as(OPS))).body).status === 'waiting', { label: 'the approval waits' });
    return id;
  }

  /** The admin's view of the links, by approver, as paths on this server. */
  async function links(id: string): Promise<Record<string, string>> {
    const view = (await h.request('GET', `/result/${id}`, undefined, as(OPS))).body;
    const listed = review(view).waiting_for.approval.links as { approver: string; url: string }[];
    return Object.fromEntries(listed.map((link) => [link.approver, new URL(link.url).pathname]));
  }

  const decideByLink = (path: string, decision: string) =>
    fetch(`${h.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `decision=${decision}` });

  it('shows the links to an admin key only: the submitter, a read key and the event stream see whom the step waits for, never a link', async () => {
    const id = await waitingTask();
    const adminView = (await h.request('GET', `/result/${id}`, undefined, as(OPS))).body;
    expect(review(adminView).waiting_for.approval).toMatchObject({
      approvers: ['finance-manager', 'controller'],
      links: [{ approver: 'finance-manager' }, { approver: 'controller' }],
    });

    for (const [who, key] of [
      ['the submitter', ALICE],
      ['a read key', AUDIT],
    ] as const) {
      for (const path of [`/result/${id}`, `/tasks/${id}`]) {
        const { status, body } = await h.request('GET', path, undefined, as(key));
        expect(status, `${who} ${path}`).toBe(200);
        expect(review(body).waiting_for, `${who} ${path}`).toEqual({ signal: 'review', approval: { approvers: ['finance-manager', 'controller'] } });
        expect(JSON.stringify(body), `${who} ${path}`).not.toContain('/approvals/');
      }
      const listed = await h.request('GET', '/tasks?status=waiting', undefined, as(key));
      expect(listed.body.items.some((task: { task_id: string }) => task.task_id === id)).toBe(true);
      expect(JSON.stringify(listed.body)).not.toContain('/approvals/');
      const history = await h.request('GET', `/tasks/${id}/history`, undefined, as(key));
      expect(history.status).toBe(200);
      expect(JSON.stringify(history.body)).not.toContain('/approvals/');
      // The stream's snapshot, and the step's waiting event replayed from the start.
      const stream = await openSse(`${h.url}/tasks/${id}/events?last_event_id=0-0`, as(key));
      await stream.waitFor((events) => events.some((event) => event.event === 'step' && event.data.step_id === 'review' && event.data.status === 'waiting'));
      const snapshot = await openSse(`${h.url}/tasks/${id}/events`, as(key));
      await snapshot.waitFor((events) => events.some((event) => event.event === 'snapshot'));
      stream.close();
      snapshot.close();
      const waiting = stream.events.find((event) => event.event === 'step' && event.data.step_id === 'review' && event.data.status === 'waiting')!;
      expect(waiting.data.waiting_for, who).toEqual({ signal: 'review', approval: { approvers: ['finance-manager', 'controller'] } });
      expect(JSON.stringify([stream.events, snapshot.events]), who).not.toContain('/approvals/');
    }
    // The admin's stream does carry them (an admin hands them out).
    const adminStream = await openSse(`${h.url}/tasks/${id}/events?last_event_id=0-0`, as(OPS));
    await adminStream.waitFor((events) => events.some((event) => event.event === 'step' && event.data.step_id === 'review' && event.data.status === 'waiting'));
    adminStream.close();
    expect(
      adminStream.events.find((event) => event.event === 'step' && event.data.step_id === 'review' && event.data.status === 'waiting')!.data.waiting_for
        .approval.links,
    ).toHaveLength(2);
    // Another client does not find the task at all.
    expect((await h.request('GET', `/result/${id}`, undefined, as(BOB))).status).toBe(404);
  });

  it("sends a client key's task.waiting callback (a URL the submitter chose) without links, and an admin key's with them", async () => {
    const told = async (key: string, path: string) => {
      const executed = await h.request(
        'POST',
        '/workflows/four_eyes/execute',
        { parameters: { amount: 5 }, callback_url: `${receiver.origin}${path}` },
        as(key),
      );
      expect(executed.status).toBe(202);
      const request = await poll(
        () => receiver.requests.find((candidate) => candidate.path === path && candidate.headers['x-orchestrator-event'] === 'task.waiting'),
        {
          label: `the task.waiting callback to ${path}`,
        },
      );
      await h.request('POST', `/tasks/${executed.body.task_id}/cancel`, undefined, as(OPS));
      return { raw: request.body, review: review(JSON.parse(request.body).task) };
    };
    const alice = await told(ALICE, '/alice');
    expect(alice.review.waiting_for).toEqual({ signal: 'review', approval: { approvers: ['finance-manager', 'controller'] } });
    expect(alice.raw).not.toContain('/approvals/');
    const ops = await told(OPS, '/ops');
    expect(ops.review.waiting_for.approval.links).toMatchObject([{ approver: 'finance-manager' }, { approver: 'controller' }]);
  });

  it('refuses the submitter deciding its own approval by signal (403 approval_by_submitter); another client finds no task; a read key may not signal', async () => {
    const id = await waitingTask();
    const own = await h.request('POST', `/tasks/${id}/signals/review`, { decision: 'approved' }, as(ALICE));
    expect(own.status).toBe(403);
    expect(own.body.error).toMatchObject({ code: 'approval_by_submitter', details: { step: 'review', approvers: ['finance-manager', 'controller'] } });
    expect((await h.request('POST', `/tasks/${id}/signals/review`, { decision: 'approved' }, as(BOB))).status).toBe(404);
    const read = await h.request('POST', `/tasks/${id}/signals/review`, { decision: 'approved' }, as(AUDIT));
    expect(read.status).toBe(403);
    expect(read.body.error.code).toBe('forbidden');
    expect(review((await h.request('GET', `/tasks/${id}`, undefined, as(OPS))).body).status).toBe('waiting');

    // An admin key decides, recorded as key:<id>, not as an approver.
    const decided = await h.request('POST', `/tasks/${id}/signals/review`, { decision: 'approved', comment: 'checked' }, as(OPS));
    expect(decided.status).toBe(200);
    const done = await waitForTask(h, id, 20_000, as(ALICE));
    expect(review(done).output).toMatchObject({ decision: 'approved', approved: true, by: 'key:ops' });
    const history = (await h.request('GET', `/tasks/${id}/history?step=review`, undefined, as(OPS))).body.events;
    expect(history.find((event: { type: string }) => event.type === 'approval_decided').data).toMatchObject({ by: 'key:ops', via: 'key' });
  });

  it("each approver's link decides for that approver, once", async () => {
    for (const approver of ['finance-manager', 'controller']) {
      const id = await waitingTask();
      const byApprover = await links(id);
      const other = approver === 'finance-manager' ? 'controller' : 'finance-manager';
      const response = await decideByLink(byApprover[approver]!, 'approved');
      expect(response.status, approver).toBe(200);
      const done = await waitForTask(h, id, 20_000, as(ALICE));
      expect(review(done).output, approver).toMatchObject({ decision: 'approved', by: approver });
      // The other approver's link (and this one again) change nothing now.
      expect((await decideByLink(byApprover[other]!, 'rejected')).status).toBe(409);
      expect((await decideByLink(byApprover[approver]!, 'rejected')).status).toBe(409);
      expect(review((await h.request('GET', `/result/${id}`, undefined, as(OPS))).body).output?.by).toBe(approver);
    }
  });
});
