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
//! - This module knows nothing of HTTP, websockets or the queue's policies, and
//!   imports nothing above it: its records ([`records`]), clock ([`time`]) and
//!   settings ([`StoreSettings`]) are its own, and no sled type leaves it.
//!
//! # The interface, for a second backend
//! What the rest of likewise relies on, and what another backend would have to give:
//! - **Typed tables** ([`Tables`], declared once by `tables!`): ordered maps from
//!   fixed-width big-endian keys to postcard records, with point reads, prefix counts
//!   and ascending/descending range scans outside transactions.
//! - **One writer, serialisable transactions** ([`Store::write`]): a change is a pure
//!   function of a transaction view ([`Tx`]: get, insert, remove, fresh ids) that may
//!   be re-run; changes are applied in submission order, many per transaction.
//! - **Durability on demand**: `write` answers after the change is on disk (sync
//!   mode); [`Store::write_lazy`] answers once committed, durable with the next flush,
//!   never out of commit order.
//! - **Ordered after-commit hand-off** ([`Store::write_then`]): work that must follow
//!   commit order runs on a publisher, never on the writer.
//! - **Consistent snapshots and bulk loads** ([`Frozen`], [`Loader`]) of raw records
//!   by table name, and an id floor, for backups and restores.
//! - **A schema version and migrations at open** ([`migrate`]).
//! - **Health** ([`Store::health`]): whether the backend currently takes writes.
//!
//! # Storage failures
//! When the disk is full or refuses a write, sled fails the commit or the flush and
//! from then on refuses every write until the database is reopened. The writer then
//! answers writes at once with [`Error::Degraded`], reports [`Health::Degraded`], and
//! probes the disk with a backoff (250 ms doubling to 2 s): once a small file can be
//! written and synced in the data directory again it reopens the database in place,
//! without a restart. What was committed but never flushed before the failure is lost
//! by the reopen, exactly as in a crash; nothing whose write was acknowledged in sync
//! mode is. Reads keep working on the failed database until the reopen.

mod keys;
pub mod migrate;
pub mod records;
pub mod snapshot;
mod table;
pub mod time;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;

pub use keys::Key;
pub use snapshot::{Frozen, FrozenTable, Loader};
pub use table::{Table, Tx, TxError, TxResult};
pub use time::{now_ms, Timestamp};
pub use writer::{Deferred, WriterStats};

/// Version of the records' layout on disk; bumped by every release that changes a
/// record, together with a step in [`migrate`].
pub const SCHEMA_VERSION: u32 = 2;

/// Durability of acknowledged writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A write is flushed to disk (group commit) before it is acknowledged.
    Sync,
    /// Writes are flushed in the background every `flush_every_ms`.
    Relaxed,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sync" => Ok(Self::Sync),
            "relaxed" => Ok(Self::Relaxed),
            other => Err(format!(
                "durability must be \"sync\" or \"relaxed\", not {other:?}"
            )),
        }
    }
}

/// How the store is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// Write durability.
    pub durability: Durability,
    /// Background flush period in `relaxed` mode.
    pub flush_every_ms: u64,
    /// Bytes of sled's page cache (sled's own default is 1 GiB; the cache grows to
    /// it and stays there, so it is most of the process's memory under load).
    pub cache_bytes: u64,
}

/// The default page cache: 16 MiB. sled's accounting counts less than the memory its
/// cache really takes (about three times as much was measured), so a small figure
/// here keeps the server near 200 MiB resident at a million likes (`cargo bench
/// --bench million`) without slowing the likes down.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            durability: Durability::Sync,
            flush_every_ms: 500,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Storage failures. None of these is the caller's fault; HTTP answers 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// sled reported an I/O or corruption error; the operation that failed changed
    /// nothing.
    #[error("storage error: {0}")]
    Sled(String),
    /// The change was committed, but the flush that makes it durable failed: it may
    /// or may not survive a crash or the reopen that follows the failure.
    #[error("the change was committed but could not be made durable: {0}")]
    NotDurable(String),
    /// The store is failing (the reason is given) and recovering; the operation was
    /// not attempted, so it changed nothing.
    #[error("storage is failing ({0}); nothing was attempted")]
    Degraded(String),
    /// A stored value could not be decoded.
    #[error("corrupt value in table {table}: {message}")]
    Decode {
        /// Which table.
        table: &'static str,
        /// What postcard said.
        message: String,
    },
    /// Another process holds the data directory's lock (another server, or a
    /// backup or restore reading it).
    #[error("the data directory is in use by another process")]
    InUse,
    /// The data directory was written by a newer likewise.
    #[error(
        "the data directory has schema version {found}, but this build of likewise \
         understands versions up to {SCHEMA_VERSION}: it was written by a newer release; \
         run that release (or restore a backup taken with this one)"
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
        match &e {
            // sled takes an exclusive, non-blocking lock on its files at open, and
            // wraps the OS's refusal in an error of its own whose text says so.
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                Error::InUse
            }
            _ => Error::Sled(describe(&e)),
        }
    }
}

