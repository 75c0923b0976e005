import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerRegistration } from '../../src/fleet/protocol.js';
import { WorkerFleet } from '../../src/fleet/worker-fleet.js';
import type { PrismaClient } from '../../src/generated/prisma/client.js';
import { toolRegistration, workerRegistration } from '../fixtures/worker-registration.js';
import { createHarness, type Harness, poll } from '../helpers/harness.js';
import { latch } from '../helpers/latch.js';

/**
 * The fleet's readings of the workers' tools (every few seconds, on a notice, after a
 * registration, once subscribed). One that began before a registration and ends after the
 * registration's own reading read something older, and must not put the registered tool out of
 * sight until the next reading; one made once subscribed sees what was announced before.
 */
describe("the fleet's readings of the tools", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness({ worker: false, api: false });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('keeps a tool registered while an older reading was on its way', async () => {
    const read = latch();
    const released = latch();
    let held = false;
    // The real database; its first reading of the tools is handed over only once released.
    const workerTool = new Proxy(h.db.prisma.workerTool, {
      get(target, property, receiver) {
        if (property !== 'findMany' || held) return Reflect.get(target, property, receiver);
        held = true;
        return async (...args: unknown[]) => {
          const rows = await (target.findMany as (...a: unknown[]) => Promise<unknown>)(...args);
          read.open();
          await released.opened;
          return rows;
        };
      },
    });
    const prisma = new Proxy(h.db.prisma, {
      get: (target, property, receiver) => (property === 'workerTool' ? workerTool : Reflect.get(target, property, receiver)),
    }) as PrismaClient;
    const fleet = new WorkerFleet(prisma, h.logger);
    try {
      const older = fleet.refresh('ocr');
      await read.opened;
      await fleet.register('worker-1', 'acme', workerRegistration([toolRegistration('ocr')]) as WorkerRegistration, new Set());
      expect(fleet.get('ocr')?.name).toBe('ocr');
      released.open();
      await older;
      expect(fleet.get('ocr')?.name).toBe('ocr');
    } finally {
      released.open();
      fleet.stop();
    }
  });

  it('reads the tools again once subscribed: a registration announced before that is seen then, not at the next periodic reading', async () => {
    // The API's process in `npm start` starts beside the built-in worker: it read the tools (none
    // yet), the worker registered and announced it, and only then was the API subscribed. Its
    // echo tasks were refused as unknown (404) until the next reading, 5 s later (bench:loop, 2026-11-27).
    const late = new Redis(h.config.REDIS_URL, { lazyConnect: true });
    late.on('error', () => undefined);
    const other = new Redis(h.config.REDIS_URL);
    other.on('error', () => undefined);
    const api = new WorkerFleet(h.db.prisma, h.logger, { redis: h.redis, subscriber: late, prefix: h.config.QUEUE_PREFIX });
    const worker = new WorkerFleet(h.db.prisma, h.logger, { redis: h.redis, subscriber: other, prefix: h.config.QUEUE_PREFIX });
    try {
      await api.start();
      // No periodic reading from here on: only a notice or a subscription can show the tool.
      api.stop();
      await worker.register('worker-early', 'acme', workerRegistration([toolRegistration('announced_early')]) as WorkerRegistration, new Set());
      expect(api.get('announced_early')).toBeUndefined();
      await late.connect();
      await poll(() => api.get('announced_early'), { label: 'the tool seen once subscribed', timeoutMs: 10_000 });
    } finally {
      late.disconnect();
      other.disconnect();
    }
  });
});
