// Key events (SPEC section 7): the schema, the name rule, the value (plain or sealed), the gates,
// created / regenerated / deleted, at-least-once safety (redelivery, duplicates, out of order,
// tombstones), the age limit, POST /v1/key-events, and a 10 000-event run with injected failures.
// One test runs against the Azure Key Vault fake: an alias landing on a portal-made secret.
import { describe, expect, it } from "vitest";
import { KeyRing, sealSecret } from "../../core/src/crypto";
import { InvalidName, SecretsError } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import { createRuntime } from "../../core/src/runtime";
import type { DeleteOptions, PutOptions, SecretStore, StoreFactory } from "../../core/src/secret-store";
import { BackendUnavailable } from "../../core/src/store-errors";
import { azureKeyVaultStore } from "../../core/src/stores/azure";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";
import { lazyFakeAzure } from "../fakes/azure";
import { codeOf, expectNoValueIn, inProcessApp, newKey, seededRandom, TEST_SEED } from "../helpers";

const HASH = "a".repeat(64);
const OTHER_HASH = "b".repeat(64);
const T0 = Date.parse("2026-11-20T00:00:00Z");
const azure = lazyFakeAzure();

/** A memory store whose calls fail now and then, as a backend does: what the store answers, not our code. */
class FlakyMemoryStore extends MemoryStore {
  failRate = 0;
  failure: () => Error = () => new BackendUnavailable("injected backend failure", 2);
  constructor(private readonly random: () => number) {
    super();
  }
  #maybeFail(): void {
    if (this.random() < this.failRate) throw this.failure();
  }
  override async put(name: string, value: string, options?: PutOptions) {
    this.#maybeFail();
    return super.put(name, value, options);
  }
  override async delete(name: string, options?: DeleteOptions) {
    this.#maybeFail();
    return super.delete(name, options);
  }
}

async function setup(
  options: { config?: string; env?: Record<string, string>; store?: SecretStore; now?: () => number } = {},
) {
  const masterKey = newKey();
  const logs: string[] = [];
  const store = options.store ?? new MemoryStore();
  const factory: StoreFactory = { ...memoryStore, open: async () => store };
  const runtime = await createRuntime({
    stores: [factory],
    settings: {
      env: {
        LITELLM_MASTER_KEY: masterKey,
        LLM_SECRETS_CONFIG:
          options.config ??
          "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n",
        ...options.env,
      },
    },
    log: createLogger((line) => logs.push(line)),
    audit: () => {}, // audit lines are not this test's subject
    now: options.now ?? (() => T0 + 60_000),
  });
  const read = async (name: string) => (await store.get(name))?.value;
  return { runtime, store, logs, masterKey, read };
}

function event(fields: Record<string, unknown>) {
  return { id: "evt-1", type: "key.created", occurred_at: new Date(T0).toISOString(), ...fields };
}

