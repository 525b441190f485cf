/**
 * The `llm-secrets` command (SPEC section 1). Exit codes: 0 ok, 1 runtime error, 2 usage error.
 * Errors go to stderr on one line and never hold a secret value.
 */
import { rm } from "node:fs/promises";
import { parseArgs } from "node:util";
import { openSecret, sealSecret } from "./crypto";
import { ConfigError, InvalidInput, SecretsError } from "./errors";
import { bufferedWriter, createLogger, describeUnexpected, flushLogs, type Logger } from "./log";
import { ensureMasterKeyFile } from "./master-key";
import { refName } from "./refs";
import { createRuntime, type Runtime } from "./runtime";
import { decryptUnder } from "./secret-manager";
import { checkTlsFiles, startServer } from "./server";
import { loadSettings, requireKeys, type Settings, type SettingsInput } from "./settings";
import { awsSecretsManagerStore } from "./stores/aws";
import { awsKmsStore } from "./stores/aws-kms";
import { azureKeyVaultStore } from "./stores/azure";
import { FileStore, fileStore } from "./stores/file";
import { SEALED_WITH_ANOTHER_KEY } from "./stores/file-log";
import { googleSecretManagerStore } from "./stores/google";
import { googleKmsStore } from "./stores/google-kms";
import { localStore } from "./stores/local";
import { PORTABLE_STORES } from "./stores/portable";
import { VERSION } from "./version";

/** The embedded stores alone (the file store first, the default): what tests and the bench run a laptop's runtime with. */
export const LOCAL_STORES = [fileStore, localStore] as const;
/** What `llm-secrets serve` can open: the file store first (the default), every cloud's, then the portable ones (`local` among them). */
export const CLI_STORES = [
  fileStore,
  awsSecretsManagerStore,
  awsKmsStore,
  azureKeyVaultStore,
  googleSecretManagerStore,
  googleKmsStore,
  ...PORTABLE_STORES,
] as const;

const USAGE = `usage: llm-secrets <command> [options]

commands:
  serve          serve the HTTP API (default http://127.0.0.1:4000)
  get NAME       print a secret's value
  put NAME       store a secret; the value is read from stdin (one trailing newline is dropped;
                 typed at a terminal, it is not shown, Enter ends it, and Backspace and
                 Ctrl-U are the only editing keys)
  delete NAME    delete a secret
  encrypt        encrypt stdin with the salt key, in LiteLLM's format
  decrypt        decrypt a ciphertext read from stdin
  resolve        list the os.environ/ refs of --config and where each resolves from
  reencrypt [-]  re-seal the file store under the current salt key; with -, re-seal
                 ciphertexts read from stdin, one a line

get, delete, resolve and reencrypt open the file store's data dir ($LLM_SECRETS_DATA_DIR,
default ./.llm-secrets in the working dir) only when it holds one; put and serve make it.

options (each only with the command it names):
  --config FILE            LiteLLM config.yaml (default: $LLM_SECRETS_CONFIG); every command
  --host HOST              serve: address to listen on (default 127.0.0.1)
  --port PORT              serve: port (default $PORT or 4000; 0 picks a free one)
  --ssl_keyfile_path FILE  serve: TLS private key (with --ssl_certfile_path)
  --ssl_certfile_path FILE serve: TLS certificate chain
  --refresh                get: bypass the cache
  --description TEXT       put: description stored with the secret
  --show-values            resolve: print the resolved config (values included)
  -h, --help               this text
  --version                the version
`;

