//! `likewise backup` and `likewise restore`, through the real binary, against a server
//! that keeps running (and writing) while the backup is taken.

use std::path::Path;
use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_in};

/// Runs the `likewise` binary with `args` off the async threads.
async fn likewise(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_likewise"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("likewise runs")
    })
    .await
    .expect("blocking task")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_users_posts_likes_notifications_and_tokens() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Kept safe").await;
    let (_, like) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert!(like["notification_id"].as_u64().is_some(), "{like}");
    let (status, _) = app
        .post(
            &format!("/api/posts/{post}/comments"),
            &bob.token,
            json!({"body": "nice"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Both notifications (the like's and the comment's) are stored before the backup.
    let notifications_before = app
        .eventually(std::time::Duration::from_secs(10), || async {
            let (_, before) = app.get("/api/notifications", &alice.token).await;
            let n = before["notifications"].as_array().map_or(0, Vec::len);
            (n == 2).then_some(n)
        })
        .await;

    // Writers keep going while the backup is taken.
    let busy = {
        let client = app.client.clone();
        let url = app.url("/api/posts");
        let token = alice.token.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let _ = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"title": format!("during {i}"), "body": "x"}))
                    .send()
                    .await;
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("likewise.backup");
    let out = likewise(&["backup", "--data", path(&app.data), "--out", path(&file)]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("from the running server"),
        "{}",
        text(&out)
    );
    busy.await.unwrap();

    // The server is still up; restore into a new directory and serve from it.
    let restored = dir.path().join("restored");
    let out = likewise(&["restore", "--from", path(&file), "--data", path(&restored)]).await;
    assert!(out.status.success(), "{}", text(&out));
    let copy = spawn_app_in(&restored, |_| {}).await;

    let (status, me) = copy.get("/api/me", &alice.token).await;
    assert_eq!(status, StatusCode::OK, "tokens survive: {me}");
    assert_eq!(me["name"], "alice");
    let (status, p) = copy.get(&format!("/api/posts/{post}"), &bob.token).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["title"], "Kept safe");
    let (_, relike) = copy
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert_eq!(relike["created"], false, "the like is there: {relike}");
    let (_, comments) = copy
        .get(&format!("/api/posts/{post}/comments"), &alice.token)
        .await;
    assert_eq!(comments["comments"].as_array().unwrap().len(), 1);
    let (_, after) = copy.get("/api/notifications", &alice.token).await;
    let kinds: Vec<&str> = after["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"like_post"), "{after}");
    assert_eq!(kinds.len(), notifications_before, "{after}");

    // New ids continue above every restored one.
    let (_, listing) = copy.get("/api/posts?limit=100", &alice.token).await;
    let max_id = listing["posts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .max()
        .unwrap();
    let carol = copy.register("carol").await;
    assert!(carol.id > max_id, "{} <= {max_id}", carol.id);
    let newer = copy.create_post(&carol, "After restore").await;
    assert!(newer > carol.id);

    // A directory in use is refused, with or without --force.
    let out = likewise(&["restore", "--from", path(&file), "--data", path(&restored)]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    let out = likewise(&[
        "restore",
        "--from",
        path(&file),
        "--data",
        path(&restored),
        "--force",
    ])
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("stop it"), "{}", text(&out));
    copy.stop().await;

    // Stopped: an offline backup works, and --force replaces the directory.
    let offline = dir.path().join("offline.backup");
    // The stopped server's last tasks may still hold the store for a moment after
    // `stop` returns; poll until the directory is free (bounded).
    let mut attempts = 0;
    let out = loop {
        let out = likewise(&["backup", "--data", path(&restored), "--out", path(&offline)]).await;
        attempts += 1;
        if out.status.success() || attempts == 50 {
            break out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("from the stopped store"),
        "{}",
        text(&out)
    );
    let out = likewise(&[
        "restore",
        "--from",
        path(&file),
        "--data",
        path(&restored),
        "--force",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let again = spawn_app_in(&restored, |_| {}).await;
    let (status, _) = again.get("/api/me", &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    let (_, listing): (StatusCode, Value) = again.get("/api/posts?limit=100", &alice.token).await;
    assert!(
        listing["posts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["title"] != "After restore"),
        "the forced restore replaced the later writes"
    );
    again.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_corrupted_backup_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    app.create_post(&alice, "Hello").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.backup");
    let out = likewise(&["backup", "--data", path(&app.data), "--out", path(&file)]).await;
    assert!(out.status.success(), "{}", text(&out));
    let good = std::fs::read(&file).unwrap();

    let truncated = dir.path().join("truncated.backup");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let target = dir.path().join("t");
    let out = likewise(&[
        "restore",
        "--from",
        path(&truncated),
        "--data",
        path(&target),
    ])
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("truncated"), "{}", text(&out));
    assert!(!target.exists(), "nothing written");

    let corrupt = dir.path().join("corrupt.backup");
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&corrupt, &bytes).unwrap();
    std::fs::create_dir(&target).unwrap();
    let out = likewise(&[
        "restore",
        "--from",
        path(&corrupt),
        "--data",
        path(&target),
        "--force",
    ])
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("corrupt"), "{}", text(&out));
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing written"
    );

    let out = likewise(&[
        "restore",
        "--from",
        path(&dir.path().join("missing")),
        "--data",
        path(&target),
    ])
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("cannot open"), "{}", text(&out));

    let out = likewise(&[
        "backup",
        "--data",
        path(&dir.path().join("nothing")),
        "--out",
        path(&file),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("holds no likewise data"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        good,
        "a failed backup leaves the old file"
    );
    app.stop().await;
}
