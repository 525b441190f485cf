// `npx cdk synth` in infra/aws: builds functions/aws/dist first (a clean clone has none), then the stack.
// Settings come from CDK context: -c accessMode=read_only -c hostedKeys=A,B -c listNames=true
// -c prefix=team/ -c entry=http-api -c refreshInterval=300 -c masterKeyVersionId=<the master key's VersionId>
// -c saltKeySecret=<name or ARN> -c saltKeyVersionId=<its VersionId>
// -c previousSaltKeysSecret=<name or ARN> -c previousSaltKeysVersionId=<its VersionId>.
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import * as lambda from "aws-cdk-lib/aws-lambda";
// @ts-expect-error: a plain ESM build script without types
import { buildAws } from "../../functions/aws/build.mjs";
import { type AccessMode, LlmSecretsStack } from "./stack";

const app = new App();
const context = (key: string) => app.node.tryGetContext(key) as string | undefined;
// The stack deploys Secrets Manager only: aws_kms reads ciphertexts from the environment and writes
// nothing, so its key events (and virtual keys) could not work. Refused, not silently ignored.
const storeKind = context("storeKind");
if (storeKind !== undefined && storeKind !== "aws_secret_manager") {
  throw new Error(`storeKind ${storeKind}: this stack deploys aws_secret_manager only (infra/README.md, AWS)`);
}

const dist = join(import.meta.dirname, "../../functions/aws/dist");
await buildAws(join(dist, "index.mjs"));

new LlmSecretsStack(app, context("stackName") ?? "LlmSecrets", {
  code: lambda.Code.fromAsset(dist),
  accessMode: context("accessMode") as AccessMode | undefined,
  hostedKeys: context("hostedKeys")?.split(",").filter(Boolean),
  prefix: context("prefix"),
  entry: context("entry") as "function-url" | "http-api" | undefined,
  listNames: context("listNames") === "true",
  refreshIntervalSeconds: context("refreshInterval") === undefined ? undefined : Number(context("refreshInterval")),
  masterKeyVersionId: context("masterKeyVersionId"),
  saltKeySecret: context("saltKeySecret"),
  saltKeyVersionId: context("saltKeyVersionId"),
  previousSaltKeysSecret: context("previousSaltKeysSecret"),
  previousSaltKeysVersionId: context("previousSaltKeysVersionId"),
});
app.synth();
