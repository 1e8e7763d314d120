//! The group-commit writer: the only code that commits to sled.
//!
//! Callers submit a change (a pure closure over [`Tx`]) and await its result. One
//! thread takes everything waiting at that moment (up to [`MAX_BATCH`]), applies the
//! changes in order inside ONE transaction, flushes once in sync mode, and only then
//! answers each caller with its own result. While it flushes, new submissions queue
//! up and form the next batch, so under load hundreds of writes share one transaction
//! and one fsync, and when idle a lone write pays for exactly one.
//!
//! A change submitted with [`Writer::submit_lazy`] does not need the flush: a batch
//! made only of such changes is answered once committed. It becomes durable with the
//! next flush, which covers every earlier commit, so order on disk is kept; when the
//! writer runs out of work it flushes what such changes left, so they do not wait long.
//!
//! A change that aborts (a stored value that does not decode) would abort its whole
//! batch; the batch is then re-run one change at a time so that only the broken change
//! fails.
//!
//! A change may come with an after-commit hook ([`super::Store::write_then`]). The
//! writer runs the hook once the change is durable, in commit order; the hook only
//! moves data out of the result and returns a [`Deferred`] closure, which the writer
//! hands to the *publisher*: a thread of its own that runs them one at a time in the
//! order received. Pushes to clients happen there, so whatever a client does (hold a
//! lock, stop reading) can delay other pushes but never a commit.
//!
//! Besides changes, the writer runs *exclusive jobs* ([`super::Store::exclusive`]):
//! the batch in progress (which holds everything submitted before the job) is
//! committed and flushed first, then the job runs alone on this thread with no
//! transaction open, so no write can happen while it reads. Later changes wait for it.
//!
//! # Failures and recovery
//! A failed commit or flush (a full disk, an I/O error) leaves sled refusing every
//! later write until the database is reopened. The writer then enters the *failing*
//! state: it answers every change at once with [`Error::Degraded`] (nothing is
//! attempted, nothing waits), and probes with a backoff from [`FIRST_PROBE`] doubling
//! to [`MAX_PROBE`]: a probe writes and syncs a small file in the data directory, and
//! only once that works drops every handle on the failed database (the tables
//! detach, so reads answer `Degraded` for that moment), reopens it, and proves it
//! takes a flushed write before the tables attach again. A change answered by a
//! failed flush gets [`Error::NotDurable`]: it was committed in memory, so whether it
//! is still there after the reopen depends on what reached the disk.

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sled::transaction::{TransactionError, Transactional};
use tokio::sync::{oneshot, Notify};

use super::table::{Tx, TxResult, TxTally};
use super::Durability;
use super::Error;

/// Most changes applied in one transaction.
pub const MAX_BATCH: usize = 2048;

/// Wait before the first probe after a storage failure.
pub const FIRST_PROBE: Duration = Duration::from_millis(250);

/// Longest wait between two probes while the store is failing.
pub const MAX_PROBE: Duration = Duration::from_secs(2);

/// Bytes a probe writes and syncs: the disk must take at least this much again
/// before the database is reopened.
const PROBE_BYTES: usize = 256 * 1024;

/// Attempts to open the database again within one probe, [`REOPEN_PAUSE`] apart.
const REOPEN_TRIES: u32 = 10;

/// Pause between two attempts to open the database within one probe.
const REOPEN_PAUSE: Duration = Duration::from_millis(20);

/// The probe's file in the data directory (removed right after each probe).
const PROBE_FILE: &str = ".likewise-probe";

/// Counters describing the writer's work; cheap to read at any time.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Changes committed (or failed) so far.
    pub changes: AtomicU64,
    /// sled transactions committed.
    pub transactions: AtomicU64,
    /// Flushes performed by the writer (sync mode).
    pub flushes: AtomicU64,
    /// Largest batch seen.
    pub max_batch: AtomicU64,
    /// Changes that failed with a storage error.
    pub failures: AtomicU64,
    /// Keys inserted or removed by committed transactions (each key counted once per
    /// transaction: sled writes only its last value).
    pub key_writes: AtomicU64,
    /// Storage failures that put the store in the failing state.
    pub storage_failures: AtomicU64,
    /// Times the database was reopened after a failure.
    pub recoveries: AtomicU64,
}

