// The audit trail (core/src/audit.ts): one line per read, write, delete, list, resolve and decrypt,
// refused ones included, apart from the access log, and never a value or a key.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { callerOf, nextRequestId } from "../../core/src/audit";
import { expectNoValueIn, inProcessApp, newKey, secretValue, serveStore } from "../helpers";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const fingerprint = (key: string) => createHash("sha256").update(key).digest("hex").slice(0, 8);

interface AuditLine {
  time: string;
  audit: string;
  name?: string;
  names?: Record<string, string>;
  event_id?: string;
  team?: string;
  outcome: string;
  request_id: string;
  client_request_id?: string;
  caller: string;
  source?: string;
}

describe("request ids made here", () => {
  it("are UUIDs of version 8, distinct: this process's random prefix, then a counter", () => {
    const ids = Array.from({ length: 20_000 }, () => nextRequestId());
    expect(new Set(ids).size).toBe(ids.length);
    const prefix = ids[0]?.slice(0, 24);
    expect(prefix).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-$/);
    for (const [i, id] of ids.entries()) {
      expect(id.slice(0, 24)).toBe(prefix);
      expect(Number.parseInt(id.slice(24), 16) - Number.parseInt(ids[0]?.slice(24) ?? "", 16)).toBe(i);
    }
  });
});

