import { defineConfig } from 'prisma/config';

// Used by the Prisma CLI only (generate, and `migrate deploy` on machines that can run it).
// The service itself connects through @prisma/adapter-pg with DATABASE_URL from src/lib/config.ts.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/orchestrator' },
});
