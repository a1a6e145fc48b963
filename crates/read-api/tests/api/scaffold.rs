//! What the service scaffold gives every service, checked on read-api:
//! supervised background tasks, and metrics that belong to one instance.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{WAIT, product, spawn, start_read};

#[tokio::test]
async fn a_background_task_that_dies_turns_readiness_red_and_stops_the_service() {
    let app = spawn().await;
    let reader = start_read(app.env.settings.clone()).await;
    let readyz = reader.url("/readyz");
    let ready: Value = app
        .client
        .get(&readyz)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["trending"]["status"], "up", "{ready}");

    assert!(reader.kill_task("trending"));
    let client = app.client.clone();
    let red: Value = test_support::eventually("readiness to turn red", WAIT, || {
        let (client, readyz) = (client.clone(), readyz.clone());
        async move {
            let res = client.get(readyz).send().await.ok()?;
            (res.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())?;
            res.json().await.ok()
        }
    })
    .await;
    assert_eq!(red["status"], "not_ready", "{red}");
    assert_eq!(red["checks"]["trending"]["status"], "down", "{red}");
    assert_eq!(red["checks"]["trending"]["required"], true, "{red}");

    // The process stops with an error naming the task: the binary turns it
    // into a non-zero exit status, and the orchestrator restarts it.
    let exit = tokio::time::timeout(WAIT, reader.exit())
        .await
        .expect("the service stops by itself");
    let err = exit.expect_err("a dead task is an error");
    assert!(err.to_string().contains("trending"), "{err:#}");
}

#[tokio::test]
async fn each_instance_reports_only_its_own_metrics() {
    let app = spawn().await;
    let other = start_read(app.env.settings.clone()).await;
    let id = app.admin.create(&product("OWN-1")).await["id"]
        .as_i64()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(app.product(id).await.0, StatusCode::OK);
    }
    let route = "route=\"/products/{id}\",status=\"200\"";
    let mine = app.get("/metrics").await.text().await.unwrap();
    assert!(mine.contains(route), "{mine}");
    let theirs = app
        .client
        .get(other.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !theirs.contains(route),
        "another instance in the same process counted none of them:\n{theirs}"
    );
}
