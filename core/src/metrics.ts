/**
 * Metrics: one interface, Prometheus text on every runtime (`GET /metrics`), and optional sinks a
 * runtime may add (Lambda: CloudWatch EMF lines). Labels hold store kinds, operations and error
 * codes only: never a secret name's value, never a secret.
 *
 * Hand-written rather than prom-client: a handful of counters and one histogram, and prom-client
 * would add its dependencies to every function bundle.
 */

export type Labels = Readonly<Record<string, string>>;

const COUNTERS = {
  llm_secrets_cache_hits_total: "Reads answered from the cache.",
  llm_secrets_cache_misses_total: "Reads that went to the store.",
  llm_secrets_cache_stale_serves_total:
    "Reads answered with a value past its refresh interval because the store was unavailable.",
  llm_secrets_cache_refreshes_total: "Background refreshes of cached values.",
  llm_secrets_backend_calls_total: "Calls made to the secret store.",
  llm_secrets_backend_errors_total: "Calls to the secret store that failed, by stable error code.",
  llm_secrets_errors_total: "Errors answered, by stable error code.",
  llm_secrets_key_events_total: "Key events handled, by status (applied, superseded, refused, failed).",
} as const;

const HISTOGRAMS = {
  llm_secrets_backend_latency_seconds: "Latency of calls to the secret store, in seconds.",
} as const;

type CounterName = keyof typeof COUNTERS;
type HistogramName = keyof typeof HISTOGRAMS;

/** Where a runtime may also send what is counted (EMF lines on Lambda). */
export interface MetricsSink {
  inc?(name: CounterName, labels: Labels, by: number): void;
  observe?(name: HistogramName, labels: Labels, value: number): void;
}

export interface Metrics {
  inc(name: CounterName, labels: Labels, by?: number): void;
  observe(name: HistogramName, labels: Labels, value: number): void;
  /** The current value of a counter (tests, the bench). */
  count(name: CounterName, labels: Labels): number;
  /** Prometheus text exposition format 0.0.4. */
  render(): string;
}

export const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

const labelKeys = new WeakMap<Labels, string>();

/** The label set as exposition text; memoized per labels object, so callers can hold theirs. */
function labelKey(labels: Labels): string {
  let key = labelKeys.get(labels);
  if (key === undefined) {
    key = Object.entries(labels)
      .map(([k, v]) => `${k}="${v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n")}"`)
      .join(",");
    labelKeys.set(labels, key);
  }
  return key;
}

interface Series {
  /** Per bucket, the observations that fell in it (not cumulative; `render` sums). */
  counts: number[];
  sum: number;
  count: number;
}

class PrometheusMetrics implements Metrics {
  readonly #counters = new Map<CounterName, Map<string, number>>();
  readonly #histograms = new Map<HistogramName, Map<string, Series>>();

  constructor(private readonly sinks: readonly MetricsSink[]) {}

  inc(name: CounterName, labels: Labels, by = 1): void {
    let series = this.#counters.get(name);
    if (!series) {
      series = new Map();
      this.#counters.set(name, series);
    }
    const key = labelKey(labels);
    series.set(key, (series.get(key) ?? 0) + by);
    for (const sink of this.sinks) sink.inc?.(name, labels, by);
  }

  observe(name: HistogramName, labels: Labels, value: number): void {
    let all = this.#histograms.get(name);
    if (!all) {
      all = new Map();
      this.#histograms.set(name, all);
    }
    const key = labelKey(labels);
    let s = all.get(key);
    if (!s) {
      s = { counts: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 };
      all.set(key, s);
    }
    const bucket = LATENCY_BUCKETS.findIndex((le) => value <= le);
    if (bucket !== -1) s.counts[bucket] = (s.counts[bucket] ?? 0) + 1;
    s.sum += value;
    s.count++;
    for (const sink of this.sinks) sink.observe?.(name, labels, value);
  }

  count(name: CounterName, labels: Labels): number {
    return this.#counters.get(name)?.get(labelKey(labels)) ?? 0;
  }

  render(): string {
    const lines: string[] = [];
    for (const [name, help] of Object.entries(COUNTERS) as [CounterName, string][]) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      for (const [key, value] of this.#counters.get(name) ?? []) lines.push(`${name}{${key}} ${value}`);
    }
    for (const [name, help] of Object.entries(HISTOGRAMS) as [HistogramName, string][]) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
      for (const [key, s] of this.#histograms.get(name) ?? []) {
        const sep = key ? "," : "";
        // Prometheus buckets are cumulative: each counts every observation at or below its bound.
        let cumulative = 0;
        LATENCY_BUCKETS.forEach((le, i) => {
          cumulative += s.counts[i] ?? 0;
          lines.push(`${name}_bucket{${key}${sep}le="${le}"} ${cumulative}`);
        });
        lines.push(`${name}_bucket{${key}${sep}le="+Inf"} ${s.count}`);
        lines.push(`${name}_sum{${key}} ${s.sum}`);
        lines.push(`${name}_count{${key}} ${s.count}`);
      }
    }
    return `${lines.join("\n")}\n`;
  }
}

export function createMetrics(sinks: readonly MetricsSink[] = []): Metrics {
  return new PrometheusMetrics(sinks);
}
