/**
 * `custom`: your own store, as a module (LiteLLM's `custom` key management). The config names it:
 * `key_management_settings.custom_secret_manager: ./my-store.mjs`, relative to the config file (to
 * the working directory with an inline config). It is loaded once, at start: the one store loaded
 * by a computed path. Its default export is either
 *
 * - a `StoreFactory` (`kind`, `settings`, `defaults`, `capabilities`, `open`): opened with its own
 *   settings parsed by its own schema, from the same config and environment; or
 * - a class constructed with no arguments, with `get(name)` returning a string, a record
 *   (`{ value, version?, updatedAt?, tags? }`) or undefined, and optional `put(name, value)` and
 *   `delete(name)`: a store without them answers `501 not_supported` to writes.
 *
 * A module that cannot be loaded, or whose export is neither, or a factory whose store lacks `kind`,
 * `keyOf` or `get`, stops the start with a message naming the module.
 * Whatever its store throws goes through the one classifier like every store's failures (an error
 * named `NotSupported`, from another copy of this package or plain, is `not_supported`).
 */
import { basename, isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import * as z from "zod/mini";
import { ConfigError, type ErrorCode, SecretsError } from "../errors";
import {
  type DeleteOutcome,
  KeyedQueue,
  type ListOptions,
  type PutOutcome,
  type SecretRecord,
  type SecretStore,
  type StoreCapabilities,
  type StoreDefaults,
  type StoreDeps,
  type StoreFactory,
} from "../secret-store";
import {
  BackendUnavailable,
  classifyBackendError,
  NotSupported,
  STORE_FAILURES,
  withUserMessage,
} from "../store-errors";
import { describeIssues, issuesOf, safeParse } from "../validation";

export const CustomSettings = z.object({
  // Loose: a StoreFactory module's own keys come through, for its own schema to read.
  config: z.looseObject({ custom_secret_manager: z.nullish(z.string().check(z.minLength(1))) }),
  env: z.object({}),
});

/**
 * What a user's store may throw, typed, by code: the store errors of `store-errors.ts`, and the
 * refusals of a request the built-in stores report too (a value larger than it takes, as the
 * README invites, a name or an input it cannot take): each answered with its own status (413, 400).
 * A value too large is a write's answer only (the API documents 413 where there is a body).
 */
const STORE_ERROR_CODES: ReadonlySet<string> = new Set([
  "backend_denied",
  "backend_unavailable",
  "name_conflict",
  "not_supported",
  "store_corrupt",
  "store_unavailable",
  "payload_too_large",
  "invalid_name",
  "invalid_request",
] satisfies ErrorCode[]);

/**
 * A user's store's failure as a typed error. The README's typed errors thrown from another copy
 * of the package (a bundled function's module imports its own) fail `instanceof`: one with a store
 * error's `code` keeps its code, message and `retryAfter`; an error named `NotSupported` (plain, so
 * named) is `not_supported`; anything else goes through the one classifier. A typed error's message
 * is the user's: it reaches the caller, and logs leave it out (`withUserMessage`), as it may hold
 * anything.
 */
function classifyCustomError(err: unknown, what: string): SecretsError {
  if (err instanceof SecretsError) return withUserMessage(err);
  const typed = err as { code?: unknown; message?: unknown; name?: unknown; details?: { retryAfter?: unknown } } | null;
  if (
    typeof typed?.code === "string" &&
    STORE_ERROR_CODES.has(typed.code) &&
    (typed.code !== "payload_too_large" || what === "custom store put") &&
    typeof typed.message === "string"
  ) {
    const retryAfter = typed.details?.retryAfter;
    return withUserMessage(
      typed.code === "backend_unavailable"
        ? new BackendUnavailable(typed.message, typeof retryAfter === "number" ? retryAfter : 1, { cause: err })
        : new SecretsError(typed.code as ErrorCode, typed.message, {}, { cause: err }),
    );
  }
  if (typed?.name === "NotSupported") return new NotSupported(what);
  // Named by its error's name and code, which the user's store wrote too.
  return withUserMessage(classifyBackendError(err, what));
}

/** What a factory's store cannot do without: a missing one would fail every call with our own `TypeError` (`500 internal`). */
const STORE_METHODS = ["keyOf", "get"] as const;

/**
 * What a `StoreFactory`'s `open` returned, checked at start: one lacking `kind`, `keyOf` or `get`
 * stops the start naming what is missing (it is closed first, if it can be), rather than starting,
 * saying it is ready and failing every call. One without `put` or `delete` serves reads
 * (`classifiedStore`).
 */
async function checkedStore(store: unknown, path: string): Promise<SecretStore> {
  const given = store as Partial<Record<string, unknown>> | null | undefined;
  const missing = [
    ...(typeof given?.kind === "string" ? [] : ["kind (a string)"]),
    ...STORE_METHODS.filter((method) => typeof given?.[method] !== "function").map((method) => `${method}()`),
  ];
  if (missing.length > 0) {
    // Its timers, pools or sockets would otherwise keep `serve` from ending, and each of a
    // function's tries to start again would leave one more open.
    const close = given?.close;
    if (typeof close === "function") {
      await userCall("custom store close", async () => close.call(given), false).catch(() => {});
    }
    throw new ConfigError(
      `custom_secret_manager ${path}: the store its open() returned has no ${missing.join(", ")}: a SecretStore has kind, keyOf and get (and put and delete to write)`,
    );
  }
  return store as SecretStore;
}

/**
 * A `StoreFactory` module's store, its failures classified: what its `get`, `put`, `delete`, `list`,
 * `has` or `close` throws that is not already typed goes through `classifyCustomError`. Its kind,
 * `keyOf` and `watch` are its own; `list`, `has`, `watch` and `close` are there only when it has them. Without
 * `put` or `delete`, writes answer `501 not_supported`, as a plain class without them does.
 */
function classifiedStore(store: SecretStore, path: string): SecretStore {
  const list = store.list?.bind(store);
  const has = typeof store.has === "function" ? store.has.bind(store) : undefined;
  const close = store.close?.bind(store);
  // The module's file name only: this message reaches an HTTP answer, which never holds a path.
  const cannot = (what: string) => Promise.reject(new NotSupported(`${what} the custom store ${basename(path)}`));
  const writes = typeof (store as Partial<SecretStore>).put === "function";
  const deletes = typeof (store as Partial<SecretStore>).delete === "function";
  return {
    kind: store.kind,
    keyOf: (name, scope) => store.keyOf(name, scope),
    get: (name, options) => userCall("custom store get", () => store.get(name, options)),
    put: (name, value, options) =>
      writes ? userCall("custom store put", () => store.put(name, value, options)) : cannot("writing to"),
    delete: (name, options) =>
      deletes ? userCall("custom store delete", () => store.delete(name, options)) : cannot("deleting from"),
    ...(list && { list: (options: ListOptions) => userCall("custom store list", () => list(options)) }),
    ...(has && { has: (name: string) => userCall("custom store has", () => has(name)) }),
    ...(store.watch && { watch: (onChange: (names: string[]) => void) => store.watch?.(onChange) }),
    ...(close && { close: () => userCall("custom store close", close, false) }),
    // How long it keeps a delete, when it says (the start holds LLM_SECRETS_MAX_EVENT_AGE to it).
    ...(typeof store.tombstoneMs === "number" && { tombstoneMs: store.tombstoneMs }),
  };
}

/** How long a custom store's call may take: past it, `backend_unavailable` (the built-in stores all have such bounds). */
export const CUSTOM_TIMEOUT_MS = 30_000;

/**
 * A call of a user's store, bounded: a read that never settles would otherwise hold every later
 * read of its name (the cache shares one load per name), a write every later change of it (they
 * run one after the other). A write cut off this way may still land: as with any backend timeout.
 */
function withinTimeout<T>(call: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new BackendUnavailable(`${what}: no answer within ${CUSTOM_TIMEOUT_MS / 1000} s`)),
      CUSTOM_TIMEOUT_MS,
    );
  });
  return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
}

