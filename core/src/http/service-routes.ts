/** `/health`, `/openapi.json` and `/metrics`: what operators and tools read. */
import { HealthResponse } from "../api-schemas";
import type { Metrics } from "../metrics";
import { buildOpenApi } from "../openapi";
import { VERSION } from "../version";
import { answer, json, type Router } from "./router";

export function serviceRoutes(router: Router, store: string, metrics: Metrics): void {
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
