/**
 * Wiring: settings in; the store, the secret manager and the request handler out. Every entry point
 * (local server, CLI, cloud functions) builds its pieces here, so they behave the same.
 *
 * A runtime hands `createRuntime` the store factories it ships (its registry): the AWS bundle
 * registers the AWS stores and the portable ones, the CLI every store (`CLI_STORES`). Requests reach the app only
 * through `runtime.fetch(request, raw)`, whose `raw` (the request as it arrived) is required.
 */
import { createApp, MAX_BODY_BYTES, type RawRequest } from "./app";
import { createAudit, keyEventEntry, requestIdOf } from "./audit";
import { cryptoReady } from "./crypto";
import { ConfigError, SecretsError } from "./errors";
import { errorCounter } from "./http/middleware";
import { errorAnswer } from "./http/router";
import { instrumentStore } from "./instrument-store";
import { applyKeyEvent, type KeyEventResult, refuseNotJson } from "./key-events";
import { bufferedWriter, flushLogs, type Logger } from "./log";
import { createMetrics, type Metrics, type MetricsSink } from "./metrics";
import { outboundTlsOptions, proxyLogFields } from "./outbound-tls";
import { SecretManager } from "./secret-manager";
import type { SecretStore, StoreFactory } from "./secret-store";
import { loadSettings, type Settings, type SettingsInput } from "./settings";
import { loggableMessage } from "./store-errors";

export interface RuntimeOptions {
  /** The store factories this runtime ships; the first is the default store. */
  stores: readonly StoreFactory[];
  /** Settings already loaded (with the same stores), or what to load them from. */
  settings: Settings | Omit<SettingsInput, "stores">;
  log: Logger;
  /** Where metrics also go besides Prometheus text (EMF on Lambda). */
  metricsSinks?: readonly MetricsSink[];
  /** Where audit lines go when `LLM_SECRETS_AUDIT` is not `off` (default: stdout). */
  audit?: (line: string) => void;
  /** Audit lines also carry Google Cloud Logging's `severity` (as the function's log lines do there). */
  auditSeverity?: boolean;
  now?: () => number;
  /** Passed to the store's open (`StoreDeps.create`): `false` opens only a store that is there. */
  create?: boolean;
  /**
   * `false`: this process applies no key event (a CLI command other than `serve`), so the start does
   * not hold `LLM_SECRETS_MAX_EVENT_AGE` to the store's tombstone lifetime: an emergency `delete` of
   * a leaked key runs in an environment set for the servers.
   */
  keyEvents?: boolean;
}

export interface Runtime {
  settings: Settings;
  /** The store, instrumented: what the manager calls. */
  store: SecretStore;
  /** The store as its factory opened it, for store-specific commands (`reencrypt`). */
  backend: SecretStore;
  manager: SecretManager;
  metrics: Metrics;
  log: Logger;
  /**
   * Answers an HTTP request. `raw` is the request as it arrived (its path before any URL
   * normalisation); each runtime builds it with its own small helper. Without a master key every
   * request is refused (500), with one log line.
   */
  fetch(request: Request, raw: RawRequest): Response | Promise<Response>;
  /**
   * Applies one key event from a queue (any JSON; never throws): what queue handlers call, with the
   * queue's id of the message (logged when the event is not applied; its audit line's `request_id`).
   */
  applyKeyEvent(event: unknown, messageId?: string): Promise<KeyEventResult>;
  /** The same for a queue message's body as text: not JSON is refused like any malformed event. */
  applyKeyEventText(text: string, messageId?: string): Promise<KeyEventResult>;
  close(): Promise<void>;
}

