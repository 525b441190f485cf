// The AWS store and KMS decryptor beyond the conformance suite: what goes over the wire (checked by
// the fake, SigV4 included), the create / exists / scheduled-for-deletion paths, the recovery
// window, primary_secret_name, and the fault matrix. The real SDK, over HTTPS, to test/fakes/aws.ts.

import { randomUUID } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as sdk from "@aws-sdk/client-secrets-manager";
import { beforeEach, describe, expect, inject, it } from "vitest";
import { ConfigError } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import type { SecretStore } from "../../core/src/secret-store";
import { isRetryable } from "../../core/src/store-errors";
import { AwsSecretsManagerSettings, AwsSecretsManagerStore, awsSecretsManagerStore } from "../../core/src/stores/aws";
import { awsClientOptions } from "../../core/src/stores/aws-config";
import { awsKmsStore } from "../../core/src/stores/aws-kms";
import { safeParse } from "../../core/src/validation";
import { FAKE_AWS_CREDENTIALS, lazyFakeAws } from "../fakes/aws";
import { makeServerChain } from "../fakes/pki";
import { cleanEnv, codeOf, expectNoValueIn, listPages, runCli, secretValue, serveStore, tempDir } from "../helpers";
import { fakeClient, hookedClient } from "./aws-clients";

const aws = lazyFakeAws();
const logs: string[] = [];
const log = createLogger((line) => logs.push(line));
const values: string[] = [];

function deps(env: Record<string, string> = {}) {
  return { dataDir: "/nonexistent", env, log, now: Date.now };
}

async function open(config: Record<string, unknown> = {}, env: Record<string, string> = {}): Promise<SecretStore> {
  await aws();
  const parsed = safeParse(AwsSecretsManagerSettings, { config: { aws_region_name: "us-east-1", ...config }, env });
  if (!parsed.success) throw new Error("invalid test settings");
  return awsSecretsManagerStore.open(parsed.data, deps());
}

/** What a `serve` or CLI child process needs to reach the fake's KMS, trusting the tests' CA. */
function kmsProcessEnv(url: string): Record<string, string> {
  return {
    AWS_REGION: "us-east-1",
    AWS_ENDPOINT_URL_KMS: url,
    AWS_ACCESS_KEY_ID: FAKE_AWS_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: FAKE_AWS_CREDENTIALS.secretAccessKey,
    NODE_EXTRA_CA_CERTS: inject("testPki").caFile,
  };
}

function value(label: string): string {
  const v = secretValue(label);
  values.push(v);
  return v;
}

beforeEach(async () => {
  (await aws()).reset();
});

