/**
 * Key events (SPEC section 7): a gateway's virtual keys, created, regenerated or deleted, applied
 * to the store. The one place their rules live: the queue handlers of every runtime and
 * `POST /v1/key-events` call `applyKeyEvent`.
 *
 * - Names: `prefix_for_stored_virtual_keys` + (`key_alias`, or `virtual-key-<token_hash>`). An alias
 *   spelled as another key's hash name (`virtual-key-<64 hex>`) is malformed to write, absent to delete.
 * - Teams: an event's `team_id` selects `team_settings[team_id]` from config (never settings from
 *   the event): where a store that honours them keeps the keys (Vault's namespace, mount, path
 *   prefix, field), and the team's own prefix, description and tags. A name is the team's only if,
 *   of every configured prefix it starts with (the store's mapping counted), the longest is the
 *   team's own (the manager's check): another team's alias `team-a/prod` is refused.
 * - Value: `key`, or `key_ciphertext` opened with the salt key (so the queue need not carry
 *   plaintext; section 5's format).
 * - created: write. regenerated: write the new name, then delete the previous one if it differs.
 *   deleted: delete every name the event gives (alias and hash both; LiteLLM leaves hash-named
 *   secrets behind).
 * - Only with `store_virtual_keys: true` and an access mode that allows writes: else refused.
 *   An event's change never takes over nor deletes a secret made outside llm-secrets that its name
 *   maps onto (the manager passes `adopt: false`): `name_conflict`, refused.
 * - At-least-once delivery: every write and delete carries the event's time and id
 *   (`ifNewerThan`), so applying an event twice changes nothing, and an event older than the last
 *   change of a name (an event's, or a direct write's arrival) is superseded, a delete winning ties:
 *   a redelivered `created` never revives a deleted key. Stores keep tombstones only so long (AWS's
 *   recovery window, Azure's soft delete), so an event older than `LLM_SECRETS_MAX_EVENT_AGE`
 *   (default 6 days) is refused and reported, never applied.
 *
 * Outcomes: `applied` (something changed), `superseded` (every change was older than what the store
 * holds: nothing to do), `refused` (malformed, too old, dated ahead of this clock, or not allowed:
 * retrying cannot help; a queue sends it to its dead letters), `failed` (the store failed: retry;
 * applying again is safe).
 * Logs and outcomes name events and secrets, never a key.
 */
import type * as z from "zod/mini";
import { KeyEventSchema } from "./api-schemas";
import { type KeyRing, openSecret } from "./crypto";
import { EncryptionKeyMissing, type ErrorCode, SecretsError } from "./errors";
import { describeUnexpected, type Logger } from "./log";
import type { Metrics } from "./metrics";
import { isValidName, TOKEN_HASH_NAME } from "./names";
import type { EventChange, SecretManager } from "./secret-manager";
import { MAX_CLOCK_SKEW_MS } from "./secret-store";
import { type KeyManagement, virtualKeyPrefix } from "./settings";
import { loggableMessage } from "./store-errors";
import { describeIssues, issuesOf, safeParse } from "./validation";

type KeyEvent = z.infer<typeof KeyEventSchema>;

type KeyEventStatus = "applied" | "superseded" | "refused" | "failed";

/**
 * Errors of the store or of this deployment, not of the event: it is `failed`, so every queue
 * delivers it again (Pub/Sub included, which acknowledges a malformed one) and, if it keeps
 * failing, its dead-letter queue keeps it until the store or the deployment is fixed. Any other
 * error (a malformed event, a name that is not one, a policy that refuses it) is `refused`.
 */
const NOT_THE_EVENTS_FAULT: ReadonlySet<ErrorCode> = new Set([
  "backend_unavailable",
  "backend_denied",
  "store_unavailable",
  "store_corrupt",
  "encryption_key_missing",
  // A key_ciphertext that does not open here: most often a salt key that is not the gateway's.
  "decrypt_failed",
  "internal",
]);

export interface KeyEventResult {
  /** The event's id, when it had a readable one. */
  id?: string;
  status: KeyEventStatus;
  /** What happened to each name: `created`, `updated`, `deleted`, `absent`, `superseded`. */
  names?: Record<string, string>;
  /** For `refused` and `failed`: the stable code and a reason (never a key). */
  code?: ErrorCode;
  message?: string;
  /** For `failed` with `backend_unavailable`: seconds before a retry may succeed. */
  retryAfter?: number;
  /**
   * For `refused`: the message can never be an event applied anywhere (not JSON, not the schema, a
   * name that is not one). Pub/Sub acknowledges only these; the other refusals (a policy, a time)
   * reach its dead-letter topic, as every refusal reaches SQS's and Azure's dead letters.
   */
  malformed?: true;
}

export interface KeyEventDeps {
  manager: SecretManager;
  policy: KeyManagement;
  keys?: KeyRing;
  maxAgeSeconds: number;
  now: () => number;
  log: Logger;
  metrics: Metrics;
}

