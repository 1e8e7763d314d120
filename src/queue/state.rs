//! The task state machine's decisions, free of I/O: what a finished attempt leads to,
//! and how long to wait before the next one.

use rand::Rng;

use super::{TaskRecord, TaskState};

/// Why an attempt failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// Human text, stored as `last_error`.
    pub message: String,
    /// `false` for errors no retry can fix (bad arguments, unknown task).
    pub retryable: bool,
}

impl TaskError {
    /// A failure worth retrying (a timeout, a refused connection, a 5xx).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::store::Error> for TaskError {
    fn from(e: crate::store::Error) -> Self {
        TaskError::retryable(e.to_string())
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler returned; JSON text of its result, if any.
    Success(Option<String>),
    /// The handler failed, timed out or panicked.
    Failed(TaskError),
}

/// The queue settings that decide retries and expiry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub base_ms: u64,
    /// Cap on any delay.
    pub max_ms: u64,
    /// How long finished tasks are kept.
    pub result_ttl_ms: i64,
    /// Whether a task that belongs to no user is kept after it succeeds (only the
    /// admin could ask for it); by default it is forgotten in its outcome's commit.
    pub keep_unowned_results: bool,
}

/// Delay before retry number `retry` (1 for the first retry): `base * 2^(retry-1)`,
/// capped at `max`, then scaled by a random factor in [0.75, 1.0] so that many tasks
/// failing together do not retry in lockstep. Below the cap, delays always grow: the
/// shortest possible delay n+1 (0.75 x 2d) exceeds the longest possible delay n (d).
pub fn backoff_ms(retry: u32, base_ms: u64, max_ms: u64) -> u64 {
    let exp = retry.saturating_sub(1).min(40);
    let full = base_ms.saturating_mul(1u64 << exp).min(max_ms);
    let factor: f64 = rand::thread_rng().gen_range(0.75..=1.0);
    ((full as f64) * factor) as u64
}

/// The state after an attempt.
pub(crate) struct Next {
    pub(crate) state: TaskState,
    pub(crate) run_at: i64,
}

pub(crate) fn next_state(task: &TaskRecord, outcome: &Outcome, p: &RetryPolicy, now: i64) -> Next {
    match outcome {
        Outcome::Success(_) => Next {
            state: TaskState::Success,
            run_at: task.run_at,
        },
        Outcome::Failed(e) if e.retryable && task.attempts < task.max_attempts => Next {
            state: TaskState::Retry,
            run_at: now + backoff_ms(task.attempts, p.base_ms, p.max_ms) as i64,
        },
        Outcome::Failed(_) => Next {
            state: TaskState::Failure,
            run_at: task.run_at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(attempts: u32, max_attempts: u32) -> TaskRecord {
        TaskRecord {
            id: 1,
            name: "t".into(),
            args: vec![],
            state: TaskState::Started,
            attempts,
            max_attempts,
            run_at: 0,
            last_error: None,
            result: None,
            created_at: 0,
            updated_at: 0,
            owner: None,
            unique: None,
            lease_until: None,
            cancel_requested: false,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base_ms: 100,
            max_ms: 1_000,
            result_ttl_ms: 10,
            keep_unowned_results: false,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for _ in 0..200 {
            let d1 = backoff_ms(1, 100, 1_000);
            let d2 = backoff_ms(2, 100, 1_000);
            let d3 = backoff_ms(3, 100, 1_000);
            assert!((75..=100).contains(&d1), "{d1}");
            assert!((150..=200).contains(&d2), "{d2}");
            assert!((300..=400).contains(&d3), "{d3}");
            assert!(d2 > d1 && d3 > d2);
            assert!(backoff_ms(30, 100, 1_000) <= 1_000);
            assert!(backoff_ms(u32::MAX, u64::MAX, u64::MAX) > 0);
        }
    }

    #[test]
    fn success_ends_the_task() {
        let n = next_state(&task(1, 3), &Outcome::Success(None), &policy(), 0);
        assert_eq!(n.state, TaskState::Success);
    }

    #[test]
    fn retryable_failures_retry_until_out_of_attempts() {
        let err = Outcome::Failed(TaskError::retryable("boom"));
        let n = next_state(&task(1, 3), &err, &policy(), 1_000);
        assert_eq!(n.state, TaskState::Retry);
        assert!(n.run_at >= 1_075 && n.run_at <= 1_100);
        let n = next_state(&task(3, 3), &err, &policy(), 1_000);
        assert_eq!(n.state, TaskState::Failure);
    }

    #[test]
    fn permanent_failures_do_not_retry() {
        let err = Outcome::Failed(TaskError::permanent("bad args"));
        assert_eq!(
            next_state(&task(1, 5), &err, &policy(), 0).state,
            TaskState::Failure
        );
    }

    #[test]
    fn states_round_trip_their_names() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskState::parse("done"), None);
    }
}
