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
                     idempotency_key_in_use with Retry-After.",
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
    api
}
