#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import {
  createClient,
  type FollowEvent,
  type HistoryEvent,
  type NewSchedule,
  type OrchestratorClient,
  OrchestratorError,
  paramsFilter,
  type Schedule,
  type StepItemQuery,
  type TaskView,
  type WorkflowDefinition,
} from './index.js';

/** `orchestrator ...` (`npx orchestrator` in this repository): the API from a terminal, on the typed client. */

const USAGE = `Usage: orchestrator <command> [options]

Commands:
  submit <task_type> [--params JSON] [--idempotency-key KEY] [--priority N] [--delay-ms N] [--wait]
                                   submit a tool or workflow task; --wait: show its progress
                                   as follow does until it ends
  result <task_id> [--wait SECONDS]
                                   the task, its steps and its result (--wait: up to 30 s for the end)
  tasks [--status S] [--type T] [--param NAME=VALUE] [--parent ID] [--top-level] [--limit N] [--cursor C]
                                   tasks, newest first (--status waiting: those waiting for someone;
                                   --param: the last 7 days whose params have that value; --parent:
                                   a task's child tasks; --top-level: no child tasks)
  items <task_id> <step_id> [--status S] [--limit N] [--cursor C]
                                   a for_each step's items, in order
  history <task_id> [--step ID] [--limit N] [--after C]
                                   the task's history: every change, attempt and retry, in order
  follow <task_id>                 live progress until the task ends
  cancel <task_id>                 cancel a task, aborting its running steps
  retry <task_id>                  resume a failed or cancelled task
  signal <task_id> <name> [--payload JSON]
                                   send a signal to the step waiting for it (an approval:
                                   --payload '{"decision": "approved"}')
  tools                            the tool adapters
  workflows list                   the workflows
  workflows get <name> [--version N]
                                   a workflow's definition
  workflows push <file.json>       store a definition (a new version when the name exists)
  schedules list                   the schedules
  schedules get <name>             a schedule, its next 5 fire times and its latest runs
  schedules create <name> (--cron EXPR [--timezone TZ] | --every-ms N) --type T [--params JSON]
                   [--overlap skip|allow|buffer_one] [--catch-up none|latest|MS] [--paused]
                                   create a schedule (--catch-up MS: every missed tick of the
                                   last MS milliseconds); or: schedules create --file F.json
  schedules pause <name>           stop its ticks
  schedules resume <name>          start them again (missed ticks run as its catch-up says)
  schedules delete <name>          delete it (its tasks are kept)

Options:
  --url URL        the API (ORCHESTRATOR_URL; default http://127.0.0.1:3000)
  --api-key-file F the API key, from the first line of file F (ORCHESTRATOR_API_KEY_FILE), or
                   ORCHESTRATOR_API_KEY; never the key itself on the command line, where
                   ps and shell history show it
  --json           the API's JSON answers instead of text (follow: one event per line)
  -h, --help       this text

Exit status: 0 done (submit --wait and follow: the task completed); 1 the task failed or was
cancelled, or the request failed (the API's error code and the path of each problem are printed);
2 wrong usage.`;

const DEFAULT_URL = 'http://127.0.0.1:3000';
const STEP_ENDS = new Set(['completed', 'failed', 'skipped', 'cancelled']);

/** Wrong usage: printed with a pointer to --help, exit status 2. */
class UsageError extends Error {
  override readonly name = 'UsageError';
}

/**
 * The API key: from a file (--api-key-file, ORCHESTRATOR_API_KEY_FILE) or ORCHESTRATOR_API_KEY.
 * A key given as an argument is refused: every user of the machine sees it in `ps`, and the
 * shell keeps it in its history.
 */
