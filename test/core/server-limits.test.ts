// The server's limits over real sockets: a connection cap, and headers / whole-request timeouts.
// Outcomes only (accepted, closed, 408), with generous upper bounds on the waiting: no speed is asserted.
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOCAL_STORES } from "../../core/src/cli";
import { ConfigError } from "../../core/src/errors";
import { DEFAULT_TIMEOUTS, type ServerTimeouts, startServer } from "../../core/src/server";
import { DEFAULT_MAX_CONNECTIONS, loadSettings } from "../../core/src/settings";
import { expectNoValueIn, inProcessApp, makeCertificate, newKey, tempDir, until } from "../helpers";

/** A raw TCP client that records what it receives and whether the server closed it. */
class RawClient {
  readonly socket: Socket;
  received = "";
  closed = false;

  /** `halfOpen`: the client never closes its side on its own (it stays open after the server's FIN). */
  constructor(url: string, halfOpen = false) {
    const u = new URL(url);
    this.socket = connect({ port: Number(u.port), host: u.hostname, allowHalfOpen: halfOpen });
    this.socket.setEncoding("latin1");
    this.socket.on("data", (d: string) => {
      this.received += d;
    });
    // A reset (the server dropped us while we wrote) is one way of being closed.
    this.socket.on("error", () => {});
    this.socket.on("close", () => {
      this.closed = true;
    });
  }

  write(data: string): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Answers received so far (status lines). */
  statuses(): string[] {
    return [...this.received.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1] as string);
  }

  /** One GET /health on this connection, kept alive; resolves with its status. */
  async health(): Promise<string> {
    const before = this.statuses().length;
    const okBodies = this.received.split('"status":"ok"').length;
    this.write("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    await until(
      "an answer to GET /health",
      () => this.closed || (this.statuses().length > before && this.received.split('"status":"ok"').length > okBodies),
    );
    return this.statuses()[before] ?? "closed";
  }

  /** Sends `chunk` every `everyMs` until the connection is closed; returns a stop function. */
  trickle(chunk: string, everyMs: number): () => void {
    const timer = setInterval(() => {
      if (this.closed) clearInterval(timer);
      else this.write(chunk);
    }, everyMs);
    return () => clearInterval(timer);
  }

  close(): void {
    this.socket.destroy();
  }
}

describe("serve limits: defaults and settings", () => {
  it("serves with a 1024 cap, headers 10 s, request 30 s and keep-alive 65 s, over HTTP and HTTPS", async () => {
    expect(DEFAULT_MAX_CONNECTIONS).toBe(1024);
    expect(DEFAULT_TIMEOUTS).toEqual({
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 65_000,
      checkIntervalMs: 1_000,
      shutdownGraceMs: 10_000,
    });
    const ctx = await inProcessApp();
    const tls = await makeCertificate(await tempDir());
    for (const options of [{}, { tls: { keyFile: tls.keyFile, certFile: tls.certFile } }]) {
      const running = await startServer(ctx.runtime, { host: "127.0.0.1", port: 0, ...options });
      try {
        expect(running.server.maxConnections).toBe(1024);
        expect(running.server.headersTimeout).toBe(10_000);
        expect(running.server.requestTimeout).toBe(30_000);
        expect(running.server.keepAliveTimeout).toBe(65_000);
      } finally {
        await running.close();
      }
    }
  });

  it("reads LLM_SECRETS_MAX_CONNECTIONS into settings.server.maxConnections (default 1024), refusing non-positive values", () => {
    const load = (env: Record<string, string>) =>
      loadSettings({ env: { LITELLM_MASTER_KEY: newKey(), ...env }, stores: LOCAL_STORES });
    expect(load({}).server.maxConnections).toBe(1024);
    expect(load({ LLM_SECRETS_MAX_CONNECTIONS: "3" }).server.maxConnections).toBe(3);
    for (const bad of ["0", "-1", "1.5", "lots"]) {
      expect(() => load({ LLM_SECRETS_MAX_CONNECTIONS: bad }), bad).toThrow(ConfigError);
      expect(() => load({ LLM_SECRETS_MAX_CONNECTIONS: bad }), bad).toThrow(/LLM_SECRETS_MAX_CONNECTIONS/);
    }
  });
});

