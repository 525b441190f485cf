// The Google stores beyond the conformance suite: auth as Google checks it (the service account's
// self-signed JWT, verified by the fake), name mapping and adoption, tombstones and purge, the
// always-read switch, KMS's canonical base64, the fault matrix, and `serve` against the fake.
// Google's own gRPC clients over TLS to test/fakes/google.ts.
import { generateKeyPairSync } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as sdk from "@google-cloud/secret-manager";
import { beforeEach, describe, expect, inject, it } from "vitest";
import { createLogger } from "../../core/src/log";
import { loadSettings } from "../../core/src/settings";
import { GoogleSecretManagerStore, googleSecretManagerStore } from "../../core/src/stores/google";
import { googleTlsOptions } from "../../core/src/stores/google-config";
import { googleKmsStore } from "../../core/src/stores/google-kms";
import { FAULT_DETAIL, type FakeGoogle, lazyFakeGoogle } from "../fakes/google";
import { makeServerChain } from "../fakes/pki";
import { codeOf, expectNoValueIn, listPages, newKey, secretValue, serveStore, tempDir } from "../helpers";

const google = lazyFakeGoogle(tempDir);
const KMS_KEY = "projects/llm-secrets-test/locations/global/keyRings/ring/cryptoKeys/key";
const logs: string[] = [];
const log = createLogger((line) => logs.push(line));
const values: string[] = [];

function value(label: string): string {
  const v = secretValue(label);
  values.push(v);
  return v;
}

function endpointOf(fake: FakeGoogle) {
  const url = new URL(fake.endpoint);
  return { apiEndpoint: url.hostname, port: Number(url.port) };
}

type ClientCall = "createSecret" | "addSecretVersion" | "updateSecret" | "deleteSecret" | "listSecretVersions";

/**
 * A real client whose `method` first runs the step set in `next` (once): another instance's change
 * landing between the store's look and that call.
 */
function racedClient(fake: FakeGoogle, method: ClientCall) {
  const client = new sdk.SecretManagerServiceClient(endpointOf(fake));
  const call = (client[method] as (...args: unknown[]) => Promise<unknown>).bind(client);
  const raced: { client: typeof client; next?: () => Promise<unknown> } = { client };
  (client as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
    const step = raced.next;
    raced.next = undefined;
    if (step) await step();
    return call(...args);
  };
  return raced;
}

async function open(env: Record<string, string> = {}, config: Record<string, unknown> = {}) {
  const fake = await google();
  return googleSecretManagerStore.open(
    {
      config,
      env: {
        GOOGLE_SECRET_MANAGER_PROJECT_ID: fake.project,
        LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: endpointOf(fake),
        ...env,
      },
    },
    { dataDir: "/nonexistent", env: {}, log, now: Date.now },
  );
}

beforeEach(async () => {
  (await google()).reset();
});

