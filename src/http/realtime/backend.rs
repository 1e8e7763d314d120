//! Where a realtime connection's questions are answered: who a token or a
//! ticket belongs to, which notifications a `since` replay sends, whether a
//! post's room exists, and whether a user lets others see them online.
//!
//! On the primary the answers come from the store ([`Local`]); on an edge, which
//! owns no data, they come from the primary over HTTP (`crate::edge::primary`).
//! The sessions and both transports see only this trait, so a connection behaves
//! the same on either node. Every answer may wait (an edge asks across the
//! network), so each method returns a future; none of them may hang: an edge's
//! implementation has deadlines and answers `unavailable` past them.

use futures_util::future::BoxFuture;

use crate::domain::AdminToken;
use crate::domain::{DomainError, Notification, Redeemed, Social};
use crate::http::error::ApiError;
use crate::http::extract::admin_is_no_user;
use crate::rooms::PostLookup;

/// The answers a realtime connection needs from the node that owns the data.
pub trait Backend: Send + Sync + 'static {
    /// The id of the user a session token belongs to. The admin token is refused
    /// (403), an unknown or revoked token too (401).
    fn user_for_token<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<u64, ApiError>>;

    /// Spends a one-use ticket and gives the id of the user it was issued to. An
    /// admin ticket is refused (403): it opens only the admin stream.
    fn user_for_ticket<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<u64, ApiError>>;

    /// `user`'s notifications with ids above `after`, oldest first, at most `limit`.
    fn notifications_after(
        &self,
        user: u64,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Notification>, ApiError>>;

    /// Whether post `id` exists (for joining `post:{id}`).
    fn post_lookup(&self, id: u64) -> BoxFuture<'_, PostLookup>;

    /// Whether `user` lets others see them online. A node that cannot tell
    /// answers `false`: a user who opted out must never be revealed.
    fn presence_visible(&self, user: u64) -> BoxFuture<'_, bool>;

    /// Whether this node holds the store, so that [`Backend::visible_now`]
    /// answers without waiting.
    fn holds_store(&self) -> bool;

    /// Whether `user` lets others see them online, read now from the store
    /// (each time it is asked, so a choice stored a moment ago counts); `false`
    /// where the node holds no store (ask [`Backend::presence_visible`]).
    fn visible_now(&self, user: u64) -> bool;
}

/// The answers of the node that owns the store.
#[derive(Clone)]
pub struct Local {
    social: Social,
    admin: AdminToken,
}

impl Local {
    /// Answers from `social`'s store; `admin` is refused as a user's token.
    pub fn new(social: Social, admin: AdminToken) -> Local {
        Local { social, admin }
    }

    /// [`Backend::user_for_token`], without waiting.
    pub fn token_user(&self, token: &str) -> Result<u64, ApiError> {
        if self.admin.matches(token) {
            return Err(admin_is_no_user());
        }
        Ok(self.social.authenticate(token)?.id)
    }

    /// [`Backend::user_for_ticket`], without waiting.
    pub fn ticket_user(&self, ticket: &str) -> Result<u64, ApiError> {
        match self.social.redeem_ticket(ticket)? {
            Redeemed::User(user) => Ok(user.id),
            Redeemed::Admin => Err(ApiError::Forbidden(
                "an admin ticket opens only the admin stream: get a ticket with a user's token"
                    .into(),
            )),
        }
    }

    /// [`Backend::notifications_after`], without waiting.
    pub fn notifications(
        &self,
        user: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Notification>, ApiError> {
        Ok(self.social.notifications_since(user, after, limit)?)
    }

    /// [`Backend::post_lookup`], without waiting.
    pub fn post(&self, id: u64) -> PostLookup {
        match self.social.post(id, false) {
            Ok(_) => PostLookup::Exists,
            Err(DomainError::NotFound(_)) => PostLookup::Missing,
            Err(e) => {
                tracing::warn!(error = %e, post = id, "checking a room's post failed");
                PostLookup::Failed(e.to_string())
            }
        }
    }

    /// [`Backend::presence_visible`], without waiting.
    pub fn visible(&self, user: u64) -> bool {
        self.social.presence_visible(user).unwrap_or_else(|e| {
            // Shown online only when the user's choice is known.
            tracing::warn!(error = %e, user, "reading a user's presence choice failed");
            false
        })
    }
}

impl Backend for Local {
    fn user_for_token<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<u64, ApiError>> {
        Box::pin(std::future::ready(self.token_user(token)))
    }

    fn user_for_ticket<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<u64, ApiError>> {
        Box::pin(std::future::ready(self.ticket_user(ticket)))
    }

    fn notifications_after(
        &self,
        user: u64,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Notification>, ApiError>> {
        Box::pin(std::future::ready(self.notifications(user, after, limit)))
    }

    fn post_lookup(&self, id: u64) -> BoxFuture<'_, PostLookup> {
        Box::pin(std::future::ready(self.post(id)))
    }

    fn presence_visible(&self, user: u64) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(self.visible(user)))
    }

    fn holds_store(&self) -> bool {
        true
    }

    fn visible_now(&self, user: u64) -> bool {
        self.visible(user)
    }
}
