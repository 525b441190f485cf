/**
 * `npm run bench`: two comparisons, each against a reference measured in the same run.
 *
 * (a) A cached `GET /v1/secrets/{name}` through the full app, in-process (`app.request`), against a
 *     bare Hono route answering from a Map, requested the same way.
 * (b) NaCl SecretBox seal+open: tweetnacl against libsodium-wrappers at 64 B, 1 KiB and 1 MiB, and
 *     our `sealSecret`/`openSecret` against raw tweetnacl.
 *
 * ops/s is 1000 / mean latency (ms), so ratios and "µs added" come from the same number. Keys and
 * values are made at run time; nothing key-shaped is written to a file.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { arch, cpus, platform, tmpdir } from "node:os";
import { join } from "node:path";
import { Hono } from "hono";
import sodium from "libsodium-wrappers";
import { Bench, type BenchOptions, type Task } from "tinybench";
import nacl from "tweetnacl";
import { KeyRing, openSecret, sealSecret } from "../../core/src/crypto";
import { silentLogger } from "../../core/src/log";
import { appOf, createRuntime } from "../../core/src/runtime";
import { loadSettings } from "../../core/src/settings";

const SECRET_NAME = "OPENAI_API_KEY";
const PATH = `/v1/secrets/${SECRET_NAME}`;
const KIB = 1024;
const MIB = 1024 * KIB;

/** Runs short enough for a 2-core machine: about 1.25 s a task, fewer samples for 1 MiB. */
const SHORT: BenchOptions = { time: 1000, warmupTime: 250, throws: true };
const LARGE: BenchOptions = { time: 500, iterations: 5, warmupTime: 50, warmupIterations: 2, throws: true };

class BenchFailure extends Error {}

function check(ok: boolean, message: string): asserts ok {
  if (!ok) throw new BenchFailure(message);
}

function write(text = ""): void {
  process.stdout.write(`${text}\n`);
}

interface Measured {
  meanUs: number;
  opsPerSec: number;
  rme: number;
  samples: number;
}

function measured(task: Task | undefined): Measured {
  check(task !== undefined, "a benchmark task is missing");
  const r = task.result;
  if (r.state === "errored") throw new BenchFailure(`${task.name} failed: ${r.error.message}`);
  check(r.state === "completed", `${task.name} did not complete (${r.state})`);
  return {
    meanUs: r.latency.mean * 1000,
    opsPerSec: 1000 / r.latency.mean,
    rme: r.latency.rme,
    samples: r.latency.samplesCount,
  };
}

function fmtOps(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toPrecision(3);
}

function fmtUs(n: number): string {
  return n >= 1000 ? Math.round(n).toLocaleString("en-US") : n.toPrecision(3);
}

function fmtRatio(n: number): string {
  return n >= 10 ? n.toFixed(1) : n.toFixed(3);
}

function fmtSize(bytes: number): string {
  return bytes >= MIB ? `${bytes / MIB} MiB` : bytes >= KIB ? `${bytes / KIB} KiB` : `${bytes} B`;
}

/** A plain-text table: first `leftColumns` columns left-aligned, the rest right-aligned. */
function printTable(headers: string[], rows: string[][], leftColumns: number): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i < leftColumns ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  write(line(headers));
  write(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) write(line(row));
}

const environment = `Node ${process.version}, ${platform()}-${arch()}, ${cpus().length} CPU(s) (${cpus()[0]?.model.trim() ?? "unknown CPU"})`;

// ---------------------------------------------------------------------------------------------
// (a) cached GET through the full app against a bare Hono route

