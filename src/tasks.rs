//! Background tasks under one supervisor.
//!
//! The server's periodic work (the upload cleanup, scheduled backups, and the
//! next tenants: transcription workers) runs in a [`Supervisor`]: each task
//! gets a [`CancellationToken`] and ends when it is cancelled; one that ends
//! early or panics is reported (it would otherwise vanish without a word); on
//! shutdown they are cancelled together and awaited within a bound, after the
//! HTTP server has drained and before the database closes.
//!
//! The database's own tasks (the WAL checkpointer, SQLite's group commit) live
//! as long as the database and end when it closes; they are started with
//! [`spawn_watched`], which reports them too should they end any other way.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};
pub use tokio_util::sync::CancellationToken;

/// Runs named background tasks, reports those that die, stops them together.
#[derive(Debug, Default)]
pub struct Supervisor {
    /// Each task yields whether it ended on its own (before being cancelled).
    running: JoinSet<bool>,
    names: HashMap<Id, &'static str>,
    cancel: CancellationToken,
    died: Vec<&'static str>,
}

impl Supervisor {
    /// An empty supervisor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the task `start` makes, named `name` in the logs. It gets a
    /// token that is cancelled at shutdown, and must end soon after.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let token = self.cancel.child_token();
        let task = start(token.clone());
        let handle = self.running.spawn(async move {
            task.await;
            !token.is_cancelled()
        });
        self.names.insert(handle.id(), name);
    }

    /// Runs `main` (the server) to its end, reporting meanwhile any task that
    /// ends or panics; returns what `main` returns.
    pub async fn supervise<T>(&mut self, main: impl Future<Output = T>) -> T {
        let mut main = std::pin::pin!(main);
        loop {
            tokio::select! {
                out = &mut main => return out,
                Some(ended) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.report(ended);
                }
            }
        }
    }

    /// Cancels every task and waits for them, at most `bound`; any still
    /// running then is aborted (and said so). Returns the names of the tasks
    /// that died during the supervisor's life (ended on their own, or panicked).
    pub async fn shutdown(mut self, bound: Duration) -> Vec<&'static str> {
        self.cancel.cancel();
        let drained = tokio::time::timeout(bound, async {
            while let Some(ended) = self.running.join_next_with_id().await {
                self.report(ended);
            }
        })
        .await;
        if drained.is_err() {
            let left: Vec<&str> = self.names.values().copied().collect();
            tracing::warn!(tasks = ?left, "background tasks still running at shutdown: aborted");
            self.running.abort_all();
            while self.running.join_next().await.is_some() {}
        }
        self.died
    }

    fn report(&mut self, ended: Result<(Id, bool), JoinError>) {
        let (id, on_its_own, panicked) = match &ended {
            Ok((id, on_its_own)) => (*id, *on_its_own, false),
            Err(e) => (e.id(), false, e.is_panic()),
        };
        let name = self.names.remove(&id).unwrap_or("unnamed");
        if panicked {
            tracing::error!(task = name, "background task panicked; it is not restarted");
            self.died.push(name);
        } else if on_its_own {
            tracing::error!(
                task = name,
                "background task ended unexpectedly; it is not restarted"
            );
            self.died.push(name);
        }
    }
}

/// Spawns a task that lives as long as its owner (the database) and reports
/// it if it panics; `ends_quietly` says whether its end is expected (its
/// owner closed).
pub fn spawn_watched<Fut>(
    name: &'static str,
    task: Fut,
    ends_quietly: impl Fn() -> bool + Send + 'static,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(task);
    tokio::spawn(async move {
        match handle.await {
            Ok(()) if ends_quietly() => {}
            Ok(()) => tracing::error!(task = name, "background task ended unexpectedly"),
            Err(e) if e.is_panic() => tracing::error!(task = name, "background task panicked"),
            Err(_) => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_dies_is_reported_and_the_rest_stop_on_shutdown() {
        let mut tasks = Supervisor::new();
        tasks.spawn("steady", |stop| async move { stop.cancelled().await });
        tasks.spawn("panicky", |_| async { panic!("boom") });
        tasks.spawn("quitter", |_| async {});
        let out = tasks
            .supervise(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                7
            })
            .await;
        assert_eq!(out, 7);
        let started = std::time::Instant::now();
        let mut died = tasks.shutdown(Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "stopped when asked"
        );
        died.sort_unstable();
        assert_eq!(died, ["panicky", "quitter"]);
    }

    #[tokio::test]
    async fn a_task_that_ignores_cancellation_is_aborted_after_the_bound() {
        let mut tasks = Supervisor::new();
        tasks.spawn("stubborn", |_| std::future::pending::<()>());
        let started = std::time::Instant::now();
        tasks.shutdown(Duration::from_millis(200)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
