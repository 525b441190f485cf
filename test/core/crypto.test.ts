import { createCipheriv, createHash } from "node:crypto";
import nacl from "tweetnacl";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import * as loadedCrypto from "../../core/src/crypto";
import * as loadedErrors from "../../core/src/errors";
import { randomBytesSeeded, seededRandom, TEST_SEED } from "../helpers";

type CryptoModule = typeof loadedCrypto;
type ErrorsModule = typeof loadedErrors;
interface Backend {
  crypto: CryptoModule;
  errors: ErrorsModule;
}

/** The module as the app uses it, after `cryptoReady()`: SecretBox runs on libsodium. */
async function withLibsodium(): Promise<Backend> {
  await loadedCrypto.cryptoReady();
  return { crypto: loadedCrypto, errors: loadedErrors };
}

/**
 * A fresh copy of the module (and of the errors module it throws from) whose libsodium cannot load:
 * it stays on tweetnacl, the fallback used until libsodium is ready.
 */
async function withoutLibsodium(): Promise<Backend> {
  vi.resetModules();
  vi.doMock("libsodium-wrappers", () => {
    throw new Error("libsodium withheld by the test");
  });
  try {
    const crypto = await import("../../core/src/crypto");
    const errors = await import("../../core/src/errors");
    // The load fails once, while the mock is in place, and is not tried again.
    await expect(crypto.cryptoReady()).rejects.toThrow();
    return { crypto, errors };
  } finally {
    vi.doUnmock("libsodium-wrappers");
  }
}

/** A fresh copy of the module, libsodium not loaded yet. */
async function freshModule(): Promise<Backend> {
  vi.resetModules();
  const crypto = await import("../../core/src/crypto");
  const errors = await import("../../core/src/errors");
  return { crypto, errors };
}

let heaps = 0;

/**
 * A fresh copy of the module, loaded on a libsodium of its own: a new WebAssembly heap, laid out as
 * in a process that has just started, not as the tests before left the one they share.
 */
async function withFreshHeap(): Promise<Backend> {
  vi.resetModules();
  // The wrappers' ESM build instantiates libsodium when it is evaluated: another URL, another heap.
  const url = `${import.meta.resolve("libsodium-wrappers")}?heap=${++heaps}`;
  vi.doMock("libsodium-wrappers", () => import(url));
  try {
    const crypto = await import("../../core/src/crypto");
    const errors = await import("../../core/src/errors");
    await crypto.cryptoReady();
    return { crypto, errors };
  } finally {
    vi.doUnmock("libsodium-wrappers");
  }
}

const BACKENDS = { libsodium: withLibsodium, tweetnacl: withoutLibsodium } as const;

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

