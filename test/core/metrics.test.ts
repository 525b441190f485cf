// Prometheus text: counters by labels, a histogram with cumulative buckets, and sinks.
import { describe, expect, it } from "vitest";
import { createMetrics, LATENCY_BUCKETS } from "../../core/src/metrics";

describe("metrics", () => {
  it("renders histogram buckets cumulatively, each counting every observation at or below its bound", () => {
    const m = createMetrics();
    const labels = { store: "file", op: "get" };
    for (const v of [0.0005, 0.003, 0.003, 0.04, 0.3, 7, 20])
      m.observe("llm_secrets_backend_latency_seconds", labels, v);
    const text = m.render();
    const bucket = (le: string) =>
      Number(
        new RegExp(
          `llm_secrets_backend_latency_seconds_bucket\\{store="file",op="get",le="${le.replace("+", "\\+")}"\\} (\\d+)`,
        ).exec(text)?.[1],
      );
    expect(bucket("0.001")).toBe(1);
    expect(bucket("0.005")).toBe(3);
    expect(bucket("0.01")).toBe(3);
    expect(bucket("0.05")).toBe(4);
    expect(bucket("0.5")).toBe(5);
    expect(bucket("10")).toBe(6);
    expect(bucket("+Inf")).toBe(7);
    const counts = LATENCY_BUCKETS.map((le) => bucket(String(le)));
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(text).toContain('llm_secrets_backend_latency_seconds_count{store="file",op="get"} 7');
  });

  it("counts by label set, escapes label values, and feeds sinks", () => {
    const seen: string[] = [];
    const m = createMetrics([{ inc: (name, labels, by) => seen.push(`${name} ${JSON.stringify(labels)} ${by}`) }]);
    m.inc("llm_secrets_errors_total", { store: "file", code: "not_found" });
    m.inc("llm_secrets_errors_total", { store: "file", code: "not_found" }, 2);
    m.inc("llm_secrets_errors_total", { store: 'a"b\\c', code: "x" });
    expect(m.count("llm_secrets_errors_total", { store: "file", code: "not_found" })).toBe(3);
    expect(m.render()).toContain('llm_secrets_errors_total{store="file",code="not_found"} 3');
    expect(m.render()).toContain('llm_secrets_errors_total{store="a\\"b\\\\c",code="x"} 1');
    expect(seen).toHaveLength(3);
    expect(m.render()).toMatch(/# TYPE llm_secrets_cache_hits_total counter/);
  });
});
