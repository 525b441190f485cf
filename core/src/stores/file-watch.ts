/**
 * The file store's watch of its data dir (file.ts): when another process changes the log, the
 * store reads the change at once. When watching cannot start or stops (inotify limits: ENOSPC,
 * EMFILE), one warning names the dir and the code, and watching is tried again after 1 s, doubling
 * to 60 s; a watcher started again reads what changed while none watched.
 *
 * A watch follows the directory it started on, not its path: when that directory is moved or
 * removed (a restore that renames a copy into place), its watcher hears of itself by name and no
 * more of the path's log. It then starts again on what is at the path now (with the same backoff
 * while nothing is there), and reads what changed.
 */
import { type FSWatcher, statSync, watch } from "node:fs";
import { basename, resolve } from "node:path";
import { SecretsError } from "../errors";
import type { Logger } from "../log";
import { LOG_FILE } from "./file-log";

/** Watching the data dir is tried again this long after it fails, doubling each time, up to the max. */
const WATCH_RETRY_FIRST_MS = 1000;
const WATCH_RETRY_MAX_MS = 60_000;
/** A watcher up this long has worked: a failure after it starts the backoff, and its warning, afresh. */
const WATCH_STABLE_MS = 60_000;

/** Watches `dir`, calling `listener` with the name of the file that changed (null: unknown). */
export type WatchDir = (dir: string, listener: (event: string, file: string | null) => void) => FSWatcher;

/** `fs.watch`, not persistent. */
export const watchDir: WatchDir = (dir, listener) => watch(dir, { persistent: false }, listener);

export interface DataDirWatchOptions {
  dir: string;
  watchDir: WatchDir;
  log: Logger;
  now: () => number;
  /** Reads what changed in the log; a failure is logged (its code) and the watch goes on. */
  readChanges: () => void;
}

/** The inode at `path`, or undefined when nothing can be seen there (gone, or not ours to look at). */
function inodeOf(path: string): number | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false })?.ino;
  } catch {
    return undefined;
  }
}

export class DataDirWatch {
  readonly #options: DataDirWatchOptions;
  #watcher: FSWatcher | undefined;
  /** The next try at watching, after watching failed; the wait before the one after it. */
  #retry: NodeJS.Timeout | undefined;
  #retryMs = WATCH_RETRY_FIRST_MS;
  /** When the current watcher started (undefined: none is up). */
  #since: number | undefined;
  #resumeLogged = false;
  /** Whether watching failed and was logged, and has not worked since (a watcher up a minute). */
  #failureLogged = false;
  /** Set by `close`: no watching starts after it. */
  #closing = false;

  constructor(options: DataDirWatchOptions) {
    this.#options = options;
  }

  /** Starts watching, unless a watcher is up, a retry is waiting, or `close` was called. */
  start(): void {
    if (this.#watcher || this.#retry || this.#closing) return;
    this.#start();
  }

  close(): void {
    this.#closing = true;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#watcher?.close();
    this.#watcher = undefined;
  }

  /**
   * Watches the data dir. When that fails (inotify limits, some network filesystems) or the watcher
   * fails later, it is logged once (the dir and the system's code) and tried again with backoff; a
   * watcher started again reads what changed while none watched. A watcher that fails within a
   * minute of its start is the same failure: the backoff goes on, and nothing more is logged.
   */
  #start(afterFailure = false): void {
    this.#retry = undefined;
    if (this.#closing) return;
    const { dir, log } = this.#options;
    const changed = () => {
      try {
        this.#options.readChanges();
      } catch (err) {
        log.warn("file store: cannot read changes made by another process", {
          code: err instanceof SecretsError ? err.code : "internal",
        });
      }
    };
    let watcher: FSWatcher;
    try {
      const watched = statSync(dir).ino;
      watcher = this.#options.watchDir(dir, (_, file) => {
        if (file === null || file === LOG_FILE) changed();
        // The directory itself moved or removed: watched no more at its path.
        else if (file === basename(resolve(dir)) && inodeOf(dir) !== watched) {
          watcher.close();
          if (this.#watcher !== watcher) return;
          this.#watcher = undefined;
          log.info("file store: the data dir was moved or replaced; watching what is at its path now", { dir });
          this.#start(true);
        }
      });
    } catch (err) {
      this.#failed(err);
      return;
    }
    this.#watcher = watcher;
    this.#since = this.#options.now();
    watcher.on("error", (err: unknown) => {
      watcher.close();
      if (this.#watcher !== watcher) return;
      this.#watcher = undefined;
      this.#failed(err);
    });
    if (this.#failureLogged && !this.#resumeLogged) {
      this.#resumeLogged = true;
      log.info("file store: watching the data dir again", { dir });
    }
    if (afterFailure) changed();
  }

  #failed(err: unknown): void {
    if (this.#closing) return;
    const since = this.#since;
    this.#since = undefined;
    if (since !== undefined && this.#options.now() - since >= WATCH_STABLE_MS) {
      this.#retryMs = WATCH_RETRY_FIRST_MS;
      this.#failureLogged = false;
      this.#resumeLogged = false;
    }
    if (!this.#failureLogged) {
      this.#failureLogged = true;
      const code = (err as NodeJS.ErrnoException | undefined)?.code;
      this.#options.log.warn(
        "file store: cannot watch the data dir: changes by other processes reach caches only when they expire; retrying",
        { dir: this.#options.dir, code: typeof code === "string" ? code : undefined },
      );
    }
    const wait = this.#retryMs;
    this.#retryMs = Math.min(wait * 2, WATCH_RETRY_MAX_MS);
    this.#retry = setTimeout(() => this.#start(true), wait);
    this.#retry.unref();
  }
}
