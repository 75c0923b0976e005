import { type ComponentType, type LazyExoticComponent, lazy } from 'react';

/**
 * The console's pages, in the navigation's order. A page is one line here plus its own file under
 * pages/; each is loaded when first visited (its own chunk), so the first load carries only the
 * shell and the page it opens.
 */
export interface PageEntry {
  /** Below /console/, in react-router's form (`tasks/:taskId`). */
  path: string;
  /** Its label in the navigation; pages reached by a link only (a task's detail) have none. */
  nav?: string;
  component: LazyExoticComponent<ComponentType>;
}

export const PAGES: readonly PageEntry[] = [
  { path: 'tasks', nav: 'Tasks', component: lazy(() => import('./pages/tasks.tsx')) },
  { path: 'tasks/:taskId', component: lazy(() => import('./pages/task-detail.tsx')) },
  { path: 'submit', nav: 'Submit', component: lazy(() => import('./pages/submit.tsx')) },
  { path: 'workflows', nav: 'Workflows', component: lazy(() => import('./pages/workflows.tsx')) },
  { path: 'waiting', nav: 'Waiting', component: lazy(() => import('./pages/waiting.tsx')) },
  { path: 'dead-letters', nav: 'Dead letters', component: lazy(() => import('./pages/dead-letters.tsx')) },
  { path: 'schedules', nav: 'Schedules', component: lazy(() => import('./pages/schedules.tsx')) },
  { path: 'services', nav: 'Services', component: lazy(() => import('./pages/services.tsx')) },
  { path: 'workers', nav: 'Workers', component: lazy(() => import('./pages/workers.tsx')) },
  { path: 'overview', nav: 'Overview', component: lazy(() => import('./pages/overview.tsx')) },
];

/** Where /console/ itself leads. */
export const HOME_PATH = 'tasks';
