# One image for both processes:
#   API     docker run -p 3000:3000 orchestrator                       (the default CMD)
#   worker  docker run orchestrator node --import tsx workers/main.ts
# Configuration comes from the environment: see .env.template. Each process creates its
# database if missing and applies migrations on start, so no separate migration step is needed.

# ---- build: install every dependency and generate the Prisma client ----------------------------
# Prisma 7 needs Node 20.19 or newer (package.json "engines"); both stages use the same base.
FROM node:20.19-bookworm-slim AS build
WORKDIR /app

# Only what `npm ci` and its postinstall need, so this layer stays cached until the dependencies
# or the schema change. postinstall runs scripts/prisma-generate.mjs, the same path as on every
# other machine: it reads prisma.config.ts and prisma/schema.prisma and writes
# src/generated/prisma. Generating needs no engine, and the script points
# PRISMA_SCHEMA_ENGINE_BINARY at an existing file so the build works without binaries.prisma.sh
# (the engine download that @prisma/engines attempts on install fails silently there).
# Dev dependencies are installed on purpose: prisma generates the client and tsx runs the service.
COPY package.json package-lock.json prisma.config.ts ./
COPY scripts ./scripts
COPY prisma ./prisma
RUN npm ci --no-audit --no-fund && npm cache clean --force

# The sources last: editing code does not reinstall dependencies. .dockerignore keeps
# src/generated out, so the client generated above is not replaced by a stale local copy.
COPY tsconfig.json ./
COPY src ./src
COPY workers ./workers

# ---- runtime -----------------------------------------------------------------------------------
FROM node:20.19-bookworm-slim AS runtime
WORKDIR /app
ENV NODE_ENV=production

# The whole node_modules, dev dependencies included. The service runs its TypeScript through tsx,
# which is a devDependency, so `npm prune --omit=dev` would leave an image that cannot start.
# (Moving tsx to "dependencies", or compiling to JavaScript, would allow pruning.) What the
# runtime stage still drops is the npm cache and anything else the build stage left behind.
# Files stay owned by root and read-only to the service: it never writes under /app.
# prisma.config.ts is for the Prisma CLI only (e.g. `npx prisma migrate status` from inside the
# container); the service reads DATABASE_URL from its own config.
COPY --from=build /app/package.json /app/package-lock.json /app/tsconfig.json /app/prisma.config.ts ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/prisma ./prisma
COPY --from=build /app/src ./src
COPY --from=build /app/workers ./workers

# The image's unprivileged user (uid 1000). tsx caches compiled files under /tmp, which it can write.
USER node

EXPOSE 3000

# Liveness: /health answers 200 while the process serves HTTP (dependencies are reported in the
# body, not in the status). Slim images have no curl, so node does the request. The start period
# covers the database migration every process runs on start.
# The worker runs no HTTP server: docker-compose.yml disables this check for it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then(r => process.exit(r.ok ? 0 : 1)).catch(() => process.exit(1))"]

# node itself is PID 1 (not npm, not the tsx CLI, which both spawn a child), so SIGTERM from
# `docker stop` reaches the service's own handler and it shuts down gracefully.
CMD ["node", "--import", "tsx", "src/api/main.ts"]
