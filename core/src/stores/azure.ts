/**
 * `azure_key_vault`: Azure Key Vault secrets through `@azure/keyvault-secrets` and
 * `@azure/identity` (SPEC section 3; LiteLLM reads `SecretClient(AZURE_KEY_VAULT_URI,
 * DefaultAzureCredential()).get_secret(name)`). Reached only as `@llm-secrets/core/stores/azure`:
 * importing the core root loads no Azure SDK, and the SDK itself is imported when the store opens.
 *
 * Names (differs from LiteLLM, which passes names unchanged and so cannot read `AZURE_API_KEY`):
 * Key Vault takes `[0-9A-Za-z-]{1,127}`, case-insensitively. Every other character of a name maps
 * to `-`, so `AZURE_API_KEY` is the vault secret `AZURE-API-KEY`; a name longer than 127 characters is
 * `400 invalid_name` here. The name we wrote is kept in the tag `llm-secrets:name`: a write or delete
 * whose secret holds another name (`AZURE-API-KEY` written as `AZURE_API_KEY`, or `a_b` as `A_B`) is
 * `409 name_conflict`, and a read of it finds nothing. A secret without that tag (made in the portal
 * as `AZURE-API-KEY`) is read for every name that maps onto it and adopted (tagged) by the first
 * direct write.
 * `keyOf` is lower-cased, as the vault ignores case: the cache and each secret's queue key on it, so
 * a write of `A_B` reaches a cached read of `a_b` (two names of ours on one vault secret, told apart
 * by the tag). Calls name the secret as written (`A-B`), so a secret we create keeps the case.
 * A change with `adopt: false` (every key event's, and every write allowed only as a virtual key)
 * never adopts nor deletes a secret without the tag (live, disabled or soft-deleted): it is `409
 * name_conflict`. Key aliases are chosen by whoever makes LiteLLM keys, and `litellm/` + `SALT_KEY`
 * lands on a portal-made `LITELLM-SALT-KEY` (any case), outside `hosted_keys`; only a direct PUT or
 * DELETE of a name the deployment allows as such (hosted, or any without `hosted_keys`) takes such
 * a secret over.
 *
 * - Read: `getSecret` (the current version; `GET /secrets/{name}/`), whatever its `nbf` and `exp`:
 *   Key Vault serves a version before its activation date and after its expiry, and so do we
 *   (README says so); a disabled one reads as nothing.
 * - Write: `setSecret` (a new version, with the caller's tags, else the previous version's, else
 *   the creation defaults; Key Vault tags belong to a version, so each write carries them all; the
 *   creation defaults of the config, general and per team, are checked against Key Vault's limits
 *   when the store opens). A name that is deleted but recoverable is recovered first
 *   (`beginRecoverDeletedSecret`, waited for: the name cannot be written until then; a `404` to it,
 *   purged meanwhile, is a name never written); a name whose delete or recovery is still under way
 *   (`409 Conflict`) is looked at again a few times, and written only once it shows as live or
 *   deleted. Key Vault secrets have no description: the `description` setting is not recorded.
 * - Delete: `beginDeleteSecret`, without waiting for the delete to finish (soft delete is always on:
 *   the secret stays recoverable for the vault's retention, 7 to 90 days, and nothing is purged).
 *   Only a failed DELETE fails it: the SDK's look at the deleted secret right after it may fail alone.
 * - List: `listPropertiesOfSecrets().byPage` (`GET /secrets?maxresults=N`, N the limit, at most
 *   Key Vault's 25), one page a call; each secret's name as written (its tag, else the vault's
 *   name), disabled secrets (which read as nothing; a write gives them a new, enabled version, a
 *   delete deletes them, neither knowing their tags) and tombstones left out (soft-deleted ones
 *   are not listed by the vault at all). No server filter: the prefix is matched here, so a page may
 *   hold fewer names than the limit. The cursor is the vault's `nextLink`, taken from the answer by a pipeline policy (the SDK
 *   drops it from the pages it yields) and refused unless it points back at this vault's `/secrets`
 *   (a link elsewhere would carry our token there).
 *
 * What it records: every change's time (and event id) in the version's tags
 * `llm-secrets:changed-at` / `llm-secrets:change-id` (an id over a tag value's 256 characters as its
 * SHA-256: `recordableStamp`), and `llm-secrets:deleted=true` set on the
 * current version just before a delete (`updateSecretProperties`). A soft-deleted secret keeps its
 * tags, readable with `getDeletedSecret`: that is the tombstone, and it lasts the vault's retention
 * (at least 7 days, above the 6-day event age limit). An event that deletes a name never written
 * writes an empty value to carry its tombstone and deletes it at once; an event that deletes a name
 * already deleted recovers it, re-tags it and deletes it again. A secret tagged as deleted reads as
 * nothing, and one still live (a delete that stopped after its tag) is deleted by the next delete
 * of the name, its own redelivery included. A delete under way is in neither list, so its time
 * cannot be read: a write that meets it (`409`) waits, looks again, and is superseded if the delete
 * is newer (an older delete's tombstone too), or `name_conflict` if another name's secret came back.
 * A secret whose own tags leave no room for the tombstone's (more than 11, added in the portal) is
 * deleted with ours alone on its current version. `ifNewerThan` is read-then-write
 * (`getSecret` / `getDeletedSecret`, then the write): Key Vault has no compare-and-set, so a writer
 * in another process between the two can be overwritten. Within this process, changes of one
 * secret run one at a time. Ties break by event id. Up to four of a version's 15 tags are ours.
 * Records: version (the version id), time (`updated` of the version) and the caller's tags.
 *
 * Settings: `AZURE_KEY_VAULT_URI` (https). Credentials: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` +
 * `AZURE_CLIENT_SECRET` give a `ClientSecretCredential`; otherwise `DefaultAzureCredential`
 * (workload or managed identity, the Azure CLI, ...) reads the environment itself. The SDK's own
 * `AZURE_AUTHORITY_HOST` names another cloud's (or a private) token service; for a host that is not
 * one of Microsoft's clouds, instance discovery (which only Microsoft's clouds answer) is turned off.
 * For a vault host outside Key Vault's own domains (a private DNS name, an emulator), the SDK's check
 * that the challenge's resource matches the host cannot pass and is turned off; in its place, only a
 * challenge that asks for a Key Vault audience is answered with a token, so such a host can never
 * obtain a token for another Azure service. Retries are the SDK's (3 attempts: 429 and 503 after
 * their `Retry-After`, other 5xx and resets with backoff; a timed-out attempt is not retried); each
 * attempt is bounded (10 s), token requests included.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { Agent as HttpsAgent } from "node:https";
import type { TokenCredential } from "@azure/identity";
import type { KeyVaultSecret, SecretClient, SecretClientOptions, SecretProperties } from "@azure/keyvault-secrets";
import * as z from "zod/mini";
import { InvalidInput, InvalidName } from "../errors";
import type { Logger } from "../log";
import { isValidName } from "../names";
import { type OutboundTls, outboundTlsOptions } from "../outbound-tls";
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
  recordableStamp,
  refuseCreationTags,
  type SecretRecord,
  type SecretStore,
  type StoreFactory,
  stampOfChange,
} from "../secret-store";
import {
  BackendUnavailable,
  classifyBackendError,
  MadeOutside,
  NameConflict,
  NotSupported,
  StoreUnavailable,
} from "../store-errors";

const TAG_NAME = "llm-secrets:name";
const TAG_AT = "llm-secrets:changed-at";
const TAG_ID = "llm-secrets:change-id";
const TAG_DELETED = "llm-secrets:deleted";
const OUR_PREFIX = "llm-secrets:";
const MAX_NAME = 127;
const MAX_TAGS = 15;
/** Ours are up to four of a version's 15: the rest are the caller's. */
const MAX_USER_TAGS = MAX_TAGS - 4;
const MAX_TAG_NAME = 512;
const MAX_TAG_VALUE = 256;
/** Key Vault's largest page (`maxresults`). */
const MAX_LIST_PAGE = 25;

