// The `hashicorp_vault` store: its real client (undici) over real TLS sockets against a fake Vault
// (test/fakes/vault.ts) that answers as Vault's HTTP API does. LiteLLM's parity examples (URL,
// namespaces, mount, prefix, auth order), logins and their tokens, KV v2 writes with check-and-set,
// change times in custom metadata, retries and the fault matrix, and the conformance suite.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { copyFile } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { SecretsError } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import { createRuntime } from "../../core/src/runtime";
import { loadSettings } from "../../core/src/settings";
import {
  openVaultStore,
  type VaultEnv,
  type VaultStore,
  vaultAddress,
  vaultConfigOf,
  vaultStore,
} from "../../core/src/stores/vault";
import type { VaultTuning } from "../../core/src/stores/vault-http";
import { makeServerChain } from "../fakes/pki";
import { FakeVault as Fake, type FakeVault, type FakeVaultOptions } from "../fakes/vault";
import {
  codeOf,
  expectNoValueIn,
  listPages,
  makeCertificate,
  newKey,
  secretValue,
  serveStore,
  tempDir,
  until,
} from "../helpers";

const pki = inject("testPki");
const ROOT = newKey("hvs.");
const ROLE_ID = newKey("role-");
const SECRET_ID = newKey("secret-id-");
/** An AppRole login request (for a fault on logins only). */
const isApproleLogin = (r: { method: string; url: string }) =>
  r.method === "POST" && r.url.endsWith("/auth/approle/login");

/** Everything the stores logged and every error message they threw, searched for values at the end. */
const logs: string[] = [];
const errorMessages: string[] = [];
/** Values and credentials the tests used: none may appear in a log line or an error. */
const sensitive: string[] = [ROOT, ROLE_ID, SECRET_ID];
const log = createLogger((line) => logs.push(line), "debug");

const fakes: FakeVault[] = [];
const stores: VaultStore[] = [];
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await Promise.all(fakes.map((f) => f.close()));
});

async function startFake(options: Partial<FakeVaultOptions> = {}): Promise<FakeVault> {
  const fake = await Fake.start({ pki, rootToken: ROOT, ...options });
  fakes.push(fake);
  return fake;
}

/**
 * Short waits so the file runs in seconds; the shape of the policy (3 tries, Retry-After) is the
 * product's. A try's own timeout stays well above what a loaded machine takes (400 ms once timed
 * out a first TLS handshake under CI load, and the retry added a request a test counts): the tests
 * of a backend that does not answer set theirs.
 */
const FAST: Partial<VaultTuning> = { backoffBaseMs: 20, timeoutMs: 5_000 };

/** `now` is the store's wall clock and, unless `tuning.clock` says otherwise, the clock of its token leases too. */
async function open(env: VaultEnv, options: { now?: () => number; tuning?: Partial<VaultTuning> } = {}) {
  const tuning = { ...FAST, ...(options.now && { clock: options.now }), ...options.tuning };
  const store = await openVaultStore(env, { log, now: options.now ?? Date.now }, tuning);
  stores.push(store);
  return store;
}

function value(label: string): string {
  const v = secretValue(label);
  sensitive.push(v);
  return v;
}

/** The typed error a promise is refused with (its message kept for the leak check). */
async function errorOf(promise: Promise<unknown>): Promise<SecretsError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof Error) errorMessages.push(err.message);
    if (err instanceof SecretsError) return err;
    throw err;
  }
  throw new Error("expected a failure");
}

/**
 * A fake logging in by AppRole with 60 s tokens on `clock`, holding A (`{key: "a"}`); and the env
 * that logs in to it. With `namespace`, the login and the secrets are in that namespace.
 */
async function approleOn(
  clock: { now: () => number },
  options: { namespace?: string; policy?: FakeVaultOptions["policy"] } = {},
) {
  const { namespace, policy } = options;
  const mount = namespace ? `${namespace}/secret` : "secret";
  const fake = await startFake({
    ...(namespace && { mounts: [mount] }),
    approle: { roleId: ROLE_ID, secretId: SECRET_ID, ...(namespace && { namespace }) },
    tokenTtlSeconds: 60,
    now: clock.now,
    ...(policy && { policy }),
  });
  fake.seed(`${mount}/A`, { key: "a" });
  const env = {
    HCP_VAULT_ADDR: fake.url,
    ...(namespace && { HCP_VAULT_NAMESPACE: namespace }),
    HCP_VAULT_APPROLE_ROLE_ID: ROLE_ID,
    HCP_VAULT_APPROLE_SECRET_ID: SECRET_ID,
  };
  return { fake, env };
}

/** A clock the fake and the store share, for token lifetimes. */
function manualClock(start = Date.now()) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

const pathOf = (url: string) => url.split("?")[0];

/** The tests' client certificate pair, copied where a test may replace it (a renewal on disk). */
async function clientPairToRenew(): Promise<{ certFile: string; keyFile: string }> {
  const dir = await tempDir();
  const pair = { certFile: join(dir, "client.pem"), keyFile: join(dir, "client-key.pem") };
  await copyFile(pki.clientCertFile, pair.certFile);
  await copyFile(pki.clientKeyFile, pair.keyFile);
  return pair;
}

/** A new pair written over `pair`'s files, as a renewal does; answers the new pair's own files. */
async function renewOnDisk(pair: { certFile: string; keyFile: string }) {
  const renewed = await makeCertificate(await tempDir());
  await copyFile(renewed.certFile, pair.certFile);
  await copyFile(renewed.keyFile, pair.keyFile);
  return renewed;
}

/** The SHA-256 fingerprint of a PEM certificate file, as a TLS peer sees it. */
const fingerprintOf = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

describe("configuration: LiteLLM's rules", () => {
  it("defaults: the local address, mount `secret`, no namespace or prefix", () => {
    const config = vaultConfigOf({ HCP_VAULT_TOKEN: "t" });
    expect(config.address).toBe("http://127.0.0.1:8200");
    expect(config).toMatchObject({ mount: "secret", secretNamespace: undefined, loginNamespace: undefined });
    expect(config.pathPrefix).toBeUndefined();
    expect(vaultAddress("http://vault.test:8200///")).toBe("http://vault.test:8200");
    expect(vaultAddress("  https://vault.test:8200/ ")).toBe("https://vault.test:8200");
  });

  it.each([
    // [HCP_VAULT_NAMESPACE, LOGIN, SECRET] -> [login namespace, secret namespace] (the reference's four cases and more)
    [" admin/ ", undefined, undefined, "admin", "admin"],
    [undefined, " /root/ ", " /teams/team-a/ ", "root", "teams/team-a"],
    ["admin", "root", undefined, "root", "admin"],
    ["admin", undefined, "teams/team-a", "admin", "teams/team-a"],
    ["admin", "   ", " / ", "admin", "admin"],
    [undefined, undefined, undefined, undefined, undefined],
  ])("namespace %j, login %j, secret %j -> login %j, secret %j", (ns, login, secret, wantLogin, wantSecret) => {
    const config = vaultConfigOf({
      HCP_VAULT_TOKEN: "t",
      HCP_VAULT_NAMESPACE: ns,
      HCP_VAULT_LOGIN_NAMESPACE: login,
      HCP_VAULT_SECRET_NAMESPACE: secret,
    });
    expect([config.loginNamespace, config.secretNamespace]).toEqual([wantLogin, wantSecret]);
  });

  it("mount, prefix and AppRole mount are trimmed of spaces and slashes; blank means the default", () => {
    const config = vaultConfigOf({
      HCP_VAULT_MOUNT_NAME: " /kv-prod/ ",
      HCP_VAULT_PATH_PREFIX: " /virtual-keys/ ",
      HCP_VAULT_APPROLE_ROLE_ID: "r",
      HCP_VAULT_APPROLE_SECRET_ID: "s",
      HCP_VAULT_APPROLE_MOUNT_PATH: " /custom-approle/ ",
    });
    expect(config).toMatchObject({ mount: "kv-prod", pathPrefix: "virtual-keys" });
    expect(config.auth).toEqual({ method: "approle", mountPath: "custom-approle", roleId: "r", secretId: "s" });
    const blank = vaultConfigOf({ HCP_VAULT_TOKEN: "t", HCP_VAULT_MOUNT_NAME: " // ", HCP_VAULT_PATH_PREFIX: "/" });
    expect(blank).toMatchObject({ mount: "secret", pathPrefix: undefined });
  });

  it("auth: AppRole > TLS certificate > token, each only when complete; none at all stops the start", () => {
    const all = {
      HCP_VAULT_TOKEN: "t",
      HCP_VAULT_CLIENT_CERT: "/c.pem",
      HCP_VAULT_CLIENT_KEY: "/k.pem",
      HCP_VAULT_APPROLE_ROLE_ID: "r",
      HCP_VAULT_APPROLE_SECRET_ID: "s",
    };
    expect(vaultConfigOf(all).auth.method).toBe("approle");
    expect(vaultConfigOf({ ...all, HCP_VAULT_APPROLE_SECRET_ID: undefined }).auth.method).toBe("cert");
    expect(vaultConfigOf({ HCP_VAULT_CLIENT_CERT: "/c.pem", HCP_VAULT_CLIENT_KEY: "/k.pem" }).auth).toEqual({
      method: "cert",
      role: undefined,
    });
    expect(vaultConfigOf({ HCP_VAULT_TOKEN: "t", HCP_VAULT_CLIENT_CERT: "/c.pem" }).auth.method).toBe("token");
    expect(() => vaultConfigOf({ HCP_VAULT_APPROLE_ROLE_ID: "r" })).toThrow(/HCP_VAULT_TOKEN.*APPROLE.*CLIENT_CERT/);
  });

  it("through loadSettings: read_only by default, HCP_VAULT_REFRESH_INTERVAL, an invalid address names its key", () => {
    const config = "general_settings:\n  key_management_system: hashicorp_vault\n";
    const settings = loadSettings({
      env: { LLM_SECRETS_CONFIG: config, HCP_VAULT_TOKEN: "t", HCP_VAULT_REFRESH_INTERVAL: "120" },
      stores: [vaultStore],
    });
    expect(settings.store).toBe("hashicorp_vault");
    expect(settings.keyManagement.accessMode).toBe("read_only");
    expect(settings.cache.ttlSeconds).toBe(120);
    expect(settings.storeSettings).toEqual({ config: {}, env: { HCP_VAULT_TOKEN: "t" } });
    expect(() =>
      loadSettings({ env: { LLM_SECRETS_CONFIG: config, HCP_VAULT_ADDR: "vault:8200" }, stores: [vaultStore] }),
    ).toThrow(/HCP_VAULT_ADDR/);
  });

  it("a credential pair set by half is ignored with a warning naming the missing half", async () => {
    const before = logs.length;
    await open({ HCP_VAULT_TOKEN: ROOT, HCP_VAULT_APPROLE_ROLE_ID: ROLE_ID, HCP_VAULT_CLIENT_KEY: pki.clientKeyFile });
    const warnings = logs.slice(before).map((line) => JSON.parse(line));
    expect(warnings.map((w) => [w.level, w.missing])).toEqual([
      ["warn", "HCP_VAULT_APPROLE_SECRET_ID"],
      ["warn", "HCP_VAULT_CLIENT_CERT"],
    ]);
  });

  it("an unreadable client certificate stops the start, naming the variable and not the path", async () => {
    const env = { HCP_VAULT_CLIENT_CERT: "/nonexistent/llm-secrets/c.pem", HCP_VAULT_CLIENT_KEY: pki.clientKeyFile };
    const err = await openVaultStore(env, { log, now: Date.now }).catch((e: Error) => e);
    expect((err as Error).message).toMatch(/^HCP_VAULT_CLIENT_CERT: cannot read the file \(ENOENT\)$/);
  });
});