describe("aws_secret_manager over the wire", () => {
  it("creates with a ClientRequestToken, description, KmsKeyId, tags and replica regions, all signed", async () => {
    const fake = await aws();
    const store = await open({ kms_key_id: "alias/app", replica_regions: ["eu-west-1", "us-west-2"] });
    const v = value("create");
    expect(
      await store.put("OPENAI_API_KEY", v, {
        meta: { whenCreated: { description: "from llm-secrets", tags: { team: "platform" } } },
      }),
    ).toBe("created");
    const [create] = fake.calls("CreateSecret");
    expect(create?.headers["content-type"]).toBe("application/x-amz-json-1.1");
    expect(create?.headers.authorization).toMatch(
      new RegExp(`^AWS4-HMAC-SHA256 Credential=${FAKE_AWS_CREDENTIALS.accessKeyId}/\\d{8}/us-east-1/secretsmanager/`),
    );
    expect(create?.body).toMatchObject({
      Name: "OPENAI_API_KEY",
      SecretString: v,
      Description: "from llm-secrets",
      KmsKeyId: "alias/app",
      AddReplicaRegions: [{ Region: "eu-west-1" }, { Region: "us-west-2" }],
    });
    expect(create?.body.ClientRequestToken).toMatch(/^[0-9a-f-]{36}$/);
    const tags = Object.fromEntries(
      ((create?.body.Tags ?? []) as { Key: string; Value: string }[]).map((t) => [t.Key, t.Value]),
    );
    expect(tags).toMatchObject({ team: "platform", "llm-secrets:deleted": "false" });
    expect(Number(tags["llm-secrets:changed-at"])).toBeGreaterThan(Date.now() - 60_000);
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe(v);
    expect(fake.calls("GetSecretValue")[0]?.body).toEqual({ SecretId: "OPENAI_API_KEY" });
    await store.close?.();
  });

  it("updates an existing secret with PutSecretValue, and restores one scheduled for deletion first", async () => {
    const fake = await aws();
    const store = await open();
    await store.put("K", value("one"));
    const two = value("two");
    expect(await store.put("K", two)).toBe("updated");
    expect(fake.calls("PutSecretValue").map((r) => r.body.SecretString)).toEqual([two]);
    expect(await store.delete("K")).toBe("deleted");
    expect(fake.secrets.get("K")?.deletedDate).toBeInstanceOf(Date); // waiting out its window, not gone
    const three = value("three");
    expect(await store.put("K", three)).toBe("created");
    expect(fake.calls("RestoreSecret")).toHaveLength(1);
    expect(fake.secrets.get("K")?.deletedDate).toBeUndefined();
    expect(fake.secrets.get("K")?.tags.get("llm-secrets:deleted")).toBe("false");
    expect((await store.get("K"))?.value).toBe(three);
    await store.close?.();
  });

  it("deletes with a 7-day recovery window by default, the window set, or none at 0", async () => {
    const fake = await aws();
    for (const [setting, expected] of [
      [undefined, { RecoveryWindowInDays: 7 }],
      ["30", { RecoveryWindowInDays: 30 }],
      ["0", { ForceDeleteWithoutRecovery: true }],
    ] as const) {
      fake.reset();
      const store = await open({}, setting === undefined ? {} : { LLM_SECRETS_AWS_RECOVERY_WINDOW_DAYS: setting });
      await store.put("D", value("d"));
      expect(await store.delete("D")).toBe("deleted");
      expect(fake.calls("DeleteSecret")[0]?.body).toEqual({ SecretId: "D", ...expected });
      expect(fake.secrets.has("D")).toBe(setting !== "0");
      // What the start holds LLM_SECRETS_MAX_EVENT_AGE to: the window a delete's tags are kept.
      expect(store.tombstoneMs).toBe(Number(setting ?? 7) * 86_400_000);
      await store.close?.();
    }
    for (const good of ["0", "7", "30"]) {
      expect(
        safeParse(AwsSecretsManagerSettings, { config: {}, env: { LLM_SECRETS_AWS_RECOVERY_WINDOW_DAYS: good } })
          .success,
      ).toBe(true);
    }
    for (const bad of ["3", "31", "seven"]) {
      expect(
        safeParse(AwsSecretsManagerSettings, { config: {}, env: { LLM_SECRETS_AWS_RECOVERY_WINDOW_DAYS: bad } })
          .success,
      ).toBe(false);
    }
  });

  it("reads names from primary_secret_name's JSON, others from their own secret; a field is not written", async () => {
    const fake = await aws();
    const plain = await open();
    const a = value("a");
    await plain.put("shared", JSON.stringify({ A: a, N: 42, O: { x: 1 } }));
    const own = value("own");
    await plain.put("OWN", own);
    const store = await open({ primary_secret_name: "shared" });
    expect((await store.get("A"))?.value).toBe(a);
    expect((await store.get("N"))?.value).toBe("42");
    expect((await store.get("O"))?.value).toBe('{"x":1}');
    expect((await store.get("OWN"))?.value).toBe(own);
    expect(await store.get("MISSING")).toBeUndefined();
    expect(await codeOf(store.put("A", value("not-written")))).toBe("not_supported");
    expect(await codeOf(store.delete("A"))).toBe("not_supported");
    expect(await store.put("NEW", value("new"))).toBe("created");
    await plain.put("shared", "not json");
    expect(await codeOf(store.get("A"))).toBe("store_corrupt");
    expect(fake.requests.every((r) => r.headers.authorization !== undefined)).toBe(true);
    await plain.close?.();
    await store.close?.();
  });

  it("the primary secret's own name: read as LiteLLM reads it (a field of that name, else not found, never the whole JSON); not written or deleted", async () => {
    const fake = await aws();
    const plain = await open();
    const a = value("a");
    const b = value("b");
    const bundle = JSON.stringify({ A: a, B: b });
    await plain.put("shared", bundle);
    const store = await open({ primary_secret_name: "shared" });
    expect(await store.get("shared")).toBeUndefined();
    const before = fake.requests.length;
    expect(await codeOf(store.put("shared", value("one-value")))).toBe("not_supported");
    expect(await codeOf(store.put("shared", value("event"), { ifNewerThan: { at: Date.now(), id: "e" } }))).toBe(
      "not_supported",
    );
    expect(await codeOf(store.delete("shared"))).toBe("not_supported");
    expect(fake.requests.length).toBe(before); // refused before any call
    expect(fake.secrets.get("shared")?.deletedDate).toBeUndefined();
    // Nor is it listed, as a name a read would not find.
    await plain.put("other", value("o"));
    expect((await store.list?.({ limit: 100 }))?.names).toEqual(["other"]);
    // Every field still reads.
    expect((await store.get("A"))?.value).toBe(a);
    expect((await store.get("B"))?.value).toBe(b);
    // A field named as the primary secret is a field like any other (LiteLLM's `.get(name)`).
    const own = value("own-field");
    await plain.put("shared", JSON.stringify({ A: a, shared: own }));
    expect((await store.get("shared"))?.value).toBe(own);
    await plain.close?.();
    await store.close?.();
  });

  it("deletes a replicated secret, its replicas removed first (AWS deletes no replicated secret); a write replicates it again", async () => {
    const fake = await aws();
    const regions = ["eu-west-1", "us-west-2"];
    const store = await open({ replica_regions: regions });
    await store.put("REP", value("replicated"));
    expect(fake.secrets.get("REP")?.replicas).toEqual(regions);
    expect(await store.delete("REP")).toBe("deleted");
    expect(fake.calls("RemoveRegionsFromReplication").map((r) => r.body)).toEqual([
      { SecretId: "REP", RemoveReplicaRegions: regions },
    ]);
    expect(fake.secrets.get("REP")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.get("REP")).toBeUndefined();
    expect(await store.list?.({ limit: 10 })).toEqual({ names: [] });
    const again = value("again");
    expect(await store.put("REP", again)).toBe("created");
    expect(fake.secrets.get("REP")?.replicas).toEqual(regions);
    expect((await store.get("REP"))?.value).toBe(again);
    // A delete that stopped after removing the replicas: a newer write gets them back, and the
    // next delete finishes.
    fake.fail(3, "error", "DeleteSecret");
    expect(await codeOf(store.delete("REP", { ifNewerThan: { at: Date.now() + 60_000, id: "d1" } }))).toBe(
      "backend_unavailable",
    );
    expect(fake.secrets.get("REP")?.replicas).toEqual([]);
    expect(await store.put("REP", value("newer"), { ifNewerThan: { at: Date.now() + 120_000, id: "w2" } })).toBe(
      "updated",
    );
    expect(fake.secrets.get("REP")?.replicas).toEqual(regions);
    expect(await store.delete("REP", { ifNewerThan: { at: Date.now() + 180_000, id: "d3" } })).toBe("deleted");
    expect(fake.secrets.get("REP")?.deletedDate).toBeInstanceOf(Date);
    await store.close?.();
  });

  it("an event's delete of a name never written leaves a tombstone secret, scheduled for deletion", async () => {
    const fake = await aws();
    const store = await open();
    expect(await store.delete("NEVER", { ifNewerThan: { at: 5_000, id: "evt/5" } })).toBe("absent");
    const tomb = fake.secrets.get("NEVER");
    expect(tomb?.versions).toEqual([]);
    expect(tomb?.deletedDate).toBeInstanceOf(Date);
    expect(tomb?.tags.get("llm-secrets:changed-at")).toBe("5000");
    expect(await store.put("NEVER", value("late"), { ifNewerThan: { at: 4_000, id: "evt/4" } })).toBe("superseded");
    expect(await store.put("NEVER", value("later"), { ifNewerThan: { at: 6_000, id: "evt/6" } })).toBe("created");
    await store.close?.();
  });
  it("a name made anew over a tombstone gets what a new secret gets: the KMS key, replicas, the creation description and tags", async () => {
    const fake = await aws();
    const store = await open({ kms_key_id: "alias/app", replica_regions: ["eu-west-1"] });
    const meta = { whenCreated: { description: "virtual key", tags: { team: "a" } } };
    const made = (name: string) => {
      const s = fake.secrets.get(name);
      const tags = Object.fromEntries([...(s?.tags ?? [])].filter(([k]) => !k.startsWith("llm-secrets:")));
      return { kmsKeyId: s?.kmsKeyId, description: s?.description, replicas: s?.replicas, tags };
    };
    const expected = {
      kmsKeyId: "alias/app",
      description: "virtual key",
      replicas: ["eu-west-1"],
      tags: { team: "a" },
    };
    // An event's delete of a name never written, then its creation.
    expect(await store.delete("litellm/k1", { ifNewerThan: { at: 1_000, id: "e1" } })).toBe("absent");
    expect(fake.secrets.get("litellm/k1")?.kmsKeyId).toBe("alias/app");
    expect(await store.put("litellm/k1", value("k1"), { ifNewerThan: { at: 2_000, id: "e2" }, meta })).toBe("created");
    expect(made("litellm/k1")).toEqual(expected);
    // A secret deleted, then written again: made anew too, its old description and tags replaced.
    await store.put("litellm/k2", value("old"), { meta: { description: "old", tags: { old: "1" } } });
    await store.delete("litellm/k2");
    expect(await store.put("litellm/k2", value("k2"), { meta })).toBe("created");
    expect(made("litellm/k2")).toEqual(expected);
    // Over a live secret the creation defaults do nothing.
    await store.put("litellm/k2", value("k2b"), { meta: { whenCreated: { description: "other", tags: { x: "y" } } } });
    expect(made("litellm/k2")).toEqual(expected);
    await store.close?.();
  });

  it("a delete that stopped between its stamp and DeleteSecret is finished when its event comes again", async () => {
    const fake = await aws();
    const store = await open();
    await store.put("K", value("revoked"), { ifNewerThan: { at: 1_000, id: "e1" } });
    const revoked = (await store.get("K"))?.version;
    fake.fail(1, "denied", "DeleteSecret");
    expect(await codeOf(store.delete("K", { ifNewerThan: { at: 2_000, id: "e2" } }))).toBe("backend_denied");
    expect(fake.secrets.get("K")?.tags.get("llm-secrets:deleted")).toBe(revoked); // the stamp landed, naming the value
    expect(fake.secrets.get("K")?.deletedDate).toBeUndefined(); // the delete did not
    expect(await store.delete("K", { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("deleted");
    expect(fake.secrets.get("K")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.put("K", value("late"), { ifNewerThan: { at: 1_500, id: "e1b" } })).toBe("superseded");
    // A name already scheduled for deletion takes no tags: a newer delete event restores it, tags it
    // and schedules it again, so its time is recorded; an older one is superseded; a direct one
    // leaves it. Deleting it again is never an error.
    expect(await store.delete("K", { ifNewerThan: { at: 3_000, id: "e3" } })).toBe("absent");
    expect(fake.secrets.get("K")?.tags.get("llm-secrets:changed-at")).toBe("3000");
    expect(fake.secrets.get("K")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.put("K", value("between"), { ifNewerThan: { at: 2_500, id: "e2b" } })).toBe("superseded");
    expect(await store.delete("K")).toBe("absent");
    expect(await store.delete("K", { ifNewerThan: { at: 1_200, id: "e0" } })).toBe("superseded");
    expect(await store.get("K")).toBeUndefined();
    // Restored to take the tag, and the tag refused: scheduled again all the same, never left readable.
    fake.fail(1, "denied", "TagResource");
    expect(await codeOf(store.delete("K", { ifNewerThan: { at: 4_000, id: "e4" } }))).toBe("backend_denied");
    expect(fake.secrets.get("K")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.get("K")).toBeUndefined();
    await store.close?.();
  });

  it("records an event id too long for a tag as its digest: every id the schema admits, a redelivery still known, ties ordered alike whatever the arrival order", async () => {
    const fake = await aws();
    const store = await open();
    const long = (c: string) => c.repeat(512); // the schema's longest
    expect(await store.put("L", value("l"), { ifNewerThan: { at: 1_000, id: long("a") } })).toBe("created");
    const recorded = fake.secrets.get("L")?.tags.get("llm-secrets:change-id") ?? "";
    expect(recorded.length).toBeLessThanOrEqual(256);
    expect(Buffer.from(recorded.slice(1), "base64url").toString()).toMatch(/^#[A-Za-z0-9_-]{43}$/);
    // The same event again changes nothing; a delete of the same time wins the tie.
    expect(await store.put("L", value("again"), { ifNewerThan: { at: 1_000, id: long("a") } })).toBe("superseded");
    expect(await store.delete("L", { ifNewerThan: { at: 1_000, id: long("d") } })).toBe("deleted");
    // The longest id kept as it is: 191 bytes are `.` and 255 base64url characters.
    expect(await store.put("M", value("m"), { ifNewerThan: { at: 1_000, id: "i".repeat(191) } })).toBe("created");
    const kept = fake.secrets.get("M")?.tags.get("llm-secrets:change-id") ?? "";
    expect(Buffer.from(kept.slice(1), "base64url").toString()).toBe("i".repeat(191));
    // Two writes of one time with long ids: the same one stands, in either order.
    const [x, y] = [long("x"), long("y")];
    const [vx, vy] = [value("x"), value("y")];
    await store.put("XY", vx, { ifNewerThan: { at: 5_000, id: x } });
    await store.put("XY", vy, { ifNewerThan: { at: 5_000, id: y } });
    await store.put("YX", vy, { ifNewerThan: { at: 5_000, id: y } });
    await store.put("YX", vx, { ifNewerThan: { at: 5_000, id: x } });
    expect((await store.get("XY"))?.value).toBe((await store.get("YX"))?.value);
    await store.close?.();
  });

  it("config tags AWS could not hold stop the start, named, when the store may write; a read-only store starts", async () => {
    const fake = await aws();
    const long = { owner: "x".repeat(257) };
    const refused = await open({ access_mode: "read_and_write", tags: long }).catch((e: Error) => e);
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toMatch(
      /^general_settings\.key_management_settings\.tags: an AWS tag key is 1 to 128 characters/,
    );
    const team = { access_mode: "write_only", team_settings: { t1: { tags: { "aws:x": "v" } } } };
    expect(String(await open(team).catch((e: Error) => e))).toMatch(
      /key_management_settings\.team_settings\.t1\.tags: AWS reserves the aws: prefix/,
    );
    expect(fake.calls("CreateSecret")).toHaveLength(0);
    const readOnly = await open({ tags: long }); // read_only, the default: it writes nothing
    await readOnly.close?.();
  });

  it("refuses before any call tags AWS refuses: an aws: prefix (any case) on a key or value, more than 50 with our 3", async () => {
    const fake = await aws();
    const store = await open();
    const v = value("tags-kept");
    await store.put("TAGGED", v, { meta: { tags: { team: "a" } } });
    fake.requests.length = 0;
    const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));
    for (const tags of [{ "aws:team": "a" }, { "AWS:Team": "a" }, { team: "aws:a" }, many(48), { "": "a" }]) {
      expect(await codeOf(store.put("TAGGED", value("refused"), { meta: { tags } })), JSON.stringify(tags)).toBe(
        "invalid_request",
      );
      expect(await codeOf(store.put("NEW", value("refused"), { meta: { tags } }))).toBe("invalid_request");
    }
    // The creation defaults (key_management_settings.tags) too, when they are used.
    expect(
      await codeOf(store.put("NEW", value("refused"), { meta: { whenCreated: { tags: { "aws:x": "1" } } } })),
    ).toBe("invalid_request");
    expect(fake.requests.filter((r) => r.target !== "secretsmanager.DescribeSecret")).toEqual([]);
    expect(fake.secrets.has("NEW")).toBe(false);
    expect((await store.get("TAGGED"))?.value).toBe(v);
    // 47 of the caller's and our 3: AWS's 50.
    expect(await store.put("TAGGED", value("most"), { meta: { tags: many(47) } })).toBe("updated");
    expect(fake.secrets.get("TAGGED")?.tags.size).toBe(50);
    // And the fake refuses them as AWS does.
    const client = fakeClient(log);
    for (const Tags of [[{ Key: "aws:x", Value: "1" }], [{ Key: "one-too-many", Value: "1" }]]) {
      await expect(client.send(new sdk.TagResourceCommand({ SecretId: "TAGGED", Tags }))).rejects.toMatchObject({
        name: "InvalidParameterException",
      });
    }
    client.destroy();
    await store.close?.();
  });

  it("given tags replace the secret's, none given keeps them; a given description replaces it; both land before the value", async () => {
    const fake = await aws();
    const store = await open();
    const userTags = () =>
      Object.fromEntries([...(fake.secrets.get("R")?.tags ?? [])].filter(([k]) => !k.startsWith("llm-secrets:")));
    await store.put("R", value("r1"), { meta: { description: "first", tags: { team: "a", env: "dev" } } });
    expect(userTags()).toEqual({ team: "a", env: "dev" });
    await store.put("R", value("r2"), { meta: { tags: { owner: "me" } } });
    expect(userTags()).toEqual({ owner: "me" });
    await store.put("R", value("r3"), { meta: { whenCreated: { description: "not now", tags: { team: "b" } } } });
    expect(userTags()).toEqual({ owner: "me" });
    expect(fake.secrets.get("R")?.description).toBe("first");
    await store.put("R", value("r4"), { meta: { description: "second" } });
    expect(fake.secrets.get("R")?.description).toBe("second");
    // A refusal of the caller's tags (a tag policy, say) leaves the value as it was, and the tags:
    // the new ones go on before the old ones come off.
    const r4 = (await store.get("R"))?.value;
    fake.fail(1, "denied", "TagResource");
    expect(await codeOf(store.put("R", value("r5"), { meta: { tags: { cost: "c1" } } }))).toBe("backend_denied");
    expect((await store.get("R"))?.value).toBe(r4);
    expect(userTags()).toEqual({ owner: "me" });
    await store.close?.();
  });

  it("an older event whose create meets a newer one made meanwhile (ResourceExistsException) is superseded", async () => {
    await aws();
    const other = await open();
    const hooked = hookedClient(log);
    const { client } = hooked;
    // A second writer lands between this store's DescribeSecret (nothing there) and its CreateSecret.
    let raced = false;
    const newer = value("newer");
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.CreateSecretCommand && !raced) {
        raced = true;
        await other.put("RACE", newer, { ifNewerThan: { at: 2_000, id: "t2" } });
      }
      return send(command);
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    expect(await store.put("RACE", value("older"), { ifNewerThan: { at: 1_000, id: "t1" } })).toBe("superseded");
    expect((await other.get("RACE"))?.value).toBe(newer);
    client.destroy();
  });

  it("an event's delete whose tombstone meets an older write made meanwhile deletes it; a newer one stands", async () => {
    await aws();
    const other = await open();
    const hooked = hookedClient(log);
    const { client } = hooked;
    let race: (() => Promise<unknown>) | undefined;
    hooked.hook = async (command, send) => {
      const step = command instanceof sdk.CreateSecretCommand ? race : undefined;
      if (step) {
        race = undefined;
        await step();
      }
      return send(command);
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    race = () => other.put("GONE", value("older"), { ifNewerThan: { at: 1_000, id: "t1" } });
    expect(await store.delete("GONE", { ifNewerThan: { at: 2_000, id: "t2" } })).toBe("deleted");
    expect(await other.get("GONE")).toBeUndefined();
    const newer = value("newer");
    race = () => other.put("KEPT", newer, { ifNewerThan: { at: 3_000, id: "t3" } });
    expect(await store.delete("KEPT", { ifNewerThan: { at: 2_000, id: "t2" } })).toBe("superseded");
    expect((await other.get("KEPT"))?.value).toBe(newer);
    client.destroy();
  });

  it("an older event's write and a newer one to one name at once in one process: the newer stands, the older is superseded", async () => {
    await aws();
    const other = await open(); // seeds and reads
    await other.put("PAIR", value("first"), { ifNewerThan: { at: 500, id: "t0" } });
    const hooked = hookedClient(log);
    const { client } = hooked;
    const older = value("older");
    const newerValue = value("newer");
    // Every DescribeSecret the store sends; a PutSecretValue waits for those sent before it to answer,
    // so two writes under way at once have both read the secret before either writes.
    const described: Promise<unknown>[] = [];
    let newer: Promise<unknown> | undefined;
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.DescribeSecretCommand) {
        const answer = send(command);
        described.push(answer.catch(() => undefined));
        return answer;
      }
      if (command instanceof sdk.PutSecretValueCommand) {
        await Promise.all([...described]);
        // The older event's value lands only once the newer event's write has answered.
        if (command.input.SecretString === older) await newer;
      }
      return send(command);
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    // The newer event first (the older one is a late redelivery), both under way at once.
    newer = store.put("PAIR", newerValue, { ifNewerThan: { at: 2_000, id: "t2" } });
    const late = store.put("PAIR", older, { ifNewerThan: { at: 1_000, id: "t1" } });
    expect(await newer).toBe("updated");
    expect(await late).toBe("superseded");
    expect((await other.get("PAIR"))?.value).toBe(newerValue);
    await store.close();
  });

  it("a write that restored a deleted name and then failed leaves another writer's write made meanwhile alone", async () => {
    const fake = await aws();
    const other = await open(); // another instance
    await other.put("W", value("revoked"));
    await other.delete("W");
    const hooked = hookedClient(log);
    const { client } = hooked;
    let raced = false;
    let theirs: unknown;
    const written = value("theirs");
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.PutSecretValueCommand && !raced) {
        raced = true;
        // The other writes between this one's RestoreSecret and its PutSecretValue, which then fails.
        theirs = await other.put("W", written);
        fake.fail(3, "error", "PutSecretValue");
      }
      return send(command);
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    expect(await codeOf(store.put("W", value("mine")))).toBe("backend_unavailable");
    expect(theirs).toBe("updated");
    expect((await other.get("W"))?.value).toBe(written);
    expect(fake.secrets.get("W")?.deletedDate).toBeUndefined();

    // Another delete meanwhile that stopped before its DeleteSecret: this write's failure finishes it.
    await other.delete("W");
    raced = false;
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.PutSecretValueCommand && !raced) {
        raced = true;
        fake.fail(3, "error", "DeleteSecret");
        expect(await codeOf(other.delete("W"))).toBe("backend_unavailable"); // tagged deleted, not scheduled
        fake.fail(3, "error", "PutSecretValue");
      }
      return send(command);
    };
    expect(await codeOf(store.put("W", value("mine")))).toBe("backend_unavailable");
    expect(fake.secrets.get("W")?.deletedDate).toBeInstanceOf(Date);
    expect(await other.get("W")).toBeUndefined();
    client.destroy();
  });

  it("a failed restore-write leaves another tool's value put meanwhile, and a delete under way at the same time still answers deleted", async () => {
    const fake = await aws();
    const raw = fakeClient(log);
    // Made and deleted by another tool: no tags of ours.
    await raw.send(
      new sdk.CreateSecretCommand({ Name: "T", SecretString: value("old"), ClientRequestToken: randomUUID() }),
    );
    await raw.send(new sdk.DeleteSecretCommand({ SecretId: "T", RecoveryWindowInDays: 7 }));
    const hooked = hookedClient(log);
    const { client } = hooked;
    let race: (() => Promise<unknown>) | undefined;
    hooked.hook = async (command, send) => {
      const step = command instanceof sdk.PutSecretValueCommand ? race : undefined;
      if (step) {
        race = undefined;
        await step();
        fake.fail(3, "error", "PutSecretValue");
      }
      return send(command);
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    // The other tool puts a value between this write's RestoreSecret and its PutSecretValue.
    const theirs = value("theirs");
    race = () =>
      raw.send(
        new sdk.PutSecretValueCommand({ SecretId: "T", SecretString: theirs, ClientRequestToken: randomUUID() }),
      );
    expect(await codeOf(store.put("T", value("mine")))).toBe("backend_unavailable");
    expect(fake.secrets.get("T")?.deletedDate).toBeUndefined();
    expect((await store.get("T"))?.value).toBe(theirs);

    // A delete that has tagged the name and waits on its DeleteSecret while this write fails and
    // schedules it first: the delete still answers deleted.
    await store.delete("T");
    const otherHooked = hookedClient(log);
    const other = otherHooked.client;
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let tagged!: () => void;
    const deleteTagged = new Promise<void>((resolve) => {
      tagged = resolve;
    });
    otherHooked.hook = async (command, send) => {
      if (command instanceof sdk.DeleteSecretCommand) {
        tagged();
        await held;
      }
      return send(command);
    };
    const deleting = new AwsSecretsManagerStore({ sdk, client: other, log });
    let pending: Promise<unknown> | undefined;
    race = async () => {
      pending = deleting.delete("T").catch((e: unknown) => e);
      await deleteTagged;
    };
    expect(await codeOf(store.put("T", value("again")))).toBe("backend_unavailable");
    release();
    expect(await pending).toBe("deleted");
    expect(fake.secrets.get("T")?.deletedDate).toBeInstanceOf(Date);
    for (const c of [raw, client, other]) c.destroy();
  });

  it("a failed restore-write schedules the name again when another delete tagged it meanwhile, even after another tool's value", async () => {
    const fake = await aws();
    const raw = fakeClient(log);
    const hooked = hookedClient(log);
    const { client } = hooked;
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    const at = Date.now() + 1_000;
    await store.put("T2", value("first"));
    expect(await store.delete("T2", { ifNewerThan: { at, id: "d1" } })).toBe("deleted");
    // A delete that tags the name and stops before its DeleteSecret (its process dies there).
    const halted = hookedClient(log);
    halted.hook = async (command, send) => {
      if (command instanceof sdk.DeleteSecretCommand) throw Object.assign(new Error("stopped"), { name: "Stopped" });
      return send(command);
    };
    const deleting = new AwsSecretsManagerStore({ sdk, client: halted.client, log });
    let raced = false;
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.PutSecretValueCommand && !raced) {
        raced = true;
        // Between this write's RestoreSecret and its PutSecretValue: another tool's value, then a
        // delete event of the same time as the first one (a later id), which stops half-way.
        await raw.send(
          new sdk.PutSecretValueCommand({
            SecretId: "T2",
            SecretString: value("theirs"),
            ClientRequestToken: randomUUID(),
          }),
        );
        expect(await codeOf(deleting.delete("T2", { ifNewerThan: { at, id: "d2" } }))).toBe("internal");
        fake.fail(3, "error", "PutSecretValue");
      }
      return send(command);
    };
    expect(await codeOf(store.put("T2", value("mine")))).toBe("backend_unavailable");
    expect(fake.secrets.get("T2")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.get("T2")).toBeUndefined();
    for (const c of [raw, client, halted.client]) c.destroy();
  });

  it("a value another tool put during a failed restore-write is recorded as a change then: listed, and no late delete undoes it", async () => {
    const fake = await aws();
    const raw = fakeClient(log);
    const hooked = hookedClient(log);
    const { client } = hooked;
    const theirs = value("theirs");
    let raced = false;
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.PutSecretValueCommand && !raced) {
        raced = true;
        await raw.send(
          new sdk.PutSecretValueCommand({ SecretId: "L", SecretString: theirs, ClientRequestToken: randomUUID() }),
        );
        fake.fail(3, "error", "PutSecretValue");
      }
      return send(command);
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    await store.put("L", value("first"), { ifNewerThan: { at: 1_000, id: "e1" } });
    await store.delete("L", { ifNewerThan: { at: 2_000, id: "e2" } });
    expect(await codeOf(store.put("L", value("mine")))).toBe("backend_unavailable");
    expect((await store.get("L"))?.value).toBe(theirs);
    expect(fake.secrets.get("L")?.tags.get("llm-secrets:deleted")).toBe("false");
    expect((await store.list?.({ limit: 10 }))?.names).toEqual(["L"]);
    // The delete event, redelivered: older than the change now recorded.
    expect(await store.delete("L", { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("superseded");
    expect((await store.get("L"))?.value).toBe(theirs);
    for (const c of [raw, client]) c.destroy();
  });

  it("a restore-write whose value landed but whose answer was lost goes on: our value is known by its token", async () => {
    const fake = await aws();
    const hooked = hookedClient(log);
    const { client } = hooked;
    let lose = false;
    hooked.hook = async (command, send) => {
      const out = await send(command);
      if (lose && command instanceof sdk.PutSecretValueCommand) {
        lose = false;
        throw Object.assign(new Error("socket hang up"), { name: "TimeoutError" });
      }
      return out;
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log, replicaRegions: ["eu-west-1"] });
    await store.put("O", value("first"), { ifNewerThan: { at: 1_000, id: "e1" } });
    await store.delete("O", { ifNewerThan: { at: 2_000, id: "e2" } });
    lose = true;
    const mine = value("mine");
    const event = { ifNewerThan: { at: 3_000, id: "e3" }, meta: { description: "d3", tags: { team: "t3" } } };
    expect(await store.put("O", mine, event)).toBe("created");
    const secret = fake.secrets.get("O");
    expect(secret?.description).toBe("d3");
    expect(secret?.replicas).toEqual(["eu-west-1"]);
    expect(secret?.tags.get("team")).toBe("t3");
    expect(secret?.tags.get("llm-secrets:changed-at")).toBe("3000");
    expect((await store.get("O"))?.value).toBe(mine);
    client.destroy();
  });

  it("a failed restore-write schedules it again even where AWS lists no versions of a secret scheduled for deletion", async () => {
    const fake = await aws();
    const hooked = hookedClient(log);
    const { client } = hooked;
    let failPut = false;
    // DescribeSecret "only returns fields that have a value": a scheduled secret may come without VersionIdsToStages.
    hooked.hook = async (command, send) => {
      if (failPut && command instanceof sdk.PutSecretValueCommand) {
        failPut = false;
        fake.fail(3, "error", "PutSecretValue");
      }
      const out = (await send(command)) as Record<string, unknown>;
      if (command instanceof sdk.DescribeSecretCommand && out.DeletedDate !== undefined) delete out.VersionIdsToStages;
      return out;
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    await store.put("R", value("revoked"));
    await store.delete("R");
    failPut = true;
    expect(await codeOf(store.put("R", value("new")))).toBe("backend_unavailable");
    expect(fake.secrets.get("R")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.get("R")).toBeUndefined();
    // The read of its version once restored failing too: scheduled again all the same.
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.RestoreSecretCommand) {
        const out = await send(command);
        fake.fail(3, "error", "DescribeSecret");
        return out;
      }
      const out = (await send(command)) as Record<string, unknown>;
      if (command instanceof sdk.DescribeSecretCommand && out.DeletedDate !== undefined) delete out.VersionIdsToStages;
      return out;
    };
    expect(await codeOf(store.put("R", value("newer")))).toBe("backend_unavailable");
    expect(fake.secrets.get("R")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.get("R")).toBeUndefined();
    client.destroy();
  });

  it("a write over a deleted name that fails after RestoreSecret schedules it again: the revoked value is never served", async () => {
    const fake = await aws();
    const store = await open();
    const revoked = value("revoked");
    await store.put("V", revoked);
    await store.delete("V");
    fake.fail(3, "error", "PutSecretValue");
    expect(await codeOf(store.put("V", value("new")))).toBe("backend_unavailable");
    expect(fake.secrets.get("V")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.get("V")).toBeUndefined();
    // Restored and given its new value, the rest failing (its description refused) does not bring the old one back.
    const next = value("next");
    fake.fail(1, "denied", "UpdateSecret");
    expect(await codeOf(store.put("V", next, { meta: { description: "d" } }))).toBe("backend_denied");
    expect((await store.get("V"))?.value).toBe(next);
    await store.close?.();
  });

  it("lists with ListSecrets: the prefix as a name filter, MaxResults at most 100, NextToken as the cursor", async () => {
    const fake = await aws();
    const store = await open();
    const held = ["team/a", "team/b", "team/c", "team/d", "team/e", "team/f", "team/g"];
    for (const n of held) await store.put(n, value(n));
    await store.put("other", value("other"));
    await store.put("team/gone", value("gone"));
    await store.delete("team/gone");
    await store.delete("team/never", { ifNewerThan: { at: 5_000 } }); // a tombstone secret
    expect(fake.secrets.get("team/never")?.deletedDate).toBeInstanceOf(Date);
    fake.requests.length = 0;
    const { names, cursors } = await listPages(store.list?.bind(store), { prefix: "team/", limit: 3 });
    expect(names).toEqual(held); // each once, in creation order, no deleted one
    const calls = fake.calls("ListSecrets");
    expect(calls).toHaveLength(3);
    expect(calls[0]?.body).toEqual({ MaxResults: 3, Filters: [{ Key: "name", Values: ["team/"] }] });
    expect(calls.slice(1).map((c) => c.body.NextToken)).toEqual(cursors);
    expect(calls.every((c) => c.body.IncludePlannedDeletion === undefined)).toBe(true);
    fake.requests.length = 0;
    // A limit above AWS's 100 asks for 100; no prefix, no filter.
    const all = await store.list?.({ limit: 1000 });
    expect(fake.calls("ListSecrets")[0]?.body).toEqual({ MaxResults: 100 });
    expect(all).toEqual({ names: [...held, "other"] });
    // A prefix no name can start with asks nothing; a cursor AWS did not give is the caller's error.
    expect(await store.list?.({ prefix: "team a", limit: 10 })).toEqual({ names: [] });
    expect(fake.calls("ListSecrets")).toHaveLength(1);
    expect(await codeOf(store.list?.({ limit: 10, cursor: "bm90LWEtdG9rZW4" }) ?? Promise.resolve())).toBe(
      "invalid_request",
    );
    fake.fail(3, "error");
    expect(await codeOf(store.list?.({ limit: 10 }) ?? Promise.resolve())).toBe("backend_unavailable");
    await store.close?.();
  });

  it("with no recovery window, an event's delete of a name never written creates nothing", async () => {
    const fake = await aws();
    const store = await open({}, { LLM_SECRETS_AWS_RECOVERY_WINDOW_DAYS: "0" });
    expect(await store.delete("NEVER", { ifNewerThan: { at: 5_000, id: "evt/5" } })).toBe("absent");
    expect(fake.calls("CreateSecret")).toHaveLength(0);
    expect(fake.secrets.has("NEVER")).toBe(false);
    await store.close?.();
  });

  it("the same event again is superseded: its recorded id reads back as sent", async () => {
    const store = await open();
    expect(await store.put("SAME", value("same"), { ifNewerThan: { at: 1_000, id: "e1" } })).toBe("created");
    expect(await store.put("SAME", value("same"), { ifNewerThan: { at: 1_000, id: "e1" } })).toBe("superseded");
    expect(await store.put("SAME", value("tie"), { ifNewerThan: { at: 1_000, id: "e0" } })).toBe("superseded");
    expect(await store.put("SAME", value("tie"), { ifNewerThan: { at: 1_000, id: "e2" } })).toBe("updated");
    await store.close?.();
  });

  it("a secret whose delete stopped after its stamp is not listed", async () => {
    const fake = await aws();
    const store = await open();
    await store.put("HALF", value("half"));
    await store.put("WHOLE", value("whole"));
    fake.fail(1, "denied", "DeleteSecret");
    expect(await codeOf(store.delete("HALF"))).toBe("backend_denied");
    expect(fake.secrets.get("HALF")?.deletedDate).toBeUndefined();
    expect(await store.list?.({ limit: 10 })).toEqual({ names: ["WHOLE"] });
    await store.close?.();
  });

  it("a name another writer re-creates after our delete (RestoreSecret, then UpdateSecret, as LiteLLM's create-or-restore) is live: read and listed, whatever its version ids", async () => {
    const fake = await aws();
    const store = await open();
    const raw = fakeClient(log);
    await store.put("litellm/team-a", value("deleted"));
    // Another tool's secret whose version id no tag value may hold (AWS takes any 32 to 64 characters).
    const odd = `aws:${randomUUID()}!`;
    await raw.send(
      new sdk.CreateSecretCommand({ Name: "litellm/team-b", SecretString: value("b"), ClientRequestToken: odd }),
    );
    for (const name of ["litellm/team-a", "litellm/team-b"]) {
      expect(await store.delete(name)).toBe("deleted");
      await raw.send(new sdk.RestoreSecretCommand({ SecretId: name }));
      await raw.send(
        new sdk.UpdateSecretCommand({
          SecretId: name,
          SecretString: value("theirs"),
          ClientRequestToken: randomUUID(),
        }),
      );
    }
    expect((await store.get("litellm/team-a"))?.value).toBe(fake.secrets.get("litellm/team-a")?.versions.at(-1)?.value);
    expect(await store.list?.({ prefix: "litellm/", limit: 10 })).toEqual({
      names: ["litellm/team-a", "litellm/team-b"],
    });
    raw.destroy();
    await store.close?.();
  });

  it("the same delete event again after another writer re-created the name is superseded, its value kept; a newer delete deletes it", async () => {
    const fake = await aws();
    const store = await open();
    const raw = fakeClient(log);
    await store.put("litellm/svc", value("deleted"), { ifNewerThan: { at: 1_000, id: "created" } });
    const del = { ifNewerThan: { at: 2_000, id: "deleted" } };
    expect(await store.delete("litellm/svc", del)).toBe("deleted");
    await raw.send(new sdk.RestoreSecretCommand({ SecretId: "litellm/svc" }));
    const theirs = value("theirs");
    const version = randomUUID();
    await raw.send(
      new sdk.UpdateSecretCommand({ SecretId: "litellm/svc", SecretString: theirs, ClientRequestToken: version }),
    );
    expect(await store.delete("litellm/svc", del)).toBe("superseded");
    expect(fake.secrets.get("litellm/svc")?.deletedDate).toBeUndefined();
    expect((await store.get("litellm/svc"))?.value).toBe(theirs);
    // A write event older than the delete stays superseded: their value stands.
    expect(await store.put("litellm/svc", value("late"), { ifNewerThan: { at: 1_500, id: "late" } })).toBe(
      "superseded",
    );
    expect(await store.delete("litellm/svc", { ifNewerThan: { at: 3_000, id: "again" } })).toBe("deleted");
    expect(fake.secrets.get("litellm/svc")?.deletedDate).toBeInstanceOf(Date);
    expect(fake.secrets.get("litellm/svc")?.tags.get("llm-secrets:deleted")).toBe(version);
    expect(await store.get("litellm/svc")).toBeUndefined();
    raw.destroy();
    await store.close?.();
  });

  it("a delete that stopped half-way, or was cancelled alone (Cancel deletion), is finished by its redelivery; one given another value since is superseded", async () => {
    const fake = await aws();
    const store = await open();
    const raw = fakeClient(log);
    const del = { ifNewerThan: { at: 2_000, id: "e2" } };
    for (const name of ["H1", "H2", "H3"]) {
      await store.put(name, value(name), { ifNewerThan: { at: 1_000, id: "e1" } });
      if (name !== "H3") fake.fail(1, "denied", "DeleteSecret");
      expect(await store.delete(name, del).catch((e: unknown) => (e as { code?: string }).code)).toBe(
        name === "H3" ? "deleted" : "backend_denied",
      );
    }
    await raw.send(new sdk.RestoreSecretCommand({ SecretId: "H3" })); // the deleted value back, as it was
    const theirs = value("theirs");
    await raw.send(
      new sdk.PutSecretValueCommand({ SecretId: "H2", SecretString: theirs, ClientRequestToken: randomUUID() }),
    );
    expect(await store.list?.({ limit: 10 })).toEqual({ names: ["H2"] });
    expect(await store.delete("H1", del)).toBe("deleted");
    expect(await store.delete("H3", del)).toBe("deleted");
    expect(await store.delete("H2", del)).toBe("superseded");
    expect(fake.secrets.get("H1")?.deletedDate).toBeInstanceOf(Date);
    expect(fake.secrets.get("H3")?.deletedDate).toBeInstanceOf(Date);
    expect(fake.secrets.get("H2")?.deletedDate).toBeUndefined();
    expect((await store.get("H2"))?.value).toBe(theirs);
    raw.destroy();
    await store.close?.();
  });

  it("a mark of an earlier build (llm-secrets:deleted=true) names no version: another writer's value under it stays a deleted name, unlike under a mark that names one", async () => {
    const fake = await aws();
    const store = await open();
    const raw = fakeClient(log);
    const del = { ifNewerThan: { at: 2_000, id: "e2" } };
    for (const name of ["OLD", "NEW"]) {
      await store.put(name, value(name), { ifNewerThan: { at: 1_000, id: "e1" } });
      expect(await store.delete(name, del)).toBe("deleted");
      await raw.send(new sdk.RestoreSecretCommand({ SecretId: name }));
      if (name === "OLD") {
        await raw.send(
          new sdk.TagResourceCommand({ SecretId: name, Tags: [{ Key: "llm-secrets:deleted", Value: "true" }] }),
        );
      }
      await raw.send(
        new sdk.UpdateSecretCommand({
          SecretId: name,
          SecretString: value("theirs"),
          ClientRequestToken: randomUUID(),
        }),
      );
    }
    expect(await store.list?.({ limit: 10 })).toEqual({ names: ["NEW"] });
    expect(await store.delete("OLD", del)).toBe("deleted");
    expect(await store.delete("NEW", del)).toBe("superseded");
    expect(fake.secrets.get("OLD")?.deletedDate).toBeInstanceOf(Date);
    expect(fake.secrets.get("NEW")?.deletedDate).toBeUndefined();
    raw.destroy();
    await store.close?.();
  });

  it("an event's tombstone for a name never written (no version) is live once another writer gives it a value; restored alone it is still a tombstone", async () => {
    const fake = await aws();
    const store = await open();
    const raw = fakeClient(log);
    const del = { ifNewerThan: { at: 2_000, id: "e2" } };
    for (const name of ["NV1", "NV2"]) {
      expect(await store.delete(name, del)).toBe("absent");
      await raw.send(new sdk.RestoreSecretCommand({ SecretId: name }));
    }
    const theirs = value("theirs");
    await raw.send(
      new sdk.PutSecretValueCommand({ SecretId: "NV1", SecretString: theirs, ClientRequestToken: randomUUID() }),
    );
    expect(await store.list?.({ limit: 10 })).toEqual({ names: ["NV1"] });
    expect(await store.delete("NV1", del)).toBe("superseded");
    expect((await store.get("NV1"))?.value).toBe(theirs);
    expect(await store.delete("NV2", del)).toBe("deleted");
    expect(fake.secrets.get("NV2")?.deletedDate).toBeInstanceOf(Date);
    expect(fake.secrets.get("NV2")?.tags.get("llm-secrets:deleted")).toBe("none");
    raw.destroy();
    await store.close?.();
  });

  it("a newer delete over a name already scheduled names the deleted value's version, read once restored where AWS lists no versions of a scheduled secret", async () => {
    const fake = await aws();
    const client = clientListingNoVersionsOfScheduled();
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    await store.put("S", value("deleted"), { ifNewerThan: { at: 1_000, id: "e1" } });
    const deleted = (await store.get("S"))?.version;
    expect(await store.delete("S", { ifNewerThan: { at: 2_000, id: "e2" } })).toBe("deleted");
    expect(await store.delete("S", { ifNewerThan: { at: 3_000, id: "e3" } })).toBe("absent");
    expect(fake.secrets.get("S")?.tags.get("llm-secrets:changed-at")).toBe("3000");
    expect(fake.secrets.get("S")?.tags.get("llm-secrets:deleted")).toBe(deleted);
    // So restored alone (Cancel deletion) it is still the deleted name, finished by the redelivery.
    await client.send(new sdk.RestoreSecretCommand({ SecretId: "S" }));
    expect(await store.list({ limit: 10 })).toEqual({ names: [] });
    expect(await store.delete("S", { ifNewerThan: { at: 3_000, id: "e3" } })).toBe("deleted");
    client.destroy();
  });

  it("a write over a name scheduled for deletion is made anew where AWS lists no versions of a scheduled secret: the creation description and tags", async () => {
    const fake = await aws();
    const client = clientListingNoVersionsOfScheduled();
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    await store.put("N", value("old"), { meta: { description: "old", tags: { old: "1" } } });
    expect(await store.delete("N")).toBe("deleted");
    const meta = { whenCreated: { description: "virtual key", tags: { team: "a" } } };
    expect(await store.put("N", value("new"), { meta })).toBe("created");
    const secret = fake.secrets.get("N");
    expect(secret?.description).toBe("virtual key");
    expect(Object.fromEntries([...(secret?.tags ?? [])].filter(([k]) => !k.startsWith("llm-secrets:")))).toEqual({
      team: "a",
    });
    client.destroy();
  });

  it("a write over a name another writer re-created after our delete (LiteLLM's create-or-restore) is a write over a live secret: the creation defaults unused", async () => {
    const fake = await aws();
    const store = await open();
    const raw = fakeClient(log);
    await store.put("litellm/svc", value("deleted"), { meta: { description: "kept", tags: { team: "a" } } });
    expect(await store.delete("litellm/svc")).toBe("deleted");
    await raw.send(new sdk.RestoreSecretCommand({ SecretId: "litellm/svc" }));
    await raw.send(
      new sdk.UpdateSecretCommand({
        SecretId: "litellm/svc",
        SecretString: value("theirs"),
        ClientRequestToken: randomUUID(),
      }),
    );
    const meta = { whenCreated: { description: "virtual key", tags: { team: "b" } } };
    expect(await store.put("litellm/svc", value("mine"), { meta })).toBe("updated");
    const secret = fake.secrets.get("litellm/svc");
    expect(secret?.description).toBe("kept");
    expect(secret?.tags.get("team")).toBe("a");
    raw.destroy();
    await store.close?.();
  });

  it("given tags replace the secret's but AWS's own (aws:), which no caller may remove", async () => {
    const fake = await aws();
    const store = await open();
    await store.put("STACK", value("stack"), { meta: { tags: { team: "a" } } });
    fake.secrets.get("STACK")?.tags.set("aws:cloudformation:stack-name", "infra"); // AWS put it there
    expect(await store.put("STACK", value("next"), { meta: { tags: { owner: "b" } } })).toBe("updated");
    const tags = fake.secrets.get("STACK")?.tags;
    expect(tags?.get("aws:cloudformation:stack-name")).toBe("infra");
    expect(tags?.get("owner")).toBe("b");
    expect(tags?.has("team")).toBe(false);
    await store.close?.();
  });

  it("a caller's tag named as one of ours is dropped, and does not count toward AWS's 50", async () => {
    const fake = await aws();
    const store = await open();
    const tags = Object.fromEntries(Array.from({ length: 47 }, (_, i) => [`t${i}`, "v"]));
    const at = Date.now();
    expect(
      await store.put("OURS", value("ours"), {
        meta: { tags: { ...tags, "llm-secrets:changed-at": "1" } },
        ifNewerThan: { at },
      }),
    ).toBe("created");
    expect(fake.secrets.get("OURS")?.tags.get("llm-secrets:changed-at")).toBe(String(at));
    await store.close?.();
  });

  it("a null field of primary_secret_name is no field, as LiteLLM's .get(name) gives None: not found, not the text null", async () => {
    await aws();
    const plain = await open();
    const a = value("a");
    await plain.put("shared", JSON.stringify({ A: a, GONE: null, shared: null }));
    const store = await open({ primary_secret_name: "shared" });
    expect(await store.get("GONE")).toBeUndefined();
    expect(await store.get("shared")).toBeUndefined();
    expect((await store.get("A"))?.value).toBe(a);
    // Not a field, so its own secret, as any other name: read, written and deleted there.
    const own = value("gone-own");
    expect(await store.put("GONE", own)).toBe("created");
    expect((await store.get("GONE"))?.value).toBe(own);
    expect(await store.delete("GONE")).toBe("deleted");
    await plain.close?.();
    await store.close?.();
  });

  it("a secret another tool made with more than 47 tags of its own: a put that keeps them and a delete are store_unavailable before any change (our 3 would not fit AWS's 50)", async () => {
    const fake = await aws();
    const store = await open();
    const other = fakeClient(log);
    const old = value("outside");
    const Tags = Array.from({ length: 48 }, (_, i) => ({ Key: `k${i}`, Value: "v" }));
    await other.send(new sdk.CreateSecretCommand({ Name: "OUTSIDE", SecretString: old, Tags }));
    // AWS's own tags count toward no limit: 48 of its own it holds, whatever AWS added.
    fake.secrets.get("OUTSIDE")?.tags.set("aws:cloudformation:stack-name", "infra");
    const refused = (op: string) =>
      `aws secrets manager ${op}: OUTSIDE holds 48 tags of its own and AWS keeps 50 on a secret, 3 of them llm-secrets' record of its changes: remove 1 of its tags`;
    const changes = () =>
      [
        ["put", () => store.put("OUTSIDE", value("refused"))],
        ["put", () => store.put("OUTSIDE", value("refused"), { ifNewerThan: { at: Date.now(), id: "e1" } })],
        ["delete", () => store.delete("OUTSIDE")],
        ["delete", () => store.delete("OUTSIDE", { ifNewerThan: { at: Date.now(), id: "e2" } })],
      ] as const;
    const onlyReads = () =>
      fake.requests
        .map((r) => r.target)
        .filter((t) => t !== "secretsmanager.DescribeSecret" && t !== "secretsmanager.GetSecretValue");
    fake.requests.length = 0;
    for (const [op, change] of changes()) {
      const err = (await change().catch((e: unknown) => e)) as { code?: string; message?: string };
      expect([op, err.code, err.message]).toEqual([op, "store_unavailable", refused(op)]);
    }
    expect(onlyReads()).toEqual([]);
    expect((await store.get("OUTSIDE"))?.value).toBe(old);
    expect(fake.secrets.get("OUTSIDE")?.versions).toHaveLength(1);
    // Scheduled for deletion by that tool: an event's newer delete (restore, tag, schedule again)
    // is refused before RestoreSecret too.
    await other.send(new sdk.DeleteSecretCommand({ SecretId: "OUTSIDE", RecoveryWindowInDays: 7 }));
    fake.requests.length = 0;
    expect(await codeOf(store.delete("OUTSIDE", { ifNewerThan: { at: Date.now(), id: "e3" } }))).toBe(
      "store_unavailable",
    );
    expect(onlyReads()).toEqual([]);
    expect(fake.secrets.get("OUTSIDE")?.deletedDate).toBeDefined();
    // One tag fewer: its 47, AWS's and our 3 fit, and the put and the delete go through.
    await other.send(new sdk.RestoreSecretCommand({ SecretId: "OUTSIDE" }));
    await other.send(new sdk.UntagResourceCommand({ SecretId: "OUTSIDE", TagKeys: ["k0"] }));
    const v = value("fits");
    expect(await store.put("OUTSIDE", v)).toBe("updated");
    expect((await store.get("OUTSIDE"))?.value).toBe(v);
    expect(fake.secrets.get("OUTSIDE")?.tags.size).toBe(51);
    expect(await store.delete("OUTSIDE")).toBe("deleted");
    other.destroy();
    await store.close?.();
  });

  it("a primary secret that is blank holds no fields; one that is a JSON array is store_corrupt", async () => {
    const plain = await open();
    const a = value("a");
    await plain.put("A", a);
    await plain.put("bundle", "  ");
    const store = await open({ primary_secret_name: "bundle" });
    expect((await store.get("A"))?.value).toBe(a);
    await plain.put("bundle", '["A"]');
    expect(await codeOf(store.get("A"))).toBe("store_corrupt");
    await plain.close?.();
    await store.close?.();
  });

  it("a create that meets a name scheduled for deletion meanwhile restores it and writes", async () => {
    await aws();
    const other = await open();
    const hooked = hookedClient(log);
    const { client } = hooked;
    // Another writer creates and deletes the name between this store's DescribeSecret and its CreateSecret.
    let raced = false;
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.CreateSecretCommand && !raced) {
        raced = true;
        await other.put("SCHED", value("other"));
        await other.delete("SCHED");
      }
      return send(command);
    };
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    const mine = value("mine");
    expect(await store.put("SCHED", mine)).toBe("created");
    expect((await other.get("SCHED"))?.value).toBe(mine);
    client.destroy();
    await other.close?.();
  });

  it("a read refused with another InvalidRequestException than a scheduled deletion is an error, not not-found", async () => {
    await aws();
    const hooked = hookedClient(log);
    const { client } = hooked;
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    await store.put("ODD", value("odd"));
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.GetSecretValueCommand) {
        throw Object.assign(new Error("You can't perform this operation on the secret right now."), {
          name: "InvalidRequestException",
          $metadata: { httpStatusCode: 400 },
        });
      }
      return send(command);
    };
    expect(await codeOf(store.get("ODD"))).toBe("internal");
    client.destroy();
  });

  it("lists no name a read would refuse (a secret made in the console under a name outside ours)", async () => {
    await aws();
    const store = await open();
    await store.put("OK", value("ok"));
    const client = fakeClient(log);
    for (const Name of ["_hidden", "team//a", "team/./a"]) {
      await client.send(
        new sdk.CreateSecretCommand({ Name, SecretString: value(Name), ClientRequestToken: randomUUID() }),
      );
    }
    client.destroy();
    expect(await store.list?.({ limit: 10 })).toEqual({ names: ["OK"] });
    await store.close?.();
  });

  it("a DeleteSecret refused for another reason than a scheduled deletion (replicas added meanwhile) fails: not deleted", async () => {
    const fake = await aws();
    const hooked = hookedClient(log);
    const { client } = hooked;
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    const kept = value("kept");
    await store.put("REPL", kept);
    // Another writer replicates it between this store's DescribeSecret and its DeleteSecret.
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.DeleteSecretCommand) {
        await send(
          new sdk.ReplicateSecretToRegionsCommand({ SecretId: "REPL", AddReplicaRegions: [{ Region: "eu-west-1" }] }),
        );
      }
      return send(command);
    };
    expect(await codeOf(store.delete("REPL"))).toBe("internal");
    expect(fake.secrets.get("REPL")?.deletedDate).toBeUndefined();
    expect((await store.get("REPL"))?.value).toBe(kept);
    client.destroy();
  });

  it("a write over a delete that stopped half-way (tagged deleted, not scheduled) makes the name anew: the creation description and tags", async () => {
    const fake = await aws();
    const store = await open();
    await store.put("HALFWAY", value("old"), { meta: { description: "old", tags: { team: "old" } } });
    fake.fail(1, "denied", "DeleteSecret");
    expect(await codeOf(store.delete("HALFWAY"))).toBe("backend_denied");
    expect(fake.secrets.get("HALFWAY")?.deletedDate).toBeUndefined();
    await store.put("HALFWAY", value("anew"), {
      meta: { whenCreated: { description: "made anew", tags: { team: "new" } } },
    });
    expect(fake.secrets.get("HALFWAY")?.description).toBe("made anew");
    expect(fake.secrets.get("HALFWAY")?.tags.get("team")).toBe("new");
    expect(fake.secrets.get("HALFWAY")?.tags.get("llm-secrets:deleted")).toBe("false");
    await store.close?.();
  });

  it("a failed restore-write whose undoing fails too answers the write's own failure, and says the undoing failed", async () => {
    const fake = await aws();
    const store = await open();
    await store.put("UNDO", value("revoked"));
    await store.delete("UNDO");
    logs.length = 0;
    fake.fail(1, "denied", "PutSecretValue");
    fake.fail(3, "error", "DeleteSecret");
    expect(await codeOf(store.put("UNDO", value("refused")))).toBe("backend_denied");
    expect(logs.some((l) => l.includes("could not be undone"))).toBe(true);
    // Undone, nothing is said.
    await store.delete("UNDO");
    logs.length = 0;
    fake.fail(1, "denied", "PutSecretValue");
    expect(await codeOf(store.put("UNDO", value("refused-again")))).toBe("backend_denied");
    expect(fake.secrets.get("UNDO")?.deletedDate).toBeInstanceOf(Date);
    expect(logs.some((l) => l.includes("could not be undone"))).toBe(false);
    await store.close?.();
  });

  it("given tags keep a key they set again (not untagged after), and a refused TagResource at AWS's 50 leaves the old ones", async () => {
    const fake = await aws();
    const store = await open();
    const userTags = () =>
      Object.fromEntries([...(fake.secrets.get("T")?.tags ?? [])].filter(([k]) => !k.startsWith("llm-secrets:")));
    await store.put("T", value("t1"), { meta: { tags: { team: "a", env: "dev" } } });
    await store.put("T", value("t2"), { meta: { tags: { team: "b" } } });
    expect(userTags()).toEqual({ team: "b" });
    // 23 stale and 24 new: 47, both fit beside ours, so the new go on first; refused, the old stay.
    const tags = (p: string, n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`${p}${i}`, "v"]));
    await store.put("T", value("t3"), { meta: { tags: tags("old", 23) } });
    fake.fail(1, "denied", "TagResource");
    expect(await codeOf(store.put("T", value("t4"), { meta: { tags: tags("new", 24) } }))).toBe("backend_denied");
    expect(userTags()).toEqual(tags("old", 23));
    // Not refused: exactly the new ones.
    expect(await store.put("T", value("t5"), { meta: { tags: tags("new", 24) } })).toBe("updated");
    expect(userTags()).toEqual(tags("new", 24));
    await store.close?.();
  });

  it("an update replicates only to the Regions the secret lacks; an empty description given is set", async () => {
    const fake = await aws();
    const store = await open({ replica_regions: ["eu-west-1", "us-west-2"] });
    await store.put("REGIONS", value("r1"), { meta: { description: "first" } });
    fake.secrets.get("REGIONS")?.replicas.splice(1); // us-west-2 removed elsewhere
    fake.requests.length = 0;
    expect(await store.put("REGIONS", value("r2"), { meta: { description: "" } })).toBe("updated");
    expect(fake.calls("ReplicateSecretToRegions").map((r) => r.body.AddReplicaRegions)).toEqual([
      [{ Region: "us-west-2" }],
    ]);
    expect(fake.secrets.get("REGIONS")?.description).toBe("");
    fake.requests.length = 0;
    await store.put("REGIONS", value("r3"));
    expect(fake.calls("ReplicateSecretToRegions")).toEqual([]);
    await store.close?.();
  });

  it("a secret another tool scheduled for deletion is a deleted name: a write over it makes it anew (the creation description and tags)", async () => {
    const fake = await aws();
    const store = await open();
    const client = fakeClient(log);
    await client.send(
      new sdk.CreateSecretCommand({
        Name: "CONSOLE",
        SecretString: value("console"),
        ClientRequestToken: randomUUID(),
      }),
    );
    await client.send(new sdk.DeleteSecretCommand({ SecretId: "CONSOLE", RecoveryWindowInDays: 7 }));
    client.destroy();
    expect(
      await store.put("CONSOLE", value("anew"), {
        meta: { whenCreated: { description: "made anew", tags: { team: "new" } } },
      }),
    ).toBe("created");
    expect(fake.secrets.get("CONSOLE")?.description).toBe("made anew");
    expect(fake.secrets.get("CONSOLE")?.tags.get("team")).toBe("new");
    await store.close?.();
  });

  it("a failed restore-write removes replicas another writer added meanwhile before scheduling the name again", async () => {
    const fake = await aws();
    const hooked = hookedClient(log);
    const { client } = hooked;
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    await store.put("REVOKED", value("revoked"));
    await store.delete("REVOKED");
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.PutSecretValueCommand) {
        await send(
          new sdk.ReplicateSecretToRegionsCommand({
            SecretId: "REVOKED",
            AddReplicaRegions: [{ Region: "eu-west-1" }],
          }),
        );
        throw Object.assign(new Error("denied"), { name: "AccessDeniedException", $metadata: { httpStatusCode: 400 } });
      }
      return send(command);
    };
    expect(await codeOf(store.put("REVOKED", value("refused")))).toBe("backend_denied");
    expect(fake.secrets.get("REVOKED")?.deletedDate).toBeInstanceOf(Date);
    expect(fake.secrets.get("REVOKED")?.replicas).toEqual([]);
    expect(await store.get("REVOKED")).toBeUndefined();
    client.destroy();
  });

  it("with primary_secret_name, a name that is only an Object property (constructor, toString) is no field: read from its own secret", async () => {
    await aws();
    const plain = await open();
    await plain.put("bundle", JSON.stringify({ A: value("a") }));
    const ctor = value("constructor");
    await plain.put("constructor", ctor);
    const store = await open({ primary_secret_name: "bundle" });
    expect((await store.get("constructor"))?.value).toBe(ctor);
    expect(await store.get("toString")).toBeUndefined();
    await plain.close?.();
    await store.close?.();
  });

  it("a secret that holds SecretBinary is store_corrupt, never a record without a value", async () => {
    await aws();
    const hooked = hookedClient(log);
    const { client } = hooked;
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    await store.put("BIN", value("bin"));
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.GetSecretValueCommand) {
        const out = (await send(command)) as Record<string, unknown>;
        return { ...out, SecretString: undefined, SecretBinary: new Uint8Array([0xff, 0x00]) };
      }
      return send(command);
    };
    expect(await codeOf(store.get("BIN"))).toBe("store_corrupt");
    client.destroy();
  });

  it("takes a tag key of 128 characters and a value of 256 (AWS's longest); one more is refused before any call", async () => {
    const fake = await aws();
    const store = await open();
    const longest = { ["k".repeat(128)]: "v".repeat(256) };
    expect(await store.put("LONG", value("long"), { meta: { tags: longest } })).toBe("created");
    expect(fake.secrets.get("LONG")?.tags.get("k".repeat(128))).toBe("v".repeat(256));
    for (const tags of [{ ["k".repeat(129)]: "v" }, { k: "v".repeat(257) }]) {
      expect(await codeOf(store.put("LONG", value("refused"), { meta: { tags } }))).toBe("invalid_request");
    }
    await store.close?.();
  });
});

