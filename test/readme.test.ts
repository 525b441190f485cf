// README.md's "Try it" session, run as printed against `npm start`; then a restart, and a look at
// what is on disk and what the server printed. The server listens on a free port (PORT=0), which
// the session's `localhost:4000` is pointed at: 4000 may be taken (README's own session in another
// terminal, another run on the machine). settings.test.ts checks that 4000 is the default.
import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { cleanEnv, dataFiles, expectNoValueIn, ServerProcess, tempDir, until } from "./helpers";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

interface Step {
  command: string;
  expected: string;
}

/** The ```console block after the readme-session marker: `$ command` lines, each followed by its output. */
function readmeSession(readme: string): Step[] {
  const start = readme.indexOf("<!-- readme-session");
  expect(start, "README.md has no readme-session block").toBeGreaterThan(-1);
  const block = /```console\n([\s\S]*?)```/.exec(readme.slice(start))?.[1] ?? "";
  const steps: Step[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("$ ")) steps.push({ command: line.slice(2), expected: "" });
    else if (line.trim() && steps.length) (steps.at(-1) as Step).expected += `${line}\n`;
  }
  return steps;
}

/** Runs the commands in one bash, in `cwd`, and returns each command's output. */
function runSession(steps: Step[], cwd: string): string[] {
  const marker = (i: number) => `@@step-${i}@@`;
  const script = ["set -u", ...steps.flatMap((s, i) => [`printf '\\n${marker(i)}\\n'`, s.command])].join("\n");
  const run = spawnSync("bash", ["-c", script], { cwd, encoding: "utf8", env: cleanEnv() });
  expect(run.status, run.stderr).toBe(0);
  return steps.map((_, i) => {
    const from = run.stdout.indexOf(marker(i)) + marker(i).length;
    const to = i + 1 < steps.length ? run.stdout.indexOf(marker(i + 1)) : run.stdout.length;
    return run.stdout.slice(from, to).trim();
  });
}

/** The steps with README's `localhost:4000` pointed at the server's own port. */
function onPortOf(steps: Step[], url: string): Step[] {
  const port = new URL(url).port;
  return steps.map((s) => ({ ...s, command: s.command.replaceAll("localhost:4000", `localhost:${port}`) }));
}

/** "…" in the README stands for any run of characters other than a quote. */
function matches(output: string, expected: string): boolean {
  const pattern = expected
    .trim()
    .split("…")
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
    .join('[^"]+');
  return new RegExp(`^${pattern}$`).test(output);
}

describe("README", () => {
  it("its curl session works as printed against npm start, and survives a restart", async () => {
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    expect(readme).toContain("npm ci && npm start");
    expect(readme).toContain("npm test");
    const steps = readmeSession(readme);
    const routes = steps.map((s) => s.command).join("\n");
    for (const route of [
      "-X PUT localhost:4000/v1/secrets/",
      "curl -s localhost:4000/v1/secrets/",
      "/v1/resolve",
      "/v1/encrypt",
      "/v1/decrypt",
    ]) {
      expect(routes, `the session shows ${route}`).toContain(route);
    }

    const work = await tempDir();
    const env = cleanEnv({ LLM_SECRETS_DATA_DIR: join(work, ".llm-secrets"), PORT: "0" });
    const start = () => ServerProcess.start({ env, cwd: ROOT, command: { file: "npm", args: ["start", "--silent"] } });

    let server = await start();
    let output = server.output;
    try {
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(server.output).toContain(`generated a master key in ${join(work, ".llm-secrets", "master.key")}`);
      const outputs = runSession(onPortOf(steps, server.url), work);
      steps.forEach((step, i) => {
        expect(
          matches(outputs[i] as string, step.expected),
          `$ ${step.command}\ngave: ${outputs[i]}\nexpected: ${step.expected}`,
        ).toBe(true);
      });
    } finally {
      await server.stop();
      output += server.output;
    }

    server = await start();
    try {
      expect(server.output).not.toContain("generated a master key");
      // Everything but the writes, again: the values read back come from disk.
      const reads = steps.filter((s) => !s.command.includes(" -X PUT "));
      const again = runSession(onPortOf(reads, server.url), work);
      reads.forEach((step, i) => {
        expect(matches(again[i] as string, step.expected), step.command).toBe(true);
      });
      // SIGTERM to npm alone (as `docker stop` sends it to PID 1) reaches the server, which stops
      // as it says it does; before, the shell between them exited and left it serving, orphaned.
      const npmExited = new Promise((resolve) => server.child.once("exit", resolve));
      process.kill(server.child.pid as number, "SIGTERM");
      await server.waitFor(/stopping: requests under way may finish/);
      await npmExited;
      await until("the port to be free", async () => (await fetch(server.url).catch(() => undefined)) === undefined);
    } finally {
      await server.stop();
      try {
        process.kill(-(server.child.pid as number), "SIGKILL"); // whatever of npm's group is left
      } catch {
        // none
      }
      output += server.output;
    }

    const files = await dataFiles(join(work, ".llm-secrets"));
    expect(Object.keys(files).length).toBeGreaterThan(1);
    for (const [path, file] of Object.entries(files)) expect(file.mode, path).toBe(0o600);
    const stored = Object.values(files)
      .map((f) => f.bytes.toString("latin1"))
      .join("\n");
    const values = [...readme.matchAll(/"value":"([^"]+)"/g)].map((m) => m[1] as string);
    expect(values.length).toBeGreaterThan(0);
    for (const value of values) expect(stored).not.toContain(value);
    const masterKey = (await readFile(join(work, ".llm-secrets", "master.key"), "utf8")).trim();
    expectNoValueIn([output], [...values.filter((v) => v.length >= 6), masterKey]);
  }, 120_000); // two `npm start`s, each building the CLI bundle: 20 s alone, over 30 s beside other tests on 2 cores
});
