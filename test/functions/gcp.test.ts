// The Google runtime beyond the contract table: Pub/Sub CloudEvents posted to the real
// functions-framework server in binary and structured mode (ack on success or on a malformed
// event, 500 so Pub/Sub redelivers on a store failure), and what the bundle holds.
import { createServer as createHttpServer } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import * as zlib from "node:zlib";
import * as functions from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import { afterAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { createLogger } from "../../core/src/log";
import { infisicalStore } from "../../core/src/stores/infisical";
import { memoryStore } from "../../core/src/stores/memory";
// @ts-expect-error: a plain ESM build script without types
import { buildGcp } from "../../functions/gcp/build.mjs";
import { gcpFunctions } from "../../functions/gcp/src/index";
import { INFISICAL_CLIENT, lazyFakeInfisical } from "../fakes/infisical";
import { expectNoValueIn, newKey, tempDir } from "../helpers";
import { KEY_EVENTS_CONFIG, keyEvent, PartlyDownStore } from "./queue-helpers";

const store = new PartlyDownStore();
const infisical = lazyFakeInfisical();
const logs: string[] = [];
const targets = gcpFunctions({
  stores: [store.factory()],
  env: {
    LITELLM_MASTER_KEY: newKey(),
    LLM_SECRETS_CONFIG: KEY_EVENTS_CONFIG,
  },
  log: createLogger((line) => logs.push(line)),
});
functions.cloudEvent("test-keyEvents", targets.keyEvents);

describe("the function's own logger", () => {
  it("writes Cloud Logging's severity on each line, the audit's too (it sets an entry's level from it)", async () => {
    const own = gcpFunctions({
      stores: [store.factory()],
      env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CONFIG: KEY_EVENTS_CONFIG },
    });
    const written: string[] = [];
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    let atAck: string[];
    try {
      // A malformed event is acknowledged with one error line, and audited: written by the time it
      // is acknowledged (Cloud Run throttles the CPU after the answer).
      await own.keyEvents({ id: "sev-1", data: { message: { messageId: "sev-1", data: "bm90IGpzb24=" } } });
      atAck = [...written];
    } finally {
      spy.mockRestore();
    }
    expect(atAck.filter((w) => w.includes('"audit":"key_event"'))).toHaveLength(1);
    const lines = written.flatMap((w) => w.split("\n").filter(Boolean)).map((l) => JSON.parse(l));
    const line = lines.find((l) => l.msg === "malformed key event: acknowledged");
    expect(line).toMatchObject({ level: "error", severity: "ERROR", message_id: "sev-1" });
    expect(lines.find((l) => l.audit === "key_event")).toMatchObject({ severity: "INFO", outcome: "invalid_request" });
  });
});
describe("a request's audit line", () => {
  it("is written before the answer is sent (Cloud Run throttles the CPU after it)", async () => {
    const masterKey = newKey();
    const own = gcpFunctions({ stores: [memoryStore], env: { LITELLM_MASTER_KEY: masterKey } });
    await own.runtime();
    const written: string[] = [];
    const audited = () => written.flatMap((w) => w.split("\n")).filter((l) => l.includes('"audit":"read"')).length;
    // How many audit lines were out when the function began sending its answer.
    let atAnswer: number | undefined;
    const httpServer = createHttpServer((req, res) => {
      const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => typeof res;
      res.writeHead = ((...args: unknown[]) => {
        atAnswer ??= audited();
        return writeHead(...args);
      }) as typeof res.writeHead;
      void own.http(req, res);
    });
    await new Promise<void>((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    try {
      const { port } = httpServer.address() as { port: number };
      const res = await fetch(`http://127.0.0.1:${port}/v1/secrets/X`, {
        headers: { authorization: `Bearer ${masterKey}` },
      });
      expect(res.status).toBe(404);
    } finally {
      spy.mockRestore();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    }
    expect(atAnswer).toBe(1);
  });
});

const server = getTestServer("test-keyEvents");
const listening = new Promise<number>((resolve) =>
  server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
);
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function message(id: string, event: unknown) {
  const data = Buffer.from(typeof event === "string" ? event : JSON.stringify(event)).toString("base64");
  return {
    message: { data, messageId: id, publishTime: new Date().toISOString() },
    subscription: "projects/p/subscriptions/key-events",
  };
}

async function postBinary(id: string, event: unknown): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${await listening}/`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
      "ce-source": "//pubsub.googleapis.com/projects/p/topics/key-events",
      "ce-id": id,
    },
    body: JSON.stringify(message(id, event)),
  });
  await res.arrayBuffer();
  return res.status;
}

async function postStructured(id: string, event: unknown, port?: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port ?? (await listening)}/`, {
    method: "POST",
    headers: { "content-type": "application/cloudevents+json" },
    body: JSON.stringify({
      specversion: "1.0",
      type: "google.cloud.pubsub.topic.v1.messagePublished",
      source: "//pubsub.googleapis.com/projects/p/topics/key-events",
      id,
      datacontenttype: "application/json",
      data: message(id, event),
    }),
  });
  await res.arrayBuffer();
  return res.status;
}

