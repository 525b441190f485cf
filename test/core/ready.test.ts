// `GET /ready`: the store answers a cheap read within 2 s (200), else 503 with the error code;
// answers are shared and reused for a second; `/health` touches nothing.
import { describe, expect, it } from "vitest";
import { InvalidName, SecretsError } from "../../core/src/errors";
import type { SecretRecord, StoreFactory } from "../../core/src/secret-store";
import { BackendDenied, BackendUnavailable } from "../../core/src/store-errors";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";
import { inProcessApp } from "../helpers";

/** A backend whose reads do what `mode` says, counting them. */
class ProbedStore extends MemoryStore {
  mode: "up" | "down" | "denied" | "hang" | "broken" | "refuses-names" | "refuses-slash" = "up";
  reads = 0;
  names: string[] = [];
  override async get(name: string): Promise<SecretRecord | undefined> {
    this.reads++;
    this.names.push(name);
    if (this.mode === "down") throw new BackendUnavailable("probed get: the backend is unavailable (503)");
    if (this.mode === "denied") throw new BackendDenied("probed get: the backend refused (403)");
    if (this.mode === "broken")
      throw new SecretsError("internal", "vault get: unexpected 418 at https://vault.internal:8200");
    if (this.mode === "hang") return new Promise(() => {});
    if (this.mode === "refuses-names") throw new InvalidName(`the store takes no such name: ${name}`);
    // As Docker's store: a secret is a file, and its name holds no `/`.
    if (this.mode === "refuses-slash" && name.includes("/")) throw new InvalidName("no path separator in its name");
    return super.get(name);
  }
}

async function app(config?: string) {
  const backend = new ProbedStore();
  const factory = { ...memoryStore, open: async () => backend } satisfies StoreFactory<"memory">;
  const clock = { now: Date.now() };
  const { request, logs } = await inProcessApp({ stores: [factory], ...(config && { config }), now: () => clock.now });
  const ready = async () => {
    const res = await request("/ready", { token: null }); // a probe presents no key
    return {
      status: res.status,
      retryAfter: res.headers.get("retry-after"),
      body: (await res.json()) as Record<string, unknown>,
    };
  };
  /** The runtime's clock past the 1 s an answer is reused. */
  const settle = () => {
    clock.now += 1_050;
  };
  return { backend, request, ready, settle, clock, logs };
}

