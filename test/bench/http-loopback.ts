/**
 * Bench section `loopback`: a cached `GET /v1/secrets/{name}` over a real socket. The full product
 * (`llm-secrets`'s local server over the file store, access log written) against a bare Hono route
 * answering a Map value over `@hono/node-server`, each in its own process
 * (test/bench/loopback-server.ts), loaded by the same generator (autocannon) from this process:
 * 32 keep-alive connections, rounds alternating between the two, medians reported.
 * Target: the full app at >= 0.7x the bare route's requests per second. The mean latency at one
 * connection is reported as information.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import { check, median, type Reporter } from "./report";

const PATH = "/v1/secrets/OPENAI_API_KEY";
const ROUNDS = 3;
const SECONDS = 3;

interface Server {
  child: ChildProcess;
  url: string;
}

async function startServer(mode: "bare" | "full", env: Record<string, string>): Promise<Server> {
  const script = fileURLToPath(new URL("./loopback-server.ts", import.meta.url));
  const child = spawn(process.execPath, ["--import", "tsx", script, mode], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "ignore"], // the access log goes nowhere, but is written
  });
  const port = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (d) => {
      out += d;
      const m = /port (\d+)/.exec(out);
      if (m) resolve(m[1] as string);
    });
    child.once("exit", (code) => reject(new Error(`the ${mode} server exited (${code}) before listening`)));
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

async function load(url: string, headers: Record<string, string>, connections: number, seconds: number) {
  const result = await autocannon({ url: `${url}${PATH}`, headers, connections, duration: seconds, pipelining: 1 });
  check(result.errors === 0 && result.timeouts === 0, `${result.errors} errors, ${result.timeouts} timeouts`);
  check(result.non2xx === 0, `${result.non2xx} answers were not 2xx: the bench would time an error path`);
  return { rps: result.requests.average };
}

export default async function loopbackSection(report: Reporter): Promise<void> {
  report.section("loopback: cached GET over a real socket, full server vs bare @hono/node-server route");
  const key = `sk-${randomBytes(24).toString("base64url")}`;
  const value = `sk-${randomBytes(24).toString("base64url")}`;
  const env = { BENCH_KEY: key, BENCH_VALUE: value };
  const headers = { authorization: `Bearer ${key}` };
  const bare = await startServer("bare", env);
  const full = await startServer("full", env);
  try {
    for (const server of [bare, full]) {
      const res = await fetch(`${server.url}${PATH}`, { headers });
      const body = (await res.json()) as { value?: string };
      check(res.status === 200 && body.value === value, `${server.url} does not answer the value`);
      await load(server.url, headers, 32, 1); // warm up
    }
    const rps: Record<"bare" | "full", number[]> = { bare: [], full: [] };
    for (let round = 0; round < ROUNDS; round++) {
      rps.bare.push((await load(bare.url, headers, 32, SECONDS)).rps);
      rps.full.push((await load(full.url, headers, 32, SECONDS)).rps);
    }
    const one = { bare: await load(bare.url, headers, 1, 2), full: await load(full.url, headers, 1, 2) };
    report.row({
      name: "loopback cached GET, 32 connections: full server vs bare node-server route",
      ours: Math.round(median(rps.full)),
      reference: Math.round(median(rps.bare)),
      unit: "req/s",
      target: ">= 0.7",
    });
    // autocannon's latencies are whole milliseconds: at one connection, 1 / req/s is the mean latency.
    report.row({
      name: "loopback cached GET, 1 connection: mean latency, full vs bare",
      ours: Math.round(1e6 / one.full.rps),
      reference: Math.round(1e6 / one.bare.rps),
      unit: "µs",
      target: "info",
    });
    report.note(
      `req/s per round: full ${rps.full.map(Math.round).join(", ")}; bare ${rps.bare.map(Math.round).join(", ")}` +
        ` (${ROUNDS} alternating rounds of ${SECONDS} s, 32 keep-alive connections; load generator and servers share the machine).`,
    );
  } finally {
    bare.child.kill();
    full.child.kill();
  }
}
