// Google clients whose credentials cannot be loaded. Every RPC method of the Google libraries starts
// its stub with `this.initialize().catch((err) => { throw err; })` (googleapis/google-cloud-node#4747):
// unless the store awaits `initialize()` first, a call with credentials that cannot load leaves an
// unhandled rejection, which ends the process (`serve` died on an unauthenticated `GET /ready`).
// Here each store, opened through its factory, must answer such a call with a typed error, leave no
// unhandled rejection, and try the credentials again on its next call.
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createLogger } from "../../core/src/log";
import { googleSecretManagerStore } from "../../core/src/stores/google";
import { googleKmsStore } from "../../core/src/stores/google-kms";
import { type FakeGoogle, lazyFakeGoogle } from "../fakes/google";
import { codeOf, secretValue, tempDir } from "../helpers";

const google = lazyFakeGoogle(tempDir);
const KMS_KEY = "projects/llm-secrets-test/locations/global/keyRings/ring/cryptoKeys/key";
const log = createLogger(() => {});
const MISSING = "/nonexistent/llm-secrets-test/key.json";

/** Unhandled rejections seen during a test (vitest reports them too, but after the test). */
const unhandled: unknown[] = [];
const record = (reason: unknown) => unhandled.push(reason);
/** The environment variables the Google auth library reads, as they were before the test. */
const AUTH_ENV = ["GOOGLE_APPLICATION_CREDENTIALS", "HOME", "METADATA_SERVER_DETECTION"] as const;
let saved: Record<string, string | undefined> = {};

beforeEach(async () => {
  (await google()).reset(); // started first: it sets GOOGLE_APPLICATION_CREDENTIALS to its key
  saved = Object.fromEntries(AUTH_ENV.map((k) => [k, process.env[k]]));
  unhandled.length = 0;
  process.on("unhandledRejection", record);
});

afterEach(() => {
  process.off("unhandledRejection", record);
  for (const k of AUTH_ENV) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

/** A few turns of the event loop, for a rejection no one handles to be reported. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 10));
}

function endpointOf(fake: FakeGoogle) {
  const url = new URL(fake.endpoint);
  return { apiEndpoint: url.hostname, port: Number(url.port) };
}

async function openSecretManager(fake: FakeGoogle) {
  return googleSecretManagerStore.open(
    {
      config: {},
      env: {
        GOOGLE_SECRET_MANAGER_PROJECT_ID: fake.project,
        LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: endpointOf(fake),
      },
    },
    { dataDir: "/nonexistent", env: {}, log, now: Date.now },
  );
}

describe("google_secret_manager without credentials it can load", () => {
  it("GOOGLE_APPLICATION_CREDENTIALS naming a missing file: every call is store_unavailable, nothing unhandled, and the next call tries again", async () => {
    const fake = await google();
    process.env.GOOGLE_APPLICATION_CREDENTIALS = MISSING;
    const store = await openSecretManager(fake);
    expect(await codeOf(store.get("OPENAI_API_KEY"))).toBe("store_unavailable");
    expect(await codeOf(store.get("OPENAI_API_KEY"))).toBe("store_unavailable"); // the failed stub is not kept
    expect(await codeOf(store.put("OPENAI_API_KEY", "v"))).toBe("store_unavailable");
    expect(await codeOf(store.delete("OPENAI_API_KEY"))).toBe("store_unavailable");
    expect(await codeOf(store.list({ limit: 10 }))).toBe("store_unavailable");
    await settle();
    expect(unhandled).toEqual([]);
    expect(fake.calls).toEqual([]);
    // The key file put in place: the same store answers, its client set up on this call.
    process.env.GOOGLE_APPLICATION_CREDENTIALS = fake.keyFile;
    const v = secretValue("after-credentials");
    expect(await store.put("OPENAI_API_KEY", v)).toBe("created");
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe(v);
    await store.close();
    await settle();
    expect(unhandled).toEqual([]);
  });

  it("no Application Default Credentials at all: store_unavailable, nothing unhandled", async () => {
    const fake = await google();
    delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
    process.env.HOME = join(await tempDir(), "home"); // no gcloud application_default_credentials.json
    process.env.METADATA_SERVER_DETECTION = "none"; // not on Google Cloud: no metadata server
    const store = await openSecretManager(fake);
    expect(await codeOf(store.get("OPENAI_API_KEY"))).toBe("store_unavailable");
    await settle();
    expect(unhandled).toEqual([]);
    await store.close();
  });
});

describe("google_kms without credentials it can load", () => {
  it("GOOGLE_APPLICATION_CREDENTIALS naming a missing file: get is store_unavailable, nothing unhandled, and the next get tries again", async () => {
    const fake = await google();
    const v = secretValue("kms-after-credentials");
    process.env.GOOGLE_APPLICATION_CREDENTIALS = MISSING;
    const store = await googleKmsStore.open(
      { config: {}, env: { GOOGLE_KMS_RESOURCE_NAME: KMS_KEY, LLM_SECRETS_GOOGLE_KMS_ENDPOINT: endpointOf(fake) } },
      { dataDir: "/nonexistent", env: { K: fake.encrypt(v, KMS_KEY).toString("base64") }, log, now: Date.now },
    );
    expect(await codeOf(store.get("K"))).toBe("store_unavailable");
    expect(await codeOf(store.get("K"))).toBe("store_unavailable");
    await settle();
    expect(unhandled).toEqual([]);
    expect(fake.calls).toEqual([]);
    process.env.GOOGLE_APPLICATION_CREDENTIALS = fake.keyFile;
    expect((await store.get("K"))?.value).toBe(v);
    // The KMS client's operations client (long-running operations, unused here) loaded the
    // credentials when it was made, at open: closing it prints that failure with console.error.
    const printed = vi.spyOn(console, "error").mockImplementation(() => {});
    await store.close();
    await settle();
    printed.mockRestore();
    expect(unhandled).toEqual([]);
  });
});
