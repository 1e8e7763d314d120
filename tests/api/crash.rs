//! Crash safety of the real binary: concurrent likes, `kill -9` at random moments,
//! restarts on the same directory, and at the end every acknowledged like is there
//! with exactly one notification, counts are exact and no task is left `started`.
//! And the queue across a `kill -9`: a task whose outcome was committed never runs
//! again, a task that was running runs again.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use tokio::sync::oneshot;

use crate::helpers::{spawn_app_in, Api, TestUser, ADMIN_TOKEN};

const LIKERS: usize = 40;
const AUTHORS: usize = 3;
const POSTS_PER_AUTHOR: usize = 3;
const KILLS: usize = 20;
const CONCURRENCY: usize = 32;

/// The `likewise serve` child process.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
}

/// Starts the binary on `data` and waits for its `listening http=` line.
async fn start(data: &Path) -> Server {
    start_with(data, &[]).await
}

/// [`start`] with more command-line arguments.
pub(crate) async fn start_with(data: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_likewise"))
        .args(["serve", "--data"])
        .arg(data)
        .args(["--http", "127.0.0.1:0", "--resp", "off", "--workers", "8"])
        .args(extra)
        .env("LIKEWISE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the likewise binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = oneshot::channel();
    // Keeps draining stderr so that logging never blocks the child.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening http=").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                if let (Some(tx), Ok(addr)) = (tx.take(), addr.parse::<SocketAddr>()) {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("listening within 20 s")
        .expect("a listening line before the output ended");
    Server { child, addr }
}

impl Server {
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// PUT like for each pair, `CONCURRENCY` at a time on keep-alive connections;
/// every pair answered 200 is recorded in `acked`. Errors (the server was killed)
/// leave the pair unacknowledged.
async fn like_all(
    addr: SocketAddr,
    pairs: Vec<(String, u64, u64)>,
    acked: Arc<Mutex<HashSet<(u64, u64)>>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let queue = Arc::new(Mutex::new(pairs));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let client = client.clone();
        let queue = queue.clone();
        let acked = acked.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let Some((token, liker, post)) = queue.lock().unwrap().pop() else {
                    return;
                };
                let sent = client
                    .put(format!("http://{addr}/api/posts/{post}/like"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acked.lock().unwrap().insert((liker, post));
                    }
                    Ok(r) => panic!("unexpected answer {}", r.status()),
                    // Killed under us: stop this connection's work.
                    Err(_) => return,
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("like worker");
    }
}

fn authors_of(posts: &[(u64, usize)]) -> HashMap<u64, usize> {
    posts.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_likes_survive_kill_9_with_exactly_one_notification_each() {
    let dir = tempfile::tempdir().unwrap();

    // Accounts and posts, made through the library on the same directory.
    let (authors, likers, posts) = {
        let app = spawn_app_in(dir.path(), |_| {}).await;
        let mut authors = Vec::new();
        let mut posts = Vec::new();
        for a in 0..AUTHORS {
            let author = app.register(&format!("author{a}")).await;
            for p in 0..POSTS_PER_AUTHOR {
                posts.push((app.create_post(&author, &format!("post {a}.{p}")).await, a));
            }
            authors.push(author);
        }
        let likers: Vec<TestUser> = futures::future::join_all((0..LIKERS).map(|i| {
            let app = &app;
            async move { app.register(&format!("liker{i}")).await }
        }))
        .await;
        app.stop().await;
        (authors, likers, posts)
    };
    let mut all_pairs = Vec::new();
    for liker in &likers {
        for (post, _) in &posts {
            all_pairs.push((liker.token.clone(), liker.id, *post));
        }
    }
    let mut rng = rand::thread_rng();
    let acked = Arc::new(Mutex::new(HashSet::new()));

    // Rounds: start, like what is not acknowledged yet, kill -9 at a random moment.
    for _ in 0..KILLS {
        let server = start(dir.path()).await;
        let mut todo: Vec<_> = {
            let done = acked.lock().unwrap();
            all_pairs
                .iter()
                .filter(|(_, l, p)| !done.contains(&(*l, *p)))
                .cloned()
                .collect()
        };
        // Shuffled so that kills hit different posts at once.
        for i in (1..todo.len()).rev() {
            todo.swap(i, rng.gen_range(0..=i));
        }
        let load = tokio::spawn(like_all(server.addr, todo, acked.clone()));
        let kill_after = Duration::from_millis(rng.gen_range(10..300));
        tokio::time::sleep(kill_after).await;
        server.kill();
        load.await.expect("load finished");
    }

    // The last start runs to the end.
    let server = start(dir.path()).await;
    let app = Api::new(server.addr);
    let acked: HashSet<(u64, u64)> = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "some likes were acknowledged");
    let by_id: HashMap<u64, &TestUser> = likers.iter().map(|u| (u.id, u)).collect();

    // Every acknowledged like is still there.
    for (liker, post) in &acked {
        let (status, like) = app
            .put(&format!("/api/posts/{post}/like"), &by_id[liker].token)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            like["created"], false,
            "acknowledged like ({liker}, {post}) was lost"
        );
    }
    // Complete the rest, so that the truth is: everyone likes every post.
    like_all(
        server.addr,
        all_pairs.clone(),
        Arc::new(Mutex::new(HashSet::new())),
    )
    .await;

    app.settled().await;
    let (_, started) = app.get("/api/admin/tasks?state=started", ADMIN_TOKEN).await;
    assert_eq!(
        started["tasks"],
        serde_json::json!([]),
        "no task left started"
    );

    let author_of = authors_of(&posts);
    for (post, _) in &posts {
        let (_, p) = app
            .get(&format!("/api/posts/{post}"), &likers[0].token)
            .await;
        assert_eq!(p["likes_count"], LIKERS, "post {post}: {p}");
    }
    for (a, author) in authors.iter().enumerate() {
        let mut per_pair: HashMap<(u64, u64), usize> = HashMap::new();
        for n in app.all_notifications(author).await {
            if n["kind"] == "like_post" {
                let key = (
                    n["actor_id"].as_u64().unwrap(),
                    n["post_id"].as_u64().unwrap(),
                );
                *per_pair.entry(key).or_default() += 1;
            }
        }
        let own_posts: Vec<u64> = posts
            .iter()
            .filter(|(p, _)| author_of[p] == a)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(per_pair.len(), LIKERS * own_posts.len(), "{per_pair:?}");
        for ((liker, post), n) in &per_pair {
            assert_eq!(*n, 1, "({liker}, {post}) notified {n} times");
            assert!(own_posts.contains(post));
        }
        for (liker, post) in acked.iter().filter(|(_, p)| own_posts.contains(p)) {
            assert_eq!(per_pair.get(&(*liker, *post)), Some(&1));
        }
        let (_, page) = app.get("/api/notifications?limit=1", &author.token).await;
        assert_eq!(page["unread_count"], LIKERS * own_posts.len());
    }
    let (_, failed) = app.get("/api/admin/tasks?state=failure", ADMIN_TOKEN).await;
    assert_eq!(failed["tasks"], serde_json::json!([]), "no dead letters");
    server.kill();
}

/// A webhook receiver on loopback that reports the delivery id (the task id) of
/// every request, and answers 200 — or, while `hang` is set, never answers.
async fn delivery_receiver() -> (
    String,
    Arc<std::sync::atomic::AtomicBool>,
    tokio::sync::mpsc::UnboundedReceiver<u64>,
) {
    use axum::http::HeaderMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    let hang = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let hanging = hang.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let tx = tx.clone();
            let hang = hanging.load(Ordering::SeqCst);
            async move {
                let id = headers["x-likewise-delivery"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let _ = tx.send(id);
                if hang {
                    std::future::pending::<()>().await;
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), hang, rx)
}

async fn next_delivery(rx: &mut tokio::sync::mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a delivery within 20 s")
        .expect("receiver alive")
}

/// The newest webhook delivery task.
async fn newest_delivery_task(app: &Api) -> u64 {
    let (_, list) = app
        .get("/api/admin/tasks?name=deliver_webhook&limit=1", ADMIN_TOKEN)
        .await;
    list["tasks"][0]["id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_running_task_runs_again_and_a_finished_one_never_does() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (author, fans, post) = {
        let app = spawn_app_in(dir.path(), |_| {}).await;
        let author = app.register("author").await;
        let post = app.create_post(&author, "hooked").await;
        let fans = vec![app.register("bob").await, app.register("carol").await];
        app.stop().await;
        (author, fans, post)
    };
    let (url, hang, mut deliveries) = delivery_receiver().await;
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("likewise.toml");
    std::fs::write(&config, format!("[[webhooks]]\nurl = \"{url}\"\n")).unwrap();
    let config = config.to_str().unwrap().to_owned();

    let server = start_with(dir.path(), &["--config", &config]).await;
    let app = Api::new(server.addr);
    // A first like's delivery succeeds...
    app.put(&format!("/api/posts/{post}/like"), &fans[0].token)
        .await;
    let done = newest_delivery_task(&app).await;
    assert_eq!(next_delivery(&mut deliveries).await, done);
    assert_eq!(app.finished_task(done).await["state"], "success");
    // ...then a second one's hangs: that task is running when the server dies. The
    // second like is a flushed write, so the first outcome is on disk by now.
    hang.store(true, Ordering::SeqCst);
    app.put(&format!("/api/posts/{post}/like"), &fans[1].token)
        .await;
    let running = newest_delivery_task(&app).await;
    assert_ne!(running, done);
    assert_eq!(next_delivery(&mut deliveries).await, running);
    let (_, task) = app.get(&format!("/api/tasks/{running}"), ADMIN_TOKEN).await;
    assert_eq!(task["state"], "started", "{task}");
    server.kill();

    hang.store(false, Ordering::SeqCst);
    let server = start_with(dir.path(), &["--config", &config]).await;
    let app = Api::new(server.addr);
    assert_eq!(
        next_delivery(&mut deliveries).await,
        running,
        "the interrupted task runs again, and only it"
    );
    let task = app.finished_task(running).await;
    assert_eq!(task["state"], "success");
    assert_eq!(
        task["attempts"], 1,
        "the interrupted attempt does not count"
    );
    app.settled().await;
    assert!(
        deliveries.try_recv().is_err(),
        "the task that had finished never ran again"
    );
    let (_, page) = app.get("/api/notifications?limit=10", &author.token).await;
    assert_eq!(page["unread_count"], 2);
    server.kill();
}
