//! Migrations: bringing a data directory written by an older release up to
//! [`SCHEMA_VERSION`] when the store opens.
//!
//! The version lives in `meta["schema_version"]` (4 bytes, big-endian). A fresh
//! directory is stamped with the current version; a newer one is refused with
//! [`Error::Schema`] before anything is written; an older one is brought forward one
//! version at a time. Each step is one function that reads the old records from the
//! plain trees, builds every new value in memory, and then writes them all together
//! with the new version number in ONE transaction: a crash during a migration leaves
//! the old data and the old version, and the next start runs the step again.
//!
//! Steps:
//! - 1 → 2 ([`v1_to_v2`]): posts, comments, messages and notifications leave the API's
//!   shapes for their own records ([`super::records`]); post and comment counters
//!   move to `post_counts` / `comment_counts` and are recounted exactly from their
//!   indexes (0.1.0 kept them eventually consistent). Migrated notifications keep the
//!   text they were created with; new ones store text only when a caller gave it.

use sled::transaction::Transactional;

use super::records::{self, v1};
use super::table::{Tx, TxTally};
use super::{Error, Tables, SCHEMA_VERSION};

const VERSION_KEY: &str = "schema_version";

/// The schema version stored in `t`, or `None` for a directory never stamped.
pub fn stored_version(t: &Tables) -> Result<Option<u32>, Error> {
    match t.meta.get(&VERSION_KEY.to_owned())? {
        None => Ok(None),
        Some(bytes) => bytes
            .as_slice()
            .try_into()
            .map(|b| Some(u32::from_be_bytes(b)))
            .map_err(|_| Error::Decode {
                table: "meta",
                message: "schema_version is not 4 bytes".into(),
            }),
    }
}

/// Checks the version of the opened database and migrates it to [`SCHEMA_VERSION`].
pub(super) fn run(db: &sled::Db, t: &Tables, trees: &[sled::Tree]) -> Result<(), Error> {
    let found = match stored_version(t)? {
        None => {
            // A fresh directory: stamp it. Outside the writer: nothing runs yet.
            t.meta.insert_at_startup(
                &VERSION_KEY.to_owned(),
                &SCHEMA_VERSION.to_be_bytes().to_vec(),
            )?;
            db.flush()?;
            return Ok(());
        }
        Some(v) => v,
    };
    if found > SCHEMA_VERSION {
        return Err(Error::Schema { found });
    }
    let mut version = found;
    while version < SCHEMA_VERSION {
        match version {
            1 => {
                let step = v1_to_v2(t)?;
                commit(trees, t, 2, |tx| step.apply(tx))?;
            }
            other => {
                return Err(Error::Decode {
                    table: "meta",
                    message: format!("no migration from schema version {other}"),
                })
            }
        }
        version += 1;
        db.flush()?;
        tracing::info!(
            from = version - 1,
            to = version,
            "migrated the data directory"
        );
    }
    Ok(())
}

/// Applies `write` and the new version number in one transaction.
fn commit(
    trees: &[sled::Tree],
    t: &Tables,
    version: u32,
    write: impl Fn(&Tx<'_>) -> super::TxResult<()>,
) -> Result<(), Error> {
    let tally = TxTally::default();
    trees
        .transaction(|views| {
            // Migrations rewrite records under the ids they have; they hand out none
            // (the id counter is the writer's, which starts after them).
            tally.reset(0);
            let tx = Tx::new(views, t, &tally);
            write(&tx)?;
            debug_assert_eq!(tally.next_id.get(), 0, "a migration handed out an id");
            tx.insert(
                &t.meta,
                &VERSION_KEY.to_owned(),
                &version.to_be_bytes().to_vec(),
            )?;
            Ok(())
        })
        .map_err(|e| match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::from(e),
        })
}

fn decode<V: serde::de::DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<V, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Decode {
        table,
        message: format!("not a schema 1 record: {e}"),
    })
}

fn id_of(table: &'static str, key: &[u8]) -> Result<u64, Error> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Decode {
            table,
            message: "key is not a u64".into(),
        })
}

/// Every value step 1 → 2 writes.
#[derive(Debug, Default)]
pub struct V1ToV2 {
    /// Posts and their exact counters.
    pub posts: Vec<(u64, records::PostRecord, records::PostCounts)>,
    /// Comments and their exact like counts.
    pub comments: Vec<(u64, records::CommentRecord, u64)>,
    /// Messages.
    pub messages: Vec<(u64, records::MessageRecord)>,
    /// Notifications.
    pub notifications: Vec<(u64, records::NotificationRecord)>,
}

