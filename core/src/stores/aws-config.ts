/**
 * What the AWS store and the AWS KMS decryptor share, without loading an SDK: the region (as
 * LiteLLM resolves it), the settings both read, and the client options (timeouts; the SDK's own
 * retry: 3 attempts, throttling honoured, nothing added on top).
 *
 * Endpoints and credentials are the SDK's: `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`,
 * `AWS_ENDPOINT_URL_KMS` and the default credential chain (env keys, web identity, container and
 * instance roles), read by the SDK from the environment. Role assumption from
 * `key_management_settings` (`aws_role_name`, ...) is not done: the function's own role is used.
 */
import { Agent as HttpsAgent } from "node:https";
import * as z from "zod/mini";
import type { Logger } from "../log";
import { type OutboundTls, outboundTlsOptions } from "../outbound-tls";

const text = z.nullish(z.string());

/** `key_management_settings` keys of LiteLLM's AWS clients. */
export const AwsConfigKeys = {
  aws_region_name: text,
  aws_role_name: text,
  aws_session_name: text,
  aws_external_id: text,
  aws_profile_name: text,
  aws_web_identity_token: text,
  aws_sts_endpoint: text,
};

export const AwsEnvKeys = {
  AWS_REGION_NAME: z.optional(z.string()),
  AWS_REGION: z.optional(z.string()),
  AWS_DEFAULT_REGION: z.optional(z.string()),
};

/** LiteLLM's last resort when no region is set anywhere. */
const FALLBACK_REGION = "us-west-2";
const ROLE_KEYS = [
  "aws_role_name",
  "aws_session_name",
  "aws_external_id",
  "aws_profile_name",
  "aws_web_identity_token",
  "aws_sts_endpoint",
] as const;

type AwsConfig = { [K in keyof typeof AwsConfigKeys]?: string | null };
type AwsEnv = { [K in keyof typeof AwsEnvKeys]?: string };

/**
 * The client options of every AWS client we make: the region as LiteLLM resolves it
 * (`aws_region_name`, then `AWS_REGION_NAME`, `AWS_REGION`, `AWS_DEFAULT_REGION`, else us-west-2
 * with a warning), and bounded time per attempt.
 */
export function awsClientOptions(
  config: AwsConfig,
  env: AwsEnv,
  log: Logger,
  timeouts: { connectMs: number; requestMs: number } = { connectMs: 5_000, requestMs: 10_000 },
  tls: OutboundTls = {},
) {
  const set = ROLE_KEYS.filter((k) => config[k]);
  if (set.length > 0) {
    log.warn("AWS role settings are ignored: the function's own role (the SDK's credential chain) is used", {
      keys: set.join(", "),
    });
  }
  const options = outboundTlsOptions(tls);
  let region = config.aws_region_name || env.AWS_REGION_NAME || env.AWS_REGION || env.AWS_DEFAULT_REGION;
  if (!region) {
    log.warn(
      "no AWS region found: set aws_region_name in key_management_settings or AWS_REGION_NAME/AWS_REGION; using us-west-2",
    );
    region = FALLBACK_REGION;
  }
  return {
    region,
    maxAttempts: 3,
    // throwOnRequestTimeout: without it the SDK only warns (on the console) past requestTimeout.
    requestHandler: {
      connectionTimeout: timeouts.connectMs,
      requestTimeout: timeouts.requestMs,
      throwOnRequestTimeout: true,
      // The outbound TLS settings (ssl_verify, SSL_CERT_FILE, ssl_certificate), when any is set.
      ...(Object.keys(options).length > 0 && { httpsAgent: new HttpsAgent({ keepAlive: true, ...options }) }),
    },
  };
}
