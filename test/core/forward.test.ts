// Forwarding to LLM APIs through the app, against a fake LLM API over HTTPS (certificates made
// now): the provider's auth header with the stored key, the caller's credentials dropped, SSE
// streamed event by event, a 401 after a key rotation retried once, upstream failures, and the key
// in no answer and no log line.

import type { LookupAddress } from "node:dns";
import { readFileSync } from "node:fs";
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import { createServer, type Server } from "node:https";
import { type AddressInfo, createServer as createNetServer } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished, vi } from "vitest";
import { type ForwardDeps, type ForwardModel, forward, REREAD_INTERVAL_MS } from "../../core/src/forward";
import { closeOutboundAgents } from "../../core/src/outbound";
import type { SecretRecord, StoreFactory } from "../../core/src/secret-store";
import { startServer } from "../../core/src/server";
import { BackendUnavailable, StoreCorrupt } from "../../core/src/store-errors";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";
import { expectNoValueIn, inProcessApp, newKey, until } from "../helpers";

interface Seen {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

const seen: Seen[] = [];
/** What /v1/untyped answers: not UTF-8 (a lone 0xff, a cut sequence), and no Content-Type. */
const UNTYPED = Buffer.from([0x00, 0x01, 0xff, 0xfe, 0xc3, 0x28, 0x80, 0x0a]);
let expectedKey = "";
let releaseStream: () => void = () => {};
/** How many calls to /v1/hang (never answered) ended with their connection closed. */
let hangsClosed = 0;
let api: Server;
let apiUrl = "";

beforeAll(async () => {
  const pki = inject("testPki");
  api = createServer({ key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) }, (req, res) => {
    let body = "";
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const presented = req.headers.authorization ?? req.headers["api-key"] ?? req.headers["x-api-key"];
      const ok = presented === `Bearer ${expectedKey}` || presented === expectedKey;
      if (!ok) {
        res.writeHead(401, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: "Incorrect API key provided" } }));
        return;
      }
      if (req.url?.startsWith("/v1/stream")) {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        res.write("data: first\n\n");
        releaseStream = () => res.end("data: second\n\n");
        return;
      }
      if (req.url?.startsWith("/v1/cut")) {
        // The upstream's connection breaks mid-answer (a reset, a crash): its answer is cut.
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write("data: first\n\n", () => setTimeout(() => res.socket?.destroy(), 20));
        return;
      }
      if (req.url?.startsWith("/v1/hang")) {
        res.on("close", () => hangsClosed++);
        return;
      }
      if (req.url?.startsWith("/v1/redirect")) {
        res.writeHead(302, { location: "https://elsewhere.example/stolen" });
        res.end();
        return;
      }
      if (req.url?.startsWith("/v1/hop")) {
        // Named in Connection: for the hop between the upstream and us only (RFC 9110 section 7.6.1).
        res.writeHead(200, { connection: "keep-alive, x-upstream-hop", "x-upstream-hop": "1", "x-kept": "yes" });
        res.end("{}");
        return;
      }
      if (req.url?.startsWith("/v1/untyped")) {
        // Bytes with no Content-Type (an audio file, a blob): nothing says they are text.
        res.writeHead(200);
        res.end(UNTYPED);
        return;
      }
      if (req.url?.startsWith("/v1/sized")) {
        // What a HEAD (or a 304) says of a body it does not send: its size.
        res.writeHead(req.headers["if-none-match"] ? 304 : 200, { etag: '"v1"', "content-length": "12345" });
        res.end();
        return;
      }
      if (req.url?.startsWith("/v1/reset")) {
        res.writeHead(205);
        res.end();
        return;
      }
      if (req.url?.startsWith("/v1/error")) {
        res.writeHead(429, { "content-type": "application/json", "retry-after": "3" });
        res.end(JSON.stringify({ error: { message: "slow down" } }));
        return;
      }
      res.writeHead(200, { "content-type": "application/json", "x-upstream": "yes" });
      res.end(JSON.stringify({ echo: body, path: req.url }));
    });
  });
  await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
  apiUrl = `https://localhost:${(api.address() as AddressInfo).port}`;
});

afterAll(async () => {
  api.closeAllConnections();
  await new Promise<void>((r) => api.close(() => r()));
  await closeOutboundAgents();
});

/** Counts the backend's reads of `name` from now on (reads past the cache, or cache misses). */
function countReads(backend: { get: (name: string, ...rest: never[]) => Promise<unknown> }, name: string) {
  let reads = 0;
  const original = backend.get.bind(backend);
  backend.get = (n: string, ...rest: never[]) => {
    if (n === name) reads++;
    return original(n, ...rest);
  };
  return () => reads;
}

async function app(key: string) {
  const config = [
    "model_list:",
    "  - model_name: gpt",
    `    litellm_params: {model: openai/gpt-4o, api_base: ${apiUrl}, api_key: os.environ/OPENAI_API_KEY}`,
    "  - model_name: azure-gpt",
    `    litellm_params: {model: azure/gpt-4o, api_base: ${apiUrl}/, api_key: os.environ/AZURE_API_KEY}`,
    "  - model_name: claude",
    `    litellm_params: {model: anthropic/claude, api_base: ${apiUrl}, api_key: os.environ/ANTHROPIC_API_KEY}`,
    // Two entries of one name: the first has nowhere to send to, the second has.
    "  - model_name: azure-provider",
    "    litellm_params: {model: gpt-4o, custom_llm_provider: azure}",
    "  - model_name: azure-provider",
    `    litellm_params: {model: gpt-4o, custom_llm_provider: Azure, api_base: ${apiUrl}, api_key: os.environ/AZURE_API_KEY}`,
    "  - model_name: custom",
    `    litellm_params: {model: openai/x, api_base: ${apiUrl}, api_key: os.environ/OPENAI_API_KEY, auth_header: X-Custom-Key}`,
    // A whole deployment's URL as the api_base (Azure OpenAI's way): the caller adds only the query.
    "  - model_name: deployment",
    `    litellm_params: {model: azure/gpt-4o, api_base: ${apiUrl}/openai/deployments/gpt/chat/completions, api_key: os.environ/AZURE_API_KEY}`,
    "  - model_name: versioned",
    `    litellm_params: {model: azure/gpt-4o, api_base: "${apiUrl}/openai/deployments/gpt/chat/completions?api-version=2024-10-21", api_key: os.environ/AZURE_API_KEY}`,
    "  - model_name: down",
    "    litellm_params: {model: openai/x, api_base: https://127.0.0.1:1, api_key: os.environ/OPENAI_API_KEY}",
    "",
  ].join("\n");
  const ctx = await inProcessApp({ config });
  for (const name of ["OPENAI_API_KEY", "AZURE_API_KEY", "ANTHROPIC_API_KEY"]) await ctx.runtime.manager.put(name, key);
  return ctx;
}

