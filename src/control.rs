//! The control socket: a unix socket in the data directory (`DIR/control.sock`) through
//! which local operator commands reach the running server — `likewise backup` and
//! `likewise admin-token --rotate`, which cannot open the store themselves while the
//! server holds sled's lock.
//!
//! Authorisation is the file system: the socket is mode 0600 and belongs to the
//! server's user, and a peer whose uid is neither that user's nor root's is refused
//! even if it got a connection. It is never exposed on the network.
//!
//! Protocol: the client sends one request line and the server answers, then closes
//! the connection:
//! - [`BACKUP_REQUEST`]: a backup stream (see `crate::backup`);
//! - [`ROTATE_ADMIN_TOKEN_REQUEST`]: [`OK_PREFIX`], the new admin token and `\n`;
//!
//! or, for either, [`ERROR_PREFIX`] and a message.

use std::io::{self, BufWriter, Seek};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::AdminToken;
use crate::store::Store;

/// Whether a server is running on `data` (its control socket accepts connections).
pub fn server_running(data: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(data.join(SOCKET_NAME)).is_ok()
}

/// Asks the server running on `data` for a new admin token. `Ok(None)` when no server
/// is running there (no socket, or nobody listening on it).
pub fn request_admin_token_rotation(data: &Path) -> Result<Option<String>, String> {
    use std::io::{Read, Write};
    let path = data.join(SOCKET_NAME);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("cannot connect to {}: {e}", path.display())),
    };
    let talk = |stream: &mut std::os::unix::net::UnixStream| -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(ROTATE_ADMIN_TOKEN_REQUEST)?;
        let mut answer = Vec::new();
        stream.take(4096).read_to_end(&mut answer)?;
        Ok(answer)
    };
    let answer = talk(&mut stream)
        .map_err(|e| format!("the server on {} did not answer: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&answer);
    if let Some(token) = text.strip_prefix("OK ") {
        return Ok(Some(token.trim().to_owned()));
    }
    Err(text
        .strip_prefix("ERR ")
        .unwrap_or("the server gave no answer")
        .trim()
        .to_owned())
}

/// File name of the socket inside the data directory.
pub const SOCKET_NAME: &str = "control.sock";
/// The request for a backup stream (protocol version 1).
pub const BACKUP_REQUEST: &[u8] = b"backup 1\n";
/// The request to replace the admin token (protocol version 1).
pub const ROTATE_ADMIN_TOKEN_REQUEST: &[u8] = b"admin-token rotate 1\n";
/// How an answer that is an error begins.
pub const ERROR_PREFIX: &[u8] = b"ERR ";
/// How a successful one-line answer begins.
pub const OK_PREFIX: &[u8] = b"OK ";

/// Longest request line accepted.
const MAX_REQUEST: usize = 64;
/// Time a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long a backup being streamed may take to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// The bound, not yet serving, control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    data: PathBuf,
    owner_uid: u32,
}

impl ControlSocket {
    /// Binds `DIR/control.sock`, replacing a stale socket file. Call only once the
    /// store is open: sled's lock guarantees that no other server owns `data`.
    pub fn bind(data: &Path) -> io::Result<ControlSocket> {
        let path = data.join(SOCKET_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let owner_uid = std::fs::metadata(&path)?.uid();
        Ok(ControlSocket {
            listener,
            path,
            data: data.to_owned(),
            owner_uid,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until `shutdown` fires, then removes the socket file and gives
    /// backups in progress a bounded time to finish.
    pub async fn serve(self, store: Store, admin: AdminToken, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let store = store.clone();
                        let admin = admin.clone();
                        let data = self.data.clone();
                        let owner = self.owner_uid;
                        tracker.spawn(handle(stream, store, admin, data, owner));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.cancelled() => break,
            }
        }
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
        tracker.close();
        if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
            tracing::warn!("a backup was still being sent at shutdown; it was cut off");
        }
    }
}

async fn handle(
    mut stream: UnixStream,
    store: Store,
    admin: AdminToken,
    data: PathBuf,
    owner_uid: u32,
) {
    let allowed = stream
        .peer_cred()
        .map(|c| c.uid() == owner_uid || c.uid() == 0)
        .unwrap_or(false);
    if !allowed {
        tracing::warn!("control socket: refused a peer of another user");
        refuse(&mut stream, "permission denied").await;
        return;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(request)) if request == BACKUP_REQUEST => {}
        Ok(Ok(request)) if request == ROTATE_ADMIN_TOKEN_REQUEST => {
            match admin.rotate(&store).await {
                Ok(token) => {
                    tracing::warn!("the admin token was replaced over the control socket");
                    let answer = [OK_PREFIX, token.as_bytes(), b"\n"].concat();
                    let _ = stream.write_all(&answer).await;
                    let _ = stream.shutdown().await;
                }
                Err(e) => refuse(&mut stream, &e.to_string()).await,
            }
            return;
        }
        Ok(Ok(_)) => {
            refuse(&mut stream, "unknown request").await;
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "control socket: bad request");
            return;
        }
        Err(_) => {
            refuse(&mut stream, "no request received in time").await;
            return;
        }
    }
    match send_backup(&mut stream, store, data).await {
        Ok(summary) => tracing::info!(
            records = summary.records,
            bytes = summary.bytes,
            "backup sent over the control socket"
        ),
        Err(SendError::Snapshot(message)) => {
            tracing::error!(error = %message, "backup failed");
            refuse(&mut stream, &message).await;
        }
        Err(SendError::Client(e)) => {
            tracing::warn!(error = %e, "backup client went away");
        }
    }
}

/// Reads one line (including its `\n`), at most [`MAX_REQUEST`] bytes.
async fn read_request(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_REQUEST {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(line)
}

async fn refuse(stream: &mut UnixStream, message: &str) {
    let mut answer = ERROR_PREFIX.to_vec();
    answer.extend_from_slice(message.replace('\n', " ").as_bytes());
    answer.push(b'\n');
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}

enum SendError {
    /// Taking the snapshot failed: the client is told why.
    Snapshot(String),
    /// The client stopped reading.
    Client(io::Error),
}

/// Takes the snapshot into an unnamed spool file in the data directory (so that the
/// writer is held only for a local sequential write, never for the client's pace),
/// then streams the spool.
async fn send_backup(
    stream: &mut UnixStream,
    store: Store,
    data: PathBuf,
) -> Result<crate::backup::Summary, SendError> {
    let snapshot = |e: &dyn std::fmt::Display| SendError::Snapshot(e.to_string());
    let spool = tempfile::tempfile_in(&data)
        .map_err(|e| snapshot(&format!("cannot create a spool file: {e}")))?;
    let (spool, summary) = store
        .exclusive(move |frozen| crate::backup::write_snapshot(frozen, BufWriter::new(spool)))
        .await
        .map_err(|e| snapshot(&e))?
        .map_err(|e| snapshot(&e))?;
    let mut spool = spool.into_inner().map_err(|e| snapshot(&e.into_error()))?;
    spool.rewind().map_err(|e| snapshot(&e))?;
    let mut spool = tokio::fs::File::from_std(spool);
    tokio::io::copy(&mut spool, stream)
        .await
        .map_err(SendError::Client)?;
    stream.shutdown().await.map_err(SendError::Client)?;
    Ok(summary)
}