/** Key Vault's DNS suffixes (public, China, US Government, Germany; vaults and managed HSMs). */
const KEY_VAULT_DOMAINS = [
  "vault.azure.net",
  "vault.azure.cn",
  "vault.usgovcloudapi.net",
  "vault.microsoftazure.de",
  "managedhsm.azure.net",
  "managedhsm.azure.cn",
  "managedhsm.usgovcloudapi.net",
  "managedhsm.microsoftazure.de",
];

/** Microsoft Entra ID's own authority hosts, which instance discovery knows. */
const MICROSOFT_AUTHORITY_HOSTS = new Set([
  "login.microsoftonline.com",
  "login.microsoft.com",
  "login.windows.net",
  "sts.windows.net",
  "login.microsoftonline.us",
  "login.usgovcloudapi.net",
  "login.chinacloudapi.cn",
  "login.partner.microsoftonline.cn",
  "login.microsoftonline.de",
]);

const httpsUrl = z.url({ protocol: /^https$/, error: "expected an https:// URL" });

export const AzureKeyVaultSettings = z.object({
  config: z.object({
    ...CreationTagKeys, // checked against Key Vault's limits when the store opens
  }),
  env: z.object({
    AZURE_KEY_VAULT_URI: httpsUrl,
    AZURE_AUTHORITY_HOST: z.optional(httpsUrl),
    AZURE_TENANT_ID: z.optional(z.string()),
    AZURE_CLIENT_ID: z.optional(z.string()),
    AZURE_CLIENT_SECRET: z.optional(z.string()),
  }),
});

