//! The durable task queue: tasks live in sled next to the data that caused them.
//!
//! A task is enqueued inside the transaction of the change that causes it
//! ([`enqueue`]), so the change and its follow-up work are committed together or not
//! at all. Delivery is at least once: handlers must be idempotent.
//!
//! # States
//! What is stored, and what moves a task from one state to the next:
//!
//! ```text
//!             enqueue                       attempt fails, attempts left
//!   ─────────► pending ──┐   ┌──────────────────────────────── retry ◄─┐
//!                        │   │  (waits run_at: backoff with jitter)     │
//!                        ▼   ▼                                          │
//!                   [running: a lease in the worker pool's memory] ────┤ lease expired
//!                        │          │                 │                 (reaper; counts)
//!                  success     out of attempts,   cancel requested
//!                        │     or permanent error     │
//!                        ▼          ▼                 ▼
//!                     success    failure (dead)    cancelled
//!                   (result kept  (kept until an   (kept result_ttl_s)
//!                  result_ttl_s;  admin retries it:
//!                   forgotten at   pending again)
//!                   once if no
//!                   user owns it)
//! ```
//!
//! Waiting tasks (`pending`, `retry`) are indexed by `(run_at, id)`. Running is not
//! a stored state: workers live in the process that holds their leases, so a lease
//! need not be durable, and taking a task writes nothing. While it runs, a task is
//! stored as waiting and reported as `started` by the pool ([`worker`]). A restart
//! makes every unfinished task pending again, with the interrupted attempt not
//! counted; a task whose outcome was committed never runs again. So a task costs two
//! commits — its enqueue (with the change that caused it) and its outcome ([`finish`],
//! which the writer groups with every other outcome waiting) — and about five keys:
//! the record and its ready-index entry at enqueue; the record, the ready-index
//! entry and the expiry-index entry at the outcome; plus the per-state counts, which
//! a batch shares. Results are kept for `result_ttl_s`, then compacted away; dead
//! letters stay until retried. A result is kept only where someone can ask for it:
//! a task that belongs to no user (periodic tasks, the offline fallback's
//! deliveries) is removed in the commit of its success — two keys, nothing left to
//! compact — unless `keep_unowned_results` is set. Tasks left `started` by a
//! release that stored leases are put back at start
//! ([`worker::WorkerPool::recover`]).
//!
//! Every state change here is a store change through the group-commit writer; the
//! queue never talks to HTTP or to the realtime hub itself (handlers may).

mod beat;
mod inspect;
mod settings;
mod state;
#[cfg(test)]
mod tests;
pub mod worker;

use serde::Serialize;

use crate::domain::Timestamp;
use crate::store::{Tx, TxResult};

pub use beat::{Beat, ScheduleRecord, ScheduleSettings};
pub use inspect::{QueueStats, RatePoint};
pub use settings::QueueSettings;
pub use state::{backoff_ms, Outcome, TaskError};
pub use worker::{Handler, HandlerFuture, Registry, TaskContext, WorkerPool};

pub use crate::store::records::{TaskRecord, TaskState};

impl TaskState {
    /// All states, for statistics.
    pub const ALL: [TaskState; 6] = [
        TaskState::Pending,
        TaskState::Started,
        TaskState::Retry,
        TaskState::Success,
        TaskState::Failure,
        TaskState::Cancelled,
    ];

    /// The API name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Started => "started",
            TaskState::Retry => "retry",
            TaskState::Success => "success",
            TaskState::Failure => "failure",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Parses an API state name.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the task waits in the ready index.
    pub fn is_waiting(self) -> bool {
        matches!(self, TaskState::Pending | TaskState::Retry)
    }
}

/// A task as rendered (API.md `Task`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Task {
    /// Id.
    pub id: u64,
    /// Handler name.
    pub name: String,
    /// State.
    pub state: TaskState,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Next (or last) run time.
    pub run_at: Timestamp,
    /// Last error.
    pub last_error: Option<String>,
    /// Handler result.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl From<&TaskRecord> for Task {
    fn from(r: &TaskRecord) -> Self {
        Task {
            id: r.id,
            name: r.name.clone(),
            state: r.state,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            run_at: Timestamp(r.run_at),
            last_error: r.last_error.clone(),
            result: r
                .result
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
        }
    }
}

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Handler name.
    pub name: String,
    /// Handler arguments (postcard).
    pub args: Vec<u8>,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// User the task belongs to.
    pub owner: Option<u64>,
    /// While a task with this key waits, enqueueing another returns it instead.
    pub unique: Option<String>,
    /// Delay before the first attempt.
    pub delay_ms: u64,
}

