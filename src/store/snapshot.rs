//! Raw access to every table for backups and restores: [`Frozen`], the read-only view
//! an exclusive job gets while no write can happen, and [`Loader`], which fills a new,
//! empty data directory from raw records.
//!
//! Both work on raw bytes (encoded keys, postcard values) so that a snapshot is an
//! exact copy and needs no knowledge of the records' types. Neither knows the backup
//! file format; that lives in `crate::backup`.

use std::collections::HashMap;
use std::path::Path;

use super::{Error, TABLE_NAMES};

/// Records buffered per table before they are applied as one sled batch.
const LOAD_BATCH: usize = 10_000;

/// Every table, read-only, at one point in time: exclusive jobs get this on the writer
/// thread, where no transaction is open and no other write runs until they return.
pub struct Frozen<'a> {
    db: &'a sled::Db,
    trees: &'a [sled::Tree],
}

/// One table of a [`Frozen`] view.
pub struct FrozenTable<'a> {
    name: String,
    tree: &'a sled::Tree,
}

impl<'a> Frozen<'a> {
    pub(super) fn new(db: &'a sled::Db, trees: &'a [sled::Tree]) -> Self {
        Self { db, trees }
    }

    /// Every table, in a fixed order.
    pub fn tables(&self) -> impl Iterator<Item = FrozenTable<'a>> + '_ {
        self.trees.iter().map(|tree| FrozenTable {
            name: String::from_utf8_lossy(&tree.name()).into_owned(),
            tree,
        })
    }

    /// A value at least as large as every id handed out so far; a restored database
    /// must hand out only larger ones. Consumes one id (ids need not be contiguous).
    pub fn id_floor(&self) -> Result<u64, Error> {
        Ok(self.db.generate_id()?)
    }
}

impl FrozenTable<'_> {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every (key, value) pair as stored, ascending by key.
    pub fn entries(&self) -> impl Iterator<Item = Result<(Raw, Raw), Error>> + '_ {
        self.tree
            .iter()
            .map(|item| item.map(|(k, v)| (Raw(k), Raw(v))).map_err(Error::from))
    }
}

/// Stored bytes (a key or a value) as the backend holds them, without a copy.
pub struct Raw(sled::IVec);

impl std::ops::Deref for Raw {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Whether `dir` holds a database (without opening it).
pub fn exists(dir: &Path) -> bool {
    dir.join("conf").is_file()
}

/// Whether another process holds the database in `dir` open (the backend's lock on
/// its files is taken). A directory without a database is not in use.
pub fn in_use(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::options()
        .read(true)
        .write(true)
        .open(dir.join("db"))
    else {
        return false;
    };
    if fs2::FileExt::try_lock_exclusive(&file).is_err() {
        return true;
    }
    let _ = fs2::FileExt::unlock(&file);
    false
}

/// Fills a new database from raw records, then makes its id generator continue above
/// the snapshot's ids. Used by restore on an empty directory only.
pub struct Loader {
    db: sled::Db,
    pending: HashMap<&'static str, (sled::Tree, sled::Batch, usize)>,
    records: u64,
}

impl Loader {
    /// Creates a fresh database in `dir`, which the caller has made sure is empty.
    pub fn create(dir: &Path) -> Result<Loader, Error> {
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        Ok(Loader {
            db,
            pending: HashMap::new(),
            records: 0,
        })
    }

    /// Adds one record to table `table`; unknown table names are refused.
    pub fn insert(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let name = TABLE_NAMES
            .iter()
            .copied()
            .find(|n| *n == table)
            .ok_or_else(|| Error::Sled(format!("unknown table {table:?}")))?;
        if !self.pending.contains_key(name) {
            let tree = self.db.open_tree(name)?;
            self.pending.insert(name, (tree, sled::Batch::default(), 0));
        }
        let Some((tree, batch, n)) = self.pending.get_mut(name) else {
            return Err(Error::Sled(format!("table {name} vanished")));
        };
        batch.insert(key, value);
        *n += 1;
        self.records += 1;
        if *n >= LOAD_BATCH {
            tree.apply_batch(std::mem::take(batch))?;
            *n = 0;
        }
        Ok(())
    }

    /// Applies what is buffered, flushes, and advances the id generator so that every
    /// id it hands out from now on is above `id_floor`. Returns the records loaded.
    pub fn finish(mut self, dir: &Path, id_floor: u64) -> Result<u64, Error> {
        for (_, (tree, batch, _)) in self.pending.drain() {
            tree.apply_batch(batch)?;
        }
        self.db.flush()?;
        let records = self.records;
        drop(self);
        advance_ids(dir, id_floor)?;
        Ok(records)
    }
}

/// sled's default `idgen_persist_interval`, with which every store is opened.
const SLED_IDGEN_INTERVAL: u64 = 1_000_000;

/// Makes the id generator of the (closed) database in `dir` hand out ids above
/// `floor`.
///
/// sled has no "set the generator" call. On reopening, it resumes from its last
/// persisted counter plus twice its persist interval, and it persists the counter
/// whenever an id crosses a multiple of that interval; the persisted counter must be
/// a multiple of the interval used at the next open (sled asserts it). So: reopen once
/// with an interval `i` such that `2 * i` is the first multiple of the default
/// interval at or above the floor; the generator resumes at `2 * i`, and taking one
/// id persists that counter. The result is checked on a normal open; should sled
/// ever behave otherwise, ids are drawn one by one up to the floor.
fn advance_ids(dir: &Path, floor: u64) -> Result<(), Error> {
    if floor == 0 {
        return Ok(());
    }
    {
        let steps = floor.div_ceil(SLED_IDGEN_INTERVAL);
        let db = sled::Config::new()
            .path(dir)
            .idgen_persist_interval(steps * (SLED_IDGEN_INTERVAL / 2))
            .open()?;
        db.generate_id()?;
        db.flush()?;
    }
    let db = sled::Config::new().path(dir).open()?;
    let mut id = db.generate_id()?;
    while id < floor {
        id = db.generate_id()?;
    }
    db.flush()?;
    Ok(())
}
