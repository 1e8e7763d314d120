//! The README's first steps, run as a new user runs them: the real binary in a fresh
//! directory, the curl walkthrough copied out of README.md, and `serve --demo`, in
//! either order and repeatedly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `likewise serve` child with its log.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    /// Starts `likewise serve ARGS` in `cwd` on a free port; waits for the ready line.
    pub(crate) fn start(cwd: &Path, args: &[&str]) -> Server {
        Server::start_with(cwd, args, Some("readme-test-admin-token-0123456789"))
    }

    /// As [`Server::start`]; without `admin_token` the server uses (or generates)
    /// the data directory's own.
    pub(crate) fn start_with(cwd: &Path, args: &[&str], admin_token: Option<&str>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_likewise"));
        match admin_token {
            Some(token) => command.env("LIKEWISE_ADMIN_TOKEN", token),
            None => command.env_remove("LIKEWISE_ADMIN_TOKEN"),
        };
        let mut child = command
            .current_dir(cwd)
            .args(["serve", "--http", "127.0.0.1:0", "--resp", "off"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the likewise binary starts");
        let (tx, log) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut server = Server {
            child,
            addr: String::new(),
            log,
            seen: Vec::new(),
        };
        let ready = server.wait_for("listening http=");
        let at = ready.find("listening http=").unwrap() + "listening http=".len();
        server.addr = ready[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('"')
            .to_owned();
        server
    }

    /// The first log line containing `needle`, waiting at most 60 s for it.
    pub(crate) fn wait_for(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.log.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no {needle:?} in the log: {:#?}", self.seen)
                }
            }
        }
    }

    /// Stops the server with SIGTERM; it must exit 0.
    pub(crate) fn stop(mut self) -> Vec<String> {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        self.seen.extend(self.log.try_iter());
        assert_eq!(status.code(), Some(0), "graceful stop: {:#?}", self.seen);
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shell block under "Walkthrough with curl", pointed at `addr`.
fn walkthrough(addr: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = &readme[readme
        .find("## Walkthrough with curl")
        .expect("the walkthrough section")..];
    let start = section.find("```sh\n").expect("a shell block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    section[start..end].replace("localhost:8080", addr)
}

/// Runs the walkthrough against `addr`; returns its output.
fn run_walkthrough(addr: &str) -> String {
    let out = Command::new("bash")
        .args(["-eu", "-c", &walkthrough(addr)])
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the walkthrough failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#""liked":true,"created":true"#),
        "the like answers: {stdout}"
    );
    assert!(
        stdout.contains(r#""kind":"like_post""#) && stdout.contains(r#""unread_count":1"#),
        "alice sees bob's like: {stdout}"
    );
    stdout
}

/// Signs in to the server at `addr` with curl, as the README's reader would.
fn sign_in(addr: &str, name: &str, password: &str) -> bool {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-XPOST"])
        .arg(format!("http://{addr}/api/sessions"))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(format!(r#"{{"name":"{name}","password":"{password}"}}"#))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout) == "200"
}

fn demo_accounts_work(server: &mut Server) {
    for (name, password) in [
        ("alice", "alice-demo"),
        ("bob", "bob-demo-1"),
        ("carol", "carol-demo"),
    ] {
        server.wait_for(&format!("demo user {name} password {password}"));
        assert!(
            sign_in(&server.addr, name, password),
            "the announced demo account {name} signs in"
        );
    }
}

#[test]
fn the_walkthrough_then_the_demo_both_work() {
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start(cwd.path(), &[]);
    run_walkthrough(&server.addr);
    // Again, on the same data: whatever ran before.
    run_walkthrough(&server.addr);
    server.stop();

    let mut demo = Server::start(cwd.path(), &["--demo"]);
    demo_accounts_work(&mut demo);
    let log = demo.stop();
    assert!(
        !log.iter().any(|l| l.contains("skipped")),
        "the demo has a directory of its own: {log:#?}"
    );
    assert!(cwd.path().join("likewise-demo").is_dir());
}

#[test]
fn the_demo_then_the_walkthrough_both_work() {
    let cwd = tempfile::tempdir().unwrap();
    let mut demo = Server::start(cwd.path(), &["--demo"]);
    demo_accounts_work(&mut demo);
    // The walkthrough against the running demo server, too.
    run_walkthrough(&demo.addr);
    demo.stop();

    let server = Server::start(cwd.path(), &[]);
    run_walkthrough(&server.addr);
    server.stop();
}

#[test]
fn the_demo_never_claims_an_account_it_did_not_create() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("shared-data");
    let data = data.to_str().unwrap();
    let server = Server::start(cwd.path(), &["--data", data]);
    let out = Command::new("curl")
        .args(["-s", "-XPOST"])
        .arg(format!("http://{}/api/users", server.addr))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(r#"{"name":"alice","password":"correct horse"}"#)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("token"));
    server.stop();

    let mut demo = Server::start(cwd.path(), &["--demo", "--data", data]);
    demo.wait_for("demo user alice skipped");
    demo.wait_for("demo user bob password bob-demo-1");
    assert!(sign_in(&demo.addr, "bob", "bob-demo-1"));
    assert!(
        sign_in(&demo.addr, "alice", "correct horse"),
        "alice's own password"
    );
    assert!(!sign_in(&demo.addr, "alice", "alice-demo"));
    let log = demo.stop();
    assert!(
        !log.iter().any(|l| l.contains("demo user alice password")),
        "the demo does not announce an account it does not own: {log:#?}"
    );
}
