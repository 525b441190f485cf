/**
 * What the stores that call an HTTP API themselves (vault-http.ts, cyberark.ts, infisical.ts)
 * share. No undici here: each store takes it from `import("../outbound")` when it opens, so this
 * module is free to load at a cold start.
 */

/** A failed HTTP answer, as `classifyBackendError` reads it: the status and headers, never the body. */
export class HttpAnswerError extends Error {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;

  /** `name` goes into the classified error's message (`VaultResponseError`) and may decide it (`AuthenticationError`). */
  constructor(name: string, answer: { status: number; headers: Record<string, string | string[] | undefined> }) {
    super(`HTTP ${answer.status}`);
    this.name = name;
    this.status = answer.status;
    this.headers = answer.headers;
  }
}