/// Task arguments that could not be encoded (a `Serialize` implementation that
/// refuses, or a sequence of unknown length): the task is not enqueued.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the arguments of task {name:?} cannot be encoded: {message}")]
pub struct ArgsError {
    /// Task name.
    pub name: String,
    /// What the encoder said.
    pub message: String,
}

impl From<ArgsError> for crate::store::Error {
    fn from(e: ArgsError) -> Self {
        crate::store::Error::Decode {
            table: "tasks",
            message: e.to_string(),
        }
    }
}

/// Inside a transaction, arguments that cannot be encoded abort the whole change:
/// the action that would have caused the task does not happen either.
impl From<ArgsError> for crate::store::TxError {
    fn from(e: ArgsError) -> Self {
        crate::store::TxError::Abort(e.into())
    }
}

impl TaskSpec {
    /// A task named `name` with postcard-encoded `args`; an error if `args` cannot
    /// be encoded (never a task with empty arguments that would fail later).
    pub fn new<A: Serialize>(name: &str, args: &A, max_attempts: u32) -> Result<Self, ArgsError> {
        let args = postcard::to_stdvec(args).map_err(|e| ArgsError {
            name: name.to_owned(),
            message: e.to_string(),
        })?;
        Ok(TaskSpec {
            name: name.to_owned(),
            args,
            max_attempts: max_attempts.max(1),
            owner: None,
            unique: None,
            delay_ms: 0,
        })
    }

    /// Sets the owning user.
    pub fn owned_by(mut self, user: u64) -> Self {
        self.owner = Some(user);
        self
    }

    /// Sets the unique key.
    pub fn unique(mut self, key: String) -> Self {
        self.unique = Some(key);
        self
    }
}

fn ready_key(ms: i64) -> u64 {
    ms.max(0) as u64
}

fn count_key(state: TaskState, name: &str) -> String {
    format!("{}\0{name}", state.as_str())
}

/// Adjusts the persistent count of tasks in `state` named `name`.
fn count(tx: &Tx<'_>, state: TaskState, name: &str, delta: i64) -> TxResult<()> {
    let t = tx.t();
    let key = count_key(state, name);
    let n = tx.get(&t.queue_counts, &key)?.unwrap_or(0);
    let n = (n as i64 + delta).max(0) as u64;
    if n == 0 {
        tx.remove(&t.queue_counts, &key)?;
    } else {
        tx.insert(&t.queue_counts, &key, &n)?;
    }
    Ok(())
}

/// Moves `task` to state `to`, keeping the per-state counts exact.
fn transition(tx: &Tx<'_>, task: &mut TaskRecord, to: TaskState) -> TxResult<()> {
    if task.state != to {
        count(tx, task.state, &task.name, -1)?;
        count(tx, to, &task.name, 1)?;
        task.state = to;
    }
    Ok(())
}

/// Whether a task in `state` will not run again by itself.
pub fn is_finished(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Success | TaskState::Failure | TaskState::Cancelled
    )
}

/// Enqueues a task inside the caller's transaction and returns its id — or, when a
/// task with the same unique key is still waiting, that task's id.
pub fn enqueue(tx: &Tx<'_>, spec: &TaskSpec) -> TxResult<u64> {
    let t = tx.t();
    if let Some(key) = &spec.unique {
        if let Some(existing) = tx.get(&t.queue_unique, key)? {
            if let Some(task) = tx.get(&t.tasks, &existing)? {
                if task.state.is_waiting() {
                    return Ok(existing);
                }
            }
        }
    }
    let now = crate::store::now_ms();
    let id = tx.next_id()?;
    let run_at = now + spec.delay_ms as i64;
    let record = TaskRecord {
        id,
        name: spec.name.clone(),
        args: spec.args.clone(),
        state: TaskState::Pending,
        attempts: 0,
        max_attempts: spec.max_attempts,
        run_at,
        last_error: None,
        result: None,
        created_at: now,
        updated_at: now,
        owner: spec.owner,
        unique: spec.unique.clone(),
        lease_until: None,
        cancel_requested: false,
    };
    tx.insert(&t.tasks, &id, &record)?;
    tx.insert(&t.queue_ready, &(ready_key(run_at), id), &())?;
    if let Some(key) = &spec.unique {
        tx.insert(&t.queue_unique, key, &id)?;
    }
    count(tx, TaskState::Pending, &record.name, 1)?;
    tx.mark_enqueued();
    Ok(id)
}

