/**
 * The one door to secrets (SPEC section 4). The HTTP app, the CLI and key events all come here;
 * access mode, hosted keys, name validation and the cache are applied here once.
 */
import { AccessDenied, NotFound, SecretsError } from "./errors";
import type { Logger } from "./log";
import type { Metrics } from "./metrics";
import { validateName } from "./names";
import { collectRefs, replaceRefs } from "./refs";
import { SecretCache } from "./secret-cache";
import type { SecretMeta, SecretStore } from "./secret-store";
import type { KeyManagement } from "./settings";

export interface SecretRead {
  name: string;
  value: string;
  /** True when the store was unavailable and this is the last good value, past its refresh interval. */
  stale: boolean;
}

export type RefSource = "store" | "env" | "unresolved";

export interface ConfigResolution {
  config: unknown;
  refs: { name: string; source: RefSource }[];
}

export interface SecretManagerOptions {
  store: SecretStore;
  policy: KeyManagement;
  cache: { ttlSeconds: number; maxStaleSeconds: number };
  metrics: Metrics;
  log: Logger;
  /** The environment captured at start: used only when resolving a config at start, never over HTTP. */
  env?: Readonly<Record<string, string>>;
  now?: () => number;
}

export class SecretManager {
  readonly store: SecretStore;
  readonly #policy: KeyManagement;
  readonly #cache: SecretCache;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #env: Readonly<Record<string, string>>;
  readonly #labels: { store: string };
  readonly #opLabels: Record<"get" | "put" | "delete", { store: string; op: string }>;
  readonly #hosted: ReadonlySet<string> | undefined;

  constructor(options: SecretManagerOptions) {
    this.store = options.store;
    this.#policy = options.policy;
    this.#metrics = options.metrics;
    this.#log = options.log;
    this.#env = options.env ?? {};
    this.#labels = { store: options.store.kind };
    this.#opLabels = {
      get: { ...this.#labels, op: "get" },
      put: { ...this.#labels, op: "put" },
      delete: { ...this.#labels, op: "delete" },
    };
    this.#hosted = options.policy.hostedKeys ? new Set(options.policy.hostedKeys) : undefined;
    const counters = {
      hit: options.metrics.cacheHits,
      miss: options.metrics.cacheMisses,
      stale: options.metrics.staleServes,
      refresh: options.metrics.refreshes,
    };
    this.#cache = new SecretCache({
      ttlMs: options.cache.ttlSeconds * 1000,
      maxStaleMs: options.cache.maxStaleSeconds * 1000,
      now: options.now,
      onEvent: (event) => counters[event].inc(this.#labels),
      onRefreshError: (err) =>
        this.#log.warn("background refresh failed", {
          store: this.store.kind,
          code: err instanceof SecretsError ? err.code : "internal",
        }),
    });
    options.store.watch?.((names) => {
      for (const name of names) this.#cache.forget(name);
    });
  }

  /** Whether the store serves `name` to API callers (HTTP, CLI): hosted, and never the environment unasked. */
  serves(name: string): boolean {
    return this.#hosted ? this.#hosted.has(name) : !this.store.envBacked;
  }

  async get(name: string, options: { refresh?: boolean } = {}): Promise<SecretRead> {
    this.#checkRead(name);
    const read = await this.#cache.get(name, () => this.#call("get", () => this.store.get(name)), options.refresh);
    if (read.value === undefined) throw new NotFound(name);
    return { name, value: read.value, stale: read.stale };
  }

  async put(name: string, value: string, meta: SecretMeta = {}): Promise<{ name: string; created: boolean }> {
    this.#checkWrite(name);
    const withDefaults: SecretMeta = {
      ...meta,
      whenCreated: { description: this.#policy.description, tags: this.#policy.tags },
    };
    const { created } = await this.#call("put", () => this.store.put(name, value, withDefaults));
    this.#cache.set(name, value);
    return { name, created };
  }

  async delete(name: string): Promise<void> {
    this.#checkWrite(name);
    await this.#call("delete", () => this.store.delete(name));
    this.#cache.setMissing(name);
  }

  /**
   * Resolves every ref in `config` through the store, as the HTTP API does: names the store does
   * not serve are refused, and names it does not hold are reported together as `unresolved_refs`.
   */
  async resolve(config: unknown): Promise<unknown> {
    const names = collectRefs(config);
    for (const name of names) this.#checkRead(name);
    const values = new Map<string, string>();
    const missing: string[] = [];
    await Promise.all(
      names.map(async (name) => {
        try {
          values.set(name, (await this.get(name)).value);
        } catch (err) {
          if (!(err instanceof NotFound)) throw err;
          missing.push(name);
        }
      }),
    );
    if (missing.length > 0) {
      missing.sort();
      throw new SecretsError("unresolved_refs", `${missing.length} ref(s) did not resolve: ${missing.join(", ")}`, {
        names: missing,
      });
    }
    return replaceRefs(config, values);
  }

  /**
   * Resolves a config at start, as LiteLLM does: through the store for the names it serves, else
   * (or when the store has no such name or fails) from the environment captured at start.
   */
  async resolveConfig(config: unknown): Promise<ConfigResolution> {
    const names = collectRefs(config);
    const values = new Map<string, string>();
    const refs = await Promise.all(
      names.map(async (name): Promise<{ name: string; source: RefSource }> => {
        if (this.#readableFromStore(name)) {
          try {
            values.set(name, (await this.get(name)).value);
            return { name, source: "store" };
          } catch (err) {
            if (!(err instanceof NotFound)) {
              this.#log.warn("store read failed; using the environment", {
                name,
                code: err instanceof SecretsError ? err.code : "internal",
              });
            }
          }
        }
        const fromEnv = Object.hasOwn(this.#env, name) ? this.#env[name] : undefined;
        if (fromEnv === undefined) return { name, source: "unresolved" };
        values.set(name, fromEnv);
        return { name, source: "env" };
      }),
    );
    return { config: replaceRefs(config, values), refs };
  }

  /** At start, a name the API may not read (or an invalid one) is looked up in the environment only. */
  #readableFromStore(name: string): boolean {
    try {
      this.#checkRead(name);
      return true;
    } catch {
      return false;
    }
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

  #checkWrite(name: string): void {
    validateName(name);
    if (this.#policy.accessMode === "read_only") {
      throw new AccessDenied("read_only", "writes are disabled: access_mode is read_only");
    }
  }

  /** One backend call, counted and timed. */
  async #call<T>(op: "get" | "put" | "delete", fn: () => Promise<T>): Promise<T> {
    const labels = this.#opLabels[op];
    const started = performance.now();
    this.#metrics.backendCalls.inc(labels);
    try {
      return await fn();
    } finally {
      this.#metrics.backendLatency.observe(labels, (performance.now() - started) / 1000);
    }
  }
}
