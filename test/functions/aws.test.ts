// The AWS runtime beyond the contract table: the SQS handler's batchItemFailures (good, failing and
// malformed records), redelivery, a start that fails, and what the Lambda bundle holds.
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { createLogger } from "../../core/src/log";
import { memoryStore } from "../../core/src/stores/memory";
// @ts-expect-error: a plain ESM build script without types
import { buildAws } from "../../functions/aws/build.mjs";
import {
  asSent,
  awsHandlers,
  rawRequestOf,
  SQS_MARGIN_MS,
  type SqsEvent,
  withoutStage,
} from "../../functions/aws/src/index";
import { expectNoValueIn, newKey, tempDir } from "../helpers";
import { KEY_EVENTS_CONFIG, keyEvent, PartlyDownStore } from "./queue-helpers";

/** The handlers over a backend that is down for some names: what SQS must be told to redeliver. */
function setup() {
  const store = new PartlyDownStore();
  const logs: string[] = [];
  const handlers = awsHandlers({
    stores: [store.factory()],
    env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CONFIG: KEY_EVENTS_CONFIG },
    log: createLogger((line) => logs.push(line)),
  });
  return { store, logs, handlers };
}

/** The handlers over the in-memory store, key events on, logging and counting nowhere; and their master key. */
function quietHandlers() {
  const masterKey = newKey();
  const handlers = awsHandlers({
    stores: [memoryStore],
    env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_CONFIG: KEY_EVENTS_CONFIG },
    log: createLogger(() => {}),
    emf: () => {},
  });
  return { masterKey, handlers };
}

function record(messageId: string, body: unknown) {
  return { messageId, body: typeof body === "string" ? body : JSON.stringify(body) };
}

describe("the raw request of an HTTP event", () => {
  it("is the path and query as the event carries them, with the request's id and source for audit lines", () => {
    const context = { http: { method: "GET", sourceIp: "203.0.113.7" }, requestId: "JZ9bAiKsoAMEV0Q=" };
    expect(
      rawRequestOf({ rawPath: "/v1/secrets/a%2Fb", rawQueryString: "refresh=true", requestContext: context }),
    ).toEqual({ path: "/v1/secrets/a%2Fb?refresh=true", requestId: "JZ9bAiKsoAMEV0Q=", source: "203.0.113.7" });
    expect(rawRequestOf({ rawPath: "/health", requestContext: { http: { method: "GET" } } })).toEqual({
      path: "/health",
    });
    // With Lambda's context, its id: the one in Lambda's own lines (an HTTP API's requestId is its own).
    const awsRequestId = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef";
    expect(rawRequestOf({ rawPath: "/health", requestContext: context }, { awsRequestId }).requestId).toBe(
      awsRequestId,
    );
  });
});

describe("an HTTP event of another shape than payload 2.0", () => {
  it("is 500 in the API's shape with one line naming the events taken: REST API, ALB, HTTP API at payload 1.0", async () => {
    const logs: string[] = [];
    const masterKey = newKey();
    const handlers = awsHandlers({
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: masterKey },
      log: createLogger((line) => logs.push(line)),
      emf: () => {},
    });
    const headers = { authorization: `Bearer ${masterKey}` };
    const shapes = {
      // A REST API (and an HTTP API integration at payload 1.0): `path`, no `rawPath`.
      rest: {
        version: "1.0",
        resource: "/{proxy+}",
        path: "/v1/secrets/c/../d",
        httpMethod: "GET",
        headers,
        multiValueHeaders: {},
        queryStringParameters: null,
        requestContext: { httpMethod: "GET", path: "/prod/v1/secrets/c/../d", requestId: "r-1", stage: "prod" },
        body: null,
        isBase64Encoded: false,
      },
      alb: {
        requestContext: { elb: { targetGroupArn: "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/t/1" } },
        httpMethod: "GET",
        path: "/health",
        queryStringParameters: {},
        headers,
        body: "",
        isBase64Encoded: false,
      },
    };
    // Counted as the app counts its own errors (llm_secrets_errors_total): an alert on it sees them.
    const errors = async () =>
      (await handlers.runtime()).metrics.count("llm_secrets_errors_total", { store: "memory", code: "internal" });
    for (const [shape, event] of Object.entries(shapes)) {
      logs.length = 0;
      const counted = await errors();
      const result = await handlers.http(event as never, { awsRequestId: "lambda-1" });
      expect(await errors(), shape).toBe(counted + 1);
      expect(result.statusCode, shape).toBe(500);
      expect(JSON.parse(result.body ?? "")).toEqual({ error: { code: "internal", message: "internal error" } });
      expect(result.headers?.["cache-control"]).toBe("no-store");
      const lines = logs.map((l) => JSON.parse(l));
      expect(lines, shape).toEqual([
        expect.objectContaining({
          level: "error",
          msg: expect.stringMatching(/^unsupported HTTP event.*payload 2\.0/),
        }),
      ]);
    }
    // No HTTP request at all (an SQS batch wired to http by mistake): the invocation fails, so SQS
    // redelivers it and its dead-letter queue keeps it, rather than taking the batch as handled.
    const batch = { Records: [record("m-1", keyEvent("e-1", "flushed", "sk-flushed-1"))] };
    await expect(handlers.http(batch as never, { awsRequestId: "lambda-2" })).rejects.toThrow(/^not an HTTP event/);
  });
});

