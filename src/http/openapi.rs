//! The OpenAPI 3.1 document of the HTTP API, served at `GET /api/openapi.json`.
//!
//! It is generated, never written by hand: each handler carries a
//! `#[utoipa::path]` attribute, each module registers its handlers with
//! `utoipa_axum::routes!`, which adds the route and its document entry in one act,
//! and the view types derive `ToSchema`. This module holds what has no handler of
//! its own: the document's header, the error shape every route shares, the
//! schemas of answers the handlers build as JSON values, and the paths of the
//! realtime handshakes (their router is a plain axum router, so their entries are
//! listed here; a test checks that every route served is documented).

use std::borrow::Cow;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::domain::{Message, Notification, Timestamp, User};
use crate::queue::Task;

/// The security scheme of every route that takes a token.
pub const BEARER: &str = "bearer";

/// The document's header and the paths whose router is not an [`OpenApiRouter`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "likewise",
        description = "Users, posts, likes and notifications, a durable task queue, \
                       websockets (native and Socket.IO) and Redis-compatible pub/sub in one \
                       binary. Errors answer `{\"error\":{\"code\",\"message\"}}` (`Error`) with \
                       the status their code names; API.md is the prose reference."
    ),
    paths(
        super::realtime::native::upgrade,
        super::realtime::socketio::upgrade,
        super::realtime::socketio::post,
        super::realtime::polling::preflight,
        super::realtime::issue_ticket,
    ),
    components(schemas(Error, ErrorDetail, EngineError))
)]
pub struct ApiDoc;

/// The error shape of every route (API.md "Errors").
#[derive(Serialize, ToSchema)]
pub struct Error {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`Error`].
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `not_found`, `invalid`, `unauthorized`.
    #[schema(example = "not_found")]
    pub code: String,
    /// A sentence for a human.
    pub message: String,
}

/// The error shape of Engine.IO long-polling answers, as the reference server sends
/// them (Socket.IO clients read it).
#[derive(Serialize, ToSchema)]
pub struct EngineError {
    /// 0 transport unknown, 1 session id unknown, 2 bad handshake method, 3 bad
    /// request, 4 forbidden, 5 unsupported protocol version.
    pub code: u8,
    /// The reference server's text for the code.
    pub message: String,
    /// What was wrong, when known.
    pub detail: Option<String>,
}

/// Timestamps are RFC 3339 text in UTC with milliseconds.
impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples(["2026-11-22T18:00:00.000Z"])
            .into()
    }
}

impl ToSchema for Timestamp {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}

/// A `Post` with the caller's own marks.
#[derive(Serialize, ToSchema)]
pub struct MarkedPost {
    /// The post.
    #[serde(flatten)]
    pub post: crate::domain::Post,
    /// The caller likes it.
    pub liked: bool,
    /// The caller collected it.
    pub collected: bool,
}

/// `GET /api/posts`.
#[derive(Serialize, ToSchema)]
pub struct PostPage {
    /// Newest first.
    pub posts: Vec<MarkedPost>,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<u64>,
}

/// A `Comment` with the caller's own mark.
#[derive(Serialize, ToSchema)]
pub struct MarkedComment {
    /// The comment.
    #[serde(flatten)]
    pub comment: crate::domain::Comment,
    /// The caller likes it.
    pub liked: bool,
}

/// `GET /api/posts/{id}/comments`.
#[derive(Serialize, ToSchema)]
pub struct CommentPage {
    /// Oldest first.
    pub comments: Vec<MarkedComment>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<u64>,
}

/// `GET /api/users`.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    /// Newest first.
    pub users: Vec<User>,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<u64>,
}

/// `GET /api/messages`.
#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    /// Newest first.
    pub messages: Vec<Message>,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<u64>,
}

/// `GET /api/notifications`.
#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    /// Newest first.
    pub notifications: Vec<Notification>,
    /// Unread notifications in all.
    pub unread_count: u64,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<u64>,
}

/// `POST /api/notifications/read`.
#[derive(Serialize, ToSchema)]
pub struct UnreadCount {
    /// Unread notifications left.
    pub unread_count: u64,
}

/// `DELETE /api/sessions`.
#[derive(Serialize, ToSchema)]
pub struct SignedOut {
    /// Always true.
    pub signed_out: bool,
    /// Whether every session of the user ended.
    pub all: bool,
}

/// `PUT /api/me/password`.
#[derive(Serialize, ToSchema)]
pub struct PasswordChanged {
    /// Always true.
    pub changed: bool,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` (with 503) while storage is failing.
    pub status: String,
    /// Why it is degraded.
    pub reason: Option<String>,
}

/// `GET /api/admin/tasks`.
#[derive(Serialize, ToSchema)]
pub struct TaskList {
    /// The tasks, newest first.
    pub tasks: Vec<Task>,
}

/// `POST /api/admin/tasks/{id}/retry` and `/cancel`.
#[derive(Serialize, ToSchema)]
pub struct TaskChange {
    /// Retry: the task waits again.
    pub requeued: Option<bool>,
    /// Cancel: it will never run.
    pub cancelled: Option<bool>,
    /// Cancel of a running task: it was asked to stop.
    pub stop_requested: Option<bool>,
    /// The task now.
    pub task: Task,
}

/// `POST /api/admin/publish`.
#[derive(Serialize, ToSchema)]
pub struct Delivered {
    /// Subscribers the event was queued for.
    pub delivered: u64,
}

/// One second of `GET /api/admin/history`.
#[derive(Serialize, ToSchema)]
pub struct HistoryPoint {
    /// Milliseconds since the epoch.
    pub t: i64,
    /// Tasks that succeeded.
    pub completed: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// Attempts that will be retried.
    pub retried: u64,
}

/// `GET /api/admin/history`.
#[derive(Serialize, ToSchema)]
pub struct History {
    /// Oldest first, over the last ten minutes.
    pub history: Vec<HistoryPoint>,
}

/// Routes of this module: the document itself.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of every HTTP route", content_type = "application/json"))
)]
async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let text = DOCUMENT.get_or_init(|| {
        super::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str())
}

/// Adds what every operation shares: an `Error` answer for every status not
/// listed, and the bearer scheme.
pub fn finish(api: &mut utoipa::openapi::OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER.to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A user's session token (from POST /api/users or /api/sessions) or the \
                     admin token",
                ))
                .build(),
        ),
    );
    let error = ResponseBuilder::new()
        .description("An error in the API's shape; the status names its code")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Error",
                ))))
                .build(),
        )
        .build();
    // A wildcard segment (`{*path}` in the router) is a plain template in OpenAPI.
    let paths = std::mem::take(&mut api.paths.paths);
    api.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    // Operation ids default to handler names, which repeat across modules
    // (`list`, `one`): a repeated one is prefixed with its tag.
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in api.paths.paths.values_mut() {
        for op in operations(item) {
            if let Some(id) = &op.operation_id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
    }
    for item in api.paths.paths.values_mut() {
        for op in operations(item) {
            add_default(op, &error);
            let tag = op.tags.as_ref().and_then(|t| t.first()).cloned();
            if let (Some(id), Some(tag)) = (&mut op.operation_id, tag) {
                if seen.get(id.as_str()).is_some_and(|n| *n > 1) {
                    *id = format!("{tag}_{id}");
                }
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.options,
    ]
    .into_iter()
    .flatten()
}

fn add_default(op: &mut Operation, error: &utoipa::openapi::Response) {
    op.responses
        .responses
        .entry("default".to_owned())
        .or_insert_with(|| RefOr::T(error.clone()));
}
