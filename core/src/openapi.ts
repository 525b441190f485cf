/**
 * The OpenAPI 3.1 document, generated from the routes the app registers and the zod schemas
 * those routes validate with.
 */

import * as z from "zod/mini";
import { ErrorResponse } from "./api-schemas";
import { ERROR_STATUS, type ErrorCode } from "./errors";

/** What a route of method `all` answers (forwarding: whatever the upstream API takes; HEAD as GET). */
export const ALL_METHODS = ["get", "post", "put", "patch", "delete", "options"] as const;
/** A route of method `all` in the document: HEAD too, which the app answers as GET without its body. */
const DOCUMENTED_ALL = [...ALL_METHODS, "head"] as const;

export interface RouteSpec {
  method: "get" | "put" | "post" | "delete" | "all";
  /**
   * The operation's stable id, unique in the document (what a generated client names its method):
   * a route of method `all` gets one per method, this with the method after it (`forwardPost`).
   */
  operationId: string;
  /** OpenAPI path template, e.g. `/v1/secrets/{name}`; a last parameter may hold slashes. */
  path: string;
  summary: string;
  /** Whether the route needs `Authorization: Bearer <master key>`. */
  auth: boolean;
  body?: z.ZodMiniType;
  /**
   * The body as the document shows it, where the route takes more at the door than it applies (key
   * events: each is validated on its own, so one malformed event does not refuse the others).
   */
  documentedBody?: z.ZodMiniType;
  query?: z.ZodMiniType;
  /** Error codes the route answers besides the ones every route may give. */
  errors?: ErrorCode[];
  responses: Record<number, { description: string; schema?: z.ZodMiniType; contentType?: string }>;
  /** What the path's parameters are, by name (the document's descriptions). */
  parameters?: Record<string, string>;
  /**
   * The route passes another API's answers through (forwarding): the document gives it a `default`
   * response (`answer`) of any content type, an optional body of any type (`body`) on every method
   * but GET and HEAD, and says that each error status may be the upstream's own answer instead.
   */
  passthrough?: { answer: string; body: string };
}

type JsonSchema = Record<string, unknown>;

/** The headers an answer of a status always carries (errors.ts's toHttpError; /ready's and key events' 503 too). */
const STATUS_HEADERS: Readonly<Record<number, JsonSchema>> = {
  401: {
    "WWW-Authenticate": {
      description: "The scheme to authenticate with: `Bearer`",
      required: true,
      schema: { type: "string" },
    },
  },
  503: {
    "Retry-After": {
      description: "Seconds to wait before trying again",
      required: true,
      schema: { type: "integer", minimum: 1 },
    },
  },
};

/**
 * A response object, with the headers its status always carries; `upstream`: the status may be an
 * upstream's answer passed through, which carries only what the upstream sent (none required).
 */
function response(status: number, description: string, content?: JsonSchema, upstream = false): JsonSchema {
  let headers = STATUS_HEADERS[status];
  if (headers && upstream) {
    headers = Object.fromEntries(
      Object.entries(headers).map(([name, h]) => [
        name,
        {
          ...(h as JsonSchema),
          required: false,
          description: `${(h as JsonSchema).description} (on llm-secrets' own answers)`,
        },
      ]),
    );
  }
  return { description, ...(headers && { headers }), ...(content && { content }) };
}

/** A HEAD operation's answers: a GET's, without bodies. */
function withoutBodies(responses: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(responses).map(([status, r]) => {
      const { content: _, ...rest } = r as JsonSchema;
      return [status, rest];
    }),
  );
}

function schemaOf(schema: z.ZodMiniType, io: "input" | "output"): JsonSchema {
  const { $schema: _, ...json } = z.toJSONSchema(schema, { io, unrepresentable: "any" }) as JsonSchema;
  return json;
}

