//! The authorization matrix: every route API.md lists, called as each kind of caller
//! — no token, a token that was never issued, an expired token, another user, the
//! owner of the resource and the admin token — with the exact status and error code
//! each cell must answer. A second test reads API.md and fails when a documented
//! route is missing from the table, so the matrix grows with the contract.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app_with, Api, TestApp, TestUser, ADMIN_TOKEN};

/// The kinds of caller, in the order of a row's cells.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Nobody,
    Forged,
    Expired,
    Other,
    Owner,
    Admin,
}

const WHO: [Who; 6] = [
    Who::Nobody,
    Who::Forged,
    Who::Expired,
    Who::Other,
    Who::Owner,
    Who::Admin,
];

/// What one cell must answer.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// This success status.
    Ok(u16),
    /// This error status and code, in the API's error shape.
    Err(u16, &'static str),
}

use Want::{Err as E, Ok as K};

const UNAUTH: Want = E(401, "unauthorized");
const FORBID: Want = E(403, "forbidden");

/// Cells for a route only users may call: anyone signed in gets `ok`; the admin token
/// is not a user.
const fn users(ok: u16) -> [Want; 6] {
    [UNAUTH, UNAUTH, UNAUTH, K(ok), K(ok), FORBID]
}

/// Cells for a route only the owner (and the admin) may see; others learn nothing,
/// not even that it exists.
const OWNED: [Want; 6] = [UNAUTH, UNAUTH, UNAUTH, E(404, "not_found"), K(200), K(200)];

/// Cells for an admin route.
const fn admin(ok: u16) -> [Want; 6] {
    [UNAUTH, UNAUTH, UNAUTH, FORBID, FORBID, K(ok)]
}

/// Cells for a route anyone may call, whatever token comes with it.
const fn public(ok: u16) -> [Want; 6] {
    [K(ok), K(ok), K(ok), K(ok), K(ok), K(ok)]
}

/// How a request carries its credential.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Carry {
    /// `Authorization: Bearer`.
    Header,
    /// `?token=` (routes a browser opens without headers), and a websocket upgrade.
    QueryUpgrade,
    /// `?token=` on an event stream.
    Query,
}

/// One row: a route with the resources of the fixture filled in.
struct Row {
    method: Method,
    /// The route as API.md writes it (for the coverage check).
    route: &'static str,
    /// The path actually called; `{post}`, `{comment}`, `{user}`, `{friend}`,
    /// `{task}`, `{dead}`, `{waiting}` and `{asset}` are filled from the fixture.
    path: &'static str,
    body: Option<fn(&Fixture, usize) -> Value>,
    carry: Carry,
    /// Call as a user with a session opened for this cell alone (the route ends it).
    fresh: bool,
    want: [Want; 6],
}

fn row(method: Method, route: &'static str, path: &'static str, want: [Want; 6]) -> Row {
    Row {
        method,
        route,
        path,
        body: None,
        carry: Carry::Header,
        fresh: false,
        want,
    }
}

fn fresh(mut r: Row) -> Row {
    r.fresh = true;
    r
}

fn with_body(mut r: Row, body: fn(&Fixture, usize) -> Value) -> Row {
    r.body = Some(body);
    r
}

fn carried(mut r: Row, carry: Carry) -> Row {
    r.carry = carry;
    r
}

