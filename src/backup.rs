//! Backups and restores: the snapshot file format, `likewise backup` and
//! `likewise restore`.
//!
//! # The format (version 1)
//! All integers are big-endian.
//!
//! ```text
//! header   "LIKEWISE-BACKUP\n" (16 bytes)  format version: u32  schema version: u32
//!          id floor: u64
//! record*  0x01  table name length: u8 (1..=255)  table name (UTF-8)
//!          key length: u32  key  value length: u32  value
//! trailer  0xFF  record count: u64  SHA-256 of every byte before it (32 bytes)
//! ```
//!
//! Nothing may follow the trailer. Keys and values are the stored bytes unchanged, so a
//! restore is an exact copy; the id floor makes the restored database hand out only
//! ids above those in the snapshot. Keys and values are at most [`MAX_FIELD_BYTES`].
//!
//! # Consistency
//! A snapshot is taken by an exclusive job on the store's writer thread
//! ([`Store::exclusive`]): no write happens while the tables are walked, and every
//! write acknowledged before the backup began is in it. The job writes to an unnamed
//! spool file in the data directory (a local, sequential write, so writes are held up
//! as briefly as possible), which is then copied out.
//!
//! While a server runs, sled's lock keeps other processes out of its directory, so
//! `likewise backup` asks the server over its control socket (`crate::control`);
//! otherwise it opens the store itself. The output file appears atomically (temp file,
//! fsync, rename) and only once its checksum has been verified.
//!
//! A restore reads the whole file and verifies it before it writes anything, refuses a
//! non-empty directory unless forced, and never touches a directory a server is using.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::Durability;
use crate::store::{self, Frozen, Loader, Store};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 16] = b"LIKEWISE-BACKUP\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest key or value accepted in a backup file.
pub const MAX_FIELD_BYTES: u32 = 64 * 1024 * 1024;

const RECORD: u8 = 0x01;
const TRAILER: u8 = 0xFF;

/// Why a file is not a usable backup.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with [`MAGIC`].
    #[error("not a likewise backup (bad magic header)")]
    NotABackup,
    /// Written by a newer likewise with another format.
    #[error(
        "backup format version {0} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    UnsupportedFormat(u32),
    /// The data is from a newer schema than this build knows.
    #[error(
        "backup has schema version {0}, this build understands up to {max}",
        max = store::SCHEMA_VERSION
    )]
    NewerSchema(u32),
    /// The file ends early.
    #[error("backup is truncated")]
    Truncated,
    /// A structural error.
    #[error("backup is corrupt: {0}")]
    Corrupt(String),
    /// The trailer's checksum does not match the content.
    #[error("backup is corrupt: checksum mismatch")]
    Checksum,
    /// Reading failed.
    #[error("cannot read backup: {0}")]
    Io(#[from] io::Error),
}

/// What a backup holds, as reported by its header and trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Schema version of the data.
    pub schema_version: u32,
    /// Records (table entries).
    pub records: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// Header fields of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Schema version of the data.
    pub schema_version: u32,
    /// Every id in the snapshot is at most this.
    pub id_floor: u64,
}

/// One table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Table name.
    pub table: String,
    /// Stored key bytes.
    pub key: Vec<u8>,
    /// Stored value bytes.
    pub value: Vec<u8>,
}

/// Writes the format to any `Write`, hashing as it goes.
pub struct SnapshotWriter<W: Write> {
    out: W,
    hasher: Sha256,
    records: u64,
    bytes: u64,
    schema_version: u32,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the header.
    pub fn new(out: W, header: Header) -> io::Result<Self> {
        let mut w = Self {
            out,
            hasher: Sha256::new(),
            records: 0,
            bytes: 0,
            schema_version: header.schema_version,
        };
        w.put(MAGIC)?;
        w.put(&FORMAT_VERSION.to_be_bytes())?;
        w.put(&header.schema_version.to_be_bytes())?;
        w.put(&header.id_floor.to_be_bytes())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Writes one record.
    pub fn record(&mut self, table: &str, key: &[u8], value: &[u8]) -> io::Result<()> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let name_len = u8::try_from(table.len())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid(format!("table name {table:?} must be 1 to 255 bytes")))?;
        let field_len = |what: &str, b: &[u8]| {
            u32::try_from(b.len())
                .ok()
                .filter(|n| *n <= MAX_FIELD_BYTES)
                .ok_or_else(|| invalid(format!("a {what} in table {table} is too large")))
        };
        let key_len = field_len("key", key)?;
        let value_len = field_len("value", value)?;
        self.put(&[RECORD, name_len])?;
        self.put(table.as_bytes())?;
        self.put(&key_len.to_be_bytes())?;
        self.put(key)?;
        self.put(&value_len.to_be_bytes())?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and flushes; returns the inner writer and a summary.
    pub fn finish(mut self) -> io::Result<(W, Summary)> {
        self.put(&[TRAILER])?;
        self.put(&self.records.to_be_bytes())?;
        let digest = self.hasher.clone().finalize();
        self.out.write_all(&digest)?;
        self.bytes += digest.len() as u64;
        self.out.flush()?;
        let summary = Summary {
            schema_version: self.schema_version,
            records: self.records,
            bytes: self.bytes,
        };
        Ok((self.out, summary))
    }
}

