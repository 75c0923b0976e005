import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIMPLE_NOTIFICATION } from '../../src/api/routes/compat/seed-001-examples.js';
import { uuidv7 } from '../../src/lib/uuid7.js';
import { documentAnalysis, simpleNotification } from '../fixtures/seed-001.js';
import { closeTestConnections, testTools } from '../fixtures/tools.js';
import { createHarness, type Harness, poll, waitForTask } from '../helpers/harness.js';
import { json, type RecordedRequest, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * Seed 001's API, as a team moving from it would call it (src/api/routes/compat/seed-001.ts):
 * its two workflow examples posted and run as written (test/fixtures/seed-001.ts), against a
 * local HTTP service registered as source_agent and analysis_service by their OpenAPI
 * documents; every alias endpoint and the legacy table; the 400s, the 410s, the scopes; and the
 * policy service, which sees what the aliases submit as it sees the native routes' work.
 */

const ADMIN = 'compat-admin-key-0123456789abcdef';
const READ = 'compat-read-key-0123456789abcdef';
const ALICE = 'compat-alice-key-0123456789abcdef';
const BOB = 'compat-bob-key-0123456789abcdef';
const as = (key: string) => ({ authorization: `Bearer ${key}` });

/** The two services' OpenAPI documents: source_agent fetches a document, analysis_service analyses text. */
const sourceDocument = {
  openapi: '3.1.0',
  info: { title: 'Source agent', version: '1' },
  paths: {
    '/fetch': {
      post: {
        operationId: 'fetchDocument',
        requestBody: {
          required: true,
          content: { 'application/json': { schema: { type: 'object', properties: { url: { type: 'string' } }, required: ['url'] } } },
        },
        responses: {
          '200': {
            description: 'The document',
            content: {
              'application/json': {
                schema: { type: 'object', properties: { url: { type: 'string' }, content: { type: 'string' } }, required: ['content'] },
              },
            },
          },
        },
      },
    },
  },
};

const analysisDocument = {
  openapi: '3.0.3',
  info: { title: 'Analysis service', version: '1' },
  paths: {
    '/analyze': {
      post: {
        operationId: 'analyzeDocument',
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: {
                type: 'object',
                properties: { content: { type: 'string' }, analysis_type: { type: 'string', enum: ['basic', 'comprehensive', 'security'] } },
                required: ['content', 'analysis_type'],
              },
            },
          },
        },
        responses: {
          '200': {
            description: 'The analysis',
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  properties: { analysis_type: { type: 'string' }, word_count: { type: 'integer' }, summary: { type: 'string' } },
                },
              },
            },
          },
        },
      },
    },
  },
};

