// Bundles the `llm-secrets` CLI (ESM, no TypeScript at run time), and `bundleCore` for benches.
import { chmod, readdir, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));

/**
 * What CommonJS code inside an ESM bundle expects to find: `require` (a banner), and `__filename` /
 * `__dirname` (google-gax reads `__dirname` when it loads; reference/toolchain-node20.md). Those two
 * are defined as `import.meta.filename` / `import.meta.dirname` where code uses them as globals, not
 * declared in the banner: some ESM packages declare their own top-level `__dirname`, which a
 * declaration in the banner would clash with once esbuild puts them in one scope.
 */
const COMMONJS_SHIM =
  'import { createRequire as __createRequire } from "node:module"; const require = __createRequire(import.meta.url);';
const COMMONJS_GLOBALS = { __dirname: "import.meta.dirname", __filename: "import.meta.filename" };

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
    define: COMMONJS_GLOBALS,
    banner: {
      js: `${banner}${COMMONJS_SHIM}`,
    },
  });
  return outfile;
}

/**
 * Bundles `entryFile` into `outfile` (ESM for node, with the CommonJS shim) and, beside it,
 * `chunks/`: each store's client library is a chunk loaded when that store opens, so a start parses
 * only what it runs.
 */
async function bundleSplit(entryFile, outfile, { metafile = false, external = [], banner = "" } = {}) {
  const result = await build({
    entryPoints: { [basename(outfile, ".mjs")]: entryFile },
    bundle: true,
    splitting: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outdir: dirname(outfile),
    outExtension: { ".js": ".mjs" },
    chunkNames: "chunks/[name]-[hash]",
    external,
    metafile: true,
    logLevel: "warning",
    define: COMMONJS_GLOBALS,
    banner: { js: `${banner}${COMMONJS_SHIM}` },
  });
  // Chunk names carry a hash: an earlier build's would pile up beside these and be shipped. Only
  // files this build did not write go (a build running at the same time writes the same ones).
  const chunks = join(dirname(outfile), "chunks");
  const written = new Set(Object.keys(result.metafile.outputs).map((path) => basename(path)));
  const present = await readdir(chunks).catch(() => []);
  await Promise.all(present.filter((f) => !written.has(f)).map((f) => rm(join(chunks, f), { force: true })));
  return metafile ? result.metafile : undefined;
}

/**
 * Bundles a cloud function's entry (see `bundleSplit`). Deploy the directory. Returns esbuild's
 * metafile when asked (tests read which modules went in).
 */
export function bundleFunction(entryFile, outfile, { metafile = false, external = [] } = {}) {
  return bundleSplit(entryFile, outfile, { metafile, external });
}

/**
 * Bundles the CLI into `outfile` and its `chunks/` (see `bundleSplit`): a command on the file store
 * parses no cloud client library (`--version` in 0.16 s rather than 0.27 s with all of them in one
 * file). Ship the directory.
 */
export async function buildCli(outfile = join(here, "dist", "cli.mjs")) {
  await bundleSplit(join(here, "src", "main.ts"), outfile, { banner: "#!/usr/bin/env node\n" });
  await chmod(outfile, 0o755);
  return outfile;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildCli(process.argv[2]);