describe("/ready", () => {
  it("is 200 with the store kind when the store answers, without a key", async () => {
    const { ready } = await app();
    const { status, body } = await ready();
    expect(status).toBe(200);
    expect(body).toMatchObject({ status: "ready", store: "memory" });
    expect(typeof body.ms).toBe("number");
  });

  it("is 200 on the file store too (the probe's name is held by no one)", async () => {
    const { request } = await inProcessApp();
    const res = await request("/ready", { token: null });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: "ready", store: "file" });
  });

  it("reads a name this deployment may read: the first hosted key, else under the virtual-key prefix", async () => {
    const plain = await app();
    await plain.ready();
    expect(plain.backend.names).toEqual(["litellm/llm-secrets-readiness-probe"]);
    const hosted = await app(
      'general_settings:\n  key_management_settings:\n    hosted_keys: ["OPENAI_API_KEY", "B"]\n',
    );
    await hosted.ready();
    expect(hosted.backend.names).toEqual(["OPENAI_API_KEY"]);
  });

  it("is not ready when the store refuses every name it could probe: no answer came from the store", async () => {
    const plain = await app();
    plain.backend.mode = "refuses-names";
    const refused = {
      status: 503,
      retryAfter: "1",
      body: { error: { code: "invalid_name", message: "the memory store is not ready: the log says why" } },
    };
    expect(await plain.ready()).toEqual(refused);
    // The second name was tried after the first was refused, and its refusal stands.
    expect(plain.backend.names).toEqual(["litellm/llm-secrets-readiness-probe", "llm-secrets-readiness-probe"]);
    const hosted = await app('general_settings:\n  key_management_settings:\n    hosted_keys: ["OPENAI_API_KEY"]\n');
    hosted.backend.mode = "refuses-names";
    expect(await hosted.ready()).toEqual(refused);
  });

  it("with hosted_keys whose first name the store refuses, probes the next one: ready; a failure otherwise stops there", async () => {
    const config =
      'general_settings:\n  key_management_settings:\n    hosted_keys: ["team/OPENAI_API_KEY", "OPENAI_API_KEY"]\n';
    const { backend, ready, settle } = await app(config);
    backend.mode = "refuses-slash";
    expect(await ready()).toMatchObject({ status: 200, body: { status: "ready" } });
    expect(backend.names).toEqual(["team/OPENAI_API_KEY", "OPENAI_API_KEY"]);
    // An answer that is no refusal of the name is the store's state: the next name is not tried.
    settle();
    backend.names = [];
    backend.mode = "down";
    expect(await ready()).toMatchObject({ status: 503, body: { error: { code: "backend_unavailable" } } });
    expect(backend.names).toEqual(["team/OPENAI_API_KEY"]);
  });

  it("is 503 with the store's error code and Retry-After when it fails, and 200 again when it is back", async () => {
    const { backend, ready, settle, logs, request } = await app();
    backend.mode = "down";
    expect(await ready()).toEqual({
      status: 503,
      retryAfter: "1",
      // A caller without the key gets the code; the store's message (its names) stays in the log.
      body: { error: { code: "backend_unavailable", message: "the memory store is not ready: the log says why" } },
    });
    // One line a probe says why, whatever the code (the store's own line is only for store failures).
    const notReady = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "store not ready");
    expect(notReady).toEqual([
      expect.objectContaining({
        store: "memory",
        code: "backend_unavailable",
        reason: "probed get: the backend is unavailable (503)",
      }),
    ]);
    // Its request's log line names the code, as an error answer's does.
    const line = logs.map((l) => JSON.parse(l)).find((l) => l.msg === "request" && l.path === "/ready");
    expect(line).toMatchObject({ status: 503, code: "backend_unavailable" });
    // And it is counted as one (it was not: an outage's /ready answers were missing from the count).
    expect(await (await request("/metrics")).text()).toMatch(
      /llm_secrets_errors_total\{store="memory",code="backend_unavailable"\} 1\n/,
    );
    settle();
    backend.mode = "denied";
    expect(await ready()).toMatchObject({ status: 503, retryAfter: "1", body: { error: { code: "backend_denied" } } });
    settle();
    // An unexpected failure says nothing of itself to a caller that presented no key.
    backend.mode = "broken";
    const broken = await ready();
    expect(broken).toMatchObject({
      status: 503,
      body: { error: { code: "internal", message: "the memory store is not ready: the log says why" } },
    });
    expect(JSON.stringify(broken.body)).not.toContain("vault.internal");
    settle();
    backend.mode = "up";
    expect((await ready()).status).toBe(200);
  });

  it("is 503 backend_unavailable when the store does not answer within 2 s", async () => {
    const { backend, ready } = await app();
    backend.mode = "hang";
    const started = Date.now();
    const { status, body } = await ready();
    const ms = Date.now() - started;
    expect(status).toBe(503);
    expect(body).toMatchObject({ error: { code: "backend_unavailable", message: expect.stringContaining("2 s") } });
    expect(ms).toBeGreaterThanOrEqual(1_900); // its own 2 s timer (the test's timeout bounds it above)
  });

  it("never has two store reads pending: a hung read is waited on again, not started again", async () => {
    const { backend, ready, settle } = await app();
    backend.mode = "hang";
    expect((await ready()).status).toBe(503);
    settle();
    expect((await ready()).status).toBe(503);
    expect(backend.reads).toBe(1);
  });

  it("shares one probe among concurrent and close callers: unauthenticated probes cannot flood the store", async () => {
    const { backend, ready, settle } = await app();
    const answers = await Promise.all(Array.from({ length: 50 }, () => ready()));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    await ready();
    expect(backend.reads).toBe(1);
    settle();
    await ready();
    expect(backend.reads).toBe(2);
  });

  it("probes again when the clock steps back, rather than keep its answer for the length of the step", async () => {
    const { backend, ready, clock } = await app();
    backend.mode = "down";
    expect((await ready()).status).toBe(503);
    clock.now -= 3_600_000; // NTP steps the clock back an hour
    backend.mode = "up";
    expect((await ready()).status).toBe(200);
    expect(backend.reads).toBe(2);
  });

  it("leaves /health a liveness check that touches nothing, even with the store down", async () => {
    const { backend, request } = await app();
    backend.mode = "down";
    expect((await request("/health", { token: null })).status).toBe(200);
    expect(backend.reads).toBe(0);
  });
});
