// A child process for the file store tests: puts secrets into a file store, four at a time, and
// prints "ack NAME" once each put has resolved (that is, once it is durable). Without a count (or
// with 0) it runs until killed. With a padding, each value is that many bytes longer.
// usage: file-writer <dataDir> <saltKey> <prefix> [count] [padding]
import { KeyRing } from "../../../core/src/crypto";
import { FileStore } from "../../../core/src/stores/file";

const [dataDir, saltKey, prefix, count, padding] = process.argv.slice(2) as [string, string, string, string?, string?];
const limit = count === undefined || count === "0" ? Number.POSITIVE_INFINITY : Number(count);
const pad = ".".repeat(Number(padding ?? 0));
const store = await FileStore.open({ dataDir, keys: new KeyRing(saltKey) });
for (let i = 0; i < limit; i += 4) {
  await Promise.all(
    [0, 1, 2, 3]
      .filter((j) => i + j < limit)
      .map(async (j) => {
        const name = `${prefix}-${i + j}`;
        await store.put(name, `value-of-${name}${pad}`);
        process.stdout.write(`ack ${name}\n`);
      }),
  );
}
await store.close();