function apiKey(given: string | undefined, file: string | undefined): string | undefined {
  if (given !== undefined) {
    throw new UsageError('--api-key is not accepted (ps and shell history would show the key): use ORCHESTRATOR_API_KEY or --api-key-file');
  }
  const path = file ?? process.env.ORCHESTRATOR_API_KEY_FILE;
  if (path === undefined) return process.env.ORCHESTRATOR_API_KEY || undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new UsageError(`the API key file ${path} cannot be read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const key = text.split(/\r?\n/, 1)[0]!.trim();
  if (!key) throw new UsageError(`the API key file ${path} is empty`);
  return key;
}

type Options = NonNullable<ParseArgsConfig['options']>;

const COMMON: Options = {
  url: { type: 'string' },
  'api-key': { type: 'string' },
  'api-key-file': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

const COMMANDS: Record<string, Options> = {
  submit: {
    params: { type: 'string' },
    'idempotency-key': { type: 'string' },
    priority: { type: 'string' },
    'delay-ms': { type: 'string' },
    wait: { type: 'boolean' },
  },
  result: { wait: { type: 'string' } },
  tasks: {
    status: { type: 'string' },
    type: { type: 'string' },
    param: { type: 'string' },
    parent: { type: 'string' },
    'top-level': { type: 'boolean' },
    limit: { type: 'string' },
    cursor: { type: 'string' },
  },
  items: { status: { type: 'string' }, limit: { type: 'string' }, cursor: { type: 'string' } },
  history: { step: { type: 'string' }, limit: { type: 'string' }, after: { type: 'string' } },
  follow: {},
  cancel: {},
  retry: {},
  signal: { payload: { type: 'string' } },
  tools: {},
  workflows: { version: { type: 'string' } },
  schedules: {
    cron: { type: 'string' },
    timezone: { type: 'string' },
    'every-ms': { type: 'string' },
    type: { type: 'string' },
    params: { type: 'string' },
    overlap: { type: 'string' },
    'catch-up': { type: 'string' },
    paused: { type: 'boolean' },
    file: { type: 'string' },
  },
};

function integer(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new UsageError(`--${name} must be a whole number, not '${value}'`);
  return Number(value);
}

function jsonValue(what: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${what} is not JSON: ${(error as Error).message}`);
  }
}

function jsonObject(what: string, text: string): Record<string, unknown> {
  const value = jsonValue(what, text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError(`${what} must be a JSON object`);
  return value as Record<string, unknown>;
}

const print = (line = '') => process.stdout.write(`${line}\n`);
const printJson = (value: unknown) => print(JSON.stringify(value, null, 2));

/** Rows in columns, each as wide as its widest cell. */
function printTable(rows: string[][]): void {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => row[column]!.length))) ?? [];
  for (const row of rows)
    print(
      row
        .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!)))
        .join('  ')
        .trimEnd(),
    );
}

function printTask(task: TaskView): void {
  print(`task ${task.task_id} ${task.task_type} ${task.status} [${task.progress.completed}/${task.progress.total}]`);
  for (const step of task.steps) {
    const facts = [step.status, step.attempts > 1 ? `${step.attempts} attempts` : '', step.duration_ms === null ? '' : `${step.duration_ms} ms`].filter(
      Boolean,
    );
    print(`  ${step.id} (${stepLabel(step)}) ${facts.join(', ')}${step.reason ? ` (${step.reason})` : ''}${step.error ? `: ${step.error.message}` : ''}`);
    printWaiting(step);
  }
  printOutcome(task);
}

/** What a waiting step waits for, and its approval links (shown to keys that may hold them). */
function printWaiting(step: TaskView['steps'][number]): void {
  if (step.waiting_for) print(`    waits for signal ${step.waiting_for.signal}${step.waiting_for.timeout_at ? ` until ${step.waiting_for.timeout_at}` : ''}`);
  for (const link of step.waiting_for?.approval?.links ?? []) print(`    approve${link.approver ? ` (${link.approver})` : ''}: ${link.url}`);
}

/** What a step runs, by kind: `http`, `http for_each 3/10`, `http repeat 4`, `workflow → <child task>`, `sleep until <time>`. */
function stepLabel(step: TaskView['steps'][number]): string {
  if (step.iterations !== undefined) return `${step.tool ?? `workflow${step.child_task_id ? ` → ${step.child_task_id}` : ''}`} repeat ${step.iterations}`;
  if (step.items) return `${step.tool} for_each ${step.items.done}/${step.items.total}`;
  if (step.kind === 'workflow') return `workflow${step.child_task_id ? ` → ${step.child_task_id}` : ''}`;
  if (step.kind === 'sleep') return `sleep${step.wake_at ? ` until ${step.wake_at}` : ''}`;
  return step.tool ?? step.kind;
}

