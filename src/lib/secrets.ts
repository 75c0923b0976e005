import { readFileSync, statSync } from 'node:fs';

/**
 * Secrets that services' credentials name (`auth.secret_ref`), looked up when a call is made and
 * never stored: `SERVICE_SECRET_<REF>` in the environment (the ref upper-cased, other characters
 * than letters and digits as `_`), else the ref's key in the JSON object of SERVICE_SECRETS_FILE.
 * The file is read again when it changes, so a rotated secret takes effect without a restart.
 */
export const SECRET_REF = /^[A-Za-z][A-Za-z0-9_.-]{0,127}$/;

export function secretEnvName(ref: string): string {
  return `SERVICE_SECRET_${ref.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

export class Secrets {
  private file: { mtimeMs: number; values: Record<string, unknown> } | undefined;

  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly filePath: string | undefined,
  ) {}

  /** The secret's value, or undefined when neither the environment nor the file has it. */
  get(ref: string): string | undefined {
    const fromEnv = this.env[secretEnvName(ref)];
    if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
    const value = this.fileValues()[ref];
    return typeof value === 'string' && value !== '' ? value : undefined;
  }

  has(ref: string): boolean {
    return this.get(ref) !== undefined;
  }

  private fileValues(): Record<string, unknown> {
    if (!this.filePath) return {};
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.filePath).mtimeMs;
    } catch {
      return {};
    }
    if (this.file?.mtimeMs !== mtimeMs) {
      let values: Record<string, unknown> = {};
      try {
        const parsed: unknown = JSON.parse(readFileSync(this.filePath, 'utf8'));
        if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) values = parsed as Record<string, unknown>;
      } catch {
        // A file being rewritten, or not JSON: no secrets from it until it is whole again.
      }
      this.file = { mtimeMs, values };
    }
    return this.file.values;
  }
}
