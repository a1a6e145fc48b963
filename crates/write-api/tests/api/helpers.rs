//! `spawn_app` and a client with one method per endpoint.

use std::sync::Arc;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use service::Settings;
use test_support::{ADMIN_TOKEN, Running, TestEnv};

pub use test_support::product;

pub struct TestApp {
    pub env: Arc<TestEnv>,
    pub base: String,
    pub client: reqwest::Client,
    service: Running<actix_web::web::Data<write_api::State>>,
}

/// Spawns write-api on a fresh database and namespace.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns write-api after `tweak` adjusted its settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let env = Arc::new(TestEnv::new().await);
    spawn_on(env, tweak).await
}

/// Spawns another write-api on `env` (same database and namespace).
pub async fn spawn_on(env: Arc<TestEnv>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = env.settings.clone();
    tweak(&mut settings);
    let service = test_support::run(write_api::build, settings).await;
    TestApp {
        env,
        base: service.base.clone(),
        client: reqwest::Client::new(),
        service,
    }
}

impl TestApp {
    /// Stops the service gracefully and waits until it has (relay flushed).
    pub async fn stop(self) {
        self.service.stop().await;
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub async fn post_product(&self, body: &Value) -> Response {
        self.request(Method::POST, "/products")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a product and returns it (asserting 201).
    pub async fn create(&self, sku: &str) -> Value {
        let res = self.post_product(&product(sku)).await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
        res.json().await.unwrap()
    }

    pub async fn patch(&self, id: i64, body: &Value, if_match: Option<&str>) -> Response {
        let mut req = self
            .request(Method::PATCH, &format!("/products/{id}"))
            .json(body);
        if let Some(v) = if_match {
            req = req.header("If-Match", v);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, id: i64) -> Response {
        self.request(Method::GET, &format!("/products/{id}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, id: i64) -> Response {
        self.request(Method::DELETE, &format!("/products/{id}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn put_stock(&self, id: i64, body: &Value) -> Response {
        self.request(Method::PUT, &format!("/products/{id}/stock"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// (products, outbox rows) in the database right now.
    pub async fn counts(&self) -> (usize, i64) {
        let db = self.env.db();
        let products = db.list(None, None, 10_000).await.unwrap().items.len();
        let (outbox, _) = db.outbox_backlog().await.unwrap();
        (products, outbox)
    }
}

/// Asserts an error response's status, code and (optionally) field.
pub async fn assert_error(res: Response, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(res.status(), status);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "error bodies are JSON"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    match field {
        Some(f) => assert_eq!(body["error"]["field"], f, "{body}"),
        None => assert!(body["error"].get("field").is_none(), "{body}"),
    }
}
