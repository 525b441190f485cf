// The store registry's rule (issue 6, acceptance 2): no module but a store file names a store kind.
// A module that needs to know something of a store reads what its factory declares (defaults,
// capabilities), so a store added or copied under another kind is treated the same everywhere.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CLI_STORES } from "../../core/src/cli";
import type { StoreKind } from "../../core/src/index";

const ROOT = join(import.meta.dirname, "../..");

function sourcesUnder(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith(".ts"))
    .map((file) => join(dir, file));
}

/** The code of a TypeScript file without its comments (a kind named in prose is fine). */
function codeOf(path: string): string {
  return readFileSync(join(ROOT, path), "utf8")
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/(^|[^:])\/\/.*$/gm, "$1");
}

describe("the store registry", () => {
  it("no module but a store file names a store kind in its code", () => {
    const modules = [
      ...sourcesUnder("core/src").filter((file) => !file.startsWith(join("core/src", "stores"))),
      ...["aws", "azure", "gcp"].flatMap((cloud) => sourcesUnder(`functions/${cloud}/src`)),
    ];
    expect(modules.length).toBeGreaterThan(30);
    // `custom` is also zod's issue code (`ctx.issues.push({ code: "custom" })`), not the store.
    const kinds = CLI_STORES.map((factory) => factory.kind).filter((kind) => kind !== "custom");
    expect(kinds).toContain("aws_kms");
    const named = modules.flatMap((path) => {
      const code = codeOf(path);
      return kinds.filter((kind) => new RegExp(`["'\`]${kind}["'\`]`).test(code)).map((kind) => `${path}: ${kind}`);
    });
    expect(named).toEqual([]);
  });

  it("StoreKind is the shipped stores' kinds, with no list to keep besides CLI_STORES", () => {
    const kinds: StoreKind[] = CLI_STORES.map((factory) => factory.kind);
    const kms: StoreKind = "aws_kms";
    // @ts-expect-error not a store llm-secrets ships
    const unknown: StoreKind = "not_a_store";
    expect(kinds).toContain(kms);
    expect(kinds).not.toContain(unknown);
  });
});
