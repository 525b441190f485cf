// HTTPS in, with real certificates made now: the whole chain is sent (a client that trusts only the
// root connects), SIGHUP rotates the certificate without dropping open connections, and mutual TLS
// (LLM_SECRETS_CLIENT_CA) refuses a client without a certificate at the handshake.
import { copyFile, readFile } from "node:fs/promises";
import { Agent, request } from "node:https";
import { join } from "node:path";
import type { PeerCertificate, TLSSocket } from "node:tls";
import { describe, expect, inject, it } from "vitest";
import { startServer } from "../../core/src/server";
import { loadSettings } from "../../core/src/settings";
import { memoryStore } from "../../core/src/stores/memory";
import { makeServerChain } from "../fakes/pki";
import { cleanEnv, inProcessApp, newKey, ServerProcess, tempDir } from "../helpers";

interface Got {
  status: number;
  fingerprint: string;
  reused: boolean;
}

function get(url: string, options: { ca: string; agent?: Agent; cert?: Buffer; key?: Buffer }): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/health`,
      { ca: options.ca, agent: options.agent, cert: options.cert, key: options.key },
      (res) => {
        const socket = res.socket as TLSSocket;
        const peer: PeerCertificate = socket.getPeerCertificate();
        res.resume();
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, fingerprint: peer.fingerprint256, reused: socket.isSessionReused() }),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}

describe("HTTPS in", () => {
  it("sends the whole chain: a client that trusts only the root connects", async () => {
    const dir = await tempDir();
    const chain = makeServerChain(dir);
    const ctx = await inProcessApp();
    const running = await startServer(ctx.runtime, {
      host: "127.0.0.1",
      port: 0,
      tls: { keyFile: chain.keyFile, certFile: chain.certFile },
    });
    try {
      const got = await get(running.url, { ca: await readFile(chain.rootFile, "utf8") });
      expect(got.status).toBe(200);
    } finally {
      await running.close();
    }
  });

  it("SIGHUP serves new connections with the new certificate; an open keep-alive connection keeps working", async () => {
    const dir = await tempDir();
    const first = makeServerChain(dir, "first");
    const second = makeServerChain(dir, "second");
    const keyFile = join(dir, "key.pem");
    const certFile = join(dir, "cert.pem");
    await copyFile(first.keyFile, keyFile);
    await copyFile(first.certFile, certFile);
    const ca = (await readFile(first.rootFile, "utf8")) + (await readFile(second.rootFile, "utf8"));
    const server = await ServerProcess.start({
      env: cleanEnv({ LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_DATA_DIR: join(dir, "data") }),
      args: ["--port", "0", "--ssl_keyfile_path", keyFile, "--ssl_certfile_path", certFile],
    });
    const kept = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = await get(server.url, { ca, agent: kept });
      expect(before.status).toBe(200);
      await copyFile(second.keyFile, keyFile);
      await copyFile(second.certFile, certFile);
      process.kill(server.child.pid as number, "SIGHUP");
      await server.waitFor(/TLS key and certificate reloaded/);
      const fresh = await get(server.url, { ca });
      expect(fresh.status).toBe(200);
      expect(fresh.fingerprint).not.toBe(before.fingerprint);
      // The connection opened before the reload is still served, with the certificate it started with.
      const again = await get(server.url, { ca, agent: kept });
      expect(again.status).toBe(200);
      expect(again.fingerprint).toBe(before.fingerprint);
      // A reload with a file that cannot be used keeps serving the current certificate.
      await copyFile(first.rootFile, keyFile);
      process.kill(server.child.pid as number, "SIGHUP");
      await server.waitFor(/TLS reload failed; still serving the previous certificate/);
      expect((await get(server.url, { ca })).fingerprint).toBe(fresh.fingerprint);
    } finally {
      kept.destroy();
      await server.stop();
    }
  });

  it("with LLM_SECRETS_CLIENT_CA, refuses a client without a certificate at the handshake and serves one with", async () => {
    const pki = inject("testPki");
    const dir = await tempDir();
    const chain = makeServerChain(dir);
    const ctx = await inProcessApp();
    const running = await startServer(ctx.runtime, {
      host: "127.0.0.1",
      port: 0,
      tls: { keyFile: chain.keyFile, certFile: chain.certFile, clientCaFile: pki.caFile },
    });
    const ca = await readFile(chain.rootFile, "utf8");
    try {
      await expect(get(running.url, { ca })).rejects.toThrow();
      const got = await get(running.url, {
        ca,
        cert: await readFile(pki.clientCertFile),
        key: await readFile(pki.clientKeyFile),
      });
      expect(got.status).toBe(200);
    } finally {
      await running.close();
    }
    // Without HTTPS it is a start error, not a silent plain-HTTP server.
    expect(() =>
      loadSettings({ env: { LITELLM_MASTER_KEY: newKey(), LLM_SECRETS_CLIENT_CA: pki.caFile }, stores: [memoryStore] }),
    ).toThrow(/LLM_SECRETS_CLIENT_CA/);
  });
});
