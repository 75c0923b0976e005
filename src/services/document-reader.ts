import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { DocumentReading, DocumentRequest } from './openapi-document.js';

export interface DocumentReaderOptions {
  /** A reading that takes longer is given up (its thread is ended): the document is too complex. @defaultValue 20000 */
  timeoutMs?: number;
  /** Heap of the reader's thread, in MB: a document that needs more is too complex. @defaultValue 512 */
  maxHeapMb?: number;
}

/**
 * Reads services' OpenAPI documents (src/services/openapi-document.ts) on a thread of its own,
 * one at a time, so that parsing and validating megabytes never holds up the process's event
 * loop (the API keeps answering /health while a document is read). The thread is started when
 * first needed (or by warm()), kept for the next document, and ended by stop(); one whose reading
 * took too long or too much memory is ended, and the next reading starts another.
 */
export class DocumentReader {
  private worker: Worker | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (reading: DocumentReading) => void; reject: (error: Error) => void }>();
  private readonly timeoutMs: number;
  private readonly maxHeapMb: number;

  constructor(options: DocumentReaderOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 20_000;
    this.maxHeapMb = options.maxHeapMb ?? 512;
  }

  /** Starts the thread now and has it compile what it needs, so that the first document does not wait for either. */
  warm(): void {
    this.thread().postMessage({ id: -1 });
  }

  read(request: DocumentRequest): Promise<DocumentReading> {
    const reading = this.queue.then(() => this.readNow(request));
    this.queue = reading.catch(() => undefined);
    return reading;
  }

  async stop(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const resourceLimits = { maxOldGenerationSizeMb: this.maxHeapMb };
    const entry = new URL(fileURLToPath(import.meta.url).endsWith('.ts') ? './document-worker.ts' : './document-worker.js', import.meta.url);
    // From the sources (tests, npm run dev) the thread loads TypeScript through tsx, as its process does.
    const worker = entry.pathname.endsWith('.ts')
      ? new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(entry.href)}); });`, {
          eval: true,
          resourceLimits,
        })
      : new Worker(entry, { resourceLimits });
    worker.unref();
    worker.on('message', ({ id, reading, failure }: { id: number; reading?: DocumentReading; failure?: string }) => {
      const waiting = this.pending.get(id);
      this.pending.delete(id);
      if (reading) waiting?.resolve(reading);
      else waiting?.reject(new Error(`the document reader failed: ${failure}`));
    });
    const ended = (why: DocumentReading) => {
      if (this.worker === worker) this.worker = undefined;
      for (const [id, waiting] of this.pending) {
        this.pending.delete(id);
        waiting.resolve(why);
      }
    };
    worker.on('error', (error: Error & { code?: string }) =>
      ended(
        error.code === 'ERR_WORKER_OUT_OF_MEMORY'
          ? tooComplex(`reading it needs more than ${this.maxHeapMb} MB of memory`)
          : tooComplex(`the document reader stopped: ${error.message}`),
      ),
    );
    worker.on('exit', () => ended(tooComplex('the document reader stopped')));
    this.worker = worker;
    return worker;
  }

  private readNow(request: DocumentRequest): Promise<DocumentReading> {
    const worker = this.thread();
    const id = this.nextId++;
    return new Promise<DocumentReading>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(tooComplex(`reading it took longer than ${this.timeoutMs} ms`));
        if (this.worker === worker) this.worker = undefined;
        void worker.terminate();
      }, this.timeoutMs);
      timer.unref();
      const settle =
        <T>(then: (value: T) => void) =>
        (value: T) => {
          clearTimeout(timer);
          then(value);
        };
      this.pending.set(id, { resolve: settle(resolve), reject: settle(reject) });
      worker.postMessage({ id, request });
    });
  }
}

function tooComplex(message: string): DocumentReading {
  return {
    ok: false,
    code: 'document_too_complex',
    message: `the OpenAPI document is too complex: ${message}`,
    problems: [{ path: 'openapi_document', message }],
  };
}
