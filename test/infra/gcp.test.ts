// The Google deployment (infra/gcp), read with a real HCL parser (terraform validate cannot run
// here: providers cannot be downloaded): the two functions and their entry points, the push
// subscription's dead-letter policy, retention no longer than LLM_SECRETS_MAX_EVENT_AGE, the IAM
// roles (writes only under the prefix, none when read-only), and the variables.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "@cdktf/hcl2json";
import { beforeAll, describe, expect, it } from "vitest";

const DIR = join(import.meta.dirname, "../../infra/gcp");
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
      expect(JSON.stringify(service.secret_environment_variables)).toContain("LITELLM_MASTER_KEY");
    }
  });

  it("delivers key events through a push subscription with a dead-letter topic after 5 attempts, kept 6 days at most", () => {
    const sub = resource("google_pubsub_subscription", "key_events");
    expect((sub.dead_letter_policy as Record<string, unknown>[])[0]).toMatchObject({
      dead_letter_topic: hcl("google_pubsub_topic.dead_letters.id"),
      max_delivery_attempts: 5,
    });
    expect(JSON.stringify(sub.push_config)).toContain(
      "google_cloudfunctions2_function.key_events.service_config[0].uri",
    );
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

  it("grants reads, writes only under the prefix and only when access_mode allows, and decrypt on its key", () => {
    expect(resource("google_project_iam_member", "secret_reader").role).toBe("roles/secretmanager.secretAccessor");
    const writer = resource("google_project_iam_member", "secret_writer");
    expect(writer.count).toBe(hcl("local.writes ? 1 : 0"));
    expect(JSON.stringify(writer.condition)).toContain("prefix_for_stored_virtual_keys");
    expect(resource("google_kms_crypto_key_iam_member", "decrypt").role).toBe("roles/cloudkms.cryptoKeyDecrypter");
    const roles = Object.values(main.resource)
      .flatMap((byName) => Object.values(byName).flat())
      .map((b) => b.role)
      .filter((r): r is string => typeof r === "string");
    expect(roles.every((r) => !r.includes("owner") && !r.includes("editor"))).toBe(true);
  });

  it("takes its settings as variables, with access_mode checked", () => {
    expect(Object.keys(variables).sort()).toEqual(
      [
        "access_mode",
        "ingress",
        "master_key_secret",
        "prefix_for_stored_virtual_keys",
        "project",
        "region",
        "source_bucket",
        "source_zip",
      ].sort(),
    );
    expect(JSON.stringify(variables.access_mode)).toContain("read_only");
  });
});
