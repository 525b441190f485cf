// The HTTP API in-process, over a real file store (SPEC section 6).
import { rm } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import corePackage from "../../core/package.json" with { type: "json" };
import type { SecretsError } from "../../core/src/errors";
import type { StoreFactory } from "../../core/src/secret-store";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";
import { dataFiles, expectNoValueIn, inProcessApp, newKey, secretValue } from "../helpers";

type ErrorBody = {
  error: { code: string; message: string; issues?: { path: string; message: string }[]; names?: string[] };
};

async function errorOf(res: Response): Promise<ErrorBody["error"]> {
  return ((await res.json()) as ErrorBody).error;
}

describe("secrets over HTTP", () => {
  it("puts, gets, replaces and deletes", async () => {
    const { request, logs } = await inProcessApp();
    const v1 = secretValue("first");
    const v2 = secretValue("second");

    let res = await request("/v1/secrets/OPENAI_API_KEY", { method: "PUT", json: { value: v1 } });
    expect(res.status).toBe(201);
    expect(await res.json()).toEqual({ name: "OPENAI_API_KEY", created: true });
    expect(res.headers.get("cache-control")).toBe("no-store");

    res = await request("/v1/secrets/OPENAI_API_KEY");
    expect(await res.json()).toEqual({ name: "OPENAI_API_KEY", value: v1, stale: false });

    res = await request("/v1/secrets/OPENAI_API_KEY", {
      method: "PUT",
      json: { value: v2, description: "d", tags: { a: "b" } },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: "OPENAI_API_KEY", created: false });
    expect(((await (await request("/v1/secrets/OPENAI_API_KEY")).json()) as { value: string }).value).toBe(v2);

    res = await request("/v1/secrets/OPENAI_API_KEY", { method: "DELETE" });
    expect(res.status).toBe(204);
    res = await request("/v1/secrets/OPENAI_API_KEY", { method: "DELETE" });
    expect(res.status).toBe(204);
    res = await request("/v1/secrets/OPENAI_API_KEY");
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe("not_found");
    expectNoValueIn(logs, [v1, v2]);
  });

  it("takes names with slashes and percent-encoding, and ?refresh=true", async () => {
    const { request, runtime } = await inProcessApp();
    const v = secretValue();
    await request("/v1/secrets/litellm/team-a", { method: "PUT", json: { value: v } });
    expect(((await (await request("/v1/secrets/litellm%2Fteam-a")).json()) as { value: string }).value).toBe(v);
    const calls = () => runtime.metrics.count("llm_secrets_backend_calls_total", { store: "file", op: "get" });
    const before = calls();
    await request("/v1/secrets/litellm/team-a");
    expect(calls()).toBe(before);
    await request("/v1/secrets/litellm/team-a?refresh=true");
    expect(calls()).toBe(before + 1);
  });

  it("reads values written to the store behind its back only after a refresh", async () => {
    const { request, runtime } = await inProcessApp();
    await request("/v1/secrets/A", { method: "PUT", json: { value: "one" } });
    await runtime.store.put("A", "two");
    expect(((await (await request("/v1/secrets/A")).json()) as { value: string }).value).toBe("one");
    expect(((await (await request("/v1/secrets/A?refresh=true")).json()) as { value: string }).value).toBe("two");
  });
});

describe("the store behind the API", () => {
  it("gives created secrets the configured tags, and leaves them be on updates", async () => {
    const { request, runtime } = await inProcessApp({
      config:
        "general_settings:\n  key_management_settings:\n    description: from-policy\n    tags: {owner: platform}\n",
    });
    await request("/v1/secrets/A", { method: "PUT", json: { value: "1" } });
    await request("/v1/secrets/B", { method: "PUT", json: { value: "1", description: "custom", tags: { t: "x" } } });
    await request("/v1/secrets/B", { method: "PUT", json: { value: "2" } });
    expect((await runtime.store.get("A"))?.tags).toEqual({ owner: "platform" });
    expect((await runtime.store.get("B"))?.tags).toEqual({ t: "x" });
  });

  it("answers 500 store_unavailable when the data dir is gone, without a path", async () => {
    const { request, dataDir } = await inProcessApp();
    await rm(dataDir, { recursive: true, force: true });
    const res = await request("/v1/secrets/A", { method: "PUT", json: { value: "x" } });
    expect(res.status).toBe(500);
    const error = await errorOf(res);
    expect(error.code).toBe("store_unavailable");
    expect(error.message).not.toContain(dataDir);
  });
});

