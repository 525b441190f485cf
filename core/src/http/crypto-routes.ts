/** `/v1/encrypt` and `/v1/decrypt`: LiteLLM's ciphertext format under the salt key. */
import { DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse } from "../api-schemas";
import type { SecretManager } from "../secret-manager";
import { json, type Router } from "./router";

export function cryptoRoutes(router: Router, manager: SecretManager): void {
  router.route(
    {
      method: "post",
      path: "/v1/encrypt",
      operationId: "encrypt",
      summary: "Encrypt a value with the salt key, in LiteLLM's format",
      auth: true,
      body: EncryptRequest,
      errors: ["payload_too_large", "encryption_key_missing"],
      responses: { 200: { description: "The ciphertext", schema: EncryptResponse } },
    },
    (_, { body }) => json({ ciphertext: manager.encrypt(body.value) }),
  );

  router.route(
    {
      method: "post",
      path: "/v1/decrypt",
      operationId: "decrypt",
      summary: "Decrypt a LiteLLM ciphertext (current or previous salt keys)",
      auth: true,
      body: DecryptRequest,
      errors: ["decrypt_failed", "write_only", "encryption_key_missing"],
      responses: { 200: { description: "The plaintext", schema: DecryptResponse } },
      audit: { action: "decrypt" },
    },
    (_, { body }) => json({ value: manager.decrypt(body.ciphertext) }),
  );
}
