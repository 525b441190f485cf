// The SecretManager over a backend that can be made to fail, as a cloud store will.
import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { createApp } from "../../core/src/app";
import { KeyRing } from "../../core/src/crypto";
import { SecretsError } from "../../core/src/errors";
import { instrumentStore } from "../../core/src/instrument-store";
import { applyKeyEvent } from "../../core/src/key-events";
import { createLogger, type Logger } from "../../core/src/log";
import { createMetrics, type Metrics } from "../../core/src/metrics";
import { SecretManager, type SecretManagerOptions } from "../../core/src/secret-manager";
import type { SecretRecord, SecretStore } from "../../core/src/secret-store";
import type { KeyManagement } from "../../core/src/settings";
import { BackendDenied, BackendUnavailable, NameConflict, StoreCorrupt } from "../../core/src/store-errors";
import { dockerStore } from "../../core/src/stores/docker";
import { MemoryStore } from "../../core/src/stores/memory";
import { expectNoValueIn, newKey, secretValue, tempDir } from "../helpers";

/**
 * An in-memory backend whose reads can be switched to fail like an unreachable service, and whose
 * changes can land and then fail, as a cloud store's second call (tags after the value) can.
 */
class FlakyStore extends MemoryStore {
  down = false;
  failAfterChange = false;
  /** Thrown by every read and write while set. */
  failWith: Error | undefined;
  /** Names whose reads fail as a store that did not answer, the others answering. */
  failNames = new Set<string>();
  /** Names whose reads the store refuses (a policy). */
  deniedNames = new Set<string>();
  reads = 0;
  /** Each read's time in the backend, and the most reads it had at once. */
  latencyMs = 0;
  inFlight = 0;
  mostInFlight = 0;

  override async get(name: string): Promise<SecretRecord | undefined> {
    if (this.failWith) throw this.failWith;
    this.reads++;
    this.inFlight++;
    this.mostInFlight = Math.max(this.mostInFlight, this.inFlight);
    try {
      if (this.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, this.latencyMs));
      if (this.down || this.failNames.has(name)) throw new BackendUnavailable("the store did not answer in time", 5);
      if (this.deniedNames.has(name)) throw new BackendDenied("refused");
      return await super.get(name);
    } finally {
      this.inFlight--;
    }
  }

  override async put(...args: Parameters<MemoryStore["put"]>): ReturnType<MemoryStore["put"]> {
    if (this.failWith) throw this.failWith;
    const outcome = await super.put(...args);
    if (this.failAfterChange) throw new BackendUnavailable("the second call was throttled", 1);
    return outcome;
  }

  override async delete(...args: Parameters<MemoryStore["delete"]>): ReturnType<MemoryStore["delete"]> {
    const outcome = await super.delete(...args);
    if (this.failAfterChange) throw new BackendUnavailable("the second call was throttled", 1);
    return outcome;
  }
}

const policy: KeyManagement = {
  accessMode: "read_and_write",
  storeVirtualKeys: false,
  prefixForStoredVirtualKeys: "litellm/",
};

/** A manager over `store` with the tests' policy (or `over`), a minute's cache, its own log and metrics, and `extra`. */
function managerOver(
  store: SecretStore,
  log: Logger,
  metrics: Metrics,
  over: KeyManagement = policy,
  extra: Partial<SecretManagerOptions> = {},
): SecretManager {
  return new SecretManager({
    store: instrumentStore(store, metrics, log),
    envBacked: false,
    policy: over,
    cache: { ttlSeconds: 60, maxStaleSeconds: 600 },
    metrics,
    log,
    ...extra,
  });
}

function setup(options: { ttlSeconds?: number; maxStaleSeconds?: number; env?: Record<string, string> } = {}) {
  const store = new FlakyStore();
  const logs: string[] = [];
  const log = createLogger((l) => logs.push(l));
  const metrics = createMetrics();
  const clock = { now: 1_000_000 };
  const manager = new SecretManager({
    store: instrumentStore(store, metrics, log),
    envBacked: false,
    policy,
    cache: { ttlSeconds: options.ttlSeconds ?? 60, maxStaleSeconds: options.maxStaleSeconds ?? 600 },
    metrics,
    log,
    env: options.env,
    now: () => clock.now,
  });
  const masterKey = newKey();
  const app = createApp({
    manager,
    masterKey,
    metrics,
    log,
    applyKeyEvent: (event) =>
      applyKeyEvent(event, { manager, policy, maxAgeSeconds: 60, now: () => clock.now, log, metrics }),
  });
  const get = (path: string) =>
    app.fetch(new Request(`http://localhost${path}`, { headers: { authorization: `Bearer ${masterKey}` } }), { path });
  return { store, manager, metrics, logs, clock, get };
}