export async function createRuntime(options: RuntimeOptions): Promise<Runtime> {
  const { log } = options;
  let settings: Settings;
  if ("storeFactory" in options.settings) settings = options.settings;
  else {
    settings = loadSettings({ ...options.settings, stores: options.stores });
    // Loaded here (a cloud function's start), their warnings are said here; the CLI says its own.
    for (const warning of settings.warnings) log.warn(warning);
  }
  exportEnvironmentVariables(settings);
  const proxy = settings.outbound.proxy;
  if (proxy)
    log.info(
      "outbound calls go through a proxy (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY; NO_PROXY's targets go direct)",
      proxyLogFields(proxy),
    );
  const now = options.now ?? Date.now;
  // Forwarding reads the outbound TLS files on its first call: read them now, so one that cannot be
  // read stops the start, named, rather than failing every forward. Before the store opens: a start
  // that stops leaves nothing open (a cloud function tries its start again).
  if ((settings.config.model_list ?? []).length > 0) outboundTlsOptions(settings.outbound);
  const [backend] = await Promise.all([
    // The factory parsed these settings with its own schema in loadSettings.
    settings.storeFactory.open(settings.storeSettings as never, {
      dataDir: settings.dataDir,
      configDir: settings.configDir,
      keys: settings.keys,
      env: settings.env,
      log,
      now,
      outbound: settings.outbound,
      create: options.create,
    }),
    // libsodium is the fast path; without it, sealing and opening stay correct on tweetnacl.
    cryptoReady().catch(() => log.warn("libsodium did not load; encryption runs on tweetnacl (same bytes, slower)")),
  ]);
  // Key events older than the store keeps a delete's tombstone could revive the keys it deleted.
  const tombstoneMs = backend.tombstoneMs;
  if (
    options.keyEvents !== false &&
    settings.keyManagement.storeVirtualKeys &&
    tombstoneMs !== undefined &&
    tombstoneMs > 0 &&
    settings.maxEventAgeSeconds * 1000 > tombstoneMs
  ) {
    await backend.close?.();
    throw new ConfigError(
      `LLM_SECRETS_MAX_EVENT_AGE (${settings.maxEventAgeSeconds} s) is past how long the ${backend.kind} store keeps a delete (${tombstoneMs / 1000} s): ` +
        "a key event older than that could bring back a key it deleted; set it to at most that",
    );
  }
  const metrics = createMetrics(options.metricsSinks);
  const store = instrumentStore(backend, metrics, log);
  const manager = new SecretManager({
    store,
    envBacked: settings.storeFactory.defaults.envBacked,
    policy: settings.keyManagement,
    cache: settings.cache,
    metrics,
    log,
    env: settings.env,
    keys: settings.keys,
    maxBodyBytes: MAX_BODY_BYTES,
    maxValueBytes: settings.storeFactory.capabilities.maxValueBytes,
    fieldKeys: settings.storeFactory.capabilities.scopes === true,
    resolveLimits: settings.resolveLimits,
    now,
  });
  const keyEventDeps = {
    manager,
    policy: settings.keyManagement,
    keys: settings.keys,
    maxAgeSeconds: settings.maxEventAgeSeconds,
    now,
    log,
    metrics,
  };
  const audit =
    settings.audit === "off"
      ? undefined
      : createAudit(options.audit ?? bufferedWriter(process.stdout), { severity: options.auditSeverity === true });
  const app = settings.masterKey
    ? createApp({
        manager,
        masterKey: settings.masterKey,
        metrics,
        log,
        applyKeyEvent: (event) => applyKeyEvent(event, keyEventDeps),
        models: settings.config.model_list ?? [],
        outbound: settings.outbound,
        ...(audit && { audit }),
        now,
        lambdaRuntimeApi: settings.env.AWS_LAMBDA_RUNTIME_API,
      })
    : undefined;
  const refuse = noMasterKey(log);
  // From a queue: audited with the message's id as the request's (the event's id is the line's
  // `event_id`), the caller being the queue.
  const fromQueue = (result: KeyEventResult, event: unknown, messageId: string | undefined) => {
    audit?.(keyEventEntry(result, event, requestIdOf(messageId), "queue"));
    return result;
  };
  return {
    settings,
    store,
    backend,
    manager,
    metrics,
    log,
    fetch: app ? app.fetch : refuse,
    applyKeyEvent: async (event, messageId) =>
      fromQueue(await applyKeyEvent(event, keyEventDeps, messageId), event, messageId),
    // Parsed once here, for the event and its audit line; text that is not JSON is refused there.
    applyKeyEventText: async (text, messageId) => {
      const event = parsedOrUndefined(text);
      const result =
        event === undefined
          ? refuseNotJson(keyEventDeps, messageId)
          : await applyKeyEvent(event, keyEventDeps, messageId);
      return fromQueue(result, event, messageId);
    },
    close: async () => {
      await backend.close?.();
    },
  };
}

