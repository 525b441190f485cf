// Staging labels and rotation: the fake keeps AWSCURRENT / AWSPREVIOUS / AWSPENDING as Secrets
// Manager documents them (PutSecretValue VersionStages, UpdateSecretVersionStage, GetSecretValue
// VersionStage / VersionId, DescribeSecret VersionIdsToStages), and the store is driven through a
// rotation Lambda's four steps (as AWS's rotation templates make them) interleaved with its own
// reads and writes. The real SDK, over HTTPS, to test/fakes/aws.ts.

import { randomUUID } from "node:crypto";
import * as sdk from "@aws-sdk/client-secrets-manager";
import { beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../core/src/log";
import { AwsSecretsManagerStore } from "../../core/src/stores/aws";
import { lazyFakeAws } from "../fakes/aws";
import { codeOf, secretValue } from "../helpers";
import { fakeClient, hookedClient } from "./aws-clients";

const aws = lazyFakeAws();
const logs: string[] = [];
const log = createLogger((line) => logs.push(line));

beforeEach(async () => {
  (await aws()).reset();
  logs.length = 0;
});

async function stagesOf(client: sdk.SecretsManagerClient, name: string): Promise<Record<string, string[]>> {
  const out = await client.send(new sdk.DescribeSecretCommand({ SecretId: name }));
  return Object.fromEntries(Object.entries(out.VersionIdsToStages ?? {}).map(([id, s]) => [id, [...(s ?? [])].sort()]));
}

/**
 * A rotation Lambda's steps, as AWS's rotation function templates make them, for the rotation whose
 * token (RotateSecret's ClientRequestToken, the new version's id) is `token`.
 */
function rotation(client: sdk.SecretsManagerClient, name: string, token: string, next: string) {
  return {
    /** createSecret: the pending value put as AWSPENDING, unless the token's version has it already. */
    async createSecret(): Promise<void> {
      await client.send(new sdk.GetSecretValueCommand({ SecretId: name, VersionStage: "AWSCURRENT" }));
      try {
        await client.send(
          new sdk.GetSecretValueCommand({ SecretId: name, VersionId: token, VersionStage: "AWSPENDING" }),
        );
      } catch (err) {
        if ((err as Error).name !== "ResourceNotFoundException") throw err;
        await client.send(
          new sdk.PutSecretValueCommand({
            SecretId: name,
            ClientRequestToken: token,
            SecretString: next,
            VersionStages: ["AWSPENDING"],
          }),
        );
      }
    },
    /** setSecret and testSecret: both read the pending value by its token and label. */
    async pendingValue(): Promise<string | undefined> {
      const out = await client.send(
        new sdk.GetSecretValueCommand({ SecretId: name, VersionId: token, VersionStage: "AWSPENDING" }),
      );
      return out.SecretString;
    },
    /** finishSecret: AWSCURRENT moved to the token's version, from whichever version holds it. */
    async finishSecret(): Promise<void> {
      const described = await client.send(new sdk.DescribeSecretCommand({ SecretId: name }));
      let current: string | undefined;
      for (const [id, stages] of Object.entries(described.VersionIdsToStages ?? {})) {
        if (stages?.includes("AWSCURRENT")) {
          if (id === token) return;
          current = id;
          break;
        }
      }
      await client.send(
        new sdk.UpdateSecretVersionStageCommand({
          SecretId: name,
          VersionStage: "AWSCURRENT",
          MoveToVersionId: token,
          RemoveFromVersionId: current,
        }),
      );
    },
  };
}

describe("the fake's staging labels, as Secrets Manager documents them", () => {
  it("PutSecretValue moves AWSCURRENT (AWSPREVIOUS to the version it left); with VersionStages [AWSPENDING] it leaves AWSCURRENT", async () => {
    await aws();
    const client = fakeClient(log);
    const v1 = randomUUID();
    const v2 = randomUUID();
    const v3 = randomUUID();
    await client.send(new sdk.CreateSecretCommand({ Name: "S", SecretString: "one", ClientRequestToken: v1 }));
    expect(await stagesOf(client, "S")).toEqual({ [v1]: ["AWSCURRENT"] });
    const put = await client.send(
      new sdk.PutSecretValueCommand({ SecretId: "S", SecretString: "two", ClientRequestToken: v2 }),
    );
    expect(put.VersionStages).toEqual(["AWSCURRENT"]);
    expect(await stagesOf(client, "S")).toEqual({ [v1]: ["AWSPREVIOUS"], [v2]: ["AWSCURRENT"] });

    const pending = await client.send(
      new sdk.PutSecretValueCommand({
        SecretId: "S",
        SecretString: "three",
        ClientRequestToken: v3,
        VersionStages: ["AWSPENDING"],
      }),
    );
    expect(pending.VersionStages).toEqual(["AWSPENDING"]);
    expect(await stagesOf(client, "S")).toEqual({
      [v1]: ["AWSPREVIOUS"],
      [v2]: ["AWSCURRENT"],
      [v3]: ["AWSPENDING"],
    });
    // Read by label, by id, or both (which must name one version); AWSCURRENT when neither.
    const read = async (input: Omit<sdk.GetSecretValueCommandInput, "SecretId">) =>
      client.send(new sdk.GetSecretValueCommand({ SecretId: "S", ...input })).then(
        (out) => [out.SecretString, out.VersionId, out.VersionStages],
        (err: Error) => err.name,
      );
    expect(await read({})).toEqual(["two", v2, ["AWSCURRENT"]]);
    expect(await read({ VersionStage: "AWSPREVIOUS" })).toEqual(["one", v1, ["AWSPREVIOUS"]]);
    expect(await read({ VersionStage: "AWSPENDING" })).toEqual(["three", v3, ["AWSPENDING"]]);
    expect(await read({ VersionId: v3 })).toEqual(["three", v3, ["AWSPENDING"]]);
    expect(await read({ VersionId: v3, VersionStage: "AWSPENDING" })).toEqual(["three", v3, ["AWSPENDING"]]);
    expect(await read({ VersionId: v2, VersionStage: "AWSPENDING" })).toBe("ResourceNotFoundException");
    expect(await read({ VersionId: randomUUID() })).toBe("ResourceNotFoundException");
    expect(await read({ VersionStage: "NOPE" })).toBe("ResourceNotFoundException");

    // The same request again (the SDK's retry) changes nothing.
    const again = await client.send(
      new sdk.PutSecretValueCommand({ SecretId: "S", SecretString: "two", ClientRequestToken: v2 }),
    );
    expect(again.VersionStages).toEqual(["AWSCURRENT"]);
    expect((await stagesOf(client, "S"))[v1]).toEqual(["AWSPREVIOUS"]);
    client.destroy();
  });

  it("UpdateSecretVersionStage moves a label only from the version RemoveFromVersionId names; AWSCURRENT takes AWSPREVIOUS along", async () => {
    await aws();
    const client = fakeClient(log);
    const v1 = randomUUID();
    const v2 = randomUUID();
    await client.send(new sdk.CreateSecretCommand({ Name: "U", SecretString: "one", ClientRequestToken: v1 }));
    await client.send(
      new sdk.PutSecretValueCommand({
        SecretId: "U",
        SecretString: "two",
        ClientRequestToken: v2,
        VersionStages: ["AWSPENDING"],
      }),
    );
    const move = (input: Omit<sdk.UpdateSecretVersionStageCommandInput, "SecretId">) =>
      client.send(new sdk.UpdateSecretVersionStageCommand({ SecretId: "U", ...input })).then(
        () => "ok",
        (err: Error) => err.name,
      );
    // AWSCURRENT is on v1: moving it needs RemoveFromVersionId, and the right one.
    expect(await move({ VersionStage: "AWSCURRENT", MoveToVersionId: v2 })).toBe("InvalidParameterException");
    expect(await move({ VersionStage: "AWSCURRENT", MoveToVersionId: v2, RemoveFromVersionId: v2 })).toBe(
      "InvalidParameterException",
    );
    expect(await move({ VersionStage: "AWSCURRENT", MoveToVersionId: randomUUID(), RemoveFromVersionId: v1 })).toBe(
      "InvalidParameterException",
    );
    expect(await stagesOf(client, "U")).toEqual({ [v1]: ["AWSCURRENT"], [v2]: ["AWSPENDING"] });
    expect(await move({ VersionStage: "AWSCURRENT", MoveToVersionId: v2, RemoveFromVersionId: v1 })).toBe("ok");
    expect(await stagesOf(client, "U")).toEqual({ [v1]: ["AWSPREVIOUS"], [v2]: ["AWSCURRENT", "AWSPENDING"] });
    expect((await client.send(new sdk.GetSecretValueCommand({ SecretId: "U" }))).SecretString).toBe("two");
    // Already there: nothing to do. AWSCURRENT is never just taken off; another label is.
    expect(await move({ VersionStage: "AWSCURRENT", MoveToVersionId: v2 })).toBe("ok");
    expect(await move({ VersionStage: "AWSCURRENT", RemoveFromVersionId: v2 })).toBe("InvalidParameterException");
    expect(await move({ VersionStage: "AWSPENDING", RemoveFromVersionId: v2 })).toBe("ok");
    expect(await stagesOf(client, "U")).toEqual({ [v1]: ["AWSPREVIOUS"], [v2]: ["AWSCURRENT"] });
    client.destroy();
  });
});

describe("a rotation Lambda's steps interleaved with the store", () => {
  it("the store reads AWSCURRENT throughout a rotation, and the rotated value once finishSecret has moved it", async () => {
    await aws();
    const client = fakeClient(log);
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    const before = secretValue("before");
    await store.put("ROTATED", before);
    const token = randomUUID();
    const after = secretValue("after");
    const lambda = rotation(fakeClient(log), "ROTATED", token, after);

    await lambda.createSecret();
    expect((await store.get("ROTATED"))?.value).toBe(before);
    await lambda.createSecret(); // invoked again (AWS retries a step): the pending version is kept
    expect(await lambda.pendingValue()).toBe(after); // setSecret
    expect((await store.get("ROTATED"))?.value).toBe(before);
    expect(await lambda.pendingValue()).toBe(after); // testSecret
    await lambda.finishSecret();
    const read = await store.get("ROTATED");
    expect(read?.value).toBe(after);
    expect(read?.version).toBe(token);
    await lambda.finishSecret(); // again: nothing to move
    expect((await store.get("ROTATED"))?.value).toBe(after);
    client.destroy();
  });

  it("a direct write while a rotation is pending becomes current, and finishSecret then makes the rotation's value current over it; our change stamp stays", async () => {
    const fake = await aws();
    const client = fakeClient(log);
    const store = new AwsSecretsManagerStore({ sdk, client, log, now: () => 5_000 });
    await store.put("MID", secretValue("before"), { ifNewerThan: { at: 1_000, id: "e1" } });
    const token = randomUUID();
    const rotated = secretValue("rotated");
    const lambda = rotation(fakeClient(log), "MID", token, rotated);
    await lambda.createSecret();

    const mine = secretValue("mine");
    expect(await store.put("MID", mine)).toBe("updated");
    // As on AWS: PutSecretValue moves AWSCURRENT to our version; AWSPENDING stays on the rotation's.
    expect((await store.get("MID"))?.value).toBe(mine);
    expect(await lambda.pendingValue()).toBe(rotated);
    const stages = await stagesOf(client, "MID");
    expect(stages[token]).toEqual(["AWSPENDING"]);
    const ours = Object.entries(stages).find(([, s]) => s.includes("AWSCURRENT"))?.[0];
    expect(ours).not.toBe(token);

    // finishSecret moves AWSCURRENT from our version (AWSPREVIOUS now) to the rotation's.
    await lambda.finishSecret();
    expect((await store.get("MID"))?.value).toBe(rotated);
    expect((await stagesOf(client, "MID"))[ours as string]).toEqual(["AWSPREVIOUS"]);
    // Tags are the secret's, not a version's: the stamp of our write (5000, after the event's 1000) stays.
    const tags = fake.secrets.get("MID")?.tags;
    expect(tags?.get("llm-secrets:changed-at")).toBe("5000");
    expect(tags?.get("llm-secrets:deleted")).toBe("false");
    // So an event older than our write is still superseded, and a newer one lands over the rotation.
    expect(await store.put("MID", secretValue("old-event"), { ifNewerThan: { at: 4_000, id: "e4" } })).toBe(
      "superseded",
    );
    const newer = secretValue("newer-event");
    expect(await store.put("MID", newer, { ifNewerThan: { at: 6_000, id: "e6" } })).toBe("updated");
    expect((await store.get("MID"))?.value).toBe(newer);
    client.destroy();
  });

  it("a rotation's createSecret (AWSPENDING) during a failed restore-write is no other writer's value: the name is scheduled for deletion again", async () => {
    const fake = await aws();
    const hooked = hookedClient(log);
    const { client } = hooked;
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    const revoked = secretValue("revoked");
    await store.put("P", revoked);
    await store.delete("P");
    const raw = fakeClient(log);
    let raced = false;
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.PutSecretValueCommand && !raced) {
        raced = true;
        // Restored by this write, the secret is rotated (a schedule's rotation starts) before its
        // value goes in: createSecret's PutSecretValue of the pending value.
        await raw.send(
          new sdk.PutSecretValueCommand({
            SecretId: "P",
            ClientRequestToken: randomUUID(),
            SecretString: secretValue("pending"),
            VersionStages: ["AWSPENDING"],
          }),
        );
        fake.fail(3, "error", "PutSecretValue");
      }
      return send(command);
    };
    expect(await codeOf(store.put("P", secretValue("mine")))).toBe("backend_unavailable");
    // AWSCURRENT is still the deleted value's version: the undoing schedules the secret again.
    expect(fake.secrets.get("P")?.deletedDate).toBeInstanceOf(Date);
    expect(await store.get("P")).toBeUndefined();
    for (const c of [raw, client]) c.destroy();
  });

  it("a rotation finished during a failed restore-write is another writer's value: it stands, recorded as a change", async () => {
    const fake = await aws();
    const hooked = hookedClient(log);
    const { client } = hooked;
    const store = new AwsSecretsManagerStore({ sdk, client, log });
    await store.put("F", secretValue("revoked"));
    await store.delete("F");
    const rotated = secretValue("rotated");
    const lambda = rotation(fakeClient(log), "F", randomUUID(), rotated);
    let raced = false;
    hooked.hook = async (command, send) => {
      if (command instanceof sdk.PutSecretValueCommand && !raced) {
        raced = true;
        await lambda.createSecret();
        await lambda.finishSecret();
        fake.fail(3, "error", "PutSecretValue");
      }
      return send(command);
    };
    expect(await codeOf(store.put("F", secretValue("mine")))).toBe("backend_unavailable");
    expect(fake.secrets.get("F")?.deletedDate).toBeUndefined();
    expect((await store.get("F"))?.value).toBe(rotated);
    expect(fake.secrets.get("F")?.tags.get("llm-secrets:deleted")).toBe("false");
    client.destroy();
  });
});
