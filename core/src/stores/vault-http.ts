/**
 * Vault's HTTP: the one module that speaks to a Vault server, over the core's one outbound client
 * (outbound.ts, SPEC section 8), used only by the `hashicorp_vault` store (vault.ts). It owns three things:
 *
 * - The connection pool: the core's one outbound client (outbound.ts: keep-alive 120 s, so
 *   sequential calls reuse their connections and a new one resumes the TLS session; TLS 1.2 at
 *   least; connect timeout 5 s) with the general TLS settings (`ssl_verify`, `SSL_CERT_FILE`), 10 s
 *   for a whole try, and Vault's client certificate when one is configured (cert login is real
 *   mutual TLS: Vault reads the certificate off the connection). That certificate's files are
 *   looked at again before each login (`ClientCertificateAgent`, outbound.ts): a renewed pair is
 *   what the login and the calls after it present, as LiteLLM's client made at each cert login
 *   does. Without TLS settings, trust is node's own: the system's roots and `NODE_EXTRA_CA_CERTS`.
 * - Retries: at most 3 tries of a call that failed with 408, 412, 429, a 5xx, a timeout or a
 *   dropped connection (`backend_unavailable`), after an
 *   exponentially growing wait with jitter (half fixed, half random: retries of many clients
 *   spread out, and none comes back at once). A `Retry-After` is honoured: the wait is at least
 *   that long; one longer than `maxWaitMs` is not waited for but reported (the error carries it, so
 *   the cache serves its last good value and HTTP callers get it in their 503).
 * - Auth: AppRole > TLS certificate > token (LiteLLM's order). A login's token is kept for its
 *   lease and renewed (`renew-self`) once two thirds of it have passed, as Vault's own agent does;
 *   a renewal that is refused, or that Vault caps short (the token's max TTL), is followed by a
 *   fresh login; one that fails (Vault unreachable) leaves the token in use until its lease ends.
 *   Every age below (a lease's, a lookup's, a token's "under a second") is on a monotonic clock:
 *   after the host's clock stepped back, one measured on it stayed young, its renewal never due and
 *   its 403s never bringing a login, until the clock caught up.
 *   A 403 gets one fresh login and one more try of the call only when the token itself is bad
 *   (revoked, expired early, unknown), never when the policy refuses the path: each AppRole login
 *   spends one of the secret_id's uses and leaves a token alive for its TTL, so refused traffic
 *   must not log in. Vault 1.16 and later say which: a bad token's 403 holds "invalid token" beside
 *   "permission denied", the policy's only "permission denied". A 403 without "invalid token" (the
 *   policy's, or any 403 of an older Vault) is checked with `auth/token/lookup-self`, which the
 *   `default` policy allows: the token answering is the policy's refusal (and the token counts as
 *   good for 30 s, so steady refused calls make one lookup per 30 s, not one each); refused with
 *   "invalid token", a bad token; refused with only "permission denied", an older Vault's bad token
 *   or a token without the `default` policy. A token that a 403 made us log in for, and that Vault
 *   has not yet taken, is not replaced that way again for 30 s (a standby behind, a balancer over
 *   two clusters would otherwise cost a login per call); once taken, a refusal is a revocation and
 *   gets its login. Not on a token under a second old (Vault has not caught up with it). The login namespace goes only into the `X-Vault-Namespace` header of the login
 *   and of its token's renewal and lookup (a namespaced token is not found elsewhere); secret calls
 *   carry none (vault.ts puts the secret namespace in the path). Concurrent callers share one
 *   login, renewal or lookup.
 *
 * Every request carries `X-Vault-Request: true`, as Vault's Go client sends it: a Vault Agent or
 * Proxy listener with `require_request_header` refuses one without it (412).
 *
 * Nothing here logs or reports a body: a message holds the operation, the HTTP status and error
 * names only (bodies may quote a value; a token is a credential).
 */
import type { Agent } from "undici";
import { request } from "undici";
import { SecretsError } from "../errors";
import type { Logger } from "../log";
import { type ClientCertificateAgent, type OutboundTls, outboundAgent } from "../outbound";
import { BackendUnavailable, classifyBackendError, isRetryable } from "../store-errors";
import { HttpAnswerError } from "./http-store";

/** How a store authenticates to Vault, in LiteLLM's order of preference. */
export type VaultAuth =
  | { method: "approle"; mountPath: string; roleId: string; secretId: string }
  | { method: "cert"; role: string | undefined }
  | { method: "token"; token: string };

