/**
 * config.yaml read the way LiteLLM reads it: PyYAML's `yaml.safe_load` (YAML 1.1 implicit types).
 *
 * Follows PyYAML's resolver.py and SafeConstructor: booleans are yes/no/true/false/on/off in the three
 * casings lower, Title and UPPER (y/n stay strings); ints are 0b.., 0x.., leading-0 octal, decimal with
 * underscores and sexagesimal (1:30 = 90); floats need a dot (1e3 stays a string, 1.0e+3 does not) or are
 * .inf/-.Inf/.NaN; nulls are ~, null, Null, NULL and empty; `<<` merge keys as flatten_mapping applies
 * them (the mapping's own keys win, then a later `<<` over an earlier one, then in `<<: [*a, *b]` the
 * first); duplicate keys keep the last value; explicit !!str, !!int, !!float, !!bool, !!null, !!seq and
 * !!map convert as PyYAML converts. A key that resolves to a non-string becomes String(key): `on:` is the
 * key "true", `~:` is "null", `1.0:` is "1" (PyYAML keeps True/None/1.0; LiteLLM finds none of them by a
 * string name either). Refuses what PyYAML refuses where the `yaml` library (YAML 1.2) reads on: a tab
 * outside quotes, comments and block scalars (`a:\tb`, `a: 1\t# c`), a `:` with no key before it
 * (`: a`), an anchor name set twice.
 *
 * Differs on purpose, so that a config is always plain JSON-shaped data:
 * - timestamps (2001-12-14, 2001-12-14t21:59:43.10-05:00) stay the strings written, also under
 *   !!timestamp (PyYAML makes date/datetime objects);
 * - !!binary, !!set, !!omap, !!pairs and every other tag are parse errors, like unknown tags in
 *   safe_load (PyYAML gives bytes, set and lists of tuples for the first four);
 * - ints beyond 2^53 lose precision (JavaScript numbers), as they would in JSON; but the numbers of
 *   `environment_variables` become the text Python's `str()` gives them (LiteLLM writes
 *   `os.environ[key] = str(value)`): `1.0` is "1.0", `1e+16`'s float "1e+16", a 24-digit int exact.
 *   A number there is most often a key (a salt key made by `date +%s%N`), and one digit off would
 *   derive another key than LiteLLM's;
 * - a plain `=` or `<<` as a value is a string (safe_load has no constructor for them and fails), and
 *   `! 123` is the string "123" as YAML says (PyYAML resolves it as if untagged);
 * - a mapping or sequence used as a key is an error (PyYAML: "unhashable key"), and so is an alias or
 *   merge key inside its own anchor's node (PyYAML builds a recursive structure);
 * - an alias is a copy of its anchor's value (PyYAML shares one object), and a document that aliases
 *   and merge keys expand past 10 times its own nodes (at least 1,000,000) is an error, a guard against
 *   alias and merge bombs (PyYAML, which shares, has none; see MIN_BOUND).
 * Parse errors are the `yaml` library's YAMLParseError with its code and line and column (linePos).
 * A config line may hold a secret, and a library message may quote a piece of the document (a block
 * scalar's header, an escape, a tag): `yamlErrorText` says what went wrong from the code alone, or
 * from the message of a refusal made here (a `Refusal`, whose messages never quote the document).
 */
import {
  type Alias,
  Composer,
  type CST,
  type Document,
  isAlias,
  isCollection,
  isMap,
  isNode,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  type Pair,
  Parser,
  type Scalar,
  type ScalarTag,
  visit,
  type YAMLMap,
  YAMLParseError,
} from "yaml";

const TAG = "tag:yaml.org,2002:";

/** A parse error made here (not by the library): its message is ours, and quotes nothing of the document. */
class Refusal extends YAMLParseError {}

