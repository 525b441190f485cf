/**
 * `aws_secret_manager`: AWS Secrets Manager through `@aws-sdk/client-secrets-manager` (SPEC
 * section 3; LiteLLM's `AWSSecretsManagerV2`). A secret per name, its value in `SecretString`.
 * Reached only as `@llm-secrets/core/stores/aws`: importing the core root loads no AWS SDK, and
 * the SDK itself is imported when the store opens.
 *
 * - Read: `GetSecretValue` (`AWSCURRENT`). With `primary_secret_name`, a name that is a field of
 *   that one JSON secret is read from it (LiteLLM); differs: other names are then read from their
 *   own secret, so what we write stays readable. The primary secret's own name is only ever a
 *   field: LiteLLM reads every name as `json.loads(primary).get(name)`, so without a field of that
 *   name it is not found, never the whole JSON of every field. A `null` field is none (LiteLLM's
 *   None). A secret scheduled for deletion is no secret.
 * - Write: `DescribeSecret`, then for a new name `CreateSecret` (a `ClientRequestToken` per call,
 *   so the SDK's retries are idempotent; description, `kms_key_id`, tags, `replica_regions` as
 *   `AddReplicaRegions`). An existing one: the given description (`UpdateSecret`) and the given
 *   tags, which replace the secret's (`TagResource`, then `UntagResource` of the others but AWS's
 *   `aws:` ones, the other way round only when both would not fit in AWS's 50); the
 *   `replica_regions` it lacks (`ReplicateSecretToRegions`; all of them once restored); then
 *   `PutSecretValue`; then its change stamp. One scheduled for deletion is first restored
 *   (`RestoreSecret`) and given its value (`PutSecretValue`); until then it reads its deleted
 *   value. If the value cannot go in, it is scheduled for deletion again, unless another writer
 *   has put a value since, and the write fails. The creation defaults (description, tags) only on a
 *   name made anew: a new secret, or one whose last change is a delete (a tombstone).
 *   Tags AWS would refuse are `400 invalid_request` before any call: a key or value starting
 *   `aws:` (any case), a key of 0 or over 128 characters, a value over 256, more than 47 (AWS keeps
 *   50 on a secret, 3 of them ours). A secret that holds more than 47 tags of its own (another
 *   tool's; `aws:` ones do not count) is `500 store_unavailable` before any change, for a write
 *   that does not replace them and for a delete: our 3 would not fit. A name held inside
 *   `primary_secret_name` is not written: `501 not_supported`; nor is the primary secret's own
 *   name (a value there would replace the JSON of every field, each then `store_corrupt`), which
 *   is not deleted either.
 * - Delete: `DeleteSecret` with a recovery window (`LLM_SECRETS_AWS_RECOVERY_WINDOW_DAYS`, default
 *   7, 7-30; 0 = `ForceDeleteWithoutRecovery`), its replicas removed first
 *   (`RemoveRegionsFromReplication`: AWS deletes no secret replicated to other Regions).
 * - List: `ListSecrets`, the prefix as a `name` filter (a case-sensitive prefix match), `MaxResults`
 *   the limit (at most 100, AWS's largest), `NextToken` the cursor. Secrets scheduled for deletion
 *   and tombstones are left out, so a page may hold fewer names than the limit. The names of the
 *   secrets only: fields of `primary_secret_name` are not listed. ListSecrets is eventually
 *   consistent (AWS: changes may take minutes to show).
 *
 * What it records: every change's time (and event id) in the secret's tags
 * `llm-secrets:changed-at` / `llm-secrets:change-id`, and on a delete `llm-secrets:deleted` naming
 * the version it deleted (the `VersionId` `AWSCURRENT` labelled when it tagged; `none` on a secret
 * with no value; `false` on a write). A deleted secret waits out its recovery window with those
 * tags: that is the tombstone, and it lasts as long as the window (infra sets the queue's retention
 * below it). A secret tagged deleted whose current version is another one holds another writer's
 * value put since (LiteLLM's create-or-restore: `RestoreSecret`, then `UpdateSecret`; the console's
 * Cancel deletion, then a new value): it is live, read and listed, the delete's time its last change
 * (a redelivered delete is superseded). A restore alone (Cancel deletion) brings back the deleted
 * value itself, which cannot be told from a delete that stopped half-way: it reads that value, is
 * not listed, and the delete's redelivery deletes it again. `deleted=true` (earlier builds) names
 * no version: whatever the secret holds, it is a deleted name. An event that deletes a
 * name never written creates an empty secret to carry its tombstone (with `kms_key_id`, which then
 * encrypts a later write's value; no replicas, no description), and schedules its deletion.
 * With a window of 0 nothing is kept, and a late event can revive a deleted name.
 * `ifNewerThan` is read-then-write (`DescribeSecret`, then the write): Secrets Manager has no
 * compare-and-set, so another process writing between the two can be overwritten; ties break by
 * event id. Changes of one secret run one at a time in this process (`close` waits for them).
 * An update records its time last: one that stopped before (its description or tags written, maybe
 * its value) is done again whole by its retry, a redelivered event included (not superseded); one
 * that stopped between `RestoreSecret` and `PutSecretValue` (a process killed there; a refused
 * value schedules it again) leaves the deleted value readable (the name still tagged deleted) until
 * its retry.
 * A delete tags, removes the replicas, then schedules (AWS takes no tags on a scheduled secret): one
 * that stopped between is finished by the next delete of the name, its own redelivery included (a
 * newer write meanwhile replicates it again, as it lacks its replicas). An event's newer
 * delete of a name already scheduled restores it, tags it and schedules it again (its revoked value
 * is readable for those calls), so its time is recorded.
 * An event id that would not fit a tag value (256 characters, base64url) is recorded as its
 * SHA-256 (`recordableStamp`): every id a key event may carry, a redelivery still known.
 * Records: version (`VersionId`) and time (`CreatedDate` of the current version); tags are not
 * read back (`GetSecretValue` does not return them).
 */
