import { createCipheriv, createHash, randomBytes } from "node:crypto";
import nacl from "tweetnacl";
import { describe, expect, it } from "vitest";
import { KeyRing, openSecret, sealSecret } from "../../core/src/crypto";
import { DecryptFailed } from "../../core/src/errors";

// The interop vector of reference/litellm-crypto-events-tls.md, made with PyNaCl and Python's
// cryptography following LiteLLM's code (fixed nonces only to make it reproducible).
const K = "sk-test-salt-key-1234";
const PLAIN = "sk-proj-TEST-upstream-key/+?=ü";
const VECTORS = {
  legacyStandard: "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7BvsM/bhZXcN1n6O0hrajzGLa40ADzlEQY1TfenFnhkkLNe33NbZnwb/4RSbGDc8=",
  legacyUrlsafe: "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7BvsM_bhZXcN1n6O0hrajzGLa40ADzlEQY1TfenFnhkkLNe33NbZnwb_4RSbGDc8=",
  v3: "v3:gcm:ZGVmZ2hpamtsbW5vQ1Tnd2iQ_g7CVVSUUSgdjNsekiIAVe8Eeia3j8UdvJBGppHq5wP_0PTs0tQTfa4=",
  v2: "v2:gcm:ZGVmZ2hpamtsbW5vyE8HeneVsF9dS1dz3B5KWmU16ADifHUCOOSfvFjgImVIYRPjzQpsltv-tHbAz04=",
};
const EMPTY_LEGACY = "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7jpUDHqzUDz42zJyB0VEw+Q==";

const ring = new KeyRing(K);

