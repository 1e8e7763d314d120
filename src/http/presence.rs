//! Presence over HTTP: `GET /api/presence?user_ids=` (who of these is online), and
//! the caller's own choice to be shown online, `GET`/`PUT /api/me/presence`.
//!
//! Who is online is the hub's ([`crate::hub::presence`]), or in a cluster the
//! cluster's ([`crate::cluster::Bus::online`], from Redis: every live node's
//! connections); whether a user lets others see it is stored by the domain. A
//! change of the choice is stored first, then applied to the hub, which announces
//! it in `presence:{id}` when the user is connected (in a cluster, the bus applies
//! it to the user's connections on every node and announces it once). While the
//! cluster's Redis cannot answer, presence is read from this node's connections
//! only, in the same shape.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, CurrentUser, SessionOrAdmin};
use super::AppState;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(online))
        .routes(routes!(mine, set_mine))
}

/// `?user_ids=1,2,3`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Query {
    /// Decimal user ids separated by commas, at most `limits.max_presence_ids`.
    #[param(example = "1,2,3")]
    user_ids: Option<String>,
}

/// `GET /api/presence`.
#[derive(Serialize, ToSchema)]
struct Online {
    /// The listed users who are online and shown, in the order asked, each once.
    online: Vec<u64>,
}

/// The caller's presence: their choice and whether they are shown online now.
#[derive(Serialize, ToSchema)]
struct MyPresence {
    /// Whether others may see the caller online (default true).
    visible: bool,
    /// Whether the caller is shown online now.
    online: bool,
}

/// Whether the caller may be shown online.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Visibility {
    /// `false`: never reported online nor announced.
    visible: bool,
}

/// Reads `user_ids`: decimal ids separated by commas, at most `max` of them.
fn parse_ids(list: Option<&str>, max: usize) -> Result<Vec<u64>, ApiError> {
    let list = list.ok_or_else(|| {
        ApiError::BadRequest("user_ids is required: a comma-separated list of user ids".into())
    })?;
    if list.is_empty() {
        return Ok(Vec::new());
    }
    // Counted before anything is allocated for the ids.
    let n = list.split(',').count();
    if n > max {
        return Err(ApiError::BadRequest(format!(
            "user_ids lists {n} ids; at most {max} may be asked at once"
        )));
    }
    list.split(',')
        .map(|id| {
            let id = id.trim();
            let canonical = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
            canonical
                .then(|| id.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    let shown: String = id.chars().take(24).collect();
                    ApiError::BadRequest(format!("user_ids: {shown:?} is not a user id"))
                })
        })
        .collect()
}

/// Which of the listed users are online: those with a realtime connection open
/// who let others see it, in the order asked. A user's token or the admin token.
#[utoipa::path(
    get,
    path = "/api/presence",
    tag = "presence",
    params(Query),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The listed users who are online", body = Online),
        (status = 400, description = "user_ids missing, not decimal ids, or over the limit", body = super::openapi::Error),
        (status = 401, description = "No valid token", body = super::openapi::Error),
    )
)]
async fn online(
    State(state): State<AppState>,
    _caller: SessionOrAdmin,
    ApiQuery(q): ApiQuery<Query>,
) -> ApiResult<Json<Online>> {
    let max = state.settings.limits.max_presence_ids;
    let ids = parse_ids(q.user_ids.as_deref(), max)?;
    Ok(Json(Online {
        online: online_now(&state, &ids).await,
    }))
}

/// Which of `ids` are online: in the cluster when there is one and its Redis
/// answers, on this node otherwise.
async fn online_now(state: &AppState, ids: &[u64]) -> Vec<u64> {
    if let Some(bus) = &state.cluster {
        if let Some(online) = bus.online(ids).await {
            return online;
        }
    }
    state.hub.online(ids)
}

async fn my_presence(state: &AppState, user: u64, visible: bool) -> MyPresence {
    MyPresence {
        visible,
        online: !online_now(state, &[user]).await.is_empty(),
    }
}

/// The caller's choice to be shown online, and whether they are now.
#[utoipa::path(
    get,
    path = "/api/me/presence",
    tag = "presence",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's presence", body = MyPresence))
)]
async fn mine(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<MyPresence>> {
    let visible = state.social.presence_visible(user.id)?;
    Ok(Json(my_presence(&state, user.id, visible).await))
}

/// Stores whether the caller may be shown online, then shows or hides them at once
/// (announced to `presence:{id}` if they are connected).
#[utoipa::path(
    put,
    path = "/api/me/presence",
    tag = "presence",
    request_body = Visibility,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The choice is stored", body = MyPresence),
        (status = 400, description = "Not a JSON object {\"visible\": bool}", body = super::openapi::Error),
    )
)]
async fn set_mine(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(v): ApiJson<Visibility>,
) -> ApiResult<Json<MyPresence>> {
    let hub = state.hub.clone();
    let visible = state
        .social
        .set_presence_visible(user.id, v.visible, |visible| {
            hub.set_presence_visible(user.id, visible)
        })
        .await?;
    if let Some(bus) = &state.cluster {
        // The answer reads Redis: let it see the change first.
        bus.presence_settled().await;
    }
    Ok(Json(my_presence(&state, user.id, visible).await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_decimal_and_bounded() {
        assert_eq!(parse_ids(Some("1,2,3"), 3).unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids(Some(" 4 , 5"), 3).unwrap(), vec![4, 5]);
        assert!(parse_ids(Some(""), 3).unwrap().is_empty());
        for bad in [
            "1,,2",
            "x",
            "-1",
            "1.5",
            "+3",
            "99999999999999999999999",
            "1,",
        ] {
            assert!(parse_ids(Some(bad), 10).is_err(), "{bad}");
        }
        let over = parse_ids(Some("1,2,3,4"), 3).unwrap_err();
        assert!(over.to_string().contains("at most 3"), "{over}");
        assert!(parse_ids(None, 3).is_err());
    }
}
