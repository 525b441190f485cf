// Shared test helpers: temp dirs, the built CLI as a child process, generated keys and values.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, inject } from "vitest";

const dirs: string[] = [];

/** A fresh temp dir, removed after the test file. */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "llm-secrets-test-"));
  if (dirs.length === 0) {
    afterAll(async () => {
      await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
    });
  }
  dirs.push(dir);
  return dir;
}

/** A master key made now (tests never commit key-shaped strings). */
export function newKey(prefix = "sk-"): string {
  return `${prefix}${randomBytes(24).toString("base64url")}`;
}

/** A distinctive value, so a leak of it into any output can be searched for. */
export function secretValue(label = "value"): string {
  return `${label}-${randomBytes(12).toString("hex")}`;
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
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath(), ...args], {
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
    await server.waitFor(/serving (https?:\/\/\S+)/, 30_000).then((m) => {
      server.url = m[1] as string;
    });
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

/** The whole app in-process over a real file store, with its log lines kept. */
export async function inProcessApp(options: { env?: Record<string, string>; config?: string } = {}) {
  const { loadSettings } = await import("../core/src/settings");
  const { createRuntime, appOf } = await import("../core/src/runtime");
  const { createLogger } = await import("../core/src/log");
  const dataDir = await tempDir();
  const masterKey = options.env?.LITELLM_MASTER_KEY ?? newKey();
  const env = { LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: dataDir, ...options.env };
  const settings = loadSettings({ env: { ...env, ...(options.config ? { LLM_SECRETS_CONFIG: options.config } : {}) } });
  const logs: string[] = [];
  const runtime = await createRuntime(
    settings,
    createLogger((line) => logs.push(line)),
  );
  const app = appOf(runtime);
  const request = (path: string, init: RequestInit & { json?: unknown; token?: string | null } = {}) => {
    const headers = new Headers(init.headers);
    const token = init.token === undefined ? masterKey : init.token;
    if (token !== null) headers.set("authorization", `Bearer ${token}`);
    const body = init.json === undefined ? init.body : JSON.stringify(init.json);
    return app.request(path, { ...init, headers, body });
  };
  return { app, runtime, settings, masterKey, dataDir, logs, request };
}

/** A self-signed certificate for localhost and 127.0.0.1, made now with openssl. */
export async function makeCertificate(dir: string): Promise<{ keyFile: string; certFile: string; cert: string }> {
  const { execFileSync } = await import("node:child_process");
  const { readFileSync } = await import("node:fs");
  const keyFile = join(dir, "key.pem");
  const certFile = join(dir, "cert.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ],
    { stdio: "ignore" },
  );
  return { keyFile, certFile, cert: readFileSync(certFile, "utf8") };
}
