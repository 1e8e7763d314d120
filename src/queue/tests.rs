//! Every transition of the task state machine, driven one step at a time against a
//! real store in a temporary directory: the test takes a task as the dispatcher
//! would and runs its attempt to the end, so each step is awaited, never timed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::worker::WorkerPool;
use super::{
    enqueue, CancelOutcome, QueueSettings, Registry, RetryOutcome, TaskContext, TaskError,
    TaskRecord, TaskSpec, TaskState,
};
use crate::store::{now_ms, Durability, Store};

/// What the test handler does with an attempt, chosen per task by its argument.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Act {
    Succeed,
    FailRetryable,
    FailPermanently,
    /// Tell the test it started, then wait until released or cancelled.
    Block,
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    pool: WorkerPool,
    started: mpsc::UnboundedReceiver<u64>,
    release: Arc<Notify>,
}

fn settings() -> QueueSettings {
    QueueSettings {
        retry_base_ms: 1_000,
        retry_max_ms: 10_000,
        ..QueueSettings::default()
    }
}

fn registry(started: mpsc::UnboundedSender<u64>, release: Arc<Notify>) -> Registry {
    let mut registry = Registry::default();
    registry.register("act", move |ctx: TaskContext| {
        let started = started.clone();
        let release = release.clone();
        async move {
            match ctx.args::<Act>()? {
                Act::Succeed => Ok(Some(serde_json::json!({"attempt": ctx.attempt}))),
                Act::FailRetryable => Err(TaskError::retryable("try again")),
                Act::FailPermanently => Err(TaskError::permanent("never")),
                Act::Block => {
                    let _ = started.send(ctx.id);
                    tokio::select! {
                        _ = release.notified() => Ok(None),
                        _ = ctx.cancel.cancelled() => Err(TaskError::permanent("cancelled")),
                    }
                }
            }
        }
    });
    registry
}

fn open_at(dir: tempfile::TempDir) -> Fixture {
    open_with(dir, settings())
}

fn open_with(dir: tempfile::TempDir, settings: QueueSettings) -> Fixture {
    let store = Store::open(dir.path(), Durability::Sync, 500).unwrap();
    let (tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let pool = WorkerPool::new(store.clone(), registry(tx, release.clone()), 4, settings);
    pool.load().unwrap();
    Fixture {
        _dir: dir,
        store,
        pool,
        started,
        release,
    }
}

fn open() -> Fixture {
    open_at(tempfile::tempdir().unwrap())
}

impl Fixture {
    /// Enqueues a task owned by user 7 (its results are kept).
    async fn enqueue(&self, act: Act, max_attempts: u32) -> u64 {
        let spec = TaskSpec::new("act", &act, max_attempts)
            .unwrap()
            .owned_by(7);
        self.enqueue_spec(spec).await
    }

    /// Enqueues a task that belongs to no user.
    async fn enqueue_unowned(&self, act: Act, max_attempts: u32) -> u64 {
        self.enqueue_spec(TaskSpec::new("act", &act, max_attempts).unwrap())
            .await
    }

    async fn enqueue_spec(&self, spec: TaskSpec) -> u64 {
        self.store
            .write(move |tx| enqueue(tx, &spec))
            .await
            .unwrap()
    }

    fn record(&self, id: u64) -> TaskRecord {
        self.store.tables().tasks.get(&id).unwrap().unwrap()
    }

    fn ready_keys(&self, id: u64) -> Vec<u64> {
        self.store
            .tables()
            .queue_ready
            .keys()
            .map(Result::unwrap)
            .filter(|(_, i)| *i == id)
            .map(|(at, _)| at)
            .collect()
    }

    fn count(&self, state: TaskState) -> u64 {
        let key = super::count_key(state, "act");
        self.store
            .tables()
            .queue_counts
            .get(&key)
            .unwrap()
            .unwrap_or(0)
    }

    /// Takes the one task due at `now` as the dispatcher would, and returns what
    /// its attempt does when awaited (run, record the outcome).
    async fn run_next_at(&self, now: i64) -> u64 {
        self.pool.take_in_new().unwrap();
        let mut taken = self.pool.take_due(now, 1);
        assert_eq!(taken.len(), 1, "one task is due");
        let t = taken.pop().unwrap();
        let id = t.id;
        let permit = self
            .pool
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .unwrap();
        self.pool.run_attempt(t, permit).await;
        id
    }

    async fn run_next(&self) -> u64 {
        self.run_next_at(now_ms()).await
    }

    /// Starts the next due task (a blocking one) on its own tokio task and returns
    /// once its handler runs.
    async fn start_next(&mut self) -> tokio::task::JoinHandle<()> {
        self.pool.take_in_new().unwrap();
        let t = self.pool.take_due(now_ms(), 1).pop().expect("a due task");
        let pool = self.pool.clone();
        let permit = pool.inner.permits.clone().acquire_owned().await.unwrap();
        let run = tokio::spawn(async move { pool.run_attempt(t, permit).await });
        tokio::time::timeout(Duration::from_secs(10), self.started.recv())
            .await
            .expect("the handler starts")
            .unwrap();
        run
    }
}

#[tokio::test]
async fn an_enqueued_task_waits_pending_in_the_ready_index() {
    let f = open();
    let id = f.enqueue(Act::Succeed, 3).await;
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Pending, 0));
    assert_eq!(f.ready_keys(id), vec![task.run_at as u64]);
    assert_eq!(f.count(TaskState::Pending), 1);
    f.pool.take_in_new().unwrap();
    assert!(f.pool.leases().ready.contains(&(task.run_at as u64, id)));
}

