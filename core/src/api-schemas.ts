/**
 * The HTTP API's request and response shapes. The app validates with these schemas and the
 * OpenAPI document is generated from them: there is no second copy.
 */

import * as z from "zod/mini";
import { isCiphertextShaped } from "./crypto";
import { ERROR_STATUS, type ErrorCode } from "./errors";

const MAX_DESCRIPTION = 2048;
const MAX_TAGS = 50;
const TAG_KEY = "a tag's key is 1 to 128 characters";

export const SecretPutRequest = z.strictObject({
  // Several cloud stores refuse an empty value: so does the API, for every store.
  value: z.string().check(z.minLength(1, "the value is empty")),
  description: z.optional(z.string().check(z.maxLength(MAX_DESCRIPTION))),
  tags: z.optional(
    z
      .record(
        z.string().check(z.minLength(1, TAG_KEY), z.maxLength(128, TAG_KEY)),
        z.string().check(z.maxLength(256, "a tag's value is at most 256 characters")),
      )
      // The refinement validates; the metadata is what the OpenAPI document says of it (no zod check writes it).
      .check(
        z.refine((tags) => Object.keys(tags).length <= MAX_TAGS, `at most ${MAX_TAGS} tags`),
        z.meta({ maxProperties: MAX_TAGS }),
      ),
  ),
  // A gateway's regeneration to a new name (LiteLLM's async_rotate_secret) that the store maps onto
  // the old name's secret (Azure: team_a and team-a) would otherwise be refused as name_conflict.
  replaces: z.optional(
    z.string().check(
      z.minLength(1),
      z.maxLength(256),
      z.meta({
        description:
          "The name this write renames: when the store keeps it on this name's backend key (Azure folds case and _ to -, Google . to -), the write takes that secret over and the old name then reads as not found; elsewhere it changes nothing, and the caller deletes the old name as usual. A valid name other than this one, that this caller may write or delete (else refused, nothing written)",
      }),
    ),
  ),
});

export const SecretQuery = z.strictObject({
  refresh: z.optional(z.enum(["true", "false"])),
  /** Read where this team's `team_settings` keep its secrets (the general settings if it has none). */
  team_id: z.optional(z.string().check(z.minLength(1), z.maxLength(256))),
});

/** `GET /v1/secrets`: a page of names. */
export const MAX_LIST_LIMIT = 1000;
export const ListQuery = z.strictObject({
  prefix: z.optional(z.string().check(z.maxLength(512))),
  // The pattern is the whole check (1 to 1000), so the OpenAPI document states the limit too.
  limit: z.optional(
    z.pipe(
      z.string().check(z.regex(/^(?:[1-9]\d{0,2}|1000)$/, `a whole number from 1 to ${MAX_LIST_LIMIT}`)),
      z.transform(Number),
    ),
  ),
  cursor: z.optional(z.string().check(z.minLength(1), z.maxLength(4096))),
});
export const ListResponse = z.object({
  names: z.array(z.string()),
  /** Present when there may be more names: send it back as `cursor`. */
  next_cursor: z.optional(z.string()),
});

export const SecretResponse = z.object({ name: z.string(), value: z.string(), stale: z.boolean() });
export const SecretPutResponse = z.object({ name: z.string(), created: z.boolean() });

export const ResolveRequest = z.strictObject({
  config: z.unknown().check(z.refine((v) => v !== undefined, "config is required")),
});
export const ResolveResponse = z.object({ config: z.unknown() });

export const EncryptRequest = z.strictObject({ value: z.string() });
export const EncryptResponse = z.object({ ciphertext: z.string() });
export const DecryptRequest = z.strictObject({
  ciphertext: z.string().check(z.minLength(1, "the ciphertext is empty")),
});
export const DecryptResponse = z.object({ value: z.string() });

export const HealthResponse = z.object({
  status: z.literal("ok"),
  store: z.string(),
  version: z.string(),
});

