// The served OpenAPI document, as a client generated from it reads it.
import { describe, expect, it } from "vitest";
import { inProcessApp } from "../helpers";

type Json = Record<string, unknown>;
interface ResponseObject {
  description: string;
  headers?: Record<string, { required?: boolean; schema?: Json }>;
  content?: Record<string, { schema?: Json }>;
}
interface Operation {
  operationId?: string;
  parameters?: { name: string; in: string; required?: boolean; schema: Json; description?: string }[];
  requestBody?: { required?: boolean; content: Record<string, { schema?: Json }> };
  responses: Record<string, ResponseObject>;
}
interface Doc {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Json> };
}

async function servedDocument() {
  const app = await inProcessApp();
  const doc = (await (await app.request("/openapi.json", { token: null })).json()) as Doc;
  const operations = Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]) => ({ path, method, operation })),
  );
  return { ...app, doc, operations };
}

describe("the OpenAPI document", () => {
  it("declares the headers every 401 and 503 carries", async () => {
    const { operations } = await servedDocument();
    let seen401 = 0;
    let seen503 = 0;
    for (const { path, method, operation } of operations) {
      const where = `${method} ${path}`;
      const unauthorized = operation.responses["401"];
      if (unauthorized) {
        seen401++;
        expect(unauthorized.headers?.["WWW-Authenticate"], where).toMatchObject({ required: true });
      }
      const unavailable = operation.responses["503"];
      if (unavailable) {
        seen503++;
        expect(unavailable.headers?.["Retry-After"], where).toMatchObject({
          required: true,
          schema: { type: "integer" },
        });
      }
    }
    expect(seen401).toBeGreaterThan(5);
    // /ready's and key events' own 503s included.
    expect(seen503).toBeGreaterThan(3);
  });
});