const OPTIONS = {
  config: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  ssl_keyfile_path: { type: "string" },
  ssl_certfile_path: { type: "string" },
  refresh: { type: "boolean" },
  description: { type: "string" },
  "show-values": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

/**
 * The options each command takes (--help and --version go with any): another is a usage error,
 * not ignored (`put NAME --host remote.example` wrote the local store).
 */
const COMMAND_OPTIONS: Record<string, readonly string[]> = {
  serve: ["config", "host", "port", "ssl_keyfile_path", "ssl_certfile_path"],
  get: ["config", "refresh"],
  put: ["config", "description"],
  delete: ["config"],
  encrypt: ["config"],
  decrypt: ["config"],
  resolve: ["config", "show-values"],
  reencrypt: ["config"],
};

export interface CliIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: Record<string, string | undefined>;
  cwd: string;
  /** Resolves when serve should stop (default: SIGINT or SIGTERM). */
  stopSignal?: Promise<unknown>;
}

class UsageError extends Error {}
/** Ctrl-C at the prompt: exit 130, as a shell reports a command ended by SIGINT. */
class Interrupted extends Error {}

export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  try {
    await run(argv, io);
    return 0;
  } catch (err) {
    // Log lines still held for the end of this turn (a failed store call's warning) go first: the
    // error is the last line.
    flushLogs();
    io.stderr.write(`llm-secrets: ${describe(err)}\n`);
    if (err instanceof Interrupted) return 130;
    return err instanceof UsageError || (err instanceof SecretsError && isUsageCode(err.code)) ? 2 : 1;
  }
}

function processIo(): CliIo {
  return {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
  };
}

/** The command the arguments name (options may come first: `--port 4000 serve`), as `run` reads it. */
export function commandOf(argv: string[]): string | undefined {
  const { positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false });
  return positionals[0];
}

/** Where the first unknown option is (1-based), by node's own reading of the arguments. */
function unknownOptionPosition(argv: string[]): number {
  const { tokens } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false, tokens: true });
  const unknown = tokens.find((t) => t.kind === "option" && !Object.hasOwn(OPTIONS, t.name));
  return (unknown?.index ?? 0) + 1;
}

