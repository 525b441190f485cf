// The cyberark store: Conjur's authn, policy and secrets APIs over HTTPS (test/fakes/cyberark.ts):
// the conformance suite, the wire (login, account and id encoded, the token header, the policy a
// YAML scalar), a fresh login on 401 and before a token ages out, policy-load 409s tried again,
// deletes refused, the fault matrix, mutual TLS, CYBERARK_SSL_VERIFY, and serve --config with
// LiteLLM's env names.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { copyFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, inject as injectPki, it } from "vitest";
import * as z from "zod/mini";
import type { SecretsError } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import type { SecretStore } from "../../core/src/secret-store";
import { loadSettings } from "../../core/src/settings";
import {
  type CyberArkEnv,
  CyberArkSettings,
  type CyberArkTuning,
  cyberArkConfigOf,
  cyberarkStore,
  openCyberArkStore,
  variablePolicy,
} from "../../core/src/stores/cyberark";
import { storeConformance } from "../../core/src/testing";
import { CYBERARK_ACCOUNT, CYBERARK_LOGIN, type FakeConjur, lazyFakeConjur, variablesOf } from "../fakes/cyberark";
import {
  codeOf,
  expectNoValueIn,
  listPages,
  makeCertificate,
  secretValue,
  serveStore,
  tempDir,
  until,
} from "../helpers";

const conjur = lazyFakeConjur();
const logs: string[] = [];
const log = createLogger((line) => logs.push(line));
const FAST: Partial<CyberArkTuning> = { policyBackoffMs: 10 };

/** The fake's settings, `env` laid over them; a variable set to `null` is left out. */
function envFor(fake: FakeConjur, env: Record<string, string | null> = {}): CyberArkEnv {
  const all: Record<string, string | null> = {
    CYBERARK_API_BASE: `${fake.url}/`,
    CYBERARK_ACCOUNT,
    CYBERARK_USERNAME: CYBERARK_LOGIN.login,
    CYBERARK_API_KEY: CYBERARK_LOGIN.apiKey,
    ...env,
  };
  return Object.fromEntries(Object.entries(all).filter(([, v]) => v !== null)) as CyberArkEnv;
}

async function open(
  env: Record<string, string | null> = {},
  options: { now?: () => number; tuning?: Partial<CyberArkTuning> } = {},
): Promise<SecretStore> {
  const fake = await conjur();
  return openCyberArkStore(envFor(fake, env), { log, now: options.now ?? Date.now }, options.tuning ?? FAST);
}

/** The SHA-256 fingerprint of a PEM certificate file, as a TLS peer sees it. */
const fingerprintOf = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

/** The `Authorization` header the store must send for the token the fake issued `index`-th. */
function tokenHeader(fake: FakeConjur, index: number): string {
  return `Token token="${(fake.issued[index] as Buffer).toString("base64")}"`;
}

storeConformance({
  name: "cyberark (Conjur over HTTPS against the fake)",
  factory: cyberarkStore,
  open: async () => {
    (await conjur()).reset();
    return cyberarkStore.open(
      { config: {}, env: envFor(await conjur()) },
      { dataDir: "/nonexistent", env: {}, log, now: Date.now },
    );
  },
  refusesValue: (value) => /^[\t\n\v\f\r ]*$/.test(value), // Conjur's `blank?` on a raw body
  // Every request from now on (the next open resets the fake): 403, 429 and 503 with Retry-After, a drop.
  failNext: async (fault) => {
    const [status, retryAfter] = (
      { denied: [403], throttled: [429, "7"], down: [503, "7"], reset: ["reset"] } as const
    )[fault];
    (await conjur()).fail(100, status, retryAfter);
  },
});

