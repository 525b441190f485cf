/**
 * The one error module for stores: the typed failures a store may report, and
 * `classifyBackendError`, which every store passes its backend's failures through. A store throws
 * one of these typed errors itself for what it finds out on its own (a name held by another, a
 * backend that answers but not as documented) and for a backend error that says something of the
 * request (a cursor the backend does not know, Conjur's 404 of a variable never declared); every
 * other failure goes through the classifier. Messages never quote a value or a backend's text; a
 * user's own store's (`custom`) are its own, and logs leave them out (`loggableMessage`).
 *
 * | error                | code                  | HTTP | when                                                  |
 * |----------------------|-----------------------|------|-------------------------------------------------------|
 * | `BackendDenied`      | `backend_denied`      | 502  | the backend refused our identity (401, 403)           |
 * | `BackendUnavailable` | `backend_unavailable` | 503  | down, slow or throttling; always with `Retry-After`   |
 * | `NameConflict`       | `name_conflict`       | 409  | two of our names land on one backend key              |
 * | `NotSupported`       | `not_supported`       | 501  | the store cannot do this (a read-only store's put)    |
 * | `StoreCorrupt`       | `store_corrupt`       | 500  | an entry that cannot be opened or parsed              |
 * | `StoreUnavailable`   | `store_unavailable`   | 500  | the store cannot be used here (permissions, no dir,   |
 * |                      |                       |      | a backend certificate not trusted, a secret's KMS key |
 * |                      |                       |      | disabled, a gRPC FAILED_PRECONDITION)                 |
 *
 * Only `backend_unavailable` is retryable: the cache may then serve the last good value.
 * Messages are built from the operation, status and error names, and gRPC codes by name
 * (`PERMISSION_DENIED (7)`): never from a value, a body or the backend's message.
 */
import { type ErrorCode, retryAfterSeconds, SecretsError } from "./errors";

/** The codes of a store that failed, not of a caller's mistake it reported (the routes list them, the store line logs them). */
export const STORE_FAILURES: readonly ErrorCode[] = [
  "backend_denied",
  "backend_unavailable",
  "store_corrupt",
  "store_unavailable",
];

export class BackendDenied extends SecretsError {
  constructor(message: string, options?: ErrorOptions) {
    super("backend_denied", message, {}, options);
  }
}

export class BackendUnavailable extends SecretsError {
  /**
   * `retryAfter`: seconds, from the backend when it said, else 1; kept as the 503 will say it
   * (`retryAfterSeconds`: whole seconds from 1 to an hour, whatever came in).
   */
  constructor(message: string, retryAfter = 1, options?: ErrorOptions) {
    super("backend_unavailable", message, { retryAfter: retryAfterSeconds(retryAfter) }, options);
  }
}

export class NameConflict extends SecretsError {
  constructor(name: string, key: string) {
    super("name_conflict", `${name} maps to the backend key ${key}, which already holds another name`);
  }
}

/**
 * A change told not to adopt (`adopt: false`: a key event's, a virtual key's write) over a secret
 * llm-secrets did not write, on a store that maps names (`where`: the backend's secret, `mark`: the
 * owner mark it lacks).
 */
export class MadeOutside extends SecretsError {
  constructor(name: string, where: string, mark: string) {
    super(
      "name_conflict",
      `${name} maps to ${where}, which llm-secrets did not write (${mark}): a key event or a virtual key's write neither overwrites nor deletes it; a direct PUT or DELETE of a name allowed outside the virtual-key prefix does`,
    );
  }
}

export class NotSupported extends SecretsError {
  constructor(what: string) {
    super("not_supported", `${what} is not supported`);
  }
}

export class StoreCorrupt extends SecretsError {
  constructor(message: string, options?: ErrorOptions) {
    super("store_corrupt", message, {}, options);
  }
}

export class StoreUnavailable extends SecretsError {
  constructor(message: string, options?: ErrorOptions) {
    super("store_unavailable", message, {}, options);
  }
}

/** Marks an error whose message a user's own store wrote (`custom`): see `loggableMessage`. */
const USER_MESSAGE: unique symbol = Symbol("llm-secrets: a message a user's store wrote");

