/**
 * A fake of AWS Secrets Manager and AWS KMS on one HTTPS port, following their documented wire
 * protocol (AWS JSON 1.1): `POST /` with `Content-Type: application/x-amz-json-1.1` and
 * `X-Amz-Target: secretsmanager.<Action>` or `TrentService.<Action>`, a SigV4 `Authorization`
 * header that is verified (recomputed with the fake's secret key, so a request the real service
 * would refuse for its signature is refused here: 400 `InvalidSignatureException`, or
 * `UnrecognizedClientException` for an unknown access key), errors as `{"__type","message"}` with
 * `x-amzn-errortype`, and the operations' documented behaviours:
 *
 * - Secrets Manager: `CreateSecret` (`ClientRequestToken` idempotent, `Tags`, `KmsKeyId`,
 *   `AddReplicaRegions`, no value allowed), `GetSecretValue` (`VersionId` and/or `VersionStage`,
 *   else `AWSCURRENT`; a secret scheduled for deletion is `InvalidRequestException`),
 *   `PutSecretValue` (`VersionStages`), `UpdateSecretVersionStage`, `DescribeSecret` (`DeletedDate`,
 *   `Tags`, `VersionIdsToStages`), `TagResource`, `UntagResource` (neither on a secret scheduled for deletion; tags as
 *   AWS limits them: 50 a secret, no `aws:` prefix on a key or value), `UpdateSecret`
 *   (`Description`, `KmsKeyId`, `SecretString`; not on a secret scheduled for deletion),
 *   `DeleteSecret` (`RecoveryWindowInDays` 7-30, or `ForceDeleteWithoutRecovery`; not while the
 *   secret has replicas), `ReplicateSecretToRegions`, `RemoveRegionsFromReplication` (replicas in
 *   `DescribeSecret`'s `ReplicationStatus`), `RestoreSecret`, `ListSecrets` (`Filters` as AWS's `Filter`:
 *   `name`, `tag-key`, `tag-value` case-sensitive prefixes, `description` not, `!` negates; several
 *   values of a key are alternatives, several keys all apply; `MaxResults` 1-100; an opaque
 *   `NextToken` only while more remain, `InvalidNextTokenException` for one it did not give; secrets
 *   scheduled for deletion only with `IncludePlannedDeletion`; in creation order). `SecretString` at
 *   most 65 536 bytes. A secret made a replica here (`primaryRegion`) refuses every change, and
 *   one whose KMS key is disabled or pending deletion (`keyState`) every read and new value.
 * - Staging labels, as AWS documents them: each label is on one version at most. A new value
 *   (`CreateSecret`, `UpdateSecret`, `PutSecretValue` without `VersionStages`) takes `AWSCURRENT`;
 *   `PutSecretValue` with `VersionStages` takes those labels only (`[AWSPENDING]`, a rotation's
 *   createSecret step, leaves `AWSCURRENT` where it is); `UpdateSecretVersionStage` moves a label,
 *   `RemoveFromVersionId` naming the version that holds it. Whenever `AWSCURRENT` moves,
 *   `AWSPREVIOUS` goes to the version it left. `DescribeSecret`/`ListSecrets` list the versions
 *   that hold a label; a version left without one is deprecated (still readable by its id here).
 * - KMS: `Encrypt` (for tests to make ciphertexts) and `Decrypt` (`InvalidCiphertextException` for
 *   a blob it did not make). The blob is the key id and an AES-256-GCM box under the fake's key.
 * - STS (the Query protocol: a form-encoded `POST /`, `Version=2011-06-15`, XML answers and
 *   `<ErrorResponse>` errors): `AssumeRole` (signed with the account's keys; the role must be one
 *   in `roles`, with its `ExternalId` when it has one) and `AssumeRoleWithWebIdentity`
 *   (unsigned; the role's web identity token must match: another is `InvalidIdentityToken`, as
 *   STS answers a token it cannot validate, and one `replaceWebIdentityToken` replaced is
 *   `ExpiredTokenException`; a role whose identity provider is `idpUnreachable` answers
 *   `IDPCommunicationError`). Each gives fresh temporary credentials
 *   that Secrets Manager and KMS then accept (with their `X-Amz-Security-Token`), and each request
 *   seen records who made it (`principal`: the role's ARN, or `account`).
 *
 * Faults: `fail(n, fault[, action])` makes the next n requests (of that action only, when given)
 * answer `AccessDeniedException`, `ThrottlingException` (HTTP 400 and no `Retry-After`, as AWS
 * sends it), 500, hang (no answer until the client gives up) or reset the connection. STS's calls
 * take them too, answered as STS does: `AccessDenied` (403), `Throttling` (400), `InternalFailure`.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { SignatureV4 } from "@smithy/signature-v4";
import { afterAll, inject } from "vitest";
import { FaultQueue } from "./faults";

export const FAKE_AWS_CREDENTIALS = {
  accessKeyId: "AKIDLLMSECRETSFAKE01",
  secretAccessKey: "fake-aws-secret-key-for-tests-only",
};

export type AwsFault = "denied" | "throttled" | "error" | "hang" | "reset";

export interface AwsRequestSeen {
  target: string;
  body: Record<string, unknown>;
  headers: IncomingMessage["headers"];
  /** Who signed it: `account` (the fake's keys), a role's ARN (its temporary credentials), or none yet. */
  principal?: string;
}

/** A role `AssumeRole` or `AssumeRoleWithWebIdentity` may assume. */
export interface FakeRole {
  externalId?: string;
  /** The web identity token its trust policy accepts (`AssumeRoleWithWebIdentity`). */
  webIdentityToken?: string;
  /** Tokens it took once, now past their expiry (`replaceWebIdentityToken`): `ExpiredTokenException`. */
  expiredWebIdentityTokens?: string[];
  /** How long its temporary credentials last (default an hour). */
  sessionSeconds?: number;
  /** STS cannot reach the role's identity provider to check a token (`IDPCommunicationError`). */
  idpUnreachable?: boolean;
}

