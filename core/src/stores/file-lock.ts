/**
 * A cross-process lock for the file store: a lock file holding "<pid> <token> <pid space>" (the
 * host and pid namespace its pid is one of).
 *
 * - Acquire: the file is written aside, then hard-linked into place; link() fails if the lock
 *   exists, so taking it is atomic and its content is never seen half-written. While it waits, the
 *   file aside is renewed as a held lock is, so it goes in fresh however long the wait.
 * - Wait: a lock whose owner is alive is waited for, up to a timeout.
 * - Lease: while its owner works, the lock's mtime is renewed every second; a lock not renewed for
 *   five seconds is stale whoever holds it (a pid seen from another pid namespace, a new pod that
 *   inherited the volume, a container's PID 1 before its restart). So is one renewed more than five
 *   seconds ahead of our clock: a dead owner's from before the clock stepped back (a VM snapshot
 *   restored, no RTC), else held until the clock caught up. Either way, hosts sharing a data dir
 *   need clocks within five seconds of each other. A lock holding our pid is judged by its lease
 *   too: it may be another store's of this process, or a live process's with our pid in another
 *   container on the same volume.
 * - Take over: a lock whose owner is dead (SIGKILL, power loss; judged by its pid only in our pid
 *   space: from another, a live owner's pid is not seen), or whose lease lapsed, is removed by one
 *   taker of that lock only, and only while it is the lock judged (`takeOver`): of several
 *   processes taking over, one removes it, and each then links its own, one winning. (Before, each
 *   renamed aside whatever was there, and one could move aside the lock another had just taken.)
 * - Release: only a lock that still holds our token is removed. A release that fails (EMFILE, EIO)
 *   is logged and tried once more shortly after; the work done under the lock stands (a write
 *   already in the log is not answered as failed), and a lock not removed lapses with its lease.
 * - Held: a lock can be taken over from a live owner that stalled past the age limit (or whose pid
 *   another pid namespace does not see). `stillHeld()` tells the owner, before a step that must not
 *   run unlocked (the file store's rename of a compacted log), whether the lock is still its own.
 *
 * A lock timeout is `BackendUnavailable` (503 with Retry-After): the lock is held by a live writer.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, readlinkSync, type Stats } from "node:fs";
import { link, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join } from "node:path";
import { type Logger, silentLogger } from "../log";
import { BackendUnavailable } from "../store-errors";

interface Lease {
  /** A lock not renewed for this long is stale, whoever holds it. */
  staleMs: number;
  /** How often the owner renews it. */
  heartbeatMs: number;
}

const LEASE: Lease = { staleMs: 5_000, heartbeatMs: 1_000 };

/**
 * Drawn once per process and put in the name of every file it creates beside the log (after its
 * pid), and in its lock: a file with our pid but another token is another process's (an earlier one
 * that had our pid, or a live one in another container on the same volume).
 */
const PROCESS_TOKEN = randomBytes(4).toString("hex");

/**
 * Where our pids mean something: the host (its name and boot: the first pid namespace has the same
 * number on every Linux host, and a data dir on a network volume may be shared across hosts) and the
 * pid namespace. From another pid space (a CLI on the host beside a server in a container, on one
 * data dir) a live owner's pid is not seen, or is another process's: its lock is judged by its lease.
 */
export const PID_SPACE = (() => {
  const read = (path: string, link: boolean): string => {
    try {
      return link ? readlinkSync(path) : readFileSync(path, "utf8").trim();
    } catch {
      return ""; // no /proc: the host's name alone
    }
  };
  const boot = read("/proc/sys/kernel/random/boot_id", false);
  const namespace = read("/proc/self/ns/pid", true); // "pid:[4026531836]" (Linux)
  return `${hostname()}/${boot}/${namespace}`.replace(/\s/g, "_");
})();

/** `<prefix>.<pid>.<process token><random hex><suffix>`: a name no other process or call makes. */
export function ownFileName(prefix: string, suffix = ""): string {
  return `${prefix}.${process.pid}.${PROCESS_TOKEN}${randomBytes(6).toString("hex")}${suffix}`;
}

/** How old a file must be to be taken for a leftover: a younger one may be a live writer's. */
const LEFTOVER_AGE_MS = 60_000;

/**
 * Whether a file named by `ownFileName` (its pid and hex part), last changed `ageMs` ago, was left
 * by a process that is gone: a minute old, and its pid dead here, or ours with another process's
 * token (a container's PID 1 before a restart, whose pid looks alive forever). A younger one may be
 * a live writer's whose pid means another process here, or none: one in another container on the
 * same volume (the file's name does not say its pid namespace).
 */
export function leftBehind(pid: number, hex: string, ageMs: number): boolean {
  return ageMs > LEFTOVER_AGE_MS && (!isAlive(pid) || (pid === process.pid && !hex.startsWith(PROCESS_TOKEN)));
}

export interface HeldLock {
  /** Whether the lock file still holds our token (nobody took it over). */
  stillHeld(): Promise<boolean>;
}

