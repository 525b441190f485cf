/**
 * The AWS deployment (SPEC section 9): the Lambda bundle of functions/aws beside Secrets Manager,
 * least privilege by default.
 *
 * - Two functions from the one bundle (`index.http`, `index.sqs`), Node 22, arm64, logs kept 30 days.
 * - HTTPS: a Function URL with IAM auth (the gateway signs with SigV4 and sends the master key in
 *   `x-litellm-api-key`), or an API Gateway HTTP API (`entry: "http-api"`).
 * - Key events: an SQS queue, its dead-letter queue after 5 receives, both keeping messages at most
 *   6 days (`LLM_SECRETS_MAX_EVENT_AGE`: an event must not outlive the tombstones that keep it from
 *   reviving a key), feeding the sqs function with ReportBatchItemFailures.
 * - A customer-managed KMS key (rotated yearly) that encrypts the secrets it writes and the master
 *   key, and another that encrypts the two queues only: a producer needs GenerateDataKey and Decrypt
 *   on the queues' key (SSE-KMS), and that grant must open no secret.
 * - IAM, a role for each function (the queue's grants on the key-events one only): reads only on
 *   the names the API serves (`hostedKeys` when given, else the virtual-key prefix); writes
 *   (describe, create, put, update, restore, delete, tag, untag) only under the prefix, and none
 *   with `read_only`. No `*` action anywhere, and nothing on the master key's secret.
 * - Settings as environment: `LLM_SECRETS_CONFIG` (the store's part of config.yaml, from the props)
 *   and `LITELLM_MASTER_KEY` (generated into a secret of its own, read at deploy time), and when
 *   given `LITELLM_SALT_KEY` and `LLM_SECRETS_PREVIOUS_SALT_KEYS` (secrets made outside, read the
 *   same way at the versions named); the HTTP function's cache lives `refreshIntervalSeconds`
 *   (300 s), since key events reach another function.
 * - Outputs: the API's URL and the HTTP function's ARN (what a caller's invoke policy names), the
 *   queue's URL and ARN, the dead-letter queue's URL, the master key's secret and both keys' ARNs.
 * The store is Secrets Manager (aws_kms only reads ciphertexts from the environment and writes
 * nothing: key events could not work). Prefix, access mode and hosted keys are synth-time props, so
 * IAM is scoped at synth.
 */
import { ArnFormat, CfnOutput, Duration, SecretValue, Stack, type StackProps } from "aws-cdk-lib";
import * as apigwv2 from "aws-cdk-lib/aws-apigatewayv2";
import * as integrations from "aws-cdk-lib/aws-apigatewayv2-integrations";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import * as lambda from "aws-cdk-lib/aws-lambda";
import { SqsEventSource } from "aws-cdk-lib/aws-lambda-event-sources";
import * as logs from "aws-cdk-lib/aws-logs";
import * as secretsmanager from "aws-cdk-lib/aws-secretsmanager";
import * as sqs from "aws-cdk-lib/aws-sqs";
import type { Construct } from "constructs";

/** A Secrets Manager VersionId: 32 to 64 of letters, digits, `_` and `-`. */
const SECRET_VERSION_ID = /^[A-Za-z0-9_-]{32,64}$/;

export type AccessMode = "read_only" | "write_only" | "read_and_write";