describe("auth", () => {
  it("needs the master key as a bearer token on every route OpenAPI lists but /health, /ready and /openapi.json", async () => {
    const { request, masterKey } = await inProcessApp();
    // Every operation the API describes: a route added later is held to the key without a test edit.
    const doc = (await (await request("/openapi.json", { token: null })).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const PUBLIC = new Set(["/health", "/ready", "/openapi.json"]);
    const operations = Object.entries(doc.paths)
      .filter(([path]) => !PUBLIC.has(path))
      .flatMap(([path, ops]) =>
        Object.keys(ops).map((method) => [path.replace(/\{[^}]+\}/g, "A"), method.toUpperCase()] as const),
      );
    expect(operations.map(([path, method]) => `${method} ${path}`)).toEqual(
      expect.arrayContaining(["POST /v1/decrypt", "GET /v1/secrets", "DELETE /v1/secrets/A", "POST /v1/forward/A/A"]),
    );
    for (const token of [null, "", newKey(), `${masterKey}x`, masterKey.slice(0, -1)]) {
      for (const [path, method] of [...operations, ["/nope", "GET"] as const]) {
        const bodiless = method === "GET" || method === "HEAD";
        const res = await request(path, { method, token, json: bodiless ? undefined : { value: "x" } });
        expect(res.status, `${method} ${path}`).toBe(401);
        // A HEAD's answer has no body.
        if (method !== "HEAD") expect((await errorOf(res)).code).toBe("unauthorized");
      }
    }
    const basic = await request("/v1/secrets/A", { token: null, headers: { authorization: `Basic ${masterKey}` } });
    expect(basic.status).toBe(401);
    expect((await request("/health", { token: null })).status).toBe(200);
    expect((await request("/openapi.json", { token: null })).status).toBe(200);
    expect((await request("/ready", { token: null })).status).toBe(200);
    expect(
      (await request("/v1/secrets/A", { token: null, headers: { authorization: `bearer ${masterKey}` } })).status,
    ).toBe(404);
  });
});

