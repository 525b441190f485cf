/**
 * `file`: the embedded store. An append-only log in the data dir (`secrets.log`, format in
 * file-log.ts), mode 0600 in a 0700 directory, every value sealed with the salt key (SPEC section 5).
 *
 * Why a log, not one file per entry: a write appends one line and fsyncs one file, whatever the
 * number of entries (the format-1 document was rewritten whole: 203 ms a PUT at 20 000 entries).
 * One file per entry would also write a constant amount, but each write is then a temp file, an
 * fsync, a rename and a directory fsync (twice the syncs), a start reads 20 000 files, a directory
 * watch must tell our own renames from others', and a manifest (to record tombstones and key
 * checks) is a second thing to keep consistent. The log needs one lock, one fd and one inode; its
 * cost is compaction, which runs when the log is past twice the size of what it holds (and past
 * 1 MiB), so its work is paid for by the appends before it: O(1) a write, amortised.
 *
 * Records: the last change of each name: the sealed value, the change's time and event id (for
 * `ifNewerThan`), when it was written and created, description and tags; a delete leaves a
 * tombstone (the time, no value) that a compaction drops 14 days after it was written (the longest a
 * queue keeps a message). `version` is the change number, `updatedAt` the change's time.
 *
 * Writes are serialized and group-committed: changes queued while a batch is on disk go out together
 * in the next one. A batch takes the lock (file-lock.ts: a CLI `put` beside a running server loses
 * nothing), reads what other processes appended since it last looked, decides each change against
 * that (`stampOfChange`), appends one line, fdatasyncs it, and only then installs it in memory and
 * answers. A crash leaves at most a torn last line, which readers ignore and the next writer
 * truncates (file-log.ts); a whole line whose fdatasync fails stays, as a write that may have landed. A lock can be taken over from a live owner that stalled (file-lock.ts):
 * so a batch checks, just before it appends, that the log is still what it read (else it reads the
 * other writer's lines and decides again), appends through an O_APPEND fd (never over another's
 * line), and a rewrite checks that the lock is still ours before its rename. Compaction and `reencrypt` write a temp file, fsync it, rename it over the
 * log and fsync the directory: the old log or the new one, never a mix.
 *
 * Reads are off the write's critical path: the state (20 000 entries: a few MB) is in memory, and a
 * read is one `stat` of the log (to see another process's appends or compaction: new bytes are read
 * and applied, a new inode is read whole), a map lookup and the `openSecret` of one value. A read
 * never waits for the lock or an fsync, and while this process holds the lock (nobody else can
 * write) it does not even look. Changes other processes make are also noticed through a directory
 * watch (file-watch.ts) and reported to `watch` listeners, so caches above the store drop those
 * names at once. When watching cannot start or stops (inotify limits: ENOSPC, EMFILE), one warning
 * names the dir and the code, and watching is tried again after 1 s, doubling to 60 s; meanwhile a
 * cache above keeps what it holds until its lifetime ends (reads through the store still see every
 * change).
 *
 * Keys: the log records key check values of the keys that sealed it (file-log.ts). Opening with a
 * key ring that lacks one stops the start (`ConfigError`); an entry that then does not open is
 * `StoreCorrupt` (500 store_corrupt). One that another process records later (its new key's first
 * write, or a `reencrypt`) makes this process refuse reads and writes (`StoreCorrupt`) as soon as it
 * reads that line: its writes would mix keys. Previous salt keys open old entries; `reencrypt` re-seals
 * every value under the current key in one rewrite and records only that key's check value.
 *
 * A data dir in format 1 (`secrets.json`) is migrated on open (file-migrate.ts).
 */
