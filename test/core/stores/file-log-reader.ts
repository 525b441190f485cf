// Test helper: reads a file store's log straight from disk with the format's own parser, so tests
// can check what is on disk (and tamper with it) without going through the store.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Batch, type Change, frame, type Header, parseLog } from "../../../core/src/stores/file-log";

export interface LogOnDisk {
  header: Header;
  /** The last change of each name, tombstones included. */
  state: Map<string, Change>;
  /** Every line's record, header first. */
  lines: (Header | Batch)[];
  tail: "none" | "incomplete" | "damaged";
  bytes: Buffer;
}

export function logPath(dir: string): string {
  return join(dir, "secrets.log");
}

export async function readLog(dir: string): Promise<LogOnDisk> {
  const bytes = await readFile(logPath(dir));
  const parsed = parseLog(bytes, 0);
  if (parsed.header === undefined) throw new Error("no header");
  const state = new Map<string, Change>();
  for (const { batch } of parsed.batches) for (const c of batch.changes) state.set(c.n, c);
  return {
    header: parsed.header,
    state,
    lines: [parsed.header, ...parsed.batches.map((b) => b.batch)],
    tail: parsed.tail,
    bytes,
  };
}

/** Rewrites the log with `edit` applied to each line's record (checksums recomputed). */
export async function rewriteLog(dir: string, edit: (record: Header | Batch, index: number) => Header | Batch) {
  const { lines } = await readLog(dir);
  await writeFile(logPath(dir), Buffer.concat(lines.map((record, i) => frame(edit(record, i)))));
}
