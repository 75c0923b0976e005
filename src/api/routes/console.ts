import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router } from 'express';
import { z } from 'zod';
import { API_KEY_SCOPES } from '../../lib/config.js';
import { ACCESS, type Access } from '../access.js';
import { errorBody } from '../http.js';
import * as ex from '../openapi-examples.js';
import { plainRoute, type Route, route } from '../route.js';

export const CONSOLE_PATH = '/console';
/** dist/console beside the compiled API (dist/src/api/routes/); run through tsx, a folder that does not exist. */
export const DEFAULT_CONSOLE_DIR = fileURLToPath(new URL('../../../console/', import.meta.url));

/** What /console answers before `npm run build` (or `npm start`) has built the console into CONSOLE_DIR. */
const NOT_BUILT = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Orchestrator console not built</title></head>
<body>
<h1>The console is not built</h1>
<p>Run <code>npm run build</code> (or <code>npm start</code>, which builds first): it writes the console to <code>dist/console</code>, which this server serves.</p>
</body>
</html>
`;

/**
 * The console's files (built by Vite, scripts/build-console.mjs): hashed assets cached for a
 * year, any other path under /console answered with index.html, so a reload of a console route
 * (`/console/tasks/…`) works. The directory is looked up per request, so a build made after the
 * start is served without a restart.
 */
function consoleApp(dir: string): Router {
  const router = Router();
  const index = join(dir, 'index.html');
  router.use('/assets', express.static(join(dir, 'assets'), { immutable: true, maxAge: '365d', index: false }), (req, res) => {
    // An asset of another build (a page loaded before a deploy): not the page in its place.
    res.status(404).json(errorBody('not_found', `no console asset ${req.path}: reload the page`));
  });
  // No redirect of /console to /console/: the page is the same at both.
  router.use(express.static(dir, { index: false, maxAge: 0, redirect: false }));
  router.get('/{*rest}', (_req, res, next) => {
    if (!existsSync(index)) {
      res.status(503).type('html').send(NOT_BUILT);
      return;
    }
    // The page names the current assets: never served stale.
    res.setHeader('cache-control', 'no-cache');
    res.sendFile(index, (error) => error && next(error));
  });
  return router;
}

const whoamiSchema = z
  .object({
    key_id: z.string().nullable().meta({ description: "The API key's id (its name or a hash prefix); null when authentication is off." }),
    scope: z.enum(API_KEY_SCOPES).nullable().meta({ description: "The key's scope; null when authentication is off (everything is allowed)." }),
    access: z
      .array(z.enum(Object.keys(ACCESS) as [Access, ...Access[]]))
      .meta({ description: 'What this caller may do (src/api/access.ts): `submit`, `tasks`, `manageTasks`, `catalog`, `monitor`, `admin`, `work`.' }),
  })
  .meta({ id: 'WhoAmI' });

/** The console (a browser UI) and what it asks first: who the caller is and what it may do. */
export const CONSOLE_ROUTES: Route[] = [
  route({
    method: 'get',
    path: '/whoami',
    operationId: 'whoAmI',
    access: 'catalog',
    summary: 'The calling key: its id, scope and what it may do',
    description: 'The console reads it to offer only the actions the key may take (a read key sees no buttons).',
    tags: ['system'],
    responses: { 200: { description: 'The caller.', body: whoamiSchema, examples: ex.whoamiExamples } },
    handler: async ({ req }) => {
      const scope = req.apiKeyScope ?? null;
      const access = (Object.keys(ACCESS) as Access[]).filter((name) => scope === null || (ACCESS[name] as readonly string[]).includes(scope));
      return { status: 200, body: { key_id: req.apiKeyId ?? null, scope, access } };
    },
  }),
  plainRoute({
    method: 'get',
    path: CONSOLE_PATH,
    operationId: 'consoleUi',
    access: 'catalog',
    summary: 'The web console: tasks, their graphs and timelines, submission',
    description:
      'A browser UI (a single-page app); its assets live under `/console/assets/` and every other path below `/console/` answers its page. Not a stable interface for programs: it uses the public API.',
    tags: ['system'],
    browser: true,
    mount: true,
    responses: {
      200: { description: 'The page.', mediaType: 'text/html', body: z.string(), examples: ex.consolePageExamples },
      503: { description: 'The console is not built (`npm run build` builds it into `dist/console`).', mediaType: 'text/html', body: z.string() },
    },
    serve: ({ consoleDir }) => consoleApp(consoleDir),
  }),
];