export interface LlmSecretsStackProps extends StackProps {
  /** The Lambda code: `functions/aws/dist` (npm run build), or a test's. */
  code: lambda.Code;
  /** `key_management_settings.access_mode`; default `read_and_write` (the queue writes virtual keys). */
  accessMode?: AccessMode;
  /**
   * `hosted_keys`, written into the config only when given: then the only names the API reads, virtual
   * keys included (the queue still writes those: SPEC section 4), and then the only secrets the
   * roles may read (no value under the prefix).
   */
  hostedKeys?: readonly string[];
  /** `prefix_for_stored_virtual_keys`; default `litellm/`. */
  prefix?: string;
  /** `function-url` (IAM auth, default) or `http-api`. */
  entry?: "function-url" | "http-api";
  /**
   * Grant `secretsmanager:ListSecrets` for `GET /v1/secrets` (default off). AWS scopes it to no
   * resource: the function then sees every secret's name (never a value) in the account and region.
   */
  listNames?: boolean;
  /**
   * The HTTP function's cache lifetime in seconds (`SECRET_MANAGER_REFRESH_INTERVAL`); default 300.
   * A key event updates only the cache of the key-events function that applied it: the HTTP
   * function's instances serve what they cached until this runs out (0: no cache).
   */
  refreshIntervalSeconds?: number;
  /**
   * The master key's Secrets Manager version the functions take (`VersionId`). CloudFormation
   * resolves the key only when it updates a function, so a rotated key reaches them only if the
   * template changes: deploy with the new version's id after each rotation (infra/README.md).
   * Unset: the version current at the functions' last update (a new stack's first deploy).
   */
  masterKeyVersionId?: string;
  /**
   * The salt key (`LITELLM_SALT_KEY`, what seals and opens ciphertexts: `/v1/encrypt`, key events'
   * `key_ciphertext`): a Secrets Manager secret made outside the stack (name or ARN), passed as the
   * master key is, at the version `saltKeyVersionId` names (required with it: CloudFormation
   * resolves a reference again only when it changes). Unset: no `LITELLM_SALT_KEY`, and the master
   * key seals, as LiteLLM does.
   */
  saltKeySecret?: string;
  saltKeyVersionId?: string;
  /**
   * `LLM_SECRETS_PREVIOUS_SALT_KEYS`: a secret holding a JSON array of the keys the salt key (or a
   * sealing master key) replaced, tried after it when opening; at the version
   * `previousSaltKeysVersionId` names. Unset: none.
   */
  previousSaltKeysSecret?: string;
  previousSaltKeysVersionId?: string;
}

/** `LLM_SECRETS_MAX_EVENT_AGE`'s default: no queue keeps an event longer. */
export const MAX_EVENT_AGE_DAYS = 6;
/** The key-events function's time per batch; the queue hides a received batch six times that. */
export const KEY_EVENTS_TIMEOUT_SECONDS = 120;
/**
 * The HTTP function's time per request: Lambda's longest, past forward's own 600 s wait for an
 * upstream (SPEC section 8), so that wait ends in forward's 504, not in Lambda's timeout.
 */
const HTTP_TIMEOUT_SECONDS = 900;
/**
 * The HTTP function's cache lifetime by default: how long a virtual key deleted by a key event may
 * still be served (the general default, a day, would be that long).
 */
const HTTP_REFRESH_INTERVAL_SECONDS = 300;

export class LlmSecretsStack extends Stack {
  readonly httpFunction: lambda.Function;
  readonly queue: sqs.Queue;
  readonly deadLetters: sqs.Queue;
  /** Encrypts the secrets it writes and the master key. */
  readonly key: kms.Key;
  /** Encrypts the two queues, and nothing else: producers are granted its use. */
  readonly queueKey: kms.Key;

