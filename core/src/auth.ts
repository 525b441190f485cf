/**
 * The API's one credential: `Authorization: Bearer <master key>`.
 *
 * Both the expected and the presented token are hashed to 32 bytes and compared with
 * `timingSafeEqual`, so the time taken depends neither on how much of the token matches nor on
 * its length.
 */
import { createHash, timingSafeEqual } from "node:crypto";

export type BearerCheck = (authorization: string | undefined) => boolean;

export function bearerCheck(masterKey: string): BearerCheck {
  const expected = digest(masterKey);
  return (authorization) => {
    const token = /^Bearer\s+(.+)$/i.exec(authorization ?? "")?.[1]?.trim();
    // Hash even when there is no token, so a missing header costs what a wrong one does.
    const matches = timingSafeEqual(digest(token ?? ""), expected);
    return token !== undefined && token !== "" && matches;
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