describe("a named stage in rawPath (an HTTP API's own endpoint)", () => {
  const on = (domainName: string, stage: string | undefined, rawPath: string) =>
    withoutStage({ rawPath, requestContext: { http: { method: "GET" }, domainName, ...(stage && { stage }) } }).rawPath;
  const API = "abc123.execute-api.eu-west-1.amazonaws.com";

  it("is taken off as a string, on the API's own endpoint only", () => {
    expect(on(API, "prod", "/prod/v1/secrets/a%2F..%2Fb")).toBe("/v1/secrets/a%2F..%2Fb");
    expect(on(API, "prod", "/prod")).toBe("/");
    expect(on("abc123.execute-api.cn-north-1.amazonaws.com.cn", "v1", "/v1/v1/secrets/x")).toBe("/v1/secrets/x");
    // $default, a path that does not start with the stage, a custom domain (no stage in its path,
    // even one named like our first segment) and a Function URL are left as they came.
    expect(on(API, "$default", "/v1/secrets/x")).toBe("/v1/secrets/x");
    expect(on(API, "prod", "/production/v1/secrets/x")).toBe("/production/v1/secrets/x");
    expect(on("secrets.example.com", "v1", "/v1/secrets/x")).toBe("/v1/secrets/x");
    expect(on("abc.lambda-url.eu-west-1.on.aws", undefined, "/v1/secrets/x")).toBe("/v1/secrets/x");
  });
});

describe("an HTTP API's rawPath, which API Gateway delivers percent-decoded", () => {
  const HTTP_API = "abc123.execute-api.eu-west-1.amazonaws.com";
  const FUNCTION_URL = "abc123.lambda-url.eu-west-1.on.aws";

  function send(
    handlers: ReturnType<typeof awsHandlers>,
    domainName: string,
    method: string,
    rawPath: string,
    headers: Record<string, string>,
  ) {
    const event = {
      version: "2.0",
      routeKey: "$default",
      rawPath,
      rawQueryString: "",
      headers: { host: domainName, ...headers },
      ...(method === "PUT" && { body: JSON.stringify({ value: "written" }), isBase64Encoded: false }),
      requestContext: { http: { method }, domainName, stage: "$default" },
    };
    return handlers.http(event as never, {} as never) as Promise<{ statusCode: number; body: string }>;
  }

  it("has its %, ? and # escaped back (they came from a %25, %253F, %23 the client sent), so nothing is decoded twice", () => {
    const on = (domainName: string, rawPath: string) =>
      asSent({ rawPath, requestContext: { http: { method: "GET" }, domainName } }).rawPath;
    expect(on(HTTP_API, "/v1/secrets/a%40b")).toBe("/v1/secrets/a%2540b");
    expect(on(HTTP_API, "/v1/secrets/prod?refresh=true")).toBe("/v1/secrets/prod%3Frefresh=true");
    expect(on(HTTP_API, "/v1/secrets/prod#x")).toBe("/v1/secrets/prod%23x");
    // `%5C` and `%09`, `%0A`: a URL parser would read `\` as `/` and drop the others.
    expect(on(HTTP_API, "/v1/forward/m/v1\\..\\x\t\n")).toBe("/v1/forward/m/v1%5C..%5Cx%09%0A");
    // A custom domain is an HTTP API's too; what AWS decoded to other characters stays as it came.
    expect(on("secrets.example.com", "/v1/secrets/c/d é")).toBe("/v1/secrets/c/d é");
    // A Function URL's rawPath is as the client sent it: left alone.
    expect(on(FUNCTION_URL, "/v1/secrets/a%40b")).toBe("/v1/secrets/a%40b");
    expect(on("abc123.lambda-url.cn-north-1.on.aws", "/v1/secrets/c%2Fd")).toBe("/v1/secrets/c%2Fd");
  });

  it("answers a name holding a % (sent as %25) as invalid, after the key check, and writes nothing", async () => {
    const { masterKey, handlers } = quietHandlers();
    const auth = { authorization: `Bearer ${masterKey}` };
    // The client sent `a%252540b` (the name `a%2540b`); the gateway decoded it twice, to `a%40b`.
    const put = await send(handlers, HTTP_API, "PUT", "/v1/secrets/a%40b", auth);
    expect(put.statusCode).toBe(400);
    expect(JSON.parse(put.body).error.code).toBe("invalid_name");
    expect(await (await handlers.runtime()).store.get("a@b")).toBeUndefined();
    // Without the key: 401 first, as for every request.
    expect((await send(handlers, HTTP_API, "PUT", "/v1/secrets/a%40b", {})).statusCode).toBe(401);
    // `prod%253Frefresh=true` arrives as `prod?refresh=true`: a name, not a read of prod with a query.
    const read = await send(handlers, "secrets.example.com", "GET", "/v1/secrets/prod?refresh=true", auth);
    expect(read.statusCode).toBe(400);
    expect(JSON.parse(read.body).error.code).toBe("invalid_name");
    // Through a Function URL the same rawPath is the encoded `a@b`, written as any name.
    expect((await send(handlers, FUNCTION_URL, "PUT", "/v1/secrets/a%40b", auth)).statusCode).toBe(201);
  });
});

