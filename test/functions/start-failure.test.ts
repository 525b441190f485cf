// A cloud function whose runtime cannot start (a bad config, a store that cannot open yet): every
// runtime answers HTTP in the API's error shape rather than the platform's empty or HTML 500, and a
// start that failed is tried again after a pause rather than failing until the instance is recycled.
import * as functions from "@google-cloud/functions-framework";
import { getTestServer } from "@google-cloud/functions-framework/testing";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../core/src/log";
import { START_RETRY_MS, startOnFirstUse } from "../../core/src/runtime";
import type { StoreFactory } from "../../core/src/secret-store";
import { StoreUnavailable } from "../../core/src/store-errors";
import { memoryStore } from "../../core/src/stores/memory";
import { newKey } from "../helpers";

/** A config naming a store no bundle ships: the start stops with a config error. */
const BAD_CONFIG = "general_settings:\n  key_management_system: not_a_store\n";

function badStart() {
  const logs: string[] = [];
  return {
    logs,
    options: {
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CONFIG: BAD_CONFIG },
      log: createLogger((line) => logs.push(line)),
    },
  };
}

function expectStartFailure(status: number, headers: Headers | Record<string, string>, body: string) {
  expect(status).toBe(500);
  const get = (name: string) => (headers instanceof Headers ? headers.get(name) : headers[name]);
  expect(get("cache-control")).toBe("no-store");
  expect(get("content-type")).toMatch(/^application\/json/);
  expect(JSON.parse(body)).toEqual({
    error: { code: "internal", message: "llm-secrets could not start: the function's log says why" },
  });
}

/** A store whose first open fails (a volume not mounted yet) and whose later ones work; `opens()` counts them. */
function flakyStore() {
  let count = 0;
  const flaky: StoreFactory = {
    ...memoryStore,
    open: async (settings, deps) => {
      count++;
      if (count === 1) throw new StoreUnavailable("the secrets volume is not mounted yet");
      return memoryStore.open(settings as never, deps);
    },
  };
  return { flaky, opens: () => count };
}

describe("a start that fails", () => {
  it("is tried again by the first invocation after START_RETRY_MS, not before, and logged each time", async () => {
    let clock = 1_000_000;
    const { flaky, opens } = flakyStore();
    const logs: string[] = [];
    const runtime = startOnFirstUse({
      stores: [flaky],
      env: { LITELLM_MASTER_KEY: newKey() },
      log: createLogger((line) => logs.push(line)),
      now: () => clock,
    });
    await expect(runtime()).rejects.toThrow("the secrets volume is not mounted yet");
    clock += START_RETRY_MS - 1;
    await expect(runtime()).rejects.toThrow("the secrets volume is not mounted yet");
    const health = await runtime.fetch(new Request("http://localhost/health"), { path: "/health" });
    expectStartFailure(health.status, health.headers, await health.text());
    expect(opens()).toBe(1); // no start storm while the pause runs
    clock += 1;
    const rt = await runtime();
    expect(opens()).toBe(2);
    expect(await runtime()).toBe(rt); // started: kept
    expect((await runtime.fetch(new Request("http://localhost/health"), { path: "/health" })).status).toBe(200);
    const failures = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "llm-secrets could not start");
    expect(failures).toEqual([
      expect.objectContaining({ level: "error", reason: "the secrets volume is not mounted yet", retry_in_s: 10 }),
    ]);
    await rt.close();
  });

  it("is tried again at once when the clock steps back (the pause would last the step)", async () => {
    let clock = 1_000_000;
    const { flaky, opens } = flakyStore();
    const runtime = startOnFirstUse({
      stores: [flaky],
      env: { LITELLM_MASTER_KEY: newKey() },
      log: createLogger(() => {}),
      now: () => clock,
    });
    await expect(runtime()).rejects.toThrow("the secrets volume is not mounted yet");
    clock -= 3_600_000; // NTP steps the clock back an hour
    const rt = await runtime();
    expect(opens()).toBe(2);
    await rt.close();
  });
});

describe("HTTP while the runtime cannot start: 500 internal in the API's shape on every runtime", () => {
  it("aws lambda (Function URL event)", async () => {
    const { awsHandlers } = await import("../../functions/aws/src/index");
    const { options, logs } = badStart();
    const lambda = awsHandlers({ ...options, emf: () => {} });
    const event = {
      version: "2.0",
      rawPath: "/v1/secrets/OPENAI_API_KEY",
      rawQueryString: "",
      headers: { host: "abc.lambda-url.eu-west-1.on.aws" },
      requestContext: { http: { method: "GET" }, domainName: "abc.lambda-url.eu-west-1.on.aws" },
    };
    const result = (await lambda.http(event as never, {} as never)) as {
      statusCode: number;
      headers: Record<string, string>;
      body: string;
    };
    expectStartFailure(result.statusCode, result.headers, result.body);
    expect(logs.some((l) => l.includes("not_a_store is not in this build"))).toBe(true);
    // Queue batches fail whole: SQS redelivers every record.
    await expect(lambda.sqs({ Records: [{ messageId: "m1", body: "{}" }] })).rejects.toThrow(/not_a_store/);
  });

  it("azure functions (HttpRequest)", async () => {
    const { HttpRequest, InvocationContext } = await import("@azure/functions");
    const { azureFunctions } = await import("../../functions/azure/src/index");
    const { options } = badStart();
    const handlers = azureFunctions(options);
    const res = await handlers.http(
      new HttpRequest({ method: "GET", url: "http://localhost/v1/secrets/OPENAI_API_KEY" }),
      new InvocationContext(),
    );
    const headers = Object.fromEntries(res.headers as [string, string][]);
    expectStartFailure(res.status ?? 200, headers, Buffer.from(res.body as Uint8Array).toString("utf8"));
  });

  it("google functions-framework server", async () => {
    const { gcpFunctions } = await import("../../functions/gcp/src/index");
    const { options } = badStart();
    const targets = gcpFunctions(options);
    functions.http("start-failure-http", targets.http);
    const server = getTestServer("start-failure-http");
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const port = (server.address() as { port: number }).port;
      const res = await fetch(`http://127.0.0.1:${port}/v1/secrets/OPENAI_API_KEY`);
      expectStartFailure(res.status, res.headers, await res.text());
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
