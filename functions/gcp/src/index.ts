/**
 * The Google runtime (SPEC section 9): functions-framework targets over the one app in core.
 *
 * - `http`: the app through @hono/node-server's request listener. The raw request is
 *   `req.originalUrl` (express's copy of the request target as it arrived; `req.url` may be
 *   rewritten by routing). functions-framework's body parser has read the body already: the
 *   listener takes it from `req.rawBody`, inflated when it came compressed (its `Content-Encoding`
 *   is then dropped: `unlabelInflatedBody`). A JSON body that does not parse is answered by
 *   express before the function runs (an HTML 400; `quietBodyParserErrors` keeps it out of the log).
 * - `keyEvents`: a CloudEvent function for Pub/Sub `messagePublished` (binary or structured mode),
 *   the key event as base64 JSON in `message.data`. An event the store failed on, or one refused by
 *   a policy or for its time, throws, so Pub/Sub redelivers it and, after the subscription's
 *   `max_delivery_attempts`, moves it to the dead-letter topic (as SQS and Azure do). A malformed one
 *   (not JSON, not an event, a name that is not one) is acknowledged with an error log (SPEC
 *   section 7: no delivery could apply it).
 *
 * The runtime starts on the first invocation (settings from the environment, exactly as for
 * `serve`), with the stores this bundle ships; without `key_management_system` it is Google Secret
 * Manager. A start that fails is logged with its reason; HTTP invocations get `500 internal` in the
 * API's shape, events are redelivered, and after a pause the next invocation starts again.
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import * as functions from "@google-cloud/functions-framework";
import {
  createLogger,
  type FunctionOptions,
  type Logger,
  originForm,
  type RawRequest,
  startOnFirstUse,
} from "@llm-secrets/core";
import { nodeRequestListener } from "@llm-secrets/core/node-listener";
import { googleSecretManagerStore } from "@llm-secrets/core/stores/google";
import { googleKmsStore } from "@llm-secrets/core/stores/google-kms";
import { PORTABLE_STORES } from "@llm-secrets/core/stores/portable";

/** The stores the Google bundle ships; the first is the default. */
export const GCP_STORES = [googleSecretManagerStore, googleKmsStore, ...PORTABLE_STORES] as const;

/**
 * This runtime's raw-request helper: express keeps the request target as it arrived in
 * `originalUrl` (in origin form: an absolute-form target, `GET http://host/v1/...`, is read as its
 * path, as node's server does for `serve`); the headers are node's parse, as the local server passes them; answers stream
 * over the request's socket, which is cut when a forwarded answer cannot be finished.
 */
export function rawRequestOf(req: IncomingMessage & { originalUrl?: string }): RawRequest {
  const socket = req.socket;
  return {
    path: originForm(req.originalUrl ?? req.url ?? ""),
    headers: req.headers,
    clientClosed: () => socket.destroyed || !socket.writable,
    abort: () => socket.destroy(),
  };
}

/**
 * functions-framework's body parser inflates a `gzip`, `deflate` or `br` body (`zstd` too on a node
 * that has it; another coding is its own 415) and @hono/node-server builds the Request's body from what it kept, `req.rawBody`:
 * the plain bytes. Their headers are made to say so before the Request is built: no
 * `Content-Encoding`, a `Content-Length` that counts them. Otherwise a forward sends those plain
 * bytes on labelled as still compressed, which the upstream cannot decode; the compressed ones are
 * gone (the parser read the request through the inflater).
 */
function unlabelInflatedBody(req: IncomingMessage & { rawBody?: unknown }): void {
  // What the listener reads rawBody for (a GET's or HEAD's body is not read).
  if (!(req.rawBody instanceof Buffer) || req.method === "GET" || req.method === "HEAD") return;
  const coding = req.headers["content-encoding"];
  // body-parser's own test: no coding, or identity, and it read the bytes as they came.
  if ((coding || "identity").toLowerCase() === "identity") return;
  const length = String(req.rawBody.byteLength);
  delete req.headers["content-encoding"];
  if (req.headers["content-length"] !== undefined) req.headers["content-length"] = length;
  const raw: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] as string).toLowerCase();
    if (name === "content-encoding") continue;
    raw.push(req.rawHeaders[i] as string, name === "content-length" ? length : (req.rawHeaders[i + 1] as string));
  }
  req.rawHeaders = raw;
}

interface PubSubMessage {
  data?: string;
  messageId?: string;
}

/**
 * The CloudEvent of a Pub/Sub message, as functions-framework hands it over. A plain push (infra/gcp's
 * subscription) is converted to one when its message has data; one without data is handed over as
 * it was posted, its message at the top.
 */
export interface PubSubCloudEvent {
  id?: string;
  data?: { message?: PubSubMessage };
  message?: PubSubMessage;
}

const QUIETED = Symbol("llm-secrets: body parser errors quieted");

/**
 * What a key event that failed, or was refused by a policy or for its time, throws: functions-framework
 * then answers 500, so Pub/Sub redelivers it. Our own line (`key event not applied`) says why, and
 * functions-framework also logs `console.error(err.stack || err)`: the stack, several plain-text
 * lines a delivery, in a log of a JSON line each. With no stack it logs the error itself, which the
 * wrapper of `quietBodyParserErrors` knows by its class and drops.
 */
class KeyEventRedelivered extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeyEventRedelivered";
    this.stack = "";
  }
}

