/**
 * Routes as specs: each route is registered with its OpenAPI spec (method, path template, zod
 * schemas of its query and body, answers) and a handler that gets the parsed input. The same list
 * gives the OpenAPI document and the `Allow` header of a 405.
 *
 * Bodies are read only by routes that declare one, through `readBody` (and by forwarding, through
 * the same `readLimitedBody`): the 1 MiB limit is checked on `Content-Length` before reading, and
 * counted while streaming when there is none; a route's bytes must be UTF-8 and JSON.
 */
import type { Context, Hono } from "hono";
import type * as z from "zod/mini";
import {
  type Audit,
  type AuditAction,
  type AuditEntry,
  callerOf,
  clipped,
  plainAddress,
  plainRequestId,
  requestIdOf,
} from "../audit";
import { ERROR_STATUS, type ErrorCode, InvalidInput, SecretsError } from "../errors";
import { withoutQuery } from "../names";
import { ALL_METHODS, type RouteSpec } from "../openapi";
import { describeIssues, issuesOf, safeParse } from "../validation";

export const MAX_BODY_BYTES = 1024 * 1024;

/** The request as it arrived, before any URL normalisation. */
export interface RawRequest {
  /** The request target: path and query exactly as received (node's `incoming.url`). */
  path: string;
  /**
   * Whether the client has hung up (a runtime that sees the connection passes it; node's reads
   * the socket). A request whose client left is logged as `client_closed`, not as an error.
   */
  clientClosed?: () => boolean;
  /**
   * Whether the runtime's own server cut the request for taking too long (`serve`'s request
   * timeout: node answered 408 itself, and the socket is closed, so `clientClosed` says true too).
   * Its audit line says `request_timeout`, not `client_closed`: the client did not leave.
   */
  timedOut?: () => boolean;
  /**
   * Cuts the client's connection (a runtime that streams answers over its own sockets passes it):
   * an answer that cannot be finished is then seen unfinished, never completed.
   */
  abort?: () => void;
  /** The platform's id of this invocation (Lambda's request id): the request's id in its audit and log lines. */
  requestId?: string;
  /**
   * The address the request came from, as the runtime itself knows it, never from a header a client
   * can set (`serve`'s socket peer, Lambda's `requestContext.http.sourceIp`): its audit line's
   * `source`.
   */
  source?: string;
  /**
   * The request's headers as the runtime already parsed them, by lower-case name (node's
   * `incoming.headers`: a repeated `Authorization` keeps its first value, others are joined with
   * ", "), read by `header` instead of the `Request`'s, which @hono/node-server builds on first use
   * (1-2k more cached reads a second under the loopback bench's load, measured once; the bench
   * itself times the cached read as a whole).
   */
  headers?: Readonly<Record<string, string | string[] | undefined>>;
}

/** A request header: from the runtime's own parse when it passed one (`RawRequest.headers`), else the `Request`'s. */
export function header(c: Ctx, name: string): string | undefined {
  return headerOf(c.env?.raw, c.req.raw, name);
}

/** `header`, for where the request is known outside a route (the request's log line). */
function headerOf(raw: RawRequest | undefined, request: Request, name: string): string | undefined {
  const headers = raw?.headers;
  if (headers === undefined) return request.headers.get(name) ?? undefined;
  const value = headers[name];
  return typeof value === "string" || value === undefined ? value : value.join(", ");
}

/**
 * What the app knows of a request besides the `Request`: the raw request (from the runtime), the
 * caller's key fingerprint (set at admission; audit.ts), when the app began answering
 * (`performance.now()`, for the audit line's `ms`) and whether the audit trail recorded the request
 * as done (then app.ts writes no access-log line for it).
 */
