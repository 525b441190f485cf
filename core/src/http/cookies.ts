/**
 * A response's `Set-Cookie` headers as cookies, for a runtime whose platform takes cookies apart
 * from headers (Azure Functions' worker keeps one value per header name, so a second `Set-Cookie`
 * would be lost as a header). Parsed by set-cookie-parser; attributes with no field here (such as
 * `Partitioned`) are not carried.
 */
import { type Cookie as ParsedCookie, parseSetCookie } from "set-cookie-parser";

export interface ResponseCookie {
  name: string;
  value: string;
  domain?: string;
  path?: string;
  expires?: Date;
  maxAge?: number;
  secure?: boolean;
  httpOnly?: boolean;
  sameSite?: "Strict" | "Lax" | "None";
}

const SAME_SITE: Record<string, ResponseCookie["sameSite"]> = { strict: "Strict", lax: "Lax", none: "None" };

/** Each `Set-Cookie` of `response`, its value as sent (not URL-decoded). */
export function responseCookies(response: Response): ResponseCookie[] {
  return parseSetCookie(response.headers.getSetCookie(), { decodeValues: false }).map(toCookie);
}

function toCookie(c: ParsedCookie): ResponseCookie {
  const sameSite = SAME_SITE[c.sameSite?.toLowerCase() ?? ""];
  return {
    name: c.name,
    value: c.value,
    ...(c.domain !== undefined && { domain: c.domain }),
    ...(c.path !== undefined && { path: c.path }),
    ...(c.expires !== undefined && { expires: c.expires }),
    ...(c.maxAge !== undefined && { maxAge: c.maxAge }),
    ...(c.secure && { secure: true }),
    ...(c.httpOnly && { httpOnly: true }),
    ...(sameSite && { sameSite }),
  };
}
