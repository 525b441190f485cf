// Bundles the functions-framework targets into dist/index.mjs (the package's `main`): Google's
// client libraries inside, no other cloud's; functions-framework stays external (the platform's
// runner loads it from node_modules, and bundled in it would not see the targets registered).
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleFunction } from "../../core/build.mjs";

const here = dirname(fileURLToPath(import.meta.url));

export function buildGcp(outfile = join(here, "dist", "index.mjs"), metafile = false) {
  return bundleFunction(join(here, "src", "index.ts"), outfile, {
    metafile,
    external: ["@google-cloud/functions-framework"],
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildGcp(process.argv[2]);
