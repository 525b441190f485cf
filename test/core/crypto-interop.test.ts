// Interop with LiteLLM's format, proven against a third party: PyNaCl and Python's cryptography.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { KeyRing, openSecret, sealSecret } from "../../core/src/crypto";
import { inProcessApp, pythonFor } from "../helpers";

const SCRIPT = fileURLToPath(new URL("../interop/litellm_crypto.py", import.meta.url));
const SALT = "interop-salt-key-ü";
const PLAINTEXTS = ["", "sk-proj-interop-upstream-key", "ключ 🔑 鍵 é/+?=", "p".repeat(64 * 1024)];

const PYTHON = pythonFor("nacl.secret, cryptography", "python3-nacl python3-cryptography");

function python<T>(command: "encrypt" | "decrypt", key: string, items: string[]): T {
  const run = spawnSync(PYTHON as string, [SCRIPT, command, key], {
    input: JSON.stringify(items),
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  if (run.status !== 0) throw new Error(`python failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as T;
}

type PythonForms = { nacl_urlsafe: string; nacl_standard: string; v2: string; v3: string };

describe.skipIf(PYTHON === undefined)("interop with PyNaCl and Python cryptography", () => {
  let made: PythonForms[];
  const ring = new KeyRing(SALT);

  beforeAll(() => {
    made = python<PythonForms[]>("encrypt", SALT, PLAINTEXTS);
  });

  it("opens Python's urlsafe NaCl, standard-base64 NaCl, v2:gcm: and v3:gcm: ciphertexts", () => {
    made.forEach((forms, i) => {
      expect(forms.nacl_standard).toMatch(/[A-Za-z0-9+/]=*$/);
      for (const ciphertext of Object.values(forms)) expect(openSecret(ciphertext, ring)).toBe(PLAINTEXTS[i]);
    });
  });

  it("writes NaCl that PyNaCl opens after Python's urlsafe_b64decode", () => {
    const ours = PLAINTEXTS.map((p) => sealSecret(p, ring));
    expect(python<(string | null)[]>("decrypt", SALT, ours)).toEqual(PLAINTEXTS);
  });

  it("writes v3:gcm: that Python's cryptography opens (HKDF key)", () => {
    const gcm = new KeyRing(SALT, [], "aes-256-gcm");
    const ours = PLAINTEXTS.map((p) => sealSecret(p, gcm));
    expect(ours.every((c) => c.startsWith("v3:gcm:"))).toBe(true);
    expect(python<(string | null)[]>("decrypt", SALT, ours)).toEqual(PLAINTEXTS);
  });

  it("the Python side checks its key too (so the checks above can fail)", () => {
    const ours = [sealSecret("x", ring), sealSecret("x", new KeyRing(SALT, [], "aes-256-gcm"))];
    expect(python<(string | null)[]>("decrypt", "another-key", ours)).toEqual([null, null]);
  });

  it("answers 400 decrypt_failed over HTTP for tampered, truncated and wrong-key Python ciphertexts", async () => {
    const { request } = await inProcessApp({ env: { LITELLM_SALT_KEY: SALT } });
    const forms = made[1] as PythonForms;
    const bad: string[] = [];
    for (const ciphertext of Object.values(forms)) {
      const prefix = ciphertext.startsWith("v") ? 7 : 0;
      const raw = Buffer.from(ciphertext.slice(prefix), "base64");
      const flipped = Buffer.from(raw);
      flipped[raw.length - 1] = (flipped[raw.length - 1] as number) ^ 0x80;
      bad.push(ciphertext.slice(0, prefix) + flipped.toString("base64"));
      bad.push(ciphertext.slice(0, prefix) + raw.subarray(0, raw.length - 3).toString("base64"));
    }
    bad.push(...Object.values(python<PythonForms[]>("encrypt", "wrong-key", ["secret"])[0] as PythonForms));
    for (const ciphertext of bad) {
      const res = await request("/v1/decrypt", { method: "POST", json: { ciphertext } });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe("decrypt_failed");
      expect(body.error.message).not.toContain(ciphertext.slice(8, 24));
    }
    // And the untouched ones open through the same route.
    for (const ciphertext of Object.values(forms)) {
      const res = await request("/v1/decrypt", { method: "POST", json: { ciphertext } });
      expect(await res.json()).toEqual({ value: PLAINTEXTS[1] });
    }
  });
});
