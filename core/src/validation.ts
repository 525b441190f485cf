/**
 * zod as we use it: the small `zod/mini` build (function bundles stay small), with English messages
 * passed per parse (`safeParse` below) rather than set in zod's global config at import, which
 * would change the messages of every other zod user in the process. Issues are reported by path and
 * message only; zod never puts the input value into them.
 */

import type { core } from "zod/mini";
import en from "zod/v4/locales/en.js";
import type { Issue } from "./errors";

const localeError = en().localeError;
/** zod's English, but a key that is not there is said so ("is missing"), not "received undefined". */
const ENGLISH = {
  error: (issue: core.$ZodRawIssue) =>
    issue.code === "invalid_type" && issue.input === undefined
      ? `is missing (expected ${issue.expected})`
      : localeError(issue),
};

/** `schema.safeParse(input)` with English messages. */
export function safeParse<T>(schema: core.$ZodType<T>, input: unknown): core.util.SafeParseResult<T> {
  return (schema as unknown as { safeParse(i: unknown, p: typeof ENGLISH): core.util.SafeParseResult<T> }).safeParse(
    input,
    ENGLISH,
  );
}

/** Unknown keys listed one by one in an answer; the rest are counted. */
const MAX_LISTED_KEYS = 20;

/** Keys a caller sent are echoed back in at most this many characters (a key may be megabytes). */
const MAX_ECHOED_KEY = 64;

function clip(key: string): string {
  return key.length > MAX_ECHOED_KEY ? `${key.slice(0, MAX_ECHOED_KEY)}…` : key;
}

/**
 * `a.b[0].c` style paths, and zod's message; keys the caller sent are clipped to 64 characters. A
 * key that is not taken is an issue at its own path (`extra: unknown key`), where a client that
 * maps issues to fields finds it.
 */
export function issuesOf(error: core.$ZodError): Issue[] {
  return error.issues.flatMap((issue) => {
    const path = issue.path.reduce<string>((acc, key) => joined(acc, key), "");
    if (issue.code === "unrecognized_keys") {
      // Each at its own path, the first few: a body of 90 000 unknown keys is not answered in full.
      const listed = issue.keys
        .slice(0, MAX_LISTED_KEYS)
        .map((key) => ({ path: joined(path, key), message: "unknown key" }));
      const more = issue.keys.length - listed.length;
      return more > 0 ? [...listed, { path, message: `and ${more} more unknown keys` }] : listed;
    }
    // A record's key that its schema refuses: what the key's own check says, not "Invalid key in record".
    const message = issue.code === "invalid_key" ? (issue.issues[0]?.message ?? issue.message) : issue.message;
    return [{ path, message }];
  });
}

function joined(path: string, key: PropertyKey): string {
  if (typeof key === "number") return `${path}[${key}]`;
  return path ? `${path}.${clip(String(key))}` : clip(String(key));
}

/** `path: message; path: message` for one-line errors. */
export function describeIssues(issues: Issue[]): string {
  return issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
}

/** Keys of `input` that `schema` (objects inside optionals, recursively) does not name. */
export function unknownKeys(schema: core.$ZodType, input: unknown, prefix = ""): string[] {
  const def = schema._zod.def as {
    type: string;
    innerType?: core.$ZodType;
    shape?: Record<string, core.$ZodType>;
    catchall?: core.$ZodType;
    valueType?: core.$ZodType;
  };
  if (def.type === "optional" || def.type === "default" || def.type === "nullable") {
    return def.innerType ? unknownKeys(def.innerType, input, prefix) : [];
  }
  // A record's entries (`team_settings.<team>`) are each checked against its value's schema.
  if (def.type === "record" && def.valueType && typeof input === "object" && input !== null && !Array.isArray(input)) {
    const valueType = def.valueType;
    return Object.entries(input).flatMap(([key, value]) => unknownKeys(valueType, value, `${prefix}.${key}`));
  }
  if (def.type !== "object" || !def.shape || typeof input !== "object" || input === null || Array.isArray(input)) {
    return [];
  }
  const shape = def.shape;
  // A loose object (LiteLLM's litellm_params, say) takes any key: only its named keys are checked.
  const open = def.catchall !== undefined && def.catchall._zod.def.type !== "never";
  return Object.entries(input).flatMap(([key, value]) => {
    const path = prefix ? `${prefix}.${key}` : key;
    const child = shape[key];
    if (child) return unknownKeys(child, value, path);
    return open ? [] : [path];
  });
}
