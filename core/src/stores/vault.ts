/**
 * `hashicorp_vault`: HashiCorp Vault's KV version 2 engine over its HTTP API (SPEC section 3;
 * LiteLLM's `HashicorpSecretManager`). Reached only as `@llm-secrets/core/stores/vault`. Vault's
 * HTTP, logins and retries live in vault-http.ts (with undici, imported when the store opens);
 * this file is what a secret is in Vault.
 *
 * - Where: `{HCP_VAULT_ADDR}/v1/[{secret namespace}/]{mount}/data/[{path prefix}/]{name}`, as
 *   LiteLLM builds it: namespace, mount and prefix trimmed of spaces and then slashes, the address
 *   of its trailing slashes, mount `secret` by default. Differs: every path segment is URL-encoded
 *   (LiteLLM concatenates the name as it is). The secret namespace is only in the path; the login
 *   namespace only in the login's `X-Vault-Namespace` (`HCP_VAULT_NAMESPACE` serves as both unless
 *   `HCP_VAULT_LOGIN_NAMESPACE` / `HCP_VAULT_SECRET_NAMESPACE` say otherwise).
 * - Read: `GET` the data path; the value is `data.data.key` (a secret without a string `key` field is
 *   no secret to us, as in LiteLLM). 404 is not found only as KV says it: `{"errors":[]}`, or a
 *   deleted version's `data.metadata`. A 404 that holds errors is Vault's `no handler for route`:
 *   nothing is mounted there (`HCP_VAULT_MOUNT_NAME` or the namespace mistyped), `store_unavailable`
 *   naming the mount (as is any JSON 404 with Vault's `errors`); any other 404 (an HTML page,
 *   JSON without `errors`: a proxy, an ingress or another service at `HCP_VAULT_ADDR`) is
 *   `store_unavailable` saying the address answered but not as Vault. Never "not found" (which would be cached, and fall back to the environment).
 *   The first KV 404 a target meets asks what the mount is (`#nothingThere`): a KV version 1
 *   mount answers every read with that same 404, and is `store_unavailable` instead.
 * - Write: `POST {"options":{"cas":N},"data":{"key":value}}` on the data path, where N is the
 *   version we read: KV v2's check-and-set, so a writer that got in between is never overwritten
 *   blindly; we read again and decide again. Differs: the description is not written as a second
 *   field beside `key`, and tags are not written (LiteLLM ignores them too).
 * - Delete: `DELETE` on the data path: KV v2's soft delete of the latest version (LiteLLM's).
 * - List: `LIST` on the metadata path of the path prefix (`GET ?list=true`, as Vault's own client
 *   sends it), and of each folder (`team/`: a name with `/`) that can hold names with the prefix.
 *   Vault lists whole folders, unpaged, so the names are filtered, sorted and paged here
 *   (`pageOfNames`); a name whose current version is deleted or destroyed (a tombstone) is left
 *   out, which costs a metadata read for each name looked at: the page's, the tombstones among
 *   them, and one more. Vault lists a tombstone as long as its metadata stays (forever), so a call
 *   reads at most max(64, 4 x limit) names' metadata: past that the page ends short, even empty,
 *   with a cursor at the last name read, and the next call goes on from there. A secret written by
 *   others without a `key` field is listed, though `get` finds no value in it (telling would mean
 *   reading values). 404 is an empty folder (with errors: nothing mounted there, as for a read).
 * - Teams: a call's scope (`team_settings[team_id]` from config) replaces the namespace, mount,
 *   path prefix and KV field (`data`) that it sets; the scoped store shares the client and queues.
 *
 * What it records: the time (and event id) of each change in the secret's `custom_metadata`
 * (`llm_secrets_changed_at` in ms since the epoch, `llm_secrets_change_id`, `llm_secrets_version`:
 * the KV version the change made or deleted, `llm_secrets_deleted`), written with a `/metadata`
 * `POST` right after the change, the secret's other custom metadata kept. Vault takes values of 1
 * to 512 bytes, every character printable (`validateCustomMetadata`), and an event id may be 512
 * characters of anything: the id is stored percent-encoded (printable ASCII as it is but `%`, any
 * other UTF-16 unit `%XX` or `%uXXXX`), in pieces of at most 512 bytes when longer
 * (`llm_secrets_change_id_2`, `_3`, ...), marked `llm_secrets_id_encoding: percent` when encoding
 * changed it, and read back decoded, exactly: ids break ties by their order, which neither the
 * encoded form nor a digest keeps (an unmarked id, recorded before ids were encoded, is read as it
 * is). Vault keeps 64 keys: a change whose record would not fit beside other tools' keys is
 * `store_unavailable` before it is made. A delete leaves the
 * soft-deleted version and this record: that is the tombstone, kept as long as the secret's
 * metadata (Vault forgets it only when someone deletes the metadata). A delete of a name never
 * written creates the metadata alone, to carry its tombstone. Records: `version` (the KV version)
 * and `updatedAt` (the change's time); no tags.
 *
 * Ordering (`ifNewerThan`): read the metadata, decide (`stampOfChange`), write with `cas`, record. A
 * record whose `llm_secrets_version` is not the current version does not count: that version was
 * made by LiteLLM, the UI, or a writer whose record is not there yet, and its `created_time` (or
 * `deletion_time`) stands for its change time, as for any direct write. A version like that made
 * in the last two seconds is read again a few times first (350 ms at most): its writer's record is
 * usually one request away. Left to chance: a `DELETE` landing just after another process's write
 * (Vault's delete has no check-and-set). A write whose record failed, or whose answer was lost
 * (`cas` refuses its retry), is recognised when its event comes again: the current version, not
 * recorded, holds the event's value, and the event's time is recorded for it.
 *
 * The Vault policy it needs (paths inside the secret namespace; with a path prefix, narrow `*` to
 * `{prefix}/*`). Reading only (`access_mode: read_only`, the default):
 *
 *     path "secret/data/*" { capabilities = ["read"] }
 *
 * Listing names (`GET /v1/secrets`) also needs the metadata (the folders, and whether each name
 * is deleted):
 *
 *     path "secret/metadata/*" { capabilities = ["read", "list"] }
 *
 * Writing and deleting (`read_and_write`, `write_only`), the change times included:
 *
 *     path "secret/data/*"     { capabilities = ["create", "read", "update", "delete"] }
 *     path "secret/metadata/*" { capabilities = ["create", "read", "update"] }
 *
 * Login tokens are renewed with `auth/token/renew-self`, and checked after a 403 that does not say
 * "invalid token" with `auth/token/lookup-self`: Vault's `default` policy allows both.
 */
