/**
 * The AWS runtime (SPEC section 9): Lambda handlers over the one app in core.
 *
 * - `http`: Function URL and API Gateway v2 (payload 2.0) events through `hono/aws-lambda`, with
 *   `event.rawPath` (and `rawQueryString`) as the raw request: a Function URL's, as the client sent
 *   it, so `..` and `%2F` are judged as sent; an HTTP API's arrives decoded, and only its `%`, `?`,
 *   `#`, `\` and control characters are escaped back (`asSent`). On an HTTP API's own endpoint a named stage's first segment
 *   is taken off (`withoutStage`).
 *   The answer goes back whole in the result (BUFFERED), base64 unless it is JSON in UTF-8
 *   (`isAnswerBinary`: text is read as UTF-8); one Lambda could not carry (more than
 *   `LAMBDA_PAYLOAD_LIMIT` bytes as sent) is answered as an error in the API's shape instead. An
 *   event of another shape (REST API, ALB: no `rawPath`) is `500` with a line saying so.
 * - `sqs`: key events from SQS. Each record is applied in order; the ones that failed (the store
 *   failed: retry) or were refused (malformed, too old, not allowed: never applicable) come back in
 *   `batchItemFailures`, so SQS redelivers them and, after the queue's maxReceiveCount, its redrive
 *   policy moves them to the dead-letter queue. The reason is logged, never the key. The first
 *   record is always applied to its end; a later one gets the invocation's time left less a
 *   second, and past that it and the rest come back too, rather than a timeout failing the batch.
 *
 * Each invocation ends by writing its log lines still buffered (the audit's: Lambda freezes the
 * process once the handler returns), then the counters and latencies it made as CloudWatch EMF
 * lines (emf.ts).
 *
 * The runtime starts on the first invocation (settings from the function's environment, exactly as
 * for `serve`), with the stores this bundle ships; without `key_management_system` it is AWS
 * Secrets Manager. A start that fails (bad config) is logged with its reason; HTTP invocations get
 * `500 internal` in the API's shape, SQS batches fail whole (redelivered), and after a pause the
 * next invocation starts again (core's `startOnFirstUse`).
 */

import {
  createLogger,
  errorAnswer,
  type FunctionOptions,
  type Logger,
  type RawRequest,
  requestIdOf,
  SecretsError,
  startOnFirstUse,
} from "@llm-secrets/core";
import { awsSecretsManagerStore } from "@llm-secrets/core/stores/aws";
import { awsKmsStore } from "@llm-secrets/core/stores/aws-kms";
import { PORTABLE_STORES } from "@llm-secrets/core/stores/portable";
import { handle } from "hono/aws-lambda";
import { EmfSink } from "./emf";

/** The stores the AWS bundle ships; the first is the default. */
export const AWS_STORES = [awsSecretsManagerStore, awsKmsStore, ...PORTABLE_STORES] as const;

/** The parts of a payload-2.0 HTTP event the adapter reads (Function URL and API Gateway v2 share it). */
export interface HttpEventV2 {
  version?: string;
  rawPath: string;
  rawQueryString?: string;
  headers?: Record<string, string | undefined>;
  body?: string;
  isBase64Encoded?: boolean;
  requestContext: {
    http: { method: string; sourceIp?: string };
    domainName?: string;
    requestId?: string;
    stage?: string;
  };
}

export interface SqsEvent {
  Records: { messageId: string; body: string }[];
}

/** What the SQS handler reads of Lambda's context: the time left before the invocation's timeout. */
export interface LambdaTime {
  getRemainingTimeInMillis(): number;
}

/** What an SQS batch keeps of its invocation's time, past the records it applies (see `sqs`). */
export const SQS_MARGIN_MS = 1_000;

/** `work`'s result, or undefined once `ms` have passed first (the work goes on; its record is redelivered). */
async function withinBudget<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  if (ms === Number.POSITIVE_INFINITY) return work;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

export interface SqsBatchResponse {
  batchItemFailures: { itemIdentifier: string }[];
}

