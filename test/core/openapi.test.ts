// The served OpenAPI document, as a client generated from it reads it.
import { createServer } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { Ajv2020 } from "ajv/dist/2020";
import { afterAll, describe, expect, it } from "vitest";
import { MAX_KEY_EVENTS_PER_REQUEST, MAX_LIST_LIMIT } from "../../core/src/api-schemas";
import { startServer } from "../../core/src/server";
import { inProcessApp } from "../helpers";
import { type CheckedAnswer, type OpenApiDocument, openApiChecker } from "../runtime-contract/openapi-check";
import { answerOf } from "../runtime-contract/raw-http";

async function servedDocument() {
  const app = await inProcessApp();
  const doc = (await (await app.request("/openapi.json", { token: null })).json()) as OpenApiDocument;
  const operations = Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]) => ({ path, method, operation })),
  );
  return { ...app, doc, operations };
}

describe("the OpenAPI document", () => {
  it("documents on every operation what the HTTP parser may answer before any route: 408 and 431", async () => {
    const { operations } = await servedDocument();
    for (const { path, method, operation } of operations) {
      expect(operation.responses["431"]?.description, `${method} ${path}`).toContain("headers_too_large");
      expect(operation.responses["408"]?.description, `${method} ${path}`).toContain("request_timeout");
    }
  });

  it("gives every operation a stable operationId, unique in the document", async () => {
    const { operations } = await servedDocument();
    const ids = operations.map(({ operation }) => operation.operationId);
    expect(
      ids.every((id) => typeof id === "string" && /^[a-z][A-Za-z]*$/.test(id)),
      JSON.stringify(ids),
    ).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    // What generated clients name their methods: changing one breaks them.
    expect(
      Object.fromEntries(operations.map(({ path, method, operation }) => [`${method} ${path}`, operation.operationId])),
    ).toMatchObject({
      "get /v1/secrets": "listSecrets",
      "get /v1/secrets/{name}": "getSecret",
      "put /v1/secrets/{name}": "putSecret",
      "delete /v1/secrets/{name}": "deleteSecret",
      "post /v1/resolve": "resolve",
      "post /v1/encrypt": "encrypt",
      "post /v1/decrypt": "decrypt",
      "post /v1/key-events": "applyKeyEvents",
      "get /health": "health",
      "get /ready": "ready",
      "get /openapi.json": "openapi",
      "get /metrics": "metrics",
      "get /v1/forward/{model_name}/{path}": "forwardGet",
      "post /v1/forward/{model_name}/{path}": "forwardPost",
      "put /v1/forward/{model_name}/{path}": "forwardPut",
      "patch /v1/forward/{model_name}/{path}": "forwardPatch",
      "delete /v1/forward/{model_name}/{path}": "forwardDelete",
      "options /v1/forward/{model_name}/{path}": "forwardOptions",
    });
  });

  it("states the limits the server enforces: what it refuses as invalid, the schemas refuse", async () => {
    const { doc, request } = await servedDocument();
    const ajv = new Ajv2020({ strict: false });
    const limit = doc.paths["/v1/secrets"]?.get?.parameters?.find((p) => p.name === "limit");
    const limitValid = ajv.compile(limit?.schema ?? {});
    for (const n of ["0", "1", "9", "10", "99", "100", "999", "1000", "1001", "1999", "9999", "01", "-1"]) {
      const served = (await request(`/v1/secrets?limit=${n}`)).status;
      expect(served === 400 ? "refused" : "accepted", `limit=${n}`).toBe(limitValid(n) ? "accepted" : "refused");
    }
    expect(limitValid(String(MAX_LIST_LIMIT))).toBe(true);
    expect(limitValid(String(MAX_LIST_LIMIT + 1))).toBe(false);

    const bodyOf = (path: string, method: string) =>
      ajv.compile(doc.paths[path]?.[method]?.requestBody?.content["application/json"]?.schema ?? {});
    const tags = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`t${i}`, "v"]));
    const putValid = bodyOf("/v1/secrets/{name}", "put");
    for (const n of [50, 51]) {
      const body = { value: "v", tags: tags(n) };
      const served = (await request("/v1/secrets/TAGGED", { method: "PUT", json: body })).status;
      expect(served === 400 ? "refused" : "accepted", `${n} tags`).toBe(putValid(body) ? "accepted" : "refused");
    }
    const eventsValid = bodyOf("/v1/key-events", "post");
    // Well formed; refused in its result (store_virtual_keys is off): the request is accepted.
    const event = { id: "e", type: "key.deleted", occurred_at: new Date().toISOString(), key_alias: "a" };
    for (const n of [0, 1, MAX_KEY_EVENTS_PER_REQUEST, MAX_KEY_EVENTS_PER_REQUEST + 1]) {
      const body = Array(n).fill(event);
      const served = (await request("/v1/key-events", { method: "POST", json: body })).status;
      expect(served === 400 ? "refused" : "accepted", `${n} events`).toBe(eventsValid(body) ? "accepted" : "refused");
    }
  });

  it("describes a key event as it is validated: what the schema refuses, the server refuses as malformed", async () => {
    // Before: the body was documented as any array or object, so a generated client had no fields.
    const { doc } = await servedDocument();
    const { request } = await inProcessApp({
      config: "general_settings:\n  key_management_settings:\n    store_virtual_keys: true\n",
    });
    const ajv = new Ajv2020({ strict: false });
    ajv.addFormat("date-time", { validate: (s: string) => !Number.isNaN(Date.parse(s)) });
    const valid = ajv.compile(
      doc.paths["/v1/key-events"]?.post?.requestBody?.content["application/json"]?.schema ?? { not: {} },
    );
    const at = new Date().toISOString();
    const good = { id: "e1", type: "key.created", occurred_at: at, key_alias: "doc-a", key: "sk-doc" };
    const events: Record<string, unknown>[] = [
      good,
      { ...good, id: "e2", type: "key.deleted", key: undefined },
      { ...good, id: "e3", token_hash: "a".repeat(64), key_alias: null, team_id: null },
      { ...good, id: undefined },
      { ...good, id: "" },
      { ...good, type: "key.updated" },
      { ...good, occurred_at: undefined },
      { ...good, token_hash: "not-a-hash" },
      { ...good, key: "" },
      { ...good, team_id: 7 },
      // (What JSON Schema cannot say, key XOR key_ciphertext and a ciphertext's shape, the description says.)
    ];
    for (const event of events) {
      const res = await request("/v1/key-events", { method: "POST", json: [event] });
      const [result] = ((await res.json()) as { results: { status: string; message?: string }[] }).results;
      const malformed = result?.status === "refused" && /malformed/.test(result.message ?? "");
      expect(malformed ? "refused" : "accepted", JSON.stringify(event)).toBe(valid([event]) ? "accepted" : "refused");
    }
    expect(valid([good])).toBe(true);
  });

  it("documents every method a path's Allow names, HEAD included, with the status it answers", async () => {
    // Before: HEAD was answered and in Allow on every GET route, documented on forwarding's only.
    const { doc, request } = await servedDocument();
    const concrete = (path: string) =>
      path.replace("{name}", "DOC_NAME").replace("{model_name}", "m").replace("{path}", "p");
    for (const path of Object.keys(doc.paths)) {
      const refused = await request(concrete(path), { method: "PROPFIND" });
      expect(refused.status, path).toBe(405);
      const allowed = (refused.headers.get("allow") ?? "").split(/,\s*/).filter(Boolean);
      expect(allowed.length, path).toBeGreaterThan(0);
      for (const method of allowed) {
        const operation = doc.paths[path]?.[method.toLowerCase()];
        expect(operation, `${method} ${path}`).toBeDefined();
        if (method !== "HEAD") continue;
        const head = await request(concrete(path), { method: "HEAD" });
        expect(Object.keys(operation?.responses ?? {}), `HEAD ${path}`).toContain(String(head.status));
        expect(await head.text(), `HEAD ${path}`).toBe("");
      }
    }
  });

  it("declares the headers every 401 and 503 carries", async () => {
    const { operations } = await servedDocument();
    let seen401 = 0;
    let seen503 = 0;
    for (const { path, method, operation } of operations) {
      const where = `${method} ${path}`;
      // Forwarding's may be the upstream's own answer, which carries what the upstream sent.
      const required = operation.responses.default === undefined;
      const unauthorized = operation.responses["401"];
      if (unauthorized) {
        seen401++;
        expect(unauthorized.headers?.["WWW-Authenticate"], where).toMatchObject({ required });
      }
      const unavailable = operation.responses["503"];
      if (unavailable) {
        seen503++;
        expect(unavailable.headers?.["Retry-After"], where).toMatchObject({ required, schema: { type: "integer" } });
      }
    }
    expect(seen401).toBeGreaterThan(5);
    // /ready's and key events' own 503s included.
    expect(seen503).toBeGreaterThan(3);
  });
});