#[tokio::test]
async fn a_running_task_is_started_for_the_pool_and_pending_in_the_store_then_succeeds() {
    let mut f = open();
    let id = f.enqueue(Act::Block, 3).await;
    let run = f.start_next().await;
    // Taking it wrote nothing: the lease is the pool's.
    assert_eq!(f.record(id).state, TaskState::Pending);
    assert_eq!(f.ready_keys(id).len(), 1);
    let shown = f.pool.task(id).unwrap().unwrap();
    assert_eq!((shown.state, shown.attempts), (TaskState::Started, 1));
    let stats = f.pool.queue_stats().unwrap();
    assert_eq!(stats.depth["started"], 1);
    assert_eq!(stats.depth["pending"], 0);
    let listed = f.pool.list(Some(TaskState::Started), None, 10).unwrap();
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![id]);

    f.release.notify_one();
    run.await.unwrap();
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Success, 1));
    assert!(f.ready_keys(id).is_empty());
    assert!(f.pool.leases().running.is_empty());
    assert_eq!(f.count(TaskState::Pending), 0);
    assert_eq!(f.count(TaskState::Success), 1);
    let expiry: Vec<(u64, u64)> = f
        .store
        .tables()
        .queue_expiry
        .keys()
        .map(Result::unwrap)
        .collect();
    assert_eq!(expiry.len(), 1, "kept for result_ttl_s, then compacted");
}

#[tokio::test]
async fn a_task_nobody_owns_is_forgotten_as_it_succeeds_and_kept_when_it_fails() {
    let f = open();
    let key_writes = || {
        f.store
            .writer_stats()
            .key_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let ok = f.enqueue_unowned(Act::Succeed, 3).await;
    let before = key_writes();
    assert_eq!(f.run_next().await, ok);
    assert!(
        f.store.tables().tasks.get(&ok).unwrap().is_none(),
        "forgotten"
    );
    assert!(f.ready_keys(ok).is_empty());
    assert_eq!(
        f.store.tables().queue_expiry.keys().count(),
        0,
        "nothing to compact"
    );
    assert_eq!(
        (f.count(TaskState::Pending), f.count(TaskState::Success)),
        (0, 0)
    );
    // Its record, its ready-index entry and its pending count: three keys.
    assert_eq!(key_writes() - before, 3);
    assert_eq!(
        f.pool
            .stats()
            .completed
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "still counted as completed"
    );

    let dead = f.enqueue_unowned(Act::FailPermanently, 1).await;
    assert_eq!(f.run_next().await, dead);
    assert_eq!(
        f.record(dead).state,
        TaskState::Failure,
        "a dead letter stays"
    );

    let kept = open_with(
        tempfile::tempdir().unwrap(),
        QueueSettings {
            keep_unowned_results: true,
            ..settings()
        },
    );
    let id = kept.enqueue_unowned(Act::Succeed, 3).await;
    assert_eq!(kept.run_next().await, id);
    assert_eq!(
        kept.record(id).state,
        TaskState::Success,
        "kept when asked to"
    );
}

#[tokio::test]
async fn a_success_keeps_its_result() {
    let f = open();
    let id = f.enqueue(Act::Succeed, 3).await;
    assert_eq!(f.run_next().await, id);
    let task = f.record(id);
    assert_eq!(task.state, TaskState::Success);
    assert_eq!(task.result.as_deref(), Some(r#"{"attempt":1}"#));
    assert_eq!(
        f.pool
            .stats()
            .completed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_failed_attempt_waits_in_retry_with_backoff_then_dies_out_of_attempts() {
    let f = open();
    let id = f.enqueue(Act::FailRetryable, 2).await;
    let before = now_ms();
    f.run_next().await;
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Retry, 1));
    assert_eq!(task.last_error.as_deref(), Some("try again"));
    // The first retry waits base (1 s) scaled by a jitter in [0.75, 1].
    assert!(task.run_at >= before + 750, "{} vs {before}", task.run_at);
    assert_eq!(f.ready_keys(id), vec![task.run_at as u64]);
    assert!(f.pool.take_due(now_ms(), 1).is_empty(), "not due yet");
    assert_eq!(f.count(TaskState::Retry), 1);

    // When due, the second and last attempt fails too: a dead letter.
    f.run_next_at(task.run_at).await;
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Failure, 2));
    assert!(f.ready_keys(id).is_empty());
    assert!(f.store.tables().queue_dead.contains(&id).unwrap());
    assert_eq!(f.count(TaskState::Failure), 1);
    assert_eq!(f.count(TaskState::Retry), 0);
}

#[tokio::test]
async fn a_permanent_failure_dies_at_once() {
    let f = open();
    let id = f.enqueue(Act::FailPermanently, 5).await;
    f.run_next().await;
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Failure, 1));
    assert!(f.store.tables().queue_dead.contains(&id).unwrap());
    // Dead letters do not expire with results.
    assert!(f.pool.task(id).unwrap().is_some());
}

