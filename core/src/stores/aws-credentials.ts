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
 *
 * `aws_web_identity_token` also takes LiteLLM's `oidc/` forms (its `get_secret`), as far as they
 * need no identity provider's API: `oidc/file/<absolute path>` (under
 * `LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS`, default `/var/run/secrets,/run/secrets`, as LiteLLM
 * checks it), `oidc/env_path/NAME` (the file that variable names), `oidc/azure/...` with
 * `AZURE_FEDERATED_TOKEN_FILE` set (that file), `oidc/env/NAME`, `oidc/circleci/` and
 * `oidc/circleci_v2/` (`CIRCLE_OIDC_TOKEN`, `CIRCLE_OIDC_TOKEN_V2`). A token in a file is read again
 * at each renewal, as LiteLLM reads it at each one: a projected service account token (EKS, ~1 h)
 * is replaced by the kubelet, and the one read at start has expired by then. The other `oidc/`
 * providers (`google`, `github`, `azure` without the file) fetch their token from an API: they stop
 * the start, never sent to STS as the token itself.
 */
import { readFileSync, realpathSync } from "node:fs";
import { readFile, realpath } from "node:fs/promises";
import { isAbsolute, sep } from "node:path";
import { fromIni, fromTemporaryCredentials, fromWebToken } from "@aws-sdk/credential-providers";
import { ConfigError } from "../errors";
import type { Logger } from "../log";
import { envRefValue, envValue, refName } from "../refs";
import { ROLE_KEYS, type RoleSettings } from "./aws-config";

const DEFAULT_SESSION_NAME = "llm-secrets";

