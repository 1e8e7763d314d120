//! Throttles that hold: sign-in attempts are reserved before the password is
//! checked, per client address first and per name for the addresses that failed on
//! it; registrations per address; and password hashing bounded so that a burst of
//! registrations does not inflate the server's memory (on the real binary).

use std::net::IpAddr;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{install_crypto, spawn_app_with, Binary, TestApp};

/// A client whose connections come from `ip` (any 127.x.y.z is loopback).
fn client_from(ip: &str) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Sends a sign-in from `client`; the status and the `Retry-After` header.
async fn sign_in(
    app_url: &str,
    client: &reqwest::Client,
    name: &str,
    password: &str,
) -> (StatusCode, Option<u64>) {
    let resp = client
        .post(format!("{app_url}/api/sessions"))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .expect("sent");
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (resp.status(), retry)
}

fn base(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

#[tokio::test]
async fn simultaneous_guesses_are_throttled_and_the_owner_still_signs_in_from_elsewhere() {
    let app = spawn_app_with(|_| {}).await;
    app.register("victim").await;
    let url = base(&app);
    let attacker = client_from("127.0.0.1");
    let guesses = futures::future::join_all((0..60).map(|i| {
        let (url, attacker) = (url.clone(), attacker.clone());
        async move { sign_in(&url, &attacker, "victim", &format!("guess-{i:04}")).await }
    }))
    .await;
    let throttled: Vec<_> = guesses
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        throttled.len() >= 50,
        "only {} of 60 simultaneous guesses were throttled: {guesses:?}",
        throttled.len()
    );
    assert!(
        guesses
            .iter()
            .all(|(s, _)| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{guesses:?}"
    );
    for (_, retry) in &throttled {
        let secs = retry.expect("a 429 says when to retry");
        assert!((1..=60).contains(&secs), "Retry-After: {secs}");
    }

    let (status, _) = sign_in(&url, &client_from("127.0.0.2"), "victim", "password123").await;
    assert_eq!(status, StatusCode::OK, "the owner is not locked out");
    let (status, _) = sign_in(&url, &attacker, "victim", "password123").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the guessing address stays throttled"
    );
}

#[tokio::test]
async fn guesses_spread_over_addresses_stop_at_the_name_limit_for_those_addresses() {
    let app = spawn_app_with(|s| {
        s.limits.login_failures = 3;
    })
    .await;
    app.register("victim").await;
    let url = base(&app);
    for ip in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        let (status, _) = sign_in(&url, &client_from(ip), "victim", "wrong-guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, retry) = sign_in(&url, &client_from("127.0.0.3"), "victim", "wrong-guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some());
    // The same address may still sign in to other names.
    app.register("other").await;
    let (status, _) = sign_in(&url, &client_from("127.0.0.3"), "other", "password123").await;
    assert_eq!(status, StatusCode::OK);
    // An address that never failed on the name gets in.
    let (status, _) = sign_in(&url, &client_from("127.0.0.2"), "victim", "password123").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn overlong_names_are_refused_and_counted_like_any_wrong_guess() {
    let app = spawn_app_with(|s| s.accounts.login_failures_per_ip = 3).await;
    let url = base(&app);
    let client = client_from("127.0.0.1");
    let long = "n".repeat(100_000);
    for _ in 0..3 {
        let (status, _) = sign_in(&url, &client, &long, "password123").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, retry) = sign_in(&url, &client, "anyone", "password123").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some());
}

#[tokio::test]
async fn registrations_are_limited_per_address() {
    let app = spawn_app_with(|s| s.accounts.registrations_per_ip = 3).await;
    let url = base(&app);
    let register = |client: reqwest::Client, name: String| {
        let url = url.clone();
        async move {
            let resp = client
                .post(format!("{url}/api/users"))
                .json(&json!({"name": name, "password": "password123"}))
                .send()
                .await
                .unwrap();
            let retry = resp.headers().get("retry-after").cloned();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            (status, retry, body)
        }
    };
    let here = client_from("127.0.0.1");
    for i in 0..3 {
        let (status, _, body) = register(here.clone(), format!("user{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, retry, body) = register(here.clone(), "user3".into()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(retry.is_some());
    let (status, _, body) = register(here.clone(), "has space".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _, body) = register(client_from("127.0.0.2"), "user3".into()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A `/proc/<pid>/status` memory figure in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("field present");
    kib * 1024
}

#[tokio::test]
async fn two_hundred_simultaneous_registrations_stay_within_64_mib_of_idle() {
    const MIB: u64 = 1024 * 1024;
    let server = Binary::start(
        // Two hashes at once (the default on a two-core machine) whatever the machine:
        // the bound is about 19 MiB per hash running.
        "[accounts]\nregistrations_per_ip = 1000\nhashing_threads = 2\n",
        "info",
    )
    .await;
    let (addr, pid) = (server.addr, server.pid());
    let client = reqwest::Client::new();
    // One registration first: the store, the allocator and the runtime warm up.
    let warm = client
        .post(format!("http://{addr}/api/users"))
        .json(&json!({"name": "warmup", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), StatusCode::CREATED);
    let idle = memory(pid, "VmRSS");

    let answers = futures::future::join_all((0..200).map(|i| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://{addr}/api/users"))
                .json(&json!({"name": format!("user{i}"), "password": "password123"}))
                .send()
                .await
                .map(|r| r.status())
        }
    }))
    .await;
    let created = answers
        .iter()
        .filter(|a| matches!(a, Ok(StatusCode::CREATED)))
        .count();
    let peak = memory(pid, "VmHWM");
    let after = memory(pid, "VmRSS");
    server.stop();
    assert_eq!(created, 200, "{answers:?}");
    let rise = peak.saturating_sub(idle);
    eprintln!(
        "idle RSS {} MiB, peak {} MiB, after {} MiB",
        idle / MIB,
        peak / MIB,
        after / MIB
    );
    assert!(
        rise < 64 * MIB,
        "the peak rose {} MiB above idle ({} MiB)",
        rise / MIB,
        idle / MIB
    );
    assert!(
        after < idle + 64 * MIB,
        "RSS stayed {} MiB above idle",
        (after - idle) / MIB
    );
}
