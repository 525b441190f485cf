/**
 * Prometheus metrics, text exposition format 0.0.4. Labels hold store kinds, operations and error
 * codes only: never a secret name's value, never a secret.
 *
 * Hand-written rather than prom-client: we need a handful of counters and one histogram, and
 * prom-client would add its dependencies to every function bundle.
 */

type Labels = Record<string, string>;

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const labelKeys = new WeakMap<Labels, string>();

/** The label set as exposition text; memoized per labels object, so callers can hold theirs. */
function labelKey(labels: Labels): string {
  let key = labelKeys.get(labels);
  if (key === undefined) {
    key = renderLabels(labels);
    labelKeys.set(labels, key);
  }
  return key;
}

function renderLabels(labels: Labels): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}="${v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n")}"`)
    .join(",");
}

class Counter {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Labels, by = 1): void {
    const key = labelKey(labels);
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
  }

  get(labels: Labels): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [key, value] of this.#values) lines.push(`${this.name}{${key}} ${value}`);
    return lines.join("\n");
  }
}

class Histogram {
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets = LATENCY_BUCKETS,
  ) {}

  observe(labels: Labels, value: number): void {
    const key = labelKey(labels);
    let s = this.#series.get(key);
    if (!s) {
      s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    for (let i = 0; i < this.buckets.length; i++)
      if (value <= (this.buckets[i] as number)) s.counts[i] = (s.counts[i] ?? 0) + 1;
    s.sum += value;
    s.count++;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [key, s] of this.#series) {
      const sep = key ? "," : "";
      this.buckets.forEach((le, i) => {
        lines.push(`${this.name}_bucket{${key}${sep}le="${le}"} ${s.counts[i]}`);
      });
      lines.push(`${this.name}_bucket{${key}${sep}le="+Inf"} ${s.count}`);
      lines.push(`${this.name}_sum{${key}} ${s.sum}`);
      lines.push(`${this.name}_count{${key}} ${s.count}`);
    }
    return lines.join("\n");
  }
}

export class Metrics {
  readonly cacheHits = new Counter("llm_secrets_cache_hits_total", "Reads answered from the cache.");
  readonly cacheMisses = new Counter("llm_secrets_cache_misses_total", "Reads that went to the store.");
  readonly staleServes = new Counter(
    "llm_secrets_cache_stale_serves_total",
    "Reads answered with a value past its refresh interval because the store was unavailable.",
  );
  readonly refreshes = new Counter("llm_secrets_cache_refreshes_total", "Background refreshes of cached values.");
  readonly backendCalls = new Counter("llm_secrets_backend_calls_total", "Calls made to the secret store.");
  readonly errors = new Counter("llm_secrets_errors_total", "Errors answered, by stable error code.");
  readonly backendLatency = new Histogram(
    "llm_secrets_backend_latency_seconds",
    "Latency of calls to the secret store, in seconds.",
  );

  render(): string {
    return `${[
      this.cacheHits,
      this.cacheMisses,
      this.staleServes,
      this.refreshes,
      this.backendCalls,
      this.errors,
      this.backendLatency,
    ]
      .map((m) => m.render())
      .join("\n")}\n`;
  }
}
