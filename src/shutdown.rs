//! Task spawning and shutdown: every long-lived task is spawned through
//! [`Tasks`], so a shutdown can cancel them all and wait for them to end.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The broker's tasks and the token that tells them to stop.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// A new, running set of tasks.
    pub fn new() -> Self {
        Tasks::default()
    }

    /// Spawns a tracked task.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Counts as one running task until dropped: what a shutdown waits
    /// for besides tasks (a parked connection, which has none).
    pub fn hold(&self) -> tokio_util::task::task_tracker::TaskTrackerToken {
        self.tracker.token()
    }

    /// The token cancelled when shutdown starts.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Starts the shutdown.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Starts the shutdown and waits up to `timeout` for every task to end.
    /// Returns false if some were still running.
    pub async fn shutdown_and_wait(&self, timeout: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// True when no task is running.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}
