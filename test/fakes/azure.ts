/**
 * A fake of Azure Key Vault (secrets) and of the Microsoft Entra ID token service, each on its own
 * HTTPS port with the tests' CA, following their documented wire protocols so that the real
 * `@azure/keyvault-secrets` and `@azure/identity` clients talk to them unchanged:
 *
 * Token service (what msal-node asks of an authority with instance discovery off):
 * - `GET /{tenant}/v2.0/.well-known/openid-configuration`: the OpenID metadata (issuer, endpoints).
 * - `POST /{tenant}/oauth2/v2.0/token`, form-encoded client-credentials grant: checks the tenant,
 *   `client_id`, `client_secret` and that `scope` asks for Key Vault (`https://vault.azure.net/.default`);
 *   answers `{"token_type":"Bearer","expires_in",...,"access_token"}` with an opaque token it
 *   remembers, or AAD's error shape `{"error","error_description":"AADSTS...","error_codes"}`.
 *
 * Key Vault REST (the `api-version` the SDK sends, checked against the service's known versions):
 * - Every request must carry `Authorization: Bearer <a token this fake issued for Key Vault>`.
 *   Without one the answer is the service's bearer challenge: `401` with
 *   `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
 *   resource="https://vault.azure.net"` (the SDK then gets a token for that resource and tenant).
 * - `PUT /secrets/{name}` (a new version: value, tags, contentType), `GET /secrets/{name}[/{version}]`
 *   (`/secrets/{name}/` is the latest), `PATCH /secrets/{name}/{version}` (attributes and tags of
 *   that version; tags given replace the version's tags), `DELETE /secrets/{name}` (soft delete: the
 *   secret, every version and its tags move to the deleted secrets), `GET /deletedsecrets/{name}`,
 *   `POST /deletedsecrets/{name}/recover`, `DELETE /deletedsecrets/{name}` (purge), and
 *   `GET /secrets?maxresults=N` (1 to 25, 25 when unset): `{"value":[SecretItem],"nextLink"}`, each
 *   item the secret's id, attributes and the current version's tags (never a value), soft-deleted
 *   secrets left out, by name; `nextLink` the full URL of the next page (`api-version`,
 *   `$skiptoken`, `maxresults`) while more remain, else null; a `$skiptoken` it did not give is 400.
 * - Names: `[0-9A-Za-z-]{1,127}`, case-insensitive (the first spelling is kept). Values at most
 *   25 000 UTF-8 bytes ("25k bytes"), at most 15 tags of names up to 512 and values up to 256
 *   characters. A soft-deleted name cannot be written (`409 Conflict`, inner
 *   `ObjectIsDeletedButRecoverable`); while a delete or a recovery is under way (`deletionDelayMs`,
 *   `recoveryDelayMs`, 0 by default) the name is in neither list and writes are `409`.
 * - Errors are `{"error":{"code","message"[,"innererror"]}}`: `SecretNotFound` (404),
 *   `BadParameter` (400), `Conflict` (409), `Forbidden` (403), `Throttled` (429).
 *
 * Faults: `failTokens(n, fault)` makes the next n token requests answer 503 or reset the connection.
 * `fail(n, fault[, only])` makes the next n authenticated requests (only those of an HTTP method,
 * `DELETE`, or of a method on a collection, `GET /deletedsecrets`, when given) answer 403, 429 (with
 * `Retry-After: throttleRetryAfter`, 1 s by default), 500, 503 (with that `Retry-After` too: the
 * service unavailable), hang (no answer until the client gives up) or reset the connection. The
 * challenge round trip itself is never faulted, so a fault lands on the operation under test.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, inject } from "vitest";
import { FaultQueue } from "./faults";

/** The identity the fake token service knows: one tenant, one app registration. */
export const FAKE_AZURE_IDENTITY = {
  tenantId: "8c3f0d2e-5a41-4b6e-9f07-1d2c3b4a5e60",
  clientId: "2b7e1c9a-4d3f-4a8b-b6c5-0e9f8d7c6b5a",
  clientSecret: "fake-azure-client-secret-for-tests-only",
};

/** The resource Key Vault names in its challenge, and the scope a token for it is asked with. */
export const KEY_VAULT_RESOURCE = "https://vault.azure.net";
const KEY_VAULT_SCOPE = `${KEY_VAULT_RESOURCE}/.default`;