/// Reads and checks the format from any `Read`. Every record is returned only after
/// its bytes were read in full; the checksum is known to be right only once
/// [`SnapshotReader::next_record`] has returned `Ok(None)`.
pub struct SnapshotReader<R: Read> {
    input: R,
    hasher: Sha256,
    header: Header,
    records: u64,
    bytes: u64,
    done: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header.
    pub fn new(input: R) -> Result<Self, FormatError> {
        let mut r = Self {
            input,
            hasher: Sha256::new(),
            header: Header {
                schema_version: 0,
                id_floor: 0,
            },
            records: 0,
            bytes: 0,
            done: false,
        };
        let magic: [u8; 16] = r.array().map_err(|e| match e {
            FormatError::Truncated => FormatError::NotABackup,
            e => e,
        })?;
        if &magic != MAGIC {
            return Err(FormatError::NotABackup);
        }
        let format = u32::from_be_bytes(r.array()?);
        if format != FORMAT_VERSION {
            return Err(FormatError::UnsupportedFormat(format));
        }
        let schema_version = u32::from_be_bytes(r.array()?);
        if schema_version > store::SCHEMA_VERSION {
            return Err(FormatError::NewerSchema(schema_version));
        }
        let id_floor = u64::from_be_bytes(r.array()?);
        r.header = Header {
            schema_version,
            id_floor,
        };
        Ok(r)
    }

    /// The header.
    pub fn header(&self) -> Header {
        self.header
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => FormatError::Truncated,
            _ => FormatError::Io(e),
        })?;
        self.hasher.update(&*buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    /// Reads `len` bytes without trusting `len` for the allocation: a corrupt length
    /// in a short file ends as `Truncated`, not as a huge allocation.
    fn field(&mut self, len: usize) -> Result<Vec<u8>, FormatError> {
        let mut buf = Vec::with_capacity(len.min(64 * 1024));
        let got = (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(FormatError::Io)?;
        if got < len {
            return Err(FormatError::Truncated);
        }
        self.hasher.update(&buf);
        self.bytes += len as u64;
        Ok(buf)
    }

    fn length(&mut self, what: &str) -> Result<usize, FormatError> {
        let len = u32::from_be_bytes(self.array()?);
        if len > MAX_FIELD_BYTES {
            return Err(FormatError::Corrupt(format!(
                "{what} length {len} is too large"
            )));
        }
        Ok(len as usize)
    }

    /// The next record; `Ok(None)` once the trailer has been read and verified.
    pub fn next_record(&mut self) -> Result<Option<Record>, FormatError> {
        if self.done {
            return Ok(None);
        }
        let [tag] = self.array()?;
        match tag {
            RECORD => {
                let [name_len] = self.array()?;
                if name_len == 0 {
                    return Err(FormatError::Corrupt("empty table name".into()));
                }
                let name = self.field(name_len as usize)?;
                let table = String::from_utf8(name)
                    .map_err(|_| FormatError::Corrupt("table name is not UTF-8".into()))?;
                let key_len = self.length("key")?;
                let key = self.field(key_len)?;
                let value_len = self.length("value")?;
                let value = self.field(value_len)?;
                self.records += 1;
                Ok(Some(Record { table, key, value }))
            }
            TRAILER => {
                let count = u64::from_be_bytes(self.array()?);
                let expected = self.hasher.clone().finalize();
                let mut digest = [0u8; 32];
                self.input
                    .read_exact(&mut digest)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => FormatError::Truncated,
                        _ => FormatError::Io(e),
                    })?;
                self.bytes += 32;
                if digest[..] != expected[..] {
                    return Err(FormatError::Checksum);
                }
                if count != self.records {
                    return Err(FormatError::Corrupt(format!(
                        "trailer counts {count} records, the file holds {}",
                        self.records
                    )));
                }
                let mut extra = [0u8; 1];
                loop {
                    match self.input.read(&mut extra) {
                        Ok(0) => break,
                        Ok(_) => {
                            return Err(FormatError::Corrupt(
                                "unexpected bytes after the trailer".into(),
                            ))
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(FormatError::Io(e)),
                    }
                }
                self.done = true;
                Ok(None)
            }
            other => Err(FormatError::Corrupt(format!(
                "unknown entry tag 0x{other:02x}"
            ))),
        }
    }

    /// Reads every remaining record, verifying the trailer; returns the summary.
    pub fn verify_to_end(mut self) -> Result<Summary, FormatError> {
        while self.next_record()?.is_some() {}
        Ok(self.summary())
    }

    /// Records and bytes read so far.
    pub fn summary(&self) -> Summary {
        Summary {
            schema_version: self.header.schema_version,
            records: self.records,
            bytes: self.bytes,
        }
    }
}