/** A call of the user's store (a factory's or a plain class's): bounded (but `close`), its failure classified. */
async function userCall<T>(what: string, work: () => T | Promise<T>, bounded = true): Promise<T> {
  // The user's failures are classified; the timeout is ours (its message ours, logged as is).
  const call = (async () => {
    try {
      return await work();
    } catch (err) {
      throw classifyCustomError(err, what);
    }
  })();
  return bounded ? withinTimeout(call, what) : call;
}

/** What a plain class may offer. */
interface PlainStore {
  get(name: string): unknown;
  put?(name: string, value: string): unknown;
  delete?(name: string): unknown;
}

/** A plain class's instance as a `SecretStore`. */
export class PlainClassStore implements SecretStore {
  readonly kind = "custom";
  /** Whether a name existed decides a change's outcome: changes of one name run one after the other. */
  readonly #queues = new KeyedQueue();

  constructor(
    private readonly inner: PlainStore,
    private readonly module: string,
  ) {}

  keyOf(name: string): string {
    return name;
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    const found = await userCall("custom store get", () => this.inner.get(name));
    if (found === undefined || found === null) return undefined;
    if (typeof found === "string") return { value: found };
    if (typeof found === "object" && typeof (found as { value?: unknown }).value === "string") {
      return found as SecretRecord;
    }
    throw new ConfigError(`custom_secret_manager ${this.module}: get() must return a string, a record or undefined`);
  }

