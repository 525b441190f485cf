// What the server keeps of a secret's value once it has used it: the cache keeps values sealed
// (SPEC section 4), so no plaintext copy may stay reachable. A heap snapshot of a `serve` process
// (node's --heapsnapshot-signal; the snapshot is taken after a full GC, so it holds only what is
// reachable) must not hold the value of a config ref read at start, nor a forward's key read again
// after an upstream 401.

import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cleanEnv, cliPath, newKey, runCli, ServerProcess, secretValue, tempDir } from "../helpers";

/** The heap snapshot `dir` holds once node has written it whole (its size stops changing). */
async function snapshotIn(dir: string): Promise<string> {
  let last = -1;
  for (let i = 0; i < 200; i++) {
    await new Promise((r) => setTimeout(r, 250));
    const file = (await readdir(dir)).find((f) => f.endsWith(".heapsnapshot"));
    if (file === undefined) continue;
    const size = (await stat(join(dir, file))).size;
    if (size > 0 && size === last) return readFile(join(dir, file), "utf8");
    last = size;
  }
  throw new Error("no heap snapshot was written");
}

describe("plaintext kept in memory", () => {
  it("none of a config ref's value read at start, nor of a forward's key read again after a 401", async () => {
    const upstream = createServer((_req, res) => {
      res.writeHead(401, { "content-type": "application/json" }).end('{"error":"invalid key"}');
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    const dir = await tempDir();
    try {
      const startValue = secretValue("start-ref");
      const forwardKey = secretValue("forward-key");
      const config = [
        "model_list:",
        "  - {model_name: atstart, litellm_params: {model: openai/x, api_base: https://api.example, api_key: os.environ/START_KEY}}",
        `  - {model_name: refused, litellm_params: {model: openai/x, api_base: http://127.0.0.1:${(upstream.address() as AddressInfo).port}, api_key: os.environ/FORWARD_KEY}}`,
        "",
      ].join("\n");
      await writeFile(join(dir, "config.yaml"), config);
      const masterKey = newKey();
      const env = cleanEnv({ LITELLM_MASTER_KEY: masterKey, LLM_SECRETS_DATA_DIR: join(dir, "data") });
      for (const [name, value] of [
        ["START_KEY", startValue],
        ["FORWARD_KEY", forwardKey],
      ] as const) {
        expect((await runCli(["put", name, "--config", "config.yaml"], { env, cwd: dir, input: value })).code).toBe(0);
      }
      const server = await ServerProcess.start({
        env,
        cwd: dir,
        command: {
          file: process.execPath,
          args: ["--heapsnapshot-signal=SIGUSR2", cliPath(), "serve", "--port", "0", "--config", "config.yaml"],
        },
      });
      try {
        const res = await fetch(`${server.url}/v1/forward/refused/v1/models`, {
          headers: { authorization: `Bearer ${masterKey}` },
        });
        expect(res.status).toBe(401); // the upstream's, passed on after the read past the cache
        await res.text();
        server.child.kill("SIGUSR2");
        const snapshot = await snapshotIn(dir);
        expect(snapshot).toContain("atstart"); // the snapshot is this server's, and whole
        expect(snapshot.includes(startValue), "a config ref's value read at start").toBe(false);
        expect(snapshot.includes(forwardKey), "the forward's key read after a 401").toBe(false);
      } finally {
        await server.stop();
      }
    } finally {
      upstream.close();
    }
  });
});