type AzureEnv = z.output<typeof AzureKeyVaultSettings>["env"];
type PipelinePolicy = NonNullable<SecretClientOptions["additionalPolicies"]>[number]["policy"];

export interface AzureTimeouts {
  /** Each attempt of each request, token requests included. */
  requestMs: number;
  /** The first retry's delay (the SDK doubles it, with jitter); 429 and 503 wait their `Retry-After`. */
  retryDelayMs?: number;
}

const DEFAULT_TIMEOUTS: AzureTimeouts = { requestMs: 10_000 };

/**
 * The `SecretClient` options: the SDK's retry (3 attempts), a bound on each attempt, and, for a vault
 * host outside Key Vault's domains, the challenge check swapped for an audience check.
 */
export function azureClientOptions(
  vaultUri: string,
  timeouts: AzureTimeouts = DEFAULT_TIMEOUTS,
  tls: OutboundTls = {},
): SecretClientOptions {
  const ownDomain = isKeyVaultHost(new URL(vaultUri).hostname);
  // The outbound TLS settings (ssl_verify, SSL_CERT_FILE, ssl_certificate) reach the vault's calls
  // through the pipeline's https agent; the token service's calls keep node's defaults.
  const tlsOptions = outboundTlsOptions(tls);
  return {
    ...(Object.keys(tlsOptions).length > 0 && { agent: new HttpsAgent({ keepAlive: true, ...tlsOptions }) }),
    retryOptions: retryOptions(timeouts),
    disableChallengeResourceVerification: !ownDomain,
    additionalPolicies: [
      { policy: timeoutPolicy(timeouts.requestMs), position: "perCall" },
      { policy: nextLinkPolicy, position: "perCall" },
      ...(ownDomain ? [] : [{ policy: keyVaultAudiencePolicy, position: "perRetry" as const }]),
    ],
  };
}

/** The credential options: the authority host, instance discovery off for a host that is not Microsoft's, bounded attempts. */
export function azureCredentialOptions(env: Pick<AzureEnv, "AZURE_AUTHORITY_HOST">, timeouts = DEFAULT_TIMEOUTS) {
  const authorityHost = env.AZURE_AUTHORITY_HOST;
  return {
    ...(authorityHost !== undefined && {
      authorityHost,
      disableInstanceDiscovery: !MICROSOFT_AUTHORITY_HOSTS.has(new URL(authorityHost).hostname.toLowerCase()),
    }),
    retryOptions: retryOptions(timeouts),
    additionalPolicies: [{ policy: timeoutPolicy(timeouts.requestMs), position: "perCall" as const }],
  };
}

/** The SDK's own retry: 3 attempts in all. */
function retryOptions(timeouts: AzureTimeouts) {
  return {
    maxRetries: 2,
    ...(timeouts.retryDelayMs !== undefined && { retryDelayInMs: timeouts.retryDelayMs }),
  };
}

function isKeyVaultHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return KEY_VAULT_DOMAINS.some((domain) => host.endsWith(`.${domain}`));
}

/** Sets a time limit on every attempt of a request that has none (the SDK's default is none). */
function timeoutPolicy(ms: number): PipelinePolicy {
  return {
    name: "llmSecretsTimeout",
    sendRequest(request, next) {
      if (!(request.timeout > 0)) request.timeout = ms;
      return next(request);
    },
  };
}

/**
 * With the SDK's challenge check off, a 401 whose challenge asks for anything but a Key Vault
 * audience loses its `WWW-Authenticate`, so the SDK asks for no token and the 401 stands (it is then
 * `backend_denied`): a vault host can obtain a Key Vault token, never one for another service.
 */
const keyVaultAudiencePolicy: PipelinePolicy = {
  name: "llmSecretsKeyVaultAudience",
  async sendRequest(request, next) {
    const response = await next(request);
    const challenge = response.status === 401 ? response.headers.get("www-authenticate") : undefined;
    if (challenge) {
      const audiences = [...challenge.matchAll(/\b(?:resource|scope)="([^"]*)"/g)].map((m) => m[1] as string);
      if (audiences.some((audience) => !isKeyVaultAudience(audience))) response.headers.delete("www-authenticate");
    }
    return response;
  },
};