import { randomUUID } from "node:crypto";
import type * as Sdk from "@aws-sdk/client-secrets-manager";
import type { DescribeSecretCommandOutput, SecretsManagerClient, Tag } from "@aws-sdk/client-secrets-manager";
import * as z from "zod/mini";
import { InvalidInput } from "../errors";
import type { Logger } from "../log";
import { isValidName } from "../names";
import {
  type ChangeStamp,
  CreationTagKeys,
  type DeleteOptions,
  type DeleteOutcome,
  directStamp,
  KeyedQueue,
  type ListOptions,
  type NamePage,
  type PutOptions,
  type PutOutcome,
  recordableStamp,
  refuseCreationTags,
  type SecretMeta,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
  stampOfChange,
} from "../secret-store";
import { classifyBackendError, NotSupported, StoreCorrupt, StoreUnavailable } from "../store-errors";
import { AwsConfigKeys, AwsEnvKeys, awsClientOptions, awsCredentials, configFileRegion, regionOf } from "./aws-config";
import { loadSdk } from "./load-sdk";

const TAG_AT = "llm-secrets:changed-at";
const TAG_ID = "llm-secrets:change-id";
const TAG_DELETED = "llm-secrets:deleted";
/** AWS's longest tag key and value, and most tags on a secret (`aws:` ones aside: AWS's own). */
const MAX_TAG_KEY = 128;
const MAX_TAG_VALUE = 256;
const MAX_TAGS = 50;
const AWS_PREFIX = /^aws:/i;
const OUR_TAGS = new Set([TAG_AT, TAG_ID, TAG_DELETED]);
/** The caller's tags a secret can hold beside ours. */
const MAX_USER_TAGS = MAX_TAGS - OUR_TAGS.size;
const DEFAULT_RECOVERY_DAYS = 7;
/** `ListSecrets`' largest `MaxResults`. */
const MAX_LIST_RESULTS = 100;
/** Our name alphabet (names.ts), which is also Secrets Manager's: a prefix outside it matches nothing. */
const NAME_CHARS = /^[A-Za-z0-9_.@+=/-]*$/;

const recoveryWindow = z.pipe(
  z.string().check(z.regex(/^\s*\d+\s*$/, "expected a whole number of days")),
  z.transform((s, ctx) => {
    const days = Number(s);
    if (days === 0 || (days >= 7 && days <= 30)) return days;
    ctx.issues.push({ code: "custom", input: s, message: "expected 0 (no recovery) or 7 to 30 days" });
    return z.NEVER;
  }),
);

export const AwsSecretsManagerSettings = z.object({
  config: z.object({
    ...AwsConfigKeys,
    kms_key_id: z.nullish(z.string()),
    replica_regions: z.nullish(z.array(z.string())),
    primary_secret_name: z.nullish(z.string()),
    ...CreationTagKeys, // checked against AWS's tag limits when the store opens
  }),
  env: z.object({ ...AwsEnvKeys, LLM_SECRETS_AWS_RECOVERY_WINDOW_DAYS: z.optional(recoveryWindow) }),
});

export interface AwsSecretsManagerOptions {
  /** The SDK module, imported when the store opens (so a bundle that ships the store loads it only then). */
  sdk: typeof Sdk;
  client: SecretsManagerClient;
  kmsKeyId?: string;
  replicaRegions?: readonly string[];
  primarySecretName?: string;
  /** 0: delete without recovery (no tombstone). */
  recoveryWindowDays?: number;
  now?: () => number;
  log: Logger;
}

