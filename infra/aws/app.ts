// `npx cdk synth` in infra/aws: builds functions/aws/dist first (a clean clone has none), then the stack.
// Settings come from CDK context: -c accessMode=read_only -c hostedKeys=A,B -c listNames=true
// -c prefix=team/ -c entry=http-api -c refreshInterval=300 -c masterKeyVersionId=<the master key's VersionId>
// -c saltKeySecret=<name or ARN> -c saltKeyVersionId=<its VersionId>
// -c previousSaltKeysSecret=<name or ARN> -c previousSaltKeysVersionId=<its VersionId>.
// Each value is checked (context.ts): one the stack does not take stops synth, naming it.
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import * as lambda from "aws-cdk-lib/aws-lambda";
// @ts-expect-error: a plain ESM build script without types
import { buildAws } from "../../functions/aws/build.mjs";
import { propsFromContext } from "./context";
import { LlmSecretsStack } from "./stack";

const app = new App();
// Before the build: a refused value costs no bundle.
const props = propsFromContext((key) => app.node.tryGetContext(key));

const dist = join(import.meta.dirname, "../../functions/aws/dist");
await buildAws(join(dist, "index.mjs"));

new LlmSecretsStack(app, (app.node.tryGetContext("stackName") as string | undefined) ?? "LlmSecrets", {
  code: lambda.Code.fromAsset(dist),
  ...props,
});
app.synth();
