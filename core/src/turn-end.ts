/**
 * The end of an event-loop turn, as one queue: what is left for it runs once every I/O callback of
 * the turn has run (node's check phase: one `setImmediate` for all of it), the answers first, then
 * the writes of log lines.
 *
 * - Answers (`serve`, through http/node-listener.ts): the first answer ready in a turn is written
 *   at once, the turn's later ones together at its end. Under load, the answers of one turn then
 *   reach their sockets back to back, and a client busy reading them (a gateway's connection pool,
 *   the loopback bench's load generator) is woken for them once or twice, not once an answer:
 *   waking a reader that went to sleep is the largest cost of a write on loopback. Measured under
 *   the bench's load (32 keep-alive connections, this 2-core machine): 39.9 → 33.3 µs of the
 *   server's CPU per cached read. A lone request (one connection) is answered at once, as before;
 *   a later answer waits for the other callbacks of its turn at most, never for a timer.
 * - Log lines (log.ts): a turn's lines are one write, made after that turn's answers, so a log
 *   write (a system call to a file or a pipe) never delays an answer.
 */

type Task = () => void;

let answers: Task[] = [];
let logWrites: Task[] = [];
let scheduled = false;
let answeredThisTurn = false;

/** Runs `task` at the end of this event-loop turn: an `answer` before any `log` write. */
export function atTurnEnd(task: Task, kind: "answer" | "log"): void {
  if (kind === "answer") answers.push(task);
  else logWrites.push(task);
  schedule();
}

function schedule(): void {
  if (!scheduled) {
    scheduled = true;
    setImmediate(runTurnEnd);
  }
}

/** `value` (a promise's too, once it settles), given at the end of the turn it became known in. */
export function answerAtTurnEnd<T>(value: T | Promise<T>): T | Promise<T> {
  if (value instanceof Promise) return value.then(answerAtTurnEnd);
  if (!answeredThisTurn) {
    answeredThisTurn = true;
    schedule();
    return value;
  }
  return new Promise((resolve) => atTurnEnd(() => resolve(value), "answer"));
}

function runTurnEnd(): void {
  scheduled = false;
  answeredThisTurn = false;
  // What these tasks leave for the turn's end (an answer's write logging a line) waits for the next.
  const tasks = answers.length === 0 ? logWrites : logWrites.length === 0 ? answers : [...answers, ...logWrites];
  answers = [];
  logWrites = [];
  for (const task of tasks) task();
}
