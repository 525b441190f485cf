/**
 * `SecretStore` v2: the one interface every backend implements, and `StoreFactory`, the shape in
 * which a store file plugs itself into a runtime (DESIGN.md, "Stores are plugged in").
 *
 * Names reach a store already validated. Backend quirks (name mapping, URL building, create versus
 * update) stay inside the store's own file, and every backend failure goes through
 * `classifyBackendError` (store-errors.ts).
 *
 * Ordering: each change carries a time. A store that can record it (`capabilities.compareAndSet`)
 * keeps the time of the last change of each name, a delete included (a tombstone: the time, no
 * value), and refuses an older change with the outcome `"superseded"`. So a late or redelivered
 * key event cannot undo a newer change. `stampOfChange` is the one rule.
 */
import { createHash } from "node:crypto";
import * as z from "zod/mini";
import type { KeyRing } from "./crypto";
import { ConfigError, InvalidInput } from "./errors";
import type { Logger } from "./log";
import type { OutboundTls } from "./outbound-tls";
import { BackendUnavailable } from "./store-errors";

/** What `get` returns: the value and what the backend knows of it. */
export interface SecretRecord {
  value: string;
  /** The backend's version id, when it has one. */
  version?: string;
  /** When the value was last written. */
  updatedAt?: Date;
  tags?: Readonly<Record<string, string>>;
}

/** The time of a change: milliseconds since the epoch, and an event id that breaks ties. */
export interface ChangeStamp {
  at: number;
  id?: string;
}

export interface SecretMeta {
  description?: string;
  tags?: Readonly<Record<string, string>>;
  /** Used only when the write creates the secret (`key_management_settings` description and tags). */
  whenCreated?: { description?: string; tags?: Readonly<Record<string, string>> };
}

/**
 * A team's settings (`key_management_settings.team_settings[team_id]`, from config only, never from
 * an event): where a store that honours them keeps that team's secrets. Vault does (namespace,
 * mount, path prefix, the KV field); the other stores ignore them.
 */
export interface StoreScope {
  team: string;
  namespace?: string;
  mount?: string;
  pathPrefix?: string;
  /** The KV field that holds the value (Vault; default `key`). */
  dataKey?: string;
}

export interface GetOptions {
  scope?: StoreScope;
}

export interface PutOptions {
  scope?: StoreScope;
  meta?: SecretMeta;
  /**
   * The change's time (a key event's `occurred_at` and id). When set, a store that records times
   * applies the change only if it is newer than the last one recorded for the name. When unset,
   * the change applies whatever is recorded, and its time is now (a direct write's arrival). The
   * file store keeps the newer change also when two writers appended at once (a lapsed lock lease)
   * only for stamps with an `id`, as key events' are (its log does not record which others were
   * conditional).
   */
  ifNewerThan?: ChangeStamp;
  /** `false`: never take over a secret made outside llm-secrets (see `DeleteOptions.adopt`). */
  adopt?: boolean;
  /**
   * A name whose secret on this name's backend key the write takes over, which then holds this
   * name: a key event's regeneration from a previous alias to one the store maps onto the same key
   * (Azure's `team_a` to `team-a`, or a change of case), which is a rename. Without it, another
   * name's live secret there is `409 name_conflict`.
   */
  replaces?: string;
}

export interface DeleteOptions {
  scope?: StoreScope;
  ifNewerThan?: ChangeStamp;
  /**
   * `false`: the change must not take over a secret made outside llm-secrets (one a store can tell
   * from its own: Azure's untagged secrets, Google's unannotated ones), which is then `409
   * name_conflict`, nothing changed. The manager sets it for every key event and for every write
   * allowed only because its name is under a virtual-key prefix: such names are chosen by whoever
   * makes LiteLLM keys, and a store's name mapping (Azure's case folding) can land them on an
   * operator's secret. Unset (`true`): a direct write adopts such a secret, a direct delete deletes it.
   */
  adopt?: boolean;
}

/** A page of names: `list`'s arguments. */
export interface ListOptions {
  /** Only names that start with this. */
  prefix?: string;
  /** At most this many names in the page. */
  limit: number;
  /** Where the previous page ended (its `cursor`); none for the first page. */
  cursor?: string;
}

export interface NamePage {
  names: string[];
  /** Present when there may be more names: pass it back for the next page. */
  cursor?: string;
}

export type PutOutcome = "created" | "updated" | "superseded";
export type DeleteOutcome = "deleted" | "absent" | "superseded";

