/**
 * `cyberark`: CyberArk Conjur (Secrets Manager) over its REST API, with LiteLLM's `CYBERARK_*` env
 * names and defaults, over the one outbound client (outbound.ts, loaded when the store opens).
 *
 * - Login: `POST {CYBERARK_API_BASE}/authn/{account}/{login}/authenticate` with the API key as the
 *   body. Differs: the account and the login are URL-encoded, so `host/...` logins work (LiteLLM
 *   sends the `/` as it is). With `CYBERARK_CLIENT_CERT` and `CYBERARK_CLIENT_KEY` (PEM files), the
 *   connection is mutual TLS: the same authenticate call, the certificate and key presented by the
 *   outbound agent, the API key still the body. Differs: Conjur's authn takes the API key only, so
 *   the settings require `CYBERARK_API_KEY` with a certificate too (LiteLLM starts without it, and
 *   then sends an empty body, which every login refuses with 401). The certificate's files are
 *   looked at again before each login (`ClientCertificateAgent`, outbound.ts): a renewed pair is
 *   what the login and the calls after it present, as LiteLLM's client made at each login does.
 * - The token: Conjur answers a JSON document; every later call sends
 *   `Authorization: Token token="<base64 of those exact bytes>"`. Conjur's tokens live 8 minutes; we
 *   log in again once `CYBERARK_REFRESH_INTERVAL` (default 300 s) or 6 minutes have passed,
 *   whichever is shorter, so a token is never used in its last 2 minutes. A 401 on a call gets one
 *   fresh login and one more try. Concurrent callers share one login.
 * - Read: `GET /secrets/{account}/variable/{id}`, the id wholly URL-encoded (`/` as `%2F`); the
 *   value is the body (UTF-8; other bytes are `store_corrupt`, never a garbled value). 404 (no such
 *   variable, none visible to us, or one without a value yet) is no secret.
 * - Write: `POST /secrets/{account}/variable/{id}` with the value as the body. When the variable is
 *   not declared (404), it is declared by loading the policy `- !variable "<name>"` (a YAML scalar
 *   made by the YAML serialiser, never by string building) with `POST /policies/{account}/policy/
 *   {branch}` (Conjur's add-only load), then the value is written again. The branch is
 *   `LLM_SECRETS_CYBERARK_POLICY_BRANCH` (default `root`); Conjur names a variable declared in a
 *   branch `{branch}/{name}`, so with a branch other than `root` every name, reads included, lives
 *   under it. A 409 on a policy load (another load of that policy is running) is tried again, 5
 *   tries in all, after waits of up to 0.2, 0.4, 0.8, 1.6 s (LiteLLM's; half of each fixed, half
 *   random here); still 409 after that is `backend_unavailable`. Our own policy loads go one at a
 *   time, and writes to one name too, so in one process "created" is said once per variable: it
 *   means this write declared the variable (one declared by someone else but never given a value
 *   is "updated"; Conjur has no compare-and-set, so two processes may both say "created").
 *   Differs: a write that fails is an error, not a logged `{"status": "error"}`; the policy is loaded
 *   only for a variable that is not declared (LiteLLM loads it on every write), and an empty or
 *   whitespace-only value is refused (`invalid_request`) before any call: Conjur refuses it (422).
 * - Delete: `501 not_supported` (Conjur removes variables only by policy); the manager checks the
 *   access mode first.
 * - TLS: `CYBERARK_SSL_VERIFY=false` (or `true`; trimmed, any case) turns verification off (or on)
 *   for this store's agent only, through the outbound client's TLS settings (a warning is logged
 *   when off, as LiteLLM does); unset, the general `ssl_verify` / `SSL_VERIFY` applies. Differs:
 *   another value stops the start naming it (LiteLLM quietly verifies).
 * - Failures go through the one classifier (401/403 denied, 429/5xx unavailable with Retry-After);
 *   messages hold the operation and the status, never a body, a value, the API key or a token.
 *
 * Records: the value only (no change times we can set), so no compare-and-set.
 *
 * The cache of values is the manager's, whose lifetime is `CYBERARK_REFRESH_INTERVAL`, default
 * 300 s as in LiteLLM (`defaults.refreshSeconds`; `SECRET_MANAGER_REFRESH_INTERVAL` does not apply).
 */
