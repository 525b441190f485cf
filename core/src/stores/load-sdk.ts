/**
 * A cloud client library, imported when its store opens (never at import: a build that ships a
 * store it does not use pays nothing for it). Where a bundler split the library into a chunk of its
 * own (the CLI's build), a CommonJS package arrives as the chunk's `default`; node and the test
 * runner hand over its named exports. This takes either.
 */
export async function loadSdk<T extends object>(load: () => Promise<T>): Promise<T> {
  const loaded = await load();
  return (loaded as { default?: T }).default ?? loaded;
}
