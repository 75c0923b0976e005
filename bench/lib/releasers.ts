import { coerceError } from './util.js';

interface Releaser {
  label: string;
  release: () => Promise<void> | void;
}

/**
 * Everything the bench starts registers how to undo it here; `releaseAll` undoes it in reverse
 * order (last started, first stopped), also after a failure or Ctrl-C. A failing release is
 * reported and the others still run.
 */
export class Releasers {
  private stack: Releaser[] = [];

  /** Registers a release; the returned function runs it now (once) and unregisters it. */
  add(label: string, release: () => Promise<void> | void): () => Promise<void> {
    const entry: Releaser = { label, release };
    this.stack.push(entry);
    return async () => {
      const index = this.stack.indexOf(entry);
      if (index === -1) return;
      this.stack.splice(index, 1);
      await entry.release();
    };
  }

  async releaseAll(): Promise<void> {
    while (this.stack.length > 0) {
      const entry = this.stack.pop()!;
      try {
        await entry.release();
      } catch (error) {
        process.stderr.write(`bench: cleanup of ${entry.label} failed: ${coerceError(error).message}\n`);
      }
    }
  }
}
