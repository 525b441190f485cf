/**
 * Settings: LiteLLM's `config.yaml` keys and env var names, parsed once with zod (SPEC section 2).
 *
 * `loadSettings` is the only reader of the process environment: it takes a snapshot, and every
 * other module gets what it needs from the returned `Settings`.
 */
import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { YAMLParseError } from "yaml";
import * as z from "zod/mini";
import { parseConfigYaml, yamlErrorText } from "./config-yaml";
import { ENCRYPTION_ALGORITHMS, type EncryptionAlgorithm, KeyRing } from "./crypto";
import { ConfigError, EncryptionKeyMissing, SecretsError } from "./errors";
import { ignoresModes, requirePosixFiles } from "./local-files";
import { isValidName, validateName } from "./names";
import type { OutboundProxy, OutboundTls } from "./outbound-tls";
import { envRefValue, refName } from "./refs";
import type { AccessMode, StoreFactory, StoreScope } from "./secret-store";
import { describeIssues, issuesOf, safeParse, unknownKeys } from "./validation";

const ACCESS_MODES = ["read_only", "write_only", "read_and_write"] as const satisfies readonly AccessMode[];

/** The publicly known default of LiteLLM's docs: never accepted. */
const KNOWN_WEAK_MASTER_KEYS = new Set(["sk-1234"]);
export const MASTER_KEY_FILE = "master.key";
/** LiteLLM's keys are `sk-` and more; anything shorter is a placeholder or a typo. */
const MIN_MASTER_KEY_LENGTH = 8;
const DEFAULT_REFRESH_SECONDS = 86_400;
const DEFAULT_MAX_STALE_SECONDS = 3_600;
/** `LLM_SECRETS_MAX_CONNECTIONS` unset (server.ts's default too). */
export const DEFAULT_MAX_CONNECTIONS = 1_024;
/** Below every store's tombstone lifetime (AWS's 7-day recovery window, Azure's soft delete). */
const DEFAULT_MAX_EVENT_AGE_SECONDS = 6 * 24 * 3600;

const text = z.string();
const optionalText = z.nullish(text);

/** Pydantic's lax booleans, as LiteLLM's settings model takes them: `true`, `"yes"`, `"0"`, `1`... */
const PY_TRUE = ["1", "on", "t", "true", "y", "yes"];
/** LiteLLM's `prefix_for_stored_virtual_keys` when none is set. */
export const DEFAULT_VIRTUAL_KEY_PREFIX = "litellm/";
const PY_FALSE = ["0", "off", "f", "false", "n", "no"];
/** A boolean setting as LiteLLM's pydantic model reads one (PY_TRUE, PY_FALSE), for stores that read a general key too. */
export const laxBoolean = z.union(
  [
    z.boolean(),
    z.pipe(
      z
        .union([z.string(), z.number()])
        .check(z.refine((v) => [...PY_TRUE, ...PY_FALSE].includes(String(v).trim().toLowerCase()))),
      z.transform((v) => PY_TRUE.includes(String(v).trim().toLowerCase())),
    ),
  ],
  { error: "expected a boolean (true or false, yes or no, on or off, 1 or 0)" },
);

/** The general `key_management_settings` keys; each store's own keys are in its settings schema. */
const KeyManagementSettingsSchema = z.object({
  access_mode: z.nullish(z.enum(ACCESS_MODES)),
  hosted_keys: z.nullish(z.array(text)),
  store_virtual_keys: z.nullish(laxBoolean),
  prefix_for_stored_virtual_keys: optionalText,
  description: optionalText,
  tags: z.nullish(z.record(text, text)),
  /** Per team (`team_id` of a key event, `?team_id=` of a read): only from config, never from an event. */
  team_settings: z.nullish(
    z.record(
      text,
      z.object({
        namespace: optionalText,
        mount: optionalText,
        path_prefix: optionalText,
        data: optionalText,
        prefix_for_stored_virtual_keys: optionalText,
        description: optionalText,
        tags: z.nullish(z.record(text, text)),
      }),
    ),
  ),
});

const ModelSchema = z.looseObject({
  model_name: text,
  litellm_params: z.looseObject({
    model: text,
    api_base: optionalText,
    api_key: optionalText,
  }),
});

const ConfigSchema = z.object({
  general_settings: z.nullish(
    z.object({
      master_key: optionalText,
      /** LiteLLM's escape hatch, for commands that serve no API: a weak master key is taken, with a warning. */
      dangerously_permit_weak_or_unset_master_key: z.nullish(z.union([z.boolean(), text, z.number()])),
      key_management_system: optionalText,
      // LiteLLM compares it case-insensitively.
      encryption_algorithm: z.nullish(
        z.pipe(z.string().check(z.trim(), z.toLowerCase()), z.enum(ENCRYPTION_ALGORITHMS)),
      ),
      key_management_settings: z.nullish(KeyManagementSettingsSchema),
    }),
  ),
  model_list: z.nullish(z.array(ModelSchema)),
  litellm_settings: z.nullish(
    z.object({
      ssl_verify: z.nullish(z.union([z.boolean(), text], { error: "expected true, false or a CA bundle's path" })),
      ssl_certificate: optionalText,
    }),
  ),
  environment_variables: z.nullish(
    z.record(text, z.union([text, z.number(), z.boolean()], { error: "expected a string, a number or a boolean" })),
  ),
});
type Config = z.infer<typeof ConfigSchema>;

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
const positiveInteger = z.pipe(
  text.check(z.regex(/^\s*0*[1-9]\d{0,8}\s*$/, "expected a whole number from 1 to 999999999")),
  z.transform((s) => Number(s)),
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
  LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY: z.optional(text),
  LITELLM_MIGRATE_FROM_MASTER_KEY: z.optional(text),
  LLM_SECRETS_PREVIOUS_SALT_KEYS: z.optional(
    z.pipe(saltKeyList, z.array(text.check(z.minLength(1, "a previous salt key is empty")))),
  ),
  LLM_SECRETS_DATA_DIR: z.optional(text),
  LLM_SECRETS_MAX_STALE: z.optional(seconds),
  LLM_SECRETS_MAX_CONNECTIONS: z.optional(positiveInteger),
  LLM_SECRETS_RESOLVE_MAX_REFS: z.optional(positiveInteger),
  LLM_SECRETS_RESOLVE_MAX_BYTES: z.optional(positiveInteger),
  LLM_SECRETS_MAX_EVENT_AGE: z.optional(seconds),
  LLM_SECRETS_AUDIT: z.optional(z.enum(["stdout", "off"])),
  SECRET_MANAGER_REFRESH_INTERVAL: z.optional(seconds),
  PORT: z.optional(port),
  SSL_KEYFILE_PATH: z.optional(text),
  SSL_CERTFILE_PATH: z.optional(text),
  LLM_SECRETS_CLIENT_CA: z.optional(text),
  SSL_VERIFY: z.optional(text),
  SSL_CERT_FILE: z.optional(text),
  SSL_CERTIFICATE: z.optional(text),
  // Read by `proxyOf` from the environment itself (an empty lowercase one means something); here so
  // that they count as llm-secrets' own variables.
  HTTPS_PROXY: z.optional(text),
  https_proxy: z.optional(text),
  HTTP_PROXY: z.optional(text),
  http_proxy: z.optional(text),
  NO_PROXY: z.optional(text),
  no_proxy: z.optional(text),
  ALL_PROXY: z.optional(text),
  all_proxy: z.optional(text),
});

