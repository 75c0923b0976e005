import { freshState, start } from '../../src/engine/decide.js';
import { planToolTask } from '../../src/engine/plan.js';
import { createTasks } from '../../src/ledger/create-tasks.js';
import type { SqlRunner } from '../../src/ledger/sql.js';
import { DEFAULT_LIMITS } from '../../src/lib/limits.js';
import { uuidv7Time } from '../../src/lib/uuid7.js';
import type { ToolRegistry } from '../../src/tools/tool.js';

/**
 * Stores one-tool tasks directly in the ledger, as the API would, without enqueueing anything:
 * for tests of what happens to a task whose jobs never reached Redis, or of stored rows alone.
 * Returns the ids stored.
 */
export function storeToolTasks(
  db: SqlRunner,
  registry: ToolRegistry,
  entries: { id: string; createdAt?: Date; tool?: string; params: Record<string, unknown>; owner?: string; idempotencyKey?: string; requestHash?: string }[],
): Promise<Set<string>> {
  return createTasks(
    db,
    entries.map((entry) => {
      const tool = registry.get(entry.tool ?? 'echo')!;
      const plan = planToolTask(tool, entry.params);
      const createdAt = entry.createdAt ?? uuidv7Time(entry.id)!;
      const meta = { id: entry.id, createdAt, taskType: tool.name, params: entry.params, callback: false, owner: entry.owner ?? '', depth: 0, parent: null };
      return {
        task: {
          id: meta.id,
          createdAt: meta.createdAt,
          taskType: meta.taskType,
          params: meta.params,
          owner: meta.owner,
          requestHash: entry.requestHash ?? 'test',
          priority: 0,
          delayMs: 0,
          ...(entry.idempotencyKey ? { idempotencyKey: entry.idempotencyKey } : {}),
        },
        plan,
        decision: start(freshState(meta, plan), { limits: DEFAULT_LIMITS, now: new Date(), newTaskId: () => '' }),
      };
    }),
  );
}
