import { describe, expect, it } from "vitest";
import { InvalidName } from "../../core/src/errors";
import { nameFromPath, originForm, validateName } from "../../core/src/names";

describe("validateName", () => {
  it.each([
    "OPENAI_API_KEY",
    "litellm/team-a",
    "prod/my-service-key",
    "team/user@example.com",
    "release-1.0..2",
    "my..key",
    "a=b+c",
    "a".repeat(256),
    "0",
  ])("accepts %s", (name) => {
    expect(validateName(name)).toBe(name);
  });

  it.each([
    ["empty", ""],
    ["over 256 characters", "a".repeat(257)],
    ["a '..' segment", "a/../b"],
    ["a leading '..' segment", "../b"],
    ["a trailing '..' segment", "a/.."],
    ["a '.' segment", "a/./b"],
    ["an empty segment", "a//b"],
    ["a trailing slash", "a/"],
    ["a leading slash", "/a"],
    ["a newline", "a\nb"],
    ["a NUL", "a\u0000b"],
    ["DEL", "a\u007fb"],
    ["U+0085", "a\u0085b"],
    ["U+2028", "a\u2028b"],
    ["a space", "a b"],
    ["a query", "a?b=1"],
    ["a fragment", "a#b"],
    ["a backslash", "a\\b"],
    ["a leading dot", ".env"],
    ["a non-ASCII letter", "clé"],
  ])("refuses %s", (_, name) => {
    expect(() => validateName(name)).toThrow(InvalidName);
  });

  it("never echoes the input in its message", () => {
    expect.assertions(1);
    try {
      validateName("secret-looking\nvalue-xyz");
    } catch (err) {
      expect((err as Error).message).not.toContain("value-xyz");
    }
  });
});

describe("originForm", () => {
  it("takes the scheme and authority off an absolute-form target, leaving origin form and * as they came", () => {
    for (const [target, expected] of [
      ["/v1/secrets/a?refresh=true", "/v1/secrets/a?refresh=true"],
      ["http://h/v1/secrets/a", "/v1/secrets/a"],
      ["HTTPS://h:8443/v1/secrets/a/../b?x", "/v1/secrets/a/../b?x"],
      ["http://user@h", "/"],
      ["http://h?x=1", "/?x=1"],
      ["http://h#f", "/#f"],
      ["*", "*"],
      ["v1/secrets/a", "v1/secrets/a"],
    ]) {
      expect(originForm(target as string), target).toBe(expected);
    }
  });
});

describe("nameFromPath", () => {
  it("decodes percent-encoding and drops the query", () => {
    expect(nameFromPath("/v1/secrets/litellm%2Fteam-a?refresh=true", "/v1/secrets/")).toBe("litellm/team-a");
    expect(nameFromPath("/v1/secrets/a/b", "/v1/secrets/")).toBe("a/b");
  });

  it("decodes dot segments however they are written into names validateName refuses", () => {
    for (const raw of [
      "/v1/secrets/a/../b",
      "/v1/secrets/a/%2e%2e/b",
      "/v1/secrets/a/%2E./b",
      "/v1/secrets/a%2F..%2Fb",
    ]) {
      expect(() => validateName(nameFromPath(raw, "/v1/secrets/"))).toThrow(InvalidName);
    }
  });

  it("refuses malformed percent-encoding and encoded control characters", () => {
    expect(() => nameFromPath("/v1/secrets/a%zz", "/v1/secrets/")).toThrow(InvalidName);
    expect(() => validateName(nameFromPath("/v1/secrets/a%0Ab", "/v1/secrets/"))).toThrow(InvalidName);
    expect(() => validateName(nameFromPath("/v1/secrets/", "/v1/secrets/"))).toThrow(InvalidName);
    expect(() => nameFromPath("/v1/other/a", "/v1/secrets/")).toThrow(InvalidName);
  });
});
