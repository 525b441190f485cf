import { spawn } from "node:child_process";
import { Writable } from "node:stream";
import { describe, expect, it, onTestFinished } from "vitest";
import { bufferedWriter, createLogger, describeUnexpected, flushLogs, MAX_UNWRITTEN_BYTES } from "../../core/src/log";
import { secretValue, until } from "../helpers";

describe("log", () => {
  it("writes one JSON object a line, at or above its level", () => {
    const lines: string[] = [];
    const log = createLogger((l) => lines.push(l), "info");
    log.debug("hidden");
    log.warn("shown", { name: "A", n: 1 });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ level: "warn", msg: "shown", name: "A", n: 1 });
    expect(lines[0]?.endsWith("\n")).toBe(true);
  });

  it("writes a field of another type than it declares as a JSON string: nothing breaks out of the line", () => {
    const lines: string[] = [];
    const log = createLogger((l) => lines.push(l), "info", { severity: true });
    const hostile = ['1","severity":"DEBUG","injected":"x'] as unknown as string;
    log.warn("w", { message_id: hostile, obj: { a: 1 } as unknown as string });
    const line = JSON.parse(lines[0] as string);
    expect(line).toMatchObject({
      severity: "WARNING",
      message_id: '1","severity":"DEBUG","injected":"x',
      obj: "[object Object]",
    });
    expect(line.injected).toBeUndefined();
  });

  it("with severity, each line also carries Google Cloud Logging's severity of its level", () => {
    const lines: string[] = [];
    const log = createLogger((l) => lines.push(l), "debug", { severity: true });
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    expect(lines.map((l) => JSON.parse(l).severity)).toEqual(["DEBUG", "INFO", "WARNING", "ERROR"]);
    expect(JSON.parse(lines[2] as string)).toMatchObject({ level: "warn", msg: "w" });
    const plain: string[] = [];
    createLogger((l) => plain.push(l)).warn("w");
    expect(JSON.parse(plain[0] as string).severity).toBeUndefined();
  });

  it("writes each field as JSON: strings escaped, numbers (not finite ones: null), booleans; undefined left out", () => {
    const lines: string[] = [];
    const log = createLogger((l) => lines.push(l));
    const tricky = 'a "quoted"\nline\\ \u2028 \u00e9 \u{1F511} </script>';
    log.info('msg "x"', {
      s: tricky,
      n: -1.5,
      z: 0,
      big: 1e21,
      nan: Number.NaN,
      inf: Infinity,
      t: true,
      f: false,
      u: undefined,
    });
    log.info("bare");
    expect(lines.map((l) => l.split("\n").length)).toEqual([2, 2]); // one line each, ending in \n
    const [first, second] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(first).toEqual({
      time: expect.any(String),
      level: "info",
      msg: 'msg "x"',
      s: tricky,
      n: -1.5,
      z: 0,
      big: 1e21,
      nan: null,
      inf: null,
      t: true,
      f: false,
    });
    expect(Object.keys(first ?? {})).not.toContain("u");
    expect(second).toEqual({ time: expect.any(String), level: "info", msg: "bare" });
  });

  it("gathers the lines of one event-loop turn into one write, in order", async () => {
    const writes: string[] = [];
    const stream = new Writable({
      decodeStrings: false,
      write(chunk: string, _encoding, done) {
        writes.push(chunk);
        done();
      },
    });
    const log = createLogger(bufferedWriter(stream));
    log.info("one");
    log.info("two");
    expect(writes).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(writes).toHaveLength(1);
    expect(
      (writes[0] as string)
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l).msg),
    ).toEqual(["one", "two"]);
    log.info("x".repeat(70_000));
    expect(writes).toHaveLength(2); // past 64 KiB it writes at once
    // One writer a stream, however often it is asked for: no listener added each time.
    const listeners = stream.listenerCount("error");
    expect(bufferedWriter(stream)).toBe(bufferedWriter(stream));
    expect(stream.listenerCount("error")).toBe(listeners);
  });

  it("writes what every buffered writer holds at once on flushLogs, synchronously, and not again", async () => {
    const streams = [[], []].map((writes: string[]) => ({
      writes,
      stream: new Writable({
        decodeStrings: false,
        write(chunk: string, _encoding, done) {
          writes.push(chunk);
          done();
        },
      }),
    }));
    const [a, b] = streams.map(({ stream }) => createLogger(bufferedWriter(stream)));
    a?.info("a1");
    b?.info("b1");
    a?.info("a2");
    expect(streams.map((s) => s.writes)).toEqual([[], []]);
    flushLogs();
    const msgs = (writes: string[]) =>
      writes.flatMap((w) => w.split("\n").filter(Boolean)).map((l) => JSON.parse(l).msg);
    expect(streams.map((s) => msgs(s.writes))).toEqual([["a1", "a2"], ["b1"]]);
    expect(streams.map((s) => s.writes.length)).toEqual([1, 1]);
    flushLogs(); // nothing held: nothing written
    await new Promise((r) => setImmediate(r)); // nor at the end of the turn
    expect(streams.map((s) => s.writes.length)).toEqual([1, 1]);
    // Buffered again after a flush.
    a?.info("a3");
    expect(streams[0]?.writes).toHaveLength(1);
    await new Promise((r) => setImmediate(r));
    expect(msgs(streams[0]?.writes ?? [])).toEqual(["a1", "a2", "a3"]);
  });

  it("drops lines, counting them, while a stream's reader stalls, instead of keeping them all in memory", async () => {
    // A real pipe whose reader takes nothing until told to (SIGUSR2), then copies it all out. It
    // says "ready" once it listens for the signal (sent earlier, the signal would end it).
    const reader = spawn(
      process.execPath,
      [
        "-e",
        "process.on('SIGUSR2', () => process.stdin.pipe(process.stdout)); process.stdout.write('ready\\n'); setInterval(() => {}, 1000)",
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    onTestFinished(() => {
      reader.kill();
    });
    let received = "";
    reader.stdout.on("data", (d) => {
      received += d;
    });
    await until("the reader to start", () => received === "ready\n");
    const log = createLogger(bufferedWriter(reader.stdin));
    const total = 20_000; // about 20 MiB of lines: more than twice what may wait in the pipe
    let mostWaiting = 0;
    for (let i = 0; i < total; i++) {
      log.info("line", { i, pad: "p".repeat(1000) });
      if (i % 50 === 49) {
        await new Promise((r) => setImmediate(r));
        mostWaiting = Math.max(mostWaiting, reader.stdin.writableLength);
      }
    }
    await new Promise((r) => setImmediate(r));
    expect(mostWaiting).toBeLessThan(MAX_UNWRITTEN_BYTES + 128 * 1024);
    reader.kill("SIGUSR2");
    await until("the count of dropped lines", () => received.includes('"dropped"'), 20_000);
    const lines = received
      .split("\n")
      .slice(1)
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; dropped?: number });
    const note = lines.find((l) => l.dropped !== undefined);
    const kept = lines.filter((l) => l.msg === "line").length;
    expect(note?.dropped).toBeGreaterThan(0);
    expect(kept + (note?.dropped ?? 0)).toBe(total); // every line written or counted, none lost unsaid
  });

  it("describes an unexpected error by class and stack frames, never by its message", () => {
    const value = secretValue("leaked");
    const described = describeUnexpected(new TypeError(`bad thing\n${value}\nmore`));
    expect(described.error).toBe("TypeError");
    expect(String(described.where)).toMatch(/^at /);
    expect(JSON.stringify(described)).not.toContain(value);
    // A line of the message that looks like a frame is still the message.
    const framed = describeUnexpected(new TypeError(`bad token:\n    at ${value}`));
    expect(String(framed.where)).toMatch(/^at /);
    expect(JSON.stringify(framed)).not.toContain(value);
    expect(describeUnexpected("a string")).toEqual({ error: "string" });
  });
});