describe("the SQS handler", () => {
  it("reports exactly the failed and the malformed records in batchItemFailures", async () => {
    const { store, logs, handlers } = setup();
    const keys = [newKey("sk-a-"), newKey("sk-b-"), newKey("sk-c-")];
    const event: SqsEvent = {
      Records: [
        record("m1", keyEvent("e1", "good-1", keys[0] as string)),
        record("m2", keyEvent("e2", "unlucky", keys[1] as string)),
        record("m3", "{not json"),
        record("m4", { id: "e4", type: "key.created" }),
        record("m5", keyEvent("e5", "good-2", keys[2] as string)),
        // A bug (not a backend error) fails its own record, not the batch.
        record("m6", keyEvent("e6", "buggy", newKey("sk-d-"))),
      ],
    };
    expect(await handlers.sqs(event)).toEqual({
      batchItemFailures: [
        { itemIdentifier: "m2" },
        { itemIdentifier: "m3" },
        { itemIdentifier: "m4" },
        { itemIdentifier: "m6" },
      ],
    });
    expect((await store.get("litellm/good-1"))?.value).toBe(keys[0]);
    expect((await store.get("litellm/good-2"))?.value).toBe(keys[2]);
    expect(await store.get("litellm/unlucky")).toBeUndefined();
    // Each record not applied is logged with its SQS messageId, to find it in the dead-letter queue.
    const notApplied = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "key event not applied");
    expect(notApplied.map((l) => [l.message_id, l.status])).toEqual([
      ["m2", "failed"],
      ["m3", "refused"],
      ["m4", "refused"],
      ["m6", "failed"],
    ]);

    // SQS redelivers m2 (and the malformed ones, until the redrive policy takes them): now it lands,
    // and a duplicate of m1 changes nothing.
    store.down = false;
    expect(
      await handlers.sqs({ Records: [event.Records[1], event.Records[0], event.Records[3]] as SqsEvent["Records"] }),
    ).toEqual({ batchItemFailures: [{ itemIdentifier: "m4" }] });
    expect((await store.get("litellm/unlucky"))?.value).toBe(keys[1]);
    expect((await store.get("litellm/good-1"))?.version).toBe("1");
    expectNoValueIn(logs, keys);
  });
});

