//! The worker pool: one dispatcher hands due tasks to at most `workers` attempts at
//! a time, each on a tokio task.
//!
//! Leases live here, in memory, not in the store: workers live in the process that
//! holds their leases, so a lease dies with the process and need not be durable.
//! The pool keeps the ready index in memory too ([`Leases`]): filled at start from
//! the stored ready index, then fed by enqueue commits (the writer wakes the
//! dispatcher, which takes in every task stored since the highest id it has seen)
//! and by the pool's own outcomes (a retry waits again); loaded again after the
//! store recovers from a storage failure (the commits it dropped took ids that are
//! handed out again). Taking a task costs no write; only its outcome is written,
//! as a lazy change that the writer commits together with every other outcome
//! waiting at that moment.
//!
//! While a task runs, its stored state stays `pending` (or `retry`); the pool
//! reports it as `started`. After a crash or a restart every task not finished is
//! therefore simply pending again, with the interrupted attempt not counted
//! (delivery stays at least once). The dispatcher sleeps until the writer signals
//! an enqueue or the next delayed task is due. Each attempt runs under
//! `task_timeout_ms`; a handler that panics or times out is a failed attempt, never
//! a dead worker; a lease older than `lease_ms` (a handler that blocked its thread)
//! is taken back by the reaper, and whatever that attempt reports later is
//! ignored. On shutdown the dispatcher stops, running attempts get a bounded time
//! to finish, and the rest are abandoned: their tasks are still waiting in the
//! store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::state::RetryPolicy;
use super::{Finished, Outcome, QueueSettings, TaskError, TaskRecord, TaskState};
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
    pub(super) leases: Mutex<Leases>,
    pub(super) history: Mutex<std::collections::VecDeque<super::inspect::Sample>>,
}

/// The pool's memory of the queue: which waiting tasks are due when, and which
/// tasks its workers hold.
///
/// Invariants: a task is in `running` at most once; an entry of `ready` is the
/// task's stored ready key when it was added (a stale one — the task was retried,
/// cancelled or finished since — is dropped when it comes up); an id in `held` has
/// an admin change in flight and is not taken until it is done.
#[derive(Default)]
pub(super) struct Leases {
    /// `(run_at ms, id)` of waiting tasks.
    pub(super) ready: BTreeSet<(u64, u64)>,
    /// Leases by task id.
    pub(super) running: HashMap<u64, Lease>,
    /// Tasks an admin is retrying or cancelling right now.
    pub(super) held: HashSet<u64>,
    /// Highest task id taken in from the store: later ids are new tasks.
    pub(super) seen: u64,
    /// The store's recovery count when `ready` was filled from it.
    pub(super) recoveries: u64,
    next_token: u64,
}

/// One worker's hold on a task.
#[derive(Debug)]
pub(super) struct Lease {
    /// Tells this lease from a later one of the same task.
    pub(super) token: u64,
    /// Task name; empty until the task's record has been read.
    pub(super) name: String,
    /// Attempt number (stored attempts + 1); 0 until the record has been read.
    pub(super) attempt: u32,
    /// The stored state while it runs (`pending` or `retry`).
    pub(super) waited_as: TaskState,
    /// When it was taken (ms).
    pub(super) started_at: i64,
    /// After this the reaper takes it back (ms).
    pub(super) deadline: i64,
    /// Cancelled to stop the handler.
    pub(super) cancel: CancellationToken,
    /// An outcome is being recorded: the reaper leaves it alone.
    pub(super) recording: bool,
    /// The reaper took it back: whatever its attempt reports is ignored, even if
    /// writing the expiry failed and the reaper has to try again.
    pub(super) taken_back: bool,
}

impl Lease {
    /// Whether the task's record has been read and its handler started.
    pub(super) fn is_started(&self) -> bool {
        self.attempt > 0
    }
}

/// How often finished tasks whose results expired are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Most tasks taken in one round, and most new tasks taken in from the store at once.
const LEASE_BATCH: usize = 512;

/// A task taken from the ready index, not yet started.
pub(super) struct Taken {
    /// Ready key it was taken under.
    pub(super) key: u64,
    /// Task id.
    pub(super) id: u64,
    token: u64,
    cancel: CancellationToken,
}

