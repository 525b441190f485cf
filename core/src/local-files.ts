/**
 * What the local files (the file store's data dir and log, the generated master key) need of the
 * platform: POSIX file modes (0600 and 0700 keep them to their owner), fsync of a directory and
 * truncating an O_APPEND file. Windows has none of them; a filesystem that ignores modes (a
 * Windows drive under WSL) is told so, as chmod cannot fix it there.
 */
import { ConfigError } from "./errors";

/**
 * Refused on Windows at start, saying where it runs, rather than failing later one way after
 * another (node there reports every file 0666; a key file would take its folder's permissions).
 */
export function requirePosixFiles(platform: NodeJS.Platform = process.platform): void {
  if (platform === "win32") {
    throw new ConfigError(
      "the file store and its key file need POSIX file permissions, which Windows does not have: run llm-secrets on Linux or macOS, or under WSL 2 with the data dir on the Linux filesystem (not /mnt/c)",
    );
  }
}

/**
 * A mode of every bit (777, 666) from a filesystem that ignores modes (a Windows drive under WSL,
 * some network mounts): chmod cannot change it, so the advice says where to keep the dir instead.
 */
export function ignoresModes(mode: number): string {
  return (mode & 0o666) === 0o666
    ? " (if chmod does not change it, the filesystem ignores permissions, as a Windows drive under WSL does: keep the data dir on a Linux filesystem)"
    : "";
}
