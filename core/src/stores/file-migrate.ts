/**
 * The file store's migration from format 1 (one JSON document, `secrets.json`, rewritten whole on
 * every write) to the log of format 2 (file-log.ts).
 *
 * Migration imports the document into the log as one batch and then removes the document:
 * 1. take format 1's own lock (`secrets.json.lock`, same protocol), so no format-1 writer (an older
 *    server still running) rewrites the document meanwhile;
 * 2. read it; if it has entries and none of them opens with the key ring, the key is wrong: stop
 *    (`ConfigError`) and change nothing;
 * 3. import every entry as a change stamped with its `updated_at`, through the store's own batch
 *    path (under the log's lock, fsynced). Changes are applied by `isNewer`, so importing the same
 *    document twice changes nothing, and an entry that a format-1 writer made after a first
 *    migration is taken in at the next open;
 * 4. remove the document and fsync the directory; release the lock.
 * A crash before 3 is durable leaves the document, which the next open migrates again; a crash
 * between 3 and 4 leaves both, and the next open's import is a no-op before the removal. Nothing is
 * lost at any point. The ciphertexts are copied as they are: `reencrypt` re-seals them if wanted.
 */
import { readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import * as z from "zod/mini";
import { type KeyRing, openSecret } from "../crypto";
import { ConfigError } from "../errors";
import type { Logger } from "../log";
import { StoreCorrupt } from "../store-errors";
import { describeIssues, issuesOf, safeParse } from "../validation";
import { withFileLock } from "./file-lock";
import { type Change, SEALED_WITH_ANOTHER_KEY } from "./file-log";

const V1_FILE = "secrets.json";

const EntrySchema = z.object({
  ciphertext: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
  description: z.optional(z.string()),
  tags: z.optional(z.record(z.string(), z.string())),
});

const DocumentSchema = z.object({
  format: z.literal("llm-secrets/file-store"),
  version: z.literal(1),
  secrets: z.record(z.string(), EntrySchema),
});

/** A change to import, numbered by the store when it is applied. */
export type ImportedChange = Omit<Change, "s">;

export interface MigrationContext {
  dir: string;
  keys: KeyRing;
  lockTimeoutMs: number;
  log: Logger;
  now: () => number;
  /**
   * Applies the changes as one durable batch, with the check values of every key of the ring (which
   * of them sealed which entry is not known); resolves with how many changes applied.
   */
  importBatch(changes: ImportedChange[]): Promise<number>;
  /** Fsyncs the data dir. */
  syncDirectory(): Promise<void>;
}

/** True when a format-1 document is in the data dir. */
export async function hasV1Document(dir: string): Promise<boolean> {
  try {
    await stat(join(dir, V1_FILE));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Imports `secrets.json` into the log and removes it. Resolves with the number of entries imported. */
export async function migrateV1(context: MigrationContext): Promise<{ entries: number; applied: number }> {
  const path = join(context.dir, V1_FILE);
  return withFileLock(
    `${path}.lock`,
    context.lockTimeoutMs,
    async () => {
      const entries = await readDocument(path);
      if (entries === undefined) return { entries: 0, applied: 0 }; // migrated meanwhile by another process
      const names = Object.keys(entries);
      if (names.length > 0 && !names.some((name) => opens(entries[name]?.ciphertext ?? "", context.keys))) {
        throw new ConfigError(
          `the data dir ${context.dir} holds a format-1 store (secrets.json) that ${SEALED_WITH_ANOTHER_KEY}: none of its ` +
            `${names.length} entries opens. Set LITELLM_SALT_KEY (or LITELLM_MASTER_KEY when no salt key is set) ` +
            "to the key it was sealed with, and list the keys it replaced in LLM_SECRETS_PREVIOUS_SALT_KEYS; nothing was changed",
        );
      }
      const now = context.now();
      const changes = names.map((name): ImportedChange => {
        const e = entries[name] as z.infer<typeof EntrySchema>;
        const updated = Date.parse(e.updated_at);
        const created = Date.parse(e.created_at);
        return {
          n: name,
          t: Number.isFinite(updated) ? updated : now,
          w: now,
          ...(Number.isFinite(created) && { c: created }),
          v: e.ciphertext,
          ...(e.description !== undefined && { d: e.description }),
          ...(e.tags !== undefined && { g: { ...e.tags } }),
        };
      });
      const applied = changes.length > 0 ? await context.importBatch(changes) : 0;
      await rm(path);
      await context.syncDirectory();
      return { entries: changes.length, applied };
    },
    { log: context.log },
  );
}

async function readDocument(path: string): Promise<Record<string, z.infer<typeof EntrySchema>> | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new StoreCorrupt("the format-1 file store secrets.json is not valid JSON; it was left untouched");
  }
  const parsed = safeParse(DocumentSchema, raw);
  if (!parsed.success) {
    throw new StoreCorrupt(
      `secrets.json is not an llm-secrets format-1 store (${describeIssues(issuesOf(parsed.error))}); it was left untouched`,
    );
  }
  return parsed.data.secrets;
}

function opens(ciphertext: string, keys: KeyRing): boolean {
  try {
    openSecret(ciphertext, keys);
    return true;
  } catch {
    return false;
  }
}
