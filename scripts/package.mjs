// `npm run package`: each cloud's deployable artifact, bundled afresh (into a private temp dir, so
// the zip, its notices and its lockfile come from one build, whatever else writes functions/*/dist).
//
// - dist/llm-secrets-aws-lambda.zip: index.mjs and chunks/ at the zip's root (handlers
//   `index.http` and `index.sqs`).
// - dist/llm-secrets-azure-functions.zip: host.json, a package.json (main dist/index.mjs, no
//   workspace dependency: the bundle holds everything but what the Functions worker provides) and
//   dist/.
// - dist/llm-secrets-gcp-functions.zip: a package.json naming only @google-cloud/functions-framework
//   (the platform installs it and runs it), a package-lock.json pinning what that install brings to
//   the root package-lock.json's resolution (the versions tested), and dist/.
//
// Every zip also holds LICENSE (the project's, Apache-2.0) and THIRD_PARTY_NOTICES: each npm package
// esbuild bundled into it (read from the build's metafile), with its version, its license and the
// license and notice files it ships; the GCP zip's also covers what its package-lock.json installs.
//
// The zips are reproducible: entries sorted, a fixed mtime, and the bundles' comments name sources
// relative to the working directory (the repository's root under `npm run package`).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { zipSync } from "fflate";
import { buildAws } from "../functions/aws/build.mjs";
import { buildAzure } from "../functions/azure/build.mjs";
import { buildGcp } from "../functions/gcp/build.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const FRAMEWORK = "@google-cloud/functions-framework";
const RULE = "=".repeat(80);

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

function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

function ownManifest(cloud) {
  return readJson(join(root, "functions", cloud, "package.json"));
}

function manifest(cloud, dependencies) {
  const own = ownManifest(cloud);
  const pkg = {
    name: own.name.replace("@llm-secrets/", "llm-secrets-"),
    version: own.version,
    private: true,
    type: "module",
    main: "dist/index.mjs",
    dependencies,
  };
  return pkg;
}

function jsonBytes(value) {
  return Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
}

// ---- Bundled packages: esbuild's metafile inputs ---------------------------------------------------

/**
 * The npm packages a build's metafile says went into the bundle: for each input under a
 * node_modules, the package directory it sits in (the last `node_modules/<name>` or
 * `node_modules/@scope/<name>` of its path, so a nested copy is its own package), as absolute paths.
 * Input paths are relative to esbuild's working directory, the process's.
 */
function bundledPackageDirs(metafile) {
  const dirs = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    if (/^[^/]*:/.test(input)) continue; // another namespace than files on disk: "(disabled):", none of its code
    const parts = resolve(process.cwd(), input).split("/");
    const at = parts.lastIndexOf("node_modules");
    if (at < 0 || at === parts.length - 1) continue; // our own sources (the workspaces)
    const length = parts[at + 1].startsWith("@") ? 2 : 1;
    dirs.add(parts.slice(0, at + 1 + length).join("/"));
  }
  return [...dirs];
}

/** A package.json's license, as an SPDX-like string (`license`, or the old `licenses` array). */
function licenseOf(pkg) {
  const one = (l) => (typeof l === "string" ? l : (l?.type ?? undefined));
  if (pkg.license !== undefined) return one(pkg.license) ?? JSON.stringify(pkg.license);
  if (Array.isArray(pkg.licenses)) return pkg.licenses.map(one).join(" OR ");
  return undefined;
}

const LICENSE_FILE = /^(licen[cs]e|copying|notice)([.\-_].*)?$/i;

/** A package's own license and notice files (LICENSE, LICENCE, COPYING, NOTICE, their .md/.txt/-MIT...). */
function licenseFiles(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && LICENSE_FILE.test(e.name))
    .map((e) => e.name)
    .sort()
    .map((name) => ({ name, text: readFileSync(join(dir, name), "utf8") }));
}

