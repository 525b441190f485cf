/**
 * Bench section `crypto`: NaCl SecretBox seal+open in LiteLLM's format, ours against LiteLLM's own
 * path (PyNaCl, as Debian's python3-nacl ships it) in the same run, at 64 B, 1 KiB and 1 MiB.
 *
 * One op, on both sides: seal a string of SIZE ASCII bytes into padded base64url, then open that
 * text back into the string. Ours is `sealSecret`/`openSecret` with libsodium ready; the reference
 * is test/bench/pynacl_bench.py (SecretBox.encrypt + urlsafe_b64encode, urlsafe_b64decode +
 * decrypt). Each implementation gets the same time budget per size, in alternating rounds (the order
 * flips each round), and the rows report the median ops/s over the rounds. Also measured, as
 * information: libsodium-wrappers' own `crypto_secretbox_easy` with a plain wrapper, and tweetnacl
 * (the path seal and open take until libsodium is ready).
 *
 * Then the cold import: fresh `node` processes import an esbuild bundle of the app
 * (core/src/index.ts) and of the crypto module, with and without `await cryptoReady()`: what
 * loading libsodium would add to every start if it were loaded at import.
 *
 * Without /usr/bin/python3 (or $BENCH_PYTHON) and its nacl module the section still runs, says so,
 * and reports the PyNaCl rows as not measured (reference and ratio null). Keys are made at run time.
 */
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import sodium from "libsodium-wrappers";
import nacl from "tweetnacl";
import { cryptoBackend, cryptoReady, KeyRing, openSecret, sealSecret } from "../../core/src/crypto";
import { check, formatSize, KIB, MIB, median, type Reporter } from "./report";

const HERE = dirname(fileURLToPath(import.meta.url));
const CORE = join(HERE, "..", "..", "core");
/** Debian's python3 (with python3-nacl, as LiteLLM runs there); BENCH_PYTHON overrides it. */
const PYTHON = process.env.BENCH_PYTHON ?? "/usr/bin/python3";
const PYNACL_SCRIPT = join(HERE, "pynacl_bench.py");

const SIZES = [64, KIB, MIB];
const ROUNDS = 5;
/** Time per size, per implementation, per round (plus a tenth of it to warm up). */
const BUDGET_MS = 250;
const IMPORT_RUNS = 9;

type Op = () => number;

/** Ops/s of `op` over `budgetMs` after a tenth of it to warm up; the same loop as pynacl_bench.py. */
function opsPerSecond(op: Op, budgetMs: number): number {
  const warmUntil = performance.now() + budgetMs / 10;
  while (performance.now() < warmUntil) op();
  let batch = 1;
  let ops = 0;
  let elapsed = 0;
  while (elapsed < budgetMs) {
    const start = performance.now();
    for (let i = 0; i < batch; i++) op();
    elapsed += performance.now() - start;
    ops += batch;
    if (elapsed < budgetMs / 20) batch *= 2;
  }
  return ops / (elapsed / 1000);
}

/** ASCII text of exactly `size` bytes. */
function textOf(size: number): string {
  return randomBytes(size).toString("base64url").slice(0, size);
}

function padded(unpadded: string): string {
  return unpadded + "=".repeat((4 - (unpadded.length % 4)) % 4);
}

interface PynaclRun {
  python: string;
  pynacl: string;
  results: { size: number; ops: number; seconds: number }[];
}

/** Why PyNaCl cannot run here, or undefined when it can. */
function pynaclMissing(): string | undefined {
  const probe = spawnSync(PYTHON, ["-c", "import nacl.secret"], { encoding: "utf8" });
  if (probe.error) return `${PYTHON} is missing (${probe.error.message})`;
  if (probe.status !== 0) return `${PYTHON} has no PyNaCl (apt-get install python3-nacl)`;
  return undefined;
}

function runPynacl(): PynaclRun {
  const run = spawnSync(PYTHON, [PYNACL_SCRIPT, SIZES.join(","), String(BUDGET_MS)], { encoding: "utf8" });
  check(run.status === 0, `pynacl_bench.py failed (${run.status}): ${run.stderr.trim()}`);
  const parsed = JSON.parse(run.stdout) as PynaclRun;
  for (const size of SIZES) {
    const r = parsed.results.find((x) => x.size === size);
    check(r !== undefined && r.ops > 0 && r.seconds > 0, `pynacl_bench.py did not time ${formatSize(size)}`);
  }
  return parsed;
}

