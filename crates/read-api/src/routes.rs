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
use domain::{Category, ProductId, Version};
use service::http::{self, ApiError, Query};

use crate::{
    AppState,
    pages::{PageQuery, normalize_query},
    read_path::{ReadError, Tier},
};

const MAX_LIMIT: i64 = 100;
const DEFAULT_LIMIT: i64 = 20;

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Overloaded => ApiError::Overloaded,
            ReadError::Unavailable => ApiError::Unavailable("the database"),
            ReadError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

fn parse_id(raw: &str) -> Result<ProductId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::BadRequest(format!("id must be a positive 64-bit integer, got {raw:?}"))
    })
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
#[utoipa::path(get, path = "/products/{id}", tag = "products",
    params(("id" = i64, Path, description = "Product id"),
           ("min_version" = Option<i64>, Query, description = "Never answer with an older version if Postgres has this one (read-your-writes)"),
           ("If-None-Match" = Option<String>, Header, description = "ETag of a cached copy")),
    responses(
        (status = 200, body = domain::Product, headers(("ETag" = String), ("X-Cache" = String, description = "HIT-L1, HIT-L2 or MISS"))),
        (status = 304, description = "The client's copy is current"),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 404, body = crate::openapi::ErrorResponse),
        (status = 503, body = crate::openapi::ErrorResponse)))]
pub async fn product(
    state: web::Data<AppState>,
    req: HttpRequest,
    raw_id: &str,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(raw_id)?;
    let query = Query::parse(&req)?;
    let min_version = query
        .opt::<i64>("min_version", "a positive integer")?
        .map(|v| {
            if v >= 1 {
                Ok(Version(v))
            } else {
                Err(ApiError::BadRequest(
                    "min_version must be a positive integer".into(),
                ))
            }
        })
        .transpose()?
        .unwrap_or(Version::ZERO);
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
    state.views.record(id);
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
    if req.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed("GET"));
    }
    match tail {
        None => product(state, req.clone(), raw_id).await,
        Some(_) => availability(state, raw_id).await,
    }
}

fn limit(query: &Query) -> Result<i64, ApiError> {
    query.int_in("limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
}

/// A keyset page of products, optionally of one category, by id.
#[utoipa::path(get, path = "/products", tag = "products",
    params(("category" = Option<String>, Query, description = "Only this category"),
           ("limit" = Option<i64>, Query, description = "1–100, default 20"),
           ("after" = Option<i64>, Query, description = "The previous page's next_after")),
    responses((status = 200, body = crate::openapi::ProductPage, headers(("X-Cache" = String))),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 503, body = crate::openapi::ErrorResponse)))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req)?;
    let category = query
        .str("category")
        .map(|c| {
            Category::parse(c)
                .map(Category::into_inner)
                .map_err(ApiError::BadRequest)
        })
        .transpose()?;
    let after = match query.opt::<i64>("after", "a product id (a non-negative integer)")? {
        None | Some(0) => None,
        Some(a) => Some(ProductId::new(a).map_err(|_| {
            ApiError::BadRequest("after must be a product id (a non-negative integer)".into())
        })?),
    };
    let page = PageQuery::List {
        category,
        after,
        limit: limit(&query)?,
    };
    let (body, tier) = state.pages.get(page).await?;
    Ok(json(HttpResponse::Ok(), tier, body))
}

/// Featured products.
#[utoipa::path(get, path = "/products/featured", tag = "products",
    params(("limit" = Option<i64>, Query, description = "1–100, default 20")),
    responses((status = 200, body = crate::openapi::ProductItems, headers(("X-Cache" = String))),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 503, body = crate::openapi::ErrorResponse)))]
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
#[utoipa::path(get, path = "/products/search", tag = "products",
    params(("q" = String, Query, description = "1–200 characters; web-search syntax: \"phrase\", -exclude, or"),
           ("limit" = Option<i64>, Query, description = "1–100, default 20")),
    responses((status = 200, body = crate::openapi::ProductItems, headers(("X-Cache" = String))),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 503, body = crate::openapi::ErrorResponse)))]
