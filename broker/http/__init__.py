"""What the JSON API (`broker.api`) and the HTML pages (`broker.web`) share: the escrow of the
request, the caller, body checks, problem+json and the OpenAPI helpers. It imports neither of
them, so the two never import each other."""
