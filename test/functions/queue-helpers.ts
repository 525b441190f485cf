// What the queue tests of every runtime share: a backend that is down for some names (what a
// queue must redeliver), as a store answers, and the settings under which key events apply.
import type { PutOptions, StoreFactory } from "../../core/src/secret-store";
import { BackendDenied, BackendUnavailable } from "../../core/src/store-errors";
import { MemoryStore, memoryStore } from "../../core/src/stores/memory";

export const KEY_EVENTS_CONFIG =
  "general_settings:\n  key_management_settings:\n    access_mode: read_and_write\n    store_virtual_keys: true\n";

/** A memory store whose writes of names with "unlucky" in them fail while `down` is set ("slow" ones take 300 ms). */
export class PartlyDownStore extends MemoryStore {
  down = true;
  override async put(name: string, value: string, options?: PutOptions) {
    if (this.down && name.includes("unlucky")) throw new BackendUnavailable("injected: the backend is down", 3);
    if (this.down && name.includes("denied")) throw new BackendDenied("injected: the role may not write yet");
    if (this.down && name.includes("buggy")) throw new TypeError("injected: a bug, not a backend error");
    if (name.includes("slow")) await new Promise((r) => setTimeout(r, 300)); // a throttled backend
    return super.put(name, value, options);
  }

  /** A factory that opens this very store, for a runtime under test. */
  factory(): StoreFactory {
    return { ...memoryStore, open: async () => this };
  }
}

/** A key event created a second ago. */
export function keyEvent(id: string, alias: string, key: string) {
  return { id, type: "key.created", occurred_at: new Date(Date.now() - 1000).toISOString(), key_alias: alias, key };
}
