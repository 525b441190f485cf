// Migration of a format-1 data dir (one `secrets.json`), on a fixture written by main's own file
// store (test/fixtures/file-store-v1/README.md says how), with test-only salt keys.
import { cp, readdir, readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { KeyRing, sealSecret } from "../../../core/src/crypto";
import { ConfigError } from "../../../core/src/errors";
import { FileStore } from "../../../core/src/stores/file";
import { keyCheckOf } from "../../../core/src/stores/file-log";
import { codeOf, tempDir } from "../../helpers";
import { logPath, readLog } from "./file-log-reader";

// The fixture's salt keys: test keys, written down here and in the fixture's make.mjs.
const CURRENT = "llm-secrets-TEST-ONLY-fixture-salt-v1";
const PREVIOUS = "llm-secrets-TEST-ONLY-fixture-salt-v0";
const ring = new KeyRing(CURRENT, [PREVIOUS]);
const FIXTURE = join(import.meta.dirname, "../../fixtures/file-store-v1/data");

/** What main's store wrote, as main's make.mjs put it. */
const EXPECTED: Record<string, { value: string; description?: string; tags?: Record<string, string> }> = {
  ROTATED_FROM_V0: { value: "sealed-under-the-previous-key", tags: { rotated: "no" } },
  OPENAI_API_KEY: {
    value: "fixture-openai-value",
    description: "made by main's file store",
    tags: { team: "platform", env: "test" },
  },
  "litellm/team-a/key": { value: "ключ-密钥-🔑-ünïcødé", description: "created default" },
  "user@example.com": { value: "" },
  MULTI_LINE: { value: 'line1\nline2\r\n\ttab "quoted" \\ backslash' },
  OVERWRITTEN: { value: "second", description: "kept from the first write" },
  GCM_SEALED: { value: "sealed-with-aes-256-gcm" },
};

interface V1Document {
  format: string;
  version: number;
  secrets: Record<string, { ciphertext: string; created_at: string; updated_at: string }>;
}

async function fixtureCopy(): Promise<{ dir: string; document: V1Document }> {
  const dir = join(await tempDir(), "data");
  await cp(FIXTURE, dir, { recursive: true });
  return { dir, document: JSON.parse(await readFile(join(dir, "secrets.json"), "utf8")) as V1Document };
}

describe("file store migration from format 1", () => {
  it("migrates main's secrets.json on first open with nothing lost: values, descriptions, tags, times", async () => {
    const { dir, document } = await fixtureCopy();
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    expect(await store.names()).toEqual(Object.keys(EXPECTED).sort());
    const { state, header, lines } = await readLog(dir);
    for (const [name, expected] of Object.entries(EXPECTED)) {
      const record = await store.get(name);
      expect(record?.value, name).toBe(expected.value);
      expect(record?.tags, name).toEqual(expected.tags);
      expect(state.get(name)?.d, name).toBe(expected.description);
      const v1 = document.secrets[name];
      expect(record?.updatedAt?.toISOString(), name).toBe(v1?.updated_at);
      expect(state.get(name)?.c, name).toBe(Date.parse(v1?.created_at ?? ""));
      expect(state.get(name)?.v, "ciphertexts are copied as they are").toBe(v1?.ciphertext);
    }
    expect(await store.get("DELETED")).toBeUndefined();
    // Both keys of the ring may have sealed entries: both are recorded.
    const recorded = [...header.keys, ...lines.flatMap((l) => ("changes" in l ? (l.keys ?? []) : []))];
    expect(recorded.sort()).toEqual(ring.all.map(keyCheckOf).sort());
    // The document is gone; the log is the store.
    expect(await readdir(dir)).toEqual(["secrets.log"]);
    // Writes go on as usual.
    expect(await store.put("OPENAI_API_KEY", "rotated-value")).toBe("updated");
    await store.close();
    const reopened = await FileStore.open({ dataDir: dir, keys: ring });
    expect((await reopened.get("OPENAI_API_KEY"))?.value).toBe("rotated-value");
    expect((await reopened.get("OPENAI_API_KEY"))?.tags).toEqual(EXPECTED.OPENAI_API_KEY?.tags);
    expect((await reopened.get("GCM_SEALED"))?.value).toBe("sealed-with-aes-256-gcm");
  });

  it("stops the start when no entry opens with the key ring, and changes nothing", async () => {
    const { dir } = await fixtureCopy();
    const before = await readFile(join(dir, "secrets.json"));
    const wrong = FileStore.open({ dataDir: dir, keys: new KeyRing("llm-secrets-TEST-ONLY-wrong-key") });
    await expect(wrong).rejects.toBeInstanceOf(ConfigError);
    await expect(wrong).rejects.toThrow(/sealed with another key: none of its 7 entries opens.*LITELLM_SALT_KEY/);
    expect(await readFile(join(dir, "secrets.json"))).toEqual(before);
    expect((await readLog(dir)).state.size).toBe(0);
    // The right key then migrates it.
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe("fixture-openai-value");
  });

  it("migrates again after a crash before the import was durable (torn import line)", async () => {
    const { dir } = await fixtureCopy();
    const first = await FileStore.open({ dataDir: dir, keys: ring });
    await first.close();
    const log = await readLog(dir);
    // Put the document back and cut the import line in half: as if the process died mid-write.
    await cp(join(FIXTURE, "secrets.json"), join(dir, "secrets.json"));
    const headerEnd = log.bytes.indexOf("\n") + 1;
    await truncate(logPath(dir), headerEnd + Math.floor((log.bytes.length - headerEnd) / 2));
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    for (const [name, expected] of Object.entries(EXPECTED))
      expect((await store.get(name))?.value).toBe(expected.value);
    expect((await readLog(dir)).tail).toBe("none");
    expect(await readdir(dir)).toEqual(["secrets.log"]);
  });

  it("after a crash between the import and the removal, the next import changes nothing", async () => {
    const { dir } = await fixtureCopy();
    await (await FileStore.open({ dataDir: dir, keys: ring })).close();
    const before = await readFile(logPath(dir));
    await cp(join(FIXTURE, "secrets.json"), join(dir, "secrets.json"));
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    expect(await readFile(logPath(dir))).toEqual(before);
    expect(await readdir(dir)).toEqual(["secrets.log"]);
    expect((await store.get("MULTI_LINE"))?.value).toBe(EXPECTED.MULTI_LINE?.value);
  });

  it("takes in what a format-1 writer wrote after the migration, when it is newer", async () => {
    const { dir, document } = await fixtureCopy();
    const store = await FileStore.open({ dataDir: dir, keys: ring });
    await store.put("OVERWRITTEN", "written-by-v2");
    await store.close();
    // An older server, still running, rewrites secrets.json: one entry newer, one older than the log.
    const later = new Date(Date.now() + 60_000).toISOString();
    const stale = {
      ...document,
      secrets: {
        OVERWRITTEN: { ...document.secrets.OVERWRITTEN, updated_at: "2020-01-01T00:00:00.000Z" },
        FROM_OLD_SERVER: {
          ciphertext: sealSecret("late-v1-write", ring),
          created_at: later,
          updated_at: later,
        },
      },
    };
    await writeFile(join(dir, "secrets.json"), JSON.stringify(stale));
    const reopened = await FileStore.open({ dataDir: dir, keys: ring });
    expect((await reopened.get("FROM_OLD_SERVER"))?.value).toBe("late-v1-write");
    expect((await reopened.get("OVERWRITTEN"))?.value).toBe("written-by-v2");
    expect(await readdir(dir)).toEqual(["secrets.log"]);
  });

  it("refuses a secrets.json that is not a format-1 document, and leaves it untouched", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "secrets.json"), '{"format": "something else"');
    expect(await codeOf(FileStore.open({ dataDir: dir, keys: ring }))).toBe("store_corrupt");
    await writeFile(join(dir, "secrets.json"), '{"format": "something else"}');
    await expect(FileStore.open({ dataDir: dir, keys: ring })).rejects.toThrow(/not an llm-secrets format-1 store/);
    expect(await readFile(join(dir, "secrets.json"), "utf8")).toBe('{"format": "something else"}');
  });

  it("an entry sealed under a key dropped from the ring is store_corrupt, and reencrypt names it", async () => {
    const { dir } = await fixtureCopy();
    // Opened with the current key only: the entry sealed under the previous one does not open.
    const store = await FileStore.open({ dataDir: dir, keys: new KeyRing(CURRENT) });
    expect((await store.get("OPENAI_API_KEY"))?.value).toBe("fixture-openai-value");
    expect(await codeOf(store.get("ROTATED_FROM_V0"))).toBe("store_corrupt");
    await expect(store.reencrypt()).rejects.toThrow(/entry ROTATED_FROM_V0/);
    await store.close();
    // With the previous key back in the ring, reencrypt moves everything to the current key.
    const rotated = await FileStore.open({ dataDir: dir, keys: ring });
    expect(await rotated.reencrypt()).toBe(Object.keys(EXPECTED).length);
    await rotated.close();
    const current = await FileStore.open({ dataDir: dir, keys: new KeyRing(CURRENT) });
    expect((await current.get("ROTATED_FROM_V0"))?.value).toBe("sealed-under-the-previous-key");
  });
});