/** `err`, marked as carrying a message a user's own store wrote, which may hold anything. */
export function withUserMessage<E extends SecretsError>(err: E): E {
  (err as E & { [USER_MESSAGE]?: true })[USER_MESSAGE] = true;
  return err;
}

/**
 * What a log line may say of a typed error: its message, built from operation names, statuses and
 * codes only, but for one a user's own store wrote, which goes to the caller and never to a log.
 */
export function loggableMessage(err: SecretsError): string {
  return hasUserMessage(err) ? "the custom store's own message (not logged)" : err.message;
}

/** Whether `err` carries a message a user's own store wrote (`withUserMessage`). */
function hasUserMessage(err: unknown): boolean {
  return err instanceof SecretsError && (err as SecretsError & { [USER_MESSAGE]?: true })[USER_MESSAGE] === true;
}

/** Errors the cache may answer with a stale value: the backend is down, slow or throttling. */
export function isRetryable(err: unknown): boolean {
  return err instanceof SecretsError && err.code === "backend_unavailable";
}

const DENIED_NAMES = new Set([
  // AWS
  "AccessDeniedException",
  "UnrecognizedClientException",
  "InvalidSignatureException",
  "ExpiredTokenException",
  "InvalidClientTokenId",
  "IncompleteSignature",
  "KMSAccessDeniedException",
  "AuthFailure",
  "CredentialsProviderError", // the SDK's credential chain found none: no identity to be let in with
  "InvalidIdentityTokenException", // STS (400): the web identity token could not be validated
  "IDPRejectedClaimException", // STS (403): the identity provider rejected the token's claims
  // Azure identity
  "CredentialUnavailableError",
  "AuthenticationError",
  "AuthenticationRequiredError",
]);

/**
 * Down, slow or throttling. The throttling names are the AWS SDK's own (`THROTTLING_ERROR_CODES` of
 * @smithy's service-error-classification, which it retries as throttling) but `LimitExceededException`,
 * a quota here (`QUOTA_NAMES`): once the SDK's retries run out, the same failure is still throttling.
 */
const UNAVAILABLE_NAMES = new Set([
  "ThrottlingException", // AWS common error: the request rate (Secrets Manager's and KMS's throttling)
  "Throttling", // STS and the other Query-protocol services (400, `<Code>Throttling</Code>`): AssumeRole's rate
  "TooManyRequestsException", // Lambda, API Gateway (429)
  "RequestLimitExceeded", // EC2-style request-rate throttling
  "EC2ThrottledException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "SlowDown", // S3 (503)
  "BandwidthLimitExceeded",
  "ProvisionedThroughputExceededException", // DynamoDB, Kinesis
  "PriorRequestNotComplete", // Route 53
  "TransactionInProgressException", // DynamoDB
  "InternalServiceError", // Secrets Manager (500)
  "InternalServiceErrorException",
  "InternalFailure", // AWS common error (500)
  "ServiceUnavailable", // AWS common error (503)
  "ServiceUnavailableException",
  "KMSInternalException", // KMS (500)
  "IDPCommunicationErrorException", // STS (400): it could not reach the identity provider; retry
  "TimeoutError",
  "AbortError",
  "RequestTimeout",
  "RequestTimeoutException", // AWS common error (408)
]);

/**
 * The encryption key behind a secret cannot be used: Secrets Manager's `DecryptionFailure` and
 * `EncryptionFailure` (its KMS key disabled or not allowed), KMS's `DisabledException`,
 * `KMSInvalidStateException` (pending deletion, pending import), `InvalidKeyUsageException` and
 * `InvalidGrantTokenException`, each HTTP 400 (KMS's `NotFoundException`, a key deleted, is the
 * `aws_kms` store's to decide: the name means other things on other services). A state of the
 * customer's own key, which an operator fixes: not our bug (`internal`), not an outage to retry.
 */
