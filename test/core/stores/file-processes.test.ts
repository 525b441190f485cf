// The file store across processes: writers in child processes (file-writer.ts), killed with SIGKILL
// at random moments; every acknowledged write must be on disk and the store must always open.
import { spawn } from "node:child_process";
import { statSync } from "node:fs";
import { readdir, utimes } from "node:fs/promises";
import { join } from "node:path";
import { build } from "esbuild";
import { beforeAll, describe, expect, it } from "vitest";
import { KeyRing, openSecret } from "../../../core/src/crypto";
import { FileStore } from "../../../core/src/stores/file";
import { randomBytesSeeded, runProcess, seededRandom, TEST_SEED, tempDir, until } from "../../helpers";
import { logPath, readLog } from "./file-log-reader";

let writer: string;
let compactor: string;
let staller: string;

beforeAll(async () => {
  const out = await tempDir();
  await build({
    entryPoints: ["file-writer.ts", "file-compactor.ts", "file-staller.ts"].map((f) => join(import.meta.dirname, f)),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outdir: out,
    outExtension: { ".js": ".mjs" },
    logLevel: "warning",
    banner: { js: 'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);' },
  });
  writer = join(out, "file-writer.mjs");
  compactor = join(out, "file-compactor.mjs");
  staller = join(out, "file-staller.mjs");
});

function writerProcess(dir: string, salt: string, prefix: string, count = 0, padding = 0) {
  const child = spawn(process.execPath, [writer, dir, salt, prefix, String(count), String(padding)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  const listeners: (() => void)[] = [];
  child.stdout.on("data", (d) => {
    out += d;
    for (const listener of listeners) listener();
  });
  const acked = () =>
    out
      .split("\n")
      .filter((l) => l.startsWith("ack "))
      .map((l) => l.slice(4));
  const done = new Promise<{ code: number | null; acked: string[] }>((resolve) =>
    child.on("close", (code) => resolve({ code, acked: acked() })),
  );
  /** Resolves once `n` writes are acknowledged (or the child exits). */
  const ackedAtLeast = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (acked().length >= n) resolve();
      };
      listeners.push(check);
      child.on("exit", () => resolve());
      check();
    });
  return { child, done, acked, ackedAtLeast };
}

