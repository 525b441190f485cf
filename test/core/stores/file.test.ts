import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { build } from "esbuild";
import { beforeAll, describe, expect, it } from "vitest";
import { KeyRing, openSecret, sealSecret } from "../../../core/src/crypto";
import { BackendUnavailable, DecryptFailed } from "../../../core/src/errors";
import { FileStore } from "../../../core/src/stores/file";
import { secretValue, tempDir } from "../../helpers";

const keys = new KeyRing("file-store-test-salt");

async function open(dataDir: string, ring = keys, lockTimeoutMs?: number) {
  return FileStore.open({ dataDir, keys: ring, lockTimeoutMs });
}

/** The pid of a process that has exited. */
function deadPid(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["-e", "0"]);
    child.on("exit", () => resolve(child.pid as number));
  });
}

async function documentOf(dataDir: string) {
  return JSON.parse(await readFile(join(dataDir, "secrets.json"), "utf8")) as {
    secrets: Record<string, { ciphertext: string; created_at: string; updated_at: string; description?: string }>;
  };
}

describe("FileStore", () => {
  it("keeps every value sealed, in a 0600 file in a 0700 dir, and survives a reopen", async () => {
    const dir = join(await tempDir(), "data");
    const store = await open(dir);
    const values = Array.from({ length: 5 }, (_, i) => secretValue(`v${i}`));
    for (const [i, v] of values.entries())
      expect(await store.put(`N${i}`, v, { description: "d" })).toEqual({ created: true });
    expect(await store.put("N0", values[0] as string, {})).toEqual({ created: false });

    const bytes = await readFile(join(dir, "secrets.json"), "utf8");
    for (const v of values) expect(bytes).not.toContain(v);
    expect((await stat(join(dir, "secrets.json"))).mode & 0o777).toBe(0o600);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const doc = await documentOf(dir);
    expect(openSecret(doc.secrets.N1?.ciphertext as string, keys)).toBe(values[1]);
    expect(doc.secrets.N0?.description).toBe("d");

    const reopened = await open(dir);
    for (const [i, v] of values.entries()) expect(await reopened.get(`N${i}`)).toBe(v);
    expect(await reopened.names()).toEqual(["N0", "N1", "N2", "N3", "N4"]);
    await reopened.delete("N0");
    await reopened.delete("N0");
    expect(await (await open(dir)).get("N0")).toBeUndefined();
  });

  it("lands 200 concurrent puts of distinct names", async () => {
    const dir = await tempDir();
    const store = await open(dir);
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => store.put(`K${i}`, `v${i}`, {})));
    expect(results.every((r) => r.created)).toBe(true);
    const reopened = await open(dir);
    expect((await reopened.names()).length).toBe(200);
    for (let i = 0; i < 200; i += 37) expect(await reopened.get(`K${i}`)).toBe(`v${i}`);
  });

  it("loses nothing when two stores (as two processes would) write the same file", async () => {
    const dir = await tempDir();
    const a = await open(dir);
    const b = await open(dir);
    await Promise.all(Array.from({ length: 40 }, (_, i) => ((i % 2 ? a : b) as FileStore).put(`P${i}`, `v${i}`, {})));
    expect((await (await open(dir)).names()).length).toBe(40);
    // Each sees the other's writes without a restart.
    expect(await a.get("P0")).toBe("v0");
    expect(await b.get("P1")).toBe("v1");
  });

  it("uses names that are also Object.prototype keys safely", async () => {
    const store = await open(await tempDir());
    expect(await store.get("constructor")).toBeUndefined();
    await store.put("constructor", "c", {});
    await store.put("hasOwnProperty", "h", {});
    expect(await store.get("constructor")).toBe("c");
    expect(await store.get("toString")).toBeUndefined();
  });

  it("refuses a corrupt document and leaves it untouched", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "secrets.json"), '{"format": "something else"');
    await expect(open(dir)).rejects.toThrow(/not valid JSON; it was left untouched/);
    await writeFile(join(dir, "secrets.json"), '{"format": "something else"}');
    await expect(open(dir)).rejects.toBeInstanceOf(BackendUnavailable);
    expect(await readFile(join(dir, "secrets.json"), "utf8")).toBe('{"format": "something else"}');
  });

  it("takes over the lock of a dead process, and waits for a live one", async () => {
    const dir = await tempDir();
    const store = await open(dir, keys, 300);
    await writeFile(join(dir, "secrets.json.lock"), `${await deadPid()} abc`);
    await store.put("A", "a", {});
    expect(await readdir(dir)).not.toContain("secrets.json.lock");

    await writeFile(join(dir, "secrets.json.lock"), `${process.pid} abc`);
    await expect(store.put("B", "b", {})).rejects.toThrow(/locked by another process/);
    expect(await store.get("B")).toBeUndefined();
  });

  it("removes temp files that killed writers left behind", async () => {
    const dir = await tempDir();
    await open(dir);
    const dead = await deadPid();
    const leftovers = [
      `secrets.json.${dead}.abcdef.tmp`,
      `secrets.json.lock.${dead}.abcdef`,
      `secrets.json.lock.stale.${dead}.abcdef`,
    ];
    for (const file of leftovers) await writeFile(join(dir, file), "left by a killed writer");
    await writeFile(join(dir, `secrets.json.${process.pid}.abcdef.tmp`), "in flight");
    await open(dir);
    const files = await readdir(dir);
    for (const file of leftovers) expect(files).not.toContain(file);
    expect(files).toContain(`secrets.json.${process.pid}.abcdef.tmp`);
  });

  describe("reencrypt", () => {
    it("moves every entry to the current salt key in one write", async () => {
      const dir = await tempDir();
      const oldKeys = new KeyRing("old-salt");
      const old = await open(dir, oldKeys);
      for (let i = 0; i < 30; i++) await old.put(`R${i}`, `v${i}`, {});
      const rotated = new KeyRing("new-salt", ["old-salt"], "aes-256-gcm");
      const progress: number[] = [];
      const store = await open(dir, rotated);
      expect(await store.reencrypt((done) => progress.push(done))).toBe(30);
      expect(progress.at(-1)).toBe(30);
      const onlyNew = new KeyRing("new-salt");
      const doc = await documentOf(dir);
      expect(Object.keys(doc.secrets)).toHaveLength(30);
      for (let i = 0; i < 30; i++) {
        const ciphertext = doc.secrets[`R${i}`]?.ciphertext as string;
        expect(ciphertext.startsWith("v3:gcm:")).toBe(true);
        expect(openSecret(ciphertext, onlyNew)).toBe(`v${i}`);
      }
    });

    it("writes nothing when an entry does not open, and names it", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("GOOD", "g", {});
      const doc = await documentOf(dir);
      (doc.secrets as Record<string, unknown>).STRANGER = {
        ciphertext: sealSecret("x", new KeyRing("unknown-key")),
        created_at: "2026-01-01T00:00:00.000Z",
        updated_at: "2026-01-01T00:00:00.000Z",
      };
      await writeFile(
        join(dir, "secrets.json"),
        JSON.stringify({ format: "llm-secrets/file-store", version: 1, ...doc }),
      );
      const before = await readFile(join(dir, "secrets.json"));
      const reopened = await open(dir);
      await expect(reopened.reencrypt()).rejects.toThrow(/entry STRANGER/);
      await expect(reopened.reencrypt()).rejects.toBeInstanceOf(DecryptFailed);
      expect(await readFile(join(dir, "secrets.json"))).toEqual(before);
    });
  });
});

