// The `llm-secrets` command's entry: what core/build.mjs bundles into dist/cli.mjs.
import { main } from "./cli";

process.exitCode = await main(process.argv.slice(2));