import * as z from "zod/mini";
import { ConfigError } from "../errors";
import type { Logger } from "../log";
import { isValidName, validateName } from "../names";
import { BASE_URL_EXPECTED, isBaseUrl } from "../outbound-tls";
import {
  type ChangeStamp,
  type DeleteOptions,
  type DeleteOutcome,
  type GetOptions,
  KeyedQueue,
  type ListOptions,
  type NamePage,
  type PutOptions,
  type PutOutcome,
  pageOfNames,
  type SecretRecord,
  type SecretStore,
  type StoreDeps,
  type StoreFactory,
  type StoreScope,
  stampOfChange,
} from "../secret-store";
import { BackendUnavailable, StoreCorrupt, StoreUnavailable } from "../store-errors";
// Types only: the HTTP module (and undici) is loaded when a store opens, not when a build lists it.
import type { VaultAnswer, VaultAuth, VaultClient, VaultTuning } from "./vault-http";

const DEFAULT_ADDRESS = "http://127.0.0.1:8200";
const DEFAULT_MOUNT = "secret";
const DEFAULT_APPROLE_MOUNT = "approle";
/** LiteLLM reads and writes the value under this field of the KV secret. */
const DATA_KEY = "key";

const META_AT = "llm_secrets_changed_at";
const META_ID = "llm_secrets_change_id";
const META_VERSION = "llm_secrets_version";
const META_DELETED = "llm_secrets_deleted";
/** "percent": the change id is recorded encoded (`changeIdPieces`); absent, as it was (no escape needed, or recorded before encoding). */
const META_ID_ENCODING = "llm_secrets_id_encoding";
const OUR_META = [META_AT, META_ID, META_VERSION, META_DELETED, META_ID_ENCODING];
/** The pieces of a change id after the first (`llm_secrets_change_id_2`, ...). */
const META_ID_PIECE = /^llm_secrets_change_id_[0-9]+$/;
/** Vault's largest `custom_metadata` value, in bytes. */
const MAX_META_VALUE_BYTES = 512;
/** Vault's most `custom_metadata` keys on a secret. */
const MAX_META_KEYS = 64;

/** Rounds of read-then-check-and-set before a put gives up to writers that keep getting in first. */
const MAX_ROUNDS = 5;
/** A version without our record is read again after these waits while it is younger than `RECENT_MS`. */
const SETTLE_WAITS_MS = [50, 100, 200];
const RECENT_MS = 2_000;
/** Metadata reads a listing makes at once, to leave tombstones out of a page. */
const LIST_READS = 16;
/** The most metadata reads one `list` call makes: max(64, 4 x limit); past that the page ends short. */
const LIST_BUDGET_MIN = 64;
const LIST_BUDGET_PER_NAME = 4;

/** `HCP_VAULT_ADDR` as LiteLLM takes it: trailing slashes dropped (and, as its Rust port does, spaces). */
export function vaultAddress(raw: string | undefined): string {
  const trimmed = (raw ?? "").trim().replace(/\/+$/, "");
  return trimmed === "" ? DEFAULT_ADDRESS : trimmed;
}

const isVaultAddress = (raw: string): boolean => isBaseUrl(vaultAddress(raw));

const text = z.optional(z.string());

export const VaultSettings = z.object({
  config: z.object({}),
  env: z.object({
    HCP_VAULT_ADDR: z.optional(z.string().check(z.refine(isVaultAddress, BASE_URL_EXPECTED))),
    HCP_VAULT_TOKEN: text,
    HCP_VAULT_NAMESPACE: text,
    HCP_VAULT_LOGIN_NAMESPACE: text,
    HCP_VAULT_SECRET_NAMESPACE: text,
    HCP_VAULT_MOUNT_NAME: text,
    HCP_VAULT_PATH_PREFIX: text,
    HCP_VAULT_CLIENT_CERT: text,
    HCP_VAULT_CLIENT_KEY: text,
    HCP_VAULT_CERT_ROLE: text,
    HCP_VAULT_APPROLE_ROLE_ID: text,
    HCP_VAULT_APPROLE_SECRET_ID: text,
    HCP_VAULT_APPROLE_MOUNT_PATH: text,
  }),
});

