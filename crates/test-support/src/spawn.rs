//! The one way tests run a service: built by its own `build` function on the
//! test's settings, served in-process on port 0, stopped when dropped.

use std::future::Future;

use service::{Application, Settings};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

/// A service running in-process. Dropping it stops it (without waiting);
/// [`Running::stop`] stops it and waits for its drain.
pub struct Running<S> {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The service's shared state, for tests that drive it directly.
    pub state: S,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    aborts: Vec<(&'static str, AbortHandle)>,
}

/// Builds a service with `build` (e.g. `read_api::build`) and runs it.
pub async fn run<S, F, Fut>(build: F, settings: Settings) -> Running<S>
where
    S: Clone + Send + 'static,
    F: FnOnce(Settings, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<Application<S>>>,
{
    let app = build(settings, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("the service failed to build: {e:#}"));
    Running::start(app)
}

impl<S: Clone + Send + 'static> Running<S> {
    /// Runs an already built service.
    pub fn start(app: Application<S>) -> Self {
        let base = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let state = app.state().clone();
        let aborts = app.task_aborts();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            base,
            state,
            shutdown,
            task: Some(task),
            aborts,
        }
    }
}

impl<S> Running<S> {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops gracefully, waits until it has, and asserts it stopped cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("the service task panicked")
                .unwrap_or_else(|e| panic!("the service stopped with an error: {e:#}"));
        }
    }

    /// Waits until the service stops by itself, and returns how.
    pub async fn exit(mut self) -> anyhow::Result<()> {
        let task = self.task.take().expect("the service is running");
        task.await.expect("the service task panicked")
    }

    /// Aborts a background task as if it had died; false if there is none by
    /// that name.
    pub fn kill_task(&self, name: &str) -> bool {
        self.aborts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| h.abort())
            .is_some()
    }
}

impl<S> Drop for Running<S> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
