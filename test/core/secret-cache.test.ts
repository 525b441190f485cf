import { describe, expect, it, vi } from "vitest";
import { SecretsError } from "../../core/src/errors";
import { SecretCache } from "../../core/src/secret-cache";
import { BackendUnavailable } from "../../core/src/store-errors";

/** A backend double driven by the test: it counts calls and answers what it is told. */
function backend(initial: string | undefined) {
  const state = {
    value: initial,
    calls: 0,
    fail: undefined as Error | undefined,
    gate: undefined as Promise<void> | undefined,
  };
  const load = async () => {
    state.calls++;
    if (state.gate) await state.gate;
    if (state.fail) throw state.fail;
    return state.value;
  };
  return { state, load };
}

function clock(start = 1_000_000) {
  const c = { now: start };
  return { c, now: () => c.now };
}

function deferred() {
  let release!: () => void;
  const promise = new Promise<void>((r) => {
    release = r;
  });
  return { promise, release };
}

describe("SecretCache", () => {
  it("with fields, a change of a key reaches the other fields of its object; without, a # in a key means nothing", async () => {
    const { now } = clock();
    // Vault's team field keys: `path#field`; CyberArk's under a branch `apps#prod`: names of their own.
    const fields = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, now, fields: true });
    const plain = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, now });
    for (const cache of [fields, plain]) {
      for (const key of ["p", "p#password", "p#token"]) await cache.get(key, async () => `value of ${key}`);
      cache.set("p#token", "new token");
    }
    let loads = 0;
    const reload = (key: string) => async () => `${key} again (${++loads})`;
    // The write replaced the whole object: its other fields are read again.
    expect(await fields.get("p", reload("p"))).toEqual({ value: "p again (1)", stale: false });
    expect(await fields.get("p#password", reload("p#password"))).toEqual({
      value: "p#password again (2)",
      stale: false,
    });
    // Each key its own: the others are still held (a write of one CyberArk name flushed every name of its branch).
    expect(plain.get("p", reload("p"))).toEqual({ value: "value of p", stale: false });
    expect(plain.get("p#password", reload("p#password"))).toEqual({ value: "value of p#password", stale: false });
    expect(plain.get("p#token", reload("p#token"))).toEqual({ value: "new token", stale: false });
    expect(loads).toBe(2);
  });

  it("with fields, a failed change (expire) and a change behind our back (forget) reach the object's other keys, values and not-founds", async () => {
    const { now } = clock();
    const fields = () => new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, now, fields: true });
    let loads = 0;
    const reload = (key: string) => async () => `${key} again (${++loads})`;
    const held = async (cache: SecretCache) => {
      for (const key of ["p", "p#a"]) await cache.get(key, async () => `value of ${key}`);
      await cache.get("p#b", async () => undefined); // not found
    };
    // A write of field a failed, and may have landed: it replaced the object, every field of it.
    const expired = fields();
    await held(expired);
    expired.expire("p#a");
    expect(await expired.get("p", reload("p"))).toEqual({ value: "p again (1)", stale: false });
    expect(await expired.get("p#b", reload("p#b"))).toEqual({ value: "p#b again (2)", stale: false });
    // The object changed behind our back: its fields are read again, a field not found before too.
    const forgotten = fields();
    await held(forgotten);
    forgotten.forget("p");
    expect(await forgotten.get("p#a", reload("p#a"))).toEqual({ value: "p#a again (3)", stale: false });
    expect(await forgotten.get("p#b", reload("p#b"))).toEqual({ value: "p#b again (4)", stale: false });
    expect(loads).toBe(4);
  });

  it("with fields, a field's load under way across a change of its object never stores what it read before", async () => {
    const changes: [string, (cache: SecretCache) => void][] = [
      ["set", (cache) => cache.set("p", "written")],
      ["setMissing", (cache) => cache.setMissing("p")],
      ["expire", (cache) => cache.expire("p")],
      ["forget", (cache) => cache.forget("p")],
    ];
    for (const [what, change] of changes) {
      const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, fields: true });
      const gate = deferred();
      const slow = cache.get("p#a", async () => {
        await gate.promise;
        return "before the change";
      });
      change(cache);
      gate.release();
      expect((await slow).value, what).toBe("before the change"); // that read started before the change
      expect(await cache.get("p#a", async () => "after the change"), what).toEqual({
        value: "after the change",
        stale: false,
      });
    }
  });

  it("with fields, a field only written (never read) is reached by a change of its object", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, fields: true });
    cache.set("p#a", "written to field a");
    cache.set("p", "written to the object"); // replaced it whole: field a is no more
    expect(await cache.get("p#a", async () => undefined)).toEqual({ value: undefined, stale: false });
  });

  it("with fields, a field's not-found pushed out of its budget while a refresh of it is under way is still reached by a change of its object", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, fields: true, maxNotFound: 1 });
    await cache.get("p#a", async () => undefined);
    const gate = deferred();
    const refreshing = cache.get(
      "p#a",
      async () => {
        await gate.promise;
        return "before the write";
      },
      true,
    );
    await cache.get("q", async () => undefined); // the newer not-found: p#a's leaves the budget
    cache.set("p", "written");
    gate.release();
    expect((await refreshing).value).toBe("before the write");
    expect(await cache.get("p#a", async () => "after the write")).toEqual({ value: "after the write", stale: false });
  });

  it("answers from the cache until the refresh interval ends", async () => {
    const { c, now } = clock();
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, now });
    const b = backend("v1");
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false });
    b.state.value = "v2";
    c.now += 59_000;
    expect((await cache.get("a", b.load)).value).toBe("v1");
    c.now += 1_001;
    expect((await cache.get("a", b.load)).value).toBe("v2");
    expect(b.state.calls).toBe(2);
  });

  it("makes one backend call for 200 concurrent misses", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0 });
    const b = backend("v");
    const gate = deferred();
    b.state.gate = gate.promise;
    const reads = Array.from({ length: 200 }, () => cache.get("a", b.load));
    gate.release();
    const results = await Promise.all(reads);
    expect(results.every((r) => r.value === "v")).toBe(true);
    expect(b.state.calls).toBe(1);
  });

  it("shares one call among concurrent misses even with a zero interval (always read)", async () => {
    const cache = new SecretCache({ ttlMs: 0, maxStaleMs: 0 });
    const b = backend("v");
    const gate = deferred();
    b.state.gate = gate.promise;
    const reads = Array.from({ length: 50 }, () => cache.get("a", b.load));
    gate.release();
    await Promise.all(reads);
    expect(b.state.calls).toBe(1);
    await cache.get("a", b.load);
    expect(b.state.calls).toBe(2);
  });

  it("caches not-found no longer than the refresh interval: with 0, a miss is not kept at all", async () => {
    // Guards the min() of the two lives: a store read always must see a value as soon as it lands.
    const { c, now } = clock();
    const cache = new SecretCache({ ttlMs: 0, maxStaleMs: 0, now });
    const b = backend(undefined);
    expect((await cache.get("a", b.load)).value).toBeUndefined();
    b.state.value = "v";
    c.now += 1;
    expect((await cache.get("a", b.load)).value).toBe("v");
    expect(b.state.calls).toBe(2);
  });

  it("caches not-found for at most 60 s", async () => {
    const { c, now } = clock();
    const cache = new SecretCache({ ttlMs: 3_600_000, maxStaleMs: 0, now });
    const b = backend(undefined);
    expect((await cache.get("a", b.load)).value).toBeUndefined();
    b.state.value = "now-there";
    c.now += 59_000;
    expect((await cache.get("a", b.load)).value).toBeUndefined();
    c.now += 1_001;
    expect((await cache.get("a", b.load)).value).toBe("now-there");
    expect(b.state.calls).toBe(2);
  });

  it("keeps not-found answers in a budget of their own: 50 000 unknown names do not evict a value", async () => {
    const { now } = clock();
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, now, maxEntries: 10, maxNotFound: 100 });
    const values = Array.from({ length: 10 }, (_, i) => backend(`v${i}`));
    for (const [i, b] of values.entries()) await cache.get(`K${i}`, b.load);
    const none = backend(undefined);
    for (let i = 0; i < 50_000; i++) await cache.get(`UNKNOWN_${i}`, none.load);
    for (const [i, b] of values.entries()) {
      expect((await cache.get(`K${i}`, b.load)).value).toBe(`v${i}`);
      expect(b.state.calls, `K${i} answered from the cache`).toBe(1);
    }
    expect(cache.size).toBe(10);
    // The newest not-found answers are still cached; the oldest went.
    await cache.get("UNKNOWN_49999", none.load);
    await cache.get("UNKNOWN_0", none.load);
    expect(none.state.calls).toBe(50_001);
  });

  it("never caches errors", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 60_000 });
    const b = backend("v");
    b.state.fail = new BackendUnavailable("down");
    await expect(cache.get("a", b.load)).rejects.toThrow("down");
    b.state.fail = undefined;
    expect((await cache.get("a", b.load)).value).toBe("v");
    expect(b.state.calls).toBe(2);
  });

  it("serves the last good value, marked stale, while the backend is down, up to maxStale", async () => {
    const { c, now } = clock();
    const events: string[] = [];
    const cache = new SecretCache({ ttlMs: 10_000, maxStaleMs: 30_000, now, onEvent: (e) => events.push(e) });
    const b = backend("good");
    await cache.get("a", b.load);
    b.state.fail = new BackendUnavailable("timeout");
    c.now += 10_001;
    expect(await cache.get("a", b.load)).toEqual({ value: "good", stale: true });
    c.now += 29_000;
    expect(await cache.get("a", b.load)).toEqual({ value: "good", stale: true });
    c.now += 1_000;
    await expect(cache.get("a", b.load)).rejects.toBeInstanceOf(BackendUnavailable);
    expect(events.filter((e) => e === "stale")).toHaveLength(2);
  });

  it("does not serve stale values for errors that are not retryable, nor with refresh", async () => {
    const { c, now } = clock();
    const cache = new SecretCache({ ttlMs: 10_000, maxStaleMs: 30_000, now });
    const b = backend("good");
    await cache.get("a", b.load);
    c.now += 10_001;
    b.state.fail = new SecretsError("backend_denied", "denied");
    await expect(cache.get("a", b.load)).rejects.toThrow("denied");
    b.state.fail = new BackendUnavailable("down");
    await expect(cache.get("a", b.load, true)).rejects.toThrow("down");
  });

  it("refreshes in the background near expiry, answering from the cache meanwhile", async () => {
    const { c, now } = clock();
    const events: string[] = [];
    const cache = new SecretCache({ ttlMs: 100_000, maxStaleMs: 0, now, onEvent: (e) => events.push(e) });
    const b = backend("v1");
    await cache.get("a", b.load);
    b.state.value = "v2";
    const gate = deferred();
    b.state.gate = gate.promise;
    c.now += 95_000; // within the last tenth
    expect((await cache.get("a", b.load)).value).toBe("v1");
    expect((await cache.get("a", b.load)).value).toBe("v1");
    expect(b.state.calls).toBe(2); // one background refresh, not two
    gate.release();
    await new Promise((r) => setTimeout(r, 0));
    expect((await cache.get("a", b.load)).value).toBe("v2");
    expect(events).toContain("refresh");
  });

  it("spreads the refreshes of entries loaded together over the first half of their last tenth, by key", async () => {
    const { c, now } = clock();
    let refreshes = 0;
    const cache = new SecretCache({
      ttlMs: 100_000,
      maxStaleMs: 0,
      now,
      onEvent: (e) => {
        if (e === "refresh") refreshes++;
      },
    });
    const b = backend("v");
    const keys = Array.from({ length: 200 }, (_, i) => `KEY_${i}`);
    for (const key of keys) await cache.get(key, b.load);
    const start = c.now;
    const refreshedBy = async (at: number) => {
      c.now = start + at;
      for (const key of keys) await cache.get(key, b.load);
      await new Promise((r) => setTimeout(r, 0));
      return refreshes;
    };
    expect(await refreshedBy(89_999)).toBe(0);
    const halfWay = await refreshedBy(92_500);
    expect(halfWay).toBeGreaterThan(40); // about half of the 200, not all at once
    expect(halfWay).toBeLessThan(160);
    expect(await refreshedBy(95_000)).toBe(200); // the others by 95 s; the refreshed ones live anew from 92.5 s
  });

  it("bypasses the cache on refresh", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0 });
    const b = backend("v1");
    await cache.get("a", b.load);
    b.state.value = "v2";
    expect((await cache.get("a", b.load, true)).value).toBe("v2");
    expect((await cache.get("a", b.load)).value).toBe("v2");
  });

  it("takes our own writes and deletes at once, over a load already under way", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0 });
    const b = backend("old");
    const gate = deferred();
    b.state.gate = gate.promise;
    const slow = cache.get("a", b.load);
    cache.set("a", "written");
    gate.release();
    expect((await slow).value).toBe("old"); // that read started before the write
    expect((await cache.get("a", b.load)).value).toBe("written");
    cache.setMissing("a");
    expect((await cache.get("a", b.load)).value).toBeUndefined();
    expect(b.state.calls).toBe(1);
  });

  it("a read under way across our own delete or write, whose load then fails, never answers the value replaced", async () => {
    const { c, now } = clock();
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 600_000, now });
    const b = backend("revoked");
    await cache.get("a", b.load);
    c.now += 61_000; // expired: the next read loads, and could serve the value stale
    const gate = deferred();
    b.state.gate = gate.promise;
    b.state.fail = new BackendUnavailable("timed out", 1);
    const deleting = cache.get("a", b.load);
    cache.setMissing("a"); // our delete, acknowledged while the load is under way
    gate.release();
    expect(await deleting).toEqual({ value: undefined, stale: false });
    // The same for a write: the read answers the written value, not the one it replaced.
    cache.set("b", "old");
    c.now += 61_000;
    const gate2 = deferred();
    b.state.gate = gate2.promise;
    const writing = cache.get("b", b.load);
    cache.set("b", "new");
    gate2.release();
    expect(await writing).toEqual({ value: "new", stale: false });
  });

  it("caches both names of one backend key read at once (Azure's A_B and A-B): neither load is dropped", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0 });
    const under = backend("under");
    const dash = backend(undefined); // the store answers only the name it holds
    const gate = deferred();
    under.state.gate = gate.promise;
    dash.state.gate = gate.promise;
    const both = Promise.all([cache.get("A-B", under.load, false, "A_B"), cache.get("A-B", dash.load, false, "A-B")]);
    gate.release();
    expect((await both).map((r) => r.value)).toEqual(["under", undefined]);
    // Both answers were kept: no second call for either name.
    expect((await cache.get("A-B", under.load, false, "A_B")).value).toBe("under");
    expect((await cache.get("A-B", dash.load, false, "A-B")).value).toBeUndefined();
    expect([under.state.calls, dash.state.calls]).toEqual([1, 1]);
    // A write of the key still drops both loads under way.
    const late = deferred();
    under.state.gate = late.promise;
    const slow = cache.get("A-B", under.load, true, "A_B");
    cache.set("A-B", "written", "A_B");
    late.release();
    await slow;
    expect((await cache.get("A-B", under.load, false, "A_B")).value).toBe("written");
  });

  it("a delete through one name drops another name's value on the key (Azure's AZURE_API_KEY deletes the untagged AZURE-API-KEY)", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 600_000 });
    const portal = backend("portal-value");
    expect((await cache.get("azure-api-key", portal.load, false, "AZURE-API-KEY")).value).toBe("portal-value");
    cache.setMissing("azure-api-key", "AZURE_API_KEY"); // our delete landed: the vault secret is gone
    portal.state.value = undefined;
    expect((await cache.get("azure-api-key", portal.load, false, "AZURE_API_KEY")).value).toBeUndefined();
    expect(portal.state.calls).toBe(1); // the deleted name: from the cache
    // The other name asks the store again, rather than serve the deleted value for the cache's lifetime.
    expect((await cache.get("azure-api-key", portal.load, false, "AZURE-API-KEY")).value).toBeUndefined();
    expect(portal.state.calls).toBe(2);
  });

  it("expire() drops a cached not-found too: a change that failed may have landed", async () => {
    // Guards the "not found" half of expire(): without it the miss outlived it, for up to 60 s.
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0 });
    const b = backend(undefined);
    expect((await cache.get("A", b.load)).value).toBeUndefined();
    expect((await cache.get("A", b.load)).value).toBeUndefined();
    expect(b.state.calls).toBe(1); // the miss is cached
    b.state.value = "landed"; // our write failed, but reached the store
    cache.expire("A");
    expect((await cache.get("A", b.load)).value).toBe("landed");
    expect(b.state.calls).toBe(2);
  });

  it("keeps names apart and bounds its size", async () => {
    const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 0, maxEntries: 3 });
    for (const n of ["a", "b", "c", "d"]) cache.set(n, `value-of-${n}`);
    expect(cache.size).toBe(3);
    const b = backend("reloaded");
    expect((await cache.get("d", b.load)).value).toBe("value-of-d");
    expect((await cache.get("a", b.load)).value).toBe("reloaded");
  });
});

