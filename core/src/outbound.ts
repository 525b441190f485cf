/**
 * The one outbound HTTP client (SPEC section 8): every call we make ourselves (Vault, CyberArk,
 * Infisical, forwarding to LLM APIs) goes through an undici `Agent` from here, and no other module of
 * ours creates agents or sockets. Cloud SDKs keep their own transports; `outboundTlsOptions` gives
 * them the same TLS settings where their SDK takes them (AWS, Google).
 *
 * One agent per TLS configuration, shared by its callers: keep-alive 120 s (sequential calls reuse
 * one connection, and a new connection resumes the TLS session), up to 500 connections per origin,
 * 5 s to connect, TLS 1.2 at least, and 600 s as the longest wait for an answer's headers and the
 * longest silence between two chunks of its body (undici's `headersTimeout` and `bodyTimeout`: each
 * wait, not the exchange). A whole exchange is bounded by its caller: forward.ts by 600 s (SPEC
 * section 8's overall limit, `exchangeTimeoutMs`), the stores by their own deadline per try.
 * Retries stay with the callers (each store's policy): this pools, times out and applies TLS.
 *
 * No agent connects to a link-local address (169.254.0.0/16, fe80::/10, AWS's fd00:ec2:: ones):
 * the clouds' metadata services live there and hand out the function's own credentials, and no
 * store or LLM API does. A name that resolves there fails to connect (`ELINKLOCAL`); an address
 * written in a URL is checked by its caller with `isLinkLocal` (a literal address is not looked up).
 *
 * TLS settings, LiteLLM's names (`settings.ts` parses them):
 * - `ssl_verify` / `SSL_VERIFY`: `false` turns verification off; a path is a CA bundle used instead
 *   of the system's roots. `SSL_CERT_FILE`: a CA bundle too. Neither: node's roots and
 *   `NODE_EXTRA_CA_CERTS`.
 * - `ssl_certificate` / `SSL_CERTIFICATE`: a PEM holding a client certificate and its key, presented
 *   to servers that ask (mutual TLS). A caller may bring its own (Vault's cert login).
 * Files are read when their agent is made; a file that cannot be read is a start error naming it.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { BlockList, isIP } from "node:net";
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
  /** The agent's longest wait (for the headers, between two chunks); forward.ts's whole-exchange deadline. */
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
      connect: {
        timeout: OUTBOUND_LIMITS.connectTimeoutMs,
        minVersion: "TLSv1.2",
        lookup: lookupOutsideLinkLocal(),
        ...outboundTlsOptions(tls),
      },
    });
    agents.set(key, agent);
  }
  return agent;
}

const LINK_LOCAL = new BlockList();
LINK_LOCAL.addSubnet("169.254.0.0", 16, "ipv4");
LINK_LOCAL.addSubnet("fe80::", 10, "ipv6");
LINK_LOCAL.addSubnet("fd00:ec2::", 64, "ipv6"); // AWS's IPv6 metadata and pod-identity addresses

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("0.0.0.0", "ipv4"); // "this host": connecting to it reaches loopback
LOOPBACK.addAddress("::1", "ipv6");
LOOPBACK.addAddress("::", "ipv6");

/** Whether `address` (an IP address; IPv4-mapped IPv6 too) is in `list`. */
function inList(list: BlockList, address: string): boolean {
  const bare = address.replace(/^\[|\]$/g, "");
  const family = isIP(bare);
  return family !== 0 && list.check(bare, family === 4 ? "ipv4" : "ipv6");
}

/** Whether `address` is link-local, where the clouds' metadata services live. */
export function isLinkLocal(address: string): boolean {
  return inList(LINK_LOCAL, address);
}

/** Whether `address` reaches this machine: 127/8, `::1`, and the unspecified `0.0.0.0` and `::`. */
export function isLoopback(address: string): boolean {
  return inList(LOOPBACK, address);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

type Resolve = (
  hostname: string,
  options: LookupOptions & { all: true },
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

/** A `lookup` for the agents' sockets over `resolve` (dns.lookup): a name resolving to a link-local address fails. */
export function lookupOutsideLinkLocal(resolve: Resolve = dnsLookup) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, "");
      if (addresses.some((a) => isLinkLocal(a.address))) {
        const error: NodeJS.ErrnoException = new Error(`${hostname} resolves to a link-local address`);
        error.code = "ELINKLOCAL";
        return callback(error, "");
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0] as LookupAddress;
      callback(null, first.address, first.family);
    });
  };
}

/** Closes every agent (a process shutting down). */
export async function closeOutboundAgents(): Promise<void> {
  const all = [...agents.values()];
  agents.clear();
  await Promise.allSettled(all.map((a) => a.close()));
}
