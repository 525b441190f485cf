/**
 * A fake of Google Secret Manager and Cloud KMS over gRPC, with the protos the client packages
 * ship (`@grpc/grpc-js` + `@grpc/proto-loader`), served over TLS with the tests' CA so the client
 * sends its auth metadata, and a fake OAuth token endpoint.
 *
 * Auth as Google checks it: every call needs `authorization: Bearer <token>`, where the token is
 * either a self-signed JWT of the test service account (what Google's clients send for a service
 * account key with no user scopes: RS256, verified here with the account's public key; `iss` the
 * account's email; `aud` the service's URL) or an access token this fake's token endpoint issued
 * (the JWT-bearer grant at the key file's `token_uri`). Anything else is UNAUTHENTICATED.
 *
 * IAM per call: the test service account (`keyFile`) may do everything; a second one
 * (`accessorKeyFile`) holds only `roles/secretmanager.secretAccessor`, `secretmanager.versions.access`,
 * what LiteLLM needs: any other call of it is PERMISSION_DENIED (checked before the resource, as
 * Google does), naming the permission.
 *
 * Secret Manager: secrets (`labels`, `annotations`, automatic replication; both checked as
 * resources.proto documents them, INVALID_ARGUMENT otherwise), versions (ENABLED,
 * DISABLED: by `disableVersion`, as the console does; DESTROYED), delayed destroy (a secret's
 * `versionDestroyTtl`: DestroySecretVersion leaves the version DISABLED with its
 * `scheduled_destroy_time`, its data kept until then), `versions/latest` (the newest
 * version, whatever its state), ALREADY_EXISTS / NOT_FOUND / FAILED_PRECONDITION as the service
 * answers them, `update_mask` on UpdateSecret, ListSecrets (newest first, as the proto says;
 * `page_size` capped at 25000, 0 letting the server choose; an opaque `next_page_token` while more
 * remain, INVALID_ARGUMENT for a token it did not give; no `filter`: the fake refuses one rather
 * than guess Google's filter rules). KMS: Encrypt (for seeding) and Decrypt of its own
 * ciphertexts under a named CryptoKey.
 *
 * Faults: `fail(n, fault[, method])` (that RPC only, when given): PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE (what a client sees
 * when its connection drops), INTERNAL, FAILED_PRECONDITION of a disabled Cloud KMS key version
 * (a CMEK secret's, or a Decrypt's), NOT_FOUND of a CryptoKey that does not exist (a Decrypt's), no
 * answer (the client's deadline ends the call), the connection reset (`reset`: every connection
 * the fake holds, as its TCP listener hands them to the gRPC server), or a call carried out whose answer comes `LATE_MS`
 * later (after the client's deadline: it saw DEADLINE_EXCEEDED, the change is made). Their details
 * carry `FAULT_DETAIL`, which no typed error may repeat (the client puts details in its messages).
 */
import { createCipheriv, createDecipheriv, generateKeyPairSync, randomBytes, verify } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { type AddressInfo, createServer as createTcpServer, type Socket, type Server as TcpServer } from "node:net";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, inject } from "vitest";
import { FaultQueue } from "./faults";

export type GoogleFault =
  | "denied"
  | "exhausted"
  | "unavailable"
  | "internal"
  | "key_disabled"
  | "key_not_found"
  | "hang"
  | "reset"
  | "late";

const FAULT_STATUS: Record<Exclude<GoogleFault, "hang" | "reset" | "late">, grpc.status> = {
  denied: grpc.status.PERMISSION_DENIED,
  exhausted: grpc.status.RESOURCE_EXHAUSTED,
  unavailable: grpc.status.UNAVAILABLE,
  internal: grpc.status.INTERNAL,
  key_disabled: grpc.status.FAILED_PRECONDITION,
  key_not_found: grpc.status.NOT_FOUND,
};

/** What each fault's details say beside `FAULT_DETAIL` (a disabled key's, in Cloud KMS's words). */
const FAULT_TEXT: Partial<Record<GoogleFault, string>> = {
  key_disabled: "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1 is in DISABLED state.",
  key_not_found: "CryptoKey projects/p/locations/global/keyRings/r/cryptoKeys/k not found.",
};

/** How long a `late` call's answer is held: past the deadline the tests give the client. */
const LATE_MS = 1_000;

/** In every injected fault's details, as a backend's own text: typed errors must never carry it. */
export const FAULT_DETAIL = "backend-detail-marker sk-live-fault0123456789";

