/**
 * Settings: LiteLLM's `config.yaml` keys and env var names, parsed once with zod (SPEC section 2).
 *
 * `loadSettings` is the only reader of the process environment: it takes a snapshot, and every
 * other module gets what it needs from the returned `Settings`.
 */
import { readFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml, YAMLParseError } from "yaml";
import * as z from "zod/mini";
import { ENCRYPTION_ALGORITHMS, type EncryptionAlgorithm, KeyRing } from "./crypto";
import { ConfigError, EncryptionKeyMissing } from "./errors";
import { describeIssues, issuesOf, unknownKeys } from "./validation";

export const STORE_KINDS = [
  "file",
  "local",
  "aws_secret_manager",
  "aws_kms",
  "azure_key_vault",
  "google_secret_manager",
  "google_kms",
  "hashicorp_vault",
] as const;
export type StoreKind = (typeof STORE_KINDS)[number];

export const ACCESS_MODES = ["read_only", "write_only", "read_and_write"] as const;
export type AccessMode = (typeof ACCESS_MODES)[number];

/** The publicly known default of LiteLLM's docs: never accepted. */
const KNOWN_WEAK_MASTER_KEYS = new Set(["sk-1234"]);
export const MASTER_KEY_FILE = "master.key";
const DEFAULT_REFRESH_SECONDS = 86_400;
const DEFAULT_MAX_STALE_SECONDS = 3_600;

const text = z.string();
const optionalText = z.nullish(text);

const KeyManagementSettingsSchema = z.object({
  access_mode: z.nullish(z.enum(ACCESS_MODES)),
  hosted_keys: z.nullish(z.array(text)),
  store_virtual_keys: z.nullish(z.boolean()),
  prefix_for_stored_virtual_keys: optionalText,
  description: optionalText,
  tags: z.nullish(z.record(text, text)),
  primary_secret_name: optionalText,
  aws_region_name: optionalText,
  aws_role_name: optionalText,
  aws_session_name: optionalText,
  aws_external_id: optionalText,
  aws_profile_name: optionalText,
  aws_web_identity_token: optionalText,
  aws_sts_endpoint: optionalText,
  replica_regions: z.nullish(z.array(text)),
  kms_key_id: optionalText,
});

const ModelSchema = z.looseObject({
  model_name: text,
  litellm_params: z.looseObject({
    model: text,
    api_base: optionalText,
    api_key: optionalText,
  }),
});

export const ConfigSchema = z.object({
  general_settings: z.nullish(
    z.object({
      master_key: optionalText,
      key_management_system: z.nullish(z.enum(STORE_KINDS)),
      encryption_algorithm: z.nullish(z.enum(ENCRYPTION_ALGORITHMS)),
      key_management_settings: z.nullish(KeyManagementSettingsSchema),
    }),
  ),
  model_list: z.nullish(z.array(ModelSchema)),
  litellm_settings: z.nullish(
    z.object({
      ssl_verify: z.nullish(z.union([z.boolean(), text])),
      ssl_certificate: optionalText,
    }),
  ),
  environment_variables: z.nullish(z.record(text, z.union([text, z.number(), z.boolean()]))),
});
export type Config = z.infer<typeof ConfigSchema>;

const seconds = z.pipe(
  text.check(z.regex(/^\s*\d+\s*$/, "expected a whole number of seconds")),
  z.transform((s) => Number(s)),
);
const port = z.pipe(
  text.check(z.regex(/^\d{1,5}$/, "expected a port number")),
  z.transform((s, ctx) => {
    const n = Number(s);
    if (n <= 65_535) return n;
    ctx.issues.push({ code: "custom", input: s, message: "expected a port number from 0 (any free port) to 65535" });
    return z.NEVER;
  }),
);
const saltKeyList = z.pipe(
  text,
  z.transform((s, ctx) => {
    try {
      return JSON.parse(s) as unknown;
    } catch {
      ctx.issues.push({ code: "custom", input: s, message: "expected a JSON array of strings" });
      return z.NEVER;
    }
  }),
);

const EnvSchema = z.object({
  LITELLM_MASTER_KEY: z.optional(text),
  LITELLM_SALT_KEY: z.optional(text),
  LLM_SECRETS_PREVIOUS_SALT_KEYS: z.optional(
    z.pipe(saltKeyList, z.array(text.check(z.minLength(1, "a previous salt key is empty")))),
  ),
  LLM_SECRETS_DATA_DIR: z.optional(text),
  LLM_SECRETS_MAX_STALE: z.optional(seconds),
  SECRET_MANAGER_REFRESH_INTERVAL: z.optional(seconds),
  HCP_VAULT_REFRESH_INTERVAL: z.optional(seconds),
  GOOGLE_SECRET_MANAGER_REFRESH_INTERVAL: z.optional(seconds),
  GOOGLE_SECRET_MANAGER_ALWAYS_READ_SECRET_MANAGER: z.optional(text),
  PORT: z.optional(port),
  SSL_KEYFILE_PATH: z.optional(text),
  SSL_CERTFILE_PATH: z.optional(text),
});