/** An HTTP API's own endpoint (`{api}.execute-api.{region}.amazonaws.com`), where a named stage is the path's first segment. */
const EXECUTE_API = /\.execute-api\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$/i;

/**
 * The event with the API's own path: on an HTTP API's own endpoint, a stage other than `$default`
 * comes first in `rawPath` (`/prod/v1/secrets/x`), and is taken off as a string (never decoded or
 * normalised). A custom domain's path and a Function URL's carry no stage.
 */
export function withoutStage<E>(event: E): E {
  const { rawPath, requestContext } = event as Partial<HttpEventV2>;
  const { stage, domainName } = requestContext ?? {};
  if (typeof rawPath !== "string" || !stage || stage === "$default" || !EXECUTE_API.test(domainName ?? "")) {
    return event;
  }
  const prefix = `/${stage}`;
  if (rawPath !== prefix && !rawPath.startsWith(`${prefix}/`)) return event;
  return { ...event, rawPath: rawPath.slice(prefix.length) || "/" };
}

/** A Function URL's own domain (`{url-id}.lambda-url.{region}.on.aws`): its rawPath is as the client sent it. */
const FUNCTION_URL = /\.lambda-url\.[a-z0-9-]+\.on\.aws$/i;

/**
 * What an HTTP API's decoded rawPath may hold that a reader takes for syntax: `%` (decoded again),
 * `?` and `#` (a query, a fragment), `\` (a URL parser's `/`), and control characters (tabs and
 * newlines a URL parser drops).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it escapes
const DECODED_SYNTAX = /[%?#\\\u0000-\u001f\u007f]/g;
const escaped = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`;

/**
 * The event with a rawPath that can be judged as sent. A Function URL's rawPath is the path the
 * client sent, still percent-encoded. An HTTP API (its `execute-api` endpoint or a custom domain)
 * delivers it percent-decoded, `%25` even twice (live captures: `%2F` arrives as `/`, `%2525` as
 * `%`, `%253F` as `?`, `%23` as `#`; `%3F` cuts the path there). Of what it decoded, `%`, `?` and `#`
 * would be read again as syntax: a second decoding (`%40` as `@`), a query, a fragment; and a URL
 * parser (a forward's target) reads `\` (`%5C`) as `/`, so that `v1\..\..\x` climbs out of the
 * api_base's path, and drops tabs and newlines. These are escaped back (`%25`, `%3F`, `%23`, `%5C`,
 * `%0A`, ...), so a name holding one is what it is, an invalid name (`invalid_name`, after the key
 * check as always), and a forward passes them on escaped. What AWS decoded to anything else (`/`,
 * `..`, a space) is beyond recovery and taken as it came.
 */
export function asSent<E>(event: E): E {
  const { rawPath, requestContext } = event as Partial<HttpEventV2>;
  if (typeof rawPath !== "string" || FUNCTION_URL.test(requestContext?.domainName ?? "")) return event;
  const escapedPath = rawPath.replace(DECODED_SYNTAX, escaped);
  return escapedPath === rawPath ? event : { ...event, rawPath: escapedPath };
}

/** What the adapter reads of Lambda's context: the invocation's id. */
export interface LambdaRequestContext {
  awsRequestId?: string;
}

/**
 * The invocation's id, as Lambda's own log lines carry it (`context.awsRequestId`). The event's
 * `requestContext.requestId` is that id on a Function URL, but an HTTP API's own
 * (`JZ9bAiKsoAMEV0Q=`): it is taken only without a context.
 */
function lambdaRequestId(event: HttpEventV2, context: LambdaRequestContext | undefined): string | undefined {
  return context?.awsRequestId || event.requestContext?.requestId;
}

/**
 * This runtime's raw-request helper: the path and query as the event carries them, and the request's
 * id (Lambda's: `lambdaRequestId`) and source address (Lambda's `sourceIp`, the client's as AWS saw
 * it) for audit lines.
 */
