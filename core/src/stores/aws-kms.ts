/**
 * `aws_kms`: values sealed with AWS KMS, kept in the environment (SPEC section 3; LiteLLM's
 * `aws_kms`). A name's env value is base64 KMS ciphertext (`aws_kms/` dropped, as LiteLLM's
 * start-up `decrypt_value` drops it), decoded as LiteLLM's `base64.b64decode` decodes it (characters
 * outside base64, such as whitespace or the quotes `docker run --env-file` keeps, skipped), opened
 * with `Decrypt` (the key id travels in the ciphertext), read as UTF-8 and stripped as Python's
 * `str.strip()` strips. Over HTTP it serves only names in `hosted_keys` (an env-backed store).
 * Never writes.
 * Reached only as `@llm-secrets/core/stores/aws-kms`: importing the core root loads no AWS SDK, and
 * the SDK itself is imported when the store opens.
 *
 * Differs from LiteLLM: a value that is not KMS ciphertext, or whose plaintext is not UTF-8, is
 * `500 store_corrupt` naming the variable, not the plaintext returned after a failed call (at
 * start, a config ref still falls back to the environment, as LiteLLM's does).
 * Records: the value only.
 */

import type * as Sdk from "@aws-sdk/client-kms";
import * as z from "zod/mini";
import { ConfigError, type SecretsError } from "../errors";
import { pythonB64decode, pythonStrip, pythonUtf8 } from "../python-text";
import { envValue } from "../refs";
import {
  type ListOptions,
  type NamePage,
  pageOfNames,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
} from "../secret-store";
import { classifyBackendError, NotSupported, StoreCorrupt, StoreUnavailable } from "../store-errors";
import { AwsConfigKeys, AwsEnvKeys, awsClientOptions, awsCredentials, regionOf } from "./aws-config";
import { loadSdk } from "./load-sdk";

const PREFIX = "aws_kms/";
/** KMS `Decrypt`'s `CiphertextBlob`: 1 to 6144 bytes; past that KMS answers `ValidationException`. */
const MAX_CIPHERTEXT_BYTES = 6144;

export const AwsKmsSettings = z.object({ config: z.object(AwsConfigKeys), env: z.object(AwsEnvKeys) });

export class AwsKmsStore implements SecretStore {
  readonly kind = "aws_kms";

  constructor(
    private readonly sdk: typeof Sdk,
    private readonly client: Sdk.KMSClient,
    private readonly env: Readonly<Record<string, string>>,
  ) {}

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
    // `replace`, every occurrence, as LiteLLM's `decrypt_value` (a quoted "aws_kms/…" too): no
    // base64 text holds the `_` of the prefix.
    const ciphertext = pythonB64decode(sealed.replaceAll(PREFIX, ""));
    if (ciphertext === undefined || ciphertext.length === 0) {
      throw new StoreCorrupt(`the environment variable ${name} is not base64 KMS ciphertext`);
    }
    if (ciphertext.length > MAX_CIPHERTEXT_BYTES) {
      throw new StoreCorrupt(
        `the environment variable ${name} is not KMS ciphertext: it decodes to more than the ${MAX_CIPHERTEXT_BYTES} bytes Decrypt takes`,
      );
    }
    let plaintext: Uint8Array | undefined;
    try {
      const out = await this.client.send(new this.sdk.DecryptCommand({ CiphertextBlob: ciphertext }));
      plaintext = out.Plaintext;
    } catch (err) {
      throw decryptError(err, name);
    }
    if (plaintext === undefined) throw new StoreCorrupt(`KMS returned no plaintext for ${name}`);
    const text = pythonUtf8(plaintext);
    if (text === undefined) {
      throw new StoreCorrupt(`the environment variable ${name} opens to a plaintext that is not UTF-8`);
    }
    return { value: pythonStrip(text) };
  }

  async put(): Promise<never> {
    throw new NotSupported("writing to the aws_kms (environment) store");
  }

  async delete(): Promise<never> {
    throw new NotSupported("deleting from the aws_kms (environment) store");
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/**
 * A failed `Decrypt` of `name`'s ciphertext. KMS's answers that speak of that ciphertext (not one
 * KMS made, tampered, or of another key than the one asked for) are `store_corrupt` naming the
 * variable. `NotFoundException`, the key the ciphertext names no longer exists (deleted after its
 * waiting period), is the key's state, as a disabled key's is (`store_unavailable`): decided here,
 * as the name means other things on other services, and the classifier is not told the service.
 * The rest (a disabled key or one not for decryption, throttling, denial) goes to the classifier.
 */
function decryptError(err: unknown, name: string): SecretsError {
  const error = (err as { name?: unknown } | null)?.name;
  if (error === "InvalidCiphertextException" || error === "IncorrectKeyException") {
    return new StoreCorrupt(`the environment variable ${name} is not KMS ciphertext KMS can open (${error})`, {
      cause: err,
    });
  }
  if (error === "NotFoundException") {
    return new StoreUnavailable(
      `aws kms decrypt: the KMS key that sealed the environment variable ${name} does not exist (NotFoundException)`,
      { cause: err },
    );
  }
  return classifyBackendError(err, "aws kms decrypt");
}

export const awsKmsStore = {
  kind: "aws_kms",
  settings: AwsKmsSettings,
  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: true, decryptsAwsKmsValues: true },
  capabilities: { writes: false, deletes: false, compareAndSet: false, maxValueBytes: 4096, records: [] },
  open: async (settings, deps) => {
    // KMS opens a ciphertext only in its key's region: guessing one (the other AWS store's
    // us-west-2) would fail every decrypt, and at start hand each ref its ciphertext from the
    // environment. LiteLLM's aws_kms requires AWS_REGION_NAME too.
    if (!regionOf(settings.config, settings.env)) {
      throw new ConfigError(
        "aws_kms needs the region of its key: set AWS_REGION_NAME (or AWS_REGION, or key_management_settings.aws_region_name)",
      );
    }
    const sdk = await loadSdk(() => import("@aws-sdk/client-kms"));
    const options = awsClientOptions(settings.config, settings.env, deps.log, undefined, deps.outbound);
    const credentials = await awsCredentials(settings.config, deps.env, options, deps.log);
    return new AwsKmsStore(sdk, new sdk.KMSClient({ ...options, ...credentials }), deps.env);
  },
} as const satisfies StoreFactory<"aws_kms", typeof AwsKmsSettings>;
