import { describe, expect, it } from "vitest";
import { answerAtTurnEnd, atTurnEnd } from "../../core/src/turn-end";

/** The end of the current turn (and of whatever turn end is already due: it runs first). */
const turnEnd = () => new Promise((resolve) => setImmediate(resolve));

/** Whether `promise` is still pending once the microtasks queued now have run. */
async function pending(promise: Promise<unknown>): Promise<boolean> {
  const marker = Symbol("pending");
  return (await Promise.race([promise, Promise.resolve(marker)])) === marker;
}

describe("turn end", () => {
  it("runs a turn's answers before its log writes, each kind in order, once, at the end of the turn", async () => {
    await turnEnd();
    const ran: string[] = [];
    atTurnEnd(() => ran.push("log 1"), "log");
    atTurnEnd(() => ran.push("answer 1"), "answer");
    atTurnEnd(() => ran.push("log 2"), "log");
    atTurnEnd(() => ran.push("answer 2"), "answer");
    await Promise.resolve();
    expect(ran).toEqual([]);
    await turnEnd();
    expect(ran).toEqual(["answer 1", "answer 2", "log 1", "log 2"]);
    await turnEnd();
    expect(ran).toHaveLength(4);
  });

  it("leaves what a task adds for the next turn's end", async () => {
    await turnEnd();
    const ran: string[] = [];
    atTurnEnd(() => {
      ran.push("log");
      atTurnEnd(() => ran.push("answer added by the log write"), "answer");
    }, "log");
    await turnEnd();
    expect(ran).toEqual(["log"]);
    await turnEnd();
    expect(ran).toEqual(["log", "answer added by the log write"]);
  });

  it("gives a turn's first answer at once and the turn's others at its end, after it again the first at once", async () => {
    await turnEnd();
    expect(answerAtTurnEnd("first")).toBe("first");
    const second = answerAtTurnEnd("second");
    const third = answerAtTurnEnd("third");
    expect(second).toBeInstanceOf(Promise);
    expect(await pending(second as Promise<string>)).toBe(true);
    expect(await pending(third as Promise<string>)).toBe(true);
    await turnEnd();
    expect(await pending(second as Promise<string>)).toBe(false);
    expect([await second, await third]).toEqual(["second", "third"]);
    // A new turn: its first answer is given at once again.
    expect(answerAtTurnEnd("next turn")).toBe("next turn");
  });

  it("runs the turn's log writes once its deferred answers' promise jobs and ticks have run (their writes)", async () => {
    await turnEnd();
    const order: string[] = [];
    answerAtTurnEnd("first");
    for (const name of ["second", "third"]) {
      const answer = answerAtTurnEnd(name) as Promise<string>;
      // As @hono/node-server writes it: awaits, then node's `end` (its uncork may go by a tick).
      void (async () => {
        const value = await answer;
        await null;
        await new Promise((resolve) => process.nextTick(resolve));
        order.push(`wrote ${value}`);
      })();
    }
    atTurnEnd(() => order.push("log write"), "log");
    await turnEnd();
    expect(order).toEqual(["wrote second", "wrote third", "log write"]);
  });

  it("gives a promised answer once it settles, at once or at the end of that turn; a rejection as it came", async () => {
    await turnEnd();
    answerAtTurnEnd("this turn's first");
    let settle: (value: string) => void = () => {};
    const later = answerAtTurnEnd(new Promise<string>((resolve) => (settle = resolve)));
    await turnEnd();
    expect(await pending(later as Promise<string>)).toBe(true);
    settle("settled");
    expect(await later).toBe("settled");
    await expect(answerAtTurnEnd(Promise.reject(new Error("refused")))).rejects.toThrow("refused");
  });
});
