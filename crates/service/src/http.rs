//! HTTP plumbing shared by read-api and write-api: the contract's error
//! envelope, bounded JSON bodies, query parameters with clear errors,
//! per-route request metrics, probes and graceful serving.

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::HashMap,
    future::{Future, Ready, ready},
    pin::Pin,
    rc::Rc,
    str::FromStr,
    time::Instant,
};

use actix_web::{
    HttpMessage, HttpRequest, HttpResponse, ResponseError,
    body::MessageBody,
    dev::{Server, Service, ServiceRequest, ServiceResponse, Transform},
    http::{StatusCode, header},
    web,
};
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every error either API answers with; the variants are the contract's
/// error codes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
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
    /// A backing store is down. The payload names it for the client; details
    /// go to the log only.
    #[error("{0} is unavailable; retry shortly")]
    Unavailable(&'static str),
    /// A bug. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl From<domain::ValidationError> for ApiError {
    fn from(e: domain::ValidationError) -> Self {
        Self::Validation {
            field: e.field,
            message: e.message,
        }
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

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Validation { .. } => "validation_failed",
            Self::Overloaded => "overloaded",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Overloaded | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(detail) = self {
            // Logged here, once, at the boundary; the client sees no detail.
            tracing::error!(error.detail = %detail, "internal error");
        }
        let field = match self {
            Self::Validation { field, .. } => field.as_deref(),
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
            Self::Overloaded | Self::Unavailable(_) => {
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
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
}

/// Query parameters, parsed once, with typed getters whose errors name the
/// parameter. Unknown parameters are ignored (cache busters are common).
#[derive(Debug)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(req: &HttpRequest) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(ApiError::BadRequest(format!(
                    "parameter {k} is given twice"
                )));
            }
        }
        Ok(Self(map))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An optional parameter parsed with `FromStr`; `expected` describes the
    /// valid values for the error message.
    pub fn opt<T: FromStr>(&self, name: &str, expected: &str) -> Result<Option<T>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| ApiError::BadRequest(format!("{name} must be {expected}")))
            })
            .transpose()
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int_in(&self, name: &str, min: i64, max: i64, default: i64) -> Result<i64, ApiError> {
        let expected = format!("an integer between {min} and {max}");
        match self.opt::<i64>(name, &expected)? {
            None => Ok(default),
            Some(v) if (min..=max).contains(&v) => Ok(v),
            Some(_) => Err(ApiError::BadRequest(format!("{name} must be {expected}"))),
        }
    }
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

/// One dependency's state in `/readyz`.
#[derive(Debug, Serialize)]
pub struct Check {
    pub status: &'static str,
    /// Whether the service can serve without it.
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    pub fn from_result<E: std::fmt::Display>(required: bool, r: Result<(), E>) -> Self {
        match r {
            Ok(()) => Self {
                status: "up",
                required,
                error: None,
            },
            Err(e) => Self {
                status: "down",
                required,
                error: Some(e.to_string()),
            },
        }
    }
}

/// `GET /readyz`: 200 while every required dependency is up, else 503.
pub fn readiness(checks: Vec<(&'static str, Check)>) -> HttpResponse {
    let ready = checks.iter().all(|(_, c)| !c.required || c.status == "up");
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

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::metrics().render())
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

/// Runs `server` until it stops or `shutdown` is cancelled, then cancels
/// `shutdown` (for the background tasks) and waits for `tasks` to finish
/// their drain: the shape of every service's `run_until_stopped`.
pub async fn serve_then_join(
    server: Server,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> std::io::Result<()> {
    let result = serve_until(server, shutdown.clone()).await;
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    result
}

/// Runs `server` until it stops or `shutdown` is cancelled, then stops it
/// gracefully: in-flight requests finish, new connections are refused.
pub async fn serve_until(server: Server, shutdown: CancellationToken) -> std::io::Result<()> {
    let handle = server.handle();
    let stopper = tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    let result = server.await;
    stopper.abort();
    result
}
