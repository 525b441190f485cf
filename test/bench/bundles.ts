/**
 * Bench section `bundles`: each cloud's function bundle (what `npm run build` ships: the entry and
 * its chunks) next to a reference handler bundled the same way in the same run: its size, and its
 * cold import time (a fresh `node` process importing the entry, median of 9).
 *
 * - AWS, target <= 1.1x: a handler with the same capabilities written with the usual tools
 *   (Powertools' `getSecret`, a KMS `Decrypt` client and `hono/aws-lambda`); Powertools'
 *   `getSecret` alone is printed beside it, with no target.
 * - Azure and Google: a bare SDK handler (the secret client and the platform's registration),
 *   printed with no target.
 * - What each store every cloud ships (`PORTABLE_STORES`: the files `core/src/stores/portable.ts`
 *   imports, so a store added there is measured too) adds to each bundle: the bytes of the modules
 *   only it brings in (read from esbuild's metafile: reachable from the entry, and no longer
 *   reachable without the store's file), against the 20 KiB a store may cost to ship in every
 *   cloud's bundle (issue 12: the stores LiteLLM added, shipped everywhere if each stays under it).
 *   `vault` and `local` are shipped whatever they cost (HashiCorp Vault is one of the four stores
 *   the product is for; `local` is the process environment): printed beside them as information.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
// @ts-expect-error: a plain ESM build script without types
import { bundleFunction } from "../../core/build.mjs";
// @ts-expect-error: a plain ESM build script without types
import { buildAws } from "../../functions/aws/build.mjs";
// @ts-expect-error: a plain ESM build script without types
import { buildAzure } from "../../functions/azure/build.mjs";
// @ts-expect-error: a plain ESM build script without types
import { buildGcp } from "../../functions/gcp/build.mjs";
import { check, median, type Reporter } from "./report";

const RUNS = 9;
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");

const REFERENCES = {
  "aws-same": `
import { getSecret } from "@aws-lambda-powertools/parameters/secrets";
import { KMSClient, DecryptCommand } from "@aws-sdk/client-kms";
import { Hono } from "hono";
import { handle } from "hono/aws-lambda";
const kms = new KMSClient({});
const app = new Hono();
app.get("/v1/secrets/:name", async (c) => c.json({ value: await getSecret(c.req.param("name")) }));
app.post("/v1/decrypt", async (c) => c.json({ value: (await kms.send(new DecryptCommand({ CiphertextBlob: new Uint8Array() }))).Plaintext }));
export const http = handle(app);
`,
  "aws-powertools": `
import { getSecret } from "@aws-lambda-powertools/parameters/secrets";
export const handler = async (event) => ({ statusCode: 200, body: JSON.stringify({ value: await getSecret(event.name) }) });
`,
  "azure-bare": `
import { app } from "@azure/functions";
import { DefaultAzureCredential } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";
const client = new SecretClient(process.env.AZURE_KEY_VAULT_URI ?? "https://example.vault.azure.net", new DefaultAzureCredential());
app.http("secrets", { methods: ["GET"], route: "{*path}", handler: async (req) => ({ jsonBody: await client.getSecret(req.params.path) }) });
`,
  "gcp-bare": `
import * as functions from "@google-cloud/functions-framework";
import { SecretManagerServiceClient } from "@google-cloud/secret-manager";
const client = new SecretManagerServiceClient();
functions.http("http", async (req, res) => { const [v] = await client.accessSecretVersion({ name: req.path }); res.json({ value: String(v.payload?.data ?? "") }); });
`,
} as const;

/** Median milliseconds for a fresh node process to import `file` (the process's own start excluded). */
function coldImport(file: string): number {
  const script = `const t = process.hrtime.bigint(); await import(${JSON.stringify(file)}); process.stdout.write(String(Number(process.hrtime.bigint() - t) / 1e6));`;
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
      cwd: ROOT,
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "", AWS_REGION: "us-east-1" },
    });
    check(run.status === 0, `importing ${file} failed: ${run.stderr.slice(-400)}`);
    times.push(Number(run.stdout));
  }
  return median(times);
}

/** The list of the stores without a cloud SDK that every cloud bundle ships, and what each may cost. */
const PORTABLE = "core/src/stores/portable.ts";
const STORE_BUDGET_KIB = 20;
/** Portable stores shipped whatever they cost (see the header): their rows are information. */
const SHIPPED_REGARDLESS: ReadonlySet<string> = new Set(["vault", "local"]);

interface Metafile {
  inputs: Record<string, { imports: { path: string }[] }>;
  outputs: Record<string, { inputs: Record<string, { bytesInOutput: number }>; entryPoint?: string }>;
}