describe("FileStore across processes", () => {
  let writer: string;

  beforeAll(async () => {
    writer = join(await tempDir(), "file-writer.mjs");
    await build({
      entryPoints: [join(import.meta.dirname, "file-writer.ts")],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile: writer,
      logLevel: "warning",
      banner: { js: 'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);' },
    });
  });

  function writerProcess(dir: string, salt: string, prefix: string, count?: number) {
    const child = spawn(process.execPath, [writer, dir, salt, prefix, ...(count ? [String(count)] : [])], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    const done = new Promise<{ code: number | null; acked: string[] }>((resolve) =>
      child.on("close", (code) =>
        resolve({
          code,
          acked: out
            .split("\n")
            .filter((l) => l.startsWith("ack "))
            .map((l) => l.slice(4)),
        }),
      ),
    );
    return { child, done };
  }

  it("loses no acknowledged write when three processes write at once", async () => {
    const salt = `multi-${randomBytes(8).toString("hex")}`;
    for (let round = 0; round < 4; round++) {
      const dir = await tempDir();
      const writers = ["a", "b", "c"].map((p) => writerProcess(dir, salt, `${p}${round}`, 120));
      const results = await Promise.all(writers.map((w) => w.done));
      expect(results.map((r) => r.code)).toEqual([0, 0, 0]);
      const names = new Set(Object.keys((await documentOf(dir)).secrets));
      const lost = results.flatMap((r) => r.acked).filter((n) => !names.has(n));
      expect(lost, `round ${round}`).toEqual([]);
      expect(names.size).toBe(360);
      expect((await readdir(dir)).filter((f) => f.includes(".lock"))).toEqual([]);
    }
  });

  it("reads back what it just wrote while another process keeps writing", async () => {
    const salt = `rw-${randomBytes(8).toString("hex")}`;
    const dir = await tempDir();
    const other = writerProcess(dir, salt, "other");
    try {
      const store = await open(dir, new KeyRing(salt));
      for (let i = 0; i < 300; i++) {
        await store.put("MINE", `mine-${i}`, {});
        expect(await store.get("MINE")).toBe(`mine-${i}`);
      }
    } finally {
      other.child.kill("SIGKILL");
      await other.done;
    }
  });

  it("holds every acknowledged write after each of many kills, and always parses", async () => {
    const dir = await tempDir();
    const salt = `crash-${randomBytes(8).toString("hex")}`;
    const ring = new KeyRing(salt);
    const acked = new Set<string>();
    const rounds = 20;
    for (let round = 0; round < rounds; round++) {
      const child = spawn(process.execPath, [writer, dir, salt, `r${round}`], { stdio: ["ignore", "pipe", "inherit"] });
      const closed = new Promise((r) => child.once("close", r));
      let out = "";
      const wanted = 1 + Math.floor(Math.random() * 40);
      await new Promise<void>((resolve) => {
        child.stdout.on("data", (d) => {
          out += d;
          if (out.split("\n").length > wanted) resolve();
        });
        child.on("exit", () => resolve());
      });
      expect(child.exitCode, "the writer died on its own").toBeNull();
      // Kill at a random moment after the wanted number of acks: mid-write, mid-fsync or idle.
      await new Promise((r) => setTimeout(r, Math.random() * 15));
      child.kill("SIGKILL");
      await closed;
      for (const line of out.split("\n")) if (line.startsWith("ack ")) acked.add(line.slice(4));

      const doc = await documentOf(dir); // throws if the document is not whole JSON
      const names = new Set(Object.keys(doc.secrets));
      const lost = [...acked].filter((n) => !names.has(n));
      expect(lost, `round ${round}`).toEqual([]);
      for (const name of [...acked].slice(-5)) {
        expect(openSecret(doc.secrets[name]?.ciphertext as string, ring)).toBe(`value-of-${name}`);
      }
    }
    expect(acked.size).toBeGreaterThan(rounds);
    // The next open cleans up what the killed writers left.
    const store = await open(dir, ring);
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect((await store.names()).length).toBeGreaterThanOrEqual(acked.size);
  });
});