/** Variables where set-but-empty means something (an error), not "unset". */
const EMPTY_IS_SET = new Set(["LITELLM_MASTER_KEY", "LITELLM_SALT_KEY"]);

export interface KeyManagement {
  accessMode: AccessMode;
  /** Names the store serves; undefined means all names (env-backed stores: none over HTTP). */
  hostedKeys?: readonly string[];
  storeVirtualKeys: boolean;
  prefixForStoredVirtualKeys: string;
  description?: string;
  tags?: Readonly<Record<string, string>>;
  primarySecretName?: string;
}

export interface Settings {
  store: StoreKind;
  /** Where the master key came from, for messages: an env var, a config key or the key file. */
  masterKeySource?: string;
  masterKey?: string;
  /** SecretBox / AES-GCM keys: the salt key (else the master key) and the ones it replaced. */
  keys?: KeyRing;
  encryptionAlgorithm: EncryptionAlgorithm;
  keyManagement: KeyManagement;
  cache: { ttlSeconds: number; maxStaleSeconds: number };
  dataDir: string;
  server: { host: string; port: number; tls?: { keyFile: string; certFile: string } };
  /** The parsed config: the keys llm-secrets uses, validated. */
  config: Config;
  /** The config file as written, every key in its order: what `resolve` resolves. */
  rawConfig: Record<string, unknown>;
  /** The environment as it was at start, with config `environment_variables` applied. */
  env: Readonly<Record<string, string>>;
  /** Config keys that were ignored. */
  warnings: string[];
}

export interface SettingsInput {
  env: Record<string, string | undefined>;
  cwd?: string;
  /** `--config FILE`; wins over `LLM_SECRETS_CONFIG`. */
  configFile?: string;
  /** `--host`, `--port`, `--ssl_keyfile_path`, `--ssl_certfile_path`. */
  server?: { host?: string; port?: number; sslKeyfile?: string; sslCertfile?: string };
}

export function loadSettings(input: SettingsInput): Settings {
  const cwd = input.cwd ?? process.cwd();
  const rawEnv = Object.fromEntries(
    Object.entries(input.env).filter((e): e is [string, string] => typeof e[1] === "string"),
  );
  const { config, rawConfig, warnings } = readConfig(input.configFile ?? rawEnv.LLM_SECRETS_CONFIG, cwd);
  const env: Record<string, string> = { ...rawEnv };
  for (const [k, v] of Object.entries(config.environment_variables ?? {})) env[k] = String(v);

  const envForSchema = Object.fromEntries(
    Object.entries(env).filter(([k, v]) => k in EnvSchema.shape && (v !== "" || EMPTY_IS_SET.has(k))),
  );
  const parsedEnv = EnvSchema.safeParse(envForSchema);
  if (!parsedEnv.success) throw new ConfigError(`environment: ${describeIssues(issuesOf(parsedEnv.error))}`);
  const e = parsedEnv.data;

  const general = config.general_settings ?? {};
  const store: StoreKind = general.key_management_system ?? "file";
  const kms = general.key_management_settings ?? {};
  const dataDir = resolve(cwd, e.LLM_SECRETS_DATA_DIR ?? ".llm-secrets");

  const master = masterKeyOf(general.master_key, env, store, dataDir);
  if (e.LITELLM_SALT_KEY !== undefined && e.LITELLM_SALT_KEY.trim() === "") {
    throw new ConfigError("LITELLM_SALT_KEY is set but empty: unset it to use the master key, or set a key");
  }
  const encryptionAlgorithm = general.encryption_algorithm ?? "xsalsa20-poly1305";
  const saltKey = e.LITELLM_SALT_KEY ?? master?.key;
  const keys = saltKey ? new KeyRing(saltKey, e.LLM_SECRETS_PREVIOUS_SALT_KEYS ?? [], encryptionAlgorithm) : undefined;

  let prefix = kms.prefix_for_stored_virtual_keys ?? "litellm/";
  if (!prefix.endsWith("/")) prefix += "/";

  const serverIn = input.server ?? {};
  const keyFile = serverIn.sslKeyfile ?? e.SSL_KEYFILE_PATH;
  const certFile = serverIn.sslCertfile ?? e.SSL_CERTFILE_PATH;
  if (Boolean(keyFile) !== Boolean(certFile)) {
    throw new ConfigError(
      "TLS needs both --ssl_keyfile_path and --ssl_certfile_path (or SSL_KEYFILE_PATH and SSL_CERTFILE_PATH)",
    );
  }

  return {
    store,
    masterKey: master?.key,
    masterKeySource: master?.source,
    keys,
    encryptionAlgorithm,
    keyManagement: {
      accessMode: kms.access_mode ?? (store === "file" ? "read_and_write" : "read_only"),
      hostedKeys: kms.hosted_keys ?? undefined,
      storeVirtualKeys: kms.store_virtual_keys ?? false,
      prefixForStoredVirtualKeys: prefix,
      description: kms.description ?? undefined,
      tags: kms.tags ?? undefined,
      primarySecretName: kms.primary_secret_name ?? undefined,
    },
    cache: {
      ttlSeconds: refreshIntervalOf(store, e),
      maxStaleSeconds: e.LLM_SECRETS_MAX_STALE ?? DEFAULT_MAX_STALE_SECONDS,
    },
    dataDir,
    server: {
      host: serverIn.host ?? "127.0.0.1",
      port: serverIn.port ?? e.PORT ?? 4000,
      tls: keyFile && certFile ? { keyFile: resolve(cwd, keyFile), certFile: resolve(cwd, certFile) } : undefined,
    },
    config,
    rawConfig,
    env,
    warnings,
  };
}