export type VaultEnv = z.output<typeof VaultSettings>["env"];

/** A path component as LiteLLM sanitizes it: spaces trimmed, then slashes; empty is none. */
function vaultPathComponent(raw: string | undefined): string | undefined {
  const trimmed = (raw ?? "").trim();
  if (trimmed === "") return undefined;
  const bare = trimmed.replace(/^\/+|\/+$/g, "");
  return bare === "" ? undefined : bare;
}

/** Where a name's secret lives: the part of the URL a team's settings may change. */
export interface VaultTarget {
  secretNamespace: string | undefined;
  mount: string;
  pathPrefix: string | undefined;
  dataKey: string;
}

export interface VaultConfig extends VaultTarget {
  address: string;
  loginNamespace: string | undefined;
  auth: VaultAuth;
  /** Paths of the PEM client certificate and key (`HCP_VAULT_CLIENT_CERT` / `_KEY`). */
  clientCertificateFiles: { cert: string; key: string } | undefined;
}

/** The store's configuration from its env vars, by LiteLLM's rules; no credentials at all stops the start. */
export function vaultConfigOf(env: VaultEnv): VaultConfig {
  const namespace = vaultPathComponent(env.HCP_VAULT_NAMESPACE);
  const login = vaultPathComponent(env.HCP_VAULT_LOGIN_NAMESPACE);
  const secret = vaultPathComponent(env.HCP_VAULT_SECRET_NAMESPACE);
  const cert = env.HCP_VAULT_CLIENT_CERT ?? "";
  const key = env.HCP_VAULT_CLIENT_KEY ?? "";
  const clientCertificateFiles = cert !== "" && key !== "" ? { cert, key } : undefined;
  return {
    address: vaultAddress(env.HCP_VAULT_ADDR),
    // LiteLLM: an override that is set but sanitizes to nothing falls back to HCP_VAULT_NAMESPACE.
    loginNamespace: login ?? namespace,
    secretNamespace: secret ?? namespace,
    mount: vaultPathComponent(env.HCP_VAULT_MOUNT_NAME) ?? DEFAULT_MOUNT,
    pathPrefix: vaultPathComponent(env.HCP_VAULT_PATH_PREFIX),
    dataKey: DATA_KEY,
    auth: authOf(env, clientCertificateFiles !== undefined),
    clientCertificateFiles,
  };
}

/** AppRole > TLS certificate > token, each only when complete (LiteLLM's order). */
function authOf(env: VaultEnv, hasCertificate: boolean): VaultAuth {
  const roleId = env.HCP_VAULT_APPROLE_ROLE_ID ?? "";
  const secretId = env.HCP_VAULT_APPROLE_SECRET_ID ?? "";
  if (roleId !== "" && secretId !== "") {
    const mountPath = vaultPathComponent(env.HCP_VAULT_APPROLE_MOUNT_PATH) ?? DEFAULT_APPROLE_MOUNT;
    return { method: "approle", mountPath, roleId, secretId };
  }
  if (hasCertificate) return { method: "cert", role: env.HCP_VAULT_CERT_ROLE || undefined };
  const token = env.HCP_VAULT_TOKEN ?? "";
  if (token !== "") return { method: "token", token };
  throw new ConfigError(
    "hashicorp_vault needs credentials: set HCP_VAULT_TOKEN, or HCP_VAULT_APPROLE_ROLE_ID and " +
      "HCP_VAULT_APPROLE_SECRET_ID (AppRole), or HCP_VAULT_CLIENT_CERT and HCP_VAULT_CLIENT_KEY (TLS certificate)",
  );
}

/** A credential pair set by half is ignored, as in LiteLLM; say so once, naming what is missing. */
function warnOfHalves(env: VaultEnv, log: Logger): void {
  const pairs = [
    ["HCP_VAULT_APPROLE_ROLE_ID", "HCP_VAULT_APPROLE_SECRET_ID"],
    ["HCP_VAULT_CLIENT_CERT", "HCP_VAULT_CLIENT_KEY"],
  ] as const;
  for (const [a, b] of pairs) {
    const missing = env[a] && !env[b] ? b : env[b] && !env[a] ? a : undefined;
    if (missing) log.warn("hashicorp_vault: a credential is set by half and ignored", { missing });
  }
}

/**
 * Opens the store: reads the client certificate (an unreadable one stops the start; its files are
 * looked at again before each login, so a renewed pair is used) and makes the connection pool. Vault itself is not called until the first secret is: a Vault that is down at
 * start is a `backend_unavailable` later, not a failed start. `tuning` is for tests only; the
 * factory passes none.
 */
