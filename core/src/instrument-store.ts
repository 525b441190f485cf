/**
 * `instrumentStore(store)`: every call to a store counted, timed and, when the store fails, counted
 * by error code and logged: name, operation, code and the reason, which for our typed errors is
 * built from operation names, statuses and service codes only (store-errors.ts), and for any other
 * error is its class and frames, never its message; never a value. A caller's mistake the store
 * reports (`invalid_name`, `name_conflict`, `not_supported`, ...: a 4xx or 501) is no failure of
 * the store: the request's own log line says it. The one place store calls are measured; no store
 * and not the manager does it by hand.
 */
import { type ErrorCode, SecretsError } from "./errors";
import { describeUnexpected, type Logger } from "./log";
import type { Labels, Metrics } from "./metrics";
import type { ListOptions, SecretStore } from "./secret-store";
import { loggableMessage, STORE_FAILURES } from "./store-errors";

type Op = "get" | "put" | "delete" | "list" | "has";

/** The codes of a store that failed, and `internal` (an unexpected failure). */
const FAILED: ReadonlySet<ErrorCode> = new Set<ErrorCode>([...STORE_FAILURES, "internal"]);

export function instrumentStore(store: SecretStore, metrics: Metrics, log: Logger): SecretStore {
  const labels: Record<Op, Labels> = {
    get: { store: store.kind, op: "get" },
    put: { store: store.kind, op: "put" },
    delete: { store: store.kind, op: "delete" },
    list: { store: store.kind, op: "list" },
    has: { store: store.kind, op: "has" },
  };
  const errorLabels = new Map<string, Labels>();
  const list = store.list?.bind(store);
  const has = store.has?.bind(store);

  async function call<T>(op: Op, name: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    metrics.inc("llm_secrets_backend_calls_total", labels[op]);
    try {
      return await fn();
    } catch (err) {
      const code = err instanceof SecretsError ? err.code : "internal";
      if (!FAILED.has(code)) throw err;
      const key = `${op}:${code}`;
      let failed = errorLabels.get(key);
      if (!failed) {
        failed = { store: store.kind, op, code };
        errorLabels.set(key, failed);
      }
      metrics.inc("llm_secrets_backend_errors_total", failed);
      const reason = err instanceof SecretsError ? { reason: loggableMessage(err) } : describeUnexpected(err);
      log.warn("store call failed", { store: store.kind, op, name, code, ...reason });
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
    ...(has && { has: (name: string) => call("has", name, () => has(name)) }),
    ...(store.watch && { watch: (onChange: (names: string[]) => void) => store.watch?.(onChange) }),
    ...(store.close && { close: () => store.close?.() ?? Promise.resolve() }),
  };
}