describe("the cyberark store", () => {
  it("logs in with the login and account encoded, and sends the token's exact bytes in base64", async () => {
    const fake = await conjur();
    fake.reset();
    const issuedBefore = fake.issued.length;
    const store = await open();
    const v = secretValue("ca");
    expect(await store.put("OPENAI_API_KEY", v)).toBe("created");
    const [login] = fake.calls("POST", /^\/authn\//);
    expect(login?.url).toBe("/authn/acme/host%2Fapp%201/authenticate");
    expect(login?.body.toString("utf8")).toBe(CYBERARK_LOGIN.apiKey);
    expect(login?.authorization).toBeUndefined();
    // Every later call carries the one token, its bytes (spaces and newline included) in base64.
    const header = tokenHeader(fake, issuedBefore);
    for (const r of fake.requests.slice(1)) expect(r.authorization).toBe(header);
    expect(fake.calls("POST", /^\/authn\//)).toHaveLength(1);
  });

  it("encodes the whole id, declares it by a YAML policy the serialiser made, then writes the value", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open();
    const id = 'a: "b" #c/d@e+f=g'; // a scalar that string-built YAML would break
    const v = secretValue("yaml");
    expect(await store.put(id, v)).toBe("created");
    expect(fake.requests.filter((r) => !r.url.startsWith("/authn/")).map((r) => [r.method, r.url, r.status])).toEqual([
      ["POST", "/secrets/acme/variable/a%3A%20%22b%22%20%23c%2Fd%40e%2Bf%3Dg", 404],
      ["POST", "/policies/acme/policy/root", 201],
      ["POST", "/secrets/acme/variable/a%3A%20%22b%22%20%23c%2Fd%40e%2Bf%3Dg", 201],
    ]);
    const [policy] = fake.calls("POST", /^\/policies\//);
    expect(policy?.contentType).toBe("application/x-yaml");
    expect(variablesOf(policy?.body.toString("utf8") ?? "")).toEqual([id]);
    expect(policy?.body.toString("utf8")).toBe(variablePolicy(id));
    expect(fake.valueOf(id)).toBe(v);
    expect((await store.get(id))?.value).toBe(v);
    // An update is one call: the variable is there, no policy load.
    const before = fake.requests.length;
    expect(await store.put(id, `${v}-2`)).toBe("updated");
    expect(fake.requests.slice(before).map((r) => [r.method, r.status])).toEqual([["POST", 201]]);
    expect(await store.get("a: ")).toBeUndefined();
  });

  it("lists the variables that hold a value from Conjur's resource list, under the branch, paged by offset", async () => {
    const fake = await conjur();
    fake.reset();
    for (const id of ["apps/llm/A", "apps/llm/B", "apps/llm/C", "apps/llm/team/D", "ROOT_ONE"]) {
      fake.seed(id, Buffer.from(`v-${id}`));
    }
    fake.variables.set("apps/llm/DECLARED_ONLY", []); // declared by a policy, never given a value
    const store = await open({ LLM_SECRETS_CYBERARK_POLICY_BRANCH: "apps/llm" });
    const { pages } = await listPages(store.list?.bind(store), { limit: 2 });
    // Conjur's pages of 2 (by id: ROOT_ONE first), each filtered to the branch's held variables:
    // ROOT_ONE is outside the branch, DECLARED_ONLY holds no value.
    expect(pages).toEqual([["A"], ["B", "C"], ["team/D"], []]);
    expect(fake.calls("GET", /^\/resources\//).map((r) => r.url)).toEqual(
      [0, 2, 4, 6].map((offset) => `/resources/acme/variable?limit=2&offset=${offset}`),
    );
    expect((await store.list?.({ limit: 10, prefix: "team/" }))?.names).toEqual(["team/D"]);
    expect(await codeOf(store.list?.({ limit: 2, cursor: "bm90LWEtbnVtYmVy" }) as Promise<unknown>)).toBe(
      "invalid_request",
    );
    // A cursor holding a negative offset: refused before Conjur is asked.
    const asked = fake.calls("GET", /^\/resources\//).length;
    const negative = Buffer.from("-2").toString("base64url");
    expect(await codeOf(store.list?.({ limit: 2, cursor: negative }) as Promise<unknown>)).toBe("invalid_request");
    expect(fake.calls("GET", /^\/resources\//)).toHaveLength(asked);

    // A server that caps the limit (api_resource_list_limit_max): its 422 names the cap, which each page then asks for,
    // without asking past it again.
    fake.listLimitMax = 3;
    fake.requests.length = 0;
    const capped = await listPages(store.list?.bind(store), { limit: 100 });
    expect(capped.pages.flat()).toEqual(["A", "B", "C", "team/D"]);
    expect(fake.calls("GET", /^\/resources\//).map((r) => [r.status, r.url])).toEqual([
      [422, "/resources/acme/variable?limit=100&offset=0"],
      [200, "/resources/acme/variable?limit=3&offset=0"],
      [200, "/resources/acme/variable?limit=3&offset=3"],
      [200, "/resources/acme/variable?limit=3&offset=6"],
    ]);
  });

  it("declares in the policy branch LLM_SECRETS_CYBERARK_POLICY_BRANCH names, where Conjur puts it", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open({ LLM_SECRETS_CYBERARK_POLICY_BRANCH: "/apps/llm/" });
    expect(store.keyOf("K")).toBe("apps/llm/K");
    const v = secretValue("branch");
    expect(await store.put("K", v)).toBe("created");
    expect(fake.calls("POST", /^\/policies\//)[0]?.url).toBe("/policies/acme/policy/apps%2Fllm");
    expect(fake.valueOf("apps/llm/K")).toBe(v);
    expect(fake.variables.has("K")).toBe(false);
    expect((await store.get("K"))?.value).toBe(v);
    // The branch trimmed of white space as of slashes.
    expect((await open({ LLM_SECRETS_CYBERARK_POLICY_BRANCH: " /apps/llm/ " })).keyOf("K")).toBe("apps/llm/K");
    // A branch that is not there stops the write, naming the branch.
    const missing = await open({ LLM_SECRETS_CYBERARK_POLICY_BRANCH: "nope" });
    expect(await codeOf(missing.put("K", v))).toBe("store_unavailable");
  });

  it("logs in afresh once on a 401 and tries the call once more", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open();
    const v = secretValue("relogin");
    await store.put("A", v);
    fake.revokeTokens();
    const before = fake.requests.length;
    expect((await store.get("A"))?.value).toBe(v);
    expect(fake.requests.slice(before).map((r) => [r.method, r.url.split("/")[1], r.status])).toEqual([
      ["GET", "secrets", 401],
      ["POST", "authn", 200],
      ["GET", "secrets", 200],
    ]);
    // A second 401 stands: backend_denied, after one login only.
    const again = fake.requests.length;
    fake.fail(2, 401, undefined, (r) => r.method === "GET");
    expect(await codeOf(store.get("A"))).toBe("backend_denied");
    expect(fake.requests.slice(again).filter((r) => r.url.startsWith("/authn/"))).toHaveLength(1);
  });

  it("concurrent calls share one login", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open();
    fake.seed("S", Buffer.from("seeded-value"));
    const reads = await Promise.all(Array.from({ length: 8 }, () => store.get("S")));
    expect(reads.map((r) => r?.value)).toEqual(Array(8).fill("seeded-value"));
    expect(fake.calls("POST", /^\/authn\//)).toHaveLength(1);
  });

  it("logs in again before a token ages out: after CYBERARK_REFRESH_INTERVAL (300 s), at most 6 minutes", async () => {
    const fake = await conjur();
    fake.reset();
    let clock = Date.now();
    fake.now = () => clock;
    const logins = () => fake.calls("POST", /^\/authn\//).length;
    fake.seed("R", Buffer.from("r-value"));

    const byDefault = await open({}, { now: () => clock });
    await byDefault.get("R");
    clock += 299_000;
    await byDefault.get("R");
    expect(logins()).toBe(1);
    clock += 2_000; // 301 s: the default interval is over
    await byDefault.get("R");
    expect(logins()).toBe(2);

    const short = await open({ CYBERARK_REFRESH_INTERVAL: "60" }, { now: () => clock });
    await short.get("R");
    clock += 61_000;
    await short.get("R");
    expect(logins()).toBe(4);

    // Longer than Conjur's 8 minutes: capped at 6, so the token is never sent in its last 2.
    const long = await open({ CYBERARK_REFRESH_INTERVAL: "3600" }, { now: () => clock });
    await long.get("R");
    clock += 359_000;
    await long.get("R");
    expect(logins()).toBe(5);
    clock += 2_000;
    await long.get("R");
    expect(logins()).toBe(6);
    expect(fake.requests.filter((r) => r.status === 401)).toEqual([]);
  });

  it("tries a policy load again on 409 while another load runs, and gives up as backend_unavailable", async () => {
    const fake = await conjur();
    fake.reset();
    fake.policyLoadMs = 300;
    // Two processes (two stores) declaring at once: one load runs, the other meets 409 and waits.
    const patient = { tuning: { policyBackoffMs: 100 } };
    const [one, two] = [await open({}, patient), await open({}, patient)];
    await two.get("WARM"); // logged in already: its load comes while the first one runs
    const [a, b] = [secretValue("one"), secretValue("two")];
    const first = one.put("ONE", a);
    await until("the first policy load", () => fake.calls("POST", /^\/policies\//).length === 1);
    expect(await Promise.all([first, two.put("TWO", b)])).toEqual(["created", "created"]);
    const loads = fake.calls("POST", /^\/policies\//);
    expect(loads.filter((r) => r.status === 409).length).toBeGreaterThan(0);
    expect(loads.filter((r) => r.status === 201)).toHaveLength(2);
    expect([fake.valueOf("ONE"), fake.valueOf("TWO")]).toEqual([a, b]);

    // Within one store, loads go one at a time: no 409 of its own making.
    fake.reset();
    const store = await open();
    const names = ["P1", "P2", "P3", "P4"];
    expect(await Promise.all(names.map((n) => store.put(n, `v-${n}`)))).toEqual(Array(4).fill("created"));
    expect(fake.calls("POST", /^\/policies\//).map((r) => r.status)).toEqual([201, 201, 201, 201]);

    // Conjur's Retry-After is waited for; one longer than policyMaxWaitMs gives up at once, passing it on.
    fake.reset();
    fake.fail(1, 409, "8", (r) => r.url.startsWith("/policies/"));
    const told = await open({}, { tuning: { policyBackoffMs: 10, policyMaxWaitMs: 3000 } });
    const refused = await told.put("LATER", "v").then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toMatchObject({ code: "backend_unavailable", details: { retryAfter: 8 } });
    expect(fake.calls("POST", /^\/policies\//)).toHaveLength(1);
    fake.fail(1, 409, "1", (r) => r.url.startsWith("/policies/"));
    const hasty = await open({}, { tuning: { policyBackoffMs: 10, policyMaxWaitMs: 500 } });
    expect(await codeOf(hasty.put("LATER", "v"))).toBe("backend_unavailable"); // 1 s is past its 500 ms
    fake.fail(1, 409, "1", (r) => r.url.startsWith("/policies/"));
    expect(await told.put("LATER", "v")).toBe("created"); // 1 s is within its 3 s: waited, then loaded

    // Always 409: 5 tries, then backend_unavailable, and no value written.
    fake.reset();
    fake.fail(5, 409, undefined, (r) => r.url.startsWith("/policies/"));
    const busy = await open();
    expect(await codeOf(busy.put("BUSY", "v"))).toBe("backend_unavailable");
    expect(fake.calls("POST", /^\/policies\//)).toHaveLength(5);
    expect(fake.variables.has("BUSY")).toBe(false);
  });

  it("says backend_denied when a variable it declared stays out of sight (Conjur's 404 for a variable the login cannot see)", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open();
    let writes = 0;
    fake.fail(1, 404, undefined, (r) => r.method === "POST" && r.url.startsWith("/secrets/") && ++writes === 2);
    const failure = await store.put("HIDDEN", secretValue("hidden")).then(
      () => undefined,
      (err: unknown) => err as SecretsError,
    );
    expect(failure?.code).toBe("backend_denied");
    expect(failure?.message).toMatch(/grant it read and update on the variables of its policy branch/);
    expect(fake.calls("POST", /^\/policies\//)).toHaveLength(1);
  });

  it("refuses deletes with not_supported, calling nothing", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open();
    await store.put("D", "kept");
    const before = fake.requests.length;
    expect(await codeOf(store.delete("D"))).toBe("not_supported");
    expect(fake.requests.length).toBe(before);
    expect((await store.get("D"))?.value).toBe("kept");
  });

  it("refuses blank values before any call, and reports a value that is not UTF-8 as store_corrupt", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open();
    for (const blank of ["", " ", "\n\t "]) expect(await codeOf(store.put("B", blank))).toBe("invalid_request");
    expect(fake.requests).toEqual([]);
    fake.seed("BIN", Buffer.from([0x61, 0xff, 0xfe]));
    expect(await codeOf(store.get("BIN"))).toBe("store_corrupt");
  });

  it("maps faults to the SPEC codes, Retry-After kept", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open();
    await store.put("F", "v");
    for (const [status, code] of [
      [403, "backend_denied"],
      [429, "backend_unavailable"],
      [500, "backend_unavailable"],
      [503, "backend_unavailable"],
    ] as const) {
      fake.fail(1, status, "4");
      const err = await store.get("F").catch((e: unknown) => e);
      expect(await codeOf(Promise.reject(err)), String(status)).toBe(code);
      if (code === "backend_unavailable")
        expect((err as { details: { retryAfter?: number } }).details.retryAfter).toBe(4);
      fake.fail(1, status, "4", (r) => r.method === "POST" && r.url.startsWith("/secrets/"));
      expect(await codeOf(store.put("F", "w")), `put ${status}`).toBe(code);
    }
    // A refused login (wrong API key) is backend_denied, and nothing else is called.
    const wrong = await open({ CYBERARK_API_KEY: "not-the-key-0000" });
    const before = fake.requests.length;
    expect(await codeOf(wrong.get("F"))).toBe("backend_denied");
    expect(fake.requests.slice(before).map((r) => r.url.split("/")[1])).toEqual(["authn"]);
    expectNoValueIn(logs, [CYBERARK_LOGIN.apiKey]);
  });

  it("presents CYBERARK_CLIENT_CERT and CYBERARK_CLIENT_KEY (mutual TLS) and logs in with the API key", async () => {
    const fake = await conjur();
    fake.reset();
    const pki = injectPki("testPki");
    const certificate = { CYBERARK_CLIENT_CERT: pki.clientCertFile, CYBERARK_CLIENT_KEY: pki.clientKeyFile };
    const store = await open(certificate);
    const v = secretValue("mtls");
    expect(await store.put("M", v)).toBe("created");
    expect((await store.get("M"))?.value).toBe(v);
    const [login] = fake.calls("POST", /^\/authn\//);
    expect(login?.url).toBe("/authn/acme/host%2Fapp%201/authenticate");
    expect(login?.clientCertificate).toBe(true);
    expect(login?.body.toString("utf8")).toBe(CYBERARK_LOGIN.apiKey);
    expect(fake.requests.every((r) => r.clientCertificate)).toBe(true);
    // Conjur's authn takes the API key, not the certificate: without the key (an empty body) or
    // with a wrong one, the login is refused, whatever the login and the certificate.
    for (const login of [CYBERARK_LOGIN.login, "host/cert-app"]) {
      for (const apiKey of [null, "x-key-not-valid"]) {
        const before = fake.requests.length;
        const refused = await open({ ...certificate, CYBERARK_USERNAME: login, CYBERARK_API_KEY: apiKey });
        expect(await codeOf(refused.get("M")), `${login} ${apiKey}`).toBe("backend_denied");
        const logins = fake.requests.slice(before).filter((r) => r.url.startsWith("/authn/"));
        expect(logins.map((r) => [r.clientCertificate, r.status])).toEqual([[true, 401]]);
      }
    }
    // An unreadable certificate stops the start, naming the variable.
    await expect(
      open({ CYBERARK_CLIENT_CERT: "/nonexistent/cert.pem", CYBERARK_CLIENT_KEY: pki.clientKeyFile }),
    ).rejects.toThrow(/CYBERARK_CLIENT_CERT: cannot read the file \(ENOENT\)/);
  });

  it("a client certificate renewed on disk is the one the next login presents (LiteLLM makes its client at each login)", async () => {
    const fake = await conjur();
    fake.reset();
    const pki = injectPki("testPki");
    const dir = await tempDir();
    const certFile = join(dir, "client.pem");
    const keyFile = join(dir, "client-key.pem");
    await copyFile(pki.clientCertFile, certFile);
    await copyFile(pki.clientKeyFile, keyFile);
    const store = await open({ CYBERARK_CLIENT_CERT: certFile, CYBERARK_CLIENT_KEY: keyFile });
    const v = secretValue("rotated-cert");
    expect(await store.put("R", v)).toBe("created");
    const logins = () => fake.calls("POST", /^\/authn\//);
    expect(logins().map((r) => r.presented)).toEqual([fingerprintOf(pki.clientCertFile)]);

    // The rotation tool writes the renewed pair in place; the token then ends (here: revoked).
    const renewed = await makeCertificate(await tempDir());
    await copyFile(renewed.certFile, certFile);
    await copyFile(renewed.keyFile, keyFile);
    fake.revokeTokens();
    const before = fake.requests.length;
    expect((await store.get("R"))?.value).toBe(v);
    const after = fake.requests.slice(before);
    // The refused read, the fresh login and the read again: the last two over the renewed pair.
    expect(after.map((r) => [r.url.split("/")[1], r.status, r.presented === fingerprintOf(renewed.certFile)])).toEqual([
      ["secrets", 401, false],
      ["authn", 200, true],
      ["secrets", 200, true],
    ]);
    await store.close?.();
  });

  it("CYBERARK_SSL_VERIFY=false turns verification off for this store's outbound agent only", async () => {
    const dir = await tempDir();
    const untrusted = await makeCertificate(dir);
    const { readFile } = await import("node:fs/promises");
    const { FakeConjur } = await import("../fakes/cyberark");
    const fake = await FakeConjur.start({ key: await readFile(untrusted.keyFile), cert: Buffer.from(untrusted.cert) });
    try {
      fake.seed("T", Buffer.from("tls-value"));
      const deps = { log, now: Date.now };
      const verifying = await openCyberArkStore(envFor(fake), deps);
      expect(await codeOf(verifying.get("T"))).toBe("store_unavailable"); // the certificate is not trusted
      const off = await openCyberArkStore(envFor(fake, { CYBERARK_SSL_VERIFY: " FALSE " }), deps);
      expect((await off.get("T"))?.value).toBe("tls-value");
      expect(logs.some((l) => l.includes("CYBERARK_SSL_VERIFY=false"))).toBe(true);
      // Explicitly on wins over a general ssl_verify: false.
      const on = await openCyberArkStore(envFor(fake, { CYBERARK_SSL_VERIFY: "true" }), {
        ...deps,
        outbound: { verify: false },
      });
      expect(await codeOf(on.get("T"))).toBe("store_unavailable");
    } finally {
      await fake.close();
    }
  });

  it("names missing and invalid settings", () => {
    const issues = (env: Record<string, string>) => {
      const parsed = z.safeParse(CyberArkSettings, { config: {}, env });
      return parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    };
    expect(issues({})).toEqual([
      "env.CYBERARK_API_KEY: set the API key: Conjur's authn takes it (CYBERARK_CLIENT_CERT and CYBERARK_CLIENT_KEY only add mutual TLS)",
    ]);
    // Conjur's authn takes the API key only: a client certificate (whole or half) does not stand in.
    const certificateOnly =
      "env.CYBERARK_API_KEY: set CYBERARK_API_KEY: Conjur's authn takes the API key; the client certificate only adds mutual TLS";
    expect(issues({ CYBERARK_CLIENT_CERT: "/c.pem", CYBERARK_CLIENT_KEY: "/k.pem" })).toEqual([certificateOnly]);
    expect(issues({ CYBERARK_CLIENT_CERT: "/c.pem" })).toEqual([certificateOnly]);
    expect(issues({ CYBERARK_CLIENT_KEY: "/k.pem" })).toEqual([certificateOnly]);
    expect(issues({ CYBERARK_API_KEY: "k", CYBERARK_CLIENT_CERT: "/c.pem", CYBERARK_CLIENT_KEY: "/k.pem" })).toEqual(
      [],
    );
    expect(issues({ CYBERARK_API_KEY: "k", CYBERARK_SSL_VERIFY: " FALSE " })).toEqual([]); // trimmed, any case
    expect(issues({ CYBERARK_API_KEY: "k", CYBERARK_SSL_VERIFY: "0" })).toEqual([
      "env.CYBERARK_SSL_VERIFY: expected true or false",
    ]);
    expect(issues({ CYBERARK_API_KEY: "k", CYBERARK_REFRESH_INTERVAL: "5m" })).toEqual([
      "env.CYBERARK_REFRESH_INTERVAL: expected a whole number of seconds",
    ]);
    expect(issues({ CYBERARK_API_KEY: "k", CYBERARK_API_BASE: "conjur.example.com" })).toEqual([
      "env.CYBERARK_API_BASE: expected an http:// or https:// URL without a query",
    ]);
    expect(issues({ CYBERARK_API_KEY: "k" })).toEqual([]);
  });

  it("keeps a token at least a minute and at most 6 minutes, whatever the interval", () => {
    expect(cyberArkConfigOf({ CYBERARK_REFRESH_INTERVAL: "0" }).tokenLifeMs).toBe(60_000);
    expect(cyberArkConfigOf({ CYBERARK_REFRESH_INTERVAL: "120" }).tokenLifeMs).toBe(120_000);
    expect(cyberArkConfigOf({ CYBERARK_REFRESH_INTERVAL: "86400" }).tokenLifeMs).toBe(360_000);
  });

  it("caches values for CYBERARK_REFRESH_INTERVAL, 300 s by default as in LiteLLM (not the general interval)", () => {
    const cacheOf = (env: Record<string, string>) =>
      loadSettings({
        env: {
          LLM_SECRETS_CONFIG: "general_settings:\n  key_management_system: cyberark\n",
          CYBERARK_API_KEY: "k",
          ...env,
        },
        stores: [cyberarkStore],
      }).cache.ttlSeconds;
    expect(cacheOf({})).toBe(300);
    expect(cacheOf({ SECRET_MANAGER_REFRESH_INTERVAL: "86400" })).toBe(300);
    expect(cacheOf({ CYBERARK_REFRESH_INTERVAL: "60" })).toBe(60);
  });

  it("serves the API through llm-secrets serve with LiteLLM's env names", async () => {
    const fake = await conjur();
    fake.reset();
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_system: cyberark\n  key_management_settings:\n    access_mode: read_and_write\n",
      {
        CYBERARK_API_BASE: fake.url,
        CYBERARK_ACCOUNT,
        CYBERARK_USERNAME: CYBERARK_LOGIN.login,
        CYBERARK_API_KEY: CYBERARK_LOGIN.apiKey,
        CYBERARK_REFRESH_INTERVAL: "300",
        NODE_EXTRA_CA_CERTS: injectPki("testPki").caFile,
      },
    );
    const v = secretValue("served");
    try {
      const put = await call("PUT", "/v1/secrets/OPENAI_API_KEY", { value: v });
      expect(put.status).toBe(201);
      expect(await put.json()).toMatchObject({ name: "OPENAI_API_KEY", created: true });
      expect(fake.valueOf("OPENAI_API_KEY")).toBe(v);
      expect(await (await call("GET", "/v1/secrets/OPENAI_API_KEY?refresh=true")).json()).toMatchObject({ value: v });
      const del = await call("DELETE", "/v1/secrets/OPENAI_API_KEY");
      expect(del.status).toBe(501);
      expect(await del.json()).toMatchObject({ error: { code: "not_supported" } });
      const blank = await call("PUT", "/v1/secrets/EMPTY", { value: "" });
      expect(blank.status).toBe(400);
      expect(await (await call("GET", "/v1/secrets/NOT_THERE")).json()).toMatchObject({ error: { code: "not_found" } });
    } finally {
      await server.stop();
    }
    expectNoValueIn([server.output, ...logs], [v, CYBERARK_LOGIN.apiKey]);
  });

  it("logs in as LiteLLM's defaults (account default, login admin) when CYBERARK_ACCOUNT and CYBERARK_USERNAME are unset", async () => {
    const fake = await conjur();
    fake.reset();
    const store = await open({ CYBERARK_ACCOUNT: null, CYBERARK_USERNAME: null });
    expect(await codeOf(store.get("A"))).toBe("backend_denied"); // the fake knows acme's host/app 1 only
    expect(fake.calls("POST", /^\/authn\//).map((r) => r.url)).toEqual(["/authn/default/admin/authenticate"]);
  });

  it("a client certificate set by half is ignored, with a warning naming the file that is missing", async () => {
    const fake = await conjur();
    fake.reset();
    const pki = injectPki("testPki");
    const lines: string[] = [];
    const store = await openCyberArkStore(
      envFor(fake, { CYBERARK_CLIENT_CERT: pki.clientCertFile }),
      { log: createLogger((line) => lines.push(line)), now: Date.now },
      FAST,
    );
    const warning = lines.find((l) => l.includes("a client certificate is set by half and ignored"));
    expect(warning).toBeDefined();
    expect(JSON.parse(warning as string)).toMatchObject({ level: "warn", missing: "CYBERARK_CLIENT_KEY" });
    expect(await store.put("HALF", secretValue("half"))).toBe("created");
    expect(fake.requests.some((r) => r.clientCertificate)).toBe(false);
  });

  it("lists only names llm-secrets takes, and reads a resource list that is not a list as store_corrupt", async () => {
    const fake = await conjur();
    fake.reset();
    for (const id of ["GOOD", "has space", "x:y", "ok/nested"]) fake.seed(id, Buffer.from(`v-${id}`));
    const store = await open();
    expect((await store.list?.({ limit: 10 }))?.names).toEqual(["GOOD", "ok/nested"]);
    // A cap of two digits, as Conjur's 422 names it, is the page asked for next.
    fake.listLimitMax = 25;
    fake.requests.length = 0;
    expect((await store.list?.({ limit: 100 }))?.names).toEqual(["GOOD", "ok/nested"]);
    expect(fake.calls("GET", /^\/resources\//).map((r) => [r.status, r.url])).toEqual([
      [422, "/resources/acme/variable?limit=100&offset=0"],
      [200, "/resources/acme/variable?limit=25&offset=0"],
    ]);
    fake.fail(1, 200, undefined, (r) => r.url.startsWith("/resources/")); // a JSON object, not a list
    expect(await codeOf(store.list?.({ limit: 10 }) as Promise<unknown>)).toBe("store_corrupt");
  });

  it("waits before each policy load again half of its backoff step fixed, the step doubling from policyBackoffMs", async () => {
    const fake = await conjur();
    fake.reset();
    const loads: number[] = [];
    const stamp = () => loads.push(performance.now()) > 0;
    fake.fail(5, 409, undefined, (r) => r.url.startsWith("/policies/") && stamp()); // no Retry-After: the backoff alone
    const store = await open({}, { tuning: { policyBackoffMs: 400, random: () => 0 } });
    expect(await codeOf(store.put("BACKOFF", "v"))).toBe("backend_unavailable");
    expect(loads).toHaveLength(5);
    const gaps = loads.slice(1).map((at, i) => at - (loads[i] as number));
    // The random half at 0: 200, 400, 800 and 1600 ms (a step twice as long would wait 3200 ms, past
    // policyMaxWaitMs, and give up after 4 loads).
    for (const [i, gap] of gaps.entries()) {
      expect(gap, `wait ${i + 1}`).toBeGreaterThanOrEqual(200 * 2 ** i - 5);
    }
  });
});
