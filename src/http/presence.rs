//! Presence over HTTP: `GET /api/presence?user_ids=` (who of these is online), and
//! the caller's own choice to be shown online, `GET`/`PUT /api/me/presence`.
//!
//! Who is online is the hub's ([`crate::hub::presence`]); whether a user lets
//! others see it is stored by the domain. A change of the choice is stored first,
//! then applied to the hub, which announces it in `presence:{id}` when the user is
//! connected.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, CurrentUser, SessionOrAdmin};
use super::AppState;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/presence", get(online))
        .route("/api/me/presence", get(mine).put(set_mine))
}

#[derive(Deserialize)]
struct Query {
    user_ids: Option<String>,
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

/// `GET /api/presence?user_ids=1,2,3`: `{"online":[ids]}`, the ids of those users
/// who have a realtime connection open and let others see it, in the order asked.
async fn online(
    State(state): State<AppState>,
    _caller: SessionOrAdmin,
    ApiQuery(q): ApiQuery<Query>,
) -> ApiResult<Json<Value>> {
    let ids = parse_ids(
        q.user_ids.as_deref(),
        state.settings.limits.max_presence_ids,
    )?;
    Ok(Json(json!({"online": state.hub.online(&ids)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Visibility {
    visible: bool,
}

/// `GET /api/me/presence`: `{"visible": bool, "online": bool}`.
async fn mine(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Value>> {
    let visible = state.social.presence_visible(user.id)?;
    let online = !state.hub.online(&[user.id]).is_empty();
    Ok(Json(json!({"visible": visible, "online": online})))
}

/// `PUT /api/me/presence {"visible": bool}`: stores the choice, then shows or hides
/// the user at once (announced to `presence:{id}` if they are connected).
async fn set_mine(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(v): ApiJson<Visibility>,
) -> ApiResult<Json<Value>> {
    let hub = state.hub.clone();
    let visible = state
        .social
        .set_presence_visible(user.id, v.visible, |visible| {
            hub.set_presence_visible(user.id, visible)
        })
        .await?;
    let online = !state.hub.online(&[user.id]).is_empty();
    Ok(Json(json!({"visible": visible, "online": online})))
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
