//! The release binary's footprint, as the README quotes it: file size, resident
//! memory of an idle server, and start-up time (spawn to the `listening http=` line).
//!
//! Run with `cargo bench --bench footprint`. Each figure is the median of
//! `LIKEWISE_BENCH_RUNS` (default 5) fresh starts on empty data directories.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One start: (start-up time, VmRSS in KiB two seconds after the ready line).
fn start_once() -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_likewise"))
        .args(["serve", "--http", "127.0.0.1:0", "--resp", "off", "--data"])
        .arg(dir.path().join("data"))
        .env("LIKEWISE_ADMIN_TOKEN", "bench-admin-token-0123456789abcdef")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("likewise starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    loop {
        let line = lines.next().expect("a log line").expect("readable");
        if line.contains("listening http=") {
            break;
        }
    }
    let startup = started.elapsed();
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(Duration::from_secs(2));
    let rss = common::status_kib(child.id(), "VmRSS");
    let _ = child.kill();
    let _ = child.wait();
    (startup, rss)
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("LIKEWISE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let size = std::fs::metadata(env!("CARGO_BIN_EXE_likewise"))
        .expect("the binary")
        .len();
    let (startups, rss): (Vec<_>, Vec<_>) = (0..runs).map(|_| start_once()).unzip();
    println!(
        "binary: {:.1} MB ({size} bytes, {})",
        size as f64 / 1e6,
        env!("CARGO_BIN_EXE_likewise")
    );
    println!(
        "idle resident memory (VmRSS 2 s after the ready line), median of {runs}: {:.1} MiB",
        median(rss) as f64 / 1024.0
    );
    println!(
        "start-up (spawn to `listening http=`), median of {runs}: {} ms (min {} ms, max {} ms)",
        median(startups.clone()).as_millis(),
        startups.iter().min().unwrap().as_millis(),
        startups.iter().max().unwrap().as_millis()
    );
}
