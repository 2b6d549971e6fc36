//! The application router: the contexts' routes with the layers every
//! response goes through. The state handlers share is defined with the
//! contexts, in `routes/mod.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::config::HttpConfig;
use crate::{middleware, openapi, routes};

pub use crate::routes::AppState;

/// The whole public HTTP surface: API routes, health, OpenAPI and docs,
/// with the layers every response goes through.
pub fn router(state: AppState) -> Router {
    let http = Arc::clone(&state.http);
    let (api_router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(routes::router())
        .split_for_parts();
    let api = Arc::new(openapi::finish(api));
    let app = api_router
        .merge(routes::meta::docs_router())
        .layer(axum::Extension(api))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::throttle::layer,
        ))
        .with_state(state);
    with_layers(app, &http)
}

/// The layers every response goes through: 404/405 fallbacks, body limit,
/// timeout, CORS, request ids, logging, metrics, problem rendering and the
/// security headers.
pub fn with_layers(app: Router, http: &HttpConfig) -> Router {
    let mut app = app
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(http.request_timeout_secs),
        ))
        .layer(axum::middleware::from_fn_with_state(
            http.max_body_bytes,
            middleware::refuse_oversized,
        ));
    let origins: Vec<HeaderValue> = http
        .cors_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if !origins.is_empty() {
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods(tower_http::cors::Any)
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("idempotency-key"),
                ]),
        );
    }
    app.layer(axum::middleware::from_fn(middleware::observe))
        .layer(security_header(header::CACHE_CONTROL, "no-store"))
        .layer(security_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(security_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(security_header(
            header::CONTENT_SECURITY_POLICY,
            "frame-ancestors 'none'",
        ))
}

fn security_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}
