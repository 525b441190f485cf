// The docker store beyond the conformance suite: the lower-case fallback, trailing whitespace,
// and the names and symlinks that would leave the secrets directory, refused.
import { execFileSync } from "node:child_process";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { silentLogger } from "../../core/src/log";
import { DockerSecretsStore, dockerStore } from "../../core/src/stores/docker";
import { codeOf, tempDir } from "../helpers";

async function setup() {
  const base = await tempDir();
  const dir = join(base, "secrets");
  await mkdir(dir);
  await writeFile(join(base, "outside"), "not a secret of ours\n");
  await writeFile(join(dir, "openai_api_key"), "sk-lower\n\n");
  await writeFile(join(dir, "AZURE_API_KEY"), "sk-exact  \t\n");
  await symlink(join(base, "outside"), join(dir, "ESCAPE"));
  // A sibling whose path begins with the secrets dir's own (`secrets-other`): outside it all the same.
  await mkdir(join(base, "secrets-other"));
  await writeFile(join(base, "secrets-other", "x"), "not a secret of ours either\n");
  await symlink(join(base, "secrets-other", "x"), join(dir, "SIBLING"));
  await symlink(join(dir, "AZURE_API_KEY"), join(dir, "ALIAS"));
  const store = await dockerStore.open(
    { config: { secrets_path: dir }, env: {} },
    { dataDir: "/nonexistent", env: {}, log: silentLogger, now: Date.now },
  );
  return { store, base };
}

describe("the docker store", () => {
  it("reads the name as written, then in lower case, trailing whitespace trimmed", async () => {
    const { store } = await setup();
    expect((await store.get("AZURE_API_KEY"))?.value).toBe("sk-exact");
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe("sk-lower");
    expect((await store.get("ALIAS"))?.value).toBe("sk-exact"); // a symlink inside the directory is fine
    expect(await store.get("MISSING")).toBeUndefined();
  });

  it("refuses a path separator and a symlink that resolves outside the directory", async () => {
    const { store } = await setup();
    expect(await codeOf(store.get("ESCAPE"))).toBe("invalid_name");
    expect(await codeOf(store.get("SIBLING"))).toBe("invalid_name");
    expect(await codeOf(store.get("team/key"))).toBe("invalid_name");
    expect(await codeOf(store.put("A", "x"))).toBe("not_supported");
  });

  it("refuses a file that is not UTF-8, or larger than its largest value, as store_corrupt naming only the file", async () => {
    const { store, base } = await setup();
    const dir = join(base, "secrets");
    const max = dockerStore.capabilities.maxValueBytes;
    // Latin-1 "é" (0xe9) after a value: not UTF-8, which a lenient read would turn into U+FFFD.
    await writeFile(
      join(dir, "LATIN1"),
      Buffer.concat([Buffer.from("sk-caf"), Buffer.from([0xe9]), Buffer.from("\n")]),
    );
    await writeFile(join(dir, "HUGE"), "h".repeat(max + 1));
    await writeFile(join(dir, "LARGEST"), "l".repeat(max));
    await writeFile(join(dir, "BOM"), "\ufeffsk-bom\nsecond line\n");
    const latin1 = await store.get("LATIN1").catch((e: unknown) => e);
    expect(latin1).toMatchObject({ code: "store_corrupt" });
    expect((latin1 as Error).message).toBe("docker secrets read: the file LATIN1 is not UTF-8 text");
    const huge = await store.get("HUGE").catch((e: unknown) => e);
    expect(huge).toMatchObject({ code: "store_corrupt" });
    expect((huge as Error).message).toMatch(/the file HUGE is larger than 512000 bytes/);
    expect((huge as Error).message).not.toContain("hhh");
    expect((await store.get("LARGEST"))?.value).toBe("l".repeat(max));
    // As LiteLLM's UTF-8 read: a leading byte order mark stays, lines inside stay, the trailing newline goes.
    expect((await store.get("BOM"))?.value).toBe("\ufeffsk-bom\nsecond line");
  });

  it("finds no secret in a FIFO, without waiting for a writer (its open would)", async () => {
    const { store, base } = await setup();
    execFileSync("mkfifo", [join(base, "secrets", "FIFO")]);
    expect(await store.get("FIFO")).toBeUndefined();
  });

  it("lists the files that are secrets: valid names resolving inside, not Kubernetes' links or escapes", async () => {
    const { store, base } = await setup();
    const dir = join(base, "secrets");
    await mkdir(join(dir, "..2026_11_26_data")); // Kubernetes' timestamped data dir
    await symlink(join(dir, "..2026_11_26_data"), join(dir, "..data"));
    await mkdir(join(dir, "subdir"));
    await symlink(join(dir, "nowhere"), join(dir, "DANGLING"));
    const page = await store.list?.({ limit: 10 });
    expect(page).toEqual({ names: ["ALIAS", "AZURE_API_KEY", "openai_api_key"] });
    // What list leaves out, get does not find (a directory was a 500 store_unavailable).
    expect(await store.get("subdir")).toBeUndefined();
    expect(await store.get("SUBDIR")).toBeUndefined();
    expect(await store.get("DANGLING")).toBeUndefined();
    expect(await store.list?.({ limit: 2 })).toMatchObject({
      names: ["ALIAS", "AZURE_API_KEY"],
      cursor: expect.any(String),
    });
    const missing = await dockerStore.open(
      { config: { secrets_path: join(base, "none") }, env: {} },
      { dataDir: "/x", env: {}, log: silentLogger, now: Date.now },
    );
    expect(await missing.list?.({ limit: 10 })).toEqual({ names: [] });
  });

  it("defaults to /run/secrets, secrets_path unset or null (as LiteLLM's later fix)", async () => {
    for (const config of [{}, { secrets_path: null }]) {
      const store = await dockerStore.open(
        { config, env: {} },
        { dataDir: "/x", env: {}, log: silentLogger, now: Date.now },
      );
      expect(store).toBeInstanceOf(DockerSecretsStore);
      expect((store as DockerSecretsStore).dir, JSON.stringify(config)).toBe("/run/secrets");
    }
  });
});
