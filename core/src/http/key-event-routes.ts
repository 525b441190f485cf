/**
 * `POST /v1/key-events`: the queue path's logic over HTTP (key-events.ts), for a gateway that calls
 * us directly. Events are applied in order, each on its own; the answer lists a result per event.
 * `200` when none failed, else `503` with `Retry-After` (sending the same events again is safe:
 * applied ones are superseded). Each event gets its audit line (audit.ts).
 */
import { KeyEventsDocument, KeyEventsRequest, KeyEventsResponse } from "../api-schemas";
import { keyEventEntry } from "../audit";
import { retryAfterSeconds } from "../errors";
import type { KeyEventResult } from "../key-events";
import { json, type Router } from "./router";

export function keyEventRoutes(router: Router, apply: (event: unknown) => Promise<KeyEventResult>): void {
  router.route(
    {
      method: "post",
      path: "/v1/key-events",
      operationId: "applyKeyEvents",
      summary: "Apply virtual-key events (created, regenerated, deleted): one, or an array of up to 100",
      auth: true,
      body: KeyEventsRequest,
      documentedBody: KeyEventsDocument,
      // A failed event is a 503 with the results (below), never an error body.
      errors: ["invalid_request", "payload_too_large"],
      responses: {
        200: { description: "A result per event; none failed", schema: KeyEventsResponse },
        503: { description: "A result per event; some failed and may be sent again", schema: KeyEventsResponse },
      },
      // A refused request (a wrong key, a malformed body) gets one line; an accepted one a line per event.
      audit: { action: "key_event", refusalsOnly: true },
    },
    async (c, { body }) => {
      const results: Omit<KeyEventResult, "malformed">[] = [];
      for (const event of Array.isArray(body) ? body : [body]) {
        const result = await apply(event);
        // Each event's line says which event it is (its id, its team): a batch's lines share the request's id.
        router.auditAs(c, (requestId, caller) => keyEventEntry(result, event, requestId, caller));
        // `malformed` is for the queues (Pub/Sub's acknowledgement), not the API's answer: a
        // client generated from KeyEventsResponse (no other properties) refuses it.
        const { malformed: _, ...answered } = result;
        results.push(answered);
      }
      const failed = results.filter((r) => r.status === "failed");
      if (failed.length === 0) return json({ results });
      const retryAfter = retryAfterSeconds(Math.max(...failed.map((r) => r.retryAfter ?? 1)));
      return json({ results }, 503, { "retry-after": String(retryAfter) });
    },
  );
}