/**
 * Applies one event (any JSON: it is validated here). Never throws: the result says what happened.
 * `messageId` is the queue's id of the message that carried it (SQS, Storage Queue, Pub/Sub), named
 * in the line of an event not applied so that it can be found in the dead-letter queue.
 */
export async function applyKeyEvent(input: unknown, deps: KeyEventDeps, messageId?: string): Promise<KeyEventResult> {
  return counted(await apply(input, deps), deps, messageId);
}

/** A queue message whose body is not JSON: refused like any malformed event (counted, logged). */
export function refuseNotJson(deps: KeyEventDeps, messageId?: string): KeyEventResult {
  return counted(malformed(undefined, "the message is not JSON"), deps, messageId);
}

/**
 * What the line of an event not applied says of its store's error, when that is not its message:
 * a user's own store's message goes to the caller, never to a log (`loggableMessage`). A symbol
 * key, so no answer's JSON carries it.
 */
const LOG_REASON = Symbol("llm-secrets: the reason a log line gives");

function counted(
  result: KeyEventResult & { [LOG_REASON]?: string },
  deps: KeyEventDeps,
  messageId: string | undefined,
): KeyEventResult {
  deps.metrics.inc("llm_secrets_key_events_total", { status: result.status });
  if (result.status === "refused" || result.status === "failed") {
    deps.log.warn("key event not applied", {
      id: result.id,
      message_id: messageId,
      status: result.status,
      code: result.code,
      reason: result[LOG_REASON] ?? result.message,
    });
  }
  return result;
}

async function apply(input: unknown, deps: KeyEventDeps): Promise<KeyEventResult & { [LOG_REASON]?: string }> {
  const id = idOf(input);
  const parsed = safeParse(KeyEventSchema, input);
  if (!parsed.success) {
    return malformed(id, `malformed key event: ${describeIssues(issuesOf(parsed.error))}`);
  }
  const event = parsed.data;
  const { policy } = deps;
  if (!policy.storeVirtualKeys) {
    return refused(
      event.id,
      "not_supported",
      "key events are off: set key_management_settings.store_virtual_keys: true",
    );
  }
  if (policy.accessMode === "read_only") {
    return refused(event.id, "read_only", "writes are disabled: access_mode is read_only");
  }
  const at = Date.parse(event.occurred_at);
  const age = deps.now() - at;
  if (-age > MAX_CLOCK_SKEW_MS) {
    // Recorded as its key's last change, a future time would make every later change to that key
    // (a revocation included) older than it, and so ignored.
    return refused(
      event.id,
      "invalid_request",
      `the event is dated ${Math.ceil(-age / 1000)} s ahead of this clock, past the ${MAX_CLOCK_SKEW_MS / 1000} s allowed for clock skew`,
    );
  }
  if (age > deps.maxAgeSeconds * 1000) {
    return refused(
      event.id,
      "invalid_request",
      `the event is ${Math.floor(age / 1000)} s old, past LLM_SECRETS_MAX_EVENT_AGE (${deps.maxAgeSeconds} s): stores may have forgotten the deletes it could undo`,
    );
  }
  // The team's settings come from config (`team_settings`), never from the event: only its id does.
  const team = event.team_id ?? undefined;
  const change: EventChange = { stamp: { at, id: event.id }, ...(team !== undefined && { team }) };
  const prefix = virtualKeyPrefix(policy, team);
  const names: Record<string, string> = {};
  // An alias spelled as a hash's name lands on that key's secret (`virtual-key-<hash>`): refused as
  // malformed when it is to be written (no settings could make it this key's name), and never
  // stored, so only absent, when it is to be deleted.
  if (event.type !== "key.deleted" && spoofsHash(event.key_alias, event)) {
    return malformed(
      event.id,
      "key_alias is spelled virtual-key-<64 hex digits>, the name of another key's token hash: it would replace that key's secret",
    );
  }
  const spoofed = new Set(
    [event.key_alias, event.previous_key_alias].filter((a) => spoofsHash(a, event)).map((a) => `${prefix}${a}`),
  );
  // A delete takes both names; a create or regeneration writes one (the alias's, else the hash's),
  // and a regeneration deletes its previous names.
  const current = namesOf(event.key_alias, event.token_hash, prefix);
  const written = event.type === "key.deleted" ? undefined : (current[0] as string);
  const deleted =
    written === undefined
      ? current
      : event.type === "key.regenerated"
        ? namesOf(event.previous_key_alias, event.previous_token_hash, prefix).filter((old) => old !== written)
        : [];
  // A name to delete that is no name (LiteLLM's aliases are free text: "my key"), or another key's
  // hash name, was never stored: it is absent, and the event's other names (the hash's) are still
  // deleted. The revoked key must not stay stored for an alias it also had.
  const deletable = deleted.filter((name) => isValidName(name) && !spoofed.has(name));
  // A previous name the store keeps on the new name's own key (Azure folds case and `_`: `team_a`
  // to `team-a` is one secret) is a rename: the write takes that secret over from it, rather than
  // be refused as a name conflict with the revoked key left stored, and it is not deleted after
  // (that would delete the new key). Its outcome is the write's: the old name is gone once the
  // secret holds the new one.
  const renamed =
    written === undefined
      ? undefined
      : deletable.find((name) => deps.manager.keyOf(name, team) === deps.manager.keyOf(written, team));
  // Whether every name passed the manager's checks: a name refused after that is the store's.
  let checked = false;
  try {
    // Every other name is checked before the first change, so that a refusal (a new alias that is
    // no name, a name outside hosted_keys) leaves nothing half done.
    for (const name of [...(written === undefined ? [] : [written]), ...deletable]) {
      checkedWrite(deps.manager, name, change);
    }
    checked = true;
    if (written !== undefined) {
      const value = eventValue(event, deps.keys);
      const put = await deps.manager.put(written, value, {}, { ...change, ...(renamed && { replaces: renamed }) });
      names[written] = put.outcome;
      // Over the previous name's secret the write updated it (deleting that name); created, it was not there.
      if (renamed !== undefined) {
        names[renamed] = put.outcome === "updated" ? "deleted" : put.outcome === "created" ? "absent" : "superseded";
      }
    }
    for (const name of deleted) {
      if (name === renamed) continue;
      names[name] = deletable.includes(name) ? await deps.manager.delete(name, change) : "absent";
    }
  } catch (err) {
    if (!(err instanceof SecretsError)) {
      // A bug, not the event's fault: this event fails (and is sent again), not its whole batch.
      deps.log.error("key event failed unexpectedly", { id: event.id, ...describeUnexpected(err) });
      return { id: event.id, status: "failed", names, code: "internal", message: "internal error" };
    }
    const retryable = err.code === "backend_unavailable";
    return {
      id: event.id,
      status: NOT_THE_EVENTS_FAULT.has(err.code) ? "failed" : "refused",
      names,
      code: err.code,
      message: err.message,
      [LOG_REASON]: loggableMessage(err),
      ...(retryable && { retryAfter: err.details.retryAfter }),
      // Only a name that is no name is malformed. One the store itself refuses (Infisical's folders
      // take no `.`, Azure no more than 127 characters) is a setting to fix (the prefix): not
      // malformed, so it reaches the dead letters on every queue (Pub/Sub's too) rather than be
      // acknowledged and lost.
      ...(err.code === "invalid_name" && !checked && { malformed: true as const }),
    };
  }
  const changed = Object.values(names).some((o) => o !== "superseded" && o !== "absent");
  return { id: event.id, status: changed ? "applied" : "superseded", names };
}

