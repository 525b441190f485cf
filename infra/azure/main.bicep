// llm-secrets on Azure: the Function App (Node 22, v4 model) with its system-assigned identity, its
// Storage account and key-event queue (the poison queue is the host's), and a Key Vault in RBAC
// mode where the identity may read (or, with writes on, manage) secrets. HTTPS only, TLS 1.2. The
// app runs from the package blob in its own account's function-releases container, read with its
// identity: the template writes WEBSITE_RUN_FROM_PACKAGE itself, so no later deploy drops it.
// See ../README.md. No Bicep compiler runs in this repository's CI: a test reads this file.

@description('A short name that resources are named from: 3 to 11 lowercase letters, digits and single hyphens, starting with a letter and ending with a letter or digit (the Key Vault\'s rule). The storage account takes it without hyphens (its name is lowercase letters and digits only); at most 11 keep a unique suffix in the storage account\'s and the Key Vault\'s names (24 characters at most).')
@minLength(3)
@maxLength(11)
param name string = 'llmsecrets'

param location string = resourceGroup().location

@description('key_management_settings.access_mode; read_only grants Key Vault Secrets User only.')
@allowed(['read_only', 'write_only', 'read_and_write'])
param accessMode string = 'read_and_write'

@description('prefix_for_stored_virtual_keys (Key Vault names map / to -).')
param virtualKeyPrefix string = 'litellm/'

@description('SECRET_MANAGER_REFRESH_INTERVAL: how long an instance serves a value from its cache (0: read the store every time); other instances than the one applying a key event keep serving the old value this long.')
@minValue(0)
param refreshIntervalSeconds int = 300

@description('The package (npm run package\'s llm-secrets-azure-functions.zip) as a blob of the function-releases container: the app runs from it (WEBSITE_RUN_FROM_PACKAGE). Upload a new build under a new name and deploy with that name: the changed setting restarts the app and syncs its triggers. No default, and in no parameters file: every deploy names the blob the app is to run, the current one when it changes something else (a default would put the app back on the first build).')
param packageBlob string

@description('Object ids of the identities (a gateway\'s managed identity or service principal) that send key events: each gets Storage Queue Data Message Sender on the key-events queue only. Never hand a producer AzureWebJobsStorage\'s connection string: its account key also writes the package the app runs from.')
param producerPrincipalIds array = []

@description('LITELLM_MASTER_KEY, kept as an app setting (use a Key Vault reference in production).')
@secure()
param masterKey string

@description('LITELLM_SALT_KEY, the key that seals and opens ciphertexts (/v1/encrypt, key events\' key_ciphertext: the gateway\'s salt key), kept as an app setting as masterKey is. Empty (the default): no setting, and the master key seals, as LiteLLM does. Once set, pass it on every deploy: the template sets the whole settings list, so a deploy without it removes it.')
@secure()
param saltKey string = ''

@description('LLM_SECRETS_PREVIOUS_SALT_KEYS: a JSON array of the keys the salt key (or a master key that sealed) replaced, tried after it when opening, e.g. ["<old key>"]. Empty (the default): no setting. As saltKey, pass it on every deploy while it is needed.')
@secure()
param previousSaltKeys string = ''

var suffix = uniqueString(resourceGroup().id, name)
var writes = accessMode != 'read_only'
// Key Vault Secrets Officer, or Key Vault Secrets User when read-only.
var secretsRole = writes ? 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' : '4633458b-17de-408a-b874-0445c86b69e6'
// Storage Blob Data Reader: the app's identity fetches its package.
var packageReaderRole = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var releasesContainer = 'function-releases'
// Storage Queue Data Message Sender: a producer adds messages, and can neither read nor delete one.
var queueSenderRole = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'

// Lowercase letters and digits only: llm-secrets is llmsecrets here.
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: take('${toLower(replace(name, '-', ''))}${suffix}', 24)
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
  }
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource keyEventsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queues
  name: 'key-events'
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Private: the app reads its package here with its identity (no SAS to expire or to leak).
resource releases 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: releasesContainer
  properties: { publicAccess: 'None' }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${name}-${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
  }
}

// Where the functions' log and audit lines are kept: Application Insights on a Log Analytics
// workspace (30 days), which the host writes to through APPLICATIONINSIGHTS_CONNECTION_STRING.
resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${name}-plan'
  location: location
  sku: { name: 'Y1', tier: 'Dynamic' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: '${name}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      linuxFxVersion: 'Node|22'
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      // The salt keys only when given: an empty LITELLM_SALT_KEY is a start-up error, and without
      // one the master key seals, as before.
      appSettings: concat([
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'node' }
        // Every deploy of this template sets the whole list: the package is in it, so none drops it.
        { name: 'WEBSITE_RUN_FROM_PACKAGE', value: '${storage.properties.primaryEndpoints.blob}${releasesContainer}/${packageBlob}' }
        { name: 'AzureWebJobsStorage', value: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'AZURE_KEY_VAULT_URI', value: vault.properties.vaultUri }
        { name: 'LITELLM_MASTER_KEY', value: masterKey }
        { name: 'SECRET_MANAGER_REFRESH_INTERVAL', value: string(refreshIntervalSeconds) }
        { name: 'LLM_SECRETS_CONFIG', value: '{"general_settings":{"key_management_system":"azure_key_vault","key_management_settings":{"access_mode":"${accessMode}","store_virtual_keys":true,"prefix_for_stored_virtual_keys":"${virtualKeyPrefix}"}}}' }
      ], empty(saltKey) ? [] : [
        { name: 'LITELLM_SALT_KEY', value: saltKey }
      ], empty(previousSaltKeys) ? [] : [
        { name: 'LLM_SECRETS_PREVIOUS_SALT_KEYS', value: previousSaltKeys }
      ])
    }
  }
}

// The function's identity on this vault only. The role is in the name: ARM edits only a role
// assignment's condition and description, so switching accessMode makes a new assignment, and an
// incremental deploy leaves the old one (README: remove Secrets Officer after a switch to read_only).
resource secretsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, app.id, secretsRole)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsRole)
  }
}

// The app's identity reads its package, in this container only.
resource packageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: releases
  name: guid(releases.id, app.id, packageReaderRole)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', packageReaderRole)
  }
}

// Key-event producers, on the key-events queue only (not the account, whose blobs hold the package).
resource producerAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principalId in producerPrincipalIds: {
    scope: keyEventsQueue
    name: guid(keyEventsQueue.id, principalId, queueSenderRole)
    properties: {
      principalId: principalId
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueSenderRole)
    }
  }
]

output functionAppName string = app.name
output vaultUri string = vault.properties.vaultUri
output vaultId string = vault.id
output principalId string = app.identity.principalId
output queueName string = keyEventsQueue.name
output queueUrl string = '${storage.properties.primaryEndpoints.queue}${keyEventsQueue.name}'
output storageAccountName string = storage.name
output packageContainer string = releasesContainer
