/**
 * A fake HashiCorp Vault over HTTPS (the tests' CA, fakes/pki.ts), answering as Vault's documented
 * HTTP API does, for what the `hashicorp_vault` store uses:
 *
 * - KV version 2 on the configured mounts (namespace included: `admin/secret`):
 *   `GET|POST|DELETE /v1/{mount}/data/{path}` (read, write with `options.cas`, soft delete of the
 *   latest version: its `deletion_time` set to now, unless it is destroyed or already past it),
 *   `PUT|POST /v1/{mount}/destroy/{path}` `{"versions":[...]}` (those versions' data gone for
 *   good, `destroyed: true`; 400 without versions) and `GET|POST /v1/{mount}/metadata/{path}`
 *   (`custom_metadata`, with Vault's checks: 400 for an empty, too long or unprintable key or
 *   value; `max_versions`, `cas_required`, `delete_version_after` in seconds or as a duration such
 *   as `"1h30m"`, read back as Go prints one, `"1h30m0s"`; each kept unless given, and a write with
 *   none of them does nothing), and `LIST /v1/{mount}/metadata/{folder}` (also `GET` with
 *   `?list=true`): the folder's keys, sorted, a folder as `name/`, soft-deleted secrets included
 *   (their metadata stays); no keys is 404 `{"errors":[]}`. A policy is asked about a list as
 *   `LIST` (Vault's `list` capability). Times are RFC 3339 with nanoseconds, as Vault writes them.
 * - KV version 2's version states, as vault-plugin-secrets-kv keeps them: a version written under
 *   `delete_version_after` gets a `deletion_time` that far in the future and is read as any live
 *   one until then (deleted from then on: at or before the fake's clock, which may stand still);
 *   past `max_versions` (10 when unset, as Vault's default) the oldest versions leave the metadata
 *   and `oldest_version` moves past them (0 until the first such pruning); `cas_required` refuses
 *   a write without `options.cas`.
 * - KV version 1 on `kv1Mounts` (builtin/logical/kv's passthrough): any path under one is a key,
 *   `GET` answers what was written as `data`, `POST`/`PUT` keep the JSON body (400 "missing data
 *   fields" when empty) and answer 204, `DELETE` 204, `LIST` the keys; nothing there is 404
 *   `{"errors":[]}`, as KV version 2 answers a missing secret.
 * - `GET /v1/sys/internal/ui/mounts/{path}` (what `vault kv` asks first): the mount holding the
 *   path, `type` `kv` with `options` `{"version":"2"}` (or `null` on a version 1 mount); no such
 *   mount, or a policy that allows no call at the mount, is 403 "preflight capability check
 *   returned 403" (Vault tells nothing of a mount to a token without access under it). Vault's
 *   router lets any token call it; the handler weighs the policy, here as "any method allowed on
 *   `{mount}/`".
 * - Namespaces as Vault joins them: `X-Vault-Namespace` + the request path.
 * - Token auth: `X-Vault-Token` on every call but logins; missing, unknown, revoked or expired is
 *   403 with "permission denied" and "invalid token" (Vault 1.16 and later; before, and with
 *   `legacyTokenErrors`, "permission denied" alone); a path the `policy` refuses is 403 with
 *   "permission denied" alone. Login tokens carry a TTL (and a max TTL) on the fake's clock, which
 *   a test may drive; `POST /v1/auth/token/renew-self` extends them, `GET
 *   /v1/auth/token/lookup-self` describes them (both allowed whatever the policy, as Vault's
 *   `default` policy does, and asked in the token's own namespace).
 * - AppRole login `POST /v1/auth/{mount}/login` `{role_id, secret_id}` and cert login
 *   `POST /v1/auth/cert/login` `{name}`, which takes only a client certificate the tests' CA signed
 *   (read off the TLS connection: real mutual TLS). A refused login is 400, as Vault's are.
 * - 404s as Vault's: an unknown route (no mount) `{"errors":["no handler for route ..."]}`; a
 *   missing secret, metadata or folder `{"errors":[]}`; a deleted or destroyed current version
 *   Vault's envelope with `data.data: null` and `data.metadata`, and no `errors` key.
 * - `requireRequestHeader`: as a Vault Agent or Proxy listener with `require_request_header`, 412
 *   for a request without `X-Vault-Request: true`.
 * - Faults, for the next N matching requests: a status (429 with `Retry-After`, 500, 503; with an
 *   optional body), a hang (no answer), a reset connection, a delay; and a hook run before one.
 *
 * Every request is recorded as it arrived (raw path, headers, JSON body, which TLS connection and
 * the client certificate it presented, when) so tests assert the request shape.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import type { TestPki } from "./pki";

export interface FakeVaultOptions {
  pki: TestPki;
  /** A token that never expires (Vault's root token). */
  rootToken?: string;
  /** KV v2 mounts, namespace first: `secret`, `admin/secret`, `kv-prod`. Default `secret`. */
  mounts?: string[];
  /** KV version 1 mounts, namespace first (`vault secrets enable kv`'s default). */
  kv1Mounts?: string[];
  approle?: { mountPath?: string; namespace?: string; roleId: string; secretId: string };
  /** A cert auth role that takes any client certificate of the tests' CA. */
  certRole?: { name: string; namespace?: string };
  /** Login tokens' lease and the most renewals may extend it to. */
  tokenTtlSeconds?: number;
  tokenMaxTtlSeconds?: number;
  /** Whether a token may do `method` on the path (namespace joined); default: everything. */
  policy?: (method: string, path: string) => boolean;
  /** Answer a bad token as Vault before 1.16 did: "permission denied" without "invalid token". */
  legacyTokenErrors?: boolean;
  /** The fake's clock (token expiry, KV times). */
  now?: () => number;
  /**
   * As a Vault Agent or Proxy listener with `require_request_header`: a request without
   * `X-Vault-Request: true` is 412, whatever its path.
   */
  requireRequestHeader?: boolean;
}

