//! Input Postgres would refuse never reaches it: each bad parameter is a 400
//! naming it, answered before any query (the query counter does not move).

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, spawn};

/// Every query this instance has sent to Postgres so far.
async fn db_queries(app: &TestApp) -> f64 {
    let metrics = test_support::Metrics::of(&app.read.base).await.unwrap();
    metrics.sum("catalog_db_queries_total")
}

#[tokio::test]
async fn bad_parameters_are_refused_before_any_query_naming_them() {
    let app = spawn().await;
    let cases = [
        // NUL, which Postgres refuses in text (SQLSTATE 22021): the 503.
        ("/products/search?q=%C3%86%00", "q"),
        ("/products/search?q=%00", "q"),
        ("/products?category=laptops%00", "category"),
        ("/products?after=1%00", "after"),
        ("/products?limit=5%00", "limit"),
        ("/products/1?min_version=1%00", "min_version"),
        ("/products?utm_source=%00", "utm_source"),
        // Not UTF-8: refused rather than silently replaced.
        ("/products/search?q=%FF", "q"),
        ("/products?category=%C3", "category"),
        // Out of range: what the old documents allowed.
        ("/products/-9223372036854775807", "id"),
        ("/products/%00", "id"),
        ("/products/1%00/availability", "id"),
        ("/products?limit=9223372036854775806", "limit"),
        ("/products?after=-9223372036854775808", "after"),
        (
            "/products/1?min_version=99999999999999999999",
            "min_version",
        ),
        ("/products/featured?limit=101", "limit"),
        ("/products/trending?limit=0", "limit"),
        // Empty or blank text.
        ("/products/search?q=", "q"),
        ("/products/search?q=%E3%80%80", "q"),
        ("/products/search?limit=5", "q"),
    ];
    let before = db_queries(&app).await;
    for (path, field) in cases {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{path}: {body}"
        );
    }
    assert_eq!(
        db_queries(&app).await,
        before,
        "no refused request reached Postgres"
    );
    // The same routes answer good parameters (and do query).
    for path in [
        "/products/search?q=%C3%86",
        "/products?category=laptops&after=0&limit=100",
    ] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}
