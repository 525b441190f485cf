/**
 * What the stores that call an HTTP API themselves share: `HttpAnswerError`, a failed answer for the
 * classifier (Vault, CyberArk, Infisical), and `SharedLogin`, a login's token shared by a store's
 * calls (CyberArk, Infisical; Vault's leases, renewals and 403 checks are vault-http.ts's own). No
 * undici here: each store takes it from `import("../outbound")` when it opens, so this module is
 * free to load at a cold start.
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

/**
 * A store's login token, shared by its calls: kept until its lifetime ends, one login at a time
 * (concurrent callers wait on it), and a call refused with 401 gets one fresh login and one more
 * try. A token a call was refused with is never handed out again; a newer one another call has
 * logged in for meanwhile is taken as it is, with no login of its own.
 */
export class SharedLogin {
  #token: { value: string; until: number } | undefined;
  #login: Promise<string> | undefined;

  /** `logIn`: one login's token and how long it may be used (ms); it throws for a refused login. */
  constructor(
    private readonly logIn: () => Promise<{ token: string; lifeMs: number }>,
    private readonly now: () => number,
  ) {}

  /** `send` with the token; after a 401, once more with a fresh (or newer) one. */
  async call<A extends { status: number }>(send: (token: string) => Promise<A>): Promise<A> {
    const token = await this.#tokenFor(undefined);
    const answer = await send(token);
    if (answer.status !== 401) return answer;
    return send(await this.#tokenFor(token));
  }

  /** The current token while it is young enough, else a fresh login's. `refused`: never reused. */
  async #tokenFor(refused: string | undefined): Promise<string> {
    const token = this.#token;
    if (token && token.value !== refused && this.now() < token.until) return token.value;
    this.#login ??= (async () => {
      try {
        const { token, lifeMs } = await this.logIn();
        this.#token = { value: token, until: this.now() + lifeMs };
        return token;
      } finally {
        this.#login = undefined;
      }
    })();
    return this.#login;
  }
}
