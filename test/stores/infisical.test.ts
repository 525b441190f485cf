// The infisical store: Universal Auth and the raw secrets API over HTTPS (test/fakes/infisical.ts):
// the conformance suite, names and query values encoded, create-then-update, a fresh login on 401,
// the fault matrix, a 404 for a project, environment or folder that is not there (a setting to fix,
// not a missing secret), and serve --config with LiteLLM's env names.
import { readFileSync } from "node:fs";
import { describe, expect, inject, it } from "vitest";
import { SecretsError } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import type { SecretStore } from "../../core/src/secret-store";
import { loadSettings } from "../../core/src/settings";
import { infisicalStore } from "../../core/src/stores/infisical";
import { storeConformance } from "../../core/src/testing";
import { INFISICAL_CLIENT, lazyFakeInfisical } from "../fakes/infisical";
import { codeOf, expectNoValueIn, inProcessApp, newKey, secretValue, serveStore } from "../helpers";

const infisical = lazyFakeInfisical();

/** A request of our own to the fake, past the store: what Infisical answers a body the store would never send. */
async function rawPost(base: string, path: string, token: string, body: unknown) {
  const { request } = await import("node:https");
  return new Promise<{ status: number; json: unknown }>((resolve, reject) => {
    const req = request(
      `${base}${path}`,
      {
        method: "POST",
        ca: readFileSync(inject("testPki").caFile),
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString("utf8")) }),
        );
      },
    );
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}
const logs: string[] = [];
const log = createLogger((line) => logs.push(line));

async function open(env: Record<string, string> = {}, now: () => number = Date.now) {
  const fake = await infisical();
  return infisicalStore.open(
    {
      config: {},
      env: {
        INFISICAL_URL: `${fake.url}/`,
        INFISICAL_CLIENT_ID: INFISICAL_CLIENT.clientId,
        INFISICAL_CLIENT_SECRET: INFISICAL_CLIENT.clientSecret,
        INFISICAL_PROJECT_ID: "proj-1",
        ...env,
      },
    },
    { dataDir: "/nonexistent", env: {}, log, now },
  );
}

storeConformance({
  name: "infisical (REST over HTTPS against the fake)",
  factory: infisicalStore,
  // Infisical's SecretNameSchema (no `:`) and folder names (the parts before the last `/`).
  refuses: (name) =>
    name.includes(":") ||
    name
      .split("/")
      .slice(0, -1)
      .some((f) => !/^[A-Za-z0-9_-]+$/.test(f)),
  open: async () => {
    (await infisical()).reset();
    return open();
  },
  // Every request from now on (the next open resets the fake): 403, 429 and 503 with Retry-After, a drop.
  failNext: async (fault) => {
    const [status, retryAfter] = (
      { denied: [403], throttled: [429, "7"], down: [503, "7"], reset: ["reset"] } as const
    )[fault];
    (await infisical()).fail(100, status, retryAfter);
  },
});

