// A child process for the file store tests: a writer whose event loop stalls inside the lock, past
// the lock's lease (no renewal meanwhile), as a process paused by the OS or a long GC would; the
// stall is made in the store's clock, which a write reads under the lock. It prints "put NAME done",
// "delete NAME done" or "... refused CODE" for each of its changes, then "done".
// usage: file-staller <dataDir> <saltKey> stall <ms>     put W, then (stalling) put X and delete K
//        file-staller <dataDir> <saltKey> compact <ms>   compact, stalling at its start
import { KeyRing } from "../../../core/src/crypto";
import { FileStore } from "../../../core/src/stores/file";

const [dataDir, saltKey, role, stallMs] = process.argv.slice(2) as [string, string, string, string];
let armed = 0; // the call of now() to stall at (1: the next)
const now = () => {
  if (armed > 0 && --armed === 0) {
    process.stdout.write("stalling\n");
    const until = Date.now() + Number(stallMs);
    while (Date.now() < until);
  }
  return Date.now();
};
const store = await FileStore.open({ dataDir, keys: new KeyRing(saltKey), now });
const report = (what: string, change: Promise<unknown>) =>
  change.then(
    () => process.stdout.write(`${what} done\n`),
    (err: { code?: string }) => process.stdout.write(`${what} refused ${err.code}\n`),
  );
if (role === "stall") {
  armed = 2; // the second batch's: W goes alone, X and K wait for it and go together
  await Promise.all([
    report("put W", store.put("W", "w")),
    report("put X", store.put("X", "x")),
    report("delete K", store.delete("K")),
  ]);
} else if (role === "compact") {
  armed = 1;
  await report("compact", store.compact());
}
await store.close();
process.stdout.write("done\n");
