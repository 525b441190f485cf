// The file store when fdatasync fails after a whole line was written (NFS/EFS report a full quota
// there): node:fs is wrapped so that the next fdatasync fails, after letting a second store on the
// same data dir (a CLI, or a second server on a shared volume) read the log.
import { appendFileSync, copyFileSync, renameSync, statSync } from "node:fs";
import { describe, expect, it, vi } from "vitest";
import { KeyRing, sealSecret } from "../../../core/src/crypto";
import { FileStore } from "../../../core/src/stores/file";
import { frame } from "../../../core/src/stores/file-log";
import { tempDir } from "../../helpers";
import { logPath } from "./file-log-reader";

const sync = vi.hoisted(() => ({ failNext: undefined as undefined | (() => Promise<void>), logOpens: 0 }));

vi.mock("node:fs", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs")>();
  const fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    const before = sync.failNext;
    if (before === undefined) return actual.fdatasync(fd, cb);
    sync.failNext = undefined;
    void before().then(() => cb(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" })));
  }) as typeof actual.fdatasync;
  // Counted: every open of the log by its path is a read of the whole log (an open, or a reload).
  const openSync = ((path: Parameters<typeof actual.openSync>[0], ...rest: unknown[]) => {
    if (String(path).endsWith("secrets.log")) sync.logOpens++;
    return (actual.openSync as (...args: unknown[]) => number)(path, ...rest);
  }) as typeof actual.openSync;
  return { ...actual, fdatasync, openSync, default: { ...actual, fdatasync, openSync } };
});

const keys = new KeyRing("file-sync-test-salt");

/**
 * A key ring that runs `intrude` at the next reading of its current key: a write reads it right
 * after the check that the log has not moved, just before the append (its value is sealed earlier).
 */
class Intruded extends KeyRing {
  intrude: (() => void) | undefined;
  override get current() {
    const run = this.intrude;
    this.intrude = undefined;
    run?.();
    return super.current;
  }
}
const turn = () => new Promise((r) => setImmediate(r));

