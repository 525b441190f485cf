/**
 * `google_secret_manager`: Google Secret Manager through `@google-cloud/secret-manager` (gRPC;
 * SPEC section 3, LiteLLM's `GoogleSecretManager`). A secret per name under
 * `projects/{GOOGLE_SECRET_MANAGER_PROJECT_ID}`, its value its newest version's (`versions/latest`,
 * whatever its state: when that one is disabled or destroyed, FAILED_PRECONDITION saying so, the
 * name reads as not found, as LiteLLM reads it, an older enabled version never read).
 * Reached only as `@llm-secrets/core/stores/google`: importing the core root loads no Google
 * library, and the library itself is imported when the store opens.
 *
 * - Names: secret ids take `[A-Za-z0-9_-]`, 255 at most (a longer name is `400 invalid_name` before
 *   any call); every other character of a name becomes `-` (`keyOf`), and the name as written is
 *   kept in the annotation `llm-secrets.name`. A write whose id already holds another live name is
 *   `409 name_conflict` (over another name's tombstone it is ordered against the tombstone's time,
 *   as over its own, and takes the id; one another writer gave a value since is live); a read of
 *   a name whose id holds another is no secret. A secret made
 *   elsewhere (no annotation) is read, and adopted on the first direct write; a change with `adopt:
 *   false` (a key event's, a virtual key's write) of it is `409 name_conflict`: key aliases are
 *   chosen by whoever makes LiteLLM keys, so they must not take over (or destroy) a console-made
 *   secret their name maps onto.
 * - Read: `versions/latest:access`, and at the same time the secret itself (its name, deleted
 *   mark and labels), which counts against Google's 600 read requests a minute per project. An identity granted only `secretmanager.versions.access`
 *   (`roles/secretmanager.secretAccessor`, all LiteLLM needs) is refused the secret: a name that is
 *   its own id then reads as LiteLLM reads it (no tags, no owner or deleted-mark check), a mapped
 *   name is `backend_denied`. The secret throttled or unavailable while the value came back: a
 *   name that is its own id with no `-` (which no other name can hold) is read without it (no tags,
 *   no deleted-mark check), any other is `backend_unavailable`.
 * - Write: create the secret if missing (automatic replication; `tags` as labels), then add a
 *   version; over a tombstone (one another writer gave a value since too), its labels are set as on
 *   creation (the caller's tags, else the creation defaults); a secret deleted between the write's
 *   look and its calls (NOT_FOUND: another instance purging) is looked at again and made anew.
 *   Differs from LiteLLM, which only reads.
 * - Delete: every version is destroyed and the secret stays, annotated as deleted (the tombstone),
 *   so a late event cannot revive the name, with the highest version number it had then
 *   (`llm-secrets.deleted-through`). A version added since by another writer (`gcloud secrets
 *   versions add`, as values reach Google for LiteLLM) is not covered: when it is the latest and
 *   enabled, the name reads as its value (labels as tags) and is changed as a live secret (a write
 *   answers `updated`, a newer delete `deleted`), its tombstone's time still ordering events; the
 *   delete's own event again destroys only versions up to that number (what a delete stopped
 *   half-way left) and answers `superseded`. A mark without the number (an earlier build's) covers
 *   every version. `LLM_SECRETS_GOOGLE_PURGE=true` deletes the secret itself instead (no
 *   tombstone). An event's delete of a name never written creates an empty secret to carry its
 *   tombstone (`deleted-through` 0); one another writer created meanwhile is deleted as any
 *   existing secret (unless that writer's change is newer). A secret deleted by someone else
 *   between the delete's read and its calls (NOT_FOUND) is gone: `deleted`, `absent` if it was a
 *   tombstone. With delayed destroy (`version_destroy_ttl`), a version DISABLED with its destroy
 *   scheduled counts as destroyed.
 * - List: `listSecrets`, one page of `pageSize` = the limit (`pageToken` the cursor), each secret's
 *   name as written (its annotation; the id for a secret made elsewhere), tombstones left out,
 *   also one another writer gave a value since, which a read serves (a known limit: telling them
 *   apart would take a call per tombstone).
 *   No server filter: Google's `name:` is not a prefix match (and ids are mapped names), so the
 *   prefix is matched here, and a page may hold fewer names than the limit.
 *
 * What it records: each change's time and event id in the annotations `llm-secrets.changed-at`,
 * `llm-secrets.change-id`, `llm-secrets.deleted` and a delete's `llm-secrets.deleted-through`
 * (annotation keys take no `/`; keys and values together stay under 16 KiB: a change that would
 * not fit is refused before any write, `400 invalid_request` when its own event id is too long,
 * `500 store_unavailable` when the secret's other annotations leave no room). `ifNewerThan` is
 * read-then-write: the secret is read, then written, so a writer between the two can be
 * overwritten; ties break by event id.
 * A change is several calls, ordered so that one stopped half-way is finished when its event comes
 * again: a write adds its version before recording its time (a new secret is made with no time),
 * a delete records its time before destroying the versions, and the next delete of the name
 * destroys any left. A secret marked deleted reads as nothing but a version newer than its mark's
 * (so a write over it not done yet reads as its value, as over a live secret, and its event again
 * answers `updated`). Changes of one secret run one at a time in this process; between processes,
 * a late delete arriving while a newer write is between its version and its time can destroy that
 * version (the write's own redelivery cannot repair it: its time is recorded).
 * Records: the version number and the tags (labels: lower-case letters, digits, `_` and `-`; 64 at
 * most, more is `400 invalid_request` before any write).
 * Retries: ours (`googleCallOptions`), not the library's settings: a read makes 3 attempts on
 * UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED; once they run out, the error names the last
 * attempt's code (not the library's DEADLINE_EXCEEDED). A change is tried again only on
 * RESOURCE_EXHAUSTED: after a deadline or UNAVAILABLE it may be done, and is `backend_unavailable`
 * (a write whose CreateSecret answered late, tried again whole, finds the secret it made, empty,
 * and answers `updated`, as after any write stopped before its version; a version added late is
 * there, and the write tried again adds the next).
 */
