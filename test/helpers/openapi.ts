import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsPlugin from 'ajv-formats';
import type { OpenApiDocument } from '../../src/api/openapi.js';

const addFormats = addFormatsPlugin as unknown as typeof addFormatsPlugin.default;

/** A JSON Pointer segment: `/result/{task_id}` -> `~1result~1{task_id}`. */
export const pointerSegment = (segment: string) => segment.replace(/~/g, '~0').replace(/\//g, '~1');

/**
 * Checks values against the schemas of an OpenAPI document, addressed by JSON Pointer into it
 * (`/components/schemas/TaskView`, `/paths/.../schema`). The whole document is one resource, so
 * the `#/components/schemas/...` references inside it resolve. Compiled schemas are kept.
 */
export class DocumentSchemas {
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true });
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(document: OpenApiDocument) {
    addFormats(this.ajv);
    this.ajv.addSchema(document, 'openapi.json');
  }

  /** Compiles the schema at `pointer` (throws when it does not compile). */
  validator(pointer: string): ValidateFunction {
    let validate = this.validators.get(pointer);
    if (!validate) {
      validate = this.ajv.compile({ $ref: `openapi.json#${pointer}` });
      this.validators.set(pointer, validate);
    }
    return validate;
  }

  /** What is wrong with `value` under the schema at `pointer`: one line per problem, none when it fits. */
  problems(pointer: string, value: unknown): string[] {
    const validate = this.validator(pointer);
    if (validate(value)) return [];
    return (validate.errors ?? []).map((error) => `${error.instancePath || '(body)'} ${error.message} ${JSON.stringify(error.params)}`);
  }
}
