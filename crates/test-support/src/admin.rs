//! write-api as the read-side and end-to-end tests use it: a client that
//! carries the admin token and asserts each write succeeded.

use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::ADMIN_TOKEN;

/// A product body that passes every validation rule, with `sku` as given.
pub fn product(sku: &str) -> Value {
    json!({
        "sku": sku, "name": format!("Ultrabook {sku}"), "description": "Thin and light laptop",
        "category": "laptops", "price_cents": 99900, "currency": "USD",
        "featured": false, "attributes": {"ram_gb": 16}, "stock": 3
    })
}

/// write-api at `base`, as an administrator.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
    base: String,
}

impl Admin {
    pub fn new(client: Client, base: impl Into<String>) -> Self {
        Self {
            client,
            base: base.into(),
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
    }

    async fn expect(request: RequestBuilder, status: StatusCode) -> reqwest::Response {
        let res = request.send().await.expect("write-api answers");
        if res.status() != status {
            let got = res.status();
            panic!(
                "expected {status}, got {got}: {}",
                res.text().await.unwrap_or_default()
            );
        }
        res
    }

    /// POST /products; returns the created product.
    pub async fn create(&self, body: &Value) -> Value {
        let req = self.request(Method::POST, "/products").json(body);
        Self::expect(req, StatusCode::CREATED)
            .await
            .json()
            .await
            .unwrap()
    }

    /// PATCH /products/{id}; returns the updated product.
    pub async fn patch(&self, id: i64, body: &Value) -> Value {
        let req = self
            .request(Method::PATCH, &format!("/products/{id}"))
            .json(body);
        Self::expect(req, StatusCode::OK)
            .await
            .json()
            .await
            .unwrap()
    }

    /// POST /products/bulk; returns the ids, in order.
    pub async fn create_bulk(&self, products: &[Value]) -> Vec<i64> {
        let req = self
            .request(Method::POST, "/products/bulk")
            .json(&json!({ "products": products }));
        let body: Value = Self::expect(req, StatusCode::CREATED)
            .await
            .json()
            .await
            .unwrap();
        body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    }

    /// PATCH /products/bulk with `{"items": items}`; returns the answer's
    /// items (`{"id", "version"}` each).
    pub async fn patch_bulk(&self, items: &[Value]) -> Vec<Value> {
        let req = self
            .request(Method::PATCH, "/products/bulk")
            .json(&json!({ "items": items }));
        let body: Value = Self::expect(req, StatusCode::OK)
            .await
            .json()
            .await
            .unwrap();
        body["items"].as_array().unwrap().clone()
    }

    /// DELETE /products/{id}.
    pub async fn delete(&self, id: i64) {
        let req = self.request(Method::DELETE, &format!("/products/{id}"));
        Self::expect(req, StatusCode::NO_CONTENT).await;
    }

    /// PUT /products/{id}/stock.
    pub async fn put_stock(&self, id: i64, stock: i64) {
        let req = self
            .request(Method::PUT, &format!("/products/{id}/stock"))
            .json(&json!({ "stock": stock }));
        Self::expect(req, StatusCode::OK).await;
    }
}