describe("the infisical store", () => {
  it("logs in once, encodes the name and every query value, creates then updates", async () => {
    const fake = await infisical();
    fake.reset();
    fake.addFolder("/team-a", "prod");
    const store = await open({ INFISICAL_SECRET_PATH: "team-a", INFISICAL_ENVIRONMENT: "prod" });
    const v = secretValue("inf");
    expect(await store.put("litellm-x+y=z@a", v)).toBe("created");
    expect(await store.put("litellm-x+y=z@a", v)).toBe("updated");
    expect((await store.get("litellm-x+y=z@a"))?.value).toBe(v);
    expect(fake.requests.filter((r) => r.url.endsWith("/login"))).toHaveLength(1);
    const read = fake.requests.find((r) => r.method === "GET");
    expect(read?.url).toBe(
      "/api/v3/secrets/raw/litellm-x%2By%3Dz%40a?workspaceId=proj-1&environment=prod&secretPath=%2Fteam-a",
    );
    expect(fake.requests.map((r) => r.method)).toEqual(["POST", "POST", "POST", "PATCH", "GET"]);
    expect(fake.requests.find((r) => r.method === "PATCH")?.body).toMatchObject({
      secretPath: "/team-a",
      secretValue: v,
    });
  });

  it("keeps a name's parts before its last / as folders below INFISICAL_SECRET_PATH, made by the first write there", async () => {
    const fake = await infisical();
    fake.reset();
    fake.addFolder("/team-a");
    const store = await open({ INFISICAL_SECRET_PATH: "team-a/" });
    const v = secretValue("nested");
    await store.put("A", secretValue("a")); // logged in
    const since = (n: number) => fake.requests.slice(n).map((r) => `${r.method} ${r.url.split("?")[0]}`);

    let n = fake.requests.length;
    expect(await store.put("litellm/proj/key", v)).toBe("created");
    // The create finds no folder; a read at INFISICAL_SECRET_PATH (of a name no secret has) finds it there; the folders are made; the create again.
    expect(since(n)).toEqual([
      "POST /api/v3/secrets/raw/key",
      "GET /api/v3/secrets/raw/llm-secrets%3Afolder-probe",
      "POST /api/v2/folders",
      "POST /api/v3/secrets/raw/key",
    ]);
    expect(fake.requests[n + 1]?.url).toContain(`secretPath=${encodeURIComponent("/team-a/")}`);
    expect(fake.requests[n + 2]?.body).toEqual({
      projectId: "proj-1",
      environment: "dev",
      name: "proj",
      path: "/team-a/litellm",
    });
    expect(fake.requests[n + 3]?.body).toMatchObject({ secretPath: "/team-a/litellm/proj", secretKey: "key" });
    expect(fake.secrets.get("proj-1|dev|/team-a/litellm/proj|key")).toBe(v);
    expect([...(fake.places.get("proj-1")?.get("dev") ?? [])]).toEqual([
      "/",
      "/team-a",
      "/team-a/litellm",
      "/team-a/litellm/proj",
    ]);

    // Once the folder is there: one call a create, two an update, none for folders.
    n = fake.requests.length;
    expect(await store.put("litellm/proj/other", v)).toBe("created");
    expect(await store.put("litellm/proj/key", `${v}-2`)).toBe("updated");
    expect(since(n)).toEqual([
      "POST /api/v3/secrets/raw/other",
      "POST /api/v3/secrets/raw/key",
      "PATCH /api/v3/secrets/raw/key",
    ]);
    expect((await store.get("litellm/proj/key"))?.value).toBe(`${v}-2`);
    expect(await store.get("litellm/proj")).toBeUndefined(); // a folder is no secret

    // A folder that is not there holds no secret: read none, delete absent, and no folder made for either.
    expect(await store.get("litellm/nope/key")).toBeUndefined();
    expect(await store.delete("litellm/nope/key")).toBe("absent");
    expect(fake.places.get("proj-1")?.get("dev")?.has("/team-a/litellm/nope")).toBe(false);
    expect(await store.delete("litellm/proj/key")).toBe("deleted");
    expect(await store.get("litellm/proj/key")).toBeUndefined();

    // Two first writes into one new folder at once: both created (Infisical answers an existing folder as made).
    expect(await Promise.all([store.put("fresh/one", v), store.put("fresh/two", v)])).toEqual(["created", "created"]);
    expect((await store.get("fresh/two"))?.value).toBe(v);
  });

  it("refuses before any call a name Infisical cannot hold: a : anywhere, or a folder part with other than letters, digits, - and _", async () => {
    const fake = await infisical();
    fake.reset();
    const store = await open();
    await store.put("A", secretValue("a")); // logged in
    const before = fake.requests.length;
    for (const name of ["a:b", "litellm/a:b", "keys.v1/alias", "a@b/c", "x+y/z"]) {
      expect(await codeOf(store.put(name, secretValue("refused"))), name).toBe("invalid_name");
      expect(await codeOf(store.get(name)), name).toBe("invalid_name");
      expect(await codeOf(store.delete(name)), name).toBe("invalid_name");
    }
    expect(fake.requests.length).toBe(before);
    await expect(store.put("keys.v1/alias", "v")).rejects.toThrow(
      /folders, whose names take only letters, digits, - and _/,
    );
    // The last part is the secret's name, which takes more than a folder's.
    expect(await store.put("litellm/a.b@c", secretValue("alias"))).toBe("created");
    // What Infisical itself answers the whole name in the URL, as LiteLLM sends it (the fake, as its SecretNameSchema and error handler do).
    const token = [...fake.tokens][0] as string;
    const answer = await rawPost(fake.url, "/api/v3/secrets/raw/litellm%2Fteam-a", token, {
      workspaceId: "proj-1",
      environment: "dev",
      secretPath: "/",
      secretValue: "v",
    });
    expect(answer.status).toBe(422);
    expect(JSON.stringify(answer.json)).toContain("Secret name cannot contain colon or forward slash.");
  });

  it("makes no folder under an INFISICAL_SECRET_PATH that is not there, and a refused folder create writes nothing", async () => {
    const fake = await infisical();
    fake.reset();
    const mistyped = await open({ INFISICAL_SECRET_PATH: "/team-b" });
    for (const call of [
      () => mistyped.put("litellm/key", secretValue("x")),
      () => mistyped.get("litellm/key"),
      () => mistyped.delete("litellm/key"),
    ]) {
      await expect(call()).rejects.toThrow(/check INFISICAL_ENVIRONMENT .* and INFISICAL_SECRET_PATH/);
    }
    expect([...(fake.places.get("proj-1")?.get("dev") ?? [])]).toEqual(["/"]);
    expect(fake.requests.some((r) => r.url === "/api/v2/folders")).toBe(false);

    // An identity that may not make folders: the create fails as denied, and nothing is written.
    const store = await open();
    fake.denyFolders = true;
    expect(await codeOf(store.put("litellm/key", secretValue("denied")))).toBe("backend_denied");
    expect(fake.secrets.size).toBe(0);
    fake.denyFolders = false;
    expect(await store.put("litellm/key", secretValue("allowed"))).toBe("created");
  });

  it("reads none and makes the folder for an identity allowed below INFISICAL_SECRET_PATH only; a folder not yet seen after it was made is a failure to retry", async () => {
    const fake = await infisical();
    fake.reset();
    // Secret permissions on /litellm and below: Infisical answers 403 at / only once it has found the folder.
    fake.secretsBelow = "/litellm";
    const store = await open();
    expect(await store.get("litellm/alias")).toBeUndefined();
    expect(await store.delete("litellm/alias")).toBe("absent");
    const v = secretValue("scoped");
    expect(await store.put("litellm/alias", v)).toBe("created");
    expect((await store.get("litellm/alias"))?.value).toBe(v);
    expect(await codeOf(store.get("ELSEWHERE"))).toBe("backend_denied"); // outside its path: denied, not none

    // The folder create answers 200, yet the create does not find the folder (a replica behind): retry, not a setting.
    fake.reset();
    const folderCreate = fake.hold((r) => r.url === "/api/v2/folders");
    const put = store.put("litellm/late", v);
    await folderCreate.arrived;
    fake.fail(1, 200); // answered 200, the folder not made
    folderCreate.release();
    const failure = await put.then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(SecretsError);
    expect((failure as SecretsError).code).toBe("backend_unavailable");
    expect((failure as SecretsError).details.retryAfter).toBe(1);
    expect((failure as Error).message).not.toMatch(/check INFISICAL/);
    expect(await store.put("litellm/late", v)).toBe("created"); // the retry makes it
  });

  it("warns at open when key events would store virtual keys under a prefix whose folders Infisical cannot name, not otherwise", async () => {
    const fake = await infisical();
    const opened = async (kms: string) => {
      const settings = loadSettings({
        env: {
          LITELLM_MASTER_KEY: "sk-infisical-test-0123",
          LLM_SECRETS_CONFIG: `general_settings:\n  key_management_system: infisical\n  key_management_settings:\n${kms}`,
          INFISICAL_URL: fake.url,
          INFISICAL_CLIENT_ID: INFISICAL_CLIENT.clientId,
          INFISICAL_CLIENT_SECRET: INFISICAL_CLIENT.clientSecret,
          INFISICAL_PROJECT_ID: "proj-1",
        },
        stores: [infisicalStore],
      });
      const lines: string[] = [];
      const store = await infisicalStore.open(settings.storeSettings as never, {
        dataDir: "/nonexistent",
        env: {},
        log: createLogger((line) => lines.push(line)),
        now: Date.now,
      });
      expect(store.kind).toBe("infisical");
      return lines.filter((l) => l.includes("key events cannot store virtual keys on infisical"));
    };
    // The default prefix, litellm/, and one without / (which gets one, as LiteLLM adds it) are folders.
    expect(await opened("    store_virtual_keys: yes\n")).toEqual([]);
    expect(await opened("    store_virtual_keys: true\n    prefix_for_stored_virtual_keys: litellm-\n")).toEqual([]);
    const dotted = await opened("    store_virtual_keys: true\n    prefix_for_stored_virtual_keys: keys.v1/\n");
    expect(dotted).toHaveLength(1);
    expect(dotted[0]).toContain('\\"keys.v1/\\"');
    // A team's own prefix too, named.
    const team = await opened(
      "    store_virtual_keys: true\n    team_settings:\n      team-a:\n        prefix_for_stored_virtual_keys: team.a/\n",
    );
    expect(team).toHaveLength(1);
    expect(team[0]).toContain('\\"team.a/\\"');
    expect(team[0]).not.toContain('\\"litellm/\\"'); // the general prefix, the default, is a folder
    expect(await opened("    store_virtual_keys: false\n    prefix_for_stored_virtual_keys: keys.v1/\n")).toEqual([]);
    // Unset, store_virtual_keys is off (LiteLLM's default): no event stores a key, nothing to warn of.
    expect(await opened("    prefix_for_stored_virtual_keys: keys.v1/\n")).toEqual([]);
  });

  it("sends the description as secretComment on create, and updates only when a 400 says the secret exists", async () => {
    const fake = await infisical();
    fake.reset();
    const store = await open();
    const v = secretValue("described");
    const meta = { whenCreated: { description: "OpenAI key of team a" } };
    expect(await store.put("DESCRIBED", v, { meta })).toBe("created");
    expect(await store.put("PLAIN", v)).toBe("created");
    const posts = fake.requests.filter((r) => r.method === "POST" && r.url.startsWith("/api/v3/"));
    expect(posts[0]?.body).toMatchObject({ secretKey: "DESCRIBED", secretComment: "OpenAI key of team a" });
    expect(posts[1]?.body).not.toHaveProperty("secretComment");
    // An explicit description wins over the one for creates.
    await store.put("EXPLICIT", v, { meta: { description: "explicit", whenCreated: { description: "created" } } });
    expect(fake.requests.at(-1)?.body).toMatchObject({ secretComment: "explicit" });

    // A 400 for another reason (a value Infisical reads as a reference to a missing secret) is a
    // failure, not "it exists": no PATCH, the value unchanged.
    const before = fake.requests.length;
    fake.fail(1, 400, undefined, "Referenced secret(s) not found: MISSING");
    expect(await codeOf(store.put("DESCRIBED", `${v}-2`))).toBe("internal");
    expect(fake.requests.slice(before).map((r) => r.method)).toEqual(["POST"]);
    expect((await store.get("DESCRIBED"))?.value).toBe(v);
    // Infisical's "Secret already exist" is: PATCH with the value only.
    expect(await store.put("DESCRIBED", `${v}-3`, { meta })).toBe("updated");
    expect(fake.requests.find((r) => r.method === "PATCH")?.body).not.toHaveProperty("secretComment");
    expect((await store.get("DESCRIBED"))?.value).toBe(`${v}-3`);
  });

  it("logs in afresh once on a 401, and maps faults to the SPEC codes", async () => {
    const fake = await infisical();
    fake.reset();
    const store = await open();
    await store.put("A", secretValue("a"));
    fake.tokens.clear(); // every token revoked: the next call's 401 brings one fresh login
    expect((await store.get("A"))?.value).toMatch(/^a-/);
    for (const [status, code] of [
      [403, "backend_denied"],
      [429, "backend_unavailable"],
      [500, "backend_unavailable"],
    ] as const) {
      fake.fail(1, status, "4");
      expect(await codeOf(store.get("A")), String(status)).toBe(code);
    }
  });

  it("logs in again a minute before the token's expiresIn (keeping it at least a minute), on the store's clock", async () => {
    const fake = await infisical();
    fake.reset();
    let clock = Date.now();
    fake.expiresIn = 600;
    const store = await open({}, () => clock);
    /** `ms` later, a read of R through `target`: its value, and the logins so far. */
    const readAfter = async (ms: number, target: SecretStore, logins: number) => {
      clock += ms;
      expect((await target.get("R"))?.value).toBe("r-value");
      expect(fake.logins).toBe(logins);
    };
    await store.put("R", "r-value");
    expect(fake.logins).toBe(1);
    await readAfter(539_000, store, 1);
    await readAfter(2_000, store, 2); // 541 s: past expiresIn - 60
    // The new token's life runs from its own login.
    await readAfter(539_000, store, 2);
    await readAfter(2_000, store, 3);
    // A token that expires in less than two minutes is still kept a minute.
    fake.expiresIn = 30;
    const short = await open({}, () => clock);
    await readAfter(0, short, 4);
    await readAfter(59_000, short, 4);
    await readAfter(2_000, short, 5);
  });

  it("logs in once for concurrent 401s, even one answered after another call has logged in again", async () => {
    const fake = await infisical();
    fake.reset();
    const store = await open();
    const v = secretValue("concurrent");
    await store.put("C", v);
    expect(fake.logins).toBe(1);
    fake.tokens.clear(); // every token revoked
    const reads = await Promise.all(Array.from({ length: 8 }, () => store.get("C")));
    expect(reads.map((r) => r?.value)).toEqual(Array(8).fill(v));
    expect(fake.logins).toBe(2);

    // A slow 401: its call was refused with the old token, which another call has since replaced.
    fake.tokens.clear();
    const slow = fake.hold((r) => r.method === "GET");
    const late = store.get("C");
    await slow.arrived;
    expect((await store.get("C"))?.value).toBe(v); // 401, a fresh login, the call again
    expect(fake.logins).toBe(3);
    slow.release();
    expect((await late)?.value).toBe(v); // its 401 takes the fresh token: no login of its own
    expect(fake.logins).toBe(3);
  });

  it("answers a project, environment or folder that is not there store_unavailable naming the setting, for get, put and delete; a missing secret in its folder is absent", async () => {
    const fake = await infisical();
    fake.reset();
    fake.addFolder("/team-a", "prod");
    const right = await open({ INFISICAL_ENVIRONMENT: "prod", INFISICAL_SECRET_PATH: "/team-a" });
    const v = secretValue("placed");
    expect(await right.put("HELD", v)).toBe("created");
    // In the folder that is there, a missing secret is none, and its delete absent.
    expect(await right.get("MISSING")).toBeUndefined();
    expect(await right.delete("MISSING")).toBe("absent");

    /** What each call answers through a store opened with `env`: its code and message. */
    const failures = async (env: Record<string, string>) => {
      const store = await open(env);
      const outcomes: { code: string; message: string }[] = [];
      for (const call of [() => store.get("HELD"), () => store.put("HELD", `${v}-2`), () => store.delete("HELD")]) {
        try {
          await call();
          outcomes.push({ code: "no error", message: "" });
        } catch (err) {
          outcomes.push({ code: err instanceof SecretsError ? err.code : "untyped", message: (err as Error).message });
        }
      }
      return outcomes;
    };
    const folderSettings = /check INFISICAL_ENVIRONMENT .* and INFISICAL_SECRET_PATH/;
    for (const env of [
      { INFISICAL_ENVIRONMENT: "production", INFISICAL_SECRET_PATH: "/team-a" }, // an environment it has not
      { INFISICAL_ENVIRONMENT: "prod", INFISICAL_SECRET_PATH: "/team-b" }, // a folder it has not
    ]) {
      const before = new Map(fake.secrets);
      const outcomes = await failures(env);
      for (const [i, { code, message }] of outcomes.entries()) {
        const what = ["infisical get", "infisical put", "infisical delete"][i] as string;
        expect(code, `${what} ${JSON.stringify(env)}`).toBe("store_unavailable");
        expect(message).toMatch(folderSettings);
        expect(message.startsWith(`${what}: `)).toBe(true);
        expect(message).toContain(`"${env.INFISICAL_ENVIRONMENT}"`); // our setting, named
        expect(message).not.toContain("Folder with path"); // Infisical's text is matched, never repeated
      }
      expect(fake.secrets).toEqual(before); // nothing written, nothing deleted
    }
    expect((await right.get("HELD"))?.value).toBe(v);

    // A project it does not know: INFISICAL_PROJECT_ID named.
    const noProject = await failures({ INFISICAL_PROJECT_ID: "proj-typo", INFISICAL_ENVIRONMENT: "prod" });
    expect(noProject.map((o) => o.code)).toEqual(Array(3).fill("store_unavailable"));
    for (const { message } of noProject) {
      expect(message).toMatch(/check INFISICAL_PROJECT_ID/);
      expect(message).not.toMatch(/bot lookup|proj-typo/);
    }

    // A 404 that is not Infisical's (a proxy, another service at INFISICAL_URL): neither absent nor done.
    fake.fail(1, 404, undefined, "Not Found");
    expect(await codeOf(right.get("MISSING"))).toBe("store_unavailable");
    fake.fail(1, 404, undefined, "Not Found");
    await expect(right.delete("MISSING")).rejects.toThrow(/check INFISICAL_URL/);
    expect(await right.get("MISSING")).toBeUndefined();
  });

  it("is not ready, and serves no read as missing, when INFISICAL_ENVIRONMENT names an environment Infisical has not", async () => {
    const fake = await infisical();
    fake.reset();
    fake.secrets.set("proj-1|prod|/|OPENAI_API_KEY", "sk-from-the-store");
    const app = (environment: string) =>
      inProcessApp({
        stores: [infisicalStore],
        config:
          "general_settings:\n  key_management_system: infisical\n  key_management_settings:\n    access_mode: read_and_write\n",
        env: {
          INFISICAL_URL: fake.url,
          INFISICAL_CLIENT_ID: INFISICAL_CLIENT.clientId,
          INFISICAL_CLIENT_SECRET: INFISICAL_CLIENT.clientSecret,
          INFISICAL_PROJECT_ID: "proj-1",
          INFISICAL_ENVIRONMENT: environment,
        },
      });
    const wrong = await app("production");
    const ready = await wrong.request("/ready", { token: null });
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("store_unavailable");
    // To a caller without the key, the code; the settings to check are in the store call's log line.
    expect(body.error.message).toBe("the infisical store is not ready: the log says why");
    expect(wrong.logs.join("\n")).toMatch(/INFISICAL_ENVIRONMENT/);
    const read = await wrong.request("/v1/secrets/OPENAI_API_KEY");
    expect(read.status).toBe(500);
    expect(((await read.json()) as { error: { code: string } }).error.code).toBe("store_unavailable");
    expect((await wrong.request("/v1/secrets/OPENAI_API_KEY", { method: "DELETE" })).status).toBe(500);
    expect((await wrong.request("/v1/secrets/NEW_KEY", { method: "PUT", json: { value: "v" } })).status).toBe(500);
    expect(fake.secrets.has("proj-1|prod|/|OPENAI_API_KEY")).toBe(true);

    const good = await app("prod");
    expect((await good.request("/ready", { token: null })).status).toBe(200);
    expect(await (await good.request("/v1/secrets/OPENAI_API_KEY")).json()).toMatchObject({
      value: "sk-from-the-store",
    });
  });

  it("stops the start when INFISICAL_URL is not an http(s) URL, INFISICAL_PROJECT_ID is missing or INFISICAL_SECRET_PATH has a folder Infisical cannot name, naming them", () => {
    const start = (env: Record<string, string>) => () =>
      loadSettings({
        env: {
          LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: infisical\n",
          INFISICAL_CLIENT_ID: INFISICAL_CLIENT.clientId,
          INFISICAL_CLIENT_SECRET: INFISICAL_CLIENT.clientSecret,
          INFISICAL_PROJECT_ID: "proj-1",
          ...env,
        },
        stores: [infisicalStore],
      });
    const noProject = /infisical settings: environment: INFISICAL_PROJECT_ID: set the id of the Infisical project/;
    expect(start({ INFISICAL_PROJECT_ID: "" })).toThrow(noProject);
    expect(start({ INFISICAL_PROJECT_ID: "  " })).toThrow(noProject);
    for (const url of ["app.infisical.com", "ftp://infisical.example.com", "https://infisical.example.com/?x=1"]) {
      expect(start({ INFISICAL_URL: url }), url).toThrow(
        /infisical settings: environment: INFISICAL_URL: expected an http:\/\/ or https:\/\/ URL without a query/,
      );
    }
    for (const path of ["team a", "/team-a/v1.2", "/a&b/"]) {
      expect(start({ INFISICAL_SECRET_PATH: path }), path).toThrow(
        /infisical settings: environment: INFISICAL_SECRET_PATH: a folder path whose folders' names take only letters, digits, - and _/,
      );
    }
    expect(start({})().storeSettings).toMatchObject({ env: { INFISICAL_PROJECT_ID: "proj-1" } });
    // Read only unless access_mode says otherwise; values cached for INFISICAL_REFRESH_INTERVAL, LiteLLM's name.
    expect(start({})().keyManagement.accessMode).toBe("read_only");
    expect(start({ INFISICAL_REFRESH_INTERVAL: "60" })().cache.ttlSeconds).toBe(60);
    expect(start({ INFISICAL_URL: "http://infisical.internal:8080/" })).not.toThrow();
    for (const path of ["/", "team-a", "/team_a/B-2/"])
      expect(start({ INFISICAL_SECRET_PATH: path }), path).not.toThrow();
  });

  it("serves the API through llm-secrets serve with LiteLLM's env names, and stores virtual keys in a folder litellm", async () => {
    const fake = await infisical();
    fake.reset();
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_system: infisical\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n",
      {
        INFISICAL_URL: fake.url,
        INFISICAL_CLIENT_ID: INFISICAL_CLIENT.clientId,
        INFISICAL_CLIENT_SECRET: INFISICAL_CLIENT.clientSecret,
        INFISICAL_PROJECT_ID: "proj-1",
        NODE_EXTRA_CA_CERTS: inject("testPki").caFile,
      },
    );
    const v = secretValue("served");
    const key = newKey("sk-virtual-");
    try {
      const put = await call("PUT", "/v1/secrets/OPENAI_API_KEY", { value: v });
      expect(put.status).toBe(201);
      expect(await (await call("GET", "/v1/secrets/OPENAI_API_KEY?refresh=true")).json()).toMatchObject({ value: v });
      expect((await call("DELETE", "/v1/secrets/OPENAI_API_KEY")).status).toBe(204);

      // A key event's virtual key: litellm/team-a is team-a in the folder /litellm, made by the write.
      const occurred = new Date().toISOString();
      const created = { id: "evt-1", type: "key.created", occurred_at: occurred, key_alias: "team-a", key };
      const applied = await call("POST", "/v1/key-events", created);
      expect(await applied.json()).toEqual({
        results: [{ id: "evt-1", status: "applied", names: { "litellm/team-a": "created" } }],
      });
      expect(fake.secrets.get("proj-1|dev|/litellm|team-a")).toBe(key);
      expect(await (await call("GET", "/v1/secrets/litellm/team-a")).json()).toMatchObject({ value: key });
      const deleted = { id: "evt-2", type: "key.deleted", occurred_at: occurred, key_alias: "team-a" };
      expect(await (await call("POST", "/v1/key-events", deleted)).json()).toMatchObject({
        results: [{ status: "applied", names: { "litellm/team-a": "deleted" } }],
      });
      expect(fake.secrets.size).toBe(0);
    } finally {
      await server.stop();
    }
    expectNoValueIn([server.output, ...logs], [v, key, INFISICAL_CLIENT.clientSecret]);
  });

  it("takes a 409 on create as the secret there; a failed PATCH, a failed read at INFISICAL_SECRET_PATH or an answer without a value is what it is", async () => {
    const fake = await infisical();
    fake.reset();
    const store = await open();
    const v = secretValue("answers");
    expect(await store.put("HELD", v)).toBe("created");
    // A 409 on create (whatever its message): the secret is there, so the value goes by PATCH.
    fake.fail(1, 409, undefined, "Conflict");
    expect(await store.put("HELD", `${v}-2`)).toBe("updated");
    expect(fake.secrets.get("proj-1|dev|/|HELD")).toBe(`${v}-2`);

    // A PATCH that fails is that failure, not "updated": the value is unchanged.
    const patch = fake.hold((r) => r.method === "PATCH");
    const put = store.put("HELD", `${v}-3`);
    await patch.arrived;
    fake.fail(1, 503, "2");
    patch.release();
    expect(await codeOf(put)).toBe("backend_unavailable");
    expect(fake.secrets.get("proj-1|dev|/|HELD")).toBe(`${v}-2`);

    // The read at INFISICAL_SECRET_PATH (to learn whether it is there) failing: that failure, not a setting to check.
    const probe = fake.hold((r) => r.url.includes("folder-probe"));
    const read = store.get("litellm/nope/key");
    await probe.arrived;
    fake.fail(1, 503, "2");
    probe.release();
    const failure = await read.then(
      () => undefined,
      (err: unknown) => err as SecretsError,
    );
    expect(failure?.code).toBe("backend_unavailable");
    expect(failure?.message).not.toMatch(/check INFISICAL/);

    // A 200 without a string at secret.secretValue holds no value to serve (never the text "undefined").
    fake.fail(1, 200, undefined, "no secret in this answer");
    expect(await store.get("HELD")).toBeUndefined();
    // Infisical's "Secret not found." (a trailing full stop) is a missing secret too.
    fake.fail(1, 404, undefined, "Secret not found.");
    expect(await store.delete("HELD")).toBe("absent");
    expect(fake.secrets.has("proj-1|dev|/|HELD")).toBe(true);
  });

  it("a name at a missing INFISICAL_SECRET_PATH itself is one call; an environment gone before its folder is made names the settings", async () => {
    const fake = await infisical();
    fake.reset();
    const mistyped = await open({ INFISICAL_SECRET_PATH: "/team-b" });
    await expect(mistyped.get("ROOT")).rejects.toThrow(/check INFISICAL_ENVIRONMENT/); // logged in
    const before = fake.requests.length;
    await expect(mistyped.get("ROOT")).rejects.toThrow(/check INFISICAL_ENVIRONMENT/);
    // No read at INFISICAL_SECRET_PATH to learn whether it is there: the answer has said so.
    expect(fake.requests.slice(before).map((r) => r.url.split("?")[0])).toEqual(["/api/v3/secrets/raw/ROOT"]);

    // Infisical's "Environment … not found" (here from the folder create, the environment deleted
    // meanwhile) names INFISICAL_ENVIRONMENT and INFISICAL_SECRET_PATH, as its "Folder … not found" does.
    const store = await open();
    const create = fake.hold((r) => r.url === "/api/v2/folders");
    const write = store.put("gone/key", secretValue("gone"));
    await create.arrived;
    fake.places.get("proj-1")?.delete("dev");
    create.release();
    await expect(write).rejects.toThrow(
      /^infisical folder create: Infisical has no folder "\/" in an environment "dev" of the project \(HTTP 404\): check INFISICAL_ENVIRONMENT/,
    );
    expect(fake.secrets.size).toBe(0);
  });

  it("keeps a token whose login gave no expiresIn 7200 s less a minute, and logs in again at expiresIn less 60 s exactly", async () => {
    const fake = await infisical();
    fake.reset();
    let clock = Date.now();
    fake.expiresIn = undefined as unknown as number; // the login's answer without expiresIn
    const store = await open({}, () => clock);
    await store.put("T", "t-value");
    clock += 7_139_000;
    expect((await store.get("T"))?.value).toBe("t-value");
    expect(fake.logins).toBe(1);
    clock += 2_000;
    expect((await store.get("T"))?.value).toBe("t-value");
    expect(fake.logins).toBe(2);

    fake.expiresIn = 600;
    const exact = await open({}, () => clock);
    await exact.get("T");
    expect(fake.logins).toBe(3);
    clock += 540_000; // expiresIn - 60: no longer used
    await exact.get("T");
    expect(fake.logins).toBe(4);
  });

  it("a secret deleted between its create's 'already exists' and the PATCH is made anew with the value written", async () => {
    const fake = await infisical();
    fake.reset();
    const store = await open();
    await store.put("RACED", secretValue("raced"));
    const patch = fake.hold((r) => r.method === "PATCH");
    const value = secretValue("raced-2");
    const put = store.put("RACED", value);
    await patch.arrived;
    fake.secrets.delete("proj-1|dev|/|RACED");
    patch.release();
    expect(await put).toBe("created");
    expect((await store.get("RACED"))?.value).toBe(value);
    // That second create refused (403) is the refusal, not a change under the write.
    const patchAgain = fake.hold((r) => r.method === "PATCH");
    const denied = store.put("RACED", secretValue("raced-3"));
    await patchAgain.arrived;
    fake.secrets.delete("proj-1|dev|/|RACED");
    const postAgain = fake.hold((r) => r.method === "POST");
    patchAgain.release();
    await postAgain.arrived;
    fake.fail(1, 403);
    postAgain.release();
    expect(await codeOf(denied)).toBe("backend_denied");
  });

  it("an INFISICAL_URL where nothing answers is a typed failure, for the login as for any call", async () => {
    const { createServer } = await import("node:net");
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const { port } = closed.address() as import("node:net").AddressInfo;
    await new Promise<void>((r) => closed.close(() => r()));
    const store = await open({ INFISICAL_URL: `https://127.0.0.1:${port}` });
    expect(await codeOf(store.get("A"))).toBe("backend_unavailable");
  });
});
