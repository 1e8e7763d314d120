//! Posts and what users do to them: comments, likes, collects, shares.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, CurrentUser};
use super::AppState;
use crate::domain::{CollectOutcome, Comment, LikeOutcome, Post, ShareOutcome};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/posts", post(create_post).get(list_posts))
        .route("/api/posts/{id}", get(get_post))
        .route(
            "/api/posts/{id}/comments",
            post(add_comment).get(list_comments),
        )
        .route("/api/posts/{id}/like", put(like_post).delete(unlike_post))
        .route(
            "/api/comments/{id}/like",
            put(like_comment).delete(unlike_comment),
        )
        .route("/api/posts/{id}/collect", put(collect).delete(uncollect))
        .route("/api/posts/{id}/shares", post(share))
}

#[derive(Deserialize)]
struct NewPost {
    title: String,
    body: String,
}

async fn create_post(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(p): ApiJson<NewPost>,
) -> ApiResult<(StatusCode, Json<Post>)> {
    let post = state.social.create_post(user.id, p.title, p.body).await?;
    Ok((StatusCode::CREATED, Json(post)))
}

/// `?limit=&before=` of newest-first listings.
#[derive(Deserialize)]
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

async fn get_post(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Value>> {
    let post = state.social.post(id, true)?;
    Ok(Json(post_for(&state, user.id, post)?))
}

#[derive(Deserialize)]
struct NewComment {
    body: String,
    parent_id: Option<u64>,
}

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

#[derive(Deserialize)]
struct CommentPaging {
    limit: Option<usize>,
    after: Option<u64>,
}

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

async fn like_post(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<LikeOutcome>> {
    Ok(Json(state.social.like_post(user.id, id).await?))
}

async fn unlike_post(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<LikeOutcome>> {
    Ok(Json(state.social.unlike_post(user.id, id).await?))
}

async fn like_comment(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<LikeOutcome>> {
    Ok(Json(state.social.like_comment(user.id, id).await?))
}

async fn unlike_comment(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<LikeOutcome>> {
    Ok(Json(state.social.unlike_comment(user.id, id).await?))
}

async fn collect(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<CollectOutcome>> {
    Ok(Json(state.social.collect(user.id, id).await?))
}

async fn uncollect(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<CollectOutcome>> {
    Ok(Json(state.social.uncollect(user.id, id).await?))
}

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
