/**
 * A fake of Infisical's REST API over HTTPS (the tests' CA), as LiteLLM's REST client uses it:
 * Universal Auth login (`POST /api/v1/auth/universal-auth/login` with `clientId` and
 * `clientSecret`, answering `accessToken`, `expiresIn`), and raw secrets at
 * `/api/v3/secrets/raw/{name}` with `workspaceId`, `environment` and `secretPath` (query on GET,
 * body on POST/PATCH/DELETE). Every secrets call needs `Authorization: Bearer <token>` (401 else).
 * It knows its projects, their environments and each one's folders (`places`: by default project
 * `proj-1` with Infisical's default environments `dev`, `staging` and `prod`, each with its root
 * folder `/`), and answers as Infisical's secrets service does, in its order: a project it does not
 * know is 404 "Project with ID '…' not found during bot lookup. …", an environment or a folder
 * (`secretPath`, its trailing `/` removed as Infisical's routes remove it) it does not know 404 "Folder with path '…' in environment with slug '…' not found",
 * and only then the secret: a GET of a missing one 404 "Secret with name '…' not found", a PATCH
 * 404 "Secret with name … not found", a DELETE 404 "Secret not found" (each Infisical's
 * `NotFoundError` message, answered `{statusCode, message, error}`); a POST on an existing secret is
 * 400 "Secret already exist". A POST whose name holds `/` or `:` fails Infisical's
 * `SecretNameSchema` ("Secret name cannot contain colon or forward slash."): its error handler
 * answers a zod validation failure with 422 `{"statusCode":422,"error":"ValidationFailure",
 * "message":[issues]}`, and nothing is created (GET, PATCH and DELETE take any name: such a one
 * is never found). Folders are made as Infisical's `POST /api/v2/folders` makes them (its folder
 * service): `{projectId, environment, name, path}`, a `name` of other than letters, digits, `-` and
 * `_` a 422 validation failure, an environment it does not know 404 "Environment with slug '…' in
 * project with ID '…' not found", the missing folders above `path` made too, and an existing folder
 * answered as made (`{folder}`). A path with a folder Infisical could not name is 400 "Invalid secret
 * path. …" (its folder lookup's). With `secretsBelow`, the identity's secret permissions hold below
 * that path only: 403 for a create or update elsewhere before the folder is looked up, for a read or
 * delete after (as Infisical's secrets service checks them). Records each request (the path as sent, still encoded, and the JSON
 * body), counts logins, answers the `expiresIn` it is given, injects faults and holds answers.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, inject } from "vitest";

/** Infisical's folder lookup of a path with a folder it could not name (its `isValidSecretPath`). */
const INVALID_PATH = {
  statusCode: 400,
  message: "Invalid secret path. Only alphanumeric characters, dashes, and underscores are allowed.",
  error: "BadRequest",
};
const DENIED = { statusCode: 403, message: "You are not allowed to access this secret", error: "PermissionDenied" };

function validPath(path: string): boolean {
  return path.split("/").every((folder) => folder === "" || /^[a-zA-Z0-9-_]+$/.test(folder));
}

export const INFISICAL_CLIENT = { clientId: "client-id-test", clientSecret: "client-secret-test-0123456789" };

export interface InfisicalRequest {
  method: string;
  url: string;
  authorization?: string;
  body: Record<string, unknown>;
}

/** Infisical's default environments of a new project, each with its root folder. */
function defaultPlaces(): Map<string, Map<string, Set<string>>> {
  return new Map([["proj-1", new Map(["dev", "staging", "prod"].map((env) => [env, new Set(["/"])]))]]);
}

export class FakeInfisical {
  /** `workspaceId|environment|secretPath|name` -> value. */
  readonly secrets = new Map<string, string>();
  /** Project id -> environment slug -> its folders' paths (`/`, `/team-a`). */
  places = defaultPlaces();
  readonly requests: InfisicalRequest[] = [];
  readonly tokens = new Set<string>();
  #faults: { status: number | "reset"; retryAfter?: string; message: string }[] = [];
  #holds: { match: (r: InfisicalRequest) => boolean; arrived: () => void; released: Promise<void> }[] = [];
  /** The path the identity's secret permissions are limited to (its folders and theirs), when they are. */
  secretsBelow: string | undefined;
  /** Whether folder creates are refused as an identity without Infisical's permission to create folders (403). */
  denyFolders = false;
  /** The `expiresIn` (seconds) a login answers. */
  expiresIn = 7200;
  #server: Server | undefined;
  url = "";

