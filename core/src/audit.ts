/**
 * The audit trail: one JSON line per read, write, delete, list, resolve, decrypt and forward (the
 * model's name: its key is read) that reached the API, refused ones included (a wrong key, a name
 * outside `hosted_keys`). Separate from the access log (stderr when served by the CLI): audit lines
 * go to stdout, or nowhere with `LLM_SECRETS_AUDIT=off`.
 *
 *   {"time":"2026-11-26T02:30:00.000Z","audit":"read","name":"OPENAI_API_KEY","outcome":"ok",
 *    "request_id":"2f1c...","caller":"9b71d224"}
 *
 * - `outcome`: `ok`, or the error code of the answer (SPEC section 6).
 * - `caller`: the first 8 hex digits of the SHA-256 of the key the caller presented (`none` when it
 *   presented none): enough to tell callers apart and match them to a known key, never the key.
 * - `request_id`: ours, never the caller's: the runtime's own id for the invocation (Lambda's
 *   request id, which joins the line to Lambda's own), else a fresh UUID: version 8 (RFC 9562), 74
 *   random bits drawn once per process, then a counter (unique without a random draw per request:
 *   `randomUUID` measured about 1 µs of a cached read under load).
 * - `client_request_id`: the caller's `x-request-id` when it is a plain token (at most 128 of
 *   `[A-Za-z0-9._:-]`) and the caller presented the master key; absent otherwise. It was the
 *   `request_id`: any caller, one refused with 401 too, could then give its line the id of
 *   another's, and on Lambda it replaced Lambda's id.
 * - `source`: the address the request came from, as the runtime itself knows it: `serve`'s socket
 *   peer (a proxy's, behind one), Lambda's `sourceIp`. Never from a header a client can set, so
 *   absent on Azure and Google, whose functions see the client only in `X-Forwarded-For`, and for
 *   queue messages.
 * - `name`: the secret's name as asked for, clipped to 256 characters (a list's prefix); absent
 *   for resolve and decrypt, which touch many names or none, and for key events (`names`).
 * - `replaces`: a write's previous name (`PUT`'s body), clipped as a name: the name its rename ends
 *   (when the store keeps both on one secret), or that was tried, refused ones included.
 * - `team`: the `team_id` a read asked for (`?team_id=`: with a team's settings, a Vault namespace,
 *   mount or field, the same name is another secret), or a key event's; past 256 characters
 *   clipped and ended with `…`. Absent without one.
 * - Key events (`key_event`, from a queue or `POST /v1/key-events`): one line per event, `names`
 *   each name the event touched with what became of it (`{"litellm/a":"created","litellm/b":"deleted"}`:
 *   `created`, `updated`, `deleted`, `absent`, `superseded`; a JSON object, since an alias is free
 *   text and may hold a comma), no `name`; `event_id` the event's id as sent and `team` its
 *   `team_id` (each when it has one, clipped like a name); `outcome` `ok` when applied, else its
 *   code or status. From a queue the request id is the queue's id of the message (as a caller's
 *   `x-request-id`: when a plain token), and the caller is `queue`.
 * No value, ciphertext or key ever appears in a line.
 */
import { randomBytes } from "node:crypto";
import { fingerprint } from "./auth";

export type AuditAction = "read" | "write" | "delete" | "list" | "resolve" | "decrypt" | "key_event" | "forward";

export interface AuditEntry {
  action: AuditAction;
  name?: string;
  /** A write's previous name (`PUT`'s `replaces`: the name a rename ends), clipped. */
  replaces?: string;
  /** A key event's names, each with what became of it (`created`, `deleted`, `absent`, ...), each clipped. */
  names?: readonly (readonly [name: string, outcome: string])[];
  /** A key event's id as sent, clipped. */
  eventId?: string;
  /** The team a request or event named (`team_id`), clipped. */
  team?: string;
  outcome: string;
  requestId: string;
  /** The caller's own id of the request (its `x-request-id`, a plain token), when it presented the master key. */
  clientRequestId?: string;
  caller: string;
  /** The address the request came from, as the runtime knew it (`plainAddress`; HTTP only, where known). */
  source?: string;
  /** Milliseconds from the request's arrival in the app to its answer (HTTP only). */
  ms?: number;
}

export type Audit = (entry: AuditEntry) => void;

/**
 * An audit that writes each entry as one JSON line through `write`. It is on every audited
 * request's path: the time is formatted once per millisecond, and the line is built from its
 * fields (the name, which a caller controls, goes through JSON escaping; the rest are ours or
 * already checked to be plain tokens).
 */