describe("POST /v1/forward/{model}/{path}", () => {
  /** What Cloud Run, API Gateway / SigV4, IAP and Azure App Service put in front of a function. */
  const PLATFORM_CREDENTIALS = {
    "x-serverless-authorization": "Bearer platform-id-token",
    "x-amz-security-token": "platform-session-token",
    "x-amz-date": "20261126T000000Z",
    "x-goog-iap-jwt-assertion": "platform-iap-jwt",
    "x-goog-api-key": "caller-google-key",
    "x-ms-client-principal": "cGxhdGZvcm0=",
    "x-ms-token-aad-access-token": "platform-aad-token",
    "x-amzn-oidc-accesstoken": "platform-alb-oidc-token",
    "x-zumo-auth": "platform-easy-auth-session",
    cookie: "session=caller-cookie",
    "x-functions-key": "caller-functions-key",
    // What the metadata services ask for: never sent on (an api_base pointed at one gets nothing).
    "metadata-flavor": "Google",
    metadata: "true",
    "x-google-metadata-request": "True",
    "x-aws-ec2-metadata-token": "imds-session-token",
    // Named in Connection, so hop-by-hop (RFC 9110 section 7.6.1).
    connection: "keep-alive, x-hop-only",
    "x-hop-only": "1",
  };

  it("injects the provider's header with the stored key and drops the caller's credentials", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request, masterKey, logs, audits } = await app(key);
    const cases: [string, string, string][] = [
      ["gpt", "authorization", `Bearer ${key}`],
      ["azure-gpt", "api-key", key],
      ["claude", "x-api-key", key],
      ["azure-provider", "api-key", key], // custom_llm_provider names the provider
      ["custom", "x-custom-key", key],
    ];
    for (const [model, header] of cases) {
      seen.length = 0;
      const res = await request(`/v1/forward/${model}/v1/chat/completions?api-version=2024-10-21`, {
        method: "POST",
        json: { messages: [{ role: "user", content: "hi" }] },
        headers: { "x-api-key": "caller-supplied", "x-request-id": "r-1", ...PLATFORM_CREDENTIALS },
      });
      if (header === "x-custom-key") {
        // An explicit auth_header the fake does not know: the upstream's 401 passes through.
        expect(res.status).toBe(401);
      } else {
        expect(res.status).toBe(200);
        expect(res.headers.get("x-upstream")).toBe("yes");
        expect(res.headers.get("cache-control")).toBe("no-store");
        const answer = (await res.json()) as { echo: string; path: string };
        expect(JSON.parse(answer.echo)).toEqual({ messages: [{ role: "user", content: "hi" }] });
        expect(answer.path).toBe("/v1/chat/completions?api-version=2024-10-21");
      }
      const upstream = seen.at(-1) as Seen;
      expect(upstream.headers[header], model).toBe(cases.find((c) => c[0] === model)?.[2]);
      expect(upstream.headers["x-request-id"]).toBe("r-1");
      // Our master key and the caller's own provider header never go upstream.
      expect(JSON.stringify(upstream.headers)).not.toContain(masterKey);
      expect(JSON.stringify(upstream.headers)).not.toContain("caller-supplied");
      // Nor do the credentials a platform in front of us adds or reads (replayable against us).
      for (const name of Object.keys(PLATFORM_CREDENTIALS).filter((n) => n !== "connection")) {
        expect(upstream.headers[name], name).toBeUndefined();
      }
    }
    expectNoValueIn(logs, [key]);
    // Each forward is audited with the model's name (its key was read), never the key.
    const forwards = audits.map((l) => JSON.parse(l)).filter((l) => l.audit === "forward");
    expect(forwards.map((l) => [l.name, l.outcome, l.client_request_id])).toEqual(cases.map(([m]) => [m, "ok", "r-1"]));
    expectNoValueIn(audits, [key]);
  });

  it("takes Expect: 100-continue (node answered it; undici refuses to send it: it was 502)", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request } = await app(key);
    seen.length = 0;
    const res = await request("/v1/forward/gpt/v1/chat/completions", {
      method: "POST",
      json: { messages: [] },
      headers: { expect: "100-continue" },
    });
    expect(res.status).toBe(200);
    expect(seen.at(-1)?.headers.expect).toBeUndefined();
  });

  it("stops the upstream call when the caller goes away, rather than let it run (and bill) for 600 s", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request } = await app(key);
    const caller = new AbortController();
    const before = hangsClosed;
    const pending = Promise.resolve(
      request("/v1/forward/gpt/v1/hang", { method: "POST", json: {}, signal: caller.signal }),
    ).catch((err: unknown) => err);
    await until("the upstream has the call", () => seen.some((s) => s.url === "/v1/hang"));
    caller.abort();
    await pending;
    await until("the upstream call is closed", () => hangsClosed > before, 5_000);
  });

  it("a body without Content-Length is counted while it streams: past 1 MiB it is 413 and no more is read", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { runtime, masterKey } = await app(key);
    seen.length = 0;
    let pulled = 0;
    const chunk = new Uint8Array(64 * 1024).fill(0x61);
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= 4 * 1024 * 1024) return controller.close();
        pulled += chunk.byteLength;
        controller.enqueue(chunk);
      },
    });
    const path = "/v1/forward/gpt/v1/chat/completions";
    const res = await runtime.fetch(
      new Request(`http://localhost${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${masterKey}` },
        body,
        duplex: "half",
      } as RequestInit),
      { path },
    );
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("payload_too_large");
    expect(pulled).toBeLessThan(2 * 1024 * 1024);
    expect(seen).toHaveLength(0);
  });

  it("forwards every method of ALL: GET, PUT, PATCH, DELETE and OPTIONS reach the upstream as sent", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request } = await app(key);
    for (const method of ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"]) {
      seen.length = 0;
      const res = await request("/v1/forward/gpt/v1/models", { method });
      expect(res.status, method).toBe(200);
      expect(
        seen.map((r) => [r.method, r.url]),
        method,
      ).toEqual([[method, "/v1/models"]]);
    }
  });

  it("sends the rest of the path as it came, query included, right after the api_base (nothing added, nothing dropped)", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request, audits } = await app(key);
    const sent: [string, string][] = [
      [
        "/v1/forward/deployment?api-version=2024-02-01",
        "/openai/deployments/gpt/chat/completions?api-version=2024-02-01",
      ],
      ["/v1/forward/deployment", "/openai/deployments/gpt/chat/completions"],
      ["/v1/forward/deployment/?a=1", "/openai/deployments/gpt/chat/completions/?a=1"],
      ["/v1/forward/gpt/v1/models?a=1&b=%2F", "/v1/models?a=1&b=%2F"],
      ["/v1/forward/gpt?a=1/v1/models", "/?a=1/v1/models"],
      // An api_base with a query of its own: the caller's is joined after it.
      ["/v1/forward/versioned", "/openai/deployments/gpt/chat/completions?api-version=2024-10-21"],
      [
        "/v1/forward/versioned?stream=true",
        "/openai/deployments/gpt/chat/completions?api-version=2024-10-21&stream=true",
      ],
      ["/v1/forward/versioned/x?a=1", "/openai/deployments/gpt/chat/completions/x?api-version=2024-10-21&a=1"],
    ];
    for (const [path, upstream] of sent) {
      seen.length = 0;
      audits.length = 0;
      const res = await request(path, { method: "POST", json: {} });
      expect(res.status, path).toBe(200);
      expect(
        seen.map((r) => r.url),
        path,
      ).toEqual([upstream]);
      // The audit names the model the key was read for, parsed as forwarding parses it.
      const model = path.slice("/v1/forward/".length).split(/[/?]/, 1)[0];
      expect(audits.map((l) => JSON.parse(l).name)).toEqual([model]);
    }
    // A prefix spelled with escapes is routed here decoded, but cut as sent: it reached the model
    // its 12th character began (`/v1/%66orward/gpt/x` went to model `d`, path `/gpt/x`).
    seen.length = 0;
    for (const path of ["/v1/%66orward/gpt/v1/models", "/v1/forwar%64/gpt/v1/models"]) {
      const res = await request(path, { method: "POST", json: {} });
      expect(res.status, path).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_request");
    }
    expect(seen).toEqual([]);
    // A raw backslash is taken for `/` by URL parsing, with `..` resolved around it: it would leave
    // the api_base's path (/openai/deployments/gpt/...). Percent-encoded, it stays a byte of the path.
    for (const path of ["/v1/forward/deployment/a/b/c/..\\..\\..\\..\\x", "/v1/forward/deployment/a\tb"]) {
      const res = await request(path, { method: "POST", json: {} });
      expect(res.status, path).toBe(400);
    }
    expect(seen).toEqual([]);
    const escaped = await request("/v1/forward/deployment/a%5Cb", { method: "POST", json: {} });
    expect(escaped.status).toBe(200);
    expect(seen.map((r) => r.url)).toEqual(["/openai/deployments/gpt/chat/completions/a%5Cb"]);
  });

  it("streams an SSE answer event by event: the first arrives before the upstream finishes", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request } = await app(key);
    const res = await request("/v1/forward/gpt/v1/stream", { method: "POST", json: { stream: true } });
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    expect(Buffer.from(first.value as Uint8Array).toString()).toBe("data: first\n\n");
    releaseStream(); // only now does the upstream send the rest
    let rest = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += Buffer.from(value).toString();
    }
    expect(rest).toBe("data: second\n\n");
  });

  it("an answer with a body and no Content-Type is application/octet-stream on every runtime, its bytes as sent (serve added text/plain; charset=UTF-8)", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { runtime, masterKey, request } = await app(key);
    // Over serve's socket, where @hono/node-server writes the Response (as on Google).
    const server = await startServer(runtime, { host: "127.0.0.1", port: 0 });
    try {
      const res = await fetch(`${server.url}/v1/forward/gpt/v1/untyped`, {
        method: "POST",
        headers: { authorization: `Bearer ${masterKey}`, "content-type": "application/json" },
        body: "{}",
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("application/octet-stream");
      expect(res.headers.get("cache-control")).toBe("no-store");
      expect(Buffer.from(await res.arrayBuffer())).toEqual(UNTYPED);
      // A typed answer keeps its type.
      const typed = await fetch(`${server.url}/v1/forward/gpt/v1/models`, {
        headers: { authorization: `Bearer ${masterKey}` },
      });
      expect(typed.headers.get("content-type")).toBe("application/json");
      await typed.arrayBuffer();
    } finally {
      await server.close();
    }
    // In process, as Lambda and Azure take the Response: the same type.
    const direct = await request("/v1/forward/gpt/v1/untyped", { method: "POST", json: {} });
    expect(direct.status).toBe(200);
    expect(direct.headers.get("content-type")).toBe("application/octet-stream");
    expect(Buffer.from(await direct.arrayBuffer())).toEqual(UNTYPED);
  });

  it("an answer the upstream cuts mid-stream reaches the client cut (never completed, nothing appended), logged as one line", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { runtime, masterKey, logs } = await app(key);
    const server = await startServer(runtime, { host: "127.0.0.1", port: 0 });
    const printed = vi.spyOn(console, "error").mockImplementation(() => {});
    const told = vi.spyOn(console, "info").mockImplementation(() => {});
    try {
      const got = await new Promise<{ body: string; complete: boolean }>((resolve, reject) => {
        const req = httpRequest(
          `${server.url}/v1/forward/gpt/v1/cut`,
          { method: "POST", headers: { authorization: `Bearer ${masterKey}`, "content-type": "application/json" } },
          (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (d: string) => {
              body += d;
            });
            res.on("end", () => resolve({ body, complete: res.complete }));
            res.on("error", () => resolve({ body, complete: false }));
            res.on("aborted", () => resolve({ body, complete: false }));
          },
        );
        req.on("error", reject);
        req.end("{}");
      });
      expect(got.body).toBe("data: first\n\n"); // no "Error: ..." appended to the events
      expect(got.complete).toBe(false); // the client can tell: the chunked answer never ended
      await until("the log line", () => logs.some((l) => l.includes("upstream answer cut")));
      const lines = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "upstream answer cut");
      expect(lines).toEqual([expect.objectContaining({ level: "warn", model: "gpt" })]);
      expect(printed).not.toHaveBeenCalled(); // not node-server's multi-line dump on stderr
      expect(told).not.toHaveBeenCalled();
    } finally {
      printed.mockRestore();
      told.mockRestore();
      await server.close();
    }
  });

  it("retries once with the key read again from the store after a 401 (a rotated key)", async () => {
    const old = newKey("sk-old-");
    const rotated = newKey("sk-rotated-");
    expectedKey = old;
    const { request, runtime, logs } = await app(old);
    const first = await request("/v1/forward/gpt/v1/models"); // the old key is cached now
    expect(first.status).toBe(200);
    await first.text();
    await runtime.backend.put("OPENAI_API_KEY", rotated); // rotated behind the cache's back
    expectedKey = rotated;
    seen.length = 0;
    const res = await request("/v1/forward/gpt/v1/models");
    expect(res.status).toBe(200);
    expect(seen.map((s) => s.headers.authorization)).toEqual([`Bearer ${old}`, `Bearer ${rotated}`]);
    const body = await res.text();
    expectNoValueIn([body, ...logs], [old, rotated]);
  });

  it("a key the upstream refuses again is not retried, and the store read past the cache is spaced (a rotation's window)", async () => {
    // Revoked at the provider before the store holds the new key: every request is refused.
    const revoked = newKey("sk-revoked-");
    expectedKey = newKey("sk-not-stored-yet-");
    const { request, runtime } = await app(revoked); // stored through the manager: cached
    const reads = countReads(runtime.backend, "OPENAI_API_KEY");
    seen.length = 0;
    for (let i = 0; i < 20; i++) {
      const res = await request("/v1/forward/gpt/v1/models");
      expect(res.status).toBe(401); // the upstream's own 401, passed through
      expect(await res.json()).toEqual({ error: { message: "Incorrect API key provided" } });
    }
    // Concurrent 401s share the interval's read too.
    const together = await Promise.all(Array.from({ length: 10 }, () => request("/v1/forward/gpt/v1/models")));
    for (const res of together) expect(res.status).toBe(401);
    await Promise.all(together.map((res) => res.text()));
    expect(seen).toHaveLength(30); // one upstream call per request: the same key is not sent twice
    expect(reads()).toBe(1); // one read past the cache, not one per request
  });

  it("a 401 whose read past the cache fails (the store down) is passed on as the upstream sent it", async () => {
    const revoked = newKey("sk-revoked-");
    expectedKey = newKey("sk-not-stored-yet-");
    const { request, runtime, logs } = await app(revoked); // cached: the first read needs no store
    runtime.backend.get = async () => {
      throw new BackendUnavailable("the store is down", 5);
    };
    const res = await request("/v1/forward/gpt/v1/models");
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: { message: "Incorrect API key provided" } });
    expect(logs.map((l) => JSON.parse(l))).toContainEqual(
      expect.objectContaining({ msg: expect.stringContaining("could not be read again"), code: "backend_unavailable" }),
    );
    expectNoValueIn(logs, [revoked]);
  });

  it("concurrent 401s for one name share one read past the cache, and a key rotated meanwhile is retried with", async () => {
    const old = newKey("sk-old-");
    const rotated = newKey("sk-rotated-");
    const { request, runtime } = await app(old);
    await runtime.backend.put("OPENAI_API_KEY", rotated); // rotated behind the cache's back
    expectedKey = rotated;
    const reads = countReads(runtime.backend, "OPENAI_API_KEY");
    seen.length = 0;
    const answers = await Promise.all(Array.from({ length: 8 }, () => request("/v1/forward/gpt/v1/models")));
    for (const res of answers) expect(res.status).toBe(200);
    await Promise.all(answers.map((res) => res.text()));
    expect(reads()).toBe(1);
    const sent = seen.map((s) => s.headers.authorization);
    expect(sent.filter((a) => a === `Bearer ${rotated}`)).toHaveLength(8);
  });

  it("a 401 arriving while another request's read past the cache is under way waits for that read, and retries with the rotated key", async () => {
    const old = newKey("sk-old-");
    const rotated = newKey("sk-rotated-");
    const { request, runtime } = await app(old);
    await runtime.backend.put("OPENAI_API_KEY", rotated);
    expectedKey = rotated;
    const backend = runtime.backend as unknown as { get: (n: string, ...rest: never[]) => Promise<unknown> };
    const original = backend.get.bind(backend);
    backend.get = async (n: string, ...rest: never[]) => {
      await new Promise((r) => setTimeout(r, 300)); // a slow store
      return original(n, ...rest);
    };
    seen.length = 0;
    const first = request("/v1/forward/gpt/v1/models");
    await new Promise((r) => setTimeout(r, 100)); // the first's read past the cache is under way
    const second = request("/v1/forward/gpt/v1/models");
    const answers = await Promise.all([first, second]);
    for (const res of answers) expect(res.status).toBe(200);
    await Promise.all(answers.map((res) => res.text()));
  });

  it("after the interval, a 401 reads past the cache again (the clock is forward's tuning)", async () => {
    const old = newKey("sk-old-");
    expectedKey = newKey("sk-not-stored-yet-");
    const { runtime, settings } = await app(old);
    const reads = countReads(runtime.backend, "OPENAI_API_KEY");
    let now = 1_000;
    const deps: ForwardDeps = {
      manager: runtime.manager,
      models: settings.config.model_list as ForwardModel[],
      outbound: {},
      maxBodyBytes: 1 << 20,
      now: () => now,
    };
    const path = "/v1/forward/gpt/v1/models";
    const once = async () => {
      const res = await forward(new Request(`http://localhost${path}`), { path }, deps);
      expect(res.status).toBe(401);
      await res.text();
    };
    await once();
    expect(reads()).toBe(1);
    now += REREAD_INTERVAL_MS - 1;
    await once();
    expect(reads()).toBe(1);
    now += 1;
    await once();
    expect(reads()).toBe(2);
    // The store now holds the new key: the next read past the cache takes it, and the retry goes.
    const rotated = newKey("sk-rotated-");
    await runtime.backend.put("OPENAI_API_KEY", rotated);
    expectedKey = rotated;
    now += REREAD_INTERVAL_MS;
    seen.length = 0;
    const res = await forward(new Request(`http://localhost${path}`), { path }, deps);
    expect(res.status).toBe(200);
    await res.text();
    expect(seen.map((s) => s.headers.authorization)).toEqual([`Bearer ${old}`, `Bearer ${rotated}`]);
  });

  it("a HEAD's and a 304's Content-Length is the upstream's (no body to count it from), in process and on serve", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request, runtime, masterKey } = await app(key);
    // In process: the Response that Lambda's and Azure's adapters turn into their result.
    const head = await request("/v1/forward/gpt/v1/sized", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("12345");
    const notModified = await request("/v1/forward/gpt/v1/sized", { headers: { "if-none-match": '"v1"' } });
    expect(notModified.status).toBe(304);
    expect(notModified.headers.get("content-length")).toBe("12345");
    const server = await startServer(runtime, { host: "127.0.0.1", port: 0 });
    try {
      const auth = { authorization: `Bearer ${masterKey}` };
      const served = await fetch(`${server.url}/v1/forward/gpt/v1/sized`, { method: "HEAD", headers: auth });
      expect(served.status).toBe(200);
      expect(served.headers.get("content-length")).toBe("12345");
      expect(served.headers.get("etag")).toBe('"v1"');
      const cached = await fetch(`${server.url}/v1/forward/gpt/v1/sized`, {
        headers: { ...auth, "if-none-match": '"v1"' },
      });
      expect(cached.status).toBe(304);
      expect(cached.headers.get("content-length")).toBe("12345");
    } finally {
      await server.close();
    }
  });

  it("a stored key an HTTP header cannot carry (a trailing newline) is 500 store_corrupt saying so, and nothing is sent", async () => {
    const good = newKey("sk-upstream-");
    expectedKey = good;
    const { request, runtime, logs } = await app(good);
    for (const bad of [`${good}\n`, `${good}\r\n`, `sk-\u0000${good}`]) {
      await runtime.manager.put("OPENAI_API_KEY", bad);
      seen.length = 0;
      const res = await request("/v1/forward/gpt/v1/models");
      expect(res.status).toBe(500);
      const body = await res.text();
      expect(JSON.parse(body)).toEqual({
        error: {
          code: "store_corrupt",
          message:
            "the stored key of model gpt holds a character an HTTP header cannot carry (a control character such as CR, LF or NUL, or one past U+00FF): store it again without it",
        },
      });
      expect(seen).toEqual([]);
      expectNoValueIn([body, ...logs], [good]);
    }
  });

  it("a literal api_key of the config no header can carry is 500 internal, the reason logged naming the config, nothing sent", async () => {
    const good = newKey("sk-literal-");
    // A YAML block scalar keeps its newline: a literal key ending in one.
    const config = `model_list:\n  - model_name: lit\n    litellm_params:\n      model: openai/x\n      api_base: ${apiUrl}\n      api_key: |\n        ${good}\n`;
    const { request, logs } = await inProcessApp({ config });
    seen.length = 0;
    const res = await request("/v1/forward/lit/v1/models");
    expect(res.status).toBe(500);
    const body = await res.text();
    expect(JSON.parse(body)).toEqual({ error: { code: "internal", message: "internal error" } });
    expect(seen).toEqual([]);
    const line = logs.map((l) => JSON.parse(l)).find((l) => l.msg === "internal error");
    expect(line?.reason).toMatch(/^the api_key of model lit in the config holds a character .*: fix the config$/);
    expectNoValueIn([body, ...logs], [good]);
  });

  it("passes upstream error answers through, and maps an unreachable upstream to 502", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request, logs } = await app(key);
    // 205 Reset Content has no body: a Response with one throws (it was a 500 internal).
    const reset = await request("/v1/forward/gpt/v1/reset", { method: "POST", json: {} });
    expect(reset.status).toBe(205);
    expect(await reset.text()).toBe("");
    const limited = await request("/v1/forward/gpt/v1/error", { method: "POST", json: {} });
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("3");
    expect(await limited.json()).toEqual({ error: { message: "slow down" } });
    const down = await request("/v1/forward/down/v1/models");
    expect(down.status).toBe(502);
    const body = await down.text();
    expect(JSON.parse(body).error.code).toBe("upstream_unavailable");
    expectNoValueIn([body, ...logs], [key]);
  });
});

