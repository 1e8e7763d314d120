//! The worker pool: one dispatcher leases due tasks in batches and runs each on a
//! tokio task, at most `workers` at a time.
//!
//! The dispatcher sleeps until the writer signals an enqueue (no polling delay on
//! the hot path) or the next delayed task is due. Each attempt runs under
//! `task_timeout_ms`; a handler that panics or times out is a failed attempt, never a
//! dead worker. On shutdown the dispatcher stops leasing, running attempts get a
//! bounded time to finish, and whatever is still running is put back in the ready
//! index, so no task is lost or left `started`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::state::RetryPolicy;
use super::{Outcome, QueueSettings, TaskError, TaskRecord, TaskState};
use crate::store::Store;

/// What a handler gets for one attempt.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Task id.
    pub id: u64,
    /// Task name.
    pub name: String,
    /// Postcard-encoded arguments.
    pub args: Vec<u8>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Cancelled when the task is cancelled or the server shuts down hard.
    pub cancel: CancellationToken,
}

impl TaskContext {
    /// Decodes the arguments; a mismatch is a permanent failure.
    pub fn args<A: serde::de::DeserializeOwned>(&self) -> Result<A, TaskError> {
        postcard::from_bytes(&self.args)
            .map_err(|e| TaskError::permanent(format!("bad arguments for {}: {e}", self.name)))
    }
}

/// The future a handler returns: a JSON result, or why it failed.
pub type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Option<serde_json::Value>, TaskError>> + Send>>;

/// A named task's code. Handlers must be idempotent: an attempt may run again after
/// a crash.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, task: TaskContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<serde_json::Value>, TaskError>> + Send + 'static,
{
    fn run(&self, task: TaskContext) -> HandlerFuture {
        Box::pin(self(task))
    }
}

/// Handlers by task name.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// Registers the handler for `name`, replacing any earlier one.
    pub fn register(&mut self, name: &str, handler: impl Handler) -> &mut Self {
        self.handlers.insert(name.to_owned(), Arc::new(handler));
        self
    }

    /// Whether `name` has a handler.
    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// Registered names.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.keys().cloned().collect();
        names.sort();
        names
    }
}

/// Counters of the pool, for `/api/admin/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Attempts running now.
    pub busy: AtomicU64,
    /// Attempts that succeeded.
    pub completed: AtomicU64,
    /// Attempts that failed and will be retried.
    pub retried: AtomicU64,
    /// Tasks that ended in `failure`.
    pub failed: AtomicU64,
}

/// The running pool.
#[derive(Clone)]
pub struct WorkerPool {
    pub(super) inner: Arc<PoolInner>,
}

pub(super) struct PoolInner {
    pub(super) store: Store,
    pub(super) registry: Registry,
    pub(super) workers: usize,
    pub(super) settings: QueueSettings,
    pub(super) policy: RetryPolicy,
    pub(super) wake: Arc<Notify>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) stats: PoolStats,
    pub(super) running: TaskTracker,
    pub(super) stop_leasing: CancellationToken,
    pub(super) hard_stop: CancellationToken,
    pub(super) cancels: std::sync::Mutex<HashMap<u64, CancellationToken>>,
    pub(super) history: std::sync::Mutex<std::collections::VecDeque<super::inspect::Sample>>,
}

/// How often finished tasks whose results expired are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Most tasks leased in one batch.
const LEASE_BATCH: usize = 512;