describe("requests on the wire", () => {
  it("reads, writes and deletes at /v1/{secret ns}/{mount}/data/{name}: token header, no namespace header", async () => {
    const fake = await startFake({ mounts: ["admin/secret"] });
    const store = await open({ HCP_VAULT_ADDR: `${fake.url}///`, HCP_VAULT_TOKEN: ROOT, HCP_VAULT_NAMESPACE: "admin" });
    const v = value("sample");
    expect(await store.put("sample-secret", v)).toBe("created");
    expect(await store.get("sample-secret")).toMatchObject({ value: v, version: "1" });
    expect(await store.delete("sample-secret")).toBe("deleted");
    expect(await store.get("sample-secret")).toBeUndefined();

    const secretRequests = fake.requests;
    expect(secretRequests.map((r) => `${r.method} ${pathOf(r.url)}`)).toEqual([
      "GET /v1/admin/secret/metadata/sample-secret",
      "GET /v1/admin/sys/internal/ui/mounts/secret", // nothing there yet: is this KV version 2?
      "POST /v1/admin/secret/data/sample-secret",
      "POST /v1/admin/secret/metadata/sample-secret",
      "GET /v1/admin/secret/data/sample-secret",
      "GET /v1/admin/secret/metadata/sample-secret",
      "DELETE /v1/admin/secret/data/sample-secret",
      "POST /v1/admin/secret/metadata/sample-secret",
      "GET /v1/admin/secret/data/sample-secret",
    ]);
    for (const r of secretRequests) {
      expect(r.headers["x-vault-token"]).toBe(ROOT);
      expect(r.headers["x-vault-namespace"]).toBeUndefined();
    }
    const write = secretRequests[2];
    expect(write?.body).toEqual({ options: { cas: 0 }, data: { key: v } });
    expect(write?.headers["content-type"]).toBe("application/json");
  });

  it("every request carries X-Vault-Request: true, as Vault's own clients send it (an Agent or Proxy listener requires it)", async () => {
    const clock = manualClock();
    const fake = await startFake({
      approle: { roleId: ROLE_ID, secretId: SECRET_ID },
      tokenTtlSeconds: 60,
      now: clock.now,
      requireRequestHeader: true,
      policy: (_m, path) => path !== "secret/data/FORBIDDEN",
    });
    const store = await open(
      { HCP_VAULT_ADDR: fake.url, HCP_VAULT_APPROLE_ROLE_ID: ROLE_ID, HCP_VAULT_APPROLE_SECRET_ID: SECRET_ID },
      { now: clock.now },
    );
    const v = value("agent");
    expect(await store.put("team/AGENT", v, { ifNewerThan: { at: Date.now(), id: "evt-agent" } })).toBe("created");
    expect((await store.get("team/AGENT"))?.value).toBe(v);
    expect((await store.list({ limit: 10 })).names).toEqual(["team/AGENT"]);
    clock.advance(2_000);
    expect((await errorOf(store.get("FORBIDDEN"))).code).toBe("backend_denied"); // lookup-self
    clock.advance(40_000); // renew-self
    expect(await store.delete("team/AGENT")).toBe("deleted");
    const paths = new Set(fake.requests.map((r) => `${r.method} ${pathOf(r.url)}`));
    for (const call of [
      "POST /v1/auth/approle/login",
      "GET /v1/auth/token/lookup-self",
      "POST /v1/auth/token/renew-self",
    ]) {
      expect(paths).toContain(call);
    }
    expect(paths).toContain("GET /v1/secret/metadata/team/"); // LIST as GET ?list=true
    expect(fake.requests.filter((r) => r.headers["x-vault-request"] !== "true")).toEqual([]);
  });

  it("mount and prefix from the reference: /v1/kv-prod/data/virtual-keys/DB_PASSWORD", async () => {
    const fake = await startFake({ mounts: ["kv-prod"] });
    fake.seed("kv-prod/virtual-keys/DB_PASSWORD", { key: "db-value", password: "other-field" });
    const env = {
      HCP_VAULT_ADDR: fake.url,
      HCP_VAULT_TOKEN: ROOT,
      HCP_VAULT_MOUNT_NAME: " /kv-prod/ ",
      HCP_VAULT_PATH_PREFIX: " /virtual-keys/ ",
    };
    const store = await open(env);
    expect(store.keyOf("DB_PASSWORD")).toBe("kv-prod/data/virtual-keys/DB_PASSWORD");
    expect((await store.get("DB_PASSWORD"))?.value).toBe("db-value");
    expect(pathOf(fake.requests[0]?.url ?? "")).toBe("/v1/kv-prod/data/virtual-keys/DB_PASSWORD");
  });

  it("encodes every path segment: namespace, mount, prefix and name; a name's slashes nest", async () => {
    const fake = await startFake({ mounts: ["teams/team a/kv+prod"] });
    const store = await open({
      HCP_VAULT_ADDR: fake.url,
      HCP_VAULT_TOKEN: ROOT,
      HCP_VAULT_SECRET_NAMESPACE: "teams/team a",
      HCP_VAULT_MOUNT_NAME: "kv+prod",
      HCP_VAULT_PATH_PREFIX: "p=q",
    });
    const v = value("encoded");
    await store.put("team/user@example.com", v);
    expect((await store.get("team/user@example.com"))?.value).toBe(v);
    const read = fake.calls("GET", /\/data\//)[0];
    expect(pathOf(read?.url ?? "")).toBe("/v1/teams/team%20a/kv%2Bprod/data/p%3Dq/team/user%40example.com");
    expect(fake.kv("teams/team a/kv+prod/p=q/team/user@example.com")?.live).toBe(true);
    // A name that would leave its path is refused before any request.
    const before = fake.requests.length;
    expect(await codeOf(store.get("a/../b"))).toBe("invalid_name");
    expect(fake.requests.length).toBe(before);
  });

  it("reads a secret LiteLLM wrote (value at data.data.key); one without a string `key` is no secret", async () => {
    const fake = await startFake();
    fake.seed("secret/OPENAI_API_KEY", { key: "sk-from-vault" });
    fake.seed("secret/NO_KEY_FIELD", { password: "p" });
    fake.seed("secret/NUMBER", { key: 42 });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    const read = await store.get("OPENAI_API_KEY");
    expect(read?.value).toBe("sk-from-vault");
    expect(read?.version).toBe("1");
    expect(Math.abs((read?.updatedAt?.getTime() ?? 0) - Date.now())).toBeLessThan(5_000);
    expect(await store.get("NO_KEY_FIELD")).toBeUndefined();
    expect(await store.get("NUMBER")).toBeUndefined();
    expect(await store.get("MISSING")).toBeUndefined();
  });

  it("lists with LIST on the metadata folders the prefix reaches (GET ?list=true), tombstones left out, paged here", async () => {
    const fake = await startFake({ mounts: ["kv-prod"] });
    for (const name of ["A", "B", "team/C", "team/D", "team/deep/E", "other/F", "team-x"]) {
      fake.seed(`kv-prod/apps/${name}`, { key: `v-${name}` });
    }
    fake.seed("kv-prod/apps/team/has space", { key: "not one of our names" });
    fake.seed("kv-prod/elsewhere/team/Z", { key: "outside the path prefix" });
    const env = { HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT, HCP_VAULT_MOUNT_NAME: "kv-prod" };
    const store = await open({ ...env, HCP_VAULT_PATH_PREFIX: "apps" });
    await store.put("team/GONE", value("gone"));
    expect(await store.delete("team/GONE")).toBe("deleted");
    expect(await store.delete("team/NEVER", { ifNewerThan: { at: 5_000 } })).toBe("absent"); // metadata alone
    expect(fake.kv("kv-prod/apps/team/GONE")?.live).toBe(false);
    fake.requests.length = 0;

    const { pages } = await listPages(store.list.bind(store), { prefix: "team/", limit: 2 });
    expect(pages).toEqual([["team/C", "team/D"], ["team/deep/E"]]);
    const lists = fake.requests.filter((r) => r.url.endsWith("?list=true"));
    expect(lists.every((r) => r.method === "GET" && r.headers["x-vault-token"] === ROOT)).toBe(true);
    // Only the folders the prefix reaches, once per page: never the root, never other/.
    expect([...new Set(lists.map((r) => pathOf(r.url)))]).toEqual([
      "/v1/kv-prod/metadata/apps/team/",
      "/v1/kv-prod/metadata/apps/team/deep/",
    ]);

    expect(await store.list({ limit: 100 })).toEqual({
      names: ["A", "B", "other/F", "team-x", "team/C", "team/D", "team/deep/E"],
    });
    expect((await store.list({ prefix: "team", limit: 100 })).names).toEqual([
      "team-x",
      "team/C",
      "team/D",
      "team/deep/E",
    ]);
    // An empty folder is a 404 to Vault and no names to us; a prefix no name can have asks nothing.
    expect(await store.list({ prefix: "nothing/", limit: 10 })).toEqual({ names: [] });
    const before = fake.requests.length;
    expect(await store.list({ prefix: "../", limit: 10 })).toEqual({ names: [] });
    expect(fake.requests.length).toBe(before);

    // A policy without the list capability: backend_denied.
    const strict = await startFake({ mounts: ["kv-prod"], policy: (method) => method !== "LIST" });
    const refused = await open({ ...env, HCP_VAULT_ADDR: strict.url });
    expect((await errorOf(refused.list({ limit: 10 }))).code).toBe("backend_denied");
  });

  it("a page reads at most max(64, 4 x limit) names' metadata: past many tombstones it ends short (even empty) with a cursor, and paging on finds the live names", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    // Vault's LIST returns deleted names too, for as long as their metadata stays (forever).
    const TOMBSTONES = 300;
    for (let i = 0; i < TOMBSTONES; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, async (_, j) => {
          const name = `vk/key-${String(i + j).padStart(4, "0")}`;
          await store.put(name, "v");
          await store.delete(name);
        }),
      );
    }
    await store.put("vk/aa-live", value("first"));
    await store.put("vk/zz-live", value("last"));

    const pages: { names: string[]; cursor?: string; lists: number; reads: number }[] = [];
    let cursor: string | undefined;
    do {
      const before = fake.requests.length;
      const page = await store.list({ limit: 10, ...(cursor !== undefined && { cursor }) });
      const made = fake.requests.slice(before);
      const lists = made.filter((r) => r.url.endsWith("?list=true")).length;
      pages.push({ ...page, lists, reads: made.length - lists });
      cursor = page.cursor;
    } while (cursor !== undefined && pages.length < 50);
    // The two folders' LISTs (the root and vk/) and at most 64 metadata reads a call, whatever lies behind the page.
    expect(pages.every((p) => p.lists === 2)).toBe(true);
    expect(Math.max(...pages.map((p) => p.reads))).toBeLessThanOrEqual(64);
    expect(pages.flatMap((p) => p.names)).toEqual(["vk/aa-live", "vk/zz-live"]);
    expect(pages.at(-1)?.cursor).toBeUndefined();
    // Pages in between found only tombstones: empty, yet with a cursor (so a client pages on).
    expect(pages.some((p) => p.names.length === 0 && p.cursor !== undefined)).toBe(true);
    expect(pages.length).toBeLessThanOrEqual(Math.ceil((TOMBSTONES + 2) / 64) + 1);

    // Through the API: a client that follows next_cursor past empty pages reaches the live names.
    const masterKey = newKey();
    const runtime = await createRuntime({
      stores: [vaultStore],
      settings: { env: { LITELLM_MASTER_KEY: masterKey, HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT } },
      log,
      audit: () => {},
    });
    try {
      const names: string[] = [];
      let next: string | undefined;
      let empty = 0;
      for (let i = 0; i < 50; i++) {
        const path = `/v1/secrets?prefix=vk/&limit=10${next ? `&cursor=${encodeURIComponent(next)}` : ""}`;
        const res = await runtime.fetch(
          new Request(`http://localhost${path}`, { headers: { authorization: `Bearer ${masterKey}` } }),
          { path },
        );
        expect(res.status).toBe(200);
        const body = (await res.json()) as { names: string[]; next_cursor?: string };
        names.push(...body.names);
        if (body.names.length === 0 && body.next_cursor) empty++;
        next = body.next_cursor;
        if (!next) break;
      }
      expect(names).toEqual(["vk/aa-live", "vk/zz-live"]);
      expect(empty).toBeGreaterThan(0);
    } finally {
      await runtime.close();
    }
  });

  it("keeps its TLS connections alive across sequential calls, and resumes the TLS session on a new one", async () => {
    const fake = await startFake();
    fake.seed("secret/A", { key: "a" });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    for (let i = 0; i < 20; i++) expect((await store.get("A"))?.value).toBe("a");
    // undici may open a second connection while the first is finishing its answer; no more.
    expect(new Set(fake.requests.map((r) => r.connection)).size).toBeLessThanOrEqual(2);
    const firstOnEach = fake.requests.filter(
      (r, i) => fake.requests.findIndex((q) => q.connection === r.connection) === i,
    );
    expect(firstOnEach.map((r) => r.resumed)).toEqual(firstOnEach.map((_, i) => i > 0));
  });

  it("verifies the server's certificate: one the system and NODE_EXTRA_CA_CERTS do not trust is refused", async () => {
    const dir = await tempDir();
    const { keyFile, certFile } = await makeCertificate(dir);
    const { readFileSync } = await import("node:fs");
    let answered = 0;
    const server = createServer({ key: readFileSync(keyFile), cert: readFileSync(certFile) }, (_, res) => {
      answered++;
      res.end("{}");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const port = (server.address() as AddressInfo).port;
      const store = await open({ HCP_VAULT_ADDR: `https://localhost:${port}`, HCP_VAULT_TOKEN: ROOT });
      const err = await errorOf(store.get("A"));
      expect(err.code).not.toBe("backend_unavailable"); // not retried as if Vault were down
      expect(answered).toBe(0);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it("a page whose last names are tombstones ends without a cursor", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    for (const name of ["A", "B", "C", "D"]) await store.put(name, value(name));
    for (const name of ["A", "D"]) await store.delete(name);
    expect(await store.list({ limit: 2 })).toEqual({ names: ["B", "C"] });
  });

  it("a page that ran out of metadata reads goes on from the last name read: the next one is not skipped", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    // Exactly one page's worth of reads (64) of tombstones, then a live name: the 65th.
    await Promise.all(
      Array.from({ length: 64 }, async (_, i) => {
        const name = `key-${String(i).padStart(2, "0")}`;
        await store.put(name, "v");
        await store.delete(name);
      }),
    );
    await store.put("live", value("live"));
    const first = await store.list({ limit: 10 });
    expect(first.names).toEqual([]);
    expect(first.cursor).toBeDefined();
    expect((await listPages(store.list.bind(store), { limit: 10 })).names).toEqual(["live"]);
  });

  it("a folder no name of ours can be under is not listed; an empty key in a LIST answer is no folder", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    fake.seed("secret/bad folder/X", { key: "x" });
    fake.seed("secret/team/X", { key: "x" });
    expect((await store.list({ limit: 10 })).names).toEqual(["team/X"]);
    expect(fake.requests.filter((r) => r.url.includes("bad%20folder"))).toEqual([]);
    fake.inject({ kind: "status", status: 200, body: { data: { keys: ["", "X"] } } }, 1, (r) =>
      r.url.includes("/metadata/team/?list=true"),
    );
    expect((await store.list({ prefix: "team/", limit: 10 })).names).toEqual(["team/X"]);
  });

  it("a value over 256 KiB is payload_too_large through the API, before any call", async () => {
    const fake = await startFake();
    const { runtime, masterKey } = await teamRuntime(
      fake,
      "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n",
    );
    try {
      const put = (bytes: number) =>
        runtime.fetch(
          new Request("http://localhost/v1/secrets/BIG", {
            method: "PUT",
            headers: { authorization: `Bearer ${masterKey}` },
            body: JSON.stringify({ value: "v".repeat(bytes) }),
          }),
          { path: "/v1/secrets/BIG" },
        );
      expect((await put(256 * 1024 + 1)).status).toBe(413);
      expect(fake.requests).toHaveLength(0);
      expect((await put(256 * 1024)).status).toBe(201);
    } finally {
      await runtime.close();
    }
  });
});