export type AppEnv = {
  /**
   * `code`: the error code of the answer, set where an error became it (for the request's log line);
   * `requestId`: the request's id, once an audit line gave it one (its log line gives the same);
   * `authenticated`: admission accepted the master key the caller presented (auth.ts's check,
   * which knows it, sets it; absent on a path that needs no key); `replaces`: the previous name a
   * write's body named (`PUT`'s `replaces`), for its audit line.
   */
  Bindings: {
    raw?: RawRequest;
    caller?: string;
    started?: number;
    audited?: boolean;
    code?: string;
    requestId?: string;
    authenticated?: boolean;
    replaces?: string;
  };
};

/**
 * Every answer is built here, with its headers as one plain object: `Cache-Control: no-store` on
 * all of them, since they hold secrets. (Headers added to a finished response, or prepared with
 * Hono's `c.header`, make each response copy its headers into a new `Headers` object: a measurable
 * share of a cached read.)
 */
export function answer(body: string | null, status: number, headers?: Record<string, string>): Response {
  return new Response(body, { status, headers: headers ? { ...NO_STORE, ...headers } : NO_STORE });
}

export function json(value: unknown, status = 200, headers?: Record<string, string>): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: headers ? { ...JSON_HEADERS, ...headers } : JSON_HEADERS,
  });
}

/** The statuses whose answer has no body (a `Response` with one throws). */
export const NULL_BODY_STATUSES: ReadonlySet<number> = new Set([101, 103, 204, 205, 304]);

/** An error in the API's shape (`{"error":{"code","message"}}`, the code's status) for an answer made outside a route (a runtime's own). */
export function errorAnswer(code: ErrorCode, message: string): Response {
  return json({ error: { code, message } }, ERROR_STATUS[code]);
}

// Shared by every answer: `Response` copies its init headers, so these are never changed.
const NO_STORE: Readonly<Record<string, string>> = Object.freeze({ "cache-control": "no-store" });
const JSON_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "content-type": "application/json",
  "cache-control": "no-store",
});
export type Ctx = Context<AppEnv>;

type Handler<B, Q> = (c: Ctx, input: { body: B; query: Q }) => Response | Promise<Response>;

/** A route whose calls go to the audit (audit.ts): its action, and the name a request is about. */
export interface AuditSpec {
  action: AuditAction;
  /** The name (or prefix) the request is about; it may throw for a bad one (then none is given). */
  name?: (c: Ctx) => string | undefined;
  /** The team whose settings the request asked for (`?team_id=`): with them the same name is another secret. */
  team?: (c: Ctx) => string | undefined;
  /** Only refused requests get this line (the route audits what it did itself: key events). */
  refusalsOnly?: boolean;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

export class Router {
  readonly specs: RouteSpec[] = [];
  /** Paths whose route needs no master key (`auth: false` in its spec), filled as routes register. */
  readonly publicPaths: Set<string>;
  readonly #methods: { pattern: RegExp; methods: Set<string>; audits: Map<string, AuditSpec> }[] = [];
  readonly #admit: (c: Ctx) => void;

  /**
   * `admit`: the admission checks every route runs before anything else (middleware.ts), which
   * throw to refuse; `audit`: where audited routes' calls go (without it nothing is audited);
   * `publicPaths`: the set to fill with the paths that need no key (admission reads it).
   */
  constructor(
    private readonly app: Hono<AppEnv>,
    admit: (c: Ctx) => void,
    private readonly audit?: Audit,
    publicPaths = new Set<string>(),
  ) {
    this.publicPaths = publicPaths;
    this.#admit = admit;
  }

