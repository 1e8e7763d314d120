//! Posts, comments, likes, collects and shares.

use std::ops::Bound;

use serde::Serialize;

use super::{
    check_text, commit, commit_lazy, effects, into_page, Comment, DomainError, DomainResult, Page,
    Post, Social, Timestamp,
};

/// Answer of a like or unlike.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LikeOutcome {
    /// Whether the caller likes it now.
    pub liked: bool,
    /// Whether this call created the like.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// The notification task this like caused, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Option<u64>>,
}

/// Answer of a collect or uncollect.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CollectOutcome {
    /// Whether the caller has it collected now.
    pub collected: bool,
    /// Whether this call changed anything.
    pub changed: bool,
    /// The notification task this collect caused, if any.
    pub task_id: Option<u64>,
}

/// Answer of a share.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShareOutcome {
    /// Always true.
    pub shared: bool,
    /// The share's id.
    pub share_id: u64,
    /// The recount task the share caused.
    pub task_id: u64,
}

impl Social {
    /// Creates a post.
    pub async fn create_post(
        &self,
        author: u64,
        title: String,
        body: String,
    ) -> DomainResult<Post> {
        let l = self.limits();
        check_text("title", &title, l.max_title_chars)?;
        check_text("body", &body, l.max_body_chars)?;
        commit(self.store(), move |tx| {
            let t = tx.t();
            let post = Post {
                id: tx.next_id()?,
                author_id: author,
                title: title.clone(),
                body: body.clone(),
                created_at: Timestamp::now(),
                likes_count: 0,
                collects_count: 0,
                comments_count: 0,
                shares_count: 0,
                view_count: 0,
            };
            tx.insert(&t.posts, &post.id, &post)?;
            Ok(Ok(post))
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
        let items = rows
            .into_iter()
            .map(|(_, p)| self.with_pending_views(p))
            .collect();
        Ok(into_page(items, limit, |p: &Post| p.id))
    }

    /// One post; `count_view` counts a view (batched in memory).
    pub fn post(&self, id: u64, count_view: bool) -> DomainResult<Post> {
        let post = self
            .store()
            .tables()
            .posts
            .get(&id)?
            .ok_or(DomainError::NotFound("post"))?;
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
                    if let Some(mut post) = tx.get(&t.posts, id)? {
                        post.view_count += views;
                        tx.insert(&t.posts, id, &post)?;
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

    /// Likes a post (idempotent).
    pub async fn like_post(&self, user: u64, post_id: u64) -> DomainResult<LikeOutcome> {
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
            let t = tx.t();
            let Some(post) = tx.get(&t.posts, &post_id)? else {
                return Ok(Err(DomainError::NotFound("post")));
            };
            let key = (post_id, user);
            if tx.contains(&t.post_likes, &key)? {
                return Ok(Ok(liked(false, None)));
            }
            tx.insert(&t.post_likes, &key, &crate::store::now_ms())?;
            let task = effects::post_liked(tx, &post, user, max_attempts)?;
            Ok(Ok(liked(true, task)))
        })
        .await
    }

    /// Removes a like from a post (idempotent).
    pub async fn unlike_post(&self, user: u64, post_id: u64) -> DomainResult<LikeOutcome> {
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
            let t = tx.t();
            if !tx.contains(&t.posts, &post_id)? {
                return Ok(Err(DomainError::NotFound("post")));
            }
            if tx.remove(&t.post_likes, &(post_id, user))? {
                effects::post_unliked(tx, post_id, max_attempts)?;
            }
            Ok(Ok(unliked()))
        })
        .await
    }

