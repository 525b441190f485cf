/**
 * Bench section `forward`: 1 000 sequential requests forwarded through the served app to a local
 * HTTPS fake of an LLM API, against the same requests sent to the fake directly (both over pooled
 * keep-alive connections), in the same run.
 *
 * - The p50 latency forwarding adds. Target: at most 1 ms.
 * - TLS handshakes the fake sees for the 1 000 forwarded requests. Target: 1. Printed beside it, a
 *   client that opens a new connection per request (1 000).
 * The fake's certificate comes from a CA made now, trusted by the app through `SSL_CERT_FILE`. The
 * app is the core bundled by esbuild, as the product ships it (as in the http section): under the
 * bench's TypeScript loader, each `import()` the app made per request was a round trip to the
 * loader's thread, which no shipped bundle pays.
 */

import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Agent, request } from "undici";
// @ts-expect-error: a plain ESM build script without types
import { bundleCore } from "../../core/build.mjs";
import type * as Log from "../../core/src/log";
import type * as Outbound from "../../core/src/outbound";
import type * as RuntimeModule from "../../core/src/runtime";
import type * as Server from "../../core/src/server";
import type * as Memory from "../../core/src/stores/memory";
import { makeTestPki } from "../fakes/pki";
import { check, median, type Reporter } from "./report";

const REQUESTS = 1_000;

async function bundledCore(dir: string) {
  const outfile = await bundleCore(
    [
      'export { silentLogger } from "./src/log.ts";',
      'export { closeOutboundAgents } from "./src/outbound.ts";',
      'export { createRuntime } from "./src/runtime.ts";',
      'export { startServer } from "./src/server.ts";',
      'export { memoryStore } from "./src/stores/memory.ts";',
    ].join("\n"),
    join(dir, "core.mjs"),
  );
  return (await import(pathToFileURL(outfile).href)) as Pick<typeof Log, "silentLogger"> &
    Pick<typeof Outbound, "closeOutboundAgents"> &
    Pick<typeof RuntimeModule, "createRuntime"> &
    Pick<typeof Server, "startServer"> &
    Pick<typeof Memory, "memoryStore">;
}

export default async function forwardSection(report: Reporter): Promise<void> {
  report.section("forward: requests forwarded through the app vs sent to the upstream directly");
  const dir = await mkdtemp(join(tmpdir(), "llm-secrets-bench-forward-"));
  const { closeOutboundAgents, createRuntime, memoryStore, silentLogger, startServer } = await bundledCore(dir);
  const pki = makeTestPki(dir);
  const ca = readFileSync(pki.caFile);
  let handshakes = 0;
  const upstream = createServer(
    { key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile), keepAliveTimeout: 60_000 },
    (req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"id":"chatcmpl-1","choices":[{"message":{"role":"assistant","content":"hi"}}]}');
      });
    },
  );
  upstream.on("secureConnection", () => handshakes++);
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  const upstreamUrl = `https://localhost:${(upstream.address() as AddressInfo).port}`;
  const masterKey = `sk-${Date.now().toString(36)}-forward-bench`;
  const runtime = await createRuntime({
    stores: [memoryStore],
    settings: {
      env: {
        LITELLM_MASTER_KEY: masterKey,
        SSL_CERT_FILE: pki.caFile,
        LLM_SECRETS_CONFIG: `model_list:\n  - model_name: gpt\n    litellm_params: {model: openai/gpt-4o, api_base: ${upstreamUrl}, api_key: os.environ/OPENAI_API_KEY}\n`,
      },
    },
    log: silentLogger,
    audit: () => {}, // audit lines formatted, not written
  });
  await runtime.manager.put("OPENAI_API_KEY", "sk-upstream-bench-key");
  const served = await startServer(runtime, { host: "127.0.0.1", port: 0 });
  const direct = new Agent({ connect: { ca }, keepAliveTimeout: 60_000 });
  const local = new Agent({ keepAliveTimeout: 60_000 });
  const body = JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] });

  const timed = async (url: string, dispatcher: Agent, headers: Record<string, string>) => {
    const times: number[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      const started = performance.now();
      const res = await request(url, { method: "POST", body, headers, dispatcher });
      await res.body.text();
      times.push(performance.now() - started);
      check(res.statusCode === 200, `a request answered ${res.statusCode}`);
    }
    return median(times);
  };

  try {
    const json = { "content-type": "application/json" };
    const forwarded = { ...json, authorization: `Bearer ${masterKey}` };
    await timed(`${upstreamUrl}/v1/chat/completions`, direct, json); // warms the direct path up
    // The first 1 000 forwarded requests, from a cold outbound pool: the handshakes they cost.
    const before = handshakes;
    await timed(`${served.url}/v1/forward/gpt/v1/chat/completions`, local, forwarded);
    const forwardedHandshakes = handshakes - before;
    const directP50 = await timed(`${upstreamUrl}/v1/chat/completions`, direct, json);
    const forwardedP50 = await timed(`${served.url}/v1/forward/gpt/v1/chat/completions`, local, forwarded);
    // A client that opens a new connection (and so a new TLS handshake) for every request.
    const fresh = handshakes;
    for (let i = 0; i < REQUESTS; i++) {
      await new Promise<void>((resolve, reject) => {
        const req = httpsRequest(`${upstreamUrl}/v1/chat/completions`, { method: "POST", ca, agent: false }, (res) => {
          res.resume();
          res.on("end", resolve);
        });
        req.on("error", reject);
        req.end(body);
      });
    }
    const freshHandshakes = handshakes - fresh;
    report.row({
      name: "forward: p50 latency it adds to a request (forwarded minus direct), against 1 ms",
      ours: Math.round((forwardedP50 - directP50) * 1000) / 1000,
      reference: 1,
      unit: "ms",
      target: "<= 1",
    });
    report.row({
      name: `TLS handshakes for ${REQUESTS} sequential forwarded requests, against a new connection per request`,
      ours: forwardedHandshakes,
      reference: freshHandshakes,
      unit: "handshakes",
      ratio: forwardedHandshakes,
      target: "<= 1",
    });
    report.note(
      `p50: direct ${directP50.toFixed(3)} ms, forwarded ${forwardedP50.toFixed(3)} ms (${REQUESTS} sequential POSTs each, keep-alive; the app over plain HTTP on loopback in this process). The ratio of the handshake row is the forwarded count itself.`,
    );
  } finally {
    await served.close();
    await runtime.close();
    await direct.close();
    await local.close();
    await closeOutboundAgents();
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  }
}
