// The loopback bench's reference: a bare Hono route answering a Map value over @hono/node-server,
// in plain node (no TypeScript loader), as `llm-secrets serve` runs from its bundle.
// Prints `serving http://127.0.0.1:<port>` when listening, like the CLI.
import { serve } from "@hono/node-server";
import { Hono } from "hono";

const values = new Map([["OPENAI_API_KEY", process.env.BENCH_VALUE ?? ""]]);
// BENCH_BUSY_US: spin this many microseconds per request (the bench's calibration row).
const busyMs = Number(process.env.BENCH_BUSY_US ?? 0) / 1000;
const app = new Hono();
app.get("/v1/secrets/:name", (c) => {
  if (busyMs > 0) for (const end = performance.now() + busyMs; performance.now() < end; );
  const name = c.req.param("name");
  return c.json({ name, value: values.get(name), stale: false });
});
serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => {
  process.stdout.write(`serving http://127.0.0.1:${info.port}\n`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => process.exit(0));
