/**
 * What the Google Secret Manager store and the Cloud KMS decryptor share, without loading a
 * client library: the endpoint override and the per-call retry and deadline.
 *
 * Credentials are the library's own (Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`,
 * the metadata server on Cloud Functions), read from the environment by google-auth-library.
 */
import * as z from "zod/mini";
import type { SecretsError } from "../errors";
import { type OutboundTls, outboundTlsOptions } from "../outbound-tls";
import { classifyBackendError, GrpcCode, StoreUnavailable } from "../store-errors";
import { loadSdk } from "./load-sdk";

/** `https://host:port`: where the gRPC client connects instead of Google's endpoint (an emulator, a private endpoint). */
export const endpointUrl = z.pipe(
  z.string(),
  z.transform((s, ctx) => {
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      ctx.issues.push({ code: "custom", input: s, message: "expected a URL like https://host:port" });
      return z.NEVER;
    }
    if (url.protocol !== "https:" || url.pathname !== "/" || url.search !== "") {
      ctx.issues.push({
        code: "custom",
        input: s,
        message: "expected https://host[:port] (gRPC over TLS), nothing after it",
      });
      return z.NEVER;
    }
    return { apiEndpoint: url.hostname.replace(/^\[|\]$/g, ""), port: url.port === "" ? 443 : Number(url.port) };
  }),
);

/**
 * gRPC codes worth another try for a read (GetSecret, AccessSecretVersion, ListSecrets,
 * ListSecretVersions, Decrypt): UNAVAILABLE, RESOURCE_EXHAUSTED (throttling), DEADLINE_EXCEEDED.
 * When every attempt fails, gax answers DEADLINE_EXCEEDED with the last attempt's code only in its
 * message: `classifyBackendError` recovers that code (and reads nothing else of the message).
 */
export const READ_RETRY_CODES = [GrpcCode.UNAVAILABLE, GrpcCode.RESOURCE_EXHAUSTED, GrpcCode.DEADLINE_EXCEEDED];

/**
 * For a change (CreateSecret, AddSecretVersion, UpdateSecret, DeleteSecret, DestroySecretVersion),
 * RESOURCE_EXHAUSTED only: Google refuses a call over its quota before doing anything. After
 * UNAVAILABLE or DEADLINE_EXCEEDED the change may be done with its answer lost, and a second try
 * would not be the same change: AddSecretVersion adds (and bills) a second version, CreateSecret
 * meets the secret it made as ALREADY_EXISTS (another writer's, as far as the store can tell),
 * DeleteSecret meets NOT_FOUND. The library's own retry settings retry none of these calls
 * (`non_idempotent` in secret_manager_service_client_config.json).
 */
const CHANGE_RETRY_CODES = [GrpcCode.RESOURCE_EXHAUSTED];

/**
 * Per-call options: our retry (not the library's settings) with 3 attempts in all (backoff from 100
 * ms, doubling, at most 1 s) and a deadline per attempt; a `change` is tried again only when
 * throttled (`CHANGE_RETRY_CODES`).
 */
export function googleCallOptions(deadlineMs = 10_000, kind: "read" | "change" = "read") {
  return {
    timeout: deadlineMs,
    retry: {
      retryCodes: kind === "read" ? READ_RETRY_CODES : CHANGE_RETRY_CODES,
      backoffSettings: {
        maxRetries: 3, // gax counts the first call among them: 3 attempts in all
        initialRetryDelayMillis: 100,
        retryDelayMultiplier: 2,
        maxRetryDelayMillis: 1_000,
        initialRpcTimeoutMillis: deadlineMs,
        rpcTimeoutMultiplier: 1,
        maxRpcTimeoutMillis: deadlineMs,
      },
    },
  };
}

/**
 * The client options the outbound TLS settings give a Google client. A client certificate
 * (`ssl_certificate`), a CA bundle (`ssl_verify` / `SSL_CERT_FILE`) or `ssl_verify: false` need
 * channel credentials of our own, which replace gax's: so they carry the same Google auth
 * (Application Default Credentials, `cloud-platform` scope) as call credentials. (gax's own
 * `cert`/`key` options are dropped unless `GOOGLE_API_USE_CLIENT_CERTIFICATE=true`, which also
 * moves the client to Google's mTLS endpoint.) Nothing set: `{}`, gax's defaults (gRPC trusts
 * node's roots, `NODE_EXTRA_CA_CERTS` and `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`).
 */
export async function googleTlsOptions(
  tls: OutboundTls = {},
  servicePath = "secretmanager.googleapis.com",
): Promise<Record<string, unknown>> {
  const { ca, cert, key, rejectUnauthorized } = outboundTlsOptions(tls);
  if (ca === undefined && rejectUnauthorized === undefined && !(cert && key)) return {};
  const gax = await loadSdk(() => import("google-gax"));
  const { credentials } = gax.grpc;
  const channel = credentials.createSsl(
    ca === undefined ? null : Buffer.from(ca),
    key === undefined ? null : Buffer.from(key),
    cert === undefined ? null : Buffer.from(cert),
    rejectUnauthorized === false ? { rejectUnauthorized: false } : {},
  );
  // As gax sets up its own: a service account key signs its own JWT for the service (its audience
  // is the service's Google name, also through a private endpoint), other credentials (the
  // metadata server) fetch tokens.
  const auth = new gax.GoogleAuth();
  Object.assign(auth, {
    useJWTAccessWithScope: true,
    defaultServicePath: servicePath,
    defaultScopes: ["https://www.googleapis.com/auth/cloud-platform"],
  });
  const calls = credentials.createFromGoogleCredential({
    getRequestHeaders: async (url?: string) => {
      const headers = await (await auth.getClient()).getRequestHeaders(url);
      return Object.fromEntries(headers as unknown as Iterable<[string, string]>);
    },
  } as never);
  return { sslCreds: credentials.combineChannelCredentials(channel, calls) };
}

/**
 * A client that could not be set up: what the classifier makes of it (a key file missing or
 * unreadable is `store_unavailable`, a network failure reaching the metadata server
 * `backend_unavailable`), else `store_unavailable` (no credentials found, a key file that is not
 * one, another universe domain): this setting up cannot work here. The library's message (a path)
 * is not repeated.
 */
function setupError(err: unknown, what: string): SecretsError {
  const typed = classifyBackendError(err, what);
  if (typed.code !== "internal") return typed;
  return new StoreUnavailable(
    `${what}: the Google client could not be set up (check its credentials: GOOGLE_APPLICATION_CREDENTIALS, Application Default Credentials)`,
    { cause: err },
  );
}

/**
 * Sets up a Google client (its credentials and channel) before an operation's first call, as a
 * typed error when it cannot. Every RPC method of the libraries starts with
 * `this.initialize().catch((err) => { throw err; })`, which leaves a rejection no one handles when
 * the credentials cannot be loaded, and Node ends the process (googleapis/google-cloud-node#4747):
 * awaited here first, a call is made only on a client set up. The library keeps the failed setup's
 * rejected promise in `stubField` and would answer every later call with it: it is dropped, so the
 * next operation loads the credentials again.
 */
export async function readyClient<F extends string>(
  client: { initialize(): Promise<unknown> } & { [K in F]?: unknown },
  stubField: F,
  what: string,
): Promise<void> {
  const stub = client.initialize();
  try {
    await stub;
  } catch (err) {
    if (client[stubField] === stub) client[stubField] = undefined as (typeof client)[F];
    throw setupError(err, what);
  }
}
