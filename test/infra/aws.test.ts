// The AWS stack (infra/aws), asserted on its synthesized CloudFormation: runtime, the queue and its
// dead-letter wiring, ReportBatchItemFailures, the Function URL's auth, the KMS key's use, and least
// privilege: no `*` action, and no write outside the virtual-key prefix; and every action the store
// makes (run against the AWS fake) granted on the name's resource.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import * as lambda from "aws-cdk-lib/aws-lambda";
import { describe, expect, it } from "vitest";
import { silentLogger } from "../../core/src/log";
import { AwsSecretsManagerSettings, awsSecretsManagerStore } from "../../core/src/stores/aws";
import { safeParse } from "../../core/src/validation";
import { propsFromContext } from "../../infra/aws/context";
import {
  KEY_EVENTS_TIMEOUT_SECONDS,
  LlmSecretsStack,
  type LlmSecretsStackProps,
  MAX_EVENT_AGE_DAYS,
} from "../../infra/aws/stack";
import { lazyFakeAws } from "../fakes/aws";
import { tempDir } from "../helpers";

const aws = lazyFakeAws();

const WRITE_ACTIONS = /^secretsmanager:(Create|Put|Restore|Delete|Tag|Untag|Update|Replicate)/;

/** Where each synth writes its cloud assembly: CDK's default is a fresh dir in /tmp, never removed. */
const cdkOut = await tempDir();

function synth(props: Partial<LlmSecretsStackProps> = {}): Template {
  const app = new App({ outdir: mkdtempSync(join(cdkOut, "app-")) });
  const stack = new LlmSecretsStack(app, "Test", {
    code: lambda.Code.fromInline("export const http = () => {};"),
    ...props,
  });
  return Template.fromStack(stack);
}

/**
 * `npx cdk synth -q -o out` in infra/aws, as a user runs it, but offline and leaving nothing behind:
 * the CLI's telemetry and notices off (it sent telemetry to AWS and wrote ~/.cdk), HOME and TMPDIR
 * (where tsx, which runs app.ts, keeps its cache) in a temp dir, and none of the AWS fake's
 * endpoint and keys this file's other tests put in the environment.
 */
async function cdkSynth(out: string, args: string[] = []) {
  const home = await tempDir();
  return spawnSync("npx", ["cdk", "synth", "-q", "--no-notices", "-o", out, ...args], {
    cwd: join(import.meta.dirname, "../../infra/aws"),
    encoding: "utf8",
    timeout: 120_000,
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AWS_"))),
      CDK_DISABLE_CLI_TELEMETRY: "true",
      HOME: home,
      TMPDIR: home,
    },
  });
}

/** Every IAM statement of the template, as written. */
function statements(
  template: Template,
): { Action: string | string[]; Resource: unknown; Effect: string; Condition?: unknown }[] {
  const policies = template.findResources("AWS::IAM::Policy");
  return Object.values(policies).flatMap(
    (p) => (p as { Properties: { PolicyDocument: { Statement: never[] } } }).Properties.PolicyDocument.Statement,
  );
}

function actionsOf(s: { Action: string | string[] }): string[] {
  return Array.isArray(s.Action) ? s.Action : [s.Action];
}