export default async function cryptoSection(report: Reporter): Promise<void> {
  report.section("crypto: NaCl SecretBox seal+open (padded base64url), ours vs LiteLLM's PyNaCl path");
  await sodium.ready;
  await cryptoReady();
  check(cryptoBackend() === "libsodium", "sealSecret/openSecret are not on libsodium after cryptoReady()");

  const saltKey = `sk-${randomBytes(24).toString("base64url")}`;
  const ring = new KeyRing(saltKey);
  const key = createHash("sha256").update(saltKey, "utf8").digest();
  const missing = pynaclMissing();
  if (missing) report.note(`PyNaCl reference skipped: ${missing}. Its rows are reported as not measured.`);

  // The implementations, per size. Each op returns the length of what it opened, checked below.
  const implementations: Record<string, (text: string) => Op> = {
    ours: (text) => () => openSecret(sealSecret(text, ring), ring).length,
    "libsodium-wrappers": (text) => () => {
      const nonce = randomBytes(24);
      const box = sodium.crypto_secretbox_easy(Buffer.from(text, "utf8"), nonce, key);
      const sealed = padded(Buffer.concat([nonce, box]).toString("base64url"));
      const raw = Buffer.from(sealed, "base64url");
      const opened = sodium.crypto_secretbox_open_easy(raw.subarray(24), raw.subarray(0, 24), key);
      return Buffer.from(opened.buffer, opened.byteOffset, opened.byteLength).toString("utf8").length;
    },
    tweetnacl: (text) => () => {
      const nonce = randomBytes(24);
      const box = nacl.secretbox(Buffer.from(text, "utf8"), nonce, key);
      const sealed = padded(Buffer.concat([nonce, box]).toString("base64url"));
      const raw = Buffer.from(sealed, "base64url");
      const opened = nacl.secretbox.open(raw.subarray(24), raw.subarray(0, 24), key);
      return opened === null ? -1 : Buffer.from(opened).toString("utf8").length;
    },
  };

  // Before timing, once per size: each op gives the text back, and ours is LiteLLM's layout.
  const texts = new Map(SIZES.map((size) => [size, textOf(size)]));
  for (const [size, text] of texts) {
    const label = formatSize(size);
    for (const [name, make] of Object.entries(implementations)) {
      check(make(text)() === size, `${label}: ${name} did not open what it sealed`);
    }
    const raw = Buffer.from(sealSecret(text, ring), "base64url");
    const opened = nacl.secretbox.open(raw.subarray(24), raw.subarray(0, 24), key);
    check(
      opened !== null && Buffer.from(opened).toString("utf8") === text,
      `${label}: sealSecret is not nonce || secretbox(SHA-256(salt key))`,
    );
  }

  // Alternating rounds: the order of the implementations (and of PyNaCl) flips each round.
  const results = new Map<string, number[]>(); // `${name} ${size}` → ops/s per round
  const record = (name: string, size: number, value: number) => {
    const k = `${name} ${size}`;
    results.set(k, [...(results.get(k) ?? []), value]);
  };
  let failures = 0;
  let pynaclVersion = "";
  for (let round = 0; round < ROUNDS; round++) {
    const order = [...Object.keys(implementations), "pynacl"];
    if (round % 2 === 1) order.reverse();
    for (const name of order) {
      if (name === "pynacl") {
        if (missing) continue;
        const run = runPynacl();
        pynaclVersion = `PyNaCl ${run.pynacl} on Python ${run.python}`;
        for (const r of run.results) record("pynacl", r.size, r.ops / r.seconds);
        continue;
      }
      const make = implementations[name];
      check(make !== undefined, `no implementation ${name}`);
      for (const [size, text] of texts) {
        const op = make(text);
        record(
          name,
          size,
          opsPerSecond(() => {
            const n = op();
            if (n !== size) failures++;
            return n;
          }, BUDGET_MS),
        );
      }
    }
  }
  check(failures === 0, `${failures} timed ops did not open what they sealed`);
  check(cryptoBackend() === "libsodium", "the timed ops fell back to tweetnacl");

  const med = (name: string, size: number) => {
    const values = results.get(`${name} ${size}`);
    return values === undefined ? null : median(values);
  };
  for (const size of SIZES) {
    const label = formatSize(size);
    report.row({
      name: `crypto seal+open ${label}: ours vs pynacl (LiteLLM)`,
      ours: med("ours", size),
      reference: med("pynacl", size),
      unit: "ops/s",
      target: ">= 1.0",
    });
    report.row({
      name: `crypto seal+open ${label}: ours vs libsodium-wrappers crypto_secretbox_easy`,
      ours: med("ours", size),
      reference: med("libsodium-wrappers", size),
      unit: "ops/s",
      target: "info",
    });
    report.row({
      name: `crypto seal+open ${label}: tweetnacl (before cryptoReady) vs pynacl`,
      ours: med("tweetnacl", size),
      reference: med("pynacl", size),
      unit: "ops/s",
      target: "info",
    });
  }
  if (!missing) {
    const perRound = SIZES.map((size) => {
      const ours = results.get(`ours ${size}`) ?? [];
      const ref = results.get(`pynacl ${size}`) ?? [];
      return `${formatSize(size)} ${ours.map((o, i) => (o / (ref[i] ?? Number.NaN)).toFixed(2)).join("/")}`;
    });
    report.note(
      `ours/pynacl per round (${ROUNDS} alternating rounds of ${BUDGET_MS} ms per size, ${pynaclVersion}): ${perRound.join("; ")}`,
    );
  }

  await coldImport(report);
}

