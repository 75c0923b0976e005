import { createRequire } from 'node:module';
import { Router, type RequestHandler } from 'express';
import swaggerUi from 'swagger-ui-express';
import { openApiJson } from '../openapi.js';

/** GET /openapi.json: the API description, built once. */
export function openApiRoute(): RequestHandler {
  return (_req, res) => {
    res.type('application/json').send(openApiJson());
  };
}

/**
 * The interactive documentation (Swagger UI) at /docs/, reading /openapi.json. Its scripts and
 * styles come from swagger-ui-dist through this server, so it works without internet access.
 */
export function docsUi(specUrl = '/openapi.json'): Router {
  const router = Router();
  // swagger-ui-dist's own demo page and its initializer point at the Petstore: not ours.
  router.get(['/index.html', '/swagger-initializer.js'], (_req, _res, next) => next('router'));
  router.use(swaggerUi.serveFiles(undefined, { swaggerUrl: specUrl }));
  router.get('/', swaggerUi.setup(undefined, { swaggerUrl: specUrl, customSiteTitle: 'Orchestrator API' }));
  return router;
}

/** ReDoc's standalone bundle: React and ReDoc in one script, no other file to load. */
const REDOC_BUNDLE = createRequire(import.meta.url).resolve('redoc/bundles/redoc.standalone.js');

/**
 * The reference documentation (ReDoc) at /redoc, reading /openapi.json. The page loads nothing
 * but the bundle, from this server (so it works without internet access), and has no inline
 * script: the bundle renders every `<redoc spec-url>` element by itself.
 */
export function redocUi(specUrl = '/openapi.json'): Router {
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
