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
];

/** Where /console/ itself leads. */
export const HOME_PATH = 'tasks';
