/**
 * The one door to secrets (SPEC section 4). The HTTP app, the CLI and key events all come here;
 * access mode, hosted keys, name validation and the cache are applied here once. The cache keys
 * on the store's `keyOf(name)`, so a change to one name reaches every name on its backend key (and
 * every field's key of its backend object, `object#field`); an entry answers only the name it was
 * read or written for (secret-cache.ts).
 */
import { createHash } from "node:crypto";
import { setImmediate } from "node:timers/promises";
import { MAX_LIST_LIMIT } from "./api-schemas";
import { type KeyRing, openSecret, sealSecret } from "./crypto";
import { AccessDenied, EncryptionKeyMissing, InvalidInput, NotFound, SecretsError } from "./errors";
import type { Logger } from "./log";
import type { Labels, Metrics } from "./metrics";
import { TOKEN_HASH_NAME, validateName } from "./names";
import { collectRefs, envRefValue, REF_PREFIX, replaceRefs, scanRefs } from "./refs";
import { type CacheRead, objectOfKey, SecretCache } from "./secret-cache";
import type {
  ChangeStamp,
  DeleteOutcome,
  ListOptions,
  NamePage,
  PutOutcome,
  SecretMeta,
  SecretStore,
  StoreScope,
} from "./secret-store";
import { type KeyManagement, unreadableAtStart, virtualKeyPrefix } from "./settings";
import { isRetryable, NotSupported } from "./store-errors";

/** The name `probe` reads when no hosted key is configured (under the virtual-key prefix first). */
const READY_PROBE_NAME = "llm-secrets-readiness-probe";
/** How deep a config sent to `resolve` may nest. */
const MAX_CONFIG_DEPTH = 32;
/** Names `resolve` looks up at once, between turns of the event loop. */
const RESOLVE_BATCH = 256;
/**
 * Store reads under way at once, whoever asks (a config's refs at start, `resolve`, background
 * refreshes): a config of thousands of refs does not fire thousands of calls at a rate-limited
 * backend (Google's 600 reads a minute, Vault's quotas) at the same instant.
 */
const MAX_STORE_READS = 64;
/** Store reads failing as unavailable in a row, none answered between, that fail the reads waiting their turn. */
const SHED_AFTER = 3;
/** Unresolved names spelled out in the 422's message; `names` holds them all. */
const LISTED_IN_MESSAGE = 20;
/** `TOKEN_HASH_NAME` as a name's last segment, or its last three (`virtual/key/<hex>`). */
const HASH_NAME_AT_END = new RegExp(`(?:^|/)${TOKEN_HASH_NAME.source.slice(1)}`, TOKEN_HASH_NAME.flags);

export interface SecretRead {
  name: string;
  value: string;
  /** True when the store was unavailable and this is the last good value, past its refresh interval. */
  stale: boolean;
}

type RefSource = "store" | "env" | "unresolved";

export interface ConfigResolution {
  config: unknown;
  /**
   * Where each ref resolved from; an unresolved one says why: `invalid_name`, `write_only` or
   * `not_hosted` (the store was not read: the environment does not hold it either), `not_found`, or
   * the store's error code when its read failed (and the environment does not hold it).
   */
  refs: { name: string; source: RefSource; reason?: string }[];
}

export interface SecretManagerOptions {
  /** The store, already wrapped by `instrumentStore`. */
  store: SecretStore;
  /** The store reads the process environment: over HTTP it serves only `hosted_keys`. */
  envBacked: boolean;
  policy: KeyManagement;
  cache: { ttlSeconds: number; maxStaleSeconds: number };
  metrics: Metrics;
  log: Logger;
  /** The environment captured at start: used only when resolving a config at start, never over HTTP. */
  env?: Readonly<Record<string, string>>;
  /** The salt key ring, for `encrypt` and `decrypt`. */
  keys?: KeyRing;
  /** The largest request body a caller can send: `encrypt` refuses values whose ciphertext would not fit. */
  maxBodyBytes?: number;
  /** The largest value, in UTF-8 bytes, the store takes (`capabilities.maxValueBytes`): a larger one is refused before any call. */
  maxValueBytes?: number;
  /** The store's keys name fields of one object, `object#field` (`capabilities.scopes`: Vault's): see secret-cache.ts. */
  fieldKeys?: boolean;
  /** `resolve`'s bounds: ref occurrences in a config, and bytes of the answer (SPEC section 4). */
  resolveLimits?: { maxRefs: number; maxBytes: number };
  now?: () => number;
}

/**
 * `decrypt` without a store: for the CLI, which needs no store to open a ciphertext but obeys
 * `access_mode` as every entry point does.
 */
export function decryptUnder(
  policy: Pick<KeyManagement, "accessMode">,
  keys: KeyRing | undefined,
  ciphertext: string,
): string {
  if (policy.accessMode === "write_only") {
    throw new AccessDenied("write_only", "decryption is disabled: access_mode is write_only");
  }
  if (!keys) throw new EncryptionKeyMissing();
  return openSecret(ciphertext, keys);
}

