/**
 * `@llm-secrets/core/testing`: the one conformance suite every store must pass (DESIGN.md), for
 * the built-in stores and for yours (README, "Writing your own store"). Call `storeConformance`
 * from a vitest test file with your factory and a way to open a fresh store:
 *
 *   import { storeConformance } from "@llm-secrets/core/testing";
 *   storeConformance({ name: "my store", factory: myStore, open: () => myStore.open(settings, deps) });
 *
 * It reads the factory's capabilities: a store that cannot write runs the read half on seeded
 * data; one that cannot delete must say `not_supported`; one that records change times runs the
 * `ifNewerThan` and tombstone half; one that honours scopes has two teams' places checked; one that
 * lists (`list`) has its pages checked; one that tells secrets made outside llm-secrets from its own
 * (`seedOutside`) has its `adopt: false` checked. Names its `keyOf` lands on one key must conflict.
 * A store with `has` is held to answering as `get` does.
 * A target whose backend can be made to fail (`failNext`) has its failures' codes checked; one that
 * can open a second store over the same backend (`reopen`) is held to keeping its records there.
 * It needs vitest (a peer dependency of this entry point only).
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SecretsError } from "./errors";
import type { SecretStore, StoreFactory } from "./secret-store";

/** The error code a promise is refused with (`no error` when it is not). */
async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return err instanceof SecretsError ? err.code : `untyped ${(err as Error).name}`;
  }
  return "no error";
}

/** A small seeded generator (sfc32): the suite's data (and the tests', test/helpers.ts) is the same on every run. */
export function seededRandom(seed: string): () => number {
  const h = createHash("sha256").update(seed).digest();
  let a = h.readUInt32LE(0);
  let b = h.readUInt32LE(4);
  let c = h.readUInt32LE(8);
  let d = h.readUInt32LE(12);
  return () => {
    a |= 0;
    b |= 0;
    c |= 0;
    d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4_294_967_296;
  };
}

export interface ConformanceTarget {
  /** How the suite is titled. */
  name: string;
  factory: StoreFactory;
  /** A fresh store holding `seed` (stores that cannot write must honour it; others may put it). */
  open(seed?: Record<string, string>): Promise<SecretStore>;
  /**
   * Two different names that `keyOf` maps onto one backend key, for stores that map names (delete
   * and overwrite checked too; case and punctuation variants are checked on every store, from its `keyOf`).
   */
  collidingNames?: [string, string];
  /** Names the store refuses by design (Docker secrets are files: no `/`); the suite skips them. */
  refuses?: (name: string) => boolean;
  /**
   * Values the store refuses by design (Conjur takes no blank value): a put of one must be
   * `invalid_request` and leave nothing behind; the suite skips them otherwise.
   */
  refusesValue?: (value: string) => boolean;
  /**
   * Makes a secret outside llm-secrets (as the provider's console would: none of the store's own
   * marks) on the backend key that `name` lands on, in the store `open` made last. For a store that
   * tells such secrets from its own: its `adopt: false` is then held to leaving them alone.
   */
  seedOutside?: (name: string, value: string) => Promise<void>;
  /**
   * Makes the backend `open` made last fail the store's next call with `fault`, as the service
   * answers it, and every call after that until the next `open` (a backend that stays down, so the
   * store's retries and its client's run out as they would): `denied` (its refusal of our identity,
   * a 403), `throttled` (its 429, or whatever it throttles with), `down` (its 503, or the 5xx it
   * fails with), `reset` (the connection dropped). The suite holds the store to the classifier's
   * codes (store-errors.ts): `backend_denied`; `backend_unavailable` with the backend's Retry-After
   * (`faultRetryAfter`).
   */
  failNext?: (fault: BackendFault) => Promise<void>;
  /**
   * The `Retry-After` (seconds) of the backend's `throttled` and `down` answers under `failNext`,
   * which the store's `backend_unavailable` must carry: 7 unless said. A store whose client waits
   * it out between attempts (Azure's SDK) may say less (more than 1, the default it must differ
   * from), to keep the suite quick. `"none"` for a backend that sends none (AWS throttles with an
   * HTTP 400 without one; gRPC has no headers, and a RetryInfo detail is not read): its error then
   * carries the classifier's 1 s.
   */
  faultRetryAfter?: number | "none";
  /**
   * A second store over the backend `open` made last, as another instance or a cold start opens
   * it: what one instance records (values, change times, tombstones) must be in the backend, where
   * the other finds it, not in the instance.
   */
  reopen?: () => Promise<SecretStore>;
}