async function run(argv: string[], io: CliIo): Promise<void> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (err) {
    // Not echoed: `--sk-...` may be a key typed in the wrong place. node's other messages name
    // only our own options ("Option '--port <value>' argument missing").
    if ((err as NodeJS.ErrnoException).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      throw new UsageError(`unknown option (argument ${unknownOptionPosition(argv)})`);
    }
    // One line, as every error ("...argument is ambiguous.\nDid you forget...": node's placeholder, not the input).
    throw new UsageError((err as Error).message.replace(/\s*\n\s*/g, " "));
  }
  const { values: flags, positionals } = parsed;
  const [command, ...args] = positionals;
  if (flags.version) {
    io.stdout.write(`${VERSION}\n`);
    return;
  }
  if (flags.help || command === undefined || command === "help") {
    (command === undefined && !flags.help ? io.stderr : io.stdout).write(USAGE);
    if (command === undefined && !flags.help) throw new UsageError("a command is required");
    return;
  }

  const allowed = Object.hasOwn(COMMAND_OPTIONS, command) ? COMMAND_OPTIONS[command] : undefined;
  const misplaced = allowed && Object.keys(flags).find((name) => !allowed.includes(name));
  if (misplaced) {
    const takers = Object.keys(COMMAND_OPTIONS).filter((c) => COMMAND_OPTIONS[c]?.includes(misplaced));
    throw new UsageError(`${command} does not take --${misplaced} (an option of ${takers.join(", ")})`);
  }

  const expectArgs = (count: number, what: string) => {
    if (args.length !== count) throw new UsageError(`${command} takes ${what}`);
  };
  const log = createLogger(bufferedWriter(io.stderr));
  // Every command but serve answers no caller: its master key authenticates nobody.
  const settingsInput: SettingsInput = {
    env: io.env,
    cwd: io.cwd,
    configFile: flags.config,
    stores: CLI_STORES,
    offline: command !== "serve",
  };

  switch (command) {
    case "serve":
      expectArgs(0, "no arguments");
      return serve(settingsInput, flags, io, log);
    case "get": {
      expectArgs(1, "one NAME");
      const rt = await runtime(settingsInput, log);
      const read = await rt.manager.get(args[0] as string, { refresh: flags.refresh });
      io.stdout.write(`${read.value}\n`);
      if (read.stale) io.stderr.write("llm-secrets: the store is unavailable; this is the last value read (stale)\n");
      return;
    }
    case "put": {
      expectArgs(1, "one NAME (the value comes from stdin)");
      const rt = await runtime(settingsInput, log, { create: true });
      const value = await readValue(io, "the value");
      // As the API refuses it (several cloud stores cannot hold one).
      if (value === "") throw new InvalidInput("the value is empty (it comes from stdin)");
      const { created } = await rt.manager.put(args[0] as string, value, { description: flags.description });
      await rt.close();
      io.stderr.write(`${created ? "created" : "updated"} ${args[0]}\n`);
      return;
    }
    case "delete": {
      expectArgs(1, "one NAME");
      const rt = await runtime(settingsInput, log);
      await rt.manager.delete(args[0] as string);
      await rt.close();
      io.stderr.write(`deleted ${args[0]}\n`);
      return;
    }
    case "encrypt": {
      expectArgs(0, "no arguments (the value comes from stdin)");
      const keys = requireKeys(settingsOf(settingsInput, log));
      io.stdout.write(`${sealSecret(await readValue(io, "the value to encrypt"), keys)}\n`);
      return;
    }
    case "decrypt": {
      expectArgs(0, "no arguments (the ciphertext comes from stdin)");
      const settings = settingsOf(settingsInput, log);
      const ciphertext = await readPasted(io, "the ciphertext to decrypt");
      io.stdout.write(`${decryptUnder(settings.keyManagement, settings.keys, ciphertext.trim())}\n`);
      return;
    }
    case "resolve":
      expectArgs(0, "no arguments");
      return resolve(settingsInput, Boolean(flags["show-values"]), io, log);
    case "reencrypt":
      if (args.length > 1 || (args.length === 1 && args[0] !== "-"))
        throw new UsageError("reencrypt takes no argument, or -");
      return args[0] === "-" ? reencryptStdin(settingsInput, io, log) : reencryptStore(settingsInput, io, log);
    default:
      throw new UsageError("unknown command"); // not echoed: it may be a secret typed in the wrong place
  }
}

/**
 * What `serve` warns of at start: config refs that did not resolve, models forwarding cannot reach
 * (no api_base) or whose api_key it will not find (read from the store only).
 */
async function warnOfConfig(rt: Runtime, settings: Settings, log: Logger): Promise<void> {
  // Only the refs' names and sources leave this function: the resolved config holds the values of
  // every ref the store holds, and serve's frame lives as long as the server.
  const { refs } = await rt.manager.resolveConfig(settings.rawConfig);
  const unresolved = refs.filter((r) => r.source === "unresolved").map((r) => r.name);
  if (unresolved.length > 0) log.warn("config refs did not resolve", { names: unresolved.join(",") });
  // Forwarding reads a model's api_key from the store only (never the environment over HTTP).
  const fromStore = new Set(refs.filter((r) => r.source === "store").map((r) => r.name));
  const models = settings.config.model_list ?? [];
  // Forwarding needs an api_base (LiteLLM's provider defaults are not applied): one line for all.
  const based = new Set(models.filter((m) => m.litellm_params.api_base).map((m) => m.model_name));
  const baseless = [...new Set(models.map((m) => m.model_name))].filter((name) => !based.has(name));
  if (baseless.length > 0) log.warn("forwarding to these models is 404: they have no api_base", someOf(baseless));
  // One line per key name, with the models that use it (a config of thousands of models sharing
  // one key gives one line, not thousands).
  const keyless = new Map<string, Set<string>>();
  for (const model of models) {
    const key = model.litellm_params.api_key ? refName(model.litellm_params.api_key) : undefined;
    // Not read from the store at start, or read there but not served over HTTP (an env-backed
    // store without the name in hosted_keys): forward reads it as GET /v1/secrets does.
    if (key !== undefined && (!fromStore.has(key) || !rt.manager.serves(key))) {
      keyless.set(key, (keyless.get(key) ?? new Set()).add(model.model_name));
    }
  }
  for (const [name, named] of keyless) {
    log.warn("forwarding to these models will not find their api_key: forward reads keys from the store only", {
      name,
      ...someOf([...named]),
    });
  }
}

