// functions/azure/host.json, as npm run package copies it into the zip (scripts/package.mjs reads
// the file and writes its bytes unchanged): Application Insights is the audit trail (infra/README.md),
// so the host's adaptive sampling (on by default, about 20 items a second) must never drop a trace
// (the functions' log and audit lines) nor a request.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "../..");

describe("the Azure host.json", () => {
  it("never samples traces (the audit lines) or requests out of Application Insights", async () => {
    const host = JSON.parse(await readFile(join(ROOT, "functions/azure/host.json"), "utf8"));
    const sampling = host.logging?.applicationInsights?.samplingSettings;
    // Sampling may stay on for the other types (dependencies, ...), but none of these is sampled.
    expect(sampling?.isEnabled === false || String(sampling?.excludedTypes).split(";").includes("Trace")).toBe(true);
    expect(sampling?.isEnabled === false || String(sampling?.excludedTypes).split(";").includes("Request")).toBe(true);
    // The packaged zip carries this very file.
    const script = await readFile(join(ROOT, "scripts/package.mjs"), "utf8");
    expect(script).toContain('"host.json": readFileSync(join(root, "functions", "azure", "host.json"))');
  });
});
