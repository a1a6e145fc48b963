//! The admin routes. Each handler validates, runs one store transaction (which
//! writes the change and its outbox event together) and hands the committed
//! outbox rows to the relay.

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderValue},
    web,
};
use domain::{
    BulkPatchItem, IfMatch, NewProduct, Product, ProductId, ProductPatch, StockUpdate, Version,
    schema::{BulkCreate, BulkPatch},
};
use service::http::{self, ApiError, ErrorResponse, json_body, parse_id, store_error};
use store::StoreError;
use tracing_actix_web::RequestId;

use crate::State;

/// The admin routes, all behind the bearer token (the scaffold adds probes,
/// metrics, openapi).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/products")
            .wrap(actix_web::middleware::from_fn(crate::auth::require_token))
            .service(
                web::resource("")
                    .route(web::post().to(create))
                    .default_service(http::method_not_allowed("POST")),
            )
            .service(
                web::resource("/bulk")
                    .route(web::post().to(create_bulk))
                    .route(web::patch().to(patch_bulk))
                    .default_service(http::method_not_allowed("POST, PATCH")),
            )
            .service(
                web::resource("/{id}")
                    .route(http::get_or_head().to(get))
                    .route(web::patch().to(patch))
                    .route(web::delete().to(delete))
                    .default_service(http::method_not_allowed("GET, HEAD, PATCH, DELETE")),
            )
            .service(
                web::resource("/{id}/stock")
                    .route(web::put().to(put_stock))
                    .default_service(http::method_not_allowed("PUT")),
            ),
    );
}

/// The request id, which becomes the change's correlation id: it travels
/// with the event to every consumer's log lines.
fn correlation(request_id: &RequestId) -> String {
    request_id.to_string()
}

/// `If-Match`: absent or `*` → no version condition; `"N"` → version N.
fn if_match(req: &HttpRequest) -> Result<Option<Version>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .map_err(|_| IfMatch::EXPECTED.to_owned())
        .and_then(IfMatch::parse)
        .map(IfMatch::version)
        .map_err(|message| ApiError::bad_parameter("If-Match", message))
}

fn etag(product: &Product) -> (header::HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("\"{}\"", product.version))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    (header::ETAG, value)
}

fn with_product(mut response: actix_web::HttpResponseBuilder, product: &Product) -> HttpResponse {
    response.insert_header(etag(product)).json(product)
}

/// Create a product.
#[utoipa::path(post, path = "/products", tag = "products", operation_id = "createProduct",
    request_body = NewProduct,
    responses(
        (status = 201, description = "Created", body = Product,
         headers(("Location" = String, description = "/products/{id}"), ("ETag" = String, description = "\"1\"")),
         links(
            ("getProduct" = (operation_id = "getProduct", parameters(("id" = "$response.body#/id")))),
            ("patchProduct" = (operation_id = "patchProduct", parameters(("id" = "$response.body#/id"), ("If-Match" = "$response.header.ETag")))),
            ("deleteProduct" = (operation_id = "deleteProduct", parameters(("id" = "$response.body#/id"), ("If-Match" = "$response.header.ETag")))),
            ("putStock" = (operation_id = "putStock", parameters(("id" = "$response.body#/id")))))),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 401, description = "No or a wrong bearer token", body = ErrorResponse),
        (status = 409, description = "The sku is taken", body = ErrorResponse),
        (status = 413, description = "Body over 1 MiB", body = ErrorResponse),
        (status = 422, description = "A rule of the product schema, naming the field", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable", body = ErrorResponse)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<State>,
    req: HttpRequest,
    request_id: RequestId,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let new = NewProduct::from_json(&json_body(&req, body).await?)?;
    let product = state
        .db
        .create(&new, Some(&correlation(&request_id)))
        .await?;
    tracing::info!(product_id = %product.id, version = %product.version, "product created");
    state.relay.wake();
    let mut response = HttpResponse::Created();
    response.insert_header((header::LOCATION, format!("/products/{}", product.id)));
    Ok(with_product(response, &product))
}

