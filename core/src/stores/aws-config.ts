/**
 * What the AWS store and the AWS KMS decryptor share, without loading an SDK: the region (as
 * LiteLLM resolves it), the settings both read, and the client options (timeouts; the SDK's own
 * retry: 3 attempts, throttling honoured, nothing added on top). The region of the shared config
 * file is asked of the SDK the caller loaded, and only when the settings and variables name none.
 *
 * Endpoints are the SDK's: `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`,
 * `AWS_ENDPOINT_URL_KMS`, read by the SDK from the environment. Credentials are the SDK's default
 * chain (env keys, web identity, container and instance roles), unless `key_management_settings`
 * names a role or a profile (`aws_role_name`, ...): then `awsCredentials` assumes it
 * (aws-credentials.ts, loaded only then).
 */
import { Agent as HttpsAgent } from "node:https";
import * as z from "zod/mini";
import type { Logger } from "../log";
import { type OutboundTls, outboundTlsOptions } from "../outbound-tls";
import { envRefValue, refName } from "../refs";
import type * as RoleCredentials from "./aws-credentials";

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
/** The keys that name a role or a profile to assume, and how (aws-credentials.ts). */
export const ROLE_KEYS = [
  "aws_role_name",
  "aws_session_name",
  "aws_external_id",
  "aws_profile_name",
  "aws_web_identity_token",
  "aws_sts_endpoint",
] as const;

type AwsConfig = { [K in keyof typeof AwsConfigKeys]?: string | null };
export type RoleSettings = Pick<AwsConfig, (typeof ROLE_KEYS)[number]>;
type AwsEnv = { [K in keyof typeof AwsEnvKeys]?: string };

/** The region as LiteLLM resolves it: `aws_region_name`, then `AWS_REGION_NAME`, `AWS_REGION`, `AWS_DEFAULT_REGION`. */
export function regionOf(config: AwsConfig, env: AwsEnv): string | undefined {
  return config.aws_region_name || env.AWS_REGION_NAME || env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined;
}

/**
 * The region of the shared AWS config file (`~/.aws/config`, or `AWS_CONFIG_FILE`), which LiteLLM
 * takes (boto3's session region) when the settings and variables name none: the `region` of the
 * profile `aws_profile_name` (else `AWS_PROFILE`'s, else `default`'s). Asked of the SDK's own lookup,
 * through a client of `Client` made without a region; undefined when it finds none. Call it only
 * then: on Lambda, which always sets `AWS_REGION`, it is never reached.
 */
export async function configFileRegion(
  Client: new (options: { profile?: string }) => { config: { region: () => Promise<string> }; destroy(): void },
  config: AwsConfig,
  env: Readonly<Record<string, string | undefined>>,
): Promise<string | undefined> {
  const setting = config.aws_profile_name || undefined;
  const ref = refName(setting);
  const profile = ref === undefined ? setting : envRefValue(env, ref);
  const client = new Client(profile ? { profile } : {});
  try {
    return await client.config.region();
  } catch {
    return undefined; // the SDK's "Region is missing"
  } finally {
    client.destroy();
  }
}

/**
 * The client options of every AWS client we make: the region as LiteLLM resolves it
 * (`aws_region_name`, then `AWS_REGION_NAME`, `AWS_REGION`, `AWS_DEFAULT_REGION`; the caller puts
 * the config file's in `aws_region_name` when those name none; else us-west-2 with a warning), and
 * bounded time per attempt.
 */
export function awsClientOptions(
  config: AwsConfig,
  env: AwsEnv,
  log: Logger,
  timeouts: { connectMs: number; requestMs: number } = { connectMs: 5_000, requestMs: 10_000 },
  tls: OutboundTls = {},
) {
  const options = outboundTlsOptions(tls);
  let region = regionOf(config, env);
  if (!region) {
    log.warn(
      "no AWS region found: set aws_region_name in key_management_settings, AWS_REGION_NAME/AWS_REGION, or region in the AWS config file; using us-west-2",
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

/**
 * The `credentials` of a client (spread into its options) when `key_management_settings` names a
 * role or a profile, else none (the SDK's default chain). `env` is the process environment, for
 * `os.environ/NAME` settings and `aws_web_identity_token`'s `oidc/` forms (a token file is read again
 * at each renewal; `log` hears when it cannot be).
 */
export async function awsCredentials(
  config: AwsConfig,
  env: Readonly<Record<string, string | undefined>>,
  client: { region: string; requestHandler?: unknown },
  log: Logger,
): Promise<{ credentials?: NonNullable<ReturnType<typeof RoleCredentials.roleCredentials>> }> {
  if (!ROLE_KEYS.some((k) => config[k])) return {};
  const { roleCredentials } = await import("./aws-credentials");
  const credentials = roleCredentials(config, env, client, log);
  if (!credentials) {
    log.warn("AWS role settings without aws_role_name or aws_profile_name are ignored", {
      keys: ROLE_KEYS.filter((k) => config[k]).join(", "),
    });
    return {};
  }
  return { credentials };
}
