// Builds the CLI bundle once, into a temp dir of its own (so `npm start` rebuilding core/dist
// during the README test cannot race tests that spawn the CLI), and makes the fakes' CA (fakes/pki.ts).
import { mkdtemp, rm } from "node:fs/promises";
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
  }
}

export default async function setup(project: TestProject) {
  const dir = await mkdtemp(join(tmpdir(), "llm-secrets-cli-"));
  const cliPath: string = await buildCli(join(dir, "cli.mjs"));
  project.provide("cliPath", cliPath);
  // The fakes' CA, trusted by every worker (started after this) as a real service's CA would be.
  const testPki = makeTestPki(dir);
  project.provide("testPki", testPki);
  process.env.NODE_EXTRA_CA_CERTS = testPki.caFile;
  return async () => {
    await rm(dir, { recursive: true, force: true });
  };
}
