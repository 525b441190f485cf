/**
 * `local`: LiteLLM's "no secret manager". Reads the environment captured at start; never writes.
 */
import { NotSupported } from "../errors";
import type { SecretStore } from "../secret-store";

export class LocalStore implements SecretStore {
  readonly kind = "local" as const;
  readonly envBacked = true;

  constructor(private readonly env: Readonly<Record<string, string>>) {}

  async get(name: string): Promise<string | undefined> {
    return Object.hasOwn(this.env, name) ? this.env[name] : undefined;
  }

  async put(): Promise<{ created: boolean }> {
    throw new NotSupported("writing to the local (environment) store");
  }

  async delete(): Promise<void> {
    throw new NotSupported("deleting from the local (environment) store");
  }
}
