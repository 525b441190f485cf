/**
 * Bench section `loopback`: a cached `GET /v1/secrets/{name}` over a real socket. The product as
 * `npm start` runs it (the CLI bundle, `llm-secrets serve`, over the file store, its access log
 * written) against a bare Hono route answering a Map value over `@hono/node-server`
 * (test/bench/bare-server.mjs), each in its own plain `node` process, loaded by the same generator
 * (autocannon) from this process: 32 keep-alive connections, 5 rounds, each round running every
 * server once, the order turning between rounds; each server's req/s is its median round.
 * Target: the full app at >= 0.7x the bare route's requests per second, as the median of the rounds'
 * own ratios (a round's runs are back to back, so its ratio cancels most of the machine's drift,
 * which moved one server's req/s by 10-20% between runs of the bench). The mean latency at one
 * connection is reported as information, and so is the bare route made busy for 10 µs a request
 * (a spin on the clock): on a 2-core machine where the load generator shares the CPU, each
 * microsecond the server spends per request costs more than a microsecond of throughput (the load
 * generator and the kernel's loopback both batch less), so this row says what 0.7x asks here.
 *
 * The full server with the audit trail off (`LLM_SECRETS_AUDIT=off`) runs in the same rounds, as
 * information: every request then gets an access-log line instead of its audit line (to stderr,
 * which goes nowhere here), so this row shows what switching the audit off buys a deployment.
 *
 * Each round also reads, where Linux's `/proc/<pid>/stat` is there, the CPU time (user and system)
 * each server process spent, per request (info). Unlike req/s, which moves with whatever else runs
 * on the machine, this is the server's own cost; on a machine that also runs the load generator, a
 * server that costs more per request also makes the generator wait (and be woken) more, which the
 * kernel counts as the server's system time. (The full server writes a turn's later answers
 * together at its end, core/src/turn-end.ts, so the generator is woken fewer times; the bare route
 * writes each answer as it is ready, as @hono/node-server does.)
 *
 * Then a load run of 256 connections for 10 s against each: failed requests (errors, timeouts,
 * non-2xx; target 0), requests/s and p99 latency next to the bare server's.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
// @ts-expect-error: a plain ESM build script without types
import { buildCli } from "../../core/build.mjs";
import { check, median, type Reporter } from "./report";

const PATH = "/v1/secrets/OPENAI_API_KEY";
const ROUNDS = 5;
const SECONDS = 3;
const STORM_CONNECTIONS = 256;
const STORM_SECONDS = 10;
/** The busy-work calibration: the bare route spinning this long per request. */
const BUSY_US = 10;
const BARE_SERVER = fileURLToPath(new URL("./bare-server.mjs", import.meta.url));

interface Server {
  child: ChildProcess;
  url: string;
}

