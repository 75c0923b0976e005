// Import boundaries of src/ and workers/ (npm run lint:boundaries, run by .ci/run beside the typecheck).
//
// The layers, lowest first; a module may import its own layer and the ones below it, never one
// above (between folders of one layer, the no-folder-cycles rule keeps the imports one way):
//
//   base      src/lib         configuration, logger, errors, limits and shared helpers, no service state
//   engine    src/engine      the pure decider: plans, step inputs, transitions, task outputs, templates
//   sdk       src/tools       the tool SDK: what an adapter implements, and the registry
//   store     src/ledger, src/persistence, src/queue, src/observability
//   services  src/tasks, src/workflows, src/schedules, src/services (the registry of third-party services),
//             src/fleet (workers of users' own and their tools)
//   core      src/composition.ts: builds what the API and a worker both run on, once
//   edge      src/api, workers/ (the worker process and its runtime), which do not import each other
//   entry     src/main.ts, src/api/main.ts, workers/main.ts, src/bootstrap.ts
//
// The console (src/console) is a browser app beside the layers: it reaches the service only over
// HTTP, through the client package (@orchestrator/client), and no server code imports it.
//
// Beside the layers: the engine imports nothing but itself, the base modules it needs (src/lib's
// errors.ts and limits.ts), zod and the CEL evaluator of step conditions (@bufbuild/cel with the
// packages it is built on), and reaches no database, queue or HTTP code even indirectly; the adapters
// (workers/adapters) import only the tool SDK and src/lib, and only the worker's entry point imports
// them: nothing of src/ does, not even the API's entry (it learns the built-in tools as the built-in
// worker registers them, src/fleet), so the API and the tools ship apart.

/** @type {{ name: string; path: string | string[] }[]} */
const LAYERS = [
  { name: 'base', path: '^src/lib/' },
  { name: 'engine', path: '^src/engine/' },
  { name: 'sdk', path: '^src/tools/' },
  { name: 'store', path: '^src/(ledger|persistence|queue|observability)/' },
  { name: 'services', path: '^src/(tasks|workflows|schedules|services|fleet)/' },
  { name: 'core', path: '^src/composition\\.ts$' },
  { name: 'edge', path: ['^src/api/(?!main\\.ts$)', '^workers/(?!main\\.ts$|adapters/)'] },
  { name: 'entry', path: '^(src/(main\\.ts|api/main\\.ts|bootstrap\\.ts)|workers/main\\.ts)$' },
];