function printOutcome(task: TaskView): void {
  if (task.status === 'completed') printJson(task.result ?? null);
  else if (task.error) print(`error: ${task.error.message}${task.error.step ? ` (step ${task.error.step})` : ''}`);
}

const endStatus = (task: TaskView) => (task.status === 'completed' ? 0 : 1);

/**
 * Prints each event as a line, `[completed/total]` first, and under a step that starts waiting
 * what it waits for (its approval links too); resolves with the exit status once the task ended.
 */
async function follow(client: OrchestratorClient, taskId: string, json: boolean): Promise<number> {
  const steps = new Map<string, string>();
  let total = 0;
  const counter = () => `[${[...steps.values()].filter((status) => STEP_ENDS.has(status)).length}/${total}]`;
  let last: FollowEvent | undefined;
  // A step's event says it waits; what for (the signal, the links) is in the task.
  const shown = new Set<string>();
  const showWaiting = async (stepIds: string[]) => {
    const fresh = stepIds.filter((id) => !shown.has(id));
    if (fresh.length === 0) return;
    const task = await client.result(taskId);
    for (const step of task.steps)
      if (fresh.includes(step.id) && step.waiting_for) {
        shown.add(step.id);
        printWaiting(step);
      }
  };
  for await (const event of client.follow(taskId)) {
    last = event;
    if (json) {
      print(JSON.stringify(event));
      continue;
    }
    if (event.type === 'snapshot') {
      total = event.task.progress.total;
      for (const step of event.task.steps) steps.set(step.id, step.status);
      print(`${counter()} task ${event.task.task_id} ${event.task.task_type} ${event.task.status}`);
      await showWaiting(event.task.steps.filter((step) => step.status === 'waiting').map((step) => step.id));
    } else if (event.type === 'step') {
      steps.set(event.step_id ?? '', event.status ?? '');
      print(`${counter()} step ${event.step_id} ${event.status}`);
      if (event.status === 'waiting' && event.step_id) await showWaiting([event.step_id]);
    } else if (event.type === 'progress') {
      print(`${counter()} step ${event.step_id} ${event.percent}%${event.message ? ` ${event.message}` : ''}`);
    } else {
      print(`${counter()} task ${event.status}`);
    }
  }
  if (!last) throw new Error(`the event stream of task ${taskId} ended without an event`);
  // The result (or the error) is in the task, not in its events.
  const task = await client.result(taskId);
  if (!json) printOutcome(task);
  return endStatus(task);
}

