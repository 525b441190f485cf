/**
 * `infisical`: Infisical's REST API with Universal Auth (LiteLLM's REST client, its env names),
 * over the one outbound client (outbound.ts and undici, loaded when the store opens).
 *
 * - Login: `POST {INFISICAL_URL}/api/v1/auth/universal-auth/login` with the client id and secret;
 *   the token is kept until a minute before its `expiresIn` (at least a minute), and a 401 on a
 *   call gets one fresh login and one more try. Concurrent callers share one login, and a call
 *   refused with a token another call has since replaced takes the new one, logging in no more.
 * - Settings: `INFISICAL_URL` (default `https://app.infisical.com`) must be an http(s) URL, and
 *   `INFISICAL_PROJECT_ID` is required; either wrong stops the start, named (LiteLLM takes an empty
 *   project id, and every call then fails).
 * - Secrets: `/api/v3/secrets/raw/{name}` in `INFISICAL_PROJECT_ID`, `INFISICAL_ENVIRONMENT`
 *   (default `dev`) and `INFISICAL_SECRET_PATH` (default `/`, a leading `/` added). Differs: the name
 *   and every query value are URL-encoded (LiteLLM concatenates them).
 * - Names: Infisical's create refuses a name with `/` or `:` (its `SecretNameSchema`: "Secret name
 *   cannot contain colon or forward slash", a validation failure, 422 today), so no such secret can
 *   exist: such a name is `400 invalid_name` before any call, for reads and deletes too (as Docker's
 *   store refuses `/`). So virtual keys cannot be stored here: their names are the prefix, a `/`
 *   (added to any prefix without one, as LiteLLM adds it), then the alias. With `store_virtual_keys`
 *   on, the store warns at open that each key event will be refused. Mapping `/` to Infisical's
 *   folders (`secretPath`) would keep the names, but needs each folder created first; it is not done.
 * - Read: `GET`, the value at `secret.secretValue`; Infisical's 404 for no such secret is none. Write:
 *   `POST` (with the description as `secretComment`, as LiteLLM), and when it exists (409, or 400
 *   whose message says so: Infisical's "Secret already exist") `PATCH` with the value only. Differs:
 *   another 400 is a failure (LiteLLM PATCHes on any 400). Delete: `DELETE`; Infisical's 404 for no
 *   such secret is `absent`.
 * - Infisical answers 404 too when the project, the environment or the folder is not there (before
 *   it looks for the secret): such a 404, or any 404 that is not its "secret not found", is
 *   `store_unavailable` naming the settings to check, for reads, writes and deletes alike (else a
 *   mistyped INFISICAL_ENVIRONMENT or INFISICAL_SECRET_PATH reads as every secret missing, deletes
 *   as done, and /ready as ready). Differs: LiteLLM reads any failure as no secret.
 * - Failures go through the one classifier (401/403 denied, 429/5xx unavailable with Retry-After).
 * Records: the value only; no change times (Infisical keeps none we can set), so no compare-and-set.
 */
import * as z from "zod/mini";
import { InvalidName } from "../errors";
import { BASE_URL_EXPECTED, isBaseUrl, type OutboundTls } from "../outbound-tls";
import type { DeleteOutcome, PutOptions, PutOutcome, SecretRecord, SecretStore, StoreFactory } from "../secret-store";
import { laxBoolean } from "../settings";
import { classifyBackendError, StoreUnavailable } from "../store-errors";
import { HttpAnswerError, SharedLogin } from "./http-store";

const DEFAULT_URL = "https://app.infisical.com";
/** Each call's deadline (the outbound client's own limit is 600 s, for streamed LLM answers). */
const CALL_TIMEOUT_MS = 30_000;

const NO_PROJECT = "set the id of the Infisical project that holds the secrets (its Project Settings show it)";

export const InfisicalSettings = z.object({
  // Read only for the warning at open (settings.ts parses and applies it): whether key events would
  // store virtual keys, whose names Infisical refuses.
  config: z.object({ store_virtual_keys: z.nullish(laxBoolean) }),
  env: z.object({
    INFISICAL_URL: z.optional(z.string().check(z.refine(isBaseUrl, BASE_URL_EXPECTED))),
    INFISICAL_CLIENT_ID: z.string().check(z.minLength(1, "set the Universal Auth client id")),
    INFISICAL_CLIENT_SECRET: z.string().check(z.minLength(1, "set the Universal Auth client secret")),
    // Every secrets call names the project (`workspaceId`): without one each would fail.
    INFISICAL_PROJECT_ID: z.string({ error: NO_PROJECT }).check(z.refine((id) => id.trim() !== "", NO_PROJECT)),
    INFISICAL_ENVIRONMENT: z.optional(z.string()),
    INFISICAL_SECRET_PATH: z.optional(z.string()),
  }),
});