/** An app served over a real socket for the block, with raw clients that are closed after it. */
function servedWithRawClients(options: { maxConnections?: number; timeouts?: Partial<ServerTimeouts> }) {
  let ctx: Awaited<ReturnType<typeof inProcessApp>> | undefined;
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  const clients: RawClient[] = [];
  beforeAll(async () => {
    ctx = await inProcessApp();
    server = await startServer(ctx.runtime, { host: "127.0.0.1", port: 0, ...options });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await server?.close();
  });
  return {
    get ctx() {
      if (!ctx) throw new Error("not started");
      return ctx;
    },
    get server() {
      if (!server) throw new Error("not started");
      return server;
    },
    open(halfOpen = false): RawClient {
      const c = new RawClient(this.server.url, halfOpen);
      clients.push(c);
      return c;
    },
  };
}

describe("serve limits: a connection cap", () => {
  const t = servedWithRawClients({ maxConnections: 3 });

  const openConnections = () =>
    new Promise<number>((resolve, reject) =>
      t.server.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
    );

  it("closes a 4th connection at once while 3 idle keep-alive ones keep working, and accepts one again when a slot frees", async () => {
    const served = [t.open(), t.open(), t.open()];
    for (const c of served) expect(await c.health()).toBe("200");
    await until("3 open connections", async () => (await openConnections()) === 3);

    const refused = t.open();
    await until("the 4th connection to be closed", () => refused.closed);
    expect(refused.received).toBe("");

    // The three served ones, idle meanwhile, still answer on the same connections.
    for (const c of served) expect(await c.health()).toBe("200");
    expect(served.every((c) => !c.closed)).toBe(true);

    (served[0] as RawClient).close();
    await until("the server to see a slot free", async () => (await openConnections()) < 3);
    const next = t.open();
    expect(await next.health()).toBe("200");
    expect(next.closed).toBe(false);
    for (const c of served.slice(1)) expect(await c.health()).toBe("200");
  });

  it("takes the cap from settings.server as the CLI passes it", async () => {
    const capped = await inProcessApp({ env: { LLM_SECRETS_MAX_CONNECTIONS: "7" } });
    const running = await startServer(capped.runtime, { ...capped.settings.server, port: 0 });
    try {
      expect(running.server.maxConnections).toBe(7);
    } finally {
      await running.close();
    }
  });
});

describe("serve limits: the headers timeout", () => {
  // The request timeout is far past `until`'s 10 s: a cut seen here is the headers timeout's.
  const t = servedWithRawClients({
    timeouts: { headersTimeoutMs: 300, requestTimeoutMs: 60_000, checkIntervalMs: 50 },
  });

  it("cuts a client that trickles its headers, once the headers timeout passes", async () => {
    const c = t.open();
    c.write("GET /health HTTP/1.1\r\nHost: localhost\r\n");
    // One more header line every 50 ms: the headers never end on their own.
    const stop = c.trickle("X-Slow: a\r\n", 50);
    try {
      await until("the trickling client to be cut", () => c.closed);
    } finally {
      stop();
    }
    expect(c.statuses()).toEqual(["408"]);
    expect(c.received).toContain('{"error":{"code":"request_timeout"');
    expect(c.received).not.toContain('"status":"ok"');
  });

  it("cuts a client that never sends a byte, once the headers timeout passes", async () => {
    const c = t.open();
    await until("the silent client to be cut", () => c.closed);
    expect(c.statuses().every((s) => s === "408")).toBe(true);
  });

  it("frees the connection of a silent client that never closes its side, once answered 408", async () => {
    const connections = () =>
      new Promise<number>((resolve, reject) =>
        t.server.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
      );
    const c = t.open(true);
    await until("the 408", () => c.statuses().length > 0);
    expect(c.statuses()).toEqual(["408"]);
    // A half-closed socket held its slot (maxConnections) until the peer closed, which it never does.
    await until("the server to let go of the connection", async () => (await connections()) === 0);
    c.close();
  });
});