async function startServer(args: string[], env: Record<string, string>): Promise<Server> {
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
    stdio: ["ignore", "pipe", "ignore"], // the access log goes nowhere, but is written; audit lines are drained
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out: string | undefined = "";
    // Read until the URL, then drained unread: the full server writes an audit line per request
    // to stdout, which kept (and searched) here would cost the load generator more each second.
    child.stdout?.on("data", (d) => {
      if (out === undefined) return;
      out += d;
      const m = /serving (http:\/\/\S+)/.exec(out);
      if (m) {
        out = undefined;
        resolve(m[1] as string);
      }
    });
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited (${code}) before listening`)));
  });
  return { child, url };
}

function run(url: string, headers: Record<string, string>, connections: number, seconds: number) {
  return autocannon({ url: `${url}${PATH}`, headers, connections, duration: seconds, pipelining: 1 });
}

/** Linux's clock ticks a second in `/proc/<pid>/stat` (USER_HZ: 100 on every architecture node runs on). */
const TICKS_PER_SECOND = 100;

/** The CPU time (user + system, µs) `pid` has used, or undefined where `/proc` cannot say. */
function cpuTimeUs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

async function load(server: Server, headers: Record<string, string>, connections: number, seconds: number) {
  const cpuBefore = cpuTimeUs(server.child.pid);
  const result = await run(server.url, headers, connections, seconds);
  const cpuAfter = cpuTimeUs(server.child.pid);
  check(result.errors === 0 && result.timeouts === 0, `${result.errors} errors, ${result.timeouts} timeouts`);
  check(result.non2xx === 0, `${result.non2xx} answers were not 2xx: the bench would time an error path`);
  const cpuUsPerRequest =
    cpuBefore === undefined || cpuAfter === undefined || result.requests.total === 0
      ? undefined
      : (cpuAfter - cpuBefore) / result.requests.total;
  return { rps: result.requests.average, cpuUsPerRequest };
}

/** The load run: many connections at once, failures counted rather than fatal (they are the finding). */
async function storm(url: string, headers: Record<string, string>) {
  const result = await run(url, headers, STORM_CONNECTIONS, STORM_SECONDS);
  return {
    failures: result.errors + result.timeouts + result.non2xx,
    rps: result.requests.average,
    p99: result.latency.p99,
  };
}

export default async function loopbackSection(report: Reporter): Promise<void> {
  report.section("loopback: cached GET over a real socket, full server vs bare @hono/node-server route");
  const key = `sk-${randomBytes(24).toString("base64url")}`;
  const value = `sk-${randomBytes(24).toString("base64url")}`;
  const headers = { authorization: `Bearer ${key}` };
  const work = await mkdtemp(join(tmpdir(), "llm-secrets-bench-"));
  const cli = await buildCli(join(work, "cli.mjs"));
  const bare = await startServer([BARE_SERVER], {
    BENCH_VALUE: value,
  });
  const full = await startServer([cli, "serve", "--port", "0"], {
    LITELLM_MASTER_KEY: key,
    LLM_SECRETS_DATA_DIR: join(work, "data"),
  });
  const quiet = await startServer([cli, "serve", "--port", "0"], {
    LITELLM_MASTER_KEY: key,
    LLM_SECRETS_DATA_DIR: join(work, "data-unaudited"),
    LLM_SECRETS_AUDIT: "off",
  });
  try {
    for (const server of [full, quiet]) {
      const put = await fetch(`${server.url}${PATH}`, { method: "PUT", headers, body: JSON.stringify({ value }) });
      check(put.status === 201, `the full server answered ${put.status} to the PUT`);
    }
    for (const server of [bare, full, quiet]) {
      const res = await fetch(`${server.url}${PATH}`, { headers });
      const body = (await res.json()) as { value?: string };
      check(res.status === 200 && body.value === value, `${server.url} does not answer the value`);
      await load(server, headers, 32, 1); // warm up
    }
    const servers = { bare, full, quiet };
    const order = ["bare", "full", "quiet"] as const;
    const rps: Record<(typeof order)[number], number[]> = { bare: [], full: [], quiet: [] };
    const cpu: Record<(typeof order)[number], number[]> = { bare: [], full: [], quiet: [] };
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < order.length; i++) {
        const name = order[(round + i) % order.length] as (typeof order)[number];
        const measured = await load(servers[name], headers, 32, SECONDS);
        rps[name].push(measured.rps);
        if (measured.cpuUsPerRequest !== undefined) cpu[name].push(measured.cpuUsPerRequest);
      }
    }
    /** The median of the rounds' own ratios of `name` over the bare server. */
    const pairedRatio = (name: "full" | "quiet") => median(rps[name].map((r, i) => r / (rps.bare[i] as number)));
    const one = { bare: await load(bare, headers, 1, 2), full: await load(full, headers, 1, 2) };
    report.row({
      name: "loopback cached GET, 32 connections: full server vs bare node-server route",
      ours: Math.round(median(rps.full)),
      reference: Math.round(median(rps.bare)),
      unit: "req/s",
      ratio: pairedRatio("full"),
      target: ">= 0.7",
    });
    report.row({
      name: "loopback cached GET, 32 connections: full server with the audit off (LLM_SECRETS_AUDIT=off: an access-log line instead) vs bare",
      ours: Math.round(median(rps.quiet)),
      reference: Math.round(median(rps.bare)),
      unit: "req/s",
      ratio: pairedRatio("quiet"),
      target: "info",
    });
    if (cpu.full.length === ROUNDS && cpu.bare.length === ROUNDS) {
      report.row({
        name: "loopback cached GET, 32 connections: the server process's CPU time (user + system) per request, full vs bare",
        ours: Number(median(cpu.full).toFixed(1)),
        reference: Number(median(cpu.bare).toFixed(1)),
        unit: "µs",
        target: "info",
      });
    } else report.note("the servers' CPU time per request is not shown: /proc/<pid>/stat cannot be read here.");
    // autocannon's latencies are whole milliseconds: at one connection, 1 / req/s is the mean latency.
    report.row({
      name: "loopback cached GET, 1 connection: mean latency, full vs bare",
      ours: Math.round(1e6 / one.full.rps),
      reference: Math.round(1e6 / one.bare.rps),
      unit: "µs",
      target: "info",
    });
    // What a few microseconds of work cost here: the same bare route, busy for BUSY_US per request.
    const busy = await startServer([BARE_SERVER], { BENCH_VALUE: value, BENCH_BUSY_US: String(BUSY_US) });
    try {
      await load(busy, headers, 32, 1); // warm up
      const busyRps = (await load(busy, headers, 32, SECONDS)).rps;
      report.row({
        name: `loopback cached GET, 32 connections: the bare route busy ${BUSY_US} µs a request vs bare (what ${BUSY_US} µs cost here)`,
        ours: Math.round(busyRps),
        reference: Math.round(median(rps.bare)),
        unit: "req/s",
        target: "info",
      });
    } finally {
      busy.child.kill();
    }
    const heavy = { bare: await storm(bare.url, headers), full: await storm(full.url, headers) };
    report.row({
      name: `loopback load, ${STORM_CONNECTIONS} connections for ${STORM_SECONDS} s: failed requests of the full server (ratio = its count)`,
      ours: heavy.full.failures,
      reference: heavy.bare.failures,
      unit: "requests",
      ratio: heavy.full.failures,
      target: "<= 0",
    });
    report.row({
      name: `loopback load, ${STORM_CONNECTIONS} connections: requests/s, full vs bare`,
      ours: Math.round(heavy.full.rps),
      reference: Math.round(heavy.bare.rps),
      unit: "req/s",
      target: "info",
    });
    report.row({
      name: `loopback load, ${STORM_CONNECTIONS} connections: p99 latency, full vs bare`,
      ours: heavy.full.p99,
      reference: heavy.bare.p99,
      unit: "ms",
      target: "info",
    });
    report.note(
      `req/s per round: full ${rps.full.map(Math.round).join(", ")}; audit off ${rps.quiet.map(Math.round).join(", ")}; ` +
        `bare ${rps.bare.map(Math.round).join(", ")}` +
        ` (${ROUNDS} rounds of ${SECONDS} s, the order turning; 32 keep-alive connections; load generator and servers share the machine)` +
        (cpu.full.length === ROUNDS
          ? `; server CPU µs per request per round: full ${cpu.full.map((us) => us.toFixed(1)).join(", ")}; ` +
            `audit off ${cpu.quiet.map((us) => us.toFixed(1)).join(", ")}; bare ${cpu.bare.map((us) => us.toFixed(1)).join(", ")}.`
          : "."),
    );
  } finally {
    bare.child.kill();
    full.child.kill();
    quiet.child.kill();
    await rm(work, { recursive: true, force: true });
  }
}