/// Every route of API.md with the answer of each cell.
fn table() -> Vec<Row> {
    use Method as M;
    vec![
        row(M::GET, "/healthz", "/healthz", public(200)),
        row(M::GET, "/metrics", "/metrics", public(200)),
        row(
            M::GET,
            "/api/openapi.json",
            "/api/openapi.json",
            public(200),
        ),
        with_body(
            row(M::POST, "/api/users", "/api/users", public(201)),
            |_, n| json!({"name": format!("newcomer{n}"), "password": "password123"}),
        ),
        with_body(
            row(M::POST, "/api/sessions", "/api/sessions", public(200)),
            |f, _| json!({"name": f.owner.name, "password": "password123"}),
        ),
        row(M::GET, "/api/me", "/api/me", users(200)),
        row(M::GET, "/api/users", "/api/users?limit=5", users(200)),
        row(M::GET, "/api/users/{id}", "/api/users/{user}", users(200)),
        with_body(
            row(M::POST, "/api/posts", "/api/posts", users(201)),
            |_, n| json!({"title": format!("post {n}"), "body": "text"}),
        ),
        row(M::GET, "/api/posts", "/api/posts?limit=5", users(200)),
        row(M::GET, "/api/posts/{id}", "/api/posts/{post}", users(200)),
        with_body(
            row(
                M::POST,
                "/api/posts/{id}/comments",
                "/api/posts/{post}/comments",
                users(201),
            ),
            |_, n| json!({"body": format!("comment {n}")}),
        ),
        row(
            M::GET,
            "/api/posts/{id}/comments",
            "/api/posts/{post}/comments",
            users(200),
        ),
        row(
            M::PUT,
            "/api/posts/{id}/like",
            "/api/posts/{post}/like",
            users(200),
        ),
        row(
            M::DELETE,
            "/api/posts/{id}/like",
            "/api/posts/{post}/like",
            users(200),
        ),
        row(
            M::PUT,
            "/api/comments/{id}/like",
            "/api/comments/{comment}/like",
            users(200),
        ),
        row(
            M::DELETE,
            "/api/comments/{id}/like",
            "/api/comments/{comment}/like",
            users(200),
        ),
        row(
            M::PUT,
            "/api/posts/{id}/collect",
            "/api/posts/{post}/collect",
            users(200),
        ),
        row(
            M::DELETE,
            "/api/posts/{id}/collect",
            "/api/posts/{post}/collect",
            users(200),
        ),
        row(
            M::POST,
            "/api/posts/{id}/shares",
            "/api/posts/{post}/shares",
            users(201),
        ),
        with_body(
            row(M::POST, "/api/messages", "/api/messages", users(201)),
            |f, n| json!({"to_user_id": f.friend.id, "body": format!("hello {n}")}),
        ),
        row(
            M::GET,
            "/api/messages",
            "/api/messages?with={friend}",
            users(200),
        ),
        row(
            M::GET,
            "/api/notifications",
            "/api/notifications?limit=5",
            users(200),
        ),
        with_body(
            row(
                M::POST,
                "/api/notifications/read",
                "/api/notifications/read",
                // Another user's notification is not found for them.
                [UNAUTH, UNAUTH, UNAUTH, E(404, "not_found"), K(200), FORBID],
            ),
            |f, _| json!({"ids": [f.notification]}),
        ),
        row(M::GET, "/api/tasks/{id}", "/api/tasks/{task}", OWNED),
        row(M::GET, "/api/admin/stats", "/api/admin/stats", admin(200)),
        row(
            M::GET,
            "/api/admin/tasks",
            "/api/admin/tasks?limit=5",
            admin(200),
        ),
        row(
            M::POST,
            "/api/admin/tasks/{id}/retry",
            "/api/admin/tasks/{dead}/retry",
            admin(200),
        ),
        row(
            M::POST,
            "/api/admin/tasks/{id}/cancel",
            "/api/admin/tasks/{waiting}/cancel",
            admin(200),
        ),
        with_body(
            row(
                M::POST,
                "/api/admin/publish",
                "/api/admin/publish",
                admin(200),
            ),
            |_, _| json!({"room": "broadcast", "event": "news", "data": {"n": 1}}),
        ),
        with_body(
            row(
                M::POST,
                "/api/admin/notifications",
                "/api/admin/notifications",
                admin(201),
            ),
            |f, _| json!({"user_id": f.owner.id, "kind": "custom", "text": "hello"}),
        ),
        row(
            M::GET,
            "/api/admin/history",
            "/api/admin/history",
            admin(200),
        ),
        carried(
            row(M::GET, "/api/admin/stream", "/api/admin/stream", admin(200)),
            Carry::Query,
        ),
        row(M::GET, "/", "/", public(200)),
        row(M::GET, "/dashboard", "/dashboard", public(200)),
        row(
            M::GET,
            "/assets/{version}/{path}",
            "/assets/{asset}",
            public(200),
        ),
        carried(
            row(
                M::GET,
                "/ws",
                "/ws",
                [UNAUTH, UNAUTH, UNAUTH, K(101), K(101), FORBID],
            ),
            Carry::QueryUpgrade,
        ),
        row(
            M::POST,
            "/api/realtime/tickets",
            "/api/realtime/tickets",
            [UNAUTH, UNAUTH, UNAUTH, K(200), K(200), K(200)],
        ),
        // Without a token the socket opens and the token comes in the CONNECT packet.
        carried(
            row(
                M::GET,
                "/socket.io/",
                "/socket.io/?EIO=4&transport=websocket",
                [K(101), UNAUTH, UNAUTH, K(101), K(101), FORBID],
            ),
            Carry::QueryUpgrade,
        ),
        // A long-polling POST is authorized by its session (signed in at the
        // handshake): one that names no live session is refused whoever sends it.
        row(
            M::POST,
            "/socket.io/",
            "/socket.io/?EIO=4&transport=polling&sid=unknown",
            public(400),
        ),
        row(
            M::GET,
            "/api/presence",
            "/api/presence?user_ids={user},{friend}",
            [UNAUTH, UNAUTH, UNAUTH, K(200), K(200), K(200)],
        ),
        row(M::GET, "/api/me/presence", "/api/me/presence", users(200)),
        with_body(
            row(M::PUT, "/api/me/presence", "/api/me/presence", users(200)),
            |_, _| json!({"visible": true}),
        ),
        // What edges ask the primary: the admin token only.
        with_body(
            row(
                M::POST,
                "/api/cluster/auth",
                "/api/cluster/auth",
                admin(200),
            ),
            |f, _| json!({"token": f.owner.token}),
        ),
        row(
            M::GET,
            "/api/cluster/notifications",
            "/api/cluster/notifications?user_id={user}&after=0&limit=10",
            admin(200),
        ),
        row(
            M::GET,
            "/api/cluster/posts/{id}",
            "/api/cluster/posts/{post}",
            admin(200),
        ),
        row(
            M::GET,
            "/api/cluster/users/{id}/presence",
            "/api/cluster/users/{user}/presence",
            admin(200),
        ),
        // Last: these end sessions. Each user cell signs in for itself first.
        fresh(row(M::DELETE, "/api/sessions", "/api/sessions", users(200))),
        fresh(row(
            M::DELETE,
            "/api/sessions",
            "/api/sessions?all=true",
            users(200),
        )),
        fresh(with_body(
            row(M::PUT, "/api/me/password", "/api/me/password", users(200)),
            |_, _| json!({"old_password": "password123", "new_password": "password123"}),
        )),
    ]
}

