//! Upgrades: a data directory written by release 0.1.0 (`tests/fixtures/v0.1.0`, with
//! the manifest of what its API answered) opened by this build, directly and through
//! a 0.1.0 backup. Every record reads back as it was, old tokens still work, and new
//! writes work. The committed fixture is never opened itself: a copy is.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_in, TestApp, ADMIN_TOKEN};

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/v0.1.0"
    ))
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixture().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

/// Copies the fixture's data directory: sled's `conf` and `db` files (git keeps no
/// empty folder, so sled's empty `blobs/` exists only where the fixture was written).
fn copy_data(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(fixture().join("data")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            let mut inside = std::fs::read_dir(entry.path()).unwrap();
            assert!(
                inside.next().is_none(),
                "the fixture holds files in {entry:?}"
            );
            continue;
        }
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Long enough that the fixture's finished tasks never expire under the test, nor
/// its sessions: they expire by the time they were issued (as every session does),
/// and the fixture's were issued when it was made.
fn keep_results(s: &mut likewise::config::Settings) {
    s.queue.result_ttl_s = 100 * 365 * 24 * 3600;
    s.accounts.session_ttl_s = 100 * 365 * 24 * 3600;
}

fn token<'a>(m: &'a Value, user: &str) -> &'a str {
    m["users"][user]["token"].as_str().unwrap()
}

/// Every read the manifest recorded answers the same now.
async fn reads_match(app: &TestApp, m: &Value) {
    let bob_id = m["users"]["bob"]["id"].as_u64().unwrap();
    for (what, expected) in m["reads"].as_object().unwrap() {
        let (who, path) = what.split_once(" GET ").unwrap();
        let path = match path {
            "/api/notifications" | "/api/posts" | "/api/users" => format!("{path}?limit=100"),
            "/api/messages" => format!("/api/messages?with={bob_id}"),
            "/api/admin/tasks" => "/api/admin/tasks?limit=100".to_owned(),
            other => other.to_owned(),
        };
        let token = if who == "admin" {
            ADMIN_TOKEN
        } else {
            token(m, who)
        };
        let (status, got) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{what}: {got}");
        let got = if who == "admin" {
            // Tasks the upgraded server enqueued itself (its built-in schedule) are
            // newer than every task of the fixture.
            let known: Vec<&Value> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|t| &t["id"])
                .collect();
            let old: Vec<Value> = got["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| known.contains(&&t["id"]))
                .cloned()
                .collect();
            Value::Array(old)
        } else {
            got
        };
        assert_eq!(&got, expected, "{what} differs after the upgrade");
    }
}

/// Old tokens and passwords work, and new writes work next to the old records.
async fn old_sessions_and_new_writes_work(app: &TestApp, m: &Value) {
    let posts: Vec<u64> = m["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    let (p1, p2, p3) = (posts[0], posts[1], posts[2]);
    let alice_id = m["users"]["alice"]["id"].as_u64().unwrap();
    for name in ["alice", "bob", "carol"] {
        let (status, me) = app.get("/api/me", token(m, name)).await;
        assert_eq!(status, StatusCode::OK, "{name}'s old token: {me}");
        assert_eq!(me["name"], name);
    }
    let second = m["users"]["alice"]["token2"].as_str().unwrap();
    let (status, _) = app.get("/api/me", second).await;
    assert_eq!(status, StatusCode::OK, "alice's second session");
    let (status, signed_in) = app
        .call(
            Method::POST,
            "/api/sessions",
            None,
            Some(json!({"name": "bob", "password": m["users"]["bob"]["password"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "old password: {signed_in}");

    // A like 0.1.0 stored stays; one taken back and given again notifies nobody twice.
    let (_, again) = app
        .put(&format!("/api/posts/{p3}/like"), token(m, "alice"))
        .await;
    assert_eq!(again["created"], false, "{again}");
    let (_, relike) = app
        .put(&format!("/api/posts/{p2}/like"), token(m, "carol"))
        .await;
    assert_eq!(relike["created"], true, "{relike}");
    assert!(
        relike["notification_id"].is_null(),
        "notified once, in 0.1.0"
    );
    // A new like: counted and notified in its commit, its text composed.
    let (_, like) = app
        .put(&format!("/api/posts/{p2}/like"), token(m, "bob"))
        .await;
    let id = like["notification_id"]
        .as_u64()
        .expect("a new notification");
    let (_, post) = app.get(&format!("/api/posts/{p2}"), token(m, "bob")).await;
    assert_eq!(post["likes_count"], 2, "{post}");
    let (_, page) = app.get("/api/notifications", token(m, "alice")).await;
    let newest = &page["notifications"][0];
    assert_eq!(newest["id"], id);
    assert_eq!(newest["text"], "bob liked your post \u{201c}Second\u{201d}");
    let max_old_id = m["reads"]["admin GET /api/admin/tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(id > max_old_id, "new ids continue above the old ones");
    // New comments and messages.
    let (status, c) = app
        .post(
            &format!("/api/posts/{p1}/comments"),
            token(m, "carol"),
            json!({"body": "after the upgrade"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let (status, msg) = app
        .post(
            "/api/messages",
            token(m, "bob"),
            json!({"to_user_id": alice_id, "body": "still here"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{msg}");
    let (_, p) = app.get(&format!("/api/posts/{p1}"), token(m, "bob")).await;
    let before = m["reads"]["alice GET /api/posts"]["posts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == p1)
        .unwrap()["comments_count"]
        .as_u64()
        .unwrap();
    assert_eq!(p["comments_count"], before + 1, "{p}");
}

#[tokio::test]
async fn a_v0_1_0_data_directory_opens_with_every_record_and_accepts_new_writes() {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_data(&data);
    let app = spawn_app_in(&data, keep_results).await;
    reads_match(&app, &m).await;
    old_sessions_and_new_writes_work(&app, &m).await;
    app.stop().await;
    // And again after a restart on the migrated directory.
    let app = spawn_app_in(&data, keep_results).await;
    let (status, _) = app.get("/api/me", token(&m, "alice")).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_v0_1_0_backup_restores_and_migrates() {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    copy_data(&old);
    // A backup file as 0.1.0 wrote it: its 26 tables' raw records, schema version 1.
    let file = dir.path().join("v0.1.0.backup");
    {
        let db = sled::open(&old).unwrap();
        let header = likewise::backup::Header {
            schema_version: 1,
            id_floor: db.generate_id().unwrap(),
        };
        let out = std::fs::File::create(&file).unwrap();
        let mut w = likewise::backup::SnapshotWriter::new(out, header).unwrap();
        for name in &likewise::store::TABLE_NAMES[..26] {
            for item in db.open_tree(name).unwrap().iter() {
                let (k, v) = item.unwrap();
                w.record(name, &k, &v).unwrap();
            }
        }
        w.finish().unwrap();
    }
    let restored = dir.path().join("restored");
    let summary = likewise::backup::restore(&file, &restored, false).expect("restores");
    assert_eq!(summary.schema_version, 1);
    let app = spawn_app_in(&restored, keep_results).await;
    reads_match(&app, &m).await;
    old_sessions_and_new_writes_work(&app, &m).await;
    app.stop().await;
}
