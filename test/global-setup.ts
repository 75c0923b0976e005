import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { silentLogger } from '../src/lib/logger.js';
import { dropDatabase, ensureDatabase, withDatabase } from '../src/persistence/database.js';
import { migrate } from '../src/persistence/migrate.js';
import { databaseUrl, TEST_POSTGRES_URL, TEST_REDIS_URL } from './helpers/env.js';

/** The template of this run, shared by every project that uses this setup, and how many use it now. */
interface SharedTemplate {
  ready: Promise<string>;
  users: number;
}
const shared = globalThis as { orchestratorTestTemplate?: SharedTemplate };

/**
 * Once per run: checks that the real Redis and PostgreSQL answer, and builds a migrated
 * template database that every test file clones (CREATE DATABASE ... TEMPLATE), which is much
 * faster than migrating a database per file. The template's name is unique to this run, so
 * two runs on one machine do not collide. Every project lists this setup, and vitest runs the
 * projects' setups in one process: the first builds the template, the others take it, and the
 * last one done drops it (five projects migrated five templates, at once, at the start of CI).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  shared.orchestratorTestTemplate ??= { ready: buildTemplate(), users: 0 };
  const template = shared.orchestratorTestTemplate;
  template.users += 1;
  project.provide('templateDatabase', await template.ready);
  return async () => {
    template.users -= 1;
    if (template.users > 0) return;
    shared.orchestratorTestTemplate = undefined;
    await dropDatabase(databaseUrl(await template.ready)).catch(() => undefined);
  };
}

async function buildTemplate(): Promise<string> {
  const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    await redis.ping();
  } catch (error) {
    throw new Error(`tests need Redis at ${TEST_REDIS_URL}: ${(error as Error).message}`);
  } finally {
    redis.disconnect();
  }
  const probe = new pg.Client({ connectionString: withDatabase(TEST_POSTGRES_URL) });
  try {
    await probe.connect();
  } catch (error) {
    throw new Error(`tests need PostgreSQL at ${TEST_POSTGRES_URL}: ${(error as Error).message}`);
  } finally {
    await probe.end().catch(() => undefined);
  }
  const template = `orch_tpl_${randomBytes(4).toString('hex')}`;
  const url = databaseUrl(template);
  await ensureDatabase(url);
  await migrate(url, silentLogger());
  return template;
}
