/**
 * `ALL /v1/forward/{model_name}/{path}`: a request sent on to a model's API with its stored key
 * (forward.ts, loaded on first use: it brings the outbound client). Audited as `forward` with the
 * model's name (the key read is the model's).
 */
import { InvalidInput } from "../errors";
import type { ForwardDeps } from "../forward";
import type { Router } from "./router";
import { SECRET_READ_ERRORS } from "./secret-routes";

export function forwardRoutes(router: Router, deps: ForwardDeps): void {
  router.route(
    {
      method: "all",
      path: "/v1/forward/{model_name}/{path}",
      // One per method: forwardGet, forwardPost, ...
      operationId: "forward",
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
      passthrough: {
        answer:
          "The upstream's answer, passed through as it came: its status, headers and body (streamed where the runtime streams), of any content type; a body without a Content-Type gets application/octet-stream",
        body: "Sent on to the upstream as it came (at most 1 MiB), of any content type",
      },
      parameters: {
        model_name: "The model_name of a model_list entry, percent-encoded (`team%2Fm` for `team/m`) and decoded once",
        path: "The rest of the upstream path, put right after the model's api_base with the query: sent raw, its `/` not percent-encoded (a `%2F` reaches the upstream as `%2F`), and it may be empty (`/v1/forward/{model_name}` alone, or with only a `?query`, is the api_base itself). An OpenAPI path parameter can be neither optional nor left unencoded (`allowReserved` is for query parameters): a generated client that percent-encodes it sends another path, so build this URL as written here",
      },
      // The name is the model's: forwarding reads its key from the store.
      audit: { action: "forward", name: (c) => auditNameOf(c.env.raw?.path ?? "") },
    },
    async (c) => {
      const { forward } = await forwardModule();
      return forward(c.req.raw, c.env.raw as { path: string }, deps);
    },
  );
}

let loaded: Promise<typeof import("../forward")> | undefined;

/**
 * forward.ts, imported on the first forward and kept: an `import()` resolves its specifier again at
 * each call (under a loader hook, such as the TypeScript one tests run with, a round trip to the
 * hook's thread: 0.5 to 1 ms a request). A failed import is tried again on the next request.
 */
function forwardModule(): Promise<typeof import("../forward")> {
  loaded ??= import("../forward").catch((err: unknown) => {
    loaded = undefined;
    throw err;
  });
  return loaded;
}

const PREFIX = "/v1/forward/";

/**
 * A forward path as it arrived, cut in two: `{model_name}` (percent-decoded) and the rest as it was
 * sent, query included: `/v1/chat/completions?api-version=...`, `?api-version=...` alone, or empty.
 * The rest goes right after the api_base (`/v1/forward/m?q` is the api_base with `?q`).
 */
export function forwardTargetOf(rawPath: string): { modelName: string; rest: string } {
  // Routed by the decoded path: `/v1/%66orward/...` would be cut 12 characters in, at another model.
  if (!rawPath.startsWith(PREFIX)) throw new InvalidInput("not under the forward path as sent (/v1/forward/)");
  // URL parsing takes a raw `\` for `/` and resolves `..` around it, and drops tabs and newlines:
  // `/v1/forward/m/v1\..\..\x` would leave the api_base's path. Escaped (`%5C`), they stay bytes.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\\\x00-\x1f\x7f]/.test(rawPath)) {
    throw new InvalidInput("the forward path holds a raw backslash or control character: percent-encode it");
  }
  const after = rawPath.slice(PREFIX.length);
  const end = after.search(/[/?#]/);
  const encoded = end === -1 ? after : after.slice(0, end);
  try {
    return { modelName: decodeURIComponent(encoded), rest: end === -1 ? "" : after.slice(end) };
  } catch {
    throw new InvalidInput("the model name in the path is not valid percent-encoding");
  }
}

function auditNameOf(rawPath: string): string | undefined {
  try {
    return forwardTargetOf(rawPath).modelName || undefined;
  } catch {
    return undefined;
  }
}
