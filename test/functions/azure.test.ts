// The Azure runtime beyond the contract table: key events sent through Azurite's queue service
// (base64, as the queue trigger expects), read back with @azure/storage-queue and handed to the
// queue handler with an InvocationContext carrying dequeueCount, as the Functions host would (no
// host runs here): applied ones are deleted, failed ones come back, and after maxDequeueCount
// (host.json, checked as a file) a message goes to the poison queue. Also the HTTP adapter's bytes
// and repeated headers, and what the bundle holds.
import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer as createHttpServer, type Server } from "node:http";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { format } from "node:util";
import { HttpRequest, HttpResponse, InvocationContext, type TriggerMetadata } from "@azure/functions";
import { QueueClient } from "@azure/storage-queue";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { createLogger } from "../../core/src/log";
import type { StoreFactory } from "../../core/src/secret-store";
import { memoryStore } from "../../core/src/stores/memory";
// @ts-expect-error: a plain ESM build script without types
import { buildAzure } from "../../functions/azure/build.mjs";
import { azureFunctions, toResponse } from "../../functions/azure/src/index";
import { expectNoValueIn, newKey, tempDir, until } from "../helpers";
import { KEY_EVENTS_CONFIG, keyEvent, PartlyDownStore } from "./queue-helpers";

const ROOT = join(import.meta.dirname, "../..");
/** Azurite's documented development account (public, the same in every Azurite). */
const DEV_ACCOUNT = "devstoreaccount1";
const DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

let azurite: ChildProcess | undefined;
let connection = "";

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

beforeAll(async () => {
  const port = await freePort();
  azurite = spawn(
    process.execPath,
    [
      join(ROOT, "node_modules/azurite/dist/src/queue/main.js"),
      "--queueHost",
      "127.0.0.1",
      "--queuePort",
      String(port),
      "--inMemoryPersistence",
      "--extentMemoryLimit",
      "64",
      "--silent",
      "--skipApiVersionCheck",
      "--disableTelemetry",
    ],
    { stdio: ["ignore", "pipe", "pipe"], cwd: await tempDir() },
  );
  let out = "";
  azurite.stdout?.on("data", (d) => {
    out += d;
  });
  await until("Azurite's queue service to listen", () => out.includes("successfully listens"), 30_000);
  connection = `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_KEY};QueueEndpoint=http://127.0.0.1:${port}/${DEV_ACCOUNT};`;
});

afterAll(() => {
  azurite?.kill();
});

