/**
 * An answer checked against the OpenAPI document the app serves, as a generated client reads it:
 * the operation of the request's path and method must document the answer's status (or a
 * `default`), its content type, its body (validated with Ajv against the JSON Schema 2020-12 the
 * document holds) and the headers it marks as required. An answer of no documented operation (an
 * unknown path's 404, a wrong method's 405) must be in the documented error shape.
 */
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020";

type Json = Record<string, unknown>;

interface MediaType {
  schema?: Json;
}
interface ResponseObject {
  description: string;
  headers?: Record<string, { required?: boolean; schema?: Json }>;
  content?: Record<string, MediaType>;
}
interface Operation {
  operationId?: string;
  parameters?: { name: string; in: string; required?: boolean; schema: Json; description?: string }[];
  requestBody?: { required?: boolean; content: Record<string, MediaType> };
  responses: Record<string, ResponseObject>;
}
export interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Json> };
}

export interface CheckedAnswer {
  status: number;
  /** By lower-case name. */
  headers: Record<string, string>;
  body: string;
}

/** The checker of a document: `check` gives the answer's problems, none when it is as documented. */
export function openApiChecker(doc: OpenApiDocument) {
  // `strict: false`: the schemas are compiled under a root that also holds the document's
  // `components` (for their `$ref`s), which is no JSON Schema keyword.
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  const compiled = new Map<Json, ValidateFunction>();
  const validator = (schema: Json) => {
    let validate = compiled.get(schema);
    if (!validate) {
      validate = ajv.compile({ components: doc.components, ...schema });
      compiled.set(schema, validate);
    }
    return validate;
  };
  const templates = Object.keys(doc.paths).map((template) => ({ template, pattern: patternOf(template) }));
  const errorSchema = { $ref: "#/components/schemas/Error" };

  /** The path template a request target is routed to: the path as sent, else as a URL parser normalises it. */
  const templateOf = (target: string): string | undefined => {
    const raw = target.split(/[?#]/)[0] as string;
    const normalised = new URL(target, "http://localhost").pathname;
    // `/v1/forward/m?q` is forward's too: its `{path}` may be empty, its slash included.
    for (const path of [raw, normalised, `${raw}/`]) {
      const found = templates.find((t) => t.pattern.test(path));
      if (found) return found.template;
    }
    return undefined;
  };

  return {
    /** The operation documented for a request, if any (HEAD falls back on GET, as the server answers it). */
    operationOf(method: string, target: string): { template: string; operation: Operation } | undefined {
      const template = templateOf(target);
      if (!template) return undefined;
      const item = doc.paths[template] as Record<string, Operation>;
      const m = method.toLowerCase();
      const operation = item[m] ?? (m === "head" ? item.get : undefined);
      return operation ? { template, operation } : undefined;
    },

    check(method: string, target: string, answer: CheckedAnswer): string[] {
      const found = this.operationOf(method, target);
      const head = method.toUpperCase() === "HEAD";
      if (!found) {
        // No operation is documented: only an error in the documented shape can be answered.
        if (answer.status < 400)
          return [`${answer.status} answered to ${method} ${target}, which no operation documents`];
        return head ? [] : bodyProblems(answer, { "application/json": { schema: errorSchema } });
      }
      const where = `${method} ${found.template} ${answer.status}`;
      const response = found.operation.responses[String(answer.status)] ?? found.operation.responses.default;
      if (!response) return [`${where}: the status is not documented`];
      const problems: string[] = [];
      for (const [name, declared] of Object.entries(response.headers ?? {})) {
        const value = answer.headers[name.toLowerCase()];
        if (value === undefined) {
          if (declared.required) problems.push(`${where}: the required header ${name} is missing`);
          continue;
        }
        if (declared.schema && !headerMatches(declared.schema, value)) {
          problems.push(`${where}: header ${name}: ${JSON.stringify(value)} is not ${JSON.stringify(declared.schema)}`);
        }
      }
      if (!head) problems.push(...bodyProblems(answer, response.content).map((p) => `${where}: ${p}`));
      return problems;
    },
  };

  function headerMatches(schema: Json, value: string): boolean {
    // A header is text: a number's schema is checked on the number it spells.
    if (schema.type === "integer" || schema.type === "number") {
      const n = /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : Number.NaN;
      return !Number.isNaN(n) && validator(schema)(n);
    }
    return validator(schema)(value);
  }

  function bodyProblems(answer: CheckedAnswer, content: Record<string, MediaType> | undefined): string[] {
    if (!content) return answer.body === "" ? [] : ["a body where none is documented"];
    const type = mediaTypeOf(answer.headers["content-type"]);
    const key = Object.keys(content).find((k) => mediaMatches(mediaTypeOf(k), type));
    if (key === undefined) {
      return [`content type ${JSON.stringify(type)} is not one of ${Object.keys(content).join(", ")}`];
    }
    const schema = content[key]?.schema;
    if (!schema) return [];
    let body: unknown;
    try {
      body = JSON.parse(answer.body);
    } catch {
      return [`the body is not JSON: ${JSON.stringify(answer.body.slice(0, 200))}`];
    }
    const validate = validator(schema);
    if (validate(body)) return [];
    return (validate.errors ?? []).map(
      (e) => `body${e.instancePath} ${e.message} ${JSON.stringify(e.params)} in ${JSON.stringify(body).slice(0, 300)}`,
    );
  }
}

/** A template's paths: `{x}` one segment, a last `{x}` the rest (slashes included, maybe empty for forward's). */
function patternOf(template: string): RegExp {
  const parts = template.split(/(\{\w+\})/);
  return new RegExp(
    `^${parts
      .map((part, i) =>
        part.startsWith("{") ? (i === parts.length - 2 ? ".*" : "[^/]+") : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
      )
      .join("")}$`,
  );
}

function mediaTypeOf(header: string | undefined): string {
  return (header ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

function mediaMatches(documented: string, answered: string): boolean {
  if (documented === "*/*") return answered !== "";
  if (documented.endsWith("/*")) return answered.startsWith(documented.slice(0, -1));
  return documented === answered;
}
