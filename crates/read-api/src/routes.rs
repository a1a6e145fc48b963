//! The storefront routes: parse and check the request, ask the read path,
//! and set the headers the contract names.

use actix_web::{
    HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder,
    http::{
        Method, StatusCode,
        header::{self, HeaderValue},
    },
    web,
};
use bytes::{BufMut, Bytes, BytesMut};
use cache::State as EntryState;
use domain::{Category, MinVersion, PageAfter, PageLimit, ProductId, SearchText, Version};
use service::http::{self, ApiError, ErrorResponse, Query, parse_id};

use crate::{
    AppState,
    pages::{PageQuery, normalize_query},
    read_path::Tier,
};

/// Every route here answers GET and HEAD (the same status and headers, no
/// body); any other method gets a 405 naming them.
const METHODS: &str = "GET, HEAD";

/// The storefront's routes (the scaffold adds probes, metrics, openapi).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/products")
            .service(
                web::resource("")
                    .route(http::get_or_head().to(list))
                    .default_service(http::method_not_allowed(METHODS)),
            )
            .service(
                web::resource("/search")
                    .route(http::get_or_head().to(search))
                    .default_service(http::method_not_allowed(METHODS)),
            )
            .service(
                web::resource("/featured")
                    .route(http::get_or_head().to(featured))
                    .default_service(http::method_not_allowed(METHODS)),
            )
            .service(
                web::resource("/trending")
                    .route(http::get_or_head().to(trending))
                    .default_service(http::method_not_allowed(METHODS)),
            )
            // `/{id}` and `/{id}/availability`, without a regex.
            .default_service(web::to(by_id)),
    );
}

fn json(mut builder: HttpResponseBuilder, tier: Tier, body: Bytes) -> HttpResponse {
    builder
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .insert_header(("X-Cache", tier.header()))
        .body(body)
}

/// Does `If-None-Match` name this version? (`*`, lists and weak tags count.)
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    let Some(value) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A product, from the nearest tier that may answer it.
#[utoipa::path(get, path = "/products/{id}", tag = "products", operation_id = "getProduct",
    params(("id" = ProductId, Path, description = "Product id"),
           ("min_version" = Option<MinVersion>, Query),
           ("If-None-Match" = Option<String>, Header, description = "ETags of cached copies: a list, weak tags and * accepted")),
    responses(
        (status = 200, description = "The product", body = domain::Product,
         headers(("ETag" = String, description = "The quoted version"),
                 ("X-Cache" = String, description = "Which tier answered: HIT-L1, HIT-L2 or MISS (Postgres)"),
                 ("Cache-Control" = String, description = "no-cache: a cache may keep it, but must revalidate with If-None-Match"))),
        (status = 304, description = "If-None-Match names the current version",
         headers(("ETag" = String), ("X-Cache" = String), ("Cache-Control" = String))),
        (status = 400, description = "Bad id or min_version", body = ErrorResponse),
        (status = 404, description = "No such product (or deleted)", body = ErrorResponse,
         headers(("X-Cache" = String))),
        (status = 503, description = "Postgres is unavailable or overloaded", body = ErrorResponse)))]
pub async fn product(
    state: web::Data<AppState>,
    req: HttpRequest,
    raw_id: &str,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(raw_id)?;
    let query = Query::parse(&req)?;
    let min_version = query
        .int("min_version", MinVersion::new)?
        .map_or(Version::ZERO, MinVersion::get);
    let answer = state.read.product(id, min_version).await?;
    let EntryState::Value(body) = &answer.entry.state else {
        let err = ApiError::NotFound(format!("product {id} not found"));
        let mut res = actix_web::ResponseError::error_response(&err);
        res.headers_mut().insert(
            header::HeaderName::from_static("x-cache"),
            HeaderValue::from_static(answer.tier.header()),
        );
        return Ok(res);
    };
    // A HEAD (a cache revalidating, a link checker) is not a view.
    if req.method() == Method::GET {
        state.views.record(id);
    }
    let etag = format!("\"{}\"", answer.entry.version);
    let status = if not_modified(&req, &etag) {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::ETAG, etag))
        // Shared HTTP caches must revalidate: freshness is this service's job.
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if status == StatusCode::NOT_MODIFIED {
        return Ok(builder
            .insert_header(("X-Cache", answer.tier.header()))
            .finish());
    }
    Ok(json(builder, answer.tier, body.clone()))
}

