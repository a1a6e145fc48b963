//! The OpenAPI document served at `/openapi.json`. Request bodies and
//! parameters are `domain`'s own types, documented in `domain::schema` from
//! the constants their parsers check; the types here only describe answers.

use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

/// Ids of the created products, in request order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BulkCreated {
    ids: Vec<domain::ProductId>,
}

/// One product of a bulk patch, with its version after the change.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PatchedVersion {
    id: domain::ProductId,
    version: domain::Version,
}

/// Each product's version after a bulk patch, in request order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BulkPatched {
    items: Vec<PatchedVersion>,
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
    info(title = "Catalog write-api", description = "Admin API: product writes with a transactional outbox. Every /products route needs `Authorization: Bearer <token>`."),
    paths(
        crate::routes::create,
        crate::routes::create_bulk,
        crate::routes::patch_bulk,
        crate::routes::get,
        crate::routes::patch,
        crate::routes::delete,
        crate::routes::put_stock,
    ),
    components(schemas(
        service::http::ErrorResponse,
        domain::Product,
        domain::Availability,
        domain::ChangeEvent,
        // Parameters: registered by hand, utoipa collects only bodies.
        domain::ProductId,
        domain::IfMatch,
    )),
    tags((name = "products", description = "Admin writes; GET /products/{id} also answers HEAD."),
         (name = "operations", description = "Probes, metrics and this document (no token).")),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
