// Every store runs the one conformance suite. A new store joins with one call here, or in its own
// test file where that file starts its fake (cyberark, infisical and custom do). A store over a
// fake gives the suite its faults (`failNext`) and, where it records changes, a second instance
// over the same backend (`reopen`).
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, inject } from "vitest";
import { KeyRing } from "../../core/src/crypto";
import { silentLogger } from "../../core/src/log";
import { awsSecretsManagerStore } from "../../core/src/stores/aws";
import { awsKmsStore } from "../../core/src/stores/aws-kms";
import { AzureKeyVaultSettings, azureKeyVaultStore } from "../../core/src/stores/azure";
import { dockerStore } from "../../core/src/stores/docker";
import { fileStore } from "../../core/src/stores/file";
import { googleSecretManagerStore } from "../../core/src/stores/google";
import { googleKmsStore } from "../../core/src/stores/google-kms";
import { localStore } from "../../core/src/stores/local";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";
import { vaultStore } from "../../core/src/stores/vault";
import { type BackendFault, storeConformance } from "../../core/src/testing";
import { safeParse } from "../../core/src/validation";
import { lazyFakeAws } from "../fakes/aws";
import { lazyFakeAzure } from "../fakes/azure";
import { lazyFakeGoogle } from "../fakes/google";
import { FakeVault, type Fault as VaultFault } from "../fakes/vault";
import { tempDir } from "../helpers";

const deps = (env: Record<string, string> = {}) => ({ dataDir: "/nonexistent", env, log: silentLogger, now: Date.now });

storeConformance({
  name: "memory",
  factory: memoryStore,
  open: async () => memoryStore.open({ config: {}, env: {} }, deps()),
});

storeConformance({
  name: "memory, names mapped to [0-9A-Za-z-] as Azure does",
  factory: memoryStore,
  open: async () => new MemoryStore({ mapName: (name) => name.replace(/[^0-9A-Za-z-]/g, "-") }),
  collidingNames: ["AZURE_API_KEY", "AZURE-API-KEY"],
});

storeConformance({
  name: "local (environment, read half)",
  factory: localStore,
  open: async (seed = {}) => localStore.open({ config: {}, env: {} }, deps(seed)),
});

// The file store: a fresh data dir per open; `reopen` opens the last one again, as a second process does.
let fileDir = "";
const openFile = () =>
  fileStore.open(
    { config: {}, env: {} },
    { ...deps(), dataDir: fileDir, keys: new KeyRing("llm-secrets-TEST-ONLY-conformance-salt") },
  );

storeConformance({
  name: "file",
  factory: fileStore,
  open: async () => {
    fileDir = await tempDir();
    return openFile();
  },
  reopen: openFile,
});

/** Faults that outlast every retry of a store and its client (the next open clears them). */
const EVERY_CALL = 100;

// AWS: the real SDK over HTTPS to the wire-level fake (test/fakes/aws.ts), a fresh account per open.
const aws = lazyFakeAws();
const openAws = () =>
  awsSecretsManagerStore.open(
    { config: { aws_region_name: "us-east-1" }, env: {} },
    { ...deps(), dataDir: "/nonexistent" },
  );
const AWS_FAULTS = { denied: "denied", throttled: "throttled", down: "error", reset: "reset" } as const;

storeConformance({
  name: "aws_secret_manager (AWS SDK against the fake)",
  factory: awsSecretsManagerStore,
  open: async () => {
    (await aws()).reset();
    return openAws();
  },
  reopen: openAws,
  // AccessDeniedException, ThrottlingException (HTTP 400), InternalServiceError (500): AWS sends no Retry-After.
  failNext: async (fault) => (await aws()).fail(EVERY_CALL, AWS_FAULTS[fault]),
  faultRetryAfter: "none",
});

storeConformance({
  name: "aws_kms (AWS SDK against the fake, read half)",
  factory: awsKmsStore,
  open: async (seed = {}) => {
    const fake = await aws();
    fake.reset();
    const sealed = Object.fromEntries(Object.entries(seed).map(([k, v]) => [k, fake.encrypt(v).toString("base64")]));
    return awsKmsStore.open({ config: { aws_region_name: "us-east-1" }, env: {} }, deps(sealed));
  },
  failNext: async (fault) => (await aws()).fail(EVERY_CALL, AWS_FAULTS[fault]),
  faultRetryAfter: "none",
});

// Google: the real gRPC clients over TLS to the wire-level fake (test/fakes/google.ts), which
// checks the service account's self-signed JWT; a fresh project per open.
const google = lazyFakeGoogle(tempDir);
const KMS_KEY = "projects/llm-secrets-test/locations/global/keyRings/ring/cryptoKeys/key";

const openGoogle = async () => {
  const fake = await google();
  return googleSecretManagerStore.open(
    {
      config: {},
      env: {
        GOOGLE_SECRET_MANAGER_PROJECT_ID: fake.project,
        LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: endpointOf(fake),
      },
    },
    deps(),
  );
};
const GOOGLE_FAULTS = { denied: "denied", throttled: "exhausted", down: "unavailable", reset: "reset" } as const;

