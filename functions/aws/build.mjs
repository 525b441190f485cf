// Bundles the Lambda handlers into dist/index.mjs (SPEC section 9): one ESM file, the AWS SDK and
// the other store libraries inside it (imported when their store opens), no other cloud's code.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleFunction } from "../../core/build.mjs";

const here = dirname(fileURLToPath(import.meta.url));

export function buildAws(outfile = join(here, "dist", "index.mjs"), metafile = false) {
  return bundleFunction(join(here, "src", "index.ts"), outfile, { metafile });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildAws(process.argv[2]);