/** A listing's answer as the pipeline saw it: whether a list page came back, and its `nextLink`. */
interface ListedPage {
  answered: boolean;
  nextLink?: string;
}

/** The listing under way in this async context (`list`), which `nextLinkPolicy` reports to. */
const listing = new AsyncLocalStorage<ListedPage>();

/**
 * Hands a listing the `nextLink` of its page: `@azure/keyvault-secrets` (4.11) drops it from the
 * pages `byPage` yields, so a page could not say where the next one starts.
 */
const nextLinkPolicy: PipelinePolicy = {
  name: "llmSecretsNextLink",
  async sendRequest(request, next) {
    const response = await next(request);
    const page = listing.getStore();
    if (page !== undefined && response.status === 200 && response.bodyAsText) {
      try {
        const body = JSON.parse(response.bodyAsText) as { value?: unknown; nextLink?: unknown };
        if (Array.isArray(body.value)) {
          page.answered = true;
          page.nextLink = typeof body.nextLink === "string" && body.nextLink !== "" ? body.nextLink : undefined;
        }
      } catch {
        // not a list page: the SDK reports it
      }
    }
    return response;
  },
};

function isKeyVaultAudience(audience: string): boolean {
  const origin = audience
    .replace(/\/\.default$/, "")
    .replace(/\/+$/, "")
    .toLowerCase();
  return KEY_VAULT_DOMAINS.some((domain) => origin === `https://${domain}`);
}

export interface AzureKeyVaultOptions {
  client: SecretClient;
  now?: () => number;
  /** How often a recovery is polled, and how long to wait before looking again at a name under way. */
  pollMs?: number;
  log: Logger;
}

/** What the vault holds under a key: a live secret, a soft-deleted one (a tombstone), or nothing. */
type Found =
  | { state: "absent" }
  | {
      state: "live" | "deleted";
      version: string | undefined;
      /** The name we wrote it as; undefined for a secret made outside llm-secrets. */
      owner: string | undefined;
      userTags: Record<string, string>;
      stamp: ChangeStamp | undefined;
      stampIsDelete: boolean;
    };

/** A name whose delete or recovery is under way is looked at this many times before giving up. */
const BUSY_ATTEMPTS = 10;
/** The longest wait for a recovery to finish. */
const RECOVERY_TIMEOUT_MS = 30_000;

export class AzureKeyVaultStore implements SecretStore {
  readonly kind = "azure_key_vault";
  readonly #client: SecretClient;
  readonly #now: () => number;
  readonly #pollMs: number;
  readonly #log: Logger;
  /** Each secret's changes one after another (by `keyOf`: the vault ignores case). */
  readonly #queues = new KeyedQueue();

  constructor(options: AzureKeyVaultOptions) {
    this.#client = options.client;
    this.#now = options.now ?? Date.now;
    this.#pollMs = options.pollMs ?? 1_000;
    this.#log = options.log;
  }

  /** The vault's key of a name, lower-cased (Key Vault ignores case): `AZURE_API_KEY` -> `azure-api-key`. */
  keyOf(name: string): string {
    return vaultName(name).toLowerCase();
  }

  async get(name: string): Promise<SecretRecord | undefined> {
    const key = this.#key(name);
    let secret: KeyVaultSecret;
    try {
      secret = await this.#client.getSecret(key);
    } catch (err) {
      // Not there; or disabled (403 SecretDisabled), which list leaves out too.
      if (statusOf(err) === 404 || innerCodeOf(err) === "SecretDisabled") return undefined;
      throw classifyBackendError(err, "azure key vault get");
    }
    const tags = secret.properties.tags ?? {};
    const owner = tags[TAG_NAME];
    if (owner !== undefined && owner !== name) return undefined;
    // Tagged as deleted but not deleted yet: a delete under way, or one that stopped half-way.
    if (tags[TAG_DELETED] === "true") return undefined;
    const user = userTagsOf(tags);
    return {
      value: secret.value ?? "",
      ...(secret.properties.version !== undefined && { version: secret.properties.version }),
      ...(secret.properties.updatedOn !== undefined && { updatedAt: secret.properties.updatedOn }),
      ...(Object.keys(user).length > 0 && { tags: user }),
    };
  }

  put(name: string, value: string, options: PutOptions = {}): Promise<PutOutcome> {
    return this.#put(name, value, { ...options, ifNewerThan: recordableStamp(options.ifNewerThan, idFits) });
  }

  delete(name: string, options: DeleteOptions = {}): Promise<DeleteOutcome> {
    return this.#delete(name, { ...options, ifNewerThan: recordableStamp(options.ifNewerThan, idFits) });
  }

