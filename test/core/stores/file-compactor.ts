// A child process for the file store tests: opens a file store and compacts it, then prints
// "compacted" or "refused CODE", and "holds N" (the names it serves afterwards). Run under a file
// size limit (prlimit --fsize), it meets a disk that takes part of a write and then no more.
// usage: file-compactor <dataDir> <saltKey>
import { KeyRing } from "../../../core/src/crypto";
import { FileStore } from "../../../core/src/stores/file";

const [dataDir, saltKey] = process.argv.slice(2) as [string, string];
const store = await FileStore.open({ dataDir, keys: new KeyRing(saltKey) });
try {
  await store.compact();
  process.stdout.write("compacted\n");
} catch (err) {
  process.stdout.write(`refused ${(err as { code?: string }).code}\n`);
}
process.stdout.write(`holds ${(await store.list({ limit: 1000 })).names.length}\n`);
await store.close();