/** The `message` of an Infisical error answer (`{ statusCode, message, error }`), when it has one. */
function messageOf(json: unknown): string | undefined {
  const message = (json as { message?: unknown } | null)?.message;
  return typeof message === "string" ? message : undefined;
}

/**
 * Whether a 400 on create says the secret exists: Infisical's `BadRequestError` "Secret already
 * exist" (its error handler answers `{ statusCode, message, error }`). Any other 400 is a failure.
 * The message is only matched, never repeated.
 */
function alreadyExists(json: unknown): boolean {
  return /\balready exists?\b/i.test(messageOf(json) ?? "");
}

/**
 * Whether a 404 says the secret is not there, in a folder that is: Infisical's `NotFoundError`
 * "Secret with name '…' not found" (read; its update says the name unquoted) or "Secret not found"
 * (delete). Its 404s for a project, an environment or a folder that is not there say "Project with
 * ID …", "Folder with path '…' in environment with slug '…' not found" instead. Only matched.
 */
const SECRET_NOT_FOUND = /^Secret (?:with name .* )?not found\.?$/s;
/** Infisical's 404 for an environment or a folder (a secret path) that is not in the project. */
const PLACE_NOT_FOUND = /^(?:Folder|Environment)\b.*\bnot found\b/is;
/** Infisical's 404 for a project that is not there (its bot lookup's "Project with ID … not found"). */
const PROJECT_NOT_FOUND = /^(?:Project|Workspace)\b.*\bnot found\b/is;

/** Infisical's `SecretNameSchema` refuses these in a secret's name. */
const REFUSED_IN_NAMES = /[/:]/;

/** Refuses, before any call, a name Infisical would refuse (so never holds). */
function checkName(name: string): void {
  if (REFUSED_IN_NAMES.test(name)) {
    throw new InvalidName(
      "Infisical takes no / or : in a secret's name (its folders are INFISICAL_SECRET_PATH), so no virtual key can be stored there: their names always hold a / after prefix_for_stored_virtual_keys",
    );
  }
}

type Send = (
  path: string,
  init: { method: string; body?: unknown; token?: string },
) => Promise<{ status: number; headers: Record<string, string | string[] | undefined>; json: unknown }>;

