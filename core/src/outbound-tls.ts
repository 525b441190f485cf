/**
 * The outbound TLS settings (LiteLLM's `ssl_verify` / `SSL_VERIFY`, `SSL_CERT_FILE`,
 * `ssl_certificate` / `SSL_CERTIFICATE`; settings.ts parses them) as node TLS options: what the
 * one outbound client (outbound.ts) applies, and what the cloud SDKs get where they take them (the
 * AWS SDK's `https.Agent`, gRPC's channel credentials). No client library here: store files import
 * it without loading one. The proxy for the outbound client (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
 * `NO_PROXY`) rides along in the same object, so that the agent made for it is one per proxy too.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { ConfigError } from "./errors";

export interface OutboundTls {
  /** `false`: no certificate verification (`ssl_verify: false`). */
  verify?: boolean;
  /** A CA bundle file used instead of the system's roots. */
  caFile?: string;
  /** A PEM file with a client certificate and its key. */
  certificateFile?: string;
  /** A client certificate and key in hand (a caller's own, e.g. Vault's cert login). */
  certificate?: { cert: string | Buffer; key: string | Buffer };
  /** The proxy of the outbound client (outbound.ts); the cloud SDKs do not take it. */
  proxy?: OutboundProxy;
}

/**
 * `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` / `NO_PROXY` as settings.ts read them (Python's urllib rules, as
 * LiteLLM's httpx takes them). Each proxy is an http:// or https:// URL, with its credentials when
 * it has some (sent as `Proxy-Authorization`, never logged).
 */
export interface OutboundProxy {
  /** The proxy for http:// targets. */
  http?: string;
  /** The proxy for https:// targets. */
  https?: string;
  /** Targets reached directly: NO_PROXY's entries, as written (outbound.ts matches them). */
  noProxy?: readonly string[];
}

/** A proxy URL as `host:port`: never its credentials. */
function proxyAddress(url: string): string {
  const { hostname, port, protocol } = new URL(url);
  return `${hostname}:${port || (protocol === "https:" ? "443" : "80")}`;
}

/** What the start logs of the proxy in use: each proxy's `host:port` and NO_PROXY's entries. */
export function proxyLogFields(proxy: OutboundProxy): Record<string, string> {
  return {
    ...(proxy.https && { https_proxy: proxyAddress(proxy.https) }),
    ...(proxy.http && { http_proxy: proxyAddress(proxy.http) }),
    ...(proxy.noProxy && { no_proxy: proxy.noProxy.join(",") }),
  };
}

/**
 * The same settings as node TLS options, for clients with a transport of their own (the AWS SDK's
 * `https.Agent`, gRPC's channel credentials): `{}` when nothing is set.
 */
export function outboundTlsOptions(tls: OutboundTls = {}): {
  rejectUnauthorized?: boolean;
  ca?: string;
  cert?: string | Buffer;
  key?: string | Buffer;
} {
  return tlsOptionsOf(tls);
}

function tlsOptionsOf(tls: OutboundTls) {
  const pem = tls.certificateFile ? read(tls.certificateFile, "ssl_certificate / SSL_CERTIFICATE") : undefined;
  const certificate = tls.certificate ?? (pem ? { cert: pem, key: pem } : undefined);
  return {
    ...(tls.verify === false && { rejectUnauthorized: false }),
    ...(tls.caFile && { ca: read(tls.caFile, "the CA bundle (ssl_verify / SSL_VERIFY / SSL_CERT_FILE)") }),
    ...(certificate && { cert: certificate.cert, key: certificate.key }),
  };
}

function read(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read ${what}: ${path} (${(err as NodeJS.ErrnoException).code})`);
  }
}

/**
 * A PEM file a store's own TLS login names (Vault's and Conjur's client certificate and key), read
 * when the store opens: one that cannot be read stops the start, naming the variable, not the path.
 */
export async function readPemFile(path: string, variable: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ConfigError(`${variable}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
}

/** What a store's settings say of a value `isBaseUrl` refuses. */
export const BASE_URL_EXPECTED = "expected an http:// or https:// URL without a query";

/** An http:// or https:// URL without a query or fragment: a base that a store's API paths are appended to. */
export function isBaseUrl(raw: string): boolean {
  try {
    const url = new URL(raw.trim());
    return (url.protocol === "https:" || url.protocol === "http:") && url.search === "" && url.hash === "";
  } catch {
    return false;
  }
}