describe("google_secret_manager over gRPC", () => {
  it("authenticates every call with the service account's self-signed JWT, verified by the service", async () => {
    const fake = await google();
    const store = await open();
    await store.put("OPENAI_API_KEY", value("auth"));
    await store.get("OPENAI_API_KEY");
    expect(fake.calls.length).toBeGreaterThanOrEqual(4);
    for (const call of fake.calls) expect(call.authorization).toMatch(/^Bearer eyJ[\w-]+\.[\w-]+\.[\w-]+$/);
    const claims = JSON.parse(Buffer.from(fake.calls[0]?.authorization?.split(".")[1] ?? "", "base64url").toString());
    expect(claims).toMatchObject({ iss: fake.clientEmail, sub: fake.clientEmail });
    await store.close?.();
  });

  it("a key the service does not know is refused: backend_denied", async () => {
    const fake = await google();
    const dir = await tempDir();
    const other = JSON.parse(await readFile(fake.keyFile, "utf8"));
    other.private_key = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({
      type: "pkcs8",
      format: "pem",
    });
    const keyFile = join(dir, "other.json");
    await writeFile(keyFile, JSON.stringify(other));
    const store = new GoogleSecretManagerStore({
      client: new sdk.SecretManagerServiceClient({ ...endpointOf(fake), keyFilename: keyFile }),
      project: fake.project,
    });
    expect(await codeOf(store.get("X"))).toBe("backend_denied");
    await store.close();
  });

  it("maps names onto secret ids, keeps the name in an annotation, and adopts a secret made elsewhere", async () => {
    const fake = await google();
    const store = await open();
    const v = value("mapped");
    expect(await store.put("team.key", v, { meta: { whenCreated: { tags: { team: "platform" } } } })).toBe("created");
    const secret = fake.secrets.get(`projects/${fake.project}/secrets/team-key`);
    expect(secret?.annotations["llm-secrets.name"]).toBe("team.key");
    expect(secret?.labels).toEqual({ team: "platform" });
    expect(fake.callsOf("CreateSecret")[0]?.request).toMatchObject({
      parent: `projects/${fake.project}`,
      secret_id: "team-key",
      secret: { replication: { automatic: {} } },
    });
    expect((await store.get("team.key"))?.value).toBe(v);
    expect(await store.get("team-key")).toBeUndefined(); // its id holds another name
    // Made in the console: no annotation. Read, then adopted by the first write.
    fake.secrets.set(`projects/${fake.project}/secrets/AZURE_API_KEY`, {
      name: `projects/${fake.project}/secrets/AZURE_API_KEY`,
      labels: {},
      annotations: {},
      versions: [{ id: 1, data: Buffer.from("console-made"), state: "ENABLED", created: new Date() }],
      created: new Date(),
      etag: 1,
    });
    expect((await store.get("AZURE_API_KEY"))?.value).toBe("console-made");
    expect(await store.put("AZURE_API_KEY", value("adopted"))).toBe("updated");
    expect(fake.secrets.get(`projects/${fake.project}/secrets/AZURE_API_KEY`)?.annotations["llm-secrets.name"]).toBe(
      "AZURE_API_KEY",
    );
    expect(await codeOf(store.put("UPPER", "v", { meta: { tags: { Team: "x" } } }))).toBe("invalid_request");
    await store.close?.();
  });

  it("adopt: false (a key event's change, a virtual key's write) neither adopts nor deletes a secret made elsewhere (no annotation): name_conflict", async () => {
    const fake = await google();
    const store = await open();
    const consoleMade = (id: string, data: string) =>
      fake.secrets.set(`projects/${fake.project}/secrets/${id}`, {
        name: `projects/${fake.project}/secrets/${id}`,
        labels: {},
        annotations: {},
        versions: [{ id: 1, data: Buffer.from(data), state: "ENABLED", created: new Date() }],
        created: new Date(),
        etag: 1,
      });
    // The ids the virtual keys `litellm/` + `SALT_KEY` and + `OTHER` map onto.
    const salt = value("console-salt");
    consoleMade("litellm-SALT_KEY", salt);
    consoleMade("litellm-OTHER", value("console-other"));
    const event = { at: Date.now(), id: "evt-1" };
    expect(await codeOf(store.put("litellm/SALT_KEY", value("attacker"), { ifNewerThan: event, adopt: false }))).toBe(
      "name_conflict",
    );
    expect(await codeOf(store.delete("litellm/OTHER", { ifNewerThan: event, adopt: false }))).toBe("name_conflict");
    // Only looked at: no version added, none destroyed, no annotation set.
    expect(fake.calls.filter((c) => c.method !== "GetSecret")).toEqual([]);
    expect((await store.get("litellm/SALT_KEY"))?.value).toBe(salt);
    expect(fake.secrets.get(`projects/${fake.project}/secrets/litellm-OTHER`)?.versions[0]?.state).toBe("ENABLED");
    // A direct write still adopts it; then it is ours, and events change it.
    expect(await store.put("litellm/SALT_KEY", value("adopted"))).toBe("updated");
    expect(
      await store.delete("litellm/SALT_KEY", { ifNewerThan: { at: Date.now() + 1, id: "evt-2" }, adopt: false }),
    ).toBe("deleted");
    await store.close?.();
  });

  it("another name's tombstone on the id is no conflict: a write over it is ordered by the tombstone's time, and takes the id", async () => {
    const fake = await google();
    const store = await open();
    const id = `projects/${fake.project}/secrets/A-B`;
    await store.put("A.B", value("a"));
    expect(await codeOf(store.put("A-B", value("live")))).toBe("name_conflict"); // a live holder conflicts
    expect(await store.delete("A.B", { ifNewerThan: { at: Date.now(), id: "evt-5" } })).toBe("deleted");
    const tombstone = Number(fake.secrets.get(id)?.annotations["llm-secrets.changed-at"]);
    // An event older than the tombstone is superseded; a newer one (or a direct write) lands.
    expect(await store.put("A-B", value("late"), { ifNewerThan: { at: tombstone - 1, id: "evt-4" } })).toBe(
      "superseded",
    );
    const b = value("b");
    expect(await store.put("A-B", b, { ifNewerThan: { at: tombstone + 1, id: "evt-6" } })).toBe("created");
    expect((await store.get("A-B"))?.value).toBe(b);
    expect(await store.get("A.B")).toBeUndefined();
    expect(fake.secrets.get(id)?.annotations).toMatchObject({
      "llm-secrets.name": "A-B",
      "llm-secrets.deleted": "false",
    });
    // Now A-B holds it live: A.B conflicts again, until A-B is deleted; then a direct write of A.B lands.
    expect(await codeOf(store.put("A.B", value("back")))).toBe("name_conflict");
    expect(await store.delete("A-B")).toBe("deleted");
    expect(await store.put("A.B", value("again"))).toBe("created");
    await store.close?.();
  });

  it("records in annotations Google takes (keys without /), kept under 16 KiB: beyond, refused before any write", async () => {
    const fake = await google();
    const store = await open();
    await store.put("team/a", value("ann"), { ifNewerThan: { at: 1_000, id: "e".repeat(512) } });
    const notes = fake.secrets.get(`projects/${fake.project}/secrets/team-a`)?.annotations ?? {};
    expect(Object.keys(notes).sort()).toEqual([
      "llm-secrets.change-id",
      "llm-secrets.changed-at",
      "llm-secrets.deleted",
      "llm-secrets.name",
    ]);
    // An event id that cannot fit: refused before any call that changes something.
    const long = { at: 2_000, id: "e".repeat(16 * 1024) };
    fake.calls.length = 0;
    expect(await codeOf(store.put("LONG_ID", value("long"), { ifNewerThan: long }))).toBe("invalid_request");
    expect(await codeOf(store.delete("LONG_ID", { ifNewerThan: long }))).toBe("invalid_request");
    expect(await codeOf(store.delete("team/a", { ifNewerThan: long }))).toBe("invalid_request");
    expect(fake.calls.filter((c) => c.method !== "GetSecret")).toEqual([]);
    // The edge: Google keeps less than 16 KiB. Our annotations of EDGE at 2000 are 91 bytes with
    // the id's (name 16+4, changed-at 22+4, deleted 19+5, change-id 21): an id of 16 KiB - 91 is
    // exactly 16 KiB, refused; one byte less is taken.
    const exactly = { at: 2_000, id: "e".repeat(16 * 1024 - 91) };
    expect(await codeOf(store.put("EDGE", value("edge"), { ifNewerThan: exactly }))).toBe("invalid_request");
    expect(fake.calls.filter((c) => c.method !== "GetSecret")).toEqual([]);
    const under = { at: 2_000, id: "e".repeat(16 * 1024 - 92) };
    expect(await store.put("EDGE", value("edge"), { ifNewerThan: under })).toBe("created");
    // A secret annotated elsewhere to the brim: refused before its version is added.
    const full = `projects/${fake.project}/secrets/FULL`;
    fake.secrets.set(full, {
      name: full,
      labels: {},
      annotations: { "other.tool": "x".repeat(16 * 1024 - 100) },
      versions: [{ id: 1, data: Buffer.from("console-made"), state: "ENABLED", created: new Date() }],
      created: new Date(),
      etag: 1,
    });
    expect(await codeOf(store.put("FULL", value("full")))).toBe("store_unavailable"); // not the caller's doing
    expect(fake.secrets.get(full)?.versions).toHaveLength(1);
    await store.close?.();
  });

  it("reads with only roles/secretmanager.secretAccessor (versions.access, all LiteLLM needs)", async () => {
    const fake = await google();
    const store = await open();
    const v = value("accessor");
    await store.put("OPENAI_API_KEY", v, { meta: { tags: { team: "a" } } });
    await store.put("team.key", value("accessor-mapped"));
    await store.put("GONE", value("accessor-gone"));
    await store.delete("GONE");
    const accessor = new GoogleSecretManagerStore({
      client: new sdk.SecretManagerServiceClient({ ...endpointOf(fake), keyFilename: fake.accessorKeyFile }),
      project: fake.project,
    });
    fake.calls.length = 0;
    // Its value and version as LiteLLM reads it; the labels (secrets.get) are not to be had.
    expect(await accessor.get("OPENAI_API_KEY")).toEqual({ value: v, version: "1" });
    expect(fake.callsOf("GetSecret").length).toBe(1); // asked, and refused
    expect(await accessor.get("ABSENT")).toBeUndefined();
    expect(await accessor.get("GONE")).toBeUndefined(); // a tombstone's versions are destroyed
    // A mapped name cannot be told from another name of its id without the annotations.
    expect(await codeOf(accessor.get("team.key"))).toBe("backend_denied");
    // Nothing more: writes and lists are refused.
    expect(await codeOf(accessor.put("OPENAI_API_KEY", value("no")))).toBe("backend_denied");
    expect(await codeOf(accessor.list({ limit: 10 }))).toBe("backend_denied");
    await accessor.close();
    // With secrets.get, a read asks both at once (one round trip), and the version decides.
    fake.calls.length = 0;
    expect(await store.get("ABSENT")).toBeUndefined();
    expect(fake.calls.map((c) => c.method).sort()).toEqual(["AccessSecretVersion", "GetSecret"]);
    expect(await store.get("OPENAI_API_KEY")).toEqual({ value: v, version: "1", tags: { team: "a" } });
    await store.close?.();
  });

  it("refuses before any call a name longer than a secret id (255) and more than 64 labels", async () => {
    const fake = await google();
    const store = await open();
    const longest = `K${"a".repeat(254)}`;
    const v = value("longest");
    expect(await store.put(longest, v)).toBe("created");
    expect((await store.get(longest))?.value).toBe(v);
    fake.calls.length = 0;
    const tooLong = `K${"a".repeat(255)}`; // SPEC takes 256
    expect(await codeOf(store.get(tooLong))).toBe("invalid_name");
    expect(await codeOf(store.put(tooLong, value("too-long")))).toBe("invalid_name");
    expect(await codeOf(store.delete(tooLong, { ifNewerThan: { at: 1_000 } }))).toBe("invalid_name");
    expect(fake.calls).toEqual([]);
    // Tags become labels, 64 at most: the caller's, or config's creation defaults.
    const tags = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`t${i}`, "x"]));
    expect(await codeOf(store.put("MANY", value("many"), { meta: { tags } }))).toBe("invalid_request");
    expect(fake.calls).toEqual([]);
    expect(await codeOf(store.put("MANY", value("many"), { meta: { whenCreated: { tags } } }))).toBe("invalid_request");
    expect(fake.calls.filter((c) => c.method !== "GetSecret")).toEqual([]);
    await store.close?.();
  });

  it("a delete destroys every version and keeps the secret as a tombstone; with purge it deletes the secret", async () => {
    const fake = await google();
    const store = await open();
    await store.put("D", value("d1"));
    await store.put("D", value("d2"));
    expect(await store.delete("D", { ifNewerThan: { at: Date.now(), id: "evt-9" } })).toBe("deleted");
    const tomb = fake.secrets.get(`projects/${fake.project}/secrets/D`);
    expect(tomb?.versions.map((v) => v.state)).toEqual(["DESTROYED", "DESTROYED"]);
    expect(tomb?.versions.every((v) => v.data === undefined)).toBe(true);
    expect(tomb?.annotations).toMatchObject({ "llm-secrets.deleted": "true", "llm-secrets.change-id": "evt-9" });
    expect(await store.get("D")).toBeUndefined();

    const purging = await open({ LLM_SECRETS_GOOGLE_PURGE: "true" });
    await purging.put("P", value("p"));
    expect(await purging.delete("P")).toBe("deleted");
    expect(fake.secrets.has(`projects/${fake.project}/secrets/P`)).toBe(false);
    expect(fake.callsOf("DeleteSecret")).toHaveLength(1);
    await store.close?.();
    await purging.close?.();
  });

  it("reads versions/latest, the newest version: disabled or destroyed, the name reads as not found (no older value); another FAILED_PRECONDITION is an error", async () => {
    const fake = await google();
    const store = await open();
    await store.put("ROLLED", value("r1"));
    const second = value("r2");
    await store.put("ROLLED", second);
    expect((await store.get("ROLLED"))?.value).toBe(second);
    fake.disableVersion(`projects/${fake.project}/secrets/ROLLED`, 2);
    // Google answers FAILED_PRECONDITION for `latest` when it is disabled; LiteLLM then reads nothing too.
    expect(await store.get("ROLLED")).toBeUndefined();
    const latest = fake.secrets.get(`projects/${fake.project}/secrets/ROLLED`)?.versions[1];
    if (latest === undefined) throw new Error("no version 2");
    latest.state = "DESTROYED";
    expect(await store.get("ROLLED")).toBeUndefined();
    // Any other FAILED_PRECONDITION is not a missing value: here the fake's for a state it does not
    // know ("Secret Version [...] is in SUSPENDED state.").
    latest.state = "SUSPENDED" as typeof latest.state;
    expect(await codeOf(store.get("ROLLED"))).toBe("store_unavailable");
    await store.close?.();
  });

  it("lists with ListSecrets: page_size the limit, page_token the cursor, names as written, tombstones left out", async () => {
    const fake = await google();
    const store = await open();
    const held = ["team/a", "team/b", "team/c", "team/d", "team/e"];
    for (const n of held) await store.put(n, value(n));
    await store.put("team.x", value("mapped")); // id team-x
    await store.put("team/gone", value("gone"));
    await store.delete("team/gone");
    await store.delete("team/never", { ifNewerThan: { at: 5_000 } }); // an empty secret carries the tombstone
    const consoleMade = `projects/${fake.project}/secrets/team_console`;
    fake.secrets.set(consoleMade, {
      name: consoleMade,
      labels: {},
      annotations: {},
      versions: [{ id: 1, data: Buffer.from("console-made"), state: "ENABLED", created: new Date() }],
      created: new Date(),
      etag: 1,
    });
    fake.calls.length = 0;
    const { names, cursors } = await listPages(store.list?.bind(store), { prefix: "team/", limit: 3 });
    expect([...names].sort()).toEqual(held);
    expect(new Set(names).size).toBe(names.length);
    const calls = fake.callsOf("ListSecrets");
    expect(calls).toHaveLength(3); // 9 secrets, 3 a page: no filter is sent, the prefix is matched here
    expect(calls[0]?.request).toEqual({ parent: `projects/${fake.project}`, page_size: 3 });
    expect(calls.slice(1).map((c) => c.request.page_token)).toEqual(cursors);
    expect(calls.every((c) => c.request.filter === undefined)).toBe(true);
    const all = await store.list?.({ limit: 100 });
    expect(all?.cursor).toBeUndefined();
    expect([...(all?.names ?? [])].sort()).toEqual([...held, "team.x", "team_console"].sort());
    expect(await codeOf(store.list?.({ limit: 10, cursor: "not-a-token" }) ?? Promise.resolve())).toBe(
      "invalid_request",
    );
    fake.fail(1, "denied");
    expect(await codeOf(store.list?.({ limit: 10 }) ?? Promise.resolve())).toBe("backend_denied");
    await store.close?.();
  });

  it("GOOGLE_SECRET_MANAGER_ALWAYS_READ_SECRET_MANAGER=true turns the cache off; its refresh interval is its own", async () => {
    const fake = await google();
    const settings = (env: Record<string, string>) =>
      loadSettings({
        env: {
          LITELLM_MASTER_KEY: newKey(),
          LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: google_secret_manager\n",
          GOOGLE_SECRET_MANAGER_PROJECT_ID: fake.project,
          SECRET_MANAGER_REFRESH_INTERVAL: "600",
          ...env,
        },
        stores: [googleSecretManagerStore],
      }).cache.ttlSeconds;
    expect(settings({})).toBe(600);
    expect(settings({ GOOGLE_SECRET_MANAGER_REFRESH_INTERVAL: "120" })).toBe(120);
    expect(settings({ GOOGLE_SECRET_MANAGER_ALWAYS_READ_SECRET_MANAGER: "True" })).toBe(0);
    expect(settings({ GOOGLE_SECRET_MANAGER_ALWAYS_READ_SECRET_MANAGER: "false" })).toBe(600);
    expect(() => settings({ LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: "http://localhost:1" })).toThrow(
      /LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT/,
    );
  });
});

