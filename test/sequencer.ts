import { BaseSequencer, type TestSpecification } from 'vitest/node';

const CHAOS = /[/\\]test[/\\]chaos[/\\]/;

/**
 * vitest's order (projects one after another; in each, the files that failed or took longest
 * last time first, or the largest first on a fresh clone), with each project's chaos files spread
 * evenly through it, the first of them first. A chaos file is mostly waiting (a worker killed
 * every few seconds, Redis or PostgreSQL away for a few seconds, a drain), so it runs beside the
 * other files; spread out, two of them rarely run at once, and no chaos file is left to run
 * alone at the end. Each chaos file has its own database, queue prefix, processes, Redis server
 * or proxy, so they need no machine of their own; their bounds are relative to what the same run
 * measured when healthy, or seconds wide.
 */
export default class ChaosSpreadSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    // vitest's order keeps each project's files together: spread within each.
    const byProject = new Map<string, TestSpecification[]>();
    for (const file of sorted) {
      const files = byProject.get(file.project.name) ?? [];
      files.push(file);
      byProject.set(file.project.name, files);
    }
    return [...byProject.values()].flatMap((files) => spread(files));
  }
}

/** The project's files with its chaos files at every (n / chaos)th place, from the first on. */
export function spread<File extends { moduleId: string }>(files: File[]): File[] {
  const chaos = files.filter((file) => CHAOS.test(file.moduleId));
  if (chaos.length === 0) return files;
  const rest = files.filter((file) => !CHAOS.test(file.moduleId));
  const every = files.length / chaos.length;
  const out: File[] = [];
  let taken = 0;
  chaos.forEach((file, index) => {
    // The index-th chaos file goes to place round(index * every): the other files before it are those up to there.
    const before = Math.round(index * every) - index;
    out.push(...rest.slice(taken, before), file);
    taken = before;
  });
  return [...out, ...rest.slice(taken)];
}
