/**
 * `local`: LiteLLM's "no secret manager". Reads the environment captured at start; never writes.
 * Records: the value only (no version, time or tags). Over HTTP it serves only `hosted_keys`.
 */

import * as z from "zod/mini";
import { envValue } from "../refs";
import {
  type ListOptions,
  type NamePage,
  pageOfNames,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
} from "../secret-store";
import { NotSupported } from "../store-errors";

class EnvStore implements SecretStore {
  readonly kind = "local";

  constructor(private readonly env: Readonly<Record<string, string>>) {}

  keyOf(name: string): string {
    return name;
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    const value = envValue(this.env, name);
    return value === undefined ? undefined : { value };
  }

  /** The environment's names (the manager lists only `hosted_keys` of an environment store). */
  async list(options: ListOptions): Promise<NamePage> {
    return pageOfNames(Object.keys(this.env), options);
  }

  async put(): Promise<never> {
    throw new NotSupported("writing to the local (environment) store");
  }

  async delete(): Promise<never> {
    throw new NotSupported("deleting from the local (environment) store");
  }
}

export const localStore = {
  kind: "local",
  settings: z.object({ config: z.object({}), env: z.object({}) }),
  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: true },
  capabilities: { writes: false, deletes: false, compareAndSet: false, maxValueBytes: 128 * 1024, records: [] },
  open: async (_settings, deps) => new EnvStore(deps.env),
} as const satisfies StoreFactory<"local">;