describe("SecretManager with a failing store", () => {
  it("serves the last good value marked stale while the store is down, then 503 with Retry-After", async () => {
    const { store, clock, get, metrics, logs } = setup({ ttlSeconds: 60, maxStaleSeconds: 600 });
    const v = secretValue();
    await store.put("K", v);
    expect(await (await get("/v1/secrets/K")).json()).toEqual({ name: "K", value: v, stale: false });
    store.down = true;
    clock.now += 61_000;
    expect(await (await get("/v1/secrets/K")).json()).toEqual({ name: "K", value: v, stale: true });
    expect(metrics.count("llm_secrets_cache_stale_serves_total", { store: "memory" })).toBe(1);
    clock.now += 600_000;
    const res = await get("/v1/secrets/K");
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("5");
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("backend_unavailable");
    const never = await get("/v1/secrets/NEVER_READ");
    expect(never.status).toBe(503);
    expectNoValueIn(logs, [v]);
  });

  it("makes one store read for 100 concurrent requests of one name", async () => {
    const { store, get } = setup();
    await store.put("K", "v");
    const answers = await Promise.all(Array.from({ length: 100 }, () => get("/v1/secrets/K")));
    expect(answers.every((r) => r.status === 200)).toBe(true);
    expect(store.reads).toBe(1);
  });

  it("updates the cache with its own writes and deletes", async () => {
    const { store, manager } = setup();
    await manager.put("K", "one");
    expect((await manager.get("K")).value).toBe("one");
    expect(store.reads).toBe(0);
    await manager.delete("K");
    await expect(manager.get("K")).rejects.toMatchObject({ code: "not_found" });
    expect(store.reads).toBe(0);
  });

  it("a write or delete that failed may have landed: the next read asks the store, and the old value is only its stale fallback", async () => {
    const { store, manager } = setup();
    await manager.put("K", "old");
    store.failAfterChange = true;
    await expect(manager.put("K", "new")).rejects.toMatchObject({ code: "backend_unavailable" });
    expect((await manager.get("K")).value).toBe("new"); // what the store holds, not the cached "old"
    expect(store.reads).toBe(1);

    await expect(manager.delete("K")).rejects.toMatchObject({ code: "backend_unavailable" });
    await expect(manager.get("K")).rejects.toMatchObject({ code: "not_found" });

    // The store down after a failed write: the value the cache held is served, marked stale.
    store.failAfterChange = false;
    await manager.put("S", "held");
    store.failAfterChange = true;
    store.down = true;
    await expect(manager.put("S", "maybe")).rejects.toMatchObject({ code: "backend_unavailable" });
    expect(await manager.get("S")).toMatchObject({ value: "held", stale: true });
  });

  it("resolves a config at start from the environment when the store fails or lacks a name, as LiteLLM does", async () => {
    const fromEnv = secretValue("env");
    const { store, manager, logs, clock } = setup({
      env: { A: fromEnv, B: "b-from-env", Q: `"${fromEnv}"`, S: "'x'", ODD: `"${fromEnv}'`, ONE: '"' },
    });
    await store.put("B", "b-from-store");
    const resolved = await manager.resolveConfig({ a: "os.environ/A", b: "os.environ/B", c: "os.environ/C" });
    expect(resolved.refs).toEqual([
      { name: "A", source: "env" },
      { name: "B", source: "store" },
      { name: "C", source: "unresolved", reason: "not_found" },
    ]);
    // What resolved is in place; the ref that did not stays as written (resolve --show-values prints it so).
    expect(resolved.config).toEqual({ a: fromEnv, b: "b-from-store", c: "os.environ/C" });
    // From the environment, one matching pair of surrounding quotes goes, as LiteLLM's get_secret
    // drops it (docker --env-file keeps them); mismatched ones and a lone quote stay.
    const quoted = await manager.resolveConfig({
      q: "os.environ/Q",
      s: "os.environ/S",
      o: "os.environ/ODD",
      one: "os.environ/ONE",
    });
    expect(quoted.config).toEqual({ q: fromEnv, s: "x", o: `"${fromEnv}'`, one: '"' });
    store.down = true;
    clock.now += 61_000; // past the not-found cache of A
    const during = await manager.resolveConfig({ a: "os.environ/A" });
    expect(during.config).toEqual({ a: fromEnv });
    // Held nowhere while the store is down: unresolved, with the store's code as the reason.
    const nowhere = await manager.resolveConfig({ z: "os.environ/Z" });
    expect(nowhere.refs).toEqual([{ name: "Z", source: "unresolved", reason: "backend_unavailable" }]);
    expect(logs.some((l) => l.includes("store read failed") && l.includes('"code":"backend_unavailable"'))).toBe(true);
    expectNoValueIn(logs, [fromEnv]);
  });

  it("sends the store at most 64 reads at once: a config of 3000 refs at start, and their refreshes", async () => {
    const { store, manager, clock, get } = setup({ ttlSeconds: 1000 });
    const names = Array.from({ length: 3000 }, (_, i) => `KEY_${i}`);
    for (const name of names) await store.put(name, `v-${name}`);
    store.latencyMs = 5;
    const config = Object.fromEntries(names.map((name) => [name.toLowerCase(), `os.environ/${name}`]));
    const resolved = await manager.resolveConfig(config);
    expect(resolved.refs.every((r) => r.source === "store")).toBe(true);
    expect(store.reads).toBe(3000);
    expect(store.mostInFlight).toBe(64);

    // In the refresh window, a read of each answers at once and refreshes in the background.
    store.mostInFlight = 0;
    clock.now += 995_000;
    for (const name of names) expect((await get(`/v1/secrets/${name}`)).status).toBe(200);
    await vi.waitFor(() => expect(store.reads).toBe(6000), { timeout: 10_000 });
    expect(store.mostInFlight).toBe(64);
  });

  it("one name's retryable failure does not fail the reads waiting their turn: a first read behind it is still made", async () => {
    const { store, manager } = setup();
    for (let i = 0; i < 63; i++) await store.put(`H${i}`, "h");
    await store.put("FINE", "fine");
    store.latencyMs = 5;
    store.failNames.add("BAD"); // a name whose read times out, the store otherwise well
    const outcome = (name: string) =>
      manager.get(name).then(
        (read) => read.value,
        (err: { code?: string }) => err.code,
      );
    const bad = outcome("BAD");
    const healthy = Array.from({ length: 63 }, (_, i) => outcome(`H${i}`));
    const fine = outcome("FINE"); // the 65th: waits its turn
    expect(await bad).toBe("backend_unavailable");
    expect(new Set(await Promise.all(healthy))).toEqual(new Set(["h"]));
    expect(await fine).toBe("fine");

    // A refusal between two such failures is the store answering: they are not 3 in a row with the next.
    store.failNames.add("BAD2").add("BAD3").add("BAD4");
    store.deniedNames.add("DENIED");
    expect(await outcome("BAD2")).toBe("backend_unavailable");
    expect(await outcome("BAD3")).toBe("backend_unavailable");
    expect(await outcome("DENIED")).toBe("backend_denied");
    const bad3 = outcome("BAD4");
    const again = Array.from({ length: 63 }, (_, i) => manager.get(`H${i}`, { refresh: true }).then((r) => r.value));
    const fine2 = manager.get("FINE", { refresh: true }).then(
      (r) => r.value,
      (err: { code?: string }) => err.code,
    );
    expect(await bad3).toBe("backend_unavailable");
    await Promise.all(again);
    expect(await fine2).toBe("fine");

    // So is an answer: failures with one between them are not 3 in a row either.
    store.failNames.add("BAD5").add("BAD6").add("BAD7");
    expect(await outcome("BAD5")).toBe("backend_unavailable");
    expect(await outcome("BAD6")).toBe("backend_unavailable");
    expect(await outcome("FINE")).toBe("fine"); // from the cache: no store call, no answer counted
    expect(await manager.get("H0", { refresh: true }).then((r) => r.value)).toBe("h");
    const bad7 = outcome("BAD7");
    const third = Array.from({ length: 63 }, (_, i) => manager.get(`H${i}`, { refresh: true }).then((r) => r.value));
    const fine3 = manager.get("FINE", { refresh: true }).then(
      (r) => r.value,
      (err: { code?: string }) => err.code,
    );
    expect(await bad7).toBe("backend_unavailable");
    expect(new Set(await Promise.all(third))).toEqual(new Set(["h"]));
    expect(await fine3).toBe("fine");
  });

  it("a store that is down fails the reads waiting their turn at once, rather than each a call's time in turn", async () => {
    const { store, manager } = setup();
    store.latencyMs = 5;
    store.down = true;
    const config = Object.fromEntries(Array.from({ length: 640 }, (_, i) => [`k${i}`, `os.environ/KEY_${i}`]));
    const resolved = await manager.resolveConfig(config);
    expect(resolved.refs).toHaveLength(640);
    expect(resolved.refs.every((r) => r.source === "unresolved" && r.reason === "backend_unavailable")).toBe(true);
    // The first turn's 64, and the 2 that took the slots of its first 2 failures; at the 3rd failure
    // in a row the 574 still waiting failed with its error, unsent.
    expect(store.reads).toBe(66);
  });

  it("logs a failed store call with the classifier's reason (never a value); a caller's mistake is no backend error", async () => {
    const { store, manager, metrics, logs } = setup();
    const failedLines = () => logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "store call failed");
    const backendErrors = (op: string, code: string) =>
      metrics.count("llm_secrets_backend_errors_total", { store: "memory", op, code });

    store.failWith = new BackendDenied(
      "aws secrets manager get: refused our identity (HTTP 400, ExpiredTokenException)",
    );
    await expect(manager.get("K")).rejects.toMatchObject({ code: "backend_denied" });
    expect(failedLines()).toEqual([
      expect.objectContaining({
        level: "warn",
        store: "memory",
        op: "get",
        name: "K",
        code: "backend_denied",
        reason: "aws secrets manager get: refused our identity (HTTP 400, ExpiredTokenException)",
      }),
    ]);
    expect(backendErrors("get", "backend_denied")).toBe(1);

    // Not one of ours: its class and frames, never its message.
    const value = secretValue();
    store.failWith = new TypeError(`cannot read ${value}`);
    await expect(manager.get("U")).rejects.toBeInstanceOf(TypeError);
    expect(failedLines()[1]).toMatchObject({ code: "internal", error: "TypeError" });
    expectNoValueIn(logs, [value]);

    // A name the backend holds for another of ours: the caller's conflict (409), no store failure.
    store.failWith = new NameConflict("a_b", "a-b");
    await expect(manager.put("a_b", "v")).rejects.toMatchObject({ code: "name_conflict" });
    expect(failedLines()).toHaveLength(2);
    expect(backendErrors("put", "name_conflict")).toBe(0);
  });

  it("logs a failed background refresh once, with the name, the code and the entry's age: never the value", async () => {
    const { store, clock, get, logs } = setup({ ttlSeconds: 100 });
    const v = secretValue();
    await store.put("K", v);
    await get("/v1/secrets/K");
    store.down = true;
    clock.now += 95_000; // in the refresh-ahead window: the answer is the cached value, the refresh fails
    expect(await (await get("/v1/secrets/K")).json()).toEqual({ name: "K", value: v, stale: false });
    await new Promise((r) => setImmediate(r));
    const lines = logs.filter((l) => l.includes("background refresh failed")).map((l) => JSON.parse(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: "warn",
      store: "memory",
      name: "K",
      code: "backend_unavailable",
      age_s: 95,
    });
    expectNoValueIn(logs, [v]);
  });

  it("keys the cache on keyOf, and an entry answers only the name it was read or written for", async () => {
    // Azure's AZURE_API_KEY and AZURE-API-KEY are one vault secret; the store answers the name it
    // holds and nothing for the other. The cache must answer the same, in any order of reads.
    const logs: string[] = [];
    const log = createLogger((l) => logs.push(l));
    const metrics = createMetrics();
    const store = new (class extends MemoryStore {
      reads = 0;
      override async get(name: string) {
        this.reads++;
        await new Promise((r) => setTimeout(r, 5));
        return super.get(name);
      }
    })({ mapName: (name) => name.replace(/[^0-9A-Za-z-]/g, "-") });
    const manager = managerOver(store, log, metrics);
    const answer = (name: string) =>
      manager.get(name).then(
        (read) => read.value,
        (err: unknown) => (err instanceof SecretsError ? err.code : "other"),
      );
    await store.put("AZURE_API_KEY", "v");
    expect(await Promise.all([answer("AZURE_API_KEY"), answer("AZURE_API_KEY")])).toEqual(["v", "v"]);
    expect(store.reads).toBe(1); // one flight for one name
    expect(await answer("AZURE_API_KEY")).toBe("v");
    expect(store.reads).toBe(1); // and one entry
    expect(await answer("AZURE-API-KEY")).toBe("not_found"); // not the other name's entry
    expect(await answer("AZURE_API_KEY")).toBe("v"); // nor that "not found" for this name
    await manager.put("AZURE_API_KEY", "w");
    expect(await answer("AZURE-API-KEY")).toBe("not_found");
    expect(await answer("AZURE_API_KEY")).toBe("w");
    // Concurrent reads of both names: each gets the store's answer for its own name.
    expect(await Promise.all([answer("AZURE-API-KEY"), answer("AZURE_API_KEY")])).toEqual(["not_found", "w"]);
    // The other name's "not found" keeps this name's value cached beside it (no read for either).
    const reads = store.reads;
    expect([await answer("AZURE-API-KEY"), await answer("AZURE_API_KEY")]).toEqual(["not_found", "w"]);
    expect(store.reads).toBe(reads);
    expect(logs.join("\n")).not.toContain('"w"');
  });

  it("resolve: a ref whose name the store refuses (Docker: no /) is unresolved with invalid_name, not the whole call's failure", async () => {
    const dir = await tempDir();
    const held = secretValue("docker-held");
    await writeFile(join(dir, "OPENAI_API_KEY"), `${held}\n`);
    const log = createLogger(() => {});
    const metrics = createMetrics();
    const store = await dockerStore.open(
      { config: { secrets_path: dir }, env: {} },
      { dataDir: dir, env: {}, log, now: Date.now },
    );
    const manager = managerOver(store, log, metrics);
    const config = { a: "os.environ/OPENAI_API_KEY", b: "os.environ/team/key", c: "os.environ/MISSING" };
    const err = await manager.resolve(config).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SecretsError);
    expect(err).toMatchObject({
      code: "unresolved_refs",
      details: { names: ["MISSING", "team/key"], reasons: { MISSING: "not_found", "team/key": "invalid_name" } },
    });
    expect(await manager.resolve({ a: "os.environ/OPENAI_API_KEY" })).toEqual({ a: held });
  });

  it("a direct PUT of a name under a virtual-key prefix spelled as another key's hash name is refused before any call (400); a key event, the key's own value and a hosted name are not", async () => {
    // LiteLLM keeps a key without an alias as litellm/virtual-key-<sha256(key)>; a gateway's PUT of
    // litellm/<alias> with that string as the alias would replace it.
    const victim = `sk-${secretValue("victim")}`;
    const attacker = `sk-${secretValue("attacker")}`;
    const hash = createHash("sha256").update(victim).digest("hex");
    const open = (
      extra: Partial<KeyManagement>,
      mapName?: (name: string) => string,
    ): {
      store: MemoryStore;
      manager: SecretManager;
      logs: string[];
      call: (name: string, value: string) => Response | Promise<Response>;
    } => {
      const store = new MemoryStore(mapName && { mapName });
      const logs: string[] = [];
      const log = createLogger((l) => logs.push(l));
      const metrics = createMetrics();
      const writePolicy: KeyManagement = { ...policy, storeVirtualKeys: true, ...extra };
      const manager = managerOver(store, log, metrics, writePolicy);
      const masterKey = newKey();
      const app = createApp({
        manager,
        masterKey,
        metrics,
        log,
        applyKeyEvent: (event) =>
          applyKeyEvent(event, { manager, policy: writePolicy, maxAgeSeconds: 60, now: Date.now, log, metrics }),
      });
      const call = (name: string, value: string) =>
        app.fetch(
          new Request(`http://localhost/v1/secrets/${name}`, {
            method: "PUT",
            headers: { authorization: `Bearer ${masterKey}` },
            body: JSON.stringify({ value }),
          }),
          { path: `/v1/secrets/${name}` },
        );
      return { store, manager, logs, call };
    };

    const { store, manager, logs, call } = open({
      teams: { "team-a": { prefixForStoredVirtualKeys: "litellm/team-a/", scope: { team: "team-a" } } },
    });
    // The key's own value under its hash's name: written (the alias-less key, as LiteLLM stores it).
    expect((await call(`litellm/virtual-key-${hash}`, victim)).status).toBe(201);
    const puts = vi.spyOn(store, "put");
    for (const name of [
      `litellm/virtual-key-${hash}`,
      `litellm/VIRTUAL_KEY_${hash.toUpperCase()}`,
      `litellm/virtual.key.${hash}`,
      `litellm/virtual/key/${hash}`,
      `litellm/team-a/virtual-key-${hash}`,
      `litellm/other/virtual-key-${hash}`,
    ]) {
      const res = await call(name, attacker);
      expect(res.status, name).toBe(400);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code, name).toBe("invalid_request");
      expect(body.error.message).toContain("virtual-key-<64 hex digits>");
      expect(JSON.stringify(body)).not.toContain(attacker);
    }
    expect(puts).not.toHaveBeenCalled(); // before any call
    expect((await manager.get(`litellm/virtual-key-${hash}`)).value).toBe(victim);
    // Not a hash name, or not under a prefix: written as before.
    expect((await call(`litellm/virtual-key-${hash.slice(1)}`, attacker)).status).toBe(201);
    expect((await call(`my-virtual-key-${hash}`, attacker)).status).toBe(201);
    expect((await call(`litellm/team-a/virtual-key-${hash}`, victim)).status).toBe(201); // the key's own value
    // A key event's write is key-events.ts's to judge (its own hash's name, or refused there).
    const eventKey = `sk-${secretValue("event")}`;
    const change = { stamp: { at: Date.now(), id: "e1" } };
    expect(await manager.put(`litellm/virtual-key-${hash}`, eventKey, {}, change)).toMatchObject({
      outcome: "updated",
    });
    expectNoValueIn(logs, [victim, attacker, eventKey]);

    // On a store mapping names as Azure does: litellm-virtual-key-<hash> is under litellm/, and lands
    // on the same secret.
    const azure = open({}, (name) => name.replace(/[^0-9A-Za-z-]/g, "-").toLowerCase());
    expect((await azure.call(`litellm-virtual-key-${hash}`, attacker)).status).toBe(400);
    expect((await azure.call(`litellm/virtual-key-${hash}`, attacker)).status).toBe(400);

    // A name hosted_keys names is the operator's: written whatever its value.
    const hosted = open({ hostedKeys: [`litellm/virtual-key-${hash}`] });
    expect((await hosted.call(`litellm/virtual-key-${hash}`, attacker)).status).toBe(201);
    expect((await hosted.call(`litellm/VIRTUAL-KEY-${hash}`, attacker)).status).toBe(400);
  });

  it("never resolves over the API from the environment", async () => {
    const { manager } = setup({ env: { ONLY_ENV: "x" } });
    await expect(manager.resolve({ k: "os.environ/ONLY_ENV" })).rejects.toSatisfy(
      (err: unknown) => err instanceof SecretsError && err.code === "unresolved_refs",
    );
  });
});

