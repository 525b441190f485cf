/**
 * `docker`: Docker (and Kubernetes-mounted) secrets, read-only from files (LiteLLM's `docker`
 * store): `key_management_settings.secrets_path` (default `/run/secrets`) holds one file per
 * secret. A name is looked up as written, then in lower case; trailing whitespace (a newline) is
 * trimmed, a leading byte order mark kept (as LiteLLM). A name with a path separator is refused
 * (`400 invalid_name`), and so is one whose file resolves, through symlinks, outside the directory.
 * A file that is not UTF-8, or larger than 500 KiB (`capabilities.maxValueBytes`), is
 * `500 store_corrupt`, never a garbled or huge value; the message names the file, never its bytes.
 * Differs: a file that is not UTF-8 is `store_corrupt` (LiteLLM's code returns nothing on a decode
 * error; one of its tests expects Latin-1 read). Never writes. Records: the value only.
 * Lists the directory's files whose names are valid secret names and that resolve inside it
 * (Kubernetes' `..data` links and hidden entries are not names).
 */
import { constants } from "node:fs";
import { open, readdir, realpath, stat } from "node:fs/promises";
import { join, sep } from "node:path";
import * as z from "zod/mini";
import { InvalidName } from "../errors";
import { isValidName } from "../names";
import {
  type ListOptions,
  type NamePage,
  pageOfNames,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
} from "../secret-store";
import { classifyBackendError, NotSupported, StoreCorrupt } from "../store-errors";

/** The largest file read: a secret's value, 500 KiB. */
const MAX_VALUE_BYTES = 500 * 1024;
/** Strict UTF-8; a leading byte order mark is kept in the value, as LiteLLM's UTF-8 read keeps it. */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export const DockerSettings = z.object({
  config: z.object({ secrets_path: z.nullish(z.string().check(z.minLength(1))) }),
  env: z.object({}),
});

export class DockerSecretsStore implements SecretStore {
  readonly kind = "docker";

  /** `dir`: the secrets directory, as configured (`/run/secrets` by default). */
  constructor(readonly dir: string) {}

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

  async list(options: ListOptions): Promise<NamePage> {
    let entries: string[];
    let root: string;
    try {
      [entries, root] = await Promise.all([readdir(this.dir), realpath(this.dir)]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { names: [] };
      throw classifyBackendError(err, "docker secrets list");
    }
    const held = await Promise.all(
      entries.map(async (entry) => {
        if (!isValidName(entry)) return undefined;
        try {
          const real = await realpath(join(this.dir, entry));
          return real.startsWith(root + sep) && (await stat(real)).isFile() ? entry : undefined;
        } catch {
          return undefined; // gone since readdir, or a dangling link: not a secret
        }
      }),
    );
    return pageOfNames(
      held.filter((n): n is string => n !== undefined),
      options,
    );
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
    let bytes: Buffer | undefined;
    try {
      bytes = await readBounded(real);
      if (bytes === undefined) return undefined;
    } catch (err) {
      // Gone since (or turned into a directory, or a symlink): no secret.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EISDIR" || code === "ENOENT" || code === "ELOOP") return undefined;
      throw classifyBackendError(err, "docker secrets read");
    }
    if (bytes.length > MAX_VALUE_BYTES) {
      throw new StoreCorrupt(
        `docker secrets read: the file ${file} is larger than ${MAX_VALUE_BYTES} bytes, the largest value this store takes`,
      );
    }
    try {
      return utf8.decode(bytes);
    } catch {
      throw new StoreCorrupt(`docker secrets read: the file ${file} is not UTF-8 text`);
    }
  }
}

/**
 * The bytes of a regular file, at most `MAX_VALUE_BYTES + 1` of them (more says it is too large,
 * however it grows while read); undefined for anything else. Only a regular file is a secret, as
 * `list` says: not a directory (Kubernetes' `..data`, a subdirectory), nor a FIFO or a device,
 * whose read would wait or never end. Opened without waiting (a FIFO's open would), then checked
 * on the open file, so that what is read is what was checked.
 */
async function readBounded(path: string): Promise<Buffer | undefined> {
  // Not followed if the resolved path became a symlink since; never this process's terminal.
  const file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW | constants.O_NOCTTY);
  try {
    if (!(await file.stat()).isFile()) return undefined;
    const chunks: Buffer[] = [];
    let total = 0;
    while (total <= MAX_VALUE_BYTES) {
      const chunk = Buffer.allocUnsafe(Math.min(64 * 1024, MAX_VALUE_BYTES + 1 - total));
      const { bytesRead } = await file.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
    }
    return Buffer.concat(chunks, total);
  } finally {
    await file.close();
  }
}

export const dockerStore = {
  kind: "docker",
  settings: DockerSettings,
  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false },
  capabilities: { writes: false, deletes: false, compareAndSet: false, maxValueBytes: MAX_VALUE_BYTES, records: [] },
  open: async (settings, _deps) => new DockerSecretsStore(settings.config.secrets_path ?? "/run/secrets"),
} as const satisfies StoreFactory<"docker", typeof DockerSettings>;
