// The app over real sockets: raw paths, streamed bodies, TLS, and what the server prints.
import { existsSync } from "node:fs";
import { chmod, chown, cp, mkdir, writeFile } from "node:fs/promises";
import { Agent, request as httpRequest, type ServerResponse } from "node:http";
import { request as httpsRequest } from "node:https";
import { connect as connectTcp } from "node:net";
import { basename, dirname, join } from "node:path";
import { Writable } from "node:stream";
import nodeTls, { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOCAL_STORES } from "../../core/src/cli";
import type { KeyRing } from "../../core/src/crypto";
import { bufferedWriter, createLogger, type Logger, silentLogger } from "../../core/src/log";
import { createRuntime } from "../../core/src/runtime";
import { type RunningServer, startServer } from "../../core/src/server";
import { FileStore } from "../../core/src/stores/file";
import {
  cleanEnv,
  cliPath,
  expectNoValueIn,
  inProcessApp,
  makeCertificate,
  newKey,
  runCli,
  ServerProcess,
  secretValue,
  tempDir,
  until,
} from "../helpers";

function raw(
  url: string,
  options: { method: string; path: string; token?: string; body?: string | Buffer; chunked?: boolean },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        method: options.method,
        path: options.path,
        headers: {
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          ...(options.chunked ? { "transfer-encoding": "chunked" } : {}),
        },
      },
      (res) => {
        let body = "";
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    if (options.chunked && options.body) {
      const data = Buffer.from(options.body);
      for (let i = 0; i < data.length; i += 64 * 1024) req.write(data.subarray(i, i + 64 * 1024));
      req.end();
    } else req.end(options.body);
  });
}

