/**
 * The one outbound HTTP client (SPEC section 8): every call we make ourselves (Vault, CyberArk,
 * Infisical, forwarding to LLM APIs) goes through an undici `Agent` from here, and no other module of
 * ours creates agents or sockets. Cloud SDKs keep their own transports; `outboundTlsOptions` gives
 * them the same TLS settings where their SDK takes them (AWS, Google).
 *
 * One agent per TLS configuration, shared by its callers: keep-alive 120 s (sequential calls reuse
 * one connection, and a new connection resumes the TLS session, also once the origin's connections
 * have all closed: see `connectorOf`), up to 500 connections per origin,
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
 *
 * The proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read by `settings.ts` as LiteLLM's httpx reads
 * them): with one set, the agent is a `ProxiedAgent`. An https:// target is reached through a CONNECT
 * tunnel, and its TLS (verification, CA bundle, client certificate, TLS 1.2 at least) is checked end
 * to end as without a proxy; an http:// target's request goes to the proxy in absolute form, as
 * httpx forwards it. The proxy's credentials, from its URL, go as `Proxy-Authorization` (undici's
 * `ProxyAgent`). Without a proxy variable, the agent is the plain one above. Through a proxy, the
 * proxy resolves the target's name, so the link-local refusal below holds for direct connections
 * (and for addresses written in a URL, checked by callers); and a tunnel's TLS sessions are undici's
 * own cache, by host name (an origin's connector is not ours to keep there).
 *
 * A store's own client certificate for a TLS login (Vault's `HCP_VAULT_CLIENT_CERT`, Conjur's
 * `CYBERARK_CLIENT_CERT`) is in files a rotation tool replaces before the old certificate expires
 * (short-lived certificates: cert-manager, Vault's PKI, an agent's template). LiteLLM builds a new
 * client with `cert=` at each login, so it picks the new pair up; a pair read once would be refused
 * from its expiry to a restart. `ClientCertificateAgent` is that store's agent: at each login
 * (`refresh`) it looks at the files (their size and times, a stat each), reads them when they
 * changed, and when they hold another pair that forms a key pair, moves to a new agent with it and
 * closes the one it leaves once that one's calls are done. Files that cannot be read, or a pair
 * that does not match (a rotation half written), keep the pair in use, with a warning naming the
 * variable; the next login looks again. These agents are the store's own (not shared by TLS
 * configuration), so one per store lives, however many rotations.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { readFile, stat } from "node:fs/promises";
import { BlockList, isIP } from "node:net";
import { createSecureContext, type TLSSocket } from "node:tls";
import { Agent, buildConnector, type Dispatcher, Pool, ProxyAgent } from "undici";
import type { Logger } from "./log";
import { type OutboundProxy, type OutboundTls, outboundTlsOptions, readPemFile } from "./outbound-tls";

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
    tls.proxy ? [tls.proxy.http, tls.proxy.https, tls.proxy.noProxy] : undefined,
  ]);
  let agent = agents.get(key);
  if (!agent) {
    agent = newAgent(tls);
    agents.set(key, agent);
  }
  return agent;
}

/** The pools' options: to the targets, and to a proxy. */
const POOL_OPTIONS = {
  keepAliveTimeout: OUTBOUND_LIMITS.keepAliveMs,
  keepAliveMaxTimeout: OUTBOUND_LIMITS.keepAliveMs,
  connections: OUTBOUND_LIMITS.connectionsPerOrigin,
  headersTimeout: OUTBOUND_LIMITS.exchangeTimeoutMs,
  bodyTimeout: OUTBOUND_LIMITS.exchangeTimeoutMs,
} as const;

function newAgent(tls: OutboundTls): Agent {
  const options = {
    ...POOL_OPTIONS,
    connect: connectorOf({
      timeout: OUTBOUND_LIMITS.connectTimeoutMs,
      minVersion: "TLSv1.2",
      lookup: lookupOutsideLinkLocal(),
      ...outboundTlsOptions(tls),
    }),
  };
  return tls.proxy?.http || tls.proxy?.https ? new ProxiedAgent(options, tls, tls.proxy) : new Agent(options);
}

