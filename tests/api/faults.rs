//! Faults the store recovers from, on a real full disk: a small tmpfs as the data
//! directory, filled until sled's writes fail. Writes then get 503 with an accurate
//! message and `/healthz` says `degraded`; once space is freed the store reopens
//! itself and writes succeed again, without a restart and without losing anything
//! acknowledged. A stop while the disk is still full exits non-zero. And the data
//! directory and its files are private to the server's user.
//!
//! The mounts leave nothing behind: each such test runs again in its own mount
//! namespace (`unshare --mount`, with `--user --map-root-user` when not root, so no
//! privileges are needed), so its tmpfs disappears with the process, however it ends.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app_in, Api, TestUser, ADMIN_TOKEN};

/// Set in the environment of a test run again inside its own namespaces.
const INSIDE: &str = "LIKEWISE_TEST_IN_PRIVATE_MOUNTS";

/// Size of the tmpfs data directories.
const DISK: &str = "size=16m";

/// Runs the test named `test` (its path in this binary) again in a new user and
/// mount namespace and asserts that it passed there. Returns `None` in the outer
/// run, and inside the namespace the path of a fresh tmpfs to use.
fn private_tmpfs(test: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(INSIDE) {
        let dir = PathBuf::from(dir);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", DISK, "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        return Some(dir);
    }
    // The mount point belongs to this (outer) run: outside the namespace it stays an
    // empty directory, removed when this returns.
    let mount_point = tempfile::tempdir().expect("mount point");
    // Root may mount in a new mount namespace directly (also where unprivileged user
    // namespaces are restricted); anyone else gets a user namespace to be root in.
    // SAFETY: geteuid cannot fail and touches no memory.
    let namespaces: &[&str] = if unsafe { libc::geteuid() } == 0 {
        &["--mount", "--"]
    } else {
        &["--user", "--map-root-user", "--mount", "--"]
    };
    let out = Command::new("unshare")
        .args(namespaces)
        .arg(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, mount_point.path())
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in its own namespace: {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // What the inner run said (shown with --nocapture).
    eprint!("{stderr}");
    None
}

/// Fills the file system of `dir` with a file until a write fails for lack of space;
/// returns the file's path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("filler file");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Whatever is left is less than a chunk: fill it byte-wise in pages.
    for _ in 0..16 {
        if file.write_all(&[0xa5u8; 4096]).is_err() {
            break;
        }
    }
    path
}

/// Creates posts until one is refused; returns the ids of those acknowledged and
/// the refusal.
async fn post_until_refused(api: &Api, user: &TestUser) -> (Vec<u64>, (StatusCode, Value)) {
    let mut acked = Vec::new();
    for i in 0..2000 {
        let (status, body) = api
            .post(
                "/api/posts",
                &user.token,
                json!({"title": format!("post {i}"), "body": "x".repeat(200)}),
            )
            .await;
        if status == StatusCode::CREATED {
            acked.push(body["id"].as_u64().unwrap());
        } else {
            return (acked, (status, body));
        }
    }
    panic!("2000 posts were accepted on a full disk");
}

async fn health(api: &Api) -> (StatusCode, Value) {
    api.call(Method::GET, "/healthz", None, None).await
}

