/**
 * Role assumption from `key_management_settings`, as LiteLLM's AWS clients do it (its BaseAWSLLM
 * credentials), for the Secrets Manager store and the KMS decryptor alike:
 *
 * - `aws_web_identity_token` with `aws_role_name`: STS `AssumeRoleWithWebIdentity` with that token;
 * - `aws_role_name`: STS `AssumeRole` with the credentials of the SDK's default chain (the
 *   function's own role), `aws_external_id` when set;
 * - `aws_profile_name`: that profile of the shared AWS config files.
 *
 * Each may be `os.environ/NAME`, read from that variable, as LiteLLM reads them. The session name
 * is `aws_session_name` (default `llm-secrets`); STS is reached at
 * `aws_sts_endpoint` when it is set (else the SDK's: `AWS_ENDPOINT_URL_STS`, then the region's).
 * The SDK renews the temporary credentials before they expire. This file, and the STS client in
 * it, is loaded only when one of these keys is set (aws-config.ts).
 */
import { fromIni, fromTemporaryCredentials, fromWebToken } from "@aws-sdk/credential-providers";
import { ConfigError } from "../errors";
import { envRefValue, refName } from "../refs";
import { ROLE_KEYS, type RoleSettings } from "./aws-config";

const DEFAULT_SESSION_NAME = "llm-secrets";

/** The credentials these settings ask for, or undefined when they name no role or profile. */
export function roleCredentials(
  settings: RoleSettings,
  env: Readonly<Record<string, string | undefined>>,
  // The region and the request handler (timeouts, outbound TLS) of the clients that use them.
  clientConfig: { region: string; requestHandler?: unknown },
): ReturnType<typeof fromTemporaryCredentials> | undefined {
  const config = resolvedRefs(settings, env);
  const roleArn = config.aws_role_name;
  const roleSessionName = config.aws_session_name ?? DEFAULT_SESSION_NAME;
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
      webIdentityToken: config.aws_web_identity_token,
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
  // A profile that assumes a role reaches STS with the same client settings.
  if (config.aws_profile_name) return fromIni({ profile: config.aws_profile_name, clientConfig: sts });
  return undefined;
}

/**
 * Each setting as given, or, for `os.environ/NAME` (as LiteLLM reads these keys), that variable's
 * value; a named variable that is not set stops the start. Empty settings count as unset.
 */
function resolvedRefs(
  settings: RoleSettings,
  env: Readonly<Record<string, string | undefined>>,
): { [K in keyof RoleSettings]?: string } {
  const out: { [K in keyof RoleSettings]?: string } = {};
  for (const key of ROLE_KEYS) {
    const setting = settings[key];
    if (!setting) continue;
    const name = refName(setting);
    if (name === undefined) {
      out[key] = setting;
      continue;
    }
    const value = envRefValue(env, name);
    // The value is never named in the message: a token may be in it.
    if (!value) throw new ConfigError(`key_management_settings: ${key} names ${name}, which is not set`);
    out[key] = value;
  }
  return out;
}
