//! Read-only views a client needs to render people and its own marks: users by id,
//! by name and as a newest-first listing, and whether the caller has liked or
//! collected a post or liked a comment. Nothing here writes.

use std::ops::Bound;

use super::{into_page, DomainResult, Page, Social, User};

/// What the caller has done to a post.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostMarks {
    /// The caller likes the post.
    pub liked: bool,
    /// The caller has collected the post.
    pub collected: bool,
}

impl Social {
    /// The user with this name (names are unique regardless of case).
    pub fn user_by_name(&self, name: &str) -> DomainResult<Option<User>> {
        let t = self.store().tables();
        match t.user_names.get(&name.to_lowercase())? {
            Some(id) => Ok(t.users.get(&id)?.as_ref().map(User::from)),
            None => Ok(None),
        }
    }

    /// Users, newest first.
    pub fn users(&self, limit: usize, before: Option<u64>) -> DomainResult<Page<User>> {
        let t = self.store().tables();
        let upper = before.map_or(Bound::Unbounded, Bound::Excluded);
        let rows = t
            .users
            .range_rev(Bound::Unbounded, upper.as_ref(), limit + 1)?;
        let items = rows.iter().map(|(_, r)| User::from(r)).collect();
        Ok(into_page(items, limit, |u: &User| u.id))
    }

    /// Whether `user` likes and has collected `post_id`.
    pub fn post_marks(&self, user: u64, post_id: u64) -> DomainResult<PostMarks> {
        let t = self.store().tables();
        Ok(PostMarks {
            liked: t.post_likes.contains(&(post_id, user))?,
            collected: t.post_collects.contains(&(post_id, user))?,
        })
    }

    /// Whether `user` likes `comment_id`.
    pub fn comment_liked(&self, user: u64, comment_id: u64) -> DomainResult<bool> {
        Ok(self
            .store()
            .tables()
            .comment_likes
            .contains(&(comment_id, user))?)
    }
}
