//! The store: one sled database, its typed tables, and the single writer that commits
//! every change.
//!
//! # Durability contract
//! sled makes nothing durable until a flush. All writes therefore go through
//! [`Store::write`], which hands the change to the one writer thread
//! ([`writer`]). The writer applies every change waiting at that moment as ONE sled
//! transaction across all tables and, in [`Durability::Sync`] mode, flushes once before
//! answering any of them: an `Ok` from `write` in sync mode means the change is on
//! disk. In relaxed mode sled's background flush runs every `flush_every_ms`.
//!
//! # Rules enforced here
//! - A change is a pure closure over a [`Tx`]: sled may run it more than once, so it
//!   must not have side effects beyond the transaction, must not await, and must never
//!   touch a plain [`sled::Tree`] (that deadlocks). Reads that need ordered scans happen
//!   before the write, on the plain tables.
//! - Keys are big-endian so that byte order is numeric order; newest-first listings
//!   are reverse ranges. Values are postcard.
//! - This module knows nothing of HTTP, websockets or the queue's policies.

mod keys;
pub mod snapshot;
mod table;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

pub use keys::Key;
pub use snapshot::{Frozen, FrozenTable, Loader};
pub use table::{Table, Tx, TxResult};
pub use writer::WriterStats;

use crate::config::Durability;

/// Version of the on-disk layout; bumped by every migration.
pub const SCHEMA_VERSION: u32 = 1;

/// The name of every table, in the order the store opens them (the order of
/// [`Tables`]'s fields). Restores accept records for these tables only.
pub const TABLE_NAMES: [&str; 26] = [
    "meta",
    "users",
    "user_names",
    "tokens",
    "posts",
    "post_comments",
    "post_likes",
    "post_collects",
    "post_shares",
    "comments",
    "comment_likes",
    "messages",
    "conversations",
    "notifications",
    "user_notifications",
    "user_unread",
    "unread_counts",
    "effects",
    "tasks",
    "queue_ready",
    "queue_leased",
    "queue_unique",
    "queue_expiry",
    "queue_dead",
    "queue_counts",
    "schedules",
];

/// Storage failures. None of these is the caller's fault; HTTP answers 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// sled reported an I/O or corruption error.
    #[error("storage error: {0}")]
    Sled(String),
    /// A stored value could not be decoded.
    #[error("corrupt value in table {table}: {message}")]
    Decode {
        /// Which table.
        table: &'static str,
        /// What postcard said.
        message: String,
    },
    /// The data directory was written by a newer likewise.
    #[error(
        "data directory has schema version {found}, this build understands up to {SCHEMA_VERSION}"
    )]
    Schema {
        /// Version found on disk.
        found: u32,
    },
    /// The writer has stopped (the server is shutting down).
    #[error("the store is shutting down")]
    Closed,
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Sled(e.to_string())
    }
}

/// Every table, typed. Indexes hold `()` or small values; records hold postcard structs.
pub struct Tables {
    /// Small settings: schema version, admin token hash.
    pub meta: Table<String, Vec<u8>>,
    /// user id → user.
    pub users: Table<u64, crate::domain::records::UserRecord>,
    /// lower-cased name → user id.
    pub user_names: Table<String, u64>,
    /// SHA-256 of a session token → session.
    pub tokens: Table<[u8; 32], crate::domain::records::SessionRecord>,
    /// post id → post.
    pub posts: Table<u64, crate::domain::Post>,
    /// (post, comment) → ().
    pub post_comments: Table<(u64, u64), ()>,
    /// (post, user) → when liked (ms).
    pub post_likes: Table<(u64, u64), i64>,
    /// (post, user) → when collected (ms).
    pub post_collects: Table<(u64, u64), i64>,
    /// (post, share id) → sharer.
    pub post_shares: Table<(u64, u64), u64>,
    /// comment id → comment.
    pub comments: Table<u64, crate::domain::Comment>,
    /// (comment, user) → when liked (ms).
    pub comment_likes: Table<(u64, u64), i64>,
    /// message id → message.
    pub messages: Table<u64, crate::domain::Message>,
    /// (lower user id, higher user id, message id) → ().
    pub conversations: Table<(u64, u64, u64), ()>,
    /// notification id → notification.
    pub notifications: Table<u64, crate::domain::Notification>,
    /// (receiver, notification) → ().
    pub user_notifications: Table<(u64, u64), ()>,
    /// (receiver, notification) → () for unread ones only.
    pub user_unread: Table<(u64, u64), ()>,
    /// receiver → unread count.
    pub unread_counts: Table<u64, u64>,
    /// Idempotency keys of effects (one notification per event) → the effect's id.
    pub effects: Table<String, u64>,
    /// task id → task.
    pub tasks: Table<u64, crate::queue::TaskRecord>,
    /// (run at ms, task id) → () for tasks waiting to run.
    pub queue_ready: Table<(u64, u64), ()>,
    /// (lease deadline ms, task id) → () for running tasks.
    pub queue_leased: Table<(u64, u64), ()>,
    /// unique key → id of the waiting task holding it.
    pub queue_unique: Table<String, u64>,
    /// (expires at ms, task id) → () for finished tasks.
    pub queue_expiry: Table<(u64, u64), ()>,
    /// task id → () for tasks out of attempts (dead letters).
    pub queue_dead: Table<u64, ()>,
    /// "state\0name" → number of tasks in that state with that name.
    pub queue_counts: Table<String, u64>,
    /// schedule key → its last run.
    pub schedules: Table<String, crate::queue::ScheduleRecord>,
}