/** What `DescribeSecret` tells us about a name: whether it exists, is scheduled for deletion, and its last change. */
interface Described {
  deleted: boolean;
  stamp: ChangeStamp | undefined;
  /** Its last change is a delete (scheduled, or tagged deleted): what orders a change over it. */
  stampIsDelete: boolean;
  /**
   * Tagged as deleted, not scheduled, and holding another value than the delete named: another
   * writer's since (LiteLLM's create-or-restore, the console's Cancel deletion and a new value). Live.
   */
  revived: boolean;
  /** Its tags' keys that are neither ours nor AWS's (`aws:`, which no caller may remove). */
  userTagKeys: string[];
  /** The Regions it is replicated to. */
  replicas: string[];
  /** The version `AWSCURRENT` labels: the value a read gets. */
  currentVersion: string | undefined;
}

export class AwsSecretsManagerStore implements SecretStore {
  readonly kind = "aws_secret_manager";
  readonly #sdk: typeof Sdk;
  readonly #client: SecretsManagerClient;
  readonly #options: AwsSecretsManagerOptions;
  readonly #now: () => number;
  /** Changes of one secret, one at a time in this process. */
  readonly #queues = new KeyedQueue();

  /** The recovery window: a deleted secret, with its tags (the delete's time), is kept that long. */
  get tombstoneMs(): number {
    return this.#recoveryDays() * 86_400_000;
  }

  constructor(options: AwsSecretsManagerOptions) {
    this.#sdk = options.sdk;
    this.#client = options.client;
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Secrets Manager takes our whole name alphabet (`A-Za-z0-9/_+=.@-`): no mapping. */
  keyOf(name: string): string {
    return name;
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    const primary = this.#options.primarySecretName;
    if (primary !== undefined) {
      const fields = await this.#primaryFields(primary);
      const field = fieldOf(fields, name);
      if (field !== undefined) return { value: typeof field === "string" ? field : JSON.stringify(field) };
      // Not the bundle itself, which holds every field's value (LiteLLM: `.get(name)`, None).
      if (name === primary) return undefined;
    }
    try {
      const out = await this.#client.send(new this.#sdk.GetSecretValueCommand({ SecretId: name }));
      if (out.SecretString === undefined) {
        throw new StoreCorrupt(`the AWS secret ${name} holds SecretBinary; only SecretString is read`);
      }
      return {
        value: out.SecretString,
        ...(out.VersionId !== undefined && { version: out.VersionId }),
        ...(out.CreatedDate !== undefined && { updatedAt: out.CreatedDate }),
      };
    } catch (err) {
      if (isGone(err)) return undefined;
      throw classifyBackendError(err, "aws secrets manager get");
    }
  }

  async put(name: string, value: string, options: PutOptions = {}): Promise<PutOutcome> {
    this.#refusePrimary(name, "writing");
    // What AWS would refuse, before any call: the caller's tags, and an event id too long for a tag.
    const tags = options.meta?.tags && checkedTags(options.meta.tags);
    const recorded = { ...options, ifNewerThan: recordableStamp(options.ifNewerThan, idFits) };
    return this.#queues.run(this.keyOf(name), () => this.#put(name, value, recorded, tags));
  }

  async delete(name: string, options: DeleteOptions = {}): Promise<DeleteOutcome> {
    this.#refusePrimary(name, "deleting");
    const recorded = { ...options, ifNewerThan: recordableStamp(options.ifNewerThan, idFits) };
    return this.#queues.run(this.keyOf(name), () => this.#delete(name, recorded));
  }

  /** The stamp a change records over what `DescribeSecret` found, or undefined: superseded (`stampOfChange`). */
  #stampOver(ifNewerThan: ChangeStamp | undefined, isDelete: boolean, described: Described | undefined) {
    return stampOfChange(ifNewerThan, isDelete, described?.stamp, described?.stampIsDelete ?? false, this.#now());
  }

  async #put(name: string, value: string, options: PutOptions, tags: Tag[] | undefined): Promise<PutOutcome> {
    await this.#refuseInPrimary(name, "writing");
    try {
      const described = await this.#describe(name);
      if (described === undefined) return await this.#create(name, value, options.ifNewerThan, options.meta, tags);
      const stamp = this.#stampOver(options.ifNewerThan, false, described);
      if (stamp === undefined) return "superseded";
      return await this.#update(name, value, stamp, options.meta, tags, described);
    } catch (err) {
      throw replicaRefusal(err, name, "put") ?? classifyBackendError(err, "aws secrets manager put");
    }
  }