/** Model names for a start warning: ten named, the count of the rest (a config may list thousands). */
function someOf(models: readonly string[]): { models: string; more?: number } {
  return { models: models.slice(0, 10).join(","), ...(models.length > 10 && { more: models.length - 10 }) };
}

async function serve(input: SettingsInput, flags: Record<string, unknown>, io: CliIo, log: Logger): Promise<void> {
  // One of the pair on the command line, and neither in the environment to complete it: a usage error.
  if (
    Boolean(flags.ssl_keyfile_path) !== Boolean(flags.ssl_certfile_path) &&
    !input.env.SSL_KEYFILE_PATH &&
    !input.env.SSL_CERTFILE_PATH
  ) {
    throw new UsageError("--ssl_keyfile_path and --ssl_certfile_path go together");
  }
  const server = {
    host: flags.host as string | undefined,
    port: flags.port === undefined ? undefined : parsePort(flags.port as string),
    sslKeyfile: flags.ssl_keyfile_path as string | undefined,
    sslCertfile: flags.ssl_certfile_path as string | undefined,
  };
  let settings = settingsOf({ ...input, server }, log);
  // TLS files that cannot be used stop the start before anything is made (a key, the store's files).
  if (settings.server.tls) checkTlsFiles(settings.server.tls);
  const local = settings.storeFactory.defaults.needsLocalKey;
  let generated: string | undefined;
  let rt: Awaited<ReturnType<typeof runtime>> | undefined;
  let running: Awaited<ReturnType<typeof startServer>>;
  try {
    if (local && !settings.masterKey) {
      const made = await ensureMasterKeyFile(settings.dataDir);
      if (made.created) generated = made.path;
      settings = loadSettings({ ...input, server });
    }
    if (!settings.masterKey) {
      throw new ConfigError("no master key: set LITELLM_MASTER_KEY (or general_settings.master_key)");
    }
    rt = await runtime(input, log, { settings, create: true, serving: true });
    await warnOfConfig(rt, settings, log);
    running = await startServer(rt, settings.server);
  } catch (err) {
    // A start that failed, for whatever reason (the store refusing a data dir others can write,
    // the port in use), leaves no generated key behind: nothing was sealed with it (the store
    // records a key only with its first write), and one left in a dir others can write could be
    // swapped before the next start reads it.
    await rt?.close();
    if (generated) {
      await rm(generated, { force: true });
      // A store sealed with another key, where master.key was missing: the key it was sealed with
      // is the one that went, not a new one. (With a salt key set, the master key sealed nothing.)
      if (
        input.env.LITELLM_SALT_KEY === undefined &&
        err instanceof ConfigError &&
        err.message.includes(SEALED_WITH_ANOTHER_KEY)
      ) {
        throw new ConfigError(
          `${err.message}. There was no master.key in ${settings.dataDir}: a new one was made for this start and removed again; put back the master.key the store was sealed with (or set LITELLM_MASTER_KEY to it)`,
        );
      }
    }
    throw err;
  }
  // SIGHUP: the key and certificate are read again (rotation without a restart).
  const reload = () =>
    running.reloadTls().catch((err: unknown) =>
      log.error("TLS reload failed; still serving the previous certificate", {
        reason: err instanceof Error ? err.message : String(err),
      }),
    );
  // Without TLS there is nothing to reload, and SIGHUP's default would end the process unclean.
  const hup = settings.server.tls ? reload : () => log.info("SIGHUP: nothing to reload (not serving HTTPS)");
  // The process's signals, when serve owns the process (a caller that embeds it passes stopSignal),
  // listened for before saying "serving": whoever waits for that line may signal at once.
  const ownsProcess = io.stopSignal === undefined;
  if (ownsProcess) process.on("SIGHUP", hup);
  const stopped = io.stopSignal ?? stopSignal();
  if (generated) {
    io.stdout.write(
      `generated a master key in ${generated} (mode 0600; it is not printed; with no LITELLM_SALT_KEY it also encrypts the store: keep a copy with the data)\n`,
    );
  }
  io.stdout.write(
    `llm-secrets ${VERSION} serving ${running.url} (store: ${settings.store}${local ? `, data: ${settings.dataDir}` : ""}; master key from ${settings.masterKeySource})\n`,
  );
  if (!settings.server.tls && !listensLocallyOnly(settings.server.host)) {
    log.warn(
      "serving plain HTTP beyond this machine: the master key and the values cross the network unencrypted; give --ssl_keyfile_path and --ssl_certfile_path, or put a TLS proxy in front",
      { host: settings.server.host },
    );
  }
  await stopped;
  log.info("stopping: requests under way may finish (up to 10 s); a second signal stops at once");
  // A second Ctrl-C (or SIGTERM) while requests finish: stop now.
  const now = (signal: NodeJS.Signals) => {
    log.warn("stopping now, without waiting for requests under way");
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  if (ownsProcess) {
    process.once("SIGINT", now);
    process.once("SIGTERM", now);
  }
  try {
    await running.close();
    await rt.close();
  } finally {
    if (ownsProcess) {
      process.off("SIGHUP", hup);
      process.off("SIGINT", now);
      process.off("SIGTERM", now);
    }
  }
}

async function resolve(input: SettingsInput, showValues: boolean, io: CliIo, log: Logger): Promise<void> {
  const settings = settingsOf(input, log);
  if (!input.configFile && !input.env.LLM_SECRETS_CONFIG) throw new UsageError("resolve needs --config FILE");
  const rt = await runtime(input, log, { settings });
  const { config, refs } = await rt.manager.resolveConfig(settings.rawConfig);
  if (showValues) io.stdout.write(`${JSON.stringify(config, null, 2)}\n`);
  else
    for (const ref of refs)
      io.stdout.write(`${[shown(ref.name), ref.source, ...(ref.reason ? [ref.reason] : [])].join("\t")}\n`);
  const unresolved = refs.filter((r) => r.source === "unresolved");
  if (unresolved.length > 0) {
    throw new SecretsError(
      "unresolved_refs",
      `${unresolved.length} of ${refs.length} ref(s) did not resolve: ${unresolved.map((r) => shown(r.name)).join(", ")}`,
    );
  }
}

/** A ref's name as `resolve` prints it: one with a control character (no name, then) as a JSON string, so it keeps its one line and field. */
function shown(name: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
  return /[\u0000-\u001f\u007f]/.test(name) ? JSON.stringify(name) : name;
}

async function reencryptStore(input: SettingsInput, io: CliIo, log: Logger): Promise<void> {
  // The same opening as every other command, so a missing key gets the same guidance.
  const rt = await runtime(input, log);
  const store = rt.backend;
  if (!(store instanceof FileStore)) {
    await rt.close();
    throw new UsageError("reencrypt re-seals the file store; use - to re-seal ciphertexts from stdin");
  }
  // Which key, by its check (the first 8 characters of what the log's header records): run in a
  // shell without the servers' keys, this re-sealed under the old key it already had, said
  // "re-sealed", and the operator then dropped the key the store was still sealed with. Run with the
  // two variables the wrong way round, it re-seals under the old key: nothing in the store says
  // which key is newer (a log migrated by an earlier build records its keys in either order, and in
  // a rolling restart both keys write), so the answer says when a previous key may go instead.
  const { current, elsewhere, others } = store.keyState();
  const check = current.slice(0, 8);
  if (elsewhere === 0 && !others) {
    await rt.close();
    io.stderr.write(
      `nothing to re-seal: every secret in ${store.location} is already sealed under the current salt key (key check ${check}). ` +
        "To rotate, run reencrypt as the servers run: the new key in LITELLM_SALT_KEY, the old one in LLM_SECRETS_PREVIOUS_SALT_KEYS\n",
    );
    return;
  }
  const total = await store.reencrypt((done, all) => io.stderr.write(`re-sealed ${done} of ${all}\n`));
  await rt.close();
  io.stderr.write(
    `re-sealed ${total} secret(s) in ${store.location} under the current salt key (key check ${check}); ` +
      `${elsewhere} of them ${elsewhere === 1 ? "was" : "were"} sealed under another key. ` +
      "Drop a previous key only once every server runs with this one as its salt key (LITELLM_SALT_KEY, or the master key without one)\n",
  );
}

async function reencryptStdin(input: SettingsInput, io: CliIo, log: Logger): Promise<void> {
  const keys = requireKeys(settingsOf(input, log));
  const text = await readPasted(io, "the ciphertexts to re-seal, one a line");
  // Line n out is line n in: a blank line (a NULL of an exported column) stays blank, so the output
  // pastes back row for row. The text's last newline ends its last line; it starts no other.
  const lines = text === "" ? [] : text.replace(/\r?\n$/, "").split(/\r?\n/);
  const out: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === "") {
      out.push("");
      return;
    }
    try {
      out.push(sealSecret(openSecret(line.trim(), keys), keys));
    } catch (err) {
      throw Object.assign(err as Error, { message: `${(err as Error).message} (line ${i + 1})` });
    }
  });
  // All or nothing: output starts only once every line has been re-sealed.
  io.stdout.write(out.map((l) => `${l}\n`).join(""));
}