async function benchHttp(): Promise<void> {
  const key = `sk-${randomBytes(24).toString("base64url")}`;
  const value = `sk-${randomBytes(24).toString("base64url")}`;
  const headers = { authorization: `Bearer ${key}` };
  const dataDir = await mkdtemp(join(tmpdir(), "llm-secrets-bench-"));
  try {
    const settings = loadSettings({ env: { LITELLM_MASTER_KEY: key, LLM_SECRETS_DATA_DIR: dataDir } });
    const runtime = await createRuntime(settings, silentLogger);
    try {
      const app = appOf(runtime);
      await runtime.manager.put(SECRET_NAME, value); // fills the cache: the GETs below are hits

      const bareValues = new Map([[SECRET_NAME, value]]);
      const bare = new Hono();
      bare.get("/v1/secrets/:name", (c) => {
        const name = c.req.param("name");
        return c.json({ name, value: bareValues.get(name), stale: false });
      });

      const { cacheHits, cacheMisses } = runtime.metrics;
      const storeLabel = { store: runtime.store.kind };
      check(runtime.store.kind === "file", `expected the file store, got ${runtime.store.kind}`);

      // Once, before timing: the full app answers 200 with the value put, from the cache.
      const hitsBefore = cacheHits.get(storeLabel);
      const missesBefore = cacheMisses.get(storeLabel);
      const res = await app.request(PATH, { headers });
      const body = (await res.json()) as { value?: unknown };
      check(res.status === 200, `the full app answered ${res.status}, not 200: the bench would time an error path`);
      check(body.value === value, "the full app's value is not the value put");
      check(cacheHits.get(storeLabel) === hitsBefore + 1, "the full app's GET was not a cache hit");
      check(cacheMisses.get(storeLabel) === missesBefore, "the full app's GET missed the cache");
      const bareRes = await bare.request(PATH, { headers });
      const bareBody = (await bareRes.json()) as { value?: unknown };
      check(bareRes.status === 200 && bareBody.value === value, "the bare Hono route does not answer the value");

      const hitsStart = cacheHits.get(storeLabel);
      const missesStart = cacheMisses.get(storeLabel);
      let appStatus = 200;

      const bench = new Bench({ name: "cached GET", ...SHORT });
      bench
        .add("bare Hono route + Map (reference)", async () => {
          const r = await bare.request(PATH, { headers });
          await r.json();
        })
        .add("full app, cached GET", async () => {
          const r = await app.request(PATH, { headers });
          if (r.status !== 200) appStatus = r.status;
          await r.json();
        });
      await bench.run();

      const ref = measured(bench.getTask("bare Hono route + Map (reference)"));
      const full = measured(bench.getTask("full app, cached GET"));
      const fullTask = bench.getTask("full app, cached GET");
      const hits = cacheHits.get(storeLabel) - hitsStart;
      // After timing: every timed request of the full app was a 200 answered from the cache.
      check(appStatus === 200, `a timed request of the full app answered ${appStatus}`);
      check(cacheMisses.get(storeLabel) === missesStart, "timed requests missed the cache");
      check(hits >= (fullTask?.runs ?? 0), `only ${hits} cache hits for ${fullTask?.runs} timed requests`);

      write(
        `(a) cached GET ${PATH} in-process (app.request + res.json()): full app vs bare Hono route; ${environment}`,
      );
      printTable(
        ["task", "ops/s", "mean µs", "±rme %", "samples", "ratio vs ref"],
        [
          [
            "bare Hono route + Map (reference)",
            fmtOps(ref.opsPerSec),
            fmtUs(ref.meanUs),
            ref.rme.toFixed(2),
            String(ref.samples),
            "1.000",
          ],
          [
            "full app, cached GET",
            fmtOps(full.opsPerSec),
            fmtUs(full.meanUs),
            full.rme.toFixed(2),
            String(full.samples),
            fmtRatio(full.opsPerSec / ref.opsPerSec),
          ],
        ],
        1,
      );
      write(
        `summary (a): the full app serves a cached GET at ${fmtOps(full.opsPerSec)} ops/s, ` +
          `${fmtRatio(full.opsPerSec / ref.opsPerSec)}x the bare route's ${fmtOps(ref.opsPerSec)} ops/s; ` +
          `it adds ${(full.meanUs - ref.meanUs).toFixed(1)} µs per request (${hits} cache hits counted, 0 misses).`,
      );
    } finally {
      await runtime.store.close?.();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// (b) SecretBox seal+open: tweetnacl vs libsodium-wrappers, and ours vs raw tweetnacl

function sameBytes(a: Uint8Array | null, b: Uint8Array | null): boolean {
  return a !== null && b !== null && a.length === b.length && Buffer.from(a).equals(Buffer.from(b));
}

interface SizeResult {
  size: number;
  sodium: Measured;
  tweetnacl: Measured;
  ours: Measured;
}

async function benchSecretBox(): Promise<void> {
  await sodium.ready;
  const key = new Uint8Array(randomBytes(nacl.secretbox.keyLength));
  const saltKey = `sk-${randomBytes(24).toString("base64url")}`;
  const ring = new KeyRing(saltKey);
  const ringKey = createHash("sha256").update(saltKey, "utf8").digest();
  const results: SizeResult[] = [];

  for (const size of [64, KIB, MIB]) {
    const label = fmtSize(size);
    const message = new Uint8Array(randomBytes(size));
    // ASCII text of exactly `size` bytes, so sealSecret encrypts as many bytes as the raw rows.
    const text = randomBytes(size).toString("base64url").slice(0, size);
    check(Buffer.byteLength(text, "utf8") === size, `${label}: the text is not ${size} bytes`);

    // Once per size: each library opens what it sealed, and both seal the same bytes the same way.
    const nonce = new Uint8Array(randomBytes(nacl.secretbox.nonceLength));
    const naclBox = nacl.secretbox(message, nonce, key);
    const sodiumBox = sodium.crypto_secretbox_easy(message, nonce, key);
    check(sameBytes(nacl.secretbox.open(naclBox, nonce, key), message), `${label}: tweetnacl did not open its box`);
    check(
      sameBytes(sodium.crypto_secretbox_open_easy(sodiumBox, nonce, key), message),
      `${label}: libsodium did not open its box`,
    );
    check(sameBytes(naclBox, sodiumBox), `${label}: tweetnacl and libsodium ciphertexts differ for one key and nonce`);
    const sealed = sealSecret(text, ring);
    check(openSecret(sealed, ring) === text, `${label}: openSecret did not return what sealSecret sealed`);
    const raw = Buffer.from(sealed, "base64");
    const ourNonce = raw.subarray(0, nacl.secretbox.nonceLength);
    check(
      sameBytes(raw.subarray(nacl.secretbox.nonceLength), nacl.secretbox(Buffer.from(text), ourNonce, ringKey)),
      `${label}: sealSecret is not nonce || secretbox(SHA-256(salt key))`,
    );

    // Each op: a fresh random nonce (node:crypto for both libraries), seal, open.
    let failures = 0;
    const bench = new Bench({ name: `secretbox ${label}`, ...(size >= MIB ? LARGE : SHORT) });
    bench
      .add("libsodium-wrappers", () => {
        const n = randomBytes(24);
        const box = sodium.crypto_secretbox_easy(message, n, key);
        // Throws when the box does not open; the bench then fails (throws: true).
        sodium.crypto_secretbox_open_easy(box, n, key);
      })
      .add("tweetnacl", () => {
        const n = randomBytes(24);
        const box = nacl.secretbox(message, n, key);
        if (nacl.secretbox.open(box, n, key) === null) failures++;
      })
      .add("sealSecret/openSecret", () => {
        if (openSecret(sealSecret(text, ring), ring).length !== size) failures++;
      });
    await bench.run();
    check(failures === 0, `${label}: ${failures} timed ops did not open what they sealed`);

    results.push({
      size,
      sodium: measured(bench.getTask("libsodium-wrappers")),
      tweetnacl: measured(bench.getTask("tweetnacl")),
      ours: measured(bench.getTask("sealSecret/openSecret")),
    });
  }

  write(`(b) NaCl SecretBox seal+open per op: tweetnacl vs libsodium-wrappers, ours vs tweetnacl; ${environment}`);
  const rows: string[][] = [];
  for (const r of results) {
    const row = (name: string, m: Measured, ratio: string, vs: string) => [
      fmtSize(r.size),
      name,
      fmtOps(m.opsPerSec),
      fmtUs(m.meanUs),
      ((r.size * m.opsPerSec) / MIB).toFixed(1),
      m.rme.toFixed(2),
      String(m.samples),
      ratio,
      vs,
    ];
    rows.push(row("libsodium-wrappers (reference)", r.sodium, "1.000", ""));
    rows.push(row("tweetnacl", r.tweetnacl, fmtRatio(r.tweetnacl.opsPerSec / r.sodium.opsPerSec), "libsodium"));
    rows.push(
      row("sealSecret/openSecret (core)", r.ours, fmtRatio(r.ours.opsPerSec / r.tweetnacl.opsPerSec), "tweetnacl"),
    );
  }
  printTable(["size", "implementation", "ops/s", "mean µs", "MiB/s", "±rme %", "samples", "ratio", "vs"], rows, 2);
  const per = (f: (r: SizeResult) => number) =>
    results.map((r) => `${fmtRatio(f(r))} at ${fmtSize(r.size)}`).join(", ");
  write(
    `summary (b): tweetnacl/libsodium-wrappers ops/s = ${per((r) => r.tweetnacl.opsPerSec / r.sodium.opsPerSec)}; ` +
      `sealSecret+openSecret/raw tweetnacl ops/s = ${per((r) => r.ours.opsPerSec / r.tweetnacl.opsPerSec)}.`,
  );
}

async function main(): Promise<void> {
  await benchHttp();
  write();
  await benchSecretBox();
}

main().catch((err: unknown) => {
  const message =
    err instanceof BenchFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`bench failed: ${message}\n`);
  process.exitCode = 1;
});
