// The Azure Key Vault store beyond the conformance suite: the bearer challenge and the token flow
// (checked by the fakes), name mapping and its conflicts, the 127-character limit, adoption of a
// portal secret, recover-before-write, deletes that do not wait, tombstones in tags, the fault
// matrix, and `llm-secrets serve` against the fakes. The real @azure/keyvault-secrets and
// @azure/identity, over HTTPS, to test/fakes/azure.ts.

import { ClientSecretCredential } from "@azure/identity";
import { SecretClient, type SecretClientOptions } from "@azure/keyvault-secrets";
import { beforeEach, describe, expect, inject, it } from "vitest";
import { ConfigError } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import { createRuntime } from "../../core/src/runtime";
import type { SecretStore } from "../../core/src/secret-store";
import {
  AzureKeyVaultSettings,
  AzureKeyVaultStore,
  azureClientOptions,
  azureCredentialOptions,
  azureKeyVaultStore,
} from "../../core/src/stores/azure";
import { safeParse } from "../../core/src/validation";
import { type AzureFault, FAKE_AZURE_IDENTITY, type FakeAzure, lazyFakeAzure } from "../fakes/azure";
import { makeServerChain } from "../fakes/pki";
import { codeOf, expectNoValueIn, listPages, newKey, secretValue, serveStore, tempDir } from "../helpers";

const azure = lazyFakeAzure();
const logs: string[] = [];
const log = createLogger((line) => logs.push(line));
const values: string[] = [];

function deps() {
  return { dataDir: "/nonexistent", env: {}, log, now: Date.now };
}

/** The store as `open` makes it, from the settings a user sets (the fake's env, with `overrides`). */
async function open(overrides: Record<string, string | undefined> = {}): Promise<SecretStore> {
  const fake = await azure();
  const env = Object.fromEntries(
    Object.entries({ ...fake.env(), ...overrides }).filter((e): e is [string, string] => e[1] !== undefined),
  );
  const parsed = safeParse(AzureKeyVaultSettings, { config: {}, env });
  if (!parsed.success) throw new Error("invalid test settings");
  return azureKeyVaultStore.open(parsed.data, deps());
}

type PipelinePolicy = NonNullable<SecretClientOptions["additionalPolicies"]>[number]["policy"];

/**
 * The store over a client with short waits (each attempt 1 s, retries 10 ms apart, polls 20 ms), as a
 * test needs; `policy`: one more pipeline policy, on each call (to act between two of the store's calls).
 */
async function quick(secret = FAKE_AZURE_IDENTITY.clientSecret, policy?: PipelinePolicy): Promise<AzureKeyVaultStore> {
  return new AzureKeyVaultStore({ client: await quickClient(secret, policy), pollMs: 20, log });
}

/** The client `quick` gives its store. */
async function quickClient(secret = FAKE_AZURE_IDENTITY.clientSecret, policy?: PipelinePolicy): Promise<SecretClient> {
  const fake = await azure();
  // 1 s per attempt: short enough for the hang test, long enough for a loaded 2-core machine.
  const timeouts = { requestMs: 1000, retryDelayMs: 10 };
  const credential = new ClientSecretCredential(
    FAKE_AZURE_IDENTITY.tenantId,
    FAKE_AZURE_IDENTITY.clientId,
    secret,
    azureCredentialOptions({ AZURE_AUTHORITY_HOST: fake.authorityHost }, timeouts),
  );
  const options = azureClientOptions(fake.vaultUrl, timeouts);
  if (policy) options.additionalPolicies = [...(options.additionalPolicies ?? []), { policy, position: "perCall" }];
  return new SecretClient(fake.vaultUrl, credential, options);
}

/** A policy that purges `key` from the fake's vault just before the store's recover of it reaches the vault (another process purges it). */
function purgeBeforeRecover(fake: FakeAzure, key: string): PipelinePolicy {
  return {
    name: "purgeBeforeRecover",
    sendRequest(request, next) {
      if (request.method === "POST" && new URL(request.url).pathname === `/deletedsecrets/${key}/recover`) {
        fake.secrets.delete(key.toLowerCase());
      }
      return next(request);
    },
  };
}

function value(label: string): string {
  const v = secretValue(label);
  values.push(v);
  return v;
}

/** The tags of the latest version of a vault secret. */
function tagsOf(fake: FakeAzure, key: string): Record<string, string> | undefined {
  return fake.secret(key)?.versions.at(-1)?.tags;
}

beforeEach(async () => {
  (await azure()).reset();
});

/**
 * A runtime on the Azure fake's vault that reads and writes; `settings`: more key_management_settings
 * lines (indented four spaces).
 */
function readWriteRuntime(fake: { env(): Record<string, string> }, settings = "", masterKey = newKey()) {
  return createRuntime({
    stores: [azureKeyVaultStore],
    settings: {
      env: {
        ...fake.env(),
        LITELLM_MASTER_KEY: masterKey,
        LLM_SECRETS_CONFIG: `general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n${settings}`,
      },
    },
    log,
    audit: () => {},
  });
}