impl WorkerPool {
    /// Creates the pool. Call [`WorkerPool::recover`] then [`WorkerPool::start`].
    pub fn new(store: Store, registry: Registry, workers: usize, settings: QueueSettings) -> Self {
        let wake = Arc::new(Notify::new());
        store.on_enqueue(wake.clone());
        let policy = RetryPolicy {
            base_ms: settings.retry_base_ms,
            max_ms: settings.retry_max_ms,
            result_ttl_ms: (settings.result_ttl_s as i64).saturating_mul(1000),
        };
        WorkerPool {
            inner: Arc::new(PoolInner {
                store,
                registry,
                workers: workers.max(1),
                settings,
                policy,
                wake,
                permits: Arc::new(Semaphore::new(workers.max(1))),
                stats: PoolStats::default(),
                running: TaskTracker::new(),
                stop_leasing: CancellationToken::new(),
                history: std::sync::Mutex::new(std::collections::VecDeque::new()),
                hard_stop: CancellationToken::new(),
                cancels: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Puts back every task left `started` by a previous process (it died or was
    /// killed under them). Run before [`WorkerPool::start`].
    pub async fn recover(&self) -> Result<usize, crate::store::Error> {
        let leased: Vec<(u64, u64)> = self
            .inner
            .store
            .tables()
            .queue_leased
            .keys()
            .collect::<Result<_, _>>()?;
        if leased.is_empty() {
            return Ok(0);
        }
        let ids: Vec<u64> = leased.iter().map(|(_, id)| *id).collect();
        let n = ids.len();
        let ttl = self.inner.policy.result_ttl_ms;
        self.inner
            .store
            .write(move |tx| {
                for id in &ids {
                    super::release(
                        tx,
                        *id,
                        "interrupted: the server stopped during this attempt",
                        true,
                        ttl,
                    )?;
                }
                Ok(())
            })
            .await?;
        tracing::info!(tasks = n, "requeued tasks interrupted by the last stop");
        Ok(n)
    }

    /// Starts the dispatcher and the lease reaper.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let reaper = self.clone();
        tokio::spawn(async move { reaper.reap_loop().await });
        let sampler = self.clone();
        tokio::spawn(async move { sampler.sample_loop().await });
        let pool = self.clone();
        tokio::spawn(async move { pool.dispatch().await })
    }

    /// Puts back tasks whose lease has expired (their worker hung past
    /// `lease_ms`); the lost attempt counts. Returns how many.
    pub async fn reap_expired_leases(&self) -> Result<usize, crate::store::Error> {
        let now = crate::store::now_ms();
        let expired = self.inner.store.tables().queue_leased.range(
            &(0, 0),
            std::ops::Bound::Excluded(&(now.max(0) as u64, 0)),
            LEASE_BATCH,
        )?;
        if expired.is_empty() {
            return Ok(0);
        }
        let ttl = self.inner.policy.result_ttl_ms;
        let ids: Vec<u64> = expired.into_iter().map(|((_, id), ())| id).collect();
        let n = self
            .inner
            .store
            .write(move |tx| {
                let mut n = 0;
                for id in &ids {
                    n += usize::from(super::release(
                        tx,
                        *id,
                        "lease expired: the worker did not finish in time",
                        false,
                        ttl,
                    )?);
                }
                Ok(n)
            })
            .await?;
        if n > 0 {
            tracing::warn!(tasks = n, "requeued tasks whose lease expired");
        }
        Ok(n)
    }

    async fn reap_loop(self) {
        let period = Duration::from_millis((self.inner.settings.lease_ms / 2).clamp(50, 1000));
        let mut last_purge = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.inner.stop_leasing.cancelled() => return,
            }
            if let Err(e) = self.reap_expired_leases().await {
                tracing::error!(error = %e, "reaping expired leases failed");
            }
            // Finished tasks are compacted away once their results expire, whether or
            // not a `purge_expired_results` schedule is configured: without it the
            // task tables would only grow.
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = tokio::time::Instant::now();
                if let Err(e) = self.purge_expired_results().await {
                    tracing::error!(error = %e, "purging expired results failed");
                }
            }
        }
    }

    /// Forgets finished tasks older than `result_ttl_s`. Returns how many.
    pub async fn purge_expired_results(&self) -> Result<usize, crate::store::Error> {
        super::purge_expired(&self.inner.store, self.inner.policy.result_ttl_ms).await
    }

    /// Cancels task `id`: a waiting task never runs; a running one is told to stop.
    pub async fn cancel(&self, id: u64) -> Result<super::CancelOutcome, crate::store::Error> {
        let ttl = self.inner.policy.result_ttl_ms;
        let outcome = self
            .inner
            .store
            .write(move |tx| super::cancel(tx, id, ttl))
            .await?;
        if outcome == super::CancelOutcome::Requested {
            self.cancel_running(id);
        }
        Ok(outcome)
    }

    /// Requeues a dead, cancelled or backing-off task with fresh attempts.
    pub async fn retry(&self, id: u64) -> Result<super::RetryOutcome, crate::store::Error> {
        self.inner.store.write(move |tx| super::retry(tx, id)).await
    }

    /// Pool counters.
    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats
    }