/** Variables where set-but-empty means something (an error), not "unset". */
const EMPTY_IS_SET = new Set(["LITELLM_MASTER_KEY", "LITELLM_SALT_KEY"]);

/** A team's settings: where its secrets live (stores that honour scopes) and its virtual keys' prefix and metadata. */
interface TeamSettings {
  scope: StoreScope;
  prefixForStoredVirtualKeys?: string;
  description?: string;
  tags?: Readonly<Record<string, string>>;
}

export interface KeyManagement {
  accessMode: AccessMode;
  /** `team_settings`, by team id. */
  teams?: Readonly<Record<string, TeamSettings>>;
  /** Names the store serves; undefined means all names (env-backed stores: none over HTTP). */
  hostedKeys?: readonly string[];
  storeVirtualKeys: boolean;
  prefixForStoredVirtualKeys: string;
  description?: string;
  tags?: Readonly<Record<string, string>>;
}

/** `LLM_SECRETS_CONFIG` holds the YAML itself (several lines, or a flow mapping), not a path. */
function isInlineConfig(source: string): boolean {
  return source.includes("\n") || source.trimStart().startsWith("{");
}

/** Where `team`'s virtual keys are stored: its `team_settings` prefix, else the general one. */
export function virtualKeyPrefix(policy: KeyManagement, team: string | undefined): string {
  return (team !== undefined && policy.teams?.[team]?.prefixForStoredVirtualKeys) || policy.prefixForStoredVirtualKeys;
}

export interface Settings {
  /** `key_management_system`: the kind of the store this runtime opens. */
  store: string;
  /** That store's factory, from the ones the runtime registered, and its settings as parsed. */
  storeFactory: StoreFactory;
  storeSettings: unknown;
  /** Where the master key came from, for messages: an env var, a config key or the key file. */
  masterKeySource?: string;
  masterKey?: string;
  /** SecretBox / AES-GCM keys: the salt key (else the master key) and the ones it replaced. */
  keys?: KeyRing;
  encryptionAlgorithm: EncryptionAlgorithm;
  keyManagement: KeyManagement;
  cache: { ttlSeconds: number; maxStaleSeconds: number };
  /** `resolve`'s bounds: `LLM_SECRETS_RESOLVE_MAX_REFS` (1000), `LLM_SECRETS_RESOLVE_MAX_BYTES` (1 MiB). */
  resolveLimits: { maxRefs: number; maxBytes: number };
  /** `LLM_SECRETS_MAX_EVENT_AGE`: key events older than this are refused (default 6 days). */
  maxEventAgeSeconds: number;
  /** `LLM_SECRETS_AUDIT`: where audit lines go (audit.ts), `stdout` (the default) or `off`. */
  audit: "stdout" | "off";
  /**
   * Outbound TLS (`ssl_verify` / `SSL_VERIFY`, `SSL_CERT_FILE`, `ssl_certificate` / `SSL_CERTIFICATE`)
   * and the outbound proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`).
   */
  outbound: OutboundTls;
  dataDir: string;
  /** The config file's directory (the working directory for an inline config): what its paths are relative to. */
  configDir: string;
  /**
   * `maxConnections`: `LLM_SECRETS_MAX_CONNECTIONS`, past which new connections are closed at once.
   * `tls.clientCaFile` (`LLM_SECRETS_CLIENT_CA`): mutual TLS in; a client must present a certificate
   * signed by it, or the handshake fails.
   */
  server: {
    host: string;
    port: number;
    tls?: { keyFile: string; certFile: string; clientCaFile?: string };
    maxConnections: number;
  };
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
  /**
   * The stores this build ships (the runtime's registry); the first is the default when the
   * config names none.
   */
  stores: readonly StoreFactory[];
  cwd?: string;
  /** `--config FILE`; wins over `LLM_SECRETS_CONFIG`. */
  configFile?: string;
  /** `--host`, `--port`, `--ssl_keyfile_path`, `--ssl_certfile_path`. */
  server?: { host?: string; port?: number; sslKeyfile?: string; sslCertfile?: string };
  /**
   * The caller serves no API (the CLI's `get`, `decrypt`, ...): the master key authenticates nobody,
   * so LiteLLM's `dangerously_permit_weak_or_unset_master_key` may take a weak one. Unset: an API
   * is served, and a weak key stops the start whatever the flag says (SPEC sections 1 and 10).
   */
  offline?: boolean;
}

