/**
 * Bench section `store-cache`: the cache under a real store client, the AWS SDK against the
 * wire-level fake (test/fakes/aws.ts, over plain HTTP here), next to the cache users write
 * themselves: a Map of values with a TTL, as AWS Powertools' parameters utility keeps them
 * (written below), in the same run.
 *
 * (a) Backend calls for 1 000 concurrent cold reads of one name. Target: 1 against 1 000.
 * (b) Reads answered during a 60 s backend outage, the cache's entries past their lifetime but
 *     within `LLM_SECRETS_MAX_STALE`: a fake clock steps one second per read, the fake answers
 *     500 to every call (the SDK tries each 3 times). Target: all of them.
 * (c) Reads through the Vault store while its login tokens expire mid-run (test/bench/vault-token.ts,
 *     a child process): failed reads, against a client that keeps its first token. Target: none.
 * Counts, not times: the ratios are exact on any machine.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { silentLogger } from "../../core/src/log";
import { createRuntime } from "../../core/src/runtime";
import { awsSecretsManagerStore } from "../../core/src/stores/aws";
import { FAKE_AWS_CREDENTIALS, FakeAws } from "../fakes/aws";
import { makeTestPki } from "../fakes/pki";
import { check, type Reporter } from "./report";

const COLD_READS = 1_000;
const OUTAGE_SECONDS = 60;
const TTL_SECONDS = 10;

/** The cache a user writes in a Lambda: a Map of values with an expiry, no sharing of loads, no stale serving. */
class MapWithTtl {
  readonly #entries = new Map<string, { value: string; expiresAt: number }>();
  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number,
  ) {}

  async get(name: string, load: () => Promise<string>): Promise<string> {
    const hit = this.#entries.get(name);
    if (hit && hit.expiresAt > this.now()) return hit.value;
    const value = await load();
    this.#entries.set(name, { value, expiresAt: this.now() + this.ttlMs });
    return value;
  }
}

export default async function storeCacheSection(report: Reporter): Promise<void> {
  report.section("store-cache: the cache over the AWS SDK and the fake, vs a Map with a TTL");
  const fake = await FakeAws.start({ tls: false });
  const saved = { ...process.env };
  process.env.AWS_ENDPOINT_URL = fake.url;
  process.env.AWS_ACCESS_KEY_ID = FAKE_AWS_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = FAKE_AWS_CREDENTIALS.secretAccessKey;
  const clock = { now: Date.now() };
  const runtime = await createRuntime({
    stores: [awsSecretsManagerStore],
    settings: {
      env: {
        LITELLM_MASTER_KEY: `sk-${randomBytes(24).toString("base64url")}`,
        LLM_SECRETS_CONFIG:
          "general_settings:\n  key_management_system: aws_secret_manager\n  key_management_settings:\n    aws_region_name: us-east-1\n",
        SECRET_MANAGER_REFRESH_INTERVAL: String(TTL_SECONDS),
        LLM_SECRETS_MAX_STALE: "3600",
      },
    },
    log: silentLogger,
    audit: () => {}, // audit lines formatted, not written
    now: () => clock.now,
  });
  const store = runtime.backend;
  const value = `sk-${randomBytes(24).toString("base64url")}`;
  try {
    await store.put("OPENAI_API_KEY", value);
    const reads = () => fake.calls("GetSecretValue").length;

    // (a) 1 000 concurrent cold reads.
    let before = reads();
    const ours = await Promise.all(Array.from({ length: COLD_READS }, () => runtime.manager.get("OPENAI_API_KEY")));
    const ourCalls = reads() - before;
    check(
      ours.every((r) => r.value === value),
      "a cold read answered another value",
    );
    const map = new MapWithTtl(TTL_SECONDS * 1000, () => clock.now);
    before = reads();
    const theirs = await Promise.all(
      Array.from({ length: COLD_READS }, () =>
        map.get("OPENAI_API_KEY", async () => (await store.get("OPENAI_API_KEY"))?.value ?? ""),
      ),
    );
    const mapCalls = reads() - before;
    check(
      theirs.every((v) => v === value),
      "the Map cache answered another value",
    );
    report.row({
      name: `backend calls for ${COLD_READS} concurrent cold reads of one name: ours vs a Map with a TTL`,
      ours: ourCalls,
      reference: mapCalls,
      unit: "calls",
      target: `<= ${1 / COLD_READS}`,
    });

    // (b) A 60 s outage, one read a second, both caches warm at its start.
    fake.fail(1_000_000, "error");
    let oursAnswered = 0;
    let oursStale = 0;
    let mapAnswered = 0;
    for (let second = 0; second < OUTAGE_SECONDS; second++) {
      clock.now += 1000;
      try {
        const read = await runtime.manager.get("OPENAI_API_KEY");
        if (read.value === value) oursAnswered++;
        if (read.stale) oursStale++;
      } catch {
        // unanswered
      }
      try {
        if ((await map.get("OPENAI_API_KEY", async () => (await store.get("OPENAI_API_KEY"))?.value ?? "")) === value) {
          mapAnswered++;
        }
      } catch {
        // unanswered
      }
    }
    check(oursStale > 0, "the outage never reached past the cache's lifetime: the bench would not test stale serving");
    report.row({
      name: `reads answered during a ${OUTAGE_SECONDS} s backend outage (one a second): ours, of all`,
      ours: oursAnswered,
      reference: OUTAGE_SECONDS,
      unit: "reads",
      target: ">= 1",
    });
    report.row({
      name: `reads answered during the same outage: a Map with a TTL, of all`,
      ours: mapAnswered,
      reference: OUTAGE_SECONDS,
      unit: "reads",
      target: "info",
    });
    report.note(
      `The cache lifetime is ${TTL_SECONDS} s: ours answered ${oursStale} reads marked stale (within LLM_SECRETS_MAX_STALE); ` +
        `the Map answers until its entry expires, then every read fails. ${fake.requests.length} requests reached the fake in all.`,
    );
  } finally {
    await runtime.close();
    await fake.close();
    process.env = saved;
  }
  await vaultTokenRow(report);
}

/** (c): the Vault child process, with the fakes' CA made now and trusted from its start. */
async function vaultTokenRow(report: Reporter): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "llm-secrets-bench-pki-"));
  try {
    const pki = makeTestPki(dir);
    const pkiFile = join(dir, "pki.json");
    await writeFile(pkiFile, JSON.stringify(pki));
    const child = spawnSync(
      process.execPath,
      ["--import", "tsx", fileURLToPath(new URL("./vault-token.ts", import.meta.url)), pkiFile],
      { env: { ...process.env, NODE_EXTRA_CA_CERTS: pki.caFile }, encoding: "utf8", timeout: 120_000 },
    );
    check(child.status === 0, `the Vault token run failed: ${child.stderr.slice(-500)}`);
    const out = JSON.parse(child.stdout.trim().split("\n").at(-1) as string) as {
      ours: number;
      reference: number;
      reads: number;
      logins: number;
    };
    check(out.reference > 0, "the reference never saw its token expire: the run would not test renewal");
    report.row({
      name: `failed reads over ${out.reads} s with Vault login tokens of 10 s (max 30 s): ours vs a client that keeps its first token`,
      ours: out.ours,
      reference: out.reference,
      unit: "reads",
      ratio: out.ours,
      target: "<= 0",
    });
    report.note(
      `The store logged in ${out.logins - 1} times in those ${out.reads} s (renewing in between); the kept token failed ${out.reference} of ${out.reads} reads.`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
