//! Posts, comments, likes, collects and shares.

use std::ops::Bound;

use serde::Serialize;

use super::effects::{self, Caused};
use super::{check_text, into_page, Comment, DomainError, DomainResult, Event, Page, Post, Social};
use crate::store::records::{CommentRecord, PostCounts, PostRecord};
use crate::store::{now_ms, Tables};

/// Answer of a like or unlike.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LikeOutcome {
    /// Whether the caller likes it now.
    pub liked: bool,
    /// Whether this call created the like.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// The task this like caused: always null since the notification is written
    /// with the like (kept for clients of 0.1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Option<u64>>,
    /// The notification this like created, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_id: Option<Option<u64>>,
}

/// Answer of a collect or uncollect.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CollectOutcome {
    /// Whether the caller has it collected now.
    pub collected: bool,
    /// Whether this call changed anything.
    pub changed: bool,
    /// Always null since the notification is written with the collect.
    pub task_id: Option<u64>,
    /// The notification this collect created, if any.
    pub notification_id: Option<u64>,
}

/// Answer of a share.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ShareOutcome {
    /// Always true.
    pub shared: bool,
    /// The share's id.
    pub share_id: u64,
    /// Always null since the count is updated with the share.
    pub task_id: Option<u64>,
}

/// The view of post `id`, read outside any transaction.
pub fn read_post(t: &Tables, id: u64) -> DomainResult<Option<Post>> {
    let Some(r) = t.posts.get(&id)? else {
        return Ok(None);
    };
    let counts = t.post_counts.get(&id)?.unwrap_or_default();
    Ok(Some(Post::from_record(id, &r, &counts)))
}

/// The view of comment `id`, read outside any transaction.
pub fn read_comment(t: &Tables, id: u64) -> DomainResult<Option<Comment>> {
    let Some(r) = t.comments.get(&id)? else {
        return Ok(None);
    };
    let likes = t.comment_counts.get(&id)?.unwrap_or(0);
    Ok(Some(Comment::from_record(id, &r, likes)))
}

impl Social {
    /// Creates a post; once it is durable it is handed to the event sink
    /// ([`Event::PostCreated`]), in commit order.
    pub async fn create_post(
        &self,
        author: u64,
        title: String,
        body: String,
    ) -> DomainResult<Post> {
        let l = self.limits();
        check_text("title", &title, l.max_title_chars)?;
        check_text("body", &body, l.max_body_chars)?;
        self.commit_with_events(move |tx| {
            let t = tx.t();
            let id = tx.next_id()?;
            let post = PostRecord {
                author_id: author,
                title: title.clone(),
                body: body.clone(),
                created_at: now_ms(),
            };
            tx.insert(&t.posts, &id, &post)?;
            tx.insert(&t.post_counts, &id, &PostCounts::default())?;
            let post = Post::from_record(id, &post, &PostCounts::default());
            Ok(Ok((post.clone(), vec![Event::PostCreated(post)])))
        })
        .await
    }

    fn with_pending_views(&self, mut post: Post) -> Post {
        post.view_count += self.views().pending(post.id);
        post
    }

    /// Posts, newest first.
    pub fn posts(&self, limit: usize, before: Option<u64>) -> DomainResult<Page<Post>> {
        let t = self.store().tables();
        let upper = before.map_or(Bound::Unbounded, Bound::Excluded);
        let rows = t
            .posts
            .range_rev(Bound::Unbounded, upper.as_ref(), limit + 1)?;
        let mut items = Vec::with_capacity(rows.len());
        for (id, r) in rows {
            let counts = t.post_counts.get(&id)?.unwrap_or_default();
            items.push(self.with_pending_views(Post::from_record(id, &r, &counts)));
        }
        Ok(into_page(items, limit, |p: &Post| p.id))
    }

    /// One post; `count_view` counts a view (batched in memory).
    pub fn post(&self, id: u64, count_view: bool) -> DomainResult<Post> {
        let post = read_post(self.store().tables(), id)?.ok_or(DomainError::NotFound("post"))?;
        if count_view {
            self.views().add(id);
        }
        Ok(self.with_pending_views(post))
    }

