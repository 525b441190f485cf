/**
 * The end of an event-loop turn: what is left for it runs once every I/O callback of the turn has
 * run (node's check phase, two `setImmediate`s a turn), the answers first, then the writes of log
 * lines.
 *
 * - Answers (`serve`, through http/node-listener.ts): the first answer ready in a turn is written
 *   at once, the turn's later ones together at its end. Under load, the answers of one turn then
 *   reach their sockets back to back, and a client on the same machine busy reading them (a
 *   gateway beside `serve`, the loopback bench's load generator) is woken for them once or twice,
 *   not once an answer: waking a reader that went to sleep is the largest cost of a write on
 *   loopback, and the kernel counts it as the writer's. Measured under the bench's load (32
 *   keep-alive connections, this 2-core machine): 39.9 → 33.3 µs of the server's CPU per cached
 *   read. A client on another machine is woken by its own network card, so the saving there is
 *   smaller. A lone request (one connection) is answered at once, as before; a later answer waits
 *   for the other callbacks of its turn, or, when it became ready after its turn's end ran (in
 *   code that yields with `setImmediate`), until the next turn's end.
 * - Log lines (log.ts): a turn's lines are one write, made once that turn's answers are written
 *   (promise jobs and ticks run between the two callbacks), so a log write (a system call to a file
 *   or a pipe) never delays an answer.
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
    // Two callbacks of one check phase: node runs the promise jobs and ticks that the first leaves
    // (each answer's write: @hono/node-server awaits it, then node's `end` writes) before the second.
    setImmediate(runAnswers);
    setImmediate(runLogWrites);
  }
}

/**
 * `value` (a promise's too, once it settles): at once when it is the first answer of this turn, else
 * at the turn's end.
 */
export function answerAtTurnEnd<T>(value: T | Promise<T>): T | Promise<T> {
  if (value instanceof Promise) return value.then(answerAtTurnEnd);
  if (!answeredThisTurn) {
    answeredThisTurn = true;
    schedule();
    return value;
  }
  return new Promise((resolve) => atTurnEnd(() => resolve(value), "answer"));
}

function runAnswers(): void {
  scheduled = false;
  answeredThisTurn = false;
  const tasks = answers;
  answers = [];
  for (const task of tasks) task();
}

/** What a log write leaves for the turn's end (an answer, a line) waits for the next turn's. */
function runLogWrites(): void {
  const tasks = logWrites;
  logWrites = [];
  for (const task of tasks) task();
}