export function loadSettings(input: SettingsInput): Settings {
  const cwd = input.cwd ?? process.cwd();
  const rawEnv = Object.fromEntries(
    Object.entries(input.env).filter((e): e is [string, string] => typeof e[1] === "string"),
  );
  const configSource = input.configFile ?? rawEnv.LLM_SECRETS_CONFIG;
  const { config, rawConfig, ignored, env, unsetVariables, settingRefs } = readConfig(
    configSource,
    cwd,
    input.stores,
    rawEnv,
  );
  // Where paths in the config are relative to: the config file's directory, or the working
  // directory for an inline config.
  const configDir = configSource && !isInlineConfig(configSource) ? dirname(resolve(cwd, configSource)) : cwd;
  const envForSchema = Object.fromEntries(
    Object.entries(env).filter(([k, v]) => k in EnvSchema.shape && (v !== "" || EMPTY_IS_SET.has(k))),
  );
  const parsedEnv = safeParse(EnvSchema, envForSchema);
  if (!parsedEnv.success) throw new ConfigError(`environment: ${describeIssues(issuesOf(parsedEnv.error))}`);
  const e = parsedEnv.data;

  const general = config.general_settings ?? {};
  const legacy = legacyFlagsOf(rawConfig, input.stores);
  const named = general.key_management_system ?? undefined;
  const factory = storeFactoryOf(named ?? legacy[0]?.kind, input.stores);
  // A store whose config schema takes any key (a custom module's own settings) reads them all.
  const unused = takesAnyKey(factory) ? ignored.filter((key) => !key.startsWith(KMS_PATH)) : ignored;
  const warnings = unused.length ? [`config: ignoring keys llm-secrets does not use: ${unused.join(", ")}`] : [];
  for (const [key, name] of unsetVariables) {
    warnings.push(`config: environment_variables.${key} refers to ${name}, which is not set: ${key} is left as it was`);
  }
  for (const flag of legacy.filter((l) => l.kind !== factory.kind)) {
    warnings.push(`config: ignoring general_settings.${flag.key}: the store is ${factory.kind}`);
  }
  const store = factory.kind;
  const kms = general.key_management_settings ?? {};
  if (kms.store_virtual_keys && factory.capabilities.writes && !factory.capabilities.compareAndSet) {
    warnings.push(
      `key events on ${factory.kind} are applied in the order they arrive: this store records no change times, ` +
        "so a redelivered older event can undo a newer one (a deleted key come back)",
    );
  }
  const storeSettings = parseStoreSettings(factory, rawKeyManagementSettings(rawConfig), env);
  const dataDir = resolve(cwd, e.LLM_SECRETS_DATA_DIR ?? ".llm-secrets");

  const accessMode = kms.access_mode ?? factory.defaults.accessMode;
  refuseKmsSealed(
    sealedForUseAwsKms(env, factory, settingRefs, { accessMode, hostedKeys: kms.hosted_keys ?? undefined }),
  );
  const { master, keys, encryptionAlgorithm, warning } = keysOf(general, e, env, factory, dataDir, input.offline);
  if (warning) warnings.push(warning);

  const prefix = prefixOf(
    kms.prefix_for_stored_virtual_keys ?? DEFAULT_VIRTUAL_KEY_PREFIX,
    "prefix_for_stored_virtual_keys",
  );
  const hostedKeys = hostedKeysOf(kms.hosted_keys);
  const teams = teamsOf(kms.team_settings);
  if (factory.capabilities.scopes) refuseSharedPlaces(teams, prefix);
  else {
    const scoped = Object.entries(teams ?? {}).filter(([, t]) => Object.keys(t.scope).length > 1);
    if (scoped.length > 0) {
      warnings.push(
        `config: team_settings of ${scoped.map(([team]) => team).join(", ")}: namespace, mount, path_prefix and data are ignored by the ${factory.kind} store, ` +
          "so teams with one prefix_for_stored_virtual_keys share names: give each team its own prefix",
      );
    }
  }

  const server = serverOf(input.server, e, cwd, !input.offline);
  const outbound = outboundOf(config.litellm_settings, e, env, cwd, warnings);
  return {
    store,
    storeFactory: factory,
    storeSettings,
    masterKey: master?.key,
    masterKeySource: master?.source,
    keys,
    encryptionAlgorithm,
    keyManagement: {
      accessMode,
      hostedKeys,
      storeVirtualKeys: kms.store_virtual_keys ?? false,
      prefixForStoredVirtualKeys: prefix,
      description: kms.description ?? undefined,
      tags: kms.tags ?? undefined,
      teams,
    },
    cache: {
      ttlSeconds: refreshIntervalOf(factory, env, e),
      maxStaleSeconds: e.LLM_SECRETS_MAX_STALE ?? DEFAULT_MAX_STALE_SECONDS,
    },
    resolveLimits: {
      maxRefs: e.LLM_SECRETS_RESOLVE_MAX_REFS ?? 1000,
      maxBytes: e.LLM_SECRETS_RESOLVE_MAX_BYTES ?? 1024 * 1024,
    },
    maxEventAgeSeconds: e.LLM_SECRETS_MAX_EVENT_AGE ?? DEFAULT_MAX_EVENT_AGE_SECONDS,
    audit: e.LLM_SECRETS_AUDIT ?? "stdout",
    outbound,
    dataDir,
    configDir,
    server,
    config,
    rawConfig,
    env,
    warnings:
      outbound.verify === false
        ? [
            ...warnings,
            "TLS certificate verification is off (ssl_verify / SSL_VERIFY false): connections to the store, " +
              "its logins and model APIs accept any certificate",
          ]
        : warnings,
  };
}

/**
 * The master key (`masterKeyOf`; a weak one is taken, with a warning, only offline and with LiteLLM's
 * switch) and the key ring: the salt key, else the master key, and the keys it replaced.
 */
