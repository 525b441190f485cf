// Every runtime answers the contract table the same way (table.ts). A runtime joins with one entry
// in RUNTIMES: how to send a raw request target to it.
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../core/src/log";
import { createRuntime, type Runtime } from "../../core/src/runtime";
import { startServer } from "../../core/src/server";
import { memoryStore } from "../../core/src/stores/memory";
import { newKey, tempDir } from "../helpers";
import { type CheckedAnswer, type OpenApiDocument, openApiChecker } from "./openapi-check";
import { answerOf } from "./raw-http";
import { CONTRACT, type ContractCase, SEED } from "./table";

interface Target {
  runtime: Runtime;
  logs: string[];
  send(c: ContractCase): Promise<CheckedAnswer>;
  close(): Promise<void>;
  /** Why the platform cannot deliver this request as it was sent (its case is then skipped, saying so). */
  cannotCarry?(c: ContractCase): string | undefined;
  /** The answer expected of this platform, where the table says it differs (`onHttpApi`, `onAzure`), and why. */
  expected?(c: ContractCase): { expected: ContractCase; why?: string };
}

async function newRuntime(): Promise<{ runtime: Runtime; masterKey: string; logs: string[] }> {
  const masterKey = newKey();
  const logs: string[] = [];
  const runtime = await createRuntime({
    // The contract is the runtime's: any store will do, and memory is the quickest.
    stores: [memoryStore],
    settings: { env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: await tempDir() } },
    log: createLogger((line) => logs.push(line)),
    audit: () => {}, // audit lines are not this test's subject
  });
  return { runtime, masterKey, logs };
}

function headersOf(c: ContractCase, masterKey: string): Record<string, string> {
  const headers: Record<string, string> = {};
  if (c.auth !== false) headers.authorization = `Bearer ${masterKey}`;
  if (bodyOf(c) !== undefined) headers["content-type"] = "application/json";
  return headers;
}

/** The case's body as sent: its JSON, or its raw text. */
function bodyOf(c: ContractCase): string | undefined {
  return c.rawBody ?? (c.body === undefined ? undefined : JSON.stringify(c.body));
}

/** Sends one request over a fresh TCP connection, the target written exactly as given. */
function rawHttp(port: number, method: string, target: string, headers: Record<string, string>, body?: string) {
  return new Promise<CheckedAnswer>((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (d) => chunks.push(d));
    socket.on("error", reject);
    socket.on("end", () => resolve(answerOf(Buffer.concat(chunks))));
    const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
    const head = [
      `${method} ${target} HTTP/1.1`,
      "host: 127.0.0.1",
      "connection: close",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      ...(body === undefined ? [] : [`content-length: ${payload.length}`]),
    ];
    socket.end(Buffer.concat([Buffer.from(`${head.join("\r\n")}\r\n\r\n`), payload]));
  });
}

const RUNTIMES: Record<string, () => Promise<Target>> = {
  "local server over a real socket": async () => {
    const { runtime, masterKey, logs } = await newRuntime();
    const server = await startServer(runtime, { host: "127.0.0.1", port: 0 });
    const port = Number(new URL(server.url).port);
    return {
      runtime,
      logs,
      send: (c) => rawHttp(port, c.method, c.target, headersOf(c, masterKey), bodyOf(c)),
      close: async () => {
        await server.close();
        await runtime.close();
      },
    };
  },
  "exported fetch(request, raw)": async () => {
    const { runtime, masterKey, logs } = await newRuntime();
    return {
      runtime,
      logs,
      send: async (c) => {
        // The URL parser normalises `..` and drops `#x`, as a platform's would: only `raw` keeps them.
        const request = new Request(`http://localhost${c.target}`, {
          method: c.method,
          headers: headersOf(c, masterKey),
          body: bodyOf(c),
        });
        const res = await runtime.fetch(request, { path: c.target });
        return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() };
      },
      close: () => runtime.close(),
      // The caller builds the Request: fetch's cannot hold a body on GET or HEAD. And the raw path
      // is the runtime helper's to give in origin form (node's server, express: see their entries).
      cannotCarry: (c) =>
        (c.method === "GET" || c.method === "HEAD") && bodyOf(c) !== undefined
          ? "a fetch Request cannot carry a body on GET or HEAD"
          : c.target.startsWith("/")
            ? undefined
            : "an absolute-form target is a wire's: a runtime's raw-request helper passes its path",
    };
  },
};

