//! The real binary as an operator runs it: signals at the moment start-up reports
//! readiness.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// SIGTERM sent the instant `listening http=` is printed is a graceful stop: exit 0,
/// with the shutdown logged, every time.
#[test]
fn sigterm_at_the_ready_line_stops_gracefully() {
    for round in 0..10 {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_likewise"))
            .args(["serve", "--http", "127.0.0.1:0", "--resp", "off", "--data"])
            .arg(dir.path().join("data"))
            .env(
                "LIKEWISE_ADMIN_TOKEN",
                "process-test-admin-token-0123456789",
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the likewise binary starts");
        let pid = child.id() as libc::pid_t;
        // The log goes to one of the two streams: read both, signal at the first sight.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let readers: Vec<_> = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .into_iter()
        .map(|stream| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("listening http=") {
                        // SAFETY: kill has no memory preconditions; pid is our child.
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                    }
                    let _ = tx.send(line);
                }
            })
        })
        .collect();
        drop(tx);
        let (exited, exit) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = exited.send(child.wait().expect("wait"));
        });
        let status = exit
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                // SAFETY: as above; the stuck child must not outlive the test.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("round {round}: no exit within 30 s")
            });
        for reader in readers {
            reader.join().unwrap();
        }
        let log: Vec<String> = rx.iter().collect();
        assert!(
            log.iter().any(|l| l.contains("listening http=")),
            "round {round}: never ready: {log:#?}"
        );
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: SIGTERM at the ready line must stop gracefully, got {status:?}: {log:#?}"
        );
        assert!(
            log.iter().any(|l| l.contains("replayed into a snapshot")),
            "round {round}: the stop leaves the store quick to open: {log:#?}"
        );
    }
}

/// Runs `likewise ARGS` to its exit (at most 60 s); returns the exit code, stdout and
/// the stderr lines.
fn run_to_exit(args: &[&str], admin_token: Option<&str>) -> (Option<i32>, String, Vec<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_likewise"));
    match admin_token {
        Some(token) => command.env("LIKEWISE_ADMIN_TOKEN", token),
        None => command.env_remove("LIKEWISE_ADMIN_TOKEN"),
    };
    let child = command
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the likewise binary starts");
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("likewise {args:?} did not exit within 60 s")
        })
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// A start-up that fails says so in exactly one line, naming what to do.
fn one_line_failure(lines: &[String], needles: &[&str]) {
    let failures: Vec<_> = lines.iter().filter(|l| l.contains("likewise:")).collect();
    assert_eq!(failures.len(), 1, "one failure line: {lines:#?}");
    for needle in needles {
        assert!(failures[0].contains(needle), "{needle:?} in {lines:#?}");
    }
    assert!(
        !lines.iter().any(|l| l.contains("ERROR")),
        "the failure is not logged a second time: {lines:#?}"
    );
}

#[test]
fn a_taken_resp_port_fails_in_one_line_before_any_token_or_ready_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, _, lines) = run_to_exit(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--resp",
            &port,
            "--data",
            data,
        ],
        None,
    );
    assert_eq!(code, Some(1), "{lines:#?}");
    one_line_failure(&lines, &["RESP", &port, "already in use", "--resp"]);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("admin token") || l.contains("listening")),
        "nothing generated or announced before every listener is bound: {lines:#?}"
    );

    // The next start that succeeds is the one that generates and shows the token.
    let mut server = crate::readme::Server::start_with(dir.path(), &["--data", data], None);
    let line = server.wait_for("generated the admin token");
    let token = line.rsplit(' ').next().unwrap().to_owned();
    assert!(token.len() >= 32, "{line}");
    server.stop();
}

#[test]
fn a_taken_http_port_and_a_directory_in_use_each_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, _, lines) = run_to_exit(
        &["serve", "--http", &port, "--resp", "off", "--data", data],
        Some("process-test-admin-token-0123456789"),
    );
    assert_eq!(code, Some(1), "{lines:#?}");
    one_line_failure(&lines, &["HTTP", &port, "already in use", "--http"]);

    let server = crate::readme::Server::start(dir.path(), &["--data", data]);
    let (code, _, lines) = run_to_exit(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--resp",
            "off",
            "--data",
            data,
        ],
        Some("process-test-admin-token-0123456789"),
    );
    assert_eq!(code, Some(1), "{lines:#?}");
    one_line_failure(&lines, &["in use by another likewise process", "--data"]);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("Os {") || l.contains("WouldBlock")),
        "no raw error: {lines:#?}"
    );
    server.stop();
}

#[tokio::test]
async fn the_admin_token_can_be_replaced_while_the_server_runs_and_while_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let admin_status = |addr: String, token: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}/api/admin/stats"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    let mut server = crate::readme::Server::start_with(dir.path(), &["--data", data], None);
    let line = server.wait_for("generated the admin token");
    let first = line.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(admin_status(server.addr.clone(), first.clone()).await, 200);

    // While it runs: the state, then a rotation through the control socket.
    let (code, stdout, lines) = run_to_exit(&["admin-token", "--data", data], None);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(stdout.is_empty(), "the state goes to stderr: {stdout}");
    assert!(
        lines.iter().any(|l| l.contains("cannot be shown again")),
        "{lines:#?}"
    );
    let (code, stdout, lines) = run_to_exit(&["admin-token", "--data", data, "--rotate"], None);
    assert_eq!(code, Some(0), "{lines:#?}");
    let second = stdout.trim().to_owned();
    assert!(second.len() >= 32 && second != first, "{stdout}");
    assert_eq!(admin_status(server.addr.clone(), first.clone()).await, 401);
    assert_eq!(admin_status(server.addr.clone(), second.clone()).await, 200);
    server.stop();

    // Stopped: the store is opened directly.
    let (code, stdout, lines) = run_to_exit(&["admin-token", "--data", data, "--rotate"], None);
    assert_eq!(code, Some(0), "{lines:#?}");
    let third = stdout.trim().to_owned();
    assert!(third.len() >= 32 && third != second, "{stdout}");
    let server = crate::readme::Server::start_with(dir.path(), &["--data", data], None);
    assert_eq!(admin_status(server.addr.clone(), second).await, 401);
    assert_eq!(admin_status(server.addr.clone(), third).await, 200);
    let log = server.stop();
    assert!(
        !log.iter().any(|l| l.contains("generated the admin token")),
        "the rotated token is kept: {log:#?}"
    );

    // A token the operator chose is changed where it was chosen.
    let (code, _, lines) = run_to_exit(
        &["admin-token", "--data", data, "--rotate"],
        Some("process-test-admin-token-0123456789"),
    );
    assert_eq!(code, Some(2), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("LIKEWISE_ADMIN_TOKEN")));
}