  async #put(name: string, value: string, options: PutOptions): Promise<PutOutcome> {
    const key = this.#key(name);
    const meta = options.meta;
    return this.#queues.run(this.keyOf(name), async () => {
      try {
        // The stamp this write records over what `key` holds, or undefined: superseded (looked at
        // again while a delete finishes).
        const stampOver = (found: Found): ChangeStamp | undefined => {
          this.#refuseOtherOwner(found, name, key, options.adopt === false, options.replaces);
          return this.#stampOver(options.ifNewerThan, false, found);
        };
        const found = await this.#find(key);
        const stamp = stampOver(found);
        if (stamp === undefined) return "superseded";
        const held = meta?.tags === undefined && found.state === "live";
        const given = meta?.tags ?? (found.state === "live" ? found.userTags : meta?.whenCreated?.tags);
        const tags = { ...checkedUserTags(given, held ? key : undefined), ...stampTags(name, stamp, false) };
        const wins = (again: Found) => stampOver(again) !== undefined;
        if (!(await this.#write(key, value, tags, found.state === "deleted", wins))) return "superseded";
        if (found.state === "live" && found.owner === undefined) {
          this.#log.info("adopted a Key Vault secret made outside llm-secrets", { name, key });
        }
        return found.state === "live" ? "updated" : "created";
      } catch (err) {
        throw classifyBackendError(err, "azure key vault put");
      }
    });
  }

  async #delete(name: string, options: DeleteOptions): Promise<DeleteOutcome> {
    const key = this.#key(name);
    return this.#queues.run(this.keyOf(name), async () => {
      try {
        const found = await this.#find(key);
        this.#refuseOtherOwner(found, name, key, options.adopt === false);
        const stamp = this.#stampOver(options.ifNewerThan, true, found);
        if (stamp === undefined) {
          // Tagged as deleted and still live: a delete that stopped before beginDeleteSecret. Finish it.
          if (found.state !== "live" || !found.stampIsDelete) return "superseded";
          await this.#deleteNoWait(key);
          return "deleted";
        }
        const tombstone = stampTags(name, stamp, true);
        if (found.state === "live") {
          await this.#tagAndDelete(key, found.version, found.userTags, tombstone);
          return "deleted";
        }
        // Gone already. A direct delete leaves it so; an event's delete records its time.
        if (options.ifNewerThan === undefined) return "absent";
        if (found.state === "deleted") {
          const recovered = await this.#recover(key);
          if (recovered !== undefined) {
            await this.#tagAndDelete(key, recovered.version, found.userTags, tombstone);
            return "absent";
          }
          // Purged since it was seen: a name never written now.
        }
        // A name never written: an empty value carries the tombstone through the retention. A delete
        // or recovery under way (409) is waited out, and the name's owner and time read again: an
        // older delete never moves a newer delete's tombstone back, nor takes over another name's secret.
        // A look that finds it live again (another instance recovered and wrote it, before this
        // delete's time) stops the write: that secret is deleted as a live one is, its tags kept.
        const seen: { live?: Exclude<Found, { state: "absent" }> } = {};
        const wins = (again: Found) => {
          this.#refuseOtherOwner(again, name, key, options.adopt === false);
          if (this.#stampOver(options.ifNewerThan, true, again) === undefined) return false;
          if (again.state === "live") seen.live = again;
          return again.state !== "live";
        };
        if (await this.#write(key, "", tombstone, false, wins)) {
          await this.#deleteNoWait(key);
          return "absent";
        }
        if (seen.live === undefined) return "superseded";
        await this.#tagAndDelete(key, seen.live.version, seen.live.userTags, tombstone);
        return "deleted";
      } catch (err) {
        throw classifyBackendError(err, "azure key vault delete");
      }
    });
  }

  async list(options: ListOptions): Promise<NamePage> {
    const prefix = options.prefix ?? "";
    const maxPageSize = Math.max(1, Math.min(options.limit, MAX_LIST_PAGE));
    const continuationToken = options.cursor === undefined ? undefined : this.#pageLink(options.cursor, maxPageSize);
    const page: ListedPage = { answered: false };
    let items: SecretProperties[];
    try {
      items = await listing.run(page, async () => {
        const pages = this.#client
          .listPropertiesOfSecrets()
          .byPage({ maxPageSize, ...(continuationToken !== undefined && { continuationToken }) });
        return (await pages.next()).value ?? [];
      });
    } catch (err) {
      if (options.cursor !== undefined && statusOf(err) === 400) throw new InvalidInput("the cursor is not valid");
      throw classifyBackendError(err, "azure key vault list");
    }
    // A client built without azureClientOptions has no nextLinkPolicy: its pages could not be followed.
    if (!page.answered) throw new NotSupported("listing through a SecretClient without azureClientOptions");
    const names = items
      .filter((p) => p.enabled !== false && p.tags?.[TAG_DELETED] !== "true")
      .map((p) => this.#nameOf(p))
      .filter((name) => name.startsWith(prefix) && isValidName(name));
    return page.nextLink === undefined
      ? { names }
      : { names, cursor: Buffer.from(page.nextLink, "utf8").toString("base64url") };
  }

  // ---------------------------------------------------------------------------------------------

  /** The name a listed secret was written as: its tag, when the tag's name maps onto it, else the vault's name. */
  #nameOf(properties: SecretProperties): string {
    const owner = properties.tags?.[TAG_NAME];
    return owner !== undefined && this.keyOf(owner) === properties.name.toLowerCase() ? owner : properties.name;
  }

  /**
   * The `nextLink` a cursor holds, asking for `maxresults` pages, or `invalid_request`: only a link
   * to this vault's `/secrets` is followed (the SDK would send it our token).
   */
  #pageLink(cursor: string, maxresults: number): string {
    const link = Buffer.from(cursor, "base64url").toString("utf8");
    let url: URL;
    try {
      url = new URL(link);
    } catch {
      throw new InvalidInput("the cursor is not valid");
    }
    if (url.origin !== new URL(this.#client.vaultUrl).origin || url.pathname !== "/secrets") {
      throw new InvalidInput("the cursor is not valid");
    }
    // The page size of this call, not the first one's (the link keeps the rest of the query as written).
    return /[?&]maxresults=\d*/.test(link)
      ? link.replace(/([?&]maxresults=)\d*/, `$1${maxresults}`)
      : `${link}${url.search === "" ? "?" : "&"}maxresults=${maxresults}`;
  }

  /** The vault name of `name`, refused before any call when Key Vault cannot hold it. */
  #key(name: string): string {
    const key = vaultName(name);
    if (key.length > MAX_NAME) throw new InvalidName(`Azure Key Vault takes names of at most ${MAX_NAME} characters`);
    return key;
  }

  /**
   * Refuses a change of `name` over a live secret of another name (but the one a write `replaces`);
   * and, for a change that must not adopt (`adopt: false`: a key event's, a virtual key's), over any
   * secret without our tag: it never takes over nor deletes what was made outside llm-secrets (a
   * disabled secret's tags cannot be read, so it is taken as such).
   */
  #refuseOtherOwner(found: Found, name: string, key: string, noAdopt: boolean, replaces?: string): void {
    if (found.state === "live" && found.owner !== undefined && found.owner !== name && found.owner !== replaces) {
      throw new NameConflict(name, key);
    }
    if (noAdopt && found.state !== "absent" && found.owner === undefined) {
      throw new MadeOutside(name, `the Key Vault secret ${key}`, `no ${TAG_NAME} tag, or disabled`);
    }
  }

  async #find(key: string): Promise<Found> {
    try {
      const secret = await this.#client.getSecret(key);
      return found("live", secret.properties.version, secret.properties.tags);
    } catch (err) {
      // Disabled (in the portal): its tags cannot be read, so it is taken as made outside llm-secrets
      // (no name, no time); a write makes a new, enabled version, a delete deletes it.
      if (innerCodeOf(err) === "SecretDisabled") return found("live", undefined, undefined);
      if (statusOf(err) !== 404) throw err;
    }
    try {
      const deleted = await this.#client.getDeletedSecret(key);
      return found("deleted", deleted.properties.version, deleted.properties.tags);
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
      return { state: "absent" };
    }
  }

  /** The stamp a change records over what `key` holds, or undefined: superseded (`stampOfChange`). */
  #stampOver(ifNewerThan: ChangeStamp | undefined, isDelete: boolean, found: Found): ChangeStamp | undefined {
    const held = found.state === "absent" ? undefined : found;
    return stampOfChange(ifNewerThan, isDelete, held?.stamp, held?.stampIsDelete ?? false, this.#now());
  }

  /**
   * A new version of `key`, recovering it first when it is soft-deleted (or not, when it was purged
   * meanwhile). A `409` means a delete or a recovery is still under way: the name is looked at again
   * until it shows as live or deleted (recovered then), and written only if `stillWins` over what it
   * then holds (a delete under way is in neither list: its time and owner could not be read before).
   * While it shows as neither, nothing is written: the change under way could land between the look
   * and the write (another name's recovery, a newer delete), and a name purged meanwhile waits out the
   * attempts too (`backend_unavailable`; the next try finds it absent). False when it no longer wins.
   */
  async #write(
    key: string,
    value: string,
    tags: Record<string, string>,
    deleted: boolean,
    stillWins: (found: Found) => boolean,
  ): Promise<boolean> {
    let next: "write" | "recover" | "wait" = deleted ? "recover" : "write";
    for (let attempt = 1; ; attempt++) {
      let busy: unknown;
      if (next !== "wait") {
        try {
          if (next === "recover") await this.#recover(key);
          await this.#client.setSecret(key, value, { tags });
          return true;
        } catch (err) {
          if (statusOf(err) !== 409) throw err;
          busy = err;
        }
      }
      if (attempt >= BUSY_ATTEMPTS) {
        throw new BackendUnavailable("azure key vault: the secret is still being deleted or recovered", 1, {
          cause: busy,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, this.#pollMs));
      const again = await this.#find(key);
      if (!stillWins(again)) return false;
      next = again.state === "absent" ? "wait" : again.state === "deleted" ? "recover" : "write";
    }
  }

  /**
   * Deletes `key` without waiting for the delete to finish. `beginDeleteSecret` follows its DELETE
   * with one look at the deleted secret (`GET /deletedsecrets/{name}`); that look failing (throttled
   * or 5xx after the SDK's retries) does not undo the delete that landed, so only a failed DELETE fails.
   */
  async #deleteNoWait(key: string): Promise<void> {
    try {
      await this.#client.beginDeleteSecret(key);
    } catch (err) {
      if (requestMethodOf(err) !== "GET") throw err;
    }
  }

  /**
   * Recovers a soft-deleted secret and waits until it can be written: the recovered version; or
   * undefined when there is nothing to recover (`404` to the recover: purged since it was seen).
   */
  async #recover(key: string): Promise<{ version: string | undefined } | undefined> {
    try {
      const poller = await this.#client.beginRecoverDeletedSecret(key, { intervalInMs: this.#pollMs });
      const properties = await poller.pollUntilDone({ abortSignal: AbortSignal.timeout(RECOVERY_TIMEOUT_MS) });
      return { version: properties.version };
    } catch (err) {
      // The poller's looks at the secret take a 404 as "not yet": only the recover itself answers one.
      if (statusOf(err) === 404 && requestMethodOf(err) === "POST") return undefined;
      throw err;
    }
  }

  /**
   * Records the tombstone on the current version, then deletes the secret without waiting for the
   * delete to finish. The secret's own tags are kept beside ours when they fit in a version's 15;
   * when they do not (more than 11, added in the portal), ours replace them on that version: a
   * tombstone without its time would let a late event bring the name back (SPEC section 7).
   */
  async #tagAndDelete(
    key: string,
    version: string | undefined,
    userTags: Record<string, string>,
    tombstone: Record<string, string>,
  ): Promise<void> {
    // No version known (a disabled secret's cannot be read): deleted without our tombstone tags.
    if (version !== undefined) {
      const fits = Object.keys(userTags).length + Object.keys(tombstone).length <= MAX_TAGS;
      if (!fits) {
        this.#log.warn("deleting a Key Vault secret whose own tags leave no room for the delete's: they are dropped", {
          key,
          tags: Object.keys(userTags).length,
        });
      }
      await this.#client.updateSecretProperties(key, version, {
        tags: fits ? { ...userTags, ...tombstone } : tombstone,
      });
    }
    await this.#deleteNoWait(key);
  }
}

