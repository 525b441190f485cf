import { createHash } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { bearerCheck } from "../../core/src/auth";
import { newKey } from "../helpers";

// Record what reaches node:crypto's comparison (the real function still does the work).
const compared = vi.hoisted(() => [] as [number, number][]);
vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  return {
    ...real,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      compared.push([a.byteLength, b.byteLength]);
      return real.timingSafeEqual(a, b);
    },
  };
});

describe("bearerCheck", () => {
  const key = newKey();
  const check = bearerCheck(key);

  it("accepts the master key as a bearer token, and nothing else", () => {
    expect(check(`Bearer ${key}`)).toBe(true);
    expect(check(`bearer  ${key} `)).toBe(true);
    for (const header of [
      undefined,
      "",
      "Bearer",
      "Bearer ",
      `Basic ${key}`,
      // The scheme, then whitespace: not any character in its place.
      `Bearer_${key}`,
      `Bearer:${key}`,
      key,
      `Bearer ${key}x`,
      `Bearer ${key.slice(0, -1)}`,
      `Bearer x${key.slice(1)}`,
      `Bearer ${key.toUpperCase()}`,
      `Bearer ${newKey()}`,
    ]) {
      expect(check(header), String(header)).toBe(false);
    }
  });

  it("takes the key in x-litellm-api-key instead, and then only there", () => {
    expect(check(undefined, key)).toBe(true);
    expect(check("AWS4-HMAC-SHA256 Credential=x", ` ${key} `)).toBe(true);
    expect(check(`Bearer ${key}`, "wrong")).toBe(false);
    expect(check(`Bearer ${key}`, "")).toBe(false);
    expect(check(undefined, key.slice(1))).toBe(false);
  });

  it("compares buffers of one width in constant time, once per check, whatever is presented", () => {
    const presented = [
      `Bearer ${key}`,
      `Bearer ${key.slice(0, -1)}X`, // wrong in the last character
      `Bearer X${key.slice(1)}`, // wrong in the first
      "Bearer x", // another length
      `Bearer ${key}${key}`,
      `Bearer ${"x".repeat(1000)}`, // longer than the width
      undefined, // no header at all
      "Basic abc",
    ];
    compared.length = 0;
    for (const header of presented) check(header);
    expect(compared).toEqual(presented.map(() => [256, 256]));
  });

  it("refuses the master key with more after it, even a character that does not fit in the width", () => {
    // A key of 252 bytes fills the width but 4: a 4-byte character after it fits exactly, one more does not.
    for (const size of [1, 51, 251, 252, 253, 255, 256, 300]) {
      const long = "k".repeat(size);
      const longCheck = bearerCheck(long);
      expect(longCheck(`Bearer ${long}`), `${size} bytes`).toBe(true);
      for (const extra of ["x", "\u0000", "\u00e9", "\u20ac", "\u{1F511}", "\u{1F511}\u{1F511}"]) {
        expect(longCheck(`Bearer ${long}${extra}`), `${size} bytes + ${JSON.stringify(extra)}`).toBe(false);
      }
      expect(longCheck(`Bearer ${long.slice(1)}`), `${size - 1} of ${size} bytes`).toBe(false);
    }
  });

  it("takes a key of any characters, compared by its UTF-8 bytes", () => {
    const unicode = "sk-\u00e9\u20ac\u{1F511}-key";
    const unicodeCheck = bearerCheck(unicode);
    expect(unicodeCheck(`Bearer ${unicode}`)).toBe(true);
    expect(unicodeCheck(`Bearer ${unicode.normalize("NFD")}`)).toBe(false); // other bytes for the same text
    expect(unicodeCheck(undefined, "sk-\u00e9\u20ac\u{1F511}-kez")).toBe(false);
  });

  it("tells the caller's fingerprint: the SHA-256 of the key presented, right or wrong, or none", () => {
    const sha = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 8);
    const seen: { caller?: string } = {};
    check(`Bearer ${key}`, undefined, seen);
    expect(seen.caller).toBe(sha(key));
    check("Bearer wrong-key", undefined, seen);
    expect(seen.caller).toBe(sha("wrong-key"));
    check(undefined, " other ", seen);
    expect(seen.caller).toBe(sha("other"));
    check(undefined, undefined, seen);
    expect(seen.caller).toBe("none");
  });
});
