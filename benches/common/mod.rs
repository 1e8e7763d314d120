//! What several benches measure the same way: a data directory's size, a process's
//! memory from `/proc`, the open-file limit, the HTTP client they load the server
//! with, and joining a room over `/ws`. Each bench includes this module with
//! `mod common;`.

#![allow(dead_code)] // not every bench uses every helper

use std::path::Path;

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        total += if path.is_dir() {
            dir_bytes(&path)
        } else {
            entry.metadata().map_or(0, |m| m.len())
        };
    }
    total
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Raises this process's soft open-file limit to its hard limit (children
/// inherit it): benches holding thousands of sockets need every descriptor.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A number from the environment variable `name` (`_` allowed between digits, as
/// in `1_000_000`), or `default` when it is unset or not a number.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The load average over the last minute, from `/proc/loadavg`, printed next to
/// figures that a busy machine moves.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// An HTTP/1.1 client holding one keep-alive connection per host: each load task
/// owns one, so that N tasks are N connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client")
}

/// A `/ws` client connection (plain TCP).
pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Joins `room` over `/ws` and waits for the confirmation.
pub async fn subscribe(ws: &mut Ws, room: &str) {
    use futures::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        serde_json::json!({"op": "subscribe", "room": room}).to_string(),
    ))
    .await
    .expect("send");
    loop {
        let m = ws.next().await.expect("open").expect("ok");
        if m.to_text().unwrap_or("").contains("\"subscribed\"") {
            return;
        }
    }
}