/** `manager.checkWrite`, a name that is no name said as which name (an alias is free text: the producer must find it). */
function checkedWrite(manager: KeyEventDeps["manager"], name: string, change: EventChange): void {
  try {
    manager.checkWrite(name, change);
  } catch (err) {
    if (err instanceof SecretsError && err.code === "invalid_name") {
      throw new SecretsError("invalid_name", `${JSON.stringify(name.slice(0, 300))}: ${err.message}`);
    }
    throw err;
  }
}

/**
 * The secret names of an alias and a hash: the alias's, then the hash's (a delete takes both),
 * once each: an alias spelled as its own hash's name (`virtual-key-<hash>`) is that one name, whose
 * second delete would answer `superseded` over the first's `deleted`.
 */
function namesOf(alias: string | null | undefined, hash: string | null | undefined, prefix: string): string[] {
  const names: string[] = [];
  if (alias) names.push(`${prefix}${alias}`);
  const hashName = hash ? `${prefix}virtual-key-${hash}` : undefined;
  if (hashName !== undefined && hashName !== names[0]) names.push(hashName);
  return names;
}

/** Whether `alias` is spelled as the name of a token hash other than the event's own (current or previous). */
function spoofsHash(alias: string | null | undefined, event: KeyEvent): boolean {
  const hash = alias ? TOKEN_HASH_NAME.exec(alias)?.[1]?.toLowerCase() : undefined;
  return hash !== undefined && hash !== event.token_hash && hash !== event.previous_token_hash;
}

function eventValue(event: KeyEvent, keys: KeyRing | undefined): string {
  if (event.key) return event.key;
  if (!keys) throw new EncryptionKeyMissing();
  return openSecret(event.key_ciphertext as string, keys);
}

function refused(id: string | undefined, code: ErrorCode, message: string): KeyEventResult {
  return { ...(id !== undefined && { id }), status: "refused", code, message };
}

/** Refused as a message that can never be an event applied anywhere (see `malformed` above). */
function malformed(id: string | undefined, message: string): KeyEventResult {
  return { ...refused(id, "invalid_request", message), malformed: true };
}

/** The id of something that may not be an event, for reports: a short string or nothing. */
function idOf(input: unknown): string | undefined {
  const id = (input as { id?: unknown } | null)?.id;
  return typeof id === "string" && id.length > 0 && id.length <= 512 ? id : undefined;
}