describe("the queue trigger, through Azurite", () => {
  it("deletes applied messages, redelivers failed ones, and poisons malformed ones after maxDequeueCount", async () => {
    const host = JSON.parse(await readFile(join(ROOT, "functions/azure/host.json"), "utf8"));
    const maxDequeueCount: number = host.extensions.queues.maxDequeueCount;
    expect(maxDequeueCount).toBe(5);
    expect(host.extensions.queues.messageEncoding).toBe("base64");
    // A failed message waits five minutes before its next try (the default is none: a store down
    // for seconds would use up the five tries at once and send the event to the poison queue).
    expect(host.extensions.queues.visibilityTimeout).toBe("00:05:00");
    // The Consumption plan's longest run (its default is 5 minutes; forward may wait 600 s).
    expect(host.functionTimeout).toBe("00:10:00");
    expect(host.extensions.http.routePrefix).toBe("");

    const store = new PartlyDownStore();
    const logs: string[] = [];
    const handlers = azureFunctions({
      stores: [store.factory()],
      env: {
        LITELLM_MASTER_KEY: newKey(),
        LLM_SECRETS_CONFIG: KEY_EVENTS_CONFIG,
      },
      log: createLogger((line) => logs.push(line)),
    });
    const queue = new QueueClient(connection, "key-events");
    const poison = new QueueClient(connection, "key-events-poison");
    await queue.create();
    await poison.create();

    const keys = [newKey("sk-a-"), newKey("sk-b-")];
    const send = (body: string) => queue.sendMessage(Buffer.from(body).toString("base64"));
    await send(JSON.stringify(keyEvent("e1", "good", keys[0] as string)));
    await send(JSON.stringify(keyEvent("e2", "unlucky", keys[1] as string)));
    await send("{not json");
    // An event encoded twice (a JSON string holding it): the worker hands it over as a string, and
    // it is refused, as SQS and Pub/Sub refuse it, not applied.
    const twice = JSON.stringify(JSON.stringify(keyEvent("e3", "twice", keys[0] as string)));
    await send(twice);

    /** One pass of what the host does: receive, decode, hand over, delete on success, poison past the limit. */
    const pass = async () => {
      const { receivedMessageItems } = await queue.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 1 });
      for (const item of receivedMessageItems) {
        if (item.dequeueCount > maxDequeueCount) {
          await poison.sendMessage(item.messageText);
          await queue.deleteMessage(item.messageId, item.popReceipt);
          continue;
        }
        const text = Buffer.from(item.messageText, "base64").toString("utf8");
        let message: unknown = text;
        try {
          message = JSON.parse(text); // the host hands JSON over as an object
        } catch {
          // and anything else as a string
        }
        const context = new InvocationContext({
          triggerMetadata: { id: item.messageId, dequeueCount: item.dequeueCount },
        });
        try {
          await handlers.keyEvents(message, context);
          await queue.deleteMessage(item.messageId, item.popReceipt);
        } catch {
          // left in the queue: visible again after its visibility timeout
        }
      }
      return receivedMessageItems.length;
    };

    await pass();
    expect((await store.get("litellm/good"))?.value).toBe(keys[0]);
    expect(await store.get("litellm/unlucky")).toBeUndefined();
    // The backend comes back: the failed one lands on its next delivery.
    store.down = false;
    for (let round = 0; round < 8; round++) {
      await new Promise((r) => setTimeout(r, 1100));
      await pass();
    }
    expect((await store.get("litellm/unlucky"))?.value).toBe(keys[1]);
    const left = await queue.peekMessages({ numberOfMessages: 32 });
    expect(left.peekedMessageItems).toEqual([]);
    const poisoned = await poison.peekMessages({ numberOfMessages: 32 });
    expect(poisoned.peekedMessageItems.map((m) => Buffer.from(m.messageText, "base64").toString())).toEqual([
      "{not json",
      twice,
    ]);
    expect(await store.get("litellm/twice")).toBeUndefined();
    // Each event not applied is logged with its queue message's id.
    const notApplied = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "key event not applied");
    expect(notApplied.length).toBeGreaterThan(0);
    for (const line of notApplied) expect(line.message_id).toMatch(/^[0-9a-f-]{36}$/);
    expectNoValueIn(logs, keys);
  }, 30_000);
});

/** The Azure handlers with model `m` forwarding to `upstream` (started here, closed after the test). */
async function forwardingTo(upstream: Server) {
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  onTestFinished(() => new Promise<void>((r) => upstream.close(() => r())));
  const masterKey = newKey();
  const logs: string[] = [];
  const { port } = upstream.address() as AddressInfo;
  const config = `model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:${port}", api_key: sk-upstream}\n`;
  const handlers = azureFunctions({
    stores: [memoryStore],
    env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_CONFIG: config },
    log: createLogger((line) => logs.push(line)),
  });
  return { handlers, masterKey, logs };
}