  route<B = undefined, Q = undefined>(
    spec: RouteSpec & { body?: z.ZodMiniType<B>; query?: z.ZodMiniType<Q>; audit?: AuditSpec },
    handler: Handler<B, Q>,
  ): void {
    const { audit: auditSpec, ...openApiSpec } = spec;
    this.specs.push(openApiSpec);
    if (!spec.auth) this.publicPaths.add(spec.path);
    const methods = spec.method === "all" ? ALL_METHODS.map((m) => m.toUpperCase()) : [spec.method.toUpperCase()];
    this.#allow(spec.path, methods, auditSpec);
    const honoPath = spec.path.replace(/\/\{(\w+)\}$/, "/*").replace(/\{(\w+)\}/g, ":$1");
    // Hono's `/x/*` also matches `/x`: for a literal `/x` (`/v1/secrets`), that path is another
    // route's (or none), never this one's. (With a parameter in `/x`, the check never matches.)
    const bare = honoPath.endsWith("/*") ? honoPath.slice(0, -2) : undefined;
    // What an absent query parses to, once: most requests have none.
    const noQuery = spec.query ? parse(spec.query, {}, "query") : (undefined as Q);
    const admit = this.#admit;
    // Synchronous up to the handler: a route without a body whose handler answers at once (a
    // cached read) makes no promise at all.
    const run = (c: Ctx): Response | Promise<Response> => {
      admit(c);
      const query = spec.query && hasQuery(c) ? parse(spec.query, c.req.query(), "query") : noQuery;
      if (!spec.body) return handler(c, { body: undefined as B, query });
      const schema = spec.body;
      return readJson(c).then((json) => handler(c, { body: parse(schema, json, "body"), query }));
    };
    const audit = this.audit;
    const on = (handle: (c: Ctx) => Response | Promise<Response>) =>
      this.app.on(
        methods,
        honoPath,
        bare === undefined ? handle : (c) => (c.req.path === bare ? this.unrouted(c) : handle(c)),
      );
    if (!audit || !auditSpec) {
      on(run);
      return;
    }
    // The audit line is written when the answer (or the error) is known.
    const refused = (c: Ctx, err: unknown) => audit(auditEntry(c, auditSpec, outcomeOf(c, err)));
    const done = (c: Ctx) => {
      audit(auditEntry(c, auditSpec, "ok"));
      c.env.audited = true;
    };
    on((c) => {
      let res: Response | Promise<Response>;
      try {
        res = run(c);
      } catch (err) {
        refused(c, err);
        throw err;
      }
      if (!(res instanceof Promise)) {
        if (!auditSpec.refusalsOnly) done(c);
        return res;
      }
      return res.then(
        (answer) => {
          if (!auditSpec.refusalsOnly) done(c);
          return answer;
        },
        (err: unknown) => {
          refused(c, err);
          throw err;
        },
      );
    });
  }

  /** Audits what a route did beyond its one line (a key event of a batch), as this request. */
  auditAs(c: Ctx, entry: (requestId: string, caller: string) => AuditEntry): void {
    if (!this.audit) return;
    const line = entry(...requestAndCaller(c));
    const client = clientRequestIdFor(c.env, c.req.raw);
    const source = plainAddress(c.env?.raw?.source);
    this.audit({
      ...line,
      ...(client !== undefined && { clientRequestId: client }),
      ...(source !== undefined && { source }),
    });
  }

  /**
   * Audits a request refused before any route ran (the not-found handler's admission), when a
   * route of its path is audited.
   */
  auditRefusal(c: Ctx, err: unknown): void {
    if (!this.audit) return;
    const method = c.req.method === "HEAD" ? "GET" : c.req.method;
    // The path as it arrived too: `/v1/secrets/..` normalises to `/v1/`, which no route has.
    const target = c.env?.raw?.path;
    const raw = typeof target === "string" ? withoutQuery(target) : undefined;
    for (const route of this.#methods) {
      const auditSpec = route.audits.get(method);
      if (auditSpec && (route.pattern.test(c.req.path) || (raw !== undefined && route.pattern.test(raw)))) {
        this.audit(auditEntry(c, auditSpec, outcomeOf(c, err)));
        return;
      }
    }
  }

  /**
   * What the app answers a request no route takes (Hono's not-found handler, and a bare `/x` that
   * Hono's `/x/*` matched): 401 first, then 405 with `Allow` for a known path, else 404.
   */
  unrouted(c: Ctx): never {
    try {
      this.#admit(c);
    } catch (err) {
      this.auditRefusal(c, err);
      throw err;
    }
    const allow = this.allowed(c.req.path);
    if (allow) throw new SecretsError("method_not_allowed", `${c.req.method} is not allowed here`, { allow });
    throw new SecretsError("not_found", "no such route");
  }