  async #delete(name: string, options: DeleteOptions): Promise<DeleteOutcome> {
    await this.#refuseInPrimary(name, "deleting");
    try {
      let described = await this.#describe(name);
      if (described === undefined && options.ifNewerThan !== undefined && this.#recoveryDays() > 0) {
        // An event's delete of a name never written: an empty secret carries its tombstone. One
        // created meanwhile by another writer is decided as any delete of an existing name.
        if (await this.#tombstoneOnly(name, options.ifNewerThan)) return "absent";
        described = await this.#describe(name);
      }
      if (described === undefined) return "absent";
      const stamp = this.#stampOver(options.ifNewerThan, true, described);
      const newer = stamp !== undefined;
      if (described.deleted) {
        if (!newer) return "superseded";
        // Scheduled already, and AWS takes no tags on it: an event's newer delete restores it,
        // records its time and schedules it again, so a create older than this delete cannot revive
        // the name (as on Azure). A direct delete leaves it as it is.
        if (options.ifNewerThan !== undefined) {
          refuseTooManyTags(name, described.userTagKeys.length, "delete");
          await this.#client.send(new this.#sdk.RestoreSecretCommand({ SecretId: name }));
          try {
            // The deleted value's version, as read while scheduled, else (AWS need not list a
            // scheduled secret's versions) once restored.
            const version = described.currentVersion ?? (await this.#describe(name))?.currentVersion;
            await this.#tag(name, stampTags(stamp, { version }));
          } finally {
            // Restored, it is readable: scheduled again whatever the tag did (its redelivery
            // records the time then, as for any delete that stopped half-way). It has no replicas:
            // AWS deletes no replicated secret.
            await this.#scheduleDeletion(name, []);
          }
        }
        return "absent";
      }
      if (newer) {
        refuseTooManyTags(name, described.userTagKeys.length, "delete");
        await this.#tag(name, stampTags(stamp, { version: described.currentVersion }));
      }
      // Not newer, but tagged as deleted, its deleted value still current, and not scheduled: a
      // delete that stopped half-way (or a restore alone). Finish it. Revived, it is superseded.
      else if (!described.stampIsDelete || described.revived) return "superseded";
      await this.#scheduleDeletion(name, described.replicas);
      return "deleted";
    } catch (err) {
      throw replicaRefusal(err, name, "delete") ?? classifyBackendError(err, "aws secrets manager delete");
    }
  }

  async list(options: ListOptions): Promise<NamePage> {
    const prefix = options.prefix ?? "";
    if (!NAME_CHARS.test(prefix)) return { names: [] };
    try {
      const out = await this.#client.send(
        new this.#sdk.ListSecretsCommand({
          MaxResults: Math.max(1, Math.min(options.limit, MAX_LIST_RESULTS)),
          ...(prefix !== "" && { Filters: [{ Key: "name", Values: [prefix] }] }),
          ...(options.cursor !== undefined && { NextToken: options.cursor }),
        }),
      );
      const names = (out.SecretList ?? [])
        .filter(
          (s) =>
            s.DeletedDate === undefined &&
            !deletedMarkHolds(
              s.Tags?.find((t) => t.Key === TAG_DELETED)?.Value,
              currentVersionOf(s.SecretVersionsToStages),
            ),
        )
        .map((s) => s.Name ?? "")
        // The primary secret is no name of ours: its fields are (a read of its own name is a field's).
        .filter((name) => name.startsWith(prefix) && isValidName(name) && name !== this.#options.primarySecretName);
      return out.NextToken ? { names, cursor: out.NextToken } : { names };
    } catch (err) {
      if (errorName(err) === "InvalidNextTokenException") throw new InvalidInput("the cursor is not valid");
      throw classifyBackendError(err, "aws secrets manager list");
    }
  }

  async close(): Promise<void> {
    await this.#queues.settled(); // changes under way land first
    this.#client.destroy();
  }

  // ---------------------------------------------------------------------------------------------

  /**
   * Creates the secret with its value (the caller's tags, else the creation defaults, checked before
   * the call); one made meanwhile by another writer is updated instead, unless (`ifNewerThan`, an
   * event's write) that writer's change is newer.
   */
  async #create(
    name: string,
    value: string,
    ifNewerThan: ChangeStamp | undefined,
    meta: SecretMeta | undefined,
    tags: Tag[] | undefined,
  ): Promise<PutOutcome> {
    const stamp = ifNewerThan ?? { at: this.#now() };
    const { kmsKeyId, replicaRegions } = this.#options;
    const userTags = tags ?? checkedTags(meta?.whenCreated?.tags);
    try {
      await this.#client.send(
        new this.#sdk.CreateSecretCommand({
          Name: name,
          SecretString: value,
          ClientRequestToken: randomUUID(),
          Description: meta?.description ?? meta?.whenCreated?.description,
          ...(kmsKeyId && { KmsKeyId: kmsKeyId }),
          Tags: [...userTags, ...stampTags(stamp, false)],
          ...(replicaRegions?.length && { AddReplicaRegions: replicaRegions.map((Region) => ({ Region })) }),
        }),
      );
      return "created";
    } catch (err) {
      const kind = errorName(err);
      if (kind === "ResourceExistsException" || (kind === "InvalidRequestException" && isScheduledForDeletion(err))) {
        const described = await this.#describe(name);
        if (described) {
          const over = this.#stampOver(ifNewerThan, false, described);
          return over === undefined ? "superseded" : this.#update(name, value, over, meta, tags, described);
        }
      }
      throw err;
    }
  }

  /**
   * A new current version of an existing secret: the given description and tags (which replace the
   * secret's own) and the replica Regions it lacks first, then the value (first of all when the
   * secret is scheduled for deletion: restored, then the value), then its change stamp. Over a
   * tombstone (its last change a delete) the name is made anew: the creation defaults stand in for
   * a description and tags not given.
   */
  async #update(
    name: string,
    value: string,
    stamp: ChangeStamp,
    meta: SecretMeta | undefined,
    given: Tag[] | undefined,
    described: Described,
  ): Promise<PutOutcome> {
    const anew = described.stampIsDelete && !described.revived;
    const description = meta?.description ?? (anew ? meta?.whenCreated?.description : undefined);
    const tags = given ?? (anew ? checkedTags(meta?.whenCreated?.tags) : undefined);
    // Tags given (checked above) replace the secret's; kept, its own must leave room for ours.
    if (tags === undefined) refuseTooManyTags(name, described.userTagKeys.length, "put");
    // One token for the value: the SDK's retries reuse it, and it becomes the new version's id.
    const token = randomUUID();
    const putValue = () =>
      this.#client.send(
        new this.#sdk.PutSecretValueCommand({ SecretId: name, SecretString: value, ClientRequestToken: token }),
      );
    if (described.deleted) {
      await this.#client.send(new this.#sdk.RestoreSecretCommand({ SecretId: name }));
      // Restored, it reads its deleted (revoked) value back: the new one goes in at once, and if
      // it cannot, the secret is scheduled for deletion again (the write fails; a direct PUT has no
      // redelivery to finish it). The deleted value's version, as read while scheduled, else (AWS
      // need not list a scheduled secret's versions) once restored; not known if that read fails.
      let revoked: { version: string | undefined } | undefined =
        described.currentVersion === undefined ? undefined : { version: described.currentVersion };
      try {
        revoked ??= { version: (await this.#describe(name))?.currentVersion };
        await putValue();
      } catch (err) {
        // The value may have landed with its answer lost: then it is the current version, and the
        // write goes on. Else the write's undoing, and the write fails.
        const after = await this.#describe(name).then(
          (found) => ({ found }),
          () => undefined,
        );
        if (after?.found?.currentVersion !== token) {
          await this.#deleteAgainIfUnchanged(name, described, revoked, after).catch((again: unknown) =>
            this.#options.log.warn(
              "aws secrets manager: a failed write over a deleted name could not be undone (its deleted value may be readable)",
              { name, code: errorName(again) },
            ),
          );
          throw err;
        }
      }
    }
    if (description !== undefined) {
      await this.#client.send(new this.#sdk.UpdateSecretCommand({ SecretId: name, Description: description }));
    }
    if (tags) {
      // The new tags on before the stale ones come off, so a refused TagResource leaves the secret's
      // tags as they were (tag-based IAM keeps working); off first only when both would pass AWS's 50.
      const stale = described.userTagKeys.filter((key) => !tags.some((t) => t.Key === key));
      const untag = async () => {
        if (stale.length > 0) {
          await this.#client.send(new this.#sdk.UntagResourceCommand({ SecretId: name, TagKeys: stale }));
        }
      };
      if (stale.length + tags.length > MAX_USER_TAGS) await untag();
      await this.#tag(name, tags);
      if (stale.length + tags.length <= MAX_USER_TAGS) await untag();
    }
    // The replica Regions it lacks: all of them once restored (deleted, it had none), or after a
    // delete that stopped once it had removed them.
    const missing = (this.#options.replicaRegions ?? []).filter((region) => !described.replicas.includes(region));
    if (missing.length > 0) {
      await this.#client.send(
        new this.#sdk.ReplicateSecretToRegionsCommand({
          SecretId: name,
          AddReplicaRegions: missing.map((Region) => ({ Region })),
        }),
      );
    }
    if (!described.deleted) await putValue();
    await this.#tag(name, stampTags(stamp, false));
    return described.deleted ? "created" : "updated";
  }

  /**
   * An empty secret to carry a tombstone (false when another writer created the name first): made with `kms_key_id`, as the value a later write puts
   * in it is encrypted with the secret's key; with no replicas (it is deleted at once, and AWS
   * deletes no replicated secret) and no description (a write over it sets its own).
   */
  async #tombstoneOnly(name: string, stamp: ChangeStamp): Promise<boolean> {
    const { kmsKeyId } = this.#options;
    try {
      await this.#client.send(
        new this.#sdk.CreateSecretCommand({
          Name: name,
          ClientRequestToken: randomUUID(),
          ...(kmsKeyId && { KmsKeyId: kmsKeyId }),
          Tags: stampTags(stamp, { version: undefined }),
        }),
      );
    } catch (err) {
      // Created meanwhile by another writer: not made here (the caller decides which change wins).
      if (errorName(err) === "ResourceExistsException") return false;
      throw err;
    }
    await this.#scheduleDeletion(name, []);
    return true;
  }

  /**
   * After a write that restored `name` failed to put its value in: the secret scheduled for deletion
   * again while its deleted value is still the current one (no writer, ours or another tool's, has
   * put a value since), or when another delete has tagged it since (and stopped before its
   * DeleteSecret); a value another writer put meanwhile stands, recorded as a change now. `revoked`: the deleted value's
   * version; not known, the secret is scheduled again (the revoked value must not stay readable).
   * `looked`: what a DescribeSecret just after the failure found, when it answered.
   */
  async #deleteAgainIfUnchanged(
    name: string,
    before: Described,
    revoked: { version: string | undefined } | undefined,
    looked: { found: Described | undefined } | undefined,
  ): Promise<void> {
    const now = looked ? looked.found : await this.#describe(name);
    if (now === undefined || now.deleted) return;
    const unwritten = revoked === undefined || now.currentVersion === revoked.version;
    const deletedSince = now.stampIsDelete && !sameStamp(now.stamp, before.stamp);
    if (unwritten || deletedSince) await this.#scheduleDeletion(name, now.replicas);
    // Another writer's value, the secret still tagged as deleted: recorded as a change now, so it is
    // listed, and no late delete takes it for a delete that stopped half-way.
    else if (now.stampIsDelete) await this.#tag(name, stampTags(directStamp(now.stamp, this.#now()), false));
  }

  /** `DeleteSecret`, its replicas removed first: AWS deletes no secret replicated to other Regions. */
  async #scheduleDeletion(name: string, replicas: readonly string[]): Promise<void> {
    if (replicas.length > 0) {
      await this.#client.send(
        new this.#sdk.RemoveRegionsFromReplicationCommand({ SecretId: name, RemoveReplicaRegions: [...replicas] }),
      );
    }
    const days = this.#recoveryDays();
    try {
      await this.#client.send(
        new this.#sdk.DeleteSecretCommand(
          days === 0
            ? { SecretId: name, ForceDeleteWithoutRecovery: true }
            : { SecretId: name, RecoveryWindowInDays: days },
        ),
      );
    } catch (err) {
      // Scheduled meanwhile by another writer (a delete, or a failed write's undoing): done.
      if (errorName(err) === "InvalidRequestException" && isScheduledForDeletion(err)) return;
      throw err;
    }
  }

  #recoveryDays(): number {
    return this.#options.recoveryWindowDays ?? DEFAULT_RECOVERY_DAYS;
  }

  async #tag(name: string, tags: Tag[]): Promise<void> {
    if (tags.length > 0) await this.#client.send(new this.#sdk.TagResourceCommand({ SecretId: name, Tags: tags }));
  }

  async #describe(name: string): Promise<Described | undefined> {
    let out: DescribeSecretCommandOutput;
    try {
      out = await this.#client.send(new this.#sdk.DescribeSecretCommand({ SecretId: name }));
    } catch (err) {
      if (errorName(err) === "ResourceNotFoundException") return undefined;
      throw err;
    }
    const tags = new Map((out.Tags ?? []).map((t) => [t.Key ?? "", t.Value ?? ""]));
    const at = Number(tags.get(TAG_AT));
    const id = tags.get(TAG_ID);
    const deleted = out.DeletedDate !== undefined;
    const currentVersion = currentVersionOf(out.VersionIdsToStages);
    const mark = tags.get(TAG_DELETED);
    const marked = mark !== undefined && mark !== "false";
    return {
      deleted,
      stamp: Number.isFinite(at) && tags.has(TAG_AT) ? { at, ...(id && { id: decodeId(id) }) } : undefined,
      stampIsDelete: deleted || marked,
      revived: !deleted && marked && !deletedMarkHolds(mark, currentVersion),
      userTagKeys: [...tags.keys()].filter((key) => !OUR_TAGS.has(key) && !AWS_PREFIX.test(key)),
      replicas: (out.ReplicationStatus ?? []).flatMap((r) => (r.Region ? [r.Region] : [])),
      currentVersion,
    };
  }

  /** The fields of the primary secret, or undefined when it does not exist. */
  async #primaryFields(primary: string): Promise<Record<string, unknown> | undefined> {
    let text: string | undefined;
    try {
      text = (await this.#client.send(new this.#sdk.GetSecretValueCommand({ SecretId: primary }))).SecretString;
    } catch (err) {
      if (isGone(err)) return undefined;
      throw classifyBackendError(err, "aws secrets manager get (primary secret)");
    }
    if (text === undefined || text.trim() === "") return {};
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed))
        return parsed as Record<string, unknown>;
    } catch {
      // reported below
    }
    throw new StoreCorrupt("the primary_secret_name secret is not a JSON object");
  }

  /** The primary secret itself is not written or deleted through a name, before any call: it holds every field. */
  #refusePrimary(name: string, what: string): void {
    if (name === this.#options.primarySecretName) {
      throw new NotSupported(
        `${what} ${name}, the primary_secret_name secret itself (the JSON object that holds its fields; change it in AWS),`,
      );
    }
  }

  async #refuseInPrimary(name: string, what: string): Promise<void> {
    const primary = this.#options.primarySecretName;
    if (primary === undefined) return;
    if (fieldOf(await this.#primaryFields(primary), name) !== undefined) {
      throw new NotSupported(`${what} ${name}, a field of the primary_secret_name secret,`);
    }
  }
}

