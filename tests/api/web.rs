//! The bundled pages and their assets, the admin event stream, and `--demo` seeding.

use std::time::Duration;

use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_in, spawn_app_with, TestApp, ADMIN_TOKEN};

async fn asset_prefix(app: &TestApp) -> String {
    app.asset_prefix().await
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> &str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_pages_are_html_that_is_always_revalidated() {
    let app = spawn_app().await;
    for path in ["/", "/dashboard"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&resp, CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&resp, CACHE_CONTROL), "no-cache");
        assert!(header(&resp, ETAG).starts_with('"'));
        assert!(resp
            .headers()
            .contains_key(reqwest::header::CONTENT_SECURITY_POLICY));
        let body = resp.text().await.unwrap();
        assert!(body.starts_with("<!doctype html>"));
        assert!(
            !body.contains("%ASSETS%") && !body.contains("%DEMO_USERS%"),
            "placeholders are filled in"
        );
    }
}

#[tokio::test]
async fn assets_have_their_content_type_a_long_cache_life_and_an_etag() {
    let app = spawn_app().await;
    let prefix = asset_prefix(&app).await;
    for (file, kind) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml; charset=utf-8"),
    ] {
        let url = app.url(&format!("{prefix}/{file}"));
        let resp = app.client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{file}");
        assert_eq!(header(&resp, CONTENT_TYPE), kind, "{file}");
        assert_eq!(
            header(&resp, CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        let etag = header(&resp, ETAG).to_owned();
        assert!(etag.len() > 10, "{file} has an ETag");

        let again = app
            .client
            .get(&url)
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{file}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn an_outdated_asset_version_is_served_but_not_cached_for_long() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/assets/000000000000/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, CACHE_CONTROL), "no-cache");
}

#[tokio::test]
async fn text_is_gzipped_when_the_client_asks() {
    let app = spawn_app().await;
    let prefix = asset_prefix(&app).await;
    let url = app.url(&format!("{prefix}/app.js"));
    let plain = app.client.get(&url).send().await.unwrap();
    assert_eq!(header(&plain, CONTENT_ENCODING), "");
    let plain_len = plain.bytes().await.unwrap().len();

    let gz = app
        .client
        .get(&url)
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), StatusCode::OK);
    assert_eq!(header(&gz, CONTENT_ENCODING), "gzip");
    let body = gz.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
    assert!(body.len() < plain_len / 2, "{} vs {plain_len}", body.len());

    let page = app
        .client
        .get(app.url("/"))
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&page, CONTENT_ENCODING), "gzip");
}