describe("the Pub/Sub CloudEvent target on the functions-framework server", () => {
  it("acknowledges applied and malformed events, and answers 500 (redeliver) when the store failed", async () => {
    const keys = [newKey("sk-a-"), newKey("sk-b-"), newKey("sk-c-")];
    const logged = logs.length; // the lines of this test only: other tests log to the same array
    expect(await postBinary("1", keyEvent("e1", "good-binary", keys[0] as string))).toBe(204);
    expect(await postStructured("2", keyEvent("e2", "good-structured", keys[1] as string))).toBe(204);
    expect(await postBinary("3", "{not json")).toBe(204);
    expect(await postStructured("4", { id: "e4", type: "key.created" })).toBe(204);
    expect(await postBinary("5", keyEvent("e5", "unlucky", keys[2] as string))).toBe(500);
    // A store that refuses our identity (IAM not there yet) is not the event's fault: redelivered
    // too, so the dead-letter topic keeps it rather than an acknowledgement losing it.
    const denied = newKey("sk-d-");
    expect(await postBinary("6", keyEvent("e6", "denied", denied))).toBe(500);
    expect((await store.get("litellm/good-binary"))?.value).toBe(keys[0]);
    expect((await store.get("litellm/good-structured"))?.value).toBe(keys[1]);
    expect(await store.get("litellm/unlucky")).toBeUndefined();
    const lines = logs.slice(logged);
    expect(lines.filter((l) => l.includes("malformed key event: acknowledged"))).toHaveLength(2);
    const notApplied = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "key event not applied");
    expect(notApplied.map((l) => l.message_id)).toEqual(["3", "4", "5", "6"]); // Pub/Sub's messageId
    // Pub/Sub redelivers the failed one (and duplicates happen): it lands once, the duplicate changes nothing.
    store.down = false;
    expect(await postBinary("5", keyEvent("e5", "unlucky", keys[2] as string))).toBe(204);
    expect(await postStructured("1", keyEvent("e1", "good-binary", keys[0] as string))).toBe(204);
    expect((await store.get("litellm/unlucky"))?.value).toBe(keys[2]);
    expect(await postBinary("6", keyEvent("e6", "denied", denied))).toBe(204);
    expect((await store.get("litellm/denied"))?.value).toBe(denied);
    expectNoValueIn(logs, [...keys, denied]);
  });
});