/** The failures the suite asks a backend for (`failNext`). */
export type BackendFault = "denied" | "throttled" | "down" | "reset";

const NAMES = ["OPENAI_API_KEY", "litellm/team-a/key", "a-b", "a.b", "user@example.com", "x+y=z", "Z9"];
const UNICODE = "ключ-密钥-🔑-ünïcødé";

/** Values that look binary: every code point 1..255, and random bytes as Latin-1 text. */
function binaryLooking(random: () => number, length: number): string {
  const fixed = Array.from({ length: 255 }, (_, i) => String.fromCharCode(i + 1)).join("");
  let out = fixed;
  while (out.length < length) out += String.fromCharCode(1 + Math.floor(random() * 255));
  return out.slice(0, length);
}

/** A string of exactly `bytes` UTF-8 bytes, mixing one-, two- and four-byte characters. */
function valueOfBytes(bytes: number, random: () => number): string {
  const parts: string[] = [];
  let left = bytes;
  while (left > 0) {
    const pick = random();
    if (left >= 4 && pick < 0.1) {
      parts.push("🔑");
      left -= 4;
    } else if (left >= 2 && pick < 0.3) {
      parts.push("é");
      left -= 2;
    } else {
      parts.push(String.fromCharCode(97 + Math.floor(random() * 26)));
      left -= 1;
    }
  }
  return parts.join("");
}

