//! Typed tables over sled trees, and the transaction view [`Tx`] the writer hands to
//! every change.
//!
//! A table's tree can be swapped: after a storage failure sled refuses every write
//! until the database is reopened, so the writer detaches every table from the
//! failed database and attaches it to the reopened one ([`super::writer`]). Reads in
//! between get [`Error::Degraded`].

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::keys::Key;
use super::Error;

/// Result type of code running inside a transaction: `Err` aborts (or, for a
/// conflict, retries) the whole transaction.
pub type TxResult<T> = Result<T, TxError>;

/// Why code inside a transaction stopped it: an abort with a store [`Error`], or a
/// conflict sled resolves by running the transaction again.
pub type TxError = ConflictableTransactionError<Error>;

/// A sled tree whose keys are `K` and values postcard-encoded `V`.
pub struct Table<K, V> {
    name: &'static str,
    /// `None` while the database is being reopened after a failure.
    tree: RwLock<Option<sled::Tree>>,
    idx: usize,
    _types: PhantomData<fn() -> (K, V)>,
}

fn decode<V: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<V, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Decode {
        table,
        message: e.to_string(),
    })
}

fn encode<V: Serialize>(table: &'static str, value: &V) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(value).map_err(|e| Error::Decode {
        table,
        message: e.to_string(),
    })
}

fn decode_key<K: Key>(table: &'static str, bytes: &[u8]) -> Result<K, Error> {
    K::decode(bytes).ok_or_else(|| Error::Decode {
        table,
        message: "key of unexpected shape".into(),
    })
}

impl<K: Key, V: Serialize + DeserializeOwned> Table<K, V> {
    pub(super) fn new(name: &'static str, tree: sled::Tree, idx: usize) -> Self {
        Self {
            name,
            tree: RwLock::new(Some(tree)),
            idx,
            _types: PhantomData,
        }
    }

