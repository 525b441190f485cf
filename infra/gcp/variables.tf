variable "project" {
  description = "The project that holds the functions, the secrets and the key events."
  type        = string
}

variable "region" {
  description = "Where the functions live."
  type        = string
  default     = "europe-west1"
}

variable "source_bucket" {
  description = "A bucket for the function's source (llm-secrets-gcp-functions.zip from npm run package)."
  type        = string
}

variable "source_zip" {
  description = "Path of llm-secrets-gcp-functions.zip (npm run package)."
  type        = string
  default     = "../../dist/llm-secrets-gcp-functions.zip"
}

variable "access_mode" {
  description = "key_management_settings.access_mode: read_only grants reads only."
  type        = string
  default     = "read_and_write"
  validation {
    condition     = contains(["read_only", "write_only", "read_and_write"], var.access_mode)
    error_message = "access_mode is read_only, write_only or read_and_write."
  }
}

variable "prefix_for_stored_virtual_keys" {
  description = "Where key events write virtual keys (a / is appended if missing; the secret ids take [A-Za-z0-9_-]: every other character becomes -). The IAM grants reach every secret whose id starts with the prefix so spelled, wherever it was made: plan refuses a prefix that takes in master_key_secret's id or a hosted_keys secret's."
  type        = string
  default     = "litellm/"
}

variable "hosted_keys" {
  description = "hosted_keys (e.g. [\"OPENAI_API_KEY\"]), written into the function's config only when given: then the only names the API reads (a virtual key stays writable by key events, not readable over HTTP: SPEC section 4), and then the only secrets whose values its account may read (none under the prefix: key events still write there). Each secret must exist before apply (its id: the name with every character outside [A-Za-z0-9_-] as -). Empty (the default): the config has no hosted_keys, so the API takes any name, and IAM lets it read the virtual keys alone."
  type        = list(string)
  default     = []
}

variable "master_key_secret" {
  description = "The Secret Manager secret id that holds LITELLM_MASTER_KEY (made outside this module)."
  type        = string
  default     = "llm-secrets-master-key"
}

variable "master_key_version" {
  description = "The version number of master_key_secret the functions take (gcloud secrets versions describe latest --secret=<master_key_secret> --format='value(name.basename())'). No default, and never latest: a secret variable is read when an instance starts, so with latest warm instances would keep the old key after a rotation and new ones take the new one, and terraform apply would change nothing. To rotate: add a version, then apply with its number (a new revision, which every instance starts with)."
  type        = string
  validation {
    condition     = can(regex("^[1-9][0-9]*$", var.master_key_version))
    error_message = "master_key_version is a version number of master_key_secret (1, 2, ...), not latest: instances resolve latest when they start, so warm ones would keep the old key."
  }
}

variable "salt_key_secret" {
  description = "A Secret Manager secret (made outside this module) holding LITELLM_SALT_KEY, the key that seals and opens ciphertexts (/v1/encrypt, key events' key_ciphertext: the gateway's salt key). Unset (the default): the master key seals them, so a master key rotation would change it too (README: rotation)."
  type        = string
  default     = null
}

variable "salt_key_version" {
  description = "The version number of salt_key_secret the functions take (required with it; never latest, as for master_key_version)."
  type        = string
  default     = null
  validation {
    condition     = var.salt_key_version == null || can(regex("^[1-9][0-9]*$", var.salt_key_version))
    error_message = "salt_key_version is a version number of salt_key_secret (1, 2, ...), not latest."
  }
}

variable "previous_salt_keys_secret" {
  description = "A Secret Manager secret (made outside this module) holding LLM_SECRETS_PREVIOUS_SALT_KEYS, a JSON array of the keys the salt key (or a master key that sealed) replaced, tried after it when opening. Unset (the default): none."
  type        = string
  default     = null
}

variable "previous_salt_keys_version" {
  description = "The version number of previous_salt_keys_secret the functions take (required with it; never latest)."
  type        = string
  default     = null
  validation {
    condition     = var.previous_salt_keys_version == null || can(regex("^[1-9][0-9]*$", var.previous_salt_keys_version))
    error_message = "previous_salt_keys_version is a version number of previous_salt_keys_secret (1, 2, ...), not latest."
  }
}

variable "ingress" {
  description = "Who may reach the HTTP function: ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB or ALLOW_ALL."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"
}

variable "invoker_members" {
  description = "Who may call the HTTP function (roles/run.invoker on its service), e.g. [\"serviceAccount:litellm@my-project.iam.gserviceaccount.com\"]. Empty: grant it outside this module."
  type        = list(string)
  default     = []
}

variable "key_event_publishers" {
  description = "Who may send key events (roles/pubsub.publisher on the key-events topic only), e.g. [\"serviceAccount:litellm@my-project.iam.gserviceaccount.com\"]. Empty: grant it outside this module."
  type        = list(string)
  default     = []
}

variable "refresh_interval_seconds" {
  description = "SECRET_MANAGER_REFRESH_INTERVAL: how long an instance serves a value from its cache (0: read the store every time). Other instances than the one applying a key event keep serving the old value this long."
  type        = number
  default     = 300
  validation {
    condition     = var.refresh_interval_seconds >= 0 && floor(var.refresh_interval_seconds) == var.refresh_interval_seconds
    error_message = "refresh_interval_seconds is a whole number of seconds, 0 or more."
  }
}