describe("key events: what is written where", () => {
  it("created: prefix + alias, or virtual-key-<hash>; the value from key or key_ciphertext", async () => {
    const { runtime, read, masterKey } = await setup();
    const plain = newKey("sk-virtual-");
    const sealed = newKey("sk-virtual-");
    expect(await runtime.applyKeyEvent(event({ key_alias: "team-a", key: plain }))).toMatchObject({
      id: "evt-1",
      status: "applied",
      names: { "litellm/team-a": "created" },
    });
    const ciphertext = sealSecret(sealed, new KeyRing(masterKey)); // no salt key: the master key seals
    expect(
      await runtime.applyKeyEvent(event({ id: "evt-2", token_hash: HASH, key_ciphertext: ciphertext })),
    ).toMatchObject({ status: "applied", names: { [`litellm/virtual-key-${HASH}`]: "created" } });
    expect(await read("litellm/team-a")).toBe(plain);
    expect(await read(`litellm/virtual-key-${HASH}`)).toBe(sealed);
    // Sealed under a key this deployment does not have (a salt key that is not the gateway's): the
    // deployment's fault, so failed (sent again, then dead-lettered), never acknowledged and lost.
    const foreign = sealSecret(newKey("sk-other-"), new KeyRing(newKey("salt-elsewhere-")));
    expect(
      await runtime.applyKeyEvent(event({ id: "evt-3", key_alias: "foreign", key_ciphertext: foreign })),
    ).toMatchObject({ status: "failed", code: "decrypt_failed" });
    expect(await read("litellm/foreign")).toBeUndefined();
  });

  it("regenerated writes the new name and deletes the previous one when it differs", async () => {
    const { runtime, read } = await setup();
    await runtime.applyKeyEvent(event({ token_hash: HASH, key: "sk-old-0123456789" }));
    const renamed = await runtime.applyKeyEvent(
      event({
        id: "evt-2",
        type: "key.regenerated",
        occurred_at: new Date(T0 + 1000).toISOString(),
        token_hash: OTHER_HASH,
        previous_token_hash: HASH,
        key: "sk-new-0123456789",
      }),
    );
    expect(renamed).toMatchObject({
      status: "applied",
      names: { [`litellm/virtual-key-${OTHER_HASH}`]: "created", [`litellm/virtual-key-${HASH}`]: "deleted" },
    });
    expect(await read(`litellm/virtual-key-${HASH}`)).toBeUndefined();
    expect(await read(`litellm/virtual-key-${OTHER_HASH}`)).toBe("sk-new-0123456789");
    // LiteLLM names a regenerated key without an alias by its old name, `virtual-key-<previous
    // hash>`: an alias spelled as the previous hash's name is the key's own, not a spoof.
    const kept = await runtime.applyKeyEvent(
      event({
        id: "evt-2b",
        type: "key.regenerated",
        occurred_at: new Date(T0 + 1500).toISOString(),
        key_alias: `virtual-key-${HASH}`,
        token_hash: OTHER_HASH,
        previous_token_hash: HASH,
        key: "sk-newer-0123456789",
      }),
    );
    expect(kept).toMatchObject({ status: "applied" });
    expect(await read(`litellm/virtual-key-${HASH}`)).toBe("sk-newer-0123456789");
    // Same alias: overwritten in place, nothing deleted.
    await runtime.applyKeyEvent(event({ id: "evt-3", key_alias: "svc", key: "sk-v1-0123456789" }));
    const same = await runtime.applyKeyEvent(
      event({
        id: "evt-4",
        type: "key.regenerated",
        occurred_at: new Date(T0 + 2000).toISOString(),
        key_alias: "svc",
        previous_key_alias: "svc",
        key: "sk-v2-0123456789",
      }),
    );
    expect(same.names).toEqual({ "litellm/svc": "updated" });
    expect(await read("litellm/svc")).toBe("sk-v2-0123456789");
  });

  it("on a store that maps names, a regeneration to an alias on the previous one's key renames that secret", async () => {
    // As Azure: `_` becomes `-` and case is folded, so `team_a`, `team-a` and `Team-A` are one secret.
    class DownStore extends MemoryStore {
      down = false;
      override async get(name: string) {
        if (this.down) throw new BackendUnavailable("the store is down");
        return super.get(name);
      }
    }
    const store = new DownStore({ mapName: (name) => name.replace(/[^0-9A-Za-z-]/g, "-").toLowerCase() });
    const { runtime } = await setup({ store });
    const value = async (name: string) => (await store.get(name))?.value;
    await runtime.applyKeyEvent(event({ key_alias: "team_a", token_hash: HASH, key: "sk-old-0123456789" }));
    const regenerate = (id: string, at: number, alias: string, previous: string, key: string) =>
      runtime.applyKeyEvent(
        event({
          id,
          type: "key.regenerated",
          occurred_at: new Date(T0 + at).toISOString(),
          key_alias: alias,
          previous_key_alias: previous,
          token_hash: OTHER_HASH,
          previous_token_hash: HASH,
          key,
        }),
      );
    const renamed = await regenerate("evt-2", 1000, "team-a", "team_a", "sk-new-0123456789");
    // Refused as a name conflict before, the revoked key left stored under its old name.
    expect(renamed).toEqual({
      id: "evt-2",
      status: "applied",
      names: { "litellm/team-a": "updated", "litellm/team_a": "deleted", [`litellm/virtual-key-${HASH}`]: "absent" },
    });
    expect(await value("litellm/team-a")).toBe("sk-new-0123456789");
    expect(await value("litellm/team_a")).toBeUndefined();
    // The cache knows at once, as after a delete: the old name is not found, the new one served,
    // neither asking the store (down here: a read that asked would be 503).
    store.down = true;
    expect(await codeOf(Promise.resolve().then(() => runtime.manager.read("litellm/team_a")))).toBe("not_found");
    expect(await runtime.manager.read("litellm/team-a")).toMatchObject({ value: "sk-new-0123456789" });
    store.down = false;
    // A change of case alone too; and its event again changes nothing.
    const recased = await regenerate("evt-3", 2000, "Team-A", "team-a", "sk-newer-0123456789");
    expect(recased).toMatchObject({
      status: "applied",
      names: { "litellm/Team-A": "updated", "litellm/team-a": "deleted" },
    });
    expect(await value("litellm/Team-A")).toBe("sk-newer-0123456789");
    expect(await regenerate("evt-3", 2000, "Team-A", "team-a", "sk-newer-0123456789")).toMatchObject({
      status: "superseded",
    });
    expect(await value("litellm/Team-A")).toBe("sk-newer-0123456789");
  });

  it("on a store that maps names, a regeneration onto the key of a previous alias the store never held creates the new name; the previous one is absent", async () => {
    const store = new MemoryStore({ mapName: (name) => name.replace(/[^0-9A-Za-z-]/g, "-").toLowerCase() });
    const { runtime, read } = await setup({ store });
    const regenerated = await runtime.applyKeyEvent(
      event({
        id: "evt-2",
        type: "key.regenerated",
        occurred_at: new Date(T0 + 1000).toISOString(),
        key_alias: "team-a",
        previous_key_alias: "team_a",
        token_hash: OTHER_HASH,
        previous_token_hash: HASH,
        key: "sk-new-0123456789",
      }),
    );
    expect(regenerated).toEqual({
      id: "evt-2",
      status: "applied",
      names: { "litellm/team-a": "created", "litellm/team_a": "absent", [`litellm/virtual-key-${HASH}`]: "absent" },
    });
    expect(await read("litellm/team-a")).toBe("sk-new-0123456789");
  });

  it("deleted with both an alias and a hash deletes both names", async () => {
    const { runtime, read } = await setup();
    await runtime.applyKeyEvent(event({ key_alias: "both", key: "sk-a-0123456789" }));
    await runtime.applyKeyEvent(event({ id: "evt-2", token_hash: HASH, key: "sk-b-0123456789" }));
    const gone = await runtime.applyKeyEvent(
      event({
        id: "evt-3",
        type: "key.deleted",
        occurred_at: new Date(T0 + 1000).toISOString(),
        key_alias: "both",
        token_hash: HASH,
      }),
    );
    expect(gone.names).toEqual({ "litellm/both": "deleted", [`litellm/virtual-key-${HASH}`]: "deleted" });
    expect(await read("litellm/both")).toBeUndefined();
    expect(await read(`litellm/virtual-key-${HASH}`)).toBeUndefined();
  });

  it("an alias spelled as its own hash's name is that one name: deleted once, the event applied", async () => {
    const { runtime, read } = await setup();
    await runtime.applyKeyEvent(event({ token_hash: HASH, key: "sk-b-0123456789" }));
    const gone = await runtime.applyKeyEvent(
      event({
        id: "evt-2",
        type: "key.deleted",
        occurred_at: new Date(T0 + 1000).toISOString(),
        key_alias: `virtual-key-${HASH}`,
        token_hash: HASH,
      }),
    );
    // Not deleted twice: a second delete answers superseded, which replaced the first's outcome.
    expect(gone).toMatchObject({ status: "applied", names: { [`litellm/virtual-key-${HASH}`]: "deleted" } });
    expect(await read(`litellm/virtual-key-${HASH}`)).toBeUndefined();
  });

  it("a name to write that is no name (a free-text alias) changes nothing; one only to delete is absent, the others deleted", async () => {
    const { runtime, read } = await setup();
    await runtime.applyKeyEvent(event({ token_hash: HASH, key: "sk-old-0123456789" }));
    await runtime.applyKeyEvent(event({ id: "evt-0", token_hash: OTHER_HASH, key: "sk-other-0123456789" }));
    const later = (id: string, fields: Record<string, unknown>) =>
      event({ id, occurred_at: new Date(T0 + 1000).toISOString(), ...fields });
    // The new name is no name: nothing is written, nothing deleted (not half a regeneration).
    const regenerated = await runtime.applyKeyEvent(
      later("evt-2", {
        type: "key.regenerated",
        key_alias: "new alias",
        previous_token_hash: HASH,
        key: "sk-new-0123456789",
      }),
    );
    expect(regenerated).toMatchObject({ status: "refused", code: "invalid_name", malformed: true });
    // Which name: the alias is free text, and the producer must find it.
    expect(regenerated.message).toMatch(/^"litellm\/new alias": invalid secret name: /);
    expect(regenerated.names).toEqual({});
    expect(await read(`litellm/virtual-key-${HASH}`)).toBe("sk-old-0123456789");
    // The previous alias is no name: it was never stored; the new key is written, the old hash's deleted.
    const renamed = await runtime.applyKeyEvent(
      later("evt-3", {
        type: "key.regenerated",
        key_alias: "new-alias",
        previous_key_alias: "my old key",
        previous_token_hash: HASH,
        key: "sk-new-0123456789",
      }),
    );
    expect(renamed).toMatchObject({ status: "applied" });
    expect(renamed.names).toEqual({
      "litellm/new-alias": "created",
      "litellm/my old key": "absent",
      [`litellm/virtual-key-${HASH}`]: "deleted",
    });
    expect(await read(`litellm/virtual-key-${HASH}`)).toBeUndefined();
    // A delete with an alias that is no name still revokes the key by its hash.
    const deleted = await runtime.applyKeyEvent(
      later("evt-4", { type: "key.deleted", key_alias: "my other key", token_hash: OTHER_HASH }),
    );
    expect(deleted).toMatchObject({ status: "applied" });
    expect(deleted.names).toEqual({
      "litellm/my other key": "absent",
      [`litellm/virtual-key-${OTHER_HASH}`]: "deleted",
    });
    expect(await read(`litellm/virtual-key-${OTHER_HASH}`)).toBeUndefined();
  });

  it("on a store that maps names, an alias spelled virtual<any>key<any><hash> is refused to write, and a delete still revokes its own key", async () => {
    // As Azure maps names: every character but [0-9A-Za-z-] becomes -, case ignored.
    const store = new MemoryStore({ mapName: (name) => name.replace(/[^0-9A-Za-z-]/g, "-").toLowerCase() });
    const { runtime, read } = await setup({ store });
    const victim = newKey("sk-victim-");
    await runtime.applyKeyEvent(event({ id: "evt-victim", token_hash: HASH, key: victim }));
    await runtime.applyKeyEvent(event({ id: "evt-own", token_hash: OTHER_HASH, key: newKey("sk-own-") }));
    const later = (id: string, fields: Record<string, unknown>) =>
      event({ id, occurred_at: new Date(T0 + 1000).toISOString(), ...fields });
    for (const alias of [`virtual/key/${HASH}`, `Virtual@Key+${HASH}`]) {
      const created = await runtime.applyKeyEvent(
        later(`evt-c-${alias}`, { key_alias: alias, token_hash: OTHER_HASH, key: newKey("sk-attacker-") }),
      );
      expect(created).toMatchObject({ status: "refused", code: "invalid_request", malformed: true });
    }
    const deleted = await runtime.applyKeyEvent(
      later("evt-d", { type: "key.deleted", key_alias: `virtual/key/${HASH}`, token_hash: OTHER_HASH }),
    );
    expect(deleted).toMatchObject({ status: "applied" });
    expect(deleted.names).toEqual({
      [`litellm/virtual/key/${HASH}`]: "absent",
      [`litellm/virtual-key-${OTHER_HASH}`]: "deleted",
    });
    expect(await read(`litellm/virtual-key-${HASH}`)).toBe(victim);
  });

  it("an alias spelled virtual-key-<hash> of another key is malformed to write, and never deleted", async () => {
    const { runtime, read } = await setup();
    const victim = newKey("sk-victim-");
    await runtime.applyKeyEvent(event({ id: "evt-victim", token_hash: HASH, key: victim }));
    const later = (id: string, fields: Record<string, unknown>) =>
      event({ id, occurred_at: new Date(T0 + 1000).toISOString(), ...fields });
    // Any case, and `_` or `.` for `-` (Azure and Google map them onto one secret).
    for (const alias of [
      `virtual-key-${HASH}`,
      `VIRTUAL-KEY-${HASH.toUpperCase()}`,
      `virtual_key_${HASH}`,
      `virtual.key-${HASH}`,
    ]) {
      const created = await runtime.applyKeyEvent(
        later(`evt-c-${alias}`, { key_alias: alias, token_hash: OTHER_HASH, key: newKey("sk-attacker-") }),
      );
      expect(created).toMatchObject({ status: "refused", code: "invalid_request", malformed: true });
      expect(created.names).toBeUndefined();
    }
    // A delete with such an alias revokes its own key by its hash, and leaves the other key's secret.
    await runtime.applyKeyEvent(event({ id: "evt-own", token_hash: OTHER_HASH, key: newKey("sk-own-") }));
    const deleted = await runtime.applyKeyEvent(
      later("evt-d", { type: "key.deleted", key_alias: `virtual-key-${HASH}`, token_hash: OTHER_HASH }),
    );
    expect(deleted).toMatchObject({ status: "applied" });
    expect(deleted.names).toEqual({
      [`litellm/virtual-key-${HASH}`]: "absent",
      [`litellm/virtual-key-${OTHER_HASH}`]: "deleted",
    });
    const renamed = await runtime.applyKeyEvent(
      later("evt-r", {
        type: "key.regenerated",
        key_alias: "renamed",
        previous_key_alias: `virtual-key-${HASH}`,
        previous_token_hash: OTHER_HASH,
        key: newKey(),
      }),
    );
    expect(renamed.names).toMatchObject({ [`litellm/virtual-key-${HASH}`]: "absent" });
    expect(await read(`litellm/virtual-key-${HASH}`)).toBe(victim);
    // An alias that is the event's own hash name is its own.
    const own = await runtime.applyKeyEvent(
      event({
        id: "evt-own-alias",
        occurred_at: new Date(T0 + 2000).toISOString(),
        key_alias: `virtual-key-${OTHER_HASH}`,
        token_hash: OTHER_HASH,
        key: newKey(),
      }),
    );
    expect(own).toMatchObject({ status: "applied" });
  });

  it("a name the store itself refuses after a change landed is refused, not malformed: it reaches the dead letters", async () => {
    // A store with a name limit of its own (Azure's 127 characters), met by the previous name only.
    class ShortNames extends MemoryStore {
      override async delete(name: string, options?: DeleteOptions) {
        if (name.length > 40) throw new InvalidName("this store takes names of at most 40 characters");
        return super.delete(name, options);
      }
    }
    const { runtime, read } = await setup({ store: new ShortNames() });
    const result = await runtime.applyKeyEvent(
      event({ type: "key.regenerated", key_alias: "short", previous_token_hash: HASH, key: "sk-new-0123456789" }),
    );
    expect(result).toMatchObject({ status: "refused", code: "invalid_name", names: { "litellm/short": "created" } });
    expect(result.malformed).toBeUndefined();
    expect(await read("litellm/short")).toBe("sk-new-0123456789");
  });
});

