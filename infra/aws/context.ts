/**
 * The stack's settings from CDK context (`-c key=value`, app.ts), checked before anything is built.
 * A value taken as it came could deploy something other than what was meant, silently: an `entry`
 * typo (`function_url`) built an HTTP API with no IAM auth, an `accessMode` typo (`readonly`) kept
 * the write grants and wrote a config the functions refuse on every start, and `hostedKeys=A, B`
 * served " B", a name no start accepts. So each value is one the stack takes, or synth stops naming
 * it and what is allowed.
 */
import { validateName } from "../../core/src/names";
import type { AccessMode, LlmSecretsStackProps } from "./stack";

const ENTRIES = ["function-url", "http-api"] as const;
const ACCESS_MODES = ["read_only", "write_only", "read_and_write"] as const satisfies readonly AccessMode[];

/** The props `-c` sets; undefined where no value was given (the stack's default). */
export type ContextProps = Omit<LlmSecretsStackProps, "code">;

/** The props from `context` (CDK's `tryGetContext`), or an Error naming the first value refused. */
export function propsFromContext(context: (key: string) => unknown): ContextProps {
  // The stack deploys Secrets Manager only: aws_kms reads ciphertexts from the environment and writes
  // nothing, so its key events (and virtual keys) could not work. Refused, not silently ignored.
  const storeKind = text(context, "storeKind");
  if (storeKind !== undefined && storeKind !== "aws_secret_manager") {
    throw new Error(`storeKind ${storeKind}: this stack deploys aws_secret_manager only (infra/README.md, AWS)`);
  }
  const refreshInterval = text(context, "refreshInterval");
  // Digits only: Number() would take "" as 0, " 5 " as 5 and "0x10" as 16.
  if (refreshInterval !== undefined && !/^\d+$/.test(refreshInterval)) {
    throw new Error(`-c refreshInterval=${refreshInterval}: expected a whole number of seconds, 0 or more`);
  }
  return {
    accessMode: oneOf(context, "accessMode", ACCESS_MODES),
    hostedKeys: hostedKeysOf(text(context, "hostedKeys")),
    prefix: prefixOf(text(context, "prefix")),
    entry: oneOf(context, "entry", ENTRIES),
    listNames: oneOf(context, "listNames", ["true", "false"]) === "true",
    refreshIntervalSeconds: refreshInterval === undefined ? undefined : Number(refreshInterval),
    masterKeyVersionId: text(context, "masterKeyVersionId"),
    saltKeySecret: text(context, "saltKeySecret"),
    saltKeyVersionId: text(context, "saltKeyVersionId"),
    previousSaltKeysSecret: text(context, "previousSaltKeysSecret"),
    previousSaltKeysVersionId: text(context, "previousSaltKeysVersionId"),
  };
}

/** A context value as text: `-c` gives strings, cdk.json's `context` may give a number or a boolean. */
function text(context: (key: string) => unknown, key: string): string | undefined {
  const value = context(key);
  return value === undefined ? undefined : String(value);
}

function oneOf<T extends string>(context: (key: string) => unknown, key: string, allowed: readonly T[]): T | undefined {
  const value = text(context, key);
  if (value === undefined || (allowed as readonly string[]).includes(value)) return value as T | undefined;
  throw new Error(`-c ${key}=${value}: expected ${allowed.join(", ")}`);
}

/**
 * The virtual-key prefix, as given: one whose names (`<prefix>/<alias>`, the `/` added when missing,
 * as LiteLLM does) are not secret names is refused here, not at every start (`-c prefix=` would
 * write a config whose `/` begins no name, and grant IAM on the account's `/*`).
 */
function prefixOf(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    validateName(`${value.endsWith("/") ? value : `${value}/`}k`);
  } catch (err) {
    throw new Error(`-c prefix=${value}: the secret names it would begin are not valid (${(err as Error).message})`);
  }
  return value;
}

/**
 * `A,B` as names, each trimmed (`A, B` is two names, not " B"); an empty list (`-c hostedKeys=`) is
 * none. A name no start would accept (core/src/names.ts) is refused here, not at every start.
 */
function hostedKeysOf(value: string | undefined): string[] | undefined {
  const names = value
    ?.split(",")
    .map((name) => name.trim())
    .filter(Boolean);
  for (const name of names ?? []) {
    try {
      validateName(name);
    } catch (err) {
      throw new Error(`-c hostedKeys: ${JSON.stringify(name)} is not a secret name (${(err as Error).message})`);
    }
  }
  return names;
}