export async function openVaultStore(
  env: VaultEnv,
  deps: Pick<StoreDeps, "log" | "now" | "outbound">,
  tuning?: Partial<VaultTuning>,
): Promise<VaultStore> {
  const config = vaultConfigOf(env);
  warnOfHalves(env, deps.log);
  const files = config.clientCertificateFiles;
  const [{ VaultClient: Client }, { ClientCertificateAgent }] = await Promise.all([
    import("./vault-http"),
    import("../outbound"),
  ]);
  // Read again at each login when the files change (a renewed certificate): outbound.ts.
  const clientCertificate =
    files &&
    (await ClientCertificateAgent.open(
      deps.outbound ?? {},
      { ...files, certVariable: "HCP_VAULT_CLIENT_CERT", keyVariable: "HCP_VAULT_CLIENT_KEY" },
      deps.log,
    ));
  const client = new Client({
    address: config.address,
    auth: config.auth,
    loginNamespace: config.loginNamespace,
    clientCertificate,
    ...(deps.outbound && { tls: deps.outbound }),
    log: deps.log,
    tuning,
  });
  return new VaultStore(client, config, deps.now);
}

/** What the metadata says of a name's last change, and what a write must preserve. */
interface Recorded {
  /** KV's `current_version`: 0 when nothing was ever written (the `cas` of a first write). */
  currentVersion: number;
  /** The current version is there to read (not deleted, not destroyed). */
  live: boolean;
  stamp: ChangeStamp | undefined;
  stampIsDelete: boolean;
  /** The secret's custom metadata, ours and others'. */
  custom: Record<string, string>;
  /** Set when `stamp` is Vault's time of the current version, for want of our record of it. */
  unrecordedAt?: number | undefined;
}

const NOTHING_RECORDED: Recorded = {
  currentVersion: 0,
  live: false,
  stamp: undefined,
  stampIsDelete: false,
  custom: {},
};

export class VaultStore implements SecretStore {
  readonly kind = "hashicorp_vault";
  readonly #client: VaultClient;
  readonly #target: VaultTarget;
  readonly #now: () => number;
  /** Changes of one name run one after the other in this process (other processes: `cas`). */
  readonly #queues: KeyedQueue;
  /** The store as each team's scope sees it: the same client and queues, another target. */
  readonly #scoped = new Map<string, VaultStore>();
  /** The mount was found to be KV version 2, or Vault would not say: `#nothingThere`. */
  #mountKnown = false;

  constructor(client: VaultClient, target: VaultTarget, now: () => number = Date.now, queues = new KeyedQueue()) {
    this.#client = client;
    this.#target = target;
    this.#now = now;
    this.#queues = queues;
  }

  /**
   * The data path after `/v1/`, every segment encoded: what the name's URL addresses, and after a
   * `#` the KV field when it is not `key` (encoded too: the cache's `object#field`, secret-cache.ts).
   * A team's scope changes the namespace, mount, prefix and field in it, so teams never share a
   * cache entry (two teams reading one path through two fields included). Changes queue on the path
   * alone, and reach every field's entry on it in the cache: a KV v2 write or delete replaces the
   * whole secret, every field of it.
   */
  keyOf(name: string, scope?: StoreScope): string {
    if (scope) return this.#in(scope).keyOf(name);
    const path = this.#path("data", name);
    return this.#target.dataKey === DATA_KEY ? path : `${path}#${encodeURIComponent(this.#target.dataKey)}`;
  }

  /**
   * The store for a team's scope (`team_settings`: namespace, mount, path prefix, KV field; each
   * unset one the store's own), sanitized by LiteLLM's rules like the env settings.
   */
  #in(scope: StoreScope): VaultStore {
    const target: VaultTarget = {
      secretNamespace: vaultPathComponent(scope.namespace) ?? this.#target.secretNamespace,
      mount: vaultPathComponent(scope.mount) ?? this.#target.mount,
      pathPrefix: vaultPathComponent(scope.pathPrefix) ?? this.#target.pathPrefix,
      dataKey: scope.dataKey?.trim() || this.#target.dataKey,
    };
    const key = JSON.stringify(target);
    let store = this.#scoped.get(key);
    if (!store) {
      store = new VaultStore(this.#client, target, this.#now, this.#queues);
      this.#scoped.set(key, store);
    }
    return store;
  }