import type * as Sdk from "@google-cloud/secret-manager";
import * as z from "zod/mini";
import { InvalidInput, InvalidName } from "../errors";
import { isValidName } from "../names";
import {
  type ChangeStamp,
  CreationTagKeys,
  type DeleteOptions,
  type DeleteOutcome,
  KeyedQueue,
  type ListOptions,
  type NamePage,
  type PutOptions,
  type PutOutcome,
  refuseCreationTags,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
  stampOfChange,
} from "../secret-store";
import { classifyBackendError, GrpcCode, MadeOutside, NameConflict, StoreUnavailable } from "../store-errors";
import { endpointUrl, googleCallOptions, googleTlsOptions, READ_RETRY_CODES, readyClient } from "./google-config";
import { loadSdk } from "./load-sdk";

type Client = InstanceType<typeof Sdk.SecretManagerServiceClient>;
type Secret = Sdk.protos.google.cloud.secretmanager.v1.ISecret;
type SecretVersion = Sdk.protos.google.cloud.secretmanager.v1.ISecretVersion;

// Annotation keys take letters, digits, `-`, `_` and `.` (begin and end alphanumeric): no `/`.
const NAME = "llm-secrets.name";
const AT = "llm-secrets.changed-at";
const ID = "llm-secrets.change-id";
const DELETED = "llm-secrets.deleted";
/**
 * With the deleted mark: the highest version number the secret had when its delete marked it, and
 * that delete's time (`<n>@<changed-at>`). A newer version is another writer's (`gcloud secrets
 * versions add`), which the mark does not cover. Its time ties it to the delete that wrote it: an
 * earlier build's write and delete keep the annotations they do not know, so a number left by
 * another delete (a time other than the mark's own) says nothing, as a mark without one.
 */
