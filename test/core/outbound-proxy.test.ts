// The outbound client through a proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY): forwarding through the
// app, and a Vault store, against a loopback proxy made here with node:http (CONNECT tunnels for
// https:// targets, absolute-form requests for http:// ones) that records what it was asked. The
// target's TLS is still checked through a tunnel; NO_PROXY sends targets direct; the proxy's
// credentials reach it as Proxy-Authorization and nowhere else (no log line, no error).

import { readFileSync } from "node:fs";
import { createServer as createHttpServer, request as httpRequest, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { type AddressInfo, connect, type Socket } from "node:net";
import { request } from "undici";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { ConfigError } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import { bypassesProxy, closeOutboundAgents, outboundAgent } from "../../core/src/outbound";
import { classifyBackendError } from "../../core/src/store-errors";
import { openVaultStore } from "../../core/src/stores/vault";
import { FakeVault } from "../fakes/vault";
import { expectNoValueIn, inProcessApp, makeCertificate, newKey, tempDir } from "../helpers";

const pki = inject("testPki");

interface Asked {
  /** `connect`: a CONNECT tunnel to `target` (host:port); `forward`: an absolute-form request for `target`. */
  kind: "connect" | "forward";
  target: string;
  authorization: string | undefined;
}

/** What the proxy was asked, in order. */
const asked: Asked[] = [];
/** The Proxy-Authorization the proxy takes; undefined: any, or none. */
let required: string | undefined;
let proxy: Server;
let proxyPort = 0;
const tunnels = new Set<Socket>();

/** What the upstreams were asked: by which upstream, for which path. */
const reached: string[] = [];
let httpsUpstream: Server;
let httpsPort = 0;
let httpUpstream: Server;
let httpPort = 0;
/** An https:// upstream whose certificate no one trusts (self-signed, made now), and that certificate's file. */
let untrusted: Server;
let untrustedPort = 0;
let untrustedCertFile = "";

function answer(name: string) {
  return (req: { url?: string; resume: () => void; on: (e: "end", f: () => void) => void }, res: ServerAnswer) => {
    req.resume();
    req.on("end", () => {
      reached.push(`${name} ${req.url}`);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ upstream: name }));
    });
  };
}
type ServerAnswer = { writeHead: (s: number, h: Record<string, string>) => void; end: (b: string) => void };

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  proxy = createHttpServer((req, res) => {
    // Absolute form: the request for an http:// target, sent on by the proxy.
    const authorization = req.headers["proxy-authorization"];
    asked.push({ kind: "forward", target: req.url ?? "", authorization });
    if (required !== undefined && authorization !== required) {
      res.writeHead(407, { "proxy-authenticate": 'Basic realm="test"' });
      res.end();
      return;
    }
    const headers = { ...req.headers };
    delete headers["proxy-authorization"];
    const out = httpRequest(req.url ?? "", { method: req.method, headers }, (upstream) => {
      res.writeHead(upstream.statusCode ?? 502, upstream.headers);
      upstream.pipe(res);
    });
    out.on("error", () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(out);
  });
  proxy.on("connect", (req, client: Socket, head: Buffer) => {
    const authorization = req.headers["proxy-authorization"];
    asked.push({ kind: "connect", target: req.url ?? "", authorization });
    client.on("error", () => {});
    if (required !== undefined && authorization !== required) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n\r\n');
      return;
    }
    const [host, port] = (req.url ?? "").split(/:(?=\d+$)/);
    const server = connect(Number(port), host as string, () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      server.write(head);
      server.pipe(client);
      client.pipe(server);
    });
    tunnels.add(client).add(server);
    server.on("error", () => client.end("HTTP/1.1 502 Bad Gateway\r\n\r\n"));
  });
  proxyPort = await listen(proxy);

  const tls = { key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) };
  httpsUpstream = createHttpsServer(tls, answer("https")) as unknown as Server;
  httpsPort = await listen(httpsUpstream);
  httpUpstream = createHttpServer(answer("http"));
  httpPort = await listen(httpUpstream);
  const own = await makeCertificate(await tempDir());
  untrustedCertFile = own.certFile;
  untrusted = createHttpsServer(
    { key: readFileSync(own.keyFile), cert: readFileSync(own.certFile) },
    answer("untrusted"),
  ) as unknown as Server;
  untrustedPort = await listen(untrusted);
});

