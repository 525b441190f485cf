"""LiteLLM's encryption at rest, written from its documented behaviour (reference/litellm-crypto-events-tls.md),
with the same third-party libraries LiteLLM uses: PyNaCl and cryptography.

usage: litellm_crypto.py encrypt KEY   (stdin: JSON list of plaintexts; stdout: JSON list of {form: ciphertext})
       litellm_crypto.py decrypt KEY   (stdin: JSON list of ciphertexts; stdout: JSON list of plaintext or null)
"""
import base64
import hashlib
import json
import os
import sys

import nacl.secret
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def sha256_key(key):
    return hashlib.sha256(key.encode("utf-8")).digest()


def hkdf_key(key):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"litellm-at-rest-v3").derive(key.encode("utf-8"))


def encrypt_nacl(plaintext, key, encode):
    box = nacl.secret.SecretBox(sha256_key(key))
    return encode(bytes(box.encrypt(plaintext.encode("utf-8")))).decode("ascii")


def encrypt_gcm(plaintext, key, version):
    nonce = os.urandom(12)
    aes_key = hkdf_key(key) if version == 3 else sha256_key(key)
    body = nonce + AESGCM(aes_key).encrypt(nonce, plaintext.encode("utf-8"), None)
    return "v%d:gcm:%s" % (version, base64.urlsafe_b64encode(body).decode("ascii"))


def decrypt(ciphertext, key):
    if ciphertext.startswith("v3:gcm:") or ciphertext.startswith("v2:gcm:"):
        aes_key = hkdf_key(key) if ciphertext.startswith("v3:") else sha256_key(key)
        raw = base64.urlsafe_b64decode(ciphertext[7:])
        return AESGCM(aes_key).decrypt(raw[:12], raw[12:], None).decode("utf-8")
    raw = base64.urlsafe_b64decode(ciphertext)
    return nacl.secret.SecretBox(sha256_key(key)).decrypt(raw).decode("utf-8")


def main():
    command, key = sys.argv[1], sys.argv[2]
    items = json.load(sys.stdin)
    if command == "encrypt":
        out = [
            {
                "nacl_urlsafe": encrypt_nacl(p, key, base64.urlsafe_b64encode),
                "nacl_standard": encrypt_nacl(p, key, base64.b64encode),
                "v2": encrypt_gcm(p, key, 2),
                "v3": encrypt_gcm(p, key, 3),
            }
            for p in items
        ]
    else:
        out = []
        for c in items:
            try:
                out.append(decrypt(c, key))
            except Exception:
                out.append(None)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