describe('seed 001 compatibility', () => {
  let services: TestServer;
  let policy: TestServer;
  let h: Harness;
  const call = (method: string, path: string, body?: unknown, key = ADMIN) => h.request(method, path, body, as(key));

  beforeAll(async () => {
    services = await startServer((request: RecordedRequest, res) => {
      const url = new URL(request.path, 'http://x');
      if (url.pathname === '/source/openapi.json') return json(res, 200, sourceDocument);
      if (url.pathname === '/analysis/openapi.json') return json(res, 200, analysisDocument);
      if (url.pathname === '/source/fetch' && request.method === 'POST') {
        const { url: document } = JSON.parse(request.body) as { url: string };
        return json(res, 200, { url: document, content: `Quarterly report from ${document}: revenue grew while costs fell` });
      }
      if (url.pathname === '/analysis/analyze' && request.method === 'POST') {
        const { content, analysis_type } = JSON.parse(request.body) as { content: string; analysis_type: string };
        return json(res, 200, { analysis_type, word_count: content.split(/\s+/).length, summary: content.slice(0, 20) });
      }
      return json(res, 404, { error: 'no route' });
    });
    // The policy allows all but params holding FORBIDDEN; it records what it was asked.
    policy = await startServer((request, res) => {
      const refused = request.body.includes('FORBIDDEN');
      json(res, 200, refused ? { allow: false, reason: 'FORBIDDEN is forbidden' } : { allow: true });
    });
    h = await createHarness({
      tools: testTools,
      env: {
        API_KEYS: `admin@ops:${ADMIN},read:${READ},client@alice:${ALICE},client@bob:${BOB}`,
        HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${services.port}`,
        POLICY_URL: `${policy.origin}/decide`,
        POLICY_CACHE_TTL_MS: '0',
      },
    });
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([services?.close(), policy?.close()]);
    await closeTestConnections();
  });

  /** What the policy was asked, of one kind, about one task type. */
  const asked = (kind: string, taskType: string) =>
    policy.requests.map((request) => JSON.parse(request.body)).filter((input) => input.kind === kind && input.task_type === taskType);

  it('runs the Simple Notification example as written: its name becomes a slug, its template and notification the product’s own', async () => {
    // The API description's example is the seed's, unchanged.
    expect(SIMPLE_NOTIFICATION).toEqual(simpleNotification);
    const stored = await call('POST', '/workflows', simpleNotification);
    expect(stored.status, JSON.stringify(stored.body)).toBe(201);
    expect(stored.body).toMatchObject({
      name: 'simple-notification',
      workflow_id: 'simple-notification',
      display_name: 'Simple Notification',
      created_by: 'ops',
      status: 'active',
      version: 1,
      parameters: [{ name: 'message', type: 'string', required: true, description: 'Message to display' }],
      steps: [{ id: 'notify', tool: 'notify', input: { channel: 'log', message: '{{params.message}}' }, depends_on: [] }],
    });
    // GET shows the native form and the actions as posted, by the id or by the display name.
    const byId = await call('GET', '/workflows/simple-notification');
    const byName = await call('GET', `/workflows/${encodeURIComponent('Simple Notification')}`);
    expect(byName.body).toEqual(byId.body);
    expect(byId.body.actions).toEqual([{ ...simpleNotification.actions[0], depends_on: [] }]);

    const run = await call('POST', `/workflows/${encodeURIComponent('Simple Notification')}/execute`, { parameters: { message: 'Deployed 1.4.2' } });
    expect(run.status).toBe(202);
    expect(run.body).toMatchObject({ execution_id: run.body.task_id, workflow_id: 'simple-notification', status: 'assigned' });
    await waitForTask(h, run.body.task_id, 20_000, as(ADMIN));
    const execution = await call('GET', `/workflows/executions/${run.body.execution_id}`);
    expect(execution.status).toBe(200);
    expect(execution.body).toMatchObject({
      execution_id: run.body.task_id,
      workflow_id: 'simple-notification',
      workflow_version: 1,
      status: 'completed',
      result: { notify: { delivered: true, channel: 'log' } },
    });
    expect(execution.body.steps[0]).toMatchObject({ id: 'notify', input: { channel: 'log', message: 'Deployed 1.4.2' } });
    expect(execution.body.completed_at).toEqual(expect.any(String));
    // The policy was asked about the run, by the workflow's id.
    expect(asked('submit', 'simple-notification').map((input) => input.params)).toContainEqual({ message: 'Deployed 1.4.2' });
    // A required parameter left out is the native 400, at its path.
    const missing = await call('POST', '/workflows/simple-notification/execute', { parameters: {} });
    expect(missing.status).toBe(400);
    expect(missing.body.error.details).toEqual([{ path: 'parameters.message', message: expect.any(String) }]);
  });

  it('runs the document analysis example against source_agent and analysis_service, registered by their OpenAPI documents', async () => {
    const source = await call('POST', '/registry/register', {
      name: 'source_agent',
      base_url: `${services.origin}/source`,
      openapi_url: `${services.origin}/source/openapi.json`,
    });
    expect(source.status, JSON.stringify(source.body)).toBe(201);
    expect(source.body.imported.tools).toEqual(['source_agent.fetchDocument']);
    const analysis = await call('POST', '/services', {
      name: 'analysis_service',
      base_url: `${services.origin}/analysis`,
      openapi_url: `${services.origin}/analysis/openapi.json`,
    });
    expect(analysis.status).toBe(201);
    expect((await call('GET', '/registry')).body.services.map((service: { name: string }) => service.name).sort()).toEqual([
      'analysis_service',
      'source_agent',
    ]);

    const stored = await call('POST', '/workflows', documentAnalysis);
    expect(stored.status, JSON.stringify(stored.body)).toBe(201);
    expect(stored.body).toMatchObject({ workflow_id: 'document-analysis-pipeline', display_name: 'Document Analysis Pipeline' });
    // allowed_values became an enum, default_value the default; a POST's parameters are its JSON body.
    expect(stored.body.parameters[1]).toEqual({
      name: 'analysis_type',
      type: 'string',
      required: false,
      default: 'comprehensive',
      enum: ['basic', 'comprehensive', 'security'],
      description: 'Type of analysis to perform',
    });
    expect(
      stored.body.steps.map((step: { id: string; tool: string; input: unknown; depends_on: string[] }) => [step.id, step.tool, step.input, step.depends_on]),
    ).toEqual([
      ['fetch_doc', 'source_agent.fetchDocument', { body: { url: '{{params.document_url}}' } }, []],
      [
        'analyze_doc',
        'analysis_service.analyzeDocument',
        { body: { content: '{{steps.fetch_doc.output.content}}', analysis_type: '{{params.analysis_type}}' } },
        ['fetch_doc'],
      ],
      ['notify_complete', 'notify', { channel: 'log', message: 'Analysis of {{params.document_url}} complete' }, ['analyze_doc']],
    ]);

    const url = 'https://docs.example.com/q3-report.txt';
    const run = await call('POST', '/workflows/document-analysis-pipeline/execute', { parameters: { document_url: url } });
    expect(run.status, JSON.stringify(run.body)).toBe(202);
    const finished = await waitForTask(h, run.body.task_id, 30_000, as(ADMIN));
    expect(finished.status, JSON.stringify(finished.steps)).toBe('completed');
    const content = `Quarterly report from ${url}: revenue grew while costs fell`;
    expect(finished.result).toEqual({
      fetch_doc: { url, content },
      analyze_doc: { analysis_type: 'comprehensive', word_count: content.split(/\s+/).length, summary: content.slice(0, 20) },
      notify_complete: { delivered: true, channel: 'log' },
    });
    // The services received the seed's parameters as JSON bodies, the fetched content passed on.
    expect(services.received('/source/fetch').map((request) => JSON.parse(request.body))).toEqual([{ url }]);
    expect(services.received('/analysis/analyze').map((request) => JSON.parse(request.body))).toEqual([{ content, analysis_type: 'comprehensive' }]);

    // A value outside allowed_values is refused before anything runs.
    const refused = await call('POST', '/workflows/document-analysis-pipeline/execute', { parameters: { document_url: url, analysis_type: 'deep' } });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({
      code: 'invalid_params',
      details: [{ path: 'parameters.analysis_type', message: expect.stringContaining('"security"') }],
    });
    const security = await call('POST', '/workflows/document-analysis-pipeline/execute', { parameters: { document_url: url, analysis_type: 'security' } });
    expect((await waitForTask(h, security.body.task_id, 30_000, as(ADMIN))).result.analyze_doc.analysis_type).toBe('security');
  });

  it("answers the API section's requests: pages, filters, updates with and without a version, executions, cancel", async () => {
    // GET /workflows?page&page_size&status&created_by, besides the whole list.
    const all = (await call('GET', '/workflows')).body;
    expect(all.total).toBeUndefined();
    const names = all.workflows.map((workflow: { name: string }) => workflow.name);
    const page = (await call('GET', '/workflows?page=2&page_size=2')).body;
    expect(page).toMatchObject({ page: 2, page_size: 2, total: names.length });
    expect(page.workflows.map((workflow: { name: string }) => workflow.name)).toEqual(names.slice(2, 4));
    expect((await call('GET', '/workflows?created_by=ops')).body.workflows.map((workflow: { name: string }) => workflow.name).sort()).toEqual([
      'document-analysis-pipeline',
      'simple-notification',
    ]);
    expect((await call('GET', '/workflows?page_size=0')).status).toBe(400);

    // PUT: a display name alone changes no version; a description, tags, parameters or actions make one.
    const renamed = await call('PUT', '/workflows/simple-notification', { name: 'Simple Notice' });
    expect(renamed.body).toMatchObject({ new_version: false, version: 1, display_name: 'Simple Notice' });
    expect((await call('GET', `/workflows/${encodeURIComponent('Simple Notice')}`)).body.workflow_id).toBe('simple-notification');
    expect((await call('GET', `/workflows/${encodeURIComponent('Simple Notification')}`)).status).toBe(404);
    const described = await call('PUT', `/workflows/${encodeURIComponent('Simple Notice')}`, { description: 'Notifies, twice over', tags: ['ops'] });
    expect(described.body).toMatchObject({ new_version: true, version: 2, description: 'Notifies, twice over', tags: ['ops'], display_name: 'Simple Notice' });
    expect(described.body.actions).toEqual(renamed.body.actions);
    const twoChannels = await call('PUT', '/workflows/simple-notification', {
      parameters: [
        { name: 'message', type: 'str', required: true },
        { name: 'hook', type: 'string', default_value: `${services.origin}/hook` },
      ],
      actions: [
        { action_id: 'notify', action_type: 'notification', config: { message: 'Note: {{message}}', channels: ['log', 'webhook'], url: '{{hook}}' } },
        { action_id: 'echoed', action_type: 'tool', config: { tool: 'echo', input: { delivered: '{{notify.response.delivered}}' } }, depends_on: ['notify'] },
      ],
    });
    expect(twoChannels.status, JSON.stringify(twoChannels.body)).toBe(200);
    // One step per channel: the first keeps the action's id; what depends on the action waits for both.
    expect(twoChannels.body.steps.map((step: { id: string; depends_on: string[] }) => [step.id, step.depends_on])).toEqual([
      ['notify', []],
      ['notify_webhook', []],
      ['echoed', ['notify', 'notify_webhook']],
    ]);
    expect(twoChannels.body).toMatchObject({ version: 3, tags: ['ops'], description: 'Notifies, twice over' });
    expect((await call('PUT', '/workflows/simple-notification', {})).status).toBe(400);
    expect((await call('PUT', '/workflows/no-such-workflow', { tags: [] })).status).toBe(404);
    // A native workflow takes seed parameters; its steps stay.
    const native = await call('PUT', '/workflows/diamond', { parameters: [{ name: 'value', type: 'string', allowed_values: ['x', 'y'], default_value: 'y' }] });
    expect(native.body).toMatchObject({ version: 2, parameters: [{ name: 'value', enum: ['x', 'y'], default: 'y' }] });
    expect(native.body.steps).toHaveLength(4);
    expect(native.body).not.toHaveProperty('actions');

    // Executions: the seed's runs are tasks; a long one is cancelled.
    const hang = await call('POST', '/workflows', {
      name: 'Long Wait',
      parameters: [{ name: 'key', type: 'string', required: true }],
      actions: [{ action_id: 'wait', action_type: 'tool', config: { tool: 'hang', input: { key: '{{key}}' } } }],
    });
    expect(hang.status, JSON.stringify(hang.body)).toBe(201);
    const run = await call('POST', '/workflows/long-wait/execute', { parameters: { key: `compat-${randomUUID()}` } });
    await poll(async () => (await call('GET', `/workflows/executions/${run.body.execution_id}`)).body.status === 'running', { label: 'the hang step to run' });
    const cancelled = await call('POST', `/workflows/executions/${run.body.execution_id}/cancel`);
    expect(cancelled.body).toMatchObject({ execution_id: run.body.execution_id, status: 'cancelled' });
    expect((await waitForTask(h, run.body.task_id, 20_000, as(ADMIN))).status).toBe('cancelled');
    expect((await call('POST', `/workflows/executions/${run.body.execution_id}/cancel`)).status).toBe(409);
    const second = await call('POST', '/workflows/long-wait/execute', { parameters: { key: `compat-${randomUUID()}` } });
    const listed = await call('GET', `/workflows/${encodeURIComponent('Long Wait')}/executions?limit=1`);
    expect(listed.body).toMatchObject({ workflow_id: 'long-wait', executions: [{ execution_id: second.body.task_id, workflow_id: 'long-wait' }] });
    expect(['pending', 'running']).toContain(listed.body.executions[0].status);
    const rest = await call('GET', `/workflows/long-wait/executions?limit=1&cursor=${listed.body.next_cursor}`);
    expect(rest.body.executions.map((execution: { execution_id: string; status: string }) => [execution.execution_id, execution.status])).toEqual([
      [run.body.task_id, 'cancelled'],
    ]);
    await call('POST', `/workflows/executions/${second.body.task_id}/cancel`);
    expect((await call('GET', '/workflows/no-such-workflow/executions')).status).toBe(404);
  });

  it('makes workflows from the shipped templates, searches them, counts their runs and reports their health', async () => {
    const templates = (await call('GET', '/workflows/templates')).body.templates;
    expect(templates.map((template: { template_name: string }) => template.template_name)).toEqual(expect.arrayContaining(['diamond', 'document_analysis']));
    const made = await call('POST', '/workflows/from-template', {
      template_name: 'diamond',
      customizations: { name: 'Team Diamond', description: 'Ours', tags: ['team', 'dag'], parameters: { value: 'team' } },
    });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    expect(made.body).toMatchObject({
      workflow_id: 'team-diamond',
      display_name: 'Team Diamond',
      description: 'Ours',
      template_name: 'diamond',
      tags: ['team', 'dag'],
    });
    expect(made.body.parameters).toEqual([{ name: 'value', type: 'string', required: false, default: 'team' }]);
    const run = await call('POST', '/workflows/team-diamond/execute', {});
    expect((await waitForTask(h, run.body.task_id, 20_000, as(ADMIN))).result).toEqual({ joined: 'team-b+team-c' });
    const unknown = await call('POST', '/workflows/from-template', { template_name: 'nope', customizations: { name: 'x' } });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.details.templates).toContain('diamond');
    const badDefault = await call('POST', '/workflows/from-template', { template_name: 'diamond', customizations: { name: 'y', parameters: { nothing: 1 } } });
    expect(badDefault.body.error.details).toEqual([{ path: 'customizations.parameters["nothing"]', message: 'the template has no parameter nothing' }]);

    // Search: name, display name, description and tags, case-insensitive.
    const found = async (q: string) =>
      (await call('GET', `/workflows/search?q=${encodeURIComponent(q)}`)).body.results.map((one: { name: string }) => one.name);
    expect(await found('TEAM')).toEqual(['team-diamond']);
    expect(await found('dag')).toEqual(['team-diamond']);
    expect(await found('Simple Notice')).toEqual(['simple-notification']);
    expect(await found('analyze its content')).toEqual(['document-analysis-pipeline']);
    expect((await call('GET', '/workflows/search?q=e&limit=1')).body).toMatchObject({ total: expect.any(Number), results: [expect.any(Object)] });
    expect((await call('GET', '/workflows/search')).status).toBe(400);

    // Statistics per active workflow: runs by status, p50 and p95, the last run.
    const statistics = (await call('GET', '/workflows/statistics')).body;
    const of = (id: string) => statistics.workflows.find((entry: { workflow_id: string }) => entry.workflow_id === id);
    expect(of('team-diamond')).toMatchObject({ display_name: 'Team Diamond', runs: { total: 1, by_status: { completed: 1 } } });
    expect(of('team-diamond').duration_ms.p50).toBeGreaterThan(0);
    expect(of('team-diamond').duration_ms.p95).toBeGreaterThanOrEqual(of('team-diamond').duration_ms.p50);
    expect(Date.parse(of('team-diamond').last_run_at)).toBeGreaterThan(Date.now() - 60_000);
    expect(of('long-wait').runs.by_status).toEqual({ cancelled: 2 });
    expect(of('fan_out_fan_in')).toMatchObject({ runs: { total: 0, by_status: {} }, duration_ms: { p50: null, p95: null }, last_run_at: null });
    expect((await call('GET', '/workflows/statistics?window=1h')).body.window).toMatchObject({ from: expect.any(String) });

    expect((await call('GET', '/workflows/health')).body).toMatchObject({
      status: 'healthy',
      checks: { redis: 'up', database: 'up' },
      workflows: { active: (await call('GET', '/workflows')).body.workflows.length },
    });
  });

  it('serves the legacy table: system health, info, effective settings without secrets, and the dead-letter queue', async () => {
    expect((await call('GET', '/health/system')).body).toMatchObject({ status: 'ok', checks: { redis: 'up', database: 'up' }, version: expect.any(String) });
    expect((await call('GET', '/info')).body).toMatchObject({ name: expect.any(String), links: { workflows: '/workflows' } });
    const settings = (await call('GET', '/config/effective')).body.settings;
    expect(settings).toMatchObject({ API_KEYS: 'set', CALLBACK_SECRET: 'not set', POLICY_URL: `${policy.origin}/decide`, QUEUE_PREFIX: h.config.QUEUE_PREFIX });
    expect(JSON.stringify(settings)).not.toContain(ADMIN);
    // The configuration is an admin's business.
    expect((await call('GET', '/config/effective', undefined, READ)).status).toBe(403);

    // Dead letters: two failed runs of a step calling the broken tool.
    const stored = await call('POST', '/workflows', {
      name: 'Always Broken',
      parameters: [{ name: 'marker', type: 'string', required: true }],
      actions: [{ action_id: 'fail', action_type: 'tool', config: { tool: 'broken', input: { message: '{{marker}}' } } }],
    });
    expect(stored.status).toBe(201);
    const runs = await Promise.all(['one', 'two'].map((marker) => call('POST', '/workflows/always-broken/execute', { parameters: { marker } })));
    for (const run of runs) expect((await waitForTask(h, run.body.task_id, 20_000, as(ADMIN))).status).toBe('failed');
    const stats = (await call('GET', '/infrastructure/dlq/stats')).body;
    expect(stats.by_tool.find((entry: { tool: string }) => entry.tool === 'broken')).toMatchObject({ total: 2, open: 2 });
    expect(stats).toMatchObject({ total: 2, open: 2 });

    const letters = (await call('GET', '/dead-letters?tool=broken')).body.items;
    const first = letters.find((letter: { task_id: string }) => letter.task_id === runs[0]!.body.task_id);
    const byId = await call('POST', '/infrastructure/dlq/retry', { ids: [first.id, randomUUID()] });
    expect(byId.status).toBe(200);
    expect(byId.body.retried).toEqual([{ id: first.id, task_id: runs[0]!.body.task_id, run: 2 }]);
    expect(byId.body.failed).toEqual([{ id: expect.any(String), error: { code: 'dead_letter_not_found', message: expect.any(String) } }]);
    await poll(async () => (await call('GET', `/workflows/executions/${runs[0]!.body.task_id}`)).body.status === 'failed', {
      label: 'the retried run to fail again',
    });
    // The replay went through the policy, as POST /dead-letters/{id}/replay does.
    expect(asked('replay', 'always-broken').map((input) => input.task_id)).toEqual([runs[0]!.body.task_id]);

    // all_for_tool: the letters not replayed yet (the second run's, and the first run's new one).
    const all = await call('POST', '/infrastructure/dlq/retry', { all_for_tool: 'broken' });
    expect(all.body.retried.map((entry: { task_id: string }) => entry.task_id).sort()).toEqual([runs[0]!.body.task_id, runs[1]!.body.task_id].sort());
    expect(all.body).toMatchObject({ failed: [], more: false });
    expect((await call('POST', '/infrastructure/dlq/retry', { ids: [first.id], all_for_tool: 'broken' })).status).toBe(400);
    expect((await call('POST', '/infrastructure/dlq/retry', {})).status).toBe(400);
  });

  it('refuses, with 400 at their paths, ambiguous templates, unknown action types and what the checks find', async () => {
    const problems = async (workflow: Record<string, unknown>) => {
      const answer = await call('POST', '/workflows', workflow);
      expect(answer.status, JSON.stringify(answer.body)).toBe(400);
      expect(answer.body.error.code).toBe('invalid_workflow');
      return answer.body.error.details;
    };
    const base = { name: 'Broken Example', parameters: [{ name: 'message', type: 'string' }] };
    // A parameter and an action with one name: which one {{message}} means is not clear.
    expect(
      await problems({
        ...base,
        actions: [
          { action_id: 'message', action_type: 'tool', config: { tool: 'echo', input: {} } },
          { action_id: 'say', action_type: 'notification', config: { message: 'Said {{message}}' }, depends_on: ['message'] },
        ],
      }),
    ).toEqual([{ path: 'actions[1].config.message', message: expect.stringContaining('ambiguous') }]);
    // A name the product's own templates begin with.
    expect(
      await problems({
        ...base,
        parameters: [{ name: 'steps', type: 'string' }],
        actions: [{ action_id: 'a', action_type: 'notification', config: { message: '{{steps.x}}' } }],
      }),
    ).toEqual([{ path: 'actions[0].config.message', message: expect.stringContaining('ambiguous') }]);
    expect(await problems({ ...base, actions: [{ action_id: 'a', action_type: 'email', config: {} }] })).toEqual([
      { path: 'actions[0].action_type', message: 'the known action types are service_call, notification, tool' },
    ]);
    expect(
      await problems({
        ...base,
        actions: [
          { action_id: 'a', action_type: 'tool', config: { tool: 'echo', input: { x: '{{nobody}}', y: '{{a.content}}' } } },
          { action_id: 'b', action_type: 'notification', config: { message: 'hi', channels: ['sms'] } },
          { action_id: 'c', action_type: 'notification', config: { message: 'hi', channels: ['webhook'] }, depends_on: ['z'] },
        ],
      }),
    ).toEqual([
      { path: 'actions[0].config.input.x', message: '{{nobody}} names no declared parameter and no action' },
      { path: 'actions[0].config.input.y', message: expect.stringContaining('{{a.response.FIELD}}') },
      { path: 'actions[1].config.channels[0]', message: 'the known channels are log, webhook' },
      { path: 'actions[2].depends_on[0]', message: 'no action z' },
      { path: 'actions[2].config.url', message: 'the webhook channel needs a url' },
    ]);
    // What the workflow service's own checks find is reported where it was posted.
    expect(
      await problems({
        ...base,
        actions: [{ action_id: 'fetch', action_type: 'service_call', config: { service: 'source_agent', endpoint: '/nowhere', method: 'POST' } }],
      }),
    ).toEqual([{ path: 'actions[0].config', message: expect.stringContaining('no operation POST /nowhere') }]);
    expect(
      await problems({
        ...base,
        actions: [
          {
            action_id: 'fetch',
            action_type: 'service_call',
            config: { service: 'source_agent', endpoint: '/fetch', method: 'POST', parameters: { url: 'x' } },
          },
          { action_id: 'use', action_type: 'tool', config: { tool: 'echo', input: { got: '{{fetch.response.content}}' } } },
          { action_id: 'run', action_type: 'tool', config: { tool: 'no_such_tool' } },
        ],
      }),
    ).toEqual(
      expect.arrayContaining([
        { path: 'actions[1].config.input.got', message: expect.stringContaining('fetch') },
        { path: 'actions[2].config.tool', message: expect.stringContaining('unknown tool no_such_tool') },
      ]),
    );
    expect(
      await problems({
        ...base,
        parameters: [{ name: 'kind', type: 'text', allowed_values: ['a'], default_value: 'b' }],
        actions: [{ action_id: 'a', action_type: 'tool', config: { tool: 'echo' } }],
      }),
    ).toEqual([{ path: 'parameters[0].type', message: expect.stringContaining('unknown type text') }]);
    expect(
      await problems({
        ...base,
        parameters: [{ name: 'kind', type: 'string', allowed_values: ['a'], default_value: 'b' }],
        actions: [{ action_id: 'a', action_type: 'tool', config: { tool: 'echo' } }],
      }),
    ).toEqual([{ path: 'parameters[0].default', message: 'the default is not one of enum' }]);
    expect(await problems({ ...simpleNotification, name: '!!!' })).toEqual([{ path: 'name', message: expect.stringContaining('no letter or digit') }]);
    expect(await problems({ ...simpleNotification, name: 'search' })).toEqual([{ path: 'name', message: expect.stringContaining('GET /workflows/search') }]);
    expect(await problems({ ...simpleNotification, steps: [] })).toEqual([{ path: 'actions', message: expect.stringContaining('not both') }]);
    // What is kept beside the definition must be storable too.
    expect(await problems({ ...simpleNotification, actions: [{ ...simpleNotification.actions[0], name: 'nul\u0000inside' }] })).toEqual([
      { path: 'actions[0].name', message: expect.stringContaining('NUL') },
    ]);
    expect((await call('PUT', '/workflows/simple-notification', { tags: ['a\u0000b'] })).body.error.details).toEqual([
      { path: 'tags[0]', message: expect.stringContaining('NUL') },
    ]);
    expect((await call('GET', '/workflows/a%00b')).status).toBe(404);
    // The native format keeps its own errors, paths and all.
    expect(await problems({ name: 'native bad', steps: [{ id: 'a', tool: 'echo' }] })).toEqual([{ path: 'name', message: expect.any(String) }]);
    // Nothing was stored on the way.
    expect((await call('GET', '/workflows/broken-example')).status).toBe(404);
  });

  it('answers 410 with the routes to use for seed routes that mean nothing here, never 404', async () => {
    for (const [method, path] of [
      ['GET', '/registry/agents'],
      ['POST', '/registry/heartbeat'],
      ['DELETE', '/registry/source_agent'],
      ['GET', '/infrastructure/queues/stats'],
      ['POST', '/infrastructure/dlq/purge'],
      ['GET', '/infrastructure/dlq/retry'],
      ['PUT', '/config/effective/LOG_LEVEL'],
      ['POST', '/config/reload'],
      ['GET', '/health/database'],
      ['GET', `/workflows/executions/${randomUUID()}/logs`],
    ] as const) {
      const answer = await call(method, path, method === 'GET' ? undefined : {});
      expect(answer.status, `${method} ${path}`).toBe(410);
      expect(answer.body.error.code).toBe('gone');
      expect(answer.body.error.details.use.length, `${method} ${path}`).toBeGreaterThan(0);
    }
    // A task past RETENTION_DAYS is gone too (as GET /result says).
    expect((await call('GET', `/workflows/executions/${uuidv7(new Date(Date.now() - 400 * 86_400_000))}`)).body.error.code).toBe('task_expired');
  });

  it("keeps the scopes: a read key cannot create, another client neither sees nor cancels alice's execution", async () => {
    for (const [method, path, body] of [
      ['POST', '/workflows', { ...simpleNotification, name: 'Read Attempt' }],
      ['PUT', '/workflows/simple-notification', { tags: ['read'] }],
      ['POST', '/workflows/from-template', { template_name: 'diamond', customizations: { name: 'read-diamond' } }],
      ['POST', '/registry/register', { name: 'read_service', base_url: services.origin }],
      ['POST', '/infrastructure/dlq/retry', { all_for_tool: 'broken' }],
      ['POST', '/workflows/simple-notification/execute', { parameters: { message: 'x' } }],
    ] as const) {
      const answer = await call(method, path, body, READ);
      expect(answer.status, `${method} ${path}`).toBe(403);
      expect(answer.body.error.code).toBe('forbidden');
    }
    expect((await call('GET', '/workflows/read-attempt')).status).toBe(404);

    const run = await call('POST', '/workflows/long-wait/execute', { parameters: { key: `compat-${randomUUID()}` } }, ALICE);
    expect(run.status).toBe(202);
    expect((await call('GET', `/workflows/executions/${run.body.execution_id}`, undefined, BOB)).status).toBe(404);
    expect((await call('POST', `/workflows/executions/${run.body.execution_id}/cancel`, undefined, BOB)).status).toBe(404);
    const bobs = (await call('GET', '/workflows/long-wait/executions', undefined, BOB)).body.executions;
    expect(bobs).toEqual([]);
    const alices = (await call('GET', '/workflows/long-wait/executions', undefined, ALICE)).body.executions;
    expect(alices.map((execution: { execution_id: string }) => execution.execution_id)).toEqual([run.body.execution_id]);
    // A read key sees every task; alice cancels her own.
    expect((await call('GET', `/workflows/executions/${run.body.execution_id}`, undefined, READ)).status).toBe(200);
    expect((await call('POST', `/workflows/executions/${run.body.execution_id}/cancel`, undefined, ALICE)).status).toBe(200);
  });

  it('puts what the aliases submit to the policy: a refused run is 403 policy_denied and creates nothing', async () => {
    const before = (await call('GET', '/workflows/simple-notification/executions')).body.executions.length;
    const denied = await call('POST', `/workflows/${encodeURIComponent('Simple Notice')}/execute`, { parameters: { message: 'FORBIDDEN words' } }, ALICE);
    expect(denied.status).toBe(403);
    expect(denied.body.error).toMatchObject({ code: 'policy_denied', details: { reason: 'FORBIDDEN is forbidden' } });
    expect((await call('GET', '/workflows/simple-notification/executions')).body.executions).toHaveLength(before);
    const input = asked('submit', 'simple-notification').find((one) => one.params.message === 'FORBIDDEN words');
    expect(input).toMatchObject({ key_id: 'alice', scope: 'client', owner: 'alice' });
  });
});