/** Opens `ciphertext` and returns the DecryptFailed it must throw (whose message never echoes the input). */
function decryptFailure(c: Backend, ciphertext: string, keys: loadedCrypto.KeyRing): Error {
  let caught: unknown;
  try {
    c.crypto.openSecret(ciphertext, keys);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(c.errors.DecryptFailed);
  expect((caught as loadedErrors.DecryptFailed).code).toBe("decrypt_failed");
  if (ciphertext.length > 8) expect((caught as Error).message).not.toContain(ciphertext.slice(0, 12));
  return caught as Error;
}

describe.each(Object.keys(BACKENDS) as (keyof typeof BACKENDS)[])("SecretBox on %s", (backend) => {
  let c: Backend;
  let KeyRing: CryptoModule["KeyRing"];
  let sealSecret: CryptoModule["sealSecret"];
  let openSecret: CryptoModule["openSecret"];
  let ring: loadedCrypto.KeyRing;
  const expectDecryptFailed = (ciphertext: string, keys = ring) => decryptFailure(c, ciphertext, keys);

  beforeAll(async () => {
    c = await BACKENDS[backend]();
    ({ KeyRing, sealSecret, openSecret } = c.crypto);
    ring = new KeyRing(K);
    expect(c.crypto.cryptoBackend()).toBe(backend);
  });

  afterAll(() => {
    expect(c.crypto.cryptoBackend()).toBe(backend);
  });

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
      expect(ring.current.hkdf.toString("hex")).toBe(
        "7ab5a04b6204f3281ffcf74bac846e549a4c7ea7a284c1a98c7844cdf02df299",
      );
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
    const SAMPLES = ["nacl", "v3", "v2", "legacy"] as const;
    let samples: Record<(typeof SAMPLES)[number], string>;
    beforeAll(() => {
      samples = {
        nacl: sealSecret(PLAIN, ring),
        v3: sealSecret(PLAIN, new KeyRing(K, [], "aes-256-gcm")),
        v2: VECTORS.v2,
        legacy: VECTORS.legacyStandard,
      };
    });

    it.each(SAMPLES)("rejects every single-byte change of a %s ciphertext", (sample) => {
      const ciphertext = samples[sample];
      const prefix = ciphertext.startsWith("v") ? 7 : 0;
      const raw = Buffer.from(ciphertext.slice(prefix), "base64");
      for (let i = 0; i < raw.length; i++) {
        const tampered = Buffer.from(raw);
        tampered[i] = (tampered[i] as number) ^ 0x01;
        expectDecryptFailed(ciphertext.slice(0, prefix) + tampered.toString("base64"));
      }
    });

    it.each(SAMPLES)("rejects truncations of a %s ciphertext", (sample) => {
      const ciphertext = samples[sample];
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
      const nonce = randomBytesSeeded(24);
      const box = nacl.secretbox(Buffer.from([0xff, 0xfe, 0x80]), nonce, ring.current.sha256);
      expectDecryptFailed(Buffer.concat([nonce, box]).toString("base64"));
    });

    it("rejects a GCM body that authenticates under SHA-256 but is labelled v3", () => {
      const key = createHash("sha256").update(K).digest();
      const nonce = randomBytesSeeded(12);
      const cipher = createCipheriv("aes-256-gcm", key, nonce);
      const body = Buffer.concat([nonce, cipher.update("x"), cipher.final(), cipher.getAuthTag()]);
      const padded = body.toString("base64").replaceAll("+", "-").replaceAll("/", "_");
      expect(openSecret(`v2:gcm:${padded}`, ring)).toBe("x");
      expectDecryptFailed(`v3:gcm:${padded}`);
      // Python's urlsafe_b64decode needs the padding, so we refuse unpadded input too.
      expectDecryptFailed(`v2:gcm:${body.toString("base64url")}`);
      // It skips whitespace: a ciphertext wrapped, or pasted with spaces, opens.
      const wrapped = `${padded.slice(0, 8)}\r\n${padded.slice(8, 20)} \t${padded.slice(20)}\n`;
      expect(openSecret(`v2:gcm:${wrapped}`, ring)).toBe("x");
      expect(openSecret(sealSecret("wrapped", ring).replace(/(.{16})/g, "$1\n"), ring)).toBe("wrapped");
      expectDecryptFailed(`v2:gcm:${padded.slice(0, 8)}*${padded.slice(8)}`);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// libsodium (the fast path) and tweetnacl (the reference and the fallback) are interchangeable

const KIB = 1024;
const MIB = 1024 * KIB;
const seeded = seededRandom(`${TEST_SEED}:crypto`);

/** ASCII text of exactly `size` bytes from the seeded generator. */
function asciiText(size: number): string {
  return randomBytesSeeded(Math.ceil((size * 3) / 4) + 3)
    .toString("base64url")
    .slice(0, size);
}

const CROSS_PLAINTEXTS: [string, string][] = [
  ["0 B", ""],
  ["1 B", "k"],
  ["64 B", asciiText(64)],
  ["1 KiB", asciiText(KIB)],
  ["1 MiB", asciiText(MIB)],
  ["unicode", "ключ 🔑 鍵 é/+?= \u{1F600} \u0000 ünï"],
  ["unicode 1 MiB", "é🔑".repeat(MIB / 6)],
  ["a leading BOM", "\uFEFFsk-bom"],
];

/** tweetnacl's SecretBox in LiteLLM's layout, padded base64url (what PyNaCl + urlsafe_b64encode write). */
function tweetnaclSeal(plaintext: string, key: Uint8Array, encoding: "base64url" | "base64" = "base64url"): string {
  const nonce = randomBytesSeeded(24); // seeded: a failing run is replayed with LLM_SECRETS_TEST_SEED
  const raw = Buffer.concat([nonce, nacl.secretbox(Buffer.from(plaintext, "utf8"), nonce, key)]);
  const text = raw.toString(encoding);
  return text + "=".repeat((4 - (text.length % 4)) % 4);
}

describe("libsodium and tweetnacl make and read the same bytes", () => {
  const ring = new loadedCrypto.KeyRing(K);

  beforeAll(async () => {
    await loadedCrypto.cryptoReady();
    expect(loadedCrypto.cryptoBackend()).toBe("libsodium");
  });

  it.each(CROSS_PLAINTEXTS)("what libsodium seals (%s), tweetnacl opens, byte for byte", (_, plaintext) => {
    const sealed = loadedCrypto.sealSecret(plaintext, ring);
    expect(sealed.length % 4).toBe(0);
    const raw = Buffer.from(sealed, "base64url");
    const nonce = raw.subarray(0, 24);
    // The same nonce and key give tweetnacl's exact bytes.
    const expected = nacl.secretbox(Buffer.from(plaintext, "utf8"), nonce, ring.current.sha256);
    expect(raw.subarray(24).equals(Buffer.from(expected))).toBe(true);
    const opened = nacl.secretbox.open(raw.subarray(24), nonce, ring.current.sha256);
    expect(opened).not.toBeNull();
    expect(Buffer.from(opened as Uint8Array).toString("utf8")).toBe(plaintext);
  });

  it.each(CROSS_PLAINTEXTS)("what tweetnacl seals (%s), libsodium opens, in either alphabet", (_, plaintext) => {
    for (const encoding of ["base64url", "base64"] as const) {
      expect(loadedCrypto.openSecret(tweetnaclSeal(plaintext, ring.current.sha256, encoding), ring)).toBe(plaintext);
    }
  });

  it("seals lone surrogates as U+FFFD on both, as Buffer.from and Python's surrogate handling would refuse", () => {
    const sealed = loadedCrypto.sealSecret("a\uD800b", ring);
    const raw = Buffer.from(sealed, "base64url");
    const opened = nacl.secretbox.open(raw.subarray(24), raw.subarray(0, 24), ring.current.sha256);
    expect(Buffer.from(opened as Uint8Array).toString("hex")).toBe("61efbfbd62");
  });

  it("keeps a leading U+FEFF when opening, as Python's bytes.decode('utf-8') does", () => {
    expect(loadedCrypto.openSecret(tweetnaclSeal("\uFEFFx", ring.current.sha256), ring)).toBe("\uFEFFx");
  });

  it("seals every byte of 3-byte UTF-8 characters (the scratch room is 3 bytes per UTF-16 unit)", () => {
    // Guards the bound libsodium's path reserves and writes: at 2 bytes a unit, "€€€" sealed as "€€".
    const box = new loadedCrypto.MemoryBox();
    for (const plaintext of ["€€€", "日本語の鍵", "€".repeat(16 * KIB), "日本語の鍵".repeat(3000)]) {
      const label = `${plaintext.slice(0, 5)} (${plaintext.length} units)`;
      const sealed = loadedCrypto.sealSecret(plaintext, ring);
      expect(Buffer.from(sealed, "base64url").length, label).toBe(40 + Buffer.byteLength(plaintext, "utf8"));
      expect(loadedCrypto.openSecret(sealed, ring), label).toBe(plaintext);
      const raw = Buffer.from(sealed, "base64url");
      const opened = nacl.secretbox.open(raw.subarray(24), raw.subarray(0, 24), ring.current.sha256);
      expect(Buffer.from(opened as Uint8Array).toString("utf8"), label).toBe(plaintext);
      expect(box.open(box.seal(plaintext)), label).toBe(plaintext);
    }
  });

  it("opens under a previous key after the current one fails, on the same decoded bytes", () => {
    const old = new loadedCrypto.KeyRing("old-salt-key");
    const rotated = new loadedCrypto.KeyRing("new-salt-key", ["other-1", "other-2", "old-salt-key"]);
    for (const [, plaintext] of CROSS_PLAINTEXTS.slice(0, 4)) {
      expect(loadedCrypto.openSecret(tweetnaclSeal(plaintext, old.current.sha256), rotated)).toBe(plaintext);
      expect(loadedCrypto.openSecret(loadedCrypto.sealSecret(plaintext, old), rotated)).toBe(plaintext);
    }
  });
});

describe("cryptoReady()", () => {
  it("before it, seal and open use tweetnacl; after it, libsodium; each reads what the other wrote", async () => {
    const fresh = await freshModule();
    const ring = new fresh.crypto.KeyRing(K);
    const plaintexts = CROSS_PLAINTEXTS.map(([, p]) => p);

    // Synchronously, before the module could load anything: tweetnacl.
    expect(fresh.crypto.cryptoBackend()).toBe("tweetnacl");
    const before = plaintexts.map((p) => fresh.crypto.sealSecret(p, ring));
    expect(before.map((s) => fresh.crypto.openSecret(s, ring))).toEqual(plaintexts);
    expect(fresh.crypto.cryptoBackend()).toBe("tweetnacl");

    const ready = fresh.crypto.cryptoReady();
    expect(fresh.crypto.cryptoReady()).toBe(ready); // idempotent: one load
    await ready;
    expect(fresh.crypto.cryptoBackend()).toBe("libsodium");
    const after = plaintexts.map((p) => fresh.crypto.sealSecret(p, ring));
    // After reads before, and a module still on tweetnacl reads after.
    expect(before.map((s) => fresh.crypto.openSecret(s, ring))).toEqual(plaintexts);
    const stuck = await withoutLibsodium();
    const stuckRing = new stuck.crypto.KeyRing(K);
    expect(after.map((s) => stuck.crypto.openSecret(s, stuckRing))).toEqual(plaintexts);
    expect(stuck.crypto.cryptoBackend()).toBe("tweetnacl");
  });

  it("the first seal or open starts loading libsodium in the background", async () => {
    const fresh = await freshModule();
    const ring = new fresh.crypto.KeyRing(K);
    fresh.crypto.openSecret(fresh.crypto.sealSecret("x", ring), ring);
    expect(fresh.crypto.cryptoBackend()).toBe("tweetnacl");
    await vi.waitFor(() => expect(fresh.crypto.cryptoBackend()).toBe("libsodium"), { timeout: 10_000 });
  });

  it("when libsodium cannot load, it rejects and seal and open go on with tweetnacl", async () => {
    const stuck = await withoutLibsodium();
    await expect(stuck.crypto.cryptoReady()).rejects.toThrow();
    const ring = new stuck.crypto.KeyRing(K);
    expect(stuck.crypto.openSecret(stuck.crypto.sealSecret(PLAIN, ring), ring)).toBe(PLAIN);
    expect(stuck.crypto.cryptoBackend()).toBe("tweetnacl");
  });
});

describe("MemoryBox: values held in memory, as bytes under a per-process key", () => {
  const plaintexts = CROSS_PLAINTEXTS.map(([, p]) => p);

  it.each(Object.keys(BACKENDS) as (keyof typeof BACKENDS)[])(
    "%s: opens what it sealed, which holds none of the value's bytes, and nothing else",
    async (name) => {
      const { crypto, errors } = await BACKENDS[name]();
      expect(crypto.cryptoBackend()).toBe(name);
      const box = new crypto.MemoryBox();
      for (const plaintext of plaintexts) {
        const sealed = box.seal(plaintext);
        const bytes = Buffer.from(plaintext, "utf8");
        expect(sealed.length).toBe(24 + 16 + bytes.length);
        if (bytes.length >= 8) expect(Buffer.from(sealed).includes(bytes.subarray(0, 8))).toBe(false);
        expect(box.open(sealed)).toBe(plaintext);
        // Another box (another key) cannot open it; a changed byte or a cut box does not open.
        expect(() => new crypto.MemoryBox().open(sealed)).toThrow(errors.DecryptFailed);
        for (const at of [0, 24, sealed.length - 1]) {
          const tampered = Uint8Array.from(sealed);
          tampered[at] = (tampered[at] as number) ^ 1;
          expect(() => box.open(tampered), `byte ${at} changed`).toThrow(errors.DecryptFailed);
        }
        expect(() => box.open(sealed.subarray(0, 39))).toThrow(errors.DecryptFailed);
      }
    },
  );

  it("reads across the switch from tweetnacl to libsodium, both ways, and uses a fresh nonce each time", async () => {
    const fresh = await freshModule();
    const box = new fresh.crypto.MemoryBox();
    expect(fresh.crypto.cryptoBackend()).toBe("tweetnacl");
    const before = plaintexts.map((p) => box.seal(p));
    await fresh.crypto.cryptoReady();
    expect(fresh.crypto.cryptoBackend()).toBe("libsodium");
    const after = plaintexts.map((p) => box.seal(p));
    expect(before.map((s) => box.open(s))).toEqual(plaintexts);
    expect(after.map((s) => box.open(s))).toEqual(plaintexts);
    const nonces = [...before, ...after].map((s) => Buffer.from(s.subarray(0, 24)).toString("hex"));
    expect(new Set(nonces).size).toBe(nonces.length);
  });

  it("a seal that grows libsodium's scratch region stays inside it: a box's resident key is not overwritten", async () => {
    // Guards the scratch size rounding up to a power of two: rounded down, a 4572-byte seal wrote
    // past its 4096 bytes, over the MemoryBox key the heap held next, and cached values no longer opened.
    const fresh = await withFreshHeap();
    expect(fresh.crypto.cryptoBackend()).toBe("libsodium");
    const ring = new fresh.crypto.KeyRing(K);
    const box = new fresh.crypto.MemoryBox();
    const cached = box.seal("cached value");
    for (const count of [1500, 3000, 6000]) {
      const plaintext = "€".repeat(count);
      expect(fresh.crypto.openSecret(fresh.crypto.sealSecret(plaintext, ring), ring)).toBe(plaintext);
      expect(box.open(cached), `after a seal of ${count} euro signs`).toBe("cached value");
    }
  });
});

describe("nonces", () => {
  /** The nonce of a NaCl ciphertext: its first 24 bytes are its first 32 base64 characters. */
  const nonceOf = (sealed: string) => sealed.slice(0, 32);

  it.each(Object.keys(BACKENDS) as (keyof typeof BACKENDS)[])(
    "are never reused across many seals on %s (the nonce pool is refilled many times)",
    async (backend) => {
      const { crypto } = await BACKENDS[backend]();
      expect(crypto.cryptoBackend()).toBe(backend);
      const ring = new crypto.KeyRing(K);
      // The pool holds 4096 nonces: 100k seals cross its refill 24 times, at every offset.
      const count = backend === "libsodium" ? 100_000 : 20_000;
      const seen = new Set<string>();
      for (let i = 0; i < count; i++) seen.add(nonceOf(crypto.sealSecret("", ring)));
      expect(seen.size).toBe(count);
      // None is all zeroes (a wiped pool slot handed out again would be).
      expect(seen.has("A".repeat(32))).toBe(false);
    },
    60_000,
  );
});

describe("padded base64 is checked as strictly as /^[A-Za-z0-9+/_-]*={0,2}$/ with length % 4 == 0", () => {
  const STRICT = /^[A-Za-z0-9+/_-]*={0,2}$/;
  const isValid = (text: string) => text.length > 0 && text.length % 4 === 0 && STRICT.test(text);
  // Every ASCII character, and wider ones whose low byte is a base64 character or `=`.
  const CHARACTERS = [
    ...Array.from({ length: 128 }, (_, i) => String.fromCharCode(i)),
    "\u0080",
    "\u00ff",
    "\u0141", // low byte "A"
    "\u012b", // low byte "+"
    "\u013d", // low byte "="
    "\u2d2d", // low byte "-"
    "\uD83D",
    "🔑",
  ];

  it.each(Object.keys(BACKENDS) as (keyof typeof BACKENDS)[])(
    "on %s: every character in every position of ciphertexts with 0, 1 and 2 padding characters",
    async (backend) => {
      const c = await BACKENDS[backend]();
      const ring = new c.crypto.KeyRing(K);
      let checked = 0;
      // 40 + n bytes: n = 2, 0, 1 give 2, 1 and 0 padding characters; also a v2:gcm: body.
      const samples = [...["ab", "", "a"].map((p) => c.crypto.sealSecret(p, ring)), VECTORS.v2, VECTORS.legacyStandard];
      for (const sample of samples) {
        const prefix = sample.startsWith("v2:gcm:") ? "v2:gcm:" : "";
        const body = sample.slice(prefix.length);
        const plaintext = c.crypto.openSecret(sample, ring);
        for (let i = 0; i < body.length; i++) {
          for (const ch of CHARACTERS) {
            if (ch === body[i]) continue;
            const mutated = body.slice(0, i) + ch + body.slice(i + 1);
            const valid = isValid(mutated);
            let opened: string | undefined;
            try {
              opened = c.crypto.openSecret(prefix + mutated, ring);
            } catch {}
            if (opened !== undefined) {
              // Only another spelling of the same bytes opens ("-" for "+", unused low bits of the last
              // character): PyNaCl after urlsafe_b64decode opens it too.
              expect(valid, JSON.stringify(mutated)).toBe(true);
              expect(opened).toBe(plaintext);
            } else {
              // Refused as base64 exactly when the strict pattern refuses it; else the MAC refuses it.
              const message = decryptFailure(c, prefix + mutated, ring).message;
              expect(message.includes("not valid padded base64"), JSON.stringify(mutated)).toBe(!valid);
            }
            checked++;
          }
        }
      }
      expect(checked).toBeGreaterThan(40_000);
    },
    60_000,
  );

  it("accepts standard, url-safe and mixed alphabets (Python's urlsafe_b64decode does)", () => {
    const ring = new loadedCrypto.KeyRing(K);
    let mixedAlphabets = 0;
    for (let i = 0; i < 200; i++) {
      const plaintext = asciiText(Math.floor(seeded() * 100));
      const url = tweetnaclSeal(plaintext, ring.current.sha256);
      const mixed = url.replace("-", "+").replace(/_(?=[^_]*$)/, "/");
      if (/[+/]/.test(mixed) && /[-_]/.test(mixed)) mixedAlphabets++;
      expect(loadedCrypto.openSecret(mixed, ring)).toBe(plaintext);
    }
    // Most ciphertexts hold both url-safe characters, so most of these truly mix the alphabets.
    expect(mixedAlphabets).toBeGreaterThan(100);
  });
});