describe("what a redelivered event logs", () => {
  it("our JSON lines only: no stack of functions-framework's (several plain-text lines a delivery), still 500", async () => {
    // Recorded below our wrapper of console.error, where functions-framework's `console.error(err.stack || err)` lands.
    const printed: unknown[][] = [];
    const out = globalThis.console;
    const savedError = out.error;
    out.error = (...args: unknown[]) => printed.push(args);
    onTestFinished(() => {
      out.error = savedError;
    });
    const ownLogs: string[] = [];
    const own = gcpFunctions({
      stores: [new PartlyDownStore().factory()],
      env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CONFIG: KEY_EVENTS_CONFIG },
      log: createLogger((line) => ownLogs.push(line)),
    });
    functions.cloudEvent("redelivered-keyEvents", own.keyEvents);
    const server = getTestServer("redelivered-keyEvents");
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const { port } = server.address() as { port: number };
    const key = newKey("sk-re-");
    const late = {
      ...keyEvent("e-old", "old", key),
      occurred_at: new Date(Date.now() - 30 * 86_400_000).toISOString(),
    };
    // One the store failed, one refused for its time.
    for (const [id, event] of [
      ["r1", keyEvent("e-down", "unlucky-re", key)],
      ["r2", late],
    ] as const) {
      expect(await postStructured(id, event, port), id).toBe(500);
    }
    expect(printed).toEqual([]);
    const notApplied = ownLogs.map((l) => JSON.parse(l)).filter((l) => l.msg === "key event not applied");
    expect(notApplied).toEqual([
      expect.objectContaining({ message_id: "r1", status: "failed" }),
      expect.objectContaining({ message_id: "r2", status: "refused" }),
    ]);
    // Any other error still reaches console.error.
    out.error(new Error("another error"));
    expect(printed).toHaveLength(1);
    expectNoValueIn(ownLogs, [key]);
  });
});