describe("aws_secret_manager faults (the SDK's 3 attempts, nothing added)", () => {
  async function failing(times: number, fault: Parameters<Awaited<ReturnType<typeof aws>>["fail"]>[1]) {
    const fake = await aws();
    const store = await open();
    await store.put("F", value("f"));
    fake.requests.length = 0;
    fake.fail(times, fault);
    const err = await store.get("F").catch((e: unknown) => e);
    return {
      err: err as { code?: string; details?: { retryAfter?: number }; message?: string },
      attempts: fake.requests.length,
      store,
    };
  }

  it("AccessDeniedException is backend_denied, at once", async () => {
    const { err, attempts } = await failing(1, "denied");
    expect(err.code).toBe("backend_denied");
    expect(attempts).toBe(1);
  });

  it("ThrottlingException three times (HTTP 400, no Retry-After, as AWS sends it) is backend_unavailable, Retry-After 1", async () => {
    const { err, attempts } = await failing(3, "throttled");
    expect(err.code).toBe("backend_unavailable");
    expect(err.details?.retryAfter).toBe(1);
    expect(attempts).toBe(3);
  });

  it("500 three times is backend_unavailable; once, the SDK's retry answers", async () => {
    const three = await failing(3, "error");
    expect(three.err.code).toBe("backend_unavailable");
    expect(three.attempts).toBe(3);
    const once = await failing(1, "error");
    expect((once.err as unknown as { value?: string }).value).toMatch(/^f-/);
    expect(once.attempts).toBe(2);
  });

  it("a reset connection three times is backend_unavailable", async () => {
    const { err, attempts } = await failing(3, "reset");
    expect(err.code).toBe("backend_unavailable");
    expect(attempts).toBe(3);
  });

  it("a backend that does not answer is backend_unavailable once the time per attempt passes", async () => {
    const fake = await aws();
    const quick = new AwsSecretsManagerStore({
      sdk,
      client: new sdk.SecretsManagerClient(
        awsClientOptions({ aws_region_name: "us-east-1" }, {}, log, { connectMs: 1_000, requestMs: 300 }),
      ),
      log,
    });
    fake.fail(3, "hang");
    expect(await codeOf(quick.get("H"))).toBe("backend_unavailable");
    expect(fake.requests.length).toBe(3);
    await quick.close();
  });

  it("a secret whose KMS key is disabled or pending deletion is store_unavailable naming the key's state, not internal; the value is kept", async () => {
    const fake = await aws();
    const store = await open();
    const v = value("kms-state");
    await store.put("K", v);
    const secret = fake.secrets.get("K");
    if (!secret) throw new Error("no secret K");
    for (const state of ["Disabled", "PendingDeletion"] as const) {
      secret.keyState = state;
      const read = (await store.get("K").catch((e: unknown) => e)) as { code?: string; message?: string };
      expect([state, read.code]).toEqual([state, "store_unavailable"]);
      expect(read.message).toContain("check that its KMS key is enabled and not pending deletion");
      const write = (await store.put("K", value("new")).catch((e: unknown) => e)) as { code?: string };
      expect([state, write.code]).toEqual([state, "store_unavailable"]);
    }
    secret.keyState = undefined;
    expect((await store.get("K"))?.value).toBe(v);
    await store.close?.();
  });

  it("a replica secret (read-only in this region): reads answer, a put or delete is store_unavailable saying so, nothing changed", async () => {
    const fake = await aws();
    const store = await open();
    const v = value("replica");
    await store.put("R", v);
    const secret = fake.secrets.get("R");
    if (!secret) throw new Error("no secret R");
    secret.primaryRegion = "eu-west-1";
    for (const op of ["put", "delete"] as const) {
      const err = (await (op === "put" ? store.put("R", value("over")) : store.delete("R")).catch(
        (e: unknown) => e,
      )) as {
        code?: string;
        message?: string;
      };
      expect([op, err.code]).toEqual([op, "store_unavailable"]);
      expect(err.message).toBe(
        `aws secrets manager ${op}: R is a replica in this region, read-only here: change it in its primary region`,
      );
    }
    expect((await store.get("R"))?.value).toBe(v);
    expect(secret.deletedDate).toBeUndefined();
    await store.close?.();
  });

  it("a wrong secret key is refused by the service's signature check: backend_denied", async () => {
    await aws();
    const wrong = new AwsSecretsManagerStore({
      sdk,
      client: new sdk.SecretsManagerClient({
        ...awsClientOptions({ aws_region_name: "us-east-1" }, {}, log),
        credentials: { accessKeyId: FAKE_AWS_CREDENTIALS.accessKeyId, secretAccessKey: "not-the-key" },
      }),
      log,
    });
    expect(await codeOf(wrong.get("X"))).toBe("backend_denied");
    await wrong.close();
  });
});

