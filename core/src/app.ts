/**
 * The HTTP API (SPEC section 6): one Hono app, the same on every runtime. Runtimes call
 * `app.fetch(request, { rawPath })`, passing the request path exactly as it arrived so that
 * `..` segments are refused rather than normalised away.
 */
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type * as z from "zod/mini";
import {
  DecryptRequest,
  DecryptResponse,
  EncryptRequest,
  EncryptResponse,
  HealthResponse,
  ResolveRequest,
  ResolveResponse,
  SecretPutRequest,
  SecretPutResponse,
  SecretQuery,
  SecretResponse,
} from "./api-schemas";
import { bearerCheck } from "./auth";
import { type KeyRing, openSecret, sealSecret } from "./crypto";
import {
  AccessDenied,
  EncryptionKeyMissing,
  type ErrorCode,
  InvalidInput,
  InvalidName,
  NotSupported,
  SecretsError,
  toHttpError,
} from "./errors";
import { describeUnexpected, type Logger } from "./log";
import type { Metrics } from "./metrics";
import { nameFromPath } from "./names";
import { buildOpenApi, type RouteSpec } from "./openapi";
import type { SecretManager } from "./secret-manager";
import { describeIssues, issuesOf } from "./validation";
import { VERSION } from "./version";

export const MAX_BODY_BYTES = 1024 * 1024;
const SECRETS_PREFIX = "/v1/secrets/";

export interface AppBindings {
  /** The request path and query as received, before URL normalisation. */
  rawPath?: string;
}
type AppEnv = { Bindings: AppBindings };
type Ctx = Context<AppEnv>;

export interface AppOptions {
  manager: SecretManager;
  /** The bearer token callers must present. */
  masterKey: string;
  /** Salt key ring for /v1/encrypt and /v1/decrypt. */
  keys?: KeyRing;
  metrics: Metrics;
  log: Logger;
}