describe("stopping", () => {
  it("on SIGTERM, a request under way finishes, its answer closes the keep-alive connection, and the server exits", async () => {
    const dir = await tempDir();
    const masterKey = newKey();
    const server = await ServerProcess.start({
      env: cleanEnv({ LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: join(dir, "data") }),
      args: ["--port", "0"],
    });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const u = new URL(server.url);
    const exited = new Promise<number | null>((resolve) => server.child.once("exit", (code) => resolve(code)));
    // A PUT whose body is still coming when the signal arrives.
    const answer = new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
      const req = httpRequest(
        {
          host: u.hostname,
          port: u.port,
          method: "PUT",
          path: "/v1/secrets/SLOW",
          agent,
          headers: { authorization: `Bearer ${masterKey}`, "content-type": "application/json" },
        },
        (res) => {
          res.resume();
          res.on("end", () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
        },
      );
      req.on("error", reject);
      req.write('{"value":"');
      // The signal once the request is in (its head and the body's start are sent); the body ends
      // only once the server says it is stopping, so the signal surely came while it was coming.
      setTimeout(() => {
        process.kill(server.child.pid as number, "SIGTERM");
        server.waitFor(/stopping: requests under way may finish/).then(() => req.end('slow-value"}'), reject);
      }, 200);
    });
    // Its answer had not begun when the stop did: it says the connection closes (a client that
    // reused the connection instead would meet a reset). The server then exits, not after the
    // 65 s a keep-alive connection may idle: the test's own timeout is far below that.
    expect(await answer).toEqual({ status: 201, connection: "close" });
    expect(await exited).toBe(0);
    agent.destroy();
  }, 20_000);

  it("over HTTPS, a connection that never finishes its TLS handshake does not hold the stop past its grace", async () => {
    const ctx = await inProcessApp();
    const tls = await makeCertificate(await tempDir());
    const server = await startServer(ctx.runtime, {
      host: "127.0.0.1",
      port: 0,
      tls: { keyFile: tls.keyFile, certFile: tls.certFile },
      timeouts: { shutdownGraceMs: 300 },
    });
    const { port } = new URL(server.url);
    const { connect: tcp } = await import("node:net");
    const silent = tcp(Number(port), "127.0.0.1"); // TCP only: node's TLS waits 120 s for its hello
    await new Promise<void>((resolve) => silent.once("connect", () => resolve()));
    const started = Date.now();
    await server.close();
    // Its grace (300 ms) and not node's 120 s wait for a hello: far below either way, even loaded.
    expect(Date.now() - started).toBeLessThan(30_000);
    silent.destroy();
  });

  it("SIGHUP without TLS is logged and ignored (its default would end the process)", async () => {
    const dir = await tempDir();
    const server = await ServerProcess.start({
      env: cleanEnv({ LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_DATA_DIR: join(dir, "data") }),
      args: ["--port", "0"],
    });
    try {
      process.kill(server.child.pid as number, "SIGHUP");
      await server.waitFor(/nothing to reload/);
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it("keeps serving when the reader of its stdout goes away (EPIPE), saying once on stderr that its lines are dropped", async () => {
    const dir = await tempDir();
    const key = newKey();
    const server = await ServerProcess.start({
      env: cleanEnv({ LITELLM_MASTER_KEY: key, LLM_SECRETS_DATA_DIR: join(dir, "data") }),
      // Options before the command, as the CLI takes them: still `serve`.
      command: { file: process.execPath, args: [cliPath(), "--port", "0", "serve"] },
    });
    try {
      server.child.stdout?.destroy(); // a log shipper restarting, `serve | head -1`
      const headers = { authorization: `Bearer ${key}` };
      for (let i = 0; i < 5; i++) {
        // Each read writes an audit line to stdout: the first write after the close fails.
        expect((await fetch(`${server.url}/v1/secrets/NONE_${i}`, { headers })).status).toBe(404);
        await new Promise((r) => setTimeout(r, 20));
      }
      await server.waitFor(/cannot write to stdout/);
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
      expect(server.output.match(/cannot write to stdout/g)).toHaveLength(1);
      expect(server.child.exitCode).toBeNull();
    } finally {
      expect(await server.stop()).toBe(0); // a routine stop, still a clean one
    }
  });
});

describe("over a real socket", () => {
  let ctx: Awaited<ReturnType<typeof inProcessApp>>;
  let server: Awaited<ReturnType<typeof startServer>>;

  beforeAll(async () => {
    ctx = await inProcessApp();
    server = await startServer(ctx.runtime, { host: "127.0.0.1", port: 0 });
  });
  afterAll(async () => {
    await server.close();
  });

  it("refuses PUT /v1/secrets/a/../b instead of writing b", async () => {
    for (const path of ["/v1/secrets/a/../b", "/v1/secrets/a/%2e%2e/b", "/v1/secrets/./b"]) {
      const res = await raw(server.url, { method: "PUT", path, token: ctx.masterKey, body: '{"value":"x"}' });
      expect(res.status, path).toBe(400);
      expect(JSON.parse(res.body).error.code).toBe("invalid_name");
    }
    expect((await raw(server.url, { method: "GET", path: "/v1/secrets/b", token: ctx.masterKey })).status).toBe(404);
    const ok = await raw(server.url, {
      method: "PUT",
      path: "/v1/secrets/b",
      token: ctx.masterKey,
      body: '{"value":"x"}',
    });
    expect(ok.status).toBe(201);
  });

  it("takes a target in absolute form (RFC 9112 3.2.2) as its path, refusing its dot segments as in origin form", async () => {
    const origin = new URL(server.url).origin;
    const value = secretValue("absolute");
    const put = await raw(server.url, {
      method: "PUT",
      path: `${origin}/v1/secrets/abs`,
      token: ctx.masterKey,
      body: JSON.stringify({ value }),
    });
    expect(put.status).toBe(201);
    const read = await raw(server.url, { method: "GET", path: `${origin}/v1/secrets/abs`, token: ctx.masterKey });
    expect(read.status).toBe(200);
    expect(JSON.parse(read.body)).toMatchObject({ name: "abs", value });
    expect(
      JSON.parse((await raw(server.url, { method: "GET", path: origin, token: ctx.masterKey })).body),
    ).toMatchObject({
      error: { code: "not_found" },
    });
    const dotted = await raw(server.url, {
      method: "PUT",
      path: `${origin}/v1/secrets/abs/../abs-b`,
      token: ctx.masterKey,
      body: '{"value":"x"}',
    });
    expect(JSON.parse(dotted.body).error.code).toBe("invalid_name");
    expect((await raw(server.url, { method: "GET", path: "/v1/secrets/abs-b", token: ctx.masterKey })).status).toBe(
      404,
    );
  });

  it("answers a request no URL can be made of in the API's shape, with its log line; HTTP/1.0 without Host is served", async () => {
    const { createConnection } = await import("node:net");
    const exchange = (request: string) =>
      new Promise<string>((resolve, reject) => {
        const u = new URL(server.url);
        const socket = createConnection({ host: u.hostname, port: Number(u.port) }, () => socket.end(request));
        let got = "";
        socket.on("data", (d) => {
          got += d;
        });
        socket.on("end", () => resolve(got));
        socket.on("error", reject);
      });
    const errorsCounted = async (code: string) => {
      const text = await (await ctx.request("/metrics")).text();
      return Number(
        new RegExp(`llm_secrets_errors_total\\{store="file",code="${code}"\\} (\\d+)`).exec(text)?.[1] ?? 0,
      );
    };
    const health = await exchange("GET /health HTTP/1.0\r\n\r\n");
    expect(health).toMatch(/^HTTP\/1\.1 200 /);
    for (const [request, status, code] of [
      ["GET /v1/secrets/T1 HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n", 400, "invalid_request"],
      ["GET /v1\\secrets\\T1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 400, "invalid_request"],
      // What node answered itself: a bare 417, and a socket closed without a word.
      [
        "GET /health HTTP/1.1\r\nHost: localhost\r\nExpect: 200-ok\r\nConnection: close\r\n\r\n",
        417,
        "invalid_request",
      ],
      ["CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501, "not_supported"],
    ] as const) {
      const counted = await errorsCounted(code);
      const logged = ctx.logs.length;
      const answer = await exchange(request);
      expect(answer, request).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(answer).toMatch(/cache-control: no-store/i);
      expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error.code).toBe(code);
      expect(ctx.logs.slice(logged).map((l) => JSON.parse(l))).toEqual([
        expect.objectContaining({ msg: "request", status, code }),
      ]);
      // Counted as the app's errors are (node's own answers were not: 417, 501, the parser's).
      expect(await errorsCounted(code), request).toBe(counted + 1);
    }
  });

  it("a failure of the app itself is a logged 500 internal, not a client's 400", async () => {
    const { createLogger } = await import("../../core/src/log");
    const logs: string[] = [];
    const { runtime } = await inProcessApp();
    const failing = await startServer(
      {
        ...runtime,
        log: createLogger((l) => logs.push(l)),
        fetch: () => Promise.reject(new Error("a bug of ours")),
      },
      { host: "127.0.0.1", port: 0 },
    );
    try {
      const res = await raw(failing.url, { method: "GET", path: "/health" });
      expect(res.status).toBe(500);
      expect(JSON.parse(res.body).error.code).toBe("internal");
      expect(logs.map((l) => JSON.parse(l))).toEqual([
        expect.objectContaining({ level: "error", msg: "unexpected error" }),
      ]);
    } finally {
      await failing.close();
    }
  });

  it("a body the client stops sending is client_closed in the audit and the request line, not a body that is not UTF-8", async () => {
    const { createConnection } = await import("node:net");
    const u = new URL(server.url);
    const [audited, logged] = [ctx.audits.length, ctx.logs.length];
    const socket = createConnection({ host: u.hostname, port: Number(u.port) });
    await new Promise((r) => socket.once("connect", r));
    socket.write(
      `PUT /v1/secrets/HALF_SENT HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${ctx.masterKey}\r\nContent-Length: 30\r\n\r\n{"value":"abc`,
    );
    await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    await until("the audit line", () => ctx.audits.length > audited);
    expect(JSON.parse(ctx.audits[audited] as string)).toMatchObject({
      audit: "write",
      name: "HALF_SENT",
      outcome: "client_closed",
    });
    await until("the request line", () => ctx.logs.slice(logged).some((l) => l.includes("HALF_SENT")));
    const line = ctx.logs.slice(logged).find((l) => l.includes("HALF_SENT")) as string;
    expect(JSON.parse(line)).toMatchObject({ method: "PUT", status: 499, code: "client_closed" });
    expect(ctx.logs.slice(logged).join("\n")).not.toContain("unexpected error");
    expect((await raw(server.url, { method: "GET", path: "/v1/secrets/HALF_SENT", token: ctx.masterKey })).status).toBe(
      404,
    );
  });

  it("takes a streamed body of exactly 1 MiB, and answers 413 to one byte more, storing nothing", async () => {
    const MiB = 1024 * 1024;
    const exactly = JSON.stringify({ value: "y".repeat(MiB - '{"value":""}'.length) });
    expect(exactly.length).toBe(MiB);
    const fits = await raw(server.url, {
      method: "PUT",
      path: "/v1/secrets/STREAMED_FITS",
      token: ctx.masterKey,
      body: exactly,
      chunked: true,
    });
    expect(fits.status, fits.body).toBe(201);
    const body = `${exactly} `; // valid JSON still: only its size is refused
    const res = await raw(server.url, {
      method: "PUT",
      path: "/v1/secrets/STREAMED",
      token: ctx.masterKey,
      body,
      chunked: true,
    });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body).error.code).toBe("payload_too_large");
    expect((await raw(server.url, { method: "GET", path: "/v1/secrets/STREAMED", token: ctx.masterKey })).status).toBe(
      404,
    );
  });

  it("lands 200 concurrent PUTs of distinct names", async () => {
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        fetch(`${server.url}/v1/secrets/C${i}`, {
          method: "PUT",
          headers: { authorization: `Bearer ${ctx.masterKey}` },
          body: JSON.stringify({ value: `v${i}` }),
        }),
      ),
    );
    expect(answers.map((r) => r.status)).toEqual(answers.map(() => 201));
    const reopened = await FileStore.open({ dataDir: ctx.dataDir, keys: ctx.settings.keys as KeyRing });
    const names = await reopened.names();
    for (let i = 0; i < 200; i++) expect(names).toContain(`C${i}`);
    expect((await reopened.get("C199"))?.value).toBe("v199");
  });

  it("reads the headers node parsed: a repeated Authorization keeps its first value; x-litellm-api-key; x-request-id", async () => {
    await raw(server.url, { method: "PUT", path: "/v1/secrets/H", token: ctx.masterKey, body: '{"value":"h"}' });
    const get = (headers: Record<string, string | string[]>) =>
      new Promise<number>((resolve, reject) => {
        const u = new URL(server.url);
        httpRequest({ host: u.hostname, port: u.port, path: "/v1/secrets/H", headers }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
          .on("error", reject)
          .end();
      });
    const right = `Bearer ${ctx.masterKey}`;
    expect(await get({ authorization: [right, "Bearer wrong"] })).toBe(200);
    expect(await get({ authorization: ["Bearer wrong", right] })).toBe(401);
    expect(await get({ authorization: "Bearer wrong", "x-litellm-api-key": ctx.masterKey })).toBe(200);
    expect(await get({ authorization: right, "x-litellm-api-key": "wrong" })).toBe(401);
    ctx.audits.length = 0;
    expect(await get({ authorization: right, "x-request-id": "rid-7" })).toBe(200);
    expect(await get({ authorization: right, "x-request-id": ["rid-8", "rid-9"] })).toBe(200); // joined: not a plain token
    const lines = ctx.audits.map((l) => JSON.parse(l) as { request_id: string; client_request_id?: string });
    // The caller's id beside ours (request_id is always ours); a repeated header is no plain token.
    expect(lines.map((l) => l.client_request_id)).toEqual(["rid-7", undefined]);
    for (const line of lines) {
      expect(line.request_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
  });

  it("accepts a body of just under 1 MiB", async () => {
    const value = "z".repeat(1024 * 1024 - 64);
    const res = await raw(server.url, {
      method: "PUT",
      path: "/v1/secrets/LARGE",
      token: ctx.masterKey,
      body: JSON.stringify({ value }),
    });
    expect(res.status).toBe(201);
  });
});

describe("TLS", () => {
  let dir: string;
  let tls: Awaited<ReturnType<typeof makeCertificate>>;
  let server: Awaited<ReturnType<typeof startServer>>;

  beforeAll(async () => {
    dir = await tempDir();
    tls = await makeCertificate(dir);
    const ctx = await inProcessApp();
    server = await startServer(ctx.runtime, {
      host: "127.0.0.1",
      port: 0,
      tls: { keyFile: tls.keyFile, certFile: tls.certFile },
    });
  });
  afterAll(async () => {
    await server.close();
  });

  function handshake(
    options: { minVersion: "TLSv1" | "TLSv1.2"; maxVersion: "TLSv1.1" | "TLSv1.2" | "TLSv1.3" },
    url = server.url,
  ) {
    const port = Number(new URL(url).port);
    return new Promise<string>((resolve, reject) => {
      const socket = connect({
        host: "127.0.0.1",
        port,
        ca: tls.cert,
        servername: "localhost",
        ciphers: "DEFAULT@SECLEVEL=0",
        ...options,
      });
      socket.once("secureConnect", () => {
        const version = socket.getProtocol() ?? "";
        socket.end();
        resolve(version);
      });
      socket.once("error", reject);
    });
  }

  it("serves HTTPS with a certificate made at test time", async () => {
    expect(server.url).toMatch(/^https:/);
    const body = await new Promise<string>((resolve, reject) => {
      httpsRequest(`${server.url}/health`, { ca: tls.cert }, (res) => {
        let text = "";
        res.on("data", (d) => {
          text += d;
        });
        res.on("end", () => resolve(text));
      })
        .on("error", reject)
        .end();
    });
    expect(JSON.parse(body)).toMatchObject({ status: "ok" });
  });

  it("speaks TLS 1.2 and 1.3 and refuses anything older", async () => {
    expect(await handshake({ minVersion: "TLSv1.2", maxVersion: "TLSv1.2" })).toBe("TLSv1.2");
    expect(await handshake({ minVersion: "TLSv1.2", maxVersion: "TLSv1.3" })).toBe("TLSv1.3");
    // The client offers TLS 1.0-1.1 only; the alert comes from the server refusing them.
    await expect(handshake({ minVersion: "TLSv1", maxVersion: "TLSv1.1" })).rejects.toThrow(/alert protocol version/i);
  });

  it("still refuses TLS 1.0 and 1.1 after a certificate reload, whatever node's own defaults allow", async () => {
    // node's defaults lowered (as --tls-min-v1.0 and a weak cipher list would), so that only the
    // server's own minimum refuses old versions, before the reload and after it.
    const saved = { min: nodeTls.DEFAULT_MIN_VERSION, ciphers: nodeTls.DEFAULT_CIPHERS };
    nodeTls.DEFAULT_MIN_VERSION = "TLSv1";
    nodeTls.DEFAULT_CIPHERS = "DEFAULT:@SECLEVEL=0";
    const ctx = await inProcessApp();
    const lowered = await startServer(ctx.runtime, {
      host: "127.0.0.1",
      port: 0,
      tls: { keyFile: tls.keyFile, certFile: tls.certFile },
    });
    try {
      const old = { minVersion: "TLSv1", maxVersion: "TLSv1.1" } as const;
      await expect(handshake(old, lowered.url)).rejects.toThrow(/alert protocol version/i);
      await lowered.reloadTls();
      await expect(handshake(old, lowered.url)).rejects.toThrow(/alert protocol version/i);
      expect(await handshake({ minVersion: "TLSv1.2", maxVersion: "TLSv1.3" }, lowered.url)).toBe("TLSv1.3");
    } finally {
      nodeTls.DEFAULT_MIN_VERSION = saved.min;
      nodeTls.DEFAULT_CIPHERS = saved.ciphers;
      await lowered.close();
    }
  });

  it("stops the start when a key or certificate file is missing, unreadable or not PEM", async () => {
    const env = cleanEnv({ LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_DATA_DIR: join(dir, "data") });
    const missing = await runCli(
      ["serve", "--port", "0", "--ssl_keyfile_path", join(dir, "nope.pem"), "--ssl_certfile_path", tls.certFile],
      { env },
    );
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("nope.pem");

    await mkdir(join(dir, "a-directory"));
    const unreadable = await runCli(
      ["serve", "--port", "0", "--ssl_keyfile_path", join(dir, "a-directory"), "--ssl_certfile_path", tls.certFile],
      { env },
    );
    expect(unreadable.code).toBe(1);
    expect(unreadable.stderr).toContain("EISDIR");

    const junkValue = secretValue("junk");
    await writeFile(join(dir, "junk.pem"), `-----BEGIN NOTHING-----\n${junkValue}\n`);
    const junk = await runCli(
      ["serve", "--port", "0", "--ssl_keyfile_path", join(dir, "junk.pem"), "--ssl_certfile_path", tls.certFile],
      { env },
    );
    expect(junk.code).toBe(1);
    expect(junk.stderr).toContain("cannot be used");
    expect(junk.stderr).not.toContain(junkValue);

    const half = await runCli(["serve", "--port", "0", "--ssl_keyfile_path", tls.keyFile], { env });
    // Half of the pair on the command line is a usage error (exit 2); from the environment, a config one.
    expect(half.code).toBe(2);
    expect(half.stderr).toContain("--ssl_keyfile_path and --ssl_certfile_path go together");

    const viaEnv = await runCli(["serve", "--port", "0"], { env: { ...env, SSL_CERTFILE_PATH: tls.certFile } });
    expect(viaEnv.code).toBe(1);
    // Each refusal came before anything was made: no data dir, no store file, no generated key.
    expect(existsSync(join(dir, "data"))).toBe(false);
    const keyless = await runCli(
      ["serve", "--port", "0", "--ssl_keyfile_path", join(dir, "nope.pem"), "--ssl_certfile_path", tls.certFile],
      { env: cleanEnv({ LLM_SECRETS_DATA_DIR: join(dir, "keyless") }) },
    );
    expect(keyless.code).toBe(1);
    expect(keyless.stderr).toContain("nope.pem");
    expect(existsSync(join(dir, "keyless"))).toBe(false);
  });
});

describe("what the server prints", () => {
  it("never holds a value it was given, whatever the requests", async () => {
    const dir = await tempDir();
    const tls = await makeCertificate(dir);
    const masterKey = newKey();
    const salt = newKey("salt-");
    const envValue = secretValue("envonly");
    const server = await ServerProcess.start({
      env: cleanEnv({
        LITELLM_MASTER_KEY: masterKey,
        LITELLM_SALT_KEY: salt,
        LLM_SECRETS_DATA_DIR: join(dir, "data"),
        ENV_ONLY: envValue,
        LLM_SECRETS_CONFIG:
          "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o, api_key: os.environ/ENV_ONLY}\nunknown_key: 1\n",
      }),
      args: ["--port", "0", "--ssl_keyfile_path", tls.keyFile, "--ssl_certfile_path", tls.certFile],
    });
    const values: string[] = [masterKey, salt, envValue];
    const bodies: string[] = [];
    const call = async (method: string, path: string, body?: unknown, token = masterKey) => {
      const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpsRequest(
          `${server.url}${path}`,
          { method, ca: tls.cert, headers: { authorization: `Bearer ${token}` } },
          (r) => {
            let text = "";
            r.on("data", (d) => {
              text += d;
            });
            r.on("end", () => resolve({ status: r.statusCode ?? 0, body: text }));
          },
        );
        req.on("error", reject);
        req.end(body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body));
      });
      if (res.status >= 400) bodies.push(res.body);
      return res;
    };
    try {
      for (let i = 0; i < 5; i++) {
        const v = secretValue(`put${i}`);
        values.push(v);
        expect((await call("PUT", `/v1/secrets/S${i}`, { value: v, description: "d" })).status).toBe(201);
        expect((await call("GET", `/v1/secrets/S${i}`)).body).toContain(v);
        const enc = JSON.parse((await call("POST", "/v1/encrypt", { value: v })).body).ciphertext as string;
        values.push(enc);
        await call("POST", "/v1/decrypt", { ciphertext: `${enc.slice(0, -6)}AAAA==` });
        await call("POST", "/v1/decrypt", { ciphertext: enc.replace(/^./, (c) => (c === "A" ? "B" : "A")) });
      }
      const bad = secretValue("bad");
      values.push(bad);
      await call("PUT", "/v1/secrets/S0", `{"value":"${bad}"`);
      await call("PUT", "/v1/secrets/S0", { value: 7, description: bad });
      await call("PUT", "/v1/secrets/S0", { value: bad, extra: bad });
      await call("PUT", "/v1/secrets/bad%0Aname", { value: bad });
      await call("PUT", "/v1/secrets/S9", { value: bad }, bad);
      await call("POST", "/v1/resolve", {
        config: { a: "os.environ/S1", b: "os.environ/ENV_ONLY", c: "os.environ/MISSING" },
      });
      await call("POST", "/v1/resolve", { config: bad });
      await call("POST", "/v1/decrypt", { ciphertext: bad });
      await call("GET", "/metrics");
      expect(bodies.length).toBeGreaterThan(10);
    } finally {
      await server.stop();
    }
    expect(server.output).toContain("ignoring keys");
    expect(server.output).toContain('"msg":"request"');
    expectNoValueIn([server.output, ...bodies], values);
  });
});