/**
 * The agent with a proxy: itself the direct one (NO_PROXY's targets, and a scheme that has no
 * proxy: `HTTP_PROXY` alone leaves https:// targets direct, as in httpx), each other call sent on
 * to the scheme's `ProxyAgent`. An `Agent` still, for its callers; closing it closes all.
 */
class ProxiedAgent extends Agent {
  readonly #noProxy: readonly string[];
  readonly #http: ProxyAgent | undefined;
  readonly #https: ProxyAgent | undefined;

  constructor(options: Agent.Options, tls: OutboundTls, proxy: OutboundProxy) {
    super(options);
    this.#noProxy = proxy.noProxy ?? [];
    this.#http = proxy.http ? proxyAgentOf(proxy.http, tls) : undefined;
    this.#https = !proxy.https ? undefined : proxy.https === proxy.http ? this.#http : proxyAgentOf(proxy.https, tls);
  }

  override dispatch(options: Agent.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = new URL(String(options.origin));
    const proxy = origin.protocol === "https:" ? this.#https : this.#http;
    if (!proxy || bypassesProxy(this.#noProxy, origin)) return super.dispatch(options, handler);
    // undici's ProxyAgent writes `host` into a plain headers object it is given: a caller sending
    // the same headers again (Vault's redirect to its active node) would send the first host.
    const { headers } = options;
    const own = Array.isArray(headers) ? [...headers] : isPlainHeaders(headers) ? { ...headers } : headers;
    return proxy.dispatch({ ...options, headers: own }, handler);
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    const proxies = new Set([this.#http, this.#https].filter((p) => p !== undefined));
    // undici's promise form calls `close(callback)` again: the callback form is the one that closes.
    const own = new Promise<void>((resolve) => super.close(() => resolve()));
    const closed = Promise.all([own, ...[...proxies].map((p) => p.close())]).then(() => {});
    if (!callback) return closed;
    closed.then(callback, callback);
  }
}

/** Headers given as a plain object (not an array, not an iterable such as `Headers`). */
function isPlainHeaders(headers: unknown): headers is Record<string, string | string[] | undefined> {
  return typeof headers === "object" && headers !== null && !(Symbol.iterator in headers);
}

/**
 * undici's `ProxyAgent` for the proxy at `raw`, with the pools' options to the proxy and through it.
 * Its credentials leave the URL for a `Proxy-Authorization` header (a user without a password too,
 * as httpx sends it). `proxyTunnel: false`: an http:// target's request goes to the proxy as it is
 * (absolute form), an https:// one through CONNECT. The target's TLS is ours (`requestTls`); the
 * proxy's own, for an https:// proxy, verifies as the settings say, without our client certificate
 * (it is the target's to ask for).
 */
function proxyAgentOf(raw: string, tls: OutboundTls): ProxyAgent {
  const url = new URL(raw);
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  url.username = "";
  url.password = "";
  const { cert: _cert, key: _key, ...verification } = outboundTlsOptions({ ...tls, certificate: undefined });
  const connect = { timeout: OUTBOUND_LIMITS.connectTimeoutMs, minVersion: "TLSv1.2" } as const;
  return new ProxyAgent({
    ...POOL_OPTIONS,
    uri: url.href,
    ...((user || password) && { token: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` }),
    proxyTunnel: false,
    // The pools to the proxy for http:// targets get our options too (undici's default has its own).
    factory: (origin, options) => new Pool(origin, { ...POOL_OPTIONS, ...options }),
    proxyTls: { ...connect, ...verification },
    requestTls: { ...connect, ...outboundTlsOptions(tls) },
  });
}

/**
 * Whether NO_PROXY's `entries` send `target` direct, as httpx reads them: `*` is every target; an
 * IP address (v4, v6 with or without brackets) or `localhost` is that host; an address block
 * (`10.0.0.0/8`) is an address in it; `.example.com` and `*.example.com` are its subdomains;
 * `example.com` and `*example.com` are it and its subdomains. `host:port` is that port only, and
 * `http://` or `https://` before an entry that scheme only. No name is looked up.
 */
export function bypassesProxy(entries: readonly string[], target: URL): boolean {
  const scheme = target.protocol.slice(0, -1);
  const host = target.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const port = Number(target.port) || (scheme === "https" ? 443 : 80);
  return entries.some((raw) => {
    if (raw === "*") return true;
    let entry = raw.toLowerCase();
    const schemeEnd = entry.indexOf("://");
    if (schemeEnd >= 0) {
      const only = entry.slice(0, schemeEnd);
      if (only !== "all" && only !== scheme) return false;
      entry = entry.slice(schemeEnd + 3);
    }
    const block = /^\[?([0-9a-f:.]+)\]?\/(\d+)$/.exec(entry);
    if (block) return inBlock(host, block[1] as string, Number(block[2]));
    if (isIP(entry.replace(/^\[|\]$/g, "")) === 6) return host === entry.replace(/^\[|\]$/g, "");
    const withPort = /^(.*?)(?::(\d+))?$/.exec(entry) as RegExpExecArray;
    if (withPort[2] !== undefined && Number(withPort[2]) !== port) return false;
    const name = (withPort[1] as string).replace(/^\[|\]$/g, "");
    if (name.startsWith("*.") || name.startsWith(".")) return host.endsWith(name.slice(name.indexOf(".")));
    const bare = name.replace(/^\*/, "");
    return host === bare || (isIP(bare) === 0 && bare !== "localhost" && host.endsWith(`.${bare}`));
  });
}

/** Whether `host` is an IP address in `address`/`prefix`. */
function inBlock(host: string, address: string, prefix: number): boolean {
  const family = isIP(address);
  if (family === 0 || isIP(host) !== family) return false;
  const block = new BlockList();
  try {
    block.addSubnet(address, prefix, family === 4 ? "ipv4" : "ipv6");
  } catch {
    return false; // a prefix past the address's length
  }
  return block.check(host, family === 4 ? "ipv4" : "ipv6");
}

/** The origins whose connector an agent keeps, as many as undici's own session cache (`maxCachedSessions`). */
const HELD_ORIGINS = 100;

/**
 * The agent's connectors, one per origin and kept by the agent, so that an origin's TLS session
 * outlives its pool. Given options instead, each pool builds a connector with its own session
 * cache, and undici drops the pool, cache and all, when the origin's last connection closes (our
 * keep-alive's end, or the upstream's shorter one): every call after a pause was a full handshake.
 * One connector for all would not do either: its cache is keyed by host name alone, so two origins
 * on one host (two ports) would offer each other's sessions. undici's cache holds its sessions
 * weakly (a garbage collection empties it), so each origin's latest session is held here too; the
 * least recently used origin goes past `HELD_ORIGINS`. A `ClientCertificateAgent`'s new agent gets
 * new connectors: no session of the old certificate is resumed.
 */
function connectorOf(options: buildConnector.BuildOptions): buildConnector.connector {
  const origins = new Map<string, { connect: buildConnector.connector; session?: Buffer }>();
  return (target, callback) => {
    const key = `${target.protocol}//${target.servername ?? ""}@${target.hostname}:${target.port}`;
    const origin = origins.get(key) ?? { connect: buildConnector(options) };
    origins.delete(key);
    origins.set(key, origin);
    if (origins.size > HELD_ORIGINS) origins.delete(origins.keys().next().value as string);
    // undici returns the socket it made (not in its types): its `session` events are the ones it caches.
    const socket = origin.connect(target, callback) as unknown as TLSSocket | undefined;
    if (target.protocol === "https:" && socket) {
      socket.on("session", (session: Buffer) => {
        origin.session = session;
      });
    }
  };
}

/** The agents of `ClientCertificateAgent`s in use, closed with the shared ones by `closeOutboundAgents`. */
const certificateAgents = new Set<Agent>();

/** A client certificate's two PEM files, and the variables that name them (for messages). */
export interface ClientCertificateFiles {
  cert: string;
  key: string;
  certVariable: string;
  keyVariable: string;
}

/** A store's agent with its own client certificate, read again from its files when they change (see the header). */
export class ClientCertificateAgent {
  readonly #tls: OutboundTls;
  readonly #files: ClientCertificateFiles;
  readonly #log: Logger;
  #agent: Agent;
  #pair: { cert: Buffer; key: Buffer };
  /** The files' stat when the pair in use was read (or last found unchanged). */
  #seen: string;
  /** The look at the files under way, shared by concurrent logins. */
  #refreshing: Promise<void> | undefined;
  #closed = false;

  private constructor(
    tls: OutboundTls,
    files: ClientCertificateFiles,
    log: Logger,
    pair: { cert: Buffer; key: Buffer },
    seen: string,
  ) {
    this.#tls = tls;
    this.#files = files;
    this.#log = log;
    this.#pair = pair;
    this.#seen = seen;
    this.#agent = this.#make(pair);
  }

  /** Reads the pair: a file that cannot be read stops the start, naming its variable. */
  static async open(tls: OutboundTls, files: ClientCertificateFiles, log: Logger): Promise<ClientCertificateAgent> {
    // Stat first: a file replaced between the two is read again at the first login.
    const seen = await statOf(files).catch(() => "");
    const pair = {
      cert: await readPemFile(files.cert, files.certVariable),
      key: await readPemFile(files.key, files.keyVariable),
    };
    return new ClientCertificateAgent(tls, files, log, pair, seen);
  }

  /** The agent to send with now (a call keeps the one it started on). */
  get agent(): Agent {
    return this.#agent;
  }

  /** At a login: the files' new pair, when they hold one, for this login and every call after it. */
  refresh(): Promise<void> {
    this.#refreshing ??= this.#reload().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  /** Closes the agent (the store closing). */
  async close(): Promise<void> {
    this.#closed = true;
    certificateAgents.delete(this.#agent);
    await this.#agent.close();
  }

  async #reload(): Promise<void> {
    const { certVariable, keyVariable } = this.#files;
    const variable = `${certVariable} / ${keyVariable}`;
    let seen: string;
    let pair: { cert: Buffer; key: Buffer };
    try {
      seen = await statOf(this.#files);
      if (seen === this.#seen) return;
      pair = { cert: await readFile(this.#files.cert), key: await readFile(this.#files.key) };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "error";
      this.#log.warn("client certificate files cannot be read; the certificate in use stays", { variable, code });
      return;
    }
    if (pair.cert.equals(this.#pair.cert) && pair.key.equals(this.#pair.key)) {
      this.#seen = seen; // touched, not changed
      return;
    }
    try {
      createSecureContext({ cert: pair.cert, key: pair.key }); // throws when the two do not match
    } catch {
      // Not remembered as seen: the next login looks again (the rotation may be half written).
      this.#log.warn("client certificate files hold no usable pair; the certificate in use stays", { variable });
      return;
    }
    if (this.#closed) return;
    const old = this.#agent;
    this.#agent = this.#make(pair);
    this.#pair = pair;
    this.#seen = seen;
    certificateAgents.delete(old);
    // Its calls under way finish first (undici's close waits for them); its idle connections go.
    old.close().catch(() => {});
    this.#log.info("client certificate read again: new connections present it", { variable });
  }

  #make(pair: { cert: Buffer; key: Buffer }): Agent {
    const agent = newAgent({ ...this.#tls, certificate: pair });
    certificateAgents.add(agent);
    return agent;
  }
}

/** What tells a change of the two files: each one's inode, size and times. */
async function statOf(files: ClientCertificateFiles): Promise<string> {
  const [cert, key] = await Promise.all([stat(files.cert), stat(files.key)]);
  return [cert, key].map((s) => `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`).join("|");
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

/**
 * Closes every agent: for tests and benches that end while the process goes on. A process that
 * serves never calls it: it exits, and undici's idle sockets keep no process alive (unref'd).
 */
export async function closeOutboundAgents(): Promise<void> {
  const all = [...agents.values(), ...certificateAgents];
  agents.clear();
  certificateAgents.clear();
  await Promise.allSettled(all.map((a) => a.close()));
}