/**
 * The primary secret's field `name`, or undefined when it has none: a `null` field is none, as
 * LiteLLM's `json.loads(primary).get(name)` gives None for it (not found), never the text `null`.
 */
function fieldOf(fields: Record<string, unknown> | undefined, name: string): unknown {
  return fields !== undefined && Object.hasOwn(fields, name) && fields[name] !== null ? fields[name] : undefined;
}

function sameStamp(a: ChangeStamp | undefined, b: ChangeStamp | undefined): boolean {
  return a?.at === b?.at && a?.id === b?.id;
}

function errorName(err: unknown): string | undefined {
  return (err as { name?: unknown } | null)?.name as string | undefined;
}

/** Not found, or scheduled for deletion: either way the name holds no value. */
function isGone(err: unknown): boolean {
  const name = errorName(err);
  return name === "ResourceNotFoundException" || (name === "InvalidRequestException" && isScheduledForDeletion(err));
}

/**
 * A change refused because this region holds a replica of the secret, read-only here (AWS:
 * `InvalidRequestException`, "Operation not permitted on a replica secret. Call must be made in
 * primary secret's region."): a deployment to fix, not our failure. Only that phrase is read.
 */
function replicaRefusal(err: unknown, name: string, op: string): StoreUnavailable | undefined {
  if (errorName(err) !== "InvalidRequestException" || !/\breplica secret\b/i.test((err as Error).message ?? "")) {
    return undefined;
  }
  return new StoreUnavailable(
    `aws secrets manager ${op}: ${name} is a replica in this region, read-only here: change it in its primary region`,
    { cause: err },
  );
}

