//! The OpenAPI document served at `/openapi.json`. The request-body types
//! here exist only to describe the wire format; parsing is in `domain::input`.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

/// A product to create. Unknown fields are rejected.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreateProduct {
    /// 1–64 of `[A-Za-z0-9._-]`, unique.
    #[schema(example = "LAPTOP-42")]
    sku: String,
    /// 1–200 characters, not blank.
    #[schema(example = "Ultrabook 14")]
    name: String,
    /// At most 5000 characters; default "".
    description: Option<String>,
    /// 1–64 of `[a-z0-9-]`.
    #[schema(example = "laptops")]
    category: String,
    /// 0 ≤ p ≤ 10^12.
    #[schema(example = 99900)]
    price_cents: i64,
    /// Three uppercase letters.
    #[schema(example = "USD")]
    currency: String,
    /// Default false.
    featured: Option<bool>,
    /// A JSON object of at most 16 KiB; default {}.
    #[schema(value_type = Option<Object>)]
    attributes: Option<HashMap<String, serde_json::Value>>,
    /// Units in stock, ≥ 0; default 0.
    stock: Option<i64>,
}

/// Up to 1000 products, created all or nothing.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BulkCreate {
    products: Vec<CreateProduct>,
}

/// Ids of the created products, in request order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BulkCreated {
    ids: Vec<i64>,
}

/// A JSON merge patch (RFC 7396). `null` resets `description`, `featured`
/// and `attributes` to their defaults; inside `attributes`, `null` removes a
/// key. `sku` and `stock` cannot be patched.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PatchProduct {
    name: Option<String>,
    description: Option<String>,
    category: Option<String>,
    price_cents: Option<i64>,
    currency: Option<String>,
    featured: Option<bool>,
    #[schema(value_type = Option<Object>)]
    attributes: Option<HashMap<String, serde_json::Value>>,
}

/// New stock on hand.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StockUpdate {
    #[schema(minimum = 0, example = 7)]
    stock: i64,
}

/// Every error: `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// bad_request, unauthorized, not_found, conflict, precondition_failed,
    /// payload_too_large, validation_failed, overloaded, unavailable.
    #[schema(example = "validation_failed")]
    code: String,
    #[schema(example = "price_cents must be an integer between 0 and 1000000000000")]
    message: String,
    /// The offending field, where one applies.
    #[schema(example = "price_cents")]
    field: Option<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Catalog write-api", description = "Admin API: product writes with a transactional outbox."),
    paths(
        crate::routes::create,
        crate::routes::create_bulk,
        crate::routes::get,
        crate::routes::patch,
        crate::routes::delete,
        crate::routes::put_stock,
    ),
    components(schemas(ErrorResponse, domain::Product, domain::Availability, domain::ChangeEvent)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
