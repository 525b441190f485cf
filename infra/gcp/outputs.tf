output "http_url" {
  description = "The API's URL: a gateway calls it with an ID token (IAM invoker) and the master key in x-litellm-api-key."
  value       = google_cloudfunctions2_function.http.service_config[0].uri
}

output "key_events_topic" {
  description = "Where a queue producer publishes key events (one JSON event per message)."
  value       = google_pubsub_topic.key_events.id
}