/** What each library error code means, in words that quote nothing of the document. */
const LIBRARY_TEXT: Partial<Record<YAMLParseError["code"], string>> = {
  ALIAS_PROPS: "an anchor or tag on an alias",
  BAD_ALIAS: "an alias to an anchor not set before it",
  BAD_DIRECTIVE: "a % directive this reader does not know",
  BAD_DQ_ESCAPE: "an escape sequence YAML does not have, in a double-quoted string",
  BAD_INDENT:
    "an indentation that does not line up with the lines around it, or a bracket or quote not closed before it",
  BAD_PROP_ORDER: "an anchor or tag in the wrong place",
  BAD_SCALAR_START: "a plain value starting with a character YAML reserves (quote it)",
  BLOCK_AS_IMPLICIT_KEY: "an indented block used as a key",
  BLOCK_IN_FLOW: "an indented block inside [ ] or { }",
  KEY_OVER_1024_CHARS: "a key longer than 1024 characters without a ? before it",
  MISSING_CHAR: "a closing quote or bracket, a comma, or the space after a ':' is missing",
  MULTILINE_IMPLICIT_KEY: "a key over more than one line (a ':' may be missing)",
  MULTIPLE_ANCHORS: "two anchors on one value",
  MULTIPLE_DOCS: "more than one document (safe_load reads one)",
  MULTIPLE_TAGS: "two tags on one value",
  TAB_AS_INDENT: "a tab in the indentation (YAML indents with spaces)",
  TAG_RESOLVE_FAILED: "a tag safe_load does not construct (only YAML's standard tags)",
  UNEXPECTED_TOKEN: "something YAML does not expect here (a missing ':' or '-', or a stray character)",
  BAD_COLLECTION_TYPE: "a tag that does not fit the value it is on",
};

/** What `error` (from parseConfigYaml) says went wrong, without quoting the document. */
export function yamlErrorText(error: YAMLParseError): string {
  return error instanceof Refusal ? error.message : (LIBRARY_TEXT[error.code] ?? "text YAML does not allow");
}

// PyYAML's implicit resolvers (resolver.py), verbatim apart from the `re.X` spacing.
const BOOL = /^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$/;
const INT =
  /^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$/;
const FLOAT =
  /^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/;
const NULL = /^(?:~|null|Null|NULL|)$/;
const TIMESTAMP =
  /^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$/;

type OnError = (message: string) => void;
const BOOLS = new Map([
  ["yes", true],
  ["no", false],
  ["true", true],
  ["false", false],
  ["on", true],
  ["off", false],
]);

/** Sign and rest, as PyYAML's constructors split them (one leading sign, underscores dropped). */
function signed(text: string): [sign: number, rest: string] {
  const s = text.replace(/_/g, "");
  return s[0] === "-" ? [-1, s.slice(1)] : s[0] === "+" ? [1, s.slice(1)] : [1, s];
}

/** Base 60, summed from the last part up as PyYAML does, so floats round the same way. */
function sexagesimal(parts: number[]): number {
  let value = 0;
  let base = 1;
  for (const digit of parts.reverse()) {
    value += digit * base;
    base *= 60;
  }
  return value;
}

/** construct_yaml_int's branches in its order: the first whose start matches decides, whole text must fit. */
const INT_FORMS: [start: RegExp, whole: RegExp, value: (s: string) => number][] = [
  [/^0b/, /^0b[01]+$/, Number],
  [/^0x/, /^0x[0-9a-fA-F]+$/, Number],
  [/^0/, /^0(?:[oO]?[0-7]+)?$/, (s) => Number(`0o${s.replace(/^0[oO]?/, "") || "0"}`)], // int(s, 8)
  [/:/, /^[0-9]+(?::[0-9]+)+$/, (s) => sexagesimal(s.split(":").map(Number))],
  [/^/, /^[0-9]+$/, Number],
];

/** SafeConstructor.construct_yaml_int (explicit !!int accepts what Python's int() does there). */
function toInt(text: string, onError: OnError): unknown {
  const [sign, s] = signed(text);
  const form = INT_FORMS.find(([start]) => start.test(s));
  if (!form?.[1].test(s)) {
    onError("!!int needs an integer");
    return text;
  }
  return sign * form[2](s) + 0; // + 0 turns -0 into 0: Python's ints have no negative zero
}