    /// Writes the views counted in memory into the posts.
    pub async fn flush_views(&self) -> DomainResult<usize> {
        let pending = self.views().take();
        if pending.is_empty() {
            return Ok(0);
        }
        let n = pending.len();
        let batch = pending.clone();
        let result = self
            .store()
            .write(move |tx| {
                let t = tx.t();
                for (id, views) in &batch {
                    if let Some(mut counts) = tx.get(&t.post_counts, id)? {
                        counts.views += views;
                        tx.insert(&t.post_counts, id, &counts)?;
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            self.views().restore(pending);
            return Err(e.into());
        }
        Ok(n)
    }

    /// Likes a post (idempotent). The like, the post's like count and the author's
    /// notification are one commit.
    pub async fn like_post(&self, user: u64, post_id: u64) -> DomainResult<LikeOutcome> {
        let parts = self.policy_parts();
        self.commit_with_events(move |tx| {
            let t = tx.t();
            let Some(post) = tx.get(&t.posts, &post_id)? else {
                return Ok(Err(DomainError::NotFound("post")));
            };
            let key = (post_id, user);
            if tx.contains(&t.post_likes, &key)? {
                return Ok(Ok((liked(false, None), Vec::new())));
            }
            tx.insert(&t.post_likes, &key, &now_ms())?;
            let policy = parts.policy();
            let Caused {
                notification,
                events,
            } = effects::post_liked(tx, policy, post_id, &post, user)?;
            Ok(Ok((liked(true, notification), events)))
        })
        .await
    }

    /// Removes a like from a post (idempotent).
    pub async fn unlike_post(&self, user: u64, post_id: u64) -> DomainResult<LikeOutcome> {
        self.commit_with_events(move |tx| {
            let t = tx.t();
            if !tx.contains(&t.posts, &post_id)? {
                return Ok(Err(DomainError::NotFound("post")));
            }
            let mut events = Vec::new();
            if tx.remove(&t.post_likes, &(post_id, user))? {
                events = effects::post_unliked(tx, post_id)?.events;
            }
            Ok(Ok((unliked(), events)))
        })
        .await
    }

    /// Likes a comment (idempotent).
    pub async fn like_comment(&self, user: u64, comment_id: u64) -> DomainResult<LikeOutcome> {
        let parts = self.policy_parts();
        self.commit_with_events(move |tx| {
            let t = tx.t();
            let Some(comment) = tx.get(&t.comments, &comment_id)? else {
                return Ok(Err(DomainError::NotFound("comment")));
            };
            let key = (comment_id, user);
            if tx.contains(&t.comment_likes, &key)? {
                return Ok(Ok((liked(false, None), Vec::new())));
            }
            tx.insert(&t.comment_likes, &key, &now_ms())?;
            let policy = parts.policy();
            let Caused {
                notification,
                events,
            } = effects::comment_liked(tx, policy, comment_id, &comment, user)?;
            Ok(Ok((liked(true, notification), events)))
        })
        .await
    }

    /// Removes a like from a comment (idempotent).
    pub async fn unlike_comment(&self, user: u64, comment_id: u64) -> DomainResult<LikeOutcome> {
        self.commit_with_events(move |tx| {
            let t = tx.t();
            let Some(comment) = tx.get(&t.comments, &comment_id)? else {
                return Ok(Err(DomainError::NotFound("comment")));
            };
            let mut events = Vec::new();
            if tx.remove(&t.comment_likes, &(comment_id, user))? {
                events = effects::comment_unliked(tx, comment_id, comment.post_id)?.events;
            }
            Ok(Ok((unliked(), events)))
        })
        .await
    }

    /// Collects a post (idempotent).
    pub async fn collect(&self, user: u64, post_id: u64) -> DomainResult<CollectOutcome> {
        let parts = self.policy_parts();
        self.commit_with_events(move |tx| {
            let t = tx.t();
            let Some(post) = tx.get(&t.posts, &post_id)? else {
                return Ok(Err(DomainError::NotFound("post")));
            };
            let key = (post_id, user);
            if tx.contains(&t.post_collects, &key)? {
                let outcome = CollectOutcome {
                    collected: true,
                    changed: false,
                    task_id: None,
                    notification_id: None,
                };
                return Ok(Ok((outcome, Vec::new())));
            }
            tx.insert(&t.post_collects, &key, &now_ms())?;
            let policy = parts.policy();
            let caused = effects::post_collected(tx, policy, post_id, &post, user)?;
            let outcome = CollectOutcome {
                collected: true,
                changed: true,
                task_id: None,
                notification_id: caused.notification,
            };
            Ok(Ok((outcome, caused.events)))
        })
        .await
    }

    /// Removes a collect (idempotent).
    pub async fn uncollect(&self, user: u64, post_id: u64) -> DomainResult<CollectOutcome> {
        self.commit_with_events(move |tx| {
            let t = tx.t();
            if !tx.contains(&t.posts, &post_id)? {
                return Ok(Err(DomainError::NotFound("post")));
            }
            let changed = tx.remove(&t.post_collects, &(post_id, user))?;
            let mut events = Vec::new();
            if changed {
                events = effects::post_uncollected(tx, post_id)?.events;
            }
            let outcome = CollectOutcome {
                collected: false,
                changed,
                task_id: None,
                notification_id: None,
            };
            Ok(Ok((outcome, events)))
        })
        .await
    }

    /// Records a share of a post.
    pub async fn share(&self, user: u64, post_id: u64) -> DomainResult<ShareOutcome> {
        self.commit_with_events(move |tx| {
            let t = tx.t();
            if !tx.contains(&t.posts, &post_id)? {
                return Ok(Err(DomainError::NotFound("post")));
            }
            let share_id = tx.next_id()?;
            tx.insert(&t.post_shares, &(post_id, share_id), &user)?;
            let events = effects::post_shared(tx, post_id)?.events;
            let outcome = ShareOutcome {
                shared: true,
                share_id,
                task_id: None,
            };
            Ok(Ok((outcome, events)))
        })
        .await
    }

    /// Adds a comment, or a reply when `parent_id` names a comment of the same post.
    pub async fn add_comment(
        &self,
        author: u64,
        post_id: u64,
        body: String,
        parent_id: Option<u64>,
    ) -> DomainResult<Comment> {
        check_text("body", &body, self.limits().max_body_chars)?;
        let parts = self.policy_parts();
        self.commit_with_events(move |tx| {
            let t = tx.t();
            let Some(post) = tx.get(&t.posts, &post_id)? else {
                return Ok(Err(DomainError::NotFound("post")));
            };
            let parent = match parent_id {
                Some(pid) => match tx.get(&t.comments, &pid)? {
                    Some(c) if c.post_id == post_id => Some(c),
                    Some(_) => {
                        return Ok(Err(DomainError::Invalid(
                            "parent_id names a comment of another post".into(),
                        )))
                    }
                    None => return Ok(Err(DomainError::NotFound("parent comment"))),
                },
                None => None,
            };
            let id = tx.next_id()?;
            let comment = CommentRecord {
                post_id,
                author_id: author,
                parent_id,
                body: body.clone(),
                created_at: now_ms(),
            };
            tx.insert(&t.comments, &id, &comment)?;
            tx.insert(&t.comment_counts, &id, &0)?;
            tx.insert(&t.post_comments, &(post_id, id), &())?;
            let policy = parts.policy();
            let caused = effects::commented(tx, policy, &post, id, &comment, parent.as_ref())?;
            Ok(Ok((Comment::from_record(id, &comment, 0), caused.events)))
        })
        .await
    }

    /// One comment.
    pub fn comment(&self, id: u64) -> DomainResult<Option<Comment>> {
        read_comment(self.store().tables(), id)
    }

    /// A post's comments, oldest first, after comment `after`, at most `limit`.
    pub fn comments(
        &self,
        post_id: u64,
        limit: usize,
        after: Option<u64>,
    ) -> DomainResult<(Vec<Comment>, Option<u64>)> {
        let t = self.store().tables();
        if !t.posts.contains(&post_id)? {
            return Err(DomainError::NotFound("post"));
        }
        let from = (post_id, after.map_or(0, |a| a.saturating_add(1)));
        let keys =
            t.post_comments
                .range(&from, Bound::Included(&(post_id, u64::MAX)), limit + 1)?;
        let more = keys.len() > limit;
        let mut items = Vec::with_capacity(keys.len().min(limit));
        for ((_, id), ()) in keys.into_iter().take(limit) {
            if let Some(c) = read_comment(t, id)? {
                items.push(c);
            }
        }
        let next_after = if more {
            items.last().map(|c| c.id)
        } else {
            None
        };
        Ok((items, next_after))
    }
}

fn liked(created: bool, notification: Option<u64>) -> LikeOutcome {
    LikeOutcome {
        liked: true,
        created: Some(created),
        task_id: Some(None),
        notification_id: Some(notification),
    }
}

fn unliked() -> LikeOutcome {
    LikeOutcome {
        liked: false,
        created: None,
        task_id: None,
        notification_id: None,
    }
}
