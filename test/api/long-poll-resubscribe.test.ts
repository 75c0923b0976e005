import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, poll, submit } from '../helpers/harness.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-server.js';

/**
 * A long-poll waits for its task's end notice on the API process's one events subscription
 * (src/queue/event-notices.ts). A notice published while that subscription is lost never
 * arrives: once it is back, each waiting long-poll must look again, and answer the end it
 * missed at once instead of at the end of its wait. A private Redis, so that the API's
 * subscriber can be killed without touching other files' processes.
 */
describe('a long-poll across a lost events subscription', () => {
  let redis: RedisServer;
  let h: Harness;
  beforeAll(async () => {
    redis = await startRedisServer();
    // No worker: the test decides when and how the task ends.
    h = await createHarness({ worker: false, env: { REDIS_URL: redis.url } });
  });
  afterAll(async () => {
    await h?.close();
    await redis?.close();
  });

  /** Waiting long-polls, every client's (one sorted set of slots per client). */
  const waiting = async () => {
    let held = 0;
    for (const key of await h.redis.keys(`${h.config.QUEUE_PREFIX}:slots:long-polls:*`)) held += await h.redis.zcard(key);
    return held;
  };

  it('answers the end it missed once the subscription is back, not when its 30 s wait runs out', async () => {
    const id = await submit(h, { task_type: 'echo', params: { a: 1 } });
    const answer = fetch(`${h.url}/result/${id}?wait=30`).then(async (response) => ({ status: response.status, body: await response.json() }));
    await poll(async () => (await waiting()) === 1, { label: 'the long-poll to wait' });

    // The task ends and its notice is lost: committed here with no notice, as one published
    // while the subscription was down would be. Then the subscription is lost and comes back.
    await h.db.pool.query(`UPDATE tasks SET status = 'completed', result = '{"a": 1}', finished_at = now() WHERE id = $1`, [id]);
    const list = String(await h.redis.client('LIST'));
    const subscriber = /id=(\d+) .*name=orchestrator:api-events /.exec(list.split('\n').find((line) => line.includes('name=orchestrator:api-events ')) ?? '');
    expect(subscriber, "the API's events subscriber in CLIENT LIST").not.toBeNull();
    const killed = Date.now();
    await h.redis.client('KILL', 'ID', subscriber![1]!);

    const { status, body } = await answer;
    expect(status).toBe(200);
    expect(body).toMatchObject({ task_id: id, status: 'completed', result: { a: 1 } });
    // Reconnecting takes tens of milliseconds; a missed end would be answered only at 30 s.
    expect(Date.now() - killed).toBeLessThan(10_000);
  });

  it("answers the end of a task submitted through this API about a second into its wait when the end's notice never comes", async () => {
    // A long-poll of a task this API process submitted begins without reading it (no notice of
    // its end has come), and looks once a second into its wait.
    const id = await submit(h, { task_type: 'echo', params: { b: 2 } });
    await h.db.pool.query(`UPDATE tasks SET status = 'completed', result = '{"b": 2}', finished_at = now() WHERE id = $1`, [id]);
    const asked = Date.now();
    const response = await h.request('GET', `/result/${id}?wait=30`);
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ task_id: id, status: 'completed', result: { b: 2 } });
    // Without the look, at 30 s.
    expect(Date.now() - asked).toBeLessThan(10_000);
  });
});