impl V1ToV2 {
    fn apply(&self, tx: &Tx<'_>) -> super::TxResult<()> {
        let t = tx.t();
        for (id, post, counts) in &self.posts {
            tx.insert(&t.posts, id, post)?;
            tx.insert(&t.post_counts, id, counts)?;
        }
        for (id, comment, likes) in &self.comments {
            tx.insert(&t.comments, id, comment)?;
            tx.insert(&t.comment_counts, id, likes)?;
        }
        for (id, message) in &self.messages {
            tx.insert(&t.messages, id, message)?;
        }
        for (id, n) in &self.notifications {
            tx.insert(&t.notifications, id, n)?;
        }
        Ok(())
    }
}

/// Step 1 → 2: reads schema 1's posts, comments, messages and notifications and
/// builds their schema 2 records (see the module documentation).
pub fn v1_to_v2(t: &Tables) -> Result<V1ToV2, Error> {
    let mut out = V1ToV2::default();
    for item in t.posts.raw_iter() {
        let (k, v) = item?;
        let id = id_of("posts", &k)?;
        let old: v1::Post = decode("posts", &v)?;
        let prefix = id.to_be_bytes();
        let counts = records::PostCounts {
            likes: t.post_likes.count_prefix(&prefix)?,
            collects: t.post_collects.count_prefix(&prefix)?,
            comments: t.post_comments.count_prefix(&prefix)?,
            shares: t.post_shares.count_prefix(&prefix)?,
            views: old.view_count,
        };
        let post = records::PostRecord {
            author_id: old.author_id,
            title: old.title,
            body: old.body,
            created_at: old.created_at,
        };
        out.posts.push((id, post, counts));
    }
    for item in t.comments.raw_iter() {
        let (k, v) = item?;
        let id = id_of("comments", &k)?;
        let old: v1::Comment = decode("comments", &v)?;
        let likes = t.comment_likes.count_prefix(&id.to_be_bytes())?;
        let comment = records::CommentRecord {
            post_id: old.post_id,
            author_id: old.author_id,
            parent_id: old.parent_id,
            body: old.body,
            created_at: old.created_at,
        };
        out.comments.push((id, comment, likes));
    }
    for item in t.messages.raw_iter() {
        let (k, v) = item?;
        let id = id_of("messages", &k)?;
        let old: v1::Message = decode("messages", &v)?;
        out.messages.push((
            id,
            records::MessageRecord {
                from: old.from_user_id,
                to: old.to_user_id,
                body: old.body,
                created_at: old.created_at,
            },
        ));
    }
    for item in t.notifications.raw_iter() {
        let (k, v) = item?;
        let id = id_of("notifications", &k)?;
        let old: v1::Notification = decode("notifications", &v)?;
        let text = Some(old.text);
        out.notifications.push((
            id,
            records::NotificationRecord {
                kind: old.kind,
                receiver: old.receiver_id,
                actor: old.actor_id,
                post: old.post_id,
                comment: old.comment_id,
                message: old.message_id,
                text,
                created_at: old.created_at,
                read: old.read,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Key, Store};

    /// The stored value of a schema version (a postcard byte string).
    fn version_value(v: u32) -> Vec<u8> {
        postcard::to_stdvec(&v.to_be_bytes().to_vec()).unwrap()
    }

    /// Writes schema 1 records straight into sled, as 0.1.0 did.
    fn write_v1(dir: &std::path::Path) {
        let db = sled::open(dir).unwrap();
        let put = |tree: &str, k: Vec<u8>, v: Vec<u8>| {
            db.open_tree(tree).unwrap().insert(k, v).unwrap();
        };
        put("meta", b"schema_version".to_vec(), version_value(1));
        let post = v1::Post {
            id: 5,
            author_id: 1,
            title: "t".into(),
            body: "b".into(),
            created_at: 1000,
            likes_count: 0, // stale: the recount had not run
            collects_count: 0,
            comments_count: 0,
            shares_count: 0,
            view_count: 9,
        };
        put("posts", 5u64.encode(), postcard::to_stdvec(&post).unwrap());
        for user in [1u64, 2] {
            put(
                "post_likes",
                (5u64, user).encode(),
                postcard::to_stdvec(&7i64).unwrap(),
            );
        }
        let comment = v1::Comment {
            id: 8,
            post_id: 5,
            author_id: 2,
            parent_id: None,
            body: "c".into(),
            created_at: 1001,
            likes_count: 3, // stale the other way
        };
        put(
            "comments",
            8u64.encode(),
            postcard::to_stdvec(&comment).unwrap(),
        );
        put("post_comments", (5u64, 8u64).encode(), vec![]);
        let message = v1::Message {
            id: 9,
            from_user_id: 1,
            to_user_id: 2,
            body: "hi".into(),
            created_at: 1002,
        };
        put(
            "messages",
            9u64.encode(),
            postcard::to_stdvec(&message).unwrap(),
        );
        for (id, kind, text) in [
            (
                10u64,
                records::NotificationKind::LikePost,
                "a liked your post",
            ),
            (11, records::NotificationKind::Custom, "from an app"),
        ] {
            let n = v1::Notification {
                id,
                kind,
                receiver_id: 1,
                actor_id: Some(2),
                post_id: Some(5),
                comment_id: None,
                message_id: None,
                text: text.into(),
                created_at: 1003,
                read: id == 11,
            };
            put(
                "notifications",
                id.encode(),
                postcard::to_stdvec(&n).unwrap(),
            );
        }
        db.flush().unwrap();
    }

    #[test]
    fn schema_1_records_become_schema_2_records_with_exact_counts() {
        let dir = tempfile::tempdir().unwrap();
        write_v1(dir.path());
        let store = Store::open(dir.path(), Durability::Sync, 500).unwrap();
        let t = store.tables();
        assert_eq!(stored_version(t).unwrap(), Some(SCHEMA_VERSION));
        let post = t.posts.get(&5).unwrap().unwrap();
        assert_eq!((post.author_id, post.title.as_str()), (1, "t"));
        let counts = t.post_counts.get(&5).unwrap().unwrap();
        assert_eq!(
            counts,
            records::PostCounts {
                likes: 2,
                collects: 0,
                comments: 1,
                shares: 0,
                views: 9
            }
        );
        assert_eq!(t.comments.get(&8).unwrap().unwrap().body, "c");
        assert_eq!(t.comment_counts.get(&8).unwrap(), Some(0));
        let m = t.messages.get(&9).unwrap().unwrap();
        assert_eq!((m.from, m.to, m.body.as_str()), (1, 2, "hi"));
        let liked = t.notifications.get(&10).unwrap().unwrap();
        assert_eq!(liked.text.as_deref(), Some("a liked your post"));
        assert!(!liked.read);
        let custom = t.notifications.get(&11).unwrap().unwrap();
        assert_eq!(custom.text.as_deref(), Some("from an app"));
        assert!(custom.read);
        store.close();
        drop(store);
        // Opening again finds schema 2 and changes nothing.
        let store = Store::open(dir.path(), Durability::Sync, 500).unwrap();
        assert_eq!(store.tables().comment_counts.get(&8).unwrap(), Some(0));
        store.close();
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(b"schema_version", version_value(SCHEMA_VERSION + 1))
                .unwrap();
            db.flush().unwrap();
        }
        let err = match Store::open(dir.path(), Durability::Sync, 500) {
            Err(e) => e,
            Ok(_) => panic!("a newer schema must be refused"),
        };
        assert!(matches!(err, Error::Schema { found } if found == SCHEMA_VERSION + 1));
        assert!(err.to_string().contains("newer release"), "{err}");
        // The refused store's files are let go when sled's background flusher ends,
        // a moment after the open returned: wait for the lock, not for a time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::open(dir.path()) {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("lock"), "{e}");
                    std::thread::yield_now();
                }
                Err(e) => panic!("the refused store still holds its files: {e}"),
            }
        };
        assert_eq!(
            db.open_tree("meta")
                .unwrap()
                .get(b"schema_version")
                .unwrap()
                .unwrap(),
            version_value(SCHEMA_VERSION + 1)
        );
    }

    #[test]
    fn a_fresh_directory_is_stamped_with_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Sync, 500).unwrap();
        assert_eq!(
            stored_version(store.tables()).unwrap(),
            Some(SCHEMA_VERSION)
        );
        store.close();
    }
}