describe("the HTTP adapter", () => {
  it("keeps the body's bytes and every Set-Cookie (as cookies: the worker sends one value per header)", async () => {
    const response = new Response(new Uint8Array([0, 255, 1, 254]), { status: 201 });
    response.headers.append(
      "set-cookie",
      "__cf_bm=a%3D1; Path=/; Expires=Wed, 26 Nov 2036 10:00:00 GMT; HttpOnly; Secure; SameSite=None",
    );
    response.headers.append("set-cookie", "_cfuvid=b=3; Domain=.openai.com; Max-Age=60; SameSite=lax");
    response.headers.set("x-one", "1");
    // What the worker hands the host: @azure/functions' own HttpResponse of our init.
    const sent = new HttpResponse(await toResponse(response));
    expect(sent.status).toBe(201);
    expect(sent.headers.get("x-one")).toBe("1");
    expect(sent.headers.get("set-cookie")).toBeNull(); // one value per name: a second cookie would be lost there
    expect(sent.cookies).toEqual([
      {
        name: "__cf_bm",
        value: "a%3D1",
        path: "/",
        expires: new Date("2036-11-26T10:00:00Z"),
        httpOnly: true,
        secure: true,
        sameSite: "None",
      },
      { name: "_cfuvid", value: "b=3", domain: ".openai.com", maxAge: 60, sameSite: "Lax" },
    ]);
    expect([...new Uint8Array(await sent.arrayBuffer())]).toEqual([0, 255, 1, 254]);
  });

  it("refuses a function key in ?code= (the host accepts it, and a forward would send the URL on upstream)", async () => {
    const masterKey = newKey();
    const logs: string[] = [];
    const handlers = azureFunctions({
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: masterKey },
      log: createLogger((line) => logs.push(line)),
    });
    const functionKey = newKey("fk-");
    const res = await handlers.http(
      new HttpRequest({
        method: "POST",
        url: `http://localhost/v1/forward/gpt/v1/chat/completions?api-version=2024-10-21&code=${functionKey}`,
        headers: { authorization: `Bearer ${masterKey}`, "content-type": "application/json" },
        body: { string: "{}" },
      }),
      new InvocationContext(),
    );
    expect(res.status).toBe(400);
    const body = Buffer.from(res.body as Uint8Array).toString("utf8");
    expect(JSON.parse(body).error.code).toBe("invalid_request");
    expect(body).not.toContain(functionKey);
    // Logged like any refused request, without the key.
    const refusedLines = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "request");
    expect(refusedLines).toEqual([
      expect.objectContaining({ method: "POST", path: "/v1/forward/gpt/v1/chat/completions", status: 400 }),
    ]);
    expect(logs.join("")).not.toContain(functionKey);
    // In any case: the host reads its query without regard to case.
    const upper = await handlers.http(
      new HttpRequest({ method: "GET", url: `http://localhost/v1/secrets/X?CODE=${functionKey}` }),
      new InvocationContext(),
    );
    expect(upper.status).toBe(400);
    // Other queries pass: ?refresh=true on a read.
    const read = await handlers.http(
      new HttpRequest({
        method: "GET",
        url: "http://localhost/v1/secrets/NONE?refresh=true",
        headers: { authorization: `Bearer ${masterKey}` },
      }),
      new InvocationContext(),
    );
    expect(read.status).toBe(404);
    // The two refusals are counted as the app counts its own errors (llm_secrets_errors_total).
    const { metrics } = await handlers.runtime();
    expect(metrics.count("llm_secrets_errors_total", { store: "memory", code: "invalid_request" })).toBe(2);
  });

  it("refuses a body sent chunked, which the host does not pass on: nothing forwarded empty, nothing written", async () => {
    // The host copies a body to the worker only when its Content-Length is above 0: a chunked one
    // arrives as its headers alone (azure-functions-host #7930). Before, a forward sent an empty POST on.
    const seen: string[] = [];
    const upstream = createHttpServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
    const { handlers, masterKey, logs } = await forwardingTo(upstream);
    const chunked = {
      authorization: `Bearer ${masterKey}`,
      "content-type": "application/json",
      "transfer-encoding": "chunked",
    };
    for (const [method, path] of [
      ["POST", "/v1/forward/m/v1/chat/completions"],
      ["PUT", "/v1/secrets/X"],
    ] as const) {
      const res = await handlers.http(
        new HttpRequest({ method, url: `https://app.azurewebsites.net${path}`, headers: chunked }),
        new InvocationContext(),
      );
      expect(res.status, `${method} ${path}`).toBe(400);
      const error = JSON.parse(Buffer.from(res.body as Uint8Array).toString("utf8")).error;
      expect(error).toEqual({ code: "invalid_request", message: expect.stringContaining("Content-Length") });
    }
    expect(seen).toEqual([]);
    expect(await (await handlers.runtime()).store.get("X")).toBeUndefined();
    expect(logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "request")).toEqual([
      expect.objectContaining({ method: "POST", path: "/v1/forward/m/v1/chat/completions", status: 400 }),
      expect.objectContaining({ method: "PUT", path: "/v1/secrets/X", status: 400 }),
    ]);
    // A body that did arrive is read whatever its headers say; no body without chunking is an empty one.
    const sent = await handlers.http(
      new HttpRequest({
        method: "POST",
        url: "https://app.azurewebsites.net/v1/forward/m/v1/chat/completions",
        headers: chunked,
        body: { string: "{}" },
      }),
      new InvocationContext(),
    );
    expect(sent.status).toBe(200);
    const empty = await handlers.http(
      new HttpRequest({
        method: "POST",
        url: "https://app.azurewebsites.net/v1/forward/m/v1/chat/completions",
        headers: { authorization: `Bearer ${masterKey}` },
      }),
      new InvocationContext(),
    );
    expect(empty.status).toBe(200);
    expect(seen).toEqual(["POST /v1/chat/completions", "POST /v1/chat/completions"]);
  });

  it("answers a forward whose upstream breaks off mid-answer with 502 upstream_unavailable, not a failed invocation", async () => {
    // Its headers and part of its body, then the connection is gone.
    const upstream = createHttpServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"partial":', () => res.socket?.destroy());
    });
    const { handlers, masterKey, logs } = await forwardingTo(upstream);
    const res = await handlers.http(
      new HttpRequest({
        method: "GET",
        url: "http://localhost/v1/forward/m/v1/models",
        headers: { authorization: `Bearer ${masterKey}` },
      }),
      new InvocationContext(),
    );
    expect(res.status).toBe(502);
    expect(JSON.parse(Buffer.from(res.body as Uint8Array).toString("utf8")).error.code).toBe("upstream_unavailable");
    expect(logs.map((l) => JSON.parse(l).msg)).toContain("upstream answer cut");
    // Counted as the app counts its own errors (llm_secrets_errors_total): the app had answered 200.
    const { metrics } = await handlers.runtime();
    expect(metrics.count("llm_secrets_errors_total", { store: "memory", code: "upstream_unavailable" })).toBe(1);
  });

  it("hands a PUT body through byte for byte", async () => {
    const masterKey = newKey();
    const handlers = azureFunctions({
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: masterKey },
      log: createLogger(() => {}),
    });
    const value = "ключ-🔑-ü";
    const put = await handlers.http(
      new HttpRequest({
        method: "PUT",
        url: "http://localhost/v1/secrets/U",
        headers: { authorization: `Bearer ${masterKey}`, "content-type": "application/json" },
        body: { bytes: new Uint8Array(Buffer.from(JSON.stringify({ value }))) },
      }),
      new InvocationContext(),
    );
    expect(put.status).toBe(201);
    expect((await (await handlers.runtime()).store.get("U"))?.value).toBe(value);
  });
});

