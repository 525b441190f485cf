/**
 * The local server: the app over node:http, or node:https with TLS 1.2 at least, with bounded
 * connections and time per request (SPEC section 1, "serve limits").
 */
import { readFileSync } from "node:fs";
import {
  createServer as createHttpServer,
  type ServerOptions as HttpServerOptions,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { createSecureContext } from "node:tls";
import type { RawRequest } from "./app";
import { ConfigError } from "./errors";
import { errorCounter } from "./http/middleware";
import { nodeRequestListener } from "./http/node-listener";
import type { Logger } from "./log";
import { loggedPath, originForm } from "./names";
import type { Runtime } from "./runtime";
import { DEFAULT_MAX_CONNECTIONS } from "./settings";

/** Time limits of the server; tests inject short ones. */
export interface ServerTimeouts {
  /** From a connection's (or request's) start until its headers are complete: else 408 and closed. */
  headersTimeoutMs: number;
  /** From a request's start until its whole body has arrived: else 408 (or closed) and closed. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this; above load balancers' idle timeouts (60 s). */
  keepAliveTimeoutMs: number;
  /** How often node checks the two timeouts above, so they fire on time (node's default is 30 s). */
  checkIntervalMs: number;
  /** On stop, how long requests under way may take to finish before their connections are closed. */
  shutdownGraceMs: number;
}

export const DEFAULT_TIMEOUTS: Readonly<ServerTimeouts> = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 65_000,
  checkIntervalMs: 1_000,
  shutdownGraceMs: 10_000,
};

export interface TlsFiles {
  keyFile: string;
  /** The certificate, then the intermediates of its chain: all of it is sent. */
  certFile: string;
  /** Mutual TLS in: a client must present a certificate signed by this CA (refused at the handshake otherwise). */
  clientCaFile?: string;
}

export interface ServerOptions {
  host: string;
  port: number;
  tls?: TlsFiles;
  /** `LLM_SECRETS_MAX_CONNECTIONS`: past it, new connections are closed at once; served ones keep working. */
  maxConnections?: number;
  /** Overrides of DEFAULT_TIMEOUTS. */
  timeouts?: Partial<ServerTimeouts>;
}

export interface RunningServer {
  url: string;
  server: Server;
  /**
   * Reads the TLS files again and serves new connections with them (certificate rotation without a
   * restart: `serve` calls it on SIGHUP). Open connections keep theirs. Files that cannot be used
   * leave the current ones in place and reject with why.
   */
  reloadTls(): Promise<void>;
  close(): Promise<void>;
}

/** The connections whose request node's request timeout cut (answered 408 here): `rawRequestOf`'s `timedOut`. */
const timedOutSockets = new WeakSet<Duplex>();

/**
 * Requests node refuses before the app sees them get the API's JSON error format too, and a log
 * line like the app's: oversized headers (a 100 000-character name) `431 headers_too_large`,
 * malformed HTTP `400 invalid_request`, a request past its timeout `408 request_timeout`. The request line is logged
 * when node kept it (clipped; never a header). A connection reset before a whole request is not a
 * request: it gets neither an answer nor a line. A request past its timeout whose body the app was
 * reading (its answer not ended) gets its line from the app (its method, path and request_id, status 408),
 * and its audit line says `request_timeout`: not a second line here. A client that ends its side in
 * the middle of a body the app has (answered already, as a 413 on its length before the body came,
 * after which curl sends none; or still reading it) made no second request: it gets neither an
 * answer nor a line here.
 */
function answerClientError(
  log: Logger,
  countError: CountError,
  answer: (socket: Duplex) => ServerResponse | undefined,
): (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex) => void {
  return (err, socket) => {
    const answered = answer(socket);
    // The client ended its side in the middle of the body of a request the app has (answered, or
    // reading it: then the app's own line says client_closed): no second request.
    const endedInBody = err.code === "HPE_INVALID_EOF_STATE" && answered?.req.complete === false;
    if (err.code === "ECONNRESET" || !socket.writable || endedInBody) {
      socket.destroy();
      return;
    }
    const [status, code, message] =
      err.code === "HPE_HEADER_OVERFLOW"
        ? [431, "headers_too_large", "the request line and headers are larger than 16 KiB"]
        : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? [408, "request_timeout", "the request took too long to arrive"]
          : [400, "invalid_request", "malformed HTTP request"];
    const timedOut = err.code === "ERR_HTTP_REQUEST_TIMEOUT";
    if (timedOut) timedOutSockets.add(socket);
    if (!(timedOut && answered?.writableEnded === false)) {
      const line = requestLineOf(err.rawPacket);
      log.info("request", { ...line, status, code, refused_by: "http parser", reason: err.code });
    }
    countError(code);
    // Malformed bytes after pipelined requests: their answers go first (the last request's answer
    // finishes after those before it), then this one, which closes the connection.
    const queued = !timedOut && answered !== undefined && !answered.writableFinished && !answered.destroyed;
    if (!queued) return answerOnSocket(socket, status, code, message);
    const after = () => {
      answered.off("finish", after);
      answered.off("close", after);
      if (socket.writable) answerOnSocket(socket, status, code, message);
      else socket.destroy();
    };
    answered.on("finish", after);
    answered.on("close", after);
  };
}

