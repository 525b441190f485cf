/**
 * The Azure runtime (SPEC section 9): Azure Functions v4 programming model over the one app in core.
 *
 * - `secrets`: an HTTP trigger on every route (`{*path}`, with `routePrefix: ""` in host.json) and
 *   every method, translated by `toRequest` / `toResponse` below: the body's bytes kept intact, and
 *   each `Set-Cookie` sent as one of the response's cookies (the worker keeps one value per header). Azure Functions keys go in `x-functions-key`:
 *   a request with `?code=` is refused (400), as its URL would carry the key on (a forward's upstream),
 *   and so is a body sent chunked, which the host does not pass on (400, not run without it). The raw request is the path of `request.url` as the host hands it over: the
 *   host decoded the path once (but `%2F`: a `%25XX` arrives as `%XX`) and removed `..` and
 *   `%2e%2e`, so those cannot be refused here (README says so).
 * - `keyEvents`: a Storage Queue trigger on `key-events` (connection `AzureWebJobsStorage`). The host
 *   hands over the message decoded from base64 (an object when it is JSON). An event the store
 *   failed on, or one that is malformed or refused, throws: the host retries it five minutes later
 *   (`visibilityTimeout`) and, after `maxDequeueCount` (5, host.json), moves it to `key-events-poison`. The reason is logged, never
 *   the key.
 *
 * The runtime starts on the first invocation (settings from the app settings, exactly as for
 * `serve`), with the stores this bundle ships; without `key_management_system` it is Azure Key
 * Vault. A start that fails is logged with its reason; HTTP invocations get `500 internal` in the
 * API's shape, queue messages are retried, and after a pause the next invocation starts again.
 *
 * Log lines (a JSON object each, as everywhere) reach the host at their level: `hostLogger` below.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from "@azure/functions";
import {
  createLogger,
  errorAnswer,
  type FunctionOptions,
  type Logger,
  originForm,
  type RawRequest,
  responseCookies,
  SecretsError,
  startOnFirstUse,
} from "@llm-secrets/core";
import { azureKeyVaultStore } from "@llm-secrets/core/stores/azure";
import { PORTABLE_STORES } from "@llm-secrets/core/stores/portable";

/** The stores the Azure bundle ships; the first is the default. */
export const AZURE_STORES = [azureKeyVaultStore, ...PORTABLE_STORES] as const;

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;

/** This runtime's raw-request helper: the path and query of `request.url` (absolute), not parsed again. */
export function rawRequestOf(request: Pick<HttpRequest, "url">): RawRequest {
  return { path: originForm(request.url) };
}

/**
 * HttpRequest to a fetch `Request`: method, headers and the body's bytes. `undefined` when the body
 * was sent chunked: the host passes a body on only when its Content-Length is above 0
 * (azure-functions-host #7930), so the worker gets the headers without it, and a forward would send
 * an empty body on, a write read none.
 */
async function toRequest(request: HttpRequest): Promise<Request | undefined> {
  const hasBody = request.method !== "GET" && request.method !== "HEAD";
  const body = hasBody ? new Uint8Array(await request.arrayBuffer()) : undefined;
  if (body?.byteLength === 0 && request.headers.has("transfer-encoding")) return undefined;
  return new Request(request.url, {
    method: request.method,
    headers: request.headers,
    body: body && body.byteLength > 0 ? body : undefined,
  });
}

/**
 * A refusal before the app, logged like any refused request (the path only: a query may hold a
 * key) and counted (`countError`) as the app counts its own.
 */
async function refuse(
  request: HttpRequest,
  log: Logger,
  countError: (code: string) => Promise<void>,
  message: string,
): Promise<HttpResponseInit> {
  const path = new URL(request.url).pathname;
  log.info("request", { method: request.method, path, status: 400, code: "invalid_request" });
  await countError("invalid_request");
  return toResponse(errorAnswer("invalid_request", message));
}

/**
 * A fetch `Response` to HttpResponseInit: status, headers and the bytes. The worker hands headers to
 * the host as one value per name, so each `Set-Cookie` (an upstream's `__cf_bm` and `_cfuvid`) goes
 * as one of `cookies` instead, which the host writes a header each (attributes it has no field for,
 * such as `Partitioned`, are not carried).
 */
export async function toResponse(response: Response): Promise<HttpResponseInit> {
  const headers: [string, string][] = [];
  response.headers.forEach((value, key) => {
    if (key !== "set-cookie") headers.push([key, value]);
  });
  const cookies = responseCookies(response);
  const bytes = new Uint8Array(await response.arrayBuffer());
  return {
    status: response.status,
    headers,
    ...(cookies.length > 0 && { cookies }),
    ...(bytes.byteLength > 0 && { body: bytes }),
  };
}

