/**
 * Refs: `os.environ/NAME` strings in a LiteLLM config, as LiteLLM writes them.
 */

import { InvalidInput, SecretsError } from "./errors";

export const REF_PREFIX = "os.environ/";

export function refName(value: unknown): string | undefined {
  return typeof value === "string" && value.startsWith(REF_PREFIX) ? value.slice(REF_PREFIX.length) : undefined;
}

/** The variable `name` of `env`, never a property every object has (`constructor`, `__proto__`). */
export function envValue(env: Readonly<Record<string, string | undefined>>, name: string): string | undefined {
  return Object.hasOwn(env, name) ? env[name] : undefined;
}

/**
 * An `os.environ/NAME` ref's value from the environment, as LiteLLM's `get_secret` reads it there:
 * one matching pair of surrounding quotes (`"…"` or `'…'`) removed, as `docker run --env-file`
 * keeps them (LiteLLM issue #27591). Values read through a store are taken as stored.
 */
export function envRefValue(env: Readonly<Record<string, string | undefined>>, name: string): string | undefined {
  const value = envValue(env, name);
  if (value === undefined || value.length < 2) return value;
  const first = value[0];
  return (first === '"' || first === "'") && value.at(-1) === first ? value.slice(1, -1) : value;
}

/** Every distinct name referred to anywhere in `json`, in order of first appearance. */
export function collectRefs(json: unknown): string[] {
  const names = new Set<string>();
  const walk = (node: unknown): void => {
    const name = refName(node);
    if (name !== undefined) names.add(name);
    else if (Array.isArray(node)) node.forEach(walk);
    else if (node !== null && typeof node === "object") Object.values(node).forEach(walk);
  };
  walk(json);
  return [...names];
}

export interface RefScan {
  /** Each distinct name, with how many times it occurs. */
  counts: Map<string, number>;
  /** Occurrences in all. */
  total: number;
}

/**
 * Counts the refs of `json`, refusing (before any store call) a document nested deeper than
 * `maxDepth` or holding a number it could not give back as written (`400 invalid_request`), or
 * more than `maxRefs` ref occurrences (`413 payload_too_large`): one small body repeating a ref
 * must not cost unbounded work.
 */
export function scanRefs(json: unknown, limits: { maxDepth: number; maxRefs: number }): RefScan {
  const counts = new Map<string, number>();
  let total = 0;
  const walk = (node: unknown, depth: number): void => {
    const name = refName(node);
    if (name !== undefined) {
      if (++total > limits.maxRefs) {
        throw new SecretsError("payload_too_large", `config holds more than ${limits.maxRefs} os.environ/ refs`);
      }
      counts.set(name, (counts.get(name) ?? 0) + 1);
      return;
    }
    if (
      typeof node === "number" &&
      !(Number.isFinite(node) && (Number.isSafeInteger(node) || !Number.isInteger(node)))
    ) {
      // What JSON.parse made of it would come back changed (null, or other digits), not the same JSON.
      throw new InvalidInput(
        "config holds a number that cannot be echoed exactly (infinite, or an integer past 2^53): send it as a string",
      );
    }
    if (node === null || typeof node !== "object") return;
    if (depth >= limits.maxDepth) throw new InvalidInput(`config is nested deeper than ${limits.maxDepth} levels`);
    for (const child of Array.isArray(node) ? node : Object.values(node)) walk(child, depth + 1);
  };
  walk(json, 0);
  return { counts, total };
}

/** A copy of `json` with each ref whose name `values` holds replaced by its value. */
export function replaceRefs(json: unknown, values: ReadonlyMap<string, string>): unknown {
  const name = refName(json);
  if (name !== undefined) return values.get(name) ?? json;
  if (Array.isArray(json)) return json.map((item) => replaceRefs(item, values));
  if (json !== null && typeof json === "object") {
    return Object.fromEntries(Object.entries(json).map(([k, v]) => [k, replaceRefs(v, values)]));
  }
  return json;
}