function isScheduledForDeletion(err: unknown): boolean {
  return /marked for deletion|scheduled for deletion/i.test((err as Error).message ?? "");
}

/**
 * The caller's tags as AWS tags (ours are never taken from a caller), or `invalid_request` for what
 * AWS would refuse (TagResource, Tag): a key or value starting `aws:` (in any case), a key of 0 or
 * over 128 characters, a value over 256, more than AWS's 50 with our 3.
 */
function checkedTags(tags: Readonly<Record<string, string>> | undefined): Tag[] {
  const entries = Object.entries(tags ?? {}).filter(([Key]) => !OUR_TAGS.has(Key));
  if (entries.length > MAX_USER_TAGS) {
    throw new InvalidInput(
      `AWS Secrets Manager keeps at most ${MAX_TAGS} tags on a secret, ${OUR_TAGS.size} of them ours: ${entries.length} tags are too many`,
    );
  }
  for (const [key, value] of entries) {
    if (AWS_PREFIX.test(key) || AWS_PREFIX.test(value)) {
      throw new InvalidInput("AWS reserves the aws: prefix of tag keys and values for its own use");
    }
    if (key.length === 0 || key.length > MAX_TAG_KEY || value.length > MAX_TAG_VALUE) {
      throw new InvalidInput(`an AWS tag key is 1 to ${MAX_TAG_KEY} characters and its value at most ${MAX_TAG_VALUE}`);
    }
  }
  return entries.map(([Key, Value]) => ({ Key, Value }));
}