  async get(name: string, options: GetOptions = {}): Promise<SecretRecord | undefined> {
    if (options.scope) return this.#in(options.scope).get(name);
    const what = "vault get";
    const answer = await this.#client.call({ method: "GET", path: this.#path("data", name) }, what);
    if (await this.#nothingThere(answer, what)) return undefined;
    if (answer.status !== 200) throw this.#client.failure(answer, what);
    const secret = kvSecretOf(answer.body);
    if (secret === undefined) throw new StoreCorrupt(`${what}: the answer is not a KV version 2 secret`);
    const value = secret.data?.[this.#target.dataKey];
    if (typeof value !== "string") return undefined;
    const { version, created_time: created, custom_metadata: custom } = secret.metadata ?? {};
    const own = typeof version === "number" ? ourStamp(stringsOf(custom), version) : undefined;
    const at = own && !own.deleted ? own.stamp.at : timeOf(created);
    return {
      value,
      ...(typeof version === "number" && { version: String(version) }),
      ...(at !== undefined && { updatedAt: new Date(at) }),
    };
  }

  async put(name: string, value: string, options: PutOptions = {}): Promise<PutOutcome> {
    if (options.scope) return this.#in(options.scope).put(name, value, { ...options, scope: undefined });
    return this.#queues.run(this.#path("data", name), async () => {
      const what = "vault put";
      for (let round = 0; round < MAX_ROUNDS; round++) {
        const recorded = await this.#recorded(name, options.ifNewerThan !== undefined, what);
        const change = stampOfChange(options.ifNewerThan, false, recorded.stamp, recorded.stampIsDelete, this.#now());
        if (change === undefined) {
          // A current version without a record that holds this very value: this change, written
          // by an attempt whose record failed (or whose answer was lost). Record it now, with the
          // change's own time, rather than let Vault's later time stand for it.
          const event = options.ifNewerThan; // set: a direct change is never superseded
          const same = recorded.live && recorded.unrecordedAt !== undefined && event !== undefined;
          if (same && (await this.get(name))?.value === value) {
            await this.#record(name, recorded.custom, event, recorded.currentVersion, false, what);
            return "updated";
          }
          return "superseded";
        }
        customMetadata(recorded.custom, change, 0, false); // room for the record, before the write
        const version = await this.#writeData(name, value, recorded.currentVersion, what);
        if (version === undefined) continue; // another writer got in first: read and decide again
        await this.#record(name, recorded.custom, change, version, false, what);
        return recorded.live ? "updated" : "created";
      }
      throw new BackendUnavailable(`${what}: other writers kept changing the secret (${MAX_ROUNDS} tries)`);
    });
  }

  async delete(name: string, options: DeleteOptions = {}): Promise<DeleteOutcome> {
    if (options.scope) return this.#in(options.scope).delete(name, { ...options, scope: undefined });
    return this.#queues.run(this.#path("data", name), async () => {
      const what = "vault delete";
      const recorded = await this.#recorded(name, options.ifNewerThan !== undefined, what);
      const change = stampOfChange(options.ifNewerThan, true, recorded.stamp, recorded.stampIsDelete, this.#now());
      if (change === undefined) return "superseded";
      customMetadata(recorded.custom, change, 0, true); // room for the record, before the delete
      if (recorded.live) {
        const answer = await this.#client.call({ method: "DELETE", path: this.#path("data", name) }, what);
        if (answer.status >= 300 && !this.#absent(answer, what)) {
          throw this.#client.failure(answer, what);
        }
      }
      await this.#record(name, recorded.custom, change, recorded.currentVersion, true, what);
      return recorded.live ? "deleted" : "absent";
    });
  }

  async list(options: ListOptions): Promise<NamePage> {
    const what = "vault list";
    const prefix = options.prefix ?? "";
    // The deepest folder the prefix names whole: the walk starts there.
    const start = prefix.slice(0, prefix.lastIndexOf("/") + 1);
    if (start !== "" && !isValidName(`${start}x`)) return { names: [] };
    const held = await this.#namesUnder(start, prefix, what);
    const candidates = pageOfNames(held, { ...options, limit: held.length }).names;
    // Live names in order, until one more than the page holds (then there is a next page), reading
    // at most `budget` names' metadata: tombstones stay listed forever, and a call must not read them all.
    const budget = Math.max(LIST_BUDGET_MIN, LIST_BUDGET_PER_NAME * options.limit);
    const live: string[] = [];
    let i = 0;
    while (i < candidates.length && live.length <= options.limit && i < budget) {
      const chunk = candidates.slice(i, i + Math.min(LIST_READS, options.limit + 1 - live.length, budget - i));
      i += chunk.length;
      const recorded = await Promise.all(chunk.map((name) => this.#readMetadata(name, what)));
      live.push(...chunk.filter((_, j) => recorded[j]?.live));
    }
    if (live.length > options.limit || i === candidates.length) return pageOfNames(live, { limit: options.limit });
    // The reads ran out first: the page ends short (even empty) at the last name read.
    return { names: live, cursor: Buffer.from(candidates[i - 1] as string, "utf8").toString("base64url") };
  }

  async close(): Promise<void> {
    await this.#queues.settled();
    await this.#client.close();
  }

  /**
   * Whether an answer is KV's 404 for nothing there: `{"errors":[]}`, or a deleted version's
   * metadata (`data.metadata`). A 404 with errors is Vault's `no handler for route`: no engine at
   * the mount (a mistyped mount or namespace), a configuration error reported as such, not a
   * missing secret. Any other 404 (an HTML page, JSON without `errors`) is not Vault's: a proxy,
   * an ingress or another service at the address.
   */
  #absent(answer: VaultAnswer, what: string): boolean {
    if (answer.status !== 404) return false;
    const body = answer.body as { errors?: unknown; data?: { metadata?: unknown } | null } | undefined;
    if (Array.isArray(body?.errors) && body.errors.length === 0) return true;
    const metadata = body?.data?.metadata;
    if (metadata !== null && typeof metadata === "object" && !Array.isArray(metadata)) return true;
    if (answer.errors.length === 0) {
      throw new StoreUnavailable(
        `${what}: the address answered HTTP 404, but not as Vault does: check HCP_VAULT_ADDR ` +
          "(it may reach a proxy, an ingress or another service rather than Vault)",
      );
    }
    const { secretNamespace, mount } = this.#target;
    const at = secretNamespace === undefined ? mount : `${secretNamespace}/${mount}`;
    throw new StoreUnavailable(
      `${what}: Vault has nothing mounted at "${at}" (HTTP 404, no handler for route): check the KV version 2 mount ` +
        "(HCP_VAULT_MOUNT_NAME, or the team's mount) and the secret namespace",
    );
  }

  /**
   * `#absent`, and the first time this target finds nothing, whether it looks in a KV version 2
   * mount: a version 1 mount answers a read of `data/...` or `metadata/...` with the same 404 as a
   * missing secret, so without asking, each of its secrets would read as not found, and a write
   * would first land as a v1 key named `data/...`. Vault is asked as `vault kv` asks it
   * (`GET sys/internal/ui/mounts/{mount}`, in the secret namespace): a `kv` or `generic` mount
   * whose `options.version` is not "2" is `store_unavailable`, asked again at each nothing-found
   * until it is upgraded. Any other 200, or a 4xx (Vault tells nothing of a mount to a token
   * without access under it, and a Vault older than 0.10 has no such path), settles the question
   * for this target; a failure to ask leaves it for the next nothing-found.
   */
  async #nothingThere(answer: VaultAnswer, what: string): Promise<boolean> {
    if (!this.#absent(answer, what)) return false;
    if (!this.#mountKnown) await this.#checkMount(what);
    return true;
  }

  async #checkMount(what: string): Promise<void> {
    const { secretNamespace, mount } = this.#target;
    const path = [secretNamespace, "sys/internal/ui/mounts", mount]
      .filter((part): part is string => part !== undefined)
      .map(segments)
      .join("/");
    let answer: VaultAnswer;
    try {
      answer = await this.#client.call({ method: "GET", path }, `${what} (mount check)`);
    } catch {
      return; // Vault answered the call a moment ago: asked again at the next nothing-found
    }
    if (answer.status >= 500) return;
    const data = (answer.body as { data?: { type?: unknown; options?: { version?: unknown } | null } } | undefined)
      ?.data;
    if (answer.status === 200 && (data?.type === "kv" || data?.type === "generic") && data.options?.version !== "2") {
      throw this.#kvVersion1(what, "is a KV version 1 mount");
    }
    this.#mountKnown = true;
  }

  /** The mount is KV version 1 (`how` it showed): the command that upgrades it, in its namespace. */
  #kvVersion1(what: string, how: string): StoreUnavailable {
    const { secretNamespace, mount } = this.#target;
    const at = secretNamespace === undefined ? mount : `${secretNamespace}/${mount}`;
    const flag = secretNamespace === undefined ? "" : `-namespace=${secretNamespace} `;
    return new StoreUnavailable(
      `${what}: the mount ${at} ${how}: llm-secrets needs KV version 2 (vault kv enable-versioning ${flag}${mount})`,
    );
  }