export function rawRequestOf(event: HttpEventV2, context?: LambdaRequestContext): RawRequest {
  const requestId = lambdaRequestId(event, context);
  return {
    path: event.rawQueryString ? `${event.rawPath}?${event.rawQueryString}` : event.rawPath,
    ...(requestId && { requestId }),
    ...(event.requestContext?.http?.sourceIp && { source: event.requestContext.http.sourceIp }),
  };
}

/**
 * What Lambda takes back from a buffered invocation (a Function URL's BUFFERED invoke mode, an API
 * Gateway integration): the function's result as the Node runtime sends it, JSON, at most this many
 * bytes ("Exceeded maximum allowed payload size (6291556 bytes)": 6 MiB and 100 bytes). Past it the
 * invocation fails and the caller gets the platform's own 502, whatever the function answered.
 */
export const LAMBDA_PAYLOAD_LIMIT = 6_291_556;

/** The result the `http` handler gives Lambda for a payload-2.0 event. */
export interface HttpResultV2 {
  statusCode: number;
  headers?: Record<string, string>;
  cookies?: string[];
  body?: string;
  isBase64Encoded?: boolean;
}

/** An answer's body read past what Lambda could ever carry (its bytes alone pass the limit). */
class AnswerTooLarge extends Error {
  constructor(
    readonly bytes: number,
    /** The status the app answered with. */
    readonly status: number,
  ) {
    super(`the answer is larger than Lambda's response payload (${LAMBDA_PAYLOAD_LIMIT} bytes)`);
  }
}

/** `application/json` and the `+json` types (`application/problem+json`). */
const JSON_TYPE = /^application\/(?:[!#$%&'*+.^_`|~0-9a-z-]+\+)?json\s*(?:;|$)/i;

/**
 * Whether hono's handler hands an answer of this type to Lambda base64-encoded (its bytes as they
 * are) rather than as text. Text is read with `res.text()`, as UTF-8: bytes that are not UTF-8
 * become U+FFFD. So only JSON in UTF-8 (no charset, or `utf-8`) goes as text; every other type is
 * bytes, `text/*` in whatever charset included (hono's default took `text/plain; charset=iso-8859-1`
 * as text). An answer with a body and no type is not asked about (hono takes it as text): forward
 * labels an upstream's untyped body `application/octet-stream`, and our own answers are typed.
 */
function isAnswerBinary(contentType: string): boolean {
  if (!JSON_TYPE.test(contentType)) return true;
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(contentType)?.[1];
  return charset !== undefined && !/^utf-?8$/i.test(charset);
}

/** Whether the event is a forward to an LLM API (its answer is the upstream's, of any size). */
function isForward(event: HttpEventV2): boolean {
  return event.rawPath.startsWith("/v1/forward/");
}

/**
 * The answer with its body counted as hono's handler reads it: past the limit the read fails (the
 * upstream's answer is cancelled, not read into memory whole), as the result could not be sent.
 */
function counted(res: Response): Response {
  if (!res.body) return res; // a body-less status (204, 304, ...) never has one
  let bytes = 0;
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      bytes += chunk.byteLength;
      if (bytes > LAMBDA_PAYLOAD_LIMIT) controller.error(new AnswerTooLarge(bytes, res.status));
      else controller.enqueue(chunk);
    },
  });
  return new Response(res.body.pipeThrough(counter), { status: res.status, headers: res.headers });
}

/**
 * The bytes of `result` as the Node runtime sends it to Lambda (`JSON.stringify`). Written out only
 * when it may be near the limit: a UTF-16 unit of the body is at most 6 bytes of JSON (`\u00XX`),
 * and headers are bounded (undici's 16 KiB of upstream headers), well within the margin.
 */
function payloadBytes(result: HttpResultV2): number {
  const body = result.body?.length ?? 0;
  if (body * 6 + 1_048_576 < LAMBDA_PAYLOAD_LIMIT) return 0;
  return Buffer.byteLength(JSON.stringify(result), "utf8");
}

/**
 * What is answered instead of a result Lambda would refuse: `502 upstream_unavailable` for a forward
 * (the upstream's answer cannot be carried back), else `500 internal`, in the API's error shape; and
 * one log line with the answer's size, never its content.
 */
