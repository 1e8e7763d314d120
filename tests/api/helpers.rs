#![allow(dead_code)] // shared by many test modules; not every one uses every helper

//! Starting a real server for a test, and a small typed client over reqwest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use likewise::config::Settings;
use likewise::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The admin token every test server uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A client of a running server, in this process or not.
pub struct Api {
    pub addr: SocketAddr,
    /// The RESP listener's address, when the test turned it on.
    pub resp_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
}

/// Installs the TLS crypto provider reqwest needs before any client is built (the
/// server installs it too, but a test that only talks to a child process has none).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Api {
    /// A client of the server listening on `addr`.
    pub fn new(addr: SocketAddr) -> Api {
        install_crypto();
        Api {
            addr,
            resp_addr: None,
            client: reqwest::Client::new(),
        }
    }
}

/// A running server in this process; derefs to its [`Api`] client.
pub struct TestApp {
    pub api: Api,
    pub state: likewise::http::AppState,
    pub shutdown: CancellationToken,
    pub handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// Starts a server with default test settings in a fresh temporary directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after `tweak` adjusts the settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_app_in(dir.path(), tweak).await;
    app._dir = Some(dir);
    app
}

/// Starts a server with the RESP listener on a free loopback port, after `tweak`.
pub async fn spawn_app_with_resp(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.resp = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        tweak(s);
    })
    .await
}

/// Starts a server on an existing data directory (kept by the caller).
pub async fn spawn_app_in(data: &Path, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var_os("RUST_LOG").is_some() {
        likewise::telemetry::init_logging();
    }
    let mut settings = Settings::for_tests(data);
    settings.resp = None;
    settings.admin_token = Some(ADMIN_TOKEN.to_owned());
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("server builds");
    let addr = app.http_addr();
    let resp_addr = app.resp_addr();
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        api: Api {
            resp_addr,
            ..Api::new(addr)
        },
        state,
        shutdown,
        handle: Some(handle),
        data: data.to_owned(),
        _dir: None,
    }
}

