// `npm run package`: each cloud's artifact holds what its platform loads, and nothing of the
// workspace: the Lambda zip's handlers import from the zip's own files alone. Each carries the
// project's LICENSE and the notices of every npm package bundled in it, and the GCP zip a lockfile
// that installs what the root's package-lock.json resolved (the versions tested), nothing newer.

import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import type { Metafile } from "esbuild";
import { unzipSync } from "fflate";
import { beforeAll, describe, expect, it } from "vitest";
// @ts-expect-error: a plain ESM build script without types
import { buildAws } from "../../functions/aws/build.mjs";
// @ts-expect-error: a plain ESM build script without types
import { buildAzure } from "../../functions/azure/build.mjs";
// @ts-expect-error: a plain ESM build script without types
import { buildGcp } from "../../functions/gcp/build.mjs";
// @ts-expect-error: a plain ESM script without types
import { packageAll } from "../../scripts/package.mjs";
import { cleanEnv, newKey, node22, runProcess, secretValue, tempDir } from "../helpers";

const ROOT = join(import.meta.dirname, "../..");
const NODE22 = node22();
const FF = "@google-cloud/functions-framework";
const ZIPS = ["llm-secrets-aws-lambda.zip", "llm-secrets-azure-functions.zip", "llm-secrets-gcp-functions.zip"];

// The canonical text of the Apache License 2.0 (apache.org's LICENSE-2.0.txt, 11,358 bytes).
const APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30";

interface LockEntry {
  version?: string;
  dev?: boolean;
  link?: boolean;
  dependencies?: Record<string, string>;
}
type Lock = { lockfileVersion: number; packages: Record<string, LockEntry> };
interface Manifest {
  name: string;
  version: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, "utf8")) as T;
const text = (bytes: Uint8Array | undefined) => Buffer.from(bytes ?? new Uint8Array()).toString("utf8");

/** The npm packages a bundle holds, by its metafile: name@version of each input's (innermost) package. */
function bundledPackages(metafile: Metafile): Map<string, string> {
  const byId = new Map<string, string>(); // name@version -> package dir
  for (const input of Object.keys(metafile.inputs)) {
    const parts = resolve(input).split("/");
    const at = parts.lastIndexOf("node_modules");
    if (at < 0) continue;
    const dir = parts.slice(0, at + (parts[at + 1]?.startsWith("@") ? 3 : 2)).join("/");
    const pkg = readJson<Manifest>(join(dir, "package.json"));
    byId.set(`${pkg.name}@${pkg.version}`, dir);
  }
  return byId;
}

/** The packages THIRD_PARTY_NOTICES names ("name version" under a rule, then "License: ..."), as name@version. */
function noticed(notices: string): string[] {
  return [...notices.matchAll(/^={80}\n(\S+) (\S+)\nLicense: \S/gm)].map((m) => `${m[1]}@${m[2]}`);
}

/** name@version ids sorted as the notices list them: by name, then version. */
function sortedIds(ids: Iterable<string>): string[] {
  const split = (id: string) => [id.slice(0, id.lastIndexOf("@")), id.slice(id.lastIndexOf("@") + 1)] as const;
  const order = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return [...new Set(ids)].sort((a, b) => order(split(a)[0], split(b)[0]) || order(split(a)[1], split(b)[1]));
}

/** Node's resolution of `name` from `dir` (absolute), inside `top`: the package dir, or undefined. */
function resolveOnDisk(top: string, dir: string, name: string): string | undefined {
  for (let d = dir; d.startsWith(top); d = dirname(d)) {
    if (d.endsWith("/node_modules")) continue;
    if (existsSync(join(d, "node_modules", name, "package.json"))) return join(d, "node_modules", name);
  }
  return undefined;
}