function keysOf(
  general: NonNullable<Config["general_settings"]>,
  e: z.infer<typeof EnvSchema>,
  env: Record<string, string>,
  factory: StoreFactory,
  dataDir: string,
  offline: boolean | undefined,
): {
  master?: { key: string; source: string };
  keys?: KeyRing;
  encryptionAlgorithm: EncryptionAlgorithm;
  warning?: string;
} {
  // LiteLLM's switch, `true` only (as it compares it), and only where no API is served.
  const isTrue = (v: unknown) => v === true || (typeof v === "string" && v.trim().toLowerCase() === "true");
  const permitWeak =
    isTrue(e.LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY) ||
    isTrue(general.dangerously_permit_weak_or_unset_master_key);
  const master = masterKeyOf(general.master_key, env, factory.defaults.needsLocalKey, dataDir);
  const weak = master && weaknessOf(master.key);
  let warning: string | undefined;
  if (master && weak) {
    if (!permitWeak) throw new ConfigError(`the master key (${master.source}) ${weak}: set a strong one`);
    if (!offline) {
      throw new ConfigError(
        `the master key (${master.source}) ${weak}: dangerously_permit_weak_or_unset_master_key is taken only by commands that serve no API (decrypt, encrypt, get, ...); an API needs a strong key`,
      );
    }
    warning = `the master key (${master.source}) ${weak}: taken because dangerously_permit_weak_or_unset_master_key is set`;
  }
  if (e.LITELLM_SALT_KEY !== undefined && e.LITELLM_SALT_KEY.trim() === "") {
    throw new ConfigError("LITELLM_SALT_KEY is set but empty: unset it to use the master key, or set a key");
  }
  const encryptionAlgorithm = general.encryption_algorithm ?? "xsalsa20-poly1305";
  const saltKey = e.LITELLM_SALT_KEY ?? master?.key;
  refuseKmsSealed(
    [
      ...(master ? [{ what: master.source, value: master.key }] : []),
      ...(e.LITELLM_SALT_KEY !== undefined ? [{ what: "LITELLM_SALT_KEY", value: e.LITELLM_SALT_KEY }] : []),
      ...(e.LITELLM_MIGRATE_FROM_MASTER_KEY !== undefined
        ? [{ what: "LITELLM_MIGRATE_FROM_MASTER_KEY", value: e.LITELLM_MIGRATE_FROM_MASTER_KEY }]
        : []),
    ]
      .filter((k) => k.value.startsWith(KMS_SEALED))
      .map((k) => k.what),
  );
  // LiteLLM's master-key rotation without a salt key: the old master key sealed the values, so it
  // opens them (LiteLLM re-seals them at boot; here `reencrypt` does, and reads work until then).
  const migrateFrom =
    e.LITELLM_SALT_KEY === undefined && e.LITELLM_MIGRATE_FROM_MASTER_KEY?.trim()
      ? [e.LITELLM_MIGRATE_FROM_MASTER_KEY]
      : [];
  const previous = [...(e.LLM_SECRETS_PREVIOUS_SALT_KEYS ?? []), ...migrateFrom];
  const keys = saltKey ? new KeyRing(saltKey, previous, encryptionAlgorithm) : undefined;
  return { master, keys, encryptionAlgorithm, warning };
}

/**
 * The API's address, TLS in and connection cap: the CLI's flags, else `PORT`, `SSL_KEYFILE_PATH`,
 * `SSL_CERTFILE_PATH`; paths resolve against `cwd`. Half a key pair, or a client CA without one,
 * stops the start of what serves the API (`serving`); a CLI command that serves none does not check
 * them (a container whose `serve` takes its TLS files as flags has the client CA in its environment).
 */
function serverOf(
  flags: SettingsInput["server"],
  e: z.infer<typeof EnvSchema>,
  cwd: string,
  serving: boolean,
): Settings["server"] {
  const keyFile = flags?.sslKeyfile ?? e.SSL_KEYFILE_PATH;
  const certFile = flags?.sslCertfile ?? e.SSL_CERTFILE_PATH;
  if (serving && e.LLM_SECRETS_CLIENT_CA && !(keyFile && certFile)) {
    throw new ConfigError(
      "LLM_SECRETS_CLIENT_CA (mutual TLS) needs HTTPS: set --ssl_keyfile_path and --ssl_certfile_path too",
    );
  }
  if (serving && Boolean(keyFile) !== Boolean(certFile)) {
    throw new ConfigError(
      "TLS needs both --ssl_keyfile_path and --ssl_certfile_path (or SSL_KEYFILE_PATH and SSL_CERTFILE_PATH)",
    );
  }
  return {
    host: flags?.host ?? "127.0.0.1",
    port: flags?.port ?? e.PORT ?? 4000,
    tls:
      keyFile && certFile
        ? {
            keyFile: resolve(cwd, keyFile),
            certFile: resolve(cwd, certFile),
            ...(e.LLM_SECRETS_CLIENT_CA && { clientCaFile: resolve(cwd, e.LLM_SECRETS_CLIENT_CA) }),
          }
        : undefined,
    maxConnections: e.LLM_SECRETS_MAX_CONNECTIONS ?? DEFAULT_MAX_CONNECTIONS,
  };
}

/**
 * LiteLLM's outbound TLS settings: `SSL_VERIFY` (else `litellm_settings.ssl_verify`) is `false`, or
 * a CA bundle path; `SSL_CERT_FILE` is a CA bundle; `SSL_CERTIFICATE` (else `ssl_certificate`) a
 * PEM with a client certificate and key. Paths resolve against the working directory. With them,
 * the proxy (`proxyOf`).
 */
function outboundOf(
  litellm: Config["litellm_settings"],
  e: z.infer<typeof EnvSchema>,
  env: Record<string, string>,
  cwd: string,
  warnings: string[],
): OutboundTls {
  // The environment wins over the config, as in LiteLLM (`os.getenv("SSL_VERIFY", litellm.ssl_verify)`).
  const verify = e.SSL_VERIFY ?? litellm?.ssl_verify;
  const off = verify === false || (typeof verify === "string" && verify.trim().toLowerCase() === "false");
  const bundle =
    typeof verify === "string" && !["true", "false", ""].includes(verify.trim().toLowerCase())
      ? verify
      : e.SSL_CERT_FILE;
  const certificate = e.SSL_CERTIFICATE ?? litellm?.ssl_certificate;
  const proxy = proxyOf(env, warnings);
  return {
    ...(off && { verify: false }),
    ...(!off && bundle && { caFile: resolve(cwd, bundle) }),
    ...(certificate && { certificateFile: resolve(cwd, certificate) }),
    ...(proxy && { proxy }),
  };
}