  constructor(scope: Construct, id: string, props: LlmSecretsStackProps) {
    super(scope, id, props);
    const accessMode = props.accessMode ?? "read_and_write";
    const prefix = (props.prefix ?? "litellm/").replace(/\/?$/, "/");
    const writes = accessMode !== "read_only";
    const refreshInterval = props.refreshIntervalSeconds ?? HTTP_REFRESH_INTERVAL_SECONDS;
    if (!Number.isSafeInteger(refreshInterval) || refreshInterval < 0) {
      throw new Error(`refreshIntervalSeconds: expected a whole number of seconds, got ${refreshInterval}`);
    }
    // Secrets Manager's VersionId: 32 to 64 characters (a UUID by default); no `:`, which would end
    // the dynamic reference's field.
    if (props.masterKeyVersionId !== undefined && !SECRET_VERSION_ID.test(props.masterKeyVersionId)) {
      throw new Error(`masterKeyVersionId: expected a Secrets Manager VersionId, got ${props.masterKeyVersionId}`);
    }
    const saltKey = keySecretOf("saltKey", props.saltKeySecret, props.saltKeyVersionId, prefix, props.hostedKeys);
    const previousSaltKeys = keySecretOf(
      "previousSaltKeys",
      props.previousSaltKeysSecret,
      props.previousSaltKeysVersionId,
      prefix,
      props.hostedKeys,
    );

    this.key = new kms.Key(this, "SecretsKey", {
      description: "llm-secrets: encrypts the secrets it writes",
      enableKeyRotation: true,
    });

    const masterKey = new secretsmanager.Secret(this, "MasterKey", {
      description: "llm-secrets: the master key gateways present (LITELLM_MASTER_KEY)",
      encryptionKey: this.key,
      generateSecretString: { passwordLength: 48, excludePunctuation: true },
    });

    const config = [
      "general_settings:",
      "  key_management_system: aws_secret_manager",
      "  key_management_settings:",
      `    access_mode: ${accessMode}`,
      "    store_virtual_keys: true",
      `    prefix_for_stored_virtual_keys: ${JSON.stringify(prefix)}`,
      `    kms_key_id: ${this.key.keyArn}`,
      // Only when names are given: an empty hosted_keys would serve no name at all.
      ...(props.hostedKeys?.length ? [`    hosted_keys: ${JSON.stringify(props.hostedKeys)}`] : []),
      "",
    ].join("\n");

    // A role for each function: the key-events function's queue grants (its event source's) stay off
    // the HTTP function, which callers reach. The HTTP function's keeps the id of the one role before.
    const roleOf = (id: string) =>
      new iam.Role(this, id, {
        assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
        managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName("service-role/AWSLambdaBasicExecutionRole")],
      });
    const httpRole = roleOf("FunctionRole");
    const keyEventsRole = roleOf("KeyEventsRole");
    // What both do with secrets and their key: the API's reads and writes, and key events' writes.
    const secretsAccess = new iam.Policy(this, "SecretsAccess", { roles: [httpRole, keyEventsRole] });
    const secretArn = (name: string) =>
      Stack.of(this).formatArn({
        service: "secretsmanager",
        resource: "secret",
        resourceName: name,
        arnFormat: ArnFormat.COLON_RESOURCE_NAME,
      });
    // A secret's ARN ends in 6 random characters: `name-??????`. With hosted keys, those are the only
    // names the API reads: a virtual key answers 403 not_hosted, so no value under the prefix is
    // read (key events' writes describe them: DescribeSecret below).
    const readable = props.hostedKeys?.length
      ? props.hostedKeys.map((name) => secretArn(`${name}-??????`))
      : [secretArn(`${prefix}*`)];
    secretsAccess.addStatements(
      new iam.PolicyStatement({
        sid: "ReadServedNames",
        actions: ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
        resources: readable,
      }),
    );
    if (props.listNames) {
      secretsAccess.addStatements(
        new iam.PolicyStatement({
          sid: "ListSecretNames",
          actions: ["secretsmanager:ListSecrets"],
          resources: ["*"], // ListSecrets takes no resource scope
        }),
      );
    }
    if (writes) {
      secretsAccess.addStatements(
        new iam.PolicyStatement({
          sid: "WriteVirtualKeysUnderThePrefix",
          actions: [
            // What a write reads first: the secret's change time (tags) and current version.
            "secretsmanager:DescribeSecret",
            "secretsmanager:PutSecretValue",
            "secretsmanager:RestoreSecret",
            "secretsmanager:DeleteSecret",
            "secretsmanager:TagResource",
            // A PUT's tags replace the secret's.
            "secretsmanager:UntagResource",
          ],
          resources: [secretArn(`${prefix}*`)],
        }),
      );
      // Secrets are made under the stack's key only (the store sends it as kms_key_id), and a
      // PUT's description replaces the secret's (UpdateSecret) without another key: neither can
      // move the secrets off the stack's key.
      secretsAccess.addStatements(
        new iam.PolicyStatement({
          sid: "CreateVirtualKeysUnderTheStacksKey",
          actions: ["secretsmanager:CreateSecret"],
          resources: [secretArn(`${prefix}*`)],
          conditions: { StringEquals: { "secretsmanager:KmsKeyId": this.key.keyArn } },
        }),
      );
      secretsAccess.addStatements(
        new iam.PolicyStatement({
          sid: "SetVirtualKeyDescriptionsUnderThePrefix",
          actions: ["secretsmanager:UpdateSecret"],
          resources: [secretArn(`${prefix}*`)],
          conditions: { Null: { "secretsmanager:KmsKeyId": "true" } },
        }),
      );
    }
    // The key encrypts what we write: Secrets Manager asks for GenerateDataKey when a value is put
    // and Decrypt when it is read, on the caller's rights; nothing calls Encrypt. Named actions only
    // (grantEncryptDecrypt adds `kms:ReEncrypt*` and `kms:GenerateDataKey*`). Decrypt also opens
    // events queued under this key before the queues had a key of their own (a stack deployed before
    // that change). Nothing on the master key's secret: CloudFormation reads it (below).
    secretsAccess.addStatements(
      new iam.PolicyStatement({
        sid: "UseTheSecretsKey",
        actions: ["kms:Decrypt", "kms:GenerateDataKey"],
        resources: [this.key.keyArn],
      }),
    );

