/** `/v1/encrypt` and `/v1/decrypt`: LiteLLM's ciphertext format under the salt key. */
import { DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse } from "../api-schemas";
import { type KeyRing, openSecret, sealSecret } from "../crypto";
import { EncryptionKeyMissing } from "../errors";
import { json, type Router } from "./router";

export function cryptoRoutes(router: Router, keyRing: KeyRing | undefined): void {
  const keys = () => {
    if (!keyRing) throw new EncryptionKeyMissing();
    return keyRing;
  };

  router.route(
    {
      method: "post",
      path: "/v1/encrypt",
      summary: "Encrypt a value with the salt key, in LiteLLM's format",
      auth: true,
      body: EncryptRequest,
      responses: { 200: { description: "The ciphertext", schema: EncryptResponse } },
    },
    (_, { body }) => json({ ciphertext: sealSecret(body.value, keys()) }),
  );

  router.route(
    {
      method: "post",
      path: "/v1/decrypt",
      summary: "Decrypt a LiteLLM ciphertext (current or previous salt keys)",
      auth: true,
      body: DecryptRequest,
      errors: ["decrypt_failed"],
      responses: { 200: { description: "The plaintext", schema: DecryptResponse } },
    },
    (_, { body }) => json({ value: openSecret(body.ciphertext, keys()) }),
  );
}
