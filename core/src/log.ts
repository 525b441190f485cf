/**
 * Structured logs: one JSON object a line. Callers pass names, codes and timings, never values;
 * there is deliberately no way to log a request or response body.
 */
import type { Writable } from "node:stream";
import { atTurnEnd } from "./turn-end";

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Lines buffered past this many characters are written at once rather than at the end of the tick. */
const FLUSH_AT = 64 * 1024;
/** Past this many bytes handed to a stream and not yet taken by its reader, lines are dropped. */
export const MAX_UNWRITTEN_BYTES = 8 * 1024 * 1024;

/**
 * A writer that gathers the lines of one event-loop turn into one write (a request log line per
 * request costs a system call otherwise, on the hot path), made after that turn's answers
 * (turn-end.ts). Whatever is pending is written synchronously when the process exits, and by
 * `flushLogs`.
 *
 * A stream that fails (its reader gone: EPIPE) is written to no more: its lines are dropped, and
 * one line on stderr says so (when the failed stream is not stderr). Unheard, the stream's error
 * ended the process at once, with `serve`'s requests under way. (What a command's exit code says
 * of it is main.ts's to decide.)
 *
 * A reader that stalls without going (a paused log shipper, a full `| tee`) would have every line
 * kept in memory until the process runs out of it: past `MAX_UNWRITTEN_BYTES` waiting in the
 * stream, lines are dropped and counted, and once the reader has taken what waited, one line in
 * the stream says how many were dropped.
 */
export function bufferedWriter(stream: NodeJS.WritableStream): (line: string) => void {
  // One writer a stream: each `main()` of an embedder or a test would add listeners otherwise.
  let writer = writers.get(stream);
  if (!writer) {
    writer = newBufferedWriter(stream);
    writers.set(stream, writer);
  }
  return writer;
}

const writers = new WeakMap<NodeJS.WritableStream, (line: string) => void>();

/** The flushes of the writers that hold lines not yet written (each leaves once it wrote them). */
const unwritten = new Set<() => void>();

/**
 * Writes now, synchronously, every line a `bufferedWriter` holds for the end of this event-loop
 * turn (the audit's lines among them). A cloud function calls it before it answers: Lambda freezes
 * the process once the handler's promise settles, and Google (Cloud Run) throttles its CPU once
 * the answer is sent, so a line left for the next turn was written only on the next invocation, or
 * lost with the instance.
 */
export function flushLogs(): void {
  for (const flush of unwritten) flush();
}

function newBufferedWriter(stream: NodeJS.WritableStream): (line: string) => void {
  let pending = "";
  let scheduled = false;
  let failed = false;
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (failed) return;
    failed = true;
    pending = "";
    if (stream !== process.stderr) {
      const name = stream === process.stdout ? "stdout" : "an output stream";
      createLogger((line) => process.stderr.write(line)).error(
        `cannot write to ${name}: what is written there is dropped from now on`,
        { code: err.code ?? "error" },
      );
    }
  });
  let dropped = 0;
  const sayDropped = () => {
    if (failed) return;
    createLogger((line) => stream.write(line)).warn(
      "log lines were dropped: the stream's reader did not keep up, and they would have filled memory",
      { dropped },
    );
    dropped = 0;
  };
  const flush = () => {
    scheduled = false;
    unwritten.delete(flush);
    if (pending === "" || failed) return;
    const out = pending;
    pending = "";
    if (((stream as Partial<Writable>).writableLength ?? 0) > MAX_UNWRITTEN_BYTES) {
      // The last write was refused room (past the stream's high-water mark): "drain" comes once it is all taken.
      if (dropped === 0) stream.once("drain", sayDropped);
      for (let at = out.indexOf("\n"); at !== -1; at = out.indexOf("\n", at + 1)) dropped++;
      return;
    }
    stream.write(out);
  };
  process.once("exit", flush);
  return (line) => {
    if (failed) return;
    pending += line;
    if (pending.length >= FLUSH_AT) flush();
    else if (!scheduled) {
      scheduled = true;
      unwritten.add(flush);
      atTurnEnd(flush, "log");
    }
  };
}

/** Google Cloud Logging's `severity` of each level (its structured logging reads that field, not ours). */
const SEVERITY: Record<LogLevel, string> = { debug: "DEBUG", info: "INFO", warn: "WARNING", error: "ERROR" };

/**
 * A logger writing a JSON line per call at `level` and above. `severity`: each line also carries
 * Google Cloud Logging's `severity` (`WARNING`, ...), which it reads to set an entry's level: on
 * Google Cloud, lines without it have none.
 */
export function createLogger(
  write: (line: string) => void = bufferedWriter(process.stderr),
  level: LogLevel = "info",
  options: { severity?: boolean } = {},
): Logger {
  // One line is on every request's path: the time is formatted once per millisecond, and the line
  // is written field by field (field names are ours, plain identifiers; strings go through JSON
  // escaping), about a third cheaper than JSON.stringify of the fields.
  let lastMs = 0;
  let lastTime = "";
  const at = (lvl: LogLevel) => {
    const head = `","level":"${lvl}",${options.severity ? `"severity":"${SEVERITY[lvl]}",` : ""}"msg":`;
    return (msg: string, fields?: LogFields): void => {
      if (ORDER[lvl] < ORDER[level]) return;
      const ms = Date.now();
      if (ms !== lastMs) {
        lastMs = ms;
        lastTime = new Date(ms).toISOString();
      }
      let line = `{"time":"${lastTime}${head}${JSON.stringify(msg)}`;
      for (const name in fields) {
        const value = fields[name];
        if (value === undefined) continue;
        // Numbers and booleans as they are; anything else as a JSON string, whatever a caller passed
        // (a queue message's id is the platform's to type), so no field can break out of the line.
        line +=
          typeof value === "string"
            ? `,"${name}":${JSON.stringify(value)}`
            : typeof value === "number"
              ? `,"${name}":${Number.isFinite(value) ? value : "null"}`
              : typeof value === "boolean"
                ? `,"${name}":${value}`
                : `,"${name}":${JSON.stringify(String(value))}`;
      }
      write(`${line}}\n`);
    };
  };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** What may be logged of an unexpected error: its class and where it came from, not its message. */
export function describeUnexpected(err: unknown): LogFields {
  if (!(err instanceof Error)) return { error: typeof err };
  // Stack frames only, after the header V8 wrote (`Name: message`, of as many lines as the message):
  // a line of the message may itself begin with "at ". A stack whose header is not that says nothing.
  const header = String(err);
  const where = (err.stack?.startsWith(header) ? err.stack.slice(header.length) : "")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("at "))
    .slice(0, 3)
    .join(" | ");
  return { error: err.name, where };
}
