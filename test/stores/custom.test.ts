// The custom store: a user's module named in the config, loaded once at start, either a class with
// get/put/delete or a StoreFactory; clear start errors when the module or its export is wrong; and
// `serve --config` with a module beside the config file.
import { copyFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { storeConformance } from "@llm-secrets/core/testing"; // as a user's own store test imports it
import { describe, expect, it, vi } from "vitest";
// @ts-expect-error: a plain ESM build script without types
import { bundleCore } from "../../core/build.mjs";
import { KeyRing } from "../../core/src/crypto";
import { ConfigError, ERROR_STATUS, type ErrorCode, SecretsError } from "../../core/src/errors";
import { instrumentStore } from "../../core/src/instrument-store";
import { applyKeyEvent } from "../../core/src/key-events";
import { createLogger, silentLogger } from "../../core/src/log";
import { createMetrics } from "../../core/src/metrics";
import { startOnFirstUse } from "../../core/src/runtime";
import { SecretManager } from "../../core/src/secret-manager";
import type { SecretStore } from "../../core/src/secret-store";
import { loadSettings } from "../../core/src/settings";
import { StoreCorrupt } from "../../core/src/store-errors";
import { CUSTOM_TIMEOUT_MS, customStore, PlainClassStore } from "../../core/src/stores/custom";
import { codeOf, inProcessApp, newKey, serveStore, tempDir } from "../helpers";

const FIXTURES = join(import.meta.dirname, "../fixtures");
/** The value custom-failing-factory.mjs quotes in its errors' messages. */
const LEAKED = "sk-leaked-in-a-message-0123";

function open(path: string, configDir = FIXTURES, config: Record<string, unknown> = {}) {
  return customStore.open(
    { config: { custom_secret_manager: path, ...config }, env: {} },
    { dataDir: "/nonexistent", configDir, env: {}, log: silentLogger, now: Date.now },
  );
}

storeConformance({
  name: "custom (a class with get/put/delete, from the config's directory)",
  factory: customStore,
  open: () => open("./custom-store.mjs"),
});

describe("the custom store", () => {
  it("takes a StoreFactory as the default export, opened with its own key_management_settings", async () => {
    const store = await open("./custom-factory.mjs");
    expect((await store.get("FROM_FACTORY"))?.value).toBe("factory-value");
    expect(await store.get("OTHER")).toBeUndefined();
    // Its keys reach its own schema as the config holds them (they were dropped before it saw them).
    const settings = loadSettings({
      stores: [customStore],
      env: {
        LLM_SECRETS_CONFIG:
          "general_settings:\n  key_management_system: custom\n  key_management_settings:\n    custom_secret_manager: ./custom-factory.mjs\n    greeting: hello\n",
      },
      cwd: FIXTURES,
    });
    const configured = await customStore.open(settings.storeSettings as never, {
      dataDir: "/nonexistent",
      configDir: FIXTURES,
      env: {},
      log: silentLogger,
      now: Date.now,
    });
    expect((await configured.get("FROM_SETTINGS"))?.value).toBe("hello");
    expect(settings.warnings).toEqual([]); // its keys are not "ignored"
  });

  it("keeps a StoreFactory store's has (a listing asks it rather than read values) and tombstoneMs", async () => {
    // Before: list, watch and close were passed on, has was dropped: listings read every value.
    const store = await open("./custom-factory.mjs");
    expect(await store.has?.("HAS_ONLY")).toBe(true);
    expect(await store.has?.("OTHER")).toBe(false);
    // And its tombstoneMs, which the start holds LLM_SECRETS_MAX_EVENT_AGE to (dropped before too).
    expect(store.tombstoneMs).toBe(86_400_000);
  });

  it("classifies what a StoreFactory's store throws: a 503 is backend_unavailable, a NotSupported not_supported", async () => {
    const failing = await open("./custom-failing-factory.mjs");
    const err = await failing.get("A").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SecretsError);
    expect(err).toMatchObject({ code: "backend_unavailable", details: { retryAfter: 1 } });
    expect((err as Error).message).not.toContain(LEAKED);
    expect(await codeOf(failing.put("A", "v"))).toBe("backend_unavailable");
    expect(await codeOf(failing.delete("A"))).toBe("backend_unavailable");
    expect(await codeOf(failing.list?.({ limit: 10 }) as Promise<unknown>)).toBe("backend_unavailable");
    const denied = await open("./custom-failing-factory.mjs", FIXTURES, { status: 403 });
    expect(await codeOf(denied.get("A"))).toBe("backend_denied");
    // The typed errors of another copy of the package (a bundled function's module has its own):
    // their code, message and retryAfter kept, though they are not instances of ours.
    const bundled = await bundleCore(
      'export * from "./src/store-errors.ts"; export { SecretsError } from "./src/errors.ts";',
      join(await tempDir(), "copy.mjs"),
    );
    const copy = (await import(pathToFileURL(bundled).href)) as typeof import("../../core/src/store-errors") &
      typeof import("../../core/src/errors");
    expect(new copy.BackendDenied("x")).not.toBeInstanceOf(SecretsError);
    const thrown = [
      new copy.BackendDenied("vault said no"),
      new copy.BackendUnavailable("vault is down", 30),
      new copy.StoreCorrupt("entry 7 is torn"),
      new copy.NameConflict("A_B", "A-B"),
      new copy.StoreUnavailable("no such mount"),
      // Shaped as one by hand, with a Retry-After no header can carry: an hour, in whole seconds.
      Object.assign(new Error("vault is slow"), { code: "backend_unavailable", details: { retryAfter: 1e25 } }),
      // The README's way to refuse a large value (413), and a name the store cannot take (400), both ways.
      new copy.SecretsError("payload_too_large", "larger than my store takes"),
      Object.assign(new Error("larger than my store takes"), { code: "payload_too_large" }),
      Object.assign(new Error("my store takes no @ in a name"), { code: "invalid_name" }),
    ];
    const answered = [];
    for (const error of thrown) {
      const typed = await open("./custom-throwing-factory.mjs", FIXTURES, { error });
      // A value too large is a write's answer (the API documents 413 where there is a body).
      const call = (error as { code?: string }).code === "payload_too_large" ? typed.put("A", "v") : typed.get("A");
      answered.push(await call.catch((e: SecretsError) => [e.code, e.message, e.details.retryAfter]));
    }
    // From a read, it is no answer the API documents: the store's own fault.
    const tooLarge = Object.assign(new Error("larger than my store takes"), { code: "payload_too_large" });
    const reading = await open("./custom-throwing-factory.mjs", FIXTURES, { error: tooLarge });
    expect(await codeOf(reading.get("A"))).toBe("internal");
    expect(answered).toEqual([
      ["backend_denied", "vault said no", undefined],
      ["backend_unavailable", "vault is down", 30],
      ["store_corrupt", "entry 7 is torn", undefined],
      ["name_conflict", "A_B maps to the backend key A-B, which already holds another name", undefined],
      ["store_unavailable", "no such mount", undefined],
      ["backend_unavailable", "vault is slow", 3600],
      ["payload_too_large", "larger than my store takes", undefined],
      ["payload_too_large", "larger than my store takes", undefined],
      ["invalid_name", "my store takes no @ in a name", undefined],
    ]);
    // Every code a read can answer this way is one the API documents for a read (and a resolve):
    // 409 and 501 were answered by GET /v1/secrets/{name} and POST /v1/resolve, undocumented.
    const notSupported = Object.assign(new Error("my store cannot read"), { name: "NotSupported" });
    const readCodes = new Set<string>();
    for (const error of [...thrown, notSupported]) {
      const typed = await open("./custom-throwing-factory.mjs", FIXTURES, { error });
      readCodes.add(await codeOf(typed.get("A")));
    }
    expect([...readCodes]).toEqual(expect.arrayContaining(["name_conflict", "not_supported", "internal"]));
    const { request } = await inProcessApp();
    const doc = (await (await request("/openapi.json", { token: null })).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    for (const [path, method] of [
      ["/v1/secrets/{name}", "get"],
      ["/v1/resolve", "post"],
    ] as const) {
      const documented = Object.keys(doc.paths[path]?.[method]?.responses ?? {});
      for (const code of readCodes) {
        expect(documented, `${method} ${path} ${code}`).toContain(String(ERROR_STATUS[code as ErrorCode]));
      }
    }
    // The read-only factory throws errors named NotSupported from put and delete.
    const readOnly = await open("./custom-factory.mjs");
    expect(await codeOf(readOnly.put("A", "v"))).toBe("not_supported");
    expect(await codeOf(readOnly.delete("A"))).toBe("not_supported");
    expect(readOnly.list).toBeUndefined(); // it has no list: the API answers 501
    expect(readOnly.kind).toBe("custom-factory");
  });

  it("bounds a call that never settles (30 s, backend_unavailable), for a class and a StoreFactory alike", async () => {
    const dir = await tempDir();
    await writeFile(
      join(dir, "hang.mjs"),
      // B is held: a class's delete of a name its get finds nothing under is not called.
      'export default class { get(n) { return n === "A" ? new Promise(() => {}) : n === "B" ? "held" : undefined; } put() { return new Promise(() => {}); } delete() { return new Promise(() => {}); } }\n',
    );
    await writeFile(
      join(dir, "hang-factory.mjs"),
      'export default { kind: "hang", settings: { safeParse: (input) => ({ success: true, data: input }) }, defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false }, capabilities: { writes: false, deletes: false, compareAndSet: false, maxValueBytes: 1024, records: [] }, open: async () => ({ kind: "hang", keyOf: (n) => n, get: () => new Promise(() => {}), put: () => new Promise(() => {}), delete: () => new Promise(() => {}) }) };\n',
    );
    const stores = [await open("./hang.mjs", dir), await open("./hang-factory.mjs", dir)];
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      for (const store of stores) {
        const read = store.get("A").catch((e: unknown) => e);
        await vi.advanceTimersByTimeAsync(CUSTOM_TIMEOUT_MS - 1);
        let settled = false;
        void read.then(() => {
          settled = true;
        });
        await vi.advanceTimersByTimeAsync(0);
        expect(settled).toBe(false);
        await vi.advanceTimersByTimeAsync(1);
        expect(await read).toMatchObject({ code: "backend_unavailable" });
      }
      // A write or delete that never settles ends too; the next change of that name then runs (and ends alike).
      for (const store of stores as SecretStore[]) {
        for (const change of [() => store.put("B", "v"), () => store.delete("B"), () => store.put("B", "w")]) {
          const pending = change().catch((e: unknown) => e);
          await vi.advanceTimersByTimeAsync(CUSTOM_TIMEOUT_MS);
          expect(await pending).toMatchObject({ code: "backend_unavailable" });
        }
      }
    } finally {
      vi.useRealTimers();
    }
  });

  it("refuses a StoreFactory whose defaults say envBacked, and warns once of the defaults it does not apply", async () => {
    const dir = await tempDir();
    const factory = (defaults: string) =>
      `export default { kind: "mine", settings: { safeParse: (input) => ({ success: true, data: input }) }, defaults: ${defaults}, capabilities: { writes: false, deletes: false, compareAndSet: false, maxValueBytes: 1024, records: [] }, open: async () => ({ kind: "mine", keyOf: (n) => n, get: async () => ({ value: "opened" }), put: async () => "created", delete: async () => "absent" }) };\n`;
    await writeFile(
      join(dir, "env.mjs"),
      factory('{ accessMode: "read_only", needsLocalKey: false, envBacked: true }'),
    );
    await writeFile(
      join(dir, "tuned.mjs"),
      factory(
        '{ accessMode: "read_and_write", refreshSeconds: 300, alwaysReadVariable: "MINE_ALWAYS_READ", needsLocalKey: true, envBacked: false }',
      ),
    );
    const lines: string[] = [];
    const openLogged = (path: string) =>
      customStore.open(
        { config: { custom_secret_manager: path }, env: {} },
        { dataDir: "/x", configDir: dir, env: {}, log: createLogger((l) => lines.push(l)), now: Date.now },
      );
    const refused = await openLogged("./env.mjs").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toMatch(
      /^custom_secret_manager \.\/env\.mjs: .*envBacked.*served over HTTP without the hosted_keys limit/,
    );
    expect(lines).toEqual([]);

    const tuned = await openLogged("./tuned.mjs");
    expect((await tuned.get("A"))?.value).toBe("opened");
    expect(lines).toHaveLength(1);
    const warning = JSON.parse(lines[0] as string) as { level: string; msg: string };
    expect(warning.level).toBe("warn");
    expect(warning.msg).toContain("custom_secret_manager ./tuned.mjs: defaults not applied");
    expect(warning.msg).toContain("accessMode (set key_management_settings.access_mode)");
    expect(warning.msg).toContain("refreshSeconds (set SECRET_MANAGER_REFRESH_INTERVAL)");
    expect(warning.msg).toContain("alwaysReadVariable (set SECRET_MANAGER_REFRESH_INTERVAL=0 to always read)");
    expect(warning.msg).toContain("needsLocalKey (set LITELLM_SALT_KEY or LITELLM_MASTER_KEY");
    // With a key configured, the key ring reaches the module: nothing to say of needsLocalKey.
    lines.length = 0;
    await customStore.open(
      { config: { custom_secret_manager: "./tuned.mjs" }, env: {} },
      {
        dataDir: "/x",
        configDir: dir,
        env: {},
        keys: new KeyRing(newKey()),
        log: createLogger((l) => lines.push(l)),
        now: Date.now,
      },
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain("needsLocalKey");
    expect(warning.msg).not.toContain("refreshIntervalVariable"); // not set: nothing to say

    // The custom kind's own defaults, as the fixture's: no warning.
    lines.length = 0;
    await openLogged(join(FIXTURES, "custom-factory.mjs"));
    expect(lines).toEqual([]);
  });

  it("stops the start, naming the module, when it cannot be loaded or exports neither shape", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "nothing.mjs"), "export default 42;\n");
    await writeFile(join(dir, "broken.mjs"), "export default class {\n");
    await writeFile(join(dir, "no-settings.mjs"), 'export default { kind: "half", open: async () => ({}) };\n');
    await writeFile(join(dir, "no-get.mjs"), "export default class {};\n");
    for (const [path, message] of [
      ["./missing.mjs", /custom_secret_manager: cannot load \.\/missing\.mjs \(ERR_MODULE_NOT_FOUND\)$/],
      // LiteLLM's value for its proxy (a Python class path) in this config: said so.
      [
        "llm_secrets_manager.LLMSecretsManager",
        /cannot load llm_secrets_manager\.LLMSecretsManager \(ERR_MODULE_NOT_FOUND\): that is a Python class path, which LiteLLM's proxy loads; here it is a JavaScript module's path/,
      ],
      ["store.mjs", /cannot load store\.mjs \(ERR_MODULE_NOT_FOUND\)$/],
      ["./nothing.mjs", /nothing\.mjs: the default export must be a StoreFactory, or a class with get/],
      ["./broken.mjs", /cannot load \.\/broken\.mjs/],
      ["./no-settings.mjs", /no-settings\.mjs: the default export must be a StoreFactory, or a class with get/],
      ["./no-get.mjs", /no-get\.mjs: the default export must be a StoreFactory, or a class with get/],
    ] as const) {
      const err = await open(path, dir).catch((e: unknown) => e);
      expect(err, path).toBeInstanceOf(ConfigError);
      expect((err as Error).message, path).toMatch(message);
    }
    await expect(
      customStore.open({ config: {}, env: {} }, { dataDir: "/x", env: {}, log: silentLogger, now: Date.now }),
    ).rejects.toThrow(/needs key_management_settings.custom_secret_manager/);
  });

  it("stops the start, naming the module and what is missing, when a StoreFactory's store lacks kind, keyOf or get, closing it first", async () => {
    const dir = await tempDir();
    const factory = (store: string) =>
      `export const closed = []; export default { kind: "half", settings: { safeParse: (input) => ({ success: true, data: input }) }, defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false }, capabilities: { writes: true, deletes: true, compareAndSet: false, records: [] }, open: async () => (${store}) };\n`;
    // The README's first list left keyOf out.
    await writeFile(
      join(dir, "no-key-of.mjs"),
      factory(
        '{ kind: "half", get: async () => undefined, delete: async () => "absent", close: async () => { closed.push("no-key-of"); } }',
      ),
    );
    await writeFile(join(dir, "no-store.mjs"), factory("undefined"));
    for (const [path, missing] of [
      ["./no-key-of.mjs", "keyOf()"],
      ["./no-store.mjs", "kind (a string), keyOf(), get()"],
    ] as const) {
      const err = await open(path, dir).catch((e: unknown) => e);
      expect(err, path).toBeInstanceOf(ConfigError);
      expect((err as Error).message, path).toBe(
        `custom_secret_manager ${path}: the store its open() returned has no ${missing}: a SecretStore has kind, keyOf and get (and put and delete to write)`,
      );
    }
    // Its timers or sockets would otherwise keep serve from ending (and a function's every retry open one more).
    const { closed } = (await import(pathToFileURL(join(dir, "no-key-of.mjs")).href)) as { closed: string[] };
    expect(closed).toEqual(["no-key-of"]);
  });

  it("serves reads from a StoreFactory's store without put or delete, and answers its writes not_supported", async () => {
    const dir = await tempDir();
    await writeFile(
      join(dir, "read-only.mjs"),
      'export default { kind: "ro", settings: { safeParse: (input) => ({ success: true, data: input }) }, defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false }, capabilities: { writes: false, deletes: false, compareAndSet: false, records: [] }, open: async () => ({ kind: "ro", keyOf: (n) => n, get: async (n) => (n === "A" ? { value: "a" } : undefined) }) };\n',
    );
    const store = await open("./read-only.mjs", dir);
    expect((await store.get("A"))?.value).toBe("a");
    expect(await codeOf(store.put("A", "v"))).toBe("not_supported");
    expect(await codeOf(store.delete("A"))).toBe("not_supported");
    // Configured by its absolute path, as a class too: the answer names its file, never the path
    // (an HTTP answer holds none).
    await writeFile(join(dir, "get-only.mjs"), "export default class { async get() { return undefined; } }\n");
    for (const file of ["read-only.mjs", "get-only.mjs"]) {
      const absolute = await open(join(dir, file), dir);
      for (const refused of [absolute.put("A", "v"), absolute.delete("A")]) {
        const message = await refused.then(
          () => "",
          (err: Error) => err.message,
        );
        expect(message).toContain(file);
        expect(message).not.toContain(dir);
      }
    }
  });

  it("warns once that a StoreFactory's compareAndSet and scopes are not read at start, whose warnings of them do not hold", async () => {
    const dir = await tempDir();
    await writeFile(
      join(dir, "ordered.mjs"),
      'export default { kind: "ordered", settings: { safeParse: (input) => ({ success: true, data: input }) }, defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false }, capabilities: { writes: true, deletes: true, compareAndSet: true, scopes: true, records: [] }, open: async () => ({ kind: "ordered", keyOf: (n) => n, get: async () => undefined, put: async () => "created", delete: async () => "absent" }) };\n',
    );
    const lines: string[] = [];
    await customStore.open(
      { config: { custom_secret_manager: "./ordered.mjs" }, env: {} },
      { dataDir: "/x", configDir: dir, env: {}, log: createLogger((l) => lines.push(l)), now: Date.now },
    );
    expect(lines).toHaveLength(1);
    const warning = JSON.parse(lines[0] as string) as { level: string; msg: string };
    expect(warning.level).toBe("warn");
    expect(warning.msg).toMatch(
      /^custom_secret_manager \.\/ordered\.mjs: capabilities not read, the start took the custom store's before the module loaded, so its warnings of them do not hold for this module: compareAndSet \(.*\), scopes \(.*teams keeping their keys in one place under different data fields are not refused/,
    );
    // A factory declaring neither (the fixture): nothing to say.
    lines.length = 0;
    await customStore.open(
      { config: { custom_secret_manager: join(FIXTURES, "custom-factory.mjs") }, env: {} },
      { dataDir: "/x", env: {}, log: createLogger((l) => lines.push(l)), now: Date.now },
    );
    expect(lines).toEqual([]);
  });

  it("a class's delete is called even for a name its get finds nothing under (a get may lag), and its failure then is absent", async () => {
    const held = new Map([["A", "a"]]);
    const deleted: string[] = [];
    // A write its get does not see yet (a read replica behind): the delete must still reach it.
    const lagging = new Set(["LAGGING"]);
    const store = new PlainClassStore(
      {
        get: (name: string) => held.get(name),
        delete: (name: string) => {
          if (lagging.delete(name)) return void deleted.push(name);
          if (!held.has(name)) throw new Error(`no such secret ${name}`);
          deleted.push(name);
          held.delete(name);
        },
      },
      "./throws-when-missing.mjs",
    );
    expect(await store.delete("ABSENT")).toBe("absent");
    expect(await store.delete("A")).toBe("deleted");
    expect(await store.delete("A")).toBe("absent");
    expect(await store.delete("LAGGING")).toBe("absent");
    expect(deleted).toEqual(["A", "LAGGING"]);
    expect(lagging.size).toBe(0);
    // A failure of a name its get found is the failure.
    const failing = new PlainClassStore(
      {
        get: () => "v",
        delete: () => {
          throw Object.assign(new Error("down"), { code: "backend_unavailable" });
        },
      },
      "./down.mjs",
    );
    expect(await codeOf(failing.delete("A"))).toBe("backend_unavailable");
    // So is one for a name its get did not find (a lagging get): the name may be there still.
    const laggingDown = new PlainClassStore(
      {
        get: () => undefined,
        delete: () => {
          throw Object.assign(new Error("down"), { code: "backend_unavailable" });
        },
      },
      "./lagging-down.mjs",
    );
    expect(await codeOf(laggingDown.delete("A"))).toBe("backend_unavailable");
  });

  it("a class's get answering null is no secret, a record without a string value is refused; a factory's close failure is classified", async () => {
    expect(await new PlainClassStore({ get: () => null }, "./null.mjs").get("A")).toBeUndefined();
    await expect(new PlainClassStore({ get: () => ({ value: 5 }) }, "./odd.mjs").get("A")).rejects.toBeInstanceOf(
      ConfigError,
    );
    expect(await codeOf(new PlainClassStore({ get: () => undefined }, "./read-only.mjs").put("A", "v"))).toBe(
      "not_supported",
    );
    const dir = await tempDir();
    await writeFile(
      join(dir, "closing.mjs"),
      [
        "export default {",
        '  kind: "closing",',
        "  settings: { safeParse: (input) => ({ success: true, data: input }) },",
        '  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false },',
        "  capabilities: { writes: false, deletes: false, compareAndSet: false, records: [] },",
        "  open: async () => ({",
        '    kind: "closing",',
        "    keyOf: (name) => name,",
        "    get: async () => undefined,",
        "    put: async () => undefined,",
        "    delete: async () => undefined,",
        "    close: async () => {",
        '      throw Object.assign(new Error("cannot close"), { status: 503 });',
        "    },",
        "  }),",
        "};",
        "",
      ].join("\n"),
    );
    const store = await open("./closing.mjs", dir);
    const err = await store.close?.().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SecretsError);
    expect(err).toMatchObject({ code: "backend_unavailable" });
  });

  it("serves the API through llm-secrets serve, the module beside the config file", async () => {
    const dir = await tempDir();
    await copyFile(join(FIXTURES, "custom-store.mjs"), join(dir, "my-store.mjs"));
    const config = join(dir, "config.yaml");
    await writeFile(
      config,
      "general_settings:\n  key_management_system: custom\n  key_management_settings:\n    access_mode: read_and_write\n    custom_secret_manager: ./my-store.mjs\n",
    );
    const { server, call } = await serveStore("", {}, config);
    try {
      expect((await call("PUT", "/v1/secrets/OPENAI_API_KEY", { value: "sk-custom-0123" })).status).toBe(201);
      expect(await (await call("GET", "/v1/secrets/OPENAI_API_KEY?refresh=true")).json()).toMatchObject({
        value: "sk-custom-0123",
      });
      expect(await (await call("GET", "/health")).json()).toMatchObject({ store: "custom" });
      // No limit of ours on a user's own store's values: 100 KiB (past the other stores' 64) is written.
      const large = "x".repeat(100 * 1024);
      expect((await call("PUT", "/v1/secrets/LARGE", { value: large })).status).toBe(201);
      expect(((await (await call("GET", "/v1/secrets/LARGE?refresh=true")).json()) as { value: string }).value).toBe(
        large,
      );
    } finally {
      await server.stop();
    }
  });
});