describe("refusals that are not the message's fault, and a plain push subscription", () => {
  it("redelivers (500) an event refused for its time, so the dead-letter topic keeps it; a bad name is acknowledged", async () => {
    const key = newKey("sk-late-");
    const late = {
      ...keyEvent("e-late", "late", key),
      occurred_at: new Date(Date.now() - 30 * 86_400_000).toISOString(),
    };
    expect(await postBinary("7", late)).toBe(500);
    const ahead = { ...keyEvent("e-ahead", "ahead", key), occurred_at: new Date(Date.now() + 3_600_000).toISOString() };
    expect(await postStructured("8", ahead)).toBe(500);
    // A name that is not one (a `..` segment): no delivery could apply it.
    const before = logs.filter((l) => l.includes("malformed key event: acknowledged")).length;
    expect(await postBinary("9", keyEvent("e-bad-name", "a/../b", key))).toBe(204);
    expect(logs.filter((l) => l.includes("malformed key event: acknowledged"))).toHaveLength(before + 1);
    expect(await store.get("litellm/late")).toBeUndefined();
    expectNoValueIn(logs, [key]);
  });

  it("redelivers (500) an event whose name the store refuses (an Infisical folder takes no .): a setting to fix, not a malformed event", async () => {
    const fake = await infisical();
    fake.reset();
    const infisicalLogs: string[] = [];
    const onInfisical = gcpFunctions({
      stores: [infisicalStore],
      env: {
        LITELLM_MASTER_KEY: newKey(),
        LLM_SECRETS_CONFIG:
          "general_settings:\n  key_management_system: infisical\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n    prefix_for_stored_virtual_keys: keys.v1/\n",
        INFISICAL_URL: fake.url,
        INFISICAL_CLIENT_ID: INFISICAL_CLIENT.clientId,
        INFISICAL_CLIENT_SECRET: INFISICAL_CLIENT.clientSecret,
        INFISICAL_PROJECT_ID: "proj-1",
      },
      log: createLogger((line) => infisicalLogs.push(line)),
    });
    const key = newKey("sk-slash-");
    // The prefix keys.v1/ gives keys.v1/team-key: a folder keys.v1, whose name Infisical refuses: invalid_name.
    await expect(onInfisical.keyEvents(message("11", keyEvent("e-slash", "team-key", key)))).rejects.toThrow(
      /Pub\/Sub will redeliver it/,
    );
    expect(infisicalLogs.some((l) => l.includes("malformed key event: acknowledged"))).toBe(false);
    const line = infisicalLogs.map((l) => JSON.parse(l)).find((l) => l.msg === "key event not applied");
    expect(line).toMatchObject({ id: "e-slash", code: "invalid_name", status: "refused" });
    expectNoValueIn(infisicalLogs, [key]);
    await (await onInfisical.runtime()).close();
  });

  it("takes a plain push (no CloudEvent headers) at infra/gcp's push path, naming its messageId", async () => {
    const push = async (id: string, event: unknown) => {
      const body = event === undefined ? { message: { messageId: id }, subscription: "s" } : message(id, event);
      // infra/gcp's push endpoint: the topic in the path, where functions-framework looks for it.
      const res = await fetch(`http://127.0.0.1:${await listening}/projects/p/topics/llm-secrets-key-events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      await res.arrayBuffer();
      return res.status;
    };
    const key = newKey("sk-push-");
    const out = globalThis.console; // where functions-framework warns when the path has no topic
    const savedWarn = out.warn;
    const warned: unknown[][] = [];
    out.warn = (...args: unknown[]) => warned.push(args);
    try {
      expect(await push("10", keyEvent("e-push", "pushed", key))).toBe(204);
    } finally {
      out.warn = savedWarn;
    }
    expect(warned).toEqual([]);
    expect((await store.get("litellm/pushed"))?.value).toBe(key);
    expect(await push("push-without-data", undefined)).toBe(204);
    const line = logs.find((l) => l.includes("malformed key event: acknowledged") && l.includes("push-without-data"));
    expect(line).toBeDefined();
  });
});

/**
 * The http target served by functions-framework on a free port, as deployed: NODE_ENV unset (vitest's
 * "test" makes express log nothing), console.error (what express writes to) recorded in `printed`,
 * our own log lines in `ownLogs`. Everything is put back after `run`.
 */
async function asDeployed(
  name: string,
  run: (ctx: {
    port: number;
    printed: unknown[][];
    ownLogs: string[];
    errorsCounted: (code: string) => Promise<number>;
  }) => Promise<void>,
): Promise<void> {
  const printed: unknown[][] = [];
  const out = globalThis.console;
  const savedError = out.error;
  const savedEnv = process.env.NODE_ENV;
  out.error = (...args: unknown[]) => printed.push(args);
  delete process.env.NODE_ENV;
  const ownLogs: string[] = [];
  try {
    const { gcpFunctions } = await import("../../functions/gcp/src/index");
    const targets = gcpFunctions({
      stores: [store.factory()],
      env: { LITELLM_MASTER_KEY: newKey() },
      log: createLogger((line) => ownLogs.push(line)),
    });
    expect(process.env.NODE_ENV).toBe("production");
    functions.http(name, targets.http);
    const server = getTestServer(name);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const errorsCounted = async (code: string) =>
        (await targets.runtime()).metrics.count("llm_secrets_errors_total", { store: "memory", code });
      await run({ port: (server.address() as { port: number }).port, printed, ownLogs, errorsCounted });
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  } finally {
    out.error = savedError;
    process.env.NODE_ENV = savedEnv;
  }
}

describe("a JSON body that does not parse (express answers it before the function runs)", () => {
  it("is 400 with no part of it in the answer or the log: one line of ours, body-parser's error kept from console.error", async () => {
    await asDeployed("unparsable-http", async ({ port, printed, ownLogs }) => {
      const secret = newKey("sk-live-");
      for (const body of [`{"value": ${secret}}`, JSON.stringify(secret)]) {
        const res = await fetch(`http://127.0.0.1:${port}/v1/secrets/A`, {
          method: "PUT",
          headers: { "content-type": "application/json" },
          body,
        });
        expect(res.status).toBe(400);
        expect(await res.text()).not.toContain(secret.slice(0, 10));
      }
      // Anything else still reaches console.error.
      const out = globalThis.console;
      out.error("another error");
      expect(printed).toEqual([["another error"]]);
      const refused = ownLogs.map((l) => JSON.parse(l)).filter((l) => l.msg.includes("body parser"));
      expect(refused).toEqual([
        expect.objectContaining({ level: "warn", type: "entity.parse.failed", status: 400 }),
        expect.objectContaining({ level: "warn", type: "entity.parse.failed", status: 400 }),
      ]);
      expectNoValueIn(ownLogs, [secret.slice(0, 10)]);
    });
  });

  it("express's other refusals before the function runs are one line of ours too, not an error's stack on stderr", async () => {
    await asDeployed("refusing-http", async ({ port, printed, ownLogs }) => {
      const send = async (path: string, init: RequestInit = {}) => {
        const res = await fetch(`http://127.0.0.1:${port}${path}`, init);
        await res.arrayBuffer();
        return res.status;
      };
      // A body labelled gzip that does not inflate (zlib's error), and a malformed escape in the
      // path (the router's URIError): express's own 400 page.
      const headers = { "content-type": "application/json", "content-encoding": "gzip" };
      expect(await send("/v1/secrets/A", { method: "PUT", headers, body: '{"value":"not gzip"}' })).toBe(400);
      expect(await send("/v1/secrets/a%zz")).toBe(400);
      // And what the body parser refuses by type: a charset it has no decoder for, an unknown coding.
      const latin1 = { "content-type": "application/json; charset=iso-8859-1" };
      expect(await send("/v1/secrets/A", { method: "PUT", headers: latin1, body: '{"value":"v"}' })).toBe(415);
      const zstd2 = { "content-type": "application/json", "content-encoding": "zstd2" };
      expect(await send("/v1/forward/m/x", { method: "POST", headers: zstd2, body: "{}" })).toBe(415);
      await new Promise((resolve) => setImmediate(resolve)); // express logs after it answers
      expect(printed).toEqual([]);
      const lines = ownLogs.map((l) => JSON.parse(l)).filter((l) => l.msg.startsWith("request refused by"));
      expect(lines).toEqual([
        expect.objectContaining({
          level: "warn",
          msg: "request refused by functions-framework's body parser",
          code: "Z_DATA_ERROR",
          status: 400,
        }),
        expect.objectContaining({
          level: "warn",
          msg: "request refused by express: a malformed percent-escape in the path",
          status: 400,
        }),
        expect.objectContaining({ type: "charset.unsupported", status: 415 }),
        expect.objectContaining({ type: "encoding.unsupported", status: 415 }),
      ]);
    });
  });

  // Node 22.15's zlib decompresses zstd, and body-parser uses it (Node 20 answers zstd 415): the
  // deploy runtime is nodejs22. Runs where this Node has it.
  it.skipIf(!("createZstdDecompress" in zlib))(
    "a zstd body that does not decompress is one line of ours too (zstd's error codes)",
    async () => {
      await asDeployed("refusing-zstd", async ({ port, printed, ownLogs }) => {
        const headers = { "content-type": "application/json", "content-encoding": "zstd" };
        const res = await fetch(`http://127.0.0.1:${port}/v1/secrets/A`, { method: "PUT", headers, body: "not zstd" });
        expect(res.status).toBe(400);
        await new Promise((resolve) => setImmediate(resolve));
        expect(printed).toEqual([]);
        const lines = ownLogs.map((l) => JSON.parse(l)).filter((l) => l.msg.startsWith("request refused by"));
        expect(lines).toEqual([expect.objectContaining({ code: expect.stringMatching(/^ZSTD_/), status: 400 })]);
      });
    },
  );
});