describe("the audit trail", () => {
  it("fingerprints the key of a Bearer scheme in any case (the key check takes any), and of x-litellm-api-key first", () => {
    const key = newKey();
    for (const scheme of ["Bearer", "bearer", "BEARER"])
      expect(callerOf(undefined, `${scheme} ${key}`)).toBe(fingerprint(key));
    expect(callerOf(` ${key} `, "Bearer other")).toBe(fingerprint(key));
    expect(callerOf(undefined, `Basic ${key}`)).toBe("none");
    expect(callerOf(undefined, undefined)).toBe("none");
  });

  it("writes one line per call, with the outcome code, the request id and the caller's fingerprint", async () => {
    const { request, audits, logs, masterKey } = await inProcessApp();
    const value = secretValue("audited");
    const wrongKey = newKey();
    const rid = { "x-request-id": "req-42.a:b" };
    expect((await request("/v1/secrets/OPENAI_API_KEY", { method: "PUT", json: { value }, headers: rid })).status).toBe(
      201,
    );
    expect((await request("/v1/secrets/OPENAI_API_KEY")).status).toBe(200);
    expect((await request("/v1/secrets/MISSING")).status).toBe(404);
    expect((await request("/v1/secrets/OPENAI_API_KEY", { token: wrongKey })).status).toBe(401);
    expect((await request("/v1/secrets/a/../b", { method: "DELETE" })).status).toBe(400);
    // A bare `..` normalises to a path no route has (`/v1/`): still a refused delete of a secret.
    expect((await request("/v1/secrets/..", { method: "DELETE" })).status).toBe(400);
    expect((await request("/v1/secrets?prefix=OPENAI")).status).toBe(200);
    const resolved = await request("/v1/resolve", {
      method: "POST",
      json: { config: { key: "os.environ/OPENAI_API_KEY" } },
    });
    expect(resolved.status).toBe(200);
    const { ciphertext } = (await (await request("/v1/encrypt", { method: "POST", json: { value } })).json()) as {
      ciphertext: string;
    };
    expect((await request("/v1/decrypt", { method: "POST", json: { ciphertext } })).status).toBe(200);
    expect((await request("/v1/secrets/OPENAI_API_KEY", { method: "DELETE" })).status).toBe(204);
    expect((await request("/health", { token: null })).status).toBe(200);

    const lines = audits.map((l) => JSON.parse(l) as AuditLine);
    const me = fingerprint(masterKey);
    expect(lines.map(({ audit, name, outcome, caller }) => ({ audit, name, outcome, caller }))).toEqual([
      { audit: "write", name: "OPENAI_API_KEY", outcome: "ok", caller: me },
      { audit: "read", name: "OPENAI_API_KEY", outcome: "ok", caller: me },
      { audit: "read", name: "MISSING", outcome: "not_found", caller: me },
      { audit: "read", name: "OPENAI_API_KEY", outcome: "unauthorized", caller: fingerprint(wrongKey) },
      { audit: "delete", name: "a/../b", outcome: "invalid_name", caller: me }, // what was asked for
      { audit: "delete", name: "..", outcome: "invalid_name", caller: me },
      { audit: "list", name: "OPENAI", outcome: "ok", caller: me },
      { audit: "resolve", name: undefined, outcome: "ok", caller: me },
      { audit: "decrypt", name: undefined, outcome: "ok", caller: me },
      { audit: "delete", name: "OPENAI_API_KEY", outcome: "ok", caller: me },
    ]);
    // A fresh UUID per request, never the caller's: its x-request-id, when a plain token, is its own field.
    expect(lines.map((l) => l.client_request_id)).toEqual(lines.map((_, i) => (i === 0 ? "req-42.a:b" : undefined)));
    const ids = lines.map((l) => l.request_id);
    // RFC 9562 version 8, variant 10xx.
    for (const id of ids) expect(id).toMatch(UUID);
    expect(new Set(ids).size).toBe(ids.length);
    for (const line of lines) expect(Date.parse(line.time)).toBeGreaterThan(Date.now() - 60_000);
    // Apart from the access log, and never a value, a ciphertext or a key.
    expect(logs.some((l) => l.includes('"audit"'))).toBe(false);
    expectNoValueIn(audits, [value, ciphertext, masterKey, wrongKey]);
  });

  it("audits key events, from a queue (caller `queue`, the event's id) and over HTTP (the caller's key)", async () => {
    const { request, audits, runtime, masterKey } = await inProcessApp({
      config:
        "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n",
    });
    const key = newKey("sk-virtual-");
    const at = new Date(Date.now() - 1000).toISOString();
    const created = { id: "evt-1", type: "key.created", occurred_at: at, key_alias: "svc", key };
    expect(await runtime.applyKeyEvent(created, "msg-1")).toMatchObject({ status: "applied" });
    expect(await runtime.applyKeyEvent({ id: "evt-bad", type: "key.created" })).toMatchObject({ status: "refused" });
    const deleted = { id: "evt-2", type: "key.deleted", occurred_at: new Date().toISOString(), key_alias: "svc" };
    const res = await request("/v1/key-events", {
      method: "POST",
      json: [deleted],
      headers: { "x-request-id": "r-7" },
    });
    expect(res.status).toBe(200);
    // Refused requests get one line each: a wrong key, a malformed body.
    const wrongKey = newKey();
    expect((await request("/v1/key-events", { method: "POST", json: [deleted], token: wrongKey })).status).toBe(401);
    const malformed = { method: "POST", json: 42, headers: { "x-request-id": "r-8" } }; // neither an event nor a list
    expect((await request("/v1/key-events", malformed)).status).toBe(400);
    const lines = audits.map((l) => JSON.parse(l) as AuditLine);
    expect(
      lines.map(({ audit, name, names, outcome, request_id, client_request_id, caller }) => ({
        audit,
        name,
        names,
        outcome,
        request_id,
        client_request_id,
        caller,
      })),
    ).toEqual([
      {
        audit: "key_event",
        name: undefined,
        names: { "litellm/svc": "created" },
        outcome: "ok",
        request_id: "msg-1",
        client_request_id: undefined,
        caller: "queue",
      },
      {
        audit: "key_event",
        name: undefined,
        names: undefined,
        outcome: "invalid_request",
        request_id: expect.stringMatching(UUID),
        client_request_id: undefined,
        caller: "queue",
      },
      {
        audit: "key_event",
        name: undefined,
        names: { "litellm/svc": "deleted" },
        outcome: "ok",
        request_id: expect.stringMatching(UUID),
        client_request_id: "r-7",
        caller: fingerprint(masterKey),
      },
      {
        audit: "key_event",
        name: undefined,
        names: undefined,
        outcome: "unauthorized",
        request_id: expect.stringMatching(UUID),
        client_request_id: undefined,
        caller: fingerprint(wrongKey),
      },
      {
        audit: "key_event",
        name: undefined,
        names: undefined,
        outcome: "invalid_request",
        request_id: expect.stringMatching(UUID),
        client_request_id: "r-8",
        caller: fingerprint(masterKey),
      },
    ]);
    expectNoValueIn(audits, [key]);
  });

  it("says which event each key-event line is about, and for which team: over HTTP and from a queue", async () => {
    const { request, audits, runtime } = await inProcessApp({
      config:
        "general_settings:\n  key_management_settings:\n    store_virtual_keys: true\n    team_settings:\n      team-a: {}\n",
    });
    const at = new Date().toISOString();
    const events = [
      { id: "evt-1", type: "key.created", occurred_at: at, key_alias: "a", key: "sk-aaaaaaaaaa", team_id: "team-a" },
      { id: "evt-2", type: "key.created", occurred_at: "2000-01-01T00:00:00Z", key_alias: "b", key: "sk-bbbbbbbbbb" },
      { id: "evt-3", type: "key.created", occurred_at: at, key_alias: "c", team_id: 'team-"c"' },
    ];
    const res = await request("/v1/key-events", {
      method: "POST",
      json: events,
      headers: { "x-request-id": "batch-1" },
    });
    expect(res.status).toBe(200);
    // From a queue: an event id that is not a plain token is still the event's, and one longer than
    // a name is clipped; the request id is the queue's id of the message.
    const long = `evt-${"x".repeat(400)}`;
    await runtime.applyKeyEvent(
      { id: "evt 4", type: "key.created", occurred_at: at, key_alias: "d", key: "sk-dd" },
      "m-4",
    );
    await runtime.applyKeyEvent({ id: long, type: "key.deleted", occurred_at: at, key_alias: "d" }, "m-5");
    await runtime.applyKeyEventText(JSON.stringify({ id: "evt-6", team_id: "team-a" }), "m-6");
    await runtime.applyKeyEventText("not json", "m-7");
    const lines = audits.map((l) => JSON.parse(l) as AuditLine);
    expect(lines.map(({ event_id, team, outcome, request_id }) => ({ event_id, team, outcome, request_id }))).toEqual([
      { event_id: "evt-1", team: "team-a", outcome: "ok", request_id: expect.stringMatching(UUID) },
      { event_id: "evt-2", team: undefined, outcome: "invalid_request", request_id: lines[0]?.request_id },
      { event_id: "evt-3", team: 'team-"c"', outcome: "invalid_request", request_id: lines[0]?.request_id },
      { event_id: "evt 4", team: undefined, outcome: "ok", request_id: "m-4" },
      { event_id: `${long.slice(0, 256)}…`, team: undefined, outcome: "ok", request_id: "m-5" },
      { event_id: "evt-6", team: "team-a", outcome: "invalid_request", request_id: "m-6" },
      { event_id: undefined, team: undefined, outcome: "invalid_request", request_id: "m-7" },
    ]);
    expect(lines.map((l) => l.client_request_id)).toEqual([
      ...lines.slice(0, 3).map(() => "batch-1"),
      ...lines.slice(3).map(() => undefined),
    ]);
    expectNoValueIn(audits, ["sk-aaaaaaaaaa", "sk-bbbbbbbbbb", "sk-dd"]);
  });

  it("lists each name a key event touched with what became of it, each clipped on its own", async () => {
    const { request, audits, runtime } = await inProcessApp({
      config: "general_settings:\n  key_management_settings:\n    store_virtual_keys: true\n",
    });
    const at = () => new Date().toISOString();
    // The names of the last key event's line.
    const lastNames = () =>
      audits
        .map((l) => JSON.parse(l) as AuditLine)
        .filter((l) => l.audit === "key_event")
        .at(-1)?.names;
    const hash = createHash("sha256").update("sk-other").digest("hex");
    const victim = secretValue("victim");
    expect((await request("/v1/secrets/litellm/victim", { method: "PUT", json: { value: victim } })).status).toBe(201);
    const created = { id: "e0", type: "key.created", occurred_at: at(), token_hash: hash, key: "sk-other-1234" };
    expect(await runtime.applyKeyEvent(created)).toMatchObject({ status: "applied" });
    // An alias is free text: one with a comma is one name (no name: absent), never two.
    const deleted = {
      id: "e1",
      type: "key.deleted",
      occurred_at: at(),
      key_alias: "x,litellm/victim",
      token_hash: hash,
    };
    expect(await runtime.applyKeyEvent(deleted)).toMatchObject({ status: "applied" });
    expect((await request("/v1/secrets/litellm/victim")).status).toBe(200); // untouched
    expect(lastNames()).toEqual({
      "litellm/x,litellm/victim": "absent",
      [`litellm/virtual-key-${hash}`]: "deleted",
    });
    // A long new name leaves the previous name (deleted) in the line; a name longer than any name
    // (never stored) is clipped on its own, marked with `…`.
    const old = { id: "e2", type: "key.created", occurred_at: at(), key_alias: "old-key", key: "sk-old-12345" };
    expect(await runtime.applyKeyEvent(old)).toMatchObject({ status: "applied" });
    const long = "a".repeat(240);
    const regenerated = {
      id: "e3",
      type: "key.regenerated",
      occurred_at: at(),
      key_alias: long,
      key: "sk-new-12345",
      previous_key_alias: "old-key",
    };
    expect(await runtime.applyKeyEvent(regenerated)).toMatchObject({ status: "applied" });
    expect(lastNames()).toEqual({ [`litellm/${long}`]: "created", "litellm/old-key": "deleted" });
    const tooLong = "b".repeat(400);
    const gone = { id: "e4", type: "key.deleted", occurred_at: at(), key_alias: tooLong };
    expect(await runtime.applyKeyEvent(gone)).toMatchObject({ status: "superseded" });
    expect(lastNames()).toEqual({ [`${`litellm/${tooLong}`.slice(0, 256)}…`]: "absent" });
    expectNoValueIn(audits, [victim, "sk-other-1234", "sk-old-12345", "sk-new-12345"]);
  });

  it("says which team's settings a read asked for (?team_id=): with them the same name is another secret", async () => {
    const { request, audits } = await inProcessApp({
      config: "general_settings:\n  key_management_settings:\n    team_settings:\n      b: {data: password}\n",
    });
    expect((await request("/v1/secrets/DB", { method: "PUT", json: { value: "v" } })).status).toBe(201);
    expect((await request("/v1/secrets/DB")).status).toBe(200);
    expect((await request("/v1/secrets/DB?team_id=b")).status).toBe(200);
    expect((await request("/v1/secrets/DB?refresh=true&team_id=%22b%22")).status).toBe(200);
    expect((await request(`/v1/secrets/DB?team_id=${"t".repeat(300)}`)).status).toBe(400); // refused: still said
    expect((await request("/v1/secrets/DB?team_id=")).status).toBe(400);
    const lines = audits.map((l) => JSON.parse(l) as AuditLine);
    expect(lines.map(({ audit, name, team, outcome }) => ({ audit, name, team, outcome }))).toEqual([
      { audit: "write", name: "DB", team: undefined, outcome: "ok" },
      { audit: "read", name: "DB", team: undefined, outcome: "ok" },
      { audit: "read", name: "DB", team: "b", outcome: "ok" },
      { audit: "read", name: "DB", team: '"b"', outcome: "ok" },
      { audit: "read", name: "DB", team: `${"t".repeat(256)}…`, outcome: "invalid_request" },
      { audit: "read", name: "DB", team: undefined, outcome: "invalid_request" },
    ]);
  });

  it("takes no request id that is not a plain token", async () => {
    const { request, audits } = await inProcessApp();
    await request("/v1/secrets/X", { headers: { "x-request-id": 'a b;"c"' } });
    await request("/v1/secrets/X", { headers: { "x-request-id": "z".repeat(129) } });
    expect(audits).toHaveLength(2);
    for (const line of audits.map((l) => JSON.parse(l) as AuditLine)) {
      expect(line.request_id).toMatch(UUID);
      expect(line.client_request_id).toBeUndefined();
    }
  });

  it("makes its own request id, whatever the caller sends: a caller's x-request-id is client_request_id, if it presented the key", async () => {
    const { request, audits, logs } = await inProcessApp();
    const rid = { "x-request-id": "evt-1" };
    expect((await request("/v1/secrets/X", { method: "PUT", json: { value: "v" }, headers: rid })).status).toBe(201);
    expect((await request("/v1/secrets/X", { token: null, headers: rid })).status).toBe(401);
    expect((await request("/v1/secrets/X", { token: "wrong-key-123", headers: rid })).status).toBe(401);
    // Refused after the key was accepted (a `..` in the path, no route): the caller presented the key.
    expect((await request("/v1/secrets/a/../b", { method: "DELETE", headers: rid })).status).toBe(400);
    expect((await request("/v1/secrets/..", { method: "DELETE", headers: rid })).status).toBe(400);
    const lines = audits.map((l) => JSON.parse(l) as AuditLine);
    expect(lines.map((l) => [l.outcome, l.client_request_id])).toEqual([
      ["ok", "evt-1"],
      ["unauthorized", undefined],
      ["unauthorized", undefined],
      ["invalid_name", "evt-1"],
      ["invalid_name", "evt-1"],
    ]);
    const ids = lines.map((l) => l.request_id);
    for (const id of ids) expect(id).toMatch(UUID);
    expect(new Set(ids).size).toBe(ids.length);
    // A refused request's access-log line joins its audit line on the request's id.
    const logged = logs
      .map((l) => JSON.parse(l) as { msg: string; request_id?: string })
      .filter((l) => l.msg === "request");
    expect(logged.map((l) => l.request_id)).toEqual(ids.slice(1));
    // On Lambda, Lambda's request id (which joins Lambda's own lines), whatever the caller sends.
    const lambda = await inProcessApp();
    const res = await lambda.runtime.fetch(
      new Request("http://localhost/v1/secrets/Y", {
        headers: { authorization: `Bearer ${lambda.masterKey}`, ...rid },
      }),
      { path: "/v1/secrets/Y", requestId: "8f1c2d3e-lambda" },
    );
    expect(res.status).toBe(404);
    expect(lambda.audits.map((l) => JSON.parse(l) as AuditLine)).toMatchObject([
      { outcome: "not_found", request_id: "8f1c2d3e-lambda", client_request_id: "evt-1" },
    ]);
    expect(lambda.logs.map((l) => JSON.parse(l) as { request_id?: string })).toMatchObject([
      { request_id: "8f1c2d3e-lambda" },
    ]);
  });

  it("says request_timeout, not client_closed, for a body the server cut for its time (serve's 408)", async () => {
    const { runtime, audits, masterKey } = await inProcessApp();
    const put = (raw: { timedOut?: () => boolean }) => {
      // A body that stops half way, as node's request timeout stops it (the socket closed under it).
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"val'));
          setTimeout(() => controller.error(new Error("aborted")), 5);
        },
      });
      const headers = { authorization: `Bearer ${masterKey}`, "content-type": "application/json" };
      const init = { method: "PUT", headers, body, duplex: "half" } as RequestInit;
      const request = new Request("http://localhost/v1/secrets/A", init);
      return runtime.fetch(request, { path: "/v1/secrets/A", clientClosed: () => true, ...raw });
    };
    await put({ timedOut: () => true });
    await put({});
    expect(audits.map((l) => (JSON.parse(l) as AuditLine).outcome)).toEqual(["request_timeout", "client_closed"]);
  });

  it("says where a request came from as the runtime knew it (a plain address only), never from a header", async () => {
    const { runtime, audits, masterKey } = await inProcessApp();
    const get = (source: string | undefined) =>
      runtime.fetch(
        new Request("http://localhost/v1/secrets/NONE", {
          headers: { authorization: `Bearer ${masterKey}`, "x-forwarded-for": "198.51.100.9" },
        }),
        { path: "/v1/secrets/NONE", ...(source !== undefined && { source }) },
      );
    for (const source of ["203.0.113.7", "::ffff:10.0.0.1", "fe80::1%eth0", 'x","caller":"forged', "a b", undefined]) {
      audits.length = 0;
      expect((await get(source)).status).toBe(404);
      const line = JSON.parse(audits[0] as string) as AuditLine;
      const plain = source !== undefined && /^[A-Za-z0-9.:%_-]+$/.test(source);
      expect(line.source, String(source)).toBe(plain ? source : undefined);
      expect(line.caller).toMatch(/^[0-9a-f]{8}$/);
    }
  });

  it("is off with LLM_SECRETS_AUDIT=off", async () => {
    const { request, audits } = await inProcessApp({ env: { LLM_SECRETS_AUDIT: "off" } });
    await request("/v1/secrets/X");
    expect(audits).toEqual([]);
  });

  it("is the one line of a request it records as done, with its time taken; the access log keeps the rest", async () => {
    const accessLines = (logs: string[]) =>
      logs
        .map((l) => JSON.parse(l) as { msg: string; method?: string; path?: string; status?: number; code?: string })
        .filter((l) => l.msg === "request")
        .map((l) => `${l.method} ${l.path} ${l.status}${l.code ? ` ${l.code}` : ""}`);
    const { request, audits, logs } = await inProcessApp();
    expect((await request("/v1/secrets/A", { method: "PUT", json: { value: "a" } })).status).toBe(201);
    expect((await request("/v1/secrets/A")).status).toBe(200);
    expect((await request("/v1/secrets/A", { token: "wrong" })).status).toBe(401);
    expect((await request("/v1/secrets/MISSING")).status).toBe(404);
    expect((await request("/health", { token: null })).status).toBe(200);
    const lines = audits.map((l) => JSON.parse(l) as AuditLine & { ms?: number });
    expect(lines.map((l) => [l.audit, l.outcome])).toEqual([
      ["write", "ok"],
      ["read", "ok"],
      ["read", "unauthorized"],
      ["read", "not_found"],
    ]);
    for (const line of lines) expect(line.ms).toBeGreaterThanOrEqual(0);
    // A refused or failed request's line names its error code, as its answer does.
    expect(accessLines(logs)).toEqual([
      "GET /v1/secrets/A 401 unauthorized",
      "GET /v1/secrets/MISSING 404 not_found",
      "GET /health 200",
    ]);
    // The two lines of a refused request join on its id: the caller's, or the one the audit made.
    const idsOf = (from: string[]) =>
      from.map((l) => (JSON.parse(l) as { request_id?: string }).request_id).filter((id) => id !== undefined);
    for (const headers of [{ "x-request-id": "req-42" }, {}] as Record<string, string>[]) {
      logs.length = 0;
      audits.length = 0;
      expect((await request("/v1/secrets/MISSING", { headers })).status).toBe(404);
      expect(idsOf(audits)).toHaveLength(1);
      expect(idsOf(logs)).toEqual(idsOf(audits));
    }
    expect(idsOf(audits)).not.toEqual(["req-42"]);

    // A long path, sent without a key, makes no longer a line than a clipped one (200 characters).
    logs.length = 0;
    expect((await request(`/${"a".repeat(15_000)}`, { token: null })).status).toBe(401);
    expect(accessLines(logs)).toEqual([`GET /${"a".repeat(199)}… 401 unauthorized`]);

    // Without the audit trail, every request has its access-log line.
    const off = await inProcessApp({ env: { LLM_SECRETS_AUDIT: "off" } });
    expect((await off.request("/v1/secrets/A", { method: "PUT", json: { value: "a" } })).status).toBe(201);
    expect((await off.request("/v1/secrets/A")).status).toBe(200);
    expect(accessLines(off.logs)).toEqual(["PUT /v1/secrets/A 201", "GET /v1/secrets/A 200"]);
  });

  it("goes to stdout when served, apart from the log on stderr", async () => {
    const value = secretValue("served");
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n",
      {},
    );
    let stdout = "";
    server.child.stdout?.on("data", (d) => {
      stdout += d;
    });
    try {
      expect((await call("PUT", "/v1/secrets/A", { value })).status).toBe(201);
      expect((await call("GET", "/v1/secrets/A")).status).toBe(200);
      await untilLines(() => stdout, 2);
    } finally {
      await server.stop();
    }
    const audit = stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as AuditLine);
    expect(audit.map((l) => [l.audit, l.name, l.outcome])).toEqual([
      ["write", "A", "ok"],
      ["read", "A", "ok"],
    ]);
    // The socket's peer: the test's client, over loopback.
    for (const line of audit) expect(line.source).toMatch(/^(::ffff:)?127\.0\.0\.1$|^::1$/);
    expect(stdout).not.toContain('"msg":"request"'); // the access log is on stderr
    expectNoValueIn([server.output], [value]);
  });
});

async function untilLines(text: () => string, count: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while ((text().match(/"audit":/g) ?? []).length < count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} audit lines, got: ${text()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