export class InfisicalStore implements SecretStore {
  readonly kind = "infisical";
  readonly #login = new SharedLogin(
    () => this.#logIn(),
    () => this.now(),
  );

  constructor(
    private readonly send: Send,
    private readonly env: z.output<typeof InfisicalSettings>["env"],
    private readonly now: () => number = Date.now,
  ) {}

  keyOf(name: string): string {
    return name;
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    checkName(name);
    const answer = await this.#call("GET", name, "infisical get");
    if (this.#absent(answer)) return undefined;
    if (answer.status !== 200) throw this.#failure(answer, "infisical get");
    const value = (answer.json as { secret?: { secretValue?: unknown } }).secret?.secretValue;
    return typeof value === "string" ? { value } : undefined;
  }

  async put(name: string, value: string, options?: PutOptions): Promise<PutOutcome> {
    // The description goes with a create only (LiteLLM's `secretComment`); an update keeps the secret's.
    checkName(name);
    const comment = options?.meta?.description ?? options?.meta?.whenCreated?.description;
    const created = await this.#call("POST", name, "infisical put", {
      secretKey: name,
      secretValue: value,
      ...(comment && { secretComment: comment }),
    });
    if (created.status === 200) return "created";
    if (!(created.status === 409 || (created.status === 400 && alreadyExists(created.json)))) {
      throw this.#failure(created, "infisical put");
    }
    const updated = await this.#call("PATCH", name, "infisical put", { secretValue: value });
    if (updated.status !== 200) throw this.#failure(updated, "infisical put");
    return "updated";
  }

  async delete(name: string): Promise<DeleteOutcome> {
    checkName(name);
    const answer = await this.#call("DELETE", name, "infisical delete", {});
    if (this.#absent(answer)) return "absent";
    if (answer.status !== 200) throw this.#failure(answer, "infisical delete");
    return "deleted";
  }

  /** Where a secret lives: the project, the environment and the folder. */
  #where() {
    const path = this.env.INFISICAL_SECRET_PATH ?? "/";
    return {
      workspaceId: this.env.INFISICAL_PROJECT_ID,
      environment: this.env.INFISICAL_ENVIRONMENT ?? "dev",
      secretPath: path.startsWith("/") ? path : `/${path}`,
    };
  }

  /** One authenticated call; a 401 gets one fresh login and one more try. */
  async #call(method: string, name: string, what: string, body?: Record<string, unknown>) {
    const where = this.#where();
    const path =
      method === "GET"
        ? `/api/v3/secrets/raw/${encodeURIComponent(name)}?${new URLSearchParams(where)}`
        : `/api/v3/secrets/raw/${encodeURIComponent(name)}`;
    const init = { method, ...(body !== undefined && { body: { ...where, ...body } }) };
    try {
      return await this.#login.call((token) => this.send(path, { ...init, token }));
    } catch (err) {
      throw classifyBackendError(err, what);
    }
  }

  /** A Universal Auth login: its token, used until a minute before it expires (at least a minute). */
  async #logIn(): Promise<{ token: string; lifeMs: number }> {
    const answer = await this.send("/api/v1/auth/universal-auth/login", {
      method: "POST",
      body: { clientId: this.env.INFISICAL_CLIENT_ID, clientSecret: this.env.INFISICAL_CLIENT_SECRET },
    });
    const { accessToken, expiresIn } = answer.json as { accessToken?: unknown; expiresIn?: unknown };
    if (answer.status !== 200 || typeof accessToken !== "string") {
      throw classifyBackendError(new HttpAnswerError("InfisicalResponseError", answer), "infisical login");
    }
    const seconds = typeof expiresIn === "number" ? expiresIn : 7200;
    return { token: accessToken, lifeMs: Math.max(seconds - 60, 60) * 1000 };
  }

  /** Whether an answer is Infisical's 404 for a secret that is not there (see `SECRET_NOT_FOUND`). */
  #absent(answer: { status: number; json: unknown }): boolean {
    return answer.status === 404 && SECRET_NOT_FOUND.test(messageOf(answer.json) ?? "");
  }

  /**
   * A failed answer as a typed error. A 404 that is not for a missing secret says the store points
   * where nothing is (project, environment, folder, or not Infisical at all): `store_unavailable`
   * naming the settings to check, with our own settings' environment and folder, never Infisical's
   * text (its message is only matched).
   */
  #failure(
    answer: { status: number; headers: Record<string, string | string[] | undefined>; json: unknown },
    what: string,
  ) {
    if (answer.status === 404 && !this.#absent(answer)) {
      const message = messageOf(answer.json) ?? "";
      const { environment, secretPath } = this.#where();
      if (PLACE_NOT_FOUND.test(message)) {
        return new StoreUnavailable(
          `${what}: Infisical has no folder ${JSON.stringify(secretPath)} in an environment ${JSON.stringify(environment)} of the project (HTTP 404): ` +
            "check INFISICAL_ENVIRONMENT (an environment's slug, default dev) and INFISICAL_SECRET_PATH (a folder that exists in it, default /)",
        );
      }
      if (PROJECT_NOT_FOUND.test(message)) {
        return new StoreUnavailable(
          `${what}: Infisical does not know the project (HTTP 404): check INFISICAL_PROJECT_ID (the id in its Project Settings)`,
        );
      }
      return new StoreUnavailable(
        `${what}: the address answered HTTP 404, but not as Infisical answers a missing secret: check INFISICAL_URL ` +
          "(it may reach a proxy or another service rather than Infisical), INFISICAL_PROJECT_ID, INFISICAL_ENVIRONMENT and INFISICAL_SECRET_PATH",
      );
    }
    return classifyBackendError(new HttpAnswerError("InfisicalResponseError", answer), what);
  }
}

/** The outbound client as `Send`: JSON in and out, the base URL's trailing slashes removed. */
async function sender(base: string, tls: OutboundTls | undefined): Promise<Send> {
  const { outboundAgent, request } = await import("../outbound");
  const dispatcher = outboundAgent(tls);
  const root = base.trim().replace(/\/+$/, "");
  return async (path, init) => {
    const res = await request(`${root}${path}`, {
      method: init.method as "GET",
      dispatcher,
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      headers: {
        "content-type": "application/json",
        ...(init.token && { authorization: `Bearer ${init.token}` }),
      },
      ...(init.body !== undefined && { body: JSON.stringify(init.body) }),
    });
    const text = await res.body.text();
    let json: unknown = {};
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      // not JSON: the status says enough
    }
    return { status: res.statusCode, headers: res.headers, json };
  };
}

export const infisicalStore = {
  kind: "infisical",
  settings: InfisicalSettings,
  defaults: {
    accessMode: "read_only",
    refreshIntervalVariable: "INFISICAL_REFRESH_INTERVAL",
    needsLocalKey: false,
    envBacked: false,
  },
  // No maxValueBytes: Infisical documents no limit of its own.
  capabilities: { writes: true, deletes: true, compareAndSet: false, records: [] },
  open: async (settings, deps) => {
    if (settings.config.store_virtual_keys === true) {
      deps.log.warn(
        "key events cannot store virtual keys on infisical: a virtual key's name is prefix_for_stored_virtual_keys, a / (added to a prefix without one, as LiteLLM adds it), then its alias, and Infisical takes no / in a secret's name; so each event that writes one is refused (invalid_name) and goes to the queue's dead letters. Set store_virtual_keys off, or keep virtual keys in another store",
      );
    }
    return new InfisicalStore(
      await sender(settings.env.INFISICAL_URL ?? DEFAULT_URL, deps.outbound),
      settings.env,
      deps.now,
    );
  },
} as const satisfies StoreFactory<"infisical", typeof InfisicalSettings>;
