// integrations/litellm/llm_secrets_manager.py: LiteLLM's custom secret manager calling our API,
// loaded from a LiteLLM config as LiteLLM's loader does, against the real server over HTTP and
// HTTPS (mutual TLS with the test CA). LiteLLM itself cannot be installed here: when `litellm` is
// not importable the driver gets a stand-in for its base class only (test/integrations/
// litellm-stand-in), and says so; what is checked is the class's own behaviour.
import { spawnSync } from "node:child_process";
import { createHash, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { copyFile, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { Agent, fetch as undiciFetch } from "undici";
import { beforeAll, describe, expect, inject, it, onTestFinished } from "vitest";
import { lazyFakeAzure } from "../fakes/azure";
import { expectNoValueIn, newKey, pythonFor, runProcess, secretValue, serveStore, tempDir } from "../helpers";

const PYTHON = pythonFor("httpx, yaml", "python3-httpx python3-yaml");
const HERE = import.meta.dirname;
const CLASS_FILE = join(HERE, "../../integrations/litellm/llm_secrets_manager.py");

const LITELLM_CONFIG = `general_settings:
  key_management_system: custom
  key_management_settings:
    custom_secret_manager: llm_secrets_manager.LLMSecretsManager
    store_virtual_keys: true
    prefix_for_stored_virtual_keys: "litellm/"
    access_mode: read_and_write
`;

const SERVER_CONFIG = "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n";

/** A LiteLLM config dir with the class file beside config.yaml. */
async function litellmDir(): Promise<string> {
  const dir = await tempDir();
  await writeFile(join(dir, "config.yaml"), LITELLM_CONFIG);
  await copyFile(CLASS_FILE, join(dir, "llm_secrets_manager.py"));
  return dir;
}

let standIn = false;

async function drive(python: string, dir: string, scenario: string, env: Record<string, string>) {
  const { code, stdout, stderr } = await runProcess(python, [join(HERE, "litellm_driver.py"), dir, scenario], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      ...(standIn && { PYTHONPATH: join(HERE, "litellm-stand-in") }),
      ...env,
    },
  });
  if (code !== 0) throw new Error(`driver exited ${code}: ${stderr}`);
  return { out: JSON.parse(stdout) as Record<string, Record<string, unknown>>, raw: stdout, stderr };
}

type HookStep = ["gen", string, string] | ["rot", string, string, string] | ["del", string];
interface HookLog {
  logger: string;
  level: string;
  message: string;
}

/** LiteLLM's key hooks around the class (the driver's `hooks`): each step's result, and the log records. */
async function hooks(python: string, dir: string, url: string, masterKey: string, steps: HookStep[]) {
  const { out, raw } = await drive(python, dir, "hooks", {
    LLM_SECRETS_URL: url,
    LLM_SECRETS_API_KEY: masterKey,
    STEPS: JSON.stringify(steps),
  });
  return { results: out.hooks?.ok as Record<string, unknown>[], logs: out.logs as unknown as HookLog[], raw };
}

/** The server's audit lines: [action, name, outcome]. */
function auditOf(output: string): string[][] {
  return output
    .split("\n")
    .filter((l) => l.startsWith("{") && l.includes('"audit"'))
    .map((l) => JSON.parse(l) as { audit: string; name: string; outcome: string })
    .map((l) => [l.audit, l.name, l.outcome]);
}

const sha256 = (key: string) => createHash("sha256").update(key).digest("hex");

const azure = lazyFakeAzure();
/** llm-secrets on Key Vault (the fake, fresh) with hosted_keys and team-a's prefix nested in the general one. */
const AZURE_CONFIG =
  "general_settings:\n  key_management_system: azure_key_vault\n  key_management_settings:\n" +
  "    access_mode: read_and_write\n    store_virtual_keys: true\n    hosted_keys: [OPENAI_API_KEY, litellm/OPENAI]\n" +
  '    team_settings:\n      team-a: {prefix_for_stored_virtual_keys: "litellm/team-a/"}\n';
async function serveAzure() {
  const fake = await azure();
  fake.reset();
  fake.seed("LITELLM-SALT-KEY", "portal-salt"); // made in the portal: litellm/SALT_KEY lands on it
  const served = await serveStore(AZURE_CONFIG, { ...fake.env(), NODE_EXTRA_CA_CERTS: inject("testPki").caFile });
  return { fake, ...served };
}

