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

  it("compares 32-byte digests in constant time, once per check, whatever is presented", () => {
    const presented = [
      `Bearer ${key}`,
      `Bearer ${key.slice(0, -1)}X`, // wrong in the last character
      `Bearer X${key.slice(1)}`, // wrong in the first
      "Bearer x", // another length
      `Bearer ${key}${key}`,
      undefined, // no header at all
      "Basic abc",
    ];
    compared.length = 0;
    for (const header of presented) check(header);
    expect(compared).toEqual(presented.map(() => [32, 32]));
  });
});
