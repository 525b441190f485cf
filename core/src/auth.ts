/**
 * The API's one credential: the master key, as `Authorization: Bearer <key>`, or in
 * `x-litellm-api-key` for platforms whose own auth takes `Authorization` (a Lambda Function URL
 * with IAM, Cloud Functions' IAM invoker). When `x-litellm-api-key` is present it is the one
 * checked.
 *
 * The presented key's UTF-8 bytes are written into a zeroed buffer of a fixed width (256 bytes, or
 * the master key's length and 4 more when that is longer) and compared with the zero-padded master
 * key by `timingSafeEqual`, once per check, over the whole width; the byte lengths must match too
 * (a key followed by NUL bytes pads alike). The time taken depends neither on how much of the key
 * matches nor on the master key's length (up to 252 bytes; a longer key widens the buffer), only on
 * the length of what was presented (which the caller knows). No hash on the way: in the server under load, a SHA-256 per request (node's
 * `crypto.hash`, about 1 µs alone) measured 6-12 µs of CPU per request, the largest single cost of
 * a cached read (a one-off profile of the server under the loopback bench's load; the bench itself
 * times the cached read as a whole).
 */
import { hash, timingSafeEqual } from "node:crypto";

/**
 * Checks a request's key. When `seen` is given, `seen.caller` is set to the presented key's
 * fingerprint (`none` without a key; audit.ts): the master key's, computed once, when it matches;
 * else computed for this refusal.
 */
export type BearerCheck = (
  authorization: string | undefined,
  apiKeyHeader?: string | undefined,
  seen?: { caller?: string; authenticated?: boolean },
) => boolean;

/** The typed array's own fill: Buffer's adds argument checks and a call into C++ for 256 bytes. */
const zeroFill = Uint8Array.prototype.fill;

/** The compared width for master keys up to 252 bytes (LiteLLM's `sk-...` keys are about 50). */
const WIDTH = 256;

export function bearerCheck(masterKey: string): BearerCheck {
  const length = Buffer.byteLength(masterKey, "utf8");
  // 4 bytes past the key: the master key and one more character always overflows into the padding.
  const width = Math.max(WIDTH, length + 4);
  const expected = Buffer.alloc(width);
  expected.write(masterKey, "utf8");
  const presented = Buffer.alloc(width);
  const masterFingerprint = fingerprint(masterKey);
  return (authorization, apiKeyHeader, seen) => {
    const token = (apiKeyHeader !== undefined ? apiKeyHeader.trim() : bearerToken(authorization)) ?? "";
    // Written and compared even without a token, so a missing header costs what a wrong one does.
    zeroFill.call(presented, 0);
    const written = presented.write(token, "utf8");
    const matches = timingSafeEqual(presented, expected) && written === length && token !== "";
    zeroFill.call(presented, 0);
    if (seen) {
      seen.caller = matches ? masterFingerprint : token === "" ? "none" : fingerprint(token);
      seen.authenticated = matches;
    }
    return matches;
  };
}

/** The first 8 hex digits of a key's SHA-256: who called, in an audit line, never the key. */
export function fingerprint(key: string): string {
  return hash("sha256", key, "hex").slice(0, 8);
}

/** The token of `Bearer <token>` (the scheme in any case, then whitespace), trimmed. */
function bearerToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length < 8) return undefined;
  if (authorization.slice(0, 6).toLowerCase() !== "bearer" || !/\s/.test(authorization[6] as string)) return undefined;
  return authorization.slice(7).trim();
}