describe.skipIf(!PYTHON)("LLMSecretsManager, LiteLLM's custom secret manager on our API", () => {
  const python = PYTHON as string;
  let dir: string;

  beforeAll(async () => {
    standIn = spawnSync(python, ["-c", "import litellm"]).status !== 0;
    if (standIn) process.stderr.write("\nlitellm is not importable: the driver uses the stand-in base class\n");
    dir = await litellmDir();
  });

  async function session(scheme: "http" | "https") {
    const pki = inject("testPki");
    const tls: Record<string, string> =
      scheme === "https"
        ? {
            SSL_KEYFILE_PATH: pki.serverKeyFile,
            SSL_CERTFILE_PATH: pki.serverCertFile,
            LLM_SECRETS_CLIENT_CA: pki.caFile,
          }
        : {};
    const { server, masterKey } = await serveStore(SERVER_CONFIG, tls);
    // The test's own client: with the client certificate when the server asks for one.
    const dispatcher = new Agent({
      connect: { cert: readFileSync(pki.clientCertFile), key: readFileSync(pki.clientKeyFile) },
    });
    const put = (name: string, value: string) =>
      undiciFetch(`${server.url}/v1/secrets/${name}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${masterKey}` },
        body: JSON.stringify({ value }),
        dispatcher,
      });
    let stdout = "";
    server.child.stdout?.on("data", (d) => {
      stdout += d;
    });
    const provider = secretValue("openai");
    const virtual = secretValue("virtual");
    try {
      const client: Record<string, string> =
        scheme === "https"
          ? {
              LLM_SECRETS_CA_BUNDLE: pki.caFile,
              LLM_SECRETS_CLIENT_CERT: pki.clientCertFile,
              LLM_SECRETS_CLIENT_KEY: pki.clientKeyFile,
            }
          : {};
      expect(server.url.startsWith(`${scheme}://`)).toBe(true);
      // The provider key is in the store, as an operator put it there.
      expect((await put("OPENAI_API_KEY", provider)).status).toBe(201);
      const { out, raw, stderr } = await drive(python, dir, "session", {
        LLM_SECRETS_URL: server.url,
        LLM_SECRETS_API_KEY: masterKey,
        VIRTUAL_KEY_VALUE: virtual,
        ...client,
      });
      expect(out.subclass).toBe(true);
      expect(out.sync_read).toMatchObject({ ok: provider });
      expect(out.sync_read_missing).toMatchObject({ ok: null }); // not found is None, never an exception
      expect(out.async).toMatchObject({
        ok: {
          async_read: provider,
          write: { name: "litellm/team-a/sk-virtual+1", created: true },
          read_back: virtual,
          concurrent: [virtual, provider],
          delete: { name: "litellm/team-a/sk-virtual+1", deleted: true },
          read_after_delete: null,
          healthy: true,
        },
      });
      // The name arrived whole (its `/` kept, `+` encoded): the server wrote, then deleted, it.
      await until(() => (stdout.match(/"audit":"delete"/g) ?? []).length >= 1);
      const audit = stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { audit: string; name: string; outcome: string });
      expect(audit.filter((l) => l.name === "litellm/team-a/sk-virtual+1").map((l) => [l.audit, l.outcome])).toEqual([
        ["write", "ok"],
        ["read", "ok"],
        ["read", "ok"],
        ["delete", "ok"],
        ["read", "not_found"],
      ]);
      expectNoValueIn([server.output, stderr], [provider, virtual, masterKey]);
      expect(raw).not.toContain(masterKey);
    } finally {
      await server.stop();
      await dispatcher.close();
    }
  }

  it("reads a provider key, writes and deletes a virtual key over HTTP, as a LiteLLM proxy would", async () => {
    await session("http");
  });

  it("does the same over HTTPS with a CA bundle and a client certificate (mutual TLS)", async () => {
    await session("https");
  });

  it("refuses a name with '.', '..' or empty segments before sending it: a key alias cannot reach another secret", async () => {
    const { server, masterKey } = await serveStore(SERVER_CONFIG, {});
    const provider = secretValue("openai");
    const attacker = secretValue("alias-value");
    try {
      const put = await fetch(`${server.url}/v1/secrets/OPENAI_API_KEY`, {
        method: "PUT",
        headers: { authorization: `Bearer ${masterKey}` },
        body: JSON.stringify({ value: provider }),
      });
      expect(put.status).toBe(201);
      const { out } = await drive(python, dir, "traversal", {
        LLM_SECRETS_URL: server.url,
        LLM_SECRETS_API_KEY: masterKey,
        VIRTUAL_KEY_VALUE: attacker,
      });
      for (const step of ["write", "read_dot", "read_empty_segment"]) {
        expect(out[step], step).toMatchObject({ error: "LLMSecretsError", code: "invalid_name" });
      }
      // A delete answers its failure (LiteLLM deletes in a loop a raise would end).
      expect(out.delete).toMatchObject({ ok: { deleted: false, status: "error", code: "invalid_name" } });
      // The provider key is untouched: neither overwritten nor deleted.
      expect(out.read).toMatchObject({ ok: provider });
      // The server saw our one PUT, and no other write or delete.
      expect(server.output.match(/"audit":"write"/g)).toHaveLength(1);
      expect(server.output).not.toMatch(/"audit":"delete"/);
      expectNoValueIn([server.output], [provider, attacker]);
    } finally {
      await server.stop();
    }
  });

  it("rotates a virtual key as LiteLLM's regeneration does: same name updated, a new name written and the old deleted, no read", async () => {
    // hosted_keys on the server: virtual keys under the prefix are writable but not readable there.
    const config = `general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n    hosted_keys: [OPENAI_API_KEY]\n`;
    const { server, masterKey } = await serveStore(config, {});
    const [first, rotated, renamed] = [secretValue("v1"), secretValue("v2"), secretValue("v3")];
    try {
      const { out } = await drive(python, dir, "rotate", {
        LLM_SECRETS_URL: server.url,
        LLM_SECRETS_API_KEY: masterKey,
        VIRTUAL_KEY_VALUE: first,
        ROTATED_VALUE: rotated,
        RENAMED_VALUE: renamed,
      });
      expect(out.rotate).toMatchObject({
        ok: {
          write: { name: "litellm/team-a/sk-virtual+1", created: true },
          same_name: { name: "litellm/team-a/sk-virtual+1", created: false },
          renamed: { name: "litellm/team-a/renamed", created: true },
        },
      });
      expect(out.tags_body).toMatchObject({ ok: { value: "v", tags: { Env: "prod", Empty: "", bare: "" } } });
      // What the server did: three writes, the old name's delete, and no read (which hosted_keys refuses).
      await until(() => (server.output.match(/"audit":"delete"/g) ?? []).length >= 1);
      const audit = server.output
        .split("\n")
        .filter((l) => l.startsWith("{") && l.includes('"audit"'))
        .map((l) => JSON.parse(l) as { audit: string; name: string; outcome: string })
        .map((l) => [l.audit, l.name, l.outcome]);
      expect(audit).toEqual([
        ["write", "litellm/team-a/sk-virtual+1", "ok"],
        ["write", "litellm/team-a/sk-virtual+1", "ok"],
        ["write", "litellm/team-a/renamed", "ok"],
        ["delete", "litellm/team-a/sk-virtual+1", "ok"],
      ]);
      expectNoValueIn([server.output], [first, rotated, renamed, masterKey]);
    } finally {
      await server.stop();
    }
  });

  it("refuses a server it cannot verify, and a wrong key, with clear errors that hold no secret", async () => {
    const pki = inject("testPki");
    const { server, masterKey } = await serveStore(SERVER_CONFIG, {
      SSL_KEYFILE_PATH: pki.serverKeyFile,
      SSL_CERTFILE_PATH: pki.serverCertFile,
    });
    const wrongKey = newKey();
    try {
      // No CA bundle: the system's CAs do not know the test CA.
      const untrusted = await drive(python, dir, "read", {
        LLM_SECRETS_URL: server.url,
        LLM_SECRETS_API_KEY: masterKey,
      });
      expect(untrusted.out.sync_read).toMatchObject({ error: "LLMSecretsError", code: "unreachable" });
      expect(String(untrusted.out.sync_read?.message)).toMatch(/ConnectError|SSL|certificate/i);
      const wrong = await drive(python, dir, "read", {
        LLM_SECRETS_URL: server.url,
        LLM_SECRETS_API_KEY: wrongKey,
        LLM_SECRETS_CA_BUNDLE: pki.caFile,
      });
      for (const step of [wrong.out.sync_read, wrong.out.async_read]) {
        expect(step).toMatchObject({ error: "LLMSecretsError", status: 401, code: "unauthorized" });
      }
      // The health check takes the key too (/ready alone would pass it).
      expect(wrong.out.healthy).toMatchObject({ ok: false });
      expect(wrong.raw).not.toContain(wrongKey);
      // Two instances in one process, the wrong key first: pooled clients keep each one's key.
      const both = await drive(python, dir, "two_keys", {
        LLM_SECRETS_URL: server.url,
        LLM_SECRETS_API_KEY: wrongKey,
        SECOND_KEY: masterKey,
        LLM_SECRETS_CA_BUNDLE: pki.caFile,
      });
      expect(both.out.first).toMatchObject({ error: "LLMSecretsError", status: 401 });
      expect(both.out.second).toEqual({ ok: null, seconds: expect.any(Number) }); // let in: no such secret here
      expect(untrusted.raw).not.toContain(masterKey);
    } finally {
      await server.stop();
    }
  });

  it("fails within its timeout when the server is down or does not answer", async () => {
    const closed = await freePort();
    const down = await drive(python, dir, "read", {
      LLM_SECRETS_URL: `http://127.0.0.1:${closed}`,
      LLM_SECRETS_API_KEY: newKey(),
    });
    expect(down.out.sync_read).toMatchObject({ error: "LLMSecretsError", code: "unreachable" });

    // A server that accepts connections and never answers.
    const sockets: Socket[] = [];
    const silent: Server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    // Closed when this test ends (an afterAll registered in a running test is dropped unsaid).
    onTestFinished(() => {
      for (const s of sockets) s.destroy();
      silent.close();
    });
    const port = (silent.address() as { port: number }).port;
    const hung = await drive(python, dir, "read", {
      LLM_SECRETS_URL: `http://127.0.0.1:${port}`,
      LLM_SECRETS_API_KEY: newKey(),
      LLM_SECRETS_TIMEOUT: "1",
    });
    for (const step of [hung.out.sync_read, hung.out.async_read]) {
      expect(step).toMatchObject({ error: "LLMSecretsError", code: "timeout" });
      expect(step?.seconds as number).toBeGreaterThanOrEqual(0.9);
      expect(step?.seconds as number).toBeLessThan(8); // LLM_SECRETS_TIMEOUT's 1 s, not its default 10 s
    }
  });

  it("a delete refused for one name does not end LiteLLM's revocation loop: the next name is deleted", async () => {
    const config = `general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n`;
    const { server, masterKey } = await serveStore(config, {});
    try {
      const { out } = await drive(python, dir, "delete_loop", {
        LLM_SECRETS_URL: server.url,
        LLM_SECRETS_API_KEY: masterKey,
        VIRTUAL_KEY_VALUE: secretValue("team-b"),
      });
      expect(out.revoke).toMatchObject({
        ok: [
          { deleted: false, status: "error", code: "invalid_name" },
          { name: "litellm/team-b", deleted: true, status: "success" },
        ],
      });
      expect(out.read_after).toMatchObject({ ok: null });
      // LiteLLM ignores what a delete answers: the failure is on its logger, or nowhere.
      expect(out.warnings).toEqual([
        {
          level: "WARNING",
          message: expect.stringMatching(
            /^the delete of my key\/\.\.\/x failed \(invalid_name\), it may still be stored: llm-secrets: /,
          ),
        },
      ]);
    } finally {
      await server.stop();
    }
  });

  it("an alias spelled as another key's hash name is neither written nor deleted by the class; the key's own value under its hash's name is", async () => {
    // LiteLLM stores a key without an alias as litellm/virtual-key-<sha256(key)>, and one with an
    // alias as litellm/<alias>: another user's alias spelled so would replace, then delete, it.
    const config = `general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n`;
    const { server, masterKey } = await serveStore(config, {});
    const victim = `sk-${secretValue("victim")}`;
    const attacker = `sk-${secretValue("attacker")}`;
    const own = `sk-${secretValue("own")}`;
    const hash = sha256(victim);
    try {
      const { results, logs, raw } = await hooks(python, dir, server.url, masterKey, [
        ["gen", `virtual-key-${hash}`, victim], // the alias-less key, as LiteLLM stores it
        ["gen", `virtual-key-${hash}`, attacker],
        ["gen", `VIRTUAL_KEY_${hash.toUpperCase()}`, attacker],
        ["gen", `virtual/key/${hash}`, attacker],
        ["rot", "spoofer-alias", `virtual.key.${hash}`, attacker],
        ["rot", "gone", `virtual-key-${sha256(own)}`, own], // a hash name with its own key: written
        ["del", `virtual-key-${hash}`],
        ["del", `Virtual_Key_${hash}`],
        // The attacker's key (alias virtual-key-<victim's hash>) regenerated keeping its alias: the
        // same call as an alias-less key's regeneration. Written under the new key's own hash name.
        ["rot", `virtual-key-${hash}`, `virtual-key-${hash}`, attacker],
      ]);
      expect(results[0]).toEqual({ ok: "stored" });
      for (const i of [1, 2, 3, 4]) {
        // Refused by the class, before it is sent (status 0; the server would answer 400).
        expect(results[i], String(i)).toMatchObject({ error: "LLMSecretsError", status: 0, code: "invalid_request" });
      }
      expect(results[5]).toEqual({ ok: "rotated" });
      for (const i of [6, 7]) {
        expect(results[i], String(i)).toMatchObject({
          ok: { deleted: false, status: "error", code: "invalid_request" },
        });
      }
      expect(results[8]).toEqual({ ok: "rotated" });
      // The victim's key is still stored.
      const read = await fetch(`${server.url}/v1/secrets/litellm/virtual-key-${hash}`, {
        headers: { authorization: `Bearer ${masterKey}` },
      });
      expect(((await read.json()) as { value: string }).value).toBe(victim);
      // The server saw only the allowed writes (the same-name rotation's under the attacker key's own
      // hash name), and no change of a spoofed name.
      await until(() => auditOf(server.output).some(([action]) => action === "read"));
      const changes = auditOf(server.output).filter(([, name]) => /virtual.key./i.test(name as string));
      expect(changes).toEqual([
        ["write", `litellm/virtual-key-${hash}`, "ok"],
        ["write", `litellm/virtual-key-${sha256(own)}`, "ok"],
        ["write", `litellm/virtual-key-${sha256(attacker)}`, "ok"],
        ["read", `litellm/virtual-key-${hash}`, "ok"],
      ]);
      // The two refused deletes are on LiteLLM's logger (LiteLLM ignores their answers); the refused
      // writes and the rotations are one WARNING each on the proxy's.
      const warnings = logs.filter((l) => l.level === "WARNING");
      expect(warnings.filter((l) => l.logger === "LiteLLM").map((l) => l.message)).toEqual([
        expect.stringMatching(/^the delete of litellm\/virtual-key-[0-9a-f]{64} failed \(invalid_request\)/),
        expect.stringMatching(/^the delete of litellm\/Virtual_Key_[0-9a-f]{64} failed \(invalid_request\)/),
      ]);
      expect(warnings.filter((l) => l.logger === "LiteLLM Proxy")).toHaveLength(4);
      expectNoValueIn([server.output, raw], [victim, attacker, own, masterKey]);
    } finally {
      await server.stop();
    }
  });

  it("a key without an alias regenerated under its old hash's name is stored under its new hash's name; a hash-named old name is never deleted, so a spoofing alias's regeneration cannot replace nor delete the key it spells", async () => {
    // LiteLLM regenerates an alias-less key with current = new = <prefix>virtual-key-<OLD hash> and
    // the NEW key, then asks for virtual-key-<the new hash> at the next regeneration; given an alias,
    // current is still virtual-key-<old hash>. A key whose alias spells another key's hash name makes
    // the very same calls.
    const config = `general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n`;
    const { server, masterKey } = await serveStore(config, {});
    const k = (label: string) => `sk-${secretValue(label)}`;
    const keys = { k1: k("k1"), k2: k("k2"), k3: k("k3"), k4: k("k4"), victim: k("victim"), a1: k("a1"), a2: k("a2") };
    const h = (key: string) => `virtual-key-${sha256(key)}`;
    try {
      const { results, logs, raw } = await hooks(python, dir, server.url, masterKey, [
        ["gen", h(keys.k1), keys.k1], // an alias-less key
        ["rot", h(keys.k1), h(keys.k1), keys.k2], // regenerated: stored under h(k2)
        ["rot", h(keys.k2), h(keys.k2), keys.k3], // regenerated again (LiteLLM's current is h(k2))
        ["rot", h(keys.k3), "given-alias", keys.k4], // given an alias: h(k3) is not deleted
        ["gen", h(keys.victim), keys.victim], // another alias-less key
        ["rot", h(keys.victim), "attacker-alias", keys.a1], // an alias spelling it, renamed at regeneration
        [
          "rot",
          `team-a/VIRTUAL_KEY_${sha256(keys.victim).toUpperCase()}`,
          `team-a/VIRTUAL_KEY_${sha256(keys.victim).toUpperCase()}`,
          keys.a2,
        ],
      ]);
      expect(results).toEqual([
        { ok: "stored" },
        { ok: "rotated" },
        { ok: "rotated" },
        { ok: "rotated" },
        { ok: "stored" },
        { ok: "rotated" },
        { ok: "rotated" },
      ]);
      const read = async (name: string) => {
        const response = await fetch(`${server.url}/v1/secrets/litellm/${name}`, {
          headers: { authorization: `Bearer ${masterKey}` },
        });
        return response.status === 200 ? ((await response.json()) as { value: string }).value : response.status;
      };
      // Each key under its own hash's name (the revoked ones orphaned, as LiteLLM leaves alias-less
      // keys on delete), the alias written, and the victim's key untouched.
      expect(await read(h(keys.k1))).toBe(keys.k1);
      expect(await read(h(keys.k2))).toBe(keys.k2);
      expect(await read(h(keys.k3))).toBe(keys.k3);
      expect(await read("given-alias")).toBe(keys.k4);
      expect(await read(h(keys.victim))).toBe(keys.victim);
      expect(await read("attacker-alias")).toBe(keys.a1);
      expect(await read(`team-a/${h(keys.a2)}`)).toBe(keys.a2);
      // What the server changed: these writes, and no delete.
      await until(() => auditOf(server.output).filter(([action]) => action === "read").length >= 7);
      expect(auditOf(server.output).filter(([action]) => action !== "read")).toEqual([
        ["write", `litellm/${h(keys.k1)}`, "ok"],
        ["write", `litellm/${h(keys.k2)}`, "ok"],
        ["write", `litellm/${h(keys.k3)}`, "ok"],
        ["write", "litellm/given-alias", "ok"],
        ["write", `litellm/${h(keys.victim)}`, "ok"],
        ["write", "litellm/attacker-alias", "ok"],
        ["write", `litellm/team-a/${h(keys.a2)}`, "ok"],
      ]);
      // One INFO line per rotation that left a hash name, names only; no warning.
      expect(logs.filter((l) => l.level !== "INFO")).toEqual([]);
      expect(logs.map((l) => [l.logger, l.message])).toEqual([
        [
          "LiteLLM",
          expect.stringContaining(
            `litellm/${h(keys.k1)} (a token hash's name the new key is not) was written under the new key's hash name litellm/${h(keys.k2)}`,
          ),
        ],
        [
          "LiteLLM",
          expect.stringContaining(
            `litellm/${h(keys.k2)} (a token hash's name the new key is not) was written under the new key's hash name litellm/${h(keys.k3)}`,
          ),
        ],
        [
          "LiteLLM",
          `the rotation's old name litellm/${h(keys.k3)} is spelled as a token hash's name: not deleted (its owner cannot be told), it stays orphaned`,
        ],
        ["LiteLLM", expect.stringContaining(`the rotation's old name litellm/${h(keys.victim)} is spelled`)],
        ["LiteLLM", expect.stringContaining(`hash name litellm/team-a/${h(keys.a2)}; `)],
      ]);
      expectNoValueIn([server.output, raw], [...Object.values(keys), masterKey]);
    } finally {
      await server.stop();
    }
  });

  it("a regeneration whose new name is refused still deletes the old name (the revoked key) and raises the write's error; an old name that is not ours (409) is logged, not raised", async () => {
    const { fake, server, masterKey } = await serveAzure();
    const k = (label: string) => `sk-${secretValue(label)}`;
    const keys = { old: k("old"), rot1: k("rot1"), second: k("second"), rot2: k("rot2"), rot3: k("rot3") };
    try {
      const { results, logs, raw } = await hooks(python, dir, server.url, masterKey, [
        ["gen", "old-alias", keys.old],
        ["rot", "old-alias", "team-a/prod", keys.rot1], // team-a's prefix, not the general one's: 403
        ["gen", "second", keys.second],
        ["rot", "second", `virtual-key-${sha256(keys.old)}`, keys.rot2], // refused by the class
        ["rot", "SALT_KEY", "new-alias", keys.rot3], // the old name is the portal's secret: 409 on its delete
      ]);
      expect(results).toMatchObject([
        { ok: "stored" },
        { error: "LLMSecretsError", status: 403, code: "not_hosted" },
        { ok: "stored" },
        { error: "LLMSecretsError", status: 0, code: "invalid_request" },
        { ok: "rotated" },
      ]);
      // The revoked keys' old names are deleted though their new names were refused.
      expect(fake.secret("LITELLM-OLD-ALIAS")?.deleted).toBeDefined();
      expect(fake.secret("LITELLM-SECOND")?.deleted).toBeDefined();
      expect(fake.secret("LITELLM-TEAM-A-PROD")).toBeUndefined();
      expect(fake.secret(`LITELLM-VIRTUAL-KEY-${sha256(keys.old)}`)).toBeUndefined();
      // The portal's secret is untouched, and the new name written.
      expect(fake.secret("LITELLM-SALT-KEY")?.deleted).toBeUndefined();
      expect(fake.secret("LITELLM-SALT-KEY")?.versions.map((v) => v.value)).toEqual(["portal-salt"]);
      expect(fake.secret("LITELLM-NEW-ALIAS")?.versions.map((v) => v.value === keys.rot3)).toEqual([true]);
      expect(logs.filter((l) => l.logger === "LiteLLM")).toEqual([
        {
          logger: "LiteLLM",
          level: "INFO",
          message: "the rotation's old name litellm/SALT_KEY holds no key of ours (name_conflict): not deleted",
        },
      ]);
      expect(logs.filter((l) => l.level === "WARNING").map((l) => l.logger)).toEqual([
        "LiteLLM Proxy",
        "LiteLLM Proxy",
      ]);
      expectNoValueIn([server.output, raw], [...Object.values(keys), masterKey]);
    } finally {
      await server.stop();
    }
  });

  it("a regeneration to an alias Key Vault keeps on the old alias's secret (team_a to team-a) is a rename: the new key stored, the old name's delete 409 and logged", async () => {
    const { fake, server, masterKey } = await serveAzure();
    const k = (label: string) => `sk-${secretValue(label)}`;
    const keys = { old: k("old"), renamed: k("renamed"), cased: k("cased"), other: k("other") };
    try {
      const { results, logs, raw } = await hooks(python, dir, server.url, masterKey, [
        ["gen", "other", keys.other],
        ["gen", "team_a", keys.old],
        ["rot", "team_a", "team-a", keys.renamed], // one secret, LITELLM-TEAM-A
        ["rot", "team-a", "Team-A", keys.cased], // a change of case only
      ]);
      expect(results).toEqual([{ ok: "stored" }, { ok: "stored" }, { ok: "rotated" }, { ok: "rotated" }]);
      // The secret holds the last key under its last name; the other key is untouched.
      const secret = fake.secret("LITELLM-TEAM-A");
      expect(secret?.deleted).toBeUndefined();
      expect(secret?.versions.at(-1)?.value === keys.cased).toBe(true);
      expect(secret?.versions.at(-1)?.tags["llm-secrets:name"]).toBe("litellm/Team-A");
      expect(fake.secret("LITELLM-OTHER")?.versions.map((v) => v.value === keys.other)).toEqual([true]);
      expect(fake.calls("DELETE", "/secrets/")).toEqual([]);
      // Each old name's delete was refused (the secret holds the new name): logged at INFO, no warning.
      expect(logs).toEqual([
        {
          logger: "LiteLLM",
          level: "INFO",
          message: "the rotation's old name litellm/team_a holds no key of ours (name_conflict): not deleted",
        },
        {
          logger: "LiteLLM",
          level: "INFO",
          message: "the rotation's old name litellm/team-a holds no key of ours (name_conflict): not deleted",
        },
      ]);
      expectNoValueIn([server.output, raw], [...Object.values(keys), masterKey]);
    } finally {
      await server.stop();
    }
  });

  it("a regeneration against an older server, which refuses replaces in the body, is the write without it, then the delete", async () => {
    const { out } = await drive(python, dir, "older_server", {
      LLM_SECRETS_URL: "http://127.0.0.1:1",
      LLM_SECRETS_API_KEY: newKey(),
      VIRTUAL_KEY_VALUE: secretValue("rotated"),
    });
    expect(out.rotate).toMatchObject({ ok: { name: "litellm/b", created: true } });
    expect(out.calls).toEqual([
      ["PUT", ["replaces", "value"]],
      ["PUT", ["value"]],
      ["DELETE", "/v1/secrets/litellm/a"],
    ]);
  });

  it("a regeneration during a rolling upgrade of the servers (an older one refuses replaces, a newer one needs it) is the rename: the new key kept", async () => {
    const { out } = await drive(python, dir, "rolling_upgrade", {
      LLM_SECRETS_URL: "http://127.0.0.1:1",
      LLM_SECRETS_API_KEY: newKey(),
      VIRTUAL_KEY_VALUE: secretValue("rotated"),
    });
    expect(out.rotate).toMatchObject({ ok: { name: "litellm/b", created: false } });
    // Before: the write raised 409 and the old name's delete was sent: the one secret both names are.
    expect(out.calls).toEqual([
      ["PUT", ["replaces", "value"]],
      ["PUT", ["value"]],
      ["PUT", ["replaces", "value"]],
      ["DELETE", "/v1/secrets/litellm/a"],
    ]);
  });

  it("a key the server refuses (409 name_conflict, 403 not_hosted, 400 invalid_name) is not stored: the class raises the status and code, LiteLLM warns once, with no key", async () => {
    const { fake, server, masterKey } = await serveAzure();
    const k = (label: string) => `sk-${secretValue(label)}`;
    const keys = {
      salt: k("salt"),
      openai: k("openai"),
      team: k("team"),
      spaced: k("spaced"),
      good: k("good"),
      slashed: k("slashed"),
      dotted: k("dotted"),
    };
    try {
      const { results, logs, raw } = await hooks(python, dir, server.url, masterKey, [
        ["gen", "SALT_KEY", keys.salt], // lands on the portal's LITELLM-SALT-KEY
        ["gen", "openai", keys.openai], // lands on hosted litellm/OPENAI's secret (Key Vault ignores case)
        ["gen", "team-a/prod", keys.team], // team-a's prefix, nested in the general one, with hosted_keys
        ["gen", "Team A key", keys.spaced], // an alias that is no name
        ["gen", "good-alias", keys.good],
        // The remedy README gives: regenerate with an allowed alias. The old name was never stored.
        ["rot", "team-a/prod", "good-1", keys.team],
        ["rot", "Team A key", "good-2", keys.spaced],
        // An old alias the class itself refuses before sending (status 0 invalid_name), as the server would.
        ["rot", "team/", "good-3", keys.slashed],
        ["rot", "x/../y", "good-4", keys.dotted],
      ]);
      expect(results).toMatchObject([
        { error: "LLMSecretsError", status: 409, code: "name_conflict" },
        { error: "LLMSecretsError", status: 409, code: "name_conflict" },
        { error: "LLMSecretsError", status: 403, code: "not_hosted" },
        { error: "LLMSecretsError", status: 400, code: "invalid_name" },
        { ok: "stored" },
        { ok: "rotated" },
        { ok: "rotated" },
        { ok: "rotated" },
        { ok: "rotated" },
      ]);
      // Nothing written but the allowed aliases; the portal's secret untouched.
      expect(fake.calls("PUT", "/secrets/").map((r) => r.path)).toEqual([
        "/secrets/litellm-good-alias",
        "/secrets/litellm-good-1",
        "/secrets/litellm-good-2",
        "/secrets/litellm-good-3",
        "/secrets/litellm-good-4",
      ]);
      expect(logs.filter((l) => l.logger === "LiteLLM").map((l) => l.message)).toContain(
        "the rotation's old name litellm/x/../y holds no key of ours (invalid_name): not deleted",
      );
      expect(fake.secret("LITELLM-SALT-KEY")?.versions.map((v) => v.value)).toEqual(["portal-salt"]);
      // One WARNING each on LiteLLM's proxy logger, naming the status and code, never the key.
      const warnings = logs.filter((l) => l.level === "WARNING");
      expect(warnings.map((l) => [l.logger, /llm-secrets answered (\d+ \w+)/.exec(l.message)?.[1]])).toEqual([
        ["LiteLLM Proxy", "409 name_conflict"],
        ["LiteLLM Proxy", "409 name_conflict"],
        ["LiteLLM Proxy", "403 not_hosted"],
        ["LiteLLM Proxy", "400 invalid_name"],
      ]);
      expectNoValueIn([JSON.stringify(logs), raw, server.output], [...Object.values(keys), masterKey]);
    } finally {
      await server.stop();
    }
  });

  it("sends LLM_SECRETS_FUNCTIONS_KEY as x-functions-key (Azure), beside the master key", async () => {
    const { out } = await drive(python, dir, "functions_key", {
      LLM_SECRETS_URL: "http://127.0.0.1:1",
      LLM_SECRETS_API_KEY: newKey(),
      LLM_SECRETS_FUNCTIONS_KEY: newKey("fk-"),
    });
    expect(out).toMatchObject({ read: { ok: null }, functions_key_sent: true, master_key_sent: true });
  });

  it("sends a write, and a sync read, again once after a 503's Retry-After (LiteLLM never retries one)", async () => {
    const { out } = await drive(python, dir, "retry", {
      LLM_SECRETS_URL: "http://127.0.0.1:1",
      LLM_SECRETS_API_KEY: newKey(),
      VIRTUAL_KEY_VALUE: secretValue("retried"),
    });
    expect(out).toMatchObject({
      write: { ok: { created: true } },
      sync_read: { ok: "read-after-retry" }, // LiteLLM's get_secret reads provider keys sync
      calls: ["PUT", "PUT", "GET", "GET"],
    });
    for (const step of [out.write, out.sync_read]) {
      expect((step as { seconds: number }).seconds).toBeGreaterThanOrEqual(0.9); // it waited Retry-After
    }
  });

  it("refuses a key that is no header value without showing it (LiteLLM logs the error)", async () => {
    const key = `sk-${secretValue("part")}\nsecond-line`;
    const { out } = await drive(python, dir, "read", {
      LLM_SECRETS_URL: "https://secrets.example",
      LLM_SECRETS_API_KEY: key,
    });
    expect(out.construct).toMatchObject({ error: "ValueError", message: expect.stringContaining("printable ASCII") });
    expect(JSON.stringify(out)).not.toContain("second-line");
  });

  it("refuses an encrypted client key at construction, saying so, rather than asking for its passphrase", async () => {
    const pki = inject("testPki");
    const encrypted = join(await tempDir(), "client.key");
    const passphrase = secretValue("passphrase");
    await writeFile(
      encrypted,
      createPrivateKey(readFileSync(pki.clientKeyFile)).export({
        type: "pkcs8",
        format: "pem",
        cipher: "aes-256-cbc",
        passphrase,
      }),
    );
    const { out, raw } = await drive(python, dir, "read", {
      LLM_SECRETS_URL: "https://secrets.example",
      LLM_SECRETS_API_KEY: "k",
      LLM_SECRETS_CLIENT_CERT: pki.clientCertFile,
      LLM_SECRETS_CLIENT_KEY: encrypted,
    });
    expect(out.construct).toMatchObject({
      error: "ValueError",
      message: expect.stringMatching(/^the client key is encrypted; LLMSecretsManager takes an unencrypted PEM key/),
    });
    expect(raw).not.toContain(passphrase);
  });

  it("names the missing settings when it cannot start", async () => {
    const { out } = await drive(python, dir, "read", { LLM_SECRETS_URL: "https://secrets.example" });
    expect(out.construct).toMatchObject({
      error: "ValueError",
      message: expect.stringContaining("LLM_SECRETS_API_KEY"),
    });
    const bad = await drive(python, dir, "read", { LLM_SECRETS_URL: "secrets.example", LLM_SECRETS_API_KEY: "k" });
    expect(bad.out.construct).toMatchObject({ error: "ValueError", message: expect.stringContaining("https://") });
    const unreadable = await drive(python, dir, "read", {
      LLM_SECRETS_URL: "https://secrets.example",
      LLM_SECRETS_API_KEY: "k",
      LLM_SECRETS_CA_BUNDLE: "/nonexistent/ca.pem",
    });
    expect(unreadable.out.construct).toMatchObject({
      error: "ValueError",
      message: expect.stringContaining("cannot use its TLS files"),
    });
    // Settings that would only fail at the first call, as if the network were down, fail here.
    const refused: [Record<string, string>, string][] = [
      [{ LLM_SECRETS_URL: "https://" }, "no host"],
      [{ LLM_SECRETS_URL: "http://127.0.0.1:abc" }, "is not a URL"],
      [{ LLM_SECRETS_URL: "http://127.0.0.1:70000" }, "is not a URL"],
      [{ LLM_SECRETS_URL: "http://[::1" }, "is not a URL"],
      [{ LLM_SECRETS_TIMEOUT: "nan" }, "LLM_SECRETS_TIMEOUT"],
      [{ LLM_SECRETS_TIMEOUT: "inf" }, "LLM_SECRETS_TIMEOUT"],
      [{ LLM_SECRETS_TIMEOUT: "0" }, "LLM_SECRETS_TIMEOUT"],
      [{ LLM_SECRETS_CLIENT_KEY: "/etc/ssl/proxy.key" }, "needs LLM_SECRETS_CLIENT_CERT"],
    ];
    for (const [env, message] of refused) {
      const { out } = await drive(python, dir, "read", {
        LLM_SECRETS_URL: "https://h",
        LLM_SECRETS_API_KEY: "k",
        ...env,
      });
      expect(out.construct, JSON.stringify(env)).toMatchObject({
        error: "ValueError",
        message: expect.stringContaining(message),
      });
    }
  });
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}
