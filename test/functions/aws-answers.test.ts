// What the Lambda `http` handler hands back to Lambda: forwarded answers through it to a local
// upstream, as a Function URL invokes it (payload 2.0), and the result as Lambda would send it on.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createLogger } from "../../core/src/log";
import { memoryStore } from "../../core/src/stores/memory";
import { awsHandlers, type HttpResultV2, LAMBDA_PAYLOAD_LIMIT } from "../../functions/aws/src/index";
import { newKey } from "../helpers";

/**
 * Answers `/bytes?n=N&type=T` with N bytes (0x41) of type T, `/raw/<hex>?type=T` with those bytes,
 * and `/cut` with part of an answer before its connection goes.
 */
let upstream: Server;
let upstreamUrl = "";
/** The request targets the upstream got. */
const targets: string[] = [];

beforeAll(async () => {
  upstream = createServer((req, res) => {
    targets.push(req.url ?? "");
    const url = new URL(`http://x${req.url}`);
    const type = url.searchParams.get("type");
    const headers: Record<string, string> = type ? { "content-type": type } : {};
    if (url.pathname === "/bytes") {
      res.writeHead(200, headers);
      res.end(Buffer.alloc(Number(url.searchParams.get("n")), 0x41));
    } else if (url.pathname === "/cut") {
      // Its headers and part of its body, then the connection is gone.
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"partial":', () => res.socket?.destroy());
    } else if (url.pathname.startsWith("/raw/")) {
      res.writeHead(200, headers);
      res.end(Buffer.from(url.pathname.slice("/raw/".length), "hex"));
    } else {
      res.writeHead(404, { "content-type": "application/json" });
      res.end("{}");
    }
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => upstream.close(() => resolve())));

function setup() {
  const masterKey = newKey();
  const logs: string[] = [];
  const config = [
    "model_list:",
    "  - model_name: m",
    "    litellm_params:",
    "      model: openai/gpt-4o",
    `      api_base: ${upstreamUrl}`,
    "      api_key: sk-upstream",
    "  - model_name: based",
    "    litellm_params:",
    "      model: openai/gpt-4o",
    `      api_base: ${upstreamUrl}/base`,
    "      api_key: sk-upstream",
  ].join("\n");
  const handlers = awsHandlers({
    stores: [memoryStore],
    env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_CONFIG: `${config}\n` },
    log: createLogger((line) => logs.push(line)),
    emf: () => {},
  });
  /**
   * A GET through a Function URL (the path as given, its query after the first `?`), or through an
   * HTTP API on `host` (then the path given is the rawPath AWS hands over, decoded).
   */
  const get = async (
    target: string,
    host = "abc123.lambda-url.eu-west-1.on.aws",
    headers: Record<string, string> = {},
    lambda: { requestId?: string; context?: { awsRequestId?: string } } = {},
  ): Promise<HttpResultV2> => {
    const cut = target.indexOf("?");
    const event = {
      version: "2.0",
      routeKey: "$default",
      rawPath: cut === -1 ? target : target.slice(0, cut),
      rawQueryString: cut === -1 ? "" : target.slice(cut + 1),
      headers: { host, authorization: `Bearer ${masterKey}`, ...headers },
      requestContext: {
        http: { method: "GET", path: target, protocol: "HTTP/1.1", sourceIp: "127.0.0.1", userAgent: "test" },
        domainName: host,
        apiId: "abc123",
        requestId: lambda.requestId ?? "req-1",
      },
    };
    return (await handlers.http(event as never, (lambda.context ?? {}) as never)) as HttpResultV2;
  };
  return { handlers, logs, get };
}

/** The body's bytes as the client gets them (Lambda decodes a base64 body). */
function bytesOf(result: HttpResultV2): Buffer {
  return Buffer.from(result.body ?? "", result.isBase64Encoded ? "base64" : "utf8");
}

/** What Lambda measures against its limit: the result as the Node runtime sends it (JSON). */
function payloadBytes(result: HttpResultV2): number {
  return Buffer.byteLength(JSON.stringify(result), "utf8");
}

describe("an answer past Lambda's 6 MB response payload", () => {
  it("is AWS's figure: 6291556 bytes", () => {
    expect(LAMBDA_PAYLOAD_LIMIT).toBe(6_291_556);
  });

  it("is a 502 in the API's shape with one log line giving its size, not Lambda's own 502", async () => {
    const { handlers, logs, get } = setup();
    const errors = async () =>
      (await handlers.runtime()).metrics.count("llm_secrets_errors_total", {
        store: "memory",
        code: "upstream_unavailable",
      });
    // 7 MB: too large whatever the encoding. 5 MB of octet-stream: under the limit as bytes, past it
    // once base64-encoded (as Lambda must carry a binary body).
    for (const [n, type] of [
      [7_000_000, "application/octet-stream"],
      [5_000_000, "application/octet-stream"],
      [6_500_000, "application/json"],
    ] as const) {
      logs.length = 0;
      const counted = await errors();
      const result = await get(`/v1/forward/m/bytes?n=${n}&type=${type}`);
      expect(result.statusCode, `${n} bytes of ${type}`).toBe(502);
      // Counted as the app counts its own errors (llm_secrets_errors_total).
      expect(await errors()).toBe(counted + 1);
      expect(result.isBase64Encoded).toBe(false);
      expect(result.headers?.["content-type"]).toBe("application/json");
      expect(result.headers?.["cache-control"]).toBe("no-store");
      const body = JSON.parse(result.body ?? "") as { error: { code: string; message: string } };
      expect(body.error.code).toBe("upstream_unavailable");
      expect(body.error.message).toMatch(/too large for Lambda/);
      const lines = logs.map((l) => JSON.parse(l)).filter((l) => /too large for Lambda/.test(l.msg));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ level: "error", status: 200, limit: LAMBDA_PAYLOAD_LIMIT, request_id: "req-1" });
      expect(lines[0].bytes).toBeGreaterThan(LAMBDA_PAYLOAD_LIMIT);
      // A body past the limit by itself is not read to its end (nor held whole in memory).
      expect(lines[0].read_whole).toBe(n > LAMBDA_PAYLOAD_LIMIT ? false : undefined);
      // Its size, never its content.
      expect(logs.join("")).not.toContain("AAAAAAAA");
      expect(payloadBytes(result)).toBeLessThan(LAMBDA_PAYLOAD_LIMIT);
    }
    // The request's id is its audit line's: Lambda's, even when the caller sent its own x-request-id
    // (the audit line's client_request_id).
    logs.length = 0;
    await get("/v1/forward/m/bytes?n=7000000", undefined, { "x-request-id": "client-rid-9" });
    const line = logs.map((l) => JSON.parse(l)).find((l) => /too large for Lambda/.test(l.msg));
    expect(line).toMatchObject({ request_id: "req-1" });
  });

  it("is logged with its audit line's request id, Lambda's own, also behind an HTTP API (whose requestId is API Gateway's)", async () => {
    const { logs, get } = setup();
    const written: string[] = [];
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    const awsRequestId = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef";
    try {
      const result = await get("/v1/forward/m/bytes?n=7000000", "secrets.example.com", undefined, {
        requestId: "JZ9bAiKsoAMEV0Q=",
        context: { awsRequestId },
      });
      expect(result.statusCode).toBe(502);
    } finally {
      spy.mockRestore();
    }
    const line = logs.map((l) => JSON.parse(l)).find((l) => /too large for Lambda/.test(l.msg));
    expect(line).toMatchObject({ request_id: awsRequestId });
    const audit = written
      .flatMap((w) => w.split("\n"))
      .filter((l) => l.includes('"audit"'))
      .map((l) => JSON.parse(l));
    expect(audit).toEqual([expect.objectContaining({ audit: "forward", request_id: awsRequestId })]);
  });

  it("is not reached by a 1 MB answer, which passes unchanged", async () => {
    const { logs, get } = setup();
    for (const type of ["application/octet-stream", "application/json"]) {
      const result = await get(`/v1/forward/m/bytes?n=1000000&type=${type}`);
      expect(result.statusCode).toBe(200);
      expect(result.headers?.["content-type"]).toBe(type);
      expect(bytesOf(result).equals(Buffer.alloc(1_000_000, 0x41))).toBe(true);
      expect(payloadBytes(result)).toBeLessThan(LAMBDA_PAYLOAD_LIMIT);
    }
    expect(logs.filter((l) => /too large/.test(l))).toEqual([]);
  });
});