fn ready_key(ms: i64) -> u64 {
    ms.max(0) as u64
}

impl WorkerPool {
    /// Creates the pool. Call [`WorkerPool::recover`] then [`WorkerPool::start`].
    pub fn new(store: Store, registry: Registry, workers: usize, settings: QueueSettings) -> Self {
        let wake = Arc::new(Notify::new());
        store.on_enqueue(wake.clone());
        let policy = RetryPolicy {
            base_ms: settings.retry_base_ms,
            max_ms: settings.retry_max_ms,
            result_ttl_ms: (settings.result_ttl_s as i64).saturating_mul(1000),
            keep_unowned_results: settings.keep_unowned_results,
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
                history: Mutex::new(std::collections::VecDeque::new()),
                hard_stop: CancellationToken::new(),
                leases: Mutex::new(Leases::default()),
            }),
        }
    }

    pub(super) fn leases(&self) -> MutexGuard<'_, Leases> {
        self.inner.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts back every task that an older release left `started` with a stored
    /// lease (it died or was killed under them). Leases are no longer stored, so
    /// data written since has none. Run before [`WorkerPool::start`].
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
        let policy = self.inner.policy.clone();
        let n = self
            .inner
            .store
            .write(move |tx| {
                let mut n = 0;
                for key in &leased {
                    n += usize::from(super::release_stored_lease(tx, *key, &policy)?);
                }
                Ok(n)
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

    /// Fills the ready index from the store: every task waiting there, due or
    /// not, replacing what it held. What was enqueued after the highest id read
    /// first is taken in by [`WorkerPool::take_in_new`], so nothing falls between
    /// the two. Leases held stay.
    pub(super) fn load(&self) -> Result<(), crate::store::Error> {
        let recoveries = self.recoveries();
        let t = self.inner.store.tables();
        let seen = t
            .tasks
            .range_rev(Bound::Unbounded, Bound::Unbounded, 1)?
            .first()
            .map_or(0, |(id, _)| *id);
        let mut ready = BTreeSet::new();
        for key in t.queue_ready.keys() {
            ready.insert(key?);
        }
        let mut leases = self.leases();
        leases.ready = ready;
        leases.seen = seen;
        leases.recoveries = recoveries;
        Ok(())
    }

    /// How many times the store has been reopened after a storage failure.
    fn recoveries(&self) -> u64 {
        self.inner
            .store
            .writer_stats()
            .recoveries
            .load(Ordering::Relaxed)
    }

    /// Loads the ready index again if the store was reopened after a storage
    /// failure since it was loaded: commits the failure dropped are gone, and their
    /// ids are handed out again, so the highest id seen no longer tells new tasks
    /// from known ones.
    pub(super) fn reload_after_recovery(&self) -> Result<bool, crate::store::Error> {
        if self.leases().recoveries == self.recoveries() {
            return Ok(false);
        }
        self.load()?;
        tracing::info!("reloaded the ready index after the store recovered");
        Ok(true)
    }

    /// Takes in tasks stored since the highest id seen (the writer commits one
    /// batch at a time and ids grow in commit order, so a later task always has a
    /// higher id). Returns whether there may be more.
    pub(super) fn take_in_new(&self) -> Result<bool, crate::store::Error> {
        let from = self.leases().seen.saturating_add(1);
        let rows = self
            .inner
            .store
            .tables()
            .tasks
            .range(&from, Bound::Unbounded, LEASE_BATCH)?;
        let more = rows.len() == LEASE_BATCH;
        let mut leases = self.leases();
        for (id, task) in rows {
            if task.state.is_waiting() {
                leases.ready.insert((ready_key(task.run_at), id));
            }
            leases.seen = leases.seen.max(id);
        }
        Ok(more)
    }

    /// Takes up to `max` tasks due at `now` out of the ready index and leases them.
    pub(super) fn take_due(&self, now: i64, max: usize) -> Vec<Taken> {
        let lease_ms = self.inner.settings.lease_ms as i64;
        let mut guard = self.leases();
        let leases = &mut *guard;
        let mut taken = Vec::new();
        let mut stale = Vec::new();
        for &(key, id) in leases.ready.range(..=(ready_key(now), u64::MAX)) {
            if taken.len() == max {
                break;
            }
            if leases.held.contains(&id) {
                continue;
            }
            if leases.running.contains_key(&id) {
                // An older entry of a task that is running: its outcome decides.
                stale.push((key, id));
                continue;
            }
            leases.next_token += 1;
            let token = leases.next_token;
            let cancel = self.inner.hard_stop.child_token();
            leases.running.insert(
                id,
                Lease {
                    token,
                    name: String::new(),
                    attempt: 0,
                    waited_as: TaskState::Pending,
                    started_at: now,
                    deadline: now.saturating_add(lease_ms),
                    cancel: cancel.clone(),
                    recording: false,
                    taken_back: false,
                },
            );
            taken.push(Taken {
                key,
                id,
                token,
                cancel,
            });
        }
        for t in &taken {
            leases.ready.remove(&(t.key, t.id));
        }
        for k in &stale {
            leases.ready.remove(k);
        }
        taken
    }

    /// Ends lease `token` of task `id`; with `ready`, the task waits again under
    /// that key. Returns whether the lease was still held.
    fn end_lease(&self, id: u64, token: u64, ready: Option<u64>) -> bool {
        let mut leases = self.leases();
        if leases.running.get(&id).is_none_or(|l| l.token != token) {
            return false;
        }
        leases.running.remove(&id);
        if let Some(key) = ready {
            leases.ready.insert((key, id));
        }
        true
    }

    /// Marks lease `token` of task `id` as being recorded; `false` if it is no
    /// longer held (the reaper took it back) or already being recorded.
    fn claim(&self, id: u64, token: u64) -> bool {
        let mut leases = self.leases();
        match leases.running.get_mut(&id) {
            Some(l) if l.token == token && !l.recording && !l.taken_back => {
                l.recording = true;
                true
            }
            _ => false,
        }
    }

    /// After an outcome was written: the lease ends, a retry waits again.
    /// If the write failed the lease stays, so the reaper takes it back later.
    fn settle(&self, id: u64, token: u64, written: &Result<Option<Finished>, crate::store::Error>) {
        match written {
            Ok(finished) => {
                let ready = finished.and_then(|f| f.ready_at);
                self.end_lease(id, token, ready);
                if ready.is_some() {
                    self.wake();
                }
            }
            Err(_) => {
                if let Some(l) = self.leases().running.get_mut(&id) {
                    if l.token == token {
                        l.recording = false;
                    }
                }
            }
        }
    }

    /// Takes back leases older than `lease_ms` (their worker hung past it): the
    /// lost attempt counts and the task waits again. Returns how many.
    pub async fn reap_expired_leases(&self) -> Result<usize, crate::store::Error> {
        let now = crate::store::now_ms();
        let expired: Vec<(u64, u64, u32)> = {
            let mut leases = self.leases();
            leases
                .running
                .iter_mut()
                .filter(|(_, l)| l.is_started() && !l.recording && l.deadline < now)
                .map(|(id, l)| {
                    l.recording = true;
                    l.taken_back = true;
                    l.cancel.cancel();
                    (*id, l.token, l.attempt)
                })
                .collect()
        };
        if expired.is_empty() {
            return Ok(0);
        }
        let policy = self.inner.policy.clone();
        let attempts: Vec<(u64, u32)> = expired.iter().map(|(id, _, a)| (*id, *a)).collect();
        let written = self
            .inner
            .store
            .write(move |tx| {
                attempts
                    .iter()
                    .map(|(id, attempt)| super::expire(tx, *id, *attempt, &policy))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        let n = expired.len();
        match written {
            Ok(finished) => {
                for ((id, token, _), f) in expired.into_iter().zip(finished) {
                    self.settle(id, token, &Ok(f));
                }
                tracing::warn!(tasks = n, "took back tasks whose lease expired");
                Ok(n)
            }
            Err(e) => {
                for (id, token, _) in expired {
                    self.settle(id, token, &Err(e.clone()));
                }
                Err(e)
            }
        }
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
                tracing::error!(error = %e, "taking back expired leases failed");
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
        let running = {
            let mut leases = self.leases();
            let running = leases.running.contains_key(&id);
            if !running {
                leases.held.insert(id);
            }
            running
        };
        let ttl = self.inner.policy.result_ttl_ms;
        let outcome = self
            .inner
            .store
            .write(move |tx| super::cancel(tx, id, running, ttl))
            .await;
        if !running {
            self.leases().held.remove(&id);
        }
        let outcome = outcome?;
        if outcome == super::CancelOutcome::Requested {
            self.cancel_running(id);
        }
        Ok(outcome)
    }

    /// Requeues a dead, cancelled or backing-off task with fresh attempts. A task
    /// running now cannot be retried (`NotRetryable(Started)`).
    pub async fn retry(&self, id: u64) -> Result<super::RetryOutcome, crate::store::Error> {
        {
            let mut leases = self.leases();
            if leases.running.contains_key(&id) {
                return Ok(super::RetryOutcome::NotRetryable(TaskState::Started));
            }
            leases.held.insert(id);
        }
        let written = self.inner.store.write(move |tx| super::retry(tx, id)).await;
        let mut leases = self.leases();
        leases.held.remove(&id);
        let (outcome, key) = written?;
        if outcome == super::RetryOutcome::Requeued {
            leases.ready.insert((key, id));
            drop(leases);
            self.wake();
        }
        Ok(outcome)
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

    /// Shows a stored task as it is now: `started` while a worker here holds it.
    pub(super) fn overlay(&self, mut task: TaskRecord) -> TaskRecord {
        if let Some(l) = self.leases().running.get(&task.id) {
            if l.is_started() && task.state.is_waiting() {
                task.state = TaskState::Started;
                task.attempts = l.attempt;
                task.updated_at = l.started_at;
                task.lease_until = Some(l.deadline);
            }
        }
        task
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
        Ok(Some(self.overlay(task)))
    }

    /// Wakes the dispatcher (after a change it cannot see, such as a retry request).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Signals the running attempt of task `id` to stop, if there is one here.
    pub fn cancel_running(&self, id: u64) -> bool {
        let leases = self.leases();
        leases.running.get(&id).map(|l| l.cancel.cancel()).is_some()
    }

    /// Stops taking tasks, waits up to `grace` for running attempts, then stops
    /// the rest. Nothing needs writing for them: their tasks still wait in the
    /// store, with the interrupted attempt not counted.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.stop_leasing.cancel();
        inner.running.close();
        if tokio::time::timeout(grace, inner.running.wait())
            .await
            .is_err()
        {
            tracing::warn!("tasks still running after the grace period; stopping them");
            inner.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), inner.running.wait()).await;
        }
    }

    async fn dispatch(self) {
        let inner = &self.inner;
        while let Err(e) = self.load() {
            tracing::error!(error = %e, "reading the ready index failed");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = inner.stop_leasing.cancelled() => return,
            }
        }
        loop {
            // Wait for a free worker first: taking more than can run would only let
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
            if let Err(e) = self.reload_after_recovery() {
                tracing::error!(error = %e, "reading the ready index failed");
            }
            let more = match self.take_in_new() {
                Ok(more) => more,
                Err(e) => {
                    tracing::error!(error = %e, "reading new tasks failed");
                    false
                }
            };
            let now = crate::store::now_ms();
            let taken = self.take_due(now, permits.len());
            if taken.is_empty() {
                drop(permits);
                if more {
                    continue;
                }
                let wait = self.time_to_next_due(now);
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = inner.stop_leasing.cancelled() => return,
                }
                continue;
            }
            for (t, permit) in taken.into_iter().zip(permits) {
                let pool = self.clone();
                inner.running.spawn(async move {
                    pool.run_attempt(t, permit).await;
                });
            }
        }
    }

    fn time_to_next_due(&self, now: i64) -> Duration {
        match self.leases().ready.first() {
            Some((run_at, _)) => {
                Duration::from_millis((*run_at as i64 - now).clamp(1, 1000) as u64)
            }
            None => Duration::from_secs(1),
        }
    }

    /// Reads the taken task and checks that it still waits under the key it was
    /// taken with. Fills in the lease; `None` (lease ended) if there is nothing
    /// to run.
    async fn begin(&self, t: &Taken) -> Option<TaskRecord> {
        let record = match self.inner.store.tables().tasks.get(&t.id) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, task_id = t.id, "reading a task failed");
                // It still waits in the store; try again shortly.
                self.end_lease(t.id, t.token, Some(t.key));
                return None;
            }
        };
        let Some(task) = record.filter(|r| r.state.is_waiting() && ready_key(r.run_at) == t.key)
        else {
            // Stale: it was retried, cancelled or finished since.
            self.end_lease(t.id, t.token, None);
            return None;
        };
        if task.cancel_requested {
            // Cancelled while it ran, then interrupted: it ends cancelled, unrun.
            let ttl = self.inner.policy.result_ttl_ms;
            let id = t.id;
            let written = self
                .inner
                .store
                .write_lazy(move |tx| super::cancel(tx, id, false, ttl))
                .await;
            if let Err(e) = &written {
                tracing::error!(error = %e, task_id = id, "cancelling a task failed");
            }
            self.end_lease(t.id, t.token, written.is_err().then_some(t.key));
            return None;
        }
        if task.unique.is_some() {
            let id = t.id;
            let written = self
                .inner
                .store
                .write_lazy(move |tx| super::release_unique_for_run(tx, id))
                .await;
            if let Err(e) = written {
                tracing::error!(error = %e, task_id = id, "releasing a unique key failed");
                self.end_lease(t.id, t.token, Some(t.key));
                return None;
            }
        }
        let mut leases = self.leases();
        let lease = leases
            .running
            .get_mut(&t.id)
            .filter(|l| l.token == t.token)?;
        lease.name = task.name.clone();
        lease.attempt = task.attempts.saturating_add(1);
        lease.waited_as = task.state;
        Some(task)
    }

    /// Runs one attempt and records its outcome. The worker slot (`permit`) is given
    /// back as soon as the handler returns: recording the outcome is a write the next
    /// task need not wait for (the attempt stays tracked until it is recorded).
    pub(super) async fn run_attempt(&self, t: Taken, permit: tokio::sync::OwnedSemaphorePermit) {
        let inner = &self.inner;
        let Some(task) = self.begin(&t).await else {
            return;
        };
        let attempt = task.attempts.saturating_add(1);
        let span = tracing::info_span!("task", task_id = task.id, name = %task.name, attempt);
        inner.stats.busy.fetch_add(1, Ordering::Relaxed);
        let ctx = TaskContext {
            id: task.id,
            name: task.name.clone(),
            args: task.args,
            attempt,
            cancel: t.cancel.clone(),
        };
        let outcome = self.execute(ctx).instrument(span.clone()).await;
        inner.stats.busy.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        let id = task.id;
        let Some(outcome) = outcome else {
            // Stopped by shutdown, not by its own fault: nothing to write, the task
            // still waits in the store and this attempt is not counted.
            self.end_lease(id, t.token, Some(t.key));
            return;
        };
        if !self.claim(id, t.token) {
            // The reaper took this lease back: the task has moved on without us.
            return;
        }
        if let Outcome::Failed(e) = &outcome {
            span.in_scope(|| tracing::warn!(error = %e.message, "task attempt failed"));
        }
        let policy = inner.policy.clone();
        // Lazy: an outcome lost in a crash leaves the task waiting, and it runs
        // again after the restart (at least once; handlers are idempotent).
        let written = inner
            .store
            .write_lazy(move |tx| super::finish(tx, id, attempt, &outcome, &policy))
            .await;
        self.settle(id, t.token, &written);
        let name = task.name;
        match written {
            Ok(Some(Finished {
                state: TaskState::Success,
                ..
            })) => {
                inner.stats.completed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_tasks_total", "name" => name, "outcome" => "success")
                    .increment(1);
            }
            Ok(Some(Finished {
                state: TaskState::Retry,
                ..
            })) => {
                inner.stats.retried.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_tasks_total", "name" => name, "outcome" => "retry")
                    .increment(1);
            }
            Ok(Some(Finished {
                state: TaskState::Failure,
                ..
            })) => {
                inner.stats.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_tasks_total", "name" => name, "outcome" => "failure")
                    .increment(1);
            }
            Ok(_) => {}
            // The lease stays; the reaper takes it back when it expires.
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
