/**
 * What runs around every route: `admission` (the raw request, the master key, the raw path), run
 * first by each route and by the not-found handler, and `errorHandler`, where every error (from
 * admission or a route) becomes an answer through `toHttpError`.
 */
import type { ErrorHandler } from "hono";
import { bearerCheck } from "../auth";
import { AccessDenied, InvalidInput, InvalidName, SecretsError, toHttpError } from "../errors";
import { describeUnexpected, type Logger } from "../log";
import type { Labels, Metrics } from "../metrics";
import { loggableMessage } from "../store-errors";
import { type AppEnv, type Ctx, header, json } from "./router";

export const SECRETS_PREFIX = "/v1/secrets/";

/** The status logged for a request whose client hung up before its answer (nginx's 499). */
export const CLIENT_CLOSED = 499;
const CLIENT_CLOSED_BODY = { error: { code: "client_closed", message: "the client closed the connection" } };

/**
 * Counts an error answered (`llm_secrets_errors_total`, by store and code): the app's error handler,
 * `/ready`'s 503 and what `serve`'s node layer answers before the app all count through one.
 */
export function errorCounter(metrics: Metrics, store: string): (code: string) => void {
  const labels = new Map<string, Labels>();
  return (code) => {
    let counted = labels.get(code);
    if (!counted) {
      counted = { store, code };
      labels.set(code, counted);
    }
    metrics.inc("llm_secrets_errors_total", counted);
  };
}

/** Errors as `{"error":{"code","message"}}` with their status; unexpected ones logged by class and frames. */
export function errorHandler(metrics: Metrics, log: Logger, store: string): ErrorHandler<AppEnv> {
  const countError = errorCounter(metrics, store);
  return (err, c) => {
    // The body stopped because the client hung up: nobody reads the answer, and it is no error
    // of ours. The request line says `client_closed` (app.ts).
    if (c.env?.raw?.clientClosed?.()) return json(CLIENT_CLOSED_BODY, CLIENT_CLOSED);
    const http = toHttpError(err);
    const code = http.body.error.code;
    if (c.env) c.env.code = code;
    countError(code);
    if (!(err instanceof SecretsError)) log.error("unexpected error", { path: c.req.path, ...describeUnexpected(err) });
    else if (err.code === "internal") {
      // A typed `internal` (an unexpected backend failure) is logged with its message, built from
      // operation names, statuses and codes only (store-errors.ts), never from a value.
      log.error("internal error", { path: c.req.path, reason: loggableMessage(err) });
    }
    return json(http.body, http.status, http.headers);
  };
}

/**
 * Admission, in this order, before any route:
 * 1. the raw request: a runtime must pass the request as it arrived (`fetch(request, raw)`);
 *    without it `..` segments may already have been normalised away, so nothing is served (500,
 *    one log line);
 * 2. the master key, as `Authorization: Bearer` or `x-litellm-api-key`, on every route but the
 *    public ones (`publicPaths`: the routes whose spec says `auth: false`; 401 before any 404 or 405);
 * 3. the path as it arrived: `.`/`..` segments (also percent-encoded) are refused, not normalised;
 *    a raw `#` on a secret route, or a query string on a secret write, would otherwise write the
 *    name before it (400).
 * Three plain synchronous checks that every route runs first (router.ts) and the not-found handler
 * too (app.ts), rather than a Hono middleware: with no middleware Hono calls a route's handler
 * directly, so a cached read is answered without a single promise.
 */
export function admission(masterKey: string, publicPaths: ReadonlySet<string>): (c: Ctx) => void {
  const authorized = bearerCheck(masterKey);
  return (c) => {
    const raw = c.env?.raw;
    if (typeof raw?.path !== "string") {
      // Answered as a bare 500; the error handler logs this reason (a line per such request).
      throw new SecretsError(
        "internal",
        `the runtime passed no raw request (the \`raw\` argument of fetch, with the path as it arrived): refusing ${c.req.method}`,
      );
    }
    if (
      !publicPaths.has(c.req.path) &&
      !authorized(header(c, "authorization"), header(c, "x-litellm-api-key"), c.env)
    ) {
      throw new AccessDenied("unauthorized", "missing or wrong master key");
    }
    checkRawPath(raw.path, c.req.method);
  };
}

function checkRawPath(target: string, method: string): void {
  const cut = target.search(/[?#]/);
  const path = cut === -1 ? target : target.slice(0, cut);
  const secret = path.startsWith(SECRETS_PREFIX);
  // Only a path with a dot (or a percent sign: `%2e`) can hold a dot segment.
  if ((path.includes(".") || path.includes("%")) && path.split("/").some(isDotSegment)) {
    if (secret) throw new InvalidName("'.' or '..' path segment");
    throw new InvalidInput("the request path has '.' or '..' segments");
  }
  if (secret && cut !== -1) {
    if (target[cut] === "#") throw new InvalidName("a raw '#' in the request path");
    if (method === "PUT" || method === "DELETE") {
      throw new InvalidName("a query string after the name of a secret being written or deleted");
    }
  }
}

function isDotSegment(segment: string): boolean {
  const s = segment.toLowerCase().replaceAll("%2e", ".");
  return s === "." || s === "..";
}
