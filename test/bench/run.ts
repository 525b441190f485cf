/**
 * `npm run bench [-- --json] [-- --only=http,crypto]`: each section compares ours with a reference
 * measured in the same run and reports rows through test/bench/report.ts.
 *
 * - http: a cached GET through the full app against a bare Hono route (test/bench/http.ts).
 * - loopback: the same over a real socket, full server against a bare node-server route
 *   (test/bench/http-loopback.ts).
 * - crypto: seal+open against LiteLLM's PyNaCl path, and the cold import (test/bench/crypto.ts).
 * - file-store: the file store's writes and reads as it grows (test/bench/file-store.ts).
 * - store-cache: the cache over the AWS SDK and its fake, against a Map with a TTL (test/bench/store-cache.ts).
 * - key-events: key events applied per second against the in-memory store (test/bench/key-events.ts).
 * - bundles: each cloud's function bundle against a reference handler, size and cold import (test/bench/bundles.ts).
 * - forward: forwarded against direct calls to a local HTTPS upstream: added p50, TLS handshakes (test/bench/forward.ts).
 *
 * `--json` prints one JSON object per row on stdout and nothing else. Exits 1 when a section fails
 * (for example when it would time an error path); missed targets are reported, not fatal.
 */
import { arch, cpus, platform } from "node:os";
import bundlesSection from "./bundles";
import cryptoSection from "./crypto";
import fileStoreSection from "./file-store";
import forwardSection from "./forward";
import httpSection from "./http";
import loopbackSection from "./http-loopback";
import keyEventsSection from "./key-events";
import { BenchFailure, Reporter, type Section } from "./report";
import storeCacheSection from "./store-cache";

const SECTIONS: [string, Section][] = [
  ["http", httpSection],
  ["loopback", loopbackSection],
  ["crypto", cryptoSection],
  ["file-store", fileStoreSection],
  ["store-cache", storeCacheSection],
  ["key-events", keyEventsSection],
  ["bundles", bundlesSection],
  ["forward", forwardSection],
];

const USAGE = `usage: npm run bench -- [--json] [--only=${SECTIONS.map(([n]) => n).join(",")}]`;

async function main(argv: string[]): Promise<number> {
  let json = false;
  let only: string[] | undefined;
  for (const arg of argv) {
    if (arg === "--json") json = true;
    else if (arg.startsWith("--only=")) only = arg.slice("--only=".length).split(",").filter(Boolean);
    else {
      process.stderr.write(`${arg === "--help" || arg === "-h" ? "" : `unknown argument: ${arg}\n`}${USAGE}\n`);
      return arg === "--help" || arg === "-h" ? 0 : 2;
    }
  }
  const unknown = (only ?? []).filter((name) => !SECTIONS.some(([n]) => n === name));
  if (unknown.length > 0) {
    process.stderr.write(`unknown section: ${unknown.join(", ")}\n${USAGE}\n`);
    return 2;
  }

  const report = new Reporter({ json });
  const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
  report.note(`Node ${process.version}, ${platform()}-${arch()}, ${cpus().length} CPU(s) (${cpu})`);
  for (const [name, section] of SECTIONS) {
    if (only && !only.includes(name)) continue;
    await section(report);
  }
  report.end();
  return 0;
}

// `npm run bench -- --json | head` closes the pipe early: stop quietly.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const message =
      err instanceof BenchFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`bench failed: ${message}\n`);
    process.exitCode = 1;
  },
);