/** Lets background loads started by a read settle before the next read. */
const settle = () => new Promise((r) => setImmediate(r));

/** 1000 reads of "a", `stepMs` apart on the clock, each expected to answer `read`. */
async function thousandReads(
  cache: SecretCache,
  b: ReturnType<typeof backend>,
  c: { now: number },
  stepMs: number,
  read: { value: string; stale: boolean },
): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    expect(await cache.get("a", b.load)).toEqual(read);
    await settle();
    c.now += stepMs;
  }
}

describe("SecretCache during a store outage", () => {
  it("backs off: 1000 reads in the refresh window and past expiry cost a handful of store calls, all served the last value", async () => {
    const { c, now } = clock();
    const warnings: { key: string; ageMs: number }[] = [];
    const cache = new SecretCache({
      ttlMs: 100_000,
      maxStaleMs: 600_000,
      now,
      onRefreshError: (_err, key, ageMs) => warnings.push({ key, ageMs }),
    });
    const b = backend("v1");
    const start = c.now;
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false });
    b.state.fail = new BackendUnavailable("timeout");

    // In the refresh window (from 90 to 95 s, by the key, to the end at 100 s): 1000 reads over 4 s, each answered from the cache.
    c.now = start + 95_000;
    await thousandReads(cache, b, c, 4, { value: "v1", stale: false });
    // Retries at +0, +1 s, +3 s (1 s, 2 s, 4 s apart): 3 calls, not 1000.
    expect(b.state.calls - 1).toBeLessThanOrEqual(4);
    expect(b.state.calls - 1).toBeGreaterThanOrEqual(2);
    expect(warnings.length).toBe(b.state.calls - 1);
    expect(warnings[0]).toEqual({ key: "a", ageMs: 95_000 });

    // Past expiry: 1000 reads over 200 s, each served the stale value.
    const before = b.state.calls;
    c.now = start + 100_001;
    await thousandReads(cache, b, c, 200, { value: "v1", stale: true });
    // Backoff 8, 16, 32, 60, 60, 60 s over 200 s: a handful of calls.
    expect(b.state.calls - before).toBeLessThanOrEqual(8);
    expect(b.state.calls - before).toBeGreaterThanOrEqual(3);
    expect(warnings.length).toBeLessThanOrEqual(4); // no background refresh past expiry

    // The store recovers: once the backoff (at most 60 s) passes, the next read loads and serves the new value.
    b.state.fail = undefined;
    b.state.value = "v2";
    c.now += 60_000;
    const calls = b.state.calls;
    expect(await cache.get("a", b.load)).toEqual({ value: "v2", stale: false });
    expect(b.state.calls).toBe(calls + 1);
    // A success resets the backoff: the entry is fresh, and its next refresh is at the usual point.
    expect(cache.get("a", b.load)).toEqual({ value: "v2", stale: false });
    expect(b.state.calls).toBe(calls + 1);
  });

  it("still calls the store when it holds nothing to serve: a cold miss, a value past maxStale, a not-retryable error", async () => {
    const { c, now } = clock();
    const events: string[] = [];
    const cache = new SecretCache({ ttlMs: 10_000, maxStaleMs: 5_000, now, onEvent: (e) => events.push(e) });
    const b = backend("v1");
    b.state.fail = new BackendUnavailable("down");
    // A cold miss: every read goes to the store and fails (no value to serve).
    for (let i = 0; i < 3; i++) await expect(cache.get("a", b.load)).rejects.toBeInstanceOf(BackendUnavailable);
    expect(b.state.calls).toBe(3);

    b.state.fail = undefined;
    await cache.get("a", b.load);
    b.state.fail = new BackendUnavailable("down");
    c.now += 10_001;
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: true }); // a retry, then the backoff
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: true });
    expect(b.state.calls).toBe(5);
    // A miss is a read that went to the store (the metric's help says so): the backed-off stale
    // read made no call, and is a stale serve only (it was counted a miss too).
    expect(events.filter((e) => e === "miss")).toHaveLength(5);
    expect(events.filter((e) => e === "stale")).toHaveLength(2);
    // Past maxStale the value is no longer servable: the read goes to the store, backoff or not.
    c.now += 5_000;
    await expect(cache.get("a", b.load)).rejects.toBeInstanceOf(BackendUnavailable);
    expect(b.state.calls).toBe(6);
    b.state.fail = undefined;
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false });

    // A refresh (cache bypass) always asks the store.
    c.now += 10_001;
    b.state.fail = new BackendUnavailable("down");
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: true });
    await expect(cache.get("a", b.load, true)).rejects.toBeInstanceOf(BackendUnavailable);
    expect(b.state.calls).toBe(9);

    // A not-retryable error is not backed off into stale answers.
    c.now += 60_000;
    b.state.fail = undefined;
    await cache.get("a", b.load);
    c.now += 10_001;
    b.state.fail = new SecretsError("backend_denied", "denied");
    await expect(cache.get("a", b.load)).rejects.toThrow("denied");
    await expect(cache.get("a", b.load)).rejects.toThrow("denied");
    expect(b.state.calls).toBe(12);
  });

  it("backs off 1 s a store read always (refresh interval 0) while it fails, rather than call it on every read", async () => {
    const { c, now } = clock();
    const cache = new SecretCache({ ttlMs: 0, maxStaleMs: 600_000, now });
    const b = backend("v1");
    await cache.get("a", b.load);
    expect(b.state.calls).toBe(1);
    b.state.fail = new BackendUnavailable("down");
    c.now += 1;
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: true }); // a call, which fails
    for (let i = 0; i < 100; i++) {
      expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: true });
      c.now += 5;
    }
    expect(b.state.calls).toBe(2); // 500 ms of reads: none called
    c.now += 600;
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: true });
    expect(b.state.calls).toBe(3); // the backoff (1 s) passed: called again
  });

  it("keeps what was left of each entry's times in real time when the clock steps back, by an hour or by less than an entry's age", async () => {
    const { c, now } = clock();
    const cache = new SecretCache({ ttlMs: 100_000, maxStaleMs: 600_000, now });
    const b = backend("v1");
    await cache.get("a", b.load);
    b.state.value = "v2";
    c.now += 40_000;
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false }); // read 40 s in: 60 s left
    c.now -= 3_600_000; // NTP steps the clock back an hour: v1 is still fresh, for what was left of its 100 s
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false });
    expect(b.state.calls).toBe(1);
    c.now += 59_000;
    expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false });
    c.now += 1_000; // its 100 s are over, in real time (not 1 h 100 s: the hour the entry lived before)
    expect(await cache.get("a", b.load)).toEqual({ value: "v2", stale: false });
    expect(b.state.calls).toBe(2);
    // Expired and backed off while the store is down, then stepped back by less than the entry's
    // age. Before: the value was fresh again (stale: false) and the store not asked for the length
    // of the step (2 min); now the backoff's second passes and the store is asked.
    b.state.fail = new BackendUnavailable("down");
    c.now += 150_000;
    expect(await cache.get("a", b.load)).toEqual({ value: "v2", stale: true });
    expect(b.state.calls).toBe(3);
    c.now -= 120_000;
    expect(cache.get("a", b.load)).toEqual({ value: "v2", stale: true }); // backed off: no call, still stale
    expect(b.state.calls).toBe(3);
    b.state.fail = undefined;
    b.state.value = "v3";
    c.now += 1_000;
    expect(await cache.get("a", b.load)).toEqual({ value: "v3", stale: false });
    expect(b.state.calls).toBe(4);
  });

  it("with the wall clock, sees a step back though no read came before the clock passed its last reading again", async () => {
    // Before: only a read while the clock was below its last reading saw the step; on a quiet cache
    // (TTL 60 s, read at 50 s, a 2-minute step back, the next read 2 minutes later) the value was
    // still fresh 2 minutes past its expiry, while the store held another.
    vi.useFakeTimers({ toFake: ["Date", "performance"] });
    try {
      const cache = new SecretCache({ ttlMs: 60_000, maxStaleMs: 600_000 }); // the wall clock: Date.now
      const b = backend("v1");
      await cache.get("a", b.load);
      vi.advanceTimersByTime(50_000);
      expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false });
      b.state.value = "v2";
      vi.setSystemTime(Date.now() - 120_000); // the wall clock alone steps back 2 min
      vi.advanceTimersByTime(125_000); // the next read comes 125 s later: the clock 5 s past its last reading, 55 s after the store
      expect(await cache.get("a", b.load)).toEqual({ value: "v2", stale: false });
      expect(b.state.calls).toBe(2);
      // A second of drift between the clocks is no step: a value 59 s old is still fresh.
      b.state.value = "v3";
      vi.setSystemTime(Date.now() - 900);
      vi.advanceTimersByTime(59_000);
      expect(await cache.get("a", b.load)).toEqual({ value: "v2", stale: false });
    } finally {
      vi.useRealTimers();
    }
  });

  it("backs off a background refresh refused (not retryable) too, until the value expires; then the read gets the error", async () => {
    const { c, now } = clock();
    const warnings: string[] = [];
    const cache = new SecretCache({
      ttlMs: 100_000,
      maxStaleMs: 600_000,
      now,
      onRefreshError: (_err, key) => warnings.push(key),
    });
    const b = backend("v1");
    const start = c.now;
    await cache.get("a", b.load);
    b.state.fail = new SecretsError("backend_denied", "denied"); // the store's permission taken away
    // In the refresh window: 1000 reads over 5 s, each answered the value (still fresh).
    c.now = start + 91_000;
    await thousandReads(cache, b, c, 5, { value: "v1", stale: false });
    expect(b.state.calls - 1).toBeLessThanOrEqual(4);
    expect(warnings.length).toBe(b.state.calls - 1);
    // Past expiry the value is not served stale: the read calls, and gets the refusal.
    c.now = start + 100_001;
    const calls = b.state.calls;
    await expect(cache.get("a", b.load)).rejects.toThrow("denied");
    expect(b.state.calls).toBe(calls + 1);
  });
});