/** A queue message's body as JSON, or undefined when it is not JSON (which `JSON.parse` never answers). */
function parsedOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The config's `environment_variables` (as settings resolved them) into the process environment,
 * as LiteLLM puts them in `os.environ` at start: the cloud SDKs read their own variables there
 * (AWS credentials, profile and endpoints, `GOOGLE_APPLICATION_CREDENTIALS`, Azure's identity),
 * never in our settings. Before the store opens, so that its client finds them.
 */
function exportEnvironmentVariables(settings: Settings): void {
  for (const key of Object.keys(settings.config.environment_variables ?? {})) {
    // Its own variables only: not `constructor` and the like, which every object has.
    if (Object.hasOwn(settings.env, key)) process.env[key] = settings.env[key];
  }
}

function noMasterKey(log: Logger) {
  let logged = false;
  return async (): Promise<Response> => {
    if (!logged) log.error("no master key: set LITELLM_MASTER_KEY (or general_settings.master_key); refusing requests");
    logged = true;
    return errorAnswer("internal", "internal error");
  };
}

/** What a cloud function hands `startOnFirstUse`: its stores, its environment and its log. */
export interface FunctionRuntimeOptions {
  stores: readonly StoreFactory[];
  env: Readonly<Record<string, string | undefined>>;
  log: Logger;
  metricsSinks?: readonly MetricsSink[];
  auditSeverity?: boolean;
  /** The clock of the start's retry pause (tests set it). */
  now?: () => number;
}

/** What a cloud function's entry takes: unset, its own store list, `process.env` and a stdout logger (tests set them). */
export type FunctionOptions = Partial<Pick<FunctionRuntimeOptions, "stores" | "env" | "log">>;

/** After a failed start, invocations fail at once for this long; the next one then starts again. */
export const START_RETRY_MS = 10_000;

/** A cloud function's runtime started on first use: call it for the runtime, or `fetch` through it. */
export interface LazyRuntime {
  (): Promise<Runtime>;
  /**
   * The app's answer to a request; while the runtime cannot start, `500 internal` in the API's
   * error shape (no platform's HTML or empty 500), its reason in the log line of the start.
   */
  fetch(request: Request, raw: RawRequest): Promise<Response>;
  /**
   * Writes the log lines still held for the end of this event-loop turn (the audit's: log.ts's
   * `flushLogs`), synchronously. A function calls it before each invocation answers: after that the
   * platform may freeze the process (Lambda) or throttle its CPU (Google), and the lines would wait
   * for the next invocation, or be lost with the instance.
   */
  flushLogs(): void;
  /**
   * Counts an error the function answered itself, outside the app (an answer too large for
   * Lambda, a request the platform's own layer refused): `llm_secrets_errors_total`, as the app's
   * error handler counts its own. On the started runtime (started now if it was not: the count is
   * in this invocation's metrics); nothing while it cannot start, which has no metrics (the start's
   * log line says why).
   */
  countError(code: string): Promise<void>;
}

/**
 * A cloud function's runtime, started on its first invocation (settings from its environment,
 * exactly as for `serve`) and then kept. A start that fails is logged, one line with its reason;
 * invocations fail the same way for `START_RETRY_MS`, and the first one after that starts again (a
 * file on a mounted volume, a store's SDK chunk or a custom store may come good without the
 * platform recycling the instance).
 */
export function startOnFirstUse(options: FunctionRuntimeOptions): LazyRuntime {
  const now = options.now ?? Date.now;
  let started: Promise<Runtime> | undefined;
  let failedAt: number | undefined;
  const runtime = (): Promise<Runtime> => {
    // A clock stepped back (now before failedAt) ends the pause too: it would last the step otherwise.
    if (failedAt !== undefined && (now() < failedAt || now() - failedAt >= START_RETRY_MS)) {
      started = undefined;
      failedAt = undefined;
    }
    started ??= createRuntime({
      stores: options.stores,
      settings: { env: definedOnly(options.env) },
      log: options.log,
      ...(options.metricsSinks && { metricsSinks: options.metricsSinks }),
      ...(options.auditSeverity && { auditSeverity: true }),
    }).catch((err: unknown) => {
      failedAt = now();
      options.log.error("llm-secrets could not start", {
        // A user's own store's message (its open's) goes to no log line, as its calls' do not.
        reason: err instanceof SecretsError ? loggableMessage(err) : err instanceof Error ? err.message : String(err),
        retry_in_s: START_RETRY_MS / 1000,
      });
      throw err;
    });
    return started;
  };
  const fetch = async (request: Request, raw: RawRequest): Promise<Response> => {
    let rt: Runtime;
    try {
      rt = await runtime();
    } catch {
      return errorAnswer("internal", "llm-secrets could not start: the function's log says why");
    }
    return rt.fetch(request, raw);
  };
  // One counter a started runtime (its label cache with it).
  const counters = new WeakMap<Runtime, (code: string) => void>();
  const countError = async (code: string): Promise<void> => {
    let rt: Runtime;
    try {
      rt = await runtime();
    } catch {
      return;
    }
    let count = counters.get(rt);
    if (!count) {
      count = errorCounter(rt.metrics, rt.store.kind);
      counters.set(rt, count);
    }
    count(code);
  };
  return Object.assign(runtime, { fetch, flushLogs, countError });
}

function definedOnly(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}