/**
 * The outbound proxy, from the environment as LiteLLM's httpx reads it (Python's
 * `urllib.request.getproxies_environment`): `HTTP_PROXY` for http:// targets, `HTTPS_PROXY` for
 * https:// ones (neither stands in for the other), `ALL_PROXY` for either when its own is not set
 * (httpx's `all://`; a SOCKS one, common for other tools, is ignored with a warning rather than
 * stopping the start), `NO_PROXY` for targets reached directly. A
 * lowercase variable wins over its uppercase one, and set empty it unsets both. With
 * `REQUEST_METHOD` set (a CGI request, whose `Proxy:` header arrives as `HTTP_PROXY`: httpoxy),
 * uppercase `HTTP_PROXY` is ignored. A value without a scheme is an http:// proxy, as httpx takes
 * it. One that is no http:// or https:// URL stops the start, naming the variable, never the value
 * (it may hold a password). Undefined: no proxy, every call goes direct.
 */
function proxyOf(env: Record<string, string>, warnings: string[]): OutboundProxy | undefined {
  const socks = /^\s*socks[0-9a-z]*:\/\//i.test(proxyVariable(env, "ALL_PROXY")?.value ?? "");
  if (socks)
    warnings.push(
      "ALL_PROXY: a SOCKS proxy is not supported: it is ignored (calls go direct or by HTTPS_PROXY / HTTP_PROXY)",
    );
  const all = socks ? undefined : proxyUrlOf(env, "ALL_PROXY");
  const http = proxyUrlOf(env, "HTTP_PROXY") ?? all;
  const https = proxyUrlOf(env, "HTTPS_PROXY") ?? all;
  if (!http && !https) return undefined;
  const noProxy = (proxyVariable(env, "NO_PROXY")?.value ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  return { ...(http && { http }), ...(https && { https }), ...(noProxy.length > 0 && { noProxy }) };
}

/** The variable in force of `name` and its lowercase twin (`proxyOf`'s rules), when set and not empty. */
function proxyVariable(env: Record<string, string>, name: string): { variable: string; value: string } | undefined {
  const lower = name.toLowerCase();
  const lowerValue = env[lower];
  if (lowerValue !== undefined) return lowerValue === "" ? undefined : { variable: lower, value: lowerValue };
  if (name === "HTTP_PROXY" && env.REQUEST_METHOD !== undefined) return undefined;
  const value = env[name];
  return value ? { variable: name, value } : undefined;
}

/** `name`'s proxy URL, checked (see `proxyOf`). */
function proxyUrlOf(env: Record<string, string>, name: string): string | undefined {
  const found = proxyVariable(env, name);
  if (!found) return undefined;
  const raw = found.value.trim();
  let url: URL;
  try {
    url = new URL(raw.includes("://") ? raw : `http://${raw}`);
  } catch {
    throw new ConfigError(`${found.variable}: not a proxy URL (expected http://host:port or https://host:port)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(
      `${found.variable}: a ${url.protocol.slice(0, -1)} proxy is not supported (expected http://host:port or https://host:port)`,
    );
  }
  if (url.hostname === "") throw new ConfigError(`${found.variable}: the proxy URL names no host`);
  try {
    decodeURIComponent(url.username);
    decodeURIComponent(url.password);
  } catch {
    throw new ConfigError(`${found.variable}: the proxy URL's user or password is not valid percent-encoding`);
  }
  return url.href;
}

/**
 * A virtual-key prefix with its `/` (added if missing, as LiteLLM does), refused at start when the
 * names it would begin are not names (`""` makes `/alias`): else every key event would be refused.
 */
function prefixOf(prefix: string, key: string): string {
  const withSlash = prefix.endsWith("/") ? prefix : `${prefix}/`;
  try {
    validateName(`${withSlash}k`);
  } catch (err) {
    const why = err instanceof SecretsError ? err.message : "not a name";
    throw new ConfigError(
      `general_settings.key_management_settings.${key}: the secret names it would begin are not valid (${why})`,
    );
  }
  return withSlash;
}

/**
 * Why a config's `os.environ/NAME` ref is not read from the store at start (it then comes from the
 * environment), or undefined when it is read: not a name, reads off (`write_only`), or outside
 * `hosted_keys` when that is set. The manager's rule at start, and the USE_AWS_KMS check's.
 */
export function unreadableAtStart(
  name: string,
  accessMode: AccessMode,
  hosted: ReadonlySet<string> | undefined,
): "invalid_name" | "write_only" | "not_hosted" | undefined {
  if (!isValidName(name)) return "invalid_name";
  if (accessMode === "write_only") return "write_only";
  if (hosted !== undefined && !hosted.has(name)) return "not_hosted";
  return undefined;
}

/**
 * `hosted_keys`, each a valid secret name, or the start stops naming the entry: they reach the store
 * as names (`/ready` reads the first the store takes), and no store call is made with a name not
 * checked (SPEC 10).
 */
function hostedKeysOf(raw: readonly string[] | null | undefined): readonly string[] | undefined {
  if (!raw) return undefined;
  for (const [i, name] of raw.entries()) {
    try {
      validateName(name);
    } catch (err) {
      const why = err instanceof SecretsError ? err.message : "not a name";
      throw new ConfigError(
        `general_settings.key_management_settings.hosted_keys[${i}] ${JSON.stringify(name.slice(0, 300))}: ${why}`,
      );
    }
  }
  return raw;
}

function teamsOf(
  raw: z.infer<typeof KeyManagementSettingsSchema>["team_settings"],
): Record<string, TeamSettings> | undefined {
  if (!raw) return undefined;
  const teams: Record<string, TeamSettings> = {};
  for (const [team, t] of Object.entries(raw)) {
    teams[team] = {
      scope: {
        team,
        ...(t.namespace && { namespace: t.namespace }),
        ...(t.mount && { mount: t.mount }),
        ...(t.path_prefix && { pathPrefix: t.path_prefix }),
        ...(t.data && { dataKey: t.data }),
      },
      ...(t.prefix_for_stored_virtual_keys != null && {
        prefixForStoredVirtualKeys: prefixOf(
          t.prefix_for_stored_virtual_keys,
          `team_settings.${team}.prefix_for_stored_virtual_keys`,
        ),
      }),
      ...(t.description && { description: t.description }),
      ...(t.tags && { tags: t.tags }),
    };
  }
  return teams;
}

/**
 * On a store that honours scopes, two teams whose keys land in one place (namespace, mount, path
 * prefix and virtual-key prefix all alike) but in different KV fields (`data`, each set: an unset
 * one is the store's own setting, not known here) stop the start: a write replaces the whole
 * secret, so each team's write would wipe the other's key.
 */
function refuseSharedPlaces(teams: Record<string, TeamSettings> | undefined, generalPrefix: string): void {
  // As Vault reads them: trimmed of spaces and slashes, empty as unset.
  const part = (raw: string | undefined) => raw?.trim().replace(/^\/+|\/+$/g, "") || undefined;
  const seen = new Map<string, { team: string; data: string }>();
  for (const [team, t] of Object.entries(teams ?? {})) {
    const { namespace, mount, pathPrefix, dataKey } = t.scope;
    const place = JSON.stringify([
      part(namespace),
      part(mount),
      part(pathPrefix),
      t.prefixForStoredVirtualKeys ?? generalPrefix,
    ]);
    const data = dataKey?.trim() || undefined;
    if (data === undefined) continue;
    const other = seen.get(place);
    if (other === undefined) seen.set(place, { team, data });
    else if (other.data !== data) {
      throw new ConfigError(
        `general_settings.key_management_settings.team_settings: teams ${other.team} and ${team} keep their keys in one place (namespace, mount, path_prefix and prefix_for_stored_virtual_keys alike) but in different fields (data): each write replaces the whole secret, so one team's keys would wipe the other's; give them the same data or another prefix`,
      );
    }
  }
}

const KMS_SEALED = "aws_kms/";

/**
 * With `USE_AWS_KMS=True`, what LiteLLM would have decrypted at start and llm-secrets would take
 * as it is: every `LITELLM_SECRET_AWS_KMS_*` variable (never read here under its new name), and
 * every `aws_kms/` value but the refs a store that decrypts them reads at start (`aws_kms`'s), by
 * the manager's rule: reads allowed by `access_mode`, and in `hosted_keys` when that is set. A ref
 * it does not read there falls back to the environment, ciphertext and all, so it is refused; on
 * that store too, a variable llm-secrets or the store reads itself, or one a setting refers to.
 */
function sealedForUseAwsKms(
  env: Record<string, string>,
  factory: StoreFactory,
  settingRefs: ReadonlySet<string>,
  reads: { accessMode: AccessMode; hostedKeys: readonly string[] | undefined },
): string[] {
  if (env.USE_AWS_KMS !== "True") return [];
  const ownVariables = new Set([...Object.keys(EnvSchema.shape), ...Object.keys(factory.settings.shape.env.shape)]);
  const hosted = reads.hostedKeys ? new Set(reads.hostedKeys) : undefined;
  const decryptedAtStart = (name: string) =>
    factory.defaults.decryptsAwsKmsValues === true && unreadableAtStart(name, reads.accessMode, hosted) === undefined;
  return Object.keys(env).filter((name) => {
    if (/^litellm_secret_aws_kms/i.test(name)) return true;
    if (!env[name]?.startsWith(KMS_SEALED)) return false;
    return !decryptedAtStart(name) || ownVariables.has(name) || settingRefs.has(name);
  });
}

/**
 * LiteLLM's start-up decryption of the environment (`USE_AWS_KMS=True`, an Enterprise feature:
 * `LITELLM_SECRET_AWS_KMS_<NAME>` becomes `<NAME>`, a value `aws_kms/<ciphertext>` its plaintext)
 * is not done here. Going on would take ciphertext for a key or a setting, and seal new values
 * under it: the start stops, naming the variables or settings (never their values). Refused too,
 * whatever the store and `USE_AWS_KMS`: a master or salt key (as resolved: a ref, a literal,
 * quotes removed) that is such ciphertext.
 */
function refuseKmsSealed(sealed: readonly string[]): void {
  if (sealed.length === 0) return;
  throw new ConfigError(
    `${sealed.join(", ")}: sealed with AWS KMS for LiteLLM's start-up decryption (USE_AWS_KMS=True), which llm-secrets does not do: set ${
      sealed.length === 1 ? "it" : "them"
    } decrypted (key_management_system aws_kms decrypts only the os.environ/ refs it reads: none under access_mode write_only, those in hosted_keys when that is set)`,
  );
}

/** The key ring, or `encryption_key_missing`. */
export function requireKeys(settings: Settings): KeyRing {
  if (!settings.keys) throw new EncryptionKeyMissing();
  return settings.keys;
}

interface ReadConfig {
  config: Config;
  /** The config as read, with its settings' refs resolved (`withSettingRefs`). */
  rawConfig: Record<string, unknown>;
  ignored: string[];
  /** The environment with the config's `environment_variables` applied. */
  env: Record<string, string>;
  /** `environment_variables` entries whose ref names a variable that is not set: [key, variable]. */
  unsetVariables: [string, string][];
  /** The variables the settings' refs were read from (`withSettingRefs`). */
  settingRefs: ReadonlySet<string>;
}

function readConfig(
  source: string | undefined,
  cwd: string,
  stores: readonly StoreFactory[],
  rawEnv: Record<string, string>,
): ReadConfig {
  if (source === undefined || source.trim() === "") {
    return { config: {}, rawConfig: {}, ignored: [], env: { ...rawEnv }, unsetVariables: [], settingRefs: new Set() };
  }
  let yamlText: string;
  // What the errors below call the config: the file it was read from, named (as a file that cannot
  // be read is), so a syntax error says which of a deployment's files to open.
  let named = "config";
  if (isInlineConfig(source)) {
    yamlText = source;
  } else {
    const path = isAbsolute(source) ? source : resolve(cwd, source);
    try {
      yamlText = readFileSync(path, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "error";
      // A one-line YAML document is taken for a path: its text (a key, maybe) is not repeated.
      if (!/\.(ya?ml|json)$/i.test(path)) {
        throw new ConfigError(
          `config: cannot read the config file (${code}); its name is not shown, as it does not end in .yaml, .yml or .json (YAML given inline must hold a newline or start with {)`,
        );
      }
      throw new ConfigError(`config: cannot read ${path} (${code})`);
    }
    named = `config ${path}`;
  }
  let raw: unknown;
  try {
    raw = parseConfigYaml(yamlText) ?? {};
  } catch (err) {
    // Its position and what went wrong, never the text there (the line may hold a secret).
    if (err instanceof YAMLParseError) {
      const at = err.linePos?.[0];
      const where = at ? ` at line ${at.line}, column ${at.col}` : "";
      throw new ConfigError(`${named}: invalid YAML${where}: ${yamlErrorText(err)} (${err.code})`);
    }
    throw new ConfigError(`${named}: invalid YAML`);
  }
  if (typeof raw !== "object" || Array.isArray(raw))
    throw new ConfigError(`${named}: expected a mapping at the top level`);
  // Keys a registered store reads are its own, not unknown; so are the stores' LiteLLM switches.
  const storeKeys = new Set(stores.flatMap((f) => Object.keys(f.settings.shape.config.shape)));
  const switches = new Set(
    stores.flatMap((f) => (f.defaults.legacyFlag ? [`general_settings.${f.defaults.legacyFlag}`] : [])),
  );
  const ignored = unknownKeys(ConfigSchema, raw).filter(
    (key) => !(key.startsWith(KMS_PATH) && storeKeys.has(key.slice(KMS_PATH.length))) && !switches.has(key),
  );
  const asRead = raw as Record<string, unknown>;
  const { env, unset } = withEnvironmentVariables(rawEnv, asRead.environment_variables);
  const settingRefs = new Set<string>();
  const rawConfig = withSettingRefs(asRead, env, new Set(ignored), settingRefs);
  const parsed = safeParse(ConfigSchema, rawConfig);
  if (!parsed.success) throw new ConfigError(`config: ${describeIssues(issuesOf(parsed.error))}`);
  return { config: parsed.data, rawConfig, ignored, env, unsetVariables: unset, settingRefs };
}

/**
 * The environment with the config's `environment_variables` applied, as LiteLLM's
 * `_load_environment_variables` applies them: a value `os.environ/NAME` is that variable's value
 * (the entry is skipped when it is not set), booleans are written as Python writes them (`True`,
 * `False`). Entries of other types are left to the schema, which refuses them.
 */
function withEnvironmentVariables(
  rawEnv: Record<string, string>,
  variables: unknown,
): { env: Record<string, string>; unset: [string, string][] } {
  const env: Record<string, string> = { ...rawEnv };
  const unset: [string, string][] = [];
  if (variables === null || typeof variables !== "object" || Array.isArray(variables)) return { env, unset };
  for (const [key, value] of Object.entries(variables)) {
    const name = refName(value);
    if (name !== undefined) {
      const resolved = envRefValue(rawEnv, name);
      if (resolved === undefined) unset.push([key, name]);
      else env[key] = resolved;
    } else if (typeof value === "boolean") env[key] = value ? "True" : "False";
    else if (typeof value === "string" || typeof value === "number") env[key] = String(value);
  }
  return { env, unset };
}

/**
 * The config with each `os.environ/NAME` in `general_settings` and `litellm_settings` (at any depth:
 * `key_management_settings`, `team_settings`, lists) read from the environment, as LiteLLM reads
 * its config at start (`_check_for_os_environ_vars`). Left alone: `model_list` (resolved through the
 * store, `SecretManager.resolveConfig`), `master_key` (`masterKeyOf`, which names the variable in
 * its messages) and keys llm-secrets does not read, but for unknown `key_management_settings` keys
 * (a custom store's own: set refs read, unset ones null). A variable that is not set stops the
 * start, naming the key: LiteLLM would read None and go on with a default (another store, region,
 * prefix or role than the one meant).
 */
function withSettingRefs(
  raw: Record<string, unknown>,
  env: Record<string, string>,
  ignored: ReadonlySet<string>,
  read: Set<string>,
): Record<string, unknown> {
  // `lenient`: a key of key_management_settings itself that no registered store names, which a
  // custom store's module may read: its refs are read too, an unset one as nothing (LiteLLM's None).
  const walk = (node: unknown, path: string, lenient: boolean): unknown => {
    if (path === "general_settings.master_key") return node;
    if (!lenient && ignored.has(path)) {
      if (!path.startsWith(KMS_PATH) || path.slice(KMS_PATH.length).includes(".")) return node;
      lenient = true;
    }
    const name = refName(node);
    if (name !== undefined) {
      const value = envRefValue(env, name);
      // Empty counts as unset, as for the store's own variables (an empty role name named no role).
      if (value !== undefined && value !== "") {
        read.add(name);
        return value;
      }
      if (lenient) return null;
      throw new ConfigError(`config: ${path} refers to ${name}, which is not set`);
    }
    if (Array.isArray(node)) return node.map((item, i) => walk(item, `${path}.${i}`, lenient));
    if (node !== null && typeof node === "object") {
      return Object.fromEntries(
        Object.entries(node).map(([key, value]) => [key, walk(value, `${path}.${key}`, lenient)]),
      );
    }
    return node;
  };
  const out = { ...raw };
  for (const section of ["general_settings", "litellm_settings"]) {
    if (out[section] !== undefined) out[section] = walk(out[section], section, false);
  }
  return out;
}

/** Whether the store's config schema keeps keys it does not name (`z.looseObject`). */
function takesAnyKey(factory: StoreFactory): boolean {
  return factory.settings.shape.config._zod.def.catchall !== undefined;
}

const KMS_PATH = "general_settings.key_management_settings.";

/** The registered stores whose LiteLLM switch (`use_azure_key_vault: true`) the config sets, in registry order. */
function legacyFlagsOf(
  rawConfig: Record<string, unknown>,
  stores: readonly StoreFactory[],
): { key: string; kind: StoreFactory["kind"] }[] {
  const general = rawConfig.general_settings as Record<string, unknown> | null | undefined;
  if (general === null || typeof general !== "object") return [];
  return stores.flatMap((f) => {
    const key = f.defaults.legacyFlag;
    // Unset or null (`use_azure_key_vault:` with nothing after it): off, as LiteLLM reads None.
    if (key === undefined || general[key] === undefined || general[key] === null) return [];
    const on = safeParse(laxBoolean, general[key]);
    if (!on.success) throw new ConfigError(`config: general_settings.${key}: expected a boolean`);
    return on.data ? [{ key, kind: f.kind }] : [];
  });
}

/** The registered factory of `kind`; the first registered when the config names none. */
function storeFactoryOf(kind: string | undefined, stores: readonly StoreFactory[]): StoreFactory {
  const factory = kind === undefined ? stores[0] : stores.find((f) => f.kind === kind);
  if (factory) return factory;
  const available = stores.map((f) => f.kind).join(", ") || "none";
  throw new ConfigError(`key_management_system: ${kind ?? "(default)"} is not in this build (available: ${available})`);
}

function rawKeyManagementSettings(rawConfig: Record<string, unknown>): Record<string, unknown> {
  const general = rawConfig.general_settings as Record<string, unknown> | null | undefined;
  const kms = general?.key_management_settings;
  return kms !== null && typeof kms === "object" && !Array.isArray(kms) ? (kms as Record<string, unknown>) : {};
}

/** The store's own keys and env vars, parsed by its schema; an invalid one stops the start, named. */
function parseStoreSettings(factory: StoreFactory, kms: Record<string, unknown>, env: Record<string, string>): unknown {
  const envShape = factory.settings.shape.env.shape;
  const ownEnv = Object.fromEntries(Object.entries(env).filter(([k, v]) => k in envShape && v !== ""));
  const parsed = safeParse(factory.settings, { config: kms, env: ownEnv });
  if (parsed.success) return parsed.data;
  const issues = issuesOf(parsed.error).map((issue) => ({
    ...issue,
    path: issue.path
      .replace(/^config\.?/, "general_settings.key_management_settings.")
      .replace(/^env\.?/, "environment: ")
      .replace(/\.$/, ""),
  }));
  throw new ConfigError(`${factory.kind} settings: ${describeIssues(issues)}`);
}

function masterKeyOf(
  configured: string | null | undefined,
  env: Record<string, string>,
  mayUseKeyFile: boolean,
  dataDir: string,
): { key: string; source: string } | undefined {
  let found: { key: string; source: string } | undefined;
  const name = refName(configured);
  if (name !== undefined) {
    const value = envRefValue(env, name);
    // A key named but not there is a typo or a missing secret: going on would seal new values
    // under another key.
    if (value === undefined) throw new ConfigError(`general_settings.master_key refers to ${name}, which is not set`);
    found = { key: value, source: name };
  } else if (configured !== undefined && configured !== null) {
    found = { key: configured, source: "general_settings.master_key" };
  } else if (env.LITELLM_MASTER_KEY !== undefined) {
    // Read as `os.environ/LITELLM_MASTER_KEY` is (quotes an env file kept removed): one variable, one key.
    found = { key: envRefValue(env, "LITELLM_MASTER_KEY") as string, source: "LITELLM_MASTER_KEY" };
  }
  if (!found && mayUseKeyFile) {
    const path = join(dataDir, MASTER_KEY_FILE);
    try {
      found = { key: readKeyFile(path), source: path };
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        throw new ConfigError(`cannot read the master key file ${path} (${(err as NodeJS.ErrnoException).code})`);
      }
    }
  }
  if (found && found.key.trim() === "") throw new ConfigError(`the master key (${found.source}) is empty`);
  return found;
}

/**
 * The master key file's key, refused (as ssh refuses such a private key) when others can read it
 * (they would hold the API's one credential) or write it (they could swap it), or when another
 * user owns it. Checked on the open file, so it is the file read that was checked.
 */
function readKeyFile(path: string): string {
  requirePosixFiles();
  const fd = openSync(path, "r");
  try {
    const { mode, uid } = fstatSync(fd);
    if (mode & 0o077) {
      const octal = (mode & 0o777).toString(8);
      throw new ConfigError(
        `the master key file ${path} can be read or written by others (mode ${octal}): chmod 600 it${ignoresModes(mode)}`,
      );
    }
    const self = process.getuid?.();
    if (self !== undefined && uid !== self) {
      throw new ConfigError(
        `the master key file ${path} belongs to another user (uid ${uid}), not to this one (${self})`,
      );
    }
    return readFileSync(fd, "utf8").trim();
  } finally {
    closeSync(fd);
  }
}

/**
 * Why a master key is weak (SPEC section 10: no default master key): publicly known, or short; a
 * start refuses it; a command that serves no API takes it when LiteLLM's
 * `dangerously_permit_weak_or_unset_master_key` is `true`.
 */
function weaknessOf(key: string): string | undefined {
  if (KNOWN_WEAK_MASTER_KEYS.has(key.trim())) return "is the publicly known example key";
  if (key.trim().length < MIN_MASTER_KEY_LENGTH) return `is shorter than ${MIN_MASTER_KEY_LENGTH} characters`;
  return undefined;
}

/**
 * 0 when the store's always-read variable is `true`; else the store's own refresh variable, else
 * `SECRET_MANAGER_REFRESH_INTERVAL`, else a day.
 */
function refreshIntervalOf(factory: StoreFactory, env: Record<string, string>, e: z.infer<typeof EnvSchema>): number {
  const alwaysRead = factory.defaults.alwaysReadVariable;
  if (alwaysRead !== undefined && env[alwaysRead]?.trim().toLowerCase() === "true") return 0;
  const fallback = factory.defaults.refreshSeconds ?? e.SECRET_MANAGER_REFRESH_INTERVAL ?? DEFAULT_REFRESH_SECONDS;
  const variable = factory.defaults.refreshIntervalVariable;
  const own = variable === undefined ? undefined : env[variable];
  if (variable === undefined || own === undefined || own === "") return fallback;
  const parsed = safeParse(seconds, own);
  if (!parsed.success) throw new ConfigError(`environment: ${variable}: ${describeIssues(issuesOf(parsed.error))}`);
  return parsed.data;
}