describe("azure_key_vault over the wire", () => {
  it("meets the bearer challenge, gets a token from the token service, and sends it on every later call", async () => {
    const fake = await azure();
    const store = await open();
    const v = value("challenge");
    expect(await store.put("AZURE_API_KEY", v)).toBe("created");

    // First call: no token, answered with the challenge naming the tenant and Key Vault's resource.
    const [probe, ...rest] = fake.requests;
    expect(probe?.headers.authorization).toBeUndefined();
    expect(probe?.status).toBe(401);
    // Then the client-credentials grant, at the authority from AZURE_AUTHORITY_HOST, for Key Vault.
    expect(fake.loginRequests).toEqual([
      `GET /${FAKE_AZURE_IDENTITY.tenantId}/v2.0/.well-known/openid-configuration`,
      `POST /${FAKE_AZURE_IDENTITY.tenantId}/oauth2/v2.0/token`,
    ]);
    expect(fake.tokenRequests).toHaveLength(1);
    expect(fake.tokenRequests[0]?.form).toMatchObject({
      grant_type: "client_credentials",
      client_id: FAKE_AZURE_IDENTITY.clientId,
      scope: "https://vault.azure.net/.default",
    });
    // Every call after it carries a token the token service issued.
    expect(rest.length).toBeGreaterThanOrEqual(3);
    for (const r of rest) {
      const token = /^Bearer (\S+)$/.exec(String(r.headers.authorization))?.[1];
      expect(token !== undefined && fake.tokens.has(token)).toBe(true);
      expect(r.query["api-version"]).toBe("2025-07-01");
    }
    const [put] = fake.calls("PUT", "/secrets/");
    expect(put?.path).toBe("/secrets/AZURE-API-KEY");
    expect(put?.body).toMatchObject({ value: v, tags: { "llm-secrets:name": "AZURE_API_KEY" } });
    // A second call needs no new token and no new challenge.
    fake.requests.length = 0;
    expect((await store.get("AZURE_API_KEY"))?.value).toBe(v);
    expect(fake.requests.map((r) => r.status)).toEqual([200]);
    expect(fake.tokenRequests).toHaveLength(1);
  });

  it("DefaultAzureCredential (when the settings hold no client secret) reads the service principal from the environment", async () => {
    const fake = await azure();
    // lazyFakeAzure put AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET in process.env, as a user does.
    const store = await open({
      AZURE_TENANT_ID: undefined,
      AZURE_CLIENT_ID: undefined,
      AZURE_CLIENT_SECRET: undefined,
    });
    const v = value("default-credential");
    expect(await store.put("K", v)).toBe("created");
    expect(fake.tokenRequests.map((t) => t.form.client_id)).toEqual([FAKE_AZURE_IDENTITY.clientId]);
    expect((await store.get("K"))?.value).toBe(v);
  });

  it("maps names to [0-9A-Za-z-], tags the name written, and refuses another name on the same key (case too)", async () => {
    const fake = await azure();
    const store = await open();
    // The key the cache and the queues use is lower-cased, as the vault ignores case; calls keep it.
    expect(store.keyOf("AZURE_API_KEY")).toBe("azure-api-key");
    expect(store.keyOf("litellm/team-a/key")).toBe("litellm-team-a-key");
    expect(store.keyOf("a.b@c+d=e")).toBe("a-b-c-d-e");
    const v = value("mapped");
    await store.put("AZURE_API_KEY", v);
    expect(tagsOf(fake, "AZURE-API-KEY")?.["llm-secrets:name"]).toBe("AZURE_API_KEY");
    for (const other of ["AZURE-API-KEY", "azure_api_key", "Azure.Api.Key"]) {
      expect(await codeOf(store.put(other, value("other"))), other).toBe("name_conflict");
      expect(await codeOf(store.delete(other)), other).toBe("name_conflict");
      expect(await store.get(other), other).toBeUndefined();
    }
    expect(fake.calls("PUT")).toHaveLength(1);
    expect(fake.calls("DELETE")).toHaveLength(0);
    expect((await store.get("AZURE_API_KEY"))?.value).toBe(v);
  });

  it("lists a page a call (GET /secrets?maxresults=N, nextLink as the cursor): names as written, deleted and disabled left out", async () => {
    const fake = await azure();
    const store = await open();
    const held = ["team/a", "team/b", "team/c", "team/d", "team/e"];
    for (const n of held) await store.put(n, value(n));
    await store.put("other", value("other"));
    await store.put("team/gone", value("gone"));
    await store.delete("team/gone");
    await store.delete("team/never", { ifNewerThan: { at: 5_000 } }); // an empty secret, deleted: its tombstone
    fake.seed("portal-made", value("portal"));
    fake.seed("portal-disabled", value("disabled"));
    const disabled = fake.secret("portal-disabled")?.versions.at(-1);
    if (disabled) disabled.enabled = false;
    // What list leaves out, get does not find (a disabled secret was 502 backend_denied).
    expect(await store.get("portal-disabled")).toBeUndefined();
    fake.requests.length = 0;

    const { names, cursors } = await listPages(store.list?.bind(store), { prefix: "team/", limit: 2 });
    const links = cursors.map((c) => Buffer.from(c, "base64url").toString("utf8"));
    expect(names).toEqual(held); // each once, by vault name: team-a ... team-e
    const lists = fake.calls("GET", "/secrets").filter((r) => r.path === "/secrets" && r.status === 200);
    // 8 live secrets (other, portal-disabled, portal-made, team-a..e), 2 a page.
    expect(lists).toHaveLength(4);
    expect(lists[0]?.query).toEqual({ "api-version": expect.any(String), maxresults: "2" });
    for (const [i, link] of links.entries()) {
      expect(link.startsWith(`${fake.vaultUrl}/secrets?`)).toBe(true);
      expect(lists[i + 1]?.query.$skiptoken).toBe(new URL(link).searchParams.get("$skiptoken"));
      expect(lists[i + 1]?.query.maxresults).toBe("2");
    }
    // A limit above Key Vault's 25 asks for 25; a portal secret is listed by its vault name.
    fake.requests.length = 0;
    const all = await store.list?.({ limit: 1000 });
    expect(fake.calls("GET", "/secrets").find((r) => r.path === "/secrets")?.query.maxresults).toBe("25");
    expect(all).toEqual({ names: ["other", "portal-made", ...held] });
    // A cursor that is not this vault's link is refused before any call (it would carry our token).
    const before = fake.requests.length;
    const elsewhere = Buffer.from("https://attacker.example/secrets?$skiptoken=x").toString("base64url");
    expect(await codeOf(store.list?.({ limit: 2, cursor: elsewhere }) ?? Promise.resolve())).toBe("invalid_request");
    expect(fake.requests.length).toBe(before);
    const stale = Buffer.from(`${fake.vaultUrl}/secrets?api-version=7.6&$skiptoken=unknown`).toString("base64url");
    expect(await codeOf(store.list?.({ limit: 2, cursor: stale }) ?? Promise.resolve())).toBe("invalid_request");
  });

  it("a name longer than 127 characters is invalid_name before any call; 127 is written", async () => {
    const fake = await azure();
    const store = await open();
    const longest = `K_${"x".repeat(125)}`;
    expect(await store.put(longest, value("longest"))).toBe("created");
    expect(fake.secret(store.keyOf(longest))?.name).toBe(`K-${"x".repeat(125)}`);
    const before = fake.requests.length;
    const tooLong = `${longest}y`;
    expect(await codeOf(store.get(tooLong))).toBe("invalid_name");
    expect(await codeOf(store.put(tooLong, value("too-long")))).toBe("invalid_name");
    expect(await codeOf(store.delete(tooLong))).toBe("invalid_name");
    expect(fake.requests.length).toBe(before);
  });

  it("reads a secret made in the portal for the names that map onto it, and adopts it on the first write", async () => {
    const fake = await azure();
    const store = await open();
    const portal = value("portal");
    fake.seed("AZURE-API-KEY", portal, { env: "prod" });
    expect(await store.get("AZURE_API_KEY")).toMatchObject({ value: portal, tags: { env: "prod" } });
    expect((await store.get("AZURE-API-KEY"))?.value).toBe(portal);
    const ours = value("adopted");
    expect(await store.put("AZURE_API_KEY", ours)).toBe("updated");
    expect(fake.secret("AZURE-API-KEY")?.versions).toHaveLength(2);
    expect(tagsOf(fake, "AZURE-API-KEY")).toMatchObject({ env: "prod", "llm-secrets:name": "AZURE_API_KEY" });
    expect(logs.some((l) => l.includes("adopted a Key Vault secret made outside llm-secrets"))).toBe(true);
    // Now it is AZURE_API_KEY's: the other spelling is another name.
    expect(await store.get("AZURE-API-KEY")).toBeUndefined();
    expect(await codeOf(store.put("AZURE-API-KEY", value("taken")))).toBe("name_conflict");
    expect((await store.get("AZURE_API_KEY"))?.value).toBe(ours);
  });

  it("adopt: false (a key event's change, a virtual key's write) neither adopts nor deletes a secret made outside llm-secrets (any case, soft-deleted too): name_conflict", async () => {
    const fake = await azure();
    const store = await open();
    // A portal secret that the virtual key `litellm/` + alias `SALT_KEY` lands on, the vault ignoring case.
    const salt = value("portal-salt");
    fake.seed("LITELLM-Salt-Key", salt);
    const other = value("portal-other");
    fake.seed("LITELLM-OTHER", other);
    const gone = value("portal-gone");
    fake.seed("LITELLM-GONE", gone);
    const deleted = fake.secret("LITELLM-GONE");
    if (deleted) deleted.deleted = { at: Date.now(), visibleAt: Date.now() }; // soft-deleted in the portal
    const event = { at: Date.now(), id: "evt-1" };
    fake.requests.length = 0;
    expect(await codeOf(store.put("litellm/SALT_KEY", value("attacker"), { ifNewerThan: event, adopt: false }))).toBe(
      "name_conflict",
    );
    expect(await codeOf(store.delete("litellm/OTHER", { ifNewerThan: event, adopt: false }))).toBe("name_conflict");
    expect(await codeOf(store.put("litellm/GONE", value("revived"), { ifNewerThan: event, adopt: false }))).toBe(
      "name_conflict",
    );
    expect(await codeOf(store.delete("litellm/GONE", { ifNewerThan: event, adopt: false }))).toBe("name_conflict");
    // Only looked at: nothing written, tagged, recovered or deleted.
    expect(fake.requests.filter((r) => r.method !== "GET")).toEqual([]);
    expect(fake.secret("LITELLM-SALT-KEY")?.versions.map((v) => v.value)).toEqual([salt]);
    expect(fake.secret("LITELLM-OTHER")?.deleted).toBeUndefined();
    expect(fake.secret("LITELLM-GONE")?.versions.map((v) => v.tags)).toEqual([{}]);
    expect((await store.get("litellm/SALT_KEY"))?.value).toBe(salt);
    // A direct write (the master key's) still adopts it; then it is ours, and events change it.
    expect(await store.put("litellm/SALT_KEY", value("adopted"))).toBe("updated");
    expect(
      await store.delete("litellm/SALT_KEY", { ifNewerThan: { at: Date.now() + 1, id: "evt-2" }, adopt: false }),
    ).toBe("deleted");
  });

  it("a PUT or DELETE allowed only under the virtual-key prefix neither adopts nor deletes a portal secret; a hosted name's does (with hosted_keys or without)", async () => {
    // With hosted_keys, without, and without store_virtual_keys either (the class writes all the same).
    for (const settings of [
      "    store_virtual_keys: true\n    hosted_keys: [OPENAI_API_KEY]\n",
      "    store_virtual_keys: true\n",
      "",
    ]) {
      // LiteLLM's custom secret manager writes a virtual key as PUT /v1/secrets/litellm/<alias> with
      // the master key, the alias chosen by any LiteLLM user: litellm/SALT_KEY is the vault's
      // portal-made LITELLM-SALT-KEY, and litellm/OTHER its LITELLM-OTHER.
      const fake = await azure();
      fake.reset();
      const salt = value("portal-salt");
      fake.seed("LITELLM-SALT-KEY", salt);
      fake.seed("LITELLM-OTHER", value("portal-other"));
      const provider = value("portal-provider");
      fake.seed("OPENAI-API-KEY", provider);
      const masterKey = newKey();
      const runtime = await readWriteRuntime(fake, settings, masterKey);
      const call = async (method: string, name: string, body?: unknown) => {
        const path = `/v1/secrets/${name}`;
        const headers = { authorization: `Bearer ${masterKey}`, "content-type": "application/json" };
        const init = { method, headers, ...(body !== undefined && { body: JSON.stringify(body) }) };
        const response = await runtime.fetch(new Request(`http://localhost${path}`, init), { path });
        const text = await response.text();
        return {
          status: response.status,
          code: text ? (JSON.parse(text) as { error?: { code?: string } }).error?.code : undefined,
        };
      };
      try {
        fake.requests.length = 0;
        const attacker = value("sk-attacker");
        expect(await call("PUT", "litellm/SALT_KEY", { value: attacker })).toEqual({
          status: 409,
          code: "name_conflict",
        });
        expect(await call("DELETE", "litellm/other")).toEqual({ status: 409, code: "name_conflict" });
        // Only looked at: nothing written, tagged or deleted.
        expect(fake.requests.filter((r) => r.method !== "GET")).toEqual([]);
        expect(fake.secret("LITELLM-SALT-KEY")?.versions.map((v) => v.value)).toEqual([salt]);
        expect(fake.secret("LITELLM-OTHER")?.deleted).toBeUndefined();
        // A virtual key of its own is written as ever, and its owner changes it.
        expect(await call("PUT", "litellm/team-key", { value: value("sk-virtual") })).toEqual({
          status: 201,
          code: undefined,
        });
        expect(await call("DELETE", "litellm/team-key")).toEqual({ status: 204, code: undefined });
        // A hosted name is the operator's: its direct write adopts the portal secret, as before.
        expect(await call("PUT", "OPENAI_API_KEY", { value: value("sk-rotated") })).toEqual({
          status: 200,
          code: undefined,
        });
        expect(tagsOf(fake, "OPENAI-API-KEY")).toMatchObject({ "llm-secrets:name": "OPENAI_API_KEY" });
        expectNoValueIn(logs, [attacker, salt, provider]);
      } finally {
        await runtime.close();
      }
    }
  });

  it("a name under a team's prefix, inside the general one, adopts no portal secret either (without hosted_keys)", async () => {
    const fake = await azure();
    fake.reset();
    const portal = value("portal-team-salt");
    fake.seed("LITELLM-TEAM-A-SALT-KEY", portal);
    const masterKey = newKey();
    const runtime = await readWriteRuntime(
      fake,
      "    store_virtual_keys: true\n    team_settings:\n      team-a: {prefix_for_stored_virtual_keys: litellm/team-a/}\n",
      masterKey,
    );
    try {
      const path = "/v1/secrets/litellm/team-a/SALT_KEY";
      const init = {
        method: "PUT",
        headers: { authorization: `Bearer ${masterKey}`, "content-type": "application/json" },
        body: JSON.stringify({ value: value("sk-attacker") }),
      };
      const res = await runtime.fetch(new Request(`http://localhost${path}`, init), { path });
      expect(res.status).toBe(409);
      expect(fake.secret("LITELLM-TEAM-A-SALT-KEY")?.versions.map((v) => v.value)).toEqual([portal]);
    } finally {
      await runtime.close();
    }
  });

  it("through the cache: a write of A_B reaches a cached read of a_b (one vault secret, whatever the case)", async () => {
    const fake = await azure();
    const portal = value("portal-case");
    fake.seed("Case-Key", portal);
    const runtime = await readWriteRuntime(fake);
    try {
      expect((await runtime.manager.get("case_key")).value).toBe(portal); // cached
      await runtime.manager.put("CASE_KEY", value("written-in-upper-case"));
      expect(fake.secret("case-key")?.name).toBe("Case-Key"); // one vault secret, now CASE_KEY's
      // Before: served the portal value from the cache for its whole lifetime.
      expect(await codeOf(Promise.resolve(runtime.manager.get("case_key")))).toBe("not_found");
    } finally {
      await runtime.close();
    }
  });

  it("through the cache: a delete of AZURE_API_KEY reaches a cached read of AZURE-API-KEY (one untagged portal secret)", async () => {
    const fake = await azure();
    const portal = value("portal-delete");
    fake.seed("AZURE-API-KEY", portal);
    const runtime = await readWriteRuntime(fake);
    try {
      expect((await runtime.manager.get("AZURE-API-KEY")).value).toBe(portal); // cached
      await runtime.manager.delete("AZURE_API_KEY"); // deletes the vault secret AZURE-API-KEY
      expect(fake.secret("AZURE-API-KEY")?.deleted).toBeDefined();
      // Before: served the deleted value from the cache for its whole lifetime.
      expect(await codeOf(Promise.resolve(runtime.manager.get("AZURE-API-KEY")))).toBe("not_found");
    } finally {
      await runtime.close();
    }
  });

  it("deletes with beginDeleteSecret (recoverable, no purge), tags the tombstone, and recovers before writing again", async () => {
    const fake = await azure();
    const store = await open();
    await store.put("K", value("one"));
    expect(await store.delete("K")).toBe("deleted");
    const deleted = fake.secret("K");
    expect(deleted?.deleted).toBeDefined(); // soft-deleted: recoverable, versions kept
    expect(deleted?.versions).toHaveLength(1);
    expect(tagsOf(fake, "K")).toMatchObject({ "llm-secrets:deleted": "true", "llm-secrets:name": "K" });
    expect(Number(tagsOf(fake, "K")?.["llm-secrets:changed-at"])).toBeGreaterThan(Date.now() - 60_000);
    expect(fake.calls("PATCH", "/secrets/K/")).toHaveLength(1); // the tombstone's tags, before the delete
    expect(fake.calls("DELETE", "/secrets/K")).toHaveLength(1);
    expect(fake.calls("DELETE", "/deletedsecrets/")).toHaveLength(0); // never purged
    expect(await store.get("K")).toBeUndefined();

    const two = value("two");
    expect(await store.put("K", two)).toBe("created");
    const recover = fake.requests.findIndex((r) => r.method === "POST" && r.path === "/deletedsecrets/K/recover");
    const write = fake.requests.findLastIndex((r) => r.method === "PUT" && r.path === "/secrets/K");
    expect(recover).toBeGreaterThan(0);
    expect(write).toBeGreaterThan(recover);
    expect(fake.requests[write]?.status).toBe(200);
    expect(tagsOf(fake, "K")?.["llm-secrets:deleted"]).toBe("false");
    expect((await store.get("K"))?.value).toBe(two);
  });

  it("does not wait for a delete to finish", async () => {
    const fake = await azure();
    const store = await open();
    await store.put("SLOW", value("slow"));
    fake.deletionDelayMs = 60_000; // the vault takes a minute to move it to the deleted secrets
    fake.requests.length = 0;
    const started = Date.now();
    expect(await store.delete("SLOW")).toBe("deleted");
    expect(Date.now() - started).toBeLessThan(30_000); // not the vault's minute, however loaded the machine
    // After the DELETE, the poller's one look at the deleted secret found it still under way, and was not repeated.
    const afterDelete = fake.requests.slice(fake.requests.findIndex((r) => r.method === "DELETE"));
    expect(afterDelete.map((r) => `${r.method} ${r.path} ${r.status}`)).toEqual([
      "DELETE /secrets/SLOW 200",
      "GET /deletedsecrets/SLOW 404",
    ]);
  });

  it("a delete whose DELETE landed is deleted, though the poller's look at the deleted secret after it failed", async () => {
    const fake = await azure();
    const store = await open();
    await store.put("D", value("d"));
    fake.requests.length = 0;
    fake.throttleRetryAfter = 0;
    fake.fail(3, "throttled", "GET /deletedsecrets"); // the SDK's 3 attempts of the poller's one look
    expect(await store.delete("D")).toBe("deleted");
    expect(fake.secret("D")?.deleted).toBeDefined();
    expect(fake.calls("DELETE", "/secrets/D")).toHaveLength(1);
    expect(fake.calls("GET", "/deletedsecrets/D").map((r) => r.status)).toEqual([429, 429, 429]);
  });

  it("a write while a delete, then a recovery, is still under way waits them out (409 Conflict)", async () => {
    const fake = await azure();
    const store = await quick();
    await store.put("BUSY", value("busy"));
    fake.deletionDelayMs = 150;
    fake.recoveryDelayMs = 150;
    await store.delete("BUSY");
    const next = value("next");
    expect(await store.put("BUSY", next)).toBe("created");
    const writes = fake.calls("PUT", "/secrets/BUSY").slice(1);
    expect(writes[0]?.status).toBe(409); // still being deleted
    expect(writes.at(-1)?.status).toBe(200);
    expect(fake.calls("POST", "/deletedsecrets/BUSY/recover")).toHaveLength(1);
    expect((await store.get("BUSY"))?.value).toBe(next);
  });

  it("a late event that arrives while a newer delete is still under way is superseded, not written over it", async () => {
    const fake = await azure();
    const store = await quick();
    await store.put("REVOKED", value("revoked"), { ifNewerThan: { at: 1_000, id: "e1" } });
    fake.deletionDelayMs = 150; // neither live nor in the deleted secrets for a moment
    expect(await store.delete("REVOKED", { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("deleted");
    expect(await store.put("REVOKED", value("late"), { ifNewerThan: { at: 1_500, id: "e1b" } })).toBe("superseded");
    expect(fake.calls("POST", "/deletedsecrets/REVOKED/recover")).toHaveLength(0);
    expect(await store.get("REVOKED")).toBeUndefined();
    // A newer one waits the delete out and lands.
    const newer = value("newer");
    expect(await store.put("REVOKED", newer, { ifNewerThan: { at: 3_000, id: "e3" } })).toBe("created");
    expect((await store.get("REVOKED"))?.value).toBe(newer);
  });

  it("an older delete event that meets a newer delete still under way is superseded: the tombstone keeps the newer time, and a late create stays out", async () => {
    const fake = await azure();
    // The newer delete finishes just after the older one's write was refused (409) and its look found nothing.
    let refused = false;
    const store = await quick(undefined, {
      name: "deleteEndsAfterTheLook",
      async sendRequest(request, next) {
        const response = await next(request);
        const path = new URL(request.url).pathname;
        if (request.method === "PUT" && path === "/secrets/REVOKED" && response.status === 409) refused = true;
        if (refused && request.method === "GET" && path === "/deletedsecrets/REVOKED" && response.status === 404) {
          const deleted = fake.secret("REVOKED")?.deleted;
          if (deleted) deleted.visibleAt = Date.now();
        }
        return response;
      },
    });
    await store.put("REVOKED", value("revoked"), { ifNewerThan: { at: 1_000, id: "e1" } });
    fake.deletionDelayMs = 60_000; // neither live nor in the deleted secrets meanwhile
    expect(await store.delete("REVOKED", { ifNewerThan: { at: 3_000, id: "e3" } })).toBe("deleted");
    // Finds the name in neither list, and its tombstone's write meets the delete under way (409).
    expect(await store.delete("REVOKED", { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("superseded");
    expect(fake.calls("PUT", "/secrets/REVOKED").map((r) => r.status)).toEqual([200, 409]);
    expect(fake.calls("POST", "/deletedsecrets/REVOKED/recover")).toHaveLength(0);
    expect(tagsOf(fake, "REVOKED")).toMatchObject({ "llm-secrets:changed-at": "3000", "llm-secrets:deleted": "true" });
    expect(await store.put("REVOKED", value("late"), { ifNewerThan: { at: 2_500, id: "e2b" } })).toBe("superseded");
    expect(await store.get("REVOKED")).toBeUndefined();
  });

  it("an event delete of a_b that meets another process's recovery of A_B (its write) is name_conflict: A_B's secret stays live", async () => {
    const fake = await azure();
    // The recovery finishes just after the store, its write refused (409), looked and found nothing:
    // it writes nothing until a look shows the name live or deleted.
    let refused = false;
    const store = await quick(undefined, {
      name: "recoveryEndsAfterTheLook",
      async sendRequest(request, next) {
        const response = await next(request);
        const path = new URL(request.url).pathname;
        if (request.method === "PUT" && path === "/secrets/a-b" && response.status === 409) refused = true;
        if (refused && request.method === "GET" && path === "/deletedsecrets/a-b" && response.status === 404) {
          const secret = fake.secret("A-B");
          if (secret) secret.recoveringUntil = undefined;
        }
        return response;
      },
    });
    const ab = value("ab");
    await store.put("A_B", ab, { ifNewerThan: { at: 1_000, id: "x" } });
    await store.delete("A_B");
    fake.recoveryDelayMs = 60_000;
    // Another instance recovers A_B to write it again: started, not waited for.
    await (await quickClient()).beginRecoverDeletedSecret("A-B");
    expect(await codeOf(store.delete("a_b", { ifNewerThan: { at: 2_000, id: "e" } }))).toBe("name_conflict");
    expect(fake.secret("A-B")?.deleted).toBeUndefined();
    expect(tagsOf(fake, "A-B")?.["llm-secrets:name"]).toBe("A_B");
    expect(fake.secret("A-B")?.versions.at(-1)?.value).toBe(ab); // recovered as it was, for its writer
    expect(fake.calls("PUT", "/secrets/a-b").every((r) => r.status === 409)).toBe(true);
  });

  it("an event delete that meets the name's own recovery and an older write of it deletes that value as a live one: deleted, its tags kept", async () => {
    const fake = await azure();
    // Another instance's recovery of A_B ends just after the store's look, and its write (older
    // than the delete) lands then: the delete finds A_B live again.
    let refused = false;
    const store = await quick(undefined, {
      name: "recoveryAndWriteEndAfterTheLook",
      async sendRequest(request, next) {
        const response = await next(request);
        const path = new URL(request.url).pathname.toLowerCase();
        if (request.method === "PUT" && path === "/secrets/a-b" && response.status === 409) refused = true;
        const secret = fake.secret("A-B");
        if (refused && request.method === "GET" && path === "/deletedsecrets/a-b" && secret?.recoveringUntil) {
          secret.recoveringUntil = undefined;
          const tags = { env: "prod", "llm-secrets:name": "A_B", "llm-secrets:changed-at": "1500" };
          await (await quickClient()).setSecret("A-B", "other-instance-value", { tags });
        }
        return response;
      },
    });
    await store.put("A_B", value("ab"), { ifNewerThan: { at: 1_000, id: "x" }, meta: { tags: { env: "prod" } } });
    await store.delete("A_B");
    fake.recoveryDelayMs = 60_000;
    await (await quickClient()).beginRecoverDeletedSecret("A-B");
    expect(await store.delete("A_B", { ifNewerThan: { at: 2_000, id: "e" } })).toBe("deleted");
    expect(fake.secret("A-B")?.deleted).toBeDefined();
    expect(fake.secret("A-B")?.versions.at(-1)?.value).toBe("other-instance-value"); // no empty version over it
    expect(tagsOf(fake, "A-B")).toMatchObject({
      env: "prod",
      "llm-secrets:changed-at": "2000",
      "llm-secrets:deleted": "true",
    });
  });

  it("ifNewerThan reads the change times in the tags, the tombstone's included: a late event cannot revive a name", async () => {
    const fake = await azure();
    const store = await open();
    // A delete event for a name never written leaves a tombstone: an empty value, deleted at once.
    expect(await store.delete("NEVER", { ifNewerThan: { at: 5_000, id: "evt/5" } })).toBe("absent");
    expect(fake.secret("NEVER")?.deleted).toBeDefined();
    expect(fake.secret("NEVER")?.versions.at(-1)?.value).toBe("");
    expect(tagsOf(fake, "NEVER")).toEqual({
      "llm-secrets:name": "NEVER",
      "llm-secrets:changed-at": "5000",
      "llm-secrets:change-id": "evt/5",
      "llm-secrets:deleted": "true",
    });
    const puts = fake.calls("PUT").length;
    expect(await store.put("NEVER", value("late"), { ifNewerThan: { at: 4_000, id: "evt/4" } })).toBe("superseded");
    expect(fake.calls("PUT").length).toBe(puts);
    expect(fake.calls("GET", "/deletedsecrets/NEVER").at(-1)?.status).toBe(200); // the tombstone was read
    expect(await store.put("NEVER", value("later"), { ifNewerThan: { at: 6_000, id: "evt/6" } })).toBe("created");

    // A newer delete of a deleted name moves its tombstone forward.
    await store.put("X", value("x"), { ifNewerThan: { at: 1_000 } });
    expect(await store.delete("X", { ifNewerThan: { at: 2_000 } })).toBe("deleted");
    expect(await store.delete("X", { ifNewerThan: { at: 3_000 } })).toBe("absent");
    expect(tagsOf(fake, "X")?.["llm-secrets:changed-at"]).toBe("3000");
    expect(fake.secret("X")?.deleted).toBeDefined();
    expect(await store.put("X", value("x-late"), { ifNewerThan: { at: 2_500 } })).toBe("superseded");
    expect(await store.get("X")).toBeUndefined();
  });

  it("refuses caller tags that would not fit beside ours in a version's 15, before any write", async () => {
    const fake = await azure();
    const store = await open();
    const eleven = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`t${i}`, "v"]));
    const event = { at: Date.now(), id: "evt-1" }; // an event id makes our fourth tag
    expect(await store.put("T", value("t"), { meta: { tags: eleven }, ifNewerThan: event })).toBe("created");
    expect(Object.keys(tagsOf(fake, "T") ?? {})).toHaveLength(15);
    expect(await codeOf(store.put("T", value("t2"), { meta: { tags: { ...eleven, t11: "v" } } }))).toBe(
      "invalid_request",
    );
    expect(fake.calls("PUT")).toHaveLength(1);
  });

  it("a direct delete of a portal secret whose own tags leave no room for ours deletes it: the tombstone records ours alone", async () => {
    const fake = await azure();
    const store = await quick();
    const thirteen = Object.fromEntries(Array.from({ length: 13 }, (_, i) => [`t${i}`, "v"]));
    fake.seed("PORTAL", value("portal"), thirteen);
    expect(await store.delete("PORTAL")).toBe("deleted");
    expect(fake.secret("PORTAL")?.deleted).toBeDefined();
    const tags = tagsOf(fake, "PORTAL");
    expect(tags).toMatchObject({ "llm-secrets:name": "PORTAL", "llm-secrets:deleted": "true" });
    expect(Number(tags?.["llm-secrets:changed-at"])).toBeGreaterThan(Date.now() - 60_000);
    expect(Object.keys(tags ?? {}).filter((k) => !k.startsWith("llm-secrets:"))).toEqual([]);
    // Its time is recorded: an event older than the delete cannot bring it back.
    expect(await store.put("PORTAL", value("late"), { ifNewerThan: { at: 1_000, id: "e" } })).toBe("superseded");
    expect(logs.some((line) => line.includes("own tags leave no room"))).toBe(true);
  });

  it("a write without tags over a portal secret of 12 tags is store_unavailable naming the secret's tags (its state, as on AWS); tags given replace them", async () => {
    const fake = await azure();
    const store = await quick();
    const twelve = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`t${i}`, "v"]));
    fake.seed("MANY", value("many"), twelve);
    const err = await store.put("MANY", value("next")).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("store_unavailable");
    expect((err as Error).message).toContain("the Key Vault secret MANY holds 12 tags of its own");
    expect(fake.calls("PUT")).toHaveLength(0);
    expect(await store.put("MANY", value("tagged"), { meta: { tags: { env: "prod" } } })).toBe("updated");
    expect((await store.get("MANY"))?.tags).toEqual({ env: "prod" });
  });

  it("a write, and an event's delete, over a tombstone purged between the look and the recover go on as over nothing", async () => {
    const fake = await azure();
    const store = await quick(undefined, purgeBeforeRecover(fake, "GONE"));
    await store.put("GONE", value("g1"));
    await store.delete("GONE");
    const g2 = value("g2");
    expect(await store.put("GONE", g2)).toBe("created"); // it was 500 internal (the recover's 404)
    expect(fake.calls("POST", "/deletedsecrets/GONE/recover").map((r) => r.status)).toEqual([404]);
    expect((await store.get("GONE"))?.value).toBe(g2);

    await store.delete("GONE");
    const at = Date.now() + 60_000; // after the direct delete's time, within the allowed skew
    expect(await store.delete("GONE", { ifNewerThan: { at, id: "e" } })).toBe("absent");
    expect(fake.calls("POST", "/deletedsecrets/GONE/recover").map((r) => r.status)).toEqual([404, 404]);
    expect(fake.secret("GONE")?.deleted).toBeDefined(); // written anew, empty, and deleted: its tombstone
    expect(fake.secret("GONE")?.versions.map((v) => v.value)).toEqual([""]);
    expect(tagsOf(fake, "GONE")).toMatchObject({ "llm-secrets:changed-at": String(at), "llm-secrets:deleted": "true" });
  });

  it("config tags Key Vault could not hold beside ours stop the start, named: more than 11, a name over 512, a value over 256", async () => {
    const fake = await azure();
    const twelve = `{${Array.from({ length: 12 }, (_, i) => `c${i}: v`).join(", ")}}`;
    await expect(readWriteRuntime(fake, `    tags: ${twelve}\n`)).rejects.toThrow(
      /^general_settings\.key_management_settings\.tags: .*give at most 11$/,
    );
    await expect(readWriteRuntime(fake, `    tags: {owner: ${"x".repeat(257)}}\n`)).rejects.toThrow(ConfigError);
    const teams = (tags: string) => `    team_settings: {t1: {prefix_for_stored_virtual_keys: t1/, tags: ${tags}}}\n`;
    await expect(readWriteRuntime(fake, teams(`{${"n".repeat(513)}: v}`))).rejects.toThrow(
      "general_settings.key_management_settings.team_settings.t1.tags: the tag nnnn",
    );
    await expect(readWriteRuntime(fake, teams(`{owner: ${"x".repeat(257)}}`))).rejects.toThrow(
      "general_settings.key_management_settings.team_settings.t1.tags: the tag owner: Azure Key Vault takes tag values of at most 256 characters",
    );
    expect(fake.requests).toHaveLength(0); // refused before any call
    const eleven = `{${Array.from({ length: 11 }, (_, i) => `c${i}: ${"x".repeat(256)}`).join(", ")}}`;
    const runtime = await readWriteRuntime(fake, `    tags: ${eleven}\n${teams(eleven)}`);
    await runtime.close();
  });

  it("the settings' tenant and client ids without a secret (workload or managed identity) leave the credential to DefaultAzureCredential", async () => {
    const fake = await azure();
    // lazyFakeAzure put the service principal in process.env, where DefaultAzureCredential reads it.
    const store = await open({ AZURE_CLIENT_SECRET: undefined });
    const v = value("ids-without-secret");
    expect(await store.put("IDS", v)).toBe("created");
    expect(fake.tokenRequests).toHaveLength(1);
    expect((await store.get("IDS"))?.value).toBe(v);
  });

  it("a write over a tombstone recovers first and takes the creation defaults' tags; the tombstone keeps the caller's tags", async () => {
    const fake = await azure();
    const store = await open();
    await store.put("RT", value("rt1"), { meta: { tags: { env: "old" } } });
    expect(await store.delete("RT")).toBe("deleted");
    expect(tagsOf(fake, "RT")).toMatchObject({ env: "old", "llm-secrets:deleted": "true" });
    const next = value("rt2");
    expect(await store.put("RT", next, { meta: { whenCreated: { tags: { env: "new" } } } })).toBe("created");
    expect(await store.get("RT")).toMatchObject({ value: next, tags: { env: "new" } });
    // Recovered before the write: no write met the deleted name.
    expect(fake.calls("PUT", "/secrets/RT").map((r) => r.status)).toEqual([200, 200]);
  });

  it("a direct delete of a name never written, or already deleted, changes nothing in the vault", async () => {
    const fake = await azure();
    const store = await open();
    expect(await store.delete("NEVER_WRITTEN")).toBe("absent");
    expect(fake.secret(store.keyOf("NEVER_WRITTEN"))).toBeUndefined();
    await store.put("GONE", value("gone"));
    expect(await store.delete("GONE")).toBe("deleted");
    expect(await store.delete("GONE")).toBe("absent");
    expect(fake.calls("POST", "/deletedsecrets/GONE/recover")).toHaveLength(0);
    expect(fake.calls("DELETE", "/secrets/GONE")).toHaveLength(1);
  });

  it("a deleted secret of another spelling is no conflict: the name is made anew", async () => {
    const store = await open();
    await store.put("A_B", value("ab"));
    expect(await store.delete("A_B")).toBe("deleted");
    const mine = value("a-b");
    expect(await store.put("a_b", mine)).toBe("created");
    expect((await store.get("a_b"))?.value).toBe(mine);
    expect(await store.get("A_B")).toBeUndefined();
  });

  it("a read of the secret refused (403) fails the write: nothing is written blind", async () => {
    const fake = await azure();
    const store = await quick();
    await store.put("R", value("r"), { ifNewerThan: { at: 2_000, id: "e2" } });
    fake.fail(1, "denied", "GET /secrets");
    expect(await codeOf(store.put("R", value("late"), { ifNewerThan: { at: 1_000, id: "e1" } }))).toBe(
      "backend_denied",
    );
    expect(fake.calls("PUT", "/secrets/R")).toHaveLength(1);
  });

  it("a secret's caller tags beside our four are kept by a write that gives none", async () => {
    const fake = await azure();
    const store = await open();
    const eleven = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`t${i}`, "v"]));
    await store.put("KEEP", value("k1"), { meta: { tags: eleven }, ifNewerThan: { at: Date.now(), id: "evt-1" } });
    expect(await store.put("KEEP", value("k2"))).toBe("updated");
    expect((await store.get("KEEP"))?.tags).toEqual(eleven);
    expect(Object.keys(tagsOf(fake, "KEEP") ?? {})).toHaveLength(14); // no event id this time
  });

  it("an event id longer than a tag value (256) is recorded as its digest: a redelivery still known, a delete of its time wins", async () => {
    const fake = await azure();
    const store = await open();
    const id = "i".repeat(512); // the schema's longest
    expect(await store.put("LONG_ID", value("l"), { ifNewerThan: { at: 1_000, id } })).toBe("created");
    expect(tagsOf(fake, "LONG-ID")?.["llm-secrets:change-id"]).toMatch(/^#[A-Za-z0-9_-]{43}$/);
    expect(await store.put("LONG_ID", value("again"), { ifNewerThan: { at: 1_000, id } })).toBe("superseded");
    expect(await store.delete("LONG_ID", { ifNewerThan: { at: 1_000, id: "d".repeat(300) } })).toBe("deleted");
    // The longest kept as it is.
    expect(await store.put("KEPT_ID", value("k"), { ifNewerThan: { at: 1_000, id: id.slice(256) } })).toBe("created");
    expect(tagsOf(fake, "KEPT-ID")?.["llm-secrets:change-id"]).toBe(id.slice(256));
  });

  it("a delete wins a tie with a write event: one made in the portal, and one that stopped before its DELETE", async () => {
    const fake = await azure();
    const store = await quick();
    // Deleted in the portal: our tags still say the last change was a write, at 1000.
    await store.put("P", value("p"), { ifNewerThan: { at: 1_000, id: "b" } });
    const portal = fake.secret("P");
    if (portal) portal.deleted = { at: Date.now(), visibleAt: Date.now() };
    expect(await store.put("P", value("tie"), { ifNewerThan: { at: 1_000, id: "c" } })).toBe("superseded");
    // A delete tagged but not done: live, yet a delete at 2000.
    await store.put("H", value("h"), { ifNewerThan: { at: 1_000, id: "a" } });
    fake.fail(1, "denied", "DELETE");
    expect(await codeOf(store.delete("H", { ifNewerThan: { at: 2_000, id: "b" } }))).toBe("backend_denied");
    expect(await store.put("H", value("tie"), { ifNewerThan: { at: 2_000, id: "c" } })).toBe("superseded");
  });

  it("lists by a tag's name only when it maps onto the secret, never a name we could not serve; follows only this vault's /secrets, at each call's page size", async () => {
    const fake = await azure();
    const store = await quick();
    fake.seed("COPY", value("copy"), { "llm-secrets:name": "ORIGINAL" }); // copied under another name
    fake.seed("a----b", value("dots"), { "llm-secrets:name": "a/../b" });
    expect((await store.list({ limit: 25 })).names).toEqual(["COPY"]);

    for (const n of ["p1", "p2", "p3", "p4", "p5"]) await store.put(n, value(n));
    const first = await store.list({ prefix: "p", limit: 2 });
    fake.requests.length = 0;
    await store.list({ prefix: "p", limit: 3, ...(first.cursor !== undefined && { cursor: first.cursor }) });
    expect(fake.calls("GET", "/secrets").find((r) => r.path === "/secrets")?.query.maxresults).toBe("3");

    const before = fake.requests.length;
    const deleted = Buffer.from(`${fake.vaultUrl}/deletedsecrets?api-version=7.6`).toString("base64url");
    expect(await codeOf(store.list({ limit: 2, cursor: deleted }))).toBe("invalid_request");
    expect(fake.requests.length).toBe(before);
  });

  it("listing through a SecretClient made without azureClientOptions is not_supported: its pages could not be followed", async () => {
    const fake = await azure();
    const credential = new ClientSecretCredential(
      FAKE_AZURE_IDENTITY.tenantId,
      FAKE_AZURE_IDENTITY.clientId,
      FAKE_AZURE_IDENTITY.clientSecret,
      azureCredentialOptions({ AZURE_AUTHORITY_HOST: fake.authorityHost }),
    );
    const client = new SecretClient(fake.vaultUrl, credential, { disableChallengeResourceVerification: true });
    const store = new AzureKeyVaultStore({ client, log });
    await store.put("PLAIN", value("plain"));
    expect(await codeOf(store.list({ limit: 10 }))).toBe("not_supported");
  });
});