import { Document, Scalar, YAMLSeq } from "yaml";
import * as z from "zod/mini";
import { InvalidInput } from "../errors";
import { isValidName } from "../names";
import type { ClientCertificateAgent } from "../outbound";
import { BASE_URL_EXPECTED, isBaseUrl, type OutboundTls } from "../outbound-tls";
import {
  KeyedQueue,
  type ListOptions,
  type NamePage,
  type PutOutcome,
  type SecretRecord,
  type SecretStore,
  type StoreDeps,
  type StoreFactory,
} from "../secret-store";
import {
  BackendDenied,
  BackendUnavailable,
  classifyBackendError,
  NotSupported,
  retryAfterHeader,
  StoreCorrupt,
  StoreUnavailable,
} from "../store-errors";
import { HttpAnswerError, SharedLogin } from "./http-store";

/** LiteLLM's defaults. */
const DEFAULT_API_BASE = "http://127.0.0.1:8080";
const DEFAULT_ACCOUNT = "default";
const DEFAULT_USERNAME = "admin";
const DEFAULT_REFRESH_SECONDS = 300;
const DEFAULT_BRANCH = "root";
/** Conjur's tokens live 8 minutes: one is not used past 6. */
const MAX_TOKEN_SECONDS = 360;
const MIN_TOKEN_SECONDS = 60;
/** The longest one call may take, connection to the end of the body. */
const CALL_TIMEOUT_MS = 30_000;
/** What Conjur's `blank?` refuses in a raw body: nothing, or ASCII white space only. */
const BLANK = /^[\t\n\v\f\r ]*$/;

const text = z.optional(z.string());

export const CyberArkSettings = z.object({
  config: z.object({}),
  env: z
    .object({
      CYBERARK_API_BASE: z.optional(z.string().check(z.refine(isBaseUrl, BASE_URL_EXPECTED))),
      CYBERARK_ACCOUNT: text,
      CYBERARK_USERNAME: text,
      CYBERARK_API_KEY: text,
      CYBERARK_CLIENT_CERT: text,
      CYBERARK_CLIENT_KEY: text,
      CYBERARK_SSL_VERIFY: z.optional(z.string().check(z.regex(/^\s*(?:true|false)\s*$/i, "expected true or false"))),
      CYBERARK_REFRESH_INTERVAL: z.optional(
        z.string().check(z.regex(/^\s*\d+\s*$/, "expected a whole number of seconds")),
      ),
      LLM_SECRETS_CYBERARK_POLICY_BRANCH: text,
    })
    .check(
      // Conjur's authn takes the API key (the body), whatever the connection: a client certificate
      // without it logs in nowhere (every login 401), so it stops the start here.
      z.superRefine((env, ctx) => {
        if (env.CYBERARK_API_KEY) return;
        const message =
          env.CYBERARK_CLIENT_CERT || env.CYBERARK_CLIENT_KEY
            ? "set CYBERARK_API_KEY: Conjur's authn takes the API key; the client certificate only adds mutual TLS"
            : "set the API key: Conjur's authn takes it (CYBERARK_CLIENT_CERT and CYBERARK_CLIENT_KEY only add mutual TLS)";
        ctx.issues.push({ code: "custom", message, path: ["CYBERARK_API_KEY"], input: env });
      }),
    ),
});

export type CyberArkEnv = z.output<typeof CyberArkSettings>["env"];