pub async fn search(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req)?;
    let raw = query
        .str("q")
        .ok_or_else(|| ApiError::BadRequest("q is required".into()))?;
    let chars = raw.chars().count();
    if chars == 0 || chars > 200 || raw.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "q must be 1-200 characters, not blank".into(),
        ));
    }
    let page = PageQuery::Search {
        q: normalize_query(raw),
        limit: limit(&query)?,
    };
    let (body, tier) = state.pages.get(page).await?;
    Ok(json(HttpResponse::Ok(), tier, body))
}

/// The most viewed products over the last 24 hours.
#[utoipa::path(get, path = "/products/trending", tag = "products",
    params(("limit" = Option<i64>, Query, description = "1–100, default 20")),
    responses((status = 200, body = crate::openapi::TrendingItems,
               headers(("X-Degraded" = Option<String>, description = "`trending` when Redis is unavailable: featured products with views 0"))),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 503, body = crate::openapi::ErrorResponse)))]
pub async fn trending(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req)?;
    let limit = limit(&query)?;
    let limit_usize = usize::try_from(limit).unwrap_or(20);
    let ranked = match state.trending_l2.trending(limit_usize).await {
        Ok(top) if top.is_empty() => {
            // No top list yet (fresh deployment, or it expired): make one
            // now rather than answer empty until the next periodic roll-up.
            let now = chrono::Utc::now().timestamp();
            let _ = state.trending_l2.rollup_trending(now, None).await;
            state.trending_l2.trending(limit_usize).await.ok()
        }
        Ok(top) => Some(top),
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
    let _slot = state
        .read
        .limiter
        .acquire()
        .await
        .map_err(ReadError::from)?;
    let db = state.read.replica.as_ref().unwrap_or(&state.read.primary);
    let featured = db.featured(limit).await.map_err(ReadError::from)?;
    let items: Vec<_> = featured
        .iter()
        .map(|p| serde_json::json!({"product": p, "views": 0}))
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("X-Degraded", "trending"))
        .json(serde_json::json!({ "items": items })))
}

/// Stock on hand, always read live from the primary; never cached.
#[utoipa::path(get, path = "/products/{id}/availability", tag = "products",
    params(("id" = i64, Path, description = "Product id")),
    responses((status = 200, body = domain::Availability, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = crate::openapi::ErrorResponse), (status = 404, body = crate::openapi::ErrorResponse),
        (status = 503, body = crate::openapi::ErrorResponse)))]
pub async fn availability(
    state: web::Data<AppState>,
    raw_id: &str,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(raw_id)?;
    let found = {
        let _slot = state
            .read
            .limiter
            .acquire()
            .await
            .map_err(ReadError::from)?;
        state
            .read
            .primary
            .availability(id)
            .await
            .map_err(ReadError::from)?
    };
    let availability =
        found.ok_or_else(|| ApiError::NotFound(format!("product {id} not found")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(availability))
}

/// `GET /readyz`: ready while Postgres answers; Redis and the event
/// subscription are reported but optional.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    use service::http::{Check, readiness};
    let postgres = Check::from_result(true, state.read.primary.ping().await);
    let mut checks = vec![("postgres", postgres)];
    if let Some(replica) = &state.read.replica {
        checks.push((
            "postgres_replica",
            Check::from_result(false, replica.ping().await),
        ));
    }
    checks.push((
        "redis",
        Check::from_result(false, state.trending_l2.ping().await),
    ));
    let events = if state.subscribed.load(std::sync::atomic::Ordering::Acquire) {
        Ok(())
    } else {
        Err("not subscribed; L1 relies on its TTL")
    };
    checks.push(("rabbitmq", Check::from_result(false, events)));
    readiness(checks)
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