function settingsOf(input: SettingsInput, log: Logger): Settings {
  const settings = loadSettings(input);
  for (const warning of settings.warnings) log.warn(warning);
  return settings;
}

/**
 * A command's runtime. `create`: the command may make the store (serve, put); the others read or
 * change one that is there, so a wrong working dir or LLM_SECRETS_DATA_DIR is refused rather than
 * answered from an empty store made there. Only `serving` audits (no other command answers a
 * request), so stdout failing is main.ts's to say, once.
 */
async function runtime(
  input: SettingsInput,
  log: Logger,
  options: { settings?: Settings; create?: boolean; serving?: boolean } = {},
): Promise<Runtime> {
  return createRuntime({
    stores: input.stores,
    settings: options.settings ?? settingsOf(input, log),
    log,
    create: options.create === true,
    ...(!options.serving && { audit: () => {}, keyEvents: false }),
  });
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65_535)
    throw new UsageError("--port takes a number from 0 (any free port) to 65535");
  return port;
}

/**
 * A secret value from stdin, one trailing newline dropped. Typed at a terminal, it is not echoed
 * (nor kept in the scrollback): one line, ended by Enter; Backspace and Ctrl-U edit it; Ctrl-C gives
 * up. Any other control character (an arrow key's escape sequence, Ctrl-W, Ctrl-Z) would be stored
 * in the value, unseen: the value is refused. Piped, it is read whole.
 */
