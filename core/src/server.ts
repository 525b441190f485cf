/**
 * The local server: the app over node:http, or node:https with TLS 1.2 at least.
 */
import { readFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import type { RawRequest } from "./app";
import { ConfigError } from "./errors";
import type { Runtime } from "./runtime";

export interface ServerOptions {
  host: string;
  port: number;
  tls?: { keyFile: string; certFile: string };
}

export interface RunningServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

/** This runtime's raw-request helper: node's `incoming.url` is the request target as received. */
export function rawRequestOf(incoming: IncomingMessage): RawRequest {
  return { path: incoming.url ?? "" };
}

export async function startServer(runtime: Pick<Runtime, "fetch">, options: ServerOptions): Promise<RunningServer> {
  const listener = getRequestListener((request, env) =>
    runtime.fetch(request, rawRequestOf((env as { incoming: IncomingMessage }).incoming)),
  );
  const server = options.tls ? createTlsServer(options.tls, listener) : createHttpServer(listener);
  server.keepAliveTimeout = 65_000;

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
  return {
    url: `${options.tls ? "https" : "http"}://${host}:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

function createTlsServer(
  tls: { keyFile: string; certFile: string },
  listener: ReturnType<typeof getRequestListener>,
): Server {
  const key = readTlsFile(tls.keyFile, "key");
  const cert = readTlsFile(tls.certFile, "certificate");
  try {
    return createHttpsServer({ key, cert, minVersion: "TLSv1.2" }, listener);
  } catch (err) {
    // OpenSSL's reason only ("no start line", "key values mismatch"): never the file's contents.
    const reason = (err as { reason?: string }).reason ?? (err as { code?: string }).code ?? "invalid";
    throw new ConfigError(`the TLS key or certificate cannot be used (${reason})`);
  }
}

function readTlsFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`cannot read the TLS ${what} file ${path} (${(err as NodeJS.ErrnoException).code})`);
  }
}
