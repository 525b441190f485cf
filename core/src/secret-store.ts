/**
 * The one interface every backend implements. Names reach a store already validated; backend
 * quirks (name mapping, URL building, create-versus-update) stay inside the store's own file.
 */
import type { StoreKind } from "./settings";

export interface SecretMeta {
  description?: string;
  tags?: Readonly<Record<string, string>>;
  /** Used only when the write creates the secret (`key_management_settings` description and tags). */
  whenCreated?: { description?: string; tags?: Readonly<Record<string, string>> };
}

export interface SecretStore {
  readonly kind: StoreKind;
  /**
   * True for stores that read the process environment (`local`, `aws_kms`, `google_kms`): over
   * HTTP they serve only the names listed in `hosted_keys`.
   */
  readonly envBacked: boolean;
  /** The value, or undefined when the store holds no such name. */
  get(name: string): Promise<string | undefined>;
  /** Creates or replaces; throws `not_supported` on read-only stores. */
  put(name: string, value: string, meta: SecretMeta): Promise<{ created: boolean }>;
  /** Removes; absent names are not an error. Throws `not_supported` on read-only stores. */
  delete(name: string): Promise<void>;
  /** Reports names that changed behind our back (another process, the provider's console). */
  watch?(onChange: (names: string[]) => void): void;
  /** Waits for pending writes and releases resources. */
  close?(): Promise<void>;
}