describe("what forward does not pass on", () => {
  it("a redirect: 502, so that no client follows it to another host with our master key", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request } = await app(key);
    const res = await request("/v1/forward/gpt/v1/redirect", { method: "POST", json: {} });
    expect(res.status).toBe(502);
    expect(res.headers.get("location")).toBeNull();
    expect(await res.json()).toEqual({
      error: {
        code: "upstream_unavailable",
        message: "the API of model gpt answered a redirect (302), which is not passed on",
      },
    });
  });

  it("an answer's headers that its Connection header names (hop-by-hop), keeping the others", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const { request } = await app(key);
    const res = await request("/v1/forward/gpt/v1/hop");
    expect(res.status).toBe(200);
    expect(res.headers.get("x-kept")).toBe("yes");
    expect(res.headers.get("x-upstream-hop")).toBeNull();
  });

  it("a request to a link-local api_base (the clouds' metadata services), written as any address form", async () => {
    const metadata = ["169.254.169.254", "[::ffff:169.254.169.254]", "[fe80::1]", "[fd00:ec2::254]"];
    const config = [
      "model_list:",
      ...metadata.map(
        (host, i) => `  - {model_name: m${i}, litellm_params: {model: openai/x, api_base: "http://${host}/v1"}}`,
      ),
      "  - {model_name: byref, litellm_params: {model: openai/x, api_base: os.environ/REPOINTED_BASE, api_key: os.environ/BYREF_KEY}}",
      "",
    ].join("\n");
    const { request, runtime } = await inProcessApp({ config });
    for (const i of metadata.keys()) {
      const res = await request(`/v1/forward/m${i}/computeMetadata/v1/instance/service-accounts/default/token`);
      expect(res.status, metadata[i]).toBe(502);
      expect(await res.json()).toEqual({
        error: { code: "upstream_unavailable", message: `the api_base of model m${i} is a link-local address` },
      });
    }
    // An api_base that is a ref: a store write cannot point it at a metadata service either.
    await runtime.manager.put("BYREF_KEY", newKey("sk-byref-"));
    await runtime.manager.put("REPOINTED_BASE", "http://169.254.169.254/computeMetadata/v1");
    const byRef = await request("/v1/forward/byref/instance/service-accounts/default/token");
    expect(byRef.status).toBe(502);
    // Refused before any connection (an unroutable address would be a 502 too, for another reason).
    expect(((await byRef.json()) as { error: { message: string } }).error.message).toBe(
      "the api_base of model byref is a link-local address",
    );
  });

  it("a request to Lambda's runtime API (AWS_LAMBDA_RUNTIME_API), however its host is spelled", async () => {
    const spellings = ["localhost", "127.0.0.1", "0.0.0.0", "[::ffff:127.0.0.1]", "[::1]", "127.1.2.3"];
    const config = [
      "model_list:",
      ...spellings.map(
        (h, i) =>
          `  - {model_name: rt${i}, litellm_params: {model: openai/x, api_base: "http://${h}:9001/2018-06-01"}}`,
      ),
      '  - {model_name: other, litellm_params: {model: openai/x, api_base: "http://127.0.0.1:9002"}}',
      "",
    ].join("\n");
    // As Lambda sets it in the function's environment (read with the settings, at start).
    const { request } = await inProcessApp({ config, env: { AWS_LAMBDA_RUNTIME_API: "127.0.0.1:9001" } });
    for (const i of spellings.keys()) {
      const res = await request(`/v1/forward/rt${i}/runtime/invocation/next`);
      expect(res.status, spellings[i]).toBe(502);
      expect(((await res.json()) as { error: { message: string } }).error.message, spellings[i]).toBe(
        `the api_base of model rt${i} is the platform's runtime API`,
      );
    }
    // Another loopback port is not it (nothing listens there: a plain 502 unreachable).
    const other = await request("/v1/forward/other/v1/models");
    expect(((await other.json()) as { error: { message: string } }).error.message).toContain("cannot be reached");
  });

  it("a name that resolves to a link-local address: the outbound agent's lookup refuses it (ELINKLOCAL)", async () => {
    const { lookupOutsideLinkLocal } = await import("../../core/src/outbound");
    const answers: Record<string, LookupAddress[]> = {
      "metadata.google.internal": [{ address: "169.254.169.254", family: 4 }],
      "both.example": [
        { address: "203.0.113.7", family: 4 },
        { address: "fe80::1", family: 6 },
      ],
      "api.example": [
        { address: "203.0.113.8", family: 4 },
        { address: "2001:db8::8", family: 6 },
      ],
    };
    const dns = (host: string, _o: unknown, cb: (e: Error | null, a: LookupAddress[]) => void) =>
      cb(null, answers[host] ?? []);
    const lookup = lookupOutsideLinkLocal(dns as never);
    const ask = (host: string, all: boolean) =>
      new Promise<{ code?: string; address?: unknown; family?: number }>((resolve) =>
        lookup(host, { all }, (err, address, family) => resolve(err ? { code: err.code } : { address, family })),
      );
    expect(await ask("metadata.google.internal", true)).toEqual({ code: "ELINKLOCAL" });
    expect(await ask("both.example", false)).toEqual({ code: "ELINKLOCAL" });
    expect(await ask("api.example", true)).toEqual({ address: answers["api.example"], family: undefined });
    expect(await ask("api.example", false)).toEqual({ address: "203.0.113.8", family: 4 });
  });
});