/// A cheap handle to the database; clone freely.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tables: Arc<Tables>,
    writer: writer::Writer,
}

impl Store {
    /// Opens (or creates) the database in `dir` and starts its writer thread.
    pub fn open(dir: &Path, durability: Durability, flush_every_ms: u64) -> Result<Store, Error> {
        let mut config = sled::Config::new().path(dir);
        config = match durability {
            // The writer flushes every batch itself; sled's timer only adds writes.
            Durability::Sync => config.flush_every_ms(None),
            Durability::Relaxed => config.flush_every_ms(Some(flush_every_ms.max(1))),
        };
        let db = config.open()?;
        let mut trees = Vec::new();
        let mut open = |name: &'static str| -> Result<(sled::Tree, usize), Error> {
            let tree = db.open_tree(name)?;
            trees.push(tree.clone());
            Ok((tree, trees.len() - 1))
        };
        macro_rules! table {
            ($name:literal) => {{
                let (tree, idx) = open($name)?;
                Table::new($name, tree, idx)
            }};
        }
        let tables = Tables {
            meta: table!("meta"),
            users: table!("users"),
            user_names: table!("user_names"),
            tokens: table!("tokens"),
            posts: table!("posts"),
            post_comments: table!("post_comments"),
            post_likes: table!("post_likes"),
            post_collects: table!("post_collects"),
            post_shares: table!("post_shares"),
            comments: table!("comments"),
            comment_likes: table!("comment_likes"),
            messages: table!("messages"),
            conversations: table!("conversations"),
            notifications: table!("notifications"),
            user_notifications: table!("user_notifications"),
            user_unread: table!("user_unread"),
            unread_counts: table!("unread_counts"),
            effects: table!("effects"),
            tasks: table!("tasks"),
            queue_ready: table!("queue_ready"),
            queue_leased: table!("queue_leased"),
            queue_unique: table!("queue_unique"),
            queue_expiry: table!("queue_expiry"),
            queue_dead: table!("queue_dead"),
            queue_counts: table!("queue_counts"),
            schedules: table!("schedules"),
        };
        check_schema(&tables)?;
        let tables = Arc::new(tables);
        let writer = writer::Writer::start(db.clone(), trees, tables.clone(), durability);
        let store = Store {
            inner: Arc::new(Inner { db, tables, writer }),
        };
        Ok(store)
    }

    /// The typed tables, for reads (and for naming tables inside [`Store::write`]).
    pub fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    /// Applies `change` in the next group-committed transaction and returns what it
    /// returned, once the transaction is committed (and, in sync mode, flushed).
    ///
    /// `change` may run more than once; see the module rules.
    pub async fn write<T, F>(&self, change: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
    {
        self.inner.writer.submit(change).await
    }

    /// Runs `job` alone on the writer thread: after every write submitted before it has
    /// been committed (and flushed in sync mode), and before any later one. The job
    /// gets a read-only [`Frozen`] view of all tables, so what it reads is one
    /// consistent point in time. Writes wait while it runs: keep it to a local scan.
    pub async fn exclusive<T, F>(&self, job: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Frozen<'_>) -> T + Send + 'static,
    {
        let answer = self.inner.writer.submit_exclusive(job)?;
        answer.await.map_err(|_| Error::Closed)
    }

    /// [`Store::exclusive`] for callers outside an async runtime (command-line tools).
    /// Must not be called from async code: it blocks the thread until the job has run.
    pub fn exclusive_blocking<T, F>(&self, job: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Frozen<'_>) -> T + Send + 'static,
    {
        let answer = self.inner.writer.submit_exclusive(job)?;
        answer.blocking_recv().map_err(|_| Error::Closed)
    }

    /// Like [`Store::write`], and runs `after` on the result once the change is
    /// durable: on the writer thread, in commit order, before the caller is answered.
    /// For effects whose order must follow the commit order (pushing notifications:
    /// a client resuming after the highest id it saw must not miss a lower one
    /// pushed later). `after` must be quick and must not block.
    pub async fn write_then<T, F, A>(&self, change: F, after: A) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        self.inner.writer.submit_then(change, Box::new(after)).await
    }

    /// Like [`Store::write`], but answered as soon as the change is committed, without
    /// waiting for a flush even in sync mode. The change becomes durable with the next
    /// flush (any later [`Store::write`] in sync mode, sled's background flush, or
    /// [`Store::close`]), and changes reach the disk in commit order. Only for changes
    /// whose loss in a crash is harmless, such as the queue's leases and acks:
    /// delivery is at least once, so a lost ack means the task runs again.
    pub async fn write_lazy<T, F>(&self, change: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
    {
        self.inner.writer.submit_lazy(change).await
    }

    /// Registers a callback run by the writer after every commit that enqueued a task.
    pub fn on_enqueue(&self, wake: Arc<tokio::sync::Notify>) {
        self.inner.writer.set_enqueue_hook(wake);
    }

    /// Counters of the group-commit writer.
    pub fn writer_stats(&self) -> &WriterStats {
        self.inner.writer.stats()
    }

    /// Flushes everything to disk now.
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// Stops the writer after it has committed and flushed everything submitted so far.
    pub fn close(&self) {
        self.inner.writer.close();
        if let Err(e) = self.inner.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
}

fn check_schema(t: &Tables) -> Result<(), Error> {
    let key = "schema_version".to_owned();
    match t.meta.get(&key)? {
        None => {
            // A fresh directory: stamp it. Outside the writer because nothing runs yet.
            t.meta
                .insert_at_startup(&key, &SCHEMA_VERSION.to_be_bytes().to_vec())?;
            Ok(())
        }
        Some(bytes) => {
            let found = bytes
                .as_slice()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| Error::Decode {
                    table: "meta",
                    message: "schema_version is not 4 bytes".into(),
                })?;
            if found > SCHEMA_VERSION {
                return Err(Error::Schema { found });
            }
            Ok(())
        }
    }
}

/// Milliseconds since the Unix epoch, the store's clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn table_names_match_the_opened_tables_and_exclusive_jobs_see_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Sync, 500).unwrap();
        store
            .write(|tx| tx.insert(&tx.t().unread_counts, &7u64, &3u64))
            .await
            .unwrap();
        let (names, rows) = store
            .exclusive(|frozen| {
                let mut names = Vec::new();
                let mut rows = 0;
                for table in frozen.tables() {
                    names.push(table.name().to_owned());
                    if table.name() == "unread_counts" {
                        rows += table.entries().count();
                    }
                }
                (names, rows)
            })
            .await
            .unwrap();
        assert_eq!(names, TABLE_NAMES.map(str::to_owned).to_vec());
        assert_eq!(rows, 1);
        store.close();
    }

    #[test]
    fn a_loaded_database_hands_out_ids_above_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut loader = Loader::create(dir.path()).unwrap();
        loader.insert("users", b"k", b"v").unwrap();
        assert!(loader.insert("nonsense", b"k", b"v").is_err());
        assert_eq!(loader.finish(dir.path(), 1 << 40).unwrap(), 1);
        {
            let db = sled::open(dir.path()).unwrap();
            assert!(db.generate_id().unwrap() >= 1 << 40);
            assert_eq!(
                db.open_tree("users").unwrap().get(b"k").unwrap().unwrap(),
                b"v"
            );
        }
        // A floor that is not a multiple of sled's interval, then a reopen and a
        // million more ids: sled stays consistent.
        let other = tempfile::tempdir().unwrap();
        Loader::create(other.path())
            .unwrap()
            .finish(other.path(), 1_234_567)
            .unwrap();
        let db = sled::open(other.path()).unwrap();
        let mut last = 0;
        for _ in 0..1_100_000 {
            last = db.generate_id().unwrap();
        }
        assert!(last > 1_234_567 + 1_000_000);
        db.flush().unwrap();
        drop(db);
        let db = sled::open(other.path()).unwrap();
        assert!(db.generate_id().unwrap() > last);
    }
}
