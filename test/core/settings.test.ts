import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import * as z from "zod/mini";
import { LOCAL_STORES } from "../../core/src/cli";
import { KeyRing, openSecret, sealSecret } from "../../core/src/crypto";
import { ConfigError, DecryptFailed } from "../../core/src/errors";
import type { StoreFactory } from "../../core/src/secret-store";
import { loadSettings as loadWith, type SettingsInput } from "../../core/src/settings";
import { awsKmsStore } from "../../core/src/stores/aws-kms";
import { customStore } from "../../core/src/stores/custom";
import { memoryStore } from "../../core/src/stores/memory";
import { newKey, tempDir } from "../helpers";

/** Settings as the local build loads them (file and environment stores registered). */
function loadSettings(input: Omit<SettingsInput, "stores"> & { stores?: SettingsInput["stores"] }) {
  return loadWith({ stores: LOCAL_STORES, ...input });
}

/** A registered store of the test's own, with its own keys, env var and refresh variable. */
const vaultish = {
  ...memoryStore,
  kind: "vaultish",
  settings: z.object({
    config: z.object({ mount_name: z.optional(z.string()) }),
    env: z.object({ VAULTISH_ADDR: z.url() }),
  }),
  defaults: { ...memoryStore.defaults, accessMode: "read_only", refreshIntervalVariable: "VAULTISH_REFRESH_INTERVAL" },
} as const satisfies StoreFactory<"vaultish">;

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error("expected a ConfigError");
}