async function tooLargeAnswer(
  log: Logger,
  countError: (code: string) => Promise<void>,
  event: HttpEventV2,
  context: LambdaRequestContext | undefined,
  status: number,
  bytes: number,
  whole: boolean,
): Promise<HttpResultV2> {
  const forward = isForward(event);
  log.error("answer too large for Lambda's response payload: not sent", {
    status,
    // The answer's bytes as Lambda would get them, or (not read whole) those read when it passed the limit.
    bytes,
    ...(!whole && { read_whole: false }),
    limit: LAMBDA_PAYLOAD_LIMIT,
    // The audit line's id: Lambda's request id (the caller's x-request-id is the audit line's client_request_id).
    request_id: requestIdOf(lambdaRequestId(event, context)),
  });
  const res = forward
    ? errorAnswer(
        "upstream_unavailable",
        `the upstream's answer is too large for Lambda (more than ${LAMBDA_PAYLOAD_LIMIT} bytes as Lambda carries it)`,
      )
    : errorAnswer("internal", "internal error");
  await countError(forward ? "upstream_unavailable" : "internal");
  return resultOf(res);
}

/**
 * The answer to an event without payload 2.0's `rawPath` (an API Gateway REST API, an ALB, an HTTP
 * API integration set to payload 1.0): `500 internal` in the API's shape, which their result shapes
 * all take, and one line saying which events the function takes. Its path cannot be read as sent,
 * so it is not served. An event that is no HTTP request fails the invocation.
 */
async function unsupportedEvent(
  log: Logger,
  countError: (code: string) => Promise<void>,
  event: unknown,
): Promise<HttpResultV2> {
  const { version, httpMethod, requestContext } = (event ?? {}) as {
    version?: unknown;
    httpMethod?: unknown;
    requestContext?: { elb?: unknown };
  };
  const http = typeof httpMethod === "string" || requestContext?.elb !== undefined || version === "1.0";
  const why = "the http handler takes Function URL and API Gateway HTTP API payload 2.0 events";
  // Not an HTTP request at all (an SQS batch wired to this handler): the invocation fails, so its
  // source redelivers it (then its dead-letter queue keeps it) rather than taking it as handled.
  if (!http) throw new Error(`not an HTTP event: ${why}`);
  log.error(`unsupported HTTP event: ${why}`, {
    ...(typeof version === "string" && { version: version.slice(0, 16) }),
  });
  await countError("internal");
  return resultOf(errorAnswer("internal", "internal error"));
}

/** One of our own (JSON) answers as Lambda's result. */
async function resultOf(res: Response): Promise<HttpResultV2> {
  return {
    statusCode: res.status,
    headers: Object.fromEntries(res.headers),
    body: await res.text(),
    isBase64Encoded: false,
  };
}

export interface AwsHandlersOptions extends FunctionOptions {
  /** Where the EMF lines go (Lambda's log: stdout). */
  emf?: (line: string) => void;
}

