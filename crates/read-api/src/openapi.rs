//! The OpenAPI document served at `/openapi.json`. The response wrappers
//! here only describe the wire format.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// `{"items": [...], "next_after": id | null}`.
#[derive(Serialize, ToSchema)]
pub struct ProductPage {
    items: Vec<domain::Product>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<i64>,
}

/// `{"items": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct ProductItems {
    items: Vec<domain::Product>,
}

#[derive(Serialize, ToSchema)]
pub struct TrendingItem {
    product: domain::Product,
    /// Views over the last 24 hours.
    views: u64,
}

/// `{"items": [{"product": {...}, "views": N}]}`, most viewed first.
#[derive(Serialize, ToSchema)]
pub struct TrendingItems {
    items: Vec<TrendingItem>,
}

/// Every error: `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// bad_request, not_found, overloaded, unavailable.
    #[schema(example = "bad_request")]
    code: String,
    message: String,
    field: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Catalog read-api",
        description = "Storefront reads served from a version-fenced L1 and Redis, Postgres as the source of truth."
    ),
    paths(
        crate::routes::product,
        crate::routes::list,
        crate::routes::featured,
        crate::routes::search,
        crate::routes::trending,
        crate::routes::availability,
    ),
    components(schemas(
        ErrorResponse,
        ProductPage,
        ProductItems,
        TrendingItems,
        domain::Product,
        domain::Availability
    ))
)]
pub struct ApiDoc;