describe("role assumption from key_management_settings (STS, as LiteLLM's AWS clients)", () => {
  const ROLE = "arn:aws:iam::111122223333:role/llm-secrets-reader";

  /** Points the SDK's own STS endpoint at nothing, so only `aws_sts_endpoint` reaches the fake. */
  async function withDeadStsEnv<T>(run: () => Promise<T>): Promise<T> {
    const saved = process.env.AWS_ENDPOINT_URL_STS;
    process.env.AWS_ENDPOINT_URL_STS = "https://127.0.0.1:9";
    try {
      return await run();
    } finally {
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_STS;
      else process.env.AWS_ENDPOINT_URL_STS = saved;
    }
  }

  it("aws_role_name: reads and writes as the assumed role (AssumeRole once, with the external id and session name)", async () => {
    const fake = await aws();
    fake.roles.set(ROLE, { externalId: "ext-42" });
    await withDeadStsEnv(async () => {
      const store = await open({
        aws_role_name: ROLE,
        aws_session_name: "gateway-7",
        aws_external_id: "ext-42",
        aws_sts_endpoint: fake.url,
      });
      const v = value("as-role");
      expect(await store.put("ROLE_KEY", v, { meta: {} })).toBe("created");
      expect((await store.get("ROLE_KEY"))?.value).toBe(v);
      await store.close?.();
    });
    const assumed = fake.calls("AssumeRole");
    expect(assumed).toHaveLength(1);
    expect(assumed[0]?.principal).toBe("account"); // signed with the function's own credentials
    expect(assumed[0]?.body).toMatchObject({ RoleArn: ROLE, RoleSessionName: "gateway-7", ExternalId: "ext-42" });
    const calls = fake.requests.filter((r) => r.target.startsWith("secretsmanager."));
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((r) => r.principal === ROLE)).toBe(true);
  });

  it("a role STS refuses (a wrong external id) is backend_denied, and nothing is read as the account", async () => {
    const fake = await aws();
    fake.roles.set(ROLE, { externalId: "ext-42" });
    const store = await open({ aws_role_name: ROLE, aws_external_id: "wrong" });
    expect(await codeOf(store.get("ROLE_KEY"))).toBe("backend_denied");
    expect(fake.requests.filter((r) => r.target.startsWith("secretsmanager."))).toHaveLength(0);
    await store.close?.();
  });

  it("aws_web_identity_token from os.environ/NAME: AssumeRoleWithWebIdentity, then KMS decrypts as that role", async () => {
    const fake = await aws();
    const token = value("oidc-token");
    fake.roles.set(ROLE, { webIdentityToken: token });
    const v = value("kms-as-role");
    const store = await awsKmsStore.open(
      {
        config: {
          aws_region_name: "us-east-1",
          aws_role_name: "os.environ/MY_ROLE_ARN",
          aws_web_identity_token: "os.environ/MY_OIDC_TOKEN",
        },
        env: {},
      },
      deps({ MY_ROLE_ARN: ROLE, MY_OIDC_TOKEN: token, K: fake.encrypt(v).toString("base64") }),
    );
    expect((await store.get("K"))?.value).toBe(v);
    const [web] = fake.calls("AssumeRoleWithWebIdentity");
    expect(web?.body).toMatchObject({ RoleArn: ROLE, RoleSessionName: "llm-secrets", WebIdentityToken: token });
    expect(fake.calls("Decrypt").map((r) => r.principal)).toEqual([ROLE]);
    expectNoValueIn(logs, [token]);
  });

  it("aws_web_identity_token without aws_role_name stops the start, naming the key", async () => {
    await aws();
    await expect(open({ aws_web_identity_token: "a-token" })).rejects.toThrow(
      /aws_web_identity_token needs aws_role_name/,
    );
    // A setting that names a variable which is not set: said at start, by name.
    await expect(open({ aws_role_name: "os.environ/NOT_SET_ROLE" })).rejects.toThrow(
      "key_management_settings: aws_role_name names NOT_SET_ROLE, which is not set",
    );
  });

  it("STS throttling AssumeRole (Throttling, HTTP 400, as STS answers) is backend_unavailable: retryable, so the cache may serve the last value", async () => {
    const fake = await aws();
    // Sessions of a minute: each call assumes the role again (as the renewal test below shows).
    fake.roles.set(ROLE, { sessionSeconds: 60 });
    const store = await open({ aws_role_name: ROLE });
    const v = value("sts-throttled");
    await store.put("THROTTLED", v, { meta: {} });
    fake.requests.length = 0;
    fake.fail(3, "throttled", "AssumeRole");
    const err = await store.get("THROTTLED").catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe("backend_unavailable");
    expect((err as Error).message).toBe("aws secrets manager get: the backend is unavailable (HTTP 400, Throttling)");
    expect(isRetryable(err)).toBe(true);
    // The SDK's 3 attempts at STS, none at Secrets Manager; the next read, STS answering, reads.
    expect(fake.requests.map((r) => r.target)).toEqual(Array(3).fill("sts.AssumeRole"));
    expect((await store.get("THROTTLED"))?.value).toBe(v);
    await store.close?.();
  });

  it("renews the temporary credentials before they expire: a role whose sessions last a minute is assumed again", async () => {
    const fake = await aws();
    fake.roles.set(ROLE, { sessionSeconds: 60 });
    const store = await open({ aws_role_name: ROLE });
    const v = value("renewed");
    await store.put("RENEWED", v, { meta: {} });
    expect((await store.get("RENEWED"))?.value).toBe(v);
    // The SDK renews within 5 minutes of expiry: each call here finds the session too close to it.
    expect(fake.calls("AssumeRole").length).toBeGreaterThanOrEqual(2);
    const signers = new Set(
      fake.requests.filter((r) => r.target.startsWith("secretsmanager.")).map((r) => r.principal),
    );
    expect(signers).toEqual(new Set([ROLE]));
    await store.close?.();
  });
});