export interface VaultClientOptions {
  /** `HCP_VAULT_ADDR` without its trailing slashes. */
  address: string;
  auth: VaultAuth;
  /** Sent as `X-Vault-Namespace` on logins and their tokens' renewals only. */
  loginNamespace?: string | undefined;
  /**
   * The agent with the client certificate and key (files read again when they change): presented
   * on every connection (cert login needs them). Closed with the client.
   */
  clientCertificate?: ClientCertificateAgent | undefined;
  /** The general outbound TLS settings (`ssl_verify`, `SSL_CERT_FILE`, `ssl_certificate`). */
  tls?: OutboundTls;
  log: Logger;
  /** Tuning, not settings: tests shorten them, users get the defaults. */
  tuning?: Partial<VaultTuning>;
}

export interface VaultTuning {
  /** Tries of one call, the first included. */
  maxTries: number;
  /** The first retry waits between half of this and all of it; each later one twice as long. */
  backoffBaseMs: number;
  /** The longest wait between tries; a longer `Retry-After` is reported, not waited for. */
  maxWaitMs: number;
  /** The longest one try may take, connection to the end of the body. */
  timeoutMs: number;
  /** In [0, 1): the random half of a backoff. */
  random: () => number;
  /** Waits between tries (a timer; tests record the waits instead). */
  sleep: (ms: number) => Promise<void>;
  /**
   * What lease ages are measured on, in milliseconds: a monotonic clock (`performance.now`; tests
   * move one by hand), as no wall clock step may make a token look younger or older than it is.
   */
  clock: () => number;
}

const DEFAULT_TUNING: VaultTuning = {
  maxTries: 3,
  backoffBaseMs: 100,
  maxWaitMs: 2_000,
  timeoutMs: 10_000,
  random: Math.random,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  clock: () => performance.now(),
};

/** A lease is renewed once this share of it has passed (Vault Agent's lifetime watcher: 2/3). */
const RENEW_AT = 2 / 3;
/** How long after a failed renewal the next is tried (calls meanwhile use the token as it is). */
const RENEW_RETRY_MS = 5_000;
/**
 * A client certificate's files are looked at this often besides each login and renewal: a token
 * of a long lease (Vault's default 768 h) is renewed after weeks, short-lived certificates daily.
 */
const CERTIFICATE_LOOK_MS = 60_000;
/** A 403 on a token younger than this is not the token's fault (Vault has not caught up): no fresh login. */
const FRESH_TOKEN_MS = 1_000;
/**
 * How long a token `lookup-self` found good stays good for 403s without "invalid token" (they are
 * the policy's): one lookup per this long under steady refused calls, not one per call. Also how
 * long a token logged in for after a 403 is not replaced that way again.
 */
const CHECKED_TOKEN_MS = 30_000;

export interface VaultCall {
  /** `LIST` goes out as Vault's own client sends it: `GET` with `?list=true`. */
  method: "GET" | "POST" | "DELETE" | "LIST";
  /** From `/v1/`, every segment already encoded. */
  path: string;
  body?: unknown;
}

export interface VaultAnswer {
  status: number;
  /** The parsed JSON body; undefined when empty or not JSON. */
  body: unknown;
  /** The body's `errors` strings (none when it has no such list). */
  errors: string[];
  headers: Record<string, string | string[] | undefined>;
}

/** A login's token and its times, all on `VaultTuning.clock` (monotonic). */
interface Lease {
  token: string;
  obtainedAt: number;
  /** 0: the token does not expire. */
  leaseMs: number;
  renewable: boolean;
  /** Logged in because a 403 refused the token before it (found bad, or unclear: see the header). */
  after403?: boolean;
  /** When `lookup-self` last found this token good. */
  checkedAt?: number;
  /** After a renewal failed: not tried again before then (each call would wait on it). */
  renewAfter?: number;
}

