/**
 * Secret names: what a store may be asked for. Validated before any backend call (SPEC section 3).
 */
import { InvalidName } from "./errors";

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.@+=/-]{0,255}$/;
/**
 * Names without `/` that NAME takes: valid with no further check (one segment, starting with a
 * letter or digit, so neither empty nor `.` or `..`). Most names (`OPENAI_API_KEY`) are these;
 * the checks below, each with its own message, cost a cached read about a microsecond.
 */
const FLAT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,255}$/;

/** Returns the name when it is valid, else throws `invalid_name` saying why (never echoing input). */
export function validateName(name: string): string {
  if (FLAT_NAME.test(name)) return name;
  if (name.length === 0) throw new InvalidName("empty");
  if (name.length > 256) throw new InvalidName("longer than 256 characters");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what we refuse
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(name)) throw new InvalidName("control character");
  for (const segment of name.split("/")) {
    if (segment === "") throw new InvalidName("empty path segment");
    if (segment === "." || segment === "..") throw new InvalidName("'.' or '..' path segment");
  }
  if (!NAME.test(name)) {
    throw new InvalidName("must start with a letter or digit and use only A-Z a-z 0-9 _ . @ + = / -");
  }
  return name;
}

/** Whether `name` is valid: for names a backend lists, which may hold others (made in a console). */
export function isValidName(name: string): boolean {
  try {
    validateName(name);
    return true;
  } catch {
    return false;
  }
}

/**
 * The name in a request path after `prefix`, from the path as it arrived on the wire (before any
 * `..` normalisation), percent-decoded. Not validated here: the `SecretManager` validates every name
 * it is given, whoever calls it.
 */
export function nameFromPath(rawPath: string, prefix: string): string {
  const path = withoutQuery(rawPath);
  if (!path.startsWith(prefix)) throw new InvalidName("not under the secrets path");
  const encoded = path.slice(prefix.length);
  if (!encoded.includes("%")) return encoded;
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw new InvalidName("malformed percent-encoding");
  }
}

/**
 * A virtual key's token hash as LiteLLM names its secret, `virtual-key-<64 hex>` (without an alias,
 * a key is stored under its SHA-256), which a free-text alias can spell too: in any case, and with
 * any other character for either `-`, as stores that map names (Azure, Google) land those on the
 * same secret. The hex is the match's first group.
 */
export const TOKEN_HASH_NAME = /^virtual[^0-9a-z]key[^0-9a-z]([0-9a-f]{64})$/i;

const ORIGIN = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i;

/**
 * A request target in origin form (`/path?query`): an absolute-form target (`http://host/path`,
 * which a server must accept: RFC 9112 section 3.2.2) without its scheme and authority, `/` when no
 * path is left. Any other target (origin form, `*`) is as it came.
 */
export function originForm(target: string): string {
  if (target.startsWith("/")) return target;
  const origin = ORIGIN.exec(target);
  if (!origin) return target;
  const rest = target.slice(origin[0].length);
  return rest.startsWith("/") ? rest : `/${rest}`;
}

/** The path of a request target as it arrived, without its query or fragment. */
export function withoutQuery(target: string): string {
  const cut = target.search(/[?#]/);
  return cut === -1 ? target : target.slice(0, cut);
}

const LOGGED_PATH_CHARS = 200;

/**
 * A request's path as a log line shows it: without its query, clipped to 200 characters (whoever
 * sends a request, with a key or not, would otherwise write as long a line as the path it sends).
 */
export function loggedPath(target: string): string {
  const path = withoutQuery(target);
  return path.length > LOGGED_PATH_CHARS ? `${path.slice(0, LOGGED_PATH_CHARS)}…` : path;
}