interface Session {
  secretAccessKey: string;
  sessionToken: string;
  roleArn: string;
  sessionName: string;
}

const STS_XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/";

function xmlEscape(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

interface SecretVersion {
  id: string;
  value: string;
  created: Date;
}

interface FakeSecret {
  name: string;
  arn: string;
  description?: string;
  kmsKeyId?: string;
  tags: Map<string, string>;
  replicas: string[];
  versions: SecretVersion[];
  /** Staging labels, each on one version: label to version id. */
  stages: Map<string, string>;
  deletedDate?: Date;
  /**
   * This region holds a replica of a secret whose primary is in that region: it is read-only here
   * ("Operation not permitted on a replica secret", `InvalidRequestException`, on every change).
   */
  primaryRegion?: string;
  /**
   * Its KMS key is not usable: `GetSecretValue` answers `DecryptionFailure` (disabled) or
   * `KMSInvalidStateException` (pending deletion), and a new value `EncryptionFailure`.
   */
  keyState?: "Disabled" | "PendingDeletion";
  created: Date;
  /** Creation order: what `ListSecrets` pages by. */
  seq: number;
  tokens: Set<string>;
}

class AwsError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

const MAX_SECRET_STRING = 65_536;
/** The actions that change a secret: a replica refuses each of them. */
const CHANGES = new Set([
  "PutSecretValue",
  "UpdateSecret",
  "UpdateSecretVersionStage",
  "TagResource",
  "UntagResource",
  "DeleteSecret",
  "RestoreSecret",
  "ReplicateSecretToRegions",
  "RemoveRegionsFromReplication",
]);
const CURRENT = "AWSCURRENT";
const PREVIOUS = "AWSPREVIOUS";
/** `SecretVersionStageType`: 1 to 256 characters; `VersionStages`: 1 to 20 of them. */
const MAX_STAGE_LENGTH = 256;
const MAX_STAGES = 20;
/** A secret's replicas as `DescribeSecret` and the replication actions answer them (all in sync here). */
function replicationStatus(secret: FakeSecret): { Region: string; Status: string }[] {
  return secret.replicas.map((Region) => ({ Region, Status: "InSync" }));
}

/** TagResource: "Maximum number of tags per secret: 50". */
const MAX_TAGS = 50;

/**
 * The tags a change would leave on a secret, or AWS's refusal when they are more than 50. AWS's own
 * (`aws:`, which no caller may set or remove) do not count (TagResource: "Tags with this prefix do
 * not count against your tags per secret limit").
 */
function checkedTagCount(tags: Map<string, string>): Map<string, string> {
  if ([...tags.keys()].filter((key) => !/^aws:/i.test(key)).length > MAX_TAGS) {
    throw new AwsError("InvalidParameterException", `A secret can have at most ${MAX_TAGS} tags.`);
  }
  return tags;
}

/** node:crypto as the signer's hash (its `Checksum` shape). */
class NodeSha256 {
  readonly #hash: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#hash = secret === undefined ? createHash("sha256") : createHmac("sha256", bytes(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.#hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.#hash.digest());
  }
  reset(): void {}
}

function bytes(data: string | ArrayBuffer | ArrayBufferView): string | Uint8Array {
  if (typeof data === "string") return data;
  return ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : new Uint8Array(data);
}

export class FakeAws {
  readonly secrets = new Map<string, FakeSecret>();
  readonly requests: AwsRequestSeen[] = [];
  /** Roles STS lets callers assume, by ARN. */
  readonly roles = new Map<string, FakeRole>();
  /** Temporary credentials STS gave, by access key id. */
  readonly #sessions = new Map<string, Session>();
  readonly #kmsKey = randomBytes(32);
  /** `ListSecrets` tokens given out: the creation order of the last secret of their page. */
  readonly #listTokens = new Map<string, number>();
  #seq = 0;
  readonly #faults = new FaultQueue<AwsFault>();
  #server: Server | undefined;
  #url = "";

  get url(): string {
    return this.#url;
  }