export type Fault =
  | { kind: "status"; status: number; retryAfter?: string; body?: unknown; location?: string }
  | { kind: "hang" }
  | { kind: "reset" }
  | { kind: "delay"; ms: number }
  | { kind: "hook"; run: () => void };

export interface RecordedRequest {
  method: string;
  /** The request target as it arrived (still percent-encoded). */
  url: string;
  headers: IncomingHttpHeaders;
  body: unknown;
  /** Which TLS connection carried it (1, 2, ...). */
  connection: number;
  /** The TLS connection resumed an earlier session (a session ticket) rather than a full handshake. */
  resumed: boolean;
  /** The client presented a certificate the tests' CA signed. */
  clientCertificate: boolean;
  /** The SHA-256 fingerprint of the certificate the client presented, signed by the CA or not (none: undefined). */
  presented: string | undefined;
  /** Wall-clock ms when it arrived (for backoff timing). */
  receivedAt: number;
}

interface Version {
  data: Record<string, unknown>;
  created: number;
  /** Its `deletion_time`: deleted once reached; in the future under `delete_version_after`. */
  deleted?: number;
  destroyed: boolean;
}

interface KvEntry {
  /** The versions the metadata still holds (`max_versions` prunes the oldest). */
  versions: Map<number, Version>;
  currentVersion: number;
  /** Vault's `oldest_version`: 0 until `max_versions` first prunes. */
  oldestVersion: number;
  custom: Record<string, string> | null;
  created: number;
  updated: number;
  /** 0: the default (10 versions). */
  maxVersions: number;
  casRequired: boolean;
  /** 0: versions are not deleted after a while. */
  deleteVersionAfterSeconds: number;
}

/** How many versions a key keeps when neither it nor its mount says (vault-plugin-secrets-kv's `defaultMaxVersions`). */
const DEFAULT_MAX_VERSIONS = 10;

interface Token {
  expiresAt?: number;
  maxExpiresAt?: number;
  ttlMs: number;
  /** The namespace it was issued in (its login's): its own operations (renew-self) are asked there. */
  namespace?: string;
}

interface PendingFault {
  fault: Fault;
  left: number;
  match: (r: RecordedRequest) => boolean;
}

/** Vault's time format: RFC 3339 with nanoseconds. */
function vaultTime(ms: number | undefined): string {
  return ms === undefined ? "" : new Date(ms).toISOString().replace(/Z$/, "123456Z");
}

export class FakeVault {
  readonly requests: RecordedRequest[] = [];
  readonly #server: Server;
  readonly #options: FakeVaultOptions;
  readonly #now: () => number;
  readonly #kv = new Map<string, KvEntry>();
  /** KV version 1 keys, `{mount}/{path}`: what each write sent. */
  readonly #kv1 = new Map<string, unknown>();
  readonly #tokens = new Map<string, Token>();
  readonly #faults: PendingFault[] = [];
  readonly #connections = new WeakMap<object, number>();
  #connectionCount = 0;
  url = "";

