// The file store's compaction when the disk refuses it: node:fs/promises is wrapped so that the
// temp file of a rewrite fails with ENOSPC while `full.on` is set (everything else is untouched).
import { copyFile, readdir, stat } from "node:fs/promises";
import { describe, expect, it, vi } from "vitest";
import { KeyRing } from "../../../core/src/crypto";
import { createLogger } from "../../../core/src/log";
import { FileStore } from "../../../core/src/stores/file";
import { tempDir } from "../../helpers";
import { logPath } from "./file-log-reader";

const full = vi.hoisted(() => ({ on: false, refused: 0, beforeTemp: undefined as undefined | (() => Promise<void>) }));

vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs/promises")>();
  const open = (async (path: string, flags?: string, mode?: number) => {
    const before = full.beforeTemp;
    if (before && String(path).endsWith(".tmp")) {
      full.beforeTemp = undefined;
      await before();
    }
    if (full.on && String(path).endsWith(".tmp")) {
      full.refused++;
      throw Object.assign(new Error(`ENOSPC: no space left on device, open '${path}'`), {
        code: "ENOSPC",
        errno: -28,
        syscall: "open",
      });
    }
    return actual.open(path, flags, mode);
  }) as typeof actual.open;
  return { ...actual, open, default: { ...actual, open } };
});

const keys = new KeyRing("file-compaction-test-salt");

describe("FileStore compaction that fails", () => {
  it("answers the write that triggered it as done, serves the new value, and later writes succeed", async () => {
    const dir = await tempDir();
    const logs: string[] = [];
    const store = await FileStore.open({ dataDir: dir, keys, log: createLogger((l) => logs.push(l)) });
    const big = "x".repeat(64 * 1024);
    const inode = (await stat(logPath(dir))).ino;
    full.on = true;
    // One name rewritten: past 1 MiB the log is far past twice what it holds, so each write would compact.
    for (let round = 0; round < 30; round++) {
      expect(await store.put("BIG", `${round}-${big}`)).toBe(round === 0 ? "created" : "updated");
      expect((await store.get("BIG"))?.value).toBe(`${round}-${big}`);
    }
    expect(full.refused).toBeGreaterThan(0);
    // Retried as the log grows, not at every write.
    expect(full.refused).toBeLessThan(5);
    expect((await stat(logPath(dir))).ino).toBe(inode);
    const warnings = logs.join("");
    expect(warnings).toMatch(/compaction failed.*store_unavailable.*ENOSPC/);
    expect(warnings).not.toContain(big.slice(0, 100));

    // Space again: a later write compacts.
    full.on = false;
    for (let round = 30; round < 60 && (await stat(logPath(dir))).ino === inode; round++) {
      expect(await store.put("BIG", `${round}-${big}`)).toBe("updated");
      await store.get("BIG");
    }
    await store.close();
    expect((await stat(logPath(dir))).ino).not.toBe(inode);
    const reopened = await FileStore.open({ dataDir: dir, keys });
    expect((await reopened.get("BIG"))?.value.endsWith(big)).toBe(true);
    await reopened.close();
  });
});

describe("FileStore's first log", () => {
  it("is made only where there is none: a first opener that stalled never replaces a log made meanwhile", async () => {
    // Another writer's log, with an acknowledged write in it, ready to appear.
    const theirs = await tempDir();
    const other = await FileStore.open({ dataDir: theirs, keys });
    await other.put("THEIRS", "acknowledged");
    await other.close();
    const dir = await tempDir();
    // The first opener stalls past its lease while writing the new log's temp file; meanwhile the
    // other writer (which took the lock over) made the log and wrote to it.
    full.beforeTemp = () => copyFile(logPath(theirs), logPath(dir));
    const store = await FileStore.open({ dataDir: dir, keys });
    // Before: its rename put an empty log over theirs, and THEIRS was gone.
    expect((await store.get("THEIRS"))?.value).toBe("acknowledged");
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    await store.close();
  });
});
