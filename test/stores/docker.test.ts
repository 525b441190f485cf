// The docker store beyond the conformance suite: the lower-case fallback, values read as LiteLLM
// reads them, the names and symlinks that would leave the secrets directory, refused, a missing
// directory, and a Kubernetes secret updated while read.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createLogger, silentLogger } from "../../core/src/log";
import { DockerSecretsStore, DockerSettings, dockerStore } from "../../core/src/stores/docker";
import { safeParse } from "../../core/src/validation";
import { codeOf, pythonFor, tempDir } from "../helpers";

/** LiteLLM's `_read_file` for the parity check: any python3 will do. */
const PYTHON = pythonFor("sys", "python3");

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

  it("refuses a file larger than its largest value, as store_corrupt naming only the file", async () => {
    const { store, base } = await setup();
    const dir = join(base, "secrets");
    const max = dockerStore.capabilities.maxValueBytes;
    await writeFile(join(dir, "HUGE"), "h".repeat(max + 1));
    await writeFile(join(dir, "LARGEST"), "l".repeat(max));
    await writeFile(join(dir, "BOM"), "\ufeffsk-bom\nsecond line\n");
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
  });

  it("answers store_unavailable for a secrets directory that does not exist, never 'not found', and warns at open", async () => {
    const base = await tempDir();
    const lines: string[] = [];
    const missing = await dockerStore.open(
      { config: { secrets_path: join(base, "none") }, env: {} },
      { dataDir: "/x", env: {}, log: createLogger((line) => lines.push(line)), now: Date.now },
    );
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] as string)).toMatchObject({
      level: "warn",
      msg: "the docker secrets directory does not exist: check secrets_path in key_management_settings",
      secrets_path: join(base, "none"),
    });
    for (const answer of [
      () => missing.get("OPENAI_API_KEY"),
      () => missing.get("lower"),
      () => missing.list?.({ limit: 10 }),
    ]) {
      const err = await answer()?.catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: "store_unavailable",
        message: "docker secrets: the secrets directory does not exist: check secrets_path in key_management_settings",
      });
    }
    // A file where the directory belongs: the same, and the warning says so.
    await writeFile(join(base, "afile"), "x");
    const file = await dockerStore.open(
      { config: { secrets_path: join(base, "afile") }, env: {} },
      { dataDir: "/x", env: {}, log: createLogger((line) => lines.push(line)), now: Date.now },
    );
    expect(lines[1]).toContain("the docker secrets directory is not a directory");
    expect(await codeOf(file.get("X"))).toBe("store_unavailable");
    expect(await codeOf(file.list?.({ limit: 10 }))).toBe("store_unavailable");
    // Once the directory is there (a volume mounted late), its secrets are found.
    await mkdir(join(base, "none"));
    await writeFile(join(base, "none", "OPENAI_API_KEY"), "sk-late\n");
    expect((await missing.get("OPENAI_API_KEY"))?.value).toBe("sk-late");
  });

  it("finds no secret in a symlink loop, a name longer than the filesystem takes, or a Unix socket (as LiteLLM)", async () => {
    const { store, base } = await setup();
    const dir = join(base, "secrets");
    await symlink("LOOP", join(dir, "LOOP")); // ELOOP
    await symlink("PONG", join(dir, "PING"));
    await symlink("PING", join(dir, "PONG"));
    await symlink("AZURE_API_KEY/x", join(dir, "THROUGH_A_FILE")); // ENOTDIR
    const socket = createServer();
    await new Promise<void>((resolve) => socket.listen(join(dir, "SOCKET"), resolve)); // ENXIO on open
    try {
      for (const name of ["LOOP", "PING", "THROUGH_A_FILE", "SOCKET", "K".repeat(256)]) {
        expect(await store.get(name), name.slice(0, 20)).toBeUndefined();
      }
    } finally {
      await new Promise((resolve) => socket.close(resolve));
    }
  });

  it("refuses a symlink to a socket outside the directory as leading outside, before opening it", async () => {
    const { store, base } = await setup();
    const socket = createServer();
    await new Promise<void>((resolve) => socket.listen(join(base, "outside.sock"), resolve));
    try {
      await symlink(join(base, "outside.sock"), join(base, "secrets", "SOCKET_OUT"));
      expect(await codeOf(store.get("SOCKET_OUT"))).toBe("invalid_name"); // not "no secret"
    } finally {
      await new Promise((resolve) => socket.close(resolve));
    }
  });

  it("trims a value whose long run of spaces is inside it, not at its end, in linear time", async () => {
    // A `[...]+$` pattern tries again from each of the spaces: minutes for a file of this size.
    const { store, base } = await setup();
    const inner = " ".repeat(200_000);
    await writeFile(join(base, "secrets", "SPACES"), `${inner}x \n`);
    expect((await store.get("SPACES"))?.value).toBe(`${inner}x`);
  }, 10_000); // the pattern took about a minute here; the walk, a millisecond

  it("reads a Kubernetes-mounted secret that is updated meanwhile (atomic_writer's swap of ..data), never as missing", async () => {
    // kubelet's layout: NAME -> ..data/NAME, ..data -> ..<timestamp>; an update writes a new
    // timestamped directory, renames a new link over ..data, then removes the old directory.
    const dir = await tempDir();
    const version = (i: number) => {
      const ts = `..2026_01_01_00_00_${String(i).padStart(4, "0")}`;
      mkdirSync(join(dir, ts));
      writeFileSync(join(dir, ts, "OPENAI_API_KEY"), `sk-v${i}\n`);
      return ts;
    };
    let current = version(0);
    symlinkSync(current, join(dir, "..data"));
    symlinkSync(join("..data", "OPENAI_API_KEY"), join(dir, "OPENAI_API_KEY"));
    const store = new DockerSecretsStore(dir);
    const blocked = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 1; i <= 40; i++) {
      const next = version(i);
      symlinkSync(next, join(dir, "..data_tmp"));
      const read = store.get("OPENAI_API_KEY");
      // The read has begun (its first step on libuv's threads); this thread waits 0-3 ms, then swaps
      // before the read goes on: a read that resolved the old ..data and then opens what it found
      // meets a removed directory.
      Atomics.wait(blocked, 0, 0, i % 4);
      renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
      rmSync(join(dir, current), { recursive: true });
      current = next;
      expect([`sk-v${i - 1}`, `sk-v${i}`], `read ${i}`).toContain((await read)?.value);
    }
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe("sk-v40");
  });

  it("reads a value as LiteLLM's _read_file: UTF-8 else Latin-1, \\r\\n and \\r as \\n, Python's trailing whitespace stripped", async () => {
    const dir = await tempDir();
    const store = new DockerSecretsStore(dir);
    // bytes -> value
    const table: [string, Buffer, string][] = [
      [
        "CRLF_PEM",
        Buffer.from("-----BEGIN KEY-----\r\nabc\r\n-----END KEY-----\r\n"),
        "-----BEGIN KEY-----\nabc\n-----END KEY-----",
      ],
      ["LONE_CR", Buffer.from("a\rb\r"), "a\nb"],
      ["CR_CR_LF", Buffer.from("a\r\r\nb"), "a\n\nb"],
      ["UNIT_SEP", Buffer.from("sk-x\x1f"), "sk-x"],
      ["FILE_SEP", Buffer.from("sk-x\x1c\x1d\x1e \t\v\f"), "sk-x"],
      ["TRAILING_FEFF", Buffer.from("sk-x\ufeff\n"), "sk-x\ufeff"],
      ["BOM_ONLY", Buffer.from("\ufeff"), "\ufeff"],
      ["LEADING_SPACE", Buffer.from("  sk-x \n"), "  sk-x"],
      ["NEL", Buffer.from("sk-x\u0085"), "sk-x"],
      ["LINE_SEP", Buffer.from("sk-x\u2028\u2029\u3000\u00a0"), "sk-x"],
      ["ZERO_WIDTH", Buffer.from("sk-x\u200b"), "sk-x\u200b"],
      ["LATIN1", Buffer.from([0x73, 0x6b, 0x2d, 0x63, 0x61, 0x66, 0xe9, 0x0a]), "sk-caf\u00e9"],
      // Latin-1, every byte a character: 0x80-0x9f are the C1 controls (not windows-1252's), 0x85 stripped.
      ["LATIN1_C1", Buffer.from([0x80, 0x9f, 0xff, 0x85, 0x0d, 0x0a]), "\u0080\u009f\u00ff"],
      ["EMPTY", Buffer.alloc(0), ""],
    ];
    for (const [name, bytes] of table) writeFileSync(join(dir, name), bytes);
    for (const [name, , value] of table) expect((await store.get(name))?.value, name).toBe(value);
    if (PYTHON === undefined) return;
    // And as python3 itself reads them, LiteLLM's way.
    const script = [
      "import json, os, sys",
      "def read(p):",
      "    try:",
      '        with open(p, "r", encoding="utf-8") as f: return f.read().rstrip()',
      "    except UnicodeDecodeError:",
      '        with open(p, "r", encoding="latin-1") as f: return f.read().rstrip()',
      "print(json.dumps({n: read(os.path.join(sys.argv[1], n)) for n in json.loads(sys.argv[2])}))",
    ].join("\n");
    const run = spawnSync(PYTHON, ["-c", script, dir, JSON.stringify(table.map(([name]) => name))], {
      encoding: "utf8",
    });
    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual(Object.fromEntries(table.map(([name, , value]) => [name, value])));
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

  it("the name as written wins over its lower case when both files exist", async () => {
    const { store, base } = await setup();
    await writeFile(join(base, "secrets", "DUP"), "sk-upper\n");
    await writeFile(join(base, "secrets", "dup"), "sk-lower\n");
    expect((await store.get("DUP"))?.value).toBe("sk-upper");
    expect((await store.get("dup"))?.value).toBe("sk-lower");
  });

  it("lists no regular file whose name is not a secret name (hidden, or a leading _)", async () => {
    const { store, base } = await setup();
    await writeFile(join(base, "secrets", ".hidden"), "not a name\n");
    await writeFile(join(base, "secrets", "_private"), "not a name\n");
    expect(await store.list?.({ limit: 10 })).toEqual({ names: ["ALIAS", "AZURE_API_KEY", "openai_api_key"] });
  });

  it("refuses an empty secrets_path (it would read names as files of the working directory)", () => {
    expect(safeParse(DockerSettings, { config: { secrets_path: "" }, env: {} }).success).toBe(false);
    expect(safeParse(DockerSettings, { config: { secrets_path: "/run/secrets" }, env: {} }).success).toBe(true);
  });
});