/**
 * The rawPath an API Gateway HTTP API gives the function for a path as sent, as live captures of
 * AWS show it (hotsock/voker's aws-ingress-probe): percent-decoded, cut at a `?` that decoding made
 * (`%3F`), then decoded once more (`%2525` arrives as `%`, `%253F` as `?`); undefined where the
 * gateway refuses the path itself (a `%25` before no escape: its own 400). Whether the part cut off
 * at `%3F` reaches the query string is not in those captures: here it is dropped.
 */
function httpApiRawPath(sent: string): string | undefined {
  try {
    const once = decodeURIComponent(sent);
    const cut = once.indexOf("?");
    return decodeURIComponent(cut === -1 ? once : once.slice(0, cut));
  } catch {
    return undefined;
  }
}

describe("the HTTP API's rawPath, as these tests build it", () => {
  it("is what AWS delivered in live captures", () => {
    for (const [sent, delivered] of [
      ["/capture/space%20value", "/capture/space value"],
      ["/capture/question%3Fvalue", "/capture/question"],
      ["/capture/hash%23value", "/capture/hash#value"],
      ["/capture/slash%2Fvalue", "/capture/slash/value"],
      ["/capture/literal%252Fvalue", "/capture/literal/value"],
      ["/capture/literal%253Fvalue", "/capture/literal?value"],
      ["/capture/literal%2525value", "/capture/literal%value"],
      ["/capture/percent%25done", undefined],
    ]) {
      expect(httpApiRawPath(sent as string), sent).toBe(delivered);
    }
  });
});

/**
 * The AWS handler fed the payload-2.0 events Lambda builds: the request target split into `rawPath`
 * and `rawQueryString` at the first `?`, as AWS splits it. `shape` tells a Function URL event (its
 * rawPath as sent) from an API Gateway HTTP API one (on a custom domain, or its own `execute-api`
 * endpoint with a named stage first in the path), whose rawPath AWS decodes (`httpApiRawPath`).
 */
function awsRuntime(shape: "function-url" | "http-api" | "http-api-named-stage") {
  return async (): Promise<Target> => {
    const masterKey = newKey();
    const logs: string[] = [];
    const { awsHandlers } = await import("../../functions/aws/src/index");
    // The contract is the runtime's: any store will do, and memory is the quickest.
    const lambda = awsHandlers({
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: masterKey },
      log: createLogger((line) => logs.push(line)),
    });
    const runtime = await lambda.runtime();
    return {
      runtime,
      logs,
      send: async (c) => {
        const cut = c.target.indexOf("?");
        const staged = shape === "http-api-named-stage";
        const host = {
          "function-url": "abc123.lambda-url.eu-west-1.on.aws",
          "http-api": "secrets.example.com",
          "http-api-named-stage": "abc123.execute-api.eu-west-1.amazonaws.com",
        }[shape];
        const headers: Record<string, string> = { host, ...headersOf(c, masterKey) };
        const sent = cut === -1 ? c.target : c.target.slice(0, cut);
        const path = shape === "function-url" ? sent : (httpApiRawPath(sent) as string);
        const event = {
          version: "2.0",
          routeKey: "$default",
          // On the API's own endpoint a named stage comes first in the path, as the caller sent it.
          rawPath: staged ? `/prod${path}` : path,
          rawQueryString: cut === -1 ? "" : c.target.slice(cut + 1),
          headers,
          ...(bodyOf(c) !== undefined && { body: bodyOf(c), isBase64Encoded: false }),
          requestContext: {
            http: { method: c.method, path: c.target, protocol: "HTTP/1.1", sourceIp: "127.0.0.1", userAgent: "test" },
            domainName: headers.host,
            ...(shape === "function-url"
              ? { apiId: "abc123" }
              : { apiId: "abc123", stage: staged ? "prod" : "$default" }),
          },
        };
        const result = (await lambda.http(event as never, {} as never)) as {
          statusCode: number;
          headers?: Record<string, string>;
          body: string;
          isBase64Encoded: boolean;
        };
        const body = result.isBase64Encoded ? Buffer.from(result.body, "base64").toString("utf8") : result.body;
        return { status: result.statusCode, headers: result.headers ?? {}, body };
      },
      close: () => runtime.close(),
      // Lambda's event has the query string after the `?`, not the `?`: `prod?` arrives as `prod`.
      cannotCarry: (c) => {
        if (c.target.endsWith("?")) return "a payload-2.0 event cannot show an empty query (`?` and nothing after it)";
        if (!c.target.startsWith("/")) return "a payload-2.0 event carries the path alone (an absolute-form target's)";
        const cut = c.target.indexOf("?");
        if (shape !== "function-url" && httpApiRawPath(cut === -1 ? c.target : c.target.slice(0, cut)) === undefined) {
          return "API Gateway refuses this path itself (its own 400: a `%25` before no escape, decoded twice)";
        }
        return undefined;
      },
      expected: (c) => {
        if (shape === "function-url" || !c.onHttpApi) return { expected: c };
        // The HTTP API's answer in place of the table's: its status, code (or none) and store after.
        const { status, code, after, why } = c.onHttpApi;
        return { expected: { ...c, status, code, after }, why };
      },
    };
  };
}

