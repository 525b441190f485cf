import { appendFileSync, type FSWatcher, watch, writeFileSync } from "node:fs";
import { appendFile, chmod, cp, mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { KeyRing, openSecret, sealSecret } from "../../../core/src/crypto";
import { ConfigError } from "../../../core/src/errors";
import { createLogger } from "../../../core/src/log";
import { FileStore, fileStore, sizeOf, TOMBSTONE_LIFETIME_MS, type WatchDir } from "../../../core/src/stores/file";
import { ownFileName, PID_SPACE } from "../../../core/src/stores/file-lock";
import { frame, keyCheckOf } from "../../../core/src/stores/file-log";
import { codeOf, deadPid, livePid, secretValue, tempDir, until } from "../../helpers";
import { logPath, readLog, rewriteLog } from "./file-log-reader";

const keys = new KeyRing("file-store-test-salt");
const DAY = 24 * 60 * 60 * 1000;

function open(dataDir: string, options: { keys?: KeyRing; lockTimeoutMs?: number; now?: () => number } = {}) {
  return FileStore.open({ dataDir, keys: options.keys ?? keys, ...options });
}

/** A store whose clock runs `intrudeOnce`'s callback at its next reading (while a batch is decided). */
async function openIntruded(dataDir: string) {
  let intrude: (() => void) | undefined;
  const store = await open(dataDir, {
    now: () => {
      const run = intrude;
      intrude = undefined;
      run?.();
      return Date.now();
    },
  });
  return { store, intrudeOnce: (fn: () => void) => (intrude = fn) };
}

describe("FileStore", () => {
  it("opens a log holding an event applied over a record dated far ahead (as the rule before allowed), and refuses such an event itself alone", async () => {
    // Before: a reader replaying the log refused that line as an event decided now would be, so a
    // store written under the earlier rule no longer opened, by anything; and one event refused in
    // a batch failed the batch's other changes (a direct write among them), writing none.
    const dir = join(await tempDir(), "data");
    const fast = await FileStore.open({ dataDir: dir, keys, now: () => Date.now() + 3_600_000 });
    await fast.put("F", "written by an instance an hour fast");
    await fast.close();
    // The line the earlier rule wrote: a delete event, now, over F's record an hour ahead.
    const at = Date.now();
    const { lines } = await readLog(dir);
    const seq = Math.max(...lines.flatMap((l) => ("changes" in l ? l.changes.map((c) => c.s) : [])));
    await appendFile(logPath(dir), frame({ changes: [{ s: seq + 1, n: "F", t: at, i: "evt-old-rule", w: at }] }));
    const store = await FileStore.open({ dataDir: dir, keys });
    expect(await store.get("F")).toBeUndefined();

    await store.close();
    const again = await FileStore.open({ dataDir: dir, keys, now: () => Date.now() + 3_600_000 });
    await again.put("G", "an hour ahead");
    await again.close();
    const batched = await FileStore.open({ dataDir: dir, keys });
    const first = batched.put("A", "a"); // a flush begins; the next two wait and go in one batch
    const event = batched.delete("G", { ifNewerThan: { at: Date.now(), id: "evt-1" } }).then(
      (o) => o,
      (e: { code?: string }) => e.code,
    );
    const direct = batched.put("OTHER", "an admin's direct write");
    expect([await first, await event, await direct]).toEqual(["created", "backend_unavailable", "created"]);
    expect((await batched.get("OTHER"))?.value).toBe("an admin's direct write");
    expect((await batched.get("G"))?.value).toBe("an hour ahead");
    await batched.close();
  });

  it("keeps every value sealed, in a 0600 file in a 0700 dir, and survives a reopen", async () => {
    const dir = join(await tempDir(), "data");
    const store = await open(dir);
    const values = Array.from({ length: 5 }, (_, i) => secretValue(`v${i}`));
    for (const [i, v] of values.entries()) {
      expect(await store.put(`N${i}`, v, { meta: { description: "d", tags: { team: "t" } } })).toBe("created");
    }
    expect(await store.put("N0", values[0] as string)).toBe("updated");

    const bytes = await readFile(logPath(dir), "utf8");
    for (const v of values) expect(bytes).not.toContain(v);
    expect((await stat(logPath(dir))).mode & 0o777).toBe(0o600);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const { state } = await readLog(dir);
    expect(openSecret(state.get("N1")?.v as string, keys)).toBe(values[1]);
    expect(state.get("N0")?.d).toBe("d");
    await store.close();

    const reopened = await open(dir);
    for (const [i, v] of values.entries()) expect((await reopened.get(`N${i}`))?.value).toBe(v);
    const record = await reopened.get("N3");
    expect(record?.tags).toEqual({ team: "t" });
    expect(record?.version).toBe(String(state.get("N3")?.s));
    expect(record?.updatedAt?.getTime()).toBe(state.get("N3")?.t);
    expect(await reopened.names()).toEqual(["N0", "N1", "N2", "N3", "N4"]);
    expect(await reopened.delete("N0")).toBe("deleted");
    expect(await reopened.delete("N0")).toBe("absent");
    await reopened.close();
    const third = await open(dir);
    expect(await third.get("N0")).toBeUndefined();
    expect(await third.names()).toEqual(["N1", "N2", "N3", "N4"]);
    expect(third.location).toBe(dir);
  });

  it("lands 200 concurrent puts of distinct names", async () => {
    const dir = await tempDir();
    const store = await open(dir);
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => store.put(`K${i}`, `v${i}`)));
    expect(results.every((r) => r === "created")).toBe(true);
    // Group commit: far fewer lines than puts.
    expect((await readLog(dir)).lines.length).toBeLessThan(20);
    const reopened = await open(dir);
    expect((await reopened.names()).length).toBe(200);
    for (let i = 0; i < 200; i += 37) expect((await reopened.get(`K${i}`))?.value).toBe(`v${i}`);
  });

  it("decides each change of one group commit against those before it", async () => {
    const dir = await tempDir();
    const store = await open(dir);
    // The first put goes out alone; the rest queue meanwhile and go out together, in order.
    const outcomes = await Promise.all([
      store.put("WARM", "w"),
      store.put("X", "1"),
      store.put("X", "2"),
      store.delete("X"),
      store.delete("X"),
      store.put("X", "3"),
      store.put("E", "at-100", { ifNewerThan: { at: 100 } }),
      store.put("E", "at-50", { ifNewerThan: { at: 50 } }),
    ]);
    expect(outcomes).toEqual([
      "created",
      "created",
      "updated",
      "deleted",
      "absent",
      "created",
      "created",
      "superseded",
    ]);
    expect((await readLog(dir)).lines).toHaveLength(3);
    expect((await store.get("X"))?.value).toBe("3");
    expect((await store.get("E"))?.value).toBe("at-100");
  });

  it("appends a write in bytes that do not grow with the number of entries", async () => {
    const dir = await tempDir();
    const store = await open(dir);
    const appended = async () => {
      const before = (await stat(logPath(dir))).size;
      await store.put("PROBE", "the-same-value");
      return (await stat(logPath(dir))).size - before;
    };
    const small = await appended();
    await Promise.all(Array.from({ length: 5000 }, (_, i) => store.put(`FILL_${i}`, `value-${i}`)));
    const large = await appended();
    expect(large).toBeLessThan(small + 16); // change numbers and times may be a few digits longer
    expect(large).toBeLessThan(400);
  });

  it("loses nothing when two stores (as two processes would) write the same dir, and each reads the other's writes", async () => {
    const dir = await tempDir();
    const a = await open(dir);
    const b = await open(dir);
    await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).put(`P${i}`, `v${i}`)));
    expect((await (await open(dir)).names()).length).toBe(40);
    expect((await a.get("P0"))?.value).toBe("v0");
    expect((await b.get("P1"))?.value).toBe("v1");
    // Decisions are made against the other's writes: a created by b is updated by a.
    expect(await b.put("SHARED", "from-b")).toBe("created");
    expect(await a.put("SHARED", "from-a")).toBe("updated");
    expect(await b.delete("SHARED")).toBe("deleted");
    expect(await a.get("SHARED")).toBeUndefined();
    expect(await a.put("EV", "x", { ifNewerThan: { at: 2000 } })).toBe("created");
    expect(await b.put("EV", "older", { ifNewerThan: { at: 1000 } })).toBe("superseded");
  });

  it("uses names that are also Object.prototype keys safely", async () => {
    const store = await open(await tempDir());
    expect(await store.get("constructor")).toBeUndefined();
    await store.put("constructor", "c");
    await store.put("hasOwnProperty", "h");
    expect((await store.get("constructor"))?.value).toBe("c");
    expect(await store.get("toString")).toBeUndefined();
  });

  it("keeps description and tags: given, else previous, else the creation defaults", async () => {
    const dir = await tempDir();
    const store = await open(dir);
    const whenCreated = { description: "created", tags: { from: "settings" } };
    await store.put("M", "1", { meta: { whenCreated } });
    await store.put("M", "2", { meta: { whenCreated: { description: "other", tags: { x: "y" } } } });
    expect((await readLog(dir)).state.get("M")).toMatchObject({ d: "created", g: { from: "settings" } });
    await store.put("M", "3", { meta: { description: "given", tags: { owner: "me" } } });
    expect((await readLog(dir)).state.get("M")).toMatchObject({ d: "given", g: { owner: "me" } });
    expect((await store.get("M"))?.tags).toEqual({ owner: "me" });
    await store.delete("M");
    await store.put("M", "4", { meta: { whenCreated } });
    expect((await store.get("M"))?.tags).toEqual({ from: "settings" });
  });

  describe("keys", () => {
    it("stops the start when the data dir was sealed with another key, and says which settings to use", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("A", "a");
      await store.close();
      const wrong = open(dir, { keys: new KeyRing("another-salt") });
      await expect(wrong).rejects.toBeInstanceOf(ConfigError);
      await expect(wrong).rejects.toThrow(/sealed with another key.*LITELLM_SALT_KEY.*LLM_SECRETS_PREVIOUS_SALT_KEYS/);
      // The right key among the previous ones opens it; so does the right key.
      const rotated = await open(dir, { keys: new KeyRing("another-salt", ["file-store-test-salt"]) });
      expect((await rotated.get("A"))?.value).toBe("a");
      const again = await open(dir);
      expect((await again.get("A"))?.value).toBe("a");
      await again.close();
    });

    it("records the check value of a new current key with its first write", async () => {
      const dir = await tempDir();
      await (await open(dir)).put("OLD", "o");
      const rotated = new KeyRing("new-salt", ["file-store-test-salt"]);
      const store = await open(dir, { keys: rotated });
      await store.put("NEW", "n");
      const { header, lines } = await readLog(dir);
      const recorded = [...header.keys, ...lines.flatMap((l) => ("changes" in l ? (l.keys ?? []) : []))];
      expect(recorded.sort()).toEqual([keyCheckOf(keys.current), keyCheckOf(rotated.current)].sort());
      // The old key alone no longer opens everything: the start says so, not a later request.
      await expect(open(dir)).rejects.toBeInstanceOf(ConfigError);
      await expect(open(dir, { keys: new KeyRing("new-salt") })).rejects.toBeInstanceOf(ConfigError);
      expect((await (await open(dir, { keys: rotated })).get("OLD"))?.value).toBe("o");
    });

    it("refuses reads and writes once another process re-sealed the store under a key it lacks", async () => {
      const dir = await tempDir();
      const server = await open(dir);
      await server.put("A", "a");
      const cli = await open(dir, { keys: new KeyRing("next-salt", ["file-store-test-salt"]) });
      expect(await cli.reencrypt()).toBe(1);
      expect(await codeOf(server.get("A"))).toBe("store_corrupt");
      await expect(server.get("A")).rejects.toThrow(/sealed with a salt key this process does not have/);
      expect(await codeOf(server.put("B", "b"))).toBe("store_corrupt");
      // A name it does not hold too (what /ready reads): it cannot tell, so it says so, not "absent".
      expect(await codeOf(server.get("NEVER_WRITTEN"))).toBe("store_corrupt");
      expect((await cli.get("A"))?.value).toBe("a");
      expect(await cli.get("B")).toBeUndefined();
      expect((await readLog(dir)).header.keys).toEqual([keyCheckOf(new KeyRing("next-salt").current)]);
    });

    it("refuses writes once another process wrote under a new key it lacks, without a reopen", async () => {
      const dir = await tempDir();
      const server = await open(dir);
      await server.put("A", "a");
      const rotated = new KeyRing("rotated-salt", ["file-store-test-salt"]);
      const cli = await open(dir, { keys: rotated });
      expect(await cli.put("NEW", "n")).toBe("created"); // appends the new key's check value
      const before = await readFile(logPath(dir));
      expect(await codeOf(server.put("B", "b"))).toBe("store_corrupt");
      await expect(server.put("B", "b")).rejects.toThrow(/sealed with a salt key this process does not have/);
      expect(await codeOf(server.get("NEW"))).toBe("store_corrupt");
      expect(await readFile(logPath(dir))).toEqual(before);
      // Restarted with the new key, it writes again.
      const restarted = await open(dir, { keys: rotated });
      expect(await restarted.put("B", "b")).toBe("created");
      expect((await cli.get("B"))?.value).toBe("b");
    });

    it("answers store_corrupt for an entry that does not open, and serves the others", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("GOOD", "g");
      await store.put("TAMPERED", "t");
      await store.close();
      await rewriteLog(dir, (record) => {
        if (!("changes" in record)) return record;
        return {
          ...record,
          changes: record.changes.map((c) =>
            c.n === "TAMPERED" ? { ...c, v: sealSecret("x", new KeyRing("a-key-the-store-never-had")) } : c,
          ),
        };
      });
      const reopened = await open(dir);
      expect(await codeOf(reopened.get("TAMPERED"))).toBe("store_corrupt");
      await expect(reopened.get("TAMPERED")).rejects.toThrow(/entry TAMPERED does not open/);
      expect((await reopened.get("GOOD"))?.value).toBe("g");
    });
  });

  describe("crash safety", () => {
    it("ignores a torn last line, and the next write truncates it", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("A", "a");
      await store.put("B", "b");
      await store.close();
      const whole = await readFile(logPath(dir));
      // What a writer killed in the middle of its write() leaves: part of a line, no newline.
      await appendFile(logPath(dir), '3f2a1b0c {"changes":[{"s":3,"n":"C","t":1,"w":1,"v":"abc');
      const reopened = await open(dir);
      expect((await reopened.get("A"))?.value).toBe("a");
      expect(await reopened.get("C")).toBeUndefined();
      expect(await reopened.names()).toEqual(["A", "B"]);
      expect(await reopened.put("D", "d")).toBe("created");
      const log = await readLog(dir);
      expect(log.tail).toBe("none");
      expect(log.bytes.subarray(0, whole.length)).toEqual(whole);
      expect([...log.state.keys()].sort()).toEqual(["A", "B", "D"]);
      expect((await (await open(dir)).get("D"))?.value).toBe("d");
    });

    it("ignores a last line of zeros (a power loss), and refuses a damaged line that is not the last", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("A", "a");
      await store.put("B", "b");
      await store.close();
      const good = await readFile(logPath(dir));
      await writeFile(logPath(dir), Buffer.concat([good, Buffer.alloc(300), Buffer.from("\n")]));
      const reopened = await open(dir);
      expect((await reopened.get("B"))?.value).toBe("b");
      await reopened.put("C", "c");
      expect((await readLog(dir)).tail).toBe("none");
      await reopened.close();

      // A flipped byte inside the first batch: not a crash's doing.
      const bytes = await readFile(logPath(dir));
      const firstBatch = bytes.indexOf("\n") + 1;
      const damaged = Buffer.from(bytes);
      damaged[firstBatch + 30] = (damaged[firstBatch + 30] as number) ^ 1;
      await writeFile(logPath(dir), damaged);
      expect(await codeOf(open(dir))).toBe("store_corrupt");
      await expect(open(dir)).rejects.toThrow(/damaged at byte \d+ .*left untouched/);
      expect(await readFile(logPath(dir))).toEqual(damaged);
    });
  });

  describe("compaction and tombstones", () => {
    it("compacts a log past twice what it holds, keeping every value, and another store follows it", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      const other = await open(dir);
      const seen: string[] = [];
      other.watch((names) => seen.push(...names));
      const big = "x".repeat(64 * 1024);
      for (let round = 0; round < 40; round++) {
        await Promise.all(Array.from({ length: 4 }, (_, i) => store.put(`BIG${i}`, `${round}-${big}`)));
      }
      // 40 rounds of 4 × 64 KiB (about 12 MiB sealed) were written; the log holds about one round.
      expect((await stat(logPath(dir))).size).toBeLessThan(3 * 4 * 90 * 1024);
      for (let i = 0; i < 4; i++) expect((await other.get(`BIG${i}`))?.value).toBe(`39-${big}`);
      await until("four reports", () => seen.length >= 4);
      expect(new Set(seen)).toEqual(new Set(["BIG0", "BIG1", "BIG2", "BIG3"]));
      const reopened = await open(dir);
      expect(await reopened.names()).toEqual(["BIG0", "BIG1", "BIG2", "BIG3"]);
      expect((await reopened.get("BIG2"))?.value).toBe(`39-${big}`);
      await other.close();
    });

    it("counts what the state takes in bytes (wide characters, escapes): small writes to a large state append", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      // 2000 CJK characters are 6000 bytes of UTF-8; a quote or a control character is escaped in JSON.
      const description = `${"密".repeat(1990)}"\n\t"\u0001`;
      await Promise.all(
        Array.from({ length: 200 }, (_, i) => store.put(`WIDE${i}`, `v${i}`, { meta: { description } })),
      );
      expect((await stat(logPath(dir))).size).toBeGreaterThan(1024 * 1024);
      for (let i = 0; i < 20; i++) await store.put("SMALL", `s${i}`);
      await store.close(); // after any compaction the puts queued
      // Each small put is still its own line: none of them rewrote the log.
      const { lines, state } = await readLog(dir);
      const small = lines.filter((l) => "changes" in l && l.changes.some((c) => c.n === "SMALL"));
      expect(small).toHaveLength(20);
      expect(state.size).toBe(201);
    });

    it("sizes a change as its JSON takes in UTF-8, escapes and wide characters counted", () => {
      const strings = ["", "abc", "密密", 'a"b\\c\n\t\u0001', "😀x", "\ud800", "\u2028é", "x".repeat(100)];
      for (const a of strings) {
        for (const b of strings) {
          for (const g of [undefined, {}, { [a]: b }, { a: b, [b]: a, z: "" }]) {
            const c = { s: 12345, n: a, t: 1.5e12 + 0.5, w: 7, ...(b && { i: b, v: b, d: a, c: 99 }), ...(g && { g }) };
            expect(sizeOf(c)).toBe(Buffer.byteLength(JSON.stringify(c)) + 1);
          }
        }
      }
    });

    it("compacts at open when the log is past twice its state, and still opens when the lock is busy", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("BIG", "x".repeat(64 * 1024));
      await store.close();
      // Twenty copies of the same change: what a process that died before compacting leaves.
      const { bytes } = await readLog(dir);
      const headerEnd = bytes.indexOf("\n") + 1;
      const line = bytes.subarray(headerEnd);
      await writeFile(logPath(dir), Buffer.concat([bytes, ...Array.from({ length: 20 }, () => line)]));
      const grown = (await stat(logPath(dir))).size;
      expect(grown).toBeGreaterThan(1024 * 1024);

      await writeFile(join(dir, "secrets.log.lock"), `${livePid()} held`);
      const logs: string[] = [];
      const busy = await FileStore.open({
        dataDir: dir,
        keys,
        lockTimeoutMs: 200,
        log: createLogger((l) => logs.push(l)),
      });
      expect((await busy.get("BIG"))?.value.length).toBe(64 * 1024);
      expect((await stat(logPath(dir))).size).toBe(grown);
      expect(logs.join("")).toMatch(/compaction at open failed.*backend_unavailable/);
      await busy.close();
      await rm(join(dir, "secrets.log.lock"));

      const reopened = await open(dir);
      expect((await stat(logPath(dir))).size).toBeLessThan(grown / 10);
      expect((await reopened.get("BIG"))?.value.length).toBe(64 * 1024);
    });

    it("a read in the turn of a read that found the log damaged fails too, not answered from the index as it was", async () => {
      // Before: the turn's first read looked, failed (store_corrupt), and the next read of that turn
      // (a listing's or resolve's batch) answered from what was read before, as if all were well.
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("A", "a");
      await new Promise((r) => setImmediate(r));
      await appendFile(logPath(dir), "this line is not a log entry\n");
      const outcome = (read: Promise<unknown>) =>
        read.then(
          (r) => (r as { value?: string } | undefined)?.value,
          (err: { code?: string }) => err.code,
        );
      expect([await outcome(store.get("A")), await outcome(store.get("A"))]).toEqual([
        "store_corrupt",
        "store_corrupt",
      ]);
      await new Promise((r) => setImmediate(r));
      expect(await outcome(store.get("A"))).toBe("store_corrupt");
      await store.close();
    });

    it("a rewrite puts at most 8 MiB on a line: large values are split across lines, all there after it", async () => {
      // Before: 512 changes a line whatever their size; 512 values near the 1 MiB limit made a line
      // longer than V8's longest string, and every reencrypt and compaction of such a store failed.
      const dir = await tempDir();
      const store = await open(dir);
      const value = (i: number) => `${i}-${"v".repeat(400 * 1024)}`;
      await Promise.all(Array.from({ length: 30 }, (_, i) => store.put(`BIG_${i}`, value(i))));
      await store.compact();
      const { lines, bytes } = await readLog(dir);
      const snapshot = lines.slice(1);
      expect(snapshot.length).toBeGreaterThanOrEqual(2);
      const longest = Math.max(
        ...bytes
          .toString("latin1")
          .split("\n")
          .map((l) => l.length),
      );
      expect(longest).toBeLessThanOrEqual(8 * 1024 * 1024 + 1024);
      await store.close();
      const reopened = await open(dir);
      for (let i = 0; i < 30; i++) expect((await reopened.get(`BIG_${i}`))?.value).toBe(value(i));
      await reopened.close();
    });

    it("keeps a tombstone 14 days, then a compaction drops it", async () => {
      const dir = await tempDir();
      let now = Date.parse("2026-01-01T00:00:00Z");
      const store = await open(dir, { now: () => now });
      const at = now;
      await store.put("K", "v", { ifNewerThan: { at: at - 1000, id: "evt-1" } });
      expect(await store.delete("K", { ifNewerThan: { at, id: "evt-2" } })).toBe("deleted");
      expect((await readLog(dir)).state.get("K")).toMatchObject({ t: at, w: at });
      expect((await readLog(dir)).state.get("K")?.v).toBeUndefined();

      now += 13 * DAY;
      await store.compact();
      expect((await readLog(dir)).state.has("K")).toBe(true);
      expect(await store.put("K", "redelivered", { ifNewerThan: { at: at - 1000, id: "evt-1" } })).toBe("superseded");

      now = at + TOMBSTONE_LIFETIME_MS + DAY;
      await store.compact();
      expect((await readLog(dir)).state.has("K")).toBe(false);
      await store.close();
      // Forgotten: the old event now applies (the manager refuses events older than 6 days before this).
      const reopened = await open(dir, { now: () => now });
      expect(await reopened.put("K", "late", { ifNewerThan: { at: at - 1000, id: "evt-1" } })).toBe("created");
    });
  });

  describe("locks and leftovers", () => {
    it("takes over the lock of a dead process, and waits for a live one while reads go on", async () => {
      const dir = await tempDir();
      const store = await open(dir, { lockTimeoutMs: 1_000 });
      await store.put("READABLE", "r");
      await writeFile(join(dir, "secrets.log.lock"), `${await deadPid()} abc ${PID_SPACE}`);
      await store.put("A", "a");
      expect(await readdir(dir)).not.toContain("secrets.log.lock");

      await writeFile(join(dir, "secrets.log.lock"), `${livePid()} abc`);
      const blocked = store.put("B", "b");
      let writeSettled = false;
      blocked.then(
        () => (writeSettled = true),
        () => (writeSettled = true),
      );
      // The read is answered while the write still waits for the lock, not after it gives up.
      expect((await store.get("READABLE"))?.value).toBe("r");
      expect(writeSettled).toBe(false);
      expect(await codeOf(blocked)).toBe("backend_unavailable");
      await expect(store.put("B", "b")).rejects.toThrow(
        /locked by another process; if none is running, remove secrets\.log\.lock/,
      );
      expect(await store.get("B")).toBeUndefined();
      await rm(join(dir, "secrets.log.lock"));
      expect(await store.put("B", "b")).toBe("created");
    });

    it("keeps what a writer that lost the lock appended between our read and our write, and decides again", async () => {
      const dir = await tempDir();
      // `now` runs while the batch is decided: the moment between our read of the log and our append.
      const { store, intrudeOnce } = await openIntruded(dir);
      await store.put("A", "a");
      const { state } = await readLog(dir);
      const seq = Math.max(...[...state.values()].map((c) => c.s));
      const at = Date.now();
      const foreign = frame({ changes: [{ s: seq + 1, n: "X", t: at, w: at, c: at, v: sealSecret("theirs", keys) }] });
      intrudeOnce(() => appendFileSync(logPath(dir), foreign));
      expect(await store.put("X", "ours")).toBe("updated"); // decided against their X
      const log = await readLog(dir);
      expect(log.tail).toBe("none");
      expect(log.bytes.includes(foreign)).toBe(true);
      const xs = log.lines.flatMap((l) => ("changes" in l ? l.changes.filter((c) => c.n === "X") : []));
      expect(xs.map((c) => openSecret(c.v as string, keys))).toEqual(["theirs", "ours"]);
      expect(xs[1]?.s).toBeGreaterThan(seq + 1);
      expect((await store.get("X"))?.value).toBe("ours");
      expect((await (await open(dir)).get("X"))?.value).toBe("ours");
    });

    it("does not rename a compacted log over the log once its lock was taken over", async () => {
      const dir = await tempDir();
      const { store, intrudeOnce } = await openIntruded(dir);
      await store.put("A", "a");
      const inode = (await stat(logPath(dir))).ino;
      // Taken over while compacting (the compaction asks `now` for its tombstone cutoff first).
      intrudeOnce(() => writeFileSync(join(dir, "secrets.log.lock"), `${process.pid} another-writer`));
      expect(await codeOf(store.compact())).toBe("backend_unavailable");
      expect((await stat(logPath(dir))).ino).toBe(inode);
      expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
      expect(await readFile(join(dir, "secrets.log.lock"), "utf8")).toBe(`${process.pid} another-writer`);
      await rm(join(dir, "secrets.log.lock"));
      await store.compact();
      expect((await stat(logPath(dir))).ino).not.toBe(inode);
      expect((await store.get("A"))?.value).toBe("a");
    });

    it("removes temp files that killed writers left behind, also ones named with our pid by an earlier process", async () => {
      const dir = await tempDir();
      await (await open(dir)).close();
      const dead = await deadPid();
      const leftovers = [
        `secrets.log.${dead}.abcdef.tmp`,
        `secrets.log.lock.${dead}.abcdef`,
        `secrets.log.lock.stale.${dead}.abcdef`,
        `secrets.json.${dead}.abcdef.tmp`,
        // A container's PID 1 before its restart had our pid: its files look alive by pid alone.
        `secrets.log.${process.pid}.abcdef0123456789.tmp`,
        `secrets.log.lock.${process.pid}.abcdef0123456789`,
        // A taker that died while taking over a lock since gone (a name of that lock's file).
        "secrets.log.lock.taking.0123456789abcdef",
      ];
      const past = new Date(Date.now() - 120_000);
      for (const file of leftovers) {
        await writeFile(join(dir, file), "left by a killed writer");
        await utimes(join(dir, file), past, past);
      }
      // One this process is writing now (another store of it, mid-compaction) stays; so does a young
      // one with our pid and another token: a live process's in another container on the same volume.
      const inFlight = basename(ownFileName(join(dir, "secrets.log"), ".tmp"));
      await writeFile(join(dir, inFlight), "in flight");
      const otherContainer = `secrets.log.${process.pid}.fedcba9876543210.tmp`;
      await writeFile(join(dir, otherContainer), "another container's compaction, under way");
      await open(dir);
      const files = await readdir(dir);
      for (const file of leftovers) expect(files).not.toContain(file);
      expect(files).toContain(inFlight);
      expect(files).toContain(otherContainer);
      // A compaction sweeps them too, once a minute old (a crash-looping container never opens that late).
      const store = await open(dir);
      await writeFile(join(dir, leftovers[0] as string), "left by a killed writer");
      await utimes(join(dir, leftovers[0] as string), past, past);
      await store.compact();
      expect(await readdir(dir)).not.toContain(leftovers[0]);
    });
  });

  describe("the data dir's permissions", () => {
    it("makes a new dir 0700; a group- or world-writable one stops the start; a readable one warns", async () => {
      const base = await tempDir();
      const fresh = join(base, "fresh");
      await (await open(fresh)).close();
      expect((await stat(fresh)).mode & 0o777).toBe(0o700);
      for (const mode of [0o770, 0o707, 0o777]) {
        const dir = join(base, `w${mode.toString(8)}`);
        await mkdir(dir);
        await chmod(dir, mode);
        const err = await open(dir).catch((e: unknown) => e);
        expect(err, mode.toString(8)).toBeInstanceOf(ConfigError);
        expect((err as Error).message).toContain("chmod 700");
        expect(await readdir(dir)).toEqual([]); // nothing written
      }
      const readable = join(base, "r755");
      await mkdir(readable);
      await chmod(readable, 0o755);
      const logs: string[] = [];
      const store = await FileStore.open({ dataDir: readable, keys, log: createLogger((l) => logs.push(l)) });
      expect(await store.put("A", "a")).toBe("created");
      expect(logs.some((l) => l.includes("readable by its group or by everyone") && l.includes('"mode":"755"'))).toBe(
        true,
      );
      await store.close();
    });

    it("a log writable by its group or everyone stops the start: its lines carry a checksum, not a key", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("A", "a");
      await store.close();
      await chmod(logPath(dir), 0o666);
      const err = await open(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain("chmod 600");
      await chmod(logPath(dir), 0o620); // writable by its group alone
      expect(await open(dir).catch((e: unknown) => e)).toBeInstanceOf(ConfigError);
      await chmod(logPath(dir), 0o640); // readable by its group: every value is sealed
      const again = await open(dir);
      expect((await again.get("A"))?.value).toBe("a");
      await again.close();
    });
  });

  describe("typed failures", () => {
    it("answers store_unavailable when the log is gone from under it", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("A", "a");
      await rm(logPath(dir));
      expect(await codeOf(store.get("A"))).toBe("store_unavailable");
      expect(await codeOf(store.put("B", "b"))).toBe("store_unavailable");
      const error = await store.get("A").catch((err: Error) => err);
      expect((error as Error).message).not.toContain(dir);
    });

    it("answers store_unavailable from reencrypt and compact when the data dir is gone or replaced", async () => {
      const dir = join(await tempDir(), "data");
      const store = await open(dir);
      await store.put("A", "a");
      await rm(dir, { recursive: true });
      await writeFile(dir, "not a dir any more");
      for (const run of [() => store.reencrypt(), () => store.compact()]) {
        expect(await codeOf(run())).toBe("store_unavailable");
        const error = (await run().catch((err: Error) => err)) as Error;
        expect(error.message).not.toContain(dir);
      }
      await rm(dir);
      expect(await codeOf(store.reencrypt())).toBe("store_unavailable");
      expect(await codeOf(store.compact())).toBe("store_unavailable");
    });

    it("refuses a data dir that is a file", async () => {
      const file = join(await tempDir(), "not-a-dir");
      await writeFile(file, "");
      expect(await codeOf(open(file))).toBe("store_unavailable");
    });

    it("the factory refuses to open without a key, saying how to get one", async () => {
      const dir = await tempDir();
      const deps = { dataDir: dir, env: {}, log: createLogger(() => {}), now: Date.now };
      expect(await codeOf(fileStore.open({ config: {}, env: {} }, deps))).toBe("encryption_key_missing");
      await expect(fileStore.open({ config: {}, env: {} }, deps)).rejects.toThrow(
        `the file store needs a key: set LITELLM_MASTER_KEY or LITELLM_SALT_KEY, or run \`llm-secrets serve\` once to generate master.key in ${dir}`,
      );
      const store = await fileStore.open({ config: {}, env: {} }, { ...deps, keys });
      expect(await store.put("A", "a")).toBe("created");
      expect(fileStore.defaults).toEqual({ accessMode: "read_and_write", needsLocalKey: true, envBacked: false });
      expect(fileStore.capabilities).toEqual({
        writes: true,
        deletes: true,
        compareAndSet: true,
        maxValueBytes: 1048576,
        records: ["version", "updatedAt", "tags"],
      });
    });
  });

  describe("watch", () => {
    it("reports what another store changed, and not its own writes", async () => {
      const dir = await tempDir();
      const mine = await open(dir);
      const theirs = await open(dir);
      const seen: string[][] = [];
      mine.watch((names) => seen.push(names));
      await mine.put("OURS", "o");
      await theirs.put("THEIRS", "t");
      await theirs.delete("OURS");
      await until("both changes reported", () => seen.flat().includes("OURS") && seen.flat().includes("THEIRS"));
      expect(new Set(seen.flat())).toEqual(new Set(["THEIRS", "OURS"]));
      expect(seen.flat().filter((n) => n === "OURS")).toHaveLength(1); // its delete, not our put
      await mine.close();
      await theirs.close();
    });

    it("follows a data dir replaced while it runs (a restore by rename): another store's change there is reported", async () => {
      const parent = await tempDir();
      const dir = join(parent, "data");
      const mine = await open(dir);
      const seen: string[] = [];
      mine.watch((names) => seen.push(...names));
      expect(await mine.put("BEFORE", "b")).toBe("created");
      // The restored copy, made beside it, then swapped in: the old dir moved away, the copy renamed to its path.
      const restored = join(parent, "restored");
      await cp(dir, restored, { recursive: true });
      await rename(dir, join(parent, "data.old"));
      await rename(restored, dir);
      const theirs = await open(dir);
      expect(await theirs.put("AFTER", "a")).toBe("created");
      await until("the change in the restored dir reported", () => seen.includes("AFTER"));
      expect((await mine.get("AFTER"))?.value).toBe("a");
      await mine.close();
      await theirs.close();
    });

    it("logs once when watching fails (inotify limits), tries again with backoff, and close stops it", async () => {
      const dir = await tempDir();
      const lines: string[] = [];
      const failure = (code: string) => Object.assign(new Error(`${code}: system limit reached`), { code });
      let failures = 2;
      const attempts: FSWatcher[] = [];
      const watchDir: WatchDir = (path, listener) => {
        if (failures-- > 0) throw failure("ENOSPC");
        const watcher = watch(path, { persistent: false }, listener);
        attempts.push(watcher);
        return watcher;
      };
      let clock = Date.now();
      const mine = await FileStore.open({
        dataDir: dir,
        keys,
        log: createLogger((l) => lines.push(l)),
        watchDir,
        now: () => clock,
      });
      const theirs = await open(dir);
      const seen: string[] = [];
      const warnings = () => lines.filter((l) => l.includes("cannot watch the data dir")).map((l) => JSON.parse(l));
      vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
      try {
        mine.watch((names) => seen.push(...names));
        expect(warnings()).toHaveLength(1);
        expect(warnings()[0]).toMatchObject({ level: "warn", dir, code: "ENOSPC" });
        vi.advanceTimersByTime(999);
        expect(attempts).toHaveLength(0);
        vi.advanceTimersByTime(1); // 1 s: fails again, not logged again
        vi.advanceTimersByTime(1999);
        expect(attempts).toHaveLength(0);
        vi.advanceTimersByTime(1); // 2 s later: watching
        expect(attempts).toHaveLength(1);
        expect(warnings()).toHaveLength(1);
        expect(lines.filter((l) => l.includes("watching the data dir again"))).toHaveLength(1);
        expect(vi.getTimerCount()).toBe(0);
        // The watcher fails later (EMFILE), after a minute up: logged once more, tried again 1 s later.
        clock += 60_000;
        attempts[0]?.emit("error", failure("EMFILE"));
        expect(warnings().map((w) => w.code)).toEqual(["ENOSPC", "EMFILE"]);
        // A change made while nothing watches is read when watching starts again.
        await theirs.put("GAP", "g");
        vi.advanceTimersByTime(1000);
        expect(attempts).toHaveLength(2);
        expect(seen).toContain("GAP");
        // Failing again at once (not a minute up) is the same failure: not logged again, and the
        // backoff goes on (2 s), rather than a warning and a retry every second.
        attempts[1]?.emit("error", failure("EMFILE"));
        expect(warnings()).toHaveLength(2);
        vi.advanceTimersByTime(1999);
        expect(attempts).toHaveLength(2);
        vi.advanceTimersByTime(1);
        expect(attempts).toHaveLength(3);
        expect(lines.filter((l) => l.includes("watching the data dir again"))).toHaveLength(2);
      } finally {
        vi.useRealTimers();
      }
      // Watching again: another process's change is reported at once.
      await theirs.put("OUTSIDE", "o");
      await until("the outside change reported", () => seen.includes("OUTSIDE"));
      // A failure while closing leaves no retry behind.
      vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
      try {
        failures = 1;
        attempts[2]?.emit("error", failure("EMFILE"));
        expect(vi.getTimerCount()).toBe(1);
        await mine.close();
        expect(vi.getTimerCount()).toBe(0);
        vi.advanceTimersByTime(120_000);
        expect(attempts).toHaveLength(3);
      } finally {
        vi.useRealTimers();
      }
      expect(lines.join("\n")).not.toContain("system limit reached");
      await theirs.close();
    });
  });

  describe("reencrypt", () => {
    it("moves every entry to the current salt key in one rewrite, and records only that key", async () => {
      const dir = await tempDir();
      const oldKeys = new KeyRing("old-salt");
      const old = await open(dir, { keys: oldKeys });
      for (let i = 0; i < 30; i++) await old.put(`R${i}`, `v${i}`);
      await old.delete("R29");
      await old.close();
      const rotated = new KeyRing("new-salt", ["old-salt"], "aes-256-gcm");
      const progress: number[] = [];
      const store = await open(dir, { keys: rotated });
      expect(await store.reencrypt((done) => progress.push(done))).toBe(29);
      expect(progress.at(-1)).toBe(29);
      const onlyNew = new KeyRing("new-salt");
      const { header, state, lines } = await readLog(dir);
      expect(header.keys).toEqual([keyCheckOf(onlyNew.current)]);
      expect(state.size).toBe(30); // the tombstone stays
      for (let i = 0; i < 29; i++) {
        const ciphertext = state.get(`R${i}`)?.v as string;
        expect(ciphertext.startsWith("v3:gcm:")).toBe(true);
        expect(openSecret(ciphertext, onlyNew)).toBe(`v${i}`);
      }
      expect(lines.length).toBeLessThan(5);
      // The new key alone now opens the store; the old one alone does not.
      expect((await (await open(dir, { keys: onlyNew })).get("R3"))?.value).toBe("v3");
      await expect(open(dir, { keys: oldKeys })).rejects.toBeInstanceOf(ConfigError);
    });

    it("writes nothing when an entry does not open, and names it", async () => {
      const dir = await tempDir();
      const store = await open(dir);
      await store.put("GOOD", "g");
      await store.put("STRANGER", "s");
      await store.close();
      await rewriteLog(dir, (record) =>
        "changes" in record
          ? {
              ...record,
              changes: record.changes.map((c) =>
                c.n === "STRANGER" ? { ...c, v: sealSecret("x", new KeyRing("unknown-key")) } : c,
              ),
            }
          : record,
      );
      const before = await readFile(logPath(dir));
      const reopened = await open(dir);
      await expect(reopened.reencrypt()).rejects.toThrow(/entry STRANGER does not open.*nothing was re-sealed/);
      expect(await codeOf(reopened.reencrypt())).toBe("store_corrupt");
      expect(await readFile(logPath(dir))).toEqual(before);
      expect((await reopened.get("GOOD"))?.value).toBe("g");
    });
  });
});
