/**
 * The file store's on-disk format, version 2: one append-only log, `secrets.log`.
 *
 * Each line is `<crc32 of the JSON, 8 hex digits> <JSON>\n`:
 * - line 1, the header: `{"format":"llm-secrets/file-store","version":2,"seq":N,"keys":[kcv, ...]}`.
 *   `seq` is the last change number when the file was written; `keys` are key check values (below).
 * - every other line, one batch: `{"changes":[change, ...],"keys"?:[kcv, ...]}`, written by one
 *   `write()` and made durable by one `fdatasync` (a group commit of every change queued meanwhile).
 *   A change is `{"s":seq,"n":name,"t":time,"i"?:event id,"w":written at,"c"?:created at,
 *   "v"?:sealed value,"d"?:description,"g"?:tags}`; without `v` it is a tombstone (time only).
 *   Times are milliseconds since the epoch; `v` is the value sealed by `sealSecret` (LiteLLM's format).
 *
 * The state is the last change of each name, in log order; but a key event's change (it has its
 * id, `i`) stands only over an older change, as it was decided when written (so two writers that
 * appended at once cannot let an older event override a newer one by landing second).
 *
 * A compaction (or `reencrypt`) writes the state (a header and batches of changes) to a temp file,
 * fsyncs it and renames it over the log.
 *
 * Torn tails: writers append only under the lock and fsync before they release it, so every line
 * but the last was durable before the next one was begun (a line whose fsync failed stays, and its
 * writer rewrites the log, fsynced, before it appends again or closes: file.ts). Only the last line can be damaged by a
 * crash (`kill -9` leaves it short; a power loss may leave it short or with zeros in it), and it
 * was never acknowledged: readers ignore it and the next writer truncates it. A whole last line
 * that does not read and holds no zero is no crash's doing (a byte of it changed): refused as
 * corrupt, as any other damaged line. A damaged line with
 * lines after it is not a crash's doing: the log is then refused as corrupt and left untouched.
 *
 * Key check values: `keyCheckOf(key)` is HMAC-SHA256(SHA-256(salt key), a fixed label), 16 bytes in
 * base64url. It identifies a salt key without revealing it (a sealed value allows the same offline
 * guessing). The state's `keys` name every key that may have sealed a value in the log: the header's,
 * plus those batches add when a new current key first writes. `reencrypt` resets them to the current
 * key's. A store opened with a key ring that does not hold every one of them stops at the start.
 */
import { createHmac } from "node:crypto";
import { crc32 } from "node:zlib";
import type { KeyRing } from "../crypto";
import { StoreCorrupt } from "../store-errors";

export const LOG_FILE = "secrets.log";
/**
 * What the start's error says of a store (a log, or a format-1 document to migrate) sealed with a
 * key this process lacks: the CLI adds to it when master.key was missing.
 */
export const SEALED_WITH_ANOTHER_KEY = "was sealed with another key";
export const FORMAT = "llm-secrets/file-store";
export const LOG_VERSION = 2;

/** The last change of a name. Short keys: a store of 20 000 entries is read at every start. */
export interface Change {
  /** Change number: increases by one with every change, across processes; the record's version. */
  s: number;
  /** The name. */
  n: string;
  /** The change's time (a key event's `occurred_at`, else when it was written). */
  t: number;
  /** The key event's id, which breaks ties between equal times. */
  i?: string;
  /** When it was written (tombstones expire 14 days after). */
  w: number;
  /** When the name was created (live values only). */
  c?: number;
  /** The sealed value; absent in a tombstone. */
  v?: string;
  /** Description. */
  d?: string;
  /** Tags. */
  g?: Record<string, string>;
}

export interface Header {
  format: typeof FORMAT;
  version: typeof LOG_VERSION;
  seq: number;
  keys: string[];
}

export interface Batch {
  changes: Change[];
  keys?: string[];
}

/** A key check value: identifies a salt key without revealing it. */
export function keyCheckOf(key: KeyRing["current"]): string {
  return createHmac("sha256", key.sha256).update("llm-secrets/file-store key check").digest("base64url").slice(0, 22);
}

const NEWLINE = 0x0a;
const SPACE = 0x20;
const CRC_DIGITS = 8;