/**
 * `store_unavailable` before any change when the secret's own tags (`userTags`: those a put leaves,
 * or a delete keeps; AWS's `aws:` ones do not count) and our 3 would pass AWS's 50: a secret made
 * by another tool with more than 47. TagResource would refuse our change record after the value
 * went in (the change time lost, each retry a new version) or before every DeleteSecret (the
 * secret never deleted). The secret's state, for its owner to fix, not the caller's request.
 */
function refuseTooManyTags(name: string, userTags: number, op: "put" | "delete"): void {
  if (userTags <= MAX_USER_TAGS) return;
  throw new StoreUnavailable(
    `aws secrets manager ${op}: ${name} holds ${userTags} tags of its own and AWS keeps ${MAX_TAGS} on a secret, ${OUR_TAGS.size} of them llm-secrets' record of its changes: remove ${userTags - MAX_USER_TAGS} of its tags`,
  );
}

/** Whether an event id, encoded, fits a tag value (else it is recorded as its digest: `recordableStamp`). */
function idFits(id: string): boolean {
  return encodeId(id).length <= MAX_TAG_VALUE;
}

/**
 * Our 3 tags for a change: a write (`deleted` false), or a delete, whose mark names the version
 * `AWSCURRENT` labelled when it was tagged (`deletedMark`).
 */
