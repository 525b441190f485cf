// `npm run package`: each cloud's artifact holds what its platform loads, and nothing of the
// workspace: the Lambda zip's handlers import from the zip's own files alone.

import { readdirSync, readFileSync } from "node:fs";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
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

describe("npm run package", () => {
  // Built and packaged once, for the tests of what the zips hold and of what they do on Node 22.
  let out: string;
  let written: string[];
  beforeAll(async () => {
    await Promise.all([buildAws(), buildAzure(), buildGcp()]);
    out = await tempDir();
    written = await packageAll(out);
  }, 60_000);

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