describe("an SQS batch running out of time", () => {
  it("leaves the records it has no time for untried, in batchItemFailures, and reports the ones it did", async () => {
    const { store, logs, handlers } = setup();
    store.down = false;
    const keys = [newKey("sk-a-"), newKey("sk-b-"), newKey("sk-c-")];
    const event: SqsEvent = {
      Records: keys.map((key, i) => record(`t${i}`, keyEvent(`et${i}`, `timed-${i}`, key))),
    };
    // (The first record is tried whatever is left.) Plenty left before the second, then less than the margin.
    const left = [60_000, SQS_MARGIN_MS - 1];
    const context = { getRemainingTimeInMillis: () => left.shift() ?? 0 };
    expect(await handlers.sqs(event, context)).toEqual({ batchItemFailures: [{ itemIdentifier: "t2" }] });
    expect((await store.get("litellm/timed-0"))?.value).toBe(keys[0]);
    expect((await store.get("litellm/timed-1"))?.value).toBe(keys[1]);
    expect(await store.get("litellm/timed-2")).toBeUndefined(); // not tried
    expect(logs.some((l) => l.includes("time running out") && l.includes('"left":1'))).toBe(true);
    // A record that outlasts the time it was given (the store slow): it and the rest go back (b1
    // would have been applied had its 300 ms been waited for), and the batch answers in its time.
    const slow = ["fast-0", "slow-1", "fast-2"].map((alias, i) =>
      record(`b${i}`, keyEvent(`eb${i}`, alias, keys[i] as string)),
    );
    const tight = { getRemainingTimeInMillis: () => SQS_MARGIN_MS + 100 }; // 100 ms for each later record
    expect(await handlers.sqs({ Records: slow }, tight)).toEqual({
      batchItemFailures: [{ itemIdentifier: "b1" }, { itemIdentifier: "b2" }],
    });
    expect((await store.get("litellm/fast-0"))?.value).toBe(keys[0]);
    expect(await store.get("litellm/fast-2")).toBeUndefined();
    // A function with little time (a 3 s default) still tries its first record every time.
    const short = [{ ...record("s0", keyEvent("es0", "short-0", keys[0] as string)) }];
    expect(await handlers.sqs({ Records: short }, { getRemainingTimeInMillis: () => 100 })).toEqual({
      batchItemFailures: [],
    });
    expect((await store.get("litellm/short-0"))?.value).toBe(keys[0]);
    expectNoValueIn(logs, keys);
  });
});

describe("a start that fails", () => {
  it("fails the invocations of the retry pause, with one reason in the log and no secret", async () => {
    const logs: string[] = [];
    const masterKey = newKey();
    const handlers = awsHandlers({
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: nope\n" },
      log: createLogger((line) => logs.push(line)),
    });
    await expect(handlers.sqs({ Records: [] })).rejects.toThrow(/nope is not in this build/);
    await expect(handlers.sqs({ Records: [] })).rejects.toThrow(/nope is not in this build/);
    const lines = logs.filter((l) => l.includes("could not start"));
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] as string).reason).toMatch(/key_management_system: nope is not in this build/);
    expectNoValueIn(logs, [masterKey]);
  });
});