/**
 * functions-framework parses a body before any function runs, and a JSON body that does not parse
 * is answered by express and logged with `console.error(err)`: body-parser's error holds the whole
 * body (`err.body`) and its message quotes the start of it, and that body may hold a secret value.
 * What express refuses before the function runs is logged as one line of ours instead (`refusalOf`),
 * no part of the request in it; a key event's `KeyEventRedelivered` is dropped (its line of ours is
 * written); anything else goes to `console.error` as before. Express also puts the error's message
 * and stack in its answer unless NODE_ENV is `production`: that is the default here.
 */
function quietBodyParserErrors(log: Logger): void {
  process.env.NODE_ENV ??= "production";
  // biome-ignore lint/suspicious/noConsole: express logs there; this wraps it
  const original = console.error as typeof console.error & { [QUIETED]?: true };
  if (original[QUIETED]) return;
  const quieted = (...args: unknown[]) => {
    if (args.length === 1 && args[0] instanceof KeyEventRedelivered) return;
    const refusal = args.length === 1 ? refusalOf(args[0]) : undefined;
    if (refusal) {
      log.warn(refusal.msg, refusal.fields);
      return;
    }
    original.apply(console, args);
  };
  console.error = Object.assign(quieted, { [QUIETED]: true as const });
}

/**
 * The errors express's final handler logs for a request functions-framework refused before the
 * function ran, as a line of ours: body-parser's (an http-errors error with its `type`: a body that
 * does not parse, a charset or a content coding it has no decoder for, a body too large; or zlib's
 * error, with its `code`, for a body that does not inflate) and the router's 400 for a malformed
 * escape in the path (a URIError, its message quoting the path). Names and status only.
 */
function refusalOf(err: unknown): { msg: string; fields: Parameters<Logger["warn"]>[1] } | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as Error & { type?: unknown; status?: unknown; expose?: unknown; code?: unknown };
  const status = typeof e.status === "number" ? e.status : undefined;
  const parser = "request refused by functions-framework's body parser";
  if (typeof e.type === "string" && typeof e.expose === "boolean") {
    return { msg: parser, fields: { type: e.type, status } };
  }
  if (status === 400 && e.expose === true && typeof e.code === "string" && /^(Z_|ZSTD_)/.test(e.code)) {
    return { msg: parser, fields: { code: e.code, status } };
  }
  if (status === 400 && err instanceof URIError) {
    return { msg: "request refused by express: a malformed percent-escape in the path", fields: { status } };
  }
  return undefined;
}

/** The two targets over one lazily started runtime (tests pass their own stores and environment). */
export function gcpFunctions(options: FunctionOptions = {}) {
  // Cloud Logging takes a JSON line's level from its `severity`.
  const log = options.log ?? createLogger((line) => process.stdout.write(line), "info", { severity: true });
  quietBodyParserErrors(log);
  const runtime = startOnFirstUse({
    auditSeverity: true,
    stores: options.stores ?? GCP_STORES,
    env: options.env ?? process.env,
    log,
  });

  // The request's lines (the audit's) are written before its answer is sent: Cloud Run throttles
  // the instance's CPU once it has answered, so a line left for the next event-loop turn waited for
  // the next request, or was lost with the instance. And again once the answer is out (a forward's
  // streamed body may log as it ends).
  // What the library refuses before the app (a raw backslash in the path, a Host that is no host)
  // is answered in the API's shape with its line, as on `serve`.
  const listener = nodeRequestListener(
    async (request, incoming) => {
      try {
        return await runtime.fetch(request, rawRequestOf(incoming));
      } finally {
        runtime.flushLogs();
      }
    },
    log,
    (code) => void runtime.countError(code),
  );
  const http = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    unlabelInflatedBody(req);
    try {
      await listener(req, res);
    } finally {
      runtime.flushLogs();
    }
  };

  // An event's lines are written before it is acknowledged (or refused) for the same reason.
  const keyEvents = async (event: PubSubCloudEvent): Promise<void> => {
    try {
      await applyEvent(event);
    } finally {
      runtime.flushLogs();
    }
  };

  const applyEvent = async (event: PubSubCloudEvent): Promise<void> => {
    const rt = await runtime();
    const message = event.data?.message ?? event.message;
    // The platform's ids, typed and bounded here (a push's body is the caller's to shape).
    const id = message?.messageId ?? event.id;
    const messageId = typeof id === "string" ? id.slice(0, 128) : undefined;
    const result = await rt.applyKeyEventText(Buffer.from(message?.data ?? "", "base64").toString("utf8"), messageId);
    if (result.status === "failed" || (result.status === "refused" && !result.malformed)) {
      // Thrown: functions-framework answers 500 and Pub/Sub redelivers (applying again is safe);
      // what keeps failing or being refused (a policy, a time) reaches the dead-letter topic.
      throw new KeyEventRedelivered(
        `key event ${result.id ?? messageId} ${result.status} (${result.code}): Pub/Sub will redeliver it`,
      );
    }
    if (result.status === "refused") {
      log.error("malformed key event: acknowledged", {
        message_id: messageId,
        id: result.id,
        status: "refused",
        code: result.code,
      });
    }
  };

  return { http, keyEvents, runtime };
}

const targets = gcpFunctions();
export const http = targets.http;
export const keyEvents = targets.keyEvents;
functions.http("http", http);
functions.cloudEvent("keyEvents", keyEvents);
