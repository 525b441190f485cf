/**
 * `docker`: Docker (and Kubernetes-mounted) secrets, read-only from files (LiteLLM's `docker`
 * store): `key_management_settings.secrets_path` (default `/run/secrets`) holds one file per
 * secret. A name is looked up as written, then in lower case; trailing whitespace (a newline) is
 * trimmed. A name with a path separator is refused (`400 invalid_name`), and so is one whose file
 * resolves, through symlinks, outside the directory. Never writes. Records: the value only.
 */
import { readFile, realpath } from "node:fs/promises";
import { join, sep } from "node:path";
import * as z from "zod/mini";
import { InvalidName } from "../errors";
import type { SecretRecord, SecretStore, StoreFactory } from "../secret-store";
import { classifyBackendError, NotSupported } from "../store-errors";

export const DockerSettings = z.object({
  config: z.object({ secrets_path: z.nullish(z.string().check(z.minLength(1))) }),
  env: z.object({}),
});

export class DockerSecretsStore implements SecretStore {
  readonly kind = "docker";

  constructor(private readonly dir: string) {}

  keyOf(name: string): string {
    return name;
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    if (name.includes("/") || name.includes("\\")) {
      throw new InvalidName("a Docker secret is a file: no path separator in its name");
    }
    for (const candidate of name === name.toLowerCase() ? [name] : [name, name.toLowerCase()]) {
      const value = await this.#read(candidate);
      if (value !== undefined) return { value: value.trimEnd() };
    }
    return undefined;
  }

  async put(_name?: string, _value?: string): Promise<never> {
    throw new NotSupported("writing to the docker (files) store");
  }

  async delete(): Promise<never> {
    throw new NotSupported("deleting from the docker (files) store");
  }

  /** The file's text, or undefined when there is none; refused when it resolves outside the directory. */
  async #read(file: string): Promise<string | undefined> {
    let real: string;
    let root: string;
    try {
      [real, root] = await Promise.all([realpath(join(this.dir, file)), realpath(this.dir)]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw classifyBackendError(err, "docker secrets read");
    }
    if (!real.startsWith(root + sep)) {
      throw new InvalidName("the secret's file resolves outside the secrets directory");
    }
    try {
      return await readFile(real, "utf8");
    } catch (err) {
      throw classifyBackendError(err, "docker secrets read");
    }
  }
}

export const dockerStore = {
  kind: "docker",
  settings: DockerSettings,
  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false },
  capabilities: { writes: false, deletes: false, compareAndSet: false, maxValueBytes: 500 * 1024, records: [] },
  open: async (settings, _deps) => new DockerSecretsStore(settings.config.secrets_path ?? "/run/secrets"),
} as const satisfies StoreFactory<"docker", typeof DockerSettings>;