/** The secret-name pattern of each resource of a statement (after `:secret:` in its ARN, a CDK join included); `*` and any other ARN are undefined. */
function secretPatternsOf(s: { Resource: unknown }): (string | undefined)[] {
  const list = Array.isArray(s.Resource) ? s.Resource : [s.Resource];
  return list
    .map((r) => /:secret:([^"]*)"\]\]\}$|:secret:([^"]*)$/.exec(typeof r === "string" ? r : JSON.stringify(r)))
    .map((m) => m?.[1] ?? m?.[2]);
}

// Each test synthesizes the stack: seconds on a quiet machine, and the first (loading CDK's
// modules) passed 30 s on a loaded one.
describe("the AWS stack", { timeout: 120_000 }, () => {
  it("runs both handlers of the one bundle on Node 22, arm64, logs kept 30 days", () => {
    const template = synth();
    for (const handler of ["index.http", "index.sqs"]) {
      template.hasResourceProperties("AWS::Lambda::Function", {
        Handler: handler,
        Runtime: "nodejs22.x",
        Architectures: ["arm64"],
      });
    }
    template.resourcePropertiesCountIs("AWS::Logs::LogGroup", { RetentionInDays: 30 }, 2);
  });

  it("feeds key events from SQS with ReportBatchItemFailures, dead-letters after 5 receives, keeps them at most 6 days", () => {
    const template = synth();
    template.hasResourceProperties("AWS::Lambda::EventSourceMapping", {
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      BatchSize: 10,
    });
    template.hasResourceProperties("AWS::SQS::Queue", {
      RedrivePolicy: { deadLetterTargetArn: Match.anyValue(), maxReceiveCount: 5 },
      MessageRetentionPeriod: MAX_EVENT_AGE_DAYS * 86_400,
    });
    const queues = Object.values(template.findResources("AWS::SQS::Queue")) as {
      Properties: { MessageRetentionPeriod: number; KmsMasterKeyId?: unknown };
    }[];
    expect(queues).toHaveLength(2);
    // A batch's function time, six times over, before the queue shows it again (AWS's advice); the
    // HTTP function as long as forward waits for an upstream.
    template.hasResourceProperties("AWS::Lambda::Function", {
      Handler: "index.sqs",
      Timeout: KEY_EVENTS_TIMEOUT_SECONDS,
    });
    template.hasResourceProperties("AWS::Lambda::Function", { Handler: "index.http", Timeout: 900 }); // > forward's 600 s
    template.hasResourceProperties("AWS::SQS::Queue", { VisibilityTimeout: 6 * KEY_EVENTS_TIMEOUT_SECONDS });
    expect(KEY_EVENTS_TIMEOUT_SECONDS).toBeGreaterThanOrEqual(60);
    for (const q of queues) {
      expect(q.Properties.MessageRetentionPeriod).toBeLessThanOrEqual(518_400); // LLM_SECRETS_MAX_EVENT_AGE
      expect(q.Properties.KmsMasterKeyId).toBeDefined();
    }
  });

  it("serves HTTPS through a Function URL with IAM auth by default, or an HTTP API", () => {
    synth().hasResourceProperties("AWS::Lambda::Url", { AuthType: "AWS_IAM" });
    const api = synth({ entry: "http-api" });
    api.resourceCountIs("AWS::Lambda::Url", 0);
    api.resourceCountIs("AWS::ApiGatewayV2::Api", 1);
  });

  it("writes hosted_keys into the config only when names are given: an empty list would serve no name", () => {
    const configOf = (props: Partial<LlmSecretsStackProps>) => {
      const fn = Object.values(synth(props).findResources("AWS::Lambda::Function"))[0] as {
        Properties: { Environment: { Variables: Record<string, unknown> } };
      };
      return JSON.stringify(fn.Properties.Environment.Variables.LLM_SECRETS_CONFIG);
    };
    // -c hostedKeys= (app.ts: an empty list) is no list, as with none at all.
    for (const props of [{}, { hostedKeys: [] }]) expect(configOf(props)).not.toContain("hosted_keys");
    expect(configOf({ hostedKeys: ["OPENAI_API_KEY"] })).toContain('hosted_keys: [\\"OPENAI_API_KEY\\"]');
  });

  it("encrypts with its own rotated KMS key, named in the store's settings", () => {
    const template = synth();
    template.hasResourceProperties("AWS::KMS::Key", { EnableKeyRotation: true });
    const fn = Object.values(template.findResources("AWS::Lambda::Function"))[0] as {
      Properties: { Environment: { Variables: Record<string, unknown> } };
    };
    expect(JSON.stringify(fn.Properties.Environment.Variables.LLM_SECRETS_CONFIG)).toContain("kms_key_id");
    expect(JSON.stringify(fn.Properties.Environment.Variables.LITELLM_MASTER_KEY)).toContain("resolve:secretsmanager");
    // No NODE_OPTIONS for source maps the bundles do not have.
    expect(Object.keys(fn.Properties.Environment.Variables)).not.toContain("NODE_OPTIONS");
  });

  it("encrypts the queues with a key of their own, which the functions may only decrypt with; the secrets stay on the secrets key", () => {
    const template = synth();
    const keys = Object.keys(template.findResources("AWS::KMS::Key"));
    const queueKey = keys.find((id) => id.startsWith("QueueKey"));
    const secretsKey = keys.find((id) => id.startsWith("SecretsKey"));
    expect(queueKey).toBeDefined();
    expect(secretsKey).toBeDefined();
    expect(queueKey).not.toBe(secretsKey);
    template.hasResourceProperties("AWS::KMS::Key", {
      Description: Match.stringLikeRegexp("queue"),
      EnableKeyRotation: true,
    });
    const arnOf = (id: string | undefined) => ({ "Fn::GetAtt": [id, "Arn"] });
    // Both queues under the queue key (a producer's grant on it covers no secret).
    const queues = Object.values(template.findResources("AWS::SQS::Queue")) as {
      Properties: { KmsMasterKeyId: unknown };
    }[];
    expect(queues).toHaveLength(2);
    for (const q of queues) expect(q.Properties.KmsMasterKeyId).toEqual(arnOf(queueKey));
    // The secrets, the master key and the store's kms_key_id under the secrets key.
    const secret = Object.values(template.findResources("AWS::SecretsManager::Secret"))[0] as {
      Properties: { KmsKeyId: unknown };
    };
    expect(secret.Properties.KmsKeyId).toEqual(arnOf(secretsKey));
    const fn = Object.values(template.findResources("AWS::Lambda::Function"))[0] as {
      Properties: { Environment: { Variables: { LLM_SECRETS_CONFIG: unknown } } };
    };
    const config = JSON.stringify(fn.Properties.Environment.Variables.LLM_SECRETS_CONFIG);
    expect(config).toContain(secretsKey);
    expect(config).not.toContain(queueKey);
    // The functions' role may decrypt queued events, and do nothing else with the queue key.
    const onQueueKey = statements(template).filter((s) => JSON.stringify(s.Resource).includes(`"${queueKey}"`));
    expect(onQueueKey.flatMap(actionsOf)).toEqual(["kms:Decrypt"]);
    // CreateSecret's condition names the secrets key, never the queue key.
    const create = statements(template).filter((s) => actionsOf(s).includes("secretsmanager:CreateSecret"));
    expect(JSON.stringify(create)).toContain(secretsKey);
    expect(JSON.stringify(create)).not.toContain(queueKey);
  });

  it("outputs what a deployment hands on (the API's URL, the queues, the master key's secret, the keys), each described", () => {
    const idOf = (template: Template, type: string, prefix: string) => {
      const ids = Object.keys(template.findResources(type)).filter((id) => id.startsWith(prefix));
      expect(ids, `${type} ${prefix}`).toHaveLength(1);
      return ids[0] as string;
    };
    const expected = (template: Template, url: Record<string, unknown>) => ({
      ...url,
      HttpFunctionArn: { "Fn::GetAtt": [idOf(template, "AWS::Lambda::Function", "Http"), "Arn"] },
      // An SQS queue's Ref is its URL; a secret's is its ARN.
      KeyEventsQueueUrl: { Ref: idOf(template, "AWS::SQS::Queue", "KeyEventsQueue") },
      KeyEventsQueueArn: { "Fn::GetAtt": [idOf(template, "AWS::SQS::Queue", "KeyEventsQueue"), "Arn"] },
      KeyEventsDeadLettersUrl: { Ref: idOf(template, "AWS::SQS::Queue", "KeyEventsDeadLetters") },
      MasterKeySecretArn: { Ref: idOf(template, "AWS::SecretsManager::Secret", "MasterKey") },
      SecretsKeyArn: { "Fn::GetAtt": [idOf(template, "AWS::KMS::Key", "SecretsKey"), "Arn"] },
      QueueKeyArn: { "Fn::GetAtt": [idOf(template, "AWS::KMS::Key", "QueueKey"), "Arn"] },
    });
    const valuesOf = (template: Template) => {
      const outputs = template.findOutputs("*") as Record<string, { Value: unknown; Description?: string }>;
      for (const [name, o] of Object.entries(outputs)) expect(o.Description?.length ?? 0, name).toBeGreaterThan(20);
      return Object.fromEntries(Object.entries(outputs).map(([name, o]) => [name, o.Value]));
    };
    const url = synth();
    expect(valuesOf(url)).toEqual(
      expected(url, { FunctionUrl: { "Fn::GetAtt": [idOf(url, "AWS::Lambda::Url", "Http"), "FunctionUrl"] } }),
    );
    const api = synth({ entry: "http-api" });
    expect(valuesOf(api)).toEqual(
      expected(api, { HttpApiUrl: { "Fn::GetAtt": [idOf(api, "AWS::ApiGatewayV2::Api", "HttpApi"), "ApiEndpoint"] } }),
    );
  });

  it("gives the HTTP function a 300 s cache lifetime (refreshIntervalSeconds), so a key revoked by an event stops being served within it", () => {
    const refreshOf = (template: Template, handler: string) => {
      const fn = Object.values(template.findResources("AWS::Lambda::Function")).find(
        (f) => (f as { Properties: { Handler: string } }).Properties.Handler === handler,
      ) as { Properties: { Environment: { Variables: Record<string, unknown> } } };
      return fn.Properties.Environment.Variables.SECRET_MANAGER_REFRESH_INTERVAL;
    };
    const template = synth();
    expect(refreshOf(template, "index.http")).toBe("300");
    // The key-events function serves no reads: its cache keeps the general default.
    expect(refreshOf(template, "index.sqs")).toBeUndefined();
    expect(refreshOf(synth({ refreshIntervalSeconds: 0 }), "index.http")).toBe("0");
    expect(() => synth({ refreshIntervalSeconds: 1.5 })).toThrow(/refreshIntervalSeconds/);
  });

  it("names the master key's version when given (masterKeyVersionId), so a rotation changes the template and the functions take the new key", () => {
    const masterKeyOf = (template: Template) =>
      Object.values(template.findResources("AWS::Lambda::Function")).map((f) =>
        JSON.stringify(
          (f as { Properties: { Environment: { Variables: Record<string, unknown> } } }).Properties.Environment
            .Variables.LITELLM_MASTER_KEY,
        ),
      );
    const version = "a1b2c3d4-0000-4000-8000-123456789abc";
    const rotated = masterKeyOf(synth({ masterKeyVersionId: version }));
    expect(rotated).toHaveLength(2);
    // {{resolve:secretsmanager:<arn>:SecretString:<json key>:<stage>:<version id>}}
    for (const ref of rotated) expect(ref).toMatch(new RegExp(`:SecretString:::${version}\\}\\}`));
    const unversioned = masterKeyOf(synth());
    for (const ref of unversioned) expect(ref).toMatch(/:SecretString:::\}\}/);
    expect(rotated).not.toEqual(unversioned);
    expect(() => synth({ masterKeyVersionId: "x:y" })).toThrow(/masterKeyVersionId/);
  });

  it("passes a salt key and previous salt keys only when given, as the master key is (deploy-time references at named versions), and grants the role nothing on them", () => {
    const environments = (template: Template) =>
      Object.values(template.findResources("AWS::Lambda::Function")).map(
        (f) =>
          (f as { Properties: { Environment: { Variables: Record<string, unknown> } } }).Properties.Environment
            .Variables,
      );
    // Unset: no variable, so the master key seals, as before (an existing stack's template is unchanged).
    for (const env of environments(synth())) {
      expect(Object.keys(env)).not.toContain("LITELLM_SALT_KEY");
      expect(Object.keys(env)).not.toContain("LLM_SECRETS_PREVIOUS_SALT_KEYS");
    }
    const salt = "a1b2c3d4-0000-4000-8000-000000000001";
    const previous = "a1b2c3d4-0000-4000-8000-000000000002";
    const arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:llm-secrets/previous-salt-keys-AbC123";
    const template = synth({
      saltKeySecret: "llm-secrets/salt-key",
      saltKeyVersionId: salt,
      previousSaltKeysSecret: arn,
      previousSaltKeysVersionId: previous,
    });
    const envs = environments(template);
    expect(envs).toHaveLength(2); // the HTTP function and the key-events one: both open ciphertexts
    for (const env of envs) {
      expect(env.LITELLM_SALT_KEY).toBe(`{{resolve:secretsmanager:llm-secrets/salt-key:SecretString:::${salt}}}`);
      expect(env.LLM_SECRETS_PREVIOUS_SALT_KEYS).toBe(`{{resolve:secretsmanager:${arn}:SecretString:::${previous}}}`);
    }
    // CloudFormation reads them as the deployer: the functions' role may not (the API would serve them).
    expect(JSON.stringify(statements(template))).not.toMatch(/salt-key/);
    // A new version is a new template: the functions take it at that deploy.
    const rotated = environments(
      synth({ saltKeySecret: "llm-secrets/salt-key", saltKeyVersionId: previous.replace("2", "3") }),
    );
    expect(rotated[0]?.LITELLM_SALT_KEY).not.toEqual(envs[0]?.LITELLM_SALT_KEY);
  });

  it("refuses a salt key secret without its version (or the reverse), and one the functions read (under the prefix, or a hosted name)", () => {
    const version = "a1b2c3d4-0000-4000-8000-000000000001";
    expect(() => synth({ saltKeySecret: "llm-secrets/salt-key" })).toThrow(/saltKeySecret and saltKeyVersionId/);
    expect(() => synth({ previousSaltKeysVersionId: version })).toThrow(
      /previousSaltKeysSecret and previousSaltKeysVersionId/,
    );
    expect(() => synth({ saltKeySecret: "s", saltKeyVersionId: "AWSCURRENT" })).toThrow(/saltKeyVersionId/);
    expect(() => synth({ saltKeySecret: "a:b", saltKeyVersionId: version })).toThrow(/name or full ARN/);
    for (const [secret, props] of [
      ["litellm/salt-key", {}],
      ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:litellm/salt-AbC123", {}],
      ["team/salt", { prefix: "team" }],
      ["SALT", { hostedKeys: ["OPENAI_API_KEY", "SALT"] }],
      ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:SALT-AbC123", { hostedKeys: ["SALT"] }],
    ] as const) {
      expect(
        () => synth({ ...props, previousSaltKeysSecret: secret, previousSaltKeysVersionId: version }),
        secret,
      ).toThrow(/a name the functions read/);
    }
    expect(() => synth({ hostedKeys: ["SALT"], saltKeySecret: "SALT-2", saltKeyVersionId: version })).not.toThrow();
  });

  it("infra/README.md's rotation texts match the templates: without a salt key the master key also seals, the salt keys' settings are kept on every deploy, and a salt key rotates in order", async () => {
    const infra = join(import.meta.dirname, "../../infra");
    const readme = await readFile(join(infra, "README.md"), "utf8");
    const between = (from: string, to: string) => {
      const start = readme.indexOf(from);
      const end = readme.indexOf(to, start);
      expect(start, from).toBeGreaterThan(0);
      expect(end, to).toBeGreaterThan(start);
      return readme.slice(start, end);
    };
    const keys = between("## The master key, the salt key, and rotating them", "## AWS");
    // Every setting the table names is one the templates take.
    const [stack, variables, bicep] = await Promise.all(
      ["aws/stack.ts", "gcp/variables.tf", "azure/main.bicep"].map((f) => readFile(join(infra, f), "utf8")),
    );
    for (const prop of ["saltKeySecret", "saltKeyVersionId", "previousSaltKeysSecret", "previousSaltKeysVersionId"]) {
      expect(keys).toContain(`\`${prop}\``);
      expect(stack).toContain(`  ${prop}?: string;`);
    }
    for (const variable of [
      "salt_key_secret",
      "salt_key_version",
      "previous_salt_keys_secret",
      "previous_salt_keys_version",
    ]) {
      expect(keys).toContain(`\`${variable}\``);
      expect(variables).toContain(`variable "${variable}" {`);
    }
    for (const param of ["saltKey", "previousSaltKeys"]) {
      expect(keys).toContain(`\`${param}\``);
      expect(bicep).toContain(`param ${param} string = ''`);
    }
    // The order: previous keys added, deployed, the gateway switched, re-sealed and waited out, removed.
    const steps = [
      "1. Add the old key to the previous salt keys",
      "2. Deploy with both",
      "Only then switch the gateway",
      "3. Re-seal what is kept sealed elsewhere: `llm-secrets reencrypt -`",
      "wait out the queues",
      "4. Then remove the old key",
    ];
    const at = steps.map((step) => keys.replace(/\s+/g, " ").indexOf(step));
    for (const [i, step] of steps.entries()) expect(at[i], step).toBeGreaterThan(i === 0 ? -1 : (at[i - 1] as number));
    // Each cloud's master-key rotation says the master key also seals without a salt key, keeps the
    // salt key's setting on every deploy, and names it in the deploy that rotates.
    const rotations = {
      aws: between("Rotating the master key: CloudFormation", "Giving a gateway the API"),
      gcp: between("Rotating the master key: Google", "Giving a gateway the API"),
      azure: between("Rotating the master key: deploy the template", "| resource | for |"),
    };
    for (const [cloud, text] of Object.entries(rotations)) {
      expect(text.replace(/\s+/g, " "), cloud).toMatch(/Without a salt key the master key also seals/);
    }
    expect(rotations.aws).toMatch(/a deploy without `saltKeySecret`\s+takes `LITELLM_SALT_KEY` away/);
    expect(rotations.aws).toMatch(
      /npx cdk deploy -c masterKeyVersionId=<that VersionId> -c saltKeySecret=llm-secrets\/salt-key \\\n\s+-c saltKeyVersionId=/,
    );
    expect(rotations.gcp).toMatch(/an apply without `salt_key_secret`\s+takes `LITELLM_SALT_KEY` away/);
    expect(rotations.gcp).toContain(
      "terraform apply -var master_key_version=2 -var salt_key_secret=llm-secrets-salt-key",
    );
    expect(rotations.azure).toMatch(/`saltKey` and `previousSaltKeys` when used/);
  });

  it("infra/README.md's AWS steps bootstrap the account and region before the first deploy (cdk deploy fails without CDK's assets bucket)", async () => {
    const readme = await readFile(join(import.meta.dirname, "../../infra/README.md"), "utf8");
    const steps = readme.slice(readme.indexOf("## AWS"), readme.indexOf("Context (synth-time"));
    expect(steps).toMatch(/^npx cdk bootstrap +# once per account and region/m);
    expect(steps.indexOf("npx cdk bootstrap")).toBeLessThan(steps.indexOf("npx cdk deploy"));
  });

  it("lists names only when asked (listNames): ListSecrets alone, on the resource AWS requires", () => {
    const listing = (t: Template) => statements(t).filter((s) => actionsOf(s).includes("secretsmanager:ListSecrets"));
    expect(listing(synth())).toEqual([]);
    const granted = listing(synth({ listNames: true }));
    expect(granted).toHaveLength(1);
    expect(actionsOf(granted[0] as { Action: string | string[] })).toEqual(["secretsmanager:ListSecrets"]);
    expect(granted[0]?.Resource).toBe("*");
  });

  it("grants every action the store's calls make, on the name's resource (the store run against the AWS fake)", async () => {
    const fake = await aws();
    fake.reset();
    const parsed = safeParse(AwsSecretsManagerSettings, { config: { aws_region_name: "us-east-1" }, env: {} });
    if (!parsed.success) throw new Error("invalid test settings");
    const store = await awsSecretsManagerStore.open(parsed.data, {
      dataDir: "/nonexistent",
      env: {},
      log: silentLogger,
      now: Date.now,
    });
    // What a deployment does under the prefix: key events' writes (new, existing, over a deleted
    // name), PUTs with a description and tags (which replace the secret's), reads, deletes (again,
    // and of a name never written), and listing.
    const name = "litellm/k";
    await store.put(name, "v1", { ifNewerThan: { at: 1_000, id: "e1" } });
    await store.put(name, "v2", { ifNewerThan: { at: 2_000, id: "e2" } });
    await store.put(name, "v2b", { meta: { description: "d", tags: { a: "1" } }, ifNewerThan: { at: 2_100 } });
    await store.put(name, "v2c", { meta: { tags: { b: "2" } }, ifNewerThan: { at: 2_200 } });
    await store.get(name);
    await store.delete(name, { ifNewerThan: { at: 3_000, id: "e3" } });
    await store.delete(name, { ifNewerThan: { at: 4_000, id: "e4" } });
    await store.put(name, "v3", { ifNewerThan: { at: 5_000, id: "e5" } });
    await store.delete("litellm/never", { ifNewerThan: { at: 5_000, id: "e6" } });
    await store.list?.({ limit: 10 });
    await store.close?.();
    const called = [...new Set(fake.requests.map((r) => `secretsmanager:${r.target.split(".")[1]}`))].sort();
    expect(called.length).toBeGreaterThan(6);
    const onPrefix = (granted: ReturnType<typeof statements>, action: string) =>
      granted.some((s) => actionsOf(s).includes(action) && JSON.stringify(s.Resource).includes(":secret:litellm/*"));
    const granted = statements(synth({ listNames: true }));
    for (const action of called) {
      const holders = granted.filter((s) => actionsOf(s).includes(action));
      expect(holders.length, `${action} is granted`).toBeGreaterThan(0);
      // ListSecrets has no resource of its own; every other call is on the name's, under the prefix.
      if (action !== "secretsmanager:ListSecrets") {
        expect(onPrefix(granted, action), `${action} on litellm/*`).toBe(true);
      }
    }
    // Writes and deletes read no value: the one GetSecretValue is the explicit get.
    expect(fake.calls("GetSecretValue").map((r) => r.body.SecretId)).toEqual([name]);
    // With hosted keys the API reads no virtual key (403 not_hosted): every call but the read stays
    // granted under the prefix (key events' writes), and no value there is readable.
    const hosted = statements(synth({ hostedKeys: ["OPENAI_API_KEY"] }));
    for (const action of called.filter((a) => a !== "secretsmanager:ListSecrets")) {
      expect(onPrefix(hosted, action), `${action} on litellm/* with hostedKeys`).toBe(
        action !== "secretsmanager:GetSecretValue",
      );
    }
  });

  it("grants no KMS action nothing calls (kms:Encrypt), nothing on the master key's secret (CloudFormation reads it), and the queue's grants to the key-events function's role only", () => {
    const template = synth();
    const all = statements(template);
    expect(all.flatMap(actionsOf)).not.toContain("kms:Encrypt");
    // The functions take LITELLM_MASTER_KEY from their environment, resolved by CloudFormation.
    const masterKey = Object.keys(template.findResources("AWS::SecretsManager::Secret"))[0] as string;
    expect(JSON.stringify(all)).not.toContain(masterKey);
    expect(
      all
        .flatMap(actionsOf)
        .filter((a) => a.startsWith("kms:"))
        .sort(),
    ).toEqual([
      "kms:Decrypt", // the queue key's
      "kms:Decrypt",
      "kms:GenerateDataKey",
    ]);
    // Each function's role, and the actions of the policies attached to it.
    const policies = Object.values(template.findResources("AWS::IAM::Policy")) as {
      Properties: { Roles: { Ref: string }[]; PolicyDocument: { Statement: { Action: string | string[] }[] } };
    }[];
    const actionsOfRole = (handler: string) => {
      const fn = Object.values(template.findResources("AWS::Lambda::Function")).find(
        (f) => (f as { Properties: { Handler: string } }).Properties.Handler === handler,
      ) as { Properties: { Role: { "Fn::GetAtt": [string, string] } } };
      const role = fn.Properties.Role["Fn::GetAtt"][0];
      return {
        role,
        actions: policies
          .filter((p) => p.Properties.Roles.some((r) => r.Ref === role))
          .flatMap((p) => p.Properties.PolicyDocument.Statement.flatMap(actionsOf)),
      };
    };
    const http = actionsOfRole("index.http");
    const keyEvents = actionsOfRole("index.sqs");
    expect(http.role).not.toBe(keyEvents.role);
    expect(http.actions.filter((a) => a.startsWith("sqs:"))).toEqual([]);
    expect(keyEvents.actions).toEqual(expect.arrayContaining(["sqs:ReceiveMessage", "sqs:DeleteMessage"]));
    // Both write secrets (the API's PUT and DELETE, key events) under the secrets key.
    for (const { actions } of [http, keyEvents]) {
      expect(actions).toEqual(expect.arrayContaining(["secretsmanager:PutSecretValue", "kms:GenerateDataKey"]));
    }
  });

  it("takes -c values only as the stack does: a typo in entry, accessMode, refreshInterval or listNames stops synth, naming the value and the allowed ones; hostedKeys trimmed and checked, the prefix checked", () => {
    const from = (values: Record<string, unknown>) => propsFromContext((key) => values[key]);
    // Nothing given: the stack's defaults.
    expect(from({})).toMatchObject({
      accessMode: undefined,
      entry: undefined,
      hostedKeys: undefined,
      listNames: false,
    });
    expect(
      from({
        entry: "http-api",
        accessMode: "read_only",
        refreshInterval: "0",
        listNames: "true",
        prefix: "team/",
        hostedKeys: "OPENAI_API_KEY, AZURE_API_KEY,,team/key ",
      }),
    ).toMatchObject({
      entry: "http-api",
      accessMode: "read_only",
      refreshIntervalSeconds: 0,
      listNames: true,
      prefix: "team/",
      hostedKeys: ["OPENAI_API_KEY", "AZURE_API_KEY", "team/key"],
    });
    // cdk.json's context may hold a number or a boolean.
    expect(from({ refreshInterval: 60, listNames: true })).toMatchObject({
      refreshIntervalSeconds: 60,
      listNames: true,
    });
    expect(from({ hostedKeys: "" }).hostedKeys).toEqual([]);
    // An entry typo would have built an HTTP API with no IAM auth; an accessMode typo kept the writes.
    expect(() => from({ entry: "function_url" })).toThrow("-c entry=function_url: expected function-url, http-api");
    expect(() => from({ accessMode: "readonly" })).toThrow(
      "-c accessMode=readonly: expected read_only, write_only, read_and_write",
    );
    expect(() => from({ listNames: "yes" })).toThrow("-c listNames=yes: expected true, false");
    // Number() would take "" as 0 and "0x10" as 16.
    for (const value of ["", "1.5", "-1", "0x10", "5s", " 5"]) {
      expect(() => from({ refreshInterval: value }), value).toThrow(
        `-c refreshInterval=${value}: expected a whole number of seconds, 0 or more`,
      );
    }
    for (const name of ["OPENAI API KEY", "/abs", "a//b", "-x", "x".repeat(257)]) {
      expect(() => from({ hostedKeys: `OPENAI_API_KEY,${name}` }), name).toThrow(
        `-c hostedKeys: ${JSON.stringify(name)} is not a secret name (invalid secret name: `,
      );
    }
    // A prefix that begins no name: every start refused it, after synth had granted IAM on it.
    for (const prefix of ["", "/", "a b", "-x/"]) {
      expect(() => from({ prefix }), prefix).toThrow(
        `-c prefix=${prefix}: the secret names it would begin are not valid`,
      );
    }
    expect(from({ prefix: "team-a" }).prefix).toBe("team-a");
    expect(() => from({ storeKind: "aws_kms" })).toThrow(
      "storeKind aws_kms: this stack deploys aws_secret_manager only",
    );
    expect(from({ storeKind: "aws_secret_manager" })).toBeDefined();
  });

  it("grants no `*` action, reads only served names, and writes only under the prefix", () => {
    for (const props of [
      {},
      { hostedKeys: ["OPENAI_API_KEY"], prefix: "team-a" },
      { accessMode: "read_only" as const },
    ]) {
      const all = statements(synth(props));
      expect(all.length).toBeGreaterThan(0);
      for (const s of all) for (const a of actionsOf(s)) expect(a.endsWith("*") || a === "*", a).toBe(false);
      const writes = all.filter((s) => actionsOf(s).some((a) => WRITE_ACTIONS.test(a)));
      if (props.accessMode === "read_only") expect(writes).toEqual([]);
      else expect(writes.length).toBe(3);
      // CreateSecret only under the stack's key: no secret made with another (aws/secretsmanager).
      for (const s of all.filter((st) => actionsOf(st).includes("secretsmanager:CreateSecret"))) {
        expect(actionsOf(s)).toEqual(["secretsmanager:CreateSecret"]);
        expect(JSON.stringify(s.Condition)).toMatch(
          /"StringEquals":\{"secretsmanager:KmsKeyId":\{"Fn::GetAtt":\["SecretsKey/,
        );
      }
      // UpdateSecret may set a description, never the KMS key (which would move secrets off the stack's key).
      for (const s of all.filter((st) => actionsOf(st).includes("secretsmanager:UpdateSecret"))) {
        expect(actionsOf(s)).toEqual(["secretsmanager:UpdateSecret"]);
        expect(s.Condition).toEqual({ Null: { "secretsmanager:KmsKeyId": "true" } });
      }
      const prefix = `${props.prefix ?? "litellm"}/*`;
      // Every resource of a write is the prefix's names: none is `*` or another ARN.
      for (const s of writes) expect(secretPatternsOf(s)).toEqual([prefix]);
      const reads = all.filter(
        (s) =>
          actionsOf(s).includes("secretsmanager:GetSecretValue") && !JSON.stringify(s.Resource).includes("MasterKey"),
      );
      expect(reads.length).toBeGreaterThan(0);
      for (const s of reads) {
        for (const pattern of secretPatternsOf(s)) {
          expect(pattern === prefix || pattern?.startsWith("OPENAI_API_KEY-"), String(pattern)).toBe(true);
        }
      }
    }
  });

  it("deploys the aws_secret_manager store only: -c storeKind=aws_kms (which writes nothing: key events could not work) is refused, as is a typo in -c entry", async () => {
    expect(JSON.stringify(synth().toJSON())).toContain("key_management_system: aws_secret_manager");
    const out = await tempDir();
    const run = await cdkSynth(out, ["-c", "storeKind=aws_kms"]);
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain("storeKind aws_kms: this stack deploys aws_secret_manager only");
    expect(existsSync(join(out, "LlmSecrets.template.json"))).toBe(false);
    // app.ts checks every value so (context.ts): a typo'd entry no longer builds an API without IAM auth.
    const typo = await cdkSynth(out, ["-c", "entry=function_url"]);
    expect(typo.status).not.toBe(0);
    expect(typo.stderr).toContain("-c entry=function_url: expected function-url, http-api");
    expect(existsSync(join(out, "LlmSecrets.template.json"))).toBe(false);
  }, 150_000);

  it("npx cdk synth in infra/aws builds the bundle and writes a template", async () => {
    const out = await tempDir();
    const run = await cdkSynth(out);
    expect(run.status, run.stderr.slice(-600)).toBe(0);
    const file = join(out, "LlmSecrets.template.json");
    expect(existsSync(file)).toBe(true);
    // `cdk deploy` shows these once the stack is up.
    const outputs = Object.keys((JSON.parse(await readFile(file, "utf8")) as { Outputs?: object }).Outputs ?? {});
    expect(outputs).toEqual(expect.arrayContaining(["FunctionUrl", "KeyEventsQueueUrl", "MasterKeySecretArn"]));
  }, 150_000);
});