describe("a data dir that becomes unusable", () => {
  // Root passes every permission check: the server then runs as `nobody` (setpriv, util-linux).
  const asRoot = process.getuid?.() === 0;
  const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));

  it.skipIf(asRoot && !setpriv)(
    "answers 500 store_unavailable without its path, logs it once with the path, and recovers",
    async () => {
      const dir = await tempDir();
      const data = join(dir, "data");
      // The CLI and its chunks, where `nobody` can read them.
      await cp(dirname(cliPath()), join(dir, "cli"), { recursive: true });
      await chmod(join(dir, "cli"), 0o755);
      const cli = join(dir, "cli", basename(cliPath()));
      const masterKey = newKey();
      const env = cleanEnv({ LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: data });
      if (asRoot) await chown(dir, 65534, 65534);
      const node = [process.execPath, cli, "serve", "--port", "0"];
      const server = await ServerProcess.start({
        env,
        command: asRoot
          ? { file: setpriv as string, args: ["--reuid=65534", "--regid=65534", "--clear-groups", ...node] }
          : { file: node[0] as string, args: node.slice(1) },
      });
      const put = (name: string) =>
        raw(server.url, { method: "PUT", path: `/v1/secrets/${name}`, token: masterKey, body: '{"value":"v"}' });
      try {
        expect((await put("A")).status).toBe(201);
        await chmod(data, 0o500);
        const refused = [await put("B"), await put("C"), await put("D")];
        for (const r of refused) {
          expect(r.status).toBe(500);
          expect(JSON.parse(r.body).error.code).toBe("store_unavailable");
          expect(r.body).not.toContain(dir);
        }
        const logged = () => server.output.split("\n").filter((l) => l.includes("the data dir cannot be used"));
        await until("the unusable data dir to be logged", () => logged().length > 0);
        expect(logged()).toHaveLength(1);
        expect(JSON.parse(logged()[0] as string)).toMatchObject({ level: "error", dir: data, cause: "EACCES" });
        // Reads keep working; once the dir is writable again, so do writes, without a restart.
        expect((await raw(server.url, { method: "GET", path: "/v1/secrets/A", token: masterKey })).status).toBe(200);
        await chmod(data, 0o700);
        expect((await put("B")).status).toBe(201);
      } finally {
        await chmod(data, 0o700).catch(() => {});
        await server.stop();
      }
    },
  );
});

