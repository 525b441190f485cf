/**
 * The read cache of one store (SPEC section 4).
 *
 * - Entries live for the store's refresh interval; "not found" for at most 60 s, in a budget of its
 *   own (so a flood of unknown names cannot push values out); errors never.
 * - Entries are keyed on the backend's key (`keyOf`), so a write, a delete or a change reported for
 *   a name reaches every name that lands on that key. An entry answers only the name it was read or
 *   written for: a backend that tells two of our names on one key apart (Azure's `AZURE_API_KEY`
 *   and `AZURE-API-KEY`) answers nothing for the name it does not hold, and the cache answers the
 *   same. A key keeps one value and one "not found", so the unknown name's "not found" does not push
 *   out the other's value; two names with values there take the value entry in turns.
 * - With `fields` (a store whose keys name fields: Vault's, `StoreCapabilities.scopes`), a key
 *   `object#field` is one field of a backend object (Vault's key of a team's KV field: its path,
 *   `#`, the field), and a key without `#` is an object itself: a change of any key of an object
 *   reaches every key of it held or loading, as a write or delete there replaces the object whole
 *   (a KV v2 write or delete takes every field of the secret with it). Without it, every key is an
 *   object of its own, whatever it holds (CyberArk's branch, a user's store's keys may hold `#`).
 * - Concurrent misses for one name share one backend call.
 * - Near the end of an entry's life a read answers from the cache and refreshes in the background:
 *   from a point in the first half of its last tenth (the tenth at most 10 min) that depends on the
 *   key, so the many entries loaded at one start do not all refresh at once (a herd against a
 *   rate-limited backend).
 * - When the backend fails with a retryable error, the last good value is served up to
 *   `maxStaleMs` past expiry, marked stale.
 * - A failed load backs the entry off: its next load waits 1 s, doubling after each failure up to
 *   60 s (or the refresh interval, if shorter, but at least 1 s), and a success ends it. Until
 *   then a read is served the entry's value (fresh, or, after a retryable failure, stale within
 *   `maxStaleMs`) without a store call, and no background refresh starts, so a failing store sees
 *   a few calls per name, not one per read, and `onRefreshError` fires at most once per step.
 *   After a failure that is not retryable (a permission taken away) the backoff ends when the
 *   value expires: the next read then calls, and gets the error. A read with nothing to serve
 *   still calls.
 * - Our own writes and deletes replace the entry at once, and win over a load already under way;
 *   a delete drops every name's value on its key, and both drop the object's other keys (their
 *   fields were replaced too). One that failed expires the entry and the object's other keys (it
 *   may have landed): the next read asks the store.
 * - Values are held sealed and opened per read (`MemoryBox`, crypto.ts): NaCl SecretBox (the
 *   libsodium fast path) under a random key that lives only in this process's memory, as bytes,
 *   rather than Node's AES-256-GCM, whose per-call cipher set-up outweighs the whole open at an API
 *   key's size (a one-off measurement; `npm run bench`'s http sections time the cached read as a whole).
 */
import { MemoryBox } from "./crypto";
import { isRetryable } from "./store-errors";

export interface CacheOptions {
  /** The refresh interval; 0 caches nothing (but still shares concurrent loads). */
  ttlMs: number;
  maxStaleMs: number;
  notFoundTtlMs?: number;
  maxEntries?: number;
  /** "Not found" answers kept, apart from values: a flood of unknown names cannot evict good ones. */
  maxNotFound?: number;
  now?: () => number;
  /** Called for each hit, miss, stale serve and background refresh. */
  onEvent?: (event: "hit" | "miss" | "stale" | "refresh") => void;
  /** Called when a background refresh fails (the entry stays): the key and the entry's age. */
  onRefreshError?: (err: unknown, key: string, ageMs: number) => void;
  /** Keys `object#field` are fields of one object (see the header); without it, each key is its own. */
  fields?: boolean;
}

export interface CacheRead {
  value: string | undefined;
  stale: boolean;
}

interface Entry {
  /** The name this entry answers for (its key may carry others: see the header). */
  name: string;
  /** The value sealed under this process's memory key; undefined means "not found". */
  sealed: Uint8Array | undefined;
  storedAt: number;
  /** When a read next loads: the refresh point, or, after a failed load, the end of its backoff. */
  refreshAt: number;
  expiresAt: number;
  /** The current backoff step after failed loads; 0 while the store answers. */
  backoffMs: number;
}

const NOT_FOUND_TTL_MS = 60_000;
const REFRESH_AHEAD_MAX_MS = 10 * 60_000;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 60_000;
/** Drift between the wall and monotonic clocks taken as no step (NTP slews the wall clock slowly). */
const STEP_TOLERANCE_MS = 1_000;