describe("defaults", () => {
  it("serves the file store read-write on 127.0.0.1:4000 with LiteLLM's cache interval", () => {
    const s = loadSettings({ env: { LITELLM_MASTER_KEY: newKey() }, cwd: "/srv/app" });
    expect(s.store).toBe("file");
    expect(s.keyManagement.accessMode).toBe("read_and_write");
    expect(s.keyManagement.prefixForStoredVirtualKeys).toBe("litellm/");
    expect(s.keyManagement.hostedKeys).toBeUndefined();
    expect(s.server).toEqual({ host: "127.0.0.1", port: 4000, tls: undefined, maxConnections: 1024 });
    expect(s.cache).toEqual({ ttlSeconds: 86_400, maxStaleSeconds: 3_600 });
    expect(s.resolveLimits).toEqual({ maxRefs: 1000, maxBytes: 1024 * 1024 });
    expect(
      loadSettings({ env: { LLM_SECRETS_RESOLVE_MAX_REFS: "5", LLM_SECRETS_RESOLVE_MAX_BYTES: "4096" } }).resolveLimits,
    ).toEqual({ maxRefs: 5, maxBytes: 4096 });
    expect(s.dataDir).toBe("/srv/app/.llm-secrets");
    expect(s.encryptionAlgorithm).toBe("xsalsa20-poly1305");
  });

  it("defaults other stores to read_only, as LiteLLM does", () => {
    const s = loadSettings({ env: { LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: local\n" } });
    expect(s.keyManagement.accessMode).toBe("read_only");
  });
});

describe("salt key and master key", () => {
  it("LITELLM_SALT_KEY wins over the master key", () => {
    const master = newKey();
    const salt = newKey("salt-");
    const s = loadSettings({ env: { LITELLM_MASTER_KEY: master, LITELLM_SALT_KEY: salt } });
    const sealed = sealSecret("v", s.keys as KeyRing);
    expect(openSecret(sealed, new KeyRing(salt))).toBe("v");
    expect(() => openSecret(sealed, new KeyRing(master))).toThrow(DecryptFailed);
  });

  it("falls back to the master key without a salt key", () => {
    const master = newKey();
    const s = loadSettings({ env: { LITELLM_MASTER_KEY: master } });
    expect(openSecret(sealSecret("v", s.keys as KeyRing), new KeyRing(master))).toBe("v");
  });

  it.each(["", "   "])("refuses a set-but-empty LITELLM_SALT_KEY (%j), naming it", (salt) => {
    const message = configError(() => loadSettings({ env: { LITELLM_MASTER_KEY: newKey(), LITELLM_SALT_KEY: salt } }));
    expect(message).toContain("LITELLM_SALT_KEY");
  });

  it("refuses an empty master key and LiteLLM's example key, naming the source", () => {
    expect(configError(() => loadSettings({ env: { LITELLM_MASTER_KEY: "" } }))).toContain("LITELLM_MASTER_KEY");
    expect(configError(() => loadSettings({ env: { LITELLM_MASTER_KEY: "sk-1234" } }))).toContain("publicly known");
    expect(configError(() => loadSettings({ env: { LITELLM_MASTER_KEY: "sk-123" } }))).toContain(
      "shorter than 8 characters",
    );
    expect(loadSettings({ env: { LITELLM_MASTER_KEY: "sk-12345" } }).masterKey).toBe("sk-12345");
    const viaConfig = configError(() =>
      loadSettings({ env: { LLM_SECRETS_CONFIG: "general_settings:\n  master_key: sk-1234\n" } }),
    );
    expect(viaConfig).toContain("general_settings.master_key");
  });

  it("takes a weak master key with LiteLLM's escape hatch only where no API is served, with a warning", () => {
    const flagged = (flag: string) => ({
      LITELLM_MASTER_KEY: "sk-1234",
      LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY: flag,
    });
    for (const flag of ["true", "True", " TRUE "]) {
      const s = loadSettings({ env: flagged(flag), offline: true });
      expect(s.masterKey).toBe("sk-1234");
      expect(s.warnings).toContain(
        "the master key (LITELLM_MASTER_KEY) is the publicly known example key: taken because dangerously_permit_weak_or_unset_master_key is set",
      );
    }
    const viaConfig = loadSettings({
      env: {
        LITELLM_MASTER_KEY: "short",
        LLM_SECRETS_CONFIG: "general_settings:\n  dangerously_permit_weak_or_unset_master_key: true\n",
      },
      offline: true,
    });
    expect(viaConfig.masterKey).toBe("short");
    expect(viaConfig.warnings.join("\n")).toContain("is shorter than 8 characters: taken because");
    // Serving an API (serve, every cloud function), a weak key stops the start, flag or not.
    expect(configError(() => loadSettings({ env: flagged("true") }))).toContain(
      "dangerously_permit_weak_or_unset_master_key is taken only by commands that serve no API",
    );
    // Only `true`, as LiteLLM compares it; an empty key is refused whatever the flag says.
    for (const flag of ["false", "1", "yes"]) {
      expect(configError(() => loadSettings({ env: flagged(flag), offline: true }))).toContain("publicly known");
    }
    // A flag LiteLLM would read as off (a number) does not stop a start with a strong key.
    const strong = loadSettings({
      env: {
        LITELLM_MASTER_KEY: newKey(),
        LLM_SECRETS_CONFIG: "general_settings:\n  dangerously_permit_weak_or_unset_master_key: 1\n",
      },
    });
    expect(strong.warnings).toEqual([]);
    const empty = { LITELLM_MASTER_KEY: " ", LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY: "true" };
    expect(configError(() => loadSettings({ env: empty, offline: true }))).toContain("is empty");
  });

  it("reads general_settings.master_key, literal or os.environ/ ref, before LITELLM_MASTER_KEY", () => {
    const mine = newKey();
    const literal = loadSettings({
      env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CONFIG: `general_settings:\n  master_key: ${mine}\n` },
    });
    expect(literal.masterKey).toBe(mine);
    const ref = loadSettings({
      env: { MY_KEY: mine, LLM_SECRETS_CONFIG: "general_settings:\n  master_key: os.environ/MY_KEY\n" },
    });
    expect(ref.masterKey).toBe(mine);
    expect(ref.masterKeySource).toBe("MY_KEY");
    // Quoted in the environment (docker --env-file keeps quotes): LiteLLM's get_secret drops one pair.
    const quoted = loadSettings({
      env: { MY_KEY: `"${mine}"`, LLM_SECRETS_CONFIG: "general_settings:\n  master_key: os.environ/MY_KEY\n" },
    });
    expect(quoted.masterKey).toBe(mine);
    // The same variable read bare is the same key.
    expect(loadSettings({ env: { LITELLM_MASTER_KEY: `"${mine}"` } }).masterKey).toBe(mine);
  });

  it("stops when general_settings.master_key names a variable that is not set", () => {
    const message = configError(() =>
      loadSettings({ env: { LLM_SECRETS_CONFIG: "general_settings:\n  master_key: os.environ/MASTER_KEY_TYPO\n" } }),
    );
    expect(message).toContain("MASTER_KEY_TYPO");
    // Names every object has are not variables either (they crashed with a TypeError).
    for (const name of ["constructor", "toString", "__proto__"]) {
      expect(
        configError(() =>
          loadSettings({ env: { LLM_SECRETS_CONFIG: `general_settings:\n  master_key: os.environ/${name}\n` } }),
        ),
      ).toBe(`general_settings.master_key refers to ${name}, which is not set`);
    }
  });

  it("reads the generated master.key of a file store's data dir", async () => {
    const dir = await tempDir();
    const key = newKey();
    await writeFile(join(dir, "master.key"), `${key}\n`, { mode: 0o600 });
    const s = loadSettings({ env: { LLM_SECRETS_DATA_DIR: dir } });
    expect(s.masterKey).toBe(key);
    expect(s.masterKeySource).toBe(join(dir, "master.key"));
  });

  it("stops when a key is sealed for LiteLLM's USE_AWS_KMS start-up decryption, which it does not do", () => {
    const ciphertext = "aws_kms/AQICAHh0c2VjcmV0LWNpcGhlcnRleHQ=";
    expect(
      configError(() => loadSettings({ env: { LITELLM_MASTER_KEY: newKey(), LITELLM_SALT_KEY: ciphertext } })),
    ).toBe(
      "LITELLM_SALT_KEY: sealed with AWS KMS for LiteLLM's start-up decryption (USE_AWS_KMS=True), which llm-secrets does not do: set it decrypted (key_management_system aws_kms decrypts only the os.environ/ refs it reads: none under access_mode write_only, those in hosted_keys when that is set)",
    );
    const message = configError(() =>
      loadSettings({
        env: {
          USE_AWS_KMS: "True",
          LITELLM_MASTER_KEY: newKey(),
          LITELLM_SECRET_AWS_KMS_LITELLM_MASTER_KEY: "AQICAHh0",
          OPENAI_API_KEY: ciphertext,
        },
      }),
    );
    expect(message).toMatch(/^LITELLM_SECRET_AWS_KMS_LITELLM_MASTER_KEY, OPENAI_API_KEY: sealed with AWS KMS/);
    expect(message).not.toContain("AQICAHh0");
    // Without USE_AWS_KMS, an aws_kms/ value elsewhere is the aws_kms store's to read (a ref's value).
    expect(loadSettings({ env: { LITELLM_MASTER_KEY: newKey(), OPENAI_API_KEY: ciphertext } }).keys).toBeDefined();
    // The master key as resolved: quoted, through a ref, or a literal in the config.
    const sealedMaster = (env: Record<string, string>) => configError(() => loadSettings({ env }));
    expect(sealedMaster({ LITELLM_MASTER_KEY: `"${ciphertext}"` })).toMatch(/^LITELLM_MASTER_KEY: sealed with AWS KMS/);
    expect(
      sealedMaster({ OTHER: ciphertext, LLM_SECRETS_CONFIG: "general_settings:\n  master_key: os.environ/OTHER\n" }),
    ).toMatch(/^OTHER: sealed with AWS KMS/);
    expect(sealedMaster({ LLM_SECRETS_CONFIG: `general_settings:\n  master_key: ${ciphertext}\n` })).toMatch(
      /^general_settings.master_key: sealed with AWS KMS/,
    );
    // With USE_AWS_KMS=True, the aws_kms store still reads the aws_kms/ refs it decrypts.
    const kmsRef = (store: StoreFactory) =>
      loadSettings({
        stores: [store, ...LOCAL_STORES],
        env: {
          USE_AWS_KMS: "True",
          AWS_REGION: "us-east-1",
          LITELLM_MASTER_KEY: newKey(),
          OPENAI_API_KEY: ciphertext,
          LLM_SECRETS_CONFIG: `general_settings:\n  key_management_system: ${store.kind}\n`,
        },
      });
    expect(kmsRef(awsKmsStore).store).toBe("aws_kms");
    // Settings know that store by what its factory declares, not by its kind: a copy under another kind is read the same.
    expect(kmsRef({ ...awsKmsStore, kind: "aws_kms_eu" }).store).toBe("aws_kms_eu");
    // But not what llm-secrets or the store reads itself, or a setting refers to: taken as text.
    const loadOnKms = (env: Record<string, string>, config = "") =>
      loadSettings({
        stores: [awsKmsStore, ...LOCAL_STORES],
        env: {
          USE_AWS_KMS: "True",
          AWS_REGION: "us-east-1",
          LITELLM_MASTER_KEY: newKey(),
          LLM_SECRETS_CONFIG: `general_settings:\n  key_management_system: aws_kms\n${config}`,
          ...env,
        },
      });
    const onKms = (env: Record<string, string>, config = "") => configError(() => loadOnKms(env, config));
    expect(onKms({ SSL_CERTIFICATE: ciphertext })).toMatch(/^SSL_CERTIFICATE: sealed with AWS KMS/);
    expect(onKms({ AWS_REGION_NAME: ciphertext })).toMatch(/^AWS_REGION_NAME: sealed with AWS KMS/);
    expect(
      onKms({ PFX: ciphertext }, "  key_management_settings:\n    prefix_for_stored_virtual_keys: os.environ/PFX\n"),
    ).toMatch(/^PFX: sealed with AWS KMS/);
    // Nor the refs it does not read at start (outside hosted_keys, or any under write_only): they
    // would fall back to the environment and be taken as the ciphertext they hold.
    const twoRefs = { OPENAI_API_KEY: ciphertext, API_BASE: ciphertext };
    expect(onKms(twoRefs, "  key_management_settings:\n    hosted_keys: [OPENAI_API_KEY]\n")).toMatch(
      /^API_BASE: sealed with AWS KMS/,
    );
    expect(onKms(twoRefs, "  key_management_settings:\n    access_mode: write_only\n")).toMatch(
      /^OPENAI_API_KEY, API_BASE: sealed with AWS KMS/,
    );
    // The refs it does read are its own: hosted, under a mode that reads.
    const bothHosted =
      "  key_management_settings:\n    access_mode: read_and_write\n    hosted_keys: [OPENAI_API_KEY, API_BASE]\n";
    expect(loadOnKms(twoRefs, bothHosted).keyManagement.hostedKeys).toEqual(["OPENAI_API_KEY", "API_BASE"]);
    // The master key only under LiteLLM's encrypted name: that name is what the message gives.
    expect(
      configError(() =>
        loadSettings({
          env: {
            USE_AWS_KMS: "True",
            LITELLM_SECRET_AWS_KMS_LITELLM_MASTER_KEY: "AQICAHh0",
            LLM_SECRETS_CONFIG: "general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n",
          },
        }),
      ),
    ).toMatch(/^LITELLM_SECRET_AWS_KMS_LITELLM_MASTER_KEY: sealed with AWS KMS/);
  });

  it("takes LiteLLM's LITELLM_MIGRATE_FROM_MASTER_KEY, without a salt key, as a previous key: what the old master key sealed opens", () => {
    const oldMaster = newKey("old-master-");
    const newMaster = newKey("new-master-");
    const sealed = sealSecret("sk-provider", new KeyRing(oldMaster));
    const s = loadSettings({ env: { LITELLM_MASTER_KEY: newMaster, LITELLM_MIGRATE_FROM_MASTER_KEY: oldMaster } });
    expect(openSecret(sealed, s.keys as KeyRing)).toBe("sk-provider");
    // New values are sealed under the new master key.
    expect(openSecret(sealSecret("v", s.keys as KeyRing), new KeyRing(newMaster))).toBe("v");
    // With a salt key, the master key seals nothing: the variable is not needed, and not taken.
    const salted = loadSettings({
      env: { LITELLM_MASTER_KEY: newMaster, LITELLM_SALT_KEY: newKey(), LITELLM_MIGRATE_FROM_MASTER_KEY: oldMaster },
    });
    expect(() => openSecret(sealed, salted.keys as KeyRing)).toThrow();
    // Sealed with AWS KMS for LiteLLM's start-up decryption: refused, as the master and salt keys are.
    expect(
      configError(() =>
        loadSettings({ env: { LITELLM_MASTER_KEY: newMaster, LITELLM_MIGRATE_FROM_MASTER_KEY: "aws_kms/AQICAHh0" } }),
      ),
    ).toMatch(/^LITELLM_MIGRATE_FROM_MASTER_KEY: sealed with AWS KMS/);
  });

  it("parses LLM_SECRETS_PREVIOUS_SALT_KEYS as a JSON array of strings", () => {
    const old = newKey("old-");
    const s = loadSettings({
      env: { LITELLM_SALT_KEY: newKey(), LLM_SECRETS_PREVIOUS_SALT_KEYS: JSON.stringify([old]) },
    });
    expect(openSecret(sealSecret("v", new KeyRing(old)), s.keys as KeyRing)).toBe("v");
    for (const bad of ["not json", '"one"', "[1]", '[""]']) {
      expect(configError(() => loadSettings({ env: { LLM_SECRETS_PREVIOUS_SALT_KEYS: bad } }))).toContain(
        "LLM_SECRETS_PREVIOUS_SALT_KEYS",
      );
    }
  });
});

describe("config.yaml", () => {
  it("reads LiteLLM's keys from a file given with --config", async () => {
    const dir = await tempDir();
    const file = join(dir, "config.yaml");
    await writeFile(
      file,
      [
        "general_settings:",
        "  master_key: os.environ/LITELLM_MASTER_KEY",
        "  key_management_system: local",
        "  encryption_algorithm: aes-256-gcm",
        "  key_management_settings:",
        "    access_mode: read_and_write",
        "    hosted_keys: [OPENAI_API_KEY, AZURE_API_KEY]",
        "    store_virtual_keys: true",
        "    prefix_for_stored_virtual_keys: vk",
        "    description: made by llm-secrets",
        "    tags: {team: a}",
        "model_list:",
        "  - model_name: gpt",
        "    litellm_params: {model: azure/gpt-4o, api_key: os.environ/AZURE_API_KEY, rpm: 10}",
      ].join("\n"),
    );
    const s = loadSettings({ env: { LITELLM_MASTER_KEY: newKey() }, configFile: file });
    expect(s.store).toBe("local");
    expect(s.encryptionAlgorithm).toBe("aes-256-gcm");
    expect(s.keyManagement).toMatchObject({
      accessMode: "read_and_write",
      hostedKeys: ["OPENAI_API_KEY", "AZURE_API_KEY"],
      storeVirtualKeys: true,
      prefixForStoredVirtualKeys: "vk/",
      description: "made by llm-secrets",
      tags: { team: "a" },
    });
    expect(s.warnings).toEqual([]);
    expect(s.config.model_list?.[0]?.litellm_params.api_key).toBe("os.environ/AZURE_API_KEY");
  });

  it("stops on a hosted_keys entry that is not a secret name, naming the entry (/ready reads the first as a name)", () => {
    const start = (hosted: string) => () =>
      loadSettings({
        env: {
          LITELLM_MASTER_KEY: newKey(),
          LLM_SECRETS_CONFIG: `general_settings:\n  key_management_settings:\n    hosted_keys: ${hosted}\n`,
        },
      });
    for (const [hosted, entry, why] of [
      ['[OPENAI_API_KEY, "a/../b"]', 'hosted_keys[1] "a/../b"', "'.' or '..' path segment"],
      ['["../etc/passwd"]', 'hosted_keys[0] "../etc/passwd"', "path segment"],
      ['[OPENAI_API_KEY, ""]', 'hosted_keys[1] ""', "empty"],
      ['["my key"]', 'hosted_keys[0] "my key"', "must start with a letter or digit"],
      ['["a\\tb"]', 'hosted_keys[0] "a\\tb"', "control character"],
    ] as const) {
      const message = configError(start(hosted));
      expect(message, hosted).toContain(`general_settings.key_management_settings.${entry}`);
      expect(message, hosted).toContain(why);
    }
    expect(start("[OPENAI_API_KEY, litellm/team-a, user@example.com]")().keyManagement.hostedKeys).toEqual([
      "OPENAI_API_KEY",
      "litellm/team-a",
      "user@example.com",
    ]);
  });

  it("stops on an invalid key, naming it", () => {
    const message = configError(() =>
      loadSettings({
        env: { LLM_SECRETS_CONFIG: "general_settings:\n  key_management_settings:\n    access_mode: sometimes\n" },
      }),
    );
    expect(message).toContain("general_settings.key_management_settings.access_mode");
    expect(
      configError(() =>
        loadSettings({ env: { LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: s3\n" } }),
      ),
    ).toBe("key_management_system: s3 is not in this build (available: file, local)");
  });

  it("takes LiteLLM's older switches (use_azure_key_vault, use_google_kms) when key_management_system is unset", async () => {
    const { CLI_STORES } = await import("../../core/src/cli");
    const env = {
      LITELLM_MASTER_KEY: newKey(),
      AZURE_KEY_VAULT_URI: "https://v.vault.azure.net",
      GOOGLE_KMS_RESOURCE_NAME: "projects/p/locations/global/keyRings/r/cryptoKeys/k",
    };
    const with_ = (general: string) =>
      loadWith({ stores: CLI_STORES, env: { ...env, LLM_SECRETS_CONFIG: `general_settings:\n${general}` } });
    const azure = with_("  use_azure_key_vault: true\n");
    expect([azure.store, azure.warnings]).toEqual(["azure_key_vault", []]);
    expect(with_("  use_google_kms: 'yes'\n").store).toBe("google_kms");
    expect(with_("  use_azure_key_vault: false\n").store).toBe("file");
    expect(with_("  use_azure_key_vault:\n").warnings).toEqual([]); // null: off, as LiteLLM reads None
    // key_management_system wins, and a switch it overrides is said to be ignored.
    const named = with_("  key_management_system: file\n  use_azure_key_vault: true\n");
    expect([named.store, named.warnings]).toEqual([
      "file",
      ["config: ignoring general_settings.use_azure_key_vault: the store is file"],
    ]);
    expect(configError(() => with_("  use_google_kms: sometimes\n"))).toBe(
      "config: general_settings.use_google_kms: expected a boolean",
    );
    // A build without the store does not know the switch: it is an unknown key, said so.
    const local = loadSettings({
      env: { ...env, LLM_SECRETS_CONFIG: "general_settings:\n  use_azure_key_vault: true\n" },
    });
    expect([local.store, local.warnings]).toEqual([
      "file",
      ["config: ignoring keys llm-secrets does not use: general_settings.use_azure_key_vault"],
    ]);
  });

  it("opens the first registered store by default, and a store's own keys by its schema", () => {
    const stores = [vaultish, ...LOCAL_STORES];
    const addr = "https://vault.example:8200";
    const s = loadSettings({
      stores,
      env: {
        VAULTISH_ADDR: addr,
        LLM_SECRETS_CONFIG: "general_settings:\n  key_management_settings:\n    mount_name: kv\n    colour: red\n",
      },
    });
    expect(s.store).toBe("vaultish");
    expect(s.storeSettings).toEqual({ config: { mount_name: "kv" }, env: { VAULTISH_ADDR: addr } });
    expect(s.keyManagement.accessMode).toBe("read_only");
    // The store's own key is not unknown; a key no registered store reads is.
    expect(s.warnings).toEqual([
      "config: ignoring keys llm-secrets does not use: general_settings.key_management_settings.colour",
    ]);
    // The same config on a build without that store: its key is warned about.
    const local = loadSettings({
      env: { LLM_SECRETS_CONFIG: "general_settings:\n  key_management_settings:\n    mount_name: kv\n" },
    });
    expect(local.warnings[0]).toContain("general_settings.key_management_settings.mount_name");
    expect(configError(() => loadSettings({ stores, env: { VAULTISH_ADDR: "not a url" } }))).toMatch(
      /^vaultish settings: environment: VAULTISH_ADDR: /,
    );
    expect(
      configError(() =>
        loadSettings({
          stores,
          env: {
            VAULTISH_ADDR: addr,
            LLM_SECRETS_CONFIG: "general_settings:\n  key_management_settings:\n    mount_name: 3\n",
          },
        }),
      ),
    ).toMatch(/^vaultish settings: general_settings\.key_management_settings\.mount_name: /);
  });

  it("warns at start when key events go to a store that records no change times", () => {
    const unordered = {
      ...memoryStore,
      kind: "unordered",
      capabilities: { ...memoryStore.capabilities, compareAndSet: false },
    } as const satisfies StoreFactory<"unordered">;
    const load = (stores: StoreFactory[]) =>
      loadSettings({
        stores,
        env: { LLM_SECRETS_CONFIG: "general_settings:\n  key_management_settings:\n    store_virtual_keys: true\n" },
      }).warnings;
    expect(load([unordered])).toEqual([
      "key events on unordered are applied in the order they arrive: this store records no change times, so a redelivered older event can undo a newer one (a deleted key come back)",
    ]);
    expect(load([memoryStore])).toEqual([]);
  });

  it("says what a value should be where it is a choice of types (a lax boolean, ssl_verify, an environment variable)", () => {
    const refused = (config: string) => {
      try {
        loadSettings({ env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CONFIG: config } });
      } catch (err) {
        return (err as Error).message;
      }
      return "started";
    };
    expect(refused("general_settings:\n  key_management_settings:\n    store_virtual_keys: maybe\n")).toBe(
      "config: general_settings.key_management_settings.store_virtual_keys: expected a boolean (true or false, yes or no, on or off, 1 or 0)",
    );
    expect(refused("litellm_settings:\n  ssl_verify: 5\n")).toBe(
      "config: litellm_settings.ssl_verify: expected true, false or a CA bundle's path",
    );
    expect(refused("environment_variables:\n  A: [1]\n")).toBe(
      "config: environment_variables.A: expected a string, a number or a boolean",
    );
  });

  it("ignores unknown keys with one warning that lists them", () => {
    const s = loadSettings({
      env: {
        LITELLM_MASTER_KEY: newKey(),
        LLM_SECRETS_CONFIG:
          "router_settings: {a: 1}\ngeneral_settings:\n  database_url: x\nlitellm_settings:\n  drop_params: true\n",
      },
    });
    expect(s.warnings).toHaveLength(1);
    expect(s.warnings[0]).toContain("router_settings");
    expect(s.warnings[0]).toContain("general_settings.database_url");
    expect(s.warnings[0]).toContain("litellm_settings.drop_params");
  });

  it("reports a YAML error by position and names the file, without quoting it", async () => {
    const dir = await tempDir();
    const file = join(dir, "bad.yaml");
    const value = newKey();
    await writeFile(file, `general_settings:\n  master_key: "${value}\n  x: [\n`);
    const message = configError(() => loadSettings({ env: {}, configFile: file }));
    expect(message).toMatch(/line \d+/);
    expect(message).not.toContain(value);
    // And says what is wrong there, in words (the code alone told a user little).
    await writeFile(
      file,
      `model_list:\n  - model_name: a\n    litellm_params:\n      model: x\n     api_key: ${value}\n`,
    );
    expect(configError(() => loadSettings({ env: {}, configFile: file }))).toBe(
      `config ${file}: invalid YAML at line 5, column 1: an indentation that does not line up with the lines around it, or a bracket or quote not closed before it (BAD_INDENT)`,
    );
    await writeFile(file, `a: ${value}\nb: &x 1\nc: &x 2\n`);
    expect(configError(() => loadSettings({ env: {}, configFile: "bad.yaml", cwd: dir }))).toBe(
      `config ${file}: invalid YAML at line 3, column 4: an anchor name set a second time (MULTIPLE_ANCHORS)`,
    );
    // Given inline (LLM_SECRETS_CONFIG holding the YAML), there is no file to name.
    expect(configError(() => loadSettings({ env: { LLM_SECRETS_CONFIG: `a: ${value}\nb: &x 1\nc: &x 2\n` } }))).toBe(
      "config: invalid YAML at line 3, column 4: an anchor name set a second time (MULTIPLE_ANCHORS)",
    );
  });

  it("says which file it could not read, but never repeats one line of YAML taken for a path", () => {
    expect(configError(() => loadSettings({ env: {}, configFile: "/nonexistent/config.yaml" }))).toContain(
      "/nonexistent/config.yaml",
    );
    const key = newKey();
    const message = configError(() =>
      loadSettings({ env: { LLM_SECRETS_CONFIG: `general_settings: {master_key: ${key}}` } }),
    );
    expect(message).toMatch(/^config: cannot read the config file \(ENOENT\)/);
    expect(message).not.toContain(key);
  });

  it("refuses at start a virtual-key prefix that cannot begin a name (every key event would fail)", () => {
    const kms = (lines: string) =>
      loadSettings({ env: { LLM_SECRETS_CONFIG: `general_settings:\n  key_management_settings:\n${lines}` } });
    expect(configError(() => kms('    prefix_for_stored_virtual_keys: ""\n'))).toBe(
      "general_settings.key_management_settings.prefix_for_stored_virtual_keys: the secret names it would begin are not valid (invalid secret name: empty path segment)",
    );
    expect(configError(() => kms('    prefix_for_stored_virtual_keys: "team a"\n'))).toContain(
      "general_settings.key_management_settings.prefix_for_stored_virtual_keys:",
    );
    expect(
      configError(() => kms('    team_settings:\n      t1:\n        prefix_for_stored_virtual_keys: ""\n')),
    ).toContain("general_settings.key_management_settings.team_settings.t1.prefix_for_stored_virtual_keys:");
    expect(kms("    prefix_for_stored_virtual_keys: vk\n").keyManagement.prefixForStoredVirtualKeys).toBe("vk/");
  });

  it("team_settings: on a store that honours scopes, two teams in one place with different data fields stop the start; elsewhere scope fields are warned of", () => {
    const scoped = { ...vaultish, capabilities: { ...vaultish.capabilities, scopes: true } };
    const teams = (lines: string, stores: SettingsInput["stores"]) =>
      loadWith({
        stores,
        env: {
          VAULTISH_ADDR: "https://vault.example:8200",
          LLM_SECRETS_CONFIG: `general_settings:\n  key_management_system: vaultish\n  key_management_settings:\n    team_settings:\n${lines}`,
        },
      });
    // Both in mount kv (one spelt /kv/), under the general prefix: a's write of litellm/prod
    // replaces the secret b keeps in field password.
    const clash = "      a: {mount: kv, data: api_key}\n      b: {mount: /kv/, data: password}\n";
    expect(configError(() => teams(clash, [scoped]))).toBe(
      "general_settings.key_management_settings.team_settings: teams a and b keep their keys in one place (namespace, mount, path_prefix and prefix_for_stored_virtual_keys alike) but in different fields (data): each write replaces the whole secret, so one team's keys would wipe the other's; give them the same data or another prefix",
    );
    // Another place (a prefix, a path prefix), or the same field: taken.
    expect(
      teams(
        "      a: {mount: kv, data: api_key}\n      b: {mount: kv, data: password, prefix_for_stored_virtual_keys: b/}\n",
        [scoped],
      ).warnings,
    ).toEqual([]);
    expect(
      teams("      a: {mount: kv, data: k}\n      b: {mount: kv, path_prefix: b, data: p}\n", [scoped]).warnings,
    ).toEqual([]);
    expect(teams("      a: {mount: kv, data: k}\n      b: {mount: kv, data: k}\n", [scoped]).warnings).toEqual([]);
    // A team without data uses the store's own setting, not known here: no false alarm.
    expect(teams("      a: {mount: kv}\n      b: {mount: kv, data: password}\n", [scoped]).warnings).toEqual([]);
    // A store that ignores scopes takes the config, and says once that the fields do nothing.
    const ignored = teams(`${clash}      c: {prefix_for_stored_virtual_keys: c/}\n`, [vaultish]);
    expect(ignored.warnings).toEqual([
      "config: team_settings of a, b: namespace, mount, path_prefix and data are ignored by the vaultish store, so teams with one prefix_for_stored_virtual_keys share names: give each team its own prefix",
    ]);
  });

  it("takes LiteLLM's spellings: encryption_algorithm in any case, store_virtual_keys as pydantic takes it", () => {
    const general = (lines: string) => loadSettings({ env: { LLM_SECRETS_CONFIG: `general_settings:\n${lines}` } });
    expect(general("  encryption_algorithm: AES-256-GCM\n").encryptionAlgorithm).toBe("aes-256-gcm");
    expect(general("  encryption_algorithm: XSalsa20-Poly1305\n").encryptionAlgorithm).toBe("xsalsa20-poly1305");
    const stores = (v: string) =>
      general(`  key_management_settings:\n    store_virtual_keys: ${v}\n`).keyManagement.storeVirtualKeys;
    for (const v of ["true", "'true'", "'Yes'", "1", "'on'", "'t'"]) expect(stores(v), v).toBe(true);
    for (const v of ["false", "'false'", "'no'", "0", "'off'"]) expect(stores(v), v).toBe(false);
    expect(configError(() => stores("'maybe'"))).toContain(
      "general_settings.key_management_settings.store_virtual_keys",
    );
    expect(configError(() => stores("2"))).toContain("general_settings.key_management_settings.store_virtual_keys");
  });

  it("applies environment_variables from the config to the environment snapshot", () => {
    const s = loadSettings({
      env: { LLM_SECRETS_CONFIG: "environment_variables:\n  FROM_CONFIG: yes-it-is\n  N: 3\n" },
    });
    expect(s.env.FROM_CONFIG).toBe("yes-it-is");
    expect(s.env.N).toBe("3");
  });

  it("puts environment_variables in the process environment at a runtime's start (the SDKs read theirs there), its own names only", async () => {
    const { inProcessApp } = await import("../helpers");
    try {
      await inProcessApp({
        config:
          "environment_variables:\n  LLM_SECRETS_TEST_EXPORTED: yes-it-is\n  constructor: os.environ/NOT_SET_ANYWHERE\n",
      });
      expect(process.env.LLM_SECRETS_TEST_EXPORTED).toBe("yes-it-is");
      expect(Object.hasOwn(process.env, "constructor")).toBe(false);
    } finally {
      delete process.env.LLM_SECRETS_TEST_EXPORTED;
    }
  });

  it("reads an environment_variables ref from the environment, as LiteLLM does, and leaves it unset when its variable is", () => {
    const salt = newKey();
    const s = loadSettings({
      env: {
        LITELLM_MASTER_KEY: newKey(),
        REAL_SALT: `'${salt}'`,
        LLM_SECRETS_CONFIG:
          "environment_variables:\n  LITELLM_SALT_KEY: os.environ/REAL_SALT\n  GONE: os.environ/NOT_SET\n  FLAG: true\n",
      },
    });
    expect(s.env.LITELLM_SALT_KEY).toBe(salt);
    expect("GONE" in s.env).toBe(false);
    expect(s.env.FLAG).toBe("True");
    expect(s.warnings).toContain(
      "config: environment_variables.GONE refers to NOT_SET, which is not set: GONE is left as it was",
    );
    // The salt key is the variable's value, not the ref's text: what it seals, that key opens.
    const sealed = sealSecret("sk-provider", s.keys as KeyRing);
    expect(openSecret(sealed, new KeyRing(salt))).toBe("sk-provider");
  });

  it("reads os.environ/ refs in general_settings and litellm_settings from the environment, at any depth", () => {
    const s = loadSettings({
      stores: [vaultish, ...LOCAL_STORES],
      env: {
        LITELLM_MASTER_KEY: newKey(),
        VAULTISH_ADDR: "https://vault.example:8200",
        KMS: "vaultish",
        MODE: "read_and_write",
        STORE_KEYS: "true",
        PFX: "teams/virtual",
        TEAM_PFX: "team-a",
        MOUNT: "kv2",
        VERIFY: "false",
        LLM_SECRETS_CONFIG: [
          "general_settings:",
          "  key_management_system: os.environ/KMS",
          "  key_management_settings:",
          "    access_mode: os.environ/MODE",
          "    store_virtual_keys: os.environ/STORE_KEYS",
          "    prefix_for_stored_virtual_keys: os.environ/PFX",
          "    mount_name: os.environ/MOUNT",
          "    hosted_keys: [os.environ/PFX]",
          "    team_settings:",
          "      a:",
          "        prefix_for_stored_virtual_keys: os.environ/TEAM_PFX",
          "  database_url: os.environ/DATABASE_URL",
          "litellm_settings:",
          "  ssl_verify: os.environ/VERIFY",
          "",
        ].join("\n"),
      },
    });
    expect(s.store).toBe("vaultish");
    expect(s.keyManagement.accessMode).toBe("read_and_write");
    expect(s.keyManagement.storeVirtualKeys).toBe(true);
    expect(s.keyManagement.prefixForStoredVirtualKeys).toBe("teams/virtual/");
    expect(s.keyManagement.hostedKeys).toEqual(["teams/virtual"]);
    expect(s.keyManagement.teams?.a?.prefixForStoredVirtualKeys).toBe("team-a/");
    expect(s.storeSettings).toEqual({
      config: { mount_name: "kv2" },
      env: { VAULTISH_ADDR: "https://vault.example:8200" },
    });
    expect(s.outbound).toEqual({ verify: false });
    // A key llm-secrets does not read is left alone (its variable need not be set): only warned about.
    expect(s.warnings[0]).toContain("general_settings.database_url");
  });

  it("reads a custom store's own keys' refs too (an unset one as nothing), and leaves a team's unknown key alone", () => {
    const s = loadSettings({
      stores: [customStore, ...LOCAL_STORES],
      env: {
        LITELLM_MASTER_KEY: newKey(),
        TOKEN: "my-token",
        LLM_SECRETS_CONFIG: [
          "general_settings:",
          "  key_management_system: custom",
          "  key_management_settings:",
          "    custom_secret_manager: ./my-store.mjs",
          "    my_token: os.environ/TOKEN",
          "    my_optional: os.environ/NOT_SET",
          "",
        ].join("\n"),
      },
    });
    expect(s.storeSettings).toMatchObject({ config: { my_token: "my-token", my_optional: null } });
    const team = loadSettings({
      env: {
        LITELLM_MASTER_KEY: newKey(),
        LLM_SECRETS_CONFIG:
          "general_settings:\n  key_management_settings:\n    team_settings:\n      a:\n        colour: os.environ/NOT_SET\n",
      },
    });
    expect(team.warnings[0]).toBe(
      "config: ignoring keys llm-secrets does not use: general_settings.key_management_settings.team_settings.a.colour",
    );
  });

  it("stops when a setting's ref names a variable that is not set, naming the key", () => {
    expect(
      configError(() =>
        loadSettings({
          env: {
            LITELLM_MASTER_KEY: newKey(),
            LLM_SECRETS_CONFIG:
              "general_settings:\n  key_management_settings:\n    prefix_for_stored_virtual_keys: os.environ/PFX_TYPO\n",
          },
        }),
      ),
    ).toBe(
      "config: general_settings.key_management_settings.prefix_for_stored_virtual_keys refers to PFX_TYPO, which is not set",
    );
    // Empty counts as unset: an empty role variable must not silently mean "no role".
    expect(
      configError(() =>
        loadSettings({
          stores: [awsKmsStore, ...LOCAL_STORES],
          env: {
            LITELLM_MASTER_KEY: newKey(),
            ROLE: "",
            LLM_SECRETS_CONFIG:
              "general_settings:\n  key_management_system: aws_kms\n  key_management_settings:\n    aws_role_name: os.environ/ROLE\n",
          },
        }),
      ),
    ).toBe("config: general_settings.key_management_settings.aws_role_name refers to ROLE, which is not set");
  });
});

describe("environment", () => {
  it("takes each store's refresh interval", () => {
    const stores = [...LOCAL_STORES, vaultish];
    const cfg = "general_settings:\n  key_management_system: vaultish\n";
    const addr = "https://vault.example";
    expect(loadSettings({ env: { SECRET_MANAGER_REFRESH_INTERVAL: "120" } }).cache.ttlSeconds).toBe(120);
    expect(
      loadSettings({
        stores,
        env: {
          LLM_SECRETS_CONFIG: cfg,
          VAULTISH_ADDR: addr,
          VAULTISH_REFRESH_INTERVAL: "30",
          SECRET_MANAGER_REFRESH_INTERVAL: "120",
        },
      }).cache.ttlSeconds,
    ).toBe(30);
    expect(
      loadSettings({
        stores,
        env: { LLM_SECRETS_CONFIG: cfg, VAULTISH_ADDR: addr, SECRET_MANAGER_REFRESH_INTERVAL: "120" },
      }).cache.ttlSeconds,
    ).toBe(120);
    expect(
      configError(() =>
        loadSettings({
          stores,
          env: { LLM_SECRETS_CONFIG: cfg, VAULTISH_ADDR: addr, VAULTISH_REFRESH_INTERVAL: "1h" },
        }),
      ),
    ).toContain("VAULTISH_REFRESH_INTERVAL");
    expect(loadSettings({ env: { SECRET_MANAGER_REFRESH_INTERVAL: "" } }).cache.ttlSeconds).toBe(86_400);
    expect(loadSettings({ env: { LLM_SECRETS_MAX_STALE: "10" } }).cache.maxStaleSeconds).toBe(10);
  });

  it("refuses malformed numbers, naming the variable", () => {
    expect(configError(() => loadSettings({ env: { SECRET_MANAGER_REFRESH_INTERVAL: "1h" } }))).toContain(
      "SECRET_MANAGER_REFRESH_INTERVAL",
    );
    expect(configError(() => loadSettings({ env: { PORT: "70000" } }))).toContain("PORT");
    expect(configError(() => loadSettings({ env: { PORT: "65536" } }))).toContain("PORT");
    expect(loadSettings({ env: { PORT: "65535" } }).server.port).toBe(65535); // the last port there is
  });

  it("takes flags over env for the server, and needs both TLS files or neither", () => {
    const s = loadSettings({
      env: { PORT: "5000", SSL_KEYFILE_PATH: "k.pem", SSL_CERTFILE_PATH: "c.pem" },
      cwd: "/etc/tls",
      server: { port: 6000, host: "0.0.0.0" },
    });
    expect(s.server).toEqual({
      host: "0.0.0.0",
      port: 6000,
      tls: { keyFile: "/etc/tls/k.pem", certFile: "/etc/tls/c.pem" },
      maxConnections: 1024,
    });
    expect(configError(() => loadSettings({ env: { SSL_KEYFILE_PATH: "k.pem" } }))).toContain("--ssl_certfile_path");
    // A command that serves no API does not check them: a container whose serve takes its TLS files
    // as flags has only the client CA (or half the pair) in its environment, and its `get` works.
    for (const env of [{ LLM_SECRETS_CLIENT_CA: "ca.pem" }, { SSL_KEYFILE_PATH: "k.pem" }]) {
      expect(loadSettings({ env: { LITELLM_MASTER_KEY: newKey(), ...env }, offline: true }).server.tls).toBeUndefined();
    }
  });

  it("resolves the data dir against the working directory", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "sub"));
    expect(loadSettings({ env: { LLM_SECRETS_DATA_DIR: "sub" }, cwd: dir }).dataDir).toBe(join(dir, "sub"));
  });
});

describe("outbound proxy", () => {
  const proxyOf = (env: Record<string, string>) =>
    loadSettings({ env: { LITELLM_MASTER_KEY: newKey(), ...env } }).outbound.proxy;

  it("reads HTTPS_PROXY, HTTP_PROXY and NO_PROXY as Python's urllib does: lowercase first, empty lowercase unsets", () => {
    expect(proxyOf({})).toBeUndefined();
    expect(proxyOf({ NO_PROXY: "localhost" })).toBeUndefined(); // nothing to bypass
    expect(
      proxyOf({
        HTTPS_PROXY: "http://proxy.internal:3128",
        HTTP_PROXY: "proxy.internal:8080",
        NO_PROXY: " a.example, ,.b.example ",
      }),
    ).toEqual({
      https: "http://proxy.internal:3128/",
      http: "http://proxy.internal:8080/", // no scheme: http://, as httpx takes it
      noProxy: ["a.example", ".b.example"],
    });
    expect(proxyOf({ HTTPS_PROXY: "http://upper:1", https_proxy: "http://lower:2" })).toEqual({
      https: "http://lower:2/",
    });
    expect(proxyOf({ HTTPS_PROXY: "http://upper:1", https_proxy: "" })).toBeUndefined();
    expect(proxyOf({ HTTPS_PROXY: "http://p:1", NO_PROXY: "upper", no_proxy: "lower" })?.noProxy).toEqual(["lower"]);
    // From config environment_variables too, as LiteLLM sets them in os.environ.
    expect(proxyOf({ LLM_SECRETS_CONFIG: "environment_variables:\n  HTTPS_PROXY: http://from-config:3128\n" })).toEqual(
      {
        https: "http://from-config:3128/",
      },
    );
  });

  it("takes ALL_PROXY for a scheme without its own (httpx's all://), and ignores a SOCKS one with a warning", () => {
    expect(proxyOf({ ALL_PROXY: "http://all:1" })).toEqual({ http: "http://all:1/", https: "http://all:1/" });
    expect(proxyOf({ all_proxy: "http://lower:2", ALL_PROXY: "http://upper:1", HTTPS_PROXY: "http://own:3" })).toEqual({
      http: "http://lower:2/",
      https: "http://own:3/",
    });
    const settings = loadSettings({
      env: { LITELLM_MASTER_KEY: newKey(), ALL_PROXY: "socks5h://user:pw-secret@s:1080" },
    });
    expect(settings.outbound.proxy).toBeUndefined();
    expect(settings.warnings).toContain(
      "ALL_PROXY: a SOCKS proxy is not supported: it is ignored (calls go direct or by HTTPS_PROXY / HTTP_PROXY)",
    );
    expect(settings.warnings.join("\n")).not.toContain("pw-secret");
  });

  it("ignores uppercase HTTP_PROXY under REQUEST_METHOD (httpoxy), not lowercase http_proxy or HTTPS_PROXY", () => {
    expect(proxyOf({ REQUEST_METHOD: "GET", HTTP_PROXY: "http://injected:1" })).toBeUndefined();
    expect(proxyOf({ REQUEST_METHOD: "", HTTP_PROXY: "http://injected:1", http_proxy: "http://mine:2" })).toEqual({
      http: "http://mine:2/",
    });
    expect(proxyOf({ REQUEST_METHOD: "GET", HTTPS_PROXY: "http://mine:3" })).toEqual({ https: "http://mine:3/" });
  });

  it("stops the start on a proxy URL it cannot use, naming the variable and never the value", () => {
    const cases: [Record<string, string>, string][] = [
      [{ HTTPS_PROXY: "http://user:hunter2-secret@[bad" }, "HTTPS_PROXY: not a proxy URL"],
      [{ http_proxy: "http://user:hunter2-secret@proxy:99999" }, "http_proxy: not a proxy URL"],
      [{ HTTPS_PROXY: "socks5://user:hunter2-secret@proxy:1080" }, "HTTPS_PROXY: a socks5 proxy is not supported"],
      [{ HTTPS_PROXY: "http://user:hunter2-secret%zz@proxy:3128" }, "HTTPS_PROXY: the proxy URL's user or password"],
    ];
    for (const [env, message] of cases) {
      const error = configError(() => proxyOf(env));
      expect(error).toContain(message);
      expect(error).not.toContain("hunter2");
    }
  });
});