function found(
  state: "live" | "deleted",
  version: string | undefined,
  tags: Record<string, string> | undefined,
): Exclude<Found, { state: "absent" }> {
  const all = tags ?? {};
  const at = Number(all[TAG_AT]);
  const id = all[TAG_ID];
  return {
    state,
    version,
    owner: all[TAG_NAME],
    userTags: userTagsOf(all),
    stamp: all[TAG_AT] !== undefined && Number.isFinite(at) ? { at, ...(id !== undefined && { id }) } : undefined,
    stampIsDelete: state === "deleted" || all[TAG_DELETED] === "true",
  };
}

function statusOf(err: unknown): number | undefined {
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === "number" ? status : undefined;
}

/** The HTTP method of the request an SDK error answers (`RestError.request`). */
function requestMethodOf(err: unknown): string | undefined {
  const method = (err as { request?: { method?: unknown } } | null)?.request?.method;
  return typeof method === "string" ? method : undefined;
}

/** Key Vault's inner error code (`{"error":{"innererror":{"code"}}}`, `innerError` once the SDK has read it). */
function innerCodeOf(err: unknown): string | undefined {
  const error = (err as { details?: { error?: Record<string, { code?: unknown } | undefined> } } | null)?.details
    ?.error;
  const code = (error?.innerError ?? error?.innererror)?.code;
  return typeof code === "string" ? code : undefined;
}

