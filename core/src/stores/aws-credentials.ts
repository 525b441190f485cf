/**
 * Role assumption from `key_management_settings`, as LiteLLM's AWS clients do it (its BaseAWSLLM
 * credentials), for the Secrets Manager store and the KMS decryptor alike:
 *
 * - `aws_web_identity_token` with `aws_role_name`: STS `AssumeRoleWithWebIdentity` with that
 *   token (the token itself, or `os.environ/NAME` for an environment variable holding it);
 * - `aws_role_name`: STS `AssumeRole` with the credentials of the SDK's default chain (the
 *   function's own role), `aws_external_id` when set;
 * - `aws_profile_name`: that profile of the shared AWS config files.
 *
 * The session name is `aws_session_name` (default `llm-secrets`); STS is reached at
 * `aws_sts_endpoint` when it is set (else the SDK's: `AWS_ENDPOINT_URL_STS`, then the region's).
 * The SDK renews the temporary credentials before they expire. This file, and the STS client in
 * it, is loaded only when one of these keys is set (aws-config.ts).
 */
import { fromIni, fromTemporaryCredentials, fromWebToken } from "@aws-sdk/credential-providers";
import { ConfigError } from "../errors";

export interface RoleSettings {
  aws_role_name?: string | null;
  aws_session_name?: string | null;
  aws_external_id?: string | null;
  aws_profile_name?: string | null;
  aws_web_identity_token?: string | null;
  aws_sts_endpoint?: string | null;
}

const DEFAULT_SESSION_NAME = "llm-secrets";

/** The credentials these settings ask for, or undefined when they name no role or profile. */
export function roleCredentials(
  config: RoleSettings,
  env: Readonly<Record<string, string | undefined>>,
  // The region and the request handler (timeouts, outbound TLS) of the clients that use them.
  clientConfig: { region: string; requestHandler?: unknown },
): ReturnType<typeof fromTemporaryCredentials> | undefined {
  const roleArn = config.aws_role_name || undefined;
  const roleSessionName = config.aws_session_name || DEFAULT_SESSION_NAME;
  const sts = {
    ...clientConfig,
    ...(config.aws_sts_endpoint && { endpoint: config.aws_sts_endpoint }),
  } as Parameters<typeof fromTemporaryCredentials>[0]["clientConfig"];
  if (config.aws_web_identity_token) {
    if (!roleArn) {
      throw new ConfigError("key_management_settings: aws_web_identity_token needs aws_role_name (the role to assume)");
    }
    return fromWebToken({
      roleArn,
      roleSessionName,
      webIdentityToken: webIdentityToken(config.aws_web_identity_token, env),
      clientConfig: sts,
    });
  }
  if (roleArn) {
    return fromTemporaryCredentials({
      params: {
        RoleArn: roleArn,
        RoleSessionName: roleSessionName,
        ...(config.aws_external_id && { ExternalId: config.aws_external_id }),
      },
      clientConfig: sts,
    });
  }
  if (config.aws_profile_name) return fromIni({ profile: config.aws_profile_name });
  return undefined;
}

/** The token itself, or the value of the variable an `os.environ/NAME` names (never logged). */
function webIdentityToken(setting: string, env: Readonly<Record<string, string | undefined>>): string {
  if (!setting.startsWith("os.environ/")) return setting;
  const name = setting.slice("os.environ/".length);
  const token = env[name];
  if (!token) throw new ConfigError(`key_management_settings: aws_web_identity_token names ${name}, which is not set`);
  return token;
}
