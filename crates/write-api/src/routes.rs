//! The admin routes. Each handler validates, runs one store transaction (which
//! writes the change and its outbox event together) and hands the committed
//! outbox rows to the relay.

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderValue},
    web,
};
use domain::{NewProduct, Product, ProductId, ProductPatch, Stock, ValidationError, Version};
use serde_json::Value;
use service::http::{ApiError, json_body};
use store::StoreError;

use crate::State;

/// Maps a store failure onto the contract's error codes.
pub(crate) fn store_error(e: StoreError, id: Option<ProductId>) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound(match id {
            Some(id) => format!("product {id} not found"),
            None => "not found".to_owned(),
        }),
        StoreError::Conflict(message) => ApiError::Conflict(message),
        StoreError::PreconditionFailed { current } => ApiError::PreconditionFailed(format!(
            "If-Match does not match the current version (\"{current}\")"
        )),
        StoreError::Invalid(v) => v.into(),
        StoreError::Unavailable(detail) => {
            tracing::warn!(error.detail = %detail, "postgres unavailable");
            ApiError::Unavailable("the database")
        }
        StoreError::Internal(detail) => ApiError::Internal(detail),
    }
}

fn parse_id(raw: &str) -> Result<ProductId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::BadRequest(format!("id must be a positive 64-bit integer, got {raw:?}"))
    })
}

/// `If-Match`: absent or `*` → no version condition; `"N"` → version N.
fn if_match(req: &HttpRequest) -> Result<Option<Version>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad =
        || ApiError::BadRequest("If-Match must be a quoted version such as \"3\", or *".into());
    let value = value.to_str().map_err(|_| bad())?.trim();
    if value == "*" {
        return Ok(None);
    }
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(bad)?;
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    inner
        .parse::<i64>()
        .map(|v| Some(Version(v)))
        .map_err(|_| bad())
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
#[utoipa::path(post, path = "/products", tag = "products",
    request_body = crate::openapi::CreateProduct,
    responses(
        (status = 201, description = "Created", body = Product,
         headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 401, body = crate::openapi::ErrorResponse),
        (status = 409, description = "Duplicate sku", body = crate::openapi::ErrorResponse),
        (status = 413, body = crate::openapi::ErrorResponse), (status = 422, body = crate::openapi::ErrorResponse),
        (status = 503, body = crate::openapi::ErrorResponse)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let new = NewProduct::from_json(&json_body(&req, body).await?)?;
    let written = state
        .db
        .create(&new)
        .await
        .map_err(|e| store_error(e, None))?;
    state.relay.submit(written.events);
    let product = written.value;
    let mut response = HttpResponse::Created();
    response.insert_header((header::LOCATION, format!("/products/{}", product.id)));
    Ok(with_product(response, &product))
}

/// Create up to 1000 products in one transaction: all or nothing.
#[utoipa::path(post, path = "/products/bulk", tag = "products",
    request_body = crate::openapi::BulkCreate,
    responses(
        (status = 201, description = "Created, ids in request order", body = crate::openapi::BulkCreated),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 401, body = crate::openapi::ErrorResponse),
        (status = 409, body = crate::openapi::ErrorResponse), (status = 413, body = crate::openapi::ErrorResponse),
        (status = 422, body = crate::openapi::ErrorResponse), (status = 503, body = crate::openapi::ErrorResponse)),
    security(("bearer" = [])))]
pub async fn create_bulk(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let new = NewProduct::bulk_from_json(&json_body(&req, body).await?)?;
    let written = state
        .db
        .create_bulk(&new)
        .await
        .map_err(|e| store_error(e, None))?;
    state.relay.submit(written.events);
    let ids: Vec<ProductId> = written.value.iter().map(|p| p.id).collect();
    Ok(HttpResponse::Created().json(serde_json::json!({ "ids": ids })))
}

