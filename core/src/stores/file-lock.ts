/**
 * A cross-process lock for the file store: a lock file holding "<pid> <token>".
 *
 * - Acquire: the file is written aside, then hard-linked into place; link() fails if the lock
 *   exists, so taking it is atomic and its content is never seen half-written.
 * - Wait: a lock whose owner is alive is waited for, up to a timeout.
 * - Take over: a lock whose owner is dead (SIGKILL, power loss), or that is older than any write
 *   could take, is renamed aside; rename() moves exactly one file, so of several processes taking
 *   over, one wins. If what was moved turns out not to be the lock that was judged dead (it was
 *   re-taken in between), it is linked back.
 * - Release: only a lock that still holds our token is removed.
 * - Held: a lock can be taken over from a live owner that stalled past the age limit (or whose pid
 *   another pid namespace does not see). `stillHeld()` tells the owner, before a step that must not
 *   run unlocked (the file store's rename of a compacted log), whether the lock is still its own.
 *
 * A lock timeout is `BackendUnavailable` (503 with Retry-After): the lock is held by a live writer.
 */
import { randomBytes } from "node:crypto";
import { link, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename } from "node:path";
import { BackendUnavailable } from "../store-errors";

/** Past this age a lock is stale even if its pid is alive (pid reuse): no write takes this long. */
const MAX_LOCK_AGE_MS = 60_000;

export interface HeldLock {
  /** Whether the lock file still holds our token (nobody took it over). */
  stillHeld(): Promise<boolean>;
}

export async function withFileLock<T>(path: string, timeoutMs: number, fn: (lock: HeldLock) => Promise<T>): Promise<T> {
  const token = randomBytes(12).toString("hex");
  const content = `${process.pid} ${token}`;
  const mine = `${path}.${process.pid}.${token}`;
  await writeFile(mine, content, { mode: 0o600 });
  try {
    await acquire(path, mine, timeoutMs);
  } finally {
    await rm(mine, { force: true });
  }
  try {
    return await fn({ stillHeld: async () => (await readLock(path)) === content });
  } finally {
    if ((await readLock(path)) === content) await rm(path, { force: true });
  }
}

async function acquire(path: string, mine: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
    try {
      await link(mine, path);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const held = await readLock(path);
    if (held === undefined) continue; // released between our link and our read
    if (await isStale(path, held)) {
      await takeOver(path, held);
      continue;
    }
    if (Date.now() > deadline) {
      // The file's name only: this message may reach an HTTP answer, which never holds a path.
      throw new BackendUnavailable(
        `the file store is locked by another process; if none is running, remove ${basename(path)} from the data dir`,
      );
    }
    await new Promise((r) => setTimeout(r, wait));
  }
}

async function isStale(path: string, held: string): Promise<boolean> {
  const pid = Number.parseInt(held, 10);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return true;
  try {
    return Date.now() - (await stat(path)).mtimeMs > MAX_LOCK_AGE_MS;
  } catch {
    return false; // gone: the next round takes it
  }
}

async function takeOver(path: string, judged: string): Promise<void> {
  const aside = `${path}.stale.${process.pid}.${randomBytes(6).toString("hex")}`;
  try {
    await rename(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  if ((await readLock(aside)) !== judged) {
    // Someone took the lock after we judged it: give it back.
    await link(aside, path).catch(() => {});
  }
  await rm(aside, { force: true });
}

async function readLock(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
