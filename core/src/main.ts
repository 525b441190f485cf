// The `llm-secrets` command's entry: what core/build.mjs bundles into dist/cli.mjs.
import { commandOf, main } from "./cli";
import { createLogger } from "./log";

/** How long a stopped `serve` waits, at most, for its log lines to be taken by their readers. */
const DRAIN_MS = 15_000;

// Under Node 20 the AWS SDK prints a seven-line notice on every command that opens an AWS store
// (its releases from January 2027 need Node 22), before the command's own one line: README says
// it once instead. A value set by the user is kept.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

// stdout's reader gone (`llm-secrets get X | reader-that-died`, or a full disk): heard, not a crash
// with a stack, and a command whose answer was lost says so once on stderr and does not exit 0.
// `serve` goes on without its audit lines (log.ts says so on stderr), and a routine stop later is
// still a clean one.
const argv = process.argv.slice(2);
const answers = commandOf(argv) !== "serve";
let stdoutFailed = false;
let code: number | undefined;
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (answers && !stdoutFailed) process.stderr.write(`llm-secrets: cannot write to stdout (${err.code ?? "error"})\n`);
  stdoutFailed = true;
  // Heard once the command is done (a pipe's write fails a moment later): its exit code still says so.
  if (answers && code === 0) process.exitCode = 1;
});
code = await main(argv);
process.exitCode = answers && stdoutFailed && code === 0 ? 1 : code;

// A stopped `serve` whose stdout reader stalls without going (a paused log shipper, a full `| tee`)
// holds audit lines the reader has not taken, and they kept the process alive after the stop until
// the orchestrator's SIGKILL. Its readers get up to 15 s to take them (a slow one that is taking
// them loses nothing: its progress cannot be told from a stall, since node hands the lines queued
// behind a stalled write to the pipe as one write); then what is left is dropped, said on stderr,
// and the process exits. 15 s after the requests' 10 s fits a 30 s grace (Kubernetes' default). (A
// timer that does not hold the process: one with nothing pending ends before it.)
if (!answers) {
  setTimeout(() => {
    const pending = process.stdout.writableLength + process.stderr.writableLength;
    if (pending > 0) {
      createLogger((line) => process.stderr.write(line)).warn(
        "stopped with log lines their reader has not taken: dropped",
        { bytes: pending },
      );
    }
    process.exit();
  }, DRAIN_MS).unref();
}
