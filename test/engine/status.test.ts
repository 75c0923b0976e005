import { describe, expect, it } from 'vitest';
import { STEP_STATUSES, TASK_STATUSES } from '../../src/engine/status.js';
import { StepStatus, TaskStatus } from '../../src/generated/prisma/enums.js';

describe('the status lists', () => {
  it('are the enums of the database schema, in its order', () => {
    expect(TASK_STATUSES).toEqual(Object.values(TaskStatus));
    expect(STEP_STATUSES).toEqual(Object.values(StepStatus));
  });
});
