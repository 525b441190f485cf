// aws_web_identity_token's forms (LiteLLM's get_secret: the token, os.environ/NAME, oidc/...), and a
// token that lives in a file read again at each renewal of the temporary credentials: a projected
// service account token (EKS, ~1 h) is replaced by the kubelet while the process runs, and STS
// refuses the one read at start once it has expired. The real SDK, over HTTPS, to the fake's STS
// (test/fakes/aws.ts).

import { mkdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../core/src/log";
import type { SecretStore } from "../../core/src/secret-store";
import { AwsSecretsManagerSettings, awsSecretsManagerStore } from "../../core/src/stores/aws";
import { awsKmsStore } from "../../core/src/stores/aws-kms";
import { safeParse } from "../../core/src/validation";
import { lazyFakeAws } from "../fakes/aws";
import { codeOf, expectNoValueIn, secretValue, tempDir } from "../helpers";

const aws = lazyFakeAws();
const logs: string[] = [];
const log = createLogger((line) => logs.push(line));
const ROLE = "arn:aws:iam::111122223333:role/llm-secrets-web";

beforeEach(async () => {
  (await aws()).reset();
  logs.length = 0;
});

async function open(config: Record<string, unknown>, env: Record<string, string> = {}): Promise<SecretStore> {
  await aws();
  const parsed = safeParse(AwsSecretsManagerSettings, {
    config: { aws_region_name: "us-east-1", aws_role_name: ROLE, ...config },
    env: {},
  });
  if (!parsed.success) throw new Error("invalid test settings");
  return awsSecretsManagerStore.open(parsed.data, { dataDir: "/nonexistent", env, log, now: Date.now });
}

/** Replaces the token file as the kubelet does: a new file renamed over the old one. */
async function replaceToken(path: string, token: string): Promise<void> {
  await writeFile(`${path}.new`, token);
  await rename(`${path}.new`, path);
}

/** The tokens STS was sent, in order. */
async function tokensSent(): Promise<string[]> {
  return (await aws()).calls("AssumeRoleWithWebIdentity").map((r) => String(r.body.WebIdentityToken));
}

describe("aws_web_identity_token in a file: read again at each renewal", () => {
  it("oidc/file/<path>: the kubelet replaces the token and the old one expires; the next renewal presents the new one", async () => {
    const fake = await aws();
    const dir = await tempDir();
    const path = join(dir, "token");
    const first = secretValue("jwt-one");
    await writeFile(path, `${first}\n`); // a trailing newline is not part of the token
    // Sessions of a minute: the SDK renews within 5 minutes of expiry, so each call here renews.
    fake.roles.set(ROLE, { webIdentityToken: first, sessionSeconds: 60 });
    const store = await open(
      { aws_web_identity_token: `oidc/file/${path}` },
      { LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS: dir },
    );
    const v = secretValue("as-web-role");
    expect(await store.put("WEB", v)).toBe("created");
    expect((await store.get("WEB"))?.value).toBe(v);
    expect(new Set(await tokensSent())).toEqual(new Set([first]));

    const second = secretValue("jwt-two");
    await replaceToken(path, second);
    fake.replaceWebIdentityToken(ROLE, second); // the first is now past its expiry
    const before = (await tokensSent()).length;
    expect((await store.get("WEB"))?.value).toBe(v);
    const after = (await tokensSent()).slice(before);
    expect(after.length).toBeGreaterThanOrEqual(1);
    expect(new Set(after)).toEqual(new Set([second]));
    const calls = fake.requests.filter((r) => r.target.startsWith("secretsmanager."));
    expect(calls.every((r) => r.principal === ROLE)).toBe(true);
    expectNoValueIn(logs, [first, second]);
    await store.close?.();
  });

  it("oidc/env_path/NAME: the file the variable names, read again at each renewal", async () => {
    const fake = await aws();
    const dir = await tempDir();
    const path = join(dir, "projected");
    const first = secretValue("jwt-a");
    await writeFile(path, first);
    fake.roles.set(ROLE, { webIdentityToken: first, sessionSeconds: 60 });
    const store = await open({ aws_web_identity_token: "oidc/env_path/TOKEN_PATH" }, { TOKEN_PATH: path });
    expect(await store.get("NOPE")).toBeUndefined();
    const second = secretValue("jwt-b");
    await replaceToken(path, second);
    fake.replaceWebIdentityToken(ROLE, second);
    expect(await store.get("NOPE")).toBeUndefined();
    expect((await tokensSent()).at(-1)).toBe(second);
    await store.close?.();
  });

  it("a token file gone at a renewal is backend_denied and logged naming the file (never the token); back, the next renewal reads it", async () => {
    const fake = await aws();
    const dir = await tempDir();
    const path = join(dir, "token");
    const token = secretValue("jwt");
    await writeFile(path, token);
    fake.roles.set(ROLE, { webIdentityToken: token, sessionSeconds: 60 });
    const store = await open(
      { aws_web_identity_token: `oidc/file/${path}` },
      { LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS: dir },
    );
    expect(await store.get("X")).toBeUndefined();
    await rm(path);
    const sent = (await tokensSent()).length;
    const failed = (await store.get("X").catch((e: Error) => e)) as Error;
    expect(await codeOf(Promise.reject(failed))).toBe("backend_denied");
    expect(failed.message).toContain("CredentialsProviderError, ENOENT");
    const warned = logs.filter((l) => l.includes("aws web identity token file"));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain(path);
    expect(warned[0]).toContain("ENOENT");
    expect(await tokensSent()).toHaveLength(sent); // nothing sent to STS without a token
    await writeFile(path, token);
    expect(await store.get("X")).toBeUndefined();
    expectNoValueIn([...logs, failed.message], [token]);
    await store.close?.();
  });

  it("a token file replaced at a renewal by a link to a file outside the allowed directories is backend_denied, its token never sent", async () => {
    const fake = await aws();
    const dir = await tempDir();
    const allowed = join(dir, "allowed");
    await mkdir(allowed);
    const path = join(allowed, "token");
    const token = secretValue("jwt");
    await writeFile(path, token);
    const elsewhere = join(dir, "elsewhere");
    await writeFile(elsewhere, token); // the very token, so only the check can refuse it
    fake.roles.set(ROLE, { webIdentityToken: token, sessionSeconds: 60 });
    const store = await open(
      { aws_web_identity_token: `oidc/file/${path}` },
      { LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS: allowed },
    );
    expect(await store.get("X")).toBeUndefined();
    await rm(path);
    await symlink(elsewhere, path);
    const sent = (await tokensSent()).length;
    const failed = (await store.get("X").catch((e: Error) => e)) as Error;
    expect(await codeOf(Promise.reject(failed))).toBe("backend_denied");
    expect(failed.message).toContain("CredentialsProviderError, EPERM");
    expect(await tokensSent()).toHaveLength(sent);
    await store.close?.();
  });
});

describe("STS refusing or failing a web identity token", () => {
  it("a token STS cannot validate is backend_denied; an identity provider STS cannot reach is backend_unavailable (retryable): neither logs the token", async () => {
    const fake = await aws();
    const token = secretValue("jwt-not-this-roles");
    fake.roles.set(ROLE, { webIdentityToken: secretValue("jwt-the-roles") });
    const refused = await open({ aws_web_identity_token: token });
    const denied = (await refused.get("X").catch((e: Error) => e)) as Error;
    expect(await codeOf(Promise.reject(denied))).toBe("backend_denied");
    expect(denied.message).toContain("InvalidIdentityTokenException");
    await refused.close?.();

    fake.reset();
    fake.roles.set(ROLE, { webIdentityToken: token, idpUnreachable: true });
    const unreachable = await open({ aws_web_identity_token: token });
    const down = (await unreachable.get("X").catch((e: Error) => e)) as Error & { details?: { retryAfter?: number } };
    expect(await codeOf(Promise.reject(down))).toBe("backend_unavailable");
    expect(down.message).toContain("IDPCommunicationErrorException");
    expect(down.details?.retryAfter).toBe(1);
    // The provider back, the next call assumes the role.
    fake.roles.set(ROLE, { webIdentityToken: token });
    expect(await unreachable.get("X")).toBeUndefined();
    expectNoValueIn([...logs, denied.message, down.message], [token]);
    await unreachable.close?.();
  });
});

describe("aws_web_identity_token's forms at start", () => {
  it("the token, os.environ/NAME, oidc/env/NAME, oidc/circleci/ and oidc/azure/ with AZURE_FEDERATED_TOKEN_FILE: the token each names", async () => {
    const fake = await aws();
    const dir = await tempDir();
    const azureFile = join(dir, "azure-identity-token");
    const cases: [string, Record<string, string>, string][] = [];
    const literal = secretValue("jwt-literal");
    cases.push([literal, {}, literal]);
    const fromVar = secretValue("jwt-var");
    cases.push(["os.environ/MY_OIDC_TOKEN", { MY_OIDC_TOKEN: fromVar }, fromVar]);
    const fromOidcEnv = secretValue("jwt-oidc-env");
    cases.push(["oidc/env/CUSTOM_TOKEN", { CUSTOM_TOKEN: fromOidcEnv }, fromOidcEnv]);
    const circle = secretValue("jwt-circle");
    cases.push(["oidc/circleci/", { CIRCLE_OIDC_TOKEN: circle }, circle]);
    const circle2 = secretValue("jwt-circle-v2");
    cases.push(["oidc/circleci_v2/", { CIRCLE_OIDC_TOKEN_V2: circle2 }, circle2]);
    const azure = secretValue("jwt-azure");
    await writeFile(azureFile, azure);
    cases.push(["oidc/azure/api://AzureADTokenExchange", { AZURE_FEDERATED_TOKEN_FILE: azureFile }, azure]);
    for (const [setting, env, token] of cases) {
      fake.reset();
      fake.roles.set(ROLE, { webIdentityToken: token });
      const store = await open({ aws_web_identity_token: setting }, env);
      expect(await store.get("ANY"), setting).toBeUndefined();
      expect(await tokensSent(), setting).toEqual([token]);
      await store.close?.();
    }
  });

  it("KMS decrypts with a token file's credentials too (the same role settings)", async () => {
    const fake = await aws();
    const dir = await tempDir();
    const path = join(dir, "token");
    const token = secretValue("jwt-kms");
    await writeFile(path, token);
    fake.roles.set(ROLE, { webIdentityToken: token });
    const v = secretValue("kms-value");
    const store = await awsKmsStore.open(
      {
        config: { aws_region_name: "us-east-1", aws_role_name: ROLE, aws_web_identity_token: `oidc/file/${path}` },
        env: {},
      },
      {
        dataDir: "/nonexistent",
        env: { LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS: dir, K: fake.encrypt(v).toString("base64") },
        log,
        now: Date.now,
      },
    );
    expect((await store.get("K"))?.value).toBe(v);
    expect(await tokensSent()).toEqual([token]);
    expect(fake.calls("Decrypt").map((r) => r.principal)).toEqual([ROLE]);
  });

  it("an oidc/ form that cannot be honoured stops the start with a ConfigError, never sent to STS as the token", async () => {
    const fake = await aws();
    const dir = await tempDir();
    const outside = join(dir, "token");
    await writeFile(outside, secretValue("jwt"));
    // A link in an allowed directory to a file outside it: its real path is outside.
    const allowed = join(dir, "allowed");
    await mkdir(allowed);
    await symlink(outside, join(allowed, "token"));
    // A sibling whose path begins with the allowed directory's own (`allowed-x`): outside it all the same.
    await mkdir(join(dir, "allowed-x"));
    await writeFile(join(dir, "allowed-x", "token"), secretValue("jwt"));
    const refused: [string, Record<string, string>, RegExp][] = [
      [
        "oidc/google/https://sts.amazonaws.com",
        {},
        /oidc\/google\/\.\.\., whose token LiteLLM fetches from the GCE metadata server/,
      ],
      [
        "oidc/github/sts.amazonaws.com",
        {},
        /oidc\/github\/\.\.\., whose token LiteLLM fetches from the GitHub Actions token service/,
      ],
      [
        "oidc/azure/api://AzureADTokenExchange",
        {},
        /oidc\/azure\/\.\.\., whose token \(without AZURE_FEDERATED_TOKEN_FILE\)/,
      ],
      ["oidc/okta/aud", {}, /oidc\/okta\/ is not an OIDC provider known here/],
      ["oidc/file/var/run/secrets/token", {}, /the oidc\/file path must be absolute/],
      // The default allowlist (/var/run/secrets, /run/secrets), as LiteLLM's.
      [`oidc/file/${outside}`, {}, /outside the allowed credential directories \(LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS/],
      [
        `oidc/file/${join(dir, "missing")}`,
        { LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS: dir },
        /the file cannot be read \(ENOENT\)/,
      ],
      [
        `oidc/file/${join(allowed, "token")}`,
        { LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS: allowed },
        /outside the allowed credential directories/,
      ],
      [
        `oidc/file/${join(dir, "allowed-x", "token")}`,
        { LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS: allowed },
        /outside the allowed credential directories/,
      ],
      ["oidc/env_path/NOT_SET", {}, /oidc\/env_path\/NOT_SET, which reads NOT_SET: it is not set/],
      ["oidc/env/NOT_SET", {}, /oidc\/env\/NOT_SET, which reads NOT_SET: it is not set/],
      ["os.environ/NOT_SET", {}, /aws_web_identity_token names NOT_SET, which is not set/],
    ];
    for (const [setting, env, message] of refused) {
      const err = await open({ aws_web_identity_token: setting }, env).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.name, setting).toBe("ConfigError");
      expect(err?.message, setting).toMatch(message);
    }
    expect(fake.calls("AssumeRoleWithWebIdentity")).toHaveLength(0);
  });
});