describe("forwarding, as the document describes it", () => {
  const FORWARD = "/v1/forward/{model_name}/{path}";

  it("is usable from a generated client: every method and HEAD, the upstream's answer, an optional body, the path's rules", async () => {
    const { doc } = await servedDocument();
    const item = doc.paths[FORWARD] as OpenApiDocument["paths"][string];
    expect(Object.keys(item).sort()).toEqual(["delete", "get", "head", "options", "patch", "post", "put"]);
    for (const [method, operation] of Object.entries(item)) {
      expect(operation.responses.default?.description, method).toContain("upstream");
      if (method === "head") {
        for (const r of Object.values(operation.responses)) expect(r.content, "HEAD has no body").toBeUndefined();
      } else {
        expect(operation.responses.default?.content, method).toEqual({ "*/*": {} });
      }
      if (method === "get" || method === "head") expect(operation.requestBody, method).toBeUndefined();
      else expect(operation.requestBody, method).toMatchObject({ required: false, content: { "*/*": {} } });
      const path = operation.parameters?.find((p) => p.name === "path");
      expect(path?.description).toMatch(/raw/);
      expect(path?.description).toMatch(/empty/);
    }
  });

  // A plain HTTP upstream on loopback: what it answers is passed through.
  const upstream = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (req.url?.startsWith("/v1/unauthorized")) {
        // An upstream's 401 (a key it refuses twice): its own body and headers, no WWW-Authenticate.
        res.writeHead(401, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: "Incorrect API key provided", type: "invalid_request_error" } }));
        return;
      }
      if (req.url?.startsWith("/v1/busy")) {
        res.writeHead(503, { "content-type": "text/plain" });
        res.end("overloaded");
        return;
      }
      if (req.url?.startsWith("/v1/stream")) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end("data: one\n\n");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ method: req.method, url: req.url }));
    });
  });
  afterAll(() => new Promise<void>((r) => upstream.close(() => r())));

  it("documents each answer a forward gives: the upstream's of any status and type, and its own errors", async () => {
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const config = [
      "model_list:",
      `  - {model_name: m, litellm_params: {model: openai/x, api_base: "${base}", api_key: os.environ/M_KEY}}`,
      "",
    ].join("\n");
    const ctx = await inProcessApp({ config });
    await ctx.runtime.manager.put("M_KEY", "sk-upstream");
    const doc = (await (await ctx.request("/openapi.json", { token: null })).json()) as OpenApiDocument;
    const checker = openApiChecker(doc);
    const cases: [string, string, unknown, number][] = [
      ["POST", "/v1/forward/m/v1/chat/completions", { model: "x" }, 200],
      ["PUT", "/v1/forward/m/v1/files", { a: 1 }, 200],
      ["GET", "/v1/forward/m/v1/stream", undefined, 200],
      ["HEAD", "/v1/forward/m/v1/models", undefined, 200],
      ["GET", "/v1/forward/m?api-version=1", undefined, 200],
      ["POST", "/v1/forward/m/v1/unauthorized", {}, 401],
      ["GET", "/v1/forward/m/v1/busy", undefined, 503],
      ["GET", "/v1/forward/nope/v1/models", undefined, 404],
      ["GET", "/v1/forward/m/v1/models", undefined, 401], // no key: llm-secrets' own 401
    ];
    for (const [method, target, json, status] of cases) {
      const token = status === 401 && method === "GET" ? null : undefined;
      const res = await ctx.request(target, { method, json, token });
      const answer = { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() };
      expect(answer.status, `${method} ${target}`).toBe(status);
      expect(checker.check(method, target, answer), `${method} ${target}`).toEqual([]);
      // A HEAD is documented by its own operation, not only as a GET's.
      if (method === "HEAD") expect(checker.operationOf(method, target)?.operation.operationId).toBe("forwardHead");
    }
  });
});