async function readValue(io: CliIo, what: string): Promise<string> {
  const stdin = io.stdin as NodeJS.ReadStream;
  if (!stdin.isTTY || typeof stdin.setRawMode !== "function") return dropTrailingNewline(await readStdin(io.stdin));
  // Listened to, not iterated: leaving a `for await` early ends stdin first, and raw mode cannot
  // be switched off on an ended stream (the terminal stayed raw while the command went on).
  return new Promise<string>((resolve, reject) => {
    // A leading byte order mark is part of the value, as through the API (`ignoreBOM`).
    const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
    let typed = "";
    let control = false;
    const done = (outcome: () => void) => {
      stdin.off("data", onData);
      stdin.off("end", finish);
      stdin.setRawMode(false);
      stdin.pause();
      io.stderr.write("\n");
      outcome();
    };
    // Refused at Enter, not at the control character: what is typed after it would reach the
    // shell once the command had ended, the rest of the value run as a command.
    const finish = () =>
      done(() =>
        control
          ? reject(
              new UsageError(
                "the value holds a control character (arrow keys are not supported here); pipe it instead",
              ),
            )
          : resolve(typed),
      );
    const onData = (chunk: Buffer) => {
      let text: string;
      try {
        text = decoder.decode(chunk, { stream: true }); // a character may come in two chunks
      } catch {
        done(() => reject(new UsageError("stdin is not UTF-8 text")));
        return;
      }
      for (const char of text) {
        if (char === "\r" || char === "\n" || char === "\u0004") return finish();
        if (char === "\u0003") return done(() => reject(new Interrupted("no value: interrupted")));
        if (char === "\u007f" || char === "\b") typed = [...typed].slice(0, -1).join("");
        else if (char === "\u0015") {
          // Ctrl-U: erases what was typed (a control character among it too), as a terminal does.
          typed = "";
          control = false;
        } else if (char < " ") control = true;
        else typed += char;
      }
    };
    stdin.setRawMode(true); // before the prompt: what is typed once it shows is not echoed
    io.stderr.write(`${what} (not shown; Enter ends it): `);
    stdin.on("data", onData);
    stdin.on("end", finish);
  });
}