fn release_unique(tx: &Tx<'_>, task: &TaskRecord) -> TxResult<()> {
    let t = tx.t();
    if let Some(key) = &task.unique {
        if tx.get(&t.queue_unique, key)? == Some(task.id) {
            tx.remove(&t.queue_unique, key)?;
        }
    }
    Ok(())
}

/// Releases the unique key of task `id`, which a worker is about to run: a
/// duplicate enqueued from now on must run again, since this run may already have
/// read its inputs. Everything collapsed into it before is covered by this run. The
/// lease itself is not written: it lives in the worker pool's memory.
pub(crate) fn release_unique_for_run(tx: &Tx<'_>, id: u64) -> TxResult<()> {
    if let Some(task) = tx.get(&tx.t().tasks, &id)? {
        if task.state.is_waiting() {
            release_unique(tx, &task)?;
        }
    }
    Ok(())
}

fn end(
    tx: &Tx<'_>,
    task: &mut TaskRecord,
    state: TaskState,
    ttl_ms: i64,
    now: i64,
) -> TxResult<()> {
    let t = tx.t();
    transition(tx, task, state)?;
    if state == TaskState::Failure {
        // Dead letters stay until retried: they are what an operator must look at.
        tx.insert(&t.queue_dead, &task.id, &())?;
    } else {
        tx.insert(&t.queue_expiry, &(ready_key(now + ttl_ms), task.id), &())?;
    }
    Ok(())
}

/// Takes waiting task `id` out of the ready index for attempt number `attempt`
/// (the attempts recorded so far plus one). `None` if the task is no longer
/// waiting for that attempt: another outcome was recorded first, or an admin reset
/// it meanwhile.
fn unready(tx: &Tx<'_>, id: u64, attempt: u32) -> TxResult<Option<TaskRecord>> {
    let t = tx.t();
    let Some(task) = tx.get(&t.tasks, &id)? else {
        return Ok(None);
    };
    if !task.state.is_waiting() || task.attempts.saturating_add(1) != attempt {
        return Ok(None);
    }
    tx.remove(&t.queue_ready, &(ready_key(task.run_at), id))?;
    release_unique(tx, &task)?;
    Ok(Some(task))
}

/// Where a finished attempt left its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finished {
    /// The task's new state.
    pub(crate) state: TaskState,
    /// Its new ready-index key, when it waits again (`retry`).
    pub(crate) ready_at: Option<u64>,
}

/// Records the outcome of attempt `attempt` of task `id`, which ran under a lease
/// held in memory (the task's stored state stayed `pending` or `retry` while it
/// ran). Ignored (`None`) if the task is no longer waiting for that attempt.
pub(crate) fn finish(
    tx: &Tx<'_>,
    id: u64,
    attempt: u32,
    outcome: &Outcome,
    policy: &state::RetryPolicy,
) -> TxResult<Option<Finished>> {
    let t = tx.t();
    let Some(mut task) = unready(tx, id, attempt)? else {
        return Ok(None);
    };
    let now = crate::store::now_ms();
    task.attempts = attempt;
    task.updated_at = now;
    let mut next = state::next_state(&task, outcome, policy, now);
    match outcome {
        Outcome::Success(result) => {
            task.result = result.clone();
            task.last_error = None;
        }
        Outcome::Failed(err) => task.last_error = Some(err.message.clone()),
    }
    if task.cancel_requested && next.state != TaskState::Success {
        next.state = TaskState::Cancelled;
    }
    if next.state == TaskState::Success && task.owner.is_none() && !policy.keep_unowned_results {
        // Nobody can ask for this result but the admin, who sees the outcome in the
        // counts and the history: the record goes in this commit, with nothing to
        // compact later.
        count(tx, task.state, &task.name, -1)?;
        tx.remove(&t.tasks, &id)?;
        return Ok(Some(Finished {
            state: TaskState::Success,
            ready_at: None,
        }));
    }
    let ready_at = wait_or_end(tx, &mut task, next.state, next.run_at, policy, now)?;
    let state = task.state;
    tx.insert(&t.tasks, &id, &task)?;
    Ok(Some(Finished { state, ready_at }))
}