const ROOT = join(import.meta.dirname, "../../node_modules");

/** The permission Google checks for each call (cloud.google.com/secret-manager/docs/access-control). */
const RPC_PERMISSION: Record<string, string> = {
  ListSecrets: "secretmanager.secrets.list",
  CreateSecret: "secretmanager.secrets.create",
  AddSecretVersion: "secretmanager.versions.add",
  GetSecret: "secretmanager.secrets.get",
  UpdateSecret: "secretmanager.secrets.update",
  DeleteSecret: "secretmanager.secrets.delete",
  ListSecretVersions: "secretmanager.versions.list",
  GetSecretVersion: "secretmanager.versions.get",
  AccessSecretVersion: "secretmanager.versions.access",
  DisableSecretVersion: "secretmanager.versions.disable",
  EnableSecretVersion: "secretmanager.versions.enable",
  DestroySecretVersion: "secretmanager.versions.destroy",
  Encrypt: "cloudkms.cryptoKeyVersions.useToEncrypt",
  Decrypt: "cloudkms.cryptoKeyVersions.useToDecrypt",
};

interface Identity {
  email: string;
  keyPair: ReturnType<typeof generateKeyPairSync>;
  /** What its roles grant; undefined: everything. */
  permissions?: ReadonlySet<string>;
  keyFile: string;
}

interface Version {
  id: number;
  data: Buffer | undefined;
  state: "ENABLED" | "DISABLED" | "DESTROYED";
  created: Date;
  /** Destroyed on a secret with a `versionDestroyTtl`: DISABLED until this time. */
  scheduledDestroy?: Date;
}

interface FakeSecret {
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  versions: Version[];
  created: Date;
  /** `version_destroy_ttl` in seconds (delayed destroy), as the console sets it. */
  versionDestroyTtl?: number;
  /** Creation order: ListSecrets pages by it, newest first (one set by a test counts from its first listing). */
  seq?: number;
  etag: number;
}

export interface GoogleCallSeen {
  method: string;
  request: Record<string, unknown>;
  authorization: string | undefined;
  /** The CN of the client certificate the call's connection presented (the server asks for one; none is required). */
  clientCertificate: string | undefined;
}

/** A certificate provider of fixed PEMs (grpc-js's file watcher keeps a timer running). */
function fixedCertificates(ca: Buffer, certificate: Buffer, privateKey: Buffer): grpc.experimental.CertificateProvider {
  return {
    addCaCertificateListener: (listener) => process.nextTick(listener, { caCertificate: ca }),
    removeCaCertificateListener: () => {},
    addIdentityCertificateListener: (listener) => process.nextTick(listener, { certificate, privateKey }),
    removeIdentityCertificateListener: () => {},
  };
}

class GrpcError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

