// PUT's `replaces` over HTTP: a gateway's regeneration to a name the store maps onto the old name's
// secret (LiteLLM's custom secret manager: PUT the new name, then DELETE the old) is a rename, on
// a memory store that maps names as Azure does (team_a, team-a and Team-A are one secret).
import { describe, expect, it } from "vitest";
import type { StoreFactory } from "../../core/src/secret-store";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";
import { expectNoValueIn, inProcessApp, secretValue } from "../helpers";

const CONFIG =
  "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n";

async function azureMapped(config = CONFIG) {
  const store = new MemoryStore({ mapName: (name) => name.replace(/[^0-9A-Za-z-]/g, "-").toLowerCase() });
  const factory: StoreFactory = { ...memoryStore, open: async () => store };
  const app = await inProcessApp({ config, stores: [factory] });
  const put = (name: string, json: Record<string, unknown>) =>
    app.request(`/v1/secrets/${name}`, { method: "PUT", json });
  const get = async (name: string, query = "") => {
    const res = await app.request(`/v1/secrets/${name}${query}`);
    return res.status === 200 ? ((await res.json()) as { value: string }).value : res.status;
  };
  const codeOf = async (res: Response) => [res.status, ((await res.json()) as { error: { code: string } }).error.code];
  return { ...app, store, put, get, codeOf };
}

describe("PUT with replaces: the name a regeneration renames", () => {
  it("takes over the old name's secret on the same backend key: the new name served, the old one not found, its delete 409", async () => {
    const { put, get, codeOf, request, store, logs, audits } = await azureMapped();
    const [provider, other, oldKey, newKey] = [
      secretValue("openai"),
      secretValue("other"),
      secretValue("old"),
      secretValue("new"),
    ];
    expect((await put("OPENAI_API_KEY", { value: provider })).status).toBe(201);
    expect((await put("litellm/other", { value: other })).status).toBe(201);
    expect((await put("litellm/team_a", { value: oldKey })).status).toBe(201);
    // Without replaces, the same secret holds the old name: a conflict, as before.
    expect(await codeOf(await put("litellm/team-a", { value: newKey }))).toEqual([409, "name_conflict"]);

    audits.length = 0;
    const renamed = await put("litellm/team-a", { value: newKey, replaces: "litellm/team_a" });
    expect(renamed.status).toBe(200);
    expect(await renamed.json()).toEqual({ name: "litellm/team-a", created: false });
    // Its audit line names the name the rename ended (the plain write's said nothing of it).
    expect(audits.map((l) => JSON.parse(l))).toEqual([
      expect.objectContaining({ audit: "write", name: "litellm/team-a", replaces: "litellm/team_a", outcome: "ok" }),
    ]);
    expect(await get("litellm/team-a")).toBe(newKey);
    expect(await get("litellm/team_a")).toBe(404);
    expect(await get("litellm/team_a", "?refresh=true")).toBe(404);
    // The integration then deletes the old name: the secret holds the new one, so it is refused.
    expect(await codeOf(await request("/v1/secrets/litellm/team_a", { method: "DELETE" }))).toEqual([
      409,
      "name_conflict",
    ]);
    expect(await get("litellm/team-a", "?refresh=true")).toBe(newKey);
    expect((await store.get("litellm/team-a"))?.value).toBe(newKey);
    // Nothing else lost.
    expect(await get("litellm/other")).toBe(other);
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe(provider);
    expectNoValueIn(logs, [provider, other, oldKey, newKey]);
  });

  it("changes nothing but the new name when the old name is on another key: the old one readable until deleted", async () => {
    const { put, get, request } = await azureMapped();
    const [oldKey, newKey] = [secretValue("old"), secretValue("new")];
    expect((await put("litellm/alpha", { value: oldKey })).status).toBe(201);
    const written = await put("litellm/beta", { value: newKey, replaces: "litellm/alpha" });
    expect(written.status).toBe(201);
    expect(await written.json()).toEqual({ name: "litellm/beta", created: true });
    expect(await get("litellm/beta")).toBe(newKey);
    expect(await get("litellm/alpha")).toBe(oldKey);
    expect(await get("litellm/alpha", "?refresh=true")).toBe(oldKey);
    expect((await request("/v1/secrets/litellm/alpha", { method: "DELETE" })).status).toBe(204);
    expect(await get("litellm/alpha", "?refresh=true")).toBe(404);
    expect(await get("litellm/beta", "?refresh=true")).toBe(newKey);
  });

  it("refuses a replaces that is the name itself, no name, not writable by this caller, or not the secret's name, with nothing written", async () => {
    // hosted_keys bounds what this caller writes: virtual keys under the prefix, and the names listed.
    const { put, codeOf, store } = await azureMapped(`${CONFIG}    hosted_keys: [OPENAI_API_KEY, litellm/HOSTED]\n`);
    const [oldKey, newKey, hosted] = [secretValue("old"), secretValue("new"), secretValue("hosted")];
    expect((await put("litellm/team_a", { value: oldKey })).status).toBe(201);
    expect((await put("litellm/HOSTED", { value: hosted })).status).toBe(201);
    const refused: [string, [number, string]][] = [
      ["litellm/team-a", [400, "invalid_request"]], // the name itself
      ["litellm/team a", [400, "invalid_request"]], // no name
      ["litellm/../team_a", [400, "invalid_request"]],
      ["", [400, "invalid_request"]],
      ["team_a", [403, "not_hosted"]], // outside hosted_keys and the virtual-key prefix
      ["litellm/hosted", [409, "name_conflict"]], // a virtual key's name on a hosted name's secret
      ["litellm/Team_A", [409, "name_conflict"]], // on the key, but not the name the secret holds
    ];
    for (const [replaces, expected] of refused) {
      const res = await put("litellm/team-a", { value: newKey, replaces });
      const [status, code] = await codeOf(res.clone());
      expect([status, code], replaces).toEqual(expected);
      // A refusal of replaces says so (not of the name written).
      if (replaces !== "litellm/Team_A") {
        expect(((await res.json()) as { error: { message: string } }).error.message, replaces).toMatch(/replaces/);
      }
    }
    expect((await store.get("litellm/team_a"))?.value).toBe(oldKey);
    expect(await store.get("litellm/team-a")).toBeUndefined();
    expect((await store.get("litellm/HOSTED"))?.value).toBe(hosted);
    // The rename itself is allowed.
    expect((await put("litellm/team-a", { value: newKey, replaces: "litellm/team_a" })).status).toBe(200);
  });
});