/**
 * The output bytes of the modules that only `file` brings into a bundle: those reachable from the
 * entry points (static and dynamic imports) that are no longer reachable when `file` is left out.
 */
function exclusiveBytes(metafile: Metafile, file: string): number {
  const entries = Object.values(metafile.outputs).flatMap((o) => (o.entryPoint ? [o.entryPoint] : []));
  const reach = (skip?: string) => {
    const seen = new Set<string>();
    const stack = entries.filter((e) => e !== skip);
    while (stack.length > 0) {
      const path = stack.pop() as string;
      if (seen.has(path)) continue;
      seen.add(path);
      for (const i of metafile.inputs[path]?.imports ?? [])
        if (i.path !== skip && !seen.has(i.path)) stack.push(i.path);
    }
    return seen;
  };
  const without = reach(file);
  const only = [...reach()].filter((path) => !without.has(path));
  let bytes = 0;
  for (const output of Object.values(metafile.outputs)) {
    for (const path of only) bytes += output.inputs[path]?.bytesInOutput ?? 0;
  }
  return bytes;
}

/** The store files `portable.ts` imports in this bundle (its `PORTABLE_STORES`). */
function portableStores(metafile: Metafile, cloud: string): string[] {
  const stores = (metafile.inputs[PORTABLE]?.imports ?? []).map((i) => i.path);
  check(stores.length > 0, `${PORTABLE} and its stores are not in the ${cloud} bundle`);
  return stores;
}

/** Bytes of every file under `dir`: what is deployed. */
function sizeOf(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    total += entry.isDirectory() ? sizeOf(path) : statSync(path).size;
  }
  return total;
}

export default async function bundlesSection(report: Reporter): Promise<void> {
  report.section("bundles: each cloud's function bundle against a reference handler, size and cold import");
  const work = await mkdtemp(join(ROOT, "node_modules", ".llm-secrets-bench-"));
  try {
    const ours = {
      aws: join(work, "aws", "index.mjs"),
      azure: join(work, "azure", "index.mjs"),
      gcp: join(work, "gcp", "index.mjs"),
    };
    const metafiles = {
      aws: await buildAws(ours.aws, true),
      azure: await buildAzure(ours.azure, true),
      gcp: await buildGcp(ours.gcp, true),
    };
    const references: Record<string, string> = {};
    for (const [name, source] of Object.entries(REFERENCES)) {
      const entry = join(work, `${name}.mjs`);
      await writeFile(entry, source);
      references[name] = join(work, "ref", name, "index.mjs");
      await bundleFunction(entry, references[name], {
        external:
          name === "azure-bare"
            ? ["@azure/functions-core"]
            : name === "gcp-bare"
              ? ["@google-cloud/functions-framework"]
              : [],
      });
    }
    const rows: [string, string, string, string][] = [
      ["aws", ours.aws, references["aws-same"] as string, "<= 1.1"],
      ["aws vs Powertools getSecret alone", ours.aws, references["aws-powertools"] as string, "info"],
      ["azure vs a bare SDK handler", ours.azure, references["azure-bare"] as string, "info"],
      ["google vs a bare SDK handler", ours.gcp, references["gcp-bare"] as string, "info"],
    ];
    for (const [name, ourFile, refFile, target] of rows) {
      report.row({
        name: `${name}: cold import`,
        ours: Math.round(coldImport(ourFile) * 10) / 10,
        reference: Math.round(coldImport(refFile) * 10) / 10,
        unit: "ms",
        target: name === "aws" ? target : "info",
      });
      report.row({
        name: `${name}: bundle size (entry and chunks)`,
        ours: Math.round(sizeOf(dirname(ourFile)) / 1024),
        reference: Math.round(sizeOf(dirname(refFile)) / 1024),
        unit: "KiB",
        target: "info",
      });
    }
    for (const [cloud, metafile] of Object.entries(metafiles)) {
      for (const file of portableStores(metafile as Metafile, cloud)) {
        const store = basename(file, ".ts");
        const bytes = exclusiveBytes(metafile as Metafile, file);
        check(bytes > 0, `the ${store} store is not in the ${cloud} bundle`);
        report.row({
          name: `${cloud} bundle: what the ${store} store adds (reference: the 20 KiB budget)`,
          ours: Math.round((bytes / 1024) * 10) / 10,
          reference: STORE_BUDGET_KIB,
          unit: "KiB",
          target: SHIPPED_REGARDLESS.has(store) ? "info" : "<= 1",
        });
      }
    }
    report.note(
      `Cold import: median of ${RUNS} fresh node processes timing await import() of the bundle (unminified esbuild ESM, the CommonJS shim included). The AWS reference does what ours does on the hot path: getSecret, a KMS client, hono/aws-lambda.`,
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
