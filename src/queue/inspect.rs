//! Looking into the queue: counts per state and task name, worker use, rates over
//! time, and task listings, for the admin API, the dashboard and `/metrics`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::worker::WorkerPool;
use super::{TaskRecord, TaskState};
use crate::store::now_ms;

/// Seconds of per-second history kept for charts.
pub const HISTORY_SECONDS: usize = 600;

/// Most task records one listing walks through looking for matches.
const MAX_SCAN: usize = 100_000;

/// One per-second sample of the pool's totals.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at_ms: i64,
    completed: u64,
    failed: u64,
    retried: u64,
}

/// Tasks finished in one second.
#[derive(Debug, Clone, Serialize)]
pub struct RatePoint {
    /// Second's end, ms since the epoch.
    pub t: i64,
    /// Attempts that succeeded.
    pub completed: u64,
    /// Tasks that ended in `failure`.
    pub failed: u64,
    /// Attempts that failed and will be retried.
    pub retried: u64,
}

/// A snapshot of the queue and its workers.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    /// Tasks per state.
    pub depth: BTreeMap<&'static str, u64>,
    /// Tasks per task name, then per state.
    pub by_name: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Worker use.
    pub workers: WorkerUse,
    /// Totals since start.
    pub totals: Totals,
    /// Per-second rates over the last 10 seconds.
    pub rates: Rates,
}

/// Worker use.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerUse {
    /// Configured concurrency.
    pub total: u64,
    /// Running an attempt.
    pub busy: u64,
    /// Free.
    pub idle: u64,
}

/// Totals since the process started.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Attempts that succeeded.
    pub completed: u64,
    /// Tasks that ended in `failure`.
    pub failed: u64,
    /// Attempts that failed and will be retried.
    pub retried: u64,
}

/// Per-second rates.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    /// Completed per second.
    pub completed_per_s: f64,
    /// Failed per second.
    pub failed_per_s: f64,
    /// Retried per second.
    pub retried_per_s: f64,
}

impl WorkerPool {
    fn sample(&self) -> Sample {
        let s = self.stats();
        Sample {
            at_ms: now_ms(),
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            retried: s.retried.load(Ordering::Relaxed),
        }
    }

    pub(super) async fn sample_loop(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.stop_leasing.cancelled() => return,
            }
            let sample = self.sample();
            let mut h = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
            h.push_back(sample);
            while h.len() > HISTORY_SECONDS + 1 {
                h.pop_front();
            }
        }
    }

    /// Tasks finished per second over the last `HISTORY_SECONDS` seconds.
    pub fn history(&self) -> Vec<RatePoint> {
        let h = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
        h.iter()
            .zip(h.iter().skip(1))
            .map(|(a, b)| RatePoint {
                t: b.at_ms,
                completed: b.completed - a.completed,
                failed: b.failed - a.failed,
                retried: b.retried - a.retried,
            })
            .collect()
    }

    fn rates(&self) -> Rates {
        let now = self.sample();
        let h = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
        let from = h
            .iter()
            .rev()
            .nth(10)
            .or_else(|| h.front())
            .copied()
            .unwrap_or(now);
        let secs = ((now.at_ms - from.at_ms) as f64 / 1000.0).max(1.0);
        Rates {
            completed_per_s: (now.completed - from.completed) as f64 / secs,
            failed_per_s: (now.failed - from.failed) as f64 / secs,
            retried_per_s: (now.retried - from.retried) as f64 / secs,
        }
    }

    /// A snapshot of depths, worker use, totals and rates.
    pub fn queue_stats(&self) -> Result<QueueStats, crate::store::Error> {
        let mut depth: BTreeMap<&'static str, u64> =
            TaskState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut by_name: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
        let counts = self.inner.store.tables().queue_counts.range(
            &String::new(),
            Bound::Unbounded,
            usize::MAX,
        )?;
        for (key, n) in counts {
            let Some((state, name)) = key.split_once('\0') else {
                continue;
            };
            let Some(state) = TaskState::parse(state) else {
                continue;
            };
            *depth.entry(state.as_str()).or_insert(0) += n;
            *by_name
                .entry(name.to_owned())
                .or_default()
                .entry(state.as_str())
                .or_insert(0) += n;
        }
        // A running task is stored as waiting; its lease, held here, says `started`.
        for lease in self.leases().running.values().filter(|l| l.is_started()) {
            for counts in [&mut depth, by_name.entry(lease.name.clone()).or_default()] {
                let waiting = counts.entry(lease.waited_as.as_str()).or_insert(0);
                *waiting = waiting.saturating_sub(1);
                *counts.entry(TaskState::Started.as_str()).or_insert(0) += 1;
            }
        }
        let s = self.stats();
        let busy = s.busy.load(Ordering::Relaxed);
        let total = self.workers() as u64;
        Ok(QueueStats {
            depth,
            by_name,
            workers: WorkerUse {
                total,
                busy,
                idle: total.saturating_sub(busy),
            },
            totals: Totals {
                completed: s.completed.load(Ordering::Relaxed),
                failed: s.failed.load(Ordering::Relaxed),
                retried: s.retried.load(Ordering::Relaxed),
            },
            rates: self.rates(),
        })
    }

    /// Tasks newest first, filtered by state and name, at most `limit`.
    pub fn list(
        &self,
        state: Option<TaskState>,
        name: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, crate::store::Error> {
        let t = self.inner.store.tables();
        let keep = |task: &TaskRecord| {
            state.is_none_or(|s| task.state == s) && name.is_none_or(|n| task.name == n)
        };
        let mut out = Vec::new();
        if state == Some(TaskState::Started) {
            // Leases live in memory: the running tasks are the pool's.
            let mut ids: Vec<u64> = self
                .leases()
                .running
                .iter()
                .filter(|(_, l)| l.is_started())
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            for id in ids {
                if let Some(task) = t.tasks.get(&id)? {
                    let task = self.overlay(task);
                    if keep(&task) {
                        out.push(task);
                        if out.len() == limit {
                            break;
                        }
                    }
                }
            }
            return Ok(out);
        }
        if state == Some(TaskState::Failure) {
            for item in t
                .queue_dead
                .range_rev(Bound::Unbounded, Bound::Unbounded, MAX_SCAN)?
            {
                if let Some(task) = t.tasks.get(&item.0)? {
                    if keep(&task) {
                        out.push(task);
                        if out.len() == limit {
                            break;
                        }
                    }
                }
            }
            return Ok(out);
        }
        let mut before = Bound::Unbounded;
        let mut scanned = 0;
        while out.len() < limit && scanned < MAX_SCAN {
            let chunk = t.tasks.range_rev(Bound::Unbounded, before.as_ref(), 1000)?;
            let Some(last) = chunk.last().map(|(id, _)| *id) else {
                break;
            };
            scanned += chunk.len();
            for (_, task) in chunk {
                let task = self.overlay(task);
                if keep(&task) {
                    out.push(task);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            before = Bound::Excluded(last);
        }
        Ok(out)
    }
}
