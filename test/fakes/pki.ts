/**
 * The tests' own certificate authority, made at test time with openssl: a CA, a server
 * certificate for localhost and 127.0.0.1 (the fakes serve HTTPS and gRPC over TLS with it), and a
 * client certificate (mutual TLS: Vault's cert login). The global set-up makes it once and puts
 * the CA in `NODE_EXTRA_CA_CERTS` (and gRPC's `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` where the machine
 * sets it) before the test workers start, so real clients trust the fakes the way they trust a
 * real service: no test-only switch in the product's settings.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TestPki {
  caFile: string;
  /** Server certificate (chain: leaf only) and key for localhost / 127.0.0.1. */
  serverCertFile: string;
  serverKeyFile: string;
  /** A client certificate signed by the CA (CN=llm-secrets-test-client). */
  clientCertFile: string;
  clientKeyFile: string;
}

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/**
 * A self-signed P-256 certificate and its key, valid for `days`; `extensions` are `-addext` values.
 * A CA (basicConstraints CA:TRUE) or a server's own certificate.
 */
export function selfSigned(keyFile: string, certFile: string, subject: string, extensions: string[], days = 2): void {
  openssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    String(days),
    "-subj",
    subject,
    ...extensions.flatMap((e) => ["-addext", e]),
  ]);
}

const CA_EXTENSIONS = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"];

function issue(dir: string, name: string, subject: string, extensions: string, ca: { cert: string; key: string }) {
  const key = join(dir, `${name}-key.pem`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, extensions);
  openssl([
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    csr,
    "-subj",
    subject,
  ]);
  openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    "-CAcreateserial",
    "-out",
    cert,
    "-days",
    "2",
    "-extfile",
    ext,
  ]);
  return { cert, key };
}

export function makeTestPki(dir: string): TestPki {
  const caKey = join(dir, "ca-key.pem");
  const caFile = join(dir, "ca.pem");
  selfSigned(caKey, caFile, "/CN=llm-secrets test CA", CA_EXTENSIONS);
  const ca = { cert: caFile, key: caKey };
  const server = issue(
    dir,
    "server",
    "/CN=localhost",
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    ca,
  );
  const client = issue(
    dir,
    "client",
    "/CN=llm-secrets-test-client",
    "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    ca,
  );
  // Sanity: the chain verifies, or every TLS test would fail for a reason far from here.
  execFileSync("openssl", ["verify", "-CAfile", caFile, server.cert, client.cert], { stdio: "ignore" });
  return {
    caFile,
    serverCertFile: server.cert,
    serverKeyFile: server.key,
    clientCertFile: client.cert,
    clientKeyFile: client.key,
  };
}

/**
 * A root CA, an intermediate CA it signed, and a localhost certificate the intermediate signed:
 * `certFile` holds the leaf then the intermediate (the chain a server sends), `rootFile` the root
 * alone (what a client trusts). `label` names the files, so a second chain can replace the first.
 */
export function makeServerChain(dir: string, label = "chain"): { rootFile: string; keyFile: string; certFile: string } {
  const rootKey = join(dir, `${label}-root-key.pem`);
  const rootFile = join(dir, `${label}-root.pem`);
  selfSigned(rootKey, rootFile, `/CN=llm-secrets ${label} root`, CA_EXTENSIONS);
  const intermediate = issue(
    dir,
    `${label}-intermediate`,
    `/CN=llm-secrets ${label} intermediate`,
    "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    { cert: rootFile, key: rootKey },
  );
  const leaf = issue(
    dir,
    `${label}-leaf`,
    "/CN=localhost",
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    intermediate,
  );
  const certFile = join(dir, `${label}-fullchain.pem`);
  writeFileSync(certFile, readFileSync(leaf.cert, "utf8") + readFileSync(intermediate.cert, "utf8"));
  return { rootFile, keyFile: leaf.key, certFile };
}
