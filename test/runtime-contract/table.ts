/**
 * The runtime contract: one table of requests, as they arrive on the wire, and the answers every
 * runtime must give (status, error code, `Allow`, and the store state after). Each runtime joins
 * by giving `contract.test.ts` a way to send a raw request: the local server over a real socket,
 * the exported `fetch`, and (later) Lambda, Azure and Google.
 */

/** What the store holds before every case. */
export const SEED: Readonly<Record<string, string>> = {
  prod: "prod-value",
  c: "c-value",
  d: "d-value",
  "c/d": "cd-value",
};

export interface ContractCase {
  name: string;
  method: string;
  /** The request target exactly as sent on the wire. */
  target: string;
  /** JSON body. */
  body?: unknown;
  /** A body sent as this text (with `Content-Type: application/json`), when it is not JSON. */
  rawBody?: string;
  /** Send the master key (default true). */
  auth?: boolean;
  status: number;
  code?: string;
  /** The `Allow` header of a 405, as a set. */
  allow?: string[];
  /** Names whose value (or absence) is checked after the request; unlisted names must be as seeded. */
  after?: Record<string, string | undefined>;
  /**
   * The answer through an API Gateway HTTP API where it differs, and why: the gateway hands the
   * function the path percent-decoded (`%25` twice) and cut at a `?` that `%3F` decoded to, so the
   * function cannot see what was sent (contract.test.ts builds its events as AWS does).
   */
  onHttpApi?: Pick<ContractCase, "status" | "code" | "after"> & { why: string };
  /**
   * The answer through the Azure Functions host where it differs, and why: the host hands the worker
   * the path decoded once (but `%2F`) with its dot segments removed, so a `%25XX` arrives as `%XX`
   * and `..` never arrives (contract.test.ts builds the URL as the host does).
   */
  onAzure?: Pick<ContractCase, "status" | "code" | "after"> & { why: string };
}

const put = { value: "written" };