const THROUGH = "llm-secrets.deleted-through";
/** Google keeps a secret's annotations, keys and values together, under 16 KiB (UTF-8). */
const MAX_ANNOTATION_BYTES = 16 * 1024;
/** Secret ids are 1 to 255 characters (names go up to 256). */
const MAX_ID = 255;
/** Labels on a secret, at most. */
const MAX_LABELS = 64;
const LABEL_KEY = /^[a-z][a-z0-9_-]{0,62}$/;
const LABEL_VALUE = /^[a-z0-9_-]{0,63}$/;

/** gRPC status codes the store decides on itself. */
const { INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, ALREADY_EXISTS, FAILED_PRECONDITION } = GrpcCode;

const flag = z.optional(z.string());

export const GoogleSecretManagerSettings = z.object({
  config: z.object({ ...CreationTagKeys }), // checked as labels when the store opens
  env: z.object({
    GOOGLE_SECRET_MANAGER_PROJECT_ID: z.string().check(z.minLength(1, "set it to the project that holds the secrets")),
    LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT: z.optional(endpointUrl),
    LLM_SECRETS_GOOGLE_PURGE: flag,
  }),
});

export interface GoogleSecretManagerOptions {
  client: Client;
  project: string;
  /** Delete the secret itself rather than leave a tombstone. */
  purge?: boolean;
  /** Per attempt; a read makes 3 attempts, a change more only when throttled. */
  deadlineMs?: number;
  now?: () => number;
}

interface Found {
  secret: Secret;
  stamp: ChangeStamp | undefined;
  stampIsDelete: boolean;
  /**
   * The secret is a tombstone (deleted by us) or never held a value; not one another writer gave a
   * value since its delete (its latest version newer than `through` and enabled), which is live.
   */
  deleted: boolean;
  /** Of a secret marked deleted: the highest version its delete saw, undefined for a mark of an earlier build. */
  through?: number;
  /** Of a secret marked deleted with `through`: its versions, listed to tell whether another writer added one. */
  versions?: SecretVersion[];
}

export class GoogleSecretManagerStore implements SecretStore {
  readonly kind = "google_secret_manager";
  readonly #client: Client;
  readonly #project: string;
  readonly #purge: boolean;
  /** Options of a read; of a change, tried again only when throttled (`googleCallOptions`). */
  readonly #call: ReturnType<typeof googleCallOptions>;
  readonly #change: ReturnType<typeof googleCallOptions>;
  readonly #now: () => number;
  /** Changes of one secret, one at a time in this process. */
  readonly #queues = new KeyedQueue();

  constructor(options: GoogleSecretManagerOptions) {
    this.#client = options.client;
    this.#project = options.project;
    this.#purge = options.purge ?? false;
    this.#call = googleCallOptions(options.deadlineMs);
    this.#change = googleCallOptions(options.deadlineMs, "change");
    this.#now = options.now ?? Date.now;
  }