    /// The current tree (a cheap handle), or why there is none.
    fn tree(&self) -> Result<sled::Tree, Error> {
        self.tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                Error::Degraded("the database is being reopened after a storage failure".into())
            })
    }

    /// Points the table at `tree` (of a freshly reopened database).
    pub(super) fn attach(&self, tree: sled::Tree) {
        *self.tree.write().unwrap_or_else(PoisonError::into_inner) = Some(tree);
    }

    /// Drops the table's handle on its database, so that the database can close.
    pub(super) fn detach(&self) {
        self.tree
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// The table's name (its sled tree name).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads one value outside any transaction.
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        match self.tree()?.get(key.encode())? {
            Some(bytes) => Ok(Some(decode(self.name, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> Result<bool, Error> {
        Ok(self.tree()?.contains_key(key.encode())?)
    }

    /// Writes one value directly, bypassing the writer. Only for start-up, before
    /// anything else runs.
    pub(crate) fn insert_at_startup(&self, key: &K, value: &V) -> Result<(), Error> {
        self.tree()?
            .insert(key.encode(), encode(self.name, value)?)?;
        Ok(())
    }

    /// Number of keys starting with `prefix` (an encoded key prefix).
    pub fn count_prefix(&self, prefix: &[u8]) -> Result<u64, Error> {
        let mut n = 0;
        for item in self.tree()?.scan_prefix(prefix).keys() {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Entries with keys in `[from, to)`, ascending, at most `limit`.
    pub fn range(&self, from: &K, to: Bound<&K>, limit: usize) -> Result<Vec<(K, V)>, Error> {
        let upper = map_bound(to);
        self.collect(
            self.tree()?.range((Bound::Included(from.encode()), upper)),
            limit,
        )
    }

    /// Entries with keys in `(from, to]`... expressed as bounds, descending (newest
    /// first for id keys), at most `limit`.
    pub fn range_rev(
        &self,
        from: Bound<&K>,
        to: Bound<&K>,
        limit: usize,
    ) -> Result<Vec<(K, V)>, Error> {
        let range = (map_bound(from), map_bound(to));
        self.collect(self.tree()?.range(range).rev(), limit)
    }

    /// The first entry, by key order.
    pub fn first(&self) -> Result<Option<(K, V)>, Error> {
        match self.tree()?.first()? {
            Some((k, v)) => Ok(Some((decode_key(self.name, &k)?, decode(self.name, &v)?))),
            None => Ok(None),
        }
    }

    /// Every key, ascending; for small tables and recovery scans.
    pub fn keys(&self) -> impl Iterator<Item = Result<K, Error>> + '_ {
        let (tree, missing) = split(self.tree());
        missing.into_iter().map(Err).chain(
            tree.into_iter()
                .flat_map(|tree| tree.iter().keys())
                .map(move |k| {
                    let k = k?;
                    decode_key(self.name, &k)
                }),
        )
    }

    /// Every (key, value) pair as stored, for migrations reading old layouts.
    pub(super) fn raw_iter(
        &self,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), Error>> + '_ {
        let (tree, missing) = split(self.tree());
        missing.into_iter().map(Err).chain(
            tree.into_iter()
                .flat_map(|tree| tree.iter())
                .map(|item| item.map_err(Error::from)),
        )
    }

    /// Number of entries (walks the table); 0 while the database is being reopened.
    pub fn len(&self) -> usize {
        self.tree().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether the table is empty (also while the database is being reopened).
    pub fn is_empty(&self) -> bool {
        self.tree().map(|t| t.is_empty()).unwrap_or(true)
    }

    fn collect(
        &self,
        iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        limit: usize,
    ) -> Result<Vec<(K, V)>, Error> {
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item?;
            out.push((decode_key(self.name, &k)?, decode(self.name, &v)?));
        }
        Ok(out)
    }
}

/// A result as (value, error) options, to build iterators that yield the error once.
fn split<T>(r: Result<T, Error>) -> (Option<T>, Option<Error>) {
    match r {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    }
}

fn map_bound<K: Key>(b: Bound<&K>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.encode()),
        Bound::Excluded(k) => Bound::Excluded(k.encode()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// What one transaction did besides its writes, gathered while it runs.
#[derive(Default)]
pub(super) struct TxTally {
    /// Whether a task was enqueued (the workers must be woken).
    pub(super) enqueued: Cell<bool>,
    /// Distinct (table, key) pairs inserted or removed: what reaches the disk, since
    /// sled keeps only the last write of a key within a transaction.
    pub(super) keys: RefCell<HashSet<(usize, Vec<u8>)>>,
    /// The next id this transaction hands out.
    pub(super) next_id: Cell<u64>,
}

impl TxTally {
    /// Forgets everything (sled may run a transaction's closure again); ids start
    /// again at `next_id`, the writer's committed counter.
    pub(super) fn reset(&self, next_id: u64) {
        self.enqueued.set(false);
        self.keys.borrow_mut().clear();
        self.next_id.set(next_id);
    }
}

/// The view of all tables inside one group-committed transaction.
pub struct Tx<'a> {
    views: &'a [TransactionalTree],
    tables: &'a super::Tables,
    tally: &'a TxTally,
}

impl<'a> Tx<'a> {
    pub(super) fn new(
        views: &'a [TransactionalTree],
        tables: &'a super::Tables,
        tally: &'a TxTally,
    ) -> Self {
        Self {
            views,
            tables,
            tally,
        }
    }

    fn wrote(&self, idx: usize, key: &[u8]) {
        self.tally.keys.borrow_mut().insert((idx, key.to_vec()));
    }

    /// The tables, to name them in `get`/`insert`/`remove`.
    pub fn t(&self) -> &'a super::Tables {
        self.tables
    }

    /// Reads a value, seeing this transaction's own earlier writes.
    pub fn get<K: Key, V: Serialize + DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        key: &K,
    ) -> TxResult<Option<V>> {
        match self.views[table.idx].get(key.encode())? {
            Some(bytes) => Ok(Some(
                decode(table.name, &bytes).map_err(ConflictableTransactionError::Abort)?,
            )),
            None => Ok(None),
        }
    }

    /// Whether `key` is present.
    pub fn contains<K: Key, V: Serialize + DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        key: &K,
    ) -> TxResult<bool> {
        Ok(self.views[table.idx].get(key.encode())?.is_some())
    }

    /// Writes a value.
    pub fn insert<K: Key, V: Serialize + DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> TxResult<()> {
        let bytes = encode(table.name, value).map_err(ConflictableTransactionError::Abort)?;
        let key = key.encode();
        self.wrote(table.idx, &key);
        self.views[table.idx].insert(key, bytes)?;
        Ok(())
    }

    /// Removes a key; returns whether it was present.
    pub fn remove<K: Key, V: Serialize + DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        key: &K,
    ) -> TxResult<bool> {
        let key = key.encode();
        let present = self.views[table.idx].remove(key.as_slice())?.is_some();
        if present {
            self.wrote(table.idx, &key);
        }
        Ok(present)
    }

    /// A fresh id, unique and increasing for the life of the database (never 0),
    /// and dense: the ids of committed changes follow each other without gaps, also
    /// across restarts (an aborted change's ids are handed out again).
    pub fn next_id(&self) -> TxResult<u64> {
        let id = self.tally.next_id.get();
        self.tally.next_id.set(id + 1);
        Ok(id)
    }

    /// Marks that this transaction enqueued a task, so the writer wakes the workers
    /// after it commits.
    pub fn mark_enqueued(&self) {
        self.tally.enqueued.set(true);
    }
}
