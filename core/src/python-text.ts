/**
 * Python's reading of text where LiteLLM's stores read a value: `bytes.decode("utf-8")`,
 * `base64.b64decode` (the AWS KMS ciphertext in an env value), and
 * Python's idea of whitespace, which they strip with: the docker store's
 * `_read_file` (`.rstrip()`) and the AWS KMS plaintext (`.strip()`). Each strips the characters of
 * `str.isspace()` (Unicode White_Space and bidi classes B, S, WS): tab to carriage return, the
 * separators \x1c-\x1f (which JavaScript's `trim` keeps), space, NEL \x85, no-break space, and the
 * Unicode spaces and line and paragraph separators; not U+FEFF (which JavaScript's `trim` strips).
 * Checked against python3 in the tests of both stores.
 */

// biome-ignore lint/suspicious/noControlCharactersInRegex: Python counts \x1c-\x1f as whitespace
const PYTHON_SPACE = /[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

/** One UTF-16 unit of `str.isspace()` (every such character is one unit). */
function isPythonSpace(text: string, at: number): boolean {
  return PYTHON_SPACE.test(text.charAt(at));
}

/**
 * `text.rstrip()`, walked back from the end: linear in the value's length (a `[...]+$` pattern tries
 * again from each character of a long run of spaces inside the value, in time growing with the
 * run's square: a 500 KiB docker secret of them held the process for minutes).
 */
export function pythonRstrip(text: string): string {
  let end = text.length;
  while (end > 0 && isPythonSpace(text, end - 1)) end--;
  return text.slice(0, end);
}

/** `text.strip()`: both ends, each walked. */
export function pythonStrip(text: string): string {
  let start = 0;
  while (start < text.length && isPythonSpace(text, start)) start++;
  return pythonRstrip(text.slice(start));
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * `bytes.decode("utf-8")`: strict (undefined where Python raises), a leading byte order mark kept
 * as a character, as Python keeps it.
 */
export function pythonUtf8(bytes: Uint8Array): string | undefined {
  try {
    return UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

const BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/**
 * The bytes Python's `base64.b64decode(text)` gives (how LiteLLM's AWS KMS reads an env value), or
 * undefined where it raises: CPython's non-strict `binascii.a2b_base64` (Modules/binascii.c,
 * `binascii_a2b_base64_impl` with `strict_mode` false, alike from 3.7 to main). A `str` must be
 * ASCII (`b64decode` encodes it so); a character outside the alphabet is skipped; an `=` that
 * completes a quad's padding (the second after two data characters of a quad, the first after
 * three) ends the data, whatever follows; any other `=` is skipped, and a data character after it
 * restarts the count. The data must end on a whole quad: one character past it is "number of data
 * characters cannot be 1 more than a multiple of 4", two or three "Incorrect padding".
 */
export function pythonB64decode(text: string): Buffer | undefined {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: every ASCII character is allowed
  if (!/^[\x00-\x7f]*$/.test(text)) return undefined;
  const out: number[] = [];
  let quadPos = 0;
  let left = 0;
  let pads = 0;
  for (const ch of text) {
    if (ch === "=") {
      // As C's `quad_pos >= 2 && quad_pos + ++pads >= 4`: pads are counted only from the third place.
      if (quadPos >= 2 && quadPos + ++pads >= 4) return Buffer.from(out);
      continue;
    }
    const v = BASE64_ALPHABET.indexOf(ch);
    if (v < 0) continue;
    pads = 0;
    if (quadPos === 0) left = v;
    else if (quadPos === 1) {
      out.push((left << 2) | (v >> 4));
      left = v & 0x0f;
    } else if (quadPos === 2) {
      out.push((left << 4) | (v >> 2));
      left = v & 0x03;
    } else out.push((left << 6) | v);
    quadPos = (quadPos + 1) % 4;
  }
  return quadPos === 0 ? Buffer.from(out) : undefined;
}
