//! HTTP plumbing shared by read-api and write-api: the contract's error
//! envelope, bounded JSON bodies, query parameters with clear errors,
//! per-route request metrics, readiness checks.

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::HashMap,
    future::{Future, Ready, ready},
    pin::Pin,
    rc::Rc,
    time::Instant,
};

use actix_web::{
    HttpMessage, HttpRequest, HttpResponse, ResponseError,
    body::MessageBody,
    dev::{Service, ServiceRequest, ServiceResponse, Transform},
    http::{StatusCode, header},
    web,
};
use domain::ProductId;
use futures::StreamExt;
use serde::Serialize;
use store::StoreError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A boxed error: the cause an [`ApiError`] keeps for the log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every error either API answers with; the variants are the contract's
/// error codes. 5xx variants keep their cause as a `source`: it is logged,
/// whole chain, once, where the error is answered, and never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON or an empty body: nothing in it to name.
    #[error("{0}")]
    BadRequest(String),
    /// A bad path or query parameter, or a bad header: `field` names it.
    #[error("{message}")]
    BadParameter { field: String, message: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    /// The route exists; these methods (the `Allow` header) are its own.
    #[error("method not allowed (allowed: {0})")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    #[error("{message}")]
    Validation {
        field: Option<String>,
        message: String,
    },
    /// Too much work in flight; the client should retry after a second.
    #[error("the service is overloaded; retry shortly")]
    Overloaded,
    /// A backing store is down: the message names it, the cause is logged.
    #[error("{what} is unavailable; retry shortly")]
    Unavailable {
        what: &'static str,
        #[source]
        source: BoxError,
    },
    /// A bug. The cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl From<domain::ValidationError> for ApiError {
    fn from(e: domain::ValidationError) -> Self {
        Self::Validation {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        store_error(e, None)
    }
}

/// Maps a store failure onto the contract's error codes; `product` names
/// the product a `NotFound` is about.
pub fn store_error(e: StoreError, product: Option<ProductId>) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound(match product {
            Some(id) => format!("product {id} not found"),
            None => "not found".to_owned(),
        }),
        StoreError::Conflict(message) => ApiError::Conflict(message),
        StoreError::PreconditionFailed {
            current,
            product: None,
        } => ApiError::PreconditionFailed(format!(
            "If-Match does not match the current version (\"{current}\")"
        )),
        StoreError::PreconditionFailed {
            current,
            product: Some(id),
        } => ApiError::PreconditionFailed(format!(
            "product {id}: if_match does not match the current version ({current})"
        )),
        StoreError::ProductNotFound(id) => ApiError::NotFound(format!("product {id} not found")),
        StoreError::Invalid(v) => v.into(),
        e @ StoreError::Unavailable(_) => ApiError::Unavailable {
            what: "the database",
            source: e.into(),
        },
        e @ StoreError::Internal(_) => ApiError::Internal(e.into()),
    }
}

impl ApiError {
    /// A 400 naming the parameter or header `field`.
    pub fn bad_parameter(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadParameter {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A path segment that must be a product id: 400 naming it otherwise.
pub fn parse_id(raw: &str) -> Result<ProductId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_parameter(
            "id",
            format!("id must be a positive 64-bit integer, got {raw:?}"),
        )
    })
}

/// Displays an error and its whole chain of sources, `a: b: c`: what is
/// logged where an error is answered.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// The error envelope, as both OpenAPI documents describe it:
/// `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    error: ErrorDetail,
}

/// One error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The contract's error code.
    #[schema(example = "bad_request")]
    code: ErrorCode,
    /// What went wrong, for a human.
    message: String,
    /// The offending field, where one applies (indexed for bulk bodies,
    /// e.g. `products[3].price_cents`).
    #[schema(nullable = false)]
    field: Option<String>,
}

