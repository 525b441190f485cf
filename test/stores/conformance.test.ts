// Every store runs the one conformance suite. A new store joins with one call here.
import { KeyRing } from "../../core/src/crypto";
import { silentLogger } from "../../core/src/log";
import { awsSecretsManagerStore } from "../../core/src/stores/aws";
import { awsKmsStore } from "../../core/src/stores/aws-kms";
import { fileStore } from "../../core/src/stores/file";
import { localStore } from "../../core/src/stores/local";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";
import { lazyFakeAws } from "../fakes/aws";
import { tempDir } from "../helpers";
import { storeConformance } from "./conformance";

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