  /** The methods a path answers (HEAD wherever GET), or undefined for an unknown path. */
  allowed(path: string): string[] | undefined {
    const methods = new Set<string>();
    for (const route of this.#methods) if (route.pattern.test(path)) for (const m of route.methods) methods.add(m);
    if (methods.size === 0) return undefined;
    if (methods.has("GET")) methods.add("HEAD");
    return [...methods];
  }

  #allow(template: string, methods: string[], audit: AuditSpec | undefined): void {
    const pattern = new RegExp(
      `^${template
        .split(/(\{\w+\})/)
        .map((part, i, parts) =>
          part.startsWith("{")
            ? i === parts.length - 2
              ? ".+"
              : "[^/]+"
            : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
        )
        .join("")}$`,
    );
    let route = this.#methods.find((r) => r.pattern.source === pattern.source);
    if (!route) {
      route = { pattern, methods: new Set(), audits: new Map() };
      this.#methods.push(route);
    }
    for (const m of methods) {
      route.methods.add(m);
      if (audit) route.audits.set(m, audit);
    }
  }
}

/**
 * A refusal's outcome: `request_timeout` when the server cut a body that took too long (it answered
 * 408), `client_closed` when the client hung up (its body stopped), else the error's code.
 */
function outcomeOf(c: Ctx, err: unknown): string {
  const raw = c.env?.raw;
  if (raw?.timedOut?.()) return "request_timeout";
  if (raw?.clientClosed?.()) return "client_closed";
  return err instanceof SecretsError ? err.code : "internal";
}

function auditEntry(c: Ctx, spec: AuditSpec, outcome: string): AuditEntry {
  let name: string | undefined;
  try {
    // A refused name is shown as asked for, clipped: the audit says what was tried.
    name = spec.name?.(c)?.slice(0, 256);
  } catch {
    // a name that does not decode: the outcome (invalid_name) says why there is none
  }
  // The team as asked for too, refused ones included (clipped, marked so, past a team's 256 characters).
  const team = spec.team?.(c);
  const [requestId, caller] = requestAndCaller(c);
  const clientRequestId = clientRequestIdFor(c.env, c.req.raw);
  const source = plainAddress(c.env?.raw?.source);
  const replaces = c.env?.replaces;
  return {
    action: spec.action,
    name,
    ...(replaces !== undefined && { replaces: clipped(replaces) }),
    ...(team !== undefined && team !== "" && { team: clipped(team) }),
    outcome,
    requestId,
    ...(clientRequestId !== undefined && { clientRequestId }),
    caller,
    ...(source !== undefined && { source }),
    ms: msSince(c.env?.started),
  };
}

/** A query parameter of the request, without parsing the URL of one that has no query (most: a cached read). */
export function queryParam(c: Ctx, name: string): string | undefined {
  return hasQuery(c) ? c.req.query(name) : undefined;
}

/** Milliseconds since `started` (a `performance.now()`), to a hundredth; undefined without a start. */
export function msSince(started: number | undefined): number | undefined {
  return started === undefined ? undefined : Math.round((performance.now() - started) * 100) / 100;
}

function requestAndCaller(c: Ctx): [string, string] {
  return [requestIdFor(c.env), c.env?.caller ?? callerOf(header(c, "x-litellm-api-key"), header(c, "authorization"))];
}

/**
 * The request's id (`requestIdOf`: the platform's, else one made here, never the caller's), kept in
 * `env` once made: one id a request, for each of its lines (its audit lines, its access-log line).
 */
export function requestIdFor(env: AppEnv["Bindings"] | undefined): string {
  const requestId = env?.requestId ?? requestIdOf(env?.raw?.requestId);
  if (env) env.requestId = requestId;
  return requestId;
}

/**
 * The caller's own id of the request, its `x-request-id` when a plain token (`plainRequestId`), for
 * a caller that presented the master key only: one refused with 401 gets no say in any line.
 */
export function clientRequestIdFor(env: AppEnv["Bindings"] | undefined, request: Request): string | undefined {
  return env?.authenticated ? plainRequestId(headerOf(env.raw, request, "x-request-id")) : undefined;
}

/** Whether the request has a query string (most do not: their query is `{}`, with no URL parse). */
function hasQuery(c: Ctx): boolean {
  return c.env.raw?.path.includes("?") ?? true;
}

function parse<T>(schema: z.ZodMiniType<T>, input: unknown, where: string): T {
  const result = safeParse(schema, input);
  if (!result.success) {
    const issues = issuesOf(result.error);
    throw new InvalidInput(`invalid ${where}: ${describeIssues(issues)}`, issues);
  }
  return result.data;
}

async function readJson(c: Ctx): Promise<unknown> {
  // A body that stops (the client gone, the server's request timeout) fails as it is: not as a
  // body that is not UTF-8 (the request line says client_closed).
  const bytes = await readBody(c);
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new InvalidInput("the body is not valid UTF-8");
  }
  if (text.trim() === "") throw new InvalidInput("the body is empty: expected JSON");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InvalidInput("the body is not valid JSON");
  }
  // Valid UTF-8 can still spell a lone surrogate as an escape (`"\ud800"`): no store can hold it.
  // And JSON.parse makes `__proto__` an own key, which validation skips: a tag of that name was
  // dropped unsaid. Either can be spelled only with `\u` or `__proto__` in the text.
  const escaped = text.includes("\\u");
  const fault = escaped || text.includes("__proto__") ? bodyFault(value, escaped) : undefined;
  if (fault === "surrogate") {
    throw new InvalidInput("the body holds a lone UTF-16 surrogate (\\uD800-\\uDFFF without its pair)");
  }
  if (fault === "proto") {
    throw new InvalidInput("the body holds a key named __proto__, which no object here can hold");
  }
  return value;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * What no store can take in a parsed body: a lone surrogate in a string or a key (looked for when
 * `surrogates`), which wins, else an own `__proto__` key. Walked with a stack, not recursion:
 * JSON.parse takes nesting deeper than the call stack does.
 */
