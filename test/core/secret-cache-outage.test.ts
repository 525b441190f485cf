import { describe, expect, it } from "vitest";
import { SecretsError } from "../../core/src/errors";
import { SecretCache } from "../../core/src/secret-cache";
import { BackendUnavailable } from "../../core/src/store-errors";

/** A store double: it counts calls, answers its value, or fails while `fail` is set. */
function backend(initial: string) {
  const state = { value: initial, calls: 0, fail: undefined as Error | undefined };
  const load = async () => {
    state.calls++;
    if (state.fail) throw state.fail;
    return state.value;
  };
  return { state, load };
}

function clock(start = 1_000_000) {
  const c = { now: start };
  return { c, now: () => c.now };
}

/** Lets background loads started by a read settle before the next read. */
const settle = () => new Promise((r) => setImmediate(r));

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

    // In the refresh window (the last 10 s): 1000 reads over 5 s, each answered from the cache.
    c.now = start + 91_000;
    for (let i = 0; i < 1000; i++) {
      expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false });
      await settle();
      c.now += 5;
    }
    // Retries at +0, +1 s, +3 s (1 s, 2 s, 4 s apart): 3 calls, not 1000.
    expect(b.state.calls - 1).toBeLessThanOrEqual(4);
    expect(b.state.calls - 1).toBeGreaterThanOrEqual(2);
    expect(warnings.length).toBe(b.state.calls - 1);
    expect(warnings[0]).toEqual({ key: "a", ageMs: 91_000 });

    // Past expiry: 1000 reads over 200 s, each served the stale value.
    const before = b.state.calls;
    c.now = start + 100_001;
    for (let i = 0; i < 1000; i++) {
      expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: true });
      await settle();
      c.now += 200;
    }
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
    const cache = new SecretCache({ ttlMs: 10_000, maxStaleMs: 5_000, now });
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

  it("loads an entry again when the clock steps back, rather than keep it for the length of the step", async () => {
    const { c, now } = clock();
    const cache = new SecretCache({ ttlMs: 100_000, maxStaleMs: 600_000, now });
    const b = backend("v1");
    await cache.get("a", b.load);
    b.state.value = "v2";
    c.now -= 3_600_000; // NTP steps the clock back an hour: v1 would otherwise be served for 1 h 100 s
    expect(await cache.get("a", b.load)).toEqual({ value: "v2", stale: false });
    expect(b.state.calls).toBe(2);
    expect(await cache.get("a", b.load)).toEqual({ value: "v2", stale: false }); // cached again
    expect(b.state.calls).toBe(2);
    // Stepped back again while the store is down: served stale, and backed off as in any outage.
    b.state.fail = new BackendUnavailable("down");
    c.now -= 3_600_000;
    for (let i = 0; i < 100; i++) {
      expect(await cache.get("a", b.load)).toEqual({ value: "v2", stale: true });
      c.now += 10;
    }
    expect(b.state.calls).toBe(3);
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
    for (let i = 0; i < 1000; i++) {
      expect(await cache.get("a", b.load)).toEqual({ value: "v1", stale: false });
      await settle();
      c.now += 5;
    }
    expect(b.state.calls - 1).toBeLessThanOrEqual(4);
    expect(warnings.length).toBe(b.state.calls - 1);
    // Past expiry the value is not served stale: the read calls, and gets the refusal.
    c.now = start + 100_001;
    const calls = b.state.calls;
    await expect(cache.get("a", b.load)).rejects.toThrow("denied");
    expect(b.state.calls).toBe(calls + 1);
  });
});