/** SafeConstructor.construct_yaml_float (explicit !!float accepts what Python's float() does). */
function toFloat(text: string, onError: OnError): unknown {
  const [sign, s] = signed(text.toLowerCase());
  const decimal = /^(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[-+]?[0-9]+)?$/;
  let n = Number.NaN;
  if (s === ".inf" || s === "inf" || s === "infinity") n = Number.POSITIVE_INFINITY;
  else if (s === ".nan" || s === "nan") return Number.NaN;
  else if (s.includes(":")) {
    const parts = s.split(":");
    if (parts.every((p) => decimal.test(p))) n = sexagesimal(parts.map(Number));
  } else if (decimal.test(s)) n = Number(s);
  if (Number.isNaN(n)) {
    onError("!!float needs a number");
    return text;
  }
  return sign * n;
}

function toBool(text: string, onError: OnError): unknown {
  const value = BOOLS.get(text.toLowerCase());
  if (value === undefined) onError("!!bool needs yes, no, true, false, on or off");
  return value ?? text;
}

/** Each type twice: implicit (matched by PyYAML's regex on plain scalars) and explicit (by its !!tag). */
function tags(name: string, test: RegExp | undefined, resolve: ScalarTag["resolve"]): ScalarTag[] {
  const explicit: ScalarTag = { tag: TAG + name, default: false, resolve };
  return test ? [explicit, { tag: TAG + name, default: true, test, resolve }] : [explicit];
}

const PYYAML_TAGS: ScalarTag[] = [
  ...tags("bool", BOOL, toBool),
  ...tags("float", FLOAT, toFloat),
  ...tags("int", INT, toInt),
  ...tags("null", NULL, () => null),
  ...tags("timestamp", undefined, (text, onError) => {
    if (!TIMESTAMP.test(text)) onError("!!timestamp needs a date or a date and time");
    return text;
  }),
];

const OPTIONS = {
  schema: "failsafe", // map, seq and str; the rest is PYYAML_TAGS and merge keys
  resolveKnownTags: false,
  uniqueKeys: false,
  logLevel: "error", // never print the library's warnings
  prettyErrors: false, // no quoted line in any message: a config line may hold a secret
} as const;

/**
 * The most nodes (keys, values, mappings, sequences, and entries a merge key copies) a reading may
 * build, aliases and merge keys expanded: EXPANSION times the nodes written in the document, or
 * MIN_BOUND if more. A document without aliases or merge keys builds the nodes it holds, however
 * many (a LiteLLM config of 20,000 models holds 220,000 with three litellm_params each, about
 * 1,000,000 with twenty parameters and model_info entries each); aliases and merge keys may multiply
 * it tenfold; a small document may build a million nodes (a second or so, some 100 MB), whatever
 * it aliases.
 */
const MIN_BOUND = 1_000_000;
const EXPANSION = 10;

/** Parse config.yaml text with PyYAML safe_load semantics (see above); throws YAMLParseError. */
export function parseConfigYaml(text: string): unknown {
  const lineCounter = new LineCounter();
  const tokens = Array.from(new Parser(lineCounter.addNewLine).parse(text));
  const doc = compose(tokens, text.length, PYYAML_TAGS);
  const at = (error: YAMLParseError): YAMLParseError => {
    error.linePos = [lineCounter.linePos(error.pos[0]), lineCounter.linePos(error.pos[1])];
    return error;
  };
  // The first error in the text: the library's own, or one of what PyYAML refuses and the library reads.
  const [error] = [...doc.errors, ...pyyamlRefusals(tokens)].sort((a, b) => a.pos[0] - b.pos[0]);
  if (error) throw at(error);
  // An unknown tag is only a warning to the library; safe_load refuses it.
  const tag = doc.warnings.find((w) => w.code === "TAG_RESOLVE_FAILED" || w.code === "BAD_COLLECTION_TYPE");
  if (tag) throw at(new YAMLParseError(tag.pos, tag.code, tag.message));
  const refuse = (node: unknown, code: YAMLParseError["code"], message: string): never => {
    const [start = 0, end = 0] = (isNode(node) && node.range) || [];
    throw at(new Refusal([start, end], code, message));
  };
  // Where an unterminated last line with text begins (see Constructor's `openEnd`).
  const lastLine = Math.max(text.lastIndexOf("\n"), text.lastIndexOf("\r")) + 1;
  const openEnd = text.slice(lastLine).trim() === "" ? undefined : lastLine;
  const value = new Constructor(doc, refuse, openEnd).value() as Record<string, unknown> | null;
  const variables = value?.environment_variables;
  if (isPlainObject(variables) && Object.values(variables).some((v) => typeof v === "number")) {
    // The numbers' Python text, from a second reading in which ints and floats resolve to it: its
    // aliases, merges and duplicate keys then pick the same entries as in the first.
    const again = compose(tokens, text.length, PYTHON_TEXT_TAGS);
    const texts = (new Constructor(again, refuse, openEnd).value() as Record<string, unknown>).environment_variables;
    for (const [key, v] of Object.entries(variables)) {
      const python = isPlainObject(texts) ? texts[key] : undefined;
      if (typeof v === "number" && python instanceof PythonText) variables[key] = python.text;
    }
  }
  return value;
}

