//! The OpenAPI document served at `/openapi.json`.

use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};

/// The document's header; paths are added by the routers that serve them.
pub fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Lectern")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Event-sourced backend for live-tutoring platforms. Errors are RFC 9457 problem documents \
                     (application/problem+json). An authenticated POST outside /api/v1/auth/ honours an \
                     Idempotency-Key header (1-255 printable ASCII characters, kept 24 hours per caller): the \
                     same key and request get the stored answer (Idempotent-Replayed: true), the same key with \
                     another request gets 422 idempotency_key_reused, and while the first is still running 409 \
                     idempotency_key_in_use with Retry-After. The realtime WebSocket (GET /api/v1/realtime) is \
                     described by the AsyncAPI 3 document at /asyncapi.json and in docs/realtime.md. Rate \
                     limits: an action's own limit, else 100 requests a minute and 1,000 an hour per user, and \
                     20 an hour per address without a token (auth endpoints, webhooks, the realtime socket, \
                     health and docs aside); every response of a limited endpoint carries RateLimit-Policy and \
                     RateLimit (draft-ietf-httpapi-ratelimit-headers), and a 429 also Retry-After.",
                ))
                .build(),
        )
        .build()
}

/// Add what the routers cannot declare themselves.
pub fn finish(mut api: OpenApi) -> OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    use utoipa::OpenApi as _;
    api.merge(crate::routes::meta::Unrouted::openapi());
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An access token from /api/v1/auth/login or /api/v1/auth/refresh",
                ))
                .build(),
        ),
    );
    complete_responses(api)
}

/// Declare the answers every operation of a kind can give, which its
/// handler does not list because layers give them: 401 and 403 on every
/// operation that needs a token; 400, 413, 415 and 422 on every operation with a body
/// (malformed JSON, too large, not JSON, invalid fields); 400 for a
/// malformed path or query parameter; 400, 409 and 422 for an
/// `Idempotency-Key` on an authenticated POST; 429 on a command (rate
/// limits); and 503 on everything that needs the database.
fn complete_responses(api: OpenApi) -> OpenApi {
    let Ok(mut doc) = serde_json::to_value(&api) else {
        return api;
    };
    let problem = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        })
    };
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                let Some(op) = op.as_object_mut() else {
                    continue;
                };
                let secured = op
                    .get("security")
                    .and_then(|s| s.as_array())
                    .is_some_and(|s| !s.is_empty());
                let body = op.contains_key("requestBody");
                let params = |place: &str| {
                    op.get("parameters")
                        .and_then(|p| p.as_array())
                        .is_some_and(|ps| ps.iter().any(|p| p["in"] == place))
                };
                let (path_params, query_params) = (params("path"), params("query"));
                let mut add: Vec<(&str, &str)> = Vec::new();
                if secured {
                    add.push(("401", "No valid access token"));
                    add.push((
                        "403",
                        "The policy refuses the caller this action, or a forced password change is pending",
                    ));
                }
                if body {
                    add.push(("400", "The body is not well-formed JSON"));
                    add.push(("413", "The body is too large"));
                    add.push(("415", "The body is not JSON"));
                    add.push(("422", "The body has invalid fields"));
                }
                if path_params || query_params {
                    add.push(("400", "A malformed path or query parameter"));
                }
                if secured && method == "post" && !path.starts_with("/api/v1/auth/") {
                    add.push(("400", "A malformed Idempotency-Key"));
                    add.push((
                        "409",
                        "The Idempotency-Key's first request is still running",
                    ));
                    add.push(("422", "The Idempotency-Key was used with another request"));
                }
                // Limited: every caller with a token (an action's own limit
                // or the defaults), the auth endpoints (their own limits per
                // address) and anything else anonymous but the exempt paths.
                if secured
                    || path.starts_with("/api/v1/auth/")
                    || crate::auth::throttle::counts_as_anonymous(path)
                {
                    add.push(("429", "Over a rate limit; see Retry-After and RateLimit"));
                }
                if path.starts_with("/api/") || path == "/health/ready" {
                    add.push((
                        "503",
                        "The database is unavailable; retry after Retry-After",
                    ));
                }
                let responses = op
                    .entry("responses")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(responses) = responses.as_object_mut() {
                    for (status, description) in add {
                        responses
                            .entry(status)
                            .or_insert_with(|| problem(description));
                    }
                }
            }
        }
    }
    serde_json::from_value(doc).unwrap_or(api)
}