/** A key event's change of a name: the event's time and id, and its team. */
export interface EventChange {
  /** The event's `occurred_at` and id: the store applies the change only if newer (`ifNewerThan`). */
  stamp: ChangeStamp;
  /** The event's `team_id`: where that team's `team_settings` (config only) say its keys go. */
  team?: string;
  /**
   * A write's previous name on the same backend key, whose secret it takes over (`PutOptions.replaces`:
   * a regeneration's alias that the store maps onto the new one's key).
   */
  replaces?: string;
}

/** A cache answer as a read: the value, or `not_found`. */
function found(name: string, read: CacheRead): SecretRead {
  if (read.value === undefined) throw new NotFound(name);
  return { name, value: read.value, stale: read.stale };
}

/** How many hosted names a listing looks up at once. */
const HOSTED_LOOKUPS = 16;

export class SecretManager {
  readonly store: SecretStore;
  readonly #policy: KeyManagement;
  readonly #cache: SecretCache;
  readonly #log: Logger;
  readonly #env: Readonly<Record<string, string>>;
  readonly #envBacked: boolean;
  readonly #hosted: ReadonlySet<string> | undefined;
  /** Each hosted name by its backend key (`keyOf`): what a virtual key must not land on. */
  readonly #hostedByKey: ReadonlyMap<string, string>;
  /** Every virtual-key prefix configured (the general one, each team's), and whose it is. */
  readonly #prefixes: readonly { prefix: string; owner: string }[];
  /** Each prefix's backend key, made a name by one more character (`#under`), once found. */
  readonly #prefixKeys = new Map<string, string>();
  /** The store's keys name places of their own per team (`capabilities.scopes`: Vault's paths). */
  readonly #scoped: boolean;
  /** On such a store, where each scope's virtual keys land (`#placeOwner`), once found. */
  #places: readonly { place: string; owner: string }[] | undefined;
  readonly #keys: KeyRing | undefined;
  readonly #maxBodyBytes: number;
  readonly #maxValueBytes: number | undefined;
  readonly #reads = new ConcurrencyLimit(MAX_STORE_READS);
  readonly #resolveLimits: { maxRefs: number; maxBytes: number };