function bodyFault(value: unknown, surrogates: boolean): "surrogate" | "proto" | undefined {
  let proto = false;
  const pending = [value];
  while (pending.length > 0) {
    const node = pending.pop();
    if (typeof node === "string") {
      if (surrogates && LONE_SURROGATE.test(node)) return "surrogate";
    } else if (Array.isArray(node)) {
      for (const child of node) pending.push(child); // not push(...node): a long array is too many arguments
    } else if (node !== null && typeof node === "object") {
      for (const [k, v] of Object.entries(node)) {
        if (surrogates && LONE_SURROGATE.test(k)) return "surrogate";
        if (k === "__proto__") proto = true;
        pending.push(v);
      }
    }
  }
  return proto ? "proto" : undefined;
}

/**
 * A request's body, at most `max` bytes: a declared `Content-Length` is checked before a byte is
 * read (the HTTP parser holds a body to it); without one the stream is counted as it arrives and
 * cancelled past the limit, so no more is read. Routes with a body and forwarding read it here.
 */
export async function readLimitedBody(
  request: Request,
  declared: string | null | undefined,
  max = MAX_BODY_BYTES,
): Promise<Uint8Array> {
  const tooLarge = () => new SecretsError("payload_too_large", `the body is larger than ${max} bytes`);
  if (declared !== undefined && declared !== null) {
    if (!/^\d+$/.test(declared) || Number(declared) > max) throw tooLarge();
    const bytes = new Uint8Array(await request.arrayBuffer());
    if (bytes.byteLength > max) throw tooLarge();
    return bytes;
  }
  const stream = request.body;
  if (!stream) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

/** The body's bytes, at most `MAX_BODY_BYTES`. */
function readBody(c: Ctx): Promise<Uint8Array> {
  return readLimitedBody(c.req.raw, header(c, "content-length"));
}
