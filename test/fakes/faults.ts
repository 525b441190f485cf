/**
 * The fakes' injected faults: `fail(n, fault)` fails the next n requests; with `only`, the next n
 * requests of that one operation (AWS's action, Azure's HTTP method or method and collection, Google's
 * RPC), so a test can let a store's first call through and fail its second.
 */
export class FaultQueue<F extends string> {
  #queue: { fault: F; only?: string }[] = [];

  add(times: number, fault: F, only?: string): void {
    for (let i = 0; i < times; i++) this.#queue.push(only === undefined ? { fault } : { fault, only });
  }

  /** The fault for a request that is any of `operations`, taken off the queue; undefined when none applies. */
  take(...operations: string[]): F | undefined {
    const i = this.#queue.findIndex((f) => f.only === undefined || operations.includes(f.only));
    return i < 0 ? undefined : this.#queue.splice(i, 1)[0]?.fault;
  }

  clear(): void {
    this.#queue = [];
  }
}
