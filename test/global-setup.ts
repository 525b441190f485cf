// Builds the CLI bundle once, into a temp dir of its own (so `npm start` rebuilding core/dist
// during the README test cannot race tests that spawn the CLI), makes the fakes' CA (fakes/pki.ts),
// and the run's temp root, under which every test file's temp dirs go (helpers.ts `tempDir`).
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { chmod, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
// @ts-expect-error: a plain ESM build script without types
import { buildCli } from "../core/build.mjs";
import { makeTestPki, type TestPki } from "./fakes/pki";

declare module "vitest" {
  export interface ProvidedContext {
    cliPath: string;
    testPki: TestPki;
    testTmp: string;
  }
}

/**
 * The host's own cloud and secret-store settings, which the clients under test read from the
 * environment: a developer's `AWS_PROFILE` made the AWS SDK skip the fakes' credentials (its chain
 * ignores AWS_ACCESS_KEY_ID once a profile is named), and every AWS test failed. Each test sets what
 * it needs; the workers start without these.
 */
const HOST_CLOUD_SETTINGS = /^(?:AWS_|AZURE_|GOOGLE_|GCLOUD_|CLOUDSDK_|VAULT_|INFISICAL_|CONJUR_)/;

export default async function setup(project: TestProject) {
  for (const name of Object.keys(process.env)) if (HOST_CLOUD_SETTINGS.test(name)) delete process.env[name];
  const dir = await mkdtemp(join(tmpdir(), "llm-secrets-cli-"));
  const cliPath: string = await buildCli(join(dir, "cli.mjs"));
  project.provide("cliPath", cliPath);
  // The fakes' CA, trusted by every worker (started after this) as a real service's CA would be.
  const testPki = makeTestPki(dir);
  project.provide("testPki", testPki);
  trustForWorkers(testPki.caFile, dir);
  const testTmp = await mkdtemp(join(tmpdir(), "llm-secrets-test-"));
  await chmod(testTmp, 0o711); // as /tmp is to its dirs: a test that runs a server as `nobody` passes through
  project.provide("testTmp", testTmp);
  return async () => {
    await rm(dir, { recursive: true, force: true });
    // A test file removes its own temp dirs; any left here were leaked (and would pile up in /tmp).
    const left = await readdir(testTmp);
    await rm(testTmp, { recursive: true, force: true });
    if (left.length > 0) {
      process.stderr.write(`test files left ${left.length} temp dir(s) behind (helpers.ts tempDir): the run fails\n`);
      process.exitCode = 1; // a teardown's throw is printed, but does not fail the run
    }
  };
}

/**
 * Adds the CA to what the workers trust, keeping what the machine already trusts: node's extra CA
 * file (`NODE_EXTRA_CA_CERTS`), and gRPC's root file (`GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`), which
 * @grpc/grpc-js reads instead of node's roots when it is set.
 */
function trustForWorkers(caFile: string, dir: string): void {
  const ca = readFileSync(caFile, "utf8");
  for (const variable of ["NODE_EXTRA_CA_CERTS", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] as const) {
    const current = process.env[variable];
    if (variable === "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH" && !current) continue; // gRPC then uses node's roots
    const existing = current && existsSync(current) ? readFileSync(current, "utf8") : "";
    const bundle = join(dir, `${variable.toLowerCase()}.pem`);
    writeFileSync(bundle, `${existing}\n${ca}`);
    process.env[variable] = bundle;
  }
}
