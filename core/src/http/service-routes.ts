/** `/health`, `/ready`, `/openapi.json` and `/metrics`: what operators and tools read. */
import { ErrorResponse, HealthResponse, ReadyResponse } from "../api-schemas";
import { SecretsError, toHttpError } from "../errors";
import { describeUnexpected, type Logger } from "../log";
import type { Metrics } from "../metrics";
import { buildOpenApi } from "../openapi";
import type { SecretManager } from "../secret-manager";
import { BackendUnavailable, loggableMessage } from "../store-errors";
import { VERSION } from "../version";
import { errorCounter } from "./middleware";
import { answer, json, type Router } from "./router";

const READY_TIMEOUT_MS = 2000;
/**
 * A probe's answer is reused this long after it came, and concurrent probes share it: `/ready`
 * needs no key. A store read that outlives the 2 s is not started again while it hangs: the next
 * probes wait on it, so a hung backend has one probe read pending, not one per second.
 */
const READY_REUSE_MS = 1000;

/**
 * Not ready: the store's error (its code is answered) and what the answer says of it. A caller of
 * `/ready` presents no key: a store's own message (which names the first hosted key, a mount, an
 * environment) goes to one log line a probe (`store not ready`); only the probe's own timeout is said.
 */
type Readiness = { ok: true; ms: number } | { ok: false; error: unknown; message: string };

/** `/ready`'s check: the manager's probe read, answered within 2 s, shared and reused for 1 s. */
function readinessOf(probe: () => Promise<void>, kind: string, log: Logger, now: () => number = Date.now) {
  let read: Promise<void> | undefined;
  let last: { settledAt?: number; result: Promise<Readiness> } | undefined;
  const check = async (): Promise<Readiness> => {
    const started = performance.now();
    read ??= probe().finally(() => {
      read = undefined;
    });
    let timer: NodeJS.Timeout | undefined;
    const late = new BackendUnavailable(`the ${kind} store did not answer within 2 s`);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(late), READY_TIMEOUT_MS);
    });
    try {
      await Promise.race([read, timeout]);
      return { ok: true, ms: Math.round((performance.now() - started) * 100) / 100 };
    } catch (error) {
      log.warn("store not ready", {
        store: kind,
        ...(error instanceof SecretsError
          ? { code: error.code, reason: loggableMessage(error) }
          : { code: "internal", ...describeUnexpected(error) }),
      });
      const message = error === late ? late.message : `the ${kind} store is not ready: the log says why`;
      return { ok: false, error, message };
    } finally {
      clearTimeout(timer);
    }
  };
  return (): Promise<Readiness> => {
    const at = now();
    // A clock stepped back (at before settledAt) ends the reuse too: a 503 would last the step.
    if (!last || (last.settledAt !== undefined && (at < last.settledAt || at - last.settledAt >= READY_REUSE_MS))) {
      const current: { settledAt?: number; result: Promise<Readiness> } = { result: check() };
      current.result.then(() => {
        current.settledAt = now();
      });
      last = current;
    }
    return last.result;
  };
}

export function serviceRoutes(
  router: Router,
  manager: SecretManager,
  metrics: Metrics,
  log: Logger,
  now?: () => number,
): void {
  const store = manager.store.kind;
  const countError = errorCounter(metrics, store);
  const ready = readinessOf(() => manager.probe(), store, log, now);
  let openApi: string | undefined;

  router.route(
    {
      method: "get",
      path: "/health",
      operationId: "health",
      summary: "Liveness, the store kind and the version",
      auth: false,
      responses: { 200: { description: "Up", schema: HealthResponse } },
    },
    () => json({ status: "ok", store, version: VERSION }),
  );

  router.route(
    {
      method: "get",
      path: "/ready",
      operationId: "ready",
      summary:
        "Readiness: 200 when the store answers a cheap read within 2 s, else 503 (with Retry-After) carrying the store's error code: backend_unavailable, backend_denied, store_unavailable, store_corrupt or internal (answers are reused for 1 s)",
      auth: false,
      // Every failure is a 503 (not the code's own status): described here, not through `errors`.
      responses: {
        200: { description: "Ready", schema: ReadyResponse },
        503: {
          description:
            "Not ready, with Retry-After: the store's error code (backend_unavailable, backend_denied, store_unavailable, store_corrupt or internal)",
          schema: ErrorResponse,
        },
      },
    },
    async (c) => {
      const result = await ready();
      if (result.ok) return json({ status: "ready", store, ms: result.ms });
      // Not ready, whatever the store's error: its code says why (see Readiness for the message).
      const { body, headers } = toHttpError(result.error);
      body.error.message = result.message;
      c.env.code = body.error.code; // for the request's log line, as an error answer's
      countError(body.error.code); // as the error handler counts
      return json(body, 503, { ...headers, "retry-after": headers["retry-after"] ?? "1" });
    },
  );

  router.route(
    {
      method: "get",
      path: "/openapi.json",
      operationId: "openapi",
      summary: "This document",
      auth: false,
      responses: { 200: { description: "OpenAPI 3.1 document", contentType: "application/json" } },
    },
    () => {
      // Built on first use, from every route registered by then (all of them).
      openApi ??= JSON.stringify(buildOpenApi(router.specs, VERSION));
      return answer(openApi, 200, { "content-type": "application/json" });
    },
  );

  router.route(
    {
      method: "get",
      path: "/metrics",
      operationId: "metrics",
      summary: "Prometheus metrics",
      auth: true,
      responses: { 200: { description: "Prometheus text format", contentType: "text/plain; version=0.0.4" } },
    },
    () => answer(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );
}