export class SecretCache {
  readonly #options: Required<Omit<CacheOptions, "onEvent" | "onRefreshError" | "fields">> & CacheOptions;
  /** A memory-only key: a cache's entries never leave the process. */
  readonly #box = new MemoryBox();
  readonly #entries = new Map<string, Entry>();
  /** "Not found" entries, in their own budget. */
  readonly #missing = new Map<string, Entry>();
  /**
   * The loads under way, by key and then name (two names may share a backend key). A write or
   * delete of the key drops the key's loads from here, and a load stores its answer only while it
   * is still here: one that started before the change cannot overwrite it. (Nothing is kept once
   * the loads end: the map holds only loads in flight.)
   */
  readonly #loads = new Map<string, Map<string, Promise<string | undefined>>>();
  /**
   * The keys of a field (`object#field`) held (a value, a "not found") or loading, by their object:
   * what a change of the object reaches besides its own key. A key leaves it when it is none of these.
   */
  readonly #fields = new Map<string, Set<string>>();
  /** The time the clock last gave: one below it means the clock stepped back. */
  #latest = Number.NEGATIVE_INFINITY;
  /**
   * With the wall clock (no clock given), `performance.now()` at that reading: a step back is also
   * seen when the next reading comes after the clock has passed its last time again.
   */
  readonly #monotonic: boolean;
  #latestMono = 0;