import {
  closeSync,
  constants,
  fdatasync,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  statSync,
  write,
} from "node:fs";
import { type FileHandle, link, mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import * as z from "zod/mini";
import { type KeyRing, openSecret, openWithCurrent, sealSecret } from "../crypto";
import { ConfigError, EncryptionKeyMissing, SecretsError } from "../errors";
import { ignoresModes, requirePosixFiles } from "../local-files";
import { type Logger, silentLogger } from "../log";
import {
  type ChangeStamp,
  type DeleteOptions,
  type DeleteOutcome,
  isNewer,
  type ListOptions,
  type NamePage,
  type PutOptions,
  type PutOutcome,
  pageOfNames,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
  stampOfChange,
} from "../secret-store";
import { BackendUnavailable, classifyBackendError, StoreCorrupt, StoreUnavailable } from "../store-errors";
import { type HeldLock, leftBehind, ownFileName, removeTakingLeftovers, withFileLock } from "./file-lock";
import {
  type Batch,
  type Change,
  FORMAT,
  frame,
  type Header,
  keyCheckOf,
  LOG_FILE,
  LOG_VERSION,
  parseLog,
  SEALED_WITH_ANOTHER_KEY,
} from "./file-log";
import { hasV1Document, type ImportedChange, migrateV1 } from "./file-migrate";
import { DataDirWatch, type WatchDir, watchDir } from "./file-watch";

export type { WatchDir };

/** A compaction drops tombstones written longer ago than this (the longest a queue keeps a message). */
export const TOMBSTONE_LIFETIME_MS = 14 * 24 * 60 * 60 * 1000;
/**
 * The log's fd: read and written (reads at offsets, writes always at its end, even past a writer that
 * appended after we looked), never created.
 */
const LOG_FLAGS = constants.O_RDWR | constants.O_APPEND;
/** A log smaller than this is never compacted. */
const COMPACT_MIN_BYTES = 1024 * 1024;
/** Changes per line when the whole state is written (compaction, reencrypt). */
const SNAPSHOT_LINE = 512;
/**
 * And at most this many bytes a line (a single change past it goes alone): 512 values near the
 * store's 1 MiB limit, sealed, made a line longer than the longest string V8 can build (~512 MiB),
 * and every rewrite (`reencrypt`, compaction) of such a store failed.
 */
const SNAPSHOT_LINE_BYTES = 8 * 1024 * 1024;
/** Files killed processes can leave: temp logs and documents, lock candidates and locks moved aside. */
const LEFTOVER = /^secrets\.(?:json|log)(?:\.lock(?:\.stale)?)?\.(\d+)\.([0-9a-f]+)(?:\.tmp)?$/;

export interface FileStoreOptions {
  dataDir: string;
  keys: KeyRing;
  log?: Logger;
  now?: () => number;
  /** How long a write waits for another process's lock before failing. */
  lockTimeoutMs?: number;
  /** Starts watching the data dir (`fs.watch`, not persistent); tests make it fail. */
  watchDir?: WatchDir;
  /**
   * `false`: a data dir that does not exist, or holds no store, is refused, not made
   * (`StoreDeps.create`): a command run from another working dir, or a typo in LLM_SECRETS_DATA_DIR,
   * would answer from an empty store made there (`get`: not found; `reencrypt`: 0 re-sealed, and the
   * old key then dropped).
   */
  create?: boolean;
}

/** A change's answer: its outcome, or the refusal of it alone (the batch's others go on). */
type Outcome = PutOutcome | DeleteOutcome | SecretsError;

type Pending =
  | { kind: "put"; name: string; sealed: string; options: PutOptions; settle: Settle<PutOutcome> }
  | { kind: "delete"; name: string; options: DeleteOptions; settle: Settle<DeleteOutcome> };

interface Settle<T> {
  resolve(value: T): void;
  reject(err: unknown): void;
}

export class FileStore implements SecretStore {
  readonly kind = "file" as const;
  readonly tombstoneMs = TOMBSTONE_LIFETIME_MS;
  /** The data dir, for messages. */
  readonly location: string;
  readonly #logPath: string;
  readonly #lockPath: string;
  readonly #keys: KeyRing;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #lockTimeoutMs: number;
  readonly #dirWatch: DataDirWatch;

  /** The last change of each name, tombstones included. */
  #entries = new Map<string, Change>();
  /** Key check values of the keys that sealed the log. */
  #keyChecks = new Set<string>();
  /** The last change number seen. */
  #seq = 0;
  /**
   * Bytes the state takes in a compacted log: what the last rewrite wrote, then kept up to date with
   * the UTF-8 size of each change's JSON as changes replace one another (`#sizes`, by name).
   */
  #liveBytes = 0;
  #sizes = new Map<string, number>();
  /** After a failed compaction, the log size at which the next one is tried. */
  #compactRetryAt = 0;
  /**
   * A line of ours stayed in the log though its fdatasync failed: the kernel may have dropped its
   * pages (marked clean, never written), leaving a hole under the lines after it. The next turn
   * under the lock rewrites the log first (fsynced temp file, rename), as a compaction does.
   */
  #unsynced = false;
  /** The open log: its fd (read with sync calls, appended with async ones), inode and the bytes applied. */
  #fd: number | undefined;
  #ino = -1;
  #end = 0;
  /** The log as last read whole, when its tail did not read (see `#readChanges`). */
  #unreadableTail: { ino: number; size: number; error?: unknown } | undefined;
  /** Why the log cannot be read with our keys since another process re-sealed it, if it cannot. */
  #foreignKeys: string | undefined;

  /** True while this process holds the lock inside a write: nobody else can change the log. */
  #locked = false;
  /** The lock held meanwhile, to check before a rename that it was not taken over. */
  #lock: HeldLock | undefined;
  #pending: Pending[] = [];
  #flushing: Promise<void> | undefined;
  /** Serializes this process's turns at the lock (batches, compaction, reencrypt). */
  #turn: Promise<unknown> = Promise.resolve();
  #onExternalChange: ((names: string[]) => void) | undefined;
  #closed = false;
  /** Whether a read has already looked at the log in this turn of the event loop (`#readChanges`). */
  #lookedThisTurn = false;
  /** What that look threw, if it failed: the turn's later reads throw it too. */
  #turnError: unknown;
  /** Whether a `store_unavailable` failure was logged since the last successful write. */
  #unusableLogged = false;

  private constructor(options: FileStoreOptions) {
    this.location = options.dataDir;
    this.#logPath = join(options.dataDir, LOG_FILE);
    this.#lockPath = `${this.#logPath}.lock`;
    this.#keys = options.keys;
    this.#log = options.log ?? silentLogger;
    this.#now = options.now ?? Date.now;
    this.#lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    this.#dirWatch = new DataDirWatch({
      dir: this.location,
      watchDir: options.watchDir ?? watchDir,
      log: this.#log,
      now: this.#now,
      readChanges: () => this.#readChanges("watch"),
    });
  }

  /**
   * Another local user who can write the data dir can swap the log or the lock, and one who can write
   * the log can append a delete or an older value (its lines carry a checksum, not a key): a group-
   * or world-writable dir or log stops the start. A readable dir only warns (every value is sealed).
   */
  #checkPermissions(): void {
    const mode = statSync(this.location).mode & 0o777;
    const octal = mode.toString(8).padStart(3, "0");
    if (mode & 0o022) {
      throw new ConfigError(
        `the data dir ${this.location} is writable by its group or by everyone (mode ${octal}): chmod 700 it${ignoresModes(mode)}`,
      );
    }
    const logMode = (statSync(this.#logPath, { throwIfNoEntry: false })?.mode ?? 0) & 0o777;
    if (logMode & 0o022) {
      throw new ConfigError(
        `the log ${this.#logPath} is writable by its group or by everyone (mode ${logMode.toString(8).padStart(3, "0")}): chmod 600 it`,
      );
    }
    if (mode & 0o044) {
      this.#log.warn("the data dir is readable by its group or by everyone: chmod 700 it", {
        dir: this.location,
        mode: octal,
      });
    }
  }

  /**
   * Opens the data dir (made 0700 if missing, unless `create` is false), creating the log or
   * migrating a format-1 document, and reads the log once: a damaged log or a wrong key fails here,
   * not at the first request.
   */
  static async open(options: FileStoreOptions): Promise<FileStore> {
    requirePosixFiles();
    const store = new FileStore(options);
    const dir = store.location;
    try {
      if (statSync(dir, { throwIfNoEntry: false })?.isDirectory() === false) {
        throw new StoreUnavailable(`the data dir ${dir} is not a directory`);
      }
      // A dir that holds no log (nor a format-1 document to migrate) is no store either: a data dir
      // pointed at $HOME got a log made there.
      const there = exists(dir);
      if (options.create === false && !exists(store.#logPath) && !(there && (await hasV1Document(dir)))) {
        const what = there ? `the data dir holds no ${LOG_FILE}` : "the data dir does not exist";
        throw new ConfigError(
          `no file store at ${dir}: ${what} (LLM_SECRETS_DATA_DIR; by default .llm-secrets in the ` +
            "working dir): run the command where the store is or set LLM_SECRETS_DATA_DIR to it (`llm-secrets put` or `serve` makes a new one)",
        );
      }
      await mkdir(dir, { recursive: true, mode: 0o700 });
      store.#checkPermissions();
      await store.#removeLeftovers();
      await store.#createLogIfMissing();
    } catch (err) {
      throw err instanceof ConfigError ? err : classifyBackendError(err, `file store open of ${dir}`);
    }
    try {
      store.#reload(false);
      if (store.#foreignKeys !== undefined) {
        throw new ConfigError(
          `the data dir ${dir} ${SEALED_WITH_ANOTHER_KEY}: set LITELLM_SALT_KEY (or LITELLM_MASTER_KEY when no salt ` +
            "key is set) to the key it was sealed with, and list the keys it replaced in LLM_SECRETS_PREVIOUS_SALT_KEYS; " +
            "`llm-secrets reencrypt` then re-seals it under the current key",
        );
      }
      if (await hasV1Document(dir)) {
        const migrated = await migrateV1({
          dir,
          keys: store.#keys,
          lockTimeoutMs: store.#lockTimeoutMs,
          log: store.#log,
          now: store.#now,
          importBatch: (changes) => store.#import(changes),
          syncDirectory: () => syncDirectory(dir),
        });
        store.#log.info("file store: migrated secrets.json (format 1) into secrets.log", {
          entries: migrated.entries,
          applied: migrated.applied,
        });
      }
      if (store.#shouldCompact()) {
        // Best effort: a store that cannot be compacted now (the lock is busy) still opens.
        await store.compact().catch((err: unknown) =>
          store.#log.warn("file store: compaction at open failed; the next write retries it", {
            code: err instanceof SecretsError ? err.code : "internal",
          }),
        );
      }
    } catch (err) {
      store.#closeFd();
      throw err instanceof ConfigError ? err : classifyBackendError(err, `file store open of ${dir}`);
    }
    return store;
  }

  keyOf(name: string): string {
    return name;
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    this.#readChanges("read");
    // Sealed under a key this process lacks, it cannot answer for any name, held or not (/ready
    // reads one it does not hold): refused before "absent".
    if (this.#foreignKeys !== undefined) throw new StoreCorrupt(this.#foreignKeys);
    const change = this.#entries.get(name);
    if (change?.v === undefined) return undefined;
    let value: string;
    try {
      value = openSecret(change.v, this.#keys);
    } catch (err) {
      throw new StoreCorrupt(`the file store's entry ${name} does not open with the configured salt keys`, {
        cause: err,
      });
    }
    return {
      value,
      version: String(change.s),
      updatedAt: new Date(change.t),
      ...(change.g !== undefined && { tags: change.g }),
    };
  }

  /** Whether `name` is held, from the index: no value is opened, so it answers under a key this process lacks too. */
  async has(name: string): Promise<boolean> {
    this.#readChanges("read");
    return this.#entries.get(name)?.v !== undefined;
  }

  put(name: string, value: string, options: PutOptions = {}): Promise<PutOutcome> {
    return new Promise<PutOutcome>((resolve, reject) => {
      this.#enqueue({ kind: "put", name, sealed: sealSecret(value, this.#keys), options, settle: { resolve, reject } });
    });
  }

  delete(name: string, options: DeleteOptions = {}): Promise<DeleteOutcome> {
    return new Promise<DeleteOutcome>((resolve, reject) => {
      this.#enqueue({ kind: "delete", name, options, settle: { resolve, reject } });
    });
  }

  /** A page of the names held (tombstones are not), from the state as of now. */
  async list(options: ListOptions): Promise<NamePage> {
    return pageOfNames(await this.names(), options);
  }

  /** The names held (tombstones are not), sorted. */
  async names(): Promise<string[]> {
    this.#readChanges("read");
    return [...this.#entries.values()]
      .filter((c) => c.v !== undefined)
      .map((c) => c.n)
      .sort();
  }

  /**
   * What `reencrypt` would move: the current salt key's check (as the log's header records keys,
   * never the key), how many values do not open with the current key alone (each is opened: what
   * the log records of its keys is not enough, since a format-1 migration records the keys the
   * migrating process had, not those that sealed), and whether the log names another key (a start
   * then needs it in its ring, until a rewrite drops it).
   */
  keyState(): { current: string; elsewhere: number; others: boolean } {
    this.#readChanges("read");
    const current = keyCheckOf(this.#keys.current);
    let elsewhere = 0;
    for (const change of this.#entries.values()) {
      if (change.v !== undefined && openWithCurrent(change.v, this.#keys) === undefined) elsewhere++;
    }
    return { current, elsewhere, others: [...this.#keyChecks].some((k) => k !== current) };
  }

  /**
   * Re-seals every value under the current salt key in one rewrite of the log, and records only the
   * current key's check value. All or nothing: if any value does not open, nothing is written and
   * the error names the entry. Resolves with the number of values re-sealed.
   */
  reencrypt(onProgress?: (done: number, total: number) => void): Promise<number> {
    return this.#typed("file store reencrypt", async () => {
      const changes = [...this.#entries.values()];
      const total = changes.reduce((n, c) => n + (c.v === undefined ? 0 : 1), 0);
      const resealed: Change[] = [];
      let done = 0;
      for (const change of changes) {
        if (change.v === undefined) {
          resealed.push(change);
          continue;
        }
        let plaintext: string;
        try {
          plaintext = openSecret(change.v, this.#keys);
        } catch (err) {
          throw new StoreCorrupt(
            `the file store's entry ${change.n} does not open with the configured salt keys; nothing was re-sealed`,
            { cause: err },
          );
        }
        resealed.push({ ...change, v: sealSecret(plaintext, this.#keys) });
        done++;
        if (done % 1000 === 0) {
          onProgress?.(done, total);
          await new Promise((r) => setImmediate(r)); // let reads through
        }
      }
      await this.#rewrite(resealed, [keyCheckOf(this.#keys.current)]);
      for (const change of resealed) this.#set(change);
      this.#liveBytes = this.#end; // what the rewrite wrote: the state, exactly
      onProgress?.(total, total);
      return total;
    });
  }

  /** Writes the state afresh, without superseded changes and expired tombstones. */
  compact(): Promise<void> {
    return this.#typed("file store compaction", () => this.#compactNow());
  }

  /**
   * `classifyBackendError`; a failure that means the data dir cannot be used here (permissions, a
   * read-only or full disk: `store_unavailable`) is logged once with the dir and the system's code,
   * since the answer names no path; again only after a write has succeeded in between.
   */
  #classify(err: unknown, what: string): SecretsError {
    const error = classifyBackendError(err, what);
    if (error instanceof StoreUnavailable && !this.#closed && !this.#unusableLogged) {
      this.#unusableLogged = true;
      const cause = (err as NodeJS.ErrnoException | undefined)?.code;
      this.#log.error("file store: the data dir cannot be used", {
        dir: this.location,
        op: what,
        cause: typeof cause === "string" ? cause : undefined,
      });
    }
    return error;
  }

  /** `#exclusive`, with a failure of the filesystem (or the lock) passed through `#classify`. */
  #typed<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return this.#exclusive(fn).catch((err: unknown) => {
      throw this.#classify(err, what);
    });
  }

  /** Reports names that another process changed, added or removed (file-watch.ts). */
  watch(onChange: (names: string[]) => void): void {
    this.#onExternalChange = onChange;
    this.#dirWatch.start();
  }

  async close(): Promise<void> {
    this.#dirWatch.close();
    while (this.#flushing) await this.#flushing;
    await this.#turn;
    if (this.#unsynced) {
      // A line whose sync failed is still to be made durable (a CLI `put` ends right after it):
      // the rewrite runs now rather than be left to a writer that does not know of it.
      await this.#exclusive(async () => {}).catch((err: unknown) => {
        const error = this.#classify(err, "file store rewrite at close");
        this.#log.warn("file store: a line whose sync failed could not be rewritten at close", { code: error.code });
      });
    }
    this.#closed = true;
    this.#closeFd();
  }

  // -------------------------------------------------------------------------------------------
  // writes

  #enqueue(pending: Pending): void {
    if (this.#closed) {
      pending.settle.reject(new StoreUnavailable("the file store is closed"));
      return;
    }
    this.#pending.push(pending);
    this.#flushing ??= this.#flush();
  }

  async #flush(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending.splice(0);
        try {
          const outcomes = await this.#exclusive(() => this.#commit(batch));
          for (const [i, p] of batch.entries()) {
            const outcome = outcomes[i];
            if (outcome instanceof SecretsError) p.settle.reject(outcome);
            else (p.settle.resolve as (o: unknown) => void)(outcome);
          }
          this.#unusableLogged = false;
        } catch (err) {
          const error = this.#classify(err, "file store write");
          for (const p of batch) p.settle.reject(error);
        }
        // The batch is answered: it is durable and installed whatever a compaction then does.
        if (this.#shouldCompact()) this.#compactInTurn();
      }
    } finally {
      this.#flushing = undefined;
    }
  }

  /**
   * Decides each change against the state, appends the ones that apply. If the log grew or was
   * replaced after we read it (a writer that still believed it held the lock, after a take-over),
   * what it wrote is read and the batch decided again: its changes are kept, not written over.
   */
  async #commit(batch: Pending[]): Promise<Outcome[]> {
    for (let attempt = 1; ; attempt++) {
      const decided = this.#decide(batch);
      if (decided.changes.length === 0) return decided.outcomes;
      if (this.#logMoved()) {
        if (attempt === 3) throw new BackendUnavailable("the file store's log keeps changing under its lock; retry");
        if (attempt > 1) await new Promise((r) => setTimeout(r, 10)); // its line may be half-written
        this.#readChanges("contested");
        if (this.#foreignKeys !== undefined) throw new StoreCorrupt(this.#foreignKeys);
        continue;
      }
      const current = keyCheckOf(this.#keys.current);
      const adds = decided.seals && !this.#keyChecks.has(current);
      await this.#append(adds ? { changes: decided.changes, keys: [current] } : { changes: decided.changes });
      return decided.outcomes;
    }
  }

  /** Whether the log is no longer what we read: another inode at its path, or other bytes past our end. */
  #logMoved(): boolean {
    const fd = this.#openFd();
    try {
      return fstatSync(fd).size !== this.#end || statSync(this.#logPath).ino !== this.#ino;
    } catch (err) {
      throw this.#classify(err, "file store write");
    }
  }

  /**
   * Decides each change against the state (and those before it in the batch). A change the rule
   * refuses (an event over a record dated far ahead) is that change's answer alone: the batch's
   * other changes are decided and written.
   */
  #decide(batch: Pending[]): { outcomes: Outcome[]; changes: Change[]; seals: boolean } {
    const now = this.#now();
    const overlay = new Map<string, Change>();
    const changes: Change[] = [];
    let seq = this.#seq;
    let seals = false;
    const outcomes = batch.map((p): Outcome => {
      const previous = overlay.get(p.name) ?? this.#entries.get(p.name);
      const live = previous?.v !== undefined ? previous : undefined;
      const isDelete = p.kind === "delete";
      let stamp: ChangeStamp | undefined;
      try {
        stamp = stampOfChange(p.options.ifNewerThan, isDelete, previous && stampOf(previous), !live, now);
      } catch (err) {
        if (err instanceof SecretsError) return err;
        throw err;
      }
      if (stamp === undefined) return "superseded";
      let change: Change = { s: ++seq, n: p.name, t: stamp.at, ...(stamp.id !== undefined && { i: stamp.id }), w: now };
      if (p.kind === "put") {
        seals = true;
        const meta = p.options.meta ?? {};
        const description = meta.description ?? (live ? live.d : meta.whenCreated?.description);
        const tags = meta.tags ?? (live ? live.g : meta.whenCreated?.tags);
        change = {
          ...change,
          c: live?.c ?? now,
          v: p.sealed,
          ...(description !== undefined && { d: description }),
          ...(tags !== undefined && { g: { ...tags } }),
        };
      }
      overlay.set(p.name, change);
      changes.push(change);
      if (isDelete) return live ? "deleted" : "absent";
      return live ? "updated" : "created";
    });
    return { outcomes, changes, seals };
  }

  /** Migration's import: each change applies when it is newer than what the log records. */
  #import(imported: ImportedChange[]): Promise<number> {
    return this.#exclusive(async () => {
      let seq = this.#seq;
      const changes: Change[] = [];
      for (const c of imported) {
        const previous = this.#entries.get(c.n);
        const recorded = previous && stampOf(previous);
        if (!isNewer({ at: c.t }, false, recorded, previous?.v === undefined)) continue;
        changes.push({ s: ++seq, ...c });
      }
      // The entries were sealed by a key of the ring (at least one opens), which one is not known.
      const keys = this.#keys.all.map(keyCheckOf).filter((k) => !this.#keyChecks.has(k));
      if (changes.length > 0) await this.#append({ changes, ...(keys.length > 0 && { keys }) });
      return changes.length;
    });
  }

  /** Appends one batch and makes it durable, then installs it. Under the lock. */
  async #append(batch: Batch): Promise<void> {
    const fd = this.#openFd();
    const line = frame(batch);
    try {
      await appendAll(fd, line);
    } catch (err) {
      // Take back the part of the line that reached the file: it has no newline yet, so no reader
      // has taken it in, and it was not acknowledged.
      try {
        ftruncateSync(fd, this.#end);
      } catch {
        // The next writer truncates it as a torn tail.
      }
      throw err;
    }
    // A whole line stays when its sync fails: another process may have read it already, and taking
    // it back would leave that reader's place in the log inside the next line. The write fails as
    // one that may have landed (the manager ends the cached value), and the next look at the log
    // takes the line in, here as in every other process; the next turn rewrites the log.
    await datasync(fd).catch((err: unknown) => {
      this.#unsynced = true;
      throw err;
    });
    const alone = fstatSync(fd).size === this.#end + line.length && statSync(this.#logPath).ino === this.#ino;
    // And the lock still ours: one taken over (our lease lapsed while we stalled) may have a
    // compaction under way that read the log before our line and will replace it. Once this says
    // ours, a takeover comes after our line, and the next owner reads it before anything else.
    if (alone && (this.#lock === undefined || (await this.#lock.stillHeld()))) {
      this.#end += line.length;
      this.#apply(batch);
    } else {
      // Another writer appended between our check and our write, or replaced the log (a compaction:
      // our line went to the file it unlinked), or holds the lock now: the lock was not ours alone
      // (a lease that lapsed under a stalled owner). What is in the log is read in the order it
      // landed; ours was decided without the other's, so the write is not answered as done: it
      // fails as one that may have landed (a retry decides again).
      this.#readChanges("contested");
      throw new BackendUnavailable(
        "another writer appended to the file store's log at the same time; the write may have landed: retry",
      );
    }
  }

  #shouldCompact(): boolean {
    return this.#end > COMPACT_MIN_BYTES && this.#end > 2 * this.#liveBytes && this.#end >= this.#compactRetryAt;
  }

  /**
   * Compacts in a turn of its own, after the writes that made the log grow were answered. Best
   * effort: a failure (a full disk) is logged (its code, never a value) and retried once the log has
   * grown by half again, so a write is not made to pay for a rewrite that keeps failing.
   */
  #compactInTurn(): void {
    this.compact().catch((err: unknown) => {
      this.#compactRetryAt = this.#end + Math.floor(this.#end / 2);
      const error = this.#classify(err, "file store compaction");
      const cause = ((error.cause ?? err) as NodeJS.ErrnoException | undefined)?.code; // ENOSPC and the like
      this.#log.warn("file store: compaction failed; a later write retries it", {
        code: error.code,
        ...(typeof cause === "string" && /^E[A-Z]+$/.test(cause) && { cause }),
      });
    });
  }

  async #compactNow(): Promise<void> {
    const cutoff = this.#now() - TOMBSTONE_LIFETIME_MS;
    const kept: Change[] = [];
    const expired: Change[] = [];
    for (const c of this.#entries.values()) (c.v === undefined && c.w < cutoff ? expired : kept).push(c);
    await this.#rewrite(kept, [...this.#keyChecks]);
    // The state is the same but for the expired tombstones (nothing changes it while we hold the lock).
    for (const c of expired) {
      this.#entries.delete(c.n);
      this.#sizes.delete(c.n);
    }
    this.#liveBytes = this.#end; // what the rewrite wrote: the state, exactly
    // What killed writers left (a crash-looping container's temp files, each up to the log's size)
    // goes here too, not only at an open a minute after them. Best effort.
    await this.#removeLeftovers().catch(() => {});
  }

  /**
   * Replaces the log with `changes` (the whole state) and key checks `keys`: a temp file, fsynced,
   * renamed over the log, the directory fsynced. Under the lock; the caller updates the entries.
   */
  async #rewrite(changes: Change[], keys: string[]): Promise<void> {
    const header: Header = { format: FORMAT, version: LOG_VERSION, seq: this.#seq, keys };
    const size = await this.#writeLogFile(header, changes);
    const fd = openSync(this.#logPath, LOG_FLAGS);
    const ino = fstatSync(fd).ino;
    this.#closeFd();
    this.#fd = fd;
    this.#ino = ino;
    this.#end = size;
    this.#keyChecks = new Set(keys);
    this.#checkKeys();
    this.#compactRetryAt = 0;
  }

  /**
   * Writes a complete log through a temp file and a rename; resolves with its size. `create`: only
   * where there is no log (a hard link, which fails if one exists), never over one: a first opener
   * that stalled past its lease must not replace the log another writer made meanwhile.
   */
  async #writeLogFile(header: Header, changes: Change[], create = false): Promise<number> {
    const temp = join(this.location, ownFileName(LOG_FILE, ".tmp"));
    let handle: FileHandle | undefined;
    try {
      handle = await open(temp, "wx", 0o600);
      await handle.chmod(0o600);
      // Whole lines one after another: `writeFile` on a handle writes on until every byte is in
      // (a write() on a disk that fills takes part of a line and says so; the next one fails).
      const first = frame(header);
      await handle.writeFile(first);
      let size = first.length;
      // A few hundred changes a line, written one line at a time: the event loop stays free.
      for (let i = 0; i < changes.length; ) {
        let end = i + 1;
        let bytes = sizeOf(changes[i] as Change);
        while (end < changes.length && end - i < SNAPSHOT_LINE) {
          bytes += sizeOf(changes[end] as Change);
          if (bytes > SNAPSHOT_LINE_BYTES) break;
          end++;
        }
        const line = frame({ changes: changes.slice(i, end) });
        i = end;
        await handle.writeFile(line);
        size += line.length;
      }
      await handle.sync();
      await handle.close();
      handle = undefined;
      // A lock taken over meanwhile: another writer may have appended to the log we would replace.
      if (this.#lock !== undefined && !(await this.#lock.stillHeld())) {
        throw new BackendUnavailable(
          "the file store's lock was taken over during a rewrite; the log was left as it was",
        );
      }
      if (create) {
        await link(temp, this.#logPath).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "EEXIST") throw err; // another writer made it: theirs stands
        });
        await rm(temp, { force: true });
      } else {
        await rename(temp, this.#logPath);
      }
      await syncDirectory(this.location);
      return size;
    } catch (err) {
      await handle?.close().catch(() => {});
      await rm(temp, { force: true }).catch(() => {});
      throw err;
    }
  }

  /** Creates an empty log (a header) unless there is one. */
  async #createLogIfMissing(): Promise<void> {
    if (exists(this.#logPath)) return;
    await withFileLock(
      this.#lockPath,
      this.#lockTimeoutMs,
      async () => {
        if (exists(this.#logPath)) return;
        await this.#writeLogFile({ format: FORMAT, version: LOG_VERSION, seq: 0, keys: [] }, [], true);
      },
      { log: this.#log },
    );
  }

  /**
   * Runs `fn` holding the lock, after this process's earlier turns, with the state caught up with
   * what other processes appended. Reads do not look at the log meanwhile.
   */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#turn.then(() => {
      if (this.#closed) throw new StoreUnavailable("the file store is closed");
      return withFileLock(
        this.#lockPath,
        this.#lockTimeoutMs,
        async (lock) => {
          this.#locked = true;
          this.#lock = lock;
          try {
            this.#readChanges("lock");
            // Another process re-sealed the log under a key we lack: our writes would mix keys.
            if (this.#foreignKeys !== undefined) throw new StoreCorrupt(this.#foreignKeys);
            if (this.#unsynced) {
              await this.#compactNow(); // the state, the unsynced line's included, made durable anew
              this.#unsynced = false;
            }
            return await fn();
          } finally {
            this.#locked = false;
            this.#lock = undefined;
          }
        },
        { log: this.#log },
      );
    });
    this.#turn = run.catch(() => {});
    return run;
  }

  // -------------------------------------------------------------------------------------------
  // reads

  /**
   * Brings the state up to date with the log: new bytes of the same file are read and applied; a
   * new file (another process compacted or re-sealed) is read whole. Synchronous, so nothing else
   * runs meanwhile; cheap when nothing changed (one `stat`). `lock`: called holding the lock, so a
   * torn or damaged last line is truncated rather than waited for.
   */
  #readChanges(why: "read" | "watch" | "lock" | "contested"): void {
    if (this.#closed) throw new StoreUnavailable("the file store is closed");
    if (this.#locked && (why === "read" || why === "watch")) return; // we are writing: nobody else can
    // One look per turn of the event loop: the reads of one turn (a resolve's batch of names)
    // share it, as if they had run at once, its failure too (the look that failed left the index
    // as it was: a read after it answered from that, as if nothing were wrong).
    if (why === "read" && this.#lookedThisTurn) {
      if (this.#turnError !== undefined) throw this.#turnError;
      return;
    }
    if (why !== "read") {
      this.#catchUp(why);
      return;
    }
    this.#lookedThisTurn = true;
    setImmediate(() => {
      this.#lookedThisTurn = false;
      this.#turnError = undefined;
    });
    try {
      this.#catchUp(why);
    } catch (err) {
      this.#turnError = err;
      throw err;
    }
  }

  /** `#readChanges`'s look: the log's appends since ours read, or the whole log when it was replaced. */
  #catchUp(why: "read" | "watch" | "lock" | "contested"): void {
    let size: number;
    let ino: number;
    try {
      ({ size, ino } = statSync(this.#logPath));
    } catch (err) {
      throw this.#classify(err, "file store read");
    }
    if (ino !== this.#ino || size < this.#end) {
      this.#reload(why === "lock");
      return;
    }
    if (size === this.#end) return;
    // A log read whole already, whose tail does not read (a power loss's zeros; or corrupt), is not
    // read again until it changes: only a writer under the lock drops such a tail, and a reader
    // (a gateway that only reads keys) would otherwise reparse the whole log on every read.
    const seen = this.#unreadableTail;
    if (why !== "lock" && seen?.ino === ino && seen.size === size) {
      if (seen.error !== undefined) throw seen.error;
      return;
    }
    const fd = this.#openFd();
    const bytes = readAt(fd, this.#end, size - this.#end);
    let parsed: ReturnType<typeof parseLog> | undefined;
    try {
      parsed = parseLog(bytes, this.#end);
    } catch (err) {
      if (!(err instanceof StoreCorrupt)) throw err;
    }
    if (parsed === undefined || parsed.tail === "damaged") {
      // A whole line that does not read, where only a torn one (no newline) is expected: our place
      // in the log may be wrong (a writer of an earlier build took back a line we had read, and
      // wrote another there). The whole log is read before anything in it is called damaged.
      try {
        this.#reload(why === "lock");
      } catch (err) {
        // Only what the log holds is remembered: an I/O error of the moment (EMFILE) is not.
        if (err instanceof StoreCorrupt) this.#unreadableTail = { ino, size, error: err };
        throw err;
      }
      if (this.#end < size) this.#unreadableTail = { ino: this.#ino, size };
      return;
    }
    const changed = new Set<string>();
    for (const { batch } of parsed.batches) this.#apply(batch, changed);
    this.#end += parsed.consumed;
    if (why === "lock" && parsed.tail !== "none") this.#dropTornTail(parsed.tail);
    if (changed.size > 0) this.#onExternalChange?.([...changed]);
  }

  /** Reads the whole log afresh (at open, or after another process replaced it). */
  #reload(holdingLock: boolean): void {
    let fd: number | undefined;
    let bytes: Buffer;
    let ino: number;
    try {
      fd = openSync(this.#logPath, LOG_FLAGS);
      const st = fstatSync(fd);
      ino = st.ino;
      bytes = readAt(fd, 0, st.size);
    } catch (err) {
      if (fd !== undefined) closeSync(fd);
      throw this.#classify(err, "file store read");
    }
    let parsed: ReturnType<typeof parseLog>;
    try {
      parsed = parseLog(bytes, 0);
      if (parsed.header === undefined) throw new StoreCorrupt("the file store's log has no valid header");
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    const before = this.#entries;
    const initial = this.#fd === undefined;
    this.#closeFd();
    this.#fd = fd;
    this.#ino = ino;
    this.#end = parsed.consumed;
    this.#compactRetryAt = 0;
    this.#install(parsed.header, []);
    for (const { batch } of parsed.batches) this.#apply(batch);
    if (holdingLock && parsed.tail !== "none") this.#dropTornTail(parsed.tail);
    this.#checkKeys();
    if (!initial && this.#onExternalChange) {
      const changed = new Set<string>();
      for (const [name, c] of this.#entries) if (before.get(name)?.s !== c.s) changed.add(name);
      for (const name of before.keys()) if (!this.#entries.has(name)) changed.add(name);
      if (changed.size > 0) this.#onExternalChange([...changed]);
    }
  }

  /** Replaces the state with a header and the changes of a whole log. */
  #install(header: Header, changes: Change[]): void {
    this.#entries = new Map();
    this.#keyChecks = new Set(header.keys);
    this.#checkKeys();
    this.#seq = header.seq;
    this.#sizes = new Map();
    this.#liveBytes = 0;
    this.#apply({ changes });
  }

  /** Applies one batch to the state, in order. */
  #apply(batch: Batch, changed?: Set<string>): void {
    for (const change of batch.changes) {
      if (change.s > this.#seq) this.#seq = change.s;
      // A key event's change (it has its id) stands only over an older one, as it was decided: the
      // same answer as log order, unless two writers appended at once (the lock not one's alone),
      // where log order would let an older event's line, landed second, override a newer one.
      if (change.i !== undefined && !this.#newerThanHeld(change)) continue;
      this.#set(change);
      changed?.add(change.n);
    }
    if (batch.keys !== undefined && batch.keys.length > 0) {
      for (const key of batch.keys) this.#keyChecks.add(key);
      this.#checkKeys();
    }
  }

  /**
   * Whether `change` applies over what the state holds for its name: `#decide`'s rule, by the clock
   * its writer decided with (its write time), so every reader of the log gives the same answer.
   */
  #newerThanHeld(change: Change): boolean {
    const held = this.#entries.get(change.n);
    if (held === undefined) return true;
    return (
      stampOfChange(
        stampOf(change),
        change.v === undefined,
        stampOf(held),
        held.v === undefined,
        change.w,
        "replay",
      ) !== undefined
    );
  }

  /** Whether every key that sealed the log is in our ring (another process may have added one). */
  #checkKeys(): void {
    const ours = new Set(this.#keys.all.map(keyCheckOf));
    this.#foreignKeys = [...this.#keyChecks].every((k) => ours.has(k))
      ? undefined
      : "the file store was sealed with a salt key this process does not have (written or re-sealed by another process?); restart it with that key";
  }

  /** Installs the last change of a name, and counts its bytes in the state's. */
  #set(change: Change): void {
    const size = sizeOf(change);
    this.#liveBytes += size - (this.#sizes.get(change.n) ?? 0);
    this.#sizes.set(change.n, size);
    this.#entries.set(change.n, change);
  }

  /** Under the lock: the last line is a crash's leftover (never acknowledged). */
  #dropTornTail(tail: "incomplete" | "damaged"): void {
    ftruncateSync(this.#openFd(), this.#end);
    this.#log.warn("file store: dropped the torn last line of the log, left by a writer that crashed", {
      tail,
      offset: this.#end,
    });
  }

  #openFd(): number {
    if (this.#fd === undefined) throw new StoreUnavailable("the file store is closed");
    return this.#fd;
  }

  #closeFd(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  /** What killed processes left behind: temp files and lock files of gone processes (`leftBehind`), a lock's taking names of takers gone (`removeTakingLeftovers`), at open and at each compaction. */
  async #removeLeftovers(): Promise<void> {
    const files = await readdir(this.location);
    for (const file of files) {
      const m = LEFTOVER.exec(file);
      if (!m) continue;
      const path = join(this.location, file);
      const changed = statSync(path, { throwIfNoEntry: false })?.mtimeMs;
      if (changed !== undefined && leftBehind(Number(m[1]), m[2] as string, Date.now() - changed)) {
        await rm(path, { force: true });
      }
    }
    await removeTakingLeftovers(this.#lockPath, files);
  }
}

/** The time (and event id) a change was recorded with, as `isNewer` compares them. */
function stampOf(change: Change): ChangeStamp {
  return { at: change.t, ...(change.i !== undefined && { id: change.i }) };
}

/**
 * The bytes a change takes in a compacted log: its JSON in UTF-8 (escapes and wide characters
 * counted), and a comma. Counted without building the JSON: a start sizes every entry.
 */
export function sizeOf(change: Change): number {
  // {"s":N,"n":S,"t":N,"w":N} is 21 bytes and the values; each optional field is ,"x": and its value.
  let size = 22 + digits(change.s) + jsonBytes(change.n) + digits(change.t) + digits(change.w);
  if (change.i !== undefined) size += 5 + jsonBytes(change.i);
  if (change.c !== undefined) size += 5 + digits(change.c);
  if (change.v !== undefined) size += 5 + jsonBytes(change.v);
  if (change.d !== undefined) size += 5 + jsonBytes(change.d);
  if (change.g !== undefined) {
    const tags = Object.entries(change.g);
    size += 5 + 2 + Math.max(0, tags.length - 1);
    for (const [k, v] of tags) size += jsonBytes(k) + 1 + jsonBytes(v);
  }
  return size;
}

/** Characters JSON escapes (and surrogates, which it may): strings with them are sized by stringify. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what JSON escapes
const ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/;

function jsonBytes(s: string): number {
  return ESCAPED.test(s) ? Buffer.byteLength(JSON.stringify(s), "utf8") : Buffer.byteLength(s, "utf8") + 2;
}

function digits(n: number): number {
  return String(n).length;
}

function exists(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false }) !== undefined;
}

function readAt(fd: number, position: number, length: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, bytes, done, length - done, position + done);
    if (n === 0) break; // the file shrank meanwhile
    done += n;
  }
  return done === length ? bytes : bytes.subarray(0, done);
}

/** Writes at the end of a file opened with O_APPEND. */
function appendAll(fd: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const next = (done: number) => {
      if (done === bytes.length) return resolve();
      write(fd, bytes, done, bytes.length - done, null, (err, n) => (err ? reject(err) : next(done + n)));
    };
    next(0);
  });
}

function datasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export const fileStore = {
  kind: "file",
  settings: z.object({ config: z.object({}), env: z.object({}) }),
  defaults: { accessMode: "read_and_write", needsLocalKey: true, envBacked: false },
  capabilities: {
    writes: true,
    deletes: true,
    compareAndSet: true,
    maxValueBytes: 1024 * 1024,
    records: ["version", "updatedAt", "tags"],
  },
  open: async (_settings, deps) => {
    if (deps.keys === undefined) {
      throw new EncryptionKeyMissing(
        "the file store needs a key: set LITELLM_MASTER_KEY or LITELLM_SALT_KEY, or run `llm-secrets serve` once " +
          `to generate master.key in ${deps.dataDir}`,
      );
    }
    return FileStore.open({
      dataDir: deps.dataDir,
      keys: deps.keys,
      log: deps.log,
      now: deps.now,
      create: deps.create,
    });
  },
} as const satisfies StoreFactory<"file">;