/// Create up to 1000 products in one transaction: all or nothing.
#[utoipa::path(post, path = "/products/bulk", tag = "products", operation_id = "createProducts",
    request_body = BulkCreate,
    responses(
        (status = 201, description = "Created, ids in request order", body = crate::openapi::BulkCreated),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 401, description = "No or a wrong bearer token", body = ErrorResponse),
        (status = 409, description = "A sku is taken, or given twice", body = ErrorResponse),
        (status = 413, description = "Body over 1 MiB", body = ErrorResponse),
        (status = 422, description = "A rule of the product schema, naming the field (products[3].sku)", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable", body = ErrorResponse)),
    security(("bearer" = [])))]
pub async fn create_bulk(
    state: web::Data<State>,
    req: HttpRequest,
    request_id: RequestId,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let new = NewProduct::bulk_from_json(&json_body(&req, body).await?)?;
    if let Some((i, sku)) = NewProduct::first_duplicate_sku(&new) {
        return Err(ApiError::Conflict(format!(
            "products[{i}]: sku {} appears twice in this request",
            sku.as_str()
        )));
    }
    let created = state
        .db
        .create_bulk(&new, Some(&correlation(&request_id)))
        .await?;
    tracing::info!(count = created.len(), "products created in bulk");
    state.relay.wake();
    let ids: Vec<ProductId> = created.iter().map(|p| p.id).collect();
    Ok(HttpResponse::Created().json(serde_json::json!({ "ids": ids })))
}

/// Patch up to 1000 products in one transaction: all or nothing.
#[utoipa::path(patch, path = "/products/bulk", tag = "products", operation_id = "patchProducts",
    request_body = BulkPatch,
    responses(
        (status = 200, description = "Patched: each product's version after the change, in request order (unchanged where its patch changed nothing)", body = crate::openapi::BulkPatched),
        (status = 400, description = "Malformed JSON", body = ErrorResponse),
        (status = 401, description = "No or a wrong bearer token", body = ErrorResponse),
        (status = 404, description = "The first unknown id, in request order; nothing written", body = ErrorResponse),
        (status = 409, description = "A product given twice (the message names the second item)", body = ErrorResponse),
        (status = 412, description = "The first item whose if_match is not the current version, in request order; nothing written", body = ErrorResponse),
        (status = 413, description = "Body over 1 MiB", body = ErrorResponse),
        (status = 422, description = "A rule of the patch schema, naming the item and field (items[3].patch.price_cents)", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable", body = ErrorResponse)),
    security(("bearer" = [])))]