export function storeConformance(target: ConformanceTarget): void {
  const { capabilities } = target.factory;
  const random = seededRandom(`conformance:${target.name}`);

  describe(`store conformance: ${target.name}`, () => {
    it("reads what it holds and nothing else", async () => {
      const all = Object.fromEntries(NAMES.map((n, i) => [n, `v${i}-${n}`]));
      const store = capabilities.writes ? await target.open() : await target.open(all);
      // Names that land on one backend key are one secret: keep the first of each key.
      const names = NAMES.filter(
        (n, i) => !target.refuses?.(n) && NAMES.findIndex((m) => store.keyOf(m) === store.keyOf(n)) === i,
      );
      if (capabilities.writes) for (const n of names) expect(await store.put(n, all[n] as string)).toBe("created");
      for (const n of names) expect((await store.get(n))?.value, n).toBe(all[n]);
      expect(await store.get("NOT_THERE")).toBeUndefined();
      if (!target.refuses?.("litellm/team-a")) {
        expect(await store.get("litellm/team-a")).toBeUndefined(); // a prefix of a held name is not that name
      }
      await store.close?.();
    });

    it("keyOf depends on the name only: two opens of the store agree, and it is a non-empty string", async () => {
      const one = await target.open();
      const two = await target.open();
      for (const n of NAMES) {
        // Built afresh, so no string identity is shared between the two calls.
        const copy = [...n].join("");
        expect(one.keyOf(n).length).toBeGreaterThan(0);
        expect(two.keyOf(copy)).toBe(one.keyOf(n));
      }
      await one.close?.();
      await two.close?.();
    });

    it("lists what it holds, in pages of at most the limit, each name once, within a prefix", async () => {
      const held = ["LIST_A", "LIST_B", "LIST_C", "listed/x", "listed/y"].filter((n) => !target.refuses?.(n));
      const store = capabilities.writes
        ? await target.open()
        : await target.open(Object.fromEntries(held.map((n) => [n, `v-${n}`])));
      if (!store.list) {
        await store.close?.();
        return; // a store that cannot list answers 501 through the API (the manager's test)
      }
      if (capabilities.writes) {
        for (const n of held) await store.put(n, `v-${n}`);
        await store.put("LIST_GONE", "v");
        if (capabilities.deletes) await store.delete("LIST_GONE");
      }
      const all = async (prefix: string) => {
        const names: string[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < 50; page++) {
          const got = await store.list?.({ prefix, limit: 2, ...(cursor !== undefined && { cursor }) });
          expect(got?.names.length ?? 0).toBeLessThanOrEqual(2);
          names.push(...(got?.names ?? []));
          cursor = got?.cursor;
          if (cursor === undefined) break;
        }
        return names;
      };
      const upper = await all("LIST_");
      expect(new Set(upper).size, "each name once").toBe(upper.length);
      const expected = held.filter((n) => n.startsWith("LIST_"));
      if (!capabilities.deletes && capabilities.writes) expected.push("LIST_GONE");
      expect([...upper].sort()).toEqual(expected.sort());
      expect((await all("listed/")).sort()).toEqual(held.filter((n) => n.startsWith("listed/")).sort());
      expect(await all("NO_SUCH_PREFIX_")).toEqual([]);
      await store.close?.();
    });

    const { failNext } = target;
    if (failNext) {
      const sent = target.faultRetryAfter ?? 7;
      const expected: Record<BackendFault, [string, number?]> = {
        denied: ["backend_denied"],
        throttled: ["backend_unavailable", sent === "none" ? 1 : sent],
        down: ["backend_unavailable", sent === "none" ? 1 : sent],
        reset: ["backend_unavailable"],
      };
      for (const fault of ["denied", "throttled", "down", "reset"] as const) {
        const calls = capabilities.writes ? "reads and writes" : "reads";
        it(`a backend that fails (${fault}) is ${expected[fault].join(", Retry-After ")}, on ${calls}`, async () => {
          // Open and answering first (logged in, connected): then the backend fails.
          const store = await target.open({ FAULTED: "v" });
          await store.get("FAULTED");
          await failNext(fault);
          /** The code and, where the classifier keeps one, the Retry-After a call is refused with. */
          const typed = (call: Promise<unknown>) =>
            call.then(
              () => ["no error"],
              (err: unknown) => {
                if (!(err instanceof SecretsError)) return [`untyped ${(err as Error).name}`];
                return expected[fault][1] === undefined ? [err.code] : [err.code, err.details.retryAfter];
              },
            );
          expect(await typed(store.get("FAULTED")), "get").toEqual(expected[fault]);
          if (capabilities.writes) expect(await typed(store.put("FAULTED", "w")), "put").toEqual(expected[fault]);
          await store.close?.();
        });
      }
    }

    if (!capabilities.writes) {
      it("refuses writes and deletes with not_supported", async () => {
        const store = await target.open({ A: "a" });
        expect(await codeOf(store.put("A", "b"))).toBe("not_supported");
        expect(await codeOf(store.delete("A"))).toBe("not_supported");
        expect((await store.get("A"))?.value).toBe("a");
      });
      return;
    }

    it("a name on a key another name holds is name_conflict and reads nothing; names on their own keys stay apart", async () => {
      // Case and punctuation variants: whichever of them the store's keyOf maps onto one key.
      const store = await target.open();
      const variants = ["Mixed_Key.1", "mixed_key.1", "MIXED-KEY-1", "mixed-key.1", "a.b", "a-b", "a_b"].filter(
        (n) => !target.refuses?.(n),
      );
      const holder = new Map<string, string>();
      for (const n of variants) {
        const owner = holder.get(store.keyOf(n));
        if (owner === undefined) {
          holder.set(store.keyOf(n), n);
          expect(await store.put(n, `own-${n}`), n).toBe("created");
          continue;
        }
        expect(await codeOf(store.put(n, `own-${n}`)), `${n} on ${owner}'s key`).toBe("name_conflict");
        if (capabilities.deletes) expect(await codeOf(store.delete(n)), `${n} on ${owner}'s key`).toBe("name_conflict");
        expect(await store.get(n), `${n} on ${owner}'s key`).toBeUndefined();
      }
      for (const n of holder.values()) expect((await store.get(n))?.value, n).toBe(`own-${n}`);
      await store.close?.();
    });

    if (capabilities.scopes) {
      it("scopes: two teams' places keep one name apart, and apart from the unscoped name", async () => {
        const store = await target.open();
        const one = { team: "t1", pathPrefix: "conformance-t1" };
        const two = { team: "t2", pathPrefix: "conformance-t2" };
        expect(store.keyOf("SCOPED", one)).not.toBe(store.keyOf("SCOPED", two));
        expect(store.keyOf("SCOPED", one)).not.toBe(store.keyOf("SCOPED"));
        expect(await store.put("SCOPED", "team-one", { scope: one })).toBe("created");
        expect(await store.put("SCOPED", "team-two", { scope: two })).toBe("created");
        expect((await store.get("SCOPED", { scope: one }))?.value).toBe("team-one");
        expect((await store.get("SCOPED", { scope: two }))?.value).toBe("team-two");
        expect(await store.get("SCOPED")).toBeUndefined();
        await store.close?.();
      });
    }

    it("has (where the store has it) says what get says: held once put, not once deleted, not if never stored", async (ctx) => {
      const store = await target.open();
      const has = store.has?.bind(store);
      if (!has) {
        await store.close?.();
        return ctx.skip(); // a listing asks `get` instead: nothing to hold to
      }
      expect(await has("HAS_NEVER")).toBe(false);
      await store.put("HAS_IT", "v");
      expect(await has("HAS_IT")).toBe(true);
      if (capabilities.deletes) {
        await store.delete("HAS_IT");
        expect(await has("HAS_IT")).toBe(false);
        expect(await store.get("HAS_IT")).toBeUndefined();
      }
      await store.close?.();
    });

    it("puts, overwrites and deletes, saying what happened", async () => {
      const store = await target.open();
      const before = Date.now();
      expect(await store.put("A", "one")).toBe("created");
      const first = await store.get("A");
      expect(first?.value).toBe("one");
      const records = new Set(capabilities.records);
      expect(first?.updatedAt !== undefined, "updatedAt as the capabilities say").toBe(records.has("updatedAt"));
      expect(first?.version !== undefined, "version as the capabilities say").toBe(records.has("version"));
      if (first?.updatedAt) expect(first.updatedAt.getTime()).toBeGreaterThanOrEqual(before - 1000);
      expect(await store.put("A", "two")).toBe("updated");
      const second = await store.get("A");
      expect(second?.value).toBe("two");
      if (first?.version !== undefined) expect(second?.version).not.toBe(first.version);
      if (!capabilities.deletes) {
        // A store that writes but cannot delete (Conjur) says so, and keeps the value.
        expect(await codeOf(store.delete("A"))).toBe("not_supported");
        expect((await store.get("A"))?.value).toBe("two");
        await store.close?.();
        return;
      }
      expect(await store.delete("A")).toBe("deleted");
      expect(await store.get("A")).toBeUndefined();
      expect(await store.delete("A")).toBe("absent");
      expect(await store.delete("NEVER_WRITTEN")).toBe("absent");
      expect(await store.put("A", "three")).toBe("created");
      expect((await store.get("A"))?.value).toBe("three");
      await store.close?.();
    });

    it("adopt: false changes what the store itself wrote as any change does", async () => {
      // The manager sets it on every key event's change and every virtual key's write.
      const store = await target.open();
      expect(await store.put("OWN", "one", { adopt: false })).toBe("created");
      expect(await store.put("OWN", "two", { adopt: false })).toBe("updated");
      expect((await store.get("OWN"))?.value).toBe("two");
      if (capabilities.deletes) {
        expect(await store.delete("OWN", { adopt: false })).toBe("deleted");
        expect(await store.get("OWN")).toBeUndefined();
      }
      await store.close?.();
    });

    const { seedOutside } = target;
    if (seedOutside) {
      it("adopt: false never takes over nor deletes a secret made outside llm-secrets; a change without it adopts", async () => {
        const store = await target.open();
        await seedOutside("OUTSIDE_PUT", "console-put");
        await seedOutside("OUTSIDE_DELETE", "console-delete");
        const event = capabilities.compareAndSet ? { ifNewerThan: { at: Date.now(), id: "evt-outside" } } : {};
        expect(await codeOf(store.put("OUTSIDE_PUT", "virtual", { adopt: false }))).toBe("name_conflict");
        expect(await codeOf(store.put("OUTSIDE_PUT", "virtual", { adopt: false, ...event }))).toBe("name_conflict");
        expect(await codeOf(store.delete("OUTSIDE_DELETE", { adopt: false }))).toBe("name_conflict");
        expect(await codeOf(store.delete("OUTSIDE_DELETE", { adopt: false, ...event }))).toBe("name_conflict");
        expect((await store.get("OUTSIDE_PUT"))?.value).toBe("console-put");
        expect((await store.get("OUTSIDE_DELETE"))?.value).toBe("console-delete");
        // A direct change (the operator's) adopts it; then it is the store's own, which adopt: false changes.
        expect(await store.put("OUTSIDE_PUT", "adopted")).toBe("updated");
        expect(await store.put("OUTSIDE_PUT", "again", { adopt: false })).toBe("updated");
        expect((await store.get("OUTSIDE_PUT"))?.value).toBe("again");
        expect(await store.delete("OUTSIDE_DELETE")).toBe("deleted");
        expect(await store.get("OUTSIDE_DELETE")).toBeUndefined();
        await store.close?.();
      });
    }

    it("keeps tags: given ones, else the previous ones, else the creation defaults", async () => {
      const store = await target.open();
      await store.put("T", "v", { meta: { whenCreated: { tags: { team: "platform" } } } });
      const created = await store.get("T");
      if (!capabilities.records.includes("tags")) {
        expect(created?.tags).toBeUndefined();
        return;
      }
      expect(created?.tags).toEqual({ team: "platform" });
      await store.put("T", "v2", { meta: { whenCreated: { tags: { team: "other" } } } });
      expect((await store.get("T"))?.tags).toEqual({ team: "platform" });
      await store.put("T", "v3", { meta: { tags: { owner: "me" } } });
      expect((await store.get("T"))?.tags).toEqual({ owner: "me" });
      await store.close?.();
    });

    it("holds unicode, empty and binary-looking values, up to its largest", async () => {
      const store = await target.open();
      // Its documented largest, else what the API's 1 MiB body carries besides the JSON around it.
      const largestBytes = capabilities.maxValueBytes ?? 1024 * 1024 - 1024;
      const largest = valueOfBytes(largestBytes, random);
      expect(Buffer.byteLength(largest, "utf8")).toBe(largestBytes);
      const values: Record<string, string> = {
        U: UNICODE,
        E: "",
        B: binaryLooking(random, 4096),
        N: 'line1\nline2\r\n\ttab "quoted" \\ backslash',
        // A leading byte order mark is part of the value (LiteLLM keeps it: httpx's text, boto3's strings).
        M: "\uFEFFsk-with-a-bom",
        L: largest,
      };
      for (const [n, v] of Object.entries(values)) {
        if (target.refusesValue?.(v)) expect(await codeOf(store.put(n, v)), n).toBe("invalid_request");
        else await store.put(n, v);
      }
      for (const [n, v] of Object.entries(values)) {
        if (target.refusesValue?.(v)) expect(await store.get(n), n).toBeUndefined();
        else expect((await store.get(n))?.value === v, n).toBe(true);
      }
      await store.close?.();
    });

    it("lands concurrent writes to one name as one of them, whole", async () => {
      const store = await target.open();
      const written = Array.from({ length: 24 }, (_, i) => `value-${i}-${"x".repeat(i * 37)}`);
      const outcomes = await Promise.all(written.map((v) => store.put("RACE", v)));
      expect(outcomes.filter((o) => o === "created")).toHaveLength(1);
      expect(outcomes.filter((o) => o === "updated")).toHaveLength(written.length - 1);
      const final = (await store.get("RACE"))?.value;
      expect(written).toContain(final);
      if (capabilities.compareAndSet) {
        // Conditional changes racing, newest first: only the first applies. A store that reads what
        // is recorded, then writes, with no queue per name, lets older ones in after it.
        const events = await Promise.all(
          Array.from({ length: 24 }, (_, i) =>
            store.put("RACE_EVENT", `at-${1_000 - i}`, { ifNewerThan: { at: 1_000 - i, id: "evt" } }),
          ),
        );
        expect(events.filter((o) => o !== "superseded")).toEqual(["created"]);
        expect((await store.get("RACE_EVENT"))?.value).toBe("at-1000");
      }
      await store.close?.();
    });

    if (target.collidingNames) {
      const [a, b] = target.collidingNames;
      it("refuses with name_conflict a name that lands on another name's key, and reads nothing for it", async () => {
        const store = await target.open();
        expect(store.keyOf(a)).toBe(store.keyOf(b));
        await store.put(a, "first");
        expect(await codeOf(store.put(b, "second"))).toBe("name_conflict");
        expect(await codeOf(store.delete(b))).toBe("name_conflict");
        expect(await store.get(b)).toBeUndefined();
        expect((await store.get(a))?.value).toBe("first");
        expect(await store.put(a, "again")).toBe("updated");
        await store.close?.();
      });

      it("a write that replaces the name on its key takes the secret over: a rename", async () => {
        const store = await target.open();
        await store.put(a, "first", { ifNewerThan: { at: 1_000, id: "e1" }, adopt: false });
        // Only the name the secret holds is taken over: replacing another is still the conflict.
        const other = { ifNewerThan: { at: 2_000, id: "e2" }, adopt: false, replaces: `${a}-other` };
        expect(await codeOf(store.put(b, "other", other))).toBe("name_conflict");
        // A key event's regeneration from alias `a` to `b` (PutOptions.replaces).
        const rename = { ifNewerThan: { at: 2_000, id: "e2" }, adopt: false, replaces: a };
        expect(await store.put(b, "second", rename)).toBe("updated");
        expect((await store.get(b))?.value).toBe("second");
        expect(await store.get(a)).toBeUndefined();
        // The secret is b's now: a write of a is the conflict, and b's own delete deletes it.
        expect(await codeOf(store.put(a, "third"))).toBe("name_conflict");
        expect(await store.delete(b)).toBe("deleted");
        await store.close?.();
      });
    }

    const { reopen } = target;
    if (reopen) {
      it("what one instance records, another reads: values, and change times and tombstones where recorded", async () => {
        const one = await target.open();
        const two = await reopen();
        const event = (at: number, id: string) => (capabilities.compareAndSet ? { ifNewerThan: { at, id } } : {});
        expect(await one.put("SHARED", "one", event(1_000, "evt-1"))).toBe("created");
        expect((await two.get("SHARED"))?.value).toBe("one");
        if (capabilities.compareAndSet) {
          expect(await two.put("SHARED", "older", event(500, "evt-0"))).toBe("superseded");
          expect((await two.get("SHARED"))?.value).toBe("one");
        }
        if (capabilities.deletes) {
          expect(await one.delete("SHARED", event(2_000, "evt-2"))).toBe("deleted");
          expect(await two.get("SHARED")).toBeUndefined();
          // The tombstone is in the backend: the other instance's redelivered create is older.
          if (capabilities.compareAndSet)
            expect(await two.put("SHARED", "one", event(1_000, "evt-1"))).toBe("superseded");
          expect(await one.get("SHARED")).toBeUndefined();
        }
        await one.close?.();
        await two.close?.();
      });
    }

    if (!capabilities.compareAndSet) return;

    it("ifNewerThan: an older change is superseded, a newer one applies", async () => {
      const store = await target.open();
      expect(await store.put("E", "at-100", { ifNewerThan: { at: 100, id: "m" } })).toBe("created");
      expect(await store.put("E", "at-50", { ifNewerThan: { at: 50, id: "z" } })).toBe("superseded");
      expect((await store.get("E"))?.value).toBe("at-100");
      expect(await store.put("E", "at-150", { ifNewerThan: { at: 150 } })).toBe("updated");
      expect(await store.delete("E", { ifNewerThan: { at: 120 } })).toBe("superseded");
      expect((await store.get("E"))?.value).toBe("at-150");
      await store.close?.();
    });

    it("ifNewerThan ties: a delete wins, then the larger event id; the same event twice changes nothing", async () => {
      const store = await target.open();
      expect(await store.put("T", "b", { ifNewerThan: { at: 100, id: "b" } })).toBe("created");
      expect(await store.put("T", "a", { ifNewerThan: { at: 100, id: "a" } })).toBe("superseded");
      expect(await store.put("T", "b", { ifNewerThan: { at: 100, id: "b" } })).toBe("superseded");
      expect(await store.put("T", "c", { ifNewerThan: { at: 100, id: "c" } })).toBe("updated");
      expect((await store.get("T"))?.value).toBe("c");
      expect(await store.delete("T", { ifNewerThan: { at: 100, id: "a" } })).toBe("deleted");
      expect(await store.put("T", "z", { ifNewerThan: { at: 100, id: "z" } })).toBe("superseded");
      expect(await store.delete("T", { ifNewerThan: { at: 100, id: "a" } })).toBe("superseded");
      expect(await store.get("T")).toBeUndefined();
      await store.close?.();
    });

    it("a delete leaves a tombstone: a redelivered older create cannot revive the name", async () => {
      const store = await target.open();
      await store.put("K", "created", { ifNewerThan: { at: 1_000, id: "evt-1" } });
      expect(await store.delete("K", { ifNewerThan: { at: 2_000, id: "evt-2" } })).toBe("deleted");
      expect(await store.put("K", "created", { ifNewerThan: { at: 1_000, id: "evt-1" } })).toBe("superseded");
      expect(await store.get("K")).toBeUndefined();
      // A delete of a name never written also leaves one.
      expect(await store.delete("N", { ifNewerThan: { at: 5_000 } })).toBe("absent");
      expect(await store.put("N", "late", { ifNewerThan: { at: 4_000 } })).toBe("superseded");
      expect(await store.get("N")).toBeUndefined();
      expect(await store.put("K", "later", { ifNewerThan: { at: 3_000 } })).toBe("created");
      expect((await store.get("K"))?.value).toBe("later");
      await store.close?.();
    });

    it("a direct write is stamped with its arrival: older events do not undo it", async () => {
      const store = await target.open();
      await store.put("D", "direct");
      expect(await store.put("D", "event", { ifNewerThan: { at: Date.now() - 60_000, id: "x" } })).toBe("superseded");
      expect(await store.delete("D", { ifNewerThan: { at: Date.now() - 60_000 } })).toBe("superseded");
      expect((await store.get("D"))?.value).toBe("direct");
      expect(await store.put("D", "newer", { ifNewerThan: { at: Date.now() + 60_000 } })).toBe("updated");
      await store.close?.();
    });

    it("a direct change after an event dated ahead of this clock stays: the event, redelivered, is superseded", async () => {
      const store = await target.open();
      // Ahead as far as the skew allows key events (a producer's clock running fast).
      const ahead = { at: Date.now() + 120_000, id: "evt-ahead" };
      expect(await store.put("R", "revoked", { ifNewerThan: ahead })).toBe("created");
      expect(await store.delete("R")).toBe("deleted");
      expect(await store.put("R", "revoked", { ifNewerThan: ahead })).toBe("superseded");
      expect(await store.get("R")).toBeUndefined();
      expect(await store.put("S", "direct", { ifNewerThan: ahead })).toBe("created");
      expect(await store.delete("S", { ifNewerThan: { ...ahead, id: "evt-delete" } })).toBe("deleted");
      expect(await store.put("S", "direct")).toBe("created");
      expect(await store.delete("S", { ifNewerThan: { ...ahead, id: "evt-delete" } })).toBe("superseded");
      expect((await store.get("S"))?.value).toBe("direct");
      await store.close?.();
    });

    it("a change recorded far ahead of this clock (past the skew): a conditional change fails, retryable; a direct one applies, stamped now", async () => {
      const store = await target.open();
      const yearAhead = { at: Date.now() + 365 * 86_400_000, id: "evt-far" };
      expect(await store.put("F", "from a clock a year ahead", { ifNewerThan: yearAhead })).toBe("created");
      // This clock may be the one behind: applied as if nothing were recorded, an old redelivered
      // event undid a newer change (a revoked key came back); held off, a bad record would block
      // the name for ever. Refused, to be retried, and in the end seen in the dead-letter queue.
      const refused = await store.delete("F", { ifNewerThan: { at: Date.now(), id: "evt-now" } }).then(
        () => "applied",
        (err: unknown) => (err as { code?: string }).code,
      );
      expect(refused).toBe("backend_unavailable");
      expect((await store.get("F"))?.value).toBe("from a clock a year ahead");
      expect(await store.delete("F")).toBe("deleted");
      expect(await store.get("F")).toBeUndefined();
      // Nor does it push a direct write's time a year ahead, past every event to come.
      expect(await store.put("G", "from a clock a year ahead", { ifNewerThan: yearAhead })).toBe("created");
      expect(await store.put("G", "direct")).toBe("updated");
      expect(await store.put("G", "event", { ifNewerThan: { at: Date.now() + 1_000, id: "evt-next" } })).toBe(
        "updated",
      );
      expect((await store.get("G"))?.value).toBe("event");
      await store.close?.();
    });
  });
}