export class VaultClient {
  readonly #address: string;
  /** The shared agent for the TLS settings, when no client certificate of Vault's own is configured. */
  readonly #shared: Agent | undefined;
  readonly #tuning: VaultTuning;
  readonly #options: VaultClientOptions;
  #lease: Lease | undefined;
  /** When the client certificate's files were last looked at outside a login or renewal. */
  #certificateLookedAt = Number.NEGATIVE_INFINITY;
  /** The login or renewal in flight, shared by concurrent callers. */
  #refreshing: Promise<Lease> | undefined;
  /** The `lookup-self` in flight, shared by concurrent callers refused with the same token. */
  #checking: { token: string; verdict: Promise<TokenVerdict> } | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: VaultClientOptions) {
    this.#options = options;
    this.#address = options.address;
    this.#tuning = { ...DEFAULT_TUNING, ...options.tuning };
    // The one outbound client's agent for this TLS configuration (outbound.ts), or, with Vault's
    // own client certificate, the agent that follows its files.
    this.#shared = options.clientCertificate ? undefined : outboundAgent(options.tls);
  }

  /** The agent a call goes out on: after a certificate's renewal, the new one's. */
  get #agent(): Agent {
    return this.#options.clientCertificate?.agent ?? (this.#shared as Agent);
  }

  /**
   * One authenticated call, retried as the header says. Returns every answer that is not a
   * retryable failure (2xx, 4xx) for the store to read; throws typed errors for the rest.
   */
  async call(call: VaultCall, what: string): Promise<VaultAnswer> {
    const token = await this.#token(what);
    const answer = await this.#send(call, { "x-vault-token": token }, what);
    if (answer.status !== 403) {
      // Taken by Vault: a later 403 "invalid token" is a real revocation (token_num_uses spent, an
      // operator), which gets its login, not the hold after a 403-brought login.
      const lease = this.#lease;
      if (lease?.after403 && lease.token === token) lease.after403 = false;
      return answer;
    }
    const next = await this.#tokenAfter403(token, answer, what);
    return next === undefined ? answer : this.#send(call, { "x-vault-token": next }, what);
  }

  /** A non-2xx answer the caller cannot use, as the typed error `classifyBackendError` makes of it. */
  failure(answer: VaultAnswer, what: string): SecretsError {
    if (answer.status === STANDBY_BEHIND) {
      return new BackendUnavailable(`${what}: a Vault standby has not caught up with this token yet (HTTP 412)`);
    }
    if (answer.status === 400 && answer.errors.some((e) => KV_UPGRADING.test(e))) {
      return new BackendUnavailable(
        `${what}: Vault is upgrading the KV mount to version 2 (HTTP 400): it resumes shortly`,
      );
    }
    if (answer.status >= 300 && answer.status < 400) {
      return new BackendUnavailable(
        `${what}: Vault redirected to another node (HTTP ${answer.status}), which was not followed (no Location, a second redirect, or https to http)`,
      );
    }
    return classifyBackendError(new HttpAnswerError("VaultResponseError", answer), what);
  }

  /**
   * Stops using the pool: the shared one stays (it belongs to outbound.ts, shared by every caller
   * with the same TLS); the client certificate's agent, this client's own, is closed.
   */
  close(): Promise<void> {
    this.#closing ??= this.#options.clientCertificate?.close() ?? Promise.resolve();
    return this.#closing;
  }

  /** The token to send: the static one, or a login's, renewed or replaced when due. */
  async #token(what: string): Promise<string> {
    const { auth, clientCertificate } = this.#options;
    if (clientCertificate !== undefined && this.#tuning.clock() - this.#certificateLookedAt >= CERTIFICATE_LOOK_MS) {
      this.#certificateLookedAt = this.#tuning.clock();
      await clientCertificate.refresh();
    }
    if (auth.method === "token") return auth.token;
    const lease = this.#lease;
    if (lease && !this.#due(lease)) return lease.token;
    // A renewal or login that fails (Vault unreachable, throttling logins) leaves a token whose
    // lease has not ended good until it does: used, and tried again in a while.
    const renewing = lease?.renewable === true && !this.#expired(lease);
    const keep = (err: unknown): Lease => {
      if (lease === undefined || this.#expired(lease)) throw err;
      this.#options.log.warn(
        `vault ${renewing ? "token renewal" : "login"} failed; using the token until its lease ends`,
        {
          method: auth.method,
          code: err instanceof SecretsError ? err.code : "internal",
        },
      );
      return { ...lease, renewAfter: this.#tuning.clock() + RENEW_RETRY_MS };
    };
    const next = await this.#refresh(() =>
      (renewing && lease ? this.#renew(lease, what) : this.#login(what)).catch(keep),
    );
    return next.token;
  }

  #due(lease: Lease): boolean {
    const now = this.#tuning.clock();
    if (lease.renewAfter !== undefined && now < lease.renewAfter && !this.#expired(lease)) return false;
    return lease.leaseMs > 0 && now >= lease.obtainedAt + lease.leaseMs * RENEW_AT;
  }

  #expired(lease: Lease): boolean {
    return lease.leaseMs > 0 && this.#tuning.clock() >= lease.obtainedAt + lease.leaseMs;
  }

  /**
   * The token to try again with after a 403 on `token`, or undefined when the 403 stands: a static
   * token, a login's token made just now, or one that is good (the policy refuses, not the token).
   */
  async #tokenAfter403(token: string, answer: VaultAnswer, what: string): Promise<string | undefined> {
    const { auth, log } = this.#options;
    const now = this.#tuning.clock;
    if (auth.method === "token") return undefined;
    const lease = this.#lease;
    if (lease !== undefined && lease.token !== token) return lease.token; // another call logged in meanwhile
    if (lease !== undefined && now() - lease.obtainedAt < FRESH_TOKEN_MS) return undefined;
    const verdict = saysInvalidToken(answer) ? "bad" : await this.#check(lease, token, what);
    if (verdict === "good") return undefined;
    // A token a 403 brought refused again within 30 s (a standby behind, a balancer over two
    // clusters): the 403 stands, rather than a login (a secret_id use, a live token) per call.
    if (lease?.after403 && now() - lease.obtainedAt < CHECKED_TOKEN_MS) return undefined;
    log.info("vault token refused: logging in again", { method: auth.method });
    return (await this.#refresh(async () => ({ ...(await this.#login(what)), after403: true }))).token;
  }

  /**
   * Whether the token a 403 without "invalid token" met is good (the policy refused), by
   * `lookup-self` in the login namespace; a token found good is not asked about again for 30 s.
   * Vault not answering leaves the 403 standing ("good"): a login would meet the same Vault.
   */
  #check(lease: Lease | undefined, token: string, what: string): Promise<TokenVerdict> {
    const { loginNamespace, log } = this.#options;
    const now = this.#tuning.clock;
    if (lease?.checkedAt !== undefined && now() - lease.checkedAt < CHECKED_TOKEN_MS) return Promise.resolve("good");
    if (this.#checking?.token === token) return this.#checking.verdict;
    const verdict = this.#send(
      { method: "GET", path: "auth/token/lookup-self" },
      { "x-vault-token": token, ...(loginNamespace !== undefined && { "x-vault-namespace": loginNamespace }) },
      `${what} (token lookup)`,
    )
      .then((answer): TokenVerdict => {
        if (answer.status === 200) {
          if (lease !== undefined) lease.checkedAt = now();
          return "good";
        }
        if (answer.status !== 403) return "good";
        return saysInvalidToken(answer) ? "bad" : "unclear";
      })
      .catch((err: unknown): TokenVerdict => {
        log.debug("vault token lookup failed", { code: err instanceof SecretsError ? err.code : "internal" });
        return "good";
      })
      .finally(() => {
        if (this.#checking?.token === token) this.#checking = undefined;
      });
    this.#checking = { token, verdict };
    return verdict;
  }

  /** Runs one login or renewal at a time; callers arriving meanwhile share it. */
  #refresh(start: () => Promise<Lease>): Promise<Lease> {
    this.#refreshing ??= start()
      .then((lease) => {
        this.#lease = lease;
        return lease;
      })
      .finally(() => {
        this.#refreshing = undefined;
      });
    return this.#refreshing;
  }

  async #login(what: string): Promise<Lease> {
    const { auth, loginNamespace, log } = this.#options;
    if (auth.method === "token") throw new Error("a static token has no login");
    const call: VaultCall =
      auth.method === "approle"
        ? {
            method: "POST",
            path: `auth/${auth.mountPath.split("/").map(encodeURIComponent).join("/")}/login`,
            body: { role_id: auth.roleId, secret_id: auth.secretId },
          }
        : { method: "POST", path: "auth/cert/login", body: auth.role === undefined ? {} : { name: auth.role } };
    const headers: Record<string, string> = loginNamespace === undefined ? {} : { "x-vault-namespace": loginNamespace };
    // A client certificate renewed on disk since the last login is the one this login presents.
    await this.#options.clientCertificate?.refresh();
    const answer = await this.#send(call, headers, `${what} (${auth.method} login)`);
    const lease = leaseOf(answer, this.#tuning.clock());
    if (answer.status !== 200 || lease === undefined) {
      // A redirect not followed, or a standby behind: Vault's state, read as any call's is.
      const redirected = answer.status >= 300 && answer.status < 400;
      if (redirected || answer.status === STANDBY_BEHIND) throw this.failure(answer, `${what} (${auth.method} login)`);
      // Vault refuses bad credentials with 400 ("invalid role or secret ID") as well as 403.
      throw classifyBackendError(new HttpAnswerError("AuthenticationError", answer), `${what} (${auth.method} login)`);
    }
    log.info("vault login", { method: auth.method, leaseSeconds: lease.leaseMs / 1000 });
    return lease;
  }

  /**
   * `renew-self`; a fresh login when Vault refuses it (403: revoked, expired) or grants less than half the lease we had
   * (the token is near its max TTL: renewing again would only shorten it further).
   */
  async #renew(lease: Lease, what: string): Promise<Lease> {
    // Vault down: the error stands (a login would fail alike); the next call tries again.
    // Asked where the token was issued: a namespaced token is not found outside its namespace.
    const { loginNamespace } = this.#options;
    // A client certificate renewed on disk goes out from here too: a listener that requires one
    // refuses a new connection with an expired one.
    await this.#options.clientCertificate?.refresh();
    let answer: VaultAnswer;
    try {
      answer = await this.#send(
        { method: "POST", path: "auth/token/renew-self", body: {} },
        { "x-vault-token": lease.token, ...(loginNamespace !== undefined && { "x-vault-namespace": loginNamespace }) },
        `${what} (token renewal)`,
      );
    } catch (err) {
      // Cert auth's renewal checks the certificate and policies again and refuses a change with a
      // 500 ("failed to renew entry: ..."): a fresh login, which a certificate costs nothing. Any
      // other failure (Vault down: 503, no answer) stands, as above.
      const answered = (err as { cause?: unknown }).cause;
      if (this.#options.auth.method === "cert" && answered instanceof HttpAnswerError && answered.status === 500) {
        return this.#login(what);
      }
      throw err;
    }
    const renewed = leaseOf(answer, this.#tuning.clock());
    if (answer.status !== 200 || renewed === undefined || renewed.leaseMs <= 0) return this.#login(what);
    if (renewed.leaseMs < lease.leaseMs / 2) renewed.renewable = false;
    return renewed;
  }

  /** One call with retries; every failure typed through `classifyBackendError`. */
  async #send(call: VaultCall, headers: Record<string, string>, what: string): Promise<VaultAnswer> {
    const { maxTries } = this.#tuning;
    for (let attempt = 1; ; attempt++) {
      let failure: Error;
      let retryAfterMs: number | undefined;
      try {
        const answer = await this.#once(call, headers);
        if (!isRetryableStatus(answer.status)) return answer;
        failure = this.failure(answer, what);
        retryAfterMs = retryAfterOf(answer.headers["retry-after"]);
      } catch (err) {
        failure = classifyBackendError(err, what);
      }
      if (!isRetryable(failure) || attempt >= maxTries) throw failure;
      const wait = Math.max(this.#backoff(attempt), retryAfterMs ?? 0);
      if (wait > this.#tuning.maxWaitMs) throw failure;
      this.#options.log.debug("vault call retried", { op: what, attempt, waitMs: Math.round(wait) });
      await this.#tuning.sleep(wait);
    }
  }

  /** The wait before try `attempt + 1`: half of base x 2^(attempt-1) fixed, the other half random. */
  #backoff(attempt: number): number {
    const step = this.#tuning.backoffBaseMs * 2 ** (attempt - 1);
    return step / 2 + (step / 2) * this.#tuning.random();
  }

  async #once(call: VaultCall, headers: Record<string, string>): Promise<VaultAnswer> {
    const hasBody = call.body !== undefined;
    const list = call.method === "LIST";
    const url = `${this.#address}/v1/${call.path}${list ? "?list=true" : ""}`;
    const init: Parameters<typeof request>[1] = {
      dispatcher: this.#agent,
      method: list ? "GET" : call.method,
      // One deadline for the whole try (undici's own header and body timeouts tick in half seconds).
      signal: AbortSignal.timeout(this.#tuning.timeoutMs),
      // `X-Vault-Request: true` on every request, as Vault's own clients send it: a Vault Agent or
      // Proxy listener with `require_request_header` answers 412 without it (its SSRF guard).
      headers: { ...headers, "x-vault-request": "true", ...(hasBody && { "content-type": "application/json" }) },
      ...(hasBody && { body: JSON.stringify(call.body) }),
    };
    let response = await request(url, init);
    // A standby that cannot forward redirects to the active node: followed once, as Vault's client does.
    const target = REDIRECTS.has(response.statusCode) ? redirectTarget(url, response.headers.location) : undefined;
    if (target !== undefined) {
      await response.body.dump();
      response = await request(target, init);
    }
    const body = parseJson(await response.body.text());
    return { status: response.statusCode, body, errors: errorsOf(body), headers: response.headers };
  }
}