  constructor(options: SecretManagerOptions) {
    this.store = options.store;
    this.#keys = options.keys;
    this.#maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
    this.#maxValueBytes = options.maxValueBytes;
    this.#scoped = options.fieldKeys === true;
    this.#resolveLimits = options.resolveLimits ?? { maxRefs: 1000, maxBytes: 1024 * 1024 };
    this.#policy = options.policy;
    this.#log = options.log;
    this.#env = options.env ?? {};
    this.#envBacked = options.envBacked;
    this.#hosted = options.policy.hostedKeys ? new Set(options.policy.hostedKeys) : undefined;
    this.#hostedByKey = new Map((options.policy.hostedKeys ?? []).map((name) => [options.store.keyOf(name), name]));
    this.#prefixes = [
      { prefix: options.policy.prefixForStoredVirtualKeys, owner: "the general prefix_for_stored_virtual_keys" },
      ...Object.entries(options.policy.teams ?? {}).flatMap(([team, settings]) =>
        settings.prefixForStoredVirtualKeys === undefined
          ? []
          : [{ prefix: settings.prefixForStoredVirtualKeys, owner: `team ${team}'s prefix_for_stored_virtual_keys` }],
      ),
    ];
    const labels: Labels = { store: options.store.kind };
    const counters = {
      hit: "llm_secrets_cache_hits_total",
      miss: "llm_secrets_cache_misses_total",
      stale: "llm_secrets_cache_stale_serves_total",
      refresh: "llm_secrets_cache_refreshes_total",
    } as const;
    this.#cache = new SecretCache({
      ...(options.fieldKeys === true && { fields: true }),
      ttlMs: options.cache.ttlSeconds * 1000,
      maxStaleMs: options.cache.maxStaleSeconds * 1000,
      now: options.now,
      onEvent: (event) => options.metrics.inc(counters[event], labels),
      onRefreshError: (err, key, ageMs) =>
        this.#log.warn("background refresh failed; serving the cached value", {
          store: this.store.kind,
          name: key,
          code: err instanceof SecretsError ? err.code : "internal",
          age_s: Math.round(ageMs / 1000),
        }),
    });
    options.store.watch?.((names) => {
      for (const name of names) this.#cache.forget(this.store.keyOf(name));
    });
  }

  /** Whether the store serves `name` to API callers (HTTP, CLI): hosted, and never the environment unasked. */
  serves(name: string): boolean {
    return this.#hosted ? this.#hosted.has(name) : !this.#envBacked;
  }

  /** Reads `name`; with `team`, where that team's `team_settings` say its secrets live. */
  async get(name: string, options: { refresh?: boolean; team?: string } = {}): Promise<SecretRead> {
    return this.read(name, options);
  }

  /**
   * `get` for the hot path: a cache hit is answered synchronously (no promise), a miss with a
   * promise. It throws synchronously what `get` rejects with.
   */
  read(name: string, options: { refresh?: boolean; team?: string } = {}): SecretRead | Promise<SecretRead> {
    this.#checkRead(name);
    const cached = this.#cached(name, options.refresh, this.#scopeOf(options.team));
    return cached instanceof Promise ? cached.then((read) => found(name, read)) : found(name, cached);
  }

  /**
   * `/ready`'s check: one read past the cache of a name this deployment may read (its least
   * privilege included): the first hosted key, else the probe name under the virtual-key prefix
   * (which infra/aws grants); where a store refuses that name (Docker: no `/`), the next hosted
   * key, or the bare probe name. Held or not, an answer means the store is reachable and lets us
   * in; not ready when it fails otherwise, or refuses every name.
   */
  async probe(): Promise<void> {
    const names =
      this.#hosted !== undefined && this.#hosted.size > 0
        ? [...this.#hosted]
        : [`${this.#policy.prefixForStoredVirtualKeys}${READY_PROBE_NAME}`, READY_PROBE_NAME];
    for (const [i, name] of names.entries()) {
      try {
        await this.store.get(name);
        return;
      } catch (err) {
        if (i === names.length - 1 || !(err instanceof SecretsError && err.code === "invalid_name")) throw err;
      }
    }
  }

  /**
   * A page of the names the API serves (never values): the store's page, or with `hosted_keys` a
   * page of those of them it holds (`#listHosted`). Refused under `write_only`; `not_supported`
   * where the store cannot list.
   */
  async list(options: ListOptions): Promise<NamePage> {
    if (this.#policy.accessMode === "write_only") {
      throw new AccessDenied("write_only", "listing is disabled: access_mode is write_only");
    }
    if (!this.store.list) throw new NotSupported(`listing the names of the ${this.store.kind} store`);
    // An environment store without hosted_keys serves no name: there is nothing to list.
    if (!this.#hosted && this.#envBacked) return { names: [] };
    return this.#hosted ? this.#listHosted(this.#hosted, options) : this.store.list(options);
  }

  /**
   * With hosted_keys: those of them the store holds, paged here, so no answer shows anything of a
   * name outside hosted_keys (the store's cursor may be one; whether it has more names, how many,
   * how long they are). Each hosted name under the prefix is asked of the store (`#holds`), a few at
   * a time, until a page and one more are found. An environment store's names are its
   * environment's, walked whole (no value is read: a KMS store's would be decrypted). The cursor is
   * a page's last name.
   */
  async #listHosted(hosted: ReadonlySet<string>, { prefix = "", limit, cursor }: ListOptions): Promise<NamePage> {
    const candidates = [...hosted].filter((n) => n.startsWith(prefix) && (cursor === undefined || n > cursor)).sort();
    const held: string[] = [];
    if (this.#envBacked) {
      const inEnvironment = new Set<string>();
      let position: string | undefined;
      do {
        const page = await (this.store.list as NonNullable<SecretStore["list"]>)({
          prefix,
          limit: MAX_LIST_LIMIT,
          ...(position !== undefined && { cursor: position }),
        });
        for (const name of page.names) inEnvironment.add(name);
        position = page.cursor;
      } while (position !== undefined);
      held.push(...candidates.filter((n) => inEnvironment.has(n)));
    } else {
      for (let i = 0; i < candidates.length && held.length <= limit; ) {
        // No more lookups than the page and one more still need.
        const batch = candidates.slice(i, i + Math.min(HOSTED_LOOKUPS, limit + 1 - held.length));
        i += batch.length;
        const found = await Promise.all(batch.map((name) => this.#holds(name)));
        held.push(...batch.filter((_, j) => found[j]));
      }
    }
    const names = held.slice(0, limit);
    return held.length > limit ? { names, cursor: names[names.length - 1] as string } : { names };
  }

  /**
   * Whether the store holds `name`: asked of the store, past the cache, and not kept (a listing must
   * not decide what a later read answers: a value deleted elsewhere served on, or a name stored
   * elsewhere answered 404). Absent, or a name the store cannot hold: no.
   * - A store with `has` opens no value to answer, so any failure of it is the store's (closed, its
   *   log damaged, its directory gone, unreachable): the listing fails, as its own list would.
   * - Else a `get`: a store that cannot be reached fails the listing (503); one that refuses or
   *   cannot open this name's value (a permission, the secret's own KMS key disabled) says it is
   *   there: a read of it answers why.
   */
  async #holds(name: string): Promise<boolean> {
    const store = this.store;
    const has = store.has?.bind(store);
    try {
      return await this.#reads.run(async () => (has ? has(name) : (await store.get(name)) !== undefined));
    } catch (err) {
      if (err instanceof SecretsError && err.code === "invalid_name") return false;
      if (has || isRetryable(err)) throw err;
      return true;
    }
  }

  /** The cache's answer for `name` (synchronous on a hit), loading from the store on a miss. */
  #cached(name: string, refresh?: boolean, scope?: StoreScope): CacheRead | Promise<CacheRead> {
    const load = () => this.#reads.run(async () => (await this.store.get(name, scope && { scope }))?.value);
    return this.#cache.get(this.store.keyOf(name, scope), load, refresh, name);
  }

  /** A team's scope from `team_settings` (config only); a team without settings uses the defaults. */
  #scopeOf(team: string | undefined): StoreScope | undefined {
    return team === undefined ? undefined : this.#policy.teams?.[team]?.scope;
  }

  /**
   * One ref of `resolve`: its value, or why it stays unresolved. The expected misses are answers,
   * not exceptions: a config may hold thousands of them, and each exception costs a stack trace.
   */
  async #resolveOne(name: string): Promise<{ value: string } | { reason: string }> {
    try {
      validateName(name);
    } catch {
      return { reason: "invalid_name" };
    }
    if (!this.serves(name)) return { reason: "not_hosted" };
    let read: CacheRead;
    try {
      const cached = this.#cached(name);
      read = cached instanceof Promise ? await cached : cached;
    } catch (err) {
      // A name the store itself refuses (Docker takes no `/`, Infisical no `:`) is this ref's answer,
      // not the whole resolve's failure; the store's other errors fail it.
      if (err instanceof SecretsError && err.code === "invalid_name") return { reason: "invalid_name" };
      throw err;
    }
    return read.value === undefined ? { reason: "not_found" } : { value: read.value };
  }

  /**
   * Writes `value`. For a key event (`event`), a store that records times applies it only if newer
   * than the last change of the name (else the outcome is `superseded`), and the event's team's
   * settings apply. A direct write's `replaces` (`PUT`'s body: the name a gateway's regeneration
   * renames) is the event's `replaces` for a caller without events: see `#checkReplaces`.
   */
  async put(
    name: string,
    value: string,
    meta: SecretMeta = {},
    event?: EventChange,
    options: { replaces?: string } = {},
  ): Promise<{ name: string; created: boolean; outcome: PutOutcome }> {
    const { adopt, under } = this.#allowWrite(name, event);
    if (event === undefined) this.#checkHashName(name, value, under);
    if (options.replaces !== undefined) this.#checkReplaces(name, options.replaces);
    this.#checkSize(value);
    const team = event?.team;
    const settings = team === undefined ? undefined : this.#policy.teams?.[team];
    const withDefaults: SecretMeta = {
      ...meta,
      whenCreated: {
        description: settings?.description ?? this.#policy.description,
        tags: settings?.tags ?? this.#policy.tags,
      },
    };
    const scope = settings?.scope;
    const key = this.store.keyOf(name, scope);
    // Only a previous name on this name's own key is taken over; on another key it changes nothing
    // (the caller deletes it, as after any regeneration).
    const previous = event?.replaces ?? options.replaces;
    const replaces = previous !== undefined && this.store.keyOf(previous, scope) === key ? previous : undefined;
    const outcome = await this.store
      .put(name, value, {
        meta: withDefaults,
        ifNewerThan: event?.stamp,
        ...(!adopt && { adopt }),
        ...(scope && { scope }),
        ...(replaces !== undefined && { replaces }),
      })
      .catch(this.#expireOnFailure(key));
    if (outcome === "superseded") this.#cache.forget(key);
    else {
      this.#cache.set(key, value, name);
      // Renamed: the previous name on the key is gone, as a delete of it would have said.
      if (replaces !== undefined) this.#cache.renamed(key, replaces);
    }
    return { name, created: outcome === "created", outcome };
  }

  /** Deletes `name`; for a key event (`event`), as `put` says. */
  async delete(name: string, event?: EventChange): Promise<DeleteOutcome> {
    const { adopt } = this.#allowWrite(name, event);
    const scope = this.#scopeOf(event?.team);
    const key = this.store.keyOf(name, scope);
    const outcome = await this.store
      .delete(name, { ifNewerThan: event?.stamp, ...(!adopt && { adopt }), ...(scope && { scope }) })
      .catch(this.#expireOnFailure(key));
    if (outcome === "superseded") this.#cache.forget(key);
    else this.#cache.setMissing(key, name);
    return outcome;
  }

  /** A failed change may have landed (a store's second call failing after its first): `key`'s next read asks the store. */
  #expireOnFailure(key: string): (err: unknown) => never {
    return (err) => {
      this.#cache.expire(key);
      throw err;
    };
  }

  /**
   * Seals `value` in LiteLLM's format under the salt key. A value whose ciphertext `decrypt` could
   * not take back (a body over the limit) is refused, so every ciphertext we hand out can be opened.
   */
  encrypt(value: string): string {
    const keys = this.#requireKeys();
    const bytes = Buffer.byteLength(value, "utf8");
    // nonce + MAC (or "v3:gcm:" + nonce + tag) + the value, in padded base64, in {"ciphertext":"..."}.
    const sealed =
      keys.algorithm === "aes-256-gcm" ? 7 + 4 * Math.ceil((28 + bytes) / 3) : 4 * Math.ceil((40 + bytes) / 3);
    if (sealed + '{"ciphertext":""}'.length > this.#maxBodyBytes) {
      throw new SecretsError(
        "payload_too_large",
        `the ciphertext of this value would be larger than the ${this.#maxBodyBytes}-byte body decrypt takes`,
      );
    }
    return sealSecret(value, keys);
  }

  /** Opens a ciphertext (current or previous salt keys). Obeys `access_mode: write_only`, as reads do. */
  decrypt(ciphertext: string): string {
    return decryptUnder(this.#policy, this.#keys, ciphertext);
  }

  #requireKeys(): KeyRing {
    if (!this.#keys) throw new EncryptionKeyMissing();
    return this.#keys;
  }

  /**
   * Resolves every ref in `config` through the store, as the HTTP API does: names the store does
   * not serve are refused, and names it does not hold are reported together as `unresolved_refs`.
   */
  async resolve(config: unknown): Promise<unknown> {
    const { maxRefs, maxBytes } = this.#resolveLimits;
    const { counts } = scanRefs(config, { maxDepth: MAX_CONFIG_DEPTH, maxRefs });
    if (this.#policy.accessMode === "write_only") {
      throw new AccessDenied("write_only", "reads are disabled: access_mode is write_only");
    }
    const values = new Map<string, string>();
    const reasons = new Map<string, string>(); // a Map: a name may be `__proto__`
    const names = [...counts.keys()];
    // A batch of names at a time, with a turn of the event loop between batches: a config of many
    // refs (the limit may be raised) neither holds the loop for its whole length nor sends the
    // store more than a batch of calls at once.
    for (let i = 0; i < names.length; i += RESOLVE_BATCH) {
      if (i > 0) await setImmediate();
      await Promise.all(
        names.slice(i, i + RESOLVE_BATCH).map(async (name) => {
          const found = await this.#resolveOne(name);
          if ("value" in found) values.set(name, found.value);
          else reasons.set(name, found.reason);
        }),
      );
    }
    const missing = [...reasons.keys()].sort();
    if (missing.length > 0) {
      const listed = missing.slice(0, LISTED_IN_MESSAGE).join(", ");
      const more =
        missing.length > LISTED_IN_MESSAGE ? ` and ${missing.length - LISTED_IN_MESSAGE} more (see names)` : "";
      throw new SecretsError("unresolved_refs", `${missing.length} ref(s) did not resolve: ${listed}${more}`, {
        names: missing,
        reasons: Object.fromEntries(missing.map((name) => [name, reasons.get(name) as string])),
      });
    }
    // The answer's size, counted before it is built: the config as sent, each ref's occurrences
    // replaced by the JSON of its value (which may be shorter than the ref: so compared once, whole).
    let bytes = Buffer.byteLength(JSON.stringify(config));
    for (const [name, count] of counts) {
      const value = values.get(name) as string;
      bytes +=
        count * (Buffer.byteLength(JSON.stringify(value)) - Buffer.byteLength(JSON.stringify(REF_PREFIX + name)));
    }
    if (bytes > maxBytes) {
      throw new SecretsError("payload_too_large", `the resolved config would be larger than ${maxBytes} bytes`);
    }
    return replaceRefs(config, values);
  }

  /**
   * Resolves a config at start, as LiteLLM does: through the store for the names it may read at
   * start (`#unreadableAtStart`), else (or when the store has no such name or fails) from the
   * environment captured at start.
   */
  async resolveConfig(config: unknown): Promise<ConfigResolution> {
    const names = collectRefs(config);
    const values = new Map<string, string>();
    // Names whose store read failed, by code: one line per code (a KMS store without hosted_keys
    // tries every plain value too, as LiteLLM does, and each would otherwise be a line).
    const failed = new Map<string, string[]>();
    const refs = await Promise.all(
      names.map(async (name): Promise<ConfigResolution["refs"][number]> => {
        let reason = this.#unreadableAtStart(name) ?? "not_found";
        if (reason === "not_found") {
          try {
            values.set(name, await this.#storeValue(name));
            return { name, source: "store" };
          } catch (err) {
            if (!(err instanceof NotFound)) {
              const code = err instanceof SecretsError ? err.code : "internal";
              failed.set(code, [...(failed.get(code) ?? []), name]);
              reason = code;
            }
          }
        }
        const fromEnv = envRefValue(this.#env, name);
        if (fromEnv === undefined) return { name, source: "unresolved", reason };
        values.set(name, fromEnv);
        return { name, source: "env" };
      }),
    );
    for (const [code, failedNames] of failed) {
      this.#log.warn("store read failed; using the environment", { code, names: failedNames.join(",") });
    }
    return { config: replaceRefs(config, values), refs };
  }

  /**
   * One ref of the operator's config that is no secret, read when it is used (forward's `api_base`),
   * by `resolveConfig`'s rule: through the store where it may be read at start, else, or when the
   * store does not hold it, from the environment captured at start (LiteLLM's get_secret); on a KMS
   * store, a plain value (not ciphertext) is the environment's too. A store that fails otherwise
   * fails the call: an outage is not hidden behind the environment's copy. `{ store: false }`: the
   * environment only (what a caller who may write the store cannot change).
   */
  async resolveRef(name: string, options: { store?: boolean } = {}): Promise<string> {
    if (options.store !== false && this.#unreadableAtStart(name) === undefined) {
      try {
        return await this.#storeValue(name);
      } catch (err) {
        const plain = this.#envBacked && err instanceof SecretsError && err.code === "store_corrupt";
        if (!(err instanceof NotFound) && !plain) throw err;
      }
    }
    const fromEnv = envRefValue(this.#env, name);
    if (fromEnv === undefined) throw new NotFound(name);
    return fromEnv;
  }

  /** A config ref's value read through the store and its cache (the API's rules aside); `NotFound` if it holds none. */
  async #storeValue(name: string): Promise<string> {
    const cached = this.#cached(name);
    return found(name, cached instanceof Promise ? await cached : cached).value;
  }

  /**
   * Why a config's ref is not read through the store at start, if it is not: LiteLLM's rule (reads
   * allowed, and in `hosted_keys` when that is set), else it is looked up in the environment only.
   * Unlike over the API, an environment-backed store reads every ref when there are no
   * `hosted_keys`: this is the operator's own config, and LiteLLM's get_secret decrypts each one
   * through KMS.
   */
  #unreadableAtStart(name: string): "invalid_name" | "write_only" | "not_hosted" | undefined {
    return unreadableAtStart(name, this.#policy.accessMode, this.#hosted);
  }

  #checkRead(name: string): void {
    validateName(name);
    if (this.#policy.accessMode === "write_only") {
      throw new AccessDenied("write_only", "reads are disabled: access_mode is write_only");
    }
    if (!this.serves(name)) {
      throw new AccessDenied(
        "not_hosted",
        this.#hosted
          ? `${name} is not in hosted_keys`
          : `the ${this.store.kind} store serves only names listed in hosted_keys`,
      );
    }
  }

  /**
   * The configured prefix other than `own` that `name` belongs to, if any: of every prefix `name`
   * starts with, the longest decides (`litellm/team-a/prod` is team-a's under `litellm/team-a/`,
   * not the general `litellm/`'s), and one as long as `own` but not it (another team's that the
   * store maps onto it) leaves the name to no one. Compared on the store's keys, so a prefix a
   * name maps onto counts (Azure: `litellm/team-a-prod` is under `litellm/team-a/`).
   */
  #otherOwner(
    under: readonly { prefix: string; owner: string }[],
    own: string,
  ): { prefix: string; owner: string } | undefined {
    let found: { prefix: string; owner: string } | undefined;
    for (const candidate of under) {
      const { prefix } = candidate;
      if (prefix === own || prefix.length < own.length) continue;
      if (found === undefined || prefix.length > found.prefix.length) found = candidate;
    }
    return found;
  }

  /**
   * On a store whose scopes put each team's keys in a place of its own (Vault: a team's namespace,
   * mount and path prefix, then its virtual-key prefix), the team whose place is more specific than
   * `team`'s own and holds where `name` lands under `team`'s scope: another scope's key. With a
   * team's `path_prefix: litellm` and the general `litellm/` prefix, a team-less alias `litellm/x`
   * and that team's alias `x` are one Vault secret. Undefined when none (every other store: names,
   * not places, are compared there, by `#under`).
   */
  #placeOwner(name: string, team: string | undefined): string | undefined {
    if (!this.#scoped) return undefined;
    const placeOf = (t: string | undefined) => this.#placeOf(`${virtualKeyPrefix(this.#policy, t)}k`, t).slice(0, -1);
    this.#places ??= [undefined, ...Object.keys(this.#policy.teams ?? {})].map((t) => ({
      place: placeOf(t),
      owner: t === undefined ? "the general settings" : `team ${t}`,
    }));
    // A team without settings of its own keeps its keys where the general settings say.
    const own = placeOf(team);
    const lands = this.#placeOf(name, team);
    let found: { place: string; owner: string } | undefined;
    for (const p of this.#places) {
      if (p.place.length <= own.length || !lands.startsWith(p.place)) continue;
      if (found === undefined || p.place.length > found.place.length) found = p;
    }
    return found?.owner;
  }

  /** Where `name` lands under `team`'s scope: its key without a KV field (`object#field`). */
  #placeOf(name: string, team: string | undefined): string {
    return objectOfKey(this.keyOf(name, team));
  }

  /**
   * The configured prefixes `name` starts with on the store's keys. A store's keyOf maps a name a
   * character at a time (within fixed text around it): the name's first characters and the
   * prefix, each made a name by one more character, land on one key. Each prefix's key is found
   * once, the name's once per prefix length: a write's cost does not grow with keyOf calls per team.
   */
  #under(name: string): { prefix: string; owner: string }[] {
    const nameKeys = new Map<number, string>();
    return this.#prefixes.filter(({ prefix }) => {
      if (name.startsWith(prefix)) return true;
      if (name.length <= prefix.length) return false;
      let prefixKey = this.#prefixKeys.get(prefix);
      if (prefixKey === undefined) {
        prefixKey = this.store.keyOf(`${prefix}k`);
        this.#prefixKeys.set(prefix, prefixKey);
      }
      let nameKey = nameKeys.get(prefix.length);
      if (nameKey === undefined) {
        nameKey = this.store.keyOf(`${name.slice(0, prefix.length)}k`);
        nameKeys.set(prefix.length, nameKey);
      }
      return nameKey === prefixKey;
    });
  }

  /**
   * A direct write (not a key event's) of a name under a virtual-key prefix spelled as a token
   * hash's secret name is refused before any call unless the value is that key (its SHA-256 is the
   * hex): LiteLLM keeps a key without an alias as `<prefix>virtual-key-<sha256 of the key>`, and a
   * gateway writes `<prefix><alias>` for a key with one, so another user choosing that string as
   * an alias would replace the first key's secret. The name's last segment, or what follows a
   * prefix it is under as the store maps names (`litellm-virtual-key-<hex>` is under `litellm/` on
   * Azure), is looked at. A name hosted_keys names is the operator's, and exempt.
   */
  #checkHashName(name: string, value: string, under: readonly { prefix: string; owner: string }[]): void {
    if (this.#hosted?.has(name)) return;
    if (under.length === 0) return;
    const hashes = [
      HASH_NAME_AT_END.exec(name)?.[1],
      ...under.map(({ prefix }) => TOKEN_HASH_NAME.exec(name.slice(prefix.length))?.[1]),
    ].filter((hash) => hash !== undefined);
    if (hashes.length === 0) return;
    const own = createHash("sha256").update(value, "utf8").digest("hex");
    if (hashes.every((hash) => hash.toLowerCase() === own)) return;
    throw new SecretsError(
      "invalid_request",
      `${name} is spelled as the secret name of a virtual key's token hash (virtual-key-<64 hex digits>), and the value is not that key: LiteLLM keeps a key without an alias under that name, which this write would replace. Choose another key_alias (or name it in hosted_keys if it is the operator's)`,
    );
  }

  /**
   * A direct write's `replaces` is refused before any call unless it is another valid name that this
   * caller could write or delete itself (`#allowWrite`: access mode, hosted_keys, prefixes): taking
   * a secret over from a name ends that name, as its delete would, so a `PUT` allowed for its own
   * name must not end a hosted name's secret (or, with hosted_keys, another team's key) through it.
   * Refusals keep their code (`403 not_hosted`, `409 name_conflict`) and say they are of `replaces`.
   */
  #checkReplaces(name: string, replaces: string): void {
    if (replaces === name) {
      throw new InvalidInput(`replaces is ${name} itself: it names the previous name that this write renames`, [
        { path: "replaces", message: "the name being written" },
      ]);
    }
    try {
      this.#allowWrite(replaces, undefined);
    } catch (err) {
      if (!(err instanceof SecretsError)) throw err;
      // Not invalid_name: that would say the name written (the path) is the invalid one.
      if (err.code === "invalid_name") {
        throw new InvalidInput(`replaces: ${err.message}`, [{ path: "replaces", message: err.message }]);
      }
      throw new SecretsError(err.code, `replaces: ${err.message}`, err.details);
    }
  }

  /** A value larger than the store takes is refused before any call (measured only where there is a limit). */
  #checkSize(value: string): void {
    const max = this.#maxValueBytes;
    if (max === undefined) return;
    const bytes = Buffer.byteLength(value, "utf8");
    if (bytes > max) {
      throw new SecretsError(
        "payload_too_large",
        `the value is ${bytes} bytes; the ${this.store.kind} store takes at most ${max}`,
      );
    }
  }

  /** Throws what a write or delete of `name` (a key event's, with `event`) would be refused for, before any call. */
  checkWrite(name: string, event?: EventChange): void {
    this.#allowWrite(name, event);
  }

  /** The store's key of `name` where `team`'s settings put it (two names on one key are one secret). */
  keyOf(name: string, team?: string): string {
    return this.store.keyOf(name, this.#scopeOf(team));
  }

  /**
   * Throws what a write or delete of `name` would be refused for (its name, the access mode,
   * hosted_keys); else says whether it may take over a secret made outside llm-secrets (the store's
   * `adopt`). A key event's change never may, nor one of a name under the virtual-key prefix that
   * hosted_keys does not name: such a name is chosen by whoever makes LiteLLM keys (an alias, a gateway's
   * `PUT /v1/secrets/litellm/<alias>`), and a store's name mapping can land it on an operator's
   * secret (Azure: `litellm/SALT_KEY` is a portal-made `LITELLM-SALT-KEY`). For the same reason
   * such a change never lands on a hosted name's backend key (`hosted_keys: [litellm/OPENAI]`, or
   * `litellm/openai` on Azure's case folding): `409 name_conflict`, as a store answers a name that
   * lands on another name's key (a 403 would say the name is not allowed at all, which a rename
   * of the key cannot fix either; the conflict names the hosted name in the way).
   */
  #allowWrite(
    name: string,
    event: EventChange | undefined,
  ): { adopt: boolean; under: readonly { prefix: string; owner: string }[] } {
    validateName(name);
    if (this.#policy.accessMode === "read_only") {
      throw new AccessDenied("read_only", "writes are disabled: access_mode is read_only");
    }
    // hosted_keys bounds writes too; virtual keys under the prefix (the team's, or the general one)
    // stay writable when stored, each only to its own team.
    const hosted = this.#hosted === undefined || this.#hosted.has(name);
    const own = virtualKeyPrefix(this.#policy, event?.team);
    const under = this.#under(name);
    const other = this.#otherOwner(under, own);
    const virtualKey =
      this.#policy.storeVirtualKeys && under.some(({ prefix }) => prefix === own) && other === undefined;
    if (event !== undefined && other !== undefined) {
      throw new SecretsError(
        "invalid_request",
        `${name} is under ${other.owner} (${other.prefix}), not only under this event's own (${own}): an event changes only its own team's keys`,
      );
    }
    const elsewhere = event !== undefined ? this.#placeOwner(name, event.team) : undefined;
    if (elsewhere !== undefined) {
      throw new SecretsError(
        "invalid_request",
        `${name} lands where ${elsewhere}'s virtual keys are kept in the store (a namespace, mount and path prefix of its own), not only where this event's own are: an event changes only its own team's keys`,
      );
    }
    // A direct write or delete allowed only as a virtual key: never where another scope keeps its
    // own (on Vault, a general `litellm/litellm/x` is team a's `x` with its path_prefix `litellm`).
    const placed = event === undefined && !hosted && virtualKey ? this.#placeOwner(name, undefined) : undefined;
    if (!hosted && (!virtualKey || placed !== undefined)) {
      throw new AccessDenied(
        "not_hosted",
        placed !== undefined
          ? `${name} is not in hosted_keys, and lands where ${placed}'s virtual keys are kept in the store`
          : other === undefined
            ? `${name} is not in hosted_keys`
            : `${name} is not in hosted_keys, and is under ${other.owner} (${other.prefix})`,
      );
    }
    // A name under any virtual-key prefix (the general one or a team's) is a virtual key unless the
    // operator named it in hosted_keys (without hosted_keys, every name is allowed, and a gateway's
    // PUT of litellm/<alias> is still a user's; with store_virtual_keys off too: the class writes there).
    const underPrefix = under.length > 0;
    const asVirtualKey = event !== undefined || (underPrefix && this.#hosted?.has(name) !== true);
    const onHosted = asVirtualKey ? this.#hostedByKey.get(this.store.keyOf(name)) : undefined;
    if (onHosted !== undefined) {
      throw new SecretsError(
        "name_conflict",
        onHosted === name
          ? `${name} is in hosted_keys: a key event never writes nor deletes a hosted name`
          : `${name} lands on the secret of ${onHosted}, which is in hosted_keys: a virtual key never writes nor deletes a hosted name`,
      );
    }
    return { adopt: !asVirtualKey, under };
  }
}

/**
 * Runs at most `max` store reads at once; the others wait their turn, first come first served.
 * When reads keep failing as the store being unavailable (`SHED_AFTER` in a row, none answered in
 * between: down, throttling), those waiting fail with that error at once: the cache then serves
 * them stale and backs them off, rather than each waiting a call's timeout in turn. One name's
 * failure among answers (its own timeout) fails no other read.
 */
class ConcurrencyLimit {
  #running = 0;
  #failedInARow = 0;
  readonly #waiting: { start: () => void; fail: (err: unknown) => void }[] = [];

  constructor(readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.max) await new Promise<void>((start, fail) => this.#waiting.push({ start, fail }));
    else this.#running++;
    try {
      const result = await task();
      this.#failedInARow = 0;
      return result;
    } catch (err) {
      // Another answer (a denial, a corrupt entry) is the store answering: the run ends there too.
      if (!isRetryable(err)) this.#failedInARow = 0;
      else if (++this.#failedInARow >= SHED_AFTER) for (const waiting of this.#waiting.splice(0)) waiting.fail(err);
      throw err;
    } finally {
      // The slot passes on to the next waiting read, else it frees.
      const next = this.#waiting.shift();
      if (next) next.start();
      else this.#running--;
    }
  }
}
