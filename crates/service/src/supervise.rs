//! Supervised background tasks: the relay, the consumers, the read-api
//! subscriber, the auditor, the trending roll-up.
//!
//! Each of them is a loop that already retries its own I/O with backoff, so
//! it is meant to run until shutdown. One that ends sooner (returns, fails or
//! panics) is a bug or a state the loop cannot recover from: restarting it
//! in-process could only repeat it. So its exit is logged with its cause,
//! `/readyz` turns red at once (load balancers and dashboards see it), and
//! the whole process stops with a non-zero status so that the orchestrator
//! restarts it cleanly (zero2prod's `select!` and `report_exit`).
//!
//! The tasks of one service run on a runtime of their own, on one dedicated
//! thread: their metrics land in the service's own recorder (see
//! [`crate::telemetry::Metrics`]), and a task that hogs its thread cannot
//! stall the HTTP workers.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::{
    runtime::Handle,
    sync::oneshot,
    task::{AbortHandle, Id, JoinSet},
};

use crate::telemetry::Metrics;

/// What a supervised task is doing, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    /// Ended before shutdown; the cause is logged, not published.
    Failed,
}

/// The state of every supervised task, shared with the readiness probe.
#[derive(Debug, Clone, Default)]
pub struct TaskHealth(Arc<Mutex<BTreeMap<&'static str, TaskState>>>);

impl TaskHealth {
    /// Every task with its state, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, TaskState)> {
        self.0.lock().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn set(&self, name: &'static str, state: TaskState) {
        self.0.lock().insert(name, state);
    }
}

/// How a supervised task ended before shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExit {
    pub task: &'static str,
    /// Why: its error chain, its panic message, or "returned".
    pub cause: String,
}

impl std::fmt::Display for TaskExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "background task {} stopped: {}", self.task, self.cause)
    }
}

impl std::error::Error for TaskExit {}

/// A service's background tasks, on their own runtime thread.
pub struct Supervisor {
    set: JoinSet<anyhow::Result<()>>,
    names: BTreeMap<Id, &'static str>,
    aborts: BTreeMap<&'static str, AbortHandle>,
    health: TaskHealth,
    runtime: Background,
}

impl Supervisor {
    /// Starts the background runtime thread, named after the service.
    pub fn new(service: &str, metrics: &Metrics) -> std::io::Result<Self> {
        Ok(Self {
            set: JoinSet::new(),
            names: BTreeMap::new(),
            aborts: BTreeMap::new(),
            health: TaskHealth::default(),
            runtime: Background::start(service, metrics.clone())?,
        })
    }

    pub fn health(&self) -> TaskHealth {
        self.health.clone()
    }

    /// Runs `task` under supervision. It should run until the token the
    /// service handed it is cancelled.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let abort = self.set.spawn_on(task, &self.runtime.handle);
        self.names.insert(abort.id(), name);
        self.aborts.insert(name, abort);
        self.health.set(name, TaskState::Running);
    }

    /// Aborts a task as if it had died (tests of the supervision itself).
    pub fn abort(&self, name: &str) -> bool {
        self.aborts.get(name).map(AbortHandle::abort).is_some()
    }

    /// Every task's abort handle, by name.
    pub fn abort_handles(&self) -> Vec<(&'static str, AbortHandle)> {
        self.aborts.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Waits for the first task to end and reports how; pending forever when
    /// there are no tasks. Call it only before shutdown: any end is a failure.
    pub async fn first_exit(&mut self) -> TaskExit {
        let Some(joined) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, cause) = match joined {
            Ok((id, Ok(()))) => (id, "returned before shutdown".to_owned()),
            Ok((id, Err(e))) => (id, format!("{e:#}")),
            Err(e) if e.is_panic() => {
                let id = e.id();
                (id, format!("panicked: {}", panic_message(e.into_panic())))
            }
            Err(e) => (e.id(), "aborted".to_owned()),
        };
        let task = self.names.get(&id).copied().unwrap_or("unknown");
        self.health.set(task, TaskState::Failed);
        TaskExit { task, cause }
    }

    /// After the tasks were told to stop: waits up to `budget` for them to
    /// drain, aborts what is left, and stops the runtime thread. A task that
    /// failed while draining is logged.
    pub async fn join(mut self, budget: Duration) {
        let drained = tokio::time::timeout(budget, async {
            while let Some(joined) = self.set.join_next_with_id().await {
                match joined {
                    Ok((_, Ok(()))) => {}
                    Ok((id, Err(e))) => {
                        let task = self.names.get(&id).copied().unwrap_or("unknown");
                        tracing::error!(
                            task,
                            error = format!("{e:#}"),
                            "background task failed while stopping"
                        );
                    }
                    Err(e) => {
                        let task = self.names.get(&e.id()).copied().unwrap_or("unknown");
                        tracing::error!(task, error = %e, "background task failed while stopping");
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                ?budget,
                "background tasks did not drain in time; aborting them"
            );
            self.set.shutdown().await;
        }
        self.runtime.stop();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// One thread running a current-thread runtime with the service's metrics
/// recorder as its default, until stopped.
struct Background {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(service: &str, metrics: Metrics) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("{service}-tasks"))
            .spawn(move || {
                metrics.install_on_this_thread();
                // Drives every task spawned on `handle` until told to stop.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only drops its runtime now: joining is quick.
            let _ = thread.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // An application dropped without running (a test that only built
        // it) must not leave its thread behind. Not joined: the drop may
        // happen inside an async context.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor() -> Supervisor {
        Supervisor::new("test", &Metrics::new()).unwrap()
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_reported_and_marked_failed() {
        let mut sup = supervisor();
        sup.spawn("forever", std::future::pending());
        sup.spawn("quitter", async { Ok(()) });
        let exit = sup.first_exit().await;
        assert_eq!(exit.task, "quitter");
        assert_eq!(exit.cause, "returned before shutdown");
        let health = sup.health().snapshot();
        assert_eq!(
            health,
            [
                ("forever", TaskState::Running),
                ("quitter", TaskState::Failed)
            ]
        );
        sup.join(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn errors_and_panics_carry_their_cause() {
        let mut sup = supervisor();
        sup.spawn("failing", async { Err(anyhow::anyhow!("lost the broker")) });
        assert_eq!(sup.first_exit().await.cause, "lost the broker");
        sup.spawn("panicking", async { panic!("invariant broken") });
        assert_eq!(sup.first_exit().await.cause, "panicked: invariant broken");
        sup.spawn("aborted", std::future::pending());
        assert!(sup.abort("aborted"));
        assert_eq!(sup.first_exit().await.task, "aborted");
        sup.join(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn join_stops_tasks_that_outlive_the_budget() {
        let mut sup = supervisor();
        sup.spawn("stubborn", std::future::pending());
        let started = std::time::Instant::now();
        sup.join(Duration::from_millis(20)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