    const environment = {
      LLM_SECRETS_CONFIG: config,
      // A deploy-time reference in the template; CloudFormation resolves it, with the deployer's
      // rights (the functions' roles may not read the secret), into the functions' environment
      // (readable with lambda:GetFunctionConfiguration; infra/README.md says so), only when it
      // updates them: naming the version makes a rotation change the template.
      LITELLM_MASTER_KEY: SecretValue.secretsManager(masterKey.secretArn, {
        versionId: props.masterKeyVersionId,
      }).unsafeUnwrap(),
      // The same way, each only when given (else the master key seals, as before), always at a
      // named version: a new one changes the template, so the functions take it at that deploy.
      ...(saltKey && {
        LITELLM_SALT_KEY: SecretValue.secretsManager(saltKey.secret, { versionId: saltKey.versionId }).unsafeUnwrap(),
      }),
      ...(previousSaltKeys && {
        LLM_SECRETS_PREVIOUS_SALT_KEYS: SecretValue.secretsManager(previousSaltKeys.secret, {
          versionId: previousSaltKeys.versionId,
        }).unsafeUnwrap(),
      }),
    };
    const common = {
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      code: props.code,
      environment,
      memorySize: 512,
    };
    this.httpFunction = new lambda.Function(this, "Http", {
      ...common,
      role: httpRole,
      // Its cache is not told of key events (another function applies them): a deleted virtual key
      // stays readable here until its entry expires, so entries live minutes, not a day.
      environment: { ...environment, SECRET_MANAGER_REFRESH_INTERVAL: String(refreshInterval) },
      handler: "index.http",
      // A forwarded completion may take minutes (forward waits up to 600 s); an HTTP API cuts at 30 s.
      timeout: Duration.seconds(HTTP_TIMEOUT_SECONDS),
      logGroup: new logs.LogGroup(this, "HttpLogs", { retention: logs.RetentionDays.ONE_MONTH }),
    });
    const keyEvents = new lambda.Function(this, "KeyEvents", {
      ...common,
      role: keyEventsRole,
      handler: "index.sqs",
      // Ten records one after another, each a few SDK calls that may be retried when throttled: a
      // batch that timed out would come back whole (no partial report), good records and all.
      timeout: Duration.seconds(KEY_EVENTS_TIMEOUT_SECONDS),
      logGroup: new logs.LogGroup(this, "KeyEventsLogs", { retention: logs.RetentionDays.ONE_MONTH }),
    });
    // Made after their grants, as CDK orders a function after its role's own policy.
    for (const fn of [this.httpFunction, keyEvents]) fn.node.addDependency(secretsAccess);

    // The queues' own key: a producer (the gateway's key hooks) sends under SSE-KMS with
    // kms:GenerateDataKey and kms:Decrypt on it, which must not reach the secrets' key.
    this.queueKey = new kms.Key(this, "QueueKey", {
      description: "llm-secrets: encrypts the key-event queues",
      enableKeyRotation: true,
    });
    const retention = Duration.days(MAX_EVENT_AGE_DAYS);
    this.deadLetters = new sqs.Queue(this, "KeyEventsDeadLetters", {
      retentionPeriod: retention,
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: this.queueKey,
      enforceSSL: true,
    });
    this.queue = new sqs.Queue(this, "KeyEventsQueue", {
      retentionPeriod: retention,
      visibilityTimeout: Duration.seconds(6 * KEY_EVENTS_TIMEOUT_SECONDS), // six times the function's timeout (AWS's advice)
      deadLetterQueue: { queue: this.deadLetters, maxReceiveCount: 5 },
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: this.queueKey,
      enforceSSL: true,
    });
    // Grants its role (not the HTTP function's) the consumer's actions on the queue, and kms:Decrypt
    // (only) on the queue key.
    keyEvents.addEventSource(new SqsEventSource(this.queue, { batchSize: 10, reportBatchItemFailures: true }));

