//! Stored records that are never rendered as they are (they hold secrets). They are
//! defined with every other record in [`crate::store::records`].

pub use crate::store::records::{SessionRecord, UserRecord};