/** For each layer, a rule forbidding imports of every layer above it. */
const downwardOnly = LAYERS.slice(0, -1).map((layer, index) => ({
  name: `${layer.name}-imports-downward`,
  severity: 'error',
  comment: `${layer.name} may not import ${LAYERS.slice(index + 1)
    .map((above) => above.name)
    .join(', ')}: a layer imports only its own and the ones below it`,
  from: { path: layer.path },
  to: { path: LAYERS.slice(index + 1).flatMap((above) => above.path) },
}));

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    ...downwardOnly,
    {
      name: 'every-module-has-a-layer',
      severity: 'error',
      comment: 'a new folder or top-level file of src/ gets its place in LAYERS (or beside them) first',
      from: {
        path: '^(src|workers)/',
        pathNot: [...LAYERS.flatMap((layer) => layer.path), '^workers/adapters/', '^src/generated/', '^src/console/'],
      },
      to: {},
    },
    {
      name: 'server-without-console',
      severity: 'error',
      comment: 'the console is a browser app the API serves as files: no server or worker module imports it',
      from: { path: '^(src|workers)/', pathNot: '^src/console/' },
      to: { path: '^src/console/' },
    },
    {
      name: 'console-uses-the-public-api',
      severity: 'error',
      comment: 'the console imports its own files, packages and the client package by its name (@orchestrator/client), never the service\'s code',
      from: { path: '^src/console/' },
      to: { path: '^(src|workers|scripts|test|bench|prisma)/', pathNot: '^src/console/' },
    },
    {
      name: 'console-imports-the-client-by-name',
      severity: 'error',
      comment: 'the console imports the client as the package it is (@orchestrator/client), not by a relative path into client/',
      from: { path: '^src/console/' },
      to: { path: '^client/', dependencyTypesNot: ['aliased-workspace'] },
    },
    {
      name: 'workers-without-api',
      severity: 'error',
      comment: 'the worker runtime and the API are two processes on the same services: neither imports the other',
      from: { path: '^workers/' },
      to: { path: '^src/api/' },
    },
    {
      name: 'api-without-workers',
      severity: 'error',
      comment: 'the worker runtime and the API are two processes on the same services: neither imports the other',
      from: { path: '^src/api/' },
      to: { path: '^workers/' },
    },
    {
      name: 'src-without-adapters',
      severity: 'error',
      comment:
        'the API and the shared core know tools only as workers register them (src/fleet), the built-in ones too: no module of src/, entry points included, imports an adapter',
      from: { path: '^src/' },
      to: { path: '^workers/adapters/' },
    },
    {
      name: 'engine-is-pure',
      severity: 'error',
      comment:
        'the engine decides and does no I/O: it imports itself, errors.ts, limits.ts (and through it config.ts), json-schema.ts (Ajv on RE2, to check the schemas of wait steps), zod and the CEL packages (@bufbuild/cel, its AST types in cel-spec, protobuf, RE2), nothing else',
      from: { path: '^src/engine/' },
      to: {
        pathNot: ['^src/engine/', '^src/lib/(errors|limits|json-schema)\\.ts$', '^node_modules/(zod|ajv|fast-deep-equal|fast-uri|json-schema-traverse|require-from-string)/', '^node_modules/@bufbuild/(cel|cel-spec|protobuf|re2)/'],
      },
    },
    {
      name: 'engine-reaches-no-io',
      severity: 'error',
      comment: 'not even indirectly does the engine reach persistence, queues, the API, the workers, the Prisma client or a database, Redis or HTTP package',
      from: { path: '^src/engine/' },
      to: {
        path: [
          '^src/(persistence|ledger|queue|api|generated)/',
          '^workers/',
          '^node_modules/(prisma|@prisma/[^/]+|bullmq|ioredis|pg|express)/',
        ],
        reachable: true,
      },
    },
    {
      name: 'adapters-use-the-sdk',
      severity: 'error',
      comment:
        'an adapter imports the tool SDK (src/tools) and src/lib (outbound HTTP under the host allowlist) but not the configuration (its settings come through ctx.settings), packages and node: nothing else of the service; workers/adapters/index.ts, the registry, imports the adapters too',
      from: { path: '^workers/adapters/' },
      to: { path: '^(src|workers)/', pathNot: '^(src/tools/|src/lib/(?!config\\.ts$)|workers/adapters/)' },
    },
    {
      name: 'only-entry-points-choose-adapters',
      severity: 'error',
      comment: 'which adapters a process runs is the entry points\' choice; the layers below take a ToolRegistry',
      from: { path: '^(src|workers)/', pathNot: [LAYERS.at(-1).path, '^workers/adapters/'] },
      to: { path: '^workers/adapters/' },
    },
    {
      name: 'prisma-client-in-persistence',
      severity: 'error',
      comment: 'the generated Prisma client is persistence\'s business (and the task view\'s row types, and the fleet\'s two tables for now)',
      from: { path: '^(src|workers)/', pathNot: '^src/(persistence|tasks|generated|fleet)/' },
      to: { path: '^src/generated/' },
    },
    {
      name: 'no-folder-cycles',
      severity: 'error',
      comment:
        'two folders never import each other, directly or in a ring; src/ itself is left out, since its top-level files are the base modules and the entry points, which the layers keep apart',
      scope: 'folder',
      from: { path: '^(src|workers)/', pathNot: ['^src/generated/', '^src/?$'] },
      to: { circular: true, viaOnly: { pathNot: '^src/?$' } },
    },
    {
      name: 'no-module-cycles',
      severity: 'error',
      comment: 'no module imports itself through others: a cycle makes start-up order matter',
      from: { path: '^(src|workers)/', pathNot: '^src/generated/' },
      to: { circular: true },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      comment: 'an import that resolves to nothing would fail at run time',
      from: { path: '^(src|workers)/', pathNot: '^src/generated/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    // Type-only imports count: they tie a layer to the one it names all the same.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: ['node_modules', '^src/generated/'] },
    // The worker SDK's build output (npm pack writes it; test/worker/worker-package.test.ts packs
    // it during the test run): a bundle of the sources cruised already, not code of its own.
    exclude: { path: ['^workers/sdk/dist/'] },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      // orchestrator-source: the client package's TypeScript sources, as the console's build reads them.
      conditionNames: ['orchestrator-source', 'import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.tsx', '.js', '.json', '.d.ts'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