  static async start(): Promise<FakeInfisical> {
    const fake = new FakeInfisical();
    const pki = inject("testPki");
    fake.#server = createServer(
      { key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) },
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (d: Buffer) => {
          chunks.push(d);
        });
        req.on("end", () => {
          const raw = Buffer.concat(chunks).toString("utf8"); // decoded whole: a character may span chunks
          const recorded: InfisicalRequest = {
            method: req.method ?? "",
            url: req.url ?? "",
            authorization: req.headers.authorization,
            body: raw ? (JSON.parse(raw) as Record<string, unknown>) : {},
          };
          fake.requests.push(recorded);
          const hold = fake.#holds.find((h) => h.match(recorded));
          if (!hold) return fake.#answer(recorded, res);
          fake.#holds.splice(fake.#holds.indexOf(hold), 1);
          hold.arrived();
          void hold.released.then(() => fake.#answer(recorded, res));
        });
      },
    );
    await new Promise<void>((r) => fake.#server?.listen(0, "127.0.0.1", r));
    fake.url = `https://localhost:${(fake.#server.address() as AddressInfo).port}`;
    return fake;
  }

  #answer(r: InfisicalRequest, res: ServerResponse) {
    const answer = (status: number, json: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify(json));
    };
    const fault = this.#faults.shift();
    if (fault?.status === "reset") return res.socket?.destroy();
    if (fault) {
      const headers: Record<string, string> = fault.retryAfter ? { "retry-after": fault.retryAfter } : {};
      return answer(fault.status, { statusCode: fault.status, message: fault.message }, headers);
    }
    const { body } = r;
    const url = new URL(r.url, "https://fake");
    if (r.method === "POST" && url.pathname === "/api/v1/auth/universal-auth/login") {
      if (body.clientId !== INFISICAL_CLIENT.clientId || body.clientSecret !== INFISICAL_CLIENT.clientSecret) {
        return answer(401, { message: "Invalid credentials" });
      }
      const token = `tok-${randomBytes(8).toString("hex")}`;
      this.tokens.add(token);
      return answer(200, { accessToken: token, expiresIn: this.expiresIn, tokenType: "Bearer" });
    }
    const m = /^\/api\/v3\/secrets\/raw\/([^/]+)$/.exec(url.pathname);
    const folders = r.method === "POST" && url.pathname === "/api/v2/folders";
    if (!m && !folders) return answer(404, { message: "no such route" });
    const token = /^Bearer (.+)$/.exec(r.authorization ?? "")?.[1];
    if (!token || !this.tokens.has(token)) return answer(401, { message: "Token invalid" });
    if (folders && this.denyFolders) {
      return answer(403, {
        statusCode: 403,
        message: "You are not allowed to create on secretFolders",
        error: "PermissionDenied",
      });
    }
    if (folders) return this.#makeFolder(body, answer);
    const name = decodeURIComponent(m?.[1] as string);
    const given: Record<string, unknown> = r.method === "GET" ? Object.fromEntries(url.searchParams) : body;
    // The routes' secretPath: its trailing / removed (Infisical's removeTrailingSlash), but for the root.
    const path = String(given.secretPath ?? "/");
    const where: Record<string, unknown> = {
      ...given,
      secretPath: path !== "/" && path.endsWith("/") ? path.slice(0, -1) : path,
    };
    const key = [where.workspaceId, where.environment, where.secretPath, name].join("|");
    // The route's params schema (SecretNameSchema), checked before anything else.
    if (r.method === "POST" && /[/:]/.test(name)) {
      return answer(422, {
        statusCode: 422,
        error: "ValidationFailure",
        message: [
          { code: "custom", message: "Secret name cannot contain colon or forward slash.", path: ["secretName"] },
        ],
      });
    }
    // Infisical's NotFoundError, as its error handler answers it.
    const notFound = (message: string, error = "NotFound") => answer(404, { statusCode: 404, message, error });
    // The project (its bot lookup), then the folder at the path in the environment, then the secret.
    const project = this.places.get(String(where.workspaceId));
    if (!project) {
      return notFound(
        `Project with ID '${where.workspaceId}' not found during bot lookup. Are you sure you are using the correct project ID?`,
      );
    }
    // Its folder lookup refuses a path with a folder it could not name (`isValidSecretPath`).
    if (!validPath(String(where.secretPath))) return answer(400, INVALID_PATH);
    // An identity allowed below a path only: a create or an update is checked first (`Create`/`Edit`).
    if ((r.method === "POST" || r.method === "PATCH") && !this.#allowed(String(where.secretPath))) {
      return answer(403, DENIED);
    }
    if (!project.get(String(where.environment))?.has(String(where.secretPath))) {
      const operation = { GET: "GetSecretByName", POST: "CreateSecret", PATCH: "UpdateSecret" }[r.method as "GET"];
      return notFound(
        `Folder with path '${where.secretPath}' in environment with slug '${where.environment}' not found`,
        operation ?? "DeleteSecret",
      );
    }
    // A read or a delete checks the identity's permission only once its folder is found.
    if (!this.#allowed(String(where.secretPath))) return answer(403, DENIED);
    switch (r.method) {
      case "GET":
        return this.secrets.has(key)
          ? answer(200, { secret: { secretKey: name, secretValue: this.secrets.get(key), version: 1 } })
          : notFound(`Secret with name '${name}' not found`);
      case "POST":
        // Infisical's BadRequestError, as its error handler answers it.
        if (this.secrets.has(key)) {
          return answer(400, { statusCode: 400, message: "Secret already exist", error: "BadRequest" });
        }
        this.secrets.set(key, String(body.secretValue));
        return answer(200, { secret: { secretKey: name } });
      case "PATCH":
        if (!this.secrets.has(key)) return notFound(`Secret with name ${name} not found`);
        this.secrets.set(key, String(body.secretValue));
        return answer(200, { secret: { secretKey: name } });
      case "DELETE":
        if (!this.secrets.delete(key)) return notFound("Secret not found");
        return answer(200, { secret: { secretKey: name } });
      default:
        return answer(405, { message: "method" });
    }
  }

  /** `POST /api/v2/folders`, as Infisical's route and folder service answer it (see the header). */
  #makeFolder(body: Record<string, unknown>, answer: (status: number, json: unknown) => void) {
    const name = String(body.name ?? "").trim();
    if (!/^[a-zA-Z0-9-_]+$/.test(name)) {
      return answer(422, {
        statusCode: 422,
        error: "ValidationFailure",
        message: [
          {
            code: "custom",
            message: "Invalid folder name. Only alphanumeric characters, dashes, and underscores are allowed.",
            path: ["name"],
          },
        ],
      });
    }
    // The route's path: a leading / added, a trailing one removed.
    const parent = `/${String(body.path ?? "/").trim()}`.replace(/^\/+/, "/").replace(/(.)\/+$/, "$1");
    const paths = this.places.get(String(body.projectId))?.get(String(body.environment));
    if (paths && !validPath(parent)) return answer(400, INVALID_PATH);
    if (!paths) {
      return answer(404, {
        statusCode: 404,
        message: `Environment with slug '${body.environment}' in project with ID '${body.projectId}' not found`,
        error: "NotFound",
      });
    }
    const segments = [...parent.split("/").filter(Boolean), name];
    for (let i = 1; i <= segments.length; i++) paths.add(`/${segments.slice(0, i).join("/")}`);
    return answer(200, { folder: { id: randomBytes(8).toString("hex"), name, path: `/${segments.join("/")}` } });
  }

  /** Logins answered so far (since the last reset). */
  get logins(): number {
    return this.requests.filter((r) => r.url === "/api/v1/auth/universal-auth/login").length;
  }

  /**
   * The next request matching `match` is recorded but answered only once `release()` is called (a
   * slow answer); `arrived` settles when it has come in.
   */
  hold(match: (r: InfisicalRequest) => boolean): { arrived: Promise<void>; release: () => void } {
    let arrived = () => {};
    let release = () => {};
    const arrival = new Promise<void>((resolve) => {
      arrived = resolve;
    });
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.#holds.push({ match, arrived, released });
    return { arrived: arrival, release };
  }

  /** Creates a folder at `path` in `environment` of `project` (the environment and project too, when new). */
  addFolder(path: string, environment = "dev", project = "proj-1"): void {
    const environments = this.places.get(project) ?? new Map<string, Set<string>>();
    this.places.set(project, environments);
    environments.set(environment, (environments.get(environment) ?? new Set(["/"])).add(path));
  }

  reset(): void {
    this.secrets.clear();
    this.places = defaultPlaces();
    this.requests.length = 0;
    this.#faults = [];
    this.#holds = [];
    this.expiresIn = 7200;
    this.denyFolders = false;
    this.secretsBelow = undefined;
  }

  /** Whether the identity may use secrets at `path` (`secretsBelow`). */
  #allowed(path: string): boolean {
    const below = this.secretsBelow;
    return below === undefined || path === below || path.startsWith(`${below}/`);
  }

  /**
   * The next `times` requests answer `status` (with a Retry-After when given, and `message` in the
   * body), or find their connection dropped (`"reset"`).
   */
  fail(times: number, status: number | "reset", retryAfter?: string, message = "injected"): void {
    for (let i = 0; i < times; i++) this.#faults.push({ status, message, ...(retryAfter && { retryAfter }) });
  }

  async close(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((r) => this.#server?.close(() => r()));
  }
}

/** The fake started on first use for this test file, closed after it. */
export function lazyFakeInfisical(): () => Promise<FakeInfisical> {
  let started: Promise<FakeInfisical> | undefined;
  afterAll(async () => (await started)?.close());
  return () => {
    started ??= FakeInfisical.start();
    return started;
  };
}
