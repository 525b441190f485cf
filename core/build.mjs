// Bundles the `llm-secrets` CLI into one ESM file (fast start, no TypeScript at run time).
import { chmod } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));

/** Bundles `entry` (TypeScript source, resolved from core/) into one ESM file for node. */
export async function bundleCore(entry, outfile, banner = "") {
  await build({
    stdin: { contents: entry, resolveDir: here, sourcefile: "entry.ts", loader: "ts" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    logLevel: "warning",
    banner: {
      js: `${banner}import { createRequire as __createRequire } from "node:module"; const require = __createRequire(import.meta.url);`,
    },
  });
  return outfile;
}

export async function buildCli(outfile = join(here, "dist", "cli.mjs")) {
  const entry = 'import { main } from "./src/cli.ts"; process.exitCode = await main(process.argv.slice(2));';
  await bundleCore(entry, outfile, "#!/usr/bin/env node\n");
  await chmod(outfile, 0o755);
  return outfile;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildCli(process.argv[2]);
