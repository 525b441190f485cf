# llm-secrets on Google Cloud: two gen2 functions beside Secret Manager, and a key-event topic with
# its dead-letter topic. See ../README.md.

terraform {
  required_version = ">= 1.6"
  required_providers {
    # Written for major 6 (7, the major after it, was not checked against this file here). A major
    # may rename or drop a resource or argument: the one after 7 is refused until this file is.
    google = { source = "hashicorp/google", version = ">= 6.0, < 8.0" }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

data "google_project" "this" {}

locals {
  # LLM_SECRETS_MAX_EVENT_AGE (6 days): no message outlives the tombstones that keep it from reviving a key.
  max_event_age = "518400s"
  config = yamlencode({
    general_settings = {
      key_management_system = "google_secret_manager"
      key_management_settings = merge(
        {
          access_mode                    = var.access_mode
          store_virtual_keys             = true
          prefix_for_stored_virtual_keys = var.prefix_for_stored_virtual_keys
        },
        # Only when names are given (as infra/aws does): hosted_keys, once set, are the only names
        # the API reads, so an empty list would serve no name at all, not even a virtual key.
        length(var.hosted_keys) > 0 ? { hosted_keys = var.hosted_keys } : {},
      )
    }
  })
  environment = {
    GOOGLE_SECRET_MANAGER_PROJECT_ID = var.project
    LLM_SECRETS_CONFIG               = local.config
    # Every instance's cache lifetime: a key revoked by an event stops being served within it.
    SECRET_MANAGER_REFRESH_INTERVAL = tostring(var.refresh_interval_seconds)
  }
  # The keys, mounted from Secret Manager at the version named: an instance reads a secret variable
  # once, when it starts, so "latest" would leave warm instances on the old value while new ones
  # take the new one, and a new version would change nothing Terraform sees. A new version number
  # changes the functions: a new revision, whose instances all start with it (README: rotation).
  # The salt key and the previous salt keys the same way, each only when given: unset, the master
  # key seals and opens ciphertexts, as before.
  secret_environment = merge(
    { LITELLM_MASTER_KEY = { secret = var.master_key_secret, version = var.master_key_version } },
    var.salt_key_secret == null ? {} : {
      LITELLM_SALT_KEY = { secret = var.salt_key_secret, version = var.salt_key_version }
    },
    var.previous_salt_keys_secret == null ? {} : {
      LLM_SECRETS_PREVIOUS_SALT_KEYS = { secret = var.previous_salt_keys_secret, version = var.previous_salt_keys_version }
    },
  )
  # Their secrets besides the master key's (which has its own grant), read by the functions' account.
  key_secret_ids = setsubtract(compact([var.salt_key_secret, var.previous_salt_keys_secret]), [var.master_key_secret])
  writes         = var.access_mode != "read_only"
  # The virtual keys' secret ids start with this: the prefix as the store spells it (a / appended if
  # missing, then every character outside [A-Za-z0-9_-] as -), which the IAM conditions below name.
  prefix_secret_id = replace("${trimsuffix(var.prefix_for_stored_virtual_keys, "/")}/", "/[^A-Za-z0-9_-]/", "-")
  # A name's secret id as the store spells it (every character outside [A-Za-z0-9_-] becomes -).
  hosted_secret_ids = toset([for name in var.hosted_keys : replace(name, "/[^A-Za-z0-9_-]/", "-")])
  # The IAM conditions reach every secret whose id starts with prefix_secret_id, wherever it was
  # made: the master key's or a hosted name's secret among them would be readable and, with writes,
  # overwritten by whoever sends key events. The grants below refuse such a prefix.
  prefix_reaches = sort([for id in setunion([var.master_key_secret], local.hosted_secret_ids, local.key_secret_ids) : id if startswith(id, local.prefix_secret_id)])
  # What the reader and writer grants' precondition says when the prefix reaches such a secret.
  prefix_reaches_error = "prefix_for_stored_virtual_keys as a secret id (${local.prefix_secret_id}) begins the id of ${join(", ", local.prefix_reaches)} (master_key_secret, a salt key's secret or a hosted_keys secret): the virtual-key grants would reach it. Choose a prefix no other secret's id starts with."
}

# The APIs the resources below call, enabled first (a new project has them off): Cloud Functions,
# and the Cloud Build build, Artifact Registry image and Cloud Run service behind each gen2
# function; Pub/Sub; Secret Manager; IAM (the functions' account, the custom roles). No Eventarc:
# key events come by a push subscription, not an event trigger. Left on at destroy: other resources
# of the project may use them.
resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ])
  project            = var.project
  service            = each.value
  disable_on_destroy = false
}

# The functions' identity (the grants and the functions name it, so they come after the APIs too).
resource "google_service_account" "functions" {
  account_id   = "llm-secrets"
  display_name = "llm-secrets functions"
  depends_on   = [google_project_service.apis]
}

