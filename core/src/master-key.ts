/**
 * The generated master key of a laptop install: made once, on the first `serve` of a file store
 * without a configured key, and kept 0600 in the data dir. Its path is printed, never the key.
 *
 * Written whole or not at all: the key goes to a temporary file (0600, fsynced), which is then
 * linked to `master.key` (a link fails if the name exists, so two starts cannot both make one).
 * A start that stops half-way (a full disk, a kill) leaves no empty or partial key to refuse every
 * later start; a temporary file it left is removed by the next.
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError } from "./errors";
import { MASTER_KEY_FILE } from "./settings";

const TEMP_PREFIX = `.${MASTER_KEY_FILE}.`;

/** Creates `<dataDir>/master.key` unless it exists; returns its path and whether it was made now. */
export async function ensureMasterKeyFile(dataDir: string): Promise<{ path: string; created: boolean }> {
  const path = join(dataDir, MASTER_KEY_FILE);
  const temp = join(dataDir, `${TEMP_PREFIX}${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await removeLeftovers(dataDir);
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(`sk-${randomBytes(32).toString("base64url")}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await link(temp, path);
    return { path, created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return { path, created: false };
    throw new ConfigError(`cannot create the master key file ${path} (${(err as NodeJS.ErrnoException).code})`);
  } finally {
    await rm(temp, { force: true });
  }
}

/** Temporary key files a start that stopped half-way left: those of processes no longer running. */
async function removeLeftovers(dataDir: string): Promise<void> {
  const names = await readdir(dataDir);
  const left = names.filter((n) => {
    if (!n.startsWith(TEMP_PREFIX) || !n.endsWith(".tmp")) return false;
    const pid = Number(n.slice(TEMP_PREFIX.length).split(".", 1)[0]);
    return Number.isInteger(pid) && pid > 0 && !isRunning(pid);
  });
  await Promise.all(left.map((n) => rm(join(dataDir, n), { force: true })));
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // another user's process: running
  }
}