#[tokio::test]
async fn a_missing_asset_is_a_404_in_the_api_error_shape() {
    let app = spawn_app().await;
    let prefix = asset_prefix(&app).await;
    for path in [
        format!("{prefix}/nope.js"),
        format!("{prefix}/index.html"),
        format!("{prefix}/../Cargo.toml"),
    ] {
        let resp = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        assert!(body["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn the_admin_stream_needs_the_admin_token() {
    let app = spawn_app().await;
    let user = app.register("alice").await;
    let resp = app
        .client
        .get(app.url("/api/admin/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let wrong = app
        .client
        .get(app.url("/api/admin/stream?token=not-the-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let as_user = app
        .client
        .get(app.url(&format!("/api/admin/stream?token={}", user.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), StatusCode::FORBIDDEN);
}

/// Reads server-sent events until one named `name` arrives; returns its data.
async fn next_event(resp: &mut reqwest::Response, buffer: &mut String, name: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if event == name {
                return serde_json::from_str(&data).expect("event data is JSON");
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("an event within 10 s")
            .expect("stream readable")
            .expect("stream still open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_admin_stream_sends_stats_every_second_and_ends_at_shutdown() {
    // A task that succeeds every second, kept so that the stats have one to show.
    let app = spawn_app_with(|s| {
        s.queue.keep_unowned_results = true;
        s.schedules = vec![likewise::config::ScheduleSettings {
            task: "purge_expired_results".into(),
            every_s: 1,
        }];
    })
    .await;
    app.eventually(Duration::from_secs(10), || async {
        let (_, done) = app.get("/api/admin/tasks?state=success", ADMIN_TOKEN).await;
        (!done["tasks"].as_array()?.is_empty()).then_some(())
    })
    .await;

    let mut resp = app
        .client
        .get(app.url(&format!("/api/admin/stream?token={ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, CONTENT_TYPE).starts_with("text/event-stream"));
    let mut buffer = String::new();
    let first = next_event(&mut resp, &mut buffer, "stats").await;
    for key in [
        "queue",
        "by_name",
        "workers",
        "totals",
        "rates",
        "connections",
    ] {
        assert!(first.get(key).is_some(), "stats has {key}: {first}");
    }
    assert!(first["totals"]["completed"].as_u64().unwrap() >= 1);
    assert!(first["queue"]["success"].as_u64().unwrap() >= 1);
    let second = next_event(&mut resp, &mut buffer, "stats").await;
    assert!(second["uptime_s"].is_u64());

    // Also with the token in the header.
    let header_auth = app
        .client
        .get(app.url("/api/admin/stream"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(header_auth.status(), StatusCode::OK);
    drop(header_auth);

    // Shutdown ends the stream, and the server stops without waiting for it.
    let stopped = tokio::time::timeout(Duration::from_secs(15), app.stop()).await;
    assert!(stopped.is_ok(), "shutdown does not wait on the stream");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
}

#[tokio::test]
async fn demo_seeding_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let count = |app: &TestApp, token: String| {
        let app_url = app.url("");
        let client = app.client.clone();
        async move {
            let get = |path: &str| {
                client
                    .get(format!("{app_url}{path}"))
                    .bearer_auth(&token)
                    .send()
            };
            let posts: Value = get("/api/posts?limit=100")
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let users: Value = get("/api/users?limit=100")
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let first = posts["posts"].as_array().unwrap().last().unwrap()["id"].clone();
            let comments: Value = get(&format!("/api/posts/{first}/comments"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (
                posts["posts"].as_array().unwrap().len(),
                users["users"].as_array().unwrap().len(),
                comments["comments"].as_array().unwrap().len(),
            )
        }
    };
    let login = |app: &TestApp| {
        let url = app.url("/api/sessions");
        let client = app.client.clone();
        async move {
            let resp = client
                .post(url)
                .json(&serde_json::json!({"name": "alice", "password": "alice-demo"}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "the demo password works");
            let body: Value = resp.json().await.unwrap();
            body["token"].as_str().unwrap().to_owned()
        }
    };

    let first = spawn_app_in(dir.path(), |s| s.demo = true).await;
    let token = login(&first).await;
    let seeded = count(&first, token).await;
    assert_eq!(seeded.0, 3, "three demo posts");
    assert_eq!(seeded.1, 3, "three demo users");
    assert!(seeded.2 >= 2, "comments and a reply");
    // The page offers the demo accounts.
    let html = first
        .client
        .get(first.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("alice:alice-demo"));
    first.stop().await;

    let second = spawn_app_in(dir.path(), |s| s.demo = true).await;
    let token = login(&second).await;
    assert_eq!(count(&second, token).await, seeded, "nothing duplicated");
    second.stop().await;
}

#[tokio::test]
async fn without_demo_the_page_offers_no_demo_accounts() {
    let app = spawn_app_with(|s| s.demo = false).await;
    let html = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"name="likewise-demo-users" content="""#));
}

#[tokio::test]
async fn posts_and_comments_carry_the_callers_marks_and_users_are_listed() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Hello").await;
    app.put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    app.put(&format!("/api/posts/{post}/collect"), &bob.token)
        .await;
    let (_, comment) = app
        .post(
            &format!("/api/posts/{post}/comments"),
            &alice.token,
            serde_json::json!({"body": "hi"}),
        )
        .await;
    let comment = comment["id"].as_u64().unwrap();
    app.put(&format!("/api/comments/{comment}/like"), &bob.token)
        .await;

    let (_, as_bob) = app.get("/api/posts", &bob.token).await;
    assert_eq!(as_bob["posts"][0]["liked"], true);
    assert_eq!(as_bob["posts"][0]["collected"], true);
    let (_, as_alice) = app.get(&format!("/api/posts/{post}"), &alice.token).await;
    assert_eq!(as_alice["liked"], false);
    assert_eq!(as_alice["collected"], false);
    let (_, comments) = app
        .get(&format!("/api/posts/{post}/comments"), &bob.token)
        .await;
    assert_eq!(comments["comments"][0]["liked"], true);

    let (status, users) = app.get("/api/users", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["bob", "alice"], "newest first");
    let (_, one) = app
        .get(&format!("/api/users/{}", bob.id), &alice.token)
        .await;
    assert_eq!(one["name"], "bob");
    let (status, missing) = app.get("/api/users/999999", &alice.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "not_found");
    let (status, _) = app
        .call(reqwest::Method::GET, "/api/users", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