# Reads of values (secretAccessor) only where the API serves them: the virtual keys, by a condition
# on the secret's name (key events make their secrets, so no grant per secret can be made ahead),
# and each hosted name on its own secret (made outside this module, like the master key's). With
# hosted_keys the API serves those names only (a virtual key answers 403 not_hosted, and key events
# read none: the writer role below describes them), so no value under the prefix is readable.
resource "google_project_iam_member" "secret_reader" {
  count   = length(var.hosted_keys) > 0 ? 0 : 1
  project = var.project
  role    = "roles/secretmanager.secretAccessor"
  member  = "serviceAccount:${google_service_account.functions.email}"
  condition {
    title      = "virtual keys only"
    expression = "resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/${local.prefix_secret_id}\")"
  }
  lifecycle {
    precondition {
      condition     = length(local.prefix_reaches) == 0
      error_message = local.prefix_reaches_error
    }
  }
}

resource "google_secret_manager_secret_iam_member" "hosted_reader" {
  for_each  = local.hosted_secret_ids
  project   = var.project
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}

# Metadata, never a value, of every secret (viewer): listing (GET /v1/secrets: ListSecrets returns
# each secret's labels and annotations anyway), and what a read checks beside the value, the name
# written and the change time in the secret's annotations.

resource "google_project_iam_member" "secret_metadata_reader" {
  project = var.project
  role    = "roles/secretmanager.viewer"
  member  = "serviceAccount:${google_service_account.functions.email}"
}

# Writes, only when access_mode allows them: what the store does to a secret (its annotations and
# labels, a new version, destroying the versions on delete), only on secrets whose id starts with
# the prefix. LLM_SECRETS_GOOGLE_PURGE=true would also need secretmanager.secrets.delete.
resource "google_project_iam_custom_role" "writer" {
  count      = local.writes ? 1 : 0
  role_id    = "llmSecretsWriter"
  title      = "llm-secrets: write virtual keys"
  depends_on = [google_project_service.apis]
  permissions = [
    "secretmanager.secrets.get",
    "secretmanager.secrets.update",
    "secretmanager.versions.add",
    "secretmanager.versions.list",
    "secretmanager.versions.destroy",
  ]
}

resource "google_project_iam_member" "secret_writer" {
  count   = local.writes ? 1 : 0
  project = var.project
  role    = google_project_iam_custom_role.writer[0].name
  member  = "serviceAccount:${google_service_account.functions.email}"
  condition {
    title      = "virtual keys only"
    expression = "resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/${local.prefix_secret_id}\")"
  }
  lifecycle {
    precondition {
      condition     = length(local.prefix_reaches) == 0
      error_message = local.prefix_reaches_error
    }
  }
}

# Creating a secret is checked on its parent, the project, where a condition on the secret's name
# cannot narrow it: this one permission is granted project-wide (a secret made outside the prefix
# gets no version and no annotation: the writer role does not reach it).
resource "google_project_iam_custom_role" "creator" {
  count       = local.writes ? 1 : 0
  role_id     = "llmSecretsCreator"
  title       = "llm-secrets: create virtual-key secrets"
  permissions = ["secretmanager.secrets.create"]
  depends_on  = [google_project_service.apis]
}

resource "google_project_iam_member" "secret_creator" {
  count   = local.writes ? 1 : 0
  project = var.project
  role    = google_project_iam_custom_role.creator[0].name
  member  = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_secret_manager_secret_iam_member" "master_key" {
  secret_id = var.master_key_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}

# The salt key's and the previous salt keys' secrets, when given: mounted as the master key is.
resource "google_secret_manager_secret_iam_member" "salt_keys" {
  for_each  = local.key_secret_ids
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}

# The source: npm run package's zip.
resource "google_storage_bucket_object" "source" {
  name   = "llm-secrets-gcp-functions-${filemd5(var.source_zip)}.zip"
  bucket = var.source_bucket
  source = var.source_zip
}

