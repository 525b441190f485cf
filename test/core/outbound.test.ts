// The one outbound client (outbound.ts) against local HTTPS servers with certificates made now,
// counting TLS handshakes and connections: keep-alive reuse, the connection cap, ssl_verify false,
// a CA bundle instead of the system's roots, and a client certificate presented on request.
import { readFileSync } from "node:fs";
import { copyFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { request } from "undici";
import { afterAll, describe, expect, inject, it } from "vitest";
import { createLogger } from "../../core/src/log";
import { ClientCertificateAgent, closeOutboundAgents, outboundAgent } from "../../core/src/outbound";
import { createRuntime } from "../../core/src/runtime";
import { loadSettings } from "../../core/src/settings";
import { memoryStore } from "../../core/src/stores/memory";
import { makeServerChain } from "../fakes/pki";
import { makeCertificate, tempDir, until } from "../helpers";

interface Counted {
  url: string;
  handshakes: () => number;
  connections: () => number;
  close: () => Promise<void>;
}

async function serve(tls: {
  key: string | Buffer;
  cert: string | Buffer;
  ca?: string | Buffer;
  requestCert?: boolean;
}): Promise<Counted> {
  let handshakes = 0;
  let connections = 0;
  const server: Server = createServer(
    { ...tls, rejectUnauthorized: tls.requestCert === true, keepAliveTimeout: 60_000 },
    (_, res) => res.end("ok"),
  );
  server.on("secureConnection", () => handshakes++);
  server.on("connection", () => connections++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `https://localhost:${(server.address() as AddressInfo).port}/`,
    handshakes: () => handshakes,
    connections: () => connections,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function status(url: string, agent: ReturnType<typeof outboundAgent>): Promise<number> {
  const res = await request(url, { dispatcher: agent });
  await res.body.text();
  return res.statusCode;
}

const pki = inject("testPki");
const servers: Counted[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await closeOutboundAgents();
});

async function testCaServer(options: { requestCert?: boolean } = {}) {
  const server = await serve({
    key: readFileSync(pki.serverKeyFile),
    cert: readFileSync(pki.serverCertFile),
    ...(options.requestCert && { ca: readFileSync(pki.caFile), requestCert: true }),
  });
  servers.push(server);
  return server;
}

describe("the outbound client", () => {
  it("makes 1 handshake for 200 sequential calls, and at most 50 connections for 50 at once", async () => {
    const server = await testCaServer();
    const agent = outboundAgent();
    // Sequential as served requests are: a turn of the event loop between them. (Back to back in
    // one turn, undici may not have freed the connection yet and opens a second: 2 handshakes.)
    for (let i = 0; i < 200; i++) {
      expect(await status(server.url, agent)).toBe(200);
      await new Promise((r) => setImmediate(r));
    }
    expect(server.handshakes()).toBe(1);
    expect(server.connections()).toBe(1);
    const concurrent = await testCaServer();
    const answers = await Promise.all(Array.from({ length: 50 }, () => status(concurrent.url, agent)));
    expect(answers.every((s) => s === 200)).toBe(true);
    expect(concurrent.connections()).toBeLessThanOrEqual(50);
    expect(outboundAgent()).toBe(agent); // one agent per TLS configuration
  });

  it("resumes the TLS session on a new connection after the origin's connections all closed, a garbage collection between", async () => {
    // Each answer closes its connection, so undici drops the origin's pool after each call (as after
    // an idle keep-alive's end), and a collection runs before the next call.
    const reused: boolean[] = [];
    const server = createServer(
      { key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) },
      (req, res) => {
        reused.push((req.socket as TLSSocket).isSessionReused());
        res.writeHead(200, { connection: "close" });
        res.end("ok");
      },
    );
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `https://localhost:${(server.address() as AddressInfo).port}/`;
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const agent = outboundAgent();
    for (let i = 0; i < 3; i++) {
      expect(await status(url, agent)).toBe(200);
      await new Promise((r) => setImmediate(r));
      gc();
    }
    expect(reused).toEqual([false, true, true]);
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it("resumes each origin's own session where two share a host (two ports), taking turns", async () => {
    const reused: Record<string, boolean[]> = { a: [], b: [] };
    const servers = ["a", "b"].map((name) =>
      createServer({ key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) }, (req, res) => {
        (reused[name] as boolean[]).push((req.socket as TLSSocket).isSessionReused());
        res.writeHead(200, { connection: "close" });
        res.end("ok");
      }),
    );
    for (const server of servers) await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const urls = servers.map((server) => `https://localhost:${(server.address() as AddressInfo).port}/`);
    const agent = outboundAgent();
    for (let i = 0; i < 3; i++) {
      for (const url of urls) {
        expect(await status(url, agent)).toBe(200);
        await new Promise((r) => setImmediate(r));
      }
    }
    expect(reused).toEqual({ a: [false, true, true], b: [false, true, true] });
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it("with ssl_verify false reaches a self-signed server, which is refused otherwise", async () => {
    const self = await makeCertificate(await tempDir());
    const server = await serve({ key: readFileSync(self.keyFile), cert: readFileSync(self.certFile) });
    servers.push(server);
    await expect(status(server.url, outboundAgent())).rejects.toThrow();
    expect(await status(server.url, outboundAgent({ verify: false }))).toBe(200);
  });

  it("with a CA bundle trusts that bundle and nothing else", async () => {
    const dir = await tempDir();
    const chain = makeServerChain(dir);
    const chained = await serve({ key: readFileSync(chain.keyFile), cert: readFileSync(chain.certFile) });
    servers.push(chained);
    const usual = await testCaServer(); // trusted by node's roots plus NODE_EXTRA_CA_CERTS
    const bundled = outboundAgent({ caFile: chain.rootFile });
    expect(await status(chained.url, bundled)).toBe(200);
    await expect(status(usual.url, bundled)).rejects.toThrow();
    await expect(status(chained.url, outboundAgent())).rejects.toThrow();
  });

  it("presents the client certificate when configured; a server that requires one refuses calls without it", async () => {
    const server = await testCaServer({ requestCert: true });
    const pem = join(await tempDir(), "client.pem");
    await writeFile(pem, readFileSync(pki.clientCertFile, "utf8") + readFileSync(pki.clientKeyFile, "utf8"));
    await expect(status(server.url, outboundAgent())).rejects.toThrow();
    expect(await status(server.url, outboundAgent({ certificateFile: pem }))).toBe(200);
  });

  it("names a CA bundle it cannot read", () => {
    expect(() => outboundAgent({ caFile: "/nonexistent/ca.pem" })).toThrow(
      /cannot read the CA bundle.*\/nonexistent\/ca\.pem \(ENOENT\)/,
    );
  });
});

describe("a store's own client certificate (ClientCertificateAgent)", () => {
  /**
   * An agent over a pair the test CA did not sign (a server of that CA refuses it); `rotate` writes
   * the CA's client pair over its files. Its log lines kept.
   */
  async function holderOfOtherPair() {
    const dir = await tempDir();
    const files = {
      cert: join(dir, "client.pem"),
      key: join(dir, "client-key.pem"),
      certVariable: "TEST_CLIENT_CERT",
      keyVariable: "TEST_CLIENT_KEY",
    };
    const other = await makeCertificate(await tempDir());
    await copyFile(other.certFile, files.cert);
    await copyFile(other.keyFile, files.key);
    const lines: string[] = [];
    const holder = await ClientCertificateAgent.open(
      {},
      files,
      createLogger((line) => lines.push(line)),
    );
    const rotate = async () => {
      await copyFile(pki.clientCertFile, files.cert);
      await copyFile(pki.clientKeyFile, files.key);
    };
    return { holder, lines, rotate, rewriteSameCert: () => copyFile(other.certFile, files.cert) };
  }

  it("moves to a new agent when its files hold a new pair, closing the one it leaves; unchanged or touched files keep it", async () => {
    const server = await testCaServer({ requestCert: true });
    const { holder, lines, rotate, rewriteSameCert } = await holderOfOtherPair();
    const first = holder.agent;
    await expect(status(server.url, first)).rejects.toThrow();
    await holder.refresh();
    expect(holder.agent).toBe(first); // nothing changed: no read, the same agent
    await rewriteSameCert(); // written again, the same bytes
    await holder.refresh();
    expect(holder.agent).toBe(first);

    await rotate();
    await holder.refresh();
    const second = holder.agent;
    expect(second).not.toBe(first);
    expect(await status(server.url, second)).toBe(200);
    await until("the agent left closed", () => first.closed);
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(["client certificate read again: new connections present it"]);

    await holder.close();
    expect(second.closed).toBe(true);
  });

  it("a refresh after close makes no new agent", async () => {
    const { holder, lines, rotate } = await holderOfOtherPair();
    const first = holder.agent;
    await holder.close();
    await rotate();
    await holder.refresh();
    expect(holder.agent).toBe(first);
    expect(lines).toEqual([]);
  });

  it("concurrent logins share one look at the files: one new agent, one line", async () => {
    const { holder, lines, rotate } = await holderOfOtherPair();
    await rotate();
    const a = holder.refresh();
    const b = holder.refresh();
    expect(b).toBe(a);
    await Promise.all([a, b]);
    expect(lines).toHaveLength(1);
    await holder.close();
  });
});

describe("outbound TLS settings (LiteLLM's names)", () => {
  const load = (env: Record<string, string>, config = "") =>
    loadSettings({
      env: { LITELLM_MASTER_KEY: "sk-outbound-test-key", ...(config && { LLM_SECRETS_CONFIG: config }), ...env },
      stores: [memoryStore],
      cwd: "/work",
    }).outbound;

  it("reads ssl_verify / SSL_VERIFY, SSL_CERT_FILE and ssl_certificate / SSL_CERTIFICATE", () => {
    expect(load({})).toEqual({});
    expect(load({ SSL_VERIFY: "False" })).toEqual({ verify: false });
    expect(load({ SSL_VERIFY: "ca/bundle.pem" })).toEqual({ caFile: "/work/ca/bundle.pem" });
    expect(load({ SSL_CERT_FILE: "/etc/ca.pem" })).toEqual({ caFile: "/etc/ca.pem" });
    // Verification off: no CA bundle is kept, so none is read (a missing one stops nothing).
    expect(load({ SSL_VERIFY: "false", SSL_CERT_FILE: "/nonexistent/ca.pem" })).toEqual({ verify: false });
    expect(load({ SSL_CERTIFICATE: "client.pem" })).toEqual({ certificateFile: "/work/client.pem" });
    // The environment wins over the config, as in LiteLLM (`os.getenv("SSL_VERIFY", litellm.ssl_verify)`).
    expect(load({ SSL_VERIFY: "false" }, "litellm_settings:\n  ssl_verify: /etc/other.pem\n")).toEqual({
      verify: false,
    });
    expect(load({ SSL_VERIFY: "true" }, "litellm_settings:\n  ssl_verify: false\n")).toEqual({});
    expect(
      load({ SSL_CERTIFICATE: "/etc/env.pem" }, "litellm_settings:\n  ssl_certificate: /etc/config.pem\n"),
    ).toEqual({ certificateFile: "/etc/env.pem" });
    expect(load({}, "litellm_settings:\n  ssl_verify: false\n  ssl_certificate: /etc/me.pem\n")).toEqual({
      verify: false,
      certificateFile: "/etc/me.pem",
    });
  });

  it("with verification off, the start logs one warning saying so (a cloud function's too)", async () => {
    const lines: string[] = [];
    const runtime = await createRuntime({
      stores: [memoryStore],
      settings: { env: { LITELLM_MASTER_KEY: "sk-outbound-test-key", SSL_VERIFY: "false" } },
      log: createLogger((line) => lines.push(line)),
      audit: () => {},
    });
    await runtime.close();
    const warnings = lines.map((l) => JSON.parse(l)).filter((l) => l.level === "warn");
    expect(warnings.filter((l) => /certificate verification is off/.test(l.msg))).toHaveLength(1);
  });
});
