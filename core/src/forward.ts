/**
 * Forwarding to LLM APIs (SPEC section 8): `ALL /v1/forward/{model_name}/{path}` sends the request
 * to the model's `api_base` with its `api_key` in the provider's header, so a gateway never holds
 * the key. Loaded by the route when first used (it brings undici, through outbound.ts).
 *
 * - The rest of the path goes right after the `api_base` as it came, query included:
 *   `/v1/forward/m/v1/chat/completions?x=1` is `{api_base}/v1/chat/completions?x=1`, and
 *   `/v1/forward/m?api-version=...` is `{api_base}?api-version=...` (a whole deployment URL); an
 *   `api_base` with a query of its own keeps it, the caller's joined after it with `&`.
 * - The model is the first `model_list` entry with that `model_name`. Its `api_key` is a literal
 *   or an `os.environ/NAME` ref read as `GET /v1/secrets/{name}` reads it, at request time (through
 *   the cache: a key stored after start is used; never the environment: SPEC section 4). Its
 *   `api_base`, no secret, resolves as the config's refs do at start: the store, else the
 *   environment (where LiteLLM configs keep it); the store only when the key is read from it.
 * - The key goes in `Authorization: Bearer` by default, `api-key` for `azure/` models, `x-api-key`
 *   for `anthropic/` ones; `litellm_params.auth_header` names another header. Whatever auth the
 *   caller sent (our master key included) is not passed on, nor are hop-by-hop headers, nor what
 *   a platform in front of us adds (`x-amz-*`, `x-goog-*`, `x-serverless-*`, Azure's principal),
 *   nor the headers the clouds' metadata services ask for.
 * - Never to a metadata service: an `api_base` (it may be a ref a store write changes) at a
 *   link-local address is refused, as a literal or as a name resolving there (outbound.ts); nor to
 *   Lambda's runtime API (`AWS_LAMBDA_RUNTIME_API`).
 * - The request body is read whole (at most 1 MiB, as every body), so that it can be sent again;
 *   the answer streams back as it arrives (SSE event by event), status and headers as the upstream
 *   gave them (error bodies too), hop-by-hop headers dropped, `Cache-Control: no-store` added,
 *   and `Content-Type: application/octet-stream` when a body came without a type. `Content-Length`
 *   is the runtime's, from the body, but for a HEAD or a 304 (no body): the upstream's.
 *   A redirect is not passed on (`502`): a client following it would take our master key, in
 *   `x-litellm-api-key`, to wherever the upstream pointed.
 * - An upstream 401 reads the key from the store again, past the cache, and tries once more with
 *   it, but only when it changed: the same key refused again gains nothing, and the upstream's 401
 *   is answered as it came. The read past the cache happens at most once per name every 30 s
 *   (`REREAD_INTERVAL_MS`), the 401s meanwhile sharing it and then using the cached value: while
 *   a key is revoked at the provider before the store has the new one (a rotation's window), every
 *   request is refused, and one store read each would spend a rate-limited store's quota (Google:
 *   600 reads a minute per project) for every other name too.
 * - One deadline for the whole exchange, every try and the answer's body: 600 s (SPEC section 8).
 *   The agent's own timeouts bound each wait only (for the headers, between two chunks), so an
 *   upstream trickling a chunk now and then would hold the call for ever. Past it before the
 *   headers, `504 upstream_timeout`; after them, the answer is cut as an upstream's break is.
 * - A request of an idempotent method (GET, HEAD, PUT, DELETE, OPTIONS) whose kept-alive connection
 *   the upstream closed as the request went out (one that had carried an answer before) is sent
 *   once more, within the same deadline; a POST or PATCH never is, nor a request whose fresh
 *   connection was cut (the upstream may have acted on it): `502`.
 * - A key that an HTTP header cannot carry (a control character: a stored key ending in a newline
 *   is the usual one) is `500 store_corrupt` saying so (a literal of the config: `500 internal`,
 *   the reason logged), and nothing is sent.
 * - No such model: `404 not_found`. The upstream unreachable: `502 upstream_unavailable`; too slow:
 *   `504 upstream_timeout`. No message or log line holds the key.
 */

