// `npx cdk synth` in infra/aws: builds functions/aws/dist first (a clean clone has none), then the stack.
// Settings come from CDK context: -c storeKind=aws_kms -c accessMode=read_only -c hostedKeys=A,B -c listNames=true
// -c prefix=team/ -c entry=http-api -c refreshInterval=300 -c masterKeyVersionId=<the master key's VersionId>.
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import * as lambda from "aws-cdk-lib/aws-lambda";
// @ts-expect-error: a plain ESM build script without types
import { buildAws } from "../../functions/aws/build.mjs";
import { type AccessMode, LlmSecretsStack } from "./stack";

const dist = join(import.meta.dirname, "../../functions/aws/dist");
await buildAws(join(dist, "index.mjs"));

const app = new App();
const context = (key: string) => app.node.tryGetContext(key) as string | undefined;
new LlmSecretsStack(app, context("stackName") ?? "LlmSecrets", {
  code: lambda.Code.fromAsset(dist),
  storeKind: context("storeKind") as "aws_secret_manager" | "aws_kms" | undefined,
  accessMode: context("accessMode") as AccessMode | undefined,
  hostedKeys: context("hostedKeys")?.split(",").filter(Boolean),
  prefix: context("prefix"),
  entry: context("entry") as "function-url" | "http-api" | undefined,
  listNames: context("listNames") === "true",
  refreshIntervalSeconds: context("refreshInterval") === undefined ? undefined : Number(context("refreshInterval")),
  masterKeyVersionId: context("masterKeyVersionId"),
});
app.synth();
