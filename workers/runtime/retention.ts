import type { Sql } from '../../src/ledger/sql.js';
import type { Logger } from '../../src/lib/logger.js';
import { type Maintenance, maintainPartitions, type RetentionPolicy } from '../../src/persistence/partitions.js';

/**
 * Runs the partition maintenance (src/persistence/partitions.ts) when a worker starts and then
 * every `intervalMs`. Every worker ticks; the one that takes the PostgreSQL lock does the work.
 */
export class RetentionTimer {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;

  constructor(private readonly options: RetentionPolicy & { sql: Sql; logger: Logger; intervalMs: number; now?: () => Date }) {}

  start(): void {
    const tick = () => {
      this.running = this.run()
        .catch((error: Error) => this.options.logger.warn('partition maintenance failed', { error: error.message }))
        .finally(() => {
          this.timer = setTimeout(tick, this.options.intervalMs);
          this.timer.unref();
        });
    };
    tick();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.running;
  }

  run(): Promise<Maintenance> {
    const { sql, logger, retentionDays, aheadDays, now = () => new Date() } = this.options;
    return maintainPartitions(sql, now(), { retentionDays, aheadDays }, logger);
  }
}
