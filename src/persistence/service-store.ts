import type { Prisma } from './database.js';

/** A registered service as stored: no secret, only the name of one (`auth.secret_ref`). */
export interface ServiceRecord {
  name: string;
  baseUrl: string;
  openapiUrl: string | null;
  headers: Record<string, string>;
  auth: { type: 'bearer' | 'basic' | 'header'; secret_ref: string; header_name?: string } | null;
  healthPath: string | null;
  timeoutMs: number;
  circuit: Record<string, number> | null;
  concurrency: number | null;
  rateLimit: { per_minute?: number; per_second?: number } | null;
  documentVersion: number;
  health: ServiceHealth | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface ServiceHealth {
  status: 'up' | 'down';
  checked_at: string;
  http_status?: number;
  error?: string;
}

/**
 * A service's OpenAPI document, as JSON text: it is parsed off the main thread
 * (src/services/document-reader.ts), since a large one would hold up the process's event loop.
 */
export interface ServiceDocumentRecord {
  version: number;
  sha256: string;
  text: string;
  fetchedAt: Date;
}

/** A fetched document to store: its JSON text and the SHA-256 of it. */
export interface FetchedDocument {
  sha256: string;
  text: string;
}

export type ServiceFields = Omit<ServiceRecord, 'name' | 'documentVersion' | 'health' | 'createdAt' | 'updatedAt'>;

interface Row {
  name: string;
  base_url: string;
  openapi_url: string | null;
  headers: Record<string, string>;
  auth: ServiceRecord['auth'];
  health_path: string | null;
  timeout_ms: number;
  circuit: ServiceRecord['circuit'];
  concurrency: number | null;
  rate_limit: ServiceRecord['rateLimit'];
  document_version: number;
  health: ServiceHealth | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `name, base_url, openapi_url, headers, auth, health_path, timeout_ms, circuit, concurrency, rate_limit, document_version, health, created_at, updated_at`;

function fromRow(row: Row): ServiceRecord {
  return {
    name: row.name,
    baseUrl: row.base_url,
    openapiUrl: row.openapi_url,
    headers: row.headers ?? {},
    auth: row.auth,
    healthPath: row.health_path,
    timeoutMs: row.timeout_ms,
    circuit: row.circuit,
    concurrency: row.concurrency,
    rateLimit: row.rate_limit,
    documentVersion: row.document_version,
    health: row.health,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

const json = (value: unknown) => (value === null || value === undefined ? null : JSON.stringify(value));

/** A service's settings as columns: what create inserts and update sets, each bound once, in this order. */
const SETTINGS: readonly { column: string; cast?: '::jsonb'; value: (fields: ServiceFields) => unknown }[] = [
  { column: 'base_url', value: (fields) => fields.baseUrl },
  { column: 'openapi_url', value: (fields) => fields.openapiUrl },
  { column: 'headers', cast: '::jsonb', value: (fields) => JSON.stringify(fields.headers) },
  { column: 'auth', cast: '::jsonb', value: (fields) => json(fields.auth) },
  { column: 'health_path', value: (fields) => fields.healthPath },
  { column: 'timeout_ms', value: (fields) => fields.timeoutMs },
  { column: 'circuit', cast: '::jsonb', value: (fields) => json(fields.circuit) },
  { column: 'concurrency', value: (fields) => fields.concurrency },
  { column: 'rate_limit', cast: '::jsonb', value: (fields) => json(fields.rateLimit) },
];
/** `$2`, `$3`…: the settings follow the name ($1); the document version comes after them. */
const settingParam = (index: number) => `$${index + 2}${SETTINGS[index]!.cast ?? ''}`;
const VERSION_PARAM = `$${SETTINGS.length + 2}`;
/** The parameters of INSERT_SERVICE and UPDATE_SERVICE: the name, the settings, the document version. */
const serviceParams = (name: string, fields: ServiceFields, version: number) => [name, ...SETTINGS.map((setting) => setting.value(fields)), version];
const INSERT_SERVICE = `INSERT INTO services (name, ${SETTINGS.map((setting) => setting.column).join(', ')}, document_version)
  VALUES ($1, ${SETTINGS.map((_, index) => settingParam(index)).join(', ')}, ${VERSION_PARAM})
  ON CONFLICT (name) DO NOTHING RETURNING ${COLUMNS}`;
const UPDATE_SERVICE = `UPDATE services SET ${SETTINGS.map((setting, index) => `${setting.column} = ${settingParam(index)}`).join(', ')},
  document_version = ${VERSION_PARAM}, updated_at = clock_timestamp()
  WHERE name = $1 RETURNING ${COLUMNS}`;

/** The service registry's rows (services) and their OpenAPI documents by version (service_documents). */
export class ServiceStore {
  constructor(private readonly prisma: Prisma) {}

  async list(): Promise<ServiceRecord[]> {
    return (await this.prisma.$queryRawUnsafe<Row[]>(`SELECT ${COLUMNS} FROM services ORDER BY name`)).map(fromRow);
  }

  async get(name: string): Promise<ServiceRecord | undefined> {
    const [row] = await this.prisma.$queryRawUnsafe<Row[]>(`SELECT ${COLUMNS} FROM services WHERE name = $1`, name);
    return row ? fromRow(row) : undefined;
  }

  /** Each service's name and when it last changed: what a reload compares. */
  async versions(): Promise<Map<string, number>> {
    const rows = await this.prisma.$queryRawUnsafe<{ name: string; updated_at: Date }[]>(`SELECT name, updated_at FROM services`);
    return new Map(rows.map((row) => [row.name, row.updated_at.getTime()]));
  }

  /**
   * Inserts a service with its first document (version 1 when there is one), or answers
   * undefined when the name is taken.
   */
  async create(name: string, fields: ServiceFields, document?: FetchedDocument): Promise<ServiceRecord | undefined> {
    return this.prisma.$transaction(async (tx) => {
      const [row] = await tx.$queryRawUnsafe<Row[]>(INSERT_SERVICE, ...serviceParams(name, fields, document ? 1 : 0));
      if (!row) return undefined;
      if (document) {
        await tx.$executeRawUnsafe(`DELETE FROM service_documents WHERE service = $1`, name);
        await tx.$executeRawUnsafe(
          `INSERT INTO service_documents (service, version, sha256, document) VALUES ($1, 1, $2, $3::jsonb)`,
          name,
          document.sha256,
          document.text,
        );
      }
      return fromRow(row);
    });
  }

  /** Changes a service's settings and, given one, stores its next document version. */
  async update(name: string, fields: ServiceFields, document?: FetchedDocument): Promise<ServiceRecord | undefined> {
    return this.prisma.$transaction(async (tx) => {
      const [current] = await tx.$queryRawUnsafe<{ document_version: number }[]>(`SELECT document_version FROM services WHERE name = $1 FOR UPDATE`, name);
      if (!current) return undefined;
      const version = document ? current.document_version + 1 : current.document_version;
      if (document) {
        await tx.$executeRawUnsafe(
          `INSERT INTO service_documents (service, version, sha256, document) VALUES ($1, $2, $3, $4::jsonb)`,
          name,
          version,
          document.sha256,
          document.text,
        );
      }
      const [row] = await tx.$queryRawUnsafe<Row[]>(UPDATE_SERVICE, ...serviceParams(name, fields, version));
      return row ? fromRow(row) : undefined;
    });
  }

  async delete(name: string): Promise<boolean> {
    return this.prisma.$transaction(async (tx) => {
      const deleted = await tx.$executeRawUnsafe(`DELETE FROM services WHERE name = $1`, name);
      await tx.$executeRawUnsafe(`DELETE FROM service_documents WHERE service = $1`, name);
      return deleted > 0;
    });
  }

  /** The service's document at `version` (its current one: ServiceRecord.documentVersion). */
  async document(name: string, version: number): Promise<ServiceDocumentRecord | undefined> {
    const [row] = await this.prisma.$queryRawUnsafe<{ version: number; sha256: string; text: string; fetched_at: Date }[]>(
      `SELECT version, sha256, document::text AS text, fetched_at FROM service_documents WHERE service = $1 AND version = $2`,
      name,
      version,
    );
    return row ? { version: row.version, sha256: row.sha256, text: row.text, fetchedAt: row.fetched_at } : undefined;
  }

  /** Records a health check; does not count as a change of the service (updated_at stays). */
  async setHealth(name: string, health: ServiceHealth): Promise<void> {
    await this.prisma.$executeRawUnsafe(`UPDATE services SET health = $2::jsonb WHERE name = $1`, name, JSON.stringify(health));
  }
}
