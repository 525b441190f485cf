// zod as we use it: English messages per parse, zod's global config left as it was.
import { describe, expect, it, vi } from "vitest";

describe("validation", () => {
  it("does not change zod's global config when the core is imported", async () => {
    vi.resetModules();
    const z = await import("zod/mini");
    const before = { ...z.config() };
    await import("../../core/src/index");
    expect(z.config()).toEqual(before);
    expect(z.config().localeError).toBeUndefined();
  });

  it("still gives English messages, by path", async () => {
    const z = await import("zod/mini");
    const { issuesOf, safeParse } = await import("../../core/src/validation");
    const result = safeParse(z.object({ a: z.object({ b: z.string() }) }), { a: { b: 3 } });
    expect(result.success).toBe(false);
    if (result.success) return;
    expect(issuesOf(result.error)).toEqual([
      { path: "a.b", message: "Invalid input: expected string, received number" },
    ]);
  });

  it("says a key that is not there is missing, in the API and in settings", async () => {
    const z = await import("zod/mini");
    const { issuesOf, safeParse } = await import("../../core/src/validation");
    const result = safeParse(z.object({ value: z.string(), n: z.optional(z.number()) }), {});
    expect(result.success).toBe(false);
    if (result.success) return;
    expect(issuesOf(result.error)).toEqual([{ path: "value", message: "is missing (expected string)" }]);
    const { loadSettings } = await import("../../core/src/settings");
    const { googleSecretManagerStore } = await import("../../core/src/stores/google");
    expect(() =>
      loadSettings({
        env: {
          LITELLM_MASTER_KEY: "sk-a-strong-enough-key",
          LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: google_secret_manager\n",
        },
        stores: [googleSecretManagerStore],
      }),
    ).toThrow("environment: GOOGLE_SECRET_MANAGER_PROJECT_ID: is missing (expected string)");
  });

  it("echoes at most 64 characters of a key the caller sent", async () => {
    const z = await import("zod/mini");
    const { issuesOf, safeParse } = await import("../../core/src/validation");
    const long = "k".repeat(100_000);
    const strict = safeParse(z.strictObject({ value: z.string() }), { value: "v", [long]: 1 });
    const record = safeParse(z.record(z.string(), z.string()), { [long]: 3 });
    for (const result of [strict, record]) {
      expect(result.success).toBe(false);
      if (result.success) continue;
      const text = JSON.stringify(issuesOf(result.error));
      expect(text).toContain("k".repeat(64));
      expect(text).not.toContain("k".repeat(65));
    }
  });
});
