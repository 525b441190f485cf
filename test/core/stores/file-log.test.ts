// The file store's log format: framing, checksums, torn tails and key check values.
import { describe, expect, it } from "vitest";
import { KeyRing } from "../../../core/src/crypto";
import { SecretsError } from "../../../core/src/errors";
import { StoreCorrupt } from "../../../core/src/store-errors";
import { type Batch, frame, type Header, keyCheckOf, parseLog } from "../../../core/src/stores/file-log";

const header: Header = { format: "llm-secrets/file-store", version: 2, seq: 0, keys: ["kcv"] };
const batch = (n: string, s: number): Batch => ({ changes: [{ s, n, t: 1000, w: 1000, v: "sealed" }] });

describe("file store log", () => {
  it("reads back what it frames, line by line, from the start or from an offset", () => {
    const lines = [frame(header), frame(batch("A", 1)), frame({ ...batch("B", 2), keys: ["other"] })];
    const bytes = Buffer.concat(lines);
    const all = parseLog(bytes, 0);
    expect(all.header).toEqual(header);
    expect(all.batches.map((b) => b.batch)).toEqual([batch("A", 1), { ...batch("B", 2), keys: ["other"] }]);
    expect(all.consumed).toBe(bytes.length);
    expect(all.tail).toBe("none");
    const offset = (lines[0] as Buffer).length;
    const rest = parseLog(bytes.subarray(offset), offset);
    expect(rest.header).toBeUndefined();
    expect(rest.batches).toHaveLength(2);
    expect(bytes.toString("utf8").split("\n")[1]).toMatch(/^[0-9a-f]{8} \{"changes":/);
  });

  it("stops before an incomplete last line and before a damaged one, and says which", () => {
    const whole = Buffer.concat([frame(header), frame(batch("A", 1))]);
    const next = frame(batch("B", 2));
    const cut = parseLog(Buffer.concat([whole, next.subarray(0, next.length - 5)]), 0);
    expect(cut.consumed).toBe(whole.length);
    expect(cut.tail).toBe("incomplete");
    expect(cut.batches).toHaveLength(1);

    // A power loss may leave zeros where a line's pages were not written: a torn line, dropped.
    const holed = Buffer.from(next);
    holed.fill(0, 10, 40);
    const damaged = parseLog(Buffer.concat([whole, holed]), 0);
    expect(damaged.consumed).toBe(whole.length);
    expect(damaged.tail).toBe("damaged");

    const zeros = parseLog(Buffer.concat([whole, Buffer.alloc(64), Buffer.from("\n")]), 0);
    expect(zeros.tail).toBe("damaged");
    expect(zeros.batches).toHaveLength(1);

    // One byte of a whole last line changed is no crash's doing: that acknowledged write is not
    // dropped (before, it was, and the next writer truncated it).
    const flipped = Buffer.from(next);
    flipped[20] = (flipped[20] as number) ^ 0x01;
    expect(() => parseLog(Buffer.concat([whole, flipped]), 0)).toThrow(/whole last line changed/);
  });

  it("refuses a damaged line that is followed by more: not a crash's doing", () => {
    const bad = frame(batch("A", 1));
    bad[15] = (bad[15] as number) ^ 0x01;
    const bytes = Buffer.concat([frame(header), bad, frame(batch("B", 2))]);
    expect(() => parseLog(bytes, 0)).toThrow(SecretsError);
    try {
      parseLog(bytes, 0);
    } catch (err) {
      expect((err as SecretsError).code).toBe("store_corrupt");
    }
  });

  it("refuses a changed byte that leaves the JSON valid and well shaped: only the checksum catches it", () => {
    // A bit flipped in a name ("NAME_A" read as "OAME_A") or a time's digit (1000 read as 1001)
    // would otherwise be taken as another name, or another time, without a word.
    const good = frame(batch("NAME_A", 1));
    for (const [from, to] of [
      ['"n":"NAME_A"', '"n":"OAME_A"'],
      ['"t":1000', '"t":1001'],
    ] as const) {
      const at = good.indexOf(from) + to.split("").findIndex((ch, i) => ch !== from[i]);
      const bad = Buffer.from(good);
      bad[at] = (bad[at] as number) ^ 0x01;
      expect(bad.toString("utf8")).toContain(to);
      const bytes = Buffer.concat([frame(header), bad, frame(batch("B", 2))]);
      expect(() => parseLog(bytes, 0), to).toThrow(/damaged at byte/);
    }
  });

  it("refuses lines of the wrong shape even with a right checksum", () => {
    const wrong = frame({ changes: [{ s: "1", n: "A" }] } as unknown as Batch);
    expect(() => parseLog(Buffer.concat([frame(header), wrong]), 0)).toThrow(StoreCorrupt);
    // One field of the wrong type each, the rest well formed: a name, time, sealed value, tag value
    // or key check value of another type would otherwise reach the store as if it were right.
    const change = batch("A", 1).changes[0];
    for (const wrongShape of [
      { changes: [{ ...change, n: 1 }] },
      { changes: [{ ...change, t: "1000" }] },
      { changes: [{ ...change, v: 5 }] },
      { changes: [{ ...change, g: { a: 1 } }] },
      { ...batch("A", 1), keys: [1] },
    ]) {
      const line = frame(wrongShape as unknown as Batch);
      const label = JSON.stringify(wrongShape);
      expect(() => parseLog(Buffer.concat([frame(header), line, frame(batch("B", 2))]), 0), label).toThrow(
        StoreCorrupt,
      );
    }
    const noHeader = parseLog(frame(batch("A", 1)), 0);
    expect(noHeader.header).toBeUndefined();
    expect(noHeader.tail).toBe("damaged");
    expect(() => parseLog(frame({ ...header, version: 3 } as unknown as Header), 0)).toThrow(/version 3/);
  });

  it("key check values tell keys apart and reveal neither", () => {
    const a = new KeyRing("llm-secrets-TEST-ONLY-a");
    const b = new KeyRing("llm-secrets-TEST-ONLY-b");
    expect(keyCheckOf(a.current)).toBe(keyCheckOf(new KeyRing("llm-secrets-TEST-ONLY-a").current));
    expect(keyCheckOf(a.current)).not.toBe(keyCheckOf(b.current));
    expect(keyCheckOf(a.current)).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(keyCheckOf(a.current)).not.toContain(a.current.sha256.toString("base64url").slice(0, 8));
  });
});
