// The Google deployment (infra/gcp), read with a real HCL parser (terraform validate cannot run
// here: providers cannot be downloaded): the two functions and their entry points, the push
// subscription's dead-letter policy, retention no longer than LLM_SECRETS_MAX_EVENT_AGE, the IAM
// roles (writes only under the prefix, none when read-only; every permission the store's calls
// need, checked by running the store against the Google fake), and the variables. Where the
// terraform CLI is installed, `terraform console` (which needs no provider) evaluates main.tf's
// locals too.
import { spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stripVTControlCharacters } from "node:util";
import { parse } from "@cdktf/hcl2json";
import { beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../core/src/log";
import { GoogleSecretManagerStore, googleSecretManagerStore } from "../../core/src/stores/google";
import { lazyFakeGoogle } from "../fakes/google";
import { tempDir } from "../helpers";

const DIR = join(import.meta.dirname, "../../infra/gcp");
const google = lazyFakeGoogle(tempDir);
type Blocks = Record<string, Record<string, Record<string, unknown>[]>>;
let main: { resource: Blocks; locals: Record<string, unknown>[] };
let variables: Record<string, Record<string, unknown>[]>;

beforeAll(async () => {
  main = (await parse("main.tf", await readFile(join(DIR, "main.tf"), "utf8"))) as typeof main;
  variables = (
    (await parse("variables.tf", await readFile(join(DIR, "variables.tf"), "utf8"))) as { variable: typeof variables }
  ).variable;
  await parse("outputs.tf", await readFile(join(DIR, "outputs.tf"), "utf8"));
});

/** A Terraform interpolation as the parser writes it: `${expr}`. */
function hcl(expr: string): string {
  return `\${${expr}}`;
}

function resource(type: string, name: string): Record<string, unknown> {
  const block = main.resource[type]?.[name]?.[0];
  if (!block) throw new Error(`no ${type}.${name}`);
  return block;
}

/** The permission Google checks for each Secret Manager RPC (cloud.google.com/secret-manager/docs/access-control). */
const RPC_PERMISSION: Record<string, string> = {
  AccessSecretVersion: "secretmanager.versions.access",
  GetSecret: "secretmanager.secrets.get",
  ListSecrets: "secretmanager.secrets.list",
  CreateSecret: "secretmanager.secrets.create",
  UpdateSecret: "secretmanager.secrets.update",
  DeleteSecret: "secretmanager.secrets.delete",
  AddSecretVersion: "secretmanager.versions.add",
  GetSecretVersion: "secretmanager.versions.get",
  ListSecretVersions: "secretmanager.versions.list",
  DestroySecretVersion: "secretmanager.versions.destroy",
};

/** The Secret Manager permissions of the predefined roles main.tf uses (Google's role reference). */
const PREDEFINED: Record<string, string[]> = {
  "roles/secretmanager.secretAccessor": ["secretmanager.versions.access"],
  "roles/secretmanager.viewer": [
    "secretmanager.locations.get",
    "secretmanager.locations.list",
    "secretmanager.secrets.get",
    "secretmanager.secrets.getIamPolicy",
    "secretmanager.secrets.list",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
  ],
};

/** The project-level grants to the functions' account: role, and whether a condition narrows it. */
function members(): { role: string; conditioned: boolean; condition?: string }[] {
  return Object.values(main.resource.google_project_iam_member ?? {})
    .flat()
    .map((m) => {
      const condition = (m.condition as { expression: string }[] | undefined)?.[0]?.expression;
      return { role: String(m.role), conditioned: m.condition !== undefined, condition };
    });
}

/** Terraform's replace(): a pattern in slashes is a regular expression (every match replaced), else a literal. */
function tfReplace(text: string, pattern: string, replacement: string): string {
  const regex = /^\/(.*)\/$/.exec(pattern);
  return regex ? text.replace(new RegExp(regex[1] as string, "g"), replacement) : text.split(pattern).join(replacement);
}

/**
 * The interpolations main.tf's IAM uses, evaluated: the project's number (here the fake's project,
 * which the store's resource names carry) and replace() of a variable or of `name`.
 */
function evaluate(text: string, project: string, vars: Record<string, string>): string {
  return text.replace(/\$\{([^}]*)\}/g, (_, expr: string) => {
    if (expr === "data.google_project.this.number") return project;
    if (expr in vars) return vars[expr] as string;
    const call = /^replace\(([\w.]+), "(.*)", "(.*)"\)$/.exec(expr);
    const value = call ? vars[call[1] as string] : undefined;
    if (!call || value === undefined) throw new Error(`cannot evaluate \${${expr}}`);
    return tfReplace(value, call[2] as string, call[3] as string);
  });
}

/** Whether an IAM condition of main.tf (startsWith clauses joined by ||, nothing else) holds for a resource name. */
function holds(condition: string, resourceName: string, project: string, vars: Record<string, string>): boolean {
  return evaluate(condition, project, vars)
    .split(" || ")
    .some((clause) => {
      const m = /^resource\.name\.startsWith\("([^"]*)"\)$/.exec(clause);
      if (!m) throw new Error(`not a startsWith clause: ${clause}`);
      return resourceName.startsWith(m[1] as string);
    });
}

