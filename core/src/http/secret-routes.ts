/**
 * `/v1/secrets/{name}`, `/v1/secrets` (names) and `/v1/resolve`: every read and write goes through
 * the `SecretManager`, and each is audited (audit.ts).
 */
import {
  ListQuery,
  ListResponse,
  ResolveRequest,
  ResolveResponse,
  SecretPutRequest,
  SecretPutResponse,
  SecretQuery,
  SecretResponse,
} from "../api-schemas";
import type { ErrorCode } from "../errors";
import { nameFromPath } from "../names";
import type { SecretManager } from "../secret-manager";
import { STORE_FAILURES } from "../store-errors";
import { SECRETS_PREFIX } from "./middleware";
import { answer, type Ctx, json, queryParam, type Router } from "./router";

/** What a store's read or write may answer. */
const STORE_ERRORS: ErrorCode[] = [...STORE_FAILURES];
const ERRORS: ErrorCode[] = ["invalid_name", "not_hosted", ...STORE_ERRORS];
/**
 * What a user's own store may answer from a read (custom.ts passes its typed errors through): a
 * name that maps onto another's key, a store that cannot read.
 */
const CUSTOM_READ_ERRORS: ErrorCode[] = ["name_conflict", "not_supported"];
/** What a read of a secret can answer (`GET /v1/secrets/{name}`, and forward's read of its key). */
export const SECRET_READ_ERRORS: ErrorCode[] = [...ERRORS, ...CUSTOM_READ_ERRORS, "write_only", "not_found"];

/** The name from the path as it arrived (admission made sure the runtime passed it). */
const secretName = (c: Ctx) => nameFromPath(c.env.raw?.path ?? "", SECRETS_PREFIX);

export function secretRoutes(router: Router, manager: SecretManager): void {
  router.route(
    {
      method: "get",
      path: "/v1/secrets",
      operationId: "listSecrets",
      summary:
        "List the names the store holds and this API serves (never values), a page at a time: ?prefix=P&limit=N (default 100, at most 1000)&cursor=C (next_cursor of the previous page)",
      auth: true,
      query: ListQuery,
      errors: ["write_only", "not_supported", ...STORE_ERRORS],
      responses: { 200: { description: "A page of names", schema: ListResponse } },
      audit: { action: "list", name: (c) => c.req.query("prefix") },
    },
    async (_, { query }) => {
      const page = await manager.list({ prefix: query.prefix, limit: query.limit ?? 100, cursor: query.cursor });
      return json(page.cursor === undefined ? { names: page.names } : { names: page.names, next_cursor: page.cursor });
    },
  );

  const path = "/v1/secrets/{name}";
  const name = secretName;
  router.route(
    {
      method: "get",
      path,
      operationId: "getSecret",
      summary:
        "Read a secret (through the cache; ?refresh=true bypasses it; ?team_id=T reads with that team's settings)",
      auth: true,
      query: SecretQuery,
      errors: SECRET_READ_ERRORS,
      responses: { 200: { description: "The value", schema: SecretResponse } },
      // With team_id the same name is read where that team's settings say (a Vault namespace, mount
      // or field: another secret): the line says which team.
      audit: { action: "read", name, team: (c) => queryParam(c, "team_id") },
    },
    (c, { query }) => {
      // A cached value is answered at once, without a promise (manager.read).
      const read = manager.read(secretName(c), { refresh: query.refresh === "true", team: query.team_id });
      return read instanceof Promise ? read.then((r) => json(r)) : json(read);
    },
  );

  router.route(
    {
      method: "put",
      path,
      operationId: "putSecret",
      summary: "Create or replace a secret",
      auth: true,
      body: SecretPutRequest,
      errors: [...ERRORS, "read_only", "name_conflict", "not_supported"],
      responses: {
        200: { description: "Replaced", schema: SecretPutResponse },
        201: { description: "Created", schema: SecretPutResponse },
      },
      audit: { action: "write", name },
    },
    async (c, { body }) => {
      const meta = { description: body.description, tags: body.tags };
      // Its audit line names it: a rename ends that name, as its delete would (refused, what was tried).
      if (body.replaces !== undefined) c.env.replaces = body.replaces;
      const { name, created } = await manager.put(secretName(c), body.value, meta, undefined, {
        ...(body.replaces !== undefined && { replaces: body.replaces }),
      });
      return json({ name, created }, created ? 201 : 200);
    },
  );

  router.route(
    {
      method: "delete",
      path,
      operationId: "deleteSecret",
      summary: "Delete a secret (also when absent)",
      auth: true,
      errors: [...ERRORS, "read_only", "name_conflict", "not_supported"],
      responses: { 204: { description: "Deleted" } },
      audit: { action: "delete", name },
    },
    async (c) => {
      await manager.delete(secretName(c));
      return answer(null, 204);
    },
  );

  router.route(
    {
      method: "post",
      path: "/v1/resolve",
      operationId: "resolve",
      summary: "Replace every os.environ/NAME string in a config with the stored value",
      auth: true,
      body: ResolveRequest,
      // A name outside hosted_keys, or not a name, is a reason in unresolved_refs, not its own error.
      errors: [...STORE_ERRORS, ...CUSTOM_READ_ERRORS, "write_only", "unresolved_refs"],
      responses: { 200: { description: "The config with refs replaced", schema: ResolveResponse } },
      audit: { action: "resolve" },
    },
    async (_, { body }) => json({ config: await manager.resolve(body.config) }),
  );
}
