/** What GET / links to; the OpenAPI example shows the same object. */
export const SERVICE_LINKS = {
  assign_task: '/assign-task',
  result: '/result/{task_id}',
  tasks: '/tasks',
  tools: '/tools',
  workflows: '/workflows',
  health: '/health',
  ready: '/ready',
  queues: '/admin/queues',
  openapi: '/openapi.json',
  docs: '/docs/',
  redoc: '/redoc',
};
