//! Posts and what users do to them: comments, likes, collects, shares.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, CurrentUser};
use super::AppState;
use crate::domain::{CollectOutcome, Comment, LikeOutcome, Post, ShareOutcome};

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_post, list_posts))
        .routes(routes!(get_post))
        .routes(routes!(add_comment, list_comments))
        .routes(routes!(like_post, unlike_post))
        .routes(routes!(like_comment, unlike_comment))
        .routes(routes!(collect, uncollect))
        .routes(routes!(share))
}

/// A new post.
#[derive(Deserialize, ToSchema)]
struct NewPost {
    title: String,
    body: String,
}

/// Publishes a post.
#[utoipa::path(
    post,
    path = "/api/posts",
    tag = "posts",
    request_body = NewPost,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The post", body = Post),
        (status = 422, description = "Empty or too long title or body", body = super::openapi::Error),
    )
)]
async fn create_post(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(p): ApiJson<NewPost>,
) -> ApiResult<(StatusCode, Json<Post>)> {
    let post = state.social.create_post(user.id, p.title, p.body).await?;
    Ok((StatusCode::CREATED, Json(post)))
}

/// `?limit=&before=` of newest-first listings.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page size.
    pub limit: Option<usize>,
    /// Only items with ids below this.
    pub before: Option<u64>,
}

/// A `Post` with the caller's own marks added: `liked` and `collected`.
fn post_for(state: &AppState, user: u64, post: Post) -> ApiResult<Value> {
    let marks = state.social.post_marks(user, post.id)?;
    let mut value = serde_json::to_value(post).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Value::Object(fields) = &mut value {
        fields.insert("liked".into(), Value::Bool(marks.liked));
        fields.insert("collected".into(), Value::Bool(marks.collected));
    }
    Ok(value)
}

/// Posts, newest first, with the caller's marks.
#[utoipa::path(
    get,
    path = "/api/posts",
    tag = "posts",
    params(Paging),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of posts", body = super::openapi::PostPage),
    )
)]
async fn list_posts(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<Paging>,
) -> ApiResult<Json<Value>> {
    let limit = state.social.page_limit(q.limit)?;
    let page = state.social.posts(limit, q.before)?;
    let posts = page
        .items
        .into_iter()
        .map(|p| post_for(&state, user.id, p))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(
        json!({"posts": posts, "next_before": page.next_before}),
    ))
}

/// One post with the caller's marks; counts one view.
#[utoipa::path(
    get,
    path = "/api/posts/{id}",
    tag = "posts",
    params(("id" = u64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The post", body = super::openapi::MarkedPost),
        (status = 404, description = "No such post", body = super::openapi::Error),
    )
)]
async fn get_post(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Value>> {
    let post = state.social.post(id, true)?;
    Ok(Json(post_for(&state, user.id, post)?))
}

/// A comment, or a reply when `parent_id` names a comment of the same post.
#[derive(Deserialize, ToSchema)]
struct NewComment {
    body: String,
    parent_id: Option<u64>,
}

/// Comments on a post (or replies to a comment of it).
#[utoipa::path(
    post,
    path = "/api/posts/{id}/comments",
    tag = "posts",
    params(("id" = u64, Path, description = "Post id")),
    request_body = NewComment,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The comment", body = Comment),
        (status = 404, description = "No such post", body = super::openapi::Error),
        (status = 422, description = "Empty or too long body, or a parent of another post", body = super::openapi::Error),
    )
)]
async fn add_comment(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
    ApiJson(c): ApiJson<NewComment>,
) -> ApiResult<(StatusCode, Json<Comment>)> {
    let comment = state
        .social
        .add_comment(user.id, id, c.body, c.parent_id)
        .await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

/// `?limit=&after=` of oldest-first comment listings.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CommentPaging {
    limit: Option<usize>,
    after: Option<u64>,
}

