// The aws_kms store's reading of an env value and of its plaintext, as LiteLLM's Python reads them
// (base64.b64decode, bytes.decode("utf-8"), str.strip(); checked against python3 when there is
// one), against the AWS fake (test/fakes/aws.ts) with the real SDK; and KMS Decrypt's error
// answers the fake does not make (a deleted key, another key's ciphertext), each answered as KMS
// answers it over a socket.

import { spawnSync } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import * as kms from "@aws-sdk/client-kms";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { SecretsError } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import { pythonB64decode } from "../../core/src/python-text";
import { isRetryable } from "../../core/src/store-errors";
import { AwsKmsStore, awsKmsStore } from "../../core/src/stores/aws-kms";
import { lazyFakeAws } from "../fakes/aws";
import { pythonFor } from "../helpers";

/** base64.b64decode and str.strip for the parity checks: any python3 will do. */
const PYTHON = pythonFor("base64", "python3");

const aws = lazyFakeAws();
const log = createLogger(() => {});

function openWith(env: Record<string, string>) {
  return awsKmsStore.open(
    { config: { aws_region_name: "us-east-1" }, env: {} },
    { dataDir: "/nonexistent", env, log, now: Date.now },
  );
}

/** What python3 makes of each row with `expression` (of `s`): hex of bytes, the text, or null where it raises. */
function python(expression: string, rows: readonly string[]): unknown[] {
  const script = [
    "import base64, json, sys",
    "def run(s):",
    "    try:",
    `        out = ${expression}`,
    "    except Exception:",
    "        return None",
    "    return out.hex() if isinstance(out, bytes) else out",
    "print(json.dumps([run(s) for s in json.loads(sys.stdin.read())]))",
  ].join("\n");
  const run = spawnSync(PYTHON as string, ["-c", script], { input: JSON.stringify(rows), encoding: "utf8" });
  expect(run.status, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as unknown[];
}

async function failureOf(promise: Promise<unknown>): Promise<SecretsError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SecretsError);
  return err as SecretsError;
}

beforeEach(async () => {
  (await aws()).reset();
});

describe("aws_kms reads the env value as LiteLLM's base64.b64decode", () => {
  /** [env value, the bytes (hex), or null where b64decode raises]. */
  const rows: [string, string | null][] = [
    ["QUJD", "414243"],
    ['"QUJD"', "414243"], // quotes, as `docker run --env-file` keeps them: skipped
    ["'QUJD'", "414243"],
    ["QU JD\n", "414243"], // whitespace: skipped
    ["Q-U_J.D", "414243"], // anything outside the alphabet: skipped
    ["=QUJD", "414243"], // an `=` that completes no padding: skipped
    ["QU=JD", "414243"],
    ["QUJD====", "414243"],
    ["QUI=", "4142"],
    ["QR==", "41"],
    ["QQ==QUJD", "41"], // the padding that completes a quad ends the data
    ["QUJ=D", "4142"],
    ["aGk=aGk=", "6869"],
    ["AAA=A", "0000"],
    ["QUJDQQ=x=", "414243410c"],
    ["QU=JDQQ=x=", "414243410c"], // a skipped `=` counts for its quad only: the data after it starts afresh
    ["====", ""],
    ["", ""],
    ["Q===", null], // one data character past a whole quad
    ["QUJDQ", null],
    ["QUI", null], // a quad without its padding
    ["QQ", null],
    ["QUJDQQ=", null],
    ["QUJD\u00a0", null], // not ASCII: b64decode refuses the str
    ["\ufeffQUJD", null],
  ];

  it("decodes as CPython's non-strict binascii.a2b_base64 (checked against python3)", () => {
    for (const [text, bytes] of rows) {
      expect(pythonB64decode(text)?.toString("hex") ?? null, JSON.stringify(text)).toBe(bytes);
    }
    if (PYTHON === undefined) return;
    expect(
      python(
        "base64.b64decode(s)",
        rows.map(([text]) => text),
      ),
    ).toEqual(rows.map(([, bytes]) => bytes));
  });

  it("opens a quoted ciphertext, aws_kms/ prefixed or not; a value not ASCII is store_corrupt without a call", async () => {
    const fake = await aws();
    const blob = fake.encrypt("sk-quoted").toString("base64");
    const store = await openWith({
      DOUBLE: `"${blob}"`,
      SINGLE: `'${blob}'`,
      PREFIXED: `"aws_kms/${blob}"`,
      TWICE: `aws_kms/aws_kms/${blob}`, // Python's str.replace: every occurrence
      PADDED: `${blob}====`,
      NBSP: `${blob}\u00a0`,
    });
    for (const name of ["DOUBLE", "SINGLE", "PREFIXED", "TWICE", "PADDED"]) {
      expect((await store.get(name))?.value, name).toBe("sk-quoted");
    }
    const calls = fake.calls("Decrypt").length;
    const err = await failureOf(store.get("NBSP"));
    expect(err.code).toBe("store_corrupt");
    expect(err.message).toBe("the environment variable NBSP is not base64 KMS ciphertext");
    expect(fake.calls("Decrypt")).toHaveLength(calls);
    await store.close?.();
  });

  it("refuses a ciphertext KMS would refuse (none, or over Decrypt's 6144 bytes) as store_corrupt, before any call", async () => {
    const fake = await aws();
    const store = await openWith({
      EMPTY: "",
      HUGE: Buffer.alloc(6145, 1).toString("base64"),
      LARGEST: Buffer.concat([fake.encrypt("sk-large"), Buffer.alloc(6144)])
        .subarray(0, 6144)
        .toString("base64"),
    });
    expect((await failureOf(store.get("EMPTY"))).code).toBe("store_corrupt");
    const huge = await failureOf(store.get("HUGE"));
    expect(huge.code).toBe("store_corrupt");
    expect(huge.message).toBe(
      "the environment variable HUGE is not KMS ciphertext: it decodes to more than the 6144 bytes Decrypt takes",
    );
    expect(fake.calls("Decrypt")).toHaveLength(0);
    // 6144 bytes are sent (the fake cannot open these: store_corrupt from its answer).
    expect((await failureOf(store.get("LARGEST"))).message).toContain("InvalidCiphertextException");
    expect(fake.calls("Decrypt")).toHaveLength(1);
    await store.close?.();
  });
});