/**
 * stdin whole, as `readStdin`; at a terminal, after a prompt on stderr saying what to paste and how
 * to end it (the read waits for the end of input, silently otherwise).
 */
async function readPasted(io: CliIo, what: string): Promise<string> {
  if (io.stdin.isTTY) io.stderr.write(`${what} (paste, then Enter and Ctrl-D):\n`);
  return readStdin(io.stdin);
}

/**
 * The most stdin a command reads (a value, a ciphertext, or `reencrypt -`'s lines): more is refused
 * before it is all held, so a script that points a command at the wrong stream (`< /dev/zero`) gets
 * an error, not a process that grows until the machine runs out of memory.
 */
const MAX_STDIN_BYTES = 64 * 1024 * 1024;

async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of stream) {
    const buffer = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
    bytes += buffer.byteLength;
    if (bytes > MAX_STDIN_BYTES) {
      throw new SecretsError("payload_too_large", `stdin holds more than ${MAX_STDIN_BYTES} bytes`);
    }
    chunks.push(buffer);
  }
  try {
    // A leading byte order mark is part of the value, as through the API (`ignoreBOM`).
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new UsageError("stdin is not UTF-8 text");
  }
}

function dropTrailingNewline(text: string): string {
  return text.replace(/\r?\n$/, "");
}

function stopSignal(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}

/**
 * Whether a listen address is reached from this machine alone (127.0.0.0/8, ::1, localhost). Not
 * outbound.ts's `isLoopback`: an address to connect to, for which 0.0.0.0 is this machine too.
 */
function listensLocallyOnly(host: string): boolean {
  return /^(127\.\d+\.\d+\.\d+|::1|localhost)$/i.test(host);
}

function isUsageCode(code: string): boolean {
  return code === "invalid_name" || code === "invalid_request";
}

function describe(err: unknown): string {
  if (err instanceof SecretsError) return `${err.code}: ${err.message}`;
  if (err instanceof UsageError) return `${err.message} (see llm-secrets --help)`;
  if (err instanceof Interrupted) return err.message;
  if (err instanceof ConfigError) return err.message;
  const fields = describeUnexpected(err);
  return `internal error (${fields.error}${fields.where ? ` at ${fields.where}` : ""})`;
}