/** The two handlers over one lazily started runtime (tests pass their own stores and environment). */
export function awsHandlers(options: AwsHandlersOptions = {}) {
  const log = options.log ?? createLogger((line) => process.stdout.write(line));
  const emf = new EmfSink(options.emf ?? ((line) => process.stdout.write(line)));
  const runtime = startOnFirstUse({
    stores: options.stores ?? AWS_STORES,
    env: options.env ?? process.env,
    log,
    metricsSinks: [emf],
  });

  const app = {
    fetch: async (request: Request, env: { event: HttpEventV2; lambdaContext?: LambdaRequestContext }) => {
      const res = await runtime.fetch(request, rawRequestOf(env.event, env.lambdaContext));
      // Only a forward's body may be too large to read whole; ours are measured once built.
      return isForward(env.event) ? counted(res) : res;
    },
  };
  // hono/aws-lambda calls only `fetch(request, { event, ... })` of the app it is given.
  const httpHandler = handle(app as unknown as Parameters<typeof handle>[0], { isContentTypeBinary: isAnswerBinary });
  /**
   * An invocation's result, or, when Lambda could not carry it (LAMBDA_PAYLOAD_LIMIT), an error in
   * the API's shape. Each invocation ends by writing what it counted as EMF lines.
   */
  const http = async (event: HttpEventV2, context?: LambdaRequestContext): Promise<HttpResultV2> => {
    try {
      if (typeof (event as Partial<HttpEventV2>).rawPath !== "string") {
        return await unsupportedEvent(log, runtime.countError, event);
      }
      // A body on GET or HEAD (some clients send one) cannot go into a fetch Request: hono's handler
      // would answer a plain-text 400 before our app, its key check included. It is dropped, as
      // node's server does.
      const method = (event as Partial<HttpEventV2>).requestContext?.http?.method;
      const body = (event as Partial<HttpEventV2>).body;
      const bodiless = (method === "GET" || method === "HEAD") && body !== undefined;
      const own = { ...asSent(withoutStage(event)), ...(bodiless && { body: undefined, isBase64Encoded: false }) };
      let result: HttpResultV2;
      try {
        result = (await httpHandler(own as never, context as never)) as HttpResultV2;
      } catch (err) {
        if (err instanceof AnswerTooLarge) {
          return await tooLargeAnswer(log, runtime.countError, own, context, err.status, err.bytes, false);
        }
        // A forward whose upstream broke off mid-answer (forward.ts logged it): read whole, there
        // is nothing to send but the API's error, rather than a failed invocation (Lambda's own 502).
        if (err instanceof SecretsError && isForward(own)) {
          await runtime.countError(err.code);
          return await resultOf(errorAnswer(err.code, err.message));
        }
        throw err;
      }
      const bytes = payloadBytes(result);
      if (bytes > LAMBDA_PAYLOAD_LIMIT) {
        return await tooLargeAnswer(log, runtime.countError, own, context, result.statusCode, bytes, true);
      }
      return result;
    } finally {
      invocationEnds();
    }
  };

  const sqs = async (event: SqsEvent, context?: Partial<LambdaTime>): Promise<SqsBatchResponse> => {
    try {
      return await applyRecords(event, context);
    } finally {
      invocationEnds();
    }
  };

  /**
   * What an invocation writes before it returns: Lambda freezes the process once the handler's
   * promise settles, so a line left for the next event-loop turn (the audit's) would wait for the
   * next invocation, or be lost with the instance. Then what it counted, as EMF lines.
   */
  const invocationEnds = () => {
    runtime.flushLogs();
    emf.flush();
  };

  const applyRecords = async (event: SqsEvent, context?: Partial<LambdaTime>): Promise<SqsBatchResponse> => {
    const rt = await runtime();
    const batchItemFailures: { itemIdentifier: string }[] = [];
    const remaining = () => context?.getRemainingTimeInMillis?.() ?? Number.POSITIVE_INFINITY;
    const giveBack = (from: number) => {
      const left = event.Records.slice(from);
      log.warn("sqs batch: time running out, records left for redelivery", { left: left.length });
      batchItemFailures.push(...left.map((r) => ({ itemIdentifier: r.messageId })));
    };
    for (const [i, record] of event.Records.entries()) {
      // The first record is always tried to its end. A later one gets the time left less a margin:
      // past it, it and the rest go back to the queue (applying again is safe), rather than a
      // timeout failing the whole batch, the applied records too.
      const budget = i === 0 ? Number.POSITIVE_INFINITY : remaining() - SQS_MARGIN_MS;
      const result =
        budget <= 0 ? undefined : await withinBudget(rt.applyKeyEventText(record.body, record.messageId), budget);
      if (result === undefined) {
        giveBack(i);
        break;
      }
      if (result.status === "failed" || result.status === "refused") {
        batchItemFailures.push({ itemIdentifier: record.messageId });
      }
    }
    return { batchItemFailures };
  };

  return { http, sqs, runtime };
}

const handlers = awsHandlers();
export const http = handlers.http;
export const sqs = handlers.sqs;
