/**
 * `ALL /v1/forward/{model_name}/{path}`: a request sent on to a model's API with its stored key
 * (forward.ts, loaded on first use: it brings the outbound client). Audited as `forward` with the
 * model's name (the key read is the model's).
 */
import type { ForwardDeps } from "../forward";
import type { Router } from "./router";
import { SECRET_READ_ERRORS } from "./secret-routes";

export function forwardRoutes(router: Router, deps: ForwardDeps): void {
  router.route(
    {
      method: "all",
      path: "/v1/forward/{model_name}/{path}",
      summary: "Send a request to a model's API (model_list) with its key from the store; the answer streams back",
      auth: true,
      // The key's read answers as GET /v1/secrets/{name} does; then the upstream's own.
      errors: [
        ...SECRET_READ_ERRORS,
        "invalid_request",
        "payload_too_large",
        "upstream_unavailable",
        "upstream_timeout",
      ],
      responses: {},
      // The name is the model's: forwarding reads its key from the store.
      audit: { action: "forward", name: (c) => modelOf(c.env.raw?.path ?? "") },
    },
    async (c) => {
      const { forward } = await import("../forward");
      return forward(c.req.raw, c.env.raw as { path: string }, deps);
    },
  );
}

/** The model name of a forward path as it arrived (`/v1/forward/{model_name}/...`), decoded. */
function modelOf(rawPath: string): string | undefined {
  const segment = rawPath.slice("/v1/forward/".length).split(/[/?#]/, 1)[0];
  return segment ? decodeURIComponent(segment) : undefined;
}