describe("the contract's checker of answers against the document", () => {
  it("finds what is not as documented (it passes no answer for want of looking)", async () => {
    const checker = openApiChecker((await servedDocument()).doc);
    const json = { "content-type": "application/json", "cache-control": "no-store" };
    const value = JSON.stringify({ name: "a", value: "v", stale: false });
    const problems = (method: string, target: string, answer: CheckedAnswer) => checker.check(method, target, answer);
    // The good answer passes, so each case below fails for its own fault.
    expect(problems("GET", "/v1/secrets/a", { status: 200, headers: json, body: value })).toEqual([]);
    const bad: [string, string, CheckedAnswer][] = [
      ["a status not documented", "/v1/secrets/a", { status: 418, headers: json, body: value }],
      [
        "another content type",
        "/v1/secrets/a",
        { status: 200, headers: { "content-type": "text/plain" }, body: value },
      ],
      ["no content type", "/v1/secrets/a", { status: 200, headers: {}, body: value }],
      ["a body off its schema", "/v1/secrets/a", { status: 200, headers: json, body: "{}" }],
      [
        "a 401 without WWW-Authenticate",
        "/v1/secrets/a",
        { status: 401, headers: json, body: errorBody("unauthorized") },
      ],
      [
        "a 503 with Retry-After 0",
        "/ready",
        { status: 503, headers: { ...json, "retry-after": "0" }, body: errorBody("backend_unavailable") },
      ],
      ["a 200 on no documented path", "/nope", { status: 200, headers: json, body: value }],
    ];
    for (const [what, target, answer] of bad) expect(problems("GET", target, answer), what).not.toEqual([]);
  });
});

