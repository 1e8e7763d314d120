//! The live feed: every new post is published to the `feed` room as `new_post`
//! with the Post, in commit order, over `/ws` and Socket.IO alike.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, TestUser, ADMIN_TOKEN};
use crate::presence::{sio_event, sio_join, sio_user, ws_join};
use crate::realtime::{connect_user, next_event};

async fn new_post(app: &TestApp, user: &TestUser, title: &str) -> Value {
    let (status, post) = app
        .post(
            "/api/posts",
            &user.token,
            json!({"title": title, "body": "fresh"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{post}");
    post
}

#[tokio::test]
async fn a_new_post_reaches_the_feed_over_websocket_and_socketio_as_the_api_renders_it() {
    let app = spawn_app().await;
    let author = app.register("author").await;
    let reader = app.register("reader").await;
    let mut ws = connect_user(&app, &reader).await;
    ws_join(&mut ws, "feed").await;
    let mut sio = sio_user(&app, &reader).await;
    sio_join(&mut sio, "feed").await;

    let post = new_post(&app, &author, "Live").await;
    assert_eq!(
        next_event(&mut ws).await,
        json!({"event": "new_post", "data": post})
    );
    assert_eq!(sio_event(&mut sio).await, json!(["new_post", post]));
    let (_, listed) = app
        .get(&format!("/api/posts/{}", post["id"]), &reader.token)
        .await;
    assert_eq!(listed["title"], "Live");
    assert_eq!(listed["author_id"], author.id);
}

#[tokio::test]
async fn only_feed_members_get_new_posts_and_they_arrive_in_commit_order() {
    let app = spawn_app().await;
    let author = app.register("author").await;
    let reader = app.register("reader").await;
    let mut outsider = connect_user(&app, &reader).await;
    let mut ws = connect_user(&app, &reader).await;
    ws_join(&mut ws, "feed").await;

    // Posts written concurrently share commits; the feed follows the ids, which the
    // single writer assigns in commit order.
    let posts = futures::future::join_all((0..20).map(|i| {
        let app = &app;
        let author = &author;
        async move { new_post(app, author, &format!("post {i}")).await }
    }))
    .await;
    let mut want: Vec<u64> = posts.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    want.sort_unstable();
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let e = next_event(&mut ws).await;
        assert_eq!(e["event"], "new_post");
        got.push(e["data"]["id"].as_u64().unwrap());
    }
    assert_eq!(got, want);

    // The connection outside the feed got none of them: the next thing it receives
    // is an event published after them all.
    let (status, _) = app
        .post(
            "/api/admin/publish",
            ADMIN_TOKEN,
            json!({"room": "broadcast", "event": "marker", "data": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_event(&mut outsider).await["event"], "marker");
}