describe("azure_key_vault disabled secrets", () => {
  it("reads a disabled secret as nothing, and writes (a new enabled version) and deletes it", async () => {
    const fake = await azure();
    const store = await quick();
    fake.seed("OFF", value("disabled"));
    const disable = () => {
      const latest = fake.secret("OFF")?.versions.at(-1);
      if (latest) latest.enabled = false;
    };
    disable();
    expect(await store.get("OFF")).toBeUndefined();
    const next = value("next");
    expect(await store.put("OFF", next)).toBe("updated"); // it was 502 backend_denied
    expect((await store.get("OFF"))?.value).toBe(next);
    disable();
    expect(await store.delete("OFF")).toBe("deleted");
    expect(fake.secret("OFF")?.deleted).toBeDefined();
  });
});

describe("azure_key_vault changes that stop half-way", () => {
  it("a delete that stopped between its tombstone tag and the delete reads as deleted, and its event finishes it", async () => {
    const fake = await azure();
    const store = await quick();
    await store.put("K", value("revoked"), { ifNewerThan: { at: 1_000, id: "e1" } });
    fake.fail(1, "denied", "DELETE");
    expect(await codeOf(store.delete("K", { ifNewerThan: { at: 2_000, id: "e2" } }))).toBe("backend_denied");
    expect(tagsOf(fake, "K")?.["llm-secrets:deleted"]).toBe("true");
    expect(fake.secret("K")?.deleted).toBeUndefined();
    expect(await store.get("K")).toBeUndefined(); // what the vault records is a delete
    expect(await store.delete("K", { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("deleted");
    expect(fake.secret("K")?.deleted).toBeDefined();
    expect(await store.put("K", value("late"), { ifNewerThan: { at: 1_500, id: "e1b" } })).toBe("superseded");
  });

  it("a secret whose delete stopped after its tombstone tag is not listed", async () => {
    const fake = await azure();
    const store = await quick();
    await store.put("HALF", value("half"));
    await store.put("WHOLE", value("whole"));
    fake.fail(1, "denied", "DELETE");
    expect(await codeOf(store.delete("HALF"))).toBe("backend_denied");
    expect(fake.secret("HALF")?.deleted).toBeUndefined();
    expect((await store.list({ limit: 10 })).names).toEqual(["WHOLE"]);
  });
});

describe("azure_key_vault settings", () => {
  it("needs AZURE_KEY_VAULT_URI, an https URL; AZURE_AUTHORITY_HOST is one too", () => {
    const parse = (env: Record<string, string>) => safeParse(AzureKeyVaultSettings, { config: {}, env }).success;
    expect(parse({ AZURE_KEY_VAULT_URI: "https://my-vault.vault.azure.net/" })).toBe(true);
    expect(parse({})).toBe(false);
    expect(parse({ AZURE_KEY_VAULT_URI: "http://my-vault.vault.azure.net/" })).toBe(false);
    expect(parse({ AZURE_KEY_VAULT_URI: "my-vault" })).toBe(false);
    expect(parse({ AZURE_KEY_VAULT_URI: "https://v.vault.azure.net", AZURE_AUTHORITY_HOST: "login" })).toBe(false);
  });

  it("keeps the SDK's challenge check for Key Vault's own domains, and instance discovery for Microsoft's authorities", () => {
    expect(azureClientOptions("https://my-vault.vault.azure.net/").disableChallengeResourceVerification).toBe(false);
    expect(azureClientOptions("https://my-vault.vault.azure.cn/").disableChallengeResourceVerification).toBe(false);
    expect(
      azureClientOptions("https://my-vault.vault.azure.net/").additionalPolicies?.map((p) => p.policy.name),
    ).not.toContain("llmSecretsKeyVaultAudience");
    // A private name or an emulator: the SDK's check cannot pass; the audience check stands in for it.
    const custom = azureClientOptions("https://vault.internal.example:8443/");
    expect(custom.disableChallengeResourceVerification).toBe(true);
    expect(custom.additionalPolicies?.map((p) => p.policy.name)).toContain("llmSecretsKeyVaultAudience");
    expect(azureClientOptions("https://x.vault.azure.net").retryOptions?.maxRetries).toBe(2);
    expect(azureCredentialOptions({})).not.toHaveProperty("disableInstanceDiscovery");
    expect(
      azureCredentialOptions({ AZURE_AUTHORITY_HOST: "https://login.microsoftonline.us" }).disableInstanceDiscovery,
    ).toBe(false);
    expect(azureCredentialOptions({ AZURE_AUTHORITY_HOST: "https://adfs.example.com" }).disableInstanceDiscovery).toBe(
      true,
    );
  });

  it("a host that only ends like a Key Vault domain is not one of Key Vault's", () => {
    expect(azureClientOptions("https://notvault.azure.net/").disableChallengeResourceVerification).toBe(true);
    expect(azureClientOptions("https://my-vault.vault.azure.net/").disableChallengeResourceVerification).toBe(false);
  });
});

describe("azure_key_vault faults (the SDK's 3 attempts, nothing added)", () => {
  async function failing(times: number, fault: AzureFault) {
    const fake = await azure();
    const store = await quick();
    await store.put("F", value("f"));
    fake.requests.length = 0;
    fake.fail(times, fault);
    const started = Date.now();
    const err = await store.get("F").catch((e: unknown) => e);
    return {
      err: err as { code?: string; details?: { retryAfter?: number }; message?: string; value?: string },
      attempts: fake.requests.length,
      ms: Date.now() - started,
    };
  }

  it("403 is backend_denied, at once", async () => {
    const { err, attempts } = await failing(1, "denied");
    expect(err.code).toBe("backend_denied");
    expect(attempts).toBe(1);
  });

  it("429 three times is backend_unavailable with the vault's Retry-After, which the SDK waited each time", async () => {
    const fake = await azure();
    fake.throttleRetryAfter = 2;
    const { err, attempts, ms } = await failing(3, "throttled");
    expect(err.code).toBe("backend_unavailable");
    expect(err.details?.retryAfter).toBe(2);
    expect(attempts).toBe(3);
    expect(ms).toBeGreaterThanOrEqual(4_000);
  });

  it("500 three times is backend_unavailable; once, the SDK's retry answers", async () => {
    const three = await failing(3, "error");
    expect(three.err.code).toBe("backend_unavailable");
    expect(three.attempts).toBe(3);
    const once = await failing(1, "error");
    expect(once.err.value).toMatch(/^f-/);
    expect(once.attempts).toBe(2);
  });

  it("a reset connection three times is backend_unavailable", async () => {
    const { err, attempts } = await failing(3, "reset");
    expect(err.code).toBe("backend_unavailable");
    expect(attempts).toBe(3);
  });

  it("a vault that does not answer is backend_unavailable once the time per attempt passes (not retried)", async () => {
    const { err, attempts, ms } = await failing(3, "hang");
    expect(err.code).toBe("backend_unavailable");
    expect(attempts).toBe(1);
    expect(ms).toBeLessThan(15_000); // one attempt's time, not three: attempts says so exactly
  });

  it("a wrong client secret is refused by the token service: backend_denied", async () => {
    const fake = await azure();
    const wrong = await quick("not-the-secret");
    expect(await codeOf(wrong.get("X"))).toBe("backend_denied");
    expect(fake.tokenRequests.map((t) => t.status)).toEqual([401]);
    expect(fake.requests.map((r) => r.status)).toEqual([401]); // only the challenge reached the vault
  });

  // @azure/identity 4.13 reports every token failure as AuthenticationRequiredError without a
  // status: the classifier tells an outage from a refusal by msal's error code (store-errors.ts).
  it("a token service that is down (503, reset) is backend_unavailable, not backend_denied", async () => {
    const fake = await azure();
    for (const fault of ["error", "reset"] as const) {
      fake.reset();
      fake.failTokens(3, fault); // the identity client's 3 attempts
      const store = await quick();
      expect(await codeOf(store.get("X")), fault).toBe("backend_unavailable");
    }
  });

  it("a vault host outside Key Vault's domains that asks for another audience gets no token: backend_denied", async () => {
    const fake = await azure();
    fake.challengeResource = "https://management.azure.com";
    const store = await quick();
    expect(await codeOf(store.get("X"))).toBe("backend_denied");
    expect(fake.tokenRequests).toEqual([]);
  });

  it("outside Key Vault's domains, a challenge naming any audience but Key Vault's gets no token; Key Vault's as a scope gets one", async () => {
    const fake = await azure();
    for (const resource of [
      'https://management.azure.com", scope="https://vault.azure.net/.default', // one of two audiences is another's
      "https://attacker.example/vault.azure.net", // ends like Key Vault's
    ]) {
      fake.reset();
      fake.challengeResource = resource;
      const store = await quick();
      expect(await codeOf(store.get("X")), resource).toBe("backend_denied");
      expect(fake.tokenRequests, resource).toEqual([]);
    }
    fake.reset();
    fake.challengeScope = "https://vault.azure.net/.default";
    const store = await quick();
    expect(await store.get("X")).toBeUndefined();
    expect(fake.tokenRequests).toHaveLength(1);
  });
});

describe("what the Azure store prints", () => {
  it("never holds a value or the client secret in a log line or an error message", async () => {
    const fake = await azure();
    const store = await quick();
    const v = value("quiet");
    await store.put("Q", v);
    fake.fail(3, "error");
    const err = (await store.get("Q").catch((e: unknown) => e)) as Error;
    expect(values.length).toBeGreaterThan(5);
    expectNoValueIn([...logs, err.message, String(err.stack)], [...values, FAKE_AZURE_IDENTITY.clientSecret]);
  });
});

describe("llm-secrets serve against Azure", () => {
  it("serves the API over Key Vault given only the config file and the environment a service principal sets", async () => {
    const fake = await azure();
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_system: azure_key_vault\n  key_management_settings:\n" +
        "    access_mode: read_and_write\n    tags: {owner: gateway}\n",
      { ...fake.env(), NODE_EXTRA_CA_CERTS: inject("testPki").caFile }, // the fakes' CA, as a user trusts a private one
    );
    try {
      expect(await (await call("GET", "/health")).json()).toMatchObject({ status: "ok", store: "azure_key_vault" });
      const v = value("served");
      expect((await call("PUT", "/v1/secrets/AZURE_API_KEY", { value: v })).status).toBe(201);
      expect(fake.secret("AZURE-API-KEY")?.versions.at(-1)?.value).toBe(v);
      expect(tagsOf(fake, "AZURE-API-KEY")).toMatchObject({ owner: "gateway", "llm-secrets:name": "AZURE_API_KEY" });
      expect(fake.tokenRequests.map((t) => t.status)).toEqual([200]);
      expect(await (await call("GET", "/v1/secrets/AZURE_API_KEY?refresh=true")).json()).toMatchObject({ value: v });
      expect((await call("PUT", "/v1/secrets/AZURE-API-KEY", { value: value("clash") })).status).toBe(409);
      // Past Key Vault's 25 000 bytes: 413 before any call (the vault's 400 was a 500 internal).
      const puts = fake.calls("PUT").length;
      const big = await call("PUT", "/v1/secrets/BIG", { value: `${"é".repeat(12_500)}x` });
      expect(big.status).toBe(413);
      expect(((await big.json()) as { error: { code: string } }).error.code).toBe("payload_too_large");
      expect(fake.calls("PUT")).toHaveLength(puts);
      expect((await call("PUT", "/v1/secrets/BIG", { value: "é".repeat(12_500) })).status).toBe(201);
      expect((await call("DELETE", "/v1/secrets/AZURE_API_KEY")).status).toBe(204);
      expect((await call("GET", "/v1/secrets/AZURE_API_KEY?refresh=true")).status).toBe(404);
      fake.fail(3, "error");
      const down = await call("GET", "/v1/secrets/OTHER");
      expect(down.status).toBe(503);
      expect(down.headers.get("retry-after")).not.toBeNull();
    } finally {
      await server.stop();
    }
    expectNoValueIn([server.output], [...values, FAKE_AZURE_IDENTITY.clientSecret]);
  });
});

describe("outbound TLS settings reach the vault's calls", () => {
  it("a CA bundle without the vault's CA refuses it; ssl_verify false does not check", async () => {
    const fake = await azure();
    const other = makeServerChain(await tempDir());
    const parsed = safeParse(AzureKeyVaultSettings, { config: {}, env: fake.env() });
    if (!parsed.success) throw new Error("invalid test settings");
    const strict = await azureKeyVaultStore.open(parsed.data, { ...deps(), outbound: { caFile: other.rootFile } });
    expect(await codeOf(strict.get("A"))).toBe("store_unavailable");
    expect(fake.requests).toHaveLength(0); // refused at the handshake: nothing reached the vault
    const unchecked = await azureKeyVaultStore.open(parsed.data, {
      ...deps(),
      outbound: { verify: false, caFile: other.rootFile },
    });
    expect(await unchecked.get("A")).toBeUndefined();
    expect(fake.requests.length).toBeGreaterThan(0);
  });
});
