// An HTTP/1.1 answer read off a socket as bytes: its status, its headers by lower-case name, and its
// body (a chunked one joined), for tests that send requests exactly as written.
import type { CheckedAnswer } from "./openapi-check";

export function answerOf(bytes: Buffer): CheckedAnswer {
  const text = bytes.toString("latin1");
  const split = text.indexOf("\r\n\r\n");
  const [statusLine = "", ...lines] = text.slice(0, split).split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  let rest = bytes.subarray(split + 4); // latin1: one character a byte
  if (headers["transfer-encoding"] === "chunked") {
    const out: Buffer[] = [];
    for (;;) {
      const eol = rest.indexOf("\r\n");
      const size = Number.parseInt(rest.subarray(0, eol).toString(), 16);
      if (!size) break;
      out.push(rest.subarray(eol + 2, eol + 2 + size));
      rest = rest.subarray(eol + 2 + size + 2);
    }
    rest = Buffer.concat(out);
  }
  return { status: Number(statusLine.split(" ")[1]), headers, body: rest.toString("utf8") };
}
