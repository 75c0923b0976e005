/** The OpenAPI tags of the compatibility routes: each seed's own shapes, translated onto this service's. */
export const SEED_001_TAG = 'Compatibility: seed 001';
export const SEED_003_TAG = 'Compatibility: seed 003';

export const COMPAT_TAGS = [
  {
    name: SEED_001_TAG,
    description:
      "Seed 001's workflow format and endpoints, translated onto this service's workflows, tasks, services and dead letters (docs/compat/seed-001.md). Nothing here is implemented twice: each route calls what the native one calls.",
  },
  {
    name: SEED_003_TAG,
    description: "Seed 003's sessions: a session is a task, its actions are cancel, retry and signals (docs/compat/seed-003.md).",
  },
];