export const ReadyResponse = z.object({
  status: z.literal("ready"),
  store: z.string(),
  /** How long the store took to answer the probe. */
  ms: z.number(),
});

export const ErrorResponse = z.object({
  error: z.object({
    code: z.enum(Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]]),
    message: z.string(),
    issues: z.optional(z.array(z.object({ path: z.string(), message: z.string() }))),
    names: z.optional(z.array(z.string())),
    reasons: z.optional(z.record(z.string(), z.string())),
  }),
});

const text = z.string().check(z.minLength(1), z.maxLength(512));
const optionalText = z.nullish(text);
const tokenHash = z.nullish(z.string().check(z.regex(/^[0-9a-f]{64}$/, "expected a SHA-256 hex digest")));

/**
 * One key event (SPEC section 7), as a queue message or an item of `POST /v1/key-events`. Each is
 * validated on its own (key-events.ts), so one malformed event is refused and the others applied:
 * the request's own schema (below) takes any JSON, and the document shows this one.
 */
export const KeyEventSchema = z
  .object({
    id: text,
    type: z.enum(["key.created", "key.regenerated", "key.deleted"]),
    occurred_at: z.iso.datetime({ offset: true }),
    key_alias: optionalText,
    token_hash: tokenHash,
    key: z.nullish(z.string().check(z.minLength(1))),
    key_ciphertext: z.nullish(
      z
        .string()
        .check(
          z.refine(isCiphertextShaped, "is not a LiteLLM ciphertext (padded base64 of a nonce, a tag and a body)"),
        ),
    ),
    previous_key_alias: optionalText,
    previous_token_hash: tokenHash,
    team_id: optionalText,
  })
  .check(
    z.meta({
      description:
        "A virtual key created, regenerated or deleted. It needs key_alias or token_hash; a created or regenerated event needs exactly one of key and key_ciphertext (a LiteLLM ciphertext under the salt key)",
    }),
    z.refine((e) => Boolean(e.key_alias || e.token_hash), {
      message: "an event needs key_alias or token_hash",
      path: ["key_alias"],
    }),
    z.refine((e) => e.type === "key.deleted" || Boolean(e.key) !== Boolean(e.key_ciphertext), {
      message: "created and regenerated events need exactly one of key and key_ciphertext",
      path: ["key"],
    }),
  );

/** `POST /v1/key-events`: one event or up to 100 in order; each is validated on its own (key-events.ts). */
export const MAX_KEY_EVENTS_PER_REQUEST = 100;
export const KeyEventsRequest = z
  // The metadata is what the OpenAPI document says of the array; the refinement below validates it
  // (a length check in the union would answer an array of 101 with the union's message, not this one).
  .union(
    [
      z.array(z.unknown()).check(z.meta({ minItems: 1, maxItems: MAX_KEY_EVENTS_PER_REQUEST })),
      z.record(z.string(), z.unknown()),
    ],
    {
      error: "expected one key event (an object) or an array of them",
    },
  )
  .check(
    z.refine((body) => !Array.isArray(body) || (body.length >= 1 && body.length <= MAX_KEY_EVENTS_PER_REQUEST), {
      error: `an array of 1 to ${MAX_KEY_EVENTS_PER_REQUEST} key events`,
    }),
  );
/** What the document shows of `POST /v1/key-events`'s body: the events as each is validated. */
export const KeyEventsDocument = z.union([
  z.array(KeyEventSchema).check(z.minLength(1), z.maxLength(MAX_KEY_EVENTS_PER_REQUEST)),
  KeyEventSchema,
]);
export const KeyEventsResponse = z.object({
  results: z.array(
    z.object({
      id: z.optional(z.string()),
      status: z.enum(["applied", "superseded", "refused", "failed"]),
      names: z.optional(z.record(z.string(), z.string())),
      code: z.optional(z.string()),
      message: z.optional(z.string()),
      retryAfter: z.optional(z.number()),
    }),
  ),
});
