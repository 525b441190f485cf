// The Azure deployment (infra/azure). No Bicep compiler can be installed here, so this reads the
// file as text: its parameters (and that the parameters file names only those), its resources, the
// settings the function reads, and the role the identity gets (Secrets User when read-only).
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";

const DIR = join(import.meta.dirname, "../../infra/azure");
let bicep = "";

beforeAll(async () => {
  bicep = await readFile(join(DIR, "main.bicep"), "utf8");
});

const SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";
const SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6";
const BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
const QUEUE_MESSAGE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a";

/** A top-level resource's text, from its `resource` line to its closing brace (a loop's bracket). */
function block(name: string): string {
  const start = bicep.search(new RegExp(`^resource ${name} `, "m"));
  if (start < 0) throw new Error(`no resource ${name}`);
  const end = bicep.slice(start).search(/\n[}\]]\n/); // its closing brace, or a loop's bracket
  return bicep.slice(start, start + end + 2);
}

describe("the Azure deployment", () => {
  it("declares its parameters, and the parameters file sets only those", async () => {
    const declared = [...bicep.matchAll(/^param (\w+) /gm)].map((m) => m[1]);
    expect(declared.sort()).toEqual([
      "accessMode",
      "location",
      "masterKey",
      "name",
      "packageBlob",
      "previousSaltKeys",
      "producerPrincipalIds",
      "refreshIntervalSeconds",
      "saltKey",
      "virtualKeyPrefix",
    ]);
    // Instances other than the one applying a key event serve a revoked key this long, not a day.
    expect(bicep).toMatch(/@minValue\(0\)\nparam refreshIntervalSeconds int = 300\n/);
    expect(bicep).toContain("{ name: 'SECRET_MANAGER_REFRESH_INTERVAL', value: string(refreshIntervalSeconds) }");
    expect(bicep).toMatch(/@secure\(\)\nparam masterKey string/);
    const file = JSON.parse(await readFile(join(DIR, "main.parameters.json"), "utf8"));
    for (const key of Object.keys(file.parameters)) expect(declared).toContain(key);
    // The master key comes from the command line only: a value in the file would be a key published
    // in the repository, and a deploy that forgot -p masterKey would go live with it.
    expect(Object.keys(file.parameters)).not.toContain("masterKey");
    expect(bicep).not.toMatch(/param masterKey string =/);
  });

  it("takes a name every resource can be named from: the storage account's (lowercase letters and digits) and the Key Vault's (no trailing hyphen), with their unique suffix, at every length allowed", async () => {
    const param = /((?:@\w+\([^\n]*\)\n)*)param name string = '(\w+)'\n/.exec(bicep);
    expect(param).not.toBeNull();
    const decorators = param?.[1] ?? "";
    const min = Number(/@minLength\((\d+)\)/.exec(decorators)?.[1]);
    const max = Number(/@maxLength\((\d+)\)/.exec(decorators)?.[1]);
    expect([min, max]).toEqual([3, 11]);
    expect(decorators).toMatch(/@description\('[^\n]*lowercase letters, digits and single hyphens/);
    // The names as main.bicep makes them (uniqueString is 13 lowercase letters and digits).
    expect(block("storage")).toContain("name: take('${toLower(replace(name, '-', ''))}${suffix}', 24)");
    expect(block("vault")).toContain("name: take('${name}-${suffix}', 24)");
    const suffix = "abcdefghij123";
    const storageName = (name: string) => `${name.toLowerCase().replaceAll("-", "")}${suffix}`.slice(0, 24);
    const vaultName = (name: string) => `${name}-${suffix}`.slice(0, 24);
    const file = JSON.parse(await readFile(join(DIR, "main.parameters.json"), "utf8"));
    for (const name of [
      param?.[2] as string,
      file.parameters.name.value,
      "llm-secrets",
      "a".repeat(min),
      "a".repeat(max),
    ]) {
      expect(name.length, name).toBeGreaterThanOrEqual(min);
      expect(name.length, name).toBeLessThanOrEqual(max);
      // Azure's rules: a storage account 3-24 lowercase letters and digits; a vault 3-24 letters, digits
      // and single hyphens, from a letter to a letter or digit.
      expect(storageName(name), name).toMatch(/^[a-z0-9]{3,24}$/);
      expect(vaultName(name), name).toMatch(/^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$/);
      // The suffix (what makes the names unique) is cut by one character at most.
      expect(storageName(name).endsWith(suffix), name).toBe(true);
      expect(vaultName(name), name).toContain(`-${suffix.slice(0, -1)}`);
    }
  });

  it("makes the Function App, its storage and queue, and a Key Vault in RBAC mode", () => {
    const resources = [...bicep.matchAll(/^resource (\w+) '([^@']+)@/gm)].map((m) => `${m[1]}:${m[2]}`);
    expect(resources).toEqual([
      "storage:Microsoft.Storage/storageAccounts",
      "queues:Microsoft.Storage/storageAccounts/queueServices",
      "keyEventsQueue:Microsoft.Storage/storageAccounts/queueServices/queues",
      "blobs:Microsoft.Storage/storageAccounts/blobServices",
      "releases:Microsoft.Storage/storageAccounts/blobServices/containers",
      "vault:Microsoft.KeyVault/vaults",
      "logs:Microsoft.OperationalInsights/workspaces",
      "insights:Microsoft.Insights/components",
      "plan:Microsoft.Web/serverfarms",
      "app:Microsoft.Web/sites",
      "secretsAccess:Microsoft.Authorization/roleAssignments",
      "packageAccess:Microsoft.Authorization/roleAssignments",
      "producerAccess:Microsoft.Authorization/roleAssignments",
    ]);
    expect(bicep).toContain("enableRbacAuthorization: true");
    expect(bicep).toContain("name: 'key-events'");
    expect(bicep).toContain("identity: { type: 'SystemAssigned' }");
  });

  it("serves HTTPS only with TLS 1.2, on Node 22 and Functions v4", () => {
    expect(bicep).toContain("httpsOnly: true");
    expect(bicep).toContain("minTlsVersion: '1.2'");
    expect(bicep).toContain("minimumTlsVersion: 'TLS1_2'");
    expect(bicep).toContain("linuxFxVersion: 'Node|22'");
    expect(bicep).toContain("{ name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }");
  });

  it("gives the function the settings it reads, and the identity Secrets Officer (Secrets User when read-only) on this vault only", () => {
    for (const setting of ["AzureWebJobsStorage", "AZURE_KEY_VAULT_URI", "LITELLM_MASTER_KEY", "LLM_SECRETS_CONFIG"]) {
      expect(bicep).toContain(`name: '${setting}'`);
    }
    expect(bicep).toContain(`var secretsRole = writes ? '${SECRETS_OFFICER}' : '${SECRETS_USER}'`);
    expect(bicep).toMatch(/resource secretsAccess [^\n]*\n\s+scope: vault\n/);
  });

  it("sets LITELLM_SALT_KEY and LLM_SECRETS_PREVIOUS_SALT_KEYS only when given, from secure parameters as the master key, never from the parameters file", async () => {
    // Secure, as masterKey: kept out of the deployment's history. Empty by default: no setting, so the
    // master key seals, as before (an empty LITELLM_SALT_KEY would stop the start).
    expect(bicep).toMatch(/@secure\(\)\nparam saltKey string = ''\n/);
    expect(bicep).toMatch(/@secure\(\)\nparam previousSaltKeys string = ''\n/);
    const app = block("app");
    expect(app).toContain("appSettings: concat([\n");
    expect(app).toContain(
      "], empty(saltKey) ? [] : [\n        { name: 'LITELLM_SALT_KEY', value: saltKey }\n      ], empty(previousSaltKeys) ? [] : [\n        { name: 'LLM_SECRETS_PREVIOUS_SALT_KEYS', value: previousSaltKeys }\n      ])\n",
    );
    // Nowhere else: not in the unconditional list, not in an output.
    expect(bicep.match(/LITELLM_SALT_KEY'/g)).toHaveLength(1);
    expect(bicep.match(/LLM_SECRETS_PREVIOUS_SALT_KEYS'/g)).toHaveLength(1);
    expect(bicep).not.toMatch(/^output .*[sS]alt/m);
    const file = JSON.parse(await readFile(join(DIR, "main.parameters.json"), "utf8"));
    for (const key of ["saltKey", "previousSaltKeys"]) expect(Object.keys(file.parameters)).not.toContain(key);
  });

  it("says to remove Secrets Officer after a switch to read_only (ARM never changes an assignment's role; an incremental deploy deletes nothing)", async () => {
    // The role is in the assignment's name: with one name for both, the switch would be an update of
    // roleDefinitionId, which ARM refuses (only condition, conditionVersion and description change).
    expect(block("secretsAccess")).toContain("name: guid(vault.id, app.id, secretsRole)");
    expect(bicep).toContain("output vaultId string = vault.id");
    expect(bicep).toContain("output principalId string = app.identity.principalId");
    const readme = await readFile(join(DIR, "../README.md"), "utf8");
    const azure = readme.slice(readme.indexOf("## Azure"));
    expect(azure).toContain(
      'az role assignment delete --assignee <principalId> --role "Key Vault Secrets Officer" --scope <vaultId>',
    );
    expect(bicep).not.toMatch(/Owner|Contributor'/);
  });

  it("runs from the package blob it names itself (WEBSITE_RUN_FROM_PACKAGE in its own settings, which every deploy replaces), read by the app's identity", async () => {
    // The template sets the whole settings list: a package URL set by another tool (config-zip's
    // SAS URL) would be dropped by the next deploy, and the app would run with no functions.
    expect(bicep).toContain(
      `{ name: 'WEBSITE_RUN_FROM_PACKAGE', value: '\${storage.properties.primaryEndpoints.blob}\${releasesContainer}/\${packageBlob}' }`,
    );
    // No default, and in no parameters file: a deploy that forgot it (one changing only another
    // parameter, say) would otherwise put the app back on the first build's blob.
    expect(bicep).toMatch(/\nparam packageBlob string\n/);
    const file = JSON.parse(await readFile(join(DIR, "main.parameters.json"), "utf8"));
    expect(Object.keys(file.parameters)).not.toContain("packageBlob");
    expect(bicep).toContain("var releasesContainer = 'function-releases'");
    expect(bicep).toMatch(
      /resource releases [^\n]*\n\s+parent: blobs\n\s+name: releasesContainer\n\s+properties: \{ publicAccess: 'None' \}\n/,
    );
    // No SAS to expire: the identity reads that container, and nothing else of the account.
    expect(bicep).toContain(`var packageReaderRole = '${BLOB_DATA_READER}'`);
    const access = block("packageAccess");
    expect(access).toMatch(/^\s+scope: releases$/m);
    expect(access).toContain("principalId: app.identity.principalId");
    expect(access).toContain("roleDefinitions', packageReaderRole)");
    // The README deploys the code by that blob, never with config-zip.
    const readme = await readFile(join(DIR, "../README.md"), "utf8");
    const azure = readme.slice(readme.indexOf("## Azure"));
    expect(azure).toContain("-c function-releases");
    // The deploy command names the blob, and the README says to name the current one on every deploy.
    expect(azure).toMatch(/^az deployment group create [^\n]*\\\n[^\n]*-p packageBlob=/m);
    expect(azure).toMatch(/every\s+deploy of the template/);
    expect(azure).not.toMatch(/^az functionapp deployment source config-zip/m);
    // The first upload signs in (--auth-mode login): the deployer takes the blob data role before it,
    // as Owner and Contributor hold none.
    const upload = azure.indexOf("az storage blob upload --auth-mode login");
    expect(upload).toBeGreaterThan(0);
    expect(azure.slice(0, upload)).toMatch(
      /az role assignment create [^\n]*\\\n\s+--role "Storage Blob Data Contributor" \\\n\s+--scope [^\n]*\/blobServices\/default\/containers\/function-releases"\n/,
    );
  });

  it("gives each of producerPrincipalIds (none by default) Storage Queue Data Message Sender on the key-events queue only, never a connection string", async () => {
    expect(bicep).toMatch(/\nparam producerPrincipalIds array = \[\]\n/);
    expect(bicep).toContain(`var queueSenderRole = '${QUEUE_MESSAGE_SENDER}'`);
    const access = block("producerAccess");
    expect(access).toContain("for principalId in producerPrincipalIds: {");
    // The queue, not the account: the account's blobs hold the package the app runs from.
    expect(access).toMatch(/^\s+scope: keyEventsQueue$/m);
    expect(access).toContain("principalId: principalId");
    expect(access).toContain("roleDefinitions', queueSenderRole)");
    expect(bicep).toContain("output queueUrl string =");
    const readme = await readFile(join(DIR, "../README.md"), "utf8");
    const azure = readme.slice(readme.indexOf("## Azure"));
    expect(azure).toContain("producerPrincipalIds");
    expect(azure).toMatch(/Never give a producer\s+`AzureWebJobsStorage`'s connection string/);
  });

  it("keeps the functions' log and audit lines: workspace-based Application Insights on a Log Analytics workspace kept 30 days, named in the app's settings", () => {
    const workspace = block("logs");
    expect(workspace).toContain("sku: { name: 'PerGB2018' }");
    expect(workspace).toContain("retentionInDays: 30");
    const insights = block("insights");
    expect(insights).toContain("Application_Type: 'web'");
    expect(insights).toContain("WorkspaceResourceId: logs.id");
    expect(block("app")).toContain(
      "{ name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }",
    );
  });

  it("says what Key Vault Secrets Officer reaches: every secret of the vault, as no role assignment takes a name prefix", async () => {
    const readme = await readFile(join(DIR, "../README.md"), "utf8");
    const row = readme.split("\n").find((line) => line.startsWith("| `Key Vault Secrets Officer`")) ?? "";
    expect(row).toContain("read, write and delete every secret of the vault");
    expect(row).toContain("cannot be narrowed to a name prefix");
    expect(row).toContain("Keep this vault to llm-secrets alone");
  });
});
