/**
 * `docker`: Docker (and Kubernetes-mounted) secrets, read-only from files (LiteLLM's `docker`
 * store): `key_management_settings.secrets_path` (default `/run/secrets`) holds one file per
 * secret. A name is looked up as written, then in lower case. A file's text is read as LiteLLM's
 * `_read_file` reads it (`open(path, "r", encoding="utf-8").read().rstrip()`, again as Latin-1 on a
 * decode error): UTF-8, else Latin-1; line ends `\r\n` and `\r` made `\n`; trailing whitespace
 * (Python's) trimmed, a leading byte order mark kept. A name with a path separator is refused
 * (`400 invalid_name`), and so is one whose file resolves, through symlinks, outside the directory.
 * A file larger than 500 KiB (`capabilities.maxValueBytes`) is `500 store_corrupt`, never a huge
 * value; the message names the file, never its bytes. A secrets directory that does not exist is
 * `500 store_unavailable` for every read and list (LiteLLM warns at start, then finds nothing), and
 * a warning at open. Never writes. Records: the value only.
 * Lists the directory's files whose names are valid secret names and that resolve inside it
 * (Kubernetes' `..data` links and hidden entries are not names).
 */
import { constants } from "node:fs";
import { type FileHandle, lstat, open, readdir, readlink, realpath, stat } from "node:fs/promises";
import { join, sep } from "node:path";
import * as z from "zod/mini";
import { InvalidName } from "../errors";
import { isValidName } from "../names";
import { pythonRstrip, pythonUtf8 } from "../python-text";
import {
  type ListOptions,
  type NamePage,
  pageOfNames,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
} from "../secret-store";
import {
  BackendUnavailable,
  classifyBackendError,
  NotSupported,
  StoreCorrupt,
  StoreUnavailable,
} from "../store-errors";

/** The largest file read: a secret's value, 500 KiB. */
const MAX_VALUE_BYTES = 500 * 1024;
/**
 * Codes that mean there is no secret file under the name, as LiteLLM finds none (its non-strict
 * `realpath`, then `isfile`): none (ENOENT), a path through a file (ENOTDIR), a symlink loop
 * (ELOOP), a name longer than the filesystem takes (ENAMETOOLONG: a valid name may be), a Unix
 * socket (ENXIO) or another file that cannot be opened (EOPNOTSUPP), a directory (EISDIR).
 */
const NO_SECRET_CODES = new Set(["ENOENT", "ENOTDIR", "ELOOP", "ENAMETOOLONG", "ENXIO", "EOPNOTSUPP", "EISDIR"]);
/**
 * Opens of a name whose file is replaced as it is opened, each time, before giving up: Kubernetes
 * replaces a secret once per update, so a second try finds the new one.
 */
const READ_ATTEMPTS = 5;

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
    const root = await realpath(this.dir).catch(async (err: unknown) => {
      await this.#checkDir();
      throw classifyBackendError(err, "docker secrets read");
    });
    for (const candidate of name === name.toLowerCase() ? [name] : [name, name.toLowerCase()]) {
      const value = await this.#read(candidate, root);
      if (value !== undefined) return { value: pythonRstrip(value) };
    }
    // No secret under either name: unless the directory itself is not there (or is a file).
    await this.#checkDir();
    return undefined;
  }

  async list(options: ListOptions): Promise<NamePage> {
    let entries: string[];
    let root: string;
    try {
      [entries, root] = await Promise.all([readdir(this.dir), realpath(this.dir)]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw unusableDir("does not exist");
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

  /**
   * The file's text, or undefined when there is none; refused when it resolves outside the
   * directory. Opened by the name itself, so that the kernel follows Kubernetes' `..data` link at
   * once, then checked on the open file (where it is, a regular file): a secret Kubernetes updates
   * meanwhile (a new `..data`, the old timestamped directory removed) reads as its old value or its
   * new one, never as missing; resolving the path first and opening what it resolved to would find
   * the old directory gone.
   */
  async #read(file: string, root: string): Promise<string | undefined> {
    const path = join(this.dir, file);
    for (let attempt = 1; attempt <= READ_ATTEMPTS; attempt++) {
      // Where the name leads before it is opened: outside the directory is refused before anything
      // there is opened (a FIFO, a device, a socket, a file this process may not read), whatever the
      // open would answer. What the open then finds is checked again below (it may have changed).
      const before = await realpath(path).catch(() => undefined);
      if (before !== undefined && !before.startsWith(root + sep)) throw outside();
      let handle: FileHandle;
      try {
        handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? "";
        if (!NO_SECRET_CODES.has(code)) throw classifyBackendError(err, "docker secrets read");
        // The name is there but what it links to is not: maybe a link swapped as it was followed.
        if (code === "ENOENT" && attempt < READ_ATTEMPTS && (await lstat(path).catch(() => undefined))) continue;
        return undefined;
      }
      let bytes: Buffer;
      try {
        const where = await whereOpened(handle, path);
        if (where === undefined) continue; // replaced since it was opened: opened again
        if (!where.startsWith(root + sep)) throw outside();
        // Only a regular file is a secret, as `list` says: not a directory (Kubernetes' `..data`,
        // a subdirectory), nor a FIFO or a device, whose read would wait or never end.
        if (!(await handle.stat()).isFile()) return undefined;
        bytes = await readBounded(handle);
      } catch (err) {
        if (err instanceof InvalidName) throw err;
        throw classifyBackendError(err, "docker secrets read");
      } finally {
        await handle.close();
      }
      if (bytes.length > MAX_VALUE_BYTES) {
        throw new StoreCorrupt(
          `docker secrets read: the file ${file} is larger than ${MAX_VALUE_BYTES} bytes, the largest value this store takes`,
        );
      }
      return decodeAsLiteLLM(bytes);
    }
    throw new BackendUnavailable(
      `docker secrets read: the file ${file} was replaced while read, ${READ_ATTEMPTS} times over`,
    );
  }

  /** Throws when the secrets directory itself is missing or not a directory: no secret is then "not found". */
  async #checkDir(): Promise<void> {
    const problem = await dirProblem(this.dir).catch((err: unknown) => {
      throw classifyBackendError(err, "docker secrets directory");
    });
    if (problem !== undefined) throw unusableDir(problem);
  }
}

