/**
 * Wiring: settings in, the store, the secret manager and the app out. Every entry point (local
 * server, CLI, cloud functions) builds its pieces here, so they behave the same.
 */
import type { Hono } from "hono";
import { type AppBindings, createApp } from "./app";
import { ConfigError } from "./errors";
import type { Logger } from "./log";
import { Metrics } from "./metrics";
import { SecretManager } from "./secret-manager";
import type { SecretStore } from "./secret-store";
import { MASTER_KEY_FILE, type Settings } from "./settings";
import { FileStore } from "./stores/file";
import { LocalStore } from "./stores/local";

export async function openStore(settings: Settings): Promise<SecretStore> {
  switch (settings.store) {
    case "file":
      if (!settings.keys) {
        throw new ConfigError(
          `the file store needs a key: set LITELLM_MASTER_KEY or LITELLM_SALT_KEY, or run \`llm-secrets serve\` once to generate ${MASTER_KEY_FILE} in ${settings.dataDir}`,
        );
      }
      return FileStore.open({ dataDir: settings.dataDir, keys: settings.keys });
    case "local":
      return new LocalStore(settings.env);
    default:
      throw new ConfigError(`key_management_system: ${settings.store} is not available in this build yet`);
  }
}

export interface Runtime {
  settings: Settings;
  store: SecretStore;
  manager: SecretManager;
  metrics: Metrics;
  log: Logger;
}

export async function createRuntime(settings: Settings, log: Logger): Promise<Runtime> {
  const store = await openStore(settings);
  const metrics = new Metrics();
  const manager = new SecretManager({
    store,
    policy: settings.keyManagement,
    cache: settings.cache,
    metrics,
    log,
    env: settings.env,
  });
  return { settings, store, manager, metrics, log };
}

/** The HTTP app of a runtime; it needs a master key, which callers present as a bearer token. */
export function appOf(runtime: Runtime): Hono<{ Bindings: AppBindings }> {
  const { settings } = runtime;
  if (!settings.masterKey) {
    throw new ConfigError("no master key: set LITELLM_MASTER_KEY (or general_settings.master_key)");
  }
  return createApp({
    manager: runtime.manager,
    masterKey: settings.masterKey,
    keys: settings.keys,
    metrics: runtime.metrics,
    log: runtime.log,
  });
}