trait Job: Send {
    fn apply(&self, tx: &Tx<'_>) -> TxResult<()>;
    fn needs_flush(&self) -> bool;
    fn finish(self: Box<Self>, outcome: Result<(), Error>, publisher: &Publisher);
}

/// The writer's end of the publisher thread's queue.
pub(super) struct Publisher(Option<std::sync::mpsc::Sender<Deferred>>);

impl Publisher {
    fn send(&self, work: Deferred) {
        if let Some(sender) = &self.0 {
            // Only fails once the publisher has stopped (shutdown): nothing to push to.
            let _ = sender.send(work);
        }
    }
}

/// Work that must follow the commit order but may take its time: run by the
/// publisher thread, one at a time, in the order the changes that made it committed.
pub type Deferred = Box<dyn FnOnce() + Send>;

/// Runs on the writer thread once a change is durable, before its caller is answered:
/// takes what the publisher needs out of the result.
pub(super) type AfterCommit<T> = Box<dyn FnOnce(&mut T) -> Option<Deferred> + Send>;

struct Pending<T, F> {
    change: F,
    out: RefCell<Option<T>>,
    flush: bool,
    after: Option<AfterCommit<T>>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: Fn(&Tx<'_>) -> TxResult<T> + Send,
{
    fn apply(&self, tx: &Tx<'_>) -> TxResult<()> {
        let value = (self.change)(tx)?;
        *self.out.borrow_mut() = Some(value);
        Ok(())
    }

    fn needs_flush(&self) -> bool {
        self.flush
    }

    fn finish(self: Box<Self>, outcome: Result<(), Error>, publisher: &Publisher) {
        let mut result = match outcome {
            Ok(()) => self.out.into_inner().ok_or(Error::Closed),
            Err(e) => Err(e),
        };
        // Jobs finish in commit order, so their deferred work is queued in commit order.
        if let (Ok(value), Some(after)) = (&mut result, self.after) {
            if let Some(work) = after(value) {
                publisher.send(work);
            }
        }
        // The caller may have gone away (client disconnected); the write stands.
        let _ = self.reply.send(result);
    }
}

type BoxedJob = Box<dyn Job>;

/// A job run alone on the writer thread between two batches; it gets the error
/// instead when the store is failing.
type ExclusiveJob = Box<dyn FnOnce(Result<&super::Frozen<'_>, Error>) + Send>;

/// What the writer thread receives.
enum Work {
    Change(BoxedJob),
    Exclusive(ExclusiveJob),
}

/// An open database and its trees, in table order.
pub(super) struct Backend {
    pub(super) db: sled::Db,
    pub(super) trees: Vec<sled::Tree>,
}

/// What the writer needs to reopen the database after a failure.
pub(super) struct Recovery {
    /// The data directory (where probes write).
    pub(super) dir: PathBuf,
    /// Opens the database as at start-up.
    pub(super) reopen: Box<dyn Fn() -> sled::Result<sled::Db> + Send>,
    /// The store's handle on the database, emptied and refilled around a reopen.
    pub(super) slot: Arc<RwLock<Option<sled::Db>>>,
}

pub(super) struct Writer {
    sender: RwLock<Option<mpsc::Sender<Work>>>,
    thread: Mutex<Option<JoinHandle<Result<(), Error>>>>,
    publisher: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    enqueue_hook: Arc<OnceLock<Arc<Notify>>>,
    /// Why the store is failing; `None` while it is healthy.
    failing: Arc<Mutex<Option<String>>>,
}

impl Writer {
    pub(super) fn start(
        backend: Backend,
        recovery: Recovery,
        tables: Arc<super::Tables>,
        durability: Durability,
        next_id: u64,
    ) -> Writer {
        let (sender, receiver) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let failing = Arc::new(Mutex::new(None));
        let enqueue_hook: Arc<OnceLock<Arc<Notify>>> = Arc::new(OnceLock::new());
        let (to_publisher, published) = std::sync::mpsc::channel::<Deferred>();
        let publisher = std::thread::Builder::new()
            .name("likewise-publisher".into())
            .spawn(move || {
                // Ends when the writer thread drops its sender, after its last commit.
                for work in published {
                    work();
                }
            })
            .expect("spawning the publisher thread");
        let worker = WriterThread {
            publisher: Publisher(Some(to_publisher)),
            backend: Some(backend),
            recovery,
            tables,
            durability,
            stats: stats.clone(),
            enqueue_hook: enqueue_hook.clone(),
            failing: None,
            health: failing.clone(),
            next_id: std::cell::Cell::new(next_id),
        };
        let thread = std::thread::Builder::new()
            .name("likewise-writer".into())
            .spawn(move || worker.run(receiver))
            .expect("spawning the writer thread");
        Writer {
            sender: RwLock::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            publisher: Mutex::new(Some(publisher)),
            stats,
            enqueue_hook,
            failing,
        }
    }

    pub(super) fn health(&self) -> super::Health {
        match &*self.failing.lock().unwrap_or_else(PoisonError::into_inner) {
            None => super::Health::Ok,
            Some(reason) => super::Health::Degraded {
                reason: reason.clone(),
            },
        }
    }

    pub(super) async fn submit<T, F>(&self, change: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
    {
        self.submit_change(change, true, None).await
    }

    /// Like `submit`, and runs `after` on the result once it is durable, on the
    /// writer thread, in commit order, before the caller is answered; what it
    /// returns goes to the publisher.
    pub(super) async fn submit_then<T, F>(
        &self,
        change: F,
        after: AfterCommit<T>,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
    {
        self.submit_change(change, true, Some(after)).await
    }

    /// Like `submit`, but answered once committed, without waiting for a flush.
    pub(super) async fn submit_lazy<T, F>(&self, change: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
    {
        self.submit_change(change, false, None).await
    }

    async fn submit_change<T, F>(
        &self,
        change: F,
        flush: bool,
        after: Option<AfterCommit<T>>,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: BoxedJob = Box::new(Pending {
            change,
            out: RefCell::new(None),
            flush,
            after,
            reply,
        });
        self.send(Work::Change(job))?;
        answer.await.unwrap_or(Err(Error::Closed))
    }

    /// Queues `job` to run alone between two batches; the answer arrives on the
    /// returned channel once it has run.
    pub(super) fn submit_exclusive<T, F>(
        &self,
        job: F,
    ) -> Result<oneshot::Receiver<Result<T, Error>>, Error>
    where
        T: Send + 'static,
        F: FnOnce(&super::Frozen<'_>) -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Exclusive(Box::new(move |frozen| {
            // The caller may have gone away; nothing to undo, the job only read.
            let _ = reply.send(frozen.map(job));
        })))?;
        Ok(answer)
    }

    fn send(&self, work: Work) -> Result<(), Error> {
        let guard = self.sender.read().unwrap_or_else(|p| p.into_inner());
        let sender = guard.as_ref().ok_or(Error::Closed)?;
        sender.send(work).map_err(|_| Error::Closed)
    }

    pub(super) fn set_enqueue_hook(&self, wake: Arc<Notify>) {
        let _ = self.enqueue_hook.set(wake);
    }

    pub(super) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Stops accepting changes, lets the thread commit what it has, flush, and joins
    /// it; returns the outcome of that last flush (only to the first caller).
    pub(super) fn close(&self) -> Result<(), Error> {
        self.sender
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let outcome = match handle {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(Error::Sled("the writer thread panicked".into()))),
            None => Ok(()),
        };
        // The writer thread has dropped its end: the publisher runs what is left, then
        // stops.
        let handle = self
            .publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        outcome
    }
}

/// The writer's state while the store is failing.
struct Failing {
    reason: String,
    next_probe: Instant,
    backoff: Duration,
}

struct WriterThread {
    publisher: Publisher,
    /// `None` only between dropping a failed database and a successful reopen.
    backend: Option<Backend>,
    recovery: Recovery,
    tables: Arc<super::Tables>,
    durability: Durability,
    stats: Arc<WriterStats>,
    enqueue_hook: Arc<OnceLock<Arc<Notify>>>,
    failing: Option<Failing>,
    /// The failing reason as the store's health reports it.
    health: Arc<Mutex<Option<String>>>,
    /// The next id to hand out: ids are dense (1, 2, 3, ...) and survive restarts,
    /// because the counter is committed with the transaction that used it.
    next_id: std::cell::Cell<u64>,
}

/// Where the id counter lives in `meta`: the next id to hand out, 8 bytes big-endian.
pub(super) const NEXT_ID_KEY: &str = "next_id";

/// The id counter of an open database: its stored value, or for a database that has
/// none (new, or written before ids were dense) the first id above every id sled's
/// generator may have handed out.
pub(super) fn load_next_id(db: &sled::Db, tables: &super::Tables) -> Result<u64, Error> {
    if let Some(bytes) = tables.meta.get(&NEXT_ID_KEY.to_owned())? {
        if let Ok(bytes) = <[u8; 8]>::try_from(bytes.as_slice()) {
            return Ok(u64::from_be_bytes(bytes).max(1));
        }
    }
    Ok(db.generate_id()? + 1)
}

impl WriterThread {
    fn run(mut self, receiver: mpsc::Receiver<Work>) -> Result<(), Error> {
        let mut batch: Vec<BoxedJob> = Vec::with_capacity(MAX_BATCH);
        let mut unflushed = false;
        loop {
            if let Some(failing) = &self.failing {
                // Nothing is attempted while failing: every change is answered at
                // once, and the thread wakes for the next probe.
                let wait = failing.next_probe.saturating_duration_since(Instant::now());
                match receiver.recv_timeout(wait) {
                    Ok(work) => self.refuse(work),
                    Err(mpsc::RecvTimeoutError::Timeout) => self.probe(),
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                unflushed = false;
                continue;
            }
            let first = match receiver.try_recv() {
                Ok(work) => work,
                Err(mpsc::TryRecvError::Empty) => {
                    if unflushed {
                        // Idle: make the lazy changes durable now, off the hot path.
                        if let Err(e) = self.flush(true) {
                            tracing::error!(error = %e, "flush failed");
                        }
                        unflushed = false;
                    }
                    match receiver.recv() {
                        Ok(work) => work,
                        Err(_) => break,
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
            };
            let mut exclusive = None;
            match first {
                Work::Change(job) => batch.push(job),
                Work::Exclusive(job) => exclusive = Some(job),
            }
            while exclusive.is_none() && batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(Work::Change(job)) => batch.push(job),
                    // Everything submitted before the job is in `batch`: commit it
                    // first, so the job sees every write acknowledged before it.
                    Ok(Work::Exclusive(job)) => exclusive = Some(job),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.stats
                    .max_batch
                    .fetch_max(batch.len() as u64, Ordering::Relaxed);
                unflushed |= !self.commit_batch(&mut batch);
            }
            if let Some(job) = exclusive {
                self.run_exclusive(job);
            }
        }
        tracing::debug!("writer stopped");
        self.final_flush()
    }

    /// The flush at shutdown, whatever the durability: an error means that changes
    /// committed since the last good flush may be lost.
    fn final_flush(&self) -> Result<(), Error> {
        if let Some(failing) = &self.failing {
            return Err(Error::Sled(format!(
                "{} (the store was failing when it stopped)",
                failing.reason
            )));
        }
        match &self.backend {
            Some(backend) => backend.db.flush().map(|_| ()).map_err(Error::from),
            None => Ok(()),
        }
    }

    fn run_exclusive(&self, job: ExclusiveJob) {
        match &self.backend {
            Some(backend) if self.failing.is_none() => {
                job(Ok(&super::Frozen::new(&backend.db, &backend.trees)))
            }
            _ => job(Err(self.degraded())),
        }
    }

    /// The error for work refused while failing.
    fn degraded(&self) -> Error {
        let reason = self
            .failing
            .as_ref()
            .map_or_else(|| "storage is failing".to_owned(), |f| f.reason.clone());
        Error::Degraded(reason)
    }

    /// Answers `work` without attempting it (the store is failing).
    fn refuse(&self, work: Work) {
        match work {
            Work::Change(job) => {
                self.stats.changes.fetch_add(1, Ordering::Relaxed);
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                job.finish(Err(self.degraded()), &self.publisher);
            }
            Work::Exclusive(job) => job(Err(self.degraded())),
        }
    }

    /// Enters the failing state (or stays in it): sled refuses writes from now on.
    fn fail(&mut self, reason: String) {
        if self.failing.is_some() {
            return;
        }
        self.stats.storage_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            %reason,
            "storage failed; writes are refused until the disk takes writes again and the database is reopened"
        );
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
        self.failing = Some(Failing {
            reason,
            next_probe: Instant::now() + FIRST_PROBE,
            backoff: FIRST_PROBE,
        });
    }

    /// One recovery attempt: if the disk takes a synced write again, reopen the
    /// database; otherwise wait longer before the next attempt.
    fn probe(&mut self) {
        let attempt = probe_disk(&self.recovery.dir).and_then(|()| self.reopen());
        match attempt {
            Ok(()) => {
                self.failing = None;
                *self.health.lock().unwrap_or_else(PoisonError::into_inner) = None;
                self.stats.recoveries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "storage recovered: the database was reopened and takes writes again"
                );
            }
            Err(e) => {
                if let Some(failing) = &mut self.failing {
                    tracing::debug!(error = %e, reason = %failing.reason, "storage still failing");
                    failing.backoff = (failing.backoff * 2).min(MAX_PROBE);
                    failing.next_probe = Instant::now() + failing.backoff;
                }
            }
        }
    }