/** Counts an error answered here, outside the app (whose error handler counts its own): `llm_secrets_errors_total`. */
type CountError = (code: string) => void;

/** An error in the API's shape written on the socket itself, which is then closed. */
function answerOnSocket(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  // Closed whole once the answer is out: `end` alone half-closes, and a peer that never closes
  // its side (nor reads) would hold its slot of maxConnections for ever.
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    () => socket.destroy(),
  );
}

/** The request line of a request node answers before the app (method, path without its query, clipped; status, code), counted. */
function refuse(
  log: Logger,
  countError: CountError,
  req: IncomingMessage,
  status: number,
  code: string,
  reason: string,
): void {
  log.info("request", { method: req.method, path: loggedPath(req.url ?? ""), status, code, reason });
  countError(code);
}

/** Method and path (without its query, clipped) from the bytes node refused, if they start a request line. */
function requestLineOf(packet: Buffer | undefined): { method?: string; path?: string } {
  if (!packet) return {};
  const m = /^([A-Z]{1,16}) ([^\s?#]{1,1000})/.exec(packet.subarray(0, 1024).toString("latin1"));
  if (!m) return {};
  return { method: m[1], path: loggedPath(m[2] as string) };
}

/**
 * This runtime's raw-request helper: node's `incoming.url` is the request target as received, its
 * headers as node parsed them, and the socket says whether the client hung up (read there, not
 * from `Request.signal`, whose AbortController node-server only builds when asked, at a measurable
 * cost per request). The socket's peer is the request's source (node keeps it once asked, so once
 * per connection).
 */
function rawRequestOf(incoming: IncomingMessage): RawRequest {
  const socket = incoming.socket;
  return {
    path: originForm(incoming.url ?? ""),
    headers: incoming.headers,
    source: socket.remoteAddress,
    clientClosed: () => socket.destroyed || !socket.writable,
    timedOut: () => timedOutSockets.has(socket),
    abort: () => socket.destroy(),
  };
}

export async function startServer(
  runtime: Pick<Runtime, "fetch" | "log" | "metrics" | "store">,
  options: ServerOptions,
): Promise<RunningServer> {
  const countError: CountError = errorCounter(runtime.metrics, runtime.store.kind);
  const handle = nodeRequestListener(
    (request, incoming) => runtime.fetch(request, rawRequestOf(incoming)),
    runtime.log,
    countError,
  );
  // Once stopping, each answer not yet begun closes its connection: a keep-alive client busy with
  // requests would otherwise hold the server open for as long as it kept asking. Each connection's
  // answer under way is known (one WeakMap write a request) for when the stop begins.
  let closing = false;
  const answering = new WeakMap<Duplex, ServerResponse>();
  const listener = (incoming: IncomingMessage, outgoing: ServerResponse) => {
    if (closing) outgoing.setHeader("connection", "close");
    else answering.set(incoming.socket, outgoing);
    return handle(incoming, outgoing);
  };
  // Every socket, TLS handshakes under way included (node's HTTP layer knows only those that
  // finished one): past the stop's grace, none is waited for. And the streams requests arrive on
  // (the TLS socket over it, with HTTPS), to find their answers under way.
  const sockets = new Set<Duplex>();
  const streams = new Set<Duplex>();
  const tracked = (set: Set<Duplex>) => (socket: Duplex) => {
    set.add(socket);
    socket.once("close", () => set.delete(socket));
  };
  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  const httpOptions: HttpServerOptions = {
    headersTimeout: timeouts.headersTimeoutMs,
    requestTimeout: timeouts.requestTimeoutMs,
    keepAliveTimeout: timeouts.keepAliveTimeoutMs,
    connectionsCheckingInterval: timeouts.checkIntervalMs,
  };
  const server = options.tls
    ? createTlsServer(options.tls, httpOptions, listener)
    : createHttpServer(httpOptions, listener);
  // node's net.Server destroys a connection accepted past this (and emits "drop"): the ones
  // already open are not touched. An idle never-speaking socket still counts, so headersTimeout
  // (which node also applies from a connection's start) is what frees the slots it holds: its 408
  // closes the connection whole (answerClientError).
  server.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  server.on(
    "clientError",
    answerClientError(runtime.log, countError, (socket) => answering.get(socket)),
  );
  // What node answers itself otherwise, outside the API's shape and unlogged: an `Expect` other
  // than 100-continue (a bare 417), and CONNECT (the socket closed without a word).
  server.on("checkExpectation", (req: IncomingMessage, res: ServerResponse) => {
    const message = "only Expect: 100-continue is taken";
    refuse(runtime.log, countError, req, 417, "invalid_request", message);
    const body = JSON.stringify({ error: { code: "invalid_request", message } });
    res.writeHead(417, {
      "content-type": "application/json",
      "cache-control": "no-store",
      "content-length": Buffer.byteLength(body),
      connection: "close",
    });
    res.end(body);
  });
  server.on("connect", (req: IncomingMessage, socket: Duplex) => {
    // 501, not 405: a 405 must name the methods its target allows (`Allow`), and CONNECT's target
    // is a host, not a resource of ours; a method not implemented is 501 (RFC 9110, 15.6.2).
    refuse(runtime.log, countError, req, 501, "not_supported", "CONNECT is not implemented here");
    answerOnSocket(socket, 501, "not_supported", "CONNECT is not implemented here");
  });
  server.on("connection", tracked(sockets));
  server.on(options.tls ? "secureConnection" : "connection", tracked(streams));

  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(
        err.code === "EADDRINUSE"
          ? new ConfigError(`${options.host}:${options.port} is already in use: pick another --port`)
          : new ConfigError(`cannot listen on ${options.host}:${options.port} (${err.code})`),
      ),
    );
    server.listen(options.port, options.host, resolve);
  });

  const { port } = server.address() as AddressInfo;
  const host = options.host.includes(":") ? `[${options.host}]` : options.host;
  const tls = options.tls;
  return {
    url: `${tls ? "https" : "http"}://${host}:${port}`,
    server,
    reloadTls: async () => {
      if (!tls) throw new ConfigError("not serving HTTPS: there is no certificate to reload");
      (server as HttpsServer).setSecureContext(secureContextOptions(tls));
      runtime.log.info("TLS key and certificate reloaded", { certFile: tls.certFile });
    },
    close: () =>
      new Promise<void>((resolve) => {
        closing = true;
        // Answers under way that have not begun close their connections; one already streaming
        // finishes, and its connection is closed once idle (looked at every 50 ms); past the grace,
        // no socket is waited for.
        for (const stream of streams) {
          const res = answering.get(stream);
          if (res && !res.headersSent) res.setHeader("connection", "close");
        }
        const idle = setInterval(() => server.closeIdleConnections(), 50);
        const force = setTimeout(() => {
          server.closeAllConnections();
          for (const socket of sockets) socket.destroy();
        }, timeouts.shutdownGraceMs);
        server.close(() => {
          clearInterval(idle);
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}

/**
 * The key, the certificate chain and (mutual TLS) the client CA, read now and checked by OpenSSL,
 * with TLS 1.2 at least: the start and every reload (`setSecureContext`) get the same minimum,
 * whatever node's own default is (`--tls-min-v1.0` lowers it).
 */
function secureContextOptions(tls: TlsFiles) {
  const options = {
    minVersion: "TLSv1.2" as const,
    key: readTlsFile(tls.keyFile, "key"),
    cert: readTlsFile(tls.certFile, "certificate"),
    ...(tls.clientCaFile && {
      ca: readTlsFile(tls.clientCaFile, "client CA (LLM_SECRETS_CLIENT_CA)"),
      requestCert: true,
      rejectUnauthorized: true,
    }),
  };
  try {
    createSecureContext(options); // fails here, with OpenSSL's reason, rather than on a handshake
  } catch (err) {
    // OpenSSL's reason only ("no start line", "key values mismatch"): never the file's contents.
    const reason = (err as { reason?: string }).reason ?? (err as { code?: string }).code ?? "invalid";
    throw new ConfigError(`the TLS key or certificate cannot be used (${reason})`);
  }
  return options;
}

/** Reads and checks the TLS files as the start will (a ConfigError naming what is wrong), serving nothing. */
export function checkTlsFiles(tls: TlsFiles): void {
  secureContextOptions(tls);
}

function createTlsServer(
  tls: TlsFiles,
  httpOptions: HttpServerOptions,
  listener: (incoming: IncomingMessage, outgoing: ServerResponse) => Promise<void>,
): Server {
  return createHttpsServer({ ...httpOptions, ...secureContextOptions(tls) }, listener);
}

function readTlsFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`cannot read the TLS ${what} file ${path} (${(err as NodeJS.ErrnoException).code})`);
  }
}
