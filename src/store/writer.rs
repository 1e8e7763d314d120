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
//! Besides changes, the writer runs *exclusive jobs* ([`super::Store::exclusive`]):
//! the batch in progress (which holds everything submitted before the job) is
//! committed and flushed first, then the job runs alone on this thread with no
//! transaction open, so no write can happen while it reads. Later changes wait for it.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;

use sled::transaction::{TransactionError, Transactional};
use tokio::sync::{mpsc, oneshot, Notify};

use super::table::{Tx, TxResult};
use super::Error;
use crate::config::Durability;

/// Most changes applied in one transaction.
pub const MAX_BATCH: usize = 2048;

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
}

trait Job: Send {
    fn apply(&self, tx: &Tx<'_>) -> TxResult<()>;
    fn needs_flush(&self) -> bool;
    fn finish(self: Box<Self>, outcome: Result<(), Error>);
}

/// Runs on the writer thread once a change is durable, before its caller is answered.
pub(super) type AfterCommit<T> = Box<dyn FnOnce(&T) + Send>;

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

    fn finish(self: Box<Self>, outcome: Result<(), Error>) {
        let result = match outcome {
            Ok(()) => self.out.into_inner().ok_or(Error::Closed),
            Err(e) => Err(e),
        };
        // Jobs finish in commit order, so hooks run in commit order too.
        if let (Ok(value), Some(after)) = (&result, self.after) {
            after(value);
        }
        // The caller may have gone away (client disconnected); the write stands.
        let _ = self.reply.send(result);
    }
}

type BoxedJob = Box<dyn Job>;

/// A job run alone on the writer thread between two batches.
type ExclusiveJob = Box<dyn FnOnce(&super::Frozen<'_>) + Send>;

/// What the writer thread receives.
enum Work {
    Change(BoxedJob),
    Exclusive(ExclusiveJob),
}

pub(super) struct Writer {
    sender: RwLock<Option<mpsc::UnboundedSender<Work>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    enqueue_hook: Arc<OnceLock<Arc<Notify>>>,
}

impl Writer {
    pub(super) fn start(
        db: sled::Db,
        trees: Vec<sled::Tree>,
        tables: Arc<super::Tables>,
        durability: Durability,
    ) -> Writer {
        let (sender, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        let enqueue_hook: Arc<OnceLock<Arc<Notify>>> = Arc::new(OnceLock::new());
        let worker = WriterThread {
            db,
            trees,
            tables,
            durability,
            stats: stats.clone(),
            enqueue_hook: enqueue_hook.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("likewise-writer".into())
            .spawn(move || worker.run(receiver))
            .expect("spawning the writer thread");
        Writer {
            sender: RwLock::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            stats,
            enqueue_hook,
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
    /// writer thread, in commit order, before the caller is answered.
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
    pub(super) fn submit_exclusive<T, F>(&self, job: F) -> Result<oneshot::Receiver<T>, Error>
    where
        T: Send + 'static,
        F: FnOnce(&super::Frozen<'_>) -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Exclusive(Box::new(move |frozen| {
            // The caller may have gone away; nothing to undo, the job only read.
            let _ = reply.send(job(frozen));
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

    /// Stops accepting changes, lets the thread commit what it has, and joins it.
    pub(super) fn close(&self) {
        self.sender
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

struct WriterThread {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    tables: Arc<super::Tables>,
    durability: Durability,
    stats: Arc<WriterStats>,
    enqueue_hook: Arc<OnceLock<Arc<Notify>>>,
}

impl WriterThread {
    fn run(self, mut receiver: mpsc::UnboundedReceiver<Work>) {
        let mut batch: Vec<BoxedJob> = Vec::with_capacity(MAX_BATCH);
        let mut unflushed = false;
        loop {
            let first = match receiver.try_recv() {
                Ok(work) => work,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if unflushed {
                        // Idle: make the lazy changes durable now, off the hot path.
                        if let Err(e) = self.flush(true) {
                            tracing::error!(error = %e, "flush failed");
                        }
                        unflushed = false;
                    }
                    match receiver.blocking_recv() {
                        Some(work) => work,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
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
                job(&super::Frozen::new(&self.db, &self.trees));
            }
        }
        tracing::debug!("writer stopped");
    }

    /// Commits `batch`; returns whether it was flushed (or needed no flush).
    fn commit_batch(&self, batch: &mut Vec<BoxedJob>) -> bool {
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
                            job.finish(Ok(()));
                        }
                    }
                    *batch = waiting;
                }
                let flushed = self.flush(must_flush);
                vec![flushed; batch.len()]
            }
            Err(TransactionError::Storage(e)) => vec![Err(Error::from(e)); batch.len()],
            Err(TransactionError::Abort(_)) if batch.len() > 1 => {
                // One change is broken: give each its own transaction.
                let mut outcomes = Vec::with_capacity(batch.len());
                let mut any_enqueued = false;
                for job in batch.iter() {
                    let (o, e) = self.transact(std::slice::from_ref(job));
                    any_enqueued |= e && o.is_ok();
                    outcomes.push(o.map_err(|e| match e {
                        TransactionError::Abort(e) => e,
                        TransactionError::Storage(e) => Error::from(e),
                    }));
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
            job.finish(outcome);
        }
    }

    fn transact(&self, jobs: &[BoxedJob]) -> (Result<(), TransactionError<Error>>, bool) {
        let enqueued = Cell::new(false);
        let result = self.trees.as_slice().transaction(|views| {
            enqueued.set(false);
            let tx = Tx::new(views, &self.tables, &enqueued);
            for job in jobs {
                job.apply(&tx)?;
            }
            Ok(())
        });
        if result.is_ok() {
            self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        }
        (result, enqueued.get())
    }

    fn flush(&self, needed: bool) -> Result<(), Error> {
        if !needed || self.durability == Durability::Relaxed {
            return Ok(());
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.db.flush().map(|_| ()).map_err(Error::from)
    }

    fn wake(&self) {
        if let Some(notify) = self.enqueue_hook.get() {
            notify.notify_one();
        }
    }
}