/// A post's comments, oldest first, with the caller's marks.
#[utoipa::path(
    get,
    path = "/api/posts/{id}/comments",
    tag = "posts",
    params(("id" = u64, Path, description = "Post id"), CommentPaging),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of comments", body = super::openapi::CommentPage),
        (status = 404, description = "No such post", body = super::openapi::Error),
    )
)]
async fn list_comments(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<CommentPaging>,
) -> ApiResult<Json<Value>> {
    let limit = match q.limit {
        None => state.social.limits().max_page,
        some => state.social.page_limit(some)?,
    };
    let (comments, next_after) = state.social.comments(id, limit, q.after)?;
    let mut rendered = Vec::with_capacity(comments.len());
    for comment in comments {
        let liked = state.social.comment_liked(user.id, comment.id)?;
        let mut value =
            serde_json::to_value(comment).map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Value::Object(fields) = &mut value {
            fields.insert("liked".into(), Value::Bool(liked));
        }
        rendered.push(value);
    }
    let comments = rendered;
    Ok(Json(
        json!({"comments": comments, "next_after": next_after}),
    ))
}

/// Likes a post (idempotent); the like, the count and the author's notification are one commit.
#[utoipa::path(
    put,
    path = "/api/posts/{id}/like",
    tag = "posts",
    params(("id" = u64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Liked", body = LikeOutcome),
        (status = 404, description = "No such post", body = super::openapi::Error),
    )
)]
async fn like_post(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<LikeOutcome>> {
    Ok(Json(state.social.like_post(user.id, id).await?))
}

/// Removes the caller's like (idempotent).
#[utoipa::path(
    delete,
    path = "/api/posts/{id}/like",
    tag = "posts",
    params(("id" = u64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Not liked", body = LikeOutcome),
        (status = 404, description = "No such post", body = super::openapi::Error),
    )
)]
async fn unlike_post(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<LikeOutcome>> {
    Ok(Json(state.social.unlike_post(user.id, id).await?))
}

/// Likes a comment (idempotent).
#[utoipa::path(
    put,
    path = "/api/comments/{id}/like",
    tag = "posts",
    params(("id" = u64, Path, description = "Comment id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Liked", body = LikeOutcome),
        (status = 404, description = "No such comment", body = super::openapi::Error),
    )
)]
async fn like_comment(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<LikeOutcome>> {
    Ok(Json(state.social.like_comment(user.id, id).await?))
}

/// Removes the caller's like of a comment (idempotent).
#[utoipa::path(
    delete,
    path = "/api/comments/{id}/like",
    tag = "posts",
    params(("id" = u64, Path, description = "Comment id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Not liked", body = LikeOutcome),
        (status = 404, description = "No such comment", body = super::openapi::Error),
    )
)]
async fn unlike_comment(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<LikeOutcome>> {
    Ok(Json(state.social.unlike_comment(user.id, id).await?))
}

/// Collects a post (idempotent).
#[utoipa::path(
    put,
    path = "/api/posts/{id}/collect",
    tag = "posts",
    params(("id" = u64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Collected", body = CollectOutcome),
        (status = 404, description = "No such post", body = super::openapi::Error),
    )
)]
async fn collect(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<CollectOutcome>> {
    Ok(Json(state.social.collect(user.id, id).await?))
}

/// Removes a post from the caller's collection (idempotent).
#[utoipa::path(
    delete,
    path = "/api/posts/{id}/collect",
    tag = "posts",
    params(("id" = u64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Not collected", body = CollectOutcome),
        (status = 404, description = "No such post", body = super::openapi::Error),
    )
)]
async fn uncollect(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<CollectOutcome>> {
    Ok(Json(state.social.uncollect(user.id, id).await?))
}

/// Shares a post.
#[utoipa::path(
    post,
    path = "/api/posts/{id}/shares",
    tag = "posts",
    params(("id" = u64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Shared", body = ShareOutcome),
        (status = 404, description = "No such post", body = super::openapi::Error),
    )
)]
async fn share(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<(StatusCode, Json<ShareOutcome>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.social.share(user.id, id).await?),
    ))
}