/** local.prefix_secret_id for a prefix: main.tf's expression (asserted whole), evaluated. */
function prefixSecretId(prefix: string): string {
  const local = (main.locals[0] as { prefix_secret_id: string }).prefix_secret_id;
  const m = /^\$\{replace\("\$\{trimsuffix\(var\.prefix_for_stored_virtual_keys, "\/"\)\}\/", "(.*)", "(.*)"\)\}$/.exec(
    local,
  );
  if (!m) throw new Error(`local.prefix_secret_id: ${local}`);
  return tfReplace(`${prefix.replace(/\/$/, "")}/`, m[1] as string, m[2] as string);
}

/** The secret ids the hosted names are granted on (local.hosted_secret_ids, evaluated). */
function hostedSecretIds(hostedKeys: string[]): string[] {
  const local = (main.locals[0] as { hosted_secret_ids: string }).hosted_secret_ids;
  const m = /^\$\{toset\(\[for name in var\.hosted_keys : (replace\(name, ".*", ".*"\))\]\)\}$/.exec(local);
  if (!m) throw new Error(`local.hosted_secret_ids: ${local}`);
  return hostedKeys.map((name) => evaluate(`\${${m[1]}}`, "", { name }));
}

type ReachCase = { prefix: string; master: string; hosted: string[]; salt?: string; previous?: string };
/** Prefixes, master key secrets and hosted names, and the ids of those the prefix's grants would reach. */
const REACH_CASES: [ReachCase, string[]][] = [
  [{ prefix: "litellm/", master: "llm-secrets-master-key", hosted: [] }, []],
  [{ prefix: "llm-secrets/", master: "llm-secrets-master-key", hosted: [] }, ["llm-secrets-master-key"]],
  [{ prefix: "llm.secrets", master: "llm-secrets-master-key", hosted: [] }, ["llm-secrets-master-key"]],
  [{ prefix: "llm", master: "llm-secrets-master-key", hosted: ["OPENAI_API_KEY"] }, ["llm-secrets-master-key"]],
  [
    { prefix: "litellm/", master: "litellm-master", hosted: ["litellm/x", "OPENAI_API_KEY"] },
    ["litellm-master", "litellm-x"],
  ],
  [{ prefix: "litellm/", master: "llm-secrets-master-key", hosted: ["litellm.y", "litellmz"] }, ["litellm-y"]],
  // The salt keys' secrets too: key events could overwrite them.
  [{ prefix: "litellm/", master: "llm-secrets-master-key", hosted: [], salt: "litellm-salt" }, ["litellm-salt"]],
  [
    { prefix: "llm", master: "mk", hosted: [], salt: "llm-salt", previous: "llm-secrets-previous" },
    ["llm-salt", "llm-secrets-previous"],
  ],
  [{ prefix: "litellm/", master: "mk", hosted: [], salt: "llm-secrets-salt", previous: "mk" }, []],
];

/** local.prefix_reaches (asserted whole in its test), evaluated. */
function prefixReaches(c: ReachCase): string[] {
  const prefix = prefixSecretId(c.prefix);
  const keys = [c.salt, c.previous].filter((id): id is string => id !== undefined);
  return [...new Set([c.master, ...hostedSecretIds(c.hosted), ...keys])].filter((id) => id.startsWith(prefix)).sort();
}

/** The Terraform CLI, when installed: `terraform console` evaluates expressions with no provider. */
const TERRAFORM = spawnSync("terraform", ["version"], { encoding: "utf8" }).status === 0 ? "terraform" : undefined;

/**
 * `expr` evaluated by Terraform itself, in a module of variables.tf and main.tf's `locals` (their
 * text as written), with the variables `vars` (project and source_bucket set to placeholders).
 */
async function terraformEval(expr: string, locals: string[], vars: Record<string, unknown>): Promise<unknown> {
  const dir = await tempDir();
  await writeFile(join(dir, "variables.tf"), await readFile(join(DIR, "variables.tf"), "utf8"));
  const text = (name: string) => {
    const local = (main.locals[0] as Record<string, unknown>)[name];
    // An object constructor as the parser writes it: JSON, which HCL reads as an object too.
    if (typeof local === "object" && local !== null) return JSON.stringify(local);
    const value = String(local);
    if (!value.startsWith("${") || !value.endsWith("}")) throw new Error(`local.${name}: ${value}`);
    return value.slice(2, -1);
  };
  await writeFile(join(dir, "locals.tf"), `locals {\n${locals.map((n) => `  ${n} = ${text(n)}\n`).join("")}}\n`);
  await writeFile(
    join(dir, "terraform.tfvars.json"),
    JSON.stringify({ project: "p", source_bucket: "b", master_key_version: "1", ...vars }),
  );
  const run = spawnSync(TERRAFORM as string, ["console"], {
    cwd: dir,
    input: `jsonencode(${expr})\n`,
    encoding: "utf8",
  });
  // A variable's failed validation is an error on stderr, with status 0 and a warning on stdout.
  const stderr = stripVTControlCharacters(run.stderr);
  if (run.status !== 0 || stderr.includes("Error: ")) throw new Error(`terraform console: ${stderr}`);
  return JSON.parse(JSON.parse(run.stdout.trim()) as string);
}