resource "google_cloudfunctions2_function" "http" {
  name     = "llm-secrets-http"
  location = var.region
  lifecycle {
    # A key's secret is mounted at a version named, never latest (local.secret_environment).
    precondition {
      condition     = (var.salt_key_secret == null) == (var.salt_key_version == null)
      error_message = "salt_key_secret and salt_key_version go together: the salt key is mounted at the version named."
    }
    precondition {
      condition     = (var.previous_salt_keys_secret == null) == (var.previous_salt_keys_version == null)
      error_message = "previous_salt_keys_secret and previous_salt_keys_version go together: the previous salt keys are mounted at the version named."
    }
    # The API serves every hosted name: a salt key's secret among them would be readable over HTTP.
    precondition {
      condition     = length(setintersection(local.key_secret_ids, local.hosted_secret_ids)) == 0
      error_message = "salt_key_secret or previous_salt_keys_secret is the secret of a hosted_keys name: the API would serve it."
    }
  }
  # Its identity may read the master key (and the secrets it serves) before a revision starts; the
  # APIs that build and run it are on.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.master_key,
    google_secret_manager_secret_iam_member.salt_keys,
    google_project_iam_member.secret_reader,
    google_secret_manager_secret_iam_member.hosted_reader,
    google_project_iam_member.secret_metadata_reader,
  ]
  build_config {
    runtime     = "nodejs22"
    entry_point = "http"
    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }
  service_config {
    service_account_email = google_service_account.functions.email
    ingress_settings      = var.ingress
    # Forward waits up to 600 s for an upstream (SPEC section 8): past the default 60 s, callers
    # would meet the platform's 504 instead of the API's upstream_timeout.
    timeout_seconds       = 900
    environment_variables = local.environment
    dynamic "secret_environment_variables" {
      for_each = local.secret_environment
      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }
}

resource "google_cloudfunctions2_function" "key_events" {
  name     = "llm-secrets-key-events"
  location = var.region
  # Its identity may read the master key (and the secrets it serves) before a revision starts; the
  # APIs that build and run it are on.
  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.master_key,
    google_secret_manager_secret_iam_member.salt_keys,
    google_project_iam_member.secret_reader,
    google_secret_manager_secret_iam_member.hosted_reader,
    google_project_iam_member.secret_metadata_reader,
  ]
  build_config {
    runtime     = "nodejs22"
    entry_point = "keyEvents"
    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }
  service_config {
    service_account_email = google_service_account.functions.email
    ingress_settings      = "ALLOW_INTERNAL_ONLY"
    timeout_seconds       = 120 # an event's store calls and their retries; the ack deadline matches it
    environment_variables = local.environment
    dynamic "secret_environment_variables" {
      for_each = local.secret_environment
      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }
}

# Key events: a topic, and a push subscription owned here (an event trigger's own subscription is
# not a Terraform resource, so its dead-letter policy could not be set) that delivers to keyEvents.
resource "google_pubsub_topic" "key_events" {
  name                       = "llm-secrets-key-events"
  message_retention_duration = local.max_event_age
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letters" {
  name                       = "llm-secrets-key-events-dead-letters"
  message_retention_duration = local.max_event_age
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_subscription" "key_events" {
  name                       = "llm-secrets-key-events"
  topic                      = google_pubsub_topic.key_events.id
  message_retention_duration = local.max_event_age
  ack_deadline_seconds       = 120 # the function's timeout: no redelivery while an attempt still runs
  # Never deleted for lack of activity (Pub/Sub's default deletes a subscription idle 31 days).
  expiration_policy {
    ttl = ""
  }
  push_config {
    # The topic in the path: functions-framework reads it from there (else it warns on every delivery).
    push_endpoint = "${google_cloudfunctions2_function.key_events.service_config[0].uri}/projects/${var.project}/topics/${google_pubsub_topic.key_events.name}"
    oidc_token {
      service_account_email = google_service_account.functions.email
      audience              = google_cloudfunctions2_function.key_events.service_config[0].uri
    }
  }
  # Failed and refused events are redelivered, backing off up to 10 minutes, for about two hours
  # (a store outage, IAM still propagating) before the dead-letter topic keeps them.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letters.id
    max_delivery_attempts = 20
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

resource "google_pubsub_subscription" "dead_letters" {
  name                       = "llm-secrets-key-events-dead-letters"
  topic                      = google_pubsub_topic.dead_letters.id
  message_retention_duration = local.max_event_age
  # Nobody pulls it until something went wrong: it must outlive 31 idle days.
  expiration_policy {
    ttl = ""
  }
}

# Key-event producers (the gateways' key hooks): publisher on the key-events topic only.
resource "google_pubsub_topic_iam_member" "key_event_publishers" {
  for_each = toset(var.key_event_publishers)
  topic    = google_pubsub_topic.key_events.id
  role     = "roles/pubsub.publisher"
  member   = each.value
}

# Pub/Sub's own agent moves undeliverable messages: it publishes to the dead-letter topic and
# acknowledges on the subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letters.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  subscription = google_pubsub_subscription.key_events.id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

# The push subscription calls keyEvents as the functions' account.
resource "google_cloud_run_service_iam_member" "push_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.key_events.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.functions.email}"
}

# The gateways that call the API: Cloud Run checks roles/run.invoker on the HTTP function's service
# before the request reaches it (the ID token in Authorization).
resource "google_cloud_run_service_iam_member" "http_invoker" {
  for_each = toset(var.invoker_members)
  location = var.region
  service  = google_cloudfunctions2_function.http.name
  role     = "roles/run.invoker"
  member   = each.value
}
