/** @llm-secrets/core: what runtimes and tests build on. */
export { type AppBindings, type AppOptions, createApp, MAX_BODY_BYTES } from "./app";
export { type EncryptionAlgorithm, KeyRing, openSecret, sealSecret } from "./crypto";
export * from "./errors";
export { createLogger, type Logger, silentLogger } from "./log";
export { Metrics } from "./metrics";
export { nameFromPath, validateName } from "./names";
export { collectRefs, replaceRefs } from "./refs";
export { appOf, createRuntime, openStore, type Runtime } from "./runtime";
export { SecretCache } from "./secret-cache";
export { SecretManager, type SecretRead } from "./secret-manager";
export type { SecretMeta, SecretStore } from "./secret-store";
export { loadSettings, type Settings, type SettingsInput, type StoreKind } from "./settings";
export { VERSION } from "./version";
