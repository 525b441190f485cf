/**
 * The generated master key of a laptop install: made once, on the first `serve` of a file store
 * without a configured key, and kept 0600 in the data dir. Its path is printed, never the key.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError } from "./errors";
import { MASTER_KEY_FILE } from "./settings";

/** Creates `<dataDir>/master.key` unless it exists; returns its path and whether it was made now. */
export async function ensureMasterKeyFile(dataDir: string): Promise<{ path: string; created: boolean }> {
  const path = join(dataDir, MASTER_KEY_FILE);
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const handle = await open(path, "wx", 0o600);
    try {
      await handle.writeFile(`sk-${randomBytes(32).toString("base64url")}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return { path, created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return { path, created: false };
    throw new ConfigError(`cannot create the master key file ${path} (${(err as NodeJS.ErrnoException).code})`);
  }
}
