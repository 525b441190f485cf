// The `llm-secrets` command's entry: what core/build.mjs bundles into dist/cli.mjs.
import { main } from "./cli";
import { outputFailed } from "./log";

// Under Node 20 the AWS SDK prints a seven-line notice on every command that opens an AWS store
// (its releases from January 2027 need Node 22), before the command's own one line: README says
// it once instead. A value set by the user is kept.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

const code = await main(process.argv.slice(2));
// Output that could not be written (stdout's reader gone) is a failure, whatever the command says.
process.exitCode = code === 0 && outputFailed() ? 1 : code;
