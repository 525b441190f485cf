// Fuzzing every route in-process (fast-check, fixed seed): whatever arrives, the answer is a 2xx or a
// 4xx with a stable code (never a 5xx), a refused request writes nothing, and no value reaches a log.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ERROR_STATUS } from "../../core/src/errors";
import { createLogger } from "../../core/src/log";
import { createRuntime } from "../../core/src/runtime";
import { memoryStore } from "../../core/src/stores/memory";
import { expectNoValueIn, newKey } from "../helpers";

const SEED = 20261125;
const RUNS = 5000;
const CODES = new Set(Object.keys(ERROR_STATUS));

async function setup() {
  const masterKey = newKey();
  const logs: string[] = [];
  const runtime = await createRuntime({
    stores: [memoryStore],
    settings: {
      env: {
        LITELLM_MASTER_KEY: masterKey,
        LLM_SECRETS_CONFIG: "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n",
      },
    },
    log: createLogger((line) => logs.push(line)),
    audit: () => {}, // audit lines are not this test's subject
  });
  await runtime.manager.put("KEEP", "kept-value-0123456789");
  const writes = () =>
    runtime.metrics.count("llm_secrets_backend_calls_total", { store: "memory", op: "put" }) +
    runtime.metrics.count("llm_secrets_backend_calls_total", { store: "memory", op: "delete" });
  return { runtime, masterKey, logs, writes };
}

/** Path pieces a prober would try: dots, encodings, separators, control and wide characters. */
const piece = fc.oneof(
  fc.constantFrom(
    "..",
    ".",
    "%2e%2e",
    "%2E.",
    "%2F",
    "%00",
    "%0a",
    "%ff",
    "%",
    "//",
    ";",
    "?",
    "#",
    "?x=1",
    "#y",
    "a",
    "KEEP",
  ),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: "grapheme", maxLength: 6 }),
  fc.stringMatching(/^[A-Za-z0-9_.@+=/-]{1,20}$/),
);
const ROUTES = ["/v1/secrets/", "/v1/resolve", "/v1/encrypt", "/v1/decrypt", "/health", "/openapi.json", "/metrics"];
/** Targets on one route: the route itself, or with pieces after it. */
const targetOn = (route: string) => fc.array(piece, { maxLength: 4 }).map((pieces) => route + pieces.join(""));
const method = fc.constantFrom("GET", "PUT", "DELETE", "POST", "PATCH", "HEAD", "OPTIONS");
const body = fc.oneof(
  fc.constant(undefined),
  fc.json({ maxDepth: 4 }),
  fc.string({ maxLength: 40 }),
  fc.record({ value: fc.string({ maxLength: 30 }) }, { requiredKeys: [] }),
  fc.record({ config: fc.jsonValue({ maxDepth: 3 }) }),
  fc.record({ ciphertext: fc.string({ maxLength: 60 }) }),
  fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString("latin1")),
);
const auth = fc.constantFrom("good", "none", "wrong", "api-key", "basic");

describe("fuzzing the API (fixed seed)", () => {
  it.each(ROUTES)(
    `answers ${RUNS} arbitrary requests on %s with a 2xx or a stable 4xx, writing nothing when refused`,
    async (route) => {
      const { runtime, masterKey, logs, writes } = await setup();
      let counter = 0;
      const values: string[] = [];
      await fc.assert(
        fc.asyncProperty(method, targetOn(route), body, auth, async (m, path, b, a) => {
          let request: Request;
          const headers = new Headers();
          if (a === "good") headers.set("authorization", `Bearer ${masterKey}`);
          if (a === "wrong") headers.set("authorization", `Bearer ${masterKey}x`);
          if (a === "api-key") headers.set("x-litellm-api-key", masterKey);
          if (a === "basic") headers.set("authorization", "Basic Zm9vOmJhcg==");
          // Values carry a marker, so a leak into the logs can be searched for.
          let sent = b;
          if (b !== null && typeof b === "object" && "value" in b && typeof b.value === "string") {
            const marked = `fuzz-value-${++counter}-${b.value}`;
            values.push(marked);
            sent = { ...b, value: marked };
          }
          const payload = sent === undefined ? undefined : typeof sent === "string" ? sent : JSON.stringify(sent);
          try {
            request = new Request(`http://localhost${path}`, {
              method: m,
              headers,
              body: m === "GET" || m === "HEAD" ? undefined : payload,
            });
          } catch {
            return; // no runtime could produce this request
          }
          const before = writes();
          const res = await runtime.fetch(request, { path });
          const text = await res.text();
          expect(res.status, `${m} ${path}`).toBeLessThan(500);
          if (res.status >= 400 && m !== "HEAD") {
            const code = (JSON.parse(text) as { error: { code: string } }).error.code;
            expect(CODES.has(code), code).toBe(true);
            expect(writes(), `${m} ${path} was refused but wrote`).toBe(before);
          }
        }),
        { seed: SEED, numRuns: RUNS },
      );
      expectNoValueIn(
        logs,
        values.filter((v) => v.length >= 14),
      );
      await runtime.close();
    },
  );
});
