import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEPENDENCY_RETRY_AFTER_S } from '../../src/lib/errors.js';
import { Shards } from '../../src/queue/shards.js';
import { createHarness, type Harness, waitForTask } from '../helpers/harness.js';

/**
 * A batch of submissions is written to Redis shard by shard: a shard that refuses (its master
 * failing over, here a queue key of the wrong type) fails its own submissions alone, with 503 and
 * nothing stored, while the other shard's are accepted and run.
 */
describe('a queue shard that refuses', () => {
  let h: Harness;
  let broken: string;
  beforeAll(async () => {
    h = await createHarness({ env: { QUEUE_SHARDS: '2' } });
    // BullMQ reads a queue's meta hash when it adds a job: a string there fails every add to
    // shard 1's echo queue (WRONGTYPE), and nothing else.
    broken = `${Shards.of(h.config).prefixes[1]}:tool.echo:meta`;
    await h.redis.set(broken, 'not a hash');
  });
  afterAll(async () => {
    await h.redis.del(broken);
    await h.close();
  });

  it("answers 503 for its submissions only, stores none of them, and accepts the other shard's", async () => {
    const answers = await Promise.all(Array.from({ length: 6 }, (_, n) => h.request('POST', '/assign-task', { task_type: 'echo', params: { n } })));
    const accepted = answers.filter((answer) => answer.status === 202);
    const refused = answers.filter((answer) => answer.status !== 202);
    // New ids take the two shards in turn.
    expect(accepted).toHaveLength(3);
    expect(refused.map((answer) => answer.status)).toEqual([503, 503, 503]);
    for (const answer of refused) {
      expect(answer.body).toMatchObject({ error: { code: 'service_unavailable', details: { dependency: 'redis' } } });
      expect(answer.headers.get('retry-after')).toBe(String(DEPENDENCY_RETRY_AFTER_S));
    }
    const shards = Shards.of(h.config);
    for (const answer of accepted) {
      expect(shards.indexOf(answer.body.task_id)).toBe(0);
      expect((await waitForTask(h, answer.body.task_id)).status).toBe('completed');
    }
    // Only the accepted tasks were kept in PostgreSQL.
    expect(await h.db.prisma.task.count()).toBe(3);
  });
});