afterAll(async () => {
  await closeOutboundAgents();
  for (const socket of tunnels) socket.destroy();
  for (const server of [proxy, httpsUpstream, httpUpstream, untrusted]) {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
});

beforeEach(async () => {
  asked.length = 0;
  reached.length = 0;
  required = undefined;
  await closeOutboundAgents(); // each case's proxy settings on connections of their own
});

/** An app with three models (an https://, an http:// and an untrusted https:// upstream), under `env`. */
async function app(env: Record<string, string>) {
  const config = [
    "model_list:",
    `  - model_name: tls`,
    `    litellm_params: {model: openai/x, api_base: "https://localhost:${httpsPort}", api_key: os.environ/OPENAI_API_KEY}`,
    `  - model_name: plain`,
    `    litellm_params: {model: openai/x, api_base: "http://127.0.0.1:${httpPort}", api_key: os.environ/OPENAI_API_KEY}`,
    `  - model_name: untrusted`,
    `    litellm_params: {model: openai/x, api_base: "https://localhost:${untrustedPort}", api_key: os.environ/OPENAI_API_KEY}`,
    "",
  ].join("\n");
  const ctx = await inProcessApp({ config, env });
  await ctx.runtime.manager.put("OPENAI_API_KEY", newKey("sk-upstream-"));
  const call = async (model: string) => {
    const res = await ctx.request(`/v1/forward/${model}/v1/chat/completions`, {
      method: "POST",
      json: { messages: [] },
    });
    return { status: res.status, body: await res.text() };
  };
  return { ...ctx, call };
}

const proxyUrl = () => `http://127.0.0.1:${proxyPort}`;

describe("forwarding through HTTPS_PROXY / HTTP_PROXY", () => {
  it("tunnels an https:// upstream through CONNECT and sends an http:// one in absolute form", async () => {
    const { call, logs } = await app({ HTTPS_PROXY: proxyUrl(), HTTP_PROXY: proxyUrl() });
    expect(await call("tls")).toEqual({ status: 200, body: '{"upstream":"https"}' });
    expect(await call("plain")).toEqual({ status: 200, body: '{"upstream":"http"}' });
    expect(asked).toEqual([
      { kind: "connect", target: `localhost:${httpsPort}`, authorization: undefined },
      { kind: "forward", target: `http://127.0.0.1:${httpPort}/v1/chat/completions`, authorization: undefined },
    ]);
    expect(reached).toEqual(["https /v1/chat/completions", "http /v1/chat/completions"]);
    const started = logs.map((l) => JSON.parse(l)).find((l) => String(l.msg).includes("proxy"));
    expect(started).toMatchObject({
      level: "info",
      https_proxy: `127.0.0.1:${proxyPort}`,
      http_proxy: `127.0.0.1:${proxyPort}`,
    });
  });

  it("still checks the upstream's certificate through the tunnel: untrusted refused, trusted by SSL_VERIFY's bundle", async () => {
    const refused = await app({ HTTPS_PROXY: proxyUrl() });
    expect((await refused.call("untrusted")).status).toBe(502);
    expect(asked.map((a) => a.target)).toEqual([`localhost:${untrustedPort}`]);
    expect(reached).toEqual([]); // the handshake failed: no request reached it
    const bundled = await app({ HTTPS_PROXY: proxyUrl(), SSL_VERIFY: untrustedCertFile });
    expect(await bundled.call("untrusted")).toEqual({ status: 200, body: '{"upstream":"untrusted"}' });
    expect(asked.filter((a) => a.kind === "connect")).toHaveLength(2);
  });

  it("HTTP_PROXY alone leaves https:// targets direct, as httpx does", async () => {
    const { call } = await app({ HTTP_PROXY: proxyUrl() });
    expect((await call("tls")).status).toBe(200);
    expect((await call("plain")).status).toBe(200);
    expect(asked.map((a) => a.kind)).toEqual(["forward"]);
  });

  it("sends NO_PROXY's targets direct: an exact host, a host and port, `*`", async () => {
    const byHost = await app({ HTTPS_PROXY: proxyUrl(), HTTP_PROXY: proxyUrl(), NO_PROXY: "other.example, localhost" });
    expect((await byHost.call("tls")).status).toBe(200);
    expect((await byHost.call("plain")).status).toBe(200);
    expect(asked.map((a) => a.kind)).toEqual(["forward"]); // 127.0.0.1 is not localhost: proxied
    asked.length = 0;
    const byPort = await app({ HTTP_PROXY: proxyUrl(), no_proxy: `127.0.0.1:${httpPort}` });
    expect((await byPort.call("plain")).status).toBe(200);
    const all = await app({ HTTPS_PROXY: proxyUrl(), HTTP_PROXY: proxyUrl(), NO_PROXY: "*" });
    expect((await all.call("tls")).status).toBe(200);
    expect((await all.call("plain")).status).toBe(200);
    expect(asked).toEqual([]);
    expect(reached).toHaveLength(5); // every call reached its upstream
  });

  it("sends the URL's credentials as Proxy-Authorization, and no log line or error holds them", async () => {
    const password = newKey("proxy-pass-");
    const token = `Basic ${Buffer.from(`svc:${password}@x`).toString("base64")}`;
    required = token;
    const withCredentials = (pass: string) => `http://svc:${encodeURIComponent(`${pass}@x`)}@127.0.0.1:${proxyPort}`;
    const good = await app({ HTTPS_PROXY: withCredentials(password), HTTP_PROXY: withCredentials(password) });
    expect((await good.call("tls")).status).toBe(200);
    expect((await good.call("plain")).status).toBe(200);
    expect(asked.map((a) => a.authorization)).toEqual([token, token]);
    // Credentials the proxy refuses (an old password): an upstream failure that does not echo them.
    const old = newKey("proxy-old-");
    const bad = await app({ HTTPS_PROXY: withCredentials(old), HTTP_PROXY: withCredentials(old) });
    const refusedTls = await bad.call("tls");
    const refusedPlain = await bad.call("plain");
    expect(refusedTls.status).toBe(502);
    expect(refusedPlain.status).toBe(502);
    // Said as the proxy's refusal, not as an upstream that cannot be reached.
    for (const refused of [refusedTls, refusedPlain]) {
      expect(JSON.parse(refused.body).error.message).toMatch(
        /^the proxy refused the way to the API of model \w+ \(HTTP 407: check the credentials in HTTPS_PROXY, HTTP_PROXY or ALL_PROXY\)$/,
      );
    }
    expect(reached).toHaveLength(2);
    const outputs = [...good.logs, ...bad.logs, refusedTls.body, refusedPlain.body];
    expectNoValueIn(outputs, [password, old, token.slice(6), encodeURIComponent(`${password}@x`)]);
  });

  it("goes direct without any proxy variable: the agent is a plain undici Agent", async () => {
    const { call, settings } = await app({});
    expect(settings.outbound.proxy).toBeUndefined();
    expect((await call("tls")).status).toBe(200);
    expect((await call("plain")).status).toBe(200);
    expect(asked).toEqual([]);
    expect(Object.getPrototypeOf(outboundAgent(settings.outbound)).constructor.name).toBe("Agent");
  });

  it("does not start on a proxy URL it cannot use, without echoing it", async () => {
    const start = inProcessApp({ env: { HTTPS_PROXY: "http://svc:pa55-secret@[::1" } });
    await expect(start).rejects.toThrow(ConfigError);
    await expect(start).rejects.toThrow(/^HTTPS_PROXY: not a proxy URL/);
    await start.catch((err: Error) => expect(err.message).not.toContain("pa55"));
  });
});

describe("NO_PROXY entries (httpx's reading)", () => {
  const direct = (entries: string[], url: string) => bypassesProxy(entries, new URL(url));

  it("matches hosts, subdomains, ports, schemes, addresses and address blocks", () => {
    expect(direct(["*"], "https://api.openai.com")).toBe(true);
    expect(direct(["openai.com"], "https://api.openai.com")).toBe(true);
    expect(direct(["openai.com"], "https://openai.com")).toBe(true);
    expect(direct(["openai.com"], "https://notopenai.com")).toBe(false);
    expect(direct(["*openai.com"], "https://api.openai.com")).toBe(true);
    expect(direct([".openai.com"], "https://api.openai.com")).toBe(true);
    expect(direct([".openai.com"], "https://openai.com")).toBe(false); // subdomains only, as httpx
    expect(direct(["*.openai.com"], "https://openai.com")).toBe(false);
    expect(direct(["API.OpenAI.com"], "https://api.openai.com")).toBe(true);
    expect(direct(["vault.internal:8200"], "https://vault.internal:8200")).toBe(true);
    expect(direct(["vault.internal:8200"], "https://vault.internal")).toBe(false);
    expect(direct(["vault.internal:443"], "https://vault.internal")).toBe(true);
    expect(direct(["http://vault.internal"], "https://vault.internal")).toBe(false);
    expect(direct(["https://vault.internal"], "https://vault.internal")).toBe(true);
    expect(direct(["10.1.2.3"], "http://10.1.2.3:8080")).toBe(true);
    expect(direct(["10.1.2.3"], "http://110.1.2.3")).toBe(false);
    expect(direct(["10.0.0.0/8"], "http://10.200.0.9")).toBe(true);
    expect(direct(["10.0.0.0/8"], "http://11.0.0.1")).toBe(false);
    expect(direct(["::1"], "http://[::1]:4000")).toBe(true);
    expect(direct(["[fd00::]/8"], "http://[fd12::1]")).toBe(true);
    expect(direct(["localhost"], "http://localhost:4000")).toBe(true);
    expect(direct(["localhost"], "http://x.localhost")).toBe(false);
    expect(direct([], "https://api.openai.com")).toBe(false);
  });
});

describe("a Vault store through the proxy", () => {
  it("reaches Vault through the CONNECT tunnel, TLS checked end to end", async () => {
    const root = newKey("hvs.");
    const fake = await FakeVault.start({ pki, rootToken: root });
    fake.seed("secret/A", { key: "a-value" });
    const store = await openVaultStore(
      { HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: root },
      { log: createLogger(() => {}), now: Date.now, outbound: { proxy: { https: proxyUrl() } } },
    );
    try {
      expect((await store.get("A"))?.value).toBe("a-value");
      expect(asked.map((a) => [a.kind, a.target])).toEqual([["connect", new URL(fake.url).host]]);
      expect(fake.requests.length).toBeGreaterThan(0);
    } finally {
      await store.close();
      await fake.close();
    }
  });
});

describe("the outbound client's calls through the proxy, as the stores make them", () => {
  it("leaves the caller's headers as given (undici's ProxyAgent wrote host into them: a redirect sent again kept the first host)", async () => {
    const headers: Record<string, string> = { "x-vault-request": "true" };
    const agent = outboundAgent({ proxy: { http: proxyUrl(), https: proxyUrl() } });
    const seen: string[] = [];
    const second = createHttpServer((req, res) => {
      seen.push(String(req.headers.host));
      res.end("{}");
    });
    const secondPort = await listen(second);
    try {
      for (const port of [httpPort, secondPort]) {
        const res = await request(`http://127.0.0.1:${port}/`, { dispatcher: agent, headers });
        await res.body.text();
      }
      expect(headers).toEqual({ "x-vault-request": "true" });
      expect(seen).toEqual([`127.0.0.1:${secondPort}`]);
    } finally {
      second.closeAllConnections();
      await new Promise<void>((r) => second.close(() => r()));
    }
  });

  it("a proxy refusing our credentials (407) is store_unavailable naming the proxy, on http:// and https:// targets alike", async () => {
    required = "Basic right";
    const agent = outboundAgent({ proxy: { http: proxyUrl(), https: proxyUrl() } });
    for (const url of [`http://127.0.0.1:${httpPort}/`, `https://localhost:${httpsPort}/`]) {
      const err = await request(url, { dispatcher: agent }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const classified = classifyBackendError(err, "vault get");
      expect(classified.code, url).toBe("store_unavailable");
      expect(classified.message, url).toBe(
        "vault get: the proxy refused our credentials (HTTP 407): check those in HTTPS_PROXY, HTTP_PROXY or ALL_PROXY",
      );
    }
  });
});