export interface SecretStore {
  readonly kind: string;
  /**
   * The backend's own key for a name (Azure maps `_` to `-`); a store that honours scopes puts the
   * scope in it, so two teams never share a cache entry. The cache keys on it. On a store with
   * `scopes`, a key `object#field` is one field of a backend object that a change replaces whole
   * (Vault's KV fields): a change of any key of the object reaches every key of it in the cache
   * (secret-cache.ts); elsewhere a `#` in a key means nothing.
   */
  keyOf(name: string, scope?: StoreScope): string;
  /** The record, or undefined when the store holds no such name (a tombstone is no such name). */
  get(name: string, options?: GetOptions): Promise<SecretRecord | undefined>;
  /**
   * Creates or replaces. Throws `name_conflict` when `keyOf(name)` already holds another name,
   * `not_supported` on stores that cannot write.
   */
  put(name: string, value: string, options?: PutOptions): Promise<PutOutcome>;
  /** Removes, leaving a tombstone where the backend would forget. Absent names are not an error. */
  delete(name: string, options?: DeleteOptions): Promise<DeleteOutcome>;
  /**
   * How long a delete's tombstone is kept, in ms, where the store knows it (the file store's
   * compaction, AWS's recovery window; 0: none is kept); undefined where it is kept as long as the
   * name's record, or the backend's setting cannot be read. A key event older than it could revive
   * the key a delete removed: the start refuses an `LLM_SECRETS_MAX_EVENT_AGE` past it.
   */
  readonly tombstoneMs?: number;
  /**
   * The names held (never values, never tombstones), in pages. Stores that cannot list leave it
   * out, and the API answers `501 not_supported`.
   */
  list?(options: ListOptions): Promise<NamePage>;
  /**
   * Whether the store holds `name` (a tombstone is no such name), without reading or opening its
   * value: for stores that know their names apart from their values (the file store's index). A
   * listing with `hosted_keys` asks it for each hosted name where there is one, and `get` where there
   * is not; so a value this process cannot open (the store re-sealed under a key it lacks) leaves
   * listing to say what is held, as the store's own `list` does.
   */
  has?(name: string): Promise<boolean>;
  /** Reports names that changed behind our back (another process, the provider's console). */
  watch?(onChange: (names: string[]) => void): void;
  /** Waits for pending writes and releases resources. */
  close?(): Promise<void>;
}

/**
 * What a store can do: the conformance suite holds the store to it, settings warn by it, and the
 * manager refuses a value past `maxValueBytes`.
 */
export interface StoreCapabilities {
  writes: boolean;
  deletes: boolean;
  /** Records change times and honours `ifNewerThan` (tombstones included). */
  compareAndSet: boolean;
  /**
   * The largest value, in UTF-8 bytes, the backend is documented to take: a larger one is refused
   * (`413 payload_too_large`) before any call. Left out where no limit is known (a user's own
   * store) or it lies past the API's 1 MiB body (Conjur's 10 MB).
   */
  maxValueBytes?: number;
  /** What `get` returns besides the value (the conformance suite holds the store to it). */
  records: readonly ("version" | "updatedAt" | "tags")[];
  /**
   * Honours a team's `StoreScope` (namespace, mount, path prefix, KV field): each team's keys are
   * kept where its settings say. Without it, settings warn that those fields are ignored (teams
   * then share names). With it, `keyOf`'s keys `object#field` are fields of one object (`keyOf`).
   */
  scopes?: boolean;
}

export type AccessMode = "read_only" | "write_only" | "read_and_write";

export interface StoreDefaults {
  /** `access_mode` when the config sets none. */
  accessMode: AccessMode;
  /** The env var of this store's own cache lifetime, read before `SECRET_MANAGER_REFRESH_INTERVAL`. */
  refreshIntervalVariable?: string;
  /**
   * The default of the store's own variable, which then wins over `SECRET_MANAGER_REFRESH_INTERVAL`
   * (LiteLLM's `cyberark`: 300 s). Without it the general variable applies, else a day.
   */
  refreshSeconds?: number;
  /** An env var that, set to `true` (any case), turns the cache off for this store (lifetime 0). */
  alwaysReadVariable?: string;
  /** Needs the salt key to seal values at rest, and may use the generated `master.key` of the data dir. */
  needsLocalKey: boolean;
  /**
   * Reads the process environment (`local`, `aws_kms`, `google_kms`): over HTTP it serves only the
   * names listed in `hosted_keys`.
   */
  envBacked: boolean;
  /**
   * Decrypts the environment's `aws_kms/` values itself (LiteLLM's `USE_AWS_KMS` format): with
   * `USE_AWS_KMS=True`, the refs it reads are not refused as sealed for LiteLLM's start-up decryption.
   */
  decryptsAwsKmsValues?: boolean;
  /**
   * LiteLLM's older switch for this store, a `general_settings` key (`use_azure_key_vault: true`):
   * with no `key_management_system`, setting it picks this store.
   */
  legacyFlag?: string;
}