/** The document parseDocument would give (the first, MULTIPLE_DOCS past it), from tokens parsed once. */
function compose(tokens: CST.Token[], length: number, tags: ScalarTag[]): Document.Parsed {
  let doc: Document.Parsed | undefined;
  for (const next of new Composer({ ...OPTIONS, customTags: [...tags, "merge"] }).compose(tokens, true, length)) {
    if (!doc) doc = next;
    else {
      const message = "more than one document (safe_load reads one)";
      doc.errors.push(new Refusal([next.range[0], next.range[1]], "MULTIPLE_DOCS", message));
      break;
    }
  }
  if (!doc) throw new Error("the yaml library composed no document"); // compose(…, true) always gives one
  return doc;
}

/**
 * What the library reads and PyYAML's scanner, parser or composer refuses, each an error at its
 * place: a tab anywhere but in a quoted scalar, a comment, or a block scalar's text past its
 * indentation (PyYAML separates tokens with spaces only: `a:\tb`, `a: 1\t# c` and `{a:\tb}` are
 * ScannerErrors); a `:` with nothing before it (`: a`, `{: a}`: a ParserError; an empty key needs
 * `?`, or an anchor or tag before the `:`); an anchor name set twice (a ComposerError, where the
 * library lets an alias take the latest).
 */
