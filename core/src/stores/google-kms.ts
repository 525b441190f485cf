/**
 * `google_kms`: values sealed with Cloud KMS, kept in the environment (SPEC section 3; LiteLLM's
 * `google_kms`). A name's env value must be canonical base64 (what `b64encode(b64decode(s)) == s`
 * accepts: no whitespace, no URL-safe alphabet, padding present); it is decrypted with the
 * CryptoKey `GOOGLE_KMS_RESOURCE_NAME` and returned as UTF-8, not trimmed (as LiteLLM). Over HTTP
 * it serves only names in `hosted_keys` (an env-backed store). Never writes.
 * Reached only as `@llm-secrets/core/stores/google-kms`; the library is imported when it opens.
 *
 * Differs from LiteLLM: a value that is not canonical base64 or not a ciphertext of that key, or
 * whose plaintext is not UTF-8, is `500 store_corrupt` naming the variable (at start, a config ref
 * still falls back to the environment, as LiteLLM's does).
 * Records: the value only.
 */

import type * as Sdk from "@google-cloud/kms";
import * as z from "zod/mini";
import { pythonUtf8 } from "../python-text";
import { envValue } from "../refs";
import {
  type ListOptions,
  type NamePage,
  pageOfNames,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
} from "../secret-store";
import { classifyBackendError, GrpcCode, NotSupported, StoreCorrupt, StoreUnavailable } from "../store-errors";
import { endpointUrl, googleCallOptions, googleTlsOptions, readyClient } from "./google-config";
import { loadSdk } from "./load-sdk";

type Client = InstanceType<typeof Sdk.KeyManagementServiceClient>;

const CRYPTO_KEY = /^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/;

export const GoogleKmsSettings = z.object({
  config: z.object({}),
  env: z.object({
    GOOGLE_KMS_RESOURCE_NAME: z
      .string()
      .check(z.regex(CRYPTO_KEY, "expected projects/P/locations/L/keyRings/R/cryptoKeys/K")),
    LLM_SECRETS_GOOGLE_KMS_ENDPOINT: z.optional(endpointUrl),
  }),
});

/** Canonical base64: decoding and encoding again gives back the same text. */
function isCanonicalBase64(text: string): boolean {
  return text.length > 0 && Buffer.from(text, "base64").toString("base64") === text;
}

export class GoogleKmsStore implements SecretStore {
  readonly kind = "google_kms";
  readonly #call: ReturnType<typeof googleCallOptions>;

  constructor(
    private readonly client: Client,
    private readonly keyName: string,
    private readonly env: Readonly<Record<string, string>>,
    deadlineMs?: number,
  ) {
    this.#call = googleCallOptions(deadlineMs);
  }

  keyOf(name: string): string {
    return name;
  }

  /** The environment's names, unopened (the manager lists only the `hosted_keys` among them). */
  async list(options: ListOptions): Promise<NamePage> {
    return pageOfNames(Object.keys(this.env), options);
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    const sealed = envValue(this.env, name);
    if (sealed === undefined) return undefined;
    if (!isCanonicalBase64(sealed)) {
      throw new StoreCorrupt(`the environment variable ${name} is not canonical base64 KMS ciphertext`);
    }
    await this.#ready();
    let plaintext: Uint8Array;
    try {
      const [out] = await this.client.decrypt(
        { name: this.keyName, ciphertext: Buffer.from(sealed, "base64") },
        this.#call,
      );
      plaintext = (out.plaintext ?? new Uint8Array()) as Uint8Array;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      // INVALID_ARGUMENT: KMS's answer to a ciphertext it cannot open with the key.
      if (code === GrpcCode.INVALID_ARGUMENT) {
        throw new StoreCorrupt(`the environment variable ${name} is not a ciphertext of GOOGLE_KMS_RESOURCE_NAME`, {
          cause: err,
        });
      }
      // NOT_FOUND on Decrypt: the CryptoKey does not exist, a state of the key as a disabled one's
      // FAILED_PRECONDITION is (decided here: on other Google calls the code means other things).
      if (code === GrpcCode.NOT_FOUND) {
        throw new StoreUnavailable(
          "google kms decrypt: the CryptoKey GOOGLE_KMS_RESOURCE_NAME names does not exist (NOT_FOUND (5))",
          { cause: err },
        );
      }
      throw classifyBackendError(err, "google kms decrypt");
    }
    const text = pythonUtf8(plaintext);
    if (text === undefined) {
      throw new StoreCorrupt(`the environment variable ${name} opens to a plaintext that is not UTF-8`);
    }
    return { value: text };
  }

  /** The client set up before `decrypt` (`readyClient`). */
  #ready(): Promise<void> {
    return readyClient(this.client, "keyManagementServiceStub", "google kms decrypt");
  }

  async put(): Promise<never> {
    throw new NotSupported("writing to the google_kms (environment) store");
  }

  async delete(): Promise<never> {
    throw new NotSupported("deleting from the google_kms (environment) store");
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}

export const googleKmsStore = {
  kind: "google_kms",
  settings: GoogleKmsSettings,
  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: true, legacyFlag: "use_google_kms" },
  capabilities: { writes: false, deletes: false, compareAndSet: false, maxValueBytes: 64 * 1024, records: [] },
  open: async (settings, deps) => {
    const { env } = settings;
    const sdk = await loadSdk(() => import("@google-cloud/kms"));
    return new GoogleKmsStore(
      new sdk.KeyManagementServiceClient({
        ...env.LLM_SECRETS_GOOGLE_KMS_ENDPOINT,
        // The JWT's audience is the service's Google name whatever the endpoint (the client's own
        // `defaultServicePath` is always cloudkms.googleapis.com): an endpoint's host is refused.
        ...(await googleTlsOptions(deps.outbound, "cloudkms.googleapis.com")),
      }),
      env.GOOGLE_KMS_RESOURCE_NAME,
      deps.env,
    );
  },
} as const satisfies StoreFactory<"google_kms", typeof GoogleKmsSettings>;