#[tokio::test]
async fn an_admin_retry_brings_a_dead_letter_back_with_fresh_attempts() {
    let f = open();
    let id = f.enqueue(Act::FailPermanently, 1).await;
    f.run_next().await;
    assert_eq!(f.record(id).state, TaskState::Failure);
    assert_eq!(f.pool.retry(id).await.unwrap(), RetryOutcome::Requeued);
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Pending, 0));
    assert!(!f.store.tables().queue_dead.contains(&id).unwrap());
    assert_eq!(f.ready_keys(id), vec![task.run_at as u64]);
    assert_eq!(f.count(TaskState::Failure), 0);
    // It runs again from the pool's memory, and fails again: one attempt allowed.
    f.run_next().await;
    assert_eq!(f.record(id).state, TaskState::Failure);
    // A success cannot be retried.
    let ok = f.enqueue(Act::Succeed, 1).await;
    f.run_next().await;
    assert_eq!(
        f.pool.retry(ok).await.unwrap(),
        RetryOutcome::NotRetryable(TaskState::Success)
    );
}

#[tokio::test]
async fn a_running_task_cannot_be_retried_and_a_cancelled_one_ends_cancelled() {
    let mut f = open();
    let id = f.enqueue(Act::Block, 3).await;
    let run = f.start_next().await;
    assert_eq!(
        f.pool.retry(id).await.unwrap(),
        RetryOutcome::NotRetryable(TaskState::Started)
    );
    assert_eq!(f.pool.cancel(id).await.unwrap(), CancelOutcome::Requested);
    run.await.unwrap();
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Cancelled, 1));
    assert!(f.ready_keys(id).is_empty());
}

#[tokio::test]
async fn a_cancelled_waiting_task_never_runs() {
    let f = open();
    let id = f.enqueue(Act::Succeed, 3).await;
    f.pool.take_in_new().unwrap();
    assert_eq!(f.pool.cancel(id).await.unwrap(), CancelOutcome::Cancelled);
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Cancelled, 0));
    assert!(f.ready_keys(id).is_empty());
    // Its entry in the pool's memory is stale now, and is dropped.
    let taken = f.pool.take_due(now_ms(), 1);
    assert_eq!(taken.len(), 1);
    let t = taken.into_iter().next().unwrap();
    let permit = f.pool.inner.permits.clone().acquire_owned().await.unwrap();
    f.pool.run_attempt(t, permit).await;
    assert_eq!(f.record(id).state, TaskState::Cancelled);
    assert!(f.pool.leases().running.is_empty());
}

#[tokio::test]
async fn an_expired_lease_is_taken_back_and_the_late_outcome_ignored() {
    let mut f = open();
    let id = f.enqueue(Act::Block, 3).await;
    let run = f.start_next().await;
    // The worker hung past its lease.
    f.pool.leases().running.get_mut(&id).unwrap().deadline = 0;
    let before = now_ms();
    assert_eq!(f.pool.reap_expired_leases().await.unwrap(), 1);
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Retry, 1));
    assert!(task.last_error.unwrap().contains("lease expired"));
    assert!(task.run_at >= before);
    assert_eq!(f.ready_keys(id), vec![task.run_at as u64]);
    // The hung attempt was told to stop; what it reports changes nothing.
    run.await.unwrap();
    let after = f.record(id);
    assert_eq!((after.state, after.attempts), (TaskState::Retry, 1));
    // It waits again and runs as attempt 2.
    assert!(f.pool.leases().ready.contains(&(task.run_at as u64, id)));
    let run = f.start_next().await;
    assert_eq!(f.pool.task(id).unwrap().unwrap().attempts, 2);
    f.release.notify_one();
    run.await.unwrap();
    assert_eq!(f.record(id).state, TaskState::Success);
}