const KEY_STATE_NAMES = new Set([
  "DecryptionFailure",
  "EncryptionFailure",
  "DisabledException",
  "KMSDisabledException",
  "KMSInvalidStateException",
  "InvalidKeyUsageException", // KMS (400): the key is not for ENCRYPT_DECRYPT, or not for this algorithm
  "InvalidGrantTokenException", // KMS (400): a grant the call relies on is not valid
]);

/**
 * A backend quota reached, not throttling: Secrets Manager's `LimitExceededException` (more than 100
 * versions not yet removed, which it keeps 24 h; too many secrets) and KMS's (keys, aliases, grants,
 * on their management calls, never on Decrypt; KMS throttles the request rate with
 * `ThrottlingException`), both 400. The classifier is not told the service, and need not be: in
 * both it is a quota, and the AWS SDK has already retried it as throttling. Retrying does not help,
 * so it is not `backend_unavailable` (no Retry-After for a day of retries): an internal failure,
 * named in the log. A service that throttles under this name answers 429, which decides first.
 */
const QUOTA_NAMES = new Set(["LimitExceededException"]);

const UNAVAILABLE_NET_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "ENOTFOUND",
  "EBUSY",
  "EAGAIN",
  "EMFILE",
  "ENFILE",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "UND_ERR_ABORTED",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_SOCKET_CONNECTION_TIMEOUT",
]);

/**
 * msal error codes that mean the token service is down or slow. @azure/identity reports every token
 * failure as `AuthenticationRequiredError` with no status, its message starting with msal's code
 * (the OAuth `error` of the answer, or msal's own `network_error`): only that code tells a refusal
 * (`invalid_client`, ...) from an outage. Only the code is read; the message is never repeated.
 */
const TRANSIENT_TOKEN_ERRORS = /^(?:network_error|temporarily_unavailable|server_error|request_timeout)\b/;

function messageOf(err: unknown): string {
  const message = (err as { message?: unknown } | null)?.message;
  return typeof message === "string" ? message : "";
}

/** TLS verification failures: the backend's certificate is not trusted here (a trust setting to fix, not an outage). */
const TLS_TRUST_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/**
 * Filesystem codes that mean the store cannot be used here, whatever is retried, and what each
 * tells a user to look at (the answer names no path; the file store's log line names the dir).
 */
const UNUSABLE_FS_CODES = new Map([
  ["EACCES", "permission denied"],
  ["EPERM", "operation not permitted"],
  ["EROFS", "the filesystem is read-only"],
  ["ENOENT", "no such file or directory"],
  ["ENOTDIR", "a part of the path is not a directory"],
  ["EISDIR", "a directory where a file belongs"],
  ["ENOSPC", "no space left on the device"],
  ["EDQUOT", "the disk quota is used up"],
  // RLIMIT_FSIZE (ulimit -f, a container's limit) or the filesystem's largest file.
  ["EFBIG", "a file would grow past the largest size allowed (the process's file size limit, or the filesystem's)"],
  // The disk or the network volume failed the read or write: what it holds may need checking.
  ["EIO", "an I/O error: the disk or volume failed"],
]);

/** gRPC status codes (google/rpc/code.proto), as the Google clients report them in `code`. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

const GRPC_NAMES = new Map<number, string>(Object.entries(GrpcCode).map(([name, code]) => [code, name]));

const GRPC_DENIED = new Set<number>([GrpcCode.PERMISSION_DENIED, GrpcCode.UNAUTHENTICATED]);
const GRPC_UNAVAILABLE = new Set<number>([
  GrpcCode.CANCELLED,
  GrpcCode.DEADLINE_EXCEEDED,
  GrpcCode.RESOURCE_EXHAUSTED,
  GrpcCode.ABORTED,
  GrpcCode.INTERNAL,
  GrpcCode.UNAVAILABLE,
]);

/**
 * google-gax (5.x, normalCalls/retries.js), once a call's retries run out, answers a new error of
 * code DEADLINE_EXCEEDED whatever the attempts failed with: the last attempt's code is only in its
 * message, `Exceeded maximum number of retries retrying error Error: 8 RESOURCE_EXHAUSTED: <details>
 * before any response was received ...` (`Error: ` is the gRPC error's `toString()`, whose message
 * starts with its numeric code). Only those digits are read, at the start of that exact shape; the
 * rest of the message (the backend's details, every attempt's) is never read nor repeated.
 */
