//! Spawning read-api (and a write-api to change data through) per test.

use std::{sync::Arc, time::Duration};

use reqwest::{Response, StatusCode};
use serde_json::Value;
use service::Settings;
use test_support::{Admin, TestEnv};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

/// A running service, stopped when dropped.
pub struct Running {
    pub base: String,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct TestApp {
    pub env: Arc<TestEnv>,
    pub read: Running,
    /// Kept for its lifetime: write-api stops when the app is dropped.
    _write: Running,
    pub state: actix_web::web::Data<read_api::AppState>,
    pub client: reqwest::Client,
    /// Writes through the app's write-api.
    pub admin: Admin,
}

pub async fn start_read(settings: Settings) -> (Running, actix_web::web::Data<read_api::AppState>) {
    let app = read_api::Application::build(settings)
        .await
        .expect("build read-api");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    (Running { base, shutdown }, state)
}

pub async fn start_write(settings: Settings) -> Running {
    let app = write_api::Application::build(settings)
        .await
        .expect("build write-api");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    Running { base, shutdown }
}

/// read-api (after `tweak`) and a plain write-api on one fresh environment.
/// Waits until read-api's event subscription is up (when L1 is on), so a
/// test's first write is seen.
pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let env = Arc::new(TestEnv::new().await);
    let write = start_write(env.settings.clone()).await;
    let mut settings = env.settings.clone();
    tweak(&mut settings);
    // Wait for the subscription only where it can come up.
    let subscribes = settings.cache.enabled
        && settings.cache.l1_capacity > 0
        && settings.amqp.url == env.settings.amqp.url;
    let (read, state) = start_read(settings).await;
    let client = reqwest::Client::new();
    let app = TestApp {
        env,
        admin: Admin::new(client.clone(), &write.base),
        read,
        _write: write,
        state,
        client,
    };
    if subscribes {
        app.wait_subscribed().await;
    }
    app
}

pub async fn spawn() -> TestApp {
    spawn_with(|_| {}).await
}

pub use test_support::product;

impl TestApp {
    pub async fn wait_subscribed(&self) {
        let state = self.state.clone();
        test_support::eventually("the L1 event subscription", WAIT, || {
            let s = state.clone();
            async move {
                s.subscribed
                    .load(std::sync::atomic::Ordering::Acquire)
                    .then_some(())
            }
        })
        .await;
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.read.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_with(&self, path: &str, header: (&str, &str)) -> Response {
        self.client
            .get(format!("{}{path}", self.read.base))
            .header(header.0, header.1)
            .send()
            .await
            .unwrap()
    }

    /// GETs a product, returning (status, X-Cache, body).
    pub async fn product(&self, id: i64) -> (StatusCode, String, Value) {
        read_product(&self.client, &self.read.base, id).await
    }

    /// Polls until read-api serves `id` at `version` (after the event).
    pub async fn until_version(&self, id: i64, version: i64) {
        let (client, base) = (self.client.clone(), self.read.base.clone());
        test_support::eventually(&format!("product {id} at version {version}"), WAIT, || {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let (_, _, body) = read_product(&client, &base, id).await;
                (body["version"] == version).then_some(())
            }
        })
        .await;
    }

    /// An L2 handle on this test's namespace, to inspect or plant entries.
    pub fn l2(&self) -> cache::L2 {
        cache::L2::new(&cache::L2Config {
            url: test_support::redis_url(),
            cluster: false,
            namespace: self.env.namespace.clone(),
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            breaker: None,
        })
        .unwrap()
    }
}

pub async fn read_product(
    client: &reqwest::Client,
    base: &str,
    id: i64,
) -> (StatusCode, String, Value) {
    let res = client
        .get(format!("{base}/products/{id}"))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let tier = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, tier, body)
}

/// Asserts a JSON error with this status and code.
pub async fn assert_error(res: Response, status: StatusCode, code: &str) {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string());
}
