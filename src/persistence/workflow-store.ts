import type { WorkflowDefinition } from '../engine/workflow-definition.js';
import type { Prisma } from './database.js';

interface WorkflowRow {
  name: string;
  version: number;
  description: string | null;
  definition: WorkflowDefinition;
  created_at: Date;
  archived_at: Date | null;
  display_name: string | null;
  tags: string[] | null;
  created_by: string | null;
  posted_form: unknown;
}

const COLUMNS = 'name, version, description, definition, created_at, archived_at, display_name, tags, created_by, posted_form';

// Definitions are written as JSON text: any key a client used (even "__proto__") is stored as
// it is, where an object handed to the ORM would be copied by assignment. The creator is the
// key that stored the name's first version, whoever stores the later ones.
const INSERT = `INSERT INTO workflows (name, version, description, definition, display_name, tags, created_by, posted_form)
  VALUES ($1, $2, $3, $4::jsonb, $5, $6::text[],
          COALESCE((SELECT created_by FROM workflows WHERE name = $1 ORDER BY version LIMIT 1), $7), $8::jsonb)
  RETURNING ${COLUMNS}`;

function fromRow(row: WorkflowRow): StoredWorkflow {
  return {
    name: row.name,
    version: row.version,
    description: row.description,
    definition: row.definition,
    createdAt: row.created_at,
    archivedAt: row.archived_at,
    displayName: row.display_name,
    tags: row.tags ?? [],
    createdBy: row.created_by,
    postedForm: row.posted_form ?? null,
  };
}

/** What a version carries besides its definition. */
export interface WorkflowMetadata {
  /** The name as posted, when it is not an id (its slug is the id). */
  displayName?: string | null;
  tags?: string[];
  /** The key that stores it (recorded for the name's first version only). */
  createdBy?: string | null;
  /** The definition as posted in another format (seed 001's actions). */
  postedForm?: unknown;
}

export interface StoredWorkflow {
  name: string;
  version: number;
  description: string | null;
  definition: WorkflowDefinition;
  createdAt: Date;
  archivedAt: Date | null;
  displayName: string | null;
  tags: string[];
  /** The key that stored the first version; null without authentication. */
  createdBy: string | null;
  postedForm: unknown;
}

/** One version of a workflow, without its definition. */
export interface WorkflowVersion {
  version: number;
  description: string | null;
  createdAt: Date;
  archivedAt: Date | null;
}

/**
 * Workflow definitions, versioned: posting a name again stores the next version; archiving
 * hides the name but keeps every version, and tasks keep the version they started with.
 * The newest version of a name is its current one.
 */
export class WorkflowStore {
  constructor(private readonly prisma: Prisma) {}

  /** Stores the next version of `definition.name`. Writers of one name queue up on a lock, so each gets its own version. */
  async create(definition: WorkflowDefinition, metadata: WorkflowMetadata = {}): Promise<StoredWorkflow> {
    const row = await this.prisma.$transaction(async (tx) => {
      await tx.$executeRawUnsafe(`SELECT pg_advisory_xact_lock(hashtext('workflow:' || $1))`, definition.name);
      const latest = await tx.workflow.findFirst({ where: { name: definition.name }, orderBy: { version: 'desc' }, select: { version: true } });
      const [row] = await tx.$queryRawUnsafe<WorkflowRow[]>(
        INSERT,
        definition.name,
        (latest?.version ?? 0) + 1,
        definition.description ?? null,
        JSON.stringify(definition),
        metadata.displayName ?? null,
        metadata.tags ?? [],
        metadata.createdBy || null,
        metadata.postedForm === undefined || metadata.postedForm === null ? null : JSON.stringify(metadata.postedForm),
      );
      return row!;
    });
    return fromRow(row);
  }

  /**
   * Stores version 1 unless the name has any version (archived ones included). Processes that
   * start together (two APIs on a new database) race here: the loser's insert does nothing.
   */
  async createIfAbsent(definition: WorkflowDefinition): Promise<boolean> {
    if (await this.prisma.workflow.findFirst({ where: { name: definition.name }, select: { version: true } })) return false;
    const inserted = await this.prisma.$queryRawUnsafe<unknown[]>(
      `INSERT INTO workflows (name, version, description, definition) VALUES ($1, 1, $2, $3::jsonb) ON CONFLICT (name, version) DO NOTHING RETURNING name`,
      definition.name,
      definition.description ?? null,
      JSON.stringify(definition),
    );
    return inserted.length > 0;
  }

  /** The current version, or a given one; archived names are not current. */
  async get(name: string, version?: number): Promise<StoredWorkflow | undefined> {
    const row =
      version === undefined
        ? await this.prisma.workflow.findFirst({ where: { name }, orderBy: { version: 'desc' } })
        : await this.prisma.workflow.findUnique({ where: { name_version: { name, version } } });
    if (!row || (version === undefined && row.archivedAt)) return undefined;
    return { ...(row as unknown as StoredWorkflow), tags: row.tags ?? [] };
  }

  /** The active workflow whose current version has this display name; undefined when none has. */
  async findByDisplayName(displayName: string): Promise<string | undefined> {
    const rows = await this.prisma.$queryRawUnsafe<{ name: string }[]>(
      `SELECT name FROM (SELECT DISTINCT ON (name) name, display_name, archived_at FROM workflows ORDER BY name, version DESC) current
        WHERE display_name = $1 AND archived_at IS NULL ORDER BY name LIMIT 1`,
      displayName,
    );
    return rows[0]?.name;
  }

  /** Changes what is not part of a definition, on one stored version: no new version. */
  async rename(name: string, version: number, displayName: string | null): Promise<void> {
    await this.prisma.workflow.updateMany({ where: { name, version }, data: { displayName } });
  }

  /** The current version of every name that is not archived (with `archived`, of every archived one instead). */
  async list(options: { archived?: boolean } = {}): Promise<StoredWorkflow[]> {
    const rows = await this.prisma.$queryRawUnsafe<WorkflowRow[]>(`SELECT DISTINCT ON (name) ${COLUMNS} FROM workflows ORDER BY name, version DESC`);
    return rows.filter((row) => (row.archived_at !== null) === (options.archived ?? false)).map(fromRow);
  }

  async names(): Promise<string[]> {
    return (await this.list()).map((workflow) => workflow.name);
  }

  versions(name: string): Promise<WorkflowVersion[]> {
    return this.prisma.workflow.findMany({
      where: { name },
      orderBy: { version: 'desc' },
      select: { version: true, description: true, createdAt: true, archivedAt: true },
    });
  }

  /** Archives every version of the name. Returns how many versions it has, 0 when unknown. */
  async archive(name: string): Promise<{ versions: number; archived: boolean }> {
    const versions = await this.prisma.workflow.count({ where: { name } });
    if (versions === 0) return { versions, archived: false };
    const updated = await this.prisma.workflow.updateMany({ where: { name, archivedAt: null }, data: { archivedAt: new Date() } });
    return { versions, archived: updated.count > 0 };
  }
}