/** One package's entry: name, version, license, then its license files' text. */
function noticeOf({ name, version, license, dir }) {
  license ??= "no license";
  const lines = [RULE, `${name} ${version}`, `License: ${license}`];
  const files = dir ? licenseFiles(dir) : [];
  if (!files.some((file) => !/^notice/i.test(file.name))) {
    lines.push(
      "",
      `The package ships no license file (LICENSE, LICENCE, COPYING): its package.json declares ${license}.`,
    );
    if (license === "Apache-2.0") lines.push("The text of the Apache License, Version 2.0 is the one in LICENSE.");
  }
  for (const file of files) {
    lines.push("", `--- ${file.name} ---`, "", file.text.replace(/\r\n?/g, "\n").trimEnd());
  }
  return `${lines.join("\n")}\n\n`;
}

/** The packages in `dirs`, read from their package.json, one per name@version, sorted. */
function packagesIn(dirs) {
  const byId = new Map();
  for (const dir of [...dirs].sort()) {
    const pkg = readJson(join(dir, "package.json"));
    const id = `${pkg.name}@${pkg.version}`;
    if (pkg.name.startsWith("@llm-secrets/") || byId.has(id)) continue;
    byId.set(id, { name: pkg.name, version: pkg.version, license: licenseOf(pkg), dir });
  }
  return [...byId.values()].sort(byNameVersion);
}

