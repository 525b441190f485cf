/**
 * The app over node's request and response, for the runtimes that hand it those (the local server,
 * Google's functions-framework): @hono/node-server's listener, with what it refuses before the app
 * sees a request (a Host that is no host, a raw backslash in the path) answered in the API's shape
 * and logged, as every refused request is. Left to itself the library answers a bare 400, with no
 * body and no line. The first answer ready in an event-loop turn is written at once, the turn's
 * later ones together at its end (turn-end.ts). Its own subpath (`@llm-secrets/core/node-listener`):
 * the runtimes without node's server (Lambda, Azure) do not load the library.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { getRequestListener, RequestError } from "@hono/node-server";
import { describeUnexpected, type Logger } from "../log";
import { answerAtTurnEnd } from "../turn-end";
import { errorAnswer } from "./router";

type NodeListener = (incoming: IncomingMessage, outgoing: ServerResponse) => Promise<void>;

/**
 * `countError`: counts each error answered here (`llm_secrets_errors_total`), as the app's error
 * handler counts its own.
 */
export function nodeRequestListener(
  fetch: (request: Request, incoming: IncomingMessage) => Response | Promise<Response>,
  log: Logger,
  countError: (code: string) => void = () => {},
): NodeListener {
  const answer = (request: Request, env: unknown) =>
    answerAtTurnEnd(fetch(request, (env as { incoming: IncomingMessage }).incoming));
  return getRequestListener(answer, {
    // HTTP/1.0 without a Host (simple health checkers): the URL is made with this one.
    hostname: "localhost",
    errorHandler: (err) => {
      if (err instanceof RequestError) {
        log.info("request", { status: 400, code: "invalid_request", reason: err.message });
        countError("invalid_request");
        return errorAnswer("invalid_request", `malformed request: ${err.message}`);
      }
      // The app answers its own errors: this is a bug of ours (the library calls here for it too).
      log.error("unexpected error", describeUnexpected(err));
      countError("internal");
      return errorAnswer("internal", "internal error");
    },
  }) as NodeListener;
}