function pyyamlRefusals(tokens: CST.Token[]): YAMLParseError[] {
  const found: YAMLParseError[] = [];
  const anchors = new Set<string>();
  const tabs = (source: string, offset: number) => {
    const i = source.indexOf("\t");
    if (i < 0) return;
    const message = "a tab outside quotes, comments and block scalars (PyYAML separates tokens with spaces only)";
    found.push(new Refusal([offset + i, offset + i + 1], "TAB_AS_INDENT", message));
  };
  // Depth first with a stack of our own: nesting deeper than a call stack is the composer's to refuse.
  const pending: (CST.Token | CST.CollectionItem)[] = [];
  const push = (...items: (CST.Token | CST.CollectionItem | null | undefined)[]) => {
    for (let i = items.length - 1; i >= 0; i--) {
      const item = items[i];
      if (item) pending.push(item);
    }
  };
  // The `:` of items without a key or `?`, and the last token before this one but spaces, in text order.
  const keyless = new Set<CST.SourceToken>();
  let previous: string | undefined;
  push(...tokens);
  for (let token = pending.pop(); token; token = pending.pop()) {
    if (!("type" in token)) {
      // A collection's item: the key's indicator and properties, the key, the separator, the value.
      const { start, key, sep, value } = token;
      const indicator = sep?.find((t) => t.type === "map-value-ind");
      if (!key && indicator && !start.some((t) => t.type === "explicit-key-ind")) keyless.add(indicator);
      push(...start, key, ...(sep ?? []), value);
      continue;
    }
    const before = previous;
    if ("source" in token && token.type !== "space") previous = token.type;
    switch (token.type) {
      case "map-value-ind":
        // An empty key is fine with an anchor or tag before the `:` on its line (`&x : a`, `!!str : a`).
        if (keyless.has(token) && before !== "anchor" && before !== "tag") {
          const pos: [number, number] = [token.offset, token.offset + 1];
          found.push(new Refusal(pos, "UNEXPECTED_TOKEN", "a ':' with no key before it"));
        }
        break;
      case "document":
        push(...token.start, token.value, ...(token.end ?? []));
        break;
      case "doc-end":
        tabs(token.source, token.offset);
        push(...(token.end ?? []));
        break;
      case "block-map":
      case "block-seq":
        push(...token.items);
        break;
      case "flow-collection":
        push(token.start, ...token.items, ...token.end);
        break;
      case "single-quoted-scalar":
      case "double-quoted-scalar":
        push(...(token.end ?? [])); // a tab within quotes is text
        break;
      case "scalar":
      case "alias":
        tabs(token.source, token.offset);
        push(...(token.end ?? []));
        break;
      case "block-scalar": {
        push(...token.props);
        // Its lines' text starts at the block's indentation (the library refuses less), which is at
        // least 1 in PyYAML: a tab may be part of the text, but not the first character of a line.
        let offset = token.offset + token.props.reduce((n, t) => n + ("source" in t ? t.source.length : 0), 0);
        for (const line of token.source.split("\n")) {
          if (line.startsWith("\t")) tabs(line, offset);
          offset += line.length + 1;
        }
        break;
      }
      case "comment":
        break;
      case "anchor":
        if (anchors.has(token.source)) {
          const pos: [number, number] = [token.offset, token.offset + token.source.length];
          found.push(new Refusal(pos, "MULTIPLE_ANCHORS", "an anchor name set a second time"));
        }
        anchors.add(token.source);
        break;
      default:
        tabs(token.source, token.offset);
    }
  }
  return found;
}

/**
 * A document's value as SafeConstructor builds it, as plain data: mappings are objects with String(key)
 * keys (the last duplicate winning, keys compared as resolved and as Python compares them: 1 and "1"
 * are two keys, 1 and true one, spelled as first written), merge keys
 * applied as flatten_mapping applies them, and an alias a copy of its anchor's node (PyYAML shares one
 * object; a copy keeps the value a tree: parseConfigYaml rewrites environment_variables' numbers in
 * place, which must not change the anchor's other uses).
 *
 * Copies and merges are where a small document becomes a large value (a list of 9,000 numbers aliased
 * 9,000 times, a 3,000-key mapping merged 3,000 times): every node built and every entry a merge key
 * copies counts, and past the bound (`MIN_BOUND`, `EXPANSION`) the reading stops with
 * RESOURCE_EXHAUSTION at the alias or merge key being expanded, before the time and memory are spent.
 * An alias or merge inside its own anchor's node (a recursive structure, which PyYAML builds) is
 * refused too: JSON-shaped data cannot hold it.
 */
class Constructor {
  private readonly targets = new Map<Alias, Node>();
  private readonly flattened = new Map<YAMLMap, Entry[]>();
  private readonly building = new Set<Node>();
  private readonly flattening = new Set<YAMLMap>();
  private readonly bound: number;
  private left: number;
  /** The outermost alias or merge key being expanded: where an exhaustion is reported. */
  private expanding: Node | undefined;

