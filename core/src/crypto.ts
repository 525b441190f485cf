/**
 * Encryption at rest, byte-compatible with LiteLLM (SPEC section 5).
 *
 * Written: `base64url_with_padding(nonce(24) || secretbox(plaintext))`, NaCl SecretBox keyed with
 * SHA-256(salt key); or, with `aes-256-gcm`, `v3:gcm:` + base64url(nonce(12) || ct || tag(16)) keyed
 * with HKDF-SHA256(salt key, empty salt, info "litellm-at-rest-v3").
 * Read: those, the NaCl form in standard base64, and `v2:gcm:` (AES-256-GCM keyed with SHA-256).
 * Decryption tries the current salt key, then each previous one, and either returns the whole
 * plaintext or throws `decrypt_failed`: never a partial value, never the input echoed.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";
import nacl from "tweetnacl";
import { DecryptFailed } from "./errors";

export const ENCRYPTION_ALGORITHMS = ["xsalsa20-poly1305", "aes-256-gcm"] as const;
export type EncryptionAlgorithm = (typeof ENCRYPTION_ALGORITHMS)[number];

const NONCE = nacl.secretbox.nonceLength; // 24
const MAC = nacl.secretbox.overheadLength; // 16
const GCM_NONCE = 12;
const GCM_TAG = 16;
const V2 = "v2:gcm:";
const V3 = "v3:gcm:";
const HKDF_INFO = "litellm-at-rest-v3";
const utf8 = new TextDecoder("utf-8", { fatal: true });

interface DerivedKey {
  /** SHA-256(salt key): NaCl and `v2:gcm:`. */
  sha256: Buffer;
  /** HKDF-SHA256(salt key): `v3:gcm:`. */
  hkdf: Buffer;
}

function deriveKey(saltKey: string): DerivedKey {
  const ikm = Buffer.from(saltKey, "utf8");
  return {
    sha256: createHash("sha256").update(ikm).digest(),
    hkdf: Buffer.from(hkdfSync("sha256", ikm, Buffer.alloc(0), HKDF_INFO, 32)),
  };
}

/** The salt key (and the keys it replaced), derived once. */
export class KeyRing {
  readonly algorithm: EncryptionAlgorithm;
  readonly #current: DerivedKey;
  readonly #all: DerivedKey[];

  constructor(
    saltKey: string,
    previousSaltKeys: readonly string[] = [],
    algorithm: EncryptionAlgorithm = "xsalsa20-poly1305",
  ) {
    if (saltKey.length === 0) throw new Error("the salt key is empty");
    this.algorithm = algorithm;
    this.#current = deriveKey(saltKey);
    this.#all = [this.#current, ...previousSaltKeys.filter((k) => k !== saltKey).map(deriveKey)];
  }

  get current(): DerivedKey {
    return this.#current;
  }

  get all(): readonly DerivedKey[] {
    return this.#all;
  }
}

/** Encrypts `plaintext` under the current salt key in the configured format. */
export function sealSecret(plaintext: string, keys: KeyRing): string {
  const message = Buffer.from(plaintext, "utf8");
  if (keys.algorithm === "aes-256-gcm") {
    const nonce = randomBytes(GCM_NONCE);
    const cipher = createCipheriv("aes-256-gcm", keys.current.hkdf, nonce);
    const body = Buffer.concat([nonce, cipher.update(message), cipher.final(), cipher.getAuthTag()]);
    return V3 + toBase64Url(body);
  }
  const nonce = randomBytes(NONCE);
  const box = nacl.secretbox(message, nonce, keys.current.sha256);
  return toBase64Url(Buffer.concat([nonce, box]));
}

/** Decrypts any format LiteLLM writes, under the current or a previous salt key. */
export function openSecret(ciphertext: string, keys: KeyRing): string {
  const gcm = ciphertext.startsWith(V3) ? "hkdf" : ciphertext.startsWith(V2) ? "sha256" : undefined;
  const raw = fromBase64(gcm ? ciphertext.slice(V3.length) : ciphertext);
  if (raw === undefined) throw new DecryptFailed("not valid padded base64");

  for (const key of keys.all) {
    const plain = gcm ? openGcm(raw, key[gcm]) : openNacl(raw, key.sha256);
    if (plain !== undefined) {
      try {
        return utf8.decode(plain);
      } catch {
        throw new DecryptFailed("the plaintext is not UTF-8");
      }
    }
  }
  throw new DecryptFailed();
}

function openNacl(raw: Buffer, key: Buffer): Uint8Array | undefined {
  if (raw.length < NONCE + MAC) return undefined;
  return nacl.secretbox.open(raw.subarray(NONCE), raw.subarray(0, NONCE), key) ?? undefined;
}

function openGcm(raw: Buffer, key: Buffer): Buffer | undefined {
  if (raw.length < GCM_NONCE + GCM_TAG) return undefined;
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, raw.subarray(0, GCM_NONCE));
    decipher.setAuthTag(raw.subarray(raw.length - GCM_TAG));
    return Buffer.concat([decipher.update(raw.subarray(GCM_NONCE, raw.length - GCM_TAG)), decipher.final()]);
  } catch {
    return undefined;
  }
}

/** Base64url that keeps `=` padding, as Python's `urlsafe_b64encode` writes it. */
function toBase64Url(bytes: Buffer): string {
  return bytes.toString("base64").replaceAll("+", "-").replaceAll("/", "_");
}

const BASE64_EITHER_ALPHABET = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** Padded base64 in either alphabet (what Python's `urlsafe_b64decode` accepts); else undefined. */
function fromBase64(text: string): Buffer | undefined {
  if (text.length === 0 || text.length % 4 !== 0 || !BASE64_EITHER_ALPHABET.test(text)) return undefined;
  return Buffer.from(text, "base64");
}
