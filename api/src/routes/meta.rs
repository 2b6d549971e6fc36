//! `/openapi.json`, `/asyncapi.json` and `/docs`.

use std::sync::Arc;

use axum::{Extension, Json, Router};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::app::AppState;

/// `/openapi.json`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(asyncapi_json))
}

/// The AsyncAPI 3 document of the realtime WebSocket (`/api/v1/realtime`).
#[utoipa::path(get, path = "/asyncapi.json", tag = "operations",
    responses((status = 200, description = "The AsyncAPI 3 document", body = Object)))]
async fn asyncapi_json() -> Json<serde_json::Value> {
    Json(crate::realtime::asyncapi::document())
}

/// The Swagger UI, its assets vendored into the binary at build time.
pub fn docs_router() -> Router<AppState> {
    Router::from(SwaggerUi::new("/docs").config(Config::from("/openapi.json"))).with_state(())
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn openapi_json(Extension(api): Extension<Arc<OpenApi>>) -> Json<OpenApi> {
    Json((*api).clone())
}

/// The interactive API documentation (Swagger UI). Served by the docs router;
/// declared here so that it appears in the document.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "Swagger UI", content_type = "text/html", body = String)))]
#[expect(
    dead_code,
    reason = "the Swagger UI router serves /docs; this only documents it"
)]
async fn docs() {}

/// The paths served outside the OpenApiRouter.
#[derive(utoipa::OpenApi)]
#[openapi(paths(docs))]
pub struct Unrouted;