/**
 * What a 403 (or a `lookup-self`'s) says of the token: "bad" (revoked, expired, unknown), "good"
 * (the policy refused), or "unclear" (only "permission denied": see the header).
 */
type TokenVerdict = "good" | "bad" | "unclear";

/**
 * Vault 1.16+ answers a revoked, expired or unknown token with 403 `2 errors occurred: permission
 * denied, invalid token` (hashicorp/vault#25953); a policy's refusal with `permission denied` alone.
 */
function saysInvalidToken(answer: VaultAnswer): boolean {
  return answer.errors.some((e) => /\binvalid token\b/i.test(e));
}

/**
 * KV's answers while a mount is upgraded to version 2 (its `upgradeCheck`: "Upgrading from
 * non-versioned to versioned data. This backend will be unavailable for a brief period ...", and
 * on a replication secondary "Waiting for the primary to upgrade ..."), both 400.
 */
const KV_UPGRADING = /\bUpgrading from non-versioned to versioned data\b|\bWaiting for the primary to upgrade\b/i;

/** Statuses of a redirect to another node (Vault's standby answers 307 with the active node's `Location`). */
const REDIRECTS: ReadonlySet<number> = new Set([301, 302, 307, 308]);

/**
 * Where a redirect goes, as Vault's own client follows one: the `Location` resolved against the
 * request's URL, never from https to http; undefined when it is none of those.
 */
