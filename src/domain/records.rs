//! Stored records that are never rendered as they are (they hold secrets).

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// A user account as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// Id.
    pub id: u64,
    /// Display name, as registered.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Registration time.
    pub created_at: Timestamp,
}

/// A session token's record, keyed by the token's SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Whose session.
    pub user_id: u64,
    /// When it was issued.
    pub created_at: Timestamp,
}
