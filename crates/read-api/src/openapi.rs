//! The OpenAPI document served at `/openapi.json`. The response wrappers
//! here only describe the wire format.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// `{"items": [...], "next_after": id | null}`.
#[derive(Serialize, ToSchema)]
pub struct ProductPage {
    items: Vec<domain::Product>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<domain::ProductId>,
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
        service::http::ErrorResponse,
        ProductPage,
        ProductItems,
        TrendingItems,
        domain::Product,
        domain::Availability,
        // Parameters: registered by hand, utoipa collects only bodies.
        domain::ProductId,
        domain::MinVersion,
        domain::Category,
        domain::PageLimit,
        domain::PageAfter,
        domain::SearchText,
    )),
    tags((name = "products", description = "Storefront reads. Every route also answers HEAD."),
         (name = "operations", description = "Probes, metrics and this document."))
)]
pub struct ApiDoc;
