//! What edges ask the primary: `/api/cluster/…`, with the admin token.
//!
//! An edge (`likewise edge`) owns no data, yet serves `/ws` and `/socket.io/`
//! exactly as the primary does. For that it asks here who a token or a ticket
//! belongs to, which notifications a `since` replay sends, whether a post's room
//! exists and whether a user lets others see them online: the four questions of
//! [`super::realtime::Backend`], answered by the same [`Local`] code the
//! primary's own connections use, so both nodes give the same answers and the
//! same errors. Only the admin token opens these routes: they name users by id,
//! which only a node of the cluster may do.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery};
use super::realtime::Local;
use super::AppState;
use crate::domain::Notification;
use crate::rooms::PostLookup;

/// Most notifications one replay page may ask for.
pub const MAX_REPLAY_PAGE: usize = 1_000;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(auth))
        .routes(routes!(notifications))
        .routes(routes!(post))
        .routes(routes!(presence))
}

fn local(state: &AppState) -> Local {
    Local::new(state.social.clone(), state.admin.clone())
}

/// A credential a client presented to an edge: exactly one of the two.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Credential {
    /// A session token.
    token: Option<String>,
    /// A one-use ticket (`POST /api/realtime/tickets`); spent by this call.
    ticket: Option<String>,
}

/// The user a credential belongs to.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Authenticated {
    /// The user's id.
    pub user_id: u64,
}

/// Who a client's token or ticket belongs to, as the primary's own `/ws` would
/// decide: 401 for an unknown, revoked or spent credential, 403 for the admin
/// token or an admin ticket. A ticket is spent.
#[utoipa::path(
    post,
    path = "/api/cluster/auth",
    tag = "cluster",
    security(("bearer" = [])),
    request_body = Credential,
    responses(
        (status = 200, description = "The user the credential belongs to", body = Authenticated),
        (status = 400, description = "Neither or both of token and ticket", body = super::openapi::Error),
        (status = 401, description = "Unknown credential, or no admin token", body = super::openapi::Error),
        (status = 403, description = "An admin credential, or a user's token calling", body = super::openapi::Error),
    )
)]
async fn auth(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(credential): ApiJson<Credential>,
) -> ApiResult<Json<Authenticated>> {
    let local = local(&state);
    let user_id = match (credential.token, credential.ticket) {
        (Some(token), None) => local.token_user(&token)?,
        (None, Some(ticket)) => local.ticket_user(&ticket)?,
        _ => {
            return Err(ApiError::BadRequest(
                "send exactly one of token and ticket".into(),
            ))
        }
    };
    Ok(Json(Authenticated { user_id }))
}

/// `?user_id=&after=&limit=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReplayQuery {
    /// Whose notifications.
    user_id: u64,
    /// Only those with ids above this.
    #[serde(default)]
    after: u64,
    /// At most this many (1 to 1,000).
    limit: usize,
}

/// One page of a replay.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReplayPage {
    /// Oldest first.
    pub notifications: Vec<Notification>,
}

/// A user's notifications with ids above `after`, oldest first: one page of a
/// `since` replay on an edge.
#[utoipa::path(
    get,
    path = "/api/cluster/notifications",
    tag = "cluster",
    params(ReplayQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The page", body = ReplayPage),
        (status = 400, description = "A missing or bad parameter, or limit out of range", body = super::openapi::Error),
        (status = 401, description = "No admin token", body = super::openapi::Error),
        (status = 403, description = "A user's token", body = super::openapi::Error),
    )
)]
async fn notifications(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ReplayQuery>,
) -> ApiResult<Json<ReplayPage>> {
    if q.limit == 0 || q.limit > MAX_REPLAY_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_REPLAY_PAGE}"
        )));
    }
    let notifications = local(&state).notifications(q.user_id, q.after, q.limit)?;
    Ok(Json(ReplayPage { notifications }))
}

/// Whether a post exists.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PostExists {
    /// The post's id.
    pub id: u64,
    /// Always true: a missing post is a 404.
    pub exists: bool,
}

/// Whether post `id` exists, for a client joining `post:{id}` on an edge. Unlike
/// `GET /api/posts/{id}`, it counts no view.
#[utoipa::path(
    get,
    path = "/api/cluster/posts/{id}",
    tag = "cluster",
    params(("id" = u64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "It exists", body = PostExists),
        (status = 404, description = "No such post", body = super::openapi::Error),
        (status = 401, description = "No admin token", body = super::openapi::Error),
        (status = 403, description = "A user's token", body = super::openapi::Error),
    )
)]
async fn post(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<PostExists>> {
    match local(&state).post(id) {
        PostLookup::Exists => Ok(Json(PostExists { id, exists: true })),
        PostLookup::Missing => Err(ApiError::NotFound(format!("post {id} does not exist"))),
        PostLookup::Failed(_) => Err(ApiError::Unavailable(
            "the store cannot say whether this post exists; try again".into(),
        )),
    }
}

/// Whether a user lets others see them online.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Visible {
    /// The user's id.
    pub user_id: u64,
    /// Their choice (`PUT /api/me/presence`); true by default.
    pub visible: bool,
}

/// A user's choice to be shown online, for the first connection of that user on
/// an edge.
#[utoipa::path(
    get,
    path = "/api/cluster/users/{id}/presence",
    tag = "cluster",
    params(("id" = u64, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's choice", body = Visible),
        (status = 401, description = "No admin token", body = super::openapi::Error),
        (status = 403, description = "A user's token", body = super::openapi::Error),
    )
)]
async fn presence(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Visible>> {
    let visible = state.social.presence_visible(id)?;
    Ok(Json(Visible {
        user_id: id,
        visible,
    }))
}