/// Read a product from the primary (never a cache).
#[utoipa::path(get, path = "/products/{id}", tag = "products",
    params(("id" = i64, Path, description = "Product id")),
    responses((status = 200, body = Product, headers(("ETag" = String))),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 401, body = crate::openapi::ErrorResponse),
        (status = 404, body = crate::openapi::ErrorResponse), (status = 503, body = crate::openapi::ErrorResponse)),
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
#[utoipa::path(patch, path = "/products/{id}", tag = "products",
    params(("id" = i64, Path, description = "Product id"),
           ("If-Match" = Option<String>, Header, description = "Quoted version, e.g. \"3\"")),
    request_body(content = crate::openapi::PatchProduct, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "Updated, version + 1", body = Product, headers(("ETag" = String))),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 401, body = crate::openapi::ErrorResponse),
        (status = 404, body = crate::openapi::ErrorResponse), (status = 412, body = crate::openapi::ErrorResponse),
        (status = 413, body = crate::openapi::ErrorResponse), (status = 422, body = crate::openapi::ErrorResponse),
        (status = 503, body = crate::openapi::ErrorResponse)),
    security(("bearer" = [])))]
pub async fn patch(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let expected = if_match(&req)?;
    let patch = ProductPatch::from_json(&json_body(&req, body).await?)?;
    let written = state
        .db
        .update(id, &patch, expected)
        .await
        .map_err(|e| store_error(e, Some(id)))?;
    state.relay.submit(written.events);
    Ok(with_product(HttpResponse::Ok(), &written.value))
}

/// Delete a product; `If-Match` makes it conditional.
#[utoipa::path(delete, path = "/products/{id}", tag = "products",
    params(("id" = i64, Path, description = "Product id"),
           ("If-Match" = Option<String>, Header, description = "Quoted version, e.g. \"3\"")),
    responses((status = 204, description = "Deleted"),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 401, body = crate::openapi::ErrorResponse),
        (status = 404, body = crate::openapi::ErrorResponse), (status = 412, body = crate::openapi::ErrorResponse),
        (status = 503, body = crate::openapi::ErrorResponse)),
    security(("bearer" = [])))]
pub async fn delete(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let expected = if_match(&req)?;
    let written = state
        .db
        .delete(id, expected)
        .await
        .map_err(|e| store_error(e, Some(id)))?;
    state.relay.submit(written.events);
    Ok(HttpResponse::NoContent().finish())
}

/// Set stock on hand. Stock is never cached: no version change, no event.
#[utoipa::path(put, path = "/products/{id}/stock", tag = "products",
    params(("id" = i64, Path, description = "Product id")),
    request_body = crate::openapi::StockUpdate,
    responses((status = 200, body = domain::Availability),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 401, body = crate::openapi::ErrorResponse),
        (status = 404, body = crate::openapi::ErrorResponse), (status = 413, body = crate::openapi::ErrorResponse),
        (status = 422, body = crate::openapi::ErrorResponse), (status = 503, body = crate::openapi::ErrorResponse)),
    security(("bearer" = [])))]
pub async fn put_stock(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let units = parse_stock(&json_body(&req, body).await?)?;
    let availability = state
        .db
        .set_stock(id, units)
        .await
        .map_err(|e| store_error(e, Some(id)))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(availability))
}

fn parse_stock(body: &Value) -> Result<Stock, ValidationError> {
    let body = body
        .as_object()
        .ok_or_else(|| ValidationError::body("request body must be a JSON object"))?;
    if let Some(key) = body.keys().find(|k| *k != "stock") {
        return Err(ValidationError::field(
            key.as_str(),
            format!("unknown field {key}"),
        ));
    }
    let units = body
        .get("stock")
        .ok_or_else(|| ValidationError::field("stock", "stock is required"))?
        .as_i64()
        .ok_or_else(|| ValidationError::field("stock", "stock must be an integer >= 0"))?;
    Stock::new(units).map_err(|m| ValidationError::field("stock", m))
}

/// `GET /readyz`: Postgres is required; RabbitMQ is reported but optional,
/// since writes succeed without it (events wait in the outbox). The broker's
/// state is the relay's connection as of its last pass (every poll), read
/// without I/O so a black-holed broker cannot slow the probe down.
pub async fn readyz(state: web::Data<State>) -> HttpResponse {
    use service::http::{Check, readiness};
    let postgres = Check::from_result(true, state.db.ping().await);
    let broker = if state.publisher.is_connected() {
        Ok(())
    } else {
        Err("the outbox relay is not connected; events wait in the outbox")
    };
    let rabbitmq = Check::from_result(false, broker);
    readiness(vec![("postgres", postgres), ("rabbitmq", rabbitmq)])
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