describe("a custom store's own error messages", () => {
  it("reach no caller without the key (/ready), and no log line when its open fails the start", async () => {
    const config = (settings: string) =>
      `general_settings:\n  key_management_system: custom\n  key_management_settings:\n    custom_secret_manager: ${settings}\n`;
    const throwing = join(FIXTURES, "custom-throwing-factory.mjs");
    const { request } = await inProcessApp({
      stores: [customStore],
      config: config(`${throwing}\n    error: { code: backend_unavailable, message: "cannot reach ${LEAKED}" }`),
    });
    const ready = await request("/ready", { token: null });
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({
      error: { code: "backend_unavailable", message: "the custom-throwing store is not ready: the log says why" },
    });
    // The caller with the key gets the store's own message, as for every call.
    expect(await (await request("/v1/secrets/A")).text()).toContain(LEAKED);

    const logs: string[] = [];
    const runtime = startOnFirstUse({
      stores: [customStore],
      env: {
        LITELLM_MASTER_KEY: newKey(),
        LLM_SECRETS_CONFIG: config(`${join(FIXTURES, "custom-failing-factory.mjs")}\n    open_fails: true`),
      },
      log: createLogger((line) => logs.push(line)),
    });
    await expect(runtime()).rejects.toMatchObject({ code: "internal" }); // classified as its calls' failures are
    expect(logs.map((l) => JSON.parse(l))).toEqual([
      expect.objectContaining({
        msg: "llm-secrets could not start",
        reason: "the custom store's own message (not logged)",
      }),
    ]);
    expect(logs.join("")).not.toContain(LEAKED);
  });

  it("reach the caller, never a log line: they may hold anything (a value the store could not parse)", async () => {
    const value = "sk-live-held-in-a-message-0123";
    const logs: string[] = [];
    const plain = {
      get(name: string) {
        // The README's typed error from another copy of the package (its shape), and ours (instanceof).
        if (name === "A") throw Object.assign(new Error(`cannot parse ${value}`), { code: "store_corrupt" });
        // Not typed: the classifier names it by its name and code, which the user's store also wrote.
        if (name === "C") throw Object.assign(new Error("x"), { name: value, code: `postgres://u:${value}@db/x` });
        throw new StoreCorrupt(`cannot parse ${value}`);
      },
    };
    const store = instrumentStore(
      new PlainClassStore(plain, "./my-store.mjs"),
      createMetrics(),
      createLogger((l) => logs.push(l)),
    );
    for (const name of ["A", "B"]) {
      const err = await store.get(name).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "store_corrupt", message: `cannot parse ${value}` });
    }
    expect(await store.get("C").catch((e: unknown) => e)).toMatchObject({ code: "internal" });
    const failed = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "store call failed");
    expect(failed).toHaveLength(3);
    for (const line of failed) expect(line.reason).toBe("the custom store's own message (not logged)");
    expect(logs.join("")).not.toContain(value);

    // Our own message of it, its timeout, is logged as it is.
    vi.useFakeTimers();
    try {
      const slow = instrumentStore(
        new PlainClassStore({ get: () => new Promise(() => {}) }, "./my-store.mjs"),
        createMetrics(),
        createLogger((l) => logs.push(l)),
      );
      const pending = slow.get("SLOW").catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(CUSTOM_TIMEOUT_MS);
      expect(await pending).toMatchObject({ code: "backend_unavailable" });
    } finally {
      vi.useRealTimers();
    }
    const timedOut = logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "store call failed")[3];
    // Nor in a key event's line: the event's result (the caller's) keeps it.
    const eventLogs: string[] = [];
    const eventLog = createLogger((l) => eventLogs.push(l));
    const writing = instrumentStore(
      new PlainClassStore(
        {
          get: () => undefined,
          put: () => {
            throw Object.assign(new Error(`cannot write ${value}`), { code: "backend_unavailable" });
          },
        },
        "./my-store.mjs",
      ),
      createMetrics(),
      eventLog,
    );
    const policy = {
      accessMode: "read_and_write" as const,
      storeVirtualKeys: true,
      prefixForStoredVirtualKeys: "litellm/",
    };
    const metrics = createMetrics();
    const manager = new SecretManager({
      store: writing,
      envBacked: false,
      policy,
      cache: { ttlSeconds: 60, maxStaleSeconds: 60 },
      metrics,
      log: eventLog,
    });
    const result = await applyKeyEvent(
      {
        id: "e1",
        type: "key.created",
        occurred_at: new Date().toISOString(),
        key_alias: "k1",
        key: "sk-virtual-0123456789",
      },
      { manager, policy, maxAgeSeconds: 600, now: Date.now, log: eventLog, metrics },
    );
    expect(result).toMatchObject({ status: "failed", code: "backend_unavailable", message: `cannot write ${value}` });
    const notApplied = eventLogs.map((l) => JSON.parse(l)).find((l) => l.msg === "key event not applied");
    expect(notApplied).toMatchObject({
      code: "backend_unavailable",
      reason: "the custom store's own message (not logged)",
    });
    expect(eventLogs.join("")).not.toContain(value);
    expect(timedOut).toMatchObject({ name: "SLOW", reason: expect.stringMatching(/no answer within 30 s$/) });
  });
});
