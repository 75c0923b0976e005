/**
 * Group commit: callers add items one at a time and each gets its own result, while the
 * items are written together. One flush runs at a time; items that arrive meanwhile wait and
 * go out together in the next one. Under light load a flush holds one item and adds no delay
 * (it starts on the next turn of the event loop); under heavy load batches grow by themselves.
 */
export interface BatcherOptions {
  /** Most items per flush. */
  maxSize: number;
  /**
   * Flushes that may run at once. More than one suits a flush that is mostly waiting on a round
   * trip (an HTTP request): an item then leaves on the next turn of the event loop instead of
   * waiting for the flush before it, and the receiver batches again on its side. @defaultValue 1
   */
  maxInFlight?: number;
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
  private flushing = 0;
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
    if (this.flushing === 0 && this.queue.length === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private get full(): boolean {
    return this.flushing >= (this.options.maxInFlight ?? 1);
  }

  private schedule(): void {
    if (this.full || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  private async run(): Promise<void> {
    if (this.full) return;
    const batch = this.queue.splice(0, this.options.maxSize);
    if (batch.length === 0) {
      if (this.flushing === 0) for (const wake of this.idleWaiters.splice(0)) wake();
      return;
    }
    this.flushing += 1;
    // Room for another flush, and items left over (more than maxSize queued): they go now too.
    if (this.queue.length > 0) this.schedule();
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
      this.flushing -= 1;
      if (this.queue.length > 0) this.schedule();
      else if (this.flushing === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }
}
