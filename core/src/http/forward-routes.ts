/**
 * `ALL /v1/forward/{model_name}/{path}`: a request sent on to a model's API with its stored key
 * (forward.ts, loaded on first use: it brings the outbound client).
 */
import type { ForwardDeps } from "../forward";
import type { Router } from "./router";

export function forwardRoutes(router: Router, deps: ForwardDeps): void {
  router.route(
    {
      method: "all",
      path: "/v1/forward/{model_name}/{path}",
      summary: "Send a request to a model's API (model_list) with its key from the store; the answer streams back",
      auth: true,
      errors: ["not_found", "invalid_request", "payload_too_large", "upstream_unavailable", "upstream_timeout"],
      responses: {},
    },
    async (c) => {
      const { forward } = await import("../forward");
      return forward(c.req.raw, c.env.raw as { path: string }, deps);
    },
  );
}
