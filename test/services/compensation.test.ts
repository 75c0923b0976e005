import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answers, bookingsDocument, idParam, object } from '../fixtures/bookings.js';
import { closeTestConnections } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, submit, waitForTask } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * Compensation (sagas) end to end: a real local booking service, registered from its OpenAPI
 * document, and a diamond workflow over its operations whose last step fails. The service keeps
 * every call in order, so the test sees what was undone, in which order and with what.
 */

const BOOKINGS_DOCUMENT = bookingsDocument({
  '/holds': { post: { operationId: 'hold', responses: answers(object({ hold_id: { type: 'string' } })) } },
  '/holds/{id}': { delete: { operationId: 'releaseHold', parameters: idParam, responses: answers(object({})) } },
  '/shipments': { post: { operationId: 'ship', responses: answers(object({ shipment_id: { type: 'string' } })) } },
});

/** A booking saga: reserve, then charge and hold side by side, then ship; each but ship says how it is undone. */
const TRIP = {
  name: 'book_trip',
  parameters: [
    { name: 'room', type: 'string', required: true },
    { name: 'amount', type: 'number', required: true },
  ],
  steps: [
    {
      id: 'reserve',
      tool: 'bookings.reserve',
      input: { body: { room: '{{params.room}}' } },
      compensate: { tool: 'bookings.cancelReservation', input: { path: { id: '{{output.reservation_id}}' } } },
    },
    {
      id: 'charge',
      tool: 'bookings.charge',
      depends_on: ['reserve'],
      input: { body: { amount: '{{params.amount}}' } },
      compensate: {
        tool: 'bookings.refund',
        input: { path: { id: '{{output.charge_id}}' }, body: { amount: '{{input.body.amount}}' } },
        retry: { attempts: 2, backoff: { type: 'fixed', delay_ms: 50 } },
      },
    },
    {
      id: 'hold',
      tool: 'bookings.hold',
      depends_on: ['reserve'],
      compensate: { tool: 'bookings.releaseHold', input: { path: { id: '{{output.hold_id}}' } } },
    },
    { id: 'ship', tool: 'bookings.ship', depends_on: ['charge', 'hold'], retry: { attempts: 1 } },
  ],
};

