// The `llm-secrets` CLI, run as a child process from its bundle (SPEC section 1).
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
import { chmod, cp, mkdir, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it, onTestFinished } from "vitest";
import corePackage from "../../core/package.json" with { type: "json" };
import { LOCAL_STORES } from "../../core/src/cli";
import { KeyRing, openSecret, sealSecret } from "../../core/src/crypto";
import {
  cleanEnv,
  cliPath,
  expectNoValueIn,
  fetchJson,
  newKey,
  runCli,
  runProcess,
  ServerProcess,
  secretValue,
  tempDir,
  until,
} from "../helpers";

async function setup(extra: Record<string, string> = {}) {
  const dir = await tempDir();
  const env = cleanEnv({ LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_DATA_DIR: join(dir, "data"), ...extra });
  return { dir, env, cli: (args: string[], input?: string) => runCli(args, { env, cwd: dir, input }) };
}

describe("secrets from the command line", () => {
  it("puts from stdin, gets, deletes, with exit codes 0, 1 and 2", async () => {
    const { cli } = await setup();
    const v = secretValue();
    let r = await cli(["put", "OPENAI_API_KEY"], `${v}\n`);
    expect(r).toMatchObject({ code: 0, stdout: "" });
    expect(r.stderr).toBe("created OPENAI_API_KEY\n");
    r = await cli(["get", "OPENAI_API_KEY"]);
    expect(r).toMatchObject({ code: 0, stdout: `${v}\n` });
    r = await cli(["put", "OPENAI_API_KEY", "--description", "rotated"], "second");
    expect(r.stderr).toBe("updated OPENAI_API_KEY\n");
    expect((await cli(["get", "OPENAI_API_KEY"])).stdout).toBe("second\n");
    expect((await cli(["delete", "OPENAI_API_KEY"])).code).toBe(0);

    r = await cli(["get", "OPENAI_API_KEY"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("llm-secrets: not_found: secret OPENAI_API_KEY not found\n");
    expectNoValueIn([r.stderr], [v]);
  });

  it("keeps a value's leading byte order mark, as the API does (put, then get; encrypt, then decrypt)", async () => {
    const { cli } = await setup();
    const v = `\uFEFF${secretValue()}`;
    expect((await cli(["put", "BOM"], v)).code).toBe(0);
    expect((await cli(["get", "BOM"])).stdout).toBe(`${v}\n`);
    const sealed = (await cli(["encrypt"], v)).stdout.trim();
    expect((await cli(["decrypt"], sealed)).stdout).toBe(`${v}\n`);
  });

  it("get exits 1 when its answer cannot be written (stdout's reader gone), not 0", async () => {
    const { dir, env, cli } = await setup();
    await cli(["put", "PIPED"], secretValue());
    const child = spawn(process.execPath, [cliPath(), "get", "PIPED"], {
      env,
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.destroy(); // `llm-secrets get PIPED | reader-that-died`
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(code).toBe(1);
    expect(stderr).not.toMatch(/^\s+at /m); // no stack trace of an unheard error
  });

  it("says once on stderr that stdout cannot be written, whatever the command (reader gone, disk full)", async () => {
    const salt = newKey("salt-");
    const { dir, env, cli } = await setup({ LITELLM_SALT_KEY: salt });
    await cli(["put", "PIPED"], secretValue());
    const sealed = `${sealSecret("v", new KeyRing(salt))}\n`;
    const commands: [string[], string][] = [
      [["get", "PIPED"], ""],
      [["encrypt"], "v"],
      [["decrypt"], sealed],
      [["reencrypt", "-"], sealed],
      [["--version"], ""],
      [["--help"], ""],
    ];
    for (const [args, input] of commands) {
      const child = spawn(process.execPath, [cliPath(), ...args], { env, cwd: dir, stdio: ["pipe", "pipe", "pipe"] });
      child.stdout.destroy();
      let stderr = "";
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      child.stdin.end(input);
      const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
      expect([code, stderr], args.join(" ")).toEqual([1, "llm-secrets: cannot write to stdout (EPIPE)\n"]);
    }
    // A full disk: the write fails at once, with its own code.
    const full = openSync("/dev/full", "w");
    const child = spawn(process.execPath, [cliPath(), "--version"], { env, cwd: dir, stdio: ["ignore", full, "pipe"] });
    closeSync(full);
    let stderr = "";
    child.stderr?.on("data", (d) => {
      stderr += d;
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect([code, stderr]).toEqual([1, "llm-secrets: cannot write to stdout (ENOSPC)\n"]);
  });

  it("--version exits 1, without a stack trace, when its stdout's reader is gone", async () => {
    const { dir, env } = await setup();
    const child = spawn(process.execPath, [cliPath(), "--version"], {
      env,
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(code).toBe(1);
    expect(stderr).not.toMatch(/^\s+at /m);
  });

  it("answers usage errors with 2 and one line on stderr", async () => {
    const { cli } = await setup();
    // The store is there (get and delete refuse a data dir that is not, before they read a name).
    await cli(["put", "A"], "a");
    for (const args of [
      ["frobnicate"],
      ["get"],
      ["get", "a", "b"],
      ["put"],
      ["get", "a/../b"],
      ["serve", "--port", "x"],
      ["serve", "--port", "0", "--ssl_keyfile_path", "key.pem"],
      ["get", "A", "--bogus"],
      [],
    ]) {
      const r = await cli(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr.trim().split("\n").at(-1)).toMatch(/^llm-secrets: /);
    }
    // An empty value is refused as the API refuses it, before any store is touched.
    const empty = await cli(["put", "EMPTY"], "\n");
    expect(empty.code).toBe(2);
    expect(empty.stderr).toBe("llm-secrets: invalid_request: the value is empty (it comes from stdin)\n");
    const typo = secretValue("typed-in-the-wrong-place");
    const unknown = await cli([typo]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe("llm-secrets: unknown command (see llm-secrets --help)\n");
    // An unknown option is not repeated either: `--sk-...` may be a key typed in the wrong place.
    const option = await cli(["get", "A", `--${typo}`]);
    expect(option.code).toBe(2);
    expect(option.stderr).toBe("llm-secrets: unknown option (argument 3) (see llm-secrets --help)\n");
    // A short one is placed too, after an option with its value.
    const later = await cli(["put", "X", "--description", "d", "-z"], "v");
    expect(later.stderr).toBe("llm-secrets: unknown option (argument 5) (see llm-secrets --help)\n");
    // Another command's option is refused, not ignored (`put --host remote.example` wrote the local
    // store), naming the option and who takes it, never its value.
    const remote = secretValue("remote");
    const misplaced: [string[], string][] = [
      [["put", "T", "--host", remote], "put does not take --host (an option of serve)"],
      [["get", "T", "--port", "4000"], "get does not take --port (an option of serve)"],
      [["get", "T", "--show-values"], "get does not take --show-values (an option of resolve)"],
      [["encrypt", "--refresh"], "encrypt does not take --refresh (an option of get)"],
      [["serve", "--description", remote], "serve does not take --description (an option of put)"],
    ];
    for (const [args, message] of misplaced) {
      const r = await cli(args, "v");
      expect([r.code, r.stdout, r.stderr], args.join(" ")).toEqual([
        2,
        "",
        `llm-secrets: ${message} (see llm-secrets --help)\n`,
      ]);
    }
    expect((await cli(["get", "T"])).stderr).toContain("not_found"); // the put wrote nothing
    // An option value that looks like an option: node's three-line message, said on one line.
    const ambiguous = await cli(["put", "X", "--description", "-foo"], "v");
    expect(ambiguous.code).toBe(2);
    expect(ambiguous.stderr).toMatch(/^llm-secrets: Option '--description' argument is ambiguous\. .+\n$/);
    expect(ambiguous.stderr.trim().split("\n")).toHaveLength(1);
    const help = await cli(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("usage: llm-secrets");
    expect((await cli(["--version"])).stdout).toBe(`${corePackage.version}\n`);
  });

  it("encrypts and decrypts stdin in LiteLLM's format with the salt key", async () => {
    const salt = newKey("salt-");
    const { cli, dir } = await setup({ LITELLM_SALT_KEY: salt });
    const v = secretValue();
    const enc = await cli(["encrypt"], `${v}\n`);
    expect(enc.code).toBe(0);
    const ciphertext = enc.stdout.trim();
    expect(openSecret(ciphertext, new KeyRing(salt))).toBe(v);
    expect(await cli(["decrypt"], enc.stdout)).toMatchObject({ code: 0, stdout: `${v}\n` });
    const bad = await cli(["decrypt"], `${ciphertext.slice(0, -8)}AAAAAAA=`);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^llm-secrets: decrypt_failed: /);
    // A LiteLLM ciphertext sealed under its example master key opens with its escape hatch (decrypt
    // serves no API); serve refuses that key whatever the flag says.
    const weak = { LITELLM_MASTER_KEY: "sk-1234", LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY: "true" };
    const sealedWeak = sealSecret("under-sk-1234", new KeyRing("sk-1234"));
    const opened = await runCli(["decrypt"], { env: cleanEnv(weak), cwd: dir, input: sealedWeak });
    expect([opened.code, opened.stdout]).toEqual([0, "under-sk-1234\n"]);
    const served = await runCli(["serve", "--port", "0"], { env: cleanEnv(weak), cwd: dir });
    expect(served.code).toBe(1);
    expect(served.stderr).toContain("taken only by commands that serve no API");
    // Empty stdin says so (not "not valid padded base64").
    const empty = await cli(["decrypt"], "\n");
    expect([empty.code, empty.stderr]).toEqual([
      1,
      "llm-secrets: decrypt_failed: decryption failed: the ciphertext is empty\n",
    ]);
    // access_mode: write_only refuses decrypt here as the API does.
    const writeOnly = {
      LLM_SECRETS_CONFIG: "general_settings:\n  key_management_settings:\n    access_mode: write_only\n",
    };
    const refused = await runCli(["decrypt"], {
      env: { ...cleanEnv({ LITELLM_SALT_KEY: salt }), ...writeOnly },
      input: enc.stdout,
    });
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toBe("llm-secrets: write_only: decryption is disabled: access_mode is write_only\n");
  });

  it("reads a config's key_management_system and refuses what it cannot do", async () => {
    const { cli, dir } = await setup({ FROM_ENV: "x" });
    await writeFile(join(dir, "local.yaml"), "general_settings:\n  key_management_system: local\n");
    const r = await cli(["put", "A", "--config", "local.yaml"], "v");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("read_only");
  });
});

describe("the terminal a value was typed at", () => {
  it("is back out of raw mode, and stdin still open, when the command goes on; a character may come in two chunks", async () => {
    const { main } = await import("../../core/src/cli");
    const dir = await tempDir();
    const modes: boolean[] = [];
    const terminal = Object.assign(new PassThrough(), {
      isTTY: true,
      setRawMode(mode: boolean) {
        modes.push(mode);
        return this;
      },
    });
    const out = new PassThrough();
    const err = new PassThrough();
    const masterKey = newKey();
    const done = main(["encrypt"], {
      stdin: terminal,
      stdout: out,
      stderr: err,
      env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: join(dir, "data") },
      cwd: dir,
    });
    await new Promise((r) => err.once("data", r)); // the prompt
    const e = Buffer.from("é");
    terminal.write(Buffer.concat([Buffer.from("caf"), e.subarray(0, 1)]));
    terminal.write(Buffer.concat([e.subarray(1), Buffer.from("\r")]));
    expect(await done).toBe(0);
    expect(modes).toEqual([true, false]);
    expect(terminal.destroyed).toBe(false); // raw mode is switched off on a live stream only
    // Sealed with the master key (no salt key): the value as typed, its é whole.
    expect(openSecret(String(out.read()).trim(), new KeyRing(masterKey))).toBe("café");
  });
});

describe("a value typed at a terminal, key by key", () => {
  /** `main` reading `keys` from a terminal (each string a chunk, written once the prompt is up). */
  async function typeAt(args: string[], keys: string[], dir: string, masterKey: string) {
    const { main } = await import("../../core/src/cli");
    const terminal = Object.assign(new PassThrough(), {
      isTTY: true,
      setRawMode() {
        return this;
      },
    });
    const out = new PassThrough();
    const err = new PassThrough();
    let stderr = "";
    err.on("data", (d: Buffer) => {
      stderr += d;
    });
    const done = main(args, {
      stdin: terminal,
      stdout: out,
      stderr: err,
      env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: join(dir, "data") },
      cwd: dir,
    });
    await until("the prompt", () => stderr.includes("(not shown; Enter ends it): "));
    for (const chunk of keys) {
      terminal.write(chunk);
      await new Promise((r) => setImmediate(r));
    }
    const code = await done;
    return { code, stdout: String(out.read() ?? ""), stderr, unread: terminal.readableLength };
  }

  it("refuses a control character (an arrow key, Ctrl-W, Ctrl-Z, Ctrl-\\) rather than store it; Ctrl-U erases", async () => {
    const dir = await tempDir();
    const masterKey = newKey();
    const refused =
      "llm-secrets: the value holds a control character (arrow keys are not supported here); pipe it instead (see llm-secrets --help)\n";
    for (const key of ["\u001b[D", "\u0017", "\u001a", "\u001c", "\t"]) {
      // Refused once Enter ends the line: what is typed after it is read, not left for the shell.
      const r = await typeAt(["encrypt"], [`abc${key}`, "def\r"], dir, masterKey);
      expect([r.code, r.stdout, r.unread], JSON.stringify(key)).toEqual([2, "", 0]);
      expect(r.stderr.endsWith(refused)).toBe(true);
    }
    const put = await typeAt(["put", "ARROWED"], ["abc\u001b[Ddef\r"], dir, masterKey);
    expect(put.code).toBe(2);
    const env = cleanEnv({ LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: join(dir, "data") });
    expect((await runCli(["get", "ARROWED"], { env, cwd: dir })).stderr).toContain("not_found");
    // Ctrl-U erases what was typed, an escape sequence too, as the terminal's own line editing does.
    const erased = await typeAt(["encrypt"], ["wrong\u001b[D\u0015right\r"], dir, masterKey);
    expect(erased.code).toBe(0);
    expect(openSecret(erased.stdout.trim(), new KeyRing(masterKey))).toBe("right");
  });

  it("exits 130 on Ctrl-C, with no usage hint", async () => {
    const dir = await tempDir();
    const r = await typeAt(["encrypt"], ["abc\u0003"], dir, newKey());
    expect([r.code, r.stdout]).toEqual([130, ""]);
    expect(r.stderr.endsWith("\nllm-secrets: no value: interrupted\n")).toBe(true);
  });
});

describe("a ciphertext pasted at a terminal", () => {
  it("is asked for on stderr, saying how to end it: decrypt and reencrypt -", async () => {
    const { main } = await import("../../core/src/cli");
    const dir = await tempDir();
    const masterKey = newKey();
    const sealed = sealSecret("pasted", new KeyRing(masterKey));
    for (const [args, prompt] of [
      [["decrypt"], "the ciphertext to decrypt (paste, then Enter and Ctrl-D):\n"],
      [["reencrypt", "-"], "the ciphertexts to re-seal, one a line (paste, then Enter and Ctrl-D):\n"],
    ] as const) {
      // Cooked mode (no setRawMode): the terminal echoes, and Ctrl-D ends the input.
      const terminal = Object.assign(new PassThrough(), { isTTY: true });
      const out = new PassThrough();
      const err = new PassThrough();
      let stderr = "";
      err.on("data", (d: Buffer) => {
        stderr += d;
      });
      const done = main([...args], {
        stdin: terminal,
        stdout: out,
        stderr: err,
        env: { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: join(dir, "data") },
        cwd: dir,
      });
      await until("the prompt", () => stderr.length > 0);
      expect(stderr, args[0]).toBe(prompt);
      terminal.end(`${sealed}\n`);
      expect(await done).toBe(0);
      const answer = String(out.read()).trim();
      expect(args[0] === "decrypt" ? answer : openSecret(answer, new KeyRing(masterKey))).toBe("pasted");
    }
  });
});

describe("a data dir that is not there", () => {
  it("is refused by get, delete, resolve and reencrypt, naming it, and nothing is made there; put makes it", async () => {
    const { cli, dir, env } = await setup();
    const data = env.LLM_SECRETS_DATA_DIR as string;
    await writeFile(
      join(dir, "config.yaml"),
      "model_list:\n  - {model_name: a, litellm_params: {model: x, api_key: os.environ/A}}\n",
    );
    for (const args of [["get", "A"], ["delete", "A"], ["resolve", "--config", "config.yaml"], ["reencrypt"]]) {
      const r = await cli(args);
      expect([r.code, r.stdout], args[0]).toEqual([1, ""]);
      // Not `not_found`, `deleted A` or `re-sealed 0 secret(s)` from an empty store made there.
      expect(r.stderr, args[0]).toMatch(/^llm-secrets: no file store at [^\n]*\n$/);
      expect(r.stderr).toContain(`no file store at ${data}: the data dir does not exist (LLM_SECRETS_DATA_DIR;`);
      expect(existsSync(data), args[0]).toBe(false);
    }
    // The default, .llm-secrets in the working dir: named, and not made either (nor a master.key).
    const here = await runCli(["get", "A"], { env: cleanEnv({ LITELLM_MASTER_KEY: newKey() }), cwd: dir });
    expect(here.code).toBe(1);
    expect(here.stderr).toContain(`no file store at ${join(dir, ".llm-secrets")}:`);
    expect((await readdir(dir)).sort()).toEqual(["config.yaml"]);
    // A dir that is there but holds no store (LLM_SECRETS_DATA_DIR pointed at $HOME): refused too,
    // and nothing made in it.
    const other = await runCli(["get", "A"], { env: { ...env, LLM_SECRETS_DATA_DIR: dir }, cwd: dir });
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(`no file store at ${dir}: the data dir holds no secrets.log (LLM_SECRETS_DATA_DIR;`);
    expect((await readdir(dir)).sort()).toEqual(["config.yaml"]);
    // put makes the store; the others then use it.
    expect((await cli(["put", "A"], "a")).code).toBe(0);
    expect((await cli(["get", "A"])).stdout).toBe("a\n");
    expect((await cli(["delete", "A"])).stderr).toBe("deleted A\n");
  });
});

describe("stdin without end", () => {
  it("is refused past 64 MiB (payload_too_large, exit 1), not read until memory runs out", async () => {
    const { dir, env } = await setup();
    for (const args of [["put", "ENDLESS"], ["encrypt"]]) {
      const zero = openSync("/dev/zero", "r");
      const child = spawn(process.execPath, [cliPath(), ...args], { env, cwd: dir, stdio: [zero, "pipe", "pipe"] });
      closeSync(zero);
      onTestFinished(() => {
        child.kill("SIGKILL"); // one that reads on would eat the machine's memory
      });
      let stderr = "";
      child.stderr?.on("data", (d: Buffer) => {
        stderr += d;
      });
      const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
      expect(code, args[0]).toBe(1);
      expect(stderr).toContain("payload_too_large: stdin holds more than 67108864 bytes");
    }
  });
});

// A terminal, made with util-linux's `script` (a pty between it and the command).
const SCRIPT = ["/usr/bin/script", "/bin/script"].find((p) => existsSync(p));

describe("a value typed at a terminal", () => {
  it.skipIf(!SCRIPT)("is not echoed, nor left in the scrollback: put and encrypt", async () => {
    const { dir, env } = await setup();
    const typed = async (args: string[], keys: string) => {
      const command = [process.execPath, cliPath(), ...args].map((a) => `'${a}'`).join(" ");
      const child = spawn(SCRIPT as string, ["-qec", command, "/dev/null"], { env, cwd: dir });
      let screen = "";
      child.stderr.on("data", (d: Buffer) => {
        screen += d;
      });
      const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
      child.stdout.on("data", (d: Buffer) => {
        screen += d;
        // Typed only once the prompt is up: the terminal echoes what comes before.
        if (screen.includes("(not shown; Enter ends it): ") && !child.stdin.writableEnded) child.stdin.end(keys);
      });
      return { code: await exited, screen };
    };
    const value = secretValue("typed");
    // A typo mended with backspace, then Enter.
    const put = await typed(["put", "TYPED"], `${value}x\u007f\r`);
    expect(put.code).toBe(0);
    expect(put.screen).toContain("created TYPED");
    expect(put.screen).not.toContain(value);
    expect((await runCli(["get", "TYPED"], { env, cwd: dir })).stdout).toBe(`${value}\n`);
    const encrypted = await typed(["encrypt"], `${value}\r`);
    expect(encrypted.code).toBe(0);
    expect(encrypted.screen).not.toContain(value);
    // Ctrl-C gives up, storing nothing, with the exit code of an interrupted command.
    const interrupted = await typed(["put", "GIVEN_UP"], `${value}\u0003`);
    expect(interrupted.code).toBe(130);
    expect(interrupted.screen).not.toContain("--help");
    expect((await runCli(["get", "GIVEN_UP"], { env, cwd: dir })).code).toBe(1);
  });
});

describe("a cloud store's errors on the command line", () => {
  it("come last on stderr, after the store call's log line, with no AWS SDK Node-version notice (seven lines under Node 20)", async () => {
    const aws = {
      LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: aws_secret_manager\n",
      AWS_REGION: "eu-west-1",
      AWS_ACCESS_KEY_ID: "AKIAEXAMPLE",
      AWS_SECRET_ACCESS_KEY: "example-secret",
      AWS_ENDPOINT_URL_SECRETS_MANAGER: "http://127.0.0.1:1", // nothing listens: the store is unreachable
      AWS_MAX_ATTEMPTS: "1",
    };
    const { cli } = await setup(aws);
    const r = await cli(["get", "OPENAI_API_KEY"]);
    expect(r.code).toBe(1);
    // The log line first (it was buffered, and came after the error), then the error, last.
    const lines = r.stderr.split("\n");
    expect(lines).toHaveLength(3);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ msg: "store call failed", code: "backend_unavailable" });
    expect(lines[1]).toMatch(/^llm-secrets: backend_unavailable: aws secrets manager get: /);
    expect(lines[2]).toBe("");
    expect(r.stderr).not.toContain("NodeVersionSupportWarning");
    // The user's own setting is kept: "false" brings the notice back where the SDK gives one.
    if (Number(process.versions.node.split(".")[0]) < 22) {
      const kept = await setup({ ...aws, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "false" });
      expect((await kept.cli(["get", "OPENAI_API_KEY"])).stderr).toContain("NodeVersionSupportWarning");
    }
  });
});

describe("access_mode and hosted_keys on the command line", () => {
  it("read_only refuses put and delete; write_only refuses get; hosted_keys refuses other names", async () => {
    const { cli, dir } = await setup();
    await cli(["put", "A"], "a");
    await cli(["put", "B"], "b");
    const write = (file: string, kms: string) =>
      writeFile(join(dir, file), `general_settings:\n  key_management_settings:\n${kms}`);
    await write("ro.yaml", "    access_mode: read_only\n");
    await write("wo.yaml", "    access_mode: write_only\n");
    await write("hosted.yaml", "    hosted_keys: [A]\n");

    const ro = await cli(["put", "A", "--config", "ro.yaml"], "changed");
    expect(ro.code).toBe(1);
    expect(ro.stderr).toMatch(/^llm-secrets: read_only: /);
    expect((await cli(["delete", "A", "--config", "ro.yaml"])).stderr).toMatch(/read_only/);
    expect((await cli(["get", "A", "--config", "ro.yaml"])).stdout).toBe("a\n");

    const wo = await cli(["get", "A", "--config", "wo.yaml"]);
    expect(wo.code).toBe(1);
    expect(wo.stderr).toMatch(/^llm-secrets: write_only: /);
    expect((await cli(["put", "C", "--config", "wo.yaml"], "c")).code).toBe(0);

    expect((await cli(["get", "A", "--config", "hosted.yaml"])).stdout).toBe("a\n");
    const other = await cli(["get", "B", "--config", "hosted.yaml"]);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/^llm-secrets: not_hosted: /);
  });
});

describe("resolve", () => {
  it("says where each ref resolves from, never printing values unless asked", async () => {
    const envValue = secretValue("env");
    const stored = secretValue("stored");
    const { cli, dir } = await setup({ FROM_ENV: envValue });
    await cli(["put", "AZURE_API_KEY"], stored);
    await writeFile(
      join(dir, "config.yaml"),
      [
        "model_list:",
        "  - model_name: azure",
        "    litellm_params: {model: azure/gpt-4o, api_key: os.environ/AZURE_API_KEY, api_base: os.environ/FROM_ENV}",
        "  - model_name: other",
        "    litellm_params: {model: openai/gpt-4o, api_key: os.environ/NOWHERE}",
      ].join("\n"),
    );
    const r = await cli(["resolve", "--config", "config.yaml"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("AZURE_API_KEY\tstore\nFROM_ENV\tenv\nNOWHERE\tunresolved\tnot_found\n");
    expect(r.stderr).toContain("unresolved_refs");
    expect(r.stderr).toContain("NOWHERE");
    expectNoValueIn([r.stdout, r.stderr], [envValue, stored]);

    const shown = await cli(["resolve", "--config", "config.yaml", "--show-values"]);
    expect(JSON.parse(shown.stdout).model_list[0].litellm_params).toEqual({
      model: "azure/gpt-4o",
      api_key: stored,
      api_base: envValue,
    });
    expect((await cli(["resolve"])).code).toBe(2);

    // A ref whose name holds a tab or a newline (no name, so unresolved) keeps its one line: it
    // cannot forge a line of its own in the output, nor a second line of the error.
    await writeFile(join(dir, "forged.yaml"), 'api_key: "os.environ/a\\tb\\nFAKE\\tstore"\n');
    const forged = await cli(["resolve", "--config", "forged.yaml"]);
    expect(forged.stdout).toBe('"a\\tb\\nFAKE\\tstore"\tunresolved\tinvalid_name\n');
    expect(forged.stderr).toContain('did not resolve: "a\\tb\\nFAKE\\tstore"\n');
  });

  it("takes the environment for names outside hosted_keys, as LiteLLM does", async () => {
    const envValue = secretValue("env");
    const { cli, dir } = await setup({ AZURE_API_KEY: envValue });
    await cli(["put", "AZURE_API_KEY"], "from-the-store");
    await writeFile(
      join(dir, "config.yaml"),
      "general_settings:\n  key_management_settings:\n    hosted_keys: [OTHER]\nmodel_list:\n  - model_name: a\n    litellm_params: {model: azure/x, api_key: os.environ/AZURE_API_KEY}\n",
    );
    const r = await cli(["resolve", "--config", "config.yaml"]);
    expect(r).toMatchObject({ code: 0, stdout: "AZURE_API_KEY\tenv\n" });
    // Outside hosted_keys and not in the environment: unresolved, saying why the store was not read.
    await writeFile(
      join(dir, "config.yaml"),
      "general_settings:\n  key_management_settings:\n    hosted_keys: [OTHER]\nmodel_list:\n  - model_name: a\n    litellm_params: {model: azure/x, api_key: os.environ/UNHOSTED, api_base: os.environ/a/../b, api_version: os.environ/}\n",
    );
    const unhosted = await cli(["resolve", "--config", "config.yaml"]);
    // Three columns each, an empty name included (its column stays, empty).
    expect(unhosted).toMatchObject({
      code: 1,
      stdout: "UNHOSTED\tunresolved\tnot_hosted\na/../b\tunresolved\tinvalid_name\n\tunresolved\tinvalid_name\n",
    });
  });
});

describe("salt keys and reencrypt", () => {
  it("refuses a set-but-empty LITELLM_SALT_KEY, naming it", async () => {
    const { cli } = await setup({ LITELLM_SALT_KEY: "" });
    for (const args of [["get", "A"], ["encrypt"], ["serve", "--port", "0"]]) {
      const r = await cli(args, "x");
      expect(r.code, args[0]).toBe(1);
      expect(r.stderr).toContain("LITELLM_SALT_KEY");
    }
  });

  it("moves a whole file store to a new salt key without losing an entry", async () => {
    const oldSalt = newKey("old-");
    const newSalt = newKey("new-");
    const { cli, env, dir } = await setup({ LITELLM_SALT_KEY: oldSalt });
    const values = Array.from({ length: 12 }, (_, i) => secretValue(`v${i}`));
    for (const [i, v] of values.entries()) expect((await cli(["put", `K${i}`], v)).code).toBe(0);

    const rotated = { ...env, LITELLM_SALT_KEY: newSalt, LLM_SECRETS_PREVIOUS_SALT_KEYS: JSON.stringify([oldSalt]) };
    // Before reencrypt, values sealed under the previous key still open.
    expect((await runCli(["get", "K3"], { env: rotated, cwd: dir })).stdout).toBe(`${values[3]}\n`);
    const r = await runCli(["reencrypt"], { env: rotated, cwd: dir });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("re-sealed 12 of 12");
    expect(r.stderr).toContain("re-sealed 12 secret(s)");

    const onlyNew = { ...env, LITELLM_SALT_KEY: newSalt };
    for (const [i, v] of values.entries()) {
      expect((await runCli(["get", `K${i}`], { env: onlyNew, cwd: dir })).stdout).toBe(`${v}\n`);
    }
    // The store is now sealed under the new key only: the old one no longer opens it.
    const withOld = await runCli(["get", "K0"], { env: { ...env, LITELLM_SALT_KEY: oldSalt }, cwd: dir });
    expect(withOld.code).toBe(1);
    expect(withOld.stdout).toBe("");
  }, 60_000); // some 28 CLI processes: 13-20 s seen beside a busy CPU

  it("run without the new key (only the one the store is sealed with), says there is nothing to re-seal and how to rotate", async () => {
    // Before: in a shell without the servers' keys it re-sealed under the key the store already had,
    // said "re-sealed 1 secret(s) ... under the current salt key", exit 0; the operator then dropped
    // that key, and the servers no longer started.
    const oldSalt = newKey("old-");
    const { cli, dir, env } = await setup({ LITELLM_SALT_KEY: oldSalt });
    expect((await cli(["put", "K"], secretValue("k"))).code).toBe(0);
    const before = await readFile(join(dir, "data", "secrets.log"));
    const r = await cli(["reencrypt"], "");
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(
      /^nothing to re-seal: every secret in .* is already sealed under the current salt key \(key check [A-Za-z0-9_-]{8}\)\. To rotate, .*LITELLM_SALT_KEY.*LLM_SECRETS_PREVIOUS_SALT_KEYS\n$/,
    );
    expect(r.stderr).not.toContain(oldSalt);
    expect(await readFile(join(dir, "data", "secrets.log"))).toEqual(before);
    // With the new key and the old one as previous, it moves them, and names the new key's check.
    const rotated = {
      ...env,
      LITELLM_SALT_KEY: newKey("new-"),
      LLM_SECRETS_PREVIOUS_SALT_KEYS: JSON.stringify([oldSalt]),
    };
    const moved = await runCli(["reencrypt"], { env: rotated, cwd: dir });
    expect(moved.stderr).toMatch(
      /re-sealed 1 secret\(s\) in .* under the current salt key \(key check [A-Za-z0-9_-]{8}\); 1 of them was sealed under another key\. Drop a previous key only once every server runs with this one as its salt key \(LITELLM_SALT_KEY, or the master key without one\)\n$/,
    );
    expect(moved.stderr.match(/key check (\S{8})/)?.[1]).not.toBe(r.stderr.match(/key check (\S{8})/)?.[1]);
  }, 60_000);

  it("re-seals a format-1 store migrated by a process without the old key (its log records only the keys that process had)", async () => {
    // Before: the migration recorded only the current key's check, so reencrypt, run with the old
    // key listed as README says, said "nothing to re-seal" and wrote nothing; the operator dropped
    // the old key, and the entry sealed under it no longer opened.
    const current = "llm-secrets-TEST-ONLY-fixture-salt-v1";
    const previous = "llm-secrets-TEST-ONLY-fixture-salt-v0";
    const { dir, env } = await setup({ LITELLM_SALT_KEY: current });
    await cp(join(import.meta.dirname, "../fixtures/file-store-v1/data"), join(dir, "data"), { recursive: true });
    // A plain read with the current key alone migrates the store.
    const read = await runCli(["get", "OPENAI_API_KEY"], { env, cwd: dir });
    expect(read).toMatchObject({ code: 0, stdout: "fixture-openai-value\n" });
    const rotated = { ...env, LLM_SECRETS_PREVIOUS_SALT_KEYS: JSON.stringify([previous]) };
    const r = await runCli(["reencrypt"], { env: rotated, cwd: dir });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(
      /re-sealed 7 secret\(s\) .*; 1 of them was sealed under another key\. Drop a previous key only once/,
    );
    const after = await runCli(["get", "ROTATED_FROM_V0"], { env, cwd: dir });
    expect(after).toMatchObject({ code: 0, stdout: "sealed-under-the-previous-key\n" });
  }, 60_000);

  it("re-seals ciphertexts from stdin, all or nothing", async () => {
    const oldSalt = newKey("old-");
    const newSalt = newKey("new-");
    const { cli } = await setup({
      LITELLM_SALT_KEY: newSalt,
      LLM_SECRETS_PREVIOUS_SALT_KEYS: JSON.stringify([oldSalt]),
    });
    const old = new KeyRing(oldSalt);
    // A blank line (a NULL of an exported column) stays a blank line: line n out is line n in.
    const input = `${sealSecret("one", old)}\n\n${sealSecret("two", old)}\n`;
    const r = await cli(["reencrypt", "-"], input);
    expect(r.code).toBe(0);
    expect(r.stdout.endsWith("\n")).toBe(true);
    const lines = r.stdout.slice(0, -1).split("\n");
    expect(lines.map((l) => (l === "" ? "" : openSecret(l, new KeyRing(newSalt))))).toEqual(["one", "", "two"]);

    const broken = await cli(["reencrypt", "-"], `${sealSecret("one", old)}\nnot-a-ciphertext\n`);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toBe("");
    expect(broken.stderr).toContain("line 2");
  });
});

describe("serve", () => {
  it("generates a master key once, 0600, printing where it is and never the key", async () => {
    const dir = await tempDir();
    const env = cleanEnv({ LLM_SECRETS_DATA_DIR: join(dir, "data") });
    const first = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0"] });
    await first.stop();
    const keyFile = join(dir, "data", "master.key");
    const key = (await readFile(keyFile, "utf8")).trim();
    expect(key).toMatch(/^sk-[A-Za-z0-9_-]{43}$/);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect(first.output).toContain(`generated a master key in ${keyFile}`);
    expect(first.output).not.toContain(key);

    const second = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0"] });
    try {
      expect(second.output).not.toContain("generated");
      expect((await readFile(keyFile, "utf8")).trim()).toBe(key);
      expect((await fetchJson(`${second.url}/v1/secrets/X`, { token: key })).status).toBe(404);
    } finally {
      await second.stop();
    }
  });

  it("a start whose master.key is gone from a store sealed with it says so, and keeps no new key", async () => {
    // Before: only "sealed with another key: set LITELLM_SALT_KEY ...", though the key that went was
    // master.key (a new one was made for the start, then removed).
    const dir = await tempDir();
    const data = join(dir, "data");
    const env = cleanEnv({ LLM_SECRETS_DATA_DIR: data });
    const first = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0"] });
    const key = (await readFile(join(data, "master.key"), "utf8")).trim();
    try {
      const put = await fetch(`${first.url}/v1/secrets/A`, {
        method: "PUT",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ value: "a" }),
      });
      expect(put.status).toBe(201);
    } finally {
      await first.stop();
    }
    await rm(join(data, "master.key"));
    const r = await runCli(["serve", "--port", "0"], { env, cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("was sealed with another key");
    expect(r.stderr).toContain(
      `There was no master.key in ${data}: a new one was made for this start and removed again`,
    );
    expect(existsSync(join(data, "master.key"))).toBe(false);
  }, 30_000);

  it("says master.key went for a format-1 store too, and not when a salt key is set (the master key then sealed nothing)", async () => {
    // Before: a format-1 store's refusal did not carry the phrase, so no word of master.key; and with
    // LITELLM_SALT_KEY set, the start was told to put back a master.key that had never sealed it.
    const dir = await tempDir();
    const data = join(dir, "data");
    await cp(join(import.meta.dirname, "../fixtures/file-store-v1/data"), data, { recursive: true });
    const formatOne = await runCli(["serve", "--port", "0"], {
      env: cleanEnv({ LLM_SECRETS_DATA_DIR: data }),
      cwd: dir,
    });
    expect(formatOne.code).toBe(1);
    expect(formatOne.stderr).toContain("holds a format-1 store (secrets.json) that was sealed with another key");
    expect(formatOne.stderr).toContain(`There was no master.key in ${data}`);
    expect(existsSync(join(data, "master.key"))).toBe(false);

    const salted = await runCli(["serve", "--port", "0"], {
      env: cleanEnv({ LLM_SECRETS_DATA_DIR: data, LITELLM_SALT_KEY: newKey("salt-") }),
      cwd: dir,
    });
    expect(salted.code).toBe(1);
    expect(salted.stderr).toContain("was sealed with another key");
    expect(salted.stderr).not.toContain("master.key");
    expect(existsSync(join(data, "master.key"))).toBe(false);
  }, 30_000);

  it("stops on SIGTERM though its stdout reader stalls (audit lines not taken are dropped, said on stderr)", async () => {
    // Before: the audit lines waiting for a paused reader kept the process alive after the stop,
    // until the orchestrator's SIGKILL.
    const { dir, env } = await setup();
    const server = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0"] });
    server.child.stdout?.pause(); // a reader that stalls: the pipe fills, the audit lines wait
    const headers = { authorization: `Bearer ${env.LITELLM_MASTER_KEY}` };
    const long = `N${"x".repeat(250)}`; // a long name: a long audit line
    for (let batch = 0; batch < 40; batch++) {
      const answers = await Promise.all(
        Array.from({ length: 25 }, () => fetch(`${server.url}/v1/secrets/${long}`, { headers })),
      );
      expect(answers.every((r) => r.status === 404)).toBe(true);
    }
    const started = Date.now();
    const code = await Promise.race([server.stop(), new Promise((r) => setTimeout(() => r("still running"), 30_000))]);
    expect(code).toBe(0);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(server.output).toMatch(/"msg":"stopped with log lines their reader has not taken: dropped","bytes":\d+/);
  }, 60_000);

  it("waits on SIGTERM for a stdout reader that is slow but taking its lines: none is dropped", async () => {
    // Before: the stop's 5 s ran out whatever the reader did, and a shipper still draining lost the rest.
    const { dir, env } = await setup();
    const child = spawn(process.execPath, [cliPath(), "serve", "--port", "0"], {
      env,
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
    });
    onTestFinished(() => {
      child.kill("SIGKILL");
    });
    let errors = "";
    child.stderr?.on("data", (d) => {
      errors += d;
    });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    let url: ((u: string) => void) | undefined;
    const served = new Promise<string>((r) => {
      url = r;
    });
    let out = "";
    // A slow but steady reader: a chunk (a pipe's worth at most), then half a second, until the end.
    const reading = (async () => {
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
        out += chunk.toString();
        const m = /serving (http:\/\/\S+)/.exec(out);
        if (m && url) {
          url(m[1] as string);
          url = undefined;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const base = await served;
    const headers = { authorization: `Bearer ${env.LITELLM_MASTER_KEY}` };
    const long = `N${"y".repeat(250)}`;
    const reads = 3_000;
    for (let batch = 0; batch < reads / 50; batch++) {
      await Promise.all(Array.from({ length: 50 }, () => fetch(`${base}/v1/secrets/${long}`, { headers })));
    }
    const stopped = Date.now();
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    await reading;
    // Past the 5 s a stop waited before (about 1 MB at a pipe's worth each half second).
    expect(Date.now() - stopped).toBeGreaterThan(5_000);
    expect(errors).not.toContain("dropped");
    expect(out.split(`"audit":"read","name":"${long}"`).length - 1).toBe(reads);
  }, 90_000);

  it("holds LLM_SECRETS_MAX_EVENT_AGE to the store's tombstone lifetime where key events are applied (serve), not in the other commands", async () => {
    // An emergency delete of a leaked key, in an environment set for the servers, ran into the
    // start's refusal meant for serve (and the functions).
    const { cli, dir, env } = await setup({
      LLM_SECRETS_CONFIG: "general_settings:\n  key_management_settings:\n    store_virtual_keys: true\n",
      LLM_SECRETS_MAX_EVENT_AGE: String(15 * 86_400),
    });
    expect((await cli(["put", "LEAKED"], "sk-leaked")).code).toBe(0);
    expect(await cli(["delete", "LEAKED"])).toMatchObject({ code: 0 });
    const served = await runCli(["serve", "--port", "0"], { env, cwd: dir });
    expect(served.code).toBe(1);
    expect(served.stderr).toContain(
      "LLM_SECRETS_MAX_EVENT_AGE (1296000 s) is past how long the file store keeps a delete",
    );
  }, 30_000);

  it("warns when it serves plain HTTP beyond this machine (the key would cross the network unencrypted)", async () => {
    const { dir, env } = await setup();
    const warning = "serving plain HTTP beyond this machine";
    const wide = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0", "--host", "0.0.0.0"] });
    try {
      await until("the warning", () => wide.output.includes(warning));
    } finally {
      await wide.stop();
    }
    const local = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0"] });
    await local.stop();
    expect(local.output).toContain("serving http://127.0.0.1:");
    expect(local.output).not.toContain(warning);
  });

  it("warns at start of each model whose api_key forwarding will not find (in the environment only), naming no value", async () => {
    const dir = await tempDir();
    const envOnly = secretValue("env-only-key");
    const config = [
      "model_list:",
      "  - {model_name: envkey, litellm_params: {model: openai/x, api_base: https://api.example, api_key: os.environ/ENV_ONLY_KEY}}",
      // Many models sharing that key: one line, naming ten of them and how many more.
      ...Array.from(
        { length: 12 },
        (_, i) =>
          `  - {model_name: shared${i}, litellm_params: {model: openai/x, api_base: https://api.example, api_key: os.environ/ENV_ONLY_KEY}}`,
      ),
      "  - {model_name: stored, litellm_params: {model: openai/x, api_base: https://api.example, api_key: os.environ/STORED_KEY}}",
      // Without an api_base (LiteLLM would use the provider's): forwarding cannot reach it.
      "  - {model_name: nobase, litellm_params: {model: openai/gpt-4o, api_key: os.environ/STORED_KEY}}",
      "  - {model_name: nobase, litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/STORED_KEY}}",
      ...Array.from(
        { length: 11 },
        (_, i) => `  - {model_name: nobase${i}, litellm_params: {model: openai/x, api_key: os.environ/STORED_KEY}}`,
      ),
      "",
    ].join("\n");
    await writeFile(join(dir, "config.yaml"), config);
    const env = cleanEnv({
      LITELLM_MASTER_KEY: newKey(),
      LLM_SECRETS_DATA_DIR: join(dir, "data"),
      ENV_ONLY_KEY: envOnly,
    });
    await runCli(["put", "STORED_KEY", "--config", "config.yaml"], { env, cwd: dir, input: "sk-stored" });
    const server = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0", "--config", "config.yaml"] });
    try {
      await server.waitFor(/will not find their api_key/); // the log is flushed after the serving line
      const warned = server.output
        .split("\n")
        .filter((l) => l.includes("will not find their api_key"))
        .map((l) => JSON.parse(l) as { models: string; name: string; more?: number });
      expect(warned.map((w) => [w.name, w.models, w.more])).toEqual([
        ["ENV_ONLY_KEY", ["envkey", ...Array.from({ length: 9 }, (_, i) => `shared${i}`)].join(","), 3],
      ]);
      const baseless = server.output.split("\n").filter((l) => l.includes("they have no api_base"));
      expect(baseless.map((l) => JSON.parse(l) as { models: string; more?: number })).toMatchObject([
        { models: ["nobase", ...Array.from({ length: 9 }, (_, i) => `nobase${i}`)].join(","), more: 2 },
      ]);
      expect(server.output).not.toContain(envOnly);
    } finally {
      await server.stop();
    }
    // The local store reads the environment at start, but serves over HTTP only hosted_keys.
    await writeFile(join(dir, "local.yaml"), `general_settings:\n  key_management_system: local\n${config}`);
    const local = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0", "--config", "local.yaml"] });
    try {
      await local.waitFor(/will not find their api_key/);
      expect(local.output).toMatch(/"name":"ENV_ONLY_KEY","models":"envkey,shared0,/);
    } finally {
      await local.stop();
    }
  });

  it("leaves no generated master key behind when the start fails (port in use)", async () => {
    const { createServer } = await import("node:net");
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const dir = await tempDir();
      const env = cleanEnv({ LLM_SECRETS_DATA_DIR: join(dir, "data") });
      const r = await runCli(["serve", "--port", String(port)], { env, cwd: dir });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("already in use");
      expect(r.stdout).not.toContain("generated a master key");
      await expect(stat(join(dir, "data", "master.key"))).rejects.toMatchObject({ code: "ENOENT" });
    } finally {
      busy.close();
    }
  });

  it("never leaves a half-written master key: a start whose write fails (a full disk) leaves none, and the next makes one", async () => {
    const dir = await tempDir();
    const env = cleanEnv({ LLM_SECRETS_DATA_DIR: join(dir, "data") });
    // No file may grow past 0 bytes in that process (as on a full disk): the key cannot be written.
    const full = await runProcess(
      "sh",
      ["-c", `ulimit -f 0; exec "${process.execPath}" "${cliPath()}" serve --port 0`],
      {
        env,
        cwd: dir,
      },
    );
    expect(full.code).toBe(1);
    expect(full.stderr).toContain("cannot create the master key file");
    await expect(stat(join(dir, "data", "master.key"))).rejects.toMatchObject({ code: "ENOENT" });
    const server = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0"] });
    try {
      expect(server.output).toContain("generated a master key");
      expect((await readFile(join(dir, "data", "master.key"), "utf8")).trim()).toMatch(/^sk-[\w-]{43}$/);
      expect((await readdir(join(dir, "data"))).filter((n) => n.endsWith(".tmp"))).toEqual([]);
    } finally {
      await server.stop();
    }
  });

  it("removes the temporary key files of starts long gone, and no other", async () => {
    const { ensureMasterKeyFile } = await import("../../core/src/master-key");
    const data = join(await tempDir(), "data");
    await mkdir(data, { mode: 0o700 });
    const gone = join(data, ".master.key.4194302.0a0b0c0d.tmp"); // a pid that is not running
    const recent = join(data, ".master.key.4194301.0a0b0c0e.tmp"); // same, but written a minute ago
    const mine = join(data, `.master.key.${process.pid}.0a0b0c0f.tmp`); // running, however old
    for (const f of [gone, recent, mine]) await writeFile(f, "sk-partial");
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    await utimes(gone, twoHoursAgo, twoHoursAgo);
    await utimes(mine, twoHoursAgo, twoHoursAgo);
    await utimes(recent, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    expect((await ensureMasterKeyFile(data)).created).toBe(true);
    expect((await readdir(data)).sort()).toEqual([basename(mine), basename(recent), "master.key"].sort());
  });

  it("leaves no generated master key behind when the store refuses the data dir (writable by everyone)", async () => {
    const dir = await tempDir();
    const data = join(dir, "data");
    await mkdir(data);
    await chmod(data, 0o777);
    const r = await runCli(["serve", "--port", "0"], { env: cleanEnv({ LLM_SECRETS_DATA_DIR: data }), cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("writable by its group or by everyone");
    expect(r.stdout).not.toContain("generated a master key");
    // Another local user could have swapped a key left there before the next start read it.
    await expect(stat(join(data, "master.key"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("refuses a master key file others can read or write, as ssh refuses such a private key", async () => {
    const dir = await tempDir();
    const data = join(dir, "data");
    await mkdir(data, { mode: 0o700 });
    const keyFile = join(data, "master.key");
    const key = newKey();
    await writeFile(keyFile, `${key}\n`, { mode: 0o644 });
    await chmod(keyFile, 0o644);
    const env = cleanEnv({ LLM_SECRETS_DATA_DIR: data });
    const r = await runCli(["get", "A"], { env, cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `the master key file ${keyFile} can be read or written by others (mode 644): chmod 600 it`,
    );
    expect(r.stderr).not.toContain(key);
    expect(r.stderr).not.toContain("ignores permissions");
    await chmod(keyFile, 0o640); // readable by its group alone: refused too
    expect((await runCli(["get", "A"], { env, cwd: dir })).stderr).toContain("(mode 640): chmod 600 it");
    // Every bit set, as a filesystem that ignores modes shows it (a Windows drive under WSL): chmod
    // may not help, and the message says where to keep the dir instead.
    await chmod(keyFile, 0o666);
    const everyone = await runCli(["get", "A"], { env, cwd: dir });
    expect(everyone.stderr).toContain(
      "chmod 600 it (if chmod does not change it, the filesystem ignores permissions, as a Windows drive under WSL does: keep the data dir on a Linux filesystem)",
    );
    await chmod(keyFile, 0o600);
    // Its key taken: the dir is then asked for a store (it holds only the key file, no log).
    const ok = await runCli(["get", "A"], { env, cwd: dir });
    expect(ok.stderr).toContain(`no file store at ${data}: the data dir holds no secrets.log`);
  });

  it("refuses to keep local files on Windows, saying where it runs (POSIX file modes keep them private)", async () => {
    const { requirePosixFiles } = await import("../../core/src/local-files");
    const { ensureMasterKeyFile } = await import("../../core/src/master-key");
    const { FileStore } = await import("../../core/src/stores/file");
    const { loadSettings } = await import("../../core/src/settings");
    const windows =
      "the file store and its key file need POSIX file permissions, which Windows does not have: run llm-secrets on Linux or macOS, or under WSL 2 with the data dir on the Linux filesystem (not /mnt/c)";
    expect(() => requirePosixFiles("win32")).toThrow(windows);
    for (const platform of ["linux", "darwin"] as const) expect(() => requirePosixFiles(platform)).not.toThrow();
    // Each place that makes or reads a local file asks, before it touches one: a key file made, a
    // key file read (node on Windows reports it 666), the store opened.
    const dir = await tempDir();
    await mkdir(join(dir, "data"), { mode: 0o700 });
    await writeFile(join(dir, "data", "master.key"), `${newKey()}\n`, { mode: 0o600 });
    const platform = Object.getOwnPropertyDescriptor(process, "platform") as PropertyDescriptor;
    Object.defineProperty(process, "platform", { ...platform, value: "win32" });
    try {
      await expect(ensureMasterKeyFile(join(dir, "fresh"))).rejects.toThrow(windows);
      expect(() => loadSettings({ stores: LOCAL_STORES, env: { LLM_SECRETS_DATA_DIR: join(dir, "data") } })).toThrow(
        windows,
      );
      await expect(FileStore.open({ dataDir: join(dir, "data"), keys: new KeyRing(newKey()) })).rejects.toThrow(
        windows,
      );
    } finally {
      Object.defineProperty(process, "platform", platform);
    }
    expect(existsSync(join(dir, "fresh"))).toBe(false);
  });

  it("refuses LiteLLM's example master key and an empty one", async () => {
    const dir = await tempDir();
    for (const key of ["sk-1234", ""]) {
      const r = await runCli(["serve", "--port", "0"], {
        env: cleanEnv({ LITELLM_MASTER_KEY: key, LLM_SECRETS_DATA_DIR: dir }),
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("LITELLM_MASTER_KEY");
    }
  });

  it("sees a CLI put made beside it, and the CLI sees its writes", async () => {
    const { env, dir, cli } = await setup();
    const server = await ServerProcess.start({ env, cwd: dir, args: ["--port", "0"] });
    try {
      const token = env.LITELLM_MASTER_KEY as string;
      expect((await cli(["put", "FROM_CLI"], "cli-value")).code).toBe(0);
      const read = await fetchJson(`${server.url}/v1/secrets/FROM_CLI`, { token });
      expect(read.body).toMatchObject({ value: "cli-value" });
      await fetchJson(`${server.url}/v1/secrets/FROM_HTTP`, {
        method: "PUT",
        token,
        body: JSON.stringify({ value: "http-value" }),
      });
      expect((await cli(["get", "FROM_HTTP"])).stdout).toBe("http-value\n");
      expect((await cli(["get", "FROM_CLI"])).stdout).toBe("cli-value\n");

      // The server has FROM_CLI cached; a CLI update and delete reach it without ?refresh.
      const served = async () => (await fetchJson(`${server.url}/v1/secrets/FROM_CLI`, { token })).body;
      expect((await cli(["put", "FROM_CLI"], "updated-by-cli")).code).toBe(0);
      await expect.poll(served, { timeout: 3000 }).toMatchObject({ value: "updated-by-cli" });
      expect((await cli(["delete", "FROM_CLI"])).code).toBe(0);
      await expect.poll(served, { timeout: 3000 }).toMatchObject({ error: { code: "not_found" } });
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it("says where the store needs a key when there is none", async () => {
    const dir = await tempDir();
    const r = await runCli(["get", "A"], { env: cleanEnv({ LLM_SECRETS_DATA_DIR: dir }) });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^llm-secrets: encryption_key_missing: the file store needs a key: .*llm-secrets serve/);
  });
});
