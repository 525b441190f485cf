/**
 * A fake of CyberArk Conjur's REST API over HTTPS (the tests' CA), as its API documents it:
 *
 * - `POST /authn/{account}/{login}/authenticate` (the login one encoded segment: `host%2Fapp`) with
 *   the API key as the body: without the right key it is 401, whatever client certificate the
 *   connection presented (Conjur's `authn` authenticates by API key only; a certificate is mutual
 *   TLS on top, recorded as `clientCertificate`). The answer is the token, a JSON document; calls send
 *   it back as `Authorization: Token token="<base64 of its bytes>"`. Tokens live 8 minutes of the
 *   fake's clock (`now`); an unknown, expired or revoked one is 401.
 * - `POST /policies/{account}/policy/{branch}` (add-only load) with a YAML policy: each
 *   `!variable` item declares `{id}`, or `{branch}/{id}` in a branch other than `root`. A load takes
 *   `policyLoadMs`; one arriving while another load of that branch runs is 409 with a `Retry-After`
 *   (`conflictRetryAfter`; Conjur's policies controller says 1 to 8 s). An unknown branch is 404, a
 *   policy that does not parse 422.
 * - `GET /resources/{account}/variable?limit&offset`: the variables in id order, each with its
 *   versions; with `listLimitMax` (Conjur's `api_resource_list_limit_max`), a larger limit is 422
 *   "'Limit' parameter must not exceed N".
 * - `GET /secrets/{account}/variable/{id}` (the id encoded) answers the last value's raw bytes;
 *   404 for an undeclared variable or one without a value. `POST` on it adds a value (201), the raw
 *   body's bytes; 404 when undeclared, 422 when the body is blank (Conjur's `blank?`).
 *
 * Records each request (the path as sent, still encoded, the body's bytes, and the client
 * certificate the connection presented) and injects faults.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { afterAll, inject } from "vitest";
import { isSeq, parseDocument, Scalar } from "yaml";

export const CYBERARK_ACCOUNT = "acme";
export const CYBERARK_LOGIN = { login: "host/app 1", apiKey: "conjur-api-key-test-0123456789" };
/** How long Conjur's tokens live. */
export const TOKEN_TTL_MS = 8 * 60_000;

export interface ConjurRequest {
  method: string;
  /** The request target as sent (still encoded). */
  url: string;
  authorization?: string;
  contentType?: string;
  body: Buffer;
  /** The client presented a certificate the tests' CA signed. */
  clientCertificate: boolean;
  /** The SHA-256 fingerprint of the certificate the client presented, signed by the CA or not (none: undefined). */
  presented: string | undefined;
  /** The status the fake answered. */
  status?: number;
}

interface Fault {
  /** An answer's status, or `"reset"`: the connection dropped. */
  status: number | "reset";
  retryAfter?: string;
  match: (r: ConjurRequest) => boolean;
}

export class FakeConjur {
  /** Variable id -> its values, oldest first (declared: present, maybe with none). */
  readonly variables = new Map<string, Buffer[]>();
  readonly requests: ConjurRequest[] = [];
  /** Policy branches that exist besides `root`. */
  readonly branches = new Set<string>(["apps/llm"]);
  /** Every token issued: base64 of its exact bytes -> when it expires. */
  readonly tokens = new Map<string, number>();
  /** The tokens' exact bytes, as issued. */
  readonly issued: Buffer[] = [];
  /** The fake's clock (tokens' lifetime). */
  now: () => number = Date.now;
  /** How long a policy load runs. */
  policyLoadMs = 20;
  /** The `Retry-After` of a 409 for a policy load while another runs (Conjur's: 1 to 8 s). */
  conflictRetryAfter = "1";
  /** The largest list limit taken (Conjur's `api_resource_list_limit_max`; none by default). */
  listLimitMax: number | undefined;
  #loading = new Set<string>();
  #faults: Fault[] = [];
  #server: Server | undefined;
  url = "";