describe('compensation (sagas) over a registered service', () => {
  let h: Harness;
  let bookings: TestServer;
  /** Every call but the document's, in the order the service took them: `METHOD path [body]`. */
  const calls: string[] = [];
  let shipping: 'fails' | 'works' = 'fails';
  let refunds: 'work' | 'fail' = 'work';
  let counter = 0;

  beforeAll(async () => {
    bookings = await startServer((request, res) => {
      if (request.path === '/openapi.json') return json(res, 200, BOOKINGS_DOCUMENT);
      calls.push(`${request.method} ${request.path}${request.body ? ` ${request.body}` : ''}`);
      counter += 1;
      if (request.method === 'POST' && request.path === '/reservations') return json(res, 200, { reservation_id: `r${counter}` });
      if (request.method === 'POST' && request.path === '/charges') return json(res, 200, { charge_id: `c${counter}` });
      if (request.method === 'POST' && request.path === '/holds') return json(res, 200, { hold_id: `h${counter}` });
      if (request.method === 'POST' && request.path === '/shipments') {
        return shipping === 'works' ? json(res, 200, { shipment_id: `s${counter}` }) : json(res, 422, { error: 'no carrier for this address' });
      }
      if (request.path.endsWith('/refund')) return refunds === 'work' ? json(res, 200, {}) : json(res, 503, { error: 'payments down' });
      if (request.method === 'DELETE') return json(res, 200, {});
      return json(res, 404, { error: 'no route' });
    });
    h = await createHarness({ env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${bookings.port}` } });
    const registered = await h.request('POST', '/services', {
      name: 'bookings',
      base_url: bookings.origin,
      openapi_url: `${bookings.origin}/openapi.json`,
      timeout_ms: 5000,
    });
    expect(registered.status, JSON.stringify(registered.body)).toBe(201);
    // Every worker process must know the new tools before a task calls them.
    await poll(
      async () => ((await h.request('GET', '/tools')).body.tools as { name: string }[]).some((tool) => tool.name === 'bookings.releaseHold') || undefined,
      {
        label: 'the bookings tools listed',
      },
    );
    const defined = await h.request('POST', '/workflows', TRIP);
    expect(defined.status, JSON.stringify(defined.body)).toBe(201);
  });
  afterAll(async () => {
    await h?.close();
    await bookings?.close();
    await closeTestConnections();
  });

  type StepView = { id: string; status: string; reason?: string; compensation_of?: string; input?: unknown; output?: Record<string, string> };
  const stepsOf = async (id: string) =>
    Object.fromEntries(((await h.request('GET', `/tasks/${id}`)).body.steps as StepView[]).map((step) => [step.id, step])) as Record<string, StepView>;

  it('refuses a compensation that cannot work, each problem at its path', async () => {
    const refused = await h.request('POST', '/workflows', {
      name: 'bad_saga',
      steps: [
        { id: 'a', tool: 'bookings.hold', compensate: { tool: 'bookings.nope' } },
        { id: 'b', tool: 'bookings.hold', compensate: { tool: 'bookings.releaseHold', input: { path: { id: '{{input.missing}}' } } } },
        { id: 'c', tool: 'bookings.hold', compensate: { tool: 'bookings.releaseHold', input: { path: { id: '{{steps.a.output.hold_id}}' } } } },
        { id: 'nap', sleep: { ms: 10 }, compensate: { tool: 'echo' } },
        { id: 'many', tool: 'echo', for_each: [1, 2], compensate: { tool: 'echo' } },
      ],
    });
    expect(refused.status).toBe(400);
    const problems = (refused.body.error.details as { path: string; message: string }[]).map((problem) => problem.path);
    expect(problems).toEqual(
      expect.arrayContaining([
        'steps[0].compensate.tool',
        'steps[1].compensate.input.path.id',
        'steps[2].compensate.input.path.id',
        'steps[3].compensate',
        'steps[4].compensate',
      ]),
    );
  });

  it('a diamond that fails at its last step undoes what completed in reverse dependency order, then fails compensated', async () => {
    calls.length = 0;
    const id = await submit(h, { task_type: 'book_trip', params: { room: '12B', amount: 40 } });
    const task = await waitForTask(h, id, 30_000);
    expect(task.status).toBe('failed');
    expect(task.compensated).toBe(true);
    expect(task.error).toMatchObject({ step: 'ship' });
    // Forward, then undone: refund and release (either order: side by side) before the reservation is cancelled.
    const [reserve, first, second, ship, ...undone] = calls;
    expect(reserve).toMatch(/^POST \/reservations /);
    expect([first, second].map((call) => call!.split(' ').slice(0, 2).join(' ')).sort()).toEqual(['POST /charges', 'POST /holds']);
    expect(ship).toBe('POST /shipments');
    const steps = await stepsOf(id);
    const output = (step: string, field: string) => steps[step]!.output![field];
    const chargeId = output('charge', 'charge_id');
    expect(undone.slice(0, 2).sort()).toEqual([`DELETE /holds/${output('hold', 'hold_id')}`, `POST /charges/${chargeId}/refund {"amount":40}`].sort());
    expect(undone[2]).toBe(`DELETE /reservations/${output('reserve', 'reservation_id')}`);
    expect(undone).toHaveLength(3);

    expect(steps['charge.compensate']).toMatchObject({
      status: 'completed',
      compensation_of: 'charge',
      input: { path: { id: chargeId }, body: { amount: 40 } },
    });
    expect(steps['reserve.compensate']).toMatchObject({ status: 'completed', compensation_of: 'reserve' });
    expect(steps.ship).toMatchObject({ status: 'failed' });
    const history = (await h.request('GET', `/tasks/${id}/history`)).body.events as { type: string; step_id?: string; data?: Record<string, unknown> }[];
    const types = history.map((event) => event.type);
    const started = types.indexOf('compensation_started');
    expect(history.findIndex((event) => event.type === 'step_failed' && event.step_id === 'ship')).toBeLessThan(started);
    // A compensation is made ready while its task runs: claimed in that commit, it goes from pending to running.
    expect(started).toBeLessThan(history.findIndex((event) => event.type === 'step_running' && event.step_id?.endsWith('.compensate')));
    expect(history.find((event) => event.type === 'compensation_ended')?.data).toEqual({ compensated: true, ran: 3 });
    expect(types.at(-1)).toBe('task_failed');

    // A retry starts over: what completed was undone, so every step runs again.
    shipping = 'works';
    calls.length = 0;
    const retried = await h.request('POST', `/tasks/${id}/retry`, undefined, { 'x-requested-with': 'test' });
    expect(retried.status, JSON.stringify(retried.body)).toBe(202);
    const again = await waitForTask(h, id, 30_000);
    expect(again.status).toBe('completed');
    expect(again.compensated).toBeUndefined();
    expect(calls.filter((call) => call.startsWith('POST /reservations'))).toHaveLength(1);
    const after = await stepsOf(id);
    expect(after['reserve.compensate']).toMatchObject({ status: 'skipped', reason: 'not_needed' });
    shipping = 'fails';
  });

  it('a compensation that fails for good does not stop the others: the task ends compensated partial', async () => {
    refunds = 'fail';
    calls.length = 0;
    const id = await submit(h, { task_type: 'book_trip', params: { room: '7A', amount: 15 } });
    const task = await waitForTask(h, id, 30_000);
    refunds = 'work';
    expect(task.status).toBe('failed');
    expect(task.compensated).toBe('partial');
    // Two tries of the refund (its own retry policy), then the reservation is cancelled anyway.
    expect(calls.filter((call) => call.includes('/refund'))).toHaveLength(2);
    expect(calls.at(-1)).toMatch(/^DELETE \/reservations\//);
    const steps = await stepsOf(id);
    expect(steps['charge.compensate']).toMatchObject({ status: 'failed' });
    expect(steps['reserve.compensate']).toMatchObject({ status: 'completed' });
    const letters = (await h.request('GET', '/dead-letters?limit=200')).body.items as { task_id: string; step_id: string }[];
    expect(letters.some((letter) => letter.task_id === id && letter.step_id === 'charge.compensate')).toBe(true);
  });
});
