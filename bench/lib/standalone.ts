import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, sleep } from './util.js';

/**
 * The frame of a bench of its own (bench/loop.ts, bench/storm.ts): `npm start`'s build, then
 * `runs` runs of `oneRun`, each with a log folder of its own (bench/results/logs/<name>-<stamp>/run-N),
 * `pauseMs` apart; the results are written to bench/results/<name>-<stamp>.json, whose path it returns.
 */
export async function runStandalone<T>(
  name: string,
  runs: number,
  oneRun: (run: number, logDir: string) => Promise<T>,
  pauseMs = 0,
): Promise<{ results: T[]; out: string }> {
  const build = spawnSync(process.execPath, ['scripts/build.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
  if (build.status !== 0) process.exit(1);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const results: T[] = [];
  for (let run = 1; run <= runs; run += 1) {
    const logDir = path.join(REPO_ROOT, 'bench/results/logs', `${name}-${stamp}`, `run-${run}`);
    mkdirSync(logDir, { recursive: true });
    results.push(await oneRun(run, logDir));
    if (pauseMs > 0 && run < runs) await sleep(pauseMs);
  }
  const out = path.join(REPO_ROOT, 'bench/results', `${name}-${stamp}.json`);
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  return { results, out };
}
