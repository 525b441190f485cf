/**
 * The bench's one reporter. Every comparison is a row `{name, ours, reference, unit, ratio, target}`:
 * `ratio` is ours / reference unless the section gives its own (the HTTP rows: the median of their
 * rounds' ratios), and `target` is a condition on it (">= 1.0", "<= 2") or "info".
 *
 * - Human output (default): per section, a table with each ratio next to its target and whether it
 *   is met; notes in between.
 * - `--json`: exactly one JSON object per row on stdout, with those six keys and nothing else; notes
 *   go to stderr. A row that could not be measured (a missing reference) has `null` there.
 */

export interface Row {
  name: string;
  ours: number | null;
  reference: number | null;
  unit: string;
  ratio: number | null;
  /** ">= 1.0", "<= 2", "< 0.5", "> 1" (on the ratio), or "info". */
  target: string;
}

export type RowInput = Omit<Row, "ratio"> & { ratio?: number | null };

/** Thrown when the bench would time something other than what it claims (an error path, the fallback). */
export class BenchFailure extends Error {}

export function check(ok: boolean, message: string): asserts ok {
  if (!ok) throw new BenchFailure(message);
}

const TARGET = /^(>=|<=|>|<)\s*(\d+(?:\.\d+)?)$/;

/** Whether `ratio` meets `target`; undefined for "info" and for rows with no ratio. */
export function targetMet(target: string, ratio: number | null): boolean | undefined {
  const m = TARGET.exec(target.trim());
  if (!m || ratio === null || !Number.isFinite(ratio)) return undefined;
  const bound = Number(m[2]);
  switch (m[1]) {
    case ">=":
      return ratio >= bound;
    case "<=":
      return ratio <= bound;
    case ">":
      return ratio > bound;
    default:
      return ratio < bound;
  }
}

export interface ReporterOptions {
  json: boolean;
  out?: (text: string) => void;
  err?: (text: string) => void;
}

export class Reporter {
  readonly json: boolean;
  readonly #out: (text: string) => void;
  readonly #err: (text: string) => void;
  #rows: Row[] = [];
  /** Human mode: the notes of the current section, printed after its table. */
  #notes: string[] = [];
  readonly #all: Row[] = [];

  constructor(options: ReporterOptions) {
    this.json = options.json;
    this.#out = options.out ?? ((text) => process.stdout.write(text));
    this.#err = options.err ?? ((text) => process.stderr.write(text));
  }

  /** Starts a section: the rows that follow are printed as its table. */
  section(title: string): void {
    this.#flush();
    if (!this.json) this.#out(`\n== ${title} ==\n`);
  }

  /** Free text for people: after the section's table in human mode, on stderr at once with --json. */
  note(text: string): void {
    if (this.json) this.#err(`${text}\n`);
    else this.#notes.push(text);
  }

  row(input: RowInput): Row {
    const ratio =
      input.ratio !== undefined
        ? input.ratio
        : input.ours !== null && input.reference !== null && input.reference !== 0
          ? input.ours / input.reference
          : null;
    const row: Row = {
      name: input.name,
      ours: input.ours,
      reference: input.reference,
      unit: input.unit,
      ratio,
      target: input.target,
    };
    this.#all.push(row);
    if (this.json) {
      const { name, ours, reference, unit, target } = row;
      this.#out(`${JSON.stringify({ name, ours, reference, unit, ratio, target })}\n`);
    } else {
      this.#rows.push(row);
    }
    return row;
  }

  /** Prints the last table and a one-line summary of the targets (human mode). */
  end(): { met: number; missed: Row[]; skipped: Row[] } {
    this.#flush();
    const withTarget = this.#all.filter((r) => r.target !== "info");
    const missed = withTarget.filter((r) => targetMet(r.target, r.ratio) === false);
    const skipped = withTarget.filter((r) => targetMet(r.target, r.ratio) === undefined);
    const met = withTarget.length - missed.length - skipped.length;
    const parts = [`${met} of ${withTarget.length} targets met`];
    if (missed.length > 0) parts.push(`missed: ${missed.map((r) => r.name).join("; ")}`);
    if (skipped.length > 0) parts.push(`not measured: ${skipped.map((r) => r.name).join("; ")}`);
    this.note(`\nsummary: ${parts.join(". ")}.`);
    this.#flush();
    return { met, missed, skipped };
  }

  #flush(): void {
    this.#printTable();
    for (const note of this.#notes) this.#out(`${note}\n`);
    this.#notes = [];
  }

  #printTable(): void {
    if (this.json || this.#rows.length === 0) {
      this.#rows = [];
      return;
    }
    const cells = this.#rows.map((r) => {
      const met = targetMet(r.target, r.ratio);
      return [
        r.name,
        formatNumber(r.ours),
        formatNumber(r.reference),
        r.unit,
        r.ratio === null ? "-" : formatRatio(r.ratio),
        r.target,
        r.target === "info" ? "" : met === undefined ? "not measured" : met ? "met" : "MISSED",
      ];
    });
    printTable(["comparison", "ours", "reference", "unit", "ratio", "target", ""], cells, this.#out);
    this.#rows = [];
  }
}

export function formatNumber(n: number | null): string {
  if (n === null) return "-";
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en-US");
  return n.toPrecision(3);
}

export function formatRatio(n: number): string {
  return n >= 10 ? n.toFixed(1) : n.toFixed(3);
}

/** A plain-text table: the first column left-aligned, the next four right-aligned, the rest left. */
function printTable(headers: string[], rows: string[][], out: (text: string) => void): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 || i >= 5 || i === 3 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  out(`${line(headers)}\n`);
  out(`${widths.map((w) => "-".repeat(w)).join("  ")}\n`);
  for (const row of rows) out(`${line(row)}\n`);
}

export const KIB = 1024;
export const MIB = 1024 * KIB;

export function formatSize(bytes: number): string {
  return bytes >= MIB ? `${bytes / MIB} MiB` : bytes >= KIB ? `${bytes / KIB} KiB` : `${bytes} B`;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** A section of `npm run bench`: measures, checks, and reports rows. */
export type Section = (report: Reporter) => Promise<void>;