const GAX_RETRIES_EXHAUSTED = /^Exceeded maximum number of retries retrying error Error: (\d{1,2}) /;

interface Looked {
  name?: string;
  code?: unknown;
  status?: number;
  retryAfter?: number;
  /** The code is the last attempt's, recovered from gax's error after its retries ran out. */
  retried?: boolean;
}

/**
 * The status a proxy refused a call with, from undici's `ProxyAgent` (outbound.ts): a CONNECT
 * answered other than 200 (an https:// target), or a 407 to a request sent through it (an http://
 * one). undici says it only in the message; without this, one read as an outage, the other as ours.
 */
export function proxyRefusal(err: unknown): number | undefined {
  const message = (err as { message?: unknown } | null)?.message;
  if (typeof message !== "string") return undefined;
  const m = /^Proxy response \((\d{3})\) !== 200 when HTTP Tunneling$|^Proxy Authentication Required \((407)\)$/.exec(
    message,
  );
  return m ? Number(m[1] ?? m[2]) : undefined;
}

/**
 * The typed error for a backend failure. `what` names the operation (`"vault get"`,
 * `"file store write"`); it and the failure's status or name make the message.
 */
export function classifyBackendError(err: unknown, what: string): SecretsError {
  if (err instanceof SecretsError) return err;
  const proxied = proxyRefusal(err);
  if (proxied === 407) {
    return new StoreUnavailable(
      `${what}: the proxy refused our credentials (HTTP 407): check those in HTTPS_PROXY, HTTP_PROXY or ALL_PROXY`,
      { cause: err },
    );
  }
  if (proxied !== undefined) {
    return new BackendUnavailable(`${what}: the proxy refused the way to the backend (HTTP ${proxied})`, undefined, {
      cause: err,
    });
  }
  const found = look(err);
  const { name, code, status, retryAfter } = found;
  const label = describe(found);
  const options = { cause: err };

  if (status === 401 || status === 403)
    return new BackendDenied(`${what}: the backend refused our identity (${label})`, options);
  if (typeof code === "number" && typeof status !== "number" && GRPC_DENIED.has(code)) {
    return new BackendDenied(`${what}: the backend refused our identity (${label})`, options);
  }
  if (name === "AuthenticationRequiredError" && TRANSIENT_TOKEN_ERRORS.test(messageOf(err))) {
    return new BackendUnavailable(`${what}: the token service is unavailable (${label})`, retryAfter, options);
  }
  if (name !== undefined && DENIED_NAMES.has(name)) {
    return new BackendDenied(`${what}: the backend refused our identity (${label})`, options);
  }
  if (status === 408 || status === 429 || (status !== undefined && status >= 500)) {
    return new BackendUnavailable(`${what}: the backend is unavailable (${label})`, retryAfter, options);
  }
  if (typeof code === "number" && status === undefined && GRPC_UNAVAILABLE.has(code)) {
    return new BackendUnavailable(`${what}: the backend is unavailable (${label})`, retryAfter, options);
  }
  if (
    (name !== undefined && UNAVAILABLE_NAMES.has(name)) ||
    (typeof code === "string" && UNAVAILABLE_NET_CODES.has(code))
  ) {
    return new BackendUnavailable(`${what}: the backend is unavailable (${label})`, retryAfter, options);
  }
  if (typeof code === "string" && TLS_TRUST_CODES.has(code)) {
    return new StoreUnavailable(`${what}: the backend's TLS certificate is not trusted here (${code})`, options);
  }
  const unusable = typeof code === "string" ? UNUSABLE_FS_CODES.get(code) : undefined;
  if (unusable !== undefined) {
    return new StoreUnavailable(`${what}: the store cannot be used (${code}: ${unusable})`, options);
  }
  if (name !== undefined && KEY_STATE_NAMES.has(name)) {
    return new StoreUnavailable(
      `${what}: the backend cannot use the secret's encryption key (${label}): check that its KMS key is enabled and not pending deletion`,
      options,
    );
  }
  // Google's "the system is not in a state required for the operation": a resource the call needs
  // (a CMEK key disabled, a project's API or billing) is not usable; it stays so until someone acts.
  if (code === GrpcCode.FAILED_PRECONDITION && status === undefined) {
    return new StoreUnavailable(
      `${what}: the backend refuses in its present state (${label}): a resource it needs, such as an encryption key, is not usable`,
      options,
    );
  }
  if (name !== undefined && QUOTA_NAMES.has(name)) {
    return new SecretsError(
      "internal",
      `${what}: the backend refuses this, one of its quotas is reached (${label})`,
      {},
      options,
    );
  }
  return new SecretsError("internal", `${what}: unexpected backend failure (${label})`, {}, options);
}