    /// Drops every handle on the failed database, opens it again and checks that it
    /// takes a flushed write; only then are the tables attached to it.
    fn reopen(&mut self) -> Result<(), String> {
        // sled keeps refusing writes until it is reopened, and its file lock means
        // the old handles must all be gone first.
        self.tables.detach();
        self.recovery
            .slot
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.backend = None;
        let db = self.open_again().map_err(|e| format!("reopening: {e}"))?;
        let trees = super::Tables::open_trees(&db).map_err(|e| e.to_string())?;
        // The default tree belongs to no table: the probe's write touches no data.
        db.insert(b"likewise:probe", &super::now_ms().to_be_bytes()[..])
            .and_then(|_| db.flush())
            .map_err(|e| super::describe(&e))?;
        self.tables.attach(&trees);
        // What the failure dropped may include ids handed out: count on from what
        // the disk kept.
        self.next_id
            .set(load_next_id(&db, &self.tables).map_err(|e| e.to_string())?);
        *self
            .recovery
            .slot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(db.clone());
        self.backend = Some(Backend { db, trees });
        Ok(())
    }

    /// Opens the database, retrying for a moment: a read that was in progress when
    /// the tables detached may still hold a handle, and with it sled's file lock.
    fn open_again(&self) -> sled::Result<sled::Db> {
        let mut tries = REOPEN_TRIES;
        loop {
            match (self.recovery.reopen)() {
                Ok(db) => return Ok(db),
                Err(e) if tries <= 1 => return Err(e),
                Err(_) => {
                    tries -= 1;
                    std::thread::sleep(REOPEN_PAUSE);
                }
            }
        }
    }

