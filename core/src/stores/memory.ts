/**
 * `memory`: a store in this process's memory, lost on exit. For tests, and as the smallest example
 * of a complete store: it records values, times, tags and tombstones (kept until `close`), honours
 * `ifNewerThan`, and may map names onto a narrower key alphabet (`mapName`) to show `keyOf` and
 * `name_conflict` at work (a key answers only the name written to it). No runtime ships it by default.
 */
import * as z from "zod/mini";
import {
  type ChangeStamp,
  type DeleteOptions,
  type DeleteOutcome,
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
import { NameConflict } from "../store-errors";

interface Entry {
  /** The name as written (several names may share a key when `mapName` narrows them). */
  name: string;
  /** undefined: a tombstone. */
  value: string | undefined;
  stamp: ChangeStamp;
  version: number;
  description?: string;
  tags?: Readonly<Record<string, string>>;
}

export interface MemoryStoreOptions {
  /** The backend key of a name (default: the name itself). */
  mapName?: (name: string) => string;
  now?: () => number;
}

export class MemoryStore implements SecretStore {
  readonly kind = "memory";
  readonly #entries = new Map<string, Entry>();
  readonly #mapName: (name: string) => string;
  readonly #now: () => number;
  #versions = 0;

  constructor(options: MemoryStoreOptions = {}) {
    this.#mapName = options.mapName ?? ((name) => name);
    this.#now = options.now ?? Date.now;
  }

  keyOf(name: string): string {
    return this.#mapName(name);
  }

  async list(options: ListOptions): Promise<NamePage> {
    const held = [...this.#entries.values()].filter((e) => e.value !== undefined).map((e) => e.name);
    return pageOfNames(held, options);
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    const entry = this.#entries.get(this.keyOf(name));
    // A key that holds another name (mapped onto it) holds nothing for this one, as on Azure.
    if (entry?.value === undefined || entry.name !== name) return undefined;
    return {
      value: entry.value,
      version: String(entry.version),
      updatedAt: new Date(entry.stamp.at),
      ...(entry.tags && { tags: entry.tags }),
    };
  }

  async put(name: string, value: string, options: PutOptions = {}): Promise<PutOutcome> {
    const change = this.#decide(name, false, options.ifNewerThan, options.replaces);
    if (change === "superseded") return change;
    const { key, live, stamp } = change;
    const meta = options.meta ?? {};
    const fallback = live ?? meta.whenCreated;
    const description = meta.description ?? fallback?.description;
    const tags = meta.tags ?? fallback?.tags;
    this.#entries.set(key, {
      name,
      value,
      stamp,
      version: ++this.#versions,
      ...(description !== undefined && { description }),
      ...(tags !== undefined && { tags: { ...tags } }),
    });
    return live ? "updated" : "created";
  }

  async delete(name: string, options: DeleteOptions = {}): Promise<DeleteOutcome> {
    const change = this.#decide(name, true, options.ifNewerThan);
    if (change === "superseded") return change;
    this.#entries.set(change.key, { name, value: undefined, stamp: change.stamp, version: ++this.#versions });
    return change.live ? "deleted" : "absent";
  }

  /**
   * Where a change of `name` lands and whether it applies: `name_conflict` when its key holds
   * another name (but the one a write `replaces`); `superseded` when `ifNewerThan` is not newer than
   * the key's last change.
   */
  #decide(
    name: string,
    isDelete: boolean,
    ifNewerThan: ChangeStamp | undefined,
    replaces?: string,
  ): { key: string; live: Entry | undefined; stamp: ChangeStamp } | "superseded" {
    const key = this.keyOf(name);
    const previous = this.#entries.get(key);
    const live = previous?.value !== undefined ? previous : undefined;
    if (live && live.name !== name && live.name !== replaces) throw new NameConflict(name, key);
    const stamp = stampOfChange(ifNewerThan, isDelete, previous?.stamp, previous?.value === undefined, this.#now());
    return stamp === undefined ? "superseded" : { key, live, stamp };
  }

  async close(): Promise<void> {
    this.#entries.clear();
  }
}

export const memoryStore = {
  kind: "memory",
  settings: z.object({ config: z.object({}), env: z.object({}) }),
  defaults: { accessMode: "read_and_write", needsLocalKey: false, envBacked: false },
  capabilities: {
    writes: true,
    deletes: true,
    compareAndSet: true,
    maxValueBytes: 1024 * 1024,
    records: ["version", "updatedAt", "tags"],
  },
  open: async (_settings, deps) => new MemoryStore({ now: deps.now }),
} as const satisfies StoreFactory<"memory">;
