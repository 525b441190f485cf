// What a bundle of the core pulls in, read from esbuild's metafile: the root loads no cloud SDK
// (a runtime pays only for the stores it ships), and a store's subpath brings its own SDK.
import { join } from "node:path";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";

const CLOUD_SDKS = /node_modules\/(@aws-sdk|@azure|@google-cloud|@smithy|google-gax|@grpc)\//;

/** esbuild's metafile of a bundle of `entry` (a path from the repository's root), written nowhere. */
async function metafileOf(entry: string, options: { splitting?: boolean; external?: string[] } = {}) {
  const result = await build({
    entryPoints: [join(import.meta.dirname, "../..", entry)],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    write: false,
    metafile: true,
    logLevel: "silent",
    outdir: "/nonexistent-out",
    ...options,
  });
  return result.metafile;
}

async function inputsOf(entry: string): Promise<string[]> {
  return Object.keys((await metafileOf(join("core/src", entry))).inputs);
}

describe("bundles of the core", () => {
  it("the root (index.ts) pulls in no @aws-sdk, @azure or @google-cloud module", async () => {
    const inputs = await inputsOf("index.ts");
    expect(inputs.some((i) => i.includes("src/runtime.ts"))).toBe(true);
    expect(inputs.filter((i) => CLOUD_SDKS.test(i))).toEqual([]);
  });

  it("the AWS store's subpath brings the Secrets Manager SDK, and only AWS's", async () => {
    const inputs = await inputsOf("stores/aws.ts");
    expect(inputs.some((i) => i.includes("node_modules/@aws-sdk/client-secrets-manager/"))).toBe(true);
    expect(inputs.filter((i) => /node_modules\/(@azure|@google-cloud|google-gax|@grpc)\//.test(i))).toEqual([]);
  });

  it("the Azure store's subpath brings Key Vault's SDK, and only Azure's", async () => {
    const inputs = await inputsOf("stores/azure.ts");
    expect(inputs.some((i) => i.includes("node_modules/@azure/keyvault-secrets/"))).toBe(true);
    expect(inputs.filter((i) => /node_modules\/(@aws-sdk|@smithy|@google-cloud|google-gax|@grpc)\//.test(i))).toEqual(
      [],
    );
  });
});

describe("what a cloud function loads at its cold start", () => {
  // Static imports only: dynamic ones (a store's SDK, undici for the HTTP stores) load when used.
  async function staticInputs(entry: string): Promise<string[]> {
    // The Azure host provides @azure/functions-core.
    const { inputs } = await metafileOf(entry, { splitting: true, external: ["@azure/functions-core"] });
    const root = Object.keys(inputs).find((i) => i.endsWith(entry)) as string;
    const seen = new Set<string>();
    const stack = [root];
    while (stack.length > 0) {
      const path = stack.pop() as string;
      if (seen.has(path)) continue;
      seen.add(path);
      for (const i of inputs[path]?.imports ?? []) if (i.kind !== "dynamic-import") stack.push(i.path);
    }
    return [...seen];
  }

  for (const entry of ["functions/aws/src/index.ts", "functions/azure/src/index.ts", "functions/gcp/src/index.ts"]) {
    it(`${entry} imports no undici and no store's client library before a store opens`, async () => {
      const inputs = await staticInputs(entry);
      expect(inputs.some((i) => i.includes("core/src/runtime.ts"))).toBe(true);
      expect(inputs.some((i) => i.includes("core/src/stores/cyberark.ts"))).toBe(true); // the stores are in
      expect(
        inputs.filter((i) =>
          /node_modules\/(undici|@aws-sdk|@azure\/keyvault|@google-cloud\/secret-manager)\//.test(i),
        ),
      ).toEqual([]);
    });
  }
});
