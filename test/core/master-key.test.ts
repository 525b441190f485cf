// The generated master key on a filesystem without hard links (SMB, vfat, some FUSE mounts), which
// this machine has none of: node:fs/promises is wrapped so that `link` answers as such a mount does
// while `mount.code` is set (everything else is the real filesystem).
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { ensureMasterKeyFile } from "../../core/src/master-key";
import { tempDir } from "../helpers";

const mount = vi.hoisted(() => ({ code: undefined as string | undefined, links: 0 }));

vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs/promises")>();
  const link = (async (existing: string, path: string) => {
    mount.links++;
    if (mount.code !== undefined) {
      throw Object.assign(new Error(`${mount.code}: operation not permitted, link '${existing}' -> '${path}'`), {
        code: mount.code,
        syscall: "link",
      });
    }
    return actual.link(existing, path);
  }) as typeof actual.link;
  return { ...actual, link, default: { ...actual, link } };
});

describe("ensureMasterKeyFile without hard links", () => {
  for (const code of ["EPERM", "ENOTSUP", "EXDEV"]) {
    it(`writes the key under its name when link fails with ${code}, 0600, and leaves no temporary file`, async () => {
      const dir = join(await tempDir(), "data");
      mount.code = code;
      mount.links = 0;
      try {
        const made = await ensureMasterKeyFile(dir);
        expect(mount.links).toBe(1); // the link was tried, and refused
        expect(made).toEqual({ path: join(dir, "master.key"), created: true });
        expect(await readFile(made.path, "utf8")).toMatch(/^sk-[\w-]{43}\n$/);
        expect((await stat(made.path)).mode & 0o777).toBe(0o600);
        expect(await readdir(dir)).toEqual(["master.key"]);
      } finally {
        mount.code = undefined;
      }
    });
  }

  it("never writes over a key another start made meanwhile: the fallback is create-only", async () => {
    const dir = join(await tempDir(), "data");
    mount.code = "EPERM";
    try {
      const first = await ensureMasterKeyFile(dir);
      const key = await readFile(first.path, "utf8");
      const second = await ensureMasterKeyFile(dir);
      expect(second).toEqual({ path: first.path, created: false });
      expect(await readFile(first.path, "utf8")).toBe(key);
      expect(await readdir(dir)).toEqual(["master.key"]);
    } finally {
      mount.code = undefined;
    }
  });

  it("stops on another link error (a full disk) with the code, making no key", async () => {
    const dir = join(await tempDir(), "data");
    mount.code = "ENOSPC";
    try {
      await expect(ensureMasterKeyFile(dir)).rejects.toThrow(
        `cannot create the master key file ${join(dir, "master.key")} (ENOSPC)`,
      );
      expect(await readdir(dir)).toEqual([]);
    } finally {
      mount.code = undefined;
    }
  });

  it("links where the filesystem can, and a later start keeps the key", async () => {
    const dir = join(await tempDir(), "data");
    mount.links = 0;
    const made = await ensureMasterKeyFile(dir);
    expect(mount.links).toBe(1);
    expect(made.created).toBe(true);
    expect(await readdir(dir)).toEqual(["master.key"]);
    // a written key stays: a later start neither remakes it nor writes over a changed one
    await writeFile(made.path, "sk-kept\n");
    expect((await ensureMasterKeyFile(dir)).created).toBe(false);
    expect(await readFile(made.path, "utf8")).toBe("sk-kept\n");
  });
});
