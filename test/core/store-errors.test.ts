import { join } from "node:path";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";
import { SecretsError, toHttpError } from "../../core/src/errors";
import {
  BackendUnavailable,
  classifyBackendError,
  isRetryable,
  NotSupported,
  StoreCorrupt,
} from "../../core/src/store-errors";
import { runProcess, tempDir } from "../helpers";

/** An error shaped like the named client's. */
function shaped(fields: Record<string, unknown>, message = "backend said: sk-live-abcdef0123456789"): Error {
  return Object.assign(new Error(message), fields);
}

const CASES: [string, unknown, string, number?][] = [
  [
    "AWS AccessDeniedException",
    shaped({ name: "AccessDeniedException", $metadata: { httpStatusCode: 400 } }),
    "backend_denied",
  ],
  ["AWS ExpiredTokenException", shaped({ name: "ExpiredTokenException" }), "backend_denied"],
  [
    "AWS KMS DisabledException (the key of an aws_kms ciphertext disabled)",
    shaped({ name: "DisabledException", $metadata: { httpStatusCode: 400 } }),
    "store_unavailable",
  ],
  [
    "AWS KMS InvalidKeyUsageException (the key of an aws_kms ciphertext not for decryption)",
    shaped({ name: "InvalidKeyUsageException", $metadata: { httpStatusCode: 400 } }),
    "store_unavailable",
  ],
  [
    "AWS KMS InvalidGrantTokenException",
    shaped({ name: "InvalidGrantTokenException", $metadata: { httpStatusCode: 400 } }),
    "store_unavailable",
  ],
  [
    // A generic name (KMS's deleted key; another service's missing thing): the aws_kms store decides it.
    "a NotFoundException, the service untold",
    shaped({ name: "NotFoundException", $metadata: { httpStatusCode: 400 } }),
    "internal",
  ],
  [
    "AWS Secrets Manager DecryptionFailure (the secret's KMS key unusable)",
    shaped({ name: "DecryptionFailure", $metadata: { httpStatusCode: 400 } }),
    "store_unavailable",
  ],
  ["gRPC FAILED_PRECONDITION (9)", shaped({ code: 9 }), "store_unavailable"],
  [
    "AWS ThrottlingException with Retry-After",
    shaped({
      name: "ThrottlingException",
      $metadata: { httpStatusCode: 400 },
      $response: { headers: { "retry-after": "7" } },
    }),
    "backend_unavailable",
    7,
  ],
  [
    "AWS InternalServiceError (500)",
    shaped({ name: "InternalServiceError", $metadata: { httpStatusCode: 500 } }),
    "backend_unavailable",
    1,
  ],
  ["Azure RestError 403", shaped({ name: "RestError", statusCode: 403, code: "Forbidden" }), "backend_denied"],
  [
    "Azure RestError 429 retryAfterInMs",
    shaped({ name: "RestError", statusCode: 429, retryAfterInMs: 3000 }),
    "backend_unavailable",
    3,
  ],
  ["Azure identity unavailable", shaped({ name: "CredentialUnavailableError" }), "backend_denied"],
  [
    "AWS: no credentials found by the provider chain",
    shaped({ name: "CredentialsProviderError", tryNextLink: false }, "Could not load credentials from any providers"),
    "backend_denied",
  ],
  ["a backend certificate not trusted", shaped({ code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" }), "store_unavailable"],
  ["a self-signed backend certificate", shaped({ code: "DEPTH_ZERO_SELF_SIGNED_CERT" }), "store_unavailable"],
  [
    "Azure token refused (msal invalid_client)",
    shaped({ name: "AuthenticationRequiredError", message: "invalid_client: AADSTS7000215" }),
    "backend_denied",
  ],
  [
    "Azure token service down (msal network_error)",
    shaped({ name: "AuthenticationRequiredError", message: "network_error: Network request failed" }),
    "backend_unavailable",
    1,
  ],
  ["gRPC PERMISSION_DENIED", shaped({ code: 7, details: "denied" }), "backend_denied"],
  ["gRPC UNAUTHENTICATED", shaped({ code: 16 }), "backend_denied"],
  ["gRPC UNAVAILABLE", shaped({ code: 14 }), "backend_unavailable", 1],
  ["gRPC DEADLINE_EXCEEDED", shaped({ code: 4 }), "backend_unavailable", 1],
  ["gRPC RESOURCE_EXHAUSTED", shaped({ code: 8 }), "backend_unavailable", 1],
  ["HTTP 401 in status", shaped({ status: 401 }), "backend_denied"],
  [
    "HTTP 503 with a Headers Retry-After",
    shaped({ status: 503, headers: new Headers({ "retry-after": "12" }) }),
    "backend_unavailable",
    12,
  ],
  ["HTTP 502", shaped({ response: { status: 502 } }), "backend_unavailable", 1],
  ["HTTP 429", shaped({ statusCode: 429 }), "backend_unavailable", 1],
  ["HTTP 408 (the backend's own request timeout)", shaped({ status: 408 }), "backend_unavailable", 1],
  // A client that puts the HTTP status in `code`: a status, not a gRPC code.
  ["HTTP 503 given as a numeric code", shaped({ code: 503 }), "backend_unavailable", 1],
  ["HTTP 403 given as a numeric code", shaped({ code: 403 }), "backend_denied"],
  [
    "fetch failed: ECONNREFUSED",
    new TypeError("fetch failed", { cause: shaped({ code: "ECONNREFUSED" }) }),
    "backend_unavailable",
    1,
  ],
  ["ECONNRESET", shaped({ code: "ECONNRESET" }), "backend_unavailable", 1],
  ["ETIMEDOUT", shaped({ code: "ETIMEDOUT" }), "backend_unavailable", 1],
  // A name that does not resolve now (DNS down, a resolver timing out) may resolve on the next try.
  ["ENOTFOUND", shaped({ code: "ENOTFOUND" }), "backend_unavailable", 1],
  ["EAI_AGAIN", shaped({ code: "EAI_AGAIN" }), "backend_unavailable", 1],
  ["undici connect timeout", shaped({ code: "UND_ERR_CONNECT_TIMEOUT" }), "backend_unavailable", 1],
  ["AbortError", shaped({ name: "AbortError" }), "backend_unavailable", 1],
  ["TimeoutError", shaped({ name: "TimeoutError" }), "backend_unavailable", 1],
  ["EACCES on the data dir", shaped({ code: "EACCES", path: "/srv/data" }), "store_unavailable"],
  ["ENOENT data dir", shaped({ code: "ENOENT" }), "store_unavailable"],
  ["ENOSPC", shaped({ code: "ENOSPC" }), "store_unavailable"],
  ["EFBIG (a file size limit)", shaped({ code: "EFBIG" }), "store_unavailable"],
  ["EIO (the disk failed)", shaped({ code: "EIO" }), "store_unavailable"],
  // Secrets Manager's and KMS's LimitExceededException is a quota reached (Secrets Manager: more than
  // 100 versions not yet removed, kept 24 h), not throttling: retrying it for a day helps no one.
  [
    "AWS LimitExceededException (a quota, not throttling)",
    shaped({ name: "LimitExceededException", $fault: "client", $metadata: { httpStatusCode: 400 } }),
    "internal",
  ],
  // A service that throttles under that name (API Gateway) answers 429: retryable.
  [
    "LimitExceededException with 429",
    shaped({ name: "LimitExceededException", $metadata: { httpStatusCode: 429 } }),
    "backend_unavailable",
    1,
  ],
  // EC2-style throttling of the request rate stays retryable.
  [
    "AWS RequestLimitExceeded (request-rate throttling)",
    shaped({ name: "RequestLimitExceeded" }),
    "backend_unavailable",
    1,
  ],
  // STS (Query protocol) throttles AssumeRole as `<Code>Throttling</Code>`, HTTP 400: as the SDK
  // retries it, so is it retryable once its retries run out.
  [
    "AWS STS Throttling (HTTP 400)",
    shaped({ name: "Throttling", $fault: "client", $metadata: { httpStatusCode: 400 } }),
    "backend_unavailable",
    1,
  ],
  // The AWS SDK's other throttling names (@smithy's THROTTLING_ERROR_CODES), LimitExceededException aside.
  ...[
    "EC2ThrottledException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "BandwidthLimitExceeded",
    "ProvisionedThroughputExceededException",
    "PriorRequestNotComplete",
    "TransactionInProgressException",
  ].map((name): [string, unknown, string, number] => [
    `AWS ${name} (the SDK's throttling)`,
    shaped({ name, $metadata: { httpStatusCode: 400 } }),
    "backend_unavailable",
    1,
  ]),
  ["HTTP 400", shaped({ status: 400 }), "internal"],
  ["a plain Error", new Error("something with sk-live-abcdef0123456789"), "internal"],
  ["a string", "sk-live-abcdef0123456789", "internal"],
];

describe("classifyBackendError", () => {
  it.each(CASES)("%s", (_, err, code, retryAfter) => {
    const typed = classifyBackendError(err, "vault get");
    expect(typed).toBeInstanceOf(SecretsError);
    expect(typed.code).toBe(code);
    expect(isRetryable(typed)).toBe(code === "backend_unavailable");
    expect(typed.message.startsWith("vault get: ")).toBe(true);
    // Never the backend's message (which may quote a value), never a path.
    expect(typed.message).not.toContain("sk-live");
    expect(typed.message).not.toContain("/srv/data");
    const http = toHttpError(typed);
    if (code === "backend_unavailable") expect(http.headers["retry-after"]).toBe(String(retryAfter));
    expect(JSON.stringify(http)).not.toContain("sk-live");
  });

  it("passes typed errors through unchanged", () => {
    const corrupt = new StoreCorrupt("entry K does not open");
    expect(classifyBackendError(corrupt, "x")).toBe(corrupt);
    const unsupported = new NotSupported("deleting");
    expect(classifyBackendError(unsupported, "x")).toBe(unsupported);
  });

  it("gives every 503 a Retry-After, and maps the store codes to their statuses", () => {
    expect(toHttpError(new SecretsError("backend_unavailable", "down")).headers["retry-after"]).toBe("1");
    expect(toHttpError(new StoreCorrupt("x")).status).toBe(500);
    expect(toHttpError(classifyBackendError(shaped({ code: "EACCES" }), "x")).status).toBe(500);
    expect(toHttpError(classifyBackendError(shaped({ status: 403 }), "x")).status).toBe(502);
  });

  it("a 503's Retry-After is whole seconds from 1 to an hour, whatever the backend or a store said (it was NaN, Infinity, 1e+25), Infinity the hour", () => {
    const header = (err: unknown) => toHttpError(err).headers["retry-after"];
    const answered = (status: number, retryAfter: string) =>
      classifyBackendError(shaped({ status, headers: { "retry-after": retryAfter } }), "x");
    // A store's own number: an HTTP date it did not parse (NaN: says nothing, so the default), a
    // division by zero (Infinity: past any hour, so the hour; it was 1).
    expect(header(new BackendUnavailable("x", Number("Sat, 01 Jan 2000 00:00:00 GMT")))).toBe("1");
    expect(header(new BackendUnavailable("x", Number.POSITIVE_INFINITY))).toBe("3600");
    expect(header(new BackendUnavailable("x", Number.NEGATIVE_INFINITY))).toBe("1");
    expect(header(new BackendUnavailable("x", -5))).toBe("1");
    expect(header(new BackendUnavailable("x", 2.2))).toBe("3");
    // A backend's header: 25 digits (1e+25 once printed), 400 digits (Infinity), a thousand days.
    expect(header(answered(503, "9".repeat(25)))).toBe("3600");
    expect(header(answered(503, "9".repeat(400)))).toBe("3600");
    expect(header(answered(429, "86400000"))).toBe("3600");
    expect(header(answered(503, "120"))).toBe("120");
    // A typed error built directly, not through BackendUnavailable, is answered by the same rule: its
    // NaN was answered as the header `Retry-After: NaN`.
    const direct = (retryAfter: number) => header(new SecretsError("backend_unavailable", "x", { retryAfter }));
    expect(direct(Number.NaN)).toBe("1");
    expect(direct(Number.POSITIVE_INFINITY)).toBe("3600");
    expect(direct(1e25)).toBe("3600");
    expect(direct(0.5)).toBe("1");
    expect(direct(7)).toBe("7");
  });

  it("a backend quota reached (LimitExceededException) is no 503: no Retry-After, named in the log", () => {
    const typed = classifyBackendError(
      shaped({ name: "LimitExceededException", $fault: "client", $metadata: { httpStatusCode: 400 } }),
      "aws secrets manager put",
    );
    expect(isRetryable(typed)).toBe(false);
    expect(typed.message).toBe(
      "aws secrets manager put: the backend refuses this, one of its quotas is reached (HTTP 400, LimitExceededException)",
    );
    expect(toHttpError(typed)).toEqual({
      status: 500,
      headers: {},
      body: { error: { code: "internal", message: "internal error" } },
    });
  });

  it("names gRPC codes in the message: the name and the number, nothing of the message", () => {
    for (const [code, named, cls] of [
      [7, "PERMISSION_DENIED (7)", "backend_denied"],
      [16, "UNAUTHENTICATED (16)", "backend_denied"],
      [8, "RESOURCE_EXHAUSTED (8)", "backend_unavailable"],
      [14, "UNAVAILABLE (14)", "backend_unavailable"],
      [4, "DEADLINE_EXCEEDED (4)", "backend_unavailable"],
      [13, "INTERNAL (13)", "backend_unavailable"],
      [3, "INVALID_ARGUMENT (3)", "internal"],
      [42, "(42)", "internal"], // not a gRPC code: the number alone
    ] as const) {
      const typed = classifyBackendError(shaped({ code, details: "sk-live-abcdef0123456789" }), "google get");
      expect(typed.code, named).toBe(cls);
      expect(typed.message, named).toContain(named);
      expect(typed.message, named).not.toContain("sk-live");
    }
  });

  describe("google-gax's error once its retries run out (DEADLINE_EXCEEDED, the last attempt's code only in its message)", () => {
    /** As gax 5 builds it (normalCalls/retries.js): `retrying error ${err}` of the last attempt's error. */
    const gaxRetriesExhausted = (last: string) =>
      shaped(
        { code: 4, note: "", metadata: {}, statusDetails: [] },
        `Exceeded maximum number of retries retrying error Error: ${last}: sk-live-abcdef0123456789 before any response was received : Previous errors : [{message: ${last}: sk-live-abcdef0123456789, code: 8, details: , note: }]`,
      );

    it("is classified and named by that code, read from that place alone", () => {
      for (const [last, named] of [
        ["8 RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED (8)"],
        ["14 UNAVAILABLE", "UNAVAILABLE (14)"],
        ["4 DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED (4)"],
      ] as const) {
        const typed = classifyBackendError(gaxRetriesExhausted(last), "google get");
        expect(typed.code, last).toBe("backend_unavailable");
        expect(toHttpError(typed).headers["retry-after"], last).toBe("1");
        expect(typed.message, last).toContain(named);
        if (!last.startsWith("4 ")) expect(typed.message, last).not.toContain("DEADLINE_EXCEEDED");
        expect(typed.message, last).not.toMatch(/sk-live|retrying|Previous/);
      }
    });

    it("any other shape keeps the error's own code and class", () => {
      for (const message of [
        // gax's total-timeout error: the call's own deadline did end it.
        "Total timeout of API x exceeded 100 milliseconds retrying error Error: 8 RESOURCE_EXHAUSTED: y before any response was received.",
        "Exceeded maximum number of retries before any response was received", // no last error
        "Exceeded maximum number of retries retrying error Error: 99 NOPE: y before", // not a gRPC code
        "sk-live: Exceeded maximum number of retries retrying error Error: 7 PERMISSION_DENIED: y", // not at the start
      ]) {
        const typed = classifyBackendError(shaped({ code: 4 }, message), "google get");
        expect(typed.code, message).toBe("backend_unavailable");
        expect(typed.message, message).toContain("DEADLINE_EXCEEDED (4)");
        expect(typed.message, message).not.toMatch(/sk-live|RESOURCE_EXHAUSTED|PERMISSION_DENIED|NOPE|99/);
      }
      // Only DEADLINE_EXCEEDED is gax's: another code's message is never read.
      const internal = classifyBackendError(
        shaped({ code: 13 }, "Exceeded maximum number of retries retrying error Error: 7 PERMISSION_DENIED: y"),
        "google get",
      );
      expect(internal.code).toBe("backend_unavailable");
      expect(internal.message).toContain("INTERNAL (13)");
      // Nor an HTTP client's: a status decides.
      const http = classifyBackendError(
        shaped({ code: 4, status: 400 }, "Exceeded maximum number of retries retrying error Error: 14 UNAVAILABLE: y"),
        "google get",
      );
      expect(http.code).toBe("internal");
      expect(http.message).not.toContain("UNAVAILABLE");
    });
  });

  it("answers a typed internal failure as bare as an untyped one: the backend's detail stays in the log", () => {
    const typed = classifyBackendError(shaped({ name: "ResourceNotFoundException", status: 400 }), "aws get");
    expect(typed.code).toBe("internal");
    expect(typed.message).toContain("ResourceNotFoundException");
    expect(toHttpError(typed)).toEqual({
      status: 500,
      headers: {},
      body: { error: { code: "internal", message: "internal error" } },
    });
  });
});

describe("a filesystem that cannot be used", () => {
  it("says what its code means: a file size limit (EFBIG), a failed disk (EIO), a full one", () => {
    const message = (code: string) => classifyBackendError(shaped({ code }), "file store write").message;
    expect(message("EFBIG")).toMatch(/^file store write: the store cannot be used \(EFBIG: .*file size limit/);
    expect(message("EIO")).toMatch(/\(EIO: an I\/O error: the disk or volume failed\)$/);
    expect(message("ENOSPC")).toMatch(/\(ENOSPC: no space left on the device\)$/);
  });

  it("a file store past a file size limit (EFBIG) answers store_unavailable and logs the dir that cannot be used, as for a full disk", async () => {
    // Before: EFBIG was an unexpected failure (500 internal) and the log line naming the dir was skipped.
    const out = await tempDir();
    const script = join(out, "efbig-writer.mjs");
    const store = JSON.stringify(join(import.meta.dirname, "../../core/src/stores/file"));
    const crypto = JSON.stringify(join(import.meta.dirname, "../../core/src/crypto"));
    await build({
      stdin: {
        contents: `
          import { FileStore } from ${store};
          import { KeyRing } from ${crypto};
          const logged = [];
          const at = (level) => (msg, fields) => logged.push({ level, msg, ...fields });
          const log = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
          const store = await FileStore.open({ dataDir: process.argv[2], keys: new KeyRing("efbig-salt"), log });
          const failed = await store.put("BIG", "v".repeat(20_000)).then(() => undefined, (err) => err);
          console.log(JSON.stringify({ code: failed?.code, message: failed?.message, logged }));
          await store.close().catch(() => {});
        `,
        resolveDir: import.meta.dirname,
        loader: "ts",
        sourcefile: "efbig-writer.ts",
      },
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile: script,
      logLevel: "warning",
      banner: { js: 'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);' },
    });
    const dir = await tempDir();
    // A file may grow to 4096 bytes: the log's header fits, the 20 kB line does not.
    const run = await runProcess("prlimit", ["--fsize=4096", process.execPath, script, dir], {
      env: process.env as Record<string, string>,
    });
    expect(run.code).toBe(0);
    const printed = run.stdout;
    const { code, message, logged } = JSON.parse(printed);
    expect(code).toBe("store_unavailable");
    expect(message).toMatch(/cannot be used \(EFBIG: .*file size limit/);
    expect(logged).toContainEqual(
      expect.objectContaining({ level: "error", msg: "file store: the data dir cannot be used", dir, cause: "EFBIG" }),
    );
    expect(printed).not.toContain("vvvv");
  });
});