/// Writes a snapshot of every table in `frozen` to `out`.
pub fn write_snapshot<W: Write>(frozen: &Frozen<'_>, out: W) -> Result<(W, Summary), Error> {
    let header = Header {
        schema_version: store::SCHEMA_VERSION,
        id_floor: frozen.id_floor()?,
    };
    let mut writer = SnapshotWriter::new(out, header).map_err(Error::Write)?;
    for table in frozen.tables() {
        for entry in table.entries() {
            let (key, value) = entry?;
            writer
                .record(table.name(), &key, &value)
                .map_err(Error::Write)?;
        }
    }
    writer.finish().map_err(Error::Write)
}

/// Why a backup or restore failed. Every variant is a message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backup file (or the server's stream) is not a valid backup.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] store::Error),
    /// Writing the snapshot failed.
    #[error("cannot write the snapshot: {0}")]
    Write(io::Error),
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `--data` names no likewise data.
    #[error("{} holds no likewise data", .0.display())]
    NoData(PathBuf),
    /// Restore target not empty and no `--force`.
    #[error("{} is not empty; use --force to replace its contents", .0.display())]
    NotEmpty(PathBuf),
    /// A server runs on the restore target.
    #[error("a likewise server is using {}; stop it before restoring", .0.display())]
    InUse(PathBuf),
    /// The store could not be opened for an offline backup.
    #[error(
        "cannot open the store in {} (is a server running without its control socket?): {message}",
        path.display()
    )]
    Open {
        /// The data directory.
        path: PathBuf,
        /// What the store said.
        message: String,
    },
    /// The running server refused or failed the backup.
    #[error("the server could not take the backup: {0}")]
    Server(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// How a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From a running server, over its control socket.
    Online,
    /// By opening the store directly (no server was running).
    Offline,
}

/// Takes a consistent backup of the data in `data` into `out`, from the running
/// server if there is one, else by opening the store. `out` appears only once complete
/// and verified.
pub fn backup(data: &Path, out: &Path) -> Result<(Summary, Mode), Error> {
    let socket = data.join(crate::control::SOCKET_NAME);
    let stream = match UnixStream::connect(&socket) {
        Ok(stream) => Some(stream),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            None
        }
        Err(e) => return Err(io_err("cannot connect to", &socket)(e)),
    };
    match stream {
        Some(stream) => backup_online(stream, out).map(|s| (s, Mode::Online)),
        None => backup_offline(data, out).map(|s| (s, Mode::Offline)),
    }
}

/// Asks the server on `stream` for a snapshot and writes it to `out`.
fn backup_online(mut stream: UnixStream, out: &Path) -> Result<Summary, Error> {
    let sock = Path::new(crate::control::SOCKET_NAME);
    stream
        .write_all(crate::control::BACKUP_REQUEST)
        .map_err(io_err("cannot send the request to", sock))?;
    // The server may hold the stream briefly while it takes the snapshot; a server
    // that stops answering entirely is an error, not a hang.
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(io_err("cannot configure", sock))?;
    let mut input = BufReader::new(stream);
    let mut first = [0u8; 4];
    let mut got = 0;
    while got < first.len() {
        match input.read(&mut first[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("cannot read from", sock)(e)),
        }
    }
    if &first[..got] == crate::control::ERROR_PREFIX {
        let mut message = String::new();
        let _ = input.take(4096).read_to_string(&mut message);
        return Err(Error::Server(message.trim().to_owned()));
    }
    let stream = io::Cursor::new(first[..got].to_vec()).chain(input);
    write_verified(stream, out)
}

