/**
 * `aws_kms`: values sealed with AWS KMS, kept in the environment (SPEC section 3; LiteLLM's
 * `aws_kms`). A name's env value is base64 KMS ciphertext (a leading `aws_kms/` is dropped, and
 * whitespace inside skipped, as LiteLLM's `b64decode` skips it), opened with `Decrypt` (the key id
 * travels in the ciphertext) and trimmed. Over HTTP it serves only names
 * in `hosted_keys` (an env-backed store). Never writes.
 * Reached only as `@llm-secrets/core/stores/aws-kms`: importing the core root loads no AWS SDK, and
 * the SDK itself is imported when the store opens.
 *
 * Differs from LiteLLM: a value that is not KMS ciphertext is `500 store_corrupt` naming the
 * variable, not the plaintext returned after a failed call (at start, a config ref still falls
 * back to the environment, as LiteLLM's does).
 * Records: the value only.
 */

import type * as Sdk from "@aws-sdk/client-kms";
import * as z from "zod/mini";
import { ConfigError } from "../errors";
import { envValue } from "../refs";
import {
  type ListOptions,
  type NamePage,
  pageOfNames,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
} from "../secret-store";
import { classifyBackendError, NotSupported, StoreCorrupt } from "../store-errors";
import { AwsConfigKeys, AwsEnvKeys, awsClientOptions, awsCredentials, regionOf } from "./aws-config";
import { loadSdk } from "./load-sdk";

const PREFIX = "aws_kms/";
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

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
    let sealed = envValue(this.env, name)?.trim();
    if (sealed === undefined) return undefined;
    if (sealed.startsWith(PREFIX)) sealed = sealed.slice(PREFIX.length);
    // LiteLLM's base64.b64decode skips whitespace inside (a value wrapped by `base64` at 76 columns).
    sealed = sealed.replace(/\s+/g, "");
    if (!BASE64.test(sealed) || sealed.length % 4 !== 0) {
      throw new StoreCorrupt(`the environment variable ${name} is not base64 KMS ciphertext`);
    }
    try {
      const out = await this.client.send(
        new this.sdk.DecryptCommand({ CiphertextBlob: Buffer.from(sealed, "base64") }),
      );
      if (out.Plaintext === undefined) throw new StoreCorrupt(`KMS returned no plaintext for ${name}`);
      return { value: Buffer.from(out.Plaintext).toString("utf8").trim() };
    } catch (err) {
      if ((err as { name?: unknown }).name === "InvalidCiphertextException") {
        throw new StoreCorrupt(`the environment variable ${name} is not KMS ciphertext KMS can open`, { cause: err });
      }
      throw classifyBackendError(err, "aws kms decrypt");
    }
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