    /// Commits `batch`; returns whether it was flushed (or needed no flush).
    fn commit_batch(&mut self, batch: &mut Vec<BoxedJob>) -> bool {
        let n = batch.len() as u64;
        let must_flush = batch.iter().any(|job| job.needs_flush());
        let (outcome, enqueued) = self.transact(batch);
        let outcomes: Vec<Result<(), Error>> = match outcome {
            Ok(()) => {
                // Lazy changes are answered as soon as they are committed: they never
                // wait for the fsync that the batch's other changes need.
                if must_flush {
                    let mut waiting = Vec::with_capacity(batch.len());
                    for job in batch.drain(..) {
                        if job.needs_flush() {
                            waiting.push(job);
                        } else {
                            job.finish(Ok(()), &self.publisher);
                        }
                    }
                    *batch = waiting;
                }
                let flushed = self.flush(must_flush);
                vec![flushed; batch.len()]
            }
            Err(TransactionError::Storage(e)) => {
                let reason = super::describe(&e);
                self.fail(reason.clone());
                vec![Err(Error::Sled(reason)); batch.len()]
            }
            Err(TransactionError::Abort(_)) if batch.len() > 1 => {
                // One change is broken: give each its own transaction.
                let mut outcomes = Vec::with_capacity(batch.len());
                let mut any_enqueued = false;
                for job in batch.iter() {
                    let (o, e) = self.transact(std::slice::from_ref(job));
                    any_enqueued |= e && o.is_ok();
                    outcomes.push(o.map_err(|e| match e {
                        TransactionError::Abort(e) => e,
                        TransactionError::Storage(e) => {
                            let reason = super::describe(&e);
                            Error::Sled(reason)
                        }
                    }));
                }
                if let Some(Err(Error::Sled(reason))) =
                    outcomes.iter().find(|o| matches!(o, Err(Error::Sled(_))))
                {
                    self.fail(reason.clone());
                }
                let flushed = self.flush(must_flush);
                if any_enqueued {
                    self.wake();
                }
                for o in outcomes.iter_mut() {
                    if o.is_ok() {
                        o.clone_from(&flushed);
                    }
                }
                self.finish(batch, outcomes, n);
                return must_flush;
            }
            Err(TransactionError::Abort(e)) => vec![Err(e)],
        };
        if enqueued && outcomes.first().is_some_and(Result::is_ok) {
            self.wake();
        }
        self.finish(batch, outcomes, n);
        must_flush
    }

