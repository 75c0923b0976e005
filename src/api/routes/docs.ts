import { createRequire } from 'node:module';
import path from 'node:path';
import express, { type Request, Router } from 'express';
import { z } from 'zod';
import { credentialOf } from '../api-keys.js';
import * as ex from '../openapi-examples.js';
import { text } from '../replies.js';
import { plainRoute, type Route } from '../route.js';

const SPEC_URL = '/openapi.json';
const require = createRequire(import.meta.url);

/** swagger-ui-dist's files: Swagger UI's bundle and styles, served by this server (no CDN). */
const SWAGGER_UI_DIR = path.dirname(require.resolve('swagger-ui-dist/swagger-ui-bundle.js'));

const escapeAttribute = (value: string) => value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);

/**
 * The key the page was opened with, when keys are configured: the password of the basic auth a
 * browser sends to this page, or a bearer key. Only the holder of the key sees it again: the
 * page is not cached, and no other site can read it (the same-origin policy; it is not framed).
 */
function pageKey(req: Request): string | undefined {
  return req.apiKeyScope === undefined ? undefined : credentialOf(req.get('authorization'), true);
}

/**
 * Starts Swagger UI on /openapi.json. With keys, the page carries the key it was opened with
 * (a meta element: no inline script, the page's CSP allows none): it is sent as a bearer key with
 * the document's request and, preauthorized, with every "Try it out", where a browser's basic
 * credentials would be refused (they are taken on the browser pages only). "Try it out" also
 * sends X-Requested-With, so a POST without a body (cancel, retry) passes the CSRF rule without keys.
 */
const SWAGGER_INIT = `"use strict";
(function () {
  var meta = document.querySelector('meta[name="orchestrator-api-key"]');
  var key = meta ? meta.getAttribute('content') : null;
  var ui = SwaggerUIBundle({
    url: ${JSON.stringify(SPEC_URL)},
    dom_id: '#swagger-ui',
    deepLinking: true,
    layout: 'BaseLayout',
    validatorUrl: null,
    requestInterceptor: function (request) {
      request.headers['X-Requested-With'] = 'swagger-ui';
      if (key && request.loadSpec) request.headers.Authorization = 'Bearer ' + key;
      return request;
    },
    onComplete: function () {
      if (key) ui.preauthorizeApiKey('bearerAuth', key);
    },
  });
  window.ui = ui;
})();
`;

/**
 * The interactive documentation (Swagger UI) at /docs/, reading /openapi.json. Its scripts and
 * styles come from swagger-ui-dist through this server, so it works without internet access.
 */
function docsUi(): Router {
  const router = Router();
  // swagger-ui-dist's own demo page and its initializer point at the Petstore: not ours.
  router.get(['/index.html', '/swagger-initializer.js'], (_req, _res, next) => next('router'));
  // Also redirects /docs to /docs/, so that the page's relative URLs resolve.
  router.use(express.static(SWAGGER_UI_DIR, { index: false, maxAge: '1d' }));
  router.get('/', (req, res) => {
    const key = pageKey(req);
    res.setHeader('cache-control', 'no-store');
    res.type('html').send(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Orchestrator API</title>
${key === undefined ? '' : `<meta name="orchestrator-api-key" content="${escapeAttribute(key)}">\n`}<link rel="stylesheet" href="./swagger-ui.css">
<link rel="stylesheet" href="./index.css">
<link rel="icon" type="image/png" href="./favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="./swagger-ui-bundle.js"></script>
<script src="./init.js"></script>
</body>
</html>
`);
  });
  router.get('/init.js', (_req, res) => {
    res.type('text/javascript').send(SWAGGER_INIT);
  });
  return router;
}

/** ReDoc's standalone bundle: React and ReDoc in one script, no other file to load. */
const REDOC_BUNDLE = require.resolve('redoc/bundles/redoc.standalone.js');

/**
 * The reference documentation (ReDoc) at /redoc. The page loads nothing but the bundle, from
 * this server (so it works without internet access), and has no inline script: the bundle
 * renders every `<redoc spec-url>` element by itself. ReDoc cannot send a key: it reads the
 * document at /redoc/openapi.json, below the page, where the basic credentials the browser
 * keeps for the page are taken (with the same scope check as /openapi.json).
 */
function redocUi(serveSpec: express.RequestHandler): Router {
  const router = Router();
  const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Orchestrator API</title>
</head>
<body>
<redoc spec-url="/redoc${SPEC_URL}"></redoc>
<script src="/redoc/redoc.standalone.js"></script>
</body>
</html>
`;
  router.get('/', (_req, res) => {
    res.type('html').send(page);
  });
  router.get(SPEC_URL, serveSpec);
  router.get('/redoc.standalone.js', (_req, res, next) => {
    res.sendFile(REDOC_BUNDLE, { maxAge: '1d' }, (error) => error && next(error));
  });
  return router;
}

const specHandler =
  (openApiJson: () => string): express.RequestHandler =>
  (_req, res) => {
    res.type('application/json').send(openApiJson());
  };

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
    serve: ({ openApiJson }) => specHandler(openApiJson),
  }),
  plainRoute({
    method: 'get',
    path: '/docs',
    operationId: 'apiDocsUi',
    access: 'catalog',
    summary: 'Interactive API documentation (Swagger UI)',
    description:
      'The page is served at `/docs/`, its scripts and styles under it; it reads /openapi.json. Opened with a key (basic auth in a browser, the key as password), it sends that key as a bearer key with the document request and with "Try it out".',
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
    serve: () => docsUi(),
  }),
  plainRoute({
    method: 'get',
    path: '/redoc',
    operationId: 'apiReferenceUi',
    access: 'catalog',
    summary: 'API reference documentation (ReDoc)',
    description:
      "Reads the API description at `/redoc/openapi.json` (the same document as /openapi.json, below the page so that a browser's basic credentials reach it). Its script, ReDoc's standalone bundle, is served by this server at `/redoc/redoc.standalone.js`: the page loads nothing from elsewhere.",
    tags: ['system'],
    browser: true,
    mount: true,
    responses: { 200: { description: 'The page.', mediaType: 'text/html', body: z.string(), examples: ex.redocPageExamples } },
    serve: ({ openApiJson }) => redocUi(specHandler(openApiJson)),
  }),
];