/** The credentials these settings ask for, or undefined when they name no role or profile. */
export function roleCredentials(
  settings: RoleSettings,
  env: Readonly<Record<string, string | undefined>>,
  // The region and the request handler (timeouts, outbound TLS) of the clients that use them.
  clientConfig: { region: string; requestHandler?: unknown },
  log: Logger,
): ReturnType<typeof fromTemporaryCredentials> | undefined {
  const { aws_web_identity_token: tokenSetting, ...others } = settings;
  const config = resolvedRefs(others, env);
  const roleArn = config.aws_role_name;
  const roleSessionName = config.aws_session_name ?? DEFAULT_SESSION_NAME;
  const sts = {
    ...clientConfig,
    ...(config.aws_sts_endpoint && { endpoint: config.aws_sts_endpoint }),
  } as Parameters<typeof fromTemporaryCredentials>[0]["clientConfig"];
  if (tokenSetting) {
    if (!roleArn) {
      throw new ConfigError("key_management_settings: aws_web_identity_token needs aws_role_name (the role to assume)");
    }
    const token = webIdentityToken(tokenSetting, env, log);
    // Read at each renewal (the SDK asks for credentials again before they expire): a token file's
    // current token, not the one of the start.
    return async (props) =>
      fromWebToken({ roleArn, roleSessionName, webIdentityToken: await token(), clientConfig: sts })(props);
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

const KEY = "key_management_settings: aws_web_identity_token";
const OIDC_PREFIX = "oidc/";
/** LiteLLM's allowlist of `oidc/file/` paths, and its default. */
const ALLOWED_DIRS_VAR = "LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS";
const DEFAULT_ALLOWED_DIRS = "/var/run/secrets,/run/secrets";
/** `oidc/<provider>/` forms whose token is a variable's value (LiteLLM's `get_secret`). */
const TOKEN_VARIABLES: Readonly<Record<string, string>> = {
  circleci: "CIRCLE_OIDC_TOKEN",
  circleci_v2: "CIRCLE_OIDC_TOKEN_V2",
};

/**
 * How `aws_web_identity_token` gives its token: the value (or `os.environ/NAME`'s), a variable
 * (`oidc/env/NAME`, CircleCI's), or a file read at each call (`oidc/file/`, `oidc/env_path/`,
 * `oidc/azure/` with `AZURE_FEDERATED_TOKEN_FILE`). What cannot be honoured stops the start here;
 * a token file is read once now, so a wrong path does too. The token is never in a message.
 */
function webIdentityToken(
  setting: string,
  env: Readonly<Record<string, string | undefined>>,
  log: Logger,
): () => Promise<string> {
  if (!setting.startsWith(OIDC_PREFIX)) {
    const { aws_web_identity_token: token } = resolvedRefs({ aws_web_identity_token: setting }, env);
    return async () => token as string;
  }
  const rest = setting.slice(OIDC_PREFIX.length);
  const slash = rest.indexOf("/");
  const provider = slash === -1 ? rest : rest.slice(0, slash);
  const audience = slash === -1 ? "" : rest.slice(slash + 1);
  const variable = (name: string, what: string): string => {
    const value = envValue(env, name);
    if (!value) throw new ConfigError(`${KEY} is ${what}, which reads ${name}: it is not set`);
    return value;
  };
  switch (provider) {
    case "file": {
      if (!isAbsolute(audience)) {
        throw new ConfigError(
          `${KEY}: the oidc/file path must be absolute: oidc/file//var/run/secrets/<name> (the path after oidc/file/)`,
        );
      }
      const allowed = allowedDirs(env);
      return tokenFile(audience, `oidc/file/${audience}`, log, allowed);
    }
    case "env_path":
      return tokenFile(variable(audience, `oidc/env_path/${audience}`), `oidc/env_path/${audience} (a file)`, log);
    case "azure": {
      const file = envValue(env, "AZURE_FEDERATED_TOKEN_FILE");
      if (file) return tokenFile(file, "oidc/azure/ (AZURE_FEDERATED_TOKEN_FILE)", log);
      throw new ConfigError(
        `${KEY} is oidc/azure/..., whose token (without AZURE_FEDERATED_TOKEN_FILE) comes from Azure AD, which llm-secrets does not call: set AZURE_FEDERATED_TOKEN_FILE, or use oidc/file/<path>`,
      );
    }
    case "env": {
      const token = variable(audience, `oidc/env/${audience}`);
      return async () => token;
    }
    default: {
      const name = Object.hasOwn(TOKEN_VARIABLES, provider) ? TOKEN_VARIABLES[provider] : undefined;
      if (name !== undefined) {
        const token = variable(name, `oidc/${provider}/`);
        return async () => token;
      }
      const fetched = provider === "google" || provider === "github";
      throw new ConfigError(
        fetched
          ? `${KEY} is oidc/${provider}/..., whose token LiteLLM fetches from ${provider === "google" ? "the GCE metadata server" : "the GitHub Actions token service"}, which llm-secrets does not call: put the token in a file (oidc/file/<path>) or a variable (oidc/env/NAME, os.environ/NAME)`
          : `${KEY}: oidc/${provider}/ is not an OIDC provider known here (oidc/file/, oidc/env_path/, oidc/env/, oidc/azure/ with AZURE_FEDERATED_TOKEN_FILE, oidc/circleci/, oidc/circleci_v2/)`,
      );
    }
  }
}

/** `LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS`'s directories, their real paths (those that exist). */
function allowedDirs(env: Readonly<Record<string, string | undefined>>): string[] {
  const listed = (envValue(env, ALLOWED_DIRS_VAR) || DEFAULT_ALLOWED_DIRS).split(",").map((d) => d.trim());
  return listed.flatMap((dir) => {
    if (!isAbsolute(dir)) return [];
    try {
      return [realpathSync(dir)];
    } catch {
      return [];
    }
  });
}

function within(path: string, dirs: readonly string[]): boolean {
  return dirs.some((dir) => path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep));
}

/**
 * A token file, checked now (readable, not empty; its real path under `allowed` when given, as
 * LiteLLM checks oidc/file/ paths) and read again, checked the same way, at each call. A failure
 * then is logged (the file and why) and is a `CredentialsProviderError` with that code: no identity
 * to be let in with, `backend_denied` (the SDK asks again at the next call).
 */
function tokenFile(path: string, what: string, log: Logger, allowed?: readonly string[]): () => Promise<string> {
  const OUTSIDE = "outside the allowed credential directories";
  const why = (err: unknown) => (err as NodeJS.ErrnoException).code ?? "error";
  try {
    if (allowed && !within(realpathSync(path), allowed)) {
      throw new ConfigError(
        `${KEY} ${what}: the file is ${OUTSIDE} (${ALLOWED_DIRS_VAR}, default ${DEFAULT_ALLOWED_DIRS})`,
      );
    }
    if (readFileSync(path, "utf8").trim() === "") throw new ConfigError(`${KEY} ${what}: the file is empty`);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`${KEY} ${what}: the file cannot be read (${why(err)})`);
  }
  return async () => {
    let problem: { code: string; reason: string } | undefined;
    let token = "";
    try {
      if (allowed && !within(await realpath(path), allowed)) problem = { code: "EPERM", reason: OUTSIDE };
      else token = (await readFile(path, "utf8")).trim();
      if (!problem && token === "") problem = { code: "EMPTY", reason: "empty" };
    } catch (err) {
      problem = { code: why(err), reason: "cannot be read" };
    }
    if (problem) {
      log.warn("aws web identity token file: no token to renew the credentials with", {
        file: path,
        reason: problem.reason,
        code: problem.code,
      });
      throw Object.assign(new Error(`${KEY} ${what}: the file ${problem.reason} (${problem.code})`), {
        name: "CredentialsProviderError",
        code: problem.code,
      });
    }
    return token;
  };
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