/** What every store may use when it opens: the parts of the general settings that are not its own. */
export interface StoreDeps {
  dataDir: string;
  /** The config file's directory: what a store's relative paths are relative to (`custom`). */
  configDir?: string;
  /** The salt key ring; present whenever a master or salt key is configured. */
  keys?: KeyRing;
  /** The environment captured at start (with config `environment_variables` applied). */
  env: Readonly<Record<string, string>>;
  log: Logger;
  now: () => number;
  /** The general outbound TLS settings, for a store that makes its own HTTP calls (outbound.ts). */
  outbound?: OutboundTls;
  /**
   * `false`: open only a store that is there, making nothing (the CLI's commands that read or change
   * one). A store that makes its own files on first open (`file`) refuses instead; others ignore it.
   */
  create?: boolean;
}

/**
 * A store's settings schema: `config` holds its own `key_management_settings` keys, `env` its own
 * env vars. Both are objects (strip mode), so only the keys they name are parsed.
 */
export type StoreSettingsSchema = z.ZodMiniObject<{ config: z.ZodMiniObject; env: z.ZodMiniObject }>;

export interface StoreFactory<K extends string = string, Schema extends StoreSettingsSchema = StoreSettingsSchema> {
  readonly kind: K;
  readonly settings: Schema;
  readonly defaults: StoreDefaults;
  readonly capabilities: StoreCapabilities;
  open(settings: z.output<Schema>, deps: StoreDeps): Promise<SecretStore>;
}

/** How far ahead of this clock a change may be dated: key events refuse later ones (a producer's clock running fast). */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;
/**
 * How far ahead of this clock a recorded change is still trusted: one accepted by another instance,
 * whose clock may itself run ahead of this one, up to the skew ahead of that clock.
 */
const TRUSTED_AHEAD_MS = 2 * MAX_CLOCK_SKEW_MS;

/**
 * The stamp a change of a name is recorded with, or `undefined` when it is superseded: what every
 * store that records times (`capabilities.compareAndSet`) decides with, given the name's recorded
 * change (a tombstone or not) and this clock's now.
 * - A conditional change (`ifNewerThan`) applies when `isNewer` than the recorded one.
 * - A direct change applies whatever is recorded. It is stamped now, or 1 ms after the recorded
 *   change when that is not older (an event dated ahead of this clock, as the skew allows, or this
 *   clock stepped back): so the event it overrode, redelivered, stays older than it, and a key
 *   deleted after its event stays deleted.
 * - A recorded time more than twice the skew ahead of now is not trusted. Either a writer's clock ran
 *   far ahead, or this clock is far behind (an instance whose clock is slow). A direct change applies
 *   over it, stamped now (not pushed ahead, past every event to come). A conditional change fails,
 *   retryable (`BackendUnavailable`: the event is redelivered, and in the end kept by the dead-letter
 *   queue, where it shows): applied as if nothing were recorded, a redelivered `created` older than
 *   a revocation made on a correct clock brought the revoked key back on an instance whose clock was
 *   behind by more than that.
 */
export function stampOfChange(
  ifNewerThan: ChangeStamp | undefined,
  isDelete: boolean,
  recorded: ChangeStamp | undefined,
  recordedIsDelete: boolean,
  now: number,
  /**
   * `replay`: the change was decided already, by a writer whose log line a reader applies again
   * (the file store): a record not trusted then is passed over, as the rule was before it refused,
   * and as a log written then holds. A line in the log is never refused.
   */
  mode: "decide" | "replay" = "decide",
): ChangeStamp | undefined {
  if (ifNewerThan === undefined) return directStamp(recorded, now);
  const held = trusted(recorded, now);
  if (mode === "decide" && recorded !== undefined && held === undefined) {
    throw new BackendUnavailable(
      `the name's last change is dated ${Math.round((recorded.at - now) / 60_000)} min ahead of this clock (is this instance's clock behind?): a change ordered by its time is not applied until the clocks agree`,
      CLOCK_RETRY_SECONDS,
    );
  }
  return isNewer(ifNewerThan, isDelete, held, recordedIsDelete) ? ifNewerThan : undefined;
}

/** When a change refused for a recorded time far ahead is worth trying again. */
const CLOCK_RETRY_SECONDS = 60;

/** The stamp of a direct change over `recorded` (`stampOfChange`'s rule): now, or just after it. */
export function directStamp(recorded: ChangeStamp | undefined, now: number): ChangeStamp {
  const held = trusted(recorded, now);
  return { at: held !== undefined && held.at >= now ? held.at + 1 : now };
}