/**
 * An InvocationContext as the worker makes one, whose log calls are recorded as the worker hands
 * them to the host: the level, and the message (`util.format` of the arguments), read as JSON.
 */
function recordingContext(triggerMetadata?: TriggerMetadata) {
  const sent: { level: string; line: Record<string, unknown> }[] = [];
  const context = new InvocationContext({
    triggerMetadata,
    logHandler: (level, ...args) => sent.push({ level, line: JSON.parse(format(...args)) }),
  });
  return { context, sent };
}

/** What the process writes on stdout and stderr during `run`, line by line (nothing reaches the terminal). */
async function written(run: () => Promise<void>): Promise<{ stdout: string[]; stderr: string[] }> {
  const out = { stdout: [] as string[], stderr: [] as string[] };
  const spies = (["stdout", "stderr"] as const).map((name) =>
    vi.spyOn(process[name], "write").mockImplementation((chunk: string | Uint8Array) => {
      out[name].push(...String(chunk).split("\n").filter(Boolean));
      return true;
    }),
  );
  try {
    await run();
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
  return out;
}

describe("the function's own log", () => {
  // The host reads the worker's stdout as Information, whatever a line says: an error written
  // there reached Application Insights at severity 1, and an alert on Warning or Error never fired.
  it("hands each line to the host through its invocation's context, at its level; a line after it to stderr", async () => {
    const store = new PartlyDownStore();
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const factory: StoreFactory = {
      ...store.factory(),
      open: async (_settings, deps) => {
        // A store's own work begun in the invocation that opened it, which logs once that has returned.
        void released.then(() => deps.log.error("background refresh failed", { code: "backend_unavailable" }));
        return store;
      },
    };
    const handlers = azureFunctions({
      stores: [factory],
      env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CONFIG: KEY_EVENTS_CONFIG },
    });
    const queued = recordingContext({ id: "m-1", dequeueCount: 1 });
    const request = recordingContext();
    const key = newKey("sk-az-");
    const out = await written(async () => {
      // Two invocations at once, as the worker runs them: each line goes to its own.
      const [event, answer] = await Promise.allSettled([
        handlers.keyEvents(keyEvent("e-az", "unlucky-az", key), queued.context),
        handlers.http(
          new HttpRequest({
            method: "GET",
            url: "http://localhost/v1/secrets/X",
            headers: { authorization: "Bearer no" },
          }),
          request.context,
        ),
      ]);
      expect(event.status).toBe("rejected");
      expect(answer).toMatchObject({ status: "fulfilled", value: { status: 401 } });
      release();
      await new Promise((resolve) => setImmediate(resolve));
    });
    expect(queued.sent).toEqual([
      { level: "warning", line: expect.objectContaining({ level: "warn", msg: "store call failed" }) },
      {
        level: "warning",
        line: expect.objectContaining({ level: "warn", msg: "key event not applied", message_id: "m-1" }),
      },
    ]);
    expect(request.sent).toEqual([
      { level: "information", line: expect.objectContaining({ level: "info", msg: "request", status: 401 }) },
    ]);
    // After its invocation returned: not handed to it (the worker would file it there with a
    // warning), but to stderr, which the host reads as Error for a line holding "error".
    expect(out.stderr.map((l) => JSON.parse(l))).toEqual([
      expect.objectContaining({ level: "error", msg: "background refresh failed" }),
    ]);
    // Only the audit's lines on stdout (records, at Information).
    expect(out.stdout.map((l) => Object.keys(JSON.parse(l))).filter((k) => !k.includes("audit"))).toEqual([]);
    expectNoValueIn([...out.stdout, ...out.stderr, ...queued.sent.map((s) => JSON.stringify(s))], [key]);
  });

  it("hands the start's failure to the host as an error of the invocation that started it", async () => {
    const handlers = azureFunctions({
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: nope\n" },
    });
    const { context, sent } = recordingContext();
    const out = await written(async () => {
      const res = await handlers.http(
        new HttpRequest({ method: "GET", url: "http://localhost/v1/secrets/X" }),
        context,
      );
      expect(res.status).toBe(500);
    });
    expect(sent).toEqual([
      { level: "error", line: expect.objectContaining({ level: "error", msg: "llm-secrets could not start" }) },
    ]);
    expect(out).toEqual({ stdout: [], stderr: [] });
  });
});

describe("the Azure bundle", () => {
  it("holds Key Vault's SDK and no other cloud's; @azure/functions-core stays external", async () => {
    const outfile = join(await tempDir(), "index.mjs");
    const metafile = (await buildAzure(outfile, true)) as { inputs: Record<string, unknown> };
    const inputs = Object.keys(metafile.inputs);
    expect(inputs.some((i) => i.includes("node_modules/@azure/keyvault-secrets/"))).toBe(true);
    expect(inputs.filter((i) => /node_modules\/(@aws-sdk|@smithy|@google-cloud|google-gax|@grpc)\//.test(i))).toEqual(
      [],
    );
    expect(inputs.filter((i) => i.includes("functions-core"))).toEqual([]);
  });
});
