//! The queue's tunables (`[queue]` in the config file). The queue owns them; the
//! config layer only reads them from the file and checks them against each other.

use serde::Deserialize;

/// The task queue's tunables (`[queue]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Attempts a task gets before it ends in `failure`.
    pub max_attempts: u32,
    /// Delay before retry n is `retry_base_ms * 2^(n-1)`, with jitter.
    pub retry_base_ms: u64,
    /// Cap on the retry delay.
    pub retry_max_ms: u64,
    /// Finished tasks are forgotten this long after they finish.
    pub result_ttl_s: u64,
    /// Keep the result of a task that belongs to no user (periodic tasks, the
    /// offline fallback's deliveries) for `result_ttl_s` after it succeeds, as for
    /// the others; by default such a task is forgotten as it succeeds.
    pub keep_unowned_results: bool,
    /// A task leased longer than this is given to another worker.
    pub lease_ms: u64,
    /// Each attempt is cancelled after this long.
    pub task_timeout_ms: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            result_ttl_s: 86_400,
            keep_unowned_results: false,
            lease_ms: 30_000,
            task_timeout_ms: 30_000,
        }
    }
}