/** A role's permissions: a predefined one's, or a custom role's from main.tf. */
function permissionsOf(role: string): string[] {
  const custom = /^\$\{google_project_iam_custom_role\.(\w+)\[0\]\.name\}$/.exec(role);
  if (custom) return resource("google_project_iam_custom_role", custom[1] as string).permissions as string[];
  return PREDEFINED[role] ?? [];
}

describe("the Google deployment", () => {
  it("runs the http and keyEvents targets on Node 22 gen2 functions, as the functions' own account", () => {
    for (const [name, entry] of [
      ["http", "http"],
      ["key_events", "keyEvents"],
    ]) {
      const fn = resource("google_cloudfunctions2_function", name as string);
      const build = (fn.build_config as Record<string, unknown>[])[0] as Record<string, unknown>;
      expect(build).toMatchObject({ runtime: "nodejs22", entry_point: entry });
      const service = (fn.service_config as Record<string, unknown>[])[0] as Record<string, unknown>;
      expect(service.service_account_email).toBe(hcl("google_service_account.functions.email"));
      // The keys, from Secret Manager at the versions named (local.secret_environment, asserted below).
      expect(service.secret_environment_variables).toBeUndefined();
      expect((service.dynamic as { secret_environment_variables: unknown[] }).secret_environment_variables).toEqual([
        {
          for_each: hcl("local.secret_environment"),
          content: [
            {
              key: hcl("secret_environment_variables.key"),
              project_id: hcl("var.project"),
              secret: hcl("secret_environment_variables.value.secret"),
              version: hcl("secret_environment_variables.value.version"),
            },
          ],
        },
      ]);
    }
  });

  it("delivers key events through a push subscription with a dead-letter topic after 20 attempts, kept 6 days at most", () => {
    const sub = resource("google_pubsub_subscription", "key_events");
    expect((sub.dead_letter_policy as Record<string, unknown>[])[0]).toMatchObject({
      dead_letter_topic: hcl("google_pubsub_topic.dead_letters.id"),
      max_delivery_attempts: 20,
    });
    const uri = "google_cloudfunctions2_function.key_events.service_config[0].uri";
    const push = (sub.push_config as Record<string, unknown>[])[0] as Record<string, unknown>;
    // The topic in the path, where functions-framework looks for it; the token's audience the bare URL.
    expect(push.push_endpoint).toBe(
      `${hcl(uri)}/projects/${hcl("var.project")}/topics/${hcl("google_pubsub_topic.key_events.name")}`,
    );
    expect((push.oidc_token as Record<string, unknown>[])[0]?.audience).toBe(hcl(uri));
    // No redelivery while an attempt still runs: the ack deadline is the function's timeout.
    const timeoutOf = (name: string) =>
      (
        (resource("google_cloudfunctions2_function", name).service_config as Record<string, unknown>[])[0] as Record<
          string,
          unknown
        >
      ).timeout_seconds;
    expect(sub.ack_deadline_seconds).toBe(timeoutOf("key_events"));
    // Forward may wait 600 s for an upstream: the HTTP function's timeout is longer.
    expect(timeoutOf("http") as number).toBeGreaterThan(600);
    // Neither subscription is deleted after 31 idle days (Pub/Sub's default).
    for (const name of ["key_events", "dead_letters"]) {
      expect(resource("google_pubsub_subscription", name).expiration_policy, name).toEqual([{ ttl: "" }]);
    }
    expect(JSON.stringify(main.locals)).toContain('"max_event_age":"518400s"');
    for (const [type, name] of [
      ["google_pubsub_topic", "key_events"],
      ["google_pubsub_topic", "dead_letters"],
      ["google_pubsub_subscription", "key_events"],
      ["google_pubsub_subscription", "dead_letters"],
    ]) {
      expect(resource(type as string, name as string).message_retention_duration, name).toBe(
        hcl("local.max_event_age"),
      );
    }
  });

  it("grants value reads only under the prefix and on each hosted name's secret, metadata project-wide, writes only under the prefix and only when access_mode allows", () => {
    // Values: under the prefix by a condition on the secret's name, as the store spells it in a secret id.
    const reader = resource("google_project_iam_member", "secret_reader");
    expect(reader.role).toBe("roles/secretmanager.secretAccessor");
    expect((reader.condition as { expression: string }[]).map((c) => c.expression)).toEqual([
      `resource.name.startsWith("projects/${hcl("data.google_project.this.number")}/secrets/${hcl("local.prefix_secret_id")}")`,
    ]);
    // ...and on each hosted name's own secret; the function serves exactly those names.
    expect(resource("google_secret_manager_secret_iam_member", "hosted_reader")).toMatchObject({
      for_each: hcl("local.hosted_secret_ids"),
      secret_id: hcl("each.value"),
      role: "roles/secretmanager.secretAccessor",
      member: `serviceAccount:${hcl("google_service_account.functions.email")}`,
    });
    expect(variables.hosted_keys?.[0]).toMatchObject({ type: hcl("list(string)"), default: [] });
    expect(main.locals[0]?.config).toContain("hosted_keys = var.hosted_keys");
    // No project-wide grant reads a value.
    for (const m of members()) {
      if (permissionsOf(m.role).includes("secretmanager.versions.access")) expect(m.conditioned, m.role).toBe(true);
    }
    // Metadata (never a value) of every secret: listing.
    expect(resource("google_project_iam_member", "secret_metadata_reader").role).toBe("roles/secretmanager.viewer");
    for (const name of ["secret_writer", "secret_creator"]) {
      expect(resource("google_project_iam_member", name).count).toBe(hcl("local.writes ? 1 : 0"));
    }
    const writer = resource("google_project_iam_member", "secret_writer");
    // The whole condition, exactly: the secret's full name starts with the project's, then the prefix
    // as the store spells it in a secret id (`/` as `-`). Nothing else may widen it (`true || ...`).
    expect((writer.condition as { expression: string }[]).map((c) => c.expression)).toEqual([
      `resource.name.startsWith("projects/${hcl("data.google_project.this.number")}/secrets/${hcl("local.prefix_secret_id")}")`,
    ]);
    const roles = members().map((m) => m.role);
    expect(roles.every((r) => !r.includes("owner") && !r.includes("editor") && !r.includes("admin"))).toBe(true);
  });

  it("reads no value under the prefix when hosted_keys are given: the API serves those names only (403 not_hosted), and key events read none", () => {
    // Key events' writes read no value (the store's put and delete call no AccessSecretVersion: the
    // store run against the fake, below), so only the API's reads need the grant.
    const count = resource("google_project_iam_member", "secret_reader").count;
    expect(count).toBe(hcl("length(var.hosted_keys) > 0 ? 0 : 1"));
    // The hosted names keep their own grants, and writes stay under the prefix.
    expect(resource("google_secret_manager_secret_iam_member", "hosted_reader").for_each).toBe(
      hcl("local.hosted_secret_ids"),
    );
    expect(resource("google_project_iam_member", "secret_writer").count).toBe(hcl("local.writes ? 1 : 0"));
  });

  it.skipIf(!TERRAFORM)(
    "makes the prefix's value grant without hosted_keys only (its count, evaluated by Terraform)",
    async () => {
      const count = String(resource("google_project_iam_member", "secret_reader").count).slice(2, -1);
      expect(await terraformEval(count, [], {})).toBe(1);
      expect(await terraformEval(count, [], { hosted_keys: ["OPENAI_API_KEY"] })).toBe(0);
    },
    60_000,
  );

  it("makes no KMS key, key ring or decrypter grant, and sets no GOOGLE_KMS_RESOURCE_NAME: the store is google_secret_manager, and only google_kms reads that", async () => {
    expect(main.locals[0]?.config).toContain('key_management_system = "google_secret_manager"');
    expect(Object.keys(main.resource).filter((type) => type.startsWith("google_kms"))).toEqual([]);
    expect(Object.keys((main.locals[0] as { environment: object }).environment)).not.toContain(
      "GOOGLE_KMS_RESOURCE_NAME",
    );
    expect(members().map((m) => m.role)).not.toContain("roles/cloudkms.cryptoKeyDecrypter");
    const outputs = (await parse("outputs.tf", await readFile(join(DIR, "outputs.tf"), "utf8"))) as {
      output: Record<string, unknown>;
    };
    expect(Object.keys(outputs.output).sort()).toEqual(["http_url", "key_events_topic"]);
    const text = await readFile(join(DIR, "main.tf"), "utf8");
    expect(text).not.toMatch(/kms/i);
  });

  it("enables the APIs its resources call before them (a new project has them off), and leaves them on at destroy", async () => {
    const apis = resource("google_project_service", "apis");
    expect(apis).toMatchObject({ project: hcl("var.project"), service: hcl("each.value"), disable_on_destroy: false });
    const services = [...String(apis.for_each).matchAll(/"([a-z]+\.googleapis\.com)"/g)].map((m) => m[1]);
    expect(services).toEqual([
      "artifactregistry.googleapis.com",
      "cloudbuild.googleapis.com",
      "cloudfunctions.googleapis.com",
      "iam.googleapis.com",
      "pubsub.googleapis.com",
      "run.googleapis.com",
      "secretmanager.googleapis.com",
    ]);
    // Every resource that calls one without naming another that does: the rest follow them.
    for (const [type, name] of [
      ["google_service_account", "functions"],
      ["google_project_iam_custom_role", "writer"],
      ["google_project_iam_custom_role", "creator"],
      ["google_pubsub_topic", "key_events"],
      ["google_pubsub_topic", "dead_letters"],
      ["google_cloudfunctions2_function", "http"],
      ["google_cloudfunctions2_function", "key_events"],
    ] as const) {
      expect(resource(type, name).depends_on, `${type}.${name}`).toContain(hcl("google_project_service.apis"));
    }
    // The README's first step turns on what Terraform enables them with, and Secret Manager for the
    // master key's secret made before the apply.
    const readme = await readFile(join(DIR, "../README.md"), "utf8");
    const google = readme.slice(readme.indexOf("## Google"), readme.indexOf("## Azure"));
    expect(google).toContain(
      "gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com secretmanager.googleapis.com",
    );
    expect(google.indexOf("gcloud services enable")).toBeLessThan(google.indexOf("gcloud secrets create"));
  });

  it("writes hosted_keys into the config only when names are given (as infra/aws): an empty list would serve no name", () => {
    // Once set, hosted_keys are the only names the API reads (virtual keys included: SPEC section 4).
    const config = String(main.locals[0]?.config);
    expect(config).toMatch(/\n\s+length\(var\.hosted_keys\) > 0 \? \{ hosted_keys = var\.hosted_keys \} : \{\},\n/);
    expect(config).not.toMatch(/^\s*hosted_keys\s*=\s*var\.hosted_keys\s*$/m);
  });

  it.skipIf(!TERRAFORM)(
    "leaves hosted_keys out of the function's config by default, and writes the names given (evaluated by Terraform)",
    async () => {
      const settings = async (vars: Record<string, unknown>) =>
        (
          (await terraformEval("yamldecode(local.config)", ["config"], vars)) as {
            general_settings: { key_management_settings: Record<string, unknown> };
          }
        ).general_settings.key_management_settings;
      const defaults = await settings({});
      expect(defaults).toMatchObject({ store_virtual_keys: true, prefix_for_stored_virtual_keys: "litellm/" });
      expect(Object.keys(defaults)).not.toContain("hosted_keys");
      expect((await settings({ hosted_keys: ["OPENAI_API_KEY", "team.azure/key"] })).hosted_keys).toEqual([
        "OPENAI_API_KEY",
        "team.azure/key",
      ]);
    },
    60_000,
  );

  it("names the prefix and the hosted names in IAM as the store spells them in a secret id (a / appended, every character outside [A-Za-z0-9_-] as -)", () => {
    const store = new GoogleSecretManagerStore({ client: {} as never, project: "p" });
    for (const prefix of ["litellm/", "litellm", "team.a/", "team@x+y=z/", "a/b.c/"]) {
      // The store's prefix ends in / (SPEC section 2); its secret ids map every other character.
      expect(prefixSecretId(prefix), prefix).toBe(store.keyOf(prefix.endsWith("/") ? prefix : `${prefix}/`));
    }
    const names = ["OPENAI_API_KEY", "team.azure/key", "a@b+c=d"];
    expect(hostedSecretIds(names)).toEqual(names.map((n) => store.keyOf(n)));
  });

  it("refuses a prefix whose secret ids would take in the master key's or a hosted name's secret (a precondition on the prefix grants)", () => {
    // The conditions reach every secret whose id starts with the prefix as a secret id, made here or
    // not: llm-secrets/ (llm-secrets-) would let key events overwrite llm-secrets-master-key.
    for (const name of ["secret_reader", "secret_writer"]) {
      const lifecycle = resource("google_project_iam_member", name).lifecycle as { precondition: unknown[] }[];
      expect(lifecycle?.[0]?.precondition, name).toEqual([
        expect.objectContaining({ condition: hcl("length(local.prefix_reaches) == 0") }),
      ]);
    }
    expect((main.locals[0] as { prefix_reaches: string }).prefix_reaches).toBe(
      hcl(
        "sort([for id in setunion([var.master_key_secret], local.hosted_secret_ids, local.key_secret_ids) : id if startswith(id, local.prefix_secret_id)])",
      ),
    );
    for (const [c, expected] of REACH_CASES) expect(prefixReaches(c), JSON.stringify(c)).toEqual(expected);
  });

  it.skipIf(!TERRAFORM)(
    "refuses such a prefix, and only such, as Terraform evaluates the precondition",
    async () => {
      type Lifecycle = { precondition: { condition: string }[] }[];
      const lifecycle = resource("google_project_iam_member", "secret_reader").lifecycle as Lifecycle;
      const condition = String(lifecycle[0]?.precondition[0]?.condition).slice(2, -1);
      for (const [c, expected] of REACH_CASES) {
        const vars = {
          prefix_for_stored_virtual_keys: c.prefix,
          master_key_secret: c.master,
          hosted_keys: c.hosted,
          ...(c.salt !== undefined && { salt_key_secret: c.salt, salt_key_version: "1" }),
          ...(c.previous !== undefined && { previous_salt_keys_secret: c.previous, previous_salt_keys_version: "1" }),
        };
        const locals = ["prefix_secret_id", "hosted_secret_ids", "key_secret_ids", "prefix_reaches"];
        expect(await terraformEval("local.prefix_reaches", locals, vars), JSON.stringify(c)).toEqual(expected);
        expect(await terraformEval(condition, locals, vars), JSON.stringify(c)).toBe(expected.length === 0);
      }
    },
    120_000,
  );

  it("grants every permission the store's calls need, where Google checks it (the store run against the fake)", async () => {
    const fake = await google();
    fake.reset();
    const url = new URL(fake.endpoint);
    const store = await googleSecretManagerStore.open(
      {
        config: {},
        env: {
          GOOGLE_SECRET_MANAGER_PROJECT_ID: fake.project,
          LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: { apiEndpoint: url.hostname, port: Number(url.port) },
        },
      } as never,
      { dataDir: "/nonexistent", env: {}, log: silentLogger, now: Date.now },
    );
    // What a deployment does: reads of hosted names, listing, key events' writes (new and existing)
    // and deletes.
    const hostedKeys = ["OPENAI_API_KEY", "team.azure/key"];
    for (const name of hostedKeys) await store.get(name);
    await store.put("litellm/k", "v1", { ifNewerThan: { at: 1_000, id: "e1" } });
    await store.put("litellm/k", "v2", { ifNewerThan: { at: 2_000, id: "e2" } });
    await store.get("litellm/k");
    await store.list?.({ limit: 10 });
    await store.delete("litellm/k", { ifNewerThan: { at: 3_000, id: "e3" } });
    await store.delete("litellm/never", { ifNewerThan: { at: 3_000, id: "e4" } });
    await store.close?.();

    const vars = { "local.prefix_secret_id": prefixSecretId("litellm/") };
    const hostedIds = hostedSecretIds(hostedKeys);
    const granted = members().map((m) => ({ ...m, permissions: permissionsOf(m.role) }));
    /** The grants of `permission` that reach the resource `name` (a project-level one, or one on a hosted secret). */
    const holders = (permission: string, name: string) => [
      ...granted
        .filter((g) => g.permissions.includes(permission))
        .filter((g) => g.condition === undefined || holds(g.condition, name, fake.project, vars))
        .map((g) => g.role),
      ...(PREDEFINED["roles/secretmanager.secretAccessor"]?.includes(permission)
        ? hostedIds
            .filter(
              (id) =>
                name === `projects/${fake.project}/secrets/${id}` ||
                name.startsWith(`projects/${fake.project}/secrets/${id}/`),
            )
            .map((id) => `secretAccessor on ${id}`)
        : []),
    ];
    const methods = [...new Set(fake.calls.map((c) => c.method))].sort();
    expect(methods.length).toBeGreaterThan(5);
    for (const call of fake.calls) {
      const permission = RPC_PERMISSION[call.method];
      expect(permission, `${call.method}: which permission Google checks for it`).toBeDefined();
      // Google checks creation and listing on the parent (the project), the rest on the secret or version.
      const name = String(
        call.request.name ?? (call.request.secret as { name?: string } | undefined)?.name ?? call.request.parent,
      );
      expect(holders(permission as string, name), `${call.method} on ${name} needs ${permission}`).not.toEqual([]);
    }
    // Writes and deletes read no value (so with hosted_keys the prefix needs no read grant): the one
    // read under the prefix is the explicit get.
    expect(
      fake
        .callsOf("AccessSecretVersion")
        .map((c) => c.request.name)
        .filter((n) => String(n).includes("/secrets/litellm-")),
    ).toEqual([`projects/${fake.project}/secrets/litellm-k/versions/latest`]);
    // Each hosted name was read on its own secret, and no value outside them and the prefix is readable.
    for (const id of ["OPENAI_API_KEY", "team-azure-key"]) {
      expect(fake.callsOf("AccessSecretVersion").map((c) => c.request.name)).toContain(
        `projects/${fake.project}/secrets/${id}/versions/latest`,
      );
    }
    for (const other of ["ANTHROPIC_API_KEY", "OPENAI_API_KEY_2", "litellm"]) {
      expect(
        holders("secretmanager.versions.access", `projects/${fake.project}/secrets/${other}/versions/latest`),
        other,
      ).toEqual([]);
    }
  });

  it("mounts the master key at the version master_key_version names (required, a number, never latest), so a rotation is a new revision every instance starts with", async () => {
    // Google resolves a secret variable when an instance starts: with "latest", warm instances
    // would keep the old key after a new version, new ones take the new one, and apply changes nothing.
    const text = await readFile(join(DIR, "main.tf"), "utf8");
    expect(text).not.toMatch(/"latest"\s*$/m);
    expect(text).not.toMatch(/version\s*=\s*"latest"/);
    const env = (main.locals[0] as { secret_environment: unknown }).secret_environment;
    expect(typeof env === "string" ? env : JSON.stringify(env)).toMatch(
      /LITELLM_MASTER_KEY"?\s*[=:]\s*\{\s*"?secret"?\s*[=:]\s*"?(\$\{)?var\.master_key_secret\}?"?,\s*"?version"?\s*[=:]\s*"?(\$\{)?var\.master_key_version\b/,
    );
    const version = variables.master_key_version?.[0] as Record<string, unknown>;
    expect(version).toBeDefined();
    expect(version.type).toBe(hcl("string"));
    expect(Object.keys(version)).not.toContain("default"); // required: no deploy falls back to latest
    const condition = String((version.validation as { condition: string }[])[0]?.condition);
    expect(condition).toBe(hcl('can(regex("^[1-9][0-9]*$", var.master_key_version))'));
    const pattern = new RegExp(/regex\("(.*)", var/.exec(condition)?.[1] as string);
    for (const [value, valid] of [
      ["1", true],
      ["12", true],
      ["latest", false],
      ["0", false],
      ["", false],
      ["1.5", false],
      ["projects/p/secrets/s/versions/3", false],
    ] as const) {
      expect(pattern.test(value), value).toBe(valid);
    }
    const readme = await readFile(join(DIR, "../README.md"), "utf8");
    const gcp = readme.slice(readme.indexOf("## Google"), readme.indexOf("## Azure"));
    expect(gcp).toContain("gcloud secrets versions add");
    expect(gcp).toMatch(/-var master_key_version=/);
  });

  it.skipIf(!TERRAFORM)(
    "takes master_key_version as a number only, and mounts the master key at it (evaluated by Terraform)",
    async () => {
      const mounted = (vars: Record<string, unknown>) =>
        terraformEval("local.secret_environment", ["secret_environment"], vars);
      for (const value of ["latest", "0", "", "projects/p/secrets/s/versions/3"]) {
        await expect(mounted({ master_key_version: value }), value).rejects.toThrow(
          /Invalid value for variable[\s\S]*master_key_version is a version number/,
        );
      }
      expect(await mounted({ master_key_version: "3" })).toEqual({
        LITELLM_MASTER_KEY: { secret: "llm-secrets-master-key", version: "3" },
      });
      // A number, as -var master_key_version=7 in a tfvars file may give it.
      expect(await mounted({ master_key_version: 7, master_key_secret: "mk" })).toEqual({
        LITELLM_MASTER_KEY: { secret: "mk", version: "7" },
      });
    },
    60_000,
  );

  it("mounts a salt key and previous salt keys only when given, as the master key (secrets at version numbers), which the functions' account may read", () => {
    const env = String((main.locals[0] as { secret_environment: unknown }).secret_environment);
    expect(env).toContain(
      "var.salt_key_secret == null ? {} : {\n      LITELLM_SALT_KEY = { secret = var.salt_key_secret, version = var.salt_key_version }\n    }",
    );
    expect(env).toContain(
      "var.previous_salt_keys_secret == null ? {} : {\n      LLM_SECRETS_PREVIOUS_SALT_KEYS = { secret = var.previous_salt_keys_secret, version = var.previous_salt_keys_version }\n    }",
    );
    // Optional (unset: the master key seals, as before), and never latest.
    for (const name of ["salt_key", "previous_salt_keys"]) {
      expect(variables[`${name}_secret`]?.[0], name).toMatchObject({ type: hcl("string"), default: null });
      const version = variables[`${name}_version`]?.[0] as Record<string, unknown>;
      expect(version, name).toMatchObject({ type: hcl("string"), default: null });
      expect((version.validation as { condition: string }[])[0]?.condition).toBe(
        hcl(`var.${name}_version == null || can(regex("^[1-9][0-9]*$", var.${name}_version))`),
      );
    }
    expect(resource("google_secret_manager_secret_iam_member", "salt_keys")).toMatchObject({
      for_each: hcl("local.key_secret_ids"),
      secret_id: hcl("each.value"),
      role: "roles/secretmanager.secretAccessor",
      member: `serviceAccount:${hcl("google_service_account.functions.email")}`,
    });
    expect((main.locals[0] as { key_secret_ids: string }).key_secret_ids).toBe(
      hcl("setsubtract(compact([var.salt_key_secret, var.previous_salt_keys_secret]), [var.master_key_secret])"),
    );
    for (const name of ["http", "key_events"]) {
      expect(resource("google_cloudfunctions2_function", name).depends_on, name).toContain(
        hcl("google_secret_manager_secret_iam_member.salt_keys"),
      );
    }
    const preconditions = (
      resource("google_cloudfunctions2_function", "http").lifecycle as { precondition: { condition: string }[] }[]
    )[0]?.precondition.map((p) => p.condition);
    expect(preconditions).toEqual([
      hcl("(var.salt_key_secret == null) == (var.salt_key_version == null)"),
      hcl("(var.previous_salt_keys_secret == null) == (var.previous_salt_keys_version == null)"),
      hcl("length(setintersection(local.key_secret_ids, local.hosted_secret_ids)) == 0"),
    ]);
  });

  it.skipIf(!TERRAFORM)(
    "mounts the salt keys only when given, at their version numbers, and refuses a secret without its version (evaluated by Terraform)",
    async () => {
      const mounted = (vars: Record<string, unknown>) =>
        terraformEval("local.secret_environment", ["secret_environment"], vars);
      const master = { LITELLM_MASTER_KEY: { secret: "llm-secrets-master-key", version: "1" } };
      // Unset: the functions' environment is the one before these variables existed.
      expect(await mounted({})).toEqual(master);
      expect(
        await mounted({
          salt_key_secret: "llm-secrets-salt-key",
          salt_key_version: "4",
          previous_salt_keys_secret: "llm-secrets-previous-salt-keys",
          previous_salt_keys_version: 2,
        }),
      ).toEqual({
        ...master,
        LITELLM_SALT_KEY: { secret: "llm-secrets-salt-key", version: "4" },
        LLM_SECRETS_PREVIOUS_SALT_KEYS: { secret: "llm-secrets-previous-salt-keys", version: "2" },
      });
      await expect(mounted({ salt_key_secret: "s", salt_key_version: "latest" })).rejects.toThrow(
        /salt_key_version is a version number/,
      );
      // The preconditions, as Terraform evaluates them.
      const lifecycle = resource("google_cloudfunctions2_function", "http").lifecycle as {
        precondition: { condition: string }[];
      }[];
      const conditions = (lifecycle[0]?.precondition ?? []).map((p) => p.condition.slice(2, -1));
      const holds = (vars: Record<string, unknown>) =>
        terraformEval(`[${conditions.join(", ")}]`, ["hosted_secret_ids", "key_secret_ids"], vars);
      expect(await holds({})).toEqual([true, true, true]);
      expect(await holds({ salt_key_secret: "s", salt_key_version: "1" })).toEqual([true, true, true]);
      expect(await holds({ salt_key_secret: "s" })).toEqual([false, true, true]);
      expect(await holds({ previous_salt_keys_version: "1" })).toEqual([true, false, true]);
      expect(
        await holds({ salt_key_secret: "SALT", salt_key_version: "1", hosted_keys: ["OPENAI_API_KEY", "SALT"] }),
      ).toEqual([true, true, false]);
      // The grant: the salt keys' secrets, not the master key's (granted on its own).
      expect(
        await terraformEval("local.key_secret_ids", ["key_secret_ids"], {
          salt_key_secret: "salt",
          salt_key_version: "1",
          previous_salt_keys_secret: "llm-secrets-master-key",
          previous_salt_keys_version: "1",
        }),
      ).toEqual(["salt"]);
    },
    120_000,
  );

  it("lets the callers of invoker_members invoke the HTTP function (roles/run.invoker on its service), no one by default", () => {
    const invoker = resource("google_cloud_run_service_iam_member", "http_invoker");
    expect(invoker).toMatchObject({
      for_each: hcl("toset(var.invoker_members)"),
      location: hcl("var.region"),
      service: hcl("google_cloudfunctions2_function.http.name"),
      role: "roles/run.invoker",
      member: hcl("each.value"),
    });
    expect(variables.invoker_members?.[0]).toMatchObject({ type: hcl("list(string)"), default: [] });
  });

  it("lets key_event_publishers publish key events (roles/pubsub.publisher on the key-events topic only), no one by default", () => {
    expect(resource("google_pubsub_topic_iam_member", "key_event_publishers")).toMatchObject({
      for_each: hcl("toset(var.key_event_publishers)"),
      topic: hcl("google_pubsub_topic.key_events.id"),
      role: "roles/pubsub.publisher",
      member: hcl("each.value"),
    });
    expect(variables.key_event_publishers?.[0]).toMatchObject({ type: hcl("list(string)"), default: [] });
    // Never project-wide: that would reach every topic of the project.
    expect(members().map((m) => m.role)).not.toContain("roles/pubsub.publisher");
  });

  it("takes its settings as variables, with access_mode checked", () => {
    expect(Object.keys(variables).sort()).toEqual(
      [
        "access_mode",
        "ingress",
        "hosted_keys",
        "invoker_members",
        "key_event_publishers",
        "master_key_secret",
        "master_key_version",
        "previous_salt_keys_secret",
        "previous_salt_keys_version",
        "prefix_for_stored_virtual_keys",
        "project",
        "refresh_interval_seconds",
        "region",
        "salt_key_secret",
        "salt_key_version",
        "source_bucket",
        "source_zip",
      ].sort(),
    );
    expect(JSON.stringify(variables.access_mode)).toContain("read_only");
    // Instances other than the one applying a key event serve a revoked key this long, not a day.
    expect(variables.refresh_interval_seconds?.[0]).toMatchObject({ type: hcl("number"), default: 300 });
    expect((main.locals[0] as { environment: unknown }).environment).toMatchObject({
      SECRET_MANAGER_REFRESH_INTERVAL: hcl("tostring(var.refresh_interval_seconds)"),
    });
  });
});