function errorBody(code: string): string {
  return JSON.stringify({ error: { code, message: "m" } });
}

describe("answers made before the app, by the local server's HTTP parser", () => {
  it("are documented on the operation of their path: 431 headers_too_large and 408 request_timeout", async () => {
    const ctx = await servedDocument();
    const server = await startServer(ctx.runtime, {
      host: "127.0.0.1",
      port: 0,
      timeouts: { headersTimeoutMs: 300, requestTimeoutMs: 1_000, checkIntervalMs: 50 },
    });
    const checker = openApiChecker(ctx.doc);
    try {
      const port = Number(new URL(server.url).port);
      const key = `authorization: Bearer ${ctx.masterKey}\r\n`;
      const cases = [
        // Headers over 16 KiB.
        ["GET", "/v1/secrets/a", `${key}x-big: ${"b".repeat(20_000)}\r\n\r\n`, 431],
        ["PUT", "/v1/secrets/a", `${key}x-big: ${"b".repeat(20_000)}\r\n\r\n`, 431],
        // Headers that never end: the headers timeout.
        ["GET", "/v1/secrets/a", key, 408],
        ["POST", "/v1/resolve", key, 408],
      ] as const;
      for (const [method, target, rest, status] of cases) {
        const answer = await rawAnswer(port, `${method} ${target} HTTP/1.1\r\nhost: x\r\n${rest}`);
        expect(answer.status, `${method} ${target}`).toBe(status);
        expect(checker.check(method, target, answer), `${method} ${target} ${status}`).toEqual([]);
      }
    } finally {
      await server.close();
    }
  });
});

/** What the server answers to bytes sent as they are, on a connection it then closes. */
function rawAnswer(port: number, raw: string): Promise<CheckedAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("error", reject);
    socket.on("close", () => resolve(answerOf(Buffer.concat(chunks))));
    socket.write(raw);
  });
}