describe("key events: at-least-once delivery", () => {
  it("a delete accepted on a clock ahead of another instance's (within the skew) still holds off the create's redelivery there", async () => {
    let clock = T0;
    const store = new MemoryStore({ now: () => clock });
    const a = await setup({ store, now: () => clock });
    const created = event({ id: "evt-created", key_alias: "k", key: "sk-k-0123456789" });
    expect(await a.runtime.applyKeyEvent(created)).toMatchObject({ status: "applied" });
    // Instance A takes a delete dated 299.5 s ahead of its clock: inside the 300 s allowed.
    const deleted = event({
      id: "evt-deleted",
      type: "key.deleted",
      key_alias: "k",
      occurred_at: new Date(T0 + 299_500).toISOString(),
    });
    expect(await a.runtime.applyKeyEvent(deleted)).toMatchObject({ status: "applied" });
    // Instance B, whose clock is 1 s behind A's, gets the create again.
    clock = T0 - 1_000;
    const b = await setup({ store, now: () => clock });
    expect(await b.runtime.applyKeyEvent(created)).toMatchObject({ names: { "litellm/k": "superseded" } });
    expect(await b.read("litellm/k")).toBeUndefined();
  });

  it("twice is once; an older event is superseded; a redelivered create never revives a deleted key", async () => {
    const { runtime, read } = await setup();
    const created = event({ key_alias: "k", key: "sk-created-0123456789" });
    const deleted = event({
      id: "evt-2",
      type: "key.deleted",
      occurred_at: new Date(T0 + 5000).toISOString(),
      key_alias: "k",
    });
    expect((await runtime.applyKeyEvent(created)).status).toBe("applied");
    expect((await runtime.applyKeyEvent(created)).status).toBe("superseded");
    expect((await runtime.applyKeyEvent(deleted)).status).toBe("applied");
    expect((await runtime.applyKeyEvent(created)).status).toBe("superseded");
    expect((await runtime.applyKeyEvent(deleted)).status).toBe("superseded");
    expect(await read("litellm/k")).toBeUndefined();
    // Out of order: the delete arrives first, then its older create.
    const later = event({
      id: "evt-9",
      type: "key.deleted",
      occurred_at: new Date(T0 + 9000).toISOString(),
      key_alias: "o",
    });
    expect((await runtime.applyKeyEvent(later)).status).toBe("superseded"); // nothing to delete, a tombstone left
    expect(
      (await runtime.applyKeyEvent(event({ id: "evt-8", key_alias: "o", key: "sk-late-0123456789" }))).status,
    ).toBe("superseded");
    expect(await read("litellm/o")).toBeUndefined();
  });

  it("a direct write's arrival wins over an older event", async () => {
    const { runtime, read } = await setup({ now: () => T0 + 60_000 });
    await runtime.manager.put("litellm/direct", "sk-direct-0123456789");
    expect((await runtime.applyKeyEvent(event({ key_alias: "direct", key: "sk-event-0123456789" }))).status).toBe(
      "superseded",
    );
    expect(await read("litellm/direct")).toBe("sk-direct-0123456789");
  });
});