/// The contract's error codes.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    ValidationFailed,
    Overloaded,
    Unavailable,
    Internal,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::BadParameter { .. } => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Validation { .. } => "validation_failed",
            Self::Overloaded => "overloaded",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Overloaded | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Logged here, once, at the boundary, with the whole chain; the
        // client sees only the message.
        match self {
            Self::Internal(_) => tracing::error!(error = %Chain(self), "internal error"),
            Self::Unavailable { .. } => tracing::warn!(error = %Chain(self), "answering 503"),
            _ => {}
        }
        let field = match self {
            Self::Validation { field, .. } => field.as_deref(),
            Self::BadParameter { field, .. } => Some(field.as_str()),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::MethodNotAllowed(allowed) => {
                response.insert_header((header::ALLOW, *allowed));
            }
            Self::Overloaded | Self::Unavailable { .. } => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        response.json(ErrorEnvelope {
            error: ErrorBody {
                code: self.code(),
                message: self.to_string(),
                field,
            },
        })
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`]: 413 beyond it, 400 when
/// it is not JSON.
pub async fn json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<serde_json::Value, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(MAX_BODY_BYTES));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("could not read body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; send JSON".into(),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| refused_json(&body, &e))
}

/// A body serde_json refused: 400, except for an unpaired UTF-16
/// surrogate escape (`"\ud800"`). RFC 8259's grammar allows one, but no
/// string can hold it, so it is a bad value, not bad syntax: 422 naming
/// the member, found by a second parse that tracks the path (only on this
/// rare failure, so a good body is parsed once).
fn refused_json(body: &[u8], e: &serde_json::Error) -> ApiError {
    if is_unpaired_surrogate(e) {
        let mut tracked = serde_json::Deserializer::from_slice(body);
        let path = match serde_path_to_error::deserialize::<_, serde_json::Value>(&mut tracked) {
            Err(e) => e.path().to_string(),
            Ok(_) => ".".to_owned(),
        };
        let field = (path != ".").then_some(path);
        let what = field.as_deref().unwrap_or("a string");
        return ApiError::Validation {
            message: format!(
                "{what} must not contain an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
            ),
            field,
        };
    }
    ApiError::BadRequest(format!("malformed JSON: {e}"))
}

/// serde_json says so only in its message (its error category is "syntax");
/// a test pins the messages of the serde_json in use.
fn is_unpaired_surrogate(e: &serde_json::Error) -> bool {
    let message = e.to_string();
    message.starts_with("lone leading surrogate in hex escape")
        || message.starts_with("unexpected end of hex escape")
}

/// Query parameters, parsed once, with typed getters whose errors name the
/// parameter. Unknown parameters are ignored (cache busters are common), but
/// no parameter may hold NUL or bytes that are not UTF-8: nothing that
/// Postgres would refuse gets past here.
#[derive(Debug)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(req: &HttpRequest) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = form_decode(raw_name).ok_or_else(|| {
                ApiError::BadRequest("a query parameter's name is not UTF-8".into())
            })?;
            if name.contains(domain::text::NUL) {
                return Err(ApiError::BadRequest(
                    "a query parameter's name contains a NUL character".into(),
                ));
            }
            let value = form_decode(raw_value).ok_or_else(|| {
                ApiError::bad_parameter(&name, format!("{name} is not percent-encoded UTF-8"))
            })?;
            domain::text::no_nul(&name, &value)
                .map_err(|message| ApiError::bad_parameter(&name, message))?;
            if map.contains_key(&name) {
                return Err(ApiError::bad_parameter(
                    &name,
                    format!("parameter {name} is given twice"),
                ));
            }
            map.insert(name, value);
        }
        Ok(Self(map))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An optional text parameter checked by `rule` (a `domain` parser),
    /// whose message names the parameter.
    pub fn text<T>(
        &self,
        name: &str,
        rule: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.str(name)
            .map(|v| rule(v).map_err(|message| ApiError::bad_parameter(name, message)))
            .transpose()
    }

    /// An optional integer parameter checked by `rule` (a `domain`
    /// constructor, whose message says the valid range).
    pub fn int<T>(
        &self,
        name: &str,
        rule: impl FnOnce(i64) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.str(name)
            .map(|v| {
                let n = v.parse::<i64>().map_err(|_| {
                    ApiError::bad_parameter(name, format!("{name} must be an integer, got {v:?}"))
                })?;
                rule(n).map_err(|message| ApiError::bad_parameter(name, message))
            })
            .transpose()
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space), strict:
/// `None` when the bytes are not UTF-8, where `url`'s decoder would
/// silently substitute U+FFFD.
fn form_decode(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// A route for `GET` and `HEAD`: a `HEAD` is answered by the same handler,
/// and actix-http sends its status and headers (`Content-Length` of the
/// body it would have sent included) without the body.
pub fn get_or_head() -> actix_web::Route {
    web::route().guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
}

/// The answer for a path no route matches.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// The default service of a resource: 405, naming the methods it has.
pub fn method_not_allowed(allowed: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allowed)) })
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// A dependency's state in `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Up,
    /// Serving, but worse than normal (e.g. a lagging replica: reads go to
    /// the primary).
    Degraded,
    /// Reachable, but refusing the work (e.g. Redis refusing writes): the
    /// service waits rather than fails.
    Blocked,
    Down,
}