    /// Likes a comment (idempotent).
    pub async fn like_comment(&self, user: u64, comment_id: u64) -> DomainResult<LikeOutcome> {
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
            let t = tx.t();
            let Some(comment) = tx.get(&t.comments, &comment_id)? else {
                return Ok(Err(DomainError::NotFound("comment")));
            };
            let key = (comment_id, user);
            if tx.contains(&t.comment_likes, &key)? {
                return Ok(Ok(liked(false, None)));
            }
            tx.insert(&t.comment_likes, &key, &crate::store::now_ms())?;
            let task = effects::comment_liked(tx, &comment, user, max_attempts)?;
            Ok(Ok(liked(true, task)))
        })
        .await
    }

    /// Removes a like from a comment (idempotent).
    pub async fn unlike_comment(&self, user: u64, comment_id: u64) -> DomainResult<LikeOutcome> {
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
            let t = tx.t();
            if !tx.contains(&t.comments, &comment_id)? {
                return Ok(Err(DomainError::NotFound("comment")));
            }
            if tx.remove(&t.comment_likes, &(comment_id, user))? {
                effects::comment_unliked(tx, comment_id, max_attempts)?;
            }
            Ok(Ok(unliked()))
        })
        .await
    }

    /// Collects a post (idempotent).
    pub async fn collect(&self, user: u64, post_id: u64) -> DomainResult<CollectOutcome> {
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
            let t = tx.t();
            let Some(post) = tx.get(&t.posts, &post_id)? else {
                return Ok(Err(DomainError::NotFound("post")));
            };
            let key = (post_id, user);
            if tx.contains(&t.post_collects, &key)? {
                return Ok(Ok(CollectOutcome {
                    collected: true,
                    changed: false,
                    task_id: None,
                }));
            }
            tx.insert(&t.post_collects, &key, &crate::store::now_ms())?;
            let task_id = effects::post_collected(tx, &post, user, max_attempts)?;
            Ok(Ok(CollectOutcome {
                collected: true,
                changed: true,
                task_id,
            }))
        })
        .await
    }

    /// Removes a collect (idempotent).
    pub async fn uncollect(&self, user: u64, post_id: u64) -> DomainResult<CollectOutcome> {
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
            let t = tx.t();
            if !tx.contains(&t.posts, &post_id)? {
                return Ok(Err(DomainError::NotFound("post")));
            }
            let changed = tx.remove(&t.post_collects, &(post_id, user))?;
            if changed {
                effects::post_uncollected(tx, post_id, max_attempts)?;
            }
            Ok(Ok(CollectOutcome {
                collected: false,
                changed,
                task_id: None,
            }))
        })
        .await
    }

    /// Records a share of a post.
    pub async fn share(&self, user: u64, post_id: u64) -> DomainResult<ShareOutcome> {
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
            let t = tx.t();
            if !tx.contains(&t.posts, &post_id)? {
                return Ok(Err(DomainError::NotFound("post")));
            }
            let share_id = tx.next_id()?;
            tx.insert(&t.post_shares, &(post_id, share_id), &user)?;
            let task_id = effects::post_shared(tx, post_id, max_attempts)?;
            Ok(Ok(ShareOutcome {
                shared: true,
                share_id,
                task_id,
            }))
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
        let max_attempts = self.max_attempts();
        commit(self.store(), move |tx| {
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
            let comment = Comment {
                id: tx.next_id()?,
                post_id,
                author_id: author,
                parent_id,
                body: body.clone(),
                created_at: Timestamp::now(),
                likes_count: 0,
            };
            tx.insert(&t.comments, &comment.id, &comment)?;
            tx.insert(&t.post_comments, &(post_id, comment.id), &())?;
            effects::commented(tx, &post, &comment, parent.as_ref(), max_attempts)?;
            Ok(Ok(comment))
        })
        .await
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
            if let Some(c) = t.comments.get(&id)? {
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

    /// Recounts a post from its indexes; returns the post if a count changed.
    ///
    /// Counts are derived data, so the write does not wait for a flush: if a crash
    /// loses it, the task's acknowledgement (committed after it) is lost too and the
    /// recount runs again.
    pub async fn recount_post(&self, post_id: u64) -> DomainResult<Option<Post>> {
        let t = self.store().tables();
        let prefix = post_id.to_be_bytes();
        let likes = t.post_likes.count_prefix(&prefix)?;
        let collects = t.post_collects.count_prefix(&prefix)?;
        let comments = t.post_comments.count_prefix(&prefix)?;
        let shares = t.post_shares.count_prefix(&prefix)?;
        commit_lazy(self.store(), move |tx| {
            let t = tx.t();
            let Some(mut post) = tx.get(&t.posts, &post_id)? else {
                return Ok(Ok(None));
            };
            let before = (
                post.likes_count,
                post.collects_count,
                post.comments_count,
                post.shares_count,
            );
            let after = (likes, collects, comments, shares);
            if before == after {
                return Ok(Ok(None));
            }
            (
                post.likes_count,
                post.collects_count,
                post.comments_count,
                post.shares_count,
            ) = after;
            tx.insert(&t.posts, &post_id, &post)?;
            Ok(Ok(Some(post)))
        })
        .await
        .map(|p| p.map(|p| self.with_pending_views(p)))
    }

    /// Recounts a comment's likes; returns the comment if the count changed.
    pub async fn recount_comment(&self, comment_id: u64) -> DomainResult<Option<Comment>> {
        let likes = self
            .store()
            .tables()
            .comment_likes
            .count_prefix(&comment_id.to_be_bytes())?;
        commit_lazy(self.store(), move |tx| {
            let t = tx.t();
            let Some(mut comment) = tx.get(&t.comments, &comment_id)? else {
                return Ok(Ok(None));
            };
            if comment.likes_count == likes {
                return Ok(Ok(None));
            }
            comment.likes_count = likes;
            tx.insert(&t.comments, &comment_id, &comment)?;
            Ok(Ok(Some(comment)))
        })
        .await
    }
}

fn liked(created: bool, task_id: Option<u64>) -> LikeOutcome {
    LikeOutcome {
        liked: true,
        created: Some(created),
        task_id: Some(task_id),
    }
}

fn unliked() -> LikeOutcome {
    LikeOutcome {
        liked: false,
        created: None,
        task_id: None,
    }
}