/// The value of an unlabelled metric on `/metrics`.
async fn metric(api: &Api, name: &str) -> Option<f64> {
    let text = api
        .client
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn a_full_disk_answers_503_and_writes_succeed_again_once_space_is_freed() {
    let Some(disk) = private_tmpfs(
        "faults::a_full_disk_answers_503_and_writes_succeed_again_once_space_is_freed",
    ) else {
        return;
    };
    let data = disk.join("data");
    let app = spawn_app_in(&data, |_| {}).await;
    let alice = app.register("alice").await;
    let before = app.create_post(&alice, "before").await;
    let (status, ok) = health(&app).await;
    assert_eq!((status, ok), (StatusCode::OK, json!({"status": "ok"})));

    let filler = fill(&disk);
    let (mut acked, (status, refused)) = post_until_refused(&app, &alice).await;
    acked.push(before);
    assert_error(
        status,
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("the disk is full"), "{message}");
    // The failed write was either not committed ("nothing was changed") or committed
    // without its flush (which says it may not survive): never claimed both ways.
    assert!(
        message.contains("nothing was changed") || message.contains("may or may not survive"),
        "{message}"
    );

    // While it is failing: writes are refused at once, health says why, reads work.
    let (status, body) = app
        .post(
            "/api/posts",
            &alice.token,
            json!({"title": "t", "body": "b"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("failing") && message.contains("nothing was changed"),
        "{message}"
    );
    let (status, h) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{h}");
    assert_eq!(
        h,
        json!({"status": "degraded", "reason": "the disk is full"})
    );
    let (status, post) = app.get(&format!("/api/posts/{before}"), &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{post}");
    assert_eq!(metric(&app, "likewise_store_degraded").await, Some(1.0));

    // Space comes back: within seconds, without a restart, writes succeed again.
    std::fs::remove_file(&filler).unwrap();
    let freed = std::time::Instant::now();
    let after = app
        .eventually(Duration::from_secs(10), || async {
            let (status, body) = app
                .post(
                    "/api/posts",
                    &alice.token,
                    json!({"title": "after", "body": "b"}),
                )
                .await;
            (status == StatusCode::CREATED).then(|| body["id"].as_u64().unwrap())
        })
        .await;
    eprintln!(
        "writes succeeded again {:?} after space was freed",
        freed.elapsed()
    );
    acked.push(after);
    let (status, h) = health(&app).await;
    assert_eq!((status, h), (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(metric(&app, "likewise_store_degraded").await, Some(0.0));
    assert_eq!(
        metric(&app, "likewise_store_recoveries_total").await,
        Some(1.0)
    );

    // Nothing acknowledged was lost, through the recovery and a restart.
    app.stop().await;
    let app = spawn_app_in(&data, |_| {}).await;
    for id in &acked {
        let (status, post) = app.get(&format!("/api/posts/{id}"), &alice.token).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged post {id} lost: {post}"
        );
    }
    app.stop().await;
}

/// In relaxed mode the failure shows in sled's background flush, and the next write
/// finds the store refusing; recovery is the same.
#[tokio::test]
async fn in_relaxed_mode_a_full_disk_is_also_recovered_from() {
    let Some(disk) = private_tmpfs("faults::in_relaxed_mode_a_full_disk_is_also_recovered_from")
    else {
        return;
    };
    let data = disk.join("data");
    let relaxed = |s: &mut likewise::config::Settings| {
        s.durability = likewise::config::Durability::Relaxed;
        s.flush_every_ms = 20;
    };
    let app = spawn_app_in(&data, relaxed).await;
    let alice = app.register("alice").await;
    // Relaxed: alice's account is durable only once flushed, and the recovery keeps
    // only what is on disk.
    app.state.social.store().flush().await.unwrap();
    let filler = fill(&disk);
    let (_, (status, refused)) = post_until_refused(&app, &alice).await;
    assert_error(
        status,
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("the disk is full"), "{message}");
    let (status, h) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{h}");

    std::fs::remove_file(&filler).unwrap();
    let after = app
        .eventually(Duration::from_secs(10), || async {
            let (status, body) = app
                .post(
                    "/api/posts",
                    &alice.token,
                    json!({"title": "after", "body": "b"}),
                )
                .await;
            (status == StatusCode::CREATED).then(|| body["id"].as_u64().unwrap())
        })
        .await;
    let (status, _) = health(&app).await;
    assert_eq!(status, StatusCode::OK);
    // A graceful stop flushes: what was written after the recovery is kept.
    app.stop().await;
    let app = spawn_app_in(&data, relaxed).await;
    let (status, post) = app.get(&format!("/api/posts/{after}"), &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{post}");
    app.stop().await;
}

/// A `likewise serve` child that is killed if the test ends without stopping it (a
/// failed assertion must not leave a server running).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The command that starts `likewise serve` on `data`, with its log on a pipe.
fn serve_command(data: &Path) -> Command {
    // No in-process server installs the TLS provider reqwest needs for this client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut command = Command::new(env!("CARGO_BIN_EXE_likewise"));
    command
        .args(["serve", "--http", "127.0.0.1:0", "--resp", "off", "--data"])
        .arg(data)
        .env("LIKEWISE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: umask is async-signal-safe and touches no memory. A permissive mask, as
    // an operator's shell may have: the server must not depend on it.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    command
}

/// The address in a `listening http=ADDR` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening http=").nth(1)?;
    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    addr.parse().ok()
}

/// `likewise serve` on `data`; returns the child, its address, and its stderr lines
/// as they come.
fn serve(data: &Path) -> (Server, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut command = serve_command(data);
    let mut server = Server(command.spawn().expect("the likewise binary starts"));
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = server.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("a listening line within 20 s");
        if let Some(addr) = listening_addr(&line) {
            break addr;
        }
    };
    (server, addr, lines)
}

/// Sends SIGTERM and waits (at most 30 s) for the exit; returns the status and the
/// rest of stderr.
fn terminate(
    mut server: Server,
    lines: std::sync::mpsc::Receiver<String>,
) -> (std::process::ExitStatus, Vec<String>) {
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        // Past the deadline the guard kills it.
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, lines.iter().collect())
}

#[tokio::test]
async fn sigterm_while_the_disk_is_full_exits_non_zero_and_says_why() {
    let Some(disk) =
        private_tmpfs("faults::sigterm_while_the_disk_is_full_exits_non_zero_and_says_why")
    else {
        return;
    };
    let data = disk.join("data");
    let (child, addr, lines) = serve(&data);
    let api = Api::new(addr);
    let alice = api.register("alice").await;
    let filler = fill(&disk);
    let (_, (status, body)) = post_until_refused(&api, &alice).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Whatever a probe may have taken meanwhile is taken back: the disk stays full.
    let _more = fill(&disk);
    let _ = filler;
    let (status, stderr) = tokio::task::spawn_blocking(move || terminate(child, lines))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}: {stderr:#?}");
    let said: Vec<&String> = stderr
        .iter()
        .filter(|l| l.starts_with("likewise: ") && l.contains("final flush failed"))
        .collect();
    assert_eq!(said.len(), 1, "one line says why: {stderr:#?}");
    assert!(said[0].contains("the disk is full"), "{}", said[0]);
}

/// Every file under `dir` with its mode, directories included.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path.clone());
            }
            out.push((path, meta.permissions().mode() & 0o777));
        }
    }
    out
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private_whatever_the_umask() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let (child, addr, lines) = serve(&data);
    let api = Api::new(addr);
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let post = api.create_post(&alice, "private").await;
    api.put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    let (status, _) = tokio::task::spawn_blocking(move || terminate(child, lines))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");

    let backup = parent.path().join("backup.lwb");
    let out = Command::new(env!("CARGO_BIN_EXE_likewise"))
        .args(["backup", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    let inside = modes(&data);
    assert!(inside.len() >= 2, "sled's files are there: {inside:?}");
    for (path, mode) in inside {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} has mode {mode:o}", path.display());
    }
    assert_eq!(mode(&backup), 0o600, "the backup file");

    // A restore into a new directory creates it the same way.
    let restored = parent.path().join("restored").join("data");
    let mut restore = Command::new(env!("CARGO_BIN_EXE_likewise"));
    restore
        .args(["restore", "--from"])
        .arg(&backup)
        .arg("--data")
        .arg(&restored);
    // SAFETY: as in `serve`.
    unsafe {
        restore.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let out = restore.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&restored), 0o700, "the restored data directory");
    for (path, mode) in modes(&restored) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} has mode {mode:o}", path.display());
    }
}

/// When whatever reads the log goes away (a pipe into a process that exited, a
/// restarted log collector), writing a log line fails: the server must keep serving
/// and still stop gracefully on SIGTERM, never panic or ignore the signal.
#[tokio::test]
async fn a_log_reader_that_goes_away_breaks_neither_serving_nor_sigterm() {
    let parent = tempfile::tempdir().unwrap();
    let mut server = Server(
        serve_command(&parent.path().join("data"))
            .spawn()
            .expect("the likewise binary starts"),
    );
    let mut log = BufReader::new(server.0.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "no listening line");
        if let Some(addr) = listening_addr(&line) {
            break addr;
        }
    };
    // Our end of the log pipe closes: every later log line meets a broken pipe.
    drop(log);
    let api = Api::new(addr);
    for i in 0..3 {
        // Each request logs; the third proves the first two did not stop anything.
        let (status, body) = api.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
    let _alice = api.register("alice").await;
    let (status, _) = tokio::task::spawn_blocking(move || {
        let (_, lines) = std::sync::mpsc::channel();
        terminate(server, lines)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}