function userTagsOf(tags: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(tags).filter(([key]) => !key.startsWith(OUR_PREFIX)));
}

/**
 * The caller's tags without ours, refused when they would not fit beside ours in a version's 15, or
 * a name or value is longer than Key Vault takes. `heldBy`: the tags are those the secret holds
 * (made in the portal), carried forward by a write that gives none; the refusal names them as the
 * cause, and the write may give at most 11 of its own, which replace them.
 */
function checkedUserTags(tags: Readonly<Record<string, string>> | undefined, heldBy?: string): Record<string, string> {
  const user = userTagsOf(tags ?? {});
  const count = Object.keys(user).length;
  if (heldBy !== undefined && count > MAX_USER_TAGS) {
    // The secret's state, for its owner to fix, not the caller's request: a key event meeting it
    // fails and is tried again (as on AWS), rather than being refused and dropped.
    throw new StoreUnavailable(
      `the Key Vault secret ${heldBy} holds ${count} tags of its own, which a write without tags keeps, and llm-secrets adds up to 4 of a version's ${MAX_TAGS}: give the write at most ${MAX_USER_TAGS} tags (they replace the secret's), or remove some of the secret's`,
    );
  }
  const problem = tagsProblem(user);
  if (problem !== undefined) throw new InvalidInput(problem);
  return user;
}

