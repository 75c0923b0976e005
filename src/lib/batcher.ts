/**
 * Group commit: callers add items one at a time and each gets its own result, while the
 * items are written together. One flush runs at a time; items that arrive meanwhile wait and
 * go out together in the next one. Under light load a flush holds one item and adds no delay
 * (it starts on the next turn of the event loop); under heavy load batches grow by themselves.
 */
export interface BatcherOptions {
  /** Most items per flush. */
  maxSize: number;
}

/** Returned by a flush in place of a result: that one item fails, the others succeed. */
export class ItemFailure {
  constructor(readonly error: unknown) {}
}

interface Pending<In, Out> {
  item: In;
  resolve(value: Out): void;
  reject(error: unknown): void;
}

export class Batcher<In, Out> {
  private queue: Pending<In, Out>[] = [];
  private flushing = false;
  private scheduled = false;
  private idleWaiters: (() => void)[] = [];

  /**
   * `flush` returns one result per item, in order (an ItemFailure fails that item alone);
   * if it throws, every item of the batch fails.
   */
  constructor(
    private readonly flush: (items: In[]) => Promise<(Out | ItemFailure)[]>,
    private readonly options: BatcherOptions,
  ) {}

  add(item: In): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Items added but not yet written. */
  get pending(): number {
    return this.queue.length;
  }

  /** Resolves when nothing is queued or being written. */
  async idle(): Promise<void> {
    if (!this.flushing && this.queue.length === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.flushing || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  private async run(): Promise<void> {
    if (this.flushing) return;
    const batch = this.queue.splice(0, this.options.maxSize);
    if (batch.length === 0) {
      for (const wake of this.idleWaiters.splice(0)) wake();
      return;
    }
    this.flushing = true;
    try {
      const results = await this.flush(batch.map((entry) => entry.item));
      batch.forEach((entry, index) => {
        const result = results[index];
        if (result instanceof ItemFailure) entry.reject(result.error);
        else entry.resolve(result as Out);
      });
    } catch (error) {
      for (const entry of batch) entry.reject(error);
    } finally {
      this.flushing = false;
      if (this.queue.length > 0) this.schedule();
      else for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }
}