describe("FileStore when a sync fails", () => {
  it("keeps the whole line another process may have read: no acknowledged write of either is lost", async () => {
    const dir = await tempDir();
    const a = await FileStore.open({ dataDir: dir, keys });
    const b = await FileStore.open({ dataDir: dir, keys });
    await a.put("BASE", "base-value");
    await turn();
    expect((await b.get("BASE"))?.value).toBe("base-value");
    await turn();
    // A's line is written whole; B reads the log; then A's sync fails.
    let seenByB: string | undefined;
    sync.failNext = async () => {
      await turn();
      seenByB = (await b.get("MAYBE"))?.value;
    };
    const inode = statSync(logPath(dir)).ino;
    await expect(a.put("MAYBE", "may-have-landed")).rejects.toThrow("file store write");
    expect(seenByB).toBe("may-have-landed");
    await turn();
    // The next writes of both are acknowledged, and each process sees the other's.
    expect(await a.put("ACKED", "an acknowledged value, longer than the one before")).toBe("created");
    // Before it, A rewrote the log (fsynced, renamed): the kernel may have dropped the pages of the
    // line whose sync failed, and lines appended after it would sit past a hole.
    const rewritten = statSync(logPath(dir)).ino;
    expect(rewritten).not.toBe(inode);
    expect(await a.put("AGAIN", "a")).toBe("created");
    expect(statSync(logPath(dir)).ino).toBe(rewritten); // once: later writes append
    await turn();
    expect((await b.get("ACKED"))?.value).toBe("an acknowledged value, longer than the one before");
    expect(await b.put("OTHER", "o")).toBe("created");
    await turn();
    expect((await a.get("OTHER"))?.value).toBe("o");
    await Promise.all([a.close(), b.close()]);
    const fresh = await FileStore.open({ dataDir: dir, keys });
    expect(await fresh.names()).toEqual(["ACKED", "AGAIN", "BASE", "MAYBE", "OTHER"]);
    await fresh.close();
  });

  it("a store closed after a failed sync (a CLI put ends there) rewrites the log before it goes", async () => {
    const dir = await tempDir();
    const a = await FileStore.open({ dataDir: dir, keys });
    await a.put("BASE", "base-value");
    const inode = statSync(logPath(dir)).ino;
    sync.failNext = async () => {};
    await expect(a.put("MAYBE", "may-have-landed")).rejects.toThrow("file store write");
    await a.close();
    // Before: the flag went with the process, and the next writer appended past a possible hole.
    expect(statSync(logPath(dir)).ino).not.toBe(inode);
    const fresh = await FileStore.open({ dataDir: dir, keys });
    expect(await fresh.names()).toEqual(["BASE", "MAYBE"]);
    await fresh.close();
  });

  it("a write whose line lands after another writer's it was not decided against is not answered as done, and the newer event stands", async () => {
    // Another writer (one that took the lock over) appends between our check and our append.
    const ring = new Intruded("file-sync-test-salt");
    const dir = await tempDir();
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    await store.put("K", "base", { ifNewerThan: { at: 10, id: "evt-10" } });
    const at = Date.now();
    // Key events (each with its id): ours at 50, sealed now, decided later; theirs at 100 lands first.
    const older = store.put("K", "older-event", { ifNewerThan: { at: 50, id: "evt-50" } });
    ring.intrude = () =>
      appendFileSync(
        logPath(dir),
        frame({ changes: [{ s: 99, n: "K", t: 100, i: "evt-100", w: at, c: at, v: sealSecret("newer-event", keys) }] }),
      );
    // Before: answered "updated", though decided without the newer event in the log before it.
    await expect(older).rejects.toMatchObject({ code: "backend_unavailable" });
    // And the newer event stands, here and for any reader, though the older one's line landed after it.
    expect((await store.get("K"))?.value).toBe("newer-event");
    await store.close();
    const fresh = await FileStore.open({ dataDir: dir, keys });
    expect((await fresh.get("K"))?.value).toBe("newer-event");
    // A retry of the older event is superseded: nothing to repair.
    expect(await fresh.put("K", "older-event", { ifNewerThan: { at: 50, id: "evt-50" } })).toBe("superseded");
    await fresh.close();
  });

  it("a write whose line went to a log another writer replaced meanwhile is not answered as done", async () => {
    const ring = new Intruded("file-sync-test-salt");
    const dir = await tempDir();
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    await store.put("A", "a");
    const lost = store.put("B", "b"); // sealed now, appended later
    // Another writer (one that took the lock over) compacts between our check and our append: a
    // copy renamed over the log. Our line goes to the file it unlinked.
    ring.intrude = () => {
      copyFileSync(logPath(dir), `${logPath(dir)}.copy`);
      renameSync(`${logPath(dir)}.copy`, logPath(dir));
    };
    // Before: answered "created", and B was in no log.
    await expect(lost).rejects.toMatchObject({ code: "backend_unavailable" });
    await store.close();
  });

  it("a reader does not read the whole log again on every read while its tail is a power loss's zeros", async () => {
    const dir = await tempDir();
    const writer = await FileStore.open({ dataDir: dir, keys });
    for (let i = 0; i < 20; i++) await writer.put(`K${i}`, `value-${i}`);
    await writer.close();
    appendFileSync(logPath(dir), Buffer.concat([Buffer.alloc(300), Buffer.from("\n")]));
    const reader = await FileStore.open({ dataDir: dir, keys });
    const before = sync.logOpens;
    for (let i = 0; i < 50; i++) {
      expect((await reader.get("K1"))?.value).toBe("value-1");
      await turn(); // each read in a turn of its own: each looks at the log
    }
    // Before: every read parsed the tail, found it damaged, and read the whole log again (50 times).
    expect(sync.logOpens - before).toBeLessThanOrEqual(1);
    // A change to the log is still taken in; a writer under the lock drops the tail.
    const other = await FileStore.open({ dataDir: dir, keys });
    expect(await other.put("NEW", "new")).toBe("created");
    await turn();
    expect((await reader.get("NEW"))?.value).toBe("new");
    await Promise.all([reader.close(), other.close()]);
  });

  it("reads the whole log again before dropping a damaged tail, so a reader's wrong place in it destroys nothing", async () => {
    const dir = await tempDir();
    const a = await FileStore.open({ dataDir: dir, keys });
    const b = await FileStore.open({ dataDir: dir, keys });
    await a.put("FIRST", "1");
    await turn();
    expect((await b.get("FIRST"))?.value).toBe("1");
    await turn();
    // A writer of an earlier build took a synced-but-failed line back after B read it, then wrote a
    // longer acknowledged one at the same place: B's place in the log is now inside that line.
    const { readFileSync, truncateSync } = await import("node:fs");
    const end = readFileSync(logPath(dir)).length;
    await a.put("GONE", "x");
    await turn();
    expect((await b.get("GONE"))?.value).toBe("x");
    truncateSync(logPath(dir), end);
    await a.close();
    const a2 = await FileStore.open({ dataDir: dir, keys });
    expect(await a2.put("ACKED", "an acknowledged value, longer than the line taken back")).toBe("created");
    await turn();
    // B writes: under the lock it must not cut A's acknowledged line as if it were torn.
    expect(await b.put("OTHER", "o")).toBe("created");
    await Promise.all([a2.close(), b.close()]);
    const fresh = await FileStore.open({ dataDir: dir, keys });
    expect(await fresh.names()).toEqual(["ACKED", "FIRST", "OTHER"]);
    await fresh.close();
  });
});