/// One dependency's state in `/readyz`. The reason is a fixed phrase; the
/// error itself goes to the logs and metrics, never to this body.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub status: Status,
    /// Whether the service can serve without it.
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl Check {
    pub fn up(required: bool) -> Self {
        Self {
            status: Status::Up,
            required,
            reason: None,
        }
    }

    pub fn down(required: bool, reason: &'static str) -> Self {
        Self {
            status: Status::Down,
            required,
            reason: Some(reason),
        }
    }

    pub fn with(status: Status, required: bool, reason: &'static str) -> Self {
        Self {
            status,
            required,
            reason: Some(reason),
        }
    }

    /// Up, or down for `reason`; the error is logged at debug level only
    /// (probes run every few seconds).
    pub fn from_result<E: std::fmt::Display>(
        required: bool,
        result: Result<(), E>,
        reason: &'static str,
    ) -> Self {
        match result {
            Ok(()) => Self::up(required),
            Err(e) => {
                tracing::debug!(error = %e, reason, "readiness check failed");
                Self::down(required, reason)
            }
        }
    }

    /// Like [`from_result`](Self::from_result), but when the failure was a
    /// TLS handshake (`tls_failure`, as the client recorded it), the reason
    /// is the phrase that names the key to fix, and the error is logged at
    /// warn: a wrong CA file does not cure itself like an outage does.
    pub fn from_ping<E: std::error::Error + 'static>(
        required: bool,
        result: Result<(), E>,
        backend: tls::Backend,
        tls_failure: Option<tls::Failure>,
        reason: &'static str,
    ) -> Self {
        match (result, tls_failure) {
            (Ok(()), _) => Self::up(required),
            (Err(e), Some(failure)) => {
                let reason = failure.reason(backend);
                tracing::warn!(error = %Chain(&e), reason, "readiness check failed");
                Self::down(required, reason)
            }
            (result, None) => Self::from_result(required, result, reason),
        }
    }

    /// Down for a TLS failure a client recorded (no error at hand: a
    /// reconnect loop has it), with the phrase that names the key to fix.
    pub fn tls(required: bool, backend: tls::Backend, failure: tls::Failure) -> Self {
        Self::down(required, failure.reason(backend))
    }

    fn serving(&self) -> bool {
        !self.required || matches!(self.status, Status::Up | Status::Degraded)
    }
}

/// `GET /readyz`: 200 while every required dependency is up (or degraded),
/// else 503.
pub fn readiness(checks: Vec<(&'static str, Check)>) -> HttpResponse {
    let ready = checks.iter().all(|(_, c)| c.serving());
    let checks: std::collections::BTreeMap<&str, Check> = checks.into_iter().collect();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Sends the request id (from the request span) back as `X-Request-Id`: a
/// client quoting it finds its request, and for a write, the change's
/// correlation id, in every service's logs.
pub async fn request_id_header(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .copied();
    // Handlers' errors are answers by now; a middleware inside must answer
    // its refusals too (not return `Err`), or they would miss the id.
    let mut res = next.call(req).await?;
    if let Some(value) = id.and_then(|id| header::HeaderValue::from_str(&id.to_string()).ok()) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// The route a request was served by, for metrics, when the router cannot
/// tell: a handler that dispatches several paths itself inserts it into the
/// request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLabel(pub &'static str);

/// Metric handles of one (method, route, status).
type Handles = Rc<(metrics::Counter, metrics::Histogram)>;
type HandleKey = (actix_web::http::Method, Cow<'static, str>, u16);

/// Middleware recording `http_requests_total{method,route,status}` and
/// `http_request_duration_seconds{method,route}`. `route` is the matched
/// pattern (`/products/{id}`, or a [`RouteLabel`]), never the raw path, to
/// keep cardinality fixed.
///
/// Handles are looked up once per (method, route, status) and kept: on the
/// hot path a request costs two atomic updates, not a registry lookup with
/// freshly allocated labels. Each HTTP worker builds its own middleware, so
/// the cache needs no lock.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestMetrics;

impl<S, B> Transform<S, ServiceRequest> for RequestMetrics
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestMetricsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestMetricsService {
            service: Rc::new(service),
            handles: Rc::new(RefCell::new(HashMap::new())),
        }))
    }
}

