/** `/health`, `/ready`, `/openapi.json` and `/metrics`: what operators and tools read. */
import { HealthResponse, ReadyResponse } from "../api-schemas";
import { SecretsError } from "../errors";
import type { Metrics } from "../metrics";
import { buildOpenApi } from "../openapi";
import type { SecretStore } from "../secret-store";
import { VERSION } from "../version";
import { answer, json, type Router } from "./router";

/** The name `/ready` reads: any answer (held or not) shows the store is reachable and lets us in. */
export const READY_PROBE_NAME = "llm-secrets-readiness-probe";
const READY_TIMEOUT_MS = 2000;
/** A probe's answer is reused this long, and concurrent probes share one call: `/ready` needs no key. */
const READY_REUSE_MS = 1000;

type Readiness = { ok: true; ms: number } | { ok: false; code: string; message: string };

/** `/ready`'s check: one cheap read of the store, answered within 2 s, shared and reused for 1 s. */
function readinessOf(store: SecretStore, now: () => number = Date.now): () => Promise<Readiness> {
  let last: { at: number; result: Promise<Readiness> } | undefined;
  const probe = async (): Promise<Readiness> => {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new SecretsError("backend_unavailable", `the ${store.kind} store did not answer within 2 s`)),
        READY_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([store.get(READY_PROBE_NAME), timeout]);
      return { ok: true, ms: Math.round((performance.now() - started) * 100) / 100 };
    } catch (err) {
      return err instanceof SecretsError
        ? { ok: false, code: err.code, message: err.message }
        : { ok: false, code: "internal", message: "the store's probe failed unexpectedly" };
    } finally {
      clearTimeout(timer);
    }
  };
  return () => {
    const at = now();
    if (!last || at - last.at >= READY_REUSE_MS) last = { at, result: probe() };
    return last.result;
  };
}

export function serviceRoutes(router: Router, backend: SecretStore, metrics: Metrics): void {
  const store = backend.kind;
  const ready = readinessOf(backend);
  let openApi: string | undefined;

  router.route(
    {
      method: "get",
      path: "/health",
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
      summary:
        "Readiness: 200 when the store answers a cheap read within 2 s, else 503 with its error code (answers are reused for 1 s)",
      auth: false,
      errors: ["backend_unavailable"],
      responses: { 200: { description: "Ready", schema: ReadyResponse } },
    },
    async () => {
      const result = await ready();
      if (result.ok) return json({ status: "ready", store, ms: result.ms });
      return json({ error: { code: result.code, message: result.message } }, 503);
    },
  );

  router.route(
    {
      method: "get",
      path: "/openapi.json",
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
      summary: "Prometheus metrics",
      auth: true,
      responses: { 200: { description: "Prometheus text format", contentType: "text/plain; version=0.0.4" } },
    },
    () => answer(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );
}