/** The key ring, or `encryption_key_missing`. */
export function requireKeys(settings: Settings): KeyRing {
  if (!settings.keys) throw new EncryptionKeyMissing();
  return settings.keys;
}

function readConfig(
  source: string | undefined,
  cwd: string,
): { config: Config; rawConfig: Record<string, unknown>; warnings: string[] } {
  if (source === undefined || source.trim() === "") return { config: {}, rawConfig: {}, warnings: [] };
  const inline = source.includes("\n") || source.trimStart().startsWith("{");
  let yamlText: string;
  if (inline) {
    yamlText = source;
  } else {
    const path = isAbsolute(source) ? source : resolve(cwd, source);
    try {
      yamlText = readFileSync(path, "utf8");
    } catch (err) {
      throw new ConfigError(`config: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  let raw: unknown;
  try {
    raw = parseYaml(yamlText) ?? {};
  } catch (err) {
    // The YAML library quotes the offending line, which may hold a secret: report its position only.
    if (err instanceof YAMLParseError) {
      const at = err.linePos?.[0];
      throw new ConfigError(`config: invalid YAML${at ? ` at line ${at.line}, column ${at.col}` : ""} (${err.code})`);
    }
    throw new ConfigError("config: invalid YAML");
  }
  if (typeof raw !== "object" || Array.isArray(raw))
    throw new ConfigError("config: expected a mapping at the top level");
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(`config: ${describeIssues(issuesOf(parsed.error))}`);
  const ignored = unknownKeys(ConfigSchema, raw);
  const warnings = ignored.length ? [`config: ignoring keys llm-secrets does not use: ${ignored.join(", ")}`] : [];
  return { config: parsed.data, rawConfig: raw as Record<string, unknown>, warnings };
}

const ENV_REF = "os.environ/";

function masterKeyOf(
  configured: string | null | undefined,
  env: Record<string, string>,
  store: StoreKind,
  dataDir: string,
): { key: string; source: string } | undefined {
  let found: { key: string; source: string } | undefined;
  if (configured?.startsWith(ENV_REF)) {
    const name = configured.slice(ENV_REF.length);
    const value = env[name];
    // A key named but not there is a typo or a missing secret: going on would seal new values
    // under another key.
    if (value === undefined) throw new ConfigError(`general_settings.master_key refers to ${name}, which is not set`);
    found = { key: value, source: name };
  } else if (configured !== undefined && configured !== null) {
    found = { key: configured, source: "general_settings.master_key" };
  } else if (env.LITELLM_MASTER_KEY !== undefined) {
    found = { key: env.LITELLM_MASTER_KEY, source: "LITELLM_MASTER_KEY" };
  }
  if (!found && store === "file") {
    const path = join(dataDir, MASTER_KEY_FILE);
    try {
      found = { key: readFileSync(path, "utf8").trim(), source: path };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        throw new ConfigError(`cannot read the master key file ${path} (${(err as NodeJS.ErrnoException).code})`);
      }
    }
  }
  if (found) checkMasterKey(found.key, found.source);
  return found;
}

/** Refuses an empty or publicly known master key (SPEC section 10: no default master key). */
function checkMasterKey(key: string, source: string): void {
  if (key.trim() === "") throw new ConfigError(`the master key (${source}) is empty`);
  if (KNOWN_WEAK_MASTER_KEYS.has(key.trim())) {
    throw new ConfigError(`the master key (${source}) is the publicly known example key: set a strong one`);
  }
}

function refreshIntervalOf(store: StoreKind, e: z.infer<typeof EnvSchema>): number {
  const fallback = e.SECRET_MANAGER_REFRESH_INTERVAL ?? DEFAULT_REFRESH_SECONDS;
  if (store === "hashicorp_vault") return e.HCP_VAULT_REFRESH_INTERVAL ?? fallback;
  if (store === "google_secret_manager") {
    if (e.GOOGLE_SECRET_MANAGER_ALWAYS_READ_SECRET_MANAGER?.trim().toLowerCase() === "true") return 0;
    return e.GOOGLE_SECRET_MANAGER_REFRESH_INTERVAL ?? fallback;
  }
  return fallback;
}