/** The real functions-framework server (express, its body parser) on loopback, with the GCP http target. */
RUNTIMES["google functions-framework server over a real socket"] = async () => {
  const masterKey = newKey();
  const logs: string[] = [];
  const functions = await import("@google-cloud/functions-framework");
  const { getTestServer } = await import("@google-cloud/functions-framework/testing");
  const { gcpFunctions } = await import("../../functions/gcp/src/index");
  const targets = gcpFunctions({
    stores: [memoryStore],
    env: { LITELLM_MASTER_KEY: masterKey },
    log: createLogger((line) => logs.push(line)),
  });
  functions.http("contract-http", targets.http);
  const server = getTestServer("contract-http");
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const runtime = await targets.runtime();
  return {
    runtime,
    logs,
    send: (c) => rawHttp(port, c.method, c.target, headersOf(c, masterKey), bodyOf(c)),
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await runtime.close();
    },
    // functions-framework parses a JSON body before any function runs, with no hook to change it.
    cannotCarry: (c) =>
      c.rawBody === undefined
        ? undefined
        : "functions-framework's body parser answers a JSON body that does not parse (its own 400) before the function runs",
  };
};

/** What PathString.ToUriComponent keeps as it is: a path's own characters, and a `%XX` triplet. */
const PATH_CHARACTER = /[A-Za-z0-9\-._~!$&'()*+,;=:@/]/;

/**
 * The URL the Azure Functions host hands the worker for a request target (azure-functions-host
 * GrpcMessageConversionExtensions.ToRpcHttp: scheme://host + Request.Path.ToUriComponent() +
 * Request.QueryString): Kestrel decodes every escape of the path but `%2F` (UrlDecoder) and removes
 * its dot segments; PathString escapes again what a path cannot hold and keeps a `%XX` triplet as it
 * is, so a `%25XX` arrives as `%XX`. The query is as sent, an empty `?` included. `undefined`: a
 * target this does not model (a raw backslash or a byte outside ASCII, escapes that are not UTF-8).
 */
function azureHostUrl(target: string): string | undefined {
  if (/[^\x21-\x7e]|\\/.test(target)) return undefined;
  const origin = target.startsWith("/") ? target : target.replace(/^[a-z]+:\/\/[^/]*/i, "");
  const cut = origin.indexOf("?");
  let decoded: string;
  try {
    decoded = decodeURIComponent((cut === -1 ? origin : origin.slice(0, cut)).replace(/%2F/gi, "%252F"));
  } catch {
    return undefined;
  }
  const segments: string[] = [];
  const parts = decoded.split("/").slice(1);
  for (const [i, part] of parts.entries()) {
    const last = i === parts.length - 1;
    if (part === "." || part === "..") {
      if (part === "..") segments.pop();
      if (last) segments.push("");
    } else segments.push(part);
  }
  const path = `/${segments.join("/")}`.replace(/%[0-9A-Fa-f]{2}|[\s\S]/gu, (c) =>
    c.length === 3 || PATH_CHARACTER.test(c)
      ? c
      : [...Buffer.from(c)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`).join(""),
  );
  return `https://app.azurewebsites.net${path}${cut === -1 ? "" : origin.slice(cut)}`;
}

describe("the Azure host's URL, as these tests build it", () => {
  it("decodes the path once (but %2F), keeps the escapes that leaves, resolves dot segments, keeps the query", () => {
    for (const [sent, handed] of [
      ["/v1/secrets/a%2540b", "/v1/secrets/a%40b"],
      ["/v1/secrets/a%252Fb", "/v1/secrets/a%2Fb"],
      ["/v1/secrets/a%2Fb", "/v1/secrets/a%2Fb"],
      ["/v1/secrets/a%20b", "/v1/secrets/a%20b"],
      ["/v1/secrets/a%40b", "/v1/secrets/a@b"],
      ["/v1/secrets/c/%2e%2e/d", "/v1/secrets/d"],
      ["/v1/secrets/c/%252e%252e/d", "/v1/secrets/c/%2e%2e/d"],
      ["/v1/secrets/c/..", "/v1/secrets/"],
      ["/v1/secrets/prod?", "/v1/secrets/prod?"],
      ["/v1/secrets/prod%3Fx", "/v1/secrets/prod%3Fx"],
      ["http://127.0.0.1/v1/secrets/prod?refresh=true", "/v1/secrets/prod?refresh=true"],
    ]) {
      expect(azureHostUrl(sent as string), sent).toBe(`https://app.azurewebsites.net${handed}`);
    }
    expect(azureHostUrl("/v1/secrets/a\\b")).toBeUndefined();
  });
});

/**
 * The Azure HTTP handler fed @azure/functions HttpRequest objects, as the Functions worker builds
 * them from the URL the host hands over (`azureHostUrl`).
 */
RUNTIMES["azure functions: HttpRequest objects"] = async () => {
  const masterKey = newKey();
  const logs: string[] = [];
  const { HttpRequest, InvocationContext } = await import("@azure/functions");
  const { azureFunctions } = await import("../../functions/azure/src/index");
  const handlers = azureFunctions({
    stores: [memoryStore],
    env: { LITELLM_MASTER_KEY: masterKey },
    log: createLogger((line) => logs.push(line)),
  });
  const runtime = await handlers.runtime();
  return {
    runtime,
    logs,
    send: async (c) => {
      const request = new HttpRequest({
        method: c.method,
        url: azureHostUrl(c.target) as string,
        headers: headersOf(c, masterKey),
        ...(bodyOf(c) !== undefined && { body: { string: bodyOf(c) as string } }),
      });
      const res = await handlers.http(request, new InvocationContext());
      const headers: Record<string, string> = {};
      for (const [k, v] of res.headers as [string, string][]) headers[k] = headers[k] ? `${headers[k]}, ${v}` : v;
      const body = res.body === undefined ? "" : Buffer.from(res.body as Uint8Array).toString("utf8");
      return { status: res.status ?? 200, headers, body };
    },
    close: () => runtime.close(),
    cannotCarry: (c) => {
      if (azureHostUrl(c.target) === undefined) {
        return "what the Azure Functions host hands over for this target is not modelled here (a raw backslash, a byte outside ASCII)";
      }
      return /\/(?:\.|%2e){1,2}(?:[/?#]|$)/i.test(c.target)
        ? "the Azure Functions host removes dot segments (`..`, `%2e%2e`) before the worker runs: the function cannot see them to refuse them"
        : undefined;
    },
    expected: (c) => {
      if (!c.onAzure) return { expected: c };
      const { status, code, after, why } = c.onAzure;
      return { expected: { ...c, status, code, after }, why };
    },
  };
};

RUNTIMES["aws lambda: Function URL events"] = awsRuntime("function-url");
RUNTIMES["aws lambda: API Gateway HTTP API events (custom domain, rawPath decoded)"] = awsRuntime("http-api");
RUNTIMES["aws lambda: API Gateway HTTP API events on a named stage (/prod first in rawPath, decoded)"] =
  awsRuntime("http-api-named-stage");

/** Names a request could write by mistake: absent before every case, and after it unless it lists them. */
const UNSEEDED = ["new", "a/b", "x", "a", "prod;x", "a@b"];

for (const [runtimeName, start] of Object.entries(RUNTIMES)) {
  describe(`runtime contract: ${runtimeName}`, () => {
    let target: Target;
    let checker: ReturnType<typeof openApiChecker>;
    beforeAll(async () => {
      target = await start();
      // The document as this runtime serves it: each answer below must be as it says.
      const doc = await target.send({
        name: "openapi",
        method: "GET",
        target: "/openapi.json",
        auth: false,
        status: 200,
      });
      checker = openApiChecker(JSON.parse(doc.body) as OpenApiDocument);
    });
    afterAll(() => target.close());

    it.for(CONTRACT.map((c) => [c.name, c] as const))("%s", async ([, sent], context) => {
      const blind = target.cannotCarry?.(sent);
      if (blind) context.skip(blind);
      // The platform's own answer where the table marks it as different, its reason in the report.
      const { expected: c, why } = target.expected?.(sent) ?? { expected: sent };
      if (why) await context.annotate(`differs on this platform: ${why}`);
      const { manager } = target.runtime;
      for (const name of UNSEEDED) await manager.delete(name).catch(() => {});
      for (const [name, value] of Object.entries(SEED)) await manager.put(name, value);

      const answer = await target.send(c);
      expect(answer.status).toBe(c.status);
      expect(answer.headers["cache-control"], "every answer is no-store").toBe("no-store");
      if (c.code) expect(JSON.parse(answer.body).error.code).toBe(c.code);
      if (c.status === 401) expect(answer.headers["www-authenticate"]).toMatch(/^Bearer\b/);
      if (c.status === 503) expect(answer.headers["retry-after"]).toMatch(/^\d+$/);
      if (c.allow) expect(new Set(answer.headers.allow?.split(/,\s*/))).toEqual(new Set(c.allow));
      // As a generated client reads it: the status, content type, body and required headers documented.
      expect(checker.check(c.method, c.target, answer), "the answer is as the OpenAPI document says").toEqual([]);
      if (c.status === 200 && c.method === "GET" && c.target.startsWith("/v1/secrets/")) {
        expect(JSON.parse(answer.body).stale).toBe(false);
      }

      const expected: Record<string, string | undefined> = { ...SEED, ...c.after };
      for (const [name, value] of Object.entries(expected)) {
        const held = await target.runtime.store.get(name);
        expect(held?.value, `${name} after ${c.method} ${c.target}`).toBe(value);
      }
      for (const name of UNSEEDED) {
        if (!(c.after && name in c.after)) expect(await target.runtime.store.get(name), name).toBeUndefined();
      }
    });
  });
}

describe("a runtime that does not pass the raw request", () => {
  it("does not compile, and at run time refuses every route with 500 and one log line", async () => {
    const { runtime, masterKey, logs } = await newRuntime();
    await runtime.manager.put("d", "d-value");
    const request = new Request("http://localhost/v1/secrets/c/../d", {
      method: "DELETE",
      headers: { authorization: `Bearer ${masterKey}` },
    });
    // @ts-expect-error: the raw request is a required argument
    const res = await runtime.fetch(request);
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error).toEqual({ code: "internal", message: "internal error" });
    expect((await runtime.store.get("d"))?.value).toBe("d-value");
    const refused = logs.filter((l) => l.includes("passed no raw request"));
    expect(refused).toHaveLength(1);
    expect(JSON.parse(refused[0] as string)).toMatchObject({ level: "error", msg: "internal error" });
    expect(JSON.parse(refused[0] as string).reason).toContain("refusing DELETE");
    // An object without a path string is no raw request either.
    // @ts-expect-error: `raw.path` is required
    expect((await runtime.fetch(new Request("http://localhost/health"), {})).status).toBe(500);
    await runtime.close();
  });
});