describe("an upstream that breaks off mid-answer", () => {
  it("is a 502 upstream_unavailable in the API's shape, not a failed invocation (Lambda's own 502)", async () => {
    const { handlers, get, logs } = setup();
    const result = await get("/v1/forward/m/cut");
    expect(result.statusCode).toBe(502);
    expect(JSON.parse(result.body ?? "").error.code).toBe("upstream_unavailable");
    // Counted as the app counts its own errors (llm_secrets_errors_total).
    const { metrics } = await handlers.runtime();
    expect(metrics.count("llm_secrets_errors_total", { store: "memory", code: "upstream_unavailable" })).toBe(1);
    expect(logs.map((l) => JSON.parse(l).msg)).toContain("upstream answer cut");
  });
});

describe("a forwarded answer's bytes", () => {
  it("come back as the upstream sent them, whatever their type: only JSON in UTF-8 goes as text", async () => {
    const { get } = setup();
    const cases: [hex: string, type: string | undefined, text: boolean][] = [
      // Not UTF-8: read as text, its é (e9) became U+FFFD (efbfbd).
      ["636166e9", "text/plain; charset=iso-8859-1", false],
      ["636166e9", "text/csv", false],
      ["3c613ee93c2f613e", "text/html; charset=windows-1252", false],
      // No Content-Type at all (the upstream sent none): forward labels it application/octet-stream.
      ["fffe0080c3", undefined, false],
      ["7b2261223a317d", "application/json", true],
      ["7b2261223a317d", "application/json; charset=utf-8", true],
      ["7b2261223a317d", "application/problem+json", true],
      // JSON said to be in another charset is passed as bytes.
      ["7b2261223a22e9227d", "application/json; charset=iso-8859-1", false],
      ["646174613a20e90a0a", "text/event-stream", false],
    ];
    for (const [hex, type, text] of cases) {
      const result = await get(`/v1/forward/m/raw/${hex}${type ? `?type=${encodeURIComponent(type)}` : ""}`);
      expect(result.statusCode).toBe(200);
      expect(bytesOf(result).toString("hex"), `${hex} as ${type}`).toBe(hex);
      expect(result.isBase64Encoded, `${type} as base64`).toBe(!text);
      expect(result.headers?.["content-type"]).toBe(type ?? "application/octet-stream");
    }
  });

  it("of our own answers stay JSON text", async () => {
    const { get } = setup();
    const result = await get("/v1/secrets/absent");
    expect(result.statusCode).toBe(404);
    expect(result.isBase64Encoded).toBe(false);
    expect(JSON.parse(result.body ?? "").error.code).toBe("not_found");
  });
});

describe("a forward through an HTTP API (its rawPath decoded)", () => {
  it("passes a \\ (sent as %5C) and control characters on escaped, never as a separator of the upstream's path", async () => {
    const { get } = setup();
    const api = "abc123.execute-api.eu-west-1.amazonaws.com";
    // The client sent `/v1/forward/based/v1%5C..%5C..%5Cbytes`: a URL parser reads `\` as `/`.
    targets.length = 0;
    expect((await get("/v1/forward/based/v1\\..\\..\\bytes?n=1", api)).statusCode).toBe(404);
    expect(targets).toEqual(["/base/v1%5C..%5C..%5Cbytes?n=1"]);
    // `%09` and `%0A` decoded: a URL parser drops tabs and newlines.
    targets.length = 0;
    await get("/v1/forward/based/a\tb\nc", api);
    expect(targets).toEqual(["/base/a%09b%0Ac"]);
  });
});