/** Code-unit order (not the locale's), so that two builds on any machine write the same bytes. */
function byText(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byNameVersion(a, b) {
  return byText(a.name, b.name) || byText(a.version, b.version);
}

function notices(artifact, bundled, installed) {
  let text = `Third-party notices for ${artifact}

The llm-secrets code in this artifact is licensed under the Apache License, Version 2.0 (LICENSE).
Its JavaScript files also hold code of the ${bundled.length} npm packages below, bundled by esbuild. Each
is listed with its version, the license its package.json declares, and the text of the license and
notice files it ships.

`;
  for (const pkg of bundled) text += noticeOf(pkg);
  if (installed) {
    text += `${RULE}
${RULE}
Installed at deploy time

The ${installed.length} npm packages below are not in this artifact: the platform installs them from its
package.json and package-lock.json (npm ci, these exact versions) into node_modules, each with its own
license files. They are listed here, with the license files of the copies this was built and tested
with, for completeness.

`;
    for (const pkg of installed) text += noticeOf(pkg);
  }
  return Buffer.from(text);
}

// ---- The GCP lockfile: the root package-lock.json's resolution of functions-framework's closure ------

/** Where Node would find `name` from the lockfile location `from` (a key of `packages`), or undefined. */
function resolveIn(packages, from, name) {
  const parts = from === "" ? [] : from.split("/");
  for (let n = parts.length; n >= 0; n--) {
    if (n > 0 && parts[n - 1] === "node_modules") continue;
    const key = [...parts.slice(0, n), "node_modules", name].join("/");
    if (packages[key]) return key;
  }
  return undefined;
}

/** A lockfile entry's dependency edges: [name, optional, peer]. No dev dependencies. */
function edgesOf(entry) {
  const edges = [];
  for (const name of Object.keys(entry.dependencies ?? {})) edges.push([name, false, false]);
  for (const name of Object.keys(entry.optionalDependencies ?? {})) edges.push([name, true, false]);
  for (const name of Object.keys(entry.peerDependencies ?? {})) {
    edges.push([name, entry.peerDependenciesMeta?.[name]?.optional === true, true]);
  }
  return edges;
}

/** The lockfile fields a deploy-time `npm ci` uses; the dev/optional/peer flags are computed anew. */
const KEPT = [
  "name",
  "version",
  "resolved",
  "integrity",
  "inBundle",
  "license",
  "dependencies",
  "optionalDependencies",
  "peerDependencies",
  "peerDependenciesMeta",
  "bundleDependencies",
  "bin",
  "engines",
  "os",
  "cpu",
  "libc",
  "hasInstallScript",
];

/**
 * The package-lock.json (lockfileVersion 3) of the GCP artifact: `dependencies` of the workspace
 * `workspace` (a key of the root lockfile's packages), as the root package-lock.json resolves them
 * from there (Node's resolution: the workspace's own node_modules, then up to the root's), with
 * everything they bring. The tree keeps the root's layout, the workspace's own node_modules hoisted
 * to the top; every edge is checked to resolve in it to the very entry it resolved to in the root's.
 * Returns the lockfile and the closure's root lockfile keys (for the notices).
 */
function lockfileFor(rootLock, workspace, pkg) {
  const packages = rootLock.packages;
  const closure = new Map(); // root key -> [[name, optional, peer, root key of the target]]
  const edgeTargets = (from, edges) => {
    const out = [];
    for (const [name, optional, peer] of edges) {
      const key = resolveIn(packages, from, name);
      if (key === undefined) {
        if (optional) continue;
        throw new Error(`package-lock.json: ${name}, a dependency of ${from || "the root"}, is nowhere`);
      }
      if (packages[key].link) throw new Error(`package-lock.json: ${key} is a workspace link, not an npm package`);
      if (packages[key].dev) throw new Error(`package-lock.json: ${key} is a dev dependency, needed by ${from}`);
      out.push([name, optional, peer, key]);
    }
    return out;
  };
  const rootEdges = edgeTargets(
    workspace,
    Object.keys(pkg.dependencies).map((name) => [name, false, false]),
  );
  const queue = rootEdges.map((edge) => edge[3]);
  while (queue.length > 0) {
    const key = queue.shift();
    if (closure.has(key)) continue;
    const edges = edgeTargets(key, edgesOf(packages[key]));
    closure.set(key, edges);
    for (const edge of edges) queue.push(edge[3]);
  }

  // The new tree: the root's keys, the workspace's node_modules moved to the top.
  const prefix = `${workspace}/`;
  const placed = new Map();
  for (const key of closure.keys()) {
    const to = key.startsWith(prefix) ? key.slice(prefix.length) : key;
    if (!to.startsWith("node_modules/")) throw new Error(`package-lock.json: cannot place ${key}`);
    if ([...placed.values()].includes(to)) throw new Error(`package-lock.json: ${key} and another both at ${to}`);
    placed.set(key, to);
  }
  const tree = Object.fromEntries([...placed.values()].map((to) => [to, true]));
  const check = (from, [name, , , target]) => {
    if (resolveIn(tree, from, name) !== placed.get(target)) {
      throw new Error(`package-lock.json: ${name} from ${from || "the root"} would not resolve to ${target}'s copy`);
    }
  };
  for (const edge of rootEdges) check("", edge);
  for (const [key, edges] of closure) for (const edge of edges) check(placed.get(key), edge);

  // Flags, as npm computes them: optional if reached only through optional edges, peer likewise.
  const reach = (skip) => {
    const seen = new Set();
    const walk = (edges) => {
      for (const edge of edges) {
        if (skip(edge) || seen.has(edge[3])) continue;
        seen.add(edge[3]);
        walk(closure.get(edge[3]));
      }
    };
    walk(rootEdges);
    return seen;
  };
  const required = reach(([, optional]) => optional);
  const nonPeer = reach(([, , peer]) => peer);

  const entries = [];
  for (const [key, to] of placed) {
    const entry = {};
    for (const field of KEPT) if (packages[key][field] !== undefined) entry[field] = packages[key][field];
    if (!nonPeer.has(key)) entry.peer = true;
    if (!required.has(key)) entry.optional = true;
    entries.push([to, entry]);
  }
  entries.sort(([a], [b]) => byText(a, b));
  const lock = {
    name: pkg.name,
    version: pkg.version,
    lockfileVersion: 3,
    requires: true,
    packages: {
      "": { name: pkg.name, version: pkg.version, dependencies: pkg.dependencies },
      ...Object.fromEntries(entries),
    },
  };
  return { lock, closure: [...closure.keys()] };
}

/** The closure's packages, for the notices: name and version from the lockfile, files from root's copy. */
function installedPackages(rootLock, keys) {
  const byId = new Map();
  for (const key of [...keys].sort()) {
    const entry = rootLock.packages[key];
    const name = entry.name ?? key.slice(key.lastIndexOf("node_modules/") + "node_modules/".length);
    const dir = join(root, key);
    const copy = existsSync(join(dir, "package.json")) ? readJson(join(dir, "package.json")) : undefined;
    if (copy && copy.version !== entry.version) {
      throw new Error(`${key} is ${copy.version} in node_modules but ${entry.version} in package-lock.json: npm ci`);
    }
    const id = `${name}@${entry.version}`;
    if (byId.has(id)) continue;
    const license = entry.license ?? (copy ? licenseOf(copy) : undefined);
    byId.set(id, { name, version: entry.version, license, dir: copy ? dir : undefined });
  }
  return [...byId.values()].sort(byNameVersion);
}

// ---- The artifacts -------------------------------------------------------------------------------

export async function packageAll(outDir = join(root, "dist")) {
  await mkdir(outDir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), "llm-secrets-package-"));
  try {
    const [aws, azure, gcp] = await Promise.all(
      [buildAws, buildAzure, buildGcp].map(async (build, i) => {
        const dir = join(work, ["aws", "azure", "gcp"][i]);
        const metafile = await build(join(dir, "index.mjs"), true);
        return { files: filesOf(dir, ""), packages: packagesIn(bundledPackageDirs(metafile)) };
      }),
    );
    const license = readFileSync(join(root, "LICENSE"));
    const prefixed = (files, prefix) =>
      Object.fromEntries(Object.entries(files).map(([name, bytes]) => [`${prefix}${name}`, bytes]));

    const gcpPkg = manifest("gcp", { [FRAMEWORK]: ownManifest("gcp").dependencies[FRAMEWORK] });
    const rootLock = readJson(join(root, "package-lock.json"));
    const gcpLock = lockfileFor(rootLock, "functions/gcp", gcpPkg);

    const artifacts = {
      "llm-secrets-aws-lambda.zip": {
        LICENSE: license,
        THIRD_PARTY_NOTICES: notices("llm-secrets-aws-lambda.zip", aws.packages),
        ...aws.files,
      },
      "llm-secrets-azure-functions.zip": {
        "host.json": readFileSync(join(root, "functions", "azure", "host.json")),
        LICENSE: license,
        "package.json": jsonBytes(manifest("azure", {})),
        THIRD_PARTY_NOTICES: notices("llm-secrets-azure-functions.zip", azure.packages),
        ...prefixed(azure.files, "dist/"),
      },
      "llm-secrets-gcp-functions.zip": {
        LICENSE: license,
        "package-lock.json": jsonBytes(gcpLock.lock),
        "package.json": jsonBytes(gcpPkg),
        THIRD_PARTY_NOTICES: notices(
          "llm-secrets-gcp-functions.zip",
          gcp.packages,
          installedPackages(rootLock, gcpLock.closure),
        ),
        ...prefixed(gcp.files, "dist/"),
      },
    };
    const written = [];
    for (const [name, files] of Object.entries(artifacts)) {
      const path = join(outDir, name);
      const sorted = Object.fromEntries(Object.entries(files).sort(([a], [b]) => byText(a, b)));
      await writeFile(path, zipSync(sorted, { level: 9, mtime: new Date("2026-01-01T00:00:00Z") }));
      written.push(path);
      const size = (statSync(path).size / 1024).toFixed(0);
      process.stderr.write(`wrote ${relative(root, path)} (${Object.keys(files).length} files, ${size} KiB)\n`);
    }
    return written;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await packageAll(process.argv[2]);
