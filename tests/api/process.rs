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
    }
}
