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
