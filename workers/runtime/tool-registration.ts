import type { Job } from 'bullmq';
import { z } from 'zod';
import { RUNNING_STEPS_MAX, type RunningStep, type ToolRegistration, type WorkerRegistration } from '../../src/fleet/protocol.js';
import type { StepJobData } from '../../src/queue/jobs.js';
import type { AnyTool } from '../../src/tools/tool.js';

// What every worker tells the fleet, the built-in one (registration.ts) and a user's (the SDK,
// workers/sdk): its tools as registrations, and the steps it runs in each heartbeat. Nothing here
// touches the database, so the SDK's bundle can take it.

/** What a worker tells the fleet of a tool: its JSON Schemas, as zod writes them, and the limits it runs under. */
export function toolRegistration(tool: AnyTool): ToolRegistration {
  return {
    name: tool.name,
    description: tool.description,
    input_schema: z.toJSONSchema(tool.input, { io: 'input' }) as Record<string, unknown>,
    output_schema: z.toJSONSchema(tool.output, { io: 'output' }) as Record<string, unknown>,
    retry: tool.retry,
    timeout_ms: tool.timeout_ms,
    ...(tool.concurrency !== undefined ? { concurrency: tool.concurrency } : {}),
    ...(tool.rate_limit ? { rate_limit: { max: tool.rate_limit.max, duration_ms: tool.rate_limit.duration_ms } } : {}),
  };
}

/** The steps a worker runs now, oldest first, for its heartbeat (GET /workers). */
export class RunningSteps {
  private readonly steps = new Map<string, RunningStep>();

  /** `process`, with each job listed while it runs. */
  track<R>(process: (job: Job<StepJobData>, token?: string) => Promise<R>): (job: Job<StepJobData>, token?: string) => Promise<R> {
    return async (job, token) => {
      const key = `${job.queueQualifiedName}:${job.id}`;
      const { taskId, stepId, item, tool } = job.data;
      this.steps.set(key, { task_id: taskId, step_id: stepId, ...(item !== undefined ? { item } : {}), tool, since: new Date().toISOString() });
      try {
        return await process(job, token);
      } finally {
        this.steps.delete(key);
      }
    };
  }

  /** What a heartbeat reports: the first RUNNING_STEPS_MAX steps, and how many run in all. */
  report(): Pick<WorkerRegistration, 'running' | 'running_count'> {
    const running = [...this.steps.values()];
    return { running: running.slice(0, RUNNING_STEPS_MAX), running_count: running.length };
  }
}