  keyOf(name: string): string {
    return name.replace(/[^A-Za-z0-9_-]/g, "-");
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    const path = this.#path(name);
    await this.#ready("google secret manager get");
    // The secret itself (whose it is, whether it is marked deleted, its labels) asked at the same
    // time as its latest version: one round trip. The version decides first.
    const meta = this.#client.getSecret({ name: path }, this.#call).then(
      ([found]) => ({ secret: found as Secret }),
      (err: unknown) => ({ err }),
    );
    let access: Sdk.protos.google.cloud.secretmanager.v1.IAccessSecretVersionResponse;
    try {
      [access] = await this.#client.accessSecretVersion({ name: `${path}/versions/latest` }, this.#call);
    } catch (err) {
      // No secret, or its newest version disabled or destroyed (a tombstone, a console's disable):
      // either way no value. Another FAILED_PRECONDITION (of the project, a key) is an error.
      if (codeOf(err) === NOT_FOUND || versionNotEnabled(err)) return undefined;
      throw classifyBackendError(err, "google secret manager get");
    }
    const found = await meta;
    let secret: Secret | undefined;
    if ("secret" in found) secret = found.secret;
    else {
      const err = found.err;
      if (codeOf(err) === NOT_FOUND) return undefined; // deleted since
      // Granted only versions.access (roles/secretmanager.secretAccessor, all LiteLLM needs): a
      // name that is its own secret id reads as LiteLLM reads it, without its tags. A mapped name
      // cannot be told from another name of its id without the annotations.
      const refused = codeOf(err) === PERMISSION_DENIED && this.keyOf(name) === name;
      // The secret throttled or unavailable while its value came back (secrets.get has 600 reads a
      // minute per project, versions.access 90 000): the value is served without the secret when
      // the annotations could not change the answer. Its id must be the name itself, with no `-`:
      // every mapped name's id has a `-` where a character was replaced, so no other name can hold
      // it. What is not checked: the deleted mark of a delete that stopped between its mark and its
      // destroys (its caller was answered an error; the value is what a read just before it gave;
      // a delete done destroyed the latest version, read as nothing above). No tags. Any other
      // name: the error stands (backend_unavailable, answered stale from the cache where it can).
      const unread =
        (READ_RETRY_CODES as readonly unknown[]).includes(codeOf(err)) &&
        this.keyOf(name) === name &&
        !name.includes("-");
      if (!refused && !unread) {
        throw classifyBackendError(
          err,
          codeOf(err) === PERMISSION_DENIED
            ? "google secret manager get (the secret's annotations: secretmanager.secrets.get, roles/secretmanager.viewer)"
            : "google secret manager get",
        );
      }
    }
    const holder = secret?.annotations?.[NAME];
    if (holder !== undefined && holder !== name) return undefined;
    // Annotated as deleted: a tombstone, or a delete that stopped half-way. Unless the latest
    // version is newer than those the delete saw: another writer's value since (`gcloud secrets
    // versions add`, or a write of ours over the tombstone not done yet), read as LiteLLM reads it.
    if (secret?.annotations?.[DELETED] === "true") {
      const through = deletedThrough(secret.annotations);
      if (through === undefined || !(versionNumber(access.name) > through)) return undefined;
    }
    // proto3 leaves an empty value's bytes off the wire.
    const data = access.payload?.data ?? new Uint8Array();
    const labels = { ...(secret?.labels ?? {}) };
    return {
      value: Buffer.from(data as Uint8Array | string).toString("utf8"),
      version: access.name?.split("/").at(-1) ?? "",
      ...(Object.keys(labels).length > 0 && { tags: labels }),
    };
  }

  put(name: string, value: string, options: PutOptions = {}): Promise<PutOutcome> {
    return this.#queues.run(this.keyOf(name), () => this.#put(name, value, options));
  }

  delete(name: string, options: DeleteOptions = {}): Promise<DeleteOutcome> {
    return this.#queues.run(this.keyOf(name), () => this.#delete(name, options));
  }

  async #put(name: string, value: string, options: PutOptions): Promise<PutOutcome> {
    try {
      try {
        return await this.#putOnce(name, value, options);
      } catch (err) {
        // The secret deleted between this write's look and its calls (another instance purging, a
        // console): looked at again, it is a name never written, and made anew.
        if (codeOf(err) !== NOT_FOUND) throw err;
        return await this.#putOnce(name, value, options);
      }
    } catch (err) {
      throw classifyBackendError(err, "google secret manager put");
    }
  }

  async #putOnce(name: string, value: string, options: PutOptions): Promise<PutOutcome> {
    const meta = options.meta;
    // The caller's tags and our annotations before any call; the creation defaults only when creating (below).
    const labels = meta?.tags !== undefined ? checkedLabels(meta.tags) : undefined;
    // A name made anew (created, or over a tombstone) takes the caller's tags, else the creation
    // defaults; checked only then (defaults a live secret never takes are not its concern).
    const labelsOfNew = () => labels ?? checkedLabels(meta?.whenCreated?.tags);
    checkedAnnotations(undefined, annotations(name, options.ifNewerThan ?? { at: this.#now() }, false));
    await this.#ready("google secret manager put");
    const noAdopt = options.adopt === false;
    let found = await this.#find(name, noAdopt, options.replaces);
    let created = false;
    if (found === undefined) {
      // Made with no time: the time is recorded once the value is in, so a write that stops
      // before its version is not taken for done when its event comes again.
      created = await this.#create(name, { labels: labelsOfNew(), annotations: { [NAME]: name } });
      if (!created) found = await this.#find(name, noAdopt, options.replaces);
    }
    const stamp = this.#stampOver(options.ifNewerThan, false, found);
    if (stamp === undefined) return "superseded";
    // Checked before the version: with the secret's own annotations they must still fit. A delete's
    // `deleted-through` is dropped: left beside a later delete's mark that has none (an earlier
    // build's), it would be taken for that delete's.
    const { [THROUGH]: _through, ...current } = found?.secret.annotations ?? { [NAME]: name };
    const notes = checkedAnnotations(current, annotations(name, stamp, false));
    // Over a tombstone the name is made anew, none of the deleted secret's labels kept (nor over
    // one another writer gave a value since: its labels are still the deleted name's). Over a live
    // secret, the caller's tags if any.
    const newLabels = found?.stampIsDelete ? labelsOfNew() : labels;
    await this.#client.addSecretVersion(
      { parent: this.#path(name), payload: { data: Buffer.from(value, "utf8") } },
      this.#change,
    );
    await this.#update(name, notes, found !== undefined ? newLabels : undefined);
    // Over a tombstone, created; over an empty secret another writer (or a stopped attempt) made, or
    // a tombstone another writer gave a value since (which reads as that value), updated.
    return created || (found?.deleted === true && found.stamp !== undefined) ? "created" : "updated";
  }

  async #delete(name: string, options: DeleteOptions): Promise<DeleteOutcome> {
    try {
      const ours = (stamp: ChangeStamp, through: number) => ({
        ...annotations(name, stamp, true),
        [THROUGH]: `${through}@${stamp.at}`,
      });
      if (!this.#purge) checkedAnnotations(undefined, ours(options.ifNewerThan ?? { at: this.#now() }, 0)); // a purge records nothing
      await this.#ready("google secret manager delete");
      const noAdopt = options.adopt === false;
      let found = await this.#find(name, noAdopt);
      if (found === undefined) {
        if (options.ifNewerThan === undefined || this.#purge) return "absent";
        // An event's delete of a name never written: an empty secret carries its tombstone. One
        // created meanwhile by another writer is decided as any delete of an existing name.
        if (await this.#create(name, { annotations: ours(options.ifNewerThan, 0) })) return "absent";
        found = await this.#find(name, noAdopt);
        if (found === undefined) return "absent";
      }
      const stamp = this.#stampOver(options.ifNewerThan, true, found);
      const newer = stamp !== undefined;
      const gone = found.deleted ? "absent" : "deleted";
      try {
        if (this.#purge) {
          if (!newer) return "superseded";
          await this.#client.deleteSecret({ name: this.#path(name) }, this.#change);
          return gone;
        }
        if (!newer && !found.stampIsDelete) return "superseded";
        // Listed before the mark, which records the highest of them: any newer is another writer's.
        const versions = found.versions ?? (await this.#versions(name));
        if (newer) {
          const through = Math.max(0, ...versions.map((v) => versionNumber(v.name)).filter(Number.isFinite));
          await this.#update(name, checkedAnnotations(found.secret.annotations, ours(stamp, through)));
        }
        // A newer delete destroys every version. Its event again (over a secret marked deleted)
        // destroys what a delete that stopped half-way left: those its mark covers, never a version
        // another writer added since (every one, for a mark of an earlier build, which says nothing).
        const through = found.through;
        const covered =
          newer || through === undefined ? versions : versions.filter((v) => !(versionNumber(v.name) > through));
        const destroyed = await this.#destroy(covered);
        if (newer) return !found.deleted || destroyed > 0 ? "deleted" : "absent";
        // Another writer's value since the delete stands.
        const revived =
          through !== undefined && versions.some((v) => versionNumber(v.name) > through && v.state === "ENABLED");
        return destroyed > 0 && !revived ? "deleted" : "superseded";
      } catch (err) {
        // The secret deleted since it was read (another instance purging, a console): no tombstone
        // is left to record this delete, and no value either.
        if (codeOf(err) === NOT_FOUND) return gone;
        throw err;
      }
    } catch (err) {
      throw classifyBackendError(err, "google secret manager delete");
    }
  }

  async list(options: ListOptions): Promise<NamePage> {
    const prefix = options.prefix ?? "";
    try {
      await this.#ready("google secret manager list");
      const [secrets, , response] = await this.#client.listSecrets(
        {
          parent: `projects/${this.#project}`,
          pageSize: Math.max(1, options.limit),
          ...(options.cursor !== undefined && { pageToken: options.cursor }),
        },
        { ...this.#call, autoPaginate: false },
      );
      const names = secrets
        // Not tombstones, nor a write of ours not done (made with our name, no time yet: maybe no version).
        .filter((secret) => secret.annotations?.[DELETED] !== "true")
        .filter((secret) => secret.annotations?.[NAME] === undefined || secret.annotations?.[AT] !== undefined)
        .map((secret) => secret.annotations?.[NAME] ?? secret.name?.split("/").at(-1) ?? "")
        .filter((name) => name.startsWith(prefix) && isValidName(name));
      const cursor = response?.nextPageToken;
      return cursor ? { names, cursor } : { names };
    } catch (err) {
      if (codeOf(err) === INVALID_ARGUMENT && options.cursor !== undefined) {
        throw new InvalidInput("the cursor is not valid");
      }
      throw classifyBackendError(err, "google secret manager list");
    }
  }

  async close(): Promise<void> {
    await this.#queues.settled(); // changes under way land first
    await this.#client.close();
  }

  // ---------------------------------------------------------------------------------------------

  /** The client set up before an operation's first call (`readyClient`). */
  #ready(what: string): Promise<void> {
    return readyClient(this.#client, "secretManagerServiceStub", what);
  }

  /** The secret's resource name, refused before any call when its id is longer than Google takes. */
  #path(name: string): string {
    const id = this.keyOf(name);
    if (id.length > MAX_ID) {
      throw new InvalidName(`Google Secret Manager takes secret ids of at most ${MAX_ID} characters`);
    }
    return `projects/${this.#project}/secrets/${id}`;
  }

  /** The stamp a change records over what `#find` found, or undefined: superseded (`stampOfChange`). */
  #stampOver(ifNewerThan: ChangeStamp | undefined, isDelete: boolean, found: Found | undefined) {
    return stampOfChange(ifNewerThan, isDelete, found?.stamp, found?.stampIsDelete ?? false, this.#now());
  }

  /**
   * The secret `name` lands on, with its last change; a conflict when it holds another name (but the
   * one a write `replaces`), or, for a change that must not adopt (`noAdopt`), when it was made
   * outside llm-secrets (no annotation).
   */
  async #find(name: string, noAdopt: boolean, replaces?: string): Promise<Found | undefined> {
    let secret: Secret;
    try {
      [secret] = await this.#client.getSecret({ name: this.#path(name) }, this.#call);
    } catch (err) {
      if (codeOf(err) === NOT_FOUND) return undefined;
      throw err;
    }
    const notes = secret.annotations ?? {};
    const holder = notes[NAME];
    const marked = notes[DELETED] === "true";
    const through = marked ? deletedThrough(notes) : undefined;
    let versions: SecretVersion[] | undefined;
    if (through !== undefined) {
      try {
        versions = await this.#versions(name);
      } catch (err) {
        if (codeOf(err) === NOT_FOUND) return undefined; // deleted since
        throw err;
      }
    }
    // Marked deleted, but its latest version newer than the delete saw, and enabled (what a read
    // serves): another writer's value since, live as any.
    const latest = versions?.reduce<SecretVersion | undefined>(
      (a, v) => (a === undefined || versionNumber(v.name) > versionNumber(a.name) ? v : a),
      undefined,
    );
    const revived = through !== undefined && versionNumber(latest?.name) > through && latest?.state === "ENABLED";
    const deleted = marked && !revived;
    // Another name's tombstone is no conflict (as on Azure): the change is ordered against its time,
    // as against the name's own tombstone, and takes the secret over.
    if (holder !== undefined && holder !== name && holder !== replaces && !deleted) {
      throw new NameConflict(name, this.keyOf(name));
    }
    if (holder === undefined && noAdopt) {
      throw new MadeOutside(name, `the secret id ${this.keyOf(name)}`, `no ${NAME} annotation`);
    }
    const at = Number(notes[AT]);
    return {
      secret,
      stamp: notes[AT] !== undefined && Number.isFinite(at) ? { at, ...(notes[ID] && { id: notes[ID] }) } : undefined,
      stampIsDelete: marked,
      deleted,
      ...(through !== undefined && { through, versions }),
    };
  }

  /** Creates the secret; false when it already exists (another writer made it meanwhile). */
  async #create(name: string, body: Pick<Secret, "labels" | "annotations">): Promise<boolean> {
    try {
      await this.#client.createSecret(
        {
          parent: `projects/${this.#project}`,
          secretId: this.keyOf(name),
          secret: { replication: { automatic: {} }, ...body },
        },
        this.#change,
      );
      return true;
    } catch (err) {
      if (codeOf(err) === ALREADY_EXISTS) return false;
      throw err;
    }
  }

  /** Every version of the secret, whatever its state. */
  async #versions(name: string): Promise<SecretVersion[]> {
    const [versions] = await this.#client.listSecretVersions({ parent: this.#path(name) }, this.#call);
    return versions;
  }

  /**
   * How many of `versions` it destroyed: those not destroyed yet. On a secret with a `version_destroy_ttl`
   * (delayed destroy) a destroyed version stays DISABLED, its `scheduled_destroy_time` set, until
   * that time: it counts as destroyed (no value is read from it), not destroyed again.
   */
  async #destroy(versions: SecretVersion[]): Promise<number> {
    let destroyed = 0;
    for (const version of versions) {
      if (version.state === "DESTROYED" || version.scheduledDestroyTime != null) continue;
      if (version.name === undefined || version.name === null) continue;
      await this.#client.destroySecretVersion({ name: version.name }, this.#change);
      destroyed++;
    }
    return destroyed;
  }

  /** Sets the secret's annotations (and its labels, when given). */
  async #update(name: string, notes: Record<string, string>, labels?: Record<string, string>): Promise<void> {
    const paths = labels === undefined ? ["annotations"] : ["annotations", "labels"];
    await this.#client.updateSecret(
      {
        secret: { name: this.#path(name), annotations: notes, ...(labels && { labels }) },
        updateMask: { paths },
      },
      this.#change,
    );
  }
}