describe("key events: refused, never applied", () => {
  it("a max event age past how long the store keeps a delete stops the start: an older event could revive a deleted key", async () => {
    // Before: LLM_SECRETS_MAX_EVENT_AGE had no bound; past the file store's 14 days, a compaction
    // dropped a delete's tombstone and a 21-day-old redelivered created stored the key again.
    const config = "general_settings:\n  key_management_settings:\n    store_virtual_keys: true\n";
    await expect(inProcessApp({ env: { LLM_SECRETS_MAX_EVENT_AGE: String(15 * 86_400) }, config })).rejects.toThrow(
      "LLM_SECRETS_MAX_EVENT_AGE (1296000 s) is past how long the file store keeps a delete (1209600 s)",
    );
    // 14 days fits; without virtual keys no key event is applied, and any age is taken.
    await inProcessApp({ env: { LLM_SECRETS_MAX_EVENT_AGE: String(14 * 86_400) }, config });
    await inProcessApp({ env: { LLM_SECRETS_MAX_EVENT_AGE: String(30 * 86_400) } });
  });

  it("malformed events, and ones past LLM_SECRETS_MAX_EVENT_AGE, are refused with a reason", async () => {
    const { runtime, store, logs } = await setup({
      env: { LLM_SECRETS_MAX_EVENT_AGE: "3600" },
      now: () => T0 + 7200_000,
    });
    const key = newKey("sk-never-");
    const cases: [unknown, string][] = [
      ["not an object", "malformed"],
      [event({ key: key }), "key_alias or token_hash"],
      [event({ key_alias: "a" }), "exactly one of key and key_ciphertext"],
      [event({ key_alias: "a", key, key_ciphertext: "x" }), "exactly one of key and key_ciphertext"],
      [event({ key_alias: "a", key, type: "key.renamed" }), "type"],
      [event({ key_alias: "a", key, occurred_at: "yesterday" }), "occurred_at"],
      [event({ token_hash: "not-hex", key }), "token_hash"],
      [event({ token_hash: HASH.toUpperCase(), key }), "token_hash"], // LiteLLM's hashes are lower-case hex
      [event({ key_alias: "a", key }), "LLM_SECRETS_MAX_EVENT_AGE"],
      [
        event({ key_alias: "a", key_ciphertext: "AAAA", occurred_at: new Date(T0 + 7000_000).toISOString() }),
        "key_ciphertext",
      ],
      [event({ key_alias: "../x", key, occurred_at: new Date(T0 + 7000_000).toISOString() }), "segment"],
    ];
    for (const [input, reason] of cases) {
      const result = await runtime.applyKeyEvent(input);
      expect(result.status, reason).toBe("refused");
      expect(result.message, reason).toContain(reason);
    }
    expect(await store.get("litellm/a")).toBeUndefined();
    expectNoValueIn([...logs, ...cases.map((c) => JSON.stringify(c[1]))], [key]);
    expect(runtime.metrics.count("llm_secrets_key_events_total", { status: "refused" })).toBe(cases.length);
  });

  it("an event exactly LLM_SECRETS_MAX_EVENT_AGE old is applied; one a millisecond older is refused", async () => {
    const now = T0 + 7200_000;
    const { runtime, read } = await setup({ env: { LLM_SECRETS_MAX_EVENT_AGE: "3600" }, now: () => now });
    const oldest = newKey("sk-oldest-");
    const at = (age: number) => new Date(now - age).toISOString();
    const tooOld = await runtime.applyKeyEvent(
      event({ id: "evt-too-old", key_alias: "a", key: newKey(), occurred_at: at(3600_001) }),
    );
    expect(tooOld).toMatchObject({ status: "refused", code: "invalid_request" });
    expect(
      await runtime.applyKeyEvent(event({ key_alias: "a", key: oldest, occurred_at: at(3600_000) })),
    ).toMatchObject({ status: "applied" });
    expect(await read("litellm/a")).toBe(oldest);
  });

  it("an event dated more than 5 minutes ahead of this clock is refused: it would block every later change to its key", async () => {
    const now = T0 + 60_000;
    const { runtime, read } = await setup({ now: () => now });
    const future = newKey("sk-future-");
    const ahead = await runtime.applyKeyEvent(
      event({ id: "evt-future", key_alias: "a", key: future, occurred_at: "2999-01-01T00:00:00Z" }),
    );
    expect(ahead).toMatchObject({ status: "refused", code: "invalid_request" });
    expect(ahead.message).toContain("ahead");
    expect(await read("litellm/a")).toBeUndefined();
    // Within the skew allowed (a producer's clock a minute fast): applied, and a delete after it wins.
    const skewed = newKey("sk-skewed-");
    const soon = new Date(now + 60_000).toISOString();
    expect(
      await runtime.applyKeyEvent(event({ id: "evt-2", key_alias: "a", key: skewed, occurred_at: soon })),
    ).toMatchObject({ status: "applied" });
    expect(await read("litellm/a")).toBe(skewed);
    const later = new Date(now + 120_000).toISOString();
    await runtime.applyKeyEvent(event({ id: "evt-3", type: "key.deleted", key_alias: "a", occurred_at: later }));
    expect(await read("litellm/a")).toBeUndefined();
  });

  it("an alias that maps onto a Key Vault secret made outside llm-secrets (outside hosted_keys) neither overwrites nor deletes it", async () => {
    // Key Vault ignores case and maps `/` and `_` to `-`: `litellm/` + `SALT_KEY` is the portal's
    // LITELLM-SALT-KEY. Aliases are chosen by whoever makes LiteLLM keys, not by the operator.
    const fake = await azure();
    fake.reset();
    const salt = newKey("portal-salt-");
    fake.seed("LITELLM-SALT-KEY", salt);
    fake.seed("LITELLM-OTHER", newKey("portal-other-"));
    const logs: string[] = [];
    const runtime = await createRuntime({
      stores: [azureKeyVaultStore],
      settings: {
        env: {
          ...fake.env(),
          LITELLM_MASTER_KEY: newKey(),
          LLM_SECRETS_CONFIG:
            "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n    hosted_keys: [OPENAI_API_KEY]\n",
        },
      },
      log: createLogger((line) => logs.push(line)),
      audit: () => {},
    });
    try {
      const now = new Date().toISOString();
      const attacker = newKey("sk-attacker-");
      const created = await runtime.applyKeyEvent(event({ key_alias: "SALT_KEY", key: attacker, occurred_at: now }));
      expect(created).toMatchObject({ status: "refused", code: "name_conflict" });
      const deleted = await runtime.applyKeyEvent(
        event({ id: "evt-2", type: "key.deleted", key_alias: "OTHER", occurred_at: now }),
      );
      expect(deleted).toMatchObject({ status: "refused", code: "name_conflict" });
      expect(fake.secret("LITELLM-SALT-KEY")?.versions.map((v) => v.value)).toEqual([salt]);
      expect(fake.secret("LITELLM-OTHER")?.deleted).toBeUndefined();
      expect(fake.requests.filter((r) => r.method !== "GET")).toEqual([]);
      expect(logs.some((l) => l.includes("adopted"))).toBe(false);
      expectNoValueIn(logs, [attacker, salt]);
    } finally {
      await runtime.close();
    }
  });

  it("a virtual key never lands on a hosted name: not the name itself, nor one the store maps onto its key", async () => {
    // A store that folds case and maps / and _ as Azure does: litellm/openai is litellm/OPENAI's secret.
    const store = new MemoryStore({ mapName: (name) => name.replace(/[^0-9A-Za-z-]/g, "-").toLowerCase() });
    const { runtime, read } = await setup({
      store,
      config:
        "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n    hosted_keys: [litellm/OPENAI, OPENAI_API_KEY]\n",
    });
    const provider = newKey("sk-provider-");
    await runtime.manager.put("litellm/OPENAI", provider); // the operator's own, a hosted name
    for (const [id, alias] of [
      ["evt-1", "OPENAI"],
      ["evt-2", "openai"],
    ] as const) {
      const created = await runtime.applyKeyEvent(event({ id, key_alias: alias, key: newKey("sk-attacker-") }));
      expect(created).toMatchObject({ status: "refused", code: "name_conflict", names: {} });
      expect(created.malformed).toBeUndefined();
    }
    const deleted = await runtime.applyKeyEvent(
      event({ id: "evt-3", type: "key.deleted", key_alias: "OpenAI", token_hash: HASH }),
    );
    expect(deleted).toMatchObject({ status: "refused", code: "name_conflict", names: {} });
    // A direct write allowed only by the prefix (a gateway's PUT of litellm/<alias>) is refused too.
    expect(await codeOf(runtime.manager.put("litellm/OpenAI", newKey("sk-attacker-")))).toBe("name_conflict");
    expect(await codeOf(runtime.manager.delete("litellm/openai"))).toBe("name_conflict");
    expect(await read("litellm/OPENAI")).toBe(provider);
    // The hosted name itself stays the operator's to write, and other virtual keys are written as ever.
    expect((await runtime.manager.put("litellm/OPENAI", newKey("sk-rotated-"))).outcome).toBe("updated");
    expect(await runtime.applyKeyEvent(event({ id: "evt-4", key_alias: "team-a", key: newKey() }))).toMatchObject({
      status: "applied",
    });
  });

  it("an event changes only its own team's keys: a name under another team's nested prefix is refused", async () => {
    const { runtime, read } = await setup({
      config:
        "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n    hosted_keys: [OPENAI_API_KEY]\n    team_settings:\n      team-a: {prefix_for_stored_virtual_keys: litellm/team-a/}\n",
    });
    const teamKey = newKey("sk-team-a-");
    expect(await runtime.applyKeyEvent(event({ team_id: "team-a", key_alias: "prod", key: teamKey }))).toMatchObject({
      status: "applied",
      names: { "litellm/team-a/prod": "created" },
    });
    // team-b has no settings (the general prefix), and an event without a team_id has it too: the
    // alias team-a/prod, chosen by one of their users, is litellm/team-a/prod, team-a's.
    for (const team_id of ["team-b", undefined]) {
      const written = await runtime.applyKeyEvent(
        event({ id: `evt-w-${team_id}`, team_id, key_alias: "team-a/prod", key: newKey("sk-attacker-") }),
      );
      expect(written).toMatchObject({ status: "refused", code: "invalid_request", names: {} });
      expect(written.malformed).toBeUndefined();
      const deleted = await runtime.applyKeyEvent(
        event({ id: `evt-d-${team_id}`, team_id, type: "key.deleted", key_alias: "team-a/prod", token_hash: HASH }),
      );
      expect(deleted).toMatchObject({ status: "refused", code: "invalid_request", names: {} });
    }
    // Nor does a direct write allowed only by the general prefix reach it.
    expect(await codeOf(runtime.manager.put("litellm/team-a/prod", newKey("sk-attacker-")))).toBe("not_hosted");
    expect(await codeOf(runtime.manager.delete("litellm/team-a/prod"))).toBe("not_hosted");
    expect(await read("litellm/team-a/prod")).toBe(teamKey);
    // team-a's own events change it; the general prefix's other names stay everyone else's.
    expect(
      await runtime.applyKeyEvent(
        event({
          id: "evt-a2",
          team_id: "team-a",
          type: "key.deleted",
          key_alias: "prod",
          occurred_at: new Date(T0 + 1).toISOString(),
        }),
      ),
    ).toMatchObject({ status: "applied", names: { "litellm/team-a/prod": "deleted" } });
    expect(
      await runtime.applyKeyEvent(event({ id: "evt-b2", team_id: "team-b", key_alias: "team-ab/prod", key: newKey() })),
    ).toMatchObject({ status: "applied", names: { "litellm/team-ab/prod": "created" } });
  });

  it("on Azure, a name that maps under another team's prefix, or prefixes that map onto one another, are refused", async () => {
    const fake = await azure();
    fake.reset();
    const runtime = await createRuntime({
      stores: [azureKeyVaultStore],
      settings: {
        env: {
          ...fake.env(),
          LITELLM_MASTER_KEY: newKey(),
          LLM_SECRETS_CONFIG:
            "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n    hosted_keys: [OPENAI_API_KEY]\n    team_settings:\n      team-a: {prefix_for_stored_virtual_keys: litellm/team-a/}\n      t1: {prefix_for_stored_virtual_keys: Team_B/}\n      t2: {prefix_for_stored_virtual_keys: team-b/}\n",
        },
      },
      log: createLogger(() => {}),
      audit: () => {},
    });
    try {
      const now = () => new Date().toISOString();
      const teamKey = newKey("sk-team-a-");
      expect(
        await runtime.applyKeyEvent(event({ team_id: "team-a", key_alias: "prod", key: teamKey, occurred_at: now() })),
      ).toMatchObject({ status: "applied" });
      // litellm/team-a-prod is the vault secret LITELLM-TEAM-A-PROD, team-a's litellm/team-a/prod.
      for (const [id, type] of [
        ["evt-squat", "key.created"],
        ["evt-squat-delete", "key.deleted"],
      ] as const) {
        const squat = await runtime.applyKeyEvent(
          event({ id, type, team_id: "team-b", key_alias: "team-a-prod", key: newKey("sk-b-"), occurred_at: now() }),
        );
        expect(squat).toMatchObject({ status: "refused", code: "invalid_request", names: {} });
      }
      expect(fake.secret("litellm-team-a-prod")?.versions.map((v) => v.value)).toEqual([teamKey]);
      expect(fake.secret("litellm-team-a-prod")?.deleted).toBeUndefined();
      // Team_B/ and team-b/ are one place in the vault: neither team's events may write there.
      for (const team_id of ["t1", "t2"]) {
        const shared = await runtime.applyKeyEvent(
          event({ id: `evt-${team_id}`, team_id, key_alias: "prod", key: newKey(), occurred_at: now() }),
        );
        expect(shared).toMatchObject({ status: "refused", code: "invalid_request", names: {} });
      }
      expect(fake.secret("team-b-prod")).toBeUndefined();
    } finally {
      await runtime.close();
    }
  });

  it("without store_virtual_keys, or with access_mode read_only, nothing is written", async () => {
    for (const config of [
      "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n",
      "general_settings:\n  key_management_settings:\n    access_mode: read_only\n    store_virtual_keys: true\n",
    ]) {
      const { runtime, read } = await setup({ config });
      const result = await runtime.applyKeyEvent(event({ key_alias: "a", key: "sk-x-0123456789" }));
      expect(result).toMatchObject({ status: "refused" });
      expect(["not_supported", "read_only"]).toContain(result.code);
      expect(await read("litellm/a")).toBeUndefined();
    }
  });
});

