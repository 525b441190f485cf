// parseConfigYaml against the reference it follows: PyYAML's yaml.safe_load (Debian's python3-yaml), the
// loader LiteLLM reads config.yaml with. One python3 run parses every document of the tables below.
import { spawnSync } from "node:child_process";
import { beforeAll, describe, expect, it } from "vitest";
import { parse, YAMLParseError } from "yaml";
import { parseConfigYaml, yamlErrorText } from "../../core/src/config-yaml";
import { pythonFor } from "../helpers";

const PYTHON = pythonFor("yaml", "python3-yaml");

/** Where a side fails to load the document. */
const ERROR = { error: true } as const;
/** What PyYAML returns for a timestamp (a date or datetime); we keep the string as written. */
const TIMESTAMP = { __timestamp__: true } as const;

// safe_load every document; results as JSON with the same key rule as ours (String(key) of the resolved key:
// True -> "true", None -> "null", 1.0 -> "1") and markers for what JSON has no form for.
const PY_SCRIPT = `
import base64, datetime, json, math, sys, yaml

def key(k):
    if isinstance(k, bool): return "true" if k else "false"
    if k is None: return "null"
    if isinstance(k, int): return str(k)
    if isinstance(k, float):
        if math.isnan(k): return "NaN"
        if math.isinf(k): return "Infinity" if k > 0 else "-Infinity"
        return str(int(k)) if k == int(k) and abs(k) < 1e21 else repr(k)
    if isinstance(k, str): return k
    raise TypeError("key of type " + type(k).__name__)

def conv(v):
    if isinstance(v, dict): return {key(k): conv(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)): return [conv(x) for x in v]
    if isinstance(v, float) and math.isnan(v): return {"__float__": "nan"}
    if isinstance(v, float) and math.isinf(v): return {"__float__": "inf" if v > 0 else "-inf"}
    if isinstance(v, (datetime.date, datetime.datetime)): return {"__timestamp__": True}
    if isinstance(v, bytes): return {"__bytes__": base64.b64encode(v).decode()}
    if isinstance(v, (set, frozenset)): return {"__set__": sorted(conv(x) for x in v)}
    return v

out = []
for doc in json.load(sys.stdin):
    try: out.append({"value": conv(yaml.safe_load(doc))})
    except Exception as e: out.append({"error": type(e).__name__})
print(json.dumps(out))
`;

type PyResult = { value: unknown } | { error: string };