    // Anything but http-api gets IAM auth: no value opens the API by mistake (context.ts refuses typos).
    if (props.entry !== "http-api") {
      const url = this.httpFunction.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.AWS_IAM });
      new CfnOutput(this, "FunctionUrl", {
        description:
          "The API's URL (IAM auth): callers sign with SigV4, need lambda:InvokeFunctionUrl and lambda:InvokeFunction on HttpFunctionArn, and send the master key in x-litellm-api-key",
        value: url.url,
      });
    } else {
      const api = new apigwv2.HttpApi(this, "HttpApi", {
        defaultIntegration: new integrations.HttpLambdaIntegration("Http", this.httpFunction),
      });
      new CfnOutput(this, "HttpApiUrl", {
        description: "The API's URL (HTTP API, no IAM auth): callers send the master key in Authorization: Bearer",
        value: api.apiEndpoint,
      });
    }
    new CfnOutput(this, "HttpFunctionArn", {
      description:
        "The HTTP function: the Resource of a caller's lambda:InvokeFunctionUrl and lambda:InvokeFunction grant",
      value: this.httpFunction.functionArn,
    });
    new CfnOutput(this, "KeyEventsQueueUrl", {
      description: "Where producers send key events, one JSON event per message (sqs:SendMessage)",
      value: this.queue.queueUrl,
    });
    new CfnOutput(this, "KeyEventsQueueArn", {
      description: "The Resource of a producer's sqs:SendMessage grant",
      value: this.queue.queueArn,
    });
    new CfnOutput(this, "KeyEventsDeadLettersUrl", {
      description: "Key events that failed or were refused 5 times; redrive them once the cause is fixed",
      value: this.deadLetters.queueUrl,
    });
    new CfnOutput(this, "MasterKeySecretArn", {
      description: "The Secrets Manager secret holding LITELLM_MASTER_KEY (the gateway's key for this API)",
      value: masterKey.secretArn,
    });
    new CfnOutput(this, "SecretsKeyArn", {
      description: "The KMS key of the secrets it writes (kms_key_id) and of the master key",
      value: this.key.keyArn,
    });
    new CfnOutput(this, "QueueKeyArn", {
      description:
        "The KMS key of both queues: a producer needs kms:GenerateDataKey and kms:Decrypt on it (with kms:ViaService sqs.<region>.amazonaws.com)",
      value: this.queueKey.keyArn,
    });
  }
}

/**
 * A key's secret given by its name or ARN and the VersionId the functions take, both or neither.
 * The functions' role is granted nothing on it (CloudFormation reads it when it deploys, as the
 * deployer), and it may be none of the names the role reads: under the virtual-key prefix, key
 * events could overwrite it, and the API would serve it, as it would a hosted name.
 */
function keySecretOf(
  what: string,
  secret: string | undefined,
  versionId: string | undefined,
  prefix: string,
  hostedKeys: readonly string[] | undefined,
): { secret: string; versionId: string } | undefined {
  if (secret === undefined && versionId === undefined) return undefined;
  if (secret === undefined || versionId === undefined) {
    throw new Error(
      `${what}Secret and ${what}VersionId go together: CloudFormation reads a secret again only when its reference changes, so the version is named`,
    );
  }
  if (!SECRET_VERSION_ID.test(versionId)) {
    throw new Error(`${what}VersionId: expected a Secrets Manager VersionId, got ${versionId}`);
  }
  // A secret's ARN ends in its name, a hyphen and 6 random characters.
  const arn = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:(.+)-[A-Za-z0-9]{6}$/.exec(secret);
  const name = arn ? (arn[1] as string) : secret;
  if (!/^[A-Za-z0-9/_+=.@-]{1,512}$/.test(name)) {
    throw new Error(`${what}Secret: expected a Secrets Manager secret's name or full ARN, got ${secret}`);
  }
  if (name.startsWith(prefix) || hostedKeys?.includes(name)) {
    throw new Error(
      `${what}Secret ${secret}: a name the functions read (under the prefix ${prefix}, or a hosted name): the API would serve it and key events could overwrite it; keep it elsewhere`,
    );
  }
  return { secret, versionId };
}