/**
 * `serve` over the local stores in this process, with the given log and audit writers, for `body`;
 * stopped after it.
 */
async function withLocalServer(
  writers: { log: Logger; audit: (line: string) => void },
  body: (port: number, server: RunningServer) => Promise<void>,
): Promise<void> {
  const runtime = await createRuntime({
    stores: LOCAL_STORES,
    settings: { env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_DATA_DIR: await tempDir() } },
    ...writers,
  });
  const server = await startServer(runtime, { host: "127.0.0.1", port: 0 });
  try {
    await body(Number(new URL(server.url).port), server);
  } finally {
    await server.close();
    await runtime.close();
  }
}

describe("the answers of one event-loop turn", () => {
  it("are all written before that turn's log and audit lines", async () => {
    const answers: ServerResponse[] = [];
    // What each log write (access lines, audit lines) finds: how many of the answers were not yet written.
    const unwrittenAtLogWrite: number[] = [];
    const stream = () =>
      new Writable({
        write(_chunk, _encoding, done) {
          unwrittenAtLogWrite.push(answers.filter((a) => !a.writableEnded).length);
          done();
        },
      });
    const writers = { log: createLogger(bufferedWriter(stream())), audit: bufferedWriter(stream()) };
    await withLocalServer(writers, async (port, server) => {
      const request = "GET /v1/secrets/A HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n";
      const sockets = await Promise.all(
        Array.from({ length: 6 }, async () => {
          const socket = connectTcp(port, "127.0.0.1");
          const seen = { text: "" };
          socket.on("data", (d) => {
            seen.text += d;
          });
          socket.write(request); // a first request each, answered before the six are timed
          await until("a first answer", () => seen.text.includes("HTTP/1.1 401"));
          seen.text = "";
          return { socket, seen };
        }),
      );
      await until("the first requests' log and audit writes", () => unwrittenAtLogWrite.length >= 2);
      unwrittenAtLogWrite.length = 0;
      server.server.on("request", (_incoming, outgoing) => answers.push(outgoing));
      // Six requests on six connections, each refused for its key without a store call. This
      // process is both ends: while it spins, all six arrive, and its next turn reads them all.
      for (const { socket } of sockets) socket.write(request);
      const until20ms = performance.now() + 20;
      while (performance.now() < until20ms);
      await until("six answers", () => sockets.every(({ seen }) => seen.text.includes("HTTP/1.1 401")));
      await until("the log and audit writes", () => unwrittenAtLogWrite.length >= 2);
      expect(answers).toHaveLength(6);
      expect(unwrittenAtLogWrite.every((n) => n === 0)).toBe(true);
      for (const { socket } of sockets) socket.destroy();
    });
  });
});

describe("pipelined requests", () => {
  it("followed by malformed bytes are all answered, then the 400, which closes the connection", async () => {
    await withLocalServer({ log: silentLogger, audit: () => {} }, async (port) => {
      const socket = connectTcp(port, "127.0.0.1");
      let text = "";
      socket.on("data", (d) => {
        text += d;
      });
      const closed = new Promise((resolve) => socket.on("close", resolve));
      const health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
      socket.write(`${health.repeat(3)}BOGUS\r\n\r\n`);
      await closed;
      expect(text.match(/HTTP\/1\.1 \d{3}/g)).toEqual(["HTTP/1.1 200", "HTTP/1.1 200", "HTTP/1.1 200", "HTTP/1.1 400"]);
      expect(text).toContain('"code":"invalid_request"');
    });
  });
});
