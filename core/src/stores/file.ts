/**
 * `file`: the embedded store. One JSON document (`secrets.json`) in the data dir, mode 0600, every
 * value sealed with the salt key (SPEC section 5).
 *
 * Writes are serialized and group-committed: mutations queued while a write is on disk go out
 * together in the next one. Each write re-reads the document under a lock file (so a CLI `put`
 * beside a running server loses nothing), writes a temp file, fsyncs it, renames it over the
 * document and fsyncs the directory. A crash leaves either the old or the new document, never a
 * mix; a promise resolves only after its write is durable.
 */
import { randomBytes } from "node:crypto";
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import * as z from "zod/mini";
import { type KeyRing, openSecret, sealSecret } from "../crypto";
import { BackendUnavailable } from "../errors";
import type { SecretMeta, SecretStore } from "../secret-store";
import { describeIssues, issuesOf } from "../validation";

export const STORE_FILE = "secrets.json";
const FORMAT = "llm-secrets/file-store";
const TEMP_FILE = /^secrets\.json\.(\d+)\.[0-9a-f]+\.tmp$/;

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
  #reloading: Promise<void> | undefined;
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
      entries.set(name, {
        ciphertext,
        created_at: previous?.created_at ?? now,
        updated_at: now,
        ...((meta.description ?? previous?.description) !== undefined && {
          description: meta.description ?? previous?.description,
        }),
        ...((meta.tags ?? previous?.tags) !== undefined && { tags: { ...(meta.tags ?? previous?.tags) } }),
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

  async close(): Promise<void> {
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
            // Read under the lock, not through a reload a reader started earlier: another
            // process may have written since.
            const next = new Map((await this.#readDocument()).entries);
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
          for (const m of batch) m.reject(err);
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
    }
  }

  /** Re-reads the document when another process (or a restart) changed it. Cheap: one stat. */
  async #reloadIfChanged(): Promise<void> {
    this.#reloading ??= this.#readDocument()
      .then(({ entries, stamp }) => {
        this.#entries = entries;
        this.#stamp = stamp;
      })
      .finally(() => {
        this.#reloading = undefined;
      });
    return this.#reloading;
  }

  /** The document as it is on disk now (the known one when its identity has not changed). */
  async #readDocument(): Promise<{ entries: Map<string, Entry>; stamp: string }> {
    let current: string;
    try {
      current = stampOf(await stat(this.path, { bigint: true }));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fsError(`cannot read ${this.path}`, err);
      return { entries: new Map(), stamp: "" };
    }
    if (current === this.#stamp) return { entries: this.#entries, stamp: this.#stamp };
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

  /** Temp files of writers that were killed mid-write. */
  async #removeOrphanTempFiles(): Promise<void> {
    for (const file of await readdir(this.#dir)) {
      const pid = TEMP_FILE.exec(file)?.[1];
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

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function fsError(what: string, err: unknown): Error {
  if (err instanceof BackendUnavailable) return err;
  return new BackendUnavailable(`${what} (${(err as NodeJS.ErrnoException).code ?? "error"})`, 1, { cause: err });
}

/**
 * A cross-process lock: a file created with O_EXCL holding the owner's pid. A lock whose owner
 * died (SIGKILL, power loss) is taken over; a live owner is waited for up to `timeoutMs`.
 */
async function withFileLock<T>(path: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
    try {
      const handle = await open(path, "wx", 0o600);
      try {
        await handle.writeFile(String(process.pid));
      } finally {
        await handle.close();
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    if (await lockIsStale(path)) {
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new BackendUnavailable(`the file store is locked by another process; if none is running, remove ${path}`);
    }
    await new Promise((r) => setTimeout(r, wait));
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}

async function lockIsStale(path: string): Promise<boolean> {
  try {
    const [text, info] = await Promise.all([readFile(path, "utf8"), stat(path)]);
    const pid = Number.parseInt(text, 10);
    // An empty lock is one being written right now, unless it is old (its writer died in between).
    if (!Number.isInteger(pid) || pid <= 0) return Date.now() - info.mtimeMs > 2_000;
    return !isAlive(pid);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT";
  }
}