/** api-versions the service answers (the SDK sends its latest; older clients send 7.x). */
const API_VERSIONS = new Set(["7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"]);
const MAX_VALUE_BYTES = 25_000;
const MAX_TAGS = 15;
const NAME = /^[0-9A-Za-z-]{1,127}$/;
const RETENTION_DAYS = 90;

export type AzureFault = "denied" | "throttled" | "error" | "unavailable" | "hang" | "reset";

export interface AzureRequestSeen {
  method: string;
  /** The path without the query, as sent (percent-encoding kept). */
  path: string;
  query: Record<string, string>;
  headers: IncomingMessage["headers"];
  /** The parsed JSON body, or undefined when there was none. */
  body: Record<string, unknown> | undefined;
  /** The answer's status (0 for a hang or a reset). */
  status: number;
}

export interface TokenRequestSeen {
  tenant: string;
  form: Record<string, string>;
  status: number;
}

export interface FakeSecretVersion {
  id: string;
  value: string;
  tags: Record<string, string>;
  contentType?: string;
  enabled: boolean;
  created: number;
  updated: number;
}

export interface FakeSecret {
  /** The name as first written (lookups ignore case). */
  name: string;
  versions: FakeSecretVersion[];
  /** Set while soft-deleted (and while the delete is under way). */
  deleted?: { at: number; visibleAt: number };
  /** Set while a recovery is under way. */
  recoveringUntil?: number;
}

class VaultError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly inner?: string,
  ) {
    super(message);
  }
}

export class FakeAzure {
  /** Every secret, live or soft-deleted, by lower-cased name. */
  readonly secrets = new Map<string, FakeSecret>();
  readonly requests: AzureRequestSeen[] = [];
  readonly tokenRequests: TokenRequestSeen[] = [];
  /** Every request to the token service (metadata and tokens), as `METHOD /path`. */
  readonly loginRequests: string[] = [];
  /** Tokens issued, with the scope they were issued for. */
  readonly tokens = new Map<string, { scope: string; expires: number }>();
  /** The resource the bearer challenge names (a test may make a vault ask for another audience). */
  challengeResource = KEY_VAULT_RESOURCE;
  /** When set, the challenge names its audience as this `scope` instead of a `resource`. */
  challengeScope: string | undefined = undefined;
  /** How long a delete, and a recovery, stay under way before the name shows in its new list. */
  deletionDelayMs = 0;
  recoveryDelayMs = 0;
  /** The `Retry-After` (seconds) of a throttled or unavailable answer. */
  throttleRetryAfter = 1;
  readonly #faults = new FaultQueue<AzureFault>();
  /** `$skiptoken`s given out in a `nextLink`: the lower-cased name of the last secret of their page. */
  readonly #skipTokens = new Map<string, string>();
  #tokenFaults: ("error" | "reset")[] = [];
  #vault: Server | undefined;
  #login: Server | undefined;
  #vaultUrl = "";
  #authorityHost = "";

  /** The vault's URI, as `AZURE_KEY_VAULT_URI` holds it. */
  get vaultUrl(): string {
    return this.#vaultUrl;
  }

  /** The token service's origin, as `AZURE_AUTHORITY_HOST` holds it. */
  get authorityHost(): string {
    return this.#authorityHost;
  }

