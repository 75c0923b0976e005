import type { Request } from 'express';
import { z } from 'zod';
import { serviceBodySchema, servicePatchSchema } from '../../services/service-request.js';
import * as ex from '../openapi-examples.js';
import { conflict, invalid, notFound, unavailable } from '../replies.js';
import * as r from '../responses.js';
import { type Route, route } from '../route.js';

const serviceNameParam = z.object({ name: z.string().max(200).meta({ description: 'The name of a registered service.' }) });
const forceQuery = z.object({
  force: z
    .enum(['true', 'false'])
    .optional()
    .meta({ description: 'true: do it although it breaks workflows or stops unfinished tasks (what it broke is in the answer).' }),
});
const servicesTag = ['services'];
/** Each key's own circuit names the keys that call a service: admins see them (and everyone when no keys are set). */
const seesKeys = (req: Request) => req.apiKeyScope === undefined || req.apiKeyScope === 'admin';
const unknownService = notFound('No service has this name (`service_not_found`).');
const badGateway = {
  description: 'The OpenAPI document could not be fetched (`openapi_fetch_failed`): the service did not answer 200, or not at all.',
  body: r.errorBodySchema,
};

/** The service registry: third-party HTTP services whose OpenAPI operations are tools (`<service>.<operationId>`). */
export const SERVICE_ROUTES: Route[] = [
  route({
    method: 'post',
    path: '/services',
    operationId: 'registerService',
    access: 'admin',
    summary: 'Register a service; its OpenAPI operations become tools',
    description:
      'With `openapi_url`, its OpenAPI 3.x document (JSON) is fetched, validated and stored as version 1; every operation with an operationId becomes the tool `<name>.<operationId>`, input `{path?, query?, headers?, body?}`, output the JSON body of its 2xx answer. Secrets are named (`auth.secret_ref`), never given.',
    tags: servicesTag,
    body: serviceBodySchema,
    invalidBody: { code: 'invalid_service', message: 'the service is invalid' },
    bodyExamples: ex.registerServiceExamples,
    responses: {
      201: { description: 'Registered.', body: r.registeredServiceSchema, examples: ex.registeredServiceExamples },
      400: invalid(
        'The body is invalid (`invalid_service`), the document is not a valid OpenAPI 3.x JSON document or too large (`invalid_openapi_document`), its tools would weigh more than SERVICE_SCHEMA_MAX_NODES or SERVICE_SCHEMA_MAX_BYTES (`document_too_complex`, naming the place in the document where it stopped), or its host is not on HTTP_TOOL_ALLOWED_HOSTS (`host_not_allowed`).',
      ),
      409: conflict('A service has this name (`service_exists`).'),
      502: badGateway,
      503: unavailable,
    },
    handler: async ({ body }, { services }) => ({ status: 201, body: await services.register(body) }),
  }),
  route({
    method: 'get',
    path: '/services',
    operationId: 'listServices',
    // Operators with a read key watch health and circuits (the console's Services page): secrets are references only, never values.
    access: 'monitor',
    summary: 'List the registered services, with their health and circuit state',
    tags: servicesTag,
    responses: { 200: { description: 'The services.', body: r.serviceListSchema, examples: ex.serviceListExamples }, 503: unavailable },
    handler: async ({ req }, { services }) => ({ status: 200, body: { services: await services.listServices({ keys: seesKeys(req) }) } }),
  }),
  route({
    method: 'post',
    path: '/services/{name}/refresh',
    operationId: 'refreshService',
    access: 'admin',
    summary: "Fetch a service's OpenAPI document again; report the workflows a change breaks",
    description:
      'A changed document is stored as the next version and the tools follow it. The answer lists operations added, removed and changed. A change that breaks an active workflow (it calls an operation that is gone, or one whose schemas no longer fit its inputs or templates) is refused with 409 `breaking_change`, naming the workflows and their problems, and nothing is stored; `?force=true` applies it anyway and names them in `affected_workflows`.',
    tags: servicesTag,
    params: serviceNameParam,
    query: forceQuery,
    paramExamples: { name: ex.EXAMPLE_SERVICE },
    responses: {
      200: {
        description: 'Fetched (stored when it changed); a service without `openapi_url` has nothing to fetch: `changed` false.',
        body: r.serviceRefreshSchema,
        examples: ex.serviceRefreshExamples,
      },
      400: invalid(
        'The document is invalid (`invalid_openapi_document`), over the schema budget (`document_too_complex`), on a host not allowed (`host_not_allowed`), or `force` is neither true nor false (`validation_error`).',
      ),
      404: unknownService,
      409: conflict(
        'The new document breaks workflows (`breaking_change`); nothing was stored. `details`: `{version, operations: {added, removed, changed}, affected_workflows: [{name, version, problems}]}`. Fix the workflows first, or refresh with `?force=true`.',
      ),
      502: badGateway,
      503: unavailable,
    },
    handler: async ({ params, query }, { services }) => ({ status: 200, body: await services.refreshService(params.name, query.force === 'true') }),
  }),
  route({
    method: 'get',
    path: '/services/{name}',
    operationId: 'getService',
    // Operators with a read key watch health and circuits (the console's Services page): secrets are references only, never values.
    access: 'monitor',
    summary: 'A registered service, with its operations, health and circuit state',
    tags: servicesTag,
    params: serviceNameParam,
    paramExamples: { name: ex.EXAMPLE_SERVICE },
    responses: { 200: { description: 'The service.', body: r.serviceSchema, examples: ex.serviceExamples }, 404: unknownService, 503: unavailable },
    handler: async ({ params, req }, { services }) => ({ status: 200, body: await services.describe(params.name, { keys: seesKeys(req) }) }),
  }),
  route({
    method: 'patch',
    path: '/services/{name}',
    operationId: 'updateService',
    access: 'admin',
    summary: "Change a service's settings",
    description:
      'Given fields replace the stored ones; `null` removes an optional one. A new `openapi_url` is fetched at once; otherwise the document stays (see refresh).',
    tags: servicesTag,
    params: serviceNameParam,
    paramExamples: { name: ex.EXAMPLE_SERVICE },
    body: servicePatchSchema,
    invalidBody: { code: 'invalid_service', message: 'the change is invalid' },
    bodyExamples: ex.patchServiceExamples,
    responses: {
      200: { description: 'Changed.', body: r.serviceSchema, examples: ex.serviceExamples },
      400: invalid(
        'The change is invalid (`invalid_service`), or the new document is (`invalid_openapi_document`, `document_too_complex`, `host_not_allowed`).',
      ),
      404: unknownService,
      502: badGateway,
      503: unavailable,
    },
    handler: async ({ params, body }, { services }) => ({ status: 200, body: await services.update(params.name, body) }),
  }),
  route({
    method: 'delete',
    path: '/services/{name}',
    operationId: 'deleteService',
    access: 'admin',
    summary: 'Delete a service; its tools go with it',
    description:
      'Refused with 409 `service_in_use` while steps of unfinished (queued or running) tasks are still to call its operations. With `?force=true` it is deleted anyway, and those steps fail at once (error `ServiceDeleted`): their tasks fail, or go on under `on_failure: continue`; they are named in `failed_tasks`.',
    tags: servicesTag,
    params: serviceNameParam,
    query: forceQuery,
    paramExamples: { name: ex.EXAMPLE_SERVICE },
    responses: {
      200: {
        description: 'Deleted; the workflows that called it, and the tasks whose steps failed (force), are named.',
        body: r.serviceDeletedSchema,
        examples: ex.serviceDeletedExamples,
      },
      400: invalid('`force` is neither true nor false (`validation_error`).'),
      404: unknownService,
      409: conflict(
        'Unfinished tasks use the service (`service_in_use`); nothing was deleted. `details`: `{task_count, tasks}` (the first 100 task ids). Wait for them, cancel them, or delete with `?force=true`.',
      ),
      503: unavailable,
    },
    handler: async ({ params, query }, { services }) => ({ status: 200, body: await services.delete(params.name, query.force === 'true') }),
  }),
];