describe("logins", () => {
  const NAMESPACE_CASES: [Record<string, string>, string | undefined, string][] = [
    [{ HCP_VAULT_LOGIN_NAMESPACE: "root", HCP_VAULT_SECRET_NAMESPACE: "teams/team-a" }, "root", "teams/team-a"],
    [{ HCP_VAULT_NAMESPACE: "admin" }, "admin", "admin"],
    [{ HCP_VAULT_NAMESPACE: "admin", HCP_VAULT_LOGIN_NAMESPACE: "root" }, "root", "admin"],
    [{ HCP_VAULT_NAMESPACE: "admin", HCP_VAULT_SECRET_NAMESPACE: "teams/team-a" }, "admin", "teams/team-a"],
    [{}, undefined, ""],
  ];

  it.each(NAMESPACE_CASES)("AppRole with %j: login in namespace %j, secrets under /v1/%s", async (env, login, ns) => {
    const mount = ns ? `${ns}/secret` : "secret";
    const approle = {
      mountPath: "custom-approle",
      roleId: ROLE_ID,
      secretId: SECRET_ID,
      ...(login && { namespace: login }),
    };
    const fake = await startFake({ mounts: [mount], approle });
    fake.seed(`${mount}/OPENAI_API_KEY`, { key: "sk-approle" });
    const store = await open({
      HCP_VAULT_ADDR: fake.url,
      HCP_VAULT_APPROLE_ROLE_ID: ROLE_ID,
      HCP_VAULT_APPROLE_SECRET_ID: SECRET_ID,
      HCP_VAULT_APPROLE_MOUNT_PATH: " /custom-approle/ ",
      ...env,
    });
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe("sk-approle");
    const [loginRequest, read] = fake.requests;
    expect(`${loginRequest?.method} ${loginRequest?.url}`).toBe("POST /v1/auth/custom-approle/login");
    expect(loginRequest?.body).toEqual({ role_id: ROLE_ID, secret_id: SECRET_ID });
    expect(loginRequest?.headers["x-vault-namespace"]).toBe(login);
    expect(loginRequest?.headers["x-vault-token"]).toBeUndefined();
    expect(read?.url).toBe(`/v1/${mount}/data/OPENAI_API_KEY`);
    expect(read?.headers["x-vault-token"]).toMatch(/^hvs\./);
    expect(read?.headers["x-vault-namespace"]).toBeUndefined();
  });

  it("a policy's 403 in a namespace: the token is looked up in its own namespace, and no second login follows", async () => {
    const clock = manualClock();
    const policy = (_m: string, path: string) => !path.endsWith("/data/FORBIDDEN");
    const { fake, env } = await approleOn(clock, { namespace: "admin", policy });
    const store = await open(env, { now: clock.now });
    expect((await store.get("A"))?.value).toBe("a");
    clock.advance(2_000);
    expect((await errorOf(store.get("FORBIDDEN"))).code).toBe("backend_denied");
    const lookups = fake.requests.filter((r) => pathOf(r.url)?.endsWith("/auth/token/lookup-self"));
    expect(lookups.map((r) => r.headers["x-vault-namespace"])).toEqual(["admin"]);
    expect(fake.calls("POST", /\/auth\/approle\/login$/)).toHaveLength(1);
  });

  it("TLS certificate login over mutual TLS: the login override's namespace, the role's name", async () => {
    const fake = await startFake({ mounts: ["admin/secret"], certRole: { name: "test-role", namespace: "root" } });
    fake.seed("admin/secret/sample-secret-mock", { key: "sk-from-vault" });
    const store = await open({
      HCP_VAULT_ADDR: fake.url,
      HCP_VAULT_NAMESPACE: "admin",
      HCP_VAULT_LOGIN_NAMESPACE: "root",
      HCP_VAULT_CLIENT_CERT: pki.clientCertFile,
      HCP_VAULT_CLIENT_KEY: pki.clientKeyFile,
      HCP_VAULT_CERT_ROLE: "test-role",
      HCP_VAULT_TOKEN: ROOT, // lower in the order: not used
    });
    expect((await store.get("sample-secret-mock"))?.value).toBe("sk-from-vault");
    const [login, read] = fake.requests;
    expect(`${login?.method} ${login?.url}`).toBe("POST /v1/auth/cert/login");
    expect(login?.body).toEqual({ name: "test-role" });
    expect(login?.headers["x-vault-namespace"]).toBe("root");
    expect(login?.clientCertificate).toBe(true);
    expect(read?.url).toBe("/v1/admin/secret/data/sample-secret-mock");
    expect(read?.headers["x-vault-token"]).not.toBe(ROOT);
    expect(read?.headers["x-vault-token"]).toMatch(/^hvs\./);
  });

  it("AppRole wins over a certificate and a token: only the AppRole login is made", async () => {
    const fake = await startFake({
      approle: { roleId: ROLE_ID, secretId: SECRET_ID },
      certRole: { name: "test-role" },
    });
    fake.seed("secret/A", { key: "a" });
    const store = await open({
      HCP_VAULT_ADDR: fake.url,
      HCP_VAULT_TOKEN: ROOT,
      HCP_VAULT_CLIENT_CERT: pki.clientCertFile,
      HCP_VAULT_CLIENT_KEY: pki.clientKeyFile,
      HCP_VAULT_APPROLE_ROLE_ID: ROLE_ID,
      HCP_VAULT_APPROLE_SECRET_ID: SECRET_ID,
    });
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.requests.map((r) => r.url)).toEqual(["/v1/auth/approle/login", "/v1/secret/data/A"]);
  });

  it("a certificate the Vault's CA did not sign is refused: backend_denied", async () => {
    const { keyFile, certFile } = await makeCertificate(await tempDir());
    const fake = await startFake({ certRole: { name: "test-role" } });
    const store = await open({
      HCP_VAULT_ADDR: fake.url,
      HCP_VAULT_CLIENT_CERT: certFile,
      HCP_VAULT_CLIENT_KEY: keyFile,
    });
    expect((await errorOf(store.get("A"))).code).toBe("backend_denied");
    expect(fake.requests[0]?.clientCertificate).toBe(false);
    expect(fake.requests).toHaveLength(1); // a refused login is not retried, and no secret call follows
  });

  it("a client certificate renewed on disk is the one the next login presents (LiteLLM makes its client at each cert login)", async () => {
    // The files a rotation tool keeps: first a certificate Vault's CA did not sign (one expired,
    // as far as Vault is concerned), then the renewed one, written in place.
    const untrusted = await makeCertificate(await tempDir());
    const dir = await tempDir();
    const certFile = join(dir, "client.pem");
    const keyFile = join(dir, "client-key.pem");
    await copyFile(untrusted.certFile, certFile);
    await copyFile(untrusted.keyFile, keyFile);
    const fake = await startFake({ certRole: { name: "test-role" } });
    fake.seed("secret/A", { key: "a" });
    const clock = manualClock(); // the leases' (a young token is not replaced after a 403)
    const store = await open(
      { HCP_VAULT_ADDR: fake.url, HCP_VAULT_CLIENT_CERT: certFile, HCP_VAULT_CLIENT_KEY: keyFile },
      { tuning: { clock: clock.now } },
    );
    const logins = () => fake.calls("POST", /\/auth\/cert\/login$/);
    expect((await errorOf(store.get("A"))).code).toBe("backend_denied");
    expect(logins().map((r) => r.presented)).toEqual([fingerprintOf(untrusted.certFile)]);

    await copyFile(pki.clientCertFile, certFile);
    await copyFile(pki.clientKeyFile, keyFile);
    expect((await store.get("A"))?.value).toBe("a"); // was backend_denied until a restart
    const renewed = logins()[1];
    expect(renewed?.presented).toBe(fingerprintOf(pki.clientCertFile));
    expect(renewed?.clientCertificate).toBe(true);
    expect(fake.requests.at(-1)?.presented).toBe(fingerprintOf(pki.clientCertFile)); // the read too

    // A rotation half written (the new certificate, the old key): the pair in use stays, said once
    // per login, and the next login looks again.
    await copyFile(untrusted.certFile, certFile);
    clock.advance(2_000);
    fake.revokeLoginTokens();
    expect((await store.get("A"))?.value).toBe("a");
    expect(logins().at(-1)?.presented).toBe(fingerprintOf(pki.clientCertFile));
    const warned = logs.map((l) => JSON.parse(l)).filter((l) => l.msg.includes("no usable pair"));
    expect(warned).toEqual([expect.objectContaining({ variable: "HCP_VAULT_CLIENT_CERT / HCP_VAULT_CLIENT_KEY" })]);
    await copyFile(untrusted.keyFile, keyFile); // the key follows: the next login presents the pair
    clock.advance(31_000); // past the hold on replacing a token a 403 brought
    fake.revokeLoginTokens();
    expect((await errorOf(store.get("A"))).code).toBe("backend_denied");
    expect(logins().at(-1)?.presented).toBe(fingerprintOf(untrusted.certFile));
    expectNoValueIn(logs, [readFileSync(untrusted.keyFile, "utf8"), readFileSync(pki.clientKeyFile, "utf8")]);
  });

  it("a client certificate renewed on disk is presented from the next token renewal too, not only at a login", async () => {
    // A listener that requires client certificates refuses a new connection with an expired one:
    // the renewal must not go out on the old pair.
    const { certFile, keyFile } = await clientPairToRenew();
    const clock = manualClock();
    const fake = await startFake({ certRole: { name: "test-role" }, tokenTtlSeconds: 60, now: clock.now });
    fake.seed("secret/A", { key: "a" });
    const store = await open(
      { HCP_VAULT_ADDR: fake.url, HCP_VAULT_CLIENT_CERT: certFile, HCP_VAULT_CLIENT_KEY: keyFile },
      { now: clock.now },
    );
    expect((await store.get("A"))?.value).toBe("a");
    const renewed = await renewOnDisk({ certFile, keyFile });
    clock.advance(45_000); // past two thirds of the lease: the next call renews the token
    expect((await store.get("A"))?.value).toBe("a");
    const renewal = fake.calls("POST", /\/auth\/token\/renew-self$/);
    expect(renewal.map((r) => r.presented)).toEqual([fingerprintOf(renewed.certFile)]);
    expect(fake.calls("POST", /\/auth\/cert\/login$/)).toHaveLength(1);
  });

  it("a client certificate renewed on disk is presented within a minute, whatever the token's lease (weeks between renewals)", async () => {
    const { certFile, keyFile } = await clientPairToRenew();
    const clock = manualClock();
    const fake = await startFake({ certRole: { name: "test-role" }, tokenTtlSeconds: 768 * 3600, now: clock.now });
    fake.seed("secret/A", { key: "a" });
    const store = await open(
      { HCP_VAULT_ADDR: fake.url, HCP_VAULT_CLIENT_CERT: certFile, HCP_VAULT_CLIENT_KEY: keyFile },
      { now: clock.now },
    );
    expect((await store.get("A"))?.value).toBe("a");
    const renewed = await renewOnDisk({ certFile, keyFile });
    clock.advance(61_000);
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.requests.at(-1)?.presented).toBe(fingerprintOf(renewed.certFile));
    expect(fake.calls("POST", /\/auth\/(cert\/login|token\/renew-self)$/)).toHaveLength(1); // the first login only
  });

  it("a refused AppRole login is backend_denied and says nothing of the credentials", async () => {
    const fake = await startFake({ approle: { roleId: ROLE_ID, secretId: "another" } });
    const store = await open({
      HCP_VAULT_ADDR: fake.url,
      HCP_VAULT_APPROLE_ROLE_ID: ROLE_ID,
      HCP_VAULT_APPROLE_SECRET_ID: SECRET_ID,
    });
    const err = await errorOf(store.get("A"));
    expect(err.code).toBe("backend_denied");
    expect(err.message).toBe(
      "vault get (approle login): the backend refused our identity (HTTP 400, AuthenticationError)",
    );
  });

  async function approleStore(options: Partial<FakeVaultOptions> = {}) {
    const clock = manualClock();
    const fake = await startFake({
      approle: { roleId: ROLE_ID, secretId: SECRET_ID },
      tokenTtlSeconds: 60,
      now: clock.now,
      ...options,
    });
    fake.seed("secret/A", { key: "a" });
    const store = await open(
      { HCP_VAULT_ADDR: fake.url, HCP_VAULT_APPROLE_ROLE_ID: ROLE_ID, HCP_VAULT_APPROLE_SECRET_ID: SECRET_ID },
      { now: clock.now },
    );
    const logins = () => fake.calls("POST", /\/auth\/approle\/login$/).length;
    const renewals = () => fake.calls("POST", /\/auth\/token\/renew-self$/).length;
    const tokens = () => new Set(fake.calls("GET", /\/data\//).map((r) => r.headers["x-vault-token"]));
    return { clock, fake, store, logins, renewals, tokens };
  }

  it("caches the login token for its lease and shares one login among concurrent calls", async () => {
    const { clock, store, logins, tokens } = await approleStore();
    const reads = await Promise.all(Array.from({ length: 10 }, () => store.get("A")));
    expect(reads.map((r) => r?.value)).toEqual(Array(10).fill("a"));
    clock.advance(30_000); // half the lease: no renewal yet
    await store.get("A");
    expect(logins()).toBe(1);
    expect(tokens().size).toBe(1);
  });

  it("a 403 on a token under a second old brings no new login: Vault may not have caught up with it yet", async () => {
    const clock = manualClock();
    const { fake, env } = await approleOn(clock);
    const store = await open(env, { now: clock.now });
    await store.get("A");
    fake.revokeLoginTokens();
    clock.advance(500);
    expect((await errorOf(store.get("A"))).code).toBe("backend_denied");
    // One login: another would spend a use of the secret_id on a token that may be fine.
    expect(fake.calls("POST", /\/auth\/approle\/login$/)).toHaveLength(1);
  });

  it("a renewal failing until the lease ends fails the call: the ended token is never sent", async () => {
    const clock = manualClock();
    const { fake, env } = await approleOn(clock);
    // Each wait between renewal tries takes 10 s of the lease.
    const store = await open(env, { now: clock.now, tuning: { sleep: async () => void clock.advance(10_000) } });
    await store.get("A");
    clock.advance(41_000); // due for renewal, 19 s of the lease left
    fake.inject({ kind: "status", status: 503 }, 3, (r) => r.url.endsWith("/renew-self"));
    const reads = () => fake.calls("GET", /\/data\//).length;
    const before = reads();
    expect((await errorOf(store.get("A"))).code).toBe("backend_unavailable");
    expect(reads()).toBe(before);
  });

  it("a login that fails while the token's lease runs (logins throttled) keeps the token until the lease ends", async () => {
    // 60 s tokens, at most 65 s: the renewal at 41 s is capped to 24 s, so the next refresh is a login.
    const { clock, fake, store, logins, tokens } = await approleStore({ tokenMaxTtlSeconds: 65 });
    await store.get("A");
    clock.advance(41_000);
    expect((await store.get("A"))?.value).toBe("a");
    clock.advance(17_000); // 58 s: past two thirds of the capped lease, which ends at 65 s
    fake.inject({ kind: "status", status: 429, retryAfter: "0" }, 3, (r) => r.url.endsWith("/approle/login"));
    expect((await store.get("A"))?.value).toBe("a"); // with the token it has
    expect([logins(), tokens().size]).toEqual([4, 1]); // the first login, then three refused tries
    clock.advance(8_000); // 66 s: the lease has ended: a login, which Vault now takes
    expect((await store.get("A"))?.value).toBe("a");
    expect([logins(), tokens().size]).toEqual([5, 2]);
  });

  /** A store logged in with the tests' client certificate, on a clock of its own; 60 s tokens. */
  async function certStore() {
    const clock = manualClock();
    const fake = await startFake({ certRole: { name: "test-role" }, tokenTtlSeconds: 60, now: clock.now });
    fake.seed("secret/A", { key: "a" });
    const store = await open(
      { HCP_VAULT_ADDR: fake.url, HCP_VAULT_CLIENT_CERT: pki.clientCertFile, HCP_VAULT_CLIENT_KEY: pki.clientKeyFile },
      { now: clock.now },
    );
    return { clock, fake, store };
  }

  it("cert auth: a renewal Vault refuses with 500 (a changed certificate or policies) brings a login, not renewals until the lease ends", async () => {
    const { clock, fake, store } = await certStore();
    await store.get("A");
    clock.advance(41_000);
    const refusal = { errors: ["failed to renew entry: policies have changed, not renewing"] };
    fake.inject({ kind: "status", status: 500, body: refusal }, 3, (r) => r.url.endsWith("/renew-self"));
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.calls("POST", /\/auth\/cert\/login$/)).toHaveLength(2);
    clock.advance(10_000); // the new token's lease is fresh: no renewal, no login
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.calls("POST", /\/auth\/token\/renew-self$/)).toHaveLength(3);
    expect(fake.calls("POST", /\/auth\/cert\/login$/)).toHaveLength(2);
  });

  it("a login redirected where it is not followed (https to http) is backend_unavailable, as any call's redirect, not a refused identity", async () => {
    const { fake, store } = await approleStore();
    const down = fake.url.replace("https:", "http:");
    fake.inject({ kind: "status", status: 307, location: `${down}/v1/auth/approle/login` }, 1, (r) =>
      r.url.endsWith("/approle/login"),
    );
    const refused = await errorOf(store.get("A"));
    expect(refused.code).toBe("backend_unavailable");
    expect(refused.message).toMatch(
      /approle login\): Vault redirected to another node \(HTTP 307\), which was not followed/,
    );
    expect((await store.get("A"))?.value).toBe("a"); // the next call logs in
  });

  it("cert auth: a renewal that fails because Vault is down (503) stands, with no login after it", async () => {
    const { clock, fake, store } = await certStore();
    await store.get("A");
    clock.advance(41_000); // due for renewal, 19 s of the lease left: the token is kept
    fake.inject({ kind: "status", status: 503 }, 3, (r) => r.url.endsWith("/renew-self"));
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.calls("POST", /\/auth\/token\/renew-self$/)).toHaveLength(3);
    expect(fake.calls("POST", /\/auth\/cert\/login$/)).toHaveLength(1); // the first login only
  });

  it("follows a standby's redirect to the active node once, never from https to http; a KV mount upgrading is a failure to retry", async () => {
    const { fake, store } = await approleStore();
    fake.inject({ kind: "status", status: 307, location: `${fake.url}/v1/secret/data/A` }, 1, (r) =>
      r.url.includes("/data/"),
    );
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.calls("GET", /\/data\/A$/).map((r) => r.headers["x-vault-token"] !== undefined)).toEqual([true, true]);
    const down = fake.url.replace("https:", "http:");
    fake.inject({ kind: "status", status: 307, location: `${down}/v1/secret/data/A` }, 1, (r) =>
      r.url.includes("/data/"),
    );
    const before = fake.requests.length;
    const refused = await errorOf(store.get("A"));
    expect(refused.code).toBe("backend_unavailable");
    expect(refused.message).toMatch(/redirected to another node \(HTTP 307\), which was not followed/);
    expect(fake.requests.length).toBe(before + 1);

    const upgrading = {
      errors: [
        "Upgrading from non-versioned to versioned data. This backend will be unavailable for a brief period and will resume service shortly.",
      ],
    };
    fake.inject({ kind: "status", status: 400, body: upgrading }, 1, (r) => r.url.includes("/data/"));
    expect((await errorOf(store.get("A"))).code).toBe("backend_unavailable");
    expect((await store.get("A"))?.value).toBe("a");
  });

  it("renews the token (renew-self) once two thirds of its lease have passed, before it expires", async () => {
    const { clock, fake, store, logins, renewals, tokens } = await approleStore();
    await store.get("A");
    clock.advance(41_000);
    expect((await store.get("A"))?.value).toBe("a");
    expect([logins(), renewals()]).toEqual([1, 1]);
    const renewal = fake.calls("POST", /renew-self$/)[0];
    expect(renewal?.headers["x-vault-token"]).toBe([...tokens()][0]);
    // The renewed lease runs from the renewal: 41 s + 50 s is past the first lease, still valid.
    clock.advance(50_000);
    expect((await store.get("A"))?.value).toBe("a");
    expect(tokens().size).toBe(1);
    expect(logins()).toBe(1);
  });

  it("renews a token from a login namespace in that namespace (a namespaced token is not found at the root)", async () => {
    const clock = manualClock();
    const { fake, env } = await approleOn(clock, { namespace: "admin" });
    const store = await open(env, { now: clock.now });
    await store.get("A");
    clock.advance(41_000);
    expect((await store.get("A"))?.value).toBe("a");
    const renewals = fake.calls("POST", /renew-self$/);
    expect(renewals).toHaveLength(1);
    expect(renewals[0]?.headers["x-vault-namespace"]).toBe("admin");
    expect(fake.calls("POST", /\/login$/)).toHaveLength(1); // renewed, not logged in again
  });

  it("a renewal that fails while the lease runs keeps the token in use (the call does not fail)", async () => {
    const { clock, fake, store, logins, renewals, tokens } = await approleStore();
    await store.get("A");
    clock.advance(41_000);
    fake.inject({ kind: "status", status: 503 }, 3, (r) => r.url.endsWith("/renew-self"));
    expect((await store.get("A"))?.value).toBe("a");
    expect([logins(), renewals()]).toEqual([1, 3]); // three tries, then the token it has
    expect(tokens().size).toBe(1);
    // Calls right after do not wait on another renewal: the next is tried 5 s later.
    const warnings = () => logs.filter((l) => l.includes("vault token renewal failed")).length;
    const warned = warnings();
    expect(warned).toBeGreaterThan(0);
    expect((await store.get("A"))?.value).toBe("a");
    expect([renewals(), warnings()]).toEqual([3, warned]);
    clock.advance(10_000); // still inside the lease: renewed now
    expect((await store.get("A"))?.value).toBe("a");
    expect([logins(), renewals()]).toEqual([1, 4]);
  });

  it("measures token leases on a monotonic clock: after the host's clock steps back an hour, renewals and the 403's login still come (every call was backend_denied)", async () => {
    const vault = manualClock(); // Vault's clock, and the store's monotonic one: time passes alike on both
    let offset = 0; // the host's wall clock minus Vault's
    const fake = await startFake({
      approle: { roleId: ROLE_ID, secretId: SECRET_ID },
      tokenTtlSeconds: 60,
      now: vault.now,
    });
    fake.seed("secret/A", { key: "a" });
    const store = await open(
      { HCP_VAULT_ADDR: fake.url, HCP_VAULT_APPROLE_ROLE_ID: ROLE_ID, HCP_VAULT_APPROLE_SECRET_ID: SECRET_ID },
      { now: () => vault.now() + offset, tuning: { clock: vault.now } },
    );
    expect((await store.get("A"))?.value).toBe("a");
    offset = -3_600_000; // NTP steps the host back an hour
    const results: string[] = [];
    for (let i = 0; i < 5; i++) {
      vault.advance(45_000); // past two thirds of the lease each time: a renewal is due
      results.push(
        await store.get("A").then(
          (r) => r?.value ?? "none",
          (e: SecretsError) => e.code,
        ),
      );
    }
    expect(results).toEqual(Array(5).fill("a"));
    expect(fake.calls("POST", /renew-self$/).length).toBeGreaterThan(0);
    // A token Vault expired early: its 403 brings a login (on the wall clock it was "under a second old").
    vault.advance(2_000);
    fake.expireLoginTokens();
    const logins = fake.calls("POST", /\/auth\/approle\/login$/).length;
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.calls("POST", /\/auth\/approle\/login$/).length).toBe(logins + 1);
  });

  it("logs in afresh when the lease has run out, and when Vault caps a renewal short (max TTL)", async () => {
    const expired = await approleStore();
    await expired.store.get("A");
    expired.clock.advance(61_000);
    expect((await expired.store.get("A"))?.value).toBe("a");
    expect([expired.logins(), expired.renewals()]).toEqual([2, 0]);

    const capped = await approleStore({ tokenMaxTtlSeconds: 65 });
    await capped.store.get("A");
    capped.clock.advance(41_000); // renewed, but only to the max TTL: 24 s
    await capped.store.get("A");
    expect([capped.logins(), capped.renewals()]).toEqual([1, 1]);
    capped.clock.advance(17_000); // two thirds of the short lease: a login, not a second renewal
    expect((await capped.store.get("A"))?.value).toBe("a");
    expect([capped.logins(), capped.renewals()]).toEqual([2, 1]);
  });

  it("a 403 on a login token (revoked) brings one fresh login and one more try", async () => {
    const { clock, fake, store, logins, tokens } = await approleStore();
    await store.get("A");
    fake.revokeLoginTokens();
    clock.advance(2_000);
    expect((await store.get("A"))?.value).toBe("a");
    expect(logins()).toBe(2);
    expect(tokens().size).toBe(2);
    expect(fake.calls("GET", /lookup-self$/)).toHaveLength(0); // the 403 said "invalid token"
  });

  it('a token Vault expired before its lease ends (403 "invalid token") brings one fresh login', async () => {
    const { clock, fake, store, logins, tokens } = await approleStore();
    await store.get("A");
    clock.advance(5_000);
    fake.expireLoginTokens();
    expect((await store.get("A"))?.value).toBe("a");
    expect([logins(), tokens().size]).toEqual([2, 2]);
  });

  it('a token refused as "invalid token" again right after the login a 403 brought: the 403 stands for 30 s, no login per call', async () => {
    const { clock, fake, store, logins } = await approleStore();
    await store.get("A");
    // A standby behind, a balancer over two clusters: the new token is refused too.
    fake.behind = true;
    for (let i = 0; i < 10; i++) {
      clock.advance(2_000);
      expect((await errorOf(store.get("A"))).code).toBe("backend_denied");
    }
    expect(logins()).toBe(2); // the first, and the one the first refusal brought
    fake.behind = false;
    expect((await store.get("A"))?.value).toBe("a"); // caught up: that token is taken
    expect(logins()).toBe(2);
    // A token once taken and then refused is revoked (token_num_uses spent, an operator): a login at once.
    clock.advance(2_000);
    fake.expireLoginTokens();
    expect((await store.get("A"))?.value).toBe("a");
    expect(logins()).toBe(3);
  });

  it('the policy\'s 403 ("permission denied" alone) is backend_denied with no login: refused puts 30 s apart log in once in all', async () => {
    // A put under a read-only policy: the metadata read passes, the data write is refused.
    const { clock, fake, store, logins } = await approleStore({ tokenTtlSeconds: 3600, policy: (m) => m !== "POST" });
    const lookups = () => fake.calls("GET", /\/auth\/token\/lookup-self$/).length;
    await store.get("A");
    for (let i = 0; i < 4; i++) {
      clock.advance(31_000);
      expect((await errorOf(store.put("A", value("refused")))).code).toBe("backend_denied");
    }
    expect(logins()).toBe(1);
    // lookup-self found the token good: refused calls within 30 s of that ask no more.
    expect(lookups()).toBe(4);
    for (let i = 0; i < 10; i++) {
      clock.advance(1_000);
      expect((await errorOf(store.put("A", value("refused")))).code).toBe("backend_denied");
    }
    expect([logins(), lookups()]).toEqual([1, 4]);
    expect((await store.get("A"))?.value).toBe("a");
  });

  it('an older Vault (403 without "invalid token"): lookup-self tells a revoked token from the policy\'s refusal', async () => {
    const { clock, fake, store, logins } = await approleStore({
      legacyTokenErrors: true,
      policy: (_m, path) => path !== "secret/data/FORBIDDEN",
    });
    const lookups = () => fake.calls("GET", /\/auth\/token\/lookup-self$/).length;
    await store.get("A");
    clock.advance(2_000);
    expect((await errorOf(store.get("FORBIDDEN"))).code).toBe("backend_denied");
    expect([logins(), lookups()]).toEqual([1, 1]);
    clock.advance(31_000);
    fake.revokeLoginTokens();
    expect((await store.get("A"))?.value).toBe("a");
    expect([logins(), lookups()]).toEqual([2, 2]);
  });

  it('a lookup-self refused without "invalid token" (no default policy, or an older Vault) logs in at most once per 30 s', async () => {
    const { clock, fake, store, logins } = await approleStore({
      legacyTokenErrors: true,
      policy: (_m, path) => path !== "secret/data/FORBIDDEN",
    });
    await store.get("A");
    // As a token without the default policy: lookup-self is refused like any path.
    fake.inject({ kind: "status", status: 403, body: { errors: ["permission denied"] } }, 1_000, (r) =>
      r.url.endsWith("/lookup-self"),
    );
    clock.advance(2_000);
    expect((await errorOf(store.get("FORBIDDEN"))).code).toBe("backend_denied");
    expect(logins()).toBe(2);
    for (let i = 0; i < 20; i++) {
      clock.advance(1_000);
      expect((await errorOf(store.get("FORBIDDEN"))).code).toBe("backend_denied");
    }
    expect(logins()).toBe(2);
    clock.advance(15_000);
    expect((await errorOf(store.get("FORBIDDEN"))).code).toBe("backend_denied");
    expect(logins()).toBe(3);
  });

  it("a static token's 403 is backend_denied, with no login attempted", async () => {
    const fake = await startFake({ approle: { roleId: ROLE_ID, secretId: SECRET_ID } });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: newKey("hvs.") });
    expect((await errorOf(store.get("A"))).code).toBe("backend_denied");
    expect(fake.requests.map((r) => r.url)).toEqual(["/v1/secret/data/A"]);
  });

  it("a login token without a lease (lease_duration 0) is kept for every call: no renewal, no login per call", async () => {
    const { clock, fake, store, logins, renewals } = await approleStore();
    // A token that does not expire, as Vault reports it: lease_duration 0, not renewable.
    const auth = { client_token: ROOT, lease_duration: 0, renewable: false };
    fake.inject({ kind: "status", status: 200, body: { auth } }, 1, isApproleLogin);
    for (let i = 0; i < 3; i++) {
      expect((await store.get("A"))?.value).toBe("a");
      clock.advance(3_600_000);
    }
    expect([logins(), renewals()]).toEqual([1, 0]);
  });

  it("a call refused with a token another call has already replaced tries again with the new one", async () => {
    const { clock, fake, store, logins } = await approleStore();
    await store.get("A");
    clock.advance(5_000);
    fake.revokeLoginTokens();
    // The first read to arrive waits 300 ms: the other one's 403 and login land meanwhile.
    fake.inject({ kind: "delay", ms: 300 }, 1, (r) => r.method === "GET" && r.url.endsWith("/data/A"));
    const reads = await Promise.all([store.get("A"), store.get("A")]);
    expect(reads.map((r) => r?.value)).toEqual(["a", "a"]);
    expect(logins()).toBe(2);
  });

  it("concurrent calls refused with one token share one lookup-self", async () => {
    const { clock, fake, store } = await approleStore({
      legacyTokenErrors: true,
      policy: (_m, path) => path !== "secret/data/FORBIDDEN",
    });
    await store.get("A");
    clock.advance(2_000);
    fake.inject({ kind: "delay", ms: 300 }, 3, (r) => r.url.endsWith("/lookup-self"));
    const codes = await Promise.all([1, 2, 3].map(async () => (await errorOf(store.get("FORBIDDEN"))).code));
    expect(codes).toEqual(["backend_denied", "backend_denied", "backend_denied"]);
    expect(fake.calls("GET", /\/auth\/token\/lookup-self$/)).toHaveLength(1);
  });

  it("a lookup-self that cannot be answered (refused by a proxy, or failing) leaves the 403 standing: no login", async () => {
    const { clock, fake, store, logins } = await approleStore({
      legacyTokenErrors: true,
      policy: (_m, path) => path !== "secret/data/FORBIDDEN",
    });
    await store.get("A");
    const isLookup = (r: { url: string }) => r.url.endsWith("/lookup-self");
    clock.advance(2_000);
    fake.inject({ kind: "status", status: 405, body: { errors: ["method not allowed"] } }, 1, isLookup);
    expect((await errorOf(store.get("FORBIDDEN"))).code).toBe("backend_denied");
    clock.advance(2_000);
    fake.inject({ kind: "status", status: 500 }, 3, isLookup);
    expect((await errorOf(store.get("FORBIDDEN"))).code).toBe("backend_denied");
    expect(logins()).toBe(1);
  });

  it("a renewal that grants no lease (lease_duration 0) is followed by a fresh login", async () => {
    const { clock, fake, store, logins, renewals } = await approleStore();
    await store.get("A");
    clock.advance(41_000);
    const auth = { client_token: ROOT, lease_duration: 0, renewable: true };
    fake.inject({ kind: "status", status: 200, body: { auth } }, 1, (r) => r.url.endsWith("/renew-self"));
    expect((await store.get("A"))?.value).toBe("a");
    expect([logins(), renewals()]).toEqual([2, 1]);
  });

  it("a login token that is not renewable is replaced by a login once due, never renewed", async () => {
    const { clock, fake, store, logins, renewals } = await approleStore();
    const auth = { client_token: ROOT, lease_duration: 60, renewable: false };
    fake.inject({ kind: "status", status: 200, body: { auth } }, 1, isApproleLogin);
    await store.get("A");
    clock.advance(41_000);
    expect((await store.get("A"))?.value).toBe("a");
    expect([logins(), renewals()]).toEqual([2, 0]);
  });
});

