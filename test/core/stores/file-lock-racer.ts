// A child process for the file lock tests: a taker of a dead owner's lock whose file calls are held
// at a few steps until the other taker (another such process) reaches one, through `<signals>/<step>`
// files; each hold lasts milliseconds, far within the lease. It then holds the lock 300 ms, and
// appends `<role> in` and `<role> out <stillHeld>` to `<log>`. A hold that its signal never ends
// (the other taker takes another way) ends after HOLD_MS.
// usage: file-lock-racer <lockPath> X|W <signalsDir> <log>
//
// The steps, as two waiters that saw a dead taker's taking name lapse at once took them before the
// fix: X's removal of the dead name waits until W is at its own; W's until X is about to remove the
// dead lock (through the name it has linked since); X's removal of the lock until W is about to
// remove it too (through the same name, linked again after removing X's); W's until X has linked its
// own lock. W then removes X's lock and links its own: two holders.
import { appendFileSync, existsSync, writeFileSync } from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { join } from "node:path";

const [lockPath, role, signals, log] = process.argv.slice(2) as [string, "X" | "W", string, string];
const HOLD_MS = 1_500;
const fsp = createRequire(import.meta.url)("node:fs/promises");
const { rm, link } = fsp;
const signal = (step: string) => writeFileSync(join(signals, step), "");
const waitFor = async (step: string) => {
  const until = performance.now() + HOLD_MS;
  while (!existsSync(join(signals, step)) && performance.now() < until) await new Promise((r) => setTimeout(r, 1));
};
let takingRemovals = 0;
let lockRemovals = 0;
fsp.rm = async (path: string, options: unknown) => {
  if (path.includes(".taking.") && ++takingRemovals === 1) {
    if (role === "X") await waitFor("W-at-taking");
    else {
      signal("W-at-taking");
      await waitFor("X-at-lock");
    }
  } else if (path === lockPath && ++lockRemovals === 1) {
    if (role === "X") {
      signal("X-at-lock");
      await waitFor("W-at-lock");
    } else {
      signal("W-at-lock");
      await waitFor("X-holds");
    }
  }
  return rm(path, options);
};
fsp.link = async (from: string, to: string) => {
  await link(from, to);
  if (role === "X" && to === lockPath) signal("X-holds");
};
syncBuiltinESMExports(); // the lock module's `import { rm, link } from "node:fs/promises"` now calls these

const { withFileLock } = await import("../../../core/src/stores/file-lock");
await withFileLock(lockPath, 20_000, async (lock) => {
  appendFileSync(log, `${role} in\n`);
  await new Promise((r) => setTimeout(r, 300));
  appendFileSync(log, `${role} out ${await lock.stillHeld()}\n`);
});