  constructor(options: CacheOptions) {
    this.#options = {
      ...options,
      notFoundTtlMs: options.notFoundTtlMs ?? NOT_FOUND_TTL_MS,
      maxEntries: options.maxEntries ?? 10_000,
      maxNotFound: options.maxNotFound ?? 1_000,
      now: options.now ?? Date.now,
    };
    this.#monotonic = options.now === undefined;
  }

  /**
   * Reads `name` (held under `key`, the name itself by default), calling `load` (at most once at a
   * time per name) when the cache cannot answer. A hit answers synchronously (no promise on the hot
   * path); a miss returns a promise.
   */
  get(
    key: string,
    load: () => Promise<string | undefined>,
    refresh = false,
    name = key,
  ): CacheRead | Promise<CacheRead> {
    const now = this.#now();
    const entry = this.#entryOf(key, name);
    if (!refresh && entry && now < entry.expiresAt) {
      this.#options.onEvent?.("hit");
      if (entry.sealed !== undefined && now >= entry.refreshAt && !this.#loads.get(key)?.has(name)) {
        this.#options.onEvent?.("refresh");
        this.#load(key, name, load).catch((err) => this.#options.onRefreshError?.(err, key, now - entry.storedAt));
      }
      return { value: this.#open(entry), stale: false };
    }
    // Past expiry while the store is backed off: the stale value, at once, with no store call (so
    // no miss: a miss is a read that went to the store; `#stale` counts it as a stale serve).
    if (!refresh && entry && now < entry.refreshAt) {
      const stale = this.#stale(entry, now);
      if (stale) return stale;
    }
    return this.#miss(key, name, load, refresh, entry);
  }

  async #miss(
    key: string,
    name: string,
    load: () => Promise<string | undefined>,
    refresh: boolean,
    entry: Entry | undefined,
  ): Promise<CacheRead> {
    this.#options.onEvent?.("miss");
    try {
      return { value: await this.#load(key, name, load), stale: false };
    } catch (err) {
      if (refresh || !isRetryable(err)) throw err;
      // The entry as it is now: our own write or delete during the load replaced the one read
      // before it, and a value replaced (a revoked key) is never served, stale or not.
      const now = this.#now();
      const current = this.#entryOf(key, name);
      if (current !== undefined && current !== entry && now < current.expiresAt) {
        return { value: this.#open(current), stale: false };
      }
      const stale = current === undefined ? undefined : this.#stale(current, now);
      if (stale) return stale;
      throw err;
    }
  }

  /** The entry's value served stale, when it has one still within `maxStaleMs` past expiry. */
  #stale(entry: Entry, now: number): CacheRead | undefined {
    if (entry.sealed === undefined || now >= entry.expiresAt + this.#options.maxStaleMs) return undefined;
    this.#options.onEvent?.("stale");
    return { value: this.#open(entry), stale: true };
  }

  /**
   * Our own write of `name` (under `key`): the cache holds the new value at once, and nothing of the
   * object's other keys (the write replaced their fields too).
   */
  set(key: string, value: string, name = key): void {
    this.#forgetOthers(key);
    this.#bump(key);
    this.#store(key, name, value);
  }

  /**
   * Our own write took `key` over from the name `previous` (a rename: `PutOptions.replaces`): the
   * value just set stays, and `previous` is known to be gone there (not found, no store call).
   */
  renamed(key: string, previous: string): void {
    this.#store(key, previous, undefined);
  }

  /**
   * Our own delete of `name` (under `key`) landed: the cache knows the name is gone, and so is any
   * value held for another name on the key (the delete removed the backend key itself: Azure's
   * `AZURE_API_KEY` deletes the portal's untagged `AZURE-API-KEY`, read as `AZURE-API-KEY` too), and
   * nothing is held of the object's other keys (the delete took their fields with it).
   */
  setMissing(key: string, name = key): void {
    this.#forgetOthers(key);
    this.#bump(key);
    this.#entries.delete(key);
    this.#store(key, name, undefined);
  }

  /**
   * Our own change of the key failed, and may have landed all the same (a cloud store's second call
   * failing after its first): the next read of any name on it goes to the store, and a value held
   * stays only as the stale answer should that read fail as the store being unavailable. So for
   * every other key of its object.
   */
  expire(key: string): void {
    const now = this.#now();
    for (const each of [key, ...this.#others(key)]) {
      this.#bump(each);
      this.#missing.delete(each);
      this.#untrack(each);
      const entry = this.#entries.get(each);
      if (entry === undefined) continue;
      entry.refreshAt = Math.min(entry.refreshAt, now);
      entry.expiresAt = Math.min(entry.expiresAt, now);
      entry.backoffMs = 0;
    }
  }

  /** The key (and so its object) changed behind our back: the next read of any name on it goes to the store. */
  forget(key: string): void {
    this.#drop(key);
    this.#forgetOthers(key);
  }

  get size(): number {
    return this.#entries.size;
  }

  #bump(key: string): void {
    this.#loads.delete(key);
  }

  /** The backend object `key` is a field of (with `fields`), else `key` itself: see the header. */
  #objectOf(key: string): string {
    return this.#options.fields === true ? objectOfKey(key) : key;
  }

  /** Nothing is held or loading for `key` from now on. */
  #drop(key: string): void {
    this.#bump(key);
    this.#entries.delete(key);
    this.#missing.delete(key);
    this.#untrack(key);
  }

  #forgetOthers(key: string): void {
    for (const other of this.#others(key)) this.#drop(other);
  }

  /** The keys of `key`'s object other than `key` that may be held or loading: the object's own, and each field's. */
  #others(key: string): string[] {
    const object = this.#objectOf(key);
    const others = object === key ? [] : [object];
    for (const field of this.#fields.get(object) ?? []) if (field !== key) others.push(field);
    return others;
  }

  /** `key`, when it is a field's, is held or loading: a change of its object finds it. */
  #track(key: string): void {
    const object = this.#objectOf(key);
    if (object === key) return;
    let fields = this.#fields.get(object);
    if (fields === undefined) {
      fields = new Set();
      this.#fields.set(object, fields);
    }
    fields.add(key);
  }

  /** `key`, when it is a field's and neither held nor loading any more, leaves `#fields`. */
  #untrack(key: string): void {
    const object = this.#objectOf(key);
    if (object === key || this.#entries.has(key) || this.#missing.has(key) || this.#loads.has(key)) return;
    const fields = this.#fields.get(object);
    fields?.delete(key);
    if (fields?.size === 0) this.#fields.delete(object);
  }

  /** Loads `name`, sharing a load of the same name already under way (a load of another name on the key is not its answer). */
  #load(key: string, name: string, load: () => Promise<string | undefined>): Promise<string | undefined> {
    const running = this.#loads.get(key)?.get(name);
    if (running) return running;
    let loads = this.#loads.get(key);
    if (!loads) {
      loads = new Map();
      this.#loads.set(key, loads);
      this.#track(key);
    }
    const mine = loads;
    const current = () => this.#loads.get(key) === mine && mine.get(name) === promise;
    const promise: Promise<string | undefined> = (async () => {
      let value: string | undefined;
      try {
        value = await load();
      } catch (err) {
        // Any failure backs the entry off; one the value may not outlive (not retryable) only
        // until the value expires, so that a read past expiry calls and gets the error.
        if (current()) this.#backOff(key, name, !isRetryable(err));
        throw err;
      }
      if (current()) this.#store(key, name, value);
      return value;
    })();
    const done = () => {
      if (!current()) return;
      mine.delete(name);
      if (mine.size === 0) {
        this.#loads.delete(key);
        this.#untrack(key);
      }
    };
    promise.then(done, done);
    mine.set(name, promise);
    return promise;
  }

  /**
   * A load of `name` failed: its value entry, if any, waits the next backoff step before another
   * (`untilExpiry`: at most until the value expires).
   */
  #backOff(key: string, name: string, untilExpiry: boolean): void {
    const entry = this.#entries.get(key);
    if (entry?.name !== name) return;
    const { ttlMs } = this.#options;
    // At most the refresh interval, but at least the first step: a store read always (interval 0)
    // is still asked once a second, not on every read, while it fails.
    const longest = Math.max(Math.min(BACKOFF_MAX_MS, ttlMs), BACKOFF_FIRST_MS);
    entry.backoffMs = Math.min(entry.backoffMs === 0 ? BACKOFF_FIRST_MS : entry.backoffMs * 2, longest);
    const until = this.#now() + entry.backoffMs;
    entry.refreshAt = untilExpiry ? Math.min(until, entry.expiresAt) : until;
  }

  /**
   * The clock's now. When it stepped back since it last answered (an NTP correction, a VM's
   * resume), every entry's times move back by the step, so what was left of each one's refresh
   * interval, expiry, backoff and stale window is left in real time. (Before, only an entry stored
   * "after" now was caught: after a smaller step an expired value was fresh again, and the store
   * not asked, for the length of the step.) A step forward needs nothing: entries expire sooner.
   */
  #now(): number {
    const now = this.#options.now();
    let step = this.#latest - now;
    if (this.#monotonic) {
      // Between two readings the wall clock advances as the monotonic one does (which stops while
      // the machine sleeps: then the wall clock is ahead, and entries expire sooner, as they should).
      // What it fell short by, past a second of drift, is a step back, though it is past its last
      // reading again by the next read.
      const mono = performance.now();
      if (this.#latest !== Number.NEGATIVE_INFINITY) {
        const behind = mono - this.#latestMono - (now - this.#latest);
        step = behind > STEP_TOLERANCE_MS ? Math.max(step, behind) : step;
      }
      this.#latestMono = mono;
    }
    if (step > 0) {
      for (const entries of [this.#entries, this.#missing]) {
        for (const entry of entries.values()) {
          entry.storedAt -= step;
          entry.refreshAt -= step;
          entry.expiresAt -= step;
        }
      }
    }
    this.#latest = now;
    return now;
  }

  /** The entry of `name` under `key`: its value, else its "not found". */
  #entryOf(key: string, name: string): Entry | undefined {
    const value = this.#entries.get(key);
    if (value?.name === name) return value;
    const missing = this.#missing.get(key);
    return missing?.name === name ? missing : undefined;
  }

  #store(key: string, name: string, value: string | undefined): void {
    const { ttlMs, notFoundTtlMs, maxEntries, maxNotFound } = this.#options;
    const at = this.#now();
    const life = value === undefined ? Math.min(ttlMs, notFoundTtlMs) : ttlMs;
    const [into, other, max] =
      value === undefined ? [this.#missing, this.#entries, maxNotFound] : [this.#entries, this.#missing, maxEntries];
    // The same name's other answer goes; another name's (its value, while this one is not found) stays.
    if (other.get(key)?.name === name) other.delete(key);
    into.delete(key); // re-insert: past the budget, the longest-stored entry goes first
    into.set(key, {
      name,
      sealed: value === undefined ? undefined : this.#seal(value),
      storedAt: at,
      refreshAt: at + life - refreshAhead(key, life),
      expiresAt: at + life,
      backoffMs: 0,
    });
    this.#track(key);
    if (into.size > max) {
      const oldest = into.keys().next().value;
      if (oldest !== undefined) {
        into.delete(oldest);
        this.#untrack(oldest);
      }
    }
  }

  #seal(value: string): Uint8Array {
    return this.#box.seal(value);
  }

  #open(entry: Entry): string | undefined {
    return entry.sealed === undefined ? undefined : this.#box.open(entry.sealed);
  }
}

/** The backend object of a key `object#field` (what precedes its first `#`), else the key itself: see the header. */
export function objectOfKey(key: string): string {
  const at = key.indexOf("#");
  return at === -1 ? key : key.slice(0, at);
}

/**
 * How long before expiry the entry of `key` starts refreshing: between a tenth of its life (at most
 * 10 min) and half that, spread by a hash of the key (FNV-1a): the same for a key every time,
 * different across keys.
 */
function refreshAhead(key: string, life: number): number {
  const most = Math.min(life / 10, REFRESH_AHEAD_MAX_MS);
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  return most - ((hash >>> 0) / 2 ** 32) * (most / 2);
}