  private constructor(options: FakeVaultOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    if (options.rootToken) this.#tokens.set(options.rootToken, { ttlMs: 0 });
    const { pki } = options;
    this.#server = createServer(
      {
        key: readFileSync(pki.serverKeyFile),
        cert: readFileSync(pki.serverCertFile),
        ca: readFileSync(pki.caFile),
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        this.#receive(req, res).catch(() => res.destroy());
      },
    );
    this.#server.on("secureConnection", (socket) => {
      this.#connections.set(socket, ++this.#connectionCount);
    });
  }

  static async start(options: FakeVaultOptions): Promise<FakeVault> {
    const fake = new FakeVault(options);
    await new Promise<void>((resolve) => fake.#server.listen(0, "127.0.0.1", resolve));
    fake.url = `https://localhost:${(fake.#server.address() as AddressInfo).port}`;
    return fake;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** The next `times` requests matching `match` (default: any) meet `fault`. */
  inject(fault: Fault, times = 1, match: (r: RecordedRequest) => boolean = () => true): void {
    this.#faults.push({ fault, left: times, match });
  }

  /**
   * As a standby node behind the active one, or one cluster of two behind a balancer: while set,
   * no token is known on the paths that need one (logins still succeed), so each is "invalid".
   */
  behind = false;

  /** Revokes every token but the root token (as `vault token revoke` would). */
  revokeLoginTokens(): void {
    for (const token of [...this.#tokens.keys()]) if (token !== this.#options.rootToken) this.#tokens.delete(token);
  }

  /** Ends every login token's lease now, on the fake's clock (a TTL Vault cut short). */
  expireLoginTokens(): void {
    for (const held of this.#tokens.values()) if (held.expiresAt !== undefined) held.expiresAt = this.#now();
  }

  /** A secret version written behind the store's back (LiteLLM, the UI), at `path` = `{mount}/{path}`. */
  seed(path: string, data: Record<string, unknown>, custom?: Record<string, string>): void {
    const entry = this.#entry(path, true) as KvEntry;
    this.#addVersion(entry, data);
    if (custom) entry.custom = { ...custom };
  }

  /** What the fake holds at `{mount}/{path}` (undefined: nothing, not even metadata). */
  kv(path: string): { currentVersion: number; custom: Record<string, string> | null; live: boolean } | undefined {
    const entry = this.#kv.get(path);
    if (!entry) return undefined;
    const current = entry.versions.get(entry.currentVersion);
    return {
      currentVersion: entry.currentVersion,
      custom: entry.custom,
      live: current !== undefined && this.#readable(current),
    };
  }

  /** The keys a KV version 1 mount holds, `{mount}/{path}`, sorted. */
  kv1Keys(): string[] {
    return [...this.#kv1.keys()].sort();
  }

  /** Not destroyed, and its deletion time (if any) not reached. */
  #readable(version: Version): boolean {
    return !version.destroyed && (version.deleted === undefined || version.deleted > this.#now());
  }

  /** Requests of `method` whose raw target matches `pathPattern`. */
  calls(method: string, pathPattern: RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && pathPattern.test(r.url));
  }

  async #receive(req: IncomingMessage, res: ServerResponse): Promise<Answered | undefined> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    let body: unknown;
    if (raw !== "") {
      try {
        body = JSON.parse(raw);
      } catch {
        return send(res, 400, { errors: ["failed to parse JSON input"] });
      }
    }
    const socket = req.socket as TLSSocket;
    const recorded: RecordedRequest = {
      method: req.method ?? "",
      url: req.url ?? "",
      headers: req.headers,
      body,
      connection: this.#connections.get(socket) ?? 0,
      resumed: socket.isSessionReused(),
      clientCertificate: socket.authorized === true && Object.keys(socket.getPeerCertificate() ?? {}).length > 0,
      presented: socket.getPeerCertificate()?.fingerprint256,
      receivedAt: Date.now(),
    };
    this.requests.push(recorded);
    if (this.#options.requireRequestHeader && headerOf(req.headers["x-vault-request"]) !== "true") {
      return send(res, 412, { errors: ["missing 'X-Vault-Request' header"] });
    }

    const pending = this.#faults.find((f) => f.left > 0 && f.match(recorded));
    if (pending) {
      pending.left--;
      const { fault } = pending;
      if (fault.kind === "hang") return; // no answer: the connection closes with the server
      if (fault.kind === "reset") {
        socket.resetAndDestroy?.() ?? socket.destroy();
        return;
      }
      if (fault.kind === "status") {
        const headers: Record<string, string> = {
          ...(fault.retryAfter !== undefined && { "retry-after": fault.retryAfter }),
          // A standby's redirect to the active node (Vault's respondStandby: 307 and Location).
          ...(fault.location !== undefined && { location: fault.location }),
        };
        return send(res, fault.status, fault.body ?? { errors: [`fault ${fault.status}`] }, headers);
      }
      if (fault.kind === "delay") await new Promise((r) => setTimeout(r, fault.ms));
      if (fault.kind === "hook") fault.run();
    }
    return this.#route(recorded, req, res);
  }

  #route(r: RecordedRequest, req: IncomingMessage, res: ServerResponse): Answered {
    const [rawTarget = "", query = ""] = r.url.split("?");
    const target = rawTarget.replace(/^\/v1\//, "");
    // Vault takes LIST as a method, or as GET with `list` a true value (Go's ParseBool).
    const listParam = new URLSearchParams(query).get("list") ?? "";
    const method = r.method === "GET" && /^(1|t|T|TRUE|true|True)$/.test(listParam) ? "LIST" : r.method;
    let path: string;
    try {
      path = target.split("/").map(decodeURIComponent).join("/");
    } catch {
      return send(res, 400, { errors: ["invalid path"] });
    }
    const namespace = headerOf(req.headers["x-vault-namespace"])?.replace(/^\/+|\/+$/g, "");
    const full = namespace ? `${namespace}/${path}` : path;

    if (r.method === "POST" && this.#isApproleLogin(full)) return this.#approleLogin(r, res);
    if (r.method === "POST" && this.#isCertLogin(full)) return this.#certLogin(r, res);

    const token = headerOf(req.headers["x-vault-token"]);
    if (!this.#valid(token)) return this.#invalidToken(res);
    const self = /(?:^|\/)auth\/token\/(renew-self|lookup-self)$/.exec(full);
    if (self && (r.method === "POST" || (self[1] === "lookup-self" && r.method === "GET"))) {
      // As Vault Enterprise: a token issued in a namespace is not found outside it.
      const asked = full.slice(0, self.index).replace(/\/+$/, "") || undefined;
      if (asked !== this.#tokens.get(token as string)?.namespace) return this.#invalidToken(res);
      return self[1] === "renew-self" ? this.#renewSelf(token as string, res) : this.#lookupSelf(token as string, res);
    }
    const mountAsked = /^(?:(.+)\/)?sys\/internal\/ui\/mounts\/(.+)$/.exec(full);
    if (mountAsked && r.method === "GET") return this.#mountInfo(mountAsked[1], mountAsked[2] as string, res);
    if (this.#options.policy && !this.#options.policy(method, full)) {
      return send(res, 403, { errors: ["1 error occurred:\n\t* permission denied\n\n"] });
    }
    const v1 = [...(this.#options.kv1Mounts ?? [])].find((mount) => full.startsWith(`${mount}/`));
    if (v1 !== undefined && full.length > v1.length + 1) return this.#kv1Call(full, method, r.body, res);

    const kv = this.#kvRoute(full);
    if (kv?.kind === "metadata" && method === "LIST") return this.#list(kv.mount, kv.path, res);
    if (!kv || kv.path === "") {
      return send(res, 404, { errors: [`no handler for route "${full}". route entry not found.`] });
    }
    const key = `${kv.mount}/${kv.path}`;
    if (kv.kind === "data") {
      if (method === "GET") return this.#readData(key, res);
      if (r.method === "POST" || r.method === "PUT") return this.#writeData(key, r.body, res);
      if (r.method === "DELETE") return this.#deleteData(key, res);
    } else if (kv.kind === "destroy") {
      if (r.method === "POST" || r.method === "PUT") return this.#destroy(key, r.body, res);
    } else {
      if (method === "GET") return this.#readMetadata(key, res);
      if (r.method === "POST" || r.method === "PUT") return this.#writeMetadata(key, r.body, res);
    }
    return send(res, 405, { errors: ["1 error occurred:\n\t* unsupported operation\n\n"] });
  }

  #isApproleLogin(full: string): boolean {
    const approle = this.#options.approle;
    if (!approle) return false;
    const ns = approle.namespace ? `${approle.namespace}/` : "";
    return full === `${ns}auth/${approle.mountPath ?? "approle"}/login`;
  }

  #isCertLogin(full: string): boolean {
    const role = this.#options.certRole;
    if (!role) return false;
    return full === `${role.namespace ? `${role.namespace}/` : ""}auth/cert/login`;
  }

  #approleLogin(r: RecordedRequest, res: ServerResponse): Answered {
    const approle = this.#options.approle as NonNullable<FakeVaultOptions["approle"]>;
    const body = (r.body ?? {}) as { role_id?: unknown; secret_id?: unknown };
    if (body.role_id !== approle.roleId || body.secret_id !== approle.secretId) {
      return send(res, 400, { errors: ["invalid role or secret ID"] });
    }
    return this.#issue(res, { role_name: "llm-secrets" }, approle.namespace);
  }

  #certLogin(r: RecordedRequest, res: ServerResponse): Answered {
    const role = this.#options.certRole as NonNullable<FakeVaultOptions["certRole"]>;
    const name = (r.body as { name?: unknown } | undefined)?.name;
    if (!r.clientCertificate || (name !== undefined && name !== null && name !== role.name)) {
      return send(res, 400, { errors: ["invalid certificate or no client certificate supplied"] });
    }
    return this.#issue(res, { cert_name: role.name }, role.namespace);
  }

  #issue(res: ServerResponse, metadata: Record<string, string>, namespace?: string): Answered {
    const token = `hvs.${randomBytes(18).toString("base64url")}`;
    const ttlMs = (this.#options.tokenTtlSeconds ?? 3600) * 1000;
    const maxMs = (this.#options.tokenMaxTtlSeconds ?? (this.#options.tokenTtlSeconds ?? 3600) * 4) * 1000;
    const now = this.#now();
    this.#tokens.set(token, {
      ttlMs,
      expiresAt: now + ttlMs,
      maxExpiresAt: now + maxMs,
      ...(namespace && { namespace }),
    });
    return send(res, 200, {
      ...envelope(),
      auth: {
        client_token: token,
        accessor: randomBytes(12).toString("hex"),
        policies: ["default", "llm-secrets"],
        token_policies: ["default", "llm-secrets"],
        metadata,
        lease_duration: ttlMs / 1000,
        renewable: true,
        entity_id: "",
        token_type: "service",
        orphan: true,
      },
    });
  }

  /** Vault's answer to a missing, unknown, revoked or expired token (or one asked in another namespace). */
  #invalidToken(res: ServerResponse): Answered {
    const errors = this.#options.legacyTokenErrors
      ? ["permission denied"]
      : ["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"];
    return send(res, 403, { errors });
  }

  #lookupSelf(token: string, res: ServerResponse): Answered {
    const held = this.#tokens.get(token) as Token;
    const now = this.#now();
    const ttl = held.expiresAt === undefined ? 0 : Math.floor((held.expiresAt - now) / 1000);
    return send(res, 200, {
      ...envelope(),
      data: {
        accessor: randomBytes(12).toString("hex"),
        policies: ["default", "llm-secrets"],
        ttl,
        renewable: held.expiresAt !== undefined,
        namespace_path: held.namespace ? `${held.namespace}/` : "",
      },
    });
  }

  #renewSelf(token: string, res: ServerResponse): Answered {
    const held = this.#tokens.get(token) as Token;
    if (held.expiresAt === undefined || held.maxExpiresAt === undefined) {
      return send(res, 400, { errors: ["lease is not renewable"] });
    }
    const now = this.#now();
    held.expiresAt = Math.min(now + held.ttlMs, held.maxExpiresAt);
    return send(res, 200, {
      ...envelope(),
      auth: {
        client_token: token,
        policies: ["default", "llm-secrets"],
        lease_duration: Math.floor((held.expiresAt - now) / 1000),
        renewable: true,
      },
    });
  }

  #valid(token: string | undefined): boolean {
    if (token === undefined || this.behind) return false;
    const held = this.#tokens.get(token);
    return held !== undefined && (held.expiresAt === undefined || this.#now() < held.expiresAt);
  }

  /** `sys/internal/ui/mounts/{path}` asked in `namespace`: the mount that holds the path (vault's `pathInternalUIMountRead`). */
  #mountInfo(namespace: string | undefined, path: string, res: ServerResponse): Answered {
    const inNamespace = namespace ? `${namespace}/` : "";
    const asked = `${inNamespace}${path.replace(/\/*$/, "/")}`;
    const found = [
      ...(this.#options.mounts ?? ["secret"]).map((mount) => ({ mount, options: { version: "2" } })),
      ...(this.#options.kv1Mounts ?? []).map((mount) => ({ mount, options: null })),
    ]
      .filter(({ mount }) => asked.startsWith(`${mount}/`))
      .sort((a, b) => b.mount.length - a.mount.length)[0];
    const policy = this.#options.policy;
    const access = (mount: string) =>
      !policy || ["GET", "LIST", "POST", "DELETE"].some((method) => policy(method, `${mount}/`));
    if (found === undefined || !access(found.mount)) {
      const message = `preflight capability check returned 403, please ensure client's policies grant access to path "${asked.slice(inNamespace.length)}"`;
      return send(res, 403, { errors: [message] });
    }
    const relative = `${found.mount.slice(inNamespace.length)}/`;
    return send(res, 200, {
      ...envelope(),
      data: { type: "kv", description: "", options: found.options, path: relative, local: false, seal_wrap: false },
    });
  }

  /** A call on a KV version 1 mount: `full` is the key. */
  #kv1Call(full: string, method: string, body: unknown, res: ServerResponse): Answered {
    if (method === "LIST") {
      const folder = full.replace(/\/*$/, "/");
      const keys = new Set<string>();
      for (const key of this.#kv1.keys()) {
        if (!key.startsWith(folder)) continue;
        const rest = key.slice(folder.length);
        keys.add(rest.includes("/") ? `${rest.slice(0, rest.indexOf("/"))}/` : rest);
      }
      if (keys.size === 0) return send(res, 404, { errors: [] });
      return send(res, 200, { ...envelope(), data: { keys: [...keys].sort() } });
    }
    if (method === "GET") {
      const held = this.#kv1.get(full);
      return held === undefined ? send(res, 404, { errors: [] }) : send(res, 200, { ...envelope(), data: held });
    }
    if (method === "POST" || method === "PUT") {
      const empty = body === null || typeof body !== "object" || Object.keys(body).length === 0;
      if (empty) return send(res, 400, { errors: ["missing data fields"] });
      this.#kv1.set(full, body);
      return noContent(res);
    }
    if (method === "DELETE") {
      this.#kv1.delete(full);
      return noContent(res);
    }
    return send(res, 405, { errors: ["1 error occurred:\n\t* unsupported operation\n\n"] });
  }

  #kvRoute(full: string): { mount: string; kind: "data" | "metadata" | "destroy"; path: string } | undefined {
    const mounts = [...(this.#options.mounts ?? ["secret"])].sort((a, b) => b.length - a.length);
    for (const mount of mounts) {
      if (!full.startsWith(`${mount}/`)) continue;
      const rest = full.slice(mount.length + 1);
      const kind = rest.startsWith("data/")
        ? "data"
        : rest.startsWith("metadata/") || rest === "metadata"
          ? "metadata"
          : rest.startsWith("destroy/")
            ? "destroy"
            : undefined;
      if (!kind) return undefined;
      return { mount, kind, path: rest.slice(kind.length + 1) };
    }
    return undefined;
  }

  #entry(key: string, create: boolean): KvEntry | undefined {
    let entry = this.#kv.get(key);
    if (!entry && create) {
      const now = this.#now();
      entry = {
        versions: new Map(),
        currentVersion: 0,
        oldestVersion: 0,
        custom: null,
        created: now,
        updated: now,
        maxVersions: 0,
        casRequired: false,
        deleteVersionAfterSeconds: 0,
      };
      this.#kv.set(key, entry);
    }
    return entry;
  }

  /** A new current version (`KeyMetadata.AddVersion`): its deletion time set, the oldest past `max_versions` pruned. */
  #addVersion(entry: KvEntry, data: Record<string, unknown>): number {
    const now = this.#now();
    entry.currentVersion += 1;
    const after = entry.deleteVersionAfterSeconds;
    entry.versions.set(entry.currentVersion, {
      data,
      created: now,
      ...(after > 0 && { deleted: now + after * 1000 }),
      destroyed: false,
    });
    entry.updated = now;
    const max = entry.maxVersions > 0 ? entry.maxVersions : DEFAULT_MAX_VERSIONS;
    if (entry.currentVersion - entry.oldestVersion >= max) {
      const last = entry.currentVersion - max;
      for (let n = entry.oldestVersion; n <= last; n++) entry.versions.delete(n);
      entry.oldestVersion = last + 1;
    }
    return entry.currentVersion;
  }

  #versionMetadata(entry: KvEntry, number: number) {
    const version = entry.versions.get(number) as Version;
    return {
      created_time: vaultTime(version.created),
      custom_metadata: entry.custom,
      deletion_time: vaultTime(version.deleted),
      destroyed: version.destroyed,
      version: number,
    };
  }

  #readData(key: string, res: ServerResponse): Answered {
    const entry = this.#kv.get(key);
    const version = entry?.versions.get(entry.currentVersion);
    if (!entry || !version) return send(res, 404, { errors: [] });
    const metadata = this.#versionMetadata(entry, entry.currentVersion);
    if (!this.#readable(version)) return send(res, 404, { ...envelope(), data: { data: null, metadata } });
    return send(res, 200, { ...envelope(), data: { data: version.data, metadata } });
  }

  #writeData(key: string, body: unknown, res: ServerResponse): Answered {
    const { data, options } = (body ?? {}) as { data?: unknown; options?: { cas?: unknown } };
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      return send(res, 400, { errors: ["no data provided"] });
    }
    const existing = this.#kv.get(key);
    const cas = options?.cas;
    if (cas !== undefined && cas !== (existing?.currentVersion ?? 0)) {
      return send(res, 400, { errors: ["check-and-set parameter did not match the current version"] });
    }
    if (cas === undefined && existing?.casRequired) {
      return send(res, 400, { errors: ["check-and-set parameter required for this call"] });
    }
    const entry = this.#entry(key, true) as KvEntry;
    const version = this.#addVersion(entry, data as Record<string, unknown>);
    const { created_time, custom_metadata, deletion_time, destroyed } = this.#versionMetadata(entry, version);
    return send(res, 200, {
      ...envelope(),
      data: { created_time, custom_metadata, deletion_time, destroyed, version },
    });
  }

  #deleteData(key: string, res: ServerResponse): Answered {
    const entry = this.#kv.get(key);
    const version = entry?.versions.get(entry.currentVersion);
    // A deletion time still to come (`delete_version_after`) is brought to now; a destroyed or
    // deleted version stays as it is.
    if (version && this.#readable(version)) version.deleted = this.#now();
    return noContent(res);
  }

  /** `PUT /destroy/{path}`: the versions' data gone for good; missing or destroyed ones skipped. */
  #destroy(key: string, body: unknown, res: ServerResponse): Answered {
    const raw = (body as { versions?: unknown } | undefined)?.versions;
    // Vault's TypeCommaIntSlice: a list of numbers, or one string of them with commas.
    const listed = typeof raw === "string" ? raw.split(",").filter((n) => n.trim() !== "") : raw;
    const versions = (Array.isArray(listed) ? listed : []).map(Number);
    if (versions.length === 0) return send(res, 400, { errors: ["no version number provided"] });
    if (versions.some((n) => !Number.isInteger(n))) return send(res, 400, { errors: ["invalid versions"] });
    const entry = this.#kv.get(key);
    for (const n of versions) {
      const version = entry?.versions.get(n);
      if (version && !version.destroyed) {
        version.destroyed = true;
        version.data = {};
      }
    }
    return noContent(res);
  }

  /** The keys right under `{mount}/{folder}/`: secrets, and folders as `name/`. */
  #list(mount: string, folder: string, res: ServerResponse): Answered {
    const base = `${mount}/${folder === "" || folder.endsWith("/") ? folder : `${folder}/`}`;
    const keys = new Set<string>();
    for (const key of this.#kv.keys()) {
      if (!key.startsWith(base) || key === base) continue;
      const rest = key.slice(base.length);
      const cut = rest.indexOf("/");
      keys.add(cut === -1 ? rest : rest.slice(0, cut + 1));
    }
    if (keys.size === 0) return send(res, 404, { errors: [] });
    return send(res, 200, { ...envelope(), data: { keys: [...keys].sort() } });
  }

  #readMetadata(key: string, res: ServerResponse): Answered {
    const entry = this.#kv.get(key);
    if (!entry) return send(res, 404, { errors: [] });
    const versions = Object.fromEntries(
      [...entry.versions.entries()].map(([n, v]) => [
        String(n),
        { created_time: vaultTime(v.created), deletion_time: vaultTime(v.deleted), destroyed: v.destroyed },
      ]),
    );
    return send(res, 200, {
      ...envelope(),
      data: {
        cas_required: entry.casRequired,
        created_time: vaultTime(entry.created),
        current_version: entry.currentVersion,
        custom_metadata: entry.custom,
        delete_version_after: goDuration(entry.deleteVersionAfterSeconds),
        max_versions: entry.maxVersions,
        oldest_version: entry.oldestVersion,
        updated_time: vaultTime(entry.updated),
        versions,
      },
    });
  }

  #writeMetadata(key: string, body: unknown, res: ServerResponse): Answered {
    const fields = (body ?? {}) as {
      custom_metadata?: unknown;
      max_versions?: unknown;
      cas_required?: unknown;
      delete_version_after?: unknown;
    };
    const { custom_metadata: custom, max_versions: max, cas_required: cas, delete_version_after: after } = fields;
    // None of the fields: Vault answers and creates nothing.
    if ([custom, max, cas, after].every((field) => field === undefined)) return noContent(res);
    if (custom !== undefined) {
      const problem = customMetadataProblem(custom);
      if (problem) return send(res, 400, { errors: [`1 error occurred:\n\t* ${problem}\n\n`] });
    }
    if (max !== undefined && !(Number.isInteger(max) && (max as number) >= 0)) {
      return send(res, 400, { errors: ["max_versions: not a number of versions"] });
    }
    const afterSeconds = after === undefined ? undefined : durationSeconds(after);
    if (afterSeconds === null) return send(res, 400, { errors: ["delete_version_after: not a duration"] });
    const entry = this.#entry(key, true) as KvEntry;
    if (custom !== undefined) entry.custom = { ...(custom as Record<string, string>) };
    if (max !== undefined) entry.maxVersions = max as number;
    if (cas !== undefined) entry.casRequired = cas === true || cas === "true";
    if (afterSeconds !== undefined) entry.deleteVersionAfterSeconds = afterSeconds;
    entry.updated = this.#now();
    return noContent(res);
  }
}