  /**
   * `openEnd`: where the text's last line, when it has text and no line break after it, begins
   * (else undefined). A block scalar whose text runs into it has no final line break to keep.
   */
  constructor(
    private readonly doc: Document.Parsed,
    private readonly refuse: (node: unknown, code: YAMLParseError["code"], message: string) => never,
    private readonly openEnd?: number,
  ) {
    // Anchors in document order, each set where its node starts (as PyYAML's composer sets them), and
    // what building would only meet later or deeper, refused at its place.
    const anchors = new Map<string, Node>();
    const pairs: Pair[] = [];
    let written = 0;
    visit(doc, {
      Node: (_, node) => {
        written += 1;
        if (isAlias(node)) {
          const target = anchors.get(node.source);
          if (!target) return refuse(node, "BAD_ALIAS", "alias to an anchor not set before it");
          this.targets.set(node, target);
        } else if (node.anchor) anchors.set(node.anchor, node);
      },
      Pair: (_, pair) => {
        pairs.push(pair);
      },
    });
    for (const { key, value } of pairs) {
      if (isCollection(this.target(key))) refuse(key, "NON_STRING_KEY", "a mapping or sequence as a key");
      if (isMergeKey(key) && !this.sources(value).every(isMap))
        refuse(isNode(value) ? value : key, "BAD_COLLECTION_TYPE", "<< merges a mapping or a list of them");
    }
    this.bound = Math.max(MIN_BOUND, EXPANSION * written);
    this.left = this.bound;
  }

  value(): unknown {
    try {
      return this.build(this.doc.contents);
    } catch (err) {
      // Aliases nesting what the composer read deeper than the call stack goes.
      if (err instanceof RangeError) this.refuse(this.expanding, "RESOURCE_EXHAUSTION", err.message);
      throw err;
    }
  }

  private target(node: unknown): unknown {
    return isAlias(node) ? this.targets.get(node) : node;
  }

  /** The nodes a merge key's value names, in the order PyYAML applies them (a list's first last). */
  private sources(value: unknown): unknown[] {
    const source = this.target(value);
    return isSeq(source) ? source.items.map((item) => this.target(item)).reverse() : [source];
  }

  /** Counts `count` nodes built: past the bound, the reading stops at the alias or merge key under way, else at `via`. */
  private spend(count: number, via?: Node): void {
    this.left -= count;
    if (this.left < 0) {
      const message = `aliases and merge keys expand the document past ${this.bound} nodes`;
      this.refuse(this.expanding ?? via, "RESOURCE_EXHAUSTION", message);
    }
  }

  /**
   * A scalar's value. The library gives a block scalar (`|`, `>`, `|+`) that ends the text with no
   * line break after its last line a final line break all the same; PyYAML, as YAML says, gives none
   * (there is none to keep): `LLM_SECRETS_CONFIG="$(cat config.yaml)"` drops the file's last one.
   */
  private scalar(node: Scalar): unknown {
    const { value, type, range } = node;
    const block = type === "BLOCK_LITERAL" || type === "BLOCK_FOLDED";
    if (
      block &&
      this.openEnd !== undefined &&
      range &&
      range[1] > this.openEnd &&
      typeof value === "string" &&
      value.endsWith("\n")
    ) {
      return value.slice(0, -1);
    }
    return value;
  }

  /** `build(node)`, `via` (an alias or merge key) the place to report an exhaustion if none is yet. */
  private expand(node: unknown, via: Node | undefined): unknown {
    const outer = this.expanding;
    this.expanding ??= via;
    const value = this.build(node);
    this.expanding = outer;
    return value;
  }

  private build(node: unknown): unknown {
    if (!isNode(node)) return node ?? null;
    if (isAlias(node)) {
      const target = this.targets.get(node);
      if (target && this.building.has(target)) this.refuse(node, "BAD_ALIAS", RECURSIVE);
      return this.expand(target, node);
    }
    this.spend(1);
    if (isScalar(node)) return this.scalar(node);
    if (this.building.has(node)) this.refuse(this.expanding ?? node, "BAD_ALIAS", RECURSIVE); // a merge's
    this.building.add(node);
    let value: unknown;
    if (isSeq(node)) value = node.items.map((item) => this.build(item));
    else {
      // Keys as resolved (true, 1, null) and compared as Python compares them (True == 1, False == 0),
      // then String(key): a duplicate keeps the first key's place and spelling and the last value, as
      // a dict does.
      const map = new Map<unknown, [key: unknown, value: unknown]>();
      for (const [{ key, value }, via] of this.entries(node as YAMLMap)) {
        const k = this.expand(key, via);
        const v = this.expand(value, via);
        const same = k === true ? 1 : k === false ? 0 : k;
        map.set(same, [map.get(same)?.[0] ?? k, v]);
      }
      value = Object.fromEntries(Array.from(map.values(), ([k, v]) => [String(k), v]));
    }
    this.building.delete(node);
    return value;
  }