function expectDecryptFailed(ciphertext: string, keys = ring): void {
  let caught: unknown;
  try {
    openSecret(ciphertext, keys);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(DecryptFailed);
  expect((caught as DecryptFailed).code).toBe("decrypt_failed");
  // The message never echoes the input.
  if (ciphertext.length > 8) expect((caught as Error).message).not.toContain(ciphertext.slice(0, 12));
}

describe("reading LiteLLM's formats", () => {
  it.each(Object.entries(VECTORS))("opens the %s reference vector", (_, ciphertext) => {
    expect(openSecret(ciphertext, ring)).toBe(PLAIN);
  });

  it("opens the legacy empty-plaintext vector", () => {
    expect(openSecret(EMPTY_LEGACY, ring)).toBe("");
  });

  it("reads formats whatever algorithm it writes", () => {
    const gcmRing = new KeyRing(K, [], "aes-256-gcm");
    for (const ciphertext of Object.values(VECTORS)) expect(openSecret(ciphertext, gcmRing)).toBe(PLAIN);
  });

  it("derives the documented keys (SHA-256 for NaCl and v2, HKDF for v3)", () => {
    expect(ring.current.sha256.toString("hex")).toBe(
      "b941ba01471b869a92d5a86aa8ce169141c4ddfc650fd5cf85efad17b27a602a",
    );
    expect(ring.current.hkdf.toString("hex")).toBe("7ab5a04b6204f3281ffcf74bac846e549a4c7ea7a284c1a98c7844cdf02df299");
  });
});

describe("writing", () => {
  it("writes NaCl SecretBox as padded base64url: nonce(24) || tag(16) || ciphertext", () => {
    for (const plaintext of ["", "a", "ab", "abc", PLAIN, "x".repeat(1000)]) {
      const ciphertext = sealSecret(plaintext, ring);
      expect(ciphertext).toMatch(/^[A-Za-z0-9_-]*={0,2}$/);
      expect(ciphertext.length % 4).toBe(0);
      const raw = Buffer.from(ciphertext, "base64url");
      expect(raw.length).toBe(40 + Buffer.byteLength(plaintext));
      // Opening it with tweetnacl directly, as LiteLLM's layout says, gives the plaintext.
      const opened = nacl.secretbox.open(raw.subarray(24), raw.subarray(0, 24), ring.current.sha256);
      expect(Buffer.from(opened as Uint8Array).toString("utf8")).toBe(plaintext);
    }
  });

  it("uses a fresh nonce each time", () => {
    expect(sealSecret(PLAIN, ring)).not.toBe(sealSecret(PLAIN, ring));
  });

  it("writes v3:gcm: with the HKDF key under aes-256-gcm", () => {
    const gcmRing = new KeyRing(K, [], "aes-256-gcm");
    const ciphertext = sealSecret(PLAIN, gcmRing);
    expect(ciphertext.startsWith("v3:gcm:")).toBe(true);
    const body = Buffer.from(ciphertext.slice(7), "base64url");
    expect(body.length).toBe(12 + Buffer.byteLength(PLAIN) + 16);
    expect(openSecret(ciphertext, gcmRing)).toBe(PLAIN);
    expect(openSecret(ciphertext, ring)).toBe(PLAIN);
  });

  it.each([
    ["empty", ""],
    ["unicode", "ключ-🔑-鍵-\u{1F600}-é"],
    ["64 KiB", "k".repeat(64 * 1024)],
  ])("round-trips %s plaintexts in both algorithms", (_, plaintext) => {
    for (const algorithm of ["xsalsa20-poly1305", "aes-256-gcm"] as const) {
      const keys = new KeyRing(K, [], algorithm);
      expect(openSecret(sealSecret(plaintext, keys), keys)).toBe(plaintext);
    }
  });
});

describe("previous salt keys", () => {
  it("opens values sealed under a previous key, and only when it is listed", () => {
    const old = new KeyRing("old-salt-key");
    const sealed = sealSecret(PLAIN, old);
    const gcmSealed = sealSecret(PLAIN, new KeyRing("old-salt-key", [], "aes-256-gcm"));
    const rotated = new KeyRing("new-salt-key", ["other-key", "old-salt-key"]);
    expect(openSecret(sealed, rotated)).toBe(PLAIN);
    expect(openSecret(gcmSealed, rotated)).toBe(PLAIN);
    expectDecryptFailed(sealed, new KeyRing("new-salt-key"));
    // New writes use the current key only.
    expect(openSecret(sealSecret(PLAIN, rotated), new KeyRing("new-salt-key"))).toBe(PLAIN);
  });
});

describe("bad ciphertexts fail with decrypt_failed, never a partial value", () => {
  const samples = {
    nacl: sealSecret(PLAIN, ring),
    v3: sealSecret(PLAIN, new KeyRing(K, [], "aes-256-gcm")),
    v2: VECTORS.v2,
    legacy: VECTORS.legacyStandard,
  };

  it.each(Object.entries(samples))("rejects every single-byte change of a %s ciphertext", (_, ciphertext) => {
    const prefix = ciphertext.startsWith("v") ? 7 : 0;
    const raw = Buffer.from(ciphertext.slice(prefix), "base64");
    for (let i = 0; i < raw.length; i++) {
      const tampered = Buffer.from(raw);
      tampered[i] = (tampered[i] as number) ^ 0x01;
      expectDecryptFailed(ciphertext.slice(0, prefix) + tampered.toString("base64"));
    }
  });

  it.each(Object.entries(samples))("rejects truncations of a %s ciphertext", (_, ciphertext) => {
    const prefix = ciphertext.startsWith("v") ? 7 : 0;
    const raw = Buffer.from(ciphertext.slice(prefix), "base64");
    for (const keep of [0, 1, 11, 12, 23, 24, 27, 28, 39, 40, raw.length - 1]) {
      const cut = raw.subarray(0, keep).toString("base64");
      if (cut === "") continue;
      expectDecryptFailed(ciphertext.slice(0, prefix) + cut);
    }
  });

  it("rejects the wrong key for every format", () => {
    for (const ciphertext of [...Object.values(samples), VECTORS.v3]) {
      expectDecryptFailed(ciphertext, new KeyRing("some-other-key"));
    }
  });

  it("rejects input that is not padded base64", () => {
    for (const bad of [
      "",
      "not base64!",
      "abc",
      `${samples.nacl.replace(/=+$/, "")}x`,
      "v3:gcm:",
      "v3:gcm:%%%%",
      "  ",
    ]) {
      expectDecryptFailed(bad);
    }
  });

  it("rejects a box whose plaintext is not UTF-8", () => {
    const nonce = randomBytes(24);
    const box = nacl.secretbox(Buffer.from([0xff, 0xfe, 0x80]), nonce, ring.current.sha256);
    expectDecryptFailed(Buffer.concat([nonce, box]).toString("base64"));
  });

  it("rejects a GCM body that authenticates under SHA-256 but is labelled v3", () => {
    const key = createHash("sha256").update(K).digest();
    const nonce = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", key, nonce);
    const body = Buffer.concat([nonce, cipher.update("x"), cipher.final(), cipher.getAuthTag()]);
    const padded = body.toString("base64").replaceAll("+", "-").replaceAll("/", "_");
    expect(openSecret(`v2:gcm:${padded}`, ring)).toBe("x");
    expectDecryptFailed(`v3:gcm:${padded}`);
    // Python's urlsafe_b64decode needs the padding, so we refuse unpadded input too.
    expectDecryptFailed(`v2:gcm:${body.toString("base64url")}`);
  });
});
