// Every store runs the one conformance suite. A new store joins with one call here, or in its own
// test file where that file starts its fake (cyberark, infisical and custom do).
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
import { storeConformance } from "../../core/src/testing";
import { safeParse } from "../../core/src/validation";
import { lazyFakeAws } from "../fakes/aws";
import { lazyFakeAzure } from "../fakes/azure";
import { lazyFakeGoogle } from "../fakes/google";
import { FakeVault } from "../fakes/vault";
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

storeConformance({
  name: "file",
  factory: fileStore,
  open: async () =>
    fileStore.open(
      { config: {}, env: {} },
      { ...deps(), dataDir: await tempDir(), keys: new KeyRing("llm-secrets-TEST-ONLY-conformance-salt") },
    ),
});

// AWS: the real SDK over HTTPS to the wire-level fake (test/fakes/aws.ts), a fresh account per open.
const aws = lazyFakeAws();

storeConformance({
  name: "aws_secret_manager (AWS SDK against the fake)",
  factory: awsSecretsManagerStore,
  open: async () => {
    (await aws()).reset();
    return awsSecretsManagerStore.open(
      { config: { aws_region_name: "us-east-1" }, env: {} },
      { ...deps(), dataDir: "/nonexistent" },
    );
  },
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
});

// Google: the real gRPC clients over TLS to the wire-level fake (test/fakes/google.ts), which
// checks the service account's self-signed JWT; a fresh project per open.
const google = lazyFakeGoogle(tempDir);
const KMS_KEY = "projects/llm-secrets-test/locations/global/keyRings/ring/cryptoKeys/key";

storeConformance({
  name: "google_secret_manager (Google client against the fake)",
  factory: googleSecretManagerStore,
  open: async () => {
    const fake = await google();
    fake.reset();
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
  },
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
});

function endpointOf(fake: { endpoint: string }) {
  const url = new URL(fake.endpoint);
  return { apiEndpoint: url.hostname, port: Number(url.port) };
}

// Vault: undici over HTTPS to the wire-level fake (test/fakes/vault.ts), a fresh Vault per open.
const vaultFakes: FakeVault[] = [];
afterAll(() => Promise.all(vaultFakes.map((f) => f.close())));

storeConformance({
  name: "hashicorp_vault (KV v2 over HTTPS, token)",
  factory: vaultStore,
  open: async () => {
    const fake = await FakeVault.start({ pki: inject("testPki"), rootToken: "hvs.conformance-root" });
    vaultFakes.push(fake);
    return vaultStore.open(
      { config: {}, env: { HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: "hvs.conformance-root" } },
      deps(),
    );
  },
});

// Azure: the real Key Vault and identity SDKs over HTTPS to the fakes (test/fakes/azure.ts), bearer
// challenge and token service included, a fresh vault per open.
const azure = lazyFakeAzure();

storeConformance({
  name: "azure_key_vault (Azure SDK against the fakes)",
  factory: azureKeyVaultStore,
  open: async () => {
    const fake = await azure();
    fake.reset();
    const parsed = safeParse(AzureKeyVaultSettings, { config: {}, env: fake.env() });
    if (!parsed.success) throw new Error("invalid test settings");
    return azureKeyVaultStore.open(parsed.data, deps());
  },
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