/// The resources every row refers to, on one server.
struct Fixture {
    owner: TestUser,
    other: TestUser,
    friend: TestUser,
    expired: String,
    post: u64,
    comment: u64,
    notification: u64,
    task: u64,
    dead: u64,
    waiting: u64,
    asset: String,
}

impl Fixture {
    fn path(&self, template: &str) -> String {
        template
            .replace("{post}", &self.post.to_string())
            .replace("{comment}", &self.comment.to_string())
            .replace("{user}", &self.owner.id.to_string())
            .replace("{friend}", &self.friend.id.to_string())
            .replace("{task}", &self.task.to_string())
            .replace("{dead}", &self.dead.to_string())
            .replace("{waiting}", &self.waiting.to_string())
            .replace("{asset}", &self.asset)
    }

    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Nobody => None,
            Who::Forged => Some("lw_forged_token_never_issued_0123456789abcdef"),
            Who::Expired => Some(&self.expired),
            Who::Other => Some(&self.other.token),
            Who::Owner => Some(&self.owner.token),
            Who::Admin => Some(ADMIN_TOKEN),
        }
    }
}

/// A dead port: webhook deliveries to it fail at once.
const NOWHERE: &str = "http://127.0.0.1:9/hook";

async fn start() -> TestApp {
    spawn_app_with(|s| {
        // Every registration of the table comes from one address.
        s.accounts.registrations_per_ip = 10_000;
        s.queue.retry_base_ms = 600_000;
        s.queue.retry_max_ms = 600_000;
        s.webhooks = vec![
            likewise::config::WebhookSettings {
                url: NOWHERE.into(),
                events: vec!["notification.created".into()],
                secret: None,
                max_attempts: Some(1),
            },
            likewise::config::WebhookSettings {
                url: NOWHERE.into(),
                events: vec!["notification.created".into()],
                secret: None,
                max_attempts: Some(5),
            },
        ];
    })
    .await
}

