//! The RESP listener under attack, on the real binary: each test starts
//! `likewise serve` as a child process, attacks its RESP port the way a hostile
//! peer would, and asserts what the server must do (refuse, close, stay within a
//! CPU and memory budget measured from `/proc/<pid>`) and that an honest client
//! is still served afterwards.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::helpers::{read_to_close, ADMIN_TOKEN};

const WAIT: Duration = Duration::from_secs(20);
const MIB: u64 = 1024 * 1024;

/// A `likewise serve` child with its RESP address and the log lines it printed.
struct Server {
    child: Child,
    resp: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// Woken each time a log line arrives.
    new_line: Arc<tokio::sync::Notify>,
    _dir: tempfile::TempDir,
}

/// Starts the binary with `config` as its TOML config file and an optional RESP
/// password; waits for its `listening resp=` line.
async fn start(config: &str, password: Option<&str>) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("likewise.toml");
    std::fs::write(&config_path, config).expect("config written");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_likewise"));
    cmd.args(["serve", "--config"])
        .arg(&config_path)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--resp",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .env("LIKEWISE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .env_remove("LIKEWISE_RESP_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("LIKEWISE_RESP_PASSWORD", p);
    }
    let mut child = cmd.spawn().expect("the likewise binary starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = oneshot::channel();
    let lines = log.clone();
    let new_line = Arc::new(tokio::sync::Notify::new());
    let wake = new_line.clone();
    // Keeps draining stderr so that logging never blocks the child.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening resp=").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                if let (Some(tx), Ok(addr)) = (tx.take(), addr.parse::<SocketAddr>()) {
                    let _ = tx.send(addr);
                }
            }
            lines.lock().unwrap().push(line);
            wake.notify_waiters();
        }
    });
    let resp = tokio::time::timeout(WAIT, rx)
        .await
        .expect("listening within 20 s")
        .expect("a listening line before the output ended");
    Server {
        child,
        resp,
        log,
        new_line,
        _dir: dir,
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU time the server has used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which may hold spaces) start at `state`.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields[11].parse().unwrap();
        let stime: f64 = fields[12].parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (utime + stime) / ticks
    }

    /// A `/proc/<pid>/status` memory figure (`VmRSS`, `VmHWM`) in bytes.
    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .expect("field present");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib * 1024
    }

    /// Whether the server logs a line containing `text` within [`WAIT`]: the log is
    /// read by another thread, so a line may arrive just after the reply it explains.
    async fn logged(&self, text: &str) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.new_line.notified();
            tokio::pin!(arrived);
            // Registered before the look, so a line pushed in between still wakes us.
            arrived.as_mut().enable();
            if self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return false;
            }
        }
    }

    fn url(&self, password: Option<&str>) -> String {
        match password {
            Some(p) => format!("redis://:{p}@{}/", self.resp),
            None => format!("redis://{}/", self.resp),
        }
    }

    async fn client(&self, password: Option<&str>) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(WAIT));
        redis::Client::open(self.url(password))
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("an honest client connects")
    }

    async fn pubsub(&self) -> redis::aio::PubSub {
        redis::Client::open(self.url(None))
            .unwrap()
            .get_async_pubsub()
            .await
            .expect("an honest subscriber connects")
    }

    async fn raw(&self) -> TcpStream {
        TcpStream::connect(self.resp).await.expect("connects")
    }

    /// An honest client still gets answers.
    async fn still_serves(&self, password: Option<&str>) {
        let mut con = self.client(password).await;
        let pong: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .expect("an honest client's PING is answered");
        assert_eq!(pong, "PONG");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn numsub(con: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(con)
        .await
        .unwrap();
    counts[0].1
}

/// Reproduction: a web page POSTs to the RESP port; the body's lines must never
/// run as commands.
#[tokio::test]
async fn a_browser_post_to_the_resp_port_is_closed_before_its_body_runs() {
    let server = start("", None).await;
    let mut sub = server.pubsub().await;
    sub.subscribe("user:1").await.unwrap();
    let mut attack = server.raw().await;
    let body = "PUBLISH user:1 {\"event\":\"new_notification\",\"data\":\"fake\"}\r\n";
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:6379\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = attack.write_all(request.as_bytes()).await;
    let answer = read_to_close(&mut attack).await;
    assert!(
        answer.is_empty(),
        "nothing is answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The next message the subscriber sees is the honest one: the fake never ran.
    let mut con = server.client(None).await;
    let n: i64 = con.publish("user:1", "honest").await.unwrap();
    assert_eq!(n, 1);
    let msg = tokio::time::timeout(WAIT, sub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_payload_bytes(), b"honest");
    assert!(server.logged("Possible SECURITY ATTACK detected").await);
}

/// Reproduction: trickling into a huge incomplete request must cost CPU in
/// proportion to the bytes received, not to the square of the request.
#[tokio::test]
async fn trickling_into_a_huge_request_costs_cpu_linear_in_its_bytes() {
    let server = start("", None).await;
    let mut attack = server.raw().await;
    let mut head = b"*1048576\r\n".to_vec();
    for _ in 0..1_000_000 {
        head.extend_from_slice(b"$0\r\n\r\n");
    }
    let before = server.cpu_seconds();
    attack.write_all(&head).await.unwrap();
    for _ in 0..2000 {
        attack.write_all(b"$0\r\n\r\n").await.unwrap();
        // Pacing, so that each piece arrives in a read of its own.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Round trip on another connection: every piece was read meanwhile.
    server.still_serves(None).await;
    let spent = server.cpu_seconds() - before;
    eprintln!("measured: {spent:.2} s of server CPU");
    // Decoding the 6 MB once costs well under a second, even unoptimised;
    // re-scanning them on each of the 2,000 reads costs several seconds.
    assert!(
        spent < 2.0,
        "a 6 MB request, then 2,000 small reads into it, cost {spent:.2} s of CPU"
    );
}

/// Reproduction: nested aggregates are not requests; they are refused at their
/// first nested header, before anything is built from them.
#[tokio::test]
async fn nested_requests_are_refused_before_they_are_built() {
    let server = start("", None).await;
    let baseline = server.memory("VmRSS");
    let mut nested = b"*2\r\n*1048576\r\n".to_vec();
    for _ in 0..1_048_576 {
        nested.extend_from_slice(b":1\r\n");
    }
    let nested = Arc::new(nested);
    let attacks = (0..3).map(|_| {
        let nested = nested.clone();
        let addr = server.resp;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let (mut rd, mut wr) = s.split();
            // The server may close while the request is still being sent.
            let (_, answer) = tokio::join!(wr.write_all(&nested), async {
                let mut all = Vec::new();
                let _ = tokio::time::timeout(WAIT, rd.read_to_end(&mut all)).await;
                all
            });
            answer
        }
    });
    for answer in futures::future::join_all(attacks).await {
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "-ERR Protocol error: expected '$', got '*'\r\n"
        );
    }
    let peak = server.memory("VmHWM");
    eprintln!(
        "measured: peak RSS {} MiB over the baseline",
        peak.saturating_sub(baseline) / MIB
    );
    assert!(
        peak < baseline + 48 * MIB,
        "peak RSS grew by {} MiB",
        (peak - baseline) / MIB
    );
    server.still_serves(None).await;
}

/// Reproduction: pattern subscriptions are bounded in length and number, so that
/// matching them cannot make publishing slow.
#[tokio::test]
async fn pattern_subscriptions_are_bounded_and_publishing_stays_cheap() {
    let server = start("", None).await;
    let mut con = server.client(None).await;
    let long = format!("*[{}]", "a".repeat(MIB as usize));
    let request = format!("*2\r\n$10\r\nPSUBSCRIBE\r\n${}\r\n{long}\r\n", long.len());
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let mut s = server.raw().await;
        s.write_all(request.as_bytes()).await.unwrap();
        let answer = first_line(&mut s).await;
        assert!(answer.starts_with("-ERR pattern too long"), "{answer}");
        attackers.push(s);
    }
    let mut raw = server.raw().await;
    let many: String = (0..1000).map(|i| format!(" p{i}:*")).collect();
    raw.write_all(format!("PSUBSCRIBE{many}\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_to_close_or_error(&mut raw).await;
    assert!(
        answer.contains("-ERR too many pattern subscriptions"),
        "{answer}"
    );
    let numpat: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(numpat <= 128, "{numpat} patterns registered");
    let before = server.cpu_seconds();
    for i in 0..200 {
        let _: i64 = con.publish(format!("user:{i}"), "x").await.unwrap();
    }
    let spent = server.cpu_seconds() - before;
    eprintln!("measured: {spent:.2} s of server CPU");
    assert!(spent < 1.0, "200 publishes cost {spent:.2} s of CPU");
    drop(attackers);
}

/// The first line the server answers.
async fn first_line(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut byte = [0u8; 1];
    let _ = tokio::time::timeout(WAIT, async {
        while !all.ends_with(b"\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(_) => all.push(byte[0]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&all).into_owned()
}

/// Reads until an error line arrives; returns everything read as text.
async fn read_to_close_or_error(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(WAIT, async {
        while !all.windows(5).any(|w| w == b"\r\n-ERR") && !all.starts_with(b"-ERR") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&all).into_owned()
}

/// Reproduction: a subscriber that never reads holds at most its byte budget
/// (hard limit 32 MiB), then is dropped; a reading subscriber gets everything.
#[tokio::test]
async fn a_subscriber_that_never_reads_is_dropped_at_its_byte_budget() {
    let server = start("", None).await;
    let mut stalled = server.raw().await;
    stalled.write_all(b"SUBSCRIBE big\r\n").await.unwrap();
    let mut confirm = [0u8; 32];
    stalled.read_exact(&mut confirm).await.unwrap();
    let mut reader = server.pubsub().await;
    reader.subscribe("big").await.unwrap();
    let baseline = server.memory("VmRSS");
    let payload = vec![b'x'; MIB as usize];
    let count = 200;
    // The reader reports each message it got, and the publisher stays at most
    // `AHEAD` messages ahead of it: well under the 32 MiB budget, however slowly
    // this process is scheduled, so only the subscriber that never reads overflows.
    const AHEAD: usize = 8;
    let (progress, mut got) = tokio::sync::watch::channel(0usize);
    let received = tokio::spawn(async move {
        let mut n = 0;
        {
            let mut messages = reader.on_message();
            while n < count {
                let msg = tokio::time::timeout(WAIT, messages.next())
                    .await
                    .expect("the reader keeps receiving")
                    .expect("the reading subscriber stays connected");
                assert_eq!(msg.get_payload_bytes().len(), MIB as usize);
                n += 1;
                let _ = progress.send(n);
            }
        }
        (n, reader)
    });
    let mut con = server.client(None).await;
    for sent in 0..count {
        tokio::time::timeout(WAIT, got.wait_for(|&n| n + AHEAD >= sent))
            .await
            .expect("the reader keeps up with a bounded window")
            .expect("the reader is alive");
        let _: i64 = con.publish("big", payload.as_slice()).await.unwrap();
    }
    let (n, _reader) = received.await.unwrap();
    assert_eq!(n, count);
    assert_eq!(
        numsub(&mut con, "big").await,
        1,
        "the stalled one was dropped"
    );
    let peak = server.memory("VmHWM");
    eprintln!(
        "measured: peak RSS {} MiB over the baseline",
        peak.saturating_sub(baseline) / MIB
    );
    assert!(
        peak < baseline + 128 * MIB,
        "peak RSS grew by {} MiB for one stalled subscriber",
        (peak - baseline) / MIB
    );
    server.still_serves(None).await;
}

/// Reproduction: a subscriber that falls behind for a while (here: it reads
/// nothing until everything is published, while a hundred others never read at
/// all) stays within its budget and is not dropped.
#[tokio::test]
async fn a_reader_that_falls_behind_is_not_dropped_while_others_stall() {
    let server = start("", None).await;
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut s = server.raw().await;
        s.write_all(b"SUBSCRIBE firehose\r\n").await.unwrap();
        let mut confirm = [0u8; 37];
        s.read_exact(&mut confirm).await.unwrap();
        stalled.push(s);
    }
    let mut reader = server.raw().await;
    reader.write_all(b"SUBSCRIBE firehose\r\n").await.unwrap();
    let mut confirm = [0u8; 37];
    reader.read_exact(&mut confirm).await.unwrap();
    let payload = vec![b'x'; 512];
    let count = 12_000;
    let mut con = server.client(None).await;
    let mut pipe = redis::pipe();
    for _ in 0..count {
        pipe.publish("firehose", payload.as_slice()).ignore();
    }
    let _: () = pipe.query_async(&mut con).await.unwrap();
    let frame = format!(
        "*3\r\n$7\r\nmessage\r\n$8\r\nfirehose\r\n$512\r\n{}\r\n",
        "x".repeat(512)
    );
    let mut got = vec![0u8; frame.len() * count];
    tokio::time::timeout(WAIT, reader.read_exact(&mut got))
        .await
        .expect("every message arrives in time")
        .expect("the reader was not dropped");
    assert!(got.chunks(frame.len()).all(|c| c == frame.as_bytes()));
    drop(stalled);
}

/// Reproduction: a bridged Socket.IO emit reaches exactly the rooms it names,
/// and the number of rooms one message may name is bounded.
#[tokio::test]
async fn a_bridged_emit_names_a_bounded_number_of_rooms() {
    let server = start("", None).await;
    let mut rooms = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let mut s = server.pubsub().await;
        s.subscribe(name).await.unwrap();
        rooms.push(s);
    }
    let mut con = server.client(None).await;
    let emit = |room: serde_json::Value| {
        serde_json::json!({"method": "emit", "event": "e", "data": [1], "namespace": "/",
                           "room": room})
        .to_string()
    };
    let n: i64 = con
        .publish("flask-socketio", emit(serde_json::json!(["a", "b", "c"])))
        .await
        .unwrap();
    assert_eq!(n, 3);
    let huge: Vec<String> = (0..200_000).map(|i| format!("r{i}")).collect();
    let before = server.cpu_seconds();
    let n: i64 = con
        .publish("flask-socketio", emit(serde_json::json!(huge)))
        .await
        .unwrap();
    let spent = server.cpu_seconds() - before;
    eprintln!("measured: {spent:.2} s of server CPU");
    assert_eq!(n, 0, "a message naming too many rooms is refused");
    assert!(spent < 1.0, "refusing it cost {spent:.2} s of CPU");
    assert!(server.logged("names 200000 rooms").await);
    // Only a, b and c got the first emit: d's first message is a later one.
    let n: i64 = con
        .publish("flask-socketio", emit(serde_json::json!("d")))
        .await
        .unwrap();
    assert_eq!(n, 1);
    for (i, sub) in rooms.iter_mut().enumerate() {
        let msg = tokio::time::timeout(WAIT, sub.on_message().next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.get_channel_name(), ["a", "b", "c", "d"][i]);
    }
}

/// Reproduction: a connection that never authenticates is closed at the AUTH
/// deadline, and repeated AUTH failures from one address are throttled.
#[tokio::test]
async fn unauthenticated_connections_have_a_deadline_and_auth_failures_a_throttle() {
    let password = Some("s3cret");
    let server = start(
        "[limits]\nresp_auth_timeout_ms = 300\nresp_auth_failures = 3\nresp_auth_window_s = 60\n",
        password,
    )
    .await;
    let mut idle = server.raw().await;
    let started = Instant::now();
    let answer = read_to_close(&mut idle).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(
        String::from_utf8_lossy(&answer).contains("authentication"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // An authenticated client is not bound by the deadline.
    let mut honest = server.client(password).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let pong: String = redis::cmd("PING").query_async(&mut honest).await.unwrap();
    assert_eq!(pong, "PONG");

    let mut guesser = server.raw().await;
    guesser
        .write_all(b"AUTH a\r\nAUTH b\r\nAUTH c\r\nAUTH s3cret\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut guesser).await).into_owned();
    assert_eq!(answer.matches("-WRONGPASS").count(), 3, "{answer}");
    assert!(
        answer
            .ends_with("-ERR too many failed AUTH attempts from this address; try again later\r\n"),
        "{answer}"
    );
    assert!(!answer.contains("+OK"), "{answer}");
}