describe("bad input gets its status and code, and changes nothing", () => {
  it("refuses each bad request and leaves the store byte-for-byte as it was", async () => {
    const { request, dataDir, runtime, masterKey, logs } = await inProcessApp();
    const kept = secretValue("kept");
    await request("/v1/secrets/KEEP", { method: "PUT", json: { value: kept } });
    await request("/v1/secrets/b", { method: "PUT", json: { value: kept } });
    const before = await dataFiles(dataDir);
    const sent = secretValue("sent");

    const cases: [string, () => Response | Promise<Response>, number, string][] = [
      ["empty name", () => request("/v1/secrets/", { method: "PUT", json: { value: sent } }), 400, "invalid_name"],
      [
        "257 characters",
        () => request(`/v1/secrets/${"a".repeat(257)}`, { method: "PUT", json: { value: sent } }),
        400,
        "invalid_name",
      ],
      [
        "control character",
        () => request("/v1/secrets/a%0Ab", { method: "PUT", json: { value: sent } }),
        400,
        "invalid_name",
      ],
      [
        "encoded '..'",
        () => request("/v1/secrets/a%2F..%2Fb", { method: "PUT", json: { value: sent } }),
        400,
        "invalid_name",
      ],
      ["leading dot", () => request("/v1/secrets/.env", { method: "GET" }), 400, "invalid_name"],
      [
        "'..' segment on the wire",
        () =>
          runtime.fetch(
            new Request("http://localhost/v1/secrets/a/../b", {
              method: "PUT",
              headers: { authorization: `Bearer ${masterKey}` },
              body: JSON.stringify({ value: sent }),
            }),
            { path: "/v1/secrets/a/../b" },
          ),
        400,
        "invalid_name",
      ],
      [
        "'..' segment elsewhere",
        () =>
          runtime.fetch(
            new Request("http://localhost/v1/resolve", {
              method: "POST",
              headers: { authorization: `Bearer ${masterKey}` },
            }),
            { path: "/v1/x/../resolve" },
          ),
        400,
        "invalid_request",
      ],
      [
        "body over 1 MiB",
        () => request("/v1/secrets/BIG", { method: "PUT", json: { value: "x".repeat(1024 * 1024) } }),
        413,
        "payload_too_large",
      ],
      [
        "malformed JSON",
        () => request("/v1/secrets/A", { method: "PUT", body: `{"value": "${sent}"` }),
        400,
        "invalid_request",
      ],
      ["empty body", () => request("/v1/secrets/A", { method: "PUT", body: "" }), 400, "invalid_request"],
      [
        "value not a string",
        () => request("/v1/secrets/A", { method: "PUT", json: { value: 42 } }),
        400,
        "invalid_request",
      ],
      [
        "missing value",
        () => request("/v1/secrets/A", { method: "PUT", json: { description: "d" } }),
        400,
        "invalid_request",
      ],
      [
        "unknown field",
        () => request("/v1/secrets/A", { method: "PUT", json: { value: sent, vaule: sent } }),
        400,
        "invalid_request",
      ],
      [
        "tags not strings",
        () => request("/v1/secrets/A", { method: "PUT", json: { value: sent, tags: { a: 1 } } }),
        400,
        "invalid_request",
      ],
      [
        "a tag named __proto__ with an escape",
        () =>
          request("/v1/secrets/A", {
            method: "PUT",
            body: `{"value":"${sent}","tags":{"\\u005f_proto__":"x","k":"v"}}`,
          }),
        400,
        "invalid_request",
      ],
      [
        // An object cannot hold it: it was dropped, and the write answered 201 without it.
        "a tag named __proto__",
        () => request("/v1/secrets/A", { method: "PUT", body: `{"value":"${sent}","tags":{"__proto__":"x","k":"v"}}` }),
        400,
        "invalid_request",
      ],
      ["array body", () => request("/v1/secrets/A", { method: "PUT", json: [sent] }), 400, "invalid_request"],
      ["bad refresh", () => request("/v1/secrets/KEEP?refresh=yes"), 400, "invalid_request"],
      ["resolve without config", () => request("/v1/resolve", { method: "POST", json: {} }), 400, "invalid_request"],
      [
        "decrypt a number",
        () => request("/v1/decrypt", { method: "POST", json: { ciphertext: 1 } }),
        400,
        "invalid_request",
      ],
      [
        "no token",
        () => request("/v1/secrets/A", { method: "PUT", token: null, json: { value: sent } }),
        401,
        "unauthorized",
      ],
      ["wrong token", () => request("/v1/secrets/KEEP", { method: "DELETE", token: newKey() }), 401, "unauthorized"],
    ];
    const bodies: string[] = [];
    for (const [label, send, status, code] of cases) {
      const res = await send();
      const text = await res.text();
      bodies.push(text);
      expect(res.status, label).toBe(status);
      expect((JSON.parse(text) as ErrorBody).error.code, label).toBe(code);
    }

    expect(await dataFiles(dataDir)).toEqual(before);
    expect(((await (await request("/v1/secrets/KEEP")).json()) as { value: string }).value).toBe(kept);
    expect((await request("/v1/secrets/A")).status).toBe(404);
    expectNoValueIn([...bodies, ...logs], [sent, kept]);
  });

  it("lists zod issues by path", async () => {
    const { request } = await inProcessApp();
    const res = await request("/v1/secrets/A", { method: "PUT", json: { value: 1, tags: { t: 2 } } });
    const error = await errorOf(res);
    expect(error.issues?.map((i) => i.path).sort()).toEqual(["tags.t", "value"]);
    expect(error.message).toContain("value: ");
    // A key the body may not carry is an issue at its own path, each one.
    const extra = await errorOf(
      await request("/v1/secrets/A", { method: "PUT", json: { value: "v", extra: 1, other: { x: 2 } } }),
    );
    expect(extra.issues).toEqual([
      { path: "extra", message: "unknown key" },
      { path: "other", message: "unknown key" },
    ]);
    // Many: the first twenty, and a count of the rest (the answer does not grow with the body).
    const many = Object.fromEntries([["value", "v"], ...Array.from({ length: 5_000 }, (_, i) => [`k${i}`, 1])]);
    const manyRes = await request("/v1/secrets/A", { method: "PUT", json: many });
    const manyError = (await manyRes.clone().json()) as { error: { issues: { path: string; message: string }[] } };
    expect(manyError.error.issues).toHaveLength(21);
    expect(manyError.error.issues.at(-1)).toEqual({ path: "", message: "and 4980 more unknown keys" });
    expect((await manyRes.text()).length).toBeLessThan(4_000);
    // Each check says its rule.
    const tags = await errorOf(
      await request("/v1/secrets/A", {
        method: "PUT",
        json: { value: "v", tags: { [`k${"a".repeat(200)}`]: "x", b: "y".repeat(257) } },
      }),
    );
    expect(tags.issues?.map((i) => i.message).sort()).toEqual([
      "a tag's key is 1 to 128 characters",
      "a tag's value is at most 256 characters",
    ]);
    const empty = await errorOf(await request("/v1/decrypt", { method: "POST", json: { ciphertext: "" } }));
    expect(empty.issues).toEqual([{ path: "ciphertext", message: "the ciphertext is empty" }]);
  });
});