describe("POST /v1/key-events", () => {
  it("applies one event or an array in order, with a result each; 503 with Retry-After when the store failed", async () => {
    const random = seededRandom(`${TEST_SEED}:key-events-http`);
    const store = new FlakyMemoryStore(random);
    const { runtime, masterKey, read } = await setup({ store });
    const post = (body: unknown) =>
      runtime.fetch(
        new Request("http://localhost/v1/key-events", {
          method: "POST",
          headers: { authorization: `Bearer ${masterKey}` },
          body: JSON.stringify(body),
        }),
        { path: "/v1/key-events" },
      );
    const one = await post(event({ key_alias: "h", key: "sk-h-0123456789" }));
    expect(one.status).toBe(200);
    expect(await one.json()).toEqual({
      results: [{ id: "evt-1", status: "applied", names: { "litellm/h": "created" } }],
    });
    const batch = await post([
      event({
        id: "e2",
        key_alias: "h",
        key: "sk-h2-0123456789",
        type: "key.regenerated",
        occurred_at: new Date(T0 + 1).toISOString(),
      }),
      { nonsense: true },
    ]);
    expect(batch.status).toBe(200);
    const results = ((await batch.json()) as { results: { status: string }[] }).results;
    expect(results.map((r) => r.status)).toEqual(["applied", "refused"]);
    expect(await read("litellm/h")).toBe("sk-h2-0123456789");
    store.failRate = 1;
    const down = await post(event({ id: "e3", key_alias: "z", key: "sk-z-0123456789" }));
    expect(down.status).toBe(503);
    expect(down.headers.get("retry-after")).toBe("2");
    expect(((await down.json()) as { results: { status: string; code: string }[] }).results).toEqual([
      expect.objectContaining({ status: "failed", code: "backend_unavailable" }),
    ]);
    // A store's own error whose Retry-After says nothing (NaN) or too much: whole seconds, 1 to an hour.
    for (const [retryAfter, header] of [
      [Number.NaN, "1"],
      [1e25, "3600"],
    ] as const) {
      store.failure = () => new SecretsError("backend_unavailable", "down", { retryAfter });
      const res = await post(event({ id: `e-${retryAfter}`, key_alias: "z", key: "sk-z-0123456789" }));
      expect([res.status, res.headers.get("retry-after")]).toEqual([503, header]);
    }
    store.failRate = 0;
    // An empty array, too many events, or not an event at all: 400 saying which.
    for (const [body, says] of [
      [[], "an array of 1 to 100 key events"],
      [Array(101).fill(event({})), "an array of 1 to 100 key events"],
      ["a string", "one key event (an object) or an array of them"],
    ] as const) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toContain(says);
    }
  });
});

