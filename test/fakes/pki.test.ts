// The fakes' CA reaches the workers before they start: a real client trusts a fake's certificate
// with no option of its own.
import { readFileSync } from "node:fs";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { expect, inject, it } from "vitest";

it("is trusted by fetch through NODE_EXTRA_CA_CERTS, set before the workers started", async () => {
  const pki = inject("testPki");
  expect(readFileSync(process.env.NODE_EXTRA_CA_CERTS as string, "utf8")).toContain(readFileSync(pki.caFile, "utf8"));
  const server = createServer(
    { key: readFileSync(pki.serverKeyFile), cert: readFileSync(pki.serverCertFile) },
    (_, res) => res.end("trusted"),
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const { port } = server.address() as AddressInfo;
    expect(await (await fetch(`https://localhost:${port}/`)).text()).toBe("trusted");
    expect(await (await fetch(`https://127.0.0.1:${port}/`)).text()).toBe("trusted");
  } finally {
    server.close();
  }
});