describe("access_mode and hosted_keys", () => {
  const cfg = (store: string, kms: string) =>
    `general_settings:\n  key_management_system: ${store}\n  key_management_settings:\n${kms}`;

  it("read_only refuses writes", async () => {
    const { request, runtime } = await inProcessApp({ config: cfg("file", "    access_mode: read_only\n") });
    await runtime.store.put("A", "seeded", {});
    expect((await errorOf(await request("/v1/secrets/A", { method: "PUT", json: { value: "x" } }))).code).toBe(
      "read_only",
    );
    expect((await request("/v1/secrets/A", { method: "DELETE" })).status).toBe(403);
    expect(((await (await request("/v1/secrets/A")).json()) as { value: string }).value).toBe("seeded");
  });

  it("resolve echoes every number exactly, or refuses one it could not (infinite, or an integer past 2^53)", async () => {
    const { request } = await inProcessApp();
    const post = (body: string) => request("/v1/resolve", { method: "POST", body });
    const echoed = await post('{"config":{"rpm":1000,"temperature":0.7,"largest":9007199254740991,"tiny":1e-300}}');
    expect(await echoed.text()).toBe(
      '{"config":{"rpm":1000,"temperature":0.7,"largest":9007199254740991,"tiny":1e-300}}',
    );
    // Before: answered 200 with null, and with 1.2345678901234568e+29.
    for (const body of ['{"config":{"x":1e400}}', '{"config":{"n":[123456789012345678901234567890]}}']) {
      const res = await post(body);
      expect(res.status, body).toBe(400);
      expect((await errorOf(res)).code).toBe("invalid_request");
    }
  });

  it("write_only refuses reads, resolve and decrypt; encrypt still works", async () => {
    const { request } = await inProcessApp({ config: cfg("file", "    access_mode: write_only\n") });
    expect((await request("/v1/secrets/A", { method: "PUT", json: { value: "x" } })).status).toBe(201);
    expect((await errorOf(await request("/v1/secrets/A"))).code).toBe("write_only");
    const res = await request("/v1/resolve", { method: "POST", json: { config: { k: "os.environ/A" } } });
    expect(res.status).toBe(403);
    expect((await errorOf(res)).code).toBe("write_only");
    const sealed = await request("/v1/encrypt", { method: "POST", json: { value: "v" } });
    expect(sealed.status).toBe(200);
    const { ciphertext } = (await sealed.json()) as { ciphertext: string };
    const opened = await request("/v1/decrypt", { method: "POST", json: { ciphertext } });
    expect(opened.status).toBe(403);
    expect((await errorOf(opened)).code).toBe("write_only");
  });

  it("encrypt refuses a value whose ciphertext decrypt could not take, and takes the largest that fits", async () => {
    const { request } = await inProcessApp();
    // 4/3 of (nonce + MAC + value) in base64, inside {"ciphertext":"..."}, must fit in 1 MiB.
    const largest = Math.floor((1024 * 1024 - '{"ciphertext":""}'.length) / 4) * 3 - 40;
    const fits = await request("/v1/encrypt", { method: "POST", json: { value: "a".repeat(largest) } });
    expect(fits.status).toBe(200);
    const back = await request("/v1/decrypt", { method: "POST", body: await fits.text() });
    expect(back.status).toBe(200);
    const tooBig = await request("/v1/encrypt", { method: "POST", json: { value: "a".repeat(largest + 1) } });
    expect(tooBig.status).toBe(413);
    expect((await errorOf(tooBig)).code).toBe("payload_too_large");
  });

  it("refuses an empty value: several cloud stores cannot hold one", async () => {
    const { request, runtime } = await inProcessApp();
    const res = await request("/v1/secrets/EMPTY", { method: "PUT", json: { value: "" } });
    expect(res.status).toBe(400);
    expect((await errorOf(res)).code).toBe("invalid_request");
    expect(await runtime.store.get("EMPTY")).toBeUndefined();
  });

  it("refuses bodies that are not UTF-8, and lone surrogates in JSON strings, writing nothing", async () => {
    const { request, runtime } = await inProcessApp();
    const invalid = Buffer.concat([Buffer.from('{"value":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
    const res = await request("/v1/secrets/U", { method: "PUT", body: invalid });
    expect(res.status).toBe(400);
    expect((await errorOf(res)).code).toBe("invalid_request");
    const lone = await request("/v1/secrets/U", { method: "PUT", body: '{"value":"a\\ud800b"}' });
    expect(lone.status).toBe(400);
    expect((await errorOf(lone)).code).toBe("invalid_request");
    // In a key too (a tag's name), not only in a string value.
    const inKey = await request("/v1/secrets/U", { method: "PUT", body: '{"value":"v","tags":{"k\\ud800":"x"}}' });
    expect(inKey.status).toBe(400);
    expect((await errorOf(inKey)).message).toContain("lone UTF-16 surrogate");
    expect(await runtime.store.get("U")).toBeUndefined();
  });

  it("refuses a config nested past the call stack with an escape in it as 400, not 500 (the surrogate check walks with a stack)", async () => {
    const { request } = await inProcessApp();
    const depth = 200_000;
    const body = `{"config":${"[".repeat(depth)}"\\u0041"${"]".repeat(depth)}}`;
    const res = await request("/v1/resolve", { method: "POST", body });
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toMatchObject({
      code: "invalid_request",
      message: "config is nested deeper than 32 levels",
    });
    // A long flat array with a lone surrogate at its end is found (and is too many arguments to spread).
    const wide = `{"config":[${"0,".repeat(400_000)}"\\udc00"]}`;
    const lone = await request("/v1/resolve", { method: "POST", body: wide });
    expect(lone.status).toBe(400);
    expect((await errorOf(lone)).message).toContain("lone UTF-16 surrogate");
  });

  it("resolves a ref named like an Object prototype key as any other: `__proto__` is reported (an invalid name), not a 500", async () => {
    const { request, runtime } = await inProcessApp();
    await runtime.manager.put("OPENAI_API_KEY", "sk-held");
    const res = await request("/v1/resolve", {
      method: "POST",
      json: { config: { a: "os.environ/__proto__", b: "os.environ/OPENAI_API_KEY", c: "os.environ/constructor" } },
    });
    expect(res.status).toBe(422);
    const error = (await errorOf(res)) as unknown as { code: string; names: string[]; reasons: Record<string, string> };
    expect([error.code, error.names]).toEqual(["unresolved_refs", ["__proto__", "constructor"]]);
    expect(Object.entries(error.reasons)).toEqual([
      ["__proto__", "invalid_name"],
      ["constructor", "not_found"],
    ]);
  });

  it("hosted_keys limits reads, writes, deletes and resolve to the listed names (and stored virtual keys)", async () => {
    const { request, runtime } = await inProcessApp({
      config: cfg(
        "file",
        "    hosted_keys: [A]\n    store_virtual_keys: true\n    prefix_for_stored_virtual_keys: vk\n",
      ),
    });
    expect((await request("/v1/secrets/A", { method: "PUT", json: { value: "a" } })).status).toBe(201);
    await runtime.store.put("B", "b"); // held by the store, not hosted
    expect((await request("/v1/secrets/A")).status).toBe(200);
    for (const init of [{}, { method: "PUT", json: { value: "x" } }, { method: "DELETE" }]) {
      const res = await request("/v1/secrets/B", init);
      expect(res.status).toBe(403);
      expect((await errorOf(res)).code).toBe("not_hosted");
    }
    expect((await runtime.store.get("B"))?.value).toBe("b");
    expect((await runtime.store.get("NEW")) === undefined).toBe(true);
    expect((await request("/v1/secrets/NEW", { method: "PUT", json: { value: "x" } })).status).toBe(403);
    expect(await runtime.store.get("NEW")).toBeUndefined();
    expect((await request("/v1/secrets/vk/team-a", { method: "PUT", json: { value: "sk-virtual" } })).status).toBe(201);
    expect((await request("/v1/secrets/vk/team-a", { method: "DELETE" })).status).toBe(204);
    const resolved = await request("/v1/resolve", {
      method: "POST",
      json: { config: ["os.environ/A", "os.environ/B", "os.environ/UNKNOWN"] },
    });
    expect(resolved.status).toBe(422);
    const error = (await errorOf(resolved)) as ErrorBody["error"] & { reasons?: Record<string, string> };
    expect(error.names).toEqual(["B", "UNKNOWN"]);
    expect(error.reasons).toEqual({ B: "not_hosted", UNKNOWN: "not_hosted" });
  });

  it("never returns the process environment: the file store does not fall back to it", async () => {
    const envValue = secretValue("env");
    const { request, logs } = await inProcessApp({ env: { ONLY_IN_ENV: envValue } });
    expect((await request("/v1/secrets/ONLY_IN_ENV")).status).toBe(404);
    const res = await request("/v1/resolve", { method: "POST", json: { config: { k: "os.environ/ONLY_IN_ENV" } } });
    expect(res.status).toBe(422);
    const text = await res.text();
    expect(text).not.toContain(envValue);
    expect((JSON.parse(text) as ErrorBody).error).toMatchObject({ code: "unresolved_refs", names: ["ONLY_IN_ENV"] });
    expectNoValueIn(logs, [envValue]);
  });

  it("the local (environment) store serves nothing over HTTP without hosted_keys", async () => {
    const envValue = secretValue("env");
    const { request } = await inProcessApp({
      env: { OPENAI_API_KEY: envValue },
      config: cfg("local", "    access_mode: read_only\n"),
    });
    for (const name of ["OPENAI_API_KEY", "LITELLM_MASTER_KEY", "PATH"]) {
      const res = await request(`/v1/secrets/${name}`);
      expect(res.status).toBe(403);
      expect(await res.text()).not.toContain(envValue);
    }
  });

  it("the local store serves exactly the names listed in hosted_keys", async () => {
    const envValue = secretValue("env");
    const { request } = await inProcessApp({
      env: { OPENAI_API_KEY: envValue },
      config: cfg("local", "    hosted_keys: [OPENAI_API_KEY]\n"),
    });
    expect(((await (await request("/v1/secrets/OPENAI_API_KEY")).json()) as { value: string }).value).toBe(envValue);
    expect((await request("/v1/secrets/LITELLM_MASTER_KEY")).status).toBe(403);
    expect(
      (await errorOf(await request("/v1/secrets/OPENAI_API_KEY", { method: "PUT", json: { value: "x" } }))).code,
    ).toBe("read_only");
  });
});

describe("resolve, encrypt, decrypt", () => {
  it("replaces every ref in any JSON, and lists the ones it cannot resolve", async () => {
    const { request } = await inProcessApp();
    const a = secretValue("a");
    const b = secretValue("b");
    await request("/v1/secrets/AZURE_API_KEY", { method: "PUT", json: { value: a } });
    await request("/v1/secrets/AZURE_API_BASE", { method: "PUT", json: { value: b } });
    const config = {
      model_list: [
        {
          model_name: "m",
          litellm_params: {
            model: "azure/gpt-4o",
            api_key: "os.environ/AZURE_API_KEY",
            api_base: "os.environ/AZURE_API_BASE",
            rpm: 5,
          },
        },
      ],
      nested: [["os.environ/AZURE_API_KEY", null, true]],
      text: "not os.environ/AZURE_API_KEY",
    };
    const res = await request("/v1/resolve", { method: "POST", json: { config } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      config: {
        model_list: [{ model_name: "m", litellm_params: { model: "azure/gpt-4o", api_key: a, api_base: b, rpm: 5 } }],
        nested: [[a, null, true]],
        text: "not os.environ/AZURE_API_KEY",
      },
    });
    const missing = await request("/v1/resolve", {
      method: "POST",
      json: { config: ["os.environ/AZURE_API_KEY", "os.environ/NOPE_2", "os.environ/NOPE_1"] },
    });
    expect(missing.status).toBe(422);
    const error = await errorOf(missing);
    expect(error.names).toEqual(["NOPE_1", "NOPE_2"]);
    expect((error as { reasons?: unknown }).reasons).toEqual({ NOPE_1: "not_found", NOPE_2: "not_found" });
    expect(JSON.stringify(error)).not.toContain(a);
  });

  it("bounds the work of one resolve: ref occurrences, nesting and the answer's size", async () => {
    const { request, runtime } = await inProcessApp();
    const value = "v".repeat(2000);
    await request("/v1/secrets/BIG", { method: "PUT", json: { value } });
    const reads = () => runtime.metrics.count("llm_secrets_backend_calls_total", { store: "file", op: "get" });
    const before = reads();
    // 1001 occurrences of one ref: refused before any store call.
    const many = await request("/v1/resolve", {
      method: "POST",
      json: { config: Array(1001).fill("os.environ/OTHER") },
    });
    expect(many.status).toBe(413);
    expect((await errorOf(many)).code).toBe("payload_too_large");
    // 600 occurrences of a 2000-byte value would answer 1.2 MB: refused, nothing built.
    const big = await request("/v1/resolve", { method: "POST", json: { config: Array(600).fill("os.environ/BIG") } });
    expect(big.status).toBe(413);
    expect((await errorOf(big)).code).toBe("payload_too_large");
    // 500 fit under 1 MiB.
    const fits = await request("/v1/resolve", { method: "POST", json: { config: Array(500).fill("os.environ/BIG") } });
    expect(fits.status).toBe(200);
    expect(((await fits.json()) as { config: string[] }).config).toEqual(Array(500).fill(value));
    // Nested 33 deep: 400; 32 deep is fine.
    const nest = (depth: number): unknown => (depth === 0 ? "os.environ/BIG" : [nest(depth - 1)]);
    const deep = await request("/v1/resolve", { method: "POST", json: { config: nest(33) } });
    expect(deep.status).toBe(400);
    expect((await errorOf(deep)).code).toBe("invalid_request");
    expect((await request("/v1/resolve", { method: "POST", json: { config: nest(32) } })).status).toBe(200);
    expect(reads() - before).toBeLessThanOrEqual(1); // at most the one cached read of BIG
  });

  it("resolves many refs a batch at a time, letting other work run between batches, and names them all", async () => {
    const { request, runtime } = await inProcessApp({ env: { LLM_SECRETS_RESOLVE_MAX_REFS: "5000" } });
    await request("/v1/secrets/GOOD", { method: "PUT", json: { value: "good" } });
    const config = { good: "os.environ/GOOD", list: Array.from({ length: 4000 }, (_, i) => `os.environ/NOPE_${i}`) };
    // Turns of the event loop while the resolve runs: other requests are served meanwhile.
    let turns = 0;
    let done = false;
    const tick = () => {
      turns++;
      if (!done) setImmediate(tick);
    };
    setImmediate(tick);
    const res = await runtime.manager.resolve(config).catch((err: unknown) => err);
    done = true;
    expect(turns).toBeGreaterThanOrEqual(10); // 4001 names, 256 a batch: 15 batches
    expect(res).toMatchObject({ code: "unresolved_refs" });
    const error = res as SecretsError;
    expect(error.details.names).toHaveLength(4000);
    expect(Object.values(error.details.reasons as Record<string, string>).every((r) => r === "not_found")).toBe(true);
    // The message spells out 20 names, not 4000.
    expect(error.message).toMatch(
      /^4000 ref\(s\) did not resolve: (NOPE_\d+, ){19}NOPE_\d+ and 3980 more \(see names\)$/,
    );
    // The good value is still served from the cache after the flood of unknown names.
    const hits = runtime.metrics.count("llm_secrets_cache_hits_total", { store: "file" });
    expect((await request("/v1/secrets/GOOD")).status).toBe(200);
    expect(runtime.metrics.count("llm_secrets_cache_hits_total", { store: "file" })).toBe(hits + 1);
  });

  it("encrypts and decrypts in LiteLLM's format", async () => {
    const { request } = await inProcessApp();
    const v = secretValue();
    const { ciphertext } = (await (await request("/v1/encrypt", { method: "POST", json: { value: v } })).json()) as {
      ciphertext: string;
    };
    expect(ciphertext).toMatch(/^[A-Za-z0-9_-]+={0,2}$/);
    expect(await (await request("/v1/decrypt", { method: "POST", json: { ciphertext } })).json()).toEqual({ value: v });
  });
});

describe("unexpected errors", () => {
  it("answer a bare 500 that echoes nothing of the error, and log its class and frames only", async () => {
    const leaked = secretValue("internal");
    class BrokenStore extends MemoryStore {
      override async get(): Promise<never> {
        throw new RangeError(`backend blew up holding ${leaked}`);
      }
    }
    const broken = { ...memoryStore, open: async () => new BrokenStore() } satisfies StoreFactory<"memory">;
    const { request, logs } = await inProcessApp({ stores: [broken] });
    const res = await request("/v1/secrets/A");
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: { code: "internal", message: "internal error" } });
    const line = logs.map((l) => JSON.parse(l)).find((l) => l.msg === "unexpected error");
    expect(line).toMatchObject({ level: "error", error: "RangeError" });
    expectNoValueIn(logs, [leaked]);
  });
});

describe("the hot path", () => {
  it("answers a cached read synchronously (no promise), and a miss or a write with a promise", async () => {
    const { runtime, masterKey } = await inProcessApp();
    const headers = { authorization: `Bearer ${masterKey}` };
    const get = (path: string) => runtime.fetch(new Request(`http://localhost${path}`, { headers }), { path });
    await runtime.manager.put("HOT", secretValue("hot"));
    const hit = get("/v1/secrets/HOT");
    expect(hit).toBeInstanceOf(Response);
    expect((hit as Response).status).toBe(200);
    const miss = get("/v1/secrets/COLD");
    expect(miss).toBeInstanceOf(Promise);
    expect((await miss).status).toBe(404);
    // Refusals are synchronous too: admission is plain checks, not a middleware.
    const refused = runtime.fetch(new Request("http://localhost/v1/secrets/HOT"), { path: "/v1/secrets/HOT" });
    expect(refused).toBeInstanceOf(Response);
    expect((refused as Response).status).toBe(401);
  });
});

describe("the rest of the API", () => {
  it("answers /health", async () => {
    const { request } = await inProcessApp();
    expect(await (await request("/health", { token: null })).json()).toEqual({
      status: "ok",
      store: "file",
      version: corePackage.version,
    });
  });

  it("answers 404 not_found when forwarding to a model that is not in model_list", async () => {
    const { request } = await inProcessApp();
    const res = await request("/v1/forward/gpt/chat/completions", { method: "POST", json: {} });
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe("not_found");
  });

  it("answers unknown routes with a JSON 404", async () => {
    const { request } = await inProcessApp();
    const res = await request("/v2/whatever");
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe("not_found");
  });

  it("serves an OpenAPI 3.1 document derived from the request schemas", async () => {
    const { request } = await inProcessApp();
    const doc = (await (await request("/openapi.json", { token: null })).json()) as {
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          {
            requestBody?: {
              content: Record<
                string,
                { schema: { properties: Record<string, { maxLength?: number }>; required: string[] } }
              >;
            };
            responses: Record<string, unknown>;
            security?: unknown[];
          }
        >
      >;
    };
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        "/health",
        "/metrics",
        "/openapi.json",
        "/ready",
        "/v1/decrypt",
        "/v1/encrypt",
        "/v1/forward/{model_name}/{path}",
        "/v1/key-events",
        "/v1/resolve",
        "/v1/secrets",
        "/v1/secrets/{name}",
      ].sort(),
    );
    const put = doc.paths["/v1/secrets/{name}"]?.put;
    const schema = put?.requestBody?.content["application/json"]?.schema;
    expect(schema?.required).toEqual(["value"]);
    expect(schema?.properties.description?.maxLength).toBe(2048);
    expect(Object.keys(put?.responses ?? {}).sort()).toEqual([
      "200",
      "201",
      "400",
      "401",
      "403",
      "408",
      "409",
      "413",
      "417",
      "431",
      "500",
      "501",
      "502",
      "503",
    ]);
    expect(doc.paths["/health"]?.get?.security).toEqual([]);
    // What a client generated from it meets: the key-events 503 holds the results, not an error;
    // forward answers the key's read errors; a delete may meet a name conflict; either header carries the key.
    const described = (path: string, method: string, status: string) =>
      JSON.stringify((doc.paths[path]?.[method]?.responses as Record<string, unknown>)?.[status]);
    expect(described("/v1/key-events", "post", "503")).toContain('"results"');
    expect(described("/v1/key-events", "post", "503")).not.toContain("Error:");
    expect(described("/v1/forward/{model_name}/{path}", "post", "403")).toMatch(/not_hosted.*write_only/);
    expect(described("/v1/forward/{model_name}/{path}", "post", "500")).toContain("store_unavailable");
    expect(described("/v1/secrets/{name}", "delete", "409")).toContain("name_conflict");
    expect(described("/v1/secrets/{name}", "get", "500")).toContain("store_unavailable");
    expect(described("/v1/resolve", "post", "403")).not.toContain("not_hosted"); // a reason in 422 instead
    expect(described("/ready", "get", "503")).toContain("backend_denied");
    const full = doc as unknown as { components: { securitySchemes: Record<string, unknown> }; security: unknown[] };
    expect(full.components.securitySchemes.litellmApiKey).toEqual({
      type: "apiKey",
      in: "header",
      name: "x-litellm-api-key",
      description: "The master key; when this header is sent, it is the key checked, whatever Authorization holds",
    });
    expect(full.security).toEqual([{ masterKey: [] }, { litellmApiKey: [] }]);
  });

  it("exposes Prometheus metrics without values", async () => {
    const { request } = await inProcessApp();
    const v = secretValue();
    await request("/v1/secrets/A", { method: "PUT", json: { value: v } });
    await request("/v1/secrets/A");
    await request("/v1/secrets/A");
    await request("/v1/secrets/MISSING");
    const res = await request("/metrics");
    expect(res.headers.get("content-type")).toContain("text/plain");
    const text = await res.text();
    expect(text).toContain('llm_secrets_cache_hits_total{store="file"} 2');
    expect(text).toContain('llm_secrets_cache_misses_total{store="file"} 1');
    expect(text).toContain('llm_secrets_backend_calls_total{store="file",op="put"} 1');
    expect(text).toContain('llm_secrets_errors_total{store="file",code="not_found"} 1');
    expect(text).toMatch(/llm_secrets_backend_latency_seconds_count\{store="file",op="get"\} 1/);
    expect(text).not.toContain(v);
  });
});
