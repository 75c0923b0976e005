import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerRegistration } from '../../src/fleet/protocol.js';
import { WorkerFleet } from '../../src/fleet/worker-fleet.js';
import type { PrismaClient } from '../../src/generated/prisma/client.js';
import { toolRegistration, workerRegistration } from '../fixtures/worker-registration.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { latch } from '../helpers/latch.js';

/**
 * A reading of the workers' tools (every few seconds, on a notice, after a registration) that
 * began before a registration and ends after the registration's own reading: what it read is
 * older, and must not put the registered tool out of sight until the next reading.
 */
describe("the fleet's readings of the tools, overlapping", () => {
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
});