/** The invocation whose handler a line is logged in, and whether that handler has returned. */
interface Invocation {
  context: InvocationContext;
  ended: boolean;
}

const invocations = new AsyncLocalStorage<Invocation>();

/** Runs an invocation's handler: what it logs goes through `context` until it returns. */
async function within<T>(context: InvocationContext, handler: () => Promise<T>): Promise<T> {
  const invocation: Invocation = { context, ended: false };
  try {
    return await invocations.run(invocation, handler);
  } finally {
    invocation.ended = true;
  }
}

/**
 * The function's log: a JSON line each, handed to the Functions host at its level. The host reads
 * the worker's stdout as Information whatever it holds (category `Host.Function.Console`), so an
 * error line written there reached Application Insights at severity 1, where an alert on Warning or
 * Error never saw it. A line logged while an invocation runs goes through its context
 * (`context.error(line)`, ...), which the worker sends to the host with that level and the
 * invocation's id. Any other line (one a timer logs after its invocation returned, which the worker
 * would otherwise attribute to it with a warning of its own) goes to stdout (info), or to stderr
 * (warn, error), which the host reads as Warning when a line holds "warn" and as Error when it holds
 * "error" (each line's `level` does). Audit lines stay on stdout, at Information: a record each,
 * whose refusals have an access-log line with its level.
 */
export function hostLogger(): Logger {
  const at = (level: keyof Logger) =>
    createLogger((line) => {
      const invocation = invocations.getStore();
      if (invocation && !invocation.ended) invocation.context[level](line.trimEnd());
      else (level === "warn" || level === "error" ? process.stderr : process.stdout).write(line);
    })[level];
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** The two handlers over one lazily started runtime (tests pass their own stores and environment). */
export function azureFunctions(options: FunctionOptions = {}) {
  const log = options.log ?? hostLogger();
  const runtime = startOnFirstUse({
    stores: options.stores ?? AZURE_STORES,
    env: options.env ?? process.env,
    log,
  });

  const http = (request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> =>
    within(context, () => answer(request));

  const answer = async (request: HttpRequest): Promise<HttpResponseInit> => {
    // The host takes a function key in `?code=` too, and leaves it in the URL the worker gets: a
    // forward would send it on to an LLM API. SPEC: function keys go in x-functions-key only.
    // The host reads `code` in any case (ASP.NET Core's query is case-insensitive).
    if ([...request.query.keys()].some((k) => k.toLowerCase() === "code")) {
      return refuse(
        request,
        log,
        runtime.countError,
        "a function key goes in the x-functions-key header, never in ?code= (the URL would carry it on)",
      );
    }
    const translated = await toRequest(request);
    if (translated === undefined) {
      return refuse(
        request,
        log,
        runtime.countError,
        "a body sent chunked (Transfer-Encoding, no Content-Length) does not reach an Azure function: send it with Content-Length",
      );
    }
    const res = await runtime.fetch(translated, rawRequestOf(request));
    try {
      return await toResponse(res);
    } catch (err) {
      // A forward whose upstream broke off mid-answer (forward.ts logged it): read whole, there is
      // nothing to send but the API's error, rather than a failed invocation (the host's own 500).
      if (err instanceof SecretsError) {
        await runtime.countError(err.code);
        return toResponse(errorAnswer(err.code, err.message));
      }
      throw err;
    }
  };

  const keyEvents = (message: unknown, context: InvocationContext): Promise<void> =>
    within(context, () => applyMessage(message, context));

  const applyMessage = async (message: unknown, context: InvocationContext): Promise<void> => {
    const rt = await runtime();
    // The Storage Queue trigger's metadata: the message's id (logged when the event is not applied).
    const id = context.triggerMetadata?.id;
    const messageId = typeof id === "string" ? id : undefined;
    // The worker hands a message over JSON.parse'd when it parses: a string is one that did not (not
    // JSON: refused as such) or a JSON string (an event encoded twice: refused, as on SQS and Pub/Sub).
    const result =
      typeof message === "string" && !isJson(message)
        ? await rt.applyKeyEventText(message, messageId)
        : await rt.applyKeyEvent(message, messageId);
    if (result.status === "failed" || result.status === "refused") {
      throw new Error(
        `key event ${result.id ?? "(no id)"} ${result.status} (${result.code}): ${
          result.status === "failed" ? "the host retries it" : "it goes to the poison queue after maxDequeueCount tries"
        }`,
      );
    }
  };

  return { http, keyEvents, runtime };
}

const handlers = azureFunctions();
app.http("secrets", { methods: [...METHODS], authLevel: "function", route: "{*path}", handler: handlers.http });
app.storageQueue("keyEvents", {
  queueName: "key-events",
  connection: "AzureWebJobsStorage",
  handler: handlers.keyEvents,
});
