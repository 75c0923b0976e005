import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, submit, waitForTask } from '../helpers/harness.js';
import { CHAOS_ENV } from './support.js';
import { sweep } from './sweep.js';

/** The sweep must pass a clean deployment and find each kind of leftover it is meant to find. */
describe('the stuck-state sweep', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ env: CHAOS_ENV });
  });
  afterAll(async () => {
    await h.close();
  });

  it('passes after tasks ran and ended, and names every leftover it finds', async () => {
    const echoes: string[] = [];
    for (let n = 0; n < 3; n += 1) {
      echoes.push(await submit(h, { task_type: 'echo', params: { n } }));
      expect((await waitForTask(h, echoes.at(-1)!)).status).toBe('completed');
    }
    const clean = await sweep(h, { settleMs: 10_000 });
    expect(clean.eventStreams).toBe(3);
    // A one-tool task's run is one job in its tool's queue, and nothing else.
    expect(clean.kept).toEqual({ 'tool.echo': [3, 0] });

    const prefix = h.config.QUEUE_PREFIX;
    const stuck = await submit(h, { task_type: 'sleep', params: { ms: 1 } });
    await waitForTask(h, stuck);
    await h.db.pool.query(`UPDATE tasks SET status = 'running' WHERE id = $1`, [stuck]);
    await h.db.pool.query(
      `INSERT INTO step_items (task_id, task_created_at, step_id, item, status) SELECT id, created_at, 'echo', 0, 'running' FROM tasks WHERE id = $1`,
      [echoes[0]],
    );
    await h.redis.xadd(`${prefix}:events:no-ttl`, '*', 'type', 'task');
    await h.redis.hset(`${prefix}:tool.echo:orphan.1.echo`, 'name', 'echo', 'data', '{}');
    await h.redis.sadd(`${prefix}:tool.echo:gone.1.echo:dependencies`, 'x');
    await h.redis.zadd(`${prefix}:timers:completed`, Date.now(), 'vanished.1.nap.wake');

    const found = await sweep(h, { settleMs: 1_000 }).then(
      () => '',
      (error: Error) => error.message,
    );
    expect(found).toContain(`task ${stuck} is still running`);
    expect(found).toContain(`item 0 of step echo of completed task ${echoes[0]} is still running`);
    expect(found).toContain(`event stream ${prefix}:events:no-ttl has no TTL`);
    expect(found).toContain(`job hash ${prefix}:tool.echo:orphan.1.echo belongs to no finished-job set`);
    expect(found).toContain(`${prefix}:tool.echo:gone.1.echo:dependencies outlived its job`);
    expect(found).toContain('timers lists finished job vanished.1.nap.wake whose hash is gone');
  });
});