/** Why Key Vault could not hold `tags` (without ours) beside ours, or undefined. */
function tagsProblem(tags: Readonly<Record<string, string>>): string | undefined {
  if (Object.keys(tags).length > MAX_USER_TAGS) {
    return `Azure Key Vault keeps at most ${MAX_TAGS} tags on a secret and llm-secrets uses 4: give at most ${MAX_USER_TAGS}`;
  }
  for (const [name, value] of Object.entries(tags)) {
    if (name.length > MAX_TAG_NAME) {
      return `the tag ${name.slice(0, 64)}...: Azure Key Vault takes tag names of at most ${MAX_TAG_NAME} characters`;
    }
    if (value.length > MAX_TAG_VALUE) {
      return `the tag ${name}: Azure Key Vault takes tag values of at most ${MAX_TAG_VALUE} characters`;
    }
  }
  return undefined;
}

/** Whether an event id fits a tag value (else it is recorded as its digest: `recordableStamp`). */
function idFits(id: string): boolean {
  return id.length <= MAX_TAG_VALUE;
}

/** Our tags for a change: the name, its time and event id, and whether it deleted. Empty values are never sent. */
function stampTags(name: string, stamp: ChangeStamp, deleted: boolean): Record<string, string> {
  // An empty id orders as no id (`isNewer`), and Key Vault is not sent empty tag values.
  return {
    [TAG_NAME]: name,
    [TAG_AT]: String(stamp.at),
    ...(stamp.id && { [TAG_ID]: stamp.id }),
    [TAG_DELETED]: deleted ? "true" : "false",
  };
}

export const azureKeyVaultStore = {
  kind: "azure_key_vault",
  settings: AzureKeyVaultSettings,
  defaults: { accessMode: "read_only", needsLocalKey: false, envBacked: false, legacyFlag: "use_azure_key_vault" },
  capabilities: {
    writes: true,
    deletes: true,
    compareAndSet: true,
    maxValueBytes: 25_000,
    records: ["version", "updatedAt", "tags"],
  },
  open: async (settings, deps) => {
    const { env } = settings;
    refuseCreationTags(settings.config, azureKeyVaultStore.defaults.accessMode, (tags) => checkedUserTags(tags));
    const [kv, identity] = await Promise.all([import("@azure/keyvault-secrets"), import("@azure/identity")]);
    const options = azureCredentialOptions(env);
    const { AZURE_TENANT_ID: tenant, AZURE_CLIENT_ID: client, AZURE_CLIENT_SECRET: secret } = env;
    const credential: TokenCredential =
      tenant && client && secret
        ? new identity.ClientSecretCredential(tenant, client, secret, options)
        : new identity.DefaultAzureCredential(options);
    return new AzureKeyVaultStore({
      client: new kv.SecretClient(
        env.AZURE_KEY_VAULT_URI,
        credential,
        azureClientOptions(env.AZURE_KEY_VAULT_URI, undefined, deps.outbound),
      ),
      now: deps.now,
      log: deps.log,
    });
  },
} as const satisfies StoreFactory<"azure_key_vault", typeof AzureKeyVaultSettings>;

/** The vault secret a name is written as: each character outside `[0-9A-Za-z-]` becomes `-`. */
function vaultName(name: string): string {
  return name.replace(/[^0-9A-Za-z-]/g, "-");
}
