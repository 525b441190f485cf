// `GET /v1/secrets?prefix=P&limit=N&cursor=C`: names only, in pages, within hosted_keys, refused
// under write_only, 501 on stores that cannot list.
import { appendFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { KeyRing } from "../../core/src/crypto";
import { silentLogger } from "../../core/src/log";
import type { SecretStore, StoreFactory } from "../../core/src/secret-store";
import { BackendDenied, BackendUnavailable } from "../../core/src/store-errors";
import { awsSecretsManagerStore } from "../../core/src/stores/aws";
import { FileStore } from "../../core/src/stores/file";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";
import { lazyFakeAws } from "../fakes/aws";
import { expectNoValueIn, inProcessApp, secretValue } from "../helpers";

const aws = lazyFakeAws();

type Request = Awaited<ReturnType<typeof inProcessApp>>["request"];

/** Every page of a listing, following `next_cursor`. */
async function listAll(request: Request, query: string, limit: number) {
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const res = await request(
      `/v1/secrets?${query}&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
    );
    expect(res.status).toBe(200);
    const body = (await res.json()) as { names: string[]; next_cursor?: string };
    pages.push(body.names);
    cursor = body.next_cursor;
    expect(pages.length).toBeLessThan(100);
  } while (cursor);
  return pages;
}

const WRITABLE = "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n";

describe("listing names", () => {
  it("pages through every name held, sorted, each once, with no value and no deleted name", async () => {
    const { request } = await inProcessApp({ config: WRITABLE });
    const values: string[] = [];
    const names = Array.from({ length: 23 }, (_, i) => `KEY_${String(i).padStart(2, "0")}`);
    for (const name of [...names, "team-a/one", "team-a/two", "GONE"]) {
      const value = secretValue(name);
      values.push(value);
      expect((await request(`/v1/secrets/${name}`, { method: "PUT", json: { value } })).status).toBe(201);
    }
    expect((await request("/v1/secrets/GONE", { method: "DELETE" })).status).toBe(204);

    const pages = await listAll(request, "prefix=KEY_", 10);
    expect(pages.map((p) => p.length)).toEqual([10, 10, 3]);
    expect(pages.flat()).toEqual(names);

    const everything = await (await request("/v1/secrets")).json();
    expect(everything).toEqual({ names: [...names, "team-a/one", "team-a/two"] }); // default limit 100: one page
    expect((await listAll(request, "prefix=team-a%2F", 1)).flat()).toEqual(["team-a/one", "team-a/two"]);
    expect(await (await request("/v1/secrets?prefix=nothing")).json()).toEqual({ names: [] });
    expectNoValueIn([JSON.stringify(everything)], values);
  });

  it("lists only hosted_keys (and virtual keys under the prefix are not listed unless hosted)", async () => {
    const { request, runtime } = await inProcessApp({
      config: `${WRITABLE}    hosted_keys: ["A", "C"]\n`,
    });
    for (const name of ["A", "B", "C", "D"]) await runtime.backend.put(name, secretValue(name));
    expect((await listAll(request, "prefix=", 1)).flat()).toEqual(["A", "C"]);
  });

  it("with hosted_keys, answers as if nothing else were held: no cursor, count or length of another name shows", async () => {
    // Before: the store's paging showed through. next_cursor was the base64url of a name outside
    // hosted_keys (a secret refused as not_hosted; on the local store each variable of the process
    // environment), and later, sealed, still came back exactly when more than `limit` names of any
    // kind started with the prefix, its length that of the name.
    const answers = async (others: string[]) => {
      const { request, runtime } = await inProcessApp({ config: `${WRITABLE}    hosted_keys: ["A", "C", "E"]\n` });
      for (const name of ["A", "C", ...others]) await runtime.backend.put(name, secretValue(name));
      const seen: string[] = [];
      for (const prefix of ["", "A", "B", "D", "Z"]) {
        for (const limit of [1, 2, 1000]) {
          let cursor: string | undefined;
          do {
            const query = `prefix=${prefix}&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
            const res = await request(`/v1/secrets?${query}`);
            expect(res.status).toBe(200);
            const body = (await res.json()) as { names: string[]; next_cursor?: string };
            seen.push(`${query} -> ${JSON.stringify(body)}`);
            cursor = body.next_cursor;
          } while (cursor);
        }
      }
      return seen;
    };
    const alone = await answers([]);
    expect(alone).toContain('prefix=&limit=1 -> {"names":["A"],"next_cursor":"A"}');
    expect(await answers(["B_PRIVATE_PAYROLL_DB", "B_OTHER", "D_LONG_NAME_OF_A_DATABASE_PASSWORD", "ZZZ"])).toEqual(
      alone,
    );
  });

  it("with hosted_keys, looks up the hosted names, not every name held: the cost does not grow with the store", async () => {
    // Before: the store's pages were walked until each hosted name was seen: the whole store when
    // one was not held, its pages each sorting every name (30 000 names: 300 calls, 2.7 s blocked).
    const { request, runtime } = await inProcessApp({
      config: `${WRITABLE}    hosted_keys: ["OPENAI_KEY", "NOT_YET_STORED", "ZZ_KEY"]\n`,
    });
    // At once: the file store writes them as a few batches (one by one, each its own fsync, it took
    // 10 s alone and past 30 s beside other test files).
    await Promise.all(Array.from({ length: 5_000 }, (_, i) => runtime.backend.put(`litellm/vk-${i}`, "v")));
    for (const name of ["OPENAI_KEY", "ZZ_KEY"]) await runtime.backend.put(name, secretValue(name));
    // Lookups: the file store's `has`, or `get` for a store without one.
    const calls = { list: 0, lookups: 0 };
    const backend = runtime.manager.store;
    const list = backend.list?.bind(backend);
    const get = backend.get.bind(backend);
    const has = backend.has?.bind(backend);
    backend.list = (...args: Parameters<NonNullable<SecretStore["list"]>>) => {
      calls.list++;
      return (list as NonNullable<SecretStore["list"]>)(...args);
    };
    backend.get = (...args: Parameters<SecretStore["get"]>) => {
      calls.lookups++;
      return get(...args);
    };
    if (has)
      backend.has = (name: string) => {
        calls.lookups++;
        return has(name);
      };
    expect(await (await request("/v1/secrets?limit=1")).json()).toEqual({
      names: ["OPENAI_KEY"],
      next_cursor: "OPENAI_KEY",
    });
    expect(await (await request("/v1/secrets?limit=1&cursor=OPENAI_KEY")).json()).toEqual({ names: ["ZZ_KEY"] });
    expect(calls.list).toBe(0);
    expect(calls.lookups).toBeGreaterThan(0);
    expect(calls.lookups).toBeLessThanOrEqual(5); // each page: at most the hosted names after its cursor
  });

  it("with hosted_keys, a listing leaves what later reads answer as it was, and one unreadable name does not fail it", async () => {
    // Before: the listing's lookups went through the read cache and stayed there: a key deleted by
    // another instance was served on for the refresh interval, one stored there answered 404; and a
    // hosted name whose read was refused failed every listing that looked it up.
    const shared = new MemoryStore();
    const factory = { ...memoryStore, open: async () => shared } satisfies StoreFactory<"memory">;
    const config = `${WRITABLE}    hosted_keys: ["NEW_KEY", "OPENAI_KEY", "P_KEY"]\n`;
    await shared.put("OPENAI_KEY", secretValue("o"));
    await shared.put("P_KEY", secretValue("p"));
    const one = await inProcessApp({ config, stores: [factory] });
    const two = await inProcessApp({ config, stores: [factory] });
    expect(await (await one.request("/v1/secrets")).json()).toEqual({ names: ["OPENAI_KEY", "P_KEY"] });
    expect((await two.request("/v1/secrets/OPENAI_KEY", { method: "DELETE" })).status).toBe(204);
    expect((await two.request("/v1/secrets/NEW_KEY", { method: "PUT", json: { value: "n" } })).status).toBe(201);
    expect((await one.request("/v1/secrets/OPENAI_KEY")).status).toBe(404);
    expect((await one.request("/v1/secrets/NEW_KEY")).status).toBe(200);
    // A name the store refuses to read (or cannot open) is listed: a read of it says why.
    const store = one.runtime.manager.store;
    const get = store.get.bind(store);
    store.get = (name, options) =>
      name === "P_KEY" ? Promise.reject(new BackendDenied("get P_KEY: 403")) : get(name, options);
    expect(await (await one.request("/v1/secrets")).json()).toEqual({ names: ["NEW_KEY", "P_KEY"] });
    expect((await one.request("/v1/secrets/P_KEY")).status).toBe(502);
    // A store that cannot be reached fails the listing, as its own list would.
    store.get = () => Promise.reject(new BackendUnavailable("down", 1));
    expect((await one.request("/v1/secrets")).status).toBe(503);
  });

  it("with hosted_keys, a file store sealed under a key this process lacks lists what it holds, and a closed one fails the listing", async () => {
    // Before: each hosted name's lookup was a read, which such a store refuses for every name, held or
    // not (500 store_corrupt: /ready must fail), so every hosted name was listed as held; a closed
    // store listed them all too.
    const config = `${WRITABLE}    hosted_keys: ["NEVER_STORED", "OPENAI_KEY", "ZZ_NEVER"]\n`;
    const { request, runtime } = await inProcessApp({ config, env: { LITELLM_SALT_KEY: "salt-key-before-rotation" } });
    await runtime.backend.put("OPENAI_KEY", secretValue("o"));
    // Another process (the CLI's `reencrypt`, a key rotation under way) re-seals the store under a new key.
    const dataDir = (runtime.backend as FileStore).location;
    const other = await FileStore.open({
      dataDir,
      keys: new KeyRing("salt-key-after-rotation", ["salt-key-before-rotation"]),
    });
    await other.reencrypt();
    await other.close();
    expect((await request("/v1/secrets/NEVER_STORED")).status).toBe(500); // store_corrupt: it cannot tell
    expect(await (await request("/v1/secrets")).json()).toEqual({ names: ["OPENAI_KEY"] });
    await runtime.backend.close?.();
    const closed = await request("/v1/secrets");
    expect(closed.status).toBe(500);
    expect(await closed.json()).toMatchObject({ error: { code: "store_unavailable" } });
  });

  it("with hosted_keys, a file store whose log does not read fails the listing rather than list every hosted name", async () => {
    const config = `${WRITABLE}    hosted_keys: ["NEVER_STORED", "OPENAI_KEY"]\n`;
    const { request, runtime } = await inProcessApp({ config });
    await runtime.backend.put("OPENAI_KEY", secretValue("o"));
    await new Promise((r) => setImmediate(r));
    await appendFile(join((runtime.backend as FileStore).location, "secrets.log"), "this line is not a log entry\n");
    const res = await request("/v1/secrets");
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({ error: { code: "store_corrupt" } });
  });

  it("with hosted_keys, an AWS secret whose own KMS key is disabled is listed (a read of it says why); the listing answers", async () => {
    // Before the last fix's fix: store_unavailable from any lookup failed the listing, and AWS's
    // DecryptionFailure for one secret's disabled key is store_unavailable: every listing was 500.
    const fake = await aws();
    fake.reset();
    const store = await awsSecretsManagerStore.open(
      { config: { aws_region_name: "us-east-1" }, env: {} },
      { dataDir: "/nonexistent", env: {}, log: silentLogger, now: Date.now },
    );
    await store.put("A_KEY", secretValue("a"));
    await store.put("B_KEY", secretValue("b"));
    const factory = { ...awsSecretsManagerStore, open: async () => store } satisfies StoreFactory<"aws_secret_manager">;
    const { request } = await inProcessApp({
      stores: [factory],
      config:
        'general_settings:\n  key_management_system: aws_secret_manager\n  key_management_settings:\n    hosted_keys: ["A_KEY", "B_KEY", "C_KEY"]\n',
      env: { AWS_REGION_NAME: "us-east-1" },
    });
    const secret = fake.secrets.get("B_KEY");
    if (secret === undefined) throw new Error("the fake holds no B_KEY");
    secret.keyState = "Disabled";
    expect((await request("/v1/secrets/B_KEY")).status).toBe(500);
    const res = await request("/v1/secrets");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ names: ["A_KEY", "B_KEY"] });
  });

  it("lists an environment store's hosted_keys that are set, and nothing without hosted_keys", async () => {
    const hosted = await inProcessApp({
      env: { OPENAI_API_KEY: secretValue("env"), OTHER: "x" },
      config:
        'general_settings:\n  key_management_system: local\n  key_management_settings:\n    hosted_keys: ["OPENAI_API_KEY", "UNSET_KEY"]\n',
    });
    expect(await (await hosted.request("/v1/secrets")).json()).toEqual({ names: ["OPENAI_API_KEY"] });
    const unhosted = await inProcessApp({
      env: { OPENAI_API_KEY: secretValue("env") },
      config: "general_settings:\n  key_management_system: local\n",
    });
    expect(await (await unhosted.request("/v1/secrets")).json()).toEqual({ names: [] });
  });

  it("is refused under write_only (403) and on a store that cannot list (501)", async () => {
    const writeOnly = await inProcessApp({
      config: "general_settings:\n  key_management_settings:\n    access_mode: write_only\n",
    });
    const refused = await writeOnly.request("/v1/secrets");
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({ error: { code: "write_only" } });

    // A store without `list` (as Docker's and Infisical's are).
    const inner = new MemoryStore();
    const unlisted: SecretStore = {
      kind: "memory",
      keyOf: (n) => inner.keyOf(n),
      get: (n) => inner.get(n),
      put: (n, v) => inner.put(n, v),
      delete: (n) => inner.delete(n),
    };
    const factory = { ...memoryStore, open: async () => unlisted } satisfies StoreFactory<"memory">;
    const { request } = await inProcessApp({ stores: [factory] });
    const res = await request("/v1/secrets");
    expect(res.status).toBe(501);
    expect(await res.json()).toMatchObject({ error: { code: "not_supported" } });
  });

  it("refuses a bad limit or an unknown query key (400 invalid_request), and needs the key (401)", async () => {
    const { request } = await inProcessApp();
    for (const query of ["limit=0", "limit=1001", "limit=ten", "limit=-1", "colour=red"]) {
      const res = await request(`/v1/secrets?${query}`);
      expect(res.status, query).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: "invalid_request" } });
    }
    expect((await request("/v1/secrets?limit=1000")).status).toBe(200);
    expect((await request("/v1/secrets", { token: null })).status).toBe(401);
    // /v1/secrets is the listing's path: another method is 405 with Allow, as on every known path
    // (it was taken for a write of the empty name, 400, body read first).
    const put = await request("/v1/secrets", { method: "PUT", json: { value: "x" } });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")?.split(/,\s*/).sort()).toEqual(["GET", "HEAD"]);
    expect(await put.json()).toMatchObject({ error: { code: "method_not_allowed" } });
  });
});