describe("model_list refs the store does not hold", () => {
  it("api_base comes from the environment, as at start; api_key never does (the API serves no env value)", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    const config = [
      "model_list:",
      "  - {model_name: env, litellm_params: {model: azure/x, api_base: os.environ/FWD_API_BASE, api_key: os.environ/FWD_API_KEY}}",
      "  - {model_name: nowhere, litellm_params: {model: openai/x, api_base: os.environ/FWD_NOWHERE}}",
      "  - {model_name: nobase, litellm_params: {model: openai/gpt-4o, api_key: os.environ/FWD_API_KEY}}",
      "",
    ].join("\n");
    const { request, runtime, logs } = await inProcessApp({ config, env: { FWD_API_BASE: apiUrl, FWD_API_KEY: key } });
    seen.length = 0;
    // The key only in the environment: not sent anywhere (a store write could point api_base at
    // the writer's own host), and the answer names it.
    const envKey = await request("/v1/forward/env/v1/models");
    expect(envKey.status).toBe(404);
    expect(await envKey.json()).toEqual({ error: { code: "not_found", message: "secret FWD_API_KEY not found" } });
    expect(seen).toEqual([]);
    // Stored, it is used, sent to the api_base the environment gives.
    await runtime.manager.put("FWD_API_KEY", key);
    expect((await request("/v1/forward/env/v1/models")).status).toBe(200);
    expect(seen.map((s) => s.headers["api-key"])).toEqual([key]);
    // No api_base in the config at all: the deployment's to fix, not the caller's request (not a 400).
    const baseless = await request("/v1/forward/nobase/v1/models");
    expect(baseless.status).toBe(404);
    expect(await baseless.json()).toEqual({
      error: { code: "not_found", message: "model nobase has no api_base to forward to" },
    });
    // An api_base held nowhere: 404 naming the ref.
    const missing = await request("/v1/forward/nowhere/v1/models");
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: { code: "not_found", message: "secret FWD_NOWHERE not found" } });
    expectNoValueIn(logs, [key]);
  });

  it("a literal api_key goes only to an api_base the store cannot change (a store write could point it elsewhere)", async () => {
    const literal = newKey("sk-literal-");
    expectedKey = literal;
    const config = [
      "model_list:",
      `  - {model_name: lit, litellm_params: {model: openai/x, api_base: os.environ/LIT_BASE, api_key: ${literal}}}`,
      "",
    ].join("\n");
    const { request, runtime } = await inProcessApp({ config, env: { LIT_BASE: apiUrl } });
    // A caller with the master key writes the name: the literal key must not follow it there.
    await runtime.manager.put("LIT_BASE", "https://127.0.0.1:1");
    seen.length = 0;
    expect((await request("/v1/forward/lit/v1/models")).status).toBe(200);
    expect(seen.map((s) => s.headers.authorization)).toEqual([`Bearer ${literal}`]); // at the environment's api_base
  });

  it("drops an upstream's answer header that holds the key sent (an echo): a literal key of the config never comes back", async () => {
    const seenKeys: string[] = [];
    // Before: every upstream header was passed back, one echoing the request's key included.
    const literal = newKey("sk-literal-");
    const echo = createHttpServer((req, res) => {
      seenKeys.push(String(req.headers["api-key"]));
      res.writeHead(200, {
        "content-type": "application/json",
        "x-echo-api-key": String(req.headers["api-key"]),
        "x-echo-auth": `seen: ${req.headers["api-key"]}; ok`,
        "x-request-id": "upstream-1",
      });
      res.end("{}");
    });
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    onTestFinished(() => new Promise<void>((r) => echo.close(() => r())));
    const base = `http://127.0.0.1:${(echo.address() as AddressInfo).port}`;
    // As given, and with a trailing tab: the header goes without it, and comes back so.
    for (const given of [literal, `${literal}\t`]) {
      const config = `model_list:\n  - {model_name: m, litellm_params: {model: azure/gpt-4o, api_base: "${base}/openai", api_key: ${JSON.stringify(given)}}}\n`;
      const { request } = await inProcessApp({ config });
      const res = await request("/v1/forward/m/deployments/x/chat/completions", { method: "POST", json: {} });
      expect(res.status).toBe(200);
      expect(seenKeys.at(-1)).toBe(literal);
      expect(res.headers.get("x-request-id")).toBe("upstream-1");
      expect(res.headers.get("x-echo-api-key")).toBeNull();
      expect(res.headers.get("x-echo-auth")).toBeNull();
      expect(JSON.stringify([...res.headers])).not.toContain(literal);
    }
  });

  it("without an api_key the store decides api_base (nothing secret follows it); with a literal key it cannot, and says so", async () => {
    const config = [
      "model_list:",
      "  - {model_name: nokey, litellm_params: {model: openai/x, api_base: os.environ/STORED_BASE}}",
      "  - {model_name: literal, litellm_params: {model: openai/x, api_base: os.environ/STORED_BASE, api_key: sk-literal-x}}",
      "",
    ].join("\n");
    const { request, runtime } = await inProcessApp({ config });
    await runtime.manager.put("STORED_BASE", apiUrl);
    expectedKey = "";
    seen.length = 0;
    await request("/v1/forward/nokey/v1/models"); // reaches the stored api_base (the fake answers 401: no key)
    expect(seen.map((s) => s.url)).toEqual(["/v1/models"]);
    const literal = await request("/v1/forward/literal/v1/models");
    expect(literal.status).toBe(404);
    expect(((await literal.json()) as { error: { message: string } }).error.message).toBe(
      "model literal has a literal api_key: its api_base STORED_BASE is read from the environment only (a store write must not decide where that key goes)",
    );
  });

  it("on a KMS-like store, a plain api_base (no ciphertext) is the environment's, as at start", async () => {
    const key = newKey("sk-upstream-");
    expectedKey = key;
    // An environment-backed store whose values are ciphertext: a plain one is store_corrupt.
    class Sealed extends MemoryStore {
      override async get(name: string): Promise<SecretRecord | undefined> {
        if (name === "PLAIN_BASE") throw new StoreCorrupt("PLAIN_BASE is not ciphertext");
        return super.get(name);
      }
    }
    const sealed = new Sealed();
    const factory = {
      ...memoryStore,
      defaults: { ...memoryStore.defaults, envBacked: true },
      open: async () => sealed,
    } satisfies StoreFactory<"memory">;
    const config = [
      "general_settings:",
      "  key_management_settings: {hosted_keys: [KMS_KEY, PLAIN_BASE]}", // both read through the store first
      "model_list:",
      "  - {model_name: kms, litellm_params: {model: openai/x, api_base: os.environ/PLAIN_BASE, api_key: os.environ/KMS_KEY}}",
      "",
    ].join("\n");
    const { request } = await inProcessApp({ config, stores: [factory], env: { PLAIN_BASE: apiUrl } });
    await sealed.put("KMS_KEY", key);
    seen.length = 0;
    expect((await request("/v1/forward/kms/v1/models")).status).toBe(200);
    expect(seen.map((s) => s.headers.authorization)).toEqual([`Bearer ${key}`]);
  });
});