import { lookup } from "node:dns/promises";
import type { Readable } from "node:stream";
import { request as send } from "undici";
import type { RawRequest } from "./app";
import { SecretsError } from "./errors";
import { forwardTargetOf } from "./http/forward-routes";
import { NULL_BODY_STATUSES, readLimitedBody } from "./http/router";
import type { Logger } from "./log";
import { isLinkLocal, isLoopback, OUTBOUND_LIMITS, type OutboundTls, outboundAgent } from "./outbound";
import { refName } from "./refs";
import type { SecretManager } from "./secret-manager";
import { proxyRefusal } from "./store-errors";

/** A `model_list` entry as settings parsed it. */
export interface ForwardModel {
  model_name: string;
  litellm_params: {
    model: string;
    api_base?: string | null;
    api_key?: string | null;
    auth_header?: unknown;
    /** LiteLLM's provider override (`azure`, `anthropic`, ...): which header the key goes in. */
    custom_llm_provider?: unknown;
  };
}

export interface ForwardDeps {
  manager: SecretManager;
  models: readonly ForwardModel[];
  outbound: OutboundTls;
  maxBodyBytes: number;
  /**
   * Tuning, not a setting: the whole exchange's deadline, and the longest wait for the headers or
   * between two chunks (default: the client's 600 s).
   */
  timeoutMs?: number;
  /** Lambda's runtime API (`AWS_LAMBDA_RUNTIME_API`, as the settings captured it): never a target. */
  lambdaRuntimeApi?: string;
  /** Where an answer the upstream cut mid-stream is logged. */
  log?: Logger;
  /** Tuning, not a setting: the monotonic clock (ms) that spaces the re-reads after a 401. */
  now?: () => number;
}

/** A name's key is read past the cache after an upstream 401 at most once in this long. */
export const REREAD_INTERVAL_MS = 30_000;

/** The last read past the cache of a name after a 401: when it started, and when it ended (not its value). */
interface Reread {
  at: number;
  done: Promise<void>;
}

/** The re-reads after a 401, per manager (one per app) and name: a few names, those of model_list. */
const rereads = new WeakMap<SecretManager, Map<string, Reread>>();

/** Connection-level headers (RFC 9110 section 7.6.1) and the ones the client recomputes. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
  // `100-continue` is between the client and us (node answers it); undici refuses to send it.
  "expect",
]);

/** Credentials a caller may have sent: ours, or a provider's; none is passed on. */
const CALLER_AUTH = new Set([
  "authorization",
  "x-litellm-api-key",
  "api-key",
  "x-api-key",
  "x-functions-key",
  "cookie",
]);

/**
 * What a platform in front of the function adds or reads, credentials among them (a Cloud Run ID
 * token, an AWS session token, an IAP assertion, Azure App Service's principal and tokens; and the
 * provider keys of Google's APIs): replayable against us or meaningless upstream, never passed on.
 */
const PLATFORM_PREFIXES = [
  "x-serverless-",
  "x-amz-",
  "x-amzn-oidc-",
  "x-goog-",
  "x-ms-client-principal",
  "x-ms-token-",
  "x-zumo-", // App Service authentication's session token
  // What the metadata services ask for (GCP, Azure, AWS IMDSv2): never sent to an API.
  "metadata",
  "x-google-metadata-request",
  "x-aws-ec2-metadata-",
];

/**
 * The headers passed upstream: not hop-by-hop (the fixed ones, and whatever `Connection` names,
 * RFC 9110 section 7.6.1), not the caller's credentials, not a platform's.
 */
function passedOnFilter(request: Request): (name: string) => boolean {
  const named = namedByConnection(request.headers.get("connection"));
  return (name) =>
    !HOP_BY_HOP.has(name) &&
    !named.has(name) &&
    !CALLER_AUTH.has(name) &&
    !PLATFORM_PREFIXES.some((p) => name.startsWith(p));
}

