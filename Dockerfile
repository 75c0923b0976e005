# One image for both processes:
#   API     docker run -p 127.0.0.1:3000:3000 orchestrator                            (the default CMD)
#   worker  docker run orchestrator node --enable-source-maps dist/workers/main.js
#   CLI     docker run --rm -e ORCHESTRATOR_URL -e ORCHESTRATOR_API_KEY orchestrator node dist/client/cli.js tasks
# Configuration comes from the environment: see .env.template. NODE_ENV is production here, so
# the API refuses to start without API_KEYS (or API_KEYS_FILE) unless AUTH_DISABLED=true. Each
# process creates its database if missing and applies migrations and the database's functions on
# start, so no separate migration step is needed.
#
# Your own tools run in an image of your own, not this one: a project with @orchestrator/worker
# (examples/worker-app) needs only Node and its dependencies, and REDIS_URL, ORCHESTRATOR_URL and
# a worker key (API_KEYS=worker:KEY) at run time, never DATABASE_URL:
#   FROM node:22-bookworm-slim
#   WORKDIR /app
#   COPY package.json package-lock.json ./
#   RUN npm ci --omit=dev
#   COPY . .
#   USER node
#   CMD ["node", "index.js"]

# ---- build: every dependency, the Prisma client, the compiled JavaScript -----------------------
# A current LTS Node (22). The code also runs on Node 20.19 or newer (package.json "engines").
FROM node:22-bookworm-slim AS build
WORKDIR /app

# Only what `npm ci` and its postinstall need, so this layer stays cached until the dependencies
# or the schema change. postinstall runs scripts/prisma-generate.mjs, the same path as on every
# other machine: it reads prisma.config.ts and prisma/schema.prisma and writes
# src/generated/prisma. Generating needs no engine, and the script points
# PRISMA_SCHEMA_ENGINE_BINARY at an existing file so the build works without binaries.prisma.sh
# (the engine download that @prisma/engines attempts on install fails silently there).
# client/package.json and workers/sdk/package.json: the client and the worker SDK are workspaces of
# the root package, which npm ci installs too.
# Of prisma/, only the schema: editing a migration or a function must not reinstall everything.
COPY package.json package-lock.json prisma.config.ts ./
COPY client/package.json ./client/
COPY workers/sdk/package.json ./workers/sdk/
COPY scripts ./scripts
COPY prisma/schema.prisma ./prisma/
RUN npm ci --no-audit --no-fund && npm cache clean --force

# The sources last: editing code does not reinstall dependencies. .dockerignore keeps
# src/generated and dist out, so neither a stale local client nor a stale build gets in.
# tsc compiles src/ (the generated client included), workers/ and client/ to dist/, and Vite
# builds the console (src/console) into dist/console (scripts/build.mjs).
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY workers ./workers
COPY client ./client
RUN npm run build

# ---- example-worker: a user's worker image (examples/worker-app), for compose's user-worker -------
# What a user's own image holds: Node, the app and its dependencies, @orchestrator/worker among
# them. Here the package is the one this build packs (users install it from their registry), so
# the example always runs against the SDK of the same commit. Built only when asked for
# (`--target example-worker`; compose's `user-worker` profile); the default target is the runtime.
FROM build AS sdk-pack
RUN mkdir /sdk && cd workers/sdk && npm pack --pack-destination /sdk

FROM node:22-bookworm-slim AS example-worker
WORKDIR /app
ENV NODE_ENV=production
COPY examples/worker-app/package.json ./
COPY --from=sdk-pack /sdk /sdk
# The dependency pointed at the packed file, as test/worker/worker-package.test.ts does.
RUN npm pkg set "dependencies.@orchestrator/worker=file:$(ls /sdk/orchestrator-worker-*.tgz)" \
  && npm install --omit=dev --no-audit --no-fund && npm cache clean --force
COPY examples/worker-app/index.js ./
USER node
CMD ["node", "index.js"]

# ---- runtime: compiled JavaScript and production dependencies only -----------------------------
FROM node:22-bookworm-slim AS runtime
WORKDIR /app
ENV NODE_ENV=production

# Production dependencies, installed before the code so this layer is cached across code changes.
# --omit=optional as well: @prisma/client names prisma and typescript as optional peers, which
# would otherwise bring the whole Prisma CLI (about 250 MB) into a production install; the only
# other optional packages are msgpackr's native accelerator, which msgpackr does without, and
# pg-cloudflare. --ignore-scripts: the client is generated in the build stage; nothing here needs
# an install script. What the generated client needs at run time (@prisma/client's runtime,
# @prisma/adapter-pg, pg) are regular dependencies.
COPY package.json package-lock.json ./
COPY client/package.json ./client/
COPY workers/sdk/package.json ./workers/sdk/
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force

# The compiled service (the console's files in dist/console), and the migrations and functions every process applies on start
# (src/persistence/migrate.ts reads them from prisma/ beside package.json). Files stay owned by root and read-only to the
# service: it never writes under /app.
COPY --from=build /app/dist ./dist
COPY prisma/migrations ./prisma/migrations
COPY prisma/functions ./prisma/functions

# The image's unprivileged user (uid 1000).
USER node

EXPOSE 3000

# Liveness: /health answers 200 while the process serves HTTP (dependencies are reported in the
# body, not in the status). Slim images have no curl, so node does the request. The start period
# covers the database migration every process runs on start.
# The worker runs no HTTP server: docker-compose.yml disables this check for it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then(r => process.exit(r.ok ? 0 : 1)).catch(() => process.exit(1))"]

# node itself is PID 1 (not npm, which spawns a child), so SIGTERM from `docker stop` reaches the
# service's own handler and it shuts down gracefully. Source maps point stack traces at the
# TypeScript lines.
CMD ["node", "--enable-source-maps", "dist/src/api/main.js"]