/// A short operator-facing description of a sled failure ("the disk is full").
fn describe(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            "the disk is full".to_owned()
        }
        sled::Error::Io(io) => {
            // sled wraps the OS error in a custom one whose text is the inner error's
            // debug form; the kind is what says what happened.
            format!("an I/O error ({:?})", io.kind())
        }
        other => other.to_string(),
    }
}

/// Whether the store takes writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Writes are committed (and flushed in sync mode) normally.
    Ok,
    /// A storage failure; writes are refused until the database has been reopened.
    Degraded {
        /// What failed, for operators ("the disk is full").
        reason: String,
    },
}

/// Declares every table once: its field in [`Tables`], its name on disk (the field's
/// name), its key and value types, and its place in the order tables are opened,
/// listed, backed up and restored. New tables go at the end.
macro_rules! tables {
    ($( $(#[$doc:meta])* $name:ident : $key:ty => $value:ty, )*) => {
        /// Every table, typed. Indexes hold `()` or small values; records hold the
        /// postcard structs of [`records`].
        pub struct Tables {
            $( $(#[$doc])* pub $name: Table<$key, $value>, )*
        }

        /// The name of every table, in the order the store opens them. Restores
        /// accept records for these tables only.
        pub const TABLE_NAMES: &[&str] = &[$( stringify!($name), )*];

        impl Tables {
            /// Every table's tree in `db`, in table order.
            fn open_trees(db: &sled::Db) -> Result<Vec<sled::Tree>, Error> {
                Ok(vec![$( db.open_tree(stringify!($name))?, )*])
            }

            /// Points every table at its tree in `trees` (from [`Tables::open_trees`]).
            fn attach(&self, trees: &[sled::Tree]) {
                let mut trees = trees.iter().cloned();
                $( if let Some(tree) = trees.next() { self.$name.attach(tree); } )*
            }

            /// Drops every table's handle on the database.
            fn detach(&self) {
                $( self.$name.detach(); )*
            }

            fn open(db: &sled::Db) -> Result<(Tables, Vec<sled::Tree>), Error> {
                let mut trees = Vec::new();
                let tables = Tables {
                    $( $name: {
                        let tree = db.open_tree(stringify!($name))?;
                        trees.push(tree.clone());
                        Table::new(stringify!($name), tree, trees.len() - 1)
                    }, )*
                };
                Ok((tables, trees))
            }
        }
    };
}

tables! {
    /// Small settings: schema version, admin token hash.
    meta: String => Vec<u8>,
    /// user id → user.
    users: u64 => records::UserRecord,
    /// lower-cased name → user id.
    user_names: String => u64,
    /// SHA-256 of a session token → session.
    tokens: [u8; 32] => records::SessionRecord,
    /// post id → post (its counters are in `post_counts`).
    posts: u64 => records::PostRecord,
    /// (post, comment) → ().
    post_comments: (u64, u64) => (),
    /// (post, user) → when liked (ms).
    post_likes: (u64, u64) => i64,
    /// (post, user) → when collected (ms).
    post_collects: (u64, u64) => i64,
    /// (post, share id) → sharer.
    post_shares: (u64, u64) => u64,
    /// comment id → comment (its like count is in `comment_counts`).
    comments: u64 => records::CommentRecord,
    /// (comment, user) → when liked (ms).
    comment_likes: (u64, u64) => i64,
    /// message id → message.
    messages: u64 => records::MessageRecord,
    /// (lower user id, higher user id, message id) → ().
    conversations: (u64, u64, u64) => (),
    /// notification id → notification.
    notifications: u64 => records::NotificationRecord,
    /// (receiver, notification) → ().
    user_notifications: (u64, u64) => (),
    /// (receiver, notification) → () for unread ones only.
    user_unread: (u64, u64) => (),
    /// receiver → unread count.
    unread_counts: u64 => u64,
    /// Idempotency keys of effects (one notification per event) → the effect's id.
    effects: String => u64,
    /// task id → task.
    tasks: u64 => records::TaskRecord,
    /// (run at ms, task id) → () for tasks waiting to run.
    queue_ready: (u64, u64) => (),
    /// (lease deadline ms, task id) → () for running tasks.
    queue_leased: (u64, u64) => (),
    /// unique key → id of the waiting task holding it.
    queue_unique: String => u64,
    /// (expires at ms, task id) → () for finished tasks.
    queue_expiry: (u64, u64) => (),
    /// task id → () for tasks out of attempts (dead letters).
    queue_dead: u64 => (),
    /// "state\0name" → number of tasks in that state with that name.
    queue_counts: String => u64,
    /// schedule key → its last run.
    schedules: String => records::ScheduleRecord,
    /// post id → its exact counters (schema 2).
    post_counts: u64 => records::PostCounts,
    /// comment id → its like count (schema 2).
    comment_counts: u64 => u64,
    /// SHA-256 of a signed-out token → when that session would have expired (ms),
    /// so that presenting it again can be answered "session revoked".
    revoked_sessions: [u8; 32] => i64,
    /// user id → (ms, kept token hash): that user's sessions issued at or before
    /// the time are revoked, except the kept one (sign-out everywhere, password
    /// change).
    session_cutoffs: u64 => (i64, Option<[u8; 32]>),
    /// user id → () for users who chose not to be shown online.
    presence_hidden: u64 => (),
}

/// A cheap handle to the database; clone freely.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    cache_bytes: u64,
    /// The open database; `None` while it is being reopened after a failure (the
    /// writer swaps it).
    db: Arc<RwLock<Option<sled::Db>>>,
    tables: Arc<Tables>,
    writer: writer::Writer,
}

/// How sled opens the database in `dir` under `settings`: at open, and again when
/// the writer reopens it after a failure.
fn sled_config(dir: &Path, settings: &StoreSettings) -> sled::Config {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(settings.cache_bytes);
    match settings.durability {
        // The writer flushes every batch itself; sled's timer only adds writes.
        Durability::Sync => config.flush_every_ms(None),
        Durability::Relaxed => config.flush_every_ms(Some(settings.flush_every_ms.max(1))),
    }
}

/// Opens the database in `dir`, which a server has just closed, once more and
/// closes it again, so that the next start is quick: sled replays the log written
/// since its last snapshot into a new snapshot as it opens, and a long run leaves a
/// long log (about 2 s per GiB of data directory on the development machine). Done
/// at a graceful stop, the replay is paid there; after a crash the next start pays
/// it. Waits up to `wait` for the closed store's files to be let go (sled's
/// background threads end a moment after the last handle), then gives up with
/// [`Error::InUse`]; the next start replays the log then, as always.
pub fn checkpoint_closed(
    dir: &Path,
    settings: &StoreSettings,
    wait: std::time::Duration,
) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match sled_config(dir, settings).open().map_err(Error::from) {
            Ok(db) => {
                drop(db);
                return Ok(());
            }
            // No event says when another handle's threads let the lock go.
            Err(Error::InUse) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Store {
    /// Opens (or creates) the database in `dir` with default settings.
    pub fn open(dir: &Path, durability: Durability, flush_every_ms: u64) -> Result<Store, Error> {
        Store::open_with(
            dir,
            &StoreSettings {
                durability,
                flush_every_ms,
                ..StoreSettings::default()
            },
        )
    }

    /// Opens (or creates) the database in `dir`, migrates data written by an older
    /// release (refusing data from a newer one), and starts the writer thread and
    /// the publisher thread.
    pub fn open_with(dir: &Path, settings: &StoreSettings) -> Result<Store, Error> {
        let db = sled_config(dir, settings).open()?;
        // A probe interrupted by a crash may have left its file: sled's lock is ours
        // now, so no other writer is probing.
        writer::remove_probe_file(dir);
        let (tables, trees) = Tables::open(&db)?;
        migrate::run(&db, &tables, &trees)?;
        let next_id = writer::load_next_id(&db, &tables)?;
        let tables = Arc::new(tables);
        let slot = Arc::new(RwLock::new(Some(db.clone())));
        let reopen = {
            let dir: PathBuf = dir.to_owned();
            let settings = settings.clone();
            Box::new(move || sled_config(&dir, &settings).open())
        };
        let writer = writer::Writer::start(
            writer::Backend { db, trees },
            writer::Recovery {
                dir: dir.to_owned(),
                reopen,
                slot: slot.clone(),
            },
            tables.clone(),
            settings.durability,
            next_id,
        );
        let store = Store {
            inner: Arc::new(Inner {
                cache_bytes: settings.cache_bytes,
                db: slot,
                tables,
                writer,
            }),
        };
        Ok(store)
    }

    /// The open database, unless it is being reopened after a failure.
    fn db(&self) -> Result<sled::Db, Error> {
        self.inner
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                Error::Degraded("the database is being reopened after a storage failure".into())
            })
    }

    /// Whether the store currently takes writes. After a storage failure it reports
    /// [`Health::Degraded`] until the writer has reopened the database.
    pub fn health(&self) -> Health {
        self.inner.writer.health()
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
        answer.await.map_err(|_| Error::Closed)?
    }

    /// [`Store::exclusive`] for callers outside an async runtime (command-line tools).
    /// Must not be called from async code: it blocks the thread until the job has run.
    pub fn exclusive_blocking<T, F>(&self, job: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Frozen<'_>) -> T + Send + 'static,
    {
        let answer = self.inner.writer.submit_exclusive(job)?;
        answer.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Like [`Store::write`], and hands what `after` makes of the result to the
    /// store's publisher once the change is durable. `after` runs on the writer
    /// thread and must only move data out of the result (it must not block, lock
    /// or do I/O); the [`Deferred`] it returns runs on the publisher thread, one at a
    /// time, in commit order. So effects whose order must follow the commit order
    /// (pushing notifications: a client resuming after the highest id it saw must
    /// not miss a lower one pushed later) keep that order, while nothing they do —
    /// waiting for a lock a client holds, say — can slow a commit.
    pub async fn write_then<T, F, A>(&self, change: F, after: A) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
        A: FnOnce(&mut T) -> Option<Deferred> + Send + 'static,
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
        self.db()?.flush_async().await?;
        Ok(())
    }

    /// Stops the writer after it has committed and flushed everything submitted so
    /// far; logs a failure of that last flush. See [`Store::shut_down`].
    pub fn close(&self) {
        if let Err(e) = self.shut_down() {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    /// Stops the writer after it has committed everything submitted so far, and
    /// flushes. An error means that changes committed since the last successful
    /// flush may be lost: the last flush failed, or the store was failing when it
    /// stopped. Only the first call does the work; later ones answer `Ok`.
    pub fn shut_down(&self) -> Result<(), Error> {
        self.inner.writer.close()
    }

    /// Bytes of every key and value stored (walks every table on the writer thread,
    /// so it is one point in time): what sled's files hold besides overhead and
    /// garbage. `size_on_disk() / live_bytes()` is the space amplification.
    pub async fn live_bytes(&self) -> Result<u64, Error> {
        self.exclusive(|frozen| {
            let mut total = 0u64;
            for table in frozen.tables() {
                for (k, v) in table.entries().flatten() {
                    total += (k.len() + v.len()) as u64;
                }
            }
            total
        })
        .await
    }

    /// The page cache's size limit in bytes.
    pub fn cache_bytes(&self) -> u64 {
        self.inner.cache_bytes
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db()
            .ok()
            .and_then(|db| db.size_on_disk().ok())
            .unwrap_or(0)
    }
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
        assert_eq!(
            names,
            TABLE_NAMES
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(rows, 1);
        store.close();
    }

    #[tokio::test]
    async fn a_checkpoint_waits_for_the_store_to_be_let_go_and_keeps_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings::default();
        let store = Store::open_with(dir.path(), &settings).unwrap();
        for n in 0..100u64 {
            store
                .write(move |tx| tx.insert(&tx.t().unread_counts, &n, &(n * 2)))
                .await
                .unwrap();
        }
        let short = std::time::Duration::from_millis(50);
        assert!(
            matches!(
                checkpoint_closed(dir.path(), &settings, short),
                Err(Error::InUse)
            ),
            "an open store is never opened twice"
        );
        store.close();
        drop(store);
        checkpoint_closed(dir.path(), &settings, std::time::Duration::from_secs(10))
            .expect("the closed store is replayed once its files are let go");
        // Its own handle is let go when it returns: the next open, as at a start,
        // finds every write.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Store::open_with(dir.path(), &settings) {
                Ok(store) => break store,
                Err(Error::InUse) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        for n in 0..100u64 {
            assert_eq!(store.tables().unread_counts.get(&n).unwrap(), Some(n * 2));
        }
        store.close();
    }

    #[test]
    fn storage_failures_are_described_for_operators() {
        let full = sled::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(describe(&full), "the disk is full");
        assert!(matches!(Error::from(full), Error::Sled(m) if m == "the disk is full"));
        let other = sled::Error::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(describe(&other), "an I/O error (PermissionDenied)");
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
