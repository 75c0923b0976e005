import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bookingsDocument } from '../fixtures/bookings.js';
import { callsTheApi, claimOf, curlCalls, docBlocks, docPages, mismatches, parseShown, readPage, runBlock, shellCommands } from '../helpers/doc-commands.js';
import { createHarness, type Harness } from '../helpers/harness.js';
import { json, startServer, type TestServer } from '../helpers/http-server.js';

/**
 * The docs' commands run as written (issue 33): every block of README.md and docs/ that calls the
 * API either runs here, against a live service (the harness: real Redis and PostgreSQL, the API and
 * a worker in this process), or says on the line above its fence why it does not. Which blocks
 * claim to run:
 *
 * - A ```sh block whose commands are all `curl`s to `localhost:3000` RUNS: each curl in order, its
 *   method, path, headers and body as written (`-d @FILE` reads the file from the repository's
 *   root), and each answer is a success — or the status its comment shows (`# 201 {…}`) — and has
 *   what the comment shows: a JSON object or some of its members (`# "result": {…}`) at the end of
 *   the command's line or on the comment lines right below it, `…` leaving things out (objects may
 *   have more members than shown; an array with `…` in it, more items around the ones shown, in
 *   order; without, exactly those). `4f1c…` and `<task_id>` stand for the task the block made
 *   last, in commands and in answers. Times and durations (`…_at`, `timestamp`, `duration_ms`) are
 *   compared by type. A `/result/…?wait=N` read is asked again while the task has not ended, and
 *   a 503 (a dependency slow to answer) asked again, as a reader on a busy machine would. A comment that starts otherwise is prose and shows nothing.
 * - A block marked `<!-- not run: REASON -->` on the line above its fence is illustrative: it needs
 *   what a test cannot have (a made-up host, Docker), and the reason says what.
 * - A block marked `<!-- run by: FILE -->` is run by that test (it must exist and name the page):
 *   the `npx orchestrator` lines of docs/client-and-cli.md, which test/client/cli-docs.test.ts runs
 *   through the CLI, each a process of its own (seconds apiece with tsx on a busy machine: too slow
 *   to run a second time here).
 * - Any other block that calls the API (a `curl` in a ```bash or bare block, a `$VARIABLE`, a
 *   pipe, an ```http request to a path, an unmarked CLI line) FAILS this test: make it run, or mark it.
 *
 * Blocks that call nothing claim nothing: `npm test`, `docker compose up`, settings as
 * `NAME=value`, JSON (parsed by doc-blocks.test.ts), TypeScript, diagrams.
 *
 * Where a block needs a third party, a local HTTP server stands in for it: the booking service the
 * saga of docs/tools-and-workers.md calls at 127.0.0.1:4010, on a free port that the block's
 * `127.0.0.1:4010` is rewritten to (so that parallel runs do not collide), and put on
 * HTTP_TOOL_ALLOWED_HOSTS as the block says to.
 */

/** A stand-in for the saga's booking service: the four operations of its OpenAPI document, ids numbered by call, and a confirm that refuses. */
function bookingService(): Promise<TestServer> {
  const document = bookingsDocument();
  let counter = 0;
  return startServer((request, res) => {
    if (request.path === '/openapi.json') return json(res, 200, document);
    counter += 1;
    if (request.method === 'POST' && request.path === '/reservations') return json(res, 200, { reservation_id: `r${counter}` });
    if (request.method === 'POST' && request.path === '/charges') return json(res, 200, { charge_id: `c${counter}` });
    if (request.method === 'POST' && request.path === '/confirm') return json(res, 409, { error: 'room 12B is no longer available' });
    if (request.method === 'POST' && /^\/charges\/[\w-]+\/refund$/.test(request.path)) return json(res, 200, {});
    if (request.method === 'DELETE' && request.path.startsWith('/reservations/')) return json(res, 200, {});
    return json(res, 404, { error: 'no route' });
  });
}

const pages = docPages().map((page) => ({ page, blocks: docBlocks(page, readPage(page)) }));
const claimed = pages.flatMap(({ blocks }) => blocks.map((block) => ({ block, claim: claimOf(block) })));
const running = claimed.filter(({ claim }) => claim.kind === 'runs').map(({ block }) => block);