/** Cold import in fresh node processes: the app and the crypto module, without and with cryptoReady(). */
async function coldImport(report: Reporter): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "llm-secrets-bench-import-"));
  try {
    const bundles: Record<string, string> = {};
    for (const [name, entry, external] of [
      ["app", join(CORE, "src", "index.ts"), []],
      ["crypto", join(CORE, "src", "crypto.ts"), []],
      // The same module without libsodium's code in the bundle: what carrying it costs unloaded.
      ["crypto-external", join(CORE, "src", "crypto.ts"), ["libsodium-wrappers"]],
    ] as const) {
      const outfile = join(dir, `${name}.mjs`);
      try {
        await build({
          entryPoints: [entry],
          bundle: true,
          platform: "node",
          format: "esm",
          target: "node20",
          outfile,
          external: [...external],
          logLevel: "silent",
          banner: {
            js: 'import { createRequire as __createRequire } from "node:module"; const require = __createRequire(import.meta.url);',
          },
        });
        bundles[name] = outfile;
      } catch (err) {
        report.note(`cold import of ${name}: the bundle does not build (${(err as Error).message.split("\n")[0]})`);
      }
    }
    const probe = join(dir, "probe.mjs");
    await writeFile(
      probe,
      [
        "const t0 = performance.now();",
        "const m = await import(process.argv[2]);",
        "const t1 = performance.now();",
        'if (process.argv[3] === "ready") await m.cryptoReady();',
        "const t2 = performance.now();",
        "process.stdout.write(JSON.stringify({ importMs: t1 - t0, readyMs: t2 - t1 }));",
      ].join("\n"),
    );
    const variants = Object.entries(bundles).flatMap(([name, file]) =>
      name === "crypto-external"
        ? [{ name, file, ready: false }]
        : [
            { name, file, ready: false },
            { name, file, ready: true },
          ],
    );
    const times = new Map<string, number[]>();
    for (let run = 0; run < IMPORT_RUNS + 1; run++) {
      for (const v of run % 2 === 0 ? variants : [...variants].reverse()) {
        const child = spawnSync(process.execPath, [probe, v.file, v.ready ? "ready" : ""], { encoding: "utf8" });
        check(child.status === 0, `importing the ${v.name} bundle failed: ${child.stderr.trim().split("\n")[0]}`);
        if (run === 0) continue; // the first run warms the disk cache
        const t = JSON.parse(child.stdout) as { importMs: number; readyMs: number };
        const k = `${v.name} ${v.ready}`;
        times.set(k, [...(times.get(k) ?? []), t.importMs + t.readyMs]);
      }
    }
    const at = (name: string, ready: boolean) => {
      const values = times.get(`${name} ${ready}`);
      return values === undefined ? null : median(values);
    };
    const labels: Record<string, string> = { app: "app (core/src/index.ts bundle)", crypto: "crypto module bundle" };
    for (const name of ["app", "crypto"]) {
      if (bundles[name] === undefined) continue;
      const plain = at(name, false);
      report.row({ name: `cold import: ${labels[name]}`, ours: plain, reference: null, unit: "ms", target: "info" });
      report.row({
        name: `cold import + await cryptoReady(): ${labels[name]} vs import alone`,
        ours: at(name, true),
        reference: plain,
        unit: "ms",
        target: "info",
      });
    }
    if (bundles["crypto-external"] !== undefined) {
      report.row({
        name: "cold import: crypto module bundle vs the same without libsodium's code (external)",
        ours: at("crypto", false),
        reference: at("crypto-external", false),
        unit: "ms",
        target: "info",
      });
    }
    const app = at("app", false);
    const appReady = at("app", true);
    if (app !== null && appReady !== null) {
      report.note(
        `loading libsodium adds ${(appReady - app).toFixed(1)} ms to a cold start of the app ` +
          `(median of ${IMPORT_RUNS} fresh processes): over the 5 ms an import may add, so core/src/crypto.ts ` +
          "loads it on first use and in createRuntime, never at import.",
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
