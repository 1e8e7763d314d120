//! Periodic tasks, like celery beat. Each schedule's last run is stored, and the
//! enqueue of a run and the update of its last-run time are ONE transaction, so a
//! restart neither skips a run (a run that fell due while the server was down runs
//! once at start) nor doubles one (a run already enqueued is recorded). A run is
//! skipped while the previous run of the same schedule is still waiting or running.

use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{enqueue, is_finished, TaskSpec};
use crate::store::{now_ms, Store};

pub use crate::store::records::ScheduleRecord;

/// A periodic task (`[[schedules]]` in the config file), like celery beat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Registered task name to run.
    pub task: String,
    /// Period in seconds.
    pub every_s: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    task: String,
    every_ms: i64,
}

/// The scheduler.
pub struct Beat {
    store: Store,
    entries: Vec<Entry>,
    max_attempts: u32,
}

impl Beat {
    /// A scheduler for `schedules`, each naming a registered task that takes no
    /// arguments (`periodic` lists those).
    pub fn new(
        store: Store,
        schedules: &[ScheduleSettings],
        periodic: &[&str],
        max_attempts: u32,
    ) -> Result<Beat, String> {
        let mut entries = Vec::new();
        for s in schedules {
            if !periodic.contains(&s.task.as_str()) {
                return Err(format!(
                    "schedule names task {:?}, which cannot run periodically; choose one of: {}",
                    s.task,
                    periodic.join(", ")
                ));
            }
            entries.push(Entry {
                key: format!("{}@{}s", s.task, s.every_s),
                task: s.task.clone(),
                every_ms: (s.every_s as i64).saturating_mul(1000),
            });
        }
        Ok(Beat {
            store,
            entries,
            max_attempts,
        })
    }

    /// Number of schedules.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no schedules.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Fires due schedules until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.entries.is_empty() {
            return;
        }
        loop {
            let now = now_ms();
            let mut next_due = now + 60_000;
            for entry in &self.entries {
                let due = match self.store.tables().schedules.get(&entry.key) {
                    Ok(rec) => rec.map_or(now, |r| r.last_run + entry.every_ms),
                    Err(e) => {
                        tracing::error!(error = %e, "reading schedule state failed");
                        now + 1000
                    }
                };
                if due <= now {
                    if let Err(e) = self.fire(entry).await {
                        tracing::error!(error = %e, schedule = %entry.key, "firing a schedule failed");
                    }
                    next_due = next_due.min(now + entry.every_ms);
                } else {
                    next_due = next_due.min(due);
                }
            }
            let wait = Duration::from_millis((next_due - now_ms()).clamp(10, 60_000) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn fire(&self, entry: &Entry) -> Result<Fired, crate::store::Error> {
        let e = entry.clone();
        let max_attempts = self.max_attempts;
        let fired = self
            .store
            .write(move |tx| {
                let t = tx.t();
                let now = now_ms();
                let mut rec = tx.get(&t.schedules, &e.key)?.unwrap_or_default();
                if rec.last_run + e.every_ms > now && rec.last_run != 0 {
                    return Ok(Fired::NotDue);
                }
                if let Some(last) = rec.last_task {
                    if let Some(task) = tx.get(&t.tasks, &last)? {
                        if !is_finished(task.state) {
                            rec.last_run = now;
                            rec.skipped += 1;
                            tx.insert(&t.schedules, &e.key, &rec)?;
                            return Ok(Fired::Skipped { previous: last });
                        }
                    }
                }
                let id = enqueue(tx, &TaskSpec::new(&e.task, &(), max_attempts)?)?;
                rec.last_run = now;
                rec.last_task = Some(id);
                tx.insert(&t.schedules, &e.key, &rec)?;
                Ok(Fired::Enqueued(id))
            })
            .await?;
        match fired {
            Fired::Enqueued(id) => {
                tracing::debug!(schedule = %entry.key, task_id = id, "schedule fired")
            }
            Fired::Skipped { previous } => tracing::info!(
                schedule = %entry.key,
                previous_task_id = previous,
                "schedule skipped: its previous run has not finished"
            ),
            Fired::NotDue => {
                tracing::debug!(schedule = %entry.key, "schedule not due: it already ran")
            }
        }
        Ok(fired)
    }
}

/// What one attempt to fire a schedule did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    /// A run was enqueued: this task.
    Enqueued(u64),
    /// The previous run (this task) is still waiting or running: no new run.
    Skipped {
        /// The unfinished previous run.
        previous: u64,
    },
    /// Another firing already recorded this period's run.
    NotDue,
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::queue::TaskState;
    use crate::store::Durability;

    fn beat(store: &Store) -> Beat {
        let schedules = [ScheduleSettings {
            task: "tick".into(),
            every_s: 60,
        }];
        Beat::new(store.clone(), &schedules, &["tick"], 3).unwrap()
    }

    /// Collects what is logged on this thread while it lives.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn a_schedule_already_run_this_period_is_not_reported_as_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Sync, 500).unwrap();
        let beat = beat(&store);
        let entry = beat.entries[0].clone();
        // This period's run is recorded, and no task of it is waiting.
        let key = entry.key.clone();
        store
            .write(move |tx| {
                let rec = ScheduleRecord {
                    last_run: now_ms(),
                    ..ScheduleRecord::default()
                };
                tx.insert(&tx.t().schedules, &key, &rec)
            })
            .await
            .unwrap();
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let fired = beat.fire(&entry).await.unwrap();
        assert_eq!(fired, Fired::NotDue);
        assert!(!log.text().contains("skipped"), "{}", log.text());
        let rec = store.tables().schedules.get(&entry.key).unwrap().unwrap();
        assert_eq!(rec.skipped, 0);
        store.close();
    }

    #[tokio::test]
    async fn a_due_schedule_enqueues_one_run_and_skips_while_it_is_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Sync, 500).unwrap();
        let beat = beat(&store);
        let entry = beat.entries[0].clone();
        let Fired::Enqueued(id) = beat.fire(&entry).await.unwrap() else {
            panic!("a schedule that never ran is due");
        };
        let task = store.tables().tasks.get(&id).unwrap().unwrap();
        assert_eq!(
            (task.name.as_str(), task.state),
            ("tick", TaskState::Pending)
        );
        assert_eq!(task.max_attempts, 3);
        // Due again (its period has passed), but its run has not finished.
        let key = entry.key.clone();
        store
            .write(move |tx| {
                let t = tx.t();
                let mut rec = tx.get(&t.schedules, &key)?.unwrap();
                rec.last_run -= 61_000;
                tx.insert(&t.schedules, &key, &rec)
            })
            .await
            .unwrap();
        assert_eq!(
            beat.fire(&entry).await.unwrap(),
            Fired::Skipped { previous: id }
        );
        let rec = store.tables().schedules.get(&entry.key).unwrap().unwrap();
        assert_eq!((rec.skipped, rec.last_task), (1, Some(id)));
        store.close();
    }
}