export const CONTRACT: readonly ContractCase[] = [
  // Public routes, and authentication before routing.
  { name: "health needs no key", method: "GET", target: "/health", auth: false, status: 200 },
  { name: "openapi needs no key", method: "GET", target: "/openapi.json", auth: false, status: 200 },
  { name: "HEAD on health", method: "HEAD", target: "/health", auth: false, status: 200 },
  {
    name: "another method on health is 405, no key needed",
    method: "POST",
    target: "/health",
    auth: false,
    status: 405,
    code: "method_not_allowed",
    allow: ["GET", "HEAD"],
  },
  { name: "no key: 401", method: "GET", target: "/v1/secrets/prod", auth: false, status: 401, code: "unauthorized" },
  {
    name: "no key on an unknown path: 401 before 404",
    method: "GET",
    target: "/nope",
    auth: false,
    status: 401,
    code: "unauthorized",
  },
  {
    name: "no key with a wrong method: 401 before 405",
    method: "PATCH",
    target: "/v1/secrets/prod",
    auth: false,
    status: 401,
    code: "unauthorized",
  },
  { name: "no key on metrics", method: "GET", target: "/metrics", auth: false, status: 401, code: "unauthorized" },
  {
    name: "no key with a dot segment: 401 first",
    method: "PUT",
    target: "/v1/secrets/c/../d",
    body: put,
    auth: false,
    status: 401,
    code: "unauthorized",
  },
  { name: "unknown path", method: "GET", target: "/nope", status: 404, code: "not_found" },
  {
    name: "wrong method on a secret",
    method: "PATCH",
    target: "/v1/secrets/prod",
    status: 405,
    code: "method_not_allowed",
    allow: ["GET", "HEAD", "PUT", "DELETE"],
  },
  {
    name: "POST on a secret",
    method: "POST",
    target: "/v1/secrets/prod",
    body: put,
    status: 405,
    code: "method_not_allowed",
    allow: ["GET", "HEAD", "PUT", "DELETE"],
  },
  {
    name: "GET on resolve",
    method: "GET",
    target: "/v1/resolve",
    status: 405,
    code: "method_not_allowed",
    allow: ["POST"],
  },

  // Reads.
  { name: "read", method: "GET", target: "/v1/secrets/prod", status: 200 },
  { name: "read a name with a slash", method: "GET", target: "/v1/secrets/c/d", status: 200 },
  { name: "read with %2F for the slash", method: "GET", target: "/v1/secrets/c%2Fd", status: 200 },
  { name: "read with ?refresh=true", method: "GET", target: "/v1/secrets/prod?refresh=true", status: 200 },
  {
    name: "read with an unknown query",
    method: "GET",
    target: "/v1/secrets/prod?x=1",
    status: 400,
    code: "invalid_request",
  },
  { name: "read through ..", method: "GET", target: "/v1/secrets/c/../d", status: 400, code: "invalid_name" },
  { name: "read through %2e%2e", method: "GET", target: "/v1/secrets/c/%2e%2e/d", status: 400, code: "invalid_name" },
  { name: "read through ./", method: "GET", target: "/v1/secrets/./prod", status: 400, code: "invalid_name" },
  {
    name: "read escaping to /metrics",
    method: "GET",
    target: "/v1/secrets/%2e%2e/%2e%2e/metrics",
    status: 400,
    code: "invalid_name",
  },
  // Upper and mixed case: URL parsing normalises `%2E` as it does `%2e` (to /metrics here).
  {
    name: "read escaping to /metrics, upper-case %2E",
    method: "GET",
    target: "/v1/secrets/%2E%2E/%2E%2E/metrics",
    status: 400,
    code: "invalid_name",
  },
  {
    name: "read escaping to /metrics, mixed-case %2e%2E",
    method: "GET",
    target: "/v1/secrets/%2e%2E/%2E%2e/metrics",
    status: 400,
    code: "invalid_name",
  },
  { name: "read with a raw #", method: "GET", target: "/v1/secrets/prod#x", status: 400, code: "invalid_name" },
  // The absolute form a server must accept (RFC 9112 section 3.2.2): read as its path.
  { name: "read in absolute form", method: "GET", target: "http://127.0.0.1/v1/secrets/prod", status: 200 },
  {
    name: "write in absolute form",
    method: "PUT",
    target: "http://127.0.0.1/v1/secrets/new",
    body: put,
    status: 201,
    after: { new: "written" },
  },
  // A raw backslash no URL can be made of as sent (a URL parser reads it as `/`): refused in the
  // API's shape (node's listener: `invalid_request`; where the path reaches the app: `invalid_name`).
  { name: "write with a raw backslash", method: "PUT", target: "/v1/secrets/a\\b", body: put, status: 400 },
  // `%25` is a `%` in the name: never a valid name, and never decoded a second time.
  {
    name: "read a%2540b (a % in the name)",
    method: "GET",
    target: "/v1/secrets/a%2540b",
    status: 400,
    code: "invalid_name",
    onHttpApi: {
      status: 404,
      code: "not_found",
      why: "API Gateway decodes `%25` twice: `a%2540b` arrives as `a@b`, a valid name (absent here)",
    },
    onAzure: {
      status: 404,
      code: "not_found",
      why: "the Azure Functions host decodes the path once before the worker: `a%2540b` arrives as `a%40b`, that is `a@b`, a valid name (absent here)",
    },
  },
  {
    name: "read prod%253Frefresh=true (a % in the name, not a query)",
    method: "GET",
    target: "/v1/secrets/prod%253Frefresh=true",
    status: 400,
    code: "invalid_name",
  },
  {
    name: "read prod%3Fx",
    method: "GET",
    target: "/v1/secrets/prod%3Fx",
    status: 400,
    code: "invalid_name",
    onHttpApi: { status: 200, why: "API Gateway cuts the path at the `?` that `%3F` decodes to: a read of prod" },
  },
  { name: "read an absent name", method: "GET", target: "/v1/secrets/absent", status: 404, code: "not_found" },

  // Writes that must write nothing.
  {
    name: "PUT c/../d does not write d",
    method: "PUT",
    target: "/v1/secrets/c/../d",
    body: put,
    status: 400,
    code: "invalid_name",
    after: { d: "d-value", c: "c-value" },
  },
  {
    name: "PUT c/%2e%2e/d does not write d",
    method: "PUT",
    target: "/v1/secrets/c/%2e%2e/d",
    body: put,
    status: 400,
    code: "invalid_name",
  },
  {
    name: "PUT c/%2E%2E/d does not write d",
    method: "PUT",
    target: "/v1/secrets/c/%2E%2E/d",
    body: put,
    status: 400,
    code: "invalid_name",
  },
  {
    name: "PUT c%2F..%2Fd does not write d",
    method: "PUT",
    target: "/v1/secrets/c%2F..%2Fd",
    body: put,
    status: 400,
    code: "invalid_name",
  },
  { name: "PUT //x", method: "PUT", target: "/v1/secrets//x", body: put, status: 400, code: "invalid_name" },
  // The names' collection answers GET alone (Hono's `/v1/secrets/*` matches it too).
  {
    name: "PUT the collection",
    method: "PUT",
    target: "/v1/secrets",
    body: put,
    status: 405,
    code: "method_not_allowed",
    allow: ["GET", "HEAD"],
  },
  {
    name: "DELETE the collection",
    method: "DELETE",
    target: "/v1/secrets",
    status: 405,
    code: "method_not_allowed",
    allow: ["GET", "HEAD"],
  },
  { name: "DELETE the collection, no key", method: "DELETE", target: "/v1/secrets", auth: false, status: 401 },
  // A GET that carries a body (some clients send one): answered by the app as any GET.
  { name: "GET with a body, no key", method: "GET", target: "/v1/secrets/prod", body: put, auth: false, status: 401 },
  { name: "GET with a body", method: "GET", target: "/v1/secrets/prod", body: put, status: 200 },
  // A body that is not JSON: the app answers it (401 first), not a platform's body parser.
  {
    name: "PUT, a body that is not JSON, no key",
    method: "PUT",
    target: "/v1/secrets/prod",
    rawBody: "{not json",
    auth: false,
    status: 401,
    code: "unauthorized",
  },
  {
    name: "PUT, a body that is not JSON",
    method: "PUT",
    target: "/v1/secrets/prod",
    rawBody: "{not json",
    status: 400,
    code: "invalid_request",
  },
  { name: "PUT a//b", method: "PUT", target: "/v1/secrets/a//b", body: put, status: 400, code: "invalid_name" },
  { name: "PUT a;b", method: "PUT", target: "/v1/secrets/a;b", body: put, status: 400, code: "invalid_name" },
  { name: "PUT prod;x", method: "PUT", target: "/v1/secrets/prod;x", body: put, status: 400, code: "invalid_name" },
  {
    name: "PUT prod?x does not write prod",
    method: "PUT",
    target: "/v1/secrets/prod?x",
    body: put,
    status: 400,
    code: "invalid_name",
  },
  {
    name: "PUT prod? (empty query)",
    method: "PUT",
    target: "/v1/secrets/prod?",
    body: put,
    status: 400,
    code: "invalid_name",
  },
  {
    name: "PUT prod%3Fx does not write prod",
    method: "PUT",
    target: "/v1/secrets/prod%3Fx",
    body: put,
    status: 400,
    code: "invalid_name",
    onHttpApi: {
      status: 200,
      after: { prod: "written" },
      why: "API Gateway cuts the path at the `?` that `%3F` decodes to, and what follows is not in rawPath: a write of prod (were it put in the query string, the write would be refused)",
    },
  },
  {
    name: "PUT prod%23x does not write prod",
    method: "PUT",
    target: "/v1/secrets/prod%23x",
    body: put,
    status: 400,
    code: "invalid_name",
  },
  {
    name: "PUT a%252540b does not write a@b",
    method: "PUT",
    target: "/v1/secrets/a%252540b",
    body: put,
    status: 400,
    code: "invalid_name",
  },
  {
    name: "DELETE prod%25x keeps prod",
    method: "DELETE",
    target: "/v1/secrets/prod%25x",
    status: 400,
    code: "invalid_name",
  },
  {
    name: "PUT prod#x does not write prod",
    method: "PUT",
    target: "/v1/secrets/prod#x",
    body: put,
    status: 400,
    code: "invalid_name",
  },
  { name: "DELETE c/../d keeps d", method: "DELETE", target: "/v1/secrets/c/../d", status: 400, code: "invalid_name" },
  // Dot segments outside a secret's name: refused on every route, and documented on each operation.
  {
    name: "DELETE through .. into the secrets prefix keeps d",
    method: "DELETE",
    target: "/v1/x/../secrets/d",
    status: 400,
    code: "invalid_request",
    after: { d: "d-value" },
  },
  { name: "GET /metrics through ..", method: "GET", target: "/v1/../metrics", status: 400, code: "invalid_request" },
  { name: "GET /ready through ..", method: "GET", target: "/x/../ready", status: 400, code: "invalid_request" },
  {
    name: "DELETE prod?x=1 keeps prod",
    method: "DELETE",
    target: "/v1/secrets/prod?x=1",
    status: 400,
    code: "invalid_name",
  },
  { name: "DELETE prod? keeps prod", method: "DELETE", target: "/v1/secrets/prod?", status: 400, code: "invalid_name" },
  {
    name: "DELETE prod#x keeps prod",
    method: "DELETE",
    target: "/v1/secrets/prod#x",
    status: 400,
    code: "invalid_name",
  },
  {
    name: "POST through .. elsewhere",
    method: "POST",
    target: "/v1/x/../resolve",
    body: { config: {} },
    status: 400,
    code: "invalid_request",
  },

  // Writes that write.
  { name: "PUT creates", method: "PUT", target: "/v1/secrets/new", body: put, status: 201, after: { new: "written" } },
  {
    name: "PUT replaces",
    method: "PUT",
    target: "/v1/secrets/prod",
    body: put,
    status: 200,
    after: { prod: "written" },
  },
  {
    name: "PUT with %2F",
    method: "PUT",
    target: "/v1/secrets/a%2Fb",
    body: put,
    status: 201,
    after: { "a/b": "written" },
  },
  { name: "DELETE", method: "DELETE", target: "/v1/secrets/d", status: 204, after: { d: undefined } },
  { name: "DELETE an absent name", method: "DELETE", target: "/v1/secrets/absent", status: 204 },

  // Every route once, its answers checked against the served OpenAPI document (contract.test.ts).
  { name: "ready", method: "GET", target: "/ready", auth: false, status: 200 },
  { name: "metrics", method: "GET", target: "/metrics", status: 200 },
  { name: "list", method: "GET", target: "/v1/secrets?prefix=c&limit=1", status: 200 },
  {
    name: "list past the limit",
    method: "GET",
    target: "/v1/secrets?limit=1001",
    status: 400,
    code: "invalid_request",
  },
  { name: "resolve", method: "POST", target: "/v1/resolve", body: { config: { k: "os.environ/prod" } }, status: 200 },
  {
    name: "resolve an absent name",
    method: "POST",
    target: "/v1/resolve",
    body: { config: { k: "os.environ/absent" } },
    status: 422,
    code: "unresolved_refs",
  },
  { name: "encrypt", method: "POST", target: "/v1/encrypt", body: { value: "v" }, status: 200 },
  {
    name: "decrypt what is not a ciphertext",
    method: "POST",
    target: "/v1/decrypt",
    body: { ciphertext: "nope" },
    status: 400,
    code: "decrypt_failed",
  },
  // A malformed event is refused in its result (the request itself is fine).
  { name: "key events: a malformed one", method: "POST", target: "/v1/key-events", body: { nope: 1 }, status: 200 },
  {
    name: "key events: an array of one malformed",
    method: "POST",
    target: "/v1/key-events",
    body: [{ id: "e1", type: "nope" }],
    status: 200,
  },
  { name: "key events: an empty array", method: "POST", target: "/v1/key-events", body: [], status: 400 },
];