  /**
   * Serves HTTPS with the tests' CA (inside vitest), or plain HTTP with `{ tls: false }` (the
   * bench, whose process has no CA of ours to trust).
   */
  static async start(options: { tls: boolean } = { tls: true }): Promise<FakeAws> {
    const fake = new FakeAws();
    const handler = (req: IncomingMessage, res: ServerResponse) => void fake.#handle(req, res);
    if (options.tls) {
      const pki = inject("testPki");
      fake.#server = createHttpsServer(
        { key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) },
        handler,
      );
    } else fake.#server = createHttpServer(handler);
    await new Promise<void>((r) => fake.#server?.listen(0, "127.0.0.1", r));
    const port = (fake.#server.address() as AddressInfo).port;
    fake.#url = `${options.tls ? "https" : "http"}://localhost:${port}`;
    return fake;
  }

  /** Forgets every secret, request and pending fault: a fresh account. */
  reset(): void {
    this.secrets.clear();
    this.roles.clear();
    this.#sessions.clear();
    this.#listTokens.clear();
    this.requests.length = 0;
    this.#faults.clear();
  }

  /**
   * The identity provider issues `token` for `roleArn` (a projected service account token
   * refreshed): the role's token until now has expired, and STS answers it `ExpiredTokenException`.
   */
  replaceWebIdentityToken(roleArn: string, token: string): void {
    const role = this.roles.get(roleArn);
    if (!role) throw new Error(`no role ${roleArn}`);
    const expired = [
      ...(role.expiredWebIdentityTokens ?? []),
      ...(role.webIdentityToken ? [role.webIdentityToken] : []),
    ];
    this.roles.set(roleArn, { ...role, webIdentityToken: token, expiredWebIdentityTokens: expired });
  }

  /** The next `times` requests (of `action` only, when given: `DeleteSecret`) fail with `fault`. */
  fail(times: number, fault: AwsFault, action?: string): void {
    this.#faults.add(times, fault, action);
  }

  /** Requests whose target is `action` (`GetSecretValue`, `Decrypt`, ...). */
  calls(action: string): AwsRequestSeen[] {
    return this.requests.filter((r) => r.target.endsWith(`.${action}`));
  }

  async close(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((r) => this.#server?.close(() => r()));
  }

  /** A KMS ciphertext of `plaintext` (text as UTF-8, or any bytes), as `Encrypt` would answer it (for seeding tests). */
  encrypt(plaintext: string | Uint8Array, keyId = "alias/llm-secrets-test"): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#kmsKey, iv);
    cipher.setAAD(Buffer.from(keyId));
    const box = Buffer.concat([cipher.update(Buffer.from(plaintext)), cipher.final(), cipher.getAuthTag()]);
    const id = Buffer.from(keyId);
    return Buffer.concat([Buffer.from([id.length]), id, iv, box]);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    if (String(req.headers["content-type"] ?? "").startsWith("application/x-www-form-urlencoded")) {
      return this.#sts(req, res, raw);
    }
    const target = String(req.headers["x-amz-target"] ?? "");
    let body: Record<string, unknown> = {};
    try {
      body = raw === "" ? {} : (JSON.parse(raw) as Record<string, unknown>);
    } catch {
      return this.#error(res, new AwsError("SerializationException", "the body is not JSON"));
    }
    const seen: AwsRequestSeen = { target, body, headers: req.headers };
    this.requests.push(seen);

    const fault = this.#faults.take(target.slice(target.indexOf(".") + 1));
    if (fault === "hang") return; // the client's timeout ends it
    if (fault === "reset") {
      req.socket.destroy();
      return;
    }
    if (fault === "denied") return this.#error(res, new AwsError("AccessDeniedException", "not authorized", 400));
    // As AWS throttles (Secrets Manager and KMS "Common Errors": `ThrottlingException`, "The request
    // was denied due to request throttling", HTTP status code 400), with no Retry-After.
    if (fault === "throttled") return this.#error(res, new AwsError("ThrottlingException", "Rate exceeded", 400));
    if (fault === "error") return this.#error(res, new AwsError("InternalServiceError", "internal failure", 500));

    try {
      if (req.method !== "POST" || req.url !== "/") throw new AwsError("UnknownOperationException", "POST / only");
      if (req.headers["content-type"] !== "application/x-amz-json-1.1") {
        throw new AwsError("SerializationException", "Content-Type must be application/x-amz-json-1.1");
      }
      const service = target.startsWith("secretsmanager.")
        ? "secretsmanager"
        : target.startsWith("TrentService.")
          ? "kms"
          : "";
      if (service === "") throw new AwsError("UnknownOperationException", `unknown target ${target}`);
      seen.principal = await this.#verifySignature(req, raw, service);
      const action = target.slice(target.indexOf(".") + 1);
      const answer = service === "kms" ? this.#kms(action, body) : this.#secretsManager(action, body);
      const json = JSON.stringify(answer);
      res.writeHead(200, { "content-type": "application/x-amz-json-1.1", "x-amzn-requestid": randomUUID() });
      res.end(json);
    } catch (err) {
      if (err instanceof AwsError) return this.#error(res, err);
      return this.#error(res, new AwsError("InternalServiceError", "fake failure", 500));
    }
  }

  /**
   * SigV4 as the service checks it: the same request signed with the caller's secret key gives the
   * same signature. The caller is the account (the fake's keys) or a session STS gave (its
   * temporary keys, and its token in `X-Amz-Security-Token`); returns which.
   */
  async #verifySignature(req: IncomingMessage, body: string, service: string): Promise<string> {
    const auth = String(req.headers.authorization ?? "");
    const m =
      /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(
        auth,
      );
    if (!m) throw new AwsError("IncompleteSignature", "Authorization header missing or malformed", 400);
    const [, accessKey, , region, signedService, signedHeaders, signature] = m as unknown as string[];
    const session = this.#sessions.get(accessKey as string);
    if (accessKey !== FAKE_AWS_CREDENTIALS.accessKeyId && session === undefined) {
      throw new AwsError("UnrecognizedClientException", "The security token included in the request is invalid.", 400);
    }
    if (session && req.headers["x-amz-security-token"] !== session.sessionToken) {
      throw new AwsError("UnrecognizedClientException", "The security token included in the request is invalid.", 400);
    }
    const credentials = session
      ? {
          accessKeyId: accessKey as string,
          secretAccessKey: session.secretAccessKey,
          sessionToken: session.sessionToken,
        }
      : FAKE_AWS_CREDENTIALS;
    if (signedService !== service) throw new AwsError("InvalidSignatureException", "wrong service in the scope", 400);
    const amzDate = String(req.headers["x-amz-date"] ?? "");
    const dm = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
    if (!dm) throw new AwsError("IncompleteSignature", "X-Amz-Date missing", 400);
    const [year, month, day, hour, minute, second] = dm.slice(1).map(Number) as [
      number,
      number,
      number,
      number,
      number,
      number,
    ];
    const signingDate = new Date(Date.UTC(year, month - 1, day, hour, minute, second));
    const headers: Record<string, string> = {};
    for (const name of (signedHeaders as string).split(";")) {
      const value = req.headers[name];
      if (value === undefined) throw new AwsError("InvalidSignatureException", `signed header ${name} missing`, 400);
      headers[name] = Array.isArray(value) ? value.join(",") : value;
    }
    const [hostname, port] = String(req.headers.host).split(":");
    const protocol = "encrypted" in req.socket ? "https:" : "http:";
    const signer = new SignatureV4({
      credentials,
      region: region as string,
      service,
      sha256: NodeSha256,
      applyChecksum: false,
    });
    const signed = await signer.sign(
      {
        method: "POST",
        protocol,
        hostname: hostname as string,
        port: Number(port),
        path: "/",
        query: {},
        headers,
        body,
      },
      { signingDate, signableHeaders: new Set(Object.keys(headers)) },
    );
    const expected = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))?.[1];
    if (expected !== signature) {
      throw new AwsError(
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided.",
        400,
      );
    }
    return session ? session.roleArn : "account";
  }

  // ---------------------------------------------------------------------------------------------
  // STS

  async #sts(req: IncomingMessage, res: ServerResponse, raw: string): Promise<void> {
    const form = new URLSearchParams(raw);
    const action = form.get("Action") ?? "";
    const seen: AwsRequestSeen = { target: `sts.${action}`, body: Object.fromEntries(form), headers: req.headers };
    this.requests.push(seen);
    const fault = this.#faults.take(action);
    if (fault === "hang") return;
    if (fault === "reset") {
      req.socket.destroy();
      return;
    }
    try {
      // STS's own answers (Query protocol, `<ErrorResponse>`): `AccessDenied` (403), `Throttling`
      // (400, "Rate exceeded", as STS throttles AssumeRole), `InternalFailure` (500).
      if (fault === "denied") throw new AwsError("AccessDenied", "not authorized", 403);
      if (fault === "throttled") throw new AwsError("Throttling", "Rate exceeded", 400);
      if (fault === "error") throw new AwsError("InternalFailure", "internal failure", 500);
      if (req.method !== "POST" || req.url !== "/") throw new AwsError("InvalidAction", "POST / only");
      if (form.get("Version") !== "2011-06-15")
        throw new AwsError("InvalidParameterValue", "Version must be 2011-06-15");
      const roleArn = form.get("RoleArn") ?? "";
      const sessionName = form.get("RoleSessionName") ?? "";
      if (!/^[\w+=,.@-]{2,64}$/.test(sessionName)) {
        throw new AwsError("ValidationError", "RoleSessionName must be 2-64 of [\\w+=,.@-]");
      }
      const role = this.roles.get(roleArn);
      if (action === "AssumeRole") {
        seen.principal = await this.#verifySignature(req, raw, "sts");
        // A role that names an external id needs it; one that does not ignores one sent.
        if (!role || (role.externalId !== undefined && role.externalId !== form.get("ExternalId"))) {
          throw new AwsError("AccessDenied", `not authorized to perform sts:AssumeRole on ${roleArn}`, 403);
        }
      } else if (action === "AssumeRoleWithWebIdentity") {
        seen.principal = "web-identity";
        const token = form.get("WebIdentityToken") ?? "";
        // AssumeRoleWithWebIdentity: "ExpiredTokenException: The web identity token that was passed
        // is expired or is not valid. Get a new identity token from the identity provider and then
        // retry the request." (HTTP 400)
        if (role?.expiredWebIdentityTokens?.includes(token)) {
          throw new AwsError(
            "ExpiredTokenException",
            "Token expired: current date/time must be before the expiration date/time.",
            400,
          );
        }
        if (!role?.webIdentityToken) {
          throw new AwsError("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity", 403);
        }
        // AssumeRoleWithWebIdentity's documented errors (HTTP 400): IDPCommunicationError ("The
        // request could not be fulfilled because the identity provider (IDP) that was asked to
        // verify the incoming identity token could not be reached. ... Retry the request."), and
        // InvalidIdentityToken for a token it cannot validate.
        if (role.idpUnreachable) {
          throw new AwsError("IDPCommunicationError", "The identity provider could not be reached.", 400);
        }
        if (token !== role.webIdentityToken) {
          throw new AwsError(
            "InvalidIdentityToken",
            "The web identity token that was passed could not be validated by AWS.",
            400,
          );
        }
      } else throw new AwsError("InvalidAction", `unknown action ${action}`);
      const accessKeyId = `ASIA${randomBytes(8).toString("hex").toUpperCase()}`;
      const session = {
        secretAccessKey: randomBytes(20).toString("base64"),
        sessionToken: randomBytes(32).toString("base64"),
        roleArn,
        sessionName,
      };
      this.#sessions.set(accessKeyId, session);
      const lifetime = (role.sessionSeconds ?? 3600) * 1000;
      const expiration = new Date(Date.now() + lifetime).toISOString().replace(/\.\d{3}Z$/, "Z");
      const result =
        `<Credentials><AccessKeyId>${accessKeyId}</AccessKeyId><SecretAccessKey>${session.secretAccessKey}</SecretAccessKey>` +
        `<SessionToken>${session.sessionToken}</SessionToken><Expiration>${expiration}</Expiration></Credentials>` +
        `<AssumedRoleUser><AssumedRoleId>AROAFAKE:${sessionName}</AssumedRoleId><Arn>${roleArn}/${sessionName}</Arn></AssumedRoleUser>`;
      res.writeHead(200, { "content-type": "text/xml" });
      res.end(
        `<${action}Response xmlns="${STS_XMLNS}"><${action}Result>${result}</${action}Result>` +
          `<ResponseMetadata><RequestId>${randomUUID()}</RequestId></ResponseMetadata></${action}Response>`,
      );
    } catch (err) {
      const e = err instanceof AwsError ? err : new AwsError("InternalFailure", "fake failure", 500);
      res.writeHead(e.status, { "content-type": "text/xml" });
      res.end(
        `<ErrorResponse xmlns="${STS_XMLNS}"><Error><Type>${e.status >= 500 ? "Receiver" : "Sender"}</Type>` +
          `<Code>${e.type}</Code><Message>${xmlEscape(e.message)}</Message></Error>` +
          `<RequestId>${randomUUID()}</RequestId></ErrorResponse>`,
      );
    }
  }

  #error(res: ServerResponse, err: AwsError): void {
    if (res.headersSent) return;
    res.statusCode = err.status;
    res.setHeader("content-type", "application/x-amz-json-1.1");
    res.setHeader("x-amzn-errortype", err.type);
    res.end(JSON.stringify({ __type: err.type, message: err.message }));
  }

  // ---------------------------------------------------------------------------------------------
  // Secrets Manager

  #secretsManager(action: string, body: Record<string, unknown>): unknown {
    this.#refuseState(action, body);
    switch (action) {
      case "CreateSecret":
        return this.#create(body);
      case "GetSecretValue": {
        const secret = this.#live(body.SecretId);
        const version = this.#versionAsked(secret, body.VersionId, body.VersionStage);
        return {
          ARN: secret.arn,
          Name: secret.name,
          VersionId: version.id,
          SecretString: version.value,
          VersionStages: this.#stagesOf(secret, version.id),
          CreatedDate: version.created.getTime() / 1000,
        };
      }
      case "PutSecretValue": {
        const secret = this.#live(body.SecretId);
        const value = this.#secretString(body);
        if (value === undefined)
          throw new AwsError("InvalidParameterException", "You must provide either SecretString or SecretBinary.");
        const stages = this.#versionStages(body.VersionStages);
        const version = this.#addVersion(secret, value, body.ClientRequestToken, stages);
        return {
          ARN: secret.arn,
          Name: secret.name,
          VersionId: version.id,
          VersionStages: this.#stagesOf(secret, version.id),
        };
      }
      case "UpdateSecretVersionStage":
        return this.#updateVersionStage(body);
      case "DescribeSecret": {
        const secret = this.#find(body.SecretId);
        return {
          ARN: secret.arn,
          Name: secret.name,
          Description: secret.description,
          KmsKeyId: secret.kmsKeyId,
          CreatedDate: secret.created.getTime() / 1000,
          ...(secret.deletedDate && { DeletedDate: secret.deletedDate.getTime() / 1000 }),
          Tags: [...secret.tags].map(([Key, Value]) => ({ Key, Value })),
          PrimaryRegion: secret.primaryRegion ?? "us-east-1",
          ...(secret.replicas.length > 0 && { ReplicationStatus: replicationStatus(secret) }),
          VersionIdsToStages: this.#versionIdsToStages(secret),
        };
      }
      case "TagResource": {
        // As AWS: a secret scheduled for deletion takes no tags (localstack#13648, checked against AWS).
        const secret = this.#live(body.SecretId);
        const tags = new Map(secret.tags);
        for (const tag of this.#tags(body.Tags)) tags.set(tag.Key, tag.Value);
        secret.tags = checkedTagCount(tags);
        return {};
      }
      case "UpdateSecret": {
        const secret = this.#live(body.SecretId);
        if (body.Description !== undefined) {
          if (typeof body.Description !== "string" || body.Description.length > 2048) {
            throw new AwsError("InvalidParameterException", "Description must be a string of at most 2048 characters");
          }
          secret.description = body.Description;
        }
        if (typeof body.KmsKeyId === "string") secret.kmsKeyId = body.KmsKeyId;
        const value = this.#secretString(body);
        const version = value === undefined ? undefined : this.#addVersion(secret, value, body.ClientRequestToken);
        return { ARN: secret.arn, Name: secret.name, ...(version && { VersionId: version.id }) };
      }
      case "UntagResource": {
        const secret = this.#live(body.SecretId);
        if (!Array.isArray(body.TagKeys)) throw new AwsError("InvalidParameterException", "TagKeys is required");
        for (const key of body.TagKeys) secret.tags.delete(String(key));
        return {};
      }
      case "DeleteSecret": {
        const secret = this.#find(body.SecretId);
        if (secret.deletedDate) {
          throw new AwsError(
            "InvalidRequestException",
            "You can't perform this operation on the secret because it was already scheduled for deletion.",
          );
        }
        // DeleteSecret: "You can't delete a primary secret that is replicated to other Regions. You
        // must first delete the replicas using RemoveRegionsFromReplication, and then delete the
        // primary secret."
        if (secret.replicas.length > 0) {
          throw new AwsError(
            "InvalidRequestException",
            "You can't delete a primary secret that is replicated to other Regions. You must first delete the replicas using RemoveRegionsFromReplication.",
          );
        }
        if (body.ForceDeleteWithoutRecovery === true) {
          if (body.RecoveryWindowInDays !== undefined) {
            throw new AwsError(
              "InvalidParameterException",
              "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
            );
          }
          this.secrets.delete(secret.name);
          return { ARN: secret.arn, Name: secret.name, DeletionDate: Date.now() / 1000 };
        }
        const days = body.RecoveryWindowInDays ?? 30;
        if (typeof days !== "number" || !Number.isInteger(days) || days < 7 || days > 30) {
          throw new AwsError("InvalidParameterException", "RecoveryWindowInDays must be between 7 and 30.");
        }
        secret.deletedDate = new Date();
        return { ARN: secret.arn, Name: secret.name, DeletionDate: Date.now() / 1000 + days * 86_400 };
      }
      case "RestoreSecret": {
        const secret = this.#find(body.SecretId);
        secret.deletedDate = undefined;
        return { ARN: secret.arn, Name: secret.name };
      }
      case "ReplicateSecretToRegions": {
        const secret = this.#live(body.SecretId);
        const regions = this.#addedRegions(body.AddReplicaRegions);
        for (const region of regions) if (!secret.replicas.includes(region)) secret.replicas.push(region);
        return { ARN: secret.arn, ReplicationStatus: replicationStatus(secret) };
      }
      case "RemoveRegionsFromReplication": {
        const secret = this.#live(body.SecretId);
        const regions = this.#regions(body.RemoveReplicaRegions);
        secret.replicas = secret.replicas.filter((r) => !regions.includes(r));
        return { ARN: secret.arn, ReplicationStatus: replicationStatus(secret) };
      }
      case "ListSecrets":
        return this.#list(body);
      default:
        throw new AwsError("UnknownOperationException", `unknown operation ${action}`);
    }
  }

  #list(body: Record<string, unknown>): unknown {
    const max = body.MaxResults ?? 100;
    if (typeof max !== "number" || !Number.isInteger(max) || max < 1 || max > 100) {
      throw new AwsError("InvalidParameterException", "MaxResults must be between 1 and 100.");
    }
    let after = -1;
    if (body.NextToken !== undefined) {
      const seq = typeof body.NextToken === "string" ? this.#listTokens.get(body.NextToken) : undefined;
      if (seq === undefined) throw new AwsError("InvalidNextTokenException", "The NextToken value is invalid.");
      after = seq;
    }
    const filters = this.#filters(body.Filters);
    const matching = [...this.secrets.values()]
      .filter((s) => s.seq > after && (body.IncludePlannedDeletion === true || s.deletedDate === undefined))
      .filter((s) => filters.every((f) => f(s)))
      .sort((a, b) => a.seq - b.seq);
    const page = matching.slice(0, max);
    const last = page.at(-1);
    let nextToken: string | undefined;
    if (matching.length > max && last) {
      nextToken = randomBytes(24).toString("base64");
      this.#listTokens.set(nextToken, last.seq);
    }
    return {
      SecretList: page.map((s) => ({
        ARN: s.arn,
        Name: s.name,
        ...(s.description !== undefined && { Description: s.description }),
        ...(s.kmsKeyId !== undefined && { KmsKeyId: s.kmsKeyId }),
        CreatedDate: s.created.getTime() / 1000,
        ...(s.deletedDate && { DeletedDate: s.deletedDate.getTime() / 1000 }),
        Tags: [...s.tags].map(([Key, Value]) => ({ Key, Value })),
        SecretVersionsToStages: this.#versionIdsToStages(s),
      })),
      ...(nextToken && { NextToken: nextToken }),
    };
  }

  /** `ListSecrets`' `Filters`, checked as AWS documents them (`Filter`), as predicates. */
  #filters(filters: unknown): ((s: FakeSecret) => boolean)[] {
    if (filters === undefined) return [];
    if (!Array.isArray(filters)) throw new AwsError("InvalidParameterException", "Filters must be a list");
    return filters.map((f) => {
      const { Key, Values } = f as { Key?: unknown; Values?: unknown };
      if (!Array.isArray(Values) || Values.length < 1 || Values.length > 10) {
        throw new AwsError("InvalidParameterException", "a filter holds 1 to 10 Values");
      }
      for (const v of Values) {
        if (typeof v !== "string" || v.length > 512 || !/^!?[a-zA-Z0-9 :_@/+=.\-!]*$/.test(v)) {
          throw new AwsError("InvalidParameterException", "invalid filter value");
        }
      }
      const fields: Record<string, (s: FakeSecret) => string[]> = {
        name: (s) => [s.name],
        description: (s) => [s.description ?? ""],
        "tag-key": (s) => [...s.tags.keys()],
        "tag-value": (s) => [...s.tags.values()],
      };
      const field = typeof Key === "string" ? fields[Key] : undefined;
      if (!field) throw new AwsError("InvalidParameterException", "unsupported filter key");
      const caseless = Key === "description";
      return (s: FakeSecret) =>
        (Values as string[]).some((raw) => {
          const negated = raw.startsWith("!");
          const value = caseless ? raw.slice(negated ? 1 : 0).toLowerCase() : raw.slice(negated ? 1 : 0);
          const hit = field(s).some((text) => (caseless ? text.toLowerCase() : text).startsWith(value));
          return negated ? !hit : hit;
        });
    });
  }

  #create(body: Record<string, unknown>): unknown {
    const name = body.Name;
    if (typeof name !== "string" || !/^[A-Za-z0-9/_+=.@-]{1,512}$/.test(name)) {
      throw new AwsError("InvalidParameterException", "Invalid name");
    }
    const token = body.ClientRequestToken;
    if (token !== undefined && (typeof token !== "string" || token.length < 32 || token.length > 64)) {
      throw new AwsError("InvalidParameterException", "ClientRequestToken must be 32 to 64 characters");
    }
    const existing = this.secrets.get(name);
    if (existing) {
      // The same request again (a retry): answered as the first time.
      if (typeof token === "string" && existing.tokens.has(token)) {
        return { ARN: existing.arn, Name: existing.name, VersionId: token };
      }
      if (existing.deletedDate) {
        throw new AwsError(
          "InvalidRequestException",
          "You can't create this secret because a secret with this name is already scheduled for deletion.",
        );
      }
      throw new AwsError("ResourceExistsException", `The operation failed because the secret ${name} already exists.`);
    }
    const secret: FakeSecret = {
      name,
      arn: `arn:aws:secretsmanager:us-east-1:123456789012:secret:${name}-${randomBytes(3).toString("hex")}`,
      description: typeof body.Description === "string" ? body.Description : undefined,
      kmsKeyId: typeof body.KmsKeyId === "string" ? body.KmsKeyId : undefined,
      tags: checkedTagCount(new Map(this.#tags(body.Tags ?? []).map((t) => [t.Key, t.Value]))),
      replicas: body.AddReplicaRegions === undefined ? [] : this.#addedRegions(body.AddReplicaRegions),
      versions: [],
      stages: new Map(),
      created: new Date(),
      seq: this.#seq++,
      tokens: new Set(),
    };
    const value = this.#secretString(body);
    let versionId: string | undefined;
    if (value !== undefined) versionId = this.#addVersion(secret, value, token).id;
    else if (typeof token === "string") secret.tokens.add(token);
    this.secrets.set(name, secret);
    return { ARN: secret.arn, Name: name, ...(versionId && { VersionId: versionId }) };
  }

  /** What a replica, or a secret whose KMS key cannot be used, refuses before anything is done. */
  #refuseState(action: string, body: Record<string, unknown>): void {
    const secret = typeof body.SecretId === "string" ? this.secrets.get(body.SecretId) : undefined;
    if (!secret) return;
    if (secret.primaryRegion !== undefined && CHANGES.has(action)) {
      throw new AwsError(
        "InvalidRequestException",
        "Operation not permitted on a replica secret. Call must be made in primary secret's region.",
      );
    }
    if (secret.keyState === undefined) return;
    if (action === "GetSecretValue") {
      throw secret.keyState === "Disabled"
        ? new AwsError(
            "DecryptionFailure",
            "Secrets Manager can't decrypt the protected secret text using the provided KMS key.",
          )
        : new AwsError("KMSInvalidStateException", `${secret.kmsKeyId ?? "the KMS key"} is pending deletion.`);
    }
    if ((action === "PutSecretValue" || action === "UpdateSecret") && body.SecretString !== undefined) {
      throw new AwsError(
        "EncryptionFailure",
        "Secrets Manager can't encrypt the protected secret text using the provided KMS key. Check that the KMS key is available, enabled, and not in an invalid state.",
      );
    }
  }

  /** A secret not scheduled for deletion (what most actions take). */
  #live(id: unknown): FakeSecret {
    const secret = this.#find(id);
    if (secret.deletedDate) {
      throw new AwsError(
        "InvalidRequestException",
        "You can't perform this operation on the secret because it was marked for deletion.",
      );
    }
    return secret;
  }

  /** The regions of an `AddReplicaRegions` list (`[{Region}]`), checked as `#regions` checks them. */
  #addedRegions(added: unknown): string[] {
    return this.#regions(Array.isArray(added) ? added.map((r) => (r as { Region?: unknown }).Region) : undefined);
  }

  /** Replica Regions as AWS takes them: at least one, each `^([a-z]+-)+\d+$`. */
  #regions(regions: unknown): string[] {
    if (!Array.isArray(regions) || regions.length === 0) {
      throw new AwsError("InvalidParameterException", "At least one Region is required.");
    }
    for (const region of regions) {
      if (typeof region !== "string" || !/^([a-z]+-)+\d+$/.test(region)) {
        throw new AwsError("InvalidParameterException", "Invalid Region.");
      }
    }
    return regions as string[];
  }

  #find(id: unknown): FakeSecret {
    if (typeof id !== "string" || id === "") throw new AwsError("InvalidParameterException", "SecretId is required");
    const secret = this.secrets.get(id) ?? [...this.secrets.values()].find((s) => s.arn === id);
    if (!secret) throw new AwsError("ResourceNotFoundException", "Secrets Manager can't find the specified secret.");
    return secret;
  }

  #secretString(body: Record<string, unknown>): string | undefined {
    const value = body.SecretString;
    if (value === undefined) return undefined;
    if (typeof value !== "string") throw new AwsError("InvalidParameterException", "SecretString must be a string");
    if (Buffer.byteLength(value, "utf8") > MAX_SECRET_STRING) {
      throw new AwsError("InvalidParameterException", "SecretString is larger than 65536 bytes");
    }
    return value;
  }

  /**
   * A new version of `value` holding `stages` (`AWSCURRENT` when none are given), or, for a token
   * already used with the same value (a retry), that version as it is: "the operation succeeds but
   * does nothing" (PutSecretValue).
   */
  #addVersion(secret: FakeSecret, value: string, token: unknown, stages: readonly string[] = [CURRENT]): SecretVersion {
    const id = typeof token === "string" ? token : randomUUID();
    const again = secret.versions.find((v) => v.id === id);
    if (again) {
      if (again.value !== value) {
        throw new AwsError(
          "ResourceExistsException",
          "A version with this ClientRequestToken already exists with other contents.",
        );
      }
      return again;
    }
    const version = { id, value, created: new Date() };
    secret.versions.push(version);
    secret.tokens.add(id);
    for (const stage of stages) this.#attach(secret, stage, id);
    return version;
  }

  /**
   * Puts `stage` on version `id`, taking it off the version that held it; when that is `AWSCURRENT`
   * moving, `AWSPREVIOUS` goes to the version it left ("Whenever you move AWSCURRENT, Secrets
   * Manager automatically moves the label AWSPREVIOUS to the version that AWSCURRENT was removed
   * from").
   */
  #attach(secret: FakeSecret, stage: string, id: string): void {
    const holder = secret.stages.get(stage);
    if (holder === id) return;
    secret.stages.set(stage, id);
    if (stage === CURRENT && holder !== undefined) secret.stages.set(PREVIOUS, holder);
  }

  #stagesOf(secret: FakeSecret, id: string): string[] {
    return [...secret.stages].filter(([, holder]) => holder === id).map(([stage]) => stage);
  }

  /** `VersionIdsToStages`: the versions that hold a label (the others are deprecated). */
  #versionIdsToStages(secret: FakeSecret): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (const [stage, id] of secret.stages) out[id] = [...(out[id] ?? []), stage];
    return out;
  }

  /** `PutSecretValue`'s `VersionStages`: `AWSCURRENT` when not given. */
  #versionStages(stages: unknown): string[] {
    if (stages === undefined) return [CURRENT];
    if (!Array.isArray(stages) || stages.length < 1 || stages.length > MAX_STAGES) {
      throw new AwsError("InvalidParameterException", `VersionStages holds 1 to ${MAX_STAGES} staging labels.`);
    }
    return stages.map((stage) => this.#stage(stage));
  }

  #stage(stage: unknown): string {
    if (typeof stage !== "string" || stage.length < 1 || stage.length > MAX_STAGE_LENGTH) {
      throw new AwsError("InvalidParameterException", `A staging label is 1 to ${MAX_STAGE_LENGTH} characters.`);
    }
    return stage;
  }

  /**
   * The version `GetSecretValue` answers: by `VersionId`, by `VersionStage`, both (which "must refer
   * to the same secret version"), or neither (`AWSCURRENT`). One not there is not found.
   */
  #versionAsked(secret: FakeSecret, versionId: unknown, versionStage: unknown): SecretVersion {
    const stage =
      versionStage === undefined ? (versionId === undefined ? CURRENT : undefined) : this.#stage(versionStage);
    const byStage = stage === undefined ? undefined : secret.stages.get(stage);
    if (stage !== undefined && byStage === undefined) {
      throw new AwsError(
        "ResourceNotFoundException",
        `Secrets Manager can't find the specified secret value for staging label: ${stage}`,
      );
    }
    if (versionId !== undefined && (typeof versionId !== "string" || versionId.length < 32 || versionId.length > 64)) {
      throw new AwsError("InvalidParameterException", "VersionId must be 32 to 64 characters");
    }
    const id = (versionId as string | undefined) ?? byStage;
    const version = secret.versions.find((v) => v.id === id);
    if (!version || (byStage !== undefined && byStage !== id)) {
      throw new AwsError(
        "ResourceNotFoundException",
        `Secrets Manager can't find the specified secret value for VersionId: ${String(versionId)}`,
      );
    }
    return version;
  }

  /**
   * `UpdateSecretVersionStage`: `VersionStage` moved to `MoveToVersionId` and/or taken off
   * `RemoveFromVersionId`. A label held by another version moves only when `RemoveFromVersionId`
   * names that version ("If the label is attached and you either do not specify this parameter, or
   * the version ID does not match, then the operation fails"); `AWSCURRENT` is never just removed.
   */
  #updateVersionStage(body: Record<string, unknown>): unknown {
    const secret = this.#live(body.SecretId);
    const stage = this.#stage(body.VersionStage);
    const versionIdOf = (id: unknown, what: string): string | undefined => {
      if (id === undefined) return undefined;
      if (typeof id !== "string" || !secret.versions.some((v) => v.id === id)) {
        throw new AwsError("InvalidParameterException", `${what}: not a valid version: ${String(id)}`);
      }
      return id;
    };
    const moveTo = versionIdOf(body.MoveToVersionId, "MoveToVersionId");
    const removeFrom = versionIdOf(body.RemoveFromVersionId, "RemoveFromVersionId");
    const holder = secret.stages.get(stage);
    if (removeFrom !== undefined && holder !== removeFrom) {
      throw new AwsError(
        "InvalidParameterException",
        `The staging label ${stage} is not attached to version ${removeFrom}; it is ${holder === undefined ? "attached to none" : `attached to version ${holder}`}.`,
      );
    }
    if (moveTo === undefined) {
      if (removeFrom === undefined) {
        throw new AwsError("InvalidParameterException", "Give MoveToVersionId, RemoveFromVersionId or both.");
      }
      if (stage === CURRENT) {
        throw new AwsError(
          "InvalidParameterException",
          "You can't remove the AWSCURRENT staging label without moving it to another version.",
        );
      }
      secret.stages.delete(stage);
      return { ARN: secret.arn, Name: secret.name };
    }
    if (holder !== undefined && holder !== moveTo && removeFrom === undefined) {
      throw new AwsError(
        "InvalidParameterException",
        `The parameter RemoveFromVersionId can't be empty. Staging label ${stage} is currently attached to version ${holder}, so you must explicitly reference that version in RemoveFromVersionId.`,
      );
    }
    this.#attach(secret, stage, moveTo);
    return { ARN: secret.arn, Name: secret.name };
  }

  #tags(tags: unknown): { Key: string; Value: string }[] {
    if (!Array.isArray(tags)) throw new AwsError("InvalidParameterException", "Tags must be a list");
    return tags.map((t) => {
      const { Key, Value } = t as { Key?: unknown; Value?: unknown };
      if (typeof Key !== "string" || typeof Value !== "string" || !/^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$/u.test(Key)) {
        throw new AwsError("ValidationException", "invalid tag");
      }
      if (Value.length > 256 || !/^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u.test(Value)) {
        throw new AwsError("ValidationException", "invalid tag value");
      }
      // TagResource: "Do not use the aws: prefix in your tag names or values because AWS reserves
      // it for AWS use"; AWS's tagging rules: "aws:, AWS:, or any upper or lowercase combination".
      if (/^aws:/i.test(Key) || /^aws:/i.test(Value)) {
        throw new AwsError("InvalidParameterException", "The aws: prefix is reserved for AWS use.");
      }
      return { Key, Value };
    });
  }

  // ---------------------------------------------------------------------------------------------
  // KMS

  #kms(action: string, body: Record<string, unknown>): unknown {
    if (action === "Encrypt") {
      if (typeof body.KeyId !== "string" || typeof body.Plaintext !== "string") {
        throw new AwsError("ValidationException", "KeyId and Plaintext are required");
      }
      const blob = this.encrypt(Buffer.from(body.Plaintext, "base64").toString("utf8"), body.KeyId);
      return { CiphertextBlob: blob.toString("base64"), KeyId: body.KeyId };
    }
    if (action === "Decrypt") {
      if (typeof body.CiphertextBlob !== "string")
        throw new AwsError("ValidationException", "CiphertextBlob is required");
      const blob = Buffer.from(body.CiphertextBlob, "base64");
      try {
        const idLength = blob[0] as number;
        const keyId = blob.subarray(1, 1 + idLength);
        const iv = blob.subarray(1 + idLength, 13 + idLength);
        const box = blob.subarray(13 + idLength);
        const decipher = createDecipheriv("aes-256-gcm", this.#kmsKey, iv);
        decipher.setAAD(keyId);
        decipher.setAuthTag(box.subarray(box.length - 16));
        const plain = Buffer.concat([decipher.update(box.subarray(0, box.length - 16)), decipher.final()]);
        return {
          KeyId: keyId.toString(),
          Plaintext: plain.toString("base64"),
          EncryptionAlgorithm: "SYMMETRIC_DEFAULT",
        };
      } catch {
        throw new AwsError("InvalidCiphertextException", "");
      }
    }
    throw new AwsError("UnknownOperationException", `unknown operation ${action}`);
  }
}

/**
 * The fake started on first use for this test file, with the SDK pointed at it the way a user
 * points it at an emulator (`AWS_ENDPOINT_URL`) and given its credentials through the SDK's own
 * variables; stopped after the file.
 */
export function lazyFakeAws(): () => Promise<FakeAws> {
  let started: Promise<FakeAws> | undefined;
  afterAll(async () => (await started)?.close());
  return () => {
    started ??= FakeAws.start().then((fake) => {
      process.env.AWS_ENDPOINT_URL = fake.url;
      process.env.AWS_ACCESS_KEY_ID = FAKE_AWS_CREDENTIALS.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = FAKE_AWS_CREDENTIALS.secretAccessKey;
      return fake;
    });
    return started;
  };
}