function safeLoadAll(docs: string[]): PyResult[] {
  const run = spawnSync(PYTHON as string, ["-c", PY_SCRIPT], { input: JSON.stringify(docs), encoding: "utf8" });
  if (run.status !== 0) throw new Error(`python3 failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as PyResult[];
}

/** NaN and the infinities in the form the Python side uses, so both compare as JSON. */
function jsonSafe(value: unknown): unknown {
  if (typeof value === "number" && !Number.isFinite(value))
    return { __float__: Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf" };
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (value && typeof value === "object")
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonSafe(v)]));
  return value;
}

function ours(doc: string): unknown {
  try {
    return jsonSafe(parseConfigYaml(doc));
  } catch (err) {
    if (!(err instanceof YAMLParseError)) throw err;
    return ERROR;
  }
}

function theirs(result: PyResult | undefined): unknown {
  if (!result) throw new Error("no PyYAML result");
  return "error" in result ? ERROR : result.value;
}

const LITELLM_CONFIG = `
model_list:
  - model_name: gpt-4o
    litellm_params: &azure
      model: azure/gpt-4o
      api_base: os.environ/AZURE_API_BASE
      api_key: "os.environ/AZURE_API_KEY"
      api_version: 2024-08-01-preview
      rpm: 1_000
      timeout: 1:30          # sexagesimal: 90
  - model_name: gpt-4o-mini
    litellm_params:
      <<: *azure
      model: azure/gpt-4o-mini
      tpm: 0x10
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  key_management_system: aws_secret_manager
  key_management_settings:
    store_virtual_keys: yes
    access_mode: read_and_write
    hosted_keys: [AZURE_API_KEY, OPENAI_API_KEY]
    prefix_for_stored_virtual_keys: litellm/
    description: 'Created by llm-secrets: "yes"'
    tags: {Team: ml, Env: prod, Cost-Center: 0800}
litellm_settings:
  ssl_verify: off
  drop_params: True
  num_retries: 3
  request_timeout: 600.5
  fallbacks: [{gpt-4o: [gpt-4o-mini]}]
  success_callback: ~
  cache: null
`;

// Two `<<` in one mapping (a model's defaults, then its region's): PyYAML's flatten_mapping lets the later win.
const LATER_MERGE = `defaults: &defaults
  api_base: https://api.openai.com
  api_key: os.environ/OPENAI_API_KEY
eu: &eu
  api_base: https://eu.api.openai.com
  api_key: os.environ/OPENAI_EU_API_KEY
litellm_params:
  model: openai/gpt-4o
  <<: *defaults
  <<: *eu
`;

const MANY_MERGES = `base: &b {timeout: 10, rpm: 5}\nmodels:\n${Array.from(
  { length: 150 },
  (_, i) => `  - <<: *b\n    n: ${i}\n`,
).join("")}`;

/** [what, document, our value (also PyYAML's); undefined: PyYAML's, whatever it is]. */
const PARITY: [string, string, unknown][] = [
  ["bools lower, Title, UPPER", "- yes\n- Yes\n- YES\n- no\n- No\n- NO", [true, true, true, false, false, false]],
  ["true/false casings", "- true\n- True\n- TRUE\n- false\n- False\n- FALSE", [true, true, true, false, false, false]],
  ["on/off casings", "- on\n- On\n- ON\n- off\n- Off\n- OFF", [true, true, true, false, false, false]],
  ["y/n are strings", "- y\n- Y\n- n\n- N", ["y", "Y", "n", "N"]],
  ["mixed casings are strings", "- yEs\n- tRUE\n- oN\n- OfF\n- nO", ["yEs", "tRUE", "oN", "OfF", "nO"]],
  ["quoted bools are strings", "- \"yes\"\n- 'on'\n- \"true\"\n- 'Off'", ["yes", "on", "true", "Off"]],
  ["bool keys", "on: 1\noff: 2\nyes: 3\ny: 4\nn: 5", { true: 3, false: 2, y: 4, n: 5 }],
  ["decimal ints", "- 0\n- 12\n- +12\n- -12\n- 1_000_000\n- -0\n- 1_\n- 1__0", [0, 12, 12, -12, 1000000, 0, 1, 10]],
  ["leading-0 octal", "- 017\n- -017\n- +017\n- 0_17\n- 00\n- 0123", [15, -15, 15, 15, 0, 83]],
  ["not octal", "- 08\n- 019\n- 0800\n- 0o17\n- 0O17", ["08", "019", "0800", "0o17", "0O17"]],
  ["hex", "- 0x1F\n- 0xff\n- -0x10\n- +0x10\n- 0x_FF\n- 0X1F", [31, 255, -16, 16, 255, "0X1F"]],
  ["binary", "- 0b101\n- -0b1_0\n- 0B1", [5, -2, "0B1"]],
  [
    "sexagesimal ints",
    "- 1:30\n- 1:30:00\n- -1:00\n- 190:20:30\n- 12:30\n- 1:5\n- 0:30\n- 1:60",
    [90, 5400, -60, 685230, 750, 65, "0:30", "1:60"],
  ],
  ["ints beyond 2^53 round as in JSON", "- 9007199254740993\n- 0x20000000000001", [2 ** 53, 2 ** 53]],
  ["0x_ has no digits", "a: 0x_", ERROR],
  ["0b_ has no digits", "a: 0b_", ERROR],
  ["floats", "- 1.5\n- -1.5\n- +1.5\n- 1.\n- 0.0\n- -0.0\n- 1_000.5", [1.5, -1.5, 1.5, 1, 0, -0, 1000.5]],
  [
    "floats with signed exponents",
    "- 1.5e+3\n- 1.5E-3\n- 1.e+3\n- .5e+1\n- 6.8523015e+5\n- 685.230_15e+03",
    [1500, 0.0015, 1000, 5, 685230.15, 685230.15],
  ],
  [
    "no dot or unsigned exponent: strings",
    "- 1e3\n- 1.5e3\n- 1E+3\n- -.5\n- +.5\n- .\n- 1.5e\n- ._5",
    ["1e3", "1.5e3", "1E+3", "-.5", "+.5", ".", "1.5e", "._5"],
  ],
  ["leading dot", "- .5\n- .5_0\n- .0", [0.5, 0.5, 0]],
  [
    "inf and nan",
    "- .inf\n- .Inf\n- .INF\n- +.inf\n- -.inf\n- -.Inf\n- .nan\n- .NaN\n- .NAN",
    [
      ...Array(4).fill(Number.POSITIVE_INFINITY),
      Number.NEGATIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      ...Array(3).fill(Number.NaN),
    ],
  ],
  [
    "inf and nan spelled otherwise: strings",
    "- inf\n- -inf\n- nan\n- .iNf\n- -.nan\n- Infinity",
    ["inf", "-inf", "nan", ".iNf", "-.nan", "Infinity"],
  ],
  ["sexagesimal floats", "- 190:20:30.15\n- 1:30.5\n- -1:30.5\n- 0:30.5\n- 1:30.", [685230.15, 90.5, -90.5, 30.5, 90]],
  ["version-like", "- 1.0\n- 3.10\n- 1.10.0\n- v1.0", [1, 3.1, "1.10.0", "v1.0"]],
  [
    "nulls",
    "- ~\n- null\n- Null\n- NULL\n-\n- nUll\n- 'null'\n- \"~\"",
    [null, null, null, null, null, "nUll", "null", "~"],
  ],
  ["empty values and !!null", "a:\nb: ~\nc: !!null anything\nd: ''", { a: null, b: null, c: null, d: "" }],
  [
    "quoted numbers are strings",
    '- "123"\n- \'0x1F\'\n- "1.5"\n- \'1:30\'\n- "1e3"',
    ["123", "0x1F", "1.5", "1:30", "1e3"],
  ],
  [
    "strings that look like numbers",
    "- 1.2.3\n- 12abc\n- 0x\n- 0b\n- 1,000\n- 1 000\n- 127.0.0.1\n- 10.0.0.1:8080\n- 1_000.5.1\n- +\n- 0x1G",
    ["1.2.3", "12abc", "0x", "0b", "1,000", "1 000", "127.0.0.1", "10.0.0.1:8080", "1_000.5.1", "+", "0x1G"],
  ],
  ["quoted date is a string", "a: \"2001-12-14\"\nb: '2001-12-14 21:59:43.10 -5'", undefined],
  ["not quite timestamps", "- 2001-12-14x\n- 2001-1-14\n- 20011214\n- 2001-12-14 21:59", undefined],
  ["block scalars", "a: |\n  line1\n  yes\nb: >\n  folded\n  text\nc: |-\n  0x10\n", undefined],
  // Python's dict takes True as 1 and False as 0: one key, spelled as first written, with the last value.
  ["1 and true as one key", "{1: a, true: b}", { "1": "b" }],
  ["false and 0 as one key", "{false: a, 0: b, off: c}", undefined],
  ["a duplicate keeps its first place", "a: 1\nb: 2\na: 3\n", undefined],
  // No line break after the last line (`LLM_SECRETS_CONFIG="$(cat config.yaml)"` drops it): none kept.
  ["a literal block scalar ending the text", "salt: |\n  sk-salt-0123456789", { salt: "sk-salt-0123456789" }],
  ["a folded one, and a kept one, ending the text", "a: >\n  x\n  y\nb: |+\n  z", undefined],
  ["a block scalar in a list ending the text", "- |\n  x", undefined],
  ["a block scalar ending the text after a comment line", "a: |\n  x\n# c", undefined],
  ["a block scalar ending the text with spaces after its last break", "a: |\n  x\n  ", undefined],
  ["a block scalar ending with CRLF, then nothing", "a: |\r\n  x", undefined],
  ["escapes", "a: \"tab\\there \\u00e9 \\x41 \\\"q\\\"\"\nb: 'it''s'", { a: 'tab\there é A "q"', b: "it's" }],
  ["multi-line plain scalar", "a: one\n  two\n\n  three", { a: "one two\nthree" }],
  ["merge key", "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3", { base: { x: 1, y: 2 }, c: { x: 1, y: 3 } }],
  [
    "merge list: earlier wins",
    "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n  z: 3",
    { a: { x: 1 }, b: { x: 2, y: 2 }, c: { x: 1, y: 2, z: 3 } },
  ],
  ["explicit key before merge wins", "a: &a {x: 1}\nc:\n  x: 0\n  <<: *a", { a: { x: 1 }, c: { x: 0 } }],
  ["inline merge", "c:\n  <<: {x: 1}\n  y: 2", { c: { x: 1, y: 2 } }],
  ['quoted "<<" is a plain key', '"<<": {a: 1}', { "<<": { a: 1 } }],
  ["merging a sequence fails", "a: &a [1]\nb:\n  <<: *a", ERROR],
  ["merging a scalar fails", "b:\n  <<: 1", ERROR],
  ["merging nothing fails", "b:\n  <<:\n  c: 1", ERROR],
  ["an anchor merged 150 times", MANY_MERGES, undefined],
  [
    "two merge keys: the later wins",
    LATER_MERGE,
    {
      defaults: { api_base: "https://api.openai.com", api_key: "os.environ/OPENAI_API_KEY" },
      eu: { api_base: "https://eu.api.openai.com", api_key: "os.environ/OPENAI_EU_API_KEY" },
      litellm_params: {
        model: "openai/gpt-4o",
        api_base: "https://eu.api.openai.com",
        api_key: "os.environ/OPENAI_EU_API_KEY",
      },
    },
  ],
  [
    "two merge keys around a key: the later wins",
    "x: &x {a: 1}\ny: &y {a: 2}\nz: {<<: *x, b: 5, <<: *y}",
    { x: { a: 1 }, y: { a: 2 }, z: { a: 2, b: 5 } },
  ],
  [
    "two merge keys: the mapping's own key still wins",
    "x: &x {a: 1}\ny: &y {a: 2}\nz: {<<: *x, a: 5, <<: *y}",
    { x: { a: 1 }, y: { a: 2 }, z: { a: 5 } },
  ],
  [
    "a merge list, then a merge key: the key wins, then the list's first",
    "x: &x {a: 1, c: 1}\ny: &y {a: 2}\nw: &w {c: 3}\nz: {<<: [*x, *y], <<: *w}",
    { x: { a: 1, c: 1 }, y: { a: 2 }, w: { c: 3 }, z: { a: 1, c: 3 } },
  ],
  [
    "a merge key, then a merge list: the list's first wins",
    "x: &x {a: 1}\ny: &y {a: 2}\nw: &w {a: 3}\nz:\n  <<: *x\n  <<: [*y, *w]",
    { x: { a: 1 }, y: { a: 2 }, w: { a: 3 }, z: { a: 2 } },
  ],
  [
    "a merged mapping's own merge keys",
    "x: &x {a: 1}\ny: &y {<<: *x, b: 2}\nw: &w {a: 9}\nz: {<<: *w, <<: *y}",
    { x: { a: 1 }, y: { a: 1, b: 2 }, w: { a: 9 }, z: { a: 1, b: 2 } },
  ],
  [
    "nested maps and lists",
    "a:\n  b:\n    - c: [1, {d: e}]\n      f: {g: [h, i]}\n    - - x\n      - y",
    { a: { b: [{ c: [1, { d: "e" }], f: { g: ["h", "i"] } }, ["x", "y"]] } },
  ],
  ["flow and empty collections", "{a: [1, 2, {b: null}], c: 'x', d: [], e: {}}", undefined],
  ["anchors and aliases", "a: &x [1, 2]\nb: *x\nc: &s str\nd: *s", { a: [1, 2], b: [1, 2], c: "str", d: "str" }],
  ["an anchor set twice", "a: &x 1\nb: &x 2\nc: *x", ERROR],
  ["an anchor set twice, never aliased", "a: &x 1\nb: &x 2", ERROR],
  ["an anchor set twice on collections", "a: &x {k: 1}\nb:\n  - &x [2]", ERROR],
  ["alias as a key", "a: &k x\n? *k\n: 1", { a: "x", x: 1 }],
  ["alias to a missing anchor", "a: *nope", ERROR],
  [
    "non-string keys become String(key)",
    '1: a\n1.5: b\n1.0: c\n~: d\n0x10: e\n.inf: f\n"2": g\n-0.0: h',
    { "1": "c", "1.5": "b", null: "d", "16": "e", Infinity: "f", "2": "g", "0": "h" },
  ],
  ["duplicate keys: the last wins", "a: 1\nb: 2\na: 3", { a: 3, b: 2 }],
  ["a ':' with no key", ": a", ERROR],
  ["a ':' with no key after a key", "a: 1\n: b", ERROR],
  ["a ':' with no key in a sequence", "- : a", ERROR],
  ["a ':' with no key in a flow mapping", "{a: 1, : b}", ERROR],
  ["a ':' with no key in a flow sequence", "[: a]", ERROR],
  ["a ':' with no key, an anchor on the line before", "a: &x\n  : b", ERROR],
  [
    "empty keys after ?, an anchor or a tag",
    "- ? \n  : a\n- &x : b\n- !!str : c\n- {? : d}\n- [? : e]\n- {&y : f}",
    [{ null: "a" }, { null: "b" }, { "": "c" }, { null: "d" }, [{ null: "e" }], { null: "f" }],
  ],
  ["a sequence as a key", "? [a, b]\n: 1", ERROR],
  ["a mapping as a key", "? {a: 1}\n: 1", ERROR],
  ["a flow sequence as a key", "{[a]: 1}", ERROR],
  ["__proto__ is a plain key", "__proto__: 1\nb: {__proto__: {x: 1}}", undefined],
  ["empty document", "", null],
  ["comment only", "# nothing\n", null],
  ["explicit empty document", "---\n...\n", null],
  ["top-level scalar", "--- 5", 5],
  ["two documents", "a: 1\n---\nb: 2", ERROR],
  ["%YAML 1.1", "%YAML 1.1\n---\na: y\nb: yes\nc: 0:30", { a: "y", b: true, c: "0:30" }],
  ["%YAML 1.2 reads the same", "%YAML 1.2\n---\nb: yes", { b: true }],
  [
    "explicit scalar tags",
    "- !!str 123\n- !!str yes\n- !!int '42'\n- !!float '1'\n- !!float 1e3\n- !!bool 'YeS'\n- !!int 0o17\n- !!int 1:30\n- !!float .5\n- !!str",
    ["123", "yes", 42, 1, 1000, true, 15, 90, 0.5, ""],
  ],
  ["explicit collection tags", "- !!seq [a]\n- !!map {a: 1}", [["a"], { a: 1 }]],
  ["!!int of a word", "a: !!int abc", ERROR],
  ["!!int: octal and base 60 as Python's int()", "- !!int 0O17\n- !!int 1:75\n- !!int '-0'", [15, 135, 0]],
  ["!!int 0:30 is bad octal", "a: !!int 0:30", ERROR],
  ["!!bool of an Object.prototype name", "a: !!bool constructor", ERROR],
  ["!!bool y", "a: !!bool y", ERROR],
  ["!!float of a word", "a: !!float x", ERROR],
  ["!!timestamp of a word", "a: !!timestamp foo", ERROR],
  ["!!str on a sequence", "a: !!str [1]", ERROR],
  ["!!map on a scalar", "a: !!map 1", ERROR],
  ["a local tag", "a: !custom 1", ERROR],
  ["a python tag", "a: !!python/name:os.system ''", ERROR],
  ["unclosed flow sequence", "a: [1, 2", ERROR],
  ["a tab ending a line", "a: 1 \t\nb: 2", ERROR],
  ["a tab after a colon", "a:\tb", ERROR],
  ["a tab after a colon in a flow mapping", "{a:\tb}", ERROR],
  ["a tab before a comment", "a: 1\t# c", ERROR],
  ["a tab within a plain scalar", "a: x\ty", ERROR],
  ["a tab after a dash", "- \ta", ERROR],
  ["a tab after a comma", "a: [1,\t2]", ERROR],
  ["a line of a tab", "a: 1\n\t\nb: 2", ERROR],
  [
    "tabs in quotes, block scalars and comments",
    "a: \"x\ty\"\nb: 'x\ty'\nc: |\n  \tx\n  y\t\n# \tc\nd: 1 #\te",
    { a: "x\ty", b: "x\ty", c: "\tx\ny\t\n", d: 1 },
  ],
  ["bad indentation", "a:\n  b: 1\n c: 2", ERROR],
  ["a LiteLLM config", LITELLM_CONFIG, undefined],
];

/** [what, document, ours, PyYAML's]: where we differ from safe_load on purpose (see config-yaml.ts). */
const DIFFERENCES: [string, string, unknown, unknown][] = [
  ["a date", "a: 2001-12-14", { a: "2001-12-14" }, { a: TIMESTAMP }],
  ["a datetime", "a: 2001-12-14t21:59:43.10-05:00", { a: "2001-12-14t21:59:43.10-05:00" }, { a: TIMESTAMP }],
  ["a spaced datetime", "a: 2001-12-14 21:59:43.10 -5", { a: "2001-12-14 21:59:43.10 -5" }, { a: TIMESTAMP }],
  [
    "a UTC datetime",
    "- 2002-12-14T21:59:43Z\n- 2001-1-2 3:04:05",
    ["2002-12-14T21:59:43Z", "2001-1-2 3:04:05"],
    [TIMESTAMP, TIMESTAMP],
  ],
  [
    "an api_version that is a date",
    "api_version: 2024-08-01",
    { api_version: "2024-08-01" },
    { api_version: TIMESTAMP },
  ],
  ["!!timestamp", "a: !!timestamp 2001-12-14", { a: "2001-12-14" }, { a: TIMESTAMP }],
  ["!!binary", "a: !!binary aGVsbG8=", ERROR, { a: { __bytes__: "aGVsbG8=" } }],
  ["!!set", "a: !!set {x, y}", ERROR, { a: { __set__: ["x", "y"] } }],
  [
    "!!omap",
    "a: !!omap [x: 1, y: 2]",
    ERROR,
    {
      a: [
        ["x", 1],
        ["y", 2],
      ],
    },
  ],
  ["!!pairs", "a: !!pairs [x: 1]", ERROR, { a: [["x", 1]] }],
  ["a plain =", "a: =", { a: "=" }, ERROR],
  ["<< as a value", "a: <<", { a: "<<" }, ERROR],
  ["the non-specific tag !", "- ! 123", ["123"], [123]],
  ["a merge key inside its own anchor's mapping", "a: &x {b: 1, <<: *x}", ERROR, { a: { b: 1 } }],
];

describe.skipIf(PYTHON === undefined)("parseConfigYaml and PyYAML's safe_load", () => {
  const results = new Map<string, PyResult>();

  beforeAll(() => {
    const docs = [...PARITY.map((row) => row[1]), ...DIFFERENCES.map((row) => row[1])];
    safeLoadAll(docs).forEach((result, i) => {
      results.set(docs[i] as string, result);
    });
  });

  it.each(PARITY)("%s", (_, doc, expected) => {
    const py = theirs(results.get(doc));
    expect(ours(doc)).toEqual(py);
    if (expected !== undefined) expect(ours(doc)).toEqual(jsonSafe(expected));
  });

  it.each(DIFFERENCES)("differs on purpose: %s", (_, doc, expected, pyExpected) => {
    expect(ours(doc)).toEqual(jsonSafe(expected));
    expect(theirs(results.get(doc))).toEqual(pyExpected);
  });

  it("the realistic config reads as LiteLLM reads it", () => {
    const config = parseConfigYaml(LITELLM_CONFIG) as Record<string, Record<string, unknown>>;
    expect(config.general_settings?.key_management_settings).toMatchObject({
      store_virtual_keys: true,
      tags: { Team: "ml", Env: "prod", "Cost-Center": "0800" },
    });
    expect(config.litellm_settings).toMatchObject({ ssl_verify: false, drop_params: true, success_callback: null });
    expect(config.model_list).toEqual([
      expect.objectContaining({ litellm_params: expect.objectContaining({ api_key: "os.environ/AZURE_API_KEY" }) }),
      {
        model_name: "gpt-4o-mini",
        litellm_params: {
          model: "azure/gpt-4o-mini",
          api_base: "os.environ/AZURE_API_BASE",
          api_key: "os.environ/AZURE_API_KEY",
          api_version: "2024-08-01-preview",
          rpm: 1000,
          timeout: 90,
          tpm: 16,
        },
      },
    ]);
  });
});

describe.skipIf(PYTHON === undefined)(
  "environment_variables as LiteLLM writes them: os.environ[key] = str(value)",
  () => {
    it("holds each number as the text Python's str() gives it: floats as repr, ints exact", () => {
      const values = [
        "1.0",
        "-2.50",
        "1.0e+3",
        "1.5e-7",
        "0.0001",
        "123456789012345.6",
        "1234567890123456.0",
        "-0.0",
        ".inf",
        "-.Inf",
        ".NaN",
        "1:30.5",
        "0",
        "-17",
        "1_000",
        "0x1F",
        "0b1010",
        "017",
        "1:30",
        "9007199254740993",
        "1730000000123456789",
        "-123456789012345678901234",
        "0x123456789abcdef0123",
        "!!float 3",
        "!!int '42'",
      ];
      const doc = `environment_variables:\n${values.map((v, i) => `  V${i}: ${v}\n`).join("")}  S: "1.0"\n  B: yes\n`;
      const run = spawnSync(
        PYTHON as string,
        [
          "-c",
          "import json,sys,yaml; d=yaml.safe_load(sys.stdin)['environment_variables']; print(json.dumps({k: str(v) for k, v in d.items()}))",
        ],
        { input: doc, encoding: "utf8" },
      );
      expect(run.status, run.stderr).toBe(0);
      const python = JSON.parse(run.stdout) as Record<string, string>;
      const config = parseConfigYaml(doc) as { environment_variables: Record<string, unknown> };
      const numbers = Object.fromEntries(Object.entries(python).filter(([k]) => k.startsWith("V")));
      expect(
        Object.fromEntries(Object.entries(config.environment_variables).filter(([k]) => k.startsWith("V"))),
      ).toEqual(numbers);
      expect(numbers.V20).toBe("1730000000123456789"); // a salt key made by date +%s%N, every digit kept
      // Strings and booleans are left to settings (which writes True and False as Python does).
      expect(config.environment_variables).toMatchObject({ S: "1.0", B: true });
    });

    it("follows aliases, merge keys and duplicate keys as PyYAML does, and leaves an anchor's other uses numbers", () => {
      const docs = [
        "b: &b {A: 1.0, B: 12345678901234567890123}\nenvironment_variables:\n  <<: *b\n  C: 2.0\n",
        "e: &e {A: 1.0, B: 12345678901234567890123}\nenvironment_variables: *e\n",
        "environment_variables: {A: 7}\nenvironment_variables: {A: 1.0, B: 12345678901234567890123}\n",
        "<<: {environment_variables: {A: 1.0, B: 12345678901234567890123}}\n",
        "environment_variables:\n  PORT: &port 4000.0\ngeneral_settings:\n  port: *port\n",
      ];
      const run = spawnSync(
        PYTHON as string,
        [
          "-c",
          "import json,sys,yaml; print(json.dumps([{k: str(v) for k, v in yaml.safe_load(d)['environment_variables'].items()} for d in json.load(sys.stdin)]))",
        ],
        { input: JSON.stringify(docs), encoding: "utf8" },
      );
      expect(run.status, run.stderr).toBe(0);
      const python = JSON.parse(run.stdout) as Record<string, string>[];
      docs.forEach((doc, i) => {
        expect((parseConfigYaml(doc) as { environment_variables: unknown }).environment_variables, doc).toEqual(
          python[i],
        );
      });
      // The anchor's other use is read as any number is (it is not an environment variable).
      expect(parseConfigYaml(docs[4] as string)).toMatchObject({ general_settings: { port: 4000 } });
    });
  },
);

/** The yaml library's parse with a given schema, or ERROR where it throws. */
function library(doc: string, schema: "core" | "yaml-1.1"): unknown {
  try {
    return parse(doc, { schema, logLevel: "error" });
  } catch {
    return ERROR;
  }
}

describe("where the yaml library's own schemas differ from PyYAML", () => {
  // [document, ours]: each row fails against yaml.parse with the core schema (what settings.ts used so far)
  // and with the library's yaml-1.1 schema.
  const rows: [string, unknown][] = [
    ["on: y", { true: "y" }],
    ["- 0:30\n- 08\n- 1:30\n- 017", ["0:30", "08", 90, 15]],
    ["- 1e3\n- -.5\n- .", ["1e3", "-.5", "."]],
    ["a: !!timestamp 2001-12-14", { a: "2001-12-14" }],
    ["a: !!binary aGVsbG8=", ERROR],
    ["a: 1\na: 2", { a: 2 }],
    ["a: !!float 1e3\nb: !!null x", { a: 1000, b: null }],
    [MANY_MERGES, expect.objectContaining({ models: expect.arrayContaining([{ timeout: 10, rpm: 5, n: 149 }]) })],
  ];

  it.each(rows)("%j", (doc, expected) => {
    expect(ours(doc)).toEqual(expected);
    expect(library(doc, "core")).not.toEqual(expected);
    expect(library(doc, "yaml-1.1")).not.toEqual(expected);
  });

  it("y, n and dates: booleans and Dates in the library's yaml-1.1 schema, strings here", () => {
    expect(library("- y\n- n\n- 2001-12-14", "yaml-1.1")).toEqual([true, false, new Date("2001-12-14")]);
    expect(parseConfigYaml("- y\n- n\n- 2001-12-14")).toEqual(["y", "n", "2001-12-14"]);
  });
});

describe("parseConfigYaml errors", () => {
  function error(doc: string): YAMLParseError {
    try {
      parseConfigYaml(doc);
    } catch (err) {
      if (err instanceof YAMLParseError) return err;
      throw err;
    }
    throw new Error("parsed");
  }

  it("are YAMLParseErrors with line and column, and never quote the document", () => {
    const secret = "sk-live-do-not-print";
    for (const [doc, line, code] of [
      [`master_key: ${secret}\nbad: [1, 2`, 2, "BAD_INDENT"],
      [`a: 1\nb: !custom ${secret}`, 2, "TAG_RESOLVE_FAILED"],
      [`a: 1\n? [${secret}]\n: 1`, 2, "NON_STRING_KEY"],
      [`a: &a [${secret}]\nb:\n  <<: *a`, 3, "BAD_COLLECTION_TYPE"],
      [`x: 1\na: !!int ${secret}`, 2, "TAG_RESOLVE_FAILED"],
      [`a: ${secret}\nb: *missing`, 2, "BAD_ALIAS"],
      [`a: &x ${secret}\nb: 1\nc: &x 2`, 3, "MULTIPLE_ANCHORS"],
      [`a: ${secret}\nb:\t1`, 2, "TAB_AS_INDENT"],
      [`a: "${secret}"\n: b`, 2, "UNEXPECTED_TOKEN"],
      [`a: ${secret}\nb: &b\n  - 1\n  - *b`, 4, "BAD_ALIAS"],
      [`a: ${secret}\nb: &b {c: 1, <<: *b}`, 2, "BAD_ALIAS"],
      [`a: ${secret}\nb: &b [${Array(999).fill(0)}]\nc: [${Array(1001).fill("*b")}]`, 3, "RESOURCE_EXHAUSTION"],
    ] as const) {
      const err = error(doc);
      expect(err.code).toBe(code);
      expect(err.linePos?.[0].line).toBe(line);
      expect(err.message).not.toContain(secret);
      expect(String(err.stack)).not.toContain(secret);
      // What the start says of it: words for each code (none falls back), quoting nothing.
      expect(yamlErrorText(err)).not.toContain(secret);
      expect(yamlErrorText(err)).not.toBe("text YAML does not allow");
    }
  });

  it("are told in words that quote nothing, where the library's own message would", () => {
    const secret = "sk-live-do-not-print";
    for (const [doc, code] of [
      [`a: 1\nb: |${secret}\n  text\n`, "UNEXPECTED_TOKEN"],
      [`a: 1\nb: !${secret} 1\n`, "TAG_RESOLVE_FAILED"],
    ] as const) {
      const err = error(doc);
      expect(err.code).toBe(code);
      expect(err.message).toContain(secret); // the library's
      expect(yamlErrorText(err)).not.toContain(secret);
      expect(yamlErrorText(err)).not.toBe("text YAML does not allow");
    }
  });

  it("refuse an alias bomb", () => {
    // Each level lists the one before ten times: 10^8 strings once expanded.
    let doc = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]";
    for (let i = 1; i <= 8; i++)
      doc += `\nl${i}: &l${i} [${Array(10)
        .fill(`*l${i - 1}`)
        .join(", ")}]`;
    expect(error(doc).code).toBe("RESOURCE_EXHAUSTION");
  });

  // A small document that aliases and merge keys make large: counted as built, it stops past 1,000,000
  // nodes (or 10 times the document's own). The yaml library's guard counted alias uses, and rated an
  // anchored list 1 however long: these took 48 s and 1.4 GB, or a heap-out-of-memory crash.
  const aliases = (n: number, copies: number) =>
    `x:\n  base: &a\n${Array.from({ length: n }, (_, i) => `    - ${i}\n`).join("")}  copies:\n${"    - *a\n".repeat(copies)}`;
  const merges = (keys: number, copies: number) =>
    `base: &b\n${Array.from({ length: keys }, (_, i) => `  k${i}: ${i}\n`).join("")}models:\n${"  - <<: *b\n".repeat(copies)}`;

  it("refuse 9,000 aliases of a 9,000-number list (a 179 KB document of 81 million numbers)", () => {
    const doc = aliases(9000, 9000);
    const err = error(doc);
    expect(err.code).toBe("RESOURCE_EXHAUSTION");
    // At the alias whose copy passed the bound: the 111th (1,000,000 / 9,001 copied numbers each).
    expect(err.linePos?.[0]).toEqual({ line: 9000 + 3 + 111, col: 7 });
  });

  it("refuse 3,000 merges of a 3,000-key mapping (a 73 KB document of 9 million entries)", () => {
    const err = error(merges(3000, 3000));
    expect(err.code).toBe("RESOURCE_EXHAUSTION");
    expect(err.linePos?.[0].line).toBeGreaterThan(3000 + 2); // at a model's `<<`
  });

  it("refuse just past 1,000,000 nodes, and read just below", () => {
    // n + 1 nodes in the anchored list and in each of its n copies, 6 more keys and collections.
    expect(error(aliases(1000, 1000)).code).toBe("RESOURCE_EXHAUSTION"); // 1,002,007 nodes
    const value = parseConfigYaml(aliases(998, 998)) as { x: { copies: number[][] } }; // 998,007
    expect(value.x.copies).toHaveLength(998);
    expect(value.x.copies[997]).toHaveLength(998);
    // Each model: 1 mapping, 333 entries copied, 666 keys and values; 671 more in the rest.
    expect(error(merges(333, 1000)).code).toBe("RESOURCE_EXHAUSTION"); // 1,000,671
    expect((parseConfigYaml(merges(333, 990)) as { models: unknown[] }).models).toHaveLength(990); // 990,671
  });

  it("allow a large document 10 times its own nodes: the bound grows with what is written", () => {
    // 120,013 nodes written (a bound of 1,200,130); 8 copies of the list: 1,080,013 built, past 1,000,000.
    const doc = `a: &a [${Array(120_000).fill(0)}]\nb: [${Array(8).fill("*a")}]`;
    expect((parseConfigYaml(doc) as { b: number[][] }).b).toHaveLength(8);
  });

  it("copy an alias: changing one use leaves the others", () => {
    const value = parseConfigYaml("a: &a {k: [1]}\nb: *a\nc: {<<: *a}") as Record<string, { k: number[] }>;
    value.b?.k.push(2);
    expect(value).toEqual({ a: { k: [1] }, b: { k: [1, 2] }, c: { k: [1] } });
  });
});