/// `/products/{id}` and `/products/{id}/availability`, dispatched by hand:
/// actix matches dynamic segments with a regex, which was the read path's
/// largest cost after the network (7% of read-api's CPU on L1 hits).
pub async fn by_id(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let rest = req.path().strip_prefix("/products/").unwrap_or_default();
    let (raw_id, tail) = match rest.split_once('/') {
        Some((id, tail)) => (id, Some(tail)),
        None => (rest, None),
    };
    let route = match tail {
        _ if raw_id.is_empty() => return http::not_found(req).await,
        None => "/products/{id}",
        Some("availability") => "/products/{id}/availability",
        Some(_) => return http::not_found(req).await,
    };
    req.extensions_mut().insert(http::RouteLabel(route));
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed(METHODS));
    }
    match tail {
        None => product(state, req.clone(), raw_id).await,
        Some(_) => availability(state, raw_id).await,
    }
}

fn limit(query: &Query) -> Result<i64, ApiError> {
    Ok(query
        .int("limit", PageLimit::new)?
        .unwrap_or_default()
        .get())
}

/// A keyset page of products, optionally of one category, by id.
#[utoipa::path(get, path = "/products", tag = "products", operation_id = "listProducts",
    params(("category" = Option<Category>, Query, description = "Only this category"),
           ("limit" = Option<PageLimit>, Query),
           ("after" = Option<PageAfter>, Query)),
    responses((status = 200, description = "A page, by id", body = crate::openapi::ProductPage,
               headers(("X-Cache" = String, description = "HIT-L2 or MISS"))),
        (status = 400, description = "Bad category, limit or after", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable or overloaded", body = ErrorResponse)))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req)?;
    let category = query
        .text("category", Category::parse)?
        .map(Category::into_inner);
    let after = query.int("after", PageAfter::new)?.unwrap_or_default();
    let page = PageQuery::List {
        category,
        after: after.get(),
        limit: limit(&query)?,
    };
    let (body, tier) = state.pages.get(page).await?;
    Ok(json(HttpResponse::Ok(), tier, body))
}

/// Featured products.
#[utoipa::path(get, path = "/products/featured", tag = "products", operation_id = "featuredProducts",
    params(("limit" = Option<PageLimit>, Query)),
    responses((status = 200, description = "Featured products, by id", body = crate::openapi::ProductItems,
               headers(("X-Cache" = String, description = "HIT-L2 or MISS"))),
        (status = 400, description = "Bad limit", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable or overloaded", body = ErrorResponse)))]
pub async fn featured(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req)?;
    let page = PageQuery::Featured {
        limit: limit(&query)?,
    };
    let (body, tier) = state.pages.get(page).await?;
    Ok(json(HttpResponse::Ok(), tier, body))
}

/// Full-text search over name, category and description, best match first.
#[utoipa::path(get, path = "/products/search", tag = "products", operation_id = "searchProducts",
    params(("q" = SearchText, Query),
           ("limit" = Option<PageLimit>, Query)),
    responses((status = 200, description = "Matches, best first", body = crate::openapi::ProductItems,
               headers(("X-Cache" = String, description = "HIT-L2 or MISS"))),
        (status = 400, description = "Bad q or limit", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable or overloaded", body = ErrorResponse)))]
pub async fn search(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req)?;
    let q = query
        .text("q", SearchText::parse)?
        .ok_or_else(|| ApiError::bad_parameter("q", "q is required"))?;
    let page = PageQuery::Search {
        q: normalize_query(q.as_str()),
        limit: limit(&query)?,
    };
    let (body, tier) = state.pages.get(page).await?;
    Ok(json(HttpResponse::Ok(), tier, body))
}

/// The most viewed products over the last 24 hours.
#[utoipa::path(get, path = "/products/trending", tag = "products", operation_id = "trendingProducts",
    params(("limit" = Option<PageLimit>, Query)),
    responses((status = 200, description = "Most viewed first", body = crate::openapi::TrendingItems,
               headers(("X-Degraded" = String, description = "Only when Redis is unavailable: `trending`, and the items are featured products with views 0"))),
        (status = 400, description = "Bad limit", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable or overloaded", body = ErrorResponse)))]
pub async fn trending(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req)?;
    let limit = limit(&query)?;
    let limit_usize = usize::try_from(limit).unwrap_or_default();
    let ranked = match state.redis.trending(limit_usize).await {
        Ok(top) => {
            if top.is_empty() {
                // No top list yet (a fresh deployment, or it expired): ask
                // the trending task for one now rather than wait for its
                // next turn. It rolls up under the cross-instance lock.
                state.rollup.notify_one();
            }
            Some(top)
        }
        Err(_) => None,
    };
    let Some(ranked) = ranked else {
        return degraded_trending(&state, limit).await;
    };
    let lookups = ranked
        .iter()
        .map(|(id, _)| state.read.product(*id, Version::ZERO));
    let answers = futures::future::join_all(lookups).await;
    let mut body = BytesMut::with_capacity(64 + ranked.len() * 600);
    body.put_slice(b"{\"items\":[");
    let mut first = true;
    for ((_, views), answer) in ranked.iter().zip(answers) {
        // A product deleted since it was viewed simply drops out.
        if let EntryState::Value(product) = &answer?.entry.state {
            if !first {
                body.put_u8(b',');
            }
            first = false;
            body.put_slice(b"{\"product\":");
            body.put_slice(product);
            body.put_slice(format!(",\"views\":{views}}}").as_bytes());
        }
    }
    body.put_slice(b"]}");
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(body.freeze()))
}

/// Trending without Redis: featured products, zero views, flagged.
async fn degraded_trending(state: &AppState, limit: i64) -> Result<HttpResponse, ApiError> {
    metrics::counter!("trending_degraded_total").increment(1);
    let featured = state
        .read
        .db
        .query(async |db| {
            let (featured, _) = db
                .read(|source| async move { source.featured(limit).await })
                .await?;
            Ok(featured)
        })
        .await?;
    let items: Vec<_> = featured
        .iter()
        .map(|p| serde_json::json!({"product": p, "views": 0}))
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("X-Degraded", "trending"))
        .json(serde_json::json!({ "items": items })))
}

/// Stock on hand, always read live from the primary; never cached.
#[utoipa::path(get, path = "/products/{id}/availability", tag = "products", operation_id = "getAvailability",
    params(("id" = ProductId, Path, description = "Product id")),
    responses((status = 200, description = "Stock on hand, live", body = domain::Availability,
               headers(("Cache-Control" = String, description = "no-store: no cache may keep it"))),
        (status = 400, description = "Bad id", body = ErrorResponse),
        (status = 404, description = "No such product", body = ErrorResponse),
        (status = 503, description = "Postgres is unavailable or overloaded", body = ErrorResponse)))]
pub async fn availability(
    state: web::Data<AppState>,
    raw_id: &str,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(raw_id)?;
    let found = state
        .read
        .db
        .query(async |db| db.primary.availability(id).await)
        .await?;
    let availability =
        found.ok_or_else(|| ApiError::NotFound(format!("product {id} not found")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(availability))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn if_none_match_forms() {
        let req = |v: &str| {
            TestRequest::default()
                .insert_header((header::IF_NONE_MATCH, v))
                .to_http_request()
        };
        assert!(not_modified(&req("\"3\""), "\"3\""));
        assert!(not_modified(&req("W/\"3\""), "\"3\""));
        assert!(not_modified(&req("\"1\", \"3\""), "\"3\""));
        assert!(not_modified(&req("*"), "\"3\""));
        assert!(!not_modified(&req("\"2\""), "\"3\""));
        assert!(!not_modified(
            &TestRequest::default().to_http_request(),
            "\"3\""
        ));
    }
}