describe("the region, as LiteLLM resolves it", () => {
  /**
   * Runs with the shared AWS config file holding `text` and no region or profile in the process
   * environment (the SDK reads those from it), as on a workstation whose region is set by `aws configure`.
   */
  async function withConfigFile<T>(text: string, run: () => Promise<T>): Promise<T> {
    const file = join(await tempDir(), "config");
    await writeFile(file, text);
    const keys = ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"];
    const saved = Object.fromEntries(keys.map((k) => [k, process.env[k]]));
    for (const k of keys) delete process.env[k];
    process.env.AWS_CONFIG_FILE = file;
    process.env.AWS_SHARED_CREDENTIALS_FILE = join(file, "..", "no-credentials-file");
    try {
      return await run();
    } finally {
      for (const k of keys) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
  }

  /** The region the store signs its calls for, opened with `config` and nothing in its environment. */
  async function signedRegion(config: Record<string, unknown> = {}): Promise<string | undefined> {
    const fake = await aws();
    fake.requests.length = 0;
    const store = await awsSecretsManagerStore.open({ config, env: {} }, deps());
    await store.get("REGIONAL");
    await store.close?.();
    const auth = String(fake.calls("GetSecretValue")[0]?.headers.authorization);
    return /\/\d{8}\/([^/]+)\/secretsmanager\//.exec(auth)?.[1];
  }

  it("none in the settings or the environment: the shared config file's (the profile's), as boto3's session; else us-west-2 with a warning", async () => {
    const keys = `aws_access_key_id = ${FAKE_AWS_CREDENTIALS.accessKeyId}\naws_secret_access_key = ${FAKE_AWS_CREDENTIALS.secretAccessKey}\n`;
    const file = `[default]\nregion = eu-north-1\n[profile team]\nregion = ap-south-1\n${keys}`;
    logs.length = 0;
    await withConfigFile(file, async () => {
      expect(await signedRegion()).toBe("eu-north-1");
      expect(await signedRegion({ aws_profile_name: "team" })).toBe("ap-south-1");
      // The settings and the environment come first.
      expect(await signedRegion({ aws_region_name: "ca-central-1" })).toBe("ca-central-1");
    });
    expect(logs.filter((l) => l.includes("no AWS region found"))).toEqual([]);
    await withConfigFile("[default]\noutput = json\n", async () => {
      expect(await signedRegion()).toBe("us-west-2");
    });
    expect(logs.filter((l) => l.includes("no AWS region found"))).toHaveLength(1);
  });

  it("the variables in LiteLLM's order: AWS_REGION_NAME, then AWS_REGION, then AWS_DEFAULT_REGION", () => {
    const region = (env: Record<string, string>) => awsClientOptions({}, env, log).region;
    expect(region({ AWS_REGION_NAME: "eu-west-1", AWS_REGION: "us-east-1", AWS_DEFAULT_REGION: "ap-south-1" })).toBe(
      "eu-west-1",
    );
    expect(region({ AWS_REGION: "us-east-1", AWS_DEFAULT_REGION: "ap-south-1" })).toBe("us-east-1");
    expect(region({ AWS_DEFAULT_REGION: "ap-south-1" })).toBe("ap-south-1");
  });

  it("aws_profile_name as os.environ/NAME names the profile whose config-file region is taken", async () => {
    const keys = `aws_access_key_id = ${FAKE_AWS_CREDENTIALS.accessKeyId}\naws_secret_access_key = ${FAKE_AWS_CREDENTIALS.secretAccessKey}\n`;
    const file = `[default]\nregion = eu-north-1\n[profile team]\nregion = ap-south-1\n${keys}`;
    await withConfigFile(file, async () => {
      const fake = await aws();
      fake.requests.length = 0;
      const config = { aws_profile_name: "os.environ/AWS_TEAM_PROFILE" };
      const store = await awsSecretsManagerStore.open({ config, env: {} }, deps({ AWS_TEAM_PROFILE: "team" }));
      await store.get("REGIONAL");
      await store.close?.();
      const auth = String(fake.calls("GetSecretValue")[0]?.headers.authorization);
      expect(/\/\d{8}\/([^/]+)\/secretsmanager\//.exec(auth)?.[1]).toBe("ap-south-1");
    });
  });
});

describe("aws_kms", () => {
  it("decrypts base64 KMS ciphertext from the environment, aws_kms/ prefixed or not, trimmed or wrapped", async () => {
    const fake = await aws();
    const v = value("kms");
    const blob = fake.encrypt(`  ${v}\n`).toString("base64");
    const store = await awsKmsStore.open(
      { config: { aws_region_name: "us-east-1" }, env: {} },
      deps({
        PLAIN: blob,
        PREFIXED: `aws_kms/${blob}`,
        // As `base64` prints it (76 columns), which LiteLLM's b64decode takes: whitespace is skipped.
        WRAPPED: `aws_kms/${blob.replace(/(.{76})/g, "$1\n")}\n`,
        NOT_B64: "hello world",
        TAMPERED: `${blob.slice(0, -8)}AAAAAAA=`,
      }),
    );
    expect((await store.get("PLAIN"))?.value).toBe(v);
    expect((await store.get("PREFIXED"))?.value).toBe(v);
    expect(blob.length).toBeGreaterThan(76);
    expect((await store.get("WRAPPED"))?.value).toBe(v);
    expect(await store.get("ABSENT")).toBeUndefined();
    expect(await codeOf(store.get("NOT_B64"))).toBe("store_corrupt");
    expect(await codeOf(store.get("TAMPERED"))).toBe("store_corrupt");
    expect(fake.calls("Decrypt")[0]?.headers.authorization).toMatch(/\/us-east-1\/kms\/aws4_request/);
    await store.close?.();
  });

  it("stops the start without a region, as LiteLLM's does (KMS opens a ciphertext only in its key's region)", async () => {
    await expect(awsKmsStore.open({ config: {}, env: {} }, deps({}))).rejects.toThrow(
      "aws_kms needs the region of its key: set AWS_REGION_NAME (or AWS_REGION, or key_management_settings.aws_region_name)",
    );
    const store = await awsKmsStore.open({ config: {}, env: { AWS_REGION: "eu-west-1" } }, deps({}));
    await store.close?.();
  });
});

describe("what the AWS stores print", () => {
  it("never holds a value in a log line or an error message", async () => {
    const fake = await aws();
    const store = await open();
    const v = value("quiet");
    await store.put("Q", v);
    fake.fail(3, "error");
    const err = (await store.get("Q").catch((e: unknown) => e)) as Error;
    expect(values.length).toBeGreaterThan(5);
    expectNoValueIn([...logs, err.message, String(err.stack)], values);
    await store.close?.();
  });
});

describe("llm-secrets serve against AWS", () => {
  it("serves the API over Secrets Manager given only the config file, its environment_variables holding the SDK's", async () => {
    const fake = await aws();
    // The credentials and the endpoint override only in the config's environment_variables, which
    // LiteLLM puts in os.environ at start: the SDK reads them from the process environment.
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_system: aws_secret_manager\n  key_management_settings:\n" +
        "    access_mode: read_and_write\n    aws_region_name: eu-central-1\n    tags: {owner: gateway}\n" +
        "environment_variables:\n" +
        `  AWS_ENDPOINT_URL_SECRETS_MANAGER: ${fake.url}\n` +
        `  AWS_ACCESS_KEY_ID: ${FAKE_AWS_CREDENTIALS.accessKeyId}\n` +
        "  AWS_SECRET_ACCESS_KEY: os.environ/SECRET_KEY_VARIABLE\n",
      {
        SECRET_KEY_VARIABLE: FAKE_AWS_CREDENTIALS.secretAccessKey,
        NODE_EXTRA_CA_CERTS: inject("testPki").caFile, // the emulator's CA, as a user trusts theirs
      },
    );
    try {
      expect(await (await call("GET", "/health")).json()).toMatchObject({ status: "ok", store: "aws_secret_manager" });
      const v = value("served");
      expect((await call("PUT", "/v1/secrets/AZURE_API_KEY", { value: v })).status).toBe(201);
      expect(fake.secrets.get("AZURE_API_KEY")?.versions.at(-1)?.value).toBe(v);
      expect(fake.secrets.get("AZURE_API_KEY")?.tags.get("owner")).toBe("gateway");
      expect(fake.calls("CreateSecret")[0]?.headers.authorization).toMatch(/\/eu-central-1\/secretsmanager\//);
      expect(await (await call("GET", "/v1/secrets/AZURE_API_KEY?refresh=true")).json()).toMatchObject({ value: v });
      expect((await call("DELETE", "/v1/secrets/AZURE_API_KEY")).status).toBe(204);
      expect((await call("GET", "/v1/secrets/AZURE_API_KEY?refresh=true")).status).toBe(404);
      fake.fail(3, "error");
      const down = await call("GET", "/v1/secrets/OTHER");
      expect(down.status).toBe(503);
      expect(down.headers.get("retry-after")).not.toBeNull();
    } finally {
      await server.stop();
    }
    expectNoValueIn([server.output], values);
  });

  it("serves aws_kms: hosted names decrypted from the environment, and nothing else", async () => {
    const fake = await aws();
    const v = value("kms-served");
    const { server, call } = await serveStore(
      "general_settings:\n  key_management_system: aws_kms\n  key_management_settings:\n    hosted_keys: [OPENAI_API_KEY]\n",
      {
        ...kmsProcessEnv(fake.url),
        OPENAI_API_KEY: `aws_kms/${fake.encrypt(v).toString("base64")}`,
        OTHER_KEY: fake.encrypt(value("not-hosted")).toString("base64"),
      },
    );
    try {
      expect(await (await call("GET", "/v1/secrets/OPENAI_API_KEY")).json()).toMatchObject({ value: v });
      expect((await call("GET", "/v1/secrets/OTHER_KEY")).status).toBe(403);
      // Listing names the hosted keys that are set, and decrypts nothing.
      expect(await (await call("GET", "/v1/secrets")).json()).toEqual({ names: ["OPENAI_API_KEY"] });
      expect(fake.calls("Decrypt")).toHaveLength(1);
    } finally {
      await server.stop();
    }
    expectNoValueIn([server.output], values);
  });

  it("resolves a config's refs at start through KMS without hosted_keys, as LiteLLM's get_secret does; plain values from the environment", async () => {
    const fake = await aws();
    const v = value("kms-at-start");
    const plain = value("plain-env");
    const dir = await tempDir();
    const config = join(dir, "config.yaml");
    await writeFile(
      config,
      "general_settings:\n  key_management_system: aws_kms\n" +
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o\n" +
        "      api_key: os.environ/OPENAI_API_KEY\n" +
        "      api_base: os.environ/PLAIN_BASE\n",
    );
    const r = await runCli(["resolve", "--config", config, "--show-values"], {
      env: cleanEnv({
        LITELLM_MASTER_KEY: value("master"),
        ...kmsProcessEnv(fake.url),
        OPENAI_API_KEY: `aws_kms/${fake.encrypt(v).toString("base64")}`,
        PLAIN_BASE: plain,
      }),
    });
    expect(r.code, r.stderr).toBe(0);
    const params = JSON.parse(r.stdout).model_list[0].litellm_params;
    expect(params).toEqual({ model: "openai/gpt-4o", api_key: v, api_base: plain });
    // The plain value went to KMS first and came back from the environment, with one line saying so.
    const fallbacks = r.stderr.split("\n").filter((l) => l.includes("store read failed; using the environment"));
    expect(fallbacks.map((l) => JSON.parse(l))).toMatchObject([{ code: "store_corrupt", names: "PLAIN_BASE" }]);
    expectNoValueIn([r.stderr], [v, plain]);
  });
});

describe("aws_kms faults (the SDK's 3 attempts, nothing added)", () => {
  it("maps AccessDeniedException, ThrottlingException, 500 and resets to the SPEC codes", async () => {
    const fake = await aws();
    const store = await awsKmsStore.open(
      { config: { aws_region_name: "us-east-1" }, env: {} },
      deps({ K: fake.encrypt(value("kms-fault")).toString("base64") }),
    );
    for (const [fault, times, code] of [
      ["denied", 1, "backend_denied"],
      ["throttled", 3, "backend_unavailable"],
      ["error", 3, "backend_unavailable"],
      ["reset", 3, "backend_unavailable"],
    ] as const) {
      fake.reset();
      fake.fail(times, fault);
      expect(await codeOf(store.get("K")), fault).toBe(code);
      expect(fake.calls("Decrypt").length, fault).toBe(times);
    }
    fake.reset();
    expect((await store.get("K"))?.value).toMatch(/^kms-fault-/);
    await store.close?.();
  });
});

describe("outbound TLS settings reach the AWS SDK", () => {
  it("a CA bundle without the service's CA refuses it; ssl_verify false does not check", async () => {
    const fake = await aws();
    const other = makeServerChain(await tempDir());
    const strict = await awsSecretsManagerStore.open(
      { config: { aws_region_name: "us-east-1" }, env: {} },
      { ...deps(), outbound: { caFile: other.rootFile } },
    );
    // Refused at the handshake: a trust setting to fix, not an outage to wait out.
    expect(await codeOf(strict.get("A"))).toBe("store_unavailable");
    expect(fake.requests).toHaveLength(0);
    const unchecked = await awsSecretsManagerStore.open(
      { config: { aws_region_name: "us-east-1" }, env: {} },
      { ...deps(), outbound: { verify: false, caFile: other.rootFile } },
    );
    expect(await unchecked.get("A")).toBeUndefined();
    expect(fake.calls("GetSecretValue")).toHaveLength(1);
    await strict.close?.();
    await unchecked.close?.();
  });
});

/**
 * A client whose DescribeSecret leaves out a scheduled secret's VersionIdsToStages, as AWS may:
 * it "only returns fields that have a value".
 */
function clientListingNoVersionsOfScheduled() {
  const hooked = hookedClient(log);
  hooked.hook = async (command, send) => {
    const out = (await send(command)) as Record<string, unknown>;
    if (command instanceof sdk.DescribeSecretCommand && out.DeletedDate !== undefined) delete out.VersionIdsToStages;
    return out;
  };
  return hooked.client;
}