describe("the Lambda bundle", () => {
  it("is one ESM file exporting http and sqs, holding AWS's SDK and no other cloud's", async () => {
    const outfile = join(await tempDir(), "index.mjs");
    const metafile = (await buildAws(outfile, true)) as { inputs: Record<string, unknown> };
    const inputs = Object.keys(metafile.inputs);
    expect(inputs.some((i) => i.includes("node_modules/@aws-sdk/client-secrets-manager/"))).toBe(true);
    expect(inputs.filter((i) => /node_modules\/(@azure|@google-cloud|google-gax|@grpc)\//.test(i))).toEqual([]);
    const handlers = (await import(outfile)) as Record<string, unknown>;
    expect(typeof handlers.http).toBe("function");
    expect(typeof handlers.sqs).toBe("function");
  });
});

describe("an invocation's audit line", () => {
  it("is written when the handler's promise settles (Lambda freezes the process then), over HTTP and SQS", async () => {
    const { masterKey, handlers } = quietHandlers();
    await handlers.runtime();
    const written: string[] = [];
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    const audited = () =>
      written
        .flatMap((w) => w.split("\n"))
        .filter((l) => l.includes('"audit"'))
        .map((l) => JSON.parse(l) as { audit: string; outcome: string; request_id: string; source?: string });
    try {
      const event = {
        version: "2.0",
        rawPath: "/v1/secrets/X",
        rawQueryString: "",
        // A client's own X-Forwarded-For is not the source: Lambda's sourceIp is.
        headers: {
          host: "x.lambda-url.eu-west-1.on.aws",
          authorization: `Bearer ${masterKey}`,
          "x-forwarded-for": "198.51.100.9",
        },
        requestContext: {
          http: { method: "GET", sourceIp: "203.0.113.7" },
          domainName: "x.lambda-url.eu-west-1.on.aws",
          requestId: "lambda-1",
        },
      };
      const result = (await handlers.http(event as never, {} as never)) as { statusCode: number };
      expect(result.statusCode).toBe(404);
      expect(audited()).toEqual([
        expect.objectContaining({ audit: "read", outcome: "not_found", request_id: "lambda-1", source: "203.0.113.7" }),
      ]);
      written.length = 0;
      const batch = await handlers.sqs({ Records: [record("m-1", keyEvent("e-1", "flushed", "sk-flushed-1"))] });
      expect(batch.batchItemFailures).toEqual([]);
      expect(audited()).toEqual([expect.objectContaining({ audit: "key_event", outcome: "ok", request_id: "m-1" })]);
      expect(audited()[0]?.source).toBeUndefined(); // a queue message has none
    } finally {
      spy.mockRestore();
    }
  });
});

describe("CloudWatch EMF lines", () => {
  it("each invocation writes what it counted, labels as dimensions, and no value", async () => {
    const lines: string[] = [];
    const masterKey = newKey();
    const handlers = awsHandlers({
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_CONFIG: KEY_EVENTS_CONFIG },
      log: createLogger(() => {}),
      emf: (line) => lines.push(line),
    });
    const value = newKey("sk-emf-");
    await (await handlers.runtime()).manager.put("litellm/A", value);
    lines.length = 0;
    const event = {
      version: "2.0",
      rawPath: "/v1/secrets/litellm/A",
      rawQueryString: "refresh=true",
      headers: { host: "x.lambda-url.eu-west-1.on.aws", authorization: `Bearer ${masterKey}` },
      requestContext: { http: { method: "GET" }, domainName: "x.lambda-url.eu-west-1.on.aws" },
    };
    const result = (await handlers.http(event as never, {} as never)) as { statusCode: number };
    expect(result.statusCode).toBe(200);
    const emf = lines.map((l) => JSON.parse(l) as Record<string, unknown> & { _aws: Record<string, unknown> });
    expect(emf.length).toBeGreaterThan(0);
    for (const line of emf) {
      expect(line._aws).toMatchObject({ CloudWatchMetrics: [expect.objectContaining({ Namespace: "llm-secrets" })] });
    }
    const backend = emf.find((l) => l.op === "get" && "llm_secrets_backend_calls_total" in l);
    expect(backend).toMatchObject({ store: "memory", op: "get", llm_secrets_backend_calls_total: 1 });
    expect(emf.some((l) => Array.isArray(l.llm_secrets_backend_latency_seconds))).toBe(true);
    expectNoValueIn(lines, [value, masterKey]);
    // The next invocation writes only its own counts: an empty batch counts nothing.
    lines.length = 0;
    await handlers.sqs({ Records: [] });
    expect(lines).toEqual([]);
  });

  it("splits a latency of more than 100 values over lines, as CloudWatch refuses a larger line whole", async () => {
    const lines: string[] = [];
    const masterKey = newKey();
    const handlers = awsHandlers({
      stores: [memoryStore],
      env: { LITELLM_MASTER_KEY: masterKey },
      log: createLogger(() => {}),
      emf: (line) => lines.push(line),
    });
    // One resolve of 250 names the cache does not hold: 250 backend reads in one invocation.
    const { store } = (await handlers.runtime()).manager;
    for (let i = 0; i < 250; i++) await store.put(`NAME_${i}`, "v", { meta: {} });
    lines.length = 0;
    const config = Object.fromEntries(Array.from({ length: 250 }, (_, i) => [`k${i}`, `os.environ/NAME_${i}`]));
    const event = {
      version: "2.0",
      rawPath: "/v1/resolve",
      rawQueryString: "",
      headers: { host: "x.lambda-url.eu-west-1.on.aws", authorization: `Bearer ${masterKey}` },
      body: JSON.stringify({ config }),
      isBase64Encoded: false,
      requestContext: { http: { method: "POST" }, domainName: "x.lambda-url.eu-west-1.on.aws" },
    };
    expect(((await handlers.http(event as never, {} as never)) as { statusCode: number }).statusCode).toBe(200);
    const gets = lines
      .map((l) => JSON.parse(l) as Record<string, unknown> & { _aws: { CloudWatchMetrics: { Metrics: unknown[] }[] } })
      .filter((l) => l.op === "get");
    expect(gets.map((l) => (l.llm_secrets_backend_latency_seconds as number[]).length)).toEqual([100, 100, 50]);
    // The count goes once, on the first line; each line declares only the metrics it carries.
    expect(gets.map((l) => l.llm_secrets_backend_calls_total)).toEqual([250, undefined, undefined]);
    expect(gets.map((l) => l._aws.CloudWatchMetrics[0]?.Metrics.length)).toEqual([2, 1, 1]);
  });
});