  /**
   * A mapping's entries with its merge keys applied as PyYAML's flatten_mapping applies them: the
   * entries of each merge key's mappings in the order the keys are written (a list's mappings in
   * reverse), then the mapping's own; the last of a key wins. So the mapping's own keys win, a later
   * merge key wins over an earlier one, and in a list the first mapping wins.
   */
  private entries(map: YAMLMap): Entry[] {
    let entries = this.flattened.get(map);
    if (entries) return entries;
    const merged: Entry[] = [];
    const own: Entry[] = [];
    this.flattening.add(map);
    for (const pair of map.items) {
      if (!isMergeKey(pair.key)) {
        own.push([pair, undefined]);
        continue;
      }
      const via = pair.key as Node;
      for (const source of this.sources(pair.value) as YAMLMap[]) {
        if (this.flattening.has(source)) this.refuse(via, "BAD_ALIAS", RECURSIVE);
        const copied = this.entries(source);
        this.spend(copied.length, via);
        for (const [entry] of copied) merged.push([entry, via]);
      }
    }
    this.flattening.delete(map);
    entries = merged.length > 0 ? [...merged, ...own] : own;
    this.flattened.set(map, entries);
    return entries;
  }
}

const RECURSIVE = "an alias or merge key inside its own anchor's node";

/** A mapping's entry, and the merge key that copied it there. */
type Entry = [pair: Pair, via: Node | undefined];

/** A plain `<<` key, which the merge tag resolves to a symbol (a quoted "<<" stays a string). */
function isMergeKey(key: unknown): boolean {
  return isScalar(key) && typeof key.value === "symbol";
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** What Python's `str()` gives a number safe_load read (ints exact, floats as `repr` writes them). */
class PythonText {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

/** PYYAML_TAGS with ints and floats read as their Python text (errors as before). */
const PYTHON_TEXT_TAGS: ScalarTag[] = PYYAML_TAGS.map((tag) => {
  if (tag.tag === `${TAG}float`) {
    return { ...tag, resolve: (text, onError) => pythonText(toFloat(text, onError), pythonFloatRepr) };
  }
  if (tag.tag === `${TAG}int`) {
    return {
      ...tag,
      resolve: (text, onError) => pythonText(toInt(text, onError), (n) => pythonIntText(n, text)),
    };
  }
  return tag;
});

function pythonText(value: unknown, format: (n: number) => string): unknown {
  return typeof value === "number" ? new PythonText(format(value)) : value;
}

/** Python's `str(int)`: every digit, where a JavaScript number past 2^53 has lost some. */
function pythonIntText(value: number, source: string): string {
  if (Number.isSafeInteger(value)) return String(value);
  const [sign, s] = signed(source);
  const digits = s.includes(":")
    ? s.split(":").reduce((sum, part) => sum * 60n + BigInt(part), 0n)
    : BigInt(/^0[0-7]+$/.test(s) ? `0o${s.slice(1)}` : s.replace(/^0([oO])/, "0o"));
  return String(sign < 0 ? -digits : digits);
}

/** Python's `repr(float)`: the shortest digits that read back, in exponent form below 1e-4 and from 1e16. */
function pythonFloatRepr(n: number): string {
  if (Number.isNaN(n)) return "nan";
  if (!Number.isFinite(n)) return n > 0 ? "inf" : "-inf";
  if (n === 0) return Object.is(n, -0) ? "-0.0" : "0.0";
  const [mantissa = "", exponent = "0"] = Math.abs(n).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const exp = Number(exponent);
  let text: string;
  if (exp < -4 || exp >= 16) {
    const head = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    text = `${head}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  } else if (exp >= 0) {
    text = `${digits.slice(0, exp + 1).padEnd(exp + 1, "0")}.${digits.slice(exp + 1) || "0"}`;
  } else {
    text = `0.${"0".repeat(-exp - 1)}${digits}`;
  }
  return n < 0 ? `-${text}` : text;
}