function outside(): InvalidName {
  return new InvalidName("the secret's file resolves outside the secrets directory");
}

/** What is wrong with the secrets directory (a volume not mounted, a mistyped setting), or undefined; other failures thrown. */
async function dirProblem(dir: string): Promise<"does not exist" | "is not a directory" | undefined> {
  try {
    return (await stat(dir)).isDirectory() ? undefined : "is not a directory";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "does not exist";
    throw err;
  }
}

/** The store's answer while its directory is unusable; the open's warning names it. */
function unusableDir(problem: string): StoreUnavailable {
  return new StoreUnavailable(
    `docker secrets: the secrets directory ${problem}: check secrets_path in key_management_settings`,
  );
}

/**
 * A file's text as LiteLLM's `_read_file` has it: UTF-8 (a leading byte order mark kept), else
 * Latin-1, every byte a character; Python's text mode makes `\r\n` and a lone `\r` a `\n`.
 */
function decodeAsLiteLLM(bytes: Buffer): string {
  // Buffer's latin1 is ISO-8859-1, as Python's; TextDecoder's "latin1" is windows-1252.
  const text = pythonUtf8(bytes) ?? bytes.toString("latin1");
  return text.replace(/\r\n?/g, "\n");
}

/**
 * Where an open file is: Linux says, for the file itself (`/proc/self/fd`; its path then, with
 * " (deleted)" after it once removed, as the old version of a Kubernetes secret may be).
 * Elsewhere the path is resolved again, and taken only if it leads to the file open (device and
 * inode), else undefined: replaced meanwhile.
 */
async function whereOpened(handle: FileHandle, path: string): Promise<string | undefined> {
  try {
    return await readlink(`/proc/self/fd/${handle.fd}`);
  } catch {
    // No /proc: resolved again, below.
  }
  const [opened, real] = await Promise.all([handle.stat(), realpath(path).catch(() => undefined)]);
  const found = real === undefined ? undefined : await stat(real).catch(() => undefined);
  return found?.dev === opened.dev && found.ino === opened.ino ? real : undefined;
}

/**
 * The bytes of an open regular file, at most `MAX_VALUE_BYTES + 1` of them (more says it is too
 * large, however it grows while read).
 */
async function readBounded(file: FileHandle): Promise<Buffer> {
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
}

export const dockerStore = {
  kind: "docker",
  settings: DockerSettings,
  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false },
  capabilities: { writes: false, deletes: false, compareAndSet: false, maxValueBytes: MAX_VALUE_BYTES, records: [] },
  open: async (settings, deps) => {
    const dir = settings.config.secrets_path ?? "/run/secrets";
    // As LiteLLM warns at start; reads and lists then answer store_unavailable, never "not found".
    const problem = await dirProblem(dir).catch(() => undefined);
    if (problem !== undefined) {
      deps.log.warn(`the docker secrets directory ${problem}: check secrets_path in key_management_settings`, {
        secrets_path: dir,
      });
    }
    return new DockerSecretsStore(dir);
  },
} as const satisfies StoreFactory<"docker", typeof DockerSettings>;
