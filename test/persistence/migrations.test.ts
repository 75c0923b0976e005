import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import wasm from '@prisma/prisma-schema-wasm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/logger.js';
import { type Database, dropDatabase, ensureDatabase, openDatabase } from '../../src/persistence/database.js';
import { MIGRATIONS_DIR, MigrationError, migrate } from '../../src/persistence/migrate.js';
import { databaseUrl } from '../helpers/env.js';
import { uniqueName } from '../helpers/harness.js';

const SCHEMA_FILE = new URL('../../prisma/schema.prisma', import.meta.url);

interface DmmfField {
  name: string;
  dbName?: string | null;
  kind: 'scalar' | 'enum' | 'object' | 'unsupported';
  isList: boolean;
  isRequired: boolean;
  isId: boolean;
  isUnique: boolean;
  hasDefaultValue: boolean;
  default?: unknown;
  type: string;
  nativeType?: [string, string[]] | null;
  relationFromFields?: string[];
  relationToFields?: string[];
  relationOnDelete?: string;
}
interface DmmfModel {
  name: string;
  dbName: string | null;
  fields: DmmfField[];
  primaryKey: { fields: string[] } | null;
}
interface DmmfIndex {
  model: string;
  type: 'id' | 'unique' | 'normal' | 'fulltext';
  fields: { name: string }[];
  dbName?: string | null;
}
interface Dmmf {
  datamodel: {
    models: DmmfModel[];
    enums: { name: string; dbName: string | null; values: { name: string; dbName: string | null }[] }[];
    indexes: DmmfIndex[];
  };
}

const tableOf = (model: DmmfModel) => model.dbName ?? model.name;
const columnOf = (field: DmmfField) => field.dbName ?? field.name;
const scalars = (model: DmmfModel) => model.fields.filter((field) => field.kind === 'scalar' || field.kind === 'enum');

