/**
 * @llm-secrets/core: what runtimes, a user's own store and tools build on. Runtimes get
 * `startOnFirstUse` (over `createRuntime`) and its `fetch(request, raw)`, never a bare app; a user's
 * store gets the `SecretStore` types and the typed errors. Stores are reached through their own subpath exports
 * (`@llm-secrets/core/stores/<file>`: `stores/aws`, `stores/vault`, ...), so importing this root loads no cloud SDK.
 */
import type { CLI_STORES } from "./cli";

export type { RawRequest } from "./app";
export { requestIdOf } from "./audit";
export { cryptoReady, type EncryptionAlgorithm, KeyRing, openSecret, sealSecret } from "./crypto";
export * from "./errors";
export { type ResponseCookie, responseCookies } from "./http/cookies";
export { errorAnswer } from "./http/router";
export { instrumentStore } from "./instrument-store";
export { createLogger, type Logger, silentLogger } from "./log";
export { createMetrics, type Metrics, type MetricsSink } from "./metrics";
export { nameFromPath, originForm, validateName } from "./names";
export { collectRefs, replaceRefs } from "./refs";
export {
  createRuntime,
  type FunctionOptions,
  type FunctionRuntimeOptions,
  type LazyRuntime,
  type Runtime,
  type RuntimeOptions,
  START_RETRY_MS,
  startOnFirstUse,
} from "./runtime";
export { SecretCache } from "./secret-cache";
export { SecretManager, type SecretRead } from "./secret-manager";
export * from "./secret-store";
export { loadSettings, type Settings, type SettingsInput } from "./settings";
export * from "./store-errors";
export { VERSION } from "./version";

/**
 * The kinds of the stores llm-secrets ships (`key_management_system` values), read off the CLI's
 * list by type only (nothing is loaded): a store is one by joining `CLI_STORES`.
 */
export type StoreKind = (typeof CLI_STORES)[number]["kind"];
