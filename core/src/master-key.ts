/**
 * The generated master key of a laptop install: made once, on the first `serve` of a file store
 * without a configured key, and kept 0600 in the data dir. Its path is printed, never the key.
 *
 * Written whole or not at all: the key goes to a temporary file (0600, fsynced), which is then
 * linked to `master.key` (a link fails if the name exists, so two starts cannot both make one).
 * A start that stops half-way (a full disk, a kill) leaves no empty or partial key to refuse every
 * later start; a temporary file it left is removed by a later start once its process is gone and
 * an hour has passed. Without hard links (SMB, vfat), the key is written under its name directly.
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError } from "./errors";
import { requirePosixFiles } from "./local-files";
import { MASTER_KEY_FILE } from "./settings";
import { isAlive } from "./stores/file-lock";

const TEMP_PREFIX = `.${MASTER_KEY_FILE}.`;

/** Creates `<dataDir>/master.key` unless it exists; returns its path and whether it was made now. */
export async function ensureMasterKeyFile(dataDir: string): Promise<{ path: string; created: boolean }> {
  const path = join(dataDir, MASTER_KEY_FILE);
  const temp = join(dataDir, `${TEMP_PREFIX}${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const key = `sk-${randomBytes(32).toString("base64url")}\n`;
  requirePosixFiles();
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await removeLeftovers(dataDir);
    await writeNew(temp, key);
    await linkOrWrite(temp, path, key);
    return { path, created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return { path, created: false };
    throw new ConfigError(`cannot create the master key file ${path} (${(err as NodeJS.ErrnoException).code})`);
  } finally {
    await rm(temp, { force: true });
  }
}

/**
 * Links the written key to its name. A filesystem without hard links (SMB, vfat, some FUSE mounts)
 * gets the key written under its name directly (`wx`: never over another's).
 */
async function linkOrWrite(temp: string, path: string, key: string): Promise<void> {
  try {
    await link(temp, path);
    return;
  } catch (err) {
    if (!NO_HARD_LINKS.has((err as NodeJS.ErrnoException).code ?? "")) throw err;
  }
  await writeNew(path, key);
}

/** A new file (`wx`: never over another) holding `text`, 0600 and synced; on a failure, no file. */
async function writeNew(path: string, text: string): Promise<void> {
  const handle = await open(path, "wx", 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(path, { force: true });
    throw err;
  }
  await handle.close();
}

const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"]);
/** A start takes milliseconds: a temporary key file older than this is a leftover (any pid namespace). */
const LEFTOVER_AGE_MS = 60 * 60_000;

/** Temporary key files a start that stopped half-way left: those whose process is gone and that are an hour old. */
async function removeLeftovers(dataDir: string): Promise<void> {
  const names = (await readdir(dataDir)).filter((n) => n.startsWith(TEMP_PREFIX) && n.endsWith(".tmp"));
  const left = await Promise.all(
    names.map(async (n) => {
      const pid = Number(n.slice(TEMP_PREFIX.length).split(".", 1)[0]);
      if (!Number.isInteger(pid) || pid <= 0) return undefined;
      // Another pid namespace (a container sharing the dir) may reuse the number: age decides too.
      const written = (await stat(join(dataDir, n)).catch(() => undefined))?.mtimeMs;
      if (written === undefined) return undefined; // gone meanwhile
      return !isAlive(pid) && Date.now() - written > LEFTOVER_AGE_MS ? n : undefined;
    }),
  );
  await Promise.all(left.filter((n) => n !== undefined).map((n) => rm(join(dataDir, n), { force: true })));
}