describe("a kept-alive connection the upstream closes as a request goes out on it", () => {
  /**
   * A plain HTTP upstream that answers the first request of each connection and closes the
   * connection at its second, unanswered (an idle keep-alive's end racing the request); `got`
   * lists each request as `METHOD #n`, n its rank on its connection.
   */
  async function closingUpstream(cutAt = 2) {
    const got: string[] = [];
    const upstream = createNetServer((socket) => {
      let buffered = "";
      let count = 0;
      socket.on("data", (chunk) => {
        buffered += chunk.toString("latin1");
        for (let end = buffered.indexOf("\r\n\r\n"); end !== -1; end = buffered.indexOf("\r\n\r\n")) {
          const head = buffered.slice(0, end);
          const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          if (buffered.length < end + 4 + length) return; // the body is still coming
          buffered = buffered.slice(end + 4 + length);
          got.push(`${head.split(" ")[0]} #${++count}`);
          if (count >= cutAt) return void socket.destroy();
          socket.write("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n");
          if (!head.startsWith("HEAD ")) socket.write("{}");
        }
      });
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const config = `model_list:\n  - {model_name: m, litellm_params: {model: openai/x, api_base: "${base}", api_key: os.environ/KEEP_KEY}}\n`;
    const ctx = await inProcessApp({ config });
    await ctx.runtime.manager.put("KEEP_KEY", newKey("sk-keep-"));
    return {
      got,
      request: ctx.request,
      close: async () => {
        await closeOutboundAgents(); // the next case starts on no kept-alive connection
        await new Promise<void>((r) => upstream.close(() => r()));
      },
    };
  }

  /**
   * A GET, then a request of `method` on its kept-alive connection (not a HEAD first: undici closes
   * the connection after one): their statuses, and what the upstream got.
   */
  async function getThen(method: string) {
    const upstream = await closingUpstream();
    const statuses: number[] = [];
    try {
      for (const m of ["GET", method]) {
        const init = m === "GET" || m === "HEAD" ? { method: m } : { method: m, json: {} };
        const res = await upstream.request("/v1/forward/m/v1/x", init);
        statuses.push(res.status);
        await res.text();
        await new Promise((r) => setImmediate(r)); // as served requests come: the connection is free again
      }
      return { statuses, got: upstream.got };
    } finally {
      await upstream.close();
    }
  }

  it("an idempotent request (GET, HEAD, PUT, DELETE, OPTIONS) is sent once more, and answered", async () => {
    for (const method of ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]) {
      const { statuses, got } = await getThen(method);
      expect(statuses, method).toEqual([200, 200]);
      // The second went out on the first's connection, which closed under it; then on a new one.
      expect(got, method).toEqual(["GET #1", `${method} #2`, `${method} #1`]);
    }
  });

  it("an idempotent request whose fresh connection is cut before its answer is not sent again (the upstream may have acted on it): 502", async () => {
    for (const method of ["DELETE", "PUT"]) {
      const upstream = await closingUpstream(1);
      try {
        const res = await upstream.request("/v1/forward/m/v1/x", { method, json: {} });
        expect(res.status, method).toBe(502);
        await res.text();
        expect(upstream.got, method).toEqual([`${method} #1`]);
      } finally {
        await upstream.close();
      }
    }
  });

  it("a POST or PATCH is not sent again (the upstream may have acted on it): 502", async () => {
    for (const method of ["POST", "PATCH"]) {
      const { statuses, got } = await getThen(method);
      expect(statuses, method).toEqual([200, 502]);
      expect(got, method).toEqual(["GET #1", `${method} #2`]);
    }
  });
});

describe("outbound TLS files", () => {
  it("one that cannot be read stops the start, named (it was a 500 internal on every forward)", async () => {
    const config = [
      "model_list:",
      "  - model_name: m",
      "    litellm_params: {model: openai/x, api_base: https://localhost:1}",
      "litellm_settings:",
      "  ssl_certificate: /nonexistent/client.pem",
      "",
    ].join("\n");
    await expect(inProcessApp({ config })).rejects.toThrow(
      "cannot read ssl_certificate / SSL_CERTIFICATE: /nonexistent/client.pem (ENOENT)",
    );
  });
});

describe("an upstream that does not answer", () => {
  it("is 504 upstream_timeout once its time passes", async () => {
    const { createServer: createHttps } = await import("node:https");
    const pki = inject("testPki");
    const silent = createHttps({ key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) }, () => {
      // never answers
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const key = newKey("sk-silent-");
    const ctx = await inProcessApp();
    await ctx.runtime.manager.put("SILENT_KEY", key);
    const { forward } = await import("../../core/src/forward");
    const err = await forward(
      new Request("http://localhost/v1/forward/slow/v1/models"),
      { path: "/v1/forward/slow/v1/models" },
      {
        manager: ctx.runtime.manager,
        models: [
          {
            model_name: "slow",
            litellm_params: {
              model: "openai/x",
              api_base: `https://localhost:${(silent.address() as AddressInfo).port}`,
              api_key: "os.environ/SILENT_KEY",
            },
          },
        ],
        outbound: {},
        maxBodyBytes: 1024,
        timeoutMs: 300,
      },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "upstream_timeout" });
    expect(String((err as Error).message)).not.toContain(key);
    silent.closeAllConnections();
    await new Promise<void>((r) => silent.close(() => r()));
  });
});

describe("an upstream that trickles its answer", () => {
  it("is cut at the exchange's deadline, though no wait between two chunks is long (the agent's timeouts bound each wait only)", async () => {
    const pki = inject("testPki");
    let written = 0;
    let finished = false;
    // A chunk every 50 ms for 3 s: never silent for long, never done in time.
    const drip = createServer(
      { key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) },
      (_req, res) => {
        res.writeHead(200, { "content-type": "text/event-stream" });
        const timer = setInterval(() => {
          res.write(`data: ${written}\n\n`);
          if (++written === 60) {
            clearInterval(timer);
            finished = true;
            res.end();
          }
        }, 50);
        res.on("close", () => clearInterval(timer));
      },
    );
    await new Promise<void>((r) => drip.listen(0, "127.0.0.1", r));
    const ctx = await inProcessApp();
    await ctx.runtime.manager.put("DRIP_KEY", newKey("sk-drip-"));
    const { createLogger } = await import("../../core/src/log");
    const logs: string[] = [];
    const { forward } = await import("../../core/src/forward");
    const res = await forward(
      new Request("http://localhost/v1/forward/drip/v1/chat"),
      { path: "/v1/forward/drip/v1/chat" },
      {
        manager: ctx.runtime.manager,
        models: [
          {
            model_name: "drip",
            litellm_params: {
              model: "openai/x",
              api_base: `https://localhost:${(drip.address() as AddressInfo).port}`,
              api_key: "os.environ/DRIP_KEY",
            },
          },
        ],
        outbound: {},
        maxBodyBytes: 1024,
        timeoutMs: 500,
        log: createLogger((line) => logs.push(line)),
      },
    );
    expect(res.status).toBe(200); // the headers came in time
    // In process (no connection to cut, as on Lambda and Azure), the body ends with the API's error.
    const read = await res.text().then(
      () => "completed",
      (err: { code?: string }) => err.code,
    );
    expect(read).toBe("upstream_timeout");
    expect(finished).toBe(false); // cut while the upstream was still trickling
    expect(logs.map((l) => JSON.parse(l))).toContainEqual(
      expect.objectContaining({ msg: "upstream answer cut", code: "UPSTREAM_EXCHANGE_TIMEOUT" }),
    );
    drip.closeAllConnections();
    await new Promise<void>((r) => drip.close(() => r()));
  });
});