function annotations(name: string, stamp: ChangeStamp, deleted: boolean): Record<string, string> {
  return { [NAME]: name, [AT]: String(stamp.at), [ID]: stamp.id ?? "", [DELETED]: String(deleted) };
}

/**
 * The mark's `deleted-through` version, or undefined: none (an earlier build's mark), not one, or
 * written by another delete than the mark's (its time is not the mark's `changed-at`: see THROUGH).
 */
function deletedThrough(notes: Record<string, string>): number | undefined {
  const through = /^([0-9]{1,15})@(.+)$/.exec(notes[THROUGH] ?? "");
  return through !== null && through[2] === notes[AT] ? Number(through[1]) : undefined;
}

/** The number of a version's resource name (`.../versions/3`); NaN when it has none (never newer than any). */
function versionNumber(name: string | null | undefined): number {
  const id = name?.split("/").at(-1) ?? "";
  return /^[0-9]{1,15}$/.test(id) ? Number(id) : Number.NaN;
}

/**
 * Our annotations over the secret's `current` ones, refused before any write when together they
 * would not fit Google's 16 KiB (only a very long event id, or a secret annotated elsewhere to the brim).
 */
function checkedAnnotations(current: Secret["annotations"], ours: Record<string, string>): Record<string, string> {
  const notes = { ...current, ...ours };
  const bytes = annotationBytes(notes);
  if (bytes < MAX_ANNOTATION_BYTES) return notes;
  const message = `this change cannot be recorded: Google Secret Manager keeps less than 16 KiB of annotations on a secret, and its name, time and event id with the secret's other annotations come to ${bytes} bytes`;
  // Ours alone (an event id of KiB, from a direct caller: events' ids are at most 512 characters)
  // is the request's fault; a secret annotated elsewhere to the brim is the store's state.
  throw annotationBytes(ours) >= MAX_ANNOTATION_BYTES ? new InvalidInput(message) : new StoreUnavailable(message);
}