describe("a 10 000-event run with 10% store failures, failed events redelivered in shuffled order", () => {
  it("ends with exactly the expected secrets: none lost, duplicated or revived", async () => {
    const random = seededRandom(`${TEST_SEED}:key-events-run`);
    const store = new FlakyMemoryStore(random);
    const { runtime, read } = await setup({ store, now: () => T0 + 3_600_000 });
    // 10 000 events over 400 aliases: each alias sees creates, regenerations and deletes in time order.
    const events: Record<string, unknown>[] = [];
    const expected = new Map<string, string | undefined>();
    for (let i = 0; i < 10_000; i++) {
      const alias = `k${Math.floor(random() * 400)}`;
      const roll = random();
      const type = roll < 0.5 ? "key.created" : roll < 0.8 ? "key.regenerated" : "key.deleted";
      const key = type === "key.deleted" ? undefined : `sk-${i}-0123456789`;
      events.push(
        event({
          id: `evt-${String(i).padStart(5, "0")}`,
          type,
          occurred_at: new Date(T0 + i * 10).toISOString(),
          key_alias: alias,
          ...(key && { key }),
        }),
      );
      expected.set(`litellm/${alias}`, key);
    }
    // Delivered in shuffled order, every failure redelivered (again shuffled) until none fail.
    store.failRate = 0.1;
    let pending = shuffle(events, random);
    let rounds = 0;
    let failures = 0;
    while (pending.length > 0) {
      const failed: Record<string, unknown>[] = [];
      for (const e of pending) {
        const result = await runtime.applyKeyEvent(e);
        expect(result.status).not.toBe("refused");
        if (result.status === "failed") failed.push(e);
      }
      failures += failed.length;
      pending = shuffle(failed, random);
      rounds++;
    }
    // Some events twice more, as at-least-once queues do.
    store.failRate = 0;
    for (const e of shuffle(events, random).slice(0, 1000))
      expect((await runtime.applyKeyEvent(e)).status).not.toBe("failed");
    expect(failures).toBeGreaterThan(500);
    expect(rounds).toBeGreaterThan(1);
    const wrong: string[] = [];
    for (const [name, value] of expected) if ((await read(name)) !== value) wrong.push(name);
    expect(wrong).toEqual([]);
  });
});

function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}
