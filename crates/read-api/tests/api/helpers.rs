//! Spawning read-api (and a write-api to change data through) per test.

use std::{sync::Arc, time::Duration};

use actix_web::web::Data;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use service::Settings;
use test_support::{Admin, Running, TestEnv};

pub const WAIT: Duration = Duration::from_secs(10);

pub type Reader = Running<Data<read_api::AppState>>;

pub struct TestApp {
    pub env: Arc<TestEnv>,
    pub read: Reader,
    /// Kept for its lifetime: write-api stops when the app is dropped.
    _write: Running<Data<write_api::State>>,
    pub client: reqwest::Client,
    /// Writes through the app's write-api.
    pub admin: Admin,
}

pub async fn start_read(settings: Settings) -> Reader {
    test_support::run(read_api::build, settings).await
}

/// read-api (after `tweak`) and a plain write-api on one fresh environment.
/// Waits until read-api's event subscription is up (when L1 is on), so a
/// test's first write is seen.
pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let env = Arc::new(TestEnv::new().await);
    let write = test_support::run(write_api::build, env.settings.clone()).await;
    let mut settings = env.settings.clone();
    tweak(&mut settings);
    // Wait for the subscription only where it can come up.
    let subscribes = settings.cache.enabled
        && settings.cache.l1_capacity > 0
        && settings.amqp.url == env.settings.amqp.url;
    let read = start_read(settings).await;
    let client = reqwest::Client::new();
    let app = TestApp {
        env,
        admin: Admin::new(client.clone(), &write.base),
        read,
        _write: write,
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
    /// The read-api's shared state.
    pub fn state(&self) -> &Data<read_api::AppState> {
        &self.read.state
    }

    pub async fn wait_subscribed(&self) {
        let state = self.read.state.clone();
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

    /// Waits until this read-api has the event of `id` at `version` (its
    /// floor says so). Without an invalidator here, pages filled before an
    /// event they do not show would never be bumped: tests that expect page
    /// hits let their writes' events land first.
    pub async fn until_seen(&self, id: i64, version: i64) {
        let pid = domain::ProductId::new(id).unwrap();
        let state = self.read.state.clone();
        test_support::eventually(&format!("the event of {id} at {version}"), WAIT, || {
            let state = state.clone();
            async move { (state.read.l1.floor(pid).get() >= version).then_some(()) }
        })
        .await;
    }

    /// An L2 handle on this test's namespace, to inspect or plant entries.
    pub fn l2(&self) -> cache::L2 {
        self.env.l2()
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