#[doc(hidden)]
pub struct RequestMetricsService<S> {
    service: Rc<S>,
    handles: Rc<RefCell<HashMap<HandleKey, Handles>>>,
}

fn handles_for(cache: &RefCell<HashMap<HandleKey, Handles>>, key: HandleKey) -> Handles {
    if let Some(h) = cache.borrow().get(&key) {
        return Rc::clone(h);
    }
    let (method, route, status) = key.clone();
    let h = Rc::new((
        metrics::counter!("http_requests_total", "method" => method.as_str().to_owned(), "route" => route.clone(), "status" => status.to_string()),
        metrics::histogram!("http_request_duration_seconds", "method" => method.as_str().to_owned(), "route" => route),
    ));
    cache.borrow_mut().insert(key, Rc::clone(&h));
    h
}

impl<S, B> Service<ServiceRequest> for RequestMetricsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let start = Instant::now();
        let method = req.method().clone();
        let service = Rc::clone(&self.service);
        let cache = Rc::clone(&self.handles);
        Box::pin(async move {
            let result = service.call(req).await;
            let (route, status): (Cow<'static, str>, u16) = match &result {
                Ok(res) => {
                    let labelled = res.request().extensions().get::<RouteLabel>().copied();
                    let route = match labelled {
                        Some(RouteLabel(route)) => Cow::Borrowed(route),
                        None => res
                            .request()
                            .match_pattern()
                            .map_or(Cow::Borrowed("unmatched"), Cow::Owned),
                    };
                    (route, res.status().as_u16())
                }
                Err(e) => (
                    Cow::Borrowed("unmatched"),
                    e.as_response_error().status_code().as_u16(),
                ),
            };
            let handles = handles_for(&cache, (method, route, status));
            handles.1.record(start.elapsed().as_secs_f64());
            handles.0.increment(1);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn query(q: &str) -> Result<Query, ApiError> {
        Query::parse(&TestRequest::with_uri(&format!("/p?{q}")).to_http_request())
    }

    fn field(e: &ApiError) -> Option<&str> {
        match e {
            ApiError::BadParameter { field, .. } => Some(field),
            ApiError::Validation { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    #[test]
    fn queries_decode_strictly() {
        let q = query("q=a+b%20c&empty=&bare").unwrap();
        assert_eq!(q.str("q"), Some("a b c"));
        assert_eq!(q.str("empty"), Some(""));
        assert_eq!(q.str("bare"), Some(""));
        for (bad, name) in [
            ("q=%00", "q"),
            ("q=%C3%86%00", "q"),
            ("q=%FF", "q"),
            ("limit=1&limit=2", "limit"),
        ] {
            let err = query(bad).unwrap_err();
            assert_eq!(field(&err), Some(name), "{bad}");
        }
        assert!(query("%00=1").is_err());
        assert!(query("%FF=1").is_err());
        let q = query("limit=7&after=x").unwrap();
        assert_eq!(q.int("limit", Ok::<i64, String>).unwrap(), Some(7));
        assert_eq!(
            field(&q.int("after", Ok::<i64, String>).unwrap_err()),
            Some("after")
        );
    }

    /// The serde_json in use still says "surrogate" the way
    /// `is_unpaired_surrogate` reads it, and the path names the member.
    #[test]
    fn unpaired_surrogates_name_their_member() {
        for (body, path) in [
            (r#"{"name": "\ud800"}"#, Some("name")),
            (r#"{"name": "a\ud800b"}"#, Some("name")),
            (r#"{"name": "\udc00"}"#, Some("name")),
            (
                r#"{"products": [{}, {"x": ["\ud800\u0041"]}]}"#,
                Some("products[1].x[0]"),
            ),
            (r#""\ud800""#, None),
        ] {
            let e = serde_json::from_slice::<serde_json::Value>(body.as_bytes()).unwrap_err();
            assert!(is_unpaired_surrogate(&e), "{body}: {e}");
            let err = refused_json(body.as_bytes(), &e);
            assert!(matches!(err, ApiError::Validation { .. }), "{body}");
            assert_eq!(field(&err), path, "{body}");
        }
        let e = serde_json::from_slice::<serde_json::Value>(b"{\"a\": }").unwrap_err();
        assert!(matches!(
            refused_json(b"{\"a\": }", &e),
            ApiError::BadRequest(_)
        ));
    }
}
