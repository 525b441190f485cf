/**
 * The AWS runtime (SPEC section 9): Lambda handlers over the one app in core.
 *
 * - `http`: Function URL and API Gateway v2 (payload 2.0) events through `hono/aws-lambda`, with
 *   `event.rawPath` (and `rawQueryString`) as the raw request, so `..` and `%2F` are judged as sent;
 *   on an HTTP API's own endpoint a named stage's first segment is taken off (`withoutStage`).
 * - `sqs`: key events from SQS. Each record is applied in order; the ones that failed (the store
 *   failed: retry) or were refused (malformed, too old, not allowed: never applicable) come back in
 *   `batchItemFailures`, so SQS redelivers them and, after the queue's maxReceiveCount, its redrive
 *   policy moves them to the dead-letter queue. The reason is logged, never the key. The first
 *   record is always applied to its end; a later one gets the invocation's time left less a
 *   second, and past that it and the rest come back too, rather than a timeout failing the batch.
 *
 * Each invocation ends with the counters and latencies it made as CloudWatch EMF lines (emf.ts).
 *
 * The runtime starts on the first invocation (settings from the function's environment, exactly as
 * for `serve`), with the stores this bundle ships; without `key_management_system` it is AWS
 * Secrets Manager. A start that fails (bad config) is logged with its reason; HTTP invocations get
 * `500 internal` in the API's shape, SQS batches fail whole (redelivered), and after a pause the
 * next invocation starts again (core's `startOnFirstUse`).
 */

import { createLogger, type FunctionOptions, type RawRequest, startOnFirstUse } from "@llm-secrets/core";
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
  requestContext: { http: { method: string }; domainName?: string; requestId?: string; stage?: string };
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

/** This runtime's raw-request helper: the path and query as the event carries them, and the request's id (for audit lines). */
export function rawRequestOf(event: HttpEventV2): RawRequest {
  return {
    path: event.rawQueryString ? `${event.rawPath}?${event.rawQueryString}` : event.rawPath,
    ...(event.requestContext?.requestId && { requestId: event.requestContext.requestId }),
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
    fetch: (request: Request, env: { event: HttpEventV2 }) => runtime.fetch(request, rawRequestOf(env.event)),
  };
  // hono/aws-lambda calls only `fetch(request, { event, ... })` of the app it is given.
  const httpHandler = handle(app as unknown as Parameters<typeof handle>[0]);
  /** Each invocation ends by writing what it counted as EMF lines. */
  const http: typeof httpHandler = async (event, context) => {
    try {
      // A body on GET or HEAD (some clients send one) cannot go into a fetch Request: hono's handler
      // would answer a plain-text 400 before our app, its key check included. It is dropped, as
      // node's server does.
      const method = (event as Partial<HttpEventV2>).requestContext?.http?.method;
      const body = (event as Partial<HttpEventV2>).body;
      const bodiless = (method === "GET" || method === "HEAD") && body !== undefined;
      const own = withoutStage(event);
      return await httpHandler(bodiless ? { ...own, body: undefined, isBase64Encoded: false } : own, context);
    } finally {
      emf.flush();
    }
  };

  const sqs = async (event: SqsEvent, context?: Partial<LambdaTime>): Promise<SqsBatchResponse> => {
    try {
      return await applyRecords(event, context);
    } finally {
      emf.flush();
    }
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
