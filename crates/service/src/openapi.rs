//! What both OpenAPI documents share, added to each service's own paths by
//! [`complete`]: the scaffold's routes, `HEAD` beside every `GET`,
//! `X-Request-Id` on every answer, headers marked required where every such
//! answer carries them, and the `405` any path gives another method.
//!
//! The services' own paths come from `#[utoipa::path]` and their schemas
//! from `domain::schema`; this module only adds what the scaffold does to
//! every route, so it is written once.

use utoipa::{
    PartialSchema,
    openapi::{
        ContentBuilder, HttpMethod, Object, ObjectBuilder, OpenApi, PathItem, Ref, RefOr, Response,
        ResponseBuilder, Schema,
        header::{Header, HeaderBuilder},
        path::{Operation, OperationBuilder, Parameter},
        schema::{SchemaType, Type},
    },
};

use crate::http::ErrorResponse;

/// Headers a response documents but does not always carry.
const OPTIONAL_HEADERS: &[&str] = &["X-Degraded"];

/// The request id header, on every answer of every route.
pub const REQUEST_ID: &str = "X-Request-Id";

/// Adds the scaffold's routes and what the scaffold does to every answer.
pub fn complete(mut doc: OpenApi) -> OpenApi {
    for (path, item) in scaffold_paths() {
        doc.paths.paths.insert(path.to_owned(), item);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ErrorResponse".into(), ErrorResponse::schema());
    components
        .responses
        .insert("MethodNotAllowed".into(), method_not_allowed().into());
    for item in doc.paths.paths.values_mut() {
        if let Some(get) = &item.get {
            item.head = Some(head_twin(get));
        }
        for operation in operations(item) {
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter {
                    absent_not_null(parameter);
                }
            }
            for (status, response) in &mut operation.responses.responses {
                if let RefOr::T(response) = response {
                    add_error_headers(status, response);
                    finish_response(response);
                }
            }
        }
    }
    doc
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.head,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// utoipa documents an `Option<T>` parameter as "T or null"; an optional
/// parameter is absent, never null (a header `If-Match: null` is refused),
/// so its schema is T's alone.
fn absent_not_null(parameter: &mut Parameter) {
    let Some(RefOr::T(Schema::OneOf(one_of))) = &parameter.schema else {
        return;
    };
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    if let [a, b] = one_of.items.as_slice()
        && (is_null(a) || is_null(b))
    {
        let other = if is_null(a) { b } else { a };
        parameter.schema = Some(other.clone());
    }
}

/// The headers `ApiError` adds to every answer of these statuses.
fn add_error_headers(status: &str, response: &mut Response) {
    let (name, description) = match status {
        "401" => ("WWW-Authenticate", "Bearer"),
        "503" => ("Retry-After", "Seconds to wait before retrying"),
        _ => return,
    };
    response.headers.insert(
        name.into(),
        RefOr::T(HeaderBuilder::new().description(Some(description)).build()),
    );
}

/// The exact form of a header both services send, by name: a client
/// generator, or a fuzzer checking answers, gets more than "a string".
fn header_schema(name: &str) -> Object {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let one_of = |values: &[&str]| string().enum_values(Some(values.iter().copied()));
    match name {
        "ETag" => string().pattern(Some(r#"^"[0-9]+"$"#)),
        "X-Cache" => one_of(&["HIT-L1", "HIT-L2", "MISS"]),
        "Cache-Control" => one_of(&["no-cache", "no-store"]),
        "Retry-After" => string().pattern(Some("^[0-9]+$")),
        "Location" => string().pattern(Some("^/products/[1-9][0-9]*$")),
        "WWW-Authenticate" => one_of(&["Bearer"]),
        "X-Degraded" => one_of(&["trending"]),
        REQUEST_ID => string().min_length(Some(1)),
        _ => string(),
    }
    .build()
}

/// Every answer carries `X-Request-Id`; documented headers are required
/// unless listed as optional. utoipa's `Header` has no `required` member,
/// so it goes in through the extensions map, which is serialized flat.
fn finish_response(response: &mut Response) {
    response.headers.insert(
        REQUEST_ID.into(),
        RefOr::T(
            HeaderBuilder::new()
                .description(Some(
                    "The request's id in this service's logs; for a write, also the change's \
                 correlation id.",
                ))
                .build(),
        ),
    );
    for (name, header) in &mut response.headers {
        if let RefOr::T(header) = header {
            header.schema = Some(header_schema(name).into());
            if !OPTIONAL_HEADERS.contains(&name.as_str()) {
                required(header);
            }
        }
    }
}

fn required(header: &mut Header) {
    header
        .extensions
        .get_or_insert_with(Default::default)
        .insert("required".into(), true.into());
}

/// `HEAD`: the `GET`'s parameters, statuses and headers, no body.
fn head_twin(get: &Operation) -> Operation {
    let mut head = get.clone();
    head.operation_id = get.operation_id.as_ref().map(|id| format!("{id}Head"));
    head.summary = get.summary.as_ref().map(|s| format!("{s} (headers only)"));
    head.description = Some(
        "As GET, with the same status and headers, and no body (`Content-Length` is the GET \
         body's)."
            .into(),
    );
    for response in head.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response.content.clear();
            response.links.clear();
        }
    }
    head
}

/// The `405` of every path, for methods it does not have.
fn method_not_allowed() -> Response {
    let mut response = ResponseBuilder::new()
        .description("The path exists, without this method; `Allow` lists its methods.")
        .header(
            "Allow",
            HeaderBuilder::new()
                .description(Some("The path's methods, e.g. `GET, HEAD`."))
                .build(),
        )
        .content("application/json", error_content())
        .build();
    finish_response(&mut response);
    response
}

fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorResponse")))
        .build()
}

