import { createRequire } from 'node:module';
import { Router } from 'express';
import swaggerUi from 'swagger-ui-express';
import { z } from 'zod';
import * as ex from '../openapi-examples.js';
import { text } from '../replies.js';
import { plainRoute, type Route } from '../route.js';

const SPEC_URL = '/openapi.json';

/**
 * The interactive documentation (Swagger UI) at /docs/, reading /openapi.json. Its scripts and
 * styles come from swagger-ui-dist through this server, so it works without internet access.
 */
function docsUi(specUrl: string): Router {
  const router = Router();
  // swagger-ui-dist's own demo page and its initializer point at the Petstore: not ours.
  router.get(['/index.html', '/swagger-initializer.js'], (_req, _res, next) => next('router'));
  // "Try it out" sends X-Requested-With, so a POST without a body (cancel, retry) passes the CSRF rule.
  const swaggerOptions = {
    requestInterceptor: (request: { headers: Record<string, string> }) => {
      request.headers['X-Requested-With'] = 'swagger-ui';
      return request;
    },
  };
  router.use(swaggerUi.serveFiles(undefined, { swaggerUrl: specUrl, swaggerOptions }));
  router.get('/', swaggerUi.setup(undefined, { swaggerUrl: specUrl, customSiteTitle: 'Orchestrator API', swaggerOptions }));
  return router;
}

/** ReDoc's standalone bundle: React and ReDoc in one script, no other file to load. */
const REDOC_BUNDLE = createRequire(import.meta.url).resolve('redoc/bundles/redoc.standalone.js');

/**
 * The reference documentation (ReDoc) at /redoc, reading /openapi.json. The page loads nothing
 * but the bundle, from this server (so it works without internet access), and has no inline
 * script: the bundle renders every `<redoc spec-url>` element by itself.
 */
function redocUi(specUrl: string): Router {
  const router = Router();
  const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Orchestrator API</title>
</head>
<body>
<redoc spec-url="${specUrl}"></redoc>
<script src="/redoc/redoc.standalone.js"></script>
</body>
</html>
`;
  router.get('/', (_req, res) => {
    res.type('html').send(page);
  });
  router.get('/redoc.standalone.js', (_req, res, next) => {
    res.sendFile(REDOC_BUNDLE, { maxAge: '1d' }, (error) => error && next(error));
  });
  return router;
}

/** The API description, generated from the routes (src/api/openapi.ts), and its UIs. */
export const DOCS_ROUTES: Route[] = [
  plainRoute({
    method: 'get',
    path: SPEC_URL,
    operationId: 'openApiDocument',
    access: 'catalog',
    summary: 'This API description (OpenAPI 3.1)',
    tags: ['system'],
    responses: { 200: { description: 'The OpenAPI document.', body: z.record(z.string(), z.unknown()), examples: ex.openApiExamples } },
    serve:
      ({ openApiJson }) =>
      (_req, res) => {
        res.type('application/json').send(openApiJson());
      },
  }),
  plainRoute({
    method: 'get',
    path: '/docs',
    operationId: 'apiDocsUi',
    access: 'catalog',
    summary: 'Interactive API documentation (Swagger UI)',
    description: 'The page is served at `/docs/`, its scripts and styles under it; it reads /openapi.json.',
    tags: ['system'],
    browser: true,
    mount: true,
    responses: {
      200: { description: 'The page (at `/docs/`).', mediaType: 'text/html', body: z.string(), examples: ex.swaggerPageExamples },
      301: {
        description: '`/docs` redirects to `/docs/`, so the relative URLs of the page resolve.',
        headers: { Location: { description: '`/docs/`', schema: text } },
      },
    },
    serve: () => docsUi(SPEC_URL),
  }),
  plainRoute({
    method: 'get',
    path: '/redoc',
    operationId: 'apiReferenceUi',
    access: 'catalog',
    summary: 'API reference documentation (ReDoc)',
    description:
      "Reads /openapi.json. Its script, ReDoc's standalone bundle, is served by this server at `/redoc/redoc.standalone.js`: the page loads nothing from elsewhere.",
    tags: ['system'],
    browser: true,
    mount: true,
    responses: { 200: { description: 'The page.', mediaType: 'text/html', body: z.string(), examples: ex.redocPageExamples } },
    serve: () => redocUi(SPEC_URL),
  }),
];