async function run(argv: string[]): Promise<number> {
  // The command decides which options exist (--wait is a flag for submit, seconds for result).
  const command = parseArgs({ args: argv, options: COMMON, allowPositionals: true, strict: false }).positionals[0];
  if (command !== undefined && command !== 'help' && !(command in COMMANDS)) throw new UsageError(`unknown command '${command}'`);
  const { values, positionals } = parseArgs({ args: argv, options: { ...COMMON, ...(command ? COMMANDS[command] : {}) }, allowPositionals: true });
  const option = (name: string) => values[name] as string | undefined;
  if (values.help || command === 'help') {
    print(USAGE);
    return 0;
  }
  if (!command) throw new UsageError('no command given');
  const json = values.json === true;
  const client = createClient({
    baseUrl: option('url') ?? process.env.ORCHESTRATOR_URL ?? DEFAULT_URL,
    apiKey: apiKey(option('api-key'), option('api-key-file')),
  });
  const args = positionals.slice(1);
  const argument = (name: string) => {
    const value = args.shift();
    if (value === undefined) throw new UsageError(`${command} needs ${name}`);
    return value;
  };

  switch (command) {
    case 'submit': {
      const taskType = argument('a task type (a tool or a workflow)');
      const params = option('params') === undefined ? {} : jsonObject('--params', option('params')!);
      const idempotencyKey = option('idempotency-key');
      const priority = integer('priority', option('priority'));
      const delayMs = integer('delay-ms', option('delay-ms'));
      const submitted = await client.submit(taskType, params, {
        ...(idempotencyKey !== undefined ? { idempotency_key: idempotencyKey } : {}),
        ...(priority !== undefined ? { priority } : {}),
        ...(delayMs !== undefined ? { delay_ms: delayMs } : {}),
      });
      if (!values.wait) {
        if (json) printJson(submitted);
        else print(submitted.replayed ? `task ${submitted.task_id} already submitted with this idempotency key` : `task ${submitted.task_id} assigned`);
        return 0;
      }
      if (json) {
        const task = await client.waitForResult(submitted.task_id);
        printJson(task);
        return endStatus(task);
      }
      // Its progress as follow shows it, then the task and its result.
      print(`task ${submitted.task_id} assigned, waiting for it to end`);
      return follow(client, submitted.task_id, false);
    }
    case 'result': {
      const task = await client.result(argument('a task id'), { wait: integer('wait', option('wait')) ?? 0 });
      if (json) printJson(task);
      else printTask(task);
      return 0;
    }
    case 'tasks': {
      const limit = integer('limit', option('limit'));
      const param = paramsFilter(option('param'));
      if (param.problem) throw new UsageError(`--param: ${param.problem}`);
      const page = await client.tasks({
        ...(option('status') !== undefined ? { status: option('status') as TaskView['status'] } : {}),
        ...(option('type') !== undefined ? { task_type: option('type')! } : {}),
        ...(param.filter ? { params: param.filter } : {}),
        ...(option('parent') !== undefined ? { parent: option('parent')! } : {}),
        ...(values['top-level'] === true ? { top_level: 'true' as const } : {}),
        ...(limit !== undefined ? { limit } : {}),
        ...(option('cursor') !== undefined ? { cursor: option('cursor')! } : {}),
      });
      if (json) {
        printJson(page);
        return 0;
      }
      printTable(page.items.map((task) => [task.task_id, task.created_at, task.status, task.task_type]));
      if (page.next_cursor) print(`more: --cursor ${page.next_cursor}`);
      return 0;
    }
    case 'items': {
      const taskId = argument('a task id');
      const limit = integer('limit', option('limit'));
      const page = await client.items(taskId, argument('a step id'), {
        ...(option('status') !== undefined ? { status: option('status') as StepItemQuery['status'] } : {}),
        ...(limit !== undefined ? { limit } : {}),
        ...(option('cursor') !== undefined ? { cursor: option('cursor')! } : {}),
      });
      if (json) {
        printJson(page);
        return 0;
      }
      printTable(page.items.map((item) => [String(item.item), item.status, item.error ? item.error.message : JSON.stringify(item.output ?? null)]));
      if (page.next_cursor) print(`more: --cursor ${page.next_cursor}`);
      return 0;
    }
    case 'history': {
      const taskId = argument('a task id');
      const limit = integer('limit', option('limit'));
      const page = await client.history(taskId, {
        ...(option('step') !== undefined ? { step: option('step')! } : {}),
        ...(limit !== undefined ? { limit } : {}),
        ...(option('after') !== undefined ? { after: option('after')! } : {}),
      });
      if (json) {
        printJson(page);
        return 0;
      }
      printTable(
        page.events.map((event) => [
          event.at,
          event.step_id === undefined ? '' : event.item === undefined ? event.step_id : `${event.step_id}[${event.item}]`,
          event.attempt === undefined ? event.type : `${event.type} #${event.attempt}`,
          historyDetail(event),
        ]),
      );
      if (page.next_cursor) print(`more: --after ${page.next_cursor}`);
      return 0;
    }
    case 'follow':
      return follow(client, argument('a task id'), json);
    case 'cancel': {
      const cancelled = await client.cancel(argument('a task id'));
      if (json) printJson(cancelled);
      else print(`task ${cancelled.task_id} cancelled`);
      return 0;
    }
    case 'retry': {
      const resumed = await client.retry(argument('a task id'));
      if (json) printJson(resumed);
      else print(`task ${resumed.task_id} resumed as run ${resumed.run}`);
      return 0;
    }
    case 'signal': {
      const taskId = argument('a task id');
      const name = argument('a signal name');
      const recorded = await client.signal(taskId, name, option('payload') === undefined ? {} : jsonValue('--payload', option('payload')!));
      if (json) printJson(recorded);
      else print(`task ${recorded.task_id}: step ${recorded.step_id} took signal ${recorded.signal}`);
      return 0;
    }
    case 'tools': {
      const tools = await client.tools();
      if (json) printJson(tools);
      else printTable(tools.map((tool) => [tool.name, tool.description]));
      return 0;
    }
    case 'workflows':
      return workflows(client, argument('list, get or push'), args, { json, version: integer('version', option('version')) });
    case 'schedules':
      return schedules(client, argument('list, get, create, pause, resume or delete'), args, { json, option });
  }
  throw new UsageError(`unknown command '${command}'`);
}