/** What the store needs from its settings, resolved. */
export interface CyberArkConfig {
  apiBase: string;
  account: string;
  login: string;
  /** The authenticate body: the API key (the settings require it, a client certificate or not). */
  apiKey: string;
  /** The branch policies are loaded into; `root` is the top. */
  branch: string;
  tokenLifeMs: number;
}

/** The store's configuration from its env vars: LiteLLM's defaults, the branch trimmed of slashes. */
export function cyberArkConfigOf(env: CyberArkEnv): CyberArkConfig {
  const refresh =
    env.CYBERARK_REFRESH_INTERVAL === undefined ? DEFAULT_REFRESH_SECONDS : Number(env.CYBERARK_REFRESH_INTERVAL);
  const branch = (env.LLM_SECRETS_CYBERARK_POLICY_BRANCH ?? "").trim().replace(/^\/+|\/+$/g, "");
  return {
    apiBase: (env.CYBERARK_API_BASE ?? DEFAULT_API_BASE).trim().replace(/\/+$/, ""),
    account: env.CYBERARK_ACCOUNT ?? DEFAULT_ACCOUNT,
    login: env.CYBERARK_USERNAME ?? DEFAULT_USERNAME,
    apiKey: env.CYBERARK_API_KEY ?? "",
    branch: branch === "" ? DEFAULT_BRANCH : branch,
    // At least a minute: a cache turned off (0) must not mean a login before every call.
    tokenLifeMs: Math.min(Math.max(refresh, MIN_TOKEN_SECONDS), MAX_TOKEN_SECONDS) * 1000,
  };
}

/** The policy that declares `id` (relative to its branch): `- !variable "<id>"`, by the serialiser. */
export function variablePolicy(id: string): string {
  const scalar = new Scalar(id);
  scalar.tag = "!variable";
  scalar.type = Scalar.QUOTE_DOUBLE;
  const seq = new YAMLSeq();
  seq.items.push(scalar);
  const doc = new Document();
  doc.contents = seq;
  return doc.toString({ lineWidth: 0 });
}

export interface ConjurCall {
  method: "GET" | "POST";
  /** From the root of the API, every segment already encoded. */
  path: string;
  body?: string;
  contentType?: string;
  authorization?: string;
}

export interface ConjurAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The body's exact bytes. */
  body: Buffer;
}

export type Send = (call: ConjurCall) => Promise<ConjurAnswer>;

/** Tuning, not settings: tests shorten it, users get the defaults. */
export interface CyberArkTuning {
  /** Tries of one policy load that meets 409, the first included. */
  policyTries: number;
  /** The first retry waits between half of this and all of it; each later one twice as long. */
  policyBackoffMs: number;
  /**
   * The longest wait for Conjur's `Retry-After` on a 409 within a request: a longer one gives up at
   * once, passing it on (the answer's `Retry-After`, a queue's redelivery).
   */
  policyMaxWaitMs: number;
  /** In [0, 1): the random half of a backoff. */
  random: () => number;
}

const DEFAULT_TUNING: CyberArkTuning = {
  policyTries: 5,
  policyBackoffMs: 200,
  policyMaxWaitMs: 3000,
  random: Math.random,
};

// A leading byte order mark is part of the value: kept (`ignoreBOM`), as LiteLLM keeps it (httpx's `.text`).
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/** The most resources one listing call asks Conjur for. */
const MAX_LIST_PAGE = 1000;

/** The cap in Conjur's 422 for a list limit past `api_resource_list_limit_max` (its message only matched). */
function limitMaxOf(body: Uint8Array): number | undefined {
  let message: unknown;
  try {
    message = (JSON.parse(utf8.decode(body)) as { error?: { message?: unknown } }).error?.message;
  } catch {
    return undefined;
  }
  const most = typeof message === "string" ? /must not exceed (\d+)/.exec(message)?.[1] : undefined;
  return most !== undefined && Number(most) > 0 ? Number(most) : undefined;
}

function isOk(status: number): boolean {
  return status >= 200 && status < 300;
}