describe("change times: custom_metadata and check-and-set", () => {
  /** A fake whose clock runs a minute behind: what it wrote "itself" is not in flight. */
  async function setup() {
    const fake = await startFake({ now: () => Date.now() - 60_000 });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    return { fake, store };
  }

  it("records each change's time, event id and version, keeping others' custom metadata", async () => {
    const { fake, store } = await setup();
    fake.seed("secret/E", { key: "old" }, { owner: "platform" });
    const at = Date.now();
    expect(await store.put("E", value("event"), { ifNewerThan: { at, id: "evt-1" } })).toBe("updated");
    expect(fake.kv("secret/E")?.custom).toEqual({
      owner: "platform",
      llm_secrets_changed_at: String(at),
      llm_secrets_change_id: "evt-1",
      llm_secrets_version: "2",
      llm_secrets_deleted: "false",
    });
    const write = fake.calls("POST", /\/data\/E$/)[0];
    expect(write?.body).toMatchObject({ options: { cas: 1 } });
  });

  it("any event id is recorded as Vault takes it (printable, pieces of 512 bytes) and read back whole: ties still order by id", async () => {
    const { fake, store } = await setup();
    const at = Date.now();
    const outcome = (id: string) => store.put("T", value("tie"), { ifNewerThan: { at, id } });
    expect(await outcome("a\tb")).toBe("created"); // Vault refuses a tab in custom_metadata
    expect(fake.kv("secret/T")?.custom).toMatchObject({
      llm_secrets_change_id: "a%09b",
      llm_secrets_id_encoding: "percent",
    });
    expect(await outcome("a\tb")).toBe("superseded"); // the same event again
    expect(await outcome("a\ta")).toBe("superseded");
    // "a b" > "a\tb" (a space sorts after a tab), though its stored form "a b" < "a%09b".
    expect(await outcome("a b")).toBe("updated");
    expect(await outcome("a%09b")).toBe("updated"); // a real "%" is no escape: "a%" > "a "
    expect(fake.kv("secret/T")?.custom).toMatchObject({ llm_secrets_change_id: "a%2509b" });
    expect(await outcome("a\tb")).toBe("superseded");

    // 512 characters that take 3 KB encoded: several pieces, each within Vault's 512 bytes.
    const long = `${"\u00e9\n\ud800".repeat(170)}\u{1f600}`; // lone surrogates and a pair included
    expect(long).toHaveLength(512);
    expect(await outcome(`${long.slice(0, -1)}\u0001`)).toBe("updated");
    const custom = fake.kv("secret/T")?.custom ?? {};
    const pieces = Object.keys(custom).filter((k) => k.startsWith("llm_secrets_change_id"));
    expect(pieces.length).toBeGreaterThan(1);
    for (const k of pieces) expect(Buffer.byteLength(custom[k] ?? "")).toBeLessThanOrEqual(512);
    expect(await outcome(long)).toBe("updated"); // differs from the recorded id in its last unit only
    expect(await outcome(`${long.slice(0, -1)}\u0001`)).toBe("superseded");
    expect(await outcome(long)).toBe("superseded");
    // A shorter id drops the pieces a longer one left.
    expect(await store.delete("T", { ifNewerThan: { at, id: "z" } })).toBe("deleted");
    expect(Object.keys(fake.kv("secret/T")?.custom ?? {}).filter((k) => k.startsWith("llm_secrets_change_id"))).toEqual(
      ["llm_secrets_change_id"],
    );
    // 600 plain characters: two pieces, no escape (so no mark), read back whole.
    const plain = (id: string) =>
      store.put("T", value("plain"), { ifNewerThan: { at: at + 1, id: "p".repeat(599) + id } });
    expect(await plain("a")).toBe("created"); // over the delete above
    expect(fake.kv("secret/T")?.custom).toHaveProperty("llm_secrets_change_id_2");
    expect(fake.kv("secret/T")?.custom).not.toHaveProperty("llm_secrets_id_encoding");
    expect(await plain("a")).toBe("superseded");
    expect(await plain("b")).toBe("updated"); // differs in the second piece only
  });

  it("an id recorded before ids were encoded is read as it was, and a record that would not fit Vault's 64 keys stops the change before it", async () => {
    const { fake, store } = await setup();
    const at = Date.now();
    await store.put("OLD", value("old"), { ifNewerThan: { at, id: "first" } });
    // As an earlier version recorded it: raw, no encoding marker. "evt%41b" < "evtAb" as strings.
    const old = fake.kv("secret/OLD")?.custom as Record<string, string>;
    old.llm_secrets_change_id = "evt%41b";
    delete old.llm_secrets_id_encoding;
    expect(await store.put("OLD", value("new"), { ifNewerThan: { at, id: "evtAb" } })).toBe("updated");
    // Another tool's 61 keys leave no room for our 4 (64 at most): refused before the value is written.
    await store.put("FULL", value("full"));
    const full = fake.kv("secret/FULL");
    for (let i = 0; i < 61; i++) (full?.custom as Record<string, string>)[`other_${i}`] = "x";
    const version = full?.currentVersion;
    expect(await codeOf(store.put("FULL", value("more"), { ifNewerThan: { at: Date.now() + 60_000, id: "e" } }))).toBe(
      "store_unavailable",
    );
    expect(fake.kv("secret/FULL")?.currentVersion).toBe(version);
    // A delete likewise: refused before the version is deleted.
    expect(await codeOf(store.delete("FULL", { ifNewerThan: { at: Date.now() + 60_000, id: "e" } }))).toBe(
      "store_unavailable",
    );
    expect(fake.kv("secret/FULL")?.live).toBe(true);
  });

  it("a late event is superseded without a write; a newer one applies", async () => {
    const { fake, store } = await setup();
    const now = Date.now();
    expect(await store.put("L", value("first"), { ifNewerThan: { at: now, id: "b" } })).toBe("created");
    expect(await store.put("L", value("late"), { ifNewerThan: { at: now - 1_000, id: "z" } })).toBe("superseded");
    expect(fake.calls("POST", /\/data\/L$/)).toHaveLength(1);
    const newer = value("newer");
    expect(await store.put("L", newer, { ifNewerThan: { at: now + 1_000 } })).toBe("updated");
    expect((await store.get("L"))?.value).toBe(newer);
    expect((await store.get("L"))?.updatedAt?.getTime()).toBe(now + 1_000);
  });

  it("a tombstone: the deleted version and its record keep a redelivered create from reviving the name", async () => {
    const { fake, store } = await setup();
    const created = value("created");
    await store.put("K", created, { ifNewerThan: { at: 1_000, id: "evt-1" } });
    expect(await store.delete("K", { ifNewerThan: { at: 2_000, id: "evt-2" } })).toBe("deleted");
    expect(fake.kv("secret/K")).toMatchObject({
      currentVersion: 1,
      live: false,
      custom: { llm_secrets_changed_at: "2000", llm_secrets_change_id: "evt-2", llm_secrets_deleted: "true" },
    });
    const writes = fake.calls("POST", /\/data\/K$/).length;
    expect(await store.put("K", created, { ifNewerThan: { at: 1_000, id: "evt-1" } })).toBe("superseded");
    expect(fake.calls("POST", /\/data\/K$/)).toHaveLength(writes);
    expect(await store.get("K")).toBeUndefined();
    // A delete of a name never written leaves its record in metadata alone.
    expect(await store.delete("N", { ifNewerThan: { at: 5_000 } })).toBe("absent");
    expect(fake.kv("secret/N")).toMatchObject({ currentVersion: 0, custom: { llm_secrets_deleted: "true" } });
    expect(fake.calls("DELETE", /\/data\/N$/)).toHaveLength(0);
  });

  it("a version written by others (LiteLLM, the UI) counts from its created_time", async () => {
    const { fake, store } = await setup();
    fake.seed("secret/LITELLM", { key: "from-litellm" }); // created a minute ago, no record of ours
    expect(await store.put("LITELLM", value("older"), { ifNewerThan: { at: Date.now() - 120_000 } })).toBe(
      "superseded",
    );
    expect((await store.get("LITELLM"))?.value).toBe("from-litellm");
    expect(await store.put("LITELLM", value("newer"), { ifNewerThan: { at: Date.now() - 30_000 } })).toBe("updated");
  });

  it("a version written by others after our record is later than that record, whatever its created_time", async () => {
    const { fake, store } = await setup();
    // A delete event dated ahead of this clock (as the skew allows), then LiteLLM writes the key again.
    const ahead = { at: Date.now() + 240_000, id: "evt-del" };
    expect(await store.put("K", value("v1"), { ifNewerThan: { at: Date.now() - 60_000, id: "evt-c" } })).toBe(
      "created",
    );
    expect(await store.delete("K", { ifNewerThan: ahead })).toBe("deleted");
    fake.seed("secret/K", { key: "litellm-recreated" });
    expect(await store.delete("K", { ifNewerThan: ahead })).toBe("superseded");
    expect((await store.get("K"))?.value).toBe("litellm-recreated");
  });

  it("a writer between our read and our write: cas refuses ours, and we decide again on what it wrote", async () => {
    let lag = 120_000;
    const fake = await startFake({ now: () => Date.now() - lag });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    fake.seed("secret/C", { key: "original" }); // two minutes ago
    lag = 30_000;
    const external = () => fake.seed("secret/C", { key: "external" }); // half a minute ago
    const isWrite = (r: { method: string; url: string }) => r.method === "POST" && r.url.endsWith("/data/C");
    const casOf = () =>
      fake.calls("POST", /\/data\/C$/).map((r) => (r.body as { options: { cas: number } }).options.cas);

    // Newer than the original, older than the external write: refused at cas 1, then superseded.
    fake.inject({ kind: "hook", run: external }, 1, isWrite);
    expect(await store.put("C", value("between"), { ifNewerThan: { at: Date.now() - 90_000 } })).toBe("superseded");
    expect((await store.get("C"))?.value).toBe("external");
    expect(casOf()).toEqual([1]);

    // Newer than both: refused at cas 2 (the external write made 3), then written at 3.
    fake.inject({ kind: "hook", run: external }, 1, isWrite);
    const mine = value("mine");
    expect(await store.put("C", mine, { ifNewerThan: { at: Date.now() - 10_000 } })).toBe("updated");
    expect((await store.get("C"))?.value).toBe(mine);
    expect(casOf()).toEqual([1, 2, 3]);
  });

  it("another process's change whose record is still on its way is waited for, not mistaken for a newer one", async () => {
    const fake = await startFake();
    const a = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    const b = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    // A's record of its change reaches Vault 150 ms after its value does.
    fake.inject({ kind: "delay", ms: 150 }, 1, (r) => r.method === "POST" && r.url.endsWith("/metadata/R"));
    const olderEvent = a.put("R", value("older"), { ifNewerThan: { at: Date.now() - 10_000, id: "a" } });
    await until("A's value written", () => fake.calls("POST", /\/data\/R$/).length === 1);
    const newer = value("newer-event");
    expect(await b.put("R", newer, { ifNewerThan: { at: Date.now() - 5_000, id: "b" } })).toBe("updated");
    expect(await olderEvent).toBe("created");
    expect((await b.get("R"))?.value).toBe(newer);
  });

  it("a direct change does not wait on a version without our record: one metadata read", async () => {
    const fake = await startFake(); // its clock is ours: the seeded version is seconds old
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    fake.seed("secret/W", { key: "from-the-ui" });
    expect(await store.put("W", value("direct"))).toBe("updated");
    expect(fake.calls("GET", /\/metadata\/W$/)).toHaveLength(1);
  });

  it("a delete made outside our record (its record failed) counts from Vault's deletion time: an event between is superseded", async () => {
    const clock = manualClock(Date.now() - 120_000);
    const fake = await startFake({ now: clock.now });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    expect(await store.put("H", value("h1"), { ifNewerThan: { at: Date.now() - 150_000, id: "e1" } })).toBe("created");
    clock.advance(60_000); // Vault's version 1 is a minute old when it is deleted
    const isRecord = (r: { method: string; url: string }) => r.method === "POST" && r.url.endsWith("/metadata/H");
    fake.inject({ kind: "status", status: 403, body: { errors: ["permission denied"] } }, 1, isRecord);
    expect(await codeOf(store.delete("H"))).toBe("backend_denied");
    expect(fake.kv("secret/H")).toMatchObject({ live: false, custom: { llm_secrets_deleted: "false" } });
    // Deleted 60 s ago by Vault's clock: an event from 90 s ago is older than that delete.
    expect(await store.put("H", value("h2"), { ifNewerThan: { at: Date.now() - 90_000, id: "e2" } })).toBe(
      "superseded",
    );
    expect(await store.get("H")).toBeUndefined();
  });

  it("a record whose change time is not a number is not ours: Vault's created_time stands", async () => {
    const fake = await startFake({ now: () => Date.now() - 60_000 });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    await store.put("X", value("x1"));
    (fake.kv("secret/X")?.custom as Record<string, string>).llm_secrets_changed_at = "not-a-time";
    // Older than the version Vault made a minute ago.
    expect(await store.put("X", value("x2"), { ifNewerThan: { at: Date.now() - 120_000 } })).toBe("superseded");
  });
});