/** A file-staller child: what it printed, once it printed `line` (or exited), and its exit. */
function stallerProcess(dir: string, salt: string, role: string, stallMs: number) {
  const child = spawn(process.execPath, [staller, dir, salt, role, String(stallMs)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  const done = new Promise<string[]>((resolve) => child.on("close", () => resolve(out.split("\n").filter(Boolean))));
  const printed = (line: string) =>
    until(`${role} printed ${line}`, () => out.includes(`${line}\n`) || child.exitCode !== null);
  return { done, printed };
}

describe("FileStore across processes", () => {
  it("a writer that stalled past its lease while another took the lock over and compacted answers no change as done that the log lost", async () => {
    // Before: the stalled writer appended to the log the other was about to replace, found the log's
    // size and inode as it expected, and answered its put and delete as done; the compaction then
    // dropped both (the put lost, the deleted key back).
    const dir = await tempDir();
    const salt = `stall-${randomBytesSeeded(8).toString("hex")}`;
    const setup = await FileStore.open({ dataDir: dir, keys: new KeyRing(salt) });
    await setup.put("K", "value-of-K");
    await setup.close();
    const stalled = stallerProcess(dir, salt, "stall", 7_000);
    await stalled.printed("stalling"); // inside the lock, its lease no longer renewed
    const compacting = stallerProcess(dir, salt, "compact", 4_000); // takes it over after 5 s
    const [writes, compaction] = await Promise.all([stalled.done, compacting.done]);
    expect(compaction).toContain("compact done");
    expect(writes).toContain("put W done");
    const store = await FileStore.open({ dataDir: dir, keys: new KeyRing(salt) });
    // Each change answered as done is in the log; one refused (503: may have landed) may be or not.
    if (writes.includes("put X done")) expect((await store.get("X"))?.value).toBe("x");
    if (writes.includes("delete K done")) expect(await store.get("K")).toBeUndefined();
    expect(writes.filter((w) => /^(put X|delete K) /.test(w)).sort()).toEqual([
      "delete K refused backend_unavailable",
      "put X refused backend_unavailable",
    ]);
    await store.close();
  }, 60_000);

  it("loses no acknowledged write when three processes write at once", async () => {
    const salt = `multi-${randomBytesSeeded(8).toString("hex")}`;
    for (let round = 0; round < 4; round++) {
      const dir = await tempDir();
      const writers = ["a", "b", "c"].map((p) => writerProcess(dir, salt, `${p}${round}`, 120));
      const results = await Promise.all(writers.map((w) => w.done));
      expect(results.map((r) => r.code)).toEqual([0, 0, 0]);
      const { state } = await readLog(dir);
      const lost = results.flatMap((r) => r.acked).filter((n) => !state.has(n));
      expect(lost, `round ${round}`).toEqual([]);
      expect(state.size).toBe(360);
      // Change numbers are unique across the processes.
      expect(new Set([...state.values()].map((c) => c.s)).size).toBe(360);
      expect((await readdir(dir)).filter((f) => f.includes(".lock"))).toEqual([]);
    }
  }, 90_000); // four rounds of three processes: 6 s alone, 20 s seen beside busy CPUs

  it("reads back what it just wrote while another process keeps writing", async () => {
    const salt = `rw-${randomBytesSeeded(8).toString("hex")}`;
    const dir = await tempDir();
    const other = writerProcess(dir, salt, "other");
    try {
      const store = await FileStore.open({ dataDir: dir, keys: new KeyRing(salt) });
      await other.ackedAtLeast(4);
      for (let i = 0; i < 300; i++) {
        await store.put("MINE", `mine-${i}`);
        expect((await store.get("MINE"))?.value).toBe(`mine-${i}`);
      }
      // And what the other process acknowledged, without a restart.
      const acked = other.acked();
      for (const name of acked.slice(-3)) expect((await store.get(name))?.value).toBe(`value-of-${name}`);
      await store.close();
    } finally {
      other.child.kill("SIGKILL");
      await other.done;
    }
  });

  it("reports what another process wrote through watch", async () => {
    const salt = `watch-${randomBytesSeeded(8).toString("hex")}`;
    const dir = await tempDir();
    const store = await FileStore.open({ dataDir: dir, keys: new KeyRing(salt) });
    const seen = new Set<string>();
    store.watch((names) => {
      for (const n of names) seen.add(n);
    });
    const other = writerProcess(dir, salt, "ext", 12);
    expect((await other.done).code).toBe(0);
    await until("twelve names reported", () => seen.size >= 12);
    expect([...seen].sort()).toEqual(Array.from({ length: 12 }, (_, i) => `ext-${i}`).sort());
    await store.close();
  });

  it("holds every acknowledged write after each of many kill -9s, ignores torn tails, and always opens", async () => {
    const dir = await tempDir();
    const salt = `crash-${randomBytesSeeded(8).toString("hex")}`;
    const ring = new KeyRing(salt);
    const random = seededRandom(`${TEST_SEED}:file-store-kill`);
    const acked = new Set<string>();
    const rounds = 20;
    for (let round = 0; round < rounds; round++) {
      // Large values in half the rounds: a kill then often lands inside a write() of several MB.
      const padding = round % 2 === 0 ? 0 : 64 * 1024;
      const w = writerProcess(dir, salt, `r${round}`, 0, padding);
      const closed = new Promise((r) => w.child.once("close", r));
      await w.ackedAtLeast(1 + Math.floor(random() * 30));
      expect(w.child.exitCode, "the writer died on its own").toBeNull();
      // Kill at a random moment after the wanted number of acks: mid-write, mid-fsync or idle.
      await new Promise((r) => setTimeout(r, random() * 15));
      w.child.kill("SIGKILL");
      await closed;
      for (const name of w.acked()) acked.add(name);

      const log = await readLog(dir); // throws if a line other than the last is damaged
      const lost = [...acked].filter((n) => !log.state.has(n));
      expect(lost, `round ${round}`).toEqual([]);
      for (const name of [...acked].slice(-3)) {
        expect(openSecret(log.state.get(name)?.v as string, ring).startsWith(`value-of-${name}`)).toBe(true);
      }
      // The store opens after every kill, and reads every acknowledged write.
      const store = await FileStore.open({ dataDir: dir, keys: ring });
      for (const name of [...acked].slice(-3)) {
        expect((await store.get(name))?.value.startsWith(`value-of-${name}`)).toBe(true);
      }
      await store.close();
    }
    expect(acked.size).toBeGreaterThan(rounds);
    // The next write truncates a torn tail; an open cleans up what the killed writers left, once a
    // minute old (a younger file may be a live writer's in another pid namespace).
    const leftovers = async () => (await readdir(dir)).filter((f) => f.endsWith(".tmp") || f.includes(".lock."));
    const past = new Date(Date.now() - 120_000);
    for (const file of await leftovers()) await utimes(join(dir, file), past, past);
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    await store.put("AFTER", "the kills");
    expect((await readLog(dir)).tail).toBe("none");
    expect(await leftovers()).toEqual([]);
    expect((await store.names()).length).toBeGreaterThanOrEqual(acked.size + 1);
    await store.close();
  }, 240_000); // 20 child processes killed and reopened: 8 s alone, 83 s seen beside busy CPUs

  it("ignores the torn line of a writer killed in the middle of its write(), and the next writer truncates it", async () => {
    const dir = await tempDir();
    const salt = `torn-${randomBytesSeeded(8).toString("hex")}`;
    const ring = new KeyRing(salt);
    let torn = false;
    const acked: string[] = [];
    for (let attempt = 0; attempt < 5 && !torn; attempt++) {
      // Four 4 MiB values a batch: a line of about 22 MB, which takes the kernel a while to copy.
      const w = writerProcess(dir, salt, `t${attempt}`, 0, 4 * 1024 * 1024);
      const closed = new Promise((r) => w.child.once("close", r));
      await w.ackedAtLeast(4);
      const before = statSync(logPath(dir)).size;
      // Spin until the next batch starts to land, then kill at once: mid-write.
      const deadline = Date.now() + 20_000;
      while (statSync(logPath(dir)).size === before && Date.now() < deadline);
      w.child.kill("SIGKILL");
      await closed;
      acked.push(...w.acked());
      const log = await readLog(dir);
      torn = log.tail !== "none";
      for (const name of acked) expect(log.state.has(name), name).toBe(true);
    }
    expect(torn, "a kill landed inside a write() in one of 5 attempts").toBe(true);
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    for (const name of acked) expect((await store.get(name))?.value.startsWith(`value-of-${name}`)).toBe(true);
    expect(await store.put("AFTER", "the kill")).toBe("created");
    const log = await readLog(dir);
    expect(log.tail).toBe("none");
    for (const name of [...acked, "AFTER"]) expect(log.state.has(name), name).toBe(true);
    // Besides those, only whole batches the writers wrote but were killed before acknowledging.
    for (const name of log.state.keys()) expect(name).toMatch(/^(AFTER|t\d+-\d+)$/);
    await store.close();
  }, 90_000); // a first attempt writes about 22 MB: 10 s alone, 20 s seen beside busy CPUs

  it("loses nothing when a compaction meets a full disk partway through a write", async () => {
    const dir = await tempDir();
    const salt = `full-${randomBytesSeeded(8).toString("hex")}`;
    const store = await FileStore.open({ dataDir: dir, keys: new KeyRing(salt) });
    const names = ["A", "B", "C", "D", "E"];
    const valueAt = (name: string, round: number) => `${name}-${round}-${"v".repeat(60 * 1024)}`;
    for (let round = 0; round < 8; round++) {
      await Promise.all(names.map((name) => store.put(name, valueAt(name, round))));
    }
    await store.close();
    // A file may grow to 200 000 bytes: the compacted log (about 400 kB) is cut off inside its
    // second line, where write() takes part of it and says so, and the next write() fails (EFBIG).
    const run = await runProcess("prlimit", ["--fsize=200000", process.execPath, compactor, dir, salt], {
      env: process.env as Record<string, string>,
    });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^refused \S+\nholds 5\n$/);
    const reopened = await FileStore.open({ dataDir: dir, keys: new KeyRing(salt) });
    for (const name of names) expect((await reopened.get(name))?.value).toBe(valueAt(name, 7));
    await reopened.close();
  });
});
