import { describe, expect, it } from "vitest";
import { KeyedQueue } from "../../core/src/secret-store";

/** A promise and its resolve, to hold a run open until the test lets it go. */
function gate(): { open: () => void; opened: Promise<void> } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

describe("KeyedQueue", () => {
  it("runs one key's work in order, one at a time, and other keys beside it", async () => {
    const queue = new KeyedQueue();
    const events: string[] = [];
    const first = gate();
    const a1 = queue.run("a", async () => {
      events.push("a1 start");
      await first.opened;
      events.push("a1 end");
      return 1;
    });
    const a2 = queue.run("a", async () => {
      events.push("a2");
      return 2;
    });
    const b1 = queue.run("b", async () => {
      events.push("b1");
      return 3;
    });
    await b1;
    expect(events).toEqual(["a1 start", "b1"]); // a2 waits for a1; b does not
    first.open();
    expect(await Promise.all([a1, a2])).toEqual([1, 2]);
    expect(events).toEqual(["a1 start", "b1", "a1 end", "a2"]);
  });

  it("runs the next work after a failure, which reaches only its own caller", async () => {
    const queue = new KeyedQueue();
    const failed = queue.run("a", async () => {
      throw new Error("boom");
    });
    const next = queue.run("a", async () => "ran");
    await expect(failed).rejects.toThrow("boom");
    await expect(next).resolves.toBe("ran");
  });

  it("settles once everything queued so far has, failures included", async () => {
    const queue = new KeyedQueue();
    const held = gate();
    let done = false;
    void queue.run("a", async () => {
      await held.opened;
      done = true;
    });
    void queue
      .run("b", async () => {
        throw new Error("boom");
      })
      .catch(() => {});
    const settled = queue.settled().then(() => done);
    held.open();
    expect(await settled).toBe(true);
  });
});