/// Puts `task` (already out of the ready index) back to wait until `run_at` when
/// `state` is `retry`, or ends it in `state`. Returns its new ready key, if any.
fn wait_or_end(
    tx: &Tx<'_>,
    task: &mut TaskRecord,
    state: TaskState,
    run_at: i64,
    policy: &state::RetryPolicy,
    now: i64,
) -> TxResult<Option<u64>> {
    if state == TaskState::Retry {
        transition(tx, task, TaskState::Retry)?;
        task.run_at = run_at;
        let key = ready_key(run_at);
        tx.insert(&tx.t().queue_ready, &(key, task.id), &())?;
        tx.mark_enqueued();
        Ok(Some(key))
    } else {
        end(tx, task, state, policy.result_ttl_ms, now)?;
        Ok(None)
    }
}

/// Records that attempt `attempt` of task `id` outlived its lease (its worker hung
/// past `lease_ms`): the attempt counts, and the task waits again from now — or
/// ends `failure` once out of attempts, `cancelled` if that was requested.
pub(crate) fn expire(
    tx: &Tx<'_>,
    id: u64,
    attempt: u32,
    policy: &state::RetryPolicy,
) -> TxResult<Option<Finished>> {
    let Some(mut task) = unready(tx, id, attempt)? else {
        return Ok(None);
    };
    let now = crate::store::now_ms();
    task.attempts = attempt;
    task.updated_at = now;
    task.last_error = Some("lease expired: the worker did not finish in time".into());
    let state = if task.cancel_requested {
        TaskState::Cancelled
    } else if task.attempts >= task.max_attempts {
        TaskState::Failure
    } else {
        TaskState::Retry
    };
    let ready_at = wait_or_end(tx, &mut task, state, now, policy, now)?;
    let state = task.state;
    tx.insert(&tx.t().tasks, &id, &task)?;
    Ok(Some(Finished { state, ready_at }))
}

/// Puts back a task that an older release left `started` with a stored lease (it
/// stopped or died under it): its interrupted attempt is given back, and it waits
/// again from now. Since leases live in memory, only data written before that
/// change has any. Returns whether the task was such a task.
pub(crate) fn release_stored_lease(
    tx: &Tx<'_>,
    lease_key: (u64, u64),
    policy: &state::RetryPolicy,
) -> TxResult<bool> {
    let t = tx.t();
    tx.remove(&t.queue_leased, &lease_key)?;
    let id = lease_key.1;
    let Some(mut task) = tx.get(&t.tasks, &id)? else {
        return Ok(false);
    };
    if task.state != TaskState::Started {
        return Ok(false);
    }
    let now = crate::store::now_ms();
    task.lease_until = None;
    task.attempts = task.attempts.saturating_sub(1);
    task.last_error = Some("interrupted: the server stopped during this attempt".into());
    task.updated_at = now;
    let state = if task.cancel_requested {
        TaskState::Cancelled
    } else {
        TaskState::Retry
    };
    wait_or_end(tx, &mut task, state, now, policy, now)?;
    tx.insert(&t.tasks, &id, &task)?;
    Ok(true)
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting and will never run.
    Cancelled,
    /// It is running; its handler has been told to stop, and it ends `cancelled`.
    Requested,
    /// It had already finished; nothing changed.
    AlreadyFinished(TaskState),
    /// No such task.
    NotFound,
}

/// Cancels a task; `running` says whether a worker holds it now (leases live in
/// memory, so the stored state of a running task is still `pending` or `retry`).
/// Persistent: a restart does not bring a cancelled task back, and a running task
/// whose cancellation was requested is cancelled instead of run if it waits again.
pub(crate) fn cancel(tx: &Tx<'_>, id: u64, running: bool, ttl_ms: i64) -> TxResult<CancelOutcome> {
    let t = tx.t();
    let Some(mut task) = tx.get(&t.tasks, &id)? else {
        return Ok(CancelOutcome::NotFound);
    };
    let now = crate::store::now_ms();
    match task.state {
        s if s.is_waiting() && running => {
            task.cancel_requested = true;
            tx.insert(&t.tasks, &id, &task)?;
            Ok(CancelOutcome::Requested)
        }
        s if s.is_waiting() => {
            tx.remove(&t.queue_ready, &(ready_key(task.run_at), id))?;
            release_unique(tx, &task)?;
            task.updated_at = now;
            task.last_error = Some("cancelled".into());
            end(tx, &mut task, TaskState::Cancelled, ttl_ms, now)?;
            tx.insert(&t.tasks, &id, &task)?;
            Ok(CancelOutcome::Cancelled)
        }
        // Left by an older release that stored leases; recovery puts these back
        // before anything runs, so this is only reached on such data.
        TaskState::Started => {
            task.cancel_requested = true;
            tx.insert(&t.tasks, &id, &task)?;
            Ok(CancelOutcome::Requested)
        }
        s => Ok(CancelOutcome::AlreadyFinished(s)),
    }
}