  static async start(options: { key?: Buffer; cert?: Buffer } = {}): Promise<FakeConjur> {
    const fake = new FakeConjur();
    const pki = inject("testPki");
    fake.#server = createServer(
      {
        key: options.key ?? readFileSync(pki.serverKeyFile),
        cert: options.cert ?? readFileSync(pki.serverCertFile),
        ca: readFileSync(pki.caFile),
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (d: Buffer) => {
          chunks.push(d);
        });
        req.on("end", () => {
          const socket = req.socket as TLSSocket;
          const recorded: ConjurRequest = {
            method: req.method ?? "",
            url: req.url ?? "",
            authorization: req.headers.authorization,
            contentType: req.headers["content-type"],
            body: Buffer.concat(chunks),
            clientCertificate: socket.authorized === true && Object.keys(socket.getPeerCertificate() ?? {}).length > 0,
            presented: socket.getPeerCertificate()?.fingerprint256,
          };
          fake.requests.push(recorded);
          const answer = (status: number, body: string | Buffer, headers: Record<string, string> = {}) => {
            recorded.status = status;
            res.writeHead(status, { "content-type": "application/json", ...headers });
            res.end(body);
          };
          fake.#answer(recorded, answer, () => res.socket?.destroy()).catch(() => res.destroy());
        });
      },
    );
    await new Promise<void>((r) => fake.#server?.listen(0, "127.0.0.1", r));
    fake.url = `https://localhost:${(fake.#server.address() as AddressInfo).port}`;
    return fake;
  }

  async #answer(
    r: ConjurRequest,
    answer: (status: number, body: string | Buffer, headers?: Record<string, string>) => void,
    drop: () => void,
  ): Promise<void> {
    const error = (status: number, code: string, message: string) =>
      answer(status, JSON.stringify({ error: { code, message } }));
    const fault = this.#faults.find((f) => f.match(r));
    if (fault) {
      this.#faults.splice(this.#faults.indexOf(fault), 1);
      if (fault.status === "reset") return drop();
      const body = JSON.stringify({ error: { code: "injected", message: "injected fault" } });
      return answer(fault.status, body, fault.retryAfter ? { "retry-after": fault.retryAfter } : {});
    }
    const path = r.url.split("?")[0] as string;
    const segments = path.split("/");
    // /authn/{account}/{login}/authenticate: the login is one segment.
    if (r.method === "POST" && segments.length === 5 && segments[1] === "authn" && segments[4] === "authenticate") {
      const login = decodeURIComponent(segments[3] as string);
      const byKey =
        decodeURIComponent(segments[2] as string) === CYBERARK_ACCOUNT &&
        login === CYBERARK_LOGIN.login &&
        r.body.toString("utf8") === CYBERARK_LOGIN.apiKey;
      if (!byKey) return error(401, "unauthorized", "Authorization missing or invalid");
      // Conjur's token: a JSON document, spaced and ending in a newline, so that only its exact
      // bytes (not a re-serialisation) make the header.
      const token = Buffer.from(
        `{"protected": "${randomBytes(12).toString("base64url")}", "payload": "${Buffer.from(
          JSON.stringify({ sub: login, iat: Math.floor(this.now() / 1000) }),
        ).toString("base64url")}", "signature": "${randomBytes(32).toString("base64url")}"}\n`,
      );
      this.tokens.set(token.toString("base64"), this.now() + TOKEN_TTL_MS);
      this.issued.push(token);
      return answer(200, token);
    }
    const presented = /^Token token="([^"]+)"$/.exec(r.authorization ?? "")?.[1];
    const expires = presented === undefined ? undefined : this.tokens.get(presented);
    if (expires === undefined || this.now() >= expires) return error(401, "unauthorized", "Token invalid or expired");

    // /policies/{account}/policy/{branch}
    if (segments[1] === "policies" && segments.length === 5 && segments[3] === "policy") {
      if (r.method !== "POST") return error(405, "method_not_allowed", "method");
      if (decodeURIComponent(segments[2] as string) !== CYBERARK_ACCOUNT) return error(404, "not_found", "account");
      const branch = decodeURIComponent(segments[4] as string);
      if (branch !== "root" && !this.branches.has(branch)) return error(404, "not_found", "no such policy");
      if (this.#loading.has(branch)) {
        const body = JSON.stringify({
          error: { code: "policy_conflict", message: "Concurrent policy load in progress, please retry" },
        });
        return answer(409, body, { "content-type": "application/json", "retry-after": this.conflictRetryAfter });
      }
      this.#loading.add(branch);
      try {
        await new Promise((resolve) => setTimeout(resolve, this.policyLoadMs));
        const ids = variablesOf(r.body.toString("utf8"));
        if (ids === undefined) return error(422, "validation_failed", "the policy does not parse");
        for (const id of ids) {
          const full = branch === "root" ? id : `${branch}/${id}`;
          if (!this.variables.has(full)) this.variables.set(full, []);
        }
        return answer(201, JSON.stringify({ created_roles: {}, version: this.requests.length }));
      } finally {
        this.#loading.delete(branch);
      }
    }

    // /resources/{account}/variable?limit&offset: the variables, by id, each with its versions.
    if (r.method === "GET" && path === `/resources/${CYBERARK_ACCOUNT}/variable`) {
      const query = new URLSearchParams(r.url.split("?")[1] ?? "");
      const limit = Number(query.get("limit") ?? "1000");
      const offset = Number(query.get("offset") ?? "0");
      if (this.listLimitMax !== undefined && limit > this.listLimitMax) {
        return error(422, "unprocessable_entity", `'Limit' parameter must not exceed ${this.listLimitMax}`);
      }
      const all = [...this.variables.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const page = all.slice(offset, offset + limit).map(([id, values]) => ({
        id: `${CYBERARK_ACCOUNT}:variable:${id}`,
        owner: `${CYBERARK_ACCOUNT}:policy:root`,
        permissions: [],
        annotations: [],
        secrets: values.map((_, i) => ({ version: i + 1, expires_at: null })),
      }));
      return answer(200, JSON.stringify(page), { "content-type": "application/json" });
    }

    // /secrets/{account}/variable/{id...}: the id encoded (Conjur's route takes the rest of the path).
    const prefix = `/secrets/${CYBERARK_ACCOUNT}/variable/`;
    if (!path.startsWith(prefix)) return error(404, "not_found", "no such route");
    const id = decodeURIComponent(path.slice(prefix.length));
    const values = this.variables.get(id);
    switch (r.method) {
      case "GET": {
        const last = values?.at(-1);
        if (last === undefined) return error(404, "not_found", "Variable not found or has no value");
        return answer(200, last, { "content-type": "application/octet-stream" });
      }
      case "POST":
        if (values === undefined) return error(404, "not_found", "Variable not found");
        if (/^[\t\n\v\f\r ]*$/.test(r.body.toString("latin1"))) {
          return error(422, "argument_error", "'value' may not be empty");
        }
        values.push(r.body);
        return answer(201, "");
      default:
        return error(405, "method_not_allowed", "method");
    }
  }

  /** A value written behind the store's back, as raw bytes (the variable declared). */
  seed(id: string, value: Buffer): void {
    this.variables.set(id, [...(this.variables.get(id) ?? []), value]);
  }

  /** The value last written to `id`, as text. */
  valueOf(id: string): string | undefined {
    return this.variables.get(id)?.at(-1)?.toString("utf8");
  }

  /** Requests whose method is `method` and whose raw target matches `pattern`. */
  calls(method: string, pattern: RegExp): ConjurRequest[] {
    return this.requests.filter((r) => r.method === method && pattern.test(r.url));
  }

  /** Every token issued so far stops working (revoked, or Conjur restarted with a new key). */
  revokeTokens(): void {
    this.tokens.clear();
  }

  reset(): void {
    this.variables.clear();
    this.requests.length = 0;
    this.#faults = [];
    this.now = Date.now;
    this.policyLoadMs = 20;
    this.conflictRetryAfter = "1";
    this.listLimitMax = undefined;
  }

  /**
   * The next `times` requests matching `match` (default: any) answer `status` (with a Retry-After
   * when given), or find their connection dropped (`"reset"`).
   */
  fail(
    times: number,
    status: number | "reset",
    retryAfter?: string,
    match: (r: ConjurRequest) => boolean = () => true,
  ): void {
    for (let i = 0; i < times; i++) this.#faults.push({ status, match, ...(retryAfter && { retryAfter }) });
  }

  async close(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((r) => this.#server?.close(() => r()));
  }
}

/** The ids a policy's `!variable` items declare; undefined when it is not a sequence of them. */
export function variablesOf(policy: string): string[] | undefined {
  const doc = parseDocument(policy, {
    customTags: [{ tag: "!variable", identify: () => false, resolve: (value: string) => value }],
  });
  if (doc.errors.length > 0 || !isSeq(doc.contents)) return undefined;
  const ids: string[] = [];
  for (const item of doc.contents.items) {
    if (!(item instanceof Scalar) || item.tag !== "!variable" || typeof item.value !== "string") return undefined;
    ids.push(item.value);
  }
  return ids;
}

/** The fake started on first use for this test file, closed after it. */
export function lazyFakeConjur(options?: { key?: Buffer; cert?: Buffer }): () => Promise<FakeConjur> {
  let started: Promise<FakeConjur> | undefined;
  afterAll(async () => (await started)?.close());
  return () => {
    started ??= FakeConjur.start(options);
    return started;
  };
}
