// Bundles the Azure Functions (v4 model) into dist/index.mjs, the package's `main`: Azure's SDKs
// inside, no other cloud's; `@azure/functions-core` stays external (the Functions worker provides it).
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleFunction } from "../../core/build.mjs";

const here = dirname(fileURLToPath(import.meta.url));

export function buildAzure(outfile = join(here, "dist", "index.mjs"), metafile = false) {
  return bundleFunction(join(here, "src", "index.ts"), outfile, { metafile, external: ["@azure/functions-core"] });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildAzure(process.argv[2]);
