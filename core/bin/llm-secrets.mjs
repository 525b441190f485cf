#!/usr/bin/env node
// The `llm-secrets` command: runs the bundle that `npm run build` (and `npm ci`, through the
// root `prepare` script) writes to core/dist.
import { existsSync } from "node:fs";

const bundle = new URL("../dist/cli.mjs", import.meta.url);
if (!existsSync(bundle)) {
  process.stderr.write("llm-secrets: the CLI is not built yet; run `npm run build` in the repository\n");
  process.exit(1);
}
await import(bundle.href);
