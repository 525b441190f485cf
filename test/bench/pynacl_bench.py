"""LiteLLM's encryption path, timed: the reference of `npm run bench -- --only=crypto`.

Per op, what LiteLLM does to write and read a value (litellm/proxy/common_utils/encrypt_decrypt_utils.py):
seal = SecretBox(SHA-256(salt key)).encrypt(value.encode("utf-8")), then base64.urlsafe_b64encode(...).decode();
open = SecretBox.decrypt(base64.urlsafe_b64decode(text)).decode("utf-8").
The box is made once per run (LiteLLM makes one per call, which is slower: this reference is the stricter one).
The plaintext is ASCII text of exactly SIZE bytes, as on the Node side.

usage: pynacl_bench.py SIZES BUDGET_MS   e.g. 64,1024,1048576 250
stdout: one JSON object {"python", "pynacl", "results": [{"size", "ops", "seconds"}]}
"""
import base64
import hashlib
import json
import os
import sys
import time

import nacl
import nacl.secret


def text_of(size):
    return base64.urlsafe_b64encode(os.urandom(size)).decode("ascii")[:size]


def main():
    sizes = [int(s) for s in sys.argv[1].split(",")]
    budget = int(sys.argv[2]) / 1000.0
    # A fresh random salt key per run: nothing key-shaped is written anywhere.
    box = nacl.secret.SecretBox(hashlib.sha256(base64.urlsafe_b64encode(os.urandom(24))).digest())
    encrypt, decrypt = box.encrypt, box.decrypt
    b64encode, b64decode = base64.urlsafe_b64encode, base64.urlsafe_b64decode
    perf = time.perf_counter

    results = []
    for size in sizes:
        value = text_of(size)
        assert len(value.encode("utf-8")) == size

        def op():
            sealed = b64encode(encrypt(value.encode("utf-8"))).decode("utf-8")
            return decrypt(b64decode(sealed)).decode("utf-8")

        # Never time an error path: one op must give the value back.
        if op() != value:
            sys.exit("pynacl_bench: seal+open did not give the value back")

        # Warm up for a tenth of the budget, then time batches until the budget is spent.
        batch, ops, elapsed = 1, 0, 0.0
        warm_until = perf() + budget / 10
        while perf() < warm_until:
            op()
        while elapsed < budget:
            start = perf()
            for _ in range(batch):
                op()
            elapsed += perf() - start
            ops += batch
            if elapsed < budget / 20:
                batch *= 2
        results.append({"size": size, "ops": ops, "seconds": elapsed})

    json.dump(
        {
            "python": sys.version.split()[0],
            "pynacl": getattr(nacl, "__version__", "unknown"),
            "results": results,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