/** A memory store that keeps the listeners `watch` was given (the file store's, for another process's writes). */
class WatchedStore extends MemoryStore {
  listeners: ((names: string[]) => void)[] = [];
  watch(onChange: (names: string[]) => void): void {
    this.listeners.push(onChange);
  }
}

/** A store whose every read finds a damaged entry. */
class CorruptStore extends MemoryStore {
  override async get(): Promise<SecretRecord | undefined> {
    throw new StoreCorrupt("the entry does not open");
  }
}

describe("SecretManager: what the cache keeps, and where refs are read", () => {
  const quiet = () => ({ log: createLogger(() => {}), metrics: createMetrics() });

  it("a name another process changed (the store's watch) is read again at once, not after the cache's lifetime", async () => {
    const store = new WatchedStore();
    const { log, metrics } = quiet();
    const manager = managerOver(store, log, metrics);
    await store.put("K", "old");
    expect((await manager.get("K")).value).toBe("old");
    await store.put("K", "new"); // behind the cache's back
    expect(store.listeners.length).toBeGreaterThan(0);
    for (const listener of store.listeners) listener(["K"]);
    expect((await manager.get("K")).value).toBe("new");
  });

  it("a superseded change (an older key event) leaves the newer value readable: the older one is not cached", async () => {
    const { log, metrics } = quiet();
    const manager = managerOver(new MemoryStore(), log, metrics, { ...policy, storeVirtualKeys: true });
    await manager.put("litellm/a", "newer", {}, { stamp: { at: Date.now(), id: "e2" } });
    const older = await manager.put("litellm/a", "older", {}, { stamp: { at: Date.now() - 60_000, id: "e1" } });
    expect(older.outcome).toBe("superseded");
    expect((await manager.get("litellm/a")).value).toBe("newer");
  });

  it("with access_mode write_only, refs are read from the environment only, never through the store", async () => {
    const { log, metrics } = quiet();
    const store = new MemoryStore();
    await store.put("A", "from-store");
    const manager = managerOver(
      store,
      log,
      metrics,
      { ...policy, accessMode: "write_only" },
      { env: { A: "from-env" } },
    );
    const resolved = await manager.resolveConfig({ a: "os.environ/A", b: "os.environ/B" });
    expect(resolved.config).toEqual({ a: "from-env", b: "os.environ/B" });
    expect(resolved.refs).toEqual([
      { name: "A", source: "env" },
      { name: "B", source: "unresolved", reason: "write_only" },
    ]);
  });

  it("resolves a config whose answer exactly fills maxBytes, one byte more refused, whatever the order of its refs", async () => {
    const { log, metrics } = quiet();
    const store = new MemoryStore();
    await store.put("LONG", "x".repeat(60));
    await store.put("SHORT", "y");
    // The long value first: past the limit until the short one's ref, longer than its value, is counted.
    const config = { a: "os.environ/LONG", b: "os.environ/SHORT" };
    const answer = JSON.stringify({ a: "x".repeat(60), b: "y" });
    const over = (maxBytes: number) =>
      managerOver(store, log, metrics, policy, { resolveLimits: { maxRefs: 10, maxBytes } });
    expect(JSON.stringify(await over(answer.length).resolve(config))).toBe(answer);
    await expect(over(answer.length - 1).resolve(config)).rejects.toMatchObject({ code: "payload_too_large" });
    // The config with the long value alone, counted before the short one: larger than the whole answer.
    expect(JSON.stringify(config).length + 60 - "os.environ/LONG".length).toBeGreaterThan(answer.length);
  });

  it("takes a value of exactly maxValueBytes, and an encrypt whose answer exactly fills maxBodyBytes; one byte more of either is refused", async () => {
    const { log, metrics } = quiet();
    const manager = managerOver(new MemoryStore(), log, metrics, policy, {
      keys: new KeyRing("salt-for-the-bounds"),
      maxValueBytes: 4,
      // A sealed "ab" is 56 base64 characters (nonce 24, MAC 16, 2 bytes): {"ciphertext":"…"} is 73.
      maxBodyBytes: 73,
    });
    expect((await manager.put("K", "abcd")).outcome).toBe("created");
    await expect(manager.put("K", "abcde")).rejects.toMatchObject({ code: "payload_too_large" });
    expect(JSON.stringify({ ciphertext: manager.encrypt("ab") })).toHaveLength(73);
    expect(() => manager.encrypt("abcd")).toThrow(/larger than/);
  });

  it("a damaged entry fails a ref's read: the environment's copy does not hide it (only an env-backed store falls back)", async () => {
    const { log, metrics } = quiet();
    const manager = managerOver(new CorruptStore(), log, metrics, policy, { env: { API_BASE: "http://env.example" } });
    await expect(manager.resolveRef("API_BASE")).rejects.toMatchObject({ code: "store_corrupt" });
  });
});