export interface LockOptions {
  /** The lease; `LEASE` unless the caller gives a shorter one (tests do). */
  lease?: Lease;
  /** Where a failed release is reported (its code only). */
  log?: Logger;
}

export async function withFileLock<T>(
  path: string,
  timeoutMs: number,
  fn: (lock: HeldLock) => Promise<T>,
  { lease = LEASE, log = silentLogger }: LockOptions = {},
): Promise<T> {
  const mine = ownFileName(path);
  const content = `${process.pid} ${mine.slice(mine.lastIndexOf(".") + 1)} ${PID_SPACE}`;
  try {
    await writeFile(mine, content, { mode: 0o600 });
    await acquire(path, mine, timeoutMs, lease);
  } finally {
    // Also when its write failed (ENOSPC, EFBIG): the file was created, maybe with part of it.
    await rm(mine, { force: true });
  }
  const stillHeld = async () => (await readLock(path).catch(() => undefined)) === content;
  const heartbeat = setInterval(() => {
    stillHeld()
      .then((ours) => (ours ? utimes(path, new Date(), new Date()) : undefined))
      .catch(() => {}); // a missed renewal is retried; a lost lock is `stillHeld`'s to report
  }, lease.heartbeatMs);
  heartbeat.unref();
  try {
    return await fn({ stillHeld });
  } finally {
    clearInterval(heartbeat);
    await release(path, content, log);
  }
}

/** How long after a failed release it is tried again: fds run out (EMFILE) for moments. */
const RELEASE_RETRY_MS = 100;

/**
 * Removes the lock if it still holds our token (`content`). Never throws: what was done under the
 * lock is done (a write appended, synced and applied), and its answer, or its own error, stands. A
 * failure is logged by its code and the removal tried once more shortly after, so that the lock
 * does not hold every writer off for its lease; if that fails too, the lease lapses.
 */
async function release(path: string, content: string, log: Logger): Promise<void> {
  const remove = async () => {
    if ((await readLock(path)) === content) await rm(path, { force: true });
  };
  const codeOf = (err: unknown) => (err as NodeJS.ErrnoException).code ?? "error";
  try {
    await remove();
  } catch (err) {
    log.warn("file store: could not remove its lock; trying again shortly", { code: codeOf(err) });
    setTimeout(() => {
      remove().catch((again) =>
        log.warn("file store: could not remove the lock; other writers wait for its lease to lapse", {
          code: codeOf(again),
        }),
      );
    }, RELEASE_RETRY_MS).unref();
  }
}

async function acquire(path: string, mine: string, timeoutMs: number, lease: Lease): Promise<void> {
  // On the monotonic clock: a wall clock stepped back would stretch the wait by the step.
  const deadline = performance.now() + timeoutMs;
  let touched = performance.now();
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
    // The lock goes in with our candidate's mtime: renewed as a held lock is, so that after a wait
    // longer than a lease it is not stale the moment it is taken (another waiter took it over).
    if (performance.now() - touched > lease.heartbeatMs) {
      const now = new Date();
      await utimes(mine, now, now);
      touched = performance.now();
    }
    try {
      await link(mine, path);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const current = await readLock(path);
    if (current === undefined) continue; // released between our link and our read
    // A takeover that changed nothing (another taker of that lock at work) waits as for a live owner.
    if ((await isStale(path, current, lease)) && (await takeOver(path, current, lease))) continue;
    if (performance.now() > deadline) {
      // The file's name only: this message may reach an HTTP answer, which never holds a path.
      throw new BackendUnavailable(
        `the file store is locked by another process; if none is running, remove ${basename(path)} from the data dir`,
      );
    }
    await new Promise((r) => setTimeout(r, wait));
  }
}

async function isStale(path: string, content: string, lease: Lease): Promise<boolean> {
  const [pidText = "", , space] = content.split(" ");
  const pid = Number.parseInt(pidText, 10);
  // A dead pid means a dead owner only in our pid space. A lock that names none is an earlier
  // build's, which may be in another container on this data dir: its lease judges it too (a host
  // CLI of an earlier build beside a server in a container lost acknowledged writes otherwise).
  if (space === PID_SPACE && (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid))) return true;
  // A live pid, ours included, is judged by the lease alone: a lock with our pid may be another
  // store's of this process (held, or just released), or a live process's in another container on
  // the same volume (PID 1 there too), or an earlier process's that had our pid (a container's PID 1
  // before its restart: taken once its lease lapses, 5 s). Taking it at once raced the first two.
  // An mtime more than a lease ahead of now is stale too: a live owner renews it every second by
  // this clock, so it is a dead owner's from before the clock stepped back (a VM snapshot restored,
  // a host without an RTC), which would otherwise hold the lock until the clock caught up. (A live
  // owner's lock judged within the second between a step and its next renewal is taken, as one
  // judged right after a step forward always was: `stillHeld` tells that owner.)
  try {
    const age = Date.now() - (await stat(path)).mtimeMs;
    return age > lease.staleMs || age < -lease.staleMs;
  } catch {
    return false; // gone: the next round takes it
  }
}

