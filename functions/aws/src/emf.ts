/**
 * CloudWatch Embedded Metric Format: the counters and latencies of one Lambda invocation as log
 * lines CloudWatch turns into metrics (nobody scrapes `/metrics` on a Lambda). A metrics sink that
 * gathers what an invocation counted, and `flush` writes it: one JSON line per label set, in the
 * `llm-secrets` namespace, the labels as dimensions. Names and codes only, never a value.
 */
import type { MetricsSink } from "@llm-secrets/core";

const EMF_NAMESPACE = "llm-secrets";
/**
 * The most values of one metric in one line: CloudWatch refuses a larger line whole, its counts too
 * (AWS's EMF specification; aws-embedded-metrics' MAX_VALUES_PER_METRIC).
 */
const MAX_VALUES = 100;

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

  /**
   * Writes what was gathered since the last flush (nothing if nothing was counted): a line per label
   * set, and more while a latency has more than `MAX_VALUES` values, the counts on the first only.
   */
  flush(now = Date.now()): void {
    for (const { labels, counts, values } of this.#groups.values()) {
      const most = Math.max(0, ...[...values.values()].map((list) => list.length));
      for (let from = 0; from === 0 || from < most; from += MAX_VALUES) {
        const counted = from === 0 ? [...counts] : [];
        const observed = [...values]
          .filter(([, list]) => list.length > from)
          .map(([name, list]) => [name, list.slice(from, from + MAX_VALUES)] as const);
        const metrics = [
          ...counted.map(([Name]) => ({ Name, Unit: "Count" })),
          ...observed.map(([Name]) => ({ Name, Unit: "Seconds" })),
        ];
        const line = {
          _aws: {
            Timestamp: now,
            CloudWatchMetrics: [{ Namespace: EMF_NAMESPACE, Dimensions: [Object.keys(labels)], Metrics: metrics }],
          },
          ...labels,
          ...Object.fromEntries(counted),
          ...Object.fromEntries(observed),
        };
        this.write(`${JSON.stringify(line)}\n`);
      }
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