/**
 * Vault's checks of `custom_metadata` (vault-plugin-secrets-kv's `validateCustomMetadata`): string
 * values, at most 64 keys; each key 1 to 128 bytes and each value 1 to 512, every character
 * printable (Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII
 * space; a tab, a newline or U+00A0 is not).
 */
function customMetadataProblem(custom: unknown): string | undefined {
  if (custom === null || typeof custom !== "object" || Array.isArray(custom)) return "custom_metadata must be a map";
  const entries = Object.entries(custom);
  const failed = "custom_metadata validation failed";
  if (entries.length > 64) return `${failed}: payload must contain at most 64 keys, provided ${entries.length}`;
  for (const [k, v] of entries) {
    if (typeof v !== "string") return `${failed}: value of ${k} is not a string`;
    const keyBytes = Buffer.byteLength(k);
    if (keyBytes === 0 || keyBytes > 128)
      return `${failed}: length of key is ${keyBytes} but must be 0 < len(key) <= 128`;
    const valueBytes = Buffer.byteLength(v);
    if (valueBytes === 0 || valueBytes > 512) {
      return `${failed}: length of value for key ${k} is ${valueBytes} but must be 0 < len(value) <= 512`;
    }
    if (!PRINTABLE.test(k)) return `${failed}: key contains unprintable characters`;
    if (!PRINTABLE.test(v)) return `${failed}: value for key ${k} contains unprintable characters`;
  }
  return undefined;
}