function annotationBytes(notes: Record<string, string>): number {
  let bytes = 0;
  for (const [k, v] of Object.entries(notes)) bytes += Buffer.byteLength(k, "utf8") + Buffer.byteLength(v, "utf8");
  return bytes;
}

/** Tags become labels, whose alphabet is narrow: a tag outside it is refused rather than changed. */
function checkedLabels(tags: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const entries = Object.entries(tags ?? {});
  if (entries.length > MAX_LABELS) {
    throw new InvalidInput(
      `Google Secret Manager keeps at most ${MAX_LABELS} labels on a secret: ${entries.length} tags cannot be its labels`,
    );
  }
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k) || !LABEL_VALUE.test(v)) {
      throw new InvalidInput(
        `the tag ${k.slice(0, 64)} cannot be a Google label: keys and values take lower-case letters, digits, _ and - (keys start with a letter, 63 characters at most)`,
      );
    }
  }
  return { ...tags };
}

function codeOf(err: unknown): unknown {
  return (err as { code?: unknown } | null)?.code;
}

/**
 * Whether `err` is Google's answer to reading a version that is disabled or destroyed:
 * FAILED_PRECONDITION with `Secret Version [...] is in DISABLED state.` (or DESTROYED). Only that
 * shape is matched (a key's "is in DISABLED state" must stay an error, not a missing secret that
 * would be cached and fall back to the environment); the message is never repeated.
 */