function loadService(protoFile: string, servicePath: string[]) {
  const definition = protoLoader.loadSync(protoFile, {
    includeDirs: [
      join(ROOT, "@google-cloud/secret-manager/build/protos"),
      join(ROOT, "@google-cloud/kms/build/protos"),
      join(ROOT, "google-gax/build/protos"),
    ],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  let node: unknown = grpc.loadPackageDefinition(definition);
  for (const part of servicePath) node = (node as Record<string, unknown>)[part];
  return (node as { service: grpc.ServiceDefinition }).service;
}

export class FakeGoogle {
  readonly project = "llm-secrets-test";
  readonly clientEmail = "llm-secrets@llm-secrets-test.iam.gserviceaccount.com";
  /** A service account with only roles/secretmanager.secretAccessor. */
  readonly accessorEmail = "accessor@llm-secrets-test.iam.gserviceaccount.com";
  readonly secrets = new Map<string, FakeSecret>();
  readonly calls: GoogleCallSeen[] = [];
  /** Access tokens the token endpoint issued (to the account's email), and how many times it was asked. */
  readonly issued = new Map<string, string>();
  tokenRequests = 0;
  readonly #identities = new Map<string, Identity>();
  readonly #kmsKey = randomBytes(32);
  readonly #faults = new FaultQueue<GoogleFault>();
  /** ListSecrets page tokens given out: the creation order of the last secret of their page. */
  readonly #pageTokens = new Map<string, number>();
  #seq = 0;
  #grpc: grpc.Server | undefined;
  /** The TCP listener whose connections the gRPC server is handed: the fake holds them, to drop them. */
  #listener: TcpServer | undefined;
  readonly #sockets = new Set<Socket>();
  #token: HttpsServer | undefined;
  #endpoint = "";
  #tokenUri = "";

  /** `https://localhost:<port>`: the gRPC endpoint, as `LLM_SECRETS_GOOGLE_*_ENDPOINT` takes it. */
  get endpoint(): string {
    return this.#endpoint;
  }

  /** A service-account key file (JSON) whose `token_uri` is this fake's token endpoint: every permission. */
  get keyFile(): string {
    return this.#identity(this.clientEmail).keyFile;
  }

  /** The key file of a service account granted only roles/secretmanager.secretAccessor. */
  get accessorKeyFile(): string {
    return this.#identity(this.accessorEmail).keyFile;
  }

  static async start(dir: string): Promise<FakeGoogle> {
    const fake = new FakeGoogle();
    const pki = inject("testPki");
    const key = readFileSync(pki.serverKeyFile);
    const cert = readFileSync(pki.serverCertFile);

    fake.#token = createHttpsServer({ key, cert }, (req, res) => {
      let body = "";
      req.on("data", (d) => {
        body += d;
      });
      req.on("end", () => {
        fake.tokenRequests++;
        const form = new URLSearchParams(body);
        const assertion = form.get("assertion") ?? "";
        const claims = fake.#validJwt(assertion);
        if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:jwt-bearer" || !claims) {
          res.writeHead(400, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: "invalid_grant", error_description: "Invalid JWT Signature." }));
          return;
        }
        const token = `ya29.fake-${randomBytes(12).toString("hex")}`;
        fake.issued.set(token, String(claims.iss));
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ access_token: token, expires_in: 3600, token_type: "Bearer" }));
      });
    });
    await new Promise<void>((r) => fake.#token?.listen(0, "127.0.0.1", r));
    fake.#tokenUri = `https://localhost:${(fake.#token.address() as AddressInfo).port}/token`;

    for (const [email, file, permissions] of [
      [fake.clientEmail, "service-account.json", undefined],
      [fake.accessorEmail, "accessor.json", new Set([RPC_PERMISSION.AccessSecretVersion as string])],
    ] as const) {
      const identity: Identity = {
        email,
        keyPair: generateKeyPairSync("rsa", { modulusLength: 2048 }),
        permissions,
        keyFile: join(dir, file),
      };
      fake.#identities.set(email, identity);
      writeFileSync(
        identity.keyFile,
        JSON.stringify({
          type: "service_account",
          project_id: fake.project,
          private_key_id: `fake-key-${fake.#identities.size}`,
          private_key: identity.keyPair.privateKey.export({ type: "pkcs8", format: "pem" }),
          client_email: email,
          client_id: `123456789${fake.#identities.size}`,
          token_uri: fake.#tokenUri,
        }),
        { mode: 0o600 },
      );
    }

    const server = new grpc.Server();
    server.addService(
      loadService("google/cloud/secretmanager/v1/service.proto", [
        "google",
        "cloud",
        "secretmanager",
        "v1",
        "SecretManagerService",
      ]),
      fake.#handlers("secretmanager", (method, request) => fake.#secretManager(method, request)),
    );
    server.addService(
      loadService("google/cloud/kms/v1/service.proto", ["google", "cloud", "kms", "v1", "KeyManagementService"]),
      fake.#handlers("cloudkms", (method, request) => fake.#kms(method, request)),
    );
    const injector = server.createConnectionInjector(
      // Asks for a client certificate signed by the tests' CA, and takes a connection without one
      // (Google's front end asks for one for mTLS endpoints; the calls without one still answer).
      grpc.experimental.createCertificateProviderServerCredentials(
        fixedCertificates(readFileSync(pki.caFile), cert, key),
        fixedCertificates(readFileSync(pki.caFile), cert, key),
        false,
      ),
    );
    fake.#listener = createTcpServer((socket) => {
      fake.#sockets.add(socket);
      socket.on("close", () => fake.#sockets.delete(socket));
      injector.injectConnection(socket);
    });
    await new Promise<void>((r) => fake.#listener?.listen(0, "127.0.0.1", r));
    fake.#grpc = server;
    fake.#endpoint = `https://localhost:${(fake.#listener.address() as AddressInfo).port}`;
    return fake;
  }

  reset(): void {
    this.secrets.clear();
    this.#pageTokens.clear();
    this.calls.length = 0;
    this.#faults.clear();
  }

  /** The next `times` calls (of `method` only, when given: `DestroySecretVersion`) fail with `fault`. */
  fail(times: number, fault: GoogleFault, method?: string): void {
    this.#faults.add(times, fault, method);
  }

  /** Disables a version, as a person does in the console (a key rolled back): `latest` still names it. */
  disableVersion(secretName: string, id: number): void {
    const version = this.secrets.get(secretName)?.versions.find((v) => v.id === id);
    if (!version) throw new Error(`no version ${id} of ${secretName}`);
    version.state = "DISABLED";
  }

  callsOf(method: string): GoogleCallSeen[] {
    return this.calls.filter((c) => c.method === method);
  }

  async close(): Promise<void> {
    this.#grpc?.forceShutdown();
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((r) => this.#listener?.close(() => r()));
    this.#token?.closeAllConnections();
    await new Promise<void>((r) => this.#token?.close(() => r()));
  }

  /** KMS ciphertext of `plaintext` (text as UTF-8, or any bytes) under `keyName`, as Encrypt answers it. */
  encrypt(plaintext: string | Uint8Array, keyName: string): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#kmsKey, iv);
    cipher.setAAD(Buffer.from(keyName));
    return Buffer.concat([iv, cipher.update(Buffer.from(plaintext)), cipher.final(), cipher.getAuthTag()]);
  }

  /** Every method of a service: auth checked, faults applied, then `handle`. */
  #handlers(
    audience: string,
    handle: (method: string, request: Record<string, unknown>) => unknown,
  ): grpc.UntypedServiceImplementation {
    const methods = [
      "ListSecrets",
      "CreateSecret",
      "AddSecretVersion",
      "GetSecret",
      "UpdateSecret",
      "DeleteSecret",
      "ListSecretVersions",
      "GetSecretVersion",
      "AccessSecretVersion",
      "DisableSecretVersion",
      "EnableSecretVersion",
      "DestroySecretVersion",
      "Encrypt",
      "Decrypt",
    ];
    const out: grpc.UntypedServiceImplementation = {};
    for (const method of methods) {
      out[method] = (
        call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ) => {
        const authorization = call.metadata.get("authorization")[0]?.toString();
        const peer = call.getAuthContext().sslPeerCertificate;
        const clientCertificate = peer?.subject?.CN === undefined ? undefined : String(peer.subject.CN);
        this.calls.push({ method, request: call.request, authorization, clientCertificate });
        const fault = this.#faults.take(method);
        if (fault === "hang") return; // the client's deadline ends it
        if (fault === "reset") {
          for (const socket of this.#sockets) socket.resetAndDestroy();
          return;
        }
        // `late`: carried out now, answered after the client's deadline.
        const reply: grpc.sendUnaryData<unknown> =
          fault === "late" ? (...args) => setTimeout(() => callback(...args), LATE_MS) : callback;
        if (fault && fault !== "late") {
          const details = `injected ${fault}: ${FAULT_TEXT[fault] ?? ""} ${FAULT_DETAIL}`;
          return callback({ code: FAULT_STATUS[fault], details });
        }
        const caller = this.#caller(authorization, audience);
        if (caller === undefined) {
          return reply({
            code: grpc.status.UNAUTHENTICATED,
            details: "Request had invalid authentication credentials.",
          });
        }
        const permission = RPC_PERMISSION[method] as string;
        if (caller.permissions !== undefined && !caller.permissions.has(permission)) {
          const resource =
            call.request.name ?? call.request.parent ?? (call.request.secret as { name?: unknown })?.name;
          return reply({
            code: grpc.status.PERMISSION_DENIED,
            details: `Permission '${permission}' denied for resource '${String(resource)}' (or it may not exist).`,
          });
        }
        try {
          reply(null, handle(method, call.request));
        } catch (err) {
          if (err instanceof GrpcError) reply({ code: err.code, details: err.message });
          else reply({ code: grpc.status.INTERNAL, details: "fake failure" });
        }
      };
    }
    return out;
  }

  /** The service account a call's credentials are: an issued token, or a valid self-signed JWT for the service. */
  #caller(authorization: string | undefined, audience: string): Identity | undefined {
    const token = /^Bearer (.+)$/.exec(authorization ?? "")?.[1];
    if (token === undefined) return undefined;
    const issuedTo = this.issued.get(token);
    if (issuedTo !== undefined) return this.#identities.get(issuedTo);
    const claims = this.#validJwt(token);
    if (claims === undefined) return undefined;
    if (claims.aud !== undefined && !String(claims.aud).includes(audience) && claims.scope === undefined)
      return undefined;
    return this.#identities.get(String(claims.iss));
  }

  #identity(email: string): Identity {
    const identity = this.#identities.get(email);
    if (!identity) throw new Error("the fake is not started");
    return identity;
  }

  /** The claims of a JWT signed by one of the test service accounts' keys (its `iss`) and not expired, else undefined. */
  #validJwt(token: string): Record<string, unknown> | undefined {
    try {
      return this.#jwtClaims(token);
    } catch {
      return undefined;
    }
  }

  #jwtClaims(token: string): Record<string, unknown> | undefined {
    const [head, body, signature] = token.split(".");
    if (!head || !body || !signature) return undefined;
    const header = JSON.parse(Buffer.from(head, "base64url").toString()) as { alg?: string };
    if (header.alg !== "RS256") return undefined;
    const claims = JSON.parse(Buffer.from(body, "base64url").toString()) as Record<string, unknown>;
    const identity = this.#identities.get(String(claims.iss));
    if (identity === undefined) return undefined;
    const ok = verify(
      "RSA-SHA256",
      Buffer.from(`${head}.${body}`),
      identity.keyPair.publicKey,
      Buffer.from(signature, "base64url"),
    );
    if (!ok) return undefined;
    if (typeof claims.exp !== "number" || claims.exp * 1000 < Date.now()) return undefined;
    return claims;
  }

  // ---------------------------------------------------------------------------------------------
  // Secret Manager

  #secretManager(method: string, request: Record<string, unknown>): unknown {
    switch (method) {
      case "CreateSecret": {
        const parent = String(request.parent);
        if (parent !== `projects/${this.project}`)
          throw new GrpcError(grpc.status.NOT_FOUND, `project ${parent} not found`);
        const id = String(request.secret_id ?? "");
        if (!/^[A-Za-z0-9_-]{1,255}$/.test(id)) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "invalid secret_id");
        const name = `${parent}/secrets/${id}`;
        if (this.secrets.has(name)) throw new GrpcError(grpc.status.ALREADY_EXISTS, `Secret [${name}] already exists.`);
        const body = (request.secret ?? {}) as {
          labels?: Record<string, string>;
          annotations?: Record<string, string>;
          replication?: { automatic?: unknown };
        };
        if (!body.replication?.automatic) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "replication is required");
        this.#checkLabels(body.labels ?? {});
        this.#checkAnnotations(body.annotations ?? {});
        const secret: FakeSecret = {
          name,
          labels: { ...body.labels },
          annotations: { ...body.annotations },
          versions: [],
          created: new Date(),
          seq: this.#seq++,
          etag: 1,
        };
        this.secrets.set(name, secret);
        return this.#secretOut(secret);
      }
      case "GetSecret":
        return this.#secretOut(this.#find(request.name));
      case "ListSecrets":
        return this.#list(request);
      case "UpdateSecret": {
        const body = (request.secret ?? {}) as {
          name?: string;
          labels?: Record<string, string>;
          annotations?: Record<string, string>;
        };
        const secret = this.#find(body.name);
        const paths = ((request.update_mask as { paths?: string[] } | undefined)?.paths ?? []) as string[];
        if (paths.length === 0) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "update_mask is required");
        for (const path of paths) {
          if (path === "labels") {
            this.#checkLabels(body.labels ?? {});
            secret.labels = { ...body.labels };
          } else if (path === "annotations") {
            this.#checkAnnotations(body.annotations ?? {});
            secret.annotations = { ...body.annotations };
          } else throw new GrpcError(grpc.status.INVALID_ARGUMENT, `cannot update ${path}`);
        }
        secret.etag++;
        return this.#secretOut(secret);
      }
      case "DeleteSecret":
        this.secrets.delete(this.#find(request.name).name);
        return {};
      case "AddSecretVersion": {
        const secret = this.#find(request.parent);
        const payload = request.payload as { data?: Buffer } | undefined;
        if (payload === undefined) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "payload is required");
        const data = payload.data ?? Buffer.alloc(0); // proto3: empty bytes are not sent
        if (data.length > 64 * 1024) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "payload is larger than 64 KiB");
        const version: Version = {
          id: secret.versions.length + 1,
          data: Buffer.from(data),
          state: "ENABLED",
          created: new Date(),
        };
        secret.versions.push(version);
        return this.#versionOut(secret, version);
      }
      case "ListSecretVersions": {
        const secret = this.#find(request.parent);
        return {
          versions: [...secret.versions].reverse().map((v) => this.#versionOut(secret, v)),
          total_size: secret.versions.length,
        };
      }
      case "AccessSecretVersion": {
        const { secret, version } = this.#findVersion(request.name);
        if (version.state !== "ENABLED") {
          throw new GrpcError(
            grpc.status.FAILED_PRECONDITION,
            `Secret Version [${secret.name}/versions/${version.id}] is in ${version.state} state.`,
          );
        }
        return { name: `${secret.name}/versions/${version.id}`, payload: { data: version.data } };
      }
      case "DestroySecretVersion": {
        const { secret, version } = this.#findVersion(request.name);
        if (secret.versionDestroyTtl) {
          // Delayed destroy: disabled now, destroyed at the scheduled time (not modelled: tests look before it).
          version.state = "DISABLED";
          version.scheduledDestroy ??= new Date(Date.now() + secret.versionDestroyTtl * 1000);
        } else {
          version.state = "DESTROYED";
          version.data = undefined;
        }
        return this.#versionOut(secret, version);
      }
      default:
        throw new GrpcError(grpc.status.UNIMPLEMENTED, `${method} is not in the fake`);
    }
  }

  #list(request: Record<string, unknown>): unknown {
    const parent = String(request.parent);
    if (parent !== `projects/${this.project}`)
      throw new GrpcError(grpc.status.NOT_FOUND, `project ${parent} not found`);
    if (request.filter !== undefined && request.filter !== "") {
      throw new GrpcError(grpc.status.UNIMPLEMENTED, "the fake does not filter");
    }
    const asked = Number(request.page_size ?? 0);
    if (!Number.isInteger(asked) || asked < 0) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "invalid page_size");
    const size = asked === 0 ? 100 : Math.min(asked, 25_000);
    let before = Number.POSITIVE_INFINITY;
    const token = request.page_token;
    if (token !== undefined && token !== "") {
      const seq = this.#pageTokens.get(String(token));
      if (seq === undefined) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "invalid page_token");
      before = seq;
    }
    for (const secret of this.secrets.values()) secret.seq ??= this.#seq++;
    const order = (secret: FakeSecret) => secret.seq ?? 0;
    const all = [...this.secrets.values()].sort((a, b) => order(b) - order(a));
    const after = all.filter((s) => order(s) < before);
    const page = after.slice(0, size);
    const last = page.at(-1);
    let next = "";
    if (after.length > size && last) {
      next = randomBytes(18).toString("base64url");
      this.#pageTokens.set(next, order(last));
    }
    return { secrets: page.map((s) => this.#secretOut(s)), next_page_token: next, total_size: all.length };
  }

  #find(name: unknown): FakeSecret {
    // Google refuses a resource name whose secret id it could not hold (255 characters of [A-Za-z0-9_-]).
    const id = /^projects\/[^/]+\/secrets\/([^/]*)$/.exec(String(name))?.[1];
    if (id === undefined || !/^[A-Za-z0-9_-]{1,255}$/.test(id)) {
      throw new GrpcError(grpc.status.INVALID_ARGUMENT, "invalid secret name");
    }
    const secret = this.secrets.get(String(name));
    if (!secret) throw new GrpcError(grpc.status.NOT_FOUND, `Secret [${String(name)}] not found or has no versions.`);
    return secret;
  }

  #findVersion(name: unknown): { secret: FakeSecret; version: Version } {
    const m = /^(projects\/[^/]+\/secrets\/[^/]+)\/versions\/([^/]+)$/.exec(String(name));
    if (!m) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "invalid version name");
    const secret = this.#find(m[1]);
    // `latest` is the most recently created version, whatever its state (Google's docs): a disabled
    // or destroyed one is not skipped for an older one.
    const version = m[2] === "latest" ? secret.versions.at(-1) : secret.versions.find((v) => String(v.id) === m[2]);
    if (!version) throw new GrpcError(grpc.status.NOT_FOUND, `Secret Version [${String(name)}] not found.`);
    return { secret, version };
  }

  /** resources.proto's label rules: keys and values of lower-case letters (any script), digits, `_`, `-`; at most 64. */
  #checkLabels(labels: Record<string, string>): void {
    const entries = Object.entries(labels);
    if (entries.length > 64) throw new GrpcError(grpc.status.INVALID_ARGUMENT, "No more than 64 labels");
    for (const [k, v] of entries) {
      if (
        !/^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}$/u.test(k) ||
        !/^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$/u.test(v) ||
        Buffer.byteLength(k) > 128 ||
        Buffer.byteLength(v) > 128
      ) {
        throw new GrpcError(grpc.status.INVALID_ARGUMENT, "labels must be lowercase letters, digits, _ and -");
      }
    }
  }

  /**
   * resources.proto's annotation rules: keys of 1 to 63 characters (128 bytes), alphanumeric at both
   * ends, `-`, `_`, `.` and alphanumerics between; keys and values together under 16 KiB.
   */
  #checkAnnotations(annotations: Record<string, string>): void {
    let bytes = 0;
    for (const [k, v] of Object.entries(annotations)) {
      if (k.length > 63 || Buffer.byteLength(k) > 128 || !/^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/.test(k)) {
        throw new GrpcError(grpc.status.INVALID_ARGUMENT, `invalid annotation key: ${k.slice(0, 63)}`);
      }
      bytes += Buffer.byteLength(k) + Buffer.byteLength(v);
    }
    if (bytes >= 16 * 1024) {
      throw new GrpcError(grpc.status.INVALID_ARGUMENT, "The total size of annotations must be less than 16KiB");
    }
  }

  #secretOut(secret: FakeSecret) {
    return {
      name: secret.name,
      replication: { automatic: {} },
      create_time: { seconds: String(Math.floor(secret.created.getTime() / 1000)), nanos: 0 },
      labels: secret.labels,
      annotations: secret.annotations,
      ...(secret.versionDestroyTtl && { version_destroy_ttl: { seconds: String(secret.versionDestroyTtl), nanos: 0 } }),
      etag: `"${secret.etag}"`,
    };
  }

  #versionOut(secret: FakeSecret, version: Version) {
    return {
      name: `${secret.name}/versions/${version.id}`,
      create_time: { seconds: String(Math.floor(version.created.getTime() / 1000)), nanos: 0 },
      state: version.state,
      ...(version.scheduledDestroy && {
        scheduled_destroy_time: { seconds: String(Math.floor(version.scheduledDestroy.getTime() / 1000)), nanos: 0 },
      }),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // KMS

  #kms(method: string, request: Record<string, unknown>): unknown {
    const keyName = String(request.name ?? "");
    if (!/^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/.test(keyName)) {
      throw new GrpcError(grpc.status.INVALID_ARGUMENT, "name must be a CryptoKey resource name");
    }
    if (method === "Encrypt") {
      const plaintext = request.plaintext as Buffer;
      return { name: keyName, ciphertext: this.encrypt(plaintext.toString("utf8"), keyName) };
    }
    if (method === "Decrypt") {
      const blob = request.ciphertext as Buffer | undefined;
      try {
        if (!blob || blob.length < 29) throw new Error("short");
        const decipher = createDecipheriv("aes-256-gcm", this.#kmsKey, blob.subarray(0, 12));
        decipher.setAAD(Buffer.from(keyName));
        decipher.setAuthTag(blob.subarray(blob.length - 16));
        const plain = Buffer.concat([decipher.update(blob.subarray(12, blob.length - 16)), decipher.final()]);
        return { plaintext: plain };
      } catch {
        throw new GrpcError(grpc.status.INVALID_ARGUMENT, "Decryption failed: the ciphertext is invalid.");
      }
    }
    throw new GrpcError(grpc.status.UNIMPLEMENTED, `${method} is not in the fake`);
  }
}

/**
 * The fake started on first use for this test file, with the clients pointed at it the way a user
 * points them at an emulator (`LLM_SECRETS_GOOGLE_*_ENDPOINT`, given to the store in its env) and
 * their credentials given the way Google's libraries take them (`GOOGLE_APPLICATION_CREDENTIALS`).
 */
export function lazyFakeGoogle(dir: () => Promise<string>): () => Promise<FakeGoogle> {
  let started: Promise<FakeGoogle> | undefined;
  afterAll(async () => (await started)?.close());
  return () => {
    started ??= dir()
      .then((d) => FakeGoogle.start(d))
      .then((fake) => {
        process.env.GOOGLE_APPLICATION_CREDENTIALS = fake.keyFile;
        return fake;
      });
    return started;
  };
}