function redirectTarget(from: string, location: unknown): string | undefined {
  if (typeof location !== "string" || location === "") return undefined;
  let target: URL;
  try {
    target = new URL(location, from);
  } catch {
    return undefined;
  }
  const https = new URL(from).protocol === "https:";
  if (target.protocol !== "https:" && (https || target.protocol !== "http:")) return undefined;
  return target.href;
}

/**
 * Vault Enterprise's answer (1.10+, server-side consistent tokens) from a performance standby that
 * has not yet replicated the state a token was issued in (`required index state not present`),
 * typically just after a login behind a load balancer. It clears within moments: Vault's own Go
 * client retries it, as its consistency docs tell clients to.
 */
const STANDBY_BEHIND = 412;

/** The answers worth another try: Vault sealed or standby (503), a standby behind (412), throttled (429), or failing (5xx). */
function isRetryableStatus(status: number): boolean {
  return status === 408 || status === STANDBY_BEHIND || status === 429 || status >= 500;
}

/** The `errors` strings of a Vault answer's body (none when it has no such list). */
function errorsOf(body: unknown): string[] {
  const errors = (body as { errors?: unknown } | undefined)?.errors;
  return Array.isArray(errors) ? errors.filter((e): e is string => typeof e === "string") : [];
}

function parseJson(text: string): unknown {
  if (text === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** `Retry-After` in milliseconds: seconds or an HTTP date. */
function retryAfterOf(header: string | string[] | undefined): number | undefined {
  const raw = Array.isArray(header) ? header[0] : header;
  if (raw === undefined || raw.trim() === "") return undefined;
  if (/^\d+$/.test(raw.trim())) return Number(raw.trim()) * 1000;
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** The lease of a login or renewal answer: `auth.client_token`, `lease_duration`, `renewable`. */
function leaseOf(answer: VaultAnswer, now: number): Lease | undefined {
  const auth = (answer.body as { auth?: unknown } | undefined)?.auth as
    | { client_token?: unknown; lease_duration?: unknown; renewable?: unknown }
    | null
    | undefined;
  if (!auth || typeof auth.client_token !== "string" || auth.client_token === "") return undefined;
  const seconds = typeof auth.lease_duration === "number" && auth.lease_duration > 0 ? auth.lease_duration : 0;
  return { token: auth.client_token, obtainedAt: now, leaseMs: seconds * 1000, renewable: auth.renewable === true };
}
