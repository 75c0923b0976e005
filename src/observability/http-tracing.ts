import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';
import type { Request, RequestHandler } from 'express';
import { activeTracer, SpanAttributes } from './tracing.js';

/** The matched route's pattern (`/result/:task_id`), known only once routing is done. */
function routePattern(req: Request): string | undefined {
  if (req.route?.path) return `${req.baseUrl}${String(req.route.path)}`;
  return req.baseUrl || undefined;
}

/**
 * One SERVER span per request, active while the request is handled, so the spans of the work it
 * starts are its children. A W3C `traceparent` header continues the caller's trace. Mount it
 * after requestIds() and only when tracing is on (see tracingEnabled in tracing.ts).
 */
export function traceRequests(): RequestHandler {
  return (req, res, next) => {
    const tracer = activeTracer();
    if (!tracer) return next();
    const remote = propagation.extract(ROOT_CONTEXT, req.headers);
    const span = tracer.startSpan(
      req.method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [ATTR_HTTP_REQUEST_METHOD]: req.method,
          [ATTR_URL_PATH]: req.path,
          [ATTR_URL_SCHEME]: req.protocol,
          [ATTR_NETWORK_PROTOCOL_VERSION]: req.httpVersion,
          ...(req.ip ? { [ATTR_CLIENT_ADDRESS]: req.ip } : {}),
          ...(req.get('user-agent') ? { [ATTR_USER_AGENT_ORIGINAL]: req.get('user-agent') } : {}),
          ...(req.id ? { [SpanAttributes.REQUEST_ID]: req.id } : {}),
        },
      },
      remote,
    );
    let ended = false;
    // 'close' alone when the client hung up first (an SSE stream, an abandoned long-poll).
    const end = () => {
      if (ended) return;
      ended = true;
      const route = routePattern(req);
      if (route) {
        span.updateName(`${req.method} ${route}`);
        span.setAttribute(ATTR_HTTP_ROUTE, route);
      }
      if (res.headersSent) {
        span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, res.statusCode);
        // A 4xx is the client's mistake, not a failed server span.
        if (res.statusCode >= 500) {
          span.setAttribute(ATTR_ERROR_TYPE, String(res.statusCode));
          span.setStatus({ code: SpanStatusCode.ERROR });
        }
      }
      span.end();
    };
    res.once('finish', end);
    res.once('close', end);
    context.with(trace.setSpan(remote, span), next);
  };
}