pub async fn patch_bulk(
    state: web::Data<State>,
    req: HttpRequest,
    request_id: RequestId,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let items = BulkPatchItem::bulk_from_json(&json_body(&req, body).await?)?;
    if let Some((i, id)) = BulkPatchItem::first_duplicate_id(&items) {
        return Err(ApiError::Conflict(format!(
            "items[{i}]: product {id} appears twice in this request"
        )));
    }
    let patched = state
        .db
        .update_bulk(&items, Some(&correlation(&request_id)))
        .await
        .map_err(|e| store_error(e, None))?;
    tracing::info!(count = patched.len(), "products patched in bulk");
    state.relay.wake();
    let items: Vec<_> = patched
        .iter()
        .map(|(id, version)| serde_json::json!({ "id": id, "version": version }))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// Read a product from the primary (never a cache).
#[utoipa::path(get, path = "/products/{id}", tag = "products", operation_id = "getProduct",
    params(("id" = ProductId, Path, description = "Product id")),
    responses((status = 200, description = "The product", body = Product, headers(("ETag" = String, description = "The quoted version"))),
        (status = 400, description = "Bad id", body = ErrorResponse),
        (status = 401, description = "No or a wrong bearer token", body = ErrorResponse),
        (status = 404, description = "No such product", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable", body = ErrorResponse)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<State>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    match state
        .db
        .product(id)
        .await
        .map_err(|e| store_error(e, Some(id)))?
    {
        Some(product) => Ok(with_product(HttpResponse::Ok(), &product)),
        None => Err(store_error(StoreError::NotFound, Some(id))),
    }
}

/// Apply a JSON merge patch; `If-Match` makes it conditional.
#[utoipa::path(patch, path = "/products/{id}", tag = "products", operation_id = "patchProduct",
    params(("id" = ProductId, Path, description = "Product id"),
           ("If-Match" = Option<IfMatch>, Header)),
    request_body(content = ProductPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "Updated: version + 1, or the unchanged product when the patch changes nothing", body = Product,
               headers(("ETag" = String, description = "The quoted version")),
               links(
                  ("getProduct" = (operation_id = "getProduct", parameters(("id" = "$request.path.id")))),
                  ("deleteProduct" = (operation_id = "deleteProduct", parameters(("id" = "$request.path.id"), ("If-Match" = "$response.header.ETag")))))),
        (status = 400, description = "Malformed JSON, bad id or If-Match", body = ErrorResponse),
        (status = 401, description = "No or a wrong bearer token", body = ErrorResponse),
        (status = 404, description = "No such product", body = ErrorResponse),
        (status = 412, description = "If-Match names a version that is not current", body = ErrorResponse),
        (status = 413, description = "Body over 1 MiB", body = ErrorResponse),
        (status = 422, description = "A rule of the product schema, naming the field", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable", body = ErrorResponse)),
    security(("bearer" = [])))]
pub async fn patch(
    state: web::Data<State>,
    req: HttpRequest,
    request_id: RequestId,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let expected = if_match(&req)?;
    let patch = ProductPatch::from_json(&json_body(&req, body).await?)?;
    let product = state
        .db
        .update(id, &patch, expected, Some(&correlation(&request_id)))
        .await
        .map_err(|e| store_error(e, Some(id)))?;
    tracing::info!(product_id = %id, version = %product.version, "product patched");
    state.relay.wake();
    Ok(with_product(HttpResponse::Ok(), &product))
}

/// Delete a product; `If-Match` makes it conditional.
#[utoipa::path(delete, path = "/products/{id}", tag = "products", operation_id = "deleteProduct",
    params(("id" = ProductId, Path, description = "Product id"),
           ("If-Match" = Option<IfMatch>, Header)),
    responses((status = 204, description = "Deleted",
               links(("getProduct" = (operation_id = "getProduct", parameters(("id" = "$request.path.id")))))),
        (status = 400, description = "Bad id or If-Match", body = ErrorResponse),
        (status = 401, description = "No or a wrong bearer token", body = ErrorResponse),
        (status = 404, description = "No such product", body = ErrorResponse),
        (status = 412, description = "If-Match names a version that is not current", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable", body = ErrorResponse)),
    security(("bearer" = [])))]
pub async fn delete(
    state: web::Data<State>,
    req: HttpRequest,
    request_id: RequestId,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let expected = if_match(&req)?;
    state
        .db
        .delete(id, expected, Some(&correlation(&request_id)))
        .await
        .map_err(|e| store_error(e, Some(id)))?;
    tracing::info!(product_id = %id, "product deleted");
    state.relay.wake();
    Ok(HttpResponse::NoContent().finish())
}

/// Set stock on hand. Stock is never cached: no version change, no event.
#[utoipa::path(put, path = "/products/{id}/stock", tag = "products", operation_id = "putStock",
    params(("id" = ProductId, Path, description = "Product id")),
    request_body = StockUpdate,
    responses((status = 200, description = "Stock on hand", body = domain::Availability,
               headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed JSON or bad id", body = ErrorResponse),
        (status = 401, description = "No or a wrong bearer token", body = ErrorResponse),
        (status = 404, description = "No such product", body = ErrorResponse),
        (status = 413, description = "Body over 1 MiB", body = ErrorResponse),
        (status = 422, description = "stock is not an integer >= 0, or an unknown field", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable", body = ErrorResponse)),
    security(("bearer" = [])))]
pub async fn put_stock(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let units = StockUpdate::from_json(&json_body(&req, body).await?)?.stock;
    let availability = state
        .db
        .set_stock(id, units)
        .await
        .map_err(|e| store_error(e, Some(id)))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(availability))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn if_match_forms() {
        let req = |v: &str| {
            TestRequest::default()
                .insert_header((header::IF_MATCH, v))
                .to_http_request()
        };
        assert_eq!(if_match(&req("\"3\"")).unwrap(), Some(Version(3)));
        assert_eq!(if_match(&req("*")).unwrap(), None);
        assert_eq!(
            if_match(&TestRequest::default().to_http_request()).unwrap(),
            None
        );
        for bad in [
            "3",
            "W/\"3\"",
            "\"\"",
            "\"-1\"",
            "\"x\"",
            "\"99999999999999999999\"",
        ] {
            assert!(if_match(&req(bad)).is_err(), "{bad}");
        }
    }
}
