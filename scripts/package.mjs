// `npm run package`: each cloud's deployable artifact, from the bundles `npm run build` wrote.
//
// - dist/llm-secrets-aws-lambda.zip: index.mjs and chunks/ at the zip's root (handlers
//   `index.http` and `index.sqs`).
// - dist/llm-secrets-azure-functions.zip: host.json, a package.json (main dist/index.mjs, no
//   workspace dependency: the bundle holds everything but what the Functions worker provides) and
//   dist/.
// - dist/llm-secrets-gcp-functions.zip: a package.json naming only @google-cloud/functions-framework
//   (the platform installs it and runs it) and dist/.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { zipSync } from "fflate";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Every file under `dir`, as zip entries under `prefix`. */
function filesOf(dir, prefix) {
  const entries = {};
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) Object.assign(entries, filesOf(path, `${prefix}${entry.name}/`));
    else entries[`${prefix}${entry.name}`] = readFileSync(path);
  }
  return entries;
}

function bundle(cloud) {
  const dist = join(root, "functions", cloud, "dist");
  if (!statSync(join(dist, "index.mjs"), { throwIfNoEntry: false })) {
    throw new Error(`functions/${cloud}/dist/index.mjs is missing: run npm run build first`);
  }
  return dist;
}

function manifest(cloud, dependencies) {
  const own = JSON.parse(readFileSync(join(root, "functions", cloud, "package.json"), "utf8"));
  const pkg = {
    name: own.name.replace("@llm-secrets/", "llm-secrets-"),
    version: own.version,
    private: true,
    type: "module",
    main: "dist/index.mjs",
    dependencies,
  };
  return Buffer.from(`${JSON.stringify(pkg, null, 2)}\n`);
}

export async function packageAll(outDir = join(root, "dist")) {
  await mkdir(outDir, { recursive: true });
  const gcpOwn = JSON.parse(readFileSync(join(root, "functions", "gcp", "package.json"), "utf8"));
  const artifacts = {
    "llm-secrets-aws-lambda.zip": filesOf(bundle("aws"), ""),
    "llm-secrets-azure-functions.zip": {
      "host.json": readFileSync(join(root, "functions", "azure", "host.json")),
      "package.json": manifest("azure", {}),
      ...filesOf(bundle("azure"), "dist/"),
    },
    "llm-secrets-gcp-functions.zip": {
      "package.json": manifest("gcp", {
        "@google-cloud/functions-framework": gcpOwn.dependencies["@google-cloud/functions-framework"],
      }),
      ...filesOf(bundle("gcp"), "dist/"),
    },
  };
  const written = [];
  for (const [name, files] of Object.entries(artifacts)) {
    const path = join(outDir, name);
    await writeFile(path, zipSync(files, { level: 9, mtime: new Date("2026-01-01T00:00:00Z") }));
    written.push(path);
    process.stderr.write(`wrote ${relative(root, path)} (${Object.keys(files).length} files)\n`);
  }
  return written;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await packageAll(process.argv[2]);
