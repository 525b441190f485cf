/**
 * The API's one credential: the master key, as `Authorization: Bearer <key>`, or in
 * `x-litellm-api-key` for platforms whose own auth takes `Authorization` (a Lambda Function URL
 * with IAM, Cloud Functions' IAM invoker). When `x-litellm-api-key` is present it is the one
 * checked.
 *
 * Both the expected and the presented key are hashed to 32 bytes and compared with
 * `timingSafeEqual`, once per check, so the time taken depends neither on how much of the key
 * matches nor on its length.
 */
import { hash, timingSafeEqual } from "node:crypto";

/**
 * Checks a request's key. When `seen` is given, `seen.caller` is set to the presented key's
 * fingerprint (the first 8 hex digits of its SHA-256, `none` without a key: audit.ts), from the
 * hash the check computes anyway.
 */
export type BearerCheck = (
  authorization: string | undefined,
  apiKeyHeader?: string | undefined,
  seen?: { caller?: string },
) => boolean;

export function bearerCheck(masterKey: string): BearerCheck {
  const expected = digest(masterKey);
  return (authorization, apiKeyHeader, seen) => {
    const token = apiKeyHeader !== undefined ? apiKeyHeader.trim() : bearerToken(authorization);
    // Hash even when there is no token, so a missing header costs what a wrong one does.
    const presented = digest(token ?? "");
    const matches = timingSafeEqual(presented, expected);
    const present = token !== undefined && token !== "";
    if (seen) seen.caller = present ? presented.toString("hex", 0, 4) : "none";
    return present && matches;
  };
}

/** The token of `Bearer <token>` (the scheme in any case, then whitespace), trimmed. */
function bearerToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length < 8) return undefined;
  if (authorization.slice(0, 6).toLowerCase() !== "bearer" || !/\s/.test(authorization[6] as string)) return undefined;
  return authorization.slice(7).trim();
}

function digest(text: string): Buffer {
  return hash("sha256", text, "buffer");
}