    /// Configured concurrency.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Registered task names.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// A task by id; `None` if unknown or finished longer ago than `result_ttl_s`
    /// (an expired result is forgotten, never reported as a fake `pending`). Dead
    /// letters do not expire: they stay, listed and retryable, until retried.
    pub fn task(&self, id: u64) -> Result<Option<TaskRecord>, crate::store::Error> {
        let Some(task) = self.inner.store.tables().tasks.get(&id)? else {
            return Ok(None);
        };
        let expires = matches!(task.state, TaskState::Success | TaskState::Cancelled);
        if expires && task.updated_at + self.inner.policy.result_ttl_ms < crate::store::now_ms() {
            return Ok(None);
        }
        Ok(Some(task))
    }

    /// Wakes the dispatcher (after a change it cannot see, such as a retry request).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Signals the running attempt of task `id` to stop, if there is one here.
    pub fn cancel_running(&self, id: u64) -> bool {
        let cancels = self.inner.cancels.lock().unwrap_or_else(|p| p.into_inner());
        cancels.get(&id).map(|c| c.cancel()).is_some()
    }

    /// Stops leasing, waits up to `grace` for running attempts, then cancels the rest
    /// and puts them back in the ready index.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.stop_leasing.cancel();
        inner.running.close();
        if tokio::time::timeout(grace, inner.running.wait())
            .await
            .is_err()
        {
            tracing::warn!("tasks still running after the grace period; putting them back");
            inner.hard_stop.cancel();
            // Their own code path releases them on hard stop; give it a moment.
            let _ = tokio::time::timeout(Duration::from_secs(5), inner.running.wait()).await;
        }
    }

    async fn dispatch(self) {
        let inner = &self.inner;
        loop {
            // Wait for a free worker first: leasing more than can run would only let
            // leases expire.
            let first = tokio::select! {
                p = inner.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = inner.stop_leasing.cancelled() => return,
            };
            let mut permits = vec![first];
            while permits.len() < LEASE_BATCH {
                match inner.permits.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let now = crate::store::now_ms();
            let due = match self.due_tasks(now, permits.len()) {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "reading the ready index failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if due.is_empty() {
                drop(permits);
                let wait = self.time_to_next_due(now);
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = inner.stop_leasing.cancelled() => return,
                }
                continue;
            }
            let lease_ms = inner.settings.lease_ms;
            // Lazy: a lease lost in a crash only means the task is leased again.
            let leased = inner
                .store
                .write_lazy(move |tx| {
                    let mut leased = Vec::with_capacity(due.len());
                    for (run_at, id) in &due {
                        if let Some(task) = super::lease(tx, *run_at, *id, lease_ms)? {
                            leased.push(task);
                        }
                    }
                    Ok(leased)
                })
                .await;
            let leased = match leased {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "leasing tasks failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            for (task, permit) in leased.into_iter().zip(permits) {
                let pool = self.clone();
                inner.running.spawn(async move {
                    pool.run_attempt(task, permit).await;
                });
            }
        }
    }

    fn due_tasks(&self, now: i64, max: usize) -> Result<Vec<(u64, u64)>, crate::store::Error> {
        let upper = (now.max(0) as u64, u64::MAX);
        let rows = self.inner.store.tables().queue_ready.range(
            &(0, 0),
            std::ops::Bound::Included(&upper),
            max,
        )?;
        Ok(rows.into_iter().map(|(k, ())| k).collect())
    }

    fn time_to_next_due(&self, now: i64) -> Duration {
        let max = Duration::from_secs(1);
        match self.inner.store.tables().queue_ready.first() {
            Ok(Some(((run_at, _), ()))) => {
                Duration::from_millis((run_at as i64 - now).clamp(1, 1000) as u64).min(max)
            }
            _ => max,
        }
    }

    /// Runs one attempt and records its outcome. The worker slot (`permit`) is given
    /// back as soon as the handler returns: recording the outcome is a write the next
    /// task need not wait for (the attempt stays tracked until it is recorded).
    async fn run_attempt(&self, task: TaskRecord, permit: tokio::sync::OwnedSemaphorePermit) {
        let inner = &self.inner;
        let span = tracing::info_span!("task", task_id = task.id, name = %task.name, attempt = task.attempts);
        let cancel = inner.hard_stop.child_token();
        inner
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.id, cancel.clone());
        inner.stats.busy.fetch_add(1, Ordering::Relaxed);
        let ctx = TaskContext {
            id: task.id,
            name: task.name.clone(),
            args: task.args.clone(),
            attempt: task.attempts,
            cancel: cancel.clone(),
        };
        let outcome = self.execute(ctx).instrument(span.clone()).await;
        inner.stats.busy.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        inner
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task.id);
        let id = task.id;
        let attempt = task.attempts;
        let name = task.name.clone();
        let write = match outcome {
            // Stopped by shutdown, not by its own fault: back to ready, attempt refunded.
            None => {
                let ttl = inner.policy.result_ttl_ms;
                inner
                    .store
                    .write(move |tx| {
                        super::release(tx, id, "interrupted by shutdown", true, ttl).map(|_| None)
                    })
                    .await
            }
            Some(outcome) => {
                if let Outcome::Failed(e) = &outcome {
                    span.in_scope(|| tracing::warn!(error = %e.message, "task attempt failed"));
                }
                let policy = inner.policy.clone();
                // Lazy: an outcome lost in a crash leaves the task started, and
                // recovery runs it again (at least once; handlers are idempotent).
                inner
                    .store
                    .write_lazy(move |tx| super::finish(tx, id, attempt, &outcome, &policy))
                    .await
            }
        };
        match write {
            Ok(Some(TaskState::Success)) => {
                inner.stats.completed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_tasks_total", "name" => name, "outcome" => "success")
                    .increment(1);
            }
            Ok(Some(TaskState::Retry)) => {
                inner.stats.retried.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_tasks_total", "name" => name, "outcome" => "retry")
                    .increment(1);
            }
            Ok(Some(TaskState::Failure)) => {
                inner.stats.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_tasks_total", "name" => name, "outcome" => "failure")
                    .increment(1);
            }
            Ok(_) => {}
            // The lease stays; recovery or lease expiry puts the task back.
            Err(e) => tracing::error!(error = %e, "recording the task outcome failed"),
        }
    }

    /// Runs the handler; `None` when the server's hard stop interrupted it.
    async fn execute(&self, ctx: TaskContext) -> Option<Outcome> {
        let inner = &self.inner;
        let Some(handler) = inner.registry.handlers.get(&ctx.name).cloned() else {
            return Some(Outcome::Failed(TaskError::permanent(format!(
                "no handler is registered for task {:?}",
                ctx.name
            ))));
        };
        let cancel = ctx.cancel.clone();
        let timeout = Duration::from_millis(inner.settings.task_timeout_ms);
        // Its own tokio task, so that a panic is contained and reported as a JoinError.
        let mut attempt = tokio::spawn(handler.run(ctx));
        let result = tokio::select! {
            r = &mut attempt => r,
            _ = tokio::time::sleep(timeout) => {
                attempt.abort();
                return Some(Outcome::Failed(TaskError::retryable(format!(
                    "timed out after {} ms", timeout.as_millis()
                ))));
            }
            _ = cancel.cancelled() => {
                attempt.abort();
                if inner.hard_stop.is_cancelled() {
                    return None;
                }
                return Some(Outcome::Failed(TaskError::permanent("cancelled")));
            }
        };
        Some(match result {
            Ok(Ok(value)) => Outcome::Success(value.map(|v| v.to_string())),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(join) if join.is_panic() => {
                let payload = join.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Outcome::Failed(TaskError::retryable(format!("handler panicked: {text}")))
            }
            Err(_) => return None,
        })
    }
}
