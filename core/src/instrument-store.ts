/**
 * `instrumentStore(store)`: every call to a store counted, timed and, when it fails, counted by
 * error code and logged (name, operation, code: never a value). The one place store calls are
 * measured; no store and not the manager does it by hand.
 */
import { SecretsError } from "./errors";
import type { Logger } from "./log";
import type { Labels, Metrics } from "./metrics";
import type { ListOptions, SecretStore } from "./secret-store";

type Op = "get" | "put" | "delete" | "list";

export function instrumentStore(store: SecretStore, metrics: Metrics, log: Logger): SecretStore {
  const labels: Record<Op, Labels> = {
    get: { store: store.kind, op: "get" },
    put: { store: store.kind, op: "put" },
    delete: { store: store.kind, op: "delete" },
    list: { store: store.kind, op: "list" },
  };
  const errorLabels = new Map<string, Labels>();
  const list = store.list?.bind(store);

  async function call<T>(op: Op, name: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    metrics.inc("llm_secrets_backend_calls_total", labels[op]);
    try {
      return await fn();
    } catch (err) {
      const code = err instanceof SecretsError ? err.code : "internal";
      const key = `${op}:${code}`;
      let failed = errorLabels.get(key);
      if (!failed) {
        failed = { store: store.kind, op, code };
        errorLabels.set(key, failed);
      }
      metrics.inc("llm_secrets_backend_errors_total", failed);
      log.warn("store call failed", { store: store.kind, op, name, code });
      throw err;
    } finally {
      metrics.observe("llm_secrets_backend_latency_seconds", labels[op], (performance.now() - started) / 1000);
    }
  }

  return {
    kind: store.kind,
    keyOf: (name, scope) => store.keyOf(name, scope),
    get: (name, options) => call("get", name, () => store.get(name, options)),
    put: (name, value, options) => call("put", name, () => store.put(name, value, options)),
    delete: (name, options) => call("delete", name, () => store.delete(name, options)),
    ...(list && { list: (options: ListOptions) => call("list", options.prefix ?? "", () => list(options)) }),
    ...(store.watch && { watch: (onChange: (names: string[]) => void) => store.watch?.(onChange) }),
    ...(store.close && { close: () => store.close?.() ?? Promise.resolve() }),
  };
}
