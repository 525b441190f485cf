/**
 * Typed errors and their one mapping to HTTP.
 *
 * Every failure the product reports has a stable `code` (SPEC section 6). A message is written
 * for humans and never holds a secret value: callers pass names, counts and reasons, never values.
 */

export const ERROR_STATUS = {
  invalid_request: 400,
  invalid_name: 400,
  decrypt_failed: 400,
  unauthorized: 401,
  not_hosted: 403,
  read_only: 403,
  write_only: 403,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  name_conflict: 409,
  payload_too_large: 413,
  unresolved_refs: 422,
  headers_too_large: 431,
  encryption_key_missing: 500,
  store_corrupt: 500,
  store_unavailable: 500,
  internal: 500,
  not_supported: 501,
  backend_denied: 502,
  upstream_unavailable: 502,
  backend_unavailable: 503,
  upstream_timeout: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** One validation problem, located by its path in the input ("tags.team", "value"). */
export interface Issue {
  path: string;
  message: string;
}

export interface ErrorDetails {
  /** zod issues for `invalid_request`. */
  issues?: Issue[];
  /** Names behind `unresolved_refs`. */
  names?: string[];
  /** Why each of those names did not resolve: `not_found`, `not_hosted`, `invalid_name`. */
  reasons?: Record<string, string>;
  /** Seconds, for `backend_unavailable`. */
  retryAfter?: number;
  /** Methods of the path, for `method_not_allowed`. */
  allow?: string[];
}

export class SecretsError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

export class InvalidInput extends SecretsError {
  constructor(message: string, issues?: Issue[]) {
    super("invalid_request", message, issues ? { issues } : {});
  }
}

export class InvalidName extends SecretsError {
  constructor(reason: string) {
    super("invalid_name", `invalid secret name: ${reason}`);
  }
}

export class NotFound extends SecretsError {
  constructor(name: string) {
    super("not_found", `secret ${name} not found`);
  }
}

export class AccessDenied extends SecretsError {
  constructor(code: "not_hosted" | "read_only" | "write_only" | "unauthorized", message: string) {
    super(code, message);
  }
}

export class DecryptFailed extends SecretsError {
  constructor(reason = "the value is not a ciphertext made with the current or a previous salt key") {
    super("decrypt_failed", `decryption failed: ${reason}`);
  }
}

export class EncryptionKeyMissing extends SecretsError {
  constructor(
    message = "no encryption key: set LITELLM_SALT_KEY or LITELLM_MASTER_KEY (or general_settings.master_key)",
  ) {
    super("encryption_key_missing", message);
  }
}

/** The start cannot go on: a bad config key, an empty salt key, a missing TLS file. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The longest `Retry-After` passed on, in seconds: a backend's (or a user's store's) day-long one is an hour. */
const MAX_RETRY_AFTER_S = 3_600;

/**
 * A 503's `Retry-After`: whole seconds from 1 to an hour, whatever came in (SPEC: every 503 has one a
 * client can read). A number past the hour, Infinity (a header of 400 digits) included, is the hour;
 * one not a number at all (an unparsed date) says nothing, so it is the default, 1.
 */
export function retryAfterSeconds(seconds = 1): number {
  return Number.isNaN(seconds) ? 1 : Math.min(MAX_RETRY_AFTER_S, Math.max(1, Math.ceil(seconds)));
}

export interface HttpError {
  status: number;
  headers: Record<string, string>;
  body: { error: { code: ErrorCode; message: string } & Omit<ErrorDetails, "retryAfter" | "allow"> };
}

/**
 * The one place errors become HTTP answers: status, headers (`Retry-After` on every 503, `Allow` on
 * 405, `WWW-Authenticate` on 401) and body. Unknown errors and `internal` ones become a bare 500
 * that says nothing of the error.
 */
export function toHttpError(err: unknown): HttpError {
  // `internal` says nothing, typed or not: its message may name a backend's failure.
  if (!(err instanceof SecretsError) || err.code === "internal") {
    return {
      status: 500,
      headers: {},
      body: { error: { code: "internal", message: "internal error" } },
    };
  }
  const { retryAfter, allow, ...details } = err.details;
  const headers: Record<string, string> = {};
  // A 503 always says when to come back.
  if (retryAfter !== undefined || err.status === 503) {
    headers["retry-after"] = String(retryAfterSeconds(retryAfter));
  }
  if (allow) headers.allow = allow.join(", ");
  if (err.code === "unauthorized") headers["www-authenticate"] = 'Bearer realm="llm-secrets"';
  return {
    status: err.status,
    headers,
    body: { error: { code: err.code, message: err.message, ...details } },
  };
}