describe("the docs' commands", { timeout: 60_000 }, () => {
  let h: Harness;
  let bookings: TestServer;
  beforeAll(async () => {
    bookings = await bookingService();
    h = await createHarness({ env: { HTTP_TOOL_ALLOWED_HOSTS: `127.0.0.1:${bookings.port}` } });
  });
  afterAll(async () => {
    await h?.close();
    await bookings?.close();
  });

  it('every block that calls the API runs here, or says why not on the line above it', () => {
    const unclaimed = claimed.flatMap(({ block, claim }) => (claim.kind === 'unclaimed' ? [`${block.page}:${block.line}: ${claim.why}`] : []));
    expect(unclaimed).toEqual([]);
    // The blocks known to run (more may come); the CLI's lines run in their own test.
    const counts = Object.fromEntries(pages.map(({ page }) => [page, running.filter((block) => block.page === page).length]));
    expect(counts).toMatchObject({ 'README.md': 2, 'docs/workflows.md': 2, 'docs/tools-and-workers.md': 1 });
    expect(claimed.filter(({ claim }) => claim.kind === 'run by').map(({ block }) => block.page)).toContain('docs/client-and-cli.md');
    expect(running.filter((block) => block.text.includes('"name": "book_room"')).map((block) => block.page)).toEqual(['docs/tools-and-workers.md']);
  });

  it('tells a block that calls the API and neither runs nor says why', () => {
    const page = [
      '```bash',
      'curl -s localhost:3000/tools',
      '```',
      '',
      '```sh',
      'curl -s localhost:3000/result/$ID',
      '```',
      '',
      '<!-- not run: Docker -->',
      '```sh',
      'docker compose up',
      '```',
      '',
      '```sh',
      'npx orchestrator tools',
      '```',
      '',
      '```http',
      'GET /tools',
      '```',
      '',
      '<!-- not run: an example host -->',
      '```sh',
      'curl -s https://orchestrator.example.com/tools',
      '```',
      '',
      '```sh',
      "curl -s 'localhost:3000/result/4f1c…?wait=10'   # a prose comment",
      '# {"status": "completed", "steps": […, {"id": "b"}]}',
      '```',
    ].join('\n');
    const blocks = docBlocks('x.md', page);
    expect(blocks.map((block) => claimOf(block).kind)).toEqual(['unclaimed', 'unclaimed', 'not run', 'unclaimed', 'unclaimed', 'not run', 'runs']);
    expect(blocks.map(callsTheApi)).toEqual([true, true, false, true, true, true, true]);
    expect(claimOf(blocks[1]!)).toMatchObject({ why: expect.stringContaining('expands $') });
    expect(claimOf(blocks[3]!)).toMatchObject({ why: expect.stringContaining('runs the CLI') });
    // A test named as running a block must exist and name the page.
    expect(claimOf({ ...blocks[3]!, marker: 'run by: test/client/no-such.test.ts' }).kind).toBe('unclaimed');
    expect(claimOf({ ...blocks[3]!, marker: 'run by: test/client/cli-docs.test.ts' }).kind).toBe('unclaimed');
    expect(claimOf({ ...blocks[3]!, page: 'docs/client-and-cli.md', marker: 'run by: test/client/cli-docs.test.ts' }).kind).toBe('run by');
  });

  it('reads commands and the answers their comments show as a reader would, and tells an answer that differs', () => {
    const block = `curl -s -X POST localhost:3000/workflows -H 'content-type: application/json' -d '{\n  "name": "a b",\n  "steps": []\n}'\n# 201 {"name":"a b","version":1,…}\n\ncurl -s "localhost:3000/result/<task_id>?wait=10"   # "result": {"message": "Hello, Ada!"}`;
    expect(shellCommands(block).map((command) => command.words)).toEqual([
      ['curl', '-s', '-X', 'POST', 'localhost:3000/workflows', '-H', 'content-type: application/json', '-d', '{\n  "name": "a b",\n  "steps": []\n}'],
      ['curl', '-s', 'localhost:3000/result/<task_id>?wait=10'],
    ]);
    const [define, read] = curlCalls(block);
    expect(define).toMatchObject({ method: 'POST', path: '/workflows', headers: { 'content-type': 'application/json' }, shown: { status: 201 } });
    expect(JSON.parse(define!.body!)).toEqual({ name: 'a b', steps: [] });
    expect(read).toMatchObject({ method: 'GET', path: '/result/<task_id>?wait=10' });
    expect(mismatches({ result: { message: 'Hello, Ada!', extra: 1 }, status: 'completed' }, read!.shown.pattern!)).toEqual([]);
    expect(mismatches({ result: { message: 'Hello, Bob!' } }, read!.shown.pattern!)).toEqual(['$.result.message: "Hello, Bob!", shown as "Hello, Ada!"']);
    const steps = parseShown('{"steps": […, {"id": "b", "duration_ms": 3}, …], "list": [1, 2], "at": "x…z"}').pattern!;
    expect(mismatches({ steps: [{ id: 'a' }, { id: 'b', duration_ms: 41 }], list: [1, 2], at: 'xyz' }, steps)).toEqual([]);
    expect(mismatches({ steps: [{ id: 'a' }], list: [1, 2, 3], at: 'y' }, steps)).toHaveLength(3);
    expect(() => parseShown('{"a": 1} and more')).toThrow(/more after the value/);
  });

  // One after another: side by side took as long on a busy machine (one worker serves them all), and
  // the saga's check below counts the booking service's calls.
  it.for(running.map((block) => ({ where: `${block.page}:${block.line}`, block })))(
    'runs $where as written: every answer a success with what its comment shows',
    async ({ block }, { expect }) => {
      const { records, problems } = await runBlock(block.text, { baseUrl: h.url, hosts: { '127.0.0.1:4010': `127.0.0.1:${bookings.port}` } });
      expect(problems).toEqual([]);
      expect(records).toHaveLength(curlCalls(block.text).length);
      if (block.text.includes('"name": "book_room"')) {
        // What the saga's prose says: "When confirm fails: charge.compensate (refund) runs, then reserve.compensate (cancel)".
        const calls = bookings.requests.filter((request) => request.path !== '/openapi.json').map((request) => `${request.method} ${request.path}`);
        expect(calls).toEqual(['POST /reservations', 'POST /charges', 'POST /confirm', 'POST /charges/c2/refund', 'DELETE /reservations/r1']);
      }
    },
  );
});