function stampTags(stamp: ChangeStamp, deleted: false | { version: string | undefined }): Tag[] {
  return [
    { Key: TAG_AT, Value: String(stamp.at) },
    { Key: TAG_ID, Value: stamp.id === undefined ? "" : encodeId(stamp.id) },
    { Key: TAG_DELETED, Value: deleted ? deletedMark(deleted.version) : "false" },
  ];
}

/** A delete's mark on a secret that held no value (a tombstone made for a name never written); no `VersionId` is this short. */
const NO_VERSION = "none";
/** A version id that can be a tag value as it is (AWS's tag alphabet, no `aws:`, no `.`, which marks an encoded one). */
const PLAIN_VERSION = /^[\w:/=+@-][\w.:/=+@-]*$/;

/**
 * The `llm-secrets:deleted` value of a delete: the version it deleted, so another writer's value
 * put since (LiteLLM's create-or-restore: `RestoreSecret`, then `UpdateSecret`) is told from it.
 * A version id outside the tag alphabet (AWS takes any 32 to 64 characters) is encoded as an event id is.
 */
function deletedMark(version: string | undefined): string {
  if (version === undefined) return NO_VERSION;
  return PLAIN_VERSION.test(version) && !AWS_PREFIX.test(version) ? version : encodeId(version);
}

/**
 * Whether a secret's `llm-secrets:deleted` tag (`mark`) makes it a deleted name, its current
 * version `current`: the version the delete named is still current (not scheduled, that is a
 * delete that stopped half-way, or a restore alone: Cancel deletion). `true`, written by earlier
 * builds, names no version: deleted whatever it holds. `false` or none: a write's.
 */
function deletedMarkHolds(mark: string | undefined, current: string | undefined): boolean {
  if (mark === undefined || mark === "false") return false;
  if (mark === "true") return true;
  return (mark === NO_VERSION ? undefined : decodeId(mark)) === current;
}

/** The version `AWSCURRENT` labels in a `VersionIdsToStages` (DescribeSecret) or `SecretVersionsToStages` (ListSecrets). */
function currentVersionOf(stages: Record<string, string[]> | undefined): string | undefined {
  return Object.entries(stages ?? {}).find(([, labels]) => labels?.includes("AWSCURRENT"))?.[0];
}

/** Event ids go in a tag value, whose alphabet is narrow: base64url (`.` prefix marks it). */
function encodeId(id: string): string {
  return `.${Buffer.from(id, "utf8").toString("base64url")}`;
}

function decodeId(value: string): string | undefined {
  if (value === "") return undefined;
  return value.startsWith(".") ? Buffer.from(value.slice(1), "base64url").toString("utf8") : value;
}

export const awsSecretsManagerStore = {
  kind: "aws_secret_manager",
  settings: AwsSecretsManagerSettings,
  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false },
  capabilities: {
    writes: true,
    deletes: true,
    compareAndSet: true,
    maxValueBytes: 65_536,
    records: ["version", "updatedAt"],
  },
  open: async (settings, deps) => {
    const { config, env } = settings;
    refuseCreationTags(config, awsSecretsManagerStore.defaults.accessMode, checkedTags);
    const sdk = await loadSdk(() => import("@aws-sdk/client-secrets-manager"));
    // None in the settings or the variables: the shared config file's, as LiteLLM (boto3) takes it.
    const region = regionOf(config, env) ?? (await configFileRegion(sdk.SecretsManagerClient, config, deps.env));
    const options = awsClientOptions({ ...config, aws_region_name: region }, env, deps.log, undefined, deps.outbound);
    return new AwsSecretsManagerStore({
      sdk,
      client: new sdk.SecretsManagerClient({
        ...options,
        ...(await awsCredentials(config, deps.env, options, deps.log)),
      }),
      kmsKeyId: config.kms_key_id ?? undefined,
      replicaRegions: config.replica_regions ?? undefined,
      primarySecretName: config.primary_secret_name ?? undefined,
      recoveryWindowDays: env.LLM_SECRETS_AWS_RECOVERY_WINDOW_DAYS,
      now: deps.now,
      log: deps.log,
    });
  },
} as const satisfies StoreFactory<"aws_secret_manager", typeof AwsSecretsManagerSettings>;