/**
 * Removes the lock judged stale, if it is still the one at `path`. One taker per judged lock: each
 * makes `<lock>.taking.<digest of the lock>` a second name of what is at `path` with link(), which
 * fails for every other taker of that lock, and reads the lock through it. Nothing at `path` is
 * removed unless it is the lock judged (its inode), so a lock another taker has taken meanwhile is
 * never moved from under it. A taking name whose taker died stays where it is: once this process
 * has seen that very file there for a lease (on its monotonic clock: a file's ctime is another
 * clock's, a file server's on a network volume), the takeover goes on under the next name
 * (`<name>.2`, `.3`, ...), which again only one of the waiters that saw the dead one gets. (Each
 * removed the dead name and linked the same one: a later waiter removed the name an earlier one had
 * just linked, and both took over.) Names left by dead takers are leftovers the file store removes
 * once their lock is gone (`removeTakingLeftovers`). Whether the lock path changed: `false` tells the
 * caller to wait.
 */
async function takeOver(path: string, judged: string, lease: Lease): Promise<boolean> {
  const first = `${path}${TAKING}${createHash("sha256").update(judged).digest("hex").slice(0, 16)}`;
  const nameOf = (generation: number) => (generation === 1 ? first : `${first}.${generation}`);
  for (let generation = 1; ; generation++) {
    const taking = nameOf(generation);
    try {
      await link(path, taking);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return true; // released meanwhile
      if (code !== "EEXIST") throw err;
      // Another taker of this lock is at it under this name, or is done, or died at it.
      const taker = await takerAt(taking, lease);
      if (taker === "done") return true;
      if (taker === "at it") return false;
      continue;
    }
    try {
      if ((await readLock(taking)) !== judged) return true; // another lock is there now: not ours to judge
      const [held, ours] = await Promise.all([stat(path).catch(() => undefined), stat(taking).catch(() => undefined)]);
      // The judged lock itself. Two windows are left, each needing a process stopped for a lease (a
      // SIGSTOP, a VM paused): its live owner, past its lease, released it between our link and here
      // and another took it since; or this taker stopped between these stats and the removal while a
      // waiter took over from it. Either way the holder whose lock went is told by its `stillHeld`,
      // which the file store asks before it answers a write or replaces the log.
      if (sameFile(held, ours)) await rm(path, { force: true });
      return true;
    } finally {
      // Ours, and those of the takers that died before us: the judged lock is gone, so they are
      // leftovers now (as `removeTakingLeftovers` would find).
      for (let g = generation; g >= 1; g--) await rm(nameOf(g), { force: true });
    }
  }
}

/**
 * What became of the taker at `taking`: `done` (the name is gone), `died` (this process has seen
 * that very file there, its inode and ctime, for longer than a lease: a name removed and linked anew,
 * which sets a new ctime, starts the count again), else `at it`. The ctime is only compared with
 * itself, never with our clock.
 */
async function takerAt(taking: string, lease: Lease): Promise<"done" | "died" | "at it"> {
  const file = await stat(taking).catch(() => undefined);
  if (file === undefined) return "done";
  const identity = `${file.dev}:${file.ino}:${file.ctimeMs}`;
  const seen = takingSeen.get(taking);
  if (seen === undefined || seen.identity !== identity) {
    if (takingSeen.size >= 64) takingSeen.clear(); // names of locks long gone
    takingSeen.set(taking, { identity, since: performance.now() });
    return "at it";
  }
  return performance.now() - seen.since > lease.staleMs ? "died" : "at it";
}

/** Each taking name found in the way: which file it was (`dev:ino:ctime`), and since when (`performance.now()`). */
const takingSeen = new Map<string, { identity: string; since: number }>();

/** What a taking name holds after the lock's name: `.taking.`, 16 hex digits, and past the first, `.<generation>`. */
const TAKING = ".taking.";

/**
 * Removes the taking names among `files` (names in the lock's directory) whose lock is no longer at
 * `lockPath`: left by a taker that died. Harmless for a live one too, whose name keeps other takers
 * off only while the lock it names is still there.
 */
export async function removeTakingLeftovers(lockPath: string, files: readonly string[]): Promise<void> {
  const prefix = `${basename(lockPath)}${TAKING}`;
  const held = await stat(lockPath).catch(() => undefined);
  for (const file of files.filter((f) => f.startsWith(prefix))) {
    const path = join(dirname(lockPath), file);
    const taking = await stat(path).catch(() => undefined);
    if (taking !== undefined && !sameFile(taking, held)) await rm(path, { force: true });
  }
}

/** Whether two stats (`undefined`: no file) are of one file. */
function sameFile(a: Stats | undefined, b: Stats | undefined): boolean {
  return a !== undefined && b !== undefined && a.ino === b.ino && a.dev === b.dev;
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
