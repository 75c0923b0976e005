import { Queue } from 'bullmq';
import { toolQueueName } from '../../src/queue/jobs.js';
import type { Harness } from '../helpers/harness.js';

/** The client and CLI tests talk to a service with API keys, as a deployed one has. */
export const KEY = 'client-test-admin-key-0123456789';

/**
 * Holds the tool's queue while `run` runs, so a task of that tool waits until the test has
 * started watching it (every transition then happens while it watches).
 */
export async function whilePaused<T>(h: Harness, tool: string, run: () => Promise<T>): Promise<T> {
  const queue = new Queue(toolQueueName(tool), { connection: h.redis, prefix: h.config.QUEUE_PREFIX });
  await queue.pause();
  try {
    return await run();
  } finally {
    await queue.resume();
    await queue.close();
  }
}
