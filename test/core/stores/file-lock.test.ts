// The file store's lock as a lease: renewed while held, stale once it lapses (or was renewed past a
// lease ahead of our clock) or when it holds our pid with a token this process does not hold (a
// container's PID 1 after a restart).
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { link, mkdir, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { build } from "esbuild";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { type LockOptions, PID_SPACE, removeTakingLeftovers, withFileLock } from "../../../core/src/stores/file-lock";
import { codeOf, deadPid, livePid, tempDir } from "../../helpers";

/**
 * A short lease, for taking over locks made stale by hand. A "waits while it is fresh" check keeps the
 * default 5 s lease: a worker stalled past a short one under load would take the lock it must wait for.
 */
const FAST = { staleMs: 400, heartbeatMs: 50 };

/**
 * Takers of one lock that count how often two were inside at once (`overlaps`) and how often one
 * found, after its `work`, that the lock was no longer its own (`lost`).
 */
function holdersOf(path: string, work: () => Promise<unknown>, options: LockOptions = {}) {
  let inside = 0;
  let overlaps = 0;
  let lost = 0;
  const one = () =>
    withFileLock(
      path,
      10_000,
      async (lock) => {
        if (++inside > 1) overlaps++;
        await work();
        if (!(await lock.stillHeld())) lost++;
        inside--;
      },
      options,
    );
  return { one, counts: () => ({ overlaps, lost }) };
}

/** An owner that takes the lock and works until `work` settles; `holding` resolves once it is inside. */
function ownerOf(path: string, work: () => Promise<unknown>, options: LockOptions) {
  let holds!: () => void;
  const holding = new Promise<void>((r) => {
    holds = r;
  });
  const owner = withFileLock(
    path,
    1_000,
    () => {
      holds();
      return work();
    },
    options,
  );
  return { owner, holding };
}

describe("the file lock as a lease", () => {
  it("has one holder at a time among stores of one process that share it, none losing it to another", async () => {
    const path = join(await tempDir(), "store.lock");
    const holders = holdersOf(path, () => new Promise((r) => setImmediate(r)));
    // Before: a store judged another's lock, held by our pid, left by an earlier process, and took it.
    for (let round = 0; round < 150; round++) await Promise.all(Array.from({ length: 4 }, holders.one));
    expect(holders.counts()).toEqual({ overlaps: 0, lost: 0 });
  });

  it("one holder at a time when many take over a dead owner's lock at once, and none finds it taken from under it", async () => {
    // Before: two takers judged the dead owner's lock; the later one moved aside the lock the first
    // had just taken, and a third linked its own before the later one could put it back.
    const path = join(await tempDir(), "store.lock");
    const holders = holdersOf(path, () => new Promise((r) => setTimeout(r, 1)));
    const dead = await deadPid();
    for (let round = 0; round < 100; round++) {
      await writeFile(path, `${dead} crashed-holding-it-${round} ${PID_SPACE}`); // a writer killed in the lock
      await Promise.all(Array.from({ length: 6 }, holders.one));
    }
    expect(holders.counts()).toEqual({ overlaps: 0, lost: 0 });
    expect((await readdir(dirname(path))).sort()).toEqual([]);
  });

  it("a taker that died mid-takeover: waiters wait (their timeout holds), and after a lease on our own clock the lock is taken", async () => {
    // Before: the taking name it left sent every waiter round a loop with no pause and no timeout,
    // until its ctime was a lease old by the wall clock (never, for a clock behind the file's).
    const path = join(await tempDir(), "store.lock");
    const content = `${await deadPid()} crashed-holding-it ${PID_SPACE}`;
    await writeFile(path, content);
    const digest = createHash("sha256").update(content).digest("hex").slice(0, 16);
    await link(path, `${path}.taking.${digest}`); // killed between its link() and its rm()
    expect(await codeOf(withFileLock(path, 300, async () => "in", { lease: FAST }))).toBe("backend_unavailable");
    const wallClock = vi
      .spyOn(Date, "now")
      .mockImplementation(() => performance.timeOrigin + performance.now() - 3_600_000);
    try {
      expect(await withFileLock(path, 5_000, async () => "in", { lease: FAST })).toBe("in");
    } finally {
      wallClock.mockRestore();
    }
    expect(await readdir(dirname(path))).toEqual([]);
  });

  it("a live taker's new taking name is not taken for the dead taker's it replaced: no second holder", async () => {
    // Before: a waiter timed the name from when it first saw the dead taker's; when a live taker
    // removed that and linked its own (the same name), the waiter removed the new one at once, took
    // the lock, and the live taker, its checks already made, removed the waiter's lock.
    const lease = { staleMs: 200, heartbeatMs: 100 };
    const path = join(await tempDir(), "store.lock");
    const judged = `${await deadPid()} crashed-holding-it ${PID_SPACE}`;
    await writeFile(path, judged);
    const taking = `${path}.taking.${createHash("sha256").update(judged).digest("hex").slice(0, 16)}`;
    await link(path, taking); // taker A, killed between its link() and its rm()
    expect(await codeOf(withFileLock(path, 50, async () => "in", { lease }))).toBe("backend_unavailable"); // C saw it
    await new Promise((r) => setTimeout(r, 2 * lease.staleMs));
    // Taker B (another process, its steps by hand): A's name removed, its own linked, the judged lock
    // read and its inode checked; it removes the lock 50 ms later and then holds its own.
    await rm(taking);
    await link(path, taking);
    let inside = 0;
    let overlaps = 0;
    const hold = async () => {
      if (++inside > 1) overlaps++;
      await new Promise((r) => setTimeout(r, 300));
      inside--;
    };
    const c = withFileLock(path, 5_000, hold, { lease });
    await new Promise((r) => setTimeout(r, 50));
    await rm(path);
    await rm(taking);
    const b = withFileLock(path, 5_000, hold, { lease });
    await Promise.all([b, c]);
    expect(overlaps).toBe(0);
  });

  it("removes a taking name whose lock is gone (its taker died), and keeps one whose lock is still there", async () => {
    const dir = await tempDir();
    const path = join(dir, "store.lock");
    await writeFile(path, "the lock a taker was at when it died");
    await link(path, `${path}.taking.0123456789abcdef`);
    await rm(path);
    await writeFile(path, "a lock being taken over now");
    await link(path, `${path}.taking.fedcba9876543210`);
    await removeTakingLeftovers(path, await readdir(dir));
    expect((await readdir(dir)).sort()).toEqual(["store.lock", "store.lock.taking.fedcba9876543210"]);
  });

  it("judges a lock with our pid by its lease: another container on the same volume may hold it", async () => {
    const path = join(await tempDir(), "store.lock");
    // Our pid, another process's token: an earlier process that had our pid, or a live one in
    // another container on the same volume (PID 1 in both). Waited for while its lease is fresh
    // (before, it was taken at once: two live containers wrote at the same time)...
    await writeFile(path, `${process.pid} another-process-with-our-pid ${PID_SPACE}`);
    expect(await codeOf(withFileLock(path, 150, async () => "got it"))).toBe("backend_unavailable");
    // ... and taken once it lapsed.
    const past = new Date(Date.now() - 10_000);
    await utimes(path, past, past);
    const seen = await withFileLock(path, 1_000, async () => readFile(path, "utf8"), { lease: FAST });
    expect(seen.startsWith(`${process.pid} `)).toBe(true);
    expect(seen).not.toContain("another-process");
  });

  it("judges a lock from another pid namespace by its lease: its owner's pid means nothing here", async () => {
    const path = join(await tempDir(), "store.lock");
    // A CLI on the host holds it, seen from a server in a container on the same data dir: its pid
    // is none here. Before, it was taken at once, and both wrote.
    const pid = await deadPid();
    await writeFile(path, `${pid} host-cli-token otherhost/pid:[4026531836]`);
    expect(await codeOf(withFileLock(path, 150, async () => "got it"))).toBe("backend_unavailable");
    const past = new Date(Date.now() - 10_000);
    await utimes(path, past, past);
    expect(await withFileLock(path, 1_000, async () => "got it", { lease: FAST })).toBe("got it");
    // In our own pid space, a dead pid is a dead owner.
    const seen = await withFileLock(path, 1_000, async () => readFile(path, "utf8"), { lease: FAST });
    const ours = seen.split(" ")[2] as string;
    // Our pid space names this host's boot too: the first pid namespace has one number on every host.
    const boot = await readFile("/proc/sys/kernel/random/boot_id", "utf8").catch(() => undefined);
    if (boot !== undefined) expect(ours).toContain(boot.trim());
    await writeFile(path, `${pid} crashed-here ${ours}`);
    expect(await withFileLock(path, 150, async () => "got it", { lease: FAST })).toBe("got it");
    // An earlier build's lock names no pid space: it may be a host CLI's seen from a container, so
    // its lease judges it as well.
    await writeFile(path, `${pid} earlier-build`);
    expect(await codeOf(withFileLock(path, 150, async () => "got it"))).toBe("backend_unavailable");
    await utimes(path, past, past);
    expect(await withFileLock(path, 1_000, async () => "got it", { lease: FAST })).toBe("got it");
  });

  it("a lock from another pid space renewed more than a lease ahead of our clock (the clock stepped back since) is stale: taken, not waited for until the clock catches up", async () => {
    const path = join(await tempDir(), "store.lock");
    const pid = await deadPid();
    // Its owner renewed it an hour "from now", then died; a VM snapshot restored the clock since.
    await writeFile(path, `${pid} host-cli-token otherhost/pid:[4026531836]`);
    const ahead = new Date(Date.now() + 3_600_000);
    await utimes(path, ahead, ahead);
    expect(await withFileLock(path, 1_000, async () => "got it")).toBe("got it");
    // An earlier build's lock (no pid space) alike.
    await writeFile(path, `${pid} earlier-build`);
    await utimes(path, ahead, ahead);
    expect(await withFileLock(path, 1_000, async () => "got it")).toBe("got it");
    // Within a lease ahead (clocks a little apart), it is still a live owner's: waited for.
    await writeFile(path, `${pid} host-cli-token otherhost/pid:[4026531836]`);
    const near = new Date(Date.now() + 2_000);
    await utimes(path, near, near);
    expect(await codeOf(withFileLock(path, 150, async () => "got it"))).toBe("backend_unavailable");
  });

  it("takes over a live owner's lock once its lease has lapsed, and waits while it is fresh", async () => {
    const path = join(await tempDir(), "store.lock");
    const owner = livePid();
    await writeFile(path, `${owner} live-but-stalled`);
    expect(await codeOf(withFileLock(path, 150, async () => "got it"))).toBe("backend_unavailable");
    const past = new Date(Date.now() - 10_000);
    await utimes(path, past, past);
    expect(await withFileLock(path, 1_000, async () => "got it", { lease: FAST })).toBe("got it");
  });

  it("renews its own lease while the owner works: a waiter never takes it over", async () => {
    const path = join(await tempDir(), "store.lock");
    let release!: () => void;
    const working = new Promise<void>((r) => {
      release = r;
    });
    // A lease 20 heartbeats long: a loaded machine's late heartbeat does not lapse it.
    const lease = { staleMs: 1_000, heartbeatMs: 50 };
    const { owner, holding } = ownerOf(path, () => working, { lease });
    await holding; // the owner has the lock (not a head start of some milliseconds)
    // Three lease lengths later the owner still holds it: the waiter times out.
    const waiter = withFileLock(path, 3 * lease.staleMs, async () => "stolen", { lease });
    expect(await codeOf(waiter)).toBe("backend_unavailable");
    release();
    await owner;
    expect(await withFileLock(path, 1_000, async () => "free again", { lease: FAST })).toBe("free again");
  });

  it("a waiter that waited longer than a lease takes the lock fresh: the next waiter waits for it, not takes it over", async () => {
    // Before: the lock went in with its candidate's mtime, written when the wait began; after a wait
    // longer than the lease it was stale the moment it was taken, and another waiter took it over
    // before its first renewal (CI: two of three writer processes appending at once).
    const path = join(await tempDir(), "store.lock");
    const lease = { staleMs: 500, heartbeatMs: 250 };
    const { owner, holding } = ownerOf(path, () => new Promise((r) => setTimeout(r, 2 * lease.staleMs)), { lease });
    await holding;
    // Each waiter works less than a heartbeat: its lock not yet renewed.
    const waiters = holdersOf(path, () => new Promise((r) => setTimeout(r, 200)), { lease });
    await Promise.all([owner, waiters.one(), waiters.one()]);
    expect(waiters.counts()).toEqual({ overlaps: 0, lost: 0 });
  });
});

/**
 * A child process that runs the lock under a resource limit (`prlimit`): its work here, as
 * `process.argv[2]` (the lock's dir) and `log` (the codes warned of) give it, prints a JSON line.
 */
let lockChild: string;

beforeAll(async () => {
  const out = await tempDir();
  lockChild = join(out, "lock-child.mjs");
  const contents = `
    import { closeSync, existsSync, openSync, readdirSync } from "node:fs";
    import { join } from "node:path";
    import { withFileLock } from ${JSON.stringify(join(import.meta.dirname, "../../../core/src/stores/file-lock"))};
    const dir = process.argv[2];
    const path = join(dir, "store.lock");
    const warned = [];
    const log = { debug() {}, info() {}, error() {}, warn: (msg, fields) => warned.push(fields.code) };
    const outcome = (run) => run.then((value) => ({ value }), (err) => ({ error: err.code ?? "no code" }));
    // Takes every fd left (EMFILE from then on) and gives them back 50 ms later.
    const exhaust = () => {
      const fds = [];
      try {
        for (;;) fds.push(openSync("/dev/null", "r"));
      } catch (err) {
        if (err.code !== "EMFILE") throw err;
      }
      setTimeout(() => fds.forEach((fd) => closeSync(fd)), 50);
    };
    if (process.argv[3] === "release") {
      const written = await outcome(withFileLock(path, 2_000, async () => (exhaust(), "written"), { log }));
      await new Promise((r) => setTimeout(r, 400)); // the fds back, the release tried again
      const lockLeftThen = existsSync(path);
      const threw = await outcome(
        withFileLock(path, 2_000, async () => { exhaust(); throw Object.assign(new Error("fn"), { code: "FN_OWN" }); }, { log }),
      );
      await new Promise((r) => setTimeout(r, 400));
      console.log(JSON.stringify({ written, threw, warned, lockLeft: [lockLeftThen, existsSync(path)] }));
    } else {
      const result = await outcome(withFileLock(path, 2_000, async () => "got it", { log }));
      console.log(JSON.stringify({ result, files: readdirSync(dir) }));
    }
  `;
  await build({
    stdin: { contents, resolveDir: import.meta.dirname, loader: "ts", sourcefile: "lock-child.ts" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: lockChild,
    logLevel: "warning",
  });
});

/** Runs the lock child under `prlimit <limit>`, with a fresh dir; resolves with what it printed. */
async function underLimit(limit: string, mode: string): Promise<Record<string, unknown>> {
  const dir = await tempDir();
  const child = spawn("prlimit", [limit, process.execPath, lockChild, dir, mode], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  expect(await new Promise((resolve) => child.on("close", resolve))).toBe(0);
  return JSON.parse(out);
}

describe("the file lock when the system fails it", () => {
  it("a release that fails (fds run out) leaves the work's answer, or its own error, as it was, and removes the lock shortly after", async () => {
    // Before: the release's EMFILE replaced the answer of a write already in the log (a 503), and
    // the lock stayed: the next write waited out its 5 s lease.
    expect(await underLimit("--nofile=200", "release")).toEqual({
      written: { value: "written" },
      threw: { error: "FN_OWN" },
      warned: ["EMFILE", "EMFILE"],
      lockLeft: [false, false],
    });
  });

  it("a lock candidate whose write fails (the disk full, a file size limit) is removed, not left beside the lock", async () => {
    // A file may hold 8 bytes: the candidate is created, its write fails (EFBIG). Before, every
    // write on a full disk left a `store.lock.<pid>.<hex>` behind.
    expect(await underLimit("--fsize=8", "candidate")).toEqual({ result: { error: "EFBIG" }, files: [] });
  });
});

describe("the file lock across processes", () => {
  let racer: string;
  beforeAll(async () => {
    racer = join(await tempDir(), "file-lock-racer.mjs");
    await build({
      entryPoints: [join(import.meta.dirname, "file-lock-racer.ts")],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile: racer,
      logLevel: "warning",
    });
  });

  it("two processes that see a dead taker's name lapse at once: one takes over, the other waits for it (one holder)", async () => {
    // Before: each removed the dead name and took over through the same name; the later removed the
    // name the earlier had just linked, then the lock the earlier had taken since (the review's
    // interleaving, made by the racer's holds: two inside at once, the first losing it).
    const dir = await tempDir();
    const signals = join(dir, "signals");
    await mkdir(signals);
    const path = join(dir, "store.lock");
    const log = join(dir, "log");
    await writeFile(log, "");
    const judged = `${await deadPid()} crashed-holding-it ${PID_SPACE}`;
    await writeFile(path, judged); // a writer killed in the lock
    const taking = `${path}.taking.${createHash("sha256").update(judged).digest("hex").slice(0, 16)}`;
    await link(path, taking); // a taker killed between its link() and its rm()
    const run = (role: string) =>
      new Promise<number | null>((resolve) =>
        spawn(process.execPath, [racer, path, role, signals, log], { stdio: "inherit" }).on("exit", resolve),
      );
    expect(await Promise.all([run("X"), run("W")])).toEqual([0, 0]);
    const lines = (await readFile(log, "utf8")).trim().split("\n");
    // One after the other, each still holding the lock when it left.
    expect(lines.map((l) => l.replace(/^[XW] /, ""))).toEqual(["in", "out true", "in", "out true"]);
    expect(lines[0]?.[0]).toBe(lines[1]?.[0]);
    expect((await readdir(dir)).sort()).toEqual(["log", "signals"]);
  }, 60_000);
});