fn json(description: &str, schema: impl Into<RefOr<Schema>>) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

fn string_enum(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// `/readyz`'s body.
fn readiness() -> Object {
    let check = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "status",
            string_enum(&["up", "degraded", "blocked", "down"]),
        )
        .required("status")
        .property("required", ObjectBuilder::new().schema_type(Type::Boolean))
        .required("required")
        .property(
            "reason",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("A fixed phrase; the error itself is logged.")),
        );
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("status", string_enum(&["ready", "not_ready"]))
        .required("status")
        .property(
            "checks",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(check)),
        )
        .required("checks")
        .build()
}

fn operation(id: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .tag("operations")
        .summary(Some(summary))
}

/// `/healthz`, `/readyz`, `/metrics` and `/openapi.json`, as the scaffold
/// serves them (no authentication).
fn scaffold_paths() -> Vec<(&'static str, PathItem)> {
    let healthz = operation("healthz", "The process is up").response(
        "200",
        json(
            "Up",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("status", string_enum(&["ok"]))
                .required("status"),
        ),
    );
    let readyz = operation("readyz", "Whether the service can serve, per dependency")
        .response("200", json("Every required dependency is up", readiness()))
        .response("503", json("A required dependency is down", readiness()));
    let metrics = operation("metrics", "Prometheus metrics of this instance").response(
        "200",
        ResponseBuilder::new()
            .description("Prometheus text format 0.0.4")
            .content(
                "text/plain",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build(),
            )
            .build(),
    );
    let openapi = operation("openapi", "This document").response(
        "200",
        json(
            "The OpenAPI document",
            ObjectBuilder::new().schema_type(Type::Object),
        ),
    );
    [
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/metrics", metrics),
        ("/openapi.json", openapi),
    ]
    .into_iter()
    .map(|(path, op)| (path, PathItem::new(HttpMethod::Get, op)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_routes_heads_and_request_ids() {
        let doc = complete(OpenApi::default());
        let json = serde_json::to_value(&doc).unwrap();
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            let item = &json["paths"][path];
            assert!(
                item["get"].is_object() && item["head"].is_object(),
                "{path}"
            );
            assert_eq!(
                item["head"]["responses"]["200"]["headers"][REQUEST_ID]["required"], true,
                "{path}"
            );
            assert!(item["head"]["responses"]["200"].get("content").is_none());
        }
        let allow = &json["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"];
        assert_eq!(allow["required"], true);
    }
}