  static async start(): Promise<FakeAzure> {
    const fake = new FakeAzure();
    const pki = inject("testPki");
    const tls = { key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) };
    fake.#vault = createServer(tls, (req, res) => void fake.#handleVault(req, res));
    fake.#login = createServer(tls, (req, res) => void fake.#handleLogin(req, res));
    for (const server of [fake.#vault, fake.#login]) await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    fake.#vaultUrl = `https://localhost:${(fake.#vault.address() as AddressInfo).port}`;
    fake.#authorityHost = `https://localhost:${(fake.#login.address() as AddressInfo).port}`;
    return fake;
  }

  /** The environment a user sets to reach this vault with a service principal. */
  env(): Record<string, string> {
    return {
      AZURE_KEY_VAULT_URI: this.#vaultUrl,
      AZURE_AUTHORITY_HOST: this.#authorityHost,
      AZURE_TENANT_ID: FAKE_AZURE_IDENTITY.tenantId,
      AZURE_CLIENT_ID: FAKE_AZURE_IDENTITY.clientId,
      AZURE_CLIENT_SECRET: FAKE_AZURE_IDENTITY.clientSecret,
    };
  }

  /** Forgets every secret, request and pending fault, and restores the defaults: a fresh vault. Issued tokens stay valid. */
  reset(): void {
    this.secrets.clear();
    this.#skipTokens.clear();
    this.requests.length = 0;
    this.tokenRequests.length = 0;
    this.loginRequests.length = 0;
    this.#faults.clear();
    this.#tokenFaults = [];
    this.challengeResource = KEY_VAULT_RESOURCE;
    this.challengeScope = undefined;
    this.deletionDelayMs = 0;
    this.recoveryDelayMs = 0;
    this.throttleRetryAfter = 1;
  }

  /** The next `times` authenticated vault requests (only of `only`, when given: `DELETE`, `GET /deletedsecrets`) fail with `fault`. */
  fail(times: number, fault: AzureFault, only?: string): void {
    this.#faults.add(times, fault, only);
  }

  /** The next `times` token requests answer 503 `temporarily_unavailable` (`error`) or reset the connection. */
  failTokens(times: number, fault: "error" | "reset"): void {
    for (let i = 0; i < times; i++) this.#tokenFaults.push(fault);
  }

  /** A secret made outside llm-secrets (the portal, the CLI): a version with no tags of ours. */
  seed(name: string, value: string, tags: Record<string, string> = {}): void {
    const now = Date.now();
    const secret = this.secret(name) ?? { name, versions: [] };
    secret.versions.push({ id: versionId(), value, tags, enabled: true, created: now, updated: now });
    this.secrets.set(name.toLowerCase(), secret);
  }

  secret(name: string): FakeSecret | undefined {
    return this.secrets.get(name.toLowerCase());
  }

  /** Vault requests with this method whose path starts with `prefix` (`/secrets/`, `/deletedsecrets/`). */
  calls(method: string, prefix = "/"): AzureRequestSeen[] {
    return this.requests.filter((r) => r.method === method && r.path.startsWith(prefix));
  }

  async close(): Promise<void> {
    for (const server of [this.#vault, this.#login]) {
      server?.closeAllConnections();
      await new Promise<void>((r) => server?.close(() => r()));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Token service

  async #handleLogin(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.#authorityHost);
    const raw = await readBody(req);
    this.loginRequests.push(`${req.method} ${url.pathname}`);
    const [, tenant = "", ...rest] = url.pathname.split("/");
    const route = rest.join("/");
    const answer = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json; charset=utf-8" });
      res.end(JSON.stringify(body));
    };
    if (tenant !== FAKE_AZURE_IDENTITY.tenantId) {
      return answer(400, aadError("invalid_tenant", 90002, `Tenant '${tenant}' not found.`));
    }
    if (req.method === "GET" && route === "v2.0/.well-known/openid-configuration") {
      const base = `${this.#authorityHost}/${tenant}`;
      return answer(200, {
        issuer: `${base}/v2.0`,
        authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
        token_endpoint: `${base}/oauth2/v2.0/token`,
        device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
        end_session_endpoint: `${base}/oauth2/v2.0/logout`,
        jwks_uri: `${this.#authorityHost}/${tenant}/discovery/v2.0/keys`,
        response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
        token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        tenant_region_scope: "EU",
      });
    }
    if (req.method === "POST" && route === "oauth2/v2.0/token") {
      const form = Object.fromEntries(new URLSearchParams(raw));
      const seen: TokenRequestSeen = { tenant, form, status: 200 };
      this.tokenRequests.push(seen);
      const fault = this.#tokenFaults.shift();
      if (fault === "reset") {
        seen.status = 0;
        req.socket.destroy();
        return;
      }
      if (fault === "error") {
        seen.status = 503;
        return answer(503, aadError("temporarily_unavailable", 90033, "A transient error has occurred."));
      }
      const refuse = (status: number, error: string, code: number, text: string) => {
        seen.status = status;
        answer(status, aadError(error, code, text));
      };
      if (req.headers["content-type"]?.split(";")[0] !== "application/x-www-form-urlencoded") {
        return refuse(400, "invalid_request", 900144, "The request body must be form-encoded.");
      }
      if (form.grant_type !== "client_credentials") {
        return refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.");
      }
      if (form.client_id !== FAKE_AZURE_IDENTITY.clientId) {
        return refuse(400, "unauthorized_client", 700016, "Application not found in the directory.");
      }
      if (form.client_secret !== FAKE_AZURE_IDENTITY.clientSecret) {
        return refuse(401, "invalid_client", 7000215, "Invalid client secret provided.");
      }
      const scopes = (form.scope ?? "").split(" ");
      if (!scopes.includes(KEY_VAULT_SCOPE)) {
        return refuse(400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid.");
      }
      const token = `fake-kv-${randomBytes(24).toString("hex")}`;
      this.tokens.set(token, { scope: KEY_VAULT_SCOPE, expires: Date.now() + 3_599_000 });
      return answer(200, { token_type: "Bearer", expires_in: 3599, ext_expires_in: 3599, access_token: token });
    }
    answer(404, aadError("invalid_request", 900023, "Unknown endpoint."));
  }

  // ---------------------------------------------------------------------------------------------
  // Key Vault

  async #handleVault(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.#vaultUrl);
    const raw = await readBody(req);
    const seen: AzureRequestSeen = {
      method: req.method ?? "",
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      body: undefined,
      status: 0,
    };
    this.requests.push(seen);
    const send = (status: number, body?: unknown, headers: Record<string, string> = {}) => {
      seen.status = status;
      if (res.headersSent) return;
      res.writeHead(status, {
        "content-type": "application/json; charset=utf-8",
        "x-ms-request-id": randomUUID(),
        "x-ms-keyvault-service-version": "1.9.2436.1",
        ...headers,
      });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    const fail = (err: VaultError, headers: Record<string, string> = {}) =>
      send(
        err.status,
        { error: { code: err.code, message: err.message, ...(err.inner && { innererror: { code: err.inner } }) } },
        headers,
      );

    try {
      if (raw !== "") {
        try {
          seen.body = JSON.parse(raw) as Record<string, unknown>;
        } catch {
          throw new VaultError(400, "BadParameter", "The request body is not valid JSON.");
        }
      }
      const version = url.searchParams.get("api-version");
      if (version === null) throw new VaultError(400, "BadParameter", "api-version is required.");
      if (!API_VERSIONS.has(version)) {
        throw new VaultError(400, "BadParameter", `The specified version (${version}) is not recognized.`);
      }
      if (!this.#authorized(req.headers.authorization)) {
        const tenant = FAKE_AZURE_IDENTITY.tenantId;
        const audience =
          this.challengeScope === undefined ? `resource="${this.challengeResource}"` : `scope="${this.challengeScope}"`;
        return fail(new VaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."), {
          "www-authenticate": `Bearer authorization="https://login.microsoftonline.com/${tenant}", ${audience}`,
        });
      }
      const method = req.method ?? "";
      const fault = this.#faults.take(method, `${method} /${url.pathname.split("/")[1] ?? ""}`);
      if (fault === "hang") return; // the client's timeout ends it
      if (fault === "reset") {
        req.socket.destroy();
        return;
      }
      if (fault === "denied") {
        throw new VaultError(
          403,
          "Forbidden",
          "The user, group or application does not have secrets permission on key vault.",
          "AccessDenied",
        );
      }
      if (fault === "throttled") {
        return fail(new VaultError(429, "Throttled", "Request was not allowed because the rate limit was exceeded."), {
          "retry-after": String(this.throttleRetryAfter),
        });
      }
      if (fault === "error") throw new VaultError(500, "InternalServerError", "An internal error occurred.");
      if (fault === "unavailable") {
        return fail(new VaultError(503, "ServiceUnavailable", "The service is temporarily unavailable."), {
          "retry-after": String(this.throttleRetryAfter),
        });
      }
      const [answer, status] = this.#route(req.method ?? "", url.pathname, seen.body, url.searchParams);
      send(status ?? 200, answer);
    } catch (err) {
      if (err instanceof VaultError) return fail(err);
      return fail(new VaultError(500, "InternalServerError", "fake failure"));
    }
  }

  #authorized(header: string | undefined): boolean {
    const token = /^Bearer (\S+)$/.exec(header ?? "")?.[1];
    const issued = token === undefined ? undefined : this.tokens.get(token);
    return issued !== undefined && issued.scope === KEY_VAULT_SCOPE && issued.expires > Date.now();
  }

  #route(
    method: string,
    path: string,
    body: Record<string, unknown> | undefined,
    query: URLSearchParams,
  ): [unknown, number?] {
    const parts = path.split("/").slice(1).map(decodeURIComponent);
    const [collection, name = "", rest = "", extra] = parts;
    if (method === "GET" && collection === "secrets" && parts.length === 1) return [this.#list(query)];
    if (!NAME.test(name)) throw new VaultError(400, "BadParameter", "The request URI contains an invalid name.");
    if (collection === "secrets" && extra === undefined) {
      if (method === "PUT" && rest === "" && parts.length === 2) return [this.#set(name, body ?? {})];
      if (method === "GET") return [this.#bundle(this.#live(name), rest || undefined, true)];
      if (method === "PATCH" && rest !== "") return [this.#update(name, rest, body ?? {})];
      if (method === "DELETE" && parts.length === 2) return [this.#delete(name)];
    }
    if (collection === "deletedsecrets") {
      if (method === "GET" && parts.length === 2) return [this.#deletedBundle(this.#deleted(name))];
      if (method === "POST" && rest === "recover" && extra === undefined) return [this.#recover(name)];
      if (method === "DELETE" && parts.length === 2) {
        this.secrets.delete(this.#deleted(name).name.toLowerCase());
        return [undefined, 204];
      }
    }
    throw new VaultError(404, "NotFound", "The requested resource was not found.");
  }

  /** A page of the live secrets' items, by name, and the link to the next page while more remain. */
  #list(query: URLSearchParams): unknown {
    const raw = query.get("maxresults");
    const size = raw === null ? 25 : Number(raw);
    if (!Number.isInteger(size) || size < 1 || size > 25) {
      throw new VaultError(400, "BadParameter", "maxresults must be between 1 and 25.");
    }
    const skip = query.get("$skiptoken");
    const after = skip === null ? "" : this.#skipTokens.get(skip);
    if (after === undefined) throw new VaultError(400, "BadParameter", "The skip token is not valid.");
    const now = Date.now();
    const live = [...this.secrets.entries()]
      .filter(([key, s]) => key > after && !s.deleted && !((s.recoveringUntil ?? 0) > now) && s.versions.length > 0)
      .sort(([a], [b]) => (a < b ? -1 : 1));
    const page = live.slice(0, size);
    const last = page.at(-1);
    let nextLink: string | null = null;
    if (live.length > size && last) {
      const token = randomBytes(18).toString("base64url");
      this.#skipTokens.set(token, last[0]);
      nextLink = `${this.#vaultUrl}/secrets?api-version=${query.get("api-version")}&$skiptoken=${token}&maxresults=${size}`;
    }
    const value = page.map(([, secret]) => ({
      ...this.#bundle(secret, undefined, false),
      id: `${this.#vaultUrl}/secrets/${secret.name}`,
    }));
    return { value, nextLink };
  }

  /** The secret if it is live (not deleted, not being recovered). */
  #live(name: string): FakeSecret {
    const secret = this.secret(name);
    if (!secret || secret.deleted || (secret.recoveringUntil ?? 0) > Date.now() || secret.versions.length === 0) {
      throw new VaultError(
        404,
        "SecretNotFound",
        `A secret with (name/id) ${name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command.`,
      );
    }
    secret.recoveringUntil = undefined;
    return secret;
  }

  /** The secret if it is soft-deleted and its delete has finished. */
  #deleted(name: string): FakeSecret {
    const secret = this.secret(name);
    if (!secret?.deleted || secret.deleted.visibleAt > Date.now()) {
      throw new VaultError(404, "SecretNotFound", `Deleted Secret not found: ${name}`);
    }
    return secret;
  }

  #set(name: string, body: Record<string, unknown>): unknown {
    const value = body.value;
    if (typeof value !== "string") throw new VaultError(400, "BadParameter", "Property value is required.");
    if (Buffer.byteLength(value, "utf8") > MAX_VALUE_BYTES) {
      throw new VaultError(400, "BadParameter", "Property value has invalid value: the secret is too large.");
    }
    const tags = checkTags(body.tags);
    const existing = this.secret(name);
    const now = Date.now();
    if (existing?.deleted) {
      const underWay = existing.deleted.visibleAt > now;
      throw new VaultError(
        409,
        "Conflict",
        underWay
          ? `Secret ${name} is currently being deleted.`
          : `Secret ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.`,
        underWay ? "ObjectIsBeingDeleted" : "ObjectIsDeletedButRecoverable",
      );
    }
    if (existing && (existing.recoveringUntil ?? 0) > now) {
      throw new VaultError(409, "Conflict", `Secret ${name} is currently being recovered.`, "ObjectIsBeingRecovered");
    }
    const secret = existing ?? { name, versions: [] };
    const attributes = (body.attributes ?? {}) as { enabled?: unknown };
    secret.versions.push({
      id: versionId(),
      value,
      tags,
      ...(typeof body.contentType === "string" && { contentType: body.contentType }),
      enabled: attributes.enabled !== false,
      created: now,
      updated: now,
    });
    this.secrets.set(name.toLowerCase(), secret);
    return this.#bundle(secret, undefined, true);
  }

  #update(name: string, version: string, body: Record<string, unknown>): unknown {
    const secret = this.#live(name);
    const target = secret.versions.find((v) => v.id === version);
    if (!target) throw new VaultError(404, "SecretNotFound", `Secret not found: ${name}/${version}`);
    if (body.tags !== undefined) target.tags = checkTags(body.tags);
    if (typeof body.contentType === "string") target.contentType = body.contentType;
    const attributes = (body.attributes ?? {}) as { enabled?: unknown };
    if (typeof attributes.enabled === "boolean") target.enabled = attributes.enabled;
    target.updated = Date.now();
    return this.#bundle(secret, version, false);
  }

  #delete(name: string): unknown {
    const secret = this.#live(name);
    const now = Date.now();
    secret.deleted = { at: now, visibleAt: now + this.deletionDelayMs };
    return this.#deletedBundle(secret);
  }

  #recover(name: string): unknown {
    const secret = this.#deleted(name);
    secret.deleted = undefined;
    secret.recoveringUntil = Date.now() + this.recoveryDelayMs;
    return this.#bundle(secret, undefined, false);
  }

  #bundle(secret: FakeSecret, versionId: string | undefined, withValue: boolean): Record<string, unknown> {
    const version = versionId === undefined ? secret.versions.at(-1) : secret.versions.find((v) => v.id === versionId);
    if (!version) throw new VaultError(404, "SecretNotFound", `Secret not found: ${secret.name}/${versionId}`);
    if (withValue && !version.enabled) {
      throw new VaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled");
    }
    return {
      ...(withValue && { value: version.value }),
      id: `${this.#vaultUrl}/secrets/${secret.name}/${version.id}`,
      ...(version.contentType !== undefined && { contentType: version.contentType }),
      attributes: {
        enabled: version.enabled,
        created: Math.floor(version.created / 1000),
        updated: Math.floor(version.updated / 1000),
        recoveryLevel: "Recoverable+Purgeable",
        recoverableDays: RETENTION_DAYS,
      },
      tags: version.tags,
    };
  }

