/**
 * The one outbound HTTP client (SPEC section 8): every call we make ourselves (Vault, forwarding to
 * LLM APIs, the stores to come) goes through an undici `Agent` from here, and no other module of
 * ours creates agents or sockets. Cloud SDKs keep their own transports; `outboundTlsOptions` gives
 * them the same TLS settings where their SDK takes them (AWS, Google).
 *
 * One agent per TLS configuration, shared by its callers: keep-alive 120 s (sequential calls reuse
 * one connection, and a new connection resumes the TLS session), up to 500 connections per origin,
 * 5 s to connect, 600 s for a whole exchange, TLS 1.2 at least. Retries stay with the callers
 * (each store's policy): this pools, times out and applies TLS.
 *
 * TLS settings, LiteLLM's names (`settings.ts` parses them):
 * - `ssl_verify` / `SSL_VERIFY`: `false` turns verification off; a path is a CA bundle used instead
 *   of the system's roots. `SSL_CERT_FILE`: a CA bundle too. Neither: node's roots and
 *   `NODE_EXTRA_CA_CERTS`.
 * - `ssl_certificate` / `SSL_CERTIFICATE`: a PEM holding a client certificate and its key, presented
 *   to servers that ask (mutual TLS). A caller may bring its own (Vault's cert login).
 * Files are read when their agent is made; a file that cannot be read is a start error naming it.
 */
import { Agent } from "undici";
import { type OutboundTls, outboundTlsOptions } from "./outbound-tls";

/**
 * undici's `request`, for the stores that call HTTP APIs themselves (Infisical, Conjur): they
 * reach it through `import("../outbound")` when they open, so a bundle that ships them loads
 * undici only when one is used, not at its cold start.
 */
export { request } from "undici";
export type { OutboundTls };

export const OUTBOUND_LIMITS = {
  keepAliveMs: 120_000,
  connectionsPerOrigin: 500,
  connectTimeoutMs: 5_000,
  exchangeTimeoutMs: 600_000,
} as const;

const agents = new Map<string, Agent>();

/** The agent for `tls` (made on first use, then shared). */
export function outboundAgent(tls: OutboundTls = {}): Agent {
  const key = JSON.stringify([
    tls.verify !== false,
    tls.caFile,
    tls.certificateFile,
    tls.certificate ? [String(tls.certificate.cert), String(tls.certificate.key)] : undefined,
  ]);
  let agent = agents.get(key);
  if (!agent) {
    agent = new Agent({
      keepAliveTimeout: OUTBOUND_LIMITS.keepAliveMs,
      keepAliveMaxTimeout: OUTBOUND_LIMITS.keepAliveMs,
      connections: OUTBOUND_LIMITS.connectionsPerOrigin,
      headersTimeout: OUTBOUND_LIMITS.exchangeTimeoutMs,
      bodyTimeout: OUTBOUND_LIMITS.exchangeTimeoutMs,
      connect: { timeout: OUTBOUND_LIMITS.connectTimeoutMs, minVersion: "TLSv1.2", ...outboundTlsOptions(tls) },
    });
    agents.set(key, agent);
  }
  return agent;
}

/** Closes every agent (a process shutting down). */
export async function closeOutboundAgents(): Promise<void> {
  const all = [...agents.values()];
  agents.clear();
  await Promise.allSettled(all.map((a) => a.close()));
}