  put(name: string, value: string): Promise<PutOutcome> {
    const put = this.inner.put?.bind(this.inner);
    if (!put) return Promise.reject(new NotSupported(`writing to the custom store ${basename(this.module)}`));
    return this.#queues.run(name, async () => {
      const existed = (await this.get(name)) !== undefined;
      await userCall("custom store put", () => put(name, value));
      return existed ? "updated" : "created";
    });
  }

  /**
   * The class's `delete` is always called (its `get` may lag a write it made: a read replica, a
   * cached miss). For a name its `get` found nothing under, a failure of it that is no store
   * failure (an error of its own for a missing name) is taken as the name being absent, as the API
   * answers a delete of an absent name `204`; a store failure (`backend_unavailable`, the timeout,
   * ...) is the answer.
   */
  delete(name: string): Promise<DeleteOutcome> {
    const remove = this.inner.delete?.bind(this.inner);
    if (!remove) return Promise.reject(new NotSupported(`deleting from the custom store ${basename(this.module)}`));
    return this.#queues.run(name, async () => {
      const existed = (await this.get(name)) !== undefined;
      try {
        await userCall("custom store delete", () => remove(name));
      } catch (err) {
        // The store itself failing (down, denied, the timeout) is the answer: the name may be there.
        if (existed || (err instanceof SecretsError && STORE_FAILURES.includes(err.code))) throw err;
      }
      return existed ? "deleted" : "absent";
    });
  }
}

/** `module.Class` or `package.module.Class` (a capital first): what LiteLLM's `custom_secret_manager` holds. */
const PYTHON_CLASS_PATH = /^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.[A-Z]\w*$/;

function isFactory(value: unknown): value is StoreFactory {
  const f = value as Partial<StoreFactory> | null;
  return (
    typeof f === "object" && f !== null && typeof f.kind === "string" && typeof f.open === "function" && !!f.settings
  );
}

/** The custom kind's defaults: what the start applies, whatever the module's own say. */
const CUSTOM_DEFAULTS: StoreDefaults = { accessMode: "read_only", needsLocalKey: false, envBacked: false };

/** Defaults the start reads before the module loads, and what to set instead of each. */
const UNAPPLIED_DEFAULTS = [
  ["accessMode", "key_management_settings.access_mode"],
  ["refreshIntervalVariable", "SECRET_MANAGER_REFRESH_INTERVAL"],
  ["refreshSeconds", "SECRET_MANAGER_REFRESH_INTERVAL"],
  ["alwaysReadVariable", "SECRET_MANAGER_REFRESH_INTERVAL=0 to always read"],
  ["needsLocalKey", "LITELLM_SALT_KEY or LITELLM_MASTER_KEY: the data dir's generated master.key is not read"],
] as const satisfies readonly (readonly [keyof StoreDefaults, string])[];

/**
 * A `StoreFactory` module's `defaults` against the custom kind's: the start took the custom kind's
 * (access mode, cache lifetime, whether the store reads the environment) before the module loaded.
 * One that reads the environment is refused: its names would be served over HTTP without the
 * `hosted_keys` limit. Others that differ are not applied, said in one warning.
 */
