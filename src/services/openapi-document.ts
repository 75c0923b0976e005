import { Validator } from '@seriousme/openapi-schema-validator';
import type { Problem } from '../lib/errors.js';
import { DocumentTooComplexError, operationsOf, type SchemaBudget, type ServiceOperation } from '../tools/openapi-operations.js';

/** What reading a service's OpenAPI document needs: its JSON text, and the bounds it must keep. */
export interface DocumentRequest {
  service: string;
  text: string;
  /** SERVICE_MAX_OPERATIONS */
  maxOperations: number;
  budget: SchemaBudget;
  /** A stored document, validated when it was stored: it is not validated again (the validator's schemas take a second to compile). */
  stored?: boolean;
}

/** A document read: its operations as tools, and those left out; or why it cannot be used. */
export type DocumentReading =
  | { ok: true; operations: ServiceOperation[]; skipped: { where: string; reason: string }[] }
  | { ok: false; code: 'invalid_openapi_document' | 'document_too_complex'; message: string; problems: Problem[] };

const validator = new Validator();

/** `#/components/schemas/L3/properties/p2` -> `openapi_document.components.schemas.L3.properties.p2`. */
function documentPath(pointer: string): string {
  const segments = pointer
    .replace(/^#\/?/, '')
    .split('/')
    .filter((segment) => segment !== '')
    .map((segment) => segment.replace(/~1/g, '/').replace(/~0/g, '~'));
  return ['openapi_document', ...segments].join('.');
}

/**
 * Parses, validates and bounds a document, and makes its operations. Runs on the document
 * reader's thread (src/services/document-reader.ts): a document of megabytes takes hundreds of
 * milliseconds to parse and validate, which no API process may spend on its event loop.
 */
export async function readOpenApiDocument(request: DocumentRequest): Promise<DocumentReading> {
  const invalid = (message: string, problems: Problem[]): DocumentReading => ({ ok: false, code: 'invalid_openapi_document', message, problems });
  let document: unknown;
  try {
    document = JSON.parse(request.text);
  } catch {
    return invalid('the OpenAPI document is not JSON', [{ path: 'openapi_url', message: 'serve the document as JSON' }]);
  }
  if (document === null || typeof document !== 'object' || Array.isArray(document)) {
    return invalid('the OpenAPI document is invalid', [{ path: 'openapi_url', message: 'the document is not a JSON object' }]);
  }
  const version = (document as { openapi?: unknown }).openapi;
  if (typeof version !== 'string' || !/^3\.[01]\.\d+$/.test(version)) {
    return invalid('the OpenAPI document is invalid', [{ path: 'openapi', message: 'only OpenAPI 3.0 and 3.1 documents are read' }]);
  }
  const result = request.stored ? { valid: true as const, errors: [] } : await validator.validate(document as Record<string, unknown>);
  if (!result.valid) {
    const errors = Array.isArray(result.errors) ? result.errors : [{ instancePath: '', message: String(result.errors) }];
    return invalid(
      'the OpenAPI document is invalid',
      errors.slice(0, 20).map((error) => ({ path: `openapi_document${error.instancePath.replace(/\//g, '.')}`, message: error.message ?? 'invalid' })),
    );
  }
  const paths = (document as { paths?: Record<string, unknown> }).paths ?? {};
  let count = 0;
  for (const item of Object.values(paths))
    if (item && typeof item === 'object') count += Object.keys(item).filter((key) => /^(get|put|post|delete|options|head|patch|trace)$/.test(key)).length;
  if (count > request.maxOperations) {
    return invalid('the OpenAPI document is invalid', [
      { path: 'openapi_document.paths', message: `${count} operations, more than ${request.maxOperations} (SERVICE_MAX_OPERATIONS)` },
    ]);
  }
  try {
    const { operations, skipped } = operationsOf(request.service, document as Record<string, unknown>, request.budget);
    return { ok: true, operations, skipped };
  } catch (error) {
    if (!(error instanceof DocumentTooComplexError)) throw error;
    return {
      ok: false,
      code: 'document_too_complex',
      message: `the OpenAPI document is too complex: ${error.message}`,
      problems: [{ path: documentPath(error.where), message: error.message }],
    };
  }
}