/** The header names a `Connection` header lists: hop-by-hop too (RFC 9110 section 7.6.1). */
function namedByConnection(connection: string | string[] | null | undefined): Set<string> {
  const joined = Array.isArray(connection) ? connection.join(",") : (connection ?? "");
  return new Set(
    joined
      .split(",")
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** The methods a request may be sent again with when it got no answer (RFC 9110 section 9.2.2). */
const IDEMPOTENT = new Set(["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]);

/**
 * Whether undici's failure is a kept-alive connection closing under a request before its answer:
 * its `SocketError` ("other side closed") on a connection that had carried an answer before (it
 * read bytes). A fresh connection cut the same way may have delivered the whole request to an
 * upstream that acted on it and then failed: sent again, a DELETE done would answer 404, so that
 * one (and a bare reset, which says neither) is `502` as before.
 */
function closedWhileIdle(err: unknown): boolean {
  const e = err as { code?: unknown; socket?: { bytesRead?: unknown } } | null;
  return e?.code === "UND_ERR_SOCKET" && typeof e.socket?.bytesRead === "number" && e.socket.bytesRead > 0;
}

/**
 * A key no header can carry: the store's (`store_corrupt`: store it again), or a literal of the
 * config (`internal`, the message logged: the config is to fix). Never the key itself.
 */
function unsendableKey(modelName: string, fromStore: boolean): SecretsError {
  const what =
    "holds a character an HTTP header cannot carry (a control character such as CR, LF or NUL, or one past U+00FF)";
  return fromStore
    ? new SecretsError("store_corrupt", `the stored key of model ${modelName} ${what}: store it again without it`)
    : new SecretsError("internal", `the api_key of model ${modelName} in the config ${what}: fix the config`);
}

/** What undici refuses in a header's value (its `isValidHeaderValue`): a control character but tab, or past U+00FF. */
const NOT_IN_A_HEADER = /[^\t\x20-\x7e\x80-\xff]/;

/** Shorter keys are not looked for in an answer's headers: any header might hold them by chance. */
const MIN_ECHOED_KEY = 8;

export async function forward(request: Request, raw: RawRequest, deps: ForwardDeps): Promise<Response> {
  const { modelName, rest } = forwardTargetOf(raw.path);
  // Of several entries with the name (LiteLLM spreads calls over them; this does not), the first
  // that has somewhere to send to.
  const named = deps.models.filter((m) => m.model_name === modelName);
  const model = named.find((m) => m.litellm_params.api_base) ?? named[0];
  if (!model) throw new SecretsError("not_found", `no model named ${modelName.slice(0, 64)} in model_list`);
  const params = model.litellm_params;
  // The api_base follows the key: from the store only when the key is read from it too. A caller
  // who may write the store could otherwise send a key it cannot read (a literal of the config) to
  // its own host; a key it can read anyway (GET /v1/secrets) gains it nothing.
  // No key at all: nothing secret follows the api_base, so the store may decide it.
  const storeDecides = params.api_key ? refName(params.api_key) !== undefined : true;
  const base = params.api_base ? await baseOf(params.api_base, deps.manager, storeDecides, modelName) : undefined;
  // The deployment's config, not the caller's request, lacks it (LiteLLM's provider defaults are
  // not known here): as a ref held nowhere, 404 naming what is missing.
  if (!base) throw new SecretsError("not_found", `model ${modelName} has no api_base to forward to`);
  const url = targetUrl(base, rest);
  const target = urlOf(url); // undefined: no URL, which undici then refuses
  if (target && isLinkLocal(target.hostname)) {
    throw new SecretsError("upstream_unavailable", `the api_base of model ${modelName} is a link-local address`);
  }
  if (target && deps.lambdaRuntimeApi && (await isRuntimeApi(target, deps.lambdaRuntimeApi))) {
    throw new SecretsError("upstream_unavailable", `the api_base of model ${modelName} is the platform's runtime API`);
  }

  const body = await bodyOf(request, deps.maxBodyBytes);
  const headers: Record<string, string> = {};
  const passedOn = passedOnFilter(request);
  request.headers.forEach((value, name) => {
    if (passedOn(name)) headers[name] = value;
  });
  const header = authHeaderOf(params);
  const dispatcher = outboundAgent(deps.outbound);
  // The caller gone (its connection closed), the upstream call stops too: no completion billed for
  // nobody. The exchange's deadline stops it as well.
  const exchange = exchangeSignal(request.signal, deps.timeoutMs ?? OUTBOUND_LIMITS.exchangeTimeoutMs);

  let sent: string | undefined; // the key the answer was made with, as it went (the header's value is trimmed on the wire)
  const attempt = async (key: string | undefined) => {
    const withKey = { ...headers };
    sent = key?.replace(/^[ \t]+|[ \t]+$/g, "");
    if (key !== undefined) {
      // undici would refuse it before connecting, which read as an upstream that cannot be reached.
      if (NOT_IN_A_HEADER.test(key)) throw unsendableKey(modelName, refName(params.api_key ?? "") !== undefined);
      withKey[header] = header === "authorization" ? `Bearer ${key}` : key;
    }
    const timeouts =
      deps.timeoutMs === undefined ? {} : { headersTimeout: deps.timeoutMs, bodyTimeout: deps.timeoutMs };
    const signal = exchange.signal;
    const sendOnce = () =>
      send(url, { method: request.method as "GET", headers: withKey, body, dispatcher, signal, ...timeouts });
    try {
      return await sendOnce();
    } catch (err) {
      // A kept-alive connection the upstream closed as the request went out on it: nothing was
      // answered, so an idempotent request goes once more (on another connection; the closed one
      // is gone). undici leaves such retries to its callers.
      if (!IDEMPOTENT.has(request.method) || !closedWhileIdle(err) || signal.aborted) throw err;
      return sendOnce();
    }
  };

  let answer: Awaited<ReturnType<typeof send>>;
  try {
    const key = params.api_key ? await apiKeyOf(params.api_key, deps.manager) : undefined;
    answer = await attempt(key);
    const name = params.api_key ? refName(params.api_key) : undefined;
    if (answer.statusCode === 401 && name !== undefined) {
      // The key may have been rotated in the store: read it again, and try once more if it changed.
      // The store unreadable now (down, the key gone), the upstream's 401 is the answer, its body
      // still to be read or dropped by the caller, rather than the store's error.
      const again = await rereadKey(name, deps).catch((err: unknown) => {
        deps.log?.warn("the key could not be read again after the upstream's 401: its 401 is the answer", {
          model: modelName,
          code: err instanceof SecretsError ? err.code : "internal",
        });
        return key;
      });
      if (again !== key) {
        await answer.body.dump();
        answer = await attempt(again);
      }
    }
  } catch (err) {
    exchange.end();
    throw upstreamError(err, modelName);
  }
  // The body closes however the exchange ends (read, dumped, cancelled, cut): its deadline goes too.
  answer.body.once("close", exchange.end);

  if (REDIRECTS.has(answer.statusCode) && answer.headers.location !== undefined) {
    await answer.body.dump();
    throw new SecretsError(
      "upstream_unavailable",
      `the API of model ${modelName} answered a redirect (${answer.statusCode}), which is not passed on`,
    );
  }
  const out = new Headers();
  const hopNamed = namedByConnection(answer.headers.connection);
  for (const [name, value] of Object.entries(answer.headers)) {
    if (HOP_BY_HOP.has(name) || hopNamed.has(name) || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      // An upstream that echoes the request's headers (a debug endpoint, a proxy) would hand the
      // caller the key: a literal one of the config is never the caller's to read.
      if (sent !== undefined && sent.length >= MIN_ECHOED_KEY && v.includes(sent)) continue;
      out.append(name, v);
    }
  }
  out.set("cache-control", "no-store");
  // The statuses a Response cannot carry a body with (it throws): 205 too.
  const empty = NULL_BODY_STATUSES.has(answer.statusCode) || request.method === "HEAD";
  if (empty) {
    answer.body.resume();
    // No body to count it from: the size the upstream gave is the answer's (a HEAD's is its GET's;
    // a 304's, of what the client holds), as RFC 9110 section 8.6 lets it. Not on a 204 (it must not).
    const length = answer.headers["content-length"];
    const sized = answer.statusCode !== 204 && (request.method === "HEAD" || answer.statusCode === 304);
    if (sized && typeof length === "string" && !hopNamed.has("content-length")) out.set("content-length", length);
    return new Response(null, { status: answer.statusCode, headers: out });
  }
  // A body without a type is bytes (RFC 9110 section 8.3: the recipient may take it as
  // application/octet-stream), said so for every runtime: @hono/node-server would label it
  // `text/plain; charset=UTF-8` on serve and Google, where Lambda and Azure send no type, and
  // hono/aws-lambda would hand it to Lambda as text (not base64), its bytes decoded as UTF-8.
  if (!out.has("content-type")) out.set("content-type", "application/octet-stream");
  return new Response(answerBody(answer.body, raw, deps.log, modelName), { status: answer.statusCode, headers: out });
}

/**
 * The upstream's body as the answer's. When the upstream's connection breaks mid-answer, the
 * client's is cut where the runtime can (`raw.abort`), so the client sees an unfinished answer,
 * and one line is logged. Handed the error instead, @hono/node-server prints its stack on stderr
 * and writes `Error: …` into the answer. A runtime that cannot cut the connection (it buffers the
 * answer: Lambda, Azure) gets the error, as before.
 */
function answerBody(
  body: Readable,
  raw: RawRequest,
  log: Logger | undefined,
  model: string,
): ReadableStream<Uint8Array> {
  const chunks = body[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await chunks.next();
          if (done) controller.close();
          else controller.enqueue(value as Uint8Array);
        } catch (err) {
          // The client gone first (its abort stopped the upstream call) is not the upstream's doing.
          if (raw.clientClosed?.() !== true) {
            log?.warn("upstream answer cut", { model, code: failureLabel(err) });
          }
          // Where nothing can cut the connection (an answer sent whole once read: Lambda, Azure), the
          // read fails with the API's error, which the adapter answers instead.
          if (!raw.abort) return controller.error(answerCut(err, model));
          raw.abort();
          controller.close();
        }
      },
      cancel() {
        body.destroy();
      },
    },
    { highWaterMark: 0 },
  );
}

/** The API's error for an upstream's answer that stopped before its end: past the deadline, or broken off. */
function answerCut(err: unknown, model: string): SecretsError {
  return upstreamFailure(
    err,
    `the answer of model ${model} did not end in time`,
    `the answer of model ${model} broke off before its end`,
  );
}

/** The reason an exchange past its deadline is aborted with: its code says TIMEOUT (504), as undici's do. */
const EXCHANGE_TIMEOUT = "UPSTREAM_EXCHANGE_TIMEOUT";

/**
 * The signal of one exchange: aborted when the caller's request is (the caller gone) or once `ms`
 * have passed. `end` clears the timer and the listener when the exchange is over, so nothing is
 * left for 600 s per request; the timer never keeps the process alive meanwhile (unref).
 */
function exchangeSignal(caller: AbortSignal, ms: number): { signal: AbortSignal; end: () => void } {
  const controller = new AbortController();
  const callerGone = () => controller.abort(caller.reason);
  const timer = setTimeout(() => {
    controller.abort(Object.assign(new Error("the exchange's deadline passed"), { code: EXCHANGE_TIMEOUT }));
  }, ms);
  timer.unref();
  if (caller.aborted) callerGone();
  else caller.addEventListener("abort", callerGone, { once: true });
  return {
    signal: controller.signal,
    end: () => {
      clearTimeout(timer);
      caller.removeEventListener("abort", callerGone);
    },
  };
}

/**
 * Whether `target` reaches Lambda's runtime API (`api`, on loopback): from there a
 * request could take or answer another invocation. Any spelling of this machine counts (`0.0.0.0`,
 * `[::ffff:7f00:1]`, a name resolving to 127.0.0.1) on the API's port. Other loopback ports stay
 * open: a local Ollama, a Lambda extension's proxy.
 */
async function isRuntimeApi(target: URL, api: string): Promise<boolean> {
  const runtime = urlOf(`http://${api}`);
  const port = (u: URL) => u.port || (u.protocol === "https:" ? "443" : "80");
  if (!runtime || port(target) !== port(runtime)) return false;
  if (isLoopback(target.hostname)) return true;
  const addresses = await lookup(target.hostname, { all: true }).catch(() => []);
  return addresses.some((a) => isLoopback(a.address));
}

/**
 * The api_base with the rest of the forward path after it: the rest's path after the base's path,
 * and the two queries joined (an Azure deployment URL may carry `?api-version=` itself).
 */
function targetUrl(base: string, rest: string): string {
  const [basePath, baseQuery] = cutQuery(base);
  const [restPath, restQuery] = cutQuery(rest.split("#", 1)[0] ?? "");
  const query = [baseQuery, restQuery].filter((q) => q !== "").join("&");
  return `${basePath.replace(/\/+$/, "")}${restPath}${query === "" ? "" : `?${query}`}`;
}

function cutQuery(target: string): [string, string] {
  const at = target.indexOf("?");
  return at === -1 ? [target, ""] : [target.slice(0, at), target.slice(at + 1)];
}

function urlOf(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/**
 * `api_base`: a literal, or a ref resolved as the config's refs are at start (the store, else the
 * environment), or from the environment only when the store may not decide it (`store` false).
 */
async function baseOf(value: string, manager: SecretManager, store: boolean, model: string): Promise<string> {
  const name = refName(value);
  if (name === undefined) return value;
  try {
    return await manager.resolveRef(name, { store });
  } catch (err) {
    if (store || !(err instanceof SecretsError) || err.code !== "not_found") throw err;
    throw new SecretsError(
      "not_found",
      `model ${model} has a literal api_key: its api_base ${name} is read from the environment only (a store write must not decide where that key goes)`,
    );
  }
}

/**
 * `api_key`: a literal, or a ref read as the API reads a secret (through the cache). Never from the
 * environment: a caller who may write the store could point `api_base` at its own host and be sent
 * a key the API never serves.
 */
async function apiKeyOf(value: string, manager: SecretManager): Promise<string> {
  const name = refName(value);
  return name === undefined ? value : (await manager.get(name)).value;
}

const NOTHING = (): void => {};

/**
 * The key of `name` after an upstream refused it: read past the cache when no such read of the name
 * started in the last `REREAD_INTERVAL_MS`; otherwise that read is waited for (if still under way)
 * and the cache answers, which it refreshed. A failed read past the cache fails this request as
 * the key's read does; the others of the interval get the cache's answer.
 */
async function rereadKey(name: string, deps: ForwardDeps): Promise<string> {
  const now = deps.now ? deps.now() : performance.now();
  let byName = rereads.get(deps.manager);
  if (!byName) {
    byName = new Map();
    rereads.set(deps.manager, byName);
  }
  const last = byName.get(name);
  if (last !== undefined && now - last.at < REREAD_INTERVAL_MS) {
    await last.done;
    return (await deps.manager.get(name)).value;
  }
  const read = deps.manager.get(name, { refresh: true });
  // Kept for the interval without the key: the read's result holds it in plaintext, and the cache
  // (which the others read) keeps it sealed. Never rejects: this caller handles the read's failure.
  byName.set(name, { at: now, done: read.then(NOTHING, NOTHING) });
  return (await read).value;
}

function authHeaderOf(params: ForwardModel["litellm_params"]): string {
  if (typeof params.auth_header === "string" && params.auth_header.trim() !== "") {
    return params.auth_header.trim().toLowerCase();
  }
  // The provider: litellm_params.custom_llm_provider, else the model's prefix (`azure/gpt-4o`).
  const provider =
    typeof params.custom_llm_provider === "string" && params.custom_llm_provider.trim() !== ""
      ? params.custom_llm_provider.trim().toLowerCase()
      : params.model.split("/", 1)[0];
  if (provider === "azure") return "api-key";
  if (provider === "anthropic") return "x-api-key";
  return "authorization";
}

async function bodyOf(request: Request, max: number): Promise<Uint8Array | undefined> {
  if (request.method === "GET" || request.method === "HEAD") return undefined;
  const bytes = await readLimitedBody(request, request.headers.get("content-length"), max);
  return bytes.byteLength > 0 ? bytes : undefined;
}

/** undici's failures before an answer as the two upstream codes: too slow, or not reachable. */
function upstreamError(err: unknown, modelName: string): SecretsError {
  if (err instanceof SecretsError) return err;
  const proxied = proxyRefusal(err);
  if (proxied !== undefined) {
    const why = proxied === 407 ? ": check the credentials in HTTPS_PROXY, HTTP_PROXY or ALL_PROXY" : "";
    return new SecretsError(
      "upstream_unavailable",
      `the proxy refused the way to the API of model ${modelName} (HTTP ${proxied}${why})`,
    );
  }
  return upstreamFailure(
    err,
    `the API of model ${modelName} did not answer in time`,
    `the API of model ${modelName} cannot be reached`,
  );
}

/** An upstream failure as `504 upstream_timeout` (a code saying TIMEOUT) or `502 upstream_unavailable`, labelled. */
function upstreamFailure(err: unknown, timedOut: string, unavailable: string): SecretsError {
  const label = failureLabel(err);
  return /TIMEOUT/.test(label)
    ? new SecretsError("upstream_timeout", `${timedOut} (${label})`)
    : new SecretsError("upstream_unavailable", `${unavailable} (${label})`);
}

/** What failed, as a log line or message may say it: undici's code, else the error's name. Never a value. */
function failureLabel(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? code : ((err as { name?: string }).name ?? "error");
}