describe("a request no URL can be made of (the listener refuses it before the app)", () => {
  it("is answered in the API's shape, no-store, with its line, as on serve", async () => {
    await asDeployed("unmade-url-http", async ({ port, ownLogs, errorsCounted }) => {
      // A raw backslash in the path (a URL parser would read it as `/`): sent as is, on a socket.
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(port, "127.0.0.1");
        let got = "";
        socket.on("data", (d) => {
          got += d;
        });
        socket.on("error", reject);
        socket.on("end", () => resolve(got));
        socket.end("GET /v1/secrets/a\\b HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
      });
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      expect(answer).toMatch(/\r\ncache-control: no-store\r\n/i);
      const body = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)) as { error: { code: string } };
      expect(body.error.code).toBe("invalid_request");
      const lines = ownLogs.map((l) => JSON.parse(l)).filter((l) => l.code === "invalid_request");
      expect(lines).toEqual([expect.objectContaining({ msg: "request", status: 400 })]);
      // Counted as the app counts its own errors (llm_secrets_errors_total).
      expect(await errorsCounted("invalid_request")).toBe(1);
    });
  });
});

describe("a compressed body (functions-framework inflates it before the function runs)", () => {
  it("is forwarded as the plain bytes it now is, no longer labelled with its Content-Encoding; a gzip PUT stores its value", async () => {
    const seen: { headers: Record<string, string | string[] | undefined>; body: Buffer }[] = [];
    const upstream = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (d: Buffer) => chunks.push(d));
      req.on("end", () => {
        seen.push({ headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{}");
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const masterKey = newKey();
    const upKey = newKey("sk-up-");
    const { gcpFunctions } = await import("../../functions/gcp/src/index");
    const targets = gcpFunctions({
      stores: [memoryStore],
      env: {
        LITELLM_MASTER_KEY: masterKey,
        LLM_SECRETS_CONFIG: [
          "model_list:",
          "  - model_name: m",
          `    litellm_params: {model: openai/x, api_base: "http://127.0.0.1:${(upstream.address() as { port: number }).port}", api_key: os.environ/UP_KEY}`,
          "",
        ].join("\n"),
      },
      log: createLogger(() => {}),
    });
    const runtime = await targets.runtime();
    await runtime.manager.put("UP_KEY", upKey);
    functions.http("inflated-http", targets.http);
    const server = getTestServer("inflated-http");
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const send = (path: string, method: string, encoding: string, body: Uint8Array) =>
      fetch(`http://127.0.0.1:${port}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${masterKey}`,
          "content-type": "application/json",
          "content-encoding": encoding,
        },
        body: new Uint8Array(body),
      });
    try {
      const plain = '{"model":"x","messages":[{"role":"user","content":"compressed"}]}';
      for (const [encoding, body] of [
        ["gzip", zlib.gzipSync(plain)],
        ["br", zlib.brotliCompressSync(plain)],
      ] as const) {
        seen.length = 0;
        const res = await send("/v1/forward/m/v1/chat/completions", "POST", encoding, body);
        expect(res.status).toBe(200);
        await res.arrayBuffer();
        expect(seen).toHaveLength(1);
        expect(seen[0]?.body.toString("utf8")).toBe(plain);
        expect(seen[0]?.headers["content-encoding"]).toBeUndefined();
        expect(seen[0]?.headers["content-length"]).toBe(String(Buffer.byteLength(plain)));
      }
      // identity is what it says: passed on as sent.
      seen.length = 0;
      await (await send("/v1/forward/m/v1/chat/completions", "POST", "identity", Buffer.from(plain))).arrayBuffer();
      expect(seen[0]?.headers["content-encoding"]).toBe("identity");
      expect(seen[0]?.body.toString("utf8")).toBe(plain);

      // README: functions-framework inflates gzip bodies before the function runs, so a gzip PUT
      // stores the value it holds (the other runtimes take the bytes as sent: not UTF-8, 400).
      const value = newKey("sk-zipped-");
      const put = await send("/v1/secrets/zipped", "PUT", "gzip", zlib.gzipSync(JSON.stringify({ value })));
      expect(put.status).toBe(201);
      expect(await runtime.manager.get("zipped")).toMatchObject({ value });
      // The 1 MiB limit is the inflated body's: the Content-Length it is read against counts it.
      const bomb = await send(
        "/v1/forward/m/v1/chat/completions",
        "POST",
        "gzip",
        zlib.gzipSync(JSON.stringify({ pad: "a".repeat(2 << 20) })),
      );
      expect(bomb.status).toBe(413);
      expect((await bomb.json()).error.code).toBe("payload_too_large");
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => upstream.close(() => resolve()));
      await runtime.close();
    }
  });
});

describe("the Google bundle", () => {
  it("holds Google's client libraries and no other cloud's; functions-framework stays external", async () => {
    const outfile = join(await tempDir(), "index.mjs");
    const metafile = (await buildGcp(outfile, true)) as { inputs: Record<string, unknown> };
    const inputs = Object.keys(metafile.inputs);
    expect(inputs.some((i) => i.includes("node_modules/@google-cloud/secret-manager/"))).toBe(true);
    expect(inputs.filter((i) => /node_modules\/(@aws-sdk|@smithy|@azure)\//.test(i))).toEqual([]);
    expect(inputs.filter((i) => i.includes("@google-cloud/functions-framework"))).toEqual([]);
  });
});