export function createApp(options: AppOptions): Hono<AppEnv> {
  const { manager, metrics, log } = options;
  const storeLabel = { store: manager.store.kind };
  const authorized = bearerCheck(options.masterKey);
  const app = new Hono<AppEnv>();
  const routes: RouteSpec[] = [];
  let openApi: string | undefined;

  app.onError((err, c) => {
    const http = toHttpError(err);
    metrics.errors.inc({ ...storeLabel, code: http.body.error.code });
    if (!(err instanceof SecretsError)) log.error("unexpected error", { path: c.req.path, ...describeUnexpected(err) });
    return c.json(http.body, http.status as 500, http.headers);
  });
  app.notFound(() => {
    throw new SecretsError("not_found", "no such route");
  });

  app.use(async (c, next) => {
    const started = performance.now();
    c.header("cache-control", "no-store");
    try {
      await next();
    } finally {
      log.info("request", {
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        ms: Math.round((performance.now() - started) * 100) / 100,
      });
    }
  });

  // Refuse dot segments in the path as it arrived: a proxy or the URL parser would otherwise
  // turn PUT /v1/secrets/a/../b into a write to b.
  app.use(async (c, next) => {
    const raw = (c.env?.rawPath ?? "").split(/[?#]/, 1)[0] ?? "";
    if (raw.split("/").some((segment) => isDotSegment(segment))) {
      if (raw.startsWith(SECRETS_PREFIX)) throw new InvalidName("'.' or '..' path segment");
      throw new InvalidInput("the request path has '.' or '..' segments");
    }
    await next();
  });

  app.use(async (c, next) => {
    if (c.req.path === "/health" || c.req.path === "/openapi.json") return next();
    if (!authorized(c.req.header("authorization"))) {
      throw new AccessDenied("unauthorized", "missing or wrong bearer token");
    }
    return next();
  });

  app.use(
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: () => {
        throw new SecretsError("payload_too_large", `the body is larger than ${MAX_BODY_BYTES} bytes`);
      },
    }),
  );

  function route<B = undefined, Q = undefined>(
    spec: RouteSpec & { body?: z.ZodMiniType<B>; query?: z.ZodMiniType<Q> },
    handler: (c: Ctx, input: { body: B; query: Q }) => Response | Promise<Response>,
  ): void {
    routes.push(spec);
    const honoPath = spec.path.replace(/\/\{(\w+)\}$/, "/*").replace(/\{(\w+)\}/g, ":$1");
    const methods = spec.method === "all" ? ["GET", "POST", "PUT", "PATCH", "DELETE"] : [spec.method.toUpperCase()];
    app.on(methods, honoPath, async (c) => {
      const query = spec.query ? parse(spec.query, c.req.query(), "query") : (undefined as Q);
      const body = spec.body ? parse(spec.body, await readJson(c), "body") : (undefined as B);
      return handler(c, { body, query });
    });
  }

  const secretName = (c: Ctx) => nameFromPath(c.env?.rawPath ?? pathOf(c.req.url), SECRETS_PREFIX);
  const keys = () => {
    if (!options.keys) throw new EncryptionKeyMissing();
    return options.keys;
  };
  const secretErrors: ErrorCode[] = ["invalid_name", "not_hosted", "backend_denied", "backend_unavailable"];

  route(
    {
      method: "get",
      path: "/health",
      summary: "Liveness, the store kind and the version",
      auth: false,
      responses: { 200: { description: "Up", schema: HealthResponse } },
    },
    (c) => c.json({ status: "ok", store: manager.store.kind, version: VERSION }),
  );

  route(
    {
      method: "get",
      path: "/openapi.json",
      summary: "This document",
      auth: false,
      responses: { 200: { description: "OpenAPI 3.1 document", contentType: "application/json" } },
    },
    (c) => {
      openApi ??= JSON.stringify(buildOpenApi(routes, VERSION));
      return c.body(openApi, 200, { "content-type": "application/json" });
    },
  );

  route(
    {
      method: "get",
      path: "/v1/secrets/{name}",
      summary: "Read a secret (through the cache; ?refresh=true bypasses it)",
      auth: true,
      query: SecretQuery,
      errors: [...secretErrors, "write_only", "not_found"],
      responses: { 200: { description: "The value", schema: SecretResponse } },
    },
    async (c, { query }) => {
      const read = await manager.get(secretName(c), { refresh: query.refresh === "true" });
      return c.json(read);
    },
  );

  route(
    {
      method: "put",
      path: "/v1/secrets/{name}",
      summary: "Create or replace a secret",
      auth: true,
      body: SecretPutRequest,
      errors: [...secretErrors, "read_only", "name_conflict", "not_supported"],
      responses: {
        200: { description: "Replaced", schema: SecretPutResponse },
        201: { description: "Created", schema: SecretPutResponse },
      },
    },
    async (c, { body }) => {
      const written = await manager.put(secretName(c), body.value, { description: body.description, tags: body.tags });
      return c.json(written, written.created ? 201 : 200);
    },
  );

  route(
    {
      method: "delete",
      path: "/v1/secrets/{name}",
      summary: "Delete a secret (also when absent)",
      auth: true,
      errors: [...secretErrors, "read_only", "not_supported"],
      responses: { 204: { description: "Deleted" } },
    },
    async (c) => {
      await manager.delete(secretName(c));
      return c.body(null, 204);
    },
  );

  route(
    {
      method: "post",
      path: "/v1/resolve",
      summary: "Replace every os.environ/NAME string in a config with the stored value",
      auth: true,
      body: ResolveRequest,
      errors: [...secretErrors, "write_only", "unresolved_refs"],
      responses: { 200: { description: "The config with refs replaced", schema: ResolveResponse } },
    },
    async (c, { body }) => c.json({ config: await manager.resolve(body.config) }),
  );

  route(
    {
      method: "post",
      path: "/v1/encrypt",
      summary: "Encrypt a value with the salt key, in LiteLLM's format",
      auth: true,
      body: EncryptRequest,
      responses: { 200: { description: "The ciphertext", schema: EncryptResponse } },
    },
    (c, { body }) => c.json({ ciphertext: sealSecret(body.value, keys()) }),
  );

  route(
    {
      method: "post",
      path: "/v1/decrypt",
      summary: "Decrypt a LiteLLM ciphertext (current or previous salt keys)",
      auth: true,
      body: DecryptRequest,
      errors: ["decrypt_failed"],
      responses: { 200: { description: "The plaintext", schema: DecryptResponse } },
    },
    (c, { body }) => c.json({ value: openSecret(body.ciphertext, keys()) }),
  );

  route(
    {
      method: "post",
      path: "/v1/key-events",
      summary: "Apply virtual-key events (not supported yet)",
      auth: true,
      errors: ["not_supported"],
      responses: {},
    },
    () => {
      throw new NotSupported("POST /v1/key-events");
    },
  );

  route(
    {
      method: "all",
      path: "/v1/forward/{model_name}/{path}",
      summary: "Forward a request to a model's API with its stored key (not supported yet)",
      auth: true,
      errors: ["not_supported"],
      responses: {},
    },
    () => {
      throw new NotSupported("/v1/forward");
    },
  );

  route(
    {
      method: "get",
      path: "/metrics",
      summary: "Prometheus metrics",
      auth: true,
      responses: { 200: { description: "Prometheus text format", contentType: "text/plain; version=0.0.4" } },
    },
    (c) => c.body(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );

  return app;
}

/** The path and query of an absolute URL, as the URL parser left it. */
function pathOf(url: string): string {
  const slash = url.indexOf("/", url.indexOf("//") + 2);
  return slash === -1 ? "/" : url.slice(slash);
}

function isDotSegment(segment: string): boolean {
  const s = segment.toLowerCase().replaceAll("%2e", ".");
  return s === "." || s === "..";
}

async function readJson(c: Ctx): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") throw new InvalidInput("the body is empty: expected JSON");
  try {
    return JSON.parse(text);
  } catch {
    throw new InvalidInput("the body is not valid JSON");
  }
}

function parse<T>(schema: z.ZodMiniType<T>, input: unknown, where: string): T {
  const result = schema.safeParse(input);
  if (!result.success) {
    const issues = issuesOf(result.error);
    throw new InvalidInput(`invalid ${where}: ${describeIssues(issues)}`, issues);
  }
  return result.data;
}