export class CyberArkStore implements SecretStore {
  readonly kind = "cyberark";
  readonly #login = new SharedLogin(
    () => this.#logIn(),
    () => this.now(),
  );
  /** Each name's writes, one at a time. */
  readonly #writes = new KeyedQueue();
  /** The tail of this store's queue of policy loads. */
  #policyLoads: Promise<unknown> = Promise.resolve();
  /** The largest page the server takes: Conjur's own, or what its 422 named (asked for from then on). */
  #listCap = MAX_LIST_PAGE;
  readonly #tuning: CyberArkTuning;

  constructor(
    private readonly send: Send,
    private readonly config: CyberArkConfig,
    private readonly now: () => number = Date.now,
    tuning: Partial<CyberArkTuning> = {},
    /** The client certificate's agent, when Conjur is reached with one (looked at again before each login). */
    private readonly certificate?: Pick<ClientCertificateAgent, "refresh" | "close">,
  ) {
    this.#tuning = { ...DEFAULT_TUNING, ...tuning };
  }

  /** Closes the client certificate's agent, the store's own (the shared agent stays: outbound.ts's). */
  async close(): Promise<void> {
    await this.certificate?.close();
  }

  /** The variable's id: the name, under the branch unless it is `root`. */
  keyOf(name: string): string {
    return this.config.branch === DEFAULT_BRANCH ? name : `${this.config.branch}/${name}`;
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    const answer = await this.#call({ method: "GET", path: this.#variablePath(name) }, "cyberark get");
    if (answer.status === 404) return undefined;
    if (!isOk(answer.status)) throw this.#failure(answer, "cyberark get");
    try {
      return { value: utf8.decode(answer.body) };
    } catch {
      throw new StoreCorrupt(`cyberark get: the value of ${name} is not UTF-8 text`);
    }
  }

  put(name: string, value: string): Promise<PutOutcome> {
    if (BLANK.test(value)) {
      return Promise.reject(new InvalidInput("CyberArk Conjur refuses an empty or whitespace-only value"));
    }
    return this.#writes.run(this.keyOf(name), async () => {
      if (await this.#setValue(name, value)) return "updated";
      await this.#declare(name);
      if (await this.#setValue(name, value)) return "created";
      // Declared, yet still not there for us: we may load the policy but not see its variables
      // (Conjur answers 404 for a variable that is there but not visible to the login).
      throw new BackendDenied(
        "cyberark put: the variable was declared, but this login cannot see it (HTTP 404): grant it read and update on the variables of its policy branch",
      );
    });
  }

  async delete(): Promise<never> {
    throw new NotSupported("deleting from the cyberark store (Conjur removes variables only by policy)");
  }

  /**
   * Names from Conjur's resource list (`GET /resources/{account}/variable?limit&offset`): the
   * variables this login may see that hold a value, under the branch (its prefix removed). Conjur's
   * `search` is a text search, not a prefix: the prefix is matched here, so a page may hold fewer
   * names than the limit. The cursor is the next offset.
   */
  async list(options: ListOptions): Promise<NamePage> {
    const what = "cyberark list";
    const offset = options.cursor === undefined ? 0 : Number(Buffer.from(options.cursor, "base64url").toString());
    if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidInput("the cursor is not valid");
    let limit = Math.min(options.limit, this.#listCap);
    const page = () => {
      const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
      return this.#call(
        { method: "GET", path: `/resources/${encodeURIComponent(this.config.account)}/variable?${query}` },
        what,
      );
    };
    let answer = await page();
    // A server may cap the page (`api_resource_list_limit_max`): "'Limit' parameter must not exceed N", 422.
    const most = answer.status === 422 ? limitMaxOf(answer.body) : undefined;
    if (most !== undefined && most < limit) {
      this.#listCap = most;
      limit = most;
      answer = await page();
    }
    if (!isOk(answer.status)) throw this.#failure(answer, what);
    let resources: unknown;
    try {
      resources = JSON.parse(utf8.decode(answer.body));
    } catch {
      throw new StoreCorrupt(`${what}: the answer is not JSON`);
    }
    if (!Array.isArray(resources)) throw new StoreCorrupt(`${what}: the answer is not a list of resources`);
    const idPrefix = `${this.config.account}:variable:${this.keyOf("")}`;
    const prefix = options.prefix ?? "";
    const names: string[] = [];
    for (const resource of resources as { id?: unknown; secrets?: unknown }[]) {
      const id = resource?.id;
      if (typeof id !== "string" || !id.startsWith(idPrefix)) continue;
      const name = id.slice(idPrefix.length);
      const held = Array.isArray(resource.secrets) && resource.secrets.length > 0;
      if (held && name.startsWith(prefix) && isValidName(name)) names.push(name);
    }
    return resources.length < limit
      ? { names }
      : { names, cursor: Buffer.from(String(offset + limit)).toString("base64url") };
  }

  #variablePath(name: string): string {
    return `/secrets/${encodeURIComponent(this.config.account)}/variable/${encodeURIComponent(this.keyOf(name))}`;
  }

  /** Writes the value: true when written, false when the variable is not declared (404). */
  async #setValue(name: string, value: string): Promise<boolean> {
    const answer = await this.#call(
      { method: "POST", path: this.#variablePath(name), body: value, contentType: "application/octet-stream" },
      "cyberark put",
    );
    if (answer.status === 404) return false;
    if (!isOk(answer.status)) throw this.#failure(answer, "cyberark put");
    return true;
  }

  /** Declares the variable by a policy load into the branch; 409 (a load running) is tried again. */
  #declare(name: string): Promise<void> {
    const what = "cyberark put (policy load)";
    const { account, branch } = this.config;
    const path = `/policies/${encodeURIComponent(account)}/policy/${encodeURIComponent(branch)}`;
    const body = variablePolicy(name);
    const load = async () => {
      for (let attempt = 1; ; attempt++) {
        const answer = await this.#call({ method: "POST", path, body, contentType: "application/x-yaml" }, what);
        if (isOk(answer.status)) return;
        if (answer.status === 404) {
          throw new StoreUnavailable(`${what}: the policy branch ${branch} is not there for this login (HTTP 404)`);
        }
        if (answer.status !== 409) throw this.#failure(answer, what);
        // Conjur says when to try again (its `Retry-After`, 1 to 8 s): not sooner, and not past
        // policyMaxWaitMs within a request.
        const retryAfter = retryAfterHeader(answer.headers);
        const wait = Math.max(this.#backoff(attempt), (retryAfter ?? 0) * 1000);
        if (attempt >= this.#tuning.policyTries || wait > this.#tuning.policyMaxWaitMs) {
          throw new BackendUnavailable(
            `${what}: other policy loads kept running (HTTP 409, ${attempt} tries)`,
            retryAfter,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    };
    const run = this.#policyLoads.then(load, load);
    this.#policyLoads = run.catch(() => undefined);
    return run;
  }

  #backoff(attempt: number): number {
    const step = this.#tuning.policyBackoffMs * 2 ** (attempt - 1);
    return step / 2 + (step / 2) * this.#tuning.random();
  }

  /** One authenticated call; a 401 gets one fresh login and one more try. */
  async #call(call: ConjurCall, what: string): Promise<ConjurAnswer> {
    try {
      return await this.#login.call((authorization) => this.send({ ...call, authorization }));
    } catch (err) {
      throw classifyBackendError(err, what);
    }
  }

  /** A login: its token as the `Authorization` header to send, used for `tokenLifeMs`. */
  async #logIn(): Promise<{ token: string; lifeMs: number }> {
    const { account, login, apiKey, tokenLifeMs } = this.config;
    const what = "cyberark login";
    // A client certificate renewed on disk since the last login is the one this login presents.
    await this.certificate?.refresh();
    const answer = await this.send({
      method: "POST",
      path: `/authn/${encodeURIComponent(account)}/${encodeURIComponent(login)}/authenticate`,
      body: apiKey,
      contentType: "text/plain",
    });
    if (!isOk(answer.status) || answer.body.length === 0) throw this.#failure(answer, what);
    return { token: `Token token="${answer.body.toString("base64")}"`, lifeMs: tokenLifeMs };
  }

  #failure(answer: ConjurAnswer, what: string) {
    return classifyBackendError(new HttpAnswerError("ConjurResponseError", answer), what);
  }
}

