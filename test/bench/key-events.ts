/**
 * Bench section `key-events`: key events applied per second through the runtime (validation, the
 * name rule, the manager, `ifNewerThan`) against the in-memory store, 10 000 events over 400
 * aliases (half created, 30% regenerated, 20% deleted). Target: at least 1 000 a second.
 */
import { randomBytes } from "node:crypto";
import { silentLogger } from "../../core/src/log";
import { createRuntime } from "../../core/src/runtime";
import { memoryStore } from "../../core/src/stores/memory";
import { check, type Reporter } from "./report";

const EVENTS = 10_000;
const TARGET_PER_SECOND = 1_000;

export default async function keyEventsSection(report: Reporter): Promise<void> {
  report.section("key-events: events applied per second against the in-memory store");
  const start = Date.now() - 3_600_000;
  const runtime = await createRuntime({
    stores: [memoryStore],
    settings: {
      env: {
        LITELLM_MASTER_KEY: `sk-${randomBytes(24).toString("base64url")}`,
        LLM_SECRETS_CONFIG:
          "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n",
      },
    },
    log: silentLogger,
    audit: () => {}, // audit lines formatted, not written
  });
  try {
    const events = Array.from({ length: EVENTS }, (_, i) => {
      const roll = (i * 7919) % 10;
      const type = roll < 5 ? "key.created" : roll < 8 ? "key.regenerated" : "key.deleted";
      return {
        id: `evt-${i}`,
        type,
        occurred_at: new Date(start + i).toISOString(),
        key_alias: `k${(i * 31) % 400}`,
        ...(type !== "key.deleted" && { key: `sk-${randomBytes(16).toString("hex")}` }),
      };
    });
    const began = performance.now();
    let refused = 0;
    for (const event of events) if ((await runtime.applyKeyEvent(event)).status === "refused") refused++;
    const seconds = (performance.now() - began) / 1000;
    check(refused === 0, `${refused} events were refused: the bench would time the refusal path`);
    report.row({
      name: `key events applied, ${EVENTS} over 400 aliases, in-memory store: ours vs the target rate`,
      ours: Math.round(EVENTS / seconds),
      reference: TARGET_PER_SECOND,
      unit: "events/s",
      target: ">= 1",
    });
  } finally {
    await runtime.close();
  }
}
