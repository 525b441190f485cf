// A child process for the crash tests: puts secrets into a file store in a loop, four at a time,
// and prints "ack NAME" once each put has resolved (that is, once it is durable).
// usage: file-writer <dataDir> <saltKey> <prefix>
import { KeyRing } from "../../../core/src/crypto";
import { FileStore } from "../../../core/src/stores/file";

const [dataDir, saltKey, prefix] = process.argv.slice(2) as [string, string, string];
const store = await FileStore.open({ dataDir, keys: new KeyRing(saltKey) });
for (let i = 0; ; i += 4) {
  await Promise.all(
    [0, 1, 2, 3].map(async (j) => {
      const name = `${prefix}-${i + j}`;
      await store.put(name, `value-of-${name}`, {});
      process.stdout.write(`ack ${name}\n`);
    }),
  );
}