  /** `/v1/` onwards: `[{namespace}/]{mount}/{data|metadata}/[{prefix}/]{name}`, each segment encoded. */
  #path(kind: "data" | "metadata", name: string): string {
    const { secretNamespace, mount, pathPrefix } = this.#target;
    validateName(name); // names reach stores validated; a URL is never built from one that is not
    return [secretNamespace, mount, kind, pathPrefix, name]
      .filter((part): part is string => part !== undefined)
      .map(segments)
      .join("/");
  }

  /** The names with `prefix` in `folder` (`""` or ending in `/`) and its folders, walked as deep as they go. */
  async #namesUnder(folder: string, prefix: string, what: string): Promise<string[]> {
    const { secretNamespace, mount, pathPrefix } = this.#target;
    const path = [secretNamespace, mount, "metadata", pathPrefix, folder.replace(/\/$/, "") || undefined]
      .filter((part): part is string => part !== undefined)
      .map(segments)
      .join("/");
    const answer = await this.#client.call({ method: "LIST", path: `${path}/` }, what);
    if (await this.#nothingThere(answer, what)) return [];
    if (answer.status !== 200) throw this.#client.failure(answer, what);
    const keys = (answer.body as { data?: { keys?: unknown } } | undefined)?.data?.keys;
    if (!Array.isArray(keys)) throw new StoreCorrupt(`${what}: the answer is not a LIST answer`);
    const names: string[] = [];
    const folders: string[] = [];
    for (const key of keys) {
      if (typeof key !== "string" || key === "") continue;
      const found = folder + key;
      if (!found.endsWith("/")) {
        if (found.startsWith(prefix) && isValidName(found)) names.push(found);
      } else if ((found.startsWith(prefix) || prefix.startsWith(found)) && isValidName(`${found}x`)) {
        folders.push(found);
      }
    }
    // Folders a few at a time (each may hold more): a wide tree is not one burst of LISTs.
    for (let i = 0; i < folders.length; i += LIST_READS) {
      const deeper = await Promise.all(folders.slice(i, i + LIST_READS).map((f) => this.#namesUnder(f, prefix, what)));
      for (const found of deeper) names.push(...found);
    }
    return names;
  }

  /**
   * The name's metadata: versions, whether the current one is live, and the time of its last
   * change. A current version without our record that Vault made in the last moments is most
   * likely another process's change whose record is one request away: it is read again, a few
   * times, before its Vault time stands in for the record. Only a change that will be weighed
   * against it (`ifNewerThan`) waits: a direct one applies whatever is recorded.
   */
  async #recorded(name: string, weighed: boolean, what: string): Promise<Recorded> {
    for (let round = 0; ; round++) {
      const recorded = await this.#readMetadata(name, what);
      const vaultTime = recorded.unrecordedAt;
      const wait = weighed ? SETTLE_WAITS_MS[round] : undefined;
      if (vaultTime === undefined || wait === undefined || Math.abs(this.#now() - vaultTime) > RECENT_MS) {
        return recorded;
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  async #readMetadata(name: string, what: string): Promise<Recorded> {
    const answer = await this.#client.call({ method: "GET", path: this.#path("metadata", name) }, what);
    if (await this.#nothingThere(answer, what)) return NOTHING_RECORDED;
    if (answer.status !== 200) throw this.#client.failure(answer, what);
    const metadata = (answer.body as { data?: KvMetadata } | undefined)?.data;
    if (metadata === undefined || metadata === null || typeof metadata.current_version !== "number") {
      throw new StoreCorrupt(`${what}: the metadata answer is not KV version 2's`);
    }
    return recordedOf(metadata, this.#now());
  }

  /** The version written, or undefined when `cas` found another version than `expected`. */
  async #writeData(name: string, value: string, expected: number, what: string): Promise<number | undefined> {
    const body = { options: { cas: expected }, data: { [this.#target.dataKey]: value } };
    const answer = await this.#client.call({ method: "POST", path: this.#path("data", name), body }, what);
    if (answer.status === 400 && answer.errors.some((e) => e.includes("check-and-set"))) return undefined;
    if (answer.status === 204) {
      // KV version 1 answers a write with no content (version 2 with the version written): the
      // mount is not a KV v2 one, and what was sent is now a v1 key named `data/...` there.
      throw this.#kvVersion1(what, "answered as a KV version 1 mount (HTTP 204 to a write)");
    }
    if (answer.status !== 200) throw this.#client.failure(answer, what);
    const version = (answer.body as { data?: { version?: unknown } } | undefined)?.data?.version;
    if (typeof version !== "number") throw new StoreCorrupt(`${what}: the write answer has no version`);
    return version;
  }

  /** Records a change in the secret's custom metadata, keeping the keys that are not ours. */
  async #record(
    name: string,
    custom: Record<string, string>,
    stamp: ChangeStamp,
    version: number,
    deleted: boolean,
    what: string,
  ): Promise<void> {
    const custom_metadata = customMetadata(custom, stamp, version, deleted);
    const path = this.#path("metadata", name);
    const answer = await this.#client.call({ method: "POST", path, body: { custom_metadata } }, what);
    if (answer.status >= 300) throw this.#client.failure(answer, `${what} (change time)`);
  }
}

/**
 * The secret's custom metadata with our record of a change in place of the last, keeping the keys
 * that are not ours. Vault keeps at most 64 keys: a secret other tools have filled so that ours do
 * not fit is `store_unavailable`, checked before the change is made (else its value would land
 * with no record of its time, and every redelivery fail alike).
 */
function customMetadata(
  custom: Record<string, string>,
  stamp: ChangeStamp,
  version: number,
  deleted: boolean,
): Record<string, string> {
  const kept = Object.fromEntries(
    Object.entries(custom).filter(([k]) => !OUR_META.includes(k) && !META_ID_PIECE.test(k)),
  );
  // An empty id orders as none (`isNewer`), and Vault refuses an empty value.
  const pieces = stamp.id ? changeIdPieces(stamp.id) : [];
  const metadata = {
    ...kept,
    [META_AT]: String(stamp.at),
    ...Object.fromEntries(pieces.map((piece, i) => [i === 0 ? META_ID : `${META_ID}_${i + 1}`, piece])),
    // Marked only when encoding changed the id: an id recorded bare (before ids were encoded, or
    // one needing no escape) reads back as it is.
    ...(pieces.join("") !== (stamp.id ?? "") && { [META_ID_ENCODING]: "percent" }),
    [META_VERSION]: String(version),
    [META_DELETED]: String(deleted),
  };
  const keys = Object.keys(metadata).length;
  if (keys > MAX_META_KEYS) {
    throw new StoreUnavailable(
      `vault: this change cannot be recorded: the secret's custom_metadata would hold ${keys} keys (${Object.keys(kept).length} of other tools), and Vault keeps ${MAX_META_KEYS}`,
    );
  }
  return metadata;
}

/** A configured path or a name (`kv/prod`, `team/key`) as URL segments, each encoded. */
function segments(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** `GET .../metadata/...`'s `data`, the fields we read. */
interface KvMetadata {
  current_version?: unknown;
  custom_metadata?: Record<string, string> | null;
  versions?: Record<string, { created_time?: string; deletion_time?: string; destroyed?: boolean }>;
}

/** What the metadata says of the last change: ours when it describes the current version, else Vault's times. */
function recordedOf(metadata: KvMetadata, now: number): Recorded {
  const currentVersion = metadata.current_version as number;
  const custom = stringsOf(metadata.custom_metadata);
  const version = metadata.versions?.[String(currentVersion)];
  const deletionTime = timeOf(version?.deletion_time);
  // A version with a deletion time in the future (`delete_version_after`) is still live.
  const deleted = version === undefined || version.destroyed === true || (deletionTime ?? Infinity) <= now;
  const live = currentVersion > 0 && !deleted;
  const own = ourStamp(custom, currentVersion);
  if (own !== undefined && own.deleted === !live) {
    return { currentVersion, live, stamp: own.stamp, stampIsDelete: own.deleted, custom };
  }
  if (currentVersion === 0 || version === undefined) {
    return { currentVersion, live, stamp: undefined, stampIsDelete: false, custom };
  }
  const at = live ? timeOf(version.created_time) : (deletionTime ?? timeOf(version.created_time));
  // Made after our last record (of an earlier version): a direct change, later than that record
  // even when Vault's time is not (a delete event dated ahead of this clock), as `stampOfChange`
  // stamps our own direct changes.
  const after = recordedAt(custom);
  const stamp = at === undefined ? undefined : { at: after !== undefined && after >= at ? after + 1 : at };
  return { currentVersion, live, stamp, stampIsDelete: !live, custom, unrecordedAt: at };
}

/** The time of our last record, whichever version it is about. */
function recordedAt(custom: Record<string, string>): number | undefined {
  const raw = custom[META_AT];
  return raw !== undefined && /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : undefined;
}

/** Our record of a change, when it is about `version`. */
function ourStamp(
  custom: Record<string, string>,
  version: number,
): { stamp: ChangeStamp; deleted: boolean } | undefined {
  if (custom[META_VERSION] !== String(version)) return undefined;
  const at = recordedAt(custom);
  if (at === undefined) return undefined;
  const id = changeIdOf(custom);
  return { stamp: id === undefined ? { at } : { at, id }, deleted: custom[META_DELETED] === "true" };
}

/**
 * An event id as Vault's custom metadata takes it: printable ASCII (Go's `unicode.IsPrint` holds
 * for each) and no `%` as it is, every other UTF-16 unit `%XX` (below 0x100) or `%uXXXX`, so any
 * id (tabs, newlines, lone surrogates) comes back whole; in pieces of at most 512 bytes, none cut
 * inside an escape.
 */
function changeIdPieces(id: string): string[] {
  const pieces: string[] = [];
  let piece = "";
  for (let i = 0; i < id.length; i++) {
    const unit = id.charCodeAt(i);
    const encoded =
      unit >= 0x20 && unit <= 0x7e && unit !== 0x25
        ? String.fromCharCode(unit)
        : unit < 0x100
          ? `%${unit.toString(16).toUpperCase().padStart(2, "0")}`
          : `%u${unit.toString(16).toUpperCase().padStart(4, "0")}`;
    if (piece.length + encoded.length > MAX_META_VALUE_BYTES) {
      pieces.push(piece);
      piece = "";
    }
    piece += encoded;
  }
  if (piece !== "") pieces.push(piece);
  return pieces;
}

/**
 * The recorded event id: its pieces joined in order, decoded when the record says it was encoded
 * (an id recorded before ids were encoded is taken as it is, `%41` included).
 */
function changeIdOf(custom: Record<string, string>): string | undefined {
  const first = custom[META_ID];
  if (first === undefined) return undefined;
  const pieces = [first];
  for (let n = 2, piece = custom[`${META_ID}_${n}`]; piece !== undefined; piece = custom[`${META_ID}_${++n}`]) {
    pieces.push(piece);
  }
  const joined = pieces.join("");
  if (custom[META_ID_ENCODING] !== "percent") return joined;
  return joined.replace(/%(?:u([0-9A-Fa-f]{4})|([0-9A-Fa-f]{2}))/g, (_, wide: string | undefined, narrow: string) =>
    String.fromCharCode(Number.parseInt(wide ?? narrow, 16)),
  );
}

function stringsOf(value: unknown): Record<string, string> {
  if (value === null || typeof value !== "object") return {};
  return Object.fromEntries(Object.entries(value).filter((e): e is [string, string] => typeof e[1] === "string"));
}

/** Vault's RFC 3339 times (nanoseconds included) in ms; undefined for "" or anything else. */
function timeOf(value: unknown): number | undefined {
  if (typeof value !== "string" || value === "") return undefined;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : at;
}

/** A KV v2 read's `data`: the fields and the version's metadata. */
function kvSecretOf(body: unknown):
  | {
      data?: Record<string, unknown> | null;
      metadata?: { version?: unknown; created_time?: unknown; custom_metadata?: Record<string, string> | null };
    }
  | undefined {
  const data = (body as { data?: unknown } | undefined)?.data;
  return data !== null && typeof data === "object" ? (data as ReturnType<typeof kvSecretOf>) : undefined;
}

export const vaultStore = {
  kind: "hashicorp_vault",
  settings: VaultSettings,
  defaults: {
    accessMode: "read_only",
    refreshIntervalVariable: "HCP_VAULT_REFRESH_INTERVAL",
    needsLocalKey: false,
    envBacked: false,
  },
  capabilities: {
    writes: true,
    deletes: true,
    compareAndSet: true,
    // Vault's storage takes entries of 512 KiB (Consul) to 1 MiB (integrated storage) whole; JSON
    // and Vault's envelope come on top, so a quarter MiB of value fits every backend.
    maxValueBytes: 256 * 1024,
    records: ["version", "updatedAt"],
    scopes: true,
  },
  open: async (settings, deps) => openVaultStore(settings.env, deps),
} as const satisfies StoreFactory<"hashicorp_vault", typeof VaultSettings>;