describe("serve limits: the request timeout", () => {
  const timeouts = { headersTimeoutMs: 300, requestTimeoutMs: 1_000, checkIntervalMs: 50 };
  const t = servedWithRawClients({ timeouts });

  it("cuts a client that trickles a body longer than the request timeout (408 or closed), and stores nothing", async () => {
    const c = t.open();
    // 1000 bytes at one per 50 ms would take 50 s.
    c.write(
      `PUT /v1/secrets/SLOW HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${t.ctx.masterKey}\r\n` +
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" +
        '{"value":"',
    );
    const stop = c.trickle("a", 50);
    try {
      await until("the trickling body to be cut", () => c.closed);
    } finally {
      stop();
    }
    expect(c.statuses().every((s) => s === "408")).toBe(true);
    expect((await t.ctx.request("/v1/secrets/SLOW")).status).toBe(404);
  });

  it("still serves normal requests, and a keep-alive connection idle longer than the headers timeout", async () => {
    const put = await fetch(`${t.server.url}/v1/secrets/QUICK`, {
      method: "PUT",
      headers: { authorization: `Bearer ${t.ctx.masterKey}` },
      body: JSON.stringify({ value: "v" }),
    });
    expect(put.status).toBe(201);
    const get = await fetch(`${t.server.url}/v1/secrets/QUICK`, {
      headers: { authorization: `Bearer ${t.ctx.masterKey}` },
    });
    expect(get.status).toBe(200);

    const c = t.open();
    expect(await c.health()).toBe("200");
    // Idle between requests for twice the headers timeout: the keep-alive timeout governs that, not headers.
    await new Promise((r) => setTimeout(r, 2 * timeouts.headersTimeoutMs));
    expect(c.closed).toBe(false);
    expect(await c.health()).toBe("200");
  });
});

describe("requests node refuses before the app", () => {
  it("answers oversized headers 431 and malformed HTTP 400, in the API's JSON error format", async () => {
    const ctx = await inProcessApp();
    const server = await startServer(ctx.runtime, { host: "127.0.0.1", port: 0 });
    const port = Number(new URL(server.url).port);
    const send = (raw: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(port, "127.0.0.1");
        let out = "";
        socket.on("data", (d) => {
          out += d;
        });
        socket.on("error", reject);
        socket.on("close", () => resolve(out));
        socket.write(raw);
      });
    try {
      const long = await send(`GET /v1/secrets/${"a".repeat(100_000)} HTTP/1.1\r\nhost: x\r\n\r\n`);
      expect(long.split("\r\n")[0]).toBe("HTTP/1.1 431 Request Header Fields Too Large");
      expect(JSON.parse(long.slice(long.indexOf("\r\n\r\n") + 4))).toEqual({
        error: { code: "headers_too_large", message: "the request line and headers are larger than 16 KiB" },
      });
      const malformed = await send("GARBAGE\r\n\r\n");
      expect(malformed.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
      expect(JSON.parse(malformed.slice(malformed.indexOf("\r\n\r\n") + 4)).error.code).toBe("invalid_request");

      // Both are logged like the app's requests, the path clipped, no header: a key sent along stays out.
      const lines = requestLines(ctx.logs);
      const refusedLong = lines.find((l) => l.status === 431);
      expect(refusedLong).toMatchObject({ method: "GET", code: "headers_too_large", reason: "HPE_HEADER_OVERFLOW" });
      expect(refusedLong?.path).toBe(`/v1/secrets/${"a".repeat(188)}…`);
      expect(lines.find((l) => l.status === 400)).toMatchObject({ code: "invalid_request", refused_by: "http parser" });
      await send(`GET /x HTTP/1.1\r\nauthorization: Bearer ${ctx.masterKey}\r\nx-big: ${"b".repeat(20_000)}\r\n\r\n`);
      await until("the third refusal to be logged", () => requestLines(ctx.logs).length === 3);
      expectNoValueIn(ctx.logs, [ctx.masterKey]);
    } finally {
      await server.close();
    }
  });

  it("a body refused before it arrived (413 on its length) whose client then stops sending gets one answer, one line", async () => {
    // Before: the client's end in the middle of the declared body was taken for a second, malformed
    // request: a 400 written after the 413, and an access-log line with no method or path.
    const ctx = await inProcessApp();
    const server = await startServer(ctx.runtime, { host: "127.0.0.1", port: 0 });
    try {
      const client = new RawClient(server.url, true);
      client.write(
        `PUT /v1/secrets/BIG HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${ctx.masterKey}\r\n` +
          "content-type: application/json\r\ncontent-length: 2000000\r\n\r\n",
      );
      await until("the 413", () => client.statuses().length === 1);
      client.socket.end(); // as curl does, having its answer: no body follows
      await until("the connection to close", () => client.closed);
      expect(client.statuses()).toEqual(["413"]);
      await new Promise((r) => setTimeout(r, 50)); // a line logged after the close would be here by now
      expect(requestLines(ctx.logs).map((l) => l.status)).toEqual([413]);
    } finally {
      await server.close();
    }
  });

  it("logs a request that took too long to arrive (408)", async () => {
    const ctx = await inProcessApp();
    const server = await startServer(ctx.runtime, {
      host: "127.0.0.1",
      port: 0,
      timeouts: { headersTimeoutMs: 200, checkIntervalMs: 50 },
    });
    try {
      const c = new RawClient(server.url);
      c.write("GET /health HTTP/1.1\r\n");
      await until("the slow client to be cut", () => c.closed);
      expect(requestLines(ctx.logs)).toEqual([
        expect.objectContaining({ status: 408, code: "request_timeout", reason: "ERR_HTTP_REQUEST_TIMEOUT" }),
      ]);
    } finally {
      await server.close();
    }
  });
});