/// What a retry request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Requeued with a fresh set of attempts.
    Requeued,
    /// It cannot be retried from this state.
    NotRetryable(TaskState),
    /// No such task.
    NotFound,
}

/// Requeues a dead (`failure`), `cancelled` or backing-off (`retry`) task to run now,
/// with its attempts reset. Returns its new ready key with the outcome. The caller
/// makes sure no worker runs it meanwhile.
pub(crate) fn retry(tx: &Tx<'_>, id: u64) -> TxResult<(RetryOutcome, u64)> {
    let t = tx.t();
    let Some(mut task) = tx.get(&t.tasks, &id)? else {
        return Ok((RetryOutcome::NotFound, 0));
    };
    let now = crate::store::now_ms();
    match task.state {
        TaskState::Failure | TaskState::Cancelled | TaskState::Retry => {
            if task.state == TaskState::Retry {
                tx.remove(&t.queue_ready, &(ready_key(task.run_at), id))?;
            }
            tx.remove(&t.queue_dead, &id)?;
            transition(tx, &mut task, TaskState::Pending)?;
            task.attempts = 0;
            task.cancel_requested = false;
            task.run_at = now;
            task.updated_at = now;
            tx.insert(&t.queue_ready, &(ready_key(now), id), &())?;
            tx.insert(&t.tasks, &id, &task)?;
            tx.mark_enqueued();
            Ok((RetryOutcome::Requeued, ready_key(now)))
        }
        s => Ok((RetryOutcome::NotRetryable(s), 0)),
    }
}

/// Forgets task `id` if it finished more than `ttl_ms` ago; the expiry index entry
/// that pointed here is removed either way (a retried task left a stale one).
pub(crate) fn purge(
    tx: &Tx<'_>,
    expires_at: u64,
    id: u64,
    ttl_ms: i64,
    now: i64,
) -> TxResult<bool> {
    let t = tx.t();
    tx.remove(&t.queue_expiry, &(expires_at, id))?;
    let Some(task) = tx.get(&t.tasks, &id)? else {
        return Ok(false);
    };
    if !matches!(task.state, TaskState::Success | TaskState::Cancelled)
        || task.updated_at + ttl_ms > now
    {
        return Ok(false);
    }
    count(tx, task.state, &task.name, -1)?;
    tx.remove(&t.tasks, &id)?;
    Ok(true)
}

/// Forgets every task that finished more than `ttl_ms` ago (dead letters excepted).
/// Returns how many were forgotten.
pub async fn purge_expired(
    store: &crate::store::Store,
    ttl_ms: i64,
) -> Result<usize, crate::store::Error> {
    let mut total = 0;
    loop {
        let now = crate::store::now_ms();
        let due = store.tables().queue_expiry.range(
            &(0, 0),
            std::ops::Bound::Included(&(ready_key(now), u64::MAX)),
            1000,
        )?;
        if due.is_empty() {
            return Ok(total);
        }
        let keys: Vec<(u64, u64)> = due.into_iter().map(|(k, ())| k).collect();
        total += store
            .write(move |tx| {
                let mut n = 0;
                for (at, id) in &keys {
                    n += usize::from(purge(tx, *at, *id, ttl_ms, now)?);
                }
                Ok(n)
            })
            .await?;
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    /// Arguments whose `Serialize` implementation refuses.
    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }

    #[test]
    fn arguments_that_cannot_be_encoded_are_an_error_not_empty_arguments() {
        let err = TaskSpec::new("t", &Unencodable, 1).unwrap_err();
        assert!(err.to_string().contains("cannot be encoded"), "{err}");
        assert_eq!(err.name, "t");
        let spec = TaskSpec::new("t", &(7u64, "x"), 0).unwrap();
        assert_eq!(spec.args, postcard::to_stdvec(&(7u64, "x")).unwrap());
        assert_eq!(spec.max_attempts, 1, "at least one attempt");
    }
}
