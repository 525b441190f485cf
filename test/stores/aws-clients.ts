// Secrets Manager clients of the AWS fake (test/fakes/aws.ts) for the AWS store tests, made as the
// store makes its own; one may put another writer, or a fault, between two of the store's calls.
import * as sdk from "@aws-sdk/client-secrets-manager";
import type { Logger } from "../../core/src/log";
import { awsClientOptions } from "../../core/src/stores/aws-config";

/** A client of the fake, made as the store makes its own. */
export function fakeClient(log: Logger): sdk.SecretsManagerClient {
  return new sdk.SecretsManagerClient(awsClientOptions({ aws_region_name: "us-east-1" }, {}, log));
}

export type Send = (command: unknown) => Promise<unknown>;

/**
 * A client of the fake whose commands go through `hook`, which sends them on with `send`: where a
 * test puts another writer between two of the store's calls, or a fault. A test may replace `hook`.
 */
export function hookedClient(log: Logger): {
  client: sdk.SecretsManagerClient;
  hook: (command: unknown, send: Send) => Promise<unknown>;
} {
  const client = fakeClient(log);
  const send = client.send.bind(client) as Send;
  const hooked = { client, hook: (command: unknown, next: Send) => next(command) };
  (client as { send: unknown }).send = (command: unknown) => hooked.hook(command, send);
  return hooked;
}