function checkDefaults(defaults: Partial<StoreDefaults> | undefined, path: string, deps: StoreDeps): void {
  if (defaults?.envBacked === true) {
    throw new ConfigError(
      `custom_secret_manager ${path}: its defaults say envBacked (it reads the environment), which a custom store cannot be: the start cannot know it before the module loads, so its names would be served over HTTP without the hosted_keys limit`,
    );
  }
  const differing = UNAPPLIED_DEFAULTS.filter(
    ([field]) =>
      defaults?.[field] !== undefined &&
      defaults[field] !== CUSTOM_DEFAULTS[field] &&
      // A key configured, nothing is missing: the key ring reaches the module all the same.
      !(field === "needsLocalKey" && deps.keys !== undefined),
  );
  if (differing.length === 0) return;
  const fields = differing.map(([field, instead]) => `${field} (set ${instead})`).join(", ");
  deps.log.warn(
    `custom_secret_manager ${path}: defaults not applied, the start read the custom store's before the module loaded: ${fields}`,
  );
}

/**
 * A `StoreFactory` module's `capabilities` against the custom kind's, which the start read before
 * the module loaded (no change times, no scopes). Its calls get each change's time and a team's
 * scope all the same, so the start's warnings of those do not hold for it, and its check that two
 * teams do not keep their keys in one place was not made: said in one warning.
 */
function checkCapabilities(capabilities: Partial<StoreCapabilities> | undefined, path: string, deps: StoreDeps): void {
  const unread = [
    ...(capabilities?.compareAndSet === true
      ? [
          "compareAndSet (each change's time reaches the store: key events are not applied merely in the order they arrive)",
        ]
      : []),
    ...(capabilities?.scopes === true
      ? [
          "scopes (team_settings' namespace, mount, path_prefix and data reach the store, not ignored; teams keeping their keys in one place under different data fields are not refused: keep them apart)",
        ]
      : []),
  ];
  if (unread.length === 0) return;
  deps.log.warn(
    `custom_secret_manager ${path}: capabilities not read, the start took the custom store's before the module loaded, so its warnings of them do not hold for this module: ${unread.join(", ")}`,
  );
}

async function openCustom(settings: z.output<typeof CustomSettings>, deps: StoreDeps): Promise<SecretStore> {
  const path = settings.config.custom_secret_manager;
  if (!path) {
    throw new ConfigError(
      "key_management_system custom needs key_management_settings.custom_secret_manager: a module path",
    );
  }
  const file = isAbsolute(path) ? path : resolve(deps.configDir ?? process.cwd(), path);
  let exported: unknown;
  try {
    exported = ((await import(pathToFileURL(file).href)) as { default?: unknown }).default;
  } catch (err) {
    const code = (err as { code?: string }).code ?? (err instanceof SyntaxError ? "SyntaxError" : "error");
    // LiteLLM's own value is a Python `module.Class` path: the proxy's config, not this one.
    const python = code === "ERR_MODULE_NOT_FOUND" && PYTHON_CLASS_PATH.test(path);
    throw new ConfigError(
      `custom_secret_manager: cannot load ${path} (${code})${
        python
          ? ": that is a Python class path, which LiteLLM's proxy loads; here it is a JavaScript module's path (./my-store.mjs)"
          : ""
      }`,
    );
  }
  if (isFactory(exported)) {
    checkDefaults(exported.defaults, path, deps);
    checkCapabilities(exported.capabilities, path, deps);
    const { custom_secret_manager: _path, ...config } = settings.config;
    const parsed = safeParse(exported.settings, { config, env: deps.env });
    if (!parsed.success) {
      throw new ConfigError(`custom_secret_manager ${path}: ${describeIssues(issuesOf(parsed.error))}`);
    }
    // What its open throws is classified as its calls' failures are: its message may hold anything.
    const opened = await userCall("custom store open", () => exported.open(parsed.data as never, deps), false);
    return classifiedStore(await checkedStore(opened, path), path);
  }
  if (typeof exported === "function") {
    let instance: unknown;
    try {
      instance = new (exported as new () => unknown)();
    } catch (err) {
      throw new ConfigError(
        `custom_secret_manager ${path}: its class could not be constructed (${(err as Error).name})`,
      );
    }
    if (typeof (instance as PlainStore).get === "function") return new PlainClassStore(instance as PlainStore, path);
  }
  throw new ConfigError(
    `custom_secret_manager ${path}: the default export must be a StoreFactory, or a class with get(name) (and optionally put, delete)`,
  );
}

export const customStore = {
  kind: "custom",
  settings: CustomSettings,
  defaults: CUSTOM_DEFAULTS,
  // No maxValueBytes: a user's own store's limit is its own to enforce.
  capabilities: { writes: true, deletes: true, compareAndSet: false, records: [] },
  open: openCustom,
} as const satisfies StoreFactory<"custom", typeof CustomSettings>;