/** Node's resolution of `name` from the lockfile location `from` (a key of `packages`). */
function resolveInLock(packages: Lock["packages"], from: string, name: string): string | undefined {
  const parts = from === "" ? [] : from.split("/");
  for (let n = parts.length; n >= 0; n--) {
    if (n > 0 && parts[n - 1] === "node_modules") continue;
    const key = [...parts.slice(0, n), "node_modules", name].join("/");
    if (packages[key]) return key;
  }
  return undefined;
}

/** Every package dir under `dir`'s node_modules, nested ones included. */
function installedDirs(dir: string): string[] {
  const modules = join(dir, "node_modules");
  if (!existsSync(modules)) return [];
  const found: string[] = [];
  for (const entry of readdirSync(modules, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name.startsWith(".")) continue;
    const names = entry.name.startsWith("@")
      ? readdirSync(join(modules, entry.name)).map((n) => `${entry.name}/${n}`)
      : [entry.name];
    for (const name of names) {
      if (!existsSync(join(modules, name, "package.json"))) continue;
      found.push(join(modules, name), ...installedDirs(join(modules, name)));
    }
  }
  return found;
}

describe("npm run package", () => {
  // Built and packaged once, for the tests of what the zips hold and of what they do on Node 22;
  // each bundle also built on its own with esbuild's metafile, to know which packages it holds, and
  // packaged a second time at once (from the same sources, whatever else edits the tree later).
  let out: string;
  let again: string;
  let written: string[];
  let metafiles: Record<string, Metafile>;
  beforeAll(async () => {
    const builds = await tempDir();
    const [aws, azure, gcp] = await Promise.all([
      buildAws(join(builds, "aws", "index.mjs"), true),
      buildAzure(join(builds, "azure", "index.mjs"), true),
      buildGcp(join(builds, "gcp", "index.mjs"), true),
    ]);
    metafiles = { [ZIPS[0] as string]: aws, [ZIPS[1] as string]: azure, [ZIPS[2] as string]: gcp };
    [out, again] = await Promise.all([tempDir(), tempDir()]);
    [written] = await Promise.all([packageAll(out), packageAll(again)]);
  }, 120_000);

  it("zips each cloud's bundle with what its platform needs and no workspace dependency", async () => {
    const zip = (name: string) => unzipSync(readFileSync(join(out, name)));
    expect(written.map((p) => p.slice(out.length + 1)).sort()).toEqual([
      "llm-secrets-aws-lambda.zip",
      "llm-secrets-azure-functions.zip",
      "llm-secrets-gcp-functions.zip",
    ]);

    // Lambda: index.mjs at the root, its chunks beside it; unpacked alone, it loads.
    const aws = zip("llm-secrets-aws-lambda.zip");
    expect(Object.keys(aws)).toContain("index.mjs");
    const unpacked = await tempDir();
    for (const [name, bytes] of Object.entries(aws)) {
      await mkdir(dirname(join(unpacked, name)), { recursive: true });
      await writeFile(join(unpacked, name), bytes);
    }
    const handlers = (await import(join(unpacked, "index.mjs"))) as Record<string, unknown>;
    expect([typeof handlers.http, typeof handlers.sqs]).toEqual(["function", "function"]);

    const azure = zip("llm-secrets-azure-functions.zip");
    expect(Object.keys(azure)).toEqual(expect.arrayContaining(["host.json", "package.json", "dist/index.mjs"]));
    const azurePkg = JSON.parse(Buffer.from(azure["package.json"] as Uint8Array).toString());
    expect(azurePkg).toMatchObject({ main: "dist/index.mjs", type: "module", dependencies: {} });
    // functions/azure/host.json, byte for byte. Application Insights is the audit trail
    // (infra/README.md): the host's adaptive sampling (on by default, about 20 items a second) may
    // drop no trace (the log and audit lines) nor request.
    const hostJson = Buffer.from(azure["host.json"] as Uint8Array);
    expect(hostJson.equals(readFileSync(join(ROOT, "functions/azure/host.json")))).toBe(true);
    const sampling = JSON.parse(hostJson.toString()).logging?.applicationInsights?.samplingSettings;
    expect(sampling?.isEnabled === false || String(sampling?.excludedTypes).split(";").includes("Trace")).toBe(true);
    expect(sampling?.isEnabled === false || String(sampling?.excludedTypes).split(";").includes("Request")).toBe(true);

    const gcp = zip("llm-secrets-gcp-functions.zip");
    const gcpPkg = JSON.parse(Buffer.from(gcp["package.json"] as Uint8Array).toString());
    expect(gcpPkg.main).toBe("dist/index.mjs");
    expect(Object.keys(gcpPkg.dependencies)).toEqual(["@google-cloud/functions-framework"]);
    for (const pkg of [azurePkg, gcpPkg]) expect(JSON.stringify(pkg)).not.toContain("@llm-secrets/");
  });

  // The functions run on Node 22 in every cloud: the packaged bundles load there, and the Lambda
  // zip answers a request there, its handler called as Lambda's runtime calls it.
  it.skipIf(!NODE22)(
    "the packaged bundles load on Node 22, and the Lambda zip answers there",
    async () => {
      const unpacked = await tempDir();
      for (const name of ["aws-lambda", "azure-functions", "gcp-functions"]) {
        for (const [file, bytes] of Object.entries(unzipSync(readFileSync(join(out, `llm-secrets-${name}.zip`))))) {
          await mkdir(dirname(join(unpacked, name, file)), { recursive: true });
          await writeFile(join(unpacked, name, file), bytes);
        }
      }
      // Google installs the zip's package.json dependencies (functions-framework): ours stand in.
      await symlink(join(ROOT, "node_modules"), join(unpacked, "gcp-functions", "node_modules"));
      const masterKey = newKey();
      const value = secretValue("node22");
      const script = join(import.meta.dirname, "../fixtures/bundles-on-node.mjs");
      const result = await runProcess(NODE22 as string, ["--trace-warnings", script, unpacked], {
        env: cleanEnv({
          LITELLM_MASTER_KEY: masterKey,
          OPENAI_API_KEY: value,
          LLM_SECRETS_CONFIG:
            'general_settings:\n  key_management_system: local\n  key_management_settings:\n    hosted_keys: ["OPENAI_API_KEY"]\n',
          LLM_SECRETS_AUDIT: "off",
        }),
      });
      expect(result.code, result.stderr).toBe(0);
      const { version, exports, chunks, answers } = JSON.parse(
        result.stdout.slice(result.stdout.indexOf('{"version"')),
      );
      expect(version).toMatch(/^v22\./);
      expect(chunks).toBeGreaterThan(10); // the cloud SDKs', each loaded
      expect(exports[0]).toEqual(expect.arrayContaining(["http", "sqs"]));
      expect(exports[1].length).toBeGreaterThan(0);
      expect(exports[2]).toEqual(expect.arrayContaining(["http", "keyEvents"]));
      expect(answers.map((a: { statusCode: number }) => a.statusCode)).toEqual([200, 200]);
      expect(JSON.parse(answers[1].body)).toMatchObject({ name: "OPENAI_API_KEY", value });
      // Nothing deprecated or warned of on the way (the Azure library's test-mode notice aside).
      expect(result.stderr).not.toMatch(/DeprecationWarning|ExperimentalWarning|\(node:\d+\) Warning/);
    },
    90_000,
  );

  // And the functions' own tests (the adapters, Azurite, functions-framework's express) run on it:
  // Node 22's zlib, for one, decodes zstd bodies that Node 20 answers 415 (gcp.test.ts).
  it.skipIf(!NODE22)(
    "the functions' own tests pass on Node 22",
    async () => {
      const { LLM_SECRETS_NODE22: _, LLM_SECRETS_REQUIRE_NODE22: __, ...env } = process.env;
      const vitest = join(ROOT, "node_modules/vitest/vitest.mjs");
      const args = [vitest, "run", "test/functions", "--exclude", "test/functions/package.test.ts"];
      const result = await runProcess(NODE22 as string, args, {
        env: {
          ...(env as Record<string, string>),
          PATH: `${dirname(NODE22 as string)}:${env.PATH ?? ""}`,
          NO_COLOR: "1",
        },
        cwd: ROOT,
      });
      expect(result.code, result.stdout.slice(-4_000)).toBe(0);
      expect(result.stdout).toMatch(/Test Files\s+\d+ passed \(\d+\)/); // every file ran, none failed or skipped
    },
    240_000,
  );

  it("each zip carries the project's LICENSE and THIRD_PARTY_NOTICES naming every package bundled in it", () => {
    const license = readFileSync(join(ROOT, "LICENSE"));
    expect(createHash("sha256").update(license).digest("hex")).toBe(APACHE_2_0_SHA256);
    const rootPkg = readJson<{ license: string }>(join(ROOT, "package.json"));
    expect(rootPkg.license).toBe("Apache-2.0");
    const expectedLicenses: Record<string, [string, string][]> = {
      "llm-secrets-aws-lambda.zip": [
        ["undici", "MIT"],
        ["tweetnacl", "Unlicense"],
        ["@aws-sdk/client-kms", "Apache-2.0"],
      ],
      "llm-secrets-azure-functions.zip": [
        ["@azure/identity", "MIT"],
        ["yaml", "ISC"],
        ["@azure/functions", "MIT"],
      ],
      "llm-secrets-gcp-functions.zip": [
        ["protobufjs", "BSD-3-Clause"],
        ["google-gax", "Apache-2.0"],
        ["hono", "MIT"],
      ],
    };
    for (const name of ZIPS) {
      const files = unzipSync(readFileSync(join(out, name)));
      expect(Buffer.from(files.LICENSE ?? new Uint8Array()).equals(license), `${name}: LICENSE`).toBe(true);
      // The bundled part (the GCP zip's deploy-time installs come after it, tested below).
      const notices = text(files.THIRD_PARTY_NOTICES).split("\nInstalled at deploy time\n")[0] as string;
      const bundled = bundledPackages(metafiles[name] as Metafile);
      expect(bundled.size, name).toBeGreaterThan(25);
      // Every package of the bundle, once each, sorted, and nothing else.
      const ids = [...bundled.keys()].filter((id) => !id.startsWith("@llm-secrets/"));
      expect(noticed(notices), name).toEqual(sortedIds(ids));
      // With its license files' text.
      for (const [id, dir] of bundled) {
        for (const file of readdirSync(dir).filter((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f))) {
          const body = readFileSync(join(dir, file), "utf8").replace(/\r\n?/g, "\n").trim();
          expect(notices.includes(body), `${name}: ${id}'s ${file}`).toBe(true);
        }
      }
      for (const [pkg, spdx] of expectedLicenses[name] ?? []) {
        expect(notices, name).toMatch(new RegExp(`^${pkg} \\S+\\nLicense: ${spdx}$`, "m"));
      }
    }
  });

  it("the GCP zip's package-lock.json installs functions-framework with the root lockfile's versions, nothing newer", async () => {
    const files = unzipSync(readFileSync(join(out, "llm-secrets-gcp-functions.zip")));
    const dir = await tempDir();
    for (const [file, bytes] of Object.entries(files)) {
      await mkdir(dirname(join(dir, file)), { recursive: true });
      await writeFile(join(dir, file), bytes);
    }
    const lock = readJson<Lock>(join(dir, "package-lock.json"));
    expect(lock.lockfileVersion).toBe(3);
    expect(lock.packages[""]?.dependencies).toEqual(readJson<Manifest>(join(dir, "package.json")).dependencies);
    expect(Object.values(lock.packages).filter((entry) => entry.dev || entry.link)).toEqual([]);

    // npm ci: from npm's cache (the root was installed from it: the one `npm test` names, else
    // HOME's), the lockfile as it is or a failure.
    const cache = process.env.npm_config_cache;
    const ci = await runProcess("npm", ["ci", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], {
      env: cleanEnv(cache ? { npm_config_cache: cache } : {}),
      cwd: dir,
    });
    expect(ci.code, ci.stderr).toBe(0);
    expect(existsSync(join(dir, "node_modules/@google-cloud/functions-framework/package.json"))).toBe(true);

    // Walked from functions-framework as Node resolves each package's dependencies, on disk and in
    // the root lockfile from functions/gcp: every installed package is the version the root resolved.
    const root = readJson<Lock>(join(ROOT, "package-lock.json")).packages;
    const visited = new Map<string, string>(); // installed dir -> root lockfile key
    const framework = resolveInLock(root, "functions/gcp", FF);
    const pending: [string, string | undefined][] = [[join(dir, "node_modules", FF), framework]];
    const mismatches: string[] = [];
    while (pending.length > 0) {
      const [installed, key] = pending.pop() as [string, string | undefined];
      if (visited.has(installed)) continue;
      const pkg = readJson<Manifest>(join(installed, "package.json"));
      const where = relative(dir, installed);
      if (key === undefined || root[key]?.version !== pkg.version) {
        mismatches.push(`${where} is ${pkg.version}, the root lockfile's ${key} ${key && root[key]?.version}`);
        continue;
      }
      visited.set(installed, key);
      const deps = Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies });
      for (const name of deps) {
        const next = resolveOnDisk(dir, installed, name);
        const nextKey = resolveInLock(root, key, name);
        if (next === undefined) {
          if (nextKey !== undefined && !(name in (pkg.optionalDependencies ?? {})))
            mismatches.push(`${where}: no ${name}`);
          continue;
        }
        pending.push([next, nextKey]);
      }
    }
    expect(mismatches).toEqual([]);
    // And nothing installed that this walk did not reach.
    expect(installedDirs(dir).filter((d) => !visited.has(d))).toEqual([]);
    expect(visited.size).toBeGreaterThan(100);
    // express and body-parser, on the request path, are the root's, not whatever is newest.
    for (const name of ["express", "body-parser"]) {
      const installed = readJson<Manifest>(
        join(resolveOnDisk(dir, join(dir, `node_modules/${FF}`), name) ?? "", "package.json"),
      );
      expect(installed.version).toBe(root[resolveInLock(root, framework ?? "", name) ?? ""]?.version);
    }

    // The notices name each installed package as well, after the bundled ones.
    const installedIds = [...visited.keys()].map((d) => {
      const pkg = readJson<Manifest>(join(d, "package.json"));
      return `${pkg.name}@${pkg.version}`;
    });
    const notices = text(files.THIRD_PARTY_NOTICES).split("\nInstalled at deploy time\n")[1] ?? "";
    expect(noticed(notices)).toEqual(sortedIds(installedIds));
  }, 180_000);

  it("two package runs give the same zips, byte for byte", () => {
    const sha = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
    for (const name of ZIPS) expect(sha(join(again, name)), name).toBe(sha(join(out, name)));
  });

  it("a build leaves only its own chunks: the last build's are gone, not shipped with it", async () => {
    const outfile = join(await tempDir(), "index.mjs");
    await mkdir(join(dirname(outfile), "chunks"), { recursive: true });
    await writeFile(join(dirname(outfile), "chunks", "stale-ABCDEFGH.mjs"), "export {};\n");
    await buildAws(outfile);
    const chunks = readdirSync(join(dirname(outfile), "chunks"));
    expect(chunks).not.toContain("stale-ABCDEFGH.mjs");
    expect(chunks.length).toBeGreaterThan(0);
  }, 60_000);
});