/// Opens the store in `data` (no server may be running) and writes a snapshot.
fn backup_offline(data: &Path, out: &Path) -> Result<Summary, Error> {
    if !store::snapshot::exists(data) {
        return Err(Error::NoData(data.to_owned()));
    }
    let store = Store::open(data, Durability::Sync, 500).map_err(|e| Error::Open {
        path: data.to_owned(),
        message: e.to_string(),
    })?;
    let spool = tempfile::tempfile_in(data).map_err(io_err("cannot create a spool file in", data));
    let result = spool.and_then(|spool| {
        store.exclusive_blocking(move |frozen| write_snapshot(frozen, BufWriter::new(spool)))?
    });
    store.close();
    let (spool, _) = result?;
    let mut spool = spool
        .into_inner()
        .map_err(|e| Error::Write(e.into_error()))?;
    spool.rewind().map_err(Error::Write)?;
    write_verified(BufReader::new(spool), out)
}

/// Copies a backup stream into `out` atomically, verifying it on the way.
fn write_verified(input: impl Read, out: &Path) -> Result<Summary, Error> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".likewise-backup-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(io_err("cannot create a temporary file in", &dir))?;
    let summary = {
        let tee = Tee {
            input,
            copy: BufWriter::new(tmp.as_file_mut()),
        };
        let mut reader = SnapshotReader::new(tee)?;
        while reader.next_record()?.is_some() {}
        let summary = reader.summary();
        let Tee { mut copy, .. } = reader.input;
        copy.flush().map_err(io_err("cannot write", out))?;
        summary
    };
    tmp.as_file()
        .sync_all()
        .map_err(io_err("cannot sync", out))?;
    tmp.persist(out)
        .map_err(|e| io_err("cannot write", out)(e.error))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(summary)
}

/// A reader that copies everything it reads into `copy`.
struct Tee<R, W> {
    input: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Checks a backup file completely (header, every record, checksum) without writing
/// anything.
pub fn verify(file: &Path) -> Result<Summary, Error> {
    let f = File::open(file).map_err(io_err("cannot open", file))?;
    Ok(SnapshotReader::new(BufReader::new(f))?.verify_to_end()?)
}

/// Restores the backup `from` into the data directory `data`.
///
/// The file is verified completely first; nothing is written if it is not valid. A
/// non-empty `data` is refused unless `force`, and a directory a running server uses is
/// always refused. If writing fails half-way, `data` is left empty.
pub fn restore(from: &Path, data: &Path, force: bool) -> Result<Summary, Error> {
    verify(from)?;
    prepare_target(data, force)?;
    match load(from, data) {
        Ok(summary) => Ok(summary),
        Err(e) => {
            let _ = clear_dir(data);
            Err(e)
        }
    }
}

fn load(from: &Path, data: &Path) -> Result<Summary, Error> {
    let f = File::open(from).map_err(io_err("cannot open", from))?;
    let mut reader = SnapshotReader::new(BufReader::new(f))?;
    let mut loader = Loader::create(data)?;
    // The file was verified, but it is read again: a record is applied only if this
    // pass, too, ends on a matching checksum (the loader is dropped on error).
    while let Some(record) = reader.next_record()? {
        loader.insert(&record.table, &record.key, &record.value)?;
    }
    loader.finish(data, reader.header().id_floor)?;
    match_owner(data).map_err(io_err(
        "cannot give the restored files to the owner of",
        data,
    ))?;
    Ok(reader.summary())
}

/// Gives every file under `dir` the owner and group of `dir` itself, so that a restore
/// run by root into the service's directory leaves files the service can write.
fn match_owner(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let want = fs::metadata(dir)?;
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if meta.uid() != want.uid() || meta.gid() != want.gid() {
                std::os::unix::fs::lchown(entry.path(), Some(want.uid()), Some(want.gid()))?;
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Makes `data` an existing, empty directory, or explains why not.
fn prepare_target(data: &Path, force: bool) -> Result<(), Error> {
    match fs::read_dir(data) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            // Readable by this user only, whatever the umask: it will hold password
            // hashes and private messages.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data)
                .map_err(io_err("cannot create", data))
        }
        Err(e) => Err(io_err("cannot read", data)(e)),
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(());
            }
            if !force {
                return Err(Error::NotEmpty(data.to_owned()));
            }
            ensure_unused(data)?;
            clear_dir(data).map_err(io_err("cannot clear", data))
        }
    }
}

/// Refuses a directory that a running server holds: its control socket answers, or
/// the store's own lock is taken.
fn ensure_unused(data: &Path) -> Result<(), Error> {
    if UnixStream::connect(data.join(crate::control::SOCKET_NAME)).is_ok() {
        return Err(Error::InUse(data.to_owned()));
    }
    if store::snapshot::in_use(data) {
        return Err(Error::InUse(data.to_owned()));
    }
    Ok(())
}