  #deletedBundle(secret: FakeSecret): Record<string, unknown> {
    const { value: _value, ...bundle } = this.#bundle(secret, undefined, false);
    const at = secret.deleted?.at ?? Date.now();
    return {
      ...bundle,
      recoveryId: `${this.#vaultUrl}/deletedsecrets/${secret.name}`,
      deletedDate: Math.floor(at / 1000),
      scheduledPurgeDate: Math.floor(at / 1000) + RETENTION_DAYS * 86_400,
    };
  }
}

function versionId(): string {
  return randomBytes(16).toString("hex");
}

function checkTags(tags: unknown): Record<string, string> {
  if (tags === undefined || tags === null) return {};
  if (typeof tags !== "object" || Array.isArray(tags))
    throw new VaultError(400, "BadParameter", "Property has invalid value");
  const entries = Object.entries(tags as Record<string, unknown>);
  const valid = entries.every(
    ([k, v]) => k.length >= 1 && k.length <= 512 && typeof v === "string" && v.length >= 1 && v.length <= 256,
  );
  if (entries.length > MAX_TAGS || !valid) throw new VaultError(400, "BadParameter", "Property has invalid value");
  return Object.fromEntries(entries) as Record<string, string>;
}

function aadError(error: string, code: number, text: string): Record<string, unknown> {
  return {
    error,
    error_description: `AADSTS${code}: ${text} Trace ID: ${randomUUID()} Correlation ID: ${randomUUID()} Timestamp: ${new Date().toISOString()}`,
    error_codes: [code],
    timestamp: new Date().toISOString(),
    trace_id: randomUUID(),
    correlation_id: randomUUID(),
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * The fakes started on first use for this test file, with the environment a user of a service
 * principal sets (`AZURE_KEY_VAULT_URI`, the SDK's own `AZURE_AUTHORITY_HOST`, `AZURE_TENANT_ID`,
 * `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`) put in this process's environment, where the Azure
 * SDK's credential chain reads it; stopped after the file.
 */
export function lazyFakeAzure(): () => Promise<FakeAzure> {
  let started: Promise<FakeAzure> | undefined;
  afterAll(async () => (await started)?.close());
  return () => {
    started ??= FakeAzure.start().then((fake) => {
      Object.assign(process.env, fake.env());
      return fake;
    });
    return started;
  };
}
