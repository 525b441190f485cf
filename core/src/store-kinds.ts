/**
 * `StoreKind`: the closed union of the built-in stores' kinds, derived from their factories by
 * type-only imports (nothing is loaded). A store joins by adding its factory's type here.
 */

import type { awsSecretsManagerStore } from "./stores/aws";
import type { awsKmsStore } from "./stores/aws-kms";
import type { fileStore } from "./stores/file";
import type { localStore } from "./stores/local";
import type { memoryStore } from "./stores/memory";

export type BuiltInStore =
  | typeof fileStore
  | typeof localStore
  | typeof memoryStore
  | typeof awsSecretsManagerStore
  | typeof awsKmsStore;
export type StoreKind = BuiltInStore["kind"];
