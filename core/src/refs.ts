/**
 * Refs: `os.environ/NAME` strings in a LiteLLM config, as LiteLLM writes them.
 */

export const REF_PREFIX = "os.environ/";

export function refName(value: unknown): string | undefined {
  return typeof value === "string" && value.startsWith(REF_PREFIX) ? value.slice(REF_PREFIX.length) : undefined;
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
