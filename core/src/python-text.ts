/**
 * Python's reading of text where LiteLLM's stores read a value: `bytes.decode("utf-8")`, and
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