function versionNotEnabled(err: unknown): boolean {
  if (codeOf(err) !== FAILED_PRECONDITION) return false;
  const { details, message } = (err ?? {}) as { details?: unknown; message?: unknown };
  const text = typeof details === "string" ? details : typeof message === "string" ? message : "";
  return /\bSecret Version \[[^\]]*\] is in (?:DISABLED|DESTROYED) state\b/.test(text);
}

export const googleSecretManagerStore = {
  kind: "google_secret_manager",
  settings: GoogleSecretManagerSettings,
  defaults: {
    accessMode: "read_only",
    refreshIntervalVariable: "GOOGLE_SECRET_MANAGER_REFRESH_INTERVAL",
    alwaysReadVariable: "GOOGLE_SECRET_MANAGER_ALWAYS_READ_SECRET_MANAGER",
    needsLocalKey: false,
    envBacked: false,
  },
  capabilities: {
    writes: true,
    deletes: true,
    compareAndSet: true,
    maxValueBytes: 65_536,
    records: ["version", "tags"],
  },
  open: async (settings, deps) => {
    const { env } = settings;
    refuseCreationTags(settings.config, googleSecretManagerStore.defaults.accessMode, checkedLabels);
    const sdk = await loadSdk(() => import("@google-cloud/secret-manager"));
    const endpoint = env.LLM_SECRETS_GOOGLE_SECRET_MANAGER_ENDPOINT;
    return new GoogleSecretManagerStore({
      client: new sdk.SecretManagerServiceClient({
        ...endpoint,
        ...(await googleTlsOptions(deps.outbound, "secretmanager.googleapis.com")),
      }),
      project: env.GOOGLE_SECRET_MANAGER_PROJECT_ID,
      purge: env.LLM_SECRETS_GOOGLE_PURGE?.trim().toLowerCase() === "true",
      now: deps.now,
    });
  },
} as const satisfies StoreFactory<"google_secret_manager", typeof GoogleSecretManagerSettings>;
