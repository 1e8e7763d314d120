//! Stored records: the shapes of the values on disk, one type per table, separate
//! from the views the API renders.
//!
//! Values are postcard, which is positional: a record cannot gain, lose or reorder a
//! field (nor an enum a variant, except at its end) without every stored value of its
//! type becoming unreadable. So a record never changes in place: a release that needs
//! another shape bumps [`super::SCHEMA_VERSION`], keeps the old shape in a module
//! named after its version (as [`v1`] keeps 0.1.0's), and adds a step to
//! [`super::migrate`] that rewrites every stored value from one to the other.
//!
//! Times are milliseconds since the epoch ([`super::time::Timestamp`] encodes the
//! same way). Ids live in the keys and are not repeated in the values.

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// A user account as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    /// Id (kept: 0.1.0 stored it, and the layout did not need to change).
    pub id: u64,
    /// Display name, as registered.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Registration time.
    pub created_at: Timestamp,
}

/// A session token's record, keyed by the token's SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    /// Whose session.
    pub user_id: u64,
    /// When it was issued.
    pub created_at: Timestamp,
}

/// A post as stored; its counters live in [`PostCounts`] so that a like rewrites a
/// few bytes, not the post's text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostRecord {
    /// Author's user id.
    pub author_id: u64,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Creation time (ms).
    pub created_at: i64,
}

/// A post's counters, exact: each is updated in the commit of the change it counts
/// (views excepted: they are batched in memory and written now and then).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PostCounts {
    /// Likes.
    pub likes: u64,
    /// Collects.
    pub collects: u64,
    /// Comments and replies.
    pub comments: u64,
    /// Shares.
    pub shares: u64,
    /// Views.
    pub views: u64,
}

/// A comment or reply as stored; its like count lives in its own table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommentRecord {
    /// The post it belongs to.
    pub post_id: u64,
    /// Author's user id.
    pub author_id: u64,
    /// The comment it replies to.
    pub parent_id: Option<u64>,
    /// Text.
    pub body: String,
    /// Creation time (ms).
    pub created_at: i64,
}

/// A private message as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageRecord {
    /// Sender.
    pub from: u64,
    /// Receiver.
    pub to: u64,
    /// Text.
    pub body: String,
    /// Creation time (ms).
    pub created_at: i64,
}

/// What a notification is about, as stored (and named in the API: the JSON names
/// are the snake_case variant names). The variant order is the stored format: new
/// kinds go at the end.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// Someone liked your post.
    LikePost,
    /// Someone liked your comment.
    LikeComment,
    /// Someone commented on your post.
    Comment,
    /// Someone replied to your comment.
    Reply,
    /// Someone sent you a message.
    Message,
    /// Someone collected your post.
    Collect,
    /// Sent by an outside app through the admin API.
    Custom,
}

/// A notification as stored: who, what and about which thing. Its text is composed
/// when it is read (from the actor's name and the post's title, which do not
/// change) unless a caller gave one (the admin API; notifications migrated from
/// schema 1 keep the text they were created with).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotificationRecord {
    /// What it is about.
    pub kind: NotificationKind,
    /// Who receives it.
    pub receiver: u64,
    /// Who caused it.
    pub actor: Option<u64>,
    /// The post concerned.
    pub post: Option<u64>,
    /// The comment concerned.
    pub comment: Option<u64>,
    /// The message concerned.
    pub message: Option<u64>,
    /// The caller's text, if one was given.
    pub text: Option<String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Whether the receiver has read it.
    pub read: bool,
}

/// Where a task is in its life (API.md `Task.state`). The variant order is the
/// format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its first run.
    Pending,
    /// Leased by a worker and running.
    Started,
    /// Failed at least once; waiting for its next attempt.
    Retry,
    /// Finished; `result` holds what the handler returned.
    Success,
    /// Out of attempts (a dead letter).
    Failure,
    /// Cancelled before it finished.
    Cancelled,
}

/// A task as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    /// Id.
    pub id: u64,
    /// Handler name.
    pub name: String,
    /// Handler arguments (postcard, handler-specific).
    pub args: Vec<u8>,
    /// State.
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Earliest time of the next attempt (ms).
    pub run_at: i64,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// JSON text of the handler's result.
    pub result: Option<String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last state change (ms).
    pub updated_at: i64,
    /// User whose action caused it; they may read it.
    pub owner: Option<u64>,
    /// Unique key collapsing duplicates while waiting.
    pub unique: Option<String>,
    /// Lease deadline while started (ms).
    pub lease_until: Option<i64>,
    /// Cancellation was requested while it ran.
    pub cancel_requested: bool,
}

/// A periodic schedule's persisted state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ScheduleRecord {
    /// When it last fired (ms), whether it enqueued or skipped.
    pub last_run: i64,
    /// The task of its last enqueued run.
    pub last_task: Option<u64>,
    /// Runs skipped because the previous one had not finished.
    pub skipped: u64,
}

/// The records of schema version 1 (release 0.1.0) that version 2 changed, kept
/// exactly as they were so that [`super::migrate`] can read them. Never change these.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    pub use super::NotificationKind;

    /// 0.1.0's post: the API view, counters included.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[allow(missing_docs)]
    pub struct Post {
        pub id: u64,
        pub author_id: u64,
        pub title: String,
        pub body: String,
        pub created_at: i64,
        pub likes_count: u64,
        pub collects_count: u64,
        pub comments_count: u64,
        pub shares_count: u64,
        pub view_count: u64,
    }

    /// 0.1.0's comment.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[allow(missing_docs)]
    pub struct Comment {
        pub id: u64,
        pub post_id: u64,
        pub author_id: u64,
        pub parent_id: Option<u64>,
        pub body: String,
        pub created_at: i64,
        pub likes_count: u64,
    }

    /// 0.1.0's message.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[allow(missing_docs)]
    pub struct Message {
        pub id: u64,
        pub from_user_id: u64,
        pub to_user_id: u64,
        pub body: String,
        pub created_at: i64,
    }

    /// 0.1.0's notification, its text composed when it was created.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[allow(missing_docs)]
    pub struct Notification {
        pub id: u64,
        pub kind: NotificationKind,
        pub receiver_id: u64,
        pub actor_id: Option<u64>,
        pub post_id: Option<u64>,
        pub comment_id: Option<u64>,
        pub message_id: Option<u64>,
        pub text: String,
        pub created_at: i64,
        pub read: bool,
    }
}
