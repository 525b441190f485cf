// Builds the CLI bundle once, into a temp dir of its own (so `npm start` rebuilding core/dist
// during the README test cannot race tests that spawn the CLI).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
// @ts-expect-error: a plain ESM build script without types
import { buildCli } from "../core/build.mjs";

declare module "vitest" {
  export interface ProvidedContext {
    cliPath: string;
  }
}

export default async function setup(project: TestProject) {
  const dir = await mkdtemp(join(tmpdir(), "llm-secrets-cli-"));
  const cliPath: string = await buildCli(join(dir, "cli.mjs"));
  project.provide("cliPath", cliPath);
  return async () => {
    await rm(dir, { recursive: true, force: true });
  };
}