#[tokio::test]
async fn a_restart_makes_a_running_task_pending_again_with_the_attempt_not_counted() {
    let mut f = open();
    let id = f.enqueue(Act::Block, 3).await;
    let run = f.start_next().await;
    // The process dies under the attempt: nothing about the lease was written.
    run.abort();
    let _ = run.await;
    let Fixture {
        _dir: dir,
        store,
        pool,
        ..
    } = f;
    drop(pool);
    store.close();
    drop(store);
    let f = open_at(dir);
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Pending, 0));
    assert!(f.pool.leases().ready.contains(&(task.run_at as u64, id)));
    let retried = f.enqueue(Act::Succeed, 1).await;
    // Both wait; the interrupted one (older) comes first.
    f.pool.take_in_new().unwrap();
    let due: Vec<u64> = f.pool.take_due(now_ms(), 2).iter().map(|t| t.id).collect();
    assert_eq!(due, vec![id, retried]);
}

#[tokio::test]
async fn a_lease_stored_by_an_older_release_is_put_back_at_start() {
    let f = open();
    let id = f.enqueue(Act::Succeed, 3).await;
    // What a release that stored leases left after a kill: `started`, leased.
    f.store
        .write(move |tx| {
            let t = tx.t();
            let mut task = tx.get(&t.tasks, &id)?.unwrap();
            tx.remove(&t.queue_ready, &(task.run_at as u64, id))?;
            super::transition(tx, &mut task, TaskState::Started)?;
            task.attempts = 1;
            task.lease_until = Some(now_ms() + 30_000);
            tx.insert(&t.queue_leased, &((now_ms() + 30_000) as u64, id), &())?;
            tx.insert(&t.tasks, &id, &task)
        })
        .await
        .unwrap();
    assert_eq!(f.pool.recover().await.unwrap(), 1);
    let task = f.record(id);
    assert_eq!((task.state, task.attempts), (TaskState::Retry, 0));
    assert_eq!(task.lease_until, None);
    assert!(f.store.tables().queue_leased.is_empty());
    assert_eq!(f.ready_keys(id), vec![task.run_at as u64]);
    assert_eq!(f.count(TaskState::Started), 0);
}

#[tokio::test]
async fn a_unique_key_is_released_when_its_task_starts() {
    let mut f = open();
    let spec = TaskSpec::new("act", &Act::Block, 3)
        .unwrap()
        .unique("k".into());
    let first = {
        let spec = spec.clone();
        f.store.write(move |tx| enqueue(tx, &spec)).await.unwrap()
    };
    let again = {
        let spec = spec.clone();
        f.store.write(move |tx| enqueue(tx, &spec)).await.unwrap()
    };
    assert_eq!(first, again, "collapsed while waiting");
    let run = f.start_next().await;
    let later = f.store.write(move |tx| enqueue(tx, &spec)).await.unwrap();
    assert_ne!(later, first, "a duplicate after the start runs again");
    f.release.notify_one();
    run.await.unwrap();
}

#[tokio::test]
async fn after_the_store_recovers_the_pool_takes_in_tasks_whose_ids_were_reused() {
    let f = open();
    let lost = f.enqueue(Act::Succeed, 3).await;
    f.pool.take_in_new().unwrap();
    let mut again = f.record(lost);
    // A storage failure dropped that commit and the store reopened: the next task
    // gets the same id again, which the pool has already seen.
    f.store
        .write(move |tx| {
            let t = tx.t();
            let task = tx.get(&t.tasks, &lost)?.unwrap();
            tx.remove(&t.queue_ready, &(task.run_at as u64, lost))?;
            tx.remove(&t.tasks, &lost)
        })
        .await
        .unwrap();
    // Its entry in the pool's memory went stale with it.
    f.pool.leases().ready.clear();
    again.run_at = now_ms();
    f.store
        .write(move |tx| {
            // Written as the store writes a new task whose id was handed out again.
            tx.insert(&tx.t().tasks, &again.id, &again)?;
            tx.insert(&tx.t().queue_ready, &(again.run_at as u64, again.id), &())
        })
        .await
        .unwrap();
    let reused = lost;
    f.pool.take_in_new().unwrap();
    assert!(
        f.pool.take_due(now_ms(), 1).is_empty(),
        "missed: its id was seen"
    );
    f.store
        .writer_stats()
        .recoveries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    assert!(f.pool.reload_after_recovery().unwrap());
    assert!(
        !f.pool.reload_after_recovery().unwrap(),
        "once per recovery"
    );
    assert_eq!(f.run_next().await, reused);
    assert_eq!(f.record(reused).state, TaskState::Success);
}