function trusted(recorded: ChangeStamp | undefined, now: number): ChangeStamp | undefined {
  return recorded !== undefined && recorded.at <= now + TRUSTED_AHEAD_MS ? recorded : undefined;
}

const configTags = z.nullish(z.record(z.string(), z.string()));

/**
 * The config keys that hold the tags a store gives what it creates (`key_management_settings.tags`,
 * and each team's in `team_settings`): a store whose backend limits tags reads them in its
 * settings schema (`config: z.object({ ...CreationTagKeys })`) to check them when it opens.
 */
export const CreationTagKeys = {
  access_mode: z.nullish(z.string()), // validated with the general settings; read here to skip a store that never writes
  tags: configTags,
  team_settings: z.nullish(z.record(z.string(), z.object({ tags: configTags }))),
};

/**
 * Stops the start when the config's creation tags (general, and each team's) are what `check`
 * refuses (it throws `InvalidInput`): every write that creates a secret would be refused for tags
 * its caller never gave, and every key event creating a name dropped. The message names the key.
 * A store that cannot write (`access_mode` read_only, or its default when unset) uses no tags.
 */
export function refuseCreationTags(
  config: z.output<z.ZodMiniObject<typeof CreationTagKeys>>,
  defaultMode: AccessMode,
  check: (tags: Readonly<Record<string, string>>) => unknown,
): void {
  if ((config.access_mode ?? defaultMode) === "read_only") return;
  const where = "general_settings.key_management_settings";
  const defaults: [string, Readonly<Record<string, string>> | null | undefined][] = [
    [`${where}.tags`, config.tags],
    ...Object.entries(config.team_settings ?? {}).map(([team, settings]): [string, typeof settings.tags] => [
      `${where}.team_settings.${team}.tags`,
      settings.tags,
    ]),
  ];
  for (const [key, tags] of defaults) {
    try {
      check(tags ?? {});
    } catch (err) {
      if (err instanceof InvalidInput) throw new ConfigError(`${key}: ${err.message}`);
      throw err;
    }
  }
}

/**
 * The stamp as a store records it when `fits` says which event ids its record can hold (a tag
 * value's length): an id that does not fit becomes `#` and its SHA-256 (base64url, 44 characters).
 * Every id the key-event schema admits is then recorded; the same id always gives the same digest,
 * so a redelivered event is still known as the change it is. A store compares only stamps in this
 * form (the incoming one mapped as its record is), so ties between two such ids break by their
 * digests, consistently, whatever order the events arrive in.
 */
export function recordableStamp<T extends ChangeStamp | undefined>(stamp: T, fits: (id: string) => boolean): T {
  if (stamp?.id === undefined || fits(stamp.id)) return stamp;
  return { ...stamp, id: `#${createHash("sha256").update(stamp.id, "utf8").digest("base64url")}` };
}

/** Whether a change stamped `change` (a delete or not) wins over the last recorded one. */
export function isNewer(
  change: ChangeStamp,
  changeIsDelete: boolean,
  recorded: ChangeStamp | undefined,
  recordedIsDelete: boolean,
): boolean {
  if (recorded === undefined) return true;
  if (change.at !== recorded.at) return change.at > recorded.at;
  // Equal times: a delete wins, then the larger event id. The same change twice is not newer.
  if (changeIsDelete !== recordedIsDelete) return changeIsDelete;
  return (change.id ?? "") > (recorded.id ?? "");
}

/**
 * One page of `names` (sorted, each once), for a store that holds its names in hand (file,
 * environment, memory). The cursor is the page's last name, base64url-encoded.
 */
export function pageOfNames(names: Iterable<string>, options: ListOptions): NamePage {
  const prefix = options.prefix ?? "";
  const after = options.cursor === undefined ? undefined : Buffer.from(options.cursor, "base64url").toString("utf8");
  const matching = [...names].filter((n) => n.startsWith(prefix) && (after === undefined || n > after)).sort();
  const page = matching.slice(0, options.limit);
  const last = page.at(-1);
  return matching.length > options.limit && last !== undefined
    ? { names: page, cursor: Buffer.from(last, "utf8").toString("base64url") }
    : { names: page };
}

/**
 * Work queued by key and run one after another in this process: a store's read-then-write of one
 * secret is not raced from here (other processes need the backend's own check). A failed run does
 * not stop the next; the queue of a key is forgotten once it is empty.
 */
export class KeyedQueue {
  /** The tail of each key's queue; it never rejects. */
  readonly #tails = new Map<string, Promise<void>>();

  /** Runs `work` once everything queued for `key` before it has settled. */
  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const run = (this.#tails.get(key) ?? Promise.resolve()).then(work);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return run;
  }

  /** Settles when everything queued so far has. */
  async settled(): Promise<void> {
    await Promise.all(this.#tails.values());
  }
}
