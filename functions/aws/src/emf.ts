/**
 * CloudWatch Embedded Metric Format: the counters and latencies of one Lambda invocation as log
 * lines CloudWatch turns into metrics (nobody scrapes `/metrics` on a Lambda). A metrics sink that
 * gathers what an invocation counted, and `flush` writes it: one JSON line per label set, in the
 * `llm-secrets` namespace, the labels as dimensions. Names and codes only, never a value.
 */
import type { MetricsSink } from "@llm-secrets/core";

export const EMF_NAMESPACE = "llm-secrets";

type Labels = Readonly<Record<string, string>>;

interface Group {
  labels: Labels;
  counts: Map<string, number>;
  /** Latencies in seconds, as EMF's `Values`. */
  values: Map<string, number[]>;
}

export class EmfSink implements MetricsSink {
  readonly #groups = new Map<string, Group>();

  constructor(private readonly write: (line: string) => void) {}

  inc(name: string, labels: Labels, by: number): void {
    const counts = this.#group(labels).counts;
    counts.set(name, (counts.get(name) ?? 0) + by);
  }

  observe(name: string, labels: Labels, value: number): void {
    const values = this.#group(labels).values;
    const list = values.get(name);
    if (list) list.push(value);
    else values.set(name, [value]);
  }

  /** Writes what was gathered since the last flush (nothing if nothing was counted). */
  flush(now = Date.now()): void {
    for (const { labels, counts, values } of this.#groups.values()) {
      const metrics = [
        ...[...counts.keys()].map((Name) => ({ Name, Unit: "Count" })),
        ...[...values.keys()].map((Name) => ({ Name, Unit: "Seconds" })),
      ];
      const line = {
        _aws: {
          Timestamp: now,
          CloudWatchMetrics: [{ Namespace: EMF_NAMESPACE, Dimensions: [Object.keys(labels)], Metrics: metrics }],
        },
        ...labels,
        ...Object.fromEntries(counts),
        ...Object.fromEntries(values),
      };
      this.write(`${JSON.stringify(line)}\n`);
    }
    this.#groups.clear();
  }

  #group(labels: Labels): Group {
    const key = JSON.stringify(Object.entries(labels).sort());
    let group = this.#groups.get(key);
    if (!group) {
      group = { labels, counts: new Map(), values: new Map() };
      this.#groups.set(key, group);
    }
    return group;
  }
}