/// Removes everything inside `dir`, keeping `dir` itself (its owner and mode matter
/// to the service manager).
fn clear_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let header = Header {
            schema_version: store::SCHEMA_VERSION,
            id_floor: 42,
        };
        let mut w = SnapshotWriter::new(Vec::new(), header).unwrap();
        w.record("users", &7u64.to_be_bytes(), b"alice").unwrap();
        w.record("posts", b"", b"").unwrap();
        w.record("meta", b"schema_version", &[0, 0, 0, 1]).unwrap();
        let (bytes, summary) = w.finish().unwrap();
        assert_eq!(summary.records, 3);
        assert_eq!(summary.bytes, bytes.len() as u64);
        bytes
    }

    fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Record>), FormatError> {
        let mut r = SnapshotReader::new(bytes)?;
        let mut records = Vec::new();
        while let Some(rec) = r.next_record()? {
            records.push(rec);
        }
        Ok((r.header(), records))
    }

    #[test]
    fn a_written_snapshot_reads_back_exactly() {
        let bytes = sample();
        let (header, records) = read_all(&bytes).unwrap();
        assert_eq!(header.id_floor, 42);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].table, "users");
        assert_eq!(records[0].value, b"alice");
        assert_eq!(records[1].key, b"");
        let summary = SnapshotReader::new(&bytes[..])
            .unwrap()
            .verify_to_end()
            .unwrap();
        assert_eq!(summary.bytes, bytes.len() as u64);
    }

    #[test]
    fn every_strict_prefix_is_an_error_not_a_panic() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let err = read_all(&bytes[..len]).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated | FormatError::NotABackup),
                "prefix of {len} bytes gave {err:?}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut broken = bytes.clone();
            broken[i] ^= 0x40;
            assert!(
                read_all(&broken).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn trailing_bytes_and_foreign_headers_are_refused() {
        let mut bytes = sample();
        bytes.push(0);
        assert!(matches!(read_all(&bytes), Err(FormatError::Corrupt(_))));
        assert!(matches!(
            read_all(b"SQLite format 3\0 and more"),
            Err(FormatError::NotABackup)
        ));
        let mut newer = sample();
        newer[16..20].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            read_all(&newer),
            Err(FormatError::UnsupportedFormat(2))
        ));
        let mut future = sample();
        future[20..24].copy_from_slice(&(store::SCHEMA_VERSION + 1).to_be_bytes());
        assert!(matches!(
            read_all(&future),
            Err(FormatError::NewerSchema(_))
        ));
    }

    #[test]
    fn a_huge_length_in_a_short_file_is_refused_without_allocating_it() {
        let header = Header {
            schema_version: 1,
            id_floor: 0,
        };
        let mut w = SnapshotWriter::new(Vec::new(), header).unwrap();
        w.put(&[RECORD, 1, b't']).unwrap();
        w.put(&(MAX_FIELD_BYTES).to_be_bytes()).unwrap();
        let bytes = w.out;
        assert!(matches!(read_all(&bytes), Err(FormatError::Truncated)));
        let mut too_big = bytes[..bytes.len() - 4].to_vec();
        too_big.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(read_all(&too_big), Err(FormatError::Corrupt(_))));
    }

    #[test]
    fn restored_files_belong_to_the_owner_of_the_data_directory() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        if fs::metadata(dir.path()).unwrap().uid() != 0 {
            return; // only root can hand files to another user
        }
        let file = dir.path().join("b.lwb");
        fs::write(&file, sample()).unwrap();
        let target = dir.path().join("data");
        fs::create_dir(&target).unwrap();
        std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
        restore(&file, &target, false).unwrap();
        let mut checked = 0;
        for entry in fs::read_dir(&target).unwrap() {
            let meta = entry.unwrap().metadata().unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
            checked += 1;
        }
        assert!(checked > 0);
    }

    #[test]
    fn restore_refuses_a_non_empty_directory_and_a_corrupt_file_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.lwb");
        fs::write(&file, sample()).unwrap();
        let target = dir.path().join("data");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"x").unwrap();
        assert!(matches!(
            restore(&file, &target, false),
            Err(Error::NotEmpty(_))
        ));
        assert!(target.join("keep").exists());

        let mut broken = sample();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        fs::write(&file, &broken).unwrap();
        let fresh = dir.path().join("fresh");
        assert!(matches!(
            restore(&file, &fresh, true),
            Err(Error::Format(FormatError::Checksum))
        ));
        assert!(!fresh.exists(), "nothing was created");
        assert!(restore(&file, &target, true).is_err());
        assert!(target.join("keep").exists(), "nothing was removed");
    }
}