/// A user registered on a test server.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: u64,
    pub name: String,
    pub token: String,
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A `redis://` URL for the RESP listener; `query` is appended (e.g.
    /// `?protocol=resp3`).
    pub fn resp_url(&self, query: &str) -> String {
        let addr = self.resp_addr.expect("RESP listener turned on");
        format!("redis://{addr}/{query}")
    }

    /// Sends a request; returns the status and the JSON body (Null if none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// The body of `GET path` (no token) as text.
    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("body read")
    }

    /// The versioned asset prefix the demo page refers to, e.g. `/assets/0123abcd4567`.
    pub async fn asset_prefix(&self) -> String {
        let html = self.text("/").await;
        let start = html.find("/assets/").expect("the page names its assets");
        let rest = &html[start + "/assets/".len()..];
        let version = &rest[..rest.find('/').expect("a versioned path")];
        format!("/assets/{version}")
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(token), None).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Registers `name` with a fixed good password.
    /// Which of `ids` `GET /api/presence` says are online, asked with `token`.
    pub async fn online(&self, token: &str, ids: &[u64]) -> Vec<u64> {
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        let (status, body) = self
            .get(&format!("/api/presence?user_ids={}", list.join(",")), token)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body["online"].clone()).expect("a list of ids")
    }

    pub async fn register(&self, name: &str) -> TestUser {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/users",
                None,
                Some(json!({"name": name, "password": "password123"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        TestUser {
            id: body["user"]["id"].as_u64().unwrap(),
            name: name.to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates a post by `user`; returns its id.
    pub async fn create_post(&self, user: &TestUser, title: &str) -> u64 {
        let (status, body) = self
            .post(
                "/api/posts",
                &user.token,
                json!({"title": title, "body": "text"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_u64().unwrap()
    }

    /// Polls `check` until it returns Some, at most `timeout`. For state maintained
    /// by background tasks, where no event exists to await.
    pub async fn eventually<T, F, Fut>(&self, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until task `id` has finished (success or failure) and returns it.
    pub async fn finished_task(&self, id: u64) -> Value {
        self.eventually(Duration::from_secs(10), || async move {
            let (status, task) = self
                .call(
                    Method::GET,
                    &format!("/api/tasks/{id}"),
                    Some(ADMIN_TOKEN),
                    None,
                )
                .await;
            (status == StatusCode::OK
                && matches!(task["state"].as_str(), Some("success" | "failure")))
            .then_some(task)
        })
        .await
    }
}

impl TestApp {
    /// Stores a session for `user_id` under `token`, issued `age` ago, as the store
    /// keeps sessions (to test what happens to old ones).
    pub async fn backdated_session(&self, user_id: u64, token: &str, age: Duration) {
        use likewise::store::records::SessionRecord;
        use likewise::store::time::Timestamp;
        let hash = likewise::domain::token_hash(token);
        let session = SessionRecord {
            user_id,
            created_at: Timestamp(Timestamp::now().0 - age.as_millis() as i64),
        };
        self.state
            .social
            .store()
            .write(move |tx| tx.insert(&tx.t().tokens, &hash, &session))
            .await
            .expect("session stored");
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        // Connection tasks that were finishing when the server returned still
        // hold the store for a moment: stopped means its lock is free, as for a
        // process that exited (bounded, for a test that holds the state itself).
        let data = self.data.clone();
        drop(self);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while likewise::store::snapshot::in_use(&data) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Asserts an error answer: the status, and a body of exactly the shape
/// `{"error":{"code","message"}}` with the given code and a non-empty message.
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an error needs a message: {body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "nothing beside \"error\": {body}"
    );
    assert_eq!(
        body["error"].as_object().map(|o| o.len()),
        Some(2),
        "only code and message: {body}"
    );
}

impl Api {
    /// Every notification of `user`, newest first, walking all pages.
    pub async fn all_notifications(&self, user: &TestUser) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = "/api/notifications?limit=100".to_owned();
        loop {
            let (status, page) = self.get(&path, &user.token).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            out.extend(page["notifications"].as_array().unwrap().iter().cloned());
            match page["next_before"].as_u64() {
                Some(before) => path = format!("/api/notifications?limit=100&before={before}"),
                None => return out,
            }
        }
    }

    /// Waits until the queue has nothing waiting or running.
    pub async fn settled(&self) {
        self.eventually(Duration::from_secs(10), || async {
            let (_, stats) = self
                .call(Method::GET, "/api/admin/stats", Some(ADMIN_TOKEN), None)
                .await;
            let q = &stats["queue"];
            let busy = ["pending", "started", "retry"]
                .iter()
                .map(|s| q[*s].as_u64().unwrap_or(0))
                .sum::<u64>();
            (busy == 0).then_some(())
        })
        .await
    }
}

/// `likewise serve` as a child process on a temporary data directory, with every
/// line it logs to stderr collected.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary with `config` as its config file and `RUST_LOG=rust_log`,
    /// and waits for its `listening http=` line.
    pub async fn start(config: &str, rust_log: &str) -> Binary {
        Binary::spawn(config, rust_log, |cmd, dir| {
            cmd.arg("serve")
                .arg("--config")
                .arg(dir.join("likewise.toml"))
                .arg("--data")
                .arg(dir.join("data"))
                .args(["--http", "127.0.0.1:0", "--resp", "off", "--workers", "1"]);
        })
        .await
    }

    /// Starts `likewise edge` in front of `primary`, with `config` as its config
    /// file, joining the cluster bus on `redis`.
    pub async fn start_edge(config: &str, primary: SocketAddr, redis: &str) -> Binary {
        let redis = redis.to_owned();
        Binary::spawn(config, "info", move |cmd, dir| {
            cmd.arg("edge")
                .arg("--config")
                .arg(dir.join("likewise.toml"))
                .args(["--http", "127.0.0.1:0", "--primary"])
                .arg(format!("http://{primary}"))
                .env("LIKEWISE_CLUSTER_REDIS", redis);
        })
        .await
    }

    async fn spawn(
        config: &str,
        rust_log: &str,
        command: impl FnOnce(&mut std::process::Command, &Path),
    ) -> Binary {
        use std::io::BufRead;
        install_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("likewise.toml");
        std::fs::write(&config_path, config).expect("config written");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_likewise"));
        command(&mut cmd, dir.path());
        let mut child = cmd
            .env("LIKEWISE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", rust_log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the likewise binary starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening http=").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    if let (Some(tx), Ok(addr)) = (tx.take(), addr.parse::<SocketAddr>()) {
                        let _ = tx.send(addr);
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("listening within 20 s")
            .expect("a listening line before the output ended");
        Binary {
            child,
            addr,
            log,
            reader: Some(reader),
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and returns everything it logged.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until the peer closes (or resets) the connection, at most 20 s; returns
/// what arrived first.
pub async fn read_to_close<R: tokio::io::AsyncRead + Unpin>(stream: &mut R) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the connection in time");
    all
}
