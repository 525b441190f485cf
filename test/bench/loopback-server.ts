/**
 * A server for the loopback bench, run as its own process so the load generator does not share its
 * event loop: `tsx test/bench/loopback-server.ts bare|full`. Prints `port <n>` when listening.
 *
 * - `bare`: a Hono route answering a Map value over `@hono/node-server` (the reference).
 * - `full`: the whole product (`createRuntime` over the file store, the local server), with the
 *   secret written once so every timed GET is a cache hit.
 *
 * The master key and the value come from the environment (BENCH_KEY, BENCH_VALUE): the bench makes
 * them at run time.
 */
import { mkdtemp } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { LOCAL_STORES } from "../../core/src/cli";
import { createLogger } from "../../core/src/log";
import { createRuntime } from "../../core/src/runtime";
import { startServer } from "../../core/src/server";

const NAME = "OPENAI_API_KEY";
const key = process.env.BENCH_KEY ?? "";
const value = process.env.BENCH_VALUE ?? "";

async function main(): Promise<void> {
  if (process.argv[2] === "bare") {
    const values = new Map([[NAME, value]]);
    const app = new Hono();
    app.get("/v1/secrets/:name", (c) => {
      const name = c.req.param("name");
      return c.json({ name, value: values.get(name), stale: false });
    });
    serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info: AddressInfo) => {
      process.stdout.write(`port ${info.port}\n`);
    });
    return;
  }
  const runtime = await createRuntime({
    stores: LOCAL_STORES,
    settings: {
      env: { LITELLM_MASTER_KEY: key, LLM_SECRETS_DATA_DIR: await mkdtemp(join(tmpdir(), "llm-secrets-bench-")) },
    },
    // The access log is part of the hot path: it is written (the bench sends stderr to /dev/null).
    log: createLogger(),
  });
  await runtime.manager.put(NAME, value);
  const running = await startServer(runtime, { host: "127.0.0.1", port: 0 });
  process.stdout.write(`port ${new URL(running.url).port}\n`);
}

// A clean exit on a signal (so `--cpu-prof` writes its profile).
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
await main();