describe("aws_kms reads the plaintext as LiteLLM's .decode('utf-8').strip()", () => {
  /** [plaintext, the value]: Python's isspace() at both ends, not JavaScript's trim(). */
  const rows: [string, string][] = [
    [" \t sk-a \r\n", "sk-a"],
    ["\x1c\x1dsk-b\x1e\x1f", "sk-b"], // separators: Python strips them, trim() keeps them
    ["sk-c\x85", "sk-c"], // NEL: Python strips it, trim() keeps it
    ["\ufeffsk-d\ufeff", "\ufeffsk-d\ufeff"], // BOM: Python keeps it (not stripped, not dropped by decode), trim() strips it
    ["\u00a0\u2000sk-e\u3000\u2029", "sk-e"],
    ["sk- f", "sk- f"],
  ];

  it("strips as str.strip() (checked against python3), and keeps a byte order mark", async () => {
    const fake = await aws();
    const env = Object.fromEntries(rows.map(([plain], i) => [`K${i}`, fake.encrypt(plain).toString("base64")]));
    const store = await openWith(env);
    for (const [i, [plain, value]] of rows.entries()) {
      expect((await store.get(`K${i}`))?.value, JSON.stringify(plain)).toBe(value);
    }
    await store.close?.();
    if (PYTHON === undefined) return;
    expect(
      python(
        "s.encode('utf-8').decode('utf-8').strip()",
        rows.map(([plain]) => plain),
      ),
    ).toEqual(rows.map(([, value]) => value));
  });

  it("a plaintext that is not UTF-8 is store_corrupt naming the variable, never its bytes", async () => {
    const fake = await aws();
    const store = await openWith({
      LATIN1: fake.encrypt(Buffer.from("sk-caf\xe9", "latin1")).toString("base64"),
      CUT: fake.encrypt(Buffer.from("sk-€", "utf8").subarray(0, -1)).toString("base64"),
    });
    for (const name of ["LATIN1", "CUT"]) {
      const err = await failureOf(store.get(name));
      expect(err.code, name).toBe("store_corrupt");
      expect(err.message).toBe(`the environment variable ${name} opens to a plaintext that is not UTF-8`);
    }
    await store.close?.();
  });
});

describe("aws_kms: KMS Decrypt's error answers", () => {
  let answer = { status: 400, type: "" };
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(answer.status, { "content-type": "application/x-amz-json-1.1" });
      res.end(JSON.stringify({ __type: answer.type, message: "the service's words" }));
    });
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  /** The store over a KMS client sent to this server (listening from the first call on), sealing K. */
  async function storeOnServer(): Promise<AwsKmsStore> {
    if (!server.listening) await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const client = new kms.KMSClient({
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      region: "us-east-1",
      maxAttempts: 1,
      credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" },
    });
    return new AwsKmsStore(kms, client, { K: Buffer.from("a ciphertext").toString("base64") });
  }

  it("of the ciphertext: store_corrupt naming the variable; of the key: store_unavailable; neither internal", async () => {
    const store = await storeOnServer();
    for (const [type, code, says] of [
      ["InvalidCiphertextException", "store_corrupt", "the environment variable K is not KMS ciphertext KMS can open"],
      ["IncorrectKeyException", "store_corrupt", "the environment variable K is not KMS ciphertext KMS can open"],
      ["NotFoundException", "store_unavailable", "the KMS key that sealed the environment variable K does not exist"],
      ["InvalidKeyUsageException", "store_unavailable", "the backend cannot use the secret's encryption key"],
      ["InvalidGrantTokenException", "store_unavailable", "the backend cannot use the secret's encryption key"],
      ["DisabledException", "store_unavailable", "the backend cannot use the secret's encryption key"],
      ["KMSInvalidStateException", "store_unavailable", "the backend cannot use the secret's encryption key"],
    ] as const) {
      answer = { status: 400, type };
      const err = await failureOf(store.get("K"));
      expect(err.code, type).toBe(code);
      expect(err.message, type).toContain(says);
      expect(err.message, type).toContain(type);
      expect(err.message, type).not.toContain("the service's words");
      expect(isRetryable(err), type).toBe(false);
    }
    await store.close();
  });

  it("an answer without a Plaintext is store_corrupt naming the variable", async () => {
    const store = await storeOnServer();
    answer = { status: 200, type: "" }; // a 200 whose body holds no Plaintext
    const err = await failureOf(store.get("K"));
    expect(err.code).toBe("store_corrupt");
    expect(err.message).toBe("KMS returned no plaintext for K");
    await store.close();
  });
});