describe("a client that hangs up mid-request", () => {
  const t = servedWithRawClients({});

  it("is logged as client_closed (499), not as an error, and its half-sent value is not stored", async () => {
    const c = t.open();
    c.write(
      `PUT /v1/secrets/HALF HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${t.ctx.masterKey}\r\n` +
        `Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"value":"abc`,
    );
    // The request is in the app (its body is being read) before the client leaves.
    await new Promise((r) => setTimeout(r, 100));
    c.close();
    await until("the request line", () => requestLines(t.ctx.logs).some((l) => l.path === "/v1/secrets/HALF"));
    const lines = t.ctx.logs.map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.path === "/v1/secrets/HALF")).toEqual([
      expect.objectContaining({ level: "info", msg: "request", method: "PUT", status: 499, code: "client_closed" }),
    ]);
    expect(lines.filter((l) => l.level === "error" || l.level === "warn")).toEqual([]);
    expect((await t.ctx.request("/v1/secrets/HALF")).status).toBe(404);
    const metrics = await (await t.ctx.request("/metrics")).text();
    expect(metrics).not.toMatch(/llm_secrets_errors_total\{[^}]*code="(internal|invalid_request)"/);
  });

  it("logs the path as it arrived, before any decoding", async () => {
    const c = t.open();
    c.write(
      `GET /v1/secrets/a%2Fb%41?refresh=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.ctx.masterKey}\r\n\r\n`,
    );
    await until("the request line", () => requestLines(t.ctx.logs).some((l) => l.path === "/v1/secrets/a%2Fb%41"));
  });
});

/** The parsed `request` log lines among `logs`. */
function requestLines(logs: string[]): Record<string, unknown>[] {
  return logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "request");
}

describe("serve's request timeout in the access log and the audit trail", () => {
  /** Sends `bytes` to a server with short timeouts and answers what came back once it closed the connection. */
  async function cutOff(bytes: (masterKey: string) => string) {
    const ctx = await inProcessApp();
    const server = await startServer(ctx.runtime, {
      host: "127.0.0.1",
      port: 0,
      timeouts: { requestTimeoutMs: 300, headersTimeoutMs: 250, checkIntervalMs: 50 },
    });
    try {
      const u = new URL(server.url);
      const socket = connect({ port: Number(u.port), host: u.hostname });
      let got = "";
      socket.setEncoding("latin1");
      socket.on("data", (d: string) => {
        got += d;
      });
      socket.on("error", () => {});
      const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
      socket.write(bytes(ctx.masterKey));
      await closed;
      return { ctx, statusLine: got.split("\r\n")[0] };
    } finally {
      await server.close();
    }
  }

  it("a body slower than serve's request timeout: one access-log line (408, request_timeout, the audit's request_id), audited request_timeout", async () => {
    const { ctx, statusLine } = await cutOff(
      (key) =>
        `PUT /v1/secrets/A HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Length: 100\r\n\r\n{"val`,
    );
    expect(statusLine).toBe("HTTP/1.1 408 Request Timeout");
    await until("the audit line", () => ctx.audits.length >= 1);
    await new Promise((r) => setTimeout(r, 100));
    const audits = ctx.audits.map((l) => JSON.parse(l));
    expect(audits).toMatchObject([{ audit: "write", name: "A", outcome: "request_timeout" }]);
    const requests = requestLines(ctx.logs);
    expect(requests).toMatchObject([
      { method: "PUT", path: "/v1/secrets/A", status: 408, code: "request_timeout", request_id: audits[0].request_id },
    ]);
    expect(requests).toHaveLength(1);
  });

  it("headers slower than the timeout (no request in the app yet): server.ts's own 408 line, as before", async () => {
    const { ctx, statusLine } = await cutOff(() => "GET /v1/secrets/A HTTP/1.1\r\nHost: x\r\n");
    expect(statusLine).toBe("HTTP/1.1 408 Request Timeout");
    expect(requestLines(ctx.logs)).toMatchObject([{ status: 408, refused_by: "http parser" }]);
    expect(ctx.audits).toEqual([]);
  });
});
