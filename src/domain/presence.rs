//! Whether a user lets others see them online: the stored choice behind
//! `GET`/`PUT /api/me/presence`. Who is online right now is the hub's business
//! (and, in a cluster, the cluster's, which the hub tells of each change in the
//! order this module applies them); this module only stores the choice (the `presence_hidden` table, which holds
//! the users who opted out, so that the default — shown — costs nothing).

use std::sync::LazyLock;

use super::{commit, DomainResult, Social};

/// Stripes of the locks that keep one user's visibility changes in order.
const STRIPES: usize = 64;

/// One lock per stripe of user ids, held from the commit of a visibility change
/// until whoever follows it (the hub) has applied it: two changes of one user
/// racing would otherwise reach the hub in another order than the store's, and
/// leave a hidden user shown online. Process-wide: a lock is only an order, and
/// sharing one between two servers in one process costs nothing but a wait.
static ORDER: LazyLock<[tokio::sync::Mutex<()>; STRIPES]> =
    LazyLock::new(|| std::array::from_fn(|_| tokio::sync::Mutex::new(())));

impl Social {
    /// Whether `user` may be shown online (the default, until they opt out).
    pub fn presence_visible(&self, user: u64) -> DomainResult<bool> {
        Ok(!self.store().tables().presence_hidden.contains(&user)?)
    }

    /// Stores whether `user` may be shown online, then calls `applied` with the
    /// choice before any later change of that user's is stored.
    pub async fn set_presence_visible(
        &self,
        user: u64,
        visible: bool,
        applied: impl FnOnce(bool),
    ) -> DomainResult<bool> {
        let _order = ORDER[(user % STRIPES as u64) as usize].lock().await;
        commit(self.store(), move |tx| {
            let hidden = &tx.t().presence_hidden;
            if visible {
                tx.remove(hidden, &user)?;
            } else if !tx.contains(hidden, &user)? {
                tx.insert(hidden, &user, &())?;
            }
            Ok(Ok(()))
        })
        .await?;
        applied(visible);
        Ok(visible)
    }
}