describe("retries and the fault matrix", () => {
  async function setup(tuning: Partial<VaultTuning> = {}) {
    const fake = await startFake();
    fake.seed("secret/A", { key: "a" });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT }, { tuning });
    return { fake, store };
  }

  it("honours Retry-After: a 429 saying 1 s is tried again after a second, and the read succeeds", async () => {
    const { fake, store } = await setup();
    fake.inject({ kind: "status", status: 429, retryAfter: "1" });
    expect((await store.get("A"))?.value).toBe("a");
    const [first, second] = fake.requests;
    expect(fake.requests).toHaveLength(2);
    expect((second?.receivedAt ?? 0) - (first?.receivedAt ?? 0)).toBeGreaterThanOrEqual(1_000);
  });

  it("backs off exponentially with jitter: half of each step fixed, half random", async () => {
    const waitsWith = async (random: number, faults: number) => {
      const waits: number[] = [];
      const sleep = async (ms: number) => {
        waits.push(Math.round(ms * 10) / 10);
      };
      const { fake, store } = await setup({ backoffBaseMs: 200, random: () => random, sleep });
      fake.inject({ kind: "status", status: 503 }, faults);
      expect((await store.get("A"))?.value).toBe("a");
      expect(fake.requests).toHaveLength(faults + 1);
      return waits;
    };
    expect(await waitsWith(0, 2)).toEqual([100, 200]); // half of 200, then half of 400: the fixed halves
    expect(await waitsWith(0.999, 2)).toEqual([199.9, 399.8]); // and the random halves at their top
    expect(await waitsWith(0.5, 1)).toEqual([150]);
  });

  const MATRIX: [string, FakeVaultFault, number, string, number | undefined][] = [
    // [label, fault, tries it takes, code, retryAfter]
    ["403", { kind: "status", status: 403, body: { errors: ["permission denied"] } }, 1, "backend_denied", undefined],
    [
      "429 with Retry-After: 7 (longer than a retry waits)",
      { kind: "status", status: 429, retryAfter: "7" },
      1,
      "backend_unavailable",
      7,
    ],
    ["429 without Retry-After", { kind: "status", status: 429 }, 3, "backend_unavailable", 1],
    [
      "412 (a performance standby not yet caught up with the token)",
      { kind: "status", status: 412, body: { errors: ["required index state not present"] } },
      3,
      "backend_unavailable",
      1,
    ],
    ["500", { kind: "status", status: 500 }, 3, "backend_unavailable", 1],
    ["503", { kind: "status", status: 503 }, 3, "backend_unavailable", 1],
    ["timeout", { kind: "hang" }, 3, "backend_unavailable", 1],
    ["connection reset", { kind: "reset" }, 3, "backend_unavailable", 1],
  ];

  // The fault is injected exactly as often as the store may try: one try more would succeed and fail the test.
  it.each(MATRIX)(
    "%s: get, put and delete fail after the tries allowed",
    async (_label, fault, tries, code, retryAfter) => {
      for (const op of ["get", "put", "delete"] as const) {
        // A short try only where the fault is a hang: elsewhere a loaded machine's slow answer
        // would time a try out before the fake saw it, and the tries counted fall short.
        const { fake, store } = await setup(fault.kind === "hang" ? { timeoutMs: 1_000 } : {});
        fake.inject(fault, tries);
        const v = value("matrix");
        const call = op === "get" ? store.get("A") : op === "put" ? store.put("A", v) : store.delete("A");
        const err = await errorOf(call);
        expect([op, err.code, err.details.retryAfter]).toEqual([op, code, retryAfter]);
        expect([op, fake.requests.length]).toEqual([op, tries]);
        // Nothing changed, and with the fault gone the store answers again.
        expect(fake.kv("secret/A")).toMatchObject({ currentVersion: 1, live: true });
        expect((await store.get("A"))?.value).toBe("a");
      }
    },
  );

  it("404 is not found: get answers undefined, delete absent, put created", async () => {
    const { store } = await setup();
    expect(await store.get("NOPE")).toBeUndefined();
    expect(await store.delete("NOPE")).toBe("absent");
    expect(await store.put("NOPE", value("fresh"))).toBe("created");
  });

  it('a wrong mount (404 "no handler for route") is store_unavailable naming the mount, never not found', async () => {
    const fake = await startFake({ mounts: ["admin/secret"] });
    fake.seed("admin/secret/A", { key: "a" });
    const store = await open({
      HCP_VAULT_ADDR: fake.url,
      HCP_VAULT_TOKEN: ROOT,
      HCP_VAULT_NAMESPACE: "admin",
      HCP_VAULT_MOUNT_NAME: "secrte",
    });
    const err = await errorOf(store.get("A"));
    expect([err.code, err.status]).toEqual(["store_unavailable", 500]);
    expect(err.message).toContain('nothing mounted at "admin/secrte"');
    expect((await errorOf(store.list({ limit: 10 }))).code).toBe("store_unavailable");
    expect((await errorOf(store.put("A", value("typo")))).code).toBe("store_unavailable");
    expect(await errorOf(store.delete("A"))).toMatchObject({ code: "store_unavailable" });
    expect(fake.calls("POST", /./)).toHaveLength(0); // nothing written anywhere
    // The right mount: a missing secret is still not found, an empty folder still no names.
    const right = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT, HCP_VAULT_NAMESPACE: "admin" });
    expect(await right.get("NOPE")).toBeUndefined();
    expect((await right.list({ prefix: "none/", limit: 10 })).names).toEqual([]);
    expect((await right.get("A"))?.value).toBe("a");
  });

  it("an address that answers 404 but not as Vault (an ingress's HTML page, another service) is store_unavailable saying so, never not found; /ready is 503", async () => {
    // Vault's own 404s are `{"errors":[]}` (nothing there) or a deleted version's `data.metadata`.
    const answers: [string, string][] = [
      ["text/html", "<html><body><h1>404 Not Found</h1>nginx</body></html>"],
      ["application/json", '{"message":"Not Found"}'],
      ["application/json", '{"data":null}'],
      ["text/plain", ""],
    ];
    let answer = answers[0] as [string, string];
    const server = createHttpServer((_, res) => {
      res.writeHead(404, { "content-type": answer[0] }).end(answer[1]);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const env = { HCP_VAULT_ADDR: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, HCP_VAULT_TOKEN: ROOT };
    try {
      const store = await open(env);
      for (const next of answers) {
        answer = next;
        const err = await errorOf(store.get("OPENAI_API_KEY"));
        expect([err.code, err.status]).toEqual(["store_unavailable", 500]);
        expect(err.message).toContain("not as Vault");
        expect(err.message).toContain("HCP_VAULT_ADDR");
        expect((await errorOf(store.list({ limit: 10 }))).code).toBe("store_unavailable");
        expect((await errorOf(store.put("A", value("not-vault")))).code).toBe("store_unavailable");
        expect((await errorOf(store.delete("A"))).code).toBe("store_unavailable");
      }

      answer = answers[0] as [string, string];
      const masterKey = newKey();
      const runtime = await createRuntime({
        stores: [vaultStore],
        settings: { env: { LITELLM_MASTER_KEY: masterKey, ...env } },
        log,
        audit: () => {},
      });
      try {
        const call = (path: string) =>
          runtime.fetch(new Request(`http://localhost${path}`, { headers: { authorization: `Bearer ${masterKey}` } }), {
            path,
          });
        const ready = await call("/ready");
        expect(ready.status).toBe(503);
        expect(await ready.json()).toMatchObject({ error: { code: "store_unavailable" } });
        const read = await call("/v1/secrets/OPENAI_API_KEY");
        expect(read.status).not.toBe(404);
        expect(await read.json()).toMatchObject({ error: { code: "store_unavailable" } });
      } finally {
        await runtime.close();
      }
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it("a fault that clears within the three tries is invisible: reset then 500 then the answer", async () => {
    const { fake, store } = await setup();
    fake.inject({ kind: "reset" });
    fake.inject({ kind: "status", status: 500 });
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.requests).toHaveLength(3);
  });

  it("a backend error body that quotes a value reaches neither the error nor the log", async () => {
    const { fake, store } = await setup();
    const quoted = value("quoted");
    fake.inject({ kind: "status", status: 500, body: { errors: [`bad value ${quoted}`] } }, 3);
    const err = await errorOf(store.put("A", quoted));
    expect(err.code).toBe("backend_unavailable");
    expect(err.message).toBe("vault put: the backend is unavailable (HTTP 500, VaultResponseError)");
  });

  it("a DELETE answered with KV's own 404 (gone meanwhile) is a delete done, recorded", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    await store.put("G", value("g"));
    fake.inject({ kind: "status", status: 404, body: { errors: [] } }, 1, (r) => r.method === "DELETE");
    expect(await store.delete("G", { ifNewerThan: { at: Date.now() + 1_000 } })).toBe("deleted");
    expect(fake.kv("secret/G")?.custom).toMatchObject({ llm_secrets_deleted: "true" });
  });

  it("answers that are not KV version 2's are store_corrupt, and nothing is written on them", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    // Metadata without current_version: no version to check-and-set against.
    fake.inject({ kind: "status", status: 200, body: { data: {} } }, 1, (r) => r.url.endsWith("/metadata/M"));
    expect(await codeOf(store.put("M", value("m")))).toBe("store_corrupt");
    expect(fake.calls("POST", /\/data\/M$/)).toHaveLength(0);
    // A write answered without its version: no record of a version we do not know.
    fake.inject({ kind: "status", status: 200, body: { data: {} } }, 1, (r) => r.method === "POST");
    expect(await codeOf(store.put("N", value("n"), { ifNewerThan: { at: Date.now() } }))).toBe("store_corrupt");
    expect(fake.calls("POST", /\/metadata\/N$/)).toHaveLength(0);
  });

  it("a mount answering a write as KV version 1 does (204, no version) is store_unavailable naming the mount, not internal", async () => {
    const fake = await startFake({ mounts: ["kv1"] });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT, HCP_VAULT_MOUNT_NAME: "kv1" });
    fake.inject({ kind: "status", status: 204 }, 1, (r) => r.method === "POST" && r.url.includes("/data/"));
    const err = await errorOf(store.put("V1", value("v1")));
    expect(err.code).toBe("store_unavailable");
    expect(err.message).toMatch(
      /the mount kv1 answered as a KV version 1 mount \(HTTP 204 to a write\): llm-secrets needs KV version 2/,
    );
    expect(fake.calls("POST", /\/metadata\/V1$/)).toHaveLength(0); // no record written after it
  });

  it("a KV version 1 mount is store_unavailable for reads, writes, deletes and lists, and nothing is written to it", async () => {
    // `vault secrets enable kv` makes version 1, which answers `data/...` reads with KV's own 404:
    // without asking, every secret would read as not found, and a write would land as a key `data/...`.
    const fake = await startFake({ kv1Mounts: ["admin/kv"] });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT, HCP_VAULT_NAMESPACE: "admin" });
    const env = { HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT };
    const scoped = await open({ ...env, HCP_VAULT_SECRET_NAMESPACE: "admin", HCP_VAULT_MOUNT_NAME: "kv" });
    for (const call of [
      () => scoped.get("A"),
      () => scoped.put("A", value("a")),
      () => scoped.put("B", value("b"), { ifNewerThan: { at: Date.now(), id: "evt-1" } }),
      () => scoped.delete("C", { ifNewerThan: { at: Date.now() } }),
      () => scoped.list({ limit: 10 }),
    ]) {
      const err = await errorOf(call());
      expect(err.code).toBe("store_unavailable");
      expect(err.message).toMatch(
        /the mount admin\/kv is a KV version 1 mount: llm-secrets needs KV version 2 \(vault kv enable-versioning -namespace=admin kv\)$/,
      );
    }
    expect(fake.kv1Keys()).toEqual([]);
    expect(fake.calls("POST", /./)).toHaveLength(0);
    // Asked again each time (an upgraded mount is seen at once), in the secret namespace.
    expect(fake.calls("GET", /^\/v1\/admin\/sys\/internal\/ui\/mounts\/kv$/)).toHaveLength(5);
    // The store's own mount (`secret` in admin) is not there at all: Vault's 404 says so, as before.
    expect(await codeOf(store.get("A"))).toBe("store_unavailable");
  });

  it("a KV version 2 mount is asked about once per store and team scope, and only when nothing is found", async () => {
    const fake = await startFake({ mounts: ["secret", "team-kv"] });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    await store.put("FOUND", value("f"));
    const asked = () => fake.calls("GET", /\/sys\/internal\/ui\/mounts\//).map((r) => pathOf(r.url));
    expect(asked()).toEqual(["/v1/sys/internal/ui/mounts/secret"]);
    expect(await store.get("MISSING")).toBeUndefined();
    expect(await store.get("FOUND")).toBeDefined();
    await store.put("OTHER", value("o"));
    expect(asked()).toHaveLength(1);
    const scope = { team: "team-a", mount: "team-kv" };
    expect(await store.get("MISSING", { scope })).toBeUndefined();
    expect(await store.get("MISSING", { scope })).toBeUndefined();
    expect(asked()).toEqual(["/v1/sys/internal/ui/mounts/secret", "/v1/sys/internal/ui/mounts/team-kv"]);
  });

  it("when Vault will not say what the mount is (403, an old Vault's 404), not found stands; a failure to ask is asked again", async () => {
    // A policy with no call at the mount's root: Vault tells such a token nothing of the mount.
    const denied = await startFake({ policy: (_m, path) => path !== "secret/" });
    const store = await open({ HCP_VAULT_ADDR: denied.url, HCP_VAULT_TOKEN: ROOT });
    expect(await store.get("A")).toBeUndefined();
    expect(await store.get("B")).toBeUndefined();
    expect(denied.calls("GET", /\/sys\/internal\/ui\/mounts\//)).toHaveLength(1);

    const old = await startFake();
    const oldStore = await open({ HCP_VAULT_ADDR: old.url, HCP_VAULT_TOKEN: ROOT });
    old.inject({ kind: "status", status: 404, body: { errors: [] } }, 1, (r) => r.url.includes("/sys/internal/"));
    expect(await oldStore.get("A")).toBeUndefined();
    expect(await oldStore.get("B")).toBeUndefined();
    expect(old.calls("GET", /\/sys\/internal\/ui\/mounts\//)).toHaveLength(1);

    const flaky = await startFake();
    const flakyStore = await open({ HCP_VAULT_ADDR: flaky.url, HCP_VAULT_TOKEN: ROOT });
    flaky.inject({ kind: "reset" }, 10, (r) => r.url.includes("/sys/internal/"));
    expect(await flakyStore.get("A")).toBeUndefined(); // the read's answer stands
    const failed = flaky.calls("GET", /\/sys\/internal\/ui\/mounts\//).length;
    expect(failed).toBeGreaterThan(0);
    expect(await flakyStore.get("B")).toBeUndefined();
    expect(flaky.calls("GET", /\/sys\/internal\/ui\/mounts\//).length).toBeGreaterThan(failed);
  });

  it("a write refused with a 400 that is not check-and-set's fails at once, not read and tried again", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    const refusal = { errors: ["1 error occurred:\n\t* invalid data\n\n"] };
    fake.inject({ kind: "status", status: 400, body: refusal }, 1, (r) => r.method === "POST");
    expect(await codeOf(store.put("R", value("r")))).toBe("internal");
    expect(fake.calls("POST", /\/data\/R$/)).toHaveLength(1);
    expect(fake.kv("secret/R")).toBeUndefined();
  });

  it("a change whose record the policy refuses (no metadata capability) fails: backend_denied", async () => {
    const fake = await startFake({
      policy: (method, path) => !(method === "POST" && path.startsWith("secret/metadata/")),
    });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    expect(await codeOf(store.put("P", value("p"), { ifNewerThan: { at: Date.now() } }))).toBe("backend_denied");
  });

  it("408 is tried again, as Vault's own client does", async () => {
    const { fake, store } = await setup();
    fake.inject({ kind: "status", status: 408 });
    expect((await store.get("A"))?.value).toBe("a");
    expect(fake.requests).toHaveLength(2);
  });

  it("a Retry-After given as an HTTP date past the longest wait is reported at once, not tried again", async () => {
    const { fake, store } = await setup();
    const retryAfter = new Date(Date.now() + 10_000).toUTCString();
    fake.inject({ kind: "status", status: 429, retryAfter }, 3);
    expect((await errorOf(store.get("A"))).code).toBe("backend_unavailable");
    expect(fake.requests).toHaveLength(1);
  });
});

type FakeVaultFault = Parameters<FakeVault["inject"]>[0];

describe("outbound TLS settings reach Vault's client", () => {
  it("a CA bundle that does not hold Vault's CA refuses it; ssl_verify false does not check", async () => {
    const fake = await startFake();
    const other = makeServerChain(await tempDir());
    const env = { HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT };
    const strict = await openVaultStore(env, { log, now: Date.now, outbound: { caFile: other.rootFile } }, FAST);
    stores.push(strict);
    const err = await errorOf(strict.get("A"));
    expect(err.message).toMatch(/^vault get:/);
    expect(fake.requests).toHaveLength(0); // refused at the handshake: nothing reached Vault
    const unchecked = await openVaultStore(
      env,
      { log, now: Date.now, outbound: { verify: false, caFile: other.rootFile } },
      FAST,
    );
    stores.push(unchecked);
    expect(await unchecked.get("A")).toBeUndefined();
    expect(fake.requests).toHaveLength(2); // the read, then (nothing there) the mount's version
  });
});

describe("KV version 2's version states: destroyed, delete_version_after, max_versions", () => {
  /** A call to the fake's API as an operator makes it (the CLI, the UI), with the root token. */
  async function operator(fake: FakeVault, method: string, path: string, body?: unknown) {
    const res = await fetch(`${fake.url}/v1/${path}`, {
      method,
      headers: { "x-vault-token": ROOT, "content-type": "application/json" },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text === "" ? undefined : JSON.parse(text) };
  }

  it("a destroyed current version is gone: not found, not listed; a write over it creates, a delete over it is absent", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    expect(await store.put("D", value("d1"))).toBe("created");
    expect(await store.put("E", value("e1"))).toBe("created");
    expect((await operator(fake, "PUT", "secret/destroy/D", { versions: "" })).status).toBe(400);
    expect((await operator(fake, "PUT", "secret/destroy/D", { versions: [1] })).status).toBe(204);
    const metadata = await operator(fake, "GET", "secret/metadata/D");
    expect(metadata.body.data.versions["1"]).toMatchObject({ destroyed: true, deletion_time: "" });

    expect(await store.get("D")).toBeUndefined();
    expect((await store.list({ limit: 10 })).names).toEqual(["E"]);
    const d2 = value("d2");
    expect(await store.put("D", d2)).toBe("created"); // over the destroyed version 1 (cas 1)
    expect((await store.get("D"))?.value).toBe(d2);
    expect(fake.kv("secret/D")?.currentVersion).toBe(2);
    expect((await store.list({ limit: 10 })).names).toEqual(["D", "E"]);

    await operator(fake, "PUT", "secret/destroy/D", { versions: [2] });
    expect(await store.delete("D")).toBe("absent"); // nothing live to delete; the tombstone is recorded
    expect(fake.kv("secret/D")?.custom).toMatchObject({ llm_secrets_deleted: "true", llm_secrets_version: "2" });
    expect(fake.calls("DELETE", /\/data\/D$/)).toHaveLength(0);
  });

  it("delete_version_after: a version whose deletion time is still to come is live; once it passes, it is gone", async () => {
    const clock = manualClock();
    const fake = await startFake({ now: clock.now });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT }, { now: clock.now });
    expect((await operator(fake, "POST", "secret/metadata/T", { delete_version_after: "1h" })).status).toBe(204);
    const t1 = value("t1");
    expect(await store.put("T", t1)).toBe("created");
    const metadata = (await operator(fake, "GET", "secret/metadata/T")).body.data;
    expect(metadata.delete_version_after).toBe("1h0m0s");
    expect(Date.parse(metadata.versions["1"].deletion_time)).toBeGreaterThan(clock.now()); // in the future

    expect((await store.get("T"))?.value).toBe(t1);
    expect((await store.list({ limit: 10 })).names).toEqual(["T"]);
    const t2 = value("t2");
    expect(await store.put("T", t2)).toBe("updated"); // live, for all its deletion time
    expect(await store.delete("T")).toBe("deleted"); // Vault brings the deletion time to now
    expect(await store.get("T")).toBeUndefined();

    const t3 = value("t3");
    expect(await store.put("T", t3)).toBe("created");
    expect((await store.get("T"))?.value).toBe(t3);
    clock.advance(3_600_000); // the hour passes: Vault deletes the version
    expect(await store.get("T")).toBeUndefined();
    expect((await store.list({ limit: 10 })).names).toEqual([]);
    expect(await store.put("T", value("t4"))).toBe("created");
  });

  it("max_versions (and Vault's default of 10) prune old versions; cas_required: reads and writes go on", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    await operator(fake, "POST", "secret/metadata/M", { max_versions: 2, cas_required: true });
    const written = Array.from({ length: 4 }, (_, i) => value(`m${i + 1}`));
    const outcomes = [];
    for (const v of written) outcomes.push(await store.put("M", v));
    expect(outcomes).toEqual(["created", "updated", "updated", "updated"]);
    expect((await store.get("M"))?.value).toBe(written[3]);
    const metadata = (await operator(fake, "GET", "secret/metadata/M")).body.data;
    expect(metadata).toMatchObject({ current_version: 4, oldest_version: 3, max_versions: 2, cas_required: true });
    expect(Object.keys(metadata.versions)).toEqual(["3", "4"]);
    // cas_required refuses a write without check-and-set; the store always sends it.
    expect((await operator(fake, "POST", "secret/data/M", { data: { key: "x" } })).status).toBe(400);

    for (let i = 0; i < 12; i++) await store.put("N", value(`n${i}`));
    const last = value("n-last");
    expect(await store.put("N", last)).toBe("updated");
    expect((await store.get("N"))?.value).toBe(last);
    const defaults = (await operator(fake, "GET", "secret/metadata/N")).body.data;
    expect(defaults).toMatchObject({ current_version: 13, oldest_version: 4, max_versions: 0 });
    expect(Object.keys(defaults.versions)).toHaveLength(10);
    expect(await store.delete("N")).toBe("deleted");
    expect(await store.get("N")).toBeUndefined();
  });
});

describe("a change that stops half-way", () => {
  it("a write whose change time could not be recorded is recorded when its event comes again; a later delete then applies", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    const v1 = value("v1");
    await store.put("K", v1, { ifNewerThan: { at: 1_000, id: "e1" } });
    const t0 = Date.now() - 60_000; // the event happened a minute ago; Vault writes it now
    const v2 = value("v2");
    fake.inject({ kind: "status", status: 500 }, 3, (r) => r.method === "POST" && r.url.includes("/metadata/"));
    expect(await codeOf(store.put("K", v2, { ifNewerThan: { at: t0, id: "e2" } }))).toBe("backend_unavailable");
    expect(fake.kv("secret/K")?.currentVersion).toBe(2); // the value landed, its record did not
    // The event comes again: its value is there, its time is recorded (not Vault's, a minute later).
    expect(await store.put("K", v2, { ifNewerThan: { at: t0, id: "e2" } })).toBe("updated");
    expect(fake.kv("secret/K")?.custom).toMatchObject({ llm_secrets_changed_at: String(t0), llm_secrets_version: "2" });
    expect(fake.kv("secret/K")?.currentVersion).toBe(2);
    // So a delete that happened after it, but before Vault's write time, is not taken for older.
    expect(await store.delete("K", { ifNewerThan: { at: t0 + 1_000, id: "e3" } })).toBe("deleted");
    expect(await store.get("K")).toBeUndefined();
    // Another value in an unrecorded version is not this change: superseded as before.
    fake.seed("secret/L", { key: "set-in-the-ui" });
    expect(await store.put("L", value("late"), { ifNewerThan: { at: t0, id: "e4" } })).toBe("superseded");
  });
});

/** The runtime over the fake with `config`, and a read through its API with the master key. */
async function teamRuntime(fake: FakeVault, config: string) {
  const masterKey = newKey();
  const runtime = await createRuntime({
    stores: [vaultStore],
    settings: {
      env: {
        LITELLM_MASTER_KEY: masterKey,
        HCP_VAULT_ADDR: fake.url,
        HCP_VAULT_TOKEN: ROOT,
        LLM_SECRETS_CONFIG: config,
      },
    },
    log,
    audit: () => {}, // audit lines are not this test's subject
  });
  const read = (path: string) =>
    runtime.fetch(new Request(`http://localhost${path}`, { headers: { authorization: `Bearer ${masterKey}` } }), {
      path,
    });
  return { runtime, read, masterKey };
}

describe("team settings (team_settings in config, team_id on events and reads)", () => {
  it("two teams that read one path through two KV fields each get their own field, cache or not", async () => {
    const fake = await startFake();
    fake.seed("secret/DB", { key: "from-key", password: "from-password" });
    const { runtime, read } = await teamRuntime(
      fake,
      "general_settings:\n  key_management_settings:\n    team_settings:\n      b: {data: password}\n",
    );
    const valueAt = async (path: string) => ((await (await read(path)).json()) as { value: string }).value;
    expect(await valueAt("/v1/secrets/DB?team_id=a")).toBe("from-key"); // a team without settings: the general ones
    expect(await valueAt("/v1/secrets/DB?team_id=b")).toBe("from-password");
    expect(await valueAt("/v1/secrets/DB")).toBe("from-key");
    expect(await valueAt("/v1/secrets/DB?team_id=b")).toBe("from-password");
    await runtime.close();
  });

  it("a direct delete or write of a path reaches every KV field of it cached: another team's field is read again, not served as it was", async () => {
    const fake = await startFake();
    fake.seed("secret/DB", { key: "from-key", password: "from-password" });
    const { runtime, read, masterKey } = await teamRuntime(
      fake,
      "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    team_settings:\n      b: {data: password}\n",
    );
    const change = (method: "PUT" | "DELETE", body?: unknown) =>
      runtime.fetch(
        new Request("http://localhost/v1/secrets/DB", {
          method,
          headers: { authorization: `Bearer ${masterKey}` },
          ...(body !== undefined && { body: JSON.stringify(body) }),
        }),
        { path: "/v1/secrets/DB" },
      );
    const teamReads = () => fake.calls("GET", /\/data\/DB$/).length;
    try {
      expect(await (await read("/v1/secrets/DB?team_id=b")).json()).toMatchObject({ value: "from-password" });
      // KV v2's delete removes the whole secret, every field of it: team b's field is gone too.
      expect((await change("DELETE")).status).toBe(204);
      expect((await read("/v1/secrets/DB")).status).toBe(404);
      expect((await read("/v1/secrets/DB?team_id=b")).status).toBe(404);

      fake.seed("secret/DB", { key: "from-key", password: "from-password" });
      // The "not found" cached above is as old as the delete; a read past the cache takes the seed in.
      expect(await (await read("/v1/secrets/DB?team_id=b&refresh=true")).json()).toMatchObject({
        value: "from-password",
      });
      // A write replaces the whole secret too: the team's field is read again (and is no more).
      const before = teamReads();
      expect((await change("PUT", { value: value("new-key") })).status).toBe(200);
      expect((await read("/v1/secrets/DB?team_id=b")).status).toBe(404);
      expect(teamReads()).toBe(before + 1);
    } finally {
      await runtime.close();
    }
  });

  it("a team's key event on a path through its own KV field reaches the general field cached there", async () => {
    const fake = await startFake();
    fake.seed("secret/litellm/svc", { key: "from-key" });
    const { runtime, read } = await teamRuntime(
      fake,
      "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n    team_settings:\n      b: {data: password}\n",
    );
    try {
      expect(await (await read("/v1/secrets/litellm/svc")).json()).toMatchObject({ value: "from-key" });
      const event = { id: "b1", type: "key.created", occurred_at: new Date().toISOString(), key_alias: "svc" };
      expect(await runtime.applyKeyEvent({ ...event, key: value("team-b-key"), team_id: "b" })).toMatchObject({
        status: "applied",
        names: { "litellm/svc": "updated" },
      });
      // The write replaced the secret with the team's field alone: the general field is no more.
      expect((await read("/v1/secrets/litellm/svc")).status).toBe(404);
    } finally {
      await runtime.close();
    }
  });

  it("writes to one path through two KV fields queue one after the other: no check-and-set collision", async () => {
    const fake = await startFake();
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    const [first, second] = [value("key-field"), value("password-field")];
    // Two keys for the cache (each field its own), one queue for changes (a write replaces every field).
    expect(store.keyOf("Q", { team: "b", dataKey: "password" })).not.toBe(store.keyOf("Q"));
    expect(
      await Promise.all([
        store.put("Q", first, { ifNewerThan: { at: Date.now() } }),
        store.put("Q", second, { scope: { team: "b", dataKey: "password" }, ifNewerThan: { at: Date.now() + 1 } }),
      ]),
    ).toEqual(["created", "updated"]);
    // Queued: the second write read the version the first made. Racing, both would send cas 0.
    const cas = fake.calls("POST", /\/data\/Q$/).map((r) => (r.body as { options: { cas: number } }).options.cas);
    expect(cas).toEqual([0, 1]);
    expect(fake.kv("secret/Q")?.currentVersion).toBe(2);
    expect((await store.get("Q", { scope: { team: "b", dataKey: "password" } }))?.value).toBe(second);
    await store.close();
  });

  it("keeps a team's keys where its settings say, reads them back with ?team_id, and takes nothing from the event", async () => {
    const fake = await startFake({ mounts: ["secret", "team-ns/kv-team"] });
    const { runtime, read } = await teamRuntime(
      fake,
      [
        "general_settings:",
        "  key_management_settings:",
        "    access_mode: read_and_write",
        "    store_virtual_keys: true",
        "    team_settings:",
        "      team-a:",
        "        namespace: team-ns",
        "        mount: /kv-team/",
        "        path_prefix: keys",
        "        data: api_key",
        "        prefix_for_stored_virtual_keys: team-a",
        "",
      ].join("\n"),
    );
    const key = value("team-key");
    const plain = value("plain-key");
    const at = new Date(Date.now() - 1000).toISOString();
    const teamEvent = { id: "t1", type: "key.created", occurred_at: at, key_alias: "svc", key, team_id: "team-a" };
    // An event cannot redirect a key: fields beside the known ones are ignored.
    expect(await runtime.applyKeyEvent({ ...teamEvent, namespace: "elsewhere", mount: "secret" })).toMatchObject({
      status: "applied",
      names: { "team-a/svc": "created" },
    });
    const write = fake.requests.find((r) => r.method === "POST" && r.url.includes("/data/"));
    expect(write?.url).toBe("/v1/team-ns/kv-team/data/keys/team-a/svc");
    expect(write?.body).toMatchObject({ data: { api_key: key } });
    // A team without settings, and no team, use the general settings.
    await runtime.applyKeyEvent({
      id: "t2",
      type: "key.created",
      occurred_at: at,
      key_alias: "svc",
      key: plain,
      team_id: "team-b",
    });
    expect(fake.requests.some((r) => r.method === "POST" && r.url === "/v1/secret/data/litellm/svc")).toBe(true);

    expect(await (await read("/v1/secrets/team-a/svc?team_id=team-a")).json()).toMatchObject({ value: key });
    expect((await read("/v1/secrets/team-a/svc")).status).toBe(404); // not where the general settings look
    expect(await (await read("/v1/secrets/litellm/svc")).json()).toMatchObject({ value: plain });
    // Teams never share a cache entry: the same name under two scopes is two keys, a field of its own included.
    expect(runtime.store.keyOf("x", { team: "team-a", namespace: "team-ns" })).not.toBe(runtime.store.keyOf("x"));
    expect(runtime.store.keyOf("x", { team: "t", dataKey: "password" })).not.toBe(runtime.store.keyOf("x"));
    expect(runtime.store.keyOf("x", { team: "t", dataKey: "key" })).toBe(runtime.store.keyOf("x"));

    expect(
      await runtime.applyKeyEvent({
        id: "t3",
        type: "key.deleted",
        occurred_at: new Date().toISOString(),
        key_alias: "svc",
        team_id: "team-a",
      }),
    ).toMatchObject({ status: "applied", names: { "team-a/svc": "deleted" } });
    expect((await read("/v1/secrets/team-a/svc?team_id=team-a")).status).toBe(404);
    await runtime.close();
  });

  it("an event's key never lands where another scope's are kept: a team-less alias litellm/x is team a's x with its path_prefix litellm", async () => {
    const fake = await startFake();
    const { runtime } = await teamRuntime(
      fake,
      [
        "general_settings:",
        "  key_management_settings:",
        "    access_mode: read_and_write",
        "    store_virtual_keys: true",
        "    team_settings:",
        "      team-a:",
        "        path_prefix: litellm", // LiteLLM's own placeholder
        "",
      ].join("\n"),
    );
    const at = new Date(Date.now() - 1000).toISOString();
    const teamKey = value("team-a-key");
    const teams = { id: "t1", type: "key.created", occurred_at: at, key_alias: "x", key: teamKey, team_id: "team-a" };
    expect(await runtime.applyKeyEvent(teams)).toMatchObject({ status: "applied", names: { "litellm/x": "created" } });
    // The same Vault secret (secret/data/litellm/litellm/x), reached from the general settings:
    // refused, the team's key kept (overwritten before, silently).
    const general = { id: "g1", type: "key.created", occurred_at: at, key_alias: "litellm/x", key: value("other") };
    expect(await runtime.applyKeyEvent(general)).toMatchObject({ status: "refused", code: "invalid_request" });
    expect(fake.requests.filter((r) => r.method === "POST" && r.url.includes("/data/")).map((r) => r.url)).toEqual([
      "/v1/secret/data/litellm/litellm/x",
    ]);
    expect(
      (await runtime.manager.store.get("litellm/x", { scope: { team: "team-a", pathPrefix: "litellm" } }))?.value,
    ).toBe(teamKey);
    // A general alias elsewhere is applied; so is the team's own under its place.
    const elsewhere = { ...general, id: "g2", key_alias: "svc" };
    expect(await runtime.applyKeyEvent(elsewhere)).toMatchObject({ status: "applied" });
    await runtime.close();
  });

  it("with hosted_keys, a direct write or delete allowed only as a virtual key never lands where another scope keeps its keys", async () => {
    const fake = await startFake();
    const { runtime, masterKey } = await teamRuntime(
      fake,
      [
        "general_settings:",
        "  key_management_settings:",
        "    access_mode: read_and_write",
        "    store_virtual_keys: true",
        "    hosted_keys: [OPENAI_API_KEY]",
        "    team_settings:",
        "      team-a:",
        "        path_prefix: litellm",
        "",
      ].join("\n"),
    );
    const at = new Date(Date.now() - 1000).toISOString();
    const teamKey = value("team-a-key");
    const teams = { id: "t1", type: "key.created", occurred_at: at, key_alias: "x", key: teamKey, team_id: "team-a" };
    expect(await runtime.applyKeyEvent(teams)).toMatchObject({ status: "applied" });
    const send = (method: string, path: string, body?: unknown) =>
      runtime.fetch(
        new Request(`http://localhost${path}`, {
          method,
          headers: { authorization: `Bearer ${masterKey}`, "content-type": "application/json" },
          ...(body !== undefined && { body: JSON.stringify(body) }),
        }),
        { path },
      );
    // A gateway's PUT of litellm/<alias> for a team-less alias litellm/x: team a's x in Vault.
    for (const res of [
      await send("PUT", "/v1/secrets/litellm/litellm/x", { value: value("other") }),
      await send("DELETE", "/v1/secrets/litellm/litellm/x"),
    ]) {
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("not_hosted");
    }
    const scope = { team: "team-a", pathPrefix: "litellm" };
    expect((await runtime.manager.store.get("litellm/x", { scope }))?.value).toBe(teamKey);
    // Elsewhere under the general prefix, a direct write is a virtual key's as before.
    expect((await send("PUT", "/v1/secrets/litellm/svc", { value: value("svc") })).status).toBe(201);
    await runtime.close();
  });

  it("a team's KV field is trimmed of spaces, and a blank one is the store's own", async () => {
    const fake = await startFake();
    fake.seed("secret/DB", { key: "from-key", password: "from-password" });
    const store = await open({ HCP_VAULT_ADDR: fake.url, HCP_VAULT_TOKEN: ROOT });
    expect((await store.get("DB", { scope: { team: "t", dataKey: " password " } }))?.value).toBe("from-password");
    expect((await store.get("DB", { scope: { team: "t", dataKey: "   " } }))?.value).toBe("from-key");
  });
});

describe("llm-secrets serve against Vault", () => {
  it("serves the API over KV v2 given only HCP_VAULT_ADDR and an AppRole", async () => {
    const roleId = newKey("role-");
    const secretId = newKey("secret-id-");
    sensitive.push(roleId, secretId);
    const fake = await startFake({ approle: { roleId, secretId } });
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_system: hashicorp_vault\n  key_management_settings:\n    access_mode: read_and_write\n",
      {
        HCP_VAULT_ADDR: fake.url,
        HCP_VAULT_APPROLE_ROLE_ID: roleId,
        HCP_VAULT_APPROLE_SECRET_ID: secretId,
        HCP_VAULT_PATH_PREFIX: "llm",
        NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS as string,
      },
    );
    try {
      const v = value("served");
      expect((await call("PUT", "/v1/secrets/OPENAI_API_KEY", { value: v })).status).toBe(201);
      expect(fake.requests.some((r) => r.method === "POST" && r.url === "/v1/auth/approle/login")).toBe(true);
      expect(fake.requests.some((r) => r.method === "POST" && r.url === "/v1/secret/data/llm/OPENAI_API_KEY")).toBe(
        true,
      );
      expect(await (await call("GET", "/v1/secrets/OPENAI_API_KEY?refresh=true")).json()).toMatchObject({ value: v });
      expect((await call("DELETE", "/v1/secrets/OPENAI_API_KEY")).status).toBe(204);
      expect((await call("GET", "/v1/secrets/OPENAI_API_KEY?refresh=true")).status).toBe(404);
    } finally {
      await server.stop();
    }
    expectNoValueIn([server.output], sensitive);
  });
});

// The file's last test, after every other one (vitest runs a file's tests in order): nothing they
// logged or threw holds a value or a credential.
describe("logs", () => {
  it("hold no secret value, token or secret id, and errors neither", () => {
    expect(logs.length).toBeGreaterThan(0);
    expect(errorMessages.length).toBeGreaterThan(0);
    expectNoValueIn([...logs, ...errorMessages], sensitive);
    // Each token the fakes issued is a credential too.
    const issued = fakes.flatMap((f) =>
      f.requests.map((r) => r.headers["x-vault-token"]).filter((t): t is string => typeof t === "string"),
    );
    expectNoValueIn([...logs, ...errorMessages], issued);
  });
});