/**
 * The outbound client as `Send`: bytes in and out, one deadline per call; on the shared agent for
 * `tls`, or on the client certificate's own (after a renewal, the new one's).
 */
async function sender(apiBase: string, tls: OutboundTls, certificate?: ClientCertificateAgent): Promise<Send> {
  const { outboundAgent, request } = await import("../outbound");
  const shared = certificate ? undefined : outboundAgent(tls);
  return async (call) => {
    const res = await request(`${apiBase}${call.path}`, {
      method: call.method,
      dispatcher: certificate?.agent ?? shared,
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      headers: {
        ...(call.contentType && { "content-type": call.contentType }),
        ...(call.authorization && { authorization: call.authorization }),
      },
      ...(call.body !== undefined && { body: call.body }),
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, headers: res.headers, body };
  };
}

/**
 * Opens the store: reads the client certificate (an unreadable one stops the start; its files are
 * looked at again before each login) and makes the outbound agent. Conjur is not called until the
 * first secret is. `tuning` is for tests only.
 */
export async function openCyberArkStore(
  env: CyberArkEnv,
  deps: Pick<StoreDeps, "log" | "now" | "outbound">,
  tuning?: Partial<CyberArkTuning>,
): Promise<CyberArkStore> {
  const config = cyberArkConfigOf(env);
  const certFile = env.CYBERARK_CLIENT_CERT;
  const keyFile = env.CYBERARK_CLIENT_KEY;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    // With an API key, a half pair is ignored (as LiteLLM does); say so, naming what is missing.
    deps.log.warn("cyberark: a client certificate is set by half and ignored", {
      missing: certFile === undefined ? "CYBERARK_CLIENT_CERT" : "CYBERARK_CLIENT_KEY",
    });
  }
  const verify = env.CYBERARK_SSL_VERIFY?.trim().toLowerCase();
  if (verify === "false") deps.log.warn("cyberark: TLS certificate verification is off (CYBERARK_SSL_VERIFY=false)");
  const tls: OutboundTls = {
    ...deps.outbound,
    ...(verify !== undefined && { verify: verify === "true" }),
  };
  const { ClientCertificateAgent } = await import("../outbound");
  const certificate =
    certFile !== undefined && keyFile !== undefined
      ? await ClientCertificateAgent.open(
          tls,
          { cert: certFile, key: keyFile, certVariable: "CYBERARK_CLIENT_CERT", keyVariable: "CYBERARK_CLIENT_KEY" },
          deps.log,
        )
      : undefined;
  return new CyberArkStore(await sender(config.apiBase, tls, certificate), config, deps.now, tuning, certificate);
}

export const cyberarkStore = {
  kind: "cyberark",
  settings: CyberArkSettings,
  defaults: {
    accessMode: "read_only",
    refreshIntervalVariable: "CYBERARK_REFRESH_INTERVAL",
    refreshSeconds: DEFAULT_REFRESH_SECONDS,
    needsLocalKey: false,
    envBacked: false,
  },
  // No maxValueBytes: Conjur takes values up to 10 MB ("Set a secret"), past the API's 1 MiB body.
  capabilities: { writes: true, deletes: false, compareAndSet: false, records: [] },
  open: async (settings, deps) => openCyberArkStore(settings.env, deps),
} as const satisfies StoreFactory<"cyberark", typeof CyberArkSettings>;
