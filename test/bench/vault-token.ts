/**
 * The Vault half of bench section `store-cache`, run as a child process so that the fake's CA is
 * trusted the way a real Vault's is (`NODE_EXTRA_CA_CERTS`, read by node at start): reads through
 * the store for 120 simulated seconds while AppRole login tokens live 10 s and at most 30 s, so
 * every token the store holds expires or hits its max TTL mid-run; next to a client that keeps the
 * token of its first login (as a plain `X-Vault-Token` header does). The store and the fake share
 * one fake clock. Prints one JSON line: `{"ours": failed reads, "reference": failed reads, "reads", "logins"}`.
 * usage: node --import tsx test/bench/vault-token.ts <pki.json>
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { silentLogger } from "../../core/src/log";
import { openVaultStore } from "../../core/src/stores/vault";
import { FakeVault } from "../fakes/vault";

const READS = 120;
const pki = JSON.parse(readFileSync(process.argv[2] as string, "utf8"));
const clock = { now: Date.now() };
const roleId = `role-${randomBytes(8).toString("hex")}`;
const secretId = `secret-${randomBytes(8).toString("hex")}`;
const fake = await FakeVault.start({
  pki,
  approle: { roleId, secretId },
  tokenTtlSeconds: 10,
  tokenMaxTtlSeconds: 30,
  now: () => clock.now,
});
const env = { HCP_VAULT_ADDR: fake.url, HCP_VAULT_APPROLE_ROLE_ID: roleId, HCP_VAULT_APPROLE_SECRET_ID: secretId };
// The token leases' clock too (monotonic in production, `tuning.clock`): one fake clock for all.
const store = await openVaultStore(env, { log: silentLogger, now: () => clock.now }, { clock: () => clock.now });
const value = `sk-${randomBytes(24).toString("base64url")}`;
await store.put("OPENAI_API_KEY", value);

// The reference: one login, its token kept.
const login = await fetch(`${fake.url}/v1/auth/approle/login`, {
  method: "POST",
  body: JSON.stringify({ role_id: roleId, secret_id: secretId }),
});
const token = ((await login.json()) as { auth: { client_token: string } }).auth.client_token;

let ours = 0;
let reference = 0;
for (let second = 0; second < READS; second++) {
  clock.now += 1000;
  try {
    if ((await store.get("OPENAI_API_KEY"))?.value !== value) ours++;
  } catch {
    ours++;
  }
  const res = await fetch(`${fake.url}/v1/secret/data/OPENAI_API_KEY`, { headers: { "x-vault-token": token } });
  if (res.status !== 200) reference++;
  await res.arrayBuffer();
}
const logins = fake.requests.filter((r) => r.url.endsWith("/login")).length;
process.stdout.write(`${JSON.stringify({ ours, reference, reads: READS, logins })}\n`);
await store.close();
await fake.close();