/** Go's `unicode.IsPrint` for every character. */
const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]*$/u;

/**
 * A `TypeDurationSecond` field: seconds as a number or a string of digits, or a Go duration
 * (`"1h30m"`, `"90s"`); null when it is neither (or negative).
 */
function durationSeconds(value: unknown): number | null {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? Math.floor(value) : null;
  if (typeof value !== "string") return null;
  if (/^\d+$/.test(value)) return Number(value);
  if (!/^(\d+(\.\d+)?(h|m|s|ms))+$/.test(value)) return null;
  const unit: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001 };
  let seconds = 0;
  for (const [, n, , u] of value.matchAll(/(\d+(\.\d+)?)(h|ms|m|s)/g)) seconds += Number(n) * (unit[u as string] ?? 0);
  return Math.floor(seconds);
}

/** Whole seconds as Go's `time.Duration.String` prints them: `0s`, `1m30s`, `1h0m0s`. */
function goDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

function envelope() {
  return {
    request_id: randomBytes(16).toString("hex"),
    lease_id: "",
    renewable: false,
    lease_duration: 0,
    data: null,
    wrap_info: null,
    warnings: null,
    auth: null,
  };
}

function headerOf(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** What a route returns once it has answered (so every branch says it did). */
type Answered = "answered";

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): Answered {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers }).end(text);
  return "answered";
}

function noContent(res: ServerResponse): Answered {
  res.writeHead(204).end();
  return "answered";
}