storeConformance({
  name: "google_secret_manager (Google client against the fake)",
  factory: googleSecretManagerStore,
  open: async () => {
    (await google()).reset();
    return openGoogle();
  },
  reopen: openGoogle,
  // PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, the connection dropped: gRPC has no Retry-After.
  failNext: async (fault) => (await google()).fail(EVERY_CALL, GOOGLE_FAULTS[fault]),
  faultRetryAfter: "none",
  collidingNames: ["team.key", "team-key"],
  // A console-made secret: no llm-secrets annotation, one enabled version.
  seedOutside: async (name, value) => {
    const fake = await google();
    const path = `projects/${fake.project}/secrets/${name.replace(/[^A-Za-z0-9_-]/g, "-")}`;
    fake.secrets.set(path, {
      name: path,
      labels: {},
      annotations: {},
      versions: [{ id: 1, data: Buffer.from(value), state: "ENABLED", created: new Date() }],
      created: new Date(),
      etag: 1,
    });
  },
});

storeConformance({
  name: "google_kms (Google client against the fake, read half)",
  factory: googleKmsStore,
  open: async (seed = {}) => {
    const fake = await google();
    fake.reset();
    const sealed = Object.fromEntries(
      Object.entries(seed).map(([k, v]) => [k, fake.encrypt(v, KMS_KEY).toString("base64")]),
    );
    return googleKmsStore.open(
      { config: {}, env: { GOOGLE_KMS_RESOURCE_NAME: KMS_KEY, LLM_SECRETS_GOOGLE_KMS_ENDPOINT: endpointOf(fake) } },
      deps(sealed),
    );
  },
  failNext: async (fault) => (await google()).fail(EVERY_CALL, GOOGLE_FAULTS[fault]),
  faultRetryAfter: "none",
});

function endpointOf(fake: { endpoint: string }) {
  const url = new URL(fake.endpoint);
  return { apiEndpoint: url.hostname, port: Number(url.port) };
}

// Vault: undici over HTTPS to the wire-level fake (test/fakes/vault.ts), a fresh Vault per open.
const vaultFakes: FakeVault[] = [];
afterAll(() => Promise.all(vaultFakes.map((f) => f.close())));

const openVault = (fake: FakeVault) =>
  vaultStore.open({ config: {}, env: { HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: "hvs.conformance-root" } }, deps());
/** What Vault answers on the secrets' paths: its policy's refusal, its rate limit quota, sealed or standby, a drop. */
const VAULT_FAULTS: Record<BackendFault, VaultFault> = {
  denied: { kind: "status", status: 403, body: { errors: ["1 error occurred:\n\t* permission denied\n\n"] } },
  throttled: {
    kind: "status",
    status: 429,
    retryAfter: "7",
    body: { errors: ['request path "secret/data": rate limit quota exceeded'] },
  },
  down: { kind: "status", status: 503, retryAfter: "7", body: { errors: ["Vault is sealed"] } },
  reset: { kind: "reset" },
};

storeConformance({
  name: "hashicorp_vault (KV v2 over HTTPS, token)",
  factory: vaultStore,
  open: async () => {
    const fake = await FakeVault.start({ pki: inject("testPki"), rootToken: "hvs.conformance-root" });
    vaultFakes.push(fake);
    return openVault(fake);
  },
  reopen: async () => openVault(vaultFakes.at(-1) as FakeVault),
  failNext: async (fault) =>
    (vaultFakes.at(-1) as FakeVault).inject(VAULT_FAULTS[fault], EVERY_CALL, (r) => r.url.startsWith("/v1/secret/")),
});

// Azure: the real Key Vault and identity SDKs over HTTPS to the fakes (test/fakes/azure.ts), bearer
// challenge and token service included, a fresh vault per open.
const azure = lazyFakeAzure();

const openAzure = async () => {
  const parsed = safeParse(AzureKeyVaultSettings, { config: {}, env: (await azure()).env() });
  if (!parsed.success) throw new Error("invalid test settings");
  return azureKeyVaultStore.open(parsed.data, deps());
};
const AZURE_FAULTS = { denied: "denied", throttled: "throttled", down: "unavailable", reset: "reset" } as const;
/** The SDK waits a 429's or 503's Retry-After before each of its 3 attempts: 2 s keeps that short. */
const AZURE_RETRY_AFTER = 2;

storeConformance({
  name: "azure_key_vault (Azure SDK against the fakes)",
  factory: azureKeyVaultStore,
  open: async () => {
    (await azure()).reset();
    return openAzure();
  },
  reopen: openAzure,
  failNext: async (fault) => {
    const fake = await azure();
    fake.throttleRetryAfter = AZURE_RETRY_AFTER;
    fake.fail(EVERY_CALL, AZURE_FAULTS[fault]);
  },
  faultRetryAfter: AZURE_RETRY_AFTER,
  collidingNames: ["AZURE_API_KEY", "AZURE-API-KEY"],
  // A portal-made secret: no llm-secrets:name tag.
  seedOutside: async (name, value) => (await azure()).seed(name.replace(/[^0-9A-Za-z-]/g, "-"), value),
});

// Docker secrets: files in a temporary directory (the read half).
storeConformance({
  name: "docker (files, read half)",
  factory: dockerStore,
  open: async (seed = {}) => {
    const dir = await tempDir();
    for (const [name, value] of Object.entries(seed)) {
      if (!name.includes("/")) await writeFile(join(dir, name), `${value}\n`);
    }
    return dockerStore.open({ config: { secrets_path: dir }, env: {} }, deps());
  },
  refuses: (name) => name.includes("/"),
});