    fn finish(&self, batch: &mut Vec<BoxedJob>, outcomes: Vec<Result<(), Error>>, n: u64) {
        let failures = outcomes.iter().filter(|o| o.is_err()).count() as u64;
        self.stats.changes.fetch_add(n, Ordering::Relaxed);
        self.stats.failures.fetch_add(failures, Ordering::Relaxed);
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "write failed");
            }
            job.finish(outcome, &self.publisher);
        }
    }

    fn transact(&self, jobs: &[BoxedJob]) -> (Result<(), TransactionError<Error>>, bool) {
        let Some(backend) = &self.backend else {
            return (Err(TransactionError::Abort(self.degraded())), false);
        };
        let tally = TxTally::default();
        let first_id = self.next_id.get();
        let result = backend.trees.as_slice().transaction(|views| {
            tally.reset(first_id);
            let tx = Tx::new(views, &self.tables, &tally);
            for job in jobs {
                job.apply(&tx)?;
            }
            // The counter moves in the same commit as the ids it handed out: once
            // per batch, however many ids the batch took.
            let next = tally.next_id.get();
            if next != first_id {
                tx.insert(
                    &self.tables.meta,
                    &NEXT_ID_KEY.to_owned(),
                    &next.to_be_bytes().to_vec(),
                )?;
            }
            Ok(())
        });
        if result.is_ok() {
            self.next_id.set(tally.next_id.get());
            self.stats.transactions.fetch_add(1, Ordering::Relaxed);
            let keys = tally.keys.borrow().len() as u64;
            self.stats.key_writes.fetch_add(keys, Ordering::Relaxed);
            metrics::histogram!("likewise_store_batch_size").record(jobs.len() as f64);
        }
        (result, tally.enqueued.get())
    }

    /// Flushes if `needed` in sync mode. A failure puts the store in the failing
    /// state; what was committed may or may not be on disk.
    fn flush(&mut self, needed: bool) -> Result<(), Error> {
        if !needed || self.durability == Durability::Relaxed {
            return Ok(());
        }
        let Some(backend) = &self.backend else {
            return Err(self.degraded());
        };
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        match backend.db.flush() {
            Ok(_) => Ok(()),
            Err(e) => {
                let reason = super::describe(&e);
                self.fail(reason.clone());
                Err(Error::NotDurable(reason))
            }
        }
    }

    fn wake(&self) {
        if let Some(notify) = self.enqueue_hook.get() {
            notify.notify_one();
        }
    }
}