/** The PostgreSQL column type Prisma gives a field (information_schema `data_type`, `udt_name`). */
function expectedType(field: DmmfField, enums: Set<string>): { dataType: string; udt: string } {
  if (enums.has(field.type)) return { dataType: 'USER-DEFINED', udt: field.type };
  const native = field.nativeType?.[0];
  const byType: Record<string, [string, string]> = {
    String: native === 'Uuid' ? ['uuid', 'uuid'] : ['text', 'text'],
    Int: ['integer', 'int4'],
    BigInt: ['bigint', 'int8'],
    Float: ['double precision', 'float8'],
    Decimal: ['numeric', 'numeric'],
    Boolean: ['boolean', 'bool'],
    Json: ['jsonb', 'jsonb'],
    Bytes: ['bytea', 'bytea'],
    DateTime: native === 'Timestamptz' ? ['timestamp with time zone', 'timestamptz'] : ['timestamp without time zone', 'timestamp'],
  };
  const found = byType[field.type];
  if (!found) throw new Error(`no expected column type for ${field.name}: ${field.type}`);
  return { dataType: found[0], udt: found[1] };
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

async function migrationDirectories(): Promise<string[]> {
  return (await readdir(MIGRATIONS_DIR, { withFileTypes: true }))
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
}

describe('migrate()', () => {
  const created: string[] = [];
  async function freshDatabase(): Promise<string> {
    const url = databaseUrl(uniqueName('orch_mig'));
    created.push(url);
    expect(await ensureDatabase(url)).toBe(true);
    return url;
  }
  afterAll(async () => {
    for (const url of created) await dropDatabase(url);
  });

  it('records every migration in _prisma_migrations the way Prisma does', async () => {
    const url = await freshDatabase();
    const directories = await migrationDirectories();
    expect(directories.length).toBeGreaterThan(0);

    const applied = await migrate(url, silentLogger());
    expect(applied).toEqual(directories);

    const rows = await query<{
      id: string;
      checksum: string;
      finished_at: Date | null;
      migration_name: string;
      logs: string | null;
      rolled_back_at: Date | null;
      started_at: Date;
      applied_steps_count: number;
    }>(url, 'SELECT * FROM "_prisma_migrations" ORDER BY migration_name');
    expect(rows.map((row) => row.migration_name)).toEqual(directories);
    for (const row of rows) {
      const sql = await readFile(path.join(MIGRATIONS_DIR, row.migration_name, 'migration.sql'));
      expect(row.checksum).toBe(createHash('sha256').update(sql).digest('hex'));
      expect(row.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(row.finished_at).toBeInstanceOf(Date);
      expect(row.finished_at!.getTime()).toBeGreaterThanOrEqual(row.started_at.getTime());
      expect(row.rolled_back_at).toBeNull();
      expect(row.applied_steps_count).toBe(1);
    }

    // The table itself has Prisma's shape.
    const columns = await query<{ column_name: string; data_type: string; character_maximum_length: number | null; is_nullable: string }>(
      url,
      `SELECT column_name, data_type, character_maximum_length, is_nullable FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = '_prisma_migrations' ORDER BY ordinal_position`,
    );
    expect(columns).toEqual([
      { column_name: 'id', data_type: 'character varying', character_maximum_length: 36, is_nullable: 'NO' },
      { column_name: 'checksum', data_type: 'character varying', character_maximum_length: 64, is_nullable: 'NO' },
      { column_name: 'finished_at', data_type: 'timestamp with time zone', character_maximum_length: null, is_nullable: 'YES' },
      { column_name: 'migration_name', data_type: 'character varying', character_maximum_length: 255, is_nullable: 'NO' },
      { column_name: 'logs', data_type: 'text', character_maximum_length: null, is_nullable: 'YES' },
      { column_name: 'rolled_back_at', data_type: 'timestamp with time zone', character_maximum_length: null, is_nullable: 'YES' },
      { column_name: 'started_at', data_type: 'timestamp with time zone', character_maximum_length: null, is_nullable: 'NO' },
      { column_name: 'applied_steps_count', data_type: 'integer', character_maximum_length: null, is_nullable: 'NO' },
    ]);

    // A second run has nothing to do.
    expect(await migrate(url, silentLogger())).toEqual([]);
    expect(await query(url, 'SELECT 1 FROM "_prisma_migrations"')).toHaveLength(directories.length);
  });

  it('applies each migration exactly once when several processes migrate at the same time', async () => {
    const url = await freshDatabase();
    const directories = await migrationDirectories();
    const runs = await Promise.all([1, 2, 3, 4].map(() => migrate(url, silentLogger())));
    expect(runs.flat().sort()).toEqual(directories);
    // One caller did all the work; the others found it done once they got the lock.
    expect(runs.filter((names) => names.length > 0)).toHaveLength(1);
    const rows = await query<{ migration_name: string }>(url, 'SELECT migration_name FROM "_prisma_migrations" ORDER BY migration_name');
    expect(rows.map((row) => row.migration_name)).toEqual(directories);
  });

  describe('with a migrations directory of its own', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'orch-migrations-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    async function addMigration(name: string, sql: string) {
      await mkdir(path.join(dir, name));
      await writeFile(path.join(dir, name, 'migration.sql'), sql);
    }

    it('applies in name order, rolls a failing migration back entirely and stops there', async () => {
      const url = await freshDatabase();
      await addMigration('20260101000000_first', 'CREATE TABLE first_table (id int PRIMARY KEY);');
      await addMigration('20260102000000_broken', 'CREATE TABLE half_done (id int); SELECT * FROM no_such_table;');
      await addMigration('20260103000000_after', 'CREATE TABLE after_table (id int);');
      await expect(migrate(url, silentLogger(), { migrations: dir, functions: null })).rejects.toThrow(MigrationError);
      await expect(migrate(url, silentLogger(), { migrations: dir, functions: null })).rejects.toThrow(/20260102000000_broken failed: .*no_such_table/);
      const tables = await query<{ table_name: string }>(
        url,
        `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
      );
      expect(tables.map((row) => row.table_name)).toEqual(['_prisma_migrations', 'first_table']);
      const rows = await query<{ migration_name: string }>(url, 'SELECT migration_name FROM "_prisma_migrations"');
      expect(rows.map((row) => row.migration_name)).toEqual(['20260101000000_first']);
      await rm(path.join(dir, '20260102000000_broken'), { recursive: true });
    });

    it('refuses to go on while a migration is recorded as started but not finished (as Prisma does)', async () => {
      const url = await freshDatabase();
      await migrate(url, silentLogger(), { migrations: dir, functions: null });
      await query(url, `INSERT INTO "_prisma_migrations" (id, checksum, migration_name) VALUES ($1, 'x', '20260104000000_interrupted')`, [randomUUID()]);
      await expect(migrate(url, silentLogger(), { migrations: dir, functions: null })).rejects.toThrow(/20260104000000_interrupted failed earlier/);
    });
  });
});

describe('the migrated database matches prisma/schema.prisma', () => {
  let url: string;
  let dmmf: Dmmf;
  let enumNames: Set<string>;
  let db: Database;

  beforeAll(async () => {
    url = databaseUrl(uniqueName('orch_schema'));
    await ensureDatabase(url);
    await migrate(url, silentLogger());
    const prismaSchema = await readFile(SCHEMA_FILE, 'utf8');
    dmmf = JSON.parse(wasm.get_dmmf(JSON.stringify({ prismaSchema }))) as Dmmf;
    enumNames = new Set(dmmf.datamodel.enums.map((entry) => entry.name));
    db = openDatabase(url, 2, silentLogger());
  });
  afterAll(async () => {
    await db?.close();
    if (url) await dropDatabase(url);
  });

  // Partitions are PostgreSQL's business, not Prisma's (it cannot declare them): the tables and
  // indexes compared are the partitioned parents.
  it('has a table for every model, and no other table', async () => {
    const tables = await query<{ table_name: string }>(
      url,
      `SELECT c.relname AS table_name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition`,
    );
    const expected = dmmf.datamodel.models.map(tableOf);
    expect(expected.length).toBeGreaterThan(0);
    expect(tables.map((row) => row.table_name).sort()).toEqual([...expected, '_prisma_migrations'].sort());
  });

  it('has every scalar field as a column of a compatible type and nullability, and no extra column', async () => {
    const columns = await query<{
      table_name: string;
      column_name: string;
      data_type: string;
      udt_name: string;
      is_nullable: 'YES' | 'NO';
      datetime_precision: number | null;
      column_default: string | null;
    }>(
      url,
      `SELECT table_name, column_name, data_type, udt_name, is_nullable, datetime_precision, column_default FROM information_schema.columns WHERE table_schema = 'public'`,
    );
    for (const model of dmmf.datamodel.models) {
      const table = tableOf(model);
      const actual = columns.filter((column) => column.table_name === table);
      const fields = scalars(model);
      expect(actual.map((column) => column.column_name).sort(), `columns of ${table}`).toEqual(fields.map(columnOf).sort());
      for (const field of fields) {
        const column = actual.find((candidate) => candidate.column_name === columnOf(field))!;
        const where = `${model.name}.${field.name} (${table}.${column.column_name})`;
        const type = expectedType(field, enumNames);
        if (field.isList) {
          expect(column.data_type, where).toBe('ARRAY');
          expect(column.udt_name, where).toBe(`_${type.udt}`);
        } else {
          expect(column.data_type, where).toBe(type.dataType);
          expect(column.udt_name, where).toBe(type.udt);
        }
        // Prisma makes required scalars NOT NULL; its scalar lists are nullable columns.
        if (!field.isList) expect(column.is_nullable, where).toBe(field.isRequired ? 'NO' : 'YES');
        if (field.type === 'DateTime') expect(column.datetime_precision, where).toBe(Number(field.nativeType?.[1][0] ?? 3));
        // A database-side default for every @default that is not computed by the client.
        const fn = (field.default as { name?: string } | undefined)?.name;
        if (field.hasDefaultValue && !['uuid', 'cuid', 'nanoid', 'ulid'].includes(fn ?? '')) {
          expect(column.column_default, where).not.toBeNull();
          if (fn === 'now') expect(column.column_default, where).toBe('CURRENT_TIMESTAMP');
          // The default as a literal (a JSON default such as [] has regex syntax in it).
          else if (fn === undefined)
            expect(column.column_default, where).toMatch(new RegExp(`^'?${String(field.default).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}'?(::.*)?$`));
        }
      }
    }
  });

  it('has every enum with exactly its values, in order', async () => {
    const rows = await query<{ typname: string; values: string[] }>(
      url,
      `SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)::text[] AS values
         FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' GROUP BY t.typname`,
    );
    const actual = Object.fromEntries(rows.map((row) => [row.typname, row.values]));
    const expected = Object.fromEntries(
      dmmf.datamodel.enums.map((entry) => [entry.dbName ?? entry.name, entry.values.map((value) => value.dbName ?? value.name)]),
    );
    expect(actual).toEqual(expected);
  });

  it('has every primary key, unique index and index of the schema, and no other', async () => {
    const rows = await query<{ table: string; index: string; primary: boolean; unique: boolean; columns: string[] }>(
      url,
      `SELECT t.relname AS table, i.relname AS index, ix.indisprimary AS primary, ix.indisunique AS unique,
              array_agg(a.attname ORDER BY k.ord)::text[] AS columns
         FROM pg_index ix
         JOIN pg_class t ON t.oid = ix.indrelid
         JOIN pg_class i ON i.oid = ix.indexrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        WHERE n.nspname = 'public' AND t.relname <> '_prisma_migrations' AND NOT t.relispartition
        GROUP BY 1, 2, 3, 4`,
    );
    const models = new Map(dmmf.datamodel.models.map((model) => [model.name, model]));
    const expected = dmmf.datamodel.indexes.map((index) => {
      const model = models.get(index.model)!;
      const table = tableOf(model);
      const columns = index.fields.map((entry) => columnOf(model.fields.find((field) => field.name === entry.name)!));
      // Prisma's default names, which `prisma migrate` compares against.
      const suffix = index.type === 'id' ? 'pkey' : index.type === 'unique' ? `${columns.join('_')}_key` : `${columns.join('_')}_idx`;
      return { table, index: index.dbName ?? `${table}_${suffix}`, primary: index.type === 'id', unique: index.type !== 'normal', columns };
    });
    const sort = (list: { table: string; index: string }[]) => [...list].sort((a, b) => `${a.table}.${a.index}`.localeCompare(`${b.table}.${b.index}`));
    expect(sort(rows)).toEqual(sort(expected));
  });

  // relationMode = "prisma": a day of tasks is dropped as a whole (src/persistence/partitions.ts),
  // and a foreign key referencing a partitioned table would make that a scan of the referencing
  // table. Prisma's client keeps the relations and their cascades; each one's columns lead an
  // index, so the client's lookups and cascades are index scans.
  it('has no foreign key, and an index led by the columns of every relation', async () => {
    expect(await readFile(SCHEMA_FILE, 'utf8')).toMatch(/relationMode\s*=\s*"prisma"/);
    const keys = await query(
      url,
      `SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = 'public'`,
    );
    expect(keys).toEqual([]);
    const indexes = await query<{ table: string; columns: string[] }>(
      url,
      `SELECT t.relname AS table, array_agg(a.attname ORDER BY k.ord)::text[] AS columns
         FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
         CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        WHERE n.nspname = 'public' AND NOT t.relispartition GROUP BY t.relname, ix.indexrelid`,
    );
    const relations = dmmf.datamodel.models.flatMap((model) =>
      model.fields
        .filter((field) => field.kind === 'object' && (field.relationFromFields?.length ?? 0) > 0)
        .map((field) => ({
          table: tableOf(model),
          columns: field.relationFromFields!.map((name) => columnOf(model.fields.find((candidate) => candidate.name === name)!)),
        })),
    );
    expect(relations.length).toBeGreaterThan(0);
    for (const relation of relations) {
      const led = indexes.some((index) => index.table === relation.table && relation.columns.every((column, position) => index.columns[position] === column));
      expect(led, `an index of ${relation.table} led by (${relation.columns.join(', ')})`).toBe(true);
    }
  });

  it('round-trips a row of every model through the Prisma client with every field set', async () => {
    const models = new Map(dmmf.datamodel.models.map((model) => [model.name, model]));
    const enums = new Map(dmmf.datamodel.enums.map((entry) => [entry.name, entry.values.map((value) => value.name)]));
    const createdRows = new Map<string, Record<string, unknown>>();
    const delegate = (model: DmmfModel) =>
      (db.prisma as unknown as Record<string, { create(args: unknown): Promise<unknown>; findUniqueOrThrow(args: unknown): Promise<Record<string, unknown>> }>)[
        model.name[0]!.toLowerCase() + model.name.slice(1)
      ]!;

    const valueFor = (model: DmmfModel, field: DmmfField): unknown => {
      const one = (): unknown => {
        if (field.kind === 'enum') return enums.get(field.type)!.at(-1); // not the default
        switch (field.type) {
          case 'String':
            return field.nativeType?.[0] === 'Uuid' ? randomUUID() : `${model.name}.${field.name} ✓`;
          case 'Int':
            return 7;
          case 'BigInt':
            return 7n;
          case 'Json':
            return { nested: { list: [1, 'two', null], flag: true }, [field.name]: 1 };
          case 'DateTime':
            return new Date('2026-03-04T05:06:07.089Z');
          case 'Boolean':
            return true;
          default:
            throw new Error(`no sample value for ${model.name}.${field.name}: ${field.type}`);
        }
      };
      return field.isList ? [one(), one()] : one();
    };

    // Parents first: a model whose relations all point at models already created.
    const pending = [...dmmf.datamodel.models];
    while (pending.length > 0) {
      const index = pending.findIndex((model) =>
        model.fields.every((field) => field.kind !== 'object' || !field.relationFromFields?.length || createdRows.has(field.type)),
      );
      expect(index, `models with unresolvable relations: ${pending.map((model) => model.name).join(', ')}`).toBeGreaterThanOrEqual(0);
      const model = pending.splice(index, 1)[0]!;
      const data: Record<string, unknown> = {};
      for (const field of scalars(model)) data[field.name] = valueFor(model, field);
      for (const field of model.fields.filter((candidate) => candidate.kind === 'object' && candidate.relationFromFields?.length)) {
        const parent = createdRows.get(field.type)!;
        field.relationFromFields!.forEach((name, position) => {
          data[name] = parent[field.relationToFields![position]!];
        });
      }
      await delegate(model).create({ data });

      const key = model.primaryKey
        ? { [model.primaryKey.fields.join('_')]: Object.fromEntries(model.primaryKey.fields.map((name) => [name, data[name]])) }
        : Object.fromEntries(model.fields.filter((field) => field.isId).map((field) => [field.name, data[field.name]]));
      const read = await delegate(model).findUniqueOrThrow({ where: key });
      const scalarsRead = Object.fromEntries(scalars(model).map((field) => [field.name, read[field.name]]));
      expect(scalarsRead, model.name).toEqual(data);
      createdRows.set(model.name, data);
    }
    expect([...createdRows.keys()].sort()).toEqual([...models.keys()].sort());
  });
});