export function createAudit(write: (line: string) => void, options: { severity?: boolean } = {}): Audit {
  // With `severity`, each line carries Google Cloud Logging's level of it (log.ts says why).
  const head = options.severity ? `{"severity":"INFO","time":"` : `{"time":"`;
  let lastMs = 0;
  let lastTime = "";
  return (entry) => {
    const ms = Date.now();
    if (ms !== lastMs) {
      lastMs = ms;
      lastTime = new Date(ms).toISOString();
    }
    const eventId = entry.eventId === undefined ? "" : `,"event_id":${JSON.stringify(entry.eventId)}`;
    const name = entry.name === undefined ? "" : `,"name":${JSON.stringify(entry.name)}`;
    const replaces = entry.replaces === undefined ? "" : `,"replaces":${JSON.stringify(entry.replaces)}`;
    const names = entry.names === undefined ? "" : `,"names":${namesObject(entry.names)}`;
    const team = entry.team === undefined ? "" : `,"team":${JSON.stringify(entry.team)}`;
    const took = entry.ms === undefined ? "" : `,"ms":${entry.ms}`;
    // A plain token (requestIdOf, plainRequestId): as it is.
    const client = entry.clientRequestId === undefined ? "" : `,"client_request_id":"${entry.clientRequestId}"`;
    // A plain address (plainAddress): as it is.
    const source = entry.source === undefined ? "" : `,"source":"${entry.source}"`;
    write(
      `${head}${lastTime}","audit":"${entry.action}"${eventId}${name}${replaces}${names}${team},"outcome":"${entry.outcome}","request_id":"${entry.requestId}"${client},"caller":"${entry.caller}"${source}${took}}\n`,
    );
  };
}

/** `{"<name>":"<outcome>",...}`: written pair by pair (a name, which an event controls, JSON-escaped). */
function namesObject(names: NonNullable<AuditEntry["names"]>): string {
  let out = "";
  for (const [name, outcome] of names)
    out += `${out === "" ? "" : ","}${JSON.stringify(name)}:${JSON.stringify(outcome)}`;
  return `{${out}}`;
}

/** The longest name a line shows whole: a valid name's limit (names.ts). */
const MAX_NAME = 256;

/**
 * A name as a key event's line shows it: whole when it could be a name, else its first 256
 * characters and `…` (no name holds that character, so a clipped name is never taken for a stored
 * one; and a name longer than a name can be was never stored: its outcome is `absent`).
 */
export const clipped = (name: string) => (name.length > MAX_NAME ? `${name.slice(0, MAX_NAME)}…` : name);

/** A string field of what may be an event (any JSON), clipped; undefined when it is not a non-empty string. */
function textOf(event: unknown, field: "id" | "team_id"): string | undefined {
  const value = event !== null && typeof event === "object" ? (event as Record<string, unknown>)[field] : undefined;
  return typeof value === "string" && value !== "" ? clipped(value) : undefined;
}

/**
 * The audit line of one key event's result (key-events.ts). `event` is the event as it came (any
 * JSON, or undefined when it was not JSON): its id and `team_id` say which event, for which team,
 * refused ones included.
 */
export function keyEventEntry(
  result: { id?: string; status: string; names?: Record<string, string>; code?: string },
  event: unknown,
  requestId: string,
  caller: string,
): AuditEntry {
  // Every name the event touched, each with its own outcome: a line lists none as changed that
  // was not (an alias only to delete that is no name is `absent`), and clips each name on its own.
  const names = Object.entries(result.names ?? {}).map(([name, outcome]) => [clipped(name), outcome] as const);
  const eventId = result.id === undefined ? textOf(event, "id") : clipped(result.id);
  const team = textOf(event, "team_id");
  return {
    action: "key_event",
    ...(eventId !== undefined && { eventId }),
    ...(names.length > 0 && { names }),
    ...(team !== undefined && { team }),
    outcome: result.status === "applied" ? "ok" : (result.code ?? result.status),
    requestId,
    caller,
  };
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** An IPv4 or IPv6 address as node and Lambda spell one (`::ffff:127.0.0.1`, a zone: `fe80::1%eth0`). */
const ADDRESS = /^[A-Za-z0-9.:%_-]{1,64}$/;

/** The runtime's address of a request's source, when it is a plain address; else undefined (never shown). */
export function plainAddress(address: string | undefined): string | undefined {
  return address !== undefined && ADDRESS.test(address) ? address : undefined;
}

/** An id as a line may carry it (a plain token: see the header), or undefined. */
export function plainRequestId(id: string | undefined): string | undefined {
  return id !== undefined && REQUEST_ID.test(id) ? id : undefined;
}

/** The request id of an audit line (see the header): the runtime's id of the invocation, else one made here. */
export function requestIdOf(runtimeId: string | undefined): string {
  return plainRequestId(runtimeId) ?? nextRequestId();
}

let idPrefix = newIdPrefix();
let idCounter = 0;
const MAX_ID_COUNTER = 2 ** 48 - 1;

/** `xxxxxxxx-xxxx-8xxx-Vxxx-`: random hex, the version (8) and the variant (binary 10xx). */
function newIdPrefix(): string {
  const h = randomBytes(10).toString("hex");
  const variant = (8 | (Number.parseInt(h[18] as string, 16) & 3)).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(12, 15)}-${variant}${h.slice(15, 18)}-`;
}

/** A UUIDv8 unique to this request: this process's prefix, then 48 bits of counter. */
export function nextRequestId(): string {
  if (idCounter > MAX_ID_COUNTER) {
    idPrefix = newIdPrefix();
    idCounter = 0;
  }
  return idPrefix + (idCounter++).toString(16).padStart(12, "0");
}

/** The caller's fingerprint: the key it presented, as `x-litellm-api-key` or `Authorization: Bearer`. */
export function callerOf(apiKeyHeader: string | undefined, authorization: string | undefined): string {
  const key =
    apiKeyHeader !== undefined
      ? apiKeyHeader.trim()
      : authorization !== undefined && /^bearer\s/i.test(authorization)
        ? authorization.slice(7).trim()
        : "";
  return key === "" ? "none" : fingerprint(key);
}
