/**
 * The HTTP API (SPEC section 6): one Hono app, the same on every runtime. Runtimes do not get the
 * Hono app: they call `runtime.fetch(request, raw)` (runtime.ts), which passes the request as it
 * arrived so that `..` segments are refused rather than normalised away.
 *
 * Order of answers: a missing raw request (500), then authentication (401 before any 404 or 405),
 * then the raw path (400), then the route; a known path with another method is 405 with `Allow`.
 * Every request gets one line: its audit line (audit.ts) when the audit trail recorded it as done,
 * else an access-log line (method, the path as it arrived without its query, status, time; never a
 * body), written around the app rather than as a middleware: it costs no extra step per request.
 * Every refused or failed request gets its access-log line. A request whose client hung up is
 * logged with status 499 and `code: client_closed`; one whose body the server cut for its time
 * (`serve`'s request timeout, which answered 408 itself) with status 408 and `code: request_timeout`.
 */
import { Hono } from "hono";
import type { Audit } from "./audit";
import type { ForwardModel } from "./forward";
import { cryptoRoutes } from "./http/crypto-routes";
import { forwardRoutes } from "./http/forward-routes";
import { keyEventRoutes } from "./http/key-event-routes";
import { admission, CLIENT_CLOSED, errorHandler } from "./http/middleware";
import {
  type AppEnv,
  clientRequestIdFor,
  MAX_BODY_BYTES,
  msSince,
  type RawRequest,
  Router,
  requestIdFor,
} from "./http/router";
import { secretRoutes } from "./http/secret-routes";
import { serviceRoutes } from "./http/service-routes";
import type { KeyEventResult } from "./key-events";
import type { Logger } from "./log";
import type { Metrics } from "./metrics";
import { loggedPath } from "./names";
import type { OutboundTls } from "./outbound";
import type { SecretManager } from "./secret-manager";

export { MAX_BODY_BYTES, type RawRequest } from "./http/router";

export interface AppOptions {
  manager: SecretManager;
  /** The key callers must present. */
  masterKey: string;
  metrics: Metrics;
  log: Logger;
  /** Applies one key event (key-events.ts, with this runtime's settings). */
  applyKeyEvent: (event: unknown) => Promise<KeyEventResult>;
  /** `model_list`, for forwarding. */
  models?: readonly ForwardModel[];
  /** Outbound TLS for forwarding (outbound.ts). */
  outbound?: OutboundTls;
  /** Where audited calls go (audit.ts); without it nothing is audited. */
  audit?: Audit;
  /** The clock of `/ready`'s reuse window (the runtime's; tests set it). */
  now?: () => number;
  /** Lambda's runtime API (`AWS_LAMBDA_RUNTIME_API`), which forwarding never reaches. */
  lambdaRuntimeApi?: string;
}

export interface App {
  /**
   * Answers one request; `raw` is the request as it arrived (see runtime.ts). A cached read is
   * answered synchronously (node-server then writes it without a promise); others with a promise.
   */
  fetch(request: Request, raw: RawRequest): Response | Promise<Response>;
}

export function createApp(options: AppOptions): App {
  const { manager, metrics, log } = options;
  const app = new Hono<AppEnv>();
  // Admission runs first in every route (router.ts) and here: publicPaths fills as routes register.
  const publicPaths = new Set<string>();
  const admit = admission(options.masterKey, publicPaths);
  const router = new Router(app, admit, options.audit, publicPaths);

  app.onError(errorHandler(metrics, log, manager.store.kind));
  app.notFound((c) => router.unrouted(c));

  serviceRoutes(router, manager, metrics, log, options.now);
  secretRoutes(router, manager);
  cryptoRoutes(router, manager);
  keyEventRoutes(router, options.applyKeyEvent);
  forwardRoutes(router, {
    manager,
    models: options.models ?? [],
    outbound: options.outbound ?? {},
    maxBodyBytes: MAX_BODY_BYTES,
    ...(options.lambdaRuntimeApi && { lambdaRuntimeApi: options.lambdaRuntimeApi }),
    log,
  });

  return {
    fetch: (request, raw) => {
      const env: AppEnv["Bindings"] = { raw, started: performance.now() };
      const answer = app.fetch(request, env);
      // A cached read is answered synchronously: no promise is made for it here either.
      return answer instanceof Promise ? answer.then((res) => logged(request, env, res)) : logged(request, env, answer);
    },
  };

  /**
   * The request's log line (method, the path as it arrived without its query, status, time), but
   * for a request the audit trail recorded as done: its audit line says what, who, when and how
   * long, and one line per secret read is enough (on a cached read, a second line cost a tenth of
   * the requests per second over loopback, measured once). Every refused or failed request gets
   * its line.
   */
  function logged(request: Request, env: AppEnv["Bindings"], res: Response): Response {
    const raw = env.raw;
    const ended = res.status === CLIENT_CLOSED || raw?.clientClosed?.() === true;
    if (env.audited && !ended && res.status < 400) return res;
    // A request the server cut for its time has a closed socket too: asked only then.
    const timedOut = ended && raw?.timedOut?.() === true;
    const closed = ended && !timedOut;
    log.info("request", {
      method: request.method,
      path: typeof raw?.path === "string" ? loggedPath(raw.path) : undefined,
      status: timedOut ? 408 : closed ? CLIENT_CLOSED : res.status,
      code: timedOut ? "request_timeout" : closed ? "client_closed" : env.code,
      ms: msSince(env.started),
      // The audit line's, when there is one: the two lines of a refused request join on it.
      request_id: requestIdFor(env),
      // The caller's own id (its x-request-id), for a caller that presented the master key: as its audit line's.
      client_request_id: clientRequestIdFor(env, request),
    });
    return res;
  }
}