async fn admin_get(api: &Api, path: &str) -> Value {
    let (status, body) = api.call(Method::GET, path, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn fixture(app: &TestApp) -> Fixture {
    // A session issued 31 days ago (the default lifetime is 30), as stored.
    let lapsed = app.register("lapsed").await;
    let expired = "a-session-issued-a-month-ago-0123456789abcdef0123456789abcdef".to_owned();
    app.backdated_session(lapsed.id, &expired, Duration::from_secs(31 * 24 * 3600))
        .await;
    let owner = app.register("owner").await;
    let other = app.register("other").await;
    let friend = app.register("friend").await;
    let post = app.create_post(&owner, "the owner's post").await;
    let (_, comment) = app
        .post(
            &format!("/api/posts/{post}/comments"),
            &owner.token,
            json!({"body": "the owner's comment"}),
        )
        .await;
    let comment = comment["id"].as_u64().unwrap();
    // A notification for the owner, and two webhook deliveries the owner causes.
    app.put(&format!("/api/posts/{post}/like"), &friend.token)
        .await;
    let friends_post = app.create_post(&friend, "the friend's post").await;
    let (status, _) = app
        .put(&format!("/api/posts/{friends_post}/like"), &owner.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    app.post(
        "/api/messages",
        &owner.token,
        json!({"to_user_id": friend.id, "body": "hi"}),
    )
    .await;
    let (_, mine) = app.get("/api/notifications", &owner.token).await;
    let notification = mine["notifications"][0]["id"].as_u64().unwrap();

    // The owner's deliveries: one dies after its single attempt, one waits ten
    // minutes for its retry.
    let owned = |max: u64, state: &'static str| {
        let owner = owner.token.clone();
        async move {
            let list = admin_get(app, "/api/admin/tasks?name=deliver_webhook").await;
            for t in list["tasks"].as_array().cloned().unwrap_or_default() {
                if t["max_attempts"] != max || t["state"] != state {
                    continue;
                }
                let id = t["id"].as_u64().unwrap();
                let (status, _) = app.get(&format!("/api/tasks/{id}"), &owner).await;
                if status == StatusCode::OK {
                    return Some(id);
                }
            }
            None
        }
    };
    let dead = app
        .eventually(Duration::from_secs(10), || owned(1, "failure"))
        .await;
    let waiting = app
        .eventually(Duration::from_secs(10), || owned(5, "retry"))
        .await;

    let asset = format!("{}/app.js", &app.asset_prefix().await["/assets/".len()..]);

    let (status, body) = app.get("/api/me", &expired).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    Fixture {
        owner,
        other,
        friend,
        expired,
        post,
        comment,
        notification,
        task: dead,
        dead,
        waiting,
        asset,
    }
}

/// Calls one cell; returns the status and the body (JSON when it is JSON).
async fn call(api: &Api, f: &Fixture, r: &Row, who: Who, n: usize) -> (StatusCode, Value) {
    let mut path = f.path(r.path);
    let session;
    let token = match (r.fresh, who) {
        (true, Who::Owner | Who::Other) => {
            let user = if who == Who::Owner {
                &f.owner
            } else {
                &f.other
            };
            let (status, body) = api
                .call(
                    Method::POST,
                    "/api/sessions",
                    None,
                    Some(json!({"name": user.name, "password": "password123"})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            session = body["token"].as_str().unwrap().to_owned();
            Some(session.as_str())
        }
        _ => f.token(who),
    };
    if r.carry != Carry::Header {
        if let Some(t) = token {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("token={t}"));
        }
    }
    let mut req = api.client.request(r.method.clone(), api.url(&path));
    match r.carry {
        Carry::Header => {
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
        }
        Carry::QueryUpgrade => {
            req = req
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        Carry::Query => {}
    }
    if let Some(body) = r.body {
        req = req.json(&body(f, n));
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let streaming = status == StatusCode::SWITCHING_PROTOCOLS
        || resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming || status.is_success() && r.carry != Carry::Header {
        // An upgraded socket or an endless event stream: the status is the answer.
        return (status, Value::Null);
    }
    let text = resp.text().await.expect("body read");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

#[tokio::test]
async fn every_route_answers_every_kind_of_caller_exactly_as_documented() {
    let app = start().await;
    let f = fixture(&app).await;
    let mut wrong = Vec::new();
    let mut n = 0;
    for r in table() {
        for (who, want) in WHO.iter().zip(r.want) {
            n += 1;
            let (status, body) = call(&app, &f, &r, *who, n).await;
            let ok = match want {
                Want::Ok(code) => status.as_u16() == code,
                Want::Err(code, error) => {
                    status.as_u16() == code
                        && body["error"]["code"] == error
                        && body["error"]["message"]
                            .as_str()
                            .is_some_and(|m| !m.is_empty())
                }
            };
            if !ok {
                let shown = body.to_string();
                let shown = &shown[..shown.len().min(160)];
                wrong.push(format!(
                    "{} {} as {who:?}: want {want:?}, got {status} {shown}",
                    r.method, r.route
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {n} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// `GET /api/users/{id}` → `GET /api/users/{}`: parameters are compared by place.
pub(crate) fn normalize(route: &str) -> String {
    let route = route.split('?').next().unwrap_or(route);
    let mut out = String::new();
    let mut depth = 0;
    for c in route.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    out.push_str("{}");
                }
                depth += 1;
            }
            '}' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Every `METHOD /path` of API.md's route tables (HTTP API, admin, web pages) and
/// the websocket endpoints.
pub(crate) fn documented_routes() -> BTreeSet<String> {
    let api =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/API.md")).expect("API.md");
    let mut routes = BTreeSet::new();
    for line in api.lines() {
        // Table rows, and the paragraphs that open the websocket sections.
        let Some(cell) = line
            .strip_prefix("| `")
            .or_else(|| line.strip_prefix("`GET /").map(|_| &line[1..]))
        else {
            continue;
        };
        let cell = cell.split(" |").next().unwrap_or_default();
        let Some(slash) = cell.find(" /") else {
            continue;
        };
        let path = cell[slash + 1..]
            .split(['`', ' '])
            .next()
            .unwrap_or_default();
        let methods: Vec<&str> = cell[..slash]
            .split(|c: char| !c.is_ascii_uppercase())
            .filter(|m| {
                ["GET", "POST", "PUT", "DELETE", "PATCH"]
                    .iter()
                    .any(|known| known == m)
            })
            .collect();
        for m in methods {
            routes.insert(format!("{m} {}", normalize(path)));
        }
    }
    routes
}

#[test]
fn the_matrix_covers_every_route_api_md_documents() {
    let documented = documented_routes();
    assert!(
        documented.len() > 30,
        "API.md's tables were not read: {documented:?}"
    );
    let tested: BTreeSet<String> = table()
        .iter()
        .map(|r| format!("{} {}", r.method, normalize(r.route)))
        .collect();
    let missing: Vec<_> = documented.difference(&tested).collect();
    assert!(missing.is_empty(), "routes without a row: {missing:?}");
    let stale: Vec<_> = tested.difference(&documented).collect();
    assert!(stale.is_empty(), "rows for undocumented routes: {stale:?}");
}
