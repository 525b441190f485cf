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
 * - Names: Infisical's secret names take no `/` or `:` (its `SecretNameSchema`: "Secret name cannot
 *   contain colon or forward slash", a validation failure, 422). So the parts of a name before its
 *   last `/` are folders under `INFISICAL_SECRET_PATH`, and the last part is the secret's name there:
 *   `litellm/team-a/key` is `key` in `{INFISICAL_SECRET_PATH}/litellm/team-a`, as a virtual key's
 *   name (the prefix, a `/`, the alias) needs. Folder names take only letters, digits, `-` and `_`
 *   (Infisical's `isValidFolderName`), so a name with another character before its last `/`, or with
 *   a `:`, is `400 invalid_name` before any call (Infisical would refuse it). With
 *   `store_virtual_keys` on, a prefix whose folders Infisical cannot name is warned about at open.
 *   Differs: LiteLLM sends the whole name, `/` and all, as the secret's name, which Infisical
 *   refuses (or, unencoded in the URL, does not route).
 * - Folders: a write whose folder is not there (Infisical's 404 for it) makes the folder (`POST
 *   /api/v2/folders`, which makes the missing folders above it too and answers an existing one as
 *   made) and creates the secret again, once; the identity needs Infisical's permission to create
 *   folders for that. A read or delete there is of no secret. Either is so only when
 *   `INFISICAL_SECRET_PATH` itself is there: one read at that folder of a name no secret has tells
 *   (else it is `store_unavailable` as below, and no folder is made under a mistyped path); its 403
 *   says it is there too (Infisical checks an identity allowed below it only after finding the
 *   folder). A create that still finds no folder just made is `backend_unavailable`, to retry
 *   (Infisical reads folders from a replica). A delete leaves its folder, empty or not.
 *   `INFISICAL_SECRET_PATH`'s own folders must be ones Infisical can name, or the start stops.
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
import { DEFAULT_VIRTUAL_KEY_PREFIX, laxBoolean } from "../settings";
import { BackendUnavailable, classifyBackendError, StoreUnavailable } from "../store-errors";
import { HttpAnswerError, SharedLogin } from "./http-store";

const DEFAULT_URL = "https://app.infisical.com";
/** Each call's deadline (the outbound client's own limit is 600 s, for streamed LLM answers). */
const CALL_TIMEOUT_MS = 30_000;

const NO_PROJECT = "set the id of the Infisical project that holds the secrets (its Project Settings show it)";

/** Infisical's folder names (its `isValidFolderName`). */
const FOLDER_NAME = /^[A-Za-z0-9_-]+$/;

/** Whether every folder of a `/`-separated path is one Infisical can name (empty parts aside: its `isValidSecretPath`). */
function nameableFolders(path: string): boolean {
  return path.split("/").every((folder) => folder === "" || FOLDER_NAME.test(folder));
}

export const InfisicalSettings = z.object({
  // Read only for the warning at open (settings.ts parses and applies them): whether key events
  // would store virtual keys, and under which prefixes (their folders here).
  config: z.object({
    store_virtual_keys: z.nullish(laxBoolean),
    prefix_for_stored_virtual_keys: z.optional(z.unknown()),
    team_settings: z.optional(z.unknown()),
  }),
  env: z.object({
    INFISICAL_URL: z.optional(z.string().check(z.refine(isBaseUrl, BASE_URL_EXPECTED))),
    INFISICAL_CLIENT_ID: z.string().check(z.minLength(1, "set the Universal Auth client id")),
    INFISICAL_CLIENT_SECRET: z.string().check(z.minLength(1, "set the Universal Auth client secret")),
    // Every secrets call names the project (`workspaceId`): without one each would fail.
    INFISICAL_PROJECT_ID: z.string({ error: NO_PROJECT }).check(z.refine((id) => id.trim() !== "", NO_PROJECT)),
    INFISICAL_ENVIRONMENT: z.optional(z.string()),
    INFISICAL_SECRET_PATH: z.optional(
      z
        .string()
        .check(
          z.refine(
            nameableFolders,
            "a folder path whose folders' names take only letters, digits, - and _ (Infisical refuses any other), such as / or /team-a",
          ),
        ),
    ),
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

/**
 * What is read at `INFISICAL_SECRET_PATH` to learn whether it is there: a name no secret has
 * (Infisical takes no `:` in one), so the read is answered "not found" from a folder that is there,
 * and no secret's value is read (nor shown as read in Infisical's audit log).
 */
const FOLDER_PROBE = "llm-secrets:folder-probe";

const FOLDERS_ONLY =
  "on Infisical the parts of a name before its last / are folders, whose names take only letters, digits, - and _";

/** Where a name lives under `INFISICAL_SECRET_PATH`: its folders (the parts before its last `/`) and its key. */
interface Place {
  folders: string[];
  key: string;
}

/** A name's place; a name Infisical would refuse (so never holds) is refused before any call. */
function placeOf(name: string): Place {
  if (name.includes(":")) throw new InvalidName("Infisical takes no : in a secret's name");
  const folders = name.split("/");
  const key = folders.pop() as string;
  if (!folders.every((folder) => FOLDER_NAME.test(folder))) throw new InvalidName(FOLDERS_ONLY);
  return { folders, key };
}

/**
 * The prefixes (general and teams') under which key events would store virtual keys whose folders
 * Infisical cannot name: each such event would be refused. The prefix gets its `/` as settings.ts
 * gives it one.
 */
function unfolderedPrefixes(config: z.output<typeof InfisicalSettings>["config"]): string[] {
  const prefixes: unknown[] = [config.prefix_for_stored_virtual_keys ?? DEFAULT_VIRTUAL_KEY_PREFIX];
  const teams = config.team_settings;
  if (teams !== null && typeof teams === "object") {
    for (const team of Object.values(teams)) {
      prefixes.push((team as { prefix_for_stored_virtual_keys?: unknown } | null)?.prefix_for_stored_virtual_keys);
    }
  }
  // A prefix settings.ts let through has no empty part but the one after its last `/`.
  return prefixes.filter((prefix): prefix is string => typeof prefix === "string" && !nameableFolders(prefix));
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
    const place = placeOf(name);
    const answer = await this.#secretCall("GET", place, "infisical get");
    if (this.#absent(answer) || (await this.#folderMissing(answer, place, "infisical get"))) return undefined;
    if (answer.status !== 200) throw this.#failure(answer, "infisical get");
    const value = (answer.json as { secret?: { secretValue?: unknown } }).secret?.secretValue;
    return typeof value === "string" ? { value } : undefined;
  }

  async put(name: string, value: string, options?: PutOptions): Promise<PutOutcome> {
    // The description goes with a create only (LiteLLM's `secretComment`); an update keeps the secret's.
    const place = placeOf(name);
    const comment = options?.meta?.description ?? options?.meta?.whenCreated?.description;
    const create = {
      secretKey: place.key,
      secretValue: value,
      ...(comment && { secretComment: comment }),
    };
    let created = await this.#secretCall("POST", place, "infisical put", create);
    if (await this.#folderMissing(created, place, "infisical put")) {
      await this.#makeFolders(place.folders);
      created = await this.#secretCall("POST", place, "infisical put", create);
      if (this.#noFolder(created)) {
        // Made, but not yet seen by the create (Infisical reads folders from a replica): try again.
        throw new BackendUnavailable(
          "infisical put: Infisical does not see the folder it has just made yet (HTTP 404): try again",
        );
      }
    }
    if (created.status === 200) return "created";
    if (!(created.status === 409 || (created.status === 400 && alreadyExists(created.json)))) {
      throw this.#failure(created, "infisical put");
    }
    const updated = await this.#secretCall("PATCH", place, "infisical put", { secretValue: value });
    if (updated.status === 200) return "updated";
    // Deleted between the create's "already exists" and the update (another writer): made anew,
    // once; changing again under this one, it is for the caller to try again.
    if (this.#absent(updated)) {
      const again = await this.#secretCall("POST", place, "infisical put", create);
      if (again.status === 200) return "created";
      if (again.status === 409 || (again.status === 400 && alreadyExists(again.json))) {
        throw new BackendUnavailable(
          "infisical put: the secret changed under this write (deleted, then made again): try again",
        );
      }
      throw this.#failure(again, "infisical put");
    }
    throw this.#failure(updated, "infisical put");
  }

  async delete(name: string): Promise<DeleteOutcome> {
    const place = placeOf(name);
    const answer = await this.#secretCall("DELETE", place, "infisical delete", {});
    if (this.#absent(answer) || (await this.#folderMissing(answer, place, "infisical delete"))) return "absent";
    if (answer.status !== 200) throw this.#failure(answer, "infisical delete");
    return "deleted";
  }

  /**
   * Where a secret lives: the project, the environment and the folder (`INFISICAL_SECRET_PATH`, a
   * leading `/` added, then `folders` below it).
   */
  #where(folders: readonly string[] = []) {
    const path = this.env.INFISICAL_SECRET_PATH ?? "/";
    const base = path.startsWith("/") ? path : `/${path}`;
    return {
      workspaceId: this.env.INFISICAL_PROJECT_ID,
      environment: this.env.INFISICAL_ENVIRONMENT ?? "dev",
      secretPath: folders.length === 0 ? base : `${base.replace(/\/+$/, "")}/${folders.join("/")}`,
    };
  }

  /** A call on one secret: its key in the path, where it lives in the query (GET) or the body. */
  #secretCall(method: string, place: Place, what: string, body?: Record<string, unknown>) {
    const where = this.#where(place.folders);
    const path = `/api/v3/secrets/raw/${encodeURIComponent(place.key)}`;
    return method === "GET"
      ? this.#call(method, `${path}?${new URLSearchParams(where)}`, what)
      : this.#call(method, path, what, { ...where, ...body });
  }

  /** One authenticated call; a 401 gets one fresh login and one more try. */
  async #call(method: string, path: string, what: string, body?: Record<string, unknown>) {
    const init = { method, ...(body !== undefined && { body }) };
    try {
      return await this.#login.call((token) => this.send(path, { ...init, token }));
    } catch (err) {
      throw classifyBackendError(err, what);
    }
  }

  /**
   * Whether an answer is Infisical's 404 for a folder of the name's own (below
   * `INFISICAL_SECRET_PATH`) that is not there: so only when that path is there, which a read of
   * `FOLDER_PROBE` at it tells (see the header).
   */
  async #folderMissing(answer: { status: number; json: unknown }, place: Place, what: string): Promise<boolean> {
    if (place.folders.length === 0 || !this.#noFolder(answer)) return false;
    const atBase = await this.#secretCall("GET", { folders: [], key: FOLDER_PROBE }, what);
    // Infisical looks up the folder before it checks the identity may read there: a 403 (an identity
    // allowed below the path only) says the path is there.
    if (atBase.status === 200 || atBase.status === 403 || this.#absent(atBase)) return true;
    if (atBase.status === 404) return false; // the path (or its environment) is not there: the caller's failure says so
    throw this.#failure(atBase, what);
  }

  /** Makes the name's folders below `INFISICAL_SECRET_PATH` (Infisical makes the missing ones above the last; an existing one is answered as made). */
  async #makeFolders(folders: readonly string[]): Promise<void> {
    const { workspaceId, environment, secretPath } = this.#where(folders.slice(0, -1));
    const answer = await this.#call("POST", "/api/v2/folders", "infisical folder create", {
      projectId: workspaceId,
      environment,
      name: folders.at(-1),
      path: secretPath,
    });
    if (answer.status !== 200) throw this.#failure(answer, "infisical folder create");
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

  /** Whether an answer is Infisical's 404 for a folder (or environment) that is not there (see `PLACE_NOT_FOUND`). */
  #noFolder(answer: { status: number; json: unknown }): boolean {
    return answer.status === 404 && PLACE_NOT_FOUND.test(messageOf(answer.json) ?? "");
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
    const unfoldered = settings.config.store_virtual_keys === true ? unfolderedPrefixes(settings.config) : [];
    if (unfoldered.length > 0) {
      deps.log.warn(
        `key events cannot store virtual keys on infisical under prefix_for_stored_virtual_keys ${unfoldered.map((p) => JSON.stringify(p)).join(", ")}: ` +
          `${FOLDERS_ONLY}; so each event that writes one is refused (invalid_name) and goes to the queue's dead letters. Choose a prefix such as litellm/`,
      );
    }
    return new InfisicalStore(
      await sender(settings.env.INFISICAL_URL ?? DEFAULT_URL, deps.outbound),
      settings.env,
      deps.now,
    );
  },
} as const satisfies StoreFactory<"infisical", typeof InfisicalSettings>;