/** One line of the log: `<crc32 hex> <json>\n`. */
export function frame(record: Header | Batch): Buffer {
  const json = Buffer.from(JSON.stringify(record), "utf8");
  const line = Buffer.allocUnsafe(CRC_DIGITS + 1 + json.length + 1);
  line.write(crc32(json).toString(16).padStart(CRC_DIGITS, "0"), 0, "latin1");
  line[CRC_DIGITS] = SPACE;
  json.copy(line, CRC_DIGITS + 1);
  line[line.length - 1] = NEWLINE;
  return line;
}

export interface Parsed {
  /** Set when the bytes began at the start of the file. */
  header?: Header;
  batches: { batch: Batch; bytes: number }[];
  /** Bytes read as whole, valid lines (from the start of `bytes`). */
  consumed: number;
  /** What follows them: nothing, a line still being written or torn by a crash, or a damaged last line. */
  tail: "none" | "incomplete" | "damaged";
}

/**
 * Reads whole lines from `bytes`, the part of the log that starts at `offset` (the header first when
 * `offset` is 0). Stops at the first line that is incomplete or damaged when nothing follows it;
 * throws `StoreCorrupt` on a damaged line that is followed by more.
 */
export function parseLog(bytes: Buffer, offset: number): Parsed {
  const parsed: Parsed = { batches: [], consumed: 0, tail: "none" };
  let at = 0;
  while (at < bytes.length) {
    const end = bytes.indexOf(NEWLINE, at);
    if (end < 0) {
      parsed.tail = "incomplete";
      break;
    }
    const record = readLine(bytes, at, end);
    const isHeader = offset + at === 0;
    const valid = isHeader ? asHeader(record) : asBatch(record);
    if (valid === undefined) {
      const last = end + 1 === bytes.length;
      // A whole last line that does not read is a crash's only where a power loss left zeros in it
      // (its pages reached the disk out of order); else a byte of an acknowledged line changed.
      if (last && (isHeader || bytes.subarray(at, end).includes(0))) {
        parsed.tail = "damaged";
        break;
      }
      throw new StoreCorrupt(
        `the file store's log is damaged at byte ${offset + at} (${last ? "a whole last line changed, which no crash leaves" : "a line that is not the last"}); it was left untouched`,
      );
    }
    if (isHeader) parsed.header = valid as Header;
    else parsed.batches.push({ batch: valid as Batch, bytes: end + 1 - at });
    at = end + 1;
    parsed.consumed = at;
  }
  return parsed;
}

/** The JSON of a line whose checksum matches, else undefined. */
function readLine(bytes: Buffer, start: number, end: number): unknown {
  if (end - start < CRC_DIGITS + 3 || bytes[start + CRC_DIGITS] !== SPACE) return undefined;
  const sum = Number.parseInt(bytes.toString("latin1", start, start + CRC_DIGITS), 16);
  const json = bytes.subarray(start + CRC_DIGITS + 1, end);
  if (!Number.isInteger(sum) || crc32(json) !== sum) return undefined;
  try {
    return JSON.parse(json.toString("utf8"));
  } catch {
    return undefined;
  }
}

function asHeader(value: unknown): Header | undefined {
  const h = value as Partial<Header> | null;
  if (h === null || typeof h !== "object" || h.format !== FORMAT) return undefined;
  if (h.version !== LOG_VERSION) {
    throw new StoreCorrupt(`the file store's log has format version ${String(h.version)}; this build reads version 2`);
  }
  return isCount(h.seq) && isStrings(h.keys) ? (h as Header) : undefined;
}

function asBatch(value: unknown): Batch | undefined {
  const b = value as Partial<Batch> | null;
  if (b === null || typeof b !== "object" || !Array.isArray(b.changes)) return undefined;
  if (b.keys !== undefined && !isStrings(b.keys)) return undefined;
  for (const change of b.changes) if (!isChange(change)) return undefined;
  return b as Batch;
}

function isChange(value: unknown): value is Change {
  const c = value as Partial<Change> | null;
  return (
    c !== null &&
    typeof c === "object" &&
    isCount(c.s) &&
    typeof c.n === "string" &&
    typeof c.t === "number" &&
    typeof c.w === "number" &&
    (c.i === undefined || typeof c.i === "string") &&
    (c.c === undefined || typeof c.c === "number") &&
    (c.v === undefined || typeof c.v === "string") &&
    (c.d === undefined || typeof c.d === "string") &&
    (c.g === undefined || isTags(c.g))
  );
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function isStrings(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((k) => typeof k === "string");
}

function isTags(value: unknown): value is Record<string, string> {
  return (
    value !== null &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v === "string")
  );
}
