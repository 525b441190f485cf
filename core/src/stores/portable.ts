/**
 * The stores every runtime ships besides its cloud's own: those that reach their backend over HTTP
 * or files with no cloud SDK (HashiCorp Vault, Docker secrets, a user's own store, CyberArk Conjur,
 * Infisical) and the process environment (`local`). A cloud function registers its own stores, then
 * these; the CLI its file store and every cloud's, then these. Loading this list loads no client
 * library: each store imports its own when it opens.
 */
import { customStore } from "./custom";
import { cyberarkStore } from "./cyberark";
import { dockerStore } from "./docker";
import { infisicalStore } from "./infisical";
import { localStore } from "./local";
import { vaultStore } from "./vault";

export const PORTABLE_STORES = [
  vaultStore,
  dockerStore,
  customStore,
  cyberarkStore,
  infisicalStore,
  localStore,
] as const;