export function buildOpenApi(routes: readonly RouteSpec[], version: string): JsonSchema {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorSchema = { $ref: "#/components/schemas/Error" };

  for (const route of routes) {
    const codes = new Set<ErrorCode>(route.errors ?? []);
    if (route.auth) codes.add("unauthorized");
    // On every operation: admission refuses a path with `.` or `..` segments whatever the route, and
    // so does a runtime its own way (Azure's `?code=`).
    codes.add("invalid_request");
    if (route.body) codes.add("payload_too_large");
    codes.add("internal");
    // Refused by the HTTP parser before any route (server.ts), whatever the path: on every operation.
    codes.add("headers_too_large");

    const responses: Record<string, unknown> = {};
    for (const [status, r] of Object.entries(route.responses)) {
      const contentType = r.contentType ?? "application/json";
      responses[status] = response(
        Number(status),
        r.description,
        r.schema || r.contentType
          ? { [contentType]: r.schema ? { schema: schemaOf(r.schema, "output") } : {} }
          : undefined,
      );
    }
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of codes) byStatus.set(ERROR_STATUS[code], [...(byStatus.get(ERROR_STATUS[code]) ?? []), code]);
    const upstream = route.passthrough !== undefined;
    // A status the upstream answered is passed through as it came: its body, of any type, may be
    // the upstream's own (an OpenAI error), not the Error shape.
    const errorContent = upstream
      ? { "application/json": { schema: { anyOf: [errorSchema, {}] } }, "*/*": {} }
      : { "application/json": { schema: errorSchema } };
    const orUpstream = upstream ? "; or the upstream's own answer of this status, passed through as it came" : "";
    for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
      responses[String(status)] = response(status, `Error: ${list.join(", ")}${orUpstream}`, errorContent, upstream);
    }

    // An answer made before any route (server.ts): a request slower than the timeouts.
    responses["408"] = response(
      408,
      `Error: request_timeout (the request line, headers or body took longer than the server's timeouts to arrive)${orUpstream}`,
      errorContent,
      upstream,
    );
    // Another status whose code is not its own (server.ts): an `Expect` other than 100-continue.
    responses["417"] = response(
      417,
      `Error: invalid_request (an Expect header other than 100-continue)${orUpstream}`,
      errorContent,
      upstream,
    );
    if (route.passthrough) responses.default = { description: route.passthrough.answer, content: { "*/*": {} } };

    const parameters: unknown[] = [];
    for (const match of route.path.matchAll(/\{(\w+)\}/g)) {
      const description = match[1] === undefined ? undefined : route.parameters?.[match[1]];
      parameters.push({
        name: match[1],
        in: "path",
        required: true,
        ...(description && { description }),
        schema: { type: "string" },
      });
    }
    if (route.query) {
      const q = schemaOf(route.query, "input") as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(q.properties ?? {})) {
        parameters.push({ name, in: "query", required: q.required?.includes(name) ?? false, schema });
      }
    }

    const operation = {
      operationId: route.operationId,
      summary: route.summary,
      ...(route.auth ? {} : { security: [] }),
      ...(parameters.length ? { parameters } : {}),
      ...(route.body
        ? {
            requestBody: {
              required: true,
              content: { "application/json": { schema: schemaOf(route.documentedBody ?? route.body, "input") } },
            },
          }
        : {}),
      responses,
    };
    // Every GET route answers HEAD too (the router's), documented as its own operation without bodies.
    const methods = route.method === "all" ? DOCUMENTED_ALL : route.method === "get" ? ["get", "head"] : [route.method];
    paths[route.path] ??= {};
    for (const method of methods) {
      const bodiless = method === "get" || method === "head";
      (paths[route.path] as Record<string, unknown>)[method] =
        route.method === "all"
          ? {
              ...operation,
              operationId: `${route.operationId}${method[0]?.toUpperCase()}${method.slice(1)}`,
              ...(route.passthrough &&
                !bodiless && {
                  requestBody: { required: false, description: route.passthrough.body, content: { "*/*": {} } },
                }),
              ...(method === "head" && { responses: withoutBodies(responses) }),
            }
          : method === "head"
            ? { ...operation, operationId: `${route.operationId}Head`, responses: withoutBodies(responses) }
            : operation;
    }
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "llm-secrets",
      version,
      description: "Secret management for LLM gateways, compatible with LiteLLM's secret managers and encryption.",
    },
    components: {
      securitySchemes: {
        masterKey: { type: "http", scheme: "bearer", description: "The master key" },
        // Where a platform's own auth takes Authorization (Function URL IAM, Cloud Functions' invoker).
        litellmApiKey: {
          type: "apiKey",
          in: "header",
          name: "x-litellm-api-key",
          description: "The master key; when this header is sent, it is the key checked, whatever Authorization holds",
        },
      },
      schemas: { Error: schemaOf(ErrorResponse, "output") },
    },
    security: [{ masterKey: [] }, { litellmApiKey: [] }],
    paths,
  };
}
