/**
 * `StoreKind`: the closed union of the built-in stores' kinds, derived from their factories by
 * type-only imports (nothing is loaded). A store joins by adding its factory's type here.
 */

import type { awsSecretsManagerStore } from "./stores/aws";
import type { awsKmsStore } from "./stores/aws-kms";
import type { azureKeyVaultStore } from "./stores/azure";
import type { customStore } from "./stores/custom";
import type { cyberarkStore } from "./stores/cyberark";
import type { dockerStore } from "./stores/docker";
import type { fileStore } from "./stores/file";
import type { googleSecretManagerStore } from "./stores/google";
import type { googleKmsStore } from "./stores/google-kms";
import type { infisicalStore } from "./stores/infisical";
import type { localStore } from "./stores/local";
import type { memoryStore } from "./stores/memory";
import type { vaultStore } from "./stores/vault";

export type BuiltInStore =
  | typeof fileStore
  | typeof localStore
  | typeof memoryStore
  | typeof awsSecretsManagerStore
  | typeof awsKmsStore
  | typeof azureKeyVaultStore
  | typeof googleSecretManagerStore
  | typeof googleKmsStore
  | typeof vaultStore
  | typeof dockerStore
  | typeof customStore
  | typeof cyberarkStore
  | typeof infisicalStore;
export type StoreKind = BuiltInStore["kind"];