describe("google_secret_manager changes that stop half-way", () => {
  it("a delete that stopped between its annotation and its destroys reads as deleted, and its event finishes it", async () => {
    const fake = await google();
    const store = await open();
    await store.put("K", value("one"), { ifNewerThan: { at: 1_000, id: "e1" } });
    await store.put("K", value("two"), { ifNewerThan: { at: 1_100, id: "e1b" } });
    fake.fail(1, "denied", "DestroySecretVersion");
    expect(await codeOf(store.delete("K", { ifNewerThan: { at: 2_000, id: "e2" } }))).toBe("backend_denied");
    const secret = fake.secrets.get(`projects/${fake.project}/secrets/K`);
    expect(secret?.versions.some((v) => v.state === "ENABLED")).toBe(true);
    expect(await store.get("K")).toBeUndefined(); // what the secret records is a delete
    expect(await store.delete("K", { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("deleted");
    expect(secret?.versions.map((v) => v.state)).toEqual(["DESTROYED", "DESTROYED"]);
    expect(await store.delete("K", { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("superseded");
    await store.close?.();
  });

  it("a write that stopped before its version lands when its event comes again (new and existing secrets)", async () => {
    const fake = await google();
    const store = await open();
    const first = value("first");
    fake.fail(1, "denied", "AddSecretVersion");
    expect(await codeOf(store.put("N", first, { ifNewerThan: { at: 1_000, id: "e1" } }))).toBe("backend_denied");
    expect((await store.list?.({ limit: 10 }))?.names).not.toContain("N"); // made, empty: not listed
    // The secret the first attempt made is there, empty: the value lands in it.
    expect(await store.put("N", first, { ifNewerThan: { at: 1_000, id: "e1" } })).toBe("updated");
    expect((await store.get("N"))?.value).toBe(first);
    const second = value("second");
    fake.fail(1, "denied", "AddSecretVersion");
    expect(await codeOf(store.put("N", second, { ifNewerThan: { at: 2_000, id: "e2" } }))).toBe("backend_denied");
    expect((await store.get("N"))?.value).toBe(first);
    expect(await store.put("N", second, { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("updated");
    expect((await store.get("N"))?.value).toBe(second);
    // Stopped between its version and its time, over a tombstone: its version is newer than the
    // delete saw, read as over a live secret (it cannot be told from another writer's); the event
    // again records its time, over a name that holds a value: updated.
    expect(await store.delete("N", { ifNewerThan: { at: 3_000, id: "e3" } })).toBe("deleted");
    const third = value("third");
    fake.fail(1, "denied", "UpdateSecret");
    expect(await codeOf(store.put("N", third, { ifNewerThan: { at: 4_000, id: "e4" } }))).toBe("backend_denied");
    expect((await store.get("N"))?.value).toBe(third);
    expect(await store.put("N", third, { ifNewerThan: { at: 4_000, id: "e4" } })).toBe("updated");
    expect((await store.get("N"))?.value).toBe(third);
    // Done, the same event again changes nothing; an older one neither.
    expect(await store.put("N", third, { ifNewerThan: { at: 4_000, id: "e4" } })).toBe("superseded");
    expect(await store.put("N", first, { ifNewerThan: { at: 1_000, id: "e1" } })).toBe("superseded");
    await store.close?.();
  });

  it("an event's delete whose tombstone meets an older write made meanwhile (ALREADY_EXISTS) deletes it; a newer one stands", async () => {
    const fake = await google();
    const other = await open(); // another instance
    // The other instance's older write lands between this delete's GetSecret (nothing there) and
    // its CreateSecret of the tombstone.
    const raced = racedClient(fake, "createSecret");
    const store = new GoogleSecretManagerStore({ client: raced.client, project: fake.project });
    let theirs: unknown;
    raced.next = async () => {
      theirs = await other.put("GONE", value("older"), { ifNewerThan: { at: 1_000, id: "t1" } });
    };
    expect(await store.delete("GONE", { ifNewerThan: { at: 2_000, id: "t2" } })).toBe("deleted");
    expect(theirs).toBe("created");
    expect(await other.get("GONE")).toBeUndefined();
    expect(fake.secrets.get(`projects/${fake.project}/secrets/GONE`)?.versions.map((v) => v.state)).toEqual([
      "DESTROYED",
    ]);
    // A newer write made meanwhile stands.
    const newer = value("newer");
    raced.next = () => other.put("KEPT", newer, { ifNewerThan: { at: 3_000, id: "t3" } });
    expect(await store.delete("KEPT", { ifNewerThan: { at: 2_000, id: "t2" } })).toBe("superseded");
    expect((await other.get("KEPT"))?.value).toBe(newer);
    await store.close();
    await other.close?.();
  });

  it("config tags that cannot be Google labels stop the start, named, when the store may write; a read-only store starts", async () => {
    const upper = { Environment: "prod" }; // an ordinary tag elsewhere, not a label (upper case)
    const refused = await open({}, { access_mode: "read_and_write", tags: upper }).catch((e: Error) => e);
    expect((refused as Error).name).toBe("ConfigError");
    expect((refused as Error).message).toMatch(
      /^general_settings\.key_management_settings\.tags: the tag Environment cannot be a Google label/,
    );
    const team = { access_mode: "write_only", team_settings: { t1: { tags: upper } } };
    expect(String(await open({}, team).catch((e: Error) => e))).toMatch(/team_settings\.t1\.tags: the tag Environment/);
    const readOnly = await open({}, { tags: upper }); // read_only, the default: it writes nothing
    await readOnly.close?.();
  });

  it("checks the creation defaults' tags as labels only when creating: an update is not refused for them", async () => {
    const store = await open();
    const meta = { whenCreated: { tags: { Team: "Platform" } } }; // not a Google label (upper case)
    await store.put("EXISTING", value("one"));
    expect(await store.put("EXISTING", value("two"), { meta })).toBe("updated");
    expect(await codeOf(store.put("FRESH", value("x"), { meta }))).toBe("invalid_request");
    await store.close?.();
  });

  it("a write over a tombstone sets labels as a creation does: the creation defaults, not the deleted secret's", async () => {
    const fake = await google();
    const store = await open();
    await store.put("REBORN", value("one"), { meta: { tags: { old: "x" } } });
    expect(await store.delete("REBORN", { ifNewerThan: { at: Date.now(), id: "d1" } })).toBe("deleted");
    const defaults = { meta: { whenCreated: { tags: { team: "new" } } } };
    expect(await store.put("REBORN", value("two"), defaults)).toBe("created");
    expect((await store.get("REBORN"))?.tags).toEqual({ team: "new" });
    expect(fake.secrets.get(`projects/${fake.project}/secrets/REBORN`)?.labels).toEqual({ team: "new" });
    // Live again, the defaults no longer apply; deleted once more, with no defaults, no labels.
    await store.put("REBORN", value("three"), { meta: { whenCreated: { tags: { team: "other" } } } });
    expect((await store.get("REBORN"))?.tags).toEqual({ team: "new" });
    await store.delete("REBORN");
    expect(await store.put("REBORN", value("four"))).toBe("created");
    expect((await store.get("REBORN"))?.tags).toBeUndefined();
    await store.close?.();
  });

  it("an older event's write whose create meets a newer one made meanwhile (ALREADY_EXISTS) is superseded; an older one made meanwhile is written over", async () => {
    const fake = await google();
    const other = await open(); // another instance
    const raced = racedClient(fake, "createSecret");
    const store = new GoogleSecretManagerStore({ client: raced.client, project: fake.project });
    const newer = value("newer");
    raced.next = () => other.put("RACED", newer, { ifNewerThan: { at: 3_000, id: "t3" } });
    expect(await store.put("RACED", value("older"), { ifNewerThan: { at: 2_000, id: "t2" } })).toBe("superseded");
    expect((await other.get("RACED"))?.value).toBe(newer);
    const mine = value("mine");
    raced.next = () => other.put("OVER", value("theirs"), { ifNewerThan: { at: 1_000, id: "t1" } });
    expect(await store.put("OVER", mine, { ifNewerThan: { at: 2_000, id: "t2" } })).toBe("updated");
    expect((await other.get("OVER"))?.value).toBe(mine);
    await store.close();
    await other.close?.();
  });

  it("with purge, an event's delete of a name never written leaves nothing, and an older event's delete is superseded", async () => {
    const fake = await google();
    const purging = await open({ LLM_SECRETS_GOOGLE_PURGE: "true" });
    expect(await purging.delete("NEVER", { ifNewerThan: { at: 1_000, id: "e1" } })).toBe("absent");
    expect(fake.secrets.has(`projects/${fake.project}/secrets/NEVER`)).toBe(false);
    expect(fake.callsOf("CreateSecret")).toHaveLength(0);
    const kept = value("kept");
    await purging.put("KEPT", kept, { ifNewerThan: { at: 2_000, id: "e2" } });
    expect(await purging.delete("KEPT", { ifNewerThan: { at: 1_500, id: "e1b" } })).toBe("superseded");
    expect((await purging.get("KEPT"))?.value).toBe(kept);
    // A tombstone left before purge was set: deleted for good, the name was absent already.
    const keeping = await open();
    await keeping.put("TOMB", value("tomb"));
    await keeping.delete("TOMB");
    expect(await purging.delete("TOMB")).toBe("absent");
    expect(fake.secrets.has(`projects/${fake.project}/secrets/TOMB`)).toBe(false);
    await keeping.close?.();
    await purging.close?.();
  });

  it("a secret deleted between its version's read and its own (GetSecret NOT_FOUND) reads as not found", async () => {
    const fake = await google();
    const client = new sdk.SecretManagerServiceClient(endpointOf(fake));
    const store = new GoogleSecretManagerStore({ client, project: fake.project });
    await store.put("GONE_SINCE", value("gone"));
    (client as { getSecret: unknown }).getSecret = async () => {
      throw Object.assign(new Error("5 NOT_FOUND: Secret [GONE_SINCE] not found or has no versions."), { code: 5 });
    };
    expect(await store.get("GONE_SINCE")).toBeUndefined();
    await store.close();
  });

  it("takes 64 labels, keys of 63 characters and values of 63 (Google's most); one more is refused before any call", async () => {
    const fake = await google();
    const store = await open();
    const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "v"]));
    expect(await store.put("LABELS", value("labels"), { meta: { tags: labels } })).toBe("created");
    const longest = { [`k${"x".repeat(62)}`]: "v".repeat(63) };
    expect(await store.put("LONGEST", value("longest"), { meta: { tags: longest } })).toBe("created");
    expect((await store.get("LONGEST"))?.tags).toEqual(longest);
    const before = fake.calls.length;
    for (const tags of [{ [`k${"x".repeat(63)}`]: "v" }, { k: "v".repeat(64) }]) {
      expect(await codeOf(store.put("REFUSED", value("refused"), { meta: { tags } }))).toBe("invalid_request");
    }
    expect(fake.calls.length).toBe(before);
    await store.close?.();
  });

  it("LLM_SECRETS_GOOGLE_PURGE is read as true in any case, around spaces", async () => {
    const fake = await google();
    const purging = await open({ LLM_SECRETS_GOOGLE_PURGE: " True " });
    await purging.put("P", value("p"));
    expect(await purging.delete("P")).toBe("deleted");
    expect(fake.secrets.has(`projects/${fake.project}/secrets/P`)).toBe(false);
    await purging.close?.();
  });

  it("lists no secret made elsewhere whose id is not a name of ours (a leading _ or -)", async () => {
    const fake = await google();
    const store = await open();
    await store.put("OURS", value("ours"));
    for (const id of ["_internal", "-dash"]) {
      fake.secrets.set(`projects/${fake.project}/secrets/${id}`, {
        name: `projects/${fake.project}/secrets/${id}`,
        labels: {},
        annotations: {},
        versions: [{ id: 1, data: Buffer.from("console-made"), state: "ENABLED", created: new Date() }],
        created: new Date(),
        etag: 1,
      });
    }
    expect(await store.list?.({ limit: 10 })).toEqual({ names: ["OURS"] });
    await store.close?.();
  });

  it("a list refused INVALID_ARGUMENT without a cursor is the store's failure, not the caller's cursor", async () => {
    const fake = await google();
    const client = new sdk.SecretManagerServiceClient(endpointOf(fake));
    const store = new GoogleSecretManagerStore({ client, project: fake.project });
    (client as { listSecrets: unknown }).listSecrets = async () => {
      throw Object.assign(new Error("3 INVALID_ARGUMENT: Invalid resource field value in the request."), { code: 3 });
    };
    expect(await codeOf(store.list({ limit: 10 }))).not.toBe("invalid_request");
    await store.close();
  });
});

describe("google_secret_manager tombstones given a value by another writer (gcloud secrets versions add)", () => {
  /** Adds a version as `gcloud secrets versions add ID --data-file=-` does (how values reach Google for LiteLLM). */
  async function gcloudAdd(fake: FakeGoogle, id: string, data: string): Promise<void> {
    const client = new sdk.SecretManagerServiceClient(endpointOf(fake));
    await client.addSecretVersion({
      parent: `projects/${fake.project}/secrets/${id}`,
      payload: { data: Buffer.from(data) },
    });
    await client.close();
  }

  it("a version added after the delete is read as LiteLLM reads it: value, version, labels as tags", async () => {
    const fake = await google();
    const store = await open();
    const secret = () => fake.secrets.get(`projects/${fake.project}/secrets/OPENAI_API_KEY`);
    await store.put("OPENAI_API_KEY", value("old"), { meta: { tags: { team: "a" } } });
    expect(await store.delete("OPENAI_API_KEY")).toBe("deleted");
    expect(secret()?.annotations).toMatchObject({ "llm-secrets.deleted": "true" });
    // The highest version, and the time of the delete that saw it (the mark's own changed-at).
    const mark = secret()?.annotations ?? {};
    expect(mark["llm-secrets.deleted-through"]).toBe(`1@${mark["llm-secrets.changed-at"]}`);
    expect(await store.get("OPENAI_API_KEY")).toBeUndefined();
    const v = value("gcloud");
    await gcloudAdd(fake, "OPENAI_API_KEY", v);
    expect(await store.get("OPENAI_API_KEY")).toEqual({ value: v, version: "2", tags: { team: "a" } });
    // The tombstone's time still orders writes: an older event's is superseded, the value kept.
    const tombstone = Number(secret()?.annotations["llm-secrets.changed-at"]);
    const late = { ifNewerThan: { at: tombstone - 1, id: "late" } };
    expect(await store.put("OPENAI_API_KEY", value("late"), late)).toBe("superseded");
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe(v);
    // A name that reads as a value is updated, its labels set as on creation (the deleted name's are not kept).
    const mine = value("mine");
    expect(await store.put("OPENAI_API_KEY", mine, { meta: { whenCreated: { tags: { team: "b" } } } })).toBe("updated");
    expect(await store.get("OPENAI_API_KEY")).toEqual({ value: mine, version: "3", tags: { team: "b" } });
    expect(secret()?.annotations["llm-secrets.deleted-through"]).toBeUndefined();
    // An event's delete of a name never written leaves an empty tombstone: a first version added is read.
    expect(await store.delete("NEVER", { ifNewerThan: { at: Date.now(), id: "d1" } })).toBe("absent");
    const first = value("gcloud-first");
    await gcloudAdd(fake, "NEVER", first);
    expect((await store.get("NEVER"))?.value).toBe(first);
    // Another name's tombstone given a value is that name's again: no longer free for a name mapped onto its id.
    await store.put("A.B", value("a"));
    await store.delete("A.B");
    const ab = value("gcloud-ab");
    await gcloudAdd(fake, "A-B", ab);
    expect((await store.get("A.B"))?.value).toBe(ab);
    expect(await codeOf(store.put("A-B", value("taken")))).toBe("name_conflict");
    await store.close?.();
  });

  it("the same delete event again is superseded and destroys nothing of it; a newer delete deletes it as any live secret", async () => {
    const fake = await google();
    const store = await open();
    const secret = () => fake.secrets.get(`projects/${fake.project}/secrets/svc`);
    const t0 = Date.now() - 60_000;
    await store.put("svc", value("one"), { ifNewerThan: { at: t0, id: "evt-created" } });
    const del = { at: t0 + 1_000, id: "evt-deleted" };
    expect(await store.delete("svc", { ifNewerThan: del })).toBe("deleted");
    const v = value("gcloud");
    await gcloudAdd(fake, "svc", v);
    expect(await store.delete("svc", { ifNewerThan: del })).toBe("superseded");
    expect(secret()?.versions.map((x) => x.state)).toEqual(["DESTROYED", "ENABLED"]);
    expect(await store.get("svc")).toEqual({ value: v, version: "2" });
    // A newer delete: every version destroyed, the highest recorded; one added after it is read again.
    expect(await store.delete("svc", { ifNewerThan: { at: t0 + 2_000, id: "evt-deleted-2" } })).toBe("deleted");
    expect(secret()?.versions.map((x) => x.state)).toEqual(["DESTROYED", "DESTROYED"]);
    expect(secret()?.annotations["llm-secrets.deleted-through"]).toBe(`2@${t0 + 2_000}`);
    expect(await store.get("svc")).toBeUndefined();
    const again = value("gcloud-again");
    await gcloudAdd(fake, "svc", again);
    expect((await store.get("svc"))?.value).toBe(again);
    await store.close?.();
  });

  it("a delete that stopped half-way records the versions it saw: its event again destroys those, never one added since", async () => {
    const fake = await google();
    const store = await open();
    const secret = () => fake.secrets.get(`projects/${fake.project}/secrets/K`);
    await store.put("K", value("one"), { ifNewerThan: { at: 1_000, id: "e1" } });
    await store.put("K", value("two"), { ifNewerThan: { at: 1_100, id: "e1b" } });
    fake.fail(1, "denied", "DestroySecretVersion");
    const event = { ifNewerThan: { at: 2_000, id: "e2" } };
    expect(await codeOf(store.delete("K", event))).toBe("backend_denied");
    expect(secret()?.annotations["llm-secrets.deleted-through"]).toBe("2@2000");
    expect(await store.get("K")).toBeUndefined(); // its versions are the delete's
    const v = value("gcloud");
    await gcloudAdd(fake, "K", v);
    expect(await store.delete("K", event)).toBe("superseded");
    expect(secret()?.versions.map((x) => x.state)).toEqual(["DESTROYED", "DESTROYED", "ENABLED"]);
    expect(await store.get("K")).toEqual({ value: v, version: "3" });
    await store.close?.();
  });

  it("a deleted-through that an earlier build's write and delete kept (another delete's) covers nothing: that build's mark covers every version", async () => {
    const fake = await google();
    const store = await open();
    const secret = () => fake.secrets.get(`projects/${fake.project}/secrets/K`);
    const t = 1_000;
    await store.put("K", value("v1"), { ifNewerThan: { at: t, id: "e1" } });
    expect(await store.delete("K", { ifNewerThan: { at: t + 1_000, id: "e2" } })).toBe("deleted");
    // An earlier build's write (e3): a version added, its annotations merged over ours (ours kept).
    const revoked = value("revoked-by-e4");
    await gcloudAdd(fake, "K", revoked);
    const notes = secret()?.annotations ?? {};
    Object.assign(notes, { "llm-secrets.changed-at": String(t + 2_000), "llm-secrets.change-id": "e3" });
    Object.assign(notes, { "llm-secrets.deleted": "false" });
    // Then its delete (e4), marked and stopped before destroying: the number it kept is e2's.
    Object.assign(notes, { "llm-secrets.changed-at": String(t + 3_000), "llm-secrets.change-id": "e4" });
    Object.assign(notes, { "llm-secrets.deleted": "true" });
    // Read as deleted (the revoked key was served before), and the redelivery here finishes it.
    expect(await store.get("K")).toBeUndefined();
    expect(await store.delete("K", { ifNewerThan: { at: t + 3_000, id: "e4" } })).toBe("deleted");
    expect(secret()?.versions.map((x) => x.state)).toEqual(["DESTROYED", "DESTROYED"]);
    await store.close?.();
  });

  it("a version another writer added, then disabled (a key rolled back), is no value: the name is still deleted, its delete's event finishes it, a write creates it", async () => {
    const fake = await google();
    const store = await open();
    const path = `projects/${fake.project}/secrets/K`;
    const secret = () => fake.secrets.get(path);
    await store.put("K", value("one"), { ifNewerThan: { at: 1_000, id: "e1" } });
    fake.fail(1, "denied", "DestroySecretVersion");
    const event = { ifNewerThan: { at: 2_000, id: "e2" } };
    expect(await codeOf(store.delete("K", event))).toBe("backend_denied");
    await gcloudAdd(fake, "K", value("gcloud"));
    fake.disableVersion(path, 2);
    expect(await store.get("K")).toBeUndefined();
    // Its event again destroys what the delete saw; nothing is left that reads as a value: deleted.
    expect(await store.delete("K", event)).toBe("deleted");
    expect(secret()?.versions.map((x) => x.state)).toEqual(["DESTROYED", "DISABLED"]);
    // A write over it makes the name anew.
    const mine = value("mine");
    expect(await store.put("K", mine, { ifNewerThan: { at: 3_000, id: "e3" } })).toBe("created");
    expect((await store.get("K"))?.value).toBe(mine);
    await store.close?.();
  });

  it("a tombstone of an earlier build (no deleted-through) still reads as deleted, a version added since too", async () => {
    const fake = await google();
    const store = await open();
    for (const name of ["OLD", "NEW"]) {
      await store.put(name, value(name));
      await store.delete(name);
    }
    const old = fake.secrets.get(`projects/${fake.project}/secrets/OLD`);
    if (old === undefined) throw new Error("no secret OLD");
    delete old.annotations["llm-secrets.deleted-through"]; // as an earlier build marked it
    const v = value("gcloud-new");
    await gcloudAdd(fake, "OLD", value("gcloud-old"));
    await gcloudAdd(fake, "NEW", v);
    expect(await store.get("OLD")).toBeUndefined(); // its mark says nothing of which versions it saw
    expect((await store.get("NEW"))?.value).toBe(v);
    await store.close?.();
  });
});

describe("google_secret_manager changes answered late, or met by another's", () => {
  function storeOf(fake: FakeGoogle, options: { purge?: boolean; client?: sdk.SecretManagerServiceClient } = {}) {
    return new GoogleSecretManagerStore({
      client: options.client ?? new sdk.SecretManagerServiceClient(endpointOf(fake)),
      project: fake.project,
      purge: options.purge,
      deadlineMs: 300, // the fake's late answers come after it
    });
  }

  it("a change whose answer comes after the deadline is not made again: backend_unavailable, one version, and the put tried again finds its secret", async () => {
    const fake = await google();
    const store = storeOf(fake);
    const id = (n: string) => `projects/${fake.project}/secrets/${n}`;
    await store.put("DUP", value("v1"));
    fake.calls.length = 0;
    fake.fail(1, "late", "AddSecretVersion");
    expect(await codeOf(store.put("DUP", value("v2")))).toBe("backend_unavailable");
    expect(fake.callsOf("AddSecretVersion")).toHaveLength(1);
    expect(fake.secrets.get(id("DUP"))?.versions).toHaveLength(2); // v1 and the late v2, not v2 twice
    // A new name whose CreateSecret answers late: not "updated" (the secret it made is no other
    // writer's); tried again, the put finds that secret, empty, and lands in it.
    fake.fail(1, "late", "CreateSecret");
    const fresh = value("fresh");
    expect(await codeOf(store.put("FRESH", fresh))).toBe("backend_unavailable");
    expect(fake.callsOf("CreateSecret")).toHaveLength(1);
    expect(fake.secrets.get(id("FRESH"))?.versions).toEqual([]);
    expect(await store.put("FRESH", fresh)).toBe("updated");
    expect((await store.get("FRESH"))?.value).toBe(fresh);
    // UNAVAILABLE: not tried again either. RESOURCE_EXHAUSTED (a quota, refused before anything is
    // done) is.
    fake.calls.length = 0;
    fake.fail(1, "unavailable", "AddSecretVersion");
    expect(await codeOf(store.put("DUP", value("v3")))).toBe("backend_unavailable");
    fake.fail(2, "exhausted", "AddSecretVersion");
    expect(await store.put("DUP", value("v4"))).toBe("updated");
    expect(fake.callsOf("AddSecretVersion")).toHaveLength(4);
    expect(fake.secrets.get(id("DUP"))?.versions).toHaveLength(3);
    // A purge whose DeleteSecret answers late: backend_unavailable; the delete tried again is done (absent).
    const purging = storeOf(fake, { purge: true });
    fake.fail(1, "late", "DeleteSecret");
    expect(await codeOf(purging.delete("DUP"))).toBe("backend_unavailable");
    expect(fake.secrets.has(id("DUP"))).toBe(false);
    expect(await purging.delete("DUP")).toBe("absent");
    await store.close();
    await purging.close();
  });

  it("a delete whose secret another instance deleted meanwhile (NOT_FOUND) is done: deleted, with purge and with tombstones", async () => {
    const fake = await google();
    const other = storeOf(fake, { purge: true }); // another instance
    // The other instance's delete lands between this delete's GetSecret and the named call.
    for (const [method, purge, event] of [
      ["deleteSecret", true, false],
      ["updateSecret", false, true], // an event's delete
      ["listSecretVersions", false, false],
    ] as const) {
      const name = `RACED_${method}`;
      await other.put(name, value(method));
      const raced = racedClient(fake, method);
      raced.next = () => other.delete(name);
      const store = storeOf(fake, { purge, client: raced.client });
      const options = event ? { ifNewerThan: { at: Date.now() + 1, id: "d1" } } : {};
      expect(await store.delete(name, options), method).toBe("deleted");
      expect(fake.secrets.has(`projects/${fake.project}/secrets/${name}`), method).toBe(false);
      await store.close();
    }
    await other.close();
  });

  it("a tombstone another instance purged between its look and the list of its versions (NOT_FOUND) is no secret: a delete is absent", async () => {
    const fake = await google();
    const other = storeOf(fake, { purge: true }); // another instance
    for (const event of [false, true]) {
      const name = `PURGED_${event}`;
      await other.put(name, value(name));
      await storeOf(fake).delete(name); // a tombstone, with the versions its delete saw
      const raced = racedClient(fake, "listSecretVersions");
      raced.next = () => other.delete(name);
      const store = storeOf(fake, { client: raced.client });
      const options = event ? { ifNewerThan: { at: Date.now() + 1, id: "d1" } } : {};
      expect(await store.delete(name, options), `event: ${event}`).toBe("absent");
      await store.close();
    }
    await other.close();
  });

  it("a write whose secret another instance purged meanwhile (NOT_FOUND) makes the name anew: created", async () => {
    const fake = await google();
    const other = storeOf(fake, { purge: true }); // another instance
    for (const method of ["addSecretVersion", "updateSecret"] as const) {
      const name = `RACED_PUT_${method}`;
      await other.put(name, value(`${method}-old`));
      // The other instance's delete lands between this write's GetSecret and the named call.
      const raced = racedClient(fake, method);
      raced.next = () => other.delete(name);
      const store = storeOf(fake, { client: raced.client });
      const v = value(`${method}-new`);
      expect(await store.put(name, v, { ifNewerThan: { at: Date.now(), id: "p1" } }), method).toBe("created");
      expect((await other.get(name))?.value, method).toBe(v);
      await store.close();
    }
    await other.close();
  });

  it("delayed destroy (version_destroy_ttl): a version DISABLED with its destroy scheduled counts as destroyed", async () => {
    const fake = await google();
    const store = storeOf(fake);
    await store.put("DT", value("dt1"), { ifNewerThan: { at: 1_000, id: "e1" } });
    await store.put("DT", value("dt2"), { ifNewerThan: { at: 1_100, id: "e1b" } });
    const secret = fake.secrets.get(`projects/${fake.project}/secrets/DT`);
    if (secret === undefined) throw new Error("no secret DT");
    secret.versionDestroyTtl = 86_400; // set in the console
    const event = { at: 2_000, id: "e2" };
    expect(await store.delete("DT", { ifNewerThan: event })).toBe("deleted");
    expect(secret.versions.map((v) => [v.state, v.scheduledDestroy !== undefined])).toEqual([
      ["DISABLED", true],
      ["DISABLED", true],
    ]);
    expect(await store.get("DT")).toBeUndefined();
    // Its event again, and a direct delete: nothing left to destroy.
    fake.calls.length = 0;
    expect(await store.delete("DT", { ifNewerThan: event })).toBe("superseded");
    expect(await store.delete("DT")).toBe("absent");
    expect(fake.callsOf("DestroySecretVersion")).toEqual([]);
    await store.close();
  });
});

describe("google_secret_manager read faults (3 attempts)", () => {
  async function failing(times: number, fault: Parameters<FakeGoogle["fail"]>[1], deadlineMs?: number) {
    const fake = await google();
    const store = new GoogleSecretManagerStore({
      client: new sdk.SecretManagerServiceClient(endpointOf(fake)),
      project: fake.project,
      deadlineMs,
    });
    await store.put("F", value("f"));
    fake.calls.length = 0;
    fake.fail(times, fault, "AccessSecretVersion");
    const result = await store.get("F").catch((e: unknown) => e);
    // A read asks the secret and its latest version at once; the version's faults end the read.
    await new Promise((r) => setTimeout(r, 200)); // an attempt too many would show up here
    await store.close();
    const perMethod = [fake.callsOf("GetSecret").length, fake.callsOf("AccessSecretVersion").length];
    return { result: result as { code?: string; value?: string; message?: string }, attempts: Math.max(...perMethod) };
  }

  it("PERMISSION_DENIED is backend_denied, named in the message", async () => {
    const { result, attempts } = await failing(1, "denied");
    expect(result.code).toBe("backend_denied");
    expect(result.message).toContain("PERMISSION_DENIED (7)");
    expect(result.message).not.toContain(FAULT_DETAIL);
    expect(attempts).toBe(1);
  });

  it("a CMEK secret whose Cloud KMS key version is disabled (FAILED_PRECONDITION) is store_unavailable, never a missing secret", async () => {
    // Its text ends like a disabled version's ("is in DISABLED state."): only a secret version's
    // own answer is a missing secret, which would be cached and fall back to the environment.
    const { result, attempts } = await failing(1, "key_disabled");
    expect(result.code).toBe("store_unavailable");
    expect(result.message).toContain("FAILED_PRECONDITION (9)");
    expect(result.message).toContain("such as an encryption key, is not usable");
    expect(result.message).not.toContain(FAULT_DETAIL);
    expect(attempts).toBe(1);
  });

  it("RESOURCE_EXHAUSTED and UNAVAILABLE on every attempt are backend_unavailable, named as themselves (not the client's DEADLINE_EXCEEDED)", async () => {
    // Once its retries run out, gax reports DEADLINE_EXCEEDED with the last code only in its message.
    for (const [fault, named] of [
      ["exhausted", "RESOURCE_EXHAUSTED (8)"],
      ["unavailable", "UNAVAILABLE (14)"],
    ] as const) {
      const { result, attempts } = await failing(3, fault);
      expect(result.code, fault).toBe("backend_unavailable");
      expect(attempts, fault).toBe(3);
      expect(result.message, fault).toContain(named);
      expect(result.message, fault).not.toContain("DEADLINE_EXCEEDED");
      // Nothing else of the client's message: not the backend's details, nor gax's wording.
      expect(result.message, fault).not.toContain(FAULT_DETAIL);
      expect(result.message, fault).not.toMatch(/injected|retrying|Previous errors/);
    }
  });

  it("INTERNAL is backend_unavailable at once (not retried by the client), named in the message", async () => {
    const { result, attempts } = await failing(1, "internal");
    expect(result.code).toBe("backend_unavailable");
    expect(result.message).toContain("INTERNAL (13)");
    expect(result.message).not.toContain(FAULT_DETAIL);
    expect(attempts).toBe(1);
  });

  it("one UNAVAILABLE is retried and answered", async () => {
    const { result } = await failing(1, "unavailable");
    expect(result.value).toMatch(/^f-/);
  });

  it("the secret itself throttled or unavailable while its value came back: a name no other can hold is read without it; any other is backend_unavailable", async () => {
    const fake = await google();
    const store = new GoogleSecretManagerStore({
      client: new sdk.SecretManagerServiceClient(endpointOf(fake)),
      project: fake.project,
      deadlineMs: 300,
    });
    const v = value("meta");
    for (const [fault, times] of [
      ["exhausted", 3],
      ["unavailable", 3],
      ["hang", 3], // DEADLINE_EXCEEDED
    ] as const) {
      fake.reset();
      await store.put("OPENAI_API_KEY", v, { meta: { tags: { team: "a" } } });
      fake.fail(times, fault, "GetSecret");
      expect(await store.get("OPENAI_API_KEY"), fault).toEqual({ value: v, version: "1" }); // no tags
      expect(fake.callsOf("AccessSecretVersion"), fault).toHaveLength(1);
    }
    // Whose it is cannot be known without the annotations: the error stands.
    await store.put("team.key", value("meta-mapped")); // id team-key
    await store.put("own-id", value("meta-dash")); // its own id, which own.id would map onto too
    fake.fail(3, "exhausted", "GetSecret");
    expect(await codeOf(store.get("team.key"))).toBe("backend_unavailable");
    fake.fail(3, "exhausted", "GetSecret");
    expect(await codeOf(store.get("own-id"))).toBe("backend_unavailable");
    await store.close();
  });

  it("a service that does not answer is backend_unavailable once the deadline passes", async () => {
    const { result, attempts } = await failing(3, "hang", 300);
    expect(result.code).toBe("backend_unavailable");
    expect(result.message).toContain("DEADLINE_EXCEEDED (4)");
    expect(attempts).toBe(3);
  });
});

describe("google_kms", () => {
  it("decrypts canonical base64 with GOOGLE_KMS_RESOURCE_NAME, untrimmed; anything else is store_corrupt", async () => {
    const fake = await google();
    const v = value("kms");
    const sealed = fake.encrypt(` ${v} `, KMS_KEY).toString("base64");
    const otherKey = fake.encrypt(v, `${KMS_KEY}-other`).toString("base64");
    const store = await googleKmsStore.open(
      { config: {}, env: { GOOGLE_KMS_RESOURCE_NAME: KMS_KEY, LLM_SECRETS_GOOGLE_KMS_ENDPOINT: endpointOf(fake) } },
      {
        dataDir: "/nonexistent",
        env: {
          SEALED: sealed,
          SPACED: `${sealed}\n`,
          URLSAFE: Buffer.from(sealed, "base64").toString("base64url"),
          OTHER: otherKey,
        },
        log,
        now: Date.now,
      },
    );
    expect((await store.get("SEALED"))?.value).toBe(` ${v} `);
    expect(fake.callsOf("Decrypt")[0]?.request.name).toBe(KMS_KEY);
    expect(await codeOf(store.get("SPACED"))).toBe("store_corrupt");
    expect(await codeOf(store.get("OTHER"))).toBe("store_corrupt");
    expect(await store.get("ABSENT")).toBeUndefined();
    await store.close?.();
  });

  it("reads the plaintext as LiteLLM's .decode('utf-8'): a byte order mark kept; not UTF-8 is store_corrupt naming the variable", async () => {
    const fake = await google();
    const seal = (plain: string | Uint8Array) => fake.encrypt(plain, KMS_KEY).toString("base64");
    const store = await googleKmsStore.open(
      { config: {}, env: { GOOGLE_KMS_RESOURCE_NAME: KMS_KEY, LLM_SECRETS_GOOGLE_KMS_ENDPOINT: endpointOf(fake) } },
      {
        dataDir: "/nonexistent",
        env: { BOM: seal("\ufeffsk-bom"), LATIN1: seal(Buffer.from("sk-caf\xe9", "latin1")) },
        log,
        now: Date.now,
      },
    );
    expect((await store.get("BOM"))?.value).toBe("\ufeffsk-bom");
    const err = await store.get("LATIN1").catch((e: unknown) => e as Error & { code: string });
    expect(err).toMatchObject({
      code: "store_corrupt",
      message: "the environment variable LATIN1 opens to a plaintext that is not UTF-8",
    });
    await store.close?.();
  });

  it("takes only canonical base64, padding included, and nothing empty, before any call; GOOGLE_KMS_RESOURCE_NAME must be a CryptoKey's whole name", async () => {
    const fake = await google();
    const seal = (plain: string) => fake.encrypt(plain, KMS_KEY).toString("base64");
    let plain = value("kms-padded");
    while (!seal(plain).endsWith("=")) plain += "x"; // a ciphertext whose base64 is padded
    const sealed = seal(plain);
    const store = await googleKmsStore.open(
      { config: {}, env: { GOOGLE_KMS_RESOURCE_NAME: KMS_KEY, LLM_SECRETS_GOOGLE_KMS_ENDPOINT: endpointOf(fake) } },
      {
        dataDir: "/nonexistent",
        env: { PADDED: sealed, UNPADDED: sealed.replace(/=+$/, ""), EMPTY: "" },
        log,
        now: Date.now,
      },
    );
    expect((await store.get("PADDED"))?.value).toBe(plain);
    const calls = fake.callsOf("Decrypt").length;
    for (const name of ["UNPADDED", "EMPTY"]) {
      const err = await store.get(name).catch((e: unknown) => e as Error & { code: string });
      expect(err, name).toMatchObject({
        code: "store_corrupt",
        message: `the environment variable ${name} is not canonical base64 KMS ciphertext`,
      });
    }
    expect(fake.callsOf("Decrypt")).toHaveLength(calls);
    await store.close?.();

    const start = (name: string) => () =>
      loadSettings({
        env: {
          LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: google_kms\n",
          GOOGLE_KMS_RESOURCE_NAME: name,
        },
        stores: [googleKmsStore],
      });
    expect(start(KMS_KEY)).not.toThrow();
    for (const name of [`x/${KMS_KEY}`, `${KMS_KEY}/cryptoKeyVersions/1`]) {
      expect(start(name), name).toThrow(
        /GOOGLE_KMS_RESOURCE_NAME: expected projects\/P\/locations\/L\/keyRings\/R\/cryptoKeys\/K/,
      );
    }
  });
});

describe("llm-secrets serve against Google", () => {
  it("serves the API over Secret Manager given the project, the key file and the endpoint override", async () => {
    const fake = await google();
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_system: google_secret_manager\n  key_management_settings:\n    access_mode: read_and_write\n",
      {
        GOOGLE_SECRET_MANAGER_PROJECT_ID: fake.project,
        GOOGLE_APPLICATION_CREDENTIALS: fake.keyFile,
        LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: fake.endpoint,
        NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS as string,
      },
    );
    try {
      const v = value("served");
      expect((await call("PUT", "/v1/secrets/litellm/team-a/key", { value: v })).status).toBe(201);
      expect(
        fake.secrets.get(`projects/${fake.project}/secrets/litellm-team-a-key`)?.annotations["llm-secrets.name"],
      ).toBe("litellm/team-a/key");
      expect(await (await call("GET", "/v1/secrets/litellm/team-a/key?refresh=true")).json()).toMatchObject({
        value: v,
      });
      expect((await call("DELETE", "/v1/secrets/litellm/team-a/key")).status).toBe(204);
      expect((await call("GET", "/v1/secrets/litellm/team-a/key?refresh=true")).status).toBe(404);
    } finally {
      await server.stop();
    }
    expectNoValueIn([server.output, ...logs], values);
  });

  it("serves google_kms: hosted names decrypted with GOOGLE_KMS_RESOURCE_NAME from the environment", async () => {
    const fake = await google();
    const v = value("gkms-served");
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_system: google_kms\n  key_management_settings:\n    hosted_keys: [OPENAI_API_KEY]\n",
      {
        GOOGLE_KMS_RESOURCE_NAME: KMS_KEY,
        GOOGLE_APPLICATION_CREDENTIALS: fake.keyFile,
        LLM_SECRETS_GOOGLE_KMS_ENDPOINT: fake.endpoint,
        NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS as string,
        OPENAI_API_KEY: fake.encrypt(v, KMS_KEY).toString("base64"),
      },
    );
    try {
      expect(await (await call("GET", "/v1/secrets/OPENAI_API_KEY")).json()).toMatchObject({ value: v });
      expect(fake.callsOf("Decrypt")).toHaveLength(1);
    } finally {
      await server.stop();
    }
    expectNoValueIn([server.output], values);
  });
});

describe("google_kms faults (3 attempts)", () => {
  it("maps PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, a disabled key's FAILED_PRECONDITION and a missing key's NOT_FOUND to the SPEC codes", async () => {
    const fake = await google();
    const v = value("gkms-fault");
    const store = await googleKmsStore.open(
      { config: {}, env: { GOOGLE_KMS_RESOURCE_NAME: KMS_KEY, LLM_SECRETS_GOOGLE_KMS_ENDPOINT: endpointOf(fake) } },
      { dataDir: "/nonexistent", env: { K: fake.encrypt(v, KMS_KEY).toString("base64") }, log, now: Date.now },
    );
    for (const [fault, times, code] of [
      ["denied", 1, "backend_denied"],
      ["exhausted", 3, "backend_unavailable"],
      ["unavailable", 3, "backend_unavailable"],
      ["key_disabled", 1, "store_unavailable"],
      // GOOGLE_KMS_RESOURCE_NAME names a CryptoKey that does not exist: a state of the key, not internal.
      ["key_not_found", 1, "store_unavailable"],
    ] as const) {
      fake.reset();
      fake.fail(times, fault);
      expect(await codeOf(store.get("K")), fault).toBe(code);
      expect(fake.callsOf("Decrypt").length, fault).toBe(times);
    }
    fake.reset();
    expect((await store.get("K"))?.value).toBe(v);
    await store.close?.();
  });
});

describe("outbound TLS settings reach the Google clients", () => {
  it("ssl_certificate is presented to the service (verified there), beside the client's own auth", async () => {
    const pki = inject("testPki");
    const pem = join(await tempDir(), "client.pem");
    await writeFile(pem, (await readFile(pki.clientCertFile, "utf8")) + (await readFile(pki.clientKeyFile, "utf8")));
    expect(await googleTlsOptions({})).toEqual({});
    const fake = await google();
    const store = await googleSecretManagerStore.open(
      {
        config: {},
        env: {
          GOOGLE_SECRET_MANAGER_PROJECT_ID: fake.project,
          LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: endpointOf(fake),
        },
      },
      { dataDir: "/nonexistent", env: {}, log, now: Date.now, outbound: { certificateFile: pem } },
    );
    await store.put("WITH_CERT", value("with-cert"));
    const created = fake.callsOf("CreateSecret")[0];
    expect(created?.authorization).toMatch(/^Bearer /);
    expect(created?.clientCertificate).toBe("llm-secrets-test-client"); // presented, and verified by the service
    // A store without it presents none.
    fake.calls.length = 0;
    await (await open()).put("WITHOUT_CERT", value("without-cert"));
    expect(fake.callsOf("CreateSecret")[0]?.clientCertificate).toBeUndefined();
    await store.close?.();
  });
});

describe("a CA bundle or ssl_verify false for the Google clients", () => {
  it("refuses a service whose CA is not in the bundle; with verification off it answers, its auth still sent", async () => {
    const fake = await google();
    const other = makeServerChain(await tempDir());
    const settings = {
      config: {},
      env: {
        GOOGLE_SECRET_MANAGER_PROJECT_ID: fake.project,
        LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: endpointOf(fake),
      },
    };
    const strict = await googleSecretManagerStore.open(settings, {
      dataDir: "/nonexistent",
      env: {},
      log,
      now: Date.now,
      outbound: { caFile: other.rootFile },
    });
    const before = fake.calls.length;
    expect(["backend_unavailable", "store_unavailable"]).toContain(await codeOf(strict.get("A")));
    expect(fake.calls.length).toBe(before); // refused at the handshake: no call reached the service
    await strict.close?.();
    const trusted = await googleSecretManagerStore.open(settings, {
      dataDir: "/nonexistent",
      env: {},
      log,
      now: Date.now,
      outbound: { caFile: inject("testPki").caFile },
    });
    await trusted.put("VIA_BUNDLE", value("via-bundle"));
    expect(fake.callsOf("CreateSecret").at(-1)?.authorization).toMatch(/^Bearer /);
    await trusted.close?.();
    const unchecked = await googleSecretManagerStore.open(settings, {
      dataDir: "/nonexistent",
      env: {},
      log,
      now: Date.now,
      outbound: { verify: false, caFile: other.rootFile },
    });
    expect(await unchecked.get("NOT_THERE")).toBeUndefined();
    await unchecked.close?.();
  });

  it("google_kms with a CA bundle and an endpoint: its JWT's audience stays cloudkms.googleapis.com, as Google takes it", async () => {
    const fake = await google();
    const v = value("gkms-bundle");
    const store = await googleKmsStore.open(
      { config: {}, env: { GOOGLE_KMS_RESOURCE_NAME: KMS_KEY, LLM_SECRETS_GOOGLE_KMS_ENDPOINT: endpointOf(fake) } },
      {
        dataDir: "/nonexistent",
        env: { K: fake.encrypt(v, KMS_KEY).toString("base64") },
        log,
        now: Date.now,
        outbound: { caFile: inject("testPki").caFile },
      },
    );
    expect((await store.get("K"))?.value).toBe(v);
    const jwt = fake.callsOf("Decrypt").at(-1)?.authorization?.split(".")[1] ?? "";
    expect(JSON.parse(Buffer.from(jwt, "base64url").toString()).aud).toBe("https://cloudkms.googleapis.com/");
    await store.close?.();
  });
});