async function workflows(client: OrchestratorClient, action: string, args: string[], options: { json: boolean; version: number | undefined }): Promise<number> {
  if (action === 'list') {
    const list = await client.workflows.list();
    if (options.json) printJson(list);
    else printTable(list.map((workflow) => [workflow.name, `v${workflow.version}`, `${workflow.steps} steps`, workflow.description ?? '']));
    return 0;
  }
  const target = args[0];
  if (target === undefined) throw new UsageError(`workflows ${action} needs ${action === 'push' ? 'a JSON file' : 'a name'}`);
  if (action === 'get') {
    printJson(await client.workflows.get(target, options.version));
    return 0;
  }
  if (action === 'push') {
    let text: string;
    try {
      text = readFileSync(target, 'utf8');
    } catch (error) {
      throw new UsageError(`cannot read ${target}: ${(error as Error).message}`);
    }
    const stored = await client.workflows.push(jsonObject(target, text) as WorkflowDefinition);
    if (options.json) printJson(stored);
    else print(`workflow ${stored.name} stored as version ${stored.version}`);
    return 0;
  }
  throw new UsageError(`unknown workflows action '${action}' (list, get or push)`);
}

function readJsonFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as Error).message}`);
  }
  return jsonObject(path, text);
}

/** A schedule from the flags of `schedules create`. */
function scheduleFromFlags(name: string, option: (name: string) => string | undefined, paused: boolean): NewSchedule {
  const taskType = option('type');
  if (taskType === undefined) throw new UsageError('schedules create needs --type (a tool or a workflow)');
  const everyMs = integer('every-ms', option('every-ms'));
  const catchUp = option('catch-up');
  return {
    name,
    task_type: taskType,
    ...(option('cron') !== undefined ? { cron: option('cron')! } : {}),
    ...(everyMs !== undefined ? { every_ms: everyMs } : {}),
    ...(option('timezone') !== undefined ? { timezone: option('timezone')! } : {}),
    ...(option('params') !== undefined ? { params: jsonObject('--params', option('params')!) } : {}),
    ...(option('overlap') !== undefined ? { overlap: option('overlap') as NewSchedule['overlap'] } : {}),
    ...(catchUp !== undefined ? { catch_up: /^\d+$/.test(catchUp) ? { all_within_ms: Number(catchUp) } : (catchUp as 'none' | 'latest') } : {}),
    ...(paused ? { paused: true } : {}),
  };
}

const timingOf = (schedule: Schedule) => (schedule.cron !== null ? `cron '${schedule.cron}' ${schedule.timezone}` : `every ${schedule.every_ms} ms`);

async function schedules(
  client: OrchestratorClient,
  action: string,
  args: string[],
  options: { json: boolean; option: (name: string) => string | undefined },
): Promise<number> {
  const show = (schedule: Schedule, done: string) => (options.json ? printJson(schedule) : print(`schedule ${schedule.name} ${done}`));
  if (action === 'list') {
    const list = await client.schedules.list();
    if (options.json) printJson(list);
    else
      printTable(
        list.map((schedule) => [schedule.name, timingOf(schedule), schedule.task_type, schedule.paused ? 'paused' : (schedule.next_fire_times[0] ?? '')]),
      );
    return 0;
  }
  if (action === 'create' && options.option('file') !== undefined) {
    show(await client.schedules.create(readJsonFile(options.option('file')!) as NewSchedule), 'created');
    return 0;
  }
  const name = args[0];
  if (name === undefined) throw new UsageError(`schedules ${action} needs a name`);
  switch (action) {
    case 'get': {
      const schedule = await client.schedules.get(name);
      if (options.json) {
        printJson(schedule);
        return 0;
      }
      print(`schedule ${schedule.name}: ${timingOf(schedule)}, ${schedule.task_type}, overlap ${schedule.overlap}${schedule.paused ? ', paused' : ''}`);
      for (const at of schedule.next_fire_times) print(`  next ${at}`);
      printTable(schedule.recent_runs.map((run) => [`  ${run.tick_at}`, run.outcome, run.task_id ?? '', run.status ?? run.error ?? '']));
      return 0;
    }
    case 'create':
      show(await client.schedules.create(scheduleFromFlags(name, options.option, options.option('paused') !== undefined)), 'created');
      return 0;
    case 'pause':
      show(await client.schedules.pause(name), 'paused');
      return 0;
    case 'resume':
      show(await client.schedules.resume(name), 'resumed');
      return 0;
    case 'delete': {
      const deleted = await client.schedules.delete(name);
      if (options.json) printJson(deleted);
      else print(`schedule ${name} deleted`);
      return 0;
    }
  }
  throw new UsageError(`unknown schedules action '${action}' (list, get, create, pause, resume or delete)`);
}

/** The API's code and message, and each problem's path; a network error names what it could not reach. */
function describe(error: unknown): string[] {
  if (error instanceof OrchestratorError) {
    const lines = [`error ${error.code}: ${error.message}`];
    for (const problem of error.problems) lines.push(`  ${problem.path}: ${problem.message}`);
    if (error.problems.length === 0 && error.details !== undefined) lines.push(`  details: ${JSON.stringify(error.details)}`);
    if (error.retryAfterS !== undefined) lines.push(`  retry after ${error.retryAfterS} s`);
    return lines;
  }
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  if (error instanceof TypeError && cause) return [`error: cannot reach the API: ${cause.code ?? cause.message}`];
  return [`error: ${error instanceof Error ? error.message : String(error)}`];
}

// A reader that stops early (`orchestrator workflows list | head`) closes the pipe: the output
// ends there, quietly, as it does for other command-line tools (it was an EPIPE stack trace).
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(process.exitCode ?? 0);
});

try {
  process.exitCode = await run(process.argv.slice(2));
} catch (error) {
  for (const line of describe(error)) process.stderr.write(`${line}\n`);
  if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write('run orchestrator --help for the commands and options\n');
    process.exitCode = 2;
  } else {
    process.exitCode = 1;
  }
}

/** What a history event says, in a few words: a change's reason, an attempt's end, a retry's delay. */
function historyDetail(event: HistoryEvent): string {
  const data = (event.data ?? {}) as Record<string, unknown>;
  const parts: string[] = [];
  if (typeof data.reason === 'string') parts.push(data.reason);
  if (typeof data.waited_for === 'string') parts.push(`waited for ${data.waited_for}`);
  if (typeof data.status === 'string' && event.type === 'attempt_ended') parts.push(data.status);
  if (typeof data.duration_ms === 'number') parts.push(`${data.duration_ms} ms`);
  if (data.error && typeof data.error === 'object') parts.push(String((data.error as { message?: unknown }).message ?? ''));
  if (typeof data.error === 'string') parts.push(data.error);
  if (typeof data.delay_ms === 'number') parts.push(`in ${data.delay_ms} ms`);
  if (typeof data.worker === 'string') parts.push(`on ${data.worker}`);
  return parts.join(', ');
}
