/**
 * `file`: the embedded store. One JSON document (`secrets.json`) in the data dir, mode 0600, every
 * value sealed with the salt key (SPEC section 5).
 *
 * Writes are serialized and group-committed: mutations queued while a write is on disk go out
 * together in the next one. Each write re-reads the document under a lock file (so a CLI `put`
 * beside a running server loses nothing), writes a temp file, fsyncs it, renames it over the
 * document and fsyncs the directory. A crash leaves either the old or the new document, never a
 * mix; a promise resolves only after its write is durable.
 *
 * Changes made by another process (a CLI `put` beside a server) are noticed through a directory
 * watch and reported to `watch` listeners, so caches above the store drop those names at once.
 */
import { randomBytes } from "node:crypto";
import { type FSWatcher, watch } from "node:fs";
import { type FileHandle, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import * as z from "zod/mini";
import { type KeyRing, openSecret, sealSecret } from "../crypto";
import { BackendUnavailable } from "../errors";
import type { SecretMeta, SecretStore } from "../secret-store";
import { describeIssues, issuesOf } from "../validation";
import { isAlive, withFileLock } from "./file-lock";

export const STORE_FILE = "secrets.json";
const FORMAT = "llm-secrets/file-store";
/** Files a killed writer can leave: temp documents, lock candidates and locks moved aside. */
const LEFTOVER = /^secrets\.json(?:\.lock(?:\.stale)?)?\.(\d+)\.[0-9a-f]+(?:\.tmp)?$/;

const EntrySchema = z.object({
  ciphertext: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
  description: z.optional(z.string()),
  tags: z.optional(z.record(z.string(), z.string())),
});
type Entry = z.infer<typeof EntrySchema>;

const DocumentSchema = z.object({
  format: z.literal(FORMAT),
  version: z.literal(1),
  secrets: z.record(z.string(), EntrySchema),
});

interface Pending {
  apply: (entries: Map<string, Entry>) => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export interface FileStoreOptions {
  dataDir: string;
  keys: KeyRing;
  /** How long a write waits for another process's lock before failing. */
  lockTimeoutMs?: number;
}

export class FileStore implements SecretStore {
  readonly kind = "file" as const;
  readonly envBacked = false;
  readonly path: string;
  readonly lockPath: string;
  readonly #dir: string;
  readonly #keys: KeyRing;
  readonly #lockTimeoutMs: number;
  /** The document as last read or written; values are ciphertexts. */
  #entries = new Map<string, Entry>();
  /** Identity (inode, size, mtime) of the document behind `#entries`; "" when absent. */
  #stamp = "";
  /**
   * Bumped when one of our writes starts and when it ends: a reload that overlaps a write (so may
   * hold the older document, or ours before we have taken it in) installs nothing.
   */
  #generation = 0;
  #reloading: { generation: number; promise: Promise<void> } | undefined;
  #watcher: FSWatcher | undefined;
  #onExternalChange: ((names: string[]) => void) | undefined;
  #queue: Pending[] = [];
  #flushing: Promise<void> | undefined;

  private constructor(options: FileStoreOptions) {
    this.#dir = options.dataDir;
    this.#keys = options.keys;
    this.#lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    this.path = join(this.#dir, STORE_FILE);
    this.lockPath = `${this.path}.lock`;
  }

  /** Opens (creating the data dir 0700 if needed) and reads the document once, so a corrupt one fails early. */
  static async open(options: FileStoreOptions): Promise<FileStore> {
    const store = new FileStore(options);
    try {
      await mkdir(store.#dir, { recursive: true, mode: 0o700 });
      await store.#removeOrphanTempFiles();
    } catch (err) {
      throw fsError(`cannot use the data dir ${store.#dir}`, err);
    }
    await store.#reloadIfChanged();
    return store;
  }

  async get(name: string): Promise<string | undefined> {
    await this.#reloadIfChanged();
    const entry = this.#entries.get(name);
    return entry === undefined ? undefined : openSecret(entry.ciphertext, this.#keys);
  }

  async put(name: string, value: string, meta: SecretMeta): Promise<{ created: boolean }> {
    const ciphertext = sealSecret(value, this.#keys);
    return this.#mutate((entries) => {
      const previous = entries.get(name);
      const now = new Date().toISOString();
      const fallback = previous ?? meta.whenCreated;
      const description = meta.description ?? fallback?.description;
      const tags = meta.tags ?? fallback?.tags;
      entries.set(name, {
        ciphertext,
        created_at: previous?.created_at ?? now,
        updated_at: now,
        ...(description !== undefined && { description }),
        ...(tags !== undefined && { tags: { ...tags } }),
      });
      return { created: previous === undefined };
    });
  }

  async delete(name: string): Promise<void> {
    await this.#mutate((entries) => entries.delete(name));
  }

  /** The names held, sorted. */
  async names(): Promise<string[]> {
    await this.#reloadIfChanged();
    return [...this.#entries.keys()].sort();
  }

  /**
   * Re-seals every value under the current salt key in one atomic write. If any value does not
   * open, nothing is written and the error names the entry.
   */
  async reencrypt(onProgress?: (done: number, total: number) => void): Promise<number> {
    return this.#mutate((entries) => {
      const total = entries.size;
      const resealed: [string, Entry][] = [];
      for (const [name, entry] of entries) {
        let plaintext: string;
        try {
          plaintext = openSecret(entry.ciphertext, this.#keys);
        } catch (err) {
          throw Object.assign(err as Error, { message: `${(err as Error).message} (entry ${name})` });
        }
        resealed.push([name, { ...entry, ciphertext: sealSecret(plaintext, this.#keys) }]);
        if (onProgress && (resealed.length % 1000 === 0 || resealed.length === total))
          onProgress(resealed.length, total);
      }
      for (const [name, entry] of resealed) entries.set(name, entry);
      return total;
    });
  }

  /** Reports names whose value another process changed, added or removed. */
  watch(onChange: (names: string[]) => void): void {
    this.#onExternalChange = onChange;
    if (this.#watcher) return;
    try {
      this.#watcher = watch(this.#dir, { persistent: false }, (_, file) => {
        if (file === null || file === STORE_FILE) this.#reloadIfChanged().catch(() => {});
      });
      this.#watcher.on("error", () => this.#watcher?.close());
    } catch {
      // No watching here (some network filesystems): caches fall back to their refresh interval.
    }
  }

  async close(): Promise<void> {
    this.#watcher?.close();
    this.#watcher = undefined;
    while (this.#flushing) await this.#flushing;
  }

  #mutate<T>(apply: (entries: Map<string, Entry>) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ apply, resolve: resolve as (value: unknown) => void, reject });
      this.#flushing ??= this.#flush();
    });
  }

  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0);
        let outcomes: ({ ok: true; value: unknown } | { ok: false; error: unknown })[] = [];
        try {
          await withFileLock(this.lockPath, this.#lockTimeoutMs, async () => {
            // Read under the lock, every time: another process may have written since, and a
            // rewrite can keep the same inode, size and (on coarse clocks) mtime.
            const current = await this.#readDocument(true);
            this.#reportExternal(this.#entries, current.entries);
            const next = new Map(current.entries);
            outcomes = batch.map((m) => {
              // Each mutation either throws before touching `next` or completes.
              try {
                return { ok: true, value: m.apply(next) };
              } catch (error) {
                return { ok: false, error };
              }
            });
            if (outcomes.some((o) => o.ok)) await this.#write(next);
          });
        } catch (err) {
          const error = fsError(`cannot lock ${this.lockPath}`, err);
          for (const m of batch) m.reject(error);
          continue;
        }
        batch.forEach((m, i) => {
          const o = outcomes[i];
          if (o?.ok) m.resolve(o.value);
          else m.reject(o?.error);
        });
      }
    } finally {
      this.#flushing = undefined;
    }
  }

  async #write(entries: Map<string, Entry>): Promise<void> {
    const document = { format: FORMAT, version: 1, secrets: Object.fromEntries(entries) };
    const temp = join(this.#dir, `${STORE_FILE}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
    let handle: FileHandle | undefined;
    this.#generation++; // odd while writing
    try {
      handle = await open(temp, "wx", 0o600);
      await handle.chmod(0o600);
      await handle.writeFile(`${JSON.stringify(document, null, 1)}\n`);
      await handle.sync();
      const stamp = stampOf(await handle.stat({ bigint: true }));
      await handle.close();
      handle = undefined;
      await rename(temp, this.path);
      await syncDirectory(this.#dir);
      this.#entries = entries;
      this.#stamp = stamp;
    } catch (err) {
      await handle?.close().catch(() => {});
      await rm(temp, { force: true }).catch(() => {});
      throw fsError(`cannot write ${this.path}`, err);
    } finally {
      this.#generation++;
    }
  }

  /** Re-reads the document when another process (or a restart) changed it. Cheap: one stat. */
  async #reloadIfChanged(): Promise<void> {
    const generation = this.#generation;
    // Join a reload only if no write of ours has landed since it began.
    if (this.#reloading?.generation === generation) return this.#reloading.promise;
    const promise = this.#readDocument(false)
      .then(({ entries, stamp }) => {
        if (this.#generation !== generation || generation % 2 === 1 || stamp === this.#stamp) return;
        this.#reportExternal(this.#entries, entries);
        this.#entries = entries;
        this.#stamp = stamp;
      })
      .finally(() => {
        if (this.#reloading?.promise === promise) this.#reloading = undefined;
      });
    this.#reloading = { generation, promise };
    return promise;
  }

  /** The document on disk; unless `fresh`, the known one when its identity has not changed. */
  async #readDocument(fresh: boolean): Promise<{ entries: Map<string, Entry>; stamp: string }> {
    let current: string;
    try {
      current = stampOf(await stat(this.path, { bigint: true }));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fsError(`cannot read ${this.path}`, err);
      return { entries: new Map(), stamp: "" };
    }
    if (!fresh && current === this.#stamp) return { entries: this.#entries, stamp: this.#stamp };
    let handle: FileHandle | undefined;
    let text: string;
    let stamp: string;
    try {
      handle = await open(this.path, "r");
      stamp = stampOf(await handle.stat({ bigint: true }));
      text = await handle.readFile("utf8");
    } catch (err) {
      throw fsError(`cannot read ${this.path}`, err);
    } finally {
      await handle?.close();
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new BackendUnavailable(`the file store ${this.path} is not valid JSON; it was left untouched`);
    }
    const parsed = DocumentSchema.safeParse(raw);
    if (!parsed.success) {
      throw new BackendUnavailable(
        `the file store ${this.path} is not an llm-secrets store document (${describeIssues(issuesOf(parsed.error))}); it was left untouched`,
      );
    }
    return { entries: new Map(Object.entries(parsed.data.secrets)), stamp };
  }

  #reportExternal(before: Map<string, Entry>, after: Map<string, Entry>): void {
    if (!this.#onExternalChange || before === after) return;
    const changed = [...new Set([...before.keys(), ...after.keys()])].filter(
      (name) => before.get(name)?.ciphertext !== after.get(name)?.ciphertext,
    );
    if (changed.length > 0) this.#onExternalChange(changed);
  }

  /** What writers killed mid-write left behind. */
  async #removeOrphanTempFiles(): Promise<void> {
    for (const file of await readdir(this.#dir)) {
      const pid = LEFTOVER.exec(file)?.[1];
      if (pid !== undefined && !isAlive(Number(pid))) await rm(join(this.#dir, file), { force: true });
    }
  }
}

function stampOf(s: { ino: bigint; size: bigint; mtimeNs: bigint }): string {
  return `${s.ino}:${s.size}:${s.mtimeNs}`;
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function fsError(what: string, err: unknown): Error {
  if (err instanceof BackendUnavailable) return err;
  return new BackendUnavailable(`${what} (${(err as NodeJS.ErrnoException).code ?? "error"})`, 1, { cause: err });
}