/** Status, name, code and Retry-After of an error, its `cause` chain included (fetch wraps socket errors). */
function look(err: unknown): Looked {
  const found: Looked = {};
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== null && typeof current === "object"; depth++) {
    const e = current as Record<string, unknown> & {
      $metadata?: { httpStatusCode?: unknown };
      $response?: { headers?: Record<string, unknown> };
      response?: { status?: unknown; headers?: unknown };
    };
    found.name ??= typeof e.name === "string" && e.name !== "Error" && e.name !== "TypeError" ? e.name : undefined;
    found.code ??= typeof e.code === "string" || typeof e.code === "number" ? e.code : undefined;
    found.status ??=
      statusOf(e.$metadata?.httpStatusCode) ??
      statusOf(e.statusCode) ??
      statusOf(e.status) ??
      statusOf(e.response?.status);
    found.retryAfter ??=
      secondsOf(e.retryAfterInMs, 1000) ??
      secondsOf(e.retryAfter, 1) ??
      retryAfterHeader(e.$response?.headers) ??
      retryAfterHeader(e.response?.headers) ??
      retryAfterHeader(e.headers);
    current = e.cause;
  }
  // An HTTP status in `code` (some clients) is a status, not a gRPC code.
  if (found.status === undefined && typeof found.code === "number" && found.code >= 100) {
    found.status = found.code;
    found.code = undefined;
  }
  // gax's DEADLINE_EXCEEDED after its retries: the last attempt's code instead.
  if (found.status === undefined && found.code === GrpcCode.DEADLINE_EXCEEDED) {
    const last = Number(GAX_RETRIES_EXHAUSTED.exec(messageOf(err))?.[1]);
    if (GRPC_NAMES.has(last)) {
      found.code = last;
      found.retried = true;
    }
  }
  return found;
}

function statusOf(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value >= 100 && value <= 599 ? value : undefined;
}

function secondsOf(value: unknown, per: number): number | undefined {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value / per : undefined;
}

/** `Retry-After` as seconds or an HTTP date, from a plain object or a `Headers`. */
export function retryAfterHeader(headers: unknown): number | undefined {
  if (headers === null || typeof headers !== "object") return undefined;
  const raw =
    typeof (headers as Headers).get === "function"
      ? (headers as Headers).get("retry-after")
      : ((headers as Record<string, unknown>)["retry-after"] ?? (headers as Record<string, unknown>)["Retry-After"]);
  if (typeof raw !== "string" || raw.trim() === "") return undefined;
  if (/^\d+$/.test(raw.trim())) return Number(raw.trim()) || undefined;
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.max(1, (at - Date.now()) / 1000);
}

/** `HTTP 503`, the error's name, its code: a gRPC code by name (`PERMISSION_DENIED (7)`). */
function describe({ name, code, status, retried }: Looked): string {
  const grpcName = typeof code === "number" && status === undefined ? GRPC_NAMES.get(code) : undefined;
  const codePart = grpcName !== undefined ? `${grpcName} (${code})` : code !== undefined ? String(code) : undefined;
  return (
    [
      status !== undefined ? `HTTP ${status}` : undefined,
      name,
      codePart !== undefined && retried ? `${codePart} on the last of the client's retries` : codePart,
    ]
      .filter((part) => part !== undefined)
      .join(", ") || "no detail"
  );
}