/// Removes what an interrupted probe may have left in `dir`.
pub(super) fn remove_probe_file(dir: &std::path::Path) {
    let _ = std::fs::remove_file(dir.join(PROBE_FILE));
}

/// Whether the disk takes a synced write of [`PROBE_BYTES`] in `dir` again.
fn probe_disk(dir: &std::path::Path) -> Result<(), String> {
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        // A fresh file (never through a link someone left in its place).
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    // Removed whatever happened: it must not take the space it tested for.
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| format!("the disk does not take writes yet: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::sync::Mutex;

    use sled::transaction::ConflictableTransactionError;

    use super::super::{Durability, Store};
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Sync, 500).unwrap();
        (dir, store)
    }

    /// Holds the writer thread in an exclusive job until the returned sender is used
    /// (or dropped), so that everything submitted meanwhile forms one batch.
    fn hold(store: &Store) -> std_mpsc::Sender<()> {
        let (release, wait) = std_mpsc::channel::<()>();
        let (started, running) = std_mpsc::channel::<()>();
        let _answer = store
            .inner
            .writer
            .submit_exclusive(move |_| {
                started.send(()).unwrap();
                let _ = wait.recv();
            })
            .unwrap();
        running.recv().unwrap();
        release
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_change_fails_alone_and_the_rest_of_its_batch_commits() {
        let (_dir, store) = open();
        let release = hold(&store);
        let write = |key: u64| {
            let store = store.clone();
            async move {
                store
                    .write(move |tx| tx.insert(&tx.t().unread_counts, &key, &key))
                    .await
            }
        };
        let broken = {
            let store = store.clone();
            async move {
                store
                    .write(|tx| {
                        tx.insert(&tx.t().unread_counts, &2, &2)?;
                        Err::<(), _>(ConflictableTransactionError::Abort(Error::Closed))
                    })
                    .await
            }
        };
        let all = futures::future::join3(write(1), broken, write(3));
        let releaser = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(release);
        };
        let ((one, two, three), ()) = tokio::join!(all, releaser);
        assert!(one.is_ok() && three.is_ok(), "{one:?} {three:?}");
        assert!(matches!(two, Err(Error::Closed)), "{two:?}");
        let t = store.tables();
        assert_eq!(t.unread_counts.get(&1).unwrap(), Some(1));
        assert_eq!(
            t.unread_counts.get(&2).unwrap(),
            None,
            "nothing of it stays"
        );
        assert_eq!(t.unread_counts.get(&3).unwrap(), Some(3));
        assert!(store.writer_stats().max_batch.load(Ordering::Relaxed) >= 3);
        assert_eq!(store.writer_stats().failures.load(Ordering::Relaxed), 1);
        store.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_work_runs_on_the_publisher_in_commit_order() {
        let (_dir, store) = open();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = hold(&store);
        let writes = (0..50).map(|_| {
            let seen = seen.clone();
            store.write_then(
                |tx| tx.next_id(),
                move |id: &mut u64| {
                    let id = *id;
                    let deferred: Deferred = Box::new(move || seen.lock().unwrap().push(id));
                    Some(deferred)
                },
            )
        });
        let all = futures::future::join_all(writes);
        let releaser = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(release);
        };
        let (ids, ()) = tokio::join!(all, releaser);
        let ids: Vec<u64> = ids.into_iter().map(Result::unwrap).collect();
        // Closing joins the publisher: everything handed to it has run.
        store.close();
        let seen = seen.lock().unwrap().clone();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(seen, sorted, "pushed in id (= commit) order");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exclusive_job_sees_every_earlier_write_and_holds_later_ones() {
        let (_dir, store) = open();
        store
            .write(|tx| tx.insert(&tx.t().unread_counts, &1, &1))
            .await
            .unwrap();
        let lazy = store.write_lazy(|tx| tx.insert(&tx.t().unread_counts, &2, &2));
        let job = store.exclusive(|frozen| {
            frozen
                .tables()
                .find(|t| t.name() == "unread_counts")
                .map(|t| t.entries().count())
        });
        let (lazy, seen) = tokio::join!(lazy, job);
        lazy.unwrap();
        assert_eq!(seen.unwrap(), Some(2), "the lazy write came first");
        store.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lazy_batch_is_answered_without_a_flush_and_flushed_when_idle() {
        let (_dir, store) = open();
        let stats = store.writer_stats();
        store
            .write(|tx| tx.insert(&tx.t().unread_counts, &1, &1))
            .await
            .unwrap();
        let flushes = stats.flushes.load(Ordering::Relaxed);
        assert!(flushes >= 1, "a sync write is flushed before its answer");
        let release = hold(&store);
        let lazy = store.write_lazy(|tx| tx.insert(&tx.t().unread_counts, &2, &2));
        let releaser = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(release);
        };
        let (lazy, ()) = tokio::join!(lazy, releaser);
        lazy.unwrap();
        // The writer flushes what lazy changes left as soon as it runs out of work.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while stats.flushes.load(Ordering::Relaxed) == flushes {
            assert!(std::time::Instant::now() < deadline, "no idle flush");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        store.close();
    }
}
